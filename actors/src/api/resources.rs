//! The registry of served resources: names, kinds, scope and verbs, used by discovery,
//! routing and the store key layout.

/// One resource the gateway serves under `/api/v1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResourceInfo {
    /// Plural lowercase name used in paths (`pods`).
    pub name: &'static str,
    pub singular: &'static str,
    pub kind: &'static str,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
    /// Subresources served under `<name>/<sub>`.
    pub subresources: &'static [&'static str],
    /// Whether `status` is only writable through the status subresource, as in Kubernetes.
    pub has_status_subresource: bool,
    /// Field selector paths the resource supports beyond `metadata.name`/`metadata.namespace`.
    pub field_selectors: &'static [&'static str],
}

impl ResourceInfo {
    pub fn list_kind(&self) -> String {
        format!("{}List", self.kind)
    }

    pub fn supports_field(&self, field: &str) -> bool {
        field == "metadata.name"
            || (field == "metadata.namespace" && self.namespaced)
            || self.field_selectors.contains(&field)
    }
}

pub const RESOURCES: &[ResourceInfo] = &[
    ResourceInfo {
        name: "namespaces",
        singular: "namespace",
        kind: "Namespace",
        namespaced: false,
        short_names: &["ns"],
        subresources: &["status", "finalize"],
        has_status_subresource: true,
        field_selectors: &["status.phase"],
    },
    ResourceInfo {
        name: "nodes",
        singular: "node",
        kind: "Node",
        namespaced: false,
        short_names: &["no"],
        subresources: &["status"],
        has_status_subresource: true,
        field_selectors: &["spec.unschedulable"],
    },
    ResourceInfo {
        name: "pods",
        singular: "pod",
        kind: "Pod",
        namespaced: true,
        short_names: &["po"],
        subresources: &["status", "binding", "log"],
        has_status_subresource: true,
        field_selectors: &[
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        ],
    },
    ResourceInfo {
        name: "services",
        singular: "service",
        kind: "Service",
        namespaced: true,
        short_names: &["svc"],
        subresources: &["status"],
        has_status_subresource: true,
        field_selectors: &["spec.clusterIP", "spec.type"],
    },
    ResourceInfo {
        name: "endpoints",
        singular: "endpoints",
        kind: "Endpoints",
        namespaced: true,
        short_names: &["ep"],
        subresources: &[],
        has_status_subresource: false,
        field_selectors: &[],
    },
    ResourceInfo {
        name: "replicationcontrollers",
        singular: "replicationcontroller",
        kind: "ReplicationController",
        namespaced: true,
        short_names: &["rc"],
        subresources: &["status", "scale"],
        has_status_subresource: true,
        field_selectors: &["status.replicas"],
    },
    ResourceInfo {
        name: "resourcequotas",
        singular: "resourcequota",
        kind: "ResourceQuota",
        namespaced: true,
        short_names: &["quota"],
        subresources: &["status"],
        has_status_subresource: true,
        field_selectors: &[],
    },
    ResourceInfo {
        name: "events",
        singular: "event",
        kind: "Event",
        namespaced: true,
        short_names: &["ev"],
        subresources: &[],
        has_status_subresource: false,
        field_selectors: &[
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        ],
    },
];

/// Look a resource up by its plural name.
pub fn lookup(name: &str) -> Option<&'static ResourceInfo> {
    RESOURCES.iter().find(|r| r.name == name)
}

/// Look a resource up by its kind.
pub fn by_kind(kind: &str) -> Option<&'static ResourceInfo> {
    RESOURCES.iter().find(|r| r.kind == kind)
}

/// The store key of one object: `<resource>/<namespace>/<name>`, with an empty namespace
/// for cluster-scoped objects, so a prefix scan lists a resource or one namespace of it.
pub fn object_key(resource: &str, namespace: Option<&str>, name: &str) -> String {
    format!("{resource}/{}/{name}", namespace.unwrap_or(""))
}

/// The key prefix covering a resource, or one namespace of it.
pub fn prefix(resource: &str, namespace: Option<&str>) -> String {
    match namespace {
        Some(ns) => format!("{resource}/{ns}/"),
        None => format!("{resource}/"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_short_name_the_issue_lists_is_served() {
        for short in ["po", "svc", "rc", "ns", "no", "ep", "quota", "ev"] {
            assert!(
                RESOURCES.iter().any(|r| r.short_names.contains(&short)),
                "{short} missing"
            );
        }
    }

    #[test]
    fn namespace_prefix_does_not_cover_a_longer_namespace_name() {
        let key = object_key("pods", Some("default2"), "a");
        assert!(!key.starts_with(&prefix("pods", Some("default"))));
        assert!(key.starts_with(&prefix("pods", None)));
    }
}
