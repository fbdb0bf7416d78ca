//! An informer's cache: one resource's objects keyed `namespace/name` (or `name`), each
//! held as the `Arc` the API client handed over, so that in one process an object version
//! exists once however many components read it; plus indexes (client-go's `Indexer`) so
//! that "the pods on node X" or "the objects owned by UID U" is a lookup, not a scan.
//!
//! The namespace index is the key order itself: keys sort by namespace first, so the
//! objects of one namespace are one range of the map and need no second copy of their keys.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use serde_json::Value;

use crate::api::meta;
use crate::client::EventKind;

/// The namespace index (answered from the key order).
pub const NAMESPACE: &str = "namespace";
/// Pods by `spec.nodeName` (pods not yet bound are not in it).
pub const NODE_NAME: &str = "spec.nodeName";
/// Objects by the UID of each of their owners (`metadata.ownerReferences[].uid`).
pub const OWNER_UID: &str = "ownerUID";

/// The values an object is indexed under.
pub type IndexFn = fn(&Value) -> Vec<String>;

/// A named index function.
#[derive(Clone, Copy)]
pub struct Indexer {
    pub name: &'static str,
    pub values: IndexFn,
}

impl std::fmt::Debug for Indexer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Indexer").field(&self.name).finish()
    }
}

/// Pods by the node they are bound to.
pub fn node_name_indexer() -> Indexer {
    Indexer {
        name: NODE_NAME,
        values: |obj| {
            obj.pointer("/spec/nodeName")
                .and_then(Value::as_str)
                .filter(|n| !n.is_empty())
                .map(|n| vec![n.to_string()])
                .unwrap_or_default()
        },
    }
}

/// Objects by their owners' UIDs.
pub fn owner_uid_indexer() -> Indexer {
    Indexer {
        name: OWNER_UID,
        values: |obj| {
            obj.pointer("/metadata/ownerReferences")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|r| r.get("uid").and_then(Value::as_str))
                .map(str::to_string)
                .collect()
        },
    }
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

/// One change the cache went through.
#[derive(Debug, Clone)]
pub struct Change {
    pub kind: EventKind,
    pub object: Arc<Value>,
    /// The state before the change, when the cache had one.
    pub old: Option<Arc<Value>>,
}

impl Change {
    /// This change as seen by someone interested only in objects matching `wanted`, the
    /// way a watch with a selector reports it: an object that starts matching is Added, one
    /// that stops is Deleted, one that never matched is no change at all.
    pub fn restricted(&self, wanted: impl Fn(&Value) -> bool) -> Option<Change> {
        let now = self.kind != EventKind::Deleted && wanted(&self.object);
        let before = match self.kind {
            EventKind::Added => self.old.as_deref().is_some_and(&wanted),
            EventKind::Deleted => wanted(&self.object),
            EventKind::Modified => self.old.as_deref().is_some_and(&wanted),
        };
        let kind = match (before, now) {
            (false, true) => EventKind::Added,
            (true, true) => EventKind::Modified,
            (true, false) => EventKind::Deleted,
            (false, false) => return None,
        };
        Some(Change {
            kind,
            object: self.object.clone(),
            old: self.old.clone(),
        })
    }
}

#[derive(Default)]
struct State {
    objects: BTreeMap<String, Arc<Value>>,
    /// index name → indexed value → keys.
    indexes: HashMap<&'static str, HashMap<String, BTreeSet<String>>>,
}

/// A local, read-mostly copy of one resource.
#[derive(Default)]
pub struct Cache {
    state: RwLock<State>,
    indexers: Vec<Indexer>,
    synced: AtomicBool,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("objects", &self.len())
            .field("indexers", &self.indexers)
            .field("synced", &self.synced())
            .finish()
    }
}

impl Cache {
    /// An empty cache maintaining these indexes.
    pub fn with_indexers(indexers: Vec<Indexer>) -> Self {
        Cache {
            indexers,
            ..Cache::default()
        }
    }

    pub fn get(&self, key: &str) -> Option<Arc<Value>> {
        self.read().objects.get(key).cloned()
    }

    pub fn list(&self) -> Vec<Arc<Value>> {
        self.read().objects.values().cloned().collect()
    }

    /// Objects in one namespace.
    pub fn list_namespace(&self, ns: &str) -> Vec<Arc<Value>> {
        let prefix = format!("{ns}/");
        self.read()
            .objects
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// Objects an index files under `value`, in key order. An index the cache does not
    /// keep answers nothing.
    pub fn by_index(&self, index: &str, value: &str) -> Vec<Arc<Value>> {
        if index == NAMESPACE {
            return self.list_namespace(value);
        }
        let state = self.read();
        let Some(keys) = state.indexes.get(index).and_then(|i| i.get(value)) else {
            return Vec::new();
        };
        keys.iter()
            .filter_map(|k| state.objects.get(k).cloned())
            .collect()
    }

    /// The values an index has objects under (e.g. the nodes that have pods).
    pub fn index_values(&self, index: &str) -> Vec<String> {
        let state = self.read();
        let mut values: Vec<String> = state
            .indexes
            .get(index)
            .map(|i| i.keys().cloned().collect())
            .unwrap_or_default();
        values.sort();
        values
    }

    pub fn len(&self) -> usize {
        self.read().objects.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the first list has been loaded.
    pub fn synced(&self) -> bool {
        self.synced.load(Ordering::Acquire)
    }

    /// Every object, for a new subscriber's replay (taken under the same lock as changes
    /// are applied, by the informer).
    pub(crate) fn snapshot(&self) -> Vec<Arc<Value>> {
        self.list()
    }

    fn read(&self) -> RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Apply one change; returns the previous state.
    pub fn apply(&self, kind: EventKind, obj: Arc<Value>) -> Option<Arc<Value>> {
        let key = key_of(&obj);
        let mut state = self.write();
        let old = match kind {
            EventKind::Deleted => state.objects.remove(&key),
            _ => state.objects.insert(key.clone(), obj.clone()),
        };
        if let Some(old) = &old {
            self.unindex(&mut state, &key, old);
        }
        if kind != EventKind::Deleted {
            self.index(&mut state, &key, &obj);
        }
        old
    }

    /// Replace the whole content (after a list); returns the changes it amounts to.
    pub fn replace(&self, items: Vec<Arc<Value>>) -> Vec<Change> {
        let mut fresh = BTreeMap::new();
        for item in items {
            fresh.insert(key_of(&item), item);
        }
        let mut changes = Vec::new();
        let mut state = self.write();
        for (k, old) in &state.objects {
            if !fresh.contains_key(k) {
                changes.push(Change {
                    kind: EventKind::Deleted,
                    object: old.clone(),
                    old: Some(old.clone()),
                });
            }
        }
        for (k, new) in &fresh {
            match state.objects.get(k) {
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
        state.indexes.clear();
        for (k, obj) in &fresh {
            self.index(&mut state, k, obj);
        }
        state.objects = fresh;
        self.synced.store(true, Ordering::Release);
        changes
    }

    fn index(&self, state: &mut State, key: &str, obj: &Value) {
        for ix in &self.indexers {
            let index = state.indexes.entry(ix.name).or_default();
            for value in (ix.values)(obj) {
                index.entry(value).or_default().insert(key.to_string());
            }
        }
    }

    fn unindex(&self, state: &mut State, key: &str, obj: &Value) {
        for ix in &self.indexers {
            let Some(index) = state.indexes.get_mut(ix.name) else {
                continue;
            };
            for value in (ix.values)(obj) {
                if let Some(keys) = index.get_mut(&value) {
                    keys.remove(key);
                    if keys.is_empty() {
                        index.remove(&value);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(name: &str, rv: &str) -> Arc<Value> {
        Arc::new(json!({"metadata": {"name": name, "namespace": "default", "resourceVersion": rv}}))
    }

    fn pod(ns: &str, name: &str, node: &str, owner: &str) -> Arc<Value> {
        Arc::new(json!({
            "metadata": {"name": name, "namespace": ns, "resourceVersion": "1",
                "ownerReferences": [{"uid": owner, "kind": "ReplicationController", "name": "rc"}]},
            "spec": {"nodeName": node},
        }))
    }

    fn names(objs: &[Arc<Value>]) -> Vec<String> {
        objs.iter()
            .map(|o| meta::name(o).unwrap_or_default().to_string())
            .collect()
    }

    fn pods_cache() -> Cache {
        Cache::with_indexers(vec![node_name_indexer(), owner_uid_indexer()])
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

    #[test]
    fn pods_are_found_by_node_owner_and_namespace_without_a_scan() {
        let cache = pods_cache();
        cache.replace(vec![
            pod("a", "p1", "n1", "rc-1"),
            pod("a", "p2", "n2", "rc-1"),
            pod("b", "p3", "n1", "rc-2"),
        ]);
        assert_eq!(names(&cache.by_index(NODE_NAME, "n1")), vec!["p1", "p3"]);
        assert_eq!(names(&cache.by_index(OWNER_UID, "rc-1")), vec!["p1", "p2"]);
        assert_eq!(names(&cache.by_index(NAMESPACE, "b")), vec!["p3"]);
        assert_eq!(cache.index_values(NODE_NAME), vec!["n1", "n2"]);
        assert!(cache.by_index("no-such-index", "x").is_empty());
    }

    #[test]
    fn indexes_follow_updates_and_deletes() {
        let cache = pods_cache();
        cache.replace(vec![pod("a", "p1", "n1", "rc-1")]);
        // Rescheduled (a new pod of the same name) onto another node, owned by another RC.
        cache.apply(EventKind::Modified, pod("a", "p1", "n2", "rc-2"));
        assert!(cache.by_index(NODE_NAME, "n1").is_empty());
        assert_eq!(names(&cache.by_index(NODE_NAME, "n2")), vec!["p1"]);
        assert!(cache.by_index(OWNER_UID, "rc-1").is_empty());
        cache.apply(EventKind::Deleted, pod("a", "p1", "n2", "rc-2"));
        assert!(cache.by_index(NODE_NAME, "n2").is_empty());
        assert!(
            cache.index_values(NODE_NAME).is_empty(),
            "no empty buckets left"
        );
    }

    #[test]
    fn an_unbound_pod_is_in_no_node_bucket() {
        let cache = pods_cache();
        cache.apply(EventKind::Added, pod("a", "p", "", "rc"));
        assert!(cache.index_values(NODE_NAME).is_empty());
    }

    #[test]
    fn the_cache_shares_the_objects_it_is_given() {
        let cache = Cache::default();
        let o = obj("a", "1");
        cache.apply(EventKind::Added, o.clone());
        let got = cache.get("default/a").expect("cached");
        assert!(Arc::ptr_eq(&o, &got), "one copy per object version");
    }

    #[test]
    fn a_restricted_change_reports_entering_and_leaving_the_selection() {
        let on_n1 = |o: &Value| o.pointer("/spec/nodeName").and_then(Value::as_str) == Some("n1");
        let bind = Change {
            kind: EventKind::Modified,
            object: pod("a", "p", "n1", "rc"),
            old: Some(pod("a", "p", "", "rc")),
        };
        assert_eq!(
            bind.restricted(on_n1).map(|c| c.kind),
            Some(EventKind::Added)
        );
        let elsewhere = Change {
            kind: EventKind::Added,
            object: pod("a", "p", "n2", "rc"),
            old: None,
        };
        assert!(elsewhere.restricted(on_n1).is_none());
        let gone = Change {
            kind: EventKind::Deleted,
            object: pod("a", "p", "n1", "rc"),
            old: Some(pod("a", "p", "n1", "rc")),
        };
        assert_eq!(
            gone.restricted(on_n1).map(|c| c.kind),
            Some(EventKind::Deleted)
        );
        let moved = Change {
            kind: EventKind::Modified,
            object: pod("a", "p", "n2", "rc"),
            old: Some(pod("a", "p", "n1", "rc")),
        };
        assert_eq!(
            moved.restricted(on_n1).map(|c| c.kind),
            Some(EventKind::Deleted)
        );
    }
}
