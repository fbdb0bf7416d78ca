//! core/v1 Namespace: the `kubernetes` finalizer every namespace starts with, which only
//! the `finalize` subresource may change.

use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1 as core;
use serde_json::{json, Value};

use crate::api::patch::ListStrategy;
use crate::api::resources::{schema_of, ResourceInfo, Storage};
use crate::api::strategy::{NameRule, Part, Strategy};
use crate::api::validation::{self, DecodeError, FieldError};
use crate::api::{defaults, table};

pub static INFO: ResourceInfo = ResourceInfo {
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
    strategy: &NamespaceStrategy,
    storage: Storage::Stored,
};

#[derive(Debug)]
pub struct NamespaceStrategy;

impl Strategy for NamespaceStrategy {
    fn decode(&self, obj: &Value) -> Result<Vec<String>, DecodeError> {
        validation::round_trip::<core::Namespace>("Namespace", "v1", obj)
    }

    fn default(&self, obj: &mut Value) {
        defaults::ensure_object(obj, "spec")
            .entry("finalizers")
            .or_insert_with(|| json!(["kubernetes"]));
    }

    fn prepare_for_create(&self, obj: &mut Value) {
        obj["status"] = json!({"phase": "Active"});
    }

    fn prepare_for_update(&self, old: &Value, new: &mut Value, part: Part) {
        if part == Part::Main {
            // Only the finalize subresource edits a namespace's finalizers.
            new["spec"]["finalizers"] = old
                .pointer("/spec/finalizers")
                .cloned()
                .unwrap_or(json!([]));
        }
    }

    fn name_rule(&self) -> NameRule {
        NameRule::Dns1123Label
    }

    fn validate(&self, obj: &Value, _old: Option<&Value>) -> Vec<FieldError> {
        let mut errs = Vec::new();
        validation::validate_namespace(obj, &mut errs);
        errs
    }

    fn list_strategy(&self, path: &[&str]) -> ListStrategy {
        match path {
            ["status", "conditions"] => ListStrategy::MergeByKey("type"),
            _ => ListStrategy::Replace,
        }
    }

    fn columns(&self) -> Vec<Value> {
        table::namespace_columns()
    }

    fn cells(&self, obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
        table::namespace_cells(obj, now)
    }
}
