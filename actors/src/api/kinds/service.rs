//! core/v1 Service: type, ports and affinity defaulted, names DNS-1035 labels, ports
//! merged by port number. (Address allocation is admission in the gateway.)

use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1 as core;
use serde_json::{json, Value};

use crate::api::patch::ListStrategy;
use crate::api::resources::{schema_of, ResourceInfo, Storage};
use crate::api::strategy::{NameRule, Strategy};
use crate::api::validation::{self, DecodeError, FieldError};
use crate::api::{defaults, table};

pub static INFO: ResourceInfo = ResourceInfo {
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
    strategy: &ServiceStrategy,
    storage: Storage::Stored,
};

#[derive(Debug)]
pub struct ServiceStrategy;

impl Strategy for ServiceStrategy {
    fn decode(&self, obj: &Value) -> Result<Vec<String>, DecodeError> {
        validation::round_trip::<core::Service>("Service", "v1", obj)
    }

    fn default(&self, obj: &mut Value) {
        defaults::default_service_spec(defaults::ensure_object(obj, "spec"));
    }

    fn prepare_for_create(&self, obj: &mut Value) {
        obj["status"] = json!({"loadBalancer": {}});
    }

    fn name_rule(&self) -> NameRule {
        NameRule::Dns1035Label
    }

    fn validate(&self, obj: &Value, old: Option<&Value>) -> Vec<FieldError> {
        let mut errs = Vec::new();
        validation::validate_service(obj, old, &mut errs);
        errs
    }

    fn list_strategy(&self, path: &[&str]) -> ListStrategy {
        match path {
            ["status", "conditions"] => ListStrategy::MergeByKey("type"),
            ["spec", "ports"] => ListStrategy::MergeByKey("port"),
            _ => ListStrategy::Replace,
        }
    }

    fn columns(&self) -> Vec<Value> {
        table::service_columns()
    }

    fn cells(&self, obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
        table::service_cells(obj, now)
    }
}
