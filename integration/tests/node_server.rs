//! The node's own API as a user meets it through the API server, with the machine's
//! kubectl against a pod on the real Docker Engine: `kubectl exec` (plain, stdin piped,
//! under a pseudo-terminal, exit codes), `kubectl cp` both ways, `kubectl port-forward`
//! (pod and `svc/`, two ports, concurrent connections, a large transfer intact, a closed
//! port), `kubectl attach -i`, `kubectl debug` (ephemeral containers), `kubectl logs -f`,
//! the official Python client's `stream` and `portforward`, and refusals (a missing
//! container, a completed pod).

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use skiff_integration::{
    eventually, http_get, kubectl, node_names, python_client, DockerCleanup, Kubectl, PortForward,
    TestCluster,
};

/// A pod serving HTTP on 8080 (a file of 4 MiB and a greeting) and echoing on 9090.
const POD: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: box
  labels:
    app: box
spec:
  containers:
  - name: main
    image: skiff/busybox:latest
    command: ["sh", "-c", "mkdir -p /www && echo served > /www/index.html && head -c 4194304 /dev/urandom > /www/big && httpd -p 8080 -h /www && nc -ll -p 9090 -e cat & i=0; while true; do echo line $i; i=$((i+1)); sleep 0.2; done"]
"#;

/// A Service in front of `box`, and a pod that answers what it reads on its stdin.
const SVC_AND_TALKER: &str = r#"
apiVersion: v1
kind: Service
metadata:
  name: box
spec:
  selector:
    app: box
  ports:
  - name: http
    port: 80
    targetPort: 8080
---
apiVersion: v1
kind: Pod
metadata:
  name: talker
spec:
  containers:
  - name: main
    image: skiff/busybox:latest
    stdin: true
    command: ["sh", "-c", "echo ready; while read l; do echo got:$l; done"]
"#;

fn cluster(node: &str) -> TestCluster {
    TestCluster::with_docker_nodes(&[node.to_string()])
}

fn apply(c: &TestCluster, manifest: &str) {
    let mut child = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&c.kubeconfig)
        .args(["apply", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(manifest.as_bytes())
        .expect("write manifest");
    let out = child.wait_with_output().expect("kubectl apply");
    assert!(
        out.status.success(),
        "kubectl apply: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn ready(c: &TestCluster, pod: &str) {
    Kubectl(&c.kubeconfig).ok(&[
        "wait",
        "--for=condition=Ready",
        &format!("pod/{pod}"),
        "--timeout=90s",
    ]);
}

/// `kubectl` with stdin from `input`: exit code, stdout, stderr.
fn kubectl_stdin(c: &TestCluster, args: &[&str], input: &[u8]) -> (i32, Vec<u8>, String) {
    kubectl_stdin_with("kubectl", c, args, input)
}

fn kubectl_stdin_with(
    bin: &str,
    c: &TestCluster,
    args: &[&str],
    input: &[u8],
) -> (i32, Vec<u8>, String) {
    let mut child = Command::new(bin)
        .arg("--kubeconfig")
        .arg(&c.kubeconfig)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl");
    let mut stdin = child.stdin.take().expect("stdin");
    let data = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&data);
    });
    let out = child.wait_with_output().expect("kubectl");
    let _ = writer.join();
    (
        out.status.code().unwrap_or(-1),
        out.stdout,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_execs_copies_forwards_and_follows_logs_through_the_node_server() {
    let node = node_names("ns-exec", 1).remove(0);
    let cleanup = DockerCleanup::new(std::slice::from_ref(&node));
    let c = cluster(&node);
    let k = Kubectl(&c.kubeconfig);
    apply(&c, POD);
    ready(&c, "box");

    // Plain exec, and the exit code of the command.
    assert_eq!(k.ok(&["exec", "box", "--", "echo", "hello"]), "hello\n");
    let (code, _, _) = kubectl(&c.kubeconfig, &["exec", "box", "--", "sh", "-c", "exit 3"]);
    assert_eq!(code, 3, "kubectl exec exits with the command's code");
    let (code, out, err) = kubectl(
        &c.kubeconfig,
        &["exec", "box", "--", "sh", "-c", "echo out; echo err >&2"],
    );
    assert_eq!((code, out.as_str()), (0, "out\n"), "{err}");
    assert!(err.contains("err"), "stderr arrives on stderr: {err:?}");

    // stdin piped in and closed: `cat` sees the end of its input and exits.
    let input: Vec<u8> = (0..200_000u32).flat_map(|i| i.to_le_bytes()).collect();
    let (code, out, err) = kubectl_stdin(&c, &["exec", "-i", "box", "--", "cat"], &input);
    assert_eq!(code, 0, "{err}");
    assert!(
        out == input,
        "stdin came back through cat intact ({} of {} bytes)",
        out.len(),
        input.len()
    );

    // Under a pseudo-terminal (`script` gives kubectl one).
    let line = format!(
        "kubectl --kubeconfig {} exec -it box -- sh -c 'tty; stty size'",
        c.kubeconfig.display()
    );
    let out = Command::new("script")
        .args(["-qec", &line, "/dev/null"])
        .stdin(Stdio::null())
        .output()
        .expect("script");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("/dev/pts/"),
        "a terminal in the container: {text:?}"
    );

    // kubectl cp both ways (tar over exec).
    let dir = tempfile::tempdir().expect("tempdir");
    let local = dir.path().join("up.bin");
    let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&local, &data).expect("write");
    k.ok(&["cp", &local.display().to_string(), "box:/tmp/up.bin"]);
    let back = dir.path().join("down.bin");
    k.ok(&["cp", "box:/tmp/up.bin", &back.display().to_string()]);
    assert!(
        std::fs::read(&back).expect("copied back") == data,
        "kubectl cp round trip"
    );

    // Port-forward two ports; concurrent connections; 4 MiB intact.
    let pf = PortForward::start("kubectl", &c.kubeconfig, "pod/box", &[8080, 9090]);
    let (http, echo) = (pf.ports[0], pf.ports[1]);
    assert_eq!(http_get(http, "/index.html"), b"served\n");
    let big = http_get(http, "/big");
    let expected = k.ok(&["exec", "box", "--", "md5sum", "/www/big"]);
    let digest = format!("{:x}", md5_of(&big));
    assert_eq!(big.len(), 4 * 1024 * 1024);
    assert!(expected.starts_with(&digest), "the transfer arrived intact");
    let handles: Vec<_> = (0..4)
        .map(|i| {
            std::thread::spawn(move || {
                let mut s = std::net::TcpStream::connect(("127.0.0.1", echo)).expect("connect");
                s.set_read_timeout(Some(Duration::from_secs(30)))
                    .expect("timeout");
                let msg = format!("hello {i}\n");
                s.write_all(msg.as_bytes()).expect("write");
                let mut got = vec![0u8; msg.len()];
                s.read_exact(&mut got).expect("echo");
                assert_eq!(got, msg.as_bytes());
            })
        })
        .collect();
    for h in handles {
        h.join().expect("echo connection");
    }
    drop(pf);

    // svc/: kubectl picks a pod behind the Service and its target port.
    apply(&c, SVC_AND_TALKER);
    let pf = PortForward::start("kubectl", &c.kubeconfig, "svc/box", &[80]);
    assert_eq!(http_get(pf.ports[0], "/index.html"), b"served\n");
    drop(pf);

    // kubectl attach -i: what is typed reaches the container's own stdin, and its
    // output comes back.
    ready(&c, "talker");
    let mut attach = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&c.kubeconfig)
        .args(["attach", "-i", "talker"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("kubectl attach");
    let mut to_pod = attach.stdin.take().expect("stdin");
    let mut from_pod = attach.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 256];
        while let Ok(n @ 1..) = from_pod.read(&mut buf) {
            if tx
                .send(String::from_utf8_lossy(&buf[..n]).into_owned())
                .is_err()
            {
                break;
            }
        }
    });
    to_pod.write_all(b"one\ntwo\n").expect("write to attach");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut seen = String::new();
    while !seen.contains("got:two") {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(chunk) => seen.push_str(&chunk),
            Err(_) => break,
        }
    }
    let _ = attach.kill();
    let _ = attach.wait();
    assert!(
        seen.contains("got:one") && seen.contains("got:two"),
        "attach output: {seen:?}"
    );

    // kubectl debug: an ephemeral container sharing box's processes, then one attached
    // to interactively.
    k.ok(&[
        "debug",
        "box",
        "--image=skiff/busybox:latest",
        "--target=main",
        "-c",
        "dbg",
        "--",
        "ps",
    ]);
    eventually(Duration::from_secs(60), "the debug container to finish", || async {
        let out = k.ok(&[
            "get", "pod", "box", "-o",
            "jsonpath={.status.ephemeralContainerStatuses[?(@.name==\"dbg\")].state.terminated.reason}",
        ]);
        (!out.is_empty()).then_some(())
    })
    .await;
    let ps = k.ok(&["logs", "box", "-c", "dbg"]);
    assert!(
        ps.contains("httpd -p 8080"),
        "the target's processes are visible: {ps}"
    );
    let (code, out, err) = kubectl_stdin(
        &c,
        &[
            "debug",
            "-i",
            "box",
            "--image=skiff/busybox:latest",
            "-c",
            "dbg2",
            "--",
            "sh",
            "-c",
            "read x; echo got:$x",
        ],
        b"hello\n",
    );
    assert_eq!(code, 0, "{err}");
    assert!(String::from_utf8_lossy(&out).contains("got:hello"), "{err}");
    let (code, _, err) = kubectl(
        &c.kubeconfig,
        &[
            "debug",
            "box",
            "--image=skiff/busybox:latest",
            "--target=nope",
            "-c",
            "dbg3",
        ],
    );
    assert_ne!(code, 0);
    assert!(
        err.contains("spec.ephemeralContainers[2].targetContainerName: Not found: \"nope\""),
        "{err}"
    );

    // A port nobody listens on: the connection is closed and kubectl says why.
    let pf = PortForward::start("kubectl", &c.kubeconfig, "pod/box", &[7777]);
    let mut s = std::net::TcpStream::connect(("127.0.0.1", pf.ports[0])).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    assert!(buf.is_empty(), "nothing from a closed port");
    drop(pf);

    // logs -f streams lines as they are written.
    let mut follow = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&c.kubeconfig)
        .args(["logs", "-f", "--tail=1", "box"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("kubectl logs -f");
    let mut stdout = follow.stdout.take().expect("stdout");
    let mut seen = String::new();
    let mut buf = [0u8; 256];
    while seen.lines().count() < 4 {
        let n = stdout.read(&mut buf).expect("read logs");
        assert!(n > 0, "logs -f ended early: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    let _ = follow.kill();
    let _ = follow.wait();
    let numbers: Vec<u64> = seen
        .lines()
        .filter_map(|l| l.strip_prefix("line ")?.parse().ok())
        .collect();
    assert!(
        numbers.windows(2).all(|w| w[1] == w[0] + 1),
        "lines in order: {seen}"
    );

    // A client that goes away mid-stream takes its process with it.
    let mut gone = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&c.kubeconfig)
        .args(["exec", "box", "--", "sh", "-c", "sleep 321"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("kubectl exec");
    let sleeping = || {
        let (_, out, _) = kubectl(&c.kubeconfig, &["exec", "box", "--", "ps"]);
        out.contains("sleep 321")
    };
    eventually(
        Duration::from_secs(20),
        "the exec'd sleep to run",
        || async { sleeping().then_some(()) },
    )
    .await;
    let _ = gone.kill();
    let _ = gone.wait();
    eventually(
        Duration::from_secs(20),
        "the abandoned sleep to be killed",
        || async { (!sleeping()).then_some(()) },
    )
    .await;

    // Refusals as Kubernetes words them.
    let (code, out, err) = kubectl(&c.kubeconfig, &["exec", "box", "-c", "nope", "--", "true"]);
    assert_ne!(code, 0, "{out}");
    assert!(
        err.contains("container nope is not valid for pod box"),
        "{err}"
    );

    // The official Python client: exec over its WebSocket client, and port-forward.
    let out = python_client(
        r#"
import sys
from kubernetes import client, config
from kubernetes.stream import stream, portforward
config.load_kube_config(sys.argv[1])
v1 = client.CoreV1Api()
out = stream(v1.connect_get_namespaced_pod_exec, "box", "default",
             command=["sh", "-c", "echo from-python"], stderr=True, stdin=False, stdout=True, tty=False)
print("exec:" + out.strip())
pf = portforward(v1.connect_get_namespaced_pod_portforward, "box", "default", ports="8080")
sock = pf.socket(8080)
sock.setblocking(True)
sock.sendall(b"GET /index.html HTTP/1.0\r\nHost: x\r\n\r\n")
data = b""
while True:
    chunk = sock.recv(4096)
    if not chunk:
        break
    data += chunk
print("pf:" + data.split(b"\r\n\r\n", 1)[1].decode().strip())
"#,
        &c.kubeconfig,
        &[],
    );
    assert!(out.contains("exec:from-python"), "{out}");
    assert!(out.contains("pf:served"), "{out}");

    drop(c);
    eventually(Duration::from_secs(30), "containers removed", || async {
        cleanup.remove_all();
        Some(())
    })
    .await;
}

/// MD5 by the machine's `md5sum` (no digest crate in the tests).
fn md5_of(data: &[u8]) -> u128 {
    let mut child = Command::new("md5sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("md5sum");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(data)
        .expect("write");
    let out = child.wait_with_output().expect("md5sum");
    let hex = String::from_utf8_lossy(&out.stdout);
    u128::from_str_radix(hex.split_whitespace().next().unwrap_or("0"), 16).unwrap_or(0)
}

/// A kubeconfig for `url` authenticating with `token` alone.
fn token_kubeconfig(
    dir: &std::path::Path,
    url: &str,
    ca_pem: &str,
    token: &str,
) -> std::path::PathBuf {
    let ca = dir.join("ca.crt");
    std::fs::write(&ca, ca_pem).expect("write CA");
    let path = dir.join("token.kubeconfig");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {url}\n    certificate-authority: {}\nusers:\n- name: u\n  user:\n    token: {token}\ncontexts:\n- name: x\n  context:\n    cluster: c\n    user: u\n    namespace: default\ncurrent-context: x\n",
            ca.display()
        ),
    )
    .expect("write kubeconfig");
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secure_node_server_has_a_kubelet_serving_certificate_and_checks_every_caller() {
    use skiff_integration::{call, tls_client};
    let node = node_names("ns-tls", 1).remove(0);
    let cleanup = DockerCleanup::new(std::slice::from_ref(&node));
    let name = node.clone();
    let c = TestCluster::start_secure_with(move |cfg| {
        cfg.nodes = vec![skiff::config::NodeConfig {
            name,
            runtime: "docker".into(),
            heartbeat_seconds: 2,
            ..skiff::config::NodeConfig::default()
        }];
    });
    let k = Kubectl(&c.kubeconfig);
    apply(&c, POD);
    ready(&c, "box");
    // The API server reaches the node's server over TLS with its own client certificate.
    assert_eq!(k.ok(&["exec", "box", "--", "echo", "secure"]), "secure\n");
    let logs = k.ok(&["logs", "--tail=1", "box"]);
    assert!(logs.starts_with("line "), "{logs}");

    // The serving certificate came through a kubelet-serving CSR of the node's own.
    let csrs: serde_json::Value =
        serde_json::from_str(&k.ok(&["get", "csr", "-o", "json"])).expect("csr list");
    let serving = csrs["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|r| r["spec"]["signerName"] == "kubernetes.io/kubelet-serving")
        .expect("a kubelet-serving request");
    assert_eq!(serving["spec"]["username"], format!("system:node:{node}"));
    assert!(
        serving["status"]["conditions"]
            .as_array()
            .is_some_and(|cs| cs.iter().any(|c| c["type"] == "Approved")),
        "{serving}"
    );
    assert!(serving["status"]["certificate"]
        .as_str()
        .is_some_and(|s| !s.is_empty()));

    // Callers of the node server: nobody (401), a user without nodes/proxy (403), the
    // administrator's token (TokenReview, SubjectAccessReview: allowed).
    let (_, node_obj) = call(
        c.admin_client()
            .get(c.url(&format!("/api/v1/nodes/{node}"))),
    )
    .await;
    let ip = node_obj["status"]["addresses"][0]["address"]
        .as_str()
        .expect("ip")
        .to_string();
    let port = node_obj["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"]
        .as_u64()
        .expect("port");
    assert_ne!(port, 0);
    let url = format!("https://{ip}:{port}/pods");
    let ca = c.ca_pem();
    let (code, _) = call(tls_client(&ca, None, None).get(&url)).await;
    assert_eq!(code, 401, "no credentials");
    let now = std::time::SystemTime::now();
    let jane = c
        .credentials
        .as_ref()
        .expect("secure")
        .ca
        .issue_client(
            "jane",
            &[],
            now - Duration::from_secs(60),
            now + Duration::from_secs(3600),
        )
        .expect("jane's certificate");
    let (code, body) = call(tls_client(&ca, None, Some(&jane)).get(&url)).await;
    assert_eq!(code, 403, "{body}");
    assert_eq!(
        body,
        "Forbidden (user=jane, verb=get, resource=nodes, subresource=proxy)"
    );
    let (code, body) = call(tls_client(&ca, Some(&c.admin_token()), None).get(&url)).await;
    assert_eq!(code, 200, "{body}");
    assert!(body["items"]
        .as_array()
        .is_some_and(|i| i.iter().any(|p| p["metadata"]["name"] == "box")));

    // A user without pods/exec is refused by the API server before any stream opens.
    k.ok(&["create", "serviceaccount", "nobody"]);
    // `view` reads pods but opens no streams into them.
    k.ok(&[
        "create",
        "rolebinding",
        "nobody-view",
        "--clusterrole=view",
        "--serviceaccount=default:nobody",
    ]);
    let token = k.ok(&["create", "token", "nobody"]).trim().to_string();
    let dir = tempfile::tempdir().expect("tempdir");
    let kc = token_kubeconfig(dir.path(), &c.url, &ca, &token);
    let (code, out, err) = kubectl(&kc, &["exec", "box", "--", "true"]);
    assert_ne!(code, 0, "{out}");
    assert!(
        err.contains("cannot create resource \"pods/exec\""),
        "a 403 for pods/exec: {err}"
    );

    drop(c);
    eventually(Duration::from_secs(30), "containers removed", || async {
        cleanup.remove_all();
        Some(())
    })
    .await;
}

/// Debian's kubectl 1.20 (SPDY only), which `scripts/test.sh` unpacks beside the cache.
fn old_kubectl() -> String {
    let path = std::env::var("SKIFF_OLD_KUBECTL")
        .expect("SKIFF_OLD_KUBECTL names Debian's kubectl 1.20 (scripts/test.sh fetches it)");
    assert!(
        std::path::Path::new(&path).exists(),
        "{path} is missing (scripts/test.sh fetches it)"
    );
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debians_kubectl_1_20_execs_and_forwards_ports_over_spdy() {
    let old = old_kubectl();
    let node = node_names("ns-spdy", 1).remove(0);
    let cleanup = DockerCleanup::new(std::slice::from_ref(&node));
    let c = cluster(&node);
    apply(&c, POD);
    ready(&c, "box");
    let run = |args: &[&str]| kubectl_stdin_with(&old, &c, args, b"");
    let (code, out, err) = run(&["exec", "box", "--", "echo", "over", "spdy"]);
    assert_eq!((code, out.as_slice()), (0, &b"over spdy\n"[..]), "{err}");
    let (code, _, err) = run(&["exec", "box", "--", "sh", "-c", "exit 4"]);
    assert_eq!(code, 4, "{err}");
    let input: Vec<u8> = (0..50_000u32).flat_map(|i| i.to_be_bytes()).collect();
    let (code, out, err) =
        kubectl_stdin_with(&old, &c, &["exec", "-i", "box", "--", "cat"], &input);
    assert_eq!(code, 0, "{err}");
    assert!(
        out == input,
        "stdin through SPDY ({} of {} bytes)",
        out.len(),
        input.len()
    );

    let pf = PortForward::start(&old, &c.kubeconfig, "pod/box", &[8080]);
    assert_eq!(http_get(pf.ports[0], "/index.html"), b"served\n");
    assert_eq!(http_get(pf.ports[0], "/big").len(), 4 * 1024 * 1024);
    drop(pf);

    drop(c);
    eventually(Duration::from_secs(30), "containers removed", || async {
        cleanup.remove_all();
        Some(())
    })
    .await;
}
