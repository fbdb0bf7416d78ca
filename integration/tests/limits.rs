//! Request limits over real HTTP: the in-flight caps answer 429 with Retry-After while
//! other clients are still served, one client's share, the watch cap, the per-client
//! rate, and slow clients cut off. Requests are held in flight deterministically by
//! sending their head and never finishing their body.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use skiff_integration::{call, client, eventually, pod, TestCluster};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const PODS: &str = "/api/v1/namespaces/default/pods";

fn host_of(c: &TestCluster) -> String {
    c.url.trim_start_matches("http://").to_string()
}

/// A client whose connections come from another loopback address: another client, as
/// the limits see it on the insecure path.
fn client_from(ip: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(ip.parse::<IpAddr>().expect("ip"))
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

/// A POST whose body never finishes arriving: it holds an in-flight slot until dropped.
async fn held_post(c: &TestCluster) -> TcpStream {
    let mut s = TcpStream::connect(host_of(c)).await.expect("connect");
    let head = format!(
        "POST {PODS} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{"
    );
    s.write_all(head.as_bytes()).await.expect("write");
    s
}

/// A mutating request that is harmless when admitted (400: not JSON): its code says
/// whether the limits let it through.
async fn probe(http: &reqwest::Client, c: &TestCluster) -> (u16, Option<String>, Value) {
    let resp = http
        .post(c.url(PODS))
        .header("content-type", "application/json")
        .body("not json")
        .send()
        .await
        .expect("probe answered");
    let code = resp.status().as_u16();
    let retry = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = resp.json::<Value>().await.unwrap_or(Value::Null);
    (code, retry, body)
}

#[tokio::test]
async fn a_burst_beyond_the_in_flight_cap_gets_429_while_others_are_served() {
    let c = TestCluster::start_with(|cfg| {
        cfg.scheduler.enabled = false;
        cfg.controllers.enabled = vec![];
        cfg.gateway.max_mutating_requests_inflight = 2;
        cfg.gateway.max_inflight_per_client = 0;
    });
    let held = [held_post(&c).await, held_post(&c).await];
    let (retry, status) = eventually(Duration::from_secs(30), "the cap to be full", || async {
        match probe(&client(), &c).await {
            (429, retry, body) => Some((retry, body)),
            (code, _, body) => {
                eprintln!("probe: {code} {body}");
                None
            }
        }
    })
    .await;
    assert_eq!(retry.as_deref(), Some("1"));
    assert_eq!(status["kind"], "Status");
    assert_eq!(status["reason"], "TooManyRequests");
    assert_eq!(status["code"], 429);
    assert_eq!(
        status["message"],
        "Too many requests, please try again later."
    );
    // Reads have their own cap: the server still answers everyone else.
    for path in [PODS, "/api/v1/namespaces", "/healthz"] {
        let resp = client_from("127.0.0.2")
            .get(c.url(path))
            .send()
            .await
            .expect("answered");
        assert_eq!(resp.status().as_u16(), 200, "{path}");
    }
    drop(held);
    eventually(Duration::from_secs(10), "the slots to be freed", || async {
        (probe(&client(), &c).await.0 == 400).then_some(())
    })
    .await;
    let (code, body) = call(client().post(c.url(PODS)).json(&pod("after", json!({})))).await;
    assert_eq!(code, 201, "{body}");
}

#[tokio::test]
async fn one_client_cannot_take_more_than_its_share() {
    let c = TestCluster::start_with(|cfg| {
        cfg.scheduler.enabled = false;
        cfg.controllers.enabled = vec![];
        cfg.gateway.max_inflight_per_client = 2;
    });
    let _held = [held_post(&c).await, held_post(&c).await];
    // As long a deadline as the cap test's: on a loaded machine the held requests' heads
    // can take a while to be read.
    eventually(
        Duration::from_secs(30),
        "the client's share to be used",
        || async { (probe(&client(), &c).await.0 == 429).then_some(()) },
    )
    .await;
    // Another client (another address) still writes.
    let (code, body) = call(
        client_from("127.0.0.2")
            .post(c.url(PODS))
            .json(&pod("other", json!({}))),
    )
    .await;
    assert_eq!(code, 201, "{body}");
}

async fn open_watch(http: &reqwest::Client, c: &TestCluster) -> reqwest::Response {
    http.get(c.url(&format!("{PODS}?watch=true")))
        .send()
        .await
        .expect("watch answered")
}

#[tokio::test]
async fn watches_per_client_are_capped_and_freed_when_closed() {
    let c = TestCluster::start_with(|cfg| {
        cfg.scheduler.enabled = false;
        cfg.controllers.enabled = vec![];
        cfg.gateway.max_watches_per_client = 2;
    });
    let http = client();
    let first = open_watch(&http, &c).await;
    let second = open_watch(&http, &c).await;
    assert_eq!(
        (first.status().as_u16(), second.status().as_u16()),
        (200, 200)
    );
    let third = open_watch(&http, &c).await;
    assert_eq!(third.status().as_u16(), 429);
    assert_eq!(
        third
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("1")
    );
    let status: Value = third.json().await.expect("status");
    assert_eq!(status["reason"], "TooManyRequests");
    assert!(status["message"]
        .as_str()
        .is_some_and(|m| m.starts_with("Too many watches")));
    // Watches are not requests in flight: plain requests still go through.
    let (code, _) = call(http.get(c.url(PODS))).await;
    assert_eq!(code, 200);
    // Another client has its own watches.
    let other = open_watch(&client_from("127.0.0.2"), &c).await;
    assert_eq!(other.status().as_u16(), 200);
    // A closed watch is noticed when the server next writes to it (an event, or the
    // end of its timeout): make events until its slot comes back.
    drop(first);
    let mut n = 0;
    let again = eventually(Duration::from_secs(10), "a watch slot to be freed", || {
        n += 1;
        let (http, c, name) = (http.clone(), &c, format!("wake-{n}"));
        async move {
            let (code, _) = call(http.post(c.url(PODS)).json(&pod(&name, json!({})))).await;
            assert_eq!(code, 201);
            let w = open_watch(&http, c).await;
            (w.status().as_u16() == 200).then_some(w)
        }
    })
    .await;
    drop((again, second, other));
}

#[tokio::test]
async fn a_client_over_its_rate_waits_while_others_are_served() {
    let c = TestCluster::start_with(|cfg| {
        cfg.scheduler.enabled = false;
        cfg.controllers.enabled = vec![];
        cfg.gateway.client_qps = 0.5;
        cfg.gateway.client_burst = 3;
    });
    let http = client();
    for _ in 0..3 {
        let (code, _) = call(http.get(c.url(PODS))).await;
        assert_eq!(code, 200);
    }
    let resp = http.get(c.url(PODS)).send().await.expect("answered");
    assert_eq!(resp.status().as_u16(), 429);
    // At half a token a second, the next one is two seconds away.
    assert_eq!(
        resp.headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("2")
    );
    let (code, _) = call(client_from("127.0.0.2").get(c.url(PODS))).await;
    assert_eq!(code, 200);
}

#[tokio::test]
async fn a_client_dribbling_its_headers_is_cut_off_while_others_are_served() {
    let c = TestCluster::start_with(|cfg| {
        cfg.scheduler.enabled = false;
        cfg.controllers.enabled = vec![];
        cfg.gateway.client_request_timeout_ms = 500;
    });
    let stream = TcpStream::connect(host_of(&c)).await.expect("connect");
    let (mut rd, mut wr) = stream.into_split();
    let started = Instant::now();
    let dribble = tokio::spawn(async move {
        let _ = wr
            .write_all(b"GET /api/v1/namespaces HTTP/1.1\r\nHost: x\r\n")
            .await;
        // One header byte every 100 ms: never a complete head.
        for b in b"X-Slow: ".iter().cycle().take(600) {
            if wr.write_all(&[*b]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let closed = tokio::spawn(async move {
        let mut answer = Vec::new();
        let _ = rd.read_to_end(&mut answer).await;
        String::from_utf8_lossy(&answer).to_string()
    });
    // Meanwhile every other request is answered.
    while !closed.is_finished() && started.elapsed() < Duration::from_secs(10) {
        let (code, _) = call(client().get(c.url("/api/v1/namespaces"))).await;
        assert_eq!(code, 200);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let answer = closed.await.expect("reader");
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "slow client held its connection for {took:?}"
    );
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "{answer:?}"
    );
    dribble.abort();
}

#[tokio::test]
async fn a_body_that_does_not_arrive_in_time_gets_408() {
    let c = TestCluster::start_with(|cfg| {
        cfg.scheduler.enabled = false;
        cfg.controllers.enabled = vec![];
        cfg.gateway.request_body_timeout_seconds = 1;
    });
    let started = Instant::now();
    let mut s = held_post(&c).await;
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        let mut buf = [0u8; 4096];
        loop {
            // Keep dribbling: the deadline is on the whole body, not on each byte.
            let _ = s.write_all(b" ").await;
            match tokio::time::timeout(Duration::from_millis(200), s.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break,
                Ok(Ok(n)) => {
                    answer.extend_from_slice(&buf[..n]);
                    if answer.windows(4).any(|w| w == b"\r\n\r\n")
                        && String::from_utf8_lossy(&answer).contains("}")
                    {
                        break;
                    }
                }
                Err(_) => {}
            }
        }
    })
    .await;
    assert!(read.is_ok(), "no answer within 10 s");
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("\"reason\":\"Timeout\""), "{text}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

/// A request whose body is streamed from a channel that never ends: in flight until the
/// sender is dropped.
fn held_body() -> (
    tokio::sync::mpsc::Sender<Result<Vec<u8>, std::io::Error>>,
    reqwest::Body,
) {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(1);
    let stream =
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|x| (x, rx)) });
    (tx, reqwest::Body::wrap_stream(stream))
}

#[tokio::test]
async fn authenticated_clients_are_limited_by_user_and_administrators_always_answered() {
    use skiff_integration::tls_client;
    let c = TestCluster::start_secure_with(|cfg| {
        cfg.gateway.max_mutating_requests_inflight = 2;
        cfg.gateway.max_inflight_per_client = 0;
    });
    let admin = c.admin_client();
    let binding = skiff_integration::user_role_binding("jane-edits", "edit", "jane");
    let (code, body) = call(
        admin
            .post(c.url("/apis/rbac.authorization.k8s.io/v1/namespaces/default/rolebindings"))
            .json(&binding),
    )
    .await;
    assert_eq!(code, 201, "{body}");
    let jane = tls_client(&c.ca_pem(), None, Some(&c.client_cert("jane", &[])));
    let mut held = Vec::new();
    for _ in 0..2 {
        let (tx, body) = held_body();
        tx.send(Ok(b"{".to_vec())).await.expect("first byte");
        let req = jane
            .post(c.url(PODS))
            .header("content-type", "application/json")
            .body(body)
            .send();
        held.push((tx, tokio::spawn(req)));
    }
    let probe = |client: reqwest::Client| {
        let url = c.url(PODS);
        async move {
            client
                .post(url)
                .header("content-type", "application/json")
                .body("not json")
                .send()
                .await
                .expect("answered")
                .status()
                .as_u16()
        }
    };
    eventually(
        Duration::from_secs(10),
        "jane's requests to fill the cap",
        || {
            let p = probe(jane.clone());
            async move { (p.await == 429).then_some(()) }
        },
    )
    .await;
    // The administrator is counted but never turned away.
    assert_eq!(probe(admin.clone()).await, 400);
    let (code, body) = call(admin.post(c.url(PODS)).json(&pod("by-admin", json!({})))).await;
    assert_eq!(code, 201, "{body}");
    drop(held);
}
