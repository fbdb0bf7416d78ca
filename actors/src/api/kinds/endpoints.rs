//! core/v1 Endpoints: addresses and ports validated as Kubernetes does.

use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1 as core;
use serde_json::Value;

use crate::api::resources::{schema_of, ResourceInfo, Storage};
use crate::api::strategy::Strategy;
use crate::api::table;
use crate::api::validation::{self, DecodeError, FieldError};

pub static INFO: ResourceInfo = ResourceInfo {
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
    strategy: &EndpointsStrategy,
    storage: Storage::Stored,
};

#[derive(Debug)]
pub struct EndpointsStrategy;

impl Strategy for EndpointsStrategy {
    fn decode(&self, obj: &Value) -> Result<Vec<String>, DecodeError> {
        validation::round_trip::<core::Endpoints>("Endpoints", "v1", obj)
    }

    fn validate(&self, obj: &Value, _old: Option<&Value>) -> Vec<FieldError> {
        let mut errs = Vec::new();
        validation::validate_endpoints(obj, &mut errs);
        errs
    }

    fn columns(&self) -> Vec<Value> {
        table::endpoints_columns()
    }

    fn cells(&self, obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
        table::endpoints_cells(obj, now)
    }
}
