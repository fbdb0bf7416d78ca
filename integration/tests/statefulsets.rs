//! StatefulSets as a user types them, on the real Docker Engine with the machine's
//! kubectl: pods with stable names and network identity, created in ordinal order (each
//! after its predecessor is Ready) and deleted in reverse order, as a watch shows; `kubectl
//! scale` down and up; a partitioned rolling update, then the rest, then `kubectl rollout
//! undo`; invalid input is refused with Kubernetes' field paths; the official Python client
//! creates, patches, scales and deletes one.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use serde_json::{json, Value};
use skiff_integration::{
    call, client, eventually, node_names, python_client, DockerCleanup, Kubectl, TestCluster,
};

const V2: &str = "skiff/busybox:sts-v2";
const PODS: &str = "/api/v1/namespaces/default/pods";

async fn get(c: &TestCluster, path: &str) -> Value {
    call(client().get(c.url(path))).await.1
}

/// Every watch event on the set's pods, in order, collected in the background.
struct PodLog {
    events: Arc<Mutex<Vec<Value>>>,
    /// How many events [`PodLog::take`] has handed out.
    mark: Mutex<usize>,
    task: tokio::task::JoinHandle<()>,
}

impl PodLog {
    /// Returns once the watch is established, so no event of what follows is missed.
    async fn start(c: &TestCluster) -> PodLog {
        let url = c.url(&format!(
            "{PODS}?watch=true&labelSelector=app%3Dweb&timeoutSeconds=600"
        ));
        let resp = client().get(url).send().await.expect("watch");
        assert_eq!(resp.status().as_u16(), 200);
        let events = Arc::new(Mutex::new(Vec::new()));
        let sink = events.clone();
        let task = tokio::spawn(async move {
            let mut bytes = resp.bytes_stream();
            let mut buf = Vec::new();
            while let Some(Ok(chunk)) = bytes.next().await {
                buf.extend_from_slice(&chunk);
                while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = buf.drain(..=pos).collect();
                    if let Ok(v) = serde_json::from_slice::<Value>(&line) {
                        sink.lock().unwrap_or_else(|e| e.into_inner()).push(v);
                    }
                }
            }
        });
        PodLog {
            events,
            mark: Mutex::new(0),
            task,
        }
    }

    /// Every event so far.
    fn all(&self) -> Vec<Value> {
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The events since the last call.
    fn take(&self) -> Vec<Value> {
        let all = self.all();
        let mut mark = self.mark.lock().unwrap_or_else(|e| e.into_inner());
        let new = all[(*mark).min(all.len())..].to_vec();
        *mark = all.len();
        new
    }
}

impl Drop for PodLog {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn name(e: &Value) -> String {
    e["object"]["metadata"]["name"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

fn ready(pod: &Value) -> bool {
    pod["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

/// Pod names in the order the watch first saw them created.
fn created_order(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["type"] == "ADDED")
        .map(name)
        .collect()
}

/// Pod names in the order their deletion started (deletionTimestamp first seen).
fn deletion_order(events: &[Value]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for e in events {
        let deleting = e["object"]["metadata"].get("deletionTimestamp").is_some();
        if (deleting || e["type"] == "DELETED") && !out.contains(&name(e)) {
            out.push(name(e));
        }
    }
    out
}

/// For each pod created after the first, whether the pod before it was Ready (as the watch
/// last showed it) when it was created.
fn each_created_after_its_predecessor_was_ready(events: &[Value]) -> bool {
    let mut last: std::collections::HashMap<String, Value> = Default::default();
    for e in events {
        if e["type"] == "ADDED" {
            let n = name(e);
            if let Some((parent, ord)) = n.rsplit_once('-') {
                if let Ok(ord) = ord.parse::<i32>() {
                    if ord > 0 {
                        let prev = format!("{parent}-{}", ord - 1);
                        if !last.get(&prev).is_some_and(ready) {
                            return false;
                        }
                    }
                }
            }
        }
        last.insert(name(e), e["object"].clone());
    }
    true
}

/// For each deletion after the first, whether the pod above it was gone by then.
fn each_deleted_after_its_successor_was_gone(events: &[Value]) -> bool {
    let mut gone: Vec<String> = Vec::new();
    let mut started: Vec<String> = Vec::new();
    for e in events {
        let n = name(e);
        let deleting = e["object"]["metadata"].get("deletionTimestamp").is_some();
        if (deleting || e["type"] == "DELETED") && !started.contains(&n) {
            if let Some(last) = started.last() {
                if !gone.contains(last) {
                    return false;
                }
            }
            started.push(n.clone());
        }
        if e["type"] == "DELETED" {
            gone.push(n);
        }
    }
    true
}

async fn images(c: &TestCluster) -> Vec<(String, String)> {
    let list = get(c, &format!("{PODS}?labelSelector=app%3Dweb")).await;
    let mut out: Vec<(String, String)> = list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["metadata"].get("deletionTimestamp").is_none())
        .map(|p| {
            (
                p["metadata"]["name"].as_str().unwrap_or("").to_string(),
                p["spec"]["containers"][0]["image"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
            )
        })
        .collect();
    out.sort();
    out
}

const MANIFEST: &str = r#"
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: web
spec:
  serviceName: web
  replicas: 3
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: web
        image: skiff/busybox:latest
        command: ["sleep", "3600"]
"#;

// kubectl blocks its thread while it runs; the watch reads on another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stateful_set_keeps_order_and_names_through_scaling_and_a_partitioned_update() {
    skiff_integration::require_docker_and_kubectl();
    let nodes = node_names("sts", 2);
    let _cleanup = DockerCleanup::new(&nodes);
    let _tag = skiff_integration::ImageTag::new(V2);
    let c = TestCluster::with_docker_nodes(&nodes);
    let k = Kubectl(&c.kubeconfig);
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("sts.yaml");
    std::fs::write(&file, MANIFEST).expect("write manifest");
    let log = PodLog::start(&c).await;
    let rollout = ["rollout", "status", "statefulset/web", "--timeout=120s"];

    k.ok(&["apply", "-f", file.to_str().unwrap_or_default()]);
    let out = k.ok(&rollout);
    assert!(out.contains("roll out complete"), "{out}");
    let events = log.take();
    assert_eq!(created_order(&events), ["web-0", "web-1", "web-2"]);
    assert!(
        each_created_after_its_predecessor_was_ready(&events),
        "{events:#?}"
    );
    let sts = get(&c, "/apis/apps/v1/namespaces/default/statefulsets/web").await;
    assert_eq!(sts["status"]["readyReplicas"], 3, "{sts}");
    let update = sts["status"]["updateRevision"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(update.starts_with("web-"), "{sts}");
    assert_eq!(sts["status"]["currentRevision"], update.as_str());
    let p = get(&c, &format!("{PODS}/web-1")).await;
    assert_eq!(p["spec"]["hostname"], "web-1");
    assert_eq!(p["spec"]["subdomain"], "web");
    assert_eq!(
        p["metadata"]["labels"]["statefulset.kubernetes.io/pod-name"],
        "web-1"
    );
    assert_eq!(p["metadata"]["labels"]["apps.kubernetes.io/pod-index"], "1");
    assert_eq!(
        p["metadata"]["labels"]["controller-revision-hash"],
        update.as_str()
    );
    let out = k.ok(&["get", "statefulsets"]);
    assert!(out.contains("3/3"), "{out}");

    // Scaled down, pods go from the highest ordinal, one after the other.
    k.ok(&["scale", "statefulset", "web", "--replicas=1"]);
    eventually(Duration::from_secs(90), "one pod left", || async {
        (images(&c).await.len() == 1).then_some(())
    })
    .await;
    eventually(Duration::from_secs(30), "both deletions seen", || async {
        let gone = log.all().iter().filter(|e| e["type"] == "DELETED").count();
        (gone == 2).then_some(())
    })
    .await;
    let events = log.take();
    assert_eq!(deletion_order(&events), ["web-2", "web-1"]);
    assert!(
        each_deleted_after_its_successor_was_gone(&events),
        "{events:#?}"
    );
    // Scaled up again, the same names come back in order.
    k.ok(&["scale", "statefulset", "web", "--replicas=3"]);
    k.ok(&rollout);
    let events = log.take();
    assert_eq!(created_order(&events), ["web-1", "web-2"]);
    // Readiness of the predecessors is judged over the whole history of the watch.
    assert!(each_created_after_its_predecessor_was_ready(&log.all()));

    // A partitioned update replaces only the pods at or above the partition.
    k.ok(&[
        "patch",
        "statefulset",
        "web",
        "-p",
        r#"{"spec":{"updateStrategy":{"rollingUpdate":{"partition":2}}}}"#,
    ]);
    k.ok(&["set", "image", "statefulset/web", &format!("web={V2}")]);
    let out = k.ok(&rollout);
    assert!(
        out.contains("partitioned roll out complete: 1 new pods"),
        "{out}"
    );
    let latest = "skiff/busybox:latest".to_string();
    let want = |imgs: [&String; 3]| {
        (0..3)
            .map(|i| (format!("web-{i}"), imgs[i].clone()))
            .collect::<Vec<_>>()
    };
    let v2 = V2.to_string();
    eventually(Duration::from_secs(60), "web-2 updated only", || async {
        (images(&c).await == want([&latest, &latest, &v2])).then_some(())
    })
    .await;
    // Partition 0 updates the rest, from the top down.
    log.take();
    k.ok(&[
        "patch",
        "statefulset",
        "web",
        "-p",
        r#"{"spec":{"updateStrategy":{"rollingUpdate":{"partition":0}}}}"#,
    ]);
    k.ok(&rollout);
    eventually(Duration::from_secs(90), "all updated", || async {
        let sts = get(&c, "/apis/apps/v1/namespaces/default/statefulsets/web").await;
        let done = sts["status"]["currentRevision"] == sts["status"]["updateRevision"];
        (done && images(&c).await == want([&v2, &v2, &v2])).then_some(())
    })
    .await;
    assert_eq!(deletion_order(&log.take()), ["web-1", "web-0"]);
    let out = k.ok(&["rollout", "history", "statefulset/web"]);
    assert!(out.contains('1') && out.contains('2'), "{out}");

    // Undo goes back to the first template.
    k.ok(&["rollout", "undo", "statefulset/web"]);
    eventually(Duration::from_secs(120), "rolled back", || async {
        (images(&c).await == want([&latest, &latest, &latest])).then_some(())
    })
    .await;
    k.ok(&rollout);
    k.ok(&["delete", "statefulset", "web"]);
    eventually(Duration::from_secs(60), "pods gone", || async {
        images(&c).await.is_empty().then_some(())
    })
    .await;
}

#[tokio::test]
async fn what_stateful_sets_do_not_support_yet_is_refused_with_422() {
    let c = TestCluster::api_only();
    let base = "/apis/apps/v1/namespaces/default/statefulsets";
    let set = |extra: Value| {
        let mut s = json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "db"},
            "spec": {"serviceName": "db", "selector": {"matchLabels": {"app": "db"}},
                "template": {"metadata": {"labels": {"app": "db"}},
                    "spec": {"containers": [{"name": "c", "image": "i"}]}}}});
        if let Some(m) = extra.as_object() {
            for (k, v) in m {
                s["spec"][k] = v.clone();
            }
        }
        s
    };
    // Claim templates are served (tests/storage.rs); a template that is not a valid
    // claim is refused with the claim's own field path.
    let claims = set(
        json!({"volumeClaimTemplates": [{"metadata": {"name": "data"},
        "spec": {"accessModes": ["ReadWriteOnce"]}}]}),
    );
    let (code, status) = call(client().post(c.url(base)).json(&claims)).await;
    assert_eq!(code, 422, "{status}");
    assert_eq!(
        status["details"]["causes"][0]["field"],
        "spec.volumeClaimTemplates[0].spec.resources[storage]",
        "{status}"
    );
    let mismatch = {
        let mut s = set(json!({"updateStrategy": {"type": "RollingUpdate",
            "rollingUpdate": {"partition": -1}}}));
        s["spec"]["template"]["metadata"]["labels"]["app"] = json!("other");
        s
    };
    let (code, status) = call(client().post(c.url(base)).json(&mismatch)).await;
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
        fields.contains(&"spec.updateStrategy.rollingUpdate.partition"),
        "{status}"
    );
}

const PYTHON_APPS: &str = r#"
import sys, time
from kubernetes import client, config
config.load_kube_config(sys.argv[1])
apps = client.AppsV1Api()
ns = "default"
body = client.V1StatefulSet(
    metadata=client.V1ObjectMeta(name="py-db"),
    spec=client.V1StatefulSetSpec(
        service_name="py-db", replicas=0,
        selector=client.V1LabelSelector(match_labels={"app": "py-db"}),
        template=client.V1PodTemplateSpec(
            metadata=client.V1ObjectMeta(labels={"app": "py-db"}),
            spec=client.V1PodSpec(containers=[client.V1Container(name="c", image="i")]))))
s = apps.create_namespaced_stateful_set(ns, body)
assert s.spec.pod_management_policy == "OrderedReady", s.spec.pod_management_policy
assert s.spec.update_strategy.rolling_update.partition == 0
p = apps.patch_namespaced_stateful_set("py-db", ns, {"spec": {"minReadySeconds": 5}})
assert p.spec.min_ready_seconds == 5
scale = apps.patch_namespaced_stateful_set_scale("py-db", ns, {"spec": {"replicas": 2}})
assert scale.spec.replicas == 2, scale
assert apps.read_namespaced_stateful_set_scale("py-db", ns).spec.replicas == 2
for _ in range(100):
    pods = client.CoreV1Api().list_namespaced_pod(ns, label_selector="app=py-db").items
    if pods:
        break
    time.sleep(0.1)
assert [p.metadata.name for p in pods] == ["py-db-0"], [p.metadata.name for p in pods]
apps.delete_namespaced_stateful_set("py-db", ns)
print("ok")
"#;

#[tokio::test]
async fn the_official_python_client_creates_patches_scales_and_deletes_a_stateful_set() {
    // Controllers, no nodes: the first pod is made and waits unscheduled (OrderedReady).
    let c = TestCluster::start();
    let kubeconfig = c.kubeconfig.clone();
    let out = tokio::task::spawn_blocking(move || python_client(PYTHON_APPS, &kubeconfig, &[]))
        .await
        .expect("python thread");
    assert_eq!(out, "ok");
}
