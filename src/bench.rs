//! `skiff bench`: create pods through the HTTP API with concurrent clients and report
//! throughput and latency. Every create is acknowledged only after its WAL sync.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("HTTP client setup failed")]
    Client(#[source] reqwest::Error),
    #[error("create of pod {index} failed: {detail}")]
    Create { index: usize, detail: String },
    #[error("namespace setup failed: {0}")]
    Namespace(String),
}

pub struct BenchReport {
    pub pods: usize,
    pub concurrency: usize,
    pub elapsed: Duration,
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
}

impl BenchReport {
    pub fn per_second(&self) -> f64 {
        self.pods as f64 / self.elapsed.as_secs_f64()
    }
}

impl std::fmt::Display for BenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "created {} pods with {} clients in {:.2}s: {:.0} creates/s, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            self.pods,
            self.concurrency,
            self.elapsed.as_secs_f64(),
            self.per_second(),
            self.p50.as_secs_f64() * 1e3,
            self.p99.as_secs_f64() * 1e3,
            self.max.as_secs_f64() * 1e3,
        )
    }
}

fn pod(namespace: &str, i: usize) -> serde_json::Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": format!("bench-{i}"), "namespace": namespace, "labels": {"app": "bench"}},
        "spec": {"containers": [{"name": "app", "image": "busybox:1.36",
            "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]},
    })
}

/// Create `pods` pods in a fresh namespace of the cluster at `base` with `concurrency`
/// clients.
pub async fn run(base: &str, pods: usize, concurrency: usize) -> Result<BenchReport, BenchError> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()
        .map_err(BenchError::Client)?;
    let namespace = format!("bench-{}", std::process::id());
    let resp = client
        .post(format!("{base}/api/v1/namespaces"))
        .json(&json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}))
        .send()
        .await
        .map_err(|e| BenchError::Namespace(e.to_string()))?;
    if !resp.status().is_success() && resp.status().as_u16() != 409 {
        return Err(BenchError::Namespace(format!("HTTP {}", resp.status())));
    }
    let next = Arc::new(AtomicUsize::new(0));
    let url = Arc::new(format!("{base}/api/v1/namespaces/{namespace}/pods"));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..concurrency.max(1) {
        let (client, next, url, namespace) =
            (client.clone(), next.clone(), url.clone(), namespace.clone());
        workers.push(actix_rt::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= pods {
                    return Ok(latencies);
                }
                let body = serde_json::to_vec(&pod(&namespace, i)).unwrap_or_default();
                let t = Instant::now();
                let resp = client
                    .post(url.as_str())
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await
                    .map_err(|e| BenchError::Create {
                        index: i,
                        detail: e.to_string(),
                    })?;
                if resp.status().as_u16() != 201 {
                    return Err(BenchError::Create {
                        index: i,
                        detail: format!("HTTP {}", resp.status()),
                    });
                }
                latencies.push(t.elapsed());
            }
        }));
    }
    let mut all = Vec::with_capacity(pods);
    for w in workers {
        match w.await {
            Ok(Ok(l)) => all.extend(l),
            Ok(Err(e)) => return Err(e),
            Err(e) => {
                return Err(BenchError::Create {
                    index: 0,
                    detail: e.to_string(),
                })
            }
        }
    }
    let elapsed = started.elapsed();
    all.sort();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    Ok(BenchReport {
        pods,
        concurrency,
        elapsed,
        p50: pct(0.50),
        p99: pct(0.99),
        max: all.last().copied().unwrap_or_default(),
    })
}
