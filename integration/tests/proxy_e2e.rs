//! Services reachable from outside, on the real Docker Engine: a NodePort service over a
//! ReplicationController's httpd pods on 3 nodes, load-balanced by the node proxy.

use std::collections::HashMap;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use skiff_integration::{call, client, eventually, node_names, DockerCleanup, TestCluster};

const PODS: &str = "/api/v1/namespaces/default/pods";

fn rc(replicas: u32) -> Value {
    json!({"apiVersion": "v1", "kind": "ReplicationController", "metadata": {"name": "web"},
        "spec": {"replicas": replicas, "selector": {"app": "web"}, "template": {
            "metadata": {"labels": {"app": "web"}},
            "spec": {"terminationGracePeriodSeconds": 3, "containers": [{
                "name": "httpd", "image": "skiff/busybox:latest", "imagePullPolicy": "Never",
                "command": ["sh", "-c", "mkdir -p /www && echo $POD_NAME > /www/index.html && exec httpd -f -p 8080 -h /www"],
                "env": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
                "ports": [{"containerPort": 8080}],
                "readinessProbe": {"httpGet": {"path": "/", "port": 8080}, "periodSeconds": 1}}]}}}})
}

/// One request on a fresh connection (so every request is balanced anew).
async fn get(http: &reqwest::Client, url: &str) -> Option<String> {
    let resp = http.get(url).send().await.ok()?;
    if !resp.status().is_success() {
        return None;
    }
    resp.text().await.ok().map(|t| t.trim().to_string())
}

#[test]
fn node_port_service_balances_over_pods_and_survives_pod_deletion() {
    skiff_integration::require_docker();
    let names = node_names("px", 3);
    let _cleanup = DockerCleanup::new(&names);
    let c = TestCluster::with_docker_nodes(&names);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    rt.block_on(async {
        let (code, body) = call(
            client()
                .post(c.url("/api/v1/namespaces/default/replicationcontrollers"))
                .json(&rc(3)),
        )
        .await;
        assert_eq!(code, 201, "{body}");
    });
    // kubectl expose, as a user would.
    let out = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&c.kubeconfig)
        .args([
            "expose",
            "rc",
            "web",
            "--port=80",
            "--target-port=8080",
            "--type=NodePort",
        ])
        .output()
        .expect("kubectl expose");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let svc = rt.block_on(async {
        call(client().get(c.url("/api/v1/namespaces/default/services/web")))
            .await
            .1
    });
    assert!(
        svc["spec"]["clusterIP"]
            .as_str()
            .unwrap()
            .starts_with("10.96."),
        "{svc}"
    );
    let node_port = svc["spec"]["ports"][0]["nodePort"].as_u64().unwrap();
    assert!((30000..=32767).contains(&node_port));
    let url = format!("http://127.0.0.1:{node_port}/");

    let ready_names = |n: usize| {
        let c = &c;
        async move {
            eventually(Duration::from_secs(120), "ready endpoints", || async {
                let (_, ep) =
                    call(client().get(c.url("/api/v1/namespaces/default/endpoints/web"))).await;
                let count = ep["subsets"]
                    .as_array()
                    .map(|s| {
                        s.iter()
                            .map(|x| x["addresses"].as_array().map(Vec::len).unwrap_or(0))
                            .sum::<usize>()
                    })
                    .unwrap_or(0);
                (count == n).then_some(())
            })
            .await;
        }
    };
    rt.block_on(ready_names(3));

    // 300 requests reach all three pods, each within ±20% of a third.
    let counts = rt.block_on(async {
        let mut counts: HashMap<String, usize> = HashMap::new();
        for _ in 0..300 {
            let name = eventually(Duration::from_secs(10), "a response", || get(&http, &url)).await;
            *counts.entry(name).or_default() += 1;
        }
        counts
    });
    assert_eq!(counts.len(), 3, "{counts:?}");
    for (pod, n) in &counts {
        assert!(
            (80..=120).contains(n),
            "pod {pod} got {n} of 300: {counts:?}"
        );
    }

    // Scaling to 5 brings the new pods into rotation once they are ready.
    rt.block_on(async {
        call(
            client()
                .patch(c.url("/api/v1/namespaces/default/replicationcontrollers/web/scale"))
                .header("content-type", "application/merge-patch+json")
                .body(r#"{"spec":{"replicas":5}}"#),
        )
        .await;
    });
    rt.block_on(ready_names(5));
    let seen = rt.block_on(async {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..100 {
            if let Some(n) = get(&http, &url).await {
                seen.insert(n);
            }
        }
        seen
    });
    assert_eq!(seen.len(), 5, "{seen:?}");

    // Delete a pod under a steady stream of requests: at most the requests in flight at
    // that moment may fail.
    let clients = 4usize;
    let (ok, failed, stop) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicBool::new(false)),
    );
    rt.block_on(async {
        let mut tasks = Vec::new();
        for _ in 0..clients {
            let (http, url, ok, failed, stop) = (
                http.clone(),
                url.clone(),
                ok.clone(),
                failed.clone(),
                stop.clone(),
            );
            tasks.push(tokio::spawn(async move {
                for _ in 0..5_000 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    match get(&http, &url).await {
                        Some(_) => ok.fetch_add(1, Ordering::Relaxed),
                        None => failed.fetch_add(1, Ordering::Relaxed),
                    };
                }
            }));
        }
        eventually(
            Duration::from_secs(20),
            "the stream to be flowing",
            || async { (ok.load(Ordering::Relaxed) >= 50).then_some(()) },
        )
        .await;
        let (_, pods) = call(client().get(c.url(&format!("{PODS}?labelSelector=app%3Dweb")))).await;
        let victim = pods["items"][0]["metadata"]["name"]
            .as_str()
            .unwrap()
            .to_string();
        call(client().delete(c.url(&format!("{PODS}/{victim}")))).await;
        eventually(
            Duration::from_secs(60),
            "victim gone and replaced",
            || async {
                let (code, _) = call(client().get(c.url(&format!("{PODS}/{victim}")))).await;
                (code == 404).then_some(())
            },
        )
        .await;
        let served = ok.load(Ordering::Relaxed);
        eventually(
            Duration::from_secs(20),
            "requests served after the deletion",
            || async { (ok.load(Ordering::Relaxed) >= served + 50).then_some(()) },
        )
        .await;
        stop.store(true, Ordering::Relaxed);
        for t in tasks {
            let _ = t.await;
        }
    });
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    assert!(ok > 100, "only {ok} requests succeeded");
    assert!(
        failed <= clients,
        "{failed} requests failed (more than the {clients} in flight), {ok} succeeded"
    );

    // Deleting the service frees the port.
    rt.block_on(async {
        call(client().delete(c.url("/api/v1/namespaces/default/services/web"))).await;
        eventually(Duration::from_secs(20), "node port freed", || async {
            std::net::TcpListener::bind(("127.0.0.1", node_port as u16))
                .ok()
                .map(|_| ())
        })
        .await;
    });
}
