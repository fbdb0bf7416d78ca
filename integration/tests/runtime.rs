//! `DockerRuntime` against the real Docker Engine: the pause image built locally, pod
//! networking (pod IP from the host, localhost between containers), exit states, pull
//! policies and logs. Skipped, with a note, on a machine without the engine's socket.
//!
//! Each test uses its own node name, so tests run in parallel without seeing each other's
//! containers, and a guard removes that node's containers even when an assertion fails.

use std::path::Path;
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use skiff_actors::kubelet::runtime::docker::DockerRuntime;
use skiff_actors::kubelet::runtime::images::{self, BUSYBOX_IMAGE, DEBIAN_BUSYBOX};
use skiff_actors::kubelet::runtime::{
    ContainerSpec, ContainerState, LogOptions, PodRef, PullPolicy, Runtime, RuntimeError,
    SandboxSpec,
};
use skiff_integration::eventually;

const SOCKET: &str = "/var/run/docker.sock";

/// Builds the busybox test image at most once per test process.
static BUSYBOX: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();

fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{prefix}-{}-{nanos:x}", std::process::id())
}

/// Removes every container of `node` (and the listed images) when dropped, from a fresh
/// runtime on its own thread: the test's runtime may be gone or panicking by then.
struct Cleanup {
    node: String,
    images: Vec<String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let node = self.node.clone();
        let images = std::mem::take(&mut self.images);
        let cleanup = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                let Ok(docker) = DockerRuntime::connect().await else {
                    return;
                };
                for container in docker.list(&node).await.unwrap_or_default() {
                    if let Err(e) = docker.remove(&container.id).await {
                        eprintln!("cleanup: container {}: {e}", container.id);
                    }
                }
                for image in images {
                    if let Err(e) = docker.remove_image(&image).await {
                        eprintln!("cleanup: image {image}: {e}");
                    }
                }
            });
        });
        let _ = cleanup.join();
    }
}

/// A connected runtime and a cleanup guard for `node`, or None (with a note) when the
/// machine has no Docker Engine.
async fn setup(test: &str) -> Option<(DockerRuntime, String, Cleanup)> {
    if !Path::new(SOCKET).exists() {
        eprintln!("skipping {test}: no Docker Engine socket at {SOCKET}");
        return None;
    }
    let rt = DockerRuntime::connect()
        .await
        .expect("connect to the Docker Engine");
    BUSYBOX
        .get_or_init(|| async {
            images::ensure_busybox_image(rt.docker(), Path::new(DEBIAN_BUSYBOX))
                .await
                .expect("build the busybox test image from busybox-static");
        })
        .await;
    let node = unique(test);
    let guard = Cleanup {
        node: node.clone(),
        images: vec![],
    };
    Some((rt, node, guard))
}

fn pod_ref(node: &str, name: &str) -> PodRef {
    PodRef {
        uid: unique(name),
        name: name.to_string(),
        namespace: "default".into(),
        node: node.to_string(),
    }
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

async fn sandbox(rt: &DockerRuntime, pod: &PodRef) -> (String, String) {
    let info = rt
        .run_sandbox(&SandboxSpec {
            pod: pod.clone(),
            hostname: pod.name.clone(),
            host_ports: vec![],
            ..Default::default()
        })
        .await
        .expect("sandbox runs");
    (info.id, info.ip)
}

fn busybox(pod: &PodRef, sandbox_id: &str, name: &str, command: &[&str]) -> ContainerSpec {
    ContainerSpec {
        pod: Some(pod.clone()),
        name: name.to_string(),
        image: BUSYBOX_IMAGE.to_string(),
        command: strings(command),
        sandbox_id: sandbox_id.to_string(),
        ..Default::default()
    }
}

async fn wait_exited(rt: &DockerRuntime, id: &str) -> ContainerState {
    eventually(Duration::from_secs(20), &format!("{id} exited"), || async {
        let state = rt.inspect(id).await.expect("inspect").state;
        matches!(state, ContainerState::Exited { .. }).then_some(state)
    })
    .await
}

async fn http_get(url: &str) -> String {
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(2))
        .build()
        .expect("http client");
    eventually(Duration::from_secs(15), &format!("GET {url}"), || async {
        match client.get(url).send().await {
            Ok(resp) if resp.status().is_success() => Some(resp.text().await.expect("body")),
            _ => None,
        }
    })
    .await
}

#[tokio::test]
async fn pause_image_is_built_when_missing_and_the_pod_ip_serves_http_from_the_host() {
    let Some((rt, node, mut guard)) = setup("it-pause").await else {
        return;
    };
    // A tag of its own, so removing it cannot disturb other tests' sandboxes.
    let pause_tag = format!("skiff/pause:{}", unique("test"));
    guard.images.push(pause_tag.clone());
    let rt = rt.with_pause_image(pause_tag.clone());
    rt.remove_image(&pause_tag).await.unwrap();
    assert!(!images::image_present(rt.docker(), &pause_tag)
        .await
        .unwrap());

    let pod = pod_ref(&node, "web");
    let (sandbox_id, ip) = sandbox(&rt, &pod).await;
    assert!(images::image_present(rt.docker(), &pause_tag)
        .await
        .unwrap());
    assert!(ip.parse::<std::net::Ipv4Addr>().is_ok(), "pod IP {ip:?}");

    let mut server = busybox(
        &pod,
        &sandbox_id,
        "server",
        &[
            "sh",
            "-c",
            "echo hello-from-skiff > /tmp/index.html && exec httpd -f -p 8080 -h /tmp",
        ],
    );
    // Limits must be accepted by the engine (cgroup CPU quota and memory).
    server.cpu_limit_millis = Some(500);
    server.memory_limit_bytes = Some(64 << 20);
    rt.start_container(&server).await.expect("server starts");
    let body = http_get(&format!("http://{ip}:8080/")).await;
    assert_eq!(body.trim(), "hello-from-skiff");

    // A second container of the pod reaches the first on localhost.
    let client = rt
        .start_container(&busybox(&pod, &sandbox_id, "client", &["sleep", "3600"]))
        .await
        .expect("client starts");
    let fetched = rt
        .exec(
            &client,
            &strings(&["wget", "-qO-", "http://127.0.0.1:8080/"]),
            Duration::from_secs(10),
        )
        .await
        .expect("exec");
    assert_eq!(fetched.exit_code, 0, "output: {}", fetched.output);
    assert!(fetched.output.contains("hello-from-skiff"));

    // Both share the sandbox's hostname (UTS follows the network namespace).
    let hostname = rt
        .exec(&client, &strings(&["hostname"]), Duration::from_secs(10))
        .await
        .expect("exec hostname");
    assert_eq!(hostname.output.trim(), "web");

    // Adoption: the node's containers are found again by their labels.
    let listed = rt.list(&node).await.unwrap();
    assert_eq!(listed.len(), 3);
    assert!(listed.iter().all(|c| c.pod_uid() == Some(pod.uid.as_str())));
    assert_eq!(listed.iter().filter(|c| c.is_sandbox()).count(), 1);
    assert_eq!(rt.sandbox_ip(&sandbox_id).await.unwrap(), ip);
}

#[tokio::test]
async fn exit_codes_become_completed_and_error_states() {
    let Some((rt, node, _guard)) = setup("it-exit").await else {
        return;
    };
    let pod = pod_ref(&node, "jobs");
    let (sandbox_id, _) = sandbox(&rt, &pod).await;

    let ok = rt
        .start_container(&busybox(&pod, &sandbox_id, "ok", &["true"]))
        .await
        .unwrap();
    let failing = rt
        .start_container(&busybox(&pod, &sandbox_id, "bad", &["sh", "-c", "exit 3"]))
        .await
        .unwrap();

    match wait_exited(&rt, &ok).await {
        ContainerState::Exited {
            exit_code,
            reason,
            started_at,
            finished_at,
        } => {
            assert_eq!((exit_code, reason.as_str()), (0, "Completed"));
            assert!(chrono::DateTime::parse_from_rfc3339(&started_at).is_ok());
            assert!(chrono::DateTime::parse_from_rfc3339(&finished_at).is_ok());
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(matches!(
        wait_exited(&rt, &failing).await,
        ContainerState::Exited { exit_code: 3, reason, .. } if reason == "Error"
    ));
    let info = rt.inspect(&failing).await.unwrap();
    assert_eq!(info.container_name(), Some("bad"));
    assert_eq!(info.image, BUSYBOX_IMAGE);
    assert!(info.image_id.starts_with("sha256:"));
}

#[tokio::test]
async fn stop_is_sigterm_then_sigkill_after_the_grace_period() {
    let Some((rt, node, _guard)) = setup("it-stop").await else {
        return;
    };
    let pod = pod_ref(&node, "stopper");
    let (sandbox_id, _) = sandbox(&rt, &pod).await;
    // `sleep` as PID 1 has no SIGTERM handler, so only the SIGKILL ends it.
    let sleeper = rt
        .start_container(&busybox(&pod, &sandbox_id, "sleeper", &["sleep", "600"]))
        .await
        .unwrap();
    let exec = rt
        .exec(&sleeper, &strings(&["false"]), Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(exec.exit_code, 1);

    let started = Instant::now();
    rt.stop(&sleeper, Duration::from_secs(1)).await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(900));
    assert!(matches!(
        rt.inspect(&sleeper).await.unwrap().state,
        ContainerState::Exited { exit_code: 137, .. }
    ));

    // The pause program exits 0 on SIGTERM at once, not after the grace period.
    let started = Instant::now();
    rt.stop(&sandbox_id, Duration::from_secs(20)).await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(matches!(
        rt.inspect(&sandbox_id).await.unwrap().state,
        ContainerState::Exited { exit_code: 0, .. }
    ));

    rt.remove(&sleeper).await.unwrap();
    rt.remove(&sleeper).await.unwrap(); // removing twice is fine
    assert!(matches!(
        rt.inspect(&sleeper).await,
        Err(RuntimeError::NotFound(_))
    ));
}

#[tokio::test]
async fn pull_policies_fail_promptly_for_missing_images_and_resolve_local_ones() {
    let Some((rt, _node, _guard)) = setup("it-image").await else {
        return;
    };
    let rt = rt.with_pull_timeout(Duration::from_secs(20));

    let started = Instant::now();
    assert_eq!(
        rt.ensure_image("nope:1", PullPolicy::Never).await,
        Err(RuntimeError::ImageNeverPull("nope:1".into()))
    );
    assert!(started.elapsed() < Duration::from_secs(2));

    let started = Instant::now();
    assert!(matches!(
        rt.ensure_image("nope:1", PullPolicy::IfNotPresent).await,
        Err(RuntimeError::ImagePull { .. })
    ));
    assert!(started.elapsed() < Duration::from_secs(25));

    // No tag means `:latest`, as with the engine's CLI. Always pulls even with a local
    // copy; with no registry the pull fails (the pod worker then uses the local copy).
    let id = rt
        .ensure_image("skiff/busybox", PullPolicy::Never)
        .await
        .unwrap();
    assert!(id.starts_with("sha256:"));
    assert!(matches!(
        rt.ensure_image(BUSYBOX_IMAGE, PullPolicy::Always).await,
        Err(RuntimeError::ImagePull { .. })
    ));
    assert!(rt.version().await.unwrap().starts_with("docker://"));
}

#[tokio::test]
async fn logs_return_what_the_container_printed() {
    let Some((rt, node, _guard)) = setup("it-logs").await else {
        return;
    };
    let pod = pod_ref(&node, "talker");
    let (sandbox_id, _) = sandbox(&rt, &pod).await;
    let mut spec = busybox(
        &pod,
        &sandbox_id,
        "talker",
        &[
            "sh",
            "-c",
            "echo \"$GREETING\"; pwd; echo to-stderr >&2; sleep 0.3; echo last",
        ],
    );
    spec.env = vec![("GREETING".into(), "hello logs".into())];
    spec.working_dir = Some("/tmp".into());
    let id = rt.start_container(&spec).await.unwrap();
    wait_exited(&rt, &id).await;

    // The engine copies stdout and stderr separately, so only each stream's own order
    // is guaranteed.
    let all = read_logs(&rt, &id, LogOptions::default()).await;
    let stdout: Vec<&str> = all.lines().filter(|l| *l != "to-stderr").collect();
    assert_eq!(stdout, ["hello logs", "/tmp", "last"], "{all}");
    assert!(all.lines().any(|l| l == "to-stderr"), "{all}");

    let tail = LogOptions {
        tail_lines: Some(1),
        ..Default::default()
    };
    assert_eq!(read_logs(&rt, &id, tail).await, "last\n");

    let stamped = LogOptions {
        timestamps: true,
        ..Default::default()
    };
    let first = read_logs(&rt, &id, stamped).await;
    let stamp = first.split(' ').next().unwrap_or_default();
    assert!(
        chrono::DateTime::parse_from_rfc3339(stamp).is_ok(),
        "{first}"
    );

    assert!(matches!(
        rt.logs("no-such-container", &LogOptions::default()).await,
        Err(RuntimeError::NotFound(_))
    ));
}

/// Args alone keep the image's entrypoint; the image's default CMD (`sh`) is replaced.
#[tokio::test]
async fn args_without_command_replace_only_the_image_cmd() {
    let Some((rt, node, _guard)) = setup("it-args").await else {
        return;
    };
    let pod = pod_ref(&node, "args");
    let (sandbox_id, _) = sandbox(&rt, &pod).await;
    let mut spec = busybox(&pod, &sandbox_id, "echo", &[]);
    spec.args = strings(&["echo", "from-args"]);
    let id = rt.start_container(&spec).await.unwrap();
    assert!(matches!(
        wait_exited(&rt, &id).await,
        ContainerState::Exited { exit_code: 0, .. }
    ));
    assert_eq!(
        read_logs(&rt, &id, LogOptions::default()).await,
        "from-args\n"
    );
}

async fn read_logs(rt: &DockerRuntime, id: &str, opts: LogOptions) -> String {
    let chunks: Vec<Vec<u8>> = rt
        .logs(id, &opts)
        .await
        .expect("logs")
        .map_ok(|b| b.to_vec())
        .try_collect()
        .await
        .expect("log stream");
    String::from_utf8(chunks.concat()).expect("utf-8 logs")
}

/// A memory limit is enforced without swap, and the kill is reported as `OOMKilled`.
#[tokio::test]
async fn exceeding_the_memory_limit_is_reported_as_oom_killed() {
    let Some((rt, node, _guard)) = setup("it-oom").await else {
        return;
    };
    let pod = pod_ref(&node, "hog");
    let (sandbox_id, _) = sandbox(&rt, &pod).await;
    let mut spec = busybox(
        &pod,
        &sandbox_id,
        "hog",
        &[
            "sh",
            "-c",
            "x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo survived",
        ],
    );
    spec.memory_limit_bytes = Some(16 << 20);
    let id = rt.start_container(&spec).await.unwrap();
    assert!(matches!(
        wait_exited(&rt, &id).await,
        ContainerState::Exited { reason, .. } if reason == "OOMKilled"
    ));
}

/// Host ports are published on the sandbox, so the pod answers on the host's port.
#[tokio::test]
async fn host_ports_are_published_on_the_sandbox() {
    let Some((rt, node, _guard)) = setup("it-hostport").await else {
        return;
    };
    let host_port = free_port();
    let pod = pod_ref(&node, "published");
    let info = rt
        .run_sandbox(&SandboxSpec {
            pod: pod.clone(),
            hostname: pod.name.clone(),
            host_ports: vec![(8080, host_port, "TCP".into())],
            ..Default::default()
        })
        .await
        .expect("sandbox with a host port");
    rt.start_container(&busybox(
        &pod,
        &info.id,
        "server",
        &[
            "sh",
            "-c",
            "echo published > /tmp/index.html && exec httpd -f -p 8080 -h /tmp",
        ],
    ))
    .await
    .unwrap();
    let body = http_get(&format!("http://127.0.0.1:{host_port}/")).await;
    assert_eq!(body.trim(), "published");
}

/// An exec that outlives its timeout is an error (a failed probe), returned on time.
#[tokio::test]
async fn exec_past_its_timeout_fails_promptly() {
    let Some((rt, node, _guard)) = setup("it-exec").await else {
        return;
    };
    let pod = pod_ref(&node, "slow");
    let (sandbox_id, _) = sandbox(&rt, &pod).await;
    let id = rt
        .start_container(&busybox(&pod, &sandbox_id, "slow", &["sleep", "600"]))
        .await
        .unwrap();
    let started = Instant::now();
    let result = rt
        .exec(&id, &strings(&["sleep", "30"]), Duration::from_millis(500))
        .await;
    assert!(matches!(result, Err(RuntimeError::Failed(_))), "{result:?}");
    assert!(started.elapsed() < Duration::from_secs(3));
}

/// A port nobody listens on right now (the OS picks it; a race with another process
/// taking it before the engine does is possible but unlikely).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// `follow` streams lines as they are printed and ends when the container exits.
#[tokio::test]
async fn followed_logs_stream_until_the_container_exits() {
    let Some((rt, node, _guard)) = setup("it-follow").await else {
        return;
    };
    let pod = pod_ref(&node, "ticker");
    let (sandbox_id, _) = sandbox(&rt, &pod).await;
    let id = rt
        .start_container(&busybox(
            &pod,
            &sandbox_id,
            "ticker",
            &["sh", "-c", "echo one; sleep 1; echo two"],
        ))
        .await
        .unwrap();
    let follow = LogOptions {
        follow: true,
        ..Default::default()
    };
    let logs = tokio::time::timeout(Duration::from_secs(15), read_logs(&rt, &id, follow))
        .await
        .expect("the followed stream ends with the container");
    assert_eq!(logs, "one\ntwo\n");
}

/// A command the image lacks fails the start with the engine's message and leaves no
/// `Created` container behind to block the name of the next attempt.
#[tokio::test]
async fn a_command_that_cannot_start_fails_and_leaves_nothing_behind() {
    let Some((rt, node, _guard)) = setup("it-badcmd").await else {
        return;
    };
    let pod = pod_ref(&node, "broken");
    let (sandbox_id, _) = sandbox(&rt, &pod).await;
    let result = rt
        .start_container(&busybox(&pod, &sandbox_id, "broken", &["/no/such/binary"]))
        .await;
    match result {
        Err(RuntimeError::Failed(message)) => assert!(message.contains("no/such/binary")),
        other => panic!("unexpected {other:?}"),
    }
    let listed = rt.list(&node).await.unwrap();
    assert_eq!(listed.len(), 1, "only the sandbox remains");
    assert!(listed[0].is_sandbox());
}
