//! The endpoints, namespace, node lifecycle and garbage-collector controllers, driven over
//! real HTTP against a real cluster (its controller-manager running them): no containers,
//! pods are made "running" by writing their status as a kubelet would.

use std::time::Duration;

use serde_json::{json, Value};
use skiff_actors::api::meta::now_rfc3339;
use skiff_integration::{call, client, eventually, TestCluster};

const NS: &str = "/api/v1/namespaces/default";
const WAIT: Duration = Duration::from_secs(20);

async fn post(c: &TestCluster, path: &str, body: Value) -> Value {
    let (code, out) = call(client().post(c.url(path)).json(&body)).await;
    assert_eq!(code, 201, "POST {path}: {out}");
    out
}

async fn get(c: &TestCluster, path: &str) -> (u16, Value) {
    call(client().get(c.url(path))).await
}

async fn patch(c: &TestCluster, path: &str, kind: &str, body: Value) -> Value {
    let req = client()
        .patch(c.url(path))
        .header("Content-Type", kind)
        .body(body.to_string());
    let (code, out) = call(req).await;
    assert_eq!(code, 200, "PATCH {path}: {out}");
    out
}

const MERGE: &str = "application/merge-patch+json";
const STRATEGIC: &str = "application/strategic-merge-patch+json";

async fn delete(c: &TestCluster, path: &str, policy: Option<&str>) -> (u16, Value) {
    let mut req = client().delete(c.url(path));
    if let Some(p) = policy {
        req =
            req.json(&json!({"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": p}));
    }
    call(req).await
}

fn items(list: &Value) -> Vec<Value> {
    list["items"].as_array().cloned().unwrap_or_default()
}

fn names(list: &Value) -> Vec<String> {
    let mut n: Vec<String> = items(list)
        .iter()
        .filter_map(|i| i["metadata"]["name"].as_str().map(str::to_string))
        .collect();
    n.sort();
    n
}

fn web_pod(name: &str, labels: Value, port_name: &str, port: u16) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": {"containers": [{"name": "app", "image": "busybox:1.36",
            "ports": [{"name": port_name, "containerPort": port}]}]},
    })
}

/// Assign a pod to a node (as the scheduler would) and report it running, as its kubelet
/// would, with an IP and a Ready condition.
async fn run_pod(c: &TestCluster, name: &str, node: &str, ip: &str, ready: bool) {
    let binding = json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": name},
        "target": {"kind": "Node", "name": node}});
    let (code, out) = call(
        client()
            .post(c.url(&format!("{NS}/pods/{name}/binding")))
            .json(&binding),
    )
    .await;
    assert_eq!(code, 201, "bind {name}: {out}");
    set_ready(c, name, ip, ready).await;
}

async fn set_ready(c: &TestCluster, name: &str, ip: &str, ready: bool) {
    let status = json!({"status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
        "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"},
            "lastTransitionTime": now_rfc3339()}]}});
    patch(c, &format!("{NS}/pods/{name}/status"), MERGE, status).await;
}

fn ips(addresses: &Value) -> Vec<String> {
    let mut v: Vec<String> = addresses
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x["ip"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// The Endpoints of `service` once they satisfy `want`.
async fn endpoints_where(
    c: &TestCluster,
    service: &str,
    what: &str,
    want: impl Fn(&Value) -> bool,
) -> Value {
    eventually(WAIT, what, || async {
        let (code, ep) = get(c, &format!("{NS}/endpoints/{service}")).await;
        (code == 200 && want(&ep)).then_some(ep)
    })
    .await
}

#[tokio::test]
async fn endpoints_list_ready_pods_resolve_named_ports_and_follow_the_service() {
    let c = TestCluster::start();
    post(&c, &format!("{NS}/services"), json!({
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "labels": {"tier": "front"}},
        "spec": {"selector": {"app": "web"}, "ports": [
            {"name": "http", "port": 80, "targetPort": "http-alt"},
            {"name": "metrics", "port": 9100, "targetPort": "no-such-port"},
        ]},
    })).await;
    post(
        &c,
        &format!("{NS}/pods"),
        web_pod("a", json!({"app": "web"}), "http-alt", 8080),
    )
    .await;
    post(
        &c,
        &format!("{NS}/pods"),
        web_pod("b", json!({"app": "web"}), "http-alt", 8080),
    )
    .await;
    post(
        &c,
        &format!("{NS}/pods"),
        web_pod("c", json!({"app": "web"}), "http-alt", 8080),
    )
    .await;
    post(
        &c,
        &format!("{NS}/pods"),
        web_pod("other", json!({"app": "db"}), "http-alt", 8080),
    )
    .await;
    run_pod(&c, "a", "n1", "10.1.0.1", true).await;
    run_pod(&c, "b", "n2", "10.1.0.2", false).await;
    run_pod(&c, "other", "n1", "10.1.0.9", true).await;
    // "c" never gets an IP: it cannot be an endpoint yet.

    let ep = endpoints_where(&c, "web", "a ready and b not-ready address", |ep| {
        ips(&ep["subsets"][0]["addresses"]) == ["10.1.0.1"]
            && ips(&ep["subsets"][0]["notReadyAddresses"]) == ["10.1.0.2"]
    })
    .await;
    let subset = &ep["subsets"][0];
    assert_eq!(ep["subsets"].as_array().unwrap().len(), 1, "{ep}");
    assert_eq!(
        subset["ports"],
        json!([{"name": "http", "port": 8080, "protocol": "TCP"}]),
        "named targetPort resolved, unresolvable one left out"
    );
    assert_eq!(subset["addresses"][0]["nodeName"], "n1");
    assert_eq!(subset["addresses"][0]["targetRef"]["kind"], "Pod");
    assert_eq!(subset["addresses"][0]["targetRef"]["name"], "a");
    assert_eq!(ep["metadata"]["labels"]["tier"], "front");

    // The port no pod has is reported on the service, not a crash.
    eventually(WAIT, "FailedToResolvePort event", || async {
        let (_, evs) = get(
            &c,
            &format!(
                "{NS}/events?fieldSelector=involvedObject.name=web,reason=FailedToResolvePort"
            ),
        )
        .await;
        items(&evs)
            .into_iter()
            .find(|e| e["type"] == "Warning" && e["involvedObject"]["kind"] == "Service")
    })
    .await;

    // b becomes ready, c gets an IP but is not ready.
    set_ready(&c, "b", "10.1.0.2", true).await;
    run_pod(&c, "c", "n2", "10.1.0.3", false).await;
    endpoints_where(&c, "web", "b ready and c not ready", |ep| {
        ips(&ep["subsets"][0]["addresses"]) == ["10.1.0.1", "10.1.0.2"]
            && ips(&ep["subsets"][0]["notReadyAddresses"]) == ["10.1.0.3"]
    })
    .await;

    // A pod relabelled out of the service leaves it; a deleted pod too.
    patch(
        &c,
        &format!("{NS}/pods/a"),
        MERGE,
        json!({"metadata": {"labels": {"app": "gone"}}}),
    )
    .await;
    let (code, _) = delete(&c, &format!("{NS}/pods/c"), None).await;
    assert_eq!(code, 200);
    endpoints_where(&c, "web", "only b left", |ep| {
        ips(&ep["subsets"][0]["addresses"]) == ["10.1.0.2"]
            && ep["subsets"][0].get("notReadyAddresses").is_none()
    })
    .await;

    // Endpoints removed by hand are put back.
    let (code, _) = delete(&c, &format!("{NS}/endpoints/web"), None).await;
    assert_eq!(code, 200);
    endpoints_where(&c, "web", "endpoints recreated", |ep| {
        ips(&ep["subsets"][0]["addresses"]) == ["10.1.0.2"]
    })
    .await;

    // Deleting the service deletes its endpoints.
    let (code, _) = delete(&c, &format!("{NS}/services/web"), None).await;
    assert_eq!(code, 200);
    eventually(WAIT, "endpoints deleted with the service", || async {
        let (code, _) = get(&c, &format!("{NS}/endpoints/web")).await;
        (code == 404).then_some(())
    })
    .await;
}

#[tokio::test]
async fn services_without_a_selector_keep_their_hand_written_endpoints() {
    let c = TestCluster::start();
    let manual = json!({"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "external"},
        "subsets": [{"addresses": [{"ip": "192.0.2.10"}], "ports": [{"port": 5432, "protocol": "TCP"}]}]});
    post(&c, &format!("{NS}/endpoints"), manual).await;
    post(
        &c,
        &format!("{NS}/services"),
        json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "external"}, "spec": {"ports": [{"port": 5432}]}}),
    )
    .await;
    // A managed service alongside, so we know the controller has run in this namespace.
    post(&c, &format!("{NS}/services"), json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web"}, "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}})).await;
    post(
        &c,
        &format!("{NS}/pods"),
        web_pod("a", json!({"app": "web"}), "http", 80),
    )
    .await;
    run_pod(&c, "a", "n1", "10.1.0.1", true).await;
    endpoints_where(&c, "web", "managed endpoints", |ep| {
        ips(&ep["subsets"][0]["addresses"]) == ["10.1.0.1"]
    })
    .await;

    let (code, ep) = get(&c, &format!("{NS}/endpoints/external")).await;
    assert_eq!(code, 200);
    assert_eq!(
        ips(&ep["subsets"][0]["addresses"]),
        ["192.0.2.10"],
        "user-managed endpoints untouched: {ep}"
    );
}

#[tokio::test]
async fn deleting_a_namespace_empties_it_and_then_removes_it() {
    let c = TestCluster::start();
    let ns = "doomed";
    post(
        &c,
        "/api/v1/namespaces",
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
    )
    .await;
    let base = format!("/api/v1/namespaces/{ns}");
    post(
        &c,
        &format!("{base}/pods"),
        web_pod("p", json!({"app": "x"}), "http", 80),
    )
    .await;
    post(
        &c,
        &format!("{base}/services"),
        json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "s"}, "spec": {"selector": {"app": "x"}, "ports": [{"port": 80}]}}),
    )
    .await;
    post(
        &c,
        &format!("{base}/replicationcontrollers"),
        json!({"apiVersion": "v1", "kind": "ReplicationController",
        "metadata": {"name": "rc"}, "spec": {"replicas": 2, "selector": {"app": "y"}, "template": {
            "metadata": {"labels": {"app": "y"}},
            "spec": {"containers": [{"name": "app", "image": "busybox:1.36"}]}}}}),
    )
    .await;
    // The controllers have had their say (the RC's pods exist) before the namespace goes.
    eventually(WAIT, "rc pods created", || async {
        let (_, pods) = get(&c, &format!("{base}/pods?labelSelector=app=y")).await;
        (items(&pods).len() == 2).then_some(())
    })
    .await;
    post(
        &c,
        &format!("{base}/resourcequotas"),
        json!({"apiVersion": "v1", "kind": "ResourceQuota",
        "metadata": {"name": "q"}, "spec": {"hard": {"pods": "50"}}}),
    )
    .await;
    post(
        &c,
        &format!("{base}/events"),
        json!({"apiVersion": "v1", "kind": "Event",
        "metadata": {"name": "e"}, "involvedObject": {"kind": "Pod", "name": "p", "namespace": ns},
        "reason": "Test", "message": "hello", "type": "Normal"}),
    )
    .await;

    let (code, body) = delete(&c, &format!("/api/v1/namespaces/{ns}"), None).await;
    assert!(
        code == 200 || code == 202,
        "delete namespace: {code} {body}"
    );

    // While it terminates, nothing new may be created in it.
    let (code, body) = call(client().post(c.url(&format!("{base}/pods"))).json(&web_pod(
        "late",
        json!({}),
        "http",
        80,
    )))
    .await;
    assert!(
        code == 403 || code == 404,
        "create in a terminating namespace: {code} {body}"
    );

    eventually(WAIT, "namespace removed", || async {
        let (code, _) = get(&c, &format!("/api/v1/namespaces/{ns}")).await;
        (code == 404).then_some(())
    })
    .await;
    for resource in [
        "pods",
        "services",
        "endpoints",
        "replicationcontrollers",
        "resourcequotas",
        "events",
    ] {
        let (code, list) = get(&c, &format!("{base}/{resource}")).await;
        assert_eq!(code, 200, "{resource}: {list}");
        assert!(
            items(&list).is_empty(),
            "{resource} left behind in {ns}: {list}"
        );
    }
}

fn node(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "status": {"capacity": {"cpu": "4", "memory": "8Gi", "pods": "110"},
            "allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"}}})
}

/// What a kubelet's status update says: Ready, heartbeat now.
async fn heartbeat(c: &TestCluster, name: &str) {
    let now = now_rfc3339();
    patch(c, &format!("/api/v1/nodes/{name}/status"), STRATEGIC, json!({"status": {"conditions": [
        {"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "kubelet is posting ready status",
            "lastHeartbeatTime": now, "lastTransitionTime": now}]}})).await;
}

fn ready_condition(node: &Value) -> Value {
    node["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready").cloned())
        .unwrap_or(Value::Null)
}

fn taint_effects(node: &Value, key: &str) -> Vec<String> {
    let mut v: Vec<String> = node["spec"]["taints"]
        .as_array()
        .map(|ts| {
            ts.iter()
                .filter(|t| t["key"] == key)
                .filter_map(|t| t["effect"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[tokio::test]
async fn a_node_that_stops_heartbeating_is_marked_unknown_tainted_and_its_pods_evicted() {
    let c = TestCluster::start_with(|cfg| {
        cfg.controllers.node_grace_period_seconds = 2;
        cfg.controllers.node_monitor_period_seconds = 1;
        cfg.gateway.default_unreachable_toleration_seconds = 3;
    });
    const UNREACHABLE: &str = "node.kubernetes.io/unreachable";
    for n in ["alive", "lost"] {
        post(&c, "/api/v1/nodes", node(n)).await;
        heartbeat(&c, n).await;
    }
    // The live node's kubelet keeps posting; the lost one's never does again.
    let hb_client = c.url("");
    let beating = tokio::spawn(async move {
        loop {
            let now = now_rfc3339();
            let body = json!({"status": {"conditions": [{"type": "Ready", "status": "True",
                "reason": "KubeletReady", "lastHeartbeatTime": now}]}});
            let _ = client()
                .patch(format!("{hb_client}/api/v1/nodes/alive/status"))
                .header("Content-Type", STRATEGIC)
                .body(body.to_string())
                .send()
                .await;
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    });
    for (pod, node) in [
        ("lost-1", "lost"),
        ("lost-2", "lost"),
        ("forever", "lost"),
        ("safe", "alive"),
    ] {
        let mut p = web_pod(pod, json!({"app": "x"}), "http", 80);
        p["spec"]["nodeName"] = json!(node);
        if pod == "forever" {
            p["spec"]["tolerations"] = json!([{"key": UNREACHABLE, "operator": "Exists",
                "effect": "NoExecute"}]);
        }
        let created = post(&c, &format!("{NS}/pods"), p).await;
        // DefaultTolerationSeconds: a bounded toleration of a lost node unless the pod
        // has its own.
        let tolerations = created["spec"]["tolerations"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let unreachable: Vec<&Value> = tolerations
            .iter()
            .filter(|t| t["key"] == UNREACHABLE)
            .collect();
        assert_eq!(unreachable.len(), 1, "{created}");
        let expected = if pod == "forever" {
            Value::Null
        } else {
            json!(3)
        };
        assert_eq!(unreachable[0]["tolerationSeconds"], expected, "{created}");
    }
    // lost-1 reports Ready (as its kubelet did before the node went).
    patch(
        &c,
        &format!("{NS}/pods/lost-1/status"),
        STRATEGIC,
        json!({"status": {"conditions": [
        {"type": "Ready", "status": "True"}]}}),
    )
    .await;

    let lost = eventually(WAIT, "lost node marked Unknown and tainted", || async {
        let (_, n) = get(&c, "/api/v1/nodes/lost").await;
        let ready = ready_condition(&n);
        (ready["status"] == "Unknown"
            && taint_effects(&n, UNREACHABLE) == ["NoExecute", "NoSchedule"])
        .then_some(n)
    })
    .await;
    let ready = ready_condition(&lost);
    assert_eq!(ready["reason"], "NodeStatusUnknown");
    assert_eq!(ready["message"], "Kubelet stopped posting node status.");
    eventually(WAIT, "NodeNotReady event", || async {
        let (_, evs) = get(&c, "/api/v1/namespaces/default/events?fieldSelector=involvedObject.name=lost,reason=NodeNotReady").await;
        items(&evs).into_iter().next()
    })
    .await;
    // MarkPodsNotReady: the Ready pod of the lost node is marked not ready at once.
    eventually(WAIT, "the lost node's ready pod marked not ready", || async {
        let (_, evs) = get(&c, "/api/v1/namespaces/default/events?fieldSelector=involvedObject.name=lost-1,reason=NodeNotReady").await;
        items(&evs).into_iter().next()
    })
    .await;

    // When their tolerations run out the pods are evicted; the one tolerating the taint
    // for ever and the live node's stay.
    eventually(WAIT, "pods on the lost node evicted", || async {
        let (_, pods) = get(&c, &format!("{NS}/pods")).await;
        (names(&pods) == ["forever", "safe"]).then_some(())
    })
    .await;
    eventually(WAIT, "TaintManagerEviction event", || async {
        let (_, evs) = get(&c, "/api/v1/namespaces/default/events?fieldSelector=involvedObject.name=lost-2,reason=TaintManagerEviction").await;
        items(&evs).into_iter().next()
    })
    .await;
    let (_, alive) = get(&c, "/api/v1/nodes/alive").await;
    assert_eq!(ready_condition(&alive)["status"], "True", "{alive}");
    assert!(taint_effects(&alive, UNREACHABLE).is_empty(), "{alive}");

    // When its kubelet comes back, the taints go.
    heartbeat(&c, "lost").await;
    eventually(
        WAIT,
        "taints removed after the node heartbeats again",
        || async {
            let (_, n) = get(&c, "/api/v1/nodes/lost").await;
            taint_effects(&n, UNREACHABLE).is_empty().then_some(())
        },
    )
    .await;
    beating.abort();

    // PodGC: once the node is deleted, its last pod goes too, marked as why.
    let (code, _) = call(client().delete(c.url("/api/v1/nodes/lost"))).await;
    assert_eq!(code, 200);
    eventually(WAIT, "the deleted node's pod collected", || async {
        let (_, pods) = get(&c, &format!("{NS}/pods")).await;
        (names(&pods) == ["safe"]).then_some(())
    })
    .await;
}

#[tokio::test]
async fn terminated_pods_beyond_the_threshold_are_collected_oldest_first() {
    let c = TestCluster::start_with(|cfg| {
        cfg.controllers.terminated_pod_gc_threshold = 2;
    });
    for name in ["done-1", "done-2", "done-3", "running"] {
        let p = web_pod(name, json!({"app": "gc"}), "http", 80);
        post(&c, &format!("{NS}/pods"), p).await;
        if name != "running" {
            patch(
                &c,
                &format!("{NS}/pods/{name}/status"),
                STRATEGIC,
                json!({"status": {"phase": "Succeeded"}}),
            )
            .await;
        }
        // Creation timestamps are whole seconds: keep the order visible.
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }
    eventually(WAIT, "the oldest terminated pod collected", || async {
        let (_, pods) = get(&c, &format!("{NS}/pods")).await;
        (names(&pods) == ["done-2", "done-3", "running"]).then_some(())
    })
    .await;
}

fn rc(name: &str, replicas: u32) -> Value {
    json!({"apiVersion": "v1", "kind": "ReplicationController", "metadata": {"name": name},
        "spec": {"replicas": replicas, "selector": {"app": name}, "template": {
            "metadata": {"labels": {"app": name}},
            "spec": {"containers": [{"name": "app", "image": "busybox:1.36"}]}}}})
}

/// Create an RC and wait for its pods (made by the replication controller).
async fn rc_with_pods(c: &TestCluster, name: &str, replicas: usize) -> (Value, Vec<Value>) {
    let created = post(
        c,
        &format!("{NS}/replicationcontrollers"),
        rc(name, replicas as u32),
    )
    .await;
    let pods = eventually(WAIT, "rc pods", || async {
        let (_, list) = get(c, &format!("{NS}/pods?labelSelector=app={name}")).await;
        let pods = items(&list);
        (pods.len() == replicas).then_some(pods)
    })
    .await;
    for p in &pods {
        assert_eq!(
            p["metadata"]["ownerReferences"][0]["uid"],
            created["metadata"]["uid"]
        );
    }
    (created, pods)
}

async fn pods_of(c: &TestCluster, name: &str) -> Vec<Value> {
    let (_, list) = get(c, &format!("{NS}/pods?labelSelector=app={name}")).await;
    items(&list)
}

#[tokio::test]
async fn deleting_an_rc_in_the_background_deletes_its_pods() {
    let c = TestCluster::start();
    rc_with_pods(&c, "bg", 2).await;
    let (code, body) = delete(
        &c,
        &format!("{NS}/replicationcontrollers/bg"),
        Some("Background"),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    eventually(WAIT, "pods of a deleted rc collected", || async {
        pods_of(&c, "bg").await.is_empty().then_some(())
    })
    .await;
}

#[tokio::test]
async fn deleting_an_rc_with_orphan_keeps_its_pods_and_clears_their_owner() {
    let c = TestCluster::start();
    let (_, before) = rc_with_pods(&c, "orph", 2).await;
    let (code, body) = delete(
        &c,
        &format!("{NS}/replicationcontrollers/orph"),
        Some("Orphan"),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    eventually(WAIT, "orphaning rc removed", || async {
        let (code, _) = get(&c, &format!("{NS}/replicationcontrollers/orph")).await;
        (code == 404).then_some(())
    })
    .await;
    let after = pods_of(&c, "orph").await;
    assert_eq!(
        names(&json!({"items": after})),
        names(&json!({"items": before})),
        "the same pods remain"
    );
    for p in &after {
        let refs = p["metadata"]["ownerReferences"]
            .as_array()
            .map(Vec::len)
            .unwrap_or(0);
        assert_eq!(refs, 0, "owner reference cleared: {p}");
    }
    // And they stay: with the owner gone for good, nothing may collect them later. Barrier:
    // the collector processes a Background deletion made afterwards, so it has looked at
    // the cluster since the orphaning and left the orphans alone.
    rc_with_pods(&c, "later", 1).await;
    let (code, body) = delete(
        &c,
        &format!("{NS}/replicationcontrollers/later"),
        Some("Background"),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    eventually(WAIT, "the later rc's pod collected", || async {
        pods_of(&c, "later").await.is_empty().then_some(())
    })
    .await;
    assert_eq!(pods_of(&c, "orph").await.len(), 2);
}

#[tokio::test]
async fn deleting_an_rc_in_the_foreground_deletes_its_pods_before_the_rc() {
    let c = TestCluster::start();
    rc_with_pods(&c, "fg", 3).await;
    let (code, body) = delete(
        &c,
        &format!("{NS}/replicationcontrollers/fg"),
        Some("Foreground"),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    // The RC stays visible until its pods are gone: whenever it is seen gone, so are they.
    eventually(WAIT, "foreground-deleted rc removed", || async {
        let (code, rc) = get(&c, &format!("{NS}/replicationcontrollers/fg")).await;
        let pods = pods_of(&c, "fg").await;
        if code == 200 {
            assert!(rc["metadata"]["deletionTimestamp"].is_string(), "{rc}");
            return None;
        }
        assert!(pods.is_empty(), "rc gone while its pods remain: {pods:?}");
        Some(())
    })
    .await;
    assert!(pods_of(&c, "fg").await.is_empty());
}

#[tokio::test]
async fn a_renewed_node_lease_keeps_a_node_ready_without_status_heartbeats() {
    let c = TestCluster::start_with(|cfg| {
        cfg.controllers.node_grace_period_seconds = 2;
    });
    for n in ["leased", "silent"] {
        post(&c, "/api/v1/nodes", node(n)).await;
        heartbeat(&c, n).await;
    }
    // Only the Lease of "leased" is renewed from now on, as a kubelet does between its
    // (rarer) status updates.
    let base = c.url("");
    let renewing = tokio::spawn(async move {
        let url = format!("{base}/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases");
        loop {
            let spec = json!({"holderIdentity": "leased", "leaseDurationSeconds": 40,
                "renewTime": chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()});
            let (code, _) = call(
                client()
                    .patch(format!("{url}/leased"))
                    .header("Content-Type", MERGE)
                    .body(json!({ "spec": spec }).to_string()),
            )
            .await;
            if code == 404 {
                let lease = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": {"name": "leased"}, "spec": spec});
                call(client().post(&url).json(&lease)).await;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    });
    // Barrier: a node that heartbeats once after the silent one has gone Unknown goes
    // Unknown itself a grace period later; by then the controller has judged the leased
    // node, whose status heartbeat is older still.
    for n in ["silent", "late"] {
        if n == "late" {
            post(&c, "/api/v1/nodes", node(n)).await;
            heartbeat(&c, n).await;
        }
        eventually(WAIT, "a silent node marked Unknown", || async {
            let (_, node) = get(&c, &format!("/api/v1/nodes/{n}")).await;
            (ready_condition(&node)["status"] == "Unknown").then_some(())
        })
        .await;
    }
    let (_, leased) = get(&c, "/api/v1/nodes/leased").await;
    assert_eq!(ready_condition(&leased)["status"], "True", "{leased}");
    renewing.abort();
}

#[tokio::test]
async fn a_kubelet_renews_its_node_lease_owned_by_its_node() {
    let c = TestCluster::start_with(|cfg| {
        cfg.nodes = vec![skiff::config::NodeConfig {
            name: "hollow-lease".into(),
            runtime: "sim".into(),
            heartbeat_seconds: 1,
            ..Default::default()
        }];
    });
    let path = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/hollow-lease";
    let first = eventually(WAIT, "the node's lease", || async {
        let (code, l) = get(&c, path).await;
        (code == 200).then_some(l)
    })
    .await;
    assert_eq!(first["spec"]["holderIdentity"], "hollow-lease");
    assert_eq!(first["metadata"]["ownerReferences"][0]["kind"], "Node");
    let renewed_at = first["spec"]["renewTime"].clone();
    eventually(WAIT, "the lease renewed", || async {
        let (_, l) = get(&c, path).await;
        (l["spec"]["renewTime"] != renewed_at).then_some(())
    })
    .await;
}
