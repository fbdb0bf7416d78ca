//! coordination.k8s.io/v1 Lease: leader election and node heartbeats.

use k8s_openapi::api::coordination;
use serde_json::Value;

use crate::api::resources::{schema_of, ResourceInfo, Storage};
use crate::api::strategy::Strategy;
use crate::api::validation::{self, DecodeError};

pub static INFO: ResourceInfo = ResourceInfo {
    group: "coordination.k8s.io",
    version: "v1",
    name: "leases",
    singular: "lease",
    kind: "Lease",
    namespaced: true,
    short_names: &[],
    subresources: &[],
    has_status_subresource: false,
    field_selectors: &[],
    categories: &[],
    schema: Some(schema_of::<coordination::v1::Lease>),
    strategy: &LeaseStrategy,
    storage: Storage::Stored,
};

#[derive(Debug)]
pub struct LeaseStrategy;

impl Strategy for LeaseStrategy {
    fn decode(&self, obj: &Value) -> Result<Vec<String>, DecodeError> {
        validation::round_trip::<coordination::v1::Lease>("Lease", "coordination.k8s.io/v1", obj)
    }
}
