//! Scoring the feasible nodes, each score on kube-scheduler's 0..=100 scale, weighted and
//! summed: least-allocated resources, PodTopologySpread (explicit ScheduleAnyway
//! constraints or the system defaults that spread a controller's pods over hosts and
//! zones), preferred NodeAffinity and InterPodAffinity.

use super::cache::NodeState;
use super::info::PodInfo;

pub const MAX_SCORE: i64 = 100;

/// How much each score counts, as in kube-scheduler's default profile: spreading,
/// node affinity and inter-pod affinity weigh 2 against 1 for the resource score.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Weights {
    pub least_allocated: i64,
    pub spread: i64,
    pub node_affinity: i64,
    pub pod_affinity: i64,
}

impl Default for Weights {
    fn default() -> Self {
        Weights {
            least_allocated: 1,
            spread: 2,
            node_affinity: 2,
            pod_affinity: 2,
        }
    }
}

/// Share of cpu and memory left free after placing the pod, averaged (0..=100). Uses the
/// non-zero requests so that pods without requests still spread.
pub fn least_allocated(node: &NodeState, pod: &PodInfo) -> i64 {
    let alloc = node.info.allocatable;
    let used = node.usage.nonzero;
    let want = pod.usage.nonzero;
    let free = |capacity: i64, requested: i64| {
        if capacity <= 0 || requested > capacity {
            0
        } else {
            (capacity - requested) * MAX_SCORE / capacity
        }
    };
    let cpu = free(alloc.milli_cpu, used.milli_cpu + want.milli_cpu);
    let memory = free(alloc.memory, used.memory + want.memory);
    (cpu + memory) / 2
}

/// kube-scheduler's DefaultNormalizeScore (NodeAffinity): the highest raw score becomes
/// 100, the others in proportion; all zero stays zero.
pub fn normalize_by_max(raw: &mut [i64]) {
    let max = raw.iter().copied().max().unwrap_or(0);
    if max <= 0 {
        return;
    }
    for s in raw.iter_mut() {
        *s = MAX_SCORE * *s / max;
    }
}

/// Pick the best-scoring candidate; among equals take the `turn`-th (modulo), so that
/// successive cycles rotate through tied nodes instead of piling onto the first.
pub fn select(scores: &[(usize, i64)], turn: usize) -> Option<usize> {
    let best = scores.iter().map(|&(_, s)| s).max()?;
    let ties = scores.iter().filter(|&&(_, s)| s == best).count();
    scores
        .iter()
        .filter(|&&(_, s)| s == best)
        .nth(turn % ties)
        .map(|&(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::cache::Usage;
    use crate::scheduler::info::{NodeInfo, PodUsage, Resources};

    fn node(used_cpu: i64) -> NodeState {
        NodeState {
            info: NodeInfo {
                allocatable: Resources {
                    milli_cpu: 4000,
                    memory: 8000,
                },
                allowed_pods: 110,
                ..NodeInfo::default()
            },
            usage: Usage {
                nonzero: Resources {
                    milli_cpu: used_cpu,
                    memory: 0,
                },
                ..Usage::default()
            },
        }
    }

    fn pod(cpu: i64, memory: i64) -> PodInfo {
        PodInfo {
            usage: PodUsage {
                nonzero: Resources {
                    milli_cpu: cpu,
                    memory,
                },
                ..PodUsage::default()
            },
            ..PodInfo::default()
        }
    }

    #[test]
    fn the_emptier_node_scores_higher() {
        let p = pod(1000, 4000);
        // cpu: (4000-1000)/4000 = 75, memory: 50 → 62
        assert_eq!(least_allocated(&node(0), &p), 62);
        assert_eq!(least_allocated(&node(2000), &p), 37);
        assert_eq!(least_allocated(&node(4000), &p), 25);
    }

    #[test]
    fn preferred_node_affinity_scores_in_proportion_to_the_best_node() {
        let mut raw = [0, 20, 80, 40];
        normalize_by_max(&mut raw);
        assert_eq!(raw, [0, 25, 100, 50]);
        let mut none = [0, 0];
        normalize_by_max(&mut none);
        assert_eq!(none, [0, 0]);
    }

    #[test]
    fn ties_are_broken_round_robin() {
        let scores = [(0, 10), (1, 30), (2, 30), (3, 5)];
        assert_eq!(select(&scores, 0), Some(1));
        assert_eq!(select(&scores, 1), Some(2));
        assert_eq!(select(&scores, 2), Some(1));
        assert_eq!(select(&[], 0), None);
    }
}
