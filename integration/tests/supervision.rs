//! Supervision: a store actor that panics is restarted by its supervisor; clients get a
//! retryable error meanwhile, then carry on, with nothing acknowledged lost. A controller
//! whose reconcile panics is restarted the same way, through the runtime's guard; one that
//! panics at every start backs off between restarts, which `/metrics` counts.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use skiff_actors::runtime::{
    key_of, Action, Change, Context, Controller, GetControllerStats, InformerSpec, ReconcileError,
    Reconciler,
};
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

/// A controller on the cluster's shared informers whose first reconcile of `chaos` panics.
struct PanicsOnce {
    calls: Arc<AtomicUsize>,
}

#[async_trait::async_trait]
impl Reconciler for PanicsOnce {
    fn name(&self) -> &'static str {
        "panics-once"
    }

    fn informers(&self) -> Vec<InformerSpec> {
        vec![InformerSpec::all("namespaces")]
    }

    fn keys_for(&self, _resource: &str, change: &Change, _ctx: &Context) -> Vec<String> {
        vec![key_of(&change.object)]
    }

    async fn reconcile(&self, key: &str, _ctx: &Context) -> Result<Action, ReconcileError> {
        if key == "chaos" && self.calls.fetch_add(1, Ordering::SeqCst) == 0 {
            panic!("reconcile bug");
        }
        Ok(Action::Done)
    }
}

#[actix_rt::test]
async fn a_panicking_reconcile_restarts_its_controller_which_catches_up_from_the_shared_cache() {
    let c = TestCluster::api_only();
    let namespaces = c.informers.informer(InformerSpec::all("namespaces"));
    let calls = Arc::new(AtomicUsize::new(0));
    let controller = Controller::new(
        PanicsOnce {
            calls: calls.clone(),
        },
        &c.informers,
    )
    .start_supervised();
    let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "chaos"}});
    let (code, _) = call(client().post(c.url("/api/v1/namespaces")).json(&ns)).await;
    assert_eq!(code, 201);
    // The panic stops the actor; the supervisor starts it again, its new subscription is
    // replayed the cache, and `chaos` is reconciled a second time, without the panic.
    let stats = eventually(
        Duration::from_secs(20),
        "the controller restarted and reconciled chaos again",
        || async {
            let stats = controller.send(GetControllerStats).await.ok()?;
            (stats.restarts == 1 && calls.load(Ordering::SeqCst) >= 2).then_some(stats)
        },
    )
    .await;
    assert_eq!(
        stats.failures, 0,
        "a panic is not a failed reconcile: {stats:?}"
    );
    // The restart re-subscribed; it did not make the shared informer list again.
    assert_eq!(namespaces.stats().lists, 1, "{:?}", namespaces.stats());
}

/// A controller whose every reconcile of `poison` panics: a bad object it meets at every
/// start.
struct PanicsAlways {
    calls: Arc<AtomicUsize>,
}

#[async_trait::async_trait]
impl Reconciler for PanicsAlways {
    fn name(&self) -> &'static str {
        "panics-always"
    }

    fn informers(&self) -> Vec<InformerSpec> {
        vec![InformerSpec::all("namespaces")]
    }

    fn keys_for(&self, _resource: &str, change: &Change, _ctx: &Context) -> Vec<String> {
        vec![key_of(&change.object)]
    }

    async fn reconcile(&self, key: &str, _ctx: &Context) -> Result<Action, ReconcileError> {
        if key == "poison" {
            self.calls.fetch_add(1, Ordering::SeqCst);
            panic!("cannot handle this object");
        }
        Ok(Action::Done)
    }
}

#[actix_rt::test]
async fn a_controller_that_panics_at_every_start_backs_off_instead_of_spinning() {
    let c = TestCluster::api_only();
    let calls = Arc::new(AtomicUsize::new(0));
    let controller = Controller::new(
        PanicsAlways {
            calls: calls.clone(),
        },
        &c.informers,
    )
    .start_supervised();
    let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "poison"}});
    let (code, _) = call(client().post(c.url("/api/v1/namespaces")).json(&ns)).await;
    assert_eq!(code, 201);
    let started = std::time::Instant::now();
    eventually(Duration::from_secs(20), "four restarts", || async {
        let stats = controller.send(GetControllerStats).await.ok()?;
        (stats.restarts >= 4).then_some(())
    })
    .await;
    // A restart is counted when it happens and then waits 0, 0.2, 0.4, 0.8 s before the
    // controller runs again: the fourth is counted at least 0.6 s after the first, where
    // restarts in a hot loop take microseconds.
    assert!(
        started.elapsed() >= Duration::from_millis(600),
        "four restarts in {:?}",
        started.elapsed()
    );
    assert!(calls.load(Ordering::SeqCst) >= 4);
    // Each restart is counted in /metrics.
    let n = restarts_of(&c, "panics-always").await;
    assert!(n >= 4, "{n} restarts in /metrics");
    // The API server, beside it, answered throughout.
    let (code, _) = call(client().get(c.url("/api/v1/namespaces/poison"))).await;
    assert_eq!(code, 200);
}

/// `skiff_actor_restarts_total` of one actor, 0 before its first restart.
async fn restarts_of(c: &TestCluster, actor: &str) -> u64 {
    let text = client()
        .get(c.url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    let prefix = format!("skiff_actor_restarts_total{{actor=\"{actor}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Wait until the RC `name` has a Running pod.
async fn rc_pod_running(c: &TestCluster, name: &str) {
    eventually(
        Duration::from_secs(30),
        &format!("a Running pod of {name}"),
        || async {
            let (_, pods) =
                call(client().get(c.url(&format!("{PODS}?labelSelector=app%3D{name}")))).await;
            pods["items"]
                .as_array()?
                .iter()
                .any(|p| p["status"]["phase"] == "Running")
                .then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_supervised_actor_comes_back_from_a_panic_and_clients_see_only_retryable_errors() {
    let node = skiff_integration::node_names("faults", 1).remove(0);
    let n = node.clone();
    let c = TestCluster::start_with(move |cfg| {
        cfg.nodes = vec![skiff::config::NodeConfig {
            name: n,
            runtime: "sim".into(),
            heartbeat_seconds: 1,
            ..skiff::config::NodeConfig::default()
        }];
    });
    let targets = c.faults.names();
    for expected in [
        "StoreActor".to_string(),
        "GatewayActor".into(),
        "ControllerManager".into(),
        "SchedulerActor".into(),
        "DnsServer".into(),
        "cluster-dns".into(),
        format!("Kubelet/{node}"),
        format!("kube-proxy/{node}"),
        format!("NodeServer/{node}"),
    ] {
        assert!(targets.contains(&expected), "{expected} in {targets:?}");
    }
    // A client reading all along: every answer is a success or a retryable 503, never a
    // refused connection, a 500 or a hang.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (url, stop) = (c.url(PODS), stop.clone());
        tokio::spawn(async move {
            let http = reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap();
            let mut bad = Vec::new();
            let mut reads = 0;
            while !stop.load(Ordering::SeqCst) {
                match http.get(&url).send().await {
                    Ok(r) if r.status() == 200 || r.status() == 503 => reads += 1,
                    Ok(r) => bad.push(format!("status {}", r.status())),
                    Err(e) => bad.push(format!("error {e}")),
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (reads, bad)
        })
    };
    for (i, target) in targets.iter().enumerate() {
        let actor = target.split('/').next().unwrap();
        let before = restarts_of(&c, actor).await;
        assert!(c.faults.inject(target));
        eventually(
            Duration::from_secs(10),
            &format!("{target} restarted"),
            || async { (restarts_of(&c, actor).await > before).then_some(()) },
        )
        .await;
        // The cluster works on: a new workload's pod is created, scheduled and run.
        let name = format!("after-{i}");
        let rc = json!({
            "apiVersion": "v1", "kind": "ReplicationController",
            "metadata": {"name": name},
            "spec": {"replicas": 1, "selector": {"app": name}, "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}
        });
        // A write may meet the store restarting: 503 is retryable, so retry it.
        eventually(
            Duration::from_secs(10),
            &format!("RC {name} created"),
            || async {
                let (code, _) = call(
                    client()
                        .post(c.url("/api/v1/namespaces/default/replicationcontrollers"))
                        .json(&rc),
                )
                .await;
                assert!(
                    code == 201 || code == 503 || code == 409,
                    "create {name}: {code}"
                );
                (code == 201 || code == 409).then_some(())
            },
        )
        .await;
        rc_pod_running(&c, &name).await;
    }
    stop.store(true, Ordering::SeqCst);
    let (reads, bad) = reader.await.unwrap();
    assert!(bad.is_empty(), "non-retryable answers: {bad:?}");
    assert!(reads > 0);
}
