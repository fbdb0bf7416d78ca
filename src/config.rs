//! The cluster configuration: `config/skiff.toml` (or a file given with `--config`),
//! overridable key by key from `SKIFF_*` environment variables.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// The default configuration, compiled in so the binary runs from any directory.
pub const DEFAULT_TOML: &str = include_str!("../config/skiff.toml");

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot load configuration")]
    Load(#[source] config::ConfigError),
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Config {
    pub cluster: ClusterConfig,
    pub gateway: GatewayConfig,
    pub store: StoreConfig,
    pub controllers: ControllersConfig,
    pub scheduler: SchedulerSection,
    pub auth: AuthConfig,
    pub storage: StorageSection,
    pub proxy: ProxySection,
    pub dns: DnsSection,
    pub network: NetworkSection,
    /// The nodes this process runs (a kubelet each).
    pub nodes: Vec<NodeConfig>,
    /// The folder the configuration file is in; relative paths in it are resolved from here.
    #[serde(skip)]
    pub base_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct ClusterConfig {
    pub name: String,
    pub data_dir: PathBuf,
    pub manifests_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct GatewayConfig {
    pub listen: String,
    pub max_body_bytes: usize,
    pub watch_timeout_seconds: u64,
    /// How often a watch that allows bookmarks gets one (kube-apiserver: 60 s).
    pub watch_bookmark_seconds: u64,
    pub workers: usize,
    /// Cluster IPs of Services are allocated from this range.
    pub service_cidr: String,
    /// Node ports of NodePort Services are allocated from this range (`low-high`).
    pub node_port_range: String,
    /// Read-only requests in flight at once; beyond it 429 (0: no cap).
    pub max_requests_inflight: usize,
    /// Mutating requests in flight at once; beyond it 429 (0: no cap).
    pub max_mutating_requests_inflight: usize,
    /// Requests one client (user, or address when unauthenticated) may have in flight.
    pub max_inflight_per_client: usize,
    /// Sustained requests per second per client (0: no rate limit) and the burst above it.
    pub client_qps: f64,
    pub client_burst: u32,
    /// Watches one client may hold open at once (0: no cap).
    pub max_watches_per_client: usize,
    /// A request body must arrive within this many seconds (408 otherwise).
    pub request_body_timeout_seconds: u64,
    /// A request head must arrive within this many milliseconds (408 and close otherwise).
    pub client_request_timeout_ms: u64,
    /// Time given a client to acknowledge a connection close.
    pub client_disconnect_timeout_ms: u64,
    /// Idle keep-alive connections are closed after this many seconds.
    pub keep_alive_seconds: u64,
    /// Serve plain HTTP with no authentication, every caller an administrator (tests of
    /// the old path only). Otherwise the API is HTTPS only.
    pub insecure_http: bool,
    /// Names and IP addresses the serving certificate is valid for besides `localhost`,
    /// the loopback addresses and the listen address.
    pub tls_sans: Vec<String>,
    /// The address the API server is reached at by pods: the `kubernetes` Service's
    /// Endpoints (kube-apiserver's `--advertise-address`). Unset: the listen address, or
    /// when that is a wildcard, the host's address on its default route.
    pub advertise_address: Option<String>,
    /// How often every node's server is scraped for `metrics.k8s.io` and the autoscaler
    /// (metrics-server's `--metric-resolution`).
    pub metrics_resolution_seconds: u64,
    /// How long a pod tolerates a not-ready and an unreachable node before it is evicted,
    /// unless it says otherwise (kube-apiserver's `--default-not-ready-toleration-seconds`
    /// and `--default-unreachable-toleration-seconds`).
    pub default_not_ready_toleration_seconds: i64,
    pub default_unreachable_toleration_seconds: i64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct AuthConfig {
    /// Bearer tokens in kube-apiserver's `--token-auth-file` format
    /// (`token,user,uid,"group1,group2"`); created with an admin token at first start.
    /// Unset: `<data_dir>/pki/tokens.csv`.
    pub token_file: Option<PathBuf>,
    /// How long client certificates signed for nodes are valid.
    pub node_cert_validity_days: u64,
    /// How long the join token made at first start is good for (kubeadm: 24 h; 0: for
    /// ever). `skiff token create` makes more.
    pub join_token_ttl_hours: u64,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            token_file: None,
            node_cert_validity_days: 365,
            join_token_ttl_hours: 24,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct StoreConfig {
    /// `rocksdb` (durable, in `<data_dir>/store`) or `memory` (gone with the process:
    /// tests and throwaway clusters). Unused when `datastore_endpoint` is set.
    pub backend: String,
    /// etcd members (`http://h1:2379,http://h2:2379`; `https://` with the files below),
    /// as k3s' `--datastore-endpoint`: the objects live there, and several servers on
    /// the same etcd (and prefix) serve one cluster.
    pub datastore_endpoint: String,
    /// The keys' prefix in etcd, so that clusters can share one.
    pub datastore_prefix: String,
    pub datastore_cafile: Option<PathBuf>,
    pub datastore_certfile: Option<PathBuf>,
    pub datastore_keyfile: Option<PathBuf>,
    pub history: usize,
    /// Events older than this leave the watch history (0: bounded by count only).
    pub history_age_seconds: u64,
    pub watch_buffer: usize,
    /// Events not written for this long are deleted (kube-apiserver's `--event-ttl`);
    /// 0 keeps them for ever.
    pub event_ttl_seconds: u64,
    /// Secrets are encrypted at rest as this kube-apiserver `EncryptionConfiguration`
    /// says (the first key writes, every key reads). Unset:
    /// `<data_dir>/pki/encryption-config.yaml`, created with one AES-256-GCM key at
    /// first start.
    pub encryption_config: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct ControllersConfig {
    /// Controllers to run, by name (`replication`, `endpoints`, `nodelifecycle`,
    /// `taint-eviction-controller`, `podgc`, `tokencleaner`,
    /// `nodeipam`, `namespace`, `resourcequota`, `garbagecollector`,
    /// `horizontalpodautoscaling`, `csrsigning`, ...), or `*` for all of them.
    pub enabled: Vec<String>,
    /// A node that has not heartbeated for this long is marked Unknown and tainted
    /// (`--node-monitor-grace-period`).
    pub node_grace_period_seconds: u64,
    /// How often a node that is not ready is looked at again (`--node-monitor-period`).
    pub node_monitor_period_seconds: u64,
    /// Nodes per second, per zone, given the NoExecute taint that evicts their pods once
    /// their tolerations run out (`--node-eviction-rate`); in a zone where at least
    /// `unhealthy_zone_threshold` of more than two nodes are down, the secondary rate if
    /// it has more than `large_cluster_size_threshold` nodes, else none. When every node
    /// is down nothing is evicted.
    pub node_eviction_rate: f64,
    pub secondary_node_eviction_rate: f64,
    pub unhealthy_zone_threshold: f64,
    pub large_cluster_size_threshold: usize,
    /// Terminated pods kept before the oldest are deleted (0: all are kept).
    pub terminated_pod_gc_threshold: usize,
    /// How often the horizontal pod autoscaler evaluates every HPA.
    pub hpa_sync_period_seconds: u64,
    /// A scale-down takes the highest recommendation of this window, so it does not flap.
    pub hpa_downscale_stabilization_seconds: u64,
    /// The Job controller's first back-off after a failed pod (doubling per failure in a
    /// row), in milliseconds (Kubernetes: 10 s), and the longest one, in seconds (6 min).
    pub job_backoff_base_ms: u64,
    pub job_backoff_max_seconds: u64,
    /// Run the scheduler and the controllers only while this server holds their Leases
    /// (`kube-system/kube-scheduler`, `kube-system/kube-controller-manager`), as
    /// `--leader-elect` does. Unset: on when the objects are in etcd (where several
    /// servers may share them), off on the embedded store.
    pub leader_elect: Option<bool>,
    pub leader_elect_lease_duration_seconds: u64,
    pub leader_elect_renew_deadline_seconds: u64,
    pub leader_elect_retry_period_seconds: u64,
    /// The clock the job, cronjob and ttl-after-finished controllers read: the system's,
    /// or a fake one an in-process test moves (never read from a file).
    #[serde(skip)]
    pub clock: skiff_actors::runtime::SharedClock,
}

impl Default for ControllersConfig {
    fn default() -> Self {
        ControllersConfig {
            enabled: vec!["*".into()],
            node_grace_period_seconds: 40,
            node_monitor_period_seconds: 5,
            node_eviction_rate: 0.1,
            secondary_node_eviction_rate: 0.01,
            unhealthy_zone_threshold: 0.55,
            large_cluster_size_threshold: 50,
            terminated_pod_gc_threshold: 12_500,
            hpa_sync_period_seconds: 15,
            hpa_downscale_stabilization_seconds: 300,
            job_backoff_base_ms: 10_000,
            job_backoff_max_seconds: 360,
            leader_elect: None,
            leader_elect_lease_duration_seconds: 15,
            leader_elect_renew_deadline_seconds: 10,
            leader_elect_retry_period_seconds: 2,
            clock: Default::default(),
        }
    }
}

/// One node run in this process.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct NodeConfig {
    pub name: String,
    /// `docker` (the local Docker Engine) or `sim` (a hollow node: containers simulated).
    pub runtime: String,
    pub labels: std::collections::BTreeMap<String, String>,
    /// Taints as Kubernetes writes them: `key=value:Effect` or `key:Effect`.
    pub taints: Vec<String>,
    pub cpu: String,
    pub memory: String,
    pub pods: u32,
    pub heartbeat_seconds: u64,
    /// The node's address (InternalIP; the proxy listens for node ports there). Unset:
    /// 127.0.0.<n> for the n-th node, so nodes in one process do not share node ports.
    pub address: Option<String>,
    /// How often the kubelet samples its containers' CPU and memory (`kubectl top`, the
    /// autoscaler).
    pub stats_interval_seconds: u64,
    /// The node's data directory (pod volumes live under `<dir>/pods/<uid>/volumes`).
    /// Unset: `<cluster.data_dir>/nodes/<name>` for nodes in the cluster's process,
    /// `<data dir>/kubelet` for `skiff node`.
    pub data_dir: Option<std::path::PathBuf>,
    /// How often configMap, secret, downwardAPI and projected volumes of running pods are
    /// brought up to date.
    pub volume_sync_seconds: u64,
    /// The port of the node's server (the kubelet's API: logs, exec, port-forward,
    /// stats) on the node's address; 0: any free port (published in the node's status).
    pub server_port: u16,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            name: "node-1".into(),
            runtime: "docker".into(),
            labels: Default::default(),
            taints: Vec::new(),
            cpu: "4".into(),
            memory: "8Gi".into(),
            pods: 110,
            heartbeat_seconds: 10,
            address: None,
            stats_interval_seconds: 5,
            data_dir: None,
            volume_sync_seconds: 10,
            server_port: 10250,
        }
    }
}

/// Service traffic on the nodes this process runs.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct ProxySection {
    /// How ClusterIPs are reached: `nftables` (kernel rules in a table of this cluster's,
    /// on hosts whose nodes run containers) or `none` (not reachable).
    pub cluster_ip: String,
}

impl Default for ProxySection {
    fn default() -> Self {
        ProxySection {
            cluster_ip: "nftables".into(),
        }
    }
}

/// The pod network: each node's block of the cluster's pod range, and how the hosts
/// reach each other's blocks.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct NetworkSection {
    /// The cluster's pod range (kube-controller-manager's `--cluster-cidr`); each node is
    /// given a block of it as its `podCIDR`. Empty: nodes get none and Docker pods stay on
    /// the engine's default bridge.
    pub cluster_cidr: String,
    /// The size of each node's block (`--node-cidr-mask-size`).
    pub node_cidr_mask_size: u8,
    /// How hosts reach each other's blocks: `host-gw` (routes through the nodes'
    /// addresses, which share a link) or `vxlan` (a VXLAN overlay over any IP network).
    pub backend: String,
}

impl Default for NetworkSection {
    fn default() -> Self {
        NetworkSection {
            cluster_cidr: "10.42.0.0/16".into(),
            node_cidr_mask_size: 24,
            backend: "host-gw".into(),
        }
    }
}

impl NetworkSection {
    pub fn backend(&self) -> Result<skiff_actors::podnet::Backend, ConfigError> {
        self.backend
            .parse()
            .map_err(|e| ConfigError::Invalid(format!("[network] {e}")))
    }

    /// The pod range, checked against the service range; `None` when allocation is off.
    pub fn pod_range(
        &self,
        service_cidr: &str,
    ) -> Result<Option<skiff_actors::controllers::node_ipam::PodRange>, ConfigError> {
        if self.cluster_cidr.trim().is_empty() {
            return Ok(None);
        }
        let range = skiff_actors::controllers::node_ipam::PodRange::parse(
            self.cluster_cidr.trim(),
            self.node_cidr_mask_size,
        )
        .and_then(|r| r.check_apart_from(service_cidr).map(|()| r))
        .map_err(|e| ConfigError::Invalid(format!("[network] {e}")))?;
        Ok(Some(range))
    }
}

/// Cluster DNS: the `kube-dns` Service and the server behind it.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct DnsSection {
    pub enabled: bool,
    /// The cluster's domain (the kubelet's `clusterDomain`).
    pub cluster_domain: String,
    /// Where the server listens, UDP and TCP (`ip:port`, port 0 for a free one). Unset:
    /// the host's address on the pods' network (the Docker bridge's gateway when a Docker
    /// node runs here, else 127.0.0.1), on a free port. The kube-dns Endpoints name it.
    pub listen: Option<String>,
    /// Resolvers for names outside the cluster (`ip` or `ip:port`). Empty: the host's
    /// `/etc/resolv.conf`.
    pub upstream: Vec<String>,
}

impl Default for DnsSection {
    fn default() -> Self {
        DnsSection {
            enabled: true,
            cluster_domain: "cluster.local".into(),
            listen: None,
            upstream: Vec::new(),
        }
    }
}

/// Persistent storage: where the built-in local-path provisioner makes its volumes.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct StorageSection {
    /// Unset: `<data_dir>/storage`.
    pub local_path_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct SchedulerSection {
    pub enabled: bool,
}

impl Default for SchedulerSection {
    fn default() -> Self {
        SchedulerSection { enabled: true }
    }
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            name: "skiff".into(),
            data_dir: "skiff-data".into(),
            manifests_dir: None,
        }
    }
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            listen: "127.0.0.1:6443".into(),
            max_body_bytes: 3 * 1024 * 1024,
            watch_timeout_seconds: 1800,
            watch_bookmark_seconds: 60,
            workers: 2,
            service_cidr: "10.96.0.0/16".into(),
            node_port_range: "30000-32767".into(),
            max_requests_inflight: 400,
            max_mutating_requests_inflight: 200,
            max_inflight_per_client: 100,
            client_qps: 0.0,
            client_burst: 0,
            max_watches_per_client: 100,
            request_body_timeout_seconds: 60,
            client_request_timeout_ms: 5000,
            client_disconnect_timeout_ms: 1000,
            keep_alive_seconds: 60,
            insecure_http: false,
            tls_sans: Vec::new(),
            advertise_address: None,
            metrics_resolution_seconds: 15,
            default_not_ready_toleration_seconds: 300,
            default_unreachable_toleration_seconds: 300,
        }
    }
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            backend: "rocksdb".into(),
            datastore_endpoint: String::new(),
            datastore_prefix: "/registry".into(),
            datastore_cafile: None,
            datastore_certfile: None,
            datastore_keyfile: None,
            history: 100_000,
            history_age_seconds: 300,
            watch_buffer: 20_000,
            event_ttl_seconds: 3600,
            encryption_config: None,
        }
    }
}

/// A key of the file that no setting takes (a misspelt `[store] backnd`) is refused by
/// name rather than silently ignored. Only the file: `SKIFF_*` variables that are not
/// settings (`SKIFF_LOG`) are the environment's business.
fn refuse_unknown_keys(file: &Path) -> Result<(), ConfigError> {
    let Ok(text) = std::fs::read_to_string(file) else {
        // Unreadable: the load itself says so.
        return Ok(());
    };
    let Ok(de) = toml::Deserializer::parse(&text) else {
        return Ok(());
    };
    let mut unknown = Vec::new();
    // A value of the wrong type is the load's to report, with the config crate's words.
    let _ =
        serde_ignored::deserialize(de, |path| unknown.push(path.to_string())).map(|_: Config| ());
    if unknown.is_empty() {
        return Ok(());
    }
    Err(ConfigError::Invalid(format!(
        "{}: unknown configuration key{} {}",
        file.display(),
        if unknown.len() > 1 { "s" } else { "" },
        unknown.join(", ")
    )))
}

impl Config {
    /// Load `file` (or the compiled-in default) and apply `SKIFF_*` overrides.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        if let Some(f) = file {
            refuse_unknown_keys(f)?;
        }
        let mut builder = config::Config::builder();
        builder = match file {
            Some(f) => builder.add_source(config::File::from(f)),
            None => builder.add_source(config::File::from_str(
                DEFAULT_TOML,
                config::FileFormat::Toml,
            )),
        };
        let built = builder
            .add_source(
                config::Environment::with_prefix("SKIFF")
                    .prefix_separator("_")
                    .separator("__")
                    .try_parsing(true)
                    // Lists from the environment are comma-separated.
                    .list_separator(",")
                    .with_list_parse_key("gateway.tls_sans")
                    .with_list_parse_key("controllers.enabled"),
            )
            .build()
            .map_err(ConfigError::Load)?;
        let mut cfg: Config = built.try_deserialize().map_err(ConfigError::Load)?;
        cfg.base_dir = file.and_then(Path::parent).map(Path::to_path_buf);
        Ok(cfg)
    }

    /// The gateway's request limits.
    pub fn limits(&self) -> skiff_actors::gateway::limits::LimitsConfig {
        let g = &self.gateway;
        skiff_actors::gateway::limits::LimitsConfig {
            max_requests_inflight: g.max_requests_inflight,
            max_mutating_requests_inflight: g.max_mutating_requests_inflight,
            max_inflight_per_client: g.max_inflight_per_client,
            client_qps: g.client_qps,
            client_burst: g.client_burst,
            max_watches_per_client: g.max_watches_per_client,
            request_body_timeout: Duration::from_secs(g.request_body_timeout_seconds.max(1)),
            client_request_timeout: Duration::from_millis(g.client_request_timeout_ms),
            client_disconnect_timeout: Duration::from_millis(g.client_disconnect_timeout_ms),
            keep_alive: Duration::from_secs(g.keep_alive_seconds),
        }
    }

    pub fn watch_timeout(&self) -> Duration {
        Duration::from_secs(self.gateway.watch_timeout_seconds.max(1))
    }

    /// The token file: as configured, or `<data_dir>/pki/tokens.csv`.
    /// The address pods reach the API server at (`[gateway] advertise_address`): as
    /// configured, else the listen address, else (listening on a wildcard) the host's
    /// address on its default route, else loopback.
    pub fn advertise_address(&self) -> std::net::IpAddr {
        use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
        if let Some(ip) = self
            .gateway
            .advertise_address
            .as_deref()
            .and_then(|a| a.parse::<IpAddr>().ok())
        {
            return ip;
        }
        match self.gateway.listen.parse::<SocketAddr>() {
            Ok(a) if !a.ip().is_unspecified() => a.ip(),
            _ => UdpSocket::bind("0.0.0.0:0")
                // Connecting a UDP socket sends nothing; it only picks the route's source.
                .and_then(|s| s.connect("192.0.2.1:9").map(|_| s))
                .and_then(|s| s.local_addr())
                .map(|a| a.ip())
                .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        }
    }

    pub fn token_file(&self) -> PathBuf {
        match &self.auth.token_file {
            Some(f) => match &self.base_dir {
                Some(base) if f.is_relative() => base.join(f),
                _ => f.clone(),
            },
            None => self
                .cluster
                .data_dir
                .join("pki")
                .join(skiff_actors::pki::TOKEN_FILE),
        }
    }

    /// The encryption configuration: as configured, or
    /// `<data_dir>/pki/encryption-config.yaml`.
    pub fn encryption_config(&self) -> PathBuf {
        match &self.store.encryption_config {
            Some(f) => match &self.base_dir {
                Some(base) if f.is_relative() => base.join(f),
                _ => f.clone(),
            },
            None => self
                .cluster
                .data_dir
                .join("pki")
                .join(skiff_actors::store::encryption::CONFIG_FILE),
        }
    }

    /// The etcd datastore, when `[store] datastore_endpoint` names one.
    pub fn datastore(&self) -> Result<Option<skiff_actors::store::etcd::EtcdConfig>, ConfigError> {
        let endpoints: Vec<String> = self
            .store
            .datastore_endpoint
            .split(',')
            .map(|e| e.trim().to_string())
            .filter(|e| !e.is_empty())
            .collect();
        if endpoints.is_empty() {
            return Ok(None);
        }
        for e in &endpoints {
            if !(e.starts_with("http://") || e.starts_with("https://")) {
                return Err(ConfigError::Invalid(format!(
                    "datastore endpoint {e:?} is not an http:// or https:// URL"
                )));
            }
        }
        let resolve = |f: &Option<PathBuf>| {
            f.as_ref().map(|f| match &self.base_dir {
                Some(base) if f.is_relative() => base.join(f),
                _ => f.clone(),
            })
        };
        let mut etcd = skiff_actors::store::etcd::EtcdConfig::new(endpoints);
        etcd.prefix = self.store.datastore_prefix.clone();
        etcd.ca_file = resolve(&self.store.datastore_cafile);
        etcd.cert_file = resolve(&self.store.datastore_certfile);
        etcd.key_file = resolve(&self.store.datastore_keyfile);
        Ok(Some(etcd))
    }

    /// The local-path provisioner's directory: as configured (relative to the
    /// configuration file's folder), or `<data_dir>/storage`. Absolute, since it ends up
    /// in volumes' `hostPath`.
    pub fn local_path_dir(&self) -> PathBuf {
        let dir = match &self.storage.local_path_dir {
            Some(d) => match &self.base_dir {
                Some(base) if d.is_relative() => base.join(d),
                _ => d.clone(),
            },
            None => self.cluster.data_dir.join("storage"),
        };
        std::path::absolute(&dir).unwrap_or(dir)
    }

    /// The manifests folder, resolved against the configuration file's folder.
    pub fn manifests_dir(&self) -> Option<PathBuf> {
        let dir = self.cluster.manifests_dir.as_ref()?;
        Some(match &self.base_dir {
            Some(base) if dir.is_relative() => base.join(dir),
            _ => dir.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_no_setting_takes_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("skiff.toml");
        std::fs::write(
            &file,
            "[store]\nbacknd = \"memory\"\n[gateway]\nlisten = \"127.0.0.1:0\"\n[[nodes]]\nname = \"n\"\ncpus = \"4\"\n",
        )
        .unwrap();
        let err = Config::load(Some(&file)).unwrap_err().to_string();
        assert!(err.contains("unknown configuration keys"), "{err}");
        assert!(
            err.contains("store.backnd") && err.contains("nodes.0.cpus"),
            "{err}"
        );
        // The shipped configuration has none.
        let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/skiff.toml");
        Config::load(Some(&shipped)).expect("config/skiff.toml loads");
    }

    #[test]
    fn environment_overrides_a_nested_key() {
        // The variable name is unique to this test, so parallel tests do not race on it.
        std::env::set_var("SKIFF_STORE__WATCH_BUFFER", "77");
        let cfg = Config::load(None).expect("config");
        std::env::remove_var("SKIFF_STORE__WATCH_BUFFER");
        assert_eq!(cfg.store.watch_buffer, 77);
        assert_eq!(cfg.gateway.max_body_bytes, 3 * 1024 * 1024);
    }

    #[test]
    fn limits_come_from_the_gateway_section_and_the_environment() {
        std::env::set_var("SKIFF_GATEWAY__MAX_WATCHES_PER_CLIENT", "7");
        std::env::set_var("SKIFF_GATEWAY__CLIENT_QPS", "2.5");
        let cfg = Config::load(None).expect("config");
        std::env::remove_var("SKIFF_GATEWAY__MAX_WATCHES_PER_CLIENT");
        std::env::remove_var("SKIFF_GATEWAY__CLIENT_QPS");
        let limits = cfg.limits();
        assert_eq!(limits.max_watches_per_client, 7);
        assert_eq!(limits.client_qps, 2.5);
        assert_eq!(limits.max_requests_inflight, 400);
        assert_eq!(limits.max_mutating_requests_inflight, 200);
    }

    #[test]
    fn environment_sets_a_list_comma_separated() {
        std::env::set_var("SKIFF_GATEWAY__TLS_SANS", "10.0.0.5,skiff.example");
        let cfg = Config::load(None).expect("config");
        std::env::remove_var("SKIFF_GATEWAY__TLS_SANS");
        assert_eq!(cfg.gateway.tls_sans, vec!["10.0.0.5", "skiff.example"]);
    }

    #[test]
    fn manifests_dir_is_relative_to_the_config_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "[cluster]\nmanifests_dir = \"m\"\n").expect("write");
        let cfg = Config::load(Some(&file)).expect("config");
        assert_eq!(cfg.manifests_dir(), Some(dir.path().join("m")));
    }
}
