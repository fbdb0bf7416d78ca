//! apps/v1 DaemonSet: defaults as `SetDefaults_DaemonSet` (RollingUpdate with one pod
//! unavailable and no surge, ten revisions kept), validation as `ValidateDaemonSet`, the
//! template generation Kubernetes keeps in the `deprecated.daemonset.template.generation`
//! annotation, and the `status` subresource.

use chrono::{DateTime, Utc};
use k8s_openapi::api::apps::v1 as apps;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::{json, Value};

use super::{deployment, workload};
use crate::api::patch::ListStrategy;
use crate::api::resources::{schema_of, ResourceInfo, Storage};
use crate::api::strategy::{Part, Typed, TypedStrategy};
use crate::api::validation::{FieldError, FieldErrorKind};
use crate::api::{defaults, table};

pub static INFO: ResourceInfo = ResourceInfo {
    group: "apps",
    version: "v1",
    name: "daemonsets",
    singular: "daemonset",
    kind: "DaemonSet",
    namespaced: true,
    short_names: &["ds"],
    subresources: &["status"],
    has_status_subresource: true,
    field_selectors: &[],
    categories: &["all"],
    schema: Some(schema_of::<apps::DaemonSet>),
    strategy: &Typed(DaemonSetStrategy),
    storage: Storage::Stored,
};

/// Where apps/v1 keeps the internal `spec.templateGeneration`.
pub const TEMPLATE_GENERATION: &str = "deprecated.daemonset.template.generation";

const TYPES: &[&str] = &["RollingUpdate", "OnDelete"];

#[derive(Debug)]
pub struct DaemonSetStrategy;

/// The template generation a DaemonSet carries, if any.
pub fn template_generation(ds: &apps::DaemonSet) -> Option<i64> {
    ds.metadata
        .annotations
        .as_ref()?
        .get(TEMPLATE_GENERATION)?
        .parse()
        .ok()
}

fn set_template_generation(ds: &mut apps::DaemonSet, generation: i64) {
    ds.metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert(TEMPLATE_GENERATION.into(), generation.to_string());
}

impl TypedStrategy for DaemonSetStrategy {
    type Object = apps::DaemonSet;
    const KIND: &'static str = "DaemonSet";
    const API_VERSION: &'static str = "apps/v1";

    fn default(&self, ds: &mut apps::DaemonSet) {
        let spec = &mut ds.spec;
        let strategy = spec.update_strategy.get_or_insert_with(Default::default);
        let kind = strategy.type_.get_or_insert_with(|| "RollingUpdate".into());
        if kind == "RollingUpdate" {
            let ru = strategy.rolling_update.get_or_insert_with(Default::default);
            ru.max_unavailable.get_or_insert(IntOrString::Int(1));
            ru.max_surge.get_or_insert(IntOrString::Int(0));
        }
        spec.revision_history_limit.get_or_insert(10);
        if let Some(pod) = spec.template.spec.as_mut() {
            defaults::default_pod_spec_typed(pod);
        }
    }

    fn prepare_for_create(&self, ds: &mut apps::DaemonSet) {
        ds.status = Some(Default::default());
        set_template_generation(ds, 1);
    }

    fn prepare_for_update(&self, old: &apps::DaemonSet, new: &mut apps::DaemonSet, part: Part) {
        if part != Part::Main {
            return;
        }
        // The template generation moves with the template, and only the server moves it.
        let generation = template_generation(old).unwrap_or(1);
        let changed = old.spec.template != new.spec.template;
        set_template_generation(new, if changed { generation + 1 } else { generation });
    }

    fn validate(&self, ds: &apps::DaemonSet, old: Option<&apps::DaemonSet>) -> Vec<FieldError> {
        let mut errs = Vec::new();
        let spec = &ds.spec;
        workload::validate_selector_and_template(
            "DaemonSet",
            Some(&spec.selector),
            &spec.template,
            &mut errs,
        );
        // The shared template rules word this one as a ReplicaSet's; a DaemonSet's differs.
        errs.retain(|e| e.field != "spec.template.spec.activeDeadlineSeconds");
        if let Some(d) = spec
            .template
            .spec
            .as_ref()
            .and_then(|s| s.active_deadline_seconds)
        {
            errs.push(FieldError::invalid(
                "spec.template.spec.activeDeadlineSeconds",
                &json!(d),
                "activeDeadlineSeconds must be nil for daemonsets",
            ));
        }
        workload::non_negative(spec.min_ready_seconds, "spec.minReadySeconds", &mut errs);
        workload::non_negative(
            spec.revision_history_limit,
            "spec.revisionHistoryLimit",
            &mut errs,
        );
        validate_update_strategy(spec.update_strategy.as_ref(), &mut errs);
        if let Some(old) = old.map(|o| &o.spec) {
            workload::selector_unchanged(Some(&spec.selector), Some(&old.selector), &mut errs);
        }
        errs
    }

    fn list_strategy(&self, path: &[&str]) -> ListStrategy {
        workload::list_strategy(path)
    }

    fn columns(&self) -> Vec<Value> {
        vec![
            table::name_column(0),
            table::column("Desired", "integer", 0, "The total number of nodes that should be running the daemon pod (including nodes correctly running the daemon pod). More info: https://kubernetes.io/docs/concepts/workloads/controllers/daemonset/"),
            table::column("Current", "integer", 0, "The number of nodes that are running at least 1 daemon pod and are supposed to run the daemon pod. More info: https://kubernetes.io/docs/concepts/workloads/controllers/daemonset/"),
            table::column("Ready", "integer", 0, "numberReady is the number of nodes that should be running the daemon pod and have one or more of the daemon pod running with a Ready Condition."),
            table::column("Up-to-date", "integer", 0, "The total number of nodes that are running updated daemon pod"),
            table::column("Available", "integer", 0, "The number of nodes that should be running the daemon pod and have one or more of the daemon pod running and available (ready for at least spec.minReadySeconds)"),
            table::column("Node Selector", "string", 0, "NodeSelector is a selector which must be true for the pod to fit on a node. Selector which must match a node's labels for the pod to be scheduled on that node. More info: https://kubernetes.io/docs/concepts/configuration/assign-pod-node/"),
            table::age_column(),
            table::column("Containers", "string", 1, table::CONTAINERS_DESC),
            table::column("Images", "string", 1, table::IMAGES_DESC),
            table::column("Selector", "string", 1, "A label query over pods that are managed by the daemon set. Must match in order to be controlled. It must match the pod template's labels. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/labels/#label-selectors"),
        ]
    }

    fn cells(&self, ds: &apps::DaemonSet, raw: &Value, now: DateTime<Utc>) -> Vec<Value> {
        let status = ds.status.clone().unwrap_or_default();
        let template = Some(&ds.spec.template);
        let (containers, images) = deployment::template_cells(template);
        let node_selector = raw
            .pointer("/spec/template/spec/nodeSelector")
            .cloned()
            .unwrap_or(Value::Null);
        let selector = workload::selector_of(&ds.spec.selector)
            .map(|s| s.to_string())
            .unwrap_or_else(|| "<none>".into());
        vec![
            table::name(raw),
            json!(status.desired_number_scheduled),
            json!(status.current_number_scheduled),
            json!(status.number_ready),
            json!(status.updated_number_scheduled.unwrap_or(0)),
            json!(status.number_available.unwrap_or(0)),
            json!(table::format_labels(&node_selector)),
            table::age(raw, now),
            json!(containers),
            json!(images),
            json!(selector),
        ]
    }
}

/// `ValidateDaemonSetUpdateStrategy` and `ValidateRollingUpdateDaemonSet`: exactly one of
/// maxUnavailable and maxSurge is non-zero.
fn validate_update_strategy(s: Option<&apps::DaemonSetUpdateStrategy>, errs: &mut Vec<FieldError>) {
    let Some(s) = s else { return };
    let kind = s.type_.as_deref().unwrap_or("RollingUpdate");
    match kind {
        "OnDelete" => {}
        "RollingUpdate" => {
            let path = "spec.updateStrategy.rollingUpdate";
            let Some(ru) = &s.rolling_update else {
                errs.push(FieldError::required(path));
                return;
            };
            let zero = IntOrString::Int(0);
            let unavailable = ru.max_unavailable.as_ref().unwrap_or(&zero);
            let surge = ru.max_surge.as_ref().unwrap_or(&zero);
            workload::validate_int_or_percent(unavailable, &format!("{path}.maxUnavailable"), errs);
            workload::validate_int_or_percent(surge, &format!("{path}.maxSurge"), errs);
            let non_zero = |v: &IntOrString| workload::scaled(Some(v), 100, true) != 0;
            match (non_zero(unavailable), non_zero(surge)) {
                (true, true) => errs.push(FieldError::invalid(
                    format!("{path}.maxSurge"),
                    &serde_json::to_value(surge).unwrap_or(Value::Null),
                    "may not be set when maxUnavailable is non-zero",
                )),
                (false, false) => {
                    let mut e = FieldError::required(format!("{path}.maxUnavailable"));
                    e.kind = FieldErrorKind::Required;
                    e.detail = "cannot be 0 when maxSurge is 0".into();
                    errs.push(e);
                }
                _ => {}
            }
        }
        other => errs.push(FieldError::not_supported(
            "spec.updateStrategy.type",
            &json!(other),
            TYPES,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::validation::validate_object;

    fn daemon_set() -> Value {
        json!({"apiVersion": "apps/v1", "kind": "DaemonSet",
            "metadata": {"name": "agent", "namespace": "default"},
            "spec": {"selector": {"matchLabels": {"app": "agent"}},
                "template": {"metadata": {"labels": {"app": "agent"}},
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
    fn defaults_are_one_unavailable_no_surge_and_ten_revisions() {
        let d = defaulted(daemon_set());
        let ru = &d["spec"]["updateStrategy"]["rollingUpdate"];
        assert_eq!(d["spec"]["updateStrategy"]["type"], "RollingUpdate");
        assert_eq!(ru["maxUnavailable"], 1);
        assert_eq!(ru["maxSurge"], 0);
        assert_eq!(d["spec"]["revisionHistoryLimit"], 10);
        assert_eq!(defaulted(d.clone()), d);
        assert!(fields(&d, None).is_empty(), "{:?}", fields(&d, None));
        let mut on_delete = daemon_set();
        on_delete["spec"]["updateStrategy"] = json!({"type": "OnDelete"});
        assert!(defaulted(on_delete)["spec"]["updateStrategy"]
            .get("rollingUpdate")
            .is_none());
    }

    #[test]
    fn rollout_parameters_follow_kubernetes_rules_and_paths() {
        let mut d = defaulted(daemon_set());
        let path = "spec.updateStrategy.rollingUpdate";
        d["spec"]["updateStrategy"]["rollingUpdate"] = json!({"maxUnavailable": -1, "maxSurge": 0});
        assert_eq!(
            fields(&d, None),
            [format!("{path}.maxUnavailable: {}", workload::NONNEGATIVE)]
        );
        d["spec"]["updateStrategy"]["rollingUpdate"] =
            json!({"maxUnavailable": 1, "maxSurge": "10%"});
        assert_eq!(
            fields(&d, None),
            [format!(
                "{path}.maxSurge: may not be set when maxUnavailable is non-zero"
            )]
        );
        d["spec"]["updateStrategy"]["rollingUpdate"] =
            json!({"maxUnavailable": "0%", "maxSurge": 0});
        assert_eq!(
            fields(&d, None),
            [format!(
                "{path}.maxUnavailable: cannot be 0 when maxSurge is 0"
            )]
        );
        d["spec"]["updateStrategy"]["rollingUpdate"] =
            json!({"maxUnavailable": 0, "maxSurge": "20%"});
        assert!(fields(&d, None).is_empty());
        d["spec"]["updateStrategy"] = json!({"type": "Sometimes"});
        assert!(fields(&d, None)[0].starts_with("spec.updateStrategy.type: "));
    }

    #[test]
    fn the_selector_must_select_the_template_and_may_not_change() {
        let old = defaulted(daemon_set());
        let mut bad = old.clone();
        bad["spec"]["template"]["metadata"]["labels"] = json!({"app": "other"});
        assert_eq!(
            fields(&bad, None),
            ["spec.template.metadata.labels: `selector` does not match template `labels`"]
        );
        let mut moved = old.clone();
        moved["spec"]["selector"]["matchLabels"]["tier"] = json!("x");
        moved["spec"]["template"]["metadata"]["labels"]["tier"] = json!("x");
        assert_eq!(
            fields(&moved, Some(&old)),
            ["spec.selector: field is immutable"]
        );
    }

    #[test]
    fn the_template_generation_moves_only_with_the_template() {
        let mut created = defaulted(daemon_set());
        INFO.strategy.prepare_for_create(&mut created);
        assert_eq!(created["metadata"]["annotations"][TEMPLATE_GENERATION], "1");
        let mut relabelled = created.clone();
        relabelled["metadata"]["labels"] = json!({"x": "y"});
        INFO.strategy
            .prepare_for_update(&created, &mut relabelled, Part::Main);
        assert_eq!(
            relabelled["metadata"]["annotations"][TEMPLATE_GENERATION],
            "1"
        );
        let mut changed = created.clone();
        changed["spec"]["template"]["spec"]["containers"][0]["image"] = json!("busybox:2");
        INFO.strategy
            .prepare_for_update(&created, &mut changed, Part::Main);
        assert_eq!(changed["metadata"]["annotations"][TEMPLATE_GENERATION], "2");
    }

    #[test]
    fn the_table_row_has_kubernetes_columns() {
        let mut d = defaulted(daemon_set());
        d["spec"]["template"]["spec"]["nodeSelector"] = json!({"disk": "ssd"});
        d["status"] = json!({"desiredNumberScheduled": 3, "currentNumberScheduled": 3,
            "numberReady": 2, "updatedNumberScheduled": 3, "numberAvailable": 2,
            "numberMisscheduled": 0});
        let cells = INFO.strategy.cells(&d, Utc::now());
        assert_eq!(cells.len(), INFO.strategy.columns().len());
        assert_eq!(
            cells[1..6],
            [json!(3), json!(3), json!(2), json!(3), json!(2)]
        );
        assert_eq!(cells[6], "disk=ssd");
        assert_eq!(cells[10], "app=agent");
    }
}
