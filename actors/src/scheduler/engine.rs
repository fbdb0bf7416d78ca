//! The scheduler without the actor: informer changes in, placement decisions out. No I/O
//! and no clock of its own, so every rule is tested directly; the actor does the binds,
//! status writes and events the decisions call for.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use std::collections::HashMap;

use super::affinity::{self, AffinityScore, AffinityState};
use super::cache::{NamespaceLabels, NodeChange, SchedulerCache};
use super::filters::{self, Cycle, FitError, Reason};
use super::info::{NodeInfo, PodInfo, PodMeta, PodUsage, Resources};
use super::preemption::{self, Budget, Budgets, Outcome};
use super::queue::{QueueLengths, SchedulingQueue};
use super::score::{self, Weights};
use super::spread::{self, Counted, SpreadState};
use super::volumes::{PodVolumes, PreBind, VolumeCache};
use super::SchedulerConfig;
use crate::api::meta;
use crate::client::EventKind;
use crate::controllers::pods;
use crate::runtime::key_of;

/// Below this many nodes every node is examined for every pod (kube-scheduler's
/// minFeasibleNodesToFind).
const MIN_FEASIBLE_NODES: usize = 100;
/// The adaptive percentage never goes below this.
const MIN_PERCENTAGE: usize = 5;

/// What to do about one pod taken off the queue.
#[derive(Debug, Clone)]
pub enum Decision {
    /// It is assumed on `node`: bind it there, after the volume steps (VolumeBinding's
    /// PreBind) and once its claims are bound when there are any.
    Bind {
        key: String,
        pod: Arc<Value>,
        node: String,
        prebind: Vec<PreBind>,
    },
    /// It fits nowhere: say why (pod condition and event).
    Unschedulable {
        key: String,
        pod: Arc<Value>,
        message: String,
    },
    /// It fits once `victims` are gone from `node`: nominate the pod there (with the
    /// unschedulable condition saying why it waits) and delete the victims.
    Preempt {
        key: String,
        pod: Arc<Value>,
        node: String,
        victims: Vec<Arc<PodMeta>>,
        message: String,
    },
}

/// Room a preemption made on a node for a pod of this priority.
#[derive(Debug, Clone)]
struct Nomination {
    node: String,
    priority: i32,
    requests: Resources,
}

/// How many feasible nodes are enough for one pod: all of them on small clusters, a
/// shrinking share on large ones (50% minus 1% per 125 nodes, at least 5%, at least 100
/// nodes), as kube-scheduler's percentageOfNodesToScore does when left at 0.
pub fn feasible_nodes_to_find(total: usize, percentage: u32) -> usize {
    let percentage = percentage as usize;
    if total < MIN_FEASIBLE_NODES || percentage >= 100 {
        return total;
    }
    let pct = if percentage == 0 {
        50usize.saturating_sub(total / 125).max(MIN_PERCENTAGE)
    } else {
        percentage
    };
    (total * pct / 100).max(MIN_FEASIBLE_NODES)
}

pub struct Engine {
    scheduler_name: String,
    percentage: u32,
    weights: Weights,
    unschedulable_flush: Duration,
    cache: SchedulerCache,
    queue: SchedulingQueue,
    /// Where the next cycle starts looking, so sampled cycles cover every node in turn.
    next_start: usize,
    /// Rotates the choice among equally good nodes.
    turn: usize,
    reasons: Vec<Reason>,
    feasible: Vec<usize>,
    scores: Vec<(usize, i64)>,
    /// Per node of the last failed cycle: whether eviction could cure its failure.
    helpful: Vec<bool>,
    spread_scores: Vec<i64>,
    node_affinity_scores: Vec<i64>,
    pod_affinity_scores: Vec<i64>,
    namespaces: NamespaceLabels,
    /// PodDisruptionBudgets, which preemption prefers not to violate.
    budgets: Budgets,
    /// Pods nominated to a node by preemption, until they are bound or gone.
    nominated: HashMap<String, Nomination>,
    /// The selector index of each preferred pod (anti-)affinity term of the pod being
    /// scheduled.
    preferred_ids: Vec<Option<usize>>,
    /// Claims, volumes and classes, for VolumeBinding.
    volumes: VolumeCache,
}

impl Engine {
    pub fn new(config: &SchedulerConfig) -> Self {
        Engine {
            scheduler_name: config.scheduler_name.clone(),
            percentage: config.percentage_of_nodes_to_score,
            weights: config.weights,
            unschedulable_flush: config.unschedulable_flush,
            cache: SchedulerCache::default(),
            queue: SchedulingQueue::new(config.initial_backoff, config.max_backoff),
            next_start: 0,
            turn: 0,
            reasons: Vec::new(),
            feasible: Vec::new(),
            scores: Vec::new(),
            helpful: Vec::new(),
            spread_scores: Vec::new(),
            node_affinity_scores: Vec::new(),
            pod_affinity_scores: Vec::new(),
            namespaces: NamespaceLabels::new(),
            budgets: Budgets::default(),
            nominated: HashMap::new(),
            preferred_ids: Vec::new(),
            volumes: VolumeCache::default(),
        }
    }

    pub fn cache(&self) -> &SchedulerCache {
        &self.cache
    }

    pub fn queue_lengths(&self) -> QueueLengths {
        self.queue.lengths()
    }

    pub fn has_work(&self) -> bool {
        self.queue.has_active()
    }

    /// A node was added, changed or deleted.
    pub fn on_node(&mut self, kind: EventKind, node: &Value, now: Instant) {
        if kind == EventKind::Deleted {
            self.cache.remove_node(meta::name(node).unwrap_or_default());
            return;
        }
        match self.cache.upsert_node(NodeInfo::from_node(node)) {
            // A new or changed node may be where an unschedulable pod fits.
            NodeChange::Added | NodeChange::Updated => {
                self.queue.move_all_unschedulable(now);
            }
            NodeChange::Unchanged => {}
        }
    }

    /// A pod was added, changed or deleted.
    pub fn on_pod(&mut self, kind: EventKind, pod: &Arc<Value>, now: Instant) {
        let key = key_of(pod);
        if kind == EventKind::Deleted {
            self.queue.remove(&key);
            self.nominated.remove(&key);
            if self.cache.remove_pod(&key) {
                // Capacity was freed.
                self.queue.move_all_unschedulable(now);
            }
            return;
        }
        if let Some(node) = pods::node_name(pod) {
            self.queue.remove(&key);
            self.nominated.remove(&key);
            if pods::is_terminated(pod) {
                // A finished pod holds no resources (kube-scheduler ignores them too).
                if self.cache.remove_pod(&key) {
                    self.queue.move_all_unschedulable(now);
                }
            } else {
                self.cache
                    .observe_bound(&key, node, PodUsage::from_pod(pod));
            }
            return;
        }
        if self.cache.is_assumed(&key) {
            // Our bind for it is in flight (or done and not yet seen): an older version
            // of the pod must not queue it a second time.
            return;
        }
        if self.is_ours(pod) {
            self.queue.add_or_update(&key, pod.clone(), now);
        } else {
            self.queue.remove(&key);
        }
    }

    /// Pending, not being deleted, and addressed to this scheduler.
    fn is_ours(&self, pod: &Value) -> bool {
        let name = pod
            .pointer("/spec/schedulerName")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty());
        name.is_none_or(|n| n == self.scheduler_name) && pods::is_active(pod)
    }

    /// Take the next pod off the active queue and decide where it goes; a pod placed is
    /// assumed on its node at once, before the bind is sent. A pod that fits nowhere may
    /// preempt lower-priority pods (it is then nominated to their node and retried once
    /// they are gone).
    pub fn schedule_next(&mut self, now: Instant) -> Option<Decision> {
        let (key, pod) = self.queue.pop()?;
        let span = tracing::debug_span!("schedule_pod", pod = %key);
        let _entered = span.enter();
        let mut info = PodInfo::from_pod(&pod);
        for c in &mut info.spread {
            if let Counted::Selector(sel) = &c.counted {
                c.index = self.cache.selector_id(sel);
            }
        }
        self.preferred_ids.clear();
        if let Some(terms) = info.usage.meta.affinity.clone() {
            for t in terms.preferred_affinity.iter().chain(&terms.preferred_anti) {
                let id = self.cache.selector_id(&t.selector);
                self.preferred_ids.push(id);
            }
        }
        let volumes = match self.volumes.prepare(&pod) {
            Ok(v) => v,
            Err(message) => {
                return Some(self.refused_before_filtering(key, pod, &info, message, now))
            }
        };
        let cycle = self.cycle_for(&key, &info, volumes);
        match self.find_node(&info, &cycle) {
            Ok(index) => {
                let chosen = &self.cache.nodes()[index].info;
                let node = chosen.name.clone();
                let prebind = cycle.volumes.prebind(chosen);
                self.nominated.remove(&key);
                self.cache.assume(&key, &node, info.usage);
                tracing::debug!(node = %node, "assumed");
                Some(Decision::Bind {
                    key,
                    pod,
                    node,
                    prebind,
                })
            }
            Err(mut fit) => {
                self.queue.unschedulable(&key, now);
                if fit.nodes > 0 {
                    let nominated = self
                        .nominated
                        .get(&key)
                        .map(|n| n.node.clone())
                        .or_else(|| info.nominated_node.clone());
                    let outcome = preemption::preempt(
                        &self.cache,
                        &info,
                        &cycle,
                        &self.helpful,
                        nominated.as_deref(),
                        &self.budgets,
                        &self.namespaces,
                    );
                    match outcome {
                        Outcome::Nominate { node, victims } => {
                            let message = fit.to_string();
                            tracing::debug!(%message, node = %node, victims = victims.len(), "preempting");
                            self.nominated.insert(
                                key.clone(),
                                Nomination {
                                    node: node.clone(),
                                    priority: info.priority(),
                                    requests: info.usage.requests,
                                },
                            );
                            return Some(Decision::Preempt {
                                key,
                                pod,
                                node,
                                victims,
                                message,
                            });
                        }
                        Outcome::Failed(post) => fit.post_filter = Some(post),
                    }
                }
                let message = fit.to_string();
                tracing::debug!(%message, "unschedulable");
                Some(Decision::Unschedulable { key, pod, message })
            }
        }
    }

    /// A PreFilter said no (VolumeBinding: a claim missing, being deleted, or unbound
    /// with immediate binding): no node is looked at, and preemption cannot help.
    fn refused_before_filtering(
        &mut self,
        key: String,
        pod: Arc<Value>,
        info: &PodInfo,
        message: String,
        now: Instant,
    ) -> Decision {
        self.queue.unschedulable(&key, now);
        let total = self.cache.nodes().len();
        let mut fit = FitError::new(total);
        fit.pre_filter = Some(message);
        if total > 0 {
            self.helpful.clear();
            self.helpful.resize(total, false);
            if let Outcome::Failed(post) = preemption::preempt(
                &self.cache,
                info,
                &Cycle::default(),
                &self.helpful,
                None,
                &self.budgets,
                &self.namespaces,
            ) {
                fit.post_filter = Some(post);
            }
        }
        let message = fit.to_string();
        tracing::debug!(%message, "unschedulable before filtering");
        Decision::Unschedulable { key, pod, message }
    }

    /// A PersistentVolumeClaim was added, changed or deleted.
    pub fn on_claim(&mut self, kind: EventKind, claim: &Value, now: Instant) {
        self.volumes.on_claim(kind, claim);
        // A claim created or bound may be what an unschedulable pod waits for.
        if self.queue.lengths().unschedulable > 0 {
            self.queue.move_all_unschedulable(now);
        }
    }

    /// A PersistentVolume was added, changed or deleted.
    pub fn on_volume(&mut self, kind: EventKind, volume: &Value, now: Instant) {
        self.volumes.on_volume(kind, volume);
        if self.queue.lengths().unschedulable > 0 {
            self.queue.move_all_unschedulable(now);
        }
    }

    /// A StorageClass was added, changed or deleted.
    pub fn on_class(&mut self, kind: EventKind, class: &Value, now: Instant) {
        self.volumes.on_class(kind, class);
        if self.queue.lengths().unschedulable > 0 {
            self.queue.move_all_unschedulable(now);
        }
    }

    /// The per-pod state the filters share: topology spread counts, inter-pod affinity
    /// counts (only when the pod has required terms or some placed pod has required
    /// anti-affinity), the room held for pods nominated by preemption, and what its
    /// volumes ask of a node.
    fn cycle_for(&self, key: &str, pod: &PodInfo, volumes: PodVolumes) -> Cycle {
        let nodes = self.cache.nodes();
        let spread = SpreadState::build(&pod.spread, pod, nodes);
        let terms = pod.usage.meta.affinity.as_deref();
        let affinity = if terms.is_some_and(|t| t.has_required())
            || self.cache.has_pods_with_required_anti()
        {
            AffinityState::build(
                &pod.usage.meta,
                terms,
                nodes,
                |n| self.cache.node(n).map(|s| &s.info),
                self.cache.affinity_groups(),
                &self.namespaces,
            )
        } else {
            AffinityState::default()
        };
        let mut reserved: HashMap<String, (Resources, i64)> = HashMap::new();
        for (k, n) in &self.nominated {
            if k != key && n.priority >= pod.priority() {
                let held = reserved.entry(n.node.clone()).or_default();
                held.0.add(n.requests);
                held.1 += 1;
            }
        }
        Cycle {
            spread,
            affinity,
            reserved,
            volumes,
        }
    }

    /// Filter (stopping once enough feasible nodes are found), score, select.
    fn find_node(&mut self, pod: &PodInfo, cycle: &Cycle) -> Result<usize, FitError> {
        let nodes = self.cache.nodes();
        let total = nodes.len();
        if total == 0 {
            return Err(FitError::new(0));
        }
        let wanted = feasible_nodes_to_find(total, self.percentage);
        let start = self.next_start % total;
        self.feasible.clear();
        let mut fit_error = FitError::new(total);
        self.helpful.clear();
        self.helpful.resize(total, false);
        let mut examined = 0;
        for offset in 0..total {
            let i = (start + offset) % total;
            examined += 1;
            self.reasons.clear();
            if filters::fits(&nodes[i], pod, cycle, &mut self.reasons) {
                self.feasible.push(i);
                if self.feasible.len() >= wanted {
                    break;
                }
            } else {
                self.helpful[i] = self.reasons.iter().all(Reason::preemption_may_help);
                fit_error.count(self.reasons.drain(..));
            }
        }
        self.next_start = (start + examined) % total;
        if self.feasible.is_empty() {
            return Err(fit_error);
        }
        let w = self.weights;
        // Each plugin's scores over the feasible nodes, normalized as kube-scheduler does.
        let mut spread_scores = std::mem::take(&mut self.spread_scores);
        spread::score(
            &pod.spread,
            pod.spread_defaulted,
            pod,
            nodes,
            &self.feasible,
            pod.usage
                .owner
                .as_deref()
                .and_then(|o| self.cache.zone_counts(o)),
            &mut spread_scores,
        );
        let mut node_affinity = std::mem::take(&mut self.node_affinity_scores);
        node_affinity.clear();
        if !pod.preferred_node_terms.is_empty() {
            node_affinity.extend(
                self.feasible
                    .iter()
                    .map(|&i| pod.preferred_node_weight(&nodes[i].info)),
            );
            score::normalize_by_max(&mut node_affinity);
        }
        let mut pod_affinity = std::mem::take(&mut self.pod_affinity_scores);
        pod_affinity.clear();
        let terms = pod.usage.meta.affinity.as_deref();
        if terms.is_some_and(|t| t.has_preferred()) || self.cache.has_pods_with_affinity() {
            let state = AffinityScore::build(
                &pod.usage.meta,
                terms,
                nodes,
                |n| self.cache.node(n).map(|s| &s.info),
                self.cache.affinity_groups(),
                &self.preferred_ids,
                &self.namespaces,
            );
            if !state.is_empty() {
                pod_affinity.extend(self.feasible.iter().map(|&i| state.raw(&nodes[i].info)));
                affinity::normalize(&mut pod_affinity);
            }
        }
        self.scores.clear();
        for (k, &i) in self.feasible.iter().enumerate() {
            let at = |v: &[i64]| v.get(k).copied().unwrap_or(0);
            let s = w.least_allocated * score::least_allocated(&nodes[i], pod)
                + w.spread * at(&spread_scores)
                + w.node_affinity * at(&node_affinity)
                + w.pod_affinity * at(&pod_affinity);
            self.scores.push((i, s));
        }
        self.spread_scores = spread_scores;
        self.node_affinity_scores = node_affinity;
        self.pod_affinity_scores = pod_affinity;
        let chosen = score::select(&self.scores, self.turn);
        self.turn = self.turn.wrapping_add(1);
        chosen.ok_or(fit_error)
    }

    /// A namespace was added, changed or deleted (its labels feed `namespaceSelector`).
    pub fn on_namespace(&mut self, kind: EventKind, ns: &Value, now: Instant) {
        let name = meta::name(ns).unwrap_or_default().to_string();
        if kind == EventKind::Deleted {
            self.namespaces.remove(&name);
            return;
        }
        let labels = crate::api::selector::object_labels(ns);
        if self.namespaces.get(&name) != Some(&labels) {
            self.namespaces.insert(name, labels);
            // Pods waiting on a namespace-selected affinity may fit now.
            if self.cache.has_pods_with_affinity() || self.queue.lengths().unschedulable > 0 {
                self.queue.move_all_unschedulable(now);
            }
        }
    }

    /// A PodDisruptionBudget was added, changed or deleted.
    pub fn on_pdb(&mut self, kind: EventKind, pdb: &Value) {
        let key = format!(
            "{}/{}",
            meta::namespace(pdb).unwrap_or_default(),
            meta::name(pdb).unwrap_or_default()
        );
        let budget = (kind != EventKind::Deleted).then(|| Budget::from_pdb(pdb));
        self.budgets.set(key, budget);
    }

    /// The bind was stored: the pod leaves the queue; it stays assumed until the informer
    /// shows it bound.
    pub fn bind_succeeded(&mut self, key: &str) {
        self.queue.remove(key);
    }

    /// The bind failed: give the node's capacity back and retry after a backoff.
    pub fn bind_failed(&mut self, key: &str, now: Instant) {
        self.cache.forget(key);
        self.queue.backoff(key, now);
    }

    /// Periodic: expired backoffs and long-unschedulable pods become active again.
    pub fn flush(&mut self, now: Instant) {
        self.queue.flush(now, self.unschedulable_flush);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config() -> SchedulerConfig {
        SchedulerConfig::default()
    }

    fn node(name: &str, cpu: &str, labels: Value) -> Value {
        json!({"metadata": {"name": name, "labels": labels},
            "spec": {},
            "status": {"allocatable": {"cpu": cpu, "memory": "8Gi", "pods": "110"},
                       "conditions": [{"type": "Ready", "status": "True"}]}})
    }

    fn pod(name: &str, cpu: &str, extra: Value) -> Arc<Value> {
        let mut p = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}"),
                "ownerReferences": [{"apiVersion": "v1", "kind": "ReplicationController",
                    "name": "web", "uid": "rc-1", "controller": true}]},
            "spec": {"schedulerName": "default-scheduler",
                "containers": [{"name": "c", "image": "i", "resources": {"requests": {"cpu": cpu}}}]}});
        if let (Some(spec), Some(extra)) = (p["spec"].as_object_mut(), extra.as_object()) {
            for (k, v) in extra {
                spec.insert(k.clone(), v.clone());
            }
        }
        Arc::new(p)
    }

    fn bound(p: &Value, node: &str) -> Arc<Value> {
        let mut b = p.clone();
        b["spec"]["nodeName"] = json!(node);
        Arc::new(b)
    }

    fn engine_with_nodes(nodes: &[Value]) -> Engine {
        let mut e = Engine::new(&config());
        for n in nodes {
            e.on_node(EventKind::Added, n, Instant::now());
        }
        e
    }

    /// Schedule everything queued; binds succeed and are then observed.
    fn run(e: &mut Engine) -> Vec<(String, Result<String, String>)> {
        let now = Instant::now();
        let mut out = Vec::new();
        while let Some(d) = e.schedule_next(now) {
            match d {
                Decision::Bind { key, pod, node, .. } => {
                    e.bind_succeeded(&key);
                    e.on_pod(EventKind::Modified, &bound(&pod, &node), now);
                    out.push((key, Ok(node)));
                }
                Decision::Unschedulable { key, message, .. }
                | Decision::Preempt { key, message, .. } => out.push((key, Err(message))),
            }
        }
        out
    }

    #[test]
    fn three_replicas_of_one_owner_land_on_three_nodes() {
        let mut e = engine_with_nodes(&[
            node("a", "4", json!({})),
            node("b", "4", json!({})),
            node("c", "4", json!({})),
        ]);
        let now = Instant::now();
        for i in 0..3 {
            e.on_pod(
                EventKind::Added,
                &pod(&format!("web-{i}"), "100m", json!({})),
                now,
            );
        }
        let mut nodes: Vec<String> = run(&mut e)
            .into_iter()
            .filter_map(|(_, r)| r.ok())
            .collect();
        nodes.sort();
        assert_eq!(nodes, ["a", "b", "c"]);
    }

    #[test]
    fn node_selector_places_pods_only_on_labelled_nodes() {
        let mut e = engine_with_nodes(&[
            node("plain-1", "4", json!({})),
            node("ssd", "4", json!({"disk": "ssd"})),
            node("plain-2", "4", json!({})),
        ]);
        let now = Instant::now();
        for i in 0..4 {
            e.on_pod(
                EventKind::Added,
                &pod(
                    &format!("db-{i}"),
                    "100m",
                    json!({"nodeSelector": {"disk": "ssd"}}),
                ),
                now,
            );
        }
        for (_, r) in run(&mut e) {
            assert_eq!(r, Ok("ssd".to_string()));
        }
    }

    #[test]
    fn a_pod_too_big_for_every_node_says_why_and_fits_once_a_big_node_joins() {
        let mut e = engine_with_nodes(&[
            node("a", "2", json!({})),
            node("b", "2", json!({})),
            node("ssd", "2", json!({"disk": "ssd"})),
        ]);
        let now = Instant::now();
        e.on_pod(
            EventKind::Added,
            &pod("big", "6", json!({"nodeSelector": {"disk": "ssd"}})),
            now,
        );
        e.on_pod(EventKind::Added, &pod("huge", "6", json!({})), now);
        let out = run(&mut e);
        assert_eq!(
            out,
            vec![
                (
                    "default/big".to_string(),
                    Err("0/3 nodes are available: 1 Insufficient cpu, \
                    2 node(s) didn't match Pod's node affinity/selector. \
                    preemption: 0/3 nodes are available: 1 No preemption victims found for incoming pod, \
                    2 Preemption is not helpful for scheduling.."
                        .to_string())
                ),
                (
                    "default/huge".to_string(),
                    Err("0/3 nodes are available: 3 Insufficient cpu. \
                    preemption: 0/3 nodes are available: 3 No preemption victims found for incoming pod.."
                        .to_string())
                ),
            ]
        );
        // Nothing changed: no retry, no busy loop.
        assert!(e.schedule_next(now).is_none());
        // A big enough node joins; once the backoff has passed the pods are placed.
        let later = now + Duration::from_secs(2);
        e.on_node(
            EventKind::Added,
            &node("big", "16", json!({"disk": "ssd"})),
            later,
        );
        e.flush(later);
        let mut placed: Vec<_> = Vec::new();
        while let Some(d) = e.schedule_next(later) {
            if let Decision::Bind { key, node, .. } = d {
                placed.push((key, node));
            }
        }
        placed.sort();
        assert_eq!(
            placed,
            vec![
                ("default/big".to_string(), "big".to_string()),
                ("default/huge".to_string(), "big".to_string())
            ]
        );
    }

    #[test]
    fn an_assumed_pod_blocks_the_capacity_it_took_before_its_bind_is_seen() {
        let mut e = engine_with_nodes(&[node("only", "1", json!({}))]);
        let now = Instant::now();
        e.on_pod(EventKind::Added, &pod("first", "600m", json!({})), now);
        e.on_pod(EventKind::Added, &pod("second", "600m", json!({})), now);
        assert!(matches!(e.schedule_next(now), Some(Decision::Bind { .. })));
        // The bind is still in flight: the second pod must not fit in the same cpu.
        match e.schedule_next(now) {
            Some(Decision::Unschedulable { message, .. }) => {
                assert_eq!(
                    message,
                    "0/1 nodes are available: 1 Insufficient cpu. preemption: \
                     0/1 nodes are available: 1 No preemption victims found for incoming pod.."
                )
            }
            other => panic!("expected unschedulable, got {other:?}"),
        }
    }

    #[test]
    fn a_stale_unbound_update_does_not_queue_a_pod_whose_bind_is_in_flight() {
        let mut e = engine_with_nodes(&[node("a", "4", json!({}))]);
        let now = Instant::now();
        let p = pod("p", "100m", json!({}));
        e.on_pod(EventKind::Added, &p, now);
        let Some(Decision::Bind { key, .. }) = e.schedule_next(now) else {
            panic!("expected a bind");
        };
        e.bind_succeeded(&key);
        e.on_pod(EventKind::Modified, &p, now);
        assert!(e.schedule_next(now).is_none());
    }

    #[test]
    fn a_failed_bind_frees_the_node_and_retries_after_backoff() {
        let mut e = engine_with_nodes(&[node("only", "1", json!({}))]);
        let now = Instant::now();
        e.on_pod(EventKind::Added, &pod("p", "800m", json!({})), now);
        let Some(Decision::Bind { key, .. }) = e.schedule_next(now) else {
            panic!("expected a bind");
        };
        e.bind_failed(&key, now);
        assert_eq!(e.cache().node("only").map(|n| n.usage.pods), Some(0));
        assert!(e.schedule_next(now).is_none());
        let later = now + Duration::from_secs(1);
        e.flush(later);
        assert!(matches!(
            e.schedule_next(later),
            Some(Decision::Bind { .. })
        ));
    }

    #[test]
    fn a_deleted_pod_frees_capacity_and_wakes_unschedulable_pods() {
        let mut e = engine_with_nodes(&[node("only", "1", json!({}))]);
        let now = Instant::now();
        let first = pod("first", "800m", json!({}));
        e.on_pod(EventKind::Added, &first, now);
        e.on_pod(EventKind::Added, &pod("second", "800m", json!({})), now);
        let out = run(&mut e);
        assert!(out[1].1.is_err());
        let later = now + Duration::from_secs(5);
        e.on_pod(EventKind::Deleted, &bound(&first, "only"), later);
        assert!(matches!(
            e.schedule_next(later),
            Some(Decision::Bind { .. })
        ));
    }

    #[test]
    fn node_heartbeats_do_not_wake_unschedulable_pods() {
        let mut e = engine_with_nodes(&[node("a", "1", json!({}))]);
        let now = Instant::now();
        e.on_pod(EventKind::Added, &pod("big", "2", json!({})), now);
        run(&mut e);
        let later = now + Duration::from_secs(20);
        let mut beat = node("a", "1", json!({}));
        beat["status"]["conditions"][0]["lastHeartbeatTime"] = json!("2026-01-01T00:00:00Z");
        e.on_node(EventKind::Modified, &beat, later);
        assert!(e.schedule_next(later).is_none());
    }

    #[test]
    fn pods_for_other_schedulers_or_being_deleted_are_left_alone() {
        let mut e = engine_with_nodes(&[node("a", "4", json!({}))]);
        let now = Instant::now();
        e.on_pod(
            EventKind::Added,
            &pod("other", "1", json!({"schedulerName": "my-scheduler"})),
            now,
        );
        let mut deleting = (*pod("going", "1", json!({}))).clone();
        deleting["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        e.on_pod(EventKind::Added, &Arc::new(deleting), now);
        let mut done = (*pod("done", "1", json!({}))).clone();
        done["status"] = json!({"phase": "Succeeded"});
        e.on_pod(EventKind::Added, &Arc::new(done), now);
        assert!(e.schedule_next(now).is_none());
    }

    #[test]
    fn a_cycle_stops_after_enough_feasible_nodes_and_the_next_starts_where_it_stopped() {
        assert_eq!(feasible_nodes_to_find(50, 0), 50);
        assert_eq!(feasible_nodes_to_find(1000, 0), 420);
        assert_eq!(feasible_nodes_to_find(5000, 0), 500);
        assert_eq!(feasible_nodes_to_find(100_000, 0), 5000);
        assert_eq!(feasible_nodes_to_find(1000, 100), 1000);
        let nodes: Vec<Value> = (0..1000)
            .map(|i| node(&format!("n{i:04}"), "4", json!({})))
            .collect();
        let mut e = engine_with_nodes(&nodes);
        let now = Instant::now();
        e.on_pod(EventKind::Added, &pod("p", "100m", json!({})), now);
        e.schedule_next(now);
        assert_eq!(e.next_start, 420);
        e.on_pod(EventKind::Added, &pod("q", "100m", json!({})), now);
        e.schedule_next(now);
        assert_eq!(e.next_start, 840);
    }
}
