//! End to end on the real Docker Engine: kubectl applies a ReplicationController of busybox
//! httpd pods on a 3-node cluster; each pod runs on its own node and answers on its pod IP.

use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use skiff_integration::{call, client, eventually, node_names, DockerCleanup, TestCluster};

const RC: &str = r#"apiVersion: v1
kind: ReplicationController
metadata:
  name: web
spec:
  replicas: 3
  selector:
    app: web
  template:
    metadata:
      labels:
        app: web
    spec:
      terminationGracePeriodSeconds: 2
      containers:
      - name: httpd
        image: skiff/busybox:latest
        imagePullPolicy: Never
        command: ["sh", "-c", "mkdir -p /www && echo $POD_NAME > /www/index.html && exec httpd -f -p 8080 -h /www"]
        env:
        - name: POD_NAME
          valueFrom:
            fieldRef:
              fieldPath: metadata.name
        ports:
        - containerPort: 8080
"#;

#[test]
fn kubectl_apply_rc_runs_one_httpd_pod_per_node_answering_on_its_ip() {
    skiff_integration::require_docker();
    let names = node_names("e2e", 3);
    let _cleanup = DockerCleanup::new(&names);
    let c = TestCluster::with_docker_nodes(&names);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rc.yaml");
    std::fs::write(&file, RC).unwrap();
    let out = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&c.kubeconfig)
        .args(["apply", "-f"])
        .arg(&file)
        .output()
        .expect("kubectl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let pods: Vec<Value> = rt.block_on(eventually(
        Duration::from_secs(120),
        "3 Running pods",
        || async {
            let (_, list) = call(
                client().get(c.url("/api/v1/namespaces/default/pods?labelSelector=app%3Dweb")),
            )
            .await;
            let items = list["items"].as_array().cloned().unwrap_or_default();
            let running = items
                .iter()
                .filter(|p| p["status"]["phase"] == "Running" && p["status"]["podIP"].is_string())
                .count();
            (items.len() == 3 && running == 3).then_some(items)
        },
    ));
    let mut on: Vec<&str> = pods
        .iter()
        .filter_map(|p| p["spec"]["nodeName"].as_str())
        .collect();
    on.sort();
    on.dedup();
    assert_eq!(on.len(), 3, "one pod per node: {on:?}");
    for p in &pods {
        let ip = p["status"]["podIP"].as_str().unwrap();
        let name = p["metadata"]["name"].as_str().unwrap();
        let body = rt.block_on(eventually(
            Duration::from_secs(30),
            "httpd answering",
            || async {
                let resp = client()
                    .get(format!("http://{ip}:8080/"))
                    .send()
                    .await
                    .ok()?;
                resp.text().await.ok()
            },
        ));
        assert_eq!(body.trim(), name, "pod {name} at {ip} serves its own name");
    }

    // kubectl logs reads what the container printed (httpd -f logs nothing; use a one-off pod).
    let out = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&c.kubeconfig)
        .args([
            "run",
            "hello",
            "--image=skiff/busybox:latest",
            "--image-pull-policy=Never",
            "--restart=Never",
            "--",
            "sh",
            "-c",
            "echo hello from skiff",
        ])
        .output()
        .expect("kubectl run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let logs = rt.block_on(eventually(
        Duration::from_secs(60),
        "logs of hello",
        || async {
            let out = Command::new("kubectl")
                .arg("--kubeconfig")
                .arg(&c.kubeconfig)
                .args(["logs", "hello"])
                .output()
                .ok()?;
            let text = String::from_utf8_lossy(&out.stdout).to_string();
            text.contains("hello from skiff").then_some(text)
        },
    ));
    assert_eq!(logs.trim(), "hello from skiff");
    drop(c);
}
