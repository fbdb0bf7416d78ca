//! The scheduler's workload plugins against a real cluster (real RocksDB, real HTTP, the
//! system's own scheduler, hollow nodes whose kubelets run the simulated runtime so pods
//! start and finish their deletions): inter-pod anti-affinity spreading a Deployment one
//! pod per node, required affinity co-locating, topology spread over zones, PriorityClasses
//! through kubectl and the Priority admission, and a high-priority pod preempting a
//! low-priority one on a full node. Pods that must stay Pending are checked by waiting
//! for their PodScheduled=False condition with kube-scheduler's message.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Value};
use skiff::config::NodeConfig;
use skiff_integration::{call, client, eventually, kubectl, TestCluster};

const NS: &str = "/api/v1/namespaces/default";
const WAIT: Duration = Duration::from_secs(30);

/// A cluster with hollow nodes `(name, zone, cpu)`.
fn cluster(nodes: &[(&str, &str, &str)]) -> TestCluster {
    let nodes: Vec<NodeConfig> = nodes
        .iter()
        .map(|(name, zone, cpu)| NodeConfig {
            name: name.to_string(),
            runtime: "sim".into(),
            labels: BTreeMap::from([("topology.kubernetes.io/zone".to_string(), zone.to_string())]),
            cpu: cpu.to_string(),
            heartbeat_seconds: 2,
            ..NodeConfig::default()
        })
        .collect();
    TestCluster::start_with(move |cfg| cfg.nodes = nodes)
}

async fn post(c: &TestCluster, path: &str, body: Value) -> Value {
    let (code, out) = call(client().post(c.url(path)).json(&body)).await;
    assert_eq!(code, 201, "POST {path}: {out}");
    out
}

async fn get(c: &TestCluster, path: &str) -> (u16, Value) {
    call(client().get(c.url(path))).await
}

/// Wait until every node is registered and Ready (the scheduler sees them).
async fn nodes_ready(c: &TestCluster, n: usize) {
    eventually(WAIT, "nodes Ready", || async {
        let (_, list) = get(c, "/api/v1/nodes").await;
        let ready = list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|n| {
                n["status"]["conditions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            })
            .count();
        (ready == n).then_some(())
    })
    .await;
}

fn container(cpu: &str) -> Value {
    json!([{"name": "app", "image": "busybox:1.36", "command": ["sleep", "3600"],
        "resources": {"requests": {"cpu": cpu, "memory": "16Mi"}}}])
}

/// The pods labelled `app=<app>`.
async fn pods_of(c: &TestCluster, app: &str) -> Vec<Value> {
    let (_, list) = get(c, &format!("{NS}/pods?labelSelector=app%3D{app}")).await;
    list["items"].as_array().cloned().unwrap_or_default()
}

fn node_of(p: &Value) -> Option<String> {
    p["spec"]["nodeName"].as_str().map(str::to_string)
}

/// Wait until `n` pods of `app` are bound; returns their nodes, sorted.
async fn bound_nodes(c: &TestCluster, app: &str, n: usize) -> Vec<String> {
    eventually(WAIT, &format!("{n} pods of {app} bound"), || async {
        let mut nodes: Vec<String> = pods_of(c, app).await.iter().filter_map(node_of).collect();
        nodes.sort();
        (nodes.len() == n).then_some(nodes)
    })
    .await
}

/// Wait for the pod's PodScheduled=False condition with exactly this message.
async fn stays_pending_with(c: &TestCluster, name: &str, message: &str) {
    let mut last = String::new();
    let found = tokio::time::timeout(WAIT, async {
        loop {
            let (_, p) = get(c, &format!("{NS}/pods/{name}")).await;
            assert!(p["spec"]["nodeName"].is_null(), "pod {name} was bound: {p}");
            let cond = p["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|c| c["type"] == "PodScheduled")
                .cloned();
            if let Some(cond) = cond {
                last = cond["message"].as_str().unwrap_or_default().to_string();
                if cond["status"] == "False" && cond["reason"] == "Unschedulable" && last == message
                {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(
        found.is_ok(),
        "pod {name}: wanted {message:?}, last {last:?}"
    );
}

#[actix_rt::test]
async fn required_anti_affinity_spreads_a_deployment_one_pod_per_node() {
    let c = cluster(&[
        ("aff-a", "z1", "4"),
        ("aff-b", "z1", "4"),
        ("aff-c", "z2", "4"),
    ]);
    nodes_ready(&c, 3).await;
    let anti = json!({"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"app": "spread"}}, "topologyKey": "kubernetes.io/hostname"}]}});
    post(
        &c,
        "/apis/apps/v1/namespaces/default/deployments",
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "spread"},
            "spec": {"replicas": 4, "selector": {"matchLabels": {"app": "spread"}},
                "template": {"metadata": {"labels": {"app": "spread"}},
                    "spec": {"affinity": anti, "containers": container("100m")}}}}),
    )
    .await;
    let nodes = bound_nodes(&c, "spread", 3).await;
    assert_eq!(nodes, ["aff-a", "aff-b", "aff-c"], "one pod per node");
    let pending = eventually(WAIT, "the fourth pod", || async {
        pods_of(&c, "spread")
            .await
            .into_iter()
            .find(|p| node_of(p).is_none())
            .and_then(|p| p["metadata"]["name"].as_str().map(str::to_string))
    })
    .await;
    stays_pending_with(
        &c,
        &pending,
        "0/3 nodes are available: 3 node(s) didn't match pod anti-affinity rules. \
         preemption: 0/3 nodes are available: 3 No preemption victims found for incoming pod..",
    )
    .await;
}

#[actix_rt::test]
async fn required_affinity_co_locates_an_rc_with_its_peer() {
    let c = cluster(&[
        ("col-a", "z1", "4"),
        ("col-b", "z1", "4"),
        ("col-c", "z2", "4"),
    ]);
    nodes_ready(&c, 3).await;
    post(
        &c,
        &format!("{NS}/pods"),
        json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "db", "labels": {"app": "db"}},
            "spec": {"containers": container("100m")}}),
    )
    .await;
    let db = bound_nodes(&c, "db", 1).await.remove(0);
    let affinity = json!({"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"app": "db"}}, "topologyKey": "kubernetes.io/hostname"}]}});
    post(
        &c,
        &format!("{NS}/replicationcontrollers"),
        json!({"apiVersion": "v1", "kind": "ReplicationController", "metadata": {"name": "cache"},
            "spec": {"replicas": 3, "selector": {"app": "cache"}, "template": {
                "metadata": {"labels": {"app": "cache"}},
                "spec": {"affinity": affinity, "containers": container("100m")}}}}),
    )
    .await;
    let nodes = bound_nodes(&c, "cache", 3).await;
    assert_eq!(nodes, [db.clone(), db.clone(), db], "all next to the db");
}

#[actix_rt::test]
async fn topology_spread_balances_zones_and_refuses_to_skew() {
    // Two nodes in z1, one small one in z2: plain spreading would put two of every
    // three pods in z1.
    let c = cluster(&[
        ("tsc-a", "z1", "4"),
        ("tsc-b", "z1", "4"),
        ("tsc-c", "z2", "1"),
    ]);
    nodes_ready(&c, 3).await;
    let spread = json!([{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
        "whenUnsatisfiable": "DoNotSchedule", "labelSelector": {"matchLabels": {"app": "zoned"}}}]);
    for i in 0..2 {
        post(
            &c,
            &format!("{NS}/pods"),
            json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": format!("zoned-{i}"), "labels": {"app": "zoned"}},
                "spec": {"topologySpreadConstraints": spread, "containers": container("400m")}}),
        )
        .await;
        bound_nodes(&c, "zoned", i + 1).await;
    }
    let nodes = bound_nodes(&c, "zoned", 2).await;
    assert!(
        nodes.contains(&"tsc-c".to_string()),
        "one pod in z2: {nodes:?}"
    );
    // z2's node has room for one more 400m pod; z1 may run ahead of z2 by one only.
    for i in 2..5 {
        post(
            &c,
            &format!("{NS}/pods"),
            json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": format!("zoned-{i}"), "labels": {"app": "zoned"}},
                "spec": {"topologySpreadConstraints": spread, "containers": container("400m")}}),
        )
        .await;
        bound_nodes(&c, "zoned", i + 1).await;
    }
    let nodes = bound_nodes(&c, "zoned", 5).await;
    assert_eq!(
        nodes.iter().filter(|n| *n == "tsc-c").count(),
        2,
        "{nodes:?}"
    );
    // z2 is full (two 400m pods on one core) and z1 holds three: a sixth would put z1
    // two above z2.
    post(
        &c,
        &format!("{NS}/pods"),
        json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "zoned-5", "labels": {"app": "zoned"}},
            "spec": {"topologySpreadConstraints": spread, "containers": container("400m")}}),
    )
    .await;
    stays_pending_with(
        &c,
        "zoned-5",
        "0/3 nodes are available: 1 Insufficient cpu, \
         2 node(s) didn't match pod topology spread constraints. \
         preemption: 0/3 nodes are available: 3 No preemption victims found for incoming pod..",
    )
    .await;
}

#[actix_rt::test]
async fn priority_classes_through_kubectl_and_the_priority_admission() {
    let c = cluster(&[]);
    let k = |args: &[&str]| kubectl(&c.kubeconfig, args);
    let (code, out, err) = k(&[
        "create",
        "priorityclass",
        "sched-high",
        "--value=1000",
        "--description=for the test",
        "--preemption-policy=PreemptLowerPriority",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        out.trim(),
        "priorityclass.scheduling.k8s.io/sched-high created"
    );
    let (code, out, err) = k(&["get", "priorityclasses"]);
    assert_eq!(code, 0, "{err}");
    let header: Vec<&str> = out
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        ["NAME", "VALUE", "GLOBAL-DEFAULT", "AGE", "PREEMPTIONPOLICY"]
    );
    for line in [
        "system-cluster-critical",
        "system-node-critical",
        "sched-high",
    ] {
        assert!(
            out.lines().any(|l| l.starts_with(line)),
            "{line} missing:\n{out}"
        );
    }
    let row: Vec<&str> = out
        .lines()
        .find(|l| l.starts_with("system-node-critical"))
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        (row[1], row[2], row[4]),
        ("2000001000", "false", "PreemptLowerPriority")
    );

    // One global default at most.
    let (code, _, err) = k(&[
        "create",
        "priorityclass",
        "sched-default",
        "--value=10",
        "--global-default",
    ]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = k(&[
        "create",
        "priorityclass",
        "sched-default-2",
        "--value=20",
        "--global-default",
    ]);
    assert_ne!(code, 0);
    assert!(
        err.contains("priorityclasses.scheduling.k8s.io \"sched-default-2\" is forbidden: PriorityClass sched-default is already marked as default. Only one default can exist"),
        "{err}"
    );
    // Reserved names.
    let (code, _, err) = k(&["create", "priorityclass", "system-mine", "--value=10"]);
    assert_ne!(code, 0);
    assert!(err.contains("metadata.name: Forbidden: priority class is a system priority class: system-mine is not a known system priority class"), "{err}");

    // Admission: the class's value, the default for pods without one, 403 for a missing one.
    let named = post(
        &c,
        &format!("{NS}/pods"),
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "named"},
            "spec": {"priorityClassName": "sched-high", "containers": container("10m")}}),
    )
    .await;
    assert_eq!(named["spec"]["priority"], 1000);
    assert_eq!(named["spec"]["preemptionPolicy"], "PreemptLowerPriority");
    let plain = post(
        &c,
        &format!("{NS}/pods"),
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "plain"},
            "spec": {"containers": container("10m")}}),
    )
    .await;
    assert_eq!(plain["spec"]["priority"], 10);
    assert_eq!(plain["spec"]["priorityClassName"], "sched-default");
    let (code, body) = call(client().post(c.url(&format!("{NS}/pods"))).json(&json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "lost"},
        "spec": {"priorityClassName": "nope", "containers": container("10m")}})))
    .await;
    assert_eq!(code, 403, "{body}");
    assert_eq!(
        body["message"],
        "pods \"lost\" is forbidden: no PriorityClass with name nope was found"
    );
    let (code, body) = call(client().post(c.url(&format!("{NS}/pods"))).json(&json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "pushy"},
        "spec": {"priorityClassName": "sched-high", "priority": 5, "containers": container("10m")}})))
    .await;
    assert_eq!(code, 403, "{body}");
    assert_eq!(body["message"], "pods \"pushy\" is forbidden: the integer value of priority (5) must not be provided in pod spec; priority admission controller computed 1000 from the given PriorityClass name");
    // A class's value is fixed.
    let (code, _, err) = k(&[
        "patch",
        "priorityclass",
        "sched-high",
        "-p",
        "{\"value\": 5}",
    ]);
    assert_ne!(code, 0);
    assert!(
        err.contains("value: Forbidden: may not be changed in an update."),
        "{err}"
    );
}

#[actix_rt::test]
async fn a_high_priority_pod_preempts_a_low_priority_one_on_a_full_node() {
    let c = cluster(&[("pre-a", "z1", "1")]);
    nodes_ready(&c, 1).await;
    let (code, out, err) = kubectl(
        &c.kubeconfig,
        &["create", "priorityclass", "sched-urgent", "--value=100000"],
    );
    assert_eq!(code, 0, "{out}{err}");
    post(
        &c,
        &format!("{NS}/pods"),
        json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "victim", "labels": {"app": "victim"}},
            "spec": {"terminationGracePeriodSeconds": 1, "containers": container("800m")}}),
    )
    .await;
    bound_nodes(&c, "victim", 1).await;
    let victim = pods_of(&c, "victim").await.remove(0);
    let victim_uid = victim["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    post(
        &c,
        &format!("{NS}/pods"),
        json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "urgent", "labels": {"app": "urgent"}},
            "spec": {"priorityClassName": "sched-urgent", "containers": container("800m")}}),
    )
    .await;
    // The preemptor is nominated to the node while the victim goes.
    let nominated = eventually(WAIT, "the preemptor nominated", || async {
        let (_, p) = get(&c, &format!("{NS}/pods/urgent")).await;
        let nominated = p["status"]["nominatedNodeName"]
            .as_str()
            .map(str::to_string);
        let bound = node_of(&p);
        nominated.or(bound)
    })
    .await;
    assert_eq!(nominated, "pre-a");
    let node = bound_nodes(&c, "urgent", 1).await.remove(0);
    assert_eq!(node, "pre-a");
    eventually(WAIT, "the victim deleted", || async {
        let (code, p) = get(&c, &format!("{NS}/pods/victim")).await;
        (code == 404 || p["metadata"]["uid"] != victim_uid.as_str()).then_some(())
    })
    .await;
    // The victim's event names the preemptor.
    let (_, preemptor) = get(&c, &format!("{NS}/pods/urgent")).await;
    let expected = format!(
        "Preempted by pod {} on node pre-a",
        preemptor["metadata"]["uid"].as_str().unwrap_or_default()
    );
    eventually(WAIT, "the Preempted event", || async {
        let (_, events) = get(&c, &format!("{NS}/events")).await;
        events["items"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|e| e["reason"] == "Preempted" && e["message"] == expected.as_str())
            .then_some(())
    })
    .await;
    // A pod that may not preempt waits, and says why.
    let (code, out, err) = kubectl(
        &c.kubeconfig,
        &[
            "create",
            "priorityclass",
            "sched-polite",
            "--value=100000",
            "--preemption-policy=Never",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    post(
        &c,
        &format!("{NS}/pods"),
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "polite"},
            "spec": {"priorityClassName": "sched-polite", "containers": container("800m")}}),
    )
    .await;
    stays_pending_with(
        &c,
        "polite",
        "0/1 nodes are available: 1 Insufficient cpu. \
         preemption: not eligible due to preemptionPolicy=Never..",
    )
    .await;
}
