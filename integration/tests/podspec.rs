//! The pod spec on the real Docker Engine with the machine's kubectl: init containers (in
//! order, `Init:` statuses, a failure failing a `Never` pod), a sidecar init container kept
//! running, `postStart` and `preStop` hooks, `runAsUser`, `readOnlyRootFilesystem` and
//! `runAsNonRoot`, termination messages, the kubelet-managed `/etc/hosts` with
//! `hostAliases`, `activeDeadlineSeconds`; and the fields skiff does not run, refused
//! with 422.
//!
//! Each test runs its own cluster with one Docker node of its own, so the tests run in
//! parallel and each removes its containers (even when it fails).

use std::time::Duration;

use serde_json::{json, Value};
use skiff_integration::{
    call, client, eventually, node_names, DockerCleanup, Kubectl, TestCluster,
};

const PODS: &str = "/api/v1/namespaces/default/pods";
const WAIT: Duration = Duration::from_secs(60);

/// A cluster with one Docker node, removing the node's containers when dropped.
struct Node {
    c: TestCluster,
    _cleanup: DockerCleanup,
}

fn node(prefix: &str) -> Node {
    skiff_integration::require_docker_and_kubectl();
    let names = node_names(prefix, 1);
    let cleanup = DockerCleanup::new(&names);
    Node {
        c: TestCluster::with_docker_nodes(&names),
        _cleanup: cleanup,
    }
}

impl Node {
    fn kubectl(&self) -> Kubectl<'_> {
        Kubectl(&self.c.kubeconfig)
    }

    /// `kubectl apply` of a manifest.
    fn apply(&self, manifest: &str) {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("pod.yaml");
        std::fs::write(&file, manifest).expect("write manifest");
        self.kubectl()
            .ok(&["apply", "-f", file.to_str().unwrap_or_default()]);
    }

    async fn pod(&self, name: &str) -> Value {
        call(client().get(self.c.url(&format!("{PODS}/{name}"))))
            .await
            .1
    }

    /// Wait until the pod satisfies `f`.
    async fn wait_for(&self, name: &str, what: &str, f: impl Fn(&Value) -> bool) -> Value {
        eventually(WAIT, what, || async {
            let p = self.pod(name).await;
            f(&p).then_some(p)
        })
        .await
    }

    /// The STATUS column of `kubectl get pod`.
    fn status_column(&self, name: &str) -> String {
        let out = self.kubectl().ok(&["get", "pod", name, "--no-headers"]);
        out.split_whitespace()
            .nth(2)
            .unwrap_or_default()
            .to_string()
    }

    fn logs(&self, args: &[&str]) -> String {
        let mut all = vec!["logs"];
        all.extend_from_slice(args);
        self.kubectl().ok(&all)
    }
}

fn phase(p: &Value) -> &str {
    p["status"]["phase"].as_str().unwrap_or_default()
}

fn running(status: &Value) -> bool {
    status["state"]["running"].is_object()
}

const INIT_FIRST: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: init-first
spec:
  terminationGracePeriodSeconds: 1
  initContainers:
  - name: prepare
    image: skiff/busybox:latest
    imagePullPolicy: Never
    command: ["sh", "-c", "sleep 3; echo prepared"]
  containers:
  - name: app
    image: skiff/busybox:latest
    imagePullPolicy: Never
    command: ["sh", "-c", "echo app started; sleep 3600"]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_init_container_finishes_before_the_app_container_starts() {
    let n = node("init");
    n.apply(INIT_FIRST);
    // While the init container runs, the pod reads Init:0/1 in kubectl.
    eventually(WAIT, "Init:0/1 in kubectl get pods", || async {
        (n.status_column("init-first") == "Init:0/1").then_some(())
    })
    .await;
    let p = n.pod("init-first").await;
    assert_eq!(phase(&p), "Pending", "{p}");
    assert_eq!(
        p["status"]["containerStatuses"][0]["state"]["waiting"]["reason"], "PodInitializing",
        "{p}"
    );
    let init = p["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "Initialized").cloned())
        .unwrap_or_default();
    assert_eq!(init["status"], "False", "{p}");

    let p = n
        .wait_for("init-first", "the app running", |p| {
            running(&p["status"]["containerStatuses"][0])
        })
        .await;
    let init = &p["status"]["initContainerStatuses"][0];
    assert_eq!(init["state"]["terminated"]["reason"], "Completed", "{p}");
    let finished = init["state"]["terminated"]["finishedAt"]
        .as_str()
        .unwrap_or_default();
    let started = p["status"]["containerStatuses"][0]["state"]["running"]["startedAt"]
        .as_str()
        .unwrap_or_default();
    assert!(
        !finished.is_empty() && started >= finished,
        "app started {started}, init finished {finished}"
    );
    assert_eq!(n.status_column("init-first"), "Running");
    assert!(n
        .logs(&["init-first", "-c", "prepare"])
        .contains("prepared"));
}

const INIT_FAILS: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: init-fails
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 1
  initContainers:
  - name: check
    image: skiff/busybox:latest
    imagePullPolicy: Never
    command: ["sh", "-c", "exit 3"]
  containers:
  - name: app
    image: skiff/busybox:latest
    imagePullPolicy: Never
    command: ["sleep", "3600"]
"#;

const SIDECAR: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: sidecar
spec:
  terminationGracePeriodSeconds: 1
  initContainers:
  - name: proxy
    image: skiff/busybox:latest
    imagePullPolicy: Never
    restartPolicy: Always
    command: ["sleep", "3600"]
  - name: after-proxy
    image: skiff/busybox:latest
    imagePullPolicy: Never
    command: ["true"]
  containers:
  - name: app
    image: skiff/busybox:latest
    imagePullPolicy: Never
    command: ["sleep", "3600"]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_init_container_fails_a_never_pod_and_a_sidecar_keeps_running() {
    let n = node("initfail");
    n.apply(INIT_FAILS);
    n.apply(SIDECAR);
    let p = n
        .wait_for("init-fails", "the pod Failed", |p| phase(p) == "Failed")
        .await;
    assert_eq!(
        p["status"]["initContainerStatuses"][0]["state"]["terminated"]["exitCode"], 3,
        "{p}"
    );
    assert!(
        p["status"]["containerStatuses"][0]["state"]["waiting"].is_object(),
        "the app never ran: {p}"
    );
    assert_eq!(n.status_column("init-fails"), "Init:Error");

    let p = n
        .wait_for("sidecar", "app and sidecar running", |p| {
            running(&p["status"]["containerStatuses"][0])
                && running(&p["status"]["initContainerStatuses"][0])
        })
        .await;
    let side = &p["status"]["initContainerStatuses"][0];
    assert_eq!(side["started"], true, "{p}");
    assert_eq!(
        p["status"]["initContainerStatuses"][1]["state"]["terminated"]["reason"], "Completed",
        "{p}"
    );
    let out = n.kubectl().ok(&["get", "pod", "sidecar", "--no-headers"]);
    assert!(out.contains("2/2") && out.contains("Running"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_start_runs_after_the_start_and_pre_stop_runs_on_delete() {
    let n = node("hooks");
    // The witness prints what it is sent: the preStop hook of the other pod reports to it.
    n.apply(
        r#"
apiVersion: v1
kind: Pod
metadata:
  name: witness
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: nc
    image: skiff/busybox:latest
    imagePullPolicy: Never
    command: ["sh", "-c", "while true; do nc -l -p 9000; done"]
"#,
    );
    let w = n
        .wait_for("witness", "the witness running", |p| {
            running(&p["status"]["containerStatuses"][0]) && p["status"]["podIP"].is_string()
        })
        .await;
    let ip = w["status"]["podIP"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    n.apply(&format!(
        r#"
apiVersion: v1
kind: Pod
metadata:
  name: hooked
spec:
  terminationGracePeriodSeconds: 10
  containers:
  - name: app
    image: skiff/busybox:latest
    imagePullPolicy: Never
    command: ["sh", "-c", "until [ -f /tmp/hooked ]; do sleep 0.1; done; echo saw $(cat /tmp/hooked); sleep 3600"]
    lifecycle:
      postStart:
        exec:
          command: ["sh", "-c", "echo post-start > /tmp/hooked"]
      preStop:
        exec:
          command: ["sh", "-c", "echo pre-stop-ran | nc {ip} 9000"]
"#
    ));
    n.wait_for("hooked", "running", |p| {
        running(&p["status"]["containerStatuses"][0])
    })
    .await;
    eventually(WAIT, "the container saw the postStart hook", || async {
        n.logs(&["hooked"]).contains("saw post-start").then_some(())
    })
    .await;
    n.kubectl()
        .ok(&["delete", "pod", "hooked", "--wait=true", "--timeout=60s"]);
    eventually(WAIT, "the preStop hook reached the witness", || async {
        n.logs(&["witness"]).contains("pre-stop-ran").then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn security_context_sets_the_user_a_read_only_root_and_refuses_root_for_non_root() {
    let n = node("sec");
    n.apply(
        r#"
apiVersion: v1
kind: Pod
metadata:
  name: secure
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 1
  securityContext:
    runAsUser: 1234
    runAsGroup: 2345
    fsGroup: 3456
  containers:
  - name: app
    image: skiff/busybox:latest
    imagePullPolicy: Never
    command: ["sh", "-c", "id -u; id -G; touch /probe-write || echo write refused"]
    securityContext:
      readOnlyRootFilesystem: true
      allowPrivilegeEscalation: false
      capabilities:
        drop: ["ALL"]
---
apiVersion: v1
kind: Pod
metadata:
  name: nonroot
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: skiff/busybox:latest
    imagePullPolicy: Never
    command: ["sleep", "3600"]
    securityContext:
      runAsNonRoot: true
"#,
    );
    n.wait_for("secure", "the pod finished", |p| phase(p) == "Succeeded")
        .await;
    let logs = n.logs(&["secure"]);
    // stdout in order; touch's complaint goes to stderr, which the engine keeps apart and
    // may hand over first.
    let mut lines = logs.lines().filter(|l| !l.starts_with("touch:"));
    assert_eq!(lines.next(), Some("1234"), "{logs}");
    let groups = lines.next().unwrap_or_default();
    assert!(groups.contains("2345") && groups.contains("3456"), "{logs}");
    assert!(logs.contains("Read-only file system"), "{logs}");
    assert!(logs.contains("write refused"), "{logs}");

    let p = n
        .wait_for("nonroot", "CreateContainerConfigError", |p| {
            p["status"]["containerStatuses"][0]["state"]["waiting"]["reason"]
                == "CreateContainerConfigError"
        })
        .await;
    let message = p["status"]["containerStatuses"][0]["state"]["waiting"]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(
        message.starts_with("container has runAsNonRoot and image will run as root"),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn termination_messages_and_the_managed_hosts_file_are_what_the_kubelet_gives() {
    let n = node("msg");
    n.apply(
        r#"
apiVersion: v1
kind: Pod
metadata:
  name: messages
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 1
  hostname: db
  subdomain: backend
  hostAliases:
  - ip: "10.9.8.7"
    hostnames: ["foo.local", "bar.local"]
  containers:
  - name: file
    image: skiff/busybox:latest
    imagePullPolicy: Never
    command: ["sh", "-c", "cat /etc/hosts; hostname; printf bye > /tmp/why; exit 2"]
    terminationMessagePath: /tmp/why
  - name: logs
    image: skiff/busybox:latest
    imagePullPolicy: Never
    command: ["sh", "-c", "echo from the log; exit 1"]
    terminationMessagePolicy: FallbackToLogsOnError
"#,
    );
    let p = n
        .wait_for("messages", "the pod Failed", |p| phase(p) == "Failed")
        .await;
    let statuses = p["status"]["containerStatuses"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let of = |name: &str| {
        statuses
            .iter()
            .find(|s| s["name"] == name)
            .map(|s| s["state"]["terminated"]["message"].clone())
            .unwrap_or_default()
    };
    assert_eq!(of("file"), "bye", "{p}");
    assert_eq!(of("logs"), "from the log\n", "{p}");

    let ip = p["status"]["podIP"].as_str().unwrap_or_default();
    let out = n.logs(&["messages", "-c", "file"]);
    assert!(
        out.starts_with("# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n"),
        "{out}"
    );
    assert!(
        out.contains(&format!("{ip}\tdb.backend.default.svc.cluster.local\tdb\n")),
        "{out}"
    );
    assert!(
        out.contains("\n# Entries added by HostAliases.\n10.9.8.7\tfoo.local\tbar.local\n"),
        "{out}"
    );
    assert!(out.trim_end().ends_with("db"), "hostname: {out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_past_its_active_deadline_fails_with_deadline_exceeded() {
    let n = node("deadline");
    n.apply(
        r#"
apiVersion: v1
kind: Pod
metadata:
  name: deadline
spec:
  activeDeadlineSeconds: 3
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: skiff/busybox:latest
    imagePullPolicy: Never
    command: ["sleep", "3600"]
"#,
    );
    let p = n
        .wait_for("deadline", "the pod Failed", |p| phase(p) == "Failed")
        .await;
    assert_eq!(p["status"]["reason"], "DeadlineExceeded", "{p}");
    assert_eq!(
        p["status"]["message"], "Pod was active on the node longer than the specified deadline",
        "{p}"
    );
    let p = n
        .wait_for("deadline", "the container stopped", |p| {
            p["status"]["containerStatuses"][0]["state"]["terminated"].is_object()
        })
        .await;
    assert_eq!(phase(&p), "Failed");
}

#[tokio::test]
async fn pod_spec_fields_skiff_does_not_run_are_refused_with_422_naming_the_field() {
    let c = TestCluster::api_only();
    for (extra, container_extra, field) in [
        (
            json!({"ephemeralContainers": [{"name": "dbg", "image": "busybox"}]}),
            json!({}),
            "spec.ephemeralContainers",
        ),
        (
            json!({"runtimeClassName": "gvisor"}),
            json!({}),
            "spec.runtimeClassName",
        ),
        (json!({"hostUsers": false}), json!({}), "spec.hostUsers"),
        (
            json!({"os": {"name": "windows"}}),
            json!({}),
            "spec.os.name",
        ),
        (
            json!({}),
            json!({"resizePolicy": [{"resourceName": "cpu", "restartPolicy": "NotRequired"}]}),
            "spec.containers[0].resizePolicy",
        ),
        (
            json!({}),
            json!({"securityContext": {"procMount": "Unmasked"}}),
            "spec.containers[0].securityContext.procMount",
        ),
        (
            json!({}),
            json!({"securityContext": {"seccompProfile": {"type": "Localhost", "localhostProfile": "x.json"}}}),
            "spec.containers[0].securityContext.seccompProfile.type",
        ),
        (
            json!({}),
            json!({"livenessProbe": {"grpc": {"port": 9000}}}),
            "spec.containers[0].livenessProbe.grpc",
        ),
    ] {
        let mut pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "refused"},
            "spec": {"containers": [{"name": "app", "image": "busybox"}]}});
        for (k, v) in extra.as_object().into_iter().flatten() {
            pod["spec"][k] = v.clone();
        }
        for (k, v) in container_extra.as_object().into_iter().flatten() {
            pod["spec"]["containers"][0][k] = v.clone();
        }
        let (code, status) = call(client().post(c.url(PODS)).json(&pod)).await;
        assert_eq!(code, 422, "{field}: {status}");
        assert_eq!(status["reason"], "Invalid", "{status}");
        let fields: Vec<&str> = status["details"]["causes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["field"].as_str())
            .collect();
        assert!(fields.contains(&field), "{field} in {status}");
    }
}
