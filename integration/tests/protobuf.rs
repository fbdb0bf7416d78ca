//! Kubernetes protobuf on the wire against a real cluster: every `kubectl create`
//! generator of a served kind (kubectl's typed clients post protobuf and ask for it
//! back), `kubectl drain` of a hollow node (Evictions posted in protobuf, pods listed and
//! watched for in protobuf), and raw requests: protobuf answers for objects, lists,
//! Status errors and watches, and bad bodies refused with 400 in kube-apiserver's words.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use skiff_actors::api::protobuf;
use skiff_integration::{call, client, eventually, TestCluster};

const PROTOBUF: &str = "application/vnd.kubernetes.protobuf";
const WAIT: Duration = Duration::from_secs(60);

/// Run kubectl with `-v=8` (which logs the request and response headers); assert it
/// succeeded and that its request body was protobuf; return stdout.
fn kubectl_protobuf(c: &TestCluster, args: &[&str]) -> String {
    let mut all = args.to_vec();
    all.push("-v=8");
    let (code, out, err) = skiff_integration::kubectl(&c.kubeconfig, &all);
    assert_eq!(code, 0, "kubectl {args:?} failed:\n{err}\n{out}");
    assert!(
        err.contains(&format!("Content-Type: {PROTOBUF}")),
        "kubectl {args:?} did not send protobuf:\n{err}"
    );
    out
}

fn jsonpath(c: &TestCluster, args: &[&str], path: &str) -> String {
    let mut all = vec!["get"];
    all.extend_from_slice(args);
    let expr = format!("-o=jsonpath={{{path}}}");
    all.push(&expr);
    let (code, out, err) = skiff_integration::kubectl(&c.kubeconfig, &all);
    assert_eq!(code, 0, "kubectl get {args:?} failed: {err}");
    out
}

#[test]
fn every_kubectl_create_generator_of_a_served_kind_posts_protobuf_and_is_created() {
    skiff_integration::require_kubectl();
    let c = TestCluster::api_only();

    let out = kubectl_protobuf(&c, &["create", "namespace", "pb"]);
    assert!(out.contains("namespace/pb created"), "{out}");
    assert_eq!(jsonpath(&c, &["ns", "pb"], ".status.phase"), "Active");

    let out = kubectl_protobuf(
        &c,
        &[
            "create",
            "quota",
            "q",
            "--hard=pods=2,requests.cpu=1500m",
            "-n",
            "pb",
        ],
    );
    assert!(out.contains("resourcequota/q created"), "{out}");
    assert_eq!(
        jsonpath(&c, &["quota", "q", "-n", "pb"], ".spec.hard.pods"),
        "2"
    );
    assert_eq!(
        jsonpath(&c, &["quota", "q", "-n", "pb"], ".spec.hard.requests\\.cpu"),
        "1500m"
    );

    let out = kubectl_protobuf(
        &c,
        &[
            "create",
            "service",
            "clusterip",
            "web",
            "--tcp=80:8080",
            "-n",
            "pb",
        ],
    );
    assert!(out.contains("service/web created"), "{out}");
    let svc = ["svc", "web", "-n", "pb"];
    assert_eq!(jsonpath(&c, &svc, ".spec.ports[0].targetPort"), "8080");
    assert!(jsonpath(&c, &svc, ".spec.clusterIP").starts_with("10.96."));

    let out = kubectl_protobuf(
        &c,
        &[
            "create",
            "service",
            "nodeport",
            "np",
            "--tcp=8443:https",
            "-n",
            "pb",
        ],
    );
    assert!(out.contains("service/np created"), "{out}");
    let np = ["svc", "np", "-n", "pb"];
    assert_eq!(jsonpath(&c, &np, ".spec.ports[0].targetPort"), "https");
    let node_port: u16 = jsonpath(&c, &np, ".spec.ports[0].nodePort")
        .parse()
        .expect("a node port");
    assert!((30000..=32767).contains(&node_port), "{node_port}");

    let out = kubectl_protobuf(
        &c,
        &[
            "create",
            "service",
            "externalname",
            "ext",
            "--external-name=db.example.com",
            "-n",
            "pb",
        ],
    );
    assert!(out.contains("service/ext created"), "{out}");
    assert_eq!(
        jsonpath(&c, &["svc", "ext", "-n", "pb"], ".spec.externalName"),
        "db.example.com"
    );

    let out = kubectl_protobuf(
        &c,
        &[
            "create",
            "service",
            "loadbalancer",
            "lb",
            "--tcp=80:8080",
            "-n",
            "pb",
        ],
    );
    assert!(out.contains("service/lb created"), "{out}");
    assert_eq!(
        jsonpath(&c, &["svc", "lb", "-n", "pb"], ".spec.type"),
        "LoadBalancer"
    );

    let out = kubectl_protobuf(
        &c,
        &[
            "create",
            "role",
            "pod-reader",
            "--verb=get,list",
            "--resource=pods",
            "-n",
            "pb",
        ],
    );
    assert!(
        out.contains("role.rbac.authorization.k8s.io/pod-reader created"),
        "{out}"
    );
    assert_eq!(
        jsonpath(&c, &["role", "pod-reader", "-n", "pb"], ".rules[0].verbs"),
        r#"["get","list"]"#
    );

    let out = kubectl_protobuf(
        &c,
        &[
            "create",
            "clusterrole",
            "metrics-reader",
            "--verb=get",
            "--non-resource-url=/metrics/*",
        ],
    );
    assert!(
        out.contains("clusterrole.rbac.authorization.k8s.io/metrics-reader created"),
        "{out}"
    );
    assert_eq!(
        jsonpath(
            &c,
            &["clusterrole", "metrics-reader"],
            ".rules[0].nonResourceURLs[0]"
        ),
        "/metrics/*"
    );

    let out = kubectl_protobuf(
        &c,
        &[
            "create",
            "rolebinding",
            "rb",
            "--role=pod-reader",
            "--user=jane",
            "-n",
            "pb",
        ],
    );
    assert!(
        out.contains("rolebinding.rbac.authorization.k8s.io/rb created"),
        "{out}"
    );
    assert_eq!(
        jsonpath(&c, &["rolebinding", "rb", "-n", "pb"], ".subjects[0].name"),
        "jane"
    );

    let out = kubectl_protobuf(
        &c,
        &[
            "create",
            "clusterrolebinding",
            "crb",
            "--clusterrole=metrics-reader",
            "--group=devs",
        ],
    );
    assert!(
        out.contains("clusterrolebinding.rbac.authorization.k8s.io/crb created"),
        "{out}"
    );
    assert_eq!(
        jsonpath(&c, &["clusterrolebinding", "crb"], ".roleRef.name"),
        "metrics-reader"
    );
}

fn hollow(name: &str) -> skiff::config::NodeConfig {
    skiff::config::NodeConfig {
        name: name.into(),
        runtime: "sim".into(),
        heartbeat_seconds: 1,
        ..Default::default()
    }
}

async fn get(c: &TestCluster, path: &str) -> (u16, Value) {
    call(client().get(c.url(path))).await
}

/// The pods bound to `node`.
async fn pods_on(c: &TestCluster, node: &str) -> Vec<Value> {
    let (_, list) = get(
        c,
        &format!("/api/v1/namespaces/default/pods?fieldSelector=spec.nodeName%3D{node}"),
    )
    .await;
    list["items"].as_array().cloned().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_drain_evicts_the_pods_of_a_hollow_node() {
    skiff_integration::require_kubectl();
    let c = TestCluster::start_with(|cfg| {
        cfg.nodes = vec![hollow("hollow-a"), hollow("hollow-b")];
    });
    for node in ["hollow-a", "hollow-b"] {
        eventually(WAIT, "the node Ready", || async {
            let (_, n) = get(&c, &format!("/api/v1/nodes/{node}")).await;
            let ready = n["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Ready" && c["status"] == "True");
            ready.then_some(())
        })
        .await;
    }
    let rc = json!({
        "apiVersion": "v1", "kind": "ReplicationController",
        "metadata": {"name": "web"},
        "spec": {"replicas": 4, "selector": {"app": "web"}, "template": {
            "metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "app", "image": "skiff/busybox:latest"}]}}},
    });
    let (code, body) = call(
        client()
            .post(c.url("/api/v1/namespaces/default/replicationcontrollers"))
            .json(&rc),
    )
    .await;
    assert_eq!(code, 201, "{body}");
    // A pod no controller owns: drain needs --force for it.
    let mut lonely = skiff_integration::pod("lonely", json!({}));
    lonely["spec"]["nodeName"] = json!("hollow-a");
    let (code, body) = call(
        client()
            .post(c.url("/api/v1/namespaces/default/pods"))
            .json(&lonely),
    )
    .await;
    assert_eq!(code, 201, "{body}");
    eventually(WAIT, "the pods Running, some on hollow-a", || async {
        let on_a = pods_on(&c, "hollow-a").await;
        let on_b = pods_on(&c, "hollow-b").await;
        let running = on_a
            .iter()
            .chain(&on_b)
            .filter(|p| p["status"]["phase"] == "Running")
            .count();
        (running == 5 && on_a.len() >= 2).then_some(())
    })
    .await;

    let kubeconfig = c.kubeconfig.clone();
    let (code, out, err) = tokio::task::spawn_blocking(move || {
        skiff_integration::kubectl(
            &kubeconfig,
            &[
                "drain",
                "hollow-a",
                "--force",
                "--ignore-daemonsets",
                "--timeout=90s",
                "-v=8",
            ],
        )
    })
    .await
    .expect("kubectl ran");
    assert_eq!(code, 0, "drain failed:\n{err}\n{out}");
    let said = format!("{out}\n{err}");
    assert!(said.contains("node/hollow-a drained"), "{out}");
    assert!(said.contains("evicting pod default/lonely"), "{out}");
    assert!(
        said.contains("/api/v1/namespaces/default/pods/lonely/eviction"),
        "the Eviction was not posted: {out}"
    );
    // Drain reads the node and waits for the pods through typed clients, in protobuf
    // (the kubectl here, 1.33, posts its Evictions in JSON; the protobuf Eviction is
    // posted below, in `an_eviction_posted_in_protobuf_deletes_its_pod`).
    assert!(
        said.contains(&format!("Accept: {PROTOBUF}")),
        "no protobuf asked for"
    );
    assert!(
        said.contains(&format!("Content-Type: {PROTOBUF}")),
        "no protobuf answered"
    );

    let (_, node) = get(&c, "/api/v1/nodes/hollow-a").await;
    assert_eq!(node["spec"]["unschedulable"], true, "{node}");
    assert!(
        pods_on(&c, "hollow-a").await.is_empty(),
        "drain waited for the pods to go"
    );
    let (code, _) = get(&c, "/api/v1/namespaces/default/pods/lonely").await;
    assert_eq!(code, 404);
    // The controller's replacements all land on the node left.
    eventually(WAIT, "four web pods Running on hollow-b", || async {
        let on_b = pods_on(&c, "hollow-b").await;
        let running = on_b
            .iter()
            .filter(|p| p["status"]["phase"] == "Running")
            .count();
        (running == 4).then_some(())
    })
    .await;
}

async fn send_protobuf(
    c: &TestCluster,
    method: reqwest::Method,
    path: &str,
    body: Vec<u8>,
) -> (u16, String, Vec<u8>) {
    let resp = client()
        .request(method, c.url(path))
        .header("Content-Type", PROTOBUF)
        .header("Accept", format!("{PROTOBUF}, */*"))
        .body(body)
        .send()
        .await
        .expect("request");
    let code = resp.status().as_u16();
    let ct = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    (code, ct, resp.bytes().await.expect("body").to_vec())
}

async fn get_protobuf(c: &TestCluster, path: &str) -> (u16, String, Value) {
    let resp = client()
        .get(c.url(path))
        .header("Accept", format!("{PROTOBUF}, */*"))
        .send()
        .await
        .expect("request");
    let code = resp.status().as_u16();
    let ct = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let bytes = resp.bytes().await.expect("body");
    let obj = protobuf::decode(&bytes).expect("a protobuf body");
    (code, ct, obj)
}

#[tokio::test]
async fn objects_lists_and_errors_come_back_in_protobuf_when_asked_for() {
    let c = TestCluster::api_only();
    let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "wire", "labels": {"team": "a"}}});
    let body = protobuf::encode(&ns).expect("encodes");
    let (code, ct, answer) =
        send_protobuf(&c, reqwest::Method::POST, "/api/v1/namespaces", body).await;
    assert_eq!((code, ct.as_str()), (201, PROTOBUF));
    let created = protobuf::decode(&answer).expect("decodes");
    assert_eq!(created["metadata"]["labels"]["team"], "a");
    assert!(created["metadata"]["uid"]
        .as_str()
        .is_some_and(|u| !u.is_empty()));

    let (code, ct, got) = get_protobuf(&c, "/api/v1/namespaces/wire").await;
    assert_eq!((code, ct.as_str()), (200, PROTOBUF));
    assert_eq!(got["kind"], "Namespace");
    assert_eq!(
        got["metadata"]["creationTimestamp"],
        created["metadata"]["creationTimestamp"]
    );
    assert_eq!(got["status"]["phase"], "Active");

    let (code, _, list) = get_protobuf(&c, "/api/v1/namespaces").await;
    assert_eq!(code, 200);
    assert_eq!(list["kind"], "NamespaceList");
    assert!(list["metadata"]["resourceVersion"].as_str().is_some());
    let names: Vec<&str> = list["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|i| i["metadata"]["name"].as_str())
        .collect();
    assert!(
        names.contains(&"wire") && names.contains(&"default"),
        "{names:?}"
    );

    let (code, ct, status) = get_protobuf(&c, "/api/v1/namespaces/nope").await;
    assert_eq!((code, ct.as_str()), (404, PROTOBUF));
    assert_eq!(status["kind"], "Status");
    assert_eq!(status["reason"], "NotFound");
    assert_eq!(status["code"], 404);

    // Tables stay JSON whatever else the client accepts.
    let resp = client()
        .get(c.url("/api/v1/namespaces"))
        .header(
            "Accept",
            format!("application/json;as=Table;v=v1;g=meta.k8s.io, {PROTOBUF}"),
        )
        .send()
        .await
        .expect("request");
    let table: Value = resp.json().await.expect("JSON");
    assert_eq!(table["kind"], "Table");
}

#[tokio::test]
async fn bad_protobuf_bodies_get_400_in_kube_apiservers_words() {
    let c = TestCluster::api_only();
    let post = |body: Vec<u8>| send_protobuf(&c, reqwest::Method::POST, "/api/v1/namespaces", body);
    let message = |bytes: &[u8]| -> String {
        let status = protobuf::decode(bytes).expect("a protobuf Status");
        assert_eq!(status["reason"], "BadRequest", "{status}");
        status["message"].as_str().unwrap_or("").to_string()
    };

    let (code, _, answer) = post(br#"{"kind":"Namespace"}"#.to_vec()).await;
    assert_eq!(code, 400);
    assert_eq!(
        message(&answer),
        r#"the object provided is unrecognized (must be of type Namespace): provided data does not appear to be a protobuf message, expected prefix [107 56 115 0] ({"kind":"Namespace"})"#
    );

    let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "cut"}});
    let whole = protobuf::encode(&ns).expect("encodes");
    let (code, _, answer) = post(whole[..7].to_vec()).await;
    assert_eq!(code, 400);
    let text = message(&answer);
    assert!(
        text.starts_with("the object provided is unrecognized (must be of type Namespace): unexpected EOF (6b387300"),
        "{text}"
    );

    let env = protobuf::envelope(&whole).expect("envelope");
    let cut_raw = protobuf::wrap("v1", "Namespace", &env.raw[..env.raw.len() - 2]);
    let (code, _, answer) = post(cut_raw).await;
    assert_eq!(code, 400);
    assert_eq!(
        message(&answer),
        r#"Namespace in version "v1" cannot be handled as a Namespace: unexpected EOF"#
    );

    let pod = protobuf::encode(&skiff_integration::pod("p", json!({}))).expect("encodes");
    let (code, _, answer) = post(pod).await;
    assert_eq!(code, 400);
    let text = message(&answer);
    assert!(
        text.starts_with(r#"Pod in version "v1" cannot be handled as a Namespace: "#),
        "{text}"
    );

    let (code, _, answer) = post(protobuf::wrap("v1", "Frobnicator", b"")).await;
    assert_eq!(code, 400);
    assert!(message(&answer).contains(r#"no kind "Frobnicator" is registered"#));

    let (code, _, answer) = post(b"k8s\0".to_vec()).await;
    assert_eq!(code, 400);
    assert_eq!(
        message(&answer),
        "the object provided is unrecognized (must be of type Namespace): empty body (6b387300)"
    );
    // An envelope without apiVersion and kind is of the path's type, as in Kubernetes.
    let typed = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "untyped"}});
    let typed = protobuf::encode(&typed).expect("encodes");
    let raw = protobuf::envelope(&typed).expect("envelope").raw.to_vec();
    let (code, _, answer) = post(protobuf::wrap("", "", &raw)).await;
    assert_eq!(code, 201, "{:?}", protobuf::decode(&answer));

    // Nothing of that was created, and the server is well.
    let (code, _) = call(client().get(c.url("/api/v1/namespaces/cut"))).await;
    assert_eq!(code, 404);
}

#[tokio::test]
async fn a_protobuf_watch_streams_length_prefixed_watch_events() {
    let c = TestCluster::api_only();
    let (_, list) = call(client().get(c.url("/api/v1/namespaces"))).await;
    let rv = list["metadata"]["resourceVersion"]
        .as_str()
        .expect("rv")
        .to_string();
    let mut resp = client()
        .get(c.url(&format!("/api/v1/namespaces?watch=1&resourceVersion={rv}")))
        .header("Accept", format!("{PROTOBUF}, */*"))
        .send()
        .await
        .expect("watch");
    assert_eq!(
        resp.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/vnd.kubernetes.protobuf;stream=watch")
    );
    let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "watched"}});
    let (code, body) = call(client().post(c.url("/api/v1/namespaces")).json(&ns)).await;
    assert_eq!(code, 201, "{body}");

    let deadline = Instant::now() + WAIT;
    let mut buf = Vec::new();
    let (kind, obj) = loop {
        if let Some((kind, obj, used)) = protobuf::read_watch_frame(&buf).expect("a valid frame") {
            buf.drain(..used);
            if obj["metadata"]["name"] == "watched" {
                break (kind, obj);
            }
            continue;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let chunk = tokio::time::timeout(left, resp.chunk())
            .await
            .expect("an event before the deadline")
            .expect("the stream")
            .expect("the stream still open");
        buf.extend_from_slice(&chunk);
    };
    assert_eq!(kind, "ADDED");
    assert_eq!(obj["kind"], "Namespace");
    assert!(obj["metadata"]["resourceVersion"].as_str().is_some());
}

#[tokio::test]
async fn an_eviction_posted_in_protobuf_deletes_its_pod() {
    let c = TestCluster::api_only();
    let pods = "/api/v1/namespaces/default/pods";
    let (code, body) = call(
        client()
            .post(c.url(pods))
            .json(&skiff_integration::pod("victim", json!({}))),
    )
    .await;
    assert_eq!(code, 201, "{body}");
    let eviction = json!({
        "apiVersion": "policy/v1", "kind": "Eviction",
        "metadata": {"name": "victim", "namespace": "default"},
        "deleteOptions": {"gracePeriodSeconds": 0},
    });
    let path = format!("{pods}/victim/eviction");
    // Another pod's name in the body is refused.
    let mut other = eviction.clone();
    other["metadata"]["name"] = json!("someone-else");
    let body = protobuf::encode(&other).expect("encodes");
    let (code, _, _) = send_protobuf(&c, reqwest::Method::POST, &path, body).await;
    assert_eq!(code, 400);

    let body = protobuf::encode(&eviction).expect("encodes");
    let (code, ct, answer) = send_protobuf(&c, reqwest::Method::POST, &path, body).await;
    assert_eq!((code, ct.as_str()), (201, PROTOBUF));
    let status = protobuf::decode(&answer).expect("a Status");
    assert_eq!(status["status"], "Success");
    eventually(WAIT, "the pod gone", || async {
        let (code, _) = call(client().get(c.url(&format!("{pods}/victim")))).await;
        (code == 404).then_some(())
    })
    .await;
    // Evicting what is not there is 404; an eviction is never read.
    let body = protobuf::encode(&eviction).expect("encodes");
    let (code, _, _) = send_protobuf(&c, reqwest::Method::POST, &path, body).await;
    assert_eq!(code, 404);
    let (code, _) = call(client().get(c.url(&path))).await;
    assert_eq!(code, 405);
}
