//! apps/v1 Deployment: defaults as `SetDefaults_Deployment` (one replica, RollingUpdate
//! with 25% surge and unavailability, ten revisions kept, a 600 s progress deadline),
//! validation as `ValidateDeployment`, and the `scale` and `status` subresources.

use chrono::{DateTime, Utc};
use k8s_openapi::api::apps::v1 as apps;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::{json, Value};

use super::workload;
use crate::api::patch::ListStrategy;
use crate::api::resources::{schema_of, ResourceInfo, Storage};
use crate::api::strategy::{Part, ScaleMapping, Typed, TypedStrategy};
use crate::api::validation::FieldError;
use crate::api::{defaults, table};

pub static INFO: ResourceInfo = ResourceInfo {
    group: "apps",
    version: "v1",
    name: "deployments",
    singular: "deployment",
    kind: "Deployment",
    namespaced: true,
    short_names: &["deploy"],
    subresources: &["status", "scale"],
    has_status_subresource: true,
    field_selectors: &[],
    categories: &["all"],
    schema: Some(schema_of::<apps::Deployment>),
    strategy: &Typed(DeploymentStrategy),
    storage: Storage::Stored,
};

const TYPES: &[&str] = &["Recreate", "RollingUpdate"];

#[derive(Debug)]
pub struct DeploymentStrategy;

impl TypedStrategy for DeploymentStrategy {
    type Object = apps::Deployment;
    const KIND: &'static str = "Deployment";
    const API_VERSION: &'static str = "apps/v1";

    fn default(&self, d: &mut apps::Deployment) {
        let spec = &mut d.spec;
        spec.replicas.get_or_insert(1);
        spec.revision_history_limit.get_or_insert(10);
        spec.progress_deadline_seconds.get_or_insert(600);
        let strategy = spec.strategy.get_or_insert_with(Default::default);
        let kind = strategy.type_.get_or_insert_with(|| "RollingUpdate".into());
        if kind == "RollingUpdate" {
            let ru = strategy.rolling_update.get_or_insert_with(Default::default);
            let quarter = || IntOrString::String("25%".into());
            ru.max_unavailable.get_or_insert_with(quarter);
            ru.max_surge.get_or_insert_with(quarter);
        }
        if let Some(pod) = spec.template.spec.as_mut() {
            defaults::default_pod_spec_typed(pod);
        }
    }

    fn prepare_for_create(&self, d: &mut apps::Deployment) {
        d.status = Some(Default::default());
    }

    fn prepare_for_update(&self, _old: &apps::Deployment, _new: &mut apps::Deployment, _: Part) {}

    fn validate(&self, d: &apps::Deployment, old: Option<&apps::Deployment>) -> Vec<FieldError> {
        let mut errs = Vec::new();
        let spec = &d.spec;
        workload::non_negative(spec.replicas, "spec.replicas", &mut errs);
        workload::non_negative(spec.min_ready_seconds, "spec.minReadySeconds", &mut errs);
        workload::non_negative(
            spec.revision_history_limit,
            "spec.revisionHistoryLimit",
            &mut errs,
        );
        workload::validate_selector_and_template(
            "Deployment",
            Some(&spec.selector),
            &spec.template,
            &mut errs,
        );
        validate_strategy(spec.strategy.as_ref(), &mut errs);
        if let Some(deadline) = spec.progress_deadline_seconds {
            workload::non_negative(Some(deadline), "spec.progressDeadlineSeconds", &mut errs);
            if deadline <= spec.min_ready_seconds.unwrap_or(0) {
                errs.push(FieldError::invalid(
                    "spec.progressDeadlineSeconds",
                    &json!(deadline),
                    "must be greater than minReadySeconds",
                ));
            }
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
            table::column("Ready", "string", 0, "Number of the pod with ready state"),
            table::column("Up-to-date", "string", 0, "Total number of non-terminated pods targeted by this deployment that have the desired template spec."),
            table::column("Available", "string", 0, "Total number of available pods (ready for at least minReadySeconds) targeted by this deployment."),
            table::age_column(),
            table::column("Containers", "string", 1, table::CONTAINERS_DESC),
            table::column("Images", "string", 1, table::IMAGES_DESC),
            table::column("Selector", "string", 1, "Label selector for pods. Existing ReplicaSets whose pods are selected by this will be the ones affected by this deployment."),
        ]
    }

    fn cells(&self, d: &apps::Deployment, raw: &Value, now: DateTime<Utc>) -> Vec<Value> {
        let spec = Some(&d.spec);
        let status = d.status.clone().unwrap_or_default();
        let desired = spec.and_then(|s| s.replicas).unwrap_or(1);
        let (containers, images) = template_cells(spec.map(|s| &s.template));
        let selector = spec
            .and_then(|s| workload::selector_of(&s.selector))
            .map(|s| s.to_string())
            .unwrap_or_else(|| "<none>".into());
        vec![
            table::name(raw),
            json!(format!("{}/{desired}", status.ready_replicas.unwrap_or(0))),
            json!(status.updated_replicas.unwrap_or(0)),
            json!(status.available_replicas.unwrap_or(0)),
            table::age(raw, now),
            json!(containers),
            json!(images),
            json!(selector),
        ]
    }
}

/// The CONTAINERS and IMAGES cells of a pod template.
pub fn template_cells(
    template: Option<&k8s_openapi::api::core::v1::PodTemplateSpec>,
) -> (String, String) {
    let containers = template
        .and_then(|t| t.spec.as_ref())
        .map(|s| s.containers.as_slice())
        .unwrap_or_default();
    let names: Vec<&str> = containers.iter().map(|c| c.name.as_str()).collect();
    let images: Vec<&str> = containers
        .iter()
        .map(|c| c.image.as_deref().unwrap_or_default())
        .collect();
    (names.join(","), images.join(","))
}

fn validate_strategy(s: Option<&apps::DeploymentStrategy>, errs: &mut Vec<FieldError>) {
    let Some(s) = s else { return };
    let kind = s.type_.as_deref().unwrap_or("RollingUpdate");
    if !TYPES.contains(&kind) {
        errs.push(FieldError::not_supported(
            "spec.strategy.type",
            &json!(kind),
            TYPES,
        ));
    }
    match (&s.rolling_update, kind) {
        (Some(_), "Recreate") => errs.push(FieldError::forbidden(
            "spec.strategy.rollingUpdate",
            "may not be specified when strategy `type` is 'Recreate'",
        )),
        (Some(ru), _) => {
            let path = "spec.strategy.rollingUpdate";
            if let Some(v) = &ru.max_unavailable {
                workload::validate_int_or_percent(v, &format!("{path}.maxUnavailable"), errs);
            }
            if let Some(v) = &ru.max_surge {
                workload::validate_int_or_percent(v, &format!("{path}.maxSurge"), errs);
            }
            let zero = |v: &Option<IntOrString>| workload::scaled(v.as_ref(), 100, true) == 0;
            if zero(&ru.max_unavailable) && zero(&ru.max_surge) {
                errs.push(FieldError::invalid(
                    format!("{path}.maxUnavailable"),
                    &serde_json::to_value(&ru.max_unavailable).unwrap_or(json!(0)),
                    "may not be 0 when `maxSurge` is 0",
                ));
            }
        }
        (None, _) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::validation::validate_object;

    fn deployment() -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}})
    }

    fn defaulted(mut d: Value) -> Value {
        INFO.strategy.default(&mut d);
        d
    }

    fn fields(d: &Value, old: Option<&Value>) -> Vec<String> {
        validate_object(&INFO, d, old)
            .into_iter()
            .map(|e| format!("{}: {}", e.field, e.detail))
            .collect()
    }

    #[test]
    fn defaults_are_kubernetes_ones_and_idempotent() {
        let d = defaulted(deployment());
        assert_eq!(d["spec"]["replicas"], 1);
        assert_eq!(d["spec"]["strategy"]["type"], "RollingUpdate");
        assert_eq!(d["spec"]["strategy"]["rollingUpdate"]["maxSurge"], "25%");
        assert_eq!(
            d["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"],
            "25%"
        );
        assert_eq!(d["spec"]["revisionHistoryLimit"], 10);
        assert_eq!(d["spec"]["progressDeadlineSeconds"], 600);
        assert_eq!(d["spec"]["template"]["spec"]["restartPolicy"], "Always");
        assert_eq!(defaulted(d.clone()), d);
        assert!(fields(&d, None).is_empty(), "{:?}", fields(&d, None));
    }

    #[test]
    fn recreate_gets_no_rolling_update_defaults() {
        let mut d = deployment();
        d["spec"]["strategy"] = json!({"type": "Recreate"});
        let d = defaulted(d);
        assert!(d["spec"]["strategy"].get("rollingUpdate").is_none());
    }

    #[test]
    fn a_template_that_the_selector_does_not_select_is_invalid() {
        let mut d = defaulted(deployment());
        d["spec"]["template"]["metadata"]["labels"] = json!({"app": "other"});
        assert_eq!(
            fields(&d, None),
            ["spec.template.metadata.labels: `selector` does not match template `labels`"]
        );
    }

    #[test]
    fn negative_and_zero_rollout_parameters_are_invalid() {
        let mut d = defaulted(deployment());
        d["spec"]["strategy"]["rollingUpdate"] = json!({"maxUnavailable": -1, "maxSurge": 0});
        let f = fields(&d, None);
        assert!(f.contains(&format!(
            "spec.strategy.rollingUpdate.maxUnavailable: {}",
            workload::NONNEGATIVE
        )));
        d["spec"]["strategy"]["rollingUpdate"] = json!({"maxUnavailable": 0, "maxSurge": "0%"});
        assert_eq!(
            fields(&d, None),
            ["spec.strategy.rollingUpdate.maxUnavailable: may not be 0 when `maxSurge` is 0"]
        );
    }

    #[test]
    fn the_selector_is_immutable_and_restart_policy_must_be_always() {
        let old = defaulted(deployment());
        let mut new = old.clone();
        new["spec"]["selector"]["matchLabels"]["tier"] = json!("x");
        new["spec"]["template"]["metadata"]["labels"]["tier"] = json!("x");
        assert_eq!(
            fields(&new, Some(&old)),
            ["spec.selector: field is immutable"]
        );
        let mut never = old.clone();
        never["spec"]["template"]["spec"]["restartPolicy"] = json!("Never");
        assert!(fields(&never, None)[0].starts_with("spec.template.spec.restartPolicy"));
    }

    #[test]
    fn the_table_row_shows_ready_over_desired() {
        let mut d = defaulted(deployment());
        d["spec"]["replicas"] = json!(3);
        d["status"] = json!({"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2});
        let cells = INFO.strategy.cells(&d, Utc::now());
        assert_eq!(cells[1], "2/3");
        assert_eq!(cells[2], 3);
        assert_eq!(cells[7], "app=web");
        assert_eq!(cells.len(), INFO.strategy.columns().len());
    }
}
