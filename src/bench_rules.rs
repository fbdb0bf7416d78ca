//! `skiff bench-rules`: how long the kernel proxy takes to sync a large cluster's Services:
//! N Services of M endpoints (as EndpointSlices), turned into one nftables ruleset and
//! applied with one `nft -f` transaction, as the proxy does on every change; then one
//! endpoint changed and the whole ruleset synced again. The table is the benchmark's own
//! and is deleted at the end. Needs root and nft.

use std::fmt::Write as _;
use std::io::Write as _;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use skiff_actors::proxy::{kernel, slices};

const TABLE: &str = "skiff-bench";
const CIDR: &str = "10.200.0.0/16";

#[derive(Debug, thiserror::Error)]
pub enum RulesBenchError {
    #[error("nft could not be run: {0}")]
    Spawn(#[from] std::io::Error),
    #[error("nft refused the ruleset: {0}")]
    Nft(String),
}

fn service(i: usize) -> Value {
    json!({"metadata": {"namespace": "bench", "name": format!("svc-{i}")},
        "spec": {"clusterIP": format!("10.200.{}.{}", i / 250, i % 250 + 1),
            "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}})
}

fn slice(i: usize, endpoints: usize, generation: usize) -> Arc<Value> {
    let eps: Vec<Value> = (0..endpoints)
        .map(|j| {
            let n = i * endpoints + j + generation;
            json!({"addresses": [format!("10.{}.{}.{}", 100 + n / 62_500, (n / 250) % 250, n % 250 + 1)],
                "conditions": {"ready": true}})
        })
        .collect();
    Arc::new(
        json!({"metadata": {"namespace": "bench", "name": format!("svc-{i}-x"),
            "labels": {"kubernetes.io/service-name": format!("svc-{i}")}},
        "addressType": "IPv4", "endpoints": eps,
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]}),
    )
}

/// What the proxy does per sync: read every Service's slices, build the text.
fn build(services: &[Value], slices_of: &[Arc<Value>]) -> String {
    let by = slices::by_service(slices_of);
    let ports: Vec<kernel::ServicePort> = services
        .iter()
        .flat_map(|s| {
            let key = format!(
                "bench/{}",
                s["metadata"]["name"].as_str().unwrap_or_default()
            );
            let eps = by
                .get(&key)
                .map(|l| slices::endpoints(l))
                .unwrap_or_default();
            kernel::service_ports(s, &eps)
        })
        .collect();
    kernel::ruleset(TABLE, CIDR, &ports)
}

fn apply(text: &str) -> Result<(), RulesBenchError> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(text.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(RulesBenchError::Nft(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ))
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

pub fn run(services: usize, endpoints: usize) -> Result<String, RulesBenchError> {
    let svcs: Vec<Value> = (0..services).map(service).collect();
    let mut report = String::new();
    let result = (|| {
        for (label, generation) in [("first sync", 0), ("one endpoint changed", 1)] {
            let mut list: Vec<Arc<Value>> = (0..services).map(|i| slice(i, endpoints, 0)).collect();
            if generation > 0 {
                list[0] = slice(0, endpoints, services * endpoints);
            }
            let t0 = Instant::now();
            let text = build(&svcs, &list);
            let built = t0.elapsed();
            let t1 = Instant::now();
            apply(&text)?;
            let applied = t1.elapsed();
            let _ = writeln!(
                report,
                "{label}: {services} Services x {endpoints} endpoints, {} KiB of rules: built in {:.1} ms, applied in {:.1} ms, {:.1} ms in all",
                text.len() / 1024,
                ms(built),
                ms(applied),
                ms(built + applied)
            );
        }
        Ok(())
    })();
    let _ = Command::new("nft")
        .args(["delete", "table", "ip", TABLE])
        .stderr(Stdio::null())
        .status();
    result.map(|()| report)
}
