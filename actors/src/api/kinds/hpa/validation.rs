//! `ValidateHorizontalPodAutoscaler` (Kubernetes' `pkg/apis/autoscaling/validation`), on
//! the v2 form with its field paths and wording, plus what this server cannot serve:
//! Pods, Object and External metrics read a custom or external metrics API
//! (`custom.metrics.k8s.io`, `external.metrics.k8s.io`), which skiff does not have, so
//! they are refused here instead of being accepted and never acted on.

use k8s_openapi::api::autoscaling::v2;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use serde_json::json;
#[cfg(test)]
use serde_json::Value;

use crate::api::validation::{self as v, FieldError, FieldErrorKind};

/// The longest scaling policy period (`MaxPeriodSeconds`).
pub const MAX_PERIOD_SECONDS: i32 = 1800;
/// The longest stabilization window (`MaxStabilizationWindowSeconds`).
pub const MAX_STABILIZATION_WINDOW_SECONDS: i32 = 3600;

const METRIC_TYPES: &[&str] = &[
    "ContainerResource",
    "External",
    "Object",
    "Pods",
    "Resource",
];
const SELECT_POLICIES: &[&str] = &["Disabled", "Max", "Min"];
const POLICY_TYPES: &[&str] = &["Percent", "Pods"];

fn required(field: impl Into<String>, detail: &str) -> FieldError {
    FieldError {
        field: field.into(),
        kind: FieldErrorKind::Required,
        value: None,
        detail: detail.into(),
    }
}

/// The whole object: spec and the counts of its status.
pub fn validate(hpa: &v2::HorizontalPodAutoscaler) -> Vec<FieldError> {
    let mut errs = Vec::new();
    validate_spec(&hpa.spec, &mut errs);
    if let Some(status) = &hpa.status {
        for (field, n) in [
            (
                "status.currentReplicas",
                status.current_replicas.unwrap_or(0),
            ),
            ("status.desiredReplicas", status.desired_replicas),
        ] {
            if n < 0 {
                errs.push(FieldError::invalid(
                    field,
                    &json!(n),
                    "must be greater than or equal to 0",
                ));
            }
        }
    }
    errs
}

fn validate_spec(spec: &v2::HorizontalPodAutoscalerSpec, errs: &mut Vec<FieldError>) {
    if let Some(min) = spec.min_replicas.filter(|m| *m < 1) {
        errs.push(FieldError::invalid(
            "spec.minReplicas",
            &json!(min),
            "must be greater than or equal to 1",
        ));
    }
    if spec.max_replicas < 1 {
        errs.push(FieldError::invalid(
            "spec.maxReplicas",
            &json!(spec.max_replicas),
            "must be greater than 0",
        ));
    }
    if spec.min_replicas.is_some_and(|min| spec.max_replicas < min) {
        errs.push(FieldError::invalid(
            "spec.maxReplicas",
            &json!(spec.max_replicas),
            "must be greater than or equal to `minReplicas`",
        ));
    }
    let r = &spec.scale_target_ref;
    reference(&r.kind, &r.name, "spec.scaleTargetRef", errs);
    for (i, m) in spec.metrics.iter().flatten().enumerate() {
        validate_metric(m, &format!("spec.metrics[{i}]"), errs);
    }
    if let Some(b) = &spec.behavior {
        if let Some(up) = &b.scale_up {
            validate_rules(up, "spec.behavior.scaleUp", errs);
        }
        if let Some(down) = &b.scale_down {
            validate_rules(down, "spec.behavior.scaleDown", errs);
        }
    }
}

/// `ValidateCrossVersionObjectReference`.
fn reference(kind: &str, name: &str, path: &str, errs: &mut Vec<FieldError>) {
    for (field, value) in [("kind", kind), ("name", name)] {
        let p = format!("{path}.{field}");
        if value.is_empty() {
            errs.push(required(p, ""));
        } else {
            for msg in v::path_segment_errors(value) {
                errs.push(FieldError::invalid(&p, &json!(value), msg));
            }
        }
    }
}

fn validate_metric(m: &v2::MetricSpec, path: &str, errs: &mut Vec<FieldError>) {
    let kind = m.type_.as_str();
    if kind.is_empty() {
        errs.push(required(
            format!("{path}.type"),
            "must specify a metric source type",
        ));
    }
    let mut present = Vec::new();
    if let Some(o) = &m.object {
        present.push("object");
        if present.len() == 1 {
            let p = format!("{path}.object");
            reference(
                &o.described_object.kind,
                &o.described_object.name,
                &format!("{p}.describedObject"),
                errs,
            );
            identifier(&o.metric, &p, errs);
            target(&o.target, &format!("{p}.target"), errs);
            if o.target.value.is_none() && o.target.average_value.is_none() {
                errs.push(required(
                    format!("{p}.target.averageValue"),
                    "must set either a target value or averageValue",
                ));
            }
        }
    }
    if let Some(e) = &m.external {
        present.push("external");
        if present.len() == 1 {
            let p = format!("{path}.external");
            identifier(&e.metric, &p, errs);
            target(&e.target, &format!("{p}.target"), errs);
            if e.target.value.is_none() && e.target.average_value.is_none() {
                errs.push(required(
                    format!("{p}.target.averageValue"),
                    "must set either a target value for metric or a per-pod target",
                ));
            }
            if e.target.value.is_some() && e.target.average_value.is_some() {
                errs.push(FieldError::forbidden(
                    format!("{p}.target.value"),
                    "may not set both a target value for metric and a per-pod target",
                ));
            }
        }
    }
    if let Some(pods) = &m.pods {
        present.push("pods");
        if present.len() == 1 {
            let p = format!("{path}.pods");
            identifier(&pods.metric, &p, errs);
            target(&pods.target, &format!("{p}.target"), errs);
            if pods.target.average_value.is_none() {
                errs.push(required(
                    format!("{p}.target.averageValue"),
                    "must specify a positive target averageValue",
                ));
            }
        }
    }
    if let Some(r) = &m.resource {
        present.push("resource");
        if present.len() == 1 {
            let p = format!("{path}.resource");
            if r.name.is_empty() {
                errs.push(required(
                    format!("{p}.name"),
                    "must specify a resource name",
                ));
            }
            resource_target(&r.target, &p, errs);
        }
    }
    if let Some(c) = &m.container_resource {
        present.push("containerResource");
        if present.len() == 1 {
            let p = format!("{path}.containerResource");
            if c.name.is_empty() {
                errs.push(required(
                    format!("{p}.name"),
                    "must specify a resource name",
                ));
            } else if !is_container_resource_name(&c.name) {
                errs.push(FieldError::invalid(
                    format!("{p}.name"),
                    &json!(c.name),
                    "must be a standard resource for containers",
                ));
            }
            if c.container.is_empty() {
                errs.push(required(
                    format!("{p}.container"),
                    "must specify a container",
                ));
            } else {
                for msg in v::dns1123_label_errors(&c.container) {
                    errs.push(FieldError::invalid(
                        format!("{p}.container"),
                        &json!(c.container),
                        msg,
                    ));
                }
            }
            resource_target(&c.target, &p, errs);
        }
    }
    let expected = match kind {
        "Object" => "object",
        "Pods" => "pods",
        "Resource" => "resource",
        "External" => "external",
        "ContainerResource" => "containerResource",
        "" => "",
        other => {
            errs.push(FieldError::not_supported(
                format!("{path}.type"),
                &json!(other),
                METRIC_TYPES,
            ));
            ""
        }
    };
    if !expected.is_empty() && !present.contains(&expected) {
        errs.push(required(
            format!("{path}.{expected}"),
            "must populate information for the given metric source",
        ));
    }
    if present.len() != 1 {
        for typ in present.iter().filter(|t| **t != expected) {
            errs.push(FieldError::forbidden(
                format!("{path}.{typ}"),
                "must populate the given metric source only",
            ));
        }
    }
    // What skiff cannot measure: said at validation time, not accepted and left idle.
    let api = match kind {
        "Pods" | "Object" => Some("the custom metrics API (custom.metrics.k8s.io)"),
        "External" => Some("the external metrics API (external.metrics.k8s.io)"),
        _ => None,
    };
    if let Some(api) = api {
        errs.push(FieldError::forbidden(
            format!("{path}.type"),
            format!(
                "{kind} metrics are read from {api}, which this server does not serve; use Resource or ContainerResource metrics"
            ),
        ));
    }
}

fn is_container_resource_name(name: &str) -> bool {
    name.contains('/')
        || matches!(name, "cpu" | "memory" | "ephemeral-storage")
        || name.starts_with("hugepages-")
}

fn identifier(id: &v2::MetricIdentifier, path: &str, errs: &mut Vec<FieldError>) {
    let p = format!("{path}.metric.name");
    if id.name.is_empty() {
        errs.push(required(p, "must specify a metric name"));
    } else {
        for msg in v::path_segment_errors(&id.name) {
            errs.push(FieldError::invalid(&p, &json!(id.name), msg));
        }
    }
}

/// A Resource or ContainerResource target: a utilisation or an average value, not both.
fn resource_target(t: &v2::MetricTarget, path: &str, errs: &mut Vec<FieldError>) {
    target(t, &format!("{path}.target"), errs);
    if t.average_utilization.is_none() && t.average_value.is_none() {
        errs.push(required(
            format!("{path}.target.averageUtilization"),
            "must set either a target raw value or a target utilization",
        ));
    }
    if t.average_utilization.is_some() && t.average_value.is_some() {
        errs.push(FieldError::forbidden(
            format!("{path}.target.averageValue"),
            "may not set both a target raw value and a target utilization",
        ));
    }
}

/// `validateMetricTarget`.
fn target(t: &v2::MetricTarget, path: &str, errs: &mut Vec<FieldError>) {
    if t.type_.is_empty() {
        errs.push(required(
            format!("{path}.type"),
            "must specify a metric target type",
        ));
    }
    if !matches!(t.type_.as_str(), "Utilization" | "Value" | "AverageValue") {
        errs.push(FieldError::invalid(
            format!("{path}.type"),
            &json!(t.type_),
            "must be either Utilization, Value, or AverageValue",
        ));
    }
    for (field, q) in [("value", &t.value), ("averageValue", &t.average_value)] {
        if let Some(q) = q {
            positive(q, &format!("{path}.{field}"), errs);
        }
    }
    if let Some(u) = t.average_utilization.filter(|u| *u < 1) {
        errs.push(FieldError::invalid(
            format!("{path}.averageUtilization"),
            &json!(u),
            "must be greater than 0",
        ));
    }
}

fn positive(q: &Quantity, path: &str, errs: &mut Vec<FieldError>) {
    match v::parse_quantity(&q.0) {
        Some(x) if x > 0.0 => {}
        Some(_) => errs.push(FieldError::invalid(path, &json!(q.0), "must be positive")),
        None => errs.push(FieldError::invalid(
            path,
            &json!(q.0),
            "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'",
        )),
    }
}

/// `validateScalingRules` and `validateScalingPolicy`.
fn validate_rules(r: &v2::HPAScalingRules, path: &str, errs: &mut Vec<FieldError>) {
    if let Some(w) = r.stabilization_window_seconds {
        let p = format!("{path}.stabilizationWindowSeconds");
        if w < 0 {
            errs.push(FieldError::invalid(
                &p,
                &json!(w),
                "must be greater than or equal to zero",
            ));
        }
        if w > MAX_STABILIZATION_WINDOW_SECONDS {
            errs.push(FieldError::invalid(
                &p,
                &json!(w),
                format!("must be less than or equal to {MAX_STABILIZATION_WINDOW_SECONDS}"),
            ));
        }
    }
    if let Some(s) = r
        .select_policy
        .as_deref()
        .filter(|s| !SELECT_POLICIES.contains(s))
    {
        errs.push(FieldError::not_supported(
            format!("{path}.selectPolicy"),
            &json!(s),
            SELECT_POLICIES,
        ));
    }
    if let Some(t) = &r.tolerance {
        let p = format!("{path}.tolerance");
        match v::parse_quantity(&t.0) {
            Some(x) if x >= 0.0 => {}
            Some(_) => errs.push(FieldError::invalid(
                &p,
                &json!(t.0),
                "must be greater than or equal to zero",
            )),
            None => positive(t, &p, errs),
        }
    }
    let policies = r.policies.as_deref().unwrap_or_default();
    if policies.is_empty() {
        errs.push(required(
            format!("{path}.policies"),
            "must specify at least one Policy",
        ));
    }
    for (i, policy) in policies.iter().enumerate() {
        let p = format!("{path}.policies[{i}]");
        if !POLICY_TYPES.contains(&policy.type_.as_str()) {
            errs.push(FieldError::not_supported(
                format!("{p}.type"),
                &json!(policy.type_),
                POLICY_TYPES,
            ));
        }
        if policy.value <= 0 {
            errs.push(FieldError::invalid(
                format!("{p}.value"),
                &json!(policy.value),
                "must be greater than zero",
            ));
        }
        let period = policy.period_seconds;
        if period <= 0 {
            errs.push(FieldError::invalid(
                format!("{p}.periodSeconds"),
                &json!(period),
                "must be greater than zero",
            ));
        }
        if period > MAX_PERIOD_SECONDS {
            errs.push(FieldError::invalid(
                format!("{p}.periodSeconds"),
                &json!(period),
                format!("must be less than or equal to {MAX_PERIOD_SECONDS}"),
            ));
        }
    }
}

/// For tests: the messages of `validate` on a JSON object.
#[cfg(test)]
pub fn messages(obj: &Value) -> Vec<String> {
    let hpa: v2::HorizontalPodAutoscaler = crate::api::strategy::typed(obj).expect("decodes");
    validate(&hpa).iter().map(FieldError::message).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hpa(spec: Value) -> Value {
        let mut base = json!({"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment",
            "name": "web"}, "minReplicas": 1, "maxReplicas": 5});
        for (k, v) in spec.as_object().cloned().unwrap_or_default() {
            base[k] = v;
        }
        json!({"metadata": {"name": "web", "namespace": "default"}, "spec": base})
    }

    fn metric(m: Value) -> Value {
        hpa(json!({"metrics": [m]}))
    }

    #[test]
    fn bounds_and_reference_have_kubernetes_paths_and_messages() {
        let m = messages(&hpa(json!({"minReplicas": 5, "maxReplicas": 2})));
        assert_eq!(
            m,
            ["spec.maxReplicas: Invalid value: 2: must be greater than or equal to `minReplicas`"]
        );
        let m = messages(&hpa(json!({"minReplicas": 0, "maxReplicas": 0,
            "scaleTargetRef": {"kind": "", "name": "a/b"}})));
        assert_eq!(
            m,
            [
                "spec.minReplicas: Invalid value: 0: must be greater than or equal to 1",
                "spec.maxReplicas: Invalid value: 0: must be greater than 0",
                "spec.scaleTargetRef.kind: Required value",
                "spec.scaleTargetRef.name: Invalid value: \"a/b\": may not contain '/'",
            ]
        );
        assert!(messages(&hpa(json!({}))).is_empty());
    }

    #[test]
    fn resource_targets_need_one_of_utilization_or_average_value() {
        let both = metric(json!({"type": "Resource", "resource": {"name": "cpu",
            "target": {"type": "Utilization", "averageUtilization": 0, "averageValue": "-1"}}}));
        assert_eq!(
            messages(&both),
            [
                "spec.metrics[0].resource.target.averageValue: Invalid value: \"-1\": must be positive",
                "spec.metrics[0].resource.target.averageUtilization: Invalid value: 0: must be greater than 0",
                "spec.metrics[0].resource.target.averageValue: Forbidden: may not set both a target raw value and a target utilization",
            ]
        );
        let none = metric(json!({"type": "Resource", "resource": {"name": "",
            "target": {"type": "Bogus"}}}));
        assert_eq!(
            messages(&none),
            [
                "spec.metrics[0].resource.name: Required value: must specify a resource name",
                "spec.metrics[0].resource.target.type: Invalid value: \"Bogus\": must be either Utilization, Value, or AverageValue",
                "spec.metrics[0].resource.target.averageUtilization: Required value: must set either a target raw value or a target utilization",
            ]
        );
        let memory = metric(json!({"type": "Resource", "resource": {"name": "memory",
            "target": {"type": "AverageValue", "averageValue": "100Mi"}}}));
        assert!(messages(&memory).is_empty());
    }

    #[test]
    fn the_source_must_match_the_type() {
        let wrong = metric(
            json!({"type": "Resource", "containerResource": {"name": "cpu",
            "container": "app", "target": {"type": "Utilization", "averageUtilization": 50}}}),
        );
        assert_eq!(
            messages(&wrong),
            [
                "spec.metrics[0].resource: Required value: must populate information for the given metric source",
            ]
        );
        let bad = metric(json!({"type": "Widget"}));
        assert_eq!(
            messages(&bad),
            [
                "spec.metrics[0].type: Unsupported value: \"Widget\": supported values: \"ContainerResource\", \"External\", \"Object\", \"Pods\", \"Resource\"",
            ]
        );
        let container = metric(json!({"type": "ContainerResource", "containerResource": {
            "name": "gpu", "container": "App_1",
            "target": {"type": "Utilization", "averageUtilization": 50}}}));
        let m = messages(&container);
        assert_eq!(m.len(), 2, "{m:?}");
        assert!(m[0].ends_with("must be a standard resource for containers"));
        assert!(m[1].starts_with("spec.metrics[0].containerResource.container: Invalid value"));
    }

    #[test]
    fn pods_object_and_external_metrics_are_refused_as_not_served() {
        for (kind, field, src) in [
            (
                "Pods",
                "pods",
                json!({"metric": {"name": "qps"},
                "target": {"type": "AverageValue", "averageValue": "10"}}),
            ),
            (
                "Object",
                "object",
                json!({"metric": {"name": "hits"},
                "describedObject": {"kind": "Service", "name": "s"},
                "target": {"type": "Value", "value": "10"}}),
            ),
            (
                "External",
                "external",
                json!({"metric": {"name": "queue"},
                "target": {"type": "Value", "value": "10"}}),
            ),
        ] {
            let m = messages(&metric(json!({"type": kind, field: src})));
            assert_eq!(m.len(), 1, "{m:?}");
            assert!(
                m[0].starts_with(&format!(
                    "spec.metrics[0].type: Forbidden: {kind} metrics are read from the"
                )),
                "{m:?}"
            );
        }
    }

    #[test]
    fn behavior_rules_bound_windows_periods_and_policies() {
        let b = hpa(json!({"behavior": {
            "scaleUp": {"stabilizationWindowSeconds": 3601, "selectPolicy": "Fastest",
                "policies": [{"type": "Pods", "value": 0, "periodSeconds": 1801},
                    {"type": "Nodes", "value": 1, "periodSeconds": 0}]},
            "scaleDown": {"stabilizationWindowSeconds": -1, "policies": []}}}));
        assert_eq!(
            messages(&b),
            [
                "spec.behavior.scaleUp.stabilizationWindowSeconds: Invalid value: 3601: must be less than or equal to 3600",
                "spec.behavior.scaleUp.selectPolicy: Unsupported value: \"Fastest\": supported values: \"Disabled\", \"Max\", \"Min\"",
                "spec.behavior.scaleUp.policies[0].value: Invalid value: 0: must be greater than zero",
                "spec.behavior.scaleUp.policies[0].periodSeconds: Invalid value: 1801: must be less than or equal to 1800",
                "spec.behavior.scaleUp.policies[1].type: Unsupported value: \"Nodes\": supported values: \"Percent\", \"Pods\"",
                "spec.behavior.scaleUp.policies[1].periodSeconds: Invalid value: 0: must be greater than zero",
                "spec.behavior.scaleDown.stabilizationWindowSeconds: Invalid value: -1: must be greater than or equal to zero",
                "spec.behavior.scaleDown.policies: Required value: must specify at least one Policy",
            ]
        );
    }
}
