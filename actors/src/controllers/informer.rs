//! Informers: list, then watch, keeping a local cache of one resource current and telling
//! the owner about every change. A watch that ends is resumed from the last revision seen;
//! one that expired (410) starts over with a fresh list, as client-go's reflector does.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::StreamExt;
use serde_json::Value;

use crate::api::{meta, ApiError};
use crate::client::{ApiClient, EventKind, ListParams};

/// A local, read-mostly copy of one resource, keyed `namespace/name` (or `name`).
#[derive(Default)]
pub struct Cache {
    objects: RwLock<BTreeMap<String, Arc<Value>>>,
    synced: std::sync::atomic::AtomicBool,
}

/// The cache key of an object.
pub fn key_of(obj: &Value) -> String {
    match meta::namespace(obj).filter(|n| !n.is_empty()) {
        Some(ns) => format!("{ns}/{}", meta::name(obj).unwrap_or_default()),
        None => meta::name(obj).unwrap_or_default().to_string(),
    }
}

/// Split a `namespace/name` key.
pub fn split_key(key: &str) -> (Option<&str>, &str) {
    match key.split_once('/') {
        Some((ns, name)) => (Some(ns), name),
        None => (None, key),
    }
}

impl Cache {
    pub fn get(&self, key: &str) -> Option<Arc<Value>> {
        self.read().get(key).cloned()
    }

    pub fn list(&self) -> Vec<Arc<Value>> {
        self.read().values().cloned().collect()
    }

    /// Objects in one namespace.
    pub fn list_namespace(&self, ns: &str) -> Vec<Arc<Value>> {
        let prefix = format!("{ns}/");
        self.read()
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .map(|(_, v)| v.clone())
            .collect()
    }

    pub fn len(&self) -> usize {
        self.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the first list has been loaded.
    pub fn synced(&self) -> bool {
        self.synced.load(std::sync::atomic::Ordering::Acquire)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Arc<Value>>> {
        self.objects.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, Arc<Value>>> {
        self.objects.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Apply one change; returns the previous state.
    pub fn apply(&self, kind: EventKind, obj: Arc<Value>) -> Option<Arc<Value>> {
        let key = key_of(&obj);
        match kind {
            EventKind::Deleted => self.write().remove(&key),
            _ => self.write().insert(key, obj),
        }
    }

    /// Replace the whole content (after a list); returns the changes it amounts to.
    fn replace(&self, items: Vec<Value>) -> Vec<Change> {
        let mut fresh = BTreeMap::new();
        for item in items {
            fresh.insert(key_of(&item), Arc::new(item));
        }
        let mut changes = Vec::new();
        let mut map = self.write();
        for (k, old) in map.iter() {
            if !fresh.contains_key(k) {
                changes.push(Change {
                    kind: EventKind::Deleted,
                    object: old.clone(),
                    old: Some(old.clone()),
                });
            }
        }
        for (k, new) in &fresh {
            match map.get(k) {
                None => changes.push(Change {
                    kind: EventKind::Added,
                    object: new.clone(),
                    old: None,
                }),
                Some(old) if meta::resource_version(old) != meta::resource_version(new) => changes
                    .push(Change {
                        kind: EventKind::Modified,
                        object: new.clone(),
                        old: Some(old.clone()),
                    }),
                Some(_) => {}
            }
        }
        *map = fresh;
        self.synced
            .store(true, std::sync::atomic::Ordering::Release);
        changes
    }
}

/// One change an informer reports.
#[derive(Debug, Clone)]
pub struct Change {
    pub kind: EventKind,
    pub object: Arc<Value>,
    pub old: Option<Arc<Value>>,
}

/// What to list and watch.
#[derive(Debug, Clone)]
pub struct InformerSpec {
    pub resource: &'static str,
    pub params: ListParams,
}

impl InformerSpec {
    pub fn all(resource: &'static str) -> Self {
        InformerSpec {
            resource,
            params: ListParams::default(),
        }
    }
}

/// Keep `cache` in step with the API, calling `notify` for every change, until the
/// future is dropped (its owner stopped).
pub async fn run(
    client: Arc<dyn ApiClient>,
    spec: InformerSpec,
    cache: Arc<Cache>,
    notify: impl Fn(&'static str, Change) + Send + 'static,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        match list_and_watch(&*client, &spec, &cache, &notify).await {
            Ok(()) => backoff = Duration::from_millis(100),
            Err(e) => {
                tracing::debug!(resource = spec.resource, error = %e, "informer restarting");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

async fn list_and_watch(
    client: &dyn ApiClient,
    spec: &InformerSpec,
    cache: &Cache,
    notify: &(impl Fn(&'static str, Change) + Send),
) -> Result<(), ApiError> {
    let list = client.list(spec.resource, None, &spec.params).await?;
    let mut rev = list.resource_version;
    for change in cache.replace(list.items) {
        notify(spec.resource, change);
    }
    loop {
        let mut events = client.watch(spec.resource, None, &spec.params, rev).await?;
        while let Some(ev) = events.next().await {
            let ev = ev?;
            if let Some(r) = meta::resource_version(&ev.object).and_then(|r| r.parse().ok()) {
                rev = rev.max(r);
            }
            let object = Arc::new(ev.object);
            let old = cache.apply(ev.kind, object.clone());
            notify(
                spec.resource,
                Change {
                    kind: ev.kind,
                    object,
                    old,
                },
            );
        }
        // The server ended the watch (timeout or restart): resume where we were.
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(name: &str, rv: &str) -> Value {
        json!({"metadata": {"name": name, "namespace": "default", "resourceVersion": rv}})
    }

    #[test]
    fn relist_reports_what_changed_while_the_watch_was_down() {
        let cache = Cache::default();
        cache.replace(vec![obj("a", "1"), obj("b", "2")]);
        let changes = cache.replace(vec![obj("b", "5"), obj("c", "6")]);
        let mut seen: Vec<(EventKind, String)> = changes
            .iter()
            .map(|c| {
                (
                    c.kind,
                    meta::name(&c.object).unwrap_or_default().to_string(),
                )
            })
            .collect();
        seen.sort_by(|a, b| a.1.cmp(&b.1));
        assert_eq!(
            seen,
            vec![
                (EventKind::Deleted, "a".to_string()),
                (EventKind::Modified, "b".to_string()),
                (EventKind::Added, "c".to_string())
            ]
        );
        assert!(cache.synced());
        assert_eq!(cache.list_namespace("default").len(), 2);
    }

    #[test]
    fn keys_split_back_into_namespace_and_name() {
        assert_eq!(split_key("ns/a"), (Some("ns"), "a"));
        assert_eq!(split_key("node-1"), (None, "node-1"));
        assert_eq!(key_of(&json!({"metadata": {"name": "n"}})), "n");
    }
}
