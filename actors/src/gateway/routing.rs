//! Turning a request path under `/api/v1` or `/apis/<group>/<version>` into what it
//! addresses.

use crate::api::resources::{self, ResourceInfo};
use crate::api::ApiError;

/// What a resource path names.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub resource: &'static ResourceInfo,
    /// The namespace in the path; `None` for cluster-scoped resources and for lists across
    /// all namespaces.
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub subresource: Option<String>,
    /// Set for the legacy `/api/v1/watch/...` paths.
    pub legacy_watch: bool,
}

/// Parse the segments after `/api/v1/`.
pub fn parse(path: &str) -> Result<Target, ApiError> {
    parse_in("", "v1", path)
}

/// Parse the segments after a group version's base path (`/apis/<group>/<version>/`).
pub fn parse_in(group: &str, version: &str, path: &str) -> Result<Target, ApiError> {
    let lookup = |res: &str| resources::lookup_in(group, version, res);
    let mut segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let legacy_watch = segs.first() == Some(&"watch");
    if legacy_watch {
        segs.remove(0);
    }
    let target = match segs.as_slice() {
        [res] => target(lookup(res), None, None, None)?,
        ["namespaces", ns, res] if lookup(res).is_some_and(|r| r.namespaced) => {
            target(lookup(res), Some(ns), None, None)?
        }
        ["namespaces", ns, res, name] => target(lookup(res), Some(ns), Some(name), None)?,
        ["namespaces", ns, res, name, sub] => target(lookup(res), Some(ns), Some(name), Some(sub))?,
        [res, name] => target(lookup(res), None, Some(name), None)?,
        [res, name, sub] => target(lookup(res), None, Some(name), Some(sub))?,
        // `nodes/<name>/proxy/<path on the node's server>`.
        [res, name, "proxy", ..] if lookup(res).is_some_and(|r| r.name == "nodes") => {
            target(lookup(res), None, Some(name), Some("proxy"))?
        }
        _ => return Err(ApiError::NoRoute),
    };
    Ok(Target {
        legacy_watch,
        ..target
    })
}

fn target(
    info: Option<&'static ResourceInfo>,
    ns: Option<&str>,
    name: Option<&str>,
    sub: Option<&str>,
) -> Result<Target, ApiError> {
    let info = info.ok_or(ApiError::NoRoute)?;
    // A cluster-scoped resource has no namespaced path, and a namespaced one is addressed
    // by name only inside its namespace.
    if ns.is_some() && !info.namespaced {
        return Err(ApiError::NoRoute);
    }
    if ns.is_none() && info.namespaced && name.is_some() {
        return Err(ApiError::NoRoute);
    }
    if let Some(s) = sub {
        if !info.subresources.contains(&s) {
            return Err(ApiError::NoRoute);
        }
    }
    Ok(Target {
        resource: info,
        namespace: ns.map(str::to_string),
        name: name.map(str::to_string),
        subresource: sub.map(str::to_string),
        legacy_watch: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaced_object_path_names_namespace_resource_and_name() {
        let t = parse("namespaces/default/pods/web").expect("route");
        assert_eq!(t.resource.name, "pods");
        assert_eq!(t.namespace.as_deref(), Some("default"));
        assert_eq!(t.name.as_deref(), Some("web"));
    }

    #[test]
    fn namespace_status_is_a_subresource_not_a_resource_list() {
        let t = parse("namespaces/dev/status").expect("route");
        assert_eq!(t.resource.name, "namespaces");
        assert_eq!(t.name.as_deref(), Some("dev"));
        assert_eq!(t.subresource.as_deref(), Some("status"));
    }

    #[test]
    fn pods_across_all_namespaces_is_a_list() {
        let t = parse("pods").expect("route");
        assert!(t.namespace.is_none() && t.name.is_none());
    }

    #[test]
    fn unknown_resources_and_subresources_are_not_routed() {
        assert!(parse("widgets").is_err());
        assert!(parse("namespaces/default/pods/web/exec2").is_err());
        assert!(parse("nodes/n1/binding").is_err());
        assert!(parse("pods/web").is_err());
    }

    #[test]
    fn grouped_resources_route_only_under_their_own_group() {
        let t = parse_in(
            "rbac.authorization.k8s.io",
            "v1",
            "namespaces/dev/roles/reader",
        )
        .expect("route");
        assert_eq!(t.resource.kind, "Role");
        assert!(parse("namespaces/dev/roles/reader").is_err());
        assert!(parse_in("autoscaling", "v1", "pods").is_err());
    }
}
