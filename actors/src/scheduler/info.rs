//! What the scheduler needs to know about a pod and a node, parsed once from the JSON
//! object into plain fields so the per-node filter loop does no JSON walking and no
//! quantity parsing (that loop runs hundreds of times per pod on a big cluster).

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;

use super::affinity::PodAffinityTerms;
use super::spread::Constraint;

use crate::api::validation::quantity_value;
use crate::controllers::pods;

/// The taint the node lifecycle controller puts on a node whose Ready condition is False.
pub const TAINT_NOT_READY: &str = "node.kubernetes.io/not-ready";
/// ... and on one whose Ready condition is Unknown (it stopped heartbeating).
pub const TAINT_UNREACHABLE: &str = "node.kubernetes.io/unreachable";
/// The taint `kubectl cordon` implies; a pod tolerating it may still land on the node.
pub const TAINT_UNSCHEDULABLE: &str = "node.kubernetes.io/unschedulable";

/// Requests a pod counts for when it names none, so that least-allocated scoring still
/// spreads best-effort pods (kube-scheduler uses the same 100m / 200Mi defaults). Only
/// scoring uses them; the fit filter counts what the pod really requests.
const DEFAULT_MILLI_CPU: i64 = 100;
const DEFAULT_MEMORY: i64 = 200 * 1024 * 1024;

/// CPU in millicores and memory in bytes: integers, so sums never drift.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Resources {
    pub milli_cpu: i64,
    pub memory: i64,
}

impl Resources {
    pub fn add(&mut self, other: Resources) {
        self.milli_cpu += other.milli_cpu;
        self.memory += other.memory;
    }

    pub fn sub(&mut self, other: Resources) {
        self.milli_cpu -= other.milli_cpu;
        self.memory -= other.memory;
    }

    fn max(self, other: Resources) -> Resources {
        Resources {
            milli_cpu: self.milli_cpu.max(other.milli_cpu),
            memory: self.memory.max(other.memory),
        }
    }

    pub fn is_zero(&self) -> bool {
        self.milli_cpu == 0 && self.memory == 0
    }

    /// `requests`/`allocatable`-style map (`{"cpu": "500m", "memory": "1Gi"}`); bad or
    /// missing quantities count as zero (validation rejects them before they get here).
    pub fn from_map(map: Option<&Value>) -> Resources {
        let get = |name: &str| map.and_then(|m| m.get(name)).and_then(quantity_value);
        Resources {
            milli_cpu: get("cpu").map_or(0, |c| to_int(c * 1000.0)),
            memory: get("memory").map_or(0, to_int),
        }
    }
}

/// Round a parsed quantity up, as Kubernetes' `MilliValue`/`Value` do.
fn to_int(v: f64) -> i64 {
    if v.is_finite() {
        v.ceil().clamp(i64::MIN as f64, i64::MAX as f64) as i64
    } else {
        0
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TaintEffect {
    NoSchedule,
    PreferNoSchedule,
    NoExecute,
}

impl TaintEffect {
    fn parse(s: &str) -> Option<TaintEffect> {
        match s {
            "NoSchedule" => Some(TaintEffect::NoSchedule),
            "PreferNoSchedule" => Some(TaintEffect::PreferNoSchedule),
            "NoExecute" => Some(TaintEffect::NoExecute),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Taint {
    pub key: String,
    pub value: String,
    pub effect: TaintEffect,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TolerationOp {
    Equal,
    Exists,
    /// An operator this version does not know: tolerates nothing.
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Toleration {
    key: String,
    op: TolerationOp,
    value: String,
    /// `None` tolerates every effect.
    effect: Option<TaintEffect>,
}

impl Toleration {
    fn parse(v: &Value) -> Toleration {
        let s = |f: &str| v.get(f).and_then(Value::as_str).unwrap_or_default();
        Toleration {
            key: s("key").to_string(),
            op: match s("operator") {
                "" | "Equal" => TolerationOp::Equal,
                "Exists" => TolerationOp::Exists,
                _ => TolerationOp::Unknown,
            },
            value: s("value").to_string(),
            // An effect we do not know matches no taint (rather than all of them).
            effect: match s("effect") {
                "" => None,
                other => Some(TaintEffect::parse(other).unwrap_or(TaintEffect::PreferNoSchedule)),
            },
        }
    }

    /// Kubernetes' `ToleratesTaint`: an empty key with `Exists` tolerates every taint.
    pub fn tolerates(&self, taint: &Taint) -> bool {
        if self.effect.is_some_and(|e| e != taint.effect) {
            return false;
        }
        if !self.key.is_empty() && self.key != taint.key {
            return false;
        }
        match self.op {
            TolerationOp::Exists => true,
            TolerationOp::Equal => self.value == taint.value,
            TolerationOp::Unknown => false,
        }
    }
}

/// A host port a container asks for; the IP `0.0.0.0` (or empty) means every address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HostPort {
    pub protocol: String,
    pub ip: String,
    pub port: i64,
}

impl HostPort {
    /// Two pods cannot both have these (same port and protocol, overlapping addresses).
    pub fn conflicts(&self, other: &HostPort) -> bool {
        let wildcard = |ip: &str| ip.is_empty() || ip == "0.0.0.0";
        self.port == other.port
            && self.protocol == other.protocol
            && (self.ip == other.ip || wildcard(&self.ip) || wildcard(&other.ip))
    }
}

/// One `matchExpressions` requirement of a required node-affinity term.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRequirement {
    key: String,
    op: String,
    values: Vec<String>,
    /// From `matchFields`: compares against the node's name (the only field supported).
    on_field: bool,
}

impl NodeRequirement {
    fn parse(v: &Value, on_field: bool) -> NodeRequirement {
        NodeRequirement {
            key: v
                .get("key")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            op: v
                .get("operator")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            values: v
                .get("values")
                .and_then(Value::as_array)
                .map(|vs| {
                    vs.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default(),
            on_field,
        }
    }

    fn matches(&self, node: &NodeInfo) -> bool {
        let actual = if self.on_field {
            (self.key == "metadata.name").then_some(node.name.as_str())
        } else {
            node.labels.get(&self.key).map(String::as_str)
        };
        let number = |s: &str| s.parse::<i64>().ok();
        match (self.op.as_str(), actual) {
            ("In", Some(v)) => self.values.iter().any(|w| w == v),
            ("In", None) => false,
            ("NotIn", Some(v)) => !self.values.iter().any(|w| w == v),
            ("NotIn", None) => true,
            ("Exists", a) => a.is_some(),
            ("DoesNotExist", a) => a.is_none(),
            ("Gt", Some(v)) => {
                matches!((number(v), self.values.first().and_then(|w| number(w))), (Some(a), Some(b)) if a > b)
            }
            ("Lt", Some(v)) => {
                matches!((number(v), self.values.first().and_then(|w| number(w))), (Some(a), Some(b)) if a < b)
            }
            _ => false,
        }
    }
}

/// Who a pod is, as the inter-pod rules and preemption ask: kept per placed pod.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PodMeta {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub labels: BTreeMap<String, String>,
    /// `spec.priority` (set by the Priority admission; 0 when absent).
    pub priority: i32,
    /// `status.startTime`, else `metadata.creationTimestamp` (RFC 3339, so ordered as
    /// strings): preemption spares older pods of equal priority.
    pub start_time: String,
    /// Its pod (anti-)affinity terms, for the symmetry rules.
    pub affinity: Option<Arc<PodAffinityTerms>>,
    /// Being deleted (it still holds its node's resources until it is gone).
    pub terminating: bool,
}

impl PodMeta {
    pub fn from_pod(pod: &Value) -> PodMeta {
        let s = |p: &str| pod.pointer(p).and_then(Value::as_str).unwrap_or_default();
        let mut meta = PodMeta {
            namespace: s("/metadata/namespace").to_string(),
            name: s("/metadata/name").to_string(),
            uid: s("/metadata/uid").to_string(),
            labels: crate::api::selector::object_labels(pod),
            priority: pod
                .pointer("/spec/priority")
                .and_then(Value::as_i64)
                .and_then(|p| i32::try_from(p).ok())
                .unwrap_or(0),
            start_time: match s("/status/startTime") {
                "" => s("/metadata/creationTimestamp").to_string(),
                t => t.to_string(),
            },
            affinity: None,
            terminating: pod
                .pointer("/metadata/deletionTimestamp")
                .is_some_and(|t| !t.is_null()),
        };
        let affinity = pod
            .pointer("/spec/affinity")
            .filter(|a| a.get("podAffinity").is_some() || a.get("podAntiAffinity").is_some());
        meta.affinity = PodAffinityTerms::parse(affinity, &meta).map(Arc::new);
        meta
    }

    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// What a pod consumes on the node it is placed on: kept per placed pod by the cache.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PodUsage {
    /// What the fit filter counts.
    pub requests: Resources,
    /// What scoring counts (requests with defaults for containers that name none).
    pub nonzero: Resources,
    pub host_ports: Vec<HostPort>,
    /// The uid of the controlling owner (e.g. the replication controller).
    pub owner: Option<String>,
    pub meta: Arc<PodMeta>,
}

/// Everything the filters and scores ask about a pod being scheduled.
#[derive(Debug, Clone, Default)]
pub struct PodInfo {
    pub usage: PodUsage,
    pub node_selector: Vec<(String, String)>,
    /// Required node-affinity terms (ORed); `None` when the pod has none.
    pub affinity_terms: Option<Vec<Vec<NodeRequirement>>>,
    pub tolerations: Vec<Toleration>,
    /// Preferred node-affinity terms with their weights.
    pub preferred_node_terms: Vec<(i64, Vec<NodeRequirement>)>,
    /// Explicit topology spread constraints, or the system defaults.
    pub spread: Vec<Constraint>,
    /// Whether `spread` holds the system defaults.
    pub spread_defaulted: bool,
    /// `preemptionPolicy: Never`.
    pub never_preempts: bool,
    /// `status.nominatedNodeName`: where an earlier preemption made room.
    pub nominated_node: Option<String>,
}

impl PodInfo {
    pub fn from_pod(pod: &Value) -> PodInfo {
        let spec = pod.get("spec");
        let node_selector = spec
            .and_then(|s| s.get("nodeSelector"))
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                    .collect()
            })
            .unwrap_or_default();
        let affinity_terms = spec
            .and_then(|s| {
                s.pointer("/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms")
            })
            .and_then(Value::as_array)
            .map(|terms| terms.iter().map(parse_term).collect());
        let tolerations = spec
            .and_then(|s| s.get("tolerations"))
            .and_then(Value::as_array)
            .map(|ts| ts.iter().map(Toleration::parse).collect())
            .unwrap_or_default();
        let preferred_node_terms = spec
            .and_then(|s| {
                s.pointer("/affinity/nodeAffinity/preferredDuringSchedulingIgnoredDuringExecution")
            })
            .and_then(Value::as_array)
            .map(|terms| {
                terms
                    .iter()
                    .map(|t| {
                        let weight = t.get("weight").and_then(Value::as_i64).unwrap_or(0);
                        let term = t.get("preference").map(parse_term).unwrap_or_default();
                        (weight, term)
                    })
                    .collect()
            })
            .unwrap_or_default();
        let usage = PodUsage::from_pod(pod);
        let mut spread = Constraint::parse_all(spec, &usage.meta);
        let spread_defaulted = spread.is_empty();
        if spread_defaulted {
            spread = Constraint::system_defaults(usage.owner.as_deref());
        }
        PodInfo {
            never_preempts: spec
                .and_then(|s| s.get("preemptionPolicy"))
                .and_then(Value::as_str)
                == Some("Never"),
            nominated_node: pod
                .pointer("/status/nominatedNodeName")
                .and_then(Value::as_str)
                .filter(|n| !n.is_empty())
                .map(str::to_string),
            usage,
            node_selector,
            affinity_terms,
            tolerations,
            preferred_node_terms,
            spread,
            spread_defaulted,
        }
    }

    pub fn tolerates(&self, taint: &Taint) -> bool {
        self.tolerations.iter().any(|t| t.tolerates(taint))
    }

    /// `nodeSelector` and required node affinity, as the NodeAffinity filter checks them.
    pub fn matches_node_selector(&self, node: &NodeInfo) -> bool {
        let selector_ok = self
            .node_selector
            .iter()
            .all(|(k, v)| node.labels.get(k) == Some(v));
        selector_ok
            && self.affinity_terms.as_ref().is_none_or(|terms| {
                // Terms are ORed, a term's requirements ANDed; an empty term matches nothing.
                terms
                    .iter()
                    .any(|term| !term.is_empty() && term.iter().all(|r| r.matches(node)))
            })
    }
}

impl PodInfo {
    /// The pod's priority.
    pub fn priority(&self) -> i32 {
        self.usage.meta.priority
    }

    /// NodeAffinity's score before normalizing: the weights of the preferred terms the
    /// node matches (an empty term matches nothing, as in Kubernetes).
    pub fn preferred_node_weight(&self, node: &NodeInfo) -> i64 {
        self.preferred_node_terms
            .iter()
            .filter(|(_, term)| !term.is_empty() && term.iter().all(|r| r.matches(node)))
            .map(|(w, _)| *w)
            .sum()
    }
}

/// The terms of a `NodeSelector` (`nodeSelectorTerms`), as the node-affinity filter reads
/// them: ORed terms of ANDed requirements.
pub fn node_selector_terms(selector: &Value) -> Vec<Vec<NodeRequirement>> {
    selector
        .get("nodeSelectorTerms")
        .and_then(Value::as_array)
        .map(|terms| terms.iter().map(parse_term).collect())
        .unwrap_or_default()
}

/// Whether a node matches ORed terms (an empty term matches nothing, as in Kubernetes).
pub fn terms_match(terms: &[Vec<NodeRequirement>], node: &NodeInfo) -> bool {
    terms
        .iter()
        .any(|term| !term.is_empty() && term.iter().all(|r| r.matches(node)))
}

fn parse_term(term: &Value) -> Vec<NodeRequirement> {
    let list = |field: &str, on_field: bool| {
        term.get(field)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(move |r| NodeRequirement::parse(r, on_field))
    };
    list("matchExpressions", false)
        .chain(list("matchFields", true))
        .collect()
}

impl PodUsage {
    pub fn from_pod(pod: &Value) -> PodUsage {
        let spec = pod.get("spec");
        let containers = |field: &str| {
            spec.and_then(|s| s.get(field))
                .and_then(Value::as_array)
                .map(Vec::as_slice)
                .unwrap_or_default()
        };
        let requests_of = |c: &Value| Resources::from_map(c.pointer("/resources/requests"));
        let (mut requests, mut nonzero) = (Resources::default(), Resources::default());
        for c in containers("containers") {
            let r = requests_of(c);
            requests.add(r);
            nonzero.add(with_defaults(r));
        }
        // Init containers run one at a time before the app containers: the pod needs the
        // larger of their biggest request and the app containers' sum.
        for c in containers("initContainers") {
            let r = requests_of(c);
            requests = requests.max(r);
            nonzero = nonzero.max(with_defaults(r));
        }
        let overhead = Resources::from_map(spec.and_then(|s| s.get("overhead")));
        requests.add(overhead);
        nonzero.add(overhead);
        let host_ports = containers("containers")
            .iter()
            .chain(containers("initContainers"))
            .filter_map(|c| c.get("ports").and_then(Value::as_array))
            .flatten()
            .filter_map(|p| {
                let port = p
                    .get("hostPort")
                    .and_then(Value::as_i64)
                    .filter(|p| *p > 0)?;
                Some(HostPort {
                    protocol: p
                        .get("protocol")
                        .and_then(Value::as_str)
                        .unwrap_or("TCP")
                        .to_string(),
                    ip: p
                        .get("hostIP")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string(),
                    port,
                })
            })
            .collect();
        let owner = pods::controller_ref(pod).map(|r| {
            match r
                .get("uid")
                .and_then(Value::as_str)
                .filter(|u| !u.is_empty())
            {
                Some(uid) => uid.to_string(),
                None => format!(
                    "{}/{}",
                    r.get("kind").and_then(Value::as_str).unwrap_or_default(),
                    r.get("name").and_then(Value::as_str).unwrap_or_default()
                ),
            }
        });
        PodUsage {
            requests,
            nonzero,
            host_ports,
            owner,
            meta: Arc::new(PodMeta::from_pod(pod)),
        }
    }
}

fn with_defaults(r: Resources) -> Resources {
    Resources {
        milli_cpu: if r.milli_cpu == 0 {
            DEFAULT_MILLI_CPU
        } else {
            r.milli_cpu
        },
        memory: if r.memory == 0 {
            DEFAULT_MEMORY
        } else {
            r.memory
        },
    }
}

/// The scheduling-relevant part of a Node object. Equal infos mean a node update that
/// cannot make an unschedulable pod fit (a heartbeat), so it does not wake the queue.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeInfo {
    pub name: String,
    pub allocatable: Resources,
    pub allowed_pods: i64,
    pub labels: BTreeMap<String, String>,
    /// NoSchedule and NoExecute taints (the only ones filtering looks at), including the
    /// not-ready/unreachable taint implied by the Ready condition.
    pub taints: Vec<Taint>,
    pub unschedulable: bool,
}

impl NodeInfo {
    pub fn from_node(node: &Value) -> NodeInfo {
        let status = node.get("status");
        // Allocatable falls back to capacity, as the kubelet reports both.
        let resources = status
            .and_then(|s| s.get("allocatable"))
            .filter(|a| a.as_object().is_some_and(|m| !m.is_empty()))
            .or_else(|| status.and_then(|s| s.get("capacity")));
        let allowed_pods = resources
            .and_then(|r| r.get("pods"))
            .and_then(quantity_value)
            .map_or(0, to_int);
        let labels = node
            .pointer("/metadata/labels")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                    .collect()
            })
            .unwrap_or_default();
        let mut taints: Vec<Taint> = node
            .pointer("/spec/taints")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|t| {
                let effect = TaintEffect::parse(t.get("effect").and_then(Value::as_str)?)?;
                (effect != TaintEffect::PreferNoSchedule).then(|| Taint {
                    key: t
                        .get("key")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string(),
                    value: t
                        .get("value")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string(),
                    effect,
                })
            })
            .collect();
        // A node that is not Ready takes no pods. Kubernetes expresses that as a taint
        // (added by the node lifecycle controller), so pods that tolerate it still go
        // there and the message names the taint; imply it here in case the controller
        // has not added it yet.
        let ready = pods::condition(node, "Ready")
            .and_then(|c| c.get("status"))
            .and_then(Value::as_str);
        let implied = match ready {
            Some("True") => None,
            Some("Unknown") => Some(TAINT_UNREACHABLE),
            _ => Some(TAINT_NOT_READY),
        };
        if let Some(key) = implied {
            if !taints
                .iter()
                .any(|t| t.key == key && t.effect == TaintEffect::NoSchedule)
            {
                taints.push(Taint {
                    key: key.to_string(),
                    value: String::new(),
                    effect: TaintEffect::NoSchedule,
                });
            }
        }
        NodeInfo {
            name: node
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            allocatable: Resources::from_map(resources),
            allowed_pods,
            labels,
            taints,
            unschedulable: node.pointer("/spec/unschedulable").and_then(Value::as_bool)
                == Some(true),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pod_requests_sum_containers_and_take_the_largest_init_container() {
        let pod = json!({"spec": {
            "containers": [
                {"resources": {"requests": {"cpu": "250m", "memory": "64Mi"}}},
                {"resources": {"requests": {"cpu": "0.5"}}}
            ],
            "initContainers": [{"resources": {"requests": {"cpu": "2", "memory": "1Mi"}}}]
        }});
        let usage = PodUsage::from_pod(&pod);
        assert_eq!(
            usage.requests,
            Resources {
                milli_cpu: 2000,
                memory: 64 * 1024 * 1024
            }
        );
        // Scoring gives the container without a memory request the 200Mi default.
        assert_eq!(usage.nonzero.memory, 264 * 1024 * 1024);
    }

    #[test]
    fn bad_quantities_count_as_zero_instead_of_failing() {
        let pod = json!({"spec": {"containers": [{"resources": {"requests": {"cpu": "lots", "memory": 5}}}]}});
        let usage = PodUsage::from_pod(&pod);
        assert_eq!(
            usage.requests,
            Resources {
                milli_cpu: 0,
                memory: 5
            }
        );
    }

    #[test]
    fn host_ports_default_to_tcp_and_ignore_container_only_ports() {
        let pod = json!({"spec": {"containers": [{"ports": [
            {"containerPort": 80, "hostPort": 8080},
            {"containerPort": 53, "hostPort": 53, "protocol": "UDP", "hostIP": "10.0.0.1"},
            {"containerPort": 9000}
        ]}]}});
        let ports = PodUsage::from_pod(&pod).host_ports;
        assert_eq!(ports.len(), 2);
        assert_eq!(
            ports[0],
            HostPort {
                protocol: "TCP".into(),
                ip: String::new(),
                port: 8080
            }
        );
    }

    #[test]
    fn ports_conflict_on_the_same_protocol_and_overlapping_address() {
        let p = |proto: &str, ip: &str| HostPort {
            protocol: proto.into(),
            ip: ip.into(),
            port: 80,
        };
        assert!(p("TCP", "").conflicts(&p("TCP", "10.0.0.1")));
        assert!(p("TCP", "10.0.0.1").conflicts(&p("TCP", "10.0.0.1")));
        assert!(!p("TCP", "10.0.0.1").conflicts(&p("TCP", "10.0.0.2")));
        assert!(!p("TCP", "").conflicts(&p("UDP", "")));
    }

    #[test]
    fn empty_key_with_exists_tolerates_every_taint() {
        let all = Toleration::parse(&json!({"operator": "Exists"}));
        let taint = Taint {
            key: "k".into(),
            value: "v".into(),
            effect: TaintEffect::NoExecute,
        };
        assert!(all.tolerates(&taint));
        let wrong_effect =
            Toleration::parse(&json!({"key": "k", "operator": "Exists", "effect": "NoSchedule"}));
        assert!(!wrong_effect.tolerates(&taint));
        let equal = Toleration::parse(&json!({"key": "k", "value": "v"}));
        assert!(equal.tolerates(&taint));
        let other_value =
            Toleration::parse(&json!({"key": "k", "operator": "Equal", "value": "w"}));
        assert!(!other_value.tolerates(&taint));
    }

    #[test]
    fn not_ready_and_unknown_nodes_get_the_taint_kubernetes_would_add() {
        let node = |status: &str| json!({"metadata": {"name": "n"}, "status": {"conditions": [{"type": "Ready", "status": status}]}});
        assert!(NodeInfo::from_node(&node("True")).taints.is_empty());
        assert_eq!(
            NodeInfo::from_node(&node("False")).taints[0].key,
            TAINT_NOT_READY
        );
        assert_eq!(
            NodeInfo::from_node(&node("Unknown")).taints[0].key,
            TAINT_UNREACHABLE
        );
        let no_conditions = NodeInfo::from_node(&json!({"metadata": {"name": "n"}}));
        assert_eq!(no_conditions.taints[0].key, TAINT_NOT_READY);
    }

    #[test]
    fn node_allocatable_falls_back_to_capacity() {
        let node = json!({"metadata": {"name": "n"}, "status": {
            "capacity": {"cpu": "4", "memory": "8Gi", "pods": "110"},
            "conditions": [{"type": "Ready", "status": "True"}]}});
        let info = NodeInfo::from_node(&node);
        assert_eq!(
            info.allocatable,
            Resources {
                milli_cpu: 4000,
                memory: 8 << 30
            }
        );
        assert_eq!(info.allowed_pods, 110);
    }

    #[test]
    fn required_node_affinity_terms_are_ored_and_requirements_anded() {
        let pod = json!({"spec": {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [
            {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]},
                                  {"key": "gpu", "operator": "Exists"}]},
            {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["special"]}]}
        ]}}}}});
        let info = PodInfo::from_pod(&pod);
        let node = |name: &str, labels: Value| {
            NodeInfo::from_node(&json!({"metadata": {"name": name, "labels": labels}}))
        };
        assert!(info.matches_node_selector(&node("x", json!({"zone": "a", "gpu": "1"}))));
        assert!(!info.matches_node_selector(&node("x", json!({"zone": "a"}))));
        assert!(info.matches_node_selector(&node("special", json!({}))));
    }
}
