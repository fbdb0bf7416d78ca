//! The node lifecycle controller: notices nodes whose kubelet stopped heartbeating, marks
//! them `Ready=Unknown` and taints them unreachable so nothing new lands there, removes the
//! taints when the kubelet comes back, and once a node has been not ready for longer than
//! the eviction timeout deletes its pods so that their controllers replace them elsewhere.
//!
//! Deadlines are computed from the timestamps on the node, and the controller asks to look
//! again exactly when the next one passes instead of polling.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use tracing::Instrument;

use super::pods;
use crate::api::{meta, ApiError};
use crate::client::{EventKind, PatchType};
use crate::runtime::{
    key_of, Action, Change, Context, InformerSpec, ReconcileError, Reconciler, NODE_NAME,
};

/// Taint of a node whose kubelet stopped posting status.
pub const TAINT_UNREACHABLE: &str = "node.kubernetes.io/unreachable";
/// Taint of a node whose kubelet reports it not ready.
pub const TAINT_NOT_READY: &str = "node.kubernetes.io/not-ready";

const STATUS_UNKNOWN_MESSAGE: &str = "Kubelet stopped posting node status.";
const NEVER_UPDATED_MESSAGE: &str = "Kubelet never posted node status.";

/// Wake a little after a deadline rather than on it: the timestamps compared against are
/// whole seconds and the timer may fire a hair early.
const SLACK: Duration = Duration::from_millis(100);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeLifecycleConfig {
    /// How old the last heartbeat may be before the node is considered lost.
    pub grace_period: Duration,
    /// How long a node may stay not ready before its pods are deleted.
    pub eviction_timeout: Duration,
}

impl Default for NodeLifecycleConfig {
    fn default() -> Self {
        NodeLifecycleConfig {
            grace_period: Duration::from_secs(40),
            eviction_timeout: Duration::from_secs(300),
        }
    }
}

/// Watches node heartbeats; marks, taints and evicts lost nodes.
#[derive(Debug, Default, Clone)]
pub struct NodeLifecycleController {
    config: NodeLifecycleConfig,
}

impl NodeLifecycleController {
    pub fn new(config: NodeLifecycleConfig) -> Self {
        NodeLifecycleController { config }
    }

    pub fn config(&self) -> &NodeLifecycleConfig {
        &self.config
    }
}

fn parse_time(v: Option<&Value>) -> Option<DateTime<Utc>> {
    let s = v?.as_str()?;
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

fn format_time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn chrono_of(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

/// What the node's status says about its kubelet.
#[derive(Debug, Clone, PartialEq)]
struct Observation {
    /// `Ready.lastHeartbeatTime`, or the creation time for a node that never posted one.
    last_heartbeat: DateTime<Utc>,
    /// `Ready.status`; `None` when the node has no Ready condition at all.
    ready: Option<String>,
    /// `Ready.lastTransitionTime`.
    transition: Option<DateTime<Utc>>,
}

/// The namespace of the nodes' Leases, which their kubelets renew as they heartbeat.
pub const NODE_LEASE_NAMESPACE: &str = "kube-node-lease";

/// What the node's status and its Lease (when it has one) say about its kubelet: the later
/// of the two signals counts, as in Kubernetes.
fn observe(node: &Value, lease: Option<&Value>) -> Option<Observation> {
    let ready = pods::condition(node, "Ready");
    let created = parse_time(node.pointer("/metadata/creationTimestamp"));
    let status_heartbeat = ready
        .and_then(|c| parse_time(c.get("lastHeartbeatTime")))
        .or(created);
    let renewed = lease.and_then(|l| parse_time(l.pointer("/spec/renewTime")));
    let last_heartbeat = status_heartbeat.max(renewed)?;
    Some(Observation {
        last_heartbeat,
        ready: ready
            .and_then(|c| c.get("status"))
            .and_then(Value::as_str)
            .map(str::to_string),
        transition: ready.and_then(|c| parse_time(c.get("lastTransitionTime"))),
    })
}

/// What the controller concludes about one node at one moment.
#[derive(Debug, Clone, PartialEq)]
struct Assessment {
    /// The heartbeat is older than the grace period.
    lost: bool,
    /// The Ready condition must be rewritten to Unknown (not already so).
    mark_unknown: bool,
    /// The taint key the node should carry (with both effects); `None` leaves this
    /// controller's taints as they are unless `clear_taints`.
    taint: Option<&'static str>,
    /// Whether this controller's taints should be cleared (the node is healthy).
    clear_taints: bool,
    /// Since when the node has been not ready, the clock eviction runs on.
    not_ready_since: Option<DateTime<Utc>>,
    /// When the heartbeat turns stale, for a node that is not lost yet.
    stale_at: Option<DateTime<Utc>>,
}

fn assess(obs: &Observation, now: DateTime<Utc>, cfg: &NodeLifecycleConfig) -> Assessment {
    let stale_at = obs.last_heartbeat + chrono_of(cfg.grace_period);
    if now >= stale_at {
        let already_unknown = obs.ready.as_deref() == Some("Unknown");
        return Assessment {
            lost: true,
            mark_unknown: !already_unknown,
            taint: Some(TAINT_UNREACHABLE),
            clear_taints: false,
            // Marked now unless a previous pass did it; then its transition time holds.
            not_ready_since: Some(if already_unknown {
                obs.transition.unwrap_or(now)
            } else {
                now
            }),
            stale_at: None,
        };
    }
    match obs.ready.as_deref() {
        Some("True") => Assessment {
            lost: false,
            mark_unknown: false,
            taint: None,
            clear_taints: true,
            not_ready_since: None,
            stale_at: Some(stale_at),
        },
        // The kubelet is alive but says the node is not ready.
        Some(_) => Assessment {
            lost: false,
            mark_unknown: false,
            taint: Some(TAINT_NOT_READY),
            clear_taints: false,
            not_ready_since: Some(obs.transition.unwrap_or(now)),
            stale_at: Some(stale_at),
        },
        // Just registered, no status yet: give it its grace period before judging.
        None => Assessment {
            lost: false,
            mark_unknown: false,
            taint: None,
            clear_taints: false,
            not_ready_since: None,
            stale_at: Some(stale_at),
        },
    }
}

/// The status patch that marks a lost node: Ready (and every other condition the kubelet
/// keeps) becomes Unknown, keeping the last heartbeat so the age stays visible.
fn unknown_conditions(node: &Value, obs: &Observation, now: DateTime<Utc>) -> Vec<Value> {
    let now_s = format_time(now);
    let mut out = Vec::new();
    let existing = node
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    for c in existing {
        let Some(kind) = c.get("type").and_then(Value::as_str) else {
            continue;
        };
        if c.get("status").and_then(Value::as_str) == Some("Unknown") {
            continue;
        }
        out.push(json!({
            "type": kind,
            "status": "Unknown",
            "reason": "NodeStatusUnknown",
            "message": STATUS_UNKNOWN_MESSAGE,
            "lastHeartbeatTime": c.get("lastHeartbeatTime").cloned().unwrap_or(Value::Null),
            "lastTransitionTime": now_s,
        }));
    }
    if obs.ready.is_none() {
        out.push(json!({
            "type": "Ready",
            "status": "Unknown",
            "reason": "NodeStatusNeverUpdated",
            "message": NEVER_UPDATED_MESSAGE,
            "lastHeartbeatTime": format_time(obs.last_heartbeat),
            "lastTransitionTime": now_s,
        }));
    }
    out
}

fn is_managed_taint(t: &Value) -> bool {
    matches!(
        t.get("key").and_then(Value::as_str),
        Some(TAINT_UNREACHABLE) | Some(TAINT_NOT_READY)
    )
}

/// The node's taints with this controller's part brought in line with `want` (a key to
/// carry with both NoSchedule and NoExecute, or none); taints others set are kept as is.
/// `None` when nothing changes.
fn reconcile_taints(
    existing: &[Value],
    want: Option<&str>,
    now: DateTime<Utc>,
) -> Option<Vec<Value>> {
    let mut out: Vec<Value> = existing
        .iter()
        .filter(|t| !is_managed_taint(t) || t.get("key").and_then(Value::as_str) == want)
        .cloned()
        .collect();
    if let Some(key) = want {
        for effect in ["NoSchedule", "NoExecute"] {
            let present = out.iter().any(|t| {
                t.get("key").and_then(Value::as_str) == Some(key)
                    && t.get("effect").and_then(Value::as_str) == Some(effect)
            });
            if !present {
                let mut taint = json!({"key": key, "effect": effect});
                if effect == "NoExecute" {
                    taint["timeAdded"] = json!(format_time(now));
                }
                out.push(taint);
            }
        }
    }
    (out.as_slice() != existing).then_some(out)
}

/// When a pod on a not-ready node must go: after the eviction timeout, unless it tolerates
/// the NoExecute taint, for `tolerationSeconds` if it names them, forever if not.
fn eviction_deadline(
    pod: &Value,
    taint_key: &str,
    since: DateTime<Utc>,
    cfg: &NodeLifecycleConfig,
) -> Option<DateTime<Utc>> {
    let tolerations = pod
        .pointer("/spec/tolerations")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    let tolerating = tolerations.iter().find(|t| tolerates(t, taint_key));
    match tolerating {
        None => Some(since + chrono_of(cfg.eviction_timeout)),
        Some(t) => t
            .get("tolerationSeconds")
            .and_then(Value::as_i64)
            .map(|s| since + chrono::Duration::seconds(s.max(0))),
    }
}

/// Whether a toleration matches the NoExecute taint `key` (which has no value).
fn tolerates(toleration: &Value, key: &str) -> bool {
    let effect = toleration
        .get("effect")
        .and_then(Value::as_str)
        .unwrap_or("");
    if !effect.is_empty() && effect != "NoExecute" {
        return false;
    }
    let t_key = toleration.get("key").and_then(Value::as_str).unwrap_or("");
    match toleration
        .get("operator")
        .and_then(Value::as_str)
        .unwrap_or("Equal")
    {
        // An empty key with Exists tolerates every taint.
        "Exists" => t_key.is_empty() || t_key == key,
        _ => {
            t_key == key
                && toleration
                    .get("value")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .is_empty()
        }
    }
}

fn until(deadline: DateTime<Utc>, now: DateTime<Utc>) -> Duration {
    (deadline - now).to_std().unwrap_or(Duration::ZERO) + SLACK
}

#[async_trait::async_trait]
impl Reconciler for NodeLifecycleController {
    fn name(&self) -> &'static str {
        "node-lifecycle-controller"
    }

    fn informers(&self) -> Vec<InformerSpec> {
        // Pods only to find a node's pods through the shared cache's node index when it
        // evicts (the process watches pods anyway): a pod change queues no node.
        vec![
            InformerSpec::all("nodes"),
            InformerSpec::all("leases"),
            InformerSpec::all("pods"),
        ]
    }

    fn keys_for(&self, resource: &str, change: &Change, _ctx: &Context) -> Vec<String> {
        if change.kind == EventKind::Deleted || resource == "pods" {
            return vec![];
        }
        if resource == "leases" {
            // A node's Lease is named after it; other Leases are not this controller's.
            return match meta::namespace(&change.object) {
                Some(NODE_LEASE_NAMESPACE) => meta::name(&change.object)
                    .map(str::to_string)
                    .into_iter()
                    .collect(),
                _ => vec![],
            };
        }
        vec![key_of(&change.object)]
    }

    async fn reconcile(&self, key: &str, ctx: &Context) -> Result<Action, ReconcileError> {
        let span = tracing::debug_span!("monitor_node", node = %key);
        self.sync(key, ctx).instrument(span).await
    }
}

impl NodeLifecycleController {
    async fn sync(&self, name: &str, ctx: &Context) -> Result<Action, ReconcileError> {
        let Some(node) = ctx.cache("nodes").get(name) else {
            return Ok(Action::Done);
        };
        let now = Utc::now();
        let lease = ctx
            .cache("leases")
            .get(&format!("{NODE_LEASE_NAMESPACE}/{name}"));
        let Some(obs) = observe(&node, lease.as_deref()) else {
            ctx.recorder
                .warning(
                    &node,
                    "InvalidNodeStatus",
                    "node has neither a heartbeat nor a creation time",
                )
                .await;
            return Ok(Action::Done);
        };
        let verdict = assess(&obs, now, &self.config);
        tracing::debug!(lost = verdict.lost, ready = ?obs.ready, "assessed node");
        let mut rv = meta::resource_version(&node).map(str::to_string);

        if verdict.mark_unknown {
            let conditions = unknown_conditions(&node, &obs, now);
            // The resourceVersion makes this a compare-and-swap: a heartbeat that lands
            // between our read and this write wins, and we look again.
            let patch =
                json!({"metadata": {"resourceVersion": rv}, "status": {"conditions": conditions}});
            let written = ctx
                .client
                .patch(
                    "nodes",
                    None,
                    name,
                    Some("status"),
                    PatchType::Strategic,
                    patch,
                )
                .await;
            match written {
                Ok(n) => rv = meta::resource_version(&n).map(str::to_string),
                Err(ApiError::NotFound { .. }) => return Ok(Action::Done),
                Err(e) => return Err(e.into()),
            }
            let age = (now - obs.last_heartbeat).num_seconds();
            tracing::info!(
                heartbeat_age_s = age,
                "node stopped heartbeating; marked Ready=Unknown"
            );
            ctx.recorder
                .normal(
                    &node,
                    "NodeNotReady",
                    &format!("Node {name} status is now: NodeNotReady"),
                )
                .await;
        }

        if verdict.taint.is_some() || verdict.clear_taints {
            let existing = node
                .pointer("/spec/taints")
                .and_then(Value::as_array)
                .map(Vec::as_slice)
                .unwrap_or(&[]);
            if let Some(taints) = reconcile_taints(existing, verdict.taint, now) {
                let taints = if taints.is_empty() {
                    Value::Null
                } else {
                    Value::Array(taints)
                };
                let patch =
                    json!({"metadata": {"resourceVersion": rv}, "spec": {"taints": taints}});
                match ctx
                    .client
                    .patch("nodes", None, name, None, PatchType::Merge, patch)
                    .await
                {
                    Ok(_) => tracing::debug!(taint = ?verdict.taint, "node taints updated"),
                    Err(ApiError::NotFound { .. }) => return Ok(Action::Done),
                    Err(e) => return Err(e.into()),
                }
            }
        }

        let mut next = verdict.stale_at;
        if let (Some(since), Some(taint)) = (verdict.not_ready_since, verdict.taint) {
            if let Some(at) = self.evict(ctx, &node, taint, since, now).await? {
                next = Some(next.map_or(at, |n| n.min(at)));
            }
        }
        Ok(match next {
            Some(at) => Action::RequeueAfter(until(at, now)),
            None => Action::Done,
        })
    }

    /// Delete the pods whose eviction deadline has passed; returns the next deadline of
    /// the pods that stay.
    async fn evict(
        &self,
        ctx: &Context,
        node: &Value,
        taint: &str,
        since: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Option<DateTime<Utc>>, ReconcileError> {
        let name = meta::name(node).unwrap_or_default();
        let pods_cache = ctx.cache("pods");
        if !pods_cache.synced() {
            // No pod is known yet (just started): look again shortly rather than believe
            // the node empty.
            return Ok(Some(now + chrono::Duration::seconds(1)));
        }
        let on_node = pods_cache.by_index(NODE_NAME, name);
        let mut next: Option<DateTime<Utc>> = None;
        let mut evicted = 0usize;
        for pod in on_node.iter().filter(|p| !pods::is_deleting(p)) {
            let Some(deadline) = eviction_deadline(pod, taint, since, &self.config) else {
                continue;
            };
            if deadline > now {
                next = Some(next.map_or(deadline, |n| n.min(deadline)));
                continue;
            }
            let ns = meta::namespace(pod).unwrap_or("default");
            let pod_name = meta::name(pod).unwrap_or_default();
            match ctx.client.delete("pods", Some(ns), pod_name, None).await {
                Ok(_) => {
                    evicted += 1;
                    ctx.recorder
                        .normal(
                            pod,
                            "TaintManagerEviction",
                            &format!("Marking for deletion Pod {ns}/{pod_name}"),
                        )
                        .await;
                }
                Err(ApiError::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        if evicted > 0 {
            tracing::info!(evicted, "evicted pods from not-ready node");
            ctx.recorder
                .normal(
                    node,
                    "NodeControllerEviction",
                    &format!("Deleting {evicted} pod(s) from Node {name}"),
                )
                .await;
        }
        Ok(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        parse_time(Some(&json!(s))).unwrap()
    }

    fn node(ready: Option<(&str, &str, &str)>) -> Value {
        let conditions: Vec<Value> = ready
            .map(|(status, hb, tr)| {
                json!({"type": "Ready", "status": status, "lastHeartbeatTime": hb, "lastTransitionTime": tr})
            })
            .into_iter()
            .collect();
        json!({"metadata": {"name": "n1", "creationTimestamp": "2026-01-01T00:00:00Z"},
            "status": {"conditions": conditions}})
    }

    fn cfg() -> NodeLifecycleConfig {
        NodeLifecycleConfig::default()
    }

    #[test]
    fn a_fresh_ready_node_is_left_alone_until_its_heartbeat_goes_stale() {
        let n = node(Some((
            "True",
            "2026-01-01T00:01:00Z",
            "2026-01-01T00:00:10Z",
        )));
        let a = assess(
            &observe(&n, None).unwrap(),
            t("2026-01-01T00:01:39Z"),
            &cfg(),
        );
        assert!(!a.lost && !a.mark_unknown && a.clear_taints);
        assert_eq!(a.taint, None);
        assert_eq!(a.stale_at, Some(t("2026-01-01T00:01:40Z")));
        assert_eq!(
            until(t("2026-01-01T00:01:40Z"), t("2026-01-01T00:01:39Z")),
            Duration::from_secs(1) + SLACK
        );
    }

    #[test]
    fn a_renewed_lease_keeps_a_node_alive_when_its_status_heartbeat_is_old() {
        let n = node(Some((
            "True",
            "2026-01-01T00:01:00Z",
            "2026-01-01T00:00:10Z",
        )));
        let lease = json!({"spec": {"renewTime": "2026-01-01T00:03:00.250000Z"}});
        let now = t("2026-01-01T00:03:30Z");
        assert!(assess(&observe(&n, None).unwrap(), now, &cfg()).lost);
        let a = assess(&observe(&n, Some(&lease)).unwrap(), now, &cfg());
        assert!(!a.lost && !a.mark_unknown);
        // An old lease does not hide a fresher status heartbeat either.
        let stale = json!({"spec": {"renewTime": "2026-01-01T00:00:00Z"}});
        assert_eq!(
            observe(&n, Some(&stale)).unwrap().last_heartbeat,
            t("2026-01-01T00:01:00Z")
        );
    }

    #[test]
    fn a_heartbeat_older_than_the_grace_period_marks_the_node_unknown_and_unreachable() {
        let n = node(Some((
            "True",
            "2026-01-01T00:01:00Z",
            "2026-01-01T00:00:10Z",
        )));
        let now = t("2026-01-01T00:01:40Z");
        let a = assess(&observe(&n, None).unwrap(), now, &cfg());
        assert!(a.lost && a.mark_unknown);
        assert_eq!(a.taint, Some(TAINT_UNREACHABLE));
        assert_eq!(a.not_ready_since, Some(now));
    }

    #[test]
    fn a_node_already_unknown_counts_its_eviction_time_from_the_transition() {
        let n = node(Some((
            "Unknown",
            "2026-01-01T00:01:00Z",
            "2026-01-01T00:01:40Z",
        )));
        let a = assess(
            &observe(&n, None).unwrap(),
            t("2026-01-01T00:03:00Z"),
            &cfg(),
        );
        assert!(a.lost && !a.mark_unknown);
        assert_eq!(a.not_ready_since, Some(t("2026-01-01T00:01:40Z")));
    }

    #[test]
    fn a_node_without_a_ready_condition_counts_from_its_creation() {
        let n = node(None);
        let obs = observe(&n, None).unwrap();
        assert_eq!(obs.last_heartbeat, t("2026-01-01T00:00:00Z"));
        let early = assess(&obs, t("2026-01-01T00:00:30Z"), &cfg());
        assert!(!early.lost && !early.clear_taints && early.taint.is_none());
        let late = assess(&obs, t("2026-01-01T00:00:41Z"), &cfg());
        assert!(late.lost && late.mark_unknown);
        let conds = unknown_conditions(&n, &obs, t("2026-01-01T00:00:41Z"));
        assert_eq!(conds[0]["reason"], "NodeStatusNeverUpdated");
        assert_eq!(conds[0]["status"], "Unknown");
    }

    #[test]
    fn a_node_reporting_not_ready_is_tainted_not_ready_but_not_marked_unknown() {
        let n = node(Some((
            "False",
            "2026-01-01T00:01:00Z",
            "2026-01-01T00:00:50Z",
        )));
        let a = assess(
            &observe(&n, None).unwrap(),
            t("2026-01-01T00:01:05Z"),
            &cfg(),
        );
        assert!(!a.lost && !a.mark_unknown);
        assert_eq!(a.taint, Some(TAINT_NOT_READY));
        assert_eq!(a.not_ready_since, Some(t("2026-01-01T00:00:50Z")));
    }

    #[test]
    fn marking_unknown_rewrites_every_known_condition_and_keeps_the_heartbeat() {
        let mut n = node(Some((
            "True",
            "2026-01-01T00:01:00Z",
            "2026-01-01T00:00:10Z",
        )));
        n["status"]["conditions"]
            .as_array_mut()
            .unwrap()
            .push(json!({"type": "MemoryPressure", "status": "False"}));
        let obs = observe(&n, None).unwrap();
        let conds = unknown_conditions(&n, &obs, t("2026-01-01T00:02:00Z"));
        assert_eq!(conds.len(), 2);
        assert_eq!(conds[0]["type"], "Ready");
        assert_eq!(conds[0]["reason"], "NodeStatusUnknown");
        assert_eq!(conds[0]["message"], STATUS_UNKNOWN_MESSAGE);
        assert_eq!(conds[0]["lastHeartbeatTime"], "2026-01-01T00:01:00Z");
        assert_eq!(conds[0]["lastTransitionTime"], "2026-01-01T00:02:00Z");
        assert_eq!(conds[1]["type"], "MemoryPressure");
    }

    #[test]
    fn taints_are_added_with_both_effects_and_cleared_without_touching_others() {
        let now = t("2026-01-01T00:02:00Z");
        let user = json!({"key": "dedicated", "value": "db", "effect": "NoSchedule"});
        let added =
            reconcile_taints(std::slice::from_ref(&user), Some(TAINT_UNREACHABLE), now).unwrap();
        assert_eq!(added.len(), 3);
        assert_eq!(added[2]["effect"], "NoExecute");
        assert_eq!(added[2]["timeAdded"], "2026-01-01T00:02:00Z");
        assert_eq!(
            reconcile_taints(&added, Some(TAINT_UNREACHABLE), now),
            None,
            "idempotent"
        );
        let swapped = reconcile_taints(&added, Some(TAINT_NOT_READY), now).unwrap();
        assert!(swapped.iter().all(|t| t["key"] != TAINT_UNREACHABLE));
        assert_eq!(reconcile_taints(&added, None, now), Some(vec![user]));
        assert_eq!(reconcile_taints(&[], None, now), None);
    }

    #[test]
    fn pods_are_evicted_after_the_timeout_unless_they_tolerate_the_taint() {
        let since = t("2026-01-01T00:00:00Z");
        let plain = json!({"spec": {}});
        assert_eq!(
            eviction_deadline(&plain, TAINT_UNREACHABLE, since, &cfg()),
            Some(t("2026-01-01T00:05:00Z"))
        );
        let bounded = json!({"spec": {"tolerations": [{"key": TAINT_UNREACHABLE,
            "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 30}]}});
        assert_eq!(
            eviction_deadline(&bounded, TAINT_UNREACHABLE, since, &cfg()),
            Some(t("2026-01-01T00:00:30Z"))
        );
        let forever = json!({"spec": {"tolerations": [{"operator": "Exists"}]}});
        assert_eq!(
            eviction_deadline(&forever, TAINT_UNREACHABLE, since, &cfg()),
            None
        );
        let other =
            json!({"spec": {"tolerations": [{"key": TAINT_NOT_READY, "operator": "Exists"}]}});
        assert!(eviction_deadline(&other, TAINT_UNREACHABLE, since, &cfg()).is_some());
        let no_schedule_only = json!({"spec": {"tolerations": [{"key": TAINT_UNREACHABLE,
            "operator": "Exists", "effect": "NoSchedule"}]}});
        assert!(eviction_deadline(&no_schedule_only, TAINT_UNREACHABLE, since, &cfg()).is_some());
    }

    #[test]
    fn the_default_config_matches_kubernetes() {
        assert_eq!(cfg().grace_period, Duration::from_secs(40));
        assert_eq!(cfg().eviction_timeout, Duration::from_secs(300));
    }
}
