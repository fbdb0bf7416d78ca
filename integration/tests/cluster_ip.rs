//! ClusterIP Services through the kernel (nftables), on the real Docker Engine: a Service
//! over two httpd pods answers on its ClusterIP from the host and from a client pod,
//! spread over both pods; a UDP Service; a Service without ready endpoints refuses at once;
//! the rules follow a scale-down; and when the cluster stops its table and device are gone
//! while the machine's other tables are untouched.
//!
//! Each test cluster takes a service range of its own (the machine's kernel is shared with
//! every other cluster a test runs at the same time).

use std::collections::HashSet;
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};
use skiff_integration::{call, client, eventually, node_names, DockerCleanup, TestCluster};

const NS: &str = "/api/v1/namespaces/default";
const WAIT: Duration = Duration::from_secs(90);

fn tables() -> Vec<String> {
    let out = Command::new("nft")
        .args(["list", "tables"])
        .output()
        .expect("nft (apt-get install nftables)");
    assert!(out.status.success(), "nft list tables: {out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

fn rc(name: &str, replicas: u32) -> Value {
    json!({"apiVersion": "v1", "kind": "ReplicationController", "metadata": {"name": name},
        "spec": {"replicas": replicas, "selector": {"app": name}, "template": {
            "metadata": {"labels": {"app": name}},
            "spec": {"terminationGracePeriodSeconds": 1, "containers": [{
                "name": "httpd", "image": "skiff/busybox:latest", "imagePullPolicy": "Never",
                "command": ["sh", "-c", "mkdir -p /www && echo $POD_NAME > /www/index.html && exec httpd -f -p 8080 -h /www"],
                "env": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
                "ports": [{"containerPort": 8080}],
                "readinessProbe": {"httpGet": {"path": "/", "port": 8080}, "periodSeconds": 1}}]}}}})
}

fn service(name: &str, selector: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
        "spec": {"selector": {"app": selector}, "ports": [
            {"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}]}})
}

async fn post(c: &TestCluster, path: &str, body: Value) -> Value {
    let (code, out) = call(client().post(c.url(path)).json(&body)).await;
    assert_eq!(code, 201, "POST {path}: {out}");
    out
}

/// One request on a fresh connection, with a short timeout.
async fn fetch(url: &str) -> Result<String, String> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .pool_max_idle_per_host(0)
        .build()
        .expect("client");
    let resp = http.get(url).send().await.map_err(|e| format!("{e:?}"))?;
    resp.text()
        .await
        .map(|t| t.trim().to_string())
        .map_err(|e| e.to_string())
}

/// The names answering on `url` over `tries` fresh connections.
async fn answers(url: &str, tries: usize) -> HashSet<String> {
    let mut seen = HashSet::new();
    for _ in 0..tries {
        if let Ok(body) = fetch(url).await {
            seen.insert(body);
        }
    }
    seen
}

fn docker_exec(node: &str, pod: &str, cmd: &str) -> String {
    let out = Command::new("docker")
        .args([
            "ps",
            "-q",
            "--filter",
            &format!("label=io.skiff.node={node}"),
            "--filter",
            &format!("label=io.skiff.pod.name={pod}"),
            "--filter",
            "label=io.skiff.container.name=httpd",
        ])
        .output()
        .expect("docker ps");
    let id = String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .unwrap_or_default()
        .to_string();
    let out = Command::new("timeout")
        .args(["10", "docker", "exec", &id, "sh", "-c", cmd])
        .output()
        .expect("docker exec");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_ips_reach_ready_pods_from_the_host_and_from_pods_and_refuse_without_endpoints() {
    skiff_integration::require_docker();
    let before = tables();
    let names = node_names("cip", 1);
    let _cleanup = DockerCleanup::new(&names);
    let node = names[0].clone();
    let n = node.clone();
    // A /24 of 10.97.0.0/16 of this process's own.
    let cidr = format!("10.97.{}.0/24", std::process::id() % 250);
    let range = cidr.clone();
    let c = TestCluster::start_with(move |cfg| {
        cfg.gateway.service_cidr = range;
        cfg.proxy.cluster_ip = "nftables".into();
        cfg.nodes = vec![skiff::config::NodeConfig {
            name: n,
            runtime: "docker".into(),
            heartbeat_seconds: 2,
            ..skiff::config::NodeConfig::default()
        }];
    });
    post(&c, &format!("{NS}/replicationcontrollers"), rc("web", 2)).await;
    let svc = post(&c, &format!("{NS}/services"), service("web", "web")).await;
    let ip = svc["spec"]["clusterIP"]
        .as_str()
        .expect("clusterIP")
        .to_string();
    let url = format!("http://{ip}/");

    // From the host: both pods answer, at random.
    let seen = eventually(WAIT, "both pods answering on the ClusterIP", || async {
        let seen = answers(&url, 20).await;
        (seen.len() == 2).then_some(seen)
    })
    .await;
    assert!(seen.iter().all(|s| s.starts_with("web-")), "{seen:?}");

    // From a pod, to the Service (and so, now and then, to itself: hairpin), by TCP and
    // by UDP.
    let (_, pods) = call(client().get(c.url(&format!("{NS}/pods?labelSelector=app%3Dweb")))).await;
    let client_pod = pods["items"][0]["metadata"]["name"]
        .as_str()
        .expect("pod")
        .to_string();
    let from_pod = eventually(WAIT, "both pods answering a pod", || async {
        let mut seen = HashSet::new();
        for _ in 0..20 {
            // busybox's nc: its static wget cannot resolve anything, not even an address.
            let out = docker_exec(
                &node,
                &client_pod,
                &format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 2 {ip} 80 | tail -n 1"),
            );
            if !out.is_empty() {
                seen.insert(out);
            }
        }
        (seen.len() == 2).then_some(seen)
    })
    .await;
    assert_eq!(from_pod, seen);

    // UDP: a Service without a selector whose Endpoints name a socket of this test on the
    // host's bridge address; a pod's DNS query to the ClusterIP arrives there.
    let sink = tokio::net::UdpSocket::bind("0.0.0.0:0").await.expect("udp");
    let sink_port = sink.local_addr().expect("addr").port();
    let dns = post(
        &c,
        &format!("{NS}/services"),
        json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "dns"},
        "spec": {"ports": [{"name": "dns", "port": 53, "protocol": "UDP"}]}}),
    )
    .await;
    post(
        &c,
        &format!("{NS}/endpoints"),
        json!({"apiVersion": "v1", "kind": "Endpoints",
        "metadata": {"name": "dns"},
        "subsets": [{"addresses": [{"ip": "172.17.0.1"}],
            "ports": [{"name": "dns", "port": sink_port, "protocol": "UDP"}]}]}),
    )
    .await;
    let dns_ip = dns["spec"]["clusterIP"].as_str().expect("ip").to_string();
    let got = eventually(WAIT, "a pod's UDP query through the ClusterIP", || async {
        let mut buf = [0u8; 512];
        let (node, pod, ip) = (node.clone(), client_pod.clone(), dns_ip.clone());
        let ask = tokio::task::spawn_blocking(move || {
            docker_exec(&node, &pod, &format!("nslookup -timeout=1 skiff.test {ip}"))
        });
        let got = tokio::time::timeout(Duration::from_secs(3), sink.recv_from(&mut buf)).await;
        let _ = ask.await;
        got.ok().and_then(Result::ok)
    })
    .await;
    assert!(got.0 > 12, "a DNS query: {} bytes", got.0);

    // A Service whose pods do not exist refuses connections at once instead of hanging.
    let empty = post(&c, &format!("{NS}/services"), service("nobody", "nobody")).await;
    let empty_url = format!(
        "http://{}/",
        empty["spec"]["clusterIP"].as_str().expect("ip")
    );
    let refused = eventually(WAIT, "the endpoint-less Service refusing", || async {
        match fetch(&empty_url).await {
            Err(e) if e.contains("ConnectionRefused") => Some(e),
            _ => None,
        }
    })
    .await;
    assert!(refused.contains("ConnectionRefused"), "{refused}");

    // Scaled to one pod: the other leaves the rotation.
    let (code, out) = call(
        client()
            .patch(c.url(&format!("{NS}/replicationcontrollers/web")))
            .header("content-type", "application/merge-patch+json")
            .body(r#"{"spec":{"replicas":1}}"#),
    )
    .await;
    assert_eq!(code, 200, "{out}");
    eventually(WAIT, "one pod left answering", || async {
        (answers(&url, 20).await.len() == 1).then_some(())
    })
    .await;

    // The rules are the cluster's own table; they go with it, and nothing else changes.
    let ours: Vec<String> = tables()
        .into_iter()
        .filter(|t| t.starts_with("table ip skiff-") && !before.contains(t))
        .collect();
    assert_eq!(ours.len(), 1, "{:?}", tables());
    drop(c);
    let after = tables();
    assert!(!after.contains(&ours[0]), "{after:?}");
    for t in before.iter().filter(|t| !t.starts_with("table ip skiff-")) {
        assert!(after.contains(t), "{t} was touched: {after:?}");
    }
    let device = ours[0].trim_start_matches("table ip ");
    let link = Command::new("ip")
        .args(["link", "show", device])
        .output()
        .expect("ip link");
    assert!(!link.status.success(), "{device} is still there");
}

/// The host's address on Docker's bridge: an address of this machine that is not loopback.
async fn bridge_address() -> String {
    let docker = skiff_actors::kubelet::runtime::docker::DockerRuntime::connect()
        .await
        .expect("docker");
    docker
        .bridge_gateway()
        .await
        .expect("the bridge's gateway")
        .to_string()
}

fn listening_on(port: u64) -> bool {
    let out = Command::new("ss")
        .args(["-Hltn", &format!("sport = :{port}")])
        .output()
        .expect("ss");
    !String::from_utf8_lossy(&out.stdout).trim().is_empty()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_ports_and_load_balancers_are_served_by_the_kernel_on_the_nodes_address() {
    skiff_integration::require_docker_and_kubectl();
    let names = node_names("nlb", 1);
    let _cleanup = DockerCleanup::new(&names);
    let n = names[0].clone();
    let address = bridge_address().await;
    let node_address = address.clone();
    let range = format!("10.99.{}.0/24", std::process::id() % 250);
    let c = TestCluster::start_with(move |cfg| {
        cfg.gateway.service_cidr = range;
        cfg.proxy.cluster_ip = "nftables".into();
        cfg.nodes = vec![skiff::config::NodeConfig {
            name: n,
            runtime: "docker".into(),
            heartbeat_seconds: 2,
            address: Some(node_address),
            ..skiff::config::NodeConfig::default()
        }];
    });
    post(&c, &format!("{NS}/replicationcontrollers"), rc("web", 2)).await;
    // A free port of this host for the balancer.
    let lb_port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let kubectl = skiff_integration::Kubectl(&c.kubeconfig);
    kubectl.ok(&[
        "expose",
        "rc",
        "web",
        "--type=LoadBalancer",
        &format!("--port={lb_port}"),
        "--target-port=8080",
    ]);
    // The balancer's ingress is the node's address.
    let svc = eventually(WAIT, "the load balancer's ingress", || async {
        let (_, svc) = call(client().get(c.url(&format!("{NS}/services/web")))).await;
        (svc["status"]["loadBalancer"]["ingress"][0]["ip"] == address.as_str()).then_some(svc)
    })
    .await;
    let node_port = svc["spec"]["ports"][0]["nodePort"]
        .as_u64()
        .expect("nodePort");
    let external = kubectl.ok(&[
        "get",
        "svc",
        "web",
        "-o",
        "jsonpath={.status.loadBalancer.ingress[0].ip}",
    ]);
    assert_eq!(external.trim(), address);

    // Both the balancer's port and the node port reach both pods, through the kernel:
    // no process listens on them.
    for port in [u64::from(lb_port), node_port] {
        let url = format!("http://{address}:{port}/");
        let seen = eventually(WAIT, &format!("both pods on {url}"), || async {
            let seen = answers(&url, 20).await;
            (seen.len() == 2).then_some(seen)
        })
        .await;
        assert!(seen.iter().all(|s| s.starts_with("web-")), "{seen:?}");
        assert!(
            !listening_on(port),
            "port {port} is the kernel's, not a listener's"
        );
    }

    // externalTrafficPolicy Local: the pods are on this node, so outside traffic still
    // reaches them.
    kubectl.ok(&[
        "patch",
        "svc",
        "web",
        "-p",
        r#"{"spec":{"externalTrafficPolicy":"Local"}}"#,
    ]);
    let url = format!("http://{address}:{node_port}/");
    eventually(WAIT, "the node port with a Local policy", || async {
        (answers(&url, 10).await.len() == 2).then_some(())
    })
    .await;

    // Back to ClusterIP: the balancer's status is cleared and its port closes.
    kubectl.ok(&[
        "patch",
        "svc",
        "web",
        "-p",
        r#"{"spec":{"type":"ClusterIP"}}"#,
    ]);
    eventually(WAIT, "the ingress cleared", || async {
        let (_, svc) = call(client().get(c.url(&format!("{NS}/services/web")))).await;
        svc["status"]["loadBalancer"]["ingress"]
            .is_null()
            .then_some(())
    })
    .await;
    let lb_url = format!("http://{address}:{lb_port}/");
    eventually(WAIT, "the balancer's port closed", || async {
        fetch(&lb_url).await.is_err().then_some(())
    })
    .await;
}
