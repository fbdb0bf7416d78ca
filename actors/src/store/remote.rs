//! The store actor on etcd. Revisions are etcd's: a write is checked against the
//! snapshot, sent as one transaction comparing the key's `mod_revision` with the state it
//! was decided on, and answered once the snapshot, fed by the etcd watch in revision
//! order, holds it; so a server reads its own writes, and sees every other server's.
//!
//! Writes to one key are sent one at a time (the next waits until the previous is in
//! the snapshot), so that what a write or a guaranteed update is decided on is the key's
//! latest state as far as this server knows; a transaction that still finds the key
//! moved (another server wrote it) fails as a conflict, as kube-apiserver's would.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use actix::prelude::*;
use serde_json::Value;
use tokio::sync::{oneshot, Notify};

use super::actor::{read_lock, stamp, write_lock, StoreActor};
use super::etcd::{Change, Etcd, FeedMessage, Refused};
use super::{Object, Rev, Snapshot, StoreError, WriteOp, WriteOutcome};

type Reply = oneshot::Sender<Result<WriteOutcome, StoreError>>;

/// Work that waits for a key's write in flight to reach the snapshot.
pub(super) type Deferred = Box<dyn FnOnce(&mut StoreActor) + Send>;

/// How often etcd's history is compacted, at the revision of the previous round (so at
/// least this much history is always kept), as kube-apiserver's compactor does.
pub(super) const COMPACTION_PERIOD: std::time::Duration = std::time::Duration::from_secs(300);

/// The etcd side of the store actor.
pub(super) struct Remote {
    pub etcd: Etcd,
    /// Keys with a write at etcd, and what waits for each, in arrival order.
    busy: HashMap<String, VecDeque<Deferred>>,
    /// Writes etcd committed, answered once the snapshot holds their revision.
    acks: BTreeMap<Rev, Vec<(Reply, WriteOutcome, String)>>,
    /// The snapshot is being (re)loaded from etcd; writes are refused meanwhile.
    pub loading: bool,
    /// Messages of older feeds and loads are ignored.
    generation: u64,
    feed: Option<tokio::task::JoinHandle<()>>,
    /// Asks the feed for a progress mark (a consistent read waiting for a revision).
    pub progress: Arc<Notify>,
    /// The revision seen at the last compaction round: the next compacts up to it.
    compaction_mark: Option<Rev>,
}

impl Remote {
    pub fn new(etcd: Etcd, progress: Arc<Notify>) -> Self {
        Remote {
            etcd,
            busy: HashMap::new(),
            acks: BTreeMap::new(),
            loading: false,
            generation: 0,
            feed: None,
            progress,
            compaction_mark: None,
        }
    }
}

fn restarted() -> StoreError {
    StoreError::Unavailable("store restarted before commit".into())
}

/// etcd answered a write.
#[derive(Message)]
#[rtype(result = "()")]
pub(super) struct RemoteDone {
    key: String,
    at: Option<Rev>,
    result: Result<Result<Rev, Refused>, StoreError>,
    /// What was written (`None`: a delete of `prev`).
    written: Option<Value>,
    prev: Option<Object>,
    reply: Reply,
}

/// The watch brought changes or a progress mark.
#[derive(Message)]
#[rtype(result = "()")]
pub(super) struct FeedBatch {
    generation: u64,
    message: FeedMessage,
}

/// The watch ended: reload and watch again.
#[derive(Message)]
#[rtype(result = "()")]
pub(super) struct FeedEnded {
    generation: u64,
    error: StoreError,
}

/// A (re)load from etcd finished.
#[derive(Message)]
#[rtype(result = "()")]
pub(super) struct Loaded {
    generation: u64,
    result: Result<Snapshot, StoreError>,
}

impl StoreActor {
    fn remote(&mut self) -> &mut Remote {
        match self.remote.as_mut() {
            Some(r) => r,
            None => unreachable!("etcd handling in a store without etcd"),
        }
    }

    /// Whether a write to `key` is at etcd (what comes next for it has to wait).
    pub(super) fn remote_busy(&self, key: &str) -> bool {
        self.remote
            .as_ref()
            .is_some_and(|r| r.busy.contains_key(key))
    }

    /// Run `work` once the key's write in flight is in the snapshot.
    pub(super) fn defer(&mut self, key: &str, work: Deferred) {
        if let Some(q) = self.remote().busy.get_mut(key) {
            q.push_back(work);
        }
    }

    /// Check a write against the snapshot and send it to etcd.
    pub(super) fn begin_remote(
        &mut self,
        op: WriteOp,
    ) -> Result<oneshot::Receiver<Result<WriteOutcome, StoreError>>, StoreError> {
        if self.remote().loading {
            return Err(StoreError::Unavailable(
                "the store is loading from the datastore".into(),
            ));
        }
        let key = op.key().to_string();
        let (tx, rx) = oneshot::channel();
        if self.remote_busy(&key) {
            self.defer(
                &key,
                Box::new(move |act: &mut StoreActor| match act.begin_write(op) {
                    Ok(inner) => {
                        actix::spawn(async move {
                            let _ = tx.send(inner.await.unwrap_or_else(|_| Err(restarted())));
                        });
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e));
                    }
                }),
            );
            return Ok(rx);
        }
        let prev = read_lock(&self.snapshot).objects.get(&key).cloned();
        let (change, written, at) = match op {
            WriteOp::Create { key, object } => {
                if prev.is_some() {
                    return Err(StoreError::AlreadyExists { key });
                }
                let written = Some(object.clone());
                (Change::Create { key, object }, written, None)
            }
            WriteOp::Update {
                key,
                object,
                expected,
            } => {
                let at = super::actor::check_precondition(&key, prev.as_ref(), expected)?;
                let written = Some(object.clone());
                (Change::Update { key, object, at }, written, Some(at))
            }
            WriteOp::Delete { key, expected } => {
                let at = super::actor::check_precondition(&key, prev.as_ref(), expected)?;
                (Change::Delete { key, at }, None, Some(at))
            }
        };
        let Some(addr) = self.addr.clone() else {
            return Err(StoreError::Unavailable("store actor not started".into()));
        };
        let etcd = self.remote().etcd.clone();
        self.remote().busy.insert(key.clone(), VecDeque::new());
        actix::spawn(async move {
            let result = etcd.commit(change).await;
            addr.do_send(RemoteDone {
                key,
                at,
                result,
                written,
                prev,
                reply: tx,
            });
        });
        Ok(rx)
    }

    /// The key's write is settled: let what waited for it go, in order, until one of
    /// them is at etcd again.
    fn release(&mut self, key: &str) {
        let Some(mut waiting) = self.remote().busy.remove(key) else {
            return;
        };
        while let Some(next) = waiting.pop_front() {
            next(self);
            if let Some(q) = self.remote().busy.get_mut(key) {
                q.extend(waiting.drain(..));
                return;
            }
        }
    }

    /// Answer the writes whose revisions the snapshot now holds.
    fn answer_committed(&mut self) {
        let at = read_lock(&self.snapshot).rev;
        loop {
            let remote = self.remote();
            let Some(entry) = remote.acks.first_entry() else {
                return;
            };
            if *entry.key() > at {
                return;
            }
            for (reply, outcome, key) in entry.remove() {
                let _ = reply.send(Ok(outcome));
                self.release(&key);
            }
        }
    }

    fn remote_done(&mut self, msg: RemoteDone) {
        let RemoteDone {
            key,
            at,
            result,
            written,
            prev,
            reply,
        } = msg;
        match result {
            Ok(Ok(rev)) => {
                let object = match (written, &prev) {
                    (Some(v), _) => stamp(v, rev).value,
                    (None, Some(p)) => stamp((*p.value).clone(), rev).value,
                    (None, None) => Arc::new(Value::Null),
                };
                self.remote().acks.entry(rev).or_default().push((
                    reply,
                    WriteOutcome { rev, object },
                    key,
                ));
                self.answer_committed();
            }
            Ok(Err(refused)) => {
                let e = match refused {
                    Refused::Exists => StoreError::AlreadyExists { key: key.clone() },
                    Refused::Missing => StoreError::NotFound { key: key.clone() },
                    Refused::At(current) => StoreError::Conflict {
                        key: key.clone(),
                        expected: at.unwrap_or_default(),
                        current,
                    },
                };
                let _ = reply.send(Err(e));
                self.release(&key);
            }
            Err(e) => {
                tracing::warn!(key = %key, error = %e, "datastore write failed");
                let _ = reply.send(Err(e));
                self.release(&key);
            }
        }
    }

    /// Apply what the watch brought, in order, and answer the writes it completes.
    fn feed_batch(&mut self, message: FeedMessage) {
        let events = {
            let mut snap = write_lock(&self.snapshot);
            match message {
                FeedMessage::Progress(rev) => {
                    // Nothing of ours changed up to `rev`: the snapshot is the state at it.
                    snap.rev = snap.rev.max(rev);
                    Vec::new()
                }
                FeedMessage::Changes(changes) => {
                    let now_ms = chrono::Utc::now().timestamp_millis();
                    let now = chrono::Utc::now();
                    let mut events = Vec::with_capacity(changes.len());
                    for c in changes {
                        if c.rev <= snap.rev {
                            continue;
                        }
                        let prev = snap.objects.get(&c.key).cloned();
                        self.event_ttl.note(&c.key, c.new.is_none(), now);
                        let object = match (&c.new, &prev) {
                            (Some(n), _) => n.value.clone(),
                            (None, Some(p)) => stamp((*p.value).clone(), c.rev).value,
                            (None, None) => Arc::new(Value::Null),
                        };
                        events.push(super::actor::commit_to(
                            &mut snap,
                            self.config.history,
                            now_ms,
                            c.rev,
                            c.kind,
                            c.key,
                            c.new,
                            prev,
                            object,
                        ));
                    }
                    events
                }
            }
        };
        let rev = read_lock(&self.snapshot).rev;
        self.revision.send_replace(rev);
        for e in events {
            self.hub.publish(e);
        }
        self.answer_committed();
    }

    /// Watch etcd from the snapshot's revision on.
    pub(super) fn start_feed(&mut self) {
        let Some(addr) = self.addr.clone() else {
            return;
        };
        let from = read_lock(&self.snapshot).rev;
        let remote = self.remote();
        remote.generation += 1;
        let generation = remote.generation;
        let etcd = remote.etcd.clone();
        let progress = remote.progress.clone();
        if let Some(old) = remote.feed.take() {
            old.abort();
        }
        remote.feed = Some(actix::spawn(async move {
            let mut feed = match etcd.watch(from).await {
                Ok(f) => f,
                Err(error) => {
                    addr.do_send(FeedEnded { generation, error });
                    return;
                }
            };
            loop {
                match feed.next(&progress).await {
                    Ok(message) => addr.do_send(FeedBatch {
                        generation,
                        message,
                    }),
                    Err(error) => {
                        addr.do_send(FeedEnded { generation, error });
                        return;
                    }
                }
            }
        }));
    }

    /// Load every object from etcd again (after a restart, or a watch that ended); writes
    /// wait (503) until it is done.
    pub(super) fn start_reload(&mut self) {
        let Some(addr) = self.addr.clone() else {
            return;
        };
        let remote = self.remote();
        remote.loading = true;
        remote.generation += 1;
        let generation = remote.generation;
        if let Some(old) = remote.feed.take() {
            old.abort();
        }
        // What waited on keys is answered "retry"; writes already at etcd are answered
        // once the reloaded snapshot holds them.
        remote.busy.clear();
        let etcd = remote.etcd.clone();
        let at = read_lock(&self.snapshot).rev;
        actix::spawn(async move {
            // At the revision the snapshot is at, its history still follows on from the
            // load and watches resume; once etcd has compacted that, at the latest.
            let result = match etcd.load(Some(at)).await {
                Ok(s) => Ok(s),
                Err(_) => etcd.load(None).await,
            };
            if result.is_err() {
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
            addr.do_send(Loaded { generation, result });
        });
    }

    fn loaded(&mut self, result: Result<Snapshot, StoreError>) {
        match result {
            Ok(mut loaded) => {
                let rev = loaded.rev;
                {
                    let mut old = write_lock(&self.snapshot);
                    if old.rev == rev {
                        loaded.history = std::mem::take(&mut old.history);
                    }
                }
                tracing::info!(
                    rev,
                    objects = loaded.objects.len(),
                    "store loaded from the datastore"
                );
                self.event_ttl = super::ttl::EventTtl::new(
                    self.config.event_ttl,
                    loaded.objects.iter(),
                    chrono::Utc::now(),
                );
                *write_lock(&self.snapshot) = loaded;
                self.hub.close_all();
                self.hub = super::watch::WatchHub::new(rev, self.config.watch_buffer);
                self.revision.send_replace(rev);
                self.remote().loading = false;
                self.start_feed();
                self.answer_committed();
            }
            Err(e) => {
                tracing::warn!(error = %e, "loading from the datastore failed; retrying");
                self.start_reload();
            }
        }
    }

    /// One round of etcd compaction: up to the revision the previous round saw.
    pub(super) fn compact_remote(&mut self) {
        let now = read_lock(&self.snapshot).rev;
        let remote = self.remote();
        let mark = remote.compaction_mark.replace(now);
        if let Some(rev) = mark.filter(|r| *r > 0) {
            let etcd = remote.etcd.clone();
            actix::spawn(async move {
                if let Err(e) = etcd.compact(rev).await {
                    tracing::warn!(rev, error = %e, "datastore compaction failed");
                }
            });
        }
    }
}

impl Handler<RemoteDone> for StoreActor {
    type Result = ();

    fn handle(&mut self, msg: RemoteDone, ctx: &mut Self::Context) {
        let _ = crate::runtime::guard(self, ctx, |act, _| act.remote_done(msg));
    }
}

impl Handler<FeedBatch> for StoreActor {
    type Result = ();

    fn handle(&mut self, msg: FeedBatch, ctx: &mut Self::Context) {
        if self.remote.as_ref().map(|r| r.generation) != Some(msg.generation) {
            return;
        }
        let _ = crate::runtime::guard(self, ctx, |act, _| act.feed_batch(msg.message));
    }
}

impl Handler<FeedEnded> for StoreActor {
    type Result = ();

    fn handle(&mut self, msg: FeedEnded, ctx: &mut Self::Context) {
        if self.remote.as_ref().map(|r| r.generation) != Some(msg.generation) {
            return;
        }
        tracing::warn!(error = %msg.error, "datastore watch ended; reloading");
        let _ = crate::runtime::guard(self, ctx, |act, _| act.start_reload());
    }
}

impl Handler<Loaded> for StoreActor {
    type Result = ();

    fn handle(&mut self, msg: Loaded, ctx: &mut Self::Context) {
        if self.remote.as_ref().map(|r| r.generation) != Some(msg.generation) {
            return;
        }
        let _ = crate::runtime::guard(self, ctx, |act, _| act.loaded(msg.result));
    }
}
