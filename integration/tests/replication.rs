//! The replication controller, quota admission and controller supervision, against the
//! whole control plane (scheduler and controllers running, nodes as API objects).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use skiff_actors::client::{ApiClient, LocalClient};
use skiff_actors::runtime::{
    Action, Change, Context, Controller, InformerFactory, InformerSpec, ReconcileError, Reconciler,
};
use skiff_integration::{call, client, eventually, TestCluster};

const RCS: &str = "/api/v1/namespaces/default/replicationcontrollers";
const PODS: &str = "/api/v1/namespaces/default/pods";

fn node(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "status": {
            "capacity": {"cpu": "4", "memory": "8Gi", "pods": "110"},
            "allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"},
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                "lastHeartbeatTime": chrono_now(), "lastTransitionTime": chrono_now()}]}})
}

fn chrono_now() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn rc(name: &str, replicas: i64, cpu: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ReplicationController", "metadata": {"name": name},
        "spec": {"replicas": replicas, "selector": {"app": name}, "template": {
            "metadata": {"labels": {"app": name}},
            "spec": {"containers": [{"name": "c", "image": "busybox:1.36",
                "resources": {"requests": {"cpu": cpu, "memory": "32Mi"}}}]}}}})
}

async fn pods_of(c: &TestCluster, app: &str) -> Vec<Value> {
    let (_, list) = call(client().get(c.url(&format!("{PODS}?labelSelector=app%3D{app}")))).await;
    list["items"].as_array().cloned().unwrap_or_default()
}

async fn add_nodes(c: &TestCluster, names: &[&str]) {
    for n in names {
        let (code, body) = call(client().post(c.url("/api/v1/nodes")).json(&node(n))).await;
        assert_eq!(code, 201, "{body}");
    }
}

#[tokio::test]
async fn rc_spreads_three_replicas_over_three_nodes_and_scales_up_and_down() {
    let c = TestCluster::start();
    add_nodes(&c, &["n1", "n2", "n3"]).await;
    let (code, body) = call(client().post(c.url(RCS)).json(&rc("web", 3, "100m"))).await;
    assert_eq!(code, 201, "{body}");

    let nodes = eventually(
        Duration::from_secs(20),
        "3 pods bound to 3 nodes",
        || async {
            let pods = pods_of(&c, "web").await;
            let mut nodes: Vec<String> = pods
                .iter()
                .filter_map(|p| p["spec"]["nodeName"].as_str().map(str::to_string))
                .collect();
            nodes.sort();
            (pods.len() == 3 && nodes.len() == 3).then_some(nodes)
        },
    )
    .await;
    assert_eq!(nodes, ["n1", "n2", "n3"], "one replica per node");
    for p in pods_of(&c, "web").await {
        assert_eq!(
            p["metadata"]["ownerReferences"][0]["kind"],
            "ReplicationController"
        );
        assert_eq!(p["metadata"]["ownerReferences"][0]["controller"], true);
    }

    let (code, _) = call(
        client()
            .patch(c.url(&format!("{RCS}/web/scale")))
            .header("content-type", "application/merge-patch+json")
            .body(r#"{"spec":{"replicas":5}}"#),
    )
    .await;
    assert_eq!(code, 200);
    eventually(Duration::from_secs(20), "5 replicas", || async {
        let (_, rc) = call(client().get(c.url(&format!("{RCS}/web")))).await;
        let n = pods_of(&c, "web").await.len();
        (n == 5 && rc["status"]["replicas"] == 5 && rc["status"]["observedGeneration"] == 2)
            .then_some(())
    })
    .await;

    let (code, _) = call(
        client()
            .patch(c.url(&format!("{RCS}/web/scale")))
            .header("content-type", "application/merge-patch+json")
            .body(r#"{"spec":{"replicas":1}}"#),
    )
    .await;
    assert_eq!(code, 200);
    eventually(Duration::from_secs(20), "1 replica", || async {
        (pods_of(&c, "web").await.len() == 1).then_some(())
    })
    .await;

    // The story is told in Events, which the recorder writes after the pods change.
    eventually(
        Duration::from_secs(20),
        "SuccessfulCreate and SuccessfulDelete events",
        || async {
            let (_, events) = call(client().get(
                c.url("/api/v1/namespaces/default/events?fieldSelector=involvedObject.name%3Dweb"),
            ))
            .await;
            let reasons: Vec<String> = events["items"]
                .as_array()?
                .iter()
                .filter_map(|e| e["reason"].as_str().map(str::to_string))
                .collect();
            (reasons.iter().any(|r| r == "SuccessfulCreate")
                && reasons.iter().any(|r| r == "SuccessfulDelete"))
            .then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn rc_replaces_a_deleted_pod_and_adopts_a_matching_orphan() {
    let c = TestCluster::start();
    add_nodes(&c, &["n1"]).await;
    let (code, _) = call(client().post(c.url(RCS)).json(&rc("api", 2, "10m"))).await;
    assert_eq!(code, 201);
    let first = eventually(Duration::from_secs(20), "2 pods", || async {
        let pods = pods_of(&c, "api").await;
        (pods.len() == 2).then_some(pods)
    })
    .await;
    let victim = first[0]["metadata"]["name"].as_str().unwrap().to_string();
    call(client().delete(c.url(&format!("{PODS}/{victim}")))).await;
    eventually(Duration::from_secs(20), "a replacement pod", || async {
        let pods = pods_of(&c, "api").await;
        (pods.len() == 2
            && pods
                .iter()
                .all(|p| p["metadata"]["name"] != victim.as_str()))
        .then_some(())
    })
    .await;

    // Scale to 3 by hand-creating a matching orphan: the RC adopts it instead of creating.
    call(
        client()
            .patch(c.url(&format!("{RCS}/api/scale")))
            .header("content-type", "application/merge-patch+json")
            .body(r#"{"spec":{"replicas":3}}"#),
    )
    .await;
    let orphan = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "orphan", "labels": {"app": "api"}},
        "spec": {"containers": [{"name": "c", "image": "busybox:1.36"}]}});
    call(client().post(c.url(PODS)).json(&orphan)).await;
    eventually(Duration::from_secs(20), "3 pods, all owned", || async {
        let pods = pods_of(&c, "api").await;
        let owned = pods
            .iter()
            .all(|p| p["metadata"]["ownerReferences"][0]["kind"] == "ReplicationController");
        (pods.len() == 3 && owned).then_some(())
    })
    .await;
}

#[tokio::test]
async fn quota_refuses_the_pod_over_the_limit_and_admits_it_after_a_delete() {
    let c = TestCluster::start();
    let quota = json!({"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "compute"},
        "spec": {"hard": {"pods": "2", "requests.cpu": "1"}}});
    let (code, body) = call(
        client()
            .post(c.url("/api/v1/namespaces/default/resourcequotas"))
            .json(&quota),
    )
    .await;
    assert_eq!(code, 201, "{body}");
    let pod = |name: &str, cpu: &str| {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {"containers": [{"name": "c", "image": "busybox:1.36", "resources": {"requests": {"cpu": cpu}}}]}})
    };
    for name in ["a", "b"] {
        let (code, body) = call(client().post(c.url(PODS)).json(&pod(name, "100m"))).await;
        assert_eq!(code, 201, "{body}");
    }
    let (code, status) = call(client().post(c.url(PODS)).json(&pod("c", "100m"))).await;
    assert_eq!(code, 403, "{status}");
    assert_eq!(status["reason"], "Forbidden");
    assert_eq!(
        status["message"],
        "pods \"c\" is forbidden: exceeded quota: compute, requested: pods=1, used: pods=2, limited: pods=2"
    );
    // status.used is kept by the quota controller.
    eventually(Duration::from_secs(20), "quota status used", || async {
        let (_, q) =
            call(client().get(c.url("/api/v1/namespaces/default/resourcequotas/compute"))).await;
        (q["status"]["used"]["pods"] == "2" && q["status"]["used"]["requests.cpu"] == "200m")
            .then_some(())
    })
    .await;

    call(client().delete(c.url(&format!("{PODS}/a")))).await;
    let (code, body) = call(client().post(c.url(PODS)).json(&pod("c", "100m"))).await;
    assert_eq!(code, 201, "{body}");
    let (code, status) = call(client().post(c.url(PODS)).json(&pod("big", "2"))).await;
    assert_eq!(code, 403, "{status}");
}

#[tokio::test]
async fn bad_replication_input_gets_a_clear_4xx() {
    let c = TestCluster::start();
    let (code, status) = call(client().post(c.url(RCS)).json(&rc("neg", -1, "10m"))).await;
    assert_eq!(code, 422, "{status}");
    assert!(
        status["message"]
            .as_str()
            .unwrap()
            .contains("spec.replicas"),
        "{status}"
    );
    let mut mismatched = rc("mm", 1, "10m");
    mismatched["spec"]["selector"] = json!({"app": "other"});
    let (code, status) = call(client().post(c.url(RCS)).json(&mismatched)).await;
    assert_eq!(code, 422, "{status}");
    let (code, _) = call(client().get(c.url(&format!("{RCS}?labelSelector=app%20in%20(a")))).await;
    assert_eq!(code, 400);
}

/// A controller whose first reconcile panics, to prove the supervisor restarts it.
struct PanicsOnce {
    calls: Arc<AtomicUsize>,
    succeeded: Arc<AtomicUsize>,
}

#[async_trait::async_trait]
impl Reconciler for PanicsOnce {
    fn name(&self) -> &'static str {
        "panics-once"
    }

    fn informers(&self) -> Vec<InformerSpec> {
        vec![InformerSpec::all("namespaces")]
    }

    fn keys_for(&self, _resource: &str, change: &Change, _ctx: &Context) -> Vec<String> {
        vec![skiff_actors::runtime::key_of(&change.object)]
    }

    async fn reconcile(&self, key: &str, ctx: &Context) -> Result<Action, ReconcileError> {
        if key == "chaos" && self.calls.fetch_add(1, Ordering::SeqCst) == 0 {
            panic!("reconcile bug");
        }
        if key == "chaos" {
            ctx.client.get("namespaces", None, key).await?;
            self.succeeded.fetch_add(1, Ordering::SeqCst);
        }
        Ok(Action::Done)
    }
}

#[actix_rt::test]
async fn a_controller_that_panics_in_reconcile_is_restarted_and_reconciles_again() {
    let c = TestCluster::api_only();
    let calls = Arc::new(AtomicUsize::new(0));
    let succeeded = Arc::new(AtomicUsize::new(0));
    let api: Arc<dyn ApiClient> = Arc::new(LocalClient::new(c.objects()));
    let _addr = Controller::new(
        PanicsOnce {
            calls: calls.clone(),
            succeeded: succeeded.clone(),
        },
        &InformerFactory::new(api),
    )
    .start_supervised();
    let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "chaos"}});
    let (code, _) = call(client().post(c.url("/api/v1/namespaces")).json(&ns)).await;
    assert_eq!(code, 201);
    eventually(
        Duration::from_secs(20),
        "a successful reconcile after the panic",
        || async { (succeeded.load(Ordering::SeqCst) >= 1).then_some(()) },
    )
    .await;
    assert!(
        calls.load(Ordering::SeqCst) >= 2,
        "the panicking reconcile ran, then a new one"
    );
}
