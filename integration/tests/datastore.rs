//! The store on etcd (`--datastore-endpoint`): its promises on a real etcd (Debian's
//! etcd-server), several servers on one etcd serving one cluster (reads and watches of
//! each other's writes, compare-and-swap across servers, nothing acknowledged lost when a
//! server is killed), members lost and regained, and bad datastores refused.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use skiff::config::Config;
use skiff_actors::store::{self, StoreConfig, StoreError, WriteOp};
use skiff_integration::etcd::EtcdCluster;
use skiff_integration::{
    call, client, eventually, skiff_bin, unique_datastore_prefix, SkiffProcess, TestCluster,
};

/// An API-only cluster (namespace and garbage collectors, no scheduler) in `dir` on etcd.
fn server_on(etcd: &EtcdCluster, dir: &Path, prefix: &str) -> TestCluster {
    let endpoints = etcd.endpoints();
    let prefix = prefix.to_string();
    TestCluster::start_in(dir, move |cfg| {
        cfg.scheduler.enabled = false;
        cfg.controllers.enabled = vec!["namespace".into(), "garbagecollector".into()];
        cfg.store.datastore_endpoint = endpoints;
        cfg.store.datastore_prefix = prefix;
    })
}

/// A second server of the same cluster: the first one's `pki/` copied into `dir`.
fn copy_pki(from: &Path, to: &Path) {
    let (src, dst) = (from.join("pki"), to.join("pki"));
    std::fs::create_dir_all(&dst).unwrap();
    for entry in std::fs::read_dir(&src).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), dst.join(entry.file_name())).unwrap();
        }
    }
}

fn config_map(name: &str, v: u64) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap",
           "metadata": {"name": name, "namespace": "default"}, "data": {"v": v.to_string()}})
}

const CMS: &str = "/api/v1/namespaces/default/configmaps";

#[actix_rt::test]
async fn the_store_keeps_its_promises_on_etcd() {
    let etcd = EtcdCluster::start(1);
    let dir = tempfile::tempdir().unwrap();
    let mut config = StoreConfig::new(dir.path());
    let mut datastore = store::etcd::EtcdConfig::new(vec![etcd.endpoints()]);
    datastore.prefix = unique_datastore_prefix();
    config.datastore = Some(datastore);
    let metrics = Arc::new(skiff_actors::metrics::Metrics::new().unwrap());
    let arbiter = actix::Arbiter::new();
    let store = store::open(config, metrics, &arbiter.handle())
        .await
        .unwrap();
    let pod = |v: u32| json!({"kind": "Pod", "metadata": {"name": "p"}, "spec": {"v": v}});
    let key = "pods/default/p".to_string();
    let created = store
        .write(WriteOp::Create {
            key: key.clone(),
            object: pod(1),
        })
        .await
        .unwrap();
    // The write is in the snapshot by the time it is acknowledged: read your writes.
    assert_eq!(store.get(&key).unwrap().rev, created.rev);
    let again = store
        .write(WriteOp::Create {
            key: key.clone(),
            object: pod(1),
        })
        .await;
    assert!(
        matches!(again, Err(StoreError::AlreadyExists { .. })),
        "{again:?}"
    );
    let updated = store
        .write(WriteOp::Update {
            key: key.clone(),
            object: pod(2),
            expected: Some(created.rev),
        })
        .await
        .unwrap();
    assert!(updated.rev > created.rev);
    assert_eq!(
        updated.object["metadata"]["resourceVersion"],
        updated.rev.to_string()
    );
    let stale = store
        .write(WriteOp::Update {
            key: key.clone(),
            object: pod(3),
            expected: Some(created.rev),
        })
        .await;
    assert!(
        matches!(stale, Err(StoreError::Conflict { .. })),
        "{stale:?}"
    );
    // Many writes to one key at once: each is decided on the state the one before left.
    let writes: Vec<_> = (0..20)
        .map(|_| {
            let store = store.clone();
            let key = key.clone();
            async move {
                store
                    .guaranteed_update::<()>(
                        &key,
                        Box::new(|cur| {
                            let mut next = (*cur.value).clone();
                            let v = next["spec"]["v"].as_u64().unwrap();
                            next["spec"]["v"] = json!(v + 1);
                            Ok(store::Decision::Put(next))
                        }),
                    )
                    .await
            }
        })
        .collect();
    for r in futures::future::join_all(writes).await {
        assert!(matches!(r, Ok(Ok(store::Updated::Written(_)))), "{r:?}");
    }
    assert_eq!(store.get(&key).unwrap().value["spec"]["v"], 22);

    // The actor restarts (reloading from etcd): nothing acknowledged is lost, and a watch
    // from before the update still replays it.
    assert!(store.addr.send(store::InjectPanic).await.unwrap().is_err());
    let watch = eventually(Duration::from_secs(10), "the store back", || {
        let store = store.clone();
        async move { store.watch("pods/", Some(created.rev)).await.ok() }
    })
    .await;
    let replayed: Vec<_> = watch.initial.iter().map(|e| e.rev).collect();
    assert_eq!(replayed.len(), 21, "{replayed:?}");
    assert_eq!(replayed[0], updated.rev);
    let current = store.get(&key).unwrap();
    let deleted = store
        .write(WriteOp::Delete {
            key: key.clone(),
            expected: Some(current.rev),
        })
        .await
        .unwrap();
    assert!(deleted.rev > current.rev);
    assert!(store.get(&key).is_none());
    arbiter.stop();
}

#[test]
fn two_servers_on_one_etcd_serve_one_cluster() {
    let etcd = EtcdCluster::start(1);
    let prefix = unique_datastore_prefix();
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut a = server_on(&etcd, dir_a.path(), &prefix);
    copy_pki(dir_a.path(), dir_b.path());
    let b = server_on(&etcd, dir_b.path(), &prefix);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let http = client();
        // A write acknowledged by one server is read at once through the other (a read of
        // the latest state is consistent).
        for i in 0..20 {
            let name = format!("cm-{i}");
            let (code, made) = call(http.post(a.url(CMS)).json(&config_map(&name, 0))).await;
            assert_eq!(code, 201, "{made}");
            let (code, read) = call(http.get(b.url(&format!("{CMS}/{name}")))).await;
            assert_eq!(code, 200, "{read}");
            assert_eq!(
                read["metadata"]["resourceVersion"],
                made["metadata"]["resourceVersion"]
            );
        }
        let (_, list) = call(http.get(b.url(CMS))).await;
        assert_eq!(list["items"].as_array().unwrap().len(), 20, "{list}");

        // A watch through B sees a change made through A.
        let (_, cm) = call(http.get(a.url(&format!("{CMS}/cm-0")))).await;
        let rv = cm["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .to_string();
        let mut watch = http
            .get(b.url(&format!(
                "{CMS}?watch=true&resourceVersion={rv}&fieldSelector=metadata.name%3Dcm-0"
            )))
            .send()
            .await
            .unwrap();
        let mut changed = cm.clone();
        changed["data"]["v"] = json!("1");
        let (code, put) = call(http.put(a.url(&format!("{CMS}/cm-0"))).json(&changed)).await;
        assert_eq!(code, 200, "{put}");
        let chunk = tokio::time::timeout(Duration::from_secs(10), watch.chunk())
            .await
            .expect("an event within 10 s")
            .unwrap()
            .expect("a chunk");
        let event: Value = serde_json::from_slice(&chunk).unwrap();
        assert_eq!(event["type"], "MODIFIED", "{event}");
        assert_eq!(
            event["object"]["metadata"]["resourceVersion"],
            put["metadata"]["resourceVersion"]
        );

        // Two servers updating from the same resourceVersion: exactly one wins.
        let mut one = put.clone();
        one["data"]["v"] = json!("a");
        let mut two = put.clone();
        two["data"]["v"] = json!("b");
        let (ra, rb) = futures::join!(
            call(http.put(a.url(&format!("{CMS}/cm-0"))).json(&one)),
            call(http.put(b.url(&format!("{CMS}/cm-0"))).json(&two))
        );
        let mut codes = [ra.0, rb.0];
        codes.sort();
        assert_eq!(codes, [200, 409], "{} / {}", ra.1, rb.1);
        let loser = if ra.0 == 409 { &ra.1 } else { &rb.1 };
        assert_eq!(loser["reason"], "Conflict", "{loser}");
    });
    // A server goes away; the other serves everything the cluster acknowledged.
    a.stop();
    rt.block_on(async {
        let (code, list) = call(client().get(b.url(CMS))).await;
        assert_eq!(code, 200);
        assert_eq!(list["items"].as_array().unwrap().len(), 20, "{list}");
    });
}

#[test]
fn a_killed_server_loses_no_acknowledged_write() {
    let etcd = EtcdCluster::start(1);
    let toml = format!(
        "[store]\ndatastore_endpoint = \"{}\"\ndatastore_prefix = \"{}\"\n",
        etcd.endpoints(),
        unique_datastore_prefix()
    );
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut a = SkiffProcess::start_with(dir_a.path(), &toml);
    copy_pki(dir_a.path(), dir_b.path());
    let b = SkiffProcess::start_with(dir_b.path(), &toml);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let acknowledged = rt.block_on(async {
        let http = client();
        let url = format!("{}{CMS}", a.url);
        // Writers keep creating through A while it is killed.
        let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let writers: Vec<_> = (0..4)
            .map(|w| {
                let (http, url, count) = (http.clone(), url.clone(), count.clone());
                tokio::spawn(async move {
                    let mut acked = Vec::new();
                    for i in 0.. {
                        let name = format!("w{w}-{i}");
                        match http.post(&url).json(&config_map(&name, i)).send().await {
                            Ok(r) if r.status().as_u16() == 201 => {
                                acked.push(name);
                                count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            }
                            Ok(r) => panic!("unexpected {}", r.status()),
                            Err(_) => break,
                        }
                    }
                    acked
                })
            })
            .collect();
        // Killed in the middle of the writing, once a good number went through.
        eventually(Duration::from_secs(30), "writes acknowledged by A", || {
            let n = count.load(std::sync::atomic::Ordering::Relaxed);
            async move { (n > 50).then_some(()) }
        })
        .await;
        a.kill9();
        let mut acked = Vec::new();
        for w in writers {
            acked.extend(w.await.unwrap());
        }
        acked
    });
    assert!(
        acknowledged.len() > 20,
        "writes went through: {}",
        acknowledged.len()
    );
    rt.block_on(async {
        let (code, list) = call(client().get(format!("{}{CMS}", b.url))).await;
        assert_eq!(code, 200, "{list}");
        let names: std::collections::HashSet<&str> = list["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|i| i["metadata"]["name"].as_str())
            .collect();
        for name in &acknowledged {
            assert!(names.contains(name.as_str()), "acknowledged {name} lost");
        }
    });
    drop(b);
}

#[test]
fn writes_go_on_without_one_member_and_fail_clearly_without_quorum() {
    let mut etcd = EtcdCluster::start(3);
    let dir = tempfile::tempdir().unwrap();
    let c = server_on(&etcd, dir.path(), &unique_datastore_prefix());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let http = client();
    let create = |name: String| {
        let http = http.clone();
        let url = c.url(CMS);
        async move { call(http.post(url).json(&config_map(&name, 0))).await }
    };
    rt.block_on(async {
        assert_eq!(create("before".into()).await.0, 201);
        // One of three members lost: the other two are a quorum, writes go on (a request
        // on the dead member's connection may fail once while the client moves over).
        etcd.kill(0);
        let mut n = 0;
        eventually(Duration::from_secs(20), "writes with two members", || {
            n += 1;
            let f = create(format!("two-{n}"));
            async move { (f.await.0 == 201).then_some(()) }
        })
        .await;
        for i in 0..10 {
            let (code, body) = create(format!("two-more-{i}")).await;
            assert_eq!(code, 201, "{body}");
        }
        // Two lost: no quorum. Writes fail with a retryable Status naming the datastore,
        // never a panic or a half-applied write.
        etcd.kill(1);
        let refused: Value = eventually(Duration::from_secs(30), "writes refused", || {
            let f = create("no-quorum".into());
            async move {
                let (code, body) = f.await;
                assert!(code == 201 || code >= 500, "{code} {body}");
                (code >= 500).then_some(body)
            }
        })
        .await;
        assert_eq!(refused["kind"], "Status", "{refused}");
        assert_eq!(refused["code"], 503, "{refused}");
        assert!(
            refused["message"]
                .as_str()
                .is_some_and(|m| m.contains("datastore")),
            "{refused}"
        );
    });
    // A member comes back: a quorum again, writes resume.
    etcd.restart(1);
    etcd.wait_healthy(1);
    rt.block_on(async {
        let mut n = 0;
        eventually(
            Duration::from_secs(30),
            "writes after a member returned",
            || {
                n += 1;
                let f = create(format!("back-{n}"));
                async move { (f.await.0 == 201).then_some(()) }
            },
        )
        .await;
        let (code, list) = call(http.get(c.url(CMS))).await;
        assert_eq!(code, 200);
        let names: Vec<&str> = list["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|i| i["metadata"]["name"].as_str())
            .collect();
        for name in ["before", "two-more-0", "two-more-9"] {
            assert!(names.contains(&name), "{name} lost: {names:?}");
        }
    });
}

/// `system::start` on etcd as a server would be started, for the starts that must fail.
fn start_fails(dir: &Path, endpoints: &str, prefix: &str) -> String {
    let mut cfg = Config::load(None).unwrap();
    cfg.cluster.data_dir = dir.to_path_buf();
    cfg.cluster.manifests_dir = None;
    cfg.gateway.listen = "127.0.0.1:0".into();
    cfg.gateway.insecure_http = true;
    cfg.nodes.clear();
    cfg.proxy.cluster_ip = "none".into();
    cfg.store.datastore_endpoint = endpoints.into();
    cfg.store.datastore_prefix = prefix.into();
    let started = actix_rt::System::new().block_on(async move {
        match skiff::system::start(&cfg).await {
            Ok(sys) => {
                sys.shutdown().await;
                None
            }
            Err(e) => {
                let mut msg = e.to_string();
                let mut source = std::error::Error::source(&e);
                while let Some(s) = source {
                    msg.push_str(&format!(": {s}"));
                    source = s.source();
                }
                Some(msg)
            }
        }
    });
    started.expect("the start should have failed")
}

#[test]
fn a_datastore_holding_another_clusters_data_is_refused() {
    let etcd = EtcdCluster::start(1);
    let prefix = unique_datastore_prefix();
    let dir = tempfile::tempdir().unwrap();
    let first = server_on(&etcd, dir.path(), &prefix);
    // Another cluster (its own CA) on the same prefix is refused...
    let other = tempfile::tempdir().unwrap();
    let msg = start_fails(other.path(), &etcd.endpoints(), &prefix);
    assert!(msg.contains("another cluster"), "{msg}");
    drop(first);
    // ... and starts on a prefix of its own.
    let own = server_on(&etcd, other.path(), &unique_datastore_prefix());
    drop(own);
}

#[test]
fn an_unreachable_datastore_fails_the_start_within_seconds() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("skiff.toml");
    std::fs::write(
        &config,
        "[gateway]\nlisten = \"127.0.0.1:0\"\n[proxy]\ncluster_ip = \"none\"\n",
    )
    .unwrap();
    let started = Instant::now();
    let mut child = std::process::Command::new(skiff_bin())
        .args(["server", "--insecure-http", "--config"])
        .arg(&config)
        .arg("--data-dir")
        .arg(dir.path())
        .args(["--datastore-endpoint", &format!("http://127.0.0.1:{port}")])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if started.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            panic!("skiff server still running 30 s after start on a dead datastore");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!status.success());
    assert!(
        stderr.contains(&format!(
            "the datastore at http://127.0.0.1:{port} is unreachable"
        )),
        "{stderr}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "took {:?}",
        started.elapsed()
    );
}

/// The holder of a Lease in kube-system, read through `url`.
async fn holder(url: &str, lease: &str) -> Option<String> {
    let (code, body) = call(client().get(format!(
        "{url}/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/{lease}"
    )))
    .await;
    (code == 200)
        .then(|| body["spec"]["holderIdentity"].as_str().map(str::to_string))
        .flatten()
}

/// A pod of its own name, and once the scheduler placed it, the node.
async fn bound_node(url: &str, name: &str) -> Option<String> {
    let (_, pod) = call(client().get(format!("{url}/api/v1/namespaces/default/pods/{name}"))).await;
    pod["spec"]["nodeName"].as_str().map(str::to_string)
}

#[test]
fn a_standby_server_schedules_within_the_lease_once_the_leader_is_killed() {
    let etcd = EtcdCluster::start(1);
    let store = format!(
        "[store]\ndatastore_endpoint = \"{}\"\ndatastore_prefix = \"{}\"\n",
        etcd.endpoints(),
        unique_datastore_prefix()
    );
    let node = |name: &str| {
        format!("[[nodes]]\nname = \"{name}\"\nruntime = \"sim\"\nheartbeat_seconds = 1\nserver_port = 0\n")
    };
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut a = SkiffProcess::start_with(dir_a.path(), &format!("{store}{}", node("node-a")));
    let rt = tokio::runtime::Runtime::new().unwrap();
    // A leads both components before B exists.
    let leader = rt.block_on(eventually(Duration::from_secs(20), "A leading", || {
        let url = a.url.clone();
        async move {
            let s = holder(&url, "kube-scheduler").await?;
            holder(&url, "kube-controller-manager").await?;
            Some(s)
        }
    }));
    copy_pki(dir_a.path(), dir_b.path());
    let b = SkiffProcess::start_with(dir_b.path(), &format!("{store}{}", node("node-b")));
    rt.block_on(async {
        let http = client();
        let pods = format!("{}/api/v1/namespaces/default/pods", b.url);
        let (code, made) = call(
            http.post(&pods)
                .json(&skiff_integration::pod("before", json!({}))),
        )
        .await;
        assert_eq!(code, 201, "{made}");
        eventually(Duration::from_secs(20), "a pod placed by A", || {
            bound_node(&b.url, "before")
        })
        .await;
        // B follows: the Lease is still A's.
        assert_eq!(holder(&b.url, "kube-scheduler").await, Some(leader.clone()));
    });
    a.kill9();
    let killed = Instant::now();
    rt.block_on(async {
        let http = client();
        let pods = format!("{}/api/v1/namespaces/default/pods", b.url);
        let (code, made) = call(
            http.post(&pods)
                .json(&skiff_integration::pod("after", json!({}))),
        )
        .await;
        assert_eq!(code, 201, "{made}");
        // Lease duration 15 s, retries every 2 s: B takes over and places the pod.
        eventually(Duration::from_secs(30), "a pod placed by B", || {
            bound_node(&b.url, "after")
        })
        .await;
        let took = killed.elapsed();
        let now = holder(&b.url, "kube-scheduler").await.unwrap();
        assert_ne!(now, leader, "B holds the scheduler's Lease");
        assert!(
            took < Duration::from_secs(25),
            "B placed the pod {took:?} after the leader died"
        );
        eventually(Duration::from_secs(30), "B leading the controllers", || {
            let url = b.url.clone();
            let now = now.clone();
            async move { (holder(&url, "kube-controller-manager").await? == now).then_some(()) }
        })
        .await;
    });
}

/// A secure `skiff server` (HTTPS, tokens) on etcd, killed when dropped.
struct SecureServer {
    child: std::process::Child,
    url: String,
    dir: std::path::PathBuf,
}

impl SecureServer {
    fn start(dir: &Path, endpoints: &str, prefix: &str) -> SecureServer {
        use std::io::BufRead;
        let config = dir.join("server.toml");
        std::fs::write(
            &config,
            "[gateway]\nlisten = \"127.0.0.1:0\"\n[proxy]\ncluster_ip = \"none\"\n[network]\ncluster_cidr = \"\"\n",
        )
        .unwrap();
        let mut child = std::process::Command::new(skiff_bin())
            .args(["server", "--config"])
            .arg(&config)
            .arg("--data-dir")
            .arg(dir)
            .args([
                "--datastore-endpoint",
                endpoints,
                "--datastore-prefix",
                prefix,
            ])
            .env("SKIFF_LOG", "warn")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .expect("spawn skiff server");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .expect("ready line");
        let url = line
            .split_whitespace()
            .find(|w| w.starts_with("https://"))
            .unwrap_or_else(|| panic!("no https URL in {line:?}"))
            .to_string();
        SecureServer {
            child,
            url,
            dir: dir.to_path_buf(),
        }
    }

    fn admin(&self) -> reqwest::Client {
        let tokens = std::fs::read_to_string(self.dir.join("pki/tokens.csv")).unwrap();
        let token = tokens
            .lines()
            .find(|l| l.contains("system:masters"))
            .and_then(|l| l.split(',').next())
            .unwrap()
            .to_string();
        let ca = std::fs::read_to_string(self.dir.join("pki/ca.crt")).unwrap();
        skiff_integration::tls_client(&ca, Some(&token), None)
    }
}

impl Drop for SecureServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_node_carries_on_through_another_server_when_its_own_dies() {
    let etcd = EtcdCluster::start(1);
    let prefix = unique_datastore_prefix();
    let (dir_a, dir_b, node_dir) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let mut a = SecureServer::start(dir_a.path(), &etcd.endpoints(), &prefix);
    copy_pki(dir_a.path(), dir_b.path());
    let b = SecureServer::start(dir_b.path(), &etcd.endpoints(), &prefix);
    let token = std::fs::read_to_string(dir_a.path().join("pki/join-token"))
        .unwrap()
        .trim()
        .to_string();
    let node = "failover-node";
    // Killed when dropped, also when the test fails.
    let _node = Killed(
        std::process::Command::new(skiff_bin())
            .args(["node", "--server", &format!("{},{}", a.url, b.url)])
            .args(["--token", &token, "--name", node, "--runtime", "sim"])
            .args(["--address", "127.0.0.1", "--heartbeat-seconds", "1"])
            .args([
                "--server-port",
                "0",
                "--cluster-cidr",
                "",
                "--service-cidr",
                "",
            ])
            .arg("--ca-file")
            .arg(dir_a.path().join("pki/ca.crt"))
            .arg("--data-dir")
            .arg(node_dir.path())
            .env("SKIFF_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .expect("spawn skiff node"),
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let admin = b.admin();
    let lease_url = format!(
        "{}/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{node}",
        b.url
    );
    let renewed = |admin: reqwest::Client, url: String| async move {
        let (code, l) = call(admin.get(url)).await;
        (code == 200)
            .then(|| l["spec"]["renewTime"].as_str().map(str::to_string))
            .flatten()
    };
    rt.block_on(async {
        let before = eventually(Duration::from_secs(30), "the node's lease", || {
            renewed(admin.clone(), lease_url.clone())
        })
        .await;
        // The cluster is all up (A's controllers published the root CA every pod mounts)
        // before A goes: the test is of the node's failover, not of a controller takeover.
        eventually(
            Duration::from_secs(30),
            "kube-root-ca.crt in default",
            || {
                let admin = admin.clone();
                let url = format!(
                    "{}/api/v1/namespaces/default/configmaps/kube-root-ca.crt",
                    b.url
                );
                async move { (call(admin.get(url)).await.0 == 200).then_some(()) }
            },
        )
        .await;
        // Its server dies: the node moves to the other and goes on renewing...
        a.child.kill().unwrap();
        let _ = a.child.wait();
        let killed = chrono::Utc::now();
        eventually(
            Duration::from_secs(30),
            "a renewal after the server died",
            || {
                let (admin, url, before) = (admin.clone(), lease_url.clone(), before.clone());
                async move {
                    let now = renewed(admin, url).await?;
                    let at = chrono::DateTime::parse_from_rfc3339(&now).ok()?;
                    (now != before && at > killed).then_some(())
                }
            },
        )
        .await;
        // ... and its watches resumed there: a pod for it runs.
        let mut pod = skiff_integration::pod("on-failover", json!({}));
        pod["spec"]["nodeName"] = json!(node);
        let (code, made) = call(
            admin
                .post(format!("{}/api/v1/namespaces/default/pods", b.url))
                .json(&pod),
        )
        .await;
        assert_eq!(code, 201, "{made}");
        eventually(
            Duration::from_secs(30),
            "the pod running on the node",
            || {
                let admin = admin.clone();
                let url = format!("{}/api/v1/namespaces/default/pods/on-failover", b.url);
                async move {
                    let (_, p) = call(admin.get(url)).await;
                    (p["status"]["phase"] == "Running").then_some(())
                }
            },
        )
        .await;
    });
}

/// A child process killed when dropped.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[actix_rt::test]
async fn events_on_etcd_expire_with_their_lease() {
    let etcd = EtcdCluster::start(1);
    let dir = tempfile::tempdir().unwrap();
    let mut config = StoreConfig::new(dir.path());
    let mut datastore = store::etcd::EtcdConfig::new(vec![etcd.endpoints()]);
    datastore.prefix = unique_datastore_prefix();
    config.datastore = Some(datastore);
    config.event_ttl = Some(Duration::from_secs(3));
    let metrics = Arc::new(skiff_actors::metrics::Metrics::new().unwrap());
    let arbiter = actix::Arbiter::new();
    let store = store::open(config, metrics, &arbiter.handle())
        .await
        .unwrap();
    let event = json!({"kind": "Event", "metadata": {"name": "e", "namespace": "default"}});
    let key = "events/default/e".to_string();
    let created = store
        .write(WriteOp::Create {
            key: key.clone(),
            object: event,
        })
        .await
        .unwrap();
    // A pod is not an Event: it stays.
    let pod_key = "pods/default/p".to_string();
    store
        .write(WriteOp::Create {
            key: pod_key.clone(),
            object: json!({"kind": "Pod", "metadata": {"name": "p", "namespace": "default"}}),
        })
        .await
        .unwrap();
    let mut watch = store.watch("events/", Some(created.rev)).await.unwrap();
    // etcd deletes the Event when its lease runs out; watchers see the DELETED event.
    let deleted = tokio::time::timeout(Duration::from_secs(30), watch.rx.recv())
        .await
        .expect("the Event expired within 30 s")
        .expect("an event");
    assert_eq!(deleted.kind, store::EventKind::Deleted);
    assert_eq!(deleted.key, key);
    assert!(store.get(&key).is_none());
    assert!(store.get(&pod_key).is_some());
    arbiter.stop();
}
