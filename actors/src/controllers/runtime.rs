//! The controller loop every controller shares: informers feed a deduplicating work queue,
//! a bounded number of `reconcile(key)` calls run at once, failures are retried with
//! backoff, and a panic in a reconcile stops the actor so its supervisor restarts it.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use futures::FutureExt;

use super::informer::{self, Cache, Change, InformerSpec};
use super::queue::WorkQueue;
use super::recorder::Recorder;
use crate::api::ApiError;
use crate::client::ApiClient;

/// What to do with a key after a successful reconcile.
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
    caches: HashMap<&'static str, Arc<Cache>>,
    pub recorder: Recorder,
}

impl Context {
    /// The informer cache of a watched resource (empty if the controller does not watch it).
    pub fn cache(&self, resource: &str) -> Arc<Cache> {
        self.caches.get(resource).cloned().unwrap_or_default()
    }

    pub fn caches_synced(&self) -> bool {
        self.caches.values().all(|c| c.synced())
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

    /// Reconcile every primary object this often, to catch up with anything missed.
    fn resync(&self) -> Option<Duration> {
        None
    }

    /// Reconciles allowed at once.
    fn workers(&self) -> usize {
        4
    }
}

/// A change an informer saw.
#[derive(Message)]
#[rtype(result = "()")]
struct Observed {
    resource: &'static str,
    change: Change,
}

/// Put a key back on the queue (after a backoff or a requested delay).
#[derive(Message)]
#[rtype(result = "()")]
struct Requeue(String);

/// The actor running one [`Reconciler`].
pub struct Controller<R: Reconciler> {
    reconciler: Arc<R>,
    ctx: Arc<Context>,
    queue: WorkQueue,
    running: usize,
    specs: Vec<InformerSpec>,
}

impl<R: Reconciler> Controller<R> {
    pub fn new(reconciler: R, client: Arc<dyn ApiClient>) -> Self {
        let specs = reconciler.informers();
        let caches = specs
            .iter()
            .map(|s| (s.resource, Arc::new(Cache::default())))
            .collect();
        let recorder = Recorder::new(client.clone(), reconciler.name());
        Controller {
            reconciler: Arc::new(reconciler),
            ctx: Arc::new(Context {
                client,
                caches,
                recorder,
            }),
            queue: WorkQueue::default(),
            running: 0,
            specs,
        }
    }

    /// Start supervised on the current arbiter.
    pub fn start_supervised(self) -> Addr<Self> {
        actix::Supervisor::start(move |_| self)
    }

    fn observe(&mut self, resource: &'static str, change: Change) {
        for key in self.reconciler.keys_for(resource, &change, &self.ctx) {
            self.queue.add(key);
        }
    }

    fn dispatch(&mut self, ctx: &mut Context2<R>) {
        let workers = self.reconciler.workers().max(1);
        while self.running < workers {
            let Some(key) = self.queue.pop() else { break };
            self.running += 1;
            let (r, c, k) = (self.reconciler.clone(), self.ctx.clone(), key.clone());
            let name = self.reconciler.name();
            let fut = async move {
                let span = tracing::debug_span!("reconcile", controller = name, key = %k);
                let _ = span;
                r.reconcile(&k, &c).await
            };
            let guarded = AssertUnwindSafe(fut).catch_unwind();
            ctx.spawn(guarded.into_actor(self).map(move |result, act, ctx| {
                act.running = act.running.saturating_sub(1);
                act.finish(key, result, ctx);
                act.dispatch(ctx);
            }));
        }
    }

    fn finish(
        &mut self,
        key: String,
        result: Result<Result<Action, ReconcileError>, Box<dyn std::any::Any + Send>>,
        ctx: &mut Context2<R>,
    ) {
        let name = self.reconciler.name();
        match result {
            Ok(Ok(Action::Done)) => self.queue.done(&key, true),
            Ok(Ok(Action::RequeueAfter(delay))) => {
                self.queue.done(&key, true);
                ctx.notify_later(Requeue(key), delay);
            }
            Ok(Err(e)) => {
                self.queue.done(&key, false);
                let delay = self.queue.backoff(&key);
                tracing::warn!(controller = name, key = %key, error = %e, source = ?std::error::Error::source(&e).map(ToString::to_string), retry_in = ?delay, "reconcile failed");
                ctx.notify_later(Requeue(key), delay);
            }
            Err(_) => {
                tracing::error!(controller = name, key = %key, "reconcile panicked; restarting controller");
                ctx.stop();
            }
        }
    }
}

type Context2<R> = actix::Context<Controller<R>>;

impl<R: Reconciler> Actor for Controller<R> {
    type Context = Context2<R>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let addr = ctx.address();
        for spec in self.specs.clone() {
            let cache = self.ctx.cache(spec.resource);
            let addr = addr.clone();
            let notify = move |resource, change| addr.do_send(Observed { resource, change });
            let fut = informer::run(self.ctx.client.clone(), spec, cache, notify);
            ctx.spawn(fut.into_actor(self));
        }
        if let Some(every) = self.reconciler.resync() {
            ctx.run_interval(every, |act, ctx| {
                if let Some(primary) = act.specs.first() {
                    for obj in act.ctx.cache(primary.resource).list() {
                        act.queue.add(informer::key_of(&obj));
                    }
                }
                act.dispatch(ctx);
            });
        }
        tracing::info!(controller = self.reconciler.name(), "controller started");
    }
}

impl<R: Reconciler> Supervised for Controller<R> {
    fn restarting(&mut self, _ctx: &mut Self::Context) {
        // Reconciles in flight were cancelled with the old context; start clean and let
        // the informers' fresh lists (into empty caches) queue every object again.
        self.queue = WorkQueue::default();
        self.running = 0;
        let specs = self.specs.clone();
        let recorder = Recorder::new(self.ctx.client.clone(), self.reconciler.name());
        self.ctx = Arc::new(Context {
            client: self.ctx.client.clone(),
            caches: specs
                .iter()
                .map(|s| (s.resource, Arc::new(Cache::default())))
                .collect(),
            recorder,
        });
    }
}

impl<R: Reconciler> Handler<Observed> for Controller<R> {
    type Result = ();

    fn handle(&mut self, msg: Observed, ctx: &mut Self::Context) {
        self.observe(msg.resource, msg.change);
        self.dispatch(ctx);
    }
}

impl<R: Reconciler> Handler<Requeue> for Controller<R> {
    type Result = ();

    fn handle(&mut self, msg: Requeue, ctx: &mut Self::Context) {
        self.queue.add(msg.0);
        self.dispatch(ctx);
    }
}
