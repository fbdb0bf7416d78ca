//! core/v1 ResourceQuota: resource names and scopes validated as Kubernetes does.

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
    strategy: &ResourceQuotaStrategy,
    storage: Storage::Stored,
};

#[derive(Debug)]
pub struct ResourceQuotaStrategy;

impl Strategy for ResourceQuotaStrategy {
    fn decode(&self, obj: &Value) -> Result<Vec<String>, DecodeError> {
        validation::round_trip::<core::ResourceQuota>("ResourceQuota", "v1", obj)
    }

    fn validate(&self, obj: &Value, _old: Option<&Value>) -> Vec<FieldError> {
        let mut errs = Vec::new();
        validation::validate_resource_quota(obj, &mut errs);
        errs
    }

    fn columns(&self) -> Vec<Value> {
        table::resource_quota_columns()
    }

    fn cells(&self, obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
        table::resource_quota_cells(obj, now)
    }
}
