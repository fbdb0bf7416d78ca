//! The replica set controller, for apps/v1 ReplicaSets and core/v1
//! ReplicationControllers alike (one implementation, two kinds, as Kubernetes shares
//! `pkg/controller/replicaset` between them): keeps `spec.replicas` pods matching the
//! selector, adopts matching orphans, releases owned pods that stop matching, and reports
//! how many exist, are ready and available.
//!
//! Expectations follow Kubernetes' ControllerExpectations: a create counts as observed
//! when its pod appears, a deletion when its pod gets a deletionTimestamp (or vanishes);
//! creates go in slow-start batches (1, 2, 4, ...) whose pods are created concurrently,
//! and a batch that fails forgets only the creates that did not happen.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::join_all;
use serde_json::{json, Value};

use super::pods::{self, controller_ref};
use crate::api::selector::LabelSelector;
use crate::api::{meta, ApiError};
use crate::client::{EventKind, PatchType};
use crate::runtime::{
    key_of, split_key, Action, Change, Context, InformerSpec, ReconcileError, Reconciler,
};

/// Which of the two kinds a controller manages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplicaKind {
    /// core/v1 ReplicationController: a plain label-map selector.
    ReplicationController,
    /// apps/v1 ReplicaSet: a `LabelSelector`, set-based expressions included.
    ReplicaSet,
}

impl ReplicaKind {
    fn resource(self) -> &'static str {
        match self {
            ReplicaKind::ReplicationController => "replicationcontrollers",
            ReplicaKind::ReplicaSet => "replicasets",
        }
    }

    fn kind(self) -> &'static str {
        match self {
            ReplicaKind::ReplicationController => "ReplicationController",
            ReplicaKind::ReplicaSet => "ReplicaSet",
        }
    }

    fn api_version(self) -> &'static str {
        match self {
            ReplicaKind::ReplicationController => "v1",
            ReplicaKind::ReplicaSet => "apps/v1",
        }
    }

    /// The selector, or `None` when it would select nothing (an empty selector never
    /// selects everything here).
    fn selector(self, obj: &Value) -> Option<LabelSelector> {
        let raw = obj.pointer("/spec/selector")?;
        let sel = match self {
            ReplicaKind::ReplicationController => {
                let labels: BTreeMap<String, String> = raw
                    .as_object()?
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                    .collect();
                LabelSelector::from_match_labels(&labels)
            }
            ReplicaKind::ReplicaSet => LabelSelector::from_label_selector_value(raw).ok()?,
        };
        (!sel.is_empty()).then_some(sel)
    }
}

/// Creates and deletions asked for but not yet observed, per owner key.
#[derive(Debug, Clone, Copy)]
struct Expectations {
    adds: i64,
    dels: i64,
    set: Instant,
}

/// Expectations older than this are assumed lost (a watch event that never came).
const EXPECTATIONS_TTL: Duration = Duration::from_secs(300);
/// Pods created at most per reconcile (Kubernetes' burstReplicas); the rest follow.
const BURST: usize = 500;

pub struct ReplicaSetController {
    kind: ReplicaKind,
    expectations: Mutex<HashMap<String, Expectations>>,
}

impl ReplicaSetController {
    pub fn new(kind: ReplicaKind) -> Self {
        ReplicaSetController {
            kind,
            expectations: Mutex::new(HashMap::new()),
        }
    }

    fn expect(&self, key: &str, adds: i64, dels: i64) {
        self.lock().insert(
            key.to_string(),
            Expectations {
                adds,
                dels,
                set: Instant::now(),
            },
        );
    }

    /// Lower the outstanding creates by `n` (creates that failed will never be seen).
    fn forget_adds(&self, key: &str, n: i64) {
        if let Some(e) = self.lock().get_mut(key) {
            e.adds -= n;
        }
    }

    fn forget_dels(&self, key: &str, n: i64) {
        if let Some(e) = self.lock().get_mut(key) {
            e.dels -= n;
        }
    }

    fn satisfied(&self, key: &str) -> bool {
        match self.lock().get(key) {
            None => true,
            Some(e) => (e.adds <= 0 && e.dels <= 0) || e.set.elapsed() > EXPECTATIONS_TTL,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Expectations>> {
        self.expectations.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Count what a pod change tells about the owner's expectations: a new pod is a create
    /// seen; a pod that starts terminating, or vanishes without having been seen
    /// terminating, is a deletion seen.
    fn observe(&self, owner_key: &str, change: &Change) {
        let deleting = |p: &Value| pods::is_deleting(p);
        match change.kind {
            EventKind::Added => self.forget_adds(owner_key, 1),
            EventKind::Modified => {
                let was = change.old.as_deref().is_some_and(deleting);
                if deleting(&change.object) && !was {
                    self.forget_dels(owner_key, 1);
                }
            }
            EventKind::Deleted => {
                let seen = change.old.as_deref().is_some_and(deleting) || deleting(&change.object);
                if !seen {
                    self.forget_dels(owner_key, 1);
                }
            }
        }
    }
}

fn owner_ref(kind: ReplicaKind, owner: &Value) -> Value {
    json!({
        "apiVersion": kind.api_version(),
        "kind": kind.kind(),
        "name": meta::name(owner),
        "uid": meta::uid(owner),
        "controller": true,
        "blockOwnerDeletion": true,
    })
}

fn owned_by(pod: &Value, owner: &Value) -> bool {
    controller_ref(pod)
        .and_then(|r| r.get("uid"))
        .and_then(Value::as_str)
        == meta::uid(owner)
}

/// The pod a template describes, owned by `owner`.
fn pod_from_template(kind: ReplicaKind, owner: &Value) -> Value {
    let template = owner
        .pointer("/spec/template")
        .cloned()
        .unwrap_or(json!({}));
    let name = meta::name(owner).unwrap_or("rs");
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": format!("{name}-"),
            "labels": template.pointer("/metadata/labels").cloned().unwrap_or(json!({})),
            "annotations": template.pointer("/metadata/annotations").cloned().unwrap_or(json!({})),
            "ownerReferences": [owner_ref(kind, owner)],
        },
        "spec": template.get("spec").cloned().unwrap_or(json!({})),
    })
}

/// The slow-start batch sizes for `n` creates: 1, 2, 4, ... (the last one what is left).
fn slow_start_batches(n: usize) -> Vec<usize> {
    let mut out = Vec::new();
    let (mut size, mut left) = (1, n);
    while left > 0 {
        let b = size.min(left);
        out.push(b);
        left -= b;
        size *= 2;
    }
    out
}

pub fn is_available(
    pod: &Value,
    min_ready_seconds: i64,
    now: chrono::DateTime<chrono::Utc>,
) -> bool {
    if !pods::is_ready(pod) {
        return false;
    }
    if min_ready_seconds <= 0 {
        return true;
    }
    let since = pods::condition(pod, "Ready")
        .and_then(|c| c.get("lastTransitionTime"))
        .and_then(Value::as_str)
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok());
    since.is_some_and(|t| (now - t.with_timezone(&chrono::Utc)).num_seconds() >= min_ready_seconds)
}

#[async_trait::async_trait]
impl Reconciler for ReplicaSetController {
    fn name(&self) -> &'static str {
        match self.kind {
            ReplicaKind::ReplicationController => "replication-controller",
            ReplicaKind::ReplicaSet => "replicaset-controller",
        }
    }

    fn informers(&self) -> Vec<InformerSpec> {
        vec![
            InformerSpec::all(self.kind.resource()),
            InformerSpec::all("pods"),
        ]
    }

    fn keys_for(&self, resource: &str, change: &Change, ctx: &Context) -> Vec<String> {
        if resource == self.kind.resource() {
            return vec![key_of(&change.object)];
        }
        let pod = &change.object;
        let ns = meta::namespace(pod).unwrap_or_default();
        let mut keys = Vec::new();
        for p in [Some(pod), change.old.as_ref()].into_iter().flatten() {
            if let Some(owner) = controller_ref(p) {
                if owner.get("kind").and_then(Value::as_str) == Some(self.kind.kind()) {
                    let key = format!(
                        "{ns}/{}",
                        owner.get("name").and_then(Value::as_str).unwrap_or("")
                    );
                    if !keys.contains(&key) {
                        keys.push(key);
                    }
                }
            }
        }
        if let Some(owner_key) = keys.first() {
            self.observe(owner_key, change);
        } else if pods::is_active(pod) {
            // An orphan: every owner whose selector matches may adopt it.
            for owner in ctx.cache(self.kind.resource()).list_namespace(ns) {
                if self
                    .kind
                    .selector(&owner)
                    .is_some_and(|s| s.matches_object(pod))
                {
                    keys.push(key_of(&owner));
                }
            }
        }
        keys
    }

    async fn reconcile(&self, key: &str, ctx: &Context) -> Result<Action, ReconcileError> {
        let Some(owner) = ctx.cache(self.kind.resource()).get(key) else {
            self.lock().remove(key);
            return Ok(Action::Done);
        };
        let (ns, _) = split_key(key);
        let ns = ns.unwrap_or("default");
        let Some(selector) = self.kind.selector(&owner) else {
            ctx.recorder
                .warning(
                    &owner,
                    "InvalidSelector",
                    "spec.selector is empty: no pods can be managed",
                )
                .await;
            return Ok(Action::Done);
        };
        let deleting_owner = pods::is_deleting(&owner);
        let mut active = Vec::new();
        for pod in ctx.cache("pods").list_namespace(ns) {
            let matches = selector.matches_object(&pod);
            if owned_by(&pod, &owner) {
                if !matches {
                    // It no longer matches: let it go, as ControllerRef release does.
                    if !deleting_owner {
                        self.release(ctx, &owner, &pod).await?;
                    }
                } else if pods::is_active(&pod) {
                    active.push(pod);
                }
            } else if matches
                && controller_ref(&pod).is_none()
                && pods::is_active(&pod)
                && !deleting_owner
                && self.adopt(ctx, &owner, &pod).await?
            {
                active.push(pod);
            }
        }
        if self.satisfied(key) && !deleting_owner {
            self.manage(key, ctx, &owner, &mut active, ns).await?;
        }
        self.write_status(ctx, &owner, &active, ns).await?;
        // Available counts depend on time (minReadySeconds); look again once it can change.
        let min_ready = owner
            .pointer("/spec/minReadySeconds")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        let waiting = active
            .iter()
            .any(|p| pods::is_ready(p) && !is_available(p, min_ready, chrono::Utc::now()));
        Ok(if min_ready > 0 && waiting {
            Action::RequeueAfter(Duration::from_secs(1))
        } else {
            Action::Done
        })
    }
}

impl ReplicaSetController {
    async fn adopt(
        &self,
        ctx: &Context,
        owner: &Value,
        pod: &Value,
    ) -> Result<bool, ReconcileError> {
        let ns = meta::namespace(pod).unwrap_or("default");
        let name = meta::name(pod).unwrap_or_default();
        let patch = json!({"metadata": {"ownerReferences": [owner_ref(self.kind, owner)],
            "resourceVersion": meta::resource_version(pod)}});
        match ctx
            .client
            .patch("pods", Some(ns), name, None, PatchType::Strategic, patch)
            .await
        {
            Ok(_) => Ok(true),
            // Someone else changed or removed it first; the next event brings it back.
            Err(ApiError::Conflict { .. }) | Err(ApiError::NotFound { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Drop this owner's reference from a pod that stopped matching its selector.
    async fn release(
        &self,
        ctx: &Context,
        owner: &Value,
        pod: &Value,
    ) -> Result<(), ReconcileError> {
        let ns = meta::namespace(pod).unwrap_or("default");
        let name = meta::name(pod).unwrap_or_default();
        let patch = json!({"metadata": {
            "ownerReferences": [{"$patch": "delete", "uid": meta::uid(owner)}],
            "uid": meta::uid(pod)}});
        match ctx
            .client
            .patch("pods", Some(ns), name, None, PatchType::Strategic, patch)
            .await
        {
            Ok(_) | Err(ApiError::NotFound { .. }) | Err(ApiError::Conflict { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    async fn manage(
        &self,
        key: &str,
        ctx: &Context,
        owner: &Value,
        active: &mut Vec<Arc<Value>>,
        ns: &str,
    ) -> Result<(), ReconcileError> {
        let want = owner
            .pointer("/spec/replicas")
            .and_then(Value::as_i64)
            .unwrap_or(1)
            .max(0) as usize;
        let have = active.len();
        if have < want {
            let n = (want - have).min(BURST);
            self.expect(key, n as i64, 0);
            let template = pod_from_template(self.kind, owner);
            let mut left = n;
            for batch in slow_start_batches(n) {
                let creates =
                    (0..batch).map(|_| ctx.client.create("pods", Some(ns), template.clone()));
                let results = join_all(creates).await;
                left -= batch;
                let mut failed = None;
                for r in results {
                    match r {
                        Ok(pod) => {
                            let msg =
                                format!("Created pod: {}", meta::name(&pod).unwrap_or_default());
                            ctx.recorder.normal(owner, "SuccessfulCreate", &msg).await;
                        }
                        Err(e) => {
                            // This create will never be observed.
                            self.forget_adds(key, 1);
                            ctx.recorder
                                .warning(owner, "FailedCreate", &format!("Error creating: {e}"))
                                .await;
                            failed = Some(e);
                        }
                    }
                }
                if let Some(e) = failed {
                    // The batches not attempted will not be observed either.
                    self.forget_adds(key, left as i64);
                    tracing::debug!(owner = key, skipped = left, error = %e, "pod creates failed");
                    return Err(e.into());
                }
            }
        } else if have > want {
            active.sort_by(|a, b| pods::deletion_order(a, b));
            let victims: Vec<_> = active.drain(..have - want).collect();
            self.expect(key, 0, victims.len() as i64);
            let deletes = victims.iter().map(|pod| {
                let name = meta::name(pod).unwrap_or_default().to_string();
                async move { (ctx.client.delete("pods", Some(ns), &name, None).await, name) }
            });
            let mut failed = None;
            for (r, name) in join_all(deletes).await {
                match r {
                    Ok(_) => {
                        ctx.recorder
                            .normal(owner, "SuccessfulDelete", &format!("Deleted pod: {name}"))
                            .await;
                    }
                    // Gone already: its deletion event may have been the one counted.
                    Err(ApiError::NotFound { .. }) => self.forget_dels(key, 1),
                    Err(e) => {
                        self.forget_dels(key, 1);
                        failed = Some(e);
                    }
                }
            }
            if let Some(e) = failed {
                return Err(e.into());
            }
        }
        Ok(())
    }

    async fn write_status(
        &self,
        ctx: &Context,
        owner: &Value,
        active: &[Arc<Value>],
        ns: &str,
    ) -> Result<(), ReconcileError> {
        let min_ready = owner
            .pointer("/spec/minReadySeconds")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        let template_labels = owner
            .pointer("/spec/template/metadata/labels")
            .and_then(Value::as_object);
        let fully_labeled = active
            .iter()
            .filter(|p| {
                template_labels.is_none_or(|tl| {
                    tl.iter().all(|(k, v)| {
                        p.pointer(&format!(
                            "/metadata/labels/{}",
                            k.replace('~', "~0").replace('/', "~1")
                        )) == Some(v)
                    })
                })
            })
            .count();
        let status = json!({
            "replicas": active.len(),
            "fullyLabeledReplicas": fully_labeled,
            "readyReplicas": active.iter().filter(|p| pods::is_ready(p)).count(),
            "availableReplicas": active.iter().filter(|p| is_available(p, min_ready, chrono::Utc::now())).count(),
            "observedGeneration": owner.pointer("/metadata/generation").cloned().unwrap_or(json!(1)),
        });
        let current = owner.get("status").cloned().unwrap_or(json!({}));
        let unchanged = [
            "replicas",
            "fullyLabeledReplicas",
            "readyReplicas",
            "availableReplicas",
            "observedGeneration",
        ]
        .iter()
        .all(|k| current.get(*k).cloned().unwrap_or(json!(0)) == status[*k]);
        if unchanged {
            return Ok(());
        }
        let name = meta::name(owner).unwrap_or_default();
        match ctx
            .client
            .patch(
                self.kind.resource(),
                Some(ns),
                name,
                Some("status"),
                PatchType::Merge,
                json!({"status": status}),
            )
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

    const RC: ReplicaKind = ReplicaKind::ReplicationController;
    const RS: ReplicaKind = ReplicaKind::ReplicaSet;

    #[test]
    fn template_pod_is_owned_by_its_owner_and_named_after_it() {
        let rs = json!({"metadata": {"name": "web", "uid": "u1"}, "spec": {"template": {
            "metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}});
        let pod = pod_from_template(RS, &rs);
        assert_eq!(pod["metadata"]["generateName"], "web-");
        assert_eq!(pod["metadata"]["labels"]["app"], "web");
        assert_eq!(pod["metadata"]["ownerReferences"][0]["uid"], "u1");
        assert_eq!(pod["metadata"]["ownerReferences"][0]["kind"], "ReplicaSet");
        assert_eq!(
            pod["metadata"]["ownerReferences"][0]["apiVersion"],
            "apps/v1"
        );
        assert!(owned_by(&pod, &rs));
        assert_eq!(
            pod_from_template(RC, &rs)["metadata"]["ownerReferences"][0]["kind"],
            "ReplicationController"
        );
    }

    fn change(kind: EventKind, object: Value, old: Option<Value>) -> Change {
        Change {
            kind,
            object: Arc::new(object),
            old: old.map(Arc::new),
        }
    }

    #[test]
    fn a_deletion_is_observed_when_the_pod_starts_terminating_and_only_once() {
        let c = ReplicaSetController::new(RS);
        c.expect("ns/web", 0, 2);
        let live = json!({"metadata": {"name": "a"}});
        let terminating =
            json!({"metadata": {"name": "a", "deletionTimestamp": "2026-01-01T00:00:00Z"}});
        c.observe(
            "ns/web",
            &change(EventKind::Modified, terminating.clone(), Some(live.clone())),
        );
        assert!(!c.satisfied("ns/web"));
        // Its final disappearance is the same deletion, not a second one.
        c.observe(
            "ns/web",
            &change(EventKind::Deleted, terminating.clone(), Some(terminating)),
        );
        assert!(!c.satisfied("ns/web"));
        c.observe("ns/web", &change(EventKind::Deleted, live, None));
        assert!(c.satisfied("ns/web"));
    }

    #[test]
    fn creates_are_observed_one_by_one_and_failed_ones_forgotten() {
        let c = ReplicaSetController::new(RC);
        c.expect("ns/web", 3, 0);
        c.observe("ns/web", &change(EventKind::Added, json!({}), None));
        assert!(!c.satisfied("ns/web"));
        c.forget_adds("ns/web", 2);
        assert!(c.satisfied("ns/web"));
    }

    #[test]
    fn creates_go_in_slow_start_batches() {
        assert_eq!(slow_start_batches(0), Vec::<usize>::new());
        assert_eq!(slow_start_batches(1), [1]);
        assert_eq!(slow_start_batches(10), [1, 2, 4, 3]);
        assert_eq!(slow_start_batches(15), [1, 2, 4, 8]);
    }

    #[test]
    fn selectors_are_read_per_kind_and_empty_ones_select_nothing() {
        assert!(RC.selector(&json!({"spec": {"selector": {}}})).is_none());
        assert!(RC.selector(&json!({"spec": {}})).is_none());
        assert!(RS.selector(&json!({"spec": {"selector": {}}})).is_none());
        let set = RS
            .selector(&json!({"spec": {"selector": {"matchExpressions": [
                {"key": "app", "operator": "In", "values": ["a", "b"]}]}}}))
            .expect("selector");
        assert!(set.matches_object(&json!({"metadata": {"labels": {"app": "b"}}})));
        assert!(!set.matches_object(&json!({"metadata": {"labels": {"app": "c"}}})));
        let map = RC
            .selector(&json!({"spec": {"selector": {"app": "a"}}}))
            .expect("selector");
        assert!(map.matches_object(&json!({"metadata": {"labels": {"app": "a"}}})));
    }

    #[test]
    fn availability_waits_for_min_ready_seconds() {
        let now = chrono::Utc::now();
        let ready_since = |secs: i64| {
            json!({"status": {"conditions": [{"type": "Ready", "status": "True",
            "lastTransitionTime": (now - chrono::Duration::seconds(secs)).to_rfc3339()}]}})
        };
        assert!(is_available(&ready_since(0), 0, now));
        assert!(!is_available(&ready_since(3), 10, now));
        assert!(is_available(&ready_since(11), 10, now));
    }
}
