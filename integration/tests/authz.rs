//! Authorization against a real cluster: the built-in roles, RBAC objects' validation,
//! SelfSubjectAccessReview and `kubectl auth can-i`, and the authorizer chain deciding
//! over roles and bindings as they are written through the API.

use std::process::Command;
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
    let out = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&c.kubeconfig)
        .args(args)
        .output()
        .expect("run kubectl");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

fn kubectl_available() -> bool {
    Command::new("kubectl")
        .args(["version", "--client"])
        .output()
        .is_ok_and(|o| o.status.success())
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
        "rules[0].verbs: Required value: verbs must contain at least one value"
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
    if !kubectl_available() {
        eprintln!("SKIPPED: no kubectl installed on this machine");
        return;
    }
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
    let binding = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "jane-views"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "jane"}]});
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
