//! The store: the cluster's single source of truth, with etcd's promises on RocksDB.
//!
//! Writes go through the [`StoreActor`] mailbox, which checks preconditions against the
//! latest (committed or in-flight) state and assigns the next global revision; a committer
//! thread makes them durable in group commits and only then are they visible to readers,
//! answered, and fanned out to watchers. Reads of current objects come from the in-memory
//! [`Snapshot`] through a [`StoreHandle`], never from disk.

mod actor;
pub mod encryption;
pub mod etcd;
pub mod history;
pub mod kv;
mod persist;
pub mod read;
mod remote;
mod ttl;
mod watch;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use actix::Addr;
use serde_json::Value;

pub use actor::{Compact, ExpireEvents, GuaranteedUpdate, InjectPanic, StoreActor, Watch, Write};
pub use kv::Backend;
pub use read::{ListQuery, ListResult};
pub use watch::{Progress, WatchStream};

/// A revision of the store (etcd's global revision, Kubernetes' `resourceVersion`).
pub type Rev = u64;

#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum StoreError {
    #[error("{key} already exists")]
    AlreadyExists { key: String },
    #[error("{key} not found")]
    NotFound { key: String },
    #[error("{key} was modified: expected revision {expected}, current {current}")]
    Conflict {
        key: String,
        expected: Rev,
        current: Rev,
    },
    #[error("too old resource version: {requested} ({oldest})")]
    Expired { requested: Rev, oldest: Rev },
    /// A read or watch at a revision the store has not reached.
    #[error("Too large resource version: {requested}, current: {current}")]
    TooLarge { requested: Rev, current: Rev },
    #[error("the store is restarting, retry: {0}")]
    Unavailable(String),
    /// The etcd datastore did not answer (or has no quorum): retry.
    #[error("{0}")]
    Datastore(String),
    #[error("storage I/O failed: {0}")]
    Io(String),
    #[error("corrupt record {key}: {detail}")]
    Corrupt { key: String, detail: String },
    /// A guaranteed update's function panicked; nothing was written.
    #[error("updating {key} failed: {detail}")]
    UpdateFailed { key: String, detail: String },
}

/// One stored object at the revision of its last write.
#[derive(Debug, Clone)]
pub struct Object {
    pub rev: Rev,
    pub value: Arc<Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Added,
    Modified,
    Deleted,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Added => "ADDED",
            EventKind::Modified => "MODIFIED",
            EventKind::Deleted => "DELETED",
        }
    }
}

/// One change, as watchers receive it.
#[derive(Debug, Clone)]
pub struct Event {
    pub rev: Rev,
    pub kind: EventKind,
    pub key: String,
    /// The new object; for a delete, the last state with the deletion's revision.
    pub object: Arc<Value>,
    /// The state before this change, so that filtered watches can turn a change that leaves
    /// their selector into a DELETED event, as Kubernetes does.
    pub prev: Option<Arc<Value>>,
}

/// A write to the store.
#[derive(Debug, Clone)]
pub enum WriteOp {
    /// Fails with `AlreadyExists` when the key is present.
    Create { key: String, object: Value },
    /// Fails with `NotFound`, or `Conflict` when `expected` is given and differs.
    Update {
        key: String,
        object: Value,
        expected: Option<Rev>,
    },
    /// Fails with `NotFound`, or `Conflict` when `expected` is given and differs.
    Delete { key: String, expected: Option<Rev> },
}

impl WriteOp {
    pub fn key(&self) -> &str {
        match self {
            WriteOp::Create { key, .. }
            | WriteOp::Update { key, .. }
            | WriteOp::Delete { key, .. } => key,
        }
    }
}

/// What a guaranteed update's function decided, given the key's latest state.
#[derive(Debug, Clone)]
pub enum Decision {
    /// Write this as the key's new state.
    Put(Value),
    /// Delete the key.
    Delete,
    /// Write nothing; answer with this object (a no-op update, a dry run).
    Keep(Value),
}

/// A guaranteed update's function: it sees the latest state of the key, counting writes
/// still in flight, so it never loses a compare-and-swap and never has to retry.
pub type UpdateFn<E> = Box<dyn FnOnce(&Object) -> Result<Decision, E> + Send>;

/// What a guaranteed update produced.
#[derive(Debug, Clone)]
pub enum Updated {
    /// A write, acknowledged once durable.
    Written(WriteOutcome),
    /// Nothing was written.
    Kept(Value),
}

/// What an acknowledged (durable) write produced.
#[derive(Debug, Clone)]
pub struct WriteOutcome {
    pub rev: Rev,
    pub object: Arc<Value>,
}

/// The committed state readers see.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub rev: Rev,
    pub objects: BTreeMap<String, Object>,
    /// Resource (a key's first segment) → revision of its last committed change, so a
    /// cache derived from one resource can tell cheaply whether it is stale.
    pub changed: std::collections::HashMap<String, Rev>,
    /// The revision the objects were last loaded from disk at: nothing cached from
    /// before it can be trusted.
    pub loaded_at: Rev,
    /// The recent events, at the same revision as the objects.
    pub history: history::History,
    /// How many objects each resource (`pods/`) and each namespace of it
    /// (`pods/default/`) holds, so a page can tell how many items follow it.
    counts: std::collections::HashMap<String, usize>,
}

impl Snapshot {
    pub fn new(rev: Rev, objects: BTreeMap<String, Object>) -> Self {
        let mut counts = std::collections::HashMap::new();
        for key in objects.keys() {
            for p in counted_prefixes(key) {
                *counts.entry(p.to_string()).or_default() += 1;
            }
        }
        Snapshot {
            rev,
            objects,
            changed: Default::default(),
            loaded_at: rev,
            history: history::History::starting_at(rev),
            counts,
        }
    }

    /// Store `obj` as the state of `key`.
    pub fn insert(&mut self, key: String, obj: Object) {
        use std::collections::btree_map::Entry;
        match self.objects.entry(key) {
            Entry::Occupied(mut e) => {
                e.insert(obj);
            }
            Entry::Vacant(e) => {
                for p in counted_prefixes(e.key()) {
                    count_by(&mut self.counts, p, 1);
                }
                e.insert(obj);
            }
        }
    }

    /// Forget `key`.
    pub fn remove(&mut self, key: &str) {
        if self.objects.remove(key).is_some() {
            for p in counted_prefixes(key) {
                count_by(&mut self.counts, p, -1);
            }
        }
    }

    /// How many objects are under `prefix`, for a resource or namespace prefix.
    pub fn count(&self, prefix: &str) -> Option<usize> {
        let counted = counted_prefixes(prefix).last();
        if counted.is_some_and(|p| p.len() == prefix.len()) {
            Some(self.counts.get(prefix).copied().unwrap_or(0))
        } else {
            None
        }
    }

    /// Note a committed change of `key` at `rev`.
    pub fn mark_changed(&mut self, key: &str, rev: Rev) {
        let resource = key.split('/').next().unwrap_or_default();
        match self.changed.get_mut(resource) {
            Some(r) => *r = rev,
            None => {
                self.changed.insert(resource.to_string(), rev);
            }
        }
    }
}

/// The key prefixes objects are counted under: the resource's and its namespace's
/// (`pods/`, `pods/default/` for `pods/default/web`).
fn counted_prefixes(key: &str) -> impl Iterator<Item = &str> {
    key.match_indices('/').take(2).map(|(i, _)| &key[..=i])
}

fn count_by(counts: &mut std::collections::HashMap<String, usize>, prefix: &str, delta: isize) {
    match counts.get_mut(prefix) {
        Some(n) => *n = n.saturating_add_signed(delta),
        None => {
            counts.insert(prefix.to_string(), 0usize.saturating_add_signed(delta));
        }
    }
}

#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// RocksDB's directory (unused in memory).
    pub path: PathBuf,
    /// Where the records live: RocksDB (durable) or memory (tests, the simulation).
    pub backend: Backend,
    /// Watch events kept (in memory and on disk, across restarts) for resuming watches
    /// and paging lists; older revisions answer 410 Expired.
    pub history: usize,
    /// Events older than this leave the history too (etcd's compaction as kube-apiserver
    /// runs it every 5 minutes); `None` bounds it by count only.
    pub history_age: Option<std::time::Duration>,
    /// Events buffered per watcher before a slow watcher is dropped (it re-watches).
    pub watch_buffer: usize,
    /// An Event not written for this long is deleted (kube-apiserver's `--event-ttl`);
    /// `None` keeps Events for ever.
    pub event_ttl: Option<std::time::Duration>,
    /// What seals the values of Secrets on disk; `None` stores them as they are (tests).
    pub encryption: Option<Arc<encryption::Transformer>>,
    /// Keep the objects in etcd instead (`--datastore-endpoint`): `backend` and `path`
    /// are then unused.
    pub datastore: Option<etcd::EtcdConfig>,
    /// Who owns the datastore (the cluster CA's fingerprint): a server refuses an etcd
    /// prefix that another cluster has claimed.
    pub cluster_id: Option<String>,
}

/// kube-apiserver's default `--event-ttl`.
pub const DEFAULT_EVENT_TTL: std::time::Duration = std::time::Duration::from_secs(3600);

/// How long events stay in the history by default: kube-apiserver compacts etcd every
/// 5 minutes, keeping the revisions of the last interval.
pub const DEFAULT_HISTORY_AGE: std::time::Duration = std::time::Duration::from_secs(300);

impl StoreConfig {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        StoreConfig {
            path: path.into(),
            backend: Backend::RocksDb,
            history: 100_000,
            history_age: Some(DEFAULT_HISTORY_AGE),
            watch_buffer: 20_000,
            event_ttl: Some(DEFAULT_EVENT_TTL),
            encryption: None,
            datastore: None,
            cluster_id: None,
        }
    }
}

/// A cheap, cloneable way to reach the store: writes and watches through the actor,
/// reads from the committed in-memory snapshot.
#[derive(Clone)]
pub struct StoreHandle {
    pub addr: Addr<StoreActor>,
    snapshot: Arc<RwLock<Snapshot>>,
    /// The committed revision, to wait for one not reached yet without polling.
    revision: tokio::sync::watch::Receiver<Rev>,
    /// On etcd: the datastore, and the feed's progress request (for consistent reads).
    remote: Option<(etcd::Etcd, Arc<tokio::sync::Notify>)>,
}

impl StoreHandle {
    pub fn get(&self, key: &str) -> Option<Object> {
        self.read().objects.get(key).cloned()
    }

    /// Every object under `prefix`, in key order, and the revision they were read at.
    pub fn list(&self, prefix: &str) -> (Vec<(String, Object)>, Rev) {
        self.list_from(prefix, None, usize::MAX)
    }

    /// Up to `limit` objects under `prefix` whose keys come after `after`.
    pub fn list_from(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> (Vec<(String, Object)>, Rev) {
        use std::ops::Bound;
        let snap = self.read();
        let start = match after {
            Some(k) => Bound::Excluded(k.to_string()),
            None => Bound::Included(prefix.to_string()),
        };
        let items = snap
            .objects
            .range((start, Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(prefix))
            .take(limit)
            .map(|(k, o)| (k.clone(), o.clone()))
            .collect();
        (items, snap.rev)
    }

    pub fn revision(&self) -> Rev {
        self.read().rev
    }

    /// Wait until the snapshot holds every write the datastore acknowledged before this
    /// call (a consistent read, as kube-apiserver's consistent list from its watch cache).
    /// On RocksDB and in memory every acknowledged write is in the snapshot already.
    pub async fn sync(&self) -> Result<(), StoreError> {
        let Some((etcd, progress)) = &self.remote else {
            return Ok(());
        };
        let rev = etcd.current_revision().await?;
        if self.revision() >= rev {
            return Ok(());
        }
        // Other servers' writes arrive with the feed; writes outside our prefix move
        // etcd's revision without an event, which a progress mark covers.
        progress.notify_one();
        self.wait_for_revision(rev, SYNC_WAIT).await
    }

    /// One page of a list, at the latest revision or a past one still in the history
    /// (`Expired` when compacted, `TooLarge` when not reached yet).
    pub fn list_page(
        &self,
        q: &ListQuery<'_>,
        keep: impl FnMut(&Object) -> bool,
    ) -> Result<ListResult, StoreError> {
        read::list(&self.read(), q, keep)
    }

    /// The oldest revision a watch or a list can start at.
    pub fn oldest_revision(&self) -> Rev {
        self.read().history.oldest()
    }

    /// Wait until the store has committed `rev`, at most `timeout`; `TooLarge` if it has
    /// not by then (kube-apiserver waits 3 s for its watch cache the same way).
    pub async fn wait_for_revision(
        &self,
        rev: Rev,
        timeout: std::time::Duration,
    ) -> Result<(), StoreError> {
        let mut rx = self.revision.clone();
        let reached = tokio::time::timeout(timeout, rx.wait_for(|r| *r >= rev)).await;
        match reached {
            Ok(Ok(_)) => Ok(()),
            _ => {
                let current = self.revision();
                if current >= rev {
                    Ok(())
                } else {
                    Err(StoreError::TooLarge {
                        requested: rev,
                        current,
                    })
                }
            }
        }
    }

    /// The revision of the last change to any object of these resources (plural names),
    /// or of the last reload from disk: a value derived from them is current as long as
    /// this does not move.
    pub fn last_change(&self, resources: &[&str]) -> Rev {
        let snap = self.read();
        resources
            .iter()
            .filter_map(|r| snap.changed.get(*r).copied())
            .fold(snap.loaded_at, Rev::max)
    }

    pub async fn write(&self, op: WriteOp) -> Result<WriteOutcome, StoreError> {
        self.addr
            .send(Write(op))
            .await
            .map_err(|e| StoreError::Unavailable(e.to_string()))?
    }

    /// Read the latest state of `key`, apply `f` and write what it decides, as one step of
    /// the store actor (etcd's GuaranteedUpdate without the retry loop: nothing can write
    /// the key between the read and the write). `Ok(Err(e))` is `f`'s own refusal.
    pub async fn guaranteed_update<E: Send + 'static>(
        &self,
        key: &str,
        f: UpdateFn<E>,
    ) -> Result<Result<Updated, E>, StoreError> {
        let pending = self
            .addr
            .send(GuaranteedUpdate {
                key: key.to_string(),
                f,
            })
            .await
            .map_err(|e| StoreError::Unavailable(e.to_string()))??;
        match pending {
            Err(e) => Ok(Err(e)),
            Ok(actor::Pending::Kept(v)) => Ok(Ok(Updated::Kept(v))),
            Ok(actor::Pending::Written(rx)) => {
                let out = rx.await.map_err(|_| {
                    StoreError::Unavailable("store restarted before commit".into())
                })??;
                Ok(Ok(Updated::Written(out)))
            }
        }
    }

    pub async fn watch(&self, prefix: &str, from: Option<Rev>) -> Result<WatchStream, StoreError> {
        self.addr
            .send(Watch {
                prefix: prefix.to_string(),
                from,
            })
            .await
            .map_err(|e| StoreError::Unavailable(e.to_string()))?
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Snapshot> {
        // A panic while holding the lock cannot leave the map half-updated (inserts are
        // single operations), so a poisoned lock is still safe to read.
        self.snapshot.read().unwrap_or_else(|e| e.into_inner())
    }
}

/// How long a consistent read waits for the snapshot to catch up with etcd.
const SYNC_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// Open the store as `config` says (etcd when it names a datastore, else RocksDB or
/// memory) and start its actor, supervised, on `arbiter`.
pub async fn open(
    config: StoreConfig,
    metrics: Arc<crate::metrics::Metrics>,
    arbiter: &actix::ArbiterHandle,
) -> Result<StoreHandle, StoreError> {
    let Some(datastore) = config.datastore.clone() else {
        return start(config, metrics, arbiter);
    };
    let etcd = etcd::Etcd::connect(&datastore, config.encryption.clone())
        .await?
        .with_event_ttl(config.event_ttl);
    if let Some(id) = &config.cluster_id {
        etcd.claim(id).await?;
    }
    let mut loaded = etcd.load(None).await?;
    loaded.history = etcd.history(loaded.rev, config.history).await?;
    tracing::info!(
        endpoints = etcd.endpoints(),
        rev = loaded.rev,
        objects = loaded.objects.len(),
        "store on etcd"
    );
    let progress = Arc::new(tokio::sync::Notify::new());
    let remote = remote::Remote::new(etcd.clone(), progress.clone());
    let mut handle = launch(config, None, Some(remote), loaded, metrics, arbiter);
    handle.remote = Some((etcd, progress));
    Ok(handle)
}

/// Start the store actor, supervised on `arbiter`, over the state `loaded`.
fn launch(
    config: StoreConfig,
    persist: Option<Arc<persist::Persist>>,
    remote: Option<remote::Remote>,
    loaded: Snapshot,
    metrics: Arc<crate::metrics::Metrics>,
    arbiter: &actix::ArbiterHandle,
) -> StoreHandle {
    let (revision_tx, revision) = tokio::sync::watch::channel(loaded.rev);
    let snapshot = Arc::new(RwLock::new(loaded));
    let actor = StoreActor::new(
        config,
        persist,
        remote,
        snapshot.clone(),
        metrics,
        revision_tx,
    );
    let addr = actix::Supervisor::start_in_arbiter(arbiter, move |_| actor);
    StoreHandle {
        addr,
        snapshot,
        revision,
        remote: None,
    }
}

/// Open the store at `config.path` and start its actor, supervised, on an arbiter of its
/// own so that commit bookkeeping never waits behind HTTP work.
pub fn start(
    config: StoreConfig,
    metrics: Arc<crate::metrics::Metrics>,
    arbiter: &actix::ArbiterHandle,
) -> Result<StoreHandle, StoreError> {
    let persist = Arc::new(persist::Persist::open(
        &config.backend,
        &config.path,
        config.encryption.clone(),
    )?);
    let loaded = persist.load_snapshot(&config)?;
    Ok(launch(
        config,
        Some(persist),
        None,
        loaded,
        metrics,
        arbiter,
    ))
}

#[cfg(test)]
mod backend_tests {
    use super::*;
    use serde_json::json;

    /// What the store promises, the same on each backend: revisions in order as
    /// resourceVersions, compare-and-swap, a watch from a revision, and all of it kept
    /// across a restart of the store actor.
    async fn promises_hold(backend: Backend) {
        let dir = tempfile::tempdir().unwrap();
        let mut config = StoreConfig::new(dir.path());
        config.backend = backend;
        let metrics = Arc::new(crate::metrics::Metrics::new().unwrap());
        let arbiter = actix::Arbiter::new();
        let store = start(config, metrics, &arbiter.handle()).unwrap();
        let pod = |v: u32| json!({"kind": "Pod", "metadata": {"name": "p"}, "spec": {"v": v}});
        let key = "pods/default/p".to_string();
        let created = store
            .write(WriteOp::Create {
                key: key.clone(),
                object: pod(1),
            })
            .await
            .unwrap();
        let again = store
            .write(WriteOp::Create {
                key: key.clone(),
                object: pod(1),
            })
            .await;
        assert!(matches!(again, Err(StoreError::AlreadyExists { .. })));
        let updated = store
            .write(WriteOp::Update {
                key: key.clone(),
                object: pod(2),
                expected: Some(created.rev),
            })
            .await
            .unwrap();
        assert!(updated.rev > created.rev);
        assert_eq!(
            updated.object["metadata"]["resourceVersion"],
            updated.rev.to_string()
        );
        let stale = store
            .write(WriteOp::Update {
                key: key.clone(),
                object: pod(3),
                expected: Some(created.rev),
            })
            .await;
        assert!(
            matches!(stale, Err(StoreError::Conflict { .. })),
            "{stale:?}"
        );

        // The actor restarts (reloading from its backend): nothing acknowledged is lost,
        // and a watch from before the update still replays it.
        assert!(store.addr.send(InjectPanic).await.unwrap().is_err());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let watch = loop {
            match store.watch("pods/", Some(created.rev)).await {
                Ok(w) => break w,
                Err(e) => {
                    assert!(std::time::Instant::now() < deadline, "store back: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
            }
        };
        let replayed: Vec<Rev> = watch.initial.iter().map(|e| e.rev).collect();
        assert_eq!(replayed, [updated.rev]);
        assert_eq!(store.get(&key).unwrap().value["spec"]["v"], 2);
        let deleted = store
            .write(WriteOp::Delete {
                key: key.clone(),
                expected: Some(updated.rev),
            })
            .await
            .unwrap();
        assert!(deleted.rev > updated.rev);
        assert!(store.get(&key).is_none());
        arbiter.stop();
    }

    #[actix_rt::test]
    async fn the_store_keeps_its_promises_on_rocksdb() {
        promises_hold(Backend::RocksDb).await;
    }

    #[actix_rt::test]
    async fn the_store_keeps_its_promises_in_memory() {
        promises_hold(Backend::Memory).await;
    }
}
