//! The kind registry as users meet it: a kind declared once (a built-in one, and one
//! registered while the server runs) is routed, discovered in both formats, printed in
//! Tables, authorized by its RBAC name, patched with its merge keys, explained from
//! OpenAPI and cleaned up with its namespace.

use std::time::Duration;

use serde_json::{json, Value};
use skiff_actors::api::resources::{registry, ResourceInfo, Storage};
use skiff_actors::api::strategy::Generic;
use skiff_integration::{
    call, client, eventually, kubeconfig_for, kubectl, tls_client, user_role_binding, TestCluster,
};

const TABLE: &str = "application/json;as=Table;v=v1;g=meta.k8s.io";
const AGGREGATED: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

/// A kind no built-in declares, added at runtime as a CustomResourceDefinition will be.
static WIDGETS: ResourceInfo = ResourceInfo {
    group: "example.com",
    version: "v1",
    name: "widgets",
    singular: "widget",
    kind: "Widget",
    namespaced: true,
    short_names: &["wd"],
    subresources: &[],
    has_status_subresource: false,
    field_selectors: &[],
    categories: &["all"],
    schema: None,
    strategy: &Generic,
    storage: Storage::Stored,
};

fn widget(name: &str) -> Value {
    json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": name},
        "spec": {"size": 3}})
}

fn pod_template(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": name},
        "template": {"metadata": {"labels": {"app": name}},
            "spec": {"containers": [
                {"name": "main", "image": "skiff/busybox:latest", "command": ["sleep", "1"]},
                {"name": "side", "image": "skiff/busybox:1.0"}]}}})
}

fn group_in_aggregated<'a>(doc: &'a Value, group: &str) -> Option<&'a Value> {
    doc["items"]
        .as_array()?
        .iter()
        .find(|g| g["metadata"]["name"] == group)
}

#[tokio::test]
async fn a_kind_registered_while_running_is_routed_discovered_printed_and_cleaned_up() {
    // The cluster starts first: the kind arrives while it serves.
    let c = TestCluster::api_only();
    let http = client();
    let (code, _) = call(http.get(c.url("/apis/example.com/v1"))).await;
    assert_eq!(code, 404, "not served before it is registered");
    registry()
        .register(WIDGETS)
        .expect("registered once")
        .name
        .to_string();
    assert!(
        registry().register(WIDGETS).is_err(),
        "a second declaration of the same resource is refused"
    );

    // Discovery, legacy and aggregated.
    let (code, list) = call(http.get(c.url("/apis/example.com/v1"))).await;
    assert_eq!(code, 200, "{list}");
    let res = list["resources"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["name"] == "widgets"))
        .cloned()
        .expect("widgets in discovery");
    assert_eq!(res["kind"], "Widget");
    assert_eq!(res["shortNames"], json!(["wd"]));
    assert_eq!(res["categories"], json!(["all"]));
    assert_eq!(res["namespaced"], true);
    let (_, groups) = call(http.get(c.url("/apis")).header("accept", AGGREGATED)).await;
    let group = group_in_aggregated(&groups, "example.com").expect("group in aggregated");
    assert_eq!(group["versions"][0]["resources"][0]["resource"], "widgets");

    // CRUD and Tables through the same generic paths as every kind.
    let base = "/apis/example.com/v1/namespaces/default/widgets";
    let (code, created) = call(http.post(c.url(base)).json(&widget("w1"))).await;
    assert_eq!(code, 201, "{created}");
    assert!(created["metadata"]["uid"].is_string());
    assert_eq!(created["metadata"]["generation"], 1);
    let (code, table) = call(http.get(c.url(base)).header("accept", TABLE)).await;
    assert_eq!(code, 200, "{table}");
    assert_eq!(table["columnDefinitions"][0]["name"], "Name");
    assert_eq!(table["rows"][0]["cells"][0], "w1");

    // kubectl finds it by its short name and its category.
    skiff_integration::require_kubectl();
    let (code, out, err) = kubectl(&c.kubeconfig, &["get", "wd", "-n", "default", "-o", "name"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "widget.example.com/w1");
    let (code, out, err) = kubectl(
        &c.kubeconfig,
        &["get", "all", "-n", "default", "-o", "name"],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("widget.example.com/w1"), "{out}");

    // Namespace cleanup reaches it.
    let (code, _) = call(
        http.post(c.url("/api/v1/namespaces"))
            .json(&json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "wns"}})),
    )
    .await;
    assert_eq!(code, 201);
    let in_ns = "/apis/example.com/v1/namespaces/wns/widgets";
    let (code, _) = call(http.post(c.url(in_ns)).json(&widget("w2"))).await;
    assert_eq!(code, 201);
    let (code, _) = call(http.delete(c.url("/api/v1/namespaces/wns"))).await;
    assert_eq!(code, 200);
    eventually(Duration::from_secs(30), "namespace wns gone", || async {
        let (code, _) = call(client().get(c.url("/api/v1/namespaces/wns"))).await;
        (code == 404).then_some(())
    })
    .await;
    let (_, left) = call(http.get(c.url(in_ns))).await;
    assert_eq!(left["items"], json!([]), "{left}");

    // Unregistered, it is no longer served; its objects stay in the store.
    assert!(registry().unregister("example.com", "v1", "widgets"));
    let (code, _) = call(http.get(c.url(base))).await;
    assert_eq!(code, 404);
}

#[tokio::test]
async fn a_builtin_kind_declared_in_one_module_is_served_explained_patched_and_authorized() {
    skiff_integration::require_kubectl();
    let c = TestCluster::start_secure();
    let admin = c.admin_client();
    let dir = tempfile::tempdir().expect("tempdir");
    let manifest = dir.path().join("pt.json");
    std::fs::write(&manifest, pod_template("web").to_string()).expect("write");
    let admin_cfg = kubeconfig_for(&c, dir.path(), &c.client_cert("root", &["system:masters"]));
    let k = |args: &[&str]| kubectl(&admin_cfg, args);

    let (code, out, err) = k(&["create", "-f", &manifest.display().to_string()]);
    assert_eq!(code, 0, "{out}{err}");
    // Defaulted on create like a pod's spec.
    let (_, pt) = call(admin.get(c.url("/api/v1/namespaces/default/podtemplates/web"))).await;
    assert_eq!(pt["template"]["spec"]["restartPolicy"], "Always");
    assert_eq!(
        pt["template"]["spec"]["containers"][1]["imagePullPolicy"],
        "IfNotPresent"
    );

    // The kind's printer columns.
    let (code, out, err) = k(&["get", "podtemplates"]);
    assert_eq!(code, 0, "{err}");
    let header: Vec<&str> = out
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        ["NAME", "CONTAINERS", "IMAGES", "POD", "LABELS"],
        "{out}"
    );
    assert!(out.contains("main,side"), "{out}");

    // OpenAPI from its schema.
    let (code, out, err) = k(&["explain", "podtemplate.template.spec.containers.image"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("FIELD: image"), "{out}");

    // Strategic merge patch by the containers' merge key: one container changes, the
    // other stays.
    let (code, out, err) = k(&[
        "patch",
        "podtemplate",
        "web",
        "-p",
        r#"{"template":{"spec":{"containers":[{"name":"side","image":"skiff/busybox:2.0"}]}}}"#,
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let (_, pt) = call(admin.get(c.url("/api/v1/namespaces/default/podtemplates/web"))).await;
    let images: Vec<&str> = pt["template"]["spec"]["containers"]
        .as_array()
        .expect("containers")
        .iter()
        .filter_map(|c| c["image"].as_str())
        .collect();
    assert_eq!(images, ["skiff/busybox:latest", "skiff/busybox:2.0"]);

    // A bad template is refused with its field path.
    let mut bad = pod_template("bad");
    bad["template"]["spec"]["containers"][0]["name"] = json!("Not_A_Name");
    let (code, status) = call(
        admin
            .post(c.url("/api/v1/namespaces/default/podtemplates"))
            .json(&bad),
    )
    .await;
    assert_eq!(code, 422, "{status}");
    assert_eq!(
        status["details"]["causes"][0]["field"],
        "template.spec.containers[0].name"
    );

    // RBAC knows it by its resource name: a user granted only podtemplates reads them and
    // nothing else.
    let role = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": "template-reader"},
        "rules": [{"apiGroups": [""], "resources": ["podtemplates"], "verbs": ["get", "list"]}]});
    let (code, _) = call(
        admin
            .post(c.url("/apis/rbac.authorization.k8s.io/v1/clusterroles"))
            .json(&role),
    )
    .await;
    assert_eq!(code, 201);
    let (code, _) = call(
        admin
            .post(c.url("/apis/rbac.authorization.k8s.io/v1/namespaces/default/rolebindings"))
            .json(&user_role_binding(
                "jane-templates",
                "template-reader",
                "jane",
            )),
    )
    .await;
    assert_eq!(code, 201);
    let jane = tls_client(&c.ca_pem(), None, Some(&c.client_cert("jane", &[])));
    let (code, _) = call(jane.get(c.url("/api/v1/namespaces/default/podtemplates"))).await;
    assert_eq!(code, 200);
    let (code, _) = call(jane.get(c.url("/api/v1/namespaces/default/pods"))).await;
    assert_eq!(code, 403);
}
