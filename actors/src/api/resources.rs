//! The registry of served resources: names, kinds, scope and verbs, used by discovery,
//! routing, the OpenAPI documents and the store key layout.

use k8s_openapi::api::{
    authentication, authorization, autoscaling, certificates, coordination, events,
};
use k8s_openapi::api::{core::v1 as core, rbac::v1 as rbac};
use schemars::{JsonSchema, Schema, SchemaGenerator};

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
        if is_review(self) {
            return vec!["create"];
        }
        if self.schema.is_none() {
            // Served from memory, never stored (the metrics API).
            return vec!["get", "list"];
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

pub const RESOURCES: &[ResourceInfo] = &[
    ResourceInfo {
        group: "",
        version: "v1",
        name: "namespaces",
        singular: "namespace",
        kind: "Namespace",
        namespaced: false,
        short_names: &["ns"],
        subresources: &["status", "finalize"],
        has_status_subresource: true,
        field_selectors: &["status.phase"],
        categories: &[],
        schema: Some(schema_of::<core::Namespace>),
    },
    ResourceInfo {
        group: "",
        version: "v1",
        name: "nodes",
        singular: "node",
        kind: "Node",
        namespaced: false,
        short_names: &["no"],
        subresources: &["status"],
        has_status_subresource: true,
        field_selectors: &["spec.unschedulable"],
        categories: &[],
        schema: Some(schema_of::<core::Node>),
    },
    ResourceInfo {
        group: "",
        version: "v1",
        name: "pods",
        singular: "pod",
        kind: "Pod",
        namespaced: true,
        short_names: &["po"],
        subresources: &["status", "binding", "log", "eviction"],
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
        categories: &["all"],
        schema: Some(schema_of::<core::Pod>),
    },
    ResourceInfo {
        group: "",
        version: "v1",
        name: "services",
        singular: "service",
        kind: "Service",
        namespaced: true,
        short_names: &["svc"],
        subresources: &["status"],
        has_status_subresource: true,
        field_selectors: &["spec.clusterIP", "spec.type"],
        categories: &["all"],
        schema: Some(schema_of::<core::Service>),
    },
    ResourceInfo {
        group: "",
        version: "v1",
        name: "endpoints",
        singular: "endpoints",
        kind: "Endpoints",
        namespaced: true,
        short_names: &["ep"],
        subresources: &[],
        has_status_subresource: false,
        field_selectors: &[],
        categories: &[],
        schema: Some(schema_of::<core::Endpoints>),
    },
    ResourceInfo {
        group: "",
        version: "v1",
        name: "replicationcontrollers",
        singular: "replicationcontroller",
        kind: "ReplicationController",
        namespaced: true,
        short_names: &["rc"],
        subresources: &["status", "scale"],
        has_status_subresource: true,
        field_selectors: &["status.replicas"],
        categories: &["all"],
        schema: Some(schema_of::<core::ReplicationController>),
    },
    ResourceInfo {
        group: "",
        version: "v1",
        name: "resourcequotas",
        singular: "resourcequota",
        kind: "ResourceQuota",
        namespaced: true,
        short_names: &["quota"],
        subresources: &["status"],
        has_status_subresource: true,
        field_selectors: &[],
        categories: &[],
        schema: Some(schema_of::<core::ResourceQuota>),
    },
    ResourceInfo {
        group: "",
        version: "v1",
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
        categories: &[],
        schema: Some(schema_of::<core::Event>),
    },
    // The same stored Events as core/v1 `events` (same store keys), seen through the
    // events.k8s.io/v1 field names (api::events_v1 converts).
    ResourceInfo {
        group: "events.k8s.io",
        version: "v1",
        name: "events",
        singular: "event",
        kind: "Event",
        namespaced: true,
        short_names: &["ev"],
        subresources: &[],
        has_status_subresource: false,
        field_selectors: &[],
        categories: &[],
        schema: Some(schema_of::<events::v1::Event>),
    },
    ResourceInfo {
        group: "coordination.k8s.io",
        version: "v1",
        name: "leases",
        singular: "lease",
        kind: "Lease",
        namespaced: true,
        short_names: &[],
        subresources: &[],
        has_status_subresource: false,
        field_selectors: &[],
        categories: &[],
        schema: Some(schema_of::<coordination::v1::Lease>),
    },
    ResourceInfo {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        name: "roles",
        singular: "role",
        kind: "Role",
        namespaced: true,
        short_names: &[],
        subresources: &[],
        has_status_subresource: false,
        field_selectors: &[],
        categories: &[],
        schema: Some(schema_of::<rbac::Role>),
    },
    ResourceInfo {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        name: "rolebindings",
        singular: "rolebinding",
        kind: "RoleBinding",
        namespaced: true,
        short_names: &[],
        subresources: &[],
        has_status_subresource: false,
        field_selectors: &[],
        categories: &[],
        schema: Some(schema_of::<rbac::RoleBinding>),
    },
    ResourceInfo {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        name: "clusterroles",
        singular: "clusterrole",
        kind: "ClusterRole",
        namespaced: false,
        short_names: &[],
        subresources: &[],
        has_status_subresource: false,
        field_selectors: &[],
        categories: &[],
        schema: Some(schema_of::<rbac::ClusterRole>),
    },
    ResourceInfo {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        name: "clusterrolebindings",
        singular: "clusterrolebinding",
        kind: "ClusterRoleBinding",
        namespaced: false,
        short_names: &[],
        subresources: &[],
        has_status_subresource: false,
        field_selectors: &[],
        categories: &[],
        schema: Some(schema_of::<rbac::ClusterRoleBinding>),
    },
    ResourceInfo {
        group: "autoscaling",
        version: "v1",
        name: "horizontalpodautoscalers",
        singular: "horizontalpodautoscaler",
        kind: "HorizontalPodAutoscaler",
        namespaced: true,
        short_names: &["hpa"],
        subresources: &["status"],
        has_status_subresource: true,
        field_selectors: &[],
        categories: &["all"],
        schema: Some(schema_of::<autoscaling::v1::HorizontalPodAutoscaler>),
    },
    ResourceInfo {
        group: "certificates.k8s.io",
        version: "v1",
        name: "certificatesigningrequests",
        singular: "certificatesigningrequest",
        kind: "CertificateSigningRequest",
        namespaced: false,
        short_names: &["csr"],
        subresources: &["status", "approval"],
        has_status_subresource: true,
        field_selectors: &["spec.signerName"],
        categories: &[],
        schema: Some(schema_of::<certificates::v1::CertificateSigningRequest>),
    },
];

/// Create-only resources answered from the request and never stored (kube's reviews).
/// They are routed and discovered like the others, with `create` as their only verb.
pub const REVIEWS: &[ResourceInfo] = &[
    ResourceInfo {
        group: "authentication.k8s.io",
        version: "v1",
        name: "selfsubjectreviews",
        singular: "selfsubjectreview",
        kind: "SelfSubjectReview",
        namespaced: false,
        short_names: &[],
        subresources: &[],
        has_status_subresource: false,
        field_selectors: &[],
        categories: &[],
        schema: Some(schema_of::<authentication::v1::SelfSubjectReview>),
    },
    ResourceInfo {
        group: "authorization.k8s.io",
        version: "v1",
        name: "selfsubjectaccessreviews",
        singular: "selfsubjectaccessreview",
        kind: "SelfSubjectAccessReview",
        namespaced: false,
        short_names: &[],
        subresources: &[],
        has_status_subresource: false,
        field_selectors: &[],
        categories: &[],
        schema: Some(schema_of::<authorization::v1::SelfSubjectAccessReview>),
    },
    ResourceInfo {
        group: "authentication.k8s.io",
        version: "v1",
        name: "tokenreviews",
        singular: "tokenreview",
        kind: "TokenReview",
        namespaced: false,
        short_names: &[],
        subresources: &[],
        has_status_subresource: false,
        field_selectors: &[],
        categories: &[],
        schema: Some(schema_of::<authentication::v1::TokenReview>),
    },
    ResourceInfo {
        group: "authorization.k8s.io",
        version: "v1",
        name: "subjectaccessreviews",
        singular: "subjectaccessreview",
        kind: "SubjectAccessReview",
        namespaced: false,
        short_names: &[],
        subresources: &[],
        has_status_subresource: false,
        field_selectors: &[],
        categories: &[],
        schema: Some(schema_of::<authorization::v1::SubjectAccessReview>),
    },
    ResourceInfo {
        group: "authorization.k8s.io",
        version: "v1",
        name: "localsubjectaccessreviews",
        singular: "localsubjectaccessreview",
        kind: "LocalSubjectAccessReview",
        namespaced: true,
        short_names: &[],
        subresources: &[],
        has_status_subresource: false,
        field_selectors: &[],
        categories: &[],
        schema: Some(schema_of::<authorization::v1::LocalSubjectAccessReview>),
    },
    ResourceInfo {
        group: "authorization.k8s.io",
        version: "v1",
        name: "selfsubjectrulesreviews",
        singular: "selfsubjectrulesreview",
        kind: "SelfSubjectRulesReview",
        namespaced: false,
        short_names: &[],
        subresources: &[],
        has_status_subresource: false,
        field_selectors: &[],
        categories: &[],
        schema: Some(schema_of::<authorization::v1::SelfSubjectRulesReview>),
    },
];

/// Whether `info` is another view of objects stored under another group's resource of
/// the same name (events.k8s.io/v1 Events are core/v1 Events).
pub fn is_view(info: &ResourceInfo) -> bool {
    info.group == crate::api::events_v1::GROUP
}

/// The `apiVersion` objects of `info` are stored with: a view's stored form is its
/// origin's.
pub fn stored_api_version(info: &ResourceInfo) -> String {
    if is_view(info) {
        "v1".to_string()
    } else {
        info.api_version()
    }
}

/// Whether `info` is one of the [`REVIEWS`].
pub fn is_review(info: &ResourceInfo) -> bool {
    REVIEWS
        .iter()
        .any(|r| r.group == info.group && r.name == info.name)
}

/// Look a resource up by its plural name.
pub fn lookup(name: &str) -> Option<&'static ResourceInfo> {
    RESOURCES.iter().find(|r| r.name == name)
}

/// Look a resource up by its plural name within one group and version.
pub fn lookup_in(group: &str, version: &str, name: &str) -> Option<&'static ResourceInfo> {
    RESOURCES
        .iter()
        .chain(REVIEWS)
        .find(|r| r.group == group && r.version == version && r.name == name)
}

/// The API groups (other than core) the gateway serves, each with its one version.
pub fn groups() -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&'static str, &'static str)> = Vec::new();
    for r in RESOURCES
        .iter()
        .chain(REVIEWS)
        .filter(|r| !r.group.is_empty())
    {
        if !out.contains(&(r.group, r.version)) {
            out.push((r.group, r.version));
        }
    }
    out
}

/// Look a resource up by the `apiVersion` and `kind` an object (or an owner reference)
/// names.
pub fn by_api_version_kind(api_version: &str, kind: &str) -> Option<&'static ResourceInfo> {
    let (group, version) = match api_version.split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", api_version),
    };
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.kind == kind)
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
    fn resource_names_are_unique_across_groups_so_store_keys_cannot_collide() {
        // Views of another group's stored objects share its name, and so its keys.
        let views = RESOURCES.iter().filter(|r| is_view(r)).count();
        let mut names: Vec<_> = RESOURCES.iter().chain(REVIEWS).map(|r| r.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), RESOURCES.len() + REVIEWS.len() - views);
        assert_eq!(lookup("events").map(|r| r.group), Some(""));
        assert_eq!(by_kind("Event").map(|r| r.group), Some(""));
    }

    #[test]
    fn grouped_resources_are_served_under_apis() {
        let hpa = lookup("horizontalpodautoscalers").expect("served");
        assert_eq!(hpa.api_version(), "autoscaling/v1");
        assert_eq!(hpa.base_path(), "/apis/autoscaling/v1");
        assert_eq!(lookup("pods").expect("served").base_path(), "/api/v1");
        assert!(lookup_in("", "v1", "roles").is_none());
    }

    #[test]
    fn namespace_prefix_does_not_cover_a_longer_namespace_name() {
        let key = object_key("pods", Some("default2"), "a");
        assert!(!key.starts_with(&prefix("pods", Some("default"))));
        assert!(key.starts_with(&prefix("pods", None)));
    }
}
