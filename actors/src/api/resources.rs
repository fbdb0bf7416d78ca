//! What a served resource is (names, kind, scope, subresources, schema, strategy) and
//! the registry of them, built at start from the built-in kinds (`api::kinds`) and open to
//! kinds added while running. Routing, discovery, the OpenAPI documents, RBAC names,
//! namespace cleanup, garbage collection and Tables all read it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{LazyLock, RwLock};

use schemars::{JsonSchema, Schema, SchemaGenerator};

use super::strategy::Strategy;

/// Adds a kind's JSON Schema (and those of every type it uses) to a generator and returns
/// a reference to it: how the OpenAPI documents learn a kind's fields.
pub type SchemaFn = fn(&mut SchemaGenerator) -> Schema;

/// The [`SchemaFn`] of a k8s-openapi type.
pub fn schema_of<T: JsonSchema>(generator: &mut SchemaGenerator) -> Schema {
    generator.subschema_for::<T>()
}

/// One resource the gateway serves: core resources under `/api/v1`, the others under
/// `/apis/<group>/<version>`.
#[derive(Debug, Clone, Copy)]
pub struct ResourceInfo {
    /// API group; empty for the core (legacy) group.
    pub group: &'static str,
    pub version: &'static str,
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
    /// Discovery categories (`all` for what `kubectl get all` lists, as in Kubernetes).
    pub categories: &'static [&'static str],
    /// The kind's schema for OpenAPI; `None` for kinds without a k8s-openapi type.
    pub schema: Option<SchemaFn>,
    /// What the kind does on create, update, patch and in Tables.
    pub strategy: &'static dyn Strategy,
    pub storage: Storage,
}

/// Where a resource's objects live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Storage {
    /// In the store, under the resource's own keys.
    Stored,
    /// Another view of the objects of the same-named resource of apiVersion `of`
    /// (events.k8s.io/v1 Events are core/v1 Events): same keys, converted on the way.
    View { of: &'static str },
    /// Create-only, answered from the request and never stored (kube's reviews).
    Review,
    /// Read-only, served from memory (the metrics API).
    Memory,
}

/// A resource is known by its group, version and plural name.
impl PartialEq for ResourceInfo {
    fn eq(&self, other: &Self) -> bool {
        self.group == other.group && self.version == other.version && self.name == other.name
    }
}

impl Eq for ResourceInfo {}

impl ResourceInfo {
    /// `apiVersion` of the resource's objects: `v1` or `<group>/<version>`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The path prefix the resource is served under (`/api/v1`, `/apis/<group>/<version>`).
    pub fn base_path(&self) -> String {
        if self.group.is_empty() {
            format!("/api/{}", self.version)
        } else {
            format!("/apis/{}/{}", self.group, self.version)
        }
    }

    pub fn list_kind(&self) -> String {
        format!("{}List", self.kind)
    }

    /// The verbs discovery lists for the resource (what kube-apiserver lists for it).
    pub fn verbs(&self) -> Vec<&'static str> {
        match self.storage {
            Storage::Review => return vec!["create"],
            Storage::Memory => return vec!["get", "list"],
            Storage::Stored | Storage::View { .. } => {}
        }
        let mut v = vec![
            "create",
            "delete",
            "deletecollection",
            "get",
            "list",
            "patch",
            "update",
            "watch",
        ];
        if self.name == "namespaces" {
            v.retain(|x| *x != "deletecollection");
        }
        v
    }

    pub fn supports_field(&self, field: &str) -> bool {
        field == "metadata.name"
            || (field == "metadata.namespace" && self.namespaced)
            || self.field_selectors.contains(&field)
    }
}

/// The kinds served, in registration order (built-ins first, core before groups).
pub struct Registry {
    kinds: RwLock<Vec<&'static ResourceInfo>>,
    /// Moves on every change, so documents built from the registry (discovery, OpenAPI)
    /// know when to rebuild.
    generation: AtomicU64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RegistryError {
    #[error("resource {name}.{group} is already served")]
    AlreadyServed { group: String, name: String },
    #[error("kind {kind} is already served in {group}/{version}")]
    KindTaken {
        group: String,
        version: String,
        kind: String,
    },
}

static REGISTRY: LazyLock<Registry> =
    LazyLock::new(|| Registry::with(super::kinds::builtin().to_vec()));

/// The process's registry.
pub fn registry() -> &'static Registry {
    &REGISTRY
}

impl Registry {
    pub fn with(kinds: Vec<&'static ResourceInfo>) -> Self {
        Registry {
            kinds: RwLock::new(kinds),
            generation: AtomicU64::new(1),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Vec<&'static ResourceInfo>> {
        self.kinds.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Every served resource, reviews and views included.
    pub fn all(&self) -> Vec<&'static ResourceInfo> {
        self.read().clone()
    }

    /// The resources whose objects are in the store under their own keys.
    pub fn stored(&self) -> Vec<&'static ResourceInfo> {
        self.read()
            .iter()
            .copied()
            .filter(|r| r.storage == Storage::Stored)
            .collect()
    }

    pub fn find(&self, pred: impl Fn(&ResourceInfo) -> bool) -> Option<&'static ResourceInfo> {
        self.read().iter().copied().find(|r| pred(r))
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Serve a kind from now on. Its names live as long as the process (a kind that is
    /// removed and added again costs its declaration once more, which is bounded by the
    /// number of definitions a cluster makes).
    pub fn register(&self, info: ResourceInfo) -> Result<&'static ResourceInfo, RegistryError> {
        let mut kinds = self.kinds.write().unwrap_or_else(|e| e.into_inner());
        if kinds
            .iter()
            .any(|r| r.group == info.group && r.version == info.version && r.name == info.name)
        {
            return Err(RegistryError::AlreadyServed {
                group: info.group.into(),
                name: info.name.into(),
            });
        }
        if kinds
            .iter()
            .any(|r| r.group == info.group && r.version == info.version && r.kind == info.kind)
        {
            return Err(RegistryError::KindTaken {
                group: info.group.into(),
                version: info.version.into(),
                kind: info.kind.into(),
            });
        }
        let leaked: &'static ResourceInfo = Box::leak(Box::new(info));
        kinds.push(leaked);
        self.generation.fetch_add(1, Ordering::AcqRel);
        Ok(leaked)
    }

    /// Stop serving a kind; false when it was not served.
    pub fn unregister(&self, group: &str, version: &str, name: &str) -> bool {
        let mut kinds = self.kinds.write().unwrap_or_else(|e| e.into_inner());
        let before = kinds.len();
        kinds.retain(|r| !(r.group == group && r.version == version && r.name == name));
        let removed = kinds.len() != before;
        if removed {
            self.generation.fetch_add(1, Ordering::AcqRel);
        }
        removed
    }
}

/// Whether `info` is another view of objects stored under another group's resource of
/// the same name (events.k8s.io/v1 Events are core/v1 Events).
pub fn is_view(info: &ResourceInfo) -> bool {
    matches!(info.storage, Storage::View { .. })
}

/// The `apiVersion` objects of `info` are stored with: a view's stored form is its
/// origin's.
pub fn stored_api_version(info: &ResourceInfo) -> String {
    match info.storage {
        Storage::View { of } => of.to_string(),
        _ => info.api_version(),
    }
}

/// Whether `info` is create-only and never stored (a review).
pub fn is_review(info: &ResourceInfo) -> bool {
    info.storage == Storage::Review
}

/// Look a stored resource up by its plural name (the core group's first).
pub fn lookup(name: &str) -> Option<&'static ResourceInfo> {
    registry().find(|r| r.name == name && r.storage == Storage::Stored)
}

/// A stored resource, or else a review (created, never stored), by its plural name: what
/// API clients may address.
pub fn lookup_client(name: &str) -> Option<&'static ResourceInfo> {
    lookup(name).or_else(|| registry().find(|r| r.name == name && r.storage == Storage::Review))
}

/// Look a resource up by its plural name within one group and version.
pub fn lookup_in(group: &str, version: &str, name: &str) -> Option<&'static ResourceInfo> {
    registry().find(|r| r.group == group && r.version == version && r.name == name)
}

/// The API groups (other than core) the gateway serves, each with the versions it is
/// served in, the preferred one first: versions are preferred in the order their kinds
/// are registered (autoscaling: v2, then v1, as kube-apiserver prefers them).
pub fn group_versions() -> Vec<(&'static str, Vec<&'static str>)> {
    let mut out: Vec<(&'static str, Vec<&'static str>)> = Vec::new();
    for (group, version) in groups() {
        match out.iter_mut().find(|(g, _)| *g == group) {
            Some((_, versions)) => versions.push(version),
            None => out.push((group, vec![version])),
        }
    }
    out
}

/// Every (group, version) the gateway serves other than core, in registration order.
pub fn groups() -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&'static str, &'static str)> = Vec::new();
    for r in registry().all().into_iter().filter(|r| !r.group.is_empty()) {
        if !out.contains(&(r.group, r.version)) {
            out.push((r.group, r.version));
        }
    }
    out
}

/// Look a stored resource up by the `apiVersion` and `kind` an object (or an owner
/// reference) names.
pub fn by_api_version_kind(api_version: &str, kind: &str) -> Option<&'static ResourceInfo> {
    let (group, version) = match api_version.split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", api_version),
    };
    registry().find(|r| {
        r.group == group && r.version == version && r.kind == kind && r.storage != Storage::Review
    })
}

/// Look a stored resource up by its kind.
pub fn by_kind(kind: &str) -> Option<&'static ResourceInfo> {
    registry().find(|r| r.kind == kind && r.storage == Storage::Stored)
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
                registry()
                    .all()
                    .iter()
                    .any(|r| r.short_names.contains(&short)),
                "{short} missing"
            );
        }
    }

    #[test]
    fn resource_names_are_unique_across_groups_so_store_keys_cannot_collide() {
        // Views of another group's stored objects share its name, and so its keys.
        let all = registry().all();
        let views = all.iter().filter(|r| is_view(r)).count();
        let mut names: Vec<_> = all.iter().map(|r| r.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), all.len() - views);
        assert_eq!(lookup("events").map(|r| r.group), Some(""));
        assert_eq!(by_kind("Event").map(|r| r.group), Some(""));
    }

    #[test]
    fn grouped_resources_are_served_under_apis() {
        let hpa = lookup("horizontalpodautoscalers").expect("served");
        assert_eq!(hpa.api_version(), "autoscaling/v2");
        assert_eq!(hpa.base_path(), "/apis/autoscaling/v2");
        let v1 = lookup_in("autoscaling", "v1", "horizontalpodautoscalers").expect("v1");
        assert_eq!(stored_api_version(v1), "autoscaling/v2");
        assert_eq!(lookup("pods").expect("served").base_path(), "/api/v1");
        assert!(lookup_in("", "v1", "roles").is_none());
    }

    #[test]
    fn a_group_served_in_two_versions_prefers_the_first_registered() {
        let autoscaling = group_versions()
            .into_iter()
            .find(|(g, _)| *g == "autoscaling")
            .expect("autoscaling");
        assert_eq!(autoscaling.1, ["v2", "v1"]);
    }

    #[test]
    fn namespace_prefix_does_not_cover_a_longer_namespace_name() {
        let key = object_key("pods", Some("default2"), "a");
        assert!(!key.starts_with(&prefix("pods", Some("default"))));
        assert!(key.starts_with(&prefix("pods", None)));
    }
}
