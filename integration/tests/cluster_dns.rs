//! Cluster DNS: the kube-dns Service at the tenth address of the service range, and the
//! server behind it answering `cluster.local` names from the Services and Endpoints (A,
//! SRV, PTR, headless endpoints by hostname, ExternalName aliases, pod names, NXDOMAIN
//! with the zone's SOA), on UDP and TCP, forwarding other names to an upstream resolver
//! (a dnsmasq this test starts on loopback); and, on the real Docker Engine with the
//! kernel's ClusterIPs, pods resolving Services by short name, `<svc>.<ns>` and FQDN
//! through their kubelet-written resolv.conf and reaching them.

use std::net::{IpAddr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use hickory_resolver::proto::op::{Message, Query, ResponseCode};
use hickory_resolver::proto::rr::{Name, RData, RecordType};
use serde_json::{json, Value};
use skiff_integration::{call, client, eventually, node_names, DockerCleanup, TestCluster};

const WAIT: Duration = Duration::from_secs(60);

/// A dnsmasq on loopback answering `example.internal` (and its subdomains) itself.
struct Upstream {
    child: Child,
    addr: SocketAddr,
}

impl Upstream {
    fn start() -> Upstream {
        let port = std::net::UdpSocket::bind("127.0.0.1:0")
            .and_then(|s| s.local_addr())
            .expect("free port")
            .port();
        let child = Command::new("dnsmasq")
            .args([
                "--keep-in-foreground",
                "--no-resolv",
                "--no-hosts",
                "--bind-interfaces",
                "--listen-address=127.0.0.1",
                &format!("--port={port}"),
                "--address=/example.internal/192.0.2.44",
                "--pid-file=",
                "--user=root",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("dnsmasq (apt-get install dnsmasq-base)");
        Upstream {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Upstream {
    /// Wait (with a deadline) until dnsmasq answers, so that no test query meets it still
    /// starting (the resolver would wait out its retries).
    async fn ready(&self) {
        let addr = self.addr;
        eventually(WAIT, "dnsmasq answering", || async move {
            try_ask(
                addr,
                "probe.example.internal.",
                RecordType::A,
                false,
                Duration::from_millis(500),
            )
            .await
            .filter(|m| m.metadata.response_code == ResponseCode::NoError)
        })
        .await;
    }
}

/// Ask `server` one question, over UDP or TCP.
async fn ask(server: SocketAddr, name: &str, qtype: RecordType, tcp: bool) -> Message {
    try_ask(server, name, qtype, tcp, Duration::from_secs(5))
        .await
        .expect("an answer within 5 s")
}

/// One question, or None when no answer came within `timeout`.
async fn try_ask(
    server: SocketAddr,
    name: &str,
    qtype: RecordType,
    tcp: bool,
    timeout: Duration,
) -> Option<Message> {
    let mut msg = Message::query();
    msg.metadata.id = 4242;
    msg.metadata.recursion_desired = true;
    msg.add_query(Query::query(Name::from_ascii(name).expect("name"), qtype));
    let bytes = msg.to_vec().expect("encode");
    let reply = tokio::time::timeout(timeout, async {
        if tcp {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut s = tokio::net::TcpStream::connect(server).await.expect("tcp");
            s.write_all(&(bytes.len() as u16).to_be_bytes())
                .await
                .expect("len");
            s.write_all(&bytes).await.expect("query");
            let mut len = [0u8; 2];
            s.read_exact(&mut len).await.expect("reply length");
            let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
            s.read_exact(&mut buf).await.expect("reply");
            buf
        } else {
            let s = tokio::net::UdpSocket::bind("127.0.0.1:0")
                .await
                .expect("udp");
            s.send_to(&bytes, server).await.expect("send");
            let mut buf = vec![0u8; 4096];
            let (n, _) = s.recv_from(&mut buf).await.expect("recv");
            buf.truncate(n);
            buf
        }
    })
    .await
    .ok()?;
    Some(Message::from_vec(&reply).expect("decode"))
}

/// The answers' data, as text (`10.96.0.20`, `0 100 80 web....`).
fn data(m: &Message) -> Vec<String> {
    m.answers.iter().map(|r| r.data.to_string()).collect()
}

async fn post(c: &TestCluster, path: &str, body: Value) -> Value {
    let (code, out) = call(client().post(c.url(path)).json(&body)).await;
    assert_eq!(code, 201, "POST {path}: {out}");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_dns_answers_services_endpoints_and_pods_and_forwards_the_rest() {
    let upstream = Upstream::start();
    upstream.ready().await;
    let up = upstream.addr.to_string();
    let c = TestCluster::start_with(move |cfg| {
        cfg.dns.upstream = vec![up];
    });
    let dns = c.dns_addr.expect("the cluster serves DNS");

    // The kube-dns Service holds the tenth address and names the server.
    let (code, svc) =
        call(client().get(c.url("/api/v1/namespaces/kube-system/services/kube-dns"))).await;
    assert_eq!(code, 200, "{svc}");
    assert_eq!(svc["spec"]["clusterIP"], "10.96.0.10");
    assert_eq!(
        svc["spec"]["ports"][0],
        json!({"name": "dns", "port": 53, "protocol": "UDP", "targetPort": dns.port()})
    );
    let (_, ep) =
        call(client().get(c.url("/api/v1/namespaces/kube-system/endpoints/kube-dns"))).await;
    assert_eq!(ep["subsets"][0]["addresses"][0]["ip"], dns.ip().to_string());
    assert_eq!(ep["subsets"][0]["ports"][0]["port"], dns.port());

    let web = post(
        &c,
        "/api/v1/namespaces/default/services",
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
            "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80}]}}),
    )
    .await;
    let web_ip = web["spec"]["clusterIP"].as_str().expect("ip").to_string();
    post(
        &c,
        "/api/v1/namespaces/default/services",
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "db"},
            "spec": {"clusterIP": "None", "ports": [{"name": "pg", "port": 5432}]}}),
    )
    .await;
    post(
        &c,
        "/api/v1/namespaces/default/endpoints",
        json!({"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "db"},
            "subsets": [{"addresses": [{"ip": "10.244.0.5", "hostname": "db-0"}, {"ip": "10.244.0.6"}],
                "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}]}]}),
    )
    .await;
    post(
        &c,
        "/api/v1/namespaces/default/services",
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "ext"},
            "spec": {"type": "ExternalName", "externalName": "db.example.internal"}}),
    )
    .await;

    // A Service's name gives its ClusterIP, authoritatively, on UDP and on TCP.
    let m = eventually(WAIT, "web resolving", || async {
        let m = ask(dns, "web.default.svc.cluster.local.", RecordType::A, false).await;
        (m.metadata.response_code == ResponseCode::NoError && !m.answers.is_empty()).then_some(m)
    })
    .await;
    assert_eq!(data(&m), std::slice::from_ref(&web_ip));
    assert!(m.metadata.authoritative);
    let m = ask(dns, "web.default.svc.cluster.local.", RecordType::A, true).await;
    assert_eq!(data(&m), std::slice::from_ref(&web_ip), "over TCP");
    let m = ask(
        dns,
        "web.default.svc.cluster.local.",
        RecordType::AAAA,
        false,
    )
    .await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.answers.is_empty(), "no IPv6 address: NODATA");

    // SRV for the named port, and the address back to the name.
    let m = ask(
        dns,
        "_http._tcp.web.default.svc.cluster.local.",
        RecordType::SRV,
        false,
    )
    .await;
    assert_eq!(data(&m), ["0 100 80 web.default.svc.cluster.local."]);
    assert_eq!(m.additionals[0].data.to_string(), web_ip);
    let ip: IpAddr = web_ip.parse().expect("ip");
    let IpAddr::V4(v4) = ip else { panic!("v4") };
    let o = v4.octets();
    let rev = format!("{}.{}.{}.{}.in-addr.arpa.", o[3], o[2], o[1], o[0]);
    let m = ask(dns, &rev, RecordType::PTR, false).await;
    assert_eq!(data(&m), ["web.default.svc.cluster.local."]);

    // A headless Service: its endpoints, one by its hostname, SRV per endpoint.
    let m = eventually(WAIT, "db resolving to its endpoints", || async {
        let m = ask(dns, "db.default.svc.cluster.local.", RecordType::A, false).await;
        (m.answers.len() == 2).then_some(m)
    })
    .await;
    let mut ips = data(&m);
    ips.sort();
    assert_eq!(ips, ["10.244.0.5", "10.244.0.6"]);
    let m = ask(
        dns,
        "db-0.db.default.svc.cluster.local.",
        RecordType::A,
        false,
    )
    .await;
    assert_eq!(data(&m), ["10.244.0.5"]);
    let m = ask(
        dns,
        "_pg._tcp.db.default.svc.cluster.local.",
        RecordType::SRV,
        false,
    )
    .await;
    let mut srv = data(&m);
    srv.sort();
    assert_eq!(
        srv,
        [
            "0 50 5432 10-244-0-6.db.default.svc.cluster.local.",
            "0 50 5432 db-0.db.default.svc.cluster.local."
        ]
    );

    // ExternalName: the alias, and the alias's address from upstream.
    let m = ask(dns, "ext.default.svc.cluster.local.", RecordType::A, false).await;
    let answers = &m.answers;
    assert!(
        matches!(&answers[0].data, RData::CNAME(c) if c.0.to_string() == "db.example.internal."),
        "{answers:?}"
    );
    assert_eq!(
        answers.last().map(|r| r.data.to_string()).as_deref(),
        Some("192.0.2.44")
    );

    // Pods by their dashed address; what does not exist is NXDOMAIN with the SOA.
    let m = ask(
        dns,
        "10-244-0-9.default.pod.cluster.local.",
        RecordType::A,
        false,
    )
    .await;
    assert_eq!(data(&m), ["10.244.0.9"]);
    let m = ask(dns, "nope.default.svc.cluster.local.", RecordType::A, false).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(m.authorities[0].record_type(), RecordType::SOA);

    // Other names go to the upstream resolver.
    let m = ask(dns, "www.example.internal.", RecordType::A, false).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert_eq!(data(&m), ["192.0.2.44"]);
    assert!(!m.metadata.authoritative);

    // A deleted Service leaves the zone.
    let (code, _) = call(client().delete(c.url("/api/v1/namespaces/default/services/web"))).await;
    assert_eq!(code, 200);
    eventually(WAIT, "web gone from DNS", || async {
        let m = ask(dns, "web.default.svc.cluster.local.", RecordType::A, false).await;
        (m.metadata.response_code == ResponseCode::NXDomain).then_some(())
    })
    .await;
    drop(upstream);
}

fn docker_exec(node: &str, pod: &str, container: &str, cmd: &str) -> String {
    let out = Command::new("docker")
        .args([
            "ps",
            "-q",
            "--filter",
            &format!("label=io.skiff.node={node}"),
            "--filter",
            &format!("label=io.skiff.pod.name={pod}"),
            "--filter",
            &format!("label=io.skiff.container.name={container}"),
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

fn httpd_pod(name: &str, app: &str, extra_spec: Value) -> Value {
    let mut pod = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": app}},
        "spec": {"terminationGracePeriodSeconds": 1, "containers": [{
            "name": "httpd", "image": "skiff/busybox:latest", "imagePullPolicy": "Never",
            "command": ["sh", "-c", "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 8080 -h /www"],
            "ports": [{"name": "http", "containerPort": 8080}],
            "readinessProbe": {"httpGet": {"path": "/", "port": 8080}, "periodSeconds": 1}}]}});
    if let (Some(spec), Some(extra)) = (pod["spec"].as_object_mut(), extra_spec.as_object()) {
        spec.extend(extra.clone());
    }
    pod
}

/// The address the C library's resolver gives `name` in the pod (`getent hosts`: the
/// pod's resolv.conf with its search path and ndots, as applications resolve).
fn resolve(node: &str, pod: &str, name: &str) -> Option<String> {
    let out = docker_exec(node, pod, "httpd", &format!("getent hosts {name}"));
    out.split_whitespace().next().map(str::to_string)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_resolve_services_by_short_name_namespace_and_fqdn_and_reach_them() {
    skiff_integration::require_docker();
    let names = node_names("dns", 1);
    let _cleanup = DockerCleanup::new(&names);
    let node = names[0].clone();
    let n = node.clone();
    // A /24 of 10.98.0.0/16 of this process's own (the kernel is shared).
    let third = std::process::id() % 250;
    let range = format!("10.98.{third}.0/24");
    // The pods' resolvers try their search path and the bare name: what is not the
    // cluster's goes to this test's own resolver, not the machine's.
    let upstream = Upstream::start();
    upstream.ready().await;
    let up = upstream.addr.to_string();
    let c = TestCluster::start_with(move |cfg| {
        cfg.dns.upstream = vec![up];
        cfg.gateway.service_cidr = range;
        cfg.proxy.cluster_ip = "nftables".into();
        cfg.nodes = vec![skiff::config::NodeConfig {
            name: n,
            runtime: "docker".into(),
            heartbeat_seconds: 2,
            ..skiff::config::NodeConfig::default()
        }];
    });
    let pods = "/api/v1/namespaces/default/pods";
    post(
        &c,
        pods,
        httpd_pod(
            "web-0",
            "web",
            json!({"hostname": "web-0", "subdomain": "peers"}),
        ),
    )
    .await;
    post(
        &c,
        pods,
        httpd_pod(
            "custom",
            "custom",
            json!({"dnsPolicy": "None", "dnsConfig": {"nameservers": ["192.0.2.53"],
                "searches": ["corp.example"], "options": [{"name": "ndots", "value": "2"}]}}),
        ),
    )
    .await;
    let web = post(
        &c,
        "/api/v1/namespaces/default/services",
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
            "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}}),
    )
    .await;
    post(
        &c,
        "/api/v1/namespaces/default/services",
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "peers"},
            "spec": {"clusterIP": "None", "selector": {"app": "web"}, "ports": [{"name": "http", "port": 8080}]}}),
    )
    .await;
    let web_ip = web["spec"]["clusterIP"].as_str().expect("ip").to_string();
    let pod_ip = eventually(WAIT, "web-0 running with an address", || async {
        let (_, p) = call(client().get(c.url(&format!("{pods}/web-0")))).await;
        p["status"]["podIP"]
            .as_str()
            .filter(|_| p["status"]["phase"] == "Running")
            .map(str::to_string)
    })
    .await;

    // The kubelet's resolv.conf: the kube-dns address, the pod's search path, ndots:5.
    let resolv = docker_exec(&node, "web-0", "httpd", "cat /etc/resolv.conf");
    let dns_ip = format!("10.98.{third}.10");
    assert!(resolv.contains(&format!("nameserver {dns_ip}")), "{resolv}");
    assert!(
        resolv.contains("search default.svc.cluster.local svc.cluster.local cluster.local"),
        "{resolv}"
    );
    assert!(resolv.contains("options ndots:5"), "{resolv}");
    // dnsPolicy None: exactly the pod's dnsConfig.
    let custom = eventually(WAIT, "the custom pod running", || async {
        let out = docker_exec(&node, "custom", "httpd", "cat /etc/resolv.conf");
        (!out.is_empty()).then_some(out)
    })
    .await;
    assert_eq!(
        custom,
        "search corp.example\nnameserver 192.0.2.53\noptions ndots:2"
    );

    // By short name, by <svc>.<ns> and by FQDN, through the kube-dns ClusterIP.
    assert!(
        !docker_exec(&node, "web-0", "httpd", "ls /bin/getent").is_empty(),
        "the test image carries the C library's resolver (skiff images)"
    );
    for name in ["web", "web.default", "web.default.svc.cluster.local"] {
        let got = eventually(WAIT, &format!("{name} resolving in the pod"), || async {
            resolve(&node, "web-0", name)
        })
        .await;
        assert_eq!(got, web_ip, "{name}");
    }
    // The headless Service and the pod's own name under it.
    let got = eventually(WAIT, "peers resolving to the pod", || async {
        resolve(&node, "web-0", "peers")
    })
    .await;
    assert_eq!(got, pod_ip);
    let got = eventually(WAIT, "web-0.peers resolving", || async {
        resolve(&node, "web-0", "web-0.peers.default.svc.cluster.local")
    })
    .await;
    assert_eq!(got, pod_ip);

    // And the Service answers at the address the name gave.
    let body = eventually(WAIT, "web answering at its resolved address", || async {
        let out = docker_exec(
            &node,
            "web-0",
            "httpd",
            &format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 2 {web_ip} 80 | tail -n 1"),
        );
        (!out.is_empty()).then_some(out)
    })
    .await;
    assert_eq!(body, "web-0");
    drop(c);
    drop(upstream);
}
