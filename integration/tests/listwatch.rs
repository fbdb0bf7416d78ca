//! List and watch semantics informers rely on, over real HTTP against the real actor
//! system on RocksDB: bookmarks, watch-list, lists at a revision, continue tokens that
//! page one revision (410 once compacted), 410 for a watch from a compacted revision, a
//! clear error for one from the future, and watch history that survives a restart.

use std::collections::BTreeSet;
use std::time::Duration;

use futures::StreamExt;
use serde_json::{json, Value};
use skiff_actors::api::protobuf;
use skiff_actors::store::Compact;
use skiff_integration::{call, client, pod, python_client, SkiffProcess, TestCluster};

const PODS: &str = "/api/v1/namespaces/default/pods";

/// An API-only cluster whose watchers get a bookmark every second.
fn cluster() -> TestCluster {
    TestCluster::start_with(|cfg| {
        cfg.scheduler.enabled = false;
        cfg.controllers.enabled = vec!["namespace".into(), "garbagecollector".into()];
        cfg.gateway.watch_bookmark_seconds = 1;
    })
}

fn rv_of(v: &Value) -> u64 {
    v["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no resourceVersion in {v}"))
}

async fn create(c: &TestCluster, name: &str, labels: Value) -> Value {
    let (code, body) = call(client().post(c.url(PODS)).json(&pod(name, labels))).await;
    assert_eq!(code, 201, "{body}");
    body
}

/// Start a watch and read its newline-delimited events until `done` says so, the
/// stream ends, or `timeout` passes (a failure).
async fn watch_until(
    url: String,
    timeout: Duration,
    mut done: impl FnMut(&[Value]) -> bool,
) -> (u16, Vec<Value>) {
    let resp = client().get(url).send().await.expect("watch");
    let code = resp.status().as_u16();
    let mut bytes = resp.bytes_stream();
    let (mut buf, mut events) = (Vec::new(), Vec::new());
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=pos).collect();
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            events.push(serde_json::from_slice(&line).expect("a JSON event"));
            if done(&events) {
                return (code, events);
            }
        }
        match tokio::time::timeout_at(deadline, bytes.next()).await {
            Ok(Some(Ok(chunk))) => buf.extend_from_slice(&chunk),
            Ok(_) => return (code, events),
            Err(_) => panic!("timed out waiting on the watch; got {events:?}"),
        }
    }
}

fn has_type(events: &[Value], ty: &str) -> bool {
    events.iter().any(|e| e["type"] == ty)
}

#[tokio::test]
async fn bookmarks_arrive_with_the_revision_the_watch_is_current_to() {
    let c = cluster();
    let first = create(&c, "a", json!({})).await;
    let url = c.url(&format!(
        "{PODS}?watch=true&allowWatchBookmarks=true&timeoutSeconds=30&resourceVersion={}",
        rv_of(&first)
    ));
    let watching = tokio::spawn(watch_until(url, Duration::from_secs(20), |evs| {
        has_type(evs, "ADDED") && has_type(evs, "BOOKMARK")
    }));
    let second = create(&c, "b", json!({})).await;
    // A write elsewhere moves the revision on: the bookmark reports it too.
    let (code, ns) = call(
        client()
            .post(c.url("/api/v1/namespaces"))
            .json(&json!({"metadata": {"name": "elsewhere"}})),
    )
    .await;
    assert_eq!(code, 201, "{ns}");
    let (code, events) = watching.await.expect("watch task");
    assert_eq!(code, 200);
    assert_eq!(events[0]["type"], "ADDED");
    assert_eq!(events[0]["object"]["metadata"]["name"], "b");
    let bookmark = events.iter().find(|e| e["type"] == "BOOKMARK").unwrap();
    let obj = &bookmark["object"];
    assert_eq!(
        (obj["kind"].as_str(), obj["apiVersion"].as_str()),
        (Some("Pod"), Some("v1"))
    );
    assert_eq!(
        obj["metadata"].as_object().map(|m| m.len()),
        Some(1),
        "{obj}"
    );
    assert!(rv_of(obj) >= rv_of(&second));

    // Without allowWatchBookmarks no bookmark comes, however long the watch is open.
    let url = c.url(&format!(
        "{PODS}?watch=true&timeoutSeconds=3&resourceVersion={}",
        rv_of(&second)
    ));
    let (_, events) = watch_until(url, Duration::from_secs(10), |_| false).await;
    assert!(!has_type(&events, "BOOKMARK"), "{events:?}");
}

#[tokio::test]
async fn protobuf_watchers_get_bookmarks_as_watch_event_frames() {
    let c = cluster();
    let p = create(&c, "a", json!({})).await;
    let resp = client()
        .get(c.url(&format!(
            "{PODS}?watch=true&allowWatchBookmarks=true&timeoutSeconds=10&resourceVersion={}",
            rv_of(&p)
        )))
        .header("accept", "application/vnd.kubernetes.protobuf;stream=watch")
        .send()
        .await
        .expect("watch");
    assert_eq!(resp.status().as_u16(), 200);
    let mut bytes = resp.bytes_stream();
    let mut buf = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(8);
    let (kind, obj) = loop {
        if let Some((kind, obj, used)) = protobuf::read_watch_frame(&buf).expect("a frame") {
            buf.drain(..used);
            break (kind, obj);
        }
        match tokio::time::timeout_at(deadline, bytes.next()).await {
            Ok(Some(Ok(chunk))) => buf.extend_from_slice(&chunk),
            other => panic!("no bookmark frame: {:?}", other.map(|o| o.is_some())),
        }
    };
    assert_eq!(kind, "BOOKMARK");
    assert_eq!(obj["kind"], "Pod");
    assert!(rv_of(&obj) >= rv_of(&p));
}

#[tokio::test]
async fn watch_list_sends_the_state_then_the_annotated_bookmark() {
    let c = cluster();
    for name in ["a", "b", "c"] {
        create(
            &c,
            name,
            json!({"app": if name == "c" { "other" } else { "web" }}),
        )
        .await;
    }
    let (_, list) = call(client().get(c.url(PODS))).await;
    let listed = rv_of(&list);
    let is_end = |e: &Value| {
        e["type"] == "BOOKMARK"
            && e["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"] == "true"
    };
    for rv in ["", &listed.to_string()] {
        let url = c.url(&format!(
            "{PODS}?watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true&labelSelector=app%3Dweb&timeoutSeconds=20&resourceVersion={rv}"
        ));
        let (code, events) =
            watch_until(url, Duration::from_secs(15), |evs| evs.iter().any(is_end)).await;
        assert_eq!(code, 200);
        let names: Vec<&str> = events
            .iter()
            .take_while(|e| e["type"] == "ADDED")
            .filter_map(|e| e["object"]["metadata"]["name"].as_str())
            .collect();
        assert_eq!(names, ["a", "b"], "{events:?}");
        let end = events.last().unwrap();
        assert!(is_end(end), "{events:?}");
        assert!(rv_of(&end["object"]) >= listed);
    }

    // Changes after the initial state follow it.
    let url = c.url(&format!(
        "{PODS}?watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true&timeoutSeconds=20"
    ));
    // "late" is written once the initial state has ended, so it must follow the bookmark.
    let (ended, initial_state_ended) = tokio::sync::oneshot::channel::<()>();
    let mut ended = Some(ended);
    let watching = tokio::spawn(watch_until(url, Duration::from_secs(15), move |evs| {
        if evs.iter().any(is_end) {
            if let Some(tx) = ended.take() {
                let _ = tx.send(());
            }
        }
        evs.iter()
            .any(|e| e["object"]["metadata"]["name"] == "late")
    }));
    initial_state_ended.await.expect("the initial state ends");
    create(&c, "late", json!({})).await;
    let (_, events) = watching.await.expect("watch task");
    let end = events.iter().position(is_end).expect("the end bookmark");
    let late = events
        .iter()
        .position(|e| e["object"]["metadata"]["name"] == "late")
        .unwrap();
    assert!(late > end);

    // Invalid combinations are refused as kube-apiserver refuses them.
    let (code, status) =
        call(client().get(c.url(&format!("{PODS}?watch=true&sendInitialEvents=true")))).await;
    assert_eq!(code, 422, "{status}");
    assert_eq!(
        status["message"],
        "ListOptions.meta.k8s.io \"\" is invalid: resourceVersionMatch: Forbidden: sendInitialEvents requires setting resourceVersionMatch to NotOlderThan"
    );
    let (code, _) = call(client().get(c.url(&format!("{PODS}?sendInitialEvents=true")))).await;
    assert_eq!(code, 422);
}

#[tokio::test]
async fn paging_under_concurrent_writes_returns_one_revision() {
    let c = cluster();
    for i in 0..23 {
        create(&c, &format!("p{i:02}"), json!({"gen": "first"})).await;
    }
    let (code, first) = call(client().get(c.url(&format!("{PODS}?limit=5")))).await;
    assert_eq!(code, 200, "{first}");
    let rev = rv_of(&first);
    assert_eq!(first["metadata"]["remainingItemCount"], 18);
    let mut names: Vec<String> = Vec::new();
    let mut page = first;
    let mut pages = 0;
    loop {
        pages += 1;
        assert_eq!(
            rv_of(&page),
            rev,
            "every page is read at the first page's revision"
        );
        for item in page["items"].as_array().unwrap() {
            assert!(rv_of(item) <= rev);
            assert_eq!(item["metadata"]["labels"]["gen"], "first", "{item}");
            names.push(item["metadata"]["name"].as_str().unwrap().to_string());
        }
        // Writes between pages: new pods, a deleted one, a relabelled one.
        create(&c, &format!("new{pages}"), json!({"gen": "second"})).await;
        let victim = format!("p{:02}", 22 - pages);
        let (code, _) = call(client().delete(c.url(&format!("{PODS}/{victim}")))).await;
        assert_eq!(code, 200);
        let (code, _) = call(
            client()
                .patch(c.url(&format!("{PODS}/p{:02}", 10 + pages)))
                .header("content-type", "application/merge-patch+json")
                .body(r#"{"metadata":{"labels":{"gen":"second"}}}"#),
        )
        .await;
        assert_eq!(code, 200);
        let Some(token) = page["metadata"]["continue"].as_str().map(str::to_string) else {
            break;
        };
        let (code, next) =
            call(client().get(c.url(&format!("{PODS}?limit=5&continue={token}")))).await;
        assert_eq!(code, 200, "{next}");
        page = next;
    }
    let expected: Vec<String> = (0..23).map(|i| format!("p{i:02}")).collect();
    assert_eq!(names, expected);
    assert_eq!(pages, 5);

    // A list at exactly that revision shows the same; a whole list now shows the writes.
    let (code, exact) = call(client().get(c.url(&format!(
        "{PODS}?resourceVersion={rev}&resourceVersionMatch=Exact"
    ))))
    .await;
    assert_eq!(code, 200, "{exact}");
    assert_eq!(exact["items"].as_array().unwrap().len(), 23);
    assert_eq!(rv_of(&exact), rev);
    let (_, now) = call(client().get(c.url(PODS))).await;
    assert!(now["items"]
        .as_array()
        .unwrap()
        .iter()
        .any(|i| i["metadata"]["name"] == "new1"));
}

#[tokio::test]
async fn a_continue_token_of_a_compacted_revision_is_gone() {
    let c = cluster();
    for i in 0..6 {
        create(&c, &format!("p{i}"), json!({})).await;
    }
    let (_, first) = call(client().get(c.url(&format!("{PODS}?limit=2")))).await;
    let token = first["metadata"]["continue"].as_str().unwrap().to_string();
    let old_rev = rv_of(&first);
    create(&c, "later", json!({})).await;
    c.store
        .addr
        .send(Compact { keep: 0 })
        .await
        .expect("compact");

    let (code, status) =
        call(client().get(c.url(&format!("{PODS}?limit=2&continue={token}")))).await;
    assert_eq!(code, 410, "{status}");
    assert_eq!(status["reason"], "Expired");
    assert_eq!(
        status["message"],
        "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list."
    );
    // Its inconsistent token goes on from the same place at the latest revision.
    let inconsistent = status["metadata"]["continue"].as_str().expect("a token");
    let (code, rest) =
        call(client().get(c.url(&format!("{PODS}?limit=10&continue={inconsistent}")))).await;
    assert_eq!(code, 200, "{rest}");
    let names: Vec<&str> = rest["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i["metadata"]["name"].as_str())
        .collect();
    assert_eq!(names, ["p2", "p3", "p4", "p5"]);
    assert!(rv_of(&rest) > old_rev);

    // An exact list at the compacted revision is gone too.
    let (code, status) = call(client().get(c.url(&format!(
        "{PODS}?resourceVersion={old_rev}&resourceVersionMatch=Exact"
    ))))
    .await;
    assert_eq!(code, 410);
    assert_eq!(
        status["message"],
        "The resourceVersion for the provided list is too old."
    );
}

#[tokio::test]
async fn reads_at_a_revision_not_reached_wait_then_answer_too_large() {
    let c = cluster();
    let p = create(&c, "a", json!({})).await;
    let future = rv_of(&p) + 1000;
    let started = std::time::Instant::now();
    let (code, status) = call(client().get(c.url(&format!(
        "{PODS}?resourceVersion={future}&resourceVersionMatch=NotOlderThan"
    ))))
    .await;
    assert_eq!(code, 504, "{status}");
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "it waited for the revision"
    );
    assert_eq!(status["reason"], "Timeout");
    assert!(status["message"].as_str().unwrap().starts_with(&format!(
        "Timeout: Too large resource version: {future}, current: "
    )));
    assert_eq!(
        status["details"]["causes"][0]["reason"],
        "ResourceVersionTooLarge"
    );
    let (code, _) = call(client().get(c.url(&format!("{PODS}/a?resourceVersion={future}")))).await;
    assert_eq!(code, 504);
    // A revision reached while waiting is served.
    let next = rv_of(&p) + 1;
    let waiting = tokio::spawn({
        let url = c.url(&format!("{PODS}/a?resourceVersion={next}"));
        async move { call(client().get(url)).await.0 }
    });
    // It is still waiting for the revision when that revision is written.
    let mut waiting = waiting;
    let early = tokio::time::timeout(Duration::from_millis(200), &mut waiting).await;
    assert!(
        early.is_err(),
        "answered before its revision existed: {early:?}"
    );
    create(&c, "b", json!({})).await;
    assert_eq!(waiting.await.unwrap(), 200);

    // A watch from the future ends with one ERROR event saying so.
    let url = c.url(&format!("{PODS}?watch=true&resourceVersion={future}"));
    let (code, events) = watch_until(url, Duration::from_secs(10), |_| false).await;
    assert_eq!(code, 200);
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["type"], "ERROR");
    assert_eq!(events[0]["object"]["code"], 504);

    // Invalid combinations get kube-apiserver's 422 or 400.
    for (query, code) in [
        ("resourceVersionMatch=Exact", 422),
        ("resourceVersion=0&resourceVersionMatch=Exact", 422),
        ("resourceVersion=3&resourceVersionMatch=Sometime", 422),
        ("resourceVersion=3&continue=abc", 400),
        ("continue=abc", 400),
    ] {
        let (got, status) = call(client().get(c.url(&format!("{PODS}?{query}")))).await;
        assert_eq!(got, code, "{query}: {status}");
    }
}

#[tokio::test]
async fn a_watch_from_a_compacted_revision_gets_410_in_the_stream() {
    let c = cluster();
    let first = create(&c, "a", json!({})).await;
    create(&c, "b", json!({})).await;
    c.store
        .addr
        .send(Compact { keep: 0 })
        .await
        .expect("compact");
    let oldest = c.store.oldest_revision();
    let rv = rv_of(&first);
    let url = c.url(&format!("{PODS}?watch=true&resourceVersion={rv}"));
    let (code, events) = watch_until(url, Duration::from_secs(10), |_| false).await;
    assert_eq!(
        code, 200,
        "kube-apiserver answers a valid watch request 200"
    );
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["type"], "ERROR");
    let status = &events[0]["object"];
    assert_eq!(
        (status["code"].as_u64(), status["reason"].as_str()),
        (Some(410), Some("Expired"))
    );
    assert_eq!(
        status["message"],
        format!("too old resource version: {rv} ({oldest})")
    );
}

#[tokio::test]
async fn a_restart_does_not_force_a_relist_of_a_watch_in_the_history_window() {
    let c = cluster();
    let first = create(&c, "a", json!({})).await;
    let since = rv_of(&first);
    create(&c, "b", json!({})).await;
    let (code, _) = call(client().delete(c.url(&format!("{PODS}/a")))).await;
    assert_eq!(code, 200);
    let (_, page) = call(client().get(c.url(&format!("{PODS}?limit=1")))).await;
    let token = page["metadata"]["continue"].as_str().map(str::to_string);
    let c = c.restart();

    // Watching from before the restart replays what happened since, in order.
    let url = c.url(&format!(
        "{PODS}?watch=true&timeoutSeconds=20&resourceVersion={since}"
    ));
    // A write after `since` is replayed whether it lands before or after the watch opens.
    let watching = tokio::spawn(watch_until(url, Duration::from_secs(15), |evs| {
        evs.iter()
            .any(|e| e["object"]["metadata"]["name"] == "after")
    }));
    create(&c, "after", json!({})).await;
    let (code, events) = watching.await.expect("watch task");
    assert_eq!(code, 200);
    let seen: Vec<(String, String)> = events
        .iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap_or_default().to_string(),
                e["object"]["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .collect();
    let expected: Vec<(String, String)> = [("ADDED", "b"), ("DELETED", "a"), ("ADDED", "after")]
        .iter()
        .map(|(t, n)| (t.to_string(), n.to_string()))
        .collect();
    assert_eq!(seen, expected);
    let revs: Vec<u64> = events.iter().map(|e| rv_of(&e["object"])).collect();
    assert!(revs.windows(2).all(|w| w[0] < w[1]), "{revs:?}");

    // A page started before the restart continues at its revision.
    if let Some(token) = token {
        let (code, rest) =
            call(client().get(c.url(&format!("{PODS}?limit=5&continue={token}")))).await;
        assert_eq!(code, 200, "{rest}");
        assert_eq!(rv_of(&rest), rv_of(&page));
    }
    assert!(
        c.store.oldest_revision() < since,
        "the history came back from disk"
    );
}

#[tokio::test]
async fn the_history_survives_a_kill_9_like_the_objects() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = SkiffProcess::start(dir.path());
    let url = format!("{}{PODS}", server.url);
    let mut revs = Vec::new();
    for i in 0..5 {
        let (code, p) = call(client().post(&url).json(&pod(&format!("k{i}"), json!({})))).await;
        assert_eq!(code, 201, "{p}");
        revs.push(rv_of(&p));
    }
    server.kill9();
    let server = SkiffProcess::start(dir.path());
    let watch = format!(
        "{}{PODS}?watch=true&timeoutSeconds=10&resourceVersion={}",
        server.url, revs[0]
    );
    // The scheduler also writes (it marks the pods unschedulable): count the creates.
    let added = |evs: &[Value]| evs.iter().filter(|e| e["type"] == "ADDED").count();
    let (code, events) = watch_until(watch, Duration::from_secs(15), |evs| added(evs) == 4).await;
    assert_eq!(code, 200);
    assert!(!has_type(&events, "ERROR"), "{events:?}");
    let created: Vec<(&str, u64)> = events
        .iter()
        .filter(|e| e["type"] == "ADDED")
        .map(|e| {
            (
                e["object"]["metadata"]["name"].as_str().unwrap_or("?"),
                rv_of(&e["object"]),
            )
        })
        .collect();
    let expected: Vec<(String, u64)> = (1..5).map(|i| (format!("k{i}"), revs[i])).collect();
    let expected: Vec<(&str, u64)> = expected.iter().map(|(n, r)| (n.as_str(), *r)).collect();
    assert_eq!(created, expected);
    let order: Vec<u64> = events.iter().map(|e| rv_of(&e["object"])).collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{order:?}");
}

const PYTHON_INFORMER: &str = r#"
import sys
from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

config.load_kube_config(config_file=sys.argv[1])
v1 = client.CoreV1Api()
mode, ns = sys.argv[2], "default"

def pod(name):
    return client.V1Pod(metadata=client.V1ObjectMeta(name=name),
                        spec=client.V1PodSpec(containers=[client.V1Container(name="c", image="busybox")]))

if mode == "informer":
    v1.create_namespaced_pod(ns, pod("py-a"))
    listed = v1.list_namespaced_pod(ns)
    b = v1.create_namespaced_pod(ns, pod("py-b"))
    w = watch.Watch()
    seen, bookmark = [], None
    for ev in w.stream(v1.list_namespaced_pod, ns, resource_version=listed.metadata.resource_version,
                       allow_watch_bookmarks=True, timeout_seconds=20):
        if ev["type"] == "BOOKMARK":
            bookmark = ev["raw_object"]["metadata"]["resourceVersion"]
            w.stop()
        else:
            seen.append((ev["type"], ev["object"].metadata.name))
    assert seen == [("ADDED", "py-b")], seen
    assert bookmark is not None and w.resource_version == bookmark, (bookmark, w.resource_version)
    assert int(bookmark) >= int(b.metadata.resource_version), bookmark

    # The watch-list an informer starts with: the state, then the annotated bookmark.
    w, names, end = watch.Watch(), [], None
    for ev in w.stream(v1.list_namespaced_pod, ns, send_initial_events=True,
                       resource_version_match="NotOlderThan", allow_watch_bookmarks=True,
                       timeout_seconds=20):
        if ev["type"] == "BOOKMARK":
            annotations = ev["raw_object"]["metadata"].get("annotations") or {}
            if annotations.get("k8s.io/initial-events-end") == "true":
                end = ev["raw_object"]["metadata"]["resourceVersion"]
                w.stop()
        else:
            names.append(ev["object"].metadata.name)
    assert sorted(names) == ["py-a", "py-b"], names
    assert end is not None
    print(bookmark)
elif mode == "resume":
    # After the restart: resume from the bookmark, no relist.
    w, seen = watch.Watch(), []
    for ev in w.stream(v1.list_namespaced_pod, ns, resource_version=sys.argv[3],
                       allow_watch_bookmarks=True, timeout_seconds=20):
        if ev["type"] != "BOOKMARK":
            seen.append((ev["type"], ev["object"].metadata.name))
            if ev["object"].metadata.name == "py-c":
                w.stop()
    assert seen == [("ADDED", "py-c")], seen
    print("resumed")
elif mode == "expired":
    # A compacted revision: the watch raises 410 and the informer relists.
    try:
        for ev in watch.Watch().stream(v1.list_namespaced_pod, ns, resource_version=sys.argv[3],
                                       timeout_seconds=20):
            raise AssertionError("an event from a compacted revision: %s" % ev["type"])
        raise AssertionError("the watch ended without an error")
    except ApiException as e:
        assert e.status == 410, e
    print(len(v1.list_namespaced_pod(ns).items))
"#;

#[tokio::test]
async fn the_official_python_clients_informer_watch_takes_bookmarks_and_resumes_after_restart() {
    let c = cluster();
    let kubeconfig = c.kubeconfig.clone();
    let bookmark = tokio::task::spawn_blocking(move || {
        python_client(PYTHON_INFORMER, &kubeconfig, &["informer"])
    })
    .await
    .unwrap();
    assert!(bookmark.parse::<u64>().is_ok(), "{bookmark}");
    create(&c, "py-c", json!({})).await;
    let c = c.restart();
    let kubeconfig = c.kubeconfig.clone();
    let resumed = tokio::task::spawn_blocking({
        let bookmark = bookmark.clone();
        move || python_client(PYTHON_INFORMER, &kubeconfig, &["resume", &bookmark])
    })
    .await
    .unwrap();
    assert_eq!(resumed, "resumed");

    c.store
        .addr
        .send(Compact { keep: 0 })
        .await
        .expect("compact");
    let kubeconfig = c.kubeconfig.clone();
    let relisted = tokio::task::spawn_blocking(move || {
        python_client(PYTHON_INFORMER, &kubeconfig, &["expired", &bookmark])
    })
    .await
    .unwrap();
    assert_eq!(relisted, "3");
    let names: BTreeSet<String> = call(client().get(c.url(PODS))).await.1["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i["metadata"]["name"].as_str().map(str::to_string))
        .collect();
    assert_eq!(names.len(), 3);
}
