//! Persistence (on RocksDB, or in memory: `kv.rs`) and the committer thread that makes
//! writes durable in groups.
//!
//! Keys: `o/<key>` holds each object's latest state, `m/rev` the last committed
//! revision, and `h/<revision>` (big-endian, so in revision order) one history record
//! per write — kind, key and the state it replaced — written in the same batch as
//! the object, so the history on disk is exactly as durable as the objects and a restart
//! resumes watches instead of starting the history afresh. Old records are deleted in
//! ranges as the history window moves (etcd's compaction).
//!
//! The values of encrypted resources (Secrets) are sealed on their way to RocksDB and
//! opened on their way back, here and nowhere else (`encryption.rs`), so memory, watches
//! and lists hold plaintext and the files never do.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Instant;

use actix::Recipient;
use serde_json::Value;

use super::actor::{Committed, PendingWrite};
use super::encryption::Transformer;
use super::history::History;
use super::kv::{Backend, Batch, Kv};
use super::{Event, EventKind, Object, Rev, Snapshot, StoreConfig, StoreError};
use crate::api::meta;
use crate::metrics::Metrics;

const OBJECT_PREFIX: &[u8] = b"o/";
const REV_KEY: &[u8] = b"m/rev";
const HISTORY_PREFIX: &[u8] = b"h/";
/// The layout of a history record; a record of another version ends the history there.
const RECORD_VERSION: u8 = 1;
/// Writes made durable by one sync at most; bounds the latency of the first in a burst.
const MAX_GROUP: usize = 4096;

pub struct Persist {
    db: Kv,
    encryption: Option<Arc<Transformer>>,
}

impl Persist {
    pub fn open(
        backend: &Backend,
        path: &Path,
        encryption: Option<Arc<Transformer>>,
    ) -> Result<Self, StoreError> {
        let db = Kv::open(backend, path)?;
        Ok(Persist { db, encryption })
    }

    fn seal(&self, key: &str, json: Vec<u8>) -> Result<Vec<u8>, StoreError> {
        seal(self.encryption.as_deref(), key, json)
    }

    fn open_value<'v>(
        &self,
        key: &str,
        stored: &'v [u8],
    ) -> Result<(std::borrow::Cow<'v, [u8]>, bool), StoreError> {
        open_value(self.encryption.as_deref(), key, stored)
    }

    /// The committed state with the history kept on disk: at most `config.history` events,
    /// none older than `config.history_age`.
    pub fn load_snapshot(&self, config: &StoreConfig) -> Result<Snapshot, StoreError> {
        let mut stale = Vec::new();
        let (rev, objects) = self.load_objects(&mut stale)?;
        let mut snap = Snapshot::new(rev, objects);
        let cutoff = config
            .history_age
            .map(|age| now_ms().saturating_sub(age.as_millis() as i64));
        let mut stale_history = Vec::new();
        snap.history = self.load_history(&snap, config.history, cutoff, &mut stale_history)?;
        self.reseal(&snap, &stale, &stale_history)?;
        let oldest = snap.history.oldest();
        if oldest > 0 {
            // Records before the window (beyond the bound, or of a crash before their
            // compaction ran) are of no use any more.
            self.compact_history(oldest)?;
        }
        tracing::info!(rev, oldest, events = snap.history.len(), "store loaded");
        Ok(snap)
    }

    /// The newest contiguous run of history records ending at the snapshot's revision.
    fn load_history(
        &self,
        snap: &Snapshot,
        capacity: usize,
        cutoff_ms: Option<i64>,
        stale: &mut Vec<(Rev, i64, Arc<Event>)>,
    ) -> Result<History, StoreError> {
        let mut raw: Vec<(Rev, Box<[u8]>)> = Vec::new();
        let mut expect = snap.rev;
        let from = history_key(snap.rev);
        self.db.scan_back_from(&from, |k, v| {
            if expect == 0 || raw.len() >= capacity || !k.starts_with(HISTORY_PREFIX) {
                return Ok(false);
            }
            if rev_of_history_key(k) != Some(expect) {
                return Ok(false);
            }
            let Some(rec) = Record::decode(v) else {
                tracing::warn!(
                    rev = expect,
                    "unreadable history record; history starts after it"
                );
                return Ok(false);
            };
            if cutoff_ms.is_some_and(|c| rec.at_ms < c) {
                return Ok(false);
            }
            raw.push((expect, v.into()));
            expect -= 1;
            Ok(true)
        })?;
        raw.reverse();
        let records: Vec<(Rev, Record<'_>)> = raw
            .iter()
            .filter_map(|(rev, v)| Some((*rev, Record::decode(v)?)))
            .collect();
        // Newest first: what a write stored is the previous state of the key's next
        // change (that record carries it), or, without one, the key's current state. So
        // a record holds only the state it replaced, and each version is decoded once and
        // shared by the two events it belongs to.
        let mut replaced: HashMap<&str, Arc<Value>> = HashMap::new();
        let mut events = Vec::with_capacity(records.len());
        let mut oldest = expect;
        for (rev, rec) in records.iter().rev() {
            let key = rec.key;
            let opened = match rec.prev.map(|b| self.open_value(key, b)).transpose() {
                Ok(o) => o,
                Err(e) => {
                    tracing::warn!(rev, error = %e, "unreadable history record; history starts after it");
                    oldest = *rev;
                    break;
                }
            };
            let resealed = opened.as_ref().is_some_and(|(_, stale)| *stale);
            let prev = match opened.map(|(b, _)| serde_json::from_slice::<Value>(&b)) {
                None => None,
                Some(Ok(v)) => Some(Arc::new(v)),
                Some(Err(e)) => {
                    tracing::warn!(rev, error = %e, "unreadable history record; history starts after it");
                    oldest = *rev;
                    break;
                }
            };
            let object = match (rec.kind, &prev) {
                // The state it deleted, at the deletion's revision.
                (EventKind::Deleted, Some(p)) => {
                    let mut gone = (**p).clone();
                    meta::set_resource_version(&mut gone, *rev);
                    Some(Arc::new(gone))
                }
                (EventKind::Deleted, None) => None,
                _ => replaced.remove(key).or_else(|| {
                    snap.objects
                        .get(key)
                        .filter(|o| o.rev == *rev)
                        .map(|o| o.value.clone())
                }),
            };
            let Some(object) = object else {
                tracing::warn!(
                    rev,
                    key,
                    "history record without its state; history starts after it"
                );
                oldest = *rev;
                break;
            };
            if let Some(p) = &prev {
                replaced.insert(key, p.clone());
            }
            let event = Arc::new(Event {
                rev: *rev,
                kind: rec.kind,
                key: key.to_string(),
                object,
                prev,
            });
            if resealed {
                stale.push((*rev, rec.at_ms, event.clone()));
            }
            events.push((rec.at_ms, event));
        }
        events.reverse();
        Ok(History::loaded(oldest, events))
    }

    /// Delete the history records up to and including `rev`. Not synced: records that
    /// outlive a crash are compacted again at the next start.
    pub fn compact_history(&self, rev: Rev) -> Result<(), StoreError> {
        let mut batch = Batch::default();
        batch.delete_range(history_key(0), history_key(rev.saturating_add(1)));
        self.db.write(batch, false)
    }

    /// Write again, with the current key, the objects and history records read with
    /// another one (a key rotation), in one synced batch, so the old key can go.
    fn reseal(
        &self,
        snap: &Snapshot,
        objects: &[String],
        history: &[(Rev, i64, Arc<Event>)],
    ) -> Result<(), StoreError> {
        if objects.is_empty() && history.is_empty() {
            return Ok(());
        }
        let json = |key: &str, v: &Value| {
            serde_json::to_vec(v).map_err(|e| StoreError::Corrupt {
                key: key.to_string(),
                detail: e.to_string(),
            })
        };
        let mut batch = Batch::default();
        for key in objects {
            if let Some(obj) = snap.objects.get(key) {
                let mut k = OBJECT_PREFIX.to_vec();
                k.extend_from_slice(key.as_bytes());
                batch.put(k, self.seal(key, json(key, &obj.value)?)?);
            }
        }
        for (rev, at_ms, event) in history {
            let prev = match &event.prev {
                Some(p) => Some(self.seal(&event.key, json(&event.key, p)?)?),
                None => None,
            };
            let record = Record {
                kind: event.kind,
                at_ms: *at_ms,
                key: &event.key,
                prev: prev.as_deref(),
            };
            batch.put(history_key(*rev), record.encode());
        }
        self.db.write(batch, true)?;
        tracing::info!(
            objects = objects.len(),
            history = history.len(),
            "rewrote encrypted objects with the current key"
        );
        Ok(())
    }

    /// Every stored object and the last committed revision; the keys of objects sealed
    /// with a key other than the current one go to `stale`.
    fn load_objects(
        &self,
        stale: &mut Vec<String>,
    ) -> Result<(Rev, BTreeMap<String, Object>), StoreError> {
        let rev = match self.db.get(REV_KEY)? {
            Some(bytes) => parse_rev(&bytes)?,
            None => 0,
        };
        let mut objects = BTreeMap::new();
        self.db.scan_prefix(OBJECT_PREFIX, |k, v| {
            let key = String::from_utf8_lossy(&k[OBJECT_PREFIX.len()..]).into_owned();
            let (json, resealed) = self.open_value(&key, v)?;
            if resealed {
                stale.push(key.clone());
            }
            let value: Value = serde_json::from_slice(&json).map_err(|e| StoreError::Corrupt {
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
            Ok(true)
        })?;
        Ok((rev, objects))
    }

    fn commit(&self, writes: &[PendingWrite]) -> Result<(), StoreError> {
        let mut batch = Batch::default();
        let mut last = 0;
        let at_ms = now_ms();
        let encode = |w: &PendingWrite, v: &Value| {
            let json = serde_json::to_vec(v).map_err(|e| StoreError::Corrupt {
                key: w.key.clone(),
                detail: e.to_string(),
            })?;
            self.seal(&w.key, json)
        };
        for w in writes {
            let mut key = OBJECT_PREFIX.to_vec();
            key.extend_from_slice(w.key.as_bytes());
            match &w.new {
                Some(obj) => batch.put(key, encode(w, &obj.value)?),
                None => batch.delete(key),
            }
            // The record holds only the state the write replaced (none for a create): the
            // state it wrote is in the key's next record, or in `o/`.
            let prev = match &w.prev {
                Some(p) if w.kind != EventKind::Added => Some(encode(w, &p.value)?),
                _ => None,
            };
            let record = Record {
                kind: w.kind,
                at_ms,
                key: &w.key,
                prev: prev.as_deref(),
            };
            batch.put(history_key(w.rev), record.encode());
            last = last.max(w.rev);
        }
        batch.put(REV_KEY, last.to_string().into_bytes());
        self.db.write(batch, true)
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn history_key(rev: Rev) -> [u8; 10] {
    let mut k = [0u8; 10];
    k[..2].copy_from_slice(HISTORY_PREFIX);
    k[2..].copy_from_slice(&rev.to_be_bytes());
    k
}

fn rev_of_history_key(k: &[u8]) -> Option<Rev> {
    let bytes: [u8; 8] = k.strip_prefix(HISTORY_PREFIX)?.try_into().ok()?;
    Some(Rev::from_be_bytes(bytes))
}

/// One history record: `[version, kind, at_ms: i64 LE, (len: u32 LE, bytes) for the key
/// and for the state the write replaced]`, an empty state meaning none.
#[derive(Debug, PartialEq)]
struct Record<'a> {
    kind: EventKind,
    at_ms: i64,
    key: &'a str,
    prev: Option<&'a [u8]>,
}

impl<'a> Record<'a> {
    fn encode(&self) -> Vec<u8> {
        let len = |b: Option<&[u8]>| b.map_or(0, <[u8]>::len);
        let mut out = Vec::with_capacity(18 + self.key.len() + len(self.prev));
        out.push(RECORD_VERSION);
        out.push(match self.kind {
            EventKind::Added => b'A',
            EventKind::Modified => b'M',
            EventKind::Deleted => b'D',
        });
        out.extend_from_slice(&self.at_ms.to_le_bytes());
        for part in [Some(self.key.as_bytes()), self.prev] {
            let part = part.unwrap_or_default();
            out.extend_from_slice(&(part.len() as u32).to_le_bytes());
            out.extend_from_slice(part);
        }
        out
    }

    /// `None` for a record this version cannot read.
    fn decode(bytes: &'a [u8]) -> Option<Self> {
        let (&version, rest) = bytes.split_first()?;
        if version != RECORD_VERSION {
            return None;
        }
        let (&kind, rest) = rest.split_first()?;
        let kind = match kind {
            b'A' => EventKind::Added,
            b'M' => EventKind::Modified,
            b'D' => EventKind::Deleted,
            _ => return None,
        };
        let (at, mut rest) = rest.split_at_checked(8)?;
        let at_ms = i64::from_le_bytes(at.try_into().ok()?);
        let mut parts = [&[][..]; 2];
        for part in &mut parts {
            let (len, tail) = rest.split_at_checked(4)?;
            let len = u32::from_le_bytes(len.try_into().ok()?) as usize;
            let (bytes, tail) = tail.split_at_checked(len)?;
            *part = bytes;
            rest = tail;
        }
        let some = |b: &'a [u8]| (!b.is_empty()).then_some(b);
        Some(Record {
            kind,
            at_ms,
            key: std::str::from_utf8(parts[0]).ok()?,
            prev: some(parts[1]),
        })
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

/// The bytes to store for `json`, the value of store key `key` (on RocksDB and in etcd).
pub(super) fn seal(
    encryption: Option<&Transformer>,
    key: &str,
    json: Vec<u8>,
) -> Result<Vec<u8>, StoreError> {
    match encryption {
        Some(t) if Transformer::applies_to(key) => {
            t.encrypt(&json).map_err(|e| StoreError::Corrupt {
                key: key.to_string(),
                detail: e.to_string(),
            })
        }
        _ => Ok(json),
    }
}

/// The JSON of a stored value, and whether it was sealed with a key other than the one
/// writes use now (so it is to be written again).
pub(super) fn open_value<'v>(
    encryption: Option<&Transformer>,
    key: &str,
    stored: &'v [u8],
) -> Result<(std::borrow::Cow<'v, [u8]>, bool), StoreError> {
    match encryption {
        Some(t) if Transformer::applies_to(key) => {
            let d = t.decrypt(stored).map_err(|e| StoreError::Corrupt {
                key: key.to_string(),
                detail: e.to_string(),
            })?;
            Ok((std::borrow::Cow::Owned(d.plaintext), d.stale))
        }
        _ => Ok((std::borrow::Cow::Borrowed(stored), false)),
    }
}

pub enum CommitMsg {
    Write(PendingWrite),
    /// Delete the history records up to this revision (after the writes sent before it).
    CompactHistory(Rev),
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
        let mut compact = None;
        let mut next = Some(first);
        while let Some(msg) = next {
            match msg {
                CommitMsg::Write(w) => writes.push(w),
                CommitMsg::Barrier(b) => barriers.push(b),
                CommitMsg::CompactHistory(rev) => compact = compact.max(Some(rev)),
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
        if let Some(rev) = compact {
            if let Err(e) = persist.compact_history(rev) {
                tracing::warn!(error = %e, rev, "history compaction failed; retried later");
            }
        }
        for b in barriers {
            let _ = b.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_history_record_reads_back_as_written() {
        let rec = Record {
            kind: EventKind::Modified,
            at_ms: 1_700_000_000_123,
            key: "pods/default/web",
            prev: Some(br#"{"a":0}"#),
        };
        assert_eq!(Record::decode(&rec.encode()), Some(rec));
        let created = Record {
            kind: EventKind::Added,
            at_ms: -1,
            key: "nodes//n",
            prev: None,
        };
        assert_eq!(Record::decode(&created.encode()), Some(created));
    }

    #[test]
    fn a_truncated_or_foreign_record_is_unreadable_not_a_panic() {
        let rec = Record {
            kind: EventKind::Deleted,
            at_ms: 5,
            key: "k",
            prev: Some(b"{}"),
        }
        .encode();
        for cut in 0..rec.len() {
            assert_eq!(Record::decode(&rec[..cut]), None, "cut at {cut}");
        }
        let mut foreign = rec.clone();
        foreign[0] = 9;
        assert_eq!(Record::decode(&foreign), None);
    }

    #[test]
    fn history_keys_sort_by_revision() {
        assert!(history_key(255) < history_key(256));
        assert_eq!(rev_of_history_key(&history_key(42)), Some(42));
        assert_eq!(rev_of_history_key(b"o/pods"), None);
    }
}
