//! The store actor: precondition checks and revision assignment in its mailbox, commit
//! results applied in revision order, watchers served from its hub.

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, RwLock};

use actix::prelude::*;
use serde_json::Value;
use tokio::sync::oneshot;

use super::persist::{CommitMsg, Committer, Persist};
use super::remote::Remote;
use super::ttl::EventTtl;
use super::watch::{WatchHub, WatchStream};
use super::{
    Decision, Event, EventKind, Object, Rev, Snapshot, StoreConfig, StoreError, UpdateFn, WriteOp,
    WriteOutcome,
};
use crate::api::meta;
use crate::metrics::Metrics;

/// Apply one write; answered once it is durable.
#[derive(Message)]
#[rtype(result = "Result<WriteOutcome, StoreError>")]
pub struct Write(pub WriteOp);

/// Start a watch of every key under `prefix`, from revision `from` (or from the current
/// state, as ADDED events, when `None`).
#[derive(Message)]
#[rtype(result = "Result<WatchStream, StoreError>")]
pub struct Watch {
    pub prefix: String,
    pub from: Option<Rev>,
}

/// Read-modify-write of one key in one step of the actor: `f` sees the latest state
/// (counting writes in flight) and its decision is written with that state's revision
/// as the precondition, which therefore always holds.
pub struct GuaranteedUpdate<E> {
    pub key: String,
    pub f: UpdateFn<E>,
}

type Reply = oneshot::Receiver<Result<WriteOutcome, StoreError>>;

/// A guaranteed update once decided: a write waiting for its sync, or nothing to write.
pub enum Pending {
    Written(Reply),
    Kept(Value),
}

impl<E: Send + 'static> Message for GuaranteedUpdate<E> {
    type Result = Result<Result<Pending, E>, StoreError>;
}

/// Drop watch history down to `keep` events (etcd compaction).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Compact {
    pub keep: usize,
}

/// Delete the Events whose TTL has run out at `now` (sent by the actor's own timer with
/// the wall clock; tests send it with the time they want).
#[derive(Message)]
#[rtype(result = "usize")]
pub struct ExpireEvents {
    pub now: chrono::DateTime<chrono::Utc>,
}

/// Fault injection: make the actor panic inside a handler, as a bug would.
#[derive(Message, Clone, Copy)]
#[rtype(result = "Result<(), StoreError>")]
pub struct InjectPanic;

/// The committer's report on a group of writes.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Committed {
    pub writes: Vec<PendingWrite>,
    pub result: Result<(), StoreError>,
}

/// A write that has a revision and waits for its sync.
pub struct PendingWrite {
    pub rev: Rev,
    pub key: String,
    pub kind: EventKind,
    pub new: Option<Object>,
    pub prev: Option<Object>,
    pub reply: oneshot::Sender<Result<WriteOutcome, StoreError>>,
}

pub struct StoreActor {
    pub(super) config: StoreConfig,
    /// RocksDB or memory (revisions assigned here, made durable by the committer);
    /// `None` on etcd.
    persist: Option<Arc<Persist>>,
    committer: Option<Committer>,
    /// etcd: revisions are etcd's, the snapshot is fed by its watch (`remote.rs`).
    pub(super) remote: Option<Remote>,
    /// The actor's own address, for the tasks that talk to etcd.
    pub(super) addr: Option<Addr<StoreActor>>,
    pub(super) snapshot: Arc<RwLock<Snapshot>>,
    /// Latest state of keys whose writes are not yet committed: later writes check their
    /// preconditions against it, readers never see it.
    in_flight: HashMap<String, (Rev, Option<Object>)>,
    next_rev: Rev,
    pub(super) hub: WatchHub,
    metrics: Arc<Metrics>,
    /// When each Event was last written, for its expiry.
    pub(super) event_ttl: EventTtl,
    /// Tells readers waiting for a revision that it was committed.
    pub(super) revision: tokio::sync::watch::Sender<Rev>,
    /// The history records on disk up to this revision are deleted.
    compacted_on_disk: Rev,
}

/// How often the history window is moved on by age and old records deleted from disk.
const HISTORY_SWEEP: std::time::Duration = std::time::Duration::from_secs(5);

impl StoreActor {
    pub(super) fn new(
        config: StoreConfig,
        persist: Option<Arc<Persist>>,
        remote: Option<Remote>,
        snapshot: Arc<RwLock<Snapshot>>,
        metrics: Arc<Metrics>,
        revision: tokio::sync::watch::Sender<Rev>,
    ) -> Self {
        let (rev, oldest, event_ttl) = {
            let snap = read_lock(&snapshot);
            let ttl = EventTtl::new(config.event_ttl, snap.objects.iter(), chrono::Utc::now());
            (snap.rev, snap.history.oldest(), ttl)
        };
        let hub = WatchHub::new(rev, config.watch_buffer);
        StoreActor {
            revision,
            compacted_on_disk: oldest,
            event_ttl,
            config,
            persist,
            committer: None,
            remote,
            addr: None,
            snapshot,
            in_flight: HashMap::new(),
            next_rev: rev + 1,
            hub,
            metrics,
        }
    }

    /// The latest state of `key`, counting writes still in flight.
    fn current(&self, key: &str) -> Option<Object> {
        match self.in_flight.get(key) {
            Some((_, state)) => state.clone(),
            None => read_lock(&self.snapshot).objects.get(key).cloned(),
        }
    }

    /// Check the write's preconditions, give it a revision and hand it to the committer.
    pub(super) fn begin_write(
        &mut self,
        op: WriteOp,
    ) -> Result<oneshot::Receiver<Result<WriteOutcome, StoreError>>, StoreError> {
        if self.remote.is_some() {
            return self.begin_remote(op);
        }
        let key = op.key().to_string();
        let prev = self.current(&key);
        let rev = self.next_rev;
        let (kind, new) = match op {
            WriteOp::Create { object, .. } => {
                if prev.is_some() {
                    return Err(StoreError::AlreadyExists { key });
                }
                (EventKind::Added, Some(stamp(object, rev)))
            }
            WriteOp::Update {
                object, expected, ..
            } => {
                check_precondition(&key, prev.as_ref(), expected)?;
                (EventKind::Modified, Some(stamp(object, rev)))
            }
            WriteOp::Delete { expected, .. } => {
                check_precondition(&key, prev.as_ref(), expected)?;
                (EventKind::Deleted, None)
            }
        };
        let committer = self
            .committer
            .as_ref()
            .ok_or_else(|| StoreError::Unavailable("committer not running".into()))?;
        let (tx, rx) = oneshot::channel();
        committer.send(CommitMsg::Write(PendingWrite {
            rev,
            key: key.clone(),
            kind,
            new: new.clone(),
            prev,
            reply: tx,
        }))?;
        self.next_rev += 1;
        self.event_ttl.note(&key, new.is_none(), chrono::Utc::now());
        self.in_flight.insert(key, (rev, new));
        Ok(rx)
    }

    /// Decide a guaranteed update against the latest state and start its write. A panic
    /// in the caller's function is the caller's bug: it fails this update only, and the
    /// store carries on (its state was not touched).
    fn begin_update<E>(
        &mut self,
        key: String,
        f: UpdateFn<E>,
    ) -> Result<Result<Pending, E>, StoreError> {
        let current = self
            .current(&key)
            .ok_or_else(|| StoreError::NotFound { key: key.clone() })?;
        let decision = match catch_unwind(AssertUnwindSafe(|| f(&current))) {
            Ok(Ok(d)) => d,
            Ok(Err(e)) => return Ok(Err(e)),
            Err(_) => {
                tracing::error!(key = %key, "guaranteed update function panicked");
                return Err(StoreError::UpdateFailed {
                    key,
                    detail: "the update function panicked".into(),
                });
            }
        };
        let expected = Some(current.rev);
        let op = match decision {
            Decision::Keep(v) => return Ok(Ok(Pending::Kept(v))),
            Decision::Put(object) => WriteOp::Update {
                key,
                object,
                expected,
            },
            Decision::Delete => WriteOp::Delete { key, expected },
        };
        Ok(Ok(Pending::Written(self.begin_write(op)?)))
    }

    /// Delete every Event whose TTL has run out, each on the condition that it was not
    /// written since (a renewal wins). Returns how many deletions were started.
    fn expire_events(&mut self, now: chrono::DateTime<chrono::Utc>) -> usize {
        let due = {
            let snap = read_lock(&self.snapshot);
            let in_flight = &self.in_flight;
            self.event_ttl.expired(now, |k| match in_flight.get(k) {
                Some((_, state)) => state.as_ref(),
                None => snap.objects.get(k),
            })
        };
        let mut started = 0;
        for (key, rev) in due {
            let op = WriteOp::Delete {
                key: key.clone(),
                expected: Some(rev),
            };
            match self.begin_write(op) {
                // Nobody waits for the answer; watchers see the DELETED event.
                Ok(_) => started += 1,
                Err(e) => tracing::debug!(key = %key, error = %e, "event expiry skipped"),
            }
        }
        if started > 0 {
            tracing::debug!(expired = started, "events expired");
        }
        started
    }

    /// Make a committed group visible, answer its writers and tell the watchers.
    fn finish_writes(&mut self, writes: Vec<PendingWrite>) {
        let mut events = Vec::with_capacity(writes.len());
        let now_ms = chrono::Utc::now().timestamp_millis();
        let committed = {
            let mut snap = write_lock(&self.snapshot);
            for w in writes {
                if matches!(self.in_flight.get(&w.key), Some((rev, _)) if *rev == w.rev) {
                    self.in_flight.remove(&w.key);
                }
                let object = match (&w.new, &w.prev) {
                    (Some(new), _) => new.value.clone(),
                    (None, Some(prev)) => {
                        let mut last = (*prev.value).clone();
                        meta::set_resource_version(&mut last, w.rev);
                        Arc::new(last)
                    }
                    (None, None) => Arc::new(Value::Null),
                };
                // After a restart the reload already holds writes committed before it.
                if w.rev > snap.rev {
                    events.push(commit_to(
                        &mut snap,
                        self.config.history,
                        now_ms,
                        w.rev,
                        w.kind,
                        w.key.clone(),
                        w.new.clone(),
                        w.prev.clone(),
                        object.clone(),
                    ));
                }
                let _ = w.reply.send(Ok(WriteOutcome { rev: w.rev, object }));
            }
            snap.rev
        };
        self.revision.send_replace(committed);
        for e in events {
            self.hub.publish(e);
        }
    }

    fn fail_writes(&mut self, writes: Vec<PendingWrite>, err: StoreError) {
        for w in writes {
            let _ = w.reply.send(Err(err.clone()));
        }
    }

    /// Rebuild memory from disk: the store trusts RocksDB (or etcd), not what it held
    /// before.
    fn reload(&mut self) -> Result<(), StoreError> {
        let Some(persist) = self.persist.clone() else {
            self.start_reload();
            return Ok(());
        };
        if let Some(c) = &self.committer {
            c.drain();
        }
        let loaded = persist.load_snapshot(&self.config)?;
        let rev = loaded.rev;
        self.event_ttl = EventTtl::new(
            self.config.event_ttl,
            loaded.objects.iter(),
            chrono::Utc::now(),
        );
        self.compacted_on_disk = loaded.history.oldest();
        *write_lock(&self.snapshot) = loaded;
        self.in_flight.clear();
        self.next_rev = rev + 1;
        // Watchers end and re-watch from their revision, which the reloaded history
        // still serves when it is inside the window.
        self.hub.close_all();
        self.hub = WatchHub::new(rev, self.config.watch_buffer);
        self.revision.send_replace(rev);
        Ok(())
    }

    /// Move the history window on: drop what is older than the age bound (and beyond
    /// `keep`, when given), then delete the dropped records from disk.
    fn compact_history(&mut self, keep: Option<usize>) {
        let oldest = {
            let mut snap = write_lock(&self.snapshot);
            if let Some(age) = self.config.history_age {
                let cutoff = chrono::Utc::now().timestamp_millis() - age.as_millis() as i64;
                snap.history.drop_older_than(cutoff);
            }
            if let Some(keep) = keep {
                snap.history.keep_last(keep);
            }
            snap.history.oldest()
        };
        if oldest > self.compacted_on_disk {
            if let Some(c) = &self.committer {
                if c.send(CommitMsg::CompactHistory(oldest)).is_ok() {
                    self.compacted_on_disk = oldest;
                }
            }
        }
    }
}

/// Make one committed change visible: the object, the resource's change mark and the
/// history (under the same lock: a reader sees both at one revision); the event for the
/// watchers is returned.
#[allow(clippy::too_many_arguments)]
pub(super) fn commit_to(
    snap: &mut Snapshot,
    history: usize,
    now_ms: i64,
    rev: Rev,
    kind: EventKind,
    key: String,
    new: Option<Object>,
    prev: Option<Object>,
    object: Arc<Value>,
) -> Arc<Event> {
    snap.rev = rev;
    snap.mark_changed(&key, rev);
    match new {
        Some(obj) => snap.insert(key.clone(), obj),
        None => snap.remove(&key),
    }
    let event = Arc::new(Event {
        rev,
        kind,
        key,
        object,
        prev: prev.map(|p| p.value),
    });
    snap.history.push(event.clone(), now_ms, history);
    event
}

/// The revision the key is at, if the write's expectation (when it has one) holds.
pub(super) fn check_precondition(
    key: &str,
    prev: Option<&Object>,
    expected: Option<Rev>,
) -> Result<Rev, StoreError> {
    let prev = prev.ok_or_else(|| StoreError::NotFound {
        key: key.to_string(),
    })?;
    match expected {
        Some(expected) if expected != prev.rev => Err(StoreError::Conflict {
            key: key.to_string(),
            expected,
            current: prev.rev,
        }),
        _ => Ok(prev.rev),
    }
}

pub(super) fn stamp(mut value: Value, rev: Rev) -> Object {
    meta::set_resource_version(&mut value, rev);
    Object {
        rev,
        value: Arc::new(value),
    }
}

pub(super) fn read_lock(s: &RwLock<Snapshot>) -> std::sync::RwLockReadGuard<'_, Snapshot> {
    s.read().unwrap_or_else(|e| e.into_inner())
}

pub(super) fn write_lock(s: &RwLock<Snapshot>) -> std::sync::RwLockWriteGuard<'_, Snapshot> {
    s.write().unwrap_or_else(|e| e.into_inner())
}

/// Run a handler body under the runtime's guard: a panic is an error for the caller (a
/// retryable 503) and a restart by the supervisor, instead of a mailbox closed for good.
fn guarded<R>(
    act: &mut StoreActor,
    ctx: &mut Context<StoreActor>,
    f: impl FnOnce(&mut StoreActor) -> Result<R, StoreError>,
) -> Result<R, StoreError> {
    crate::runtime::guard(act, ctx, |act, _| f(act))
        .unwrap_or_else(|_| Err(StoreError::Unavailable("store actor restarting".into())))
}

impl Actor for StoreActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(100_000);
        self.addr = Some(ctx.address());
        if let Some(remote) = &self.remote {
            // A restart is reloading already; the first start watches from its load.
            if !remote.loading {
                self.start_feed();
            }
            ctx.run_interval(super::remote::COMPACTION_PERIOD, |act, ctx| {
                let _ = crate::runtime::guard(act, ctx, |act, _| act.compact_remote());
            });
        } else if let (None, Some(persist)) = (&self.committer, &self.persist) {
            match Committer::spawn(
                persist.clone(),
                ctx.address().recipient(),
                self.metrics.clone(),
            ) {
                Ok(c) => self.committer = Some(c),
                Err(e) => {
                    tracing::error!(error = %e, "cannot start store committer");
                    ctx.stop();
                }
            }
        }
        ctx.run_interval(HISTORY_SWEEP, |act, ctx| {
            let _ = crate::runtime::guard(act, ctx, |act, _| act.compact_history(None));
        });
        // On etcd the Events' leases expire them there.
        if let Some(period) = self
            .event_ttl
            .sweep_period()
            .filter(|_| self.remote.is_none())
        {
            ctx.run_interval(period, |act, ctx| {
                let _ =
                    crate::runtime::guard(act, ctx, |act, _| act.expire_events(chrono::Utc::now()));
            });
        }
        tracing::info!(rev = self.next_rev - 1, "store started");
    }
}

impl Supervised for StoreActor {
    fn restarting(&mut self, _ctx: &mut Self::Context) {
        // The source of truth comes back at once (callers get 503 meanwhile): no back-off.
        crate::runtime::record_restart("StoreActor");
        if let Err(e) = self.reload() {
            tracing::error!(error = %e, "store reload after restart failed");
        }
    }
}

impl Handler<Write> for StoreActor {
    type Result = ResponseFuture<Result<WriteOutcome, StoreError>>;

    fn handle(&mut self, msg: Write, ctx: &mut Self::Context) -> Self::Result {
        let started = guarded(self, ctx, |act| act.begin_write(msg.0));
        Box::pin(async move {
            started?
                .await
                .map_err(|_| StoreError::Unavailable("store restarted before commit".into()))?
        })
    }
}

impl<E: Send + 'static> Handler<GuaranteedUpdate<E>> for StoreActor {
    type Result = ResponseFuture<Result<Result<Pending, E>, StoreError>>;

    fn handle(&mut self, msg: GuaranteedUpdate<E>, ctx: &mut Self::Context) -> Self::Result {
        if self.remote_busy(&msg.key) {
            // On etcd a write to the key is still on its way to the snapshot: decide on
            // the state it leaves, once it is there.
            let (tx, rx) = oneshot::channel();
            let key = msg.key.clone();
            self.defer(
                &key,
                Box::new(move |act: &mut StoreActor| {
                    let _ = tx.send(act.begin_update(msg.key, msg.f));
                }),
            );
            return Box::pin(async move {
                rx.await.unwrap_or_else(|_| {
                    Err(StoreError::Unavailable(
                        "store restarted before commit".into(),
                    ))
                })
            });
        }
        let decided = guarded(self, ctx, |act| act.begin_update(msg.key, msg.f));
        Box::pin(async move { decided })
    }
}

impl Handler<Watch> for StoreActor {
    type Result = Result<WatchStream, StoreError>;

    fn handle(&mut self, msg: Watch, ctx: &mut Self::Context) -> Self::Result {
        guarded(self, ctx, |act| {
            if act.remote.as_ref().is_some_and(|r| r.loading) {
                // The hub is replaced once the load is done: watch then.
                return Err(StoreError::Unavailable(
                    "the store is loading from the datastore".into(),
                ));
            }
            let snap = read_lock(&act.snapshot);
            act.hub.subscribe(&msg.prefix, msg.from, &snap)
        })
    }
}

impl Handler<Compact> for StoreActor {
    type Result = ();

    fn handle(&mut self, msg: Compact, ctx: &mut Self::Context) {
        let _ = crate::runtime::guard(self, ctx, |act, _| act.compact_history(Some(msg.keep)));
    }
}

impl Handler<ExpireEvents> for StoreActor {
    type Result = usize;

    fn handle(&mut self, msg: ExpireEvents, ctx: &mut Self::Context) -> usize {
        crate::runtime::guard(self, ctx, |act, _| act.expire_events(msg.now)).unwrap_or(0)
    }
}

impl Handler<InjectPanic> for StoreActor {
    type Result = Result<(), StoreError>;

    fn handle(&mut self, _msg: InjectPanic, ctx: &mut Self::Context) -> Self::Result {
        guarded(self, ctx, |_| panic!("injected store fault"))
    }
}

impl Handler<Committed> for StoreActor {
    type Result = ();

    fn handle(&mut self, msg: Committed, ctx: &mut Self::Context) {
        let _ = crate::runtime::guard(self, ctx, |act, ctx| match msg.result {
            Ok(()) => act.finish_writes(msg.writes),
            Err(e) => {
                act.fail_writes(msg.writes, e);
                // Later in-flight writes assumed these; restart from what is on disk.
                ctx.stop();
            }
        });
    }
}
