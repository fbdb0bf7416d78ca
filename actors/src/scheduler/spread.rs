//! PodTopologySpread (kube-scheduler's `plugins/podtopologyspread`): `DoNotSchedule`
//! constraints filter (a domain may not get more than `maxSkew` matching pods above the
//! least loaded eligible domain), `ScheduleAnyway` constraints score (fewer matching pods
//! in the node's domains is better). A pod without constraints gets kube-scheduler's
//! system defaults (hostname maxSkew 3, zone maxSkew 5, ScheduleAnyway), counting the
//! pods of its own controller (kube-scheduler derives the selector from the services and
//! controllers selecting the pod; the controller's pods are what those select).

use std::collections::HashMap;

use k8s_openapi::api::core::v1 as core;
use serde_json::Value;

use super::affinity::{Namespaces, PodSelector};
use super::cache::{NamespaceLabels, NodeState};
use super::info::{NodeInfo, PodInfo, PodMeta};

pub const LABEL_HOSTNAME: &str = "kubernetes.io/hostname";
pub const LABEL_ZONE: &str = "topology.kubernetes.io/zone";

/// Which pods a constraint counts.
#[derive(Debug, Clone, PartialEq)]
pub enum Counted {
    Selector(PodSelector),
    /// The pods of this controller (the system default constraints).
    Owner(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Constraint {
    pub max_skew: i64,
    pub topology_key: String,
    /// `DoNotSchedule` (filter) rather than `ScheduleAnyway` (score).
    pub hard: bool,
    pub min_domains: Option<i64>,
    pub counted: Counted,
    /// nodeAffinityPolicy Honor (the default): only nodes matching the pod's node
    /// selector and required node affinity count.
    pub honor_affinity: bool,
    /// nodeTaintsPolicy Honor (default Ignore): only nodes whose taints the pod tolerates.
    pub honor_taints: bool,
    /// The pod itself matches the selector (it adds one to its domain).
    pub self_match: bool,
    /// The cache's index of the selector's counts per node, when it keeps one.
    pub index: Option<usize>,
}

impl Constraint {
    /// `spec.topologySpreadConstraints`, parsed (invalid entries were refused at create).
    pub fn parse_all(spec: Option<&Value>, pod: &PodMeta) -> Vec<Constraint> {
        let Some(list) = spec
            .and_then(|s| s.get("topologySpreadConstraints"))
            .filter(|v| v.is_array())
        else {
            return Vec::new();
        };
        let parsed: Vec<core::TopologySpreadConstraint> =
            serde_json::from_value(list.clone()).unwrap_or_default();
        parsed
            .iter()
            .map(|c| {
                let selector = PodSelector::build(
                    c.label_selector.as_ref(),
                    Namespaces::Listed(vec![pod.namespace.clone()]),
                    &pod.labels,
                    c.match_label_keys.as_deref().unwrap_or_default(),
                    &[],
                );
                let self_match = selector.matches(pod, &NamespaceLabels::new());
                Constraint {
                    max_skew: i64::from(c.max_skew),
                    topology_key: c.topology_key.clone(),
                    hard: c.when_unsatisfiable == "DoNotSchedule",
                    min_domains: c.min_domains.map(i64::from),
                    counted: Counted::Selector(selector),
                    honor_affinity: c.node_affinity_policy.as_deref() != Some("Ignore"),
                    honor_taints: c.node_taints_policy.as_deref() == Some("Honor"),
                    self_match,
                    index: None,
                }
            })
            .collect()
    }

    /// kube-scheduler's system default constraints, for a pod with a controller.
    pub fn system_defaults(owner: Option<&str>) -> Vec<Constraint> {
        let Some(owner) = owner else {
            return Vec::new();
        };
        [(LABEL_HOSTNAME, 3), (LABEL_ZONE, 5)]
            .into_iter()
            .map(|(key, skew)| Constraint {
                max_skew: skew,
                topology_key: key.to_string(),
                hard: false,
                min_domains: None,
                counted: Counted::Owner(owner.to_string()),
                honor_affinity: true,
                honor_taints: false,
                self_match: true,
                index: None,
            })
            .collect()
    }

    /// Matching pods on one node.
    pub fn count_on(&self, node: &NodeState) -> i64 {
        match (&self.counted, self.index) {
            (Counted::Owner(o), _) => i64::from(node.usage.owned_by(o)),
            (Counted::Selector(_), Some(i)) => i64::from(node.usage.indexed(i)),
            (Counted::Selector(s), None) => {
                let none = NamespaceLabels::new();
                node.usage
                    .members
                    .iter()
                    .filter(|p| s.matches(p, &none))
                    .count() as i64
            }
        }
    }

    /// Whether the node's pods count for this pod's constraints at all.
    fn eligible(&self, node: &NodeInfo, pod: &PodInfo) -> bool {
        (!self.honor_affinity || pod.matches_node_selector(node))
            && (!self.honor_taints || node.taints.iter().all(|t| pod.tolerates(t)))
    }
}

/// Why a node fails the PodTopologySpread filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpreadFailure {
    /// The node lacks a constraint's topology label (unresolvable).
    MissingLabel,
    /// Placing the pod there would exceed a maxSkew.
    Skew,
}

/// Per-cycle counts of one `DoNotSchedule` constraint.
#[derive(Debug, Clone)]
struct HardCounts {
    counts: HashMap<String, i64>,
    /// Matching pods in the least loaded eligible domain (0 below minDomains domains).
    min: Option<i64>,
}

/// The filter's state for one pod (kube-scheduler's preFilterState).
#[derive(Debug, Default, Clone)]
pub struct SpreadState {
    hard: Vec<(usize, HardCounts)>,
}

impl SpreadState {
    pub fn build(constraints: &[Constraint], pod: &PodInfo, nodes: &[NodeState]) -> SpreadState {
        let hard: Vec<usize> = (0..constraints.len())
            .filter(|&i| constraints[i].hard)
            .collect();
        if hard.is_empty() {
            return SpreadState::default();
        }
        let mut out: Vec<(usize, HardCounts)> = hard
            .iter()
            .map(|&i| {
                (
                    i,
                    HardCounts {
                        counts: HashMap::new(),
                        min: None,
                    },
                )
            })
            .collect();
        for node in nodes {
            // Only nodes with every constraint's topology label count.
            if !hard
                .iter()
                .all(|&i| node.info.labels.contains_key(&constraints[i].topology_key))
            {
                continue;
            }
            for (i, hc) in out.iter_mut() {
                let c = &constraints[*i];
                if !c.eligible(&node.info, pod) {
                    continue;
                }
                let Some(value) = node.info.labels.get(&c.topology_key) else {
                    continue;
                };
                let n = c.count_on(node);
                match hc.counts.get_mut(value.as_str()) {
                    Some(total) => *total += n,
                    None => {
                        hc.counts.insert(value.clone(), n);
                    }
                }
            }
        }
        for (i, hc) in out.iter_mut() {
            let c = &constraints[*i];
            let below_min_domains = c.min_domains.is_some_and(|m| (hc.counts.len() as i64) < m);
            hc.min = if below_min_domains {
                Some(0)
            } else {
                hc.counts.values().min().copied()
            };
        }
        SpreadState { hard: out }
    }

    pub fn is_active(&self) -> bool {
        !self.hard.is_empty()
    }

    /// `existing` leaves (`by` = -1) or comes back to (`by` = 1) `node` (preemption's
    /// check of a node with its victims taken off).
    pub fn update(
        &mut self,
        constraints: &[Constraint],
        pod: &PodInfo,
        existing: &PodMeta,
        node: &NodeInfo,
        by: i64,
    ) {
        let none = NamespaceLabels::new();
        let counted_node = self
            .hard
            .iter()
            .all(|(i, _)| node.labels.contains_key(&constraints[*i].topology_key));
        if !counted_node {
            return;
        }
        for (i, hc) in self.hard.iter_mut() {
            let c = &constraints[*i];
            let matches = matches!(&c.counted, Counted::Selector(s) if s.matches(existing, &none));
            if !matches || !c.eligible(node, pod) {
                continue;
            }
            let Some(value) = node.labels.get(&c.topology_key) else {
                continue;
            };
            if let Some(n) = hc.counts.get_mut(value.as_str()) {
                *n = (*n + by).max(0);
            }
            let below_min_domains = c.min_domains.is_some_and(|m| (hc.counts.len() as i64) < m);
            hc.min = if below_min_domains {
                Some(0)
            } else {
                hc.counts.values().min().copied()
            };
        }
    }

    pub fn check(&self, constraints: &[Constraint], node: &NodeInfo) -> Result<(), SpreadFailure> {
        for (i, _) in &self.hard {
            if !node.labels.contains_key(&constraints[*i].topology_key) {
                return Err(SpreadFailure::MissingLabel);
            }
        }
        for (i, hc) in &self.hard {
            let c = &constraints[*i];
            let Some(value) = node.labels.get(&c.topology_key) else {
                return Err(SpreadFailure::MissingLabel);
            };
            // No eligible domain at all: nothing to be skewed against.
            let Some(min) = hc.min else { continue };
            let here = hc.counts.get(value.as_str()).copied().unwrap_or(0);
            if here + i64::from(c.self_match) - min > c.max_skew {
                return Err(SpreadFailure::Skew);
            }
        }
        Ok(())
    }
}

/// kube-scheduler's `scoreForCount`.
fn score_for_count(count: i64, max_skew: i64, weight: f64) -> f64 {
    count as f64 * weight + (max_skew - 1) as f64
}

/// Scores of the feasible nodes for the `ScheduleAnyway` constraints (or the system
/// defaults), normalized onto 0..=100 as kube-scheduler does: fewer matching pods in the
/// node's domains scores higher; nodes missing a topology label of explicit constraints
/// score 0. `raw` is filled in the order of `feasible`.
/// `owner_zones`: the cache's count of the pod's controller's pods per zone, which the
/// system default zone constraint reads when every node is eligible (the pod has no node
/// selector or required node affinity) instead of walking the nodes.
pub fn score(
    constraints: &[Constraint],
    system_defaulted: bool,
    pod: &PodInfo,
    nodes: &[NodeState],
    feasible: &[usize],
    owner_zones: Option<&HashMap<String, u32>>,
    out: &mut Vec<i64>,
) {
    out.clear();
    let soft: Vec<&Constraint> = constraints.iter().filter(|c| !c.hard).collect();
    if soft.is_empty() {
        out.extend(feasible.iter().map(|_| 0));
        return;
    }
    let require_all = !system_defaulted;
    let has_all = |n: &NodeInfo| soft.iter().all(|c| n.labels.contains_key(&c.topology_key));
    let ignored: Vec<bool> = feasible
        .iter()
        .map(|&i| require_all && !has_all(&nodes[i].info))
        .collect();
    let scored = ignored.iter().filter(|x| !**x).count();
    // Domains among the feasible nodes, and for non-hostname keys their counts over all
    // eligible nodes.
    let mut weights = Vec::with_capacity(soft.len());
    let mut domain_counts: Vec<HashMap<&str, i64>> = Vec::with_capacity(soft.len());
    for c in &soft {
        let mut counts: HashMap<&str, i64> = HashMap::new();
        if c.topology_key == LABEL_HOSTNAME {
            weights.push(((scored + 2) as f64).ln());
            domain_counts.push(counts);
            continue;
        }
        for (k, &i) in feasible.iter().enumerate() {
            if ignored[k] {
                continue;
            }
            if let Some(v) = nodes[i].info.labels.get(&c.topology_key) {
                counts.entry(v.as_str()).or_insert(0);
            }
        }
        weights.push(((counts.len() + 2) as f64).ln());
        let all_eligible = pod.node_selector.is_empty() && pod.affinity_terms.is_none();
        if system_defaulted
            && all_eligible
            && c.topology_key == LABEL_ZONE
            && matches!(c.counted, Counted::Owner(_))
        {
            for (zone, total) in counts.iter_mut() {
                *total = owner_zones
                    .and_then(|z| z.get(*zone))
                    .map_or(0, |n| i64::from(*n));
            }
            domain_counts.push(counts);
            continue;
        }
        for node in nodes {
            if require_all && !has_all(&node.info) {
                continue;
            }
            if !c.eligible(&node.info, pod) {
                continue;
            }
            if let Some(v) = node.info.labels.get(&c.topology_key) {
                if let Some(total) = counts.get_mut(v.as_str()) {
                    *total += c.count_on(node);
                }
            }
        }
        domain_counts.push(counts);
    }
    for (k, &i) in feasible.iter().enumerate() {
        if ignored[k] {
            out.push(-1);
            continue;
        }
        let node = &nodes[i];
        let mut s = 0.0;
        for (j, c) in soft.iter().enumerate() {
            let Some(v) = node.info.labels.get(&c.topology_key) else {
                continue;
            };
            let count = if c.topology_key == LABEL_HOSTNAME {
                c.count_on(node)
            } else {
                domain_counts[j].get(v.as_str()).copied().unwrap_or(0)
            };
            s += score_for_count(count, c.max_skew, weights[j]);
        }
        out.push(s.round() as i64);
    }
    normalize(out);
}

/// kube-scheduler's PodTopologySpread NormalizeScore; -1 marks an ignored node.
fn normalize(raw: &mut [i64]) {
    let valid = raw.iter().filter(|s| **s >= 0);
    let min = valid.clone().min().copied().unwrap_or(0);
    let max = valid.max().copied().unwrap_or(0);
    for s in raw.iter_mut() {
        *s = if *s < 0 {
            0
        } else if max == 0 {
            100
        } else {
            100 * (max + min - *s) / max
        };
    }
}
