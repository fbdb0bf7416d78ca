//! The `pods/eviction` subresource (what `kubectl drain` posts), as kube-apiserver's
//! `EvictionREST`: a pod that is terminal, pending or already terminating is simply
//! deleted; otherwise the one PodDisruptionBudget that covers it must allow a disruption,
//! which the eviction takes by decrementing `status.disruptionsAllowed` and recording the
//! pod in `status.disruptedPods` (a compare-and-swap on the budget), and only then is the
//! pod deleted. A budget that allows none answers 429, which kubectl retries.

use std::sync::Arc;

use k8s_openapi::api::policy::v1 as policy;
use serde_json::{json, Value};

use super::objects::{DeleteOptions, ListOptions, Objects, WriteOptions};
use super::routing::Target;
use crate::api::kinds::pod_disruption_budget::{self as pdb_kind, ALWAYS_ALLOW};
use crate::api::selector::object_labels;
use crate::api::{meta, ApiError};
use crate::controllers::disruption;

/// Conflicts on the pod or the budget retried before giving up (Kubernetes'
/// `EvictionsRetry` steps); each retry reads the object again, none sleeps.
const RETRIES: usize = 20;

/// Evictions the budget's controller has not confirmed yet beyond which no more are
/// allowed (`MaxDisruptedPodSize`).
const MAX_DISRUPTED_PODS: usize = 2000;

const MULTIPLE_BUDGETS: &str =
    "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.";

/// Evict the pod `target` names with the Eviction's delete options.
pub async fn evict(
    objects: &Objects,
    target: &Target,
    opts: DeleteOptions,
) -> Result<Value, ApiError> {
    let pod_target = Target {
        subresource: None,
        ..target.clone()
    };
    let caller_pinned = opts.precondition_rv.is_some();
    let mut attempt = 0;
    let pod = loop {
        attempt += 1;
        let pod = objects.get(&pod_target)?;
        if !can_ignore_budget(&pod) {
            break pod;
        }
        let mut delete = opts.clone();
        if pins_version(&pod) && !caller_pinned {
            // A pending pod could become ready, and count for a budget, meanwhile.
            delete.precondition_rv = meta::resource_version(&pod).and_then(|r| r.parse().ok());
        }
        match objects.delete(&pod_target, &delete).await {
            Err(ApiError::Conflict { .. }) if !caller_pinned && attempt < RETRIES => continue,
            Err(e) => return Err(e),
            Ok(_) => return Ok(success()),
        }
    };

    let ns = pod_target.namespace.clone().unwrap_or_default();
    let mut budgets = covering_budgets(objects, &ns, &pod)?;
    if budgets.len() > 1 {
        return Err(ApiError::Remote {
            code: 500,
            reason: String::new(),
            message: MULTIPLE_BUDGETS.into(),
        });
    }
    let Some(budget) = budgets.pop() else {
        objects.delete(&pod_target, &opts).await?;
        return Ok(success());
    };
    let pod_name = pod_target.name.clone().unwrap_or_default();
    let ready = is_ready(&pod);
    let status = budget.status.clone().unwrap_or_default();
    let spec = budget.spec.clone().unwrap_or_default();
    let budget_name = budget.metadata.name.clone().unwrap_or_default();
    // An unready pod is not part of what the budget protects when the budget says so, or
    // when the healthy pods already satisfy it: it goes without taking a disruption, but
    // only if it is still unready when deleted (the pinned resourceVersion).
    let unready_exempt = !ready
        && (spec.unhealthy_pod_eviction_policy.as_deref() == Some(ALWAYS_ALLOW)
            || (status.current_healthy.unwrap_or(0) >= status.desired_healthy.unwrap_or(0)
                && status.desired_healthy.unwrap_or(0) > 0));
    if unready_exempt {
        let mut delete = opts.clone();
        if !caller_pinned {
            delete.precondition_rv = meta::resource_version(&pod).and_then(|r| r.parse().ok());
        }
        return match objects.delete(&pod_target, &delete).await {
            Err(ApiError::Conflict { .. }) if !caller_pinned => Err(still_processing(&budget_name)),
            Err(e) => Err(e),
            Ok(_) => Ok(success()),
        };
    }

    take_disruption(objects, &ns, &budget_name, budget, &pod_name, opts.dry_run).await?;
    objects.delete(&pod_target, &opts).await?;
    Ok(success())
}

/// Decrement the budget's allowed disruptions for `pod`, re-reading the budget on a
/// conflict; 429 when it allows none.
async fn take_disruption(
    objects: &Objects,
    ns: &str,
    name: &str,
    mut budget: policy::PodDisruptionBudget,
    pod: &str,
    dry_run: bool,
) -> Result<(), ApiError> {
    let target = Target {
        resource: &pdb_kind::INFO,
        namespace: Some(ns.to_string()),
        name: Some(name.to_string()),
        subresource: Some("status".into()),
        legacy_watch: false,
    };
    for _ in 0..RETRIES {
        let updated = decremented(budget, pod, chrono::Utc::now())?;
        if dry_run {
            return Ok(());
        }
        let mut body = serde_json::to_value(&updated)
            .map_err(|e| ApiError::Internal(format!("encoding PodDisruptionBudget: {e}")))?;
        body["apiVersion"] = json!("policy/v1");
        body["kind"] = json!("PodDisruptionBudget");
        let opts = WriteOptions {
            manager: "kube-apiserver".into(),
            ..WriteOptions::default()
        };
        match objects.update(&target, body, &opts).await {
            Ok(_) => return Ok(()),
            Err(ApiError::Conflict { .. }) => {
                let fresh = objects.get(&Target {
                    subresource: None,
                    ..target.clone()
                })?;
                budget = decode(&fresh)?;
            }
            Err(e) => return Err(e),
        }
    }
    Err(ApiError::Timeout(format!(
        "couldn't update PodDisruptionBudget \"{name}\" due to conflicts"
    )))
}

/// The budget after one more disruption for `pod` at `now`, or why it allows none
/// (`checkAndDecrement`).
fn decremented(
    mut budget: policy::PodDisruptionBudget,
    pod: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<policy::PodDisruptionBudget, ApiError> {
    let name = budget.metadata.name.clone().unwrap_or_default();
    let generation = budget.metadata.generation.unwrap_or(0);
    let mut status = budget.status.take().unwrap_or_default();
    if status.observed_generation.unwrap_or(0) < generation {
        return Err(still_processing(&name));
    }
    let allowed = status.disruptions_allowed.unwrap_or(0);
    if allowed < 0 {
        return Err(forbidden(&name, "pdb disruptions allowed is negative"));
    }
    let disrupted = status.disrupted_pods.get_or_insert_with(Default::default);
    if disrupted.len() > MAX_DISRUPTED_PODS {
        return Err(forbidden(
            &name,
            "DisruptedPods map too big - too many evictions not confirmed by PDB controller",
        ));
    }
    if allowed == 0 {
        return Err(ApiError::DisruptionBudget {
            cause: format!(
                "The disruption budget {name} needs {} healthy pods and has {} currently",
                status.desired_healthy.unwrap_or(0),
                status.current_healthy.unwrap_or(0)
            ),
            retry_after: 0,
        });
    }
    disrupted.insert(pod.to_string(), disruption::time_of(now));
    status.disruptions_allowed = Some(allowed - 1);
    if allowed == 1 {
        disruption::set_allowed_condition(&mut status, generation, now);
    }
    budget.status = Some(status);
    Ok(budget)
}

fn still_processing(name: &str) -> ApiError {
    ApiError::DisruptionBudget {
        cause: format!("The disruption budget {name} is still being processed by the server."),
        retry_after: 10,
    }
}

fn forbidden(name: &str, why: &str) -> ApiError {
    ApiError::Forbidden(format!(
        "poddisruptionbudget.policy \"{name}\" is forbidden: {why}"
    ))
}

fn success() -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"})
}

fn decode(obj: &Arc<Value>) -> Result<policy::PodDisruptionBudget, ApiError> {
    serde_json::from_value((**obj).clone())
        .map_err(|e| ApiError::Internal(format!("decoding PodDisruptionBudget: {e}")))
}

/// The budgets of the pod's namespace whose selector picks the pod.
fn covering_budgets(
    objects: &Objects,
    ns: &str,
    pod: &Value,
) -> Result<Vec<policy::PodDisruptionBudget>, ApiError> {
    let list = objects.list(
        &Target {
            resource: &pdb_kind::INFO,
            namespace: Some(ns.to_string()),
            name: None,
            subresource: None,
            legacy_watch: false,
        },
        &ListOptions::default(),
    )?;
    let labels = object_labels(pod);
    let mut out = Vec::new();
    for item in &list.items {
        let budget = decode(item)?;
        if pdb_kind::selector_of(&budget).is_some_and(|s| s.matches(&labels)) {
            out.push(budget);
        }
    }
    Ok(out)
}

/// A pod that has already stopped, never started, or is going away is deleted without
/// asking a budget (`canIgnorePDB`).
fn can_ignore_budget(pod: &Value) -> bool {
    matches!(phase(pod), "Succeeded" | "Failed" | "Pending")
        || pod.pointer("/metadata/deletionTimestamp").is_some()
}

/// Whether deleting the pod should be pinned to the version read (`shouldEnforceResourceVersion`).
fn pins_version(pod: &Value) -> bool {
    !matches!(phase(pod), "Succeeded" | "Failed")
        && pod.pointer("/metadata/deletionTimestamp").is_none()
}

fn phase(pod: &Value) -> &str {
    pod.pointer("/status/phase")
        .and_then(Value::as_str)
        .unwrap_or("")
}

fn is_ready(pod: &Value) -> bool {
    crate::controllers::pods::is_ready(pod)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};

    fn budget(status: Value) -> policy::PodDisruptionBudget {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "default", "generation": 1},
            "spec": {"minAvailable": 2, "selector": {"matchLabels": {"app": "web"}}},
            "status": status,
        }))
        .unwrap()
    }

    fn now() -> chrono::DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 2, 6, 0, 0).unwrap()
    }

    #[test]
    fn an_allowed_disruption_is_taken_and_the_pod_recorded() {
        let b = budget(json!({"observedGeneration": 1, "disruptionsAllowed": 1,
            "currentHealthy": 3, "desiredHealthy": 2, "expectedPods": 3}));
        let after = decremented(b, "web-1", now()).expect("allowed");
        let status = after.status.unwrap();
        assert_eq!(status.disruptions_allowed, Some(0));
        assert!(status.disrupted_pods.unwrap().contains_key("web-1"));
        let cond = &status.conditions.unwrap()[0];
        assert_eq!(
            (cond.status.as_str(), cond.reason.as_str()),
            ("False", "InsufficientPods")
        );
    }

    #[test]
    fn a_budget_with_no_disruptions_left_answers_429_with_its_numbers() {
        let b = budget(json!({"observedGeneration": 1, "disruptionsAllowed": 0,
            "currentHealthy": 2, "desiredHealthy": 2, "expectedPods": 2}));
        let err = decremented(b, "web-1", now()).unwrap_err();
        assert_eq!(err.code(), 429);
        assert_eq!(
            err.to_string(),
            "Cannot evict pod as it would violate the pod's disruption budget."
        );
        let status = err.to_status();
        assert_eq!(
            status.pointer("/details/causes/0").unwrap(),
            &json!({"reason": "DisruptionBudget",
                    "message": "The disruption budget web needs 2 healthy pods and has 2 currently"})
        );
    }

    #[test]
    fn a_budget_its_controller_has_not_seen_yet_refuses_for_now() {
        let b = budget(json!({"observedGeneration": 0, "disruptionsAllowed": 5}));
        let err = decremented(b, "web-1", now()).unwrap_err();
        assert_eq!(err.code(), 429);
        assert_eq!(
            err.to_status()
                .pointer("/details/causes/0/message")
                .unwrap(),
            "The disruption budget web is still being processed by the server."
        );
    }

    #[test]
    fn pods_that_cannot_be_disrupted_further_skip_the_budget() {
        for phase in ["Succeeded", "Failed", "Pending"] {
            assert!(can_ignore_budget(&json!({"status": {"phase": phase}})));
        }
        assert!(can_ignore_budget(
            &json!({"metadata": {"deletionTimestamp": "2026-12-02T06:00:00Z"},
            "status": {"phase": "Running"}})
        ));
        assert!(!can_ignore_budget(&json!({"status": {"phase": "Running"}})));
        assert!(pins_version(&json!({"status": {"phase": "Pending"}})));
        assert!(!pins_version(&json!({"status": {"phase": "Failed"}})));
    }
}
