//! rbac.authorization.k8s.io/v1 Roles, ClusterRoles and their bindings: names are any
//! path segment (`system:node`), rules and subjects validated, a binding's roleRef fixed.

use k8s_openapi::api::rbac::v1 as rbac;
use serde_json::Value;

use crate::api::resources::{schema_of, ResourceInfo, Storage};
use crate::api::strategy::{NameRule, Strategy};
use crate::api::validation::{self, DecodeError, FieldError};

const API_VERSION: &str = "rbac.authorization.k8s.io/v1";

pub static ROLE: ResourceInfo = ResourceInfo {
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
    strategy: &RbacStrategy::<rbac::Role>::new("Role", true, false),
    storage: Storage::Stored,
};

pub static ROLE_BINDING: ResourceInfo = ResourceInfo {
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
    strategy: &RbacStrategy::<rbac::RoleBinding>::new("RoleBinding", true, true),
    storage: Storage::Stored,
};

pub static CLUSTER_ROLE: ResourceInfo = ResourceInfo {
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
    strategy: &RbacStrategy::<rbac::ClusterRole>::new("ClusterRole", false, false),
    storage: Storage::Stored,
};

pub static CLUSTER_ROLE_BINDING: ResourceInfo = ResourceInfo {
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
    strategy: &RbacStrategy::<rbac::ClusterRoleBinding>::new("ClusterRoleBinding", false, true),
    storage: Storage::Stored,
};

/// The four RBAC kinds differ only in their type and whether they are namespaced.
#[derive(Debug)]
pub struct RbacStrategy<T> {
    kind: &'static str,
    namespaced: bool,
    binding: bool,
    _type: std::marker::PhantomData<fn() -> T>,
}

impl<T> RbacStrategy<T> {
    const fn new(kind: &'static str, namespaced: bool, binding: bool) -> Self {
        RbacStrategy {
            kind,
            namespaced,
            binding,
            _type: std::marker::PhantomData,
        }
    }
}

impl<T> Strategy for RbacStrategy<T>
where
    T: serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug + 'static,
{
    fn decode(&self, obj: &Value) -> Result<Vec<String>, DecodeError> {
        validation::round_trip::<T>(self.kind, API_VERSION, obj)
    }

    fn name_rule(&self) -> NameRule {
        NameRule::PathSegment
    }

    fn validate(&self, obj: &Value, old: Option<&Value>) -> Vec<FieldError> {
        let mut errs = Vec::new();
        if self.binding {
            validation::rbac::validate_binding(obj, old, self.namespaced, &mut errs);
        } else {
            validation::rbac::validate_role(obj, self.namespaced, &mut errs);
        }
        errs
    }
}
