//! apps/v1 ReplicaSet: one replica by default, a `LabelSelector` that must select the
//! template, and the `scale` and `status` subresources.

use chrono::{DateTime, Utc};
use k8s_openapi::api::apps::v1 as apps;
use serde_json::{json, Value};

use super::{deployment, workload};
use crate::api::patch::ListStrategy;
use crate::api::resources::{schema_of, ResourceInfo, Storage};
use crate::api::strategy::{ScaleMapping, Typed, TypedStrategy};
use crate::api::validation::FieldError;
use crate::api::{defaults, table};

pub static INFO: ResourceInfo = ResourceInfo {
    group: "apps",
    version: "v1",
    name: "replicasets",
    singular: "replicaset",
    kind: "ReplicaSet",
    namespaced: true,
    short_names: &["rs"],
    subresources: &["status", "scale"],
    has_status_subresource: true,
    field_selectors: &[],
    categories: &["all"],
    schema: Some(schema_of::<apps::ReplicaSet>),
    strategy: &Typed(ReplicaSetStrategy),
    storage: Storage::Stored,
};

#[derive(Debug)]
pub struct ReplicaSetStrategy;

impl TypedStrategy for ReplicaSetStrategy {
    type Object = apps::ReplicaSet;
    const KIND: &'static str = "ReplicaSet";
    const API_VERSION: &'static str = "apps/v1";

    fn default(&self, rs: &mut apps::ReplicaSet) {
        let spec = &mut rs.spec;
        spec.replicas.get_or_insert(1);
        if let Some(pod) = spec.template.as_mut().and_then(|t| t.spec.as_mut()) {
            defaults::default_pod_spec_typed(pod);
        }
    }

    fn prepare_for_create(&self, rs: &mut apps::ReplicaSet) {
        rs.status = Some(apps::ReplicaSetStatus::default());
    }

    fn validate(&self, rs: &apps::ReplicaSet, old: Option<&apps::ReplicaSet>) -> Vec<FieldError> {
        let mut errs = Vec::new();
        let spec = &rs.spec;
        workload::non_negative(spec.replicas, "spec.replicas", &mut errs);
        workload::non_negative(spec.min_ready_seconds, "spec.minReadySeconds", &mut errs);
        match &spec.template {
            Some(t) => workload::validate_selector_and_template(
                "ReplicaSet",
                Some(&spec.selector),
                t,
                &mut errs,
            ),
            None => errs.push(FieldError::required("spec.template")),
        }
        if let Some(old) = old.map(|o| &o.spec) {
            workload::selector_unchanged(Some(&spec.selector), Some(&old.selector), &mut errs);
        }
        errs
    }

    fn list_strategy(&self, path: &[&str]) -> ListStrategy {
        workload::list_strategy(path)
    }

    fn scale(&self) -> Option<ScaleMapping> {
        Some(ScaleMapping {
            map_selector: false,
        })
    }

    fn columns(&self) -> Vec<Value> {
        vec![
            table::name_column(0),
            table::column("Desired", "integer", 0, "Replicas is the number of desired pods. This is a pointer to distinguish between explicit zero and unspecified. Defaults to 1. More info: https://kubernetes.io/docs/concepts/workloads/controllers/replicaset/#how-a-replicaset-works"),
            table::column("Current", "integer", 0, "Replicas is the most recently observed number of non-terminating pods. More info: https://kubernetes.io/docs/concepts/workloads/controllers/replicaset/#how-a-replicaset-works"),
            table::column("Ready", "integer", 0, "The number of non-terminating pods targeted by this ReplicaSet with a Ready Condition."),
            table::age_column(),
            table::column("Containers", "string", 1, table::CONTAINERS_DESC),
            table::column("Images", "string", 1, table::IMAGES_DESC),
            table::column("Selector", "string", 1, "Selector is a label query over pods that should match the replica count. Label keys and values that must match in order to be controlled by this replica set. It must match the pod template's labels. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/labels/#label-selectors"),
        ]
    }

    fn cells(&self, rs: &apps::ReplicaSet, raw: &Value, now: DateTime<Utc>) -> Vec<Value> {
        let spec = Some(&rs.spec);
        let status = rs.status.clone().unwrap_or_default();
        let (containers, images) =
            deployment::template_cells(spec.and_then(|s| s.template.as_ref()));
        let selector = spec
            .and_then(|s| workload::selector_of(&s.selector))
            .map(|s| s.to_string())
            .unwrap_or_else(|| "<none>".into());
        vec![
            table::name(raw),
            json!(spec.and_then(|s| s.replicas).unwrap_or(1)),
            json!(status.replicas),
            json!(status.ready_replicas.unwrap_or(0)),
            table::age(raw, now),
            json!(containers),
            json!(images),
            json!(selector),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::validation::validate_object;

    #[test]
    fn a_set_based_selector_must_select_the_template() {
        let mut rs = json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"selector": {"matchExpressions": [
                {"key": "app", "operator": "In", "values": ["web", "api"]}]},
                "template": {"metadata": {"labels": {"app": "api"}},
                    "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}});
        INFO.strategy.default(&mut rs);
        assert_eq!(rs["spec"]["replicas"], 1);
        assert!(validate_object(&INFO, &rs, None).is_empty());
        rs["spec"]["template"]["metadata"]["labels"]["app"] = json!("db");
        let errs = validate_object(&INFO, &rs, None);
        assert_eq!(errs[0].field, "spec.template.metadata.labels");
    }
}
