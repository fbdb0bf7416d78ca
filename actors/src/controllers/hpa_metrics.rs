//! The autoscaler's metrics (Kubernetes' `computeReplicasForMetric` and the resource
//! metrics client): a Resource or ContainerResource metric of an HPA read from the pods'
//! requests and the kubelets' usage samples, turned into a replica proposal and the
//! `MetricStatus` the HPA reports. Pods, Object and External metrics need a custom or
//! external metrics API, which skiff does not serve (the API refuses them; one stored
//! before is reported as failing).

use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::api::autoscaling::v2;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use serde_json::Value;

use super::pods;
use super::replica_calculator::{self as calc, PodSample, PodState, Tolerances};
use crate::api::{meta, validation};
use crate::resource_metrics::PodUsage;

/// Why one metric gave no proposal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricError {
    /// The ScalingActive reason and Event reason (`FailedGetResourceMetric`, ...).
    pub reason: &'static str,
    /// What the per-metric Event and the condition say.
    pub detail: String,
    /// The error as the FailedComputeMetricsReplicas Event quotes it.
    pub wrapped: String,
}

/// One metric's proposal: replicas, its status, and its name for messages.
pub type MetricProposal = (i32, v2::MetricStatus, String);

/// A resource amount in thousandths of its unit, as Kubernetes' `MilliValue`.
pub fn milli(q: &Quantity) -> Option<i64> {
    validation::parse_quantity(&q.0).map(|v| (v * 1000.0).round() as i64)
}

/// A milli-value as a DecimalSI quantity in its canonical form ("45m", "16777216", "2k").
pub fn milli_quantity(m: i64) -> Quantity {
    const SUFFIXES: [(i64, &str); 7] = [
        (1_000_000_000_000_000_000, "E"),
        (1_000_000_000_000_000, "P"),
        (1_000_000_000_000, "T"),
        (1_000_000_000, "G"),
        (1_000_000, "M"),
        (1_000, "k"),
        (1, ""),
    ];
    if m % 1000 != 0 {
        return Quantity(format!("{m}m"));
    }
    let whole = m / 1000;
    if whole == 0 {
        return Quantity("0".into());
    }
    for (scale, suffix) in SUFFIXES {
        if whole % scale == 0 {
            return Quantity(format!("{}{suffix}", whole / scale));
        }
    }
    Quantity(whole.to_string())
}

/// How a pod takes part in measuring `resource`: CPU usage of pods that are not Ready is
/// not trusted (they may be starting), other resources only exclude Pending pods.
fn pod_state(pod: &Value, resource: &str) -> PodState {
    let phase = pod
        .pointer("/status/phase")
        .and_then(Value::as_str)
        .unwrap_or("Pending");
    if pods::is_deleting(pod) || matches!(phase, "Failed" | "Succeeded") {
        PodState::Ignored
    } else if phase == "Pending" || (resource == "cpu" && !pods::is_ready(pod)) {
        PodState::Unready
    } else {
        PodState::Ready
    }
}

/// The pod's request of `resource` in milli-units, over its containers (or the one
/// named), sidecars included; `Err` names the first container without one.
fn request_milli(pod: &Value, resource: &str, container: Option<&str>) -> Result<i64, String> {
    let list = |key: &str| {
        pod.pointer(&format!("/spec/{key}"))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    let sidecars = list("initContainers")
        .into_iter()
        .filter(|c| c["restartPolicy"] == "Always");
    let mut total = 0i64;
    for c in list("containers").into_iter().chain(sidecars) {
        let name = c["name"].as_str().unwrap_or_default();
        if container.is_some_and(|want| want != name) {
            continue;
        }
        let value = c
            .pointer("/resources/requests")
            .and_then(|r| r.get(resource))
            .and_then(validation::quantity_value)
            .ok_or_else(|| name.to_string())?;
        total += (value * 1000.0).round() as i64;
    }
    Ok(total)
}

/// A pod's measured usage of `resource` (milli-units), over its containers or the one
/// named; `Ok(None)` for a resource the kubelets do not measure.
fn usage_milli(
    u: &PodUsage,
    resource: &str,
    container: Option<&str>,
) -> Result<Option<i64>, String> {
    let of = |c: &crate::resource_metrics::ContainerUsage| match resource {
        "cpu" => Some((c.cpu_nanocores / 1_000_000) as i64),
        "memory" => Some(c.memory_bytes as i64 * 1000),
        _ => None,
    };
    match container {
        Some(name) => match u.containers.iter().find(|c| c.name == name) {
            Some(c) => Ok(of(c)),
            None => Err(format!(
                "container {name} not present in metrics for pod {}/{}",
                u.namespace, u.name
            )),
        },
        None => Ok(u.containers.iter().map(of).sum()),
    }
}

/// One metric's proposal (`computeReplicasForMetric`).
pub fn compute_metric(
    m: &v2::MetricSpec,
    current: i32,
    pods: &[Arc<Value>],
    usage: &HashMap<String, PodUsage>,
    tolerances: Tolerances,
) -> Result<MetricProposal, MetricError> {
    let (resource, container, target) = match (m.type_.as_str(), &m.resource, &m.container_resource)
    {
        ("Resource", Some(r), _) => (r.name.as_str(), None, &r.target),
        ("ContainerResource", _, Some(c)) => {
            (c.name.as_str(), Some(c.container.as_str()), &c.target)
        }
        (kind @ ("Pods" | "Object" | "External"), _, _) => {
            let detail = format!(
                "{kind} metrics need the custom or external metrics API, which this server does not serve"
            );
            return Err(MetricError {
                reason: match kind {
                    "Pods" => "FailedGetPodsMetric",
                    "Object" => "FailedGetObjectMetric",
                    _ => "FailedGetExternalMetric",
                },
                wrapped: format!(
                    "failed to get {} metric value: {detail}",
                    kind.to_lowercase()
                ),
                detail,
            });
        }
        (kind, _, _) => {
            let detail = format!("unknown metric source type \"{kind}\"");
            return Err(MetricError {
                reason: "InvalidMetricSourceType",
                wrapped: detail.clone(),
                detail,
            });
        }
    };
    let (reason, wrap) = match container {
        None => (
            "FailedGetResourceMetric",
            format!("failed to get {resource} resource metric value"),
        ),
        Some(c) => (
            "FailedGetContainerResourceMetric",
            format!("failed to get {c} container metric value"),
        ),
    };
    let fail = |detail: String| MetricError {
        reason,
        wrapped: format!("{wrap}: {detail}"),
        detail,
    };
    let kind_word = if container.is_some() {
        "container resource"
    } else {
        "resource"
    };
    let samples = samples(resource, container, pods, usage);
    let status = |current: v2::MetricValueStatus| match container {
        None => v2::MetricStatus {
            type_: "Resource".into(),
            resource: Some(v2::ResourceMetricStatus {
                name: resource.into(),
                current,
            }),
            ..Default::default()
        },
        Some(c) => v2::MetricStatus {
            type_: "ContainerResource".into(),
            container_resource: Some(v2::ContainerResourceMetricStatus {
                name: resource.into(),
                container: c.into(),
                current,
            }),
            ..Default::default()
        },
    };
    if let Some(avg) = &target.average_value {
        let target_milli = milli(avg).unwrap_or(0);
        let samples = samples.map_err(|e| fail(format!("failed to get {resource} usage: {e}")))?;
        let (replicas, average) =
            calc::average_value_replicas(current, target_milli, &samples, tolerances)
                .map_err(|e| fail(format!("failed to get {resource} usage: {e}")))?;
        let current = v2::MetricValueStatus {
            average_value: Some(milli_quantity(average)),
            ..Default::default()
        };
        return Ok((replicas, status(current), format!("{resource} {kind_word}")));
    }
    let Some(percent) = target.average_utilization else {
        return Err(fail("invalid resource metric source: neither an average utilization target nor an average value (usage) target was set".into()));
    };
    let samples =
        samples.map_err(|e| fail(format!("failed to get {resource} utilization: {e}")))?;
    let p = calc::utilization_replicas(resource, current, percent, &samples, tolerances)
        .map_err(|e| fail(format!("failed to get {resource} utilization: {e}")))?;
    let current = v2::MetricValueStatus {
        average_utilization: Some(p.utilization),
        average_value: Some(milli_quantity(p.average)),
        ..Default::default()
    };
    Ok((
        p.replicas,
        status(current),
        format!("{resource} {kind_word} utilization (percentage of request)"),
    ))
}

/// The target's pods with their requests and measured usage of `resource`.
fn samples(
    resource: &str,
    container: Option<&str>,
    pods: &[Arc<Value>],
    usage: &HashMap<String, PodUsage>,
) -> Result<Vec<PodSample>, String> {
    let unable = |why: String| format!("unable to get metrics for resource {resource}: {why}");
    if usage.is_empty() {
        return Err(unable(
            "no metrics returned from resource metrics API".into(),
        ));
    }
    pods.iter()
        .map(|p| {
            let name = meta::name(p).unwrap_or_default().to_string();
            let uid = meta::uid(p).unwrap_or_default();
            // Usage of an earlier pod of the same name is not this pod's.
            let measured = match usage.get(&name).filter(|u| u.uid == uid) {
                Some(u) => usage_milli(u, resource, container).map_err(unable)?,
                None => None,
            };
            Ok(PodSample {
                state: pod_state(p, resource),
                request: request_milli(p, resource, container),
                usage: measured,
                name,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource_metrics::ContainerUsage;
    use chrono::Utc;
    use serde_json::json;
    use std::collections::BTreeMap;
    use std::time::Duration;

    fn usage(containers: &[(&str, u64, u64)]) -> PodUsage {
        PodUsage {
            namespace: "default".into(),
            name: "web-1".into(),
            uid: "u1".into(),
            labels: BTreeMap::new(),
            containers: containers
                .iter()
                .map(|(n, cpu_millis, mem)| ContainerUsage {
                    name: (*n).into(),
                    cpu_nanocores: cpu_millis * 1_000_000,
                    memory_bytes: *mem,
                    ..Default::default()
                })
                .collect(),
            timestamp: Utc::now(),
            window: Duration::from_secs(5),
        }
    }

    fn pod(containers: Value) -> Value {
        json!({"metadata": {"name": "web-1", "uid": "u1"},
            "spec": {"containers": containers},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}})
    }

    #[test]
    fn requests_add_up_over_containers_and_sidecars_and_name_the_one_missing() {
        let p = json!({"spec": {"containers": [
            {"name": "a", "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}},
            {"name": "b", "resources": {"requests": {"cpu": "0.5"}}}],
            "initContainers": [{"name": "side", "restartPolicy": "Always",
                "resources": {"requests": {"cpu": "50m"}}},
                {"name": "init", "resources": {}}]}});
        assert_eq!(request_milli(&p, "cpu", None), Ok(650));
        assert_eq!(request_milli(&p, "cpu", Some("b")), Ok(500));
        assert_eq!(
            request_milli(&p, "memory", Some("a")),
            Ok(64 * 1024 * 1024 * 1000)
        );
        assert_eq!(request_milli(&p, "memory", None), Err("b".to_string()));
    }

    #[test]
    fn usage_is_summed_or_taken_from_the_named_container() {
        let u = usage(&[("app", 200, 10 << 20), ("side", 50, 1 << 20)]);
        assert_eq!(usage_milli(&u, "cpu", None), Ok(Some(250)));
        assert_eq!(
            usage_milli(&u, "memory", Some("side")),
            Ok(Some((1 << 20) * 1000))
        );
        assert_eq!(usage_milli(&u, "ephemeral-storage", None), Ok(None));
        assert!(usage_milli(&u, "cpu", Some("gone"))
            .unwrap_err()
            .contains("container gone not present in metrics for pod default/web-1"));
    }

    #[test]
    fn memory_counts_pods_that_are_not_ready_cpu_does_not() {
        let starting = json!({"status": {"phase": "Running",
            "conditions": [{"type": "Ready", "status": "False"}]}});
        assert_eq!(pod_state(&starting, "cpu"), PodState::Unready);
        assert_eq!(pod_state(&starting, "memory"), PodState::Ready);
        assert_eq!(pod_state(&json!({}), "memory"), PodState::Unready);
        let deleting = json!({"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z"},
            "status": {"phase": "Running"}});
        assert_eq!(pod_state(&deleting, "cpu"), PodState::Ignored);
    }

    #[test]
    fn quantities_are_written_in_kubernetes_canonical_decimal_form() {
        assert_eq!(milli_quantity(45).0, "45m");
        assert_eq!(milli_quantity(16_777_216_000).0, "16777216");
        assert_eq!(milli_quantity(2_000_000).0, "2k");
        assert_eq!(milli_quantity(0).0, "0");
        assert_eq!(milli(&Quantity("100Mi".into())), Some(104_857_600_000));
    }

    fn metric(json: Value) -> v2::MetricSpec {
        serde_json::from_value(json).expect("metric")
    }

    #[test]
    fn a_memory_average_value_metric_proposes_replicas_and_reports_its_status() {
        let pods = vec![Arc::new(pod(json!([{"name": "app"}])))];
        let usage: HashMap<_, _> = [("web-1".to_string(), usage(&[("app", 0, 200 << 20)]))].into();
        let m = metric(json!({"type": "Resource", "resource": {"name": "memory",
            "target": {"type": "AverageValue", "averageValue": "100Mi"}}}));
        let (replicas, status, name) =
            compute_metric(&m, 1, &pods, &usage, Tolerances::default()).expect("ok");
        assert_eq!(replicas, 2);
        assert_eq!(name, "memory resource");
        let current = status.resource.expect("resource").current;
        assert_eq!(current.average_value, Some(Quantity("209715200".into())));
        assert_eq!(current.average_utilization, None);
    }

    #[test]
    fn a_container_cpu_utilization_uses_only_that_container() {
        let pods = vec![Arc::new(pod(json!([
            {"name": "app", "resources": {"requests": {"cpu": "100m"}}},
            {"name": "side"}])))];
        let usage: HashMap<_, _> = [(
            "web-1".to_string(),
            usage(&[("app", 150, 0), ("side", 900, 0)]),
        )]
        .into();
        let m = metric(
            json!({"type": "ContainerResource", "containerResource": {"name": "cpu",
            "container": "app", "target": {"type": "Utilization", "averageUtilization": 50}}}),
        );
        let (replicas, status, name) =
            compute_metric(&m, 1, &pods, &usage, Tolerances::default()).expect("ok");
        assert_eq!(replicas, 3);
        assert_eq!(
            name,
            "cpu container resource utilization (percentage of request)"
        );
        let c = status.container_resource.expect("container");
        assert_eq!(
            (c.container.as_str(), c.current.average_utilization),
            ("app", Some(150))
        );
        // The whole pod would fail: its sidecar has no request.
        let whole = metric(json!({"type": "Resource", "resource": {"name": "cpu",
            "target": {"type": "Utilization", "averageUtilization": 50}}}));
        let err = compute_metric(&whole, 1, &pods, &usage, Tolerances::default()).unwrap_err();
        assert_eq!(err.reason, "FailedGetResourceMetric");
        assert_eq!(
            err.detail,
            "failed to get cpu utilization: missing request for cpu in container side of Pod web-1"
        );
        assert!(err
            .wrapped
            .starts_with("failed to get cpu resource metric value: "));
    }

    #[test]
    fn no_usage_at_all_is_said_as_the_metrics_api_says_it() {
        let pods = vec![Arc::new(pod(json!([{"name": "app"}])))];
        let m = metric(json!({"type": "Resource", "resource": {"name": "memory",
            "target": {"type": "AverageValue", "averageValue": "1Mi"}}}));
        let err = compute_metric(&m, 1, &pods, &HashMap::new(), Tolerances::default()).unwrap_err();
        assert_eq!(
            err.detail,
            "failed to get memory usage: unable to get metrics for resource memory: no metrics returned from resource metrics API"
        );
    }
}
