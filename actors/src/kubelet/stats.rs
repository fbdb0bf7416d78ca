//! Resource usage sampling: every few seconds the kubelet reads the CPU and memory counters
//! of its pods' running containers from the runtime and reports the usage to the metrics
//! sink (the data of `kubectl top` and of the autoscaler).
//!
//! CPU counters are cumulative; usage is the difference between this kubelet's own two
//! latest readings divided by the time between them, so the rate always covers the
//! sampling window and does not depend on how the engine computes its own rates.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;

use super::runtime::{ContainerInfo, ContainerState, ContainerStats, Runtime, RuntimeError};
use crate::api::meta;
use crate::resource_metrics::{ContainerUsage, NodeReport, NodeUsage, PodUsage};
use crate::runtime::Cache;

/// Stats calls in flight at once: a slow engine must not get dozens of calls at a time.
const STATS_CONCURRENCY: usize = 4;

/// One container's counters, read now.
#[derive(Debug, Clone)]
pub struct Reading {
    pub container: ContainerInfo,
    pub stats: ContainerStats,
}

/// Read the counters of every running app container of `node`. Containers that vanish
/// or fail to answer between the list and their stats call are left out of this round.
pub async fn read_node(
    runtime: Arc<dyn Runtime>,
    node: String,
) -> Result<Vec<Reading>, RuntimeError> {
    let running: Vec<ContainerInfo> = runtime
        .list(&node)
        .await?
        .into_iter()
        .filter(|c| !c.is_sandbox() && matches!(c.state, ContainerState::Running { .. }))
        .collect();
    let readings = futures::stream::iter(running)
        .map(|container| {
            let runtime = runtime.clone();
            async move {
                match runtime.stats(&container.id).await {
                    Ok(stats) => Some(Reading { container, stats }),
                    Err(e) => {
                        tracing::debug!(container = %container.id, error = %e, "no stats");
                        None
                    }
                }
            }
        })
        .buffer_unordered(STATS_CONCURRENCY)
        .filter_map(futures::future::ready)
        .collect()
        .await;
    Ok(readings)
}

/// CPU in nanocores between two readings of one container; `None` when no time passed or
/// the counter went backwards (a different container under the same id).
pub fn cpu_nanocores(previous: &ContainerStats, current: &ContainerStats) -> Option<u64> {
    let elapsed = current
        .at
        .signed_duration_since(previous.at)
        .num_nanoseconds()?;
    if elapsed <= 0 || current.cpu_usage_ns < previous.cpu_usage_ns {
        return None;
    }
    let used = u128::from(current.cpu_usage_ns - previous.cpu_usage_ns);
    u64::try_from(used * 1_000_000_000 / elapsed as u128).ok()
}

/// The previous reading of every container, to turn the next into rates.
#[derive(Debug, Default)]
pub struct Sampler {
    previous: HashMap<String, ContainerStats>,
}

impl Sampler {
    /// Turn one round of readings into a report. A pod is reported only when every one of
    /// its running containers has a rate (two readings), as metrics-server does: a pod with
    /// half its containers measured would look idle. `pods` supplies the pods' labels.
    pub fn report(&mut self, node: &str, readings: Vec<Reading>, pods: &Cache) -> NodeReport {
        let mut by_pod: BTreeMap<String, Vec<(Reading, Option<Rate>)>> = BTreeMap::new();
        let mut next = HashMap::with_capacity(readings.len());
        for r in readings {
            let rate = self.previous.get(&r.container.id).and_then(|prev| {
                let window = r.stats.at.signed_duration_since(prev.at).to_std().ok()?;
                Some((cpu_nanocores(prev, &r.stats)?, window))
            });
            next.insert(r.container.id.clone(), r.stats);
            let uid = r.container.pod_uid().unwrap_or_default().to_string();
            by_pod.entry(uid).or_default().push((r, rate));
        }
        // Forget containers that are gone, so the map tracks what runs now.
        self.previous = next;
        let mut report = NodeReport {
            node: NodeUsage {
                name: node.to_string(),
                cpu_nanocores: 0,
                memory_bytes: 0,
                timestamp: chrono::Utc::now(),
                window: Duration::ZERO,
            },
            pods: Vec::new(),
        };
        for (uid, containers) in by_pod {
            if uid.is_empty() || containers.iter().any(|(_, rate)| rate.is_none()) {
                continue;
            }
            let Some(pod) = pod_usage(&uid, &containers, pods) else {
                continue;
            };
            report.node.cpu_nanocores += pod.cpu_nanocores();
            report.node.memory_bytes += pod.memory_bytes();
            report.node.window = report.node.window.max(pod.window);
            report.pods.push(pod);
        }
        report
    }
}

/// CPU nanocores and the window they were measured over.
type Rate = (u64, Duration);

fn pod_usage(uid: &str, containers: &[(Reading, Option<Rate>)], pods: &Cache) -> Option<PodUsage> {
    let first = &containers.first()?.0.container;
    let label = |k: &str| first.labels.get(k).cloned().unwrap_or_default();
    let namespace = label(super::runtime::LABEL_POD_NAMESPACE);
    let name = label(super::runtime::LABEL_POD_NAME);
    let labels = pods
        .get(&format!("{namespace}/{name}"))
        .filter(|p| meta::uid(p) == Some(uid))
        .and_then(|p| p.pointer("/metadata/labels").cloned())
        .and_then(|l| serde_json::from_value(l).ok())
        .unwrap_or_default();
    let timestamp = containers.iter().map(|(r, _)| r.stats.at).max()?;
    let mut usage = PodUsage {
        namespace,
        name,
        uid: uid.to_string(),
        labels,
        containers: Vec::new(),
        timestamp,
        window: Duration::ZERO,
    };
    for (r, rate) in containers {
        let (cpu, window) = rate.unwrap_or_default();
        usage.window = usage.window.max(window);
        usage.containers.push(ContainerUsage {
            name: r.container.container_name().unwrap_or_default().to_string(),
            cpu_nanocores: cpu,
            memory_bytes: r.stats.memory_working_set_bytes,
            cpu_total_ns: r.stats.cpu_usage_ns,
            runtime_id: r.container.id.clone(),
            image: r.container.image.clone(),
        });
    }
    usage.containers.sort_by(|a, b| a.name.cmp(&b.name));
    Some(usage)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kubelet::runtime::{
        LABEL_CONTAINER, LABEL_POD_NAME, LABEL_POD_NAMESPACE, LABEL_POD_UID,
    };
    use chrono::{TimeZone, Utc};

    fn stats(cpu_ns: u64, at_ms: i64) -> ContainerStats {
        ContainerStats {
            cpu_usage_ns: cpu_ns,
            memory_working_set_bytes: 1 << 20,
            at: Utc.timestamp_millis_opt(at_ms).single().expect("time"),
        }
    }

    fn reading(id: &str, pod: &str, container: &str, s: ContainerStats) -> Reading {
        let labels = BTreeMap::from([
            (LABEL_POD_UID.to_string(), format!("uid-{pod}")),
            (LABEL_POD_NAME.to_string(), pod.to_string()),
            (LABEL_POD_NAMESPACE.to_string(), "default".to_string()),
            (LABEL_CONTAINER.to_string(), container.to_string()),
        ]);
        Reading {
            container: ContainerInfo {
                id: id.into(),
                labels,
                image: String::new(),
                image_id: String::new(),
                state: ContainerState::Running {
                    started_at: String::new(),
                },
            },
            stats: s,
        }
    }

    #[test]
    fn half_a_core_over_two_seconds_is_half_a_billion_nanocores() {
        let rate = cpu_nanocores(&stats(1_000_000_000, 0), &stats(2_000_000_000, 2_000));
        assert_eq!(rate, Some(500_000_000));
    }

    #[test]
    fn no_rate_without_elapsed_time_or_when_the_counter_restarts() {
        assert_eq!(cpu_nanocores(&stats(5, 1_000), &stats(9, 1_000)), None);
        assert_eq!(cpu_nanocores(&stats(9, 0), &stats(5, 1_000)), None);
    }

    #[test]
    fn pods_are_reported_once_every_container_has_two_readings() {
        let mut sampler = Sampler::default();
        let cache = Cache::default();
        let first = sampler.report("n1", vec![reading("c1", "web", "app", stats(0, 0))], &cache);
        assert!(first.pods.is_empty(), "one reading gives no rate");
        let second = sampler.report(
            "n1",
            vec![
                reading("c1", "web", "app", stats(250_000_000, 1_000)),
                reading("c2", "web", "sidecar", stats(0, 1_000)),
            ],
            &cache,
        );
        assert!(second.pods.is_empty(), "the sidecar has no rate yet");
        let third = sampler.report(
            "n1",
            vec![
                reading("c1", "web", "app", stats(500_000_000, 2_000)),
                reading("c2", "web", "sidecar", stats(100_000_000, 2_000)),
            ],
            &cache,
        );
        assert_eq!(third.pods.len(), 1);
        let pod = &third.pods[0];
        assert_eq!(
            (pod.namespace.as_str(), pod.name.as_str()),
            ("default", "web")
        );
        assert_eq!(pod.cpu_nanocores(), 350_000_000);
        assert_eq!(third.node.cpu_nanocores, 350_000_000);
        assert_eq!(third.node.memory_bytes, 2 << 20);
        assert_eq!(pod.window, Duration::from_secs(1));
    }
}
