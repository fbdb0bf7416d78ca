//! The disruption controller, as `pkg/controller/disruption`: for each
//! PodDisruptionBudget it counts the pods its selector picks, how many should exist (the
//! scale of their controllers, when the budget is a percentage or a maxUnavailable) and
//! how many are healthy (Ready, not terminating, not just evicted), and writes how many
//! more may be disrupted now. The eviction subresource spends that allowance and records
//! the pods it evicted in `disruptedPods`; they stop counting as healthy until they are
//! gone, or until two minutes pass without their deletion.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use k8s_openapi::api::policy::v1 as policy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::{json, Value};

use super::pods::{controller_ref, is_ready};
use crate::api::kinds::{pod_disruption_budget as pdb_kind, workload};
use crate::api::selector::LabelSelector;
use crate::api::{meta, resources, ApiError};
use crate::runtime::{
    key_of, split_key, Action, Change, Context, InformerSpec, ReconcileError, Reconciler,
};

/// How long an evicted pod may take to get its deletionTimestamp before the budget counts
/// it again (`DeletionTimeout`).
pub const DELETION_TIMEOUT: Duration = Duration::from_secs(120);

pub const CONDITION: &str = "DisruptionAllowed";

/// A `metav1.Time` of a chrono time, to the second as Kubernetes writes times.
pub fn time_of(t: DateTime<Utc>) -> Time {
    Time(
        k8s_openapi::jiff::Timestamp::from_second(t.timestamp())
            .unwrap_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
    )
}

fn chrono_of(t: &Time) -> DateTime<Utc> {
    DateTime::from_timestamp(t.0.as_second(), 0).unwrap_or_default()
}

#[derive(Default)]
pub struct DisruptionController;

/// What the budget works out to: pods expected, healthy ones wanted, healthy ones seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub expected: i32,
    pub desired_healthy: i32,
    pub current_healthy: i32,
}

impl Counts {
    /// `disruptionsAllowed`: never negative, and none while no pods are expected.
    pub fn allowed(&self) -> i32 {
        if self.expected <= 0 {
            return 0;
        }
        (self.current_healthy - self.desired_healthy).max(0)
    }
}

/// Whether the budget needs its pods' controllers' scale (`maxUnavailable`, or a
/// percentage `minAvailable`), rather than the pods it sees.
pub fn needs_scale(spec: &policy::PodDisruptionBudgetSpec) -> bool {
    spec.max_unavailable.is_some() || matches!(spec.min_available, Some(IntOrString::String(_)))
}

/// Expected pods and wanted healthy pods (`getExpectedPodCount`); `scale` is the sum of
/// the controllers' replicas when [`needs_scale`].
pub fn expected_and_desired(
    spec: &policy::PodDisruptionBudgetSpec,
    pods: i32,
    scale: i32,
) -> (i32, i32) {
    if let Some(max) = &spec.max_unavailable {
        let unavailable = workload::scaled(Some(max), scale, true);
        return (scale, (scale - unavailable).max(0));
    }
    match &spec.min_available {
        Some(IntOrString::Int(n)) => (pods, *n),
        Some(min @ IntOrString::String(_)) => (scale, workload::scaled(Some(min), scale, true)),
        None => (pods, 0),
    }
}

/// The evictions still in flight (`buildDisruptedPodMap`): a recorded pod that is gone or
/// terminating is done; one recorded more than [`DELETION_TIMEOUT`] ago was never
/// deleted and counts again. Also the earliest time an entry expires.
pub fn in_flight(
    recorded: &BTreeMap<String, Time>,
    pods: &[Arc<Value>],
    now: DateTime<Utc>,
) -> (BTreeMap<String, Time>, Vec<String>, Option<DateTime<Utc>>) {
    let timeout = chrono::Duration::from_std(DELETION_TIMEOUT).unwrap_or_default();
    let mut kept = BTreeMap::new();
    let mut overdue = Vec::new();
    let mut recheck: Option<DateTime<Utc>> = None;
    for pod in pods {
        if pod.pointer("/metadata/deletionTimestamp").is_some() {
            continue;
        }
        let name = meta::name(pod).unwrap_or_default();
        let Some(at) = recorded.get(name) else {
            continue;
        };
        let expires = chrono_of(at) + timeout;
        if expires < now {
            overdue.push(name.to_string());
            continue;
        }
        kept.insert(name.to_string(), at.clone());
        recheck = Some(recheck.map_or(expires, |r| r.min(expires)));
    }
    (kept, overdue, recheck)
}

/// Ready pods that are neither terminating nor being evicted (`countHealthyPods`).
pub fn healthy(pods: &[Arc<Value>], disrupted: &BTreeMap<String, Time>) -> i32 {
    pods.iter()
        .filter(|p| p.pointer("/metadata/deletionTimestamp").is_none())
        .filter(|p| !disrupted.contains_key(meta::name(p).unwrap_or_default()))
        .filter(|p| is_ready(p))
        .count() as i32
}

/// The `DisruptionAllowed` condition for the status' allowance, keeping its transition
/// time while its status stays (`UpdateDisruptionAllowedCondition`).
pub fn set_allowed_condition(
    status: &mut policy::PodDisruptionBudgetStatus,
    generation: i64,
    now: DateTime<Utc>,
) {
    let (state, reason) = if status.disruptions_allowed.unwrap_or(0) > 0 {
        ("True", "SufficientPods")
    } else {
        ("False", "InsufficientPods")
    };
    set_condition(status, state, reason, "", generation, now);
}

fn set_condition(
    status: &mut policy::PodDisruptionBudgetStatus,
    state: &str,
    reason: &str,
    message: &str,
    generation: i64,
    now: DateTime<Utc>,
) {
    let conditions = status.conditions.get_or_insert_with(Vec::new);
    let since = conditions
        .iter()
        .find(|c| c.type_ == CONDITION && c.status == state)
        .map(|c| c.last_transition_time.clone());
    conditions.retain(|c| c.type_ != CONDITION);
    conditions.push(Condition {
        type_: CONDITION.into(),
        status: state.into(),
        reason: reason.into(),
        message: message.into(),
        observed_generation: Some(generation),
        last_transition_time: since.unwrap_or_else(|| time_of(now)),
    });
}

/// Two statuses that say the same thing (a new transition time alone is no change).
fn same(a: &policy::PodDisruptionBudgetStatus, b: &policy::PodDisruptionBudgetStatus) -> bool {
    let strip = |s: &policy::PodDisruptionBudgetStatus| {
        let mut s = s.clone();
        if s.disrupted_pods.as_ref().is_some_and(BTreeMap::is_empty) {
            s.disrupted_pods = None;
        }
        for c in s.conditions.iter_mut().flatten() {
            c.last_transition_time = Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
        }
        s
    };
    strip(a) == strip(b)
}

impl DisruptionController {
    /// The pods of the namespace the budget's selector picks.
    fn pods_of(ctx: &Context, ns: &str, selector: Option<&LabelSelector>) -> Vec<Arc<Value>> {
        let Some(sel) = selector else {
            return Vec::new();
        };
        ctx.cache("pods")
            .list_namespace(ns)
            .into_iter()
            .filter(|p| sel.matches_object(p))
            .collect()
    }

    /// The sum of the replicas of the pods' controllers, each counted once, and the pods
    /// that have none (`getExpectedScale`).
    async fn expected_scale(
        ctx: &Context,
        ns: &str,
        pods: &[Arc<Value>],
    ) -> Result<(i32, Vec<String>), String> {
        let mut scales: HashMap<String, i32> = HashMap::new();
        let mut unmanaged = Vec::new();
        for pod in pods {
            let pod_name = meta::name(pod).unwrap_or_default();
            let Some(owner) = controller_ref(pod) else {
                unmanaged.push(pod_name.to_string());
                continue;
            };
            let uid = owner.get("uid").and_then(Value::as_str).unwrap_or_default();
            if scales.contains_key(uid) {
                continue;
            }
            match Self::scale_of_owner(ctx, ns, owner).await {
                Ok(Some((top_uid, replicas))) => {
                    scales.insert(uid.to_string(), 0);
                    scales.insert(top_uid, replicas);
                }
                Ok(None) => return Err(format!("found no controllers for pod {pod_name:?}")),
                Err(e) => return Err(e.to_string()),
            }
        }
        Ok((scales.values().sum(), unmanaged))
    }

    /// The replicas of the controller `owner` names, as `(uid, replicas)` of the object
    /// whose scale counts: a ReplicaSet of a Deployment counts as its Deployment, anything
    /// else with a `scale` subresource as itself.
    async fn scale_of_owner(
        ctx: &Context,
        ns: &str,
        owner: &Value,
    ) -> Result<Option<(String, i32)>, ApiError> {
        let s = |k: &str| owner.get(k).and_then(Value::as_str).unwrap_or_default();
        let (api_version, kind, name, uid) = (s("apiVersion"), s("kind"), s("name"), s("uid"));
        let Some(info) = resources::by_api_version_kind(api_version, kind) else {
            return Ok(None);
        };
        if !info.subresources.contains(&"scale") {
            return Ok(None);
        }
        if info.name == "replicasets" {
            let rs = match ctx.client.get("replicasets", Some(ns), name).await {
                Ok(rs) => rs,
                Err(ApiError::NotFound { .. }) => return Ok(None),
                Err(e) => return Err(e),
            };
            if meta::uid(&rs) != Some(uid) {
                return Ok(None);
            }
            if let Some(d) = controller_ref(&rs).filter(|o| o["kind"] == "Deployment") {
                let d_name = d.get("name").and_then(Value::as_str).unwrap_or_default();
                let d_uid = d.get("uid").and_then(Value::as_str).unwrap_or_default();
                return match Self::replicas(ctx, "deployments", ns, d_name, d_uid).await? {
                    Some(n) => Ok(Some((d_uid.to_string(), n))),
                    None => Ok(None),
                };
            }
        }
        Ok(Self::replicas(ctx, info.name, ns, name, uid)
            .await?
            .map(|n| (uid.to_string(), n)))
    }

    /// `spec.replicas` of the scale subresource of one object, if it is the one `uid` names.
    async fn replicas(
        ctx: &Context,
        resource: &str,
        ns: &str,
        name: &str,
        uid: &str,
    ) -> Result<Option<i32>, ApiError> {
        let scale = match ctx
            .client
            .get_subresource(resource, Some(ns), name, "scale")
            .await
        {
            Ok(s) => s,
            Err(ApiError::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        if meta::uid(&scale).is_some_and(|u| u != uid) {
            return Ok(None);
        }
        Ok(Some(
            scale
                .pointer("/spec/replicas")
                .and_then(Value::as_i64)
                .unwrap_or(0) as i32,
        ))
    }

    async fn write_status(
        ctx: &Context,
        raw: &Value,
        pdb: &policy::PodDisruptionBudget,
        status: policy::PodDisruptionBudgetStatus,
    ) -> Result<(), ReconcileError> {
        if pdb.status.as_ref().is_some_and(|old| same(old, &status)) {
            return Ok(());
        }
        let mut obj = raw.clone();
        obj["status"] = serde_json::to_value(&status)
            .map_err(|e| ReconcileError::Invalid(format!("encoding status: {e}")))?;
        let ns = meta::namespace(raw).unwrap_or_default();
        let name = meta::name(raw).unwrap_or_default();
        match ctx
            .client
            .update(pdb_kind::RESOURCE, Some(ns), name, Some("status"), obj)
            .await
        {
            Ok(_) | Err(ApiError::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

#[async_trait::async_trait]
impl Reconciler for DisruptionController {
    fn name(&self) -> &'static str {
        "disruption-controller"
    }

    fn informers(&self) -> Vec<InformerSpec> {
        vec![
            InformerSpec::all(pdb_kind::RESOURCE),
            InformerSpec::all("pods"),
        ]
    }

    fn keys_for(&self, resource: &str, change: &Change, ctx: &Context) -> Vec<String> {
        if resource == pdb_kind::RESOURCE {
            return vec![key_of(&change.object)];
        }
        // A pod matters to every budget that picks it before or after the change.
        let ns = meta::namespace(&change.object).unwrap_or_default();
        ctx.cache(pdb_kind::RESOURCE)
            .list_namespace(ns)
            .into_iter()
            .filter(|b| {
                let Ok(typed) =
                    serde_json::from_value::<policy::PodDisruptionBudget>((**b).clone())
                else {
                    return false;
                };
                let Some(sel) = pdb_kind::selector_of(&typed) else {
                    return false;
                };
                sel.matches_object(&change.object)
                    || change.old.as_ref().is_some_and(|o| sel.matches_object(o))
            })
            .map(|b| key_of(&b))
            .collect()
    }

    async fn reconcile(&self, key: &str, ctx: &Context) -> Result<Action, ReconcileError> {
        let Some(raw) = ctx.cache(pdb_kind::RESOURCE).get(key) else {
            return Ok(Action::Done);
        };
        if raw.pointer("/metadata/deletionTimestamp").is_some() {
            return Ok(Action::Done);
        }
        let pdb: policy::PodDisruptionBudget = serde_json::from_value((*raw).clone())
            .map_err(|e| ReconcileError::Invalid(format!("poddisruptionbudget {key}: {e}")))?;
        let (ns, _) = split_key(key);
        let ns = ns.unwrap_or("default");
        let spec = pdb.spec.clone().unwrap_or_default();
        let generation = pdb.metadata.generation.unwrap_or(0);
        let now = Utc::now();
        let pods = Self::pods_of(ctx, ns, pdb_kind::selector_of(&pdb).as_ref());
        if pods.is_empty() {
            ctx.recorder
                .normal(&raw, "NoPods", "No matching pods found")
                .await;
        }
        let scale = if needs_scale(&spec) {
            match Self::expected_scale(ctx, ns, &pods).await {
                Ok((scale, unmanaged)) => {
                    if !unmanaged.is_empty() {
                        let selector = serde_json::to_string(&spec.selector).unwrap_or_default();
                        ctx.recorder.warning(&raw, "UnmanagedPods", &format!(
                            "Pods selected by this PodDisruptionBudget (selector: {selector}) were found to be unmanaged. As a result, the status of the PDB cannot be calculated correctly, which may result in undefined behavior. To account for these pods please set \".spec.minAvailable\" field of the PDB to an integer value."
                        )).await;
                    }
                    scale
                }
                Err(e) => {
                    // Fail safe: no disruption is allowed while the budget cannot be worked out.
                    ctx.recorder
                        .warning(
                            &raw,
                            "CalculateExpectedPodCountFailed",
                            &format!("Failed to calculate the number of expected pods: {e}"),
                        )
                        .await;
                    let mut status = pdb.status.clone().unwrap_or_default();
                    status.disruptions_allowed = Some(0);
                    status.observed_generation = Some(generation);
                    set_condition(&mut status, "False", "SyncFailed", &e, generation, now);
                    Self::write_status(ctx, &raw, &pdb, status).await?;
                    return Ok(Action::RequeueAfter(Duration::from_secs(30)));
                }
            }
        } else {
            0
        };
        let (expected, desired_healthy) = expected_and_desired(&spec, pods.len() as i32, scale);
        let recorded = pdb
            .status
            .as_ref()
            .and_then(|s| s.disrupted_pods.clone())
            .unwrap_or_default();
        let (disrupted, overdue, recheck) = in_flight(&recorded, &pods, now);
        for name in overdue {
            let pod = json!({"kind": "Pod", "apiVersion": "v1",
                "metadata": {"name": name, "namespace": ns}});
            let message = format!(
                "Pod was expected by PDB {ns}/{} to be deleted but it wasn't",
                meta::name(&raw).unwrap_or_default()
            );
            ctx.recorder.warning(&pod, "NotDeleted", &message).await;
        }
        let counts = Counts {
            expected,
            desired_healthy,
            current_healthy: healthy(&pods, &disrupted),
        };
        let mut status = pdb.status.clone().unwrap_or_default();
        status.expected_pods = Some(counts.expected);
        status.desired_healthy = Some(counts.desired_healthy);
        status.current_healthy = Some(counts.current_healthy);
        status.disruptions_allowed = Some(counts.allowed());
        status.disrupted_pods = Some(disrupted);
        status.observed_generation = Some(generation);
        set_allowed_condition(&mut status, generation, now);
        Self::write_status(ctx, &raw, &pdb, status).await?;
        Ok(match recheck {
            Some(at) => Action::RequeueAfter(
                (at - now).to_std().unwrap_or_default() + Duration::from_millis(100),
            ),
            None => Action::Done,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn spec(v: Value) -> policy::PodDisruptionBudgetSpec {
        serde_json::from_value(v).unwrap()
    }

    fn pod(name: &str, ready: bool, deleting: bool) -> Arc<Value> {
        let mut p = json!({"metadata": {"name": name},
            "status": {"phase": "Running", "conditions": [
                {"type": "Ready", "status": if ready { "True" } else { "False" }}]}});
        if deleting {
            p["metadata"]["deletionTimestamp"] = json!("2026-12-02T06:00:00Z");
        }
        Arc::new(p)
    }

    fn at(s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 2, 6, 0, 0).unwrap() + chrono::Duration::seconds(s.into())
    }

    #[test]
    fn an_integer_min_available_counts_the_pods_it_sees() {
        let s = spec(json!({"minAvailable": 2}));
        assert!(!needs_scale(&s));
        assert_eq!(expected_and_desired(&s, 3, 0), (3, 2));
    }

    #[test]
    fn percentages_and_max_unavailable_count_the_controllers_scale_rounding_up() {
        let s = spec(json!({"minAvailable": "50%"}));
        assert!(needs_scale(&s));
        assert_eq!(expected_and_desired(&s, 2, 5), (5, 3));
        let s = spec(json!({"maxUnavailable": "30%"}));
        // 30% of 5 rounds up to 2 unavailable, so 3 must stay healthy.
        assert_eq!(expected_and_desired(&s, 5, 5), (5, 3));
        let s = spec(json!({"maxUnavailable": 7}));
        assert_eq!(expected_and_desired(&s, 5, 5), (5, 0));
    }

    #[test]
    fn disruptions_allowed_is_the_healthy_surplus_and_never_negative() {
        let c = |e, d, h| Counts {
            expected: e,
            desired_healthy: d,
            current_healthy: h,
        };
        assert_eq!(c(3, 2, 3).allowed(), 1);
        assert_eq!(c(3, 2, 1).allowed(), 0);
        assert_eq!(c(0, 0, 0).allowed(), 0);
    }

    #[test]
    fn terminating_unready_and_evicted_pods_are_not_healthy() {
        let pods = vec![
            pod("a", true, false),
            pod("b", true, true),
            pod("c", false, false),
            pod("d", true, false),
        ];
        let mut disrupted = BTreeMap::new();
        disrupted.insert("d".to_string(), time_of(at(0)));
        assert_eq!(healthy(&pods, &disrupted), 1);
    }

    #[test]
    fn an_eviction_stays_in_flight_until_its_pod_terminates_or_two_minutes_pass() {
        let pods = vec![
            pod("a", true, false),
            pod("b", true, true),
            pod("c", true, false),
        ];
        let mut recorded = BTreeMap::new();
        recorded.insert("a".to_string(), time_of(at(0)));
        recorded.insert("b".to_string(), time_of(at(0)));
        recorded.insert("gone".to_string(), time_of(at(0)));
        let (kept, overdue, recheck) = in_flight(&recorded, &pods, at(60));
        assert_eq!(kept.keys().collect::<Vec<_>>(), ["a"]);
        assert!(overdue.is_empty());
        assert_eq!(recheck, Some(at(120)));
        let (kept, overdue, recheck) = in_flight(&recorded, &pods, at(121));
        assert!(kept.is_empty());
        assert_eq!(overdue, ["a"]);
        assert_eq!(recheck, None);
    }

    #[test]
    fn the_condition_keeps_its_transition_time_while_its_status_holds() {
        let mut status = policy::PodDisruptionBudgetStatus {
            disruptions_allowed: Some(1),
            ..Default::default()
        };
        set_allowed_condition(&mut status, 1, at(0));
        set_allowed_condition(&mut status, 1, at(30));
        let c = &status.conditions.as_ref().unwrap()[0];
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("True", "SufficientPods")
        );
        assert_eq!(c.last_transition_time, time_of(at(0)));
        status.disruptions_allowed = Some(0);
        set_allowed_condition(&mut status, 1, at(40));
        let c = &status.conditions.as_ref().unwrap()[0];
        assert_eq!(
            (c.reason.as_str(), c.last_transition_time.clone()),
            ("InsufficientPods", time_of(at(40)))
        );
    }
}
