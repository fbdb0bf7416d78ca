//! The horizontal pod autoscaler, on autoscaling/v2 HPAs (autoscaling/v1 ones are the
//! same stored objects): every sync period it reads the target's `scale` subresource —
//! whatever kind has one, nothing is special-cased — measures each of the HPA's
//! Resource and ContainerResource metrics (CPU and memory, as utilisation of the pods'
//! requests or as an average value, from the kubelets' usage samples), takes the highest
//! replica count any metric asks for (see [`replica_calculator`]), bounds it by the
//! stabilization windows, scaling policies and replica limits (see [`scaling_behavior`]),
//! and sets it through the scale subresource. It reports `status.currentMetrics`, the
//! AbleToScale / ScalingActive / ScalingLimited conditions with Kubernetes' reasons, and
//! Events (`SuccessfulRescale`, `New size: N; reason: ...`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use k8s_openapi::api::autoscaling::v2;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::{json, Value};

use super::hpa_metrics::{compute_metric, MetricError};
use super::replica_calculator::{self as calc, Tolerances};
use super::scaling_behavior::{Behavior, History};
use crate::api::selector::LabelSelector;
use crate::api::strategy::typed;
use crate::api::{resources, ApiError};
use crate::client::{EventKind, PatchType};
use crate::resource_metrics::{MetricsSource, PodUsage};
use crate::runtime::{
    key_of, split_key, Action, Change, Context, InformerSpec, ReconcileError, Reconciler,
};

const HPAS: &str = "horizontalpodautoscalers";

#[derive(Debug, Clone)]
pub struct AutoscalerConfig {
    /// How often every HPA is evaluated.
    pub sync_period: Duration,
    /// The scale-down stabilization window of HPAs without a behavior, and of behaviors
    /// that leave it unset.
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
    history: Mutex<History>,
}

/// One condition as this evaluation sets it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Condition {
    kind: &'static str,
    status: bool,
    reason: &'static str,
    message: String,
}

/// What one evaluation found and decided; `None` leaves that part of the status as it
/// was, as Kubernetes' early returns do.
#[derive(Debug, Default)]
struct Evaluation {
    current: Option<i32>,
    desired: Option<i32>,
    metrics: Option<Vec<v2::MetricStatus>>,
    conditions: Vec<Condition>,
    /// Warning events: (reason, message).
    warnings: Vec<(&'static str, String)>,
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
        self.warnings.push((reason, message));
    }
}

/// The HPA's bounds, or what is wrong with them (an object stored before validation
/// refused it).
fn bounds(spec: &v2::HorizontalPodAutoscalerSpec) -> Result<(i32, i32), String> {
    let min = spec.min_replicas.unwrap_or(1);
    let max = spec.max_replicas;
    if min < 1 {
        return Err(format!("minReplicas ({min}) must be at least 1"));
    }
    if max < min {
        return Err(format!(
            "maxReplicas ({max}) must be greater than or equal to minReplicas ({min})"
        ));
    }
    Ok((min, max))
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
            history: Mutex::new(History::default()),
        }
    }

    fn history(&self) -> std::sync::MutexGuard<'_, History> {
        self.history.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn behavior(&self, spec: &v2::HorizontalPodAutoscalerSpec) -> Option<Behavior> {
        spec.behavior
            .as_ref()
            .map(|b| Behavior::from_spec(b, self.config.downscale_stabilization))
    }

    /// Read the target's scale and its pods' usage, and decide.
    async fn evaluate(
        &self,
        key: &str,
        hpa: &v2::HorizontalPodAutoscaler,
        ns: &str,
        ctx: &Context,
    ) -> Result<Evaluation, ReconcileError> {
        let mut ev = Evaluation::default();
        let spec = hpa.spec.clone();
        let (min, max) = match bounds(&spec) {
            Ok(b) => b,
            Err(msg) => {
                ev.set("ScalingActive", false, "InvalidSpec", msg.clone());
                ev.warn("InvalidSpec", msg);
                return Ok(ev);
            }
        };
        let target = &spec.scale_target_ref;
        let group = target
            .api_version
            .as_deref()
            .and_then(|v| v.rsplit_once('/').map(|(g, _)| g))
            .unwrap_or("");
        let scale = match self
            .read_scale(ctx, &target.kind, group, &target.name, ns)
            .await?
        {
            Ok((resource, scale)) => {
                ev.target = Some((resource, target.name.clone()));
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
            .unwrap_or(0) as i32;
        ev.current = Some(current);
        if current == 0 {
            ev.desired = Some(0);
            ev.metrics = Some(Vec::new());
            ev.set(
                "ScalingActive",
                false,
                "ScalingDisabled",
                "scaling is disabled since the replica count of the target is zero".into(),
            );
            return Ok(ev);
        }
        if current > max || current < min {
            let (desired, why) = if current > max {
                (max, "Current number of replicas above Spec.MaxReplicas")
            } else {
                (min, "Current number of replicas below Spec.MinReplicas")
            };
            ev.desired = Some(desired);
            ev.metrics = Some(Vec::new());
            ev.rescale = Some(why.into());
            return Ok(ev);
        }
        let selector = scale
            .pointer("/status/selector")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .and_then(|s| LabelSelector::parse(s).ok());
        let Some(selector) = selector else {
            ev.set(
                "ScalingActive",
                false,
                "InvalidSelector",
                "the HPA target's scale is missing a selector".into(),
            );
            ev.warn("SelectorRequired", "selector is required".into());
            return Ok(ev);
        };

        let behavior = self.behavior(&spec);
        let tolerances = Tolerances {
            down: behavior
                .as_ref()
                .and_then(|b| b.down.tolerance)
                .unwrap_or(calc::TOLERANCE),
            up: behavior
                .as_ref()
                .and_then(|b| b.up.tolerance)
                .unwrap_or(calc::TOLERANCE),
        };
        let metrics = spec.metrics.clone().unwrap_or_default();
        let pods: Vec<Arc<Value>> = ctx
            .cache("pods")
            .list_namespace(ns)
            .into_iter()
            .filter(|p| selector.matches_object(p))
            .collect();
        let usage: HashMap<String, PodUsage> = self
            .metrics
            .pods(Some(ns))
            .into_iter()
            .filter(|p| selector.matches(&p.labels))
            .map(|p| (p.name.clone(), p))
            .collect();
        let mut statuses = Vec::with_capacity(metrics.len());
        let mut best: Option<(i32, String)> = None;
        let mut first_error: Option<MetricError> = None;
        let mut invalid = 0;
        for m in &metrics {
            match compute_metric(m, current, &pods, &usage, tolerances) {
                Ok((replicas, status, name)) => {
                    statuses.push(status);
                    if best.as_ref().is_none_or(|(r, _)| replicas > *r) {
                        best = Some((replicas, name));
                    }
                }
                Err(e) => {
                    statuses.push(v2::MetricStatus::default());
                    ev.warn(e.reason, e.detail.clone());
                    invalid += 1;
                    first_error.get_or_insert(e);
                }
            }
        }
        ev.metrics = Some(statuses);
        let proposal = match (best, first_error) {
            (Some((replicas, name)), err) if err.is_none() || replicas >= current => {
                (replicas, name)
            }
            (_, err) => {
                // Every metric failed, or the ones left would scale down on partial data.
                let e = err.unwrap_or(MetricError {
                    reason: "FailedGetResourceMetric",
                    detail: "no metrics".into(),
                    wrapped: "no metrics".into(),
                });
                ev.set(
                    "ScalingActive",
                    false,
                    e.reason,
                    format!(
                        "the HPA was unable to compute the replica count: {}",
                        e.detail
                    ),
                );
                ev.warn(
                    "FailedComputeMetricsReplicas",
                    format!(
                        "invalid metrics ({invalid} invalid out of {}), first error is: {}",
                        metrics.len(),
                        e.wrapped
                    ),
                );
                return Ok(ev);
            }
        };
        let (recommended, metric_name) = proposal;
        ev.set(
            "ScalingActive",
            true,
            "ValidMetricFound",
            format!(
                "the HPA was able to successfully calculate a replica count from {metric_name}"
            ),
        );
        let reason = if recommended > current {
            Some(format!("{metric_name} above target"))
        } else if recommended < current {
            Some("All metrics below target".to_string())
        } else {
            None
        };
        let decision = self.history().normalize(
            key,
            self.clock.now(),
            behavior.as_ref(),
            self.config.downscale_stabilization,
            current,
            recommended,
            min,
            max,
        );
        ev.set(
            "AbleToScale",
            true,
            decision.able_reason,
            decision.able_message.into(),
        );
        ev.set(
            "ScalingLimited",
            decision.limited,
            decision.limit_reason,
            decision.limit_message.into(),
        );
        ev.desired = Some(decision.replicas);
        if decision.replicas != current {
            ev.rescale = reason.or_else(|| Some("All metrics below target".into()));
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
        // By group and kind among the stored resources, so that a kind of the same name
        // in another group (a custom resource) is never taken for this one.
        let Some(info) = resources::registry().find(|r| {
            r.kind == kind && r.group == group && r.storage == resources::Storage::Stored
        }) else {
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

    /// Scale the target; the outcome becomes a condition and an event.
    async fn rescale(
        &self,
        ctx: &Context,
        key: &str,
        hpa: &Value,
        spec: &v2::HorizontalPodAutoscalerSpec,
        ns: &str,
        ev: &mut Evaluation,
    ) -> bool {
        let (Some(reason), Some(desired), Some((resource, name))) =
            (ev.rescale.clone(), ev.desired, ev.target.clone())
        else {
            return false;
        };
        let patch = json!({"spec": {"replicas": desired}});
        let result = ctx
            .client
            .patch(
                resource,
                Some(ns),
                &name,
                Some("scale"),
                PatchType::Merge,
                patch,
            )
            .await;
        match result {
            Ok(_) => {
                ev.set(
                    "AbleToScale",
                    true,
                    "SucceededRescale",
                    format!("the HPA controller was able to update the target scale to {desired}"),
                );
                let message = format!("New size: {desired}; reason: {reason}");
                ctx.recorder
                    .normal(hpa, "SuccessfulRescale", &message)
                    .await;
                let previous = ev.current.unwrap_or(0);
                self.history().record_scale(
                    key,
                    self.clock.now(),
                    self.behavior(spec).as_ref(),
                    previous,
                    desired,
                );
                tracing::info!(hpa = %key, replicas = desired, reason = %reason, "rescaled");
                true
            }
            Err(e) => {
                ev.set(
                    "AbleToScale",
                    false,
                    "FailedUpdateScale",
                    format!("the HPA controller was unable to update the target scale: {e}"),
                );
                let message = format!("New size: {desired}; reason: {reason}; error: {e}");
                ctx.recorder.warning(hpa, "FailedRescale", &message).await;
                ev.desired = None;
                false
            }
        }
    }

    /// The status this evaluation leads to.
    fn next_status(
        &self,
        hpa: &v2::HorizontalPodAutoscaler,
        ev: &Evaluation,
        scaled: bool,
    ) -> v2::HorizontalPodAutoscalerStatus {
        let now = Time(
            k8s_openapi::jiff::Timestamp::from_second(self.clock.now().timestamp())
                .unwrap_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
        );
        let mut status = hpa.status.clone().unwrap_or_default();
        if let Some(c) = ev.current {
            status.current_replicas = Some(c);
        }
        if let Some(d) = ev.desired {
            // Not rescaled, the desired count is the current one.
            status.desired_replicas = if scaled { d } else { ev.current.unwrap_or(d) };
        }
        if let Some(m) = &ev.metrics {
            status.current_metrics = (!m.is_empty()).then(|| m.clone());
        }
        if scaled {
            status.last_scale_time = Some(now.clone());
        }
        status.observed_generation = hpa.metadata.generation.or(Some(1));
        let conditions = status.conditions.get_or_insert_with(Vec::new);
        for c in &ev.conditions {
            let state = if c.status { "True" } else { "False" };
            let pos = conditions.iter().position(|o| o.type_ == c.kind);
            let slot = match pos {
                Some(i) => &mut conditions[i],
                None => {
                    conditions.push(v2::HorizontalPodAutoscalerCondition {
                        type_: c.kind.into(),
                        ..Default::default()
                    });
                    conditions.last_mut().expect("just pushed")
                }
            };
            // A condition keeps its transition time while its status stays the same.
            if slot.status != state {
                slot.last_transition_time = Some(now.clone());
            }
            slot.status = state.into();
            slot.reason = Some(c.reason.into());
            slot.message = Some(c.message.clone());
        }
        status
    }

    async fn write_status(
        &self,
        ctx: &Context,
        hpa: &v2::HorizontalPodAutoscaler,
        ns: &str,
        status: v2::HorizontalPodAutoscalerStatus,
    ) -> Result<(), ReconcileError> {
        if hpa.status.as_ref() == Some(&status) {
            return Ok(());
        }
        let name = hpa.metadata.name.as_deref().unwrap_or_default();
        let mut body = serde_json::to_value(&status).unwrap_or(json!({}));
        if status.current_metrics.is_none() {
            // A merge patch keeps what it does not mention: clear it explicitly.
            body["currentMetrics"] = Value::Null;
        }
        match ctx
            .client
            .patch(
                HPAS,
                Some(ns),
                name,
                Some("status"),
                PatchType::Merge,
                json!({"status": body}),
            )
            .await
        {
            Ok(_) | Err(ApiError::NotFound { .. }) => Ok(()),
            // A stored HPA that no longer validates cannot be written at all; its Event
            // already says why, and retrying would not help.
            Err(e @ ApiError::Invalid { .. }) => {
                tracing::warn!(hpa = %format!("{ns}/{name}"), error = %e, "status not written");
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
        vec![InformerSpec::all(HPAS), InformerSpec::all("pods")]
    }

    fn keys_for(&self, resource: &str, change: &Change, _ctx: &Context) -> Vec<String> {
        if resource != HPAS {
            // Pods are read at each sync period; their every change is no reason to act.
            return Vec::new();
        }
        // Our own status writes come back as changes; only a new or re-specified HPA
        // needs an evaluation before the next period.
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
        let Some(raw) = ctx.cache(HPAS).get(key) else {
            self.history().forget(key);
            return Ok(Action::Done);
        };
        // Decisions need the target's pods; before the first list they look absent.
        if !ctx.caches_synced() {
            return Ok(Action::RequeueAfter(Duration::from_millis(200)));
        }
        let Some(hpa) = typed::<v2::HorizontalPodAutoscaler>(&raw) else {
            tracing::warn!(hpa = %key, "not an autoscaling/v2 HorizontalPodAutoscaler");
            return Ok(Action::Done);
        };
        let (ns, _) = split_key(key);
        let ns = ns.unwrap_or("default");
        let mut ev = self.evaluate(key, &hpa, ns, ctx).await?;
        for (reason, message) in std::mem::take(&mut ev.warnings) {
            ctx.recorder.warning(&raw, reason, &message).await;
        }
        let spec = hpa.spec.clone();
        let scaled = self.rescale(ctx, key, &raw, &spec, ns, &mut ev).await;
        let status = self.next_status(&hpa, &ev, scaled);
        self.write_status(ctx, &hpa, ns, status).await?;
        Ok(Action::Done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_of_an_inverted_hpa_are_reported_not_acted_on() {
        let spec = v2::HorizontalPodAutoscalerSpec {
            min_replicas: Some(5),
            max_replicas: 2,
            ..Default::default()
        };
        assert!(bounds(&spec).unwrap_err().contains("maxReplicas (2)"));
    }
}
