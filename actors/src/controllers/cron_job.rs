//! The CronJob controller (Kubernetes' `pkg/controller/cronjob`, v2): at each scheduled
//! time, in the CronJob's `timeZone`, it creates the Job `<name>-<minutes since epoch>`
//! from the template (annotated with its scheduled time), honouring `concurrencyPolicy`,
//! `startingDeadlineSeconds` (and warning of more than 100 missed start times), `suspend`
//! and the history limits; `status.active`, `lastScheduleTime` and `lastSuccessfulTime`
//! follow its Jobs. Time comes from a [`SharedClock`], so schedules are tested on a fake
//! one.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use chrono_tz::Tz;
use k8s_openapi::api::batch::v1 as batch;
use k8s_openapi::api::core::v1::ObjectReference;
use serde_json::{json, Value};

use super::pods::controller_ref;
use crate::api::kinds::cron_job::{self, schedule, SCHEDULED_TIMESTAMP};
use crate::api::strategy::typed;
use crate::api::{meta, ApiError};
use crate::client::PatchType;
use crate::runtime::{
    from_time, key_of, split_key, to_time, Action, Change, Context, InformerSpec, ReconcileError,
    Reconciler, SharedClock, OWNER_UID,
};

/// More missed start times than this get the `TooManyMissedTimes` warning.
const MISSED_CAP: u32 = 100;

pub struct CronJobController {
    clock: SharedClock,
}

impl CronJobController {
    pub fn new(clock: SharedClock) -> Self {
        CronJobController { clock }
    }
}

/// What to do about the schedule now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// No start time is due; the next one is at `next` (if any).
    Wait { next: Option<DateTime<Utc>> },
    /// Start the Job of `scheduled` (`missed` start times were due since the last one).
    Start {
        scheduled: DateTime<Utc>,
        missed: u32,
        next: Option<DateTime<Utc>>,
    },
    /// `scheduled` was due, but is past its starting deadline.
    TooLate {
        scheduled: DateTime<Utc>,
        next: Option<DateTime<Utc>>,
    },
}

/// The schedule's verdict at `now`, as `nextScheduleTime` and the deadline check have it.
pub fn plan(cj: &batch::CronJob, sched: &schedule::Schedule, tz: Tz, now: DateTime<Utc>) -> Plan {
    let spec = cj.spec.clone();
    let status = cj.status.clone().unwrap_or_default();
    let created = cj
        .metadata
        .creation_timestamp
        .as_ref()
        .map(from_time)
        .unwrap_or(now);
    let mut earliest = status
        .last_schedule_time
        .as_ref()
        .map(from_time)
        .unwrap_or(created);
    if let Some(deadline) = spec.starting_deadline_seconds {
        let bound = now - chrono::Duration::seconds(deadline);
        if bound > earliest {
            earliest = bound;
        }
    }
    let next = sched.next(now, tz);
    let (recent, missed) = schedule::most_recent(sched, tz, earliest, now, MISSED_CAP);
    let Some(scheduled) = recent else {
        return Plan::Wait { next };
    };
    if let Some(deadline) = spec.starting_deadline_seconds {
        if scheduled + chrono::Duration::seconds(deadline) < now {
            return Plan::TooLate { scheduled, next };
        }
    }
    Plan::Start {
        scheduled,
        missed,
        next,
    }
}

/// `getJobName`: the CronJob's name and the scheduled time in minutes since the epoch.
pub fn job_name(cron_job: &str, scheduled: DateTime<Utc>) -> String {
    format!("{cron_job}-{}", scheduled.timestamp().div_euclid(60))
}

fn finished(job: &batch::Job) -> Option<&'static str> {
    let conditions = job.status.as_ref()?.conditions.as_ref()?;
    for kind in ["Complete", "Failed"] {
        if conditions
            .iter()
            .any(|c| c.type_ == kind && c.status == "True")
        {
            return Some(if kind == "Complete" {
                "Complete"
            } else {
                "Failed"
            });
        }
    }
    None
}

fn reference(job: &Value) -> ObjectReference {
    ObjectReference {
        api_version: Some("batch/v1".into()),
        kind: Some("Job".into()),
        name: meta::name(job).map(str::to_string),
        namespace: meta::namespace(job).map(str::to_string),
        uid: meta::uid(job).map(str::to_string),
        resource_version: meta::resource_version(job).map(str::to_string),
        ..Default::default()
    }
}

#[async_trait::async_trait]
impl Reconciler for CronJobController {
    fn name(&self) -> &'static str {
        "cronjob-controller"
    }

    fn informers(&self) -> Vec<InformerSpec> {
        vec![InformerSpec::all("cronjobs"), InformerSpec::all("jobs")]
    }

    fn keys_for(&self, resource: &str, change: &Change, _ctx: &Context) -> Vec<String> {
        if resource == "cronjobs" {
            return vec![key_of(&change.object)];
        }
        let job = &change.object;
        let ns = meta::namespace(job).unwrap_or_default();
        controller_ref(job)
            .filter(|r| r.get("kind") == Some(&json!("CronJob")))
            .and_then(|r| r.get("name").and_then(Value::as_str))
            .map(|name| vec![format!("{ns}/{name}")])
            .unwrap_or_default()
    }

    async fn reconcile(&self, key: &str, ctx: &Context) -> Result<Action, ReconcileError> {
        match self.sync(key, ctx).await {
            // The cache was behind this controller's last status write; its event follows.
            Err(ReconcileError::Api(ApiError::Conflict { .. })) => {
                Ok(Action::RequeueAfter(Duration::from_millis(200)))
            }
            other => other,
        }
    }
}

impl CronJobController {
    async fn sync(&self, key: &str, ctx: &Context) -> Result<Action, ReconcileError> {
        let Some(raw) = ctx.cache("cronjobs").get(key) else {
            return Ok(Action::Done);
        };
        let Some(cj) = typed::<batch::CronJob>(&raw) else {
            return Err(ReconcileError::Invalid(format!(
                "cronjob {key} does not decode"
            )));
        };
        let (ns, name) = split_key(key);
        let ns = ns.unwrap_or("default");
        let now = self.clock.now();
        let cj_uid = cj.metadata.uid.clone().unwrap_or_default();
        let children: Vec<Arc<Value>> = ctx
            .cache("jobs")
            .by_index(OWNER_UID, &cj_uid)
            .into_iter()
            .filter(|j| {
                controller_ref(j)
                    .and_then(|r| r.get("uid"))
                    .and_then(Value::as_str)
                    == Some(cj_uid.as_str())
            })
            .collect();
        let old_status = cj.status.clone().unwrap_or_default();
        let mut status = old_status.clone();

        // 1. The active list follows the Jobs: finished ones leave it, missing ones too,
        //    and an unfinished child it does not list joins it.
        let mut active = status.active.clone().unwrap_or_default();
        for child in &children {
            let Some(job) = typed::<batch::Job>(child) else {
                continue;
            };
            let listed = active.iter().any(|r| r.uid == job.metadata.uid);
            match finished(&job) {
                Some(how) => {
                    if listed {
                        active.retain(|r| r.uid != job.metadata.uid);
                        let msg = format!(
                            "Saw completed job: {}, condition: {how}",
                            meta::name(child).unwrap_or_default()
                        );
                        ctx.recorder.normal(&raw, "SawCompletedJob", &msg).await;
                    }
                    if how == "Complete" {
                        let done = job.status.as_ref().and_then(|s| s.completion_time.clone());
                        if let Some(t) = done {
                            if status
                                .last_successful_time
                                .as_ref()
                                .is_none_or(|l| from_time(l) < from_time(&t))
                            {
                                status.last_successful_time = Some(t);
                            }
                        }
                    }
                }
                None if !listed && job.metadata.deletion_timestamp.is_none() => {
                    active.push(reference(child));
                }
                None => {}
            }
        }
        let mut missing = Vec::new();
        active.retain(|r| {
            let present = children.iter().any(|c| meta::uid(c) == r.uid.as_deref());
            if !present {
                missing.push(r.name.clone().unwrap_or_default());
            }
            present
        });
        for m in missing {
            ctx.recorder
                .normal(&raw, "MissingJob", &format!("Active job went missing: {m}"))
                .await;
        }
        status.active = (!active.is_empty()).then_some(active.clone());

        // 2. History limits.
        self.clean_history(ctx, &raw, &cj, &children, ns).await?;

        if cj.metadata.deletion_timestamp.is_some() {
            self.write_status(ctx, &cj, &old_status, &status).await?;
            return Ok(Action::Done);
        }
        let spec = cj.spec.clone();
        let Some(tz) = cron_job::zone(spec.time_zone.as_deref()) else {
            let zone = spec.time_zone.clone().unwrap_or_default();
            ctx.recorder
                .warning(
                    &raw,
                    "UnknownTimeZone",
                    &format!("invalid timeZone: {zone:?}: unknown time zone {zone}"),
                )
                .await;
            self.write_status(ctx, &cj, &old_status, &status).await?;
            return Ok(Action::Done);
        };
        let sched = match schedule::parse(&spec.schedule) {
            Ok(s) => s,
            Err(e) => {
                let msg = format!("unparseable schedule: {:?} : {e}", spec.schedule);
                ctx.recorder
                    .warning(&raw, "UnparseableSchedule", &msg)
                    .await;
                self.write_status(ctx, &cj, &old_status, &status).await?;
                return Ok(Action::Done);
            }
        };

        // 3. What the schedule says now.
        let decision = plan(&cj, &sched, tz, now);
        let next = match &decision {
            Plan::Wait { next } | Plan::TooLate { next, .. } | Plan::Start { next, .. } => *next,
        };
        let requeue = |next: Option<DateTime<Utc>>| match next {
            Some(t) => {
                let wait =
                    (t - now).to_std().unwrap_or(Duration::ZERO) + Duration::from_millis(100);
                Action::RequeueAfter(self.clock.sleep_for(wait))
            }
            None => Action::Done,
        };
        let (scheduled, missed) = match decision {
            Plan::Wait { .. } => {
                self.write_status(ctx, &cj, &old_status, &status).await?;
                return Ok(requeue(next));
            }
            Plan::TooLate { scheduled, .. } => {
                let when = scheduled.format("%a, %d %b %Y %H:%M:%S %z");
                ctx.recorder
                    .warning(
                        &raw,
                        "MissSchedule",
                        &format!("Missed scheduled time to start a job: {when}"),
                    )
                    .await;
                self.write_status(ctx, &cj, &old_status, &status).await?;
                return Ok(requeue(next));
            }
            Plan::Start {
                scheduled, missed, ..
            } => (scheduled, missed),
        };
        if spec.suspend == Some(true) {
            tracing::debug!(cronjob = %key, "not starting job because the cron is suspended");
            self.write_status(ctx, &cj, &old_status, &status).await?;
            return Ok(Action::Done);
        }
        if missed > MISSED_CAP {
            let msg = format!("too many missed start times: {missed}. Set or decrease .spec.startingDeadlineSeconds or check clock skew");
            ctx.recorder.warning(&raw, "TooManyMissedTimes", &msg).await;
        }
        let job_name = job_name(name, scheduled);
        let already = active
            .iter()
            .any(|r| r.name.as_deref() == Some(job_name.as_str()))
            || status
                .last_schedule_time
                .as_ref()
                .is_some_and(|t| from_time(t) == scheduled);
        if already {
            // The Job of this time exists (a status write lost to a conflict after its
            // create): it was scheduled, and the status says so.
            let behind = status
                .last_schedule_time
                .as_ref()
                .is_none_or(|t| from_time(t) < scheduled);
            if behind {
                status.last_schedule_time = Some(to_time(scheduled));
            }
            self.write_status(ctx, &cj, &old_status, &status).await?;
            return Ok(requeue(next));
        }
        let policy = spec.concurrency_policy.as_deref().unwrap_or("Allow");
        if policy == "Forbid" && !active.is_empty() {
            ctx.recorder
                .normal(&raw, "JobAlreadyActive", "Not starting job because prior execution is running and concurrency policy is Forbid")
                .await;
            self.write_status(ctx, &cj, &old_status, &status).await?;
            return Ok(requeue(next));
        }
        if policy == "Replace" {
            for r in std::mem::take(&mut active) {
                let job = r.name.clone().unwrap_or_default();
                match ctx
                    .client
                    .delete("jobs", Some(ns), &job, Some("Background"))
                    .await
                {
                    Ok(_) | Err(ApiError::NotFound { .. }) => {
                        ctx.recorder
                            .normal(&raw, "SuccessfulDelete", &format!("Deleted job {job}"))
                            .await;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }

        // 4. The Job of this scheduled time.
        let job = self.job_for(&cj, &job_name, scheduled, tz);
        match ctx.client.create("jobs", Some(ns), job).await {
            Ok(created) => {
                ctx.recorder
                    .normal(&raw, "SuccessfulCreate", &format!("Created job {job_name}"))
                    .await;
                active.push(reference(&created));
            }
            // Made already (a restart between create and status): it is a child, and
            // the next pass lists it.
            Err(ApiError::AlreadyExists { .. }) => {}
            Err(e) => {
                ctx.recorder
                    .warning(&raw, "FailedCreate", &format!("Error creating job: {e}"))
                    .await;
                return Err(e.into());
            }
        }
        status.active = (!active.is_empty()).then_some(active);
        status.last_schedule_time = Some(to_time(scheduled));
        self.write_status(ctx, &cj, &old_status, &status).await?;
        Ok(requeue(next))
    }

    fn job_for(&self, cj: &batch::CronJob, name: &str, scheduled: DateTime<Utc>, tz: Tz) -> Value {
        let spec = cj.spec.clone();
        let template = serde_json::to_value(&spec.job_template).unwrap_or(json!({}));
        let mut annotations = template
            .pointer("/metadata/annotations")
            .cloned()
            .unwrap_or(json!({}));
        annotations[SCHEDULED_TIMESTAMP] = json!(scheduled
            .with_timezone(&tz)
            .to_rfc3339_opts(SecondsFormat::Secs, true));
        json!({
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {
                "name": name,
                "labels": template.pointer("/metadata/labels").cloned().unwrap_or(json!({})),
                "annotations": annotations,
                "ownerReferences": [{
                    "apiVersion": "batch/v1",
                    "kind": "CronJob",
                    "name": cj.metadata.name,
                    "uid": cj.metadata.uid,
                    "controller": true,
                    "blockOwnerDeletion": true,
                }],
            },
            "spec": template.get("spec").cloned().unwrap_or(json!({})),
        })
    }

    /// Delete the oldest finished Jobs beyond `successfulJobsHistoryLimit` and
    /// `failedJobsHistoryLimit`.
    async fn clean_history(
        &self,
        ctx: &Context,
        raw: &Value,
        cj: &batch::CronJob,
        children: &[Arc<Value>],
        ns: &str,
    ) -> Result<(), ReconcileError> {
        let spec = cj.spec.clone();
        for (how, limit) in [
            ("Complete", spec.successful_jobs_history_limit),
            ("Failed", spec.failed_jobs_history_limit),
        ] {
            let Some(limit) = limit else { continue };
            let mut done: Vec<(Option<DateTime<Utc>>, String)> = children
                .iter()
                .filter_map(|c| typed::<batch::Job>(c))
                .filter(|j| j.metadata.deletion_timestamp.is_none() && finished(j) == Some(how))
                .map(|j| {
                    let start = j
                        .status
                        .as_ref()
                        .and_then(|s| s.start_time.as_ref())
                        .map(from_time);
                    (start, j.metadata.name.unwrap_or_default())
                })
                .collect();
            let keep = limit.max(0) as usize;
            if done.len() <= keep {
                continue;
            }
            // Oldest first; a Job that never started counts as oldest.
            done.sort();
            let surplus = done.len() - keep;
            for (_, job) in done.into_iter().take(surplus) {
                match ctx
                    .client
                    .delete("jobs", Some(ns), &job, Some("Background"))
                    .await
                {
                    Ok(_) => {
                        ctx.recorder
                            .normal(raw, "SuccessfulDelete", &format!("Deleted job {job}"))
                            .await;
                    }
                    Err(ApiError::NotFound { .. }) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(())
    }

    /// Write `new` if it differs from `old`, guarded by the resourceVersion the status was
    /// computed from: a view of the CronJob older than this controller's last write must
    /// not undo it (a Conflict sends the reconcile round again).
    async fn write_status(
        &self,
        ctx: &Context,
        cj: &batch::CronJob,
        old: &batch::CronJobStatus,
        new: &batch::CronJobStatus,
    ) -> Result<(), ReconcileError> {
        let ns = cj.metadata.namespace.as_deref().unwrap_or("default");
        let name = cj.metadata.name.as_deref().unwrap_or_default();
        if serde_json::to_value(old).ok() == serde_json::to_value(new).ok() {
            return Ok(());
        }
        let mut body = serde_json::to_value(new).unwrap_or(json!({}));
        if body.get("active").is_none() {
            body["active"] = Value::Null;
        }
        match ctx
            .client
            .patch(
                "cronjobs",
                Some(ns),
                name,
                Some("status"),
                PatchType::Merge,
                json!({"status": body}),
            )
            .await
        {
            Ok(_) | Err(ApiError::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("time")
            .with_timezone(&Utc)
    }

    fn cron_job(
        schedule: &str,
        created: &str,
        last: Option<&str>,
        deadline: Option<i64>,
    ) -> batch::CronJob {
        serde_json::from_value(json!({
            "metadata": {"name": "tick", "creationTimestamp": created},
            "spec": {"schedule": schedule, "startingDeadlineSeconds": deadline,
                "jobTemplate": {"spec": {"template": {}}}},
            "status": {"lastScheduleTime": last},
        }))
        .expect("cronjob")
    }

    fn verdict(cj: &batch::CronJob, tz: &str, now: &str) -> Plan {
        let s = schedule::parse(&cj.spec.schedule).expect("schedule");
        plan(cj, &s, tz.parse().expect("tz"), t(now))
    }

    #[test]
    fn nothing_is_due_before_the_first_scheduled_minute() {
        let cj = cron_job("*/5 * * * *", "2026-01-01T00:01:00Z", None, None);
        assert_eq!(
            verdict(&cj, "UTC", "2026-01-01T00:04:59Z"),
            Plan::Wait {
                next: Some(t("2026-01-01T00:05:00Z"))
            }
        );
    }

    #[test]
    fn the_most_recent_due_time_starts_and_missed_ones_are_counted() {
        let cj = cron_job("*/5 * * * *", "2026-01-01T00:01:00Z", None, None);
        assert_eq!(
            verdict(&cj, "UTC", "2026-01-01T00:17:00Z"),
            Plan::Start {
                scheduled: t("2026-01-01T00:15:00Z"),
                missed: 3,
                next: Some(t("2026-01-01T00:20:00Z"))
            }
        );
        let after_last = cron_job(
            "*/5 * * * *",
            "2026-01-01T00:01:00Z",
            Some("2026-01-01T00:15:00Z"),
            None,
        );
        assert!(matches!(
            verdict(&after_last, "UTC", "2026-01-01T00:19:00Z"),
            Plan::Wait { .. }
        ));
    }

    #[test]
    fn more_than_a_hundred_missed_times_are_reported_and_the_latest_still_starts() {
        let cj = cron_job("* * * * *", "2026-01-01T00:00:00Z", None, None);
        match verdict(&cj, "UTC", "2026-01-01T03:00:30Z") {
            Plan::Start {
                scheduled, missed, ..
            } => {
                assert_eq!(scheduled, t("2026-01-01T03:00:00Z"));
                assert!(missed > MISSED_CAP);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_starting_deadline_bounds_how_far_back_times_are_looked_for() {
        // Last run at 00:00; now 03:00:30 with a 60 s deadline: only 03:00 is in reach.
        let cj = cron_job(
            "* * * * *",
            "2026-01-01T00:00:00Z",
            Some("2026-01-01T00:00:00Z"),
            Some(60),
        );
        match verdict(&cj, "UTC", "2026-01-01T03:00:30Z") {
            Plan::Start {
                scheduled, missed, ..
            } => {
                assert_eq!(scheduled, t("2026-01-01T03:00:00Z"));
                assert_eq!(missed, 1);
            }
            other => panic!("{other:?}"),
        }
        // An hourly schedule 10 minutes past its time with a 5 minute deadline: nothing in
        // the window.
        let hourly = cron_job("0 * * * *", "2026-01-01T00:00:00Z", None, Some(300));
        assert!(matches!(
            verdict(&hourly, "UTC", "2026-01-01T01:10:00Z"),
            Plan::Wait { .. }
        ));
    }

    #[test]
    fn schedules_run_in_the_cron_jobs_time_zone() {
        let cj = cron_job("0 9 * * *", "2025-12-31T23:59:00Z", None, None);
        assert_eq!(
            verdict(&cj, "Asia/Tokyo", "2026-01-01T00:00:30Z"),
            Plan::Start {
                scheduled: t("2026-01-01T00:00:00Z"),
                missed: 1,
                next: Some(t("2026-01-02T00:00:00Z"))
            }
        );
        assert_eq!(
            verdict(&cj, "Europe/Berlin", "2026-01-01T00:00:30Z"),
            Plan::Wait {
                next: Some(t("2026-01-01T08:00:00Z"))
            }
        );
    }

    #[test]
    fn job_names_count_minutes_since_the_epoch() {
        assert_eq!(job_name("tick", t("2026-01-01T00:00:00Z")), "tick-29453760");
    }
}
