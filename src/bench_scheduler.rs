//! `skiff bench-scheduler`: how fast the scheduler places pods on a big cluster.
//!
//! For each node count, two runs, each on a fresh store in a temporary directory (every
//! write durable) with that many simulated nodes (Node objects, Ready, room for every pod)
//! and a `SchedulerActor` on its own arbiter, as in the real system:
//! - *streaming*: the pods are created through the in-process API client, 64 creates in
//!   flight, while the scheduler binds them (it has to keep up with the arrivals);
//! - *backlog*: the pods all exist before the scheduler starts (its own top speed, its
//!   initial list of the pods included).
//!
//! The scheduler's counter of binds the store accepted is read every 100 ms; the
//! per-second rates are those of every 1-second window of the run (sliding by 100 ms).
//!
//! Memory, both ways labelled in the report: the growth of this process's resident set
//! (`VmRSS` in /proc/self/status) while the scheduler loads the nodes (streaming runs;
//! that growth is the scheduler's: node informer cache plus scheduler cache) and over the
//! whole run (which also holds the store's in-memory copy of every pod, its watch history
//! and the events), and the scheduler's own estimate of its cache at the end.

use std::fmt;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use serde_json::{json, Value};
use skiff_actors::api::ApiError;
use skiff_actors::client::{ApiClient, LocalClient};
use skiff_actors::gateway::Objects;
use skiff_actors::metrics::Metrics;
use skiff_actors::scheduler::{GetStats, SchedulerActor, SchedulerConfig, SchedulerStats};
use skiff_actors::store::{self, StoreConfig};

const NAMESPACE: &str = "bench";
/// Creates (and node registrations) in flight at once.
const CONCURRENCY: usize = 64;
/// Give up on a run that stops making progress for this long.
const STALL: Duration = Duration::from_secs(60);
/// How often the scheduler's bind counter is read.
const SAMPLE: Duration = Duration::from_millis(100);

#[derive(Debug, thiserror::Error)]
pub enum SchedulerBenchError {
    #[error("cannot create a temporary directory")]
    TempDir(#[source] std::io::Error),
    #[error("metrics setup failed")]
    Metrics(#[from] skiff_actors::metrics::MetricsError),
    #[error("cannot open the store")]
    Store(#[from] skiff_actors::store::StoreError),
    #[error("creating {what} failed")]
    Create {
        what: String,
        #[source]
        source: ApiError,
    },
    #[error("a load task failed: {0}")]
    Task(String),
    #[error("the scheduler did not answer")]
    Scheduler(#[from] MailboxError),
    #[error("the scheduler made no progress for {0:?}: {1}")]
    Stalled(Duration, String),
}

/// How the pods arrive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// Created while the scheduler runs.
    Streaming,
    /// All pending before the scheduler starts.
    Backlog,
}

impl fmt::Display for Arrival {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Arrival::Streaming => "streaming",
            Arrival::Backlog => "backlog",
        })
    }
}

/// One run's figures.
#[derive(Debug, Clone)]
pub struct SchedulerBenchRun {
    pub arrival: Arrival,
    pub nodes: usize,
    pub pods: usize,
    /// Streaming: from the first create to the last bind; backlog: from the scheduler's
    /// start to the last bind.
    pub elapsed: Duration,
    /// How long creating all the pods took.
    pub create_elapsed: Duration,
    /// Pods bound in each 1-second window of the run.
    pub per_second: Vec<u64>,
    pub stats: SchedulerStats,
    /// Resident set growth while the scheduler loaded the nodes (streaming runs), bytes.
    pub rss_nodes_bytes: Option<u64>,
    /// Resident set growth from the scheduler's start to the end (store included), bytes.
    pub rss_run_bytes: Option<u64>,
}

impl SchedulerBenchRun {
    pub fn average(&self) -> f64 {
        self.pods as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// A percentile of the per-second rates (`0.99` = p99, the high end; the minimum is
    /// reported beside it so that a slow second is not hidden).
    pub fn percentile(&self, p: f64) -> u64 {
        let mut sorted = self.per_second.clone();
        sorted.sort_unstable();
        let Some(last) = sorted.len().checked_sub(1) else {
            return 0;
        };
        let rank = (sorted.len() as f64 * p).ceil() as usize;
        sorted[rank.saturating_sub(1).min(last)]
    }

    pub fn min(&self) -> u64 {
        self.per_second.iter().copied().min().unwrap_or(0)
    }
}

fn mib(bytes: Option<u64>) -> String {
    bytes.map_or("n/a".to_string(), |b| {
        format!("{:.1} MiB", b as f64 / 1048576.0)
    })
}

impl fmt::Display for SchedulerBenchRun {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} nodes, {} pods, {}: {:.0} pods/s average over {:.2}s \
             (per-second rate p50 {}, p99 {}, min {}); creates took {:.2}s; \
             {} bind failures, {} events dropped; memory: scheduler cache ~{:.1} MiB (estimate)",
            self.nodes,
            self.pods,
            self.arrival,
            self.average(),
            self.elapsed.as_secs_f64(),
            self.percentile(0.50),
            self.percentile(0.99),
            self.min(),
            self.create_elapsed.as_secs_f64(),
            self.stats.bind_failures,
            self.stats.events_dropped,
            self.stats.cache_bytes as f64 / 1048576.0,
        )?;
        if self.rss_nodes_bytes.is_some() {
            write!(f, ", RSS +{} loading the nodes", mib(self.rss_nodes_bytes))?;
        }
        write!(
            f,
            ", RSS +{} over the run (store included)",
            mib(self.rss_run_bytes)
        )
    }
}

/// Every run, one line each.
#[derive(Debug, Clone, Default)]
pub struct SchedulerBenchReport {
    pub runs: Vec<SchedulerBenchRun>,
}

impl fmt::Display for SchedulerBenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for run in &self.runs {
            writeln!(f, "{run}")?;
        }
        Ok(())
    }
}

/// What the pods ask of the scheduler.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Shape {
    /// Requests and a controller (the system default spreading over hosts and zones).
    #[default]
    Plain,
    /// Also a zone spread constraint (DoNotSchedule, maxSkew 1) and a hostname one
    /// (ScheduleAnyway) over the pod's controller, a preferred node affinity and a
    /// preferred pod anti-affinity to its own controller's pods on the same host.
    Workload,
}

/// Run the benchmark (streaming, then backlog) for each node count with `pods` pods; must
/// be called inside an actix system (the CLI's).
pub async fn run(
    nodes: &[usize],
    pods: usize,
    shape: Shape,
) -> Result<SchedulerBenchReport, SchedulerBenchError> {
    let mut report = SchedulerBenchReport::default();
    for &n in nodes {
        for arrival in [Arrival::Streaming, Arrival::Backlog] {
            let run = run_one_shaped(n, pods, arrival, SchedulerConfig::default(), shape).await?;
            tracing::info!(%run, "scheduler benchmark run");
            report.runs.push(run);
        }
    }
    Ok(report)
}

/// One run on a fresh store, with plain pods.
pub async fn run_one(
    nodes: usize,
    pods: usize,
    arrival: Arrival,
    config: SchedulerConfig,
) -> Result<SchedulerBenchRun, SchedulerBenchError> {
    run_one_shaped(nodes, pods, arrival, config, Shape::Plain).await
}

/// One run on a fresh store.
pub async fn run_one_shaped(
    nodes: usize,
    pods: usize,
    arrival: Arrival,
    config: SchedulerConfig,
    shape: Shape,
) -> Result<SchedulerBenchRun, SchedulerBenchError> {
    let tmp = tempfile::tempdir().map_err(SchedulerBenchError::TempDir)?;
    let store_arbiter = Arbiter::new();
    let scheduler_arbiter = Arbiter::new();
    let arbiters = (&store_arbiter, &scheduler_arbiter);
    let result = measure(tmp.path(), arbiters, nodes, pods, arrival, config, shape).await;
    scheduler_arbiter.stop();
    store_arbiter.stop();
    let _ = scheduler_arbiter.join();
    let _ = store_arbiter.join();
    result
}

async fn measure(
    dir: &Path,
    (store_arbiter, scheduler_arbiter): (&Arbiter, &Arbiter),
    nodes: usize,
    pods: usize,
    arrival: Arrival,
    config: SchedulerConfig,
    shape: Shape,
) -> Result<SchedulerBenchRun, SchedulerBenchError> {
    let metrics = Arc::new(Metrics::new()?);
    let store_cfg = StoreConfig::new(dir.join("store"));
    let store = store::start(store_cfg, metrics, &store_arbiter.handle())?;
    let client: Arc<dyn ApiClient> = Arc::new(LocalClient::new(Objects::new(store)));
    let namespace =
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}});
    create(&*client, "namespaces", None, namespace).await?;
    in_parallel(nodes, &client, |i| ("nodes", None, node(i))).await?;
    let mut create_elapsed = Duration::ZERO;
    if arrival == Arrival::Backlog {
        let t = Instant::now();
        in_parallel(pods, &client, move |i| {
            ("pods", Some(NAMESPACE), pod(i, shape))
        })
        .await?;
        create_elapsed = t.elapsed();
    }

    let rss_before = rss_bytes();
    let mut started = Instant::now();
    let scheduler_client = client.clone();
    let scheduler = actix::Supervisor::start_in_arbiter(&scheduler_arbiter.handle(), move |_| {
        SchedulerActor::new(scheduler_client, config)
    });
    let mut rss_nodes_bytes = None;
    let mut creates = None;
    if arrival == Arrival::Streaming {
        wait_for_nodes(&scheduler, nodes).await?;
        rss_nodes_bytes = growth(rss_before);
        started = Instant::now();
        let client = client.clone();
        creates = Some(actix::spawn(async move {
            in_parallel(pods, &client, move |i| {
                ("pods", Some(NAMESPACE), pod(i, shape))
            })
            .await?;
            Ok::<Duration, SchedulerBenchError>(started.elapsed())
        }));
    }

    // Cumulative binds, one sample per SAMPLE.
    let mut samples = vec![0u64];
    let mut last_progress = Instant::now();
    let mut tick = tokio::time::interval(SAMPLE);
    tick.tick().await;
    let (elapsed, stats) = loop {
        tick.tick().await;
        let s = scheduler.send(GetStats).await?;
        if s.scheduled > samples.last().copied().unwrap_or(0) {
            last_progress = Instant::now();
        }
        samples.push(s.scheduled);
        if s.scheduled >= pods as u64 {
            break (started.elapsed(), s);
        }
        if last_progress.elapsed() > STALL {
            let detail = format!("{} of {pods} pods bound", s.scheduled);
            return Err(SchedulerBenchError::Stalled(STALL, detail));
        }
    };
    if let Some(creates) = creates {
        create_elapsed = creates
            .await
            .map_err(|e| SchedulerBenchError::Task(e.to_string()))??;
    }
    Ok(SchedulerBenchRun {
        arrival,
        nodes,
        pods,
        elapsed,
        create_elapsed,
        per_second: window_rates(&samples),
        stats,
        rss_nodes_bytes,
        rss_run_bytes: growth(rss_before),
    })
}

/// Binds in every 1-second window of the cumulative `samples` (one per `SAMPLE`); a run
/// shorter than a second gives its one rate, scaled to a second.
fn window_rates(samples: &[u64]) -> Vec<u64> {
    let per_window = (Duration::from_secs(1).as_millis() / SAMPLE.as_millis()) as usize;
    if samples.len() <= per_window {
        let intervals = samples.len().saturating_sub(1).max(1) as u64;
        let total = samples.last().copied().unwrap_or(0);
        return vec![total * per_window as u64 / intervals];
    }
    samples
        .windows(per_window + 1)
        .map(|w| w[per_window].saturating_sub(w[0]))
        .collect()
}

/// Poll the scheduler until it has every node in its cache.
async fn wait_for_nodes(
    scheduler: &Addr<SchedulerActor>,
    nodes: usize,
) -> Result<(), SchedulerBenchError> {
    let deadline = Instant::now() + STALL;
    loop {
        let s = scheduler.send(GetStats).await?;
        if s.nodes >= nodes {
            return Ok(());
        }
        if Instant::now() > deadline {
            let detail = format!("{} of {nodes} nodes loaded", s.nodes);
            return Err(SchedulerBenchError::Stalled(STALL, detail));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn create(
    client: &dyn ApiClient,
    resource: &str,
    namespace: Option<&str>,
    object: Value,
) -> Result<(), SchedulerBenchError> {
    match client.create(resource, namespace, object).await {
        Ok(_) => Ok(()),
        Err(source) => Err(SchedulerBenchError::Create {
            what: resource.to_string(),
            source,
        }),
    }
}

/// Create `count` objects with `CONCURRENCY` creates in flight.
async fn in_parallel(
    count: usize,
    client: &Arc<dyn ApiClient>,
    make: impl Fn(usize) -> (&'static str, Option<&'static str>, Value) + Clone + 'static,
) -> Result<(), SchedulerBenchError> {
    let next = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..CONCURRENCY.min(count.max(1)))
        .map(|_| {
            let (client, next, make) = (client.clone(), next.clone(), make.clone());
            actix::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= count {
                        return Ok::<(), SchedulerBenchError>(());
                    }
                    let (resource, namespace, object) = make(i);
                    create(&*client, resource, namespace, object).await?;
                }
            })
        })
        .collect();
    for w in workers {
        w.await
            .map_err(|e| SchedulerBenchError::Task(e.to_string()))??;
    }
    Ok(())
}

/// A hollow node: Ready, heartbeat now, room for far more than its share of pods.
fn node(i: usize) -> Value {
    let now = skiff_actors::api::meta::now_rfc3339();
    let name = format!("hollow-{i:05}");
    let resources = json!({"cpu": "32", "memory": "128Gi", "pods": "110"});
    json!({"apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {
            "kubernetes.io/hostname": name,
            "topology.kubernetes.io/zone": format!("zone-{}", i % 3)}},
        "spec": {},
        "status": {"capacity": resources, "allocatable": resources,
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                "lastHeartbeatTime": now, "lastTransitionTime": now}]}})
}

/// A pod like one of a replication controller's: requests, and an owner to spread by.
fn pod(i: usize, shape: Shape) -> Value {
    let rc = i % 100;
    let mut p = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": format!("pod-{i:06}"), "namespace": NAMESPACE,
            "labels": {"app": "bench", "rc": format!("rc-{rc}")},
            "ownerReferences": [{"apiVersion": "v1", "kind": "ReplicationController",
                "name": format!("rc-{rc}"), "uid": format!("bench-rc-{rc}"), "controller": true}]},
        "spec": {"containers": [{"name": "app", "image": "busybox:1.36",
            "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]}});
    if shape == Shape::Workload {
        let own = json!({"matchLabels": {"rc": format!("rc-{rc}")}});
        p["spec"]["topologySpreadConstraints"] = json!([
            {"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
             "whenUnsatisfiable": "DoNotSchedule", "labelSelector": own},
            {"maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
             "whenUnsatisfiable": "ScheduleAnyway", "labelSelector": own}]);
        p["spec"]["affinity"] = json!({
            "nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 10, "preference": {"matchExpressions": [
                    {"key": "topology.kubernetes.io/zone", "operator": "In", "values": ["zone-0"]}]}}]},
            "podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 50, "podAffinityTerm": {"labelSelector": own,
                    "topologyKey": "kubernetes.io/hostname"}}]}});
    }
    p
}

/// This process's resident set size, from /proc/self/status (Linux only).
fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn growth(before: Option<u64>) -> Option<u64> {
    rss_bytes()
        .zip(before)
        .map(|(now, then)| now.saturating_sub(then))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_come_from_the_sorted_per_second_rates() {
        let run = SchedulerBenchRun {
            arrival: Arrival::Streaming,
            nodes: 1,
            pods: 10,
            elapsed: Duration::from_secs(5),
            create_elapsed: Duration::from_secs(4),
            per_second: vec![5, 1, 3, 2, 4],
            stats: SchedulerStats::default(),
            rss_nodes_bytes: None,
            rss_run_bytes: None,
        };
        assert_eq!(run.percentile(0.5), 3);
        assert_eq!(run.percentile(0.99), 5);
        assert_eq!(run.min(), 1);
        assert_eq!(run.average(), 2.0);
    }

    #[test]
    fn per_second_rates_slide_over_the_samples() {
        // 100 ms samples, 25 binds each, for 1.5 s: six whole-second windows.
        let samples: Vec<u64> = (0..=15).map(|i| i * 25).collect();
        assert_eq!(window_rates(&samples), vec![250; 6]);
        // Shorter than a second: its rate, scaled to a second.
        assert_eq!(window_rates(&[0, 10, 20, 30, 40, 50]), vec![100]);
    }

    #[test]
    fn rss_is_readable_on_linux() {
        assert!(rss_bytes().is_some_and(|b| b > 0));
    }

    #[actix_rt::test]
    async fn small_runs_bind_every_pod_both_ways() {
        for arrival in [Arrival::Streaming, Arrival::Backlog] {
            let run = run_one(20, 200, arrival, SchedulerConfig::default())
                .await
                .expect("bench run");
            assert_eq!(run.stats.scheduled, 200, "{arrival}");
            assert_eq!(run.stats.queue.unschedulable, 0, "{arrival}");
        }
    }
}
