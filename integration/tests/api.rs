//! The Kubernetes API over real HTTP against a real store: verbs, content types, selectors,
//! paging, Tables, and the error codes a client sees.

use std::time::Duration;

use futures::StreamExt;
use serde_json::{json, Value};
use skiff_integration::{call, client, eventually, pod, TestCluster};

const PODS: &str = "/api/v1/namespaces/default/pods";

async fn create_pod(c: &TestCluster, name: &str, labels: Value) -> Value {
    let (code, body) = call(client().post(c.url(PODS)).json(&pod(name, labels))).await;
    assert_eq!(code, 201, "{body}");
    body
}

#[tokio::test]
async fn create_get_update_delete_round_trip_with_resource_versions() {
    let c = TestCluster::api_only();
    let created = create_pod(&c, "web", json!({"app": "web"})).await;
    let rv1: u64 = created["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(created["metadata"]["uid"]
        .as_str()
        .is_some_and(|u| !u.is_empty()));
    assert!(created["metadata"]["creationTimestamp"].is_string());
    assert_eq!(created["metadata"]["namespace"], "default");
    assert_eq!(created["status"]["phase"], "Pending");

    let (code, got) = call(client().get(c.url(&format!("{PODS}/web")))).await;
    assert_eq!(code, 200);
    assert_eq!(got, created);

    let mut changed = got.clone();
    changed["metadata"]["labels"]["tier"] = json!("front");
    let (code, updated) = call(client().put(c.url(&format!("{PODS}/web"))).json(&changed)).await;
    assert_eq!(code, 200, "{updated}");
    let rv2: u64 = updated["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(rv2 > rv1);
    assert_eq!(updated["metadata"]["labels"]["tier"], "front");

    // The first version is now stale: optimistic concurrency refuses it.
    let (code, status) = call(client().put(c.url(&format!("{PODS}/web"))).json(&changed)).await;
    assert_eq!(code, 409);
    assert_eq!(status["reason"], "Conflict");
    assert_eq!(status["kind"], "Status");

    let (code, _) = call(client().delete(c.url(&format!("{PODS}/web")))).await;
    assert_eq!(code, 200);
    let (code, status) = call(client().get(c.url(&format!("{PODS}/web")))).await;
    assert_eq!(code, 404);
    assert_eq!(status["reason"], "NotFound");
    assert_eq!(status["message"], "pods \"web\" not found");
}

#[tokio::test]
async fn duplicate_create_is_already_exists_and_missing_namespace_is_not_found() {
    let c = TestCluster::api_only();
    create_pod(&c, "a", json!({})).await;
    let (code, status) = call(client().post(c.url(PODS)).json(&pod("a", json!({})))).await;
    assert_eq!(code, 409);
    assert_eq!(status["reason"], "AlreadyExists");

    let (code, status) = call(
        client()
            .post(c.url("/api/v1/namespaces/nowhere/pods"))
            .json(&pod("a", json!({}))),
    )
    .await;
    assert_eq!(code, 404);
    assert_eq!(status["message"], "namespaces \"nowhere\" not found");
}

#[tokio::test]
async fn invalid_objects_get_422_listing_every_bad_field() {
    let c = TestCluster::api_only();
    let bad = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "Bad_Name"},
        "spec": {"containers": [{"name": "c"}]}});
    let (code, status) = call(client().post(c.url(PODS)).json(&bad)).await;
    assert_eq!(code, 422, "{status}");
    assert_eq!(status["reason"], "Invalid");
    let fields: Vec<&str> = status["details"]["causes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["field"].as_str())
        .collect();
    assert!(fields.contains(&"metadata.name"), "{fields:?}");
    assert!(fields.contains(&"spec.containers[0].image"), "{fields:?}");
}

#[tokio::test]
async fn malformed_bodies_and_media_types_get_the_right_status_never_500() {
    let c = TestCluster::api_only();
    let (code, status) = call(
        client()
            .post(c.url(PODS))
            .header("content-type", "application/json")
            .body("{not json"),
    )
    .await;
    assert_eq!((code, status["reason"].as_str()), (400, Some("BadRequest")));

    // No Content-Type: read as JSON.
    let body = serde_json::to_vec(&pod("plain", json!({}))).unwrap();
    let (code, _) = call(client().post(c.url(PODS)).body(body)).await;
    assert_eq!(code, 201);

    let (code, status) = call(
        client()
            .patch(c.url(&format!("{PODS}/plain")))
            .header("content-type", "application/xml")
            .body("<x/>"),
    )
    .await;
    assert_eq!(
        (code, status["reason"].as_str()),
        (415, Some("UnsupportedMediaType"))
    );

    let huge = vec![b' '; 3 * 1024 * 1024 + 10];
    let (code, status) = call(
        client()
            .post(c.url(PODS))
            .header("content-type", "application/json")
            .body(huge),
    )
    .await;
    assert_eq!(code, 413, "{status}");
    assert_eq!(status["kind"], "Status");

    let (code, status) = call(client().post(c.url(PODS)).json(&json!([1, 2]))).await;
    assert_eq!(code, 400, "{status}");

    let wrong_types = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "t"}, "spec": {"containers": "nope"}});
    let (code, _) = call(client().post(c.url(PODS)).json(&wrong_types)).await;
    assert_eq!(code, 400);

    let (code, status) = call(client().get(c.url("/api/v1/widgets"))).await;
    assert_eq!((code, status["reason"].as_str()), (404, Some("NotFound")));

    // Unknown query parameters are ignored.
    let (code, _) = call(client().get(c.url(&format!("{PODS}?frobnicate=yes")))).await;
    assert_eq!(code, 200);
}

#[tokio::test]
async fn strict_field_validation_rejects_unknown_fields_and_warn_reports_them() {
    let c = TestCluster::api_only();
    let mut p = pod("strict", json!({}));
    p["spec"]["containers"][0]["imagee"] = json!("typo");
    let (code, status) = call(
        client()
            .post(c.url(&format!("{PODS}?fieldValidation=Strict")))
            .json(&p),
    )
    .await;
    assert_eq!(code, 400, "{status}");
    assert!(
        status["message"]
            .as_str()
            .unwrap()
            .contains("unknown field \"spec.containers[0].imagee\""),
        "{status}"
    );

    let resp = client().post(c.url(PODS)).json(&p).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 201);
    let warning = resp
        .headers()
        .get("warning")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    assert!(warning.contains("imagee"), "warning header: {warning}");
}

#[tokio::test]
async fn three_patch_types_and_anything_else_is_415() {
    let c = TestCluster::api_only();
    let rcs = "/api/v1/namespaces/default/replicationcontrollers";
    let rc = json!({"apiVersion": "v1", "kind": "ReplicationController", "metadata": {"name": "p", "labels": {"app": "web"}},
    "spec": {"replicas": 0, "selector": {"app": "web"}, "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [
        {"name": "a", "image": "busybox:1", "env": [{"name": "X", "value": "1"}]},
        {"name": "b", "image": "busybox:1"}
    ]}}}});
    let (code, _) = call(client().post(c.url(rcs)).json(&rc)).await;
    assert_eq!(code, 201);
    let url = c.url(&format!("{rcs}/p"));

    let (code, merged) = call(
        client()
            .patch(&url)
            .header("content-type", "application/merge-patch+json")
            .body(r#"{"metadata":{"labels":{"app":null,"tier":"x"}}}"#),
    )
    .await;
    assert_eq!(code, 200, "{merged}");
    assert_eq!(merged["metadata"]["labels"], json!({"tier": "x"}));

    // Strategic merge: containers merge by name, env by name; the other container stays.
    let (code, sm) = call(client().patch(&url).header("content-type", "application/strategic-merge-patch+json")
        .body(r#"{"spec":{"template":{"spec":{"containers":[{"name":"a","image":"busybox:2","env":[{"name":"Y","value":"2"}]}]}}}}"#)).await;
    assert_eq!(code, 200, "{sm}");
    let containers = sm["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap();
    assert_eq!(containers.len(), 2);
    let a = containers.iter().find(|c| c["name"] == "a").unwrap();
    assert_eq!(a["image"], "busybox:2");
    let mut env: Vec<&str> = a["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    env.sort();
    assert_eq!(env, ["X", "Y"]);

    let (code, jp) = call(client().patch(&url).header("content-type", "application/json-patch+json")
        .body(r#"[{"op":"replace","path":"/spec/replicas","value":0},{"op":"add","path":"/metadata/annotations","value":{"k":"v"}}]"#)).await;
    assert_eq!(code, 200, "{jp}");
    assert_eq!(jp["metadata"]["annotations"]["k"], "v");

    let (code, status) = call(
        client()
            .patch(&url)
            .header("content-type", "application/json-patch+json")
            .body(r#"[{"op":"test","path":"/metadata/name","value":"other"}]"#),
    )
    .await;
    assert!(code == 400 || code == 422, "{code} {status}");

    let (code, status) = call(
        client()
            .patch(&url)
            .header("content-type", "application/json")
            .body("{}"),
    )
    .await;
    assert_eq!(code, 415, "{status}");

    // A pod's spec is immutable beyond images: Kubernetes' rule, answered 422.
    let (code, _) = call(client().post(c.url(PODS)).json(&pod("fixed", json!({})))).await;
    assert_eq!(code, 201);
    let (code, status) = call(
        client()
            .patch(c.url(&format!("{PODS}/fixed")))
            .header("content-type", "application/strategic-merge-patch+json")
            .body(r#"{"spec":{"containers":[{"name":"app","env":[{"name":"Y","value":"2"}]}]}}"#),
    )
    .await;
    assert_eq!(code, 422, "{status}");
    let (code, img) = call(
        client()
            .patch(c.url(&format!("{PODS}/fixed")))
            .header("content-type", "application/strategic-merge-patch+json")
            .body(r#"{"spec":{"containers":[{"name":"app","image":"busybox:2"}]}}"#),
    )
    .await;
    assert_eq!(code, 200, "{img}");
    assert_eq!(img["spec"]["containers"][0]["image"], "busybox:2");
}

#[tokio::test]
async fn label_and_field_selectors_filter_lists() {
    let c = TestCluster::api_only();
    create_pod(&c, "web-1", json!({"app": "web", "tier": "front"})).await;
    create_pod(&c, "web-2", json!({"app": "web", "tier": "back"})).await;
    create_pod(&c, "db-1", json!({"app": "db"})).await;
    let names = |body: &Value| -> Vec<String> {
        body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["metadata"]["name"].as_str().unwrap().to_string())
            .collect()
    };
    let list = |q: &str| client().get(c.url(&format!("{PODS}?{q}")));
    let (_, b) = call(list("labelSelector=app%3Dweb")).await;
    assert_eq!(names(&b), ["web-1", "web-2"]);
    let (_, b) = call(list("labelSelector=app%20in%20(db,cache)")).await;
    assert_eq!(names(&b), ["db-1"]);
    let (_, b) = call(list("labelSelector=app%3Dweb,tier!%3Dfront")).await;
    assert_eq!(names(&b), ["web-2"]);
    let (_, b) = call(list("labelSelector=!tier")).await;
    assert_eq!(names(&b), ["db-1"]);
    let (_, b) = call(list("fieldSelector=metadata.name%3Ddb-1")).await;
    assert_eq!(names(&b), ["db-1"]);
    let (_, b) = call(list(
        "fieldSelector=spec.nodeName%3D,status.phase%3DPending",
    ))
    .await;
    assert_eq!(b["items"].as_array().unwrap().len(), 3);
    let (code, status) = call(list("fieldSelector=spec.bogus%3Dx")).await;
    assert_eq!(code, 400, "{status}");
    let (code, _) = call(list("labelSelector=app%20in%20(")).await;
    assert_eq!(code, 400);
}

#[tokio::test]
async fn limit_and_continue_page_through_every_object_once() {
    let c = TestCluster::api_only();
    for i in 0..7 {
        create_pod(&c, &format!("p{i}"), json!({})).await;
    }
    let mut seen = Vec::new();
    let mut token: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut url = format!("{PODS}?limit=3");
        if let Some(t) = &token {
            url.push_str(&format!("&continue={t}"));
        }
        let (code, body) = call(client().get(c.url(&url))).await;
        assert_eq!(code, 200, "{body}");
        pages += 1;
        for i in body["items"].as_array().unwrap() {
            seen.push(i["metadata"]["name"].as_str().unwrap().to_string());
        }
        match body["metadata"]["continue"].as_str() {
            Some(t) if !t.is_empty() => token = Some(t.to_string()),
            _ => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, ["p0", "p1", "p2", "p3", "p4", "p5", "p6"]);
    let (code, _) = call(client().get(c.url(&format!("{PODS}?limit=3&continue=garbage")))).await;
    assert_eq!(code, 400);
}

#[tokio::test]
async fn table_output_has_kubectl_columns_for_lists_and_single_objects() {
    let c = TestCluster::api_only();
    create_pod(&c, "web", json!({})).await;
    let accept = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json";
    let (code, table) = call(client().get(c.url(PODS)).header("accept", accept)).await;
    assert_eq!(code, 200);
    assert_eq!(table["kind"], "Table");
    let cols: Vec<&str> = table["columnDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(&cols[..5], ["Name", "Ready", "Status", "Restarts", "Age"]);
    assert_eq!(table["rows"][0]["cells"][0], "web");
    assert_eq!(table["rows"][0]["cells"][1], "0/1");
    assert_eq!(table["rows"][0]["cells"][2], "Pending");
    assert_eq!(table["rows"][0]["object"]["kind"], "PartialObjectMetadata");

    let (_, one) = call(
        client()
            .get(c.url(&format!("{PODS}/web")))
            .header("accept", accept),
    )
    .await;
    assert_eq!(one["kind"], "Table");
    assert_eq!(one["rows"].as_array().unwrap().len(), 1);

    let (_, ns) = call(
        client()
            .get(c.url("/api/v1/namespaces"))
            .header("accept", accept),
    )
    .await;
    let names: Vec<&str> = ns["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["cells"][0].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"default") && names.contains(&"kube-system"),
        "{names:?}"
    );
}

async fn read_events(resp: reqwest::Response, n: usize) -> Vec<Value> {
    let mut stream = resp.bytes_stream();
    let mut buf = Vec::new();
    let mut events = Vec::new();
    while events.len() < n {
        let chunk = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("watch event in time")
            .expect("stream open")
            .expect("chunk");
        buf.extend_from_slice(&chunk);
        while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=pos).collect();
            events.push(serde_json::from_slice(&line).expect("event json"));
        }
    }
    events
}

#[tokio::test]
async fn watch_resumes_from_a_revision_and_sees_changes_in_order() {
    let c = TestCluster::api_only();
    let a = create_pod(&c, "a", json!({})).await;
    let rv_a = a["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    create_pod(&c, "b", json!({})).await;
    call(client().delete(c.url(&format!("{PODS}/a")))).await;

    let resp = client()
        .get(c.url(&format!("{PODS}?watch=true&resourceVersion={rv_a}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let events = read_events(resp, 2).await;
    assert_eq!(events[0]["type"], "ADDED");
    assert_eq!(events[0]["object"]["metadata"]["name"], "b");
    assert_eq!(events[1]["type"], "DELETED");
    assert_eq!(events[1]["object"]["metadata"]["name"], "a");

    // Without a revision the watch starts with the current state, then live changes.
    let resp = client()
        .get(c.url(&format!("{PODS}?watch=1&labelSelector=app%3Dlive")))
        .send()
        .await
        .unwrap();
    let c2 = c.url(PODS);
    // The response headers are in, so the watch is registered: the create comes after it.
    tokio::spawn(async move {
        client()
            .post(c2)
            .json(&pod("live", json!({"app": "live"})))
            .send()
            .await
            .unwrap();
    });
    let events = read_events(resp, 1).await;
    assert_eq!(events[0]["type"], "ADDED");
    assert_eq!(events[0]["object"]["metadata"]["name"], "live");
}

#[tokio::test]
async fn watch_timeout_seconds_ends_the_stream() {
    let c = TestCluster::api_only();
    let started = std::time::Instant::now();
    let resp = client()
        .get(c.url(&format!("{PODS}?watch=true&timeoutSeconds=1")))
        .send()
        .await
        .unwrap();
    let body = resp.bytes().await.unwrap();
    assert!(body.is_empty());
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn watch_from_compacted_history_is_410_expired() {
    let c = TestCluster::start_with(|cfg| {
        cfg.store.history = 4;
        cfg.scheduler.enabled = false;
    });
    let first = create_pod(&c, "first", json!({})).await;
    let rv = first["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    for i in 0..6 {
        create_pod(&c, &format!("p{i}"), json!({})).await;
    }
    // As kube-apiserver: the valid request is answered 200, with one ERROR event.
    let resp = client()
        .get(c.url(&format!("{PODS}?watch=true&resourceVersion={rv}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let event: Value = resp.json().await.unwrap();
    assert_eq!(event["type"], "ERROR");
    assert_eq!(event["object"]["code"], 410);
    assert_eq!(event["object"]["reason"], "Expired");
}

#[tokio::test]
async fn restart_keeps_every_object_and_continues_the_revision() {
    let c = TestCluster::api_only();
    let mut last_rv = 0u64;
    for i in 0..20 {
        let p = create_pod(&c, &format!("p{i}"), json!({"i": i.to_string()})).await;
        last_rv = p["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
    }
    let c = c.restart();
    let (_, list) = call(client().get(c.url(PODS))).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 20);
    let list_rv: u64 = list["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(list_rv >= last_rv);
    let next = create_pod(&c, "after", json!({})).await;
    let next_rv: u64 = next["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(next_rv > last_rv, "{next_rv} <= {last_rv}");
}

#[tokio::test]
async fn scale_subresource_and_status_subresource_are_separate() {
    let c = TestCluster::api_only();
    let rc = json!({"apiVersion": "v1", "kind": "ReplicationController", "metadata": {"name": "web"},
        "spec": {"replicas": 1, "template": {"metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "c", "image": "busybox:1"}]}}}});
    let rcs = "/api/v1/namespaces/default/replicationcontrollers";
    let (code, created) = call(client().post(c.url(rcs)).json(&rc)).await;
    assert_eq!(code, 201, "{created}");
    assert_eq!(created["spec"]["selector"], json!({"app": "web"}));

    let (code, scale) = call(client().get(c.url(&format!("{rcs}/web/scale")))).await;
    assert_eq!(code, 200);
    assert_eq!(scale["kind"], "Scale");
    assert_eq!(scale["spec"]["replicas"], 1);
    let (code, scale) = call(
        client()
            .patch(c.url(&format!("{rcs}/web/scale")))
            .header("content-type", "application/merge-patch+json")
            .body(r#"{"spec":{"replicas":4}}"#),
    )
    .await;
    assert_eq!(code, 200, "{scale}");
    assert_eq!(scale["spec"]["replicas"], 4);
    let (_, got) = call(client().get(c.url(&format!("{rcs}/web")))).await;
    assert_eq!(got["spec"]["replicas"], 4);
    assert_eq!(got["metadata"]["generation"], 2);

    let mut with_status = got.clone();
    // The replication controller writes this status too; write without a precondition.
    with_status["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("resourceVersion");
    with_status["status"] = json!({"replicas": 4, "readyReplicas": 2});
    with_status["spec"]["replicas"] = json!(9);
    let (code, st) = call(
        client()
            .put(c.url(&format!("{rcs}/web/status")))
            .json(&with_status),
    )
    .await;
    assert_eq!(code, 200, "{st}");
    assert_eq!(st["status"]["readyReplicas"], 2);
    assert_eq!(
        st["spec"]["replicas"], 4,
        "status update must not change spec"
    );
}

#[tokio::test]
async fn binding_assigns_a_pod_once() {
    let c = TestCluster::api_only();
    create_pod(&c, "p", json!({})).await;
    let binding = json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "p"}, "target": {"kind": "Node", "name": "n1"}});
    let (code, _) = call(
        client()
            .post(c.url(&format!("{PODS}/p/binding")))
            .json(&binding),
    )
    .await;
    assert_eq!(code, 201);
    let (_, got) = call(client().get(c.url(&format!("{PODS}/p")))).await;
    assert_eq!(got["spec"]["nodeName"], "n1");
    let (code, _) = call(
        client()
            .post(c.url(&format!("{PODS}/p/binding")))
            .json(&binding),
    )
    .await;
    assert_eq!(code, 409);
}

#[tokio::test]
async fn delete_options_preconditions_and_propagation_are_checked() {
    let c = TestCluster::api_only();
    create_pod(&c, "p", json!({})).await;
    let url = c.url(&format!("{PODS}/p"));
    let (code, _) = call(
        client()
            .delete(&url)
            .json(&json!({"preconditions": {"uid": "nope"}})),
    )
    .await;
    assert_eq!(code, 409);
    let (code, _) = call(
        client()
            .delete(&url)
            .json(&json!({"propagationPolicy": "Sideways"})),
    )
    .await;
    assert_eq!(code, 400);
    let (code, _) = call(client().delete(&url).json(
        &json!({"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"}),
    ))
    .await;
    assert_eq!(code, 200);
}

#[tokio::test]
async fn deletecollection_removes_only_selected_objects() {
    let c = TestCluster::api_only();
    create_pod(&c, "a", json!({"del": "yes"})).await;
    create_pod(&c, "b", json!({"del": "yes"})).await;
    create_pod(&c, "keep", json!({})).await;
    let (code, _) = call(client().delete(c.url(&format!("{PODS}?labelSelector=del%3Dyes")))).await;
    assert_eq!(code, 200);
    let (_, list) = call(client().get(c.url(PODS))).await;
    let names: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["keep"]);
}

#[tokio::test]
async fn deleting_a_namespace_removes_its_objects_and_system_namespaces_stay() {
    let c = TestCluster::api_only();
    let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team"}});
    let (code, created) = call(client().post(c.url("/api/v1/namespaces")).json(&ns)).await;
    assert_eq!(code, 201);
    assert_eq!(created["status"]["phase"], "Active");
    let (code, _) = call(
        client()
            .post(c.url("/api/v1/namespaces/team/pods"))
            .json(&pod("x", json!({}))),
    )
    .await;
    assert_eq!(code, 201);
    let (code, deleting) = call(client().delete(c.url("/api/v1/namespaces/team"))).await;
    assert_eq!(code, 200);
    // Terminating until the namespace controller has emptied it; no new content meanwhile.
    if deleting["status"]["phase"] == "Terminating" {
        let (code, status) = call(
            client()
                .post(c.url("/api/v1/namespaces/team/pods"))
                .json(&pod("late", json!({}))),
        )
        .await;
        assert!(code == 403 || code == 404, "{code} {status}");
    }
    eventually(
        Duration::from_secs(20),
        "namespace team to be gone",
        || async {
            let (code, _) = call(client().get(c.url("/api/v1/namespaces/team"))).await;
            (code == 404).then_some(())
        },
    )
    .await;
    let (_, all) = call(client().get(c.url("/api/v1/pods"))).await;
    assert!(all["items"].as_array().unwrap().is_empty());
    let (code, status) = call(client().delete(c.url("/api/v1/namespaces/default"))).await;
    assert_eq!(code, 403, "{status}");
}

#[tokio::test]
async fn discovery_health_and_metrics_are_served() {
    let c = TestCluster::api_only();
    let (code, v) = call(client().get(c.url("/version"))).await;
    assert_eq!(code, 200);
    assert_eq!(v["major"], "1");
    let (_, api) = call(client().get(c.url("/api"))).await;
    assert_eq!(api["versions"], json!(["v1"]));
    let (_, res) = call(client().get(c.url("/api/v1"))).await;
    let shorts: Vec<String> = res["resources"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r["shortNames"].as_array().cloned().unwrap_or_default())
        .filter_map(|s| s.as_str().map(str::to_string))
        .collect();
    for s in ["po", "svc", "rc", "ns", "no", "ep", "quota", "ev"] {
        assert!(shorts.iter().any(|x| x == s), "missing short name {s}");
    }
    let (code, _) = call(client().get(c.url("/apis"))).await;
    assert_eq!(code, 200);
    let (code, doc) = call(
        client()
            .get(c.url("/openapi/v2"))
            .header("accept", "application/json"),
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(doc["swagger"], "2.0");
    for h in ["/healthz", "/readyz", "/livez"] {
        let resp = client().get(c.url(h)).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 200, "{h}");
    }
    call(client().get(c.url(PODS))).await;
    let text = client()
        .get(c.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains(r#"apiserver_request_total{code="200",resource="pods",verb="list"}"#),
        "{text}"
    );
    assert!(text.contains("skiff_store_commit_duration_seconds_bucket"));
    assert!(text.contains("skiff_store_commit_batch_size_bucket"));
    assert!(text.contains("apiserver_registered_watchers"));
}

#[tokio::test]
async fn concurrent_creates_all_commit_with_distinct_revisions() {
    let c = TestCluster::api_only();
    let mut tasks = Vec::new();
    for i in 0..64 {
        let url = c.url(PODS);
        tasks.push(tokio::spawn(async move {
            let (code, body) =
                call(client().post(url).json(&pod(&format!("c{i}"), json!({})))).await;
            assert_eq!(code, 201);
            body["metadata"]["resourceVersion"]
                .as_str()
                .unwrap()
                .parse::<u64>()
                .unwrap()
        }));
    }
    let mut revs = Vec::new();
    for t in tasks {
        revs.push(t.await.unwrap());
    }
    revs.sort();
    revs.dedup();
    assert_eq!(revs.len(), 64);
    let n = eventually(Duration::from_secs(5), "list of 64", || async {
        let (_, l) = call(client().get(c.url(PODS))).await;
        let n = l["items"].as_array().map(Vec::len).unwrap_or(0);
        (n == 64).then_some(n)
    })
    .await;
    assert_eq!(n, 64);
}

#[tokio::test]
async fn a_delete_without_preconditions_succeeds_while_others_keep_writing_the_object() {
    let c = TestCluster::api_only();
    let names: Vec<String> = (0..16).map(|i| format!("busy{i}")).collect();
    for n in &names {
        create_pod(&c, n, json!({})).await;
    }
    // A writer per pod patching its labels as fast as it can, as controllers and kubelets
    // do, until the pod is gone.
    let mut writers = Vec::new();
    for n in &names {
        let url = c.url(&format!("{PODS}/{n}"));
        writers.push(tokio::spawn(async move {
            for i in 0u64.. {
                let patch = json!({"metadata": {"labels": {"beat": i.to_string()}}});
                let (code, _) = call(
                    client()
                        .patch(&url)
                        .header("content-type", "application/merge-patch+json")
                        .json(&patch),
                )
                .await;
                if code == 404 {
                    return i;
                }
            }
            unreachable!()
        }));
    }
    // Let every writer get going before deleting.
    for n in &names {
        eventually(
            Duration::from_secs(10),
            "a writer's first patch",
            || async {
                let (_, p) = call(client().get(c.url(&format!("{PODS}/{n}")))).await;
                p["metadata"]["labels"]["beat"].is_string().then_some(())
            },
        )
        .await;
    }
    for n in &names {
        let (code, body) = call(
            client()
                .delete(c.url(&format!("{PODS}/{n}")))
                .json(&json!({"gracePeriodSeconds": 0})),
        )
        .await;
        assert_eq!(code, 200, "{n}: {body}");
    }
    for w in writers {
        assert!(w.await.unwrap() > 0);
    }
}

#[tokio::test]
async fn an_update_that_changes_nothing_writes_no_new_revision() {
    let c = TestCluster::api_only();
    let created = create_pod(&c, "same", json!({"app": "same"})).await;
    let rv = created["metadata"]["resourceVersion"].clone();
    // Put back exactly what was read, as `kubectl replace` of an unchanged file does.
    let (code, put) = call(client().put(c.url(&format!("{PODS}/same"))).json(&created)).await;
    assert_eq!(code, 200, "{put}");
    assert_eq!(put["metadata"]["resourceVersion"], rv);
    // A watch from that revision sees only the real change made afterwards.
    let resp = client()
        .get(c.url(&format!(
            "{PODS}?watch=true&resourceVersion={}",
            rv.as_str().unwrap()
        )))
        .send()
        .await
        .unwrap();
    let mut changed = created.clone();
    changed["metadata"]["labels"]["tier"] = json!("front");
    let (code, put) = call(client().put(c.url(&format!("{PODS}/same"))).json(&changed)).await;
    assert_eq!(code, 200, "{put}");
    assert_ne!(put["metadata"]["resourceVersion"], rv);
    let events = read_events(resp, 1).await;
    assert_eq!(events[0]["type"], "MODIFIED");
    assert_eq!(events[0]["object"]["metadata"]["labels"]["tier"], "front");
}
