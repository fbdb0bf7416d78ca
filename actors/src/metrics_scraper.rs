//! metrics-server's part: every `period`, each node's `/stats/summary` is read through
//! the node's server and kept as that node's latest report, so `kubectl top` and the
//! autoscaler see nodes on other machines exactly as those in this process (one path).
//! Pods' labels come from the process's pod informer, as metrics-server takes them from
//! its own, so metrics can be selected as pods are.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use http_body_util::{BodyExt, Full};
use serde_json::Value;

use crate::api::meta;
use crate::client::{ApiClient, ListParams};
use crate::gateway::node_proxy::{self, NodeDialer};
use crate::resource_metrics::{
    ContainerUsage, MetricsRegistry, MetricsSink, NodeReport, NodeUsage, PodUsage,
};
use crate::runtime::Informer;

/// Nodes scraped at once.
const CONCURRENCY: usize = 16;
/// A node that does not answer in this long is skipped this round.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);

/// Scrapes node servers into a registry.
pub struct Scraper {
    pub client: Arc<dyn ApiClient>,
    pub dialer: NodeDialer,
    pub registry: MetricsRegistry,
    /// The cluster's pods (for their labels).
    pub pods: Arc<Informer>,
    pub period: Duration,
}

impl Scraper {
    /// Scrape every `period` until the arbiter it runs on stops.
    pub async fn run(self) {
        let mut tick = tokio::time::interval(self.period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.scrape_all().await;
        }
    }

    async fn scrape_all(&self) {
        let nodes = match self
            .client
            .list("nodes", None, &ListParams::default())
            .await
        {
            Ok(list) => list.items,
            Err(e) => {
                tracing::debug!(error = %e, "metrics scrape: cannot list nodes");
                return;
            }
        };
        let reports: Vec<Option<NodeReport>> = futures::stream::iter(nodes)
            .map(|node| async move { self.scrape(&node).await })
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        for report in reports.into_iter().flatten() {
            self.registry.report(report);
        }
    }

    async fn scrape(&self, node: &Value) -> Option<NodeReport> {
        let name = meta::name(node).unwrap_or_default().to_string();
        let addr = node_proxy::node_address(node).ok()?;
        let req = hyper::Request::get("/stats/summary")
            .header(hyper::header::HOST, addr.to_string())
            .body(Full::new(Bytes::new()))
            .ok()?;
        let answer = async {
            let resp = self.dialer.send(addr, req).await.ok()?;
            if !resp.status().is_success() {
                return None;
            }
            let body = resp.into_body().collect().await.ok()?.to_bytes();
            serde_json::from_slice::<Value>(&body).ok()
        };
        let summary = match tokio::time::timeout(SCRAPE_TIMEOUT, answer).await {
            Ok(Some(s)) => s,
            _ => {
                tracing::debug!(node = %name, "metrics scrape: no summary");
                return None;
            }
        };
        let labels = |ns: &str, pod: &str| -> BTreeMap<String, String> {
            self.pods
                .cache()
                .get(&format!("{ns}/{pod}"))
                .and_then(|p| {
                    p.pointer("/metadata/labels")
                        .and_then(|l| serde_json::from_value(l.clone()).ok())
                })
                .unwrap_or_default()
        };
        report_from_summary(&summary, &labels)
    }
}

fn time_of(v: &Value) -> Option<DateTime<Utc>> {
    v.get("time")
        .and_then(Value::as_str)
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc))
}

fn usage(v: &Value) -> (u64, u64, Option<DateTime<Utc>>) {
    (
        v.pointer("/cpu/usageNanoCores")
            .and_then(Value::as_u64)
            .unwrap_or(0),
        v.pointer("/memory/workingSetBytes")
            .and_then(Value::as_u64)
            .unwrap_or(0),
        v.get("cpu").and_then(time_of),
    )
}

/// A node's report from its Summary.
pub fn report_from_summary(
    summary: &Value,
    labels: &dyn Fn(&str, &str) -> BTreeMap<String, String>,
) -> Option<NodeReport> {
    let node = summary.get("node")?;
    let window = node
        .get("windowSeconds")
        .and_then(Value::as_f64)
        .filter(|w| w.is_finite() && *w > 0.0)
        .map_or(Duration::from_secs(5), Duration::from_secs_f64);
    let name = node.get("nodeName")?.as_str()?.to_string();
    let (cpu, memory, at) = usage(node);
    let at = at?;
    // A pod listed twice counts once.
    let mut seen: HashSet<(String, String)> = HashSet::new();
    let pods = summary
        .get("pods")
        .and_then(Value::as_array)
        .map(|pods| {
            pods.iter()
                .filter_map(|p| {
                    let r = p.get("podRef")?;
                    let (ns, pod) = (r.get("namespace")?.as_str()?, r.get("name")?.as_str()?);
                    if !seen.insert((ns.to_string(), pod.to_string())) {
                        return None;
                    }
                    let (_, _, t) = usage(p);
                    let containers = p
                        .get("containers")
                        .and_then(Value::as_array)
                        .map(|cs| {
                            cs.iter()
                                .filter_map(|c| {
                                    let (cpu, mem, _) = usage(c);
                                    Some(ContainerUsage {
                                        name: c.get("name")?.as_str()?.to_string(),
                                        cpu_nanocores: cpu,
                                        memory_bytes: mem,
                                        cpu_total_ns: c
                                            .pointer("/cpu/usageCoreNanoSeconds")
                                            .and_then(Value::as_u64)
                                            .unwrap_or(0),
                                        ..Default::default()
                                    })
                                })
                                .collect()
                        })
                        .unwrap_or_default();
                    Some(PodUsage {
                        namespace: ns.to_string(),
                        name: pod.to_string(),
                        uid: r
                            .get("uid")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_string(),
                        labels: labels(ns, pod),
                        containers,
                        timestamp: t.unwrap_or(at),
                        window,
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    Some(NodeReport {
        node: NodeUsage {
            name,
            cpu_nanocores: cpu,
            memory_bytes: memory,
            timestamp: at,
            window,
        },
        pods,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_summary_becomes_the_nodes_report_with_pod_labels() {
        let summary = json!({
            "node": {"nodeName": "n1", "windowSeconds": 5.0,
                "cpu": {"time": "2026-01-01T00:00:00Z", "usageNanoCores": 5},
                "memory": {"time": "2026-01-01T00:00:00Z", "workingSetBytes": 7}},
            "pods": [{"podRef": {"name": "p", "namespace": "d", "uid": "u"},
                "cpu": {"time": "2026-01-01T00:00:00Z", "usageNanoCores": 3},
                "memory": {"time": "2026-01-01T00:00:00Z", "workingSetBytes": 4},
                "containers": [{"name": "c",
                    "cpu": {"time": "2026-01-01T00:00:00Z", "usageNanoCores": 3},
                    "memory": {"time": "2026-01-01T00:00:00Z", "workingSetBytes": 4}}]}]
        });
        let labels = |_: &str, _: &str| BTreeMap::from([("app".to_string(), "web".to_string())]);
        let r = report_from_summary(&summary, &labels).expect("report");
        assert_eq!(r.node.window, Duration::from_secs(5));
        assert_eq!(
            (
                r.node.name.as_str(),
                r.node.cpu_nanocores,
                r.node.memory_bytes
            ),
            ("n1", 5, 7)
        );
        assert_eq!(r.pods.len(), 1);
        assert_eq!(r.pods[0].labels["app"], "web");
        assert_eq!(r.pods[0].containers[0].cpu_nanocores, 3);
    }
}
