//! What the apps/v1 workload kinds share: a `LabelSelector` that must select the pod
//! template's labels, a template whose pods restart `Always`, non-negative counts, and
//! int-or-percent rollout parameters (Kubernetes' `pkg/apis/apps/validation`).

use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector as TypedSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::{json, Value};

use crate::api::patch::{self, ListStrategy};
use crate::api::selector::LabelSelector;
use crate::api::validation::{self, FieldError};

pub const NONNEGATIVE: &str = "must be greater than or equal to 0";

/// `field` must be zero or more.
pub fn non_negative(value: Option<i32>, field: &str, errs: &mut Vec<FieldError>) {
    if let Some(v) = value.filter(|v| *v < 0) {
        errs.push(FieldError::invalid(field, &json!(v), NONNEGATIVE));
    }
}

/// The selector as the matcher the controllers use; `None` when it selects nothing.
pub fn selector_of(selector: &TypedSelector) -> Option<LabelSelector> {
    let v = serde_json::to_value(selector).ok()?;
    let s = LabelSelector::from_label_selector_value(&v).ok()?;
    (!s.is_empty()).then_some(s)
}

/// `spec.selector` and `spec.template` of a workload named `kind` in messages: the
/// selector is required and non-empty, the template's labels match it, its pods restart
/// `Always`, and its pod spec is valid.
pub fn validate_selector_and_template(
    kind: &str,
    selector: Option<&TypedSelector>,
    template: &PodTemplateSpec,
    errs: &mut Vec<FieldError>,
) {
    let matcher = match selector {
        None => {
            errs.push(FieldError::required("spec.selector"));
            None
        }
        Some(s) => {
            let raw = serde_json::to_value(s).unwrap_or(Value::Null);
            match LabelSelector::from_label_selector_value(&raw) {
                Err(e) => {
                    errs.push(FieldError::invalid("spec.selector", &raw, e.to_string()));
                    None
                }
                Ok(m) if m.is_empty() => {
                    errs.push(FieldError::invalid(
                        "spec.selector",
                        &raw,
                        format!("empty selector is invalid for {}", kind.to_lowercase()),
                    ));
                    None
                }
                Ok(m) => Some(m),
            }
        }
    };
    let labels = template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    if let Some(m) = matcher {
        if !m.matches(&labels) {
            errs.push(FieldError::invalid(
                "spec.template.metadata.labels",
                &json!(labels),
                "`selector` does not match template `labels`",
            ));
        }
    }
    // Until the pod spec rules are typed, the template is checked in its JSON form.
    let raw = serde_json::to_value(template).unwrap_or(Value::Null);
    validation::validate_pod_template_spec(&raw, "spec.template", errs);
    if let Some(spec) = &template.spec {
        let policy = spec.restart_policy.as_deref().unwrap_or("Always");
        if policy != "Always" {
            errs.push(FieldError::not_supported(
                "spec.template.spec.restartPolicy",
                &json!(policy),
                &["Always"],
            ));
        }
        // Kubernetes validates every apps/v1 template as a ReplicaSet's, wording included.
        if spec.active_deadline_seconds.is_some() {
            errs.push(FieldError::forbidden(
                "spec.template.spec.activeDeadlineSeconds",
                "activeDeadlineSeconds in ReplicaSet is not Supported",
            ));
        }
    }
}

/// A selector may not change once set (apps/v1).
pub fn selector_unchanged(
    new: Option<&TypedSelector>,
    old: Option<&TypedSelector>,
    errs: &mut Vec<FieldError>,
) {
    if new != old {
        let shown = new.map(|s| serde_json::to_value(s).unwrap_or(Value::Null));
        errs.push(FieldError::immutable(
            "spec.selector",
            &shown.unwrap_or(Value::Null),
        ));
    }
}

/// Kubernetes' `ValidatePositiveIntOrPercent` and `IsNotMoreThan100Percent`.
pub fn validate_int_or_percent(v: &IntOrString, field: &str, errs: &mut Vec<FieldError>) {
    match v {
        IntOrString::Int(i) if *i < 0 => {
            errs.push(FieldError::invalid(field, &json!(i), NONNEGATIVE))
        }
        IntOrString::Int(_) => {}
        IntOrString::String(s) => match percent(s) {
            None => errs.push(FieldError::invalid(
                field,
                &json!(s),
                "a valid percent string must be a numeric string followed by an ending '%' (e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')",
            )),
            Some(p) if p > 100 => errs.push(FieldError::invalid(
                field,
                &json!(s),
                "must not be greater than 100%",
            )),
            Some(_) => {}
        },
    }
}

fn percent(s: &str) -> Option<i64> {
    let digits = s.strip_suffix('%')?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// An int-or-percent resolved against `total` (`GetScaledValueFromIntOrPercent`):
/// percentages round up or down as the caller needs.
pub fn scaled(v: Option<&IntOrString>, total: i32, round_up: bool) -> i32 {
    match v {
        None => 0,
        Some(IntOrString::Int(i)) => *i,
        Some(IntOrString::String(s)) => {
            let p = percent(s).unwrap_or(0);
            let num = p * i64::from(total);
            let out = if round_up {
                (num + 99) / 100
            } else {
                num / 100
            };
            out as i32
        }
    }
}

/// The lists of a workload: its template's metadata and pod spec, and conditions by type.
pub fn list_strategy(path: &[&str]) -> ListStrategy {
    match path {
        ["spec", "template", "metadata", rest @ ..] => patch::object_meta_list(rest),
        ["spec", "template", "spec", rest @ ..] => patch::pod_spec_list(rest),
        ["status", "conditions"] => ListStrategy::MergeByKey("type"),
        _ => ListStrategy::Replace,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentages_round_as_asked() {
        let p = IntOrString::String("25%".into());
        assert_eq!(scaled(Some(&p), 10, true), 3);
        assert_eq!(scaled(Some(&p), 10, false), 2);
        assert_eq!(scaled(Some(&IntOrString::Int(2)), 10, false), 2);
        assert_eq!(scaled(None, 10, true), 0);
    }

    #[test]
    fn int_or_percent_rules_have_kubernetes_messages() {
        let mut errs = Vec::new();
        validate_int_or_percent(&IntOrString::Int(-1), "f", &mut errs);
        validate_int_or_percent(&IntOrString::String("x%".into()), "f", &mut errs);
        validate_int_or_percent(&IntOrString::String("150%".into()), "f", &mut errs);
        validate_int_or_percent(&IntOrString::String("50%".into()), "f", &mut errs);
        let details: Vec<_> = errs.iter().map(|e| e.detail.as_str()).collect();
        assert_eq!(details.len(), 3);
        assert_eq!(details[0], NONNEGATIVE);
        assert!(details[1].starts_with("a valid percent string"));
        assert_eq!(details[2], "must not be greater than 100%");
    }
}
