//! Resource usage of nodes and pods: the data behind `metrics.k8s.io` (`kubectl top`) and
//! the autoscaler. Kubelets report a sample every few seconds; readers see the latest
//! sample of each node. Like metrics-server, nothing is stored: the samples live in
//! memory and a restarted cluster starts empty until the next round of samples.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};

/// One container's usage over a sampling window.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ContainerUsage {
    pub name: String,
    /// Average CPU over the window, in billionths of a core.
    pub cpu_nanocores: u64,
    /// Working set at the end of the window.
    pub memory_bytes: u64,
    /// CPU time used since the container started, in nanoseconds (the counter the rate
    /// was taken from; Prometheus' `container_cpu_usage_seconds_total`).
    pub cpu_total_ns: u64,
    /// The runtime's id and image of the container, where the sampling node knows them
    /// (empty in what a scraper read from a Summary).
    pub runtime_id: String,
    pub image: String,
}

/// One pod's usage: every app container that runs in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodUsage {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    /// The pod's labels, so that readers can select pod metrics as they select pods.
    pub labels: BTreeMap<String, String>,
    pub containers: Vec<ContainerUsage>,
    /// End of the window.
    pub timestamp: DateTime<Utc>,
    pub window: Duration,
}

impl PodUsage {
    pub fn cpu_nanocores(&self) -> u64 {
        self.containers.iter().map(|c| c.cpu_nanocores).sum()
    }

    pub fn memory_bytes(&self) -> u64 {
        self.containers.iter().map(|c| c.memory_bytes).sum()
    }
}

/// One node's usage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeUsage {
    pub name: String,
    pub cpu_nanocores: u64,
    pub memory_bytes: u64,
    pub timestamp: DateTime<Utc>,
    pub window: Duration,
}

/// What a kubelet reports each round: its node and the pods it measured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeReport {
    pub node: NodeUsage,
    pub pods: Vec<PodUsage>,
}

/// Where kubelets put their samples.
pub trait MetricsSink: Send + Sync + 'static {
    fn report(&self, report: NodeReport);
}

/// Where the gateway and the autoscaler read usage from. The registry below covers
/// nodes in this process; a source that scrapes remote kubelets could stand behind the
/// same trait.
pub trait MetricsSource: Send + Sync + 'static {
    fn nodes(&self) -> Vec<NodeUsage>;

    /// Pods of one namespace, or of all when `None`.
    fn pods(&self, namespace: Option<&str>) -> Vec<PodUsage>;
}

/// The latest report of every node in this process, kept in memory.
#[derive(Clone)]
pub struct MetricsRegistry {
    reports: Arc<RwLock<HashMap<String, NodeReport>>>,
    /// Reports older than this are not served: the node stopped sampling (or is gone),
    /// and old usage presented as current would mislead the autoscaler.
    max_age: Duration,
}

impl Default for MetricsRegistry {
    fn default() -> Self {
        MetricsRegistry::new(Duration::from_secs(60))
    }
}

impl MetricsRegistry {
    pub fn new(max_age: Duration) -> Self {
        MetricsRegistry {
            reports: Arc::default(),
            max_age,
        }
    }

    fn fresh(&self, at: DateTime<Utc>, now: DateTime<Utc>) -> bool {
        let age = now.signed_duration_since(at);
        age.to_std().map_or(true, |age| age <= self.max_age)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, NodeReport>> {
        self.reports.read().unwrap_or_else(|e| e.into_inner())
    }
}

impl MetricsRegistry {
    /// The latest report of `node`, while it is fresh.
    pub fn node_report(&self, node: &str) -> Option<NodeReport> {
        self.read()
            .get(node)
            .filter(|r| self.fresh(r.node.timestamp, Utc::now()))
            .cloned()
    }
}

impl MetricsSink for MetricsRegistry {
    fn report(&self, report: NodeReport) {
        self.reports
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(report.node.name.clone(), report);
    }
}

impl MetricsSource for MetricsRegistry {
    fn nodes(&self) -> Vec<NodeUsage> {
        let now = Utc::now();
        let mut nodes: Vec<NodeUsage> = self
            .read()
            .values()
            .filter(|r| self.fresh(r.node.timestamp, now))
            .map(|r| r.node.clone())
            .collect();
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        nodes
    }

    fn pods(&self, namespace: Option<&str>) -> Vec<PodUsage> {
        let now = Utc::now();
        let mut pods: Vec<PodUsage> = self
            .read()
            .values()
            .flat_map(|r| r.pods.iter())
            .filter(|p| namespace.is_none_or(|ns| p.namespace == ns))
            .filter(|p| self.fresh(p.timestamp, now))
            .cloned()
            .collect();
        pods.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        pods
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(ns: &str, name: &str, at: DateTime<Utc>) -> PodUsage {
        PodUsage {
            namespace: ns.into(),
            name: name.into(),
            uid: format!("uid-{name}"),
            labels: BTreeMap::new(),
            containers: vec![ContainerUsage {
                name: "c".into(),
                cpu_nanocores: 5,
                memory_bytes: 7,
                cpu_total_ns: 9,
                ..Default::default()
            }],
            timestamp: at,
            window: Duration::from_secs(5),
        }
    }

    fn report(node: &str, at: DateTime<Utc>, pods: Vec<PodUsage>) -> NodeReport {
        NodeReport {
            node: NodeUsage {
                name: node.into(),
                cpu_nanocores: 5,
                memory_bytes: 7,
                timestamp: at,
                window: Duration::from_secs(5),
            },
            pods,
        }
    }

    #[test]
    fn a_new_report_replaces_the_nodes_previous_one() {
        let reg = MetricsRegistry::default();
        let now = Utc::now();
        reg.report(report(
            "n1",
            now,
            vec![pod("a", "p1", now), pod("b", "p2", now)],
        ));
        reg.report(report("n1", now, vec![pod("a", "p3", now)]));
        reg.report(report("n2", now, vec![pod("a", "p4", now)]));
        let names: Vec<String> = reg.pods(Some("a")).into_iter().map(|p| p.name).collect();
        assert_eq!(names, ["p3", "p4"]);
        assert_eq!(reg.pods(None).len(), 2);
        assert_eq!(reg.nodes().len(), 2);
    }

    #[test]
    fn stale_reports_are_not_served() {
        let reg = MetricsRegistry::new(Duration::from_secs(30));
        let old = Utc::now() - chrono::Duration::seconds(31);
        reg.report(report("n1", old, vec![pod("a", "p1", old)]));
        assert!(reg.nodes().is_empty());
        assert!(reg.pods(None).is_empty());
    }
}
