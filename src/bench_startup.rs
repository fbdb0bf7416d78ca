//! `skiff bench-startup`: pod startup latency on one Docker node — create to Running seen
//! through a watch — for a burst of pods, next to the same containers started straight
//! through the Docker Engine API (a pause container plus the app container joined to its
//! network, per pod, all at once): the floor this machine allows.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{json, Value};
use skiff_actors::client::{ApiClient, EventKind, HttpClient, ListParams};
use skiff_actors::kubelet::runtime::docker::DockerRuntime;
use skiff_actors::kubelet::runtime::{images, ContainerSpec, PodRef, Runtime, SandboxSpec};

use crate::config::{Config, NodeConfig};
use crate::system;

#[derive(Debug, thiserror::Error)]
pub enum StartupBenchError {
    #[error("cluster: {0}")]
    System(#[from] system::SystemError),
    #[error("API: {0}")]
    Api(#[from] skiff_actors::api::ApiError),
    #[error("runtime: {0}")]
    Runtime(#[from] skiff_actors::kubelet::runtime::RuntimeError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("pods did not all reach Running within {0:?}")]
    Timeout(Duration),
}

pub struct Latencies(Vec<Duration>);

impl Latencies {
    fn pct(&self, p: f64) -> Duration {
        let mut v = self.0.clone();
        v.sort();
        v.get(((v.len() as f64 * p).ceil() as usize).saturating_sub(1))
            .copied()
            .unwrap_or_default()
    }
}

impl std::fmt::Display for Latencies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "p50 {:.0} ms, p99 {:.0} ms",
            self.pct(0.50).as_secs_f64() * 1e3,
            self.pct(0.99).as_secs_f64() * 1e3
        )
    }
}

/// Pods through skiff: create all at once, time each until a watch shows it Running.
async fn through_skiff(pods: usize) -> Result<Latencies, StartupBenchError> {
    let dir = tempfile::tempdir()?;
    let node = format!("bench-start-{}", std::process::id());
    let mut cfg = Config::load(None).map_err(|e| std::io::Error::other(e.to_string()))?;
    cfg.cluster.data_dir = dir.path().to_path_buf();
    cfg.cluster.manifests_dir = None;
    cfg.gateway.listen = "127.0.0.1:0".into();
    // Measured through a plain HTTP client: TLS is not what this benchmark is about.
    cfg.gateway.insecure_http = true;
    cfg.nodes = vec![NodeConfig {
        name: node.clone(),
        server_port: 0,
        ..NodeConfig::default()
    }];
    let sys = system::start(&cfg).await?;
    let api = Arc::new(HttpClient::new(sys.url())?);
    // Wait for the node to be registered and Ready before timing anything.
    let deadline = Instant::now() + Duration::from_secs(30);
    while api.get("nodes", None, &node).await.is_err() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let rev = api
        .list("pods", Some("default"), &ListParams::default())
        .await?
        .resource_version;
    let mut watch = api
        .watch(
            "pods",
            Some("default"),
            &ListParams::labels("bench=startup"),
            rev,
        )
        .await?;
    let mut created = std::collections::HashMap::new();
    let mut creates = Vec::new();
    for i in 0..pods {
        let api = api.clone();
        creates.push(actix_rt::spawn(async move {
            let pod = json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": format!("start-{i}"), "labels": {"bench": "startup"}},
                "spec": {"terminationGracePeriodSeconds": 1, "containers": [{"name": "app", "image": images::BUSYBOX_IMAGE,
                    "imagePullPolicy": "Never", "command": ["sleep", "3600"]}]}});
            let t = Instant::now();
            api.create("pods", Some("default"), pod).await.map(|_| (format!("start-{i}"), t))
        }));
    }
    for c in creates {
        if let Ok(Ok((name, t))) = c.await {
            created.insert(name, t);
        }
    }
    let mut running = std::collections::HashMap::new();
    let limit = Duration::from_secs(120);
    let deadline = Instant::now() + limit;
    while running.len() < pods {
        let next = tokio::time::timeout_at(deadline.into(), watch.next()).await;
        let Ok(Some(Ok(ev))) = next else { break };
        if ev.kind == EventKind::Deleted
            || ev.object.pointer("/status/phase").and_then(Value::as_str) != Some("Running")
        {
            continue;
        }
        let name = ev
            .object
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        if let Some(t) = created.get(&name) {
            running.entry(name).or_insert_with(|| t.elapsed());
        }
    }
    sys.shutdown().await;
    DockerRuntime::connect()
        .await?
        .remove_node_containers(&node)
        .await?;
    if running.len() < pods {
        return Err(StartupBenchError::Timeout(limit));
    }
    Ok(Latencies(running.into_values().collect()))
}

/// The floor: the same containers started straight through the engine API, all at once.
async fn direct(pods: usize) -> Result<Latencies, StartupBenchError> {
    let runtime = Arc::new(DockerRuntime::connect().await?);
    images::ensure_pause_image(runtime.docker()).await?;
    let node = format!("bench-direct-{}", std::process::id());
    let mut tasks = Vec::new();
    for i in 0..pods {
        let (runtime, node) = (runtime.clone(), node.clone());
        tasks.push(actix_rt::spawn(async move {
            let pod = PodRef {
                uid: format!("direct-{i}"),
                name: format!("direct-{i}"),
                namespace: "bench".into(),
                node,
            };
            let t = Instant::now();
            let sandbox = runtime
                .run_sandbox(&SandboxSpec {
                    pod: pod.clone(),
                    hostname: pod.name.clone(),
                    host_ports: vec![],
                    ..Default::default()
                })
                .await?;
            runtime
                .start_container(&ContainerSpec {
                    pod: Some(pod),
                    name: "app".into(),
                    image: images::BUSYBOX_IMAGE.into(),
                    command: vec!["sleep".into(), "3600".into()],
                    sandbox_id: sandbox.id,
                    ..ContainerSpec::default()
                })
                .await?;
            Ok::<_, StartupBenchError>(t.elapsed())
        }));
    }
    let mut out = Vec::new();
    let mut first_err = None;
    for t in tasks {
        match t.await {
            Ok(Ok(d)) => out.push(d),
            Ok(Err(e)) => first_err = first_err.or(Some(e)),
            Err(e) => {
                first_err = first_err.or(Some(StartupBenchError::Io(std::io::Error::other(
                    e.to_string(),
                ))))
            }
        }
    }
    runtime.remove_node_containers(&node).await?;
    match first_err {
        Some(e) => Err(e),
        None => Ok(Latencies(out)),
    }
}

/// Both measurements, direct first, as one report line each.
pub async fn run(pods: usize) -> Result<String, StartupBenchError> {
    let floor = direct(pods).await?;
    let skiff = through_skiff(pods).await?;
    let ratio = skiff.pct(0.99).as_secs_f64() / floor.pct(0.99).as_secs_f64().max(1e-9);
    Ok(format!(
        "{pods} pods at once on one Docker node\n  direct through the engine API (pause + app): {floor}\n  through skiff (create to Running seen by a watch): {skiff}\n  skiff p99 / direct p99: {ratio:.2}x\n"
    ))
}
