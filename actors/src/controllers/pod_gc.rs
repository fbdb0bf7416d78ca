//! The pod garbage collector (kube-controller-manager's `podgc`):
//!
//! - a pod bound to a node that no longer exists is marked Failed with a
//!   `DisruptionTarget` condition and force-deleted, once the node has been missing from
//!   the cache for a short quarantine and a fresh read confirms it is gone (a pod can be
//!   bound to a node the cache has not seen yet);
//! - a terminating pod on a node tainted `node.kubernetes.io/out-of-service` that is not
//!   ready is force-deleted, so that its volumes and name are freed for a replacement;
//! - a terminating pod that was never scheduled is force-deleted (no kubelet will);
//! - when more terminated (Succeeded or Failed) pods exist than
//!   `terminated_pod_gc_threshold`, the oldest beyond it are deleted, evicted ones first.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use tracing::Instrument;

use super::pods;
use super::taints::{self, OUT_OF_SERVICE};
use crate::api::strategy::typed;
use crate::api::{meta, ApiError};
use crate::client::{EventKind, PatchType};
use crate::runtime::{
    key_of, split_key, Action, Change, Context, InformerSpec, ReconcileError, Reconciler,
    SharedClock, NODE_NAME,
};

/// The key under which the terminated-pod threshold is reconciled (not a pod's key:
/// those always hold a `/`).
const TERMINATED_KEY: &str = "terminated-pods";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PodGcConfig {
    /// Terminated pods kept before the oldest are deleted; 0 keeps them all (Kubernetes'
    /// `--terminated-pod-gc-threshold`, default 12,500).
    pub terminated_threshold: usize,
    /// How long a pod's node must be missing from the cache before it is looked up.
    pub quarantine: Duration,
}

impl Default for PodGcConfig {
    fn default() -> Self {
        PodGcConfig {
            terminated_threshold: 12_500,
            quarantine: Duration::from_secs(5),
        }
    }
}

pub struct PodGcController {
    config: PodGcConfig,
    clock: SharedClock,
    /// When a pod's node was first found missing, by pod key.
    missing_since: Mutex<HashMap<String, DateTime<Utc>>>,
}

impl PodGcController {
    pub fn new(config: PodGcConfig, clock: SharedClock) -> Self {
        PodGcController {
            config,
            clock,
            missing_since: Mutex::new(HashMap::new()),
        }
    }

    fn missing(&self) -> std::sync::MutexGuard<'_, HashMap<String, DateTime<Utc>>> {
        self.missing_since.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What should happen to one pod, judged from the caches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Keep,
    /// Its node is not in the cache: confirm, then delete.
    Orphaned,
    /// Terminating where no kubelet will finish it: force-delete.
    ForceDelete,
}

fn judge(pod: &Value, node: Option<&Value>) -> Verdict {
    let deleting = pods::is_deleting(pod);
    let Some(_) = pods::node_name(pod) else {
        return if deleting {
            Verdict::ForceDelete
        } else {
            Verdict::Keep
        };
    };
    let Some(node) = node else {
        return Verdict::Orphaned;
    };
    if deleting && !pods::condition_true(node, "Ready") {
        let out_of_service = typed::<k8s_openapi::api::core::v1::Node>(node).is_some_and(|n| {
            taints::has(&n, OUT_OF_SERVICE, taints::NO_EXECUTE)
                || taints::has(&n, OUT_OF_SERVICE, taints::NO_SCHEDULE)
        });
        if out_of_service {
            return Verdict::ForceDelete;
        }
    }
    Verdict::Keep
}

fn was_evicted(pod: &Value) -> bool {
    pod.pointer("/status/reason").and_then(Value::as_str) == Some("Evicted")
}

/// The order terminated pods are collected in: evicted ones first, then oldest first
/// (Kubernetes' `byEvictionAndCreationTimestamp`), the name breaking ties.
fn collection_order(a: &Value, b: &Value) -> Ordering {
    let created = |p: &Value| {
        p.pointer("/metadata/creationTimestamp")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    was_evicted(b)
        .cmp(&was_evicted(a))
        .then_with(|| created(a).cmp(&created(b)))
        .then_with(|| key_of(a).cmp(&key_of(b)))
}

/// The terminated pods to delete so that at most `threshold` remain.
fn beyond_threshold(
    terminated: &mut [std::sync::Arc<Value>],
    threshold: usize,
) -> &[std::sync::Arc<Value>] {
    if threshold == 0 || terminated.len() <= threshold {
        return &[];
    }
    terminated.sort_by(|a, b| collection_order(a, b));
    let extra = terminated.len() - threshold;
    &terminated[..extra]
}

#[async_trait::async_trait]
impl Reconciler for PodGcController {
    fn name(&self) -> &'static str {
        "pod-garbage-collector"
    }

    fn informers(&self) -> Vec<InformerSpec> {
        vec![InformerSpec::all("pods"), InformerSpec::all("nodes")]
    }

    fn keys_for(&self, resource: &str, change: &Change, ctx: &Context) -> Vec<String> {
        if resource == "nodes" {
            let name = meta::name(&change.object).unwrap_or_default();
            let on_node = ctx.cache("pods").by_index(NODE_NAME, name);
            return match change.kind {
                // Every pod of a deleted node is now an orphan.
                EventKind::Deleted => on_node.iter().map(|p| key_of(p)).collect(),
                // Terminating pods of a node just put out of service.
                _ => on_node
                    .iter()
                    .filter(|p| pods::is_deleting(p))
                    .map(|p| key_of(p))
                    .collect(),
            };
        }
        if change.kind == EventKind::Deleted {
            self.missing().remove(&key_of(&change.object));
            return vec![];
        }
        let pod = &change.object;
        let mut keys = Vec::new();
        let node = pods::node_name(pod).and_then(|n| ctx.cache("nodes").get(n));
        if judge(pod, node.as_deref()) != Verdict::Keep {
            keys.push(key_of(pod));
        }
        let newly_terminated = pods::is_terminated(pod)
            && change
                .old
                .as_deref()
                .is_none_or(|o| !pods::is_terminated(o));
        if newly_terminated && self.config.terminated_threshold > 0 {
            keys.push(TERMINATED_KEY.to_string());
        }
        keys
    }

    async fn reconcile(&self, key: &str, ctx: &Context) -> Result<Action, ReconcileError> {
        if key == TERMINATED_KEY {
            let span = tracing::debug_span!("gc_terminated");
            return self.gc_terminated(ctx).instrument(span).await;
        }
        let span = tracing::debug_span!("gc_pod", pod = %key);
        self.gc_pod(key, ctx).instrument(span).await
    }
}

impl PodGcController {
    async fn gc_pod(&self, key: &str, ctx: &Context) -> Result<Action, ReconcileError> {
        let Some(pod) = ctx.cache("pods").get(key) else {
            self.missing().remove(key);
            return Ok(Action::Done);
        };
        let node_name = pods::node_name(&pod).map(str::to_string);
        let node = node_name.as_deref().and_then(|n| ctx.cache("nodes").get(n));
        match judge(&pod, node.as_deref()) {
            Verdict::Keep => {
                self.missing().remove(key);
                Ok(Action::Done)
            }
            Verdict::ForceDelete => {
                tracing::info!("force-deleting a terminating pod no kubelet will finish");
                self.fail_and_delete(key, &pod, None, ctx).await
            }
            Verdict::Orphaned => {
                let now = self.clock.now();
                let since = *self.missing().entry(key.to_string()).or_insert(now);
                let ripe =
                    since + chrono::Duration::from_std(self.config.quarantine).unwrap_or_default();
                if now < ripe {
                    let wait = (ripe - now).to_std().unwrap_or(Duration::ZERO);
                    return Ok(Action::RequeueAfter(self.clock.sleep_for(wait)));
                }
                let node_name = node_name.unwrap_or_default();
                match ctx.client.get("nodes", None, &node_name).await {
                    // The cache was behind: the node exists.
                    Ok(_) => {
                        self.missing().remove(key);
                        return Ok(Action::Done);
                    }
                    Err(ApiError::NotFound { .. }) => {}
                    Err(e) => return Err(e.into()),
                }
                tracing::info!(node = %node_name, "deleting a pod whose node no longer exists");
                let condition = json!({"type": "DisruptionTarget", "status": "True",
                    "reason": "DeletionByPodGC", "message": "PodGC: node no longer exists",
                    "lastTransitionTime": meta::now_rfc3339()});
                let done = self.fail_and_delete(key, &pod, Some(condition), ctx).await;
                self.missing().remove(key);
                done
            }
        }
    }

    /// Kubernetes' `markFailedAndDeletePodWithCondition`: a pod not yet terminal is marked
    /// Failed (with the condition, when given), then deleted without a grace period.
    async fn fail_and_delete(
        &self,
        key: &str,
        pod: &Value,
        condition: Option<Value>,
        ctx: &Context,
    ) -> Result<Action, ReconcileError> {
        let (ns, name) = split_key(key);
        if !pods::is_terminated(pod) {
            let mut status = json!({"phase": "Failed"});
            if let Some(c) = condition {
                status["conditions"] = json!([c]);
            }
            match ctx
                .client
                .patch(
                    "pods",
                    ns,
                    name,
                    Some("status"),
                    PatchType::Strategic,
                    json!({ "status": status }),
                )
                .await
            {
                Ok(_) => {}
                Err(ApiError::NotFound { .. }) => return Ok(Action::Done),
                Err(e) => return Err(e.into()),
            }
        }
        match ctx.client.delete_now("pods", ns, name).await {
            Ok(_) | Err(ApiError::NotFound { .. }) => Ok(Action::Done),
            Err(e) => Err(e.into()),
        }
    }

    async fn gc_terminated(&self, ctx: &Context) -> Result<Action, ReconcileError> {
        let mut terminated: Vec<_> = ctx
            .cache("pods")
            .list()
            .into_iter()
            .filter(|p| pods::is_terminated(p) && !pods::is_deleting(p))
            .collect();
        let doomed = beyond_threshold(&mut terminated, self.config.terminated_threshold);
        if doomed.is_empty() {
            return Ok(Action::Done);
        }
        tracing::info!(
            count = doomed.len(),
            threshold = self.config.terminated_threshold,
            "deleting terminated pods beyond the threshold"
        );
        for pod in doomed {
            self.fail_and_delete(&key_of(pod), pod, None, ctx).await?;
        }
        Ok(Action::Done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn pod(name: &str, created: &str, phase: &str) -> Arc<Value> {
        Arc::new(json!({"metadata": {"name": name, "namespace": "default",
            "creationTimestamp": created}, "spec": {"nodeName": "n1"},
            "status": {"phase": phase}}))
    }

    #[test]
    fn pods_on_a_missing_node_are_orphans_and_unscheduled_terminating_ones_are_forced() {
        let bound = pod("a", "2026-01-01T00:00:00Z", "Running");
        assert_eq!(judge(&bound, None), Verdict::Orphaned);
        let ready = json!({"status": {"conditions": [{"type": "Ready", "status": "True"}]}});
        assert_eq!(judge(&bound, Some(&ready)), Verdict::Keep);
        let unscheduled = json!({"metadata": {"name": "u", "deletionTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {}});
        assert_eq!(judge(&unscheduled, None), Verdict::ForceDelete);
        let pending = json!({"metadata": {"name": "p"}, "spec": {}});
        assert_eq!(judge(&pending, None), Verdict::Keep);
    }

    #[test]
    fn terminating_pods_are_forced_only_on_a_not_ready_out_of_service_node() {
        let mut deleting = (*pod("a", "2026-01-01T00:00:00Z", "Running")).clone();
        deleting["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:01:00Z");
        let down = |taints: Value| {
            json!({"metadata": {"name": "n1"}, "spec": {"taints": taints},
                "status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}})
        };
        let oos = json!([{"key": OUT_OF_SERVICE, "value": "nodeshutdown", "effect": "NoExecute"}]);
        assert_eq!(
            judge(&deleting, Some(&down(oos.clone()))),
            Verdict::ForceDelete
        );
        assert_eq!(judge(&deleting, Some(&down(json!([])))), Verdict::Keep);
        let mut up = down(oos);
        up["status"]["conditions"][0]["status"] = json!("True");
        assert_eq!(
            judge(&deleting, Some(&up)),
            Verdict::Keep,
            "a ready node's kubelet finishes it"
        );
    }

    #[test]
    fn the_oldest_terminated_pods_beyond_the_threshold_go_evicted_first() {
        let mut evicted = (*pod("e", "2026-01-01T00:05:00Z", "Failed")).clone();
        evicted["status"]["reason"] = json!("Evicted");
        let mut all = vec![
            pod("new", "2026-01-01T00:04:00Z", "Succeeded"),
            pod("old", "2026-01-01T00:01:00Z", "Succeeded"),
            Arc::new(evicted),
            pod("mid", "2026-01-01T00:02:00Z", "Failed"),
        ];
        let names = |ps: &[Arc<Value>]| -> Vec<String> {
            ps.iter()
                .map(|p| p["metadata"]["name"].as_str().unwrap().to_string())
                .collect()
        };
        assert_eq!(names(beyond_threshold(&mut all, 2)), ["e", "old"]);
        assert!(beyond_threshold(&mut all, 4).is_empty());
        assert!(
            beyond_threshold(&mut all, 0).is_empty(),
            "0 keeps every pod"
        );
    }

    #[test]
    fn the_default_threshold_and_quarantine() {
        let c = PodGcConfig::default();
        assert_eq!(c.terminated_threshold, 12_500);
        assert_eq!(c.quarantine, Duration::from_secs(5));
    }
}
