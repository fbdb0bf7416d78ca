//! The garbage collector: deletes objects whose owners (by `metadata.ownerReferences`
//! uid) are gone, and carries out the propagation policies the gateway records on an owner
//! being deleted: `foregroundDeletion` (delete the dependents first, then let the owner
//! go) and `orphan` (cut the dependents loose, then let the owner go).
//!
//! Keys are `<resource>/<namespace>/<name>`, since one collector looks after several
//! resources. Decisions that delete data are taken on a live read, never on the cache
//! alone: a cache that is behind must not make an owner look gone.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tracing::Instrument;

use super::pods;
use crate::api::resources::{self, ResourceInfo};
use crate::api::{meta, ApiError};
use crate::client::{EventKind, ListParams, PatchType};
use crate::runtime::{
    key_of, split_key, Action, Change, Context, InformerSpec, ReconcileError, Reconciler,
};

/// The finalizer of an owner deleted with `propagationPolicy: Foreground`.
pub const FOREGROUND: &str = "foregroundDeletion";
/// The finalizer of an owner deleted with `propagationPolicy: Orphan`.
pub const ORPHAN: &str = "orphan";

/// How long to wait before looking again at dependents that are still going away.
const RECHECK: Duration = Duration::from_secs(1);

/// Collects dependents of deleted owners across a set of namespaced resources.
pub struct GarbageCollector {
    resources: Vec<&'static str>,
    /// Owner uid → keys of the objects that name it, so that an owner's deletion finds
    /// its dependents without scanning every cache.
    dependents: Mutex<HashMap<String, BTreeSet<String>>>,
}

impl Default for GarbageCollector {
    /// Every served resource: any object may name owners, and any owner may be deleted
    /// with Orphan or Foreground propagation and wait for this collector.
    fn default() -> Self {
        let all: Vec<&str> = resources::registry()
            .stored()
            .iter()
            .map(|r| r.name)
            .collect();
        Self::watching(&all)
    }
}

impl GarbageCollector {
    /// Every served resource.
    pub fn new() -> Self {
        Self::default()
    }

    /// Collect among these resources (plural names; unknown ones are ignored).
    pub fn watching(names: &[&str]) -> Self {
        let mut resources: Vec<&'static str> = names
            .iter()
            .filter_map(|n| resources::lookup(n))
            .map(|r| r.name)
            .collect();
        let mut seen = BTreeSet::new();
        resources.retain(|r| seen.insert(*r));
        GarbageCollector {
            resources,
            dependents: Mutex::new(HashMap::new()),
        }
    }

    fn watches(&self, resource: &str) -> bool {
        self.resources.contains(&resource)
    }

    fn index(&self) -> std::sync::MutexGuard<'_, HashMap<String, BTreeSet<String>>> {
        self.dependents.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Move `key` from the owners it named before to the ones it names now.
    fn track(&self, key: &str, before: &BTreeSet<String>, after: &BTreeSet<String>) {
        let mut index = self.index();
        for uid in before.difference(after) {
            if let Some(set) = index.get_mut(uid) {
                set.remove(key);
                if set.is_empty() {
                    index.remove(uid);
                }
            }
        }
        for uid in after.difference(before) {
            index
                .entry(uid.clone())
                .or_default()
                .insert(key.to_string());
        }
    }

    fn dependents_of(&self, uid: &str) -> Vec<String> {
        self.index()
            .get(uid)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }
}

fn gc_key(resource: &str, obj: &Value) -> String {
    format!("{resource}/{}", key_of(obj))
}

/// `(resource, namespace, name)` of a key.
fn parse_key(key: &str) -> Option<(&str, Option<&str>, &str)> {
    let (resource, rest) = key.split_once('/')?;
    let (ns, name) = split_key(rest);
    Some((resource, ns, name))
}

fn owner_refs(obj: &Value) -> &[Value] {
    obj.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

fn ref_uid(r: &Value) -> Option<&str> {
    r.get("uid")
        .and_then(Value::as_str)
        .filter(|u| !u.is_empty())
}

fn owner_uids(obj: Option<&Value>) -> BTreeSet<String> {
    obj.map(owner_refs)
        .unwrap_or(&[])
        .iter()
        .filter_map(ref_uid)
        .map(str::to_string)
        .collect()
}

/// The resource an owner reference points at; `None` for kinds this API does not serve
/// (another group, a typo), whose existence therefore cannot be checked.
fn ref_resource(r: &Value) -> Option<&'static ResourceInfo> {
    let api_version = r.get("apiVersion").and_then(Value::as_str).unwrap_or("v1");
    resources::by_api_version_kind(api_version, r.get("kind").and_then(Value::as_str)?)
}

fn finalizers(obj: &Value) -> Vec<&str> {
    obj.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .map(|f| f.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

fn has_finalizer(obj: &Value, name: &str) -> bool {
    finalizers(obj).contains(&name)
}

/// An owner waiting for this collector: marked for deletion with one of its finalizers.
fn is_waiting_owner(obj: &Value) -> bool {
    pods::is_deleting(obj) && (has_finalizer(obj, FOREGROUND) || has_finalizer(obj, ORPHAN))
}

/// The reference from `dependent` to the owner with `uid`, if it has one.
fn ref_to<'a>(dependent: &'a Value, uid: &str) -> Option<&'a Value> {
    owner_refs(dependent)
        .iter()
        .find(|r| ref_uid(r) == Some(uid))
}

fn blocks_owner_deletion(dependent: &Value, uid: &str) -> bool {
    ref_to(dependent, uid)
        .and_then(|r| r.get("blockOwnerDeletion"))
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

/// Whether the owner a reference names still exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OwnerState {
    Present,
    /// No object of that name, or one with another uid (deleted and recreated).
    Gone,
    /// A kind this API does not serve, or a malformed reference: left alone.
    Unresolvable,
}

/// What to do with an object given the state of each of its owners.
#[derive(Debug, Clone, PartialEq, Eq)]
enum DependentPlan {
    Keep,
    /// Every owner is gone: the object goes too.
    Delete,
    /// Some owners are gone, others remain: drop the dangling references only.
    DropRefs(Vec<String>),
}

fn plan_for_dependent(owners: &[(String, OwnerState)]) -> DependentPlan {
    let gone: Vec<String> = owners
        .iter()
        .filter(|(_, s)| *s == OwnerState::Gone)
        .map(|(uid, _)| uid.clone())
        .collect();
    if gone.is_empty() {
        DependentPlan::Keep
    } else if gone.len() == owners.len() {
        DependentPlan::Delete
    } else {
        DependentPlan::DropRefs(gone)
    }
}

/// A strategic-merge patch removing the references to `uids` (merge key `uid`); applied
/// by the server on the current object, so it needs no resourceVersion and cannot lose a
/// concurrent change to other references.
fn drop_refs_patch(uids: &[String]) -> Value {
    let deletes: Vec<Value> = uids
        .iter()
        .map(|uid| json!({"$patch": "delete", "uid": uid}))
        .collect();
    json!({"metadata": {"ownerReferences": deletes}})
}

/// A strategic-merge patch removing one finalizer and leaving the others.
fn drop_finalizer_patch(name: &str) -> Value {
    json!({"metadata": {"$deleteFromPrimitiveList/finalizers": [name]}})
}

#[async_trait::async_trait]
impl Reconciler for GarbageCollector {
    fn name(&self) -> &'static str {
        "garbage-collector"
    }

    fn informers(&self) -> Vec<InformerSpec> {
        self.resources
            .iter()
            .copied()
            .map(InformerSpec::all)
            .collect()
    }

    fn keys_for(&self, resource: &str, change: &Change, ctx: &Context) -> Vec<String> {
        let obj = &change.object;
        let key = gc_key(resource, obj);
        let before = owner_uids(change.old.as_deref());
        let after = if change.kind == EventKind::Deleted {
            BTreeSet::new()
        } else {
            owner_uids(Some(obj))
        };
        self.track(&key, &before, &after);
        let mut keys = BTreeSet::new();
        match change.kind {
            EventKind::Deleted => {
                // Its dependents may now be dangling.
                if let Some(uid) = meta::uid(obj) {
                    keys.extend(self.dependents_of(uid));
                }
            }
            EventKind::Added | EventKind::Modified => {
                let owners_changed = change.kind == EventKind::Added || before != after;
                if (owners_changed && !after.is_empty()) || is_waiting_owner(obj) {
                    keys.insert(key.clone());
                }
            }
        }
        // An owner waiting on this object (deleted, or cut loose) may now be able to go.
        let ns = meta::namespace(obj);
        let refs = owner_refs(obj)
            .iter()
            .chain(change.old.as_deref().map(owner_refs).unwrap_or(&[]));
        for r in refs {
            let Some(info) = ref_resource(r).filter(|i| self.watches(i.name)) else {
                continue;
            };
            let name = r.get("name").and_then(Value::as_str).unwrap_or_default();
            let cache_key = match ns.filter(|_| info.namespaced) {
                Some(ns) => format!("{ns}/{name}"),
                None => name.to_string(),
            };
            if ctx
                .cache(info.name)
                .get(&cache_key)
                .is_some_and(|o| is_waiting_owner(&o))
            {
                keys.insert(format!("{}/{cache_key}", info.name));
            }
        }
        keys.into_iter().collect()
    }

    async fn reconcile(&self, key: &str, ctx: &Context) -> Result<Action, ReconcileError> {
        let span = tracing::debug_span!("collect", object = %key);
        self.sync(key, ctx).instrument(span).await
    }
}

impl GarbageCollector {
    async fn sync(&self, key: &str, ctx: &Context) -> Result<Action, ReconcileError> {
        let Some((resource, ns, name)) = parse_key(key) else {
            return Err(ReconcileError::Invalid(format!("malformed key {key:?}")));
        };
        let cache_key = match ns {
            Some(ns) => format!("{ns}/{name}"),
            None => name.to_string(),
        };
        let Some(obj) = ctx.cache(resource).get(&cache_key) else {
            return Ok(Action::Done);
        };
        if pods::is_deleting(&obj) {
            if has_finalizer(&obj, ORPHAN) {
                return self.orphan_dependents(ctx, resource, &obj).await;
            }
            if has_finalizer(&obj, FOREGROUND) {
                return self.delete_dependents(ctx, resource, &obj).await;
            }
            // Already going; nothing for the collector to decide.
            return Ok(Action::Done);
        }
        self.collect_if_orphaned(ctx, resource, &obj).await
    }

    /// Delete the object if every owner is gone; drop the references to owners that are.
    async fn collect_if_orphaned(
        &self,
        ctx: &Context,
        resource: &str,
        obj: &Value,
    ) -> Result<Action, ReconcileError> {
        let refs = owner_refs(obj);
        if refs.is_empty() {
            return Ok(Action::Done);
        }
        let ns = meta::namespace(obj);
        let mut states = Vec::with_capacity(refs.len());
        for r in refs {
            let state = self.owner_state(ctx, ns, r).await?;
            states.push((ref_uid(r).unwrap_or_default().to_string(), state));
        }
        let name = meta::name(obj).unwrap_or_default();
        match plan_for_dependent(&states) {
            DependentPlan::Keep => {}
            DependentPlan::Delete => {
                match ctx
                    .client
                    .delete(resource, ns, name, Some("Background"))
                    .await
                {
                    Ok(_) | Err(ApiError::NotFound { .. }) => {
                        tracing::info!(resource, name, "deleted object whose owners are gone")
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            DependentPlan::DropRefs(uids) => {
                self.patch(ctx, resource, ns, name, drop_refs_patch(&uids))
                    .await?;
                tracing::info!(resource, name, dropped = ?uids, "removed references to deleted owners");
            }
        }
        Ok(Action::Done)
    }

    /// Whether the owner a reference names exists. The cache answers "present" cheaply;
    /// "gone" is only believed from a live read, since a cache that has not caught up
    /// (or does not watch that kind) would otherwise get a live object's dependents deleted.
    async fn owner_state(
        &self,
        ctx: &Context,
        ns: Option<&str>,
        r: &Value,
    ) -> Result<OwnerState, ApiError> {
        let (Some(info), Some(uid), Some(name)) = (
            ref_resource(r),
            ref_uid(r),
            r.get("name").and_then(Value::as_str),
        ) else {
            return Ok(OwnerState::Unresolvable);
        };
        let owner_ns = ns.filter(|_| info.namespaced);
        if self.watches(info.name) {
            let cache_key = match owner_ns {
                Some(ns) => format!("{ns}/{name}"),
                None => name.to_string(),
            };
            if ctx
                .cache(info.name)
                .get(&cache_key)
                .is_some_and(|o| meta::uid(&o) == Some(uid))
            {
                return Ok(OwnerState::Present);
            }
        }
        match ctx.client.get(info.name, owner_ns, name).await {
            Ok(o) if meta::uid(&o) == Some(uid) => Ok(OwnerState::Present),
            Ok(_) | Err(ApiError::NotFound { .. }) => Ok(OwnerState::Gone),
            Err(e) => Err(e),
        }
    }

    /// Every watched object naming `owner`, read live.
    async fn live_dependents(
        &self,
        ctx: &Context,
        owner: &Value,
    ) -> Result<Vec<(&'static str, Arc<Value>)>, ApiError> {
        let Some(uid) = meta::uid(owner) else {
            return Ok(Vec::new());
        };
        let ns = meta::namespace(owner).filter(|n| !n.is_empty());
        let mut out = Vec::new();
        for resource in &self.resources {
            let list = ctx
                .client
                .list(resource, ns, &ListParams::default())
                .await?;
            out.extend(
                list.items
                    .into_iter()
                    .filter(|d| ref_to(d, uid).is_some())
                    .map(|d| (*resource, d)),
            );
        }
        Ok(out)
    }

    /// Foreground deletion: delete the dependents; once none that blocks the owner's
    /// deletion remains, remove the finalizer and let the gateway delete the owner.
    async fn delete_dependents(
        &self,
        ctx: &Context,
        resource: &str,
        owner: &Value,
    ) -> Result<Action, ReconcileError> {
        let uid = meta::uid(owner).unwrap_or_default();
        for (dep_resource, dep) in self.live_dependents(ctx, owner).await? {
            if pods::is_deleting(&dep) {
                continue;
            }
            let dep_name = meta::name(&dep).unwrap_or_default();
            match ctx
                .client
                .delete(
                    dep_resource,
                    meta::namespace(&dep),
                    dep_name,
                    Some("Background"),
                )
                .await
            {
                Ok(_) | Err(ApiError::NotFound { .. }) => {
                    tracing::debug!(dependent = dep_name, "deleted dependent in foreground")
                }
                Err(e) => return Err(e.into()),
            }
        }
        let blocking = self
            .live_dependents(ctx, owner)
            .await?
            .iter()
            .filter(|(_, d)| blocks_owner_deletion(d, uid))
            .count();
        if blocking > 0 {
            tracing::debug!(blocking, "waiting for dependents to go");
            return Ok(Action::RequeueAfter(RECHECK));
        }
        self.remove_finalizer(ctx, resource, owner, FOREGROUND)
            .await?;
        Ok(Action::Done)
    }

    /// Orphan deletion: remove the reference to the owner from every dependent, then the
    /// finalizer, and let the gateway delete the owner.
    async fn orphan_dependents(
        &self,
        ctx: &Context,
        resource: &str,
        owner: &Value,
    ) -> Result<Action, ReconcileError> {
        let uid = meta::uid(owner).unwrap_or_default().to_string();
        let dependents = self.live_dependents(ctx, owner).await?;
        for (dep_resource, dep) in &dependents {
            let dep_name = meta::name(dep).unwrap_or_default();
            self.patch(
                ctx,
                dep_resource,
                meta::namespace(dep),
                dep_name,
                drop_refs_patch(std::slice::from_ref(&uid)),
            )
            .await?;
        }
        if !dependents.is_empty() && !self.live_dependents(ctx, owner).await?.is_empty() {
            return Ok(Action::RequeueAfter(RECHECK));
        }
        tracing::info!(orphaned = dependents.len(), "dependents orphaned");
        self.remove_finalizer(ctx, resource, owner, ORPHAN).await?;
        Ok(Action::Done)
    }

    async fn remove_finalizer(
        &self,
        ctx: &Context,
        resource: &str,
        owner: &Value,
        finalizer: &str,
    ) -> Result<(), ReconcileError> {
        let name = meta::name(owner).unwrap_or_default();
        self.patch(
            ctx,
            resource,
            meta::namespace(owner),
            name,
            drop_finalizer_patch(finalizer),
        )
        .await?;
        tracing::info!(resource, name, finalizer, "finalizer removed");
        Ok(())
    }

    /// A strategic-merge patch; an object that is already gone needs none.
    async fn patch(
        &self,
        ctx: &Context,
        resource: &str,
        ns: Option<&str>,
        name: &str,
        patch: Value,
    ) -> Result<(), ReconcileError> {
        match ctx
            .client
            .patch(resource, ns, name, None, PatchType::Strategic, patch)
            .await
        {
            Ok(_) | Err(ApiError::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::patch::strategic_merge_patch;

    fn owned_pod(refs: Value) -> Value {
        json!({"kind": "Pod", "metadata": {"name": "p", "namespace": "ns", "ownerReferences": refs}})
    }

    #[test]
    fn keys_name_the_resource_namespace_and_object() {
        let pod = json!({"metadata": {"name": "p", "namespace": "ns"}});
        let key = gc_key("pods", &pod);
        assert_eq!(key, "pods/ns/p");
        assert_eq!(parse_key(&key), Some(("pods", Some("ns"), "p")));
        assert_eq!(parse_key("nodes/n1"), Some(("nodes", None, "n1")));
        assert_eq!(parse_key("garbage"), None);
    }

    #[test]
    fn owner_references_resolve_by_group_version_and_kind() {
        let rc =
            json!({"apiVersion": "v1", "kind": "ReplicationController", "name": "a", "uid": "1"});
        assert_eq!(
            ref_resource(&rc).map(|r| r.name),
            Some("replicationcontrollers")
        );
        let hpa = json!({"apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler",
            "name": "a", "uid": "1"});
        assert_eq!(
            ref_resource(&hpa).map(|r| r.name),
            Some("horizontalpodautoscalers")
        );
        let wrong_group =
            json!({"apiVersion": "apps/v1", "kind": "Lease", "name": "a", "uid": "1"});
        assert!(ref_resource(&wrong_group).is_none());
        let rs = json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "a", "uid": "1"});
        assert_eq!(ref_resource(&rs).map(|r| r.name), Some("replicasets"));
        let revision =
            json!({"apiVersion": "apps/v1", "kind": "ControllerRevision", "name": "a", "uid": "1"});
        assert_eq!(
            ref_resource(&revision).map(|r| r.name),
            Some("controllerrevisions")
        );
        let unserved =
            json!({"apiVersion": "apps/v1", "kind": "Frobnicator", "name": "a", "uid": "1"});
        assert!(ref_resource(&unserved).is_none());
        let typo =
            json!({"apiVersion": "v1", "kind": "Replicationcontroller", "name": "a", "uid": "1"});
        assert!(ref_resource(&typo).is_none());
    }

    #[test]
    fn an_object_goes_only_when_every_owner_is_gone() {
        use OwnerState::*;
        let s = |v: &[(&str, OwnerState)]| -> Vec<(String, OwnerState)> {
            v.iter().map(|(u, s)| (u.to_string(), *s)).collect()
        };
        assert_eq!(
            plan_for_dependent(&s(&[("a", Gone)])),
            DependentPlan::Delete
        );
        assert_eq!(
            plan_for_dependent(&s(&[("a", Gone), ("b", Present)])),
            DependentPlan::DropRefs(vec!["a".into()])
        );
        assert_eq!(
            plan_for_dependent(&s(&[("a", Gone), ("b", Unresolvable)])),
            DependentPlan::DropRefs(vec!["a".into()]),
            "an owner that cannot be checked keeps the object"
        );
        assert_eq!(
            plan_for_dependent(&s(&[("a", Present)])),
            DependentPlan::Keep
        );
        assert_eq!(plan_for_dependent(&[]), DependentPlan::Keep);
    }

    #[test]
    fn dropping_a_reference_keeps_the_other_owners() {
        let pod = owned_pod(
            json!([{"kind": "ReplicationController", "name": "a", "uid": "1"},
            {"kind": "ReplicationController", "name": "b", "uid": "2"}]),
        );
        let out = strategic_merge_patch(&pod, &drop_refs_patch(&["1".into()]), "Pod").unwrap();
        assert_eq!(
            out["metadata"]["ownerReferences"],
            json!([{"kind": "ReplicationController", "name": "b", "uid": "2"}])
        );
    }

    #[test]
    fn removing_a_finalizer_keeps_the_others() {
        let rc = json!({"kind": "ReplicationController",
            "metadata": {"name": "a", "finalizers": ["example.com/x", FOREGROUND]}});
        let out = strategic_merge_patch(
            &rc,
            &drop_finalizer_patch(FOREGROUND),
            "ReplicationController",
        )
        .unwrap();
        assert_eq!(out["metadata"]["finalizers"], json!(["example.com/x"]));
    }

    #[test]
    fn only_owners_marked_for_deletion_with_a_collector_finalizer_are_waiting() {
        let mut rc = json!({"metadata": {"name": "a", "finalizers": [ORPHAN]}});
        assert!(!is_waiting_owner(&rc), "not deleted yet");
        rc["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        assert!(is_waiting_owner(&rc));
        rc["metadata"]["finalizers"] = json!(["example.com/x"]);
        assert!(!is_waiting_owner(&rc));
    }

    #[test]
    fn only_references_marked_blocking_hold_a_foreground_deletion() {
        let pod = owned_pod(
            json!([{"kind": "ReplicationController", "name": "a", "uid": "1",
            "blockOwnerDeletion": true}, {"kind": "ReplicationController", "name": "b", "uid": "2"}]),
        );
        assert!(blocks_owner_deletion(&pod, "1"));
        assert!(!blocks_owner_deletion(&pod, "2"));
        assert!(!blocks_owner_deletion(&pod, "3"));
    }

    #[test]
    fn the_dependents_index_follows_reference_changes() {
        let gc = GarbageCollector::new();
        let set = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
        gc.track("pods/ns/p", &set(&[]), &set(&["1"]));
        gc.track("pods/ns/q", &set(&[]), &set(&["1", "2"]));
        assert_eq!(gc.dependents_of("1"), vec!["pods/ns/p", "pods/ns/q"]);
        gc.track("pods/ns/q", &set(&["1", "2"]), &set(&["2"]));
        assert_eq!(gc.dependents_of("1"), vec!["pods/ns/p"]);
        gc.track("pods/ns/p", &set(&["1"]), &set(&[]));
        assert!(gc.dependents_of("1").is_empty());
        assert_eq!(gc.dependents_of("2"), vec!["pods/ns/q"]);
    }

    #[test]
    fn unknown_resources_are_not_watched() {
        let gc = GarbageCollector::watching(&["pods", "widgets", "services"]);
        assert_eq!(gc.resources, vec!["pods", "services"]);
        assert!(GarbageCollector::new().watches("replicationcontrollers"));
    }
}
