//! Filters: can this pod run on this node? Run in kube-scheduler's order (NodeUnschedulable,
//! TaintToleration, NodeAffinity, NodePorts, NodeResourcesFit, PodTopologySpread,
//! InterPodAffinity) and stop at the first that fails, so each node contributes the
//! reasons of one filter to the "0/N nodes are available" message, as in Kubernetes.

use std::collections::HashMap;
use std::fmt;

use super::affinity::{AffinityFailure, AffinityState};
use super::cache::NodeState;
use super::info::{PodInfo, Resources, Taint, TaintEffect, TAINT_UNSCHEDULABLE};
use super::spread::{SpreadFailure, SpreadState};
use super::volumes::PodVolumes;

/// What the filters of one scheduling cycle share: the per-pod counts built once before
/// the nodes are walked.
#[derive(Debug, Default, Clone)]
pub struct Cycle {
    pub spread: SpreadState,
    pub affinity: AffinityState,
    /// Resources and pod slots held per node for pods nominated there by preemption
    /// with at least this pod's priority (the room they made is theirs).
    pub reserved: HashMap<String, (Resources, i64)>,
    /// What the pod's claims and their volumes ask of a node (VolumeBinding).
    pub volumes: PodVolumes,
}

/// Why a node was rejected; the text is kube-scheduler's, word for word, because users
/// (and their tooling) grep for it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Reason {
    Unschedulable,
    UntoleratedTaint {
        key: String,
        value: String,
    },
    NodeSelectorMismatch,
    HostPortsTaken,
    TooManyPods,
    InsufficientCpu,
    InsufficientMemory,
    SpreadMissingLabel,
    SpreadMismatch,
    PodAffinityMismatch,
    PodAntiAffinityMismatch,
    ExistingAntiAffinity,
    /// A bound claim's volume cannot be reached from the node.
    VolumeNodeAffinityConflict,
    /// A claim waiting for its first consumer has no volume and no provisioner there.
    VolumeBindConflict,
    /// Preemption's reasons (after "preemption: ").
    NoPreemptionVictims,
    PreemptionNotHelpful,
}

impl Reason {
    /// Whether evicting lower-priority pods may cure this: kube-scheduler's
    /// `Unschedulable` reasons, as opposed to `UnschedulableAndUnresolvable` ones (a
    /// cordon, a taint, node affinity, pod affinity, a missing topology label).
    pub fn preemption_may_help(&self) -> bool {
        matches!(
            self,
            Reason::TooManyPods
                | Reason::InsufficientCpu
                | Reason::InsufficientMemory
                | Reason::HostPortsTaken
                | Reason::SpreadMismatch
                | Reason::PodAntiAffinityMismatch
                | Reason::ExistingAntiAffinity
        )
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Unschedulable => f.write_str("node(s) were unschedulable"),
            Reason::UntoleratedTaint { key, value } => {
                write!(f, "node(s) had untolerated taint {{{key}: {value}}}")
            }
            Reason::NodeSelectorMismatch => {
                f.write_str("node(s) didn't match Pod's node affinity/selector")
            }
            Reason::HostPortsTaken => {
                f.write_str("node(s) didn't have free ports for the requested pod ports")
            }
            Reason::TooManyPods => f.write_str("Too many pods"),
            Reason::InsufficientCpu => f.write_str("Insufficient cpu"),
            Reason::InsufficientMemory => f.write_str("Insufficient memory"),
            Reason::SpreadMissingLabel => f.write_str(
                "node(s) didn't match pod topology spread constraints (missing required label)",
            ),
            Reason::SpreadMismatch => {
                f.write_str("node(s) didn't match pod topology spread constraints")
            }
            Reason::PodAffinityMismatch => f.write_str("node(s) didn't match pod affinity rules"),
            Reason::VolumeNodeAffinityConflict => {
                f.write_str("node(s) had volume node affinity conflict")
            }
            Reason::VolumeBindConflict => {
                f.write_str("node(s) didn't find available persistent volumes to bind")
            }
            Reason::PodAntiAffinityMismatch => {
                f.write_str("node(s) didn't match pod anti-affinity rules")
            }
            Reason::ExistingAntiAffinity => {
                f.write_str("node(s) didn't satisfy existing pods anti-affinity rules")
            }
            Reason::NoPreemptionVictims => {
                f.write_str("No preemption victims found for incoming pod")
            }
            Reason::PreemptionNotHelpful => f.write_str("Preemption is not helpful for scheduling"),
        }
    }
}

/// Check one node; on failure push the failing filter's reasons to `reasons` and return
/// false. Allocation-free when the node fits, since that is the common case.
pub fn fits(node: &NodeState, pod: &PodInfo, cycle: &Cycle, reasons: &mut Vec<Reason>) -> bool {
    let info = &node.info;
    // NodeUnschedulable (kubectl cordon), which a pod may tolerate like a taint.
    if info.unschedulable {
        let cordon = Taint {
            key: TAINT_UNSCHEDULABLE.to_string(),
            value: String::new(),
            effect: TaintEffect::NoSchedule,
        };
        if !pod.tolerates(&cordon) {
            reasons.push(Reason::Unschedulable);
            return false;
        }
    }
    // TaintToleration: the first untolerated NoSchedule/NoExecute taint is reported.
    if let Some(t) = info.taints.iter().find(|t| !pod.tolerates(t)) {
        reasons.push(Reason::UntoleratedTaint {
            key: t.key.clone(),
            value: t.value.clone(),
        });
        return false;
    }
    // NodeAffinity.
    if !pod.matches_node_selector(info) {
        reasons.push(Reason::NodeSelectorMismatch);
        return false;
    }
    // NodePorts.
    let used = &node.usage.ports;
    if !used.is_empty()
        && pod
            .usage
            .host_ports
            .iter()
            .any(|want| used.keys().any(|have| have.conflicts(want)))
    {
        reasons.push(Reason::HostPortsTaken);
        return false;
    }
    // NodeResourcesFit: every shortage is reported, not only the first.
    let before = reasons.len();
    let (held, held_pods) = if cycle.reserved.is_empty() {
        (Resources::default(), 0)
    } else {
        cycle.reserved.get(&info.name).copied().unwrap_or_default()
    };
    if node.usage.pods + held_pods + 1 > info.allowed_pods {
        reasons.push(Reason::TooManyPods);
    }
    let want = pod.usage.requests;
    if !want.is_zero() {
        let mut used = node.usage.requested;
        used.add(held);
        if want.milli_cpu > 0 && used.milli_cpu + want.milli_cpu > info.allocatable.milli_cpu {
            reasons.push(Reason::InsufficientCpu);
        }
        if want.memory > 0 && used.memory + want.memory > info.allocatable.memory {
            reasons.push(Reason::InsufficientMemory);
        }
    }
    if reasons.len() != before {
        return false;
    }
    // VolumeBinding.
    if !cycle.volumes.is_empty() {
        if let Err(reason) = cycle.volumes.check(info) {
            reasons.push(reason);
            return false;
        }
    }
    if cycle.spread.is_active() {
        match cycle.spread.check(&pod.spread, info) {
            Ok(()) => {}
            Err(SpreadFailure::MissingLabel) => {
                reasons.push(Reason::SpreadMissingLabel);
                return false;
            }
            Err(SpreadFailure::Skew) => {
                reasons.push(Reason::SpreadMismatch);
                return false;
            }
        }
    }
    if cycle.affinity.is_active() {
        if let Err(failure) = cycle.affinity.check(info) {
            reasons.push(match failure {
                AffinityFailure::Affinity => Reason::PodAffinityMismatch,
                AffinityFailure::AntiAffinity => Reason::PodAntiAffinityMismatch,
                AffinityFailure::ExistingAntiAffinity => Reason::ExistingAntiAffinity,
            });
            return false;
        }
    }
    true
}

/// Why a pod fits no node: a count of each reason over all nodes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FitError {
    pub nodes: usize,
    pub reasons: HashMap<Reason, usize>,
    /// What preemption said (kube-scheduler's PostFilter message), appended after the
    /// filters' reasons.
    pub post_filter: Option<String>,
    /// Why a PreFilter refused the pod before any node was looked at (it then stands
    /// in place of the per-node reasons).
    pub pre_filter: Option<String>,
}

impl FitError {
    pub fn new(nodes: usize) -> Self {
        FitError {
            nodes,
            reasons: HashMap::new(),
            post_filter: None,
            pre_filter: None,
        }
    }

    pub fn count(&mut self, reasons: impl IntoIterator<Item = Reason>) {
        for r in reasons {
            *self.reasons.entry(r).or_default() += 1;
        }
    }
}

impl fmt::Display for FitError {
    /// `0/3 nodes are available: 1 node(s) were unschedulable, 2 Insufficient cpu.` —
    /// entries are "<count> <reason>" sorted as strings, as kube-scheduler sorts them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.nodes == 0 {
            return f.write_str("no nodes available to schedule pods");
        }
        let mut entries: Vec<String> = self
            .reasons
            .iter()
            .map(|(reason, n)| format!("{n} {reason}"))
            .collect();
        entries.sort();
        write!(f, "0/{} nodes are available:", self.nodes)?;
        if let Some(pre) = &self.pre_filter {
            write!(f, " {pre}.")?;
        } else if !entries.is_empty() {
            write!(f, " {}.", entries.join(", "))?;
        }
        if let Some(post) = &self.post_filter {
            write!(f, " {post}.")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::cache::{SchedulerCache, Usage};
    use crate::scheduler::info::{NodeInfo, PodUsage};
    use serde_json::{json, Value};

    fn node(extra: Value) -> NodeState {
        let mut obj = json!({"metadata": {"name": "n1", "labels": {"disk": "ssd"}},
            "status": {"allocatable": {"cpu": "2", "memory": "4Gi", "pods": "3"},
                       "conditions": [{"type": "Ready", "status": "True"}]}});
        merge(&mut obj, extra);
        NodeState {
            info: NodeInfo::from_node(&obj),
            usage: Usage::default(),
        }
    }

    fn merge(target: &mut Value, extra: Value) {
        if let (Some(t), Value::Object(e)) = (target.as_object_mut(), extra) {
            for (k, v) in e {
                match t.get_mut(&k) {
                    Some(existing) if existing.is_object() && v.is_object() => merge(existing, v),
                    _ => {
                        t.insert(k, v);
                    }
                }
            }
        }
    }

    fn pod(spec: Value) -> PodInfo {
        let mut obj = json!({"metadata": {"name": "p", "namespace": "default"},
            "spec": {"containers": [{"name": "c", "image": "i"}]}});
        merge(&mut obj, json!({ "spec": spec }));
        PodInfo::from_pod(&obj)
    }

    fn reasons_for(node: &NodeState, pod: &PodInfo) -> Vec<Reason> {
        let mut out = Vec::new();
        fits(node, pod, &Cycle::default(), &mut out);
        out
    }

    #[test]
    fn a_cordoned_node_takes_no_pods_unless_they_tolerate_the_cordon() {
        let n = node(json!({"spec": {"unschedulable": true}}));
        assert_eq!(
            reasons_for(&n, &pod(json!({}))),
            vec![Reason::Unschedulable]
        );
        let tolerant =
            pod(json!({"tolerations": [{"key": TAINT_UNSCHEDULABLE, "operator": "Exists"}]}));
        assert!(reasons_for(&n, &tolerant).is_empty());
    }

    #[test]
    fn a_tainted_node_only_takes_tolerating_pods() {
        let n = node(json!({"spec": {"taints": [
            {"key": "dedicated", "value": "gpu", "effect": "NoSchedule"},
            {"key": "soft", "value": "x", "effect": "PreferNoSchedule"}]}}));
        assert_eq!(
            reasons_for(&n, &pod(json!({}))),
            vec![Reason::UntoleratedTaint {
                key: "dedicated".into(),
                value: "gpu".into()
            }]
        );
        let tolerant = pod(json!({"tolerations": [
            {"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}]}));
        assert!(reasons_for(&n, &tolerant).is_empty());
    }

    #[test]
    fn a_not_ready_node_is_rejected_with_the_not_ready_taint() {
        let n = node(json!({"status": {"conditions": [{"type": "Ready", "status": "False"}]}}));
        assert_eq!(
            reasons_for(&n, &pod(json!({})))
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            vec!["node(s) had untolerated taint {node.kubernetes.io/not-ready: }"]
        );
    }

    #[test]
    fn node_selector_must_match_every_label() {
        let n = node(json!({}));
        assert!(reasons_for(&n, &pod(json!({"nodeSelector": {"disk": "ssd"}}))).is_empty());
        assert_eq!(
            reasons_for(
                &n,
                &pod(json!({"nodeSelector": {"disk": "ssd", "zone": "a"}}))
            ),
            vec![Reason::NodeSelectorMismatch]
        );
    }

    #[test]
    fn every_resource_shortage_is_reported() {
        let mut n = node(json!({}));
        n.usage.pods = 3;
        let big = pod(json!({"containers": [{"name": "c", "image": "i",
            "resources": {"requests": {"cpu": "3", "memory": "5Gi"}}}]}));
        assert_eq!(
            reasons_for(&n, &big),
            vec![
                Reason::TooManyPods,
                Reason::InsufficientCpu,
                Reason::InsufficientMemory
            ]
        );
    }

    #[test]
    fn resources_already_requested_on_the_node_count_against_it() {
        let mut cache = SchedulerCache::default();
        cache.upsert_node(node(json!({})).info);
        let one_cpu = PodUsage {
            requests: crate::scheduler::info::Resources {
                milli_cpu: 1500,
                memory: 0,
            },
            ..PodUsage::default()
        };
        cache.assume("default/a", "n1", one_cpu);
        let p = pod(
            json!({"containers": [{"name": "c", "image": "i", "resources": {"requests": {"cpu": "600m"}}}]}),
        );
        let state = cache.node("n1").expect("node");
        assert_eq!(reasons_for(state, &p), vec![Reason::InsufficientCpu]);
    }

    #[test]
    fn a_taken_host_port_rejects_the_node() {
        let mut cache = SchedulerCache::default();
        cache.upsert_node(node(json!({})).info);
        let web = pod(
            json!({"containers": [{"name": "c", "image": "i", "ports": [{"containerPort": 80, "hostPort": 8080}]}]}),
        );
        cache.assume("default/a", "n1", web.usage.clone());
        let state = cache.node("n1").expect("node");
        assert_eq!(reasons_for(state, &web), vec![Reason::HostPortsTaken]);
        let udp = pod(
            json!({"containers": [{"name": "c", "image": "i", "ports": [{"containerPort": 80, "hostPort": 8080, "protocol": "UDP"}]}]}),
        );
        assert!(reasons_for(state, &udp).is_empty());
    }

    #[test]
    fn the_message_counts_reasons_and_sorts_them_like_kube_scheduler() {
        let mut e = FitError::new(3);
        e.count([Reason::InsufficientCpu]);
        e.count([Reason::InsufficientCpu]);
        e.count([Reason::NodeSelectorMismatch]);
        assert_eq!(
            e.to_string(),
            "0/3 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, 2 Insufficient cpu."
        );
        let mut e = FitError::new(5);
        e.count([Reason::Unschedulable]);
        e.count([Reason::UntoleratedTaint {
            key: "dedicated".into(),
            value: "gpu".into(),
        }]);
        e.count([Reason::HostPortsTaken]);
        e.count([Reason::TooManyPods, Reason::InsufficientMemory]);
        e.count([Reason::InsufficientMemory]);
        assert_eq!(
            e.to_string(),
            "0/5 nodes are available: 1 Too many pods, 1 node(s) didn't have free ports for the requested pod ports, \
             1 node(s) had untolerated taint {dedicated: gpu}, 1 node(s) were unschedulable, 2 Insufficient memory."
        );
    }

    #[test]
    fn no_nodes_at_all_reads_like_kubernetes() {
        assert_eq!(
            FitError::new(0).to_string(),
            "no nodes available to schedule pods"
        );
    }
}
