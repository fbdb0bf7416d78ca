//! Persistent storage the k3s way, against a real cluster (real RocksDB, real HTTP, the
//! system's scheduler and controllers, hollow nodes whose kubelets run the simulated
//! runtime) with the machine's kubectl: the default `local-path` StorageClass, a claim
//! applied with its pod provisioned on the node the pod was scheduled to (directory made,
//! volume pinned there), a second pod of the claim placed on that node against its own
//! preference, `kubectl delete pvc` held by the pods using it, then the volume and its
//! directory removed; a Retain class keeping both Released; static binding and the
//! scheduler's VolumeBinding messages; StatefulSet claim templates with their retention
//! policy; bad input refused with Kubernetes' field paths.
//!
//! What the kubelet does with the volume (mounting it into containers) is not tested
//! here: these tests assert the control plane's side.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{json, Value};
use skiff::config::NodeConfig;
use skiff_integration::{call, client, eventually, require_kubectl, Kubectl, TestCluster};

const NS: &str = "/api/v1/namespaces/default";
const WAIT: Duration = Duration::from_secs(30);

fn cluster(nodes: &[&str]) -> TestCluster {
    let nodes: Vec<NodeConfig> = nodes
        .iter()
        .map(|name| NodeConfig {
            name: name.to_string(),
            runtime: "sim".into(),
            labels: BTreeMap::new(),
            heartbeat_seconds: 2,
            ..NodeConfig::default()
        })
        .collect();
    TestCluster::start_with(move |cfg| cfg.nodes = nodes)
}

async fn get(c: &TestCluster, path: &str) -> (u16, Value) {
    call(client().get(c.url(path))).await
}

async fn post(c: &TestCluster, path: &str, body: Value) -> Value {
    let (code, out) = call(client().post(c.url(path)).json(&body)).await;
    assert_eq!(code, 201, "POST {path}: {out}");
    out
}

async fn delete(c: &TestCluster, path: &str) {
    let (code, out) = call(client().delete(c.url(path))).await;
    assert!(code == 200 || code == 202, "DELETE {path}: {code} {out}");
}

/// Wait for the object at `path` to satisfy `ok`, and return it.
async fn wait_for(c: &TestCluster, path: &str, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
    eventually(WAIT, what, || async {
        let (code, v) = get(c, path).await;
        (code == 200 && ok(&v)).then_some(v)
    })
    .await
}

async fn wait_gone(c: &TestCluster, path: &str, what: &str) {
    eventually(WAIT, what, || async {
        (get(c, path).await.0 == 404).then_some(())
    })
    .await
}

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
    .await
}

fn claim(name: &str, class: Option<&str>) -> Value {
    let mut c = json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": name},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "64Mi"}}}});
    if let Some(class) = class {
        c["spec"]["storageClassName"] = json!(class);
    }
    c
}

fn pod_with_claim(name: &str, claim: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {"containers": [{"name": "app", "image": "busybox:1.36",
                "volumeMounts": [{"name": "data", "mountPath": "/data"}]}],
            "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": claim}}]}})
}

fn phase(v: &Value) -> &str {
    v["status"]["phase"].as_str().unwrap_or_default()
}

/// The PodScheduled=False message of a pod, once the scheduler has written it.
async fn unschedulable_message(c: &TestCluster, pod: &str) -> String {
    eventually(WAIT, "PodScheduled=False", || async {
        let (_, p) = get(c, &format!("{NS}/pods/{pod}")).await;
        p["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["type"] == "PodScheduled" && c["status"] == "False")
            .and_then(|c| c["message"].as_str().map(str::to_string))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_is_provisioned_where_its_pod_runs_kept_while_used_and_removed_with_its_directory()
{
    require_kubectl();
    let c = cluster(&["store-a", "store-b"]);
    nodes_ready(&c, 2).await;
    let k = Kubectl(&c.kubeconfig);
    let classes = k.ok(&["get", "sc"]);
    let row = classes
        .lines()
        .find(|l| l.starts_with("local-path"))
        .unwrap_or_else(|| panic!("no local-path class: {classes}"));
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        cells[..6],
        [
            "local-path",
            "(default)",
            "skiff.io/local-path",
            "Delete",
            "WaitForFirstConsumer",
            "false"
        ],
        "{classes}"
    );

    // A claim with no class and a pod using it, applied as a user writes them.
    let dir = tempfile::tempdir().expect("tmp");
    let manifest = dir.path().join("app.json");
    let list = json!({"apiVersion": "v1", "kind": "List",
        "items": [claim("data", None), pod_with_claim("writer", "data")]});
    std::fs::write(&manifest, list.to_string()).expect("write");
    let out = k.ok(&["apply", "-f", manifest.to_str().unwrap_or_default()]);
    assert!(out.contains("persistentvolumeclaim/data created"), "{out}");
    let (_, pvc) = get(&c, &format!("{NS}/persistentvolumeclaims/data")).await;
    assert_eq!(
        pvc["spec"]["storageClassName"], "local-path",
        "default class: {pvc}"
    );
    assert!(
        pvc["metadata"]["finalizers"]
            .as_array()
            .is_some_and(|f| f.contains(&json!("kubernetes.io/pvc-protection"))),
        "{pvc}"
    );

    let writer = wait_for(&c, &format!("{NS}/pods/writer"), "writer scheduled", |p| {
        p["spec"]["nodeName"].is_string()
    })
    .await;
    let node = writer["spec"]["nodeName"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let other = if node == "store-a" {
        "store-b"
    } else {
        "store-a"
    };
    let pvc = wait_for(
        &c,
        &format!("{NS}/persistentvolumeclaims/data"),
        "claim Bound",
        |v| phase(v) == "Bound",
    )
    .await;
    assert_eq!(
        pvc["metadata"]["annotations"]["volume.kubernetes.io/selected-node"],
        node.as_str(),
        "{pvc}"
    );
    assert_eq!(
        pvc["metadata"]["annotations"]["pv.kubernetes.io/bind-completed"],
        "yes"
    );
    let volume = pvc["spec"]["volumeName"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert_eq!(
        volume,
        format!(
            "pvc-{}",
            pvc["metadata"]["uid"].as_str().unwrap_or_default()
        )
    );
    let (_, pv) = get(&c, &format!("/api/v1/persistentvolumes/{volume}")).await;
    assert_eq!(phase(&pv), "Bound", "{pv}");
    assert_eq!(pv["spec"]["claimRef"]["name"], "data");
    assert_eq!(pv["spec"]["persistentVolumeReclaimPolicy"], "Delete");
    assert_eq!(
        pv["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"][0]["matchExpressions"][0],
        json!({"key": "kubernetes.io/hostname", "operator": "In", "values": [node]})
    );
    let path = PathBuf::from(pv["spec"]["hostPath"]["path"].as_str().unwrap_or_default());
    assert!(
        path.starts_with(c.data_dir.join("storage")),
        "{}",
        path.display()
    );
    assert!(path.is_dir(), "{} was not made", path.display());
    let listing = k.ok(&["get", "pv,pvc"]);
    let pv_row = listing
        .lines()
        .find(|l| l.starts_with(&format!("persistentvolume/{volume}")))
        .unwrap_or_else(|| panic!("{listing}"));
    let pv_cells: Vec<&str> = pv_row.split_whitespace().collect();
    assert_eq!(
        pv_cells[1..7],
        [
            "64Mi",
            "RWO",
            "Delete",
            "Bound",
            "default/data",
            "local-path"
        ],
        "{listing}"
    );
    let pvc_row = listing
        .lines()
        .find(|l| l.starts_with("persistentvolumeclaim/data"))
        .unwrap_or_else(|| panic!("{listing}"));
    let pvc_cells: Vec<&str> = pvc_row.split_whitespace().collect();
    assert_eq!(
        pvc_cells[1..6],
        ["Bound", volume.as_str(), "64Mi", "RWO", "local-path"],
        "{listing}"
    );

    // A second pod of the claim prefers the other node; the volume decides.
    let mut reader = pod_with_claim("reader", "data");
    reader["spec"]["affinity"] = json!({"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
        {"weight": 100, "preference": {"matchExpressions": [
            {"key": "kubernetes.io/hostname", "operator": "In", "values": [other]}]}}]}});
    post(&c, &format!("{NS}/pods"), reader).await;
    let reader = wait_for(&c, &format!("{NS}/pods/reader"), "reader scheduled", |p| {
        p["spec"]["nodeName"].is_string()
    })
    .await;
    assert_eq!(
        reader["spec"]["nodeName"],
        node.as_str(),
        "the volume pins the pod"
    );

    // Deleting the claim waits for its pods.
    let out = k.ok(&["delete", "pvc", "data", "--wait=false"]);
    assert!(out.contains("deleted"), "{out}");
    let (code, held) = get(&c, &format!("{NS}/persistentvolumeclaims/data")).await;
    assert_eq!(code, 200, "held by pvc-protection: {held}");
    assert!(held["metadata"]["deletionTimestamp"].is_string());
    let listing = k.ok(&["get", "pvc", "data"]);
    assert!(listing.contains("Terminating"), "{listing}");
    k.ok(&["delete", "pod", "writer", "reader", "--wait=false"]);
    wait_gone(
        &c,
        &format!("{NS}/persistentvolumeclaims/data"),
        "claim gone",
    )
    .await;
    wait_gone(
        &c,
        &format!("/api/v1/persistentvolumes/{volume}"),
        "volume deleted",
    )
    .await;
    assert!(!path.exists(), "{} was not removed", path.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retain_class_keeps_the_volume_released_and_its_directory() {
    let c = cluster(&["keep-a"]);
    nodes_ready(&c, 1).await;
    post(
        &c,
        "/apis/storage.k8s.io/v1/storageclasses",
        json!({
        "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": "keep"},
        "provisioner": "skiff.io/local-path", "reclaimPolicy": "Retain",
        "volumeBindingMode": "WaitForFirstConsumer"}),
    )
    .await;
    post(
        &c,
        &format!("{NS}/persistentvolumeclaims"),
        claim("kept", Some("keep")),
    )
    .await;
    // Nothing is provisioned before a pod uses the claim.
    let (_, pvc) = get(&c, &format!("{NS}/persistentvolumeclaims/kept")).await;
    assert_eq!(phase(&pvc), "Pending");
    post(&c, &format!("{NS}/pods"), pod_with_claim("user", "kept")).await;
    let pvc = wait_for(
        &c,
        &format!("{NS}/persistentvolumeclaims/kept"),
        "claim Bound",
        |v| phase(v) == "Bound",
    )
    .await;
    let volume = pvc["spec"]["volumeName"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let (_, pv) = get(&c, &format!("/api/v1/persistentvolumes/{volume}")).await;
    assert_eq!(pv["spec"]["persistentVolumeReclaimPolicy"], "Retain");
    let path = PathBuf::from(pv["spec"]["hostPath"]["path"].as_str().unwrap_or_default());
    assert!(path.is_dir());
    std::fs::write(path.join("keep.txt"), "data").expect("write into the volume");
    delete(&c, &format!("{NS}/pods/user")).await;
    wait_gone(&c, &format!("{NS}/pods/user"), "pod gone").await;
    delete(&c, &format!("{NS}/persistentvolumeclaims/kept")).await;
    wait_gone(
        &c,
        &format!("{NS}/persistentvolumeclaims/kept"),
        "claim gone",
    )
    .await;
    let pv = wait_for(
        &c,
        &format!("/api/v1/persistentvolumes/{volume}"),
        "Released",
        |v| phase(v) == "Released",
    )
    .await;
    assert_eq!(
        pv["spec"]["claimRef"]["name"], "kept",
        "the claimRef stays: {pv}"
    );
    assert_eq!(
        std::fs::read_to_string(path.join("keep.txt"))
            .ok()
            .as_deref(),
        Some("data")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scheduler_says_why_a_pods_claims_keep_it_pending_and_static_volumes_bind() {
    let c = cluster(&["vol-a", "vol-b"]);
    nodes_ready(&c, 2).await;
    post(&c, &format!("{NS}/pods"), pod_with_claim("lonely", "nope")).await;
    assert_eq!(
        unschedulable_message(&c, "lonely").await,
        "0/2 nodes are available: persistentvolumeclaim \"nope\" not found. preemption: 0/2 nodes are available: 2 Preemption is not helpful for scheduling.."
    );
    // An Immediate class with no provisioner and no volumes: the claim waits for a
    // volume, and so does its pod.
    for class in ["empty", "manual"] {
        post(
            &c,
            "/apis/storage.k8s.io/v1/storageclasses",
            json!({
            "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": class},
            "provisioner": "kubernetes.io/no-provisioner", "volumeBindingMode": "Immediate"}),
        )
        .await;
    }
    post(
        &c,
        &format!("{NS}/persistentvolumeclaims"),
        claim("never", Some("empty")),
    )
    .await;
    post(&c, &format!("{NS}/pods"), pod_with_claim("stuck", "never")).await;
    assert_eq!(
        unschedulable_message(&c, "stuck").await,
        "0/2 nodes are available: pod has unbound immediate PersistentVolumeClaims. preemption: 0/2 nodes are available: 2 Preemption is not helpful for scheduling.."
    );
    // Two volumes an administrator made; a claim made after them is bound to the smaller
    // one that fits, and its pod follows that volume's node affinity.
    let volume = |name: &str, size: &str, node: &str| {
        json!({"apiVersion": "v1", "kind": "PersistentVolume",
        "metadata": {"name": name},
        "spec": {"capacity": {"storage": size}, "accessModes": ["ReadWriteOnce"],
            "storageClassName": "manual", "hostPath": {"path": format!("/tmp/skiff-test-{name}")},
            "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}]}]}}}})
    };
    post(
        &c,
        "/api/v1/persistentvolumes",
        volume("big", "10Gi", "vol-a"),
    )
    .await;
    post(
        &c,
        "/api/v1/persistentvolumes",
        volume("snug", "128Mi", "vol-b"),
    )
    .await;
    for v in ["big", "snug"] {
        wait_for(
            &c,
            &format!("/api/v1/persistentvolumes/{v}"),
            "volume Available",
            |v| phase(v) == "Available",
        )
        .await;
    }
    post(
        &c,
        &format!("{NS}/persistentvolumeclaims"),
        claim("static", Some("manual")),
    )
    .await;
    post(
        &c,
        &format!("{NS}/pods"),
        pod_with_claim("waiter", "static"),
    )
    .await;
    let pvc = wait_for(
        &c,
        &format!("{NS}/persistentvolumeclaims/static"),
        "claim Bound",
        |v| phase(v) == "Bound",
    )
    .await;
    assert_eq!(pvc["spec"]["volumeName"], "snug");
    assert_eq!(pvc["status"]["capacity"]["storage"], "128Mi");
    assert_eq!(
        pvc["metadata"]["annotations"]["pv.kubernetes.io/bound-by-controller"],
        "yes"
    );
    let (_, big) = get(&c, "/api/v1/persistentvolumes/big").await;
    assert_eq!(phase(&big), "Available");
    let waiter = wait_for(&c, &format!("{NS}/pods/waiter"), "waiter scheduled", |p| {
        p["spec"]["nodeName"].is_string()
    })
    .await;
    assert_eq!(waiter["spec"]["nodeName"], "vol-b");
    // Released with Retain (the default for volumes made by hand).
    delete(&c, &format!("{NS}/pods/waiter")).await;
    wait_gone(&c, &format!("{NS}/pods/waiter"), "pod gone").await;
    delete(&c, &format!("{NS}/persistentvolumeclaims/static")).await;
    wait_for(&c, "/api/v1/persistentvolumes/snug", "Released", |v| {
        phase(v) == "Released"
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stateful_set_claims_are_made_per_ordinal_and_kept_or_removed_as_the_policy_says() {
    let c = cluster(&["sts-a"]);
    nodes_ready(&c, 1).await;
    let base = "/apis/apps/v1/namespaces/default/statefulsets";
    post(&c, base, json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "db"},
        "spec": {"serviceName": "db", "replicas": 2, "podManagementPolicy": "Parallel",
            "selector": {"matchLabels": {"app": "db"}},
            "persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Retain", "whenScaled": "Delete"},
            "template": {"metadata": {"labels": {"app": "db"}},
                "spec": {"containers": [{"name": "c", "image": "busybox:1.36",
                    "volumeMounts": [{"name": "data", "mountPath": "/data"}]}]}},
            "volumeClaimTemplates": [{"metadata": {"name": "data"},
                "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "32Mi"}}}}]}})).await;
    for i in 0..2 {
        let claim = wait_for(
            &c,
            &format!("{NS}/persistentvolumeclaims/data-db-{i}"),
            "claim Bound",
            |v| phase(v) == "Bound",
        )
        .await;
        assert_eq!(claim["metadata"]["labels"]["app"], "db");
        assert_eq!(claim["spec"]["storageClassName"], "local-path");
        let (_, pod) = get(&c, &format!("{NS}/pods/db-{i}")).await;
        assert_eq!(
            pod["spec"]["volumes"][0],
            json!({"name": "data", "persistentVolumeClaim": {"claimName": format!("data-db-{i}")}}),
            "{pod}"
        );
    }
    // Scaling down condemns db-1: its claim goes with it (whenScaled: Delete).
    let (code, out) = call(
        client()
            .patch(c.url(&format!("{base}/db")))
            .header("Content-Type", "application/merge-patch+json")
            .body(json!({"spec": {"replicas": 1}}).to_string()),
    )
    .await;
    assert_eq!(code, 200, "{out}");
    wait_gone(&c, &format!("{NS}/pods/db-1"), "db-1 gone").await;
    wait_gone(
        &c,
        &format!("{NS}/persistentvolumeclaims/data-db-1"),
        "data-db-1 gone",
    )
    .await;
    // Deleting the set keeps the rest (whenDeleted: Retain).
    delete(&c, &format!("{base}/db")).await;
    wait_gone(&c, &format!("{NS}/pods/db-0"), "db-0 gone").await;
    let (code, kept) = get(&c, &format!("{NS}/persistentvolumeclaims/data-db-0")).await;
    assert_eq!(code, 200, "{kept}");
    assert!(kept["metadata"]["deletionTimestamp"].is_null(), "{kept}");
}

#[tokio::test]
async fn bad_storage_objects_are_refused_with_kubernetes_field_paths() {
    let c = TestCluster::api_only();
    let cause = |v: &Value| {
        v["details"]["causes"][0]["field"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    let nfs = json!({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": "n"},
        "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteMany"],
            "nfs": {"server": "10.0.0.1", "path": "/x"}}});
    let (code, status) = call(client().post(c.url("/api/v1/persistentvolumes")).json(&nfs)).await;
    assert_eq!(
        (code, cause(&status)),
        (422, "spec.nfs".to_string()),
        "{status}"
    );
    let mut no_size = claim("c", None);
    no_size["spec"]["resources"] = json!({});
    let (code, status) = call(
        client()
            .post(c.url(&format!("{NS}/persistentvolumeclaims")))
            .json(&no_size),
    )
    .await;
    assert_eq!(
        (code, cause(&status)),
        (422, "spec.resources[storage]".to_string()),
        "{status}"
    );
    let (code, status) = call(
        client()
            .post(c.url("/apis/storage.k8s.io/v1/storageclasses"))
            .json(&json!({
        "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": "x"},
        "provisioner": "a/b", "volumeBindingMode": "Later"})),
    )
    .await;
    assert_eq!(
        (code, cause(&status)),
        (422, "volumeBindingMode".to_string()),
        "{status}"
    );
    // The class is fixed once made.
    let (code, status) = call(
        client()
            .patch(c.url("/apis/storage.k8s.io/v1/storageclasses/local-path"))
            .header("Content-Type", "application/merge-patch+json")
            .body(json!({"reclaimPolicy": "Retain"}).to_string()),
    )
    .await;
    assert_eq!(
        (code, cause(&status)),
        (422, "reclaimPolicy".to_string()),
        "{status}"
    );
    // A claim of a class that does not allow expansion may not grow.
    post(
        &c,
        &format!("{NS}/persistentvolumeclaims"),
        claim("small", Some("local-path")),
    )
    .await;
    let (code, out) = call(
        client()
            .patch(c.url(&format!("{NS}/persistentvolumeclaims/small/status")))
            .header("Content-Type", "application/merge-patch+json")
            .body(json!({"status": {"phase": "Bound"}}).to_string()),
    )
    .await;
    assert_eq!(code, 200, "{out}");
    let (code, status) = call(
        client()
            .patch(c.url(&format!("{NS}/persistentvolumeclaims/small")))
            .header("Content-Type", "application/merge-patch+json")
            .body(json!({"spec": {"resources": {"requests": {"storage": "1Gi"}}}}).to_string()),
    )
    .await;
    assert_eq!(code, 403, "{status}");
    assert_eq!(
        status["message"],
        "persistentvolumeclaims \"small\" is forbidden: only dynamically provisioned pvc can be resized and the storageclass that provisions the pvc must support resize"
    );
}
