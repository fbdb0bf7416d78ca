//! batch/v1 CronJob: defaults as `SetDefaults_CronJob` (Allow, not suspended, three
//! successful and one failed Job kept), validation as `ValidateCronJobCreate` /
//! `ValidateCronJobUpdate` (the schedule parsed as robfig/cron's `ParseStandard` with its
//! wording, `TZ=`/`CRON_TZ=` refused in favour of `timeZone`, IANA zones only, the job
//! template validated as a Job's without a selector), the `status` subresource, and
//! kubectl's columns.

pub mod schedule;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use k8s_openapi::api::batch::v1 as batch;
use serde_json::{json, Value};

use super::{deployment, job};
use crate::api::patch::{self, ListStrategy};
use crate::api::resources::{schema_of, ResourceInfo, Storage};
use crate::api::strategy::{Typed, TypedStrategy};
use crate::api::validation::{self, FieldError};
use crate::api::{defaults, table};
use crate::runtime::from_time;

pub static INFO: ResourceInfo = ResourceInfo {
    group: "batch",
    version: "v1",
    name: "cronjobs",
    singular: "cronjob",
    kind: "CronJob",
    namespaced: true,
    short_names: &["cj"],
    subresources: &["status"],
    has_status_subresource: true,
    field_selectors: &[],
    categories: &["all"],
    schema: Some(schema_of::<batch::CronJob>),
    strategy: &Typed(CronJobStrategy),
    storage: Storage::Stored,
};

/// The annotation a scheduled Job carries: its scheduled time, in the CronJob's zone.
pub const SCHEDULED_TIMESTAMP: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";
const POLICIES: &[&str] = &["Allow", "Forbid", "Replace"];
/// A CronJob's Jobs are named `<name>-<minutes>`: 11 characters kept for the suffix.
const MAX_NAME: usize = 52;

#[derive(Debug)]
pub struct CronJobStrategy;

impl TypedStrategy for CronJobStrategy {
    type Object = batch::CronJob;
    const KIND: &'static str = "CronJob";
    const API_VERSION: &'static str = "batch/v1";

    fn default(&self, cj: &mut batch::CronJob) {
        let spec = &mut cj.spec;
        spec.concurrency_policy
            .get_or_insert_with(|| "Allow".into());
        spec.suspend.get_or_insert(false);
        spec.successful_jobs_history_limit.get_or_insert(3);
        spec.failed_jobs_history_limit.get_or_insert(1);
        let pod = spec
            .job_template
            .spec
            .as_mut()
            .and_then(|j| j.template.spec.as_mut());
        if let Some(pod) = pod {
            defaults::default_pod_spec_typed(pod);
        }
        if let Some(policy) = spec
            .job_template
            .spec
            .as_mut()
            .and_then(|j| j.pod_failure_policy.as_mut())
        {
            for rule in &mut policy.rules {
                for p in rule.on_pod_conditions.iter_mut().flatten() {
                    p.status.get_or_insert_with(|| "True".into());
                }
            }
        }
    }

    fn prepare_for_create(&self, cj: &mut batch::CronJob) {
        cj.status = Some(Default::default());
    }

    fn validate(&self, cj: &batch::CronJob, old: Option<&batch::CronJob>) -> Vec<FieldError> {
        let mut errs = Vec::new();
        let name = cj.metadata.name.as_deref().unwrap_or_default();
        if old.is_none() && name.len() > MAX_NAME {
            errs.push(FieldError::invalid(
                "metadata.name",
                &json!(name),
                format!("must be no more than {MAX_NAME} characters"),
            ));
        }
        let spec = &cj.spec;
        // An update may keep a TZ= it already had (Kubernetes' ratcheting), not add one.
        let old_had_tz = old.is_some_and(|o| o.spec.schedule.contains("TZ"));
        validate_schedule(
            &spec.schedule,
            spec.time_zone.as_deref(),
            old_had_tz,
            &mut errs,
        );
        if let Some(tz) = &spec.time_zone {
            validate_time_zone(tz, &mut errs);
        }
        if let Some(d) = spec.starting_deadline_seconds.filter(|d| *d < 0) {
            errs.push(FieldError::invalid(
                "spec.startingDeadlineSeconds",
                &json!(d),
                super::workload::NONNEGATIVE,
            ));
        }
        match spec.concurrency_policy.as_deref() {
            None | Some("") => errs.push(FieldError::required("spec.concurrencyPolicy")),
            Some(p) if !POLICIES.contains(&p) => errs.push(FieldError::not_supported(
                "spec.concurrencyPolicy",
                &json!(p),
                POLICIES,
            )),
            Some(_) => {}
        }
        super::workload::non_negative(
            spec.successful_jobs_history_limit,
            "spec.successfulJobsHistoryLimit",
            &mut errs,
        );
        super::workload::non_negative(
            spec.failed_jobs_history_limit,
            "spec.failedJobsHistoryLimit",
            &mut errs,
        );
        let template = &spec.job_template;
        if let Some(meta) = &template.metadata {
            let raw = serde_json::to_value(meta).unwrap_or(Value::Null);
            if let Some(labels) = raw.get("labels").and_then(Value::as_object) {
                validation::validate_labels(labels, "spec.jobTemplate.metadata.labels", &mut errs);
            }
        }
        match &template.spec {
            Some(js) => job::validate_job_spec(js, "spec.jobTemplate.spec", true, &mut errs),
            None => errs.push(FieldError::required("spec.jobTemplate.spec")),
        }
        errs
    }

    fn list_strategy(&self, path: &[&str]) -> ListStrategy {
        match path {
            ["spec", "jobTemplate", "spec", "template", "metadata", rest @ ..] => {
                patch::object_meta_list(rest)
            }
            ["spec", "jobTemplate", "spec", "template", "spec", rest @ ..] => {
                patch::pod_spec_list(rest)
            }
            ["spec", "jobTemplate", "metadata", rest @ ..] => patch::object_meta_list(rest),
            ["status", "active"] => ListStrategy::Replace,
            _ => ListStrategy::Replace,
        }
    }

    fn columns(&self) -> Vec<Value> {
        vec![
            table::name_column(0),
            table::column("Schedule", "string", 0, "The schedule in Cron format, see https://en.wikipedia.org/wiki/Cron."),
            table::column("Timezone", "string", 0, "The time zone name for the given schedule, see https://en.wikipedia.org/wiki/List_of_tz_database_time_zones. If not specified, this will default to the time zone of the kube-controller-manager process. The set of valid time zone names and the time zone offset is loaded from the system-wide time zone database by the API server during CronJob validation and the controller manager during execution. If no system-wide time zone database can be found a bundled version of the database is used instead. If the time zone name becomes invalid during the lifetime of a CronJob or due to a change in host configuration, the controller will stop creating new new Jobs and will create a system event with the reason UnknownTimeZone. More information can be found in https://kubernetes.io/docs/concepts/workloads/controllers/cron-jobs/#time-zones"),
            table::column("Suspend", "boolean", 0, "This flag tells the controller to suspend subsequent executions, it does not apply to already started executions.  Defaults to false."),
            table::column("Active", "integer", 0, "A list of pointers to currently running jobs."),
            table::column("Last Schedule", "string", 0, "Information when was the last time the job was successfully scheduled."),
            table::age_column(),
            table::column("Containers", "string", 1, table::CONTAINERS_DESC),
            table::column("Images", "string", 1, table::IMAGES_DESC),
            table::column("Selector", "string", 1, "A label query over pods that should match the pod count. Normally, the system sets this field for you. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/labels/#label-selectors"),
        ]
    }

    fn cells(&self, cj: &batch::CronJob, raw: &Value, now: DateTime<Utc>) -> Vec<Value> {
        let spec = cj.spec.clone();
        let status = cj.status.clone().unwrap_or_default();
        let job_spec = spec.job_template.spec.as_ref();
        let (containers, images) = deployment::template_cells(job_spec.map(|s| &s.template));
        let last = status
            .last_schedule_time
            .map(|t| table::human_duration(now - from_time(&t)))
            .unwrap_or_else(|| "<none>".into());
        let suspend = match spec.suspend {
            None => "<unset>",
            Some(true) => "True",
            Some(false) => "False",
        };
        vec![
            table::name(raw),
            json!(spec.schedule),
            json!(spec.time_zone.as_deref().unwrap_or("<none>")),
            json!(suspend),
            json!(status.active.map(|a| a.len()).unwrap_or(0)),
            json!(last),
            table::age(raw, now),
            json!(containers),
            json!(images),
            json!(job::selector_text(
                job_spec.and_then(|s| s.selector.as_ref())
            )),
        ]
    }
}

/// `validateScheduleFormat`.
fn validate_schedule(s: &str, time_zone: Option<&str>, allow_tz: bool, errs: &mut Vec<FieldError>) {
    let path = "spec.schedule";
    if s.is_empty() {
        errs.push(FieldError::required(path));
        return;
    }
    if let Err(e) = schedule::parse(s) {
        errs.push(FieldError::invalid(path, &json!(s), e));
    }
    if s.contains("TZ") {
        if !allow_tz {
            errs.push(FieldError::invalid(
                path,
                &json!(s),
                "cannot use TZ or CRON_TZ in schedule, use timeZone field instead",
            ));
        } else if time_zone.is_some() {
            errs.push(FieldError::invalid(
                path,
                &json!(s),
                "cannot use both timeZone field and TZ or CRON_TZ in schedule",
            ));
        }
    }
}

/// `validateTimeZone`: an explicit IANA name.
fn validate_time_zone(tz: &str, errs: &mut Vec<FieldError>) {
    let path = "spec.timeZone";
    if tz.is_empty() {
        errs.push(FieldError::invalid(
            path,
            &json!(tz),
            "timeZone must be nil or non-empty string",
        ));
        return;
    }
    if tz.eq_ignore_ascii_case("local") {
        errs.push(FieldError::invalid(
            path,
            &json!(tz),
            "timeZone must be an explicit time zone as defined in https://www.iana.org/time-zones",
        ));
        return;
    }
    if zone(Some(tz)).is_none() {
        errs.push(FieldError::invalid(
            path,
            &json!(tz),
            format!("unknown time zone {tz}"),
        ));
    }
}

/// The zone a CronJob's schedule runs in: its `timeZone`, or UTC (the zone this
/// controller-manager runs in) when unset; `None` for a name the database lacks.
pub fn zone(name: Option<&str>) -> Option<Tz> {
    match name {
        None => Some(Tz::UTC),
        Some(n) => n.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::defaults::defaults_for_create;
    use crate::api::validation::validate_object;

    fn cron_job(schedule: &str) -> Value {
        json!({"apiVersion": "batch/v1", "kind": "CronJob",
            "metadata": {"name": "tick", "namespace": "default"},
            "spec": {"schedule": schedule, "jobTemplate": {"spec": {"template": {"spec": {
                "restartPolicy": "OnFailure",
                "containers": [{"name": "c", "image": "busybox"}]}}}}}})
    }

    fn fields(cj: &Value, old: Option<&Value>) -> Vec<String> {
        let mut cj = cj.clone();
        defaults_for_create(INFO.strategy, &mut cj, Some("default"));
        validate_object(&INFO, &cj, old)
            .into_iter()
            .map(|e| format!("{}: {}", e.field, e.body()))
            .collect()
    }

    #[test]
    fn defaults_are_kubernetes_ones() {
        let mut cj = cron_job("*/5 * * * *");
        defaults_for_create(INFO.strategy, &mut cj, Some("default"));
        assert_eq!(cj["spec"]["concurrencyPolicy"], "Allow");
        assert_eq!(cj["spec"]["suspend"], false);
        assert_eq!(cj["spec"]["successfulJobsHistoryLimit"], 3);
        assert_eq!(cj["spec"]["failedJobsHistoryLimit"], 1);
        assert!(cj["spec"]["jobTemplate"]["spec"]
            .get("backoffLimit")
            .is_none());
        assert!(fields(&cron_job("*/5 * * * *"), None).is_empty());
    }

    #[test]
    fn an_invalid_schedule_is_refused_at_spec_schedule_in_robfigs_words() {
        assert_eq!(
            fields(&cron_job("not a schedule"), None),
            ["spec.schedule: Invalid value: \"not a schedule\": expected exactly 5 fields, found 3: [not a schedule]"]
        );
    }

    #[test]
    fn tz_in_the_schedule_is_refused_in_favour_of_time_zone() {
        assert_eq!(
            fields(&cron_job("TZ=UTC 0 * * * *"), None),
            ["spec.schedule: Invalid value: \"TZ=UTC 0 * * * *\": cannot use TZ or CRON_TZ in schedule, use timeZone field instead"]
        );
    }

    #[test]
    fn time_zones_must_be_iana_names() {
        let mut cj = cron_job("0 * * * *");
        cj["spec"]["timeZone"] = json!("Mars/Olympus");
        assert_eq!(
            fields(&cj, None),
            ["spec.timeZone: Invalid value: \"Mars/Olympus\": unknown time zone Mars/Olympus"]
        );
        cj["spec"]["timeZone"] = json!("Europe/Berlin");
        assert!(fields(&cj, None).is_empty());
    }

    #[test]
    fn a_job_template_may_not_carry_a_selector_or_restart_always() {
        let mut cj = cron_job("0 * * * *");
        cj["spec"]["jobTemplate"]["spec"]["selector"] = json!({"matchLabels": {"a": "b"}});
        cj["spec"]["jobTemplate"]["spec"]["template"]["spec"]["restartPolicy"] = json!("Always");
        cj["spec"]["concurrencyPolicy"] = json!("Sometimes");
        let f = fields(&cj, None);
        assert!(
            f.iter().any(
                |e| e.starts_with("spec.jobTemplate.spec.selector: Invalid value")
                    && e.ends_with("`selector` will be auto-generated")
            ),
            "{f:?}"
        );
        assert!(
            f.iter().any(|e| e.starts_with(
                "spec.jobTemplate.spec.template.spec.restartPolicy: Unsupported value"
            )),
            "{f:?}"
        );
        assert!(
            f.iter()
                .any(|e| e.starts_with("spec.concurrencyPolicy: Unsupported value: \"Sometimes\"")),
            "{f:?}"
        );
    }

    #[test]
    fn the_row_shows_schedule_zone_suspend_and_active() {
        let mut cj = cron_job("*/1 * * * *");
        defaults_for_create(INFO.strategy, &mut cj, Some("default"));
        cj["status"] = json!({"active": [{"name": "tick-1"}]});
        let cells = INFO.strategy.cells(&cj, Utc::now());
        assert_eq!(cells.len(), INFO.strategy.columns().len());
        assert_eq!(cells[1], "*/1 * * * *");
        assert_eq!(cells[2], "<none>");
        assert_eq!(cells[3], "False");
        assert_eq!(cells[4], 1);
        assert_eq!(cells[5], "<none>");
    }
}
