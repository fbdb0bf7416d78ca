//! DaemonSets as a user types them, on the real Docker Engine with the machine's kubectl:
//! one pod per node (none on a node with a taint the pods do not tolerate), a node that
//! joins later gets its pod and a node that leaves loses it, `kubectl set image` rolls out
//! through `kubectl rollout status`, `kubectl rollout history` lists the
//! ControllerRevisions and `kubectl rollout undo` goes back; bad input is refused with
//! Kubernetes' field paths; the official Python client drives the kind too.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Value};
use skiff::config::NodeConfig;
use skiff_integration::{
    call, client, eventually, node_names, python_client, DockerCleanup, Kubectl, TestCluster,
};

const V2: &str = "skiff/busybox:ds-v2";

async fn get(c: &TestCluster, path: &str) -> Value {
    call(client().get(c.url(path))).await.1
}

/// Live pods of the DaemonSet by node, with their images.
async fn pods_by_node(c: &TestCluster) -> BTreeMap<String, Vec<String>> {
    let list = get(
        c,
        "/api/v1/namespaces/default/pods?labelSelector=app%3Dagent",
    )
    .await;
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for p in list["items"].as_array().into_iter().flatten() {
        if p.pointer("/metadata/deletionTimestamp").is_some() {
            continue;
        }
        let node = p["spec"]["nodeName"].as_str().unwrap_or("<unscheduled>");
        let image = p["spec"]["containers"][0]["image"].as_str().unwrap_or("");
        out.entry(node.to_string())
            .or_default()
            .push(image.to_string());
    }
    out
}

fn docker_node(name: &str) -> NodeConfig {
    NodeConfig {
        name: name.to_string(),
        runtime: "docker".into(),
        heartbeat_seconds: 2,
        ..NodeConfig::default()
    }
}

const MANIFEST: &str = r#"
apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: agent
spec:
  selector:
    matchLabels: {app: agent}
  template:
    metadata:
      labels: {app: agent}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: agent
        image: skiff/busybox:latest
        command: ["sleep", "3600"]
"#;

#[tokio::test]
async fn a_daemon_set_follows_the_nodes_and_rolls_out_and_back_as_kubectl_drives_it() {
    skiff_integration::require_docker_and_kubectl();
    let names = node_names("ds", 5);
    let _cleanup = DockerCleanup::new(&names);
    let _tag = skiff_integration::ImageTag::new(V2);
    let (plain, tainted, joining) = (&names[..3], &names[3], &names[4]);
    let c = TestCluster::start_with(|cfg| {
        cfg.nodes = plain.iter().map(|n| docker_node(n)).collect();
        let mut t = docker_node(tainted);
        t.taints = vec!["dedicated=gpu:NoSchedule".into()];
        cfg.nodes.push(t);
    });
    let k = Kubectl(&c.kubeconfig);
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("ds.yaml");
    std::fs::write(&file, MANIFEST).expect("write manifest");
    let rollout = ["rollout", "status", "daemonset/agent", "--timeout=120s"];

    k.ok(&["apply", "-f", file.to_str().unwrap_or_default()]);
    let out = k.ok(&rollout);
    assert!(out.contains("successfully rolled out"), "{out}");
    // One pod on each untainted node, none on the tainted one.
    let by_node = pods_by_node(&c).await;
    let nodes: Vec<&String> = by_node.keys().collect();
    assert_eq!(nodes, plain.iter().collect::<Vec<_>>(), "{by_node:?}");
    assert!(by_node.values().all(|p| p.len() == 1), "{by_node:?}");
    let ds = get(&c, "/apis/apps/v1/namespaces/default/daemonsets/agent").await;
    assert_eq!(ds["status"]["desiredNumberScheduled"], 3, "{ds}");
    assert_eq!(ds["status"]["numberAvailable"], 3, "{ds}");
    assert_eq!(
        ds["spec"]["updateStrategy"]["rollingUpdate"]["maxUnavailable"],
        1
    );
    let pod = get(
        &c,
        "/api/v1/namespaces/default/pods?labelSelector=app%3Dagent",
    )
    .await;
    let pod = &pod["items"][0];
    let term = &pod["spec"]["affinity"]["nodeAffinity"]
        ["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"][0]["matchFields"]
        [0];
    assert_eq!(term["key"], "metadata.name", "{pod}");
    assert_eq!(term["values"][0], pod["spec"]["nodeName"], "{pod}");
    let out = k.ok(&["get", "daemonsets"]);
    assert!(
        out.contains("NODE SELECTOR") && out.contains("UP-TO-DATE"),
        "{out}"
    );

    // A node that joins gets its pod.
    let mut joined = c.join_node(NodeConfig {
        address: Some("127.0.0.77".into()),
        ..docker_node(joining)
    });
    eventually(
        Duration::from_secs(90),
        "the joined node runs a pod",
        || async { pods_by_node(&c).await.get(joining.as_str()).map(|_| ()) },
    )
    .await;
    let out = k.ok(&rollout);
    assert!(out.contains("successfully rolled out"), "{out}");

    // A new image rolls out node by node; history shows both revisions.
    k.ok(&["set", "image", "daemonset/agent", &format!("agent={V2}")]);
    let out = k.ok(&rollout);
    assert!(out.contains("successfully rolled out"), "{out}");
    let by_node = eventually(Duration::from_secs(60), "every pod at v2", || async {
        let by_node = pods_by_node(&c).await;
        (by_node.len() == 4 && by_node.values().all(|p| p == &[V2.to_string()])).then_some(by_node)
    })
    .await;
    assert!(!by_node.contains_key(tainted.as_str()));
    let revisions = get(&c, "/apis/apps/v1/namespaces/default/controllerrevisions").await;
    let revisions = revisions["items"].as_array().cloned().unwrap_or_default();
    assert_eq!(revisions.len(), 2, "{revisions:?}");
    let out = k.ok(&["rollout", "history", "daemonset/agent"]);
    assert!(
        out.contains("REVISION") && out.contains('1') && out.contains('2'),
        "{out}"
    );
    let out = k.ok(&["rollout", "history", "daemonset/agent", "--revision=1"]);
    assert!(out.contains("skiff/busybox:latest"), "{out}");

    // Undo goes back to the first template, whose revision becomes number 3.
    let out = k.ok(&["rollout", "undo", "daemonset/agent"]);
    assert!(out.contains("rolled back"), "{out}");
    k.ok(&rollout);
    eventually(
        Duration::from_secs(60),
        "every pod back at latest",
        || async {
            let by_node = pods_by_node(&c).await;
            (by_node.len() == 4
                && by_node
                    .values()
                    .all(|p| p == &["skiff/busybox:latest".to_string()]))
            .then_some(())
        },
    )
    .await;
    let revisions = get(&c, "/apis/apps/v1/namespaces/default/controllerrevisions").await;
    let numbers: Vec<i64> = revisions["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["revision"].as_i64())
        .collect();
    assert_eq!(numbers.len(), 2, "{revisions}");
    assert!(numbers.contains(&3) && numbers.contains(&2), "{numbers:?}");

    // A node that leaves loses its pod.
    joined.stop();
    k.ok(&["delete", "node", joining]);
    eventually(
        Duration::from_secs(60),
        "the departed node's pod gone",
        || async {
            let by_node = pods_by_node(&c).await;
            (by_node.len() == 3 && !by_node.contains_key(joining.as_str())).then_some(())
        },
    )
    .await;
    let ds = eventually(Duration::from_secs(30), "three desired", || async {
        let ds = get(&c, "/apis/apps/v1/namespaces/default/daemonsets/agent").await;
        (ds["status"]["desiredNumberScheduled"] == 3).then_some(ds)
    })
    .await;
    assert_eq!(ds["status"]["numberMisscheduled"], 0, "{ds}");

    // Deleting the DaemonSet takes its pods and revisions with it.
    k.ok(&["delete", "daemonset", "agent"]);
    eventually(
        Duration::from_secs(60),
        "pods and revisions gone",
        || async {
            let revisions = get(&c, "/apis/apps/v1/namespaces/default/controllerrevisions").await;
            let none = revisions["items"].as_array().is_none_or(Vec::is_empty);
            (none && pods_by_node(&c).await.is_empty()).then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn bad_daemon_sets_are_refused_with_kubernetes_field_paths() {
    let c = TestCluster::api_only();
    let base = "/apis/apps/v1/namespaces/default/daemonsets";
    let bad = json!({"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "bad"},
        "spec": {"selector": {"matchLabels": {"app": "a"}},
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": -1}},
            "template": {"metadata": {"labels": {"app": "b"}},
                "spec": {"containers": [{"name": "c", "image": "i"}]}}}});
    let (code, status) = call(client().post(c.url(base)).json(&bad)).await;
    assert_eq!(code, 422, "{status}");
    let fields: Vec<&str> = status["details"]["causes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["field"].as_str())
        .collect();
    assert!(
        fields.contains(&"spec.template.metadata.labels"),
        "{status}"
    );
    assert!(
        fields.contains(&"spec.updateStrategy.rollingUpdate.maxUnavailable"),
        "{status}"
    );
    let message = status["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with("DaemonSet.apps \"bad\" is invalid"),
        "{message}"
    );
    // A revision's data may not change once written.
    let rev = json!({"apiVersion": "apps/v1", "kind": "ControllerRevision",
        "metadata": {"name": "r1"}, "data": {"spec": {}}, "revision": 1});
    let revs = "/apis/apps/v1/namespaces/default/controllerrevisions";
    let (code, body) = call(client().post(c.url(revs)).json(&rev)).await;
    assert_eq!(code, 201, "{body}");
    let (code, status) = call(
        client()
            .patch(c.url(&format!("{revs}/r1")))
            .header("content-type", "application/merge-patch+json")
            .body(json!({"data": {"spec": {"x": 1}}}).to_string()),
    )
    .await;
    assert_eq!(code, 422, "{status}");
    assert_eq!(status["details"]["causes"][0]["field"], "data", "{status}");
}

const PYTHON_APPS: &str = r#"
import sys, time
from kubernetes import client, config
config.load_kube_config(sys.argv[1])
apps = client.AppsV1Api()
ns = "default"
body = client.V1DaemonSet(
    metadata=client.V1ObjectMeta(name="py-agent"),
    spec=client.V1DaemonSetSpec(
        selector=client.V1LabelSelector(match_labels={"app": "py-agent"}),
        template=client.V1PodTemplateSpec(
            metadata=client.V1ObjectMeta(labels={"app": "py-agent"}),
            spec=client.V1PodSpec(containers=[client.V1Container(name="c", image="i")]))))
ds = apps.create_namespaced_daemon_set(ns, body)
assert ds.spec.update_strategy.type == "RollingUpdate", ds.spec.update_strategy
assert ds.spec.revision_history_limit == 10
patched = apps.patch_namespaced_daemon_set("py-agent", ns,
    {"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "i2"}]}}}})
assert patched.spec.template.spec.containers[0].image == "i2"
assert patched.metadata.generation == 2, patched.metadata.generation
names = [d.metadata.name for d in apps.list_namespaced_daemon_set(ns).items]
assert names == ["py-agent"], names
for _ in range(100):
    revs = apps.list_namespaced_controller_revision(ns, label_selector="app=py-agent").items
    if len(revs) == 2:
        break
    time.sleep(0.1)
assert len(revs) == 2, [r.metadata.name for r in revs]
apps.delete_namespaced_daemon_set("py-agent", ns)
print("ok")
"#;

#[tokio::test]
async fn the_official_python_client_creates_patches_and_deletes_a_daemon_set() {
    // Controllers run (history is written), no nodes: no containers to clean up.
    let c = TestCluster::start();
    let kubeconfig = c.kubeconfig.clone();
    let out = tokio::task::spawn_blocking(move || python_client(PYTHON_APPS, &kubeconfig, &[]))
        .await
        .expect("python thread");
    assert_eq!(out, "ok");
}
