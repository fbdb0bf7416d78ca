//! The pod network across hosts. Two hosts made inside this machine (network namespaces on
//! one segment, each with its own Docker Engine) run a `skiff node` each against a server
//! on this machine. Each node is given a block of the cluster's pod range, runs its pods on
//! a bridge holding it, and routes the other node's block through that node: a pod on one
//! host reaches a pod on the other by its own address, and is seen there by its own
//! address (no NAT between pods), directly and through a Service's ClusterIP (each node
//! programs its own kernel), whose name the pod resolves through the cluster DNS. A node deleted takes its route with it, and a node stopped
//! leaves nothing of skiff's in its host's kernel.

use std::time::Duration;

use serde_json::{json, Value};
use skiff_integration::hosts::{Host, Lan};
use skiff_integration::{call, eventually, skiff_bin, unique_pod_range, TestCluster};

const WAIT: Duration = Duration::from_secs(90);
const PAUSE: &str = "skiff/pause:1.0";
const BUSYBOX: &str = "skiff/busybox:latest";

/// A pod pinned to `node`; `script` is its one container's shell program.
fn pod(name: &str, node: &str, script: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"app": name}},
        "spec": {"nodeName": node, "terminationGracePeriodSeconds": 1, "containers": [{
            "name": "c", "image": BUSYBOX, "imagePullPolicy": "Never",
            "command": ["sh", "-c", script]}]}})
}

/// What skiff put in a host's kernel: its forward chains, nft tables and routes.
fn skiff_state(host: &Host) -> Vec<String> {
    let text = |o: std::process::Output| String::from_utf8_lossy(&o.stdout).to_string();
    let mut found: Vec<String> = text(host.exec("iptables", &["-w", "-S"]))
        .lines()
        .chain(text(host.exec("nft", &["list", "tables"])).lines())
        .filter(|l| l.to_ascii_lowercase().contains("skiff"))
        .map(str::to_string)
        .collect();
    found.extend(
        text(host.exec("ip", &["route", "show", "proto", "83"]))
            .lines()
            .map(str::to_string),
    );
    found
}

/// From `container` on `host`, the address the server at `ip:port` saw it come from.
fn fetch_addr(host: &Host, container: &str, ip: &str, port: u16) -> Option<String> {
    let script = format!(
        "printf 'GET /cgi-bin/addr HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {ip} {port} | tail -n 1"
    );
    let out = host.docker(&["exec", container, "sh", "-c", &script]);
    // httpd listens on IPv6 too: an IPv4 client is `[::ffff:a.b.c.d]` to it.
    let body = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let addr = body.trim_start_matches('[').trim_end_matches(']');
    let addr = addr.trim_start_matches("::ffff:").to_string();
    (!addr.is_empty()).then_some(addr)
}

fn routes(host: &Host) -> String {
    String::from_utf8_lossy(&host.exec("ip", &["route", "show", "proto", "83"]).stdout).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_on_different_hosts_reach_each_other_by_their_own_addresses_over_host_gw() {
    across_hosts("host-gw", "pg", 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_on_different_hosts_reach_each_other_by_their_own_addresses_over_vxlan() {
    across_hosts("vxlan", "pv", 2).await;
}

/// Two hosts on segment `10.201.<net>.0/24` (namespaces named after `tag`), their nodes on
/// the pod network `backend`.
async fn across_hosts(backend: &str, tag: &str, net: u8) {
    skiff_integration::require_docker();
    let lan = Lan::new(tag, net);
    let mut hosts = [lan.host(1), lan.host(2)];
    for h in &hosts {
        h.load_images(&[PAUSE, BUSYBOX]);
    }
    let (root, pod_range) = (lan.root_ip(), unique_pod_range());
    let range = pod_range.clone();
    let c = TestCluster::start_secure_with(move |cfg| {
        cfg.gateway.listen = format!("{root}:0");
        cfg.network.cluster_cidr = range;
    });
    let admin = c.admin_client();
    let ca = c.data_dir.join("pki").join("ca.crt");
    let names = [format!("{tag}-h1"), format!("{tag}-h2")];
    for (h, name) in hosts.iter_mut().zip(&names) {
        let args: Vec<String> = [
            "--server",
            &c.url,
            "--ca-file",
            &ca.display().to_string(),
            "--token",
            &c.join_token(),
            "--name",
            name,
            "--cluster-cidr",
            &pod_range,
            "--heartbeat-seconds",
            "2",
            "--network-backend",
            backend,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        h.start_node(&skiff_bin(), &args);
    }

    // Both nodes register and are given blocks of the pod range.
    let blocks = eventually(WAIT, "both nodes with a podCIDR", || async {
        let (_, list) = call(admin.get(c.url("/api/v1/nodes"))).await;
        let mut blocks = Vec::new();
        for name in &names {
            let node = list["items"]
                .as_array()?
                .iter()
                .find(|n| n["metadata"]["name"] == name.as_str())?;
            blocks.push(node["spec"]["podCIDR"].as_str()?.to_string());
        }
        Some(blocks)
    })
    .await;
    let prefix = pod_range.trim_end_matches(".0.0/16");
    assert!(
        blocks.iter().all(|b| b.starts_with(prefix)),
        "{blocks:?} in {pod_range}"
    );
    assert_ne!(blocks[0], blocks[1]);

    // A server on the second host telling each client the address it came from, and a
    // client on the first.
    let server = "mkdir -p /www/cgi-bin && printf '#!/bin/sh\\necho Content-Type: text/plain\\necho\\necho $REMOTE_ADDR\\n' > /www/cgi-bin/addr && chmod +x /www/cgi-bin/addr && exec httpd -f -p 8080 -h /www";
    for p in [
        pod("server", &names[1], server),
        pod("client", &names[0], "exec sleep 3600"),
    ] {
        let (code, out) = call(
            admin
                .post(c.url("/api/v1/namespaces/default/pods"))
                .json(&p),
        )
        .await;
        assert_eq!(code, 201, "{out}");
    }
    let ip_of = |name: &'static str| {
        let (admin, c) = (admin.clone(), &c);
        async move {
            let (_, p) =
                call(admin.get(c.url(&format!("/api/v1/namespaces/default/pods/{name}")))).await;
            (p["status"]["phase"] == "Running")
                .then(|| p["status"]["podIP"].as_str().map(str::to_string))
                .flatten()
        }
    };
    let server_ip = eventually(WAIT, "the server pod running", || ip_of("server")).await;
    let client_ip = eventually(WAIT, "the client pod running", || ip_of("client")).await;
    let in_block = |ip: &str, block: &str| ip.starts_with(block.trim_end_matches("0/24"));
    assert!(
        in_block(&server_ip, &blocks[1]),
        "{server_ip} in {}",
        blocks[1]
    );
    assert!(
        in_block(&client_ip, &blocks[0]),
        "{client_ip} in {}",
        blocks[0]
    );

    // Each host routes the other's block through it (host-gw), or through the overlay to
    // its VTEP, the block's network address (vxlan).
    let hop = |k: usize| match backend {
        "vxlan" => format!(
            "{} via {} dev skv",
            blocks[k],
            blocks[k].trim_end_matches("/24")
        ),
        _ => format!("{} via {}", blocks[k], hosts[k].ip),
    };
    let (to_h2, to_h1) = (hop(1), hop(0));
    eventually(WAIT, "each host's route to the other's pods", || async {
        (routes(&hosts[0]).contains(&to_h2) && routes(&hosts[1]).contains(&to_h1)).then_some(())
    })
    .await;

    // Across the hosts, pod to pod: the server sees the client's own address.
    let container = hosts[0]
        .container_of("client", "c")
        .expect("client container");
    let seen = eventually(
        WAIT,
        "the client reaching the server across hosts",
        || async { fetch_addr(&hosts[0], &container, &server_ip, 8080) },
    )
    .await;
    assert_eq!(
        seen,
        client_ip,
        "the server saw {seen}; node log:\n{}",
        hosts[0].node_log()
    );

    // Through a Service too: the client's host DNATs its ClusterIP to the server on the
    // other host, and the server still sees the client's own address.
    let svc = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "addr"},
        "spec": {"selector": {"app": "server"}, "ports": [{"port": 80, "targetPort": 8080}]}});
    let (code, svc) = call(
        admin
            .post(c.url("/api/v1/namespaces/default/services"))
            .json(&svc),
    )
    .await;
    assert_eq!(code, 201, "{svc}");
    let cluster_ip = svc["spec"]["clusterIP"]
        .as_str()
        .expect("clusterIP")
        .to_string();
    let seen = eventually(
        WAIT,
        "the client reaching the server through its ClusterIP",
        || async { fetch_addr(&hosts[0], &container, &cluster_ip, 80) },
    )
    .await;
    assert_eq!(seen, client_ip, "through {cluster_ip}");
    // And by name: the cluster DNS on the server's host answers the pod, reached through
    // the kube-dns ClusterIP its node's kernel leads there.
    eventually(
        WAIT,
        "the Service's name resolved in the client pod",
        || async {
            let fqdn = "addr.default.svc.cluster.local";
            let out = hosts[0].docker(&["exec", &container, "nslookup", "-timeout=2", fqdn]);
            String::from_utf8_lossy(&out.stdout)
                .contains(&cluster_ip)
                .then_some(())
        },
    )
    .await;

    // A node deleted takes its route with it.
    hosts[1].stop_node();
    let (code, out) = call(admin.delete(c.url(&format!("/api/v1/nodes/{}", names[1])))).await;
    assert_eq!(code, 200, "{out}");
    eventually(WAIT, "the deleted node's route gone", || async {
        (!routes(&hosts[0]).contains(&blocks[1])).then_some(())
    })
    .await;

    // Stopped, a node leaves nothing of skiff's in its host's kernel; the engine's own
    // rules are still there.
    assert!(
        !skiff_state(&hosts[0]).is_empty(),
        "the running node's rules"
    );
    hosts[0].stop_node();
    for h in &hosts {
        assert_eq!(skiff_state(h), Vec::<String>::new(), "left in {}", h.ns);
        let rules = String::from_utf8_lossy(&h.exec("iptables", &["-w", "-S"]).stdout).to_string();
        assert!(rules.contains("DOCKER-USER"), "{rules}");
    }
}
