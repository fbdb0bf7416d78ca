//! `skiff bench-hollow`: how much memory a hollow node costs — a cluster with N simulated
//! nodes (kubelet + proxy each, containers simulated) against the same cluster with none.

use std::time::{Duration, Instant};

use skiff_actors::client::{ApiClient, HttpClient, ListParams};

use crate::config::{Config, NodeConfig};
use crate::system;

#[derive(Debug, thiserror::Error)]
pub enum HollowBenchError {
    #[error("cluster: {0}")]
    System(#[from] system::SystemError),
    #[error("API: {0}")]
    Api(#[from] skiff_actors::api::ApiError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("only {ready} of {want} nodes registered within {limit:?}")]
    Timeout {
        ready: usize,
        want: usize,
        limit: Duration,
    },
}

/// Resident memory of this process, from /proc.
fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

fn config(dir: &std::path::Path, nodes: usize) -> Result<Config, std::io::Error> {
    let mut cfg = Config::load(None).map_err(|e| std::io::Error::other(e.to_string()))?;
    cfg.cluster.data_dir = dir.to_path_buf();
    cfg.cluster.manifests_dir = None;
    cfg.gateway.listen = "127.0.0.1:0".into();
    // Measured through a plain HTTP client: TLS is not what this benchmark is about.
    cfg.gateway.insecure_http = true;
    cfg.nodes = (0..nodes)
        .map(|i| NodeConfig {
            name: format!("hollow-{i}"),
            runtime: "sim".into(),
            heartbeat_seconds: 30,
            address: Some("127.0.0.1".into()),
            server_port: 0,
            ..NodeConfig::default()
        })
        .collect();
    Ok(cfg)
}

/// Start N hollow nodes, wait until all are registered, report memory per node.
pub async fn run(nodes: usize) -> Result<String, HollowBenchError> {
    let base_dir = tempfile::tempdir()?;
    let base = system::start(&config(base_dir.path(), 0)?).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = rss_bytes();
    base.shutdown().await;

    let dir = tempfile::tempdir()?;
    let started = Instant::now();
    let sys = system::start(&config(dir.path(), nodes)?).await?;
    let api = HttpClient::new(sys.url())?;
    let limit = Duration::from_secs(300);
    let ready = loop {
        let n = api
            .list("nodes", None, &ListParams::default())
            .await?
            .items
            .len();
        if n >= nodes {
            break n;
        }
        if started.elapsed() > limit {
            sys.shutdown().await;
            return Err(HollowBenchError::Timeout {
                ready: n,
                want: nodes,
                limit,
            });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let registered = started.elapsed();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = rss_bytes();
    sys.shutdown().await;
    let per_node = after.saturating_sub(before) as f64 / nodes.max(1) as f64;
    Ok(format!(
        "{ready} hollow nodes registered in {:.1}s; process RSS {:.1} MiB with them vs {:.1} MiB without: {:.0} KiB per hollow node (kubelet + proxy + simulated runtime)\n",
        registered.as_secs_f64(),
        after as f64 / 1048576.0,
        before as f64 / 1048576.0,
        per_node / 1024.0
    ))
}
