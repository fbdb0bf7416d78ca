//! core/v1 Pod: defaults of every container, status owned by the kubelet, the spec
//! fields an update may change, and the PodSpec's merge keys.

use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1 as core;
use serde_json::{json, Value};

use crate::api::patch::{self, ListStrategy};
use crate::api::resources::{schema_of, ResourceInfo, Storage};
use crate::api::strategy::Strategy;
use crate::api::validation::{self, DecodeError, FieldError};
use crate::api::{defaults, table};

pub static INFO: ResourceInfo = ResourceInfo {
    group: "",
    version: "v1",
    name: "pods",
    singular: "pod",
    kind: "Pod",
    namespaced: true,
    short_names: &["po"],
    subresources: &[
        "status",
        "binding",
        "log",
        "eviction",
        "exec",
        "attach",
        "portforward",
        "ephemeralcontainers",
    ],
    has_status_subresource: true,
    field_selectors: &[
        "spec.nodeName",
        "spec.restartPolicy",
        "spec.schedulerName",
        "spec.serviceAccountName",
        "status.phase",
        "status.podIP",
        "status.nominatedNodeName",
    ],
    categories: &["all"],
    schema: Some(schema_of::<core::Pod>),
    strategy: &PodStrategy,
    storage: Storage::Stored,
};

#[derive(Debug)]
pub struct PodStrategy;

impl Strategy for PodStrategy {
    fn decode(&self, obj: &Value) -> Result<Vec<String>, DecodeError> {
        validation::round_trip::<core::Pod>("Pod", "v1", obj)
    }

    fn has_generation(&self, _obj: &Value) -> bool {
        true
    }

    fn default(&self, obj: &mut Value) {
        defaults::default_pod_spec(defaults::ensure_object(obj, "spec"));
    }

    fn prepare_for_create(&self, obj: &mut Value) {
        // Status belongs to the kubelet; a client cannot create a pod already running.
        let qos = defaults::qos_class(obj.get("spec").unwrap_or(&Value::Null));
        obj["status"] = json!({"phase": "Pending", "qosClass": qos});
    }

    fn validate(&self, obj: &Value, old: Option<&Value>) -> Vec<FieldError> {
        let mut errs = Vec::new();
        validation::validate_pod(obj, old, &mut errs);
        errs
    }

    fn list_strategy(&self, path: &[&str]) -> ListStrategy {
        match path {
            ["spec", rest @ ..] => patch::pod_spec_list(rest),
            ["status", "conditions"] => ListStrategy::MergeByKey("type"),
            ["status", "podIPs" | "hostIPs"] => ListStrategy::MergeByKey("ip"),
            _ => ListStrategy::Replace,
        }
    }

    fn columns(&self) -> Vec<Value> {
        table::pod_columns()
    }

    fn cells(&self, obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
        table::pod_cells(obj, now)
    }
}
