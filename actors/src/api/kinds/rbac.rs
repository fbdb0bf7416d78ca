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
    strategy: &RoleStrategy,
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
    strategy: &RoleBindingStrategy,
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
    strategy: &ClusterRoleStrategy,
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
    strategy: &ClusterRoleBindingStrategy,
    storage: Storage::Stored,
};

#[derive(Debug)]
pub struct RoleStrategy;

impl Strategy for RoleStrategy {
    fn decode(&self, obj: &Value) -> Result<Vec<String>, DecodeError> {
        validation::round_trip::<rbac::Role>("Role", API_VERSION, obj)
    }

    fn name_rule(&self) -> NameRule {
        NameRule::PathSegment
    }

    fn validate(&self, obj: &Value, old: Option<&Value>) -> Vec<FieldError> {
        let _ = old;
        let mut errs = Vec::new();
        validation::rbac::validate_role(obj, true, &mut errs);
        errs
    }
}

#[derive(Debug)]
pub struct ClusterRoleStrategy;

impl Strategy for ClusterRoleStrategy {
    fn decode(&self, obj: &Value) -> Result<Vec<String>, DecodeError> {
        validation::round_trip::<rbac::ClusterRole>("ClusterRole", API_VERSION, obj)
    }

    fn name_rule(&self) -> NameRule {
        NameRule::PathSegment
    }

    fn validate(&self, obj: &Value, old: Option<&Value>) -> Vec<FieldError> {
        let _ = old;
        let mut errs = Vec::new();
        validation::rbac::validate_role(obj, false, &mut errs);
        errs
    }
}

#[derive(Debug)]
pub struct RoleBindingStrategy;

impl Strategy for RoleBindingStrategy {
    fn decode(&self, obj: &Value) -> Result<Vec<String>, DecodeError> {
        validation::round_trip::<rbac::RoleBinding>("RoleBinding", API_VERSION, obj)
    }

    fn name_rule(&self) -> NameRule {
        NameRule::PathSegment
    }

    fn validate(&self, obj: &Value, old: Option<&Value>) -> Vec<FieldError> {
        let _ = old;
        let mut errs = Vec::new();
        validation::rbac::validate_binding(obj, old, true, &mut errs);
        errs
    }
}

#[derive(Debug)]
pub struct ClusterRoleBindingStrategy;

impl Strategy for ClusterRoleBindingStrategy {
    fn decode(&self, obj: &Value) -> Result<Vec<String>, DecodeError> {
        validation::round_trip::<rbac::ClusterRoleBinding>("ClusterRoleBinding", API_VERSION, obj)
    }

    fn name_rule(&self) -> NameRule {
        NameRule::PathSegment
    }

    fn validate(&self, obj: &Value, old: Option<&Value>) -> Vec<FieldError> {
        let _ = old;
        let mut errs = Vec::new();
        validation::rbac::validate_binding(obj, old, false, &mut errs);
        errs
    }
}
