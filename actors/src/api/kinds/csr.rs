//! certificates.k8s.io/v1 CertificateSigningRequest: the spec never changes after
//! creation, only `approval` approves or denies, only `status` writes the certificate.

use chrono::{DateTime, Utc};
use k8s_openapi::api::certificates;
use serde_json::Value;

use crate::api::resources::{schema_of, ResourceInfo, Storage};
use crate::api::strategy::{Part, Strategy};
use crate::api::table;
use crate::api::validation::{self, DecodeError};
use crate::gateway::csr::{restrict_update, CsrWrite};

pub static INFO: ResourceInfo = ResourceInfo {
    group: "certificates.k8s.io",
    version: "v1",
    name: "certificatesigningrequests",
    singular: "certificatesigningrequest",
    kind: "CertificateSigningRequest",
    namespaced: false,
    short_names: &["csr"],
    subresources: &["status", "approval"],
    has_status_subresource: true,
    field_selectors: &["spec.signerName"],
    categories: &[],
    schema: Some(schema_of::<certificates::v1::CertificateSigningRequest>),
    strategy: &CsrStrategy,
    storage: Storage::Stored,
};

#[derive(Debug)]
pub struct CsrStrategy;

impl Strategy for CsrStrategy {
    fn decode(&self, obj: &Value) -> Result<Vec<String>, DecodeError> {
        validation::round_trip::<certificates::v1::CertificateSigningRequest>(
            "CertificateSigningRequest",
            "certificates.k8s.io/v1",
            obj,
        )
    }

    fn prepare_for_update(&self, old: &Value, new: &mut Value, part: Part) {
        let write = match part {
            Part::Status => CsrWrite::Status,
            Part::Approval => CsrWrite::Approval,
            Part::Main | Part::Finalizers | Part::EphemeralContainers => CsrWrite::Main,
        };
        restrict_update(old, new, write);
    }

    fn columns(&self) -> Vec<Value> {
        table::csr_columns()
    }

    fn cells(&self, obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
        table::csr_cells(obj, now)
    }
}
