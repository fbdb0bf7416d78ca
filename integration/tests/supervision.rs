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
    let text = client()
        .get(c.url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    let line = text
        .lines()
        .find(|l| l.starts_with("skiff_actor_restarts_total{actor=\"panics-always\"}"))
        .unwrap_or_else(|| panic!("no restart count in /metrics:\n{text}"));
    let n: u64 = line
        .rsplit(' ')
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!(n >= 4, "{line}");
    // The API server, beside it, answered throughout.
    let (code, _) = call(client().get(c.url("/api/v1/namespaces/poison"))).await;
    assert_eq!(code, 200);
}
