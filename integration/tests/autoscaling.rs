//! Autoscaling end to end: kubelets sample their pods' usage, `kubectl top` reads it
//! through metrics.k8s.io, and an HPA made with `kubectl autoscale` scales a replication
//! controller up under load and back down once the stabilisation window has passed. Once
//! on hollow nodes whose usage the test sets, once on the real Docker Engine with pods
//! that burn CPU on request.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use skiff::config::{Config, NodeConfig};
use skiff_actors::kubelet::runtime::sim::SimUsage;
use skiff_actors::store::WriteOp;
use skiff_integration::{
    call, client, eventually, eventually_blocking, node_names, python_client, DockerCleanup,
    TestCluster,
};

const SYNC: Duration = Duration::from_secs(2);
const WINDOW: Duration = Duration::from_secs(10);

fn kubectl(kubeconfig: &Path, args: &[&str]) -> (bool, String, String) {
    let (code, out, err) = skiff_integration::kubectl(kubeconfig, args);
    (code == 0, out, err)
}

fn kubectl_ok(kubeconfig: &Path, args: &[&str]) -> String {
    let (ok, stdout, stderr) = kubectl(kubeconfig, args);
    assert!(ok, "kubectl {args:?} failed: {stderr}\n{stdout}");
    stdout
}

/// Short periods so that a test sees several syncs and a whole window in seconds.
fn fast_autoscaling(cfg: &mut Config, nodes: &[String], runtime: &str) {
    cfg.controllers.hpa_sync_period_seconds = SYNC.as_secs();
    cfg.gateway.metrics_resolution_seconds = 1;
    cfg.controllers.hpa_downscale_stabilization_seconds = WINDOW.as_secs();
    cfg.nodes = nodes
        .iter()
        .map(|n| NodeConfig {
            name: n.clone(),
            runtime: runtime.into(),
            heartbeat_seconds: 2,
            stats_interval_seconds: 1,
            ..NodeConfig::default()
        })
        .collect();
}

/// An RC of one busybox pod requesting 100m CPU, running `script`.
fn rc(name: &str, cpu_request: Option<&str>, script: &str) -> Value {
    let resources = match cpu_request {
        Some(cpu) => json!({"requests": {"cpu": cpu}}),
        None => json!({}),
    };
    json!({
        "apiVersion": "v1",
        "kind": "ReplicationController",
        "metadata": {"name": name},
        "spec": {
            "replicas": 1,
            "selector": {"app": name},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "terminationGracePeriodSeconds": 1,
                    "containers": [{
                        "name": "app",
                        "image": "skiff/busybox:latest",
                        "imagePullPolicy": "Never",
                        "command": ["sh", "-c", script],
                        "ports": [{"containerPort": 8080}],
                        "resources": resources,
                    }],
                },
            },
        },
    })
}

async fn create(c: &TestCluster, path: &str, body: &Value) {
    let (code, resp) = call(client().post(c.url(path)).json(body)).await;
    assert_eq!(code, 201, "create {path}: {resp}");
}

async fn rc_replicas(c: &TestCluster, name: &str) -> i64 {
    let (_, rc) = call(client().get(c.url(&format!(
        "/api/v1/namespaces/default/replicationcontrollers/{name}"
    ))))
    .await;
    rc["spec"]["replicas"].as_i64().unwrap_or(-1)
}

async fn hpa(c: &TestCluster, name: &str) -> Value {
    let (code, hpa) = call(client().get(c.url(&format!(
        "/apis/autoscaling/v1/namespaces/default/horizontalpodautoscalers/{name}"
    ))))
    .await;
    assert_eq!(code, 200, "{hpa}");
    hpa
}

/// The HPA's condition of `kind`, from the annotation autoscaling/v1 keeps them in.
fn condition(hpa: &Value, kind: &str) -> Option<Value> {
    let text =
        hpa["metadata"]["annotations"]["autoscaling.alpha.kubernetes.io/conditions"].as_str()?;
    let conds: Vec<Value> = serde_json::from_str(text).ok()?;
    conds.into_iter().find(|c| c["type"] == kind)
}

async fn events_for(c: &TestCluster, name: &str) -> Vec<Value> {
    let (_, list) = call(client().get(c.url(&format!(
        "/api/v1/namespaces/default/events?fieldSelector=involvedObject.name%3D{name},involvedObject.kind%3DHorizontalPodAutoscaler"
    ))))
    .await;
    list["items"].as_array().cloned().unwrap_or_default()
}

async fn running_pods(c: &TestCluster, app: &str) -> Vec<Value> {
    let (_, list) = call(client().get(c.url(&format!(
        "/api/v1/namespaces/default/pods?labelSelector=app%3D{app}"
    ))))
    .await;
    list["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|p| {
            p["status"]["phase"] == "Running"
                && p["metadata"]["deletionTimestamp"].is_null()
                && p["status"]["podIP"].is_string()
        })
        .collect()
}

/// CPU millicores `kubectl top pod <name>` shows, once it shows any.
fn top_pod_millis(kubeconfig: &Path, pod: &str) -> Option<u64> {
    let (ok, stdout, _) = kubectl(kubeconfig, &["top", "pod", pod, "--no-headers"]);
    if !ok {
        return None;
    }
    let cpu = stdout.split_whitespace().nth(1)?;
    cpu.strip_suffix('m')
        .and_then(|m| m.parse().ok())
        .or_else(|| cpu.parse::<u64>().ok().map(|cores| cores * 1000))
}

/// `kubectl autoscale` makes an HPA against our discovery.
fn autoscale(kubeconfig: &Path, rc: &str, max: u32) {
    let out = kubectl_ok(
        kubeconfig,
        &[
            "autoscale",
            "rc",
            rc,
            "--min=1",
            &format!("--max={max}"),
            "--cpu-percent=50",
        ],
    );
    assert!(out.contains("autoscaled"), "{out}");
}

#[test]
fn hollow_node_pods_under_simulated_load_scale_up_and_back_down_after_the_window() {
    let nodes = node_names("hpa-sim", 2);
    let c = TestCluster::start_with(|cfg| fast_autoscaling(cfg, &nodes, "sim"));
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(create(
        &c,
        "/api/v1/namespaces/default/replicationcontrollers",
        &rc("web", Some("100m"), "sleep 3600"),
    ));
    autoscale(&c.kubeconfig, "web", 3);
    let created = rt.block_on(hpa(&c, "web"));
    assert_eq!(created["apiVersion"], "autoscaling/v1");
    assert_eq!(created["spec"]["targetCPUUtilizationPercentage"], 50);

    // Idle pods: the HPA sees 0% and stays at the minimum.
    rt.block_on(eventually(
        Duration::from_secs(30),
        "the HPA to report 0% on one replica",
        || async {
            let h = hpa(&c, "web").await;
            (h["status"]["currentCPUUtilizationPercentage"] == 0
                && h["status"]["currentReplicas"] == 1)
                .then_some(())
        },
    ));

    // Every pod (and every new one) uses 200m of its 100m request: 200% against 50%.
    let busy = SimUsage {
        cpu_millis: 200,
        memory_bytes: 16 << 20,
    };
    for n in &nodes {
        c.sim(n).expect("sim node").set_default_usage(busy);
    }
    let pod = rt.block_on(running_pods(&c, "web")).remove(0);
    let pod_name = pod["metadata"]["name"].as_str().expect("name").to_string();
    let shown = eventually_blocking(
        Duration::from_secs(20),
        "kubectl top to show the load",
        || top_pod_millis(&c.kubeconfig, &pod_name).filter(|m| *m >= 150),
    );
    assert!(shown <= 250, "top shows {shown}m for a pod using 200m");
    let loaded = Instant::now();
    rt.block_on(eventually(
        2 * SYNC + Duration::from_secs(2),
        "the HPA to scale the RC to its maximum of 3 within two sync periods",
        || async { (rc_replicas(&c, "web").await == 3).then_some(()) },
    ));
    eprintln!(
        "scaled up {:?} after kubectl top showed the load",
        loaded.elapsed()
    );
    // The status and conditions follow the scale write.
    let h = rt.block_on(eventually(
        Duration::from_secs(10),
        "the HPA status to show the scale-up",
        || async {
            let h = hpa(&c, "web").await;
            (h["status"]["desiredReplicas"] == 3 && h["status"]["lastScaleTime"].is_string())
                .then_some(h)
        },
    ));
    let limited = condition(&h, "ScalingLimited").expect("ScalingLimited condition");
    assert_eq!(limited["reason"], "TooManyReplicas", "{limited}");
    let events = rt.block_on(events_for(&c, "web"));
    assert!(
        events.iter().any(|e| e["reason"] == "SuccessfulRescale"
            && e["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("New size: 3;"))),
        "{events:?}"
    );
    let table = kubectl_ok(&c.kubeconfig, &["get", "hpa", "web"]);
    assert!(
        table.contains("ReplicationController/web")
            && table.contains("cpu: ")
            && table.contains("/50%"),
        "{table}"
    );
    let described = kubectl_ok(&c.kubeconfig, &["describe", "hpa", "web"]);
    assert!(
        described.contains("SuccessfulRescale") && described.contains("ReplicationController/web"),
        "{described}"
    );
    let nodes_top = kubectl_ok(&c.kubeconfig, &["top", "nodes", "--no-headers"]);
    assert!(
        nodes.iter().all(|n| nodes_top.contains(n.as_str())),
        "{nodes_top}"
    );

    // The load stops: the scale-down waits for the stabilisation window, then goes to 1.
    let idle = SimUsage {
        cpu_millis: 5,
        memory_bytes: 16 << 20,
    };
    for n in &nodes {
        c.sim(n).expect("sim node").set_default_usage(idle);
    }
    let dropped = Instant::now();
    rt.block_on(eventually(
        WINDOW + 4 * SYNC + Duration::from_secs(5),
        "the HPA to scale back to 1 after the window",
        || async { (rc_replicas(&c, "web").await == 1).then_some(()) },
    ));
    let waited = dropped.elapsed();
    assert!(
        waited >= WINDOW,
        "scaled down after {waited:?}, before the {WINDOW:?} window passed"
    );
    rt.block_on(eventually(
        Duration::from_secs(10),
        "the HPA status to show the scale-down",
        || async { (hpa(&c, "web").await["status"]["desiredReplicas"] == 1).then_some(()) },
    ));
}

#[test]
fn bad_autoscaler_configurations_get_a_condition_and_an_event_and_the_controller_carries_on() {
    let nodes = node_names("hpa-bad", 1);
    let c = TestCluster::start_with(|cfg| fast_autoscaling(cfg, &nodes, "sim"));
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let hpas = "/apis/autoscaling/v1/namespaces/default/horizontalpodautoscalers";
    let hpa_for = |name: &str, kind: &str, target: &str, min: i64, max: i64| {
        json!({"apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": name},
            "spec": {"scaleTargetRef": {"apiVersion": "v1", "kind": kind, "name": target},
                "minReplicas": min, "maxReplicas": max, "targetCPUUtilizationPercentage": 50}})
    };

    // min > max is refused by the API, as Kubernetes does.
    let (code, status) = rt.block_on(call(client().post(c.url(hpas)).json(&hpa_for(
        "inverted",
        "ReplicationController",
        "web",
        5,
        2,
    ))));
    assert_eq!(code, 422, "{status}");
    assert!(
        status["message"]
            .as_str()
            .is_some_and(|m| m.contains("must be greater than or equal to `minReplicas`")),
        "{status}"
    );

    rt.block_on(async {
        create(
            &c,
            hpas,
            &hpa_for("ghost", "ReplicationController", "nope", 1, 3),
        )
        .await;
        create(
            &c,
            hpas,
            &hpa_for("unscalable", "Service", "kubernetes", 1, 3),
        )
        .await;
        create(
            &c,
            "/api/v1/namespaces/default/replicationcontrollers",
            &rc("norequest", None, "sleep 3600"),
        )
        .await;
        create(
            &c,
            hpas,
            &hpa_for("norequest", "ReplicationController", "norequest", 1, 3),
        )
        .await;
    });

    let expect =
        |name: &'static str, kind: &'static str, reason: &'static str, says: &'static str| {
            let c = &c;
            rt.block_on(eventually(
                Duration::from_secs(30),
                &format!("{name}: {kind} False with {reason}"),
                || async move {
                    let h = hpa(c, name).await;
                    let cond = condition(&h, kind)?;
                    let msg = cond["message"].as_str()?.to_string();
                    (cond["status"] == "False" && cond["reason"] == reason && msg.contains(says))
                        .then_some(())
                },
            ));
        };
    expect(
        "ghost",
        "AbleToScale",
        "FailedGetScale",
        "\"nope\" not found",
    );
    expect(
        "unscalable",
        "AbleToScale",
        "FailedGetScale",
        "no scale subresource",
    );
    expect(
        "norequest",
        "ScalingActive",
        "FailedGetResourceMetric",
        "missing request for cpu in container app",
    );
    rt.block_on(async {
        let ghost = events_for(&c, "ghost").await;
        assert!(
            ghost
                .iter()
                .any(|e| e["reason"] == "FailedGetScale" && e["type"] == "Warning"),
            "{ghost:?}"
        );
        let norequest = events_for(&c, "norequest").await;
        assert!(
            norequest
                .iter()
                .any(|e| e["reason"] == "FailedComputeMetricsReplicas"),
            "{norequest:?}"
        );
        // The RC was not touched.
        assert_eq!(rc_replicas(&c, "norequest").await, 1);
    });

    // An inverted HPA already in the store (written before validation refused it) is
    // reported with an Event; the controller does not act on it and keeps going.
    let mut stored = hpa_for("legacy", "ReplicationController", "norequest", 5, 2);
    stored["metadata"] = json!({"name": "legacy", "namespace": "default",
        "uid": "legacy-uid", "creationTimestamp": "2026-01-01T00:00:00Z"});
    rt.block_on(c.store.write(WriteOp::Create {
        key: "horizontalpodautoscalers/default/legacy".into(),
        object: stored,
    }))
    .expect("store write");
    // An HPA an earlier skiff stored as autoscaling/v1 reads in both versions.
    rt.block_on(async {
        let v2 = "/apis/autoscaling/v2/namespaces/default/horizontalpodautoscalers/legacy";
        let (code, h) = call(client().get(c.url(v2))).await;
        assert_eq!(code, 200, "{h}");
        assert_eq!(h["apiVersion"], "autoscaling/v2");
        assert_eq!(
            h["spec"]["metrics"][0]["resource"]["target"],
            json!({"type": "Utilization", "averageUtilization": 50})
        );
        let v1 = hpa(&c, "legacy").await;
        assert_eq!(v1["spec"]["targetCPUUtilizationPercentage"], 50);
        let (_, list) = call(
            client().get(c.url("/apis/autoscaling/v2/namespaces/default/horizontalpodautoscalers")),
        )
        .await;
        assert!(
            list["items"]
                .as_array()
                .is_some_and(|items| items.iter().all(|i| i["spec"]["metrics"].is_array())),
            "{list}"
        );
    });
    rt.block_on(eventually(
        Duration::from_secs(30),
        "an InvalidSpec event for the stored inverted HPA",
        || async {
            let events = events_for(&c, "legacy").await;
            events
                .iter()
                .any(|e| {
                    e["reason"] == "InvalidSpec"
                        && e["message"]
                            .as_str()
                            .is_some_and(|m| m.contains("minReplicas (5)"))
                })
                .then_some(())
        },
    ));
    assert_eq!(rt.block_on(rc_replicas(&c, "norequest")), 1);

    // Fixing the legacy HPA through v2 rewrites it in the stored version.
    rt.block_on(async {
        let path = "/apis/autoscaling/v2/namespaces/default/horizontalpodautoscalers/legacy";
        let patch = json!({"spec": {"maxReplicas": 6}});
        let (code, fixed) = call(
            client()
                .patch(c.url(path))
                .header("Content-Type", "application/merge-patch+json")
                .json(&patch),
        )
        .await;
        assert_eq!(code, 200, "{fixed}");
        assert_eq!(fixed["spec"]["maxReplicas"], 6);
        let stored = c
            .store
            .get("horizontalpodautoscalers/default/legacy")
            .expect("stored");
        assert_eq!(stored.value["apiVersion"], "autoscaling/v2");
        assert_eq!(
            stored.value["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"],
            50
        );
    });

    // The controller is still working: once the missing target appears, the HPA that
    // pointed at nothing gets its scale.
    rt.block_on(create(
        &c,
        "/api/v1/namespaces/default/replicationcontrollers",
        &rc("nope", Some("100m"), "sleep 3600"),
    ));
    rt.block_on(eventually(
        Duration::from_secs(30),
        "ghost to find its target",
        || async {
            let h = hpa(&c, "ghost").await;
            let cond = condition(&h, "AbleToScale")?;
            (cond["status"] == "True" && h["status"]["currentReplicas"] == 1).then_some(())
        },
    ));
}

#[test]
fn docker_pods_burning_cpu_scale_up_and_back_down_and_kubectl_top_shows_them() {
    skiff_integration::require_docker();
    let nodes = node_names("hpa-docker", 1);
    let _cleanup = DockerCleanup::new(&nodes);
    let c = TestCluster::start_with(|cfg| fast_autoscaling(cfg, &nodes, "docker"));
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    // httpd with two CGI scripts: /cgi-bin/start runs a busy loop in the background,
    // /cgi-bin/stop kills it.
    let script = r#"mkdir -p /www/cgi-bin
printf '#!/bin/sh\necho Content-Type: text/plain\necho\nsh -c "while :; do :; done" </dev/null >/dev/null 2>&1 &\necho $! >/tmp/burn.pid\necho started\n' >/www/cgi-bin/start
printf '#!/bin/sh\necho Content-Type: text/plain\necho\nkill $(cat /tmp/burn.pid)\necho stopped\n' >/www/cgi-bin/stop
chmod +x /www/cgi-bin/start /www/cgi-bin/stop
exec httpd -f -p 8080 -h /www"#;
    rt.block_on(create(
        &c,
        "/api/v1/namespaces/default/replicationcontrollers",
        &rc("burn", Some("100m"), script),
    ));
    autoscale(&c.kubeconfig, "burn", 3);
    let pod = rt.block_on(eventually(
        Duration::from_secs(120),
        "the first pod running",
        || async { running_pods(&c, "burn").await.into_iter().next() },
    ));
    let name = pod["metadata"]["name"].as_str().expect("name").to_string();
    let ip = pod["status"]["podIP"].as_str().expect("ip").to_string();
    let get = |script: &str, answer: &str| {
        let url = format!("http://{ip}:8080/cgi-bin/{script}");
        rt.block_on(eventually(
            Duration::from_secs(30),
            &format!("GET {url} to answer {answer}"),
            || async {
                let resp = client().get(&url).send().await.ok()?;
                let text = resp.text().await.ok()?;
                text.contains(answer).then_some(text)
            },
        ))
    };
    // Idle first: kubectl top shows the pod with next to nothing.
    let idle = eventually_blocking(
        Duration::from_secs(30),
        "kubectl top to show the pod",
        || top_pod_millis(&c.kubeconfig, &name),
    );
    assert!(idle < 50, "an idle httpd uses {idle}m");

    get("start", "started");
    let busy = eventually_blocking(
        Duration::from_secs(30),
        "kubectl top to show the burn",
        || top_pod_millis(&c.kubeconfig, &name).filter(|m| *m >= 150),
    );
    eprintln!("kubectl top shows {busy}m for the burning pod");
    let loaded = Instant::now();
    rt.block_on(eventually(
        2 * SYNC + Duration::from_secs(3),
        "the HPA to scale up within two sync periods",
        || async { (rc_replicas(&c, "burn").await > 1).then_some(()) },
    ));
    eprintln!(
        "scaled up {:?} after kubectl top showed the load",
        loaded.elapsed()
    );
    rt.block_on(eventually(
        Duration::from_secs(30),
        "the RC to reach the HPA's maximum of 3",
        || async { (rc_replicas(&c, "burn").await == 3).then_some(()) },
    ));
    // The status follows the scale write.
    rt.block_on(eventually(
        Duration::from_secs(10),
        "the HPA status to show the scale-up and the load",
        || async {
            let h = hpa(&c, "burn").await;
            let busy = h["status"]["currentCPUUtilizationPercentage"]
                .as_i64()
                .is_some_and(|p| p > 50);
            (busy
                && h["status"]["desiredReplicas"] == 3
                && h["status"]["lastScaleTime"].is_string())
            .then_some(())
        },
    ));

    get("stop", "stopped");
    let stopped = Instant::now();
    rt.block_on(eventually(
        WINDOW + 6 * SYNC + Duration::from_secs(10),
        "the HPA to scale back to 1 after the window",
        || async { (rc_replicas(&c, "burn").await == 1).then_some(()) },
    ));
    let waited = stopped.elapsed();
    assert!(
        waited >= WINDOW,
        "scaled down after {waited:?}, before the {WINDOW:?} window passed"
    );
}

/// A Deployment of `replicas` busybox pods requesting 100m CPU and 64Mi of memory.
fn deployment(name: &str) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                "spec": {"terminationGracePeriodSeconds": 1, "containers": [{
                    "name": "app", "image": "skiff/busybox:latest",
                    "imagePullPolicy": "Never", "command": ["sleep", "3600"],
                    "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}]}}}})
}

async fn deployment_replicas(c: &TestCluster, name: &str) -> i64 {
    let (_, d) = call(client().get(c.url(&format!(
        "/apis/apps/v1/namespaces/default/deployments/{name}"
    ))))
    .await;
    d["spec"]["replicas"].as_i64().unwrap_or(-1)
}

async fn hpa_v2(c: &TestCluster, name: &str) -> Value {
    let (code, hpa) = call(client().get(c.url(&format!(
        "/apis/autoscaling/v2/namespaces/default/horizontalpodautoscalers/{name}"
    ))))
    .await;
    assert_eq!(code, 200, "{hpa}");
    hpa
}

/// The period of the scale-up policy below: one pod per this many seconds.
const POLICY_PERIOD: Duration = Duration::from_secs(8);

const PYTHON_V2: &str = r#"
import json, sys, time
from kubernetes import client, config

config.load_kube_config(config_file=sys.argv[1])
mode = sys.argv[2]
v2 = client.AutoscalingV2Api()
v1 = client.AutoscalingV1Api()
if mode == "create":
    hpa = client.V2HorizontalPodAutoscaler(
        metadata=client.V1ObjectMeta(name="mem"),
        spec=client.V2HorizontalPodAutoscalerSpec(
            scale_target_ref=client.V2CrossVersionObjectReference(
                api_version="apps/v1", kind="Deployment", name="mem"),
            min_replicas=1, max_replicas=4,
            metrics=[client.V2MetricSpec(type="Resource", resource=client.V2ResourceMetricSource(
                name="memory", target=client.V2MetricTarget(type="AverageValue", average_value="100Mi")))],
            behavior=client.V2HorizontalPodAutoscalerBehavior(
                scale_up=client.V2HPAScalingRules(
                    stabilization_window_seconds=0,
                    policies=[client.V2HPAScalingPolicy(type="Pods", value=1, period_seconds=int(sys.argv[3]))])),
        ))
    made = v2.create_namespaced_horizontal_pod_autoscaler("default", hpa)
    assert made.spec.behavior.scale_up.select_policy == "Max", made.spec.behavior
    assert made.spec.behavior.scale_down.policies[0].type == "Percent", made.spec.behavior
    # The same object through autoscaling/v1: no CPU target, the memory metric carried along.
    old = v1.read_namespaced_horizontal_pod_autoscaler("mem", "default")
    assert old.spec.target_cpu_utilization_percentage is None, old.spec
    assert old.spec.max_replicas == 4
    metrics = json.loads(old.metadata.annotations["autoscaling.alpha.kubernetes.io/metrics"])
    assert metrics == [{"type": "Resource", "resource": {"name": "memory", "targetAverageValue": "100Mi"}}], metrics
    assert "autoscaling.alpha.kubernetes.io/behavior" in old.metadata.annotations
    # A v1 client writing it back keeps what only v2 has. The autoscaler writes status
    # meanwhile, so the replace retries on conflict from a fresh read, as client-go's
    # RetryOnConflict does.
    for attempt in range(10):
        old.spec.min_replicas = 1
        try:
            v1.replace_namespaced_horizontal_pod_autoscaler("mem", "default", old)
            break
        except client.exceptions.ApiException as e:
            if e.status != 409 or attempt == 9:
                raise
            time.sleep(0.1 * (attempt + 1))
            old = v1.read_namespaced_horizontal_pod_autoscaler("mem", "default")
    again = v2.read_namespaced_horizontal_pod_autoscaler("mem", "default")
    assert again.spec.metrics[0].resource.name == "memory", again.spec.metrics
    assert again.spec.behavior.scale_up.policies[0].value == 1, again.spec.behavior
    assert not (again.metadata.annotations or {}), again.metadata.annotations
elif mode == "check":
    h = v2.read_namespaced_horizontal_pod_autoscaler("mem", "default")
    cur = h.status.current_metrics[0].resource.current
    assert cur.average_value is not None, h.status
    old = v1.read_namespaced_horizontal_pod_autoscaler("mem", "default")
    assert old.status.current_replicas == h.status.current_replicas, old.status
    assert old.status.current_cpu_utilization_percentage is None, old.status
    current = json.loads(old.metadata.annotations["autoscaling.alpha.kubernetes.io/current-metrics"])
    assert current[0]["resource"]["name"] == "memory", current
    conds = json.loads(old.metadata.annotations["autoscaling.alpha.kubernetes.io/conditions"])
    assert {c["type"] for c in conds} >= {"AbleToScale", "ScalingActive", "ScalingLimited"}, conds
    # Metrics skiff cannot measure are refused, not accepted and left idle.
    bad = client.V2HorizontalPodAutoscaler(
        metadata=client.V1ObjectMeta(name="qps"),
        spec=client.V2HorizontalPodAutoscalerSpec(
            scale_target_ref=client.V2CrossVersionObjectReference(kind="Deployment", name="mem"),
            max_replicas=3,
            metrics=[client.V2MetricSpec(type="Pods", pods=client.V2PodsMetricSource(
                metric=client.V2MetricIdentifier(name="qps"),
                target=client.V2MetricTarget(type="AverageValue", average_value="10")))]))
    try:
        v2.create_namespaced_horizontal_pod_autoscaler("default", bad)
        raise SystemExit("a Pods metric was accepted")
    except client.exceptions.ApiException as e:
        assert e.status == 422, e
        body = json.loads(e.body)
        assert body["details"]["causes"][0]["field"] == "spec.metrics[0].type", body
        assert "custom.metrics.k8s.io" in body["message"], body
print("ok")
"#;

fn python_v2(c: &TestCluster, args: &[&str]) {
    assert_eq!(python_client(PYTHON_V2, &c.kubeconfig, args), "ok");
}

#[test]
fn a_v2_memory_autoscaler_scales_one_pod_per_policy_period_and_reads_back_through_v1() {
    let nodes = node_names("hpa-v2", 2);
    let c = TestCluster::start_with(|cfg| fast_autoscaling(cfg, &nodes, "sim"));
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let deployments = "/apis/apps/v1/namespaces/default/deployments";
    rt.block_on(create(&c, deployments, &deployment("cpu")));
    rt.block_on(create(&c, deployments, &deployment("mem")));

    // kubectl autoscale, then kubectl get hpa with the v2 columns.
    let out = kubectl_ok(
        &c.kubeconfig,
        &[
            "autoscale",
            "deployment",
            "cpu",
            "--cpu-percent=50",
            "--min=1",
            "--max=5",
        ],
    );
    assert!(out.contains("autoscaled"), "{out}");
    let made = rt.block_on(hpa_v2(&c, "cpu"));
    assert_eq!(
        made["spec"]["metrics"][0]["resource"],
        json!({"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 50}})
    );
    let table = eventually_blocking(
        Duration::from_secs(30),
        "kubectl get hpa to show cpu usage",
        || {
            let t = kubectl_ok(&c.kubeconfig, &["get", "hpa", "cpu"]);
            t.contains("cpu: 0%/50%").then_some(t)
        },
    );
    let header: Vec<&str> = table
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        [
            "NAME",
            "REFERENCE",
            "TARGETS",
            "MINPODS",
            "MAXPODS",
            "REPLICAS",
            "AGE"
        ]
    );
    assert!(table.contains("Deployment/cpu"), "{table}");
    // v2 is the preferred version, as in Kubernetes; v1 is served beside it.
    let preferred = kubectl_ok(
        &c.kubeconfig,
        &["get", "hpa", "cpu", "-o", "jsonpath={.apiVersion}"],
    );
    assert_eq!(preferred, "autoscaling/v2");
    let versions = kubectl_ok(&c.kubeconfig, &["api-versions"]);
    assert!(
        versions.lines().any(|l| l == "autoscaling/v1")
            && versions.lines().any(|l| l == "autoscaling/v2"),
        "{versions}"
    );
    let raw = kubectl_ok(
        &c.kubeconfig,
        &[
            "get",
            "--raw",
            "/apis/autoscaling/v1/namespaces/default/horizontalpodautoscalers/cpu",
        ],
    );
    let v1: Value = serde_json::from_str(&raw).expect("json");
    assert_eq!(v1["apiVersion"], "autoscaling/v1");
    assert_eq!(v1["spec"]["targetCPUUtilizationPercentage"], 50);

    // The official Python client makes the memory autoscaler with a behavior.
    let period = POLICY_PERIOD.as_secs().to_string();
    python_v2(&c, &["create", &period]);

    // Every pod uses 200Mi against the 100Mi target: double, but one pod per period.
    let heavy = SimUsage {
        cpu_millis: 1,
        memory_bytes: 200 << 20,
    };
    for n in &nodes {
        c.sim(n).expect("sim node").set_default_usage(heavy);
    }
    let mut seen: Vec<(i64, Instant)> = vec![(1, Instant::now())];
    let deadline = Instant::now() + 5 * POLICY_PERIOD + Duration::from_secs(20);
    while seen.last().map(|(r, _)| *r) != Some(4) {
        assert!(
            Instant::now() < deadline,
            "the HPA never reached 4: {seen:?}"
        );
        let r = rt.block_on(deployment_replicas(&c, "mem"));
        if Some(r) != seen.last().map(|(r, _)| *r) {
            seen.push((r, Instant::now()));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let counts: Vec<i64> = seen.iter().map(|(r, _)| *r).collect();
    assert_eq!(counts, [1, 2, 3, 4], "one pod at a time");
    for pair in seen.windows(2).skip(1) {
        let gap = pair[1].1 - pair[0].1;
        assert!(
            gap + SYNC >= POLICY_PERIOD,
            "scaled {} -> {} {gap:?} after the last scale-up, within the {POLICY_PERIOD:?} period",
            pair[0].0,
            pair[1].0
        );
    }
    let h = rt.block_on(eventually(
        Duration::from_secs(10),
        "the v2 status at 4",
        || async {
            let h = hpa_v2(&c, "mem").await;
            (h["status"]["desiredReplicas"] == 4
                && h["status"]["currentMetrics"][0]["resource"]["current"]["averageValue"]
                    == "209715200")
                .then_some(h)
        },
    ));
    let conds = h["status"]["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let active = conds
        .iter()
        .find(|c| c["type"] == "ScalingActive")
        .expect("ScalingActive");
    assert_eq!(active["reason"], "ValidMetricFound", "{active}");
    assert!(
        active["message"]
            .as_str()
            .is_some_and(|m| m.ends_with("from memory resource")),
        "{active}"
    );
    let events = rt.block_on(events_for(&c, "mem"));
    assert!(
        events.iter().any(|e| e["reason"] == "SuccessfulRescale"
            && e["message"] == "New size: 2; reason: memory resource above target"),
        "{events:?}"
    );
    let table = kubectl_ok(&c.kubeconfig, &["get", "hpa", "mem"]);
    assert!(table.contains("memory: 209715200/100Mi"), "{table}");
    let described = kubectl_ok(&c.kubeconfig, &["describe", "hpa", "mem"]);
    assert!(
        described.contains("resource memory on pods")
            && described.contains("Scale Up:")
            && described.contains("SuccessfulRescale"),
        "{described}"
    );
    python_v2(&c, &["check"]);
}
