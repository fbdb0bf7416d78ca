//! `/stats/summary`, `/metrics/resource` and `/metrics/cadvisor`: the node's and its pods'
//! latest CPU and memory usage, in the kubelet's Summary API shape (what metrics-server
//! scrapes), as the kubelet's resource metrics and as cAdvisor's container metrics in
//! Prometheus' text format, from the samples the kubelet takes every `stats_interval`.

use serde_json::{json, Value};

use crate::resource_metrics::{ContainerUsage, MetricsRegistry};

/// Where the node's samples are read.
pub struct StatsSource {
    node: String,
    samples: Option<MetricsRegistry>,
}

impl StatsSource {
    pub fn new(node: String, samples: Option<MetricsRegistry>) -> Self {
        StatsSource { node, samples }
    }

    /// The Summary, or `None` while the node has no fresh sample (or does not sample).
    pub fn summary(&self) -> Option<Value> {
        let report = self.samples.as_ref()?.node_report(&self.node)?;
        let time = |t: &chrono::DateTime<chrono::Utc>| {
            t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        };
        let usage = |at: &str, cpu: u64, mem: u64| {
            (
                json!({"time": at, "usageNanoCores": cpu}),
                json!({"time": at, "workingSetBytes": mem}),
            )
        };
        let node_at = time(&report.node.timestamp);
        let (cpu, memory) = usage(
            &node_at,
            report.node.cpu_nanocores,
            report.node.memory_bytes,
        );
        let pods: Vec<Value> = report
            .pods
            .iter()
            .map(|p| {
                let at = time(&p.timestamp);
                let containers: Vec<Value> = p
                    .containers
                    .iter()
                    .map(|c: &ContainerUsage| {
                        let (mut cpu, memory) = usage(&at, c.cpu_nanocores, c.memory_bytes);
                        cpu["usageCoreNanoSeconds"] = json!(c.cpu_total_ns);
                        json!({"name": c.name, "cpu": cpu, "memory": memory})
                    })
                    .collect();
                let (cpu, memory) = usage(&at, p.cpu_nanocores(), p.memory_bytes());
                json!({
                    "podRef": {"name": p.name, "namespace": p.namespace, "uid": p.uid},
                    "containers": containers,
                    "cpu": cpu,
                    "memory": memory,
                })
            })
            .collect();
        // `windowSeconds`: the span the kubelet's rates cover (its sampling interval), which
        // a scraper reports as the metrics' window; not in Kubernetes' Summary API.
        Some(json!({
            "node": {"nodeName": self.node, "cpu": cpu, "memory": memory,
                "windowSeconds": report.node.window.as_secs_f64()},
            "pods": pods,
        }))
    }

    /// The kubelet's `/metrics/resource`: cumulative CPU seconds and working sets per
    /// container and pod, in Prometheus' text format; `None` while nothing is sampled.
    pub fn resource_metrics(&self) -> Option<String> {
        use std::fmt::Write as _;
        let report = self.samples.as_ref()?.node_report(&self.node)?;
        let ms = |t: &chrono::DateTime<chrono::Utc>| t.timestamp_millis();
        let secs = |ns: u64| ns as f64 / 1e9;
        let mut out = String::new();
        let family = |out: &mut String, name: &str, kind: &str, help: &str| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        };
        let node_total: u64 = report
            .pods
            .iter()
            .flat_map(|p| &p.containers)
            .map(|c| c.cpu_total_ns)
            .sum();
        let at = ms(&report.node.timestamp);
        family(
            &mut out,
            "node_cpu_usage_seconds_total",
            "counter",
            "[STABLE] Cumulative cpu time consumed by the node's containers in core-seconds",
        );
        let _ = writeln!(
            out,
            "node_cpu_usage_seconds_total {} {at}",
            secs(node_total)
        );
        family(
            &mut out,
            "node_memory_working_set_bytes",
            "gauge",
            "[STABLE] Current working set of the node's containers in bytes",
        );
        let _ = writeln!(
            out,
            "node_memory_working_set_bytes {} {at}",
            report.node.memory_bytes
        );
        family(
            &mut out,
            "container_cpu_usage_seconds_total",
            "counter",
            "[STABLE] Cumulative cpu time consumed by the container in core-seconds",
        );
        for p in &report.pods {
            for c in &p.containers {
                let _ = writeln!(out,
                    "container_cpu_usage_seconds_total{{container=\"{}\",namespace=\"{}\",pod=\"{}\"}} {} {}",
                    c.name, p.namespace, p.name, secs(c.cpu_total_ns), ms(&p.timestamp));
            }
        }
        family(
            &mut out,
            "container_memory_working_set_bytes",
            "gauge",
            "[STABLE] Current working set of the container in bytes",
        );
        for p in &report.pods {
            for c in &p.containers {
                let _ = writeln!(out,
                    "container_memory_working_set_bytes{{container=\"{}\",namespace=\"{}\",pod=\"{}\"}} {} {}",
                    c.name, p.namespace, p.name, c.memory_bytes, ms(&p.timestamp));
            }
        }
        family(
            &mut out,
            "pod_cpu_usage_seconds_total",
            "counter",
            "[STABLE] Cumulative cpu time consumed by the pod in core-seconds",
        );
        for p in &report.pods {
            let total: u64 = p.containers.iter().map(|c| c.cpu_total_ns).sum();
            let _ = writeln!(
                out,
                "pod_cpu_usage_seconds_total{{namespace=\"{}\",pod=\"{}\"}} {} {}",
                p.namespace,
                p.name,
                secs(total),
                ms(&p.timestamp)
            );
        }
        family(
            &mut out,
            "pod_memory_working_set_bytes",
            "gauge",
            "[STABLE] Current working set of the pod in bytes",
        );
        for p in &report.pods {
            let _ = writeln!(
                out,
                "pod_memory_working_set_bytes{{namespace=\"{}\",pod=\"{}\"}} {} {}",
                p.namespace,
                p.name,
                p.memory_bytes(),
                ms(&p.timestamp)
            );
        }
        family(
            &mut out,
            "scrape_error",
            "gauge",
            "[ALPHA] 1 if there was an error while getting container metrics, 0 otherwise",
        );
        let _ = writeln!(out, "scrape_error 0");
        Some(out)
    }

    /// The kubelet's `/metrics/cadvisor`: the cAdvisor series of the counters the runtime
    /// gives (cumulative CPU and the working set) with cAdvisor's Kubernetes labels; `id`
    /// is the runtime's container id (not a cgroup path). `None` while nothing is sampled.
    pub fn cadvisor_metrics(&self) -> Option<String> {
        use std::fmt::Write as _;
        let report = self.samples.as_ref()?.node_report(&self.node)?;
        let mut out = String::new();
        let series: [Series; 2] = [
            (
                "container_cpu_usage_seconds_total",
                "counter",
                "Cumulative cpu time consumed in seconds.",
                |c| format!("{}", c.cpu_total_ns as f64 / 1e9),
            ),
            (
                "container_memory_working_set_bytes",
                "gauge",
                "Current working set in bytes.",
                |c| c.memory_bytes.to_string(),
            ),
        ];
        for (name, kind, help, value) in series {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            let cpu = if kind == "counter" {
                "cpu=\"total\","
            } else {
                ""
            };
            for p in &report.pods {
                for c in &p.containers {
                    let _ = writeln!(
                        out,
                        "{name}{{container=\"{}\",{cpu}id=\"{}\",image=\"{}\",namespace=\"{}\",pod=\"{}\"}} {} {}",
                        c.name,
                        c.runtime_id,
                        escape(&c.image),
                        p.namespace,
                        p.name,
                        value(c),
                        p.timestamp.timestamp_millis()
                    );
                }
            }
        }
        Some(out)
    }
}

/// One cAdvisor series: name, type, help, and its value of a container.
type Series = (
    &'static str,
    &'static str,
    &'static str,
    fn(&ContainerUsage) -> String,
);

/// A label value in Prometheus' text format.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
