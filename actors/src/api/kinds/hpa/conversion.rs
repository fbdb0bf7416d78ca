//! autoscaling/v1 <-> autoscaling/v2, as kube-apiserver converts them
//! (`pkg/apis/autoscaling/v1/conversion.go`): v1 has one CPU utilisation target, so
//! whatever v2 says beyond it travels in annotations of the v1 object and comes back when
//! a v1 client writes the object again:
//!
//! - `autoscaling.alpha.kubernetes.io/metrics`: the metrics other than a CPU utilisation
//!   target, in v1's (v2beta1-shaped) `MetricSpec` form;
//! - `autoscaling.alpha.kubernetes.io/current-metrics`: every current metric, in v1's
//!   `MetricStatus` form (the CPU one too, for its raw value);
//! - `autoscaling.alpha.kubernetes.io/conditions`: the status conditions;
//! - `autoscaling.alpha.kubernetes.io/behavior`: the scaling behavior, in v2's form.
//!
//! The stored form is v2 and never carries these annotations.

use serde_json::{json, Map, Value};

pub const METRICS_ANNOTATION: &str = "autoscaling.alpha.kubernetes.io/metrics";
pub const CURRENT_METRICS_ANNOTATION: &str = "autoscaling.alpha.kubernetes.io/current-metrics";
pub const CONDITIONS_ANNOTATION: &str = "autoscaling.alpha.kubernetes.io/conditions";
pub const BEHAVIOR_ANNOTATION: &str = "autoscaling.alpha.kubernetes.io/behavior";

const ROUND_TRIP: [&str; 4] = [
    METRICS_ANNOTATION,
    CURRENT_METRICS_ANNOTATION,
    CONDITIONS_ANNOTATION,
    BEHAVIOR_ANNOTATION,
];

/// The CPU utilisation target an HPA has when it names none (`DefaultCPUUtilization`).
pub const DEFAULT_CPU_UTILIZATION: i64 = 80;

/// Copy `keys` that are present in `from` into `to`.
fn copy(from: &Value, to: &mut Map<String, Value>, keys: &[&str]) {
    for k in keys {
        if let Some(v) = from.get(*k).filter(|v| !v.is_null()) {
            to.insert((*k).to_string(), v.clone());
        }
    }
}

fn rename(from: &Value, to: &mut Map<String, Value>, pairs: &[(&str, &str)]) {
    for (src, dst) in pairs {
        if let Some(v) = from.get(*src).filter(|v| !v.is_null()) {
            to.insert((*dst).to_string(), v.clone());
        }
    }
}

fn is_cpu_utilization_target(m: &Value) -> bool {
    m["type"] == "Resource"
        && m["resource"]["name"] == "cpu"
        && m["resource"]["target"]["averageUtilization"].is_i64()
}

/// The object's annotations without the round-trip ones, and those parsed.
fn split_annotations(meta: &Value) -> (Map<String, Value>, Map<String, Value>) {
    let mut kept = meta
        .get("annotations")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let mut carried = Map::new();
    for k in ROUND_TRIP {
        if let Some(v) = kept.remove(k) {
            carried.insert(k.to_string(), v);
        }
    }
    (kept, carried)
}

fn with_annotations(meta: &Value, annotations: Map<String, Value>) -> Value {
    let mut meta = meta.as_object().cloned().unwrap_or_default();
    if annotations.is_empty() {
        meta.remove("annotations");
    } else {
        meta.insert("annotations".into(), Value::Object(annotations));
    }
    Value::Object(meta)
}

/// A round-trip annotation's JSON, if it parses.
fn parsed(carried: &Map<String, Value>, key: &str) -> Option<Value> {
    carried
        .get(key)
        .and_then(Value::as_str)
        .and_then(|s| serde_json::from_str(s).ok())
}

/// The round-trip annotations of a v1 object that do not parse, by key: a v1 create
/// with one of them is refused rather than having it dropped.
pub fn unparseable_annotations(v1: &Value) -> Vec<&'static str> {
    let (_, carried) = split_annotations(v1.get("metadata").unwrap_or(&Value::Null));
    ROUND_TRIP
        .into_iter()
        .filter(|k| carried.contains_key(*k) && parsed(&carried, k).is_none())
        .collect()
}

// ---------------------------------------------------------------------------
// v2 -> v1
// ---------------------------------------------------------------------------

/// The v1 form of a v2 HPA.
pub fn to_v1(v2: &Value) -> Value {
    let meta = v2.get("metadata").cloned().unwrap_or(json!({}));
    let (mut annotations, _) = split_annotations(&meta);
    let spec = v2.get("spec").unwrap_or(&Value::Null);
    let metrics = spec["metrics"].as_array().cloned().unwrap_or_default();

    let mut v1_spec = Map::new();
    copy(
        spec,
        &mut v1_spec,
        &["scaleTargetRef", "minReplicas", "maxReplicas"],
    );
    // The first CPU resource metric is v1's target, if it is a utilisation.
    if let Some(cpu) = metrics
        .iter()
        .find(|m| m["type"] == "Resource" && m["resource"]["name"] == "cpu")
    {
        if let Some(u) = cpu["resource"]["target"]["averageUtilization"].as_i64() {
            v1_spec.insert("targetCPUUtilizationPercentage".into(), json!(u));
        }
    }
    let others: Vec<Value> = metrics
        .iter()
        .filter(|m| !is_cpu_utilization_target(m))
        .map(metric_spec_to_v1)
        .collect();
    if !others.is_empty() {
        annotations.insert(METRICS_ANNOTATION.into(), json!(json!(others).to_string()));
    }
    if let Some(b) = spec.get("behavior").filter(|b| !b.is_null()) {
        annotations.insert(BEHAVIOR_ANNOTATION.into(), json!(b.to_string()));
    }

    let mut out = Map::new();
    out.insert("apiVersion".into(), json!("autoscaling/v1"));
    out.insert("kind".into(), json!("HorizontalPodAutoscaler"));
    if let Some(status) = v2.get("status").filter(|s| s.is_object()) {
        let current = status["currentMetrics"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let conditions = status["conditions"].as_array().cloned().unwrap_or_default();
        let mut v1_status = Map::new();
        copy(
            status,
            &mut v1_status,
            &["observedGeneration", "lastScaleTime"],
        );
        v1_status.insert(
            "currentReplicas".into(),
            json!(status["currentReplicas"].as_i64().unwrap_or(0)),
        );
        v1_status.insert(
            "desiredReplicas".into(),
            json!(status["desiredReplicas"].as_i64().unwrap_or(0)),
        );
        if let Some(u) = current
            .iter()
            .find(|m| m["type"] == "Resource" && m["resource"]["name"] == "cpu")
            .and_then(|m| m["resource"]["current"]["averageUtilization"].as_i64())
        {
            v1_status.insert("currentCPUUtilizationPercentage".into(), json!(u));
        }
        if !current.is_empty() {
            let v1: Vec<Value> = current.iter().map(metric_status_to_v1).collect();
            annotations.insert(
                CURRENT_METRICS_ANNOTATION.into(),
                json!(json!(v1).to_string()),
            );
        }
        if !conditions.is_empty() {
            annotations.insert(
                CONDITIONS_ANNOTATION.into(),
                json!(json!(conditions).to_string()),
            );
        }
        out.insert("metadata".into(), with_annotations(&meta, annotations));
        out.insert("spec".into(), Value::Object(v1_spec));
        out.insert("status".into(), Value::Object(v1_status));
    } else {
        out.insert("metadata".into(), with_annotations(&meta, annotations));
        out.insert("spec".into(), Value::Object(v1_spec));
    }
    Value::Object(out)
}

/// A v2 `MetricTarget` as v1's `target*` fields of a source.
fn target_to_v1(target: &Value, out: &mut Map<String, Value>, names: [&str; 3]) {
    let [utilization, average, value] = names;
    if !utilization.is_empty() {
        rename(target, out, &[("averageUtilization", utilization)]);
    }
    rename(target, out, &[("averageValue", average)]);
    if !value.is_empty() {
        rename(target, out, &[("value", value)]);
    }
}

fn metric_spec_to_v1(m: &Value) -> Value {
    let kind = m["type"].as_str().unwrap_or_default();
    let mut out = Map::new();
    out.insert("type".into(), json!(kind));
    let mut src = Map::new();
    let (field, from) = match kind {
        "Resource" => {
            let r = &m["resource"];
            copy(r, &mut src, &["name"]);
            target_to_v1(
                &r["target"],
                &mut src,
                ["targetAverageUtilization", "targetAverageValue", ""],
            );
            ("resource", r)
        }
        "ContainerResource" => {
            let r = &m["containerResource"];
            copy(r, &mut src, &["name", "container"]);
            target_to_v1(
                &r["target"],
                &mut src,
                ["targetAverageUtilization", "targetAverageValue", ""],
            );
            ("containerResource", r)
        }
        "Pods" => {
            let p = &m["pods"];
            rename(
                &p["metric"],
                &mut src,
                &[("name", "metricName"), ("selector", "selector")],
            );
            target_to_v1(&p["target"], &mut src, ["", "targetAverageValue", ""]);
            ("pods", p)
        }
        "Object" => {
            let o = &m["object"];
            rename(o, &mut src, &[("describedObject", "target")]);
            rename(
                &o["metric"],
                &mut src,
                &[("name", "metricName"), ("selector", "selector")],
            );
            target_to_v1(&o["target"], &mut src, ["", "averageValue", "targetValue"]);
            ("object", o)
        }
        "External" => {
            let e = &m["external"];
            rename(
                &e["metric"],
                &mut src,
                &[("name", "metricName"), ("selector", "metricSelector")],
            );
            target_to_v1(
                &e["target"],
                &mut src,
                ["", "targetAverageValue", "targetValue"],
            );
            ("external", e)
        }
        _ => return m.clone(),
    };
    if !from.is_null() {
        out.insert(field.into(), Value::Object(src));
    }
    Value::Object(out)
}

fn metric_status_to_v1(m: &Value) -> Value {
    let kind = m["type"].as_str().unwrap_or_default();
    let mut out = Map::new();
    out.insert("type".into(), json!(kind));
    let mut src = Map::new();
    let current = |from: &Value, src: &mut Map<String, Value>, names: [&str; 3]| {
        let c = &from["current"];
        let [utilization, average, value] = names;
        for (k, dst) in [
            ("averageUtilization", utilization),
            ("averageValue", average),
            ("value", value),
        ] {
            if !dst.is_empty() {
                rename(c, src, &[(k, dst)]);
            }
        }
    };
    let (field, from) = match kind {
        "Resource" => {
            let r = &m["resource"];
            copy(r, &mut src, &["name"]);
            current(
                r,
                &mut src,
                ["currentAverageUtilization", "currentAverageValue", ""],
            );
            ("resource", r)
        }
        "ContainerResource" => {
            let r = &m["containerResource"];
            copy(r, &mut src, &["name", "container"]);
            current(
                r,
                &mut src,
                ["currentAverageUtilization", "currentAverageValue", ""],
            );
            ("containerResource", r)
        }
        "Pods" => {
            let p = &m["pods"];
            rename(
                &p["metric"],
                &mut src,
                &[("name", "metricName"), ("selector", "selector")],
            );
            current(p, &mut src, ["", "currentAverageValue", ""]);
            ("pods", p)
        }
        "Object" => {
            let o = &m["object"];
            rename(o, &mut src, &[("describedObject", "target")]);
            rename(
                &o["metric"],
                &mut src,
                &[("name", "metricName"), ("selector", "selector")],
            );
            current(o, &mut src, ["", "averageValue", "currentValue"]);
            ("object", o)
        }
        "External" => {
            let e = &m["external"];
            rename(
                &e["metric"],
                &mut src,
                &[("name", "metricName"), ("selector", "metricSelector")],
            );
            current(e, &mut src, ["", "currentAverageValue", "currentValue"]);
            ("external", e)
        }
        _ => return m.clone(),
    };
    if !from.is_null() {
        out.insert(field.into(), Value::Object(src));
    }
    Value::Object(out)
}

// ---------------------------------------------------------------------------
// v1 -> v2
// ---------------------------------------------------------------------------

/// The v2 (stored) form of a v1 HPA: also how an HPA an earlier skiff stored as v1 is
/// read.
pub fn to_v2(v1: &Value) -> Value {
    let meta = v1.get("metadata").cloned().unwrap_or(json!({}));
    let (annotations, carried) = split_annotations(&meta);
    // An annotation that does not parse stays an annotation: nothing is dropped unseen.
    let mut kept = annotations;
    for k in ROUND_TRIP {
        if carried.contains_key(k) && parsed(&carried, k).is_none() {
            kept.insert(k.to_string(), carried[k].clone());
        }
    }
    let spec = v1.get("spec").unwrap_or(&Value::Null);
    let mut v2_spec = Map::new();
    copy(
        spec,
        &mut v2_spec,
        &["scaleTargetRef", "minReplicas", "maxReplicas"],
    );
    let mut metrics = Vec::new();
    if let Some(u) = spec["targetCPUUtilizationPercentage"].as_i64() {
        metrics.push(cpu_utilization(u));
    }
    if let Some(Value::Array(others)) = parsed(&carried, METRICS_ANNOTATION) {
        metrics.extend(others.iter().map(metric_spec_to_v2));
    }
    // v1's implicit default, made explicit as kube-apiserver does in this conversion.
    if metrics.is_empty() {
        metrics.push(cpu_utilization(DEFAULT_CPU_UTILIZATION));
    }
    v2_spec.insert("metrics".into(), json!(metrics));
    if let Some(b) = parsed(&carried, BEHAVIOR_ANNOTATION).filter(Value::is_object) {
        v2_spec.insert("behavior".into(), b);
    }

    let mut out = Map::new();
    out.insert("apiVersion".into(), json!("autoscaling/v2"));
    out.insert("kind".into(), json!("HorizontalPodAutoscaler"));
    out.insert("metadata".into(), with_annotations(&meta, kept));
    out.insert("spec".into(), Value::Object(v2_spec));
    if let Some(status) = v1.get("status").filter(|s| s.is_object()) {
        let mut v2_status = Map::new();
        copy(
            status,
            &mut v2_status,
            &["observedGeneration", "lastScaleTime", "currentReplicas"],
        );
        v2_status.insert(
            "desiredReplicas".into(),
            json!(status["desiredReplicas"].as_i64().unwrap_or(0)),
        );
        // The annotation has more than the percentage (the raw value too): it wins.
        let current = match parsed(&carried, CURRENT_METRICS_ANNOTATION) {
            Some(Value::Array(ms)) => Some(ms.iter().map(metric_status_to_v2).collect()),
            _ => status["currentCPUUtilizationPercentage"].as_i64().map(|u| {
                vec![json!({"type": "Resource", "resource": {"name": "cpu",
                    "current": {"averageUtilization": u}}})]
            }),
        };
        if let Some(current) = current {
            v2_status.insert("currentMetrics".into(), Value::Array(current));
        }
        if let Some(Value::Array(conds)) = parsed(&carried, CONDITIONS_ANNOTATION) {
            v2_status.insert("conditions".into(), Value::Array(conds));
        }
        out.insert("status".into(), Value::Object(v2_status));
    }
    Value::Object(out)
}

fn cpu_utilization(percent: i64) -> Value {
    json!({"type": "Resource", "resource": {"name": "cpu",
        "target": {"type": "Utilization", "averageUtilization": percent}}})
}

/// v1's `target*` fields of a source as a v2 `MetricTarget`; the type follows from which
/// one is set, as the generated conversion decides it.
fn target_to_v2(src: &Value, utilization: &str, average: &str, value: &str) -> Value {
    let mut t = Map::new();
    if let Some(v) = src.get(value).filter(|v| !value.is_empty() && !v.is_null()) {
        t.insert("type".into(), json!("Value"));
        t.insert("value".into(), v.clone());
    }
    if let Some(v) = src.get(average).filter(|v| !v.is_null()) {
        t.insert("type".into(), json!("AverageValue"));
        t.insert("averageValue".into(), v.clone());
    }
    if let Some(v) = src
        .get(utilization)
        .filter(|v| !utilization.is_empty() && !v.is_null())
    {
        t.insert("type".into(), json!("Utilization"));
        t.insert("averageUtilization".into(), v.clone());
    }
    Value::Object(t)
}

fn identifier(src: &Value, selector_key: &str) -> Value {
    let mut id = Map::new();
    rename(
        src,
        &mut id,
        &[("metricName", "name"), (selector_key, "selector")],
    );
    Value::Object(id)
}

fn metric_spec_to_v2(m: &Value) -> Value {
    let kind = m["type"].as_str().unwrap_or_default();
    let (field, body) = match kind {
        "Resource" => {
            let r = &m["resource"];
            let mut s = Map::new();
            copy(r, &mut s, &["name"]);
            s.insert(
                "target".into(),
                target_to_v2(r, "targetAverageUtilization", "targetAverageValue", ""),
            );
            ("resource", Value::Object(s))
        }
        "ContainerResource" => {
            let r = &m["containerResource"];
            let mut s = Map::new();
            copy(r, &mut s, &["name", "container"]);
            s.insert(
                "target".into(),
                target_to_v2(r, "targetAverageUtilization", "targetAverageValue", ""),
            );
            ("containerResource", Value::Object(s))
        }
        "Pods" => {
            let p = &m["pods"];
            (
                "pods",
                json!({"metric": identifier(p, "selector"),
                    "target": target_to_v2(p, "", "targetAverageValue", "")}),
            )
        }
        "Object" => {
            let o = &m["object"];
            let mut s = Map::new();
            rename(o, &mut s, &[("target", "describedObject")]);
            s.insert("metric".into(), identifier(o, "selector"));
            s.insert(
                "target".into(),
                target_to_v2(o, "", "averageValue", "targetValue"),
            );
            ("object", Value::Object(s))
        }
        "External" => {
            let e = &m["external"];
            (
                "external",
                json!({"metric": identifier(e, "metricSelector"),
                    "target": target_to_v2(e, "", "targetAverageValue", "targetValue")}),
            )
        }
        _ => return m.clone(),
    };
    let mut out = Map::new();
    out.insert("type".into(), json!(kind));
    if !m[field].is_null() {
        out.insert(field.into(), body);
    }
    Value::Object(out)
}

fn current_to_v2(src: &Value, utilization: &str, average: &str, value: &str) -> Value {
    let mut c = Map::new();
    for (k, dst) in [
        (utilization, "averageUtilization"),
        (average, "averageValue"),
        (value, "value"),
    ] {
        if !k.is_empty() {
            rename(src, &mut c, &[(k, dst)]);
        }
    }
    Value::Object(c)
}

fn metric_status_to_v2(m: &Value) -> Value {
    let kind = m["type"].as_str().unwrap_or_default();
    let (field, body) = match kind {
        "Resource" => {
            let r = &m["resource"];
            let mut s = Map::new();
            copy(r, &mut s, &["name"]);
            s.insert(
                "current".into(),
                current_to_v2(r, "currentAverageUtilization", "currentAverageValue", ""),
            );
            ("resource", Value::Object(s))
        }
        "ContainerResource" => {
            let r = &m["containerResource"];
            let mut s = Map::new();
            copy(r, &mut s, &["name", "container"]);
            s.insert(
                "current".into(),
                current_to_v2(r, "currentAverageUtilization", "currentAverageValue", ""),
            );
            ("containerResource", Value::Object(s))
        }
        "Pods" => {
            let p = &m["pods"];
            (
                "pods",
                json!({"metric": identifier(p, "selector"),
                    "current": current_to_v2(p, "", "currentAverageValue", "")}),
            )
        }
        "Object" => {
            let o = &m["object"];
            let mut s = Map::new();
            rename(o, &mut s, &[("target", "describedObject")]);
            s.insert("metric".into(), identifier(o, "selector"));
            s.insert(
                "current".into(),
                current_to_v2(o, "", "averageValue", "currentValue"),
            );
            ("object", Value::Object(s))
        }
        "External" => {
            let e = &m["external"];
            (
                "external",
                json!({"metric": identifier(e, "metricSelector"),
                    "current": current_to_v2(e, "", "currentAverageValue", "currentValue")}),
            )
        }
        _ => return m.clone(),
    };
    let mut out = Map::new();
    out.insert("type".into(), json!(kind));
    if !m[field].is_null() {
        out.insert(field.into(), body);
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2() -> Value {
        json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "web", "namespace": "default",
                "annotations": {"team": "a"}},
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                "minReplicas": 1, "maxReplicas": 5,
                "metrics": [
                    {"type": "Resource", "resource": {"name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": 50}}},
                    {"type": "Resource", "resource": {"name": "memory",
                        "target": {"type": "AverageValue", "averageValue": "100Mi"}}},
                    {"type": "ContainerResource", "containerResource": {"name": "cpu",
                        "container": "app",
                        "target": {"type": "Utilization", "averageUtilization": 60}}},
                ],
                "behavior": {"scaleUp": {"stabilizationWindowSeconds": 0, "selectPolicy": "Max",
                    "policies": [{"type": "Pods", "value": 1, "periodSeconds": 30}]}},
            },
            "status": {"currentReplicas": 2, "desiredReplicas": 3,
                "currentMetrics": [
                    {"type": "Resource", "resource": {"name": "cpu",
                        "current": {"averageUtilization": 45, "averageValue": "45m"}}},
                    {"type": "Resource", "resource": {"name": "memory",
                        "current": {"averageValue": "10485760"}}},
                ],
                "conditions": [{"type": "AbleToScale", "status": "True",
                    "lastTransitionTime": "2026-01-01T00:00:00Z",
                    "reason": "ReadyForNewScale", "message": "m"}]}})
    }

    #[test]
    fn v1_shows_the_cpu_target_and_carries_the_rest_in_annotations() {
        let v1 = to_v1(&v2());
        assert_eq!(v1["apiVersion"], "autoscaling/v1");
        assert_eq!(v1["spec"]["targetCPUUtilizationPercentage"], 50);
        assert_eq!(v1["status"]["currentCPUUtilizationPercentage"], 45);
        assert_eq!(v1["status"]["currentReplicas"], 2);
        let a = &v1["metadata"]["annotations"];
        assert_eq!(a["team"], "a");
        let metrics: Value =
            serde_json::from_str(a[METRICS_ANNOTATION].as_str().expect("metrics")).expect("json");
        assert_eq!(
            metrics,
            json!([{"type": "Resource", "resource": {"name": "memory", "targetAverageValue": "100Mi"}},
                {"type": "ContainerResource", "containerResource": {"name": "cpu", "container": "app",
                    "targetAverageUtilization": 60}}])
        );
        let current: Value =
            serde_json::from_str(a[CURRENT_METRICS_ANNOTATION].as_str().expect("cm"))
                .expect("json");
        assert_eq!(current[0]["resource"]["currentAverageValue"], "45m");
        assert!(a[CONDITIONS_ANNOTATION].as_str().is_some());
        assert!(a[BEHAVIOR_ANNOTATION].as_str().is_some());
    }

    #[test]
    fn a_round_trip_through_v1_keeps_every_v2_field() {
        assert_eq!(to_v2(&to_v1(&v2())), v2());
    }

    #[test]
    fn a_plain_v1_object_gets_its_cpu_target_or_the_default_of_80() {
        let v1 = json!({"apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "web"},
            "spec": {"scaleTargetRef": {"kind": "ReplicationController", "name": "web"},
                "maxReplicas": 3, "targetCPUUtilizationPercentage": 50},
            "status": {"currentReplicas": 1, "desiredReplicas": 1,
                "currentCPUUtilizationPercentage": 20}});
        let v2 = to_v2(&v1);
        assert_eq!(
            v2["spec"]["metrics"],
            json!([{"type": "Resource", "resource": {"name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": 50}}}])
        );
        assert_eq!(
            v2["status"]["currentMetrics"][0]["resource"]["current"]["averageUtilization"],
            20
        );
        assert!(v2["metadata"].get("annotations").is_none());
        let mut bare = v1.clone();
        bare["spec"]
            .as_object_mut()
            .expect("spec")
            .remove("targetCPUUtilizationPercentage");
        assert_eq!(
            to_v2(&bare)["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"],
            80
        );
        // And back: v1 readers see the target they wrote.
        assert_eq!(to_v1(&v2)["spec"]["targetCPUUtilizationPercentage"], 50);
    }

    #[test]
    fn conditions_an_earlier_skiff_kept_in_the_v1_annotation_become_status_conditions() {
        let conds =
            json!([{"type": "ScalingActive", "status": "True", "reason": "ValidMetricFound"}]);
        let legacy = json!({"apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "web", "annotations": {CONDITIONS_ANNOTATION: conds.to_string()}},
            "spec": {"scaleTargetRef": {"kind": "ReplicationController", "name": "web"},
                "maxReplicas": 3},
            "status": {"currentReplicas": 1, "desiredReplicas": 1}});
        let v2 = to_v2(&legacy);
        assert_eq!(v2["status"]["conditions"], conds);
        assert!(v2["metadata"].get("annotations").is_none());
    }

    #[test]
    fn an_annotation_that_does_not_parse_is_reported_and_kept() {
        let v1 = json!({"metadata": {"annotations": {METRICS_ANNOTATION: "[{"}},
            "spec": {"maxReplicas": 1}});
        assert_eq!(unparseable_annotations(&v1), [METRICS_ANNOTATION]);
        assert_eq!(
            to_v2(&v1)["metadata"]["annotations"][METRICS_ANNOTATION],
            "[{"
        );
    }

    #[test]
    fn object_pods_and_external_metrics_convert_both_ways() {
        let m = json!([
            {"type": "Pods", "pods": {"metric": {"name": "qps"},
                "target": {"type": "AverageValue", "averageValue": "10"}}},
            {"type": "Object", "object": {"describedObject": {"kind": "Service", "name": "s"},
                "metric": {"name": "hits"}, "target": {"type": "Value", "value": "5"}}},
            {"type": "External", "external": {"metric": {"name": "queue"},
                "target": {"type": "AverageValue", "averageValue": "3"}}},
        ]);
        let mut obj = v2();
        obj["spec"]["metrics"] = m.clone();
        let back = to_v2(&to_v1(&obj));
        // No CPU utilisation target: v1 shows none and the v2 list is unchanged.
        assert_eq!(back["spec"]["metrics"], m);
    }
}
