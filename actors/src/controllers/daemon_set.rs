//! The DaemonSet controller, as `pkg/controller/daemon`: one pod per eligible node
//! (nodeSelector, required node affinity, taints against the pod's tolerations plus the
//! ones Kubernetes gives every daemon pod), placed by the scheduler through a required
//! node-affinity term `matchFields metadata.name In [node]`; pods on nodes that stop being
//! eligible, or that leave, are deleted; RollingUpdate (maxUnavailable or maxSurge, numbers
//! or percentages of the nodes that should run the pod) and OnDelete; history in
//! ControllerRevisions; the status counts `kubectl rollout status` reads.
//!
//! Each pass first makes every node hold the right number of pods (`manage`); only a
//! pass with nothing to do there, and no creates or deletions still unobserved
//! (expectations, as the ReplicaSet controller counts them), moves the rolling update on.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use futures::future::join_all;
use k8s_openapi::api::apps::v1 as apps;
use serde_json::{json, Value};

use super::history::{self, Created, NewRevision};
use super::owned;
use super::pods;
use crate::api::kinds::daemon_set as kind;
use crate::api::selector::LabelSelector;
use crate::api::{meta, ApiError};
use crate::client::{EventKind, PatchType};
use crate::runtime::{
    key_of, split_key, Action, Change, Context, InformerSpec, ReconcileError, Reconciler,
};

mod plan;

use plan::{daemon_pod, target_node};
pub use plan::{
    plan_manage, plan_rolling, rollout_limits, should_run, status_counts, DaemonPod, NodeFacts,
    Plan, Revision,
};

/// The pod label with the DaemonSet's template generation (kept for old clients).
pub const TEMPLATE_GENERATION_LABEL: &str = "pod-template-generation";

/// Expectations older than this are assumed lost (a watch event that never came).
const EXPECTATIONS_TTL: Duration = Duration::from_secs(300);
/// Back-off before deleting another failed pod on the same node: a kubelet that rejects
/// the pod would otherwise be fought in a hot loop.
const FAILED_BACKOFF_START: Duration = Duration::from_secs(1);
const FAILED_BACKOFF_MAX: Duration = Duration::from_secs(15 * 60);

/// Creates and deletions asked for but not yet observed, per DaemonSet key.
#[derive(Debug, Clone, Copy)]
struct Expectations {
    adds: i64,
    dels: i64,
    set: Instant,
}

#[derive(Default)]
pub struct DaemonSetController {
    expectations: Mutex<HashMap<String, Expectations>>,
    /// Per `<daemonset key>/<node>`: when a failed pod may next be deleted, and the delay
    /// after that.
    backoff: Mutex<HashMap<String, (Instant, Duration)>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl DaemonSetController {
    pub fn new() -> Self {
        Self::default()
    }

    fn expect(&self, key: &str, adds: i64, dels: i64) {
        lock(&self.expectations).insert(
            key.to_string(),
            Expectations {
                adds,
                dels,
                set: Instant::now(),
            },
        );
    }

    fn lower(&self, key: &str, adds: i64, dels: i64) {
        if let Some(e) = lock(&self.expectations).get_mut(key) {
            e.adds -= adds;
            e.dels -= dels;
        }
    }

    fn satisfied(&self, key: &str) -> bool {
        match lock(&self.expectations).get(key) {
            None => true,
            Some(e) => (e.adds <= 0 && e.dels <= 0) || e.set.elapsed() > EXPECTATIONS_TTL,
        }
    }

    /// A new pod is a create seen; a pod that starts terminating, or vanishes without
    /// having been seen terminating, is a deletion seen.
    fn observe(&self, owner_key: &str, change: &Change) {
        match change.kind {
            EventKind::Added => self.lower(owner_key, 1, 0),
            EventKind::Modified => {
                let was = change.old.as_deref().is_some_and(pods::is_deleting);
                if pods::is_deleting(&change.object) && !was {
                    self.lower(owner_key, 0, 1);
                }
            }
            EventKind::Deleted => {
                let seen = change.old.as_deref().is_some_and(pods::is_deleting)
                    || pods::is_deleting(&change.object);
                if !seen {
                    self.lower(owner_key, 0, 1);
                }
            }
        }
    }

    /// Whether the failed pod on `node` may be deleted now; if not, how long to wait.
    fn failed_backoff(&self, key: &str, node: &str, now: Instant) -> Result<(), Duration> {
        let mut b = lock(&self.backoff);
        let entry = b.entry(format!("{key}/{node}"));
        match entry {
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert((now + FAILED_BACKOFF_START, FAILED_BACKOFF_START * 2));
                Ok(())
            }
            std::collections::hash_map::Entry::Occupied(mut o) => {
                let (next, delay) = *o.get();
                if now < next {
                    return Err(next - now);
                }
                o.insert((now + delay, (delay * 2).min(FAILED_BACKOFF_MAX)));
                Ok(())
            }
        }
    }
}

/// Whether a node change can change which daemon pods it should run (a heartbeat cannot).
fn node_changed(change: &Change) -> bool {
    let Some(old) = change.old.as_deref() else {
        return true;
    };
    if change.kind != EventKind::Modified {
        return true;
    }
    let facts = |n: &Value| {
        (
            n.pointer("/metadata/labels").cloned(),
            n.pointer("/spec/taints").cloned(),
            n.pointer("/spec/unschedulable").cloned(),
            pods::condition(n, "Ready")
                .and_then(|c| c.get("status"))
                .cloned(),
        )
    };
    facts(old) != facts(&change.object)
}

fn selector(ds: &Value) -> Option<LabelSelector> {
    let raw = ds.pointer("/spec/selector")?;
    LabelSelector::from_label_selector_value(raw)
        .ok()
        .filter(|s| !s.is_empty())
}

#[async_trait::async_trait]
impl Reconciler for DaemonSetController {
    fn name(&self) -> &'static str {
        "daemonset-controller"
    }

    fn informers(&self) -> Vec<InformerSpec> {
        vec![
            InformerSpec::all("daemonsets"),
            InformerSpec::all("pods"),
            InformerSpec::all("nodes"),
            InformerSpec::all("controllerrevisions"),
        ]
    }

    fn keys_for(&self, resource: &str, change: &Change, ctx: &Context) -> Vec<String> {
        match resource {
            "daemonsets" => vec![key_of(&change.object)],
            "nodes" if node_changed(change) => ctx
                .cache("daemonsets")
                .list()
                .iter()
                .map(|d| key_of(d))
                .collect(),
            "nodes" => Vec::new(),
            _ => {
                let obj = &change.object;
                let mut keys: Vec<String> = [Some(obj), change.old.as_ref()]
                    .into_iter()
                    .flatten()
                    .filter_map(|o| owned::owner_key(o, "DaemonSet"))
                    .collect();
                keys.dedup();
                if resource == "pods" {
                    if let Some(k) = keys.first() {
                        self.observe(k, change);
                    }
                }
                if keys.is_empty() {
                    // An orphan: every DaemonSet whose selector matches may adopt it.
                    let ns = meta::namespace(obj).unwrap_or_default();
                    keys = ctx
                        .cache("daemonsets")
                        .list_namespace(ns)
                        .iter()
                        .filter(|d| selector(d).is_some_and(|s| s.matches_object(obj)))
                        .map(|d| key_of(d))
                        .collect();
                }
                keys
            }
        }
    }

    async fn reconcile(&self, key: &str, ctx: &Context) -> Result<Action, ReconcileError> {
        let Some(raw) = ctx.cache("daemonsets").get(key) else {
            lock(&self.expectations).remove(key);
            lock(&self.backoff).retain(|k, _| !k.starts_with(&format!("{key}/")));
            return Ok(Action::Done);
        };
        let ds: apps::DaemonSet = serde_json::from_value((*raw).clone())
            .map_err(|e| ReconcileError::Invalid(format!("daemonset {key}: {e}")))?;
        let Some(sel) = selector(&raw) else {
            ctx.recorder
                .warning(
                    &raw,
                    "SelectingAll",
                    "This daemon set is selecting all pods. A non-empty selector is required.",
                )
                .await;
            return Ok(Action::Done);
        };
        // A DaemonSet being deleted leaves its pods to the garbage collector.
        if pods::is_deleting(&raw) {
            return Ok(Action::Done);
        }
        let (ns, _) = split_key(key);
        let ns = ns.unwrap_or("default").to_string();
        let run = Sync {
            ctrl: self,
            ctx,
            key,
            raw: &raw,
            ds: &ds,
            ns: &ns,
            selector: sel,
        };
        run.sync().await
    }
}

/// One reconcile of one DaemonSet.
struct Sync<'a> {
    ctrl: &'a DaemonSetController,
    ctx: &'a Context,
    key: &'a str,
    raw: &'a Value,
    ds: &'a apps::DaemonSet,
    ns: &'a str,
    selector: LabelSelector,
}

impl Sync<'_> {
    fn min_ready(&self) -> i64 {
        i64::from(self.ds.spec.min_ready_seconds.unwrap_or(0))
    }

    fn strategy(&self) -> &str {
        self.ds
            .spec
            .update_strategy
            .as_ref()
            .and_then(|s| s.type_.as_deref())
            .unwrap_or("RollingUpdate")
    }

    fn reference(&self) -> Value {
        owned::owner_ref("apps/v1", "DaemonSet", self.raw)
    }

    async fn sync(&self) -> Result<Action, ReconcileError> {
        let (current, old) = self.history().await?;
        let Some(current) = current else {
            // A hash collision moved the collision count; the status write brings us back.
            return Ok(Action::RequeueAfter(Duration::from_millis(100)));
        };
        let rev = Revision {
            hash: history::hash_label(&current)
                .unwrap_or_default()
                .to_string(),
            generation: kind::template_generation(self.ds),
        };
        let candidates = self.ctx.cache("pods").list_namespace(self.ns);
        let owned_pods = owned::claim(
            self.ctx,
            "pods",
            self.raw,
            &self.reference(),
            &self.selector,
            candidates,
        )
        .await?;
        let judge = daemon_pod(self.raw, &rev.hash, rev.generation, None);
        let nodes: Vec<NodeFacts> = self
            .ctx
            .cache("nodes")
            .list()
            .iter()
            .map(|n| {
                let (should_run, should_continue) = should_run(&judge, n);
                NodeFacts {
                    name: meta::name(n).unwrap_or_default().to_string(),
                    should_run,
                    should_continue,
                }
            })
            .collect();
        let mut by_node: BTreeMap<String, Vec<DaemonPod>> = BTreeMap::new();
        for p in &owned_pods {
            // Pods that are finished and being deleted are as good as gone.
            if pods::is_terminated(p) && pods::is_deleting(p) {
                continue;
            }
            if let Some(node) = target_node(p) {
                by_node.entry(node).or_default().push(DaemonPod::of(p));
            }
        }
        let now = Utc::now();
        let min_ready = self.min_ready();
        let surge_cfg = rollout_limits(
            self.ds,
            nodes.iter().filter(|n| n.should_run).count() as i32,
        );
        let rolling = self.strategy() == "RollingUpdate";
        let mut requeue = None;
        if self.ctrl.satisfied(self.key) {
            let surge = rolling && surge_cfg.0 > 0;
            let mut plan = plan_manage(&nodes, &by_node, surge, &rev, min_ready, now);
            requeue = self.apply_backoff(&mut plan);
            if plan.is_empty() && rolling {
                plan = plan_rolling(
                    &nodes,
                    &by_node,
                    surge_cfg.0,
                    surge_cfg.1,
                    &rev,
                    min_ready,
                    now,
                );
            }
            self.execute(&plan, &rev).await?;
            let live = |r: &Value| {
                let h = history::hash_label(r);
                h.is_some() && by_node.values().flatten().any(|p| p.hash.as_deref() == h)
            };
            let limit = self.ds.spec.revision_history_limit.unwrap_or(10).max(0) as usize;
            history::truncate(self.ctx, &old, limit, live).await?;
        }
        let counts = status_counts(&nodes, &by_node, &rev, min_ready, now);
        self.write_status(counts.clone()).await?;
        // Availability depends on time: look again once minReadySeconds can have passed.
        let waiting = min_ready > 0 && counts.number_ready != counts.number_available.unwrap_or(0);
        if waiting {
            let again = Duration::from_secs(min_ready as u64);
            requeue = Some(requeue.map_or(again, |r: Duration| r.min(again)));
        }
        Ok(requeue.map_or(Action::Done, Action::RequeueAfter))
    }

    /// Keep only the failed pods whose node's back-off allows a deletion now; the
    /// earliest wait is returned to look again then.
    fn apply_backoff(&self, plan: &mut Plan) -> Option<Duration> {
        let now = Instant::now();
        let mut wait: Option<Duration> = None;
        for (node, pod) in std::mem::take(&mut plan.failed) {
            match self.ctrl.failed_backoff(self.key, &node, now) {
                Ok(()) => plan.delete.push(pod),
                Err(d) => wait = Some(wait.map_or(d, |w| w.min(d))),
            }
        }
        wait
    }

    async fn execute(&self, plan: &Plan, rev: &Revision) -> Result<(), ReconcileError> {
        if plan.create.is_empty() && plan.delete.is_empty() && plan.force.is_empty() {
            return Ok(());
        }
        let ctx = self.ctx;
        self.ctrl
            .expect(self.key, plan.create.len() as i64, plan.delete.len() as i64);
        let creates = plan.create.iter().map(|node| {
            let pod = daemon_pod(self.raw, &rev.hash, rev.generation, Some(node));
            async move { ctx.client.create("pods", Some(self.ns), pod).await }
        });
        let deletes = plan.delete.iter().map(|name| async move {
            (
                ctx.client.delete("pods", Some(self.ns), name, None).await,
                name,
            )
        });
        let forced = plan.force.iter().map(|name| async move {
            (
                ctx.client.delete_now("pods", Some(self.ns), name).await,
                name,
            )
        });
        let (created, deleted, forced) =
            futures::join!(join_all(creates), join_all(deletes), join_all(forced));
        let mut failed = None;
        for r in created {
            match r {
                Ok(pod) => {
                    let msg = format!("Created pod: {}", meta::name(&pod).unwrap_or_default());
                    ctx.recorder
                        .normal(self.raw, "SuccessfulCreate", &msg)
                        .await;
                }
                Err(e) => {
                    // This create will never be observed.
                    self.ctrl.lower(self.key, 1, 0);
                    ctx.recorder
                        .warning(self.raw, "FailedCreate", &format!("Error creating: {e}"))
                        .await;
                    failed = Some(e);
                }
            }
        }
        // Forced deletions are not expected: the pod may have been terminating already, so
        // its disappearance would not be counted.
        for (r, name) in forced {
            match r {
                Ok(_) | Err(ApiError::NotFound { .. }) => {
                    let msg = format!("Deleted pod: {name}");
                    ctx.recorder
                        .normal(self.raw, "SuccessfulDelete", &msg)
                        .await;
                }
                Err(e) => failed = Some(e),
            }
        }
        for (r, name) in deleted {
            match r {
                Ok(_) => {
                    let msg = format!("Deleted pod: {name}");
                    ctx.recorder
                        .normal(self.raw, "SuccessfulDelete", &msg)
                        .await;
                }
                Err(ApiError::NotFound { .. }) => self.ctrl.lower(self.key, 0, 1),
                Err(e) => {
                    self.ctrl.lower(self.key, 0, 1);
                    failed = Some(e);
                }
            }
        }
        match failed {
            Some(e) => Err(e.into()),
            None => Ok(()),
        }
    }

    /// `constructHistory`: the revision recording the current template (made if there is
    /// none, renumbered to be the highest if an older one came back) and the others.
    async fn history(&self) -> Result<(Option<Value>, Vec<Arc<Value>>), ReconcileError> {
        let candidates = self
            .ctx
            .cache("controllerrevisions")
            .list_namespace(self.ns);
        let revisions = owned::claim(
            self.ctx,
            "controllerrevisions",
            self.raw,
            &self.reference(),
            &self.selector,
            candidates,
        )
        .await?;
        let template = self
            .raw
            .pointer("/spec/template")
            .cloned()
            .unwrap_or_else(|| json!({}));
        let data = history::revision_data(&template);
        let (mut current, old): (Vec<_>, Vec<_>) = revisions
            .into_iter()
            .partition(|r| history::matches(r, &data));
        let next = history::max_number(&old) + 1;
        current.sort_by_key(|r| history::number(r));
        // Duplicates of the current revision: keep the highest numbered.
        let keep = current.pop();
        for dup in current {
            let name = meta::name(&dup).unwrap_or_default();
            match self
                .ctx
                .client
                .delete("controllerrevisions", Some(self.ns), name, None)
                .await
            {
                Ok(_) | Err(ApiError::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        if let Some(cur) = keep {
            if history::number(&cur) < next {
                return Ok((Some(history::renumber(self.ctx, &cur, next).await?), old));
            }
            return Ok((Some((*cur).clone()), old));
        }
        let collisions = self.ds.status.as_ref().and_then(|s| s.collision_count);
        let hash = crate::controllers::deployment::template_hash(&template, collisions);
        let name = history::revision_name(meta::name(self.raw).unwrap_or("ds"), &hash);
        let new = NewRevision {
            owner: self.raw,
            reference: self.reference(),
            name,
            hash: &hash,
            data,
            revision: next,
            annotations: self.raw.pointer("/metadata/annotations").cloned(),
        };
        match history::create(self.ctx, self.ns, new).await? {
            Created::Revision(r) => Ok((Some(r), old)),
            Created::Collision => {
                let count = collisions.unwrap_or(0) + 1;
                tracing::info!(
                    daemonset = self.key,
                    count,
                    "hash collision; collisionCount moves"
                );
                self.patch_status(json!({"collisionCount": count})).await?;
                Ok((None, old))
            }
        }
    }

    async fn write_status(&self, counts: apps::DaemonSetStatus) -> Result<(), ReconcileError> {
        let mut status = serde_json::to_value(&counts).unwrap_or_else(|_| json!({}));
        status["observedGeneration"] = json!(self.ds.metadata.generation.unwrap_or(0));
        let current = self.raw.get("status").cloned().unwrap_or_else(|| json!({}));
        let fields = [
            "desiredNumberScheduled",
            "currentNumberScheduled",
            "numberMisscheduled",
            "numberReady",
            "numberAvailable",
            "numberUnavailable",
            "updatedNumberScheduled",
            "observedGeneration",
        ];
        let zero = json!(0);
        let unchanged = fields
            .iter()
            .all(|f| current.get(*f).unwrap_or(&zero) == status.get(*f).unwrap_or(&zero));
        if unchanged {
            return Ok(());
        }
        let patch: serde_json::Map<String, Value> = fields
            .iter()
            .map(|f| (f.to_string(), status.get(*f).cloned().unwrap_or(json!(0))))
            .collect();
        self.patch_status(Value::Object(patch)).await
    }

    async fn patch_status(&self, status: Value) -> Result<(), ReconcileError> {
        let name = meta::name(self.raw).unwrap_or_default();
        match self
            .ctx
            .client
            .patch(
                "daemonsets",
                Some(self.ns),
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
mod tests;
