//! The pod worker against a recording runtime and a fake API.

use super::super::fake::{FakeClient, FakeRuntime};
use super::*;

fn deps(runtime: Arc<FakeRuntime>, client: Arc<FakeClient>, base: Duration) -> WorkerDeps {
    let config = WorkerConfig {
        node_name: "n1".into(),
        host_ip: "192.168.0.9".into(),
        backoff_base: base,
        backoff_max: base * 8,
        id_scheme: "fake".into(),
        // Each test's own pod directories: tests run in parallel with the same pod uid.
        pods_dir: tempfile::tempdir().expect("tempdir").keep(),
        ..WorkerConfig::default()
    };
    let recorder = Arc::new(Recorder::new(client.clone(), "kubelet"));
    let volumes = VolumeManager::new(
        Default::default(),
        client.clone(),
        recorder.clone(),
        config.host_ip.clone(),
    );
    WorkerDeps {
        client,
        runtime,
        config: Arc::new(config),
        recorder,
        volumes: Arc::new(volumes),
    }
}

fn pod(policy: &str, containers: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "p", "namespace": "ns", "uid": "u1", "resourceVersion": "1"},
        "spec": {"nodeName": "n1", "restartPolicy": policy, "containers": containers},
        "status": {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "True"}]}})
}

fn input(pod: &Value) -> SyncInput {
    SyncInput {
        pod: Arc::new(pod.clone()),
        ready: HashMap::new(),
        unhealthy: HashMap::new(),
        started: HashSet::new(),
        last_written: None,
    }
}

async fn sync(d: &WorkerDeps, state: &mut PodState, client: &FakeClient) -> Value {
    let current = client.pod("ns", "p").expect("pod");
    sync_pod(d, &input(&current), state).await.expect("sync");
    client.pod("ns", "p").expect("pod")
}

fn record(base: Duration) -> ContainerRecord {
    ContainerRecord::new(&WorkerConfig {
        backoff_base: base,
        backoff_max: base * 30,
        ..WorkerConfig::default()
    })
}

fn exited(id: &str, attempt: u32, code: i64, ran: i64) -> Instance {
    let start = Utc::now() - chrono::Duration::seconds(ran);
    Instance {
        id: id.into(),
        attempt,
        image_id: String::new(),
        state: ContainerState::Exited {
            exit_code: code,
            reason: "Error".into(),
            started_at: start.to_rfc3339(),
            finished_at: Utc::now().to_rfc3339(),
        },
        message: None,
        message_read: false,
    }
}

#[test]
fn a_crashed_container_waits_out_its_backoff_before_the_next_attempt() {
    let base = Duration::from_secs(10);
    let mut rec = record(base);
    rec.current = Some(exited("c1", 0, 1, 1));
    let now = Instant::now();
    let reset = Duration::from_secs(600);
    assert_eq!(
        decide(&mut rec, RestartPolicy::Always, false, reset, now),
        Next::BackOff
    );
    assert_eq!(rec.crash.current(), base);
    assert_eq!(
        decide(&mut rec, RestartPolicy::Always, false, reset, now + base),
        Next::Start(1)
    );
    // The next crash waits twice as long.
    rec.current = Some(exited("c2", 1, 1, 1));
    assert_eq!(
        decide(&mut rec, RestartPolicy::Always, false, reset, now + base),
        Next::BackOff
    );
    assert_eq!(rec.crash.current(), base * 2);
}

#[test]
fn a_container_that_ran_long_enough_restarts_with_the_shortest_backoff() {
    let mut rec = record(Duration::from_secs(10));
    let now = Instant::now();
    for _ in 0..3 {
        rec.crash.start(now);
    }
    rec.current = Some(exited("c9", 3, 1, 700));
    decide(
        &mut rec,
        RestartPolicy::Always,
        false,
        Duration::from_secs(600),
        now,
    );
    assert_eq!(rec.crash.current(), Duration::from_secs(10));
}

#[test]
fn the_restart_policy_decides_whether_an_exit_is_restarted() {
    let reset = Duration::from_secs(600);
    let now = Instant::now();
    let mut rec = record(Duration::from_secs(10));
    rec.current = Some(exited("c1", 0, 0, 1));
    assert_eq!(
        decide(&mut rec, RestartPolicy::OnFailure, false, reset, now),
        Next::Leave
    );
    assert_eq!(
        decide(&mut rec, RestartPolicy::Never, false, reset, now),
        Next::Leave
    );
    rec.current = Some(exited("c2", 0, 2, 1));
    assert_eq!(
        decide(&mut rec, RestartPolicy::OnFailure, false, reset, now),
        Next::BackOff
    );
    assert_eq!(
        decide(&mut rec, RestartPolicy::Always, true, reset, now),
        Next::Leave,
        "terminal pods stay"
    );
}

#[test]
fn crash_loop_messages_are_worded_as_the_kubelet_words_them() {
    let p = pod("Always", json!([]));
    assert_eq!(
        crash_loop_message(Duration::from_secs(20), "c", &p),
        "back-off 20s restarting failed container=c pod=p_ns(u1)"
    );
}

#[test]
fn pull_policy_defaults_to_always_for_latest_and_untagged_images() {
    assert_eq!(
        pull_policy(&json!({"image": "busybox"})),
        PullPolicy::Always
    );
    assert_eq!(
        pull_policy(&json!({"image": "skiff/busybox:latest"})),
        PullPolicy::Always
    );
    assert_eq!(
        pull_policy(&json!({"image": "busybox:1.36"})),
        PullPolicy::IfNotPresent
    );
    assert_eq!(
        pull_policy(&json!({"image": "localhost:5000/busybox"})),
        PullPolicy::Always
    );
    assert_eq!(
        pull_policy(&json!({"image": "busybox", "imagePullPolicy": "Never"})),
        PullPolicy::Never
    );
}

#[tokio::test]
async fn a_sync_starts_the_sandbox_first_then_the_containers_and_reports_running() {
    let runtime = Arc::new(FakeRuntime::default());
    let client = Arc::new(FakeClient::with_pod(pod(
        "Always",
        json!([{"name": "a", "image": "img:1"}, {"name": "b", "image": "img:1",
            "env": [{"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}]}]),
    )));
    let d = deps(runtime.clone(), client.clone(), Duration::from_secs(10));
    let mut state = PodState::new(&d.config);
    let p = sync(&d, &mut state, &client).await;
    let calls = runtime.calls();
    assert_eq!(calls[0], "run_sandbox p");
    assert!(calls.contains(&"start_container a 0".to_string()));
    assert!(calls.contains(&"start_container b 0".to_string()));
    assert_eq!(p["status"]["phase"], "Running");
    assert_eq!(p["status"]["podIP"], "10.0.0.1");
    assert_eq!(p["status"]["hostIP"], "192.168.0.9");
    assert!(p["status"]["startTime"].is_string());
    let ready = p["status"]["conditions"]
        .as_array()
        .expect("conditions")
        .iter()
        .find(|c| c["type"] == "Ready")
        .cloned();
    assert_eq!(ready.map(|c| c["status"].clone()), Some(json!("True")));
    assert!(p["status"]["containerStatuses"][0]["containerID"]
        .as_str()
        .is_some_and(|id| id.starts_with("fake://")));

    // A second sync with nothing changed neither starts anything nor writes.
    let writes = client.writes().len();
    let before = runtime.calls().len();
    let again = client.pod("ns", "p").expect("pod");
    let mut inp = input(&again);
    inp.last_written = None;
    sync_pod(&d, &inp, &mut state).await.expect("sync");
    assert_eq!(
        client.writes().len(),
        writes,
        "unchanged status is not written"
    );
    assert!(runtime.calls()[before..]
        .iter()
        .all(|c| !c.starts_with("start_container")));
}

#[tokio::test]
async fn never_with_a_crashed_container_ends_failed_with_its_exit_code() {
    let runtime = Arc::new(FakeRuntime::default());
    runtime.exit_on_start("app", 3);
    let client = Arc::new(FakeClient::with_pod(pod(
        "Never",
        json!([{"name": "app", "image": "img:1"}]),
    )));
    let d = deps(runtime.clone(), client.clone(), Duration::from_secs(10));
    let mut state = PodState::new(&d.config);
    let p = sync(&d, &mut state, &client).await;
    assert_eq!(p["status"]["phase"], "Failed");
    let s = &p["status"]["containerStatuses"][0];
    assert_eq!(s["state"]["terminated"]["exitCode"], 3);
    assert_eq!(s["restartCount"], 0);
    let p = sync(&d, &mut state, &client).await;
    assert_eq!(p["status"]["phase"], "Failed");
    assert_eq!(runtime.instances("app").len(), 1, "never restarted");
}

#[tokio::test]
async fn always_restarts_a_crashed_container_after_reporting_crash_loop_back_off() {
    let runtime = Arc::new(FakeRuntime::default());
    runtime.exit_on_start("app", 1);
    let client = Arc::new(FakeClient::with_pod(pod(
        "Always",
        json!([{"name": "app", "image": "img:1"}]),
    )));
    let base = Duration::from_millis(200);
    let d = deps(runtime.clone(), client.clone(), base);
    let mut state = PodState::new(&d.config);
    // The first sync starts it and sees it end at once.
    let p = sync(&d, &mut state, &client).await;
    let s = &p["status"]["containerStatuses"][0];
    assert_eq!(s["state"]["terminated"]["exitCode"], 1);
    // The next one backs off.
    let p = sync(&d, &mut state, &client).await;
    let s = &p["status"]["containerStatuses"][0];
    assert_eq!(s["state"]["waiting"]["reason"], "CrashLoopBackOff");
    assert_eq!(
        s["state"]["waiting"]["message"],
        "back-off 200ms restarting failed container=app pod=p_ns(u1)"
    );
    assert_eq!(s["lastState"]["terminated"]["exitCode"], 1);
    assert_eq!(p["status"]["phase"], "Running");
    // A sync during the backoff starts nothing.
    let p = sync(&d, &mut state, &client).await;
    assert_eq!(p["status"]["containerStatuses"][0]["restartCount"], 0);
    tokio::time::sleep(base).await;
    let p = sync(&d, &mut state, &client).await;
    assert_eq!(p["status"]["containerStatuses"][0]["restartCount"], 1);
    let p = sync(&d, &mut state, &client).await;
    let s = &p["status"]["containerStatuses"][0];
    assert_eq!(s["restartCount"], 1);
    assert_eq!(
        s["state"]["waiting"]["message"],
        "back-off 400ms restarting failed container=app pod=p_ns(u1)"
    );
    assert!(runtime
        .calls()
        .contains(&"start_container app 1".to_string()));
}

#[tokio::test]
async fn a_missing_image_reports_err_image_never_pull_and_retries_with_backoff() {
    let runtime = Arc::new(FakeRuntime::default());
    let client = Arc::new(FakeClient::with_pod(pod(
        "Always",
        json!([{"name": "app", "image": "missing/x", "imagePullPolicy": "Never"},
               {"name": "pull", "image": "missing/y", "imagePullPolicy": "IfNotPresent"}]),
    )));
    let d = deps(runtime.clone(), client.clone(), Duration::from_secs(10));
    let mut state = PodState::new(&d.config);
    let current = client.pod("ns", "p").expect("pod");
    let report = sync_pod(&d, &input(&current), &mut state)
        .await
        .expect("sync");
    assert!(report.wake_at.is_some(), "a retry is scheduled");
    let p = client.pod("ns", "p").expect("pod");
    assert_eq!(p["status"]["phase"], "Pending");
    assert_eq!(
        p["status"]["containerStatuses"][0]["state"]["waiting"]["reason"],
        "ErrImageNeverPull"
    );
    assert_eq!(
        p["status"]["containerStatuses"][1]["state"]["waiting"]["reason"],
        "ErrImagePull"
    );
    let p = sync(&d, &mut state, &client).await;
    assert_eq!(
        p["status"]["containerStatuses"][1]["state"]["waiting"]["reason"],
        "ImagePullBackOff"
    );
    let pulls = runtime
        .calls()
        .iter()
        .filter(|c| c.starts_with("ensure_image"))
        .count();
    assert_eq!(pulls, 2, "no pull during the backoff");
}

#[tokio::test]
async fn a_new_worker_adopts_running_containers_without_restarting_them() {
    let runtime = Arc::new(FakeRuntime::default());
    let client = Arc::new(FakeClient::with_pod(pod(
        "Always",
        json!([{"name": "app", "image": "img:1"}]),
    )));
    let d = deps(runtime.clone(), client.clone(), Duration::from_secs(10));
    let mut first = PodState::new(&d.config);
    sync(&d, &mut first, &client).await;
    let starts = runtime.calls().len();
    let mut fresh = PodState::new(&d.config);
    let p = sync(&d, &mut fresh, &client).await;
    assert!(
        runtime.calls()[starts..]
            .iter()
            .all(|c| !c.starts_with("start_container") && !c.starts_with("run_sandbox")),
        "{:?}",
        runtime.calls()
    );
    assert_eq!(p["status"]["phase"], "Running");
    assert_eq!(runtime.instances("app").len(), 1);
}

#[tokio::test]
async fn a_failed_liveness_probe_kills_and_restarts_the_container_as_a_restart() {
    let runtime = Arc::new(FakeRuntime::default());
    let client = Arc::new(FakeClient::with_pod(pod(
        "Always",
        json!([{"name": "app", "image": "img:1"}]),
    )));
    let d = deps(runtime.clone(), client.clone(), Duration::from_millis(50));
    let mut state = PodState::new(&d.config);
    sync(&d, &mut state, &client).await;
    let id = runtime.instances("app")[0].id.clone();
    let current = client.pod("ns", "p").expect("pod");
    let mut inp = input(&current);
    inp.unhealthy.insert(id.clone(), "liveness");
    sync_pod(&d, &inp, &mut state).await.expect("sync");
    assert!(runtime
        .calls()
        .iter()
        .any(|c| c.starts_with(&format!("stop {id}"))));
    tokio::time::sleep(Duration::from_millis(60)).await;
    let p = sync(&d, &mut state, &client).await;
    assert_eq!(p["status"]["containerStatuses"][0]["restartCount"], 1);
    assert_eq!(
        p["status"]["containerStatuses"][0]["lastState"]["terminated"]["exitCode"],
        137
    );
}

#[tokio::test]
async fn termination_stops_with_the_remaining_grace_removes_everything_and_deletes_the_pod() {
    let runtime = Arc::new(FakeRuntime::default());
    let client = Arc::new(FakeClient::with_pod(pod(
        "Always",
        json!([{"name": "app", "image": "img:1"}]),
    )));
    let d = deps(runtime.clone(), client.clone(), Duration::from_secs(10));
    let mut state = PodState::new(&d.config);
    sync(&d, &mut state, &client).await;
    let mut p = client.pod("ns", "p").expect("pod");
    let deadline = Utc::now() + chrono::Duration::seconds(20);
    p["metadata"]["deletionTimestamp"] = json!(deadline.format("%Y-%m-%dT%H:%M:%SZ").to_string());
    let kill = Kill::graceful(&p);
    terminate(&d, &Arc::new(p), &mut state, &kill)
        .await
        .expect("terminate");
    let app = runtime
        .calls()
        .into_iter()
        .find(|c| c.starts_with("stop c2"))
        .expect("app stopped");
    let grace: u64 = app
        .rsplit(' ')
        .next()
        .and_then(|g| g.parse().ok())
        .expect("grace");
    assert!((18..=20).contains(&grace), "remaining grace, got {grace}");
    assert!(runtime.all().is_empty(), "containers and sandbox removed");
    assert!(client.pod("ns", "p").is_none(), "pod object removed");
}

#[tokio::test]
async fn a_pod_deleted_outright_only_loses_its_containers() {
    let runtime = Arc::new(FakeRuntime::default());
    let client = Arc::new(FakeClient::with_pod(pod(
        "Always",
        json!([{"name": "app", "image": "img:1"}]),
    )));
    let d = deps(runtime.clone(), client.clone(), Duration::from_secs(10));
    let mut state = PodState::new(&d.config);
    sync(&d, &mut state, &client).await;
    let p = client.pod("ns", "p").expect("pod");
    terminate(&d, &Arc::new(p.clone()), &mut state, &Kill::outright(&p))
        .await
        .expect("terminate");
    assert!(runtime.all().is_empty());
    assert!(!client.writes().iter().any(|w| w.starts_with("delete_now")));
}

#[test]
fn a_second_kill_request_can_only_shorten_the_deadline() {
    let p = pod("Always", json!([]));
    let mut graceful = Kill::graceful(&p);
    let outright = Kill::outright(&p);
    graceful.merge(outright.clone());
    assert!(graceful.deadline <= outright.deadline);
    assert!(!graceful.delete_object);
}

/// A recipient for `WorkerFinished` in actor tests.
struct Sink(Arc<std::sync::Mutex<Vec<String>>>);
impl Actor for Sink {
    type Context = Context<Self>;
}
impl Handler<WorkerFinished> for Sink {
    type Result = ();
    fn handle(&mut self, msg: WorkerFinished, _: &mut Self::Context) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(msg.uid);
    }
}

async fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[actix_rt::test]
async fn a_panicking_sync_restarts_the_worker_which_adopts_instead_of_starting_twice() {
    let runtime = Arc::new(FakeRuntime::default());
    runtime.panic_on_next_start();
    let client = Arc::new(FakeClient::with_pod(pod(
        "Always",
        json!([{"name": "app", "image": "img:1"}]),
    )));
    let d = deps(runtime.clone(), client.clone(), Duration::from_millis(50));
    let finished = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = Sink(finished.clone()).start();
    let p = Arc::new(client.pod("ns", "p").expect("pod"));
    let worker = PodWorker::new(d, p, sink.recipient());
    let addr = actix::Supervisor::start(move |_| worker);
    wait_for("the pod to run after the panic", || {
        client
            .pod("ns", "p")
            .is_some_and(|p| p["status"]["phase"] == "Running")
    })
    .await;
    assert_eq!(runtime.instances("app").len(), 1);
    let sandboxes = runtime.all().iter().filter(|c| c.is_sandbox()).count();
    assert_eq!(sandboxes, 1, "the restarted worker adopted the sandbox");

    // A panic in a handler is survived the same way.
    addr.do_send(InjectPanic);
    addr.do_send(RuntimeChanged);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(addr.connected());
    addr.do_send(PodRemoved);
    wait_for("the worker to finish", || {
        !finished
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()
    })
    .await;
    assert!(runtime.all().is_empty());
}

#[actix_rt::test]
async fn a_readiness_probe_gates_the_ready_condition() {
    let runtime = Arc::new(FakeRuntime::default());
    runtime.fail_exec("check");
    let client = Arc::new(FakeClient::with_pod(pod(
        "Always",
        json!([{"name": "app", "image": "img:1",
            "readinessProbe": {"exec": {"command": ["check"]}, "periodSeconds": 1}}]),
    )));
    let d = deps(runtime.clone(), client.clone(), Duration::from_millis(50));
    let sink = Sink(Default::default()).start();
    let p = Arc::new(client.pod("ns", "p").expect("pod"));
    let _worker = actix::Supervisor::start(move |_| PodWorker::new(d, p, sink.recipient()));
    let ready = |client: &FakeClient| {
        client.pod("ns", "p").and_then(|p| {
            p["status"]["conditions"]
                .as_array()?
                .iter()
                .find(|c| c["type"] == "Ready")
                .map(|c| c["status"] == "True")
        })
    };
    wait_for("the pod to run", || {
        client
            .pod("ns", "p")
            .is_some_and(|p| p["status"]["phase"] == "Running")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        ready(&client),
        Some(false),
        "not ready while the probe fails"
    );
    runtime.clear_failing_exec();
    wait_for("the pod to become ready", || ready(&client) == Some(true)).await;
}

fn pod_with(policy: &str, spec: Value) -> Value {
    let mut p = pod(policy, json!([{"name": "app", "image": "img:1"}]));
    if let (Some(s), Some(extra)) = (p["spec"].as_object_mut(), spec.as_object()) {
        s.extend(extra.clone());
    }
    p
}

fn position(calls: &[String], call: &str) -> usize {
    calls
        .iter()
        .position(|c| c == call)
        .unwrap_or_else(|| panic!("{call} in {calls:#?}"))
}

fn condition<'a>(p: &'a Value, kind: &str) -> &'a Value {
    p["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == kind))
        .unwrap_or(&Value::Null)
}

#[tokio::test]
async fn an_ephemeral_container_starts_once_in_its_targets_processes_and_is_never_restarted() {
    let runtime = Arc::new(FakeRuntime::default());
    let client = Arc::new(FakeClient::with_pod(pod(
        "Always",
        json!([{"name": "app", "image": "img:1"}]),
    )));
    let d = deps(runtime.clone(), client.clone(), Duration::from_millis(1));
    let mut state = PodState::new(&d.config);
    sync(&d, &mut state, &client).await;
    let app = runtime.instances("app")[0].id.clone();

    // `kubectl debug --target=app` adds one to the running pod.
    let mut debugged = client.pod("ns", "p").expect("pod");
    debugged["spec"]["ephemeralContainers"] =
        json!([{"name": "dbg", "image": "img:1", "targetContainerName": "app"}]);
    client.put(debugged);
    let p = sync(&d, &mut state, &client).await;
    assert!(
        runtime.calls().contains(&format!("pid_target dbg {app}")),
        "{:?}",
        runtime.calls()
    );
    let status = &p["status"]["ephemeralContainerStatuses"][0];
    assert_eq!(status["name"], "dbg");
    assert!(status["state"]["running"].is_object(), "{status}");
    assert_eq!(
        status["ready"], false,
        "an ephemeral container is never ready"
    );
    assert_eq!(
        p["status"]["containerStatuses"].as_array().map(Vec::len),
        Some(1)
    );

    let dbg = runtime.instances("dbg")[0].id.clone();
    runtime.exit(&dbg, 1);
    sync(&d, &mut state, &client).await;
    let p = sync(&d, &mut state, &client).await;
    assert_eq!(runtime.instances("dbg").len(), 1, "not restarted");
    assert_eq!(
        p["status"]["ephemeralContainerStatuses"][0]["state"]["terminated"]["exitCode"],
        1
    );
    assert_eq!(
        p["status"]["phase"], "Running",
        "the pod's phase is its own containers'"
    );
}

#[tokio::test]
async fn init_containers_run_in_order_each_to_success_before_the_app_containers() {
    let runtime = Arc::new(FakeRuntime::default());
    runtime.exit_on_start("first", 0);
    let client = Arc::new(FakeClient::with_pod(pod_with(
        "Always",
        json!({"initContainers": [{"name": "first", "image": "img:1"}, {"name": "second", "image": "img:1"}]}),
    )));
    let d = deps(runtime.clone(), client.clone(), Duration::from_secs(10));
    let mut state = PodState::new(&d.config);
    let p = sync(&d, &mut state, &client).await;
    let calls = runtime.calls();
    assert!(
        position(&calls, "start_container first 0") < position(&calls, "start_container second 0")
    );
    assert!(
        !calls.iter().any(|c| c.starts_with("start_container app")),
        "second still runs"
    );
    assert_eq!(p["status"]["phase"], "Pending");
    assert_eq!(
        p["status"]["initContainerStatuses"][0]["state"]["terminated"]["reason"],
        "Completed"
    );
    assert!(p["status"]["initContainerStatuses"][1]["state"]["running"].is_object());
    assert_eq!(
        p["status"]["containerStatuses"][0]["state"]["waiting"]["reason"],
        "PodInitializing"
    );
    assert_eq!(condition(&p, "Initialized")["status"], "False");
    assert_eq!(
        condition(&p, "Initialized")["message"],
        "containers with incomplete status: [second]"
    );

    let second = runtime.instances("second")[0].id.clone();
    runtime.exit(&second, 0);
    let p = sync(&d, &mut state, &client).await;
    assert!(runtime
        .calls()
        .contains(&"start_container app 0".to_string()));
    assert_eq!(p["status"]["phase"], "Running");
    assert_eq!(condition(&p, "Initialized")["status"], "True");
    assert_eq!(
        runtime.instances("first").len(),
        1,
        "init containers are not run again"
    );
    let p = sync(&d, &mut state, &client).await;
    assert_eq!(p["status"]["initContainerStatuses"][1]["ready"], true);
}

#[tokio::test]
async fn a_failed_init_container_fails_a_never_pod_and_is_retried_otherwise() {
    let runtime = Arc::new(FakeRuntime::default());
    runtime.exit_on_start("setup", 1);
    let client = Arc::new(FakeClient::with_pod(pod_with(
        "Never",
        json!({"initContainers": [{"name": "setup", "image": "img:1"}]}),
    )));
    let d = deps(runtime.clone(), client.clone(), Duration::from_secs(10));
    let mut state = PodState::new(&d.config);
    let p = sync(&d, &mut state, &client).await;
    assert_eq!(p["status"]["phase"], "Failed");
    assert_eq!(
        p["status"]["initContainerStatuses"][0]["state"]["terminated"]["exitCode"],
        1
    );
    sync(&d, &mut state, &client).await;
    assert_eq!(runtime.instances("setup").len(), 1, "never restarted");
    assert!(runtime.instances("app").is_empty(), "the app never started");

    let runtime = Arc::new(FakeRuntime::default());
    runtime.exit_on_start("setup", 1);
    let client = Arc::new(FakeClient::with_pod(pod_with(
        "Always",
        json!({"initContainers": [{"name": "setup", "image": "img:1"}]}),
    )));
    let d = deps(runtime.clone(), client.clone(), Duration::from_millis(100));
    let mut state = PodState::new(&d.config);
    sync(&d, &mut state, &client).await;
    let p = sync(&d, &mut state, &client).await;
    assert_eq!(p["status"]["phase"], "Pending");
    let s = &p["status"]["initContainerStatuses"][0];
    assert_eq!(s["state"]["waiting"]["reason"], "CrashLoopBackOff");
    assert_eq!(s["lastState"]["terminated"]["exitCode"], 1);
    tokio::time::sleep(Duration::from_millis(150)).await;
    let p = sync(&d, &mut state, &client).await;
    assert_eq!(p["status"]["initContainerStatuses"][0]["restartCount"], 1);
}

#[tokio::test]
async fn a_sidecar_starts_before_the_next_init_container_and_keeps_running() {
    let runtime = Arc::new(FakeRuntime::default());
    runtime.exit_on_start("setup", 0);
    let client = Arc::new(FakeClient::with_pod(pod_with(
        "Never",
        json!({"initContainers": [
            {"name": "proxy", "image": "img:1", "restartPolicy": "Always"},
            {"name": "setup", "image": "img:1"}]}),
    )));
    let d = deps(runtime.clone(), client.clone(), Duration::from_millis(100));
    let mut state = PodState::new(&d.config);
    let p = sync(&d, &mut state, &client).await;
    let calls = runtime.calls();
    assert!(
        position(&calls, "start_container proxy 0") < position(&calls, "start_container setup 0")
    );
    assert!(
        position(&calls, "start_container setup 0") < position(&calls, "start_container app 0")
    );
    let side = &p["status"]["initContainerStatuses"][0];
    assert!(side["state"]["running"].is_object());
    assert_eq!(
        (side["started"].clone(), side["ready"].clone()),
        (json!(true), json!(true))
    );
    // A sidecar that exits is restarted, even in a Never pod.
    let proxy = runtime.instances("proxy")[0].id.clone();
    runtime.exit(&proxy, 1);
    sync(&d, &mut state, &client).await;
    tokio::time::sleep(Duration::from_millis(150)).await;
    sync(&d, &mut state, &client).await;
    assert_eq!(runtime.instances("proxy").len(), 2, "restarted");
}

#[tokio::test]
async fn a_failed_post_start_hook_kills_the_container_and_pre_stop_runs_before_a_stop() {
    let runtime = Arc::new(FakeRuntime::default());
    runtime.fail_exec("hook-fails");
    let client = Arc::new(FakeClient::with_pod(pod(
        "Never",
        json!([
            {"name": "bad", "image": "img:1", "lifecycle": {"postStart": {"exec": {"command": ["hook-fails"]}}}},
            {"name": "good", "image": "img:1", "lifecycle": {
                "postStart": {"exec": {"command": ["touch", "/started"]}},
                "preStop": {"exec": {"command": ["touch", "/stopping"]}}}}
        ]),
    )));
    let d = deps(runtime.clone(), client.clone(), Duration::from_secs(10));
    let mut state = PodState::new(&d.config);
    let p = sync(&d, &mut state, &client).await;
    let bad = runtime.instances("bad")[0].id.clone();
    let good = runtime.instances("good")[0].id.clone();
    let calls = runtime.calls();
    assert!(calls.contains(&format!("exec {good} touch /started")));
    assert!(
        position(&calls, &format!("exec {bad} hook-fails"))
            < position(&calls, &format!("stop {bad} 30"))
    );
    assert_eq!(
        p["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"],
        137
    );
    assert!(p["status"]["containerStatuses"][1]["state"]["running"].is_object());

    let p = client.pod("ns", "p").expect("pod");
    terminate(&d, &Arc::new(p.clone()), &mut state, &Kill::outright(&p))
        .await
        .expect("terminate");
    let calls = runtime.calls();
    assert!(
        position(&calls, &format!("exec {good} touch /stopping"))
            < position(&calls, &format!("stop {good} 2"))
    );
}

#[tokio::test]
async fn a_pod_past_its_active_deadline_is_failed_and_its_containers_stopped() {
    let runtime = Arc::new(FakeRuntime::default());
    let started = (Utc::now() - chrono::Duration::seconds(10))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let mut p = pod_with("Always", json!({"activeDeadlineSeconds": 5}));
    p["status"]["startTime"] = json!(started);
    let client = Arc::new(FakeClient::with_pod(p));
    let d = deps(runtime.clone(), client.clone(), Duration::from_secs(10));
    let mut state = PodState::new(&d.config);
    let p = sync(&d, &mut state, &client).await;
    assert_eq!(p["status"]["phase"], "Failed");
    assert_eq!(p["status"]["reason"], "DeadlineExceeded");
    assert_eq!(
        p["status"]["message"],
        "Pod was active on the node longer than the specified deadline"
    );
    assert!(
        runtime.instances("app").is_empty(),
        "nothing started after the deadline"
    );

    // One still within its deadline runs and is woken at the deadline.
    let runtime = Arc::new(FakeRuntime::default());
    let client = Arc::new(FakeClient::with_pod(pod_with(
        "Always",
        json!({"activeDeadlineSeconds": 60}),
    )));
    let d = deps(runtime.clone(), client.clone(), Duration::from_secs(10));
    let mut state = PodState::new(&d.config);
    let current = client.pod("ns", "p").expect("pod");
    let report = sync_pod(&d, &input(&current), &mut state)
        .await
        .expect("sync");
    assert!(report
        .wake_at
        .is_some_and(|w| w > Instant::now() + Duration::from_secs(50)));
    assert_eq!(runtime.instances("app").len(), 1);
}

#[tokio::test]
async fn a_termination_message_file_is_reported_in_the_terminated_state() {
    let runtime = Arc::new(FakeRuntime::default());
    let client = Arc::new(FakeClient::with_pod(pod(
        "Never",
        json!([{"name": "app", "image": "img:1"}]),
    )));
    let d = deps(runtime.clone(), client.clone(), Duration::from_secs(10));
    let mut state = PodState::new(&d.config);
    sync(&d, &mut state, &client).await;
    // The container writes its message into the mounted file, then exits.
    let log = d
        .config
        .pods_dir
        .join("u1/containers/app/0-termination-log");
    std::fs::write(&log, "all done").expect("write message");
    let id = runtime.instances("app")[0].id.clone();
    runtime.exit(&id, 0);
    let p = sync(&d, &mut state, &client).await;
    assert_eq!(
        p["status"]["containerStatuses"][0]["state"]["terminated"]["message"],
        "all done"
    );
}

#[tokio::test]
async fn always_uses_the_image_on_the_node_when_the_pull_fails() {
    let runtime = Arc::new(FakeRuntime::default());
    let client = Arc::new(FakeClient::with_pod(pod(
        "Always",
        json!([{"name": "app", "image": "local-only/app", "imagePullPolicy": "Always"},
               {"name": "gone", "image": "missing/app", "imagePullPolicy": "Always"}]),
    )));
    let d = deps(runtime.clone(), client.clone(), Duration::from_secs(10));
    let mut state = PodState::new(&d.config);
    let p = sync(&d, &mut state, &client).await;
    assert!(
        p["status"]["containerStatuses"][0]["state"]["running"].is_object(),
        "{p}"
    );
    assert_eq!(
        p["status"]["containerStatuses"][1]["state"]["waiting"]["reason"],
        "ErrImagePull"
    );
}
