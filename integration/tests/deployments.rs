//! Deployments and ReplicaSets as a user types them, on the real Docker Engine with the
//! machine's kubectl: create, rollout status, set image and undo, history, pause and
//! resume, restart, scale, a rollout stuck past its progress deadline, and the
//! ReplicaSet controller's adoption and release of pods.

use std::time::Duration;

use serde_json::{json, Value};
use skiff_actors::runtime::InformerSpec;
use skiff_integration::{
    call, client, eventually, kubectl, node_names, DockerCleanup, Kubectl, TestCluster,
};

const V2: &str = "skiff/busybox:deploy-v2";

async fn get(c: &TestCluster, path: &str) -> Value {
    call(client().get(c.url(path))).await.1
}

async fn replica_sets(c: &TestCluster) -> Vec<Value> {
    let list = get(c, "/apis/apps/v1/namespaces/default/replicasets").await;
    list["items"].as_array().cloned().unwrap_or_default()
}

fn images_of(pods: &Value) -> Vec<String> {
    let mut v: Vec<String> = pods["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p.pointer("/metadata/deletionTimestamp").is_none())
        .filter_map(|p| {
            p.pointer("/spec/containers/0/image")?
                .as_str()
                .map(str::to_string)
        })
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn a_deployment_rolls_out_rolls_back_pauses_and_restarts_as_kubectl_drives_it() {
    skiff_integration::require_docker_and_kubectl();
    let nodes = node_names("deploy", 2);
    let _cleanup = DockerCleanup::new(&nodes);
    let _tag = skiff_integration::ImageTag::new(V2);
    let c = TestCluster::with_docker_nodes(&nodes);
    let k = Kubectl(&c.kubeconfig);
    let rollout = ["rollout", "status", "deployment/web", "--timeout=90s"];

    k.ok(&[
        "create",
        "deployment",
        "web",
        "--image=skiff/busybox:latest",
        "--replicas=3",
        "--",
        "sleep",
        "3600",
    ]);
    let out = k.ok(&rollout);
    assert!(out.contains("successfully rolled out"), "{out}");
    let d = get(&c, "/apis/apps/v1/namespaces/default/deployments/web").await;
    assert_eq!(d["status"]["availableReplicas"], 3, "{d}");
    assert_eq!(d["status"]["updatedReplicas"], 3);
    assert_eq!(
        d["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "1"
    );
    let available = d["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Available"))
        .cloned()
        .expect("Available condition");
    assert_eq!(available["status"], "True");
    assert_eq!(available["reason"], "MinimumReplicasAvailable");
    let progressing = d["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Progressing"))
        .cloned()
        .expect("Progressing condition");
    assert_eq!(progressing["reason"], "NewReplicaSetAvailable");
    // Its ReplicaSet is named and labelled by the template hash.
    let sets = replica_sets(&c).await;
    assert_eq!(sets.len(), 1);
    let hash = sets[0]["metadata"]["labels"]["pod-template-hash"]
        .as_str()
        .expect("hash label")
        .to_string();
    assert_eq!(sets[0]["metadata"]["name"], format!("web-{hash}"));
    let out = k.ok(&["get", "deployments"]);
    assert!(out.contains("3/3"), "{out}");

    // A new image rolls out as revision 2; the old ReplicaSet is kept at zero.
    k.ok(&["set", "image", "deployment/web", &format!("busybox={V2}")]);
    let out = k.ok(&rollout);
    assert!(out.contains("successfully rolled out"), "{out}");
    let pods = get(
        &c,
        "/api/v1/namespaces/default/pods?labelSelector=app%3Dweb",
    )
    .await;
    eventually(Duration::from_secs(60), "old pods gone", || async {
        let pods = get(
            &c,
            "/api/v1/namespaces/default/pods?labelSelector=app%3Dweb",
        )
        .await;
        (pods["items"].as_array().map(Vec::len) == Some(3)).then_some(())
    })
    .await;
    let _ = pods;
    let pods = get(
        &c,
        "/api/v1/namespaces/default/pods?labelSelector=app%3Dweb",
    )
    .await;
    assert_eq!(images_of(&pods), [V2, V2, V2]);
    let sets = replica_sets(&c).await;
    assert_eq!(sets.len(), 2);
    let out = k.ok(&["rollout", "history", "deployment/web"]);
    assert!(out.contains('1') && out.contains('2'), "{out}");

    // Undo goes back to the first template, which becomes revision 3.
    k.ok(&["rollout", "undo", "deployment/web"]);
    k.ok(&rollout);
    eventually(Duration::from_secs(60), "rolled back", || async {
        let pods = get(
            &c,
            "/api/v1/namespaces/default/pods?labelSelector=app%3Dweb",
        )
        .await;
        (images_of(&pods) == ["skiff/busybox:latest"; 3]).then_some(())
    })
    .await;
    let d = get(&c, "/apis/apps/v1/namespaces/default/deployments/web").await;
    assert_eq!(
        d["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "3"
    );
    let sets = replica_sets(&c).await;
    let templates: Vec<String> = sets
        .iter()
        .map(|s| s["spec"]["template"].to_string())
        .collect();
    assert_eq!(
        sets.len(),
        2,
        "the old set was reused, not copied: {templates:#?}"
    );

    // Paused, a template change does not roll out; resumed, it does. Pause and set
    // image are two writes, so wait until the controller has observed the second one.
    k.ok(&["rollout", "pause", "deployment/web"]);
    k.ok(&["set", "image", "deployment/web", &format!("busybox={V2}")]);
    let d = eventually(Duration::from_secs(20), "paused and observed", || async {
        let d = get(&c, "/apis/apps/v1/namespaces/default/deployments/web").await;
        let paused = d["status"]["conditions"]
            .as_array()
            .is_some_and(|cs| cs.iter().any(|c| c["reason"] == "DeploymentPaused"));
        let observed = d["status"]["observedGeneration"] == d["metadata"]["generation"];
        (paused && observed).then_some(d)
    })
    .await;
    // The new template is the one of an existing set (revision 2); even paused,
    // Kubernetes' sync finds that set as the new one and gives it the next revision.
    assert_eq!(
        d["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "4"
    );
    let pods = get(
        &c,
        "/api/v1/namespaces/default/pods?labelSelector=app%3Dweb",
    )
    .await;
    assert_eq!(images_of(&pods), ["skiff/busybox:latest"; 3]);
    k.ok(&["rollout", "resume", "deployment/web"]);
    k.ok(&rollout);

    // Restart rolls every pod; scale spreads over the sets.
    let before: Vec<String> = {
        let pods = get(
            &c,
            "/api/v1/namespaces/default/pods?labelSelector=app%3Dweb",
        )
        .await;
        pods["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p["metadata"]["name"].as_str().map(str::to_string))
            .collect()
    };
    k.ok(&["rollout", "restart", "deployment/web"]);
    k.ok(&rollout);
    eventually(Duration::from_secs(60), "every pod replaced", || async {
        let pods = get(
            &c,
            "/api/v1/namespaces/default/pods?labelSelector=app%3Dweb",
        )
        .await;
        let names: Vec<&str> = pods["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p["metadata"]["name"].as_str())
            .collect();
        (names.len() == 3 && names.iter().all(|n| !before.iter().any(|b| b == n))).then_some(())
    })
    .await;
    k.ok(&["scale", "deployment/web", "--replicas=1"]);
    k.ok(&rollout);
    eventually(Duration::from_secs(60), "scaled to one", || async {
        let pods = get(
            &c,
            "/api/v1/namespaces/default/pods?labelSelector=app%3Dweb",
        )
        .await;
        (pods["items"].as_array().map(Vec::len) == Some(1)).then_some(())
    })
    .await;
    k.ok(&["delete", "deployment", "web"]);
    eventually(
        Duration::from_secs(60),
        "sets and pods collected",
        || async {
            let pods = get(
                &c,
                "/api/v1/namespaces/default/pods?labelSelector=app%3Dweb",
            )
            .await;
            let empty = pods["items"].as_array().is_some_and(Vec::is_empty);
            (empty && replica_sets(&c).await.is_empty()).then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn a_rollout_that_never_becomes_ready_exceeds_its_progress_deadline() {
    skiff_integration::require_docker_and_kubectl();
    let nodes = node_names("stuck", 1);
    let _cleanup = DockerCleanup::new(&nodes);
    let c = TestCluster::with_docker_nodes(&nodes);
    let deployment = json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "stuck"},
        "spec": {"replicas": 1, "progressDeadlineSeconds": 4,
            "selector": {"matchLabels": {"app": "stuck"}},
            "template": {"metadata": {"labels": {"app": "stuck"}},
                "spec": {"containers": [{"name": "c", "image": "skiff/busybox:latest",
                    "command": ["sleep", "3600"],
                    "readinessProbe": {"exec": {"command": ["false"]}, "periodSeconds": 1}}]}}}});
    let (code, body) = call(
        client()
            .post(c.url("/apis/apps/v1/namespaces/default/deployments"))
            .json(&deployment),
    )
    .await;
    assert_eq!(code, 201, "{body}");
    let (code, out, err) = kubectl(
        &c.kubeconfig,
        &["rollout", "status", "deployment/stuck", "--timeout=60s"],
    );
    assert_ne!(code, 0, "{out}");
    assert!(err.contains("exceeded its progress deadline"), "{out}{err}");
    let d = get(&c, "/apis/apps/v1/namespaces/default/deployments/stuck").await;
    let progressing = d["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Progressing"))
        .cloned()
        .expect("Progressing");
    assert_eq!(progressing["status"], "False");
    assert_eq!(progressing["reason"], "ProgressDeadlineExceeded");
    assert_eq!(d["status"]["unavailableReplicas"], 1);
}

#[tokio::test]
async fn bad_workloads_are_refused_with_kubernetes_field_paths() {
    let c = TestCluster::api_only();
    let base = "/apis/apps/v1/namespaces/default/deployments";
    let bad = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "bad"},
        "spec": {"selector": {"matchLabels": {"app": "a"}},
            "strategy": {"rollingUpdate": {"maxUnavailable": -1}},
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
        fields.contains(&"spec.strategy.rollingUpdate.maxUnavailable"),
        "{status}"
    );
    let rs = json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "bad"},
        "spec": {"selector": {"matchExpressions": [{"key": "app", "operator": "Sometimes"}]},
            "template": {"metadata": {"labels": {"app": "b"}},
                "spec": {"containers": [{"name": "c", "image": "i"}]}}}});
    let (code, status) = call(
        client()
            .post(c.url("/apis/apps/v1/namespaces/default/replicasets"))
            .json(&rs),
    )
    .await;
    assert_eq!(code, 422, "{status}");
    assert_eq!(status["details"]["causes"][0]["field"], "spec.selector");
}

#[tokio::test]
async fn a_replica_set_adopts_matching_orphans_and_releases_pods_that_stop_matching() {
    let c = TestCluster::start();
    let node = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}});
    let (code, _) = call(client().post(c.url("/api/v1/nodes")).json(&node)).await;
    assert_eq!(code, 201);
    let pods = "/api/v1/namespaces/default/pods";
    let orphan = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "orphan", "labels": {"app": "rs", "tier": "a"}},
        "spec": {"containers": [{"name": "c", "image": "i"}]}});
    let (code, _) = call(client().post(c.url(pods)).json(&orphan)).await;
    assert_eq!(code, 201);
    // The controller must know the orphan before it sees the ReplicaSet: otherwise it
    // creates two pods, adopts the orphan and then deletes one of three, which may be the
    // orphan (created in the same second, as Kubernetes' ranking allows). Kubernetes'
    // informers give no order across resources either; the shared pod informer the
    // controller reads is the one to wait on.
    let shared = c.informers.informer(InformerSpec::all("pods"));
    eventually(
        Duration::from_secs(20),
        "the orphan in the pod informer",
        || async { shared.cache().get("default/orphan").map(|_| ()) },
    )
    .await;
    let rs = json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "rs"},
        "spec": {"replicas": 2, "selector": {"matchExpressions": [
            {"key": "app", "operator": "In", "values": ["rs"]}]},
            "template": {"metadata": {"labels": {"app": "rs", "tier": "b"}},
                "spec": {"containers": [{"name": "c", "image": "i"}]}}}});
    let (code, body) = call(
        client()
            .post(c.url("/apis/apps/v1/namespaces/default/replicasets"))
            .json(&rs),
    )
    .await;
    assert_eq!(code, 201, "{body}");
    // The orphan is adopted and counts: one more pod, not two.
    eventually(
        Duration::from_secs(20),
        "orphan adopted, one pod created",
        || async {
            let list = get(&c, &format!("{pods}?labelSelector=app%3Drs")).await;
            let items = list["items"].as_array().cloned().unwrap_or_default();
            let adopted = items.iter().any(|p| {
                p["metadata"]["name"] == "orphan"
                    && p["metadata"]["ownerReferences"][0]["kind"] == "ReplicaSet"
            });
            (items.len() == 2 && adopted).then_some(())
        },
    )
    .await;
    // Relabelled out of the selector, it is released and replaced.
    let (code, _) = call(
        client()
            .patch(c.url(&format!("{pods}/orphan")))
            .header("content-type", "application/merge-patch+json")
            .body(json!({"metadata": {"labels": {"app": "elsewhere"}}}).to_string()),
    )
    .await;
    assert_eq!(code, 200);
    eventually(Duration::from_secs(20), "released and replaced", || async {
        let orphan = get(&c, &format!("{pods}/orphan")).await;
        let released = orphan["metadata"]["ownerReferences"]
            .as_array()
            .is_none_or(Vec::is_empty);
        let list = get(&c, &format!("{pods}?labelSelector=app%3Drs")).await;
        (released && list["items"].as_array().map(Vec::len) == Some(2)).then_some(())
    })
    .await;
    let out = get(&c, "/apis/apps/v1/namespaces/default/replicasets/rs/scale").await;
    assert_eq!(out["spec"]["replicas"], 2);
    assert_eq!(out["status"]["selector"], "app in (rs)");
}
