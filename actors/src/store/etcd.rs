//! The etcd v3 datastore (`--datastore-endpoint`), as kube-apiserver uses it: etcd's
//! revision is the resourceVersion, every write is one transaction comparing the key's
//! `mod_revision` with the state the write was decided on, and each server's in-memory
//! snapshot (kube-apiserver's watch cache) is fed by one etcd watch from its revision, so
//! it sees every server's writes in revision order.
//!
//! Keys are `<prefix>/<store key>` (`/registry/pods/default/web`), so several clusters can
//! share one etcd under different prefixes; the key `<prefix>` itself (outside the object
//! range) names the cluster that owns them. Values are the objects' JSON without their
//! `resourceVersion` (it is the key's `mod_revision`), Secrets sealed as on RocksDB.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, Identity,
    KeyValue, PutOptions, TlsOptions, Txn, TxnOp, TxnOpResponse, WatchOptions,
};
use serde_json::Value;

use super::encryption::Transformer;
use super::history::History;
use super::{Event, EventKind, Object, Rev, Snapshot, StoreError};
use crate::api::meta;

/// Where the datastore is and how to reach it (k3s' `--datastore-*` flags).
#[derive(Debug, Clone)]
pub struct EtcdConfig {
    /// `http://host:2379` or `https://host:2379`, one per member.
    pub endpoints: Vec<String>,
    /// Keys live under `<prefix>/`.
    pub prefix: String,
    /// The CA that signed the members' serving certificates (for `https://`).
    pub ca_file: Option<PathBuf>,
    /// A client certificate and its key, when the members ask for one.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// How long a start waits for the datastore before it gives up.
    pub connect_timeout: Duration,
}

impl EtcdConfig {
    pub fn new(endpoints: Vec<String>) -> Self {
        EtcdConfig {
            endpoints,
            prefix: "/registry".into(),
            ca_file: None,
            cert_file: None,
            key_file: None,
            connect_timeout: Duration::from_secs(5),
        }
    }
}

/// One write as a transaction: what the key must be at, and what to do.
pub enum Change {
    /// The key must not exist.
    Create {
        key: String,
        object: Value,
    },
    /// The key must be at `at` (its revision in the snapshot the write was decided on).
    Update {
        key: String,
        object: Value,
        at: Rev,
    },
    Delete {
        key: String,
        at: Rev,
    },
}

impl Change {
    pub fn key(&self) -> &str {
        match self {
            Change::Create { key, .. }
            | Change::Update { key, .. }
            | Change::Delete { key, .. } => key,
        }
    }
}

/// Why a transaction's comparison failed: the key as etcd holds it now.
#[derive(Debug)]
pub enum Refused {
    Exists,
    Missing,
    At(Rev),
}

/// One change the watch delivered, decoded.
pub struct Observed {
    pub rev: Rev,
    pub kind: EventKind,
    pub key: String,
    /// The new state (`None` for a delete).
    pub new: Option<Object>,
}

/// A connected datastore. Cheap to clone (the client shares one channel).
#[derive(Clone)]
pub struct Etcd {
    client: Client,
    /// `<prefix>/`, with the trailing slash.
    objects: String,
    /// `<prefix>`: holds the identity of the cluster whose objects these are.
    identity_key: String,
    encryption: Option<Arc<Transformer>>,
    endpoints: String,
    members: usize,
    /// Events are written with an etcd lease of this TTL, and etcd deletes them when it
    /// runs out (kube-apiserver's `--event-ttl`).
    event_ttl: Option<Duration>,
    /// The lease Events written now share, and when it was granted.
    event_lease: Arc<tokio::sync::Mutex<Option<(i64, std::time::Instant)>>>,
}

/// How long one lease serves the Events written: 5% of the TTL, at most a minute, as
/// kube-apiserver's lease manager (granted for the TTL plus this, so none goes early).
fn lease_reuse(ttl: Duration) -> Duration {
    (ttl / 20).min(Duration::from_secs(60))
}

/// Whether a request never reached a member (its connection could not be made: the
/// member is down), so that sending it again, which the client balances to another
/// member, cannot apply it twice.
fn not_sent(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::GRpcStatus(s) => {
            s.code() == tonic::Code::Unavailable && s.message().contains("connect")
        }
        etcd_client::Error::TransportError(_) => true,
        _ => false,
    }
}

/// Objects read per range request while loading (keeps each response small).
const LOAD_PAGE: i64 = 2000;

fn unreachable(endpoints: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Datastore(format!("the datastore at {endpoints} is unreachable: {e}"))
}

impl Etcd {
    /// Connect, and check within `connect_timeout` that a member answers.
    pub async fn connect(
        cfg: &EtcdConfig,
        encryption: Option<Arc<Transformer>>,
    ) -> Result<Etcd, StoreError> {
        let endpoints = cfg.endpoints.join(",");
        if cfg.endpoints.is_empty() {
            return Err(StoreError::Io("no datastore endpoint given".into()));
        }
        let mut options = ConnectOptions::new()
            .with_connect_timeout(cfg.connect_timeout)
            .with_keep_alive(Duration::from_secs(5), Duration::from_secs(5))
            .with_keep_alive_while_idle(true)
            // A member cut off from its quorum answers "no leader" instead of stale data.
            .with_require_leader(true);
        if cfg.endpoints.iter().any(|e| e.starts_with("https://")) {
            options = options.with_tls(tls_options(cfg)?);
        }
        let prefix = cfg.prefix.trim_end_matches('/');
        let prefix = if prefix.starts_with('/') {
            prefix.to_string()
        } else {
            format!("/{prefix}")
        };
        let connect = Client::connect(cfg.endpoints.clone(), Some(options));
        let client = tokio::time::timeout(cfg.connect_timeout, connect)
            .await
            .map_err(|_| unreachable(&endpoints, "no answer"))?
            .map_err(|e| unreachable(&endpoints, e))?;
        let etcd = Etcd {
            client,
            objects: format!("{prefix}/"),
            identity_key: prefix,
            encryption,
            endpoints: endpoints.clone(),
            members: cfg.endpoints.len(),
            event_ttl: None,
            event_lease: Arc::default(),
        };
        // The channel connects lazily: one read proves a member (with a leader) answers.
        tokio::time::timeout(cfg.connect_timeout, etcd.current_revision())
            .await
            .map_err(|_| unreachable(&endpoints, "no answer"))??;
        Ok(etcd)
    }

    pub fn endpoints(&self) -> &str {
        &self.endpoints
    }

    /// Write Events with leases of `ttl` (`None`: Events stay).
    pub fn with_event_ttl(mut self, ttl: Option<Duration>) -> Self {
        self.event_ttl = ttl;
        self
    }

    /// The put options of a write of `key`: Events carry the current event lease.
    async fn put_options(&self, key: &str) -> Result<Option<PutOptions>, StoreError> {
        let Some(ttl) = self
            .event_ttl
            .filter(|_| key.starts_with(super::ttl::EVENTS_PREFIX))
        else {
            return Ok(None);
        };
        let reuse = lease_reuse(ttl);
        let mut held = self.event_lease.lock().await;
        if let Some((id, granted)) = *held {
            if granted.elapsed() < reuse {
                return Ok(Some(PutOptions::new().with_lease(id)));
            }
        }
        let seconds = (ttl + reuse).as_secs().max(1) as i64;
        let granted = self
            .client
            .lease_client()
            .grant(seconds, None)
            .await
            .map_err(|e| self.err(e))?;
        *held = Some((granted.id(), std::time::Instant::now()));
        Ok(Some(PutOptions::new().with_lease(granted.id())))
    }

    fn err(&self, e: etcd_client::Error) -> StoreError {
        unreachable(&self.endpoints, e)
    }

    /// Run a key-value request, again on another member while the one it went to is
    /// down (tried once per member, and once more).
    async fn kv<T, F, Fut>(&self, mut request: F) -> Result<T, StoreError>
    where
        F: FnMut(etcd_client::KvClient) -> Fut,
        Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
    {
        let mut tries = self.members + 1;
        loop {
            match request(self.client.kv_client()).await {
                Err(e) if not_sent(&e) && tries > 1 => {
                    tries -= 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                other => return other.map_err(|e| self.err(e)),
            }
        }
    }

    fn full_key(&self, key: &str) -> Vec<u8> {
        format!("{}{key}", self.objects).into_bytes()
    }

    fn store_key<'k>(&self, full: &'k [u8]) -> Option<&'k str> {
        std::str::from_utf8(full)
            .ok()?
            .strip_prefix(self.objects.as_str())
    }

    /// The bytes kept for `object` (its revision is etcd's, not part of the value).
    fn seal(&self, key: &str, mut object: Value) -> Result<Vec<u8>, StoreError> {
        if let Some(m) = object.get_mut("metadata").and_then(|m| m.as_object_mut()) {
            m.remove("resourceVersion");
        }
        let json = serde_json::to_vec(&object).map_err(|e| StoreError::Corrupt {
            key: key.to_string(),
            detail: e.to_string(),
        })?;
        super::persist::seal(self.encryption.as_deref(), key, json)
    }

    /// The object a key-value holds, at its `mod_revision`.
    fn open(&self, key: &str, kv: &KeyValue) -> Result<Object, StoreError> {
        let (json, _) = super::persist::open_value(self.encryption.as_deref(), key, kv.value())?;
        let mut value: Value = serde_json::from_slice(&json).map_err(|e| StoreError::Corrupt {
            key: key.to_string(),
            detail: e.to_string(),
        })?;
        let rev = kv.mod_revision() as Rev;
        meta::set_resource_version(&mut value, rev);
        Ok(Object {
            rev,
            value: Arc::new(value),
        })
    }

    /// One change a watch delivered, decoded (`None` for a key outside our objects).
    fn observe(&self, ev: &etcd_client::Event) -> Result<Option<Observed>, StoreError> {
        let Some(kv) = ev.kv() else { return Ok(None) };
        let Some(key) = self.store_key(kv.key()) else {
            return Ok(None);
        };
        let (kind, new) = match ev.event_type() {
            EventType::Delete => (EventKind::Deleted, None),
            EventType::Put if kv.create_revision() == kv.mod_revision() => {
                (EventKind::Added, Some(self.open(key, kv)?))
            }
            EventType::Put => (EventKind::Modified, Some(self.open(key, kv)?)),
        };
        Ok(Some(Observed {
            rev: kv.mod_revision().max(0) as Rev,
            kind,
            key: key.to_string(),
            new,
        }))
    }

    /// etcd's current revision (a linearizable read: it has a leader's agreement).
    pub async fn current_revision(&self) -> Result<Rev, StoreError> {
        let key = self.identity_key.clone();
        let resp = self
            .kv(|mut kv| {
                let key = key.clone();
                async move { kv.get(key, Some(GetOptions::new().with_count_only())).await }
            })
            .await?;
        Ok(resp.header().map(|h| h.revision()).unwrap_or(0).max(0) as Rev)
    }

    /// Every object, read page by page at one revision (the latest, or `at` while etcd
    /// still has it): the snapshot a server starts from.
    pub async fn load(&self, at: Option<Rev>) -> Result<Snapshot, StoreError> {
        let end = format!("{}\u{10FFFF}", self.objects).into_bytes();
        let mut from = self.objects.clone().into_bytes();
        let mut at: Option<i64> = at.map(|r| r as i64);
        let mut objects = BTreeMap::new();
        loop {
            let mut options = GetOptions::new()
                .with_range(end.clone())
                .with_limit(LOAD_PAGE);
            if let Some(rev) = at {
                options = options.with_revision(rev);
            }
            let resp = self
                .kv(|mut kv| {
                    let (from, options) = (from.clone(), options.clone());
                    async move { kv.get(from, Some(options)).await }
                })
                .await?;
            let rev = resp.header().map(|h| h.revision()).unwrap_or(0);
            at.get_or_insert(rev);
            for item in resp.kvs() {
                if let Some(key) = self.store_key(item.key()) {
                    objects.insert(key.to_string(), self.open(key, item)?);
                }
            }
            match resp.kvs().last() {
                Some(last) if resp.more() => {
                    from = last.key().to_vec();
                    from.push(0);
                }
                _ => break,
            }
        }
        Ok(Snapshot::new(at.unwrap_or(0).max(0) as Rev, objects))
    }

    /// Claim the datastore for the cluster `id` (its CA's fingerprint), or refuse one that
    /// holds another cluster's objects.
    pub async fn claim(&self, id: &str) -> Result<(), StoreError> {
        let key = self.identity_key.clone();
        let txn = Txn::new()
            .when([Compare::version(key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key.clone(), id, None)])
            .or_else([TxnOp::get(key.clone(), None)]);
        let resp = self
            .kv(|mut kv| {
                let txn = txn.clone();
                async move { kv.txn(txn).await }
            })
            .await?;
        if resp.succeeded() {
            return Ok(());
        }
        let held = first_kv(&resp).map(|kv| kv.value().to_vec());
        match held {
            Some(v) if v == id.as_bytes() => Ok(()),
            Some(v) => Err(StoreError::Io(format!(
                "the datastore at {} (prefix {}) holds another cluster's data (its CA is {}, ours is {id}); \
                 use that cluster's pki/ directory or another --datastore-prefix",
                self.endpoints,
                self.identity_key,
                String::from_utf8_lossy(&v)
            ))),
            None => Ok(()),
        }
    }

    /// Apply one change if the key is where the writer saw it: `Ok(Ok(rev))` with the
    /// revision etcd gave it, `Ok(Err(_))` when the comparison failed.
    pub async fn commit(&self, change: Change) -> Result<Result<Rev, Refused>, StoreError> {
        let full = self.full_key(change.key());
        let created = matches!(change, Change::Create { .. });
        let put = self.put_options(change.key()).await?;
        let (when, then) = match change {
            Change::Create { key, object } => (
                Compare::version(full.clone(), CompareOp::Equal, 0),
                TxnOp::put(full.clone(), self.seal(&key, object)?, put),
            ),
            Change::Update { key, object, at } => (
                Compare::mod_revision(full.clone(), CompareOp::Equal, at as i64),
                TxnOp::put(full.clone(), self.seal(&key, object)?, put),
            ),
            Change::Delete { at, .. } => (
                Compare::mod_revision(full.clone(), CompareOp::Equal, at as i64),
                TxnOp::delete(full.clone(), None),
            ),
        };
        let txn = Txn::new()
            .when([when])
            .and_then([then])
            .or_else([TxnOp::get(full, None)]);
        let resp = self
            .kv(|mut kv| {
                let txn = txn.clone();
                async move { kv.txn(txn).await }
            })
            .await?;
        if resp.succeeded() {
            let rev = resp.header().map(|h| h.revision()).unwrap_or(0).max(0) as Rev;
            return Ok(Ok(rev));
        }
        Ok(Err(match first_kv(&resp) {
            Some(_) if created => Refused::Exists,
            Some(kv) => Refused::At(kv.mod_revision() as Rev),
            None => Refused::Missing,
        }))
    }

    /// The changes of the last `keep` revisions up to `upto` that etcd still has, as the
    /// watch history of a snapshot loaded at `upto`: a restarted server resumes its
    /// clients' watches (and serves lists at those revisions) as a RocksDB one does.
    pub async fn history(&self, upto: Rev, keep: usize) -> Result<History, StoreError> {
        let mut after = upto.saturating_sub(keep as Rev);
        let end = format!("{}\u{10FFFF}", self.objects).into_bytes();
        let now_ms = chrono::Utc::now().timestamp_millis();
        'from: loop {
            let options = WatchOptions::new()
                .with_range(end.clone())
                .with_start_revision(after as i64 + 1)
                .with_prev_key();
            let mut watch = self.client.watch_client();
            let (mut requests, mut responses) = watch
                .watch(self.objects.clone(), Some(options))
                .await
                .map_err(|e| self.err(e))?
                .split();
            let mut events = Vec::new();
            loop {
                // etcd marks progress only once the watch has sent all it had: ask until
                // it does.
                let message =
                    match tokio::time::timeout(Duration::from_millis(200), responses.message())
                        .await
                    {
                        Err(_) => {
                            requests.request_progress().await.map_err(|e| self.err(e))?;
                            continue;
                        }
                        Ok(m) => m.map_err(|e| self.err(e))?,
                    };
                let Some(resp) = message else {
                    return Err(StoreError::Datastore(
                        "the datastore ended the watch".into(),
                    ));
                };
                if resp.canceled() {
                    if resp.compact_revision() > 0 && (resp.compact_revision() as Rev) > after {
                        // Compacted: keep what is left.
                        after = resp.compact_revision() as Rev;
                        continue 'from;
                    }
                    return Ok(History::starting_at(upto));
                }
                let reached = resp.header().map(|h| h.revision()).unwrap_or(0).max(0) as Rev;
                for ev in resp.events() {
                    let Some(seen) = self.observe(ev)? else {
                        continue;
                    };
                    if seen.rev > upto {
                        return Ok(History::loaded(after, events));
                    }
                    let prev = match ev.prev_kv() {
                        Some(p) => Some(self.open(&seen.key, p)?.value),
                        None => None,
                    };
                    let object = match seen.new {
                        Some(new) => new.value,
                        None => {
                            let mut last = prev.as_deref().cloned().unwrap_or(Value::Null);
                            if last.is_object() {
                                meta::set_resource_version(&mut last, seen.rev);
                            }
                            Arc::new(last)
                        }
                    };
                    let event = Event {
                        rev: seen.rev,
                        kind: seen.kind,
                        key: seen.key,
                        object,
                        prev,
                    };
                    events.push((now_ms, Arc::new(event)));
                }
                if resp.events().is_empty() && !resp.created() && reached >= upto {
                    return Ok(History::loaded(after, events));
                }
            }
        }
    }

    /// Every change after `after`, in revision order, as etcd's watch delivers them.
    pub async fn watch(&self, after: Rev) -> Result<Feed, StoreError> {
        let end = format!("{}\u{10FFFF}", self.objects).into_bytes();
        let options = WatchOptions::new()
            .with_range(end)
            .with_start_revision(after as i64 + 1)
            .with_progress_notify();
        let mut tries = self.members + 1;
        let stream = loop {
            let mut watch = self.client.watch_client();
            match watch
                .watch(self.objects.clone(), Some(options.clone()))
                .await
            {
                Err(e) if not_sent(&e) && tries > 1 => {
                    tries -= 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                other => break other.map_err(|e| self.err(e))?,
            }
        };
        let (requests, responses) = stream.split();
        Ok(Feed {
            etcd: self.clone(),
            requests,
            responses,
        })
    }

    /// Forget etcd's history up to `rev` (kube-apiserver compacts every 5 minutes).
    pub async fn compact(&self, rev: Rev) -> Result<(), StoreError> {
        let result = self
            .kv(|mut kv| async move {
                match kv.compact(rev as i64, None).await {
                    // Compacted already (by another server): nothing to do.
                    Err(etcd_client::Error::GRpcStatus(s)) if s.message().contains("compacted") => {
                        Ok(())
                    }
                    other => other.map(|_| ()),
                }
            })
            .await;
        result
    }
}

fn first_kv(resp: &etcd_client::TxnResponse) -> Option<KeyValue> {
    resp.op_responses().into_iter().find_map(|r| match r {
        TxnOpResponse::Get(mut g) => g.take_kvs().into_iter().next(),
        _ => None,
    })
}

fn tls_options(cfg: &EtcdConfig) -> Result<TlsOptions, StoreError> {
    let read = |p: &PathBuf| {
        std::fs::read(p).map_err(|e| StoreError::Io(format!("cannot read {}: {e}", p.display())))
    };
    let mut tls = TlsOptions::new();
    if let Some(ca) = &cfg.ca_file {
        tls = tls.ca_certificate(Certificate::from_pem(read(ca)?));
    }
    match (&cfg.cert_file, &cfg.key_file) {
        (Some(cert), Some(key)) => {
            tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?));
        }
        (None, None) => {}
        _ => {
            return Err(StoreError::Io(
                "--datastore-certfile and --datastore-keyfile go together".into(),
            ))
        }
    }
    Ok(tls)
}

/// One etcd watch from a revision: the changes in order, and progress marks.
pub struct Feed {
    etcd: Etcd,
    requests: etcd_client::WatchRequestSender,
    responses: etcd_client::WatchResponseStream,
}

/// What one message of the watch brought.
pub enum FeedMessage {
    Changes(Vec<Observed>),
    /// Nothing changed up to this revision (a progress notification).
    Progress(Rev),
}

impl Feed {
    /// The next batch, or an error that ends the feed (the server reloads and watches
    /// again: a compacted revision, a lost connection).
    /// A notification of `progress` asks etcd for a progress mark.
    pub async fn next(
        &mut self,
        progress: &tokio::sync::Notify,
    ) -> Result<FeedMessage, StoreError> {
        loop {
            let message = tokio::select! {
                m = self.responses.message() => m,
                _ = progress.notified() => {
                    self.requests.request_progress().await.map_err(|e| self.etcd.err(e))?;
                    continue;
                }
            };
            let resp = message
                .map_err(|e| self.etcd.err(e))?
                .ok_or_else(|| StoreError::Unavailable("the datastore ended the watch".into()))?;
            if resp.canceled() {
                return Err(StoreError::Unavailable(format!(
                    "the datastore cancelled the watch (compacted at {}): {}",
                    resp.compact_revision(),
                    resp.cancel_reason()
                )));
            }
            if resp.events().is_empty() {
                if resp.created() {
                    continue;
                }
                let rev = resp.header().map(|h| h.revision()).unwrap_or(0).max(0) as Rev;
                return Ok(FeedMessage::Progress(rev));
            }
            let mut changes = Vec::with_capacity(resp.events().len());
            for ev in resp.events() {
                changes.extend(self.etcd.observe(ev)?);
            }
            return Ok(FeedMessage::Changes(changes));
        }
    }
}
