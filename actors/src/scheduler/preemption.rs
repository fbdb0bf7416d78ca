//! DefaultPreemption (kube-scheduler's `plugins/defaultpreemption`): when a pod fits
//! nowhere, find a node where evicting pods of lower priority makes it fit, evicting as
//! few and as unimportant pods as possible, and nominate that node for the pod.
//!
//! Per node whose failure eviction can cure: take every lower-priority pod off a copy of
//! the node; if the pod still does not fit there is nothing to do on that node; else give
//! pods back, most important first, as long as the pod still fits (those given back are
//! spared, the rest are the victims). Among the candidate nodes pick, in kube-scheduler's
//! order: fewest PodDisruptionBudget violations, lowest highest victim priority, lowest
//! sum of victim priorities, fewest victims, latest start of the most important victims,
//! then the first.
//!
//! PodDisruptionBudgets are a preference, not a wall, as in kube-scheduler: victims whose
//! eviction would violate a budget are given back first, candidates violating fewer win,
//! and a violating victim is still evicted when nothing else makes room.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde_json::Value;

use crate::api::selector::LabelSelector;

use super::cache::{NamespaceLabels, NodeState, SchedulerCache};
use super::filters::{self, Cycle, FitError, Reason};
use super::info::{PodInfo, PodMeta};

/// Which of a node's potential victims (most important first) would violate a
/// PodDisruptionBudget if all of them were evicted: `(violating, fine)`.
pub trait DisruptionBudgets {
    fn partition(&self, victims: Vec<Arc<PodMeta>>) -> (Vec<Arc<PodMeta>>, Vec<Arc<PodMeta>>);
}

/// No budgets: no eviction violates one.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoDisruptionBudgets;

impl DisruptionBudgets for NoDisruptionBudgets {
    fn partition(&self, victims: Vec<Arc<PodMeta>>) -> (Vec<Arc<PodMeta>>, Vec<Arc<PodMeta>>) {
        (Vec::new(), victims)
    }
}

/// One PodDisruptionBudget as preemption reads it.
#[derive(Debug, Clone)]
pub struct Budget {
    pub namespace: String,
    /// `None` for a nil, empty or invalid selector: such a budget matches nothing.
    pub selector: Option<LabelSelector>,
    /// `status.disruptionsAllowed`.
    pub allowed: i64,
    /// `status.disruptedPods`: evictions the API server has already counted.
    pub disrupted: BTreeSet<String>,
}

impl Budget {
    pub fn from_pdb(pdb: &Value) -> Budget {
        let selector = pdb
            .pointer("/spec/selector")
            .filter(|s| !s.is_null())
            .and_then(|s| LabelSelector::from_label_selector_value(s).ok())
            .filter(|s| !s.is_empty());
        Budget {
            namespace: pdb
                .pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            selector,
            allowed: pdb
                .pointer("/status/disruptionsAllowed")
                .and_then(Value::as_i64)
                .unwrap_or(0),
            disrupted: pdb
                .pointer("/status/disruptedPods")
                .and_then(Value::as_object)
                .map(|m| m.keys().cloned().collect())
                .unwrap_or_default(),
        }
    }
}

/// The cluster's budgets, counted as kube-scheduler's filterPodsWithPDBViolation does:
/// each victim a budget selects (and has not already counted) uses one of its allowed
/// disruptions; a victim that takes a budget below zero violates it.
#[derive(Debug, Default, Clone)]
pub struct Budgets {
    /// By `namespace/name`.
    pub budgets: BTreeMap<String, Budget>,
}

impl Budgets {
    /// The budget was added or changed (`Some`) or deleted (`None`).
    pub fn set(&mut self, key: String, budget: Option<Budget>) {
        match budget {
            Some(b) => self.budgets.insert(key, b),
            None => self.budgets.remove(&key),
        };
    }
}

impl DisruptionBudgets for Budgets {
    fn partition(&self, victims: Vec<Arc<PodMeta>>) -> (Vec<Arc<PodMeta>>, Vec<Arc<PodMeta>>) {
        let mut allowed: Vec<i64> = self.budgets.values().map(|b| b.allowed).collect();
        let (mut violating, mut fine) = (Vec::new(), Vec::new());
        for victim in victims {
            let mut violated = false;
            // A pod without labels matches no budget.
            if !victim.labels.is_empty() {
                for (i, b) in self.budgets.values().enumerate() {
                    let selects = b.namespace == victim.namespace
                        && b.selector
                            .as_ref()
                            .is_some_and(|s| s.matches(&victim.labels));
                    if !selects || b.disrupted.contains(&victim.name) {
                        continue;
                    }
                    allowed[i] -= 1;
                    if allowed[i] < 0 {
                        violated = true;
                    }
                }
            }
            if violated {
                violating.push(victim);
            } else {
                fine.push(victim);
            }
        }
        (violating, fine)
    }
}

/// What preemption decided.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// Evict `victims` from `node`; the pod is nominated there.
    Nominate {
        node: String,
        victims: Vec<Arc<PodMeta>>,
    },
    /// Nothing to evict; the message follows the filters' reasons.
    Failed(String),
}

/// One node's result.
#[derive(Debug)]
struct Candidate {
    node: usize,
    victims: Vec<Arc<PodMeta>>,
    violations: usize,
}

/// kube-scheduler's MoreImportantPod: higher priority first, then the one started first.
fn more_important(a: &PodMeta, b: &PodMeta) -> Ordering {
    b.priority
        .cmp(&a.priority)
        .then_with(|| a.start_time.cmp(&b.start_time))
}

/// Try preemption for `pod`, which failed on every node; `helpful[i]` says whether node
/// `i`'s failure is one eviction may cure (kube-scheduler's Unschedulable, as opposed to
/// UnschedulableAndUnresolvable). `nominated` is where an earlier preemption of this pod made room.
pub fn preempt(
    cache: &SchedulerCache,
    pod: &PodInfo,
    cycle: &Cycle,
    helpful: &[bool],
    nominated: Option<&str>,
    budgets: &dyn DisruptionBudgets,
    ns: &NamespaceLabels,
) -> Outcome {
    if pod.never_preempts {
        return Outcome::Failed("preemption: not eligible due to preemptionPolicy=Never.".into());
    }
    let priority = pod.priority();
    if let Some(node) = nominated.and_then(|n| cache.node(n)) {
        // Victims of the earlier preemption are still terminating: wait for them rather
        // than evict more.
        let terminating = node
            .usage
            .members
            .iter()
            .any(|m| m.terminating && m.priority < priority);
        if terminating {
            return Outcome::Failed(
                "preemption: not eligible due to a terminating pod on the nominated node.".into(),
            );
        }
    }
    let nodes = cache.nodes();
    let mut summary = FitError::new(nodes.len());
    let mut candidates = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        if !helpful.get(i).copied().unwrap_or(false) {
            summary.count([Reason::PreemptionNotHelpful]);
            continue;
        }
        match select_victims(cache, node, pod, cycle, budgets, ns) {
            Ok((victims, violations)) if !victims.is_empty() => candidates.push(Candidate {
                node: i,
                victims,
                violations,
            }),
            Ok(_) => summary.count([Reason::NoPreemptionVictims]),
            Err(reasons) => summary.count(reasons),
        }
    }
    match pick(candidates) {
        Some(c) => Outcome::Nominate {
            node: nodes[c.node].info.name.clone(),
            victims: c.victims,
        },
        None => Outcome::Failed(format!("preemption: {summary}")),
    }
}

/// The victims on `node` (and how many of them violate a budget), or why the node stays
/// unsuitable: no lower-priority pod to evict, or the filters' reasons with all of them
/// gone (kube-scheduler's wording for each).
fn select_victims(
    cache: &SchedulerCache,
    node: &NodeState,
    pod: &PodInfo,
    cycle: &Cycle,
    budgets: &dyn DisruptionBudgets,
    ns: &NamespaceLabels,
) -> Result<(Vec<Arc<PodMeta>>, usize), Vec<Reason>> {
    let priority = pod.priority();
    let mut potential: Vec<Arc<PodMeta>> = node
        .usage
        .members
        .iter()
        .filter(|m| m.priority < priority)
        .cloned()
        .collect();
    if potential.is_empty() {
        return Err(vec![Reason::NoPreemptionVictims]);
    }
    // A copy of the node and of the cycle's counts, with the pods taken off and given
    // back as kube-scheduler's RemovePod/AddPod do.
    let mut sim = node.clone();
    let mut local = cycle.clone();
    let me = &pod.usage.meta;
    let usage_of = |m: &PodMeta| cache.placement(&m.key()).map(|(_, u)| u.clone());
    let take = |sim: &mut NodeState, local: &mut Cycle, m: &PodMeta, by: i64| {
        if let Some(u) = usage_of(m) {
            if by < 0 {
                sim.usage.remove(&u);
            } else {
                sim.usage.add(&u);
            }
            local.affinity.update(me, m, &node.info, ns, by);
            local.spread.update(&pod.spread, pod, m, &node.info, by);
            true
        } else {
            false
        }
    };
    for m in &potential {
        take(&mut sim, &mut local, m, -1);
    }
    let mut reasons = Vec::new();
    if !filters::fits(&sim, pod, &local, &mut reasons) {
        return Err(reasons);
    }
    potential.sort_by(|a, b| more_important(a, b));
    // Pods whose eviction would violate a budget are given back first.
    let (violating, fine) = budgets.partition(potential);
    let mut victims = Vec::new();
    let mut violations = 0;
    for (group, violates) in [(violating, true), (fine, false)] {
        for m in group {
            if !take(&mut sim, &mut local, &m, 1) {
                continue;
            }
            reasons.clear();
            if !filters::fits(&sim, pod, &local, &mut reasons) {
                take(&mut sim, &mut local, &m, -1);
                if violates {
                    violations += 1;
                }
                victims.push(m);
            }
        }
    }
    Ok((victims, violations))
}

/// kube-scheduler's pickOneNodeForPreemption.
fn pick(mut candidates: Vec<Candidate>) -> Option<Candidate> {
    // Sums of priorities are offset so that more victims of negative priority never
    // look cheaper than fewer (kube-scheduler adds MaxInt32+1 to each).
    let offset = i64::from(i32::MAX) + 1;
    let highest = |c: &Candidate| {
        c.victims
            .iter()
            .map(|v| v.priority)
            .max()
            .unwrap_or(i32::MIN)
    };
    let sum = |c: &Candidate| {
        c.victims
            .iter()
            .map(|v| i64::from(v.priority) + offset)
            .sum::<i64>()
    };
    // The earliest start among the victims of the highest priority: later is better.
    let earliest_top = |c: &Candidate| {
        let top = highest(c);
        c.victims
            .iter()
            .filter(|v| v.priority == top)
            .map(|v| v.start_time.clone())
            .min()
            .unwrap_or_default()
    };
    candidates.sort_by(|a, b| {
        a.violations
            .cmp(&b.violations)
            .then_with(|| highest(a).cmp(&highest(b)))
            .then_with(|| sum(a).cmp(&sum(b)))
            .then_with(|| a.victims.len().cmp(&b.victims.len()))
            .then_with(|| earliest_top(b).cmp(&earliest_top(a)))
            .then_with(|| a.node.cmp(&b.node))
    });
    candidates.into_iter().next()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(name: &str, priority: i32, start: &str) -> Arc<PodMeta> {
        Arc::new(PodMeta {
            namespace: "default".into(),
            name: name.into(),
            priority,
            start_time: start.into(),
            ..PodMeta::default()
        })
    }

    fn candidate(node: usize, victims: Vec<Arc<PodMeta>>) -> Candidate {
        Candidate {
            node,
            victims,
            violations: 0,
        }
    }

    fn picked(cs: Vec<Candidate>) -> usize {
        pick(cs).map(|c| c.node).unwrap_or(usize::MAX)
    }

    #[test]
    fn the_node_whose_most_important_victim_is_least_important_wins() {
        let t = "2026-01-01T00:00:00Z";
        assert_eq!(
            picked(vec![
                candidate(0, vec![meta("a", 100, t)]),
                candidate(1, vec![meta("b", 10, t), meta("c", 10, t)]),
            ]),
            1
        );
    }

    #[test]
    fn then_the_lowest_sum_then_the_fewest_victims_then_the_youngest() {
        let t = "2026-01-01T00:00:00Z";
        let later = "2026-01-02T00:00:00Z";
        assert_eq!(
            picked(vec![
                candidate(0, vec![meta("a", 10, t), meta("b", 5, t)]),
                candidate(1, vec![meta("c", 10, t)]),
            ]),
            1
        );
        assert_eq!(
            picked(vec![
                candidate(0, vec![meta("a", 10, t)]),
                candidate(1, vec![meta("b", 10, later)]),
            ]),
            1
        );
        assert_eq!(
            picked(vec![
                candidate(0, vec![meta("a", 10, t)]),
                candidate(1, vec![meta("b", 10, t)]),
            ]),
            0
        );
    }

    #[test]
    fn more_important_means_higher_priority_then_older() {
        let old = meta("old", 5, "2026-01-01T00:00:00Z");
        let young = meta("young", 5, "2026-01-02T00:00:00Z");
        let high = meta("high", 9, "2026-01-03T00:00:00Z");
        let mut v = [young.clone(), old.clone(), high.clone()];
        v.sort_by(|a, b| more_important(a, b));
        let names: Vec<&str> = v.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["high", "old", "young"]);
    }
}
