//! autoscaling HorizontalPodAutoscaler: stored as autoscaling/v2, as kube-apiserver
//! stores it, and served as v2 and, through a view of the same objects, as v1 (see
//! [`conversion`]). Defaults as `SetDefaults_HorizontalPodAutoscaler`, validation as
//! `ValidateHorizontalPodAutoscaler` (see [`validation`]), the `status` subresource, and
//! kube-apiserver's Table (REFERENCE, TARGETS, MINPODS, MAXPODS, REPLICAS, AGE).
//!
//! HPAs an earlier skiff stored as autoscaling/v1 are converted when read.

pub mod conversion;
mod v1;
pub mod validation;

use chrono::{DateTime, Utc};
use k8s_openapi::api::autoscaling::v2;
use serde_json::{json, Value};

use crate::api::patch::ListStrategy;
use crate::api::resources::{schema_of, ResourceInfo, Storage};
use crate::api::strategy::{Part, Typed, TypedStrategy};
use crate::api::table;
use crate::api::validation::FieldError;

pub use v1::V1;

pub static INFO: ResourceInfo = ResourceInfo {
    group: "autoscaling",
    version: "v2",
    name: "horizontalpodautoscalers",
    singular: "horizontalpodautoscaler",
    kind: "HorizontalPodAutoscaler",
    namespaced: true,
    short_names: &["hpa"],
    subresources: &["status"],
    has_status_subresource: true,
    field_selectors: &[],
    categories: &["all"],
    schema: Some(schema_of::<v2::HorizontalPodAutoscaler>),
    strategy: &Typed(HpaStrategy),
    storage: Storage::Stored,
};

pub const API_VERSION: &str = "autoscaling/v2";

#[derive(Debug)]
pub struct HpaStrategy;

/// The scale-up rules an HPA with a `behavior` gets for what it leaves out: no
/// stabilization, at most 4 pods or 100% more per 15 s, whichever is more.
pub fn default_scale_up() -> v2::HPAScalingRules {
    v2::HPAScalingRules {
        stabilization_window_seconds: Some(0),
        select_policy: Some("Max".into()),
        policies: Some(vec![policy("Pods", 4, 15), policy("Percent", 100, 15)]),
        tolerance: None,
    }
}

/// The scale-down rules: 100% per 15 s. The stabilization window stays unset: it is
/// the controller's (`--horizontal-pod-autoscaler-downscale-stabilization`, 300 s).
pub fn default_scale_down() -> v2::HPAScalingRules {
    v2::HPAScalingRules {
        stabilization_window_seconds: None,
        select_policy: Some("Max".into()),
        policies: Some(vec![policy("Percent", 100, 15)]),
        tolerance: None,
    }
}

fn policy(kind: &str, value: i32, period: i32) -> v2::HPAScalingPolicy {
    v2::HPAScalingPolicy {
        type_: kind.into(),
        value,
        period_seconds: period,
    }
}

/// Fill what `given` leaves unset from `defaults` (`copyHPAScalingRules`).
fn fill(given: Option<v2::HPAScalingRules>, defaults: v2::HPAScalingRules) -> v2::HPAScalingRules {
    let Some(g) = given else { return defaults };
    v2::HPAScalingRules {
        stabilization_window_seconds: g
            .stabilization_window_seconds
            .or(defaults.stabilization_window_seconds),
        select_policy: g.select_policy.or(defaults.select_policy),
        policies: g.policies.or(defaults.policies),
        tolerance: g.tolerance.or(defaults.tolerance),
    }
}

impl TypedStrategy for HpaStrategy {
    type Object = v2::HorizontalPodAutoscaler;
    const KIND: &'static str = "HorizontalPodAutoscaler";
    const API_VERSION: &'static str = API_VERSION;

    fn default(&self, hpa: &mut v2::HorizontalPodAutoscaler) {
        let spec = &mut hpa.spec;
        spec.min_replicas.get_or_insert(1);
        if spec.metrics.as_ref().is_none_or(Vec::is_empty) {
            spec.metrics = Some(vec![v2::MetricSpec {
                type_: "Resource".into(),
                resource: Some(v2::ResourceMetricSource {
                    name: "cpu".into(),
                    target: v2::MetricTarget {
                        type_: "Utilization".into(),
                        average_utilization: Some(conversion::DEFAULT_CPU_UTILIZATION as i32),
                        ..Default::default()
                    },
                }),
                ..Default::default()
            }]);
        }
        // Only a behavior that is there is completed; none means the controller's
        // classic rules (`SetDefaults_HorizontalPodAutoscalerBehavior`).
        if let Some(b) = spec.behavior.as_mut() {
            b.scale_up = Some(fill(b.scale_up.take(), default_scale_up()));
            b.scale_down = Some(fill(b.scale_down.take(), default_scale_down()));
        }
    }

    fn prepare_for_create(&self, hpa: &mut v2::HorizontalPodAutoscaler) {
        hpa.status = Some(Default::default());
    }

    fn prepare_for_update(
        &self,
        _old: &v2::HorizontalPodAutoscaler,
        _new: &mut v2::HorizontalPodAutoscaler,
        _part: Part,
    ) {
    }

    fn validate(
        &self,
        hpa: &v2::HorizontalPodAutoscaler,
        _old: Option<&v2::HorizontalPodAutoscaler>,
    ) -> Vec<FieldError> {
        validation::validate(hpa)
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
            table::column("Reference", "string", 0, "scaleTargetRef points to the target resource to scale, and is used to the pods for which metrics should be collected, as well as to actually change the replica count."),
            table::column("Targets", "string", 0, "metrics contains the specifications for which to use to calculate the desired replica count (the maximum replica count across all metrics will be used)."),
            table::column("MinPods", "string", 0, "minReplicas is the lower limit for the number of replicas to which the autoscaler can scale down."),
            table::column("MaxPods", "string", 0, "maxReplicas is the upper limit for the number of replicas to which the autoscaler can scale up."),
            table::column("Replicas", "string", 0, "currentReplicas is current number of replicas of pods managed by this autoscaler, as last seen by the autoscaler."),
            table::age_column(),
        ]
    }

    fn cells(
        &self,
        hpa: &v2::HorizontalPodAutoscaler,
        raw: &Value,
        now: DateTime<Utc>,
    ) -> Vec<Value> {
        let spec = hpa.spec.clone();
        let status = hpa.status.clone().unwrap_or_default();
        let reference = format!(
            "{}/{}",
            spec.scale_target_ref.kind, spec.scale_target_ref.name
        );
        let min_pods = spec
            .min_replicas
            .map_or_else(|| "<unset>".to_string(), |m| m.to_string());
        vec![
            table::name(raw),
            json!(reference),
            json!(format_metrics(
                spec.metrics.as_deref().unwrap_or_default(),
                status.current_metrics.as_deref().unwrap_or_default()
            )),
            json!(min_pods),
            json!(spec.max_replicas),
            json!(status.current_replicas.unwrap_or(0)),
            table::age(raw, now),
        ]
    }

    fn upgrade_stored(&self, raw: &Value) -> Option<Value> {
        (raw.get("apiVersion").and_then(Value::as_str) == Some("autoscaling/v1"))
            .then(|| conversion::to_v2(raw))
    }
}

const UNKNOWN: &str = "<unknown>";

fn percent(p: Option<i32>) -> Option<String> {
    p.map(|p| format!("{p}%"))
}

/// The TARGETS cell, as kube-apiserver's `formatHPAMetrics` writes it: each metric's
/// current value (the status at the same index) over its target, two at most.
pub fn format_metrics(specs: &[v2::MetricSpec], statuses: &[v2::MetricStatus]) -> String {
    if specs.is_empty() {
        return "<none>".into();
    }
    const SHOWN: usize = 2;
    let list: Vec<String> = specs
        .iter()
        .enumerate()
        .map(|(i, spec)| {
            let status = statuses.get(i);
            let q = |q: Option<&k8s_openapi::apimachinery::pkg::api::resource::Quantity>| {
                q.map_or_else(|| UNKNOWN.to_string(), |q| q.0.clone())
            };
            let target_q = |q: Option<&k8s_openapi::apimachinery::pkg::api::resource::Quantity>| {
                q.map(|q| q.0.clone()).unwrap_or_default()
            };
            match spec.type_.as_str() {
                "Resource" | "ContainerResource" => {
                    let (name, target, current) = match spec.type_.as_str() {
                        "Resource" => {
                            let s = spec.resource.clone().unwrap_or_default();
                            let c = status
                                .and_then(|st| st.resource.as_ref())
                                .map(|r| r.current.clone());
                            (s.name, s.target, c)
                        }
                        _ => {
                            let s = spec.container_resource.clone().unwrap_or_default();
                            let c = status
                                .and_then(|st| st.container_resource.as_ref())
                                .map(|r| r.current.clone());
                            (s.name, s.target, c)
                        }
                    };
                    if target.average_value.is_some() {
                        let current = q(current.as_ref().and_then(|c| c.average_value.as_ref()));
                        format!(
                            "{name}: {current}/{}",
                            target_q(target.average_value.as_ref())
                        )
                    } else {
                        let current = percent(current.and_then(|c| c.average_utilization))
                            .unwrap_or_else(|| UNKNOWN.into());
                        let target =
                            percent(target.average_utilization).unwrap_or_else(|| "<auto>".into());
                        format!("{name}: {current}/{target}")
                    }
                }
                "Pods" => {
                    let t = spec.pods.as_ref().map(|p| &p.target);
                    let c = status.and_then(|s| s.pods.as_ref()).map(|p| &p.current);
                    format!(
                        "{}/{}",
                        q(c.and_then(|c| c.average_value.as_ref())),
                        target_q(t.and_then(|t| t.average_value.as_ref()))
                    )
                }
                "Object" | "External" => {
                    let (t, c) = match spec.type_.as_str() {
                        "Object" => (
                            spec.object.as_ref().map(|o| &o.target),
                            status.and_then(|s| s.object.as_ref()).map(|o| &o.current),
                        ),
                        _ => (
                            spec.external.as_ref().map(|e| &e.target),
                            status.and_then(|s| s.external.as_ref()).map(|e| &e.current),
                        ),
                    };
                    match t.and_then(|t| t.average_value.as_ref()) {
                        Some(avg) => format!(
                            "{}/{} (avg)",
                            q(c.and_then(|c| c.average_value.as_ref())),
                            avg.0
                        ),
                        None => format!(
                            "{}/{}",
                            q(c.and_then(|c| c.value.as_ref())),
                            target_q(t.and_then(|t| t.value.as_ref()))
                        ),
                    }
                }
                _ => "<unknown type>".into(),
            }
        })
        .collect();
    let more = list.len().saturating_sub(SHOWN);
    let shown = list[..list.len().min(SHOWN)].join(", ");
    if more > 0 {
        format!("{shown} + {more} more...")
    } else {
        shown
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::validation::validate_object;

    fn hpa() -> Value {
        json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                "maxReplicas": 5}})
    }

    fn defaulted(mut h: Value) -> Value {
        INFO.strategy.default(&mut h);
        h
    }

    #[test]
    fn defaults_are_one_replica_and_80_percent_cpu_and_idempotent() {
        let h = defaulted(hpa());
        assert_eq!(h["spec"]["minReplicas"], 1);
        assert_eq!(
            h["spec"]["metrics"],
            json!([{"type": "Resource", "resource": {"name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": 80}}}])
        );
        assert!(h["spec"].get("behavior").is_none());
        assert_eq!(defaulted(h.clone()), h);
        assert!(validate_object(&INFO, &h, None).is_empty());
    }

    #[test]
    fn a_behavior_is_completed_with_kubernetes_defaults() {
        let mut h = hpa();
        h["spec"]["behavior"] = json!({"scaleUp": {"policies": [
            {"type": "Pods", "value": 1, "periodSeconds": 30}]}});
        let h = defaulted(h);
        let b = &h["spec"]["behavior"];
        assert_eq!(
            b["scaleUp"],
            json!({"stabilizationWindowSeconds": 0, "selectPolicy": "Max",
                "policies": [{"type": "Pods", "value": 1, "periodSeconds": 30}]})
        );
        assert_eq!(
            b["scaleDown"],
            json!({"selectPolicy": "Max",
                "policies": [{"type": "Percent", "value": 100, "periodSeconds": 15}]})
        );
        let mut empty = hpa();
        empty["spec"]["behavior"] = json!({});
        let empty = defaulted(empty);
        assert_eq!(
            empty["spec"]["behavior"]["scaleUp"]["policies"],
            json!([{"type": "Pods", "value": 4, "periodSeconds": 15},
                {"type": "Percent", "value": 100, "periodSeconds": 15}])
        );
    }

    #[test]
    fn the_table_shows_targets_as_kube_apiserver_prints_them() {
        let mut h = defaulted(hpa());
        h["spec"]["metrics"] = json!([
            {"type": "Resource", "resource": {"name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": 50}}},
            {"type": "Resource", "resource": {"name": "memory",
                "target": {"type": "AverageValue", "averageValue": "100Mi"}}},
        ]);
        let cells = INFO.strategy.cells(&h, Utc::now());
        assert_eq!(cells[1], "Deployment/web");
        assert_eq!(cells[2], "cpu: <unknown>/50%, memory: <unknown>/100Mi");
        assert_eq!((cells[3].clone(), cells[4].clone()), (json!("1"), json!(5)));
        h["status"] = json!({"currentReplicas": 2, "desiredReplicas": 2, "currentMetrics": [
            {"type": "Resource", "resource": {"name": "cpu",
                "current": {"averageUtilization": 45, "averageValue": "45m"}}},
            {"type": "Resource", "resource": {"name": "memory",
                "current": {"averageValue": "10485760"}}}]});
        let cells = INFO.strategy.cells(&h, Utc::now());
        assert_eq!(cells[2], "cpu: 45%/50%, memory: 10485760/100Mi");
        assert_eq!(cells[5], 2);
        let mut three = h.clone();
        three["spec"]["metrics"]
            .as_array_mut()
            .expect("metrics")
            .push(
                json!({"type": "ContainerResource", "containerResource": {"name": "cpu",
                "container": "app", "target": {"type": "Utilization", "averageUtilization": 60}}}),
            );
        assert_eq!(
            INFO.strategy.cells(&three, Utc::now())[2],
            "cpu: 45%/50%, memory: 10485760/100Mi + 1 more..."
        );
        assert_eq!(cells.len(), INFO.strategy.columns().len());
    }

    #[test]
    fn an_hpa_an_earlier_skiff_stored_as_v1_reads_as_v2() {
        let legacy = json!({"apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"scaleTargetRef": {"kind": "ReplicationController", "name": "web"},
                "minReplicas": 1, "maxReplicas": 3, "targetCPUUtilizationPercentage": 50},
            "status": {"currentReplicas": 1, "desiredReplicas": 1,
                "currentCPUUtilizationPercentage": 10}});
        let v2 = INFO.strategy.upgrade_stored(&legacy).expect("converted");
        assert_eq!(v2["apiVersion"], "autoscaling/v2");
        assert_eq!(
            v2["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"],
            50
        );
        assert!(INFO.strategy.upgrade_stored(&v2).is_none());
        assert!(validate_object(&INFO, &v2, None).is_empty());
        assert_eq!(INFO.strategy.cells(&v2, Utc::now())[2], "cpu: 10%/50%");
    }
}
