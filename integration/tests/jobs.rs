//! batch/v1 as a user drives it, on the real Docker Engine with the machine's kubectl:
//! `kubectl create job` and `kubectl wait --for=condition=complete`, a Job with
//! parallelism and completions, a failing Job passing its backoff limit, an Indexed Job
//! (each pod's index in its environment and hostname, `completedIndexes`), a CronJob
//! firing on a fake clock and `kubectl create job --from=cronjob/`, the official Python
//! client's BatchV1Api, and invalid Jobs and CronJobs refused with Kubernetes' paths.

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use skiff_actors::runtime::{FakeClock, SharedClock};
use skiff_integration::{
    call, client, eventually, kubectl, node_names, python_client, DockerCleanup, Kubectl,
    TestCluster,
};

const IMAGE: &str = "skiff/busybox:latest";

/// A cluster with Docker nodes, a fast Job back-off, and optionally a fake clock.
fn cluster(nodes: &[String], clock: Option<SharedClock>) -> TestCluster {
    let nodes = nodes.to_vec();
    TestCluster::start_with(move |cfg| {
        cfg.nodes = nodes
            .iter()
            .map(|n| skiff::config::NodeConfig {
                name: n.clone(),
                runtime: "docker".into(),
                heartbeat_seconds: 2,
                ..skiff::config::NodeConfig::default()
            })
            .collect();
        cfg.controllers.job_backoff_base_ms = 200;
        cfg.controllers.job_backoff_max_seconds = 2;
        if let Some(clock) = clock {
            cfg.controllers.clock = clock;
        }
    })
}

/// Stop the cluster, then remove the nodes' containers until none is left: a container
/// the engine was still creating at shutdown would otherwise outlive the test.
async fn finish(c: TestCluster, cleanup: &DockerCleanup) {
    drop(c);
    eventually(Duration::from_secs(30), "no containers left", || async {
        cleanup.remove_all();
        let left = cleanup.nodes.iter().any(|n| {
            Command::new("docker")
                .args(["ps", "-aq", "--filter", &format!("label=io.skiff.node={n}")])
                .output()
                .map(|o| !o.stdout.is_empty())
                .unwrap_or(false)
        });
        (!left).then_some(())
    })
    .await;
}

async fn get(c: &TestCluster, path: &str) -> Value {
    call(client().get(c.url(path))).await.1
}

async fn job(c: &TestCluster, name: &str) -> Value {
    get(c, &format!("/apis/batch/v1/namespaces/default/jobs/{name}")).await
}

async fn pods_of(c: &TestCluster, job: &str) -> Vec<Value> {
    let list = get(
        c,
        &format!(
            "/api/v1/namespaces/default/pods?labelSelector=batch.kubernetes.io%2Fjob-name%3D{job}"
        ),
    )
    .await;
    list["items"].as_array().cloned().unwrap_or_default()
}

fn condition<'a>(job: &'a Value, kind: &str) -> Option<&'a Value> {
    job.pointer("/status/conditions")?
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind && c["status"] == "True")
}

async fn events_for(c: &TestCluster, name: &str) -> Vec<String> {
    let list = get(
        c,
        &format!("/api/v1/namespaces/default/events?fieldSelector=involvedObject.name%3D{name}"),
    )
    .await;
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["reason"].as_str().map(str::to_string))
        .collect()
}

async fn create_job(c: &TestCluster, body: Value) -> Value {
    let (code, out) = call(
        client()
            .post(c.url("/apis/batch/v1/namespaces/default/jobs"))
            .json(&body),
    )
    .await;
    assert_eq!(code, 201, "{out}");
    out
}

fn job_body(name: &str, spec: Value, command: &str) -> Value {
    let mut spec = spec;
    spec["template"] = json!({"spec": {"restartPolicy": "Never", "containers": [
        {"name": "main", "image": IMAGE, "command": ["sh", "-c", command]}]}});
    json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name}, "spec": spec})
}

#[tokio::test]
async fn kubectl_creates_a_job_that_completes_and_kubectl_wait_sees_it() {
    skiff_integration::require_docker_and_kubectl();
    let nodes = node_names("jobs-create", 1);
    let cleanup = DockerCleanup::new(&nodes);
    let c = cluster(&nodes, None);
    let k = Kubectl(&c.kubeconfig);
    k.ok(&[
        "create",
        "job",
        "hello",
        &format!("--image={IMAGE}"),
        "--",
        "echo",
        "hello from a job",
    ]);
    let out = k.ok(&[
        "wait",
        "--for=condition=complete",
        "job/hello",
        "--timeout=90s",
    ]);
    assert!(out.contains("condition met"), "{out}");
    let j = job(&c, "hello").await;
    assert_eq!(j["status"]["succeeded"], 1, "{j}");
    assert!(j["status"]["completionTime"].is_string(), "{j}");
    assert!(condition(&j, "SuccessCriteriaMet").is_some(), "{j}");
    assert_eq!(
        condition(&j, "Complete").expect("Complete")["reason"],
        "CompletionsReached"
    );
    let uid = j["metadata"]["uid"].as_str().expect("uid");
    assert_eq!(
        j["spec"]["selector"]["matchLabels"]["batch.kubernetes.io/controller-uid"],
        uid
    );
    // kubectl's columns, the tracking finalizer gone from the finished pod, the logs.
    let out = k.ok(&["get", "jobs"]);
    assert!(
        out.contains("STATUS") && out.contains("COMPLETIONS") && out.contains("DURATION"),
        "{out}"
    );
    assert!(out.contains("Complete") && out.contains("1/1"), "{out}");
    let pods = pods_of(&c, "hello").await;
    assert_eq!(pods.len(), 1);
    assert_eq!(pods[0]["status"]["phase"], "Succeeded");
    let finalizers = pods[0]["metadata"]["finalizers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(finalizers.is_empty(), "{finalizers:?}");
    let logs = k.ok(&["logs", "job/hello"]);
    assert!(logs.contains("hello from a job"), "{logs}");
    let reasons = events_for(&c, "hello").await;
    assert!(
        reasons.iter().any(|r| r == "SuccessfulCreate"),
        "{reasons:?}"
    );
    assert!(reasons.iter().any(|r| r == "Completed"), "{reasons:?}");
    // Deleting the Job takes its pods along.
    k.ok(&["delete", "job", "hello"]);
    eventually(Duration::from_secs(30), "pods collected", || async {
        pods_of(&c, "hello").await.is_empty().then_some(())
    })
    .await;
    finish(c, &cleanup).await;
}

#[tokio::test]
async fn a_job_runs_its_completions_at_most_parallelism_at_a_time() {
    skiff_integration::require_docker_and_kubectl();
    let nodes = node_names("jobs-par", 1);
    let cleanup = DockerCleanup::new(&nodes);
    let c = cluster(&nodes, None);
    create_job(
        &c,
        job_body(
            "par",
            json!({"completions": 4, "parallelism": 2}),
            "sleep 1",
        ),
    )
    .await;
    let most = std::sync::atomic::AtomicUsize::new(0);
    let j = eventually(Duration::from_secs(120), "4 completions", || async {
        let pods = pods_of(&c, "par").await;
        let running = pods
            .iter()
            .filter(|p| !matches!(p["status"]["phase"].as_str(), Some("Succeeded" | "Failed")))
            .count();
        most.fetch_max(running, std::sync::atomic::Ordering::Relaxed);
        let j = job(&c, "par").await;
        condition(&j, "Complete").is_some().then_some(j)
    })
    .await;
    let most = most.into_inner();
    assert!(most <= 2, "at most parallelism pods at once, saw {most}");
    assert_eq!(j["status"]["succeeded"], 4, "{j}");
    assert_eq!(j["status"]["active"], 0, "{j}");
    let succeeded = pods_of(&c, "par")
        .await
        .iter()
        .filter(|p| p["status"]["phase"] == "Succeeded")
        .count();
    assert_eq!(succeeded, 4);
    let (_, out, _) = kubectl(&c.kubeconfig, &["get", "job", "par"]);
    assert!(out.contains("4/4"), "{out}");
    finish(c, &cleanup).await;
}

#[tokio::test]
async fn a_failing_job_stops_at_its_backoff_limit() {
    skiff_integration::require_docker_and_kubectl();
    let nodes = node_names("jobs-fail", 1);
    let cleanup = DockerCleanup::new(&nodes);
    let c = cluster(&nodes, None);
    let k = Kubectl(&c.kubeconfig);
    create_job(&c, job_body("fail", json!({"backoffLimit": 1}), "exit 3")).await;
    let out = k.ok(&[
        "wait",
        "--for=condition=failed",
        "job/fail",
        "--timeout=120s",
    ]);
    assert!(out.contains("condition met"), "{out}");
    let j = job(&c, "fail").await;
    let failed = condition(&j, "Failed").expect("Failed");
    assert_eq!(failed["reason"], "BackoffLimitExceeded", "{j}");
    assert_eq!(
        failed["message"],
        "Job has reached the specified backoff limit"
    );
    assert_eq!(
        condition(&j, "FailureTarget").expect("FailureTarget")["reason"],
        "BackoffLimitExceeded"
    );
    assert_eq!(j["status"]["failed"], 2, "{j}");
    assert_eq!(j["status"]["succeeded"], 0, "{j}");
    let pods = pods_of(&c, "fail").await;
    assert_eq!(pods.len(), 2, "one pod and one replacement");
    let code = pods[0].pointer("/status/containerStatuses/0/state/terminated/exitCode");
    assert_eq!(code, Some(&json!(3)));
    let reasons = events_for(&c, "fail").await;
    assert!(
        reasons.iter().any(|r| r == "BackoffLimitExceeded"),
        "{reasons:?}"
    );
    let out = k.ok(&["get", "job", "fail"]);
    assert!(out.contains("Failed") && out.contains("0/1"), "{out}");

    // A pod failure policy's FailJob rule ends the Job at the first matching exit code,
    // however much backoff limit is left.
    let policy = json!({"backoffLimit": 6, "podFailurePolicy": {"rules": [
        {"action": "FailJob", "onExitCodes": {"containerName": "main", "operator": "In", "values": [42]}}]}});
    create_job(&c, job_body("fatal", policy, "exit 42")).await;
    k.ok(&[
        "wait",
        "--for=condition=failed",
        "job/fatal",
        "--timeout=60s",
    ]);
    let j = job(&c, "fatal").await;
    let failed = condition(&j, "Failed").expect("Failed");
    assert_eq!(failed["reason"], "PodFailurePolicy", "{j}");
    let message = failed["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with("Container main for pod default/fatal-")
            && message.ends_with("failed with exit code 42 matching FailJob rule at index 0"),
        "{message}"
    );
    assert_eq!(j["status"]["failed"], 1, "{j}");
    assert_eq!(
        pods_of(&c, "fatal").await.len(),
        1,
        "no replacement after FailJob"
    );
    finish(c, &cleanup).await;
}

#[tokio::test]
async fn an_indexed_job_gives_each_pod_its_index_and_reports_completed_indexes() {
    skiff_integration::require_docker_and_kubectl();
    let nodes = node_names("jobs-idx", 1);
    let cleanup = DockerCleanup::new(&nodes);
    let c = cluster(&nodes, None);
    let k = Kubectl(&c.kubeconfig);
    create_job(
        &c,
        job_body(
            "idx",
            json!({"completions": 3, "parallelism": 3, "completionMode": "Indexed"}),
            "echo index=$JOB_COMPLETION_INDEX host=$(hostname)",
        ),
    )
    .await;
    k.ok(&[
        "wait",
        "--for=condition=complete",
        "job/idx",
        "--timeout=90s",
    ]);
    let j = job(&c, "idx").await;
    assert_eq!(j["status"]["completedIndexes"], "0-2", "{j}");
    assert_eq!(j["status"]["succeeded"], 3, "{j}");
    let mut seen = Vec::new();
    for p in pods_of(&c, "idx").await {
        let index = p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"]
            .as_str()
            .expect("index annotation")
            .to_string();
        assert_eq!(
            p["metadata"]["labels"]["batch.kubernetes.io/job-completion-index"],
            index.as_str()
        );
        assert_eq!(p["spec"]["hostname"], format!("idx-{index}"));
        let name = p["metadata"]["name"].as_str().expect("name");
        assert!(name.starts_with(&format!("idx-{index}-")), "{name}");
        let logs = k.ok(&["logs", name]);
        assert!(
            logs.contains(&format!("index={index} host=idx-{index}")),
            "{logs}"
        );
        seen.push(index);
    }
    seen.sort();
    assert_eq!(seen, ["0", "1", "2"]);
    finish(c, &cleanup).await;
}

#[tokio::test]
async fn a_cron_job_fires_on_a_fake_clock_and_kubectl_creates_a_job_from_it() {
    skiff_integration::require_docker_and_kubectl();
    let nodes = node_names("jobs-cron", 1);
    let cleanup = DockerCleanup::new(&nodes);
    let (shared, fake): (SharedClock, Arc<FakeClock>) = SharedClock::fake(chrono::Utc::now());
    let c = cluster(&nodes, Some(shared));
    let k = Kubectl(&c.kubeconfig);
    k.ok(&[
        "create",
        "cronjob",
        "tick",
        &format!("--image={IMAGE}"),
        "--schedule=*/5 * * * *",
        "--",
        "echo",
        "tick",
    ]);
    let out = k.ok(&["get", "cronjobs"]);
    assert!(
        out.contains("*/5 * * * *") && out.contains("False"),
        "{out}"
    );
    // Nothing is due until the clock passes the next multiple of five minutes.
    let cj = get(&c, "/apis/batch/v1/namespaces/default/cronjobs/tick").await;
    assert!(cj["status"].get("lastScheduleTime").is_none(), "{cj}");
    fake.advance(Duration::from_secs(5 * 60 + 30));
    let cj = eventually(Duration::from_secs(30), "the scheduled job", || async {
        let cj = get(&c, "/apis/batch/v1/namespaces/default/cronjobs/tick").await;
        cj["status"]["lastScheduleTime"].is_string().then_some(cj)
    })
    .await;
    let scheduled = chrono::DateTime::parse_from_rfc3339(
        cj["status"]["lastScheduleTime"].as_str().expect("time"),
    )
    .expect("rfc3339");
    assert_eq!(scheduled.timestamp() % 300, 0, "{cj}");
    let name = format!("tick-{}", scheduled.timestamp() / 60);
    let j = job(&c, &name).await;
    assert_eq!(
        j["metadata"]["ownerReferences"][0]["kind"], "CronJob",
        "{j}"
    );
    assert_eq!(
        j["metadata"]["annotations"]["batch.kubernetes.io/cronjob-scheduled-timestamp"],
        scheduled
            .with_timezone(&chrono::Utc)
            .format("%Y-%m-%dT%H:%M:%SZ")
            .to_string()
    );
    assert_eq!(cj["status"]["active"][0]["name"], name.as_str(), "{cj}");
    let reasons = events_for(&c, "tick").await;
    assert!(
        reasons.iter().any(|r| r == "SuccessfulCreate"),
        "{reasons:?}"
    );
    // The job runs and the CronJob sees it finish.
    eventually(Duration::from_secs(90), "last successful time", || async {
        let cj = get(&c, "/apis/batch/v1/namespaces/default/cronjobs/tick").await;
        (cj["status"]["lastSuccessfulTime"].is_string() && cj["status"].get("active").is_none())
            .then_some(())
    })
    .await;
    // kubectl reads the CronJob and creates a Job from its template, client-side.
    k.ok(&["create", "job", "by-hand", "--from=cronjob/tick"]);
    let manual = job(&c, "by-hand").await;
    assert_eq!(
        manual["metadata"]["annotations"]["cronjob.kubernetes.io/instantiate"], "manual",
        "{manual}"
    );
    assert_eq!(manual["metadata"]["ownerReferences"][0]["name"], "tick");
    k.ok(&[
        "wait",
        "--for=condition=complete",
        "job/by-hand",
        "--timeout=90s",
    ]);
    finish(c, &cleanup).await;
}

const PYTHON_BATCH: &str = r#"
import sys
from kubernetes import client, config
config.load_kube_config(config_file=sys.argv[1])
batch = client.BatchV1Api()
ns = "default"
container = client.V1Container(name="main", image="skiff/busybox:latest", command=["sleep", "60"])
template = client.V1PodTemplateSpec(spec=client.V1PodSpec(restart_policy="Never", containers=[container]))
job = client.V1Job(metadata=client.V1ObjectMeta(name="py-job"),
                   spec=client.V1JobSpec(template=template, parallelism=1, completions=2, backoff_limit=2))
created = batch.create_namespaced_job(ns, job)
assert created.spec.selector.match_labels["batch.kubernetes.io/controller-uid"] == created.metadata.uid
read = batch.read_namespaced_job("py-job", ns)
assert read.spec.completions == 2 and read.spec.backoff_limit == 2
patched = batch.patch_namespaced_job("py-job", ns, {"spec": {"parallelism": 2}, "metadata": {"labels": {"team": "py"}}})
assert patched.spec.parallelism == 2 and patched.metadata.labels["team"] == "py"
assert any(j.metadata.name == "py-job" for j in batch.list_namespaced_job(ns).items)
status = batch.read_namespaced_job_status("py-job", ns)
assert status.status is not None
batch.delete_namespaced_job("py-job", ns, propagation_policy="Background")

cron = client.V1CronJob(metadata=client.V1ObjectMeta(name="py-cron"),
    spec=client.V1CronJobSpec(schedule="@hourly", time_zone="Europe/Paris",
        job_template=client.V1JobTemplateSpec(spec=client.V1JobSpec(template=template))))
made = batch.create_namespaced_cron_job(ns, cron)
assert made.spec.concurrency_policy == "Allow" and made.spec.successful_jobs_history_limit == 3
patched = batch.patch_namespaced_cron_job("py-cron", ns, {"spec": {"suspend": True}})
assert patched.spec.suspend is True
assert batch.read_namespaced_cron_job("py-cron", ns).spec.time_zone == "Europe/Paris"
batch.delete_namespaced_cron_job("py-cron", ns)
try:
    batch.read_namespaced_cron_job("py-cron", ns)
    raise AssertionError("still there")
except client.exceptions.ApiException as e:
    assert e.status == 404, e
print("ok")
"#;

#[tokio::test]
async fn the_official_python_client_drives_jobs_and_cron_jobs() {
    // No nodes: the Job's pods stay pending, which is all the client needs here.
    let c = TestCluster::start();
    let kubeconfig = c.kubeconfig.clone();
    let out = tokio::task::spawn_blocking(move || python_client(PYTHON_BATCH, &kubeconfig, &[]))
        .await
        .expect("python thread");
    assert_eq!(out, "ok");
    eventually(
        Duration::from_secs(30),
        "the job and its pods gone",
        || async {
            let (code, _) =
                call(client().get(c.url("/apis/batch/v1/namespaces/default/jobs/py-job"))).await;
            let pods = get(&c, "/api/v1/namespaces/default/pods").await;
            (code == 404 && pods["items"].as_array().is_some_and(Vec::is_empty)).then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn invalid_jobs_and_cron_jobs_are_refused_with_kubernetes_field_paths() {
    let c = TestCluster::api_only();
    let cron = json!({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "bad"},
        "spec": {"schedule": "every minute", "jobTemplate": {"spec": {"template": {"spec": {
            "restartPolicy": "Never", "containers": [{"name": "c", "image": IMAGE}]}}}}}});
    let (code, out) = call(
        client()
            .post(c.url("/apis/batch/v1/namespaces/default/cronjobs"))
            .json(&cron),
    )
    .await;
    assert_eq!(code, 422, "{out}");
    assert_eq!(out["reason"], "Invalid");
    assert_eq!(
        out["details"]["causes"][0]["field"], "spec.schedule",
        "{out}"
    );
    assert_eq!(
        out["message"],
        "CronJob.batch \"bad\" is invalid: spec.schedule: Invalid value: \"every minute\": expected exactly 5 fields, found 2: [every minute]"
    );
    // The same through kubectl, as a user sees it.
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("bad.json");
    std::fs::write(&file, cron.to_string()).expect("write");
    let (code, _, err) = kubectl(
        &c.kubeconfig,
        &["create", "-f", &file.display().to_string()],
    );
    assert_ne!(code, 0);
    assert!(
        err.contains("spec.schedule: Invalid value: \"every minute\""),
        "{err}"
    );

    let job = json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "mismatch"},
        "spec": {"manualSelector": true, "selector": {"matchLabels": {"app": "a"}},
            "template": {"metadata": {"labels": {"app": "b"}}, "spec": {
                "restartPolicy": "Never", "containers": [{"name": "c", "image": IMAGE}]}}}});
    let (code, out) = call(
        client()
            .post(c.url("/apis/batch/v1/namespaces/default/jobs"))
            .json(&job),
    )
    .await;
    assert_eq!(code, 422, "{out}");
    let causes = out["details"]["causes"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        causes
            .iter()
            .any(|c| c["field"] == "spec.template.metadata.labels"
                && c["message"]
                    .as_str()
                    .is_some_and(|m| m.ends_with("`selector` does not match template `labels`"))),
        "{out}"
    );
    // A field this server does not act on is refused, not stored and ignored.
    let mut policy = job.clone();
    policy["metadata"]["name"] = json!("with-success-policy");
    policy["spec"] = json!({"successPolicy": {"rules": [{"succeededCount": 1}]},
        "completionMode": "Indexed", "completions": 2,
        "template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": IMAGE}]}}});
    let (code, out) = call(
        client()
            .post(c.url("/apis/batch/v1/namespaces/default/jobs"))
            .json(&policy),
    )
    .await;
    assert_eq!(code, 422, "{out}");
    assert_eq!(
        out["details"]["causes"][0]["field"], "spec.successPolicy",
        "{out}"
    );
}

#[tokio::test]
async fn deadlines_suspension_and_ttl_after_finished_act_as_in_kubernetes() {
    skiff_integration::require_docker_and_kubectl();
    let nodes = node_names("jobs-life", 1);
    let cleanup = DockerCleanup::new(&nodes);
    let c = cluster(&nodes, None);
    let k = Kubectl(&c.kubeconfig);

    // A Job still running at its active deadline fails with DeadlineExceeded, pods gone.
    create_job(
        &c,
        job_body("late", json!({"activeDeadlineSeconds": 3}), "sleep 120"),
    )
    .await;
    k.ok(&[
        "wait",
        "--for=condition=failed",
        "job/late",
        "--timeout=60s",
    ]);
    let j = job(&c, "late").await;
    let failed = condition(&j, "Failed").expect("Failed");
    assert_eq!(failed["reason"], "DeadlineExceeded", "{j}");
    assert_eq!(
        failed["message"],
        "Job was active longer than specified deadline"
    );
    assert!(events_for(&c, "late")
        .await
        .iter()
        .any(|r| r == "DeadlineExceeded"));
    eventually(Duration::from_secs(60), "the late pod gone", || async {
        pods_of(&c, "late").await.is_empty().then_some(())
    })
    .await;

    // A suspended Job starts no pod and says so; resumed, it runs to completion.
    create_job(&c, job_body("later", json!({"suspend": true}), "true")).await;
    let j = eventually(Duration::from_secs(20), "Suspended", || async {
        let j = job(&c, "later").await;
        condition(&j, "Suspended").is_some().then_some(j)
    })
    .await;
    assert_eq!(
        condition(&j, "Suspended").expect("Suspended")["reason"],
        "JobSuspended"
    );
    assert!(pods_of(&c, "later").await.is_empty());
    let out = k.ok(&["get", "job", "later"]);
    assert!(out.contains("Suspended"), "{out}");
    k.ok(&[
        "patch",
        "job",
        "later",
        "--type=merge",
        "-p",
        r#"{"spec":{"suspend":false}}"#,
    ]);
    k.ok(&[
        "wait",
        "--for=condition=complete",
        "job/later",
        "--timeout=60s",
    ]);
    let j = job(&c, "later").await;
    let resumed = j["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Suspended"))
        .cloned()
        .expect("Suspended condition");
    assert_eq!(resumed["status"], "False", "{j}");
    assert_eq!(resumed["reason"], "JobResumed");

    // A finished Job with a TTL is deleted with its pods once it expires.
    create_job(
        &c,
        job_body("brief", json!({"ttlSecondsAfterFinished": 1}), "true"),
    )
    .await;
    eventually(
        Duration::from_secs(60),
        "the job deleted after its TTL",
        || async {
            let (code, _) =
                call(client().get(c.url("/apis/batch/v1/namespaces/default/jobs/brief"))).await;
            (code == 404 && pods_of(&c, "brief").await.is_empty()).then_some(())
        },
    )
    .await;
    finish(c, &cleanup).await;
}

#[tokio::test]
async fn a_cron_jobs_concurrency_policy_forbids_then_replaces_a_running_job() {
    skiff_integration::require_docker_and_kubectl();
    let nodes = node_names("jobs-conc", 1);
    let cleanup = DockerCleanup::new(&nodes);
    let (shared, fake) = SharedClock::fake(chrono::Utc::now());
    let c = cluster(&nodes, Some(shared));
    let cron = json!({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "slow"},
        "spec": {"schedule": "*/5 * * * *", "concurrencyPolicy": "Forbid",
            "jobTemplate": {"spec": {"template": {"spec": {"restartPolicy": "Never",
                "containers": [{"name": "main", "image": IMAGE, "command": ["sleep", "600"]}]}}}}}});
    let (code, out) = call(
        client()
            .post(c.url("/apis/batch/v1/namespaces/default/cronjobs"))
            .json(&cron),
    )
    .await;
    assert_eq!(code, 201, "{out}");
    let cron_path = "/apis/batch/v1/namespaces/default/cronjobs/slow";
    let owned = || async {
        let list = get(&c, "/apis/batch/v1/namespaces/default/jobs").await;
        list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|j| j["metadata"]["ownerReferences"][0]["name"] == "slow")
            .filter(|j| j["metadata"].get("deletionTimestamp").is_none())
            .filter_map(|j| j["metadata"]["name"].as_str().map(str::to_string))
            .collect::<Vec<String>>()
    };
    fake.advance(Duration::from_secs(5 * 60 + 30));
    let first = eventually(Duration::from_secs(30), "the first job", || async {
        let jobs = owned().await;
        (jobs.len() == 1).then(|| jobs[0].clone())
    })
    .await;
    // Still running at the next time: Forbid skips it, and says why.
    fake.advance(Duration::from_secs(5 * 60));
    eventually(Duration::from_secs(30), "JobAlreadyActive", || async {
        events_for(&c, "slow")
            .await
            .iter()
            .any(|r| r == "JobAlreadyActive")
            .then_some(())
    })
    .await;
    assert_eq!(owned().await, std::slice::from_ref(&first));
    // Replace deletes the running Job and starts the one now due.
    let (code, out) = call(
        client()
            .patch(c.url(cron_path))
            .header("Content-Type", "application/merge-patch+json")
            .body(r#"{"spec":{"concurrencyPolicy":"Replace"}}"#),
    )
    .await;
    assert_eq!(code, 200, "{out}");
    let second = eventually(Duration::from_secs(30), "the replacing job", || async {
        let jobs = owned().await;
        (jobs.len() == 1 && jobs[0] != first).then(|| jobs[0].clone())
    })
    .await;
    let cj = eventually(Duration::from_secs(30), "the status listing it", || async {
        let cj = get(&c, cron_path).await;
        let listed = cj["status"]["active"].as_array().map(|a| {
            a.iter()
                .filter_map(|r| r["name"].as_str())
                .collect::<Vec<_>>()
                == [second.as_str()]
        });
        (listed == Some(true)).then_some(cj)
    })
    .await;
    let scheduled = chrono::DateTime::parse_from_rfc3339(
        cj["status"]["lastScheduleTime"].as_str().expect("time"),
    )
    .expect("rfc3339");
    assert_eq!(
        format!("slow-{}", scheduled.timestamp() / 60),
        second,
        "{cj}"
    );
    assert!(events_for(&c, "slow")
        .await
        .iter()
        .any(|r| r == "SuccessfulDelete"));
    finish(c, &cleanup).await;
}
