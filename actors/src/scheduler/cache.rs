//! The scheduler's own view of the cluster: every node and what the pods placed on it use.
//!
//! A pod counts on its node from the moment the scheduler *assumes* it there (before the
//! bind is even sent), so the next pod's filters already see the capacity taken and two
//! pods are never squeezed into the last slot between a bind and its watch event. The
//! informer later *confirms* the placement (the pod shows up bound), or a failed bind
//! *forgets* it.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use super::affinity::{PodAffinityTerms, PodSelector};
use super::info::{HostPort, NodeInfo, PodMeta, PodUsage, Resources};
use super::spread::LABEL_ZONE;

/// Namespace name → its labels (for `namespaceSelector`).
pub type NamespaceLabels = HashMap<String, BTreeMap<String, String>>;

/// Selectors whose matching pods the cache counts per node, at most: one per workload
/// is typical; beyond the cap a selector is counted by walking the node's pods.
const MAX_INDEXED_SELECTORS: usize = 1024;

/// What the pods placed on one node use.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Usage {
    pub requested: Resources,
    pub nonzero: Resources,
    pub pods: i64,
    /// Host ports taken, with how many pods hold each (normally one).
    pub ports: HashMap<HostPort, u32>,
    /// Pods per controlling owner uid, for spreading replicas.
    pub owners: HashMap<String, u32>,
    /// The pods placed here (labels, namespace, priority, affinity).
    pub members: Vec<Arc<PodMeta>>,
    /// Pods here matching each indexed selector, by selector id.
    pub matched: Vec<u32>,
}

impl Usage {
    pub fn add(&mut self, pod: &PodUsage) {
        self.requested.add(pod.requests);
        self.nonzero.add(pod.nonzero);
        self.pods += 1;
        for p in &pod.host_ports {
            *self.ports.entry(p.clone()).or_default() += 1;
        }
        if let Some(owner) = &pod.owner {
            *self.owners.entry(owner.clone()).or_default() += 1;
        }
        self.members.push(pod.meta.clone());
    }

    pub fn remove(&mut self, pod: &PodUsage) {
        self.requested.sub(pod.requests);
        self.nonzero.sub(pod.nonzero);
        self.pods -= 1;
        for p in &pod.host_ports {
            decrement(&mut self.ports, p);
        }
        if let Some(owner) = &pod.owner {
            decrement(&mut self.owners, owner);
        }
        if let Some(i) = self.members.iter().position(|m| Arc::ptr_eq(m, &pod.meta)) {
            self.members.swap_remove(i);
        }
    }

    /// Pods here matching the indexed selector `id`.
    pub fn indexed(&self, id: usize) -> u32 {
        self.matched.get(id).copied().unwrap_or(0)
    }

    fn count_selector(&mut self, id: usize, by: i64) {
        if self.matched.len() <= id {
            self.matched.resize(id + 1, 0);
        }
        let n = &mut self.matched[id];
        *n = (i64::from(*n) + by).max(0) as u32;
    }

    fn is_empty(&self) -> bool {
        self.pods == 0
    }

    /// Same-owner pods on this node.
    pub fn owned_by(&self, owner: &str) -> u32 {
        self.owners.get(owner).copied().unwrap_or(0)
    }
}

fn decrement<K: std::hash::Hash + Eq>(map: &mut HashMap<K, u32>, key: &K) {
    if let Some(n) = map.get_mut(key) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            map.remove(key);
        }
    }
}

/// A node as the filters see it.
#[derive(Debug, Clone)]
pub struct NodeState {
    pub info: NodeInfo,
    pub usage: Usage,
}

/// Where a pod is counted.
#[derive(Debug, Clone)]
struct Placement {
    node: String,
    usage: PodUsage,
    /// Placed by this scheduler and not yet seen bound by the informer.
    assumed: bool,
    /// The indexed selectors it matches.
    matched: Vec<usize>,
}

/// How a node update changed the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeChange {
    Added,
    /// Something that can make a pod fit changed (labels, taints, capacity, readiness).
    Updated,
    /// Nothing the scheduler looks at changed (a heartbeat).
    Unchanged,
}

#[derive(Debug, Default)]
pub struct SchedulerCache {
    /// Kept in a vector so the filter loop walks memory in order.
    nodes: Vec<NodeState>,
    index: HashMap<String, usize>,
    /// Usage of pods bound to nodes the cache has no Node object for (yet, or any more).
    orphans: HashMap<String, Usage>,
    pods: HashMap<String, Placement>,
    /// Selectors counted per node: canonical key → id, and the selectors by id.
    selector_ids: HashMap<String, usize>,
    selectors: Vec<PodSelector>,
    /// Placed pods carrying pod (anti-)affinity terms, grouped by identical terms (the
    /// pods of one template), so the symmetry rules match each distinct term once per
    /// scheduling cycle, not once per pod; and each such pod's group.
    affinity_groups: HashMap<String, AffinityGroup>,
    group_of: HashMap<String, String>,
    /// Pods per controlling owner per zone of their node: the system default zone
    /// spreading reads this instead of walking every node for every pod.
    zone_owners: HashMap<String, HashMap<String, u32>>,
}

fn zone_of(info: &NodeInfo) -> Option<String> {
    info.labels.get(LABEL_ZONE).cloned()
}

fn shift_one(
    map: &mut HashMap<String, HashMap<String, u32>>,
    owner: &str,
    zone: Option<&str>,
    by: i64,
) {
    let Some(zone) = zone else { return };
    let zones = map.entry(owner.to_string()).or_default();
    let n = zones.entry(zone.to_string()).or_default();
    *n = (i64::from(*n) + by).max(0) as u32;
    if *n == 0 {
        zones.remove(zone);
    }
    if zones.is_empty() {
        map.remove(owner);
    }
}

fn shift_zone(
    map: &mut HashMap<String, HashMap<String, u32>>,
    owners: &HashMap<String, u32>,
    zone: Option<&str>,
    by: i64,
) {
    for (owner, n) in owners {
        shift_one(map, owner, zone, by * i64::from(*n));
    }
}

/// Placed pods sharing the same pod (anti-)affinity terms: the terms, and how many of
/// them each node holds.
#[derive(Debug, Clone)]
pub struct AffinityGroup {
    pub terms: Arc<PodAffinityTerms>,
    pub nodes: HashMap<String, u32>,
}

impl SchedulerCache {
    pub fn nodes(&self) -> &[NodeState] {
        &self.nodes
    }

    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    pub fn node(&self, name: &str) -> Option<&NodeState> {
        self.index.get(name).map(|&i| &self.nodes[i])
    }

    pub fn pod_count(&self) -> usize {
        self.pods.len()
    }

    pub fn upsert_node(&mut self, info: NodeInfo) -> NodeChange {
        match self.index.get(&info.name) {
            Some(&i) => {
                let state = &mut self.nodes[i];
                if state.info == info {
                    NodeChange::Unchanged
                } else {
                    let (old, new) = (zone_of(&state.info), zone_of(&info));
                    if old != new {
                        let owners = state.usage.owners.clone();
                        shift_zone(&mut self.zone_owners, &owners, old.as_deref(), -1);
                        shift_zone(&mut self.zone_owners, &owners, new.as_deref(), 1);
                    }
                    self.nodes[i].info = info;
                    NodeChange::Updated
                }
            }
            None => {
                let usage = self.orphans.remove(&info.name).unwrap_or_default();
                let zone = zone_of(&info);
                shift_zone(&mut self.zone_owners, &usage.owners, zone.as_deref(), 1);
                self.index.insert(info.name.clone(), self.nodes.len());
                self.nodes.push(NodeState { info, usage });
                NodeChange::Added
            }
        }
    }

    pub fn remove_node(&mut self, name: &str) {
        let Some(i) = self.index.remove(name) else {
            return;
        };
        let state = self.nodes.swap_remove(i);
        if let Some(moved) = self.nodes.get(i) {
            self.index.insert(moved.info.name.clone(), i);
        }
        let zone = zone_of(&state.info);
        shift_zone(
            &mut self.zone_owners,
            &state.usage.owners,
            zone.as_deref(),
            -1,
        );
        // Its pods still exist until the node lifecycle controller deletes them; keep
        // their usage in case the node comes back.
        if !state.usage.is_empty() {
            self.orphans.insert(name.to_string(), state.usage);
        }
    }

    fn usage_mut(&mut self, node: &str) -> &mut Usage {
        match self.index.get(node) {
            Some(&i) => &mut self.nodes[i].usage,
            None => self.orphans.entry(node.to_string()).or_default(),
        }
    }

    /// Count `pod` on `node` before its bind completes.
    pub fn assume(&mut self, key: &str, node: &str, usage: PodUsage) {
        self.place(key, node, usage, true);
    }

    /// The informer shows the pod bound to `node` (by us or anyone else).
    pub fn observe_bound(&mut self, key: &str, node: &str, usage: PodUsage) {
        if let Some(p) = self.pods.get_mut(key) {
            if p.node == node && p.usage == usage {
                p.assumed = false;
                return;
            }
        }
        self.place(key, node, usage, false);
    }

    /// A bind failed: give the capacity back.
    pub fn forget(&mut self, key: &str) {
        if self.pods.get(key).is_some_and(|p| p.assumed) {
            self.remove_pod(key);
        }
    }

    /// The pod is gone (deleted, finished, or unbound): stop counting it. Returns whether
    /// it was counted, i.e. whether capacity was freed.
    pub fn remove_pod(&mut self, key: &str) -> bool {
        let Some(p) = self.pods.remove(key) else {
            return false;
        };
        if let Some(group) = self.group_of.remove(key) {
            if let Some(g) = self.affinity_groups.get_mut(&group) {
                decrement(&mut g.nodes, &p.node);
                if g.nodes.is_empty() {
                    self.affinity_groups.remove(&group);
                }
            }
        }
        if let Some(owner) = &p.usage.owner {
            let zone = self.node(&p.node).and_then(|n| zone_of(&n.info));
            shift_one(&mut self.zone_owners, owner, zone.as_deref(), -1);
        }
        let usage = self.usage_mut(&p.node);
        usage.remove(&p.usage);
        for &id in &p.matched {
            usage.count_selector(id, -1);
        }
        if usage.is_empty() && !self.index.contains_key(&p.node) {
            self.orphans.remove(&p.node);
        }
        true
    }

    pub fn is_assumed(&self, key: &str) -> bool {
        self.pods.get(key).is_some_and(|p| p.assumed)
    }

    /// Whether the pod is counted anywhere (assumed or bound).
    pub fn is_placed(&self, key: &str) -> bool {
        self.pods.contains_key(key)
    }

    fn place(&mut self, key: &str, node: &str, usage: PodUsage, assumed: bool) {
        self.remove_pod(key);
        let none = NamespaceLabels::new();
        let matched: Vec<usize> = (0..self.selectors.len())
            .filter(|&id| self.selectors[id].matches(&usage.meta, &none))
            .collect();
        if let Some(owner) = &usage.owner {
            let zone = self.node(node).and_then(|n| zone_of(&n.info));
            shift_one(&mut self.zone_owners, owner, zone.as_deref(), 1);
        }
        let u = self.usage_mut(node);
        u.add(&usage);
        for &id in &matched {
            u.count_selector(id, 1);
        }
        if let Some(a) = &usage.meta.affinity {
            // Terms print the same exactly when they are the same.
            let group = format!("{a:?}");
            let g = self
                .affinity_groups
                .entry(group.clone())
                .or_insert_with(|| AffinityGroup {
                    terms: a.clone(),
                    nodes: HashMap::new(),
                });
            *g.nodes.entry(node.to_string()).or_default() += 1;
            self.group_of.insert(key.to_string(), group);
        }
        self.pods.insert(
            key.to_string(),
            Placement {
                node: node.to_string(),
                usage,
                assumed,
                matched,
            },
        );
    }

    /// The id under which the pods matching `selector` are counted per node, registering
    /// it (and counting the pods already placed) the first time; None when the selector
    /// cannot be indexed or the index is full.
    pub fn selector_id(&mut self, selector: &PodSelector) -> Option<usize> {
        let key = selector.index_key()?;
        if let Some(&id) = self.selector_ids.get(&key) {
            return Some(id);
        }
        if self.selectors.len() >= MAX_INDEXED_SELECTORS {
            return None;
        }
        let id = self.selectors.len();
        self.selectors.push(selector.clone());
        self.selector_ids.insert(key, id);
        let none = NamespaceLabels::new();
        let hits: Vec<(String, String)> = self
            .pods
            .iter()
            .filter(|(_, p)| selector.matches(&p.usage.meta, &none))
            .map(|(k, p)| (k.clone(), p.node.clone()))
            .collect();
        for (key, node) in hits {
            self.usage_mut(&node).count_selector(id, 1);
            if let Some(p) = self.pods.get_mut(&key) {
                p.matched.push(id);
            }
        }
        Some(id)
    }

    /// The placed pods with pod (anti-)affinity terms, by distinct terms.
    pub fn affinity_groups(&self) -> impl Iterator<Item = &AffinityGroup> + '_ {
        self.affinity_groups.values()
    }

    /// The owner's pods per zone.
    pub fn zone_counts(&self, owner: &str) -> Option<&HashMap<String, u32>> {
        self.zone_owners.get(owner)
    }

    pub fn has_pods_with_affinity(&self) -> bool {
        !self.affinity_groups.is_empty()
    }

    pub fn has_pods_with_required_anti(&self) -> bool {
        self.affinity_groups
            .values()
            .any(|g| !g.terms.required_anti.is_empty())
    }

    /// The placed pod's meta and usage (for preemption).
    pub fn placement(&self, key: &str) -> Option<(&str, &PodUsage)> {
        self.pods.get(key).map(|p| (p.node.as_str(), &p.usage))
    }

    /// A rough count of the heap bytes this cache holds (strings, maps, vectors): enough
    /// to see how the scheduler's memory grows with nodes and pods.
    pub fn estimated_bytes(&self) -> usize {
        use std::mem::size_of;
        let map_entry = 2 * size_of::<usize>();
        let node_bytes: usize = self
            .nodes
            .iter()
            .map(|n| {
                size_of::<NodeState>()
                    + map_entry
                    + 2 * n.info.name.len()
                    + n.info
                        .labels
                        .iter()
                        .map(|(k, v)| k.len() + v.len() + 48)
                        .sum::<usize>()
                    + n.info
                        .taints
                        .iter()
                        .map(|t| t.key.len() + t.value.len() + 56)
                        .sum::<usize>()
                    + n.usage.owners.keys().map(|k| k.len() + 40).sum::<usize>()
                    + n.usage.ports.len() * 64
                    + n.usage.members.len() * size_of::<usize>()
                    + n.usage.matched.len() * size_of::<u32>()
            })
            .sum();
        let pod_bytes: usize = self
            .pods
            .iter()
            .map(|(k, p)| {
                k.len()
                    + p.node.len()
                    + size_of::<Placement>()
                    + map_entry
                    + p.usage.owner.as_ref().map_or(0, String::len)
                    + p.usage.host_ports.len() * size_of::<HostPort>()
                    + size_of::<PodMeta>()
                    + p.usage.meta.namespace.len()
                    + p.usage.meta.name.len()
                    + p.usage.meta.uid.len()
                    + p.usage.meta.start_time.len()
                    + p.usage
                        .meta
                        .labels
                        .iter()
                        .map(|(k, v)| k.len() + v.len() + 48)
                        .sum::<usize>()
                    + p.matched.len() * size_of::<usize>()
            })
            .sum();
        node_bytes + pod_bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str) -> NodeInfo {
        NodeInfo {
            name: name.into(),
            allocatable: Resources {
                milli_cpu: 4000,
                memory: 8 << 30,
            },
            allowed_pods: 110,
            ..NodeInfo::default()
        }
    }

    fn usage(cpu: i64) -> PodUsage {
        PodUsage {
            requests: Resources {
                milli_cpu: cpu,
                memory: 0,
            },
            nonzero: Resources {
                milli_cpu: cpu,
                memory: 0,
            },
            owner: Some("rc-uid".into()),
            ..PodUsage::default()
        }
    }

    #[test]
    fn an_assumed_pod_takes_capacity_until_its_bind_fails() {
        let mut cache = SchedulerCache::default();
        cache.upsert_node(node("a"));
        cache.assume("ns/p", "a", usage(1000));
        let a = cache.node("a").expect("node a");
        assert_eq!((a.usage.requested.milli_cpu, a.usage.pods), (1000, 1));
        assert_eq!(a.usage.owned_by("rc-uid"), 1);
        cache.forget("ns/p");
        let a = cache.node("a").expect("node a");
        assert_eq!((a.usage.requested.milli_cpu, a.usage.pods), (0, 0));
        assert!(a.usage.owners.is_empty());
    }

    #[test]
    fn confirming_an_assumed_pod_does_not_count_it_twice() {
        let mut cache = SchedulerCache::default();
        cache.upsert_node(node("a"));
        cache.assume("ns/p", "a", usage(500));
        cache.observe_bound("ns/p", "a", usage(500));
        assert!(!cache.is_assumed("ns/p"));
        cache.forget("ns/p"); // no effect once confirmed
        assert_eq!(cache.node("a").map(|n| n.usage.pods), Some(1));
    }

    #[test]
    fn a_pod_bound_elsewhere_than_assumed_moves_its_usage() {
        let mut cache = SchedulerCache::default();
        cache.upsert_node(node("a"));
        cache.upsert_node(node("b"));
        cache.assume("ns/p", "a", usage(500));
        cache.observe_bound("ns/p", "b", usage(500));
        assert_eq!(cache.node("a").map(|n| n.usage.pods), Some(0));
        assert_eq!(cache.node("b").map(|n| n.usage.pods), Some(1));
    }

    #[test]
    fn pods_seen_before_their_node_are_counted_when_it_arrives() {
        let mut cache = SchedulerCache::default();
        cache.observe_bound("ns/p", "late", usage(700));
        assert_eq!(cache.upsert_node(node("late")), NodeChange::Added);
        assert_eq!(
            cache.node("late").map(|n| n.usage.requested.milli_cpu),
            Some(700)
        );
    }

    #[test]
    fn removing_a_node_keeps_the_index_of_the_others_right() {
        let mut cache = SchedulerCache::default();
        for n in ["a", "b", "c"] {
            cache.upsert_node(node(n));
        }
        cache.remove_node("a");
        assert_eq!(cache.node_count(), 2);
        assert_eq!(cache.node("c").map(|n| n.info.name.as_str()), Some("c"));
        assert_eq!(cache.node("b").map(|n| n.info.name.as_str()), Some("b"));
    }

    #[test]
    fn owner_counts_per_zone_follow_pods_and_node_labels() {
        let mut cache = SchedulerCache::default();
        let zoned = |name: &str, zone: &str| {
            let mut n = node(name);
            n.labels.insert(LABEL_ZONE.into(), zone.into());
            n
        };
        cache.upsert_node(zoned("a", "z1"));
        cache.upsert_node(zoned("b", "z2"));
        cache.assume("ns/p", "a", usage(100));
        cache.assume("ns/q", "a", usage(100));
        cache.assume("ns/r", "b", usage(100));
        let counts = |c: &SchedulerCache| {
            let mut v: Vec<(String, u32)> = c
                .zone_counts("rc-uid")
                .map(|m| m.iter().map(|(k, v)| (k.clone(), *v)).collect())
                .unwrap_or_default();
            v.sort();
            v
        };
        assert_eq!(counts(&cache), [("z1".into(), 2), ("z2".into(), 1)]);
        cache.upsert_node(zoned("a", "z3"));
        assert_eq!(counts(&cache), [("z2".into(), 1), ("z3".into(), 2)]);
        cache.remove_pod("ns/q");
        cache.remove_node("b");
        assert_eq!(counts(&cache), [("z3".into(), 1)]);
        cache.upsert_node(zoned("b", "z2"));
        assert_eq!(counts(&cache), [("z2".into(), 1), ("z3".into(), 1)]);
    }

    #[test]
    fn a_heartbeat_is_an_unchanged_node() {
        let mut cache = SchedulerCache::default();
        cache.upsert_node(node("a"));
        assert_eq!(cache.upsert_node(node("a")), NodeChange::Unchanged);
        let mut cordoned = node("a");
        cordoned.unschedulable = true;
        assert_eq!(cache.upsert_node(cordoned), NodeChange::Updated);
    }
}
