//! Supervision: a store actor that panics is restarted by its supervisor; clients get a
//! retryable error meanwhile, then carry on, with nothing acknowledged lost.

use std::time::Duration;

use serde_json::json;
use skiff_actors::store::InjectPanic;
use skiff_integration::{call, client, eventually, pod, TestCluster};

const PODS: &str = "/api/v1/namespaces/default/pods";

#[tokio::test]
async fn panicking_store_is_restarted_and_serves_again() {
    let c = TestCluster::start();
    for i in 0..5 {
        let (code, _) = call(
            client()
                .post(c.url(PODS))
                .json(&pod(&format!("before-{i}"), json!({}))),
        )
        .await;
        assert_eq!(code, 201);
    }
    // A watch open across the fault is ended (clients re-watch), not left hanging.
    let watch = client()
        .get(c.url(&format!("{PODS}?watch=true")))
        .send()
        .await
        .unwrap();

    let reply = c
        .store
        .addr
        .send(InjectPanic)
        .await
        .expect("mailbox still open");
    assert!(
        reply.is_err(),
        "the injected panic must surface as an error"
    );

    // The actor comes back: writes succeed again (retrying on 503 while it restarts).
    let after = eventually(
        Duration::from_secs(10),
        "store to accept writes again",
        || async {
            let (code, body) =
                call(client().post(c.url(PODS)).json(&pod("after", json!({})))).await;
            match code {
                201 => Some(body),
                503 => None,
                other => panic!("unexpected {other}: {body}"),
            }
        },
    )
    .await;
    assert_eq!(after["metadata"]["name"], "after");

    let (_, list) = call(client().get(c.url(PODS))).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 6);

    let ended = tokio::time::timeout(Duration::from_secs(10), watch.bytes()).await;
    assert!(
        ended.is_ok(),
        "watch stream should end after the store restarts"
    );

    // A second fault is survived as well: the supervisor keeps restarting it.
    assert!(c
        .store
        .addr
        .send(InjectPanic)
        .await
        .expect("mailbox open")
        .is_err());
    eventually(Duration::from_secs(10), "second recovery", || async {
        let (code, _) = call(client().get(c.url(PODS))).await;
        let (wcode, _) = call(client().post(c.url(PODS)).json(&pod("again", json!({})))).await;
        (code == 200 && wcode == 201).then_some(())
    })
    .await;
}
