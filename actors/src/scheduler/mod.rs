//! The scheduler (kube-scheduler): binds every pending pod to the best node.
//!
//! Informers on nodes and pods feed the [`Engine`] (queue, cache, filters, scores), which
//! turns each pending pod into a decision; this actor carries the decisions out: up to
//! `max_binds_in_flight` binds at once (so throughput is not one store sync per pod), the
//! `PodScheduled=False` condition and a `FailedScheduling` event for pods that fit nowhere,
//! and a `Scheduled` event for pods placed.
//!
//! Nodes and pods come from the process's shared informers (the controllers and kubelets
//! read the same caches). The actor is supervised and its work runs under the runtime's
//! guard: a panic stops it and the supervisor restarts it with an empty engine, which the
//! informers' replay of their caches fills again, so it carries on from the store's state
//! (binds already stored show up as bound pods).

pub mod affinity;
pub mod cache;
mod engine;
pub mod events;
pub mod filters;
pub mod info;
#[cfg(test)]
mod plugin_tests;
pub mod preemption;
pub mod queue;
pub mod score;
pub mod spread;
pub mod volumes;

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use futures::StreamExt;
use serde_json::{json, Value};

pub use engine::{feasible_nodes_to_find, Decision, Engine};
pub use queue::QueueLengths;
pub use score::Weights;

use crate::api::{meta, ApiError};
use crate::client::{ApiClient, PatchType};
use crate::controllers::pods;
use crate::runtime::{
    guard, spawn_guarded, Change, Informer, InformerFactory, InformerSpec, Notification, Panicked,
    Recorder,
};
use events::{EventQueue, PodEvent};
use info::PodMeta;

const CLAIMS: &str = "persistentvolumeclaims";
const VOLUMES: &str = "persistentvolumes";
const CLASSES: &str = "storageclasses";

/// The component name on events and the default `spec.schedulerName`.
pub const DEFAULT_SCHEDULER_NAME: &str = "default-scheduler";

#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// Pods whose `spec.schedulerName` is this (or unset) are ours.
    pub scheduler_name: String,
    /// Share of nodes to find feasible before scoring; 0 = adaptive, as kube-scheduler.
    pub percentage_of_nodes_to_score: u32,
    /// Binds sent and not yet answered, at most.
    pub max_binds_in_flight: usize,
    /// Pods decided per turn before the actor reads its mailbox again (informer events
    /// and bind results must not wait behind a long queue).
    pub batch: usize,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// Unschedulable pods are retried at least this often, even if nothing changed.
    pub unschedulable_flush: Duration,
    /// How often backoffs and the unschedulable list are checked.
    pub housekeeping: Duration,
    /// Write a `Scheduled` event for every pod placed.
    pub scheduled_events: bool,
    /// Events waiting to be written at most; beyond that they are dropped (and counted),
    /// so reporting never slows placing.
    pub event_queue: usize,
    /// Event writes in flight at most.
    pub event_writers: usize,
    pub weights: Weights,
    /// How long VolumeBinding's PreBind waits for a pod's claims to be bound (provisioned)
    /// before the pod goes back to the queue (kube-scheduler's bindTimeoutSeconds).
    pub volume_bind_timeout: Duration,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            scheduler_name: DEFAULT_SCHEDULER_NAME.to_string(),
            percentage_of_nodes_to_score: 0,
            max_binds_in_flight: 256,
            batch: 64,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(10),
            unschedulable_flush: Duration::from_secs(60),
            housekeeping: Duration::from_secs(1),
            scheduled_events: true,
            event_queue: 10_000,
            event_writers: 16,
            weights: Weights::default(),
            volume_bind_timeout: Duration::from_secs(600),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    #[error("binding pod {pod} to node {node} failed")]
    Bind {
        pod: String,
        node: String,
        #[source]
        source: ApiError,
    },
    #[error("writing the PodScheduled condition of pod {pod} failed")]
    Status {
        pod: String,
        #[source]
        source: ApiError,
    },
    #[error("deleting the preemption victim {victim} failed")]
    Preempt {
        victim: String,
        #[source]
        source: ApiError,
    },
    #[error("preparing the volumes of pod {pod} failed")]
    Volumes {
        pod: String,
        #[source]
        source: volumes::PreBindError,
    },
    #[error(transparent)]
    Panicked(#[from] Panicked),
}

/// Counters since the actor was created (they survive restarts).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SchedulerStats {
    /// Binds the store accepted.
    pub scheduled: u64,
    pub bind_failures: u64,
    /// Scheduling attempts that found no node.
    pub unschedulable_attempts: u64,
    /// Preemptions decided (a pod nominated, its victims deleted).
    pub preemptions: u64,
    /// Events dropped because the event queue was full.
    pub events_dropped: u64,
    pub restarts: u64,
    pub binds_in_flight: usize,
    pub queue: QueueLengths,
    pub nodes: usize,
    /// Pods counted on nodes (bound or assumed).
    pub placed_pods: usize,
    /// Rough heap size of the scheduler cache (nodes and placed pods; the informer
    /// caches of node and pod objects come on top).
    pub cache_bytes: usize,
}

/// Report the counters and sizes.
#[derive(Message)]
#[rtype(result = "SchedulerStats")]
pub struct GetStats;

/// Panic inside the scheduler's guarded work (to test supervision with a real panic).
#[derive(Message, Clone, Copy)]
#[rtype(result = "Result<(), SchedulerError>")]
pub struct InjectPanic;

/// A notification from the node or pod informer. (The subscriptions end with the actor's
/// context, so nothing of an earlier incarnation arrives after a restart.)
#[derive(Message)]
#[rtype(result = "()")]
struct Observed {
    resource: &'static str,
    notification: Notification,
}

/// Decide the next batch of pods.
#[derive(Message)]
#[rtype(result = "()")]
struct ScheduleBatch;

pub struct SchedulerActor {
    client: Arc<dyn ApiClient>,
    config: SchedulerConfig,
    recorder: Arc<Recorder>,
    nodes: Arc<Informer>,
    pods: Arc<Informer>,
    /// Namespace labels, for pod affinity terms' `namespaceSelector`.
    namespaces: Arc<Informer>,
    /// PodDisruptionBudgets, which preemption prefers not to violate.
    budgets: Arc<Informer>,
    /// Claims, volumes and classes, for VolumeBinding.
    claims: Arc<Informer>,
    volumes: Arc<Informer>,
    classes: Arc<Informer>,
    engine: Engine,
    /// Ties a bind's answer to the incarnation that sent it.
    generation: u64,
    /// Restarts in a row, and how long the current start waits before subscribing.
    restart_backoff: crate::runtime::RestartBackoff,
    resume_in: Duration,
    binds_in_flight: usize,
    /// Created in `started`, with the writers that drain it.
    events: Option<EventQueue>,
    batch_pending: bool,
    /// Which subscriptions said [`Notification::Synced`]: every node and every bound pod
    /// of the first lists is in the engine once both did.
    nodes_synced: bool,
    pods_synced: bool,
    stats: SchedulerStats,
    /// Whether this server holds the kube-scheduler Lease (`None`: no election). A
    /// follower keeps its engine current but places nothing.
    leading: Option<tokio::sync::watch::Receiver<bool>>,
}

impl SchedulerActor {
    /// A scheduler with informers of its own; [`with_informers`](Self::with_informers)
    /// shares the process's.
    pub fn new(client: Arc<dyn ApiClient>, config: SchedulerConfig) -> Self {
        let informers = InformerFactory::new(client.clone());
        // Events name the scheduler as their source. The recorder wants a `&'static str`:
        // a scheduler with another name leaks that name once per actor (not per restart).
        let component: &'static str = if config.scheduler_name == DEFAULT_SCHEDULER_NAME {
            DEFAULT_SCHEDULER_NAME
        } else {
            Box::leak(config.scheduler_name.clone().into_boxed_str())
        };
        let recorder = Arc::new(Recorder::new(client.clone(), component));
        SchedulerActor {
            engine: Engine::new(&config),
            client,
            config,
            recorder,
            nodes: informers.informer(InformerSpec::all("nodes")),
            pods: informers.informer(InformerSpec::all("pods")),
            namespaces: informers.informer(InformerSpec::all("namespaces")),
            budgets: informers.informer(InformerSpec::all("poddisruptionbudgets")),
            claims: informers.informer(InformerSpec::all(CLAIMS)),
            volumes: informers.informer(InformerSpec::all(VOLUMES)),
            classes: informers.informer(InformerSpec::all(CLASSES)),
            generation: 0,
            restart_backoff: Default::default(),
            resume_in: Duration::ZERO,
            binds_in_flight: 0,
            events: None,
            batch_pending: false,
            nodes_synced: false,
            pods_synced: false,
            stats: SchedulerStats::default(),
            leading: None,
        }
    }

    /// Place pods only while `leading` says so (leader election).
    pub fn with_leadership(mut self, leading: Option<tokio::sync::watch::Receiver<bool>>) -> Self {
        self.leading = leading;
        self
    }

    /// Read nodes and pods from these (shared) informers.
    pub fn with_informers(mut self, informers: &InformerFactory) -> Self {
        self.nodes = informers.informer(InformerSpec::all("nodes"));
        self.pods = informers.informer(InformerSpec::all("pods"));
        self.namespaces = informers.informer(InformerSpec::all("namespaces"));
        self.budgets = informers.informer(InformerSpec::all("poddisruptionbudgets"));
        self.claims = informers.informer(InformerSpec::all(CLAIMS));
        self.volumes = informers.informer(InformerSpec::all(VOLUMES));
        self.classes = informers.informer(InformerSpec::all(CLASSES));
        self
    }

    /// Start under a supervisor on the current arbiter.
    pub fn start_supervised(self) -> Addr<Self> {
        actix::Supervisor::start(move |_| self)
    }

    /// Queue a batch if there is work and room for binds. Nothing is scheduled before
    /// the first lists of nodes and pods are applied: a pod placed without knowing the
    /// bound pods could overbook a node, or be called unschedulable on a half-known
    /// cluster.
    fn kick(&mut self, ctx: &mut Context<Self>) {
        if !(self.nodes_synced && self.pods_synced) {
            return;
        }
        if !self.leading.as_ref().is_none_or(|l| *l.borrow()) {
            return;
        }
        if !self.batch_pending
            && self.engine.has_work()
            && self.binds_in_flight < self.config.max_binds_in_flight
        {
            self.batch_pending = true;
            ctx.notify(ScheduleBatch);
        }
    }

    fn notified(&mut self, resource: &'static str, notification: Notification) {
        match (notification, resource) {
            (Notification::Changed(change), _) => self.observe(resource, change),
            (Notification::Synced, "nodes") => self.nodes_synced = true,
            (Notification::Synced, "pods") => self.pods_synced = true,
            // Namespaces only refine namespace-selected affinity terms, and budgets only
            // preemption's choice; scheduling does not wait for them.
            (Notification::Synced, _) => {}
        }
    }

    fn observe(&mut self, resource: &'static str, change: Change) {
        let now = Instant::now();
        match resource {
            "nodes" => self.engine.on_node(change.kind, &change.object, now),
            "namespaces" => self.engine.on_namespace(change.kind, &change.object, now),
            "poddisruptionbudgets" => self.engine.on_pdb(change.kind, &change.object),
            CLAIMS => self.engine.on_claim(change.kind, &change.object, now),
            VOLUMES => self.engine.on_volume(change.kind, &change.object, now),
            CLASSES => self.engine.on_class(change.kind, &change.object, now),
            _ => self.engine.on_pod(change.kind, &change.object, now),
        }
    }

    fn schedule_batch(&mut self, ctx: &mut Context<Self>) {
        self.batch_pending = false;
        let now = Instant::now();
        for _ in 0..self.config.batch.max(1) {
            if self.binds_in_flight >= self.config.max_binds_in_flight {
                break;
            }
            match self.engine.schedule_next(now) {
                Some(Decision::Bind {
                    key,
                    pod,
                    node,
                    prebind,
                }) => self.bind(key, pod, node, prebind, ctx),
                Some(Decision::Unschedulable { key, pod, message }) => {
                    self.stats.unschedulable_attempts += 1;
                    self.report_unschedulable(key, pod, message, None);
                }
                Some(Decision::Preempt {
                    key,
                    pod,
                    node,
                    victims,
                    message,
                }) => {
                    self.stats.unschedulable_attempts += 1;
                    self.stats.preemptions += 1;
                    self.preempt(&pod, &node, &victims);
                    self.report_unschedulable(key, pod, message, Some(node));
                }
                None => break,
            }
        }
    }

    fn bind(
        &mut self,
        key: String,
        pod: Arc<Value>,
        node: String,
        prebind: Vec<volumes::PreBind>,
        ctx: &mut Context<Self>,
    ) {
        self.binds_in_flight += 1;
        let client = self.client.clone();
        let generation = self.generation;
        let (ns, name) = namespace_and_name(&pod);
        let target = node.clone();
        let claims = self.claims.clone();
        let timeout = self.config.volume_bind_timeout;
        let pod_key = key.clone();
        let call = async move {
            if !prebind.is_empty() {
                // VolumeBinding's PreBind: pre-bind or ask for provisioning, then wait for
                // every claim to be bound before the pod goes to its node.
                volumes::run_prebind(&*client, &claims, &prebind, timeout)
                    .await
                    .map_err(|source| SchedulerError::Volumes {
                        pod: pod_key.clone(),
                        source,
                    })?;
            }
            client
                .bind(&ns, &name, &target)
                .await
                .map_err(|source| SchedulerError::Bind {
                    pod: pod_key,
                    node: target,
                    source,
                })
        };
        spawn_guarded(self, ctx, call, move |outcome, act, ctx| {
            if act.generation != generation {
                return;
            }
            act.binds_in_flight = act.binds_in_flight.saturating_sub(1);
            act.bind_finished(key, pod, node, outcome);
            act.kick(ctx);
        });
    }

    fn bind_finished(
        &mut self,
        key: String,
        pod: Arc<Value>,
        node: String,
        outcome: Result<(), SchedulerError>,
    ) {
        match outcome {
            Ok(()) => {
                self.stats.scheduled += 1;
                self.engine.bind_succeeded(&key);
                tracing::debug!(pod = %key, node = %node, "bound");
                if self.config.scheduled_events {
                    let message = format!("Successfully assigned {key} to {node}");
                    self.record_event(pod, "Normal", "Scheduled", message);
                }
            }
            Err(error) => {
                self.stats.bind_failures += 1;
                self.engine.bind_failed(&key, Instant::now());
                tracing::warn!(pod = %key, error = %error, source = %std::error::Error::source(&error).map(ToString::to_string).unwrap_or_default(), "bind failed; retrying after backoff");
            }
        }
    }

    /// Condition `PodScheduled=False` (written only when it changes, so a pod retried
    /// again and again does not churn the store), with `status.nominatedNodeName` when a
    /// preemption made room, and a `FailedScheduling` event.
    fn report_unschedulable(
        &mut self,
        key: String,
        pod: Arc<Value>,
        message: String,
        nominated: Option<String>,
    ) {
        let nomination_changed = nominated.as_deref().is_some_and(|n| {
            pod.pointer("/status/nominatedNodeName")
                .and_then(Value::as_str)
                != Some(n)
        });
        if nomination_changed || needs_condition_update(&pod, &message) {
            let client = self.client.clone();
            let (ns, name) = namespace_and_name(&pod);
            let mut patch = json!({"status": {"conditions": [{
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": message,
                "lastProbeTime": null,
                "lastTransitionTime": meta::now_rfc3339(),
            }]}});
            if let Some(node) = nominated {
                patch["status"]["nominatedNodeName"] = json!(node);
            }
            actix::spawn(async move {
                let result = client
                    .patch(
                        "pods",
                        Some(&ns),
                        &name,
                        Some("status"),
                        PatchType::Strategic,
                        patch,
                    )
                    .await;
                if let Err(source) = result {
                    let error = SchedulerError::Status { pod: key, source };
                    tracing::debug!(error = %error, "condition not written");
                }
            });
        }
        self.record_event(pod, "Warning", "FailedScheduling", message);
    }

    /// Carry out a preemption: each victim gets the `DisruptionTarget` condition
    /// kube-scheduler writes, is deleted with its own grace period, and a `Preempted`
    /// event names the preemptor.
    fn preempt(&mut self, preemptor: &Value, node: &str, victims: &[Arc<PodMeta>]) {
        let uid = meta::uid(preemptor).unwrap_or_default().to_string();
        for v in victims {
            tracing::info!(victim = %v.key(), preemptor = %key_of_value(preemptor), node = %node, "preempting");
            let client = self.client.clone();
            let (ns, name) = (v.namespace.clone(), v.name.clone());
            let condition = json!({"status": {"conditions": [{
                "type": "DisruptionTarget",
                "status": "True",
                "reason": "PreemptionByScheduler",
                "message": format!("{}: preempting to accommodate a higher priority pod", self.config.scheduler_name),
                "lastTransitionTime": meta::now_rfc3339(),
            }]}});
            actix::spawn(async move {
                let _ = client
                    .patch(
                        "pods",
                        Some(&ns),
                        &name,
                        Some("status"),
                        PatchType::Strategic,
                        condition,
                    )
                    .await;
                if let Err(source) = client.delete("pods", Some(&ns), &name, None).await {
                    let error = SchedulerError::Preempt {
                        victim: format!("{ns}/{name}"),
                        source,
                    };
                    tracing::warn!(error = %error, "victim not deleted");
                }
            });
            let object = Arc::new(json!({"apiVersion": "v1", "kind": "Pod", "metadata": {
                "name": v.name, "namespace": v.namespace, "uid": v.uid}}));
            let message = format!("Preempted by pod {uid} on node {node}");
            self.record_event(object, "Normal", "Preempted", message);
        }
    }

    /// Queue an event; it is written in the background, or dropped if the queue is full.
    fn record_event(
        &mut self,
        pod: Arc<Value>,
        kind: &'static str,
        reason: &'static str,
        message: String,
    ) {
        let event = PodEvent {
            pod,
            kind,
            reason,
            message,
        };
        if !self.events.as_ref().is_some_and(|q| q.send(event)) {
            self.stats.events_dropped += 1;
        }
    }

    fn stats(&self) -> SchedulerStats {
        SchedulerStats {
            binds_in_flight: self.binds_in_flight,
            queue: self.engine.queue_lengths(),
            nodes: self.engine.cache().node_count(),
            placed_pods: self.engine.cache().pod_count(),
            cache_bytes: self.engine.cache().estimated_bytes(),
            ..self.stats
        }
    }
}

fn key_of_value(pod: &Value) -> String {
    let (ns, name) = namespace_and_name(pod);
    format!("{ns}/{name}")
}

fn namespace_and_name(pod: &Value) -> (String, String) {
    (
        meta::namespace(pod).unwrap_or("default").to_string(),
        meta::name(pod).unwrap_or_default().to_string(),
    )
}

/// Whether the pod's `PodScheduled` condition does not already say exactly this.
fn needs_condition_update(pod: &Value, message: &str) -> bool {
    let Some(c) = pods::condition(pod, "PodScheduled") else {
        return true;
    };
    let field = |f: &str| c.get(f).and_then(Value::as_str);
    field("status") != Some("False")
        || field("reason") != Some("Unschedulable")
        || field("message") != Some(message)
}

impl Actor for SchedulerActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // After failures in a row the scheduler waits before it subscribes again, so one
        // that panics on the same pod at every start does not spin.
        if self.resume_in.is_zero() {
            self.resume(ctx);
        } else {
            tracing::warn!(wait = ?self.resume_in, "scheduler restarting after a back-off");
            ctx.run_later(self.resume_in, |act, ctx| act.resume(ctx));
        }
    }
}

impl SchedulerActor {
    fn resume(&mut self, ctx: &mut Context<Self>) {
        for (resource, informer) in [
            ("nodes", &self.nodes),
            ("pods", &self.pods),
            ("namespaces", &self.namespaces),
            ("poddisruptionbudgets", &self.budgets),
            (CLAIMS, &self.claims),
            (VOLUMES, &self.volumes),
            (CLASSES, &self.classes),
        ] {
            let stream = informer.subscribe().map(move |notification| Observed {
                resource,
                notification,
            });
            ctx.add_message_stream(stream);
        }
        let recorder = self.recorder.clone();
        let write = move |e: PodEvent| {
            let recorder = recorder.clone();
            async move { recorder.record(&e.pod, e.kind, e.reason, &e.message).await }
        };
        let (events, writer) =
            EventQueue::new(write, self.config.event_queue, self.config.event_writers);
        self.events = Some(events);
        ctx.spawn(writer.into_actor(self));
        ctx.run_interval(self.config.housekeeping, |act, ctx| {
            let _ = guard(act, ctx, |act, ctx| {
                act.engine.flush(Instant::now());
                act.kick(ctx);
            });
        });
        tracing::info!(scheduler = %self.config.scheduler_name, "scheduler started");
    }
}

impl Supervised for SchedulerActor {
    fn restarting(&mut self, _ctx: &mut Self::Context) {
        crate::runtime::record_restart("SchedulerActor");
        self.resume_in = self.restart_backoff.on_restart(Instant::now());
        // Everything spawned by the old incarnation (subscriptions, binds) was dropped
        // with its context; start from an empty engine and let the informers replay.
        self.generation += 1;
        self.stats.restarts += 1;
        self.engine = Engine::new(&self.config);
        self.binds_in_flight = 0;
        self.batch_pending = false;
        self.nodes_synced = false;
        self.pods_synced = false;
    }
}

impl Handler<Observed> for SchedulerActor {
    type Result = ();

    fn handle(&mut self, msg: Observed, ctx: &mut Self::Context) {
        let _ = guard(self, ctx, |act, ctx| {
            act.notified(msg.resource, msg.notification);
            act.kick(ctx);
        });
    }
}

impl Handler<ScheduleBatch> for SchedulerActor {
    type Result = ();

    fn handle(&mut self, _: ScheduleBatch, ctx: &mut Self::Context) {
        let _ = guard(self, ctx, |act, ctx| {
            act.schedule_batch(ctx);
            act.kick(ctx);
        });
    }
}

impl Handler<GetStats> for SchedulerActor {
    type Result = MessageResult<GetStats>;

    fn handle(&mut self, _: GetStats, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.stats())
    }
}

impl Handler<InjectPanic> for SchedulerActor {
    type Result = Result<(), SchedulerError>;

    fn handle(&mut self, _: InjectPanic, ctx: &mut Self::Context) -> Self::Result {
        guard(self, ctx, |_, _| panic!("injected scheduler panic")).map_err(SchedulerError::from)
    }
}
