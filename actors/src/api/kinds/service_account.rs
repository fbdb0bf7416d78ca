//! core/v1 ServiceAccount: an identity for the processes of pods. Kubernetes validates
//! nothing beyond its metadata; `secrets`, `imagePullSecrets` and
//! `automountServiceAccountToken` are stored as given and read by the ServiceAccount
//! admission and the token machinery.

use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1 as core;
use serde_json::{json, Value};

use crate::api::resources::{schema_of, ResourceInfo, Storage};
use crate::api::strategy::{Typed, TypedStrategy};
use crate::api::table;

pub const RESOURCE: &str = "serviceaccounts";
/// The account every namespace has, which pods without `serviceAccountName` run as.
pub const DEFAULT_NAME: &str = "default";

pub static INFO: ResourceInfo = ResourceInfo {
    group: "",
    version: "v1",
    name: RESOURCE,
    singular: "serviceaccount",
    kind: "ServiceAccount",
    namespaced: true,
    short_names: &["sa"],
    // `token`: the TokenRequest API (gateway/serviceaccount/request.rs).
    subresources: &["token"],
    has_status_subresource: false,
    field_selectors: &[],
    categories: &[],
    schema: Some(schema_of::<core::ServiceAccount>),
    strategy: &Typed(ServiceAccountStrategy),
    storage: Storage::Stored,
};

#[derive(Debug)]
pub struct ServiceAccountStrategy;

impl TypedStrategy for ServiceAccountStrategy {
    type Object = core::ServiceAccount;
    const KIND: &'static str = "ServiceAccount";
    const API_VERSION: &'static str = "v1";

    fn has_generation(&self) -> bool {
        false
    }

    fn columns(&self) -> Vec<Value> {
        vec![
            table::name_column(0),
            table::column("Secrets", "string", 0, "Secrets is a list of the secrets in the same namespace that pods running using this ServiceAccount are allowed to use. Pods are only limited to this list if this service account has a \"kubernetes.io/enforce-mountable-secrets\" annotation set to \"true\". More info: https://kubernetes.io/docs/concepts/configuration/secret"),
            table::age_column(),
        ]
    }

    fn cells(&self, sa: &core::ServiceAccount, raw: &Value, now: DateTime<Utc>) -> Vec<Value> {
        vec![
            table::name(raw),
            json!(sa.secrets.as_ref().map_or(0, |s| s.len())),
            table::age(raw, now),
        ]
    }
}

/// A service account object, as the ServiceAccount controller creates it.
pub fn object(namespace: &str, name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": {"name": name, "namespace": namespace}})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::validation::{validate_object, FieldError};

    #[test]
    fn an_account_needs_only_a_subdomain_name() {
        let mut sa = object("default", "builder");
        sa["automountServiceAccountToken"] = json!(false);
        sa["imagePullSecrets"] = json!([{"name": "regcred"}]);
        assert!(validate_object(&INFO, &sa, None).is_empty());
        let bad = object("default", "Bad_Name");
        let msgs: Vec<String> = validate_object(&INFO, &bad, None)
            .iter()
            .map(FieldError::message)
            .collect();
        assert_eq!(msgs.len(), 1);
        assert!(msgs[0].starts_with("metadata.name: Invalid value: \"Bad_Name\""));
    }

    #[test]
    fn the_table_counts_secrets() {
        let mut raw = object("default", "builder");
        raw["secrets"] = json!([{"name": "a"}, {"name": "b"}]);
        let sa: core::ServiceAccount = crate::api::strategy::typed(&raw).expect("decodes");
        let row = ServiceAccountStrategy.cells(&sa, &raw, Utc::now());
        assert_eq!(row[1], json!(2));
    }
}
