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
//!
//! Init containers run first, one after the other (`init`); lifecycle hooks run around
//! starts and stops (`hooks`); the kubelet's own files of the pod (`/etc/hosts`, the
//! termination message files) live in the pod's directory (`files`).

mod containers;
mod files;
mod hooks;
mod init;
mod report;
mod termination;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use chrono::{DateTime, Utc};
use futures::FutureExt;
use serde_json::{json, Value};
use tracing::Instrument;

use super::backoff::{go_duration, Backoff};
use super::dns::DnsSettings;
use super::probe::{self, Outcome, ProbeKind, ProbeSpec, Tracker};
use super::runtime::{
    ContainerInfo, ContainerState, PodNetwork, PullPolicy, Runtime, RuntimeError, SandboxInfo,
};
use super::spec::{self, Placement};
use super::status::{self, ContainerView, Phase, RestartPolicy, State, StatusInput, Terminated};
use super::volumes::VolumeManager;
use crate::api::{meta, ApiError};
use crate::client::{ApiClient, PatchType};
use crate::runtime::{guard, spawn_guarded, Recorder};

pub use containers::crash_loop_message;
use containers::*;
use init::*;
use report::*;
use termination::*;

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
    /// Where each pod's kubelet files live (`<pods_dir>/<uid>/`).
    pub pods_dir: PathBuf,
    /// The cluster's DNS: its domain (pod FQDNs in `/etc/hosts`) and what pods'
    /// `/etc/resolv.conf` is formed from.
    pub dns: DnsSettings,
    /// The node's pod network its sandboxes join (`None`: the runtime's default).
    pub network: Option<PodNetwork>,
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
            pods_dir: std::env::temp_dir().join("skiff-kubelet").join("pods"),
            dns: DnsSettings::default(),
            network: None,
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
    /// Environment sources, volumes and mounts of the node's pods.
    pub volumes: Arc<VolumeManager>,
}

/// What one sync reads besides the state it owns.
#[derive(Debug, Clone)]
struct SyncInput {
    pod: Arc<Value>,
    /// Readiness results by container instance id (only containers with a readiness probe).
    ready: HashMap<String, bool>,
    /// Instances whose liveness or startup probe failed, with which probe it was.
    unhealthy: HashMap<String, &'static str>,
    /// Instances whose startup probe succeeded.
    started: HashSet<String>,
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
    let mut terminal = pod_phase(pod).is_some_and(Phase::is_terminal);
    if !terminal {
        check_deadline(deps, pod, state, &mut report);
        terminal = state.deadline_exceeded;
    }
    if terminal {
        // A finished pod keeps nothing running (sidecars, or whatever ran at its deadline).
        stop_running(deps, pod, state).await?;
    } else {
        ensure_sandbox(deps, pod, state, now, &mut report).await?;
    }
    let initialized = if terminal {
        initialized(pod, state)
    } else {
        sync_init(deps, pod, state, input, now, &mut report).await?
    };
    if initialized {
        let policy = RestartPolicy::of(pod);
        for c in containers(pod) {
            sync_container(
                deps,
                pod,
                c,
                state,
                input,
                policy,
                terminal,
                now,
                &mut report,
            )
            .await?;
        }
    }
    // Ephemeral containers start once, even while the pod initializes, and are never
    // restarted.
    for c in ephemeral_containers(pod) {
        sync_container(
            deps,
            pod,
            c,
            state,
            input,
            RestartPolicy::Never,
            terminal,
            now,
            &mut report,
        )
        .await?;
    }
    read_messages(deps, pod, state).await;
    write_status(deps, pod, state, input, initialized, &mut report).await?;
    Ok(report)
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
                    started: self.startup_passed(),
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
        let handle = crate::runtime::run_later_guarded(ctx, delay, |act, ctx| {
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

    fn unhealthy(&self) -> HashMap<String, &'static str> {
        self.probes
            .iter()
            .filter_map(|((_, kind), run)| match kind {
                ProbeKind::Liveness if !run.tracker.result() => {
                    Some((run.instance.clone(), "liveness"))
                }
                ProbeKind::Startup if !run.tracker.result() && run.tracker.failed() => {
                    Some((run.instance.clone(), "startup"))
                }
                _ => None,
            })
            .collect()
    }

    fn startup_passed(&self) -> HashSet<String> {
        self.probes
            .iter()
            .filter(|((_, kind), run)| *kind == ProbeKind::Startup && run.tracker.result())
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
        let sidecars = init_containers(&self.pod).iter().filter(|c| is_sidecar(c));
        for c in containers(&self.pod).iter().chain(sidecars) {
            let name = name_of(c);
            let Some(cur) = state
                .containers
                .get(name)
                .and_then(|r| r.current.as_ref())
                .filter(|i| i.running())
            else {
                continue;
            };
            // Until a startup probe succeeded, it is the only probe that runs.
            let started = !c.get("startupProbe").is_some_and(Value::is_object)
                || self
                    .probes
                    .get(&(name.to_string(), ProbeKind::Startup))
                    .is_some_and(|r| r.instance == cur.id && r.tracker.result());
            let kinds: &[ProbeKind] = if started {
                &[
                    ProbeKind::Startup,
                    ProbeKind::Liveness,
                    ProbeKind::Readiness,
                ]
            } else {
                &[ProbeKind::Startup]
            };
            for &kind in kinds {
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
            crate::runtime::run_later_guarded(ctx, delay, move |act, ctx| {
                act.fire_probe(key, instance, ctx)
            });
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
                ProbeKind::Startup => "Startup",
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
        // A startup probe is done once it succeeded, and its failure ends the instance.
        let startup_over =
            key.1 == ProbeKind::Startup && (run.tracker.result() || run.tracker.failed());
        if flipped.is_some() || startup_over {
            // Readiness changed the status; a liveness or startup failure needs a kill;
            // a passed startup probe lets the other probes (and the next init container)
            // start.
            self.request_sync(ctx);
        }
        if !startup_over {
            crate::runtime::run_later_guarded(ctx, period, move |act, ctx| {
                act.fire_probe(key, instance, ctx)
            });
        }
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
        crate::runtime::run_interval_guarded(ctx, self.deps.config.resync_interval, |act, ctx| {
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
        crate::runtime::record_restart("PodWorker");
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
