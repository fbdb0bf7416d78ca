//! A shared informer: one list-then-watch loop (client-go's reflector) keeping one
//! [`Cache`] of a resource current, and telling every subscriber about every change.
//!
//! A watch the server ends is resumed from the last revision seen; one that expired (410)
//! starts over with a fresh list, whose differences from the cache are reported as
//! changes, so subscribers never miss a delete that happened while the watch was down.
//!
//! Subscribing is atomic with the changes: a new subscriber first gets every cached object
//! as Added (then [`Notification::Synced`] once the first list is in), then every change
//! after those, with nothing missed and nothing twice. That is also how an actor restarted
//! by its supervisor catches up: it subscribes again and is told about everything.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Poll;
use std::time::Duration;

use actix::ArbiterHandle;
use futures::future::{AbortHandle, Abortable};
use futures::{Stream, StreamExt};
use serde_json::Value;
use tokio::sync::mpsc;
use tracing::Instrument;

use super::cache::{key_of, Cache, Change, Indexer};
use super::guard;
use crate::api::{meta, ApiError};
use crate::client::{ApiClient, EventKind, ListParams};

const FIRST_RETRY: Duration = Duration::from_millis(100);
const MAX_RETRY: Duration = Duration::from_secs(5);

/// What to list and watch: a resource, across all namespaces, optionally narrowed by
/// selectors (a remote kubelet's `spec.nodeName=<node>`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct InformerSpec {
    pub resource: &'static str,
    pub label_selector: Option<String>,
    pub field_selector: Option<String>,
}

impl InformerSpec {
    /// Every object of the resource.
    pub fn all(resource: &'static str) -> Self {
        InformerSpec {
            resource,
            label_selector: None,
            field_selector: None,
        }
    }

    /// The objects of the resource matching a field selector.
    pub fn fields(resource: &'static str, selector: impl Into<String>) -> Self {
        InformerSpec {
            field_selector: Some(selector.into()),
            ..InformerSpec::all(resource)
        }
    }

    fn params(&self) -> ListParams {
        ListParams {
            label_selector: self.label_selector.clone(),
            field_selector: self.field_selector.clone(),
        }
    }

    /// `pods`, or `pods?fieldSelector=spec.nodeName=n1` (for logs and stats).
    pub fn describe(&self) -> String {
        let mut out = self.resource.to_string();
        let mut sep = '?';
        for (name, value) in [
            ("labelSelector", &self.label_selector),
            ("fieldSelector", &self.field_selector),
        ] {
            if let Some(v) = value {
                out.push_str(&format!("{sep}{name}={v}"));
                sep = '&';
            }
        }
        out
    }
}

/// What a subscriber hears.
#[derive(Debug, Clone)]
pub enum Notification {
    Changed(Change),
    /// The first list is in the cache and every change of it was delivered before this:
    /// from here on the cache is complete (sent once per subscription).
    Synced,
}

/// A subscriber's stream of notifications. Dropping it unsubscribes.
pub struct Subscription {
    rx: mpsc::UnboundedReceiver<Notification>,
    /// Keeps the informer running for as long as someone listens.
    _informer: Arc<Informer>,
}

impl Stream for Subscription {
    type Item = Notification;

    fn poll_next(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<Option<Self::Item>> {
        self.get_mut().rx.poll_recv(cx)
    }
}

/// How an informer is doing, for tests and diagnostics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InformerStats {
    /// [`InformerSpec::describe`].
    pub spec: String,
    pub objects: usize,
    pub subscribers: usize,
    /// Lists made (the first, and one per expired watch or failure).
    pub lists: u64,
    /// Watches opened.
    pub watches: u64,
    pub synced: bool,
}

struct Subscriber {
    tx: mpsc::UnboundedSender<Notification>,
    synced_sent: bool,
}

/// State the informer shares with its running loop.
struct Shared {
    cache: Arc<Cache>,
    /// Held while the cache changes, so that a new subscriber's replay and the changes
    /// after it form one sequence.
    subscribers: Mutex<Vec<Subscriber>>,
    lists: AtomicU64,
    watches: AtomicU64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Vec<Subscriber>> {
        self.subscribers.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn send(subs: &mut Vec<Subscriber>, n: &Notification) {
        // A subscriber whose stream is gone (its actor stopped) is dropped here.
        subs.retain(|s| s.tx.send(n.clone()).is_ok());
    }

    /// Load a list into the cache and report what it changed, then `Synced` to whoever
    /// has not had it.
    fn replaced(&self, items: Vec<Arc<Value>>) {
        let mut subs = self.lock();
        for change in self.cache.replace(items) {
            Self::send(&mut subs, &Notification::Changed(change));
        }
        subs.retain_mut(|s| {
            if s.synced_sent {
                return true;
            }
            s.synced_sent = true;
            s.tx.send(Notification::Synced).is_ok()
        });
    }

    fn applied(&self, kind: EventKind, object: Arc<Value>) {
        let mut subs = self.lock();
        let old = self.cache.apply(kind, object.clone());
        Self::send(
            &mut subs,
            &Notification::Changed(Change { kind, object, old }),
        );
    }
}

/// One resource (and selector) listed and watched once for the whole process.
pub struct Informer {
    spec: InformerSpec,
    client: Arc<dyn ApiClient>,
    shared: Arc<Shared>,
    /// Where the loop runs (the current runtime when none).
    arbiter: Option<ArbiterHandle>,
    started: AtomicBool,
    abort: Mutex<Option<AbortHandle>>,
}

impl Informer {
    pub fn new(
        client: Arc<dyn ApiClient>,
        spec: InformerSpec,
        indexers: Vec<Indexer>,
        arbiter: Option<ArbiterHandle>,
    ) -> Self {
        Informer {
            spec,
            client,
            shared: Arc::new(Shared {
                cache: Arc::new(Cache::with_indexers(indexers)),
                subscribers: Mutex::new(Vec::new()),
                lists: AtomicU64::new(0),
                watches: AtomicU64::new(0),
            }),
            arbiter,
            started: AtomicBool::new(false),
            abort: Mutex::new(None),
        }
    }

    pub fn spec(&self) -> &InformerSpec {
        &self.spec
    }

    /// The cache (read it; only the informer writes it).
    pub fn cache(&self) -> &Arc<Cache> {
        &self.shared.cache
    }

    pub fn synced(&self) -> bool {
        self.shared.cache.synced()
    }

    /// Subscribe to the cache's contents and changes; starts the informer on first use.
    /// Must be called inside a Tokio runtime when the informer has no arbiter.
    pub fn subscribe(self: &Arc<Self>) -> Subscription {
        let (tx, rx) = mpsc::unbounded_channel();
        {
            let mut subs = self.shared.lock();
            for object in self.shared.cache.snapshot() {
                let added = Change {
                    kind: EventKind::Added,
                    object,
                    old: None,
                };
                let _ = tx.send(Notification::Changed(added));
            }
            let synced = self.shared.cache.synced();
            if synced {
                let _ = tx.send(Notification::Synced);
            }
            subs.push(Subscriber {
                tx,
                synced_sent: synced,
            });
        }
        self.start();
        Subscription {
            rx,
            _informer: self.clone(),
        }
    }

    pub fn stats(&self) -> InformerStats {
        InformerStats {
            spec: self.spec.describe(),
            objects: self.shared.cache.len(),
            subscribers: self
                .shared
                .lock()
                .iter()
                .filter(|s| !s.tx.is_closed())
                .count(),
            lists: self.shared.lists.load(Ordering::Relaxed),
            watches: self.shared.watches.load(Ordering::Relaxed),
            synced: self.synced(),
        }
    }

    /// Start the list/watch loop unless it runs already.
    pub fn start(&self) {
        if self.started.swap(true, Ordering::AcqRel) {
            return;
        }
        let reflector = Reflector {
            client: self.client.clone(),
            spec: self.spec.clone(),
            shared: self.shared.clone(),
        };
        let span = tracing::debug_span!("informer", resource = %self.spec.describe());
        let (handle, registration) = AbortHandle::new_pair();
        let fut = Abortable::new(reflector.run().instrument(span), registration);
        let fut = async move {
            let _ = fut.await;
        };
        *self.abort.lock().unwrap_or_else(|e| e.into_inner()) = Some(handle);
        match &self.arbiter {
            Some(arbiter) => {
                if !arbiter.spawn(fut) {
                    tracing::warn!(resource = %self.spec.describe(), "informer's arbiter is gone; informer not started");
                }
            }
            None => {
                tokio::spawn(fut);
            }
        }
    }
}

impl Drop for Informer {
    fn drop(&mut self) {
        if let Some(h) = self.abort.lock().unwrap_or_else(|e| e.into_inner()).take() {
            h.abort();
        }
    }
}

/// The loop: list, then watch from the list's revision, for ever.
struct Reflector {
    client: Arc<dyn ApiClient>,
    spec: InformerSpec,
    shared: Arc<Shared>,
}

/// Where the loop stands between attempts.
struct Progress {
    /// The revision to watch from; `None`: list first.
    resume: Option<u64>,
    retry: Duration,
}

impl Reflector {
    async fn run(self) {
        let mut progress = Progress {
            resume: None,
            retry: FIRST_RETRY,
        };
        loop {
            let outcome = guard::catch("informer", self.list_and_watch(&mut progress)).await;
            match outcome {
                Ok(Err(ApiError::Expired(reason))) => {
                    // Our revision is older than the server's history: start over.
                    tracing::debug!(reason = %reason, "watch expired; listing again");
                    progress.resume = None;
                    continue;
                }
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, retry_in = ?progress.retry, "informer retrying");
                }
                Ok(Ok(())) => {}
                Err(panicked) => {
                    tracing::error!(panic = %panicked.message, "informer panicked; listing again");
                    progress.resume = None;
                }
            }
            tokio::time::sleep(progress.retry).await;
            progress.retry = (progress.retry * 2).min(MAX_RETRY);
        }
    }

    async fn list_and_watch(&self, progress: &mut Progress) -> Result<(), ApiError> {
        let params = self.spec.params();
        let mut rev = match progress.resume {
            Some(rev) => rev,
            None => {
                self.shared.lists.fetch_add(1, Ordering::Relaxed);
                let list = self.client.list(self.spec.resource, None, &params).await?;
                tracing::debug!(
                    objects = list.items.len(),
                    revision = list.resource_version,
                    "listed"
                );
                self.shared.replaced(list.items);
                progress.resume = Some(list.resource_version);
                list.resource_version
            }
        };
        loop {
            self.shared.watches.fetch_add(1, Ordering::Relaxed);
            let mut events = self
                .client
                .watch(self.spec.resource, None, &params, rev)
                .await?;
            progress.retry = FIRST_RETRY;
            while let Some(ev) = events.next().await {
                let ev = ev?;
                if let Some(r) = meta::resource_version(&ev.object).and_then(|r| r.parse().ok()) {
                    rev = rev.max(r);
                    progress.resume = Some(rev);
                }
                tracing::trace!(kind = ev.kind.as_str(), object = %key_of(&ev.object), "observed");
                self.shared.applied(ev.kind, ev.object);
            }
            // The server ended the watch (timeout or restart): resume where we were.
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::{ObjectList, WatchEvent};
    use crate::runtime::testing::Scripted;
    use serde_json::json;

    fn pod(name: &str, rv: u64) -> Arc<Value> {
        Arc::new(json!({"metadata": {"name": name, "namespace": "default",
            "resourceVersion": rv.to_string()}}))
    }

    async fn next(sub: &mut Subscription) -> Notification {
        tokio::time::timeout(Duration::from_secs(5), sub.next())
            .await
            .expect("a notification in time")
            .expect("the subscription is open")
    }

    fn describe(n: &Notification) -> String {
        match n {
            Notification::Changed(c) => format!(
                "{} {}",
                c.kind.as_str(),
                meta::name(&c.object).unwrap_or_default()
            ),
            Notification::Synced => "SYNCED".into(),
        }
    }

    #[tokio::test]
    async fn an_expired_watch_is_followed_by_a_relist_that_reports_what_was_missed() {
        let client = Arc::new(Scripted::default());
        client.lists.lock().unwrap().extend([
            ObjectList {
                items: vec![pod("a", 5), pod("b", 6)],
                resource_version: 10,
            },
            // While the watch was down, a was deleted and c created.
            ObjectList {
                items: vec![pod("b", 6), pod("c", 40)],
                resource_version: 50,
            },
        ]);
        client.watches.lock().unwrap().extend([vec![
            Ok(WatchEvent {
                kind: EventKind::Modified,
                object: pod("b", 12),
            }),
            Err(ApiError::Expired("too old resource version: 12".into())),
        ]]);
        let informer = Arc::new(Informer::new(
            client.clone(),
            InformerSpec::all("pods"),
            Vec::new(),
            None,
        ));
        let mut sub = informer.subscribe();
        let mut seen = Vec::new();
        for _ in 0..3 {
            seen.push(describe(&next(&mut sub).await));
        }
        seen[..2].sort();
        assert_eq!(seen, ["ADDED a", "ADDED b", "SYNCED"]);
        assert_eq!(describe(&next(&mut sub).await), "MODIFIED b");
        // The relist: b changed back to the listed version, a is gone, c is new.
        let mut relist = Vec::new();
        for _ in 0..3 {
            relist.push(describe(&next(&mut sub).await));
        }
        relist.sort();
        assert_eq!(relist, ["ADDED c", "DELETED a", "MODIFIED b"]);
        let stats = informer.stats();
        assert_eq!((stats.lists, stats.objects, stats.synced), (2, 2, true));
        // The second watch starts from the second list's revision.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while client.watched_from.lock().unwrap().len() < 2 {
            assert!(tokio::time::Instant::now() < deadline, "no second watch");
            tokio::task::yield_now().await;
        }
        assert_eq!(*client.watched_from.lock().unwrap(), vec![10, 50]);
    }

    #[tokio::test]
    async fn a_late_subscriber_is_replayed_the_cache_then_hears_only_new_changes() {
        let client = Arc::new(Scripted::default());
        client.lists.lock().unwrap().push_back(ObjectList {
            items: vec![pod("a", 1)],
            resource_version: 1,
        });
        let informer = Arc::new(Informer::new(
            client.clone(),
            InformerSpec::all("pods"),
            Vec::new(),
            None,
        ));
        let mut first = informer.subscribe();
        assert_eq!(describe(&next(&mut first).await), "ADDED a");
        assert_eq!(describe(&next(&mut first).await), "SYNCED");
        let mut late = informer.subscribe();
        assert_eq!(describe(&next(&mut late).await), "ADDED a");
        assert_eq!(describe(&next(&mut late).await), "SYNCED");
        informer.shared.applied(EventKind::Added, pod("b", 2));
        assert_eq!(describe(&next(&mut first).await), "ADDED b");
        assert_eq!(describe(&next(&mut late).await), "ADDED b");
        assert_eq!(informer.stats().subscribers, 2);
        drop(late);
        assert_eq!(informer.stats().subscribers, 1);
        assert_eq!(informer.stats().lists, 1, "one list however many subscribe");
    }

    #[test]
    fn a_spec_describes_itself_as_a_query() {
        assert_eq!(InformerSpec::all("pods").describe(), "pods");
        assert_eq!(
            InformerSpec::fields("pods", "spec.nodeName=n1").describe(),
            "pods?fieldSelector=spec.nodeName=n1"
        );
    }
}
