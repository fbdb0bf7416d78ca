//! The horizontal pod autoscaler (`autoscaling/v1` HorizontalPodAutoscaler): every sync
//! period it compares the target's pods' CPU usage with their CPU requests, computes the
//! replicas the target utilisation calls for (see [`replica_calculator`]), and sets them
//! through the target's `scale` subresource. Scale-downs wait out a stabilisation window.
//!
//! autoscaling/v1 has no conditions field; like Kubernetes, the conditions (AbleToScale,
//! ScalingActive, ScalingLimited) go into the `autoscaling.alpha.kubernetes.io/conditions`
//! annotation, so `kubectl describe hpa` shows why it did or did not scale.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use super::pods;
use super::replica_calculator::{self as calc, PodSample, PodState, Stabilizer};
use crate::api::selector::LabelSelector;
use crate::api::{meta, resources, validation, ApiError};
use crate::client::{EventKind, PatchType};
use crate::resource_metrics::MetricsSource;
use crate::runtime::{
    key_of, split_key, Action, Change, Context, InformerSpec, ReconcileError, Reconciler,
};

pub const CONDITIONS_ANNOTATION: &str = "autoscaling.alpha.kubernetes.io/conditions";
/// Kubernetes' default for an autoscaling/v1 HPA without a target.
const DEFAULT_TARGET_CPU_PERCENT: i64 = 80;
const METRIC_NAME: &str = "cpu resource utilization (percentage of request)";

#[derive(Debug, Clone)]
pub struct AutoscalerConfig {
    /// How often every HPA is evaluated.
    pub sync_period: Duration,
    /// A scale-down takes the highest recommendation of this long.
    pub downscale_stabilization: Duration,
}

impl Default for AutoscalerConfig {
    fn default() -> Self {
        AutoscalerConfig {
            sync_period: Duration::from_secs(15),
            downscale_stabilization: Duration::from_secs(300),
        }
    }
}

/// Where the autoscaler gets the time (a fake in tests).
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> DateTime<Utc>;
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

pub struct Autoscaler {
    config: AutoscalerConfig,
    metrics: Arc<dyn MetricsSource>,
    clock: Arc<dyn Clock>,
    stabilizer: Mutex<Stabilizer>,
}

/// One condition of the HPA, as the annotation carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Condition {
    kind: &'static str,
    status: bool,
    reason: &'static str,
    message: String,
}

/// What one evaluation found and decided.
#[derive(Debug, Default)]
struct Evaluation {
    current: Option<i64>,
    desired: Option<i64>,
    utilization: Option<i32>,
    conditions: Vec<Condition>,
    /// (warning?, reason, message)
    events: Vec<(bool, &'static str, String)>,
    /// Scale the target to `desired`, for this reason.
    rescale: Option<String>,
    /// The target's resource (for writing its scale).
    target: Option<(&'static str, String)>,
}

impl Evaluation {
    fn set(&mut self, kind: &'static str, status: bool, reason: &'static str, message: String) {
        self.conditions.retain(|c| c.kind != kind);
        self.conditions.push(Condition {
            kind,
            status,
            reason,
            message,
        });
    }

    fn warn(&mut self, reason: &'static str, message: String) {
        self.events.push((true, reason, message));
    }
}

/// The HPA's bounds and target, or what is wrong with them.
struct Spec {
    min: i64,
    max: i64,
    target_percent: i64,
}

fn spec_of(hpa: &Value) -> Result<Spec, String> {
    let spec = hpa.get("spec").unwrap_or(&Value::Null);
    let min = spec.get("minReplicas").and_then(Value::as_i64).unwrap_or(1);
    let max = spec.get("maxReplicas").and_then(Value::as_i64).unwrap_or(0);
    let target_percent = spec
        .get("targetCPUUtilizationPercentage")
        .and_then(Value::as_i64)
        .unwrap_or(DEFAULT_TARGET_CPU_PERCENT);
    if min < 1 {
        return Err(format!("minReplicas ({min}) must be at least 1"));
    }
    if max < min {
        return Err(format!(
            "maxReplicas ({max}) must be greater than or equal to minReplicas ({min})"
        ));
    }
    if target_percent < 1 {
        return Err(format!(
            "targetCPUUtilizationPercentage ({target_percent}) must be greater than 0"
        ));
    }
    Ok(Spec {
        min,
        max,
        target_percent,
    })
}

/// The sum of a pod's containers' CPU requests in millicores, or the first container
/// without one.
fn cpu_request_millis(pod: &Value) -> Result<u64, String> {
    let containers = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let mut total = 0u64;
    for c in containers {
        let name = c.get("name").and_then(Value::as_str).unwrap_or_default();
        let cores = c
            .pointer("/resources/requests/cpu")
            .and_then(validation::quantity_value)
            .ok_or_else(|| name.to_string())?;
        total += (cores * 1000.0).round().max(0.0) as u64;
    }
    if containers.is_empty() {
        return Err(String::new());
    }
    Ok(total)
}

fn pod_state(pod: &Value) -> PodState {
    let phase = pod
        .pointer("/status/phase")
        .and_then(Value::as_str)
        .unwrap_or("Pending");
    if pods::is_deleting(pod) || matches!(phase, "Failed" | "Succeeded") {
        PodState::Ignored
    } else if phase == "Pending" || !pods::is_ready(pod) {
        PodState::Unready
    } else {
        PodState::Ready
    }
}

fn conditions_json(conds: &[Condition], old: &[Value], now: &str) -> Vec<Value> {
    conds
        .iter()
        .map(|c| {
            let status = if c.status { "True" } else { "False" };
            // A condition keeps its transition time while its status stays the same.
            let since = old
                .iter()
                .find(|o| o["type"] == c.kind && o["status"] == status)
                .and_then(|o| o.get("lastTransitionTime").cloned())
                .unwrap_or_else(|| json!(now));
            json!({"type": c.kind, "status": status, "lastTransitionTime": since,
                "reason": c.reason, "message": c.message})
        })
        .collect()
}

fn old_conditions(hpa: &Value) -> Vec<Value> {
    hpa.pointer("/metadata/annotations")
        .and_then(|a| a.get(CONDITIONS_ANNOTATION))
        .and_then(Value::as_str)
        .and_then(|s| serde_json::from_str::<Vec<Value>>(s).ok())
        .unwrap_or_default()
}

impl Autoscaler {
    pub fn new(config: AutoscalerConfig, metrics: Arc<dyn MetricsSource>) -> Self {
        Self::with_clock(config, metrics, Arc::new(SystemClock))
    }

    pub fn with_clock(
        config: AutoscalerConfig,
        metrics: Arc<dyn MetricsSource>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Autoscaler {
            config,
            metrics,
            clock,
            stabilizer: Mutex::new(Stabilizer::default()),
        }
    }

    fn stabilizer(&self) -> std::sync::MutexGuard<'_, Stabilizer> {
        self.stabilizer.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Read the target's scale and its pods' usage, and decide.
    async fn evaluate(
        &self,
        key: &str,
        hpa: &Value,
        ns: &str,
        ctx: &Context,
    ) -> Result<Evaluation, ReconcileError> {
        let mut ev = Evaluation::default();
        let spec = match spec_of(hpa) {
            Ok(s) => s,
            Err(msg) => {
                ev.set("ScalingActive", false, "InvalidSpec", msg.clone());
                ev.warn("InvalidSpec", msg);
                return Ok(ev);
            }
        };
        let target_ref = hpa.pointer("/spec/scaleTargetRef").unwrap_or(&Value::Null);
        let kind = target_ref.get("kind").and_then(Value::as_str).unwrap_or("");
        let name = target_ref.get("name").and_then(Value::as_str).unwrap_or("");
        let group = target_ref
            .get("apiVersion")
            .and_then(Value::as_str)
            .and_then(|v| v.rsplit_once('/').map(|(g, _)| g))
            .unwrap_or("");
        let scale = match self.read_scale(ctx, kind, group, name, ns).await? {
            Ok((resource, scale)) => {
                ev.target = Some((resource, name.to_string()));
                scale
            }
            Err(detail) => {
                let msg = format!(
                    "the HPA controller was unable to get the target's current scale: {detail}"
                );
                ev.set("AbleToScale", false, "FailedGetScale", msg);
                ev.warn("FailedGetScale", detail);
                return Ok(ev);
            }
        };
        ev.set(
            "AbleToScale",
            true,
            "SucceededGetScale",
            "the HPA controller was able to get the target's current scale".into(),
        );
        let current = scale
            .pointer("/spec/replicas")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        ev.current = Some(current);
        if current == 0 {
            ev.desired = Some(0);
            ev.set(
                "ScalingActive",
                false,
                "ScalingDisabled",
                "scaling is disabled since the replica count of the target is zero".into(),
            );
            return Ok(ev);
        }
        if current > spec.max {
            ev.desired = Some(spec.max);
            ev.rescale = Some("Current number of replicas above Spec.MaxReplicas".into());
            return Ok(ev);
        }
        if current < spec.min {
            ev.desired = Some(spec.min);
            ev.rescale = Some("Current number of replicas below Spec.MinReplicas".into());
            return Ok(ev);
        }
        let selector = scale
            .pointer("/status/selector")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .and_then(|s| LabelSelector::parse(s).ok());
        let Some(selector) = selector else {
            let msg = "the HPA target's scale is missing a selector".to_string();
            ev.set("ScalingActive", false, "InvalidSelector", msg.clone());
            ev.warn("SelectorRequired", "selector is required".into());
            ev.desired = Some(current);
            return Ok(ev);
        };
        let samples = self.samples(ctx, ns, &selector);
        let proposal = match calc::desired_replicas(
            current as i32,
            spec.target_percent as i32,
            &samples,
        ) {
            Ok(p) => p,
            Err(e) => {
                let detail = format!("failed to get cpu utilization: {e}");
                ev.set(
                    "ScalingActive",
                    false,
                    "FailedGetResourceMetric",
                    format!("the HPA was unable to compute the replica count: {detail}"),
                );
                ev.warn("FailedGetResourceMetric", detail.clone());
                ev.warn(
                    "FailedComputeMetricsReplicas",
                    format!("invalid metrics (1 invalid out of 1), first error is: failed to get cpu resource metric value: {detail}"),
                );
                ev.desired = Some(current);
                return Ok(ev);
            }
        };
        ev.utilization = Some(proposal.utilization);
        ev.set(
            "ScalingActive",
            true,
            "ValidMetricFound",
            format!(
                "the HPA was able to successfully calculate a replica count from {METRIC_NAME}"
            ),
        );
        let stabilized = self.stabilizer().stabilize(
            key,
            self.clock.now(),
            self.config.downscale_stabilization,
            proposal.replicas,
        );
        if stabilized != proposal.replicas {
            ev.set("AbleToScale", true, "ScaleDownStabilized",
                "recent recommendations were higher than current one, applying the highest recent recommendation".into());
        } else {
            ev.set(
                "AbleToScale",
                true,
                "ReadyForNewScale",
                "recommended size matches current size".into(),
            );
        }
        let limit = calc::clamp(current as i32, stabilized, spec.min as i32, spec.max as i32);
        ev.set(
            "ScalingLimited",
            limit.limited,
            limit.reason,
            limit.message.into(),
        );
        let desired = i64::from(limit.replicas);
        ev.desired = Some(desired);
        if desired > current {
            ev.rescale = Some(format!("{METRIC_NAME} above target"));
        } else if desired < current {
            ev.rescale = Some("All metrics below target".into());
        }
        Ok(ev)
    }

    /// The target's Scale, or why there is none (`Err` inside: a problem with the HPA's
    /// configuration, reported rather than retried; outer `Err`: the API failed).
    async fn read_scale(
        &self,
        ctx: &Context,
        kind: &str,
        group: &str,
        name: &str,
        ns: &str,
    ) -> Result<Result<(&'static str, Value), String>, ReconcileError> {
        let Some(info) = resources::by_kind(kind).filter(|r| r.group == group) else {
            return Ok(Err(format!(
                "no matches for kind \"{kind}\" in group \"{group}\""
            )));
        };
        if !info.subresources.contains(&"scale") {
            return Ok(Err(format!(
                "{} \"{name}\" has no scale subresource: it cannot be autoscaled",
                info.name
            )));
        }
        match ctx
            .client
            .get_subresource(info.name, Some(ns), name, "scale")
            .await
        {
            Ok(scale) => Ok(Ok((info.name, scale))),
            Err(e @ ApiError::NotFound { .. }) => Ok(Err(e.to_string())),
            Err(e) => Err(e.into()),
        }
    }

    /// The target's pods with their requests and measured usage.
    fn samples(&self, ctx: &Context, ns: &str, selector: &LabelSelector) -> Vec<PodSample> {
        let usage: HashMap<String, (String, u64)> = self
            .metrics
            .pods(Some(ns))
            .into_iter()
            .filter(|p| selector.matches(&p.labels))
            .map(|p| {
                let millis = p.cpu_nanocores() / 1_000_000;
                (p.name, (p.uid, millis))
            })
            .collect();
        ctx.cache("pods")
            .list_namespace(ns)
            .into_iter()
            .filter(|p| selector.matches_object(p))
            .map(|p| {
                let name = meta::name(&p).unwrap_or_default().to_string();
                let uid = meta::uid(&p).unwrap_or_default();
                let cpu_usage_millis = usage.get(&name).filter(|(u, _)| u == uid).map(|(_, m)| *m);
                PodSample {
                    cpu_request_millis: cpu_request_millis(&p),
                    state: pod_state(&p),
                    name,
                    cpu_usage_millis,
                }
            })
            .collect()
    }

    /// Scale the target; the outcome becomes a condition and an event.
    async fn rescale(&self, ctx: &Context, hpa: &Value, ns: &str, ev: &mut Evaluation) -> bool {
        let (Some(reason), Some(desired), Some((resource, name))) =
            (ev.rescale.clone(), ev.desired, ev.target.clone())
        else {
            return false;
        };
        let patch = json!({"spec": {"replicas": desired}});
        match ctx
            .client
            .patch(
                resource,
                Some(ns),
                &name,
                Some("scale"),
                PatchType::Merge,
                patch,
            )
            .await
        {
            Ok(_) => {
                ev.set(
                    "AbleToScale",
                    true,
                    "SucceededRescale",
                    format!("the HPA controller was able to update the target scale to {desired}"),
                );
                ctx.recorder
                    .normal(
                        hpa,
                        "SuccessfulRescale",
                        &format!("New size: {desired}; reason: {reason}"),
                    )
                    .await;
                tracing::info!(hpa = %key_of(hpa), replicas = desired, reason = %reason, "rescaled");
                true
            }
            Err(e) => {
                ev.set(
                    "AbleToScale",
                    false,
                    "FailedUpdateScale",
                    format!("the HPA controller was unable to update the target scale: {e}"),
                );
                ctx.recorder
                    .warning(
                        hpa,
                        "FailedRescale",
                        &format!("New size: {desired}; reason: {reason}; error: {e}"),
                    )
                    .await;
                false
            }
        }
    }

    async fn write_status(
        &self,
        ctx: &Context,
        hpa: &Value,
        ns: &str,
        ev: &Evaluation,
        scaled: bool,
    ) -> Result<(), ReconcileError> {
        let name = meta::name(hpa).unwrap_or_default();
        let now = self.clock.now();
        let stamp = now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let old = old_conditions(hpa);
        let conditions = conditions_json(&ev.conditions, &old, &stamp);
        if conditions != old {
            let text = serde_json::to_string(&conditions).unwrap_or_default();
            let patch = json!({"metadata": {"annotations": {CONDITIONS_ANNOTATION: text}}});
            match ctx
                .client
                .patch(
                    "horizontalpodautoscalers",
                    Some(ns),
                    name,
                    None,
                    PatchType::Merge,
                    patch,
                )
                .await
            {
                Ok(_) | Err(ApiError::NotFound { .. }) => {}
                // A stored HPA that no longer validates cannot be written at all; its
                // Event already says why, and retrying would not help.
                Err(e @ ApiError::Invalid { .. }) => {
                    tracing::warn!(hpa = %key_of(hpa), error = %e, "conditions not written");
                    return Ok(());
                }
                Err(e) => return Err(e.into()),
            }
        }
        let old_status = hpa.get("status").cloned().unwrap_or(json!({}));
        let last_scale = if scaled {
            json!(stamp)
        } else {
            old_status
                .get("lastScaleTime")
                .cloned()
                .unwrap_or(Value::Null)
        };
        let status = json!({
            "observedGeneration": hpa.pointer("/metadata/generation").cloned().unwrap_or(json!(1)),
            "currentReplicas": ev.current.unwrap_or(0),
            "desiredReplicas": ev.desired.or(ev.current).unwrap_or(0),
            "currentCPUUtilizationPercentage": ev.utilization,
            "lastScaleTime": last_scale,
        });
        let unchanged = status.as_object().is_some_and(|s| {
            s.iter()
                .all(|(k, v)| old_status.get(k).unwrap_or(&Value::Null) == v)
        });
        if unchanged {
            return Ok(());
        }
        match ctx
            .client
            .patch(
                "horizontalpodautoscalers",
                Some(ns),
                name,
                Some("status"),
                PatchType::Merge,
                json!({"status": status}),
            )
            .await
        {
            Ok(_) | Err(ApiError::NotFound { .. }) => Ok(()),
            Err(e @ ApiError::Invalid { .. }) => {
                tracing::warn!(hpa = %key_of(hpa), error = %e, "status not written");
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }
}

#[async_trait::async_trait]
impl Reconciler for Autoscaler {
    fn name(&self) -> &'static str {
        "horizontal-pod-autoscaler"
    }

    fn informers(&self) -> Vec<InformerSpec> {
        vec![
            InformerSpec::all("horizontalpodautoscalers"),
            InformerSpec::all("pods"),
        ]
    }

    fn keys_for(&self, resource: &str, change: &Change, _ctx: &Context) -> Vec<String> {
        if resource != "horizontalpodautoscalers" {
            // Pods are read at each sync period; their every change is no reason to act.
            return Vec::new();
        }
        // Our own status and condition writes come back as changes; only a new or
        // re-specified HPA needs an evaluation before the next period.
        let respecified = change.kind != EventKind::Modified
            || change
                .old
                .as_ref()
                .is_none_or(|old| old.get("spec") != change.object.get("spec"));
        if respecified {
            vec![key_of(&change.object)]
        } else {
            Vec::new()
        }
    }

    fn resync(&self) -> Option<Duration> {
        Some(self.config.sync_period)
    }

    async fn reconcile(&self, key: &str, ctx: &Context) -> Result<Action, ReconcileError> {
        let Some(hpa) = ctx.cache("horizontalpodautoscalers").get(key) else {
            self.stabilizer().forget(key);
            return Ok(Action::Done);
        };
        // Decisions need the target's pods; before the first list they look absent.
        if !ctx.caches_synced() {
            return Ok(Action::RequeueAfter(Duration::from_millis(200)));
        }
        let (ns, _) = split_key(key);
        let ns = ns.unwrap_or("default");
        let mut ev = self.evaluate(key, &hpa, ns, ctx).await?;
        for (warning, reason, message) in std::mem::take(&mut ev.events) {
            if warning {
                ctx.recorder.warning(&hpa, reason, &message).await;
            }
        }
        let scaled = self.rescale(ctx, &hpa, ns, &mut ev).await;
        self.write_status(ctx, &hpa, ns, &ev, scaled).await?;
        Ok(Action::Done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn min_above_max_is_reported_not_acted_on() {
        let hpa = json!({"spec": {"minReplicas": 5, "maxReplicas": 2}});
        let err = spec_of(&hpa).err().expect("invalid");
        assert!(err.contains("maxReplicas (2)"), "{err}");
        let ok = spec_of(&json!({"spec": {"maxReplicas": 3}})).expect("valid");
        assert_eq!((ok.min, ok.max, ok.target_percent), (1, 3, 80));
    }

    #[test]
    fn cpu_requests_add_up_over_containers_and_name_the_one_missing() {
        let pod = json!({"spec": {"containers": [
            {"name": "a", "resources": {"requests": {"cpu": "100m"}}},
            {"name": "b", "resources": {"requests": {"cpu": "0.5"}}}]}});
        assert_eq!(cpu_request_millis(&pod), Ok(600));
        let pod = json!({"spec": {"containers": [
            {"name": "a", "resources": {"requests": {"cpu": "100m"}}},
            {"name": "b", "resources": {"requests": {"memory": "1Mi"}}}]}});
        assert_eq!(cpu_request_millis(&pod), Err("b".to_string()));
    }

    #[test]
    fn pods_are_ready_unready_or_ignored() {
        let ready = json!({"status": {"phase": "Running",
            "conditions": [{"type": "Ready", "status": "True"}]}});
        let starting = json!({"status": {"phase": "Running",
            "conditions": [{"type": "Ready", "status": "False"}]}});
        let deleting = json!({"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z"},
            "status": {"phase": "Running"}});
        assert_eq!(pod_state(&ready), PodState::Ready);
        assert_eq!(pod_state(&starting), PodState::Unready);
        assert_eq!(pod_state(&json!({})), PodState::Unready);
        assert_eq!(pod_state(&deleting), PodState::Ignored);
    }

    #[test]
    fn a_condition_keeps_its_transition_time_while_its_status_holds() {
        let old = vec![json!({"type": "AbleToScale", "status": "True",
            "lastTransitionTime": "T0", "reason": "SucceededGetScale", "message": "m"})];
        let cond = |status| Condition {
            kind: "AbleToScale",
            status,
            reason: "ReadyForNewScale",
            message: "x".into(),
        };
        assert_eq!(
            conditions_json(&[cond(true)], &old, "T1")[0]["lastTransitionTime"],
            "T0"
        );
        assert_eq!(
            conditions_json(&[cond(false)], &old, "T1")[0]["lastTransitionTime"],
            "T1"
        );
    }
}
