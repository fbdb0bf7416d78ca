//! PodDisruptionBudgets and the eviction subresource: `kubectl drain` waits while a
//! budget allows no disruption and goes through once it allows one (real Docker Engine,
//! the machine's kubectl); the official Python client's PolicyV1Api and evictions,
//! answered 429 with the budget's numbers, 500 for a pod under two budgets, and dry-run.

use std::time::Duration;

use serde_json::{json, Value};
use skiff_integration::{
    call, client, eventually, node_names, python_client, DockerCleanup, Kubectl, TestCluster,
};

async fn get(c: &TestCluster, path: &str) -> Value {
    call(client().get(c.url(path))).await.1
}

/// The budget once its controller has seen its current generation.
async fn observed_budget(c: &TestCluster, name: &str, want: impl Fn(&Value) -> bool) -> Value {
    let path = format!("/apis/policy/v1/namespaces/default/poddisruptionbudgets/{name}");
    eventually(Duration::from_secs(60), "the budget's status", || async {
        let b = get(c, &path).await;
        let seen = b.pointer("/status/observedGeneration") == b.pointer("/metadata/generation");
        (seen && want(&b)).then_some(b)
    })
    .await
}

#[tokio::test]
async fn kubectl_drain_waits_for_a_disruption_budget_and_proceeds_when_it_allows() {
    skiff_integration::require_docker_and_kubectl();
    let nodes = node_names("pdb", 2);
    let _cleanup = DockerCleanup::new(&nodes);
    let c = TestCluster::with_docker_nodes(&nodes);
    let k = Kubectl(&c.kubeconfig);

    k.ok(&[
        "create",
        "deployment",
        "web",
        "--image=skiff/busybox:latest",
        "--replicas=2",
        "--",
        "sleep",
        "3600",
    ]);
    k.ok(&["rollout", "status", "deployment/web", "--timeout=90s"]);
    k.ok(&[
        "create",
        "poddisruptionbudget",
        "web",
        "--selector=app=web",
        "--min-available=2",
    ]);
    let b = observed_budget(&c, "web", |b| b["status"]["currentHealthy"] == 2).await;
    assert_eq!(b["status"]["disruptionsAllowed"], 0, "{b}");
    assert_eq!(b["status"]["expectedPods"], 2);
    assert_eq!(b["status"]["conditions"][0]["reason"], "InsufficientPods");
    let table = k.ok(&["get", "pdb", "web"]);
    assert!(
        table.contains("MIN AVAILABLE") && table.contains("ALLOWED DISRUPTIONS"),
        "{table}"
    );

    let pods = get(
        &c,
        "/api/v1/namespaces/default/pods?labelSelector=app%3Dweb",
    )
    .await;
    let node = pods["items"][0]["spec"]["nodeName"]
        .as_str()
        .expect("bound")
        .to_string();
    let (code, out) = k.run(&["drain", &node, "--ignore-daemonsets", "--timeout=12s"]);
    assert_ne!(code, 0, "drain should time out: {out}");
    assert!(
        out.contains("Cannot evict pod as it would violate the pod's disruption budget."),
        "{out}"
    );
    let n = get(&c, &format!("/api/v1/nodes/{node}")).await;
    assert_eq!(n["spec"]["unschedulable"], true, "drain cordons first: {n}");
    let still = get(
        &c,
        "/api/v1/namespaces/default/pods?labelSelector=app%3Dweb",
    )
    .await;
    let on_node = |pods: &Value| {
        pods["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["spec"]["nodeName"] == node.as_str())
            .filter(|p| p.pointer("/metadata/deletionTimestamp").is_none())
            .count()
    };
    assert!(on_node(&still) >= 1, "the budget kept the pods: {still}");

    k.ok(&[
        "patch",
        "pdb",
        "web",
        "--type=merge",
        "-p",
        r#"{"spec":{"minAvailable":1}}"#,
    ]);
    observed_budget(&c, "web", |b| b["status"]["disruptionsAllowed"] == 1).await;
    let out = k.ok(&["drain", &node, "--ignore-daemonsets", "--timeout=120s"]);
    assert!(out.contains("evicted"), "{out}");
    let left = get(
        &c,
        "/api/v1/namespaces/default/pods?labelSelector=app%3Dweb",
    )
    .await;
    assert_eq!(on_node(&left), 0, "the node is drained: {left}");
    // The Deployment puts its pods back on the node that is still schedulable.
    k.ok(&["rollout", "status", "deployment/web", "--timeout=90s"]);
    k.ok(&["delete", "deployment", "web"]);
}

const PYTHON_SCRIPT: &str = r#"
import json, sys, time
from kubernetes import client, config
from kubernetes.client.rest import ApiException

config.load_kube_config(config_file=sys.argv[1])
core = client.CoreV1Api()
policy = client.PolicyV1Api()
ns = "default"

def budget(name, gen, pred):
    deadline = time.time() + 60
    while True:
        b = policy.read_namespaced_pod_disruption_budget_status(name, ns)
        if b.status and b.status.observed_generation == gen and pred(b.status):
            return b
        assert time.time() < deadline, f"budget {name} never settled: {b.status}"
        time.sleep(0.2)

def evict(pod, dry_run=None):
    body = client.V1Eviction(metadata=client.V1ObjectMeta(name=pod, namespace=ns))
    kwargs = {"dry_run": dry_run} if dry_run else {}
    return core.create_namespaced_pod_eviction(pod, ns, body, **kwargs)

def refused(pod):
    try:
        evict(pod)
    except ApiException as e:
        return e.status, json.loads(e.body)
    raise AssertionError(f"evicting {pod} was allowed")

policy.create_namespaced_pod_disruption_budget(ns, client.V1PodDisruptionBudget(
    metadata=client.V1ObjectMeta(name="db"),
    spec=client.V1PodDisruptionBudgetSpec(min_available=2,
        selector=client.V1LabelSelector(match_labels={"app": "db"}))))
b = budget("db", 1, lambda s: s.current_healthy == 2)
assert (b.status.disruptions_allowed, b.status.expected_pods, b.status.desired_healthy) == (0, 2, 2), b.status
assert b.status.conditions[0].type == "DisruptionAllowed" and b.status.conditions[0].status == "False"

code, status = refused("db-1")
assert code == 429, (code, status)
assert status["reason"] == "TooManyRequests", status
assert status["message"] == "Cannot evict pod as it would violate the pod's disruption budget.", status
assert status["details"]["causes"] == [{"reason": "DisruptionBudget",
    "message": "The disruption budget db needs 2 healthy pods and has 2 currently"}], status

policy.patch_namespaced_pod_disruption_budget("db", ns, {"spec": {"minAvailable": 1}})
budget("db", 2, lambda s: s.disruptions_allowed == 1)

evict("db-1", dry_run="All")
assert core.read_namespaced_pod("db-1", ns).metadata.deletion_timestamp is None
assert policy.read_namespaced_pod_disruption_budget("db", ns).status.disruptions_allowed == 1

evict("db-1")
p = core.list_namespaced_pod(ns, label_selector="app=db")
assert all(x.metadata.deletion_timestamp is not None for x in p.items if x.metadata.name == "db-1"), p
after = policy.read_namespaced_pod_disruption_budget("db", ns).status
assert after.disruptions_allowed == 0, after
code, status = refused("db-2")
assert code == 429, (code, status)

policy.create_namespaced_pod_disruption_budget(ns, client.V1PodDisruptionBudget(
    metadata=client.V1ObjectMeta(name="db-too"),
    spec=client.V1PodDisruptionBudgetSpec(max_unavailable=1,
        selector=client.V1LabelSelector(match_labels={"app": "db"}))))
code, status = refused("db-2")
assert code == 500, (code, status)
assert status["message"] == "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.", status

policy.delete_namespaced_pod_disruption_budget("db-too", ns)
policy.delete_namespaced_pod_disruption_budget("db", ns)
print("ok")
"#;

#[tokio::test]
async fn the_python_client_manages_budgets_and_evictions_answer_as_kubernetes_does() {
    let c = TestCluster::start_with(|cfg| {
        cfg.nodes = vec![skiff::config::NodeConfig {
            name: "pdb-sim".into(),
            runtime: "sim".into(),
            heartbeat_seconds: 2,
            ..skiff::config::NodeConfig::default()
        }];
    });
    for name in ["db-1", "db-2"] {
        let pod = skiff_integration::pod(name, json!({"app": "db"}));
        let (code, body) = call(
            client()
                .post(c.url("/api/v1/namespaces/default/pods"))
                .json(&pod),
        )
        .await;
        assert_eq!(code, 201, "{body}");
    }
    eventually(Duration::from_secs(30), "both pods ready", || async {
        let pods = get(&c, "/api/v1/namespaces/default/pods?labelSelector=app%3Ddb").await;
        let ready = pods["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| {
                p["status"]["conditions"].as_array().is_some_and(|cs| {
                    cs.iter()
                        .any(|c| c["type"] == "Ready" && c["status"] == "True")
                })
            })
            .count();
        (ready == 2).then_some(())
    })
    .await;

    let kubeconfig = c.kubeconfig.clone();
    let out = tokio::task::spawn_blocking(move || python_client(PYTHON_SCRIPT, &kubeconfig, &[]))
        .await
        .expect("python thread");
    assert_eq!(out, "ok");
}

#[tokio::test]
async fn an_invalid_budget_is_refused_with_kubernetes_field_paths() {
    let c = TestCluster::api_only();
    let body = json!({
        "apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
        "metadata": {"name": "bad"},
        "spec": {"minAvailable": 1, "maxUnavailable": "120%",
                 "selector": {"matchLabels": {"app": "x"}}},
    });
    let (code, status) = call(
        client()
            .post(c.url("/apis/policy/v1/namespaces/default/poddisruptionbudgets"))
            .json(&body),
    )
    .await;
    assert_eq!(code, 422, "{status}");
    let fields: Vec<&str> = status["details"]["causes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["field"].as_str())
        .collect();
    assert_eq!(fields, ["spec", "spec.maxUnavailable"], "{status}");
    assert!(
        status["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("PodDisruptionBudget.policy \"bad\" is invalid")),
        "{status}"
    );
}
