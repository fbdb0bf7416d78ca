//! The kubelet against a real cluster (real store, gateway and scheduler), over the
//! simulated runtime: node registration, pods driven to Running, restart policies and
//! CrashLoopBackOff, graceful deletion, adoption after a restart, missing images, and
//! supervision.
//!
//! The cluster is started without configured nodes; each test runs its own Kubelet (in the
//! test's actix runtime, through the in-process client) over a `SimRuntime` it keeps, so it
//! can make containers crash.

use std::sync::Arc;
use std::time::Duration;

use actix::{Addr, Arbiter};
use serde_json::{json, Value};
use skiff_actors::client::{ApiClient, LocalClient};
use skiff_actors::kubelet::kubelet::{InjectPanic, Kubelet, KubeletConfig, ListPodWorkers};
use skiff_actors::kubelet::runtime::sim::{SimConfig, SimRuntime};
use skiff_actors::kubelet::runtime::{ContainerInfo, Runtime};
use skiff_integration::{call, client, eventually, TestCluster};

const NS: &str = "/api/v1/namespaces/default";
const WAIT: Duration = Duration::from_secs(20);

fn cluster() -> TestCluster {
    TestCluster::start_with(|cfg| cfg.nodes.clear())
}

fn kubelet_config(node: &str) -> KubeletConfig {
    KubeletConfig {
        node_name: node.to_string(),
        heartbeat_interval: Duration::from_secs(1),
        relist_interval: Duration::from_millis(100),
        resync_interval: Duration::from_secs(2),
        // Short backoffs so that crash loops are observable in a test.
        backoff_base: Duration::from_millis(300),
        backoff_max: Duration::from_secs(3),
        ..KubeletConfig::default()
    }
}

fn local_client(c: &TestCluster) -> Arc<dyn ApiClient> {
    Arc::new(LocalClient::new(c.objects()))
}

/// A kubelet in the test's own runtime.
fn start_kubelet(c: &TestCluster, node: &str, runtime: Arc<SimRuntime>) -> Addr<Kubelet> {
    let (client, cfg) = (local_client(c), kubelet_config(node));
    actix::Supervisor::start(move |_| Kubelet::new(client, runtime, cfg))
}

/// A kubelet on an arbiter of its own, so that the test can make it vanish at once (as a
/// killed process would), leaving its containers running.
fn start_kubelet_on(
    arbiter: &Arbiter,
    c: &TestCluster,
    node: &str,
    runtime: Arc<SimRuntime>,
) -> Addr<Kubelet> {
    let (client, cfg) = (local_client(c), kubelet_config(node));
    actix::Supervisor::start_in_arbiter(&arbiter.handle(), move |_| {
        Kubelet::new(client, runtime, cfg)
    })
}

fn sim() -> Arc<SimRuntime> {
    Arc::new(SimRuntime::new(SimConfig::default()))
}

/// A pod for `node` (via nodeSelector, so the scheduler places it) with one container
/// `app`; `spec` fields are merged into the spec.
fn pod(name: &str, node: &str, spec: Value) -> Value {
    let mut p = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "kubelet-test"}},
        "spec": {"nodeSelector": {"kubernetes.io/hostname": node},
            "containers": [{"name": "app", "image": "busybox:1.36"}]}});
    if let (Some(s), Some(extra)) = (p["spec"].as_object_mut(), spec.as_object()) {
        s.extend(extra.clone());
    }
    p
}

async fn create(c: &TestCluster, body: Value) -> Value {
    let (code, out) = call(client().post(c.url(&format!("{NS}/pods"))).json(&body)).await;
    assert_eq!(code, 201, "create pod: {out}");
    out
}

async fn get_pod(c: &TestCluster, name: &str) -> Option<Value> {
    let (code, out) = call(client().get(c.url(&format!("{NS}/pods/{name}")))).await;
    match code {
        200 => Some(out),
        404 => None,
        _ => panic!("GET pod {name}: {code} {out}"),
    }
}

/// Wait until `f` holds for the pod; returns the pod.
async fn pod_where(c: &TestCluster, name: &str, what: &str, f: impl Fn(&Value) -> bool) -> Value {
    eventually(WAIT, &format!("pod {name}: {what}"), || async {
        get_pod(c, name).await.filter(|p| f(p))
    })
    .await
}

fn phase(p: &Value) -> &str {
    p["status"]["phase"].as_str().unwrap_or_default()
}

fn container_status(p: &Value) -> &Value {
    &p["status"]["containerStatuses"][0]
}

fn condition<'a>(p: &'a Value, kind: &str) -> Option<&'a str> {
    p["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind)?
        .get("status")?
        .as_str()
}

async fn containers_of(runtime: &SimRuntime, node: &str, uid: &str) -> Vec<ContainerInfo> {
    runtime
        .list(node)
        .await
        .expect("list")
        .into_iter()
        .filter(|c| c.pod_uid() == Some(uid))
        .collect()
}

fn uid(p: &Value) -> String {
    p["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[actix_rt::test]
async fn the_kubelet_registers_a_ready_node_and_runs_a_pod_to_running() {
    let c = cluster();
    let runtime = sim();
    let _kubelet = start_kubelet(&c, "kl-run", runtime.clone());

    let node = eventually(WAIT, "node kl-run to be Ready", || async {
        let (code, n) = call(client().get(c.url("/api/v1/nodes/kl-run"))).await;
        (code == 200 && condition(&n, "Ready") == Some("True")).then_some(n)
    })
    .await;
    assert_eq!(
        node["metadata"]["labels"]["kubernetes.io/hostname"],
        "kl-run"
    );
    assert_eq!(node["status"]["capacity"]["pods"], "110");
    assert_eq!(
        node["status"]["nodeInfo"]["kubeletVersion"],
        "v1.33.0-skiff"
    );
    assert!(node["status"]["nodeInfo"]["containerRuntimeVersion"]
        .as_str()
        .is_some_and(|v| v.starts_with("sim://")));

    create(
        &c,
        pod(
            "web",
            "kl-run",
            json!({"containers": [{"name": "app", "image": "busybox:1.36",
                "env": [{"name": "ME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]}]}),
        ),
    )
    .await;
    let p = pod_where(&c, "web", "Running and Ready", |p| {
        phase(p) == "Running" && condition(p, "Ready") == Some("True")
    })
    .await;
    assert!(
        p["status"]["podIP"]
            .as_str()
            .is_some_and(|ip| ip.starts_with("10.244.")),
        "{p}"
    );
    assert_eq!(p["status"]["hostIP"], "127.0.0.1");
    assert!(p["status"]["startTime"].is_string());
    for kind in ["PodScheduled", "Initialized", "ContainersReady", "Ready"] {
        assert_eq!(condition(&p, kind), Some("True"), "{kind} in {p}");
    }
    let s = container_status(&p);
    assert!(s["state"]["running"]["startedAt"].is_string(), "{s}");
    assert!(
        s["containerID"]
            .as_str()
            .is_some_and(|id| id.starts_with("sim://")),
        "{s}"
    );
    assert_eq!(s["restartCount"], 0);
    assert_eq!(s["ready"], true);
    assert_eq!(s["image"], "busybox:1.36");
    let mine = containers_of(&runtime, "kl-run", &uid(&p)).await;
    assert_eq!(mine.len(), 2, "a sandbox and the app container: {mine:?}");
}

#[actix_rt::test]
async fn never_with_a_crashed_container_ends_failed_with_its_exit_code() {
    let c = cluster();
    let runtime = sim();
    let _kubelet = start_kubelet(&c, "kl-never", runtime.clone());
    create(
        &c,
        pod("once", "kl-never", json!({"restartPolicy": "Never"})),
    )
    .await;
    let p = pod_where(&c, "once", "Running", |p| phase(p) == "Running").await;
    assert!(runtime.crash(&uid(&p), "app", 3));
    let p = pod_where(&c, "once", "Failed", |p| phase(p) == "Failed").await;
    let s = container_status(&p);
    assert_eq!(s["state"]["terminated"]["exitCode"], 3, "{s}");
    assert_eq!(s["state"]["terminated"]["reason"], "Error");
    assert_eq!(s["restartCount"], 0);
    assert_eq!(condition(&p, "Ready"), Some("False"));
}

#[actix_rt::test]
async fn on_failure_with_a_clean_exit_ends_succeeded() {
    let c = cluster();
    let runtime = sim();
    let _kubelet = start_kubelet(&c, "kl-onfail", runtime.clone());
    create(
        &c,
        pod("job", "kl-onfail", json!({"restartPolicy": "OnFailure"})),
    )
    .await;
    let p = pod_where(&c, "job", "Running", |p| phase(p) == "Running").await;
    assert!(runtime.crash(&uid(&p), "app", 0));
    let p = pod_where(&c, "job", "Succeeded", |p| phase(p) == "Succeeded").await;
    assert_eq!(
        container_status(&p)["state"]["terminated"]["reason"],
        "Completed"
    );
}

#[actix_rt::test]
async fn always_restarts_a_crashed_container_with_crash_loop_back_off_and_growing_waits() {
    let c = cluster();
    let runtime = sim();
    let _kubelet = start_kubelet(&c, "kl-loop", runtime.clone());
    create(&c, pod("loop", "kl-loop", json!({}))).await;
    let p = pod_where(&c, "loop", "Running", |p| phase(p) == "Running").await;
    let id = uid(&p);

    assert!(runtime.crash(&id, "app", 1));
    let p = pod_where(&c, "loop", "CrashLoopBackOff", |p| {
        container_status(p)["state"]["waiting"]["reason"] == "CrashLoopBackOff"
    })
    .await;
    let s = container_status(&p);
    assert_eq!(
        s["state"]["waiting"]["message"],
        format!("back-off 300ms restarting failed container=app pod=loop_default({id})")
    );
    assert_eq!(s["lastState"]["terminated"]["exitCode"], 1);
    assert_eq!(phase(&p), "Running", "a crash-looping pod is not Pending");

    let p = pod_where(&c, "loop", "restarted once", |p| {
        container_status(p)["restartCount"] == 1
            && container_status(p)["state"]["running"].is_object()
    })
    .await;
    assert_eq!(
        container_status(&p)["lastState"]["terminated"]["exitCode"],
        1
    );

    assert!(runtime.crash(&id, "app", 1));
    pod_where(&c, "loop", "a longer back-off", |p| {
        container_status(p)["state"]["waiting"]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("back-off 600ms"))
    })
    .await;
    pod_where(&c, "loop", "restarted twice", |p| {
        container_status(p)["restartCount"] == 2
    })
    .await;
    let apps = containers_of(&runtime, "kl-loop", &id)
        .await
        .into_iter()
        .filter(|c| !c.is_sandbox())
        .count();
    assert_eq!(
        apps, 2,
        "the current instance and the previous one are kept, older ones removed"
    );
}

#[actix_rt::test]
async fn graceful_deletion_stops_the_containers_and_then_removes_the_pod() {
    let c = cluster();
    let runtime = sim();
    let _kubelet = start_kubelet(&c, "kl-del", runtime.clone());
    create(
        &c,
        pod(
            "doomed",
            "kl-del",
            json!({"terminationGracePeriodSeconds": 5}),
        ),
    )
    .await;
    let p = pod_where(&c, "doomed", "Running", |p| phase(p) == "Running").await;
    let id = uid(&p);

    let (code, out) = call(client().delete(c.url(&format!("{NS}/pods/doomed")))).await;
    assert_eq!(code, 200, "{out}");
    assert!(
        out["metadata"]["deletionTimestamp"].is_string(),
        "graceful: {out}"
    );
    eventually(WAIT, "the pod object to be removed", || async {
        get_pod(&c, "doomed").await.is_none().then_some(())
    })
    .await;
    assert!(
        containers_of(&runtime, "kl-del", &id).await.is_empty(),
        "containers and sandbox removed"
    );
}

#[actix_rt::test]
async fn a_pod_deleted_outright_loses_its_containers() {
    let c = cluster();
    let runtime = sim();
    let _kubelet = start_kubelet(&c, "kl-force", runtime.clone());
    create(&c, pod("gone", "kl-force", json!({}))).await;
    let p = pod_where(&c, "gone", "Running", |p| phase(p) == "Running").await;
    let id = uid(&p);
    let (code, out) =
        call(client().delete(c.url(&format!("{NS}/pods/gone?gracePeriodSeconds=0")))).await;
    assert_eq!(code, 200, "{out}");
    eventually(WAIT, "the containers to be removed", || async {
        containers_of(&runtime, "kl-force", &id)
            .await
            .is_empty()
            .then_some(())
    })
    .await;
}

#[actix_rt::test]
async fn a_restarted_kubelet_adopts_running_containers_and_removes_those_of_deleted_pods() {
    let c = cluster();
    let runtime = sim();
    let first = Arbiter::new();
    let _old = start_kubelet_on(&first, &c, "kl-adopt", runtime.clone());
    create(&c, pod("keep", "kl-adopt", json!({}))).await;
    create(&c, pod("drop", "kl-adopt", json!({}))).await;
    let keep = pod_where(&c, "keep", "Running", |p| phase(p) == "Running").await;
    let drop = pod_where(&c, "drop", "Running", |p| phase(p) == "Running").await;
    let mut before: Vec<String> = containers_of(&runtime, "kl-adopt", &uid(&keep))
        .await
        .into_iter()
        .map(|c| c.id)
        .collect();
    before.sort();

    // The kubelet vanishes with everything it ran in memory, as a killed process would.
    first.stop();
    let _ = first.join();
    // Meanwhile one of its pods is removed from the API (no kubelet to see it happen).
    let (code, out) =
        call(client().delete(c.url(&format!("{NS}/pods/drop?gracePeriodSeconds=0")))).await;
    assert_eq!(code, 200, "{out}");
    assert!(get_pod(&c, "drop").await.is_none());
    assert!(!containers_of(&runtime, "kl-adopt", &uid(&drop))
        .await
        .is_empty());

    let _new = start_kubelet(&c, "kl-adopt", runtime.clone());
    eventually(
        WAIT,
        "the deleted pod's containers to be removed",
        || async {
            containers_of(&runtime, "kl-adopt", &uid(&drop))
                .await
                .is_empty()
                .then_some(())
        },
    )
    .await;
    // Barrier: a pod created now reaching Running shows the new kubelet has synced its
    // pods since it started, so anything it would (wrongly) restart has been restarted.
    create(&c, pod("later", "kl-adopt", json!({}))).await;
    pod_where(&c, "later", "Running", |p| phase(p) == "Running").await;
    let mut after: Vec<String> = containers_of(&runtime, "kl-adopt", &uid(&keep))
        .await
        .into_iter()
        .map(|c| c.id)
        .collect();
    after.sort();
    assert_eq!(
        before, after,
        "the surviving pod's containers were adopted, not restarted"
    );
    let p = get_pod(&c, "keep").await.expect("pod keep");
    assert_eq!(phase(&p), "Running");
    assert_eq!(container_status(&p)["restartCount"], 0);
}

#[actix_rt::test]
async fn a_panicking_kubelet_is_restarted_and_adopts_its_pods() {
    let c = cluster();
    let runtime = sim();
    let kubelet = start_kubelet(&c, "kl-panic", runtime.clone());
    create(&c, pod("steady", "kl-panic", json!({}))).await;
    let p = pod_where(&c, "steady", "Running", |p| phase(p) == "Running").await;
    let mut before: Vec<String> = containers_of(&runtime, "kl-panic", &uid(&p))
        .await
        .into_iter()
        .map(|c| c.id)
        .collect();
    before.sort();
    kubelet.do_send(InjectPanic);
    let workers = eventually(
        WAIT,
        "the restarted kubelet to run the pod again",
        || async {
            match kubelet.send(ListPodWorkers).await {
                Ok(w) if !w.is_empty() => Some(w),
                _ => None,
            }
        },
    )
    .await;
    assert_eq!(workers, vec![uid(&p)]);
    // Barrier: a pod created after the restart reaching Running shows the restarted
    // kubelet has been syncing.
    create(&c, pod("later", "kl-panic", json!({}))).await;
    pod_where(&c, "later", "Running", |p| phase(p) == "Running").await;
    let mut after: Vec<String> = containers_of(&runtime, "kl-panic", &uid(&p))
        .await
        .into_iter()
        .map(|c| c.id)
        .collect();
    after.sort();
    assert_eq!(before, after);
    // Still alive and working: a new pod runs.
    create(&c, pod("after", "kl-panic", json!({}))).await;
    pod_where(&c, "after", "Running", |p| phase(p) == "Running").await;
}

#[actix_rt::test]
async fn a_missing_image_is_reported_as_err_image_never_pull_not_a_hang() {
    let c = cluster();
    let runtime = sim();
    let _kubelet = start_kubelet(&c, "kl-img", runtime.clone());
    create(
        &c,
        pod(
            "noimg",
            "kl-img",
            json!({"containers": [
                {"name": "never", "image": "missing/x", "imagePullPolicy": "Never"},
                {"name": "pull", "image": "missing/y", "imagePullPolicy": "IfNotPresent"}]}),
        ),
    )
    .await;
    let p = pod_where(&c, "noimg", "image errors reported", |p| {
        let reason =
            |i: usize| p["status"]["containerStatuses"][i]["state"]["waiting"]["reason"].clone();
        reason(0) == "ErrImageNeverPull"
            && (reason(1) == "ErrImagePull" || reason(1) == "ImagePullBackOff")
    })
    .await;
    assert_eq!(phase(&p), "Pending");
    assert!(
        p["status"]["containerStatuses"][0]["state"]["waiting"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("missing/x"))
    );
    // Not stuck: deleting it still works.
    let (code, _) = call(client().delete(c.url(&format!("{NS}/pods/noimg")))).await;
    assert_eq!(code, 200);
    eventually(WAIT, "the pod to be removed", || async {
        get_pod(&c, "noimg").await.is_none().then_some(())
    })
    .await;
}

// ---------------------------------------------------------------------------------------
// On the real Docker Engine. Each test has its own node name; a guard removes that node's
// containers even when an assertion fails.

mod docker {
    use std::path::Path;
    use std::time::Instant;

    use futures::StreamExt;
    use skiff_actors::kubelet::runtime::docker::DockerRuntime;
    use skiff_actors::kubelet::runtime::images::{self, BUSYBOX_IMAGE, DEBIAN_BUSYBOX};
    use skiff_actors::kubelet::runtime::LogOptions;
    use skiff_integration::{node_names, DockerCleanup};

    use super::*;

    /// A kubelet over the Docker Engine on a fresh node, or None (with a note) without
    /// an engine.
    async fn docker_node(
        c: &TestCluster,
        test: &str,
    ) -> (String, Arc<dyn Runtime>, Addr<Kubelet>, DockerCleanup) {
        skiff_integration::require_docker();
        let rt = DockerRuntime::connect()
            .await
            .expect("connect to the Docker Engine");
        images::ensure_busybox_image(rt.docker(), Path::new(DEBIAN_BUSYBOX))
            .await
            .expect("busybox test image");
        let node = node_names(test, 1).remove(0);
        let guard = DockerCleanup::new(std::slice::from_ref(&node));
        let runtime: Arc<dyn Runtime> = Arc::new(rt);
        let (client, cfg, rt2) = (local_client(c), kubelet_config(&node), runtime.clone());
        let kubelet = actix::Supervisor::start(move |_| Kubelet::new(client, rt2, cfg));
        (node, runtime, kubelet, guard)
    }

    fn busybox(name: &str, script: &str) -> Value {
        json!({"name": name, "image": BUSYBOX_IMAGE, "imagePullPolicy": "Never",
            "command": ["sh", "-c", script]})
    }

    async fn logs(runtime: &dyn Runtime, id: &str) -> String {
        let Ok(mut stream) = runtime.logs(id, &LogOptions::default()).await else {
            return String::new();
        };
        let mut out = Vec::new();
        while let Some(Ok(chunk)) = stream.next().await {
            out.extend_from_slice(&chunk);
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    fn runtime_id(status: &Value) -> String {
        status["containerID"]
            .as_str()
            .and_then(|id| id.split_once("://"))
            .map(|(_, id)| id.to_string())
            .unwrap_or_default()
    }

    #[actix_rt::test]
    async fn containers_of_a_pod_share_localhost_and_the_pod_ip_answers_from_the_host() {
        let c = cluster();
        let (node, _rt, _kubelet, _guard) = docker_node(&c, "kl-net").await;
        let mut web = busybox(
            "web",
            "mkdir -p /www && echo \"$ME on $NODE at $IP\" > /www/index.html && exec httpd -f -p 8080 -h /www",
        );
        web["env"] = json!([
            {"name": "ME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
            {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        ]);
        // The second container is ready only once it reaches the first on localhost.
        let mut probe = busybox("client", "exec sleep 3600");
        probe["readinessProbe"] = json!({"exec": {"command": ["sh", "-c", "wget -qO- http://localhost:8080/ | grep -q netpod"]},
            "periodSeconds": 1});
        create(
            &c,
            pod(
                "netpod",
                &node,
                json!({"terminationGracePeriodSeconds": 1, "containers": [web, probe]}),
            ),
        )
        .await;
        let p = pod_where(&c, "netpod", "Ready", |p| {
            condition(p, "Ready") == Some("True")
        })
        .await;
        let ip = p["status"]["podIP"].as_str().expect("pod IP").to_string();
        let body = eventually(WAIT, "the pod IP to answer from the host", || async {
            let resp = client()
                .get(format!("http://{ip}:8080/"))
                .send()
                .await
                .ok()?;
            resp.text().await.ok()
        })
        .await;
        assert_eq!(body.trim(), format!("netpod on {node} at {ip}"));
    }

    #[actix_rt::test]
    async fn readiness_gates_ready_and_a_failing_liveness_probe_restarts_the_container() {
        let c = cluster();
        let (node, _rt, _kubelet, _guard) = docker_node(&c, "kl-probe").await;
        let mut app = busybox("app", "exec sleep 3600");
        app["readinessProbe"] =
            json!({"exec": {"command": ["test", "-f", "/tmp/ready"]}, "periodSeconds": 1});
        app["livenessProbe"] = json!({"exec": {"command": ["test", "!", "-f", "/tmp/dead"]},
            "periodSeconds": 1, "failureThreshold": 2});
        create(
            &c,
            pod(
                "probed",
                &node,
                json!({"terminationGracePeriodSeconds": 1, "containers": [app]}),
            ),
        )
        .await;
        // Running but its readiness probe cannot pass yet (no /tmp/ready): not Ready.
        // The liveness probe of the same period passing keeps it running meanwhile.
        let p = pod_where(&c, "probed", "Running", |p| {
            phase(p) == "Running" && container_status(p)["started"] == true
        })
        .await;
        assert_eq!(
            condition(&p, "Ready"),
            Some("False"),
            "not ready before its probe passes"
        );
        let id = runtime_id(container_status(&p));
        let ok = std::process::Command::new("docker")
            .args(["exec", &id, "touch", "/tmp/ready"])
            .status();
        assert!(ok.is_ok_and(|s| s.success()));
        pod_where(&c, "probed", "Ready", |p| {
            condition(p, "Ready") == Some("True")
        })
        .await;

        let ok = std::process::Command::new("docker")
            .args(["exec", &id, "touch", "/tmp/dead"])
            .status();
        assert!(ok.is_ok_and(|s| s.success()));
        let p = pod_where(&c, "probed", "restarted after failing liveness", |p| {
            container_status(p)["restartCount"] == 1
                && container_status(p)["state"]["running"].is_object()
        })
        .await;
        assert!(container_status(&p)["lastState"]["terminated"].is_object());
        assert_eq!(
            condition(&p, "Ready"),
            Some("False"),
            "a fresh container is not ready yet"
        );
    }

    #[actix_rt::test]
    async fn exits_follow_the_restart_policy_with_exit_codes_and_crash_loop_back_off() {
        let c = cluster();
        let (node, _rt, _kubelet, _guard) = docker_node(&c, "kl-exit").await;
        create(
            &c,
            pod(
                "fails",
                &node,
                json!({"restartPolicy": "Never", "containers": [busybox("app", "exit 3")]}),
            ),
        )
        .await;
        create(
            &c,
            pod(
                "works",
                &node,
                json!({"restartPolicy": "OnFailure", "containers": [busybox("app", "exit 0")]}),
            ),
        )
        .await;
        create(
            &c,
            pod(
                "loops",
                &node,
                json!({"restartPolicy": "Always", "containers": [busybox("app", "exit 1")]}),
            ),
        )
        .await;
        let p = pod_where(&c, "fails", "Failed", |p| phase(p) == "Failed").await;
        assert_eq!(container_status(&p)["state"]["terminated"]["exitCode"], 3);
        let p = pod_where(&c, "works", "Succeeded", |p| phase(p) == "Succeeded").await;
        assert_eq!(container_status(&p)["state"]["terminated"]["exitCode"], 0);
        let p = pod_where(&c, "loops", "restarted twice and backing off", |p| {
            container_status(p)["restartCount"].as_u64() >= Some(2)
                && container_status(p)["state"]["waiting"]["reason"] == "CrashLoopBackOff"
        })
        .await;
        assert_eq!(
            container_status(&p)["lastState"]["terminated"]["exitCode"],
            1
        );
    }

    #[actix_rt::test]
    async fn graceful_deletion_sends_sigterm_and_waits_for_the_container() {
        let c = cluster();
        let (node, rt, _kubelet, _guard) = docker_node(&c, "kl-term").await;
        let script = "trap 'echo got TERM; sleep 2; echo bye; exit 0' TERM; echo started; while true; do sleep 0.2; done";
        create(&c, pod("polite", &node, json!({"terminationGracePeriodSeconds": 10, "containers": [busybox("app", script)]}))).await;
        let p = pod_where(&c, "polite", "Running", |p| phase(p) == "Running").await;
        let id = runtime_id(container_status(&p));
        eventually(WAIT, "the container to start its trap", || async {
            logs(&*rt, &id).await.contains("started").then_some(())
        })
        .await;

        let deleted_at = Instant::now();
        let (code, _) = call(client().delete(c.url(&format!("{NS}/pods/polite")))).await;
        assert_eq!(code, 200);
        eventually(WAIT, "the container to see SIGTERM", || async {
            logs(&*rt, &id).await.contains("got TERM").then_some(())
        })
        .await;
        eventually(WAIT, "the pod object to be removed", || async {
            get_pod(&c, "polite").await.is_none().then_some(())
        })
        .await;
        let took = deleted_at.elapsed();
        assert!(
            took >= Duration::from_millis(1500),
            "the kubelet waited for the trap ({took:?})"
        );
        assert!(
            took < Duration::from_secs(9),
            "no SIGKILL at the deadline was needed ({took:?})"
        );
        assert!(
            rt.list(&node).await.expect("list").is_empty(),
            "containers removed"
        );
    }

    #[actix_rt::test]
    async fn a_missing_image_with_never_gives_err_image_never_pull() {
        let c = cluster();
        let (node, _rt, _kubelet, _guard) = docker_node(&c, "kl-noimg").await;
        create(
            &c,
            pod("noimg", &node, json!({"containers": [{"name": "app", "image": "skiff/absent:1", "imagePullPolicy": "Never"}]})),
        )
        .await;
        let p = pod_where(&c, "noimg", "ErrImageNeverPull", |p| {
            container_status(p)["state"]["waiting"]["reason"] == "ErrImageNeverPull"
        })
        .await;
        assert_eq!(phase(&p), "Pending");
    }
}
