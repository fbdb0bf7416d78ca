//! The API machinery as clients meet it: defaulting on every write, managedFields, error
//! codes of patches and preconditions, generic deletion through the garbage collector,
//! Event expiry, the guaranteed update under concurrent writers, and the reviews.

use std::time::Duration;

use serde_json::{json, Value};
use skiff_actors::store::ExpireEvents;
use skiff_integration::{call, client, eventually, kubectl, tls_client, TestCluster};

const PODS: &str = "/api/v1/namespaces/default/pods";
const SERVICES: &str = "/api/v1/namespaces/default/services";
const RCS: &str = "/api/v1/namespaces/default/replicationcontrollers";

fn pod_manifest(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"app": name}},
        "spec": {"containers": [{"name": "main", "image": "skiff/busybox:latest",
            "command": ["sleep", "3600"]}]}})
}

/// A manifest file (JSON, which kubectl reads as it reads YAML).
fn write_manifest(dir: &std::path::Path, name: &str, v: &Value) -> String {
    let path = dir.join(name);
    std::fs::write(&path, serde_json::to_string_pretty(v).expect("json")).expect("write");
    path.display().to_string()
}

#[tokio::test]
async fn a_json_patch_whose_test_fails_is_unprocessable_and_changes_nothing() {
    let c = TestCluster::api_only();
    let http = client();
    let (code, _) = call(http.post(c.url(PODS)).json(&pod_manifest("p"))).await;
    assert_eq!(code, 201);
    let patch = json!([
        {"op": "test", "path": "/metadata/labels/app", "value": "other"},
        {"op": "replace", "path": "/metadata/labels/app", "value": "changed"},
    ]);
    let (code, status) = call(
        http.patch(c.url(&format!("{PODS}/p")))
            .header("content-type", "application/json-patch+json")
            .body(patch.to_string()),
    )
    .await;
    assert_eq!(code, 422, "{status}");
    assert_eq!(status["reason"], "Invalid");
    assert_eq!(
        status["message"],
        "testing value /metadata/labels/app failed: test failed"
    );
    let (_, pod) = call(http.get(c.url(&format!("{PODS}/p")))).await;
    assert_eq!(pod["metadata"]["labels"]["app"], "p");
    // A patch that cannot be read at all is still a bad request.
    let (code, _) = call(
        http.patch(c.url(&format!("{PODS}/p")))
            .header("content-type", "application/json-patch+json")
            .body(r#"[{"op": "frobnicate", "path": "/a"}]"#),
    )
    .await;
    assert_eq!(code, 400);
}

#[tokio::test]
async fn an_update_with_an_empty_or_zero_resource_version_is_unconditional() {
    let c = TestCluster::api_only();
    let http = client();
    let node = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}});
    let (code, _) = call(http.post(c.url("/api/v1/nodes")).json(&node)).await;
    assert_eq!(code, 201);
    for (rv, label) in [("0", "zero"), ("", "empty")] {
        let (_, mut current) = call(http.get(c.url("/api/v1/nodes/n1"))).await;
        current["metadata"]["resourceVersion"] = json!(rv);
        current["metadata"]["labels"] = json!({"rv": label});
        let (code, body) = call(http.put(c.url("/api/v1/nodes/n1")).json(&current)).await;
        assert_eq!(code, 200, "resourceVersion {rv:?}: {body}");
        assert_eq!(body["metadata"]["labels"]["rv"], label);
    }
    // A stale one still conflicts.
    let (_, mut current) = call(http.get(c.url("/api/v1/nodes/n1"))).await;
    current["metadata"]["resourceVersion"] = json!("1");
    let (code, status) = call(http.put(c.url("/api/v1/nodes/n1")).json(&current)).await;
    assert_eq!(code, 409, "{status}");
}

#[tokio::test]
async fn a_body_of_another_kind_is_refused_in_kubernetes_words() {
    let c = TestCluster::api_only();
    let (code, status) = call(
        client()
            .post(c.url("/api/v1/namespaces"))
            .json(&pod_manifest("p")),
    )
    .await;
    assert_eq!(code, 400, "{status}");
    assert_eq!(
        status["message"],
        "Pod in version \"v1\" cannot be handled as a Namespace: converting (v1.Pod) to (core.Namespace): unknown conversion"
    );
}

#[tokio::test]
async fn concurrent_unconditional_patches_of_one_object_all_succeed() {
    let c = TestCluster::api_only();
    let http = client();
    let (code, _) = call(http.post(c.url(PODS)).json(&pod_manifest("busy"))).await;
    assert_eq!(code, 201);
    let writes = (0..64).map(|i| {
        let http = http.clone();
        let url = c.url(&format!("{PODS}/busy"));
        async move {
            call(
                http.patch(url)
                    .header("content-type", "application/merge-patch+json")
                    .body(json!({"metadata": {"labels": {format!("l{i}"): "x"}}}).to_string()),
            )
            .await
            .0
        }
    });
    let codes = futures::future::join_all(writes).await;
    assert!(codes.iter().all(|c| *c == 200), "{codes:?}");
    let (_, pod) = call(http.get(c.url(&format!("{PODS}/busy")))).await;
    let labels = pod["metadata"]["labels"].as_object().expect("labels");
    assert_eq!(labels.len(), 65, "every patch landed: {labels:?}");
}

async fn wait_gone(http: &reqwest::Client, url: String, what: &str) {
    eventually(Duration::from_secs(15), what, || {
        let (http, url) = (http.clone(), url.clone());
        async move { (call(http.get(url)).await.0 == 404).then_some(()) }
    })
    .await;
}

fn owned_pod(name: &str, owner_kind: &str, owner: &Value) -> Value {
    let mut p = pod_manifest(name);
    p["metadata"]["ownerReferences"] = json!([{
        "apiVersion": "v1", "kind": owner_kind,
        "name": owner["metadata"]["name"], "uid": owner["metadata"]["uid"],
        "blockOwnerDeletion": true,
    }]);
    p
}

#[tokio::test]
async fn orphan_and_foreground_deletes_finish_for_services_and_rcs() {
    let c = TestCluster::api_only();
    let http = client();
    let svc = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"},
        "spec": {"ports": [{"port": 80}], "selector": {"app": "x"}}});
    let rc = json!({"apiVersion": "v1", "kind": "ReplicationController", "metadata": {"name": "r"},
        "spec": {"replicas": 0, "selector": {"app": "r"},
            "template": {"metadata": {"labels": {"app": "r"}},
                "spec": {"containers": [{"name": "m", "image": "skiff/busybox:latest"}]}}}});
    for (coll, body, kind, dep) in [
        (SERVICES, &svc, "Service", "svc-dep"),
        (RCS, &rc, "ReplicationController", "rc-dep"),
    ] {
        let (code, owner) = call(http.post(c.url(coll)).json(body)).await;
        assert_eq!(code, 201, "{owner}");
        let (code, _) = call(http.post(c.url(PODS)).json(&owned_pod(dep, kind, &owner))).await;
        assert_eq!(code, 201);
        let name = owner["metadata"]["name"].as_str().expect("name");
        let (code, body) = call(
            http.delete(c.url(&format!("{coll}/{name}")))
                .json(&json!({"kind": "DeleteOptions", "apiVersion": "v1",
                    "propagationPolicy": "Orphan"})),
        )
        .await;
        assert_eq!(code, 200, "{body}");
        wait_gone(
            &http,
            c.url(&format!("{coll}/{name}")),
            "the orphaning owner",
        )
        .await;
        let (code, dep_pod) = call(http.get(c.url(&format!("{PODS}/{dep}")))).await;
        assert_eq!(code, 200, "the dependent stays");
        assert!(
            dep_pod["metadata"].get("ownerReferences").is_none(),
            "{dep_pod}"
        );
    }
    // Foreground: the dependent goes first, then the owner.
    let (code, owner) = call(http.post(c.url(SERVICES)).json(&svc)).await;
    assert_eq!(code, 201);
    let (code, _) = call(
        http.post(c.url(PODS))
            .json(&owned_pod("fg-dep", "Service", &owner)),
    )
    .await;
    assert_eq!(code, 201);
    let (code, _) = call(
        http.delete(c.url(&format!("{SERVICES}/s")))
            .json(&json!({"propagationPolicy": "Foreground"})),
    )
    .await;
    assert_eq!(code, 200);
    wait_gone(
        &http,
        c.url(&format!("{SERVICES}/s")),
        "the foreground owner",
    )
    .await;
    let (code, _) = call(http.get(c.url(&format!("{PODS}/fg-dep")))).await;
    assert_eq!(code, 404, "the dependent went first");
}

#[tokio::test]
async fn events_expire_once_their_ttl_has_passed_since_their_last_write() {
    let c = TestCluster::api_only();
    let http = client();
    let events = "/api/v1/namespaces/default/events";
    let ev = json!({"apiVersion": "v1", "kind": "Event", "metadata": {"name": "e1"},
        "involvedObject": {"kind": "Pod", "name": "p", "namespace": "default"},
        "reason": "Test", "message": "hello"});
    let (code, body) = call(http.post(c.url(events)).json(&ev)).await;
    assert_eq!(code, 201, "{body}");
    let now = chrono::Utc::now();
    // A clock short of the TTL (the default hour) expires nothing.
    let expired = c
        .store
        .addr
        .send(ExpireEvents {
            now: now + chrono::Duration::seconds(3500),
        })
        .await
        .expect("store");
    assert_eq!(expired, 0);
    let (code, _) = call(http.get(c.url(&format!("{events}/e1")))).await;
    assert_eq!(code, 200);
    let expired = c
        .store
        .addr
        .send(ExpireEvents {
            now: now + chrono::Duration::seconds(3700),
        })
        .await
        .expect("store");
    assert_eq!(expired, 1);
    wait_gone(&http, c.url(&format!("{events}/e1")), "the expired event").await;
}

#[test]
fn kubectl_records_its_managers_and_replaces_the_manifest_it_created_from() {
    let c = TestCluster::api_only();
    let dir = tempfile::tempdir().expect("tempdir");
    let k = |args: &[&str]| {
        let (code, out, err) = kubectl(&c.kubeconfig, args);
        assert_eq!(code, 0, "kubectl {args:?}: {err}\n{out}");
        out
    };
    k(&["create", "namespace", "mf"]);
    let ns: Value = serde_json::from_str(&k(&[
        "get",
        "ns",
        "mf",
        "--show-managed-fields",
        "-o",
        "json",
    ]))
    .expect("json");
    let mf = &ns["metadata"]["managedFields"];
    assert_eq!(mf[0]["manager"], "kubectl-create", "{mf}");
    assert_eq!(mf[0]["operation"], "Update");
    assert_eq!(mf[0]["fieldsType"], "FieldsV1");
    // Without the flag kubectl hides them.
    let plain: Value = serde_json::from_str(&k(&["get", "ns", "mf", "-o", "json"])).expect("json");
    assert!(plain["metadata"].get("managedFields").is_none());

    k(&["label", "ns", "mf", "team=blue"]);
    let ns: Value = serde_json::from_str(&k(&[
        "get",
        "ns",
        "mf",
        "--show-managed-fields",
        "-o",
        "json",
    ]))
    .expect("json");
    let label = ns["metadata"]["managedFields"]
        .as_array()
        .expect("entries")
        .iter()
        .find(|e| e["manager"] == "kubectl-label")
        .cloned()
        .expect("a kubectl-label entry");
    assert_eq!(
        label["fieldsV1"]["f:metadata"]["f:labels"]["f:team"],
        json!({})
    );

    // The manifest a pod was created from replaces it: the server defaults it again,
    // so the fields it filled in on create are not "changed". (What the ServiceAccount
    // admission adds on create only, the account and its token volume, the manifest
    // states, as it must against Kubernetes.)
    let mut manifest = pod_manifest("web");
    manifest["spec"]["serviceAccountName"] = json!("default");
    manifest["spec"]["automountServiceAccountToken"] = json!(false);
    let file = write_manifest(dir.path(), "pod.json", &manifest);
    k(&["create", "-f", &file]);
    let out = k(&["replace", "-f", &file, "--save-config"]);
    assert!(out.contains("pod/web replaced"), "{out}");
    let pod: Value = serde_json::from_str(&k(&["get", "pod", "web", "-o", "json"])).expect("json");
    assert_eq!(pod["spec"]["containers"][0]["imagePullPolicy"], "Always");
    assert!(pod["metadata"]["annotations"]
        .get("kubectl.kubernetes.io/last-applied-configuration")
        .is_some());
    // kubectl delete --cascade=orphan of a Service returns and the Service is gone.
    let svc = write_manifest(
        dir.path(),
        "svc.json",
        &json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
            "spec": {"ports": [{"port": 80}], "selector": {"app": "web"}}}),
    );
    k(&["create", "-f", &svc]);
    k(&[
        "delete",
        "svc",
        "web",
        "--cascade=orphan",
        "--wait=true",
        "--timeout=30s",
    ]);
    let (code, _, err) = kubectl(&c.kubeconfig, &["get", "svc", "web"]);
    assert_ne!(code, 0);
    assert!(err.contains("NotFound"), "{err}");
}

#[tokio::test]
async fn token_and_subject_access_reviews_answer_for_those_allowed_to_ask() {
    let c = TestCluster::start_secure();
    let admin = c.admin_client();
    let review = |token: &str| {
        json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
            "spec": {"token": token}})
    };
    let url = c.url("/apis/authentication.k8s.io/v1/tokenreviews");
    let (code, r) = call(admin.post(&url).json(&review(&c.admin_token()))).await;
    assert_eq!(code, 201, "{r}");
    assert_eq!(r["status"]["authenticated"], true);
    assert_eq!(r["status"]["user"]["username"], "admin");
    assert!(r["status"]["user"]["groups"]
        .as_array()
        .expect("groups")
        .contains(&json!("system:masters")));
    let (code, r) = call(admin.post(&url).json(&review("no-such-token"))).await;
    assert_eq!(code, 201);
    assert_eq!(r["status"]["authenticated"], false);
    let (code, _) = call(admin.post(&url).json(&review(""))).await;
    assert_eq!(code, 400);
    // A token for another audience does not authenticate.
    let mut other = review(&c.admin_token());
    other["spec"]["audiences"] = json!(["https://vault.example"]);
    let (_, r) = call(admin.post(&url).json(&other)).await;
    assert_eq!(r["status"]["authenticated"], false);

    // Someone without the right to create reviews is refused before any answer.
    let jane = tls_client(&c.ca_pem(), None, Some(&c.client_cert("jane", &["devs"])));
    let (code, _) = call(jane.post(&url).json(&review(&c.admin_token()))).await;
    assert_eq!(code, 403);

    let sar_url = c.url("/apis/authorization.k8s.io/v1/subjectaccessreviews");
    let sar = |verb: &str| {
        json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
            "spec": {"user": "jane", "groups": ["devs"], "resourceAttributes":
                {"namespace": "default", "verb": verb, "resource": "pods"}}})
    };
    let (code, r) = call(admin.post(&sar_url).json(&sar("list"))).await;
    assert_eq!(code, 201, "{r}");
    assert_eq!(r["status"]["allowed"], false);
    let (code, body) = call(
        admin
            .post(c.url("/apis/rbac.authorization.k8s.io/v1/namespaces/default/rolebindings"))
            .json(&skiff_integration::user_role_binding(
                "jane-view",
                "view",
                "jane",
            )),
    )
    .await;
    assert_eq!(code, 201, "{body}");
    let (_, r) = call(admin.post(&sar_url).json(&sar("list"))).await;
    assert_eq!(r["status"]["allowed"], true, "{r}");
    let (_, r) = call(admin.post(&sar_url).json(&sar("delete"))).await;
    assert_eq!(r["status"]["allowed"], false);
    let (code, r) = call(
        admin
            .post(&sar_url)
            .json(&json!({"spec": {"resourceAttributes": {"verb": "get"}}})),
    )
    .await;
    assert_eq!(code, 422, "{r}");

    // The namespaced form must ask about its own namespace.
    let local = c.url("/apis/authorization.k8s.io/v1/namespaces/default/localsubjectaccessreviews");
    let mut l = sar("list");
    l["kind"] = json!("LocalSubjectAccessReview");
    let (code, r) = call(admin.post(&local).json(&l)).await;
    assert_eq!(code, 201, "{r}");
    assert_eq!(r["status"]["allowed"], true);
    l["spec"]["resourceAttributes"]["namespace"] = json!("kube-system");
    let (code, r) = call(admin.post(&local).json(&l)).await;
    assert_eq!(code, 400, "{r}");
    assert_eq!(
        r["message"],
        "spec.resourceAttributes.namespace must match namespace: default"
    );

    // Jane may ask what she can do herself (system:basic-user).
    let (code, r) = call(
        jane.post(c.url("/apis/authorization.k8s.io/v1/selfsubjectrulesreviews"))
            .json(&json!({"apiVersion": "authorization.k8s.io/v1",
                "kind": "SelfSubjectRulesReview", "spec": {"namespace": "default"}})),
    )
    .await;
    assert_eq!(code, 201, "{r}");
    let rules = r["status"]["resourceRules"].as_array().expect("rules");
    assert!(
        rules.iter().any(|rule| rule["resources"]
            .as_array()
            .is_some_and(|rs| rs.contains(&json!("pods")))
            && rule["verbs"]
                .as_array()
                .is_some_and(|v| v.contains(&json!("list")))),
        "{rules:?}"
    );
    assert_eq!(r["status"]["incomplete"], false);
}

#[tokio::test]
async fn events_k8s_io_is_a_second_view_of_the_same_events() {
    let c = TestCluster::api_only();
    let http = client();
    let v1 = "/apis/events.k8s.io/v1/namespaces/default/events";
    let core = "/api/v1/namespaces/default/events";
    let ev = json!({"apiVersion": "events.k8s.io/v1", "kind": "Event",
        "metadata": {"name": "e2"}, "eventTime": "2026-12-01T10:00:00.000000Z",
        "reportingController": "skiff.io/test", "reportingInstance": "test-1",
        "action": "Testing", "reason": "Tested", "type": "Normal", "note": "it works",
        "regarding": {"kind": "Pod", "name": "p", "namespace": "default"}});
    let (code, created) = call(http.post(c.url(v1)).json(&ev)).await;
    assert_eq!(code, 201, "{created}");
    assert_eq!(created["apiVersion"], "events.k8s.io/v1");
    assert_eq!(created["note"], "it works");
    let (code, seen) = call(http.get(c.url(&format!("{core}/e2")))).await;
    assert_eq!(code, 200);
    assert_eq!(seen["apiVersion"], "v1");
    assert_eq!(seen["message"], "it works");
    assert_eq!(seen["involvedObject"]["name"], "p");
    assert_eq!(seen["reportingComponent"], "skiff.io/test");
    // A core write shows through the other view.
    let (code, _) = call(
        http.patch(c.url(&format!("{core}/e2")))
            .header("content-type", "application/merge-patch+json")
            .body(r#"{"message": "changed"}"#),
    )
    .await;
    assert_eq!(code, 200);
    let (_, list) = call(http.get(c.url(v1))).await;
    assert_eq!(list["kind"], "EventList");
    assert_eq!(list["apiVersion"], "events.k8s.io/v1");
    assert_eq!(list["items"][0]["note"], "changed");
    // And a patch through the new view lands in the stored Event.
    let (code, patched) = call(
        http.patch(c.url(&format!("{v1}/e2")))
            .header("content-type", "application/merge-patch+json")
            .body(r#"{"note": "again"}"#),
    )
    .await;
    assert_eq!(code, 200, "{patched}");
    assert_eq!(patched["note"], "again");
    let (_, seen) = call(http.get(c.url(&format!("{core}/e2")))).await;
    assert_eq!(seen["message"], "again");
    // That API's own rules on create.
    let (code, status) = call(
        http.post(c.url(v1))
            .json(&json!({"metadata": {"name": "bad"}, "reason": "R", "type": "Normal"})),
    )
    .await;
    assert_eq!(code, 422, "{status}");
    let fields: Vec<&str> = status["details"]["causes"]
        .as_array()
        .expect("causes")
        .iter()
        .filter_map(|c| c["field"].as_str())
        .collect();
    assert_eq!(
        fields,
        [
            "eventTime",
            "reportingController",
            "reportingInstance",
            "action"
        ]
    );
}
#[test]
fn kubectl_auth_can_i_list_shows_the_users_rules() {
    let c = TestCluster::start_secure();
    let (code, _, err) = kubectl(
        &c.kubeconfig,
        &[
            "create",
            "rolebinding",
            "ann-edit",
            "--clusterrole=edit",
            "--user=ann",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let dir = tempfile::tempdir().expect("tempdir");
    let ann = skiff_integration::kubeconfig_for(&c, dir.path(), &c.client_cert("ann", &[]));
    let (code, out, err) = kubectl(&ann, &["auth", "can-i", "--list"]);
    assert_eq!(code, 0, "{err}");
    let pods = out
        .lines()
        .find(|l| l.split_whitespace().next() == Some("pods"))
        .unwrap_or_else(|| panic!("no pods row in\n{out}"));
    assert!(pods.contains("create") && pods.contains("delete"), "{pods}");
    assert!(
        out.contains("selfsubjectaccessreviews.authorization.k8s.io"),
        "{out}"
    );
}
