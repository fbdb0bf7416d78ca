//! The node lifecycle controller (kube-controller-manager's `nodelifecycle`):
//!
//! - notices nodes whose kubelet stopped heartbeating (neither the Ready condition nor the
//!   node's Lease renewed within the grace period) and marks their conditions `Unknown`;
//! - marks the pods of a node that is not ready not Ready (`MarkPodsNotReady`), so
//!   Endpoints and EndpointSlices drop them at once rather than when they are evicted;
//! - taints nodes by condition with `NoSchedule` (not-ready, unreachable, memory-, disk- and
//!   pid-pressure, network-unavailable, and unschedulable for a cordoned node), so nothing
//!   new lands there;
//! - taints a node that is not ready with the `not-ready` or `unreachable` `NoExecute`
//!   taint, through a rate limiter per zone (`--node-eviction-rate`, the secondary rate
//!   for a zone in partial disruption, none for a small one), and not at all when every
//!   node of every zone is down (the control plane is then more likely the one cut off);
//!   the taint eviction controller then evicts the pods whose tolerations run out;
//! - removes those taints when the kubelet comes back.
//!
//! Deadlines are computed from the timestamps on the node, and the controller asks to look
//! again when the next one passes; a node that is not ready is looked at every monitor
//! period.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use tracing::Instrument;

use super::node_zones::{take_token, zone_of, ZoneView};
use super::pods;
use super::taints::{
    DISK_PRESSURE, MEMORY_PRESSURE, NETWORK_UNAVAILABLE, NOT_READY, NO_EXECUTE, NO_SCHEDULE,
    PID_PRESSURE, UNREACHABLE, UNSCHEDULABLE,
};
use crate::api::{meta, ApiError};
use crate::client::{EventKind, PatchType};
use crate::runtime::{
    key_of, Action, Change, Context, InformerSpec, ReconcileError, Reconciler, SharedClock,
    NODE_NAME,
};

/// Taint of a node whose kubelet stopped posting status.
pub const TAINT_UNREACHABLE: &str = UNREACHABLE;
/// Taint of a node whose kubelet reports it not ready.
pub const TAINT_NOT_READY: &str = NOT_READY;

const STATUS_UNKNOWN_MESSAGE: &str = "Kubelet stopped posting node status.";
const NEVER_UPDATED_MESSAGE: &str = "Kubelet never posted node status.";

/// Wake a little after a deadline rather than on it: the timestamps compared against are
/// whole seconds and the timer may fire a hair early.
const SLACK: Duration = Duration::from_millis(100);

/// How long a computed view of the zones is reused.
const ZONE_VIEW_TTL: Duration = Duration::from_millis(500);

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NodeLifecycleConfig {
    /// How old the last heartbeat may be before the node is considered lost
    /// (`--node-monitor-grace-period`).
    pub grace_period: Duration,
    /// How often a node that is not ready is looked at again (`--node-monitor-period`).
    pub monitor_period: Duration,
    /// Nodes per second, per zone, given a NoExecute taint (`--node-eviction-rate`).
    pub eviction_rate: f64,
    /// The same for a zone in partial disruption (`--secondary-node-eviction-rate`).
    pub secondary_eviction_rate: f64,
    /// The share of a zone's nodes (more than two) not ready at which the zone is in
    /// partial disruption (`--unhealthy-zone-threshold`).
    pub unhealthy_zone_threshold: f64,
    /// A zone in partial disruption with at most this many nodes taints none
    /// (`--large-cluster-size-threshold`).
    pub large_cluster_threshold: usize,
}

impl Default for NodeLifecycleConfig {
    fn default() -> Self {
        NodeLifecycleConfig {
            grace_period: Duration::from_secs(40),
            monitor_period: Duration::from_secs(5),
            eviction_rate: 0.1,
            secondary_eviction_rate: 0.01,
            unhealthy_zone_threshold: 0.55,
            large_cluster_threshold: 50,
        }
    }
}

/// Watches node heartbeats; marks and taints lost nodes and their pods.
pub struct NodeLifecycleController {
    config: NodeLifecycleConfig,
    clock: SharedClock,
    /// When each zone's rate limiter next has a token (a bucket of one).
    limiters: Mutex<HashMap<String, DateTime<Utc>>>,
    /// The last view of the zones and when it was made.
    zones: Mutex<Option<(DateTime<Utc>, ZoneView)>>,
    /// Whether the last view had every zone fully disrupted (for the log line on change).
    all_disrupted: AtomicBool,
}

impl NodeLifecycleController {
    pub fn new(config: NodeLifecycleConfig, clock: SharedClock) -> Self {
        NodeLifecycleController {
            config,
            clock,
            limiters: Mutex::new(HashMap::new()),
            zones: Mutex::new(None),
            all_disrupted: AtomicBool::new(false),
        }
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

/// How a node is, as far as the control plane can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Health {
    Ready,
    /// The kubelet says the node is not ready (Ready=False).
    NotReady,
    /// The kubelet stopped heartbeating (Ready=Unknown, or about to be marked so).
    Unknown,
    /// Registered, no Ready condition posted yet.
    Unreported,
}

impl Health {
    fn is_down(self) -> bool {
        matches!(self, Health::NotReady | Health::Unknown)
    }
}

/// What the controller concludes about one node at one moment.
#[derive(Debug, Clone, PartialEq)]
struct Assessment {
    /// The heartbeat is older than the grace period.
    lost: bool,
    /// The Ready condition must be rewritten to Unknown (not already so).
    mark_unknown: bool,
    health: Health,
    /// When the heartbeat turns stale, for a node that is not lost yet.
    stale_at: Option<DateTime<Utc>>,
}

fn assess(obs: &Observation, now: DateTime<Utc>, cfg: &NodeLifecycleConfig) -> Assessment {
    let stale_at = obs.last_heartbeat + chrono_of(cfg.grace_period);
    if now >= stale_at {
        return Assessment {
            lost: true,
            mark_unknown: obs.ready.as_deref() != Some("Unknown"),
            health: Health::Unknown,
            stale_at: None,
        };
    }
    let health = match obs.ready.as_deref() {
        Some("True") => Health::Ready,
        // Still marked Unknown from before: the kubelet renews its Lease again but has not
        // posted its status yet.
        Some("Unknown") => Health::Unknown,
        Some(_) => Health::NotReady,
        // Just registered, no status yet: give it its grace period before judging.
        None => Health::Unreported,
    };
    Assessment {
        lost: false,
        mark_unknown: false,
        health,
        stale_at: Some(stale_at),
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

/// The NoSchedule taints this controller manages, from conditions and `spec.unschedulable`.
const NO_SCHEDULE_KEYS: [&str; 7] = [
    NOT_READY,
    UNREACHABLE,
    MEMORY_PRESSURE,
    DISK_PRESSURE,
    PID_PRESSURE,
    NETWORK_UNAVAILABLE,
    UNSCHEDULABLE,
];

/// The NoSchedule taints the node's state calls for (`doNoScheduleTaintingPass`).
fn no_schedule_taints(node: &Value, health: Health) -> Vec<&'static str> {
    let mut keys = Vec::new();
    match health {
        Health::NotReady => keys.push(NOT_READY),
        Health::Unknown => keys.push(UNREACHABLE),
        Health::Ready | Health::Unreported => {}
    }
    // A lost node's other conditions are (about to be) Unknown: they call for nothing.
    if health != Health::Unknown {
        for (condition, key) in [
            ("MemoryPressure", MEMORY_PRESSURE),
            ("DiskPressure", DISK_PRESSURE),
            ("PIDPressure", PID_PRESSURE),
            ("NetworkUnavailable", NETWORK_UNAVAILABLE),
        ] {
            if pods::condition_true(node, condition) {
                keys.push(key);
            }
        }
    }
    if node.pointer("/spec/unschedulable").and_then(Value::as_bool) == Some(true) {
        keys.push(UNSCHEDULABLE);
    }
    keys
}

fn taint_is(t: &Value, key: &str, effect: &str) -> bool {
    t.get("key").and_then(Value::as_str) == Some(key)
        && t.get("effect").and_then(Value::as_str) == Some(effect)
}

/// The NoExecute taint of this controller's the node carries, if any.
fn current_no_execute(taints: &[Value]) -> Option<&'static str> {
    [NOT_READY, UNREACHABLE]
        .into_iter()
        .find(|k| taints.iter().any(|t| taint_is(t, k, NO_EXECUTE)))
}

/// The node's taints with this controller's part brought in line: `no_schedule` keys with
/// effect NoSchedule, `no_execute` (if any) with NoExecute and the time it was added;
/// taints others set are kept as they are. `None` when nothing changes.
fn reconcile_taints(
    existing: &[Value],
    no_schedule: &[&str],
    no_execute: Option<&str>,
    now: DateTime<Utc>,
) -> Option<Vec<Value>> {
    let managed = |t: &Value| {
        NO_SCHEDULE_KEYS.iter().any(|k| taint_is(t, k, NO_SCHEDULE))
            || [NOT_READY, UNREACHABLE]
                .iter()
                .any(|k| taint_is(t, k, NO_EXECUTE))
    };
    let wanted = |t: &Value| {
        no_schedule.iter().any(|k| taint_is(t, k, NO_SCHEDULE))
            || no_execute.is_some_and(|k| taint_is(t, k, NO_EXECUTE))
    };
    let mut out: Vec<Value> = existing
        .iter()
        .filter(|t| !managed(t) || wanted(t))
        .cloned()
        .collect();
    for key in no_schedule {
        if !out.iter().any(|t| taint_is(t, key, NO_SCHEDULE)) {
            out.push(json!({"key": key, "effect": NO_SCHEDULE}));
        }
    }
    if let Some(key) = no_execute {
        if !out.iter().any(|t| taint_is(t, key, NO_EXECUTE)) {
            out.push(json!({"key": key, "effect": NO_EXECUTE, "timeAdded": format_time(now)}));
        }
    }
    (out.as_slice() != existing).then_some(out)
}

fn until(deadline: DateTime<Utc>, now: DateTime<Utc>) -> Duration {
    (deadline - now).to_std().unwrap_or(Duration::ZERO) + SLACK
}

fn ready_status(node: &Value) -> Option<&str> {
    pods::condition(node, "Ready")
        .and_then(|c| c.get("status"))
        .and_then(Value::as_str)
}

#[async_trait::async_trait]
impl Reconciler for NodeLifecycleController {
    fn name(&self) -> &'static str {
        "node-lifecycle-controller"
    }

    fn informers(&self) -> Vec<InformerSpec> {
        vec![
            InformerSpec::all("nodes"),
            InformerSpec::all("leases"),
            InformerSpec::all("pods"),
        ]
    }

    fn keys_for(&self, resource: &str, change: &Change, ctx: &Context) -> Vec<String> {
        if change.kind == EventKind::Deleted {
            return vec![];
        }
        match resource {
            // A node's Lease is named after it; other Leases are not this controller's.
            "leases" => match meta::namespace(&change.object) {
                Some(NODE_LEASE_NAMESPACE) => meta::name(&change.object)
                    .map(str::to_string)
                    .into_iter()
                    .collect(),
                _ => vec![],
            },
            // A pod Ready on a node that is not: mark it (a pod that the kubelet reported
            // just before it went, or a restarted controller-manager catching up).
            "pods" => {
                let Some(node) = pods::node_name(&change.object) else {
                    return vec![];
                };
                let down = ctx
                    .cache("nodes")
                    .get(node)
                    .is_some_and(|n| matches!(ready_status(&n), Some(s) if s != "True"));
                if down && pods::is_ready(&change.object) {
                    vec![node.to_string()]
                } else {
                    vec![]
                }
            }
            _ => {
                let flipped = change
                    .old
                    .as_deref()
                    .is_some_and(|old| ready_status(old) != ready_status(&change.object));
                if flipped {
                    // A zone's state may have changed: every node is judged again.
                    *self.zones.lock().unwrap_or_else(|e| e.into_inner()) = None;
                    ctx.cache("nodes")
                        .list()
                        .iter()
                        .map(|n| key_of(n))
                        .collect()
                } else {
                    vec![key_of(&change.object)]
                }
            }
        }
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
        let now = self.clock.now();
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
        tracing::debug!(lost = verdict.lost, health = ?verdict.health, "assessed node");
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

        let existing = node
            .pointer("/spec/taints")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        let no_schedule = no_schedule_taints(&node, verdict.health);
        let (no_execute, retry_at) = self.no_execute_taint(
            ctx,
            &node,
            verdict.health,
            current_no_execute(existing),
            now,
        );
        if let Some(taints) = reconcile_taints(existing, &no_schedule, no_execute, now) {
            let taints = if taints.is_empty() {
                Value::Null
            } else {
                Value::Array(taints)
            };
            let patch = json!({"metadata": {"resourceVersion": rv}, "spec": {"taints": taints}});
            match ctx
                .client
                .patch("nodes", None, name, None, PatchType::Merge, patch)
                .await
            {
                Ok(_) => tracing::debug!(?no_schedule, ?no_execute, "node taints updated"),
                Err(ApiError::NotFound { .. }) => return Ok(Action::Done),
                Err(e) => return Err(e.into()),
            }
        }

        if verdict.health.is_down() {
            self.mark_pods_not_ready(ctx, name).await?;
        }

        let mut next = verdict.stale_at;
        let mut sooner = |at: DateTime<Utc>| next = Some(next.map_or(at, |n| n.min(at)));
        if let Some(at) = retry_at {
            sooner(at);
        }
        if verdict.health != Health::Ready {
            sooner(now + chrono_of(self.config.monitor_period));
        }
        Ok(match next {
            Some(at) => Action::RequeueAfter(self.clock.sleep_for(until(at, now))),
            None => Action::Done,
        })
    }

    /// The NoExecute taint the node should carry (`processTaintBaseEviction`), and when to
    /// look again if the zone's rate limiter holds one back. Swapping not-ready for
    /// unreachable and removing a taint are not limited; adding one is.
    fn no_execute_taint(
        &self,
        ctx: &Context,
        node: &Value,
        health: Health,
        current: Option<&'static str>,
        now: DateTime<Utc>,
    ) -> (Option<&'static str>, Option<DateTime<Utc>>) {
        let want = match health {
            Health::Ready => return (None, None),
            Health::Unreported => return (current, None),
            Health::NotReady => NOT_READY,
            Health::Unknown => UNREACHABLE,
        };
        let view = self.zone_view(ctx, now);
        if view.all_fully_disrupted {
            return (None, None);
        }
        if current.is_some() {
            return (Some(want), None);
        }
        let zone = zone_of(node);
        let rate = view.rate(&zone, &self.config);
        let mut limiters = self.limiters.lock().unwrap_or_else(|e| e.into_inner());
        match take_token(&mut limiters, &zone, rate, now) {
            Ok(()) => (Some(want), None),
            Err(at) => {
                tracing::debug!(rate, "NoExecute taint held back by the zone's rate limit");
                (
                    None,
                    Some(at.unwrap_or(now + chrono_of(self.config.monitor_period))),
                )
            }
        }
    }

    /// Every zone's state now, from every node's heartbeat (reused for a moment: judging a
    /// thousand nodes should not look at a thousand nodes a thousand times).
    fn zone_view(&self, ctx: &Context, now: DateTime<Utc>) -> ZoneView {
        let mut cached = self.zones.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((at, view)) = cached.as_ref() {
            if *at <= now && now - *at < chrono_of(ZONE_VIEW_TTL) {
                return view.clone();
            }
        }
        let leases = ctx.cache("leases");
        let nodes = ctx.cache("nodes").list();
        let view = ZoneView::build(
            nodes.iter().map(|n| {
                let lease = meta::name(n)
                    .and_then(|name| leases.get(&format!("{NODE_LEASE_NAMESPACE}/{name}")));
                let health = observe(n, lease.as_deref())
                    .map(|o| assess(&o, now, &self.config).health)
                    .unwrap_or(Health::Unreported);
                (zone_of(n), health == Health::Ready)
            }),
            self.config.unhealthy_zone_threshold,
        );
        let was = self
            .all_disrupted
            .swap(view.all_fully_disrupted, Ordering::Relaxed);
        if view.all_fully_disrupted && !was {
            tracing::warn!(
                nodes = nodes.len(),
                "every node is not ready: entering full disruption mode, evicting nothing"
            );
        } else if was && !view.all_fully_disrupted {
            tracing::info!("a node is ready again: leaving full disruption mode");
        }
        *cached = Some((now, view.clone()));
        view
    }

    /// `MarkPodsNotReady`: the node's pods that still say Ready get Ready=False, so the
    /// endpoints controllers drop them now, not when they are evicted.
    async fn mark_pods_not_ready(&self, ctx: &Context, node: &str) -> Result<(), ReconcileError> {
        let pods_cache = ctx.cache("pods");
        for pod in pods_cache
            .by_index(NODE_NAME, node)
            .iter()
            .filter(|p| pods::is_ready(p))
        {
            let ns = meta::namespace(pod);
            let pod_name = meta::name(pod).unwrap_or_default();
            let patch = json!({"status": {"conditions": [{"type": "Ready", "status": "False",
                "lastTransitionTime": format_time(self.clock.now())}]}});
            match ctx
                .client
                .patch(
                    "pods",
                    ns,
                    pod_name,
                    Some("status"),
                    PatchType::Strategic,
                    patch,
                )
                .await
            {
                Ok(_) => {
                    tracing::debug!(pod = %pod_name, "marked pod not ready");
                    ctx.recorder
                        .warning(pod, "NodeNotReady", "Node is not ready")
                        .await;
                }
                Err(ApiError::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
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
        assert!(!a.lost && !a.mark_unknown);
        assert_eq!(a.health, Health::Ready);
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
    fn a_heartbeat_older_than_the_grace_period_marks_the_node_unknown() {
        let n = node(Some((
            "True",
            "2026-01-01T00:01:00Z",
            "2026-01-01T00:00:10Z",
        )));
        let a = assess(
            &observe(&n, None).unwrap(),
            t("2026-01-01T00:01:40Z"),
            &cfg(),
        );
        assert!(a.lost && a.mark_unknown);
        assert_eq!(a.health, Health::Unknown);
        let again = node(Some((
            "Unknown",
            "2026-01-01T00:01:00Z",
            "2026-01-01T00:01:40Z",
        )));
        let b = assess(
            &observe(&again, None).unwrap(),
            t("2026-01-01T00:03:00Z"),
            &cfg(),
        );
        assert!(b.lost && !b.mark_unknown, "marked once");
    }

    #[test]
    fn a_node_without_a_ready_condition_counts_from_its_creation() {
        let n = node(None);
        let obs = observe(&n, None).unwrap();
        assert_eq!(obs.last_heartbeat, t("2026-01-01T00:00:00Z"));
        let early = assess(&obs, t("2026-01-01T00:00:30Z"), &cfg());
        assert!(!early.lost);
        assert_eq!(early.health, Health::Unreported);
        let late = assess(&obs, t("2026-01-01T00:00:41Z"), &cfg());
        assert!(late.lost && late.mark_unknown);
        let conds = unknown_conditions(&n, &obs, t("2026-01-01T00:00:41Z"));
        assert_eq!(conds[0]["reason"], "NodeStatusNeverUpdated");
        assert_eq!(conds[0]["status"], "Unknown");
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
    fn conditions_and_cordoning_become_no_schedule_taints() {
        let mut n = node(Some((
            "False",
            "2026-01-01T00:01:00Z",
            "2026-01-01T00:00:50Z",
        )));
        n["status"]["conditions"].as_array_mut().unwrap().extend([
            json!({"type": "MemoryPressure", "status": "True"}),
            json!({"type": "DiskPressure", "status": "False"}),
            json!({"type": "NetworkUnavailable", "status": "True"}),
        ]);
        n["spec"] = json!({"unschedulable": true});
        assert_eq!(
            no_schedule_taints(&n, Health::NotReady),
            [
                NOT_READY,
                MEMORY_PRESSURE,
                NETWORK_UNAVAILABLE,
                UNSCHEDULABLE
            ]
        );
        // A lost node: unreachable only (its other conditions are no longer known).
        assert_eq!(
            no_schedule_taints(&n, Health::Unknown),
            [UNREACHABLE, UNSCHEDULABLE]
        );
    }

    #[test]
    fn taints_are_reconciled_without_touching_others() {
        let now = t("2026-01-01T00:02:00Z");
        let user = json!({"key": "dedicated", "value": "db", "effect": "NoSchedule"});
        let added = reconcile_taints(
            std::slice::from_ref(&user),
            &[UNREACHABLE],
            Some(UNREACHABLE),
            now,
        )
        .unwrap();
        assert_eq!(added.len(), 3);
        assert_eq!(
            added[1],
            json!({"key": UNREACHABLE, "effect": "NoSchedule"})
        );
        assert_eq!(added[2]["effect"], "NoExecute");
        assert_eq!(added[2]["timeAdded"], "2026-01-01T00:02:00Z");
        let later = t("2026-01-01T00:05:00Z");
        assert_eq!(
            reconcile_taints(&added, &[UNREACHABLE], Some(UNREACHABLE), later),
            None,
            "idempotent, timeAdded kept"
        );
        let swapped = reconcile_taints(&added, &[NOT_READY], Some(NOT_READY), later).unwrap();
        assert!(swapped.iter().all(|t| t["key"] != UNREACHABLE));
        assert_eq!(current_no_execute(&swapped), Some(NOT_READY));
        assert_eq!(reconcile_taints(&added, &[], None, now), Some(vec![user]));
        assert_eq!(reconcile_taints(&[], &[], None, now), None);
        // A taint with a managed key but another effect is the user's.
        let custom = json!({"key": UNREACHABLE, "effect": "PreferNoSchedule"});
        assert_eq!(
            reconcile_taints(std::slice::from_ref(&custom), &[], None, now),
            None
        );
    }

    #[test]
    fn the_default_config_matches_kubernetes() {
        let c = cfg();
        assert_eq!(c.grace_period, Duration::from_secs(40));
        assert_eq!(c.monitor_period, Duration::from_secs(5));
        assert_eq!(c.eviction_rate, 0.1);
        assert_eq!(c.secondary_eviction_rate, 0.01);
        assert_eq!(c.unhealthy_zone_threshold, 0.55);
        assert_eq!(c.large_cluster_threshold, 50);
    }
}
