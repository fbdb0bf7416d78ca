//! The controller loop every controller shares (kube-runtime's `Controller`): shared
//! informers feed a deduplicating work queue, a bounded number of `reconcile(key)` calls
//! run at once, a failure goes to the reconciler's error policy (by default a retry after
//! the queue's backoff), and a panic in a reconcile stops the actor, through the guard, so
//! that its supervisor restarts it.
//!
//! A restarted controller subscribes to its informers again; they replay their caches to
//! it, so every object is queued once more and nothing is missed, without a new list.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use futures::StreamExt;
use tracing::Instrument;

use super::cache::{key_of, Cache, Change};
use super::factory::InformerFactory;
use super::guard::{guard, spawn_guarded};
use super::informer::{Informer, InformerSpec, Notification};
use super::queue::WorkQueue;
use super::recorder::Recorder;
use super::restart::{record_restart, RestartBackoff};
use crate::api::ApiError;
use crate::client::ApiClient;

/// What to do with a key after a reconcile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Done,
    RequeueAfter(Duration),
}

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("API call failed")]
    Api(#[from] ApiError),
    #[error("{0}")]
    Invalid(String),
}

/// Shared by every reconcile of one controller.
pub struct Context {
    pub client: Arc<dyn ApiClient>,
    informers: HashMap<&'static str, Arc<Informer>>,
    pub recorder: Recorder,
}

impl Context {
    /// The informer cache of a watched resource (empty if the controller does not watch it).
    pub fn cache(&self, resource: &str) -> Arc<Cache> {
        self.informers
            .get(resource)
            .map(|i| i.cache().clone())
            .unwrap_or_default()
    }

    /// A context with no informers, for unit tests of a reconciler's parts.
    #[cfg(test)]
    pub(crate) fn for_tests(client: Arc<dyn ApiClient>) -> Self {
        Context {
            recorder: Recorder::new(client.clone(), "test"),
            client,
            informers: HashMap::new(),
        }
    }

    pub fn caches_synced(&self) -> bool {
        self.informers.values().all(|i| i.synced())
    }
}

/// One controller: what it watches, which keys a change affects, and how to reconcile one.
#[async_trait::async_trait]
pub trait Reconciler: Send + Sync + 'static {
    fn name(&self) -> &'static str;

    /// The resources to keep caches of; the first is the primary resource.
    fn informers(&self) -> Vec<InformerSpec>;

    /// Keys (`namespace/name` of primary objects) to reconcile after a change.
    fn keys_for(&self, resource: &str, change: &Change, ctx: &Context) -> Vec<String>;

    async fn reconcile(&self, key: &str, ctx: &Context) -> Result<Action, ReconcileError>;

    /// What to do after a failed reconcile; `backoff` is the work queue's delay for the
    /// key (its own exponential backoff, or the overall rate limit if that is longer).
    fn error_policy(&self, _key: &str, _error: &ReconcileError, backoff: Duration) -> Action {
        Action::RequeueAfter(backoff)
    }

    /// Reconcile every primary object this often, to catch up with anything missed.
    fn resync(&self) -> Option<Duration> {
        None
    }

    /// Reconciles allowed at once.
    fn workers(&self) -> usize {
        4
    }
}

/// A notification from one of the informers.
#[derive(Message)]
#[rtype(result = "()")]
struct Observed {
    resource: &'static str,
    notification: Notification,
}

/// Put a key back on the queue (after a backoff or a requested delay).
#[derive(Message)]
#[rtype(result = "()")]
struct Requeue(String);

/// How a controller is doing (tests and diagnostics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ControllerStats {
    /// Times its supervisor restarted it.
    pub restarts: u64,
    pub reconciles: u64,
    pub failures: u64,
    pub queued: usize,
    pub running: usize,
}

/// Report [`ControllerStats`].
#[derive(Message)]
#[rtype(result = "ControllerStats")]
pub struct GetControllerStats;

/// How soon a controller that became leader starts reconciling.
const LEADERSHIP_CHECK: Duration = Duration::from_millis(200);

/// The actor running one [`Reconciler`].
pub struct Controller<R: Reconciler> {
    reconciler: Arc<R>,
    ctx: Arc<Context>,
    queue: WorkQueue,
    running: usize,
    specs: Vec<InformerSpec>,
    stats: ControllerStats,
    /// Restarts in a row back off, so a reconcile that panics on every start (one bad
    /// object) does not restart the controller in a hot loop.
    backoff: RestartBackoff,
    /// Until then a restarted controller holds off: no subscriptions, no reconciles.
    paused_for: Duration,
    paused: bool,
    /// Whether this server leads (holds the component's Lease); `None`: always runs.
    /// A follower keeps its queue and caches current but reconciles nothing.
    leading: Option<tokio::sync::watch::Receiver<bool>>,
}

impl<R: Reconciler> Controller<R> {
    /// A controller reading the factory's shared informers.
    pub fn new(reconciler: R, informers: &InformerFactory) -> Self {
        let specs = reconciler.informers();
        let client = informers.client();
        let recorder = Recorder::new(client.clone(), reconciler.name());
        let informers = specs
            .iter()
            .map(|s| (s.resource, informers.informer(s.clone())))
            .collect();
        Controller {
            reconciler: Arc::new(reconciler),
            ctx: Arc::new(Context {
                client,
                informers,
                recorder,
            }),
            queue: WorkQueue::default(),
            running: 0,
            specs,
            stats: ControllerStats::default(),
            backoff: RestartBackoff::default(),
            paused_for: Duration::ZERO,
            paused: false,
            leading: None,
        }
    }

    /// Reconcile only while `leading` says so (leader election); `None` changes nothing.
    pub fn gated(mut self, leading: Option<tokio::sync::watch::Receiver<bool>>) -> Self {
        self.leading = leading;
        self
    }

    fn leads(&self) -> bool {
        self.leading.as_ref().is_none_or(|l| *l.borrow())
    }

    /// Start supervised on the current arbiter.
    pub fn start_supervised(self) -> Addr<Self> {
        actix::Supervisor::start(move |_| self)
    }

    fn observe(&mut self, resource: &'static str, notification: Notification) {
        let Notification::Changed(change) = notification else {
            return;
        };
        for key in self.reconciler.keys_for(resource, &change, &self.ctx) {
            self.queue.add(key);
        }
    }

    fn dispatch(&mut self, ctx: &mut actix::Context<Self>) {
        if self.paused || !self.leads() {
            return;
        }
        let workers = self.reconciler.workers().max(1);
        while self.running < workers {
            let Some(key) = self.queue.pop() else { break };
            self.running += 1;
            let (r, c, k) = (self.reconciler.clone(), self.ctx.clone(), key.clone());
            let name = self.reconciler.name();
            let span = tracing::debug_span!("reconcile", controller = name, key = %k);
            let fut = async move { r.reconcile(&k, &c).await }.instrument(span);
            spawn_guarded(self, ctx, fut, move |result, act, ctx| {
                act.running = act.running.saturating_sub(1);
                act.finish(key, result, ctx);
                act.dispatch(ctx);
            });
        }
    }

    fn finish(
        &mut self,
        key: String,
        result: Result<Action, ReconcileError>,
        ctx: &mut actix::Context<Self>,
    ) {
        self.stats.reconciles += 1;
        let action = match result {
            Ok(action) => {
                self.queue.done(&key, true);
                action
            }
            Err(e) => {
                self.stats.failures += 1;
                self.queue.done(&key, false);
                let backoff = self.queue.backoff(&key);
                let action = self.reconciler.error_policy(&key, &e, backoff);
                tracing::warn!(
                    controller = self.reconciler.name(),
                    key = %key,
                    error = %e,
                    source = ?std::error::Error::source(&e).map(ToString::to_string),
                    then = ?action,
                    "reconcile failed"
                );
                action
            }
        };
        if let Action::RequeueAfter(delay) = action {
            ctx.notify_later(Requeue(key), delay);
        }
    }

    fn stats(&self) -> ControllerStats {
        ControllerStats {
            queued: self.queue.len(),
            running: self.running,
            ..self.stats
        }
    }
}

impl<R: Reconciler> Actor for Controller<R> {
    type Context = actix::Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        if self.paused_for.is_zero() {
            self.resume(ctx);
            return;
        }
        self.paused = true;
        tracing::warn!(
            controller = self.reconciler.name(),
            restarts_in_a_row = self.backoff.in_a_row(),
            wait = ?self.paused_for,
            "controller restarting after a back-off"
        );
        ctx.run_later(self.paused_for, |act, ctx| {
            act.paused = false;
            act.resume(ctx);
            let _ = guard(act, ctx, |act, ctx| act.dispatch(ctx));
        });
    }
}

impl<R: Reconciler> Controller<R> {
    /// Subscribe to the informers (their replay queues every object) and start resyncs.
    fn resume(&mut self, ctx: &mut actix::Context<Self>) {
        if self.leading.is_some() {
            // Leadership won: start on what queued up while following.
            ctx.run_interval(LEADERSHIP_CHECK, |act, ctx| {
                if act.leads() {
                    let _ = guard(act, ctx, |act, ctx| act.dispatch(ctx));
                }
            });
        }
        for spec in &self.specs {
            let Some(informer) = self.ctx.informers.get(spec.resource) else {
                continue;
            };
            let resource = spec.resource;
            let stream = informer.subscribe().map(move |notification| Observed {
                resource,
                notification,
            });
            ctx.add_message_stream(stream);
        }
        if let Some(every) = self.reconciler.resync() {
            ctx.run_interval(every, |act, ctx| {
                if let Some(primary) = act.specs.first() {
                    for obj in act.ctx.cache(primary.resource).list() {
                        act.queue.add(key_of(&obj));
                    }
                }
                let _ = guard(act, ctx, |act, ctx| act.dispatch(ctx));
            });
        }
        tracing::info!(controller = self.reconciler.name(), "controller started");
    }
}

impl<R: Reconciler> Supervised for Controller<R> {
    fn restarting(&mut self, _ctx: &mut Self::Context) {
        // Reconciles in flight were cancelled with the old context and the subscriptions
        // dropped; start clean, and the new subscriptions' replay queues every object.
        self.queue = WorkQueue::default();
        self.running = 0;
        self.stats.restarts += 1;
        self.paused_for = self.backoff.on_restart(std::time::Instant::now());
        record_restart(self.reconciler.name());
    }
}

impl<R: Reconciler> Handler<super::InjectPanic> for Controller<R> {
    type Result = ();

    fn handle(&mut self, _: super::InjectPanic, ctx: &mut Self::Context) {
        super::inject_panic(self, ctx);
    }
}

impl<R: Reconciler> Handler<Observed> for Controller<R> {
    type Result = ();

    fn handle(&mut self, msg: Observed, ctx: &mut Self::Context) {
        let _ = guard(self, ctx, |act, ctx| {
            act.observe(msg.resource, msg.notification);
            act.dispatch(ctx);
        });
    }
}

impl<R: Reconciler> Handler<Requeue> for Controller<R> {
    type Result = ();

    fn handle(&mut self, msg: Requeue, ctx: &mut Self::Context) {
        let _ = guard(self, ctx, |act, ctx| {
            act.queue.add(msg.0);
            act.dispatch(ctx);
        });
    }
}

impl<R: Reconciler> Handler<GetControllerStats> for Controller<R> {
    type Result = MessageResult<GetControllerStats>;

    fn handle(&mut self, _: GetControllerStats, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.stats())
    }
}
