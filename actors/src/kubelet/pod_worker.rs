//! The pod worker: one actor per pod UID that drives the pod to what its spec asks for
//! (pause sandbox first, then the app containers in its network namespace), restarts what
//! exits according to the restart policy with CrashLoopBackOff, runs probes, writes the
//! pod's status, and on deletion stops and removes everything.
//!
//! One sync runs at a time. Updates that arrive meanwhile are coalesced (the newest spec
//! wins) and a pending kill always wins over a sync. A sync owns the worker's runtime state
//! while it runs and hands it back when it ends, so nothing else can change it under it.
//!
//! The runtime, not memory, is the truth: a worker that starts (or restarts after a panic)
//! first lists the runtime's containers for its pod and adopts them, so a container that is
//! already running is never started a second time.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use chrono::{DateTime, Utc};
use futures::FutureExt;
use serde_json::{json, Value};
use tracing::Instrument;

use super::backoff::{go_duration, Backoff};
use super::probe::{self, Outcome, ProbeKind, ProbeSpec, Tracker};
use super::runtime::{
    ContainerInfo, ContainerState, PullPolicy, Runtime, RuntimeError, SandboxInfo,
};
use super::spec::{self, Placement};
use super::status::{self, ContainerView, Phase, RestartPolicy, State, StatusInput, Terminated};
use crate::api::{meta, ApiError};
use crate::client::{ApiClient, PatchType};
use crate::runtime::{guard, spawn_guarded, Recorder};

/// Kubernetes never gives a container less than this to stop in a graceful deletion.
const MIN_GRACE: Duration = Duration::from_secs(2);
/// How long a pod deleted outright (no graceful phase) gets at most.
const OUTRIGHT_GRACE: Duration = Duration::from_secs(2);

/// A newer version of the worker's pod, from the kubelet's watch.
#[derive(Message)]
#[rtype(result = "()")]
pub struct UpdatePod(pub Arc<Value>);

/// The pod is gone from the API: stop and remove its containers, then finish.
#[derive(Message)]
#[rtype(result = "()")]
pub struct PodRemoved;

/// The runtime reports a change in this pod's containers (seen by the kubelet's relist).
#[derive(Message)]
#[rtype(result = "()")]
pub struct RuntimeChanged;

/// Stop the worker and leave its containers alone: its kubelet is restarting, and the new
/// worker adopts them.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Shutdown;

/// Told to the kubelet once the worker has removed its pod's containers (and, after a
/// graceful deletion, the pod object).
#[derive(Message)]
#[rtype(result = "()")]
pub struct WorkerFinished {
    pub uid: String,
}

/// Panic inside the handler (tests of supervision).
#[doc(hidden)]
#[derive(Message)]
#[rtype(result = "()")]
pub struct InjectPanic;

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("runtime call failed: {0}")]
    Runtime(#[from] RuntimeError),
    #[error("API call failed: {0}")]
    Api(#[from] ApiError),
}

/// What every worker of one kubelet shares.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub node_name: String,
    /// The node's InternalIP, reported as `status.hostIP`.
    pub host_ip: String,
    /// CrashLoopBackOff and image pull backoff: first wait, and the cap.
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// A container that ran at least this long before exiting starts its backoff afresh.
    pub backoff_reset: Duration,
    /// Sync every pod this often even when nothing was reported.
    pub resync_interval: Duration,
    /// Scheme of container IDs in status (`docker` gives `docker://<id>`).
    pub id_scheme: String,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            node_name: "node-1".into(),
            host_ip: "127.0.0.1".into(),
            backoff_base: Duration::from_secs(10),
            backoff_max: Duration::from_secs(300),
            backoff_reset: Duration::from_secs(600),
            resync_interval: Duration::from_secs(10),
            id_scheme: "docker".into(),
        }
    }
}

impl WorkerConfig {
    fn backoff(&self) -> Backoff {
        Backoff::new(self.backoff_base, self.backoff_max)
    }
}

/// The worker's boundaries.
#[derive(Clone)]
pub struct WorkerDeps {
    pub client: Arc<dyn ApiClient>,
    pub runtime: Arc<dyn Runtime>,
    pub config: Arc<WorkerConfig>,
    pub recorder: Arc<Recorder>,
}

/// One instance (attempt) of a container, as the runtime last reported it.
#[derive(Debug, Clone)]
struct Instance {
    id: String,
    attempt: u32,
    image_id: String,
    state: ContainerState,
}

impl Instance {
    fn of(info: &ContainerInfo) -> Instance {
        Instance {
            id: info.id.clone(),
            attempt: info.attempt(),
            image_id: info.image_id.clone(),
            state: info.state.clone(),
        }
    }

    fn running(&self) -> bool {
        matches!(self.state, ContainerState::Running { .. })
    }

    fn terminated(&self, scheme: &str) -> Option<Terminated> {
        match &self.state {
            ContainerState::Exited {
                exit_code,
                reason,
                started_at,
                finished_at,
            } => Some(Terminated {
                exit_code: *exit_code,
                reason: reason.clone(),
                started_at: k8s_time(started_at),
                finished_at: k8s_time(finished_at),
                container_id: format!("{scheme}://{}", self.id),
            }),
            _ => None,
        }
    }
}

/// Why a container is waiting, as its status says.
type Waiting = (String, Option<String>);

/// What the worker knows about one container of its pod.
#[derive(Debug, Clone)]
struct ContainerRecord {
    current: Option<Instance>,
    /// The instance before `current`: its end is the container's `lastState`, and it is
    /// kept for `kubectl logs --previous`.
    previous: Option<Instance>,
    /// Set by a sync when the container cannot run now.
    waiting: Option<Waiting>,
    crash: Backoff,
    /// The exited instance the current crash backoff was started for.
    crash_for: Option<String>,
    /// Backoff of the steps before a start (image, configuration, the start itself).
    prepare: Backoff,
    prepare_error: Option<Waiting>,
}

impl ContainerRecord {
    fn new(cfg: &WorkerConfig) -> Self {
        ContainerRecord {
            current: None,
            previous: None,
            waiting: None,
            crash: cfg.backoff(),
            crash_for: None,
            prepare: cfg.backoff(),
            prepare_error: None,
        }
    }
}

/// What the worker knows about its pod in the runtime.
#[derive(Debug, Clone)]
pub struct PodState {
    adopted: bool,
    sandbox: Option<SandboxInfo>,
    sandbox_backoff: Backoff,
    sandbox_error: Option<String>,
    containers: BTreeMap<String, ContainerRecord>,
    start_time: Option<String>,
}

impl PodState {
    fn new(cfg: &WorkerConfig) -> Self {
        PodState {
            adopted: false,
            sandbox: None,
            sandbox_backoff: cfg.backoff(),
            sandbox_error: None,
            containers: BTreeMap::new(),
            start_time: None,
        }
    }
}

/// A deletion to carry out.
#[derive(Debug, Clone)]
struct Kill {
    deadline: DateTime<Utc>,
    /// The least time a container gets to stop, whatever the deadline says.
    min_grace: Duration,
    /// Whether to remove the pod object afterwards (graceful deletion) or not (the pod is
    /// already gone from the API).
    delete_object: bool,
}

fn termination_grace(pod: &Value) -> Duration {
    let secs = pod
        .pointer("/spec/terminationGracePeriodSeconds")
        .and_then(Value::as_i64)
        .unwrap_or(30)
        .max(0);
    Duration::from_secs(secs as u64)
}

fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// Runtime timestamps (Docker's carry nanoseconds) in the whole-second form of `metav1.Time`.
fn k8s_time(s: &str) -> String {
    parse_time(s)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|| s.to_string())
}

impl Kill {
    /// The pod carries a `deletionTimestamp`: its containers get until then.
    fn graceful(pod: &Value) -> Kill {
        let deadline = pod
            .pointer("/metadata/deletionTimestamp")
            .and_then(Value::as_str)
            .and_then(parse_time)
            .unwrap_or_else(|| Utc::now() + chrono_of(termination_grace(pod)));
        Kill {
            deadline,
            min_grace: MIN_GRACE,
            delete_object: true,
        }
    }

    /// The pod was removed from the API without a graceful phase.
    fn outright(pod: &Value) -> Kill {
        Kill {
            deadline: Utc::now() + chrono_of(termination_grace(pod).min(OUTRIGHT_GRACE)),
            min_grace: Duration::ZERO,
            delete_object: false,
        }
    }

    /// Merge a second request: the earlier deadline wins, and once the pod is gone from
    /// the API there is nothing left to delete.
    fn merge(&mut self, other: Kill) {
        self.deadline = self.deadline.min(other.deadline);
        self.min_grace = self.min_grace.min(other.min_grace);
        self.delete_object &= other.delete_object;
    }

    fn remaining(&self) -> Duration {
        (self.deadline - Utc::now())
            .to_std()
            .unwrap_or(Duration::ZERO)
            .max(self.min_grace)
    }
}

fn chrono_of(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

/// What one sync reads besides the state it owns.
#[derive(Debug, Clone)]
struct SyncInput {
    pod: Arc<Value>,
    /// Readiness results by container instance id (only containers with a readiness probe).
    ready: HashMap<String, bool>,
    /// Instances whose liveness probe failed.
    unhealthy: HashSet<String>,
    /// The last status written and the pod's resourceVersion after the write.
    last_written: Option<(Value, u64)>,
}

/// What a sync tells the worker.
#[derive(Debug, Default)]
struct SyncReport {
    /// When to sync again (end of a backoff).
    wake_at: Option<Instant>,
    /// (status written, pod returned by the write).
    written: Option<(Value, Value)>,
}

impl SyncReport {
    fn wake(&mut self, at: Option<Instant>) {
        if let Some(at) = at {
            self.wake_at = Some(self.wake_at.map_or(at, |w| w.min(at)));
        }
    }
}

fn containers(pod: &Value) -> &[Value] {
    pod.pointer("/spec/containers")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

fn name_of(container: &Value) -> &str {
    container
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

fn rv_of(obj: &Value) -> u64 {
    meta::resource_version(obj)
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

fn pod_phase(pod: &Value) -> Option<Phase> {
    Phase::parse(pod.pointer("/status/phase").and_then(Value::as_str))
}

/// `name_namespace(uid)`, how the kubelet names a pod in messages.
fn pod_label(pod: &Value) -> String {
    format!(
        "{}_{}({})",
        meta::name(pod).unwrap_or_default(),
        meta::namespace(pod).unwrap_or_default(),
        meta::uid(pod).unwrap_or_default()
    )
}

/// The CrashLoopBackOff message, worded as the kubelet words it.
pub fn crash_loop_message(wait: Duration, container: &str, pod: &Value) -> String {
    format!(
        "back-off {} restarting failed container={container} pod={}",
        go_duration(wait),
        pod_label(pod)
    )
}

/// How long an instance ran, from its runtime timestamps.
fn ran_for(started_at: &str, finished_at: &str) -> Option<Duration> {
    (parse_time(finished_at)? - parse_time(started_at)?)
        .to_std()
        .ok()
}

/// The pull policy, defaulted as the API server would (Always for `:latest` or no tag).
fn pull_policy(container: &Value) -> PullPolicy {
    if let Some(p) = container.get("imagePullPolicy").and_then(Value::as_str) {
        return PullPolicy::parse(Some(p));
    }
    let image = container
        .get("image")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let last = image.rsplit('/').next().unwrap_or(image);
    if image.contains('@') {
        PullPolicy::IfNotPresent
    } else if !last.contains(':') || last.ends_with(":latest") {
        PullPolicy::Always
    } else {
        PullPolicy::IfNotPresent
    }
}

/// The waiting reason of a failed image step.
fn image_failure(e: &RuntimeError) -> &'static str {
    match e {
        RuntimeError::ImageNeverPull(_) => "ErrImageNeverPull",
        _ => "ErrImagePull",
    }
}

/// While backing off after a failed step, ErrImagePull reads ImagePullBackOff; the other
/// reasons stay as they were.
fn backing_off(error: &Waiting, image: &str) -> Waiting {
    match error.0.as_str() {
        "ErrImagePull" => (
            "ImagePullBackOff".into(),
            Some(format!("Back-off pulling image \"{image}\"")),
        ),
        _ => error.clone(),
    }
}

/// Record an event without making the caller wait for it.
fn event(
    deps: &WorkerDeps,
    pod: &Arc<Value>,
    kind: &'static str,
    reason: &'static str,
    message: String,
) {
    let (recorder, pod) = (deps.recorder.clone(), pod.clone());
    tokio::spawn(async move { recorder.record(&pod, kind, reason, &message).await });
}

fn ignore_not_found(r: Result<(), RuntimeError>) -> Result<(), RuntimeError> {
    match r {
        Err(RuntimeError::NotFound(_)) => Ok(()),
        other => other,
    }
}

/// Find what already runs for the pod: the newest running sandbox, and per container the
/// newest instance (current) and the one before (previous). Everything older goes.
async fn adopt(deps: &WorkerDeps, pod: &Value, state: &mut PodState) -> Result<(), WorkerError> {
    let uid = meta::uid(pod).unwrap_or_default();
    let mut mine: Vec<ContainerInfo> = deps
        .runtime
        .list(&deps.config.node_name)
        .await?
        .into_iter()
        .filter(|c| c.pod_uid() == Some(uid))
        .collect();
    mine.sort_by_key(|c| c.attempt());
    let (sandboxes, apps): (Vec<_>, Vec<_>) = mine.into_iter().partition(ContainerInfo::is_sandbox);
    let keep = sandboxes
        .iter()
        .rev()
        .find(|s| matches!(s.state, ContainerState::Running { .. }))
        .map(|s| s.id.clone());
    for sb in sandboxes.iter().filter(|s| Some(&s.id) != keep.as_ref()) {
        let _ = deps.runtime.remove(&sb.id).await;
    }
    if let Some(id) = keep {
        let ip = deps.runtime.sandbox_ip(&id).await?;
        state.sandbox = Some(SandboxInfo { id, ip });
    }
    let mut by_name: BTreeMap<String, Vec<ContainerInfo>> = BTreeMap::new();
    for c in apps {
        by_name
            .entry(c.container_name().unwrap_or_default().to_string())
            .or_default()
            .push(c);
    }
    let adopted = by_name.len();
    for (name, mut instances) in by_name {
        let rec = state
            .containers
            .entry(name)
            .or_insert_with(|| ContainerRecord::new(&deps.config));
        rec.current = instances.pop().map(|c| Instance::of(&c));
        rec.previous = instances.pop().map(|c| Instance::of(&c));
        for old in instances {
            let _ = deps.runtime.remove(&old.id).await;
        }
    }
    if adopted > 0 || state.sandbox.is_some() {
        tracing::info!(
            containers = adopted,
            sandbox = state.sandbox.is_some(),
            "adopted existing containers"
        );
    }
    Ok(())
}

/// Bring every known instance's state up to date.
async fn refresh(deps: &WorkerDeps, state: &mut PodState) -> Result<(), WorkerError> {
    for rec in state.containers.values_mut() {
        let Some(cur) = rec.current.as_mut() else {
            continue;
        };
        if matches!(cur.state, ContainerState::Exited { .. }) {
            continue; // an exited instance never changes again
        }
        match deps.runtime.inspect(&cur.id).await {
            Ok(info) => {
                cur.state = info.state;
                if !info.image_id.is_empty() {
                    cur.image_id = info.image_id;
                }
            }
            // Removed behind our back: it ended, we cannot tell how.
            Err(RuntimeError::NotFound(_)) => {
                let started_at = match &cur.state {
                    ContainerState::Running { started_at } => started_at.clone(),
                    _ => String::new(),
                };
                cur.state = ContainerState::Exited {
                    exit_code: 137,
                    reason: "ContainerStatusUnknown".into(),
                    started_at,
                    finished_at: meta::now_rfc3339(),
                };
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Stop the app containers that still run (their network namespace is gone).
async fn stop_cut_off(deps: &WorkerDeps, state: &mut PodState) -> Result<(), WorkerError> {
    for rec in state.containers.values_mut() {
        if let Some(cur) = rec.current.as_mut().filter(|c| c.running()) {
            ignore_not_found(deps.runtime.stop(&cur.id, Duration::ZERO).await)?;
            cur.state = match deps.runtime.inspect(&cur.id).await {
                Ok(info) => info.state,
                Err(_) => ContainerState::Exited {
                    exit_code: 137,
                    reason: "Error".into(),
                    started_at: String::new(),
                    finished_at: meta::now_rfc3339(),
                },
            };
        }
    }
    Ok(())
}

/// Make sure the pod has a running pause container.
async fn ensure_sandbox(
    deps: &WorkerDeps,
    pod: &Arc<Value>,
    state: &mut PodState,
    now: Instant,
    report: &mut SyncReport,
) -> Result<(), WorkerError> {
    if let Some(sb) = state.sandbox.clone() {
        match deps.runtime.inspect(&sb.id).await {
            Ok(info) if matches!(info.state, ContainerState::Running { .. }) => return Ok(()),
            Ok(_) | Err(RuntimeError::NotFound(_)) => {
                tracing::warn!(sandbox = %sb.id, "pod sandbox is gone; recreating it");
                let _ = deps.runtime.remove(&sb.id).await;
                state.sandbox = None;
            }
            Err(e) => return Err(e.into()),
        }
    }
    stop_cut_off(deps, state).await?;
    if state.sandbox_backoff.waiting(now) {
        report.wake(state.sandbox_backoff.until());
        return Ok(());
    }
    match deps
        .runtime
        .run_sandbox(&spec::sandbox(pod, &deps.config.node_name))
        .await
    {
        Ok(sb) => {
            tracing::debug!(sandbox = %sb.id, ip = %sb.ip, "sandbox running");
            state.sandbox = Some(sb);
            state.sandbox_backoff.reset();
            state.sandbox_error = None;
        }
        Err(RuntimeError::Unavailable(detail)) => {
            return Err(RuntimeError::Unavailable(detail).into())
        }
        Err(e) => {
            let wait = state.sandbox_backoff.start(now);
            tracing::warn!(error = %e, retry_in = ?wait, "creating the pod sandbox failed");
            event(
                deps,
                pod,
                "Warning",
                "FailedCreatePodSandBox",
                format!("Failed to create pod sandbox: {e}"),
            );
            state.sandbox_error = Some(e.to_string());
            report.wake(state.sandbox_backoff.until());
        }
    }
    Ok(())
}

/// What to do about one container now.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Next {
    /// Nothing: it runs, it is finished for good, or it is being started.
    Leave,
    /// Wait out the crash backoff.
    BackOff,
    /// Start this attempt.
    Start(u32),
}

/// The restart decision for a container's current instance, starting the crash backoff
/// the first time an exit is seen.
fn decide(
    rec: &mut ContainerRecord,
    policy: RestartPolicy,
    terminal: bool,
    reset_after: Duration,
    now: Instant,
) -> Next {
    let Some(cur) = rec.current.as_ref() else {
        return if terminal {
            Next::Leave
        } else {
            Next::Start(0)
        };
    };
    match &cur.state {
        ContainerState::Running { .. } | ContainerState::Unknown => Next::Leave,
        // Created but never started (the kubelet died in between): start it over under
        // the same attempt number.
        ContainerState::Created if terminal => Next::Leave,
        ContainerState::Created => Next::Start(cur.attempt),
        ContainerState::Exited {
            exit_code,
            started_at,
            finished_at,
            ..
        } => {
            if terminal || !policy.restarts(*exit_code) {
                return Next::Leave;
            }
            if rec.crash_for.as_deref() != Some(cur.id.as_str()) {
                // A new exit: the next, longer wait — unless it ran long enough to count
                // as healthy, which forgives the earlier crashes.
                if ran_for(started_at, finished_at).is_some_and(|d| d >= reset_after) {
                    rec.crash.reset();
                }
                rec.crash.start(now);
                rec.crash_for = Some(cur.id.clone());
            }
            if rec.crash.waiting(now) {
                Next::BackOff
            } else {
                Next::Start(cur.attempt + 1)
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn sync_container(
    deps: &WorkerDeps,
    pod: &Arc<Value>,
    container: &Value,
    state: &mut PodState,
    input: &SyncInput,
    terminal: bool,
    now: Instant,
    report: &mut SyncReport,
) -> Result<(), WorkerError> {
    let cfg = &deps.config;
    let name = name_of(container).to_string();
    let rec = state
        .containers
        .entry(name.clone())
        .or_insert_with(|| ContainerRecord::new(cfg));
    rec.waiting = None;

    // A failed liveness probe kills the container; the restart policy then decides as for
    // any other exit.
    if let Some(cur) = rec
        .current
        .as_mut()
        .filter(|c| c.running() && input.unhealthy.contains(&c.id))
    {
        tracing::info!(container = %name, "liveness probe failed; killing the container");
        event(
            deps,
            pod,
            "Normal",
            "Killing",
            format!("Container {name} failed liveness probe, will be restarted"),
        );
        ignore_not_found(deps.runtime.stop(&cur.id, termination_grace(pod)).await)?;
        if let Ok(info) = deps.runtime.inspect(&cur.id).await {
            cur.state = info.state;
        }
    }

    match decide(
        rec,
        RestartPolicy::of(pod),
        terminal,
        cfg.backoff_reset,
        now,
    ) {
        Next::Leave => Ok(()),
        Next::BackOff => {
            let message = crash_loop_message(rec.crash.current(), &name, pod);
            event(
                deps,
                pod,
                "Warning",
                "BackOff",
                format!(
                    "Back-off restarting failed container {name} in pod {}",
                    pod_label(pod)
                ),
            );
            rec.waiting = Some(("CrashLoopBackOff".into(), Some(message)));
            report.wake(rec.crash.until());
            Ok(())
        }
        Next::Start(attempt) => {
            start_container(deps, pod, container, state, attempt, now, report).await
        }
    }
}

/// Pull (as the policy says), then create and start one attempt of a container.
#[allow(clippy::too_many_arguments)]
async fn start_container(
    deps: &WorkerDeps,
    pod: &Arc<Value>,
    container: &Value,
    state: &mut PodState,
    attempt: u32,
    now: Instant,
    report: &mut SyncReport,
) -> Result<(), WorkerError> {
    let cfg = &deps.config;
    let name = name_of(container).to_string();
    let image = container
        .get("image")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let sandbox = state.sandbox.clone();
    let sandbox_error = state.sandbox_error.clone();
    let Some(rec) = state.containers.get_mut(&name) else {
        return Ok(());
    };
    let Some(sandbox) = sandbox else {
        rec.waiting = Some(("ContainerCreating".into(), sandbox_error));
        return Ok(());
    };
    if rec.prepare.waiting(now) {
        if let Some(err) = &rec.prepare_error {
            rec.waiting = Some(backing_off(err, &image));
        }
        report.wake(rec.prepare.until());
        return Ok(());
    }
    let fail = |rec: &mut ContainerRecord,
                reason: &str,
                message: String,
                report: &mut SyncReport| {
        let wait = rec.prepare.start(now);
        tracing::warn!(container = %name, reason, error = %message, retry_in = ?wait, "container not started");
        rec.prepare_error = Some((reason.to_string(), Some(message.clone())));
        rec.waiting = Some((reason.to_string(), Some(message)));
        report.wake(rec.prepare.until());
    };

    let image_id = match deps
        .runtime
        .ensure_image(&image, pull_policy(container))
        .await
    {
        Ok(id) => id,
        Err(RuntimeError::Unavailable(d)) => return Err(RuntimeError::Unavailable(d).into()),
        Err(e) => {
            let reason = image_failure(&e);
            event(
                deps,
                pod,
                "Warning",
                "Failed",
                format!("Error: {reason}: {e}"),
            );
            fail(rec, reason, e.to_string(), report);
            return Ok(());
        }
    };
    let at = Placement {
        pod_ip: Some(&sandbox.ip),
        host_ip: &cfg.host_ip,
    };
    let spec = match spec::container(pod, container, &cfg.node_name, &sandbox.id, attempt, at) {
        Ok(s) => s,
        Err(e) => {
            fail(rec, "CreateContainerConfigError", e.to_string(), report);
            return Ok(());
        }
    };
    let id = match deps.runtime.start_container(&spec).await {
        Ok(id) => id,
        Err(RuntimeError::Unavailable(d)) => return Err(RuntimeError::Unavailable(d).into()),
        Err(e) => {
            event(deps, pod, "Warning", "Failed", format!("Error: {e}"));
            fail(rec, "RunContainerError", e.to_string(), report);
            return Ok(());
        }
    };
    rec.prepare.reset();
    rec.prepare_error = None;
    let info = deps.runtime.inspect(&id).await.ok();
    let new = Instance {
        id: id.clone(),
        attempt,
        image_id: info
            .as_ref()
            .map(|i| i.image_id.clone())
            .filter(|i| !i.is_empty())
            .unwrap_or(image_id),
        state: info.map(|i| i.state).unwrap_or(ContainerState::Running {
            started_at: meta::now_rfc3339(),
        }),
    };
    tracing::debug!(container = %name, id = %id, attempt, "container started");
    event(
        deps,
        pod,
        "Normal",
        "Started",
        format!("Started container {name}"),
    );
    // The instance it replaces becomes `previous` (its logs stay readable); the one
    // before that is of no further use.
    match rec.current.take() {
        Some(old) if matches!(old.state, ContainerState::Created) => {
            let _ = deps.runtime.remove(&old.id).await;
        }
        Some(old) => {
            if let Some(older) = rec.previous.replace(old) {
                let _ = deps.runtime.remove(&older.id).await;
            }
        }
        None => {}
    }
    rec.current = Some(new);
    Ok(())
}

/// The containers as the status reports them, in spec order.
fn views(pod: &Value, state: &PodState, input: &SyncInput, scheme: &str) -> Vec<ContainerView> {
    containers(pod)
        .iter()
        .map(|c| {
            let name = name_of(c);
            let image = c.get("image").and_then(Value::as_str).unwrap_or_default();
            let rec = state.containers.get(name);
            let cur = rec.and_then(|r| r.current.as_ref());
            let previous = rec
                .and_then(|r| r.previous.as_ref())
                .and_then(|p| p.terminated(scheme));
            let (view_state, last) = match (rec.and_then(|r| r.waiting.clone()), cur) {
                (Some((reason, message)), _) => (
                    State::Waiting { reason, message },
                    cur.and_then(|c| c.terminated(scheme)).or(previous),
                ),
                (None, Some(i)) => match &i.state {
                    ContainerState::Running { started_at } => (
                        State::Running {
                            started_at: k8s_time(started_at),
                        },
                        previous,
                    ),
                    ContainerState::Exited { .. } => (
                        i.terminated(scheme)
                            .map(State::Terminated)
                            .unwrap_or_else(|| State::waiting("ContainerCreating", None)),
                        previous,
                    ),
                    _ => (State::waiting("ContainerCreating", None), previous),
                },
                (None, None) => (State::waiting("ContainerCreating", None), None),
            };
            let running = matches!(view_state, State::Running { .. });
            let has_readiness = c.get("readinessProbe").is_some_and(Value::is_object);
            let ready = running
                && (!has_readiness || cur.is_some_and(|i| input.ready.get(&i.id) == Some(&true)));
            ContainerView {
                name: name.to_string(),
                image: image.to_string(),
                image_id: cur.map(|i| i.image_id.clone()).unwrap_or_default(),
                container_id: cur
                    .filter(|_| !matches!(view_state, State::Waiting { .. }))
                    .map(|i| format!("{scheme}://{}", i.id)),
                state: view_state,
                last_terminated: last,
                ready,
                restart_count: cur.map(|i| i.attempt).unwrap_or(0),
            }
        })
        .collect()
}

/// Write the pod's status if anything the kubelet owns changed.
async fn write_status(
    deps: &WorkerDeps,
    pod: &Value,
    state: &PodState,
    input: &SyncInput,
    report: &mut SyncReport,
) -> Result<(), WorkerError> {
    let cfg = &deps.config;
    let views = views(pod, state, input, &cfg.id_scheme);
    let now = meta::now_rfc3339();
    let existing = pod.get("status").cloned().unwrap_or_else(|| json!({}));
    // A finished pod whose sandbox is gone keeps reporting the IP it had.
    let pod_ip = state.sandbox.as_ref().map(|s| s.ip.clone()).or_else(|| {
        existing
            .get("podIP")
            .and_then(Value::as_str)
            .map(str::to_string)
    });
    let start_time = state.start_time.clone().unwrap_or_else(|| now.clone());
    let built = status::build(&StatusInput {
        pod,
        containers: &views,
        pod_ip: pod_ip.as_deref(),
        host_ip: &cfg.host_ip,
        start_time: &start_time,
        now: &now,
    });
    // Our copy of the pod may predate our own last write: do not write the same again.
    if let Some((last, rv)) = &input.last_written {
        if *last == built && rv_of(pod) <= *rv {
            return Ok(());
        }
    }
    let Some(patch) = status::patch(&existing, &built) else {
        return Ok(());
    };
    let (ns, name) = (meta::namespace(pod), meta::name(pod).unwrap_or_default());
    match deps
        .client
        .patch("pods", ns, name, Some("status"), PatchType::Merge, patch)
        .await
    {
        Ok(written) => {
            tracing::debug!(phase = %built["phase"], "pod status written");
            report.written = Some((built, written));
            Ok(())
        }
        // Deleted meanwhile: the kubelet tells us.
        Err(ApiError::NotFound { .. }) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// One pass towards the pod's desired state.
async fn sync_pod(
    deps: &WorkerDeps,
    input: &SyncInput,
    state: &mut PodState,
) -> Result<SyncReport, WorkerError> {
    let pod = &input.pod;
    let now = Instant::now();
    let mut report = SyncReport::default();
    if state.start_time.is_none() {
        state.start_time = Some(
            pod.pointer("/status/startTime")
                .and_then(Value::as_str)
                .map(str::to_string)
                .unwrap_or_else(meta::now_rfc3339),
        );
    }
    if !state.adopted {
        adopt(deps, pod, state).await?;
        state.adopted = true;
    }
    refresh(deps, state).await?;
    let terminal = pod_phase(pod).is_some_and(Phase::is_terminal);
    if !terminal {
        ensure_sandbox(deps, pod, state, now, &mut report).await?;
    }
    for c in containers(pod) {
        sync_container(deps, pod, c, state, input, terminal, now, &mut report).await?;
    }
    write_status(deps, pod, state, input, &mut report).await?;
    Ok(report)
}

/// Stop everything the pod runs (SIGTERM, SIGKILL at the deadline), remove it, and after
/// a graceful deletion remove the pod object.
async fn terminate(
    deps: &WorkerDeps,
    pod: &Value,
    state: &mut PodState,
    kill: &Kill,
) -> Result<(), WorkerError> {
    let uid = meta::uid(pod).unwrap_or_default();
    let mine: Vec<ContainerInfo> = deps
        .runtime
        .list(&deps.config.node_name)
        .await?
        .into_iter()
        .filter(|c| c.pod_uid() == Some(uid))
        .collect();
    let (sandboxes, apps): (Vec<_>, Vec<_>) = mine.into_iter().partition(ContainerInfo::is_sandbox);
    let grace = kill.remaining();
    tracing::info!(grace = ?grace, containers = apps.len(), "stopping pod");
    // All containers stop at once: each gets the whole remaining grace period.
    let stops = apps
        .iter()
        .filter(|c| {
            matches!(
                c.state,
                ContainerState::Running { .. } | ContainerState::Unknown
            )
        })
        .map(|c| deps.runtime.stop(&c.id, grace));
    for r in futures::future::join_all(stops).await {
        ignore_not_found(r)?;
    }
    for c in &apps {
        ignore_not_found(deps.runtime.remove(&c.id).await)?;
    }
    for sb in &sandboxes {
        ignore_not_found(deps.runtime.stop(&sb.id, Duration::ZERO).await)?;
        ignore_not_found(deps.runtime.remove(&sb.id).await)?;
    }
    state.sandbox = None;
    state.containers.clear();
    if kill.delete_object {
        let (ns, name) = (meta::namespace(pod), meta::name(pod).unwrap_or_default());
        // Only the pod this worker ran: one re-created under the same name is not ours.
        match deps.client.get("pods", ns, name).await {
            Ok(current) if meta::uid(&current) == Some(uid) => {
                match deps.client.delete_now("pods", ns, name).await {
                    Ok(_) | Err(ApiError::NotFound { .. }) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            Ok(_) | Err(ApiError::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    tracing::info!("pod stopped and removed");
    Ok(())
}

/// One probe of one container instance.
struct ProbeRun {
    instance: String,
    spec: ProbeSpec,
    tracker: Tracker,
}

type ProbeKey = (String, ProbeKind);

/// What a spawned sync hands back: the state it owned, its result, and whether it was a
/// kill.
type SyncDone = (PodState, Result<SyncReport, WorkerError>, bool);

/// Drives one pod. Start it supervised (`actix::Supervisor::start`); the kubelet keeps its
/// address while the pod lives.
pub struct PodWorker {
    uid: String,
    key: String,
    deps: WorkerDeps,
    kubelet: Recipient<WorkerFinished>,
    pod: Arc<Value>,
    /// `None` while a sync owns it.
    state: Option<PodState>,
    kill: Option<Kill>,
    in_flight: bool,
    dirty: bool,
    finishing: bool,
    wake: Option<(Instant, SpawnHandle)>,
    probes: HashMap<ProbeKey, ProbeRun>,
    pod_ip: Option<String>,
    last_written: Option<(Value, u64)>,
    /// Backoff after failed syncs (runtime or API unreachable).
    retry: Backoff,
}

impl PodWorker {
    pub fn new(deps: WorkerDeps, pod: Arc<Value>, kubelet: Recipient<WorkerFinished>) -> Self {
        let uid = meta::uid(&pod).unwrap_or_default().to_string();
        let key = format!(
            "{}/{}",
            meta::namespace(&pod).unwrap_or_default(),
            meta::name(&pod).unwrap_or_default()
        );
        let state = PodState::new(&deps.config);
        PodWorker {
            uid,
            key,
            deps,
            kubelet,
            pod,
            state: Some(state),
            kill: None,
            in_flight: false,
            dirty: true,
            finishing: false,
            wake: None,
            probes: HashMap::new(),
            pod_ip: None,
            last_written: None,
            retry: Backoff::new(Duration::from_millis(500), Duration::from_secs(30)),
        }
    }

    fn request_kill(&mut self, kill: Kill, ctx: &mut Context<Self>) {
        match self.kill.as_mut() {
            Some(k) => k.merge(kill),
            None => self.kill = Some(kill),
        }
        self.request_sync(ctx);
    }

    fn request_sync(&mut self, ctx: &mut Context<Self>) {
        self.dirty = true;
        self.maybe_start(ctx);
    }

    /// Start a sync (or the kill) unless one is running; a running one is followed by
    /// another when it ends.
    fn maybe_start(&mut self, ctx: &mut Context<Self>) {
        if self.in_flight || !self.dirty || self.finishing {
            return;
        }
        let Some(mut state) = self.state.take() else {
            return;
        };
        self.dirty = false;
        self.in_flight = true;
        let deps = self.deps.clone();
        let pod = self.pod.clone();
        let span = tracing::info_span!("sync_pod", pod = %self.key, uid = %self.uid);
        let fut = match self.kill.clone() {
            Some(kill) => async move {
                let r = terminate(&deps, &pod, &mut state, &kill).await;
                (state, r.map(|_| SyncReport::default()), true)
            }
            .instrument(span)
            .boxed_local(),
            None => {
                let input = SyncInput {
                    pod,
                    ready: self.readiness(),
                    unhealthy: self.unhealthy(),
                    last_written: self.last_written.clone(),
                };
                async move {
                    let r = sync_pod(&deps, &input, &mut state).await;
                    (state, r, false)
                }
                .instrument(span)
                .boxed_local()
            }
        };
        // A panic in the sync stops the worker (the guard), and its supervisor restarts it.
        spawn_guarded(self, ctx, fut, |done, act, ctx| act.sync_done(done, ctx));
    }

    fn sync_done(&mut self, (state, result, was_kill): SyncDone, ctx: &mut Context<Self>) {
        self.in_flight = false;
        self.state = Some(state);
        match result {
            Ok(_) if was_kill => {
                self.finish(ctx);
                return;
            }
            Ok(report) => {
                self.retry.reset();
                self.apply(report, ctx);
            }
            Err(e) => {
                let wait = self.retry.start(Instant::now());
                tracing::warn!(pod = %self.key, error = %e, retry_in = ?wait, "pod sync failed");
                self.wake_at(Instant::now() + wait, ctx);
            }
        }
        self.maybe_start(ctx);
    }

    fn apply(&mut self, report: SyncReport, ctx: &mut Context<Self>) {
        if let Some((built, written)) = report.written {
            let rv = rv_of(&written);
            self.last_written = Some((built, rv));
            if rv > rv_of(&self.pod) {
                self.pod = Arc::new(written);
            }
        }
        if let Some(at) = report.wake_at {
            self.wake_at(at, ctx);
        }
        self.update_probes(ctx);
    }

    /// Sync again at `at` (the earliest of the wake-ups asked for wins).
    fn wake_at(&mut self, at: Instant, ctx: &mut Context<Self>) {
        if let Some((when, handle)) = self.wake {
            if when <= at && when > Instant::now() {
                return;
            }
            ctx.cancel_future(handle);
        }
        let delay = at.saturating_duration_since(Instant::now());
        let handle = ctx.run_later(delay, |act, ctx| {
            act.wake = None;
            act.request_sync(ctx);
        });
        self.wake = Some((at, handle));
    }

    fn finish(&mut self, ctx: &mut Context<Self>) {
        self.finishing = true;
        self.probes.clear();
        let kubelet = self.kubelet.clone();
        let uid = self.uid.clone();
        // Stop only after the kubelet dropped our address: a supervised actor that stops
        // while its address is held is restarted.
        ctx.spawn(
            async move {
                let _ = kubelet.send(WorkerFinished { uid }).await;
            }
            .into_actor(self)
            .map(|_, _, ctx| ctx.stop()),
        );
    }

    fn readiness(&self) -> HashMap<String, bool> {
        self.probes
            .iter()
            .filter(|((_, kind), _)| *kind == ProbeKind::Readiness)
            .map(|(_, run)| (run.instance.clone(), run.tracker.result()))
            .collect()
    }

    fn unhealthy(&self) -> HashSet<String> {
        self.probes
            .iter()
            .filter(|((_, kind), run)| *kind == ProbeKind::Liveness && !run.tracker.result())
            .map(|(_, run)| run.instance.clone())
            .collect()
    }

    /// Probe exactly the running instances: new ones get fresh trackers (a restarted
    /// container is not ready until its probe says so), ended ones lose theirs.
    fn update_probes(&mut self, ctx: &mut Context<Self>) {
        let Some(state) = self.state.as_ref() else {
            return;
        };
        self.pod_ip = state.sandbox.as_ref().map(|s| s.ip.clone());
        let mut wanted: HashMap<ProbeKey, (String, ProbeSpec)> = HashMap::new();
        for c in containers(&self.pod) {
            let name = name_of(c);
            let Some(cur) = state
                .containers
                .get(name)
                .and_then(|r| r.current.as_ref())
                .filter(|i| i.running())
            else {
                continue;
            };
            for kind in [ProbeKind::Liveness, ProbeKind::Readiness] {
                match ProbeSpec::of(c, kind) {
                    Some(Ok(spec)) => {
                        wanted.insert((name.to_string(), kind), (cur.id.clone(), spec));
                    }
                    Some(Err(e)) => tracing::warn!(container = %name, error = %e, "probe ignored"),
                    None => {}
                }
            }
        }
        self.probes
            .retain(|key, run| wanted.get(key).is_some_and(|(id, _)| *id == run.instance));
        for (key, (instance, spec)) in wanted {
            if self.probes.contains_key(&key) {
                continue;
            }
            let delay = spec.initial_delay;
            let tracker = Tracker::new(key.1, &spec);
            self.probes.insert(
                key.clone(),
                ProbeRun {
                    instance: instance.clone(),
                    spec,
                    tracker,
                },
            );
            ctx.run_later(delay, move |act, ctx| act.fire_probe(key, instance, ctx));
        }
    }

    fn fire_probe(&mut self, key: ProbeKey, instance: String, ctx: &mut Context<Self>) {
        let Some(run) = self.probes.get(&key).filter(|r| r.instance == instance) else {
            return;
        };
        let fut = probe::run(
            self.deps.runtime.clone(),
            instance.clone(),
            self.pod_ip.clone(),
            run.spec.clone(),
        );
        ctx.spawn(
            fut.into_actor(self)
                .map(move |outcome, act, ctx| act.probe_result(key, instance, outcome, ctx)),
        );
    }

    fn probe_result(
        &mut self,
        key: ProbeKey,
        instance: String,
        outcome: Outcome,
        ctx: &mut Context<Self>,
    ) {
        let Some(run) = self.probes.get_mut(&key).filter(|r| r.instance == instance) else {
            return;
        };
        if let Outcome::Failure(why) = &outcome {
            tracing::debug!(pod = %self.key, container = %key.0, probe = ?key.1, reason = %why, "probe failed");
            let what = match key.1 {
                ProbeKind::Liveness => "Liveness",
                ProbeKind::Readiness => "Readiness",
            };
            event(
                &self.deps,
                &self.pod,
                "Warning",
                "Unhealthy",
                format!("{what} probe failed: {why}"),
            );
        }
        let flipped = run.tracker.observe(&outcome);
        let period = run.spec.period;
        if flipped.is_some() {
            // Readiness changed the status; a liveness failure needs a kill.
            self.request_sync(ctx);
        }
        ctx.run_later(period, move |act, ctx| act.fire_probe(key, instance, ctx));
    }
}

impl Actor for PodWorker {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // A finished worker restarted by its supervisor (someone still held its address)
        // stays idle: it has nothing left to do, and stops once the address is dropped.
        if self.finishing {
            return;
        }
        ctx.run_interval(self.deps.config.resync_interval, |act, ctx| {
            act.request_sync(ctx)
        });
        if self.pod.pointer("/metadata/deletionTimestamp").is_some() {
            let kill = Kill::graceful(&self.pod);
            self.request_kill(kill, ctx);
        } else {
            self.request_sync(ctx);
        }
    }
}

impl Supervised for PodWorker {
    fn restarting(&mut self, _ctx: &mut Self::Context) {
        // Whatever a panicking sync held is lost: start over from the runtime, which the
        // first sync re-reads and adopts. A pending kill and a finished worker stay so.
        self.state = Some(PodState::new(&self.deps.config));
        self.in_flight = false;
        self.dirty = true;
        self.wake = None;
        self.probes.clear();
        self.last_written = None;
    }
}

impl Handler<UpdatePod> for PodWorker {
    type Result = ();

    fn handle(&mut self, msg: UpdatePod, ctx: &mut Self::Context) {
        let _ = guard(self, ctx, |act, ctx| {
            // Our own status write may already have given us something newer.
            if rv_of(&msg.0) < rv_of(&act.pod) {
                return;
            }
            act.pod = msg.0;
            if act.pod.pointer("/metadata/deletionTimestamp").is_some() {
                let kill = Kill::graceful(&act.pod);
                act.request_kill(kill, ctx);
            } else {
                act.request_sync(ctx);
            }
        });
    }
}

impl Handler<PodRemoved> for PodWorker {
    type Result = ();

    fn handle(&mut self, _: PodRemoved, ctx: &mut Self::Context) {
        let _ = guard(self, ctx, |act, ctx| {
            let kill = Kill::outright(&act.pod);
            act.request_kill(kill, ctx);
        });
    }
}

impl Handler<RuntimeChanged> for PodWorker {
    type Result = ();

    fn handle(&mut self, _: RuntimeChanged, ctx: &mut Self::Context) {
        let _ = guard(self, ctx, |act, ctx| act.request_sync(ctx));
    }
}

impl Handler<Shutdown> for PodWorker {
    type Result = ();

    fn handle(&mut self, _: Shutdown, ctx: &mut Self::Context) {
        self.finishing = true;
        ctx.stop();
    }
}

impl Handler<InjectPanic> for PodWorker {
    type Result = ();

    fn handle(&mut self, _: InjectPanic, ctx: &mut Self::Context) {
        let _ = guard(self, ctx, |_, _| panic!("injected pod worker panic"));
    }
}

#[cfg(test)]
mod tests {
    use super::super::fake::{FakeClient, FakeRuntime};
    use super::*;

    fn deps(runtime: Arc<FakeRuntime>, client: Arc<FakeClient>, base: Duration) -> WorkerDeps {
        let config = WorkerConfig {
            node_name: "n1".into(),
            host_ip: "192.168.0.9".into(),
            backoff_base: base,
            backoff_max: base * 8,
            id_scheme: "fake".into(),
            ..WorkerConfig::default()
        };
        WorkerDeps {
            client: client.clone(),
            runtime,
            config: Arc::new(config),
            recorder: Arc::new(Recorder::new(client, "kubelet")),
        }
    }

    fn pod(policy: &str, containers: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": "ns", "uid": "u1", "resourceVersion": "1"},
            "spec": {"nodeName": "n1", "restartPolicy": policy, "containers": containers},
            "status": {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "True"}]}})
    }

    fn input(pod: &Value) -> SyncInput {
        SyncInput {
            pod: Arc::new(pod.clone()),
            ready: HashMap::new(),
            unhealthy: HashSet::new(),
            last_written: None,
        }
    }

    async fn sync(d: &WorkerDeps, state: &mut PodState, client: &FakeClient) -> Value {
        let current = client.pod("ns", "p").expect("pod");
        sync_pod(d, &input(&current), state).await.expect("sync");
        client.pod("ns", "p").expect("pod")
    }

    fn record(base: Duration) -> ContainerRecord {
        ContainerRecord::new(&WorkerConfig {
            backoff_base: base,
            backoff_max: base * 30,
            ..WorkerConfig::default()
        })
    }

    fn exited(id: &str, attempt: u32, code: i64, ran: i64) -> Instance {
        let start = Utc::now() - chrono::Duration::seconds(ran);
        Instance {
            id: id.into(),
            attempt,
            image_id: String::new(),
            state: ContainerState::Exited {
                exit_code: code,
                reason: "Error".into(),
                started_at: start.to_rfc3339(),
                finished_at: Utc::now().to_rfc3339(),
            },
        }
    }

    #[test]
    fn a_crashed_container_waits_out_its_backoff_before_the_next_attempt() {
        let base = Duration::from_secs(10);
        let mut rec = record(base);
        rec.current = Some(exited("c1", 0, 1, 1));
        let now = Instant::now();
        let reset = Duration::from_secs(600);
        assert_eq!(
            decide(&mut rec, RestartPolicy::Always, false, reset, now),
            Next::BackOff
        );
        assert_eq!(rec.crash.current(), base);
        assert_eq!(
            decide(&mut rec, RestartPolicy::Always, false, reset, now + base),
            Next::Start(1)
        );
        // The next crash waits twice as long.
        rec.current = Some(exited("c2", 1, 1, 1));
        assert_eq!(
            decide(&mut rec, RestartPolicy::Always, false, reset, now + base),
            Next::BackOff
        );
        assert_eq!(rec.crash.current(), base * 2);
    }

    #[test]
    fn a_container_that_ran_long_enough_restarts_with_the_shortest_backoff() {
        let mut rec = record(Duration::from_secs(10));
        let now = Instant::now();
        for _ in 0..3 {
            rec.crash.start(now);
        }
        rec.current = Some(exited("c9", 3, 1, 700));
        decide(
            &mut rec,
            RestartPolicy::Always,
            false,
            Duration::from_secs(600),
            now,
        );
        assert_eq!(rec.crash.current(), Duration::from_secs(10));
    }

    #[test]
    fn the_restart_policy_decides_whether_an_exit_is_restarted() {
        let reset = Duration::from_secs(600);
        let now = Instant::now();
        let mut rec = record(Duration::from_secs(10));
        rec.current = Some(exited("c1", 0, 0, 1));
        assert_eq!(
            decide(&mut rec, RestartPolicy::OnFailure, false, reset, now),
            Next::Leave
        );
        assert_eq!(
            decide(&mut rec, RestartPolicy::Never, false, reset, now),
            Next::Leave
        );
        rec.current = Some(exited("c2", 0, 2, 1));
        assert_eq!(
            decide(&mut rec, RestartPolicy::OnFailure, false, reset, now),
            Next::BackOff
        );
        assert_eq!(
            decide(&mut rec, RestartPolicy::Always, true, reset, now),
            Next::Leave,
            "terminal pods stay"
        );
    }

    #[test]
    fn crash_loop_messages_are_worded_as_the_kubelet_words_them() {
        let p = pod("Always", json!([]));
        assert_eq!(
            crash_loop_message(Duration::from_secs(20), "c", &p),
            "back-off 20s restarting failed container=c pod=p_ns(u1)"
        );
    }

    #[test]
    fn pull_policy_defaults_to_always_for_latest_and_untagged_images() {
        assert_eq!(
            pull_policy(&json!({"image": "busybox"})),
            PullPolicy::Always
        );
        assert_eq!(
            pull_policy(&json!({"image": "skiff/busybox:latest"})),
            PullPolicy::Always
        );
        assert_eq!(
            pull_policy(&json!({"image": "busybox:1.36"})),
            PullPolicy::IfNotPresent
        );
        assert_eq!(
            pull_policy(&json!({"image": "localhost:5000/busybox"})),
            PullPolicy::Always
        );
        assert_eq!(
            pull_policy(&json!({"image": "busybox", "imagePullPolicy": "Never"})),
            PullPolicy::Never
        );
    }

    #[tokio::test]
    async fn a_sync_starts_the_sandbox_first_then_the_containers_and_reports_running() {
        let runtime = Arc::new(FakeRuntime::default());
        let client = Arc::new(FakeClient::with_pod(pod(
            "Always",
            json!([{"name": "a", "image": "img:1"}, {"name": "b", "image": "img:1",
                "env": [{"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}]}]),
        )));
        let d = deps(runtime.clone(), client.clone(), Duration::from_secs(10));
        let mut state = PodState::new(&d.config);
        let p = sync(&d, &mut state, &client).await;
        let calls = runtime.calls();
        assert_eq!(calls[0], "run_sandbox p");
        assert!(calls.contains(&"start_container a 0".to_string()));
        assert!(calls.contains(&"start_container b 0".to_string()));
        assert_eq!(p["status"]["phase"], "Running");
        assert_eq!(p["status"]["podIP"], "10.0.0.1");
        assert_eq!(p["status"]["hostIP"], "192.168.0.9");
        assert!(p["status"]["startTime"].is_string());
        let ready = p["status"]["conditions"]
            .as_array()
            .expect("conditions")
            .iter()
            .find(|c| c["type"] == "Ready")
            .cloned();
        assert_eq!(ready.map(|c| c["status"].clone()), Some(json!("True")));
        assert!(p["status"]["containerStatuses"][0]["containerID"]
            .as_str()
            .is_some_and(|id| id.starts_with("fake://")));

        // A second sync with nothing changed neither starts anything nor writes.
        let writes = client.writes().len();
        let before = runtime.calls().len();
        let again = client.pod("ns", "p").expect("pod");
        let mut inp = input(&again);
        inp.last_written = None;
        sync_pod(&d, &inp, &mut state).await.expect("sync");
        assert_eq!(
            client.writes().len(),
            writes,
            "unchanged status is not written"
        );
        assert!(runtime.calls()[before..]
            .iter()
            .all(|c| !c.starts_with("start_container")));
    }

    #[tokio::test]
    async fn never_with_a_crashed_container_ends_failed_with_its_exit_code() {
        let runtime = Arc::new(FakeRuntime::default());
        runtime.exit_on_start("app", 3);
        let client = Arc::new(FakeClient::with_pod(pod(
            "Never",
            json!([{"name": "app", "image": "img:1"}]),
        )));
        let d = deps(runtime.clone(), client.clone(), Duration::from_secs(10));
        let mut state = PodState::new(&d.config);
        let p = sync(&d, &mut state, &client).await;
        assert_eq!(p["status"]["phase"], "Failed");
        let s = &p["status"]["containerStatuses"][0];
        assert_eq!(s["state"]["terminated"]["exitCode"], 3);
        assert_eq!(s["restartCount"], 0);
        let p = sync(&d, &mut state, &client).await;
        assert_eq!(p["status"]["phase"], "Failed");
        assert_eq!(runtime.instances("app").len(), 1, "never restarted");
    }

    #[tokio::test]
    async fn always_restarts_a_crashed_container_after_reporting_crash_loop_back_off() {
        let runtime = Arc::new(FakeRuntime::default());
        runtime.exit_on_start("app", 1);
        let client = Arc::new(FakeClient::with_pod(pod(
            "Always",
            json!([{"name": "app", "image": "img:1"}]),
        )));
        let base = Duration::from_millis(200);
        let d = deps(runtime.clone(), client.clone(), base);
        let mut state = PodState::new(&d.config);
        // The first sync starts it and sees it end at once.
        let p = sync(&d, &mut state, &client).await;
        let s = &p["status"]["containerStatuses"][0];
        assert_eq!(s["state"]["terminated"]["exitCode"], 1);
        // The next one backs off.
        let p = sync(&d, &mut state, &client).await;
        let s = &p["status"]["containerStatuses"][0];
        assert_eq!(s["state"]["waiting"]["reason"], "CrashLoopBackOff");
        assert_eq!(
            s["state"]["waiting"]["message"],
            "back-off 200ms restarting failed container=app pod=p_ns(u1)"
        );
        assert_eq!(s["lastState"]["terminated"]["exitCode"], 1);
        assert_eq!(p["status"]["phase"], "Running");
        // A sync during the backoff starts nothing.
        let p = sync(&d, &mut state, &client).await;
        assert_eq!(p["status"]["containerStatuses"][0]["restartCount"], 0);
        tokio::time::sleep(base).await;
        let p = sync(&d, &mut state, &client).await;
        assert_eq!(p["status"]["containerStatuses"][0]["restartCount"], 1);
        let p = sync(&d, &mut state, &client).await;
        let s = &p["status"]["containerStatuses"][0];
        assert_eq!(s["restartCount"], 1);
        assert_eq!(
            s["state"]["waiting"]["message"],
            "back-off 400ms restarting failed container=app pod=p_ns(u1)"
        );
        assert!(runtime
            .calls()
            .contains(&"start_container app 1".to_string()));
    }

    #[tokio::test]
    async fn a_missing_image_reports_err_image_never_pull_and_retries_with_backoff() {
        let runtime = Arc::new(FakeRuntime::default());
        let client = Arc::new(FakeClient::with_pod(pod(
            "Always",
            json!([{"name": "app", "image": "missing/x", "imagePullPolicy": "Never"},
                   {"name": "pull", "image": "missing/y", "imagePullPolicy": "IfNotPresent"}]),
        )));
        let d = deps(runtime.clone(), client.clone(), Duration::from_secs(10));
        let mut state = PodState::new(&d.config);
        let current = client.pod("ns", "p").expect("pod");
        let report = sync_pod(&d, &input(&current), &mut state)
            .await
            .expect("sync");
        assert!(report.wake_at.is_some(), "a retry is scheduled");
        let p = client.pod("ns", "p").expect("pod");
        assert_eq!(p["status"]["phase"], "Pending");
        assert_eq!(
            p["status"]["containerStatuses"][0]["state"]["waiting"]["reason"],
            "ErrImageNeverPull"
        );
        assert_eq!(
            p["status"]["containerStatuses"][1]["state"]["waiting"]["reason"],
            "ErrImagePull"
        );
        let p = sync(&d, &mut state, &client).await;
        assert_eq!(
            p["status"]["containerStatuses"][1]["state"]["waiting"]["reason"],
            "ImagePullBackOff"
        );
        let pulls = runtime
            .calls()
            .iter()
            .filter(|c| c.starts_with("ensure_image"))
            .count();
        assert_eq!(pulls, 2, "no pull during the backoff");
    }

    #[tokio::test]
    async fn a_new_worker_adopts_running_containers_without_restarting_them() {
        let runtime = Arc::new(FakeRuntime::default());
        let client = Arc::new(FakeClient::with_pod(pod(
            "Always",
            json!([{"name": "app", "image": "img:1"}]),
        )));
        let d = deps(runtime.clone(), client.clone(), Duration::from_secs(10));
        let mut first = PodState::new(&d.config);
        sync(&d, &mut first, &client).await;
        let starts = runtime.calls().len();
        let mut fresh = PodState::new(&d.config);
        let p = sync(&d, &mut fresh, &client).await;
        assert!(
            runtime.calls()[starts..]
                .iter()
                .all(|c| !c.starts_with("start_container") && !c.starts_with("run_sandbox")),
            "{:?}",
            runtime.calls()
        );
        assert_eq!(p["status"]["phase"], "Running");
        assert_eq!(runtime.instances("app").len(), 1);
    }

    #[tokio::test]
    async fn a_failed_liveness_probe_kills_and_restarts_the_container_as_a_restart() {
        let runtime = Arc::new(FakeRuntime::default());
        let client = Arc::new(FakeClient::with_pod(pod(
            "Always",
            json!([{"name": "app", "image": "img:1"}]),
        )));
        let d = deps(runtime.clone(), client.clone(), Duration::from_millis(50));
        let mut state = PodState::new(&d.config);
        sync(&d, &mut state, &client).await;
        let id = runtime.instances("app")[0].id.clone();
        let current = client.pod("ns", "p").expect("pod");
        let mut inp = input(&current);
        inp.unhealthy.insert(id.clone());
        sync_pod(&d, &inp, &mut state).await.expect("sync");
        assert!(runtime
            .calls()
            .iter()
            .any(|c| c.starts_with(&format!("stop {id}"))));
        tokio::time::sleep(Duration::from_millis(60)).await;
        let p = sync(&d, &mut state, &client).await;
        assert_eq!(p["status"]["containerStatuses"][0]["restartCount"], 1);
        assert_eq!(
            p["status"]["containerStatuses"][0]["lastState"]["terminated"]["exitCode"],
            137
        );
    }

    #[tokio::test]
    async fn termination_stops_with_the_remaining_grace_removes_everything_and_deletes_the_pod() {
        let runtime = Arc::new(FakeRuntime::default());
        let client = Arc::new(FakeClient::with_pod(pod(
            "Always",
            json!([{"name": "app", "image": "img:1"}]),
        )));
        let d = deps(runtime.clone(), client.clone(), Duration::from_secs(10));
        let mut state = PodState::new(&d.config);
        sync(&d, &mut state, &client).await;
        let mut p = client.pod("ns", "p").expect("pod");
        let deadline = Utc::now() + chrono::Duration::seconds(20);
        p["metadata"]["deletionTimestamp"] =
            json!(deadline.format("%Y-%m-%dT%H:%M:%SZ").to_string());
        let kill = Kill::graceful(&p);
        terminate(&d, &p, &mut state, &kill)
            .await
            .expect("terminate");
        let app = runtime
            .calls()
            .into_iter()
            .find(|c| c.starts_with("stop c2"))
            .expect("app stopped");
        let grace: u64 = app
            .rsplit(' ')
            .next()
            .and_then(|g| g.parse().ok())
            .expect("grace");
        assert!((18..=20).contains(&grace), "remaining grace, got {grace}");
        assert!(runtime.all().is_empty(), "containers and sandbox removed");
        assert!(client.pod("ns", "p").is_none(), "pod object removed");
    }

    #[tokio::test]
    async fn a_pod_deleted_outright_only_loses_its_containers() {
        let runtime = Arc::new(FakeRuntime::default());
        let client = Arc::new(FakeClient::with_pod(pod(
            "Always",
            json!([{"name": "app", "image": "img:1"}]),
        )));
        let d = deps(runtime.clone(), client.clone(), Duration::from_secs(10));
        let mut state = PodState::new(&d.config);
        sync(&d, &mut state, &client).await;
        let p = client.pod("ns", "p").expect("pod");
        terminate(&d, &p, &mut state, &Kill::outright(&p))
            .await
            .expect("terminate");
        assert!(runtime.all().is_empty());
        assert!(!client.writes().iter().any(|w| w.starts_with("delete_now")));
    }

    #[test]
    fn a_second_kill_request_can_only_shorten_the_deadline() {
        let p = pod("Always", json!([]));
        let mut graceful = Kill::graceful(&p);
        let outright = Kill::outright(&p);
        graceful.merge(outright.clone());
        assert!(graceful.deadline <= outright.deadline);
        assert!(!graceful.delete_object);
    }

    /// A recipient for `WorkerFinished` in actor tests.
    struct Sink(Arc<std::sync::Mutex<Vec<String>>>);
    impl Actor for Sink {
        type Context = Context<Self>;
    }
    impl Handler<WorkerFinished> for Sink {
        type Result = ();
        fn handle(&mut self, msg: WorkerFinished, _: &mut Self::Context) {
            self.0
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(msg.uid);
        }
    }

    async fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !f() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[actix_rt::test]
    async fn a_panicking_sync_restarts_the_worker_which_adopts_instead_of_starting_twice() {
        let runtime = Arc::new(FakeRuntime::default());
        runtime.panic_on_next_start();
        let client = Arc::new(FakeClient::with_pod(pod(
            "Always",
            json!([{"name": "app", "image": "img:1"}]),
        )));
        let d = deps(runtime.clone(), client.clone(), Duration::from_millis(50));
        let finished = Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = Sink(finished.clone()).start();
        let p = Arc::new(client.pod("ns", "p").expect("pod"));
        let worker = PodWorker::new(d, p, sink.recipient());
        let addr = actix::Supervisor::start(move |_| worker);
        wait_for("the pod to run after the panic", || {
            client
                .pod("ns", "p")
                .is_some_and(|p| p["status"]["phase"] == "Running")
        })
        .await;
        assert_eq!(runtime.instances("app").len(), 1);
        let sandboxes = runtime.all().iter().filter(|c| c.is_sandbox()).count();
        assert_eq!(sandboxes, 1, "the restarted worker adopted the sandbox");

        // A panic in a handler is survived the same way.
        addr.do_send(InjectPanic);
        addr.do_send(RuntimeChanged);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(addr.connected());
        addr.do_send(PodRemoved);
        wait_for("the worker to finish", || {
            !finished
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_empty()
        })
        .await;
        assert!(runtime.all().is_empty());
    }

    #[actix_rt::test]
    async fn a_readiness_probe_gates_the_ready_condition() {
        let runtime = Arc::new(FakeRuntime::default());
        runtime.fail_exec("check");
        let client = Arc::new(FakeClient::with_pod(pod(
            "Always",
            json!([{"name": "app", "image": "img:1",
                "readinessProbe": {"exec": {"command": ["check"]}, "periodSeconds": 1}}]),
        )));
        let d = deps(runtime.clone(), client.clone(), Duration::from_millis(50));
        let sink = Sink(Default::default()).start();
        let p = Arc::new(client.pod("ns", "p").expect("pod"));
        let _worker = actix::Supervisor::start(move |_| PodWorker::new(d, p, sink.recipient()));
        let ready = |client: &FakeClient| {
            client.pod("ns", "p").and_then(|p| {
                p["status"]["conditions"]
                    .as_array()?
                    .iter()
                    .find(|c| c["type"] == "Ready")
                    .map(|c| c["status"] == "True")
            })
        };
        wait_for("the pod to run", || {
            client
                .pod("ns", "p")
                .is_some_and(|p| p["status"]["phase"] == "Running")
        })
        .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            ready(&client),
            Some(false),
            "not ready while the probe fails"
        );
        runtime.clear_failing_exec();
        wait_for("the pod to become ready", || ready(&client) == Some(true)).await;
    }
}
