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
use futures::future::join_all;
use k8s_openapi::api::batch::v1 as batch;
use serde_json::{json, Value};

use super::job_tracking::{self as tracking, FailureAction};
use super::pods::{self, controller_ref};
use crate::api::kinds::job::{COMPLETION_INDEX, JOB_CONTROLLER_NAME, TRACKING_FINALIZER};
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
struct Memory {
    /// Pod creates and deletions asked for but not yet seen in the cache.
    adds: i64,
    dels: i64,
    set: Option<Instant>,
    /// Pods whose finalizer this controller removed (the cache may lag behind).
    finalized: HashSet<String>,
    /// Pods this controller deleted (suspend, excess, deadline): not failures.
    deleted: HashSet<String>,
    /// Failures since the last success, and when the last one was seen.
    failures_in_row: u32,
    last_failure: Option<DateTime<Utc>>,
}

const EXPECTATIONS_TTL: Duration = Duration::from_secs(300);
const BURST: usize = 500;

pub struct JobController {
    config: JobConfig,
    clock: SharedClock,
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

    fn with_memory<T>(&self, key: &str, f: impl FnOnce(&mut Memory) -> T) -> T {
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

fn uid(obj: &Value) -> String {
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
struct Sync<'a> {
    controller: &'a JobController,
    ctx: &'a Context,
    key: &'a str,
    ns: &'a str,
    raw: Arc<Value>,
    job: batch::Job,
    pods: Vec<Arc<Value>>,
    now: DateTime<Utc>,
    requeue: Option<Duration>,
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
    fn spec(&self) -> batch::JobSpec {
        self.job.spec.clone().unwrap_or_default()
    }

    fn indexed(&self) -> bool {
        self.spec().completion_mode.as_deref() == Some("Indexed")
    }

    fn wake_in(&mut self, d: Duration) {
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
            self.delete_pods(&active, "").await?;
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
            self.delete_pods(&active, "").await?;
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

    /// Create or delete pods towards the wanted number of active ones.
    async fn manage(
        &mut self,
        spec: &batch::JobSpec,
        active: &[Arc<Value>],
        terminating: i32,
        succeeded: i32,
        completed: &BTreeSet<i32>,
    ) -> Result<(), ReconcileError> {
        let parallelism = spec.parallelism.unwrap_or(1).max(0);
        // With the Failed policy a terminating pod still holds its place.
        let holding = if spec.pod_replacement_policy.as_deref() == Some("Failed") {
            terminating
        } else {
            0
        };
        let running = active.len() as i32 + holding;
        if self.indexed() {
            let completions = spec.completions.unwrap_or(0);
            // Duplicates of an index, and indexes already complete or out of range, go.
            let mut by_index: HashMap<i32, Vec<Arc<Value>>> = HashMap::new();
            let mut surplus = Vec::new();
            for p in active {
                match tracking::pod_index(p) {
                    Some(i) if i < completions && !completed.contains(&i) => {
                        by_index.entry(i).or_default().push(p.clone())
                    }
                    _ => surplus.push(p.clone()),
                }
            }
            for pods_of in by_index.values_mut() {
                pods_of.sort_by(|a, b| pods::deletion_order(b, a));
                surplus.extend(pods_of.drain(1..));
            }
            let alive = running - surplus.len() as i32;
            if alive > parallelism {
                let mut extra: Vec<Arc<Value>> = by_index.values().flatten().cloned().collect();
                extra.sort_by(|a, b| pods::deletion_order(a, b));
                surplus.extend(extra.into_iter().take((alive - parallelism) as usize));
            }
            if !surplus.is_empty() {
                return self.delete_pods(&surplus, "").await;
            }
            let pending: Vec<i32> = (0..completions)
                .filter(|i| !completed.contains(i) && !by_index.contains_key(i))
                .take((parallelism - alive).max(0) as usize)
                .collect();
            if pending.is_empty() || self.backing_off() {
                return Ok(());
            }
            return self
                .create_pods(pending.into_iter().map(Some).collect())
                .await;
        }
        let want = match spec.completions {
            Some(c) => parallelism.min((c - succeeded).max(0)),
            // A work queue: once one pod succeeded, no new ones; the rest finish.
            None if succeeded > 0 => running.min(parallelism),
            None => parallelism,
        };
        if running > want {
            let mut victims: Vec<Arc<Value>> = active.to_vec();
            victims.sort_by(|a, b| pods::deletion_order(a, b));
            victims.truncate((running - want) as usize);
            return self.delete_pods(&victims, "").await;
        }
        if running < want && !self.backing_off() {
            let n = ((want - running) as usize).min(BURST);
            return self.create_pods(vec![None; n]).await;
        }
        Ok(())
    }

    /// Whether the back-off after recent failures still holds new pods back (and if so,
    /// wake up when it ends).
    fn backing_off(&mut self) -> bool {
        let (failures, last) = self
            .controller
            .with_memory(self.key, |m| (m.failures_in_row, m.last_failure));
        let cfg = &self.controller.config;
        match tracking::backoff_remaining(
            failures,
            last,
            self.now,
            cfg.backoff_base,
            cfg.backoff_max,
        ) {
            Some(wait) => {
                self.wake_in(wait);
                true
            }
            None => false,
        }
    }

    /// The pod for one completion (an index for Indexed Jobs).
    fn pod_for(&self, index: Option<i32>) -> Value {
        let spec = self.spec();
        let template = serde_json::to_value(&spec.template).unwrap_or(json!({}));
        let name = self.job.metadata.name.clone().unwrap_or_default();
        let mut labels = template
            .pointer("/metadata/labels")
            .cloned()
            .unwrap_or(json!({}));
        let mut annotations = template
            .pointer("/metadata/annotations")
            .cloned()
            .unwrap_or(json!({}));
        let mut pod_spec = template.get("spec").cloned().unwrap_or(json!({}));
        let generate = match index {
            Some(i) => {
                labels[COMPLETION_INDEX] = json!(i.to_string());
                annotations[COMPLETION_INDEX] = json!(i.to_string());
                if pod_spec
                    .get("hostname")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .is_empty()
                {
                    let mut host = format!("{name}-{i}");
                    host.truncate(63);
                    pod_spec["hostname"] = json!(host.trim_end_matches(['-', '.']));
                }
                add_index_env(&mut pod_spec);
                format!("{name}-{i}-")
            }
            None => format!("{name}-"),
        };
        json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "generateName": generate,
                "labels": labels,
                "annotations": annotations,
                "finalizers": [TRACKING_FINALIZER],
                "ownerReferences": [{
                    "apiVersion": "batch/v1",
                    "kind": "Job",
                    "name": name,
                    "uid": self.job.metadata.uid,
                    "controller": true,
                    "blockOwnerDeletion": true,
                }],
            },
            "spec": pod_spec,
        })
    }

    async fn create_pods(&mut self, slots: Vec<Option<i32>>) -> Result<(), ReconcileError> {
        let n = slots.len();
        self.controller.with_memory(self.key, |m| {
            m.adds = n as i64;
            m.dels = 0;
            m.set = Some(Instant::now());
        });
        let mut left = slots;
        let mut size = 1;
        while !left.is_empty() {
            let batch: Vec<Option<i32>> = left.drain(..size.min(left.len())).collect();
            size *= 2;
            let creates = batch.iter().map(|i| {
                self.ctx
                    .client
                    .create("pods", Some(self.ns), self.pod_for(*i))
            });
            let mut failed = None;
            for r in join_all(creates).await {
                match r {
                    Ok(pod) => {
                        let msg = format!("Created pod: {}", meta::name(&pod).unwrap_or_default());
                        self.ctx
                            .recorder
                            .normal(&self.raw, "SuccessfulCreate", &msg)
                            .await;
                    }
                    Err(e) => {
                        self.controller.with_memory(self.key, |m| m.adds -= 1);
                        self.ctx
                            .recorder
                            .warning(&self.raw, "FailedCreate", &format!("Error creating: {e}"))
                            .await;
                        failed = Some(e);
                    }
                }
            }
            if let Some(e) = failed {
                let skipped = left.len() as i64;
                self.controller.with_memory(self.key, |m| m.adds -= skipped);
                return Err(e.into());
            }
        }
        Ok(())
    }

    async fn delete_pods(
        &mut self,
        victims: &[Arc<Value>],
        _why: &str,
    ) -> Result<(), ReconcileError> {
        if victims.is_empty() {
            return Ok(());
        }
        let n = victims.len() as i64;
        self.controller.with_memory(self.key, |m| {
            m.adds = 0;
            m.dels = n;
            m.set = Some(Instant::now());
            m.deleted.extend(victims.iter().map(|p| uid(p)));
        });
        let (client, ns) = (self.ctx.client.clone(), self.ns);
        let deletes = victims.iter().map(|p| {
            let name = meta::name(p).unwrap_or_default().to_string();
            let client = client.clone();
            async move { (client.delete("pods", Some(ns), &name, None).await, name) }
        });
        let mut failed = None;
        for (r, name) in join_all(deletes).await {
            match r {
                Ok(_) => {
                    self.ctx
                        .recorder
                        .normal(
                            &self.raw,
                            "SuccessfulDelete",
                            &format!("Deleted pod: {name}"),
                        )
                        .await;
                }
                Err(ApiError::NotFound { .. }) => {
                    self.controller.with_memory(self.key, |m| m.dels -= 1)
                }
                Err(e) => {
                    self.controller.with_memory(self.key, |m| m.dels -= 1);
                    failed = Some(e);
                }
            }
        }
        match failed {
            Some(e) => Err(e.into()),
            None => Ok(()),
        }
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

/// `JOB_COMPLETION_INDEX` from the pod's annotation, in every container that lacks it.
fn add_index_env(pod_spec: &mut Value) {
    let var = json!({"name": "JOB_COMPLETION_INDEX", "valueFrom": {"fieldRef": {
        "fieldPath": format!("metadata.annotations['{COMPLETION_INDEX}']")}}});
    for list in ["containers", "initContainers"] {
        let Some(containers) = pod_spec.get_mut(list).and_then(Value::as_array_mut) else {
            continue;
        };
        for c in containers {
            let env = c
                .as_object_mut()
                .map(|m| m.entry("env").or_insert_with(|| json!([])));
            if let Some(Value::Array(env)) = env {
                if !env
                    .iter()
                    .any(|e| e.get("name") == Some(&json!("JOB_COMPLETION_INDEX")))
                {
                    env.push(var.clone());
                }
            }
        }
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

    #[test]
    fn the_index_variable_is_added_once_to_every_container() {
        let mut spec = json!({"containers": [{"name": "a"}, {"name": "b", "env": [
            {"name": "JOB_COMPLETION_INDEX", "value": "mine"}]}],
            "initContainers": [{"name": "i"}]});
        add_index_env(&mut spec);
        add_index_env(&mut spec);
        assert_eq!(
            spec["containers"][0]["env"].as_array().map(Vec::len),
            Some(1)
        );
        assert_eq!(
            spec["containers"][0]["env"][0]["valueFrom"]["fieldRef"]["fieldPath"],
            "metadata.annotations['batch.kubernetes.io/job-completion-index']"
        );
        assert_eq!(spec["containers"][1]["env"][0]["value"], "mine");
        assert_eq!(
            spec["initContainers"][0]["env"].as_array().map(Vec::len),
            Some(1)
        );
    }

    #[test]
    fn an_indexed_pod_carries_its_index_hostname_and_tracking_finalizer() {
        let job: batch::Job = serde_json::from_value(json!({
            "metadata": {"name": "work", "namespace": "ns", "uid": "u1"},
            "spec": {"completionMode": "Indexed", "completions": 3, "template": {
                "metadata": {"labels": {"app": "w"}},
                "spec": {"containers": [{"name": "c", "image": "i"}]}}}}))
        .expect("job");
        let controller = JobController::new(JobConfig::default(), SharedClock::default());
        let raw = Arc::new(serde_json::to_value(&job).expect("json"));
        let ctx_free = Sync {
            controller: &controller,
            ctx: &dummy_context(),
            key: "ns/work",
            ns: "ns",
            raw,
            job,
            pods: Vec::new(),
            now: Utc::now(),
            requeue: None,
        };
        let pod = ctx_free.pod_for(Some(2));
        assert_eq!(pod["metadata"]["generateName"], "work-2-");
        assert_eq!(pod["metadata"]["labels"][COMPLETION_INDEX], "2");
        assert_eq!(pod["metadata"]["annotations"][COMPLETION_INDEX], "2");
        assert_eq!(pod["metadata"]["labels"]["app"], "w");
        assert_eq!(pod["metadata"]["finalizers"][0], TRACKING_FINALIZER);
        assert_eq!(pod["metadata"]["ownerReferences"][0]["kind"], "Job");
        assert_eq!(pod["spec"]["hostname"], "work-2");
        assert_eq!(
            pod["spec"]["containers"][0]["env"][0]["name"],
            "JOB_COMPLETION_INDEX"
        );
        let plain = ctx_free.pod_for(None);
        assert_eq!(plain["metadata"]["generateName"], "work-");
        assert!(plain["spec"].get("hostname").is_none());
    }

    fn dummy_context() -> Context {
        Context::for_tests(Arc::new(crate::runtime::testing::Scripted::default()))
    }
}
