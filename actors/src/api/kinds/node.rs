//! core/v1 Node: taints, pod CIDRs and addresses validated; conditions and addresses
//! merged by type.

use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1 as core;
use serde_json::Value;

use crate::api::patch::ListStrategy;
use crate::api::resources::{schema_of, ResourceInfo, Storage};
use crate::api::strategy::Strategy;
use crate::api::table;
use crate::api::validation::{self, DecodeError, FieldError};

pub static INFO: ResourceInfo = ResourceInfo {
    group: "",
    version: "v1",
    name: "nodes",
    singular: "node",
    kind: "Node",
    namespaced: false,
    short_names: &["no"],
    subresources: &["status", "proxy"],
    has_status_subresource: true,
    field_selectors: &["spec.unschedulable"],
    categories: &[],
    schema: Some(schema_of::<core::Node>),
    strategy: &NodeStrategy,
    storage: Storage::Stored,
};

#[derive(Debug)]
pub struct NodeStrategy;

impl Strategy for NodeStrategy {
    fn decode(&self, obj: &Value) -> Result<Vec<String>, DecodeError> {
        validation::round_trip::<core::Node>("Node", "v1", obj)
    }

    fn validate(&self, obj: &Value, old: Option<&Value>) -> Vec<FieldError> {
        let mut errs = Vec::new();
        validation::validate_node(obj, old, &mut errs);
        errs
    }

    fn list_strategy(&self, path: &[&str]) -> ListStrategy {
        match path {
            ["status", "conditions" | "addresses"] => ListStrategy::MergeByKey("type"),
            ["spec", "podCIDRs"] => ListStrategy::MergePrimitive,
            _ => ListStrategy::Replace,
        }
    }

    fn columns(&self) -> Vec<Value> {
        table::node_columns()
    }

    fn cells(&self, obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
        table::node_cells(obj, now)
    }
}
