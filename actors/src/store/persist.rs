//! RocksDB persistence and the committer thread that makes writes durable in groups.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Instant;

use actix::Recipient;
use rocksdb::{Options, WriteBatch, WriteOptions, DB};
use serde_json::Value;

use super::actor::{Committed, PendingWrite};
use super::{Object, Rev, StoreError};
use crate::metrics::Metrics;

const OBJECT_PREFIX: &[u8] = b"o/";
const REV_KEY: &[u8] = b"m/rev";
/// Writes made durable by one sync at most; bounds the latency of the first in a burst.
const MAX_GROUP: usize = 4096;

pub struct Persist {
    db: DB,
}

impl Persist {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        let db = DB::open(&opts, path).map_err(|e| StoreError::Io(e.to_string()))?;
        Ok(Persist { db })
    }

    /// Every stored object and the last committed revision.
    pub fn load(&self) -> Result<(Rev, BTreeMap<String, Object>), StoreError> {
        let rev = match self
            .db
            .get(REV_KEY)
            .map_err(|e| StoreError::Io(e.to_string()))?
        {
            Some(bytes) => parse_rev(&bytes)?,
            None => 0,
        };
        let mut objects = BTreeMap::new();
        for item in self.db.prefix_iterator(OBJECT_PREFIX) {
            let (k, v) = item.map_err(|e| StoreError::Io(e.to_string()))?;
            if !k.starts_with(OBJECT_PREFIX) {
                break;
            }
            let key = String::from_utf8_lossy(&k[OBJECT_PREFIX.len()..]).into_owned();
            let value: Value = serde_json::from_slice(&v).map_err(|e| StoreError::Corrupt {
                key: key.clone(),
                detail: e.to_string(),
            })?;
            let obj_rev = value
                .pointer("/metadata/resourceVersion")
                .and_then(Value::as_str)
                .and_then(|s| s.parse().ok())
                .unwrap_or(rev);
            objects.insert(
                key,
                Object {
                    rev: obj_rev,
                    value: Arc::new(value),
                },
            );
        }
        Ok((rev, objects))
    }

    fn commit(&self, writes: &[PendingWrite]) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        let mut last = 0;
        for w in writes {
            let mut key = OBJECT_PREFIX.to_vec();
            key.extend_from_slice(w.key.as_bytes());
            match &w.new {
                Some(obj) => {
                    let bytes =
                        serde_json::to_vec(&*obj.value).map_err(|e| StoreError::Corrupt {
                            key: w.key.clone(),
                            detail: e.to_string(),
                        })?;
                    batch.put(&key, bytes);
                }
                None => batch.delete(&key),
            }
            last = last.max(w.rev);
        }
        batch.put(REV_KEY, last.to_string().as_bytes());
        let mut opts = WriteOptions::default();
        opts.set_sync(true);
        self.db
            .write_opt(batch, &opts)
            .map_err(|e| StoreError::Io(e.to_string()))
    }
}

fn parse_rev(bytes: &[u8]) -> Result<Rev, StoreError> {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| StoreError::Corrupt {
            key: "m/rev".into(),
            detail: "revision is not a number".into(),
        })
}

pub enum CommitMsg {
    Write(PendingWrite),
    /// Answered once every write sent before it has been committed or failed.
    Barrier(mpsc::SyncSender<()>),
}

/// The thread that syncs writes: it takes whatever has queued up while the previous sync
/// ran and makes it durable with one WAL sync (group commit).
pub struct Committer {
    tx: Option<mpsc::Sender<CommitMsg>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Committer {
    /// Close the channel and wait for the thread, so that RocksDB is closed (and its lock
    /// released) by the time the store actor is gone.
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Committer {
    pub fn spawn(
        persist: Arc<Persist>,
        done: Recipient<Committed>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, StoreError> {
        let (tx, rx) = mpsc::channel::<CommitMsg>();
        let thread = std::thread::Builder::new()
            .name("store-committer".into())
            .spawn(move || commit_loop(&persist, &rx, &done, &metrics))
            .map_err(|e| StoreError::Io(e.to_string()))?;
        Ok(Committer {
            tx: Some(tx),
            thread: Some(thread),
        })
    }

    pub fn send(&self, msg: CommitMsg) -> Result<(), StoreError> {
        self.tx
            .as_ref()
            .ok_or_else(|| StoreError::Unavailable("committer stopped".into()))?
            .send(msg)
            .map_err(|_| StoreError::Unavailable("committer stopped".into()))
    }

    /// Wait until everything sent so far is committed (or failed).
    pub fn drain(&self) {
        let (tx, rx) = mpsc::sync_channel(1);
        if self.send(CommitMsg::Barrier(tx)).is_ok() {
            let _ = rx.recv();
        }
    }
}

fn commit_loop(
    persist: &Persist,
    rx: &mpsc::Receiver<CommitMsg>,
    done: &Recipient<Committed>,
    metrics: &Metrics,
) {
    while let Ok(first) = rx.recv() {
        let mut writes = Vec::new();
        let mut barriers = Vec::new();
        let mut next = Some(first);
        while let Some(msg) = next {
            match msg {
                CommitMsg::Write(w) => writes.push(w),
                CommitMsg::Barrier(b) => barriers.push(b),
            }
            next = if writes.len() < MAX_GROUP {
                rx.try_recv().ok()
            } else {
                None
            };
        }
        if !writes.is_empty() {
            let started = Instant::now();
            let result = persist.commit(&writes);
            metrics
                .commit_duration
                .observe(started.elapsed().as_secs_f64());
            metrics.commit_batch_size.observe(writes.len() as f64);
            let _span = tracing::debug_span!("commit", writes = writes.len()).entered();
            if let Err(e) = &result {
                tracing::error!(error = %e, "store commit failed");
            }
            done.do_send(Committed { writes, result });
        }
        for b in barriers {
            let _ = b.send(());
        }
    }
}
