//! Authorization against a real cluster: the built-in roles, RBAC objects' validation,
//! SelfSubjectAccessReview and `kubectl auth can-i`, and the authorizer chain deciding
//! over roles and bindings as they are written through the API.

use std::time::Duration;

use serde_json::{json, Value};
use skiff_actors::gateway::auth::{Attributes, Authorization, Decision, UserInfo};
use skiff_actors::gateway::routing;
use skiff_integration::{call, client, eventually, TestCluster};

const RBAC: &str = "/apis/rbac.authorization.k8s.io/v1";
const SSAR: &str = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews";

fn api_only() -> TestCluster {
    TestCluster::api_only()
}

fn kubectl(c: &TestCluster, args: &[&str]) -> (i32, String, String) {
    skiff_integration::kubectl(&c.kubeconfig, args)
}

#[tokio::test]
async fn the_builtin_roles_and_bindings_exist_from_the_first_start() {
    let c = api_only();
    for role in [
        "cluster-admin",
        "admin",
        "edit",
        "view",
        "system:discovery",
        "system:basic-user",
        "system:public-info-viewer",
        "system:node-bootstrapper",
        "system:node",
    ] {
        let (code, body) = call(client().get(c.url(&format!("{RBAC}/clusterroles/{role}")))).await;
        assert_eq!(code, 200, "{role}: {body}");
    }
    let (code, admin) =
        call(client().get(c.url(&format!("{RBAC}/clusterrolebindings/cluster-admin")))).await;
    assert_eq!(code, 200);
    assert_eq!(admin["roleRef"]["name"], "cluster-admin");
    assert_eq!(admin["subjects"][0]["name"], "system:masters");
    let (_, view) = call(client().get(c.url(&format!("{RBAC}/clusterroles/view")))).await;
    let rules = view["rules"].as_array().expect("rules");
    assert!(rules
        .iter()
        .all(|r| r["verbs"] == json!(["get", "list", "watch"])));
}

#[tokio::test]
async fn customised_builtin_roles_are_kept_only_when_autoupdate_is_off() {
    let c = api_only();
    let patch = |name: &str, body: Value| {
        client()
            .patch(c.url(&format!("{RBAC}/clusterroles/{name}")))
            .header("content-type", "application/merge-patch+json")
            .body(body.to_string())
    };
    let one_rule = json!({"rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]});
    let (code, _) = call(patch("view", one_rule.clone())).await;
    assert_eq!(code, 200);
    let mut kept = one_rule.clone();
    kept["metadata"] =
        json!({"annotations": {"rbac.authorization.kubernetes.io/autoupdate": "false"}});
    let (code, _) = call(patch("edit", kept)).await;
    assert_eq!(code, 200);
    let c = c.restart();
    let rules = |name: &str| {
        let url = c.url(&format!("{RBAC}/clusterroles/{name}"));
        async move { call(client().get(url)).await.1["rules"].clone() }
    };
    assert!(
        rules("view").await.as_array().is_some_and(|r| r.len() > 1),
        "view restored"
    );
    assert_eq!(
        rules("edit").await,
        one_rule["rules"],
        "edit left as customised"
    );
}

#[tokio::test]
async fn invalid_rbac_objects_are_refused_with_422() {
    let c = api_only();
    let role = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": "no-verbs"},
        "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": []}]});
    let (code, status) = call(
        client()
            .post(c.url(&format!("{RBAC}/namespaces/default/roles")))
            .json(&role),
    )
    .await;
    assert_eq!(code, 422, "{status}");
    assert_eq!(status["details"]["group"], "rbac.authorization.k8s.io");
    assert_eq!(
        status["details"]["causes"][0]["message"],
        "Required value: verbs must contain at least one value"
    );

    let binding = |kind: &str, role: &str| {
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": kind,
            "metadata": {"name": "b"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role, "name": "view"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "jane"}]})
    };
    let (code, status) = call(
        client()
            .post(c.url(&format!("{RBAC}/clusterrolebindings")))
            .json(&binding("ClusterRoleBinding", "Role")),
    )
    .await;
    assert_eq!(code, 422, "{status}");

    let url = c.url(&format!("{RBAC}/namespaces/default/rolebindings"));
    let (code, _) = call(
        client()
            .post(&url)
            .json(&binding("RoleBinding", "ClusterRole")),
    )
    .await;
    assert_eq!(code, 201);
    let (code, status) = call(
        client()
            .patch(format!("{url}/b"))
            .header("content-type", "application/merge-patch+json")
            .body(json!({"roleRef": {"name": "edit"}}).to_string()),
    )
    .await;
    assert_eq!(code, 422, "{status}");
    assert!(status["message"]
        .as_str()
        .is_some_and(|m| m.contains("cannot change roleRef")));
}

#[tokio::test]
async fn self_subject_access_review_answers_for_the_requesting_user() {
    let c = api_only();
    let review = json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
        "spec": {"resourceAttributes": {"namespace": "default", "verb": "create", "resource": "pods"}}});
    let (code, body) = call(client().post(c.url(SSAR)).json(&review)).await;
    assert_eq!(code, 201, "{body}");
    assert_eq!(body["kind"], "SelfSubjectAccessReview");
    // The insecure path is the administrator.
    assert_eq!(body["status"]["allowed"], true);
    // Reviews are answered, never stored.
    let (code, _) = call(client().get(c.url(SSAR))).await;
    assert_eq!(code, 405);
    let (code, _) = call(client().post(c.url(SSAR)).json(&json!({"spec": {}}))).await;
    assert_eq!(code, 422);
    let (_, discovery) = call(client().get(c.url("/apis/authorization.k8s.io/v1"))).await;
    let entry = discovery["resources"]
        .as_array()
        .and_then(|r| r.iter().find(|e| e["name"] == "selfsubjectaccessreviews"))
        .cloned()
        .expect("listed");
    assert_eq!(entry["verbs"], json!(["create"]));
}

#[test]
fn kubectl_auth_can_i_asks_the_server() {
    skiff_integration::require_kubectl();
    let c = api_only();
    let (code, out, err) = kubectl(&c, &["auth", "can-i", "create", "pods"]);
    assert_eq!((code, out.trim()), (0, "yes"), "{err}");
    let (code, out, err) = kubectl(&c, &["auth", "can-i", "get", "/healthz"]);
    assert_eq!((code, out.trim()), (0, "yes"), "{err}");
    let (code, out, err) = kubectl(
        &c,
        &[
            "auth",
            "can-i",
            "delete",
            "clusterroles.rbac.authorization.k8s.io",
        ],
    );
    assert_eq!((code, out.trim()), (0, "yes"), "{err}");
}

fn user(name: &str, groups: &[&str]) -> UserInfo {
    UserInfo {
        name: name.into(),
        uid: String::new(),
        groups: groups.iter().map(|g| g.to_string()).collect(),
    }
}

fn decide(authz: &Authorization, u: &UserInfo, verb: &str, group: &str, path: &str) -> Decision {
    let version = "v1";
    let t = routing::parse_in(group, version, path).expect("route");
    authz.decide(&Attributes::for_resource(u, verb, &t))
}

#[tokio::test]
async fn bindings_written_through_the_api_take_effect_at_once_and_are_undone_by_deletes() {
    let c = api_only();
    let authz = Authorization::node_and_rbac(c.store.clone());
    let jane = user("jane", &["system:authenticated"]);
    assert_eq!(
        decide(&authz, &jane, "list", "", "namespaces/dev/pods"),
        Decision::NoOpinion
    );
    let binding = skiff_integration::user_role_binding("jane-views", "view", "jane");
    let (code, _) = call(
        client()
            .post(c.url("/api/v1/namespaces"))
            .json(&json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "dev"}})),
    )
    .await;
    assert_eq!(code, 201);
    let url = c.url(&format!("{RBAC}/namespaces/dev/rolebindings"));
    let (code, body) = call(client().post(&url).json(&binding)).await;
    assert_eq!(code, 201, "{body}");
    assert_eq!(
        decide(&authz, &jane, "list", "", "namespaces/dev/pods"),
        Decision::Allow
    );
    assert_eq!(
        decide(&authz, &jane, "create", "", "namespaces/dev/pods"),
        Decision::NoOpinion
    );
    assert_eq!(
        decide(&authz, &jane, "list", "", "namespaces/default/pods"),
        Decision::NoOpinion
    );
    let (code, _) = call(client().delete(format!("{url}/jane-views"))).await;
    assert_eq!(code, 200);
    eventually(
        Duration::from_secs(5),
        "the binding to stop applying",
        || async {
            (decide(&authz, &jane, "list", "", "namespaces/dev/pods") == Decision::NoOpinion)
                .then_some(())
        },
    )
    .await;
}

// ---------------------------------------------------------------------------
// With real credentials: a secure cluster, users by client certificate.
// ---------------------------------------------------------------------------

use skiff_integration::tls_client;

#[tokio::test]
async fn a_view_user_can_list_but_gets_403_creating() {
    let c = TestCluster::start_secure();
    let admin = c.admin_client();
    let (code, body) = call(
        admin
            .post(c.url(&format!("{RBAC}/namespaces/default/rolebindings")))
            .json(&skiff_integration::user_role_binding(
                "viewer-views",
                "view",
                "viewer",
            )),
    )
    .await;
    assert_eq!(code, 201, "{body}");
    let viewer = tls_client(&c.ca_pem(), None, Some(&c.client_cert("viewer", &[])));
    let pods = "/api/v1/namespaces/default/pods";
    let (code, body) = call(viewer.get(c.url(pods))).await;
    assert_eq!(code, 200, "{body}");
    let (code, status) = call(
        viewer
            .post(c.url(pods))
            .json(&skiff_integration::pod("p", json!({}))),
    )
    .await;
    assert_eq!(code, 403, "{status}");
    assert_eq!(status["reason"], "Forbidden");
    assert_eq!(
        status["message"],
        "pods is forbidden: User \"viewer\" cannot create resource \"pods\" in API group \"\" in the namespace \"default\""
    );
    // The binding is for one namespace only.
    let (code, _) = call(viewer.get(c.url("/api/v1/namespaces/kube-system/pods"))).await;
    assert_eq!(code, 403);
    // Discovery is open to every authenticated user; metrics are not.
    for path in ["/api", "/api/v1", "/apis", "/version", "/healthz"] {
        let (code, body) = call(viewer.get(c.url(path))).await;
        assert_eq!(code, 200, "{path}: {body}");
    }
    let (code, status) = call(viewer.get(c.url("/metrics"))).await;
    assert_eq!(code, 403);
    assert_eq!(
        status["message"],
        "forbidden: User \"viewer\" cannot get path \"/metrics\""
    );
}

#[test]
fn kubectl_auth_can_i_answers_for_the_user_it_runs_as() {
    skiff_integration::require_kubectl();
    let c = TestCluster::start_secure();
    let dir = tempfile::tempdir().expect("tempdir");
    let admin = kubectl(
        &c,
        &[
            "create",
            "rolebinding",
            "viewer-views",
            "--clusterrole=view",
            "--user=viewer",
        ],
    );
    assert_eq!(admin.0, 0, "{}", admin.2);
    let viewer = skiff_integration::kubeconfig_for(&c, dir.path(), &c.client_cert("viewer", &[]));
    let (code, out, err) = skiff_integration::kubectl(&viewer, &["auth", "can-i", "list", "pods"]);
    assert_eq!((code, out.trim()), (0, "yes"), "{err}");
    let (code, out, _) = skiff_integration::kubectl(&viewer, &["auth", "can-i", "create", "pods"]);
    assert_eq!((code, out.trim()), (1, "no"));
    let (code, out, _) = skiff_integration::kubectl(
        &viewer,
        &["auth", "can-i", "list", "pods", "-n", "kube-system"],
    );
    assert_eq!((code, out.trim()), (1, "no"));
    let (code, _, err) = skiff_integration::kubectl(&viewer, &["get", "pods"]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) =
        skiff_integration::kubectl(&viewer, &["run", "p", "--image=busybox", "--restart=Never"]);
    assert_ne!(code, 0);
    assert!(
        err.contains("Error from server (Forbidden): pods is forbidden: User \"viewer\" cannot create resource \"pods\""),
        "{err}"
    );
}

fn node_pod(name: &str, node: &str) -> Value {
    let mut p = skiff_integration::pod(name, json!({}));
    p["spec"]["nodeName"] = json!(node);
    p
}

#[tokio::test]
async fn a_node_credential_writes_only_its_own_node_and_pods() {
    let c = TestCluster::start_secure();
    let admin = c.admin_client();
    let n1 = tls_client(
        &c.ca_pem(),
        None,
        Some(&c.client_cert("system:node:n1", &["system:nodes"])),
    );
    let node = |name: &str| json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}});
    // A node registers itself, and only itself.
    let (code, body) = call(n1.post(c.url("/api/v1/nodes")).json(&node("n1"))).await;
    assert_eq!(code, 201, "{body}");
    let (code, status) = call(n1.post(c.url("/api/v1/nodes")).json(&node("n2"))).await;
    assert_eq!(code, 403, "{status}");
    let (code, _) = call(admin.post(c.url("/api/v1/nodes")).json(&node("n2"))).await;
    assert_eq!(code, 201);
    let pods = "/api/v1/namespaces/default/pods";
    for (pod, on) in [("mine", "n1"), ("theirs", "n2")] {
        let (code, body) = call(admin.post(c.url(pods)).json(&node_pod(pod, on))).await;
        assert_eq!(code, 201, "{body}");
    }
    let patch = |client: &reqwest::Client, path: &str, body: Value| {
        client
            .patch(c.url(path))
            .header("content-type", "application/merge-patch+json")
            .body(body.to_string())
    };
    let ready = json!({"status": {"conditions": [{"type": "Ready", "status": "True"}]}});
    let (code, body) = call(patch(&n1, "/api/v1/nodes/n1/status", ready.clone())).await;
    assert_eq!(code, 200, "{body}");
    let (code, status) = call(patch(&n1, "/api/v1/nodes/n2/status", ready)).await;
    assert_eq!(code, 403, "{status}");
    assert_eq!(
        status["message"],
        "nodes \"n2\" is forbidden: User \"system:node:n1\" cannot patch resource \"nodes/status\" in API group \"\" at the cluster scope: node \"n1\" is not allowed to modify node \"n2\""
    );
    let running = json!({"status": {"phase": "Running"}});
    let (code, body) = call(patch(&n1, &format!("{pods}/mine/status"), running.clone())).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["status"]["phase"], "Running");
    let (code, status) = call(patch(&n1, &format!("{pods}/theirs/status"), running)).await;
    assert_eq!(code, 403, "{status}");
    assert!(status["message"].as_str().is_some_and(|m| m.ends_with(
        "node \"n1\" can only update pod status for pods with spec.nodeName set to itself"
    )));
    let (code, _) = call(n1.delete(c.url(&format!("{pods}/theirs")))).await;
    assert_eq!(code, 403);
    // It reads what its pods and its proxy need, and nothing of RBAC.
    for path in [
        pods,
        "/api/v1/services",
        "/api/v1/endpoints",
        "/api/v1/nodes",
    ] {
        let (code, body) = call(n1.get(c.url(path))).await;
        assert_eq!(code, 200, "{path}: {body}");
    }
    let (code, _) = call(n1.get(c.url(&format!("{RBAC}/clusterroles")))).await;
    assert_eq!(code, 403);
    let (code, _) = call(n1.post(c.url(pods)).json(&node_pod("sneaky", "n1"))).await;
    assert_eq!(code, 403);
    let (code, _) = call(n1.delete(c.url(&format!("{pods}/mine")))).await;
    assert_eq!(code, 200);
}

/// Run a node agent (kubelet and proxy on the simulated runtime) on its own actix system,
/// as `skiff node` does, until the returned sender is dropped.
fn run_node_agent(
    name: &str,
    client: std::sync::Arc<dyn skiff_actors::client::ApiClient>,
) -> (
    tokio::sync::oneshot::Sender<()>,
    std::thread::JoinHandle<()>,
) {
    let node = skiff::config::NodeConfig {
        name: name.to_string(),
        runtime: "sim".into(),
        heartbeat_seconds: 1,
        address: Some("127.0.0.1".into()),
        server_port: 0,
        ..skiff::config::NodeConfig::default()
    };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        actix_rt::System::new().block_on(async move {
            let agent = skiff::system::start_node_agent(&node, client, Default::default(), None)
                .await
                .expect("node agent");
            let _ = stop_rx.await;
            agent.stop();
        });
    });
    (stop_tx, thread)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_joining_over_the_network_runs_its_pods_with_only_its_node_rights() {
    use skiff_actors::client::{Credentials, HttpClient};
    let c = TestCluster::start_secure_with(|cfg| {
        cfg.scheduler.enabled = true;
        cfg.controllers.enabled = vec!["*".into()];
    });
    // The node joins as a bootstrapper (the join token): it may only ask for a node
    // certificate (system:node-bootstrapper), which the cluster signs.
    let ca = c.ca_pem();
    let cred = skiff_actors::client::bootstrap::request_node_credential(
        &c.url,
        &ca,
        &c.join_token(),
        "remote-1",
        Duration::from_secs(30),
    )
    .await
    .expect("the join token buys a node credential");
    let identity = format!("{}{}", cred.cert_pem, cred.key_pem).into_bytes();
    let creds = Credentials {
        ca_pem: Some(ca.as_bytes().to_vec()),
        identity_pem: Some(identity.clone()),
        token: None,
    };
    let client = std::sync::Arc::new(HttpClient::with_credentials(&c.url, &creds).expect("client"));
    let (stop, thread) = run_node_agent("remote-1", client);

    let admin = c.admin_client();
    let node_ready = |body: &Value| {
        body["status"]["conditions"].as_array().is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
    };
    eventually(
        Duration::from_secs(30),
        "the node to register Ready",
        || async {
            let (code, body) = call(admin.get(c.url("/api/v1/nodes/remote-1"))).await;
            (code == 200 && node_ready(&body)).then_some(())
        },
    )
    .await;
    let pods = "/api/v1/namespaces/default/pods";
    let (code, body) = call(
        admin
            .post(c.url(pods))
            .json(&skiff_integration::pod("web", json!({}))),
    )
    .await;
    assert_eq!(code, 201, "{body}");
    let running = eventually(
        Duration::from_secs(30),
        "the pod to run on the node",
        || async {
            let (_, p) = call(admin.get(c.url(&format!("{pods}/web")))).await;
            (p["status"]["phase"] == "Running").then_some(p)
        },
    )
    .await;
    assert_eq!(running["spec"]["nodeName"], "remote-1");
    assert!(running["status"]["podIP"].is_string(), "{running}");

    // Graceful deletion finishes with the node's own delete.
    let (code, _) = call(admin.delete(c.url(&format!("{pods}/web")))).await;
    assert_eq!(code, 200);
    eventually(
        Duration::from_secs(30),
        "the node to finish deleting its pod",
        || async {
            let (code, _) = call(admin.get(c.url(&format!("{pods}/web")))).await;
            (code == 404).then_some(())
        },
    )
    .await;

    // Nothing the kubelet, its pod workers or its proxy asked for was refused.
    let (_, metrics) = call(admin.get(c.url("/metrics"))).await;
    let refused: Vec<&str> = metrics
        .as_str()
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("code=\"403\""))
        .collect();
    assert!(refused.is_empty(), "{refused:?}");

    // The same credential cannot touch another node.
    let (code, _) = call(
        admin
            .post(c.url("/api/v1/nodes"))
            .json(&json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "other"}})),
    )
    .await;
    assert_eq!(code, 201);
    let as_node = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca.as_bytes()).expect("ca"))
        .identity(reqwest::Identity::from_pem(&identity).expect("identity"))
        .build()
        .expect("client");
    let (code, status) = call(
        as_node
            .patch(c.url("/api/v1/nodes/other/status"))
            .header("content-type", "application/merge-patch+json")
            .body(json!({"status": {"conditions": []}}).to_string()),
    )
    .await;
    assert_eq!(code, 403, "{status}");
    let (_, metrics) = call(admin.get(c.url("/metrics"))).await;
    assert!(
        metrics
            .as_str()
            .unwrap_or_default()
            .lines()
            .any(|l| l.contains("code=\"403\"") && l.contains("resource=\"nodes/status\"")),
        "refusals are counted, so none above means none happened"
    );
    drop(stop);
    let _ = thread.join();
}

#[tokio::test]
async fn nobody_grants_permissions_they_do_not_hold() {
    let c = TestCluster::start_secure();
    let admin = c.admin_client();
    // jane administers namespace default: she may write roles and bindings there.
    let (code, body) = call(
        admin
            .post(c.url(&format!("{RBAC}/namespaces/default/rolebindings")))
            .json(&skiff_integration::user_role_binding(
                "jane-admin",
                "admin",
                "jane",
            )),
    )
    .await;
    assert_eq!(code, 201, "{body}");
    let jane = tls_client(&c.ca_pem(), None, Some(&c.client_cert("jane", &[])));
    let bindings = c.url(&format!("{RBAC}/namespaces/default/rolebindings"));
    // Granting what she holds is fine.
    let (code, body) = call(
        jane.post(&bindings)
            .json(&skiff_integration::user_role_binding(
                "bob-edits",
                "edit",
                "bob",
            )),
    )
    .await;
    assert_eq!(code, 201, "{body}");
    // Binding herself cluster-admin, even in her namespace, is not.
    let (code, status) = call(
        jane.post(&bindings)
            .json(&skiff_integration::user_role_binding(
                "jane-root",
                "cluster-admin",
                "jane",
            )),
    )
    .await;
    assert_eq!(code, 403, "{status}");
    assert!(status["message"].as_str().is_some_and(|m| m.starts_with(
        "rolebindings.rbac.authorization.k8s.io \"jane-root\" is forbidden: user \"jane\" (groups=[\"system:authenticated\"]) is attempting to grant RBAC permissions not currently held:\n{APIGroups:[\"*\"], Resources:[\"*\"], Verbs:[\"*\"]}"
    )), "{status}");
    // Nor a Role with more than she has.
    let role = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": "quota-writer"},
        "rules": [{"apiGroups": [""], "resources": ["resourcequotas"], "verbs": ["create"]}]});
    let (code, status) = call(
        jane.post(c.url(&format!("{RBAC}/namespaces/default/roles")))
            .json(&role),
    )
    .await;
    assert_eq!(code, 403, "{status}");
    // The administrator may.
    let (code, body) = call(
        admin
            .post(c.url(&format!("{RBAC}/namespaces/default/roles")))
            .json(&role),
    )
    .await;
    assert_eq!(code, 201, "{body}");
}
