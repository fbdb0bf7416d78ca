//! Test harness: a real cluster (real RocksDB in a temporary directory, real HTTP on an
//! ephemeral port) running on its own thread, and small helpers to talk to it.

pub mod etcd;
pub mod hosts;

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;
use skiff::config::Config;
use skiff::security::AdminCredential;
use skiff::system::{self, Credentials};
use skiff_actors::kubelet::runtime::sim::SimRuntime;
use skiff_actors::pki::Credential;
use skiff_actors::runtime::InformerFactory;
use skiff_actors::store::StoreHandle;
use std::sync::Arc;

pub struct TestCluster {
    pub url: String,
    pub kubeconfig: PathBuf,
    pub store: StoreHandle,
    /// The simulated runtimes of hollow nodes, by node name (to set their pods' usage).
    pub sims: Vec<(String, Arc<SimRuntime>)>,
    pub data_dir: PathBuf,
    /// The CA, admin credential and join token of a secure cluster (`start_secure`).
    pub credentials: Option<Credentials>,
    /// The informers the cluster's components share (to inspect them, or to build another
    /// controller on them).
    pub informers: InformerFactory,
    /// Where the cluster DNS listens (UDP and TCP), when `[dns] enabled`.
    pub dns_addr: Option<std::net::SocketAddr>,
    /// Makes each supervised actor of the cluster panic, by name.
    pub faults: skiff::system::Faults,
    config: Config,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    _tmp: Option<tempfile::TempDir>,
}

/// A pod range (`10.<n>.0.0/16`) no other cluster of this test run has: clusters side by
/// side share the Docker Engine, whose networks may not overlap.
pub fn unique_pod_range() -> String {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!(
        "10.{}.0.0/16",
        100 + (std::process::id().wrapping_mul(7) + n) % 120
    )
}

/// An etcd key prefix no other cluster of this test run has.
pub fn unique_datastore_prefix() -> String {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("/skiff-test-{}-{}-{n}", std::process::id(), uuid_like())
}

impl TestCluster {
    /// The API alone (store, gateway and the namespace and garbage collectors that finish
    /// deletions), without the scheduler and controllers that would change objects under
    /// a test of the API's own behaviour.
    pub fn api_only() -> TestCluster {
        Self::start_with(|cfg| {
            cfg.scheduler.enabled = false;
            cfg.controllers.enabled = vec!["namespace".into(), "garbagecollector".into()];
        })
    }

    /// A fresh cluster with Docker nodes of these names (2 s heartbeats).
    pub fn with_docker_nodes(names: &[String]) -> TestCluster {
        let names = names.to_vec();
        Self::start_with(move |cfg| {
            cfg.nodes = names
                .iter()
                .map(|n| skiff::config::NodeConfig {
                    name: n.clone(),
                    runtime: "docker".into(),
                    heartbeat_seconds: 2,
                    ..skiff::config::NodeConfig::default()
                })
                .collect();
        })
    }

    /// A fresh cluster in a new temporary directory.
    pub fn start() -> TestCluster {
        Self::start_with(|_| {})
    }

    /// A fresh cluster serving HTTPS with authentication, as `skiff up` does by default:
    /// the API alone, like `api_only`, plus the CSR approver and signer.
    pub fn start_secure() -> TestCluster {
        Self::start_secure_with(|cfg| {
            cfg.scheduler.enabled = false;
            cfg.controllers.enabled = vec![
                "namespace".into(),
                "garbagecollector".into(),
                "csrsigning".into(),
            ];
        })
    }

    pub fn start_secure_with(tweak: impl FnOnce(&mut Config)) -> TestCluster {
        Self::start_with(|cfg| {
            cfg.gateway.insecure_http = false;
            tweak(cfg);
        })
    }

    pub fn start_with(tweak: impl FnOnce(&mut Config)) -> TestCluster {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut c = Self::start_in(tmp.path(), tweak);
        c._tmp = Some(tmp);
        c
    }

    /// A cluster over an existing data directory (to test restarts).
    pub fn start_in(dir: &Path, tweak: impl FnOnce(&mut Config)) -> TestCluster {
        let mut cfg = Config::load(None).expect("default config");
        cfg.cluster.data_dir = dir.to_path_buf();
        cfg.cluster.manifests_dir = None;
        cfg.gateway.listen = "127.0.0.1:0".into();
        // Tests that want nodes (kubelets) say so; the rest run the control plane alone.
        cfg.nodes = Vec::new();
        // Plain HTTP unless a test asks for the secure cluster (`start_secure`).
        cfg.gateway.insecure_http = true;
        // Clusters running side by side share the machine's kernel: only the tests of the
        // ClusterIP datapath program it, each with a service range of its own.
        cfg.proxy.cluster_ip = "none".into();
        // Their Docker nodes' pod networks must not overlap either.
        cfg.network.cluster_cidr = unique_pod_range();
        // The same tests on etcd: `SKIFF_TEST_DATASTORE=http://127.0.0.1:2379`, each
        // cluster under a prefix of its own.
        if let Ok(endpoints) = std::env::var("SKIFF_TEST_DATASTORE") {
            cfg.store.datastore_endpoint = endpoints;
            cfg.store.datastore_prefix = unique_datastore_prefix();
        }
        tweak(&mut cfg);
        // Node servers of clusters side by side: any free port each.
        for node in &mut cfg.nodes {
            node.server_port = 0;
        }
        Self::launch(cfg)
    }

    fn launch(cfg: Config) -> TestCluster {
        let config = cfg.clone();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            actix_rt::System::new().block_on(async move {
                match system::start(&cfg).await {
                    Ok(sys) => {
                        let sims: Vec<(String, Arc<SimRuntime>)> = sys
                            .nodes
                            .iter()
                            .filter_map(|n| n.sim.clone().map(|s| (n.name.clone(), s)))
                            .collect();
                        let _ = ready_tx.send(Ok((
                            sys.url(),
                            sys.kubeconfig.clone(),
                            sys.store.clone(),
                            sys.credentials.clone(),
                            sims,
                            sys.informers.clone(),
                            sys.dns_addr,
                            sys.faults(),
                        )));
                        let _ = stop_rx.await;
                        sys.shutdown().await;
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(format!("{e:?}")));
                    }
                }
            });
        });
        let (url, kubeconfig, store, credentials, sims, informers, dns_addr, faults) = ready_rx
            .recv_timeout(Duration::from_secs(60))
            .expect("cluster start timed out")
            .expect("cluster failed to start");
        TestCluster {
            url,
            kubeconfig,
            store,
            sims,
            data_dir: config.cluster.data_dir.clone(),
            credentials,
            informers,
            dns_addr,
            faults,
            config,
            stop: Some(stop_tx),
            thread: Some(thread),
            _tmp: None,
        }
    }

    /// The API in-process, as the system's own components use it: the store behind the
    /// gateway's admission, with the cluster's service account token issuer (its key under
    /// `<data_dir>/pki`), so kubelets started by a test can fetch projected tokens.
    pub fn objects(&self) -> skiff_actors::gateway::Objects {
        let issuer = skiff_actors::gateway::serviceaccount::token::TokenIssuer::load_or_create(
            &self.data_dir.join("pki"),
        )
        .expect("the cluster's token issuer");
        skiff_actors::gateway::Objects::new(self.store.clone()).with_token_issuer(Arc::new(issuer))
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    fn creds(&self) -> &Credentials {
        self.credentials
            .as_ref()
            .expect("a secure cluster (TestCluster::start_secure)")
    }

    /// The cluster CA's certificate (PEM) of a secure cluster.
    pub fn ca_pem(&self) -> String {
        self.creds().ca.cert_pem().to_string()
    }

    /// The admin token the kubeconfig carries.
    pub fn admin_token(&self) -> String {
        match &self.creds().admin {
            AdminCredential::Token(t) => t.clone(),
            AdminCredential::Certificate(_) => panic!("this cluster's admin uses a certificate"),
        }
    }

    pub fn join_token(&self) -> String {
        self.creds().join_token.clone()
    }

    /// A client certificate from the cluster CA for `user` in `groups`, valid for an hour.
    pub fn client_cert(&self, user: &str, groups: &[&str]) -> Credential {
        let now = std::time::SystemTime::now();
        self.creds()
            .ca
            .issue_client(
                user,
                groups,
                now - Duration::from_secs(60),
                now + Duration::from_secs(3600),
            )
            .expect("issue client certificate")
    }

    /// A client trusting this cluster's CA and sending the admin token.
    pub fn admin_client(&self) -> reqwest::Client {
        tls_client(&self.ca_pem(), Some(&self.admin_token()), None)
    }

    /// The simulated runtime of the hollow node `name`.
    pub fn sim(&self, name: &str) -> Option<Arc<SimRuntime>> {
        self.sims
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, s)| s.clone())
    }

    /// Stop the cluster and wait until its store is closed.
    pub fn stop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    /// Stop and start again over the same data directory.
    pub fn restart(mut self) -> TestCluster {
        self.stop();
        let mut next = Self::launch(self.config.clone());
        next._tmp = self._tmp.take();
        next
    }
}

/// A node that joined a running cluster (`TestCluster::join_node`): its kubelet and
/// proxy run on their own thread, talking to the cluster over HTTP like `skiff node`;
/// dropping it stops them (the Node object stays, as when a machine goes away).
pub struct JoinedNode {
    pub name: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl JoinedNode {
    pub fn stop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for JoinedNode {
    fn drop(&mut self) {
        self.stop();
    }
}

impl TestCluster {
    /// Start one more node against this (plain HTTP) cluster while it runs.
    pub fn join_node(&self, mut node: skiff::config::NodeConfig) -> JoinedNode {
        node.server_port = 0;
        let url = self.url.clone();
        let name = node.name.clone();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            actix_rt::System::new().block_on(async move {
                let client = match skiff_actors::client::HttpClient::new(url) {
                    Ok(c) => c,
                    Err(e) => {
                        let _ = ready_tx.send(Err(format!("{e:?}")));
                        return;
                    }
                };
                match system::start_node_agent(&node, Arc::new(client), Default::default(), None)
                    .await
                {
                    Ok(agent) => {
                        let _ = ready_tx.send(Ok(()));
                        let _ = stop_rx.await;
                        agent.stop();
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(format!("{e:?}")));
                    }
                }
            });
        });
        ready_rx
            .recv_timeout(Duration::from_secs(60))
            .expect("node start timed out")
            .expect("node failed to start");
        JoinedNode {
            name,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        self.stop();
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

/// A RoleBinding `name` granting the ClusterRole `role` to the user `user` (in whatever
/// namespace it is created).
pub fn user_role_binding(name: &str, role: &str, user: &str) -> Value {
    serde_json::json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}]})
}

/// Run the machine's kubectl against `kubeconfig`: its exit code, stdout and stderr.
pub fn kubectl(kubeconfig: &Path, args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .output()
        .expect("run kubectl");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// An HTTPS client trusting only `ca_pem`, sending `token` as a bearer token and/or
/// presenting `identity` as its client certificate.
pub fn tls_client(
    ca_pem: &str,
    token: Option<&str>,
    identity: Option<&Credential>,
) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).expect("CA PEM"));
    if let Some(t) = token {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            reqwest::header::AUTHORIZATION,
            format!("Bearer {t}").parse().expect("header"),
        );
        b = b.default_headers(headers);
    }
    if let Some(id) = identity {
        let pem = format!("{}{}", id.cert_pem, id.key_pem);
        b = b.identity(reqwest::Identity::from_pem(pem.as_bytes()).expect("identity PEM"));
    }
    b.build().expect("client")
}

/// Send a request and return (status, JSON body).
pub async fn call(req: reqwest::RequestBuilder) -> (u16, Value) {
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("body");
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, body)
}

/// Poll `f` until it returns `Some`, or panic after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// [`eventually`] for a blocking check (a kubectl or docker run): poll `f` until it
/// returns `Some`, or panic after `timeout`.
pub fn eventually_blocking<T>(
    timeout: Duration,
    what: &str,
    mut f: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A minimal valid pod.
pub fn pod(name: &str, labels: Value) -> Value {
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": {"containers": [{"name": "app", "image": "busybox:1.36"}]},
    })
}

/// The `skiff` binary built alongside the tests (target/<profile>/skiff).
pub fn skiff_bin() -> PathBuf {
    if let Ok(p) = std::env::var("SKIFF_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current exe");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binary lives in target/<profile>/deps");
    profile_dir.join("skiff")
}

/// A `skiff up` child process on an ephemeral port, killed when dropped.
pub struct SkiffProcess {
    pub child: std::process::Child,
    pub url: String,
    /// The kubeconfig it wrote.
    pub kubeconfig: PathBuf,
}

impl SkiffProcess {
    /// `skiff up --insecure-http` on `data_dir` with a control plane and no nodes.
    pub fn start(data_dir: &Path) -> SkiffProcess {
        Self::start_with(data_dir, "")
    }

    /// `skiff up --insecure-http` on `data_dir` with extra configuration (TOML, e.g.
    /// `[[nodes]]`).
    pub fn start_with(data_dir: &Path, extra_toml: &str) -> SkiffProcess {
        Self::spawn(data_dir, extra_toml, true)
    }

    /// `skiff up` as a user runs it: HTTPS, tokens, client certificates.
    pub fn start_secure(data_dir: &Path) -> SkiffProcess {
        Self::spawn(data_dir, "", false)
    }

    fn spawn(data_dir: &Path, extra_toml: &str, insecure: bool) -> SkiffProcess {
        use std::io::BufRead;
        let config = data_dir.join("test-skiff.toml");
        // Killed with SIGKILL, the process could not take kernel rules with it: test
        // processes leave ClusterIPs out unless the test's own configuration says so.
        let proxy = if extra_toml.contains("[proxy]") {
            ""
        } else {
            "[proxy]\ncluster_ip = \"none\"\n"
        };
        // Nor its pod network's rules and routes: its Docker nodes keep to the engine's
        // default bridge.
        let network = if extra_toml.contains("[network]") {
            ""
        } else {
            "[network]\ncluster_cidr = \"\"\n"
        };
        std::fs::write(
            &config,
            format!("[gateway]\nlisten = \"127.0.0.1:0\"\n{proxy}{network}{extra_toml}"),
        )
        .expect("write config");
        let mut cmd = std::process::Command::new(skiff_bin());
        cmd.arg("up");
        if insecure {
            cmd.arg("--insecure-http");
        }
        let mut child = cmd
            .arg("--config")
            .arg(&config)
            .arg("--data-dir")
            .arg(data_dir)
            .current_dir(data_dir)
            .env("SKIFF_GATEWAY__LISTEN", "127.0.0.1:0")
            .env("SKIFF_LOG", "warn")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .expect("spawn skiff (is it built? cargo build --workspace)");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read ready line");
        let url = line
            .split_whitespace()
            .find(|w| w.starts_with("http://") || w.starts_with("https://"))
            .unwrap_or_else(|| panic!("no URL in ready line {line:?}"))
            .to_string();
        SkiffProcess {
            child,
            url,
            kubeconfig: data_dir.join("kubeconfig"),
        }
    }

    /// SIGKILL: no shutdown code runs.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for SkiffProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Removes every container the given nodes created, when dropped: tests clean up their
/// containers also when they fail.
pub struct DockerCleanup {
    pub nodes: Vec<String>,
}

impl DockerCleanup {
    pub fn new(nodes: &[String]) -> Self {
        let c = DockerCleanup {
            nodes: nodes.to_vec(),
        };
        c.remove_all();
        c
    }

    pub fn remove_all(&self) {
        for node in &self.nodes {
            let out = std::process::Command::new("docker")
                .args([
                    "ps",
                    "-aq",
                    "--filter",
                    &format!("label=io.skiff.node={node}"),
                ])
                .output();
            let Ok(out) = out else { continue };
            let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .map(str::to_string)
                .collect();
            if !ids.is_empty() {
                let _ = std::process::Command::new("docker")
                    .arg("rm")
                    .arg("-f")
                    .args(&ids)
                    .output();
            }
            // The node's pod network (the kubelet makes it again if the node still runs).
            let _ = std::process::Command::new("docker")
                .args(["network", "rm", &format!("skiff-{node}")])
                .output();
        }
    }
}

impl Drop for DockerCleanup {
    fn drop(&mut self) {
        self.remove_all();
    }
}

/// Whether the local Docker Engine answers (tests that need it say so when it does not).
pub fn docker_available() -> bool {
    std::path::Path::new("/var/run/docker.sock").exists()
        && std::process::Command::new("docker")
            .arg("info")
            .output()
            .is_ok_and(|o| o.status.success())
}

/// Unique node names for one test, so parallel tests never share containers.
pub fn node_names(prefix: &str, n: usize) -> Vec<String> {
    let tag = uuid_like();
    (1..=n).map(|i| format!("{prefix}-{tag}-{i}")).collect()
}

fn uuid_like() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{:x}{:x}", std::process::id(), nanos % 0xffff)
}

/// A kubeconfig for `cred` on the secure cluster `c`, its CA, certificate and key in
/// files beside it in `dir`.
pub fn kubeconfig_for(c: &TestCluster, dir: &Path, cred: &Credential) -> PathBuf {
    let file = |name: &str, text: &str| {
        let p = dir.join(name);
        std::fs::write(&p, text).expect("write");
        p.display().to_string()
    };
    let ca = file("ca.crt", &c.ca_pem());
    let cert = file("user.crt", &cred.cert_pem);
    let key = file("user.key", &cred.key_pem);
    let path = dir.join("kubeconfig");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {}\n    certificate-authority: {ca}\nusers:\n- name: u\n  user:\n    client-certificate: {cert}\n    client-key: {key}\ncontexts:\n- name: c\n  context:\n    cluster: c\n    user: u\n    namespace: default\ncurrent-context: c\n",
            c.url
        ),
    )
    .expect("write kubeconfig");
    path
}

/// Fail the test unless the machine's kubectl runs: a missing prerequisite is a failure,
/// never a silent pass (`scripts/test.sh` and `.ci/run` install what the tests need).
/// The Docker Engine must be there: a missing prerequisite fails the test, it never skips.
pub fn require_docker() {
    assert!(
        docker_available(),
        "the Docker Engine is required for this test"
    );
}

/// Docker and kubectl, for the tests that drive containers as a user would.
pub fn require_docker_and_kubectl() {
    require_docker();
    require_kubectl();
}

/// The machine's kubectl against one kubeconfig.
pub struct Kubectl<'a>(pub &'a Path);

impl Kubectl<'_> {
    /// Exit code and stdout followed by stderr.
    pub fn run(&self, args: &[&str]) -> (i32, String) {
        let (code, out, err) = kubectl(self.0, args);
        (code, format!("{out}{err}"))
    }

    /// Stdout of a kubectl command that must succeed.
    pub fn ok(&self, args: &[&str]) -> String {
        let (code, out, err) = kubectl(self.0, args);
        assert_eq!(code, 0, "kubectl {args:?}: {out}{err}");
        out
    }
}

/// A second local tag of the test image (no registry is reachable), removed when dropped.
pub struct ImageTag(pub &'static str);

impl ImageTag {
    pub fn new(tag: &'static str) -> Self {
        let ok = std::process::Command::new("docker")
            .args(["tag", "skiff/busybox:latest", tag])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "docker tag failed (run `skiff images` first)");
        ImageTag(tag)
    }
}

impl Drop for ImageTag {
    fn drop(&mut self) {
        let _ = std::process::Command::new("docker")
            .args(["rmi", self.0])
            .output();
    }
}

pub fn require_kubectl() {
    let ok = std::process::Command::new("kubectl")
        .args(["version", "--client"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(ok, "kubectl is required for this test and was not found");
}

/// Run a script of the official Python client (`pip install kubernetes`) with the
/// kubeconfig as its first argument and `args` after it; the script must succeed, and
/// its trimmed stdout is returned. A missing client fails the test (scripts/test.sh
/// installs it). Blocking: async tests call it from `spawn_blocking`.
pub fn python_client(script: &str, kubeconfig: &Path, args: &[&str]) -> String {
    let has_client = std::process::Command::new("python3")
        .args(["-c", "import kubernetes"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        has_client,
        "the official Python client is required (scripts/test.sh installs it: pip install kubernetes)"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("client.py");
    std::fs::write(&path, script).expect("write the script");
    let out = std::process::Command::new("python3")
        .arg(&path)
        .arg(kubeconfig)
        .args(args)
        .output()
        .expect("run python3");
    let stdout = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        out.status.success(),
        "python client {args:?} failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// A `kubectl port-forward` running until dropped, and the local ports it chose.
pub struct PortForward {
    child: std::process::Child,
    /// The local ports kubectl chose, in the order of the remote ones.
    pub ports: Vec<u16>,
}

impl PortForward {
    /// `bin port-forward target :p...` against `kubeconfig`, once it says where it listens.
    pub fn start(bin: &str, kubeconfig: &Path, target: &str, remote: &[u16]) -> PortForward {
        let mut args = vec![
            "--kubeconfig".to_string(),
            kubeconfig.display().to_string(),
            "port-forward".into(),
            target.into(),
        ];
        args.extend(remote.iter().map(|p| format!(":{p}")));
        let mut child = std::process::Command::new(bin)
            .args(&args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("kubectl port-forward");
        let mut stdout = child.stdout.take().expect("stdout");
        let mut seen = String::new();
        let mut ports = Vec::new();
        let mut buf = [0u8; 256];
        // "Forwarding from 127.0.0.1:41234 -> 8080", once per port (and once for [::1]).
        while ports.len() < remote.len() {
            let n = stdout.read(&mut buf).expect("read port-forward output");
            assert!(n > 0, "kubectl port-forward ended: {seen}");
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
            ports = seen
                .lines()
                .filter(|l| l.starts_with("Forwarding from 127.0.0.1:"))
                .filter_map(|l| {
                    l.trim_start_matches("Forwarding from 127.0.0.1:")
                        .split_whitespace()
                        .next()?
                        .parse()
                        .ok()
                })
                .collect();
        }
        // Keep draining its output so it never blocks on a full pipe.
        std::thread::spawn(move || {
            let mut sink = Vec::new();
            let _ = stdout.read_to_end(&mut sink);
        });
        PortForward { child, ports }
    }
}

impl Drop for PortForward {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The body of `GET path` (HTTP/1.0) from 127.0.0.1:`port`.
pub fn http_get(port: u16, path: &str) -> Vec<u8> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").expect("request");
    let mut out = Vec::new();
    s.read_to_end(&mut out).expect("response");
    let at = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    out.split_off(at + 4)
}
