//! Scoring the feasible nodes: least-allocated resources plus spreading of pods that share
//! a controlling owner, each on kube-scheduler's 0..=100 scale, weighted and summed.

use super::cache::NodeState;
use super::info::PodInfo;

pub const MAX_SCORE: i64 = 100;

/// How much each score counts. Spreading weighs more by default so that replicas land on
/// different nodes even when one node is emptier (kube-scheduler weighs its default
/// topology spreading 2 against 1 for resource scores, for the same reason).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Weights {
    pub least_allocated: i64,
    pub spread: i64,
}

impl Default for Weights {
    fn default() -> Self {
        Weights {
            least_allocated: 1,
            spread: 2,
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

/// Fewer same-owner pods on a node scores higher: `max` is the largest count over the
/// nodes being scored, so the emptiest node gets 100 and the fullest 0.
pub fn spread(count: u32, max: u32) -> i64 {
    if max == 0 {
        MAX_SCORE
    } else {
        MAX_SCORE * i64::from(max - count.min(max)) / i64::from(max)
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
    fn nodes_with_fewer_replicas_of_the_same_owner_score_higher() {
        assert_eq!(spread(0, 2), 100);
        assert_eq!(spread(1, 2), 50);
        assert_eq!(spread(2, 2), 0);
        assert_eq!(spread(0, 0), 100);
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
