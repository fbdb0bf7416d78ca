//! Durability under SIGKILL: every create the server acknowledged survives a kill -9 in
//! the middle of a stream of writes, and the revision resumes above it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use skiff_integration::{call, client, eventually, pod, SkiffProcess};

#[tokio::test]
async fn every_acknowledged_write_survives_sigkill_mid_stream() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = SkiffProcess::start(dir.path());
    let url = format!("{}/api/v1/namespaces/default/pods", server.url);
    let acked: Arc<Mutex<Vec<(String, u64)>>> = Arc::default();
    let mut writers = Vec::new();
    for w in 0..16 {
        let (url, acked) = (url.clone(), acked.clone());
        writers.push(tokio::spawn(async move {
            let client = client();
            for i in 0.. {
                let name = format!("w{w}-{i}");
                let resp = client.post(&url).json(&pod(&name, json!({}))).send().await;
                let Ok(resp) = resp else { return };
                if resp.status().as_u16() != 201 {
                    return;
                }
                let Ok(body) = resp.json::<serde_json::Value>().await else {
                    return;
                };
                let rv = body["metadata"]["resourceVersion"]
                    .as_str()
                    .unwrap_or("0")
                    .parse()
                    .unwrap_or(0);
                acked.lock().unwrap().push((name, rv));
            }
        }));
    }
    // Let a good number of writes through, then kill the server while writes are in flight.
    eventually(
        Duration::from_secs(60),
        "400 acknowledged writes",
        || async { (acked.lock().unwrap().len() >= 400).then_some(()) },
    )
    .await;
    server.kill9();
    for w in writers {
        let _ = w.await;
    }
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= 400);

    let server = SkiffProcess::start(dir.path());
    let (code, list) =
        call(client().get(format!("{}/api/v1/namespaces/default/pods", server.url))).await;
    assert_eq!(code, 200);
    let present: std::collections::HashSet<String> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    let lost: Vec<&String> = acked
        .iter()
        .map(|(n, _)| n)
        .filter(|n| !present.contains(*n))
        .collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged writes lost, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );

    let max_rv = acked.iter().map(|(_, rv)| *rv).max().unwrap();
    let (code, next) = call(
        client()
            .post(format!("{}/api/v1/namespaces/default/pods", server.url))
            .json(&pod("after-crash", json!({}))),
    )
    .await;
    assert_eq!(code, 201);
    let next_rv: u64 = next["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        next_rv > max_rv,
        "revision went back: {next_rv} <= {max_rv}"
    );
}
