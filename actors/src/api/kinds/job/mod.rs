//! batch/v1 Job: defaults as `SetDefaults_Job`, the selector generated at create from the
//! Job's uid (`PrepareForCreate`'s `generateSelector`) unless `manualSelector` is set,
//! validation as `ValidateJob` / `ValidateJobUpdate` (Kubernetes' paths and wording), the
//! `status` subresource (no `scale`: Jobs have none), and kubectl's columns.
//!
//! Fields whose behaviour the controller does not have are refused rather than stored and
//! ignored: `successPolicy`, `backoffLimitPerIndex`, `maxFailedIndexes` (and with it the
//! `FailIndex` action).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use k8s_openapi::api::batch::v1 as batch;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector as TypedSelector;
use serde_json::{json, Value};

mod rules;

pub use rules::validate_job_spec;
use rules::{validate_generated_selector, validate_spec_update};

use super::{deployment, workload};
use crate::api::patch::ListStrategy;
use crate::api::resources::{schema_of, ResourceInfo, Storage};
use crate::api::strategy::{Part, Typed, TypedStrategy};
use crate::api::validation::FieldError;
use crate::api::{defaults, table};
use crate::runtime::from_time;

pub static INFO: ResourceInfo = ResourceInfo {
    group: "batch",
    version: "v1",
    name: "jobs",
    singular: "job",
    kind: "Job",
    namespaced: true,
    short_names: &[],
    subresources: &["status"],
    has_status_subresource: true,
    field_selectors: &[],
    categories: &["all"],
    schema: Some(schema_of::<batch::Job>),
    strategy: &Typed(JobStrategy),
    storage: Storage::Stored,
};

/// The labels a generated selector puts on the template (legacy and prefixed forms).
pub const CONTROLLER_UID: &str = "batch.kubernetes.io/controller-uid";
pub const LEGACY_CONTROLLER_UID: &str = "controller-uid";
pub const JOB_NAME: &str = "batch.kubernetes.io/job-name";
pub const LEGACY_JOB_NAME: &str = "job-name";
/// The label and annotation of an Indexed Job's pods.
pub const COMPLETION_INDEX: &str = "batch.kubernetes.io/job-completion-index";
/// The pod finalizer of finalizer-based tracking.
pub const TRACKING_FINALIZER: &str = "batch.kubernetes.io/job-tracking";
/// The only `managedBy` this server's controller answers to.
pub const JOB_CONTROLLER_NAME: &str = "kubernetes.io/job-controller";

const COMPLETION_MODES: &[&str] = &["NonIndexed", "Indexed"];
const RESTART_POLICIES: &[&str] = &["OnFailure", "Never"];
const ACTIONS: &[&str] = &["Count", "FailIndex", "FailJob", "Ignore"];
const REPLACEMENT_POLICIES: &[&str] = &["Failed", "TerminatingOrFailed"];
const MAX_INDEXED_COMPLETIONS: i32 = 100_000;
const MAX_POD_FAILURE_POLICY_RULES: usize = 20;
const MAX_EXIT_CODE_VALUES: usize = 255;

#[derive(Debug)]
pub struct JobStrategy;

/// `SetDefaults_Job` on a spec (shared with CronJobs' job templates).
pub fn default_job_spec(spec: &mut batch::JobSpec) {
    if spec.completions.is_none() && spec.parallelism.is_none() {
        spec.completions = Some(1);
    }
    spec.parallelism.get_or_insert(1);
    spec.backoff_limit.get_or_insert(6);
    spec.completion_mode
        .get_or_insert_with(|| "NonIndexed".into());
    spec.suspend.get_or_insert(false);
    let replacement = if spec.pod_failure_policy.is_some() {
        "Failed"
    } else {
        "TerminatingOrFailed"
    };
    spec.pod_replacement_policy
        .get_or_insert_with(|| replacement.into());
    if let Some(policy) = spec.pod_failure_policy.as_mut() {
        for rule in &mut policy.rules {
            for pattern in rule.on_pod_conditions.iter_mut().flatten() {
                pattern.status.get_or_insert_with(|| "True".into());
            }
        }
    }
    if let Some(pod) = spec.template.spec.as_mut() {
        defaults::default_pod_spec_typed(pod);
    }
}

impl TypedStrategy for JobStrategy {
    type Object = batch::Job;
    const KIND: &'static str = "Job";
    const API_VERSION: &'static str = "batch/v1";

    fn default(&self, job: &mut batch::Job) {
        let Some(spec) = job.spec.as_mut() else {
            return;
        };
        default_job_spec(spec);
        // A Job without labels of its own carries its template's.
        let template_labels = spec
            .template
            .metadata
            .as_ref()
            .and_then(|m| m.labels.clone());
        if let Some(labels) = template_labels.filter(|l| !l.is_empty()) {
            if job.metadata.labels.as_ref().is_none_or(BTreeMap::is_empty) {
                job.metadata.labels = Some(labels);
            }
        }
    }

    fn prepare_for_create(&self, job: &mut batch::Job) {
        job.status = Some(Default::default());
        let manual = job
            .spec
            .as_ref()
            .and_then(|s| s.manual_selector)
            .unwrap_or(false);
        if !manual {
            generate_selector(job);
        }
    }

    fn prepare_for_update(&self, _old: &batch::Job, _new: &mut batch::Job, _: Part) {}

    fn validate(&self, job: &batch::Job, old: Option<&batch::Job>) -> Vec<FieldError> {
        let mut errs = Vec::new();
        let Some(spec) = job.spec.as_ref() else {
            errs.push(FieldError::required("spec"));
            return errs;
        };
        if old.is_none() {
            validate_generated_selector(job, &mut errs);
        }
        validate_job_spec(spec, "spec", false, &mut errs);
        if let Some(old) = old.and_then(|o| o.spec.as_ref()) {
            validate_spec_update(spec, old, &mut errs);
        }
        errs
    }

    fn list_strategy(&self, path: &[&str]) -> ListStrategy {
        workload::list_strategy(path)
    }

    fn columns(&self) -> Vec<Value> {
        vec![
            table::name_column(0),
            table::column("Status", "string", 0, "Status of the job."),
            table::column("Completions", "string", 0, "The number of pods which reached phase Succeeded. The value increases monotonically for a given spec. However, it may decrease in reaction to scale down of elastic indexed jobs."),
            table::column("Duration", "string", 0, "Time required to complete the job."),
            table::age_column(),
            table::column("Containers", "string", 1, table::CONTAINERS_DESC),
            table::column("Images", "string", 1, table::IMAGES_DESC),
            table::column("Selector", "string", 1, "A label query over pods that should match the pod count. Normally, the system sets this field for you. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/labels/#label-selectors"),
        ]
    }

    fn cells(&self, job: &batch::Job, raw: &Value, now: DateTime<Utc>) -> Vec<Value> {
        let status = job.status.clone().unwrap_or_default();
        let spec = job.spec.as_ref();
        let succeeded = status.succeeded.unwrap_or(0);
        let completions = match spec.and_then(|s| s.completions) {
            Some(c) => format!("{succeeded}/{c}"),
            None => match spec.and_then(|s| s.parallelism).unwrap_or(0) {
                p if p > 1 => format!("{succeeded}/1 of {p}"),
                _ => format!("{succeeded}/1"),
            },
        };
        let duration = match (&status.start_time, &status.completion_time) {
            (None, _) => String::new(),
            (Some(start), None) => table::human_duration(now - from_time(start)),
            (Some(start), Some(end)) => table::human_duration(from_time(end) - from_time(start)),
        };
        let (containers, images) = deployment::template_cells(spec.map(|s| &s.template));
        vec![
            table::name(raw),
            json!(status_word(job)),
            json!(completions),
            json!(duration),
            table::age(raw, now),
            json!(containers),
            json!(images),
            json!(selector_text(spec.and_then(|s| s.selector.as_ref()))),
        ]
    }
}

/// The STATUS column, in kubectl's order of precedence.
fn status_word(job: &batch::Job) -> &'static str {
    let has = |t: &str| condition_true(job, t);
    if has("Complete") {
        "Complete"
    } else if has("Failed") {
        "Failed"
    } else if job.metadata.deletion_timestamp.is_some() {
        "Terminating"
    } else if has("Suspended") {
        "Suspended"
    } else if has("FailureTarget") {
        "FailureTarget"
    } else if has("SuccessCriteriaMet") {
        "SuccessCriteriaMet"
    } else {
        "Running"
    }
}

/// Whether the Job has a condition of `kind` with status True.
pub fn condition_true(job: &batch::Job, kind: &str) -> bool {
    job.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == kind && c.status == "True"))
}

/// `metav1.FormatLabelSelector`.
pub fn selector_text(selector: Option<&TypedSelector>) -> String {
    selector
        .and_then(workload::selector_of)
        .map(|s| s.to_string())
        .unwrap_or_else(|| "<none>".into())
}

/// `generateSelector`: label the template with the Job's name and uid (unless the user
/// set those labels: a conflict is then refused by validation) and select the uid.
fn generate_selector(job: &mut batch::Job) {
    let name = job.metadata.name.clone().unwrap_or_default();
    let uid = job.metadata.uid.clone().unwrap_or_default();
    let Some(spec) = job.spec.as_mut() else {
        return;
    };
    let meta = spec.template.metadata.get_or_insert_with(Default::default);
    let labels = meta.labels.get_or_insert_with(BTreeMap::new);
    for key in [LEGACY_JOB_NAME, JOB_NAME] {
        labels
            .entry(key.to_string())
            .or_insert_with(|| name.clone());
    }
    for key in [LEGACY_CONTROLLER_UID, CONTROLLER_UID] {
        labels.entry(key.to_string()).or_insert_with(|| uid.clone());
    }
    let selector = spec.selector.get_or_insert_with(Default::default);
    selector
        .match_labels
        .get_or_insert_with(BTreeMap::new)
        .entry(CONTROLLER_UID.to_string())
        .or_insert(uid);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::defaults::defaults_for_create;
    use crate::api::validation::validate_object;

    fn job() -> Value {
        json!({"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": "pi", "namespace": "default"},
            "spec": {"template": {"spec": {"restartPolicy": "Never",
                "containers": [{"name": "c", "image": "busybox"}]}}}})
    }

    fn created(mut j: Value) -> Value {
        defaults_for_create(INFO.strategy, &mut j, Some("default"));
        j
    }

    fn fields(j: &Value, old: Option<&Value>) -> Vec<String> {
        validate_object(&INFO, j, old)
            .into_iter()
            .map(|e| format!("{}: {}", e.field, e.body()))
            .collect()
    }

    #[test]
    fn a_created_job_selects_its_uid_and_labels_its_template_with_name_and_uid() {
        let j = created(job());
        let uid = j["metadata"]["uid"].as_str().expect("uid").to_string();
        assert_eq!(j["spec"]["selector"]["matchLabels"][CONTROLLER_UID], uid);
        let labels = &j["spec"]["template"]["metadata"]["labels"];
        assert_eq!(labels[CONTROLLER_UID], uid);
        assert_eq!(labels[LEGACY_CONTROLLER_UID], uid);
        assert_eq!(labels[JOB_NAME], "pi");
        assert_eq!(labels[LEGACY_JOB_NAME], "pi");
        assert_eq!(j["spec"]["completions"], 1);
        assert_eq!(j["spec"]["parallelism"], 1);
        assert_eq!(j["spec"]["backoffLimit"], 6);
        assert_eq!(j["spec"]["completionMode"], "NonIndexed");
        assert_eq!(j["spec"]["podReplacementPolicy"], "TerminatingOrFailed");
        assert!(fields(&j, None).is_empty(), "{:?}", fields(&j, None));
    }

    #[test]
    fn parallelism_alone_leaves_completions_unset_as_a_work_queue() {
        let mut j = job();
        j["spec"]["parallelism"] = json!(3);
        let j = created(j);
        assert!(j["spec"].get("completions").is_none());
        assert_eq!(j["spec"]["parallelism"], 3);
    }

    #[test]
    fn a_user_selector_without_manual_selector_is_not_auto_generated() {
        let mut j = job();
        j["spec"]["selector"] = json!({"matchLabels": {"app": "x"}});
        j["spec"]["template"]["metadata"] = json!({"labels": {"app": "x"}});
        let f = fields(&created(j), None);
        assert!(
            f.iter()
                .any(|e| e.starts_with("spec.selector: Invalid value")
                    && e.ends_with("`selector` not auto-generated")),
            "{f:?}"
        );
    }

    #[test]
    fn a_manual_selector_must_match_the_template_labels() {
        let mut j = job();
        j["spec"]["manualSelector"] = json!(true);
        j["spec"]["selector"] = json!({"matchLabels": {"app": "a"}});
        j["spec"]["template"]["metadata"] = json!({"labels": {"app": "b"}});
        let f = fields(&created(j), None);
        assert_eq!(f.len(), 1, "{f:?}");
        assert!(f[0].starts_with("spec.template.metadata.labels: Invalid value: "));
        assert!(f[0].ends_with("`selector` does not match template `labels`"));
    }

    #[test]
    fn restart_policy_always_and_indexed_without_completions_are_refused() {
        let mut j = job();
        j["spec"]["template"]["spec"]["restartPolicy"] = json!("Always");
        j["spec"]["completionMode"] = json!("Indexed");
        j["spec"]["parallelism"] = json!(2);
        let f = fields(&created(j), None);
        assert!(
            f.contains(
                &"spec.completions: Required value: when completion mode is Indexed".to_string()
            ),
            "{f:?}"
        );
        assert!(f.contains(&"spec.template.spec.restartPolicy: Unsupported value: \"Always\": supported values: \"OnFailure\", \"Never\"".to_string()), "{f:?}");
    }

    #[test]
    fn fields_without_behaviour_here_are_refused_not_ignored() {
        let mut j = job();
        j["spec"]["successPolicy"] = json!({"rules": [{"succeededCount": 1}]});
        j["spec"]["backoffLimitPerIndex"] = json!(1);
        let f = fields(&created(j), None);
        assert!(
            f.iter()
                .any(|e| e.starts_with("spec.successPolicy: Forbidden")),
            "{f:?}"
        );
        assert!(
            f.iter()
                .any(|e| e.starts_with("spec.backoffLimitPerIndex: Forbidden")),
            "{f:?}"
        );
    }

    #[test]
    fn pod_failure_policy_rules_are_checked_as_kubernetes_does() {
        let mut j = job();
        j["spec"]["podFailurePolicy"] = json!({"rules": [
            {"action": "FailJob", "onExitCodes": {"operator": "In", "values": [0, 3, 2]}},
            {"action": "Ignore"},
            {"action": "FailIndex", "onPodConditions": [{"type": "DisruptionTarget"}]},
        ]});
        let j = created(j);
        assert_eq!(j["spec"]["podReplacementPolicy"], "Failed");
        assert_eq!(
            j["spec"]["podFailurePolicy"]["rules"][2]["onPodConditions"][0]["status"],
            "True"
        );
        let f = fields(&j, None);
        let has = |s: &str| f.iter().any(|e| e.starts_with(s));
        assert!(has("spec.podFailurePolicy.rules[0].onExitCodes.values[0]: Invalid value: 0: must not be 0"), "{f:?}");
        assert!(has("spec.podFailurePolicy.rules[0].onExitCodes.values[2]: Invalid value: 2: must be ordered"), "{f:?}");
        assert!(
            has("spec.podFailurePolicy.rules[1]: Invalid value"),
            "{f:?}"
        );
        assert!(has("spec.podFailurePolicy.rules[2].action: Invalid value: \"FailIndex\": requires the backoffLimitPerIndex"), "{f:?}");
    }

    #[test]
    fn the_template_and_completions_are_immutable() {
        let old = created(job());
        let mut new = old.clone();
        new["spec"]["template"]["spec"]["containers"][0]["image"] = json!("other");
        new["spec"]["completions"] = json!(4);
        let f = fields(&new, Some(&old));
        assert!(
            f.iter()
                .any(|e| e.starts_with("spec.template: Invalid value")
                    && e.ends_with("field is immutable")),
            "{f:?}"
        );
        assert!(
            f.iter()
                .any(|e| e.starts_with("spec.completions: Invalid value: 4")),
            "{f:?}"
        );
        let mut parallel = old.clone();
        parallel["spec"]["parallelism"] = json!(5);
        assert!(fields(&parallel, Some(&old)).is_empty());
    }

    #[test]
    fn the_row_shows_status_completions_and_duration() {
        let mut j = created(job());
        j["spec"]["completions"] = json!(3);
        j["status"] = json!({"succeeded": 3, "startTime": "2026-01-01T00:00:00Z",
            "completionTime": "2026-01-01T00:00:42Z",
            "conditions": [{"type": "Complete", "status": "True"}]});
        let cells = INFO.strategy.cells(&j, Utc::now());
        assert_eq!(cells.len(), INFO.strategy.columns().len());
        assert_eq!(cells[1], "Complete");
        assert_eq!(cells[2], "3/3");
        assert_eq!(cells[3], "42s");
        let mut queue = created(job());
        queue["spec"]
            .as_object_mut()
            .map(|s| s.remove("completions"));
        queue["spec"]["parallelism"] = json!(2);
        let cells = INFO.strategy.cells(&queue, Utc::now());
        assert_eq!(cells[1], "Running");
        assert_eq!(cells[2], "0/1 of 2");
        assert_eq!(cells[3], "");
    }
}
