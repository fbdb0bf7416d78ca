//! `ValidateJob`, `validateJobSpec` and `ValidateJobSpecUpdate`: Kubernetes' rules for a
//! Job (and a CronJob's job template), with its field paths and wording.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1 as batch;
use serde_json::{json, Value};

use super::super::workload;
use super::{
    ACTIONS, COMPLETION_MODES, CONTROLLER_UID, JOB_NAME, LEGACY_CONTROLLER_UID, LEGACY_JOB_NAME,
    MAX_EXIT_CODE_VALUES, MAX_INDEXED_COMPLETIONS, MAX_POD_FAILURE_POLICY_RULES,
    REPLACEMENT_POLICIES, RESTART_POLICIES,
};
use crate::api::selector::LabelSelector;
use crate::api::validation::{self, FieldError};

/// `ValidateGeneratedSelector`: with a generated selector, the template carries the
/// generated labels and the selector selects them.
pub(super) fn validate_generated_selector(job: &batch::Job, errs: &mut Vec<FieldError>) {
    let Some(spec) = job.spec.as_ref() else {
        return;
    };
    if spec.manual_selector == Some(true) {
        return;
    }
    let Some(selector) = spec.selector.as_ref() else {
        return;
    };
    let uid = job.metadata.uid.clone().unwrap_or_default();
    let name = job.metadata.name.clone().unwrap_or_default();
    let labels = spec
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let path = "spec.template.metadata";
    for (key, want) in [
        (LEGACY_CONTROLLER_UID, &uid),
        (CONTROLLER_UID, &uid),
        (LEGACY_JOB_NAME, &name),
        (JOB_NAME, &name),
    ] {
        match labels.get(key) {
            None => errs.push(FieldError::required(format!("{path}.labels[{key}]"))),
            Some(v) if v != want => errs.push(FieldError::invalid(
                format!("{path}.labels[{key}]"),
                &json!(v),
                format!("must be '{want}'"),
            )),
            Some(_) => {}
        }
    }
    let expected: BTreeMap<String, String> = [
        (LEGACY_CONTROLLER_UID, &uid),
        (CONTROLLER_UID, &uid),
        (LEGACY_JOB_NAME, &name),
        (JOB_NAME, &name),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.clone()))
    .collect();
    let raw = serde_json::to_value(selector).unwrap_or(Value::Null);
    if let Ok(matcher) = LabelSelector::from_label_selector_value(&raw) {
        if !matcher.matches(&expected) {
            errs.push(FieldError::invalid(
                "spec.selector",
                &raw,
                "`selector` not auto-generated",
            ));
        }
    }
}

/// `validateJobSpec` (and, outside a CronJob's template, `ValidateJobSpec`'s selector
/// rules) at `path`.
pub fn validate_job_spec(
    spec: &batch::JobSpec,
    path: &str,
    template: bool,
    errs: &mut Vec<FieldError>,
) {
    let at = |f: &str| format!("{path}.{f}");
    workload::non_negative(spec.parallelism, &at("parallelism"), errs);
    workload::non_negative(spec.completions, &at("completions"), errs);
    workload::non_negative(spec.backoff_limit, &at("backoffLimit"), errs);
    workload::non_negative(
        spec.ttl_seconds_after_finished,
        &at("ttlSecondsAfterFinished"),
        errs,
    );
    if let Some(d) = spec.active_deadline_seconds.filter(|d| *d < 0) {
        errs.push(FieldError::invalid(
            at("activeDeadlineSeconds"),
            &json!(d),
            workload::NONNEGATIVE,
        ));
    }
    let mode = spec.completion_mode.as_deref().unwrap_or("NonIndexed");
    if !COMPLETION_MODES.contains(&mode) {
        errs.push(FieldError::not_supported(
            at("completionMode"),
            &json!(mode),
            COMPLETION_MODES,
        ));
    }
    if mode == "Indexed" {
        match spec.completions {
            None => errs.push(validation_required(
                at("completions"),
                "when completion mode is Indexed",
            )),
            Some(c) if c > MAX_INDEXED_COMPLETIONS => errs.push(FieldError::invalid(
                at("completions"),
                &json!(c),
                format!("must be less than or equal to {MAX_INDEXED_COMPLETIONS} when completion mode is Indexed"),
            )),
            Some(_) => {}
        }
        if let Some(p) = spec.parallelism.filter(|p| *p > MAX_INDEXED_COMPLETIONS) {
            errs.push(FieldError::invalid(
                at("parallelism"),
                &json!(p),
                format!("must be less than or equal to {MAX_INDEXED_COMPLETIONS} when completion mode is Indexed"),
            ));
        }
    }
    // What the controller does not do is refused, never stored and ignored.
    if spec.success_policy.is_some() {
        errs.push(FieldError::forbidden(
            at("successPolicy"),
            "successPolicy is not supported by this server",
        ));
    }
    if spec.backoff_limit_per_index.is_some() {
        errs.push(FieldError::forbidden(
            at("backoffLimitPerIndex"),
            "backoffLimitPerIndex is not supported by this server",
        ));
    }
    if spec.max_failed_indexes.is_some() {
        errs.push(FieldError::forbidden(
            at("maxFailedIndexes"),
            "maxFailedIndexes is not supported by this server",
        ));
    }
    if let Some(m) = &spec.managed_by {
        validate_managed_by(m, &at("managedBy"), errs);
    }
    if let Some(p) = spec.pod_replacement_policy.as_deref() {
        if !REPLACEMENT_POLICIES.contains(&p) {
            errs.push(FieldError::not_supported(
                at("podReplacementPolicy"),
                &json!(p),
                REPLACEMENT_POLICIES,
            ));
        } else if spec.pod_failure_policy.is_some() && p != "Failed" {
            errs.push(FieldError::not_supported(
                at("podReplacementPolicy"),
                &json!(p),
                &["Failed"],
            ));
        }
    }
    let raw_template = serde_json::to_value(&spec.template).unwrap_or(Value::Null);
    validation::validate_pod_template_spec(&raw_template, &at("template"), errs);
    let restart = spec
        .template
        .spec
        .as_ref()
        .and_then(|s| s.restart_policy.as_deref())
        .unwrap_or("");
    if !RESTART_POLICIES.contains(&restart) {
        errs.push(FieldError::not_supported(
            at("template.spec.restartPolicy"),
            &json!(restart),
            RESTART_POLICIES,
        ));
    }
    if let Some(policy) = &spec.pod_failure_policy {
        if restart != "Never" && RESTART_POLICIES.contains(&restart) {
            errs.push(FieldError::invalid(
                at("template.spec.restartPolicy"),
                &json!(restart),
                "only \"Never\" is supported when podFailurePolicy is specified",
            ));
        }
        validate_pod_failure_policy(spec, policy, &at("podFailurePolicy"), errs);
    }
    if template {
        if let Some(sel) = &spec.selector {
            errs.push(FieldError::invalid(
                at("selector"),
                &serde_json::to_value(sel).unwrap_or(Value::Null),
                "`selector` will be auto-generated",
            ));
        }
        if spec.manual_selector == Some(true) {
            errs.push(FieldError::not_supported(
                at("manualSelector"),
                &json!(true),
                &["nil", "false"],
            ));
        }
        return;
    }
    match &spec.selector {
        None => errs.push(FieldError::required(at("selector"))),
        Some(sel) => {
            let raw = serde_json::to_value(sel).unwrap_or(Value::Null);
            match LabelSelector::from_label_selector_value(&raw) {
                Err(e) => errs.push(FieldError::invalid(at("selector"), &raw, e.to_string())),
                Ok(matcher) => {
                    let labels = spec
                        .template
                        .metadata
                        .as_ref()
                        .and_then(|m| m.labels.clone())
                        .unwrap_or_default();
                    if !matcher.matches(&labels) {
                        errs.push(FieldError::invalid(
                            at("template.metadata.labels"),
                            &json!(labels),
                            "`selector` does not match template `labels`",
                        ));
                    }
                }
            }
        }
    }
}

fn validation_required(field: String, detail: &str) -> FieldError {
    let mut e = FieldError::required(field);
    e.detail = detail.to_string();
    e
}

fn validate_managed_by(value: &str, path: &str, errs: &mut Vec<FieldError>) {
    if value.len() > 63 {
        errs.push(FieldError::invalid(
            path,
            &json!(value),
            "must be no more than 63 characters",
        ));
        return;
    }
    let well_formed = value
        .split_once('/')
        .is_some_and(|(domain, name)| validation::is_dns1123_subdomain(domain) && !name.is_empty());
    if !well_formed {
        errs.push(FieldError::invalid(
            path,
            &json!(value),
            "must be a domain-prefixed path (such as \"acme.io/foo\")",
        ));
    }
}

fn validate_pod_failure_policy(
    spec: &batch::JobSpec,
    policy: &batch::PodFailurePolicy,
    path: &str,
    errs: &mut Vec<FieldError>,
) {
    let rules_path = format!("{path}.rules");
    if policy.rules.len() > MAX_POD_FAILURE_POLICY_RULES {
        let mut e = FieldError::invalid(
            &rules_path,
            &json!(policy.rules.len()),
            format!("must have at most {MAX_POD_FAILURE_POLICY_RULES} items"),
        );
        e.kind = validation::FieldErrorKind::TooLong;
        errs.push(e);
        return;
    }
    let pod = spec.template.spec.as_ref();
    let containers: Vec<&str> = pod
        .map(|p| {
            let init = p.init_containers.iter().flatten();
            p.containers
                .iter()
                .chain(init)
                .map(|c| c.name.as_str())
                .collect()
        })
        .unwrap_or_default();
    for (i, rule) in policy.rules.iter().enumerate() {
        let at = format!("{rules_path}[{i}]");
        if !ACTIONS.contains(&rule.action.as_str()) {
            errs.push(FieldError::not_supported(
                format!("{at}.action"),
                &json!(rule.action),
                ACTIONS,
            ));
        } else if rule.action == "FailIndex" && spec.backoff_limit_per_index.is_none() {
            errs.push(FieldError::invalid(
                format!("{at}.action"),
                &json!(rule.action),
                "requires the backoffLimitPerIndex to be set",
            ));
        }
        match (&rule.on_exit_codes, &rule.on_pod_conditions) {
            (Some(_), Some(_)) => errs.push(FieldError::invalid(
                &at,
                &Value::Null,
                "specifying both OnExitCodes and OnPodConditions is not supported",
            )),
            (None, None) => errs.push(FieldError::invalid(
                &at,
                &Value::Null,
                "specifying one of OnExitCodes and OnPodConditions is required",
            )),
            (Some(codes), None) => {
                validate_exit_codes(codes, &containers, &format!("{at}.onExitCodes"), errs)
            }
            (None, Some(patterns)) => {
                for (j, p) in patterns.iter().enumerate() {
                    let pat = format!("{at}.onPodConditions[{j}]");
                    if p.type_.is_empty() {
                        errs.push(FieldError::required(format!("{pat}.type")));
                    }
                    let status = p.status.as_deref().unwrap_or("True");
                    if !["True", "False", "Unknown"].contains(&status) {
                        errs.push(FieldError::not_supported(
                            format!("{pat}.status"),
                            &json!(status),
                            &["False", "True", "Unknown"],
                        ));
                    }
                }
            }
        }
    }
}

fn validate_exit_codes(
    req: &batch::PodFailurePolicyOnExitCodesRequirement,
    containers: &[&str],
    path: &str,
    errs: &mut Vec<FieldError>,
) {
    if let Some(name) = &req.container_name {
        if !containers.contains(&name.as_str()) {
            errs.push(FieldError::invalid(
                format!("{path}.containerName"),
                &json!(name),
                "must be one of the container or initContainer names in the pod template",
            ));
        }
    }
    let op = req.operator.as_str();
    if !["In", "NotIn"].contains(&op) {
        errs.push(FieldError::not_supported(
            format!("{path}.operator"),
            &json!(op),
            &["In", "NotIn"],
        ));
    }
    let values = format!("{path}.values");
    if req.values.is_empty() {
        errs.push(validation_required(
            values.clone(),
            "at least one value is required",
        ));
    } else if req.values.len() > MAX_EXIT_CODE_VALUES {
        let mut e = FieldError::invalid(
            &values,
            &json!(req.values.len()),
            format!("must have at most {MAX_EXIT_CODE_VALUES} items"),
        );
        e.kind = validation::FieldErrorKind::TooLong;
        errs.push(e);
    }
    let mut previous: Option<i32> = None;
    for (k, v) in req.values.iter().enumerate() {
        let at = format!("{values}[{k}]");
        if op == "In" && *v == 0 {
            errs.push(FieldError::invalid(
                &at,
                &json!(v),
                "must not be 0 for the In operator",
            ));
        }
        match previous {
            Some(p) if p == *v => errs.push(validation::duplicate(&at, &json!(v))),
            Some(p) if p > *v => errs.push(FieldError::invalid(&at, &json!(v), "must be ordered")),
            _ => {}
        }
        previous = Some(*v);
    }
}

/// `ValidateJobSpecUpdate`: what a running Job may not change.
pub(super) fn validate_spec_update(
    new: &batch::JobSpec,
    old: &batch::JobSpec,
    errs: &mut Vec<FieldError>,
) {
    let mut same = |field: &str, a: Value, b: Value| {
        if a != b {
            errs.push(FieldError::immutable(format!("spec.{field}"), &a));
        }
    };
    let v = |x: &dyn erased::Ser| x.value();
    same("completions", v(&new.completions), v(&old.completions));
    same("selector", v(&new.selector), v(&old.selector));
    same("template", v(&new.template), v(&old.template));
    same(
        "completionMode",
        v(&new.completion_mode),
        v(&old.completion_mode),
    );
    same(
        "podFailurePolicy",
        v(&new.pod_failure_policy),
        v(&old.pod_failure_policy),
    );
    same("managedBy", v(&new.managed_by), v(&old.managed_by));
}

/// Comparing fields of different types through their JSON form.
mod erased {
    pub trait Ser {
        fn value(&self) -> serde_json::Value;
    }
    impl<T: serde::Serialize> Ser for T {
        fn value(&self) -> serde_json::Value {
            serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
        }
    }
}
