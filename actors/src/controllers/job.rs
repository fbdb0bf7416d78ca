//! The Job controller (Kubernetes' `pkg/controller/job`): runs a Job's pods to
//! `completions` with at most `parallelism` at once, replaces failed ones after an
//! exponential back-off until `backoffLimit` is passed, stops at `activeDeadlineSeconds`,
//! honours `suspend`, the pod failure policy, `Indexed` completion (one pod per index, the
//! index in an annotation, a label, `JOB_COMPLETION_INDEX` and the hostname) and the
//! `Failed` replacement policy, and writes the conditions Kubernetes writes
//! (`FailureTarget`/`SuccessCriteriaMet` first, `Failed`/`Complete` once no pod is left).
//!
//! Pods are tracked with the `batch.kubernetes.io/job-tracking` finalizer, as Kubernetes
//! does: a finished pod's UID is first written to `status.uncountedTerminatedPods`, then
//! its finalizer removed, then it moves into `succeeded`/`failed`, so that a pod deleted
//! the moment it finishes is still counted exactly once, across controller restarts too.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use k8s_openapi::api::batch::v1 as batch;
use serde_json::{json, Value};

use super::job_tracking::{self as tracking, FailureAction};
use super::pods::{self, controller_ref};
use crate::api::kinds::job::{JOB_CONTROLLER_NAME, TRACKING_FINALIZER};
use crate::api::strategy::typed;
use crate::api::{meta, ApiError};
use crate::client::{EventKind, PatchType};
use crate::runtime::{
    key_of, split_key, to_time, Action, Change, Context, InformerSpec, ReconcileError, Reconciler,
    SharedClock, OWNER_UID,
};

/// The controller's knobs (`[controllers] job_backoff_*`).
#[derive(Debug, Clone)]
pub struct JobConfig {
    /// The first back-off after a failed pod; it doubles per failure in a row.
    pub backoff_base: Duration,
    /// The longest back-off.
    pub backoff_max: Duration,
}

impl Default for JobConfig {
    fn default() -> Self {
        JobConfig {
            backoff_base: Duration::from_secs(10),
            backoff_max: Duration::from_secs(360),
        }
    }
}

/// What the controller remembers of one Job between reconciles.
#[derive(Debug, Default)]
pub(super) struct Memory {
    /// Pod creates and deletions asked for but not yet seen in the cache.
    pub(super) adds: i64,
    pub(super) dels: i64,
    pub(super) set: Option<Instant>,
    /// Pods whose finalizer this controller removed (the cache may lag behind).
    pub(super) finalized: HashSet<String>,
    /// Pods this controller deleted (suspend, excess, deadline): not failures.
    pub(super) deleted: HashSet<String>,
    /// Failures since the last success, and when the last one was seen.
    pub(super) failures_in_row: u32,
    pub(super) last_failure: Option<DateTime<Utc>>,
}

const EXPECTATIONS_TTL: Duration = Duration::from_secs(300);

pub struct JobController {
    pub(super) config: JobConfig,
    pub(super) clock: SharedClock,
    memory: Mutex<HashMap<String, Memory>>,
}

impl JobController {
    pub fn new(config: JobConfig, clock: SharedClock) -> Self {
        JobController {
            config,
            clock,
            memory: Mutex::new(HashMap::new()),
        }
    }

    pub(super) fn with_memory<T>(&self, key: &str, f: impl FnOnce(&mut Memory) -> T) -> T {
        let mut all = self.memory.lock().unwrap_or_else(|e| e.into_inner());
        f(all.entry(key.to_string()).or_default())
    }

    fn satisfied(&self, key: &str) -> bool {
        self.with_memory(key, |m| {
            (m.adds <= 0 && m.dels <= 0) || m.set.is_some_and(|s| s.elapsed() > EXPECTATIONS_TTL)
        })
    }

    fn observe(&self, key: &str, change: &Change) {
        self.with_memory(key, |m| match change.kind {
            EventKind::Added => m.adds -= 1,
            EventKind::Modified => {
                let was = change.old.as_deref().is_some_and(pods::is_deleting);
                if pods::is_deleting(&change.object) && !was {
                    m.dels -= 1;
                }
            }
            EventKind::Deleted => {
                let seen = change.old.as_deref().is_some_and(pods::is_deleting)
                    || pods::is_deleting(&change.object);
                if !seen {
                    m.dels -= 1;
                }
            }
        });
    }
}

fn has_finalizer(pod: &Value) -> bool {
    pod.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .is_some_and(|f| f.iter().any(|x| x == TRACKING_FINALIZER))
}

/// A deleted pod whose kubelet has stopped it (its final delete sets the grace period to
/// 0), or that never ran: it will not reach a phase of its own.
fn stopped(pod: &Value) -> bool {
    pods::is_deleting(pod)
        && pod
            .pointer("/metadata/deletionGracePeriodSeconds")
            .and_then(Value::as_i64)
            == Some(0)
}

fn phase(pod: &Value) -> &str {
    pod.pointer("/status/phase")
        .and_then(Value::as_str)
        .unwrap_or("")
}

pub(super) fn uid(obj: &Value) -> String {
    meta::uid(obj).unwrap_or_default().to_string()
}

#[async_trait::async_trait]
impl Reconciler for JobController {
    fn name(&self) -> &'static str {
        "job-controller"
    }

    fn informers(&self) -> Vec<InformerSpec> {
        vec![InformerSpec::all("jobs"), InformerSpec::all("pods")]
    }

    fn keys_for(&self, resource: &str, change: &Change, _ctx: &Context) -> Vec<String> {
        if resource == "jobs" {
            return vec![key_of(&change.object)];
        }
        let pod = &change.object;
        let ns = meta::namespace(pod).unwrap_or_default();
        let owner = [Some(pod), change.old.as_ref()]
            .into_iter()
            .flatten()
            .find_map(|p| controller_ref(p).filter(|r| r.get("kind") == Some(&json!("Job"))));
        let Some(owner) = owner else {
            return Vec::new();
        };
        let key = format!(
            "{ns}/{}",
            owner.get("name").and_then(Value::as_str).unwrap_or("")
        );
        self.observe(&key, change);
        vec![key]
    }

    async fn reconcile(&self, key: &str, ctx: &Context) -> Result<Action, ReconcileError> {
        let (ns, name) = split_key(key);
        let ns = ns.unwrap_or("default");
        let Some(raw) = ctx.cache("jobs").get(key) else {
            // Gone: its pods must not stay held by the tracking finalizer.
            let orphans: Vec<Arc<Value>> = ctx
                .cache("pods")
                .list_namespace(ns)
                .into_iter()
                .filter(|p| {
                    has_finalizer(p)
                        && controller_ref(p).is_some_and(|r| {
                            r.get("kind") == Some(&json!("Job"))
                                && r.get("name").and_then(Value::as_str) == Some(name)
                        })
                })
                .collect();
            for p in orphans {
                remove_finalizer(ctx, &p).await?;
            }
            self.memory
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(key);
            return Ok(Action::Done);
        };
        let Some(job) = typed::<batch::Job>(&raw) else {
            return Err(ReconcileError::Invalid(format!(
                "job {key} does not decode"
            )));
        };
        let managed_by = job.spec.as_ref().and_then(|s| s.managed_by.as_deref());
        if managed_by.is_some_and(|m| m != JOB_CONTROLLER_NAME) {
            // Another controller owns this Job's status and pods.
            return Ok(Action::Done);
        }
        let job_uid = uid(&raw);
        let owned: Vec<Arc<Value>> = ctx
            .cache("pods")
            .by_index(OWNER_UID, &job_uid)
            .into_iter()
            .filter(|p| {
                controller_ref(p)
                    .and_then(|r| r.get("uid"))
                    .and_then(Value::as_str)
                    == Some(job_uid.as_str())
            })
            .collect();
        let conditions = job
            .status
            .as_ref()
            .and_then(|s| s.conditions.clone())
            .unwrap_or_default();
        let finished = tracking::has_condition(&conditions, "Complete")
            || tracking::has_condition(&conditions, "Failed");
        if finished || pods::is_deleting(&raw) {
            for p in owned.iter().filter(|p| has_finalizer(p)) {
                remove_finalizer(ctx, p).await?;
            }
            return Ok(Action::Done);
        }
        let mut sync = Sync {
            controller: self,
            ctx,
            key,
            ns,
            raw: raw.clone(),
            job,
            pods: owned,
            now: self.clock.now(),
            requeue: None,
        };
        match sync.run().await {
            // The cache was behind this controller's own last write: nothing irreversible
            // was done on the stale view (counts are made durable before finalizers go),
            // and the newer Job's event follows; look again shortly regardless.
            Err(ReconcileError::Api(ApiError::Conflict { .. })) => {
                Ok(Action::RequeueAfter(Duration::from_millis(200)))
            }
            other => other,
        }
    }
}

/// One reconcile of one Job.
pub(super) struct Sync<'a> {
    pub(super) controller: &'a JobController,
    pub(super) ctx: &'a Context,
    pub(super) key: &'a str,
    pub(super) ns: &'a str,
    pub(super) raw: Arc<Value>,
    pub(super) job: batch::Job,
    pub(super) pods: Vec<Arc<Value>>,
    pub(super) now: DateTime<Utc>,
    pub(super) requeue: Option<Duration>,
}

/// How a finished pod was accounted for in this pass.
struct Newly {
    succeeded: Vec<Arc<Value>>,
    failed: Vec<Arc<Value>>,
    /// Finished but not counted (ignored by the policy, deleted by the controller, a
    /// repeated index).
    uncounted: Vec<Arc<Value>>,
    fail_job: Option<String>,
}

impl Sync<'_> {
    pub(super) fn spec(&self) -> batch::JobSpec {
        self.job.spec.clone().unwrap_or_default()
    }

    pub(super) fn indexed(&self) -> bool {
        self.spec().completion_mode.as_deref() == Some("Indexed")
    }

    pub(super) fn wake_in(&mut self, d: Duration) {
        let d = self
            .controller
            .clock
            .sleep_for(d.max(Duration::from_millis(50)));
        self.requeue = Some(self.requeue.map_or(d, |r| r.min(d)));
    }

    async fn run(&mut self) -> Result<Action, ReconcileError> {
        let mut status = self.job.status.clone().unwrap_or_default();
        let mut conditions = status.conditions.clone().unwrap_or_default();
        let spec = self.spec();
        let suspended = spec.suspend == Some(true);
        let stopping = tracking::has_condition(&conditions, "FailureTarget")
            || tracking::has_condition(&conditions, "SuccessCriteriaMet");

        // 1. Account for finished pods: first into uncountedTerminatedPods (durably), then
        //    their finalizers go, then they move into the counters.
        let mut uncounted = status.uncounted_terminated_pods.clone().unwrap_or_default();
        let listed: HashSet<String> = uncounted
            .succeeded
            .iter()
            .flatten()
            .chain(uncounted.failed.iter().flatten())
            .cloned()
            .collect();
        let mut completed = tracking::parse_indexes(status.completed_indexes.as_deref());
        let newly = self.classify(&listed, &completed, suspended || stopping);
        if !newly.succeeded.is_empty() || !newly.failed.is_empty() || newly.fail_job.is_some() {
            if self.indexed() {
                // An index is enough to never count a pod twice: no UIDs needed.
                completed.extend(
                    newly
                        .succeeded
                        .iter()
                        .filter_map(|p| tracking::pod_index(p)),
                );
                status.completed_indexes = Some(tracking::format_indexes(&completed));
                status.succeeded = Some(completed.len() as i32);
            } else {
                let succ = uncounted.succeeded.get_or_insert_with(Vec::new);
                succ.extend(newly.succeeded.iter().map(|p| uid(p)));
            }
            let fail = uncounted.failed.get_or_insert_with(Vec::new);
            fail.extend(newly.failed.iter().map(|p| uid(p)));
            if let Some(message) = &newly.fail_job {
                if !tracking::has_condition(&conditions, "FailureTarget") {
                    tracking::set_condition(
                        &mut conditions,
                        tracking::condition("FailureTarget", "PodFailurePolicy", message, self.now),
                    );
                }
            }
            status.uncounted_terminated_pods = Some(uncounted.clone());
            status.conditions = Some(conditions.clone());
            self.write_status(&status).await?;
        }
        let newly_failed_counted = newly.failed.len() as u32;
        if !newly.succeeded.is_empty() {
            self.controller
                .with_memory(self.key, |m| m.failures_in_row = 0);
        }
        if newly_failed_counted > 0 {
            let now = self.now;
            self.controller.with_memory(self.key, |m| {
                m.failures_in_row += newly_failed_counted;
                m.last_failure = Some(now);
            });
        }
        // Remove finalizers of every finished pod this controller has accounted for.
        let to_release: Vec<Arc<Value>> = self
            .pods
            .iter()
            .filter(|p| has_finalizer(p))
            .filter(|p| {
                let u = uid(p);
                listed.contains(&u)
                    || newly
                        .succeeded
                        .iter()
                        .chain(&newly.failed)
                        .chain(&newly.uncounted)
                        .any(|n| uid(n) == u)
            })
            .cloned()
            .collect();
        let mut released = HashSet::new();
        for p in &to_release {
            remove_finalizer(self.ctx, p).await?;
            let u = uid(p);
            self.controller
                .with_memory(self.key, |m| m.finalized.insert(u.clone()));
            released.insert(u);
        }
        // Move what is released (or gone) into the counters.
        let still_held = |u: &String| {
            !released.contains(u) && self.pods.iter().any(|p| uid(p) == *u && has_finalizer(p))
        };
        let mut succeeded = status.succeeded.unwrap_or(0);
        let mut failed = status.failed.unwrap_or(0);
        let mut keep_succ = Vec::new();
        for u in uncounted.succeeded.take().unwrap_or_default() {
            if still_held(&u) {
                keep_succ.push(u);
            } else {
                succeeded += 1;
            }
        }
        let mut keep_fail = Vec::new();
        for u in uncounted.failed.take().unwrap_or_default() {
            if still_held(&u) {
                keep_fail.push(u);
            } else {
                failed += 1;
            }
        }
        if self.indexed() {
            let completions = spec.completions.unwrap_or(0);
            completed.retain(|i| *i < completions);
            succeeded = completed.len() as i32;
        }
        uncounted.succeeded = Some(keep_succ);
        uncounted.failed = Some(keep_fail);
        let uncounted_left = uncounted.succeeded.as_ref().is_some_and(|v| !v.is_empty())
            || uncounted.failed.as_ref().is_some_and(|v| !v.is_empty());

        // 2. What the pods are doing now.
        let active: Vec<Arc<Value>> = self
            .pods
            .iter()
            .filter(|p| pods::is_active(p))
            .cloned()
            .collect();
        let terminating = self
            .pods
            .iter()
            .filter(|p| pods::is_deleting(p) && !pods::is_terminated(p))
            .count() as i32;
        let held = self
            .pods
            .iter()
            .any(|p| has_finalizer(p) && !released.contains(&uid(p)));

        // 3. Finishing: a failure or success target first, the final condition once no pod
        //    is left running or held.
        let backoff_limit = spec.backoff_limit.unwrap_or(6);
        let restarts_exceeded = spec
            .template
            .spec
            .as_ref()
            .and_then(|s| s.restart_policy.as_deref())
            == Some("OnFailure")
            && {
                let restarts: i64 = active
                    .iter()
                    .flat_map(|p| {
                        p.pointer("/status/containerStatuses")
                            .and_then(Value::as_array)
                            .cloned()
                            .unwrap_or_default()
                    })
                    .filter_map(|c| c.get("restartCount").and_then(Value::as_i64))
                    .sum();
                if backoff_limit == 0 {
                    restarts > 0
                } else {
                    restarts >= i64::from(backoff_limit)
                }
            };
        let deadline = tracking::deadline_remaining(&self.job, self.now);
        if !tracking::has_condition(&conditions, "FailureTarget")
            && !tracking::has_condition(&conditions, "SuccessCriteriaMet")
        {
            let target = if failed > backoff_limit || restarts_exceeded {
                Some((
                    "BackoffLimitExceeded",
                    "Job has reached the specified backoff limit",
                ))
            } else if deadline == Some(Duration::ZERO) && !suspended {
                Some((
                    "DeadlineExceeded",
                    "Job was active longer than specified deadline",
                ))
            } else {
                None
            };
            if let Some((reason, message)) = target {
                tracking::set_condition(
                    &mut conditions,
                    tracking::condition("FailureTarget", reason, message, self.now),
                );
                self.ctx.recorder.warning(&self.raw, reason, message).await;
            }
        }
        let success = match (self.indexed(), spec.completions) {
            (true, Some(c)) => succeeded >= c,
            (false, Some(c)) => succeeded >= c,
            (_, None) => succeeded > 0 && active.is_empty(),
        };
        if !tracking::has_condition(&conditions, "FailureTarget")
            && !tracking::has_condition(&conditions, "SuccessCriteriaMet")
            && success
        {
            tracking::set_condition(
                &mut conditions,
                tracking::condition(
                    "SuccessCriteriaMet",
                    "CompletionsReached",
                    "Reached expected number of succeeded pods",
                    self.now,
                ),
            );
        }
        let mut completion_time = status.completion_time.clone();
        if let Some(target) = conditions
            .iter()
            .find(|c| {
                c.status == "True"
                    && (c.type_ == "FailureTarget" || c.type_ == "SuccessCriteriaMet")
            })
            .cloned()
        {
            self.delete_pods(&active).await?;
            if active.is_empty() && terminating == 0 && !held && !uncounted_left {
                let reason = target.reason.clone().unwrap_or_default();
                let message = target.message.clone().unwrap_or_default();
                if target.type_ == "FailureTarget" {
                    tracking::set_condition(
                        &mut conditions,
                        tracking::condition("Failed", &reason, &message, self.now),
                    );
                } else {
                    tracking::set_condition(
                        &mut conditions,
                        tracking::condition("Complete", &reason, &message, self.now),
                    );
                    completion_time = Some(to_time(self.now));
                    self.ctx
                        .recorder
                        .normal(&self.raw, "Completed", "Job completed")
                        .await;
                }
            }
        } else if suspended {
            self.delete_pods(&active).await?;
            if !tracking::has_condition(&conditions, "Suspended") {
                tracking::set_condition(
                    &mut conditions,
                    tracking::condition("Suspended", "JobSuspended", "Job suspended", self.now),
                );
                self.ctx
                    .recorder
                    .normal(&self.raw, "Suspended", "Job suspended")
                    .await;
            }
        } else {
            if tracking::has_condition(&conditions, "Suspended") {
                let mut resumed =
                    tracking::condition("Suspended", "JobResumed", "Job resumed", self.now);
                resumed.status = "False".into();
                tracking::set_condition(&mut conditions, resumed);
                self.ctx
                    .recorder
                    .normal(&self.raw, "Resumed", "Job resumed")
                    .await;
                // The deadline runs again from the resumption.
                status.start_time = Some(to_time(self.now));
            }
            if status.start_time.is_none() {
                status.start_time = Some(to_time(self.now));
            }
            if let Some(left) = deadline.filter(|d| !d.is_zero()) {
                self.wake_in(left);
            } else if spec.active_deadline_seconds.is_some() && deadline.is_none() {
                self.wake_in(Duration::from_secs(
                    spec.active_deadline_seconds.unwrap_or(0).max(0) as u64,
                ));
            }
            if self.controller.satisfied(self.key) {
                self.manage(&spec, &active, terminating, succeeded, &completed)
                    .await?;
            }
        }

        // 4. Status as it now stands.
        let mut next = status.clone();
        next.active = Some(active.len() as i32);
        next.ready = Some(active.iter().filter(|p| pods::is_ready(p)).count() as i32);
        next.terminating = Some(terminating);
        next.succeeded = Some(succeeded);
        next.failed = Some(failed);
        next.uncounted_terminated_pods = Some(uncounted);
        next.conditions = (!conditions.is_empty()).then_some(conditions);
        next.completion_time = completion_time;
        if self.indexed() {
            next.completed_indexes = Some(tracking::format_indexes(&completed));
        }
        let current = self.job.status.clone().unwrap_or_default();
        if serde_json::to_value(&next).ok() != serde_json::to_value(&current).ok()
            || !to_release.is_empty()
        {
            self.write_status(&next).await?;
        }
        Ok(match self.requeue {
            Some(d) => Action::RequeueAfter(d),
            None => Action::Done,
        })
    }

    /// Which finished, finalizer-held pods are new to the count, and as what.
    fn classify(
        &self,
        listed: &HashSet<String>,
        completed: &BTreeSet<i32>,
        stopping: bool,
    ) -> Newly {
        let spec = self.spec();
        let (finalized, deleted) = self
            .controller
            .with_memory(self.key, |m| (m.finalized.clone(), m.deleted.clone()));
        let mut out = Newly {
            succeeded: Vec::new(),
            failed: Vec::new(),
            uncounted: Vec::new(),
            fail_job: None,
        };
        let mut seen_indexes = completed.clone();
        for p in self.pods.iter().filter(|p| has_finalizer(p)) {
            let u = uid(p);
            if listed.contains(&u) || finalized.contains(&u) {
                continue;
            }
            match phase(p) {
                "Succeeded" => {
                    if self.indexed() {
                        match tracking::pod_index(p) {
                            Some(i) if seen_indexes.insert(i) => out.succeeded.push(p.clone()),
                            _ => out.uncounted.push(p.clone()),
                        }
                    } else {
                        out.succeeded.push(p.clone());
                    }
                }
                "Failed" if deleted.contains(&u) => out.uncounted.push(p.clone()),
                "Failed" => match tracking::failure_action(spec.pod_failure_policy.as_ref(), p) {
                    FailureAction::Count => out.failed.push(p.clone()),
                    FailureAction::Ignore => out.uncounted.push(p.clone()),
                    FailureAction::FailJob(message) => {
                        out.failed.push(p.clone());
                        out.fail_job.get_or_insert(message);
                    }
                },
                _ if pods::is_deleting(p) => {
                    // Deleted before it finished: a failure, unless this controller
                    // deleted it (suspend, excess, a Job that is finishing).
                    let replace_on_terminating =
                        spec.pod_replacement_policy.as_deref() != Some("Failed");
                    if deleted.contains(&u) || stopping {
                        out.uncounted.push(p.clone());
                    } else if replace_on_terminating || stopped(p) {
                        out.failed.push(p.clone());
                    }
                    // With the Failed policy the pod is counted once its containers are
                    // stopped.
                }
                _ => {}
            }
        }
        out
    }

    /// Write `status`, guarded by the resourceVersion last seen, so that a stale cache
    /// can never count a pod twice; the Job written becomes the one seen.
    async fn write_status(&mut self, status: &batch::JobStatus) -> Result<(), ReconcileError> {
        let name = self.job.metadata.name.clone().unwrap_or_default();
        let mut body = serde_json::to_value(status).unwrap_or(json!({}));
        // Cleared fields must be cleared in the merge patch too.
        for k in ["completionTime", "conditions"] {
            if body.get(k).is_none() {
                body[k] = Value::Null;
            }
        }
        let patch = json!({
            "metadata": {"resourceVersion": self.job.metadata.resource_version},
            "status": body,
        });
        let written = self
            .ctx
            .client
            .patch(
                "jobs",
                Some(self.ns),
                &name,
                Some("status"),
                PatchType::Merge,
                patch,
            )
            .await?;
        if let Some(job) = typed::<batch::Job>(&written) {
            self.job = job;
        }
        self.raw = Arc::new(written);
        Ok(())
    }
}

/// Drop the tracking finalizer from a pod (a JSON patch that tests it is still where it
/// was, so a concurrent change to the list is not clobbered).
async fn remove_finalizer(ctx: &Context, pod: &Value) -> Result<(), ReconcileError> {
    let Some(pos) = pod
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .and_then(|f| f.iter().position(|x| x == TRACKING_FINALIZER))
    else {
        return Ok(());
    };
    let ns = meta::namespace(pod).unwrap_or("default");
    let name = meta::name(pod).unwrap_or_default();
    let path = format!("/metadata/finalizers/{pos}");
    let patch = json!([
        {"op": "test", "path": path, "value": TRACKING_FINALIZER},
        {"op": "remove", "path": path},
    ]);
    match ctx
        .client
        .patch("pods", Some(ns), name, None, PatchType::Json, patch)
        .await
    {
        Ok(_) | Err(ApiError::NotFound { .. }) => Ok(()),
        // The list moved under us: the next event brings the pod back.
        Err(ApiError::Invalid { .. }) | Err(ApiError::Conflict { .. }) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::testing::Scripted;

    fn job(spec: Value) -> batch::Job {
        let mut spec = spec;
        spec["template"] = json!({"spec": {"containers": [{"name": "main", "image": "i"}]}});
        serde_json::from_value(
            json!({"metadata": {"name": "j", "namespace": "ns", "uid": "u"},
            "spec": spec}),
        )
        .expect("job")
    }

    fn pod(uid: &str, phase: &str, extra: Value) -> Arc<Value> {
        let mut p = json!({"metadata": {"name": uid, "namespace": "ns", "uid": uid,
            "finalizers": [TRACKING_FINALIZER]},
            "status": {"phase": phase, "containerStatuses": [
                {"name": "main", "state": {"terminated": {"exitCode": 3}}}]}});
        if let (Some(m), Some(e)) = (p["metadata"].as_object_mut(), extra.as_object()) {
            m.extend(e.clone());
        }
        Arc::new(p)
    }

    /// The uids `classify` counts as (succeeded, failed, released uncounted).
    fn classified(
        c: &JobController,
        job: batch::Job,
        pods: Vec<Arc<Value>>,
        stopping: bool,
    ) -> (Vec<String>, Vec<String>, Vec<String>) {
        let ctx = Context::for_tests(Arc::new(Scripted::default()));
        let raw = Arc::new(serde_json::to_value(&job).expect("json"));
        let sync = Sync {
            controller: c,
            ctx: &ctx,
            key: "ns/j",
            ns: "ns",
            raw,
            job,
            pods,
            now: Utc::now(),
            requeue: None,
        };
        let n = sync.classify(&HashSet::new(), &BTreeSet::new(), stopping);
        let uids = |v: &[Arc<Value>]| v.iter().map(|p| uid(p)).collect::<Vec<_>>();
        (uids(&n.succeeded), uids(&n.failed), uids(&n.uncounted))
    }

    #[test]
    fn finished_pods_are_counted_by_phase_and_the_failure_policy() {
        let c = JobController::new(JobConfig::default(), SharedClock::default());
        let spec = json!({"podFailurePolicy": {"rules": [
            {"action": "Ignore", "onExitCodes": {"operator": "In", "values": [3]}}]}});
        let pods = vec![
            pod("ok", "Succeeded", json!({})),
            pod("bad", "Failed", json!({})),
            pod("run", "Running", json!({})),
        ];
        let (s, f, u) = classified(&c, job(json!({})), pods.clone(), false);
        assert_eq!(
            (s, f, u),
            (vec!["ok".to_string()], vec!["bad".to_string()], vec![])
        );
        // Exit code 3 is ignored: released, never counted.
        let (_, f, u) = classified(&c, job(spec), pods, false);
        assert!(f.is_empty());
        assert_eq!(u, ["bad"]);
    }

    #[test]
    fn a_deleted_pod_is_a_failure_unless_the_controller_deleted_it_or_the_job_is_ending() {
        let c = JobController::new(JobConfig::default(), SharedClock::default());
        let deleting = json!({"deletionTimestamp": "2026-01-01T00:00:00Z",
            "deletionGracePeriodSeconds": 30});
        let gone = vec![pod("evicted", "Running", deleting.clone())];
        let (_, f, _) = classified(&c, job(json!({})), gone.clone(), false);
        assert_eq!(f, ["evicted"]);
        let (_, f, u) = classified(&c, job(json!({})), gone.clone(), true);
        assert!(f.is_empty());
        assert_eq!(u, ["evicted"]);
        c.with_memory("ns/j", |m| m.deleted.insert("evicted".into()));
        let (_, f, u) = classified(&c, job(json!({})), gone, false);
        assert!(f.is_empty());
        assert_eq!(u, ["evicted"]);
    }

    #[test]
    fn with_the_failed_replacement_policy_a_deleted_pod_counts_once_it_is_stopped() {
        let c = JobController::new(JobConfig::default(), SharedClock::default());
        let spec = json!({"podReplacementPolicy": "Failed"});
        let stopping = json!({"deletionTimestamp": "2026-01-01T00:00:00Z",
            "deletionGracePeriodSeconds": 30});
        let (_, f, u) = classified(
            &c,
            job(spec.clone()),
            vec![pod("p", "Running", stopping)],
            false,
        );
        assert!(
            f.is_empty() && u.is_empty(),
            "still terminating: not yet counted"
        );
        let stopped = json!({"deletionTimestamp": "2026-01-01T00:00:00Z",
            "deletionGracePeriodSeconds": 0});
        let (_, f, _) = classified(&c, job(spec), vec![pod("p", "Running", stopped)], false);
        assert_eq!(f, ["p"]);
    }

    #[test]
    fn a_pod_already_finalized_is_never_counted_again() {
        let c = JobController::new(JobConfig::default(), SharedClock::default());
        c.with_memory("ns/j", |m| m.finalized.insert("ok".into()));
        // The cache still shows the finalizer this controller removed.
        let (s, _, _) = classified(
            &c,
            job(json!({})),
            vec![pod("ok", "Succeeded", json!({}))],
            false,
        );
        assert!(s.is_empty());
    }
}
