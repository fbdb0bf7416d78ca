//! core/v1 ReplicationController: selector and labels defaulted from the template, the
//! template's pod spec defaulted as a pod's, and a `scale` subresource.

use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1 as core;
use serde_json::{json, Value};

use crate::api::patch::{self, ListStrategy};
use crate::api::resources::{schema_of, ResourceInfo, Storage};
use crate::api::strategy::{ScaleMapping, Strategy};
use crate::api::validation::{self, DecodeError, FieldError};
use crate::api::{defaults, table};

pub static INFO: ResourceInfo = ResourceInfo {
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
    strategy: &ReplicationControllerStrategy,
    storage: Storage::Stored,
};

#[derive(Debug)]
pub struct ReplicationControllerStrategy;

impl Strategy for ReplicationControllerStrategy {
    fn decode(&self, obj: &Value) -> Result<Vec<String>, DecodeError> {
        validation::round_trip::<core::ReplicationController>("ReplicationController", "v1", obj)
    }

    fn has_generation(&self, _obj: &Value) -> bool {
        true
    }

    fn default(&self, obj: &mut Value) {
        defaults::default_rc(obj);
    }

    fn prepare_for_create(&self, obj: &mut Value) {
        obj["status"] = json!({"replicas": 0});
    }

    fn validate(&self, obj: &Value, _old: Option<&Value>) -> Vec<FieldError> {
        let mut errs = Vec::new();
        validation::validate_rc(obj, &mut errs);
        errs
    }

    fn list_strategy(&self, path: &[&str]) -> ListStrategy {
        match path {
            ["spec", "template", "metadata", rest @ ..] => patch::object_meta_list(rest),
            ["spec", "template", "spec", rest @ ..] => patch::pod_spec_list(rest),
            ["status", "conditions"] => ListStrategy::MergeByKey("type"),
            _ => ListStrategy::Replace,
        }
    }

    fn scale(&self) -> Option<ScaleMapping> {
        Some(ScaleMapping { map_selector: true })
    }

    fn columns(&self) -> Vec<Value> {
        table::replication_controller_columns()
    }

    fn cells(&self, obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
        table::replication_controller_cells(obj, now)
    }
}
