//! core/v1 Event: type, count and timestamps defaulted as kube-apiserver does.

use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1 as core;
use serde_json::Value;

use crate::api::resources::{schema_of, ResourceInfo, Storage};
use crate::api::strategy::Strategy;
use crate::api::validation::{self, DecodeError, FieldError};
use crate::api::{defaults, table};

pub static INFO: ResourceInfo = ResourceInfo {
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
    strategy: &EventStrategy,
    storage: Storage::Stored,
};

#[derive(Debug)]
pub struct EventStrategy;

impl Strategy for EventStrategy {
    fn decode(&self, obj: &Value) -> Result<Vec<String>, DecodeError> {
        validation::round_trip::<core::Event>("Event", "v1", obj)
    }

    fn default(&self, obj: &mut Value) {
        defaults::default_event(obj);
    }

    fn validate(&self, obj: &Value, _old: Option<&Value>) -> Vec<FieldError> {
        let mut errs = Vec::new();
        validation::validate_event(obj, &mut errs);
        errs
    }

    fn columns(&self) -> Vec<Value> {
        table::event_columns()
    }

    fn cells(&self, obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
        table::event_cells(obj, now)
    }
}
