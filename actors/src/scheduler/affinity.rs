//! InterPodAffinity (kube-scheduler's `plugins/interpodaffinity`): which pods a pod wants
//! near it or away from it, per topology domain (`topologyKey`), required (a filter) or
//! preferred (a score), including the symmetry rules: an existing pod's required
//! anti-affinity keeps a matching pod out of its domain, and existing pods' affinity terms
//! that match the incoming pod score their domains.
//!
//! The terms are parsed once per pod into [`Term`]s; per scheduling cycle the counts per
//! domain are built once ([`AffinityState`], [`AffinityScore`]) and each node is then a
//! few map lookups.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use k8s_openapi::api::core::v1 as core;
use serde_json::Value;

use super::cache::{AffinityGroup, NamespaceLabels, NodeState};
use super::info::{NodeInfo, PodMeta};
use crate::api::selector::{LabelSelector, Operator, Requirement};

/// Which namespaces a term looks at: the names listed plus those whose labels match the
/// namespace selector; neither given means the pod's own namespace.
#[derive(Debug, Clone, PartialEq)]
pub enum Namespaces {
    Listed(Vec<String>),
    /// `namespaceSelector` given: `{}` selects every namespace.
    Selected {
        names: Vec<String>,
        selector: LabelSelector,
    },
}

impl Namespaces {
    pub fn matches(&self, ns: &str, labels: &NamespaceLabels) -> bool {
        match self {
            Namespaces::Listed(names) => names.iter().any(|n| n == ns),
            Namespaces::Selected { names, selector } => {
                names.iter().any(|n| n == ns)
                    || (selector.is_empty() || labels.get(ns).is_some_and(|l| selector.matches(l)))
            }
        }
    }
}

/// A label selector over pods in some namespaces, with the requirements `matchLabelKeys`
/// and `mismatchLabelKeys` add from the pod's own labels.
#[derive(Debug, Clone, PartialEq)]
pub struct PodSelector {
    pub labels: LabelSelector,
    pub extra: Vec<Requirement>,
    pub namespaces: Namespaces,
}

impl PodSelector {
    pub fn matches(&self, pod: &PodMeta, ns: &NamespaceLabels) -> bool {
        self.namespaces.matches(&pod.namespace, ns)
            && self.labels.matches(&pod.labels)
            && self.extra.iter().all(|r| r.matches(&pod.labels))
    }

    /// A key under which the scheduler cache may keep counts of matching pods per node:
    /// only selectors that do not depend on namespace labels (which change without the
    /// pods changing).
    pub fn index_key(&self) -> Option<String> {
        match &self.namespaces {
            Namespaces::Listed(names) => Some(format!(
                "{}|{}|{:?}",
                names.join(","),
                self.labels,
                self.extra
            )),
            Namespaces::Selected { .. } => None,
        }
    }

    /// From a `LabelSelector` (None selects nothing) in `namespace`, with label keys
    /// whose values are taken from `own` and added as `In` (match) or `NotIn` (mismatch).
    pub fn build(
        selector: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector>,
        namespaces: Namespaces,
        own: &BTreeMap<String, String>,
        match_keys: &[String],
        mismatch_keys: &[String],
    ) -> PodSelector {
        let labels = selector
            .and_then(|s| serde_json::to_value(s).ok())
            .and_then(|v| LabelSelector::from_label_selector_value(&v).ok())
            .unwrap_or_else(LabelSelector::nothing);
        // Kubernetes ignores a key the pod does not carry.
        let extra = [(match_keys, Operator::In), (mismatch_keys, Operator::NotIn)]
            .into_iter()
            .flat_map(|(keys, op)| {
                keys.iter().filter_map(move |k| {
                    let v = own.get(k)?;
                    Requirement::new(k, op, BTreeSet::from([v.clone()])).ok()
                })
            })
            .collect();
        PodSelector {
            labels,
            extra,
            namespaces,
        }
    }
}

/// One pod (anti-)affinity term.
#[derive(Debug, Clone, PartialEq)]
pub struct Term {
    pub selector: PodSelector,
    pub topology_key: String,
    /// 1..=100 for preferred terms; 1 for required ones.
    pub weight: i64,
}

impl Term {
    fn parse(t: &core::PodAffinityTerm, weight: i64, pod: &PodMeta) -> Term {
        let names = t.namespaces.clone().unwrap_or_default();
        let namespaces = match &t.namespace_selector {
            Some(sel) => Namespaces::Selected {
                names,
                selector: serde_json::to_value(sel)
                    .ok()
                    .and_then(|v| LabelSelector::from_label_selector_value(&v).ok())
                    .unwrap_or_else(LabelSelector::nothing),
            },
            None if names.is_empty() => Namespaces::Listed(vec![pod.namespace.clone()]),
            None => Namespaces::Listed(names),
        };
        Term {
            selector: PodSelector::build(
                t.label_selector.as_ref(),
                namespaces,
                &pod.labels,
                t.match_label_keys.as_deref().unwrap_or_default(),
                t.mismatch_label_keys.as_deref().unwrap_or_default(),
            ),
            topology_key: t.topology_key.clone(),
            weight,
        }
    }

    /// The domain of `node` for this term, if the node has the topology label.
    fn domain<'n>(&self, node: &'n NodeInfo) -> Option<&'n str> {
        node.labels.get(&self.topology_key).map(String::as_str)
    }
}

/// A pod's `podAffinity` and `podAntiAffinity`, parsed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PodAffinityTerms {
    pub required_affinity: Vec<Term>,
    pub required_anti: Vec<Term>,
    pub preferred_affinity: Vec<Term>,
    pub preferred_anti: Vec<Term>,
}

impl PodAffinityTerms {
    /// The terms of `spec.affinity` (None when the pod has no pod (anti-)affinity).
    pub fn parse(affinity: Option<&Value>, pod: &PodMeta) -> Option<PodAffinityTerms> {
        let affinity: core::Affinity = serde_json::from_value(affinity?.clone()).ok()?;
        let mut out = PodAffinityTerms::default();
        if let Some(a) = &affinity.pod_affinity {
            for t in a
                .required_during_scheduling_ignored_during_execution
                .iter()
                .flatten()
            {
                out.required_affinity.push(Term::parse(t, 1, pod));
            }
            for w in a
                .preferred_during_scheduling_ignored_during_execution
                .iter()
                .flatten()
            {
                let term = Term::parse(&w.pod_affinity_term, i64::from(w.weight), pod);
                out.preferred_affinity.push(term);
            }
        }
        if let Some(a) = &affinity.pod_anti_affinity {
            for t in a
                .required_during_scheduling_ignored_during_execution
                .iter()
                .flatten()
            {
                out.required_anti.push(Term::parse(t, 1, pod));
            }
            for w in a
                .preferred_during_scheduling_ignored_during_execution
                .iter()
                .flatten()
            {
                let term = Term::parse(&w.pod_affinity_term, i64::from(w.weight), pod);
                out.preferred_anti.push(term);
            }
        }
        (!out.is_empty()).then_some(out)
    }

    pub fn is_empty(&self) -> bool {
        self.required_affinity.is_empty()
            && self.required_anti.is_empty()
            && self.preferred_affinity.is_empty()
            && self.preferred_anti.is_empty()
    }

    pub fn has_required(&self) -> bool {
        !self.required_affinity.is_empty() || !self.required_anti.is_empty()
    }

    pub fn has_preferred(&self) -> bool {
        !self.preferred_affinity.is_empty() || !self.preferred_anti.is_empty()
    }
}

/// Counts per topology domain: topology key → label value → count (nested so lookups
/// borrow `&str` instead of building keys).
type Domains = HashMap<String, HashMap<String, i64>>;

/// Add `by` to a domain's count; a count back at zero is removed, as kube-scheduler does
/// (an empty map means "no matching pod anywhere").
fn bump(map: &mut Domains, key: &str, value: &str, by: i64) {
    let values = match map.get_mut(key) {
        Some(v) => v,
        None => map.entry(key.to_string()).or_default(),
    };
    match values.get_mut(value) {
        Some(n) => *n += by,
        None => {
            values.insert(value.to_string(), by);
        }
    }
    if values.get(value) == Some(&0) {
        values.remove(value);
    }
    if values.is_empty() {
        map.remove(key);
    }
}

fn at(map: &Domains, key: &str, value: &str) -> i64 {
    map.get(key)
        .and_then(|v| v.get(value))
        .copied()
        .unwrap_or(0)
}

/// Why a node fails the InterPodAffinity filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AffinityFailure {
    /// The pod's required affinity is not met (kube-scheduler: unresolvable).
    Affinity,
    /// The pod's required anti-affinity is not met.
    AntiAffinity,
    /// An existing pod's required anti-affinity forbids the pod.
    ExistingAntiAffinity,
}

/// The filter's per-cycle counts (kube-scheduler's preFilterState).
#[derive(Debug, Default, Clone)]
pub struct AffinityState {
    /// Pods matching all the incoming pod's required affinity terms, per term domain.
    affinity: Domains,
    /// Pods matching each required anti-affinity term, per term domain.
    anti: Domains,
    /// Domains where an existing pod's required anti-affinity matches the incoming pod.
    existing_anti: Domains,
    /// The incoming pod's required terms (copied so the state owns what it checks).
    required_affinity: Vec<Term>,
    required_anti: Vec<Term>,
    /// The pod matches all its own affinity terms (the first pod of a group that wants
    /// to be together may go anywhere its topologies exist).
    self_match: bool,
}

impl AffinityState {
    /// Count over every node; `groups` are the placed pods with pod (anti-)affinity
    /// terms, grouped by identical terms.
    pub fn build<'a>(
        pod: &PodMeta,
        terms: Option<&PodAffinityTerms>,
        nodes: &[NodeState],
        node_of: impl Fn(&str) -> Option<&'a NodeInfo>,
        groups: impl Iterator<Item = &'a AffinityGroup>,
        ns: &NamespaceLabels,
    ) -> AffinityState {
        let mut s = AffinityState::default();
        for g in groups {
            for t in &g.terms.required_anti {
                if !t.selector.matches(pod, ns) {
                    continue;
                }
                for (node_name, n) in &g.nodes {
                    if let Some(v) = node_of(node_name).and_then(|node| t.domain(node)) {
                        bump(&mut s.existing_anti, &t.topology_key, v, i64::from(*n));
                    }
                }
            }
        }
        let Some(terms) = terms.filter(|t| t.has_required()) else {
            return s;
        };
        s.required_affinity = terms.required_affinity.clone();
        s.required_anti = terms.required_anti.clone();
        s.self_match = terms
            .required_affinity
            .iter()
            .all(|t| t.selector.matches(pod, ns));
        for node in nodes {
            for existing in &node.usage.members {
                if !terms.required_affinity.is_empty()
                    && terms
                        .required_affinity
                        .iter()
                        .all(|t| t.selector.matches(existing, ns))
                {
                    for t in &terms.required_affinity {
                        if let Some(v) = t.domain(&node.info) {
                            bump(&mut s.affinity, &t.topology_key, v, 1);
                        }
                    }
                }
                for t in &terms.required_anti {
                    if let Some(v) = t.domain(&node.info) {
                        if t.selector.matches(existing, ns) {
                            bump(&mut s.anti, &t.topology_key, v, 1);
                        }
                    }
                }
            }
        }
        s
    }

    /// `existing` leaves (`by` = -1) or comes back to (`by` = 1) `node`: kube-scheduler's
    /// RemovePod/AddPod, used to check a node with preemption victims taken off.
    pub fn update(
        &mut self,
        incoming: &PodMeta,
        existing: &PodMeta,
        node: &NodeInfo,
        ns: &NamespaceLabels,
        by: i64,
    ) {
        if let Some(their) = existing.affinity.as_deref() {
            for t in &their.required_anti {
                if let Some(v) = t.domain(node) {
                    if t.selector.matches(incoming, ns) {
                        bump(&mut self.existing_anti, &t.topology_key, v, by);
                    }
                }
            }
        }
        if !self.required_affinity.is_empty()
            && self
                .required_affinity
                .iter()
                .all(|t| t.selector.matches(existing, ns))
        {
            for t in &self.required_affinity {
                if let Some(v) = t.domain(node) {
                    bump(&mut self.affinity, &t.topology_key, v, by);
                }
            }
        }
        for t in &self.required_anti {
            if let Some(v) = t.domain(node) {
                if t.selector.matches(existing, ns) {
                    bump(&mut self.anti, &t.topology_key, v, by);
                }
            }
        }
    }

    /// Whether the state can reject anything (else the filter is skipped).
    pub fn is_active(&self) -> bool {
        !self.existing_anti.is_empty()
            || !self.required_affinity.is_empty()
            || !self.required_anti.is_empty()
    }

    /// kube-scheduler's order: affinity, anti-affinity, existing pods' anti-affinity.
    pub fn check(&self, node: &NodeInfo) -> Result<(), AffinityFailure> {
        if !self.required_affinity.is_empty() {
            let mut pods_exist = true;
            for key in self.required_affinity.iter().map(|t| &t.topology_key) {
                match node.labels.get(key) {
                    None => return Err(AffinityFailure::Affinity),
                    Some(v) if at(&self.affinity, key, v) <= 0 => pods_exist = false,
                    Some(_) => {}
                }
            }
            let first_of_group = self.affinity.is_empty() && self.self_match;
            if !(pods_exist || first_of_group) {
                return Err(AffinityFailure::Affinity);
            }
        }
        for key in self.required_anti.iter().map(|t| &t.topology_key) {
            if let Some(v) = node.labels.get(key) {
                if at(&self.anti, key, v) > 0 {
                    return Err(AffinityFailure::AntiAffinity);
                }
            }
        }
        if self.existing_anti.iter().any(|(k, values)| {
            node.labels
                .get(k)
                .is_some_and(|v| values.get(v).is_some_and(|n| *n > 0))
        }) {
            return Err(AffinityFailure::ExistingAntiAffinity);
        }
        Ok(())
    }
}

/// The score's per-cycle sums of weights per domain (kube-scheduler's preScoreState).
#[derive(Debug, Default)]
pub struct AffinityScore {
    topology: Domains,
}

/// kube-scheduler's hardPodAffinityWeight: how much an existing pod's *required* affinity
/// to the incoming pod counts in the score.
pub const HARD_POD_AFFINITY_WEIGHT: i64 = 1;

impl AffinityScore {
    /// `groups`: placed pods with pod (anti)-affinity terms, grouped by identical terms;
    /// `indexed[j]`: the cache's selector index of the incoming pod's j-th preferred term
    /// (affinity terms first, then anti-affinity), when it keeps one.
    #[allow(clippy::too_many_arguments)]
    pub fn build<'a>(
        pod: &PodMeta,
        terms: Option<&PodAffinityTerms>,
        nodes: &[NodeState],
        node_of: impl Fn(&str) -> Option<&'a NodeInfo>,
        groups: impl Iterator<Item = &'a AffinityGroup>,
        indexed: &[Option<usize>],
        ns: &NamespaceLabels,
    ) -> AffinityScore {
        let mut s = AffinityScore::default();
        // Symmetry: existing pods' terms that match the incoming pod, each distinct term
        // matched once.
        for g in groups {
            let their = &g.terms;
            let sets = [
                (&their.required_affinity, HARD_POD_AFFINITY_WEIGHT),
                (&their.preferred_affinity, 1),
                (&their.preferred_anti, -1),
            ];
            for (list, sign) in sets {
                for t in list {
                    if !t.selector.matches(pod, ns) {
                        continue;
                    }
                    for (node_name, n) in &g.nodes {
                        if let Some(v) = node_of(node_name).and_then(|node| t.domain(node)) {
                            let by = sign * t.weight * i64::from(*n);
                            bump(&mut s.topology, &t.topology_key, v, by);
                        }
                    }
                }
            }
        }
        let Some(terms) = terms.filter(|t| t.has_preferred()) else {
            return s;
        };
        let own = terms
            .preferred_affinity
            .iter()
            .map(|t| (t, 1))
            .chain(terms.preferred_anti.iter().map(|t| (t, -1)));
        for (j, (t, sign)) in own.enumerate() {
            for node in nodes {
                let Some(v) = t.domain(&node.info) else {
                    continue;
                };
                let n = match indexed.get(j).copied().flatten() {
                    Some(id) => i64::from(node.usage.indexed(id)),
                    None => node
                        .usage
                        .members
                        .iter()
                        .filter(|m| t.selector.matches(m, ns))
                        .count() as i64,
                };
                if n > 0 {
                    bump(&mut s.topology, &t.topology_key, v, sign * t.weight * n);
                }
            }
        }
        s
    }

    pub fn is_empty(&self) -> bool {
        self.topology.is_empty()
    }

    /// The node's raw score: the sums of the domains it is in.
    pub fn raw(&self, node: &NodeInfo) -> i64 {
        self.topology
            .iter()
            .filter_map(|(k, values)| node.labels.get(k).and_then(|v| values.get(v)))
            .sum()
    }
}

/// kube-scheduler's InterPodAffinity NormalizeScore: min..max onto 0..=100.
pub fn normalize(raw: &mut [i64]) {
    let (min, max) = raw
        .iter()
        .fold((i64::MAX, i64::MIN), |(lo, hi), &s| (lo.min(s), hi.max(s)));
    let diff = max.saturating_sub(min);
    for s in raw.iter_mut() {
        *s = if diff > 0 {
            (100.0 * ((*s - min) as f64 / diff as f64)) as i64
        } else {
            0
        };
    }
}
