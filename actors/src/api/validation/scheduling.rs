//! Validation of a pod spec's scheduling fields, after Kubernetes' pkg/apis/core/validation:
//! pod affinity and anti-affinity terms, preferred node-affinity weights, topology spread
//! constraints, `priorityClassName` and `preemptionPolicy`.

use std::collections::HashSet;

use serde_json::Value;

use super::{
    child, duplicate, get, get_array, get_i64, get_str, index, invalid, is_dns1123_label,
    is_dns1123_subdomain, not_supported, push_all, qualified_name_errors, required, FieldError,
};
use crate::api::selector::LabelSelector;

const NOT_POSITIVE: &str = "must be greater than zero";
const WEIGHT_RANGE: &str = "must be in the range 1-100";
const WHEN_UNSATISFIABLE: &[&str] = &["DoNotSchedule", "ScheduleAnyway"];
const INCLUSION_POLICIES: &[&str] = &["Honor", "Ignore"];
const PREEMPTION_POLICIES: &[&str] = &["Never", "PreemptLowerPriority"];

/// Every scheduling field of `spec` (at `path`).
pub fn validate_pod_scheduling(spec: &Value, path: &str, errs: &mut Vec<FieldError>) {
    let class = get_str(spec, "priorityClassName");
    if !class.is_empty() && !is_dns1123_subdomain(class) {
        errs.push(invalid(
            child(path, "priorityClassName"),
            &Value::from(class),
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')",
        ));
    }
    if let Some(p) = get(spec, "preemptionPolicy") {
        if !p.as_str().is_some_and(|p| PREEMPTION_POLICIES.contains(&p)) {
            errs.push(not_supported(
                child(path, "preemptionPolicy"),
                p,
                PREEMPTION_POLICIES,
            ));
        }
    }
    if let Some(affinity) = get(spec, "affinity") {
        validate_affinity(affinity, &child(path, "affinity"), errs);
    }
    let constraints = get_array(spec, "topologySpreadConstraints");
    validate_spread(constraints, &child(path, "topologySpreadConstraints"), errs);
}

fn weight_ok(term: &Value, path: &str, errs: &mut Vec<FieldError>) {
    let w = get_i64(term, "weight").unwrap_or(0);
    if !(1..=100).contains(&w) {
        errs.push(invalid(
            child(path, "weight"),
            &Value::from(w),
            WEIGHT_RANGE,
        ));
    }
}

fn validate_affinity(affinity: &Value, path: &str, errs: &mut Vec<FieldError>) {
    if let Some(node) = get(affinity, "nodeAffinity") {
        let pref = child(&child(path, "nodeAffinity"), PREFERRED);
        for (i, term) in get_array(node, PREFERRED).iter().enumerate() {
            weight_ok(term, &index(&pref, i), errs);
        }
    }
    for kind in ["podAffinity", "podAntiAffinity"] {
        let Some(a) = get(affinity, kind) else {
            continue;
        };
        let base = child(path, kind);
        let req = child(&base, REQUIRED);
        for (i, term) in get_array(a, REQUIRED).iter().enumerate() {
            validate_pod_affinity_term(term, &index(&req, i), errs);
        }
        let pref = child(&base, PREFERRED);
        for (i, term) in get_array(a, PREFERRED).iter().enumerate() {
            let p = index(&pref, i);
            weight_ok(term, &p, errs);
            let inner = term.get("podAffinityTerm").unwrap_or(&Value::Null);
            validate_pod_affinity_term(inner, &child(&p, "podAffinityTerm"), errs);
        }
    }
}

const REQUIRED: &str = "requiredDuringSchedulingIgnoredDuringExecution";
const PREFERRED: &str = "preferredDuringSchedulingIgnoredDuringExecution";

fn validate_selector(term: &Value, name: &str, path: &str, errs: &mut Vec<FieldError>) {
    if let Some(s) = get(term, name) {
        if let Err(e) = LabelSelector::from_label_selector_value(s) {
            errs.push(invalid(child(path, name), s, e.to_string()));
        }
    }
}

fn validate_label_keys(term: &Value, name: &str, path: &str, errs: &mut Vec<FieldError>) {
    for (i, k) in get_array(term, name).iter().enumerate() {
        let key = k.as_str().unwrap_or_default();
        push_all(
            errs,
            &index(&child(path, name), i),
            k,
            qualified_name_errors(key),
        );
    }
}

fn validate_pod_affinity_term(term: &Value, path: &str, errs: &mut Vec<FieldError>) {
    validate_selector(term, "labelSelector", path, errs);
    validate_selector(term, "namespaceSelector", path, errs);
    for ns in get_array(term, "namespaces") {
        let name = ns.as_str().unwrap_or_default();
        if !is_dns1123_label(name) {
            errs.push(invalid(
                child(path, "namespace"),
                ns,
                "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')",
            ));
        }
    }
    validate_label_keys(term, "matchLabelKeys", path, errs);
    validate_label_keys(term, "mismatchLabelKeys", path, errs);
    let key = get_str(term, "topologyKey");
    let field = child(path, "topologyKey");
    if key.is_empty() {
        errs.push(required(&field, "can not be empty"));
    }
    push_all(errs, &field, &Value::from(key), qualified_name_errors(key));
}

fn validate_spread(constraints: &[Value], path: &str, errs: &mut Vec<FieldError>) {
    let mut seen = HashSet::new();
    for (i, c) in constraints.iter().enumerate() {
        let p = index(path, i);
        let skew = get_i64(c, "maxSkew").unwrap_or(0);
        if skew <= 0 {
            errs.push(invalid(
                child(&p, "maxSkew"),
                &Value::from(skew),
                NOT_POSITIVE,
            ));
        }
        let key = get_str(c, "topologyKey");
        if key.is_empty() {
            errs.push(required(child(&p, "topologyKey"), "can not be empty"));
        }
        let when = get_str(c, "whenUnsatisfiable");
        if !WHEN_UNSATISFIABLE.contains(&when) {
            errs.push(not_supported(
                child(&p, "whenUnsatisfiable"),
                &Value::from(when),
                WHEN_UNSATISFIABLE,
            ));
        }
        if !seen.insert((key, when)) {
            errs.push(duplicate(
                child(&p, "{topologyKey, whenUnsatisfiable}"),
                &Value::from(format!("{{{key}, {when}}}")),
            ));
        }
        if let Some(min) = get_i64(c, "minDomains") {
            let field = child(&p, "minDomains");
            if min <= 0 {
                errs.push(invalid(&field, &Value::from(min), NOT_POSITIVE));
            }
            if when != "DoNotSchedule" {
                errs.push(invalid(
                    &field,
                    &Value::from(min),
                    format!(
                        "can only use minDomains if whenUnsatisfiable=DoNotSchedule, not {when}"
                    ),
                ));
            }
        }
        for policy in ["nodeAffinityPolicy", "nodeTaintsPolicy"] {
            if let Some(v) = get(c, policy) {
                if !v.as_str().is_some_and(|s| INCLUSION_POLICIES.contains(&s)) {
                    errs.push(not_supported(child(&p, policy), v, INCLUSION_POLICIES));
                }
            }
        }
        validate_label_keys(c, "matchLabelKeys", &p, errs);
        validate_selector(c, "labelSelector", &p, errs);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn messages(spec: Value) -> Vec<String> {
        let mut errs = Vec::new();
        validate_pod_scheduling(&spec, "spec", &mut errs);
        errs.iter().map(FieldError::message).collect()
    }

    #[test]
    fn an_affinity_term_needs_a_topology_key_and_preferred_terms_a_weight() {
        let spec = json!({"affinity": {"podAntiAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": [{"labelSelector": {"matchLabels": {"app": "web"}}}],
            "preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 0, "podAffinityTerm": {"topologyKey": "zone"}}]}}});
        assert_eq!(
            messages(spec),
            vec![
                "spec.affinity.podAntiAffinity.requiredDuringSchedulingIgnoredDuringExecution[0].topologyKey: Required value: can not be empty",
                "spec.affinity.podAntiAffinity.requiredDuringSchedulingIgnoredDuringExecution[0].topologyKey: Invalid value: \"\": name part must be non-empty",
                "spec.affinity.podAntiAffinity.requiredDuringSchedulingIgnoredDuringExecution[0].topologyKey: Invalid value: \"\": name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')",
                "spec.affinity.podAntiAffinity.preferredDuringSchedulingIgnoredDuringExecution[0].weight: Invalid value: 0: must be in the range 1-100",
            ]
        );
    }

    #[test]
    fn spread_constraints_are_checked_as_kubernetes_does() {
        let spec = json!({"topologySpreadConstraints": [
            {"maxSkew": 0, "topologyKey": "zone", "whenUnsatisfiable": "ScheduleAnyway", "minDomains": 2},
            {"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "ScheduleAnyway", "nodeTaintsPolicy": "Sometimes"},
            {"maxSkew": 1, "topologyKey": "host", "whenUnsatisfiable": "Maybe"}]});
        assert_eq!(
            messages(spec),
            vec![
                "spec.topologySpreadConstraints[0].maxSkew: Invalid value: 0: must be greater than zero",
                "spec.topologySpreadConstraints[0].minDomains: Invalid value: 2: can only use minDomains if whenUnsatisfiable=DoNotSchedule, not ScheduleAnyway",
                "spec.topologySpreadConstraints[1].{topologyKey, whenUnsatisfiable}: Duplicate value: \"{zone, ScheduleAnyway}\"",
                "spec.topologySpreadConstraints[1].nodeTaintsPolicy: Unsupported value: \"Sometimes\": supported values: \"Honor\", \"Ignore\"",
                "spec.topologySpreadConstraints[2].whenUnsatisfiable: Unsupported value: \"Maybe\": supported values: \"DoNotSchedule\", \"ScheduleAnyway\"",
            ]
        );
    }

    #[test]
    fn a_good_spec_has_no_errors() {
        let spec = json!({"priorityClassName": "high", "preemptionPolicy": "Never",
            "affinity": {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                {"labelSelector": {"matchLabels": {"app": "db"}}, "topologyKey": "kubernetes.io/hostname",
                 "namespaceSelector": {}, "matchLabelKeys": ["pod-template-hash"]}]}},
            "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "zone",
                "whenUnsatisfiable": "DoNotSchedule", "minDomains": 3, "nodeAffinityPolicy": "Ignore",
                "labelSelector": {"matchLabels": {"app": "web"}}}]});
        assert!(messages(spec).is_empty());
    }
}
