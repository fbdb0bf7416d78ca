//! The taint eviction controller (kube-controller-manager's `taint-eviction-controller`,
//! formerly the NoExecuteTaintManager): a pod bound to a node with `NoExecute` taints is
//! deleted at once when it does not tolerate all of them, after the shortest
//! `tolerationSeconds` of the tolerations it uses when it does, and never when those
//! tolerate for ever. The not-ready and unreachable taints the node lifecycle controller
//! sets are such taints, so this is how pods leave a lost node; a user's
//! `kubectl taint nodes n key=value:NoExecute` is another.
//!
//! A toleration runs from the taint's `timeAdded` (when the controller that set it wrote
//! one) or from when this controller first saw the taint, so a restarted controller-manager
//! does not give pods a fresh toleration.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::{Node, Pod, Taint};
use serde_json::json;
use tracing::Instrument;

use super::pods;
use super::taints::{self, NO_EXECUTE};
use crate::api::strategy::typed;
use crate::api::{meta, ApiError};
use crate::client::{EventKind, PatchType};
use crate::runtime::{
    from_time, key_of, split_key, Action, Change, Context, InformerSpec, ReconcileError,
    Reconciler, SharedClock, NODE_NAME,
};

/// Wake a little after a deadline: the timestamps compared are whole seconds.
const SLACK: Duration = Duration::from_millis(100);

/// Evicts pods from nodes with NoExecute taints they do not tolerate (for long enough).
pub struct TaintEvictionController {
    clock: SharedClock,
    /// When a NoExecute taint without `timeAdded` was first seen, by node and taint.
    first_seen: Mutex<HashMap<(String, String, String), DateTime<Utc>>>,
}

impl TaintEvictionController {
    pub fn new(clock: SharedClock) -> Self {
        TaintEvictionController {
            clock,
            first_seen: Mutex::new(HashMap::new()),
        }
    }

    /// Since when the taint has been on the node.
    fn since(&self, node: &str, taint: &Taint, now: DateTime<Utc>) -> DateTime<Utc> {
        if let Some(t) = &taint.time_added {
            return from_time(t);
        }
        let key = (
            node.to_string(),
            taint.key.clone(),
            taint.value.clone().unwrap_or_default(),
        );
        *self
            .first_seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key)
            .or_insert(now)
    }

    /// Forget first sightings of taints the node no longer has.
    fn forget_gone(&self, node: &str, present: &[&Taint]) {
        self.first_seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(n, k, v), _| {
                n != node
                    || present
                        .iter()
                        .any(|t| &t.key == k && t.value.as_deref().unwrap_or("") == v)
            });
    }
}

/// When the pod must leave a node with these NoExecute taints, each paired with since when
/// it has been there: now for a taint it does not tolerate, `since + tolerationSeconds` of
/// the first toleration that matches (Kubernetes' `GetMatchingTolerations`), the earliest
/// of those; `None` when every taint is tolerated for ever.
pub fn eviction_time(
    pod: &Pod,
    taints: &[(&Taint, DateTime<Utc>)],
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let tolerations = taints::tolerations(pod);
    let mut earliest: Option<DateTime<Utc>> = None;
    for (taint, since) in taints {
        let at = match tolerations.iter().find(|t| taints::tolerates(t, taint)) {
            None => Some(now),
            Some(t) => t
                .toleration_seconds
                .map(|s| *since + chrono::Duration::seconds(s.max(0))),
        };
        if let Some(at) = at {
            earliest = Some(earliest.map_or(at, |e| e.min(at)));
        }
    }
    earliest
}

fn no_execute_changed(change: &Change) -> bool {
    let effects = |v: &serde_json::Value| -> Vec<serde_json::Value> {
        v.pointer("/spec/taints")
            .and_then(|t| t.as_array())
            .map(|ts| {
                ts.iter()
                    .filter(|t| t.get("effect").and_then(|e| e.as_str()) == Some(NO_EXECUTE))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    };
    let new = effects(&change.object);
    match &change.old {
        Some(old) => effects(old) != new,
        None => !new.is_empty(),
    }
}

#[async_trait::async_trait]
impl Reconciler for TaintEvictionController {
    fn name(&self) -> &'static str {
        "taint-eviction-controller"
    }

    fn informers(&self) -> Vec<InformerSpec> {
        vec![InformerSpec::all("pods"), InformerSpec::all("nodes")]
    }

    fn keys_for(&self, resource: &str, change: &Change, ctx: &Context) -> Vec<String> {
        if change.kind == EventKind::Deleted {
            return vec![];
        }
        if resource == "nodes" {
            if !no_execute_changed(change) {
                return vec![];
            }
            let name = meta::name(&change.object).unwrap_or_default();
            return ctx
                .cache("pods")
                .by_index(NODE_NAME, name)
                .iter()
                .map(|p| key_of(p))
                .collect();
        }
        // A pod matters only on a node that has NoExecute taints now.
        let Some(node) = pods::node_name(&change.object) else {
            return vec![];
        };
        let tainted = ctx.cache("nodes").get(node).is_some_and(|n| {
            n.pointer("/spec/taints")
                .and_then(|t| t.as_array())
                .is_some_and(|ts| {
                    ts.iter()
                        .any(|t| t.get("effect").and_then(|e| e.as_str()) == Some(NO_EXECUTE))
                })
        });
        if tainted {
            vec![key_of(&change.object)]
        } else {
            vec![]
        }
    }

    async fn reconcile(&self, key: &str, ctx: &Context) -> Result<Action, ReconcileError> {
        let span = tracing::debug_span!("taint_eviction", pod = %key);
        self.sync(key, ctx).instrument(span).await
    }
}

impl TaintEvictionController {
    async fn sync(&self, key: &str, ctx: &Context) -> Result<Action, ReconcileError> {
        let Some(pod_value) = ctx.cache("pods").get(key) else {
            return Ok(Action::Done);
        };
        if pods::is_deleting(&pod_value) {
            return Ok(Action::Done);
        }
        let Some(node_name) = pods::node_name(&pod_value).map(str::to_string) else {
            return Ok(Action::Done);
        };
        let Some(node) = ctx
            .cache("nodes")
            .get(&node_name)
            .and_then(|n| typed::<Node>(&n))
        else {
            // A pod on a node that is gone is the pod garbage collector's.
            return Ok(Action::Done);
        };
        let Some(pod) = typed::<Pod>(&pod_value) else {
            return Ok(Action::Done);
        };
        let now = self.clock.now();
        let present: Vec<&Taint> = taints::with_effect(&node, NO_EXECUTE).collect();
        self.forget_gone(&node_name, &present);
        let timed: Vec<(&Taint, DateTime<Utc>)> = present
            .iter()
            .map(|t| (*t, self.since(&node_name, t, now)))
            .collect();
        let Some(at) = eviction_time(&pod, &timed, now) else {
            return Ok(Action::Done);
        };
        if at > now {
            let wait = (at - now).to_std().unwrap_or(Duration::ZERO) + SLACK;
            return Ok(Action::RequeueAfter(self.clock.sleep_for(wait)));
        }
        self.evict(key, &pod_value, ctx).await
    }

    /// Mark the pod as disrupted (so its controller and PodDisruptionBudgets can tell why)
    /// and delete it with its own grace period.
    async fn evict(
        &self,
        key: &str,
        pod: &serde_json::Value,
        ctx: &Context,
    ) -> Result<Action, ReconcileError> {
        let (ns, name) = split_key(key);
        let now = meta::now_rfc3339();
        let condition = json!({"status": {"conditions": [{"type": "DisruptionTarget",
            "status": "True", "reason": "DeletionByTaintManager",
            "message": "Taint manager: deleting due to NoExecute taint",
            "lastTransitionTime": now}]}});
        match ctx
            .client
            .patch(
                "pods",
                ns,
                name,
                Some("status"),
                PatchType::Strategic,
                condition,
            )
            .await
        {
            Ok(_) => {}
            Err(ApiError::NotFound { .. }) => return Ok(Action::Done),
            Err(e) => return Err(e.into()),
        }
        match ctx.client.delete("pods", ns, name, None).await {
            Ok(_) => {
                tracing::info!("evicting pod from a node with a NoExecute taint");
                let ns = ns.unwrap_or("default");
                ctx.recorder
                    .normal(
                        pod,
                        "TaintManagerEviction",
                        &format!("Marking for deletion Pod {ns}/{name}"),
                    )
                    .await;
                Ok(Action::Done)
            }
            Err(ApiError::NotFound { .. }) => Ok(Action::Done),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::to_time;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn pod(tolerations: serde_json::Value) -> Pod {
        serde_json::from_value(json!({"spec": {"containers": [], "tolerations": tolerations}}))
            .unwrap()
    }

    fn taint(key: &str) -> Taint {
        Taint {
            key: key.into(),
            value: None,
            effect: NO_EXECUTE.into(),
            time_added: None,
        }
    }

    #[test]
    fn a_pod_that_does_not_tolerate_a_no_execute_taint_goes_at_once() {
        let now = t("2026-01-01T00:10:00Z");
        let unreachable = taint(taints::UNREACHABLE);
        let since = t("2026-01-01T00:00:00Z");
        assert_eq!(
            eviction_time(&pod(json!([])), &[(&unreachable, since)], now),
            Some(now)
        );
        // Tolerating one of two taints is not enough.
        let other = taint("dedicated");
        let p = pod(json!([{"key": taints::UNREACHABLE, "operator": "Exists",
            "effect": "NoExecute"}]));
        assert_eq!(eviction_time(&p, &[(&unreachable, since)], now), None);
        assert_eq!(
            eviction_time(&p, &[(&unreachable, since), (&other, since)], now),
            Some(now)
        );
    }

    #[test]
    fn toleration_seconds_run_from_when_the_taint_was_added() {
        let since = t("2026-01-01T00:00:00Z");
        let not_ready = taint(taints::NOT_READY);
        let unreachable = taint(taints::UNREACHABLE);
        let p = pod(json!([
            {"key": taints::NOT_READY, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
            {"key": taints::UNREACHABLE, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 30},
        ]));
        let now = t("2026-01-01T00:00:10Z");
        assert_eq!(
            eviction_time(&p, &[(&not_ready, since)], now),
            Some(t("2026-01-01T00:05:00Z"))
        );
        // The shortest toleration in use wins.
        assert_eq!(
            eviction_time(&p, &[(&not_ready, since), (&unreachable, since)], now),
            Some(t("2026-01-01T00:00:30Z"))
        );
        // Zero or negative seconds mean at once.
        let zero = pod(json!([{"operator": "Exists", "tolerationSeconds": -5}]));
        assert_eq!(
            eviction_time(&zero, &[(&unreachable, since)], now),
            Some(since)
        );
    }

    #[test]
    fn a_taint_without_time_added_counts_from_when_it_was_first_seen() {
        let (clock, fake) = SharedClock::fake(t("2026-01-01T00:00:00Z"));
        let c = TaintEvictionController::new(clock.clone());
        let bare = taint("dedicated");
        let first = c.since("n1", &bare, clock.now());
        fake.advance(Duration::from_secs(60));
        assert_eq!(c.since("n1", &bare, clock.now()), first, "kept");
        // Another node's taint has its own clock; a timeAdded is taken as written.
        assert_eq!(c.since("n2", &bare, clock.now()), t("2026-01-01T00:01:00Z"));
        let mut stamped = bare.clone();
        stamped.time_added = Some(to_time(t("2025-12-31T23:00:00Z")));
        assert_eq!(
            c.since("n1", &stamped, clock.now()),
            t("2025-12-31T23:00:00Z")
        );
        // Removed from the node and added again: a fresh toleration.
        c.forget_gone("n1", &[]);
        assert_eq!(c.since("n1", &bare, clock.now()), t("2026-01-01T00:01:00Z"));
    }
}
