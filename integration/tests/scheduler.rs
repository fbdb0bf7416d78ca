//! The scheduler against a real cluster (real RocksDB, real HTTP): node objects without
//! kubelets, pods placed through `pods/binding`, reasons written where `kubectl describe`
//! shows them.
//!
//! The tests use the system's own scheduler, as a user would. Only the supervision test
//! starts one itself (in a cluster started without one), because it needs the actor's
//! address to inject a panic.

use std::sync::Arc;
use std::time::Duration;

use actix::Addr;
use serde_json::{json, Value};
use skiff_actors::api::meta::now_rfc3339;
use skiff_actors::client::{ApiClient, LocalClient};
use skiff_actors::scheduler::{GetStats, InjectPanic, SchedulerActor, SchedulerConfig};
use skiff_integration::{call, client, eventually, TestCluster};

const NS: &str = "/api/v1/namespaces/default";
const WAIT: Duration = Duration::from_secs(20);

/// A scheduler of the test's own, in the test's actix runtime, reaching the cluster's
/// store through the in-process client (as the system's does).
fn start_own_scheduler(c: &TestCluster) -> Addr<SchedulerActor> {
    let client: Arc<dyn ApiClient> = Arc::new(LocalClient::new(c.objects()));
    SchedulerActor::new(client, SchedulerConfig::default()).start_supervised()
}

async fn post(c: &TestCluster, path: &str, body: Value) -> Value {
    let (code, out) = call(client().post(c.url(path)).json(&body)).await;
    assert_eq!(code, 201, "POST {path}: {out}");
    out
}

async fn get(c: &TestCluster, path: &str) -> Value {
    let (code, out) = call(client().get(c.url(path))).await;
    assert_eq!(code, 200, "GET {path}: {out}");
    out
}

async fn patch(c: &TestCluster, path: &str, body: Value) -> Value {
    let req = client()
        .patch(c.url(path))
        .header("Content-Type", "application/strategic-merge-patch+json")
        .body(body.to_string());
    let (code, out) = call(req).await;
    assert_eq!(code, 200, "PATCH {path}: {out}");
    out
}

/// Register a Ready node with `cpu` cores, 8Gi and 110 pods, as a kubelet would.
async fn add_node(c: &TestCluster, name: &str, cpu: &str, labels: Value, spec: Value) {
    let mut all_labels = json!({"kubernetes.io/hostname": name});
    if let (Some(all), Some(extra)) = (all_labels.as_object_mut(), labels.as_object()) {
        all.extend(extra.clone());
    }
    post(
        c,
        "/api/v1/nodes",
        json!({"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": all_labels}, "spec": spec}),
    )
    .await;
    let now = now_rfc3339();
    let resources = json!({"cpu": cpu, "memory": "8Gi", "pods": "110"});
    patch(
        c,
        &format!("/api/v1/nodes/{name}/status"),
        json!({"status": {"capacity": resources, "allocatable": resources, "conditions": [
            {"type": "Ready", "status": "True", "reason": "KubeletReady",
             "message": "kubelet is posting ready status",
             "lastHeartbeatTime": now, "lastTransitionTime": now}]}}),
    )
    .await;
}

/// A pod requesting `cpu` and 64Mi; `spec` fields are merged into the spec.
fn pod(name: &str, cpu: &str, spec: Value) -> Value {
    let mut p = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "sched-test"}},
        "spec": {"containers": [{"name": "app", "image": "busybox:1.36",
            "resources": {"requests": {"cpu": cpu, "memory": "64Mi"}}}]}});
    if let (Some(s), Some(extra)) = (p["spec"].as_object_mut(), spec.as_object()) {
        s.extend(extra.clone());
    }
    p
}

async fn create_pod(c: &TestCluster, name: &str, cpu: &str, spec: Value) {
    post(c, &format!("{NS}/pods"), pod(name, cpu, spec)).await;
}

/// Wait until the pod is bound; returns its node.
async fn node_of(c: &TestCluster, name: &str) -> String {
    eventually(WAIT, &format!("pod {name} to be bound"), || async {
        let p = get(c, &format!("{NS}/pods/{name}")).await;
        p["spec"]["nodeName"]
            .as_str()
            .filter(|n| !n.is_empty())
            .map(str::to_string)
    })
    .await
}

/// Wait until the pod says why it is not scheduled; returns the message.
async fn unschedulable_message(c: &TestCluster, name: &str) -> String {
    eventually(
        WAIT,
        &format!("pod {name} to be marked unschedulable"),
        || async {
            let p = get(c, &format!("{NS}/pods/{name}")).await;
            assert!(p["spec"]["nodeName"].is_null(), "pod {name} was bound: {p}");
            let conditions = p["status"]["conditions"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            conditions
                .iter()
                .find(|c| c["type"] == "PodScheduled")
                .filter(|c| c["status"] == "False" && c["reason"] == "Unschedulable")
                .and_then(|c| c["message"].as_str().map(str::to_string))
        },
    )
    .await
}

#[actix_rt::test]
async fn an_rc_of_three_on_three_nodes_spreads_one_pod_per_node() {
    let c = TestCluster::start();
    for n in ["n1", "n2", "n3"] {
        add_node(&c, n, "4", json!({}), json!({})).await;
    }
    post(
        &c,
        &format!("{NS}/replicationcontrollers"),
        json!({"apiVersion": "v1", "kind": "ReplicationController", "metadata": {"name": "web"},
            "spec": {"replicas": 3, "selector": {"app": "web"}, "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "app", "image": "busybox:1.36",
                    "resources": {"requests": {"cpu": "100m"}}}]}}}}),
    )
    .await;
    let mut nodes = eventually(WAIT, "3 replicas bound", || async {
        let list = get(&c, &format!("{NS}/pods?labelSelector=app%3Dweb")).await;
        let items = list["items"].as_array().cloned().unwrap_or_default();
        let nodes: Vec<String> = items
            .iter()
            .filter_map(|p| p["spec"]["nodeName"].as_str().map(str::to_string))
            .collect();
        (items.len() == 3 && nodes.len() == 3).then_some(nodes)
    })
    .await;
    nodes.sort();
    assert_eq!(nodes, ["n1", "n2", "n3"], "one replica per node");

    // `kubectl describe pod` shows where the scheduler put it.
    let list = get(&c, &format!("{NS}/pods?labelSelector=app%3Dweb")).await;
    let first = list["items"][0].clone();
    let name = first["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let node = first["spec"]["nodeName"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let expected = format!("Successfully assigned default/{name} to {node}");
    eventually(WAIT, "the Scheduled event", || async {
        let events = get(&c, &format!("{NS}/events")).await;
        events["items"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|e| {
                e["reason"] == "Scheduled"
                    && e["message"] == expected.as_str()
                    && e["type"] == "Normal"
            })
            .then_some(())
    })
    .await;
}

#[actix_rt::test]
async fn node_selector_places_pods_only_on_labelled_nodes() {
    let c = TestCluster::start();
    add_node(&c, "plain-1", "4", json!({}), json!({})).await;
    add_node(&c, "ssd-1", "4", json!({"disk": "ssd"}), json!({})).await;
    add_node(&c, "plain-2", "4", json!({}), json!({})).await;
    add_node(&c, "ssd-2", "4", json!({"disk": "ssd"}), json!({})).await;
    for i in 0..6 {
        create_pod(
            &c,
            &format!("db-{i}"),
            "100m",
            json!({"nodeSelector": {"disk": "ssd"}}),
        )
        .await;
    }
    let mut used = Vec::new();
    for i in 0..6 {
        let node = node_of(&c, &format!("db-{i}")).await;
        assert!(node.starts_with("ssd-"), "db-{i} landed on {node}");
        used.push(node);
    }
    used.sort();
    used.dedup();
    assert_eq!(used, ["ssd-1", "ssd-2"], "both labelled nodes are used");
}

#[actix_rt::test]
async fn a_pod_too_big_for_every_node_stays_pending_with_the_reasons_until_a_big_node_joins() {
    let c = TestCluster::start();
    add_node(&c, "small-1", "2", json!({}), json!({})).await;
    add_node(&c, "small-2", "2", json!({}), json!({})).await;
    add_node(&c, "small-ssd", "2", json!({"disk": "ssd"}), json!({})).await;
    create_pod(&c, "big", "8", json!({})).await;
    create_pod(&c, "big-ssd", "8", json!({"nodeSelector": {"disk": "ssd"}})).await;

    assert_eq!(
        unschedulable_message(&c, "big").await,
        "0/3 nodes are available: 3 Insufficient cpu. \
         preemption: 0/3 nodes are available: 3 No preemption victims found for incoming pod.."
    );
    assert_eq!(
        unschedulable_message(&c, "big-ssd").await,
        "0/3 nodes are available: 1 Insufficient cpu, 2 node(s) didn't match Pod's node affinity/selector. \
         preemption: 0/3 nodes are available: 1 No preemption victims found for incoming pod, \
         2 Preemption is not helpful for scheduling.."
    );
    eventually(WAIT, "a FailedScheduling event", || async {
        let events = get(&c, &format!("{NS}/events")).await;
        events["items"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|e| {
                e["reason"] == "FailedScheduling"
                    && e["type"] == "Warning"
                    && e["involvedObject"]["name"] == "big"
                    && e["message"]
                        == "0/3 nodes are available: 3 Insufficient cpu. \
                            preemption: 0/3 nodes are available: 3 No preemption victims found for incoming pod.."
            })
            .then_some(())
    })
    .await;

    // Nothing changes, so nothing is retried: no busy loop (our own status writes come
    // back as pod updates and must not wake the pods either). A retry would repeat the
    // event, which counts repeats; waiting a few housekeeping periods is the point here.
    let count = || async {
        let events = get(&c, &format!("{NS}/events")).await;
        events["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["reason"] == "FailedScheduling" && e["involvedObject"]["name"] == "big")
            .map(|e| e["count"].as_u64().unwrap_or(1))
            .sum::<u64>()
    };
    let before = count().await;
    tokio::time::sleep(Duration::from_millis(3000)).await;
    assert_eq!(
        count().await,
        before,
        "an unschedulable pod was retried with nothing changed"
    );
    let p = get(&c, &format!("{NS}/pods/big")).await;
    assert!(p["spec"]["nodeName"].is_null());

    add_node(&c, "big-ssd-node", "16", json!({"disk": "ssd"}), json!({})).await;
    assert_eq!(node_of(&c, "big").await, "big-ssd-node");
    assert_eq!(node_of(&c, "big-ssd").await, "big-ssd-node");
    let p = get(&c, &format!("{NS}/pods/big")).await;
    let scheduled = p["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "PodScheduled")
        .cloned()
        .unwrap_or(Value::Null);
    assert_eq!(scheduled["status"], "True", "{p}");
}

#[actix_rt::test]
async fn a_cordoned_node_gets_no_new_pods() {
    let c = TestCluster::start();
    add_node(&c, "open", "4", json!({}), json!({})).await;
    add_node(&c, "cordoned", "4", json!({}), json!({})).await;
    // What `kubectl cordon cordoned` sends.
    patch(
        &c,
        "/api/v1/nodes/cordoned",
        json!({"spec": {"unschedulable": true}}),
    )
    .await;
    for i in 0..4 {
        create_pod(&c, &format!("p-{i}"), "100m", json!({})).await;
    }
    for i in 0..4 {
        assert_eq!(node_of(&c, &format!("p-{i}")).await, "open");
    }
    // With the open node full, the reasons name the cordon.
    create_pod(&c, "too-big", "3900m", json!({})).await;
    assert_eq!(
        unschedulable_message(&c, "too-big").await,
        "0/2 nodes are available: 1 Insufficient cpu, 1 node(s) were unschedulable. \
         preemption: 0/2 nodes are available: 1 No preemption victims found for incoming pod, \
         1 Preemption is not helpful for scheduling.."
    );
    // Uncordon: the waiting pod goes to the node that is open again.
    patch(
        &c,
        "/api/v1/nodes/cordoned",
        json!({"spec": {"unschedulable": false}}),
    )
    .await;
    assert_eq!(node_of(&c, "too-big").await, "cordoned");
}

#[actix_rt::test]
async fn a_tainted_node_only_takes_pods_that_tolerate_its_taint() {
    let c = TestCluster::start();
    add_node(&c, "plain", "4", json!({"pool": "plain"}), json!({})).await;
    add_node(
        &c,
        "gpu",
        "4",
        json!({"pool": "gpu"}),
        json!({"taints": [{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]}),
    )
    .await;
    for i in 0..4 {
        create_pod(&c, &format!("web-{i}"), "100m", json!({})).await;
    }
    for i in 0..4 {
        assert_eq!(node_of(&c, &format!("web-{i}")).await, "plain");
    }
    let tolerate =
        json!([{"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}]);
    create_pod(
        &c,
        "trainer",
        "100m",
        json!({"tolerations": tolerate, "nodeSelector": {"pool": "gpu"}}),
    )
    .await;
    assert_eq!(node_of(&c, "trainer").await, "gpu");
    create_pod(
        &c,
        "intruder",
        "100m",
        json!({"nodeSelector": {"pool": "gpu"}}),
    )
    .await;
    assert_eq!(
        unschedulable_message(&c, "intruder").await,
        "0/2 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, \
         1 node(s) had untolerated taint {dedicated: gpu}. \
         preemption: 0/2 nodes are available: 2 Preemption is not helpful for scheduling.."
    );
}

#[actix_rt::test]
async fn a_scheduler_that_panics_is_restarted_and_keeps_scheduling() {
    let c = TestCluster::start_with(|cfg| cfg.scheduler.enabled = false);
    let scheduler = start_own_scheduler(&c);
    add_node(&c, "n1", "4", json!({}), json!({})).await;
    create_pod(&c, "before", "100m", json!({})).await;
    assert_eq!(node_of(&c, "before").await, "n1");

    let reply = scheduler
        .send(InjectPanic)
        .await
        .expect("mailbox still open");
    assert!(reply.is_err(), "the injected panic surfaces as an error");
    let stats = eventually(WAIT, "the restart", || async {
        let s = scheduler
            .send(GetStats)
            .await
            .expect("mailbox open after restart");
        (s.restarts == 1).then_some(s)
    })
    .await;
    assert_eq!(stats.restarts, 1);

    // Fresh caches, re-listed: the pod bound before counts, the new one is placed.
    create_pod(&c, "after", "3800m", json!({})).await;
    create_pod(&c, "no-room", "200m", json!({})).await;
    assert_eq!(node_of(&c, "after").await, "n1");
    assert_eq!(
        unschedulable_message(&c, "no-room").await,
        "0/1 nodes are available: 1 Insufficient cpu. \
         preemption: 0/1 nodes are available: 1 No preemption victims found for incoming pod.."
    );
}
