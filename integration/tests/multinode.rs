//! Nodes across processes: a control plane started with `skiff server` and two nodes
//! started with `skiff node` join over HTTPS with the join token; an RC's pods run on both
//! behind a Service. When one node process is SIGKILLed its pods leave the Service's
//! Endpoints once the node is found lost and come back Running on the other when their
//! toleration runs out; deleting the dead node collects its pods; killing every node
//! evicts nothing, and all comes back when the nodes do. A wrong join token is refused.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use skiff_actors::pki::{self, ClusterCa};
use skiff_integration::{
    call, eventually, http_get, kubectl, node_names, skiff_bin, tls_client, DockerCleanup,
    PortForward,
};

/// Node heartbeats every second; NotReady after 3 s of silence, pods evicted when their
/// default toleration of it (8 s) runs out.
const GRACE_SECONDS: u64 = 3;
const EVICTION_SECONDS: u64 = 8;

/// A child process killed (SIGKILL) when dropped, also when the test fails.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Server {
    _proc: Proc,
    url: String,
    dir: PathBuf,
    /// What the server printed with its ready line (the join command, at first start).
    printed: String,
}

impl Server {
    fn start(dir: &Path) -> Server {
        Self::start_on(dir, "127.0.0.1:0", GRACE_SECONDS, EVICTION_SECONDS)
    }

    fn start_on(dir: &Path, listen: &str, grace: u64, eviction: u64) -> Server {
        use std::io::BufRead;
        let config = dir.join("server.toml");
        std::fs::write(
            &config,
            format!(
                "[gateway]\nlisten = \"{listen}\"\nmetrics_resolution_seconds = 1\ndefault_not_ready_toleration_seconds = {eviction}\ndefault_unreachable_toleration_seconds = {eviction}\n[controllers]\nhpa_sync_period_seconds = 2\nnode_grace_period_seconds = {grace}\nnode_monitor_period_seconds = 1\n"
            ),
        )
        .expect("write config");
        let mut child = Command::new(skiff_bin())
            .args(["server", "--config"])
            .arg(&config)
            .arg("--data-dir")
            .arg(dir)
            .env("SKIFF_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn skiff server");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        let mut reader = std::io::BufReader::new(stdout);
        reader.read_line(&mut line).expect("ready line");
        // Printed in the same write as the ready line, so already read.
        let printed = String::from_utf8_lossy(reader.buffer()).to_string();
        let url = line
            .split_whitespace()
            .find(|w| w.starts_with("https://"))
            .unwrap_or_else(|| panic!("no https URL in ready line {line:?}"))
            .to_string();
        Server {
            _proc: Proc(child),
            url,
            dir: dir.to_path_buf(),
            printed,
        }
    }

    fn ca_file(&self) -> PathBuf {
        self.dir.join("pki/ca.crt")
    }

    /// A node data directory holding a credential for `name` from the cluster CA, valid
    /// from `from` until `until`, and its certificate (PEM).
    fn node_dir_with_credential(
        &self,
        name: &str,
        from: std::time::SystemTime,
        until: std::time::SystemTime,
    ) -> (tempfile::TempDir, String) {
        let read = |f: &str| std::fs::read_to_string(self.dir.join("pki").join(f)).expect(f);
        let ca = ClusterCa::from_pem(&read("ca.crt"), &read("ca.key")).expect("the cluster CA");
        let issued = ca
            .issue_client(
                &format!("system:node:{name}"),
                &["system:nodes"],
                from,
                until,
            )
            .expect("issue");
        let node_dir = tempfile::tempdir().unwrap();
        std::fs::write(node_dir.path().join("node.crt"), &issued.cert_pem).unwrap();
        std::fs::write(node_dir.path().join("node.key"), &issued.key_pem).unwrap();
        (node_dir, issued.cert_pem)
    }

    fn join_token(&self) -> String {
        std::fs::read_to_string(self.dir.join("pki/join-token"))
            .expect("join token")
            .trim()
            .to_string()
    }

    /// An HTTPS client trusting only the cluster CA, as the administrator.
    fn admin(&self) -> reqwest::Client {
        let tokens = std::fs::read_to_string(self.dir.join("pki/tokens.csv")).expect("tokens");
        let token = tokens
            .lines()
            .find(|l| l.contains("system:masters"))
            .and_then(|l| l.split(',').next())
            .expect("an admin token")
            .to_string();
        let ca = std::fs::read_to_string(self.ca_file()).expect("ca");
        tls_client(&ca, Some(&token), None)
    }

    fn node(&self, name: &str, address: &str, token: &str, data_dir: &Path) -> Command {
        let mut cmd = Command::new(skiff_bin());
        cmd.args([
            "node", "--server", &self.url, "--token", token, "--name", name,
        ])
        .args(["--address", address, "--heartbeat-seconds", "1"])
        // Node servers of nodes side by side on one machine: any free port each.
        .args(["--server-port", "0"])
        // SIGKILLed by the test, a node could not take kernel rules or routes with it:
        // these nodes keep to the engine's default bridge and the userspace proxy (the pod
        // network has its own test, on hosts the test makes).
        .args(["--cluster-cidr", "", "--service-cidr", ""])
        .arg("--ca-file")
        .arg(self.ca_file())
        .arg("--data-dir")
        .arg(data_dir)
        .env("SKIFF_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
        cmd
    }
}

const RC: &str = "web";

fn rc() -> Value {
    json!({"apiVersion": "v1", "kind": "ReplicationController", "metadata": {"name": RC},
        "spec": {"replicas": 4, "selector": {"app": RC}, "template": {
            "metadata": {"labels": {"app": RC}},
            "spec": {"terminationGracePeriodSeconds": 1, "containers": [{"name": "app",
                "image": "skiff/busybox:latest", "imagePullPolicy": "Never",
                "command": ["sleep", "3600"]}]}}}})
}

/// Running pods of the RC by node name.
async fn running_by_node(client: &reqwest::Client, url: &str) -> Vec<(String, String)> {
    let (_, list) = call(client.get(format!(
        "{url}/api/v1/namespaces/default/pods?labelSelector=app%3D{RC}"
    )))
    .await;
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| {
            p["status"]["phase"] == "Running" && p["metadata"]["deletionTimestamp"].is_null()
        })
        .map(|p| {
            (
                p["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                p["spec"]["nodeName"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .collect()
}

async fn node_ready(client: &reqwest::Client, url: &str, node: &str) -> bool {
    let (code, n) = call(client.get(format!("{url}/api/v1/nodes/{node}"))).await;
    code == 200
        && n["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

#[tokio::test]
async fn nodes_join_over_https_and_a_node_failure_is_handled_as_kubernetes_does() {
    skiff_integration::require_docker();
    let names = node_names("join", 2);
    let _cleanup = DockerCleanup::new(&names);
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let admin = server.admin();
    let url = server.url.clone();

    // A wrong join token is refused: the node process fails and no Node appears.
    let intruder_dir = tempfile::tempdir().unwrap();
    let out = server
        .node(
            "intruder",
            "127.0.0.9",
            "abcdef.0123456789abcdef",
            intruder_dir.path(),
        )
        .stderr(Stdio::piped())
        .output()
        .expect("run skiff node");
    assert!(!out.status.success(), "a wrong join token was accepted");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("Unauthorized") || stderr.contains("401"),
        "{stderr}"
    );
    let (code, _) = call(admin.get(format!("{url}/api/v1/nodes/intruder"))).await;
    assert_eq!(code, 404);
    assert!(!intruder_dir.path().join("node.crt").exists());

    let token = server.join_token();
    let node_dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let mut nodes: Vec<Option<Proc>> = names
        .iter()
        .zip(["127.0.0.2", "127.0.0.3"])
        .zip(&node_dirs)
        .map(|((name, addr), d)| {
            Some(Proc(
                server
                    .node(name, addr, &token, d.path())
                    .spawn()
                    .expect("spawn skiff node"),
            ))
        })
        .collect();
    for name in &names {
        eventually(Duration::from_secs(60), "node Ready", || async {
            node_ready(&admin, &url, name).await.then_some(())
        })
        .await;
    }
    // Each node now holds its own credential, issued for system:node:<name>.
    for d in &node_dirs {
        assert!(d.path().join("node.crt").exists() && d.path().join("node.key").exists());
    }

    let (code, body) = call(
        admin
            .post(format!(
                "{url}/api/v1/namespaces/default/replicationcontrollers"
            ))
            .json(&rc()),
    )
    .await;
    assert_eq!(code, 201, "{body}");
    let placed = eventually(
        Duration::from_secs(120),
        "4 pods Running on both nodes",
        || async {
            let running = running_by_node(&admin, &url).await;
            let on = |n: &String| running.iter().filter(|(_, node)| node == n).count();
            (running.len() == 4 && names.iter().all(|n| on(n) > 0)).then_some(running)
        },
    )
    .await;
    let victim = &names[0];
    let moved: Vec<String> = placed
        .iter()
        .filter(|(_, n)| n == victim)
        .map(|(p, _)| p.clone())
        .collect();

    // A Service over the RC's pods: all four in its Endpoints.
    let svc = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": RC},
        "spec": {"selector": {"app": RC}, "ports": [{"port": 80}]}});
    let (code, body) = call(
        admin
            .post(format!("{url}/api/v1/namespaces/default/services"))
            .json(&svc),
    )
    .await;
    assert_eq!(code, 201, "{body}");
    let mut all: Vec<String> = placed.iter().map(|(p, _)| p.clone()).collect();
    all.sort();
    eventually(
        Duration::from_secs(30),
        "4 pods in the Endpoints",
        || async { (endpoint_pods(&admin, &url).await == all).then_some(()) },
    )
    .await;

    // SIGKILL the first node's process: its containers keep running, but nothing reports
    // for the node any more. Its pods leave the Endpoints once the node is found lost
    // (marked not ready with it), well before they are evicted.
    let killed_at = Instant::now();
    drop(nodes[0].take());
    eventually(
        Duration::from_secs(GRACE_SECONDS + 5),
        "the dead node's pods out of the Endpoints",
        || async {
            let ready = endpoint_pods(&admin, &url).await;
            (!ready.is_empty() && ready.iter().all(|p| !moved.contains(p))).then_some(())
        },
    )
    .await;
    eprintln!(
        "the dead node's pods left the Endpoints {:.1} s after the node process was killed",
        killed_at.elapsed().as_secs_f64()
    );
    let survivor = &names[1];
    let after = eventually(
        Duration::from_secs(GRACE_SECONDS + EVICTION_SECONDS + 60),
        "4 pods Running on the surviving node",
        || async {
            let running = running_by_node(&admin, &url).await;
            (running.len() == 4 && running.iter().all(|(_, n)| n == survivor)).then_some(running)
        },
    )
    .await;
    for p in &moved {
        assert!(
            !after.iter().any(|(name, _)| name == p),
            "pod {p} of the dead node still counted as running"
        );
    }
    eprintln!(
        "pods back Running on {survivor} {:.1} s after the node process was killed",
        killed_at.elapsed().as_secs_f64()
    );
    assert!(!node_ready(&admin, &url, victim).await);

    // Deleting the dead node collects its pods (evicted, they wait for a kubelet that will
    // not come): the pod garbage collector force-deletes them.
    let kc = server.dir.join("kubeconfig");
    let (code, _, err) = kubectl(&kc, &["delete", "node", victim]);
    assert_eq!(code, 0, "{err}");
    let deleted_at = Instant::now();
    eventually(
        Duration::from_secs(40),
        "the deleted node's pods gone",
        || async { pods_on(&admin, &url, victim).await.is_empty().then_some(()) },
    )
    .await;
    eprintln!(
        "the deleted node's pods gone {:.1} s after kubectl delete node",
        deleted_at.elapsed().as_secs_f64()
    );

    // Full disruption: with the victim back, kill every node. The control plane, cut off
    // from all of them, evicts nothing, however long the pods' tolerations have run out.
    nodes[0] = Some(Proc(
        server
            .node(victim, "127.0.0.2", &token, node_dirs[0].path())
            .spawn()
            .expect("respawn skiff node"),
    ));
    eventually(
        Duration::from_secs(60),
        "the victim Ready again",
        || async { node_ready(&admin, &url, victim).await.then_some(()) },
    )
    .await;
    let before = pod_uids(&admin, &url).await;
    assert_eq!(before.len(), 4, "{before:?}");
    for n in nodes.iter_mut() {
        drop(n.take());
    }
    let all_lost = eventually(
        Duration::from_secs(GRACE_SECONDS + 30),
        "every node Unknown",
        || async {
            let mut since = Vec::new();
            for n in &names {
                let (_, node) = call(admin.get(format!("{url}/api/v1/nodes/{n}"))).await;
                let ready = node["status"]["conditions"]
                    .as_array()
                    .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready").cloned())?;
                (ready["status"] == "Unknown").then_some(())?;
                since.push(Instant::now());
            }
            Some(since)
        },
    )
    .await;
    // Past the point where the pods' tolerations would have run out, nothing was evicted.
    let horizon = all_lost[0] + Duration::from_secs(EVICTION_SECONDS + 4);
    while Instant::now() < horizon {
        assert_eq!(pod_uids(&admin, &url).await, before, "a pod was evicted");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for n in &names {
        let (_, node) = call(admin.get(format!("{url}/api/v1/nodes/{n}"))).await;
        let no_execute: Vec<&Value> = node["spec"]["taints"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|t| t["effect"] == "NoExecute")
            .collect();
        assert!(
            no_execute.is_empty(),
            "{n} tainted in full disruption: {node}"
        );
    }

    // The nodes return: the same pods Running and Ready, back in the Endpoints.
    for (i, ((name, addr), d)) in names
        .iter()
        .zip(["127.0.0.2", "127.0.0.3"])
        .zip(&node_dirs)
        .enumerate()
    {
        nodes[i] = Some(Proc(
            server
                .node(name, addr, &token, d.path())
                .spawn()
                .expect("respawn skiff node"),
        ));
    }
    let mut expected: Vec<String> = after.iter().map(|(p, _)| p.clone()).collect();
    expected.sort();
    eventually(Duration::from_secs(90), "all recovered", || async {
        for n in &names {
            node_ready(&admin, &url, n).await.then_some(())?;
        }
        (pod_uids(&admin, &url).await == before).then_some(())?;
        (endpoint_pods(&admin, &url).await == expected).then_some(())
    })
    .await;
    drop(nodes);
}

/// Pods bound to `node` (any phase, terminating too).
async fn pods_on(client: &reqwest::Client, url: &str, node: &str) -> Vec<String> {
    let (_, list) = call(client.get(format!(
        "{url}/api/v1/pods?fieldSelector=spec.nodeName%3D{node}"
    )))
    .await;
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["metadata"]["name"].as_str().map(str::to_string))
        .collect()
}

/// The RC's pods that are not being deleted, as (name, uid), sorted.
async fn pod_uids(client: &reqwest::Client, url: &str) -> Vec<(String, String)> {
    let (_, list) = call(client.get(format!(
        "{url}/api/v1/namespaces/default/pods?labelSelector=app%3D{RC}"
    )))
    .await;
    let mut out: Vec<(String, String)> = list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .map(|p| {
            (
                p["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                p["metadata"]["uid"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .collect();
    out.sort();
    out
}

/// The pods the Service's Endpoints hold as ready addresses, sorted.
async fn endpoint_pods(client: &reqwest::Client, url: &str) -> Vec<String> {
    let (_, ep) = call(client.get(format!("{url}/api/v1/namespaces/default/endpoints/{RC}"))).await;
    let mut out: Vec<String> = ep["subsets"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|s| s["addresses"].as_array().into_iter().flatten())
        .filter_map(|a| a["targetRef"]["name"].as_str().map(str::to_string))
        .collect();
    out.sort();
    out
}

/// The container ID and restart count of a Running pod.
async fn running_container(
    client: &reqwest::Client,
    url: &str,
    pod: &str,
) -> Option<(String, u64)> {
    let (code, p) = call(client.get(format!("{url}/api/v1/namespaces/default/pods/{pod}"))).await;
    if code != 200 || p["status"]["phase"] != "Running" {
        return None;
    }
    let c = &p["status"]["containerStatuses"][0];
    Some((
        c["containerID"].as_str()?.to_string(),
        c["restartCount"].as_u64()?,
    ))
}

fn sleeper(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {"terminationGracePeriodSeconds": 1, "containers": [{"name": "app",
            "image": "skiff/busybox:latest", "imagePullPolicy": "Never",
            "command": ["sleep", "3600"]}]}})
}

#[tokio::test]
async fn a_node_cut_off_from_the_server_keeps_its_pods_and_resyncs_when_it_returns() {
    skiff_integration::require_docker();
    let name = node_names("resync", 1).remove(0);
    let _cleanup = DockerCleanup::new(std::slice::from_ref(&name));
    let dir = tempfile::tempdir().unwrap();
    // A fixed port, so the restarted server is where the node looks for it; eviction far
    // enough off that the outage alone evicts nothing.
    let listen = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .to_string();
    let server = Server::start_on(dir.path(), &listen, 20, 60);
    let admin = server.admin();
    let url = server.url.clone();
    let node_dir = tempfile::tempdir().unwrap();
    let mut child = server
        .node(&name, "127.0.0.4", &server.join_token(), node_dir.path())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn skiff node");
    // The node's log (passed on to ours) tells when it has found the server gone.
    let (lost_tx, lost_rx) = std::sync::mpsc::channel();
    let log = child.stderr.take().expect("stderr");
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(log).lines().map_while(Result::ok) {
            eprintln!("{line}");
            if line.contains("heartbeat failed") {
                let _ = lost_tx.send(());
            }
        }
    });
    let _node = Proc(child);
    let (code, body) = call(
        admin
            .post(format!("{url}/api/v1/namespaces/default/pods"))
            .json(&sleeper("keeper")),
    )
    .await;
    assert_eq!(code, 201, "{body}");
    let before = eventually(Duration::from_secs(60), "keeper Running", || {
        running_container(&admin, &url, "keeper")
    })
    .await;

    // The control plane goes away, and stays away until the node has noticed: one of its
    // heartbeats has failed.
    while lost_rx.try_recv().is_ok() {}
    drop(server);
    lost_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the node notices the server is gone");
    let server = Server::start_on(dir.path(), &listen, 20, 60);
    assert_eq!(server.url, url);
    let admin = server.admin();

    // Back: the node picks up new work (its watch resumed) and the old pod is the same
    // container, never restarted.
    let (code, body) = call(
        admin
            .post(format!("{url}/api/v1/namespaces/default/pods"))
            .json(&sleeper("newcomer")),
    )
    .await;
    assert_eq!(code, 201, "{body}");
    eventually(
        Duration::from_secs(60),
        "newcomer Running on the node",
        || running_container(&admin, &url, "newcomer"),
    )
    .await;
    assert_eq!(
        running_container(&admin, &url, "keeper").await,
        Some(before)
    );
    assert!(node_ready(&admin, &url, &name).await);
}

#[tokio::test]
async fn a_node_whose_kept_certificate_expired_joins_again_with_its_token() {
    skiff_integration::require_docker();
    let name = node_names("expired", 1).remove(0);
    let _cleanup = DockerCleanup::new(std::slice::from_ref(&name));
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let admin = server.admin();
    // The node's data directory holds a credential from the cluster CA that ran out an
    // hour ago, as after a long time switched off.
    let now = std::time::SystemTime::now();
    let (node_dir, expired) = server.node_dir_with_credential(
        &name,
        now - Duration::from_secs(7200),
        now - Duration::from_secs(3600),
    );

    let _node = Proc(
        server
            .node(&name, "127.0.0.5", &server.join_token(), node_dir.path())
            .spawn()
            .expect("spawn skiff node"),
    );
    eventually(Duration::from_secs(60), "node Ready", || async {
        node_ready(&admin, &server.url, &name).await.then_some(())
    })
    .await;
    let kept = std::fs::read_to_string(node_dir.path().join("node.crt")).unwrap();
    assert_ne!(kept, expired, "the expired certificate was replaced");
    assert!(pki::cert_not_after(&kept).unwrap() > std::time::SystemTime::now());
}

/// The renewal time of the node's Lease, as the server has it.
async fn lease_renewed(client: &reqwest::Client, url: &str, node: &str) -> Option<String> {
    let (code, l) = call(client.get(format!(
        "{url}/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{node}"
    )))
    .await;
    (code == 200).then(|| {
        l["spec"]["renewTime"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    })
}

#[tokio::test]
async fn a_running_node_renews_its_certificate_before_it_expires() {
    skiff_integration::require_docker();
    let name = node_names("renew", 1).remove(0);
    let _cleanup = DockerCleanup::new(std::slice::from_ref(&name));
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let admin = server.admin();
    // The node starts with a credential from the cluster CA that is past 70% of its
    // 100 s life and runs out 20 s from now: it must ask for a new one while it runs.
    let now = std::time::SystemTime::now();
    let old_expiry = now + Duration::from_secs(20);
    let (node_dir, ageing) =
        server.node_dir_with_credential(&name, now - Duration::from_secs(80), old_expiry);
    // A wrong token: the node must get on with the certificate it has, not join again.
    let _node = Proc(
        server
            .node(
                &name,
                "127.0.0.6",
                "abcdef.0123456789abcdef",
                node_dir.path(),
            )
            .spawn()
            .expect("spawn skiff node"),
    );
    let renewed = eventually(Duration::from_secs(20), "a renewed certificate", || async {
        let kept = std::fs::read_to_string(node_dir.path().join("node.crt")).ok()?;
        (kept != ageing).then_some(kept)
    })
    .await;
    let not_after = pki::cert_not_after(&renewed).expect("a readable certificate");
    assert!(
        not_after > old_expiry + Duration::from_secs(3600),
        "the new certificate outlives the old one"
    );
    // The CSR was the node's own, approved and signed by the cluster.
    let (_, csrs) = call(admin.get(format!(
        "{}/apis/certificates.k8s.io/v1/certificatesigningrequests",
        server.url
    )))
    .await;
    assert!(
        csrs["items"].as_array().into_iter().flatten().any(|c| {
            c["spec"]["username"] == format!("system:node:{name}")
                && c["status"]["certificate"].is_string()
        }),
        "a CSR from the node itself was signed: {csrs}"
    );
    // Past the old certificate's expiry the node still heartbeats: its connections use
    // the new one (the server refuses an expired client certificate).
    let expired_at = chrono::DateTime::<chrono::Utc>::from(old_expiry);
    eventually(
        Duration::from_secs(40),
        "a Lease renewed after the old certificate expired",
        || async {
            let renewed = lease_renewed(&admin, &server.url, &name).await?;
            let at = chrono::DateTime::parse_from_rfc3339(&renewed).ok()?;
            (at > expired_at + chrono::Duration::seconds(1)).then_some(())
        },
    )
    .await;
    assert!(
        node_ready(&admin, &server.url, &name).await,
        "the node stays Ready"
    );
}

#[tokio::test]
async fn a_remote_nodes_pods_are_reached_for_exec_logs_port_forward_top_and_autoscaling() {
    skiff_integration::require_docker();
    let name = node_names("remote", 1).remove(0);
    let _cleanup = DockerCleanup::new(std::slice::from_ref(&name));
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let admin = server.admin();
    let url = server.url.clone();
    let node_dir = tempfile::tempdir().unwrap();
    let _node = Proc(
        server
            .node(&name, "127.0.0.6", &server.join_token(), node_dir.path())
            .spawn()
            .expect("spawn skiff node"),
    );
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "far"},
        "spec": {"nodeName": name, "terminationGracePeriodSeconds": 1, "containers": [{
            "name": "app", "image": "skiff/busybox:latest", "imagePullPolicy": "Never",
            "command": ["sh", "-c", "mkdir -p /www && echo far > /www/index.html && httpd -p 8080 -h /www; i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.2; done"]}]}});
    let (code, body) = call(
        admin
            .post(format!("{url}/api/v1/namespaces/default/pods"))
            .json(&pod),
    )
    .await;
    assert_eq!(code, 201, "{body}");
    eventually(Duration::from_secs(60), "far Running", || {
        running_container(&admin, &url, "far")
    })
    .await;
    let kc = dir.path().join("kubeconfig");
    let run = |args: &[&str]| kubectl(&kc, args);
    let (code, out, err) = run(&["exec", "far", "--", "echo", "from", "afar"]);
    assert_eq!((code, out.as_str()), (0, "from afar\n"), "{err}");
    let (code, _, _) = run(&["exec", "far", "--", "sh", "-c", "exit 5"]);
    assert_eq!(code, 5);
    let (code, out, err) = run(&["logs", "--tail=2", "far"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.lines().all(|l| l.starts_with("tick ")), "{out}");
    let pf = PortForward::start("kubectl", &kc, "pod/far", &[8080]);
    assert_eq!(http_get(pf.ports[0], "/index.html"), b"far\n");
    drop(pf);
    // Its usage, scraped from its node server, is what `kubectl top` shows.
    eventually(
        Duration::from_secs(60),
        "kubectl top lists the remote pod",
        || async {
            let (code, out, _) = kubectl(&kc, &["top", "pod", "far", "--no-headers"]);
            (code == 0 && out.starts_with("far ")).then_some(())
        },
    )
    .await;
    let (code, out, err) = run(&["top", "node", &name, "--no-headers"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with(&name), "{out}");
    // The node's own endpoints through `nodes/<name>/proxy`.
    let raw = format!("/api/v1/nodes/{name}/proxy/metrics/resource");
    let (code, out, err) = run(&["get", "--raw", &raw]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(
            r#"container_cpu_usage_seconds_total{container="app",namespace="default",pod="far"}"#
        ),
        "{out}"
    );
    let raw = format!("/api/v1/nodes/{name}/proxy/metrics/cadvisor");
    let (code, out, err) = run(&["get", "--raw", &raw]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.lines().any(|l| l
            .starts_with(r#"container_memory_working_set_bytes{container="app","#)
            && l.contains(r#"namespace="default",pod="far"}"#)),
        "{out}"
    );
    let raw = format!("/api/v1/nodes/{name}/proxy/pods");
    let (code, out, err) = run(&["get", "--raw", &raw]);
    assert_eq!(code, 0, "{err}");
    let pods: Value = serde_json::from_str(&out).expect("a PodList");
    assert_eq!(pods["items"][0]["metadata"]["name"], "far");

    // An autoscaler reads the remote pods' usage from the scrape and scales them: one
    // pod burning its 200m limit against a 100m request is at 200% of a 50% target.
    let burn = json!({"apiVersion": "v1", "kind": "ReplicationController", "metadata": {"name": "burn"},
        "spec": {"replicas": 1, "selector": {"app": "burn"}, "template": {
            "metadata": {"labels": {"app": "burn"}},
            "spec": {"terminationGracePeriodSeconds": 1, "containers": [{"name": "app",
                "image": "skiff/busybox:latest", "imagePullPolicy": "Never",
                "resources": {"requests": {"cpu": "100m"}, "limits": {"cpu": "200m"}},
                "command": ["sh", "-c", "while :; do :; done"]}]}}}});
    let (code, body) = call(
        admin
            .post(format!(
                "{url}/api/v1/namespaces/default/replicationcontrollers"
            ))
            .json(&burn),
    )
    .await;
    assert_eq!(code, 201, "{body}");
    let (code, _, err) = run(&[
        "autoscale",
        "rc",
        "burn",
        "--cpu-percent=50",
        "--min=1",
        "--max=2",
    ]);
    assert_eq!(code, 0, "{err}");
    eventually(
        Duration::from_secs(120),
        "the autoscaler to scale burn to 2",
        || async {
            let (_, out, _) = kubectl(
                &kc,
                &["get", "rc", "burn", "-o", "jsonpath={.spec.replicas}"],
            );
            (out == "2").then_some(())
        },
    )
    .await;
    let (code, _, err) = run(&["delete", "rc", "burn", "--wait=false"]);
    assert_eq!(code, 0, "{err}");
}

fn skiff_token(server: &Server, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(skiff_bin())
        .arg("token")
        .args(args)
        .arg("--kubeconfig")
        .arg(server.dir.join("kubeconfig"))
        .env("SKIFF_LOG", "warn")
        .output()
        .expect("run skiff token");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// Whether a hollow node joining with `token` is let in (it gets its credential and its
/// Node appears) or refused (the process fails with 401).
async fn joins_with(server: &Server, admin: &reqwest::Client, name: &str, token: &str) -> bool {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Proc(
        server
            .node(name, "127.0.0.11", token, dir.path())
            .args(["--runtime", "sim"])
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn skiff node"),
    );
    let url = &server.url;
    // Polled with a deadline: the process may end (refused) or its Node turn Ready.
    let deadline = Instant::now() + Duration::from_secs(60);
    let verdict = loop {
        if let Ok(Some(status)) = child.0.try_wait() {
            break status.success();
        }
        if node_ready(admin, url, name).await {
            break true;
        }
        assert!(
            Instant::now() < deadline,
            "{name} neither let in nor refused"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    drop(child);
    if verdict {
        let _ = call(admin.delete(format!("{url}/api/v1/nodes/{name}"))).await;
    }
    verdict
}

#[tokio::test]
async fn bootstrap_tokens_are_secrets_that_expire_and_are_revoked_by_deletion() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let admin = server.admin();
    let url = server.url.clone();

    // The join token made at first start: printed once with the ready line, kept as a
    // kube-system Secret of the bootstrap token type that expires in 24 h.
    let join = server.join_token();
    assert!(
        server.printed.contains(&format!("--token {join}")),
        "{}",
        server.printed
    );
    let id = &join[..6];
    let (code, secret) = call(admin.get(format!(
        "{url}/api/v1/namespaces/kube-system/secrets/bootstrap-token-{id}"
    )))
    .await;
    assert_eq!(code, 200, "{secret}");
    assert_eq!(secret["type"], "bootstrap.kubernetes.io/token");
    let decode = |v: &Value| {
        use base64::Engine;
        String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(v.as_str().unwrap_or_default())
                .unwrap_or_default(),
        )
        .unwrap_or_default()
    };
    let expires = chrono::DateTime::parse_from_rfc3339(&decode(&secret["data"]["expiration"]))
        .expect("an expiration");
    let left = expires.with_timezone(&chrono::Utc) - chrono::Utc::now();
    assert!(
        left > chrono::Duration::hours(23) && left <= chrono::Duration::hours(24),
        "{left}"
    );

    // `skiff token create` makes another; `list` shows both; a node joins with it.
    let (ok, out, err) = skiff_token(
        &server,
        &["create", "--ttl", "1h", "--description", "for worker-9"],
    );
    assert!(ok, "{err}");
    let made = out.trim().to_string();
    assert_eq!(made.len(), 23, "{out}");
    let (ok, listed, err) = skiff_token(&server, &["list"]);
    assert!(ok, "{err}");
    assert!(listed.starts_with("TOKEN"), "{listed}");
    assert!(
        listed.contains(&made) && listed.contains("for worker-9"),
        "{listed}"
    );
    assert!(listed.contains(&join), "{listed}");
    assert!(
        joins_with(&server, &admin, "tok-a", &made).await,
        "a new token was refused"
    );

    // Deleted, it is refused.
    let (ok, out, err) = skiff_token(&server, &["delete", &made]);
    assert!(ok, "{err}");
    assert!(out.contains(&made[..6]), "{out}");
    assert!(
        !joins_with(&server, &admin, "tok-b", &made).await,
        "a deleted token let a node in"
    );

    // Expired, it is refused, and the token cleaner deletes its Secret.
    let (ok, out, err) = skiff_token(&server, &["create", "--ttl", "2s"]);
    assert!(ok, "{err}");
    let short = out.trim().to_string();
    let path = format!(
        "{url}/api/v1/namespaces/kube-system/secrets/bootstrap-token-{}",
        &short[..6]
    );
    eventually(
        Duration::from_secs(20),
        "the expired token's Secret deleted",
        || async {
            let (code, _) = call(admin.get(&path)).await;
            (code == 404).then_some(())
        },
    )
    .await;
    assert!(
        !joins_with(&server, &admin, "tok-c", &short).await,
        "an expired token let a node in"
    );

    // Bad input to the command is refused with a clear message.
    let (ok, _, err) = skiff_token(&server, &["create", "--ttl", "1d"]);
    assert!(!ok && err.contains("not a duration"), "{err}");
    let (ok, _, err) = skiff_token(&server, &["create", "--groups", "system:masters"]);
    assert!(!ok && err.contains("system:bootstrappers:"), "{err}");
}
