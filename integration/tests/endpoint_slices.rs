//! EndpointSlices (discovery.k8s.io/v1), driven over real HTTP against a real cluster: the
//! controller's slices for a selector-bearing Service (conditions, node, zone, resolved
//! ports, owner, 100 endpoints per slice), the mirroring of hand-written Endpoints, the
//! control plane's own slices, validation, and Tables. No containers: pods are made
//! "running" by writing their status as a kubelet would.

use std::time::Duration;

use serde_json::{json, Value};
use skiff_actors::api::meta::now_rfc3339;
use skiff_integration::{call, client, eventually, TestCluster};

const NS: &str = "/api/v1/namespaces/default";
const SLICES: &str = "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices";
const WAIT: Duration = Duration::from_secs(30);

async fn post(c: &TestCluster, path: &str, body: Value) -> Value {
    let (code, out) = call(client().post(c.url(path)).json(&body)).await;
    assert_eq!(code, 201, "POST {path}: {out}");
    out
}

async fn run_pod(c: &TestCluster, name: &str, ip: &str, ready: bool) {
    post(
        c,
        &format!("{NS}/pods"),
        json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": {"app": "web"}},
            "spec": {"containers": [{"name": "app", "image": "busybox:1.36",
                "ports": [{"name": "http", "containerPort": 8080}]}]}}),
    )
    .await;
    post(
        c,
        &format!("{NS}/pods/{name}/binding"),
        json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": name},
            "target": {"kind": "Node", "name": "n1"}}),
    )
    .await;
    set_ready(c, name, ip, ready).await;
}

async fn set_ready(c: &TestCluster, name: &str, ip: &str, ready: bool) {
    let status = json!({"status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
        "startTime": now_rfc3339(),
        "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"},
            "lastTransitionTime": now_rfc3339()}]}});
    let req = client()
        .patch(c.url(&format!("{NS}/pods/{name}/status")))
        .header("Content-Type", "application/merge-patch+json")
        .body(status.to_string());
    let (code, out) = call(req).await;
    assert_eq!(code, 200, "status of {name}: {out}");
}

/// The slices of `service` (by label) once they satisfy `want`.
async fn slices_where(
    c: &TestCluster,
    service: &str,
    what: &str,
    want: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let path = format!("{SLICES}?labelSelector=kubernetes.io%2Fservice-name%3D{service}");
    eventually(WAIT, what, || async {
        let (code, list) = call(client().get(c.url(&path))).await;
        let items = list["items"].as_array().cloned().unwrap_or_default();
        (code == 200 && want(&items)).then_some(items)
    })
    .await
}

fn endpoints(slices: &[Value]) -> Vec<Value> {
    slices
        .iter()
        .flat_map(|s| s["endpoints"].as_array().cloned().unwrap_or_default())
        .collect()
}

fn endpoint<'a>(slices: &'a [Value], ip: &str) -> Option<&'a Value> {
    slices
        .iter()
        .flat_map(|s| s["endpoints"].as_array().into_iter().flatten())
        .find(|e| e["addresses"][0] == ip)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slices_list_pods_with_their_conditions_node_and_zone_a_hundred_at_most() {
    let c = TestCluster::start_with(|cfg| {
        cfg.scheduler.enabled = false;
    });
    post(
        &c,
        "/api/v1/nodes",
        json!({"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": "n1", "labels": {"topology.kubernetes.io/zone": "zone-a"}}}),
    )
    .await;
    let svc = post(
        &c,
        &format!("{NS}/services"),
        json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "web", "labels": {"tier": "front"}},
            "spec": {"selector": {"app": "web"},
                "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}}),
    )
    .await;
    // No pods yet: one empty placeholder slice.
    let placeholder = slices_where(&c, "web", "a placeholder slice", |s| s.len() == 1).await;
    assert!(endpoints(&placeholder).is_empty());

    for i in 0..101 {
        run_pod(
            &c,
            &format!("web-{i}"),
            &format!("10.244.{}.{}", i / 200, i % 200 + 1),
            i != 7,
        )
        .await;
    }
    let slices = slices_where(&c, "web", "101 endpoints in two slices", |s| {
        s.len() == 2 && endpoints(s).len() == 101
    })
    .await;
    let mut sizes: Vec<usize> = slices
        .iter()
        .map(|s| s["endpoints"].as_array().map_or(0, Vec::len))
        .collect();
    sizes.sort();
    assert_eq!(sizes, [1, 100]);
    for s in &slices {
        assert_eq!(s["addressType"], "IPv4");
        assert_eq!(
            s["ports"],
            json!([{"name": "http", "port": 8080, "protocol": "TCP"}])
        );
        let labels = &s["metadata"]["labels"];
        assert_eq!(
            labels["endpointslice.kubernetes.io/managed-by"],
            "endpointslice-controller.k8s.io"
        );
        assert_eq!(labels["tier"], "front", "the Service's labels are copied");
        let owner = &s["metadata"]["ownerReferences"][0];
        assert_eq!(owner["kind"], "Service");
        assert_eq!(owner["uid"], svc["metadata"]["uid"]);
        assert_eq!(owner["controller"], true);
        assert!(s["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .starts_with("web-"));
    }
    let e = endpoint(&slices, "10.244.0.1").expect("web-0's endpoint");
    assert_eq!(
        e["conditions"],
        json!({"ready": true, "serving": true, "terminating": false})
    );
    assert_eq!(e["nodeName"], "n1");
    assert_eq!(e["zone"], "zone-a");
    assert_eq!(e["targetRef"]["kind"], "Pod");
    assert_eq!(e["targetRef"]["name"], "web-0");
    let unready = endpoint(&slices, "10.244.0.8").expect("web-7's endpoint");
    assert_eq!(unready["conditions"]["ready"], false);
    assert_eq!(unready["conditions"]["serving"], false);

    // A pod being deleted (its kubelet has not confirmed) is terminating: still serving,
    // no longer ready.
    let (code, _) = call(client().delete(c.url(&format!("{NS}/pods/web-0")))).await;
    assert_eq!(code, 200);
    let slices = slices_where(&c, "web", "web-0 terminating", |s| {
        endpoint(s, "10.244.0.1").is_some_and(|e| e["conditions"]["terminating"] == true)
    })
    .await;
    let e = endpoint(&slices, "10.244.0.1").expect("web-0");
    assert_eq!(
        e["conditions"],
        json!({"ready": false, "serving": true, "terminating": true})
    );

    // kubectl's columns.
    let (code, table) = call(
        client()
            .get(c.url(SLICES))
            .header("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io"),
    )
    .await;
    assert_eq!(code, 200, "{table}");
    let columns: Vec<&str> = table["columnDefinitions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(
        columns,
        ["Name", "AddressType", "Ports", "Endpoints", "Age"]
    );

    // The control plane's own Service has its slice too.
    let (code, k) = call(client().get(c.url(&format!("{SLICES}/kubernetes")))).await;
    assert_eq!(code, 200, "{k}");
    assert_eq!(
        k["metadata"]["labels"]["kubernetes.io/service-name"],
        "kubernetes"
    );
    assert_eq!(k["ports"][0]["name"], "https");

    // The Service gone, its slices go.
    let (code, _) = call(client().delete(c.url(&format!("{NS}/services/web")))).await;
    assert_eq!(code, 200);
    slices_where(&c, "web", "the slices deleted with the Service", |s| {
        s.is_empty()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hand_written_endpoints_are_mirrored_unless_they_ask_not_to_be() {
    let c = TestCluster::start();
    for name in ["ext", "private"] {
        post(
            &c,
            &format!("{NS}/services"),
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
                "spec": {"ports": [{"name": "pg", "port": 5432}]}}),
        )
        .await;
    }
    post(
        &c,
        &format!("{NS}/endpoints"),
        json!({"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "ext"},
            "subsets": [{"addresses": [{"ip": "192.0.2.10", "hostname": "db-a"}],
                "notReadyAddresses": [{"ip": "192.0.2.11"}],
                "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}]}]}),
    )
    .await;
    post(
        &c,
        &format!("{NS}/endpoints"),
        json!({"apiVersion": "v1", "kind": "Endpoints",
            "metadata": {"name": "private", "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
            "subsets": [{"addresses": [{"ip": "192.0.2.20"}], "ports": [{"port": 1}]}]}),
    )
    .await;
    let slices = slices_where(&c, "ext", "the mirrored slice", |s| endpoints(s).len() == 2).await;
    let s = &slices[0];
    assert_eq!(
        s["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"],
        "endpointslicemirroring-controller.k8s.io"
    );
    assert_eq!(s["metadata"]["ownerReferences"][0]["kind"], "Endpoints");
    assert_eq!(
        s["ports"],
        json!([{"name": "pg", "port": 5432, "protocol": "TCP"}])
    );
    let a = endpoint(&slices, "192.0.2.10").expect("ready address");
    assert_eq!(a["conditions"]["ready"], true);
    assert_eq!(a["hostname"], "db-a");
    assert_eq!(
        endpoint(&slices, "192.0.2.11").expect("not ready")["conditions"]["ready"],
        false
    );

    // Endpoints that ask not to be mirrored are not; mirrored ones leave with their
    // Endpoints.
    let (_, private) = call(client().get(c.url(&format!(
        "{SLICES}?labelSelector=kubernetes.io%2Fservice-name%3Dprivate"
    ))))
    .await;
    assert_eq!(private["items"], json!([]));
    let (code, _) = call(client().delete(c.url(&format!("{NS}/endpoints/ext")))).await;
    assert_eq!(code, 200);
    slices_where(&c, "ext", "the mirrored slice removed", |s| s.is_empty()).await;
}

#[tokio::test]
async fn bad_slices_are_refused_with_kubernetes_messages() {
    let c = TestCluster::api_only();
    let (code, status) = call(client().post(c.url(SLICES)).json(&json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "bad"}, "addressType": "IPv4",
        "endpoints": [{"addresses": ["not-an-ip"]}],
        "ports": [{"name": "http", "port": 80, "protocol": "HTTP"}]})))
    .await;
    assert_eq!(code, 422, "{status}");
    let message = status["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(
            "endpoints[0].addresses[0]: Invalid value: \"not-an-ip\": must be a valid IPv4 address"
        ),
        "{message}"
    );
    assert!(
        message.contains("ports[0].protocol: Unsupported value: \"HTTP\""),
        "{message}"
    );
}
