//! policy/v1 PodDisruptionBudget: how many of the pods a selector picks may be down at
//! once through voluntary disruptions (evictions). The disruption controller keeps its
//! status; the `pods/eviction` subresource reads and decrements it.

use chrono::{DateTime, Utc};
use k8s_openapi::api::policy::v1 as policy;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::{json, Value};

use super::workload;
use crate::api::patch::ListStrategy;
use crate::api::resources::{schema_of, ResourceInfo, Storage};
use crate::api::selector::LabelSelector;
use crate::api::strategy::{Typed, TypedStrategy};
use crate::api::table;
use crate::api::validation::FieldError;

pub const RESOURCE: &str = "poddisruptionbudgets";
pub const IF_HEALTHY_BUDGET: &str = "IfHealthyBudget";
pub const ALWAYS_ALLOW: &str = "AlwaysAllow";

pub static INFO: ResourceInfo = ResourceInfo {
    group: "policy",
    version: "v1",
    name: RESOURCE,
    singular: "poddisruptionbudget",
    kind: "PodDisruptionBudget",
    namespaced: true,
    short_names: &["pdb"],
    subresources: &["status"],
    has_status_subresource: true,
    field_selectors: &[],
    categories: &[],
    schema: Some(schema_of::<policy::PodDisruptionBudget>),
    strategy: &Typed(PdbStrategy),
    storage: Storage::Stored,
};

#[derive(Debug)]
pub struct PdbStrategy;

impl TypedStrategy for PdbStrategy {
    type Object = policy::PodDisruptionBudget;
    const KIND: &'static str = "PodDisruptionBudget";
    const API_VERSION: &'static str = "policy/v1";

    fn prepare_for_create(&self, pdb: &mut policy::PodDisruptionBudget) {
        pdb.status = Some(policy::PodDisruptionBudgetStatus::default());
    }

    fn validate(
        &self,
        pdb: &policy::PodDisruptionBudget,
        _old: Option<&policy::PodDisruptionBudget>,
    ) -> Vec<FieldError> {
        let mut errs = Vec::new();
        let spec = pdb.spec.clone().unwrap_or_default();
        if spec.min_available.is_some() && spec.max_unavailable.is_some() {
            errs.push(FieldError::invalid(
                "spec",
                &serde_json::to_value(&spec).unwrap_or(Value::Null),
                "minAvailable and maxUnavailable cannot be both set",
            ));
        }
        if let Some(v) = &spec.min_available {
            workload::validate_int_or_percent(v, "spec.minAvailable", &mut errs);
        }
        if let Some(v) = &spec.max_unavailable {
            workload::validate_int_or_percent(v, "spec.maxUnavailable", &mut errs);
        }
        if let Some(sel) = &spec.selector {
            let raw = serde_json::to_value(sel).unwrap_or(Value::Null);
            if let Err(e) = LabelSelector::from_label_selector_value(&raw) {
                errs.push(FieldError::invalid("spec.selector", &raw, e.to_string()));
            }
        }
        if let Some(p) = &spec.unhealthy_pod_eviction_policy {
            if p != IF_HEALTHY_BUDGET && p != ALWAYS_ALLOW {
                errs.push(FieldError::not_supported(
                    "spec.unhealthyPodEvictionPolicy",
                    &json!(p),
                    &[ALWAYS_ALLOW, IF_HEALTHY_BUDGET],
                ));
            }
        }
        if let Some(status) = &pdb.status {
            let counts = [
                (status.disruptions_allowed, "status.disruptionsAllowed"),
                (status.current_healthy, "status.currentHealthy"),
                (status.desired_healthy, "status.desiredHealthy"),
                (status.expected_pods, "status.expectedPods"),
            ];
            for (v, field) in counts {
                workload::non_negative(v, field, &mut errs);
            }
        }
        errs
    }

    fn list_strategy(&self, path: &[&str]) -> ListStrategy {
        match path {
            ["status", "conditions"] => ListStrategy::MergeByKey("type"),
            _ => ListStrategy::Replace,
        }
    }

    fn columns(&self) -> Vec<Value> {
        vec![
            table::name_column(0),
            table::column("Min Available", "string", 0, "The minimum number of pods that must be available simultaneously.  This can be either an integer or a string specifying a percentage, e.g. \"28%\"."),
            table::column("Max Unavailable", "string", 0, "The maximum number of pods that may be unavailable simultaneously.  This can be either an integer or a string specifying a percentage, e.g. \"28%\"."),
            table::column("Allowed Disruptions", "integer", 0, "Calculated number of pods that may be disrupted at this time."),
            table::age_column(),
        ]
    }

    fn cells(
        &self,
        pdb: &policy::PodDisruptionBudget,
        raw: &Value,
        now: DateTime<Utc>,
    ) -> Vec<Value> {
        fn shown(v: Option<&IntOrString>) -> String {
            match v {
                Some(IntOrString::Int(i)) => i.to_string(),
                Some(IntOrString::String(s)) => s.clone(),
                None => "N/A".into(),
            }
        }
        let spec = pdb.spec.clone().unwrap_or_default();
        let allowed = pdb
            .status
            .as_ref()
            .and_then(|s| s.disruptions_allowed)
            .unwrap_or(0);
        vec![
            table::name(raw),
            json!(shown(spec.min_available.as_ref())),
            json!(shown(spec.max_unavailable.as_ref())),
            json!(allowed),
            table::age(raw, now),
        ]
    }
}

/// The pods a budget covers, as policy/v1 reads its selector: an empty selector selects
/// every pod of the namespace, a missing one selects none.
pub fn selector_of(pdb: &policy::PodDisruptionBudget) -> Option<LabelSelector> {
    let sel = pdb.spec.as_ref()?.selector.as_ref()?;
    let raw = serde_json::to_value(sel).ok()?;
    LabelSelector::from_label_selector_value(&raw).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::validation::validate_object;

    fn errors(obj: Value) -> Vec<String> {
        validate_object(&INFO, &obj, None)
            .iter()
            .map(|e| format!("{}: {}", e.field, e.detail))
            .collect()
    }

    fn pdb(spec: Value) -> Value {
        json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
               "metadata": {"name": "b", "namespace": "default"}, "spec": spec})
    }

    #[test]
    fn a_budget_sets_one_of_min_available_and_max_unavailable() {
        let errs = errors(pdb(json!({"minAvailable": 1, "maxUnavailable": 1,
            "selector": {"matchLabels": {"app": "a"}}})));
        assert_eq!(
            errs,
            ["spec: minAvailable and maxUnavailable cannot be both set"]
        );
        assert!(errors(pdb(json!({"minAvailable": "50%",
            "selector": {"matchLabels": {"app": "a"}}})))
        .is_empty());
    }

    #[test]
    fn negative_or_oversized_budgets_are_refused_with_their_paths() {
        let errs = errors(pdb(json!({"maxUnavailable": -1})));
        assert_eq!(
            errs,
            ["spec.maxUnavailable: must be greater than or equal to 0"]
        );
        let errs = errors(pdb(json!({"minAvailable": "120%"})));
        assert_eq!(errs, ["spec.minAvailable: must not be greater than 100%"]);
    }

    #[test]
    fn an_unknown_unhealthy_pod_eviction_policy_is_not_supported() {
        let errs = errors(pdb(
            json!({"minAvailable": 1, "unhealthyPodEvictionPolicy": "Never"}),
        ));
        assert_eq!(errs.len(), 1);
        assert!(
            errs[0].starts_with("spec.unhealthyPodEvictionPolicy"),
            "{errs:?}"
        );
    }

    #[test]
    fn an_empty_selector_selects_the_namespace_and_a_missing_one_nothing() {
        let typed =
            |v: Value| -> policy::PodDisruptionBudget { serde_json::from_value(v).unwrap() };
        let all = selector_of(&typed(pdb(json!({"selector": {}})))).expect("selector");
        assert!(all.matches(&Default::default()));
        assert!(selector_of(&typed(pdb(json!({})))).is_none());
    }
}
