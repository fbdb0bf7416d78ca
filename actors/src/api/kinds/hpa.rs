//! autoscaling/v1 HorizontalPodAutoscaler.

use chrono::{DateTime, Utc};
use k8s_openapi::api::autoscaling;
use serde_json::Value;

use crate::api::resources::{schema_of, ResourceInfo, Storage};
use crate::api::strategy::Strategy;
use crate::api::table;
use crate::api::validation::{self, DecodeError, FieldError};

pub static INFO: ResourceInfo = ResourceInfo {
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
    strategy: &HpaStrategy,
    storage: Storage::Stored,
};

#[derive(Debug)]
pub struct HpaStrategy;

impl Strategy for HpaStrategy {
    fn decode(&self, obj: &Value) -> Result<Vec<String>, DecodeError> {
        validation::round_trip::<autoscaling::v1::HorizontalPodAutoscaler>(
            "HorizontalPodAutoscaler",
            "autoscaling/v1",
            obj,
        )
    }

    fn validate(&self, obj: &Value, _old: Option<&Value>) -> Vec<FieldError> {
        let mut errs = Vec::new();
        validation::validate_hpa(obj, &mut errs);
        errs
    }

    fn columns(&self) -> Vec<Value> {
        table::hpa_columns()
    }

    fn cells(&self, obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
        table::hpa_cells(obj, now)
    }
}
