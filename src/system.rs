//! Building the actor tree for one cluster: the store on its own arbiter, the gateway in
//! front of it, then bootstrap (system namespaces, manifests, kubeconfig), then the
//! controllers, the scheduler and the in-process nodes, all reading one set of shared
//! informers.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use actix::prelude::*;
use serde_json::{json, Value};
use std::time::Duration;

use skiff_actors::api::{meta, resources, ApiError};
use skiff_actors::client::{ApiClient, LocalClient, LocalReviewers};
use skiff_actors::controllers::autoscaler::AutoscalerConfig;
use skiff_actors::controllers::job::JobConfig;
use skiff_actors::controllers::local_path::LocalPathConfig;
use skiff_actors::controllers::manager::{
    ControllerManager, ControllerManagerConfig, CsrSigningConfig, ServiceAccountsConfig,
};
use skiff_actors::controllers::node_lifecycle::NodeLifecycleConfig;
use skiff_actors::controllers::pod_gc::PodGcConfig;
use skiff_actors::controllers::system_service::SystemService;
use skiff_actors::dns::{DnsServer, Sockets, Upstream, ZoneHandle, ZoneReconciler};
use skiff_actors::gateway::allocation::ServiceRanges;
use skiff_actors::gateway::auth::bootstrap_token::{BootstrapTokenAuthenticator, TokenSpec};
use skiff_actors::gateway::auth::serviceaccount::ServiceAccountAuthenticator;
use skiff_actors::gateway::node_proxy::NodeDialer;
use skiff_actors::gateway::objects::{PatchType, WriteOptions};
use skiff_actors::gateway::routing::Target;
use skiff_actors::gateway::serviceaccount::token::{TokenError, TokenIssuer};
use skiff_actors::gateway::tolerations::DefaultTolerations;
use skiff_actors::gateway::{self, GatewayActor, GatewayConfig, Objects};
use skiff_actors::kubelet::dns::DnsSettings;
use skiff_actors::kubelet::kubelet::{Kubelet, KubeletConfig};
use skiff_actors::kubelet::runtime::docker::DockerRuntime;
use skiff_actors::kubelet::runtime::sim::{SimConfig, SimRuntime};
use skiff_actors::kubelet::runtime::Runtime;
use skiff_actors::kubelet::server::{
    self as node_server, NodeServer, NodeServerConfig, ServerSecurity,
};
use skiff_actors::metrics::Metrics;
use skiff_actors::metrics_scraper::Scraper;
use skiff_actors::podnet::{host::PodNetHost, Backend, PodNetAgent};
use skiff_actors::proxy::kernel::{KernelProxy, KernelRules};
use skiff_actors::proxy::ProxyReconciler;
use skiff_actors::resource_metrics::{MetricsRegistry, MetricsSink, MetricsSource};
use skiff_actors::runtime::leader;
use skiff_actors::runtime::{Controller, InformerFactory, InformerSpec};
use skiff_actors::scheduler::{SchedulerActor, SchedulerConfig};
use skiff_actors::store::{self, StoreConfig, StoreHandle};

use crate::config::{Config, NodeConfig};
use crate::security::{self, AdminCredential, Security};

#[derive(Debug, thiserror::Error)]
pub enum SystemError {
    #[error("cannot create data directory {path}")]
    DataDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("metrics setup failed")]
    Metrics(#[from] skiff_actors::metrics::MetricsError),
    #[error("cannot open the store")]
    Store(#[from] skiff_actors::store::StoreError),
    #[error("cannot start the gateway")]
    Gateway(#[from] gateway::GatewayError),
    #[error("cannot set up TLS and authentication")]
    Security(#[from] security::SecurityError),
    #[error("cannot set up encryption of secrets at rest")]
    Encryption(#[from] skiff_actors::store::encryption::EncryptionError),
    #[error("bootstrap failed: {0}")]
    Bootstrap(String),
    #[error("manifest {file}: {detail}")]
    Manifest { file: PathBuf, detail: String },
    #[error("node {node}: {detail}")]
    Node { node: String, detail: String },
    #[error("cannot write the kubeconfig")]
    Kubeconfig(#[source] skiff_actors::pki::PkiError),
    #[error("cannot load the service account signing key")]
    ServiceAccountKey(#[from] TokenError),
    #[error("cannot load the cluster CA")]
    Ca(#[source] skiff_actors::pki::PkiError),
}

/// A secure cluster's credentials, for those who start one in-process (tests, `skiff
/// server`'s own use).
#[derive(Clone)]
pub struct Credentials {
    /// The cluster CA: signs serving and client certificates.
    pub ca: Arc<skiff_actors::pki::ClusterCa>,
    pub admin: AdminCredential,
    pub join_token: String,
    /// The join token was made at this start (so it is printed once).
    pub join_token_new: bool,
    /// `<data_dir>/pki`.
    pub pki_dir: PathBuf,
}

/// One node run in this process: its kubelet and its proxy.
pub struct NodeHandle {
    pub name: String,
    pub kubelet: Addr<Kubelet>,
    pub proxy: Addr<Controller<ProxyReconciler>>,
    /// The node's server (the API server's way to its logs, exec and port-forward).
    pub server: Addr<NodeServer>,
    /// The port it listens on.
    pub server_port: u16,
    /// The simulated runtime of a hollow node, so tests can set its containers' usage.
    pub sim: Option<Arc<SimRuntime>>,
}

/// A running cluster.
pub struct System {
    pub addr: SocketAddr,
    pub store: StoreHandle,
    pub data_dir: PathBuf,
    pub kubeconfig: PathBuf,
    /// `None` on the insecure (plain HTTP) path.
    pub credentials: Option<Credentials>,
    gateway: Addr<GatewayActor>,
    store_arbiter: Arbiter,
    control_arbiter: Arbiter,
    nodes_arbiter: Arbiter,
    _controllers: Addr<ControllerManager>,
    /// The kubelet and proxy of every node this process runs.
    pub nodes: Vec<NodeHandle>,
    pub scheduler: Option<Addr<SchedulerActor>>,
    /// The ClusterIP rules of this host, when its nodes run containers.
    pub kernel_proxy: Option<Addr<Controller<KernelProxy>>>,
    kernel_rules: Option<Arc<KernelRules>>,
    /// The pod network's rules and routes on this host, when its nodes run containers on
    /// pod networks of their own.
    pub pod_network: Option<PodNetworkHandle>,
    /// The cluster DNS server and the reconciler keeping its zone, when `[dns] enabled`.
    pub dns: Option<(Addr<DnsServer>, Addr<Controller<ZoneReconciler>>)>,
    /// Where the DNS server listens (UDP and TCP).
    pub dns_addr: Option<SocketAddr>,
    /// The informers every component of this process shares (one per resource).
    pub informers: InformerFactory,
}

/// Fault injection for tests: one entry per supervised actor of the process, each making
/// that actor panic in a handler. Named as `skiff_actor_restarts_total` counts them, with
/// `/<node>` after the actors of a node.
#[derive(Clone, Default)]
pub struct Faults(Vec<(String, Arc<dyn Fn() + Send + Sync>)>);

impl Faults {
    fn add<A, M>(&mut self, name: impl Into<String>, addr: &Addr<A>, msg: M)
    where
        A: Actor + Handler<M>,
        A::Context: actix::dev::ToEnvelope<A, M>,
        M: Message + Send + Sync + Copy + 'static,
        M::Result: Send,
    {
        let addr = addr.clone();
        self.0
            .push((name.into(), Arc::new(move || addr.do_send(msg))));
    }

    /// The actors that can be made to panic.
    pub fn names(&self) -> Vec<String> {
        self.0.iter().map(|(n, _)| n.clone()).collect()
    }

    /// Make the actor `name` panic; false when there is none by that name.
    pub fn inject(&self, name: &str) -> bool {
        match self.0.iter().find(|(n, _)| n == name) {
            Some((_, f)) => {
                f();
                true
            }
            None => false,
        }
    }
}

impl System {
    /// The API's URL: `https://` unless the cluster runs with `insecure_http`.
    pub fn url(&self) -> String {
        let scheme = if self.credentials.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", client_addr(self.addr))
    }

    /// Every supervised actor of the process, for fault-injection tests.
    pub fn faults(&self) -> Faults {
        let mut f = Faults::default();
        f.add(
            "StoreActor",
            &self.store.addr,
            skiff_actors::store::InjectPanic,
        );
        f.add(
            "GatewayActor",
            &self.gateway,
            skiff_actors::runtime::InjectPanic,
        );
        f.add(
            "ControllerManager",
            &self._controllers,
            skiff_actors::runtime::InjectPanic,
        );
        if let Some(s) = &self.scheduler {
            f.add("SchedulerActor", s, skiff_actors::scheduler::InjectPanic);
        }
        if let Some(p) = &self.kernel_proxy {
            f.add("kube-proxy-nftables", p, skiff_actors::runtime::InjectPanic);
        }
        if let Some((server, zone)) = &self.dns {
            f.add("DnsServer", server, skiff_actors::runtime::InjectPanic);
            f.add("cluster-dns", zone, skiff_actors::runtime::InjectPanic);
        }
        for n in &self.nodes {
            let k = skiff_actors::kubelet::kubelet::InjectPanic;
            f.add(format!("Kubelet/{}", n.name), &n.kubelet, k);
            let p = skiff_actors::runtime::InjectPanic;
            f.add(format!("kube-proxy/{}", n.name), &n.proxy, p);
            f.add(format!("NodeServer/{}", n.name), &n.server, p);
        }
        f
    }

    /// Stop serving, then stop the store so its RocksDB is closed and can be reopened.
    pub async fn shutdown(self) {
        let _ = self.gateway.send(gateway::Shutdown).await;
        self.nodes_arbiter.stop();
        let _ = self.nodes_arbiter.join();
        // The host's service rules go with the nodes (the actor may outlive its arbiter).
        if let Some(rules) = &self.kernel_rules {
            rules.remove();
        }
        if let Some(net) = &self.pod_network {
            net.host.remove();
        }
        self.control_arbiter.stop();
        let _ = self.control_arbiter.join();
        drop(self.store);
        self.store_arbiter.stop();
        let _ = self.store_arbiter.join();
    }
}

/// The Leases of the controller-manager and the scheduler when this server elects
/// leaders (`[controllers] leader_elect`, by default when the objects are in etcd).
fn elections(cfg: &Config) -> Option<(leader::LeaseConfig, leader::LeaseConfig)> {
    let on = cfg
        .controllers
        .leader_elect
        .unwrap_or(!cfg.store.datastore_endpoint.trim().is_empty());
    if !on {
        return None;
    }
    // Stable across restarts of this server (it takes its own Lease back at once),
    // distinct between servers: the host and the data directory.
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "skiff".into());
    let dir =
        std::path::absolute(&cfg.cluster.data_dir).unwrap_or_else(|_| cfg.cluster.data_dir.clone());
    let id = {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        dir.hash(&mut h);
        format!("{host}_{:08x}", h.finish() as u32)
    };
    let c = &cfg.controllers;
    let lease = |name: &str| leader::LeaseConfig {
        lease_duration: Duration::from_secs(c.leader_elect_lease_duration_seconds.max(1)),
        renew_deadline: Duration::from_secs(c.leader_elect_renew_deadline_seconds.max(1)),
        retry_period: Duration::from_secs(c.leader_elect_retry_period_seconds.max(1)),
        ..leader::LeaseConfig::new(name, &id)
    };
    Some((lease("kube-controller-manager"), lease("kube-scheduler")))
}

/// Start a cluster from `cfg`; must be called inside a running actix system.
pub async fn start(cfg: &Config) -> Result<System, SystemError> {
    let data_dir = cfg.cluster.data_dir.clone();
    std::fs::create_dir_all(&data_dir).map_err(|source| SystemError::DataDir {
        path: data_dir.clone(),
        source,
    })?;
    let metrics = Arc::new(Metrics::new()?);
    let store_arbiter = Arbiter::new();
    let encryption = match skiff_actors::store::encryption::Transformer::load_or_create(
        &cfg.encryption_config(),
    ) {
        Ok(t) => Arc::new(t),
        Err(e) => {
            store_arbiter.stop();
            let _ = store_arbiter.join();
            return Err(e.into());
        }
    };
    let backend: store::Backend = cfg
        .store
        .backend
        .parse()
        .map_err(|e: String| SystemError::Bootstrap(e))?;
    let datastore = cfg
        .datastore()
        .map_err(|e| SystemError::Bootstrap(e.to_string()))?;
    // The cluster an etcd prefix belongs to is its CA's: another cluster's is refused.
    let cluster_id = match &datastore {
        Some(_) => Some(
            skiff_actors::pki::ClusterCa::load_or_create(&data_dir.join("pki"))
                .and_then(|ca| ca.cert_hash())
                .map_err(SystemError::Ca)?,
        ),
        None => None,
    };
    let store_cfg = StoreConfig {
        datastore,
        cluster_id,
        path: data_dir.join("store"),
        backend,
        encryption: Some(encryption),
        history: cfg.store.history,
        history_age: (cfg.store.history_age_seconds > 0)
            .then(|| std::time::Duration::from_secs(cfg.store.history_age_seconds)),
        watch_buffer: cfg.store.watch_buffer,
        event_ttl: (cfg.store.event_ttl_seconds > 0)
            .then(|| std::time::Duration::from_secs(cfg.store.event_ttl_seconds)),
    };
    let store = match store::open(store_cfg, metrics.clone(), &store_arbiter.handle()).await {
        Ok(s) => s,
        Err(e) => {
            store_arbiter.stop();
            let _ = store_arbiter.join();
            return Err(e.into());
        }
    };
    let ranges = ServiceRanges::parse(&cfg.gateway.service_cidr, &cfg.gateway.node_port_range)
        .map_err(|e| SystemError::Bootstrap(e.to_string()))?;
    let kubernetes_ip = ranges.first_address();
    let dns_ip = ranges.dns_address();
    let pki_dir = data_dir.join("pki");
    let issuer = Arc::new(TokenIssuer::load_or_create(&pki_dir)?);
    let objects = Objects::new(store.clone())
        .with_service_ranges(ranges)
        .with_token_issuer(issuer.clone())
        .with_default_tolerations(DefaultTolerations {
            not_ready_seconds: cfg.gateway.default_not_ready_toleration_seconds,
            unreachable_seconds: cfg.gateway.default_unreachable_toleration_seconds,
        });
    bootstrap(&objects).await?;
    if let Some(dir) = cfg.manifests_dir() {
        apply_manifests(&objects, &dir).await?;
    }
    let gw_cfg = GatewayConfig {
        listen: cfg.gateway.listen.clone(),
        max_body_bytes: cfg.gateway.max_body_bytes,
        watch_timeout: cfg.watch_timeout(),
        bookmark_interval: std::time::Duration::from_secs(
            cfg.gateway.watch_bookmark_seconds.max(1),
        ),
        workers: cfg.gateway.workers,
        limits: cfg.limits(),
    };
    let security = if cfg.gateway.insecure_http {
        tracing::warn!("serving plain HTTP with no authentication (insecure_http)");
        None
    } else {
        let sa = ServiceAccountAuthenticator::new(issuer.clone(), store.clone());
        let bootstrap = BootstrapTokenAuthenticator::new(store.clone());
        Some(security::prepare(cfg, Some(sa), Some(bootstrap))?)
    };
    let (gw_security, credentials) = match security {
        Some(Security {
            ca,
            admin,
            join_token,
            join_token_new,
            pki_dir,
            gateway,
        }) => {
            if join_token_new {
                create_join_token(&objects, &join_token, cfg.auth.join_token_ttl_hours).await?;
                security::keep_join_token(&pki_dir, &join_token)?;
            }
            (
                Some(gateway),
                Some(Credentials {
                    ca,
                    admin,
                    join_token,
                    join_token_new,
                    pki_dir,
                }),
            )
        }
        None => (None, None),
    };
    // The API server reaches node servers as `kube-apiserver-kubelet-client`, an
    // administrator (as kubeadm's certificate of that name).
    let dialer = match &credentials {
        Some(c) => {
            let now = std::time::SystemTime::now();
            let client =
                c.ca.issue_client(
                    "kube-apiserver-kubelet-client",
                    &["system:masters"],
                    now - Duration::from_secs(300),
                    now + Duration::from_secs(365 * 24 * 3600),
                )
                .map_err(SystemError::Ca)?;
            NodeDialer::tls(c.ca.cert_pem(), &client)
                .map_err(|e| SystemError::Bootstrap(e.to_string()))?
        }
        None => NodeDialer::plain(),
    };
    // Kubelets in this process report usage here, for their node servers' summaries.
    let usage = MetricsRegistry::default();
    // What the scraper read from every node's server: the gateway (metrics.k8s.io) and the
    // autoscaler read this.
    let scraped = MetricsRegistry::default();
    let authorization = gateway::auth::Authorization::node_and_rbac(store.clone());
    // Node servers in this process ask the gateway's own chains for their reviews.
    let reviewers = LocalReviewers {
        authorization: authorization.clone(),
        authentication: gw_security.as_ref().map(|s| s.authenticator.clone()),
    };
    let gateway = gateway::start(
        &gw_cfg,
        objects.clone(),
        dialer.clone(),
        Arc::new(scraped.clone()),
        metrics,
        authorization,
        gw_security,
    )?;
    let addr = gateway
        .send(GetAddr)
        .await
        .map_err(|e| SystemError::Bootstrap(e.to_string()))?;
    let advertise = cfg.advertise_address();
    let kubernetes_service = SystemService::kubernetes(
        kubernetes_ip.to_string(),
        advertise.to_string(),
        addr.port(),
    );
    issuer.set_jwks_uri(format!(
        "https://{}{}",
        SocketAddr::new(advertise, addr.port()),
        skiff_actors::gateway::serviceaccount::token::JWKS_PATH
    ));
    // Before any client can ask for a Service, so its cluster IP is the first one.
    ensure_system_service(&objects, &kubernetes_service).await?;
    // Then the DNS's, at the tenth address (where every kubelet expects it).
    let dns = bind_dns(cfg, dns_ip).await?;
    if let Some((_, service)) = &dns {
        ensure_system_service(&objects, service).await?;
    }
    // The CA that signs the serving certificate; an insecure cluster has one too, so
    // that pods' `kube-root-ca.crt` exists wherever they run.
    let root_ca_pem = match &credentials {
        Some(c) => c.ca.cert_pem().to_string(),
        None => skiff_actors::pki::ClusterCa::load_or_create(&pki_dir)
            .map_err(SystemError::Ca)?
            .cert_pem()
            .to_string(),
    };
    // Controllers and the scheduler share an arbiter of their own, away from the HTTP
    // workers and the store, and reach the store only through the API client.
    let control_arbiter = Arbiter::new();
    let client: Arc<dyn ApiClient> = Arc::new(LocalClient::new(objects.clone()));
    let (cm_leading, scheduler_leading) = match elections(cfg) {
        Some((cm, sched)) => {
            tracing::info!(identity = %cm.identity, "leader election on");
            let clock = skiff_actors::runtime::SharedClock::default();
            (
                Some(leader::elect(client.clone(), cm, clock.clone())),
                Some(leader::elect(client.clone(), sched, clock)),
            )
        }
        None => (None, None),
    };
    let cm_cfg = ControllerManagerConfig {
        leadership: cm_leading,
        node_lifecycle: NodeLifecycleConfig {
            grace_period: Duration::from_secs(cfg.controllers.node_grace_period_seconds),
            monitor_period: Duration::from_secs(cfg.controllers.node_monitor_period_seconds.max(1)),
            eviction_rate: cfg.controllers.node_eviction_rate,
            secondary_eviction_rate: cfg.controllers.secondary_node_eviction_rate,
            unhealthy_zone_threshold: cfg.controllers.unhealthy_zone_threshold,
            large_cluster_threshold: cfg.controllers.large_cluster_size_threshold,
        },
        pod_gc: PodGcConfig {
            terminated_threshold: cfg.controllers.terminated_pod_gc_threshold,
            ..PodGcConfig::default()
        },
        enabled: cfg.controllers.enabled.clone(),
        autoscaler: AutoscalerConfig {
            sync_period: Duration::from_secs(cfg.controllers.hpa_sync_period_seconds.max(1)),
            downscale_stabilization: Duration::from_secs(
                cfg.controllers.hpa_downscale_stabilization_seconds,
            ),
        },
        csr_signing: credentials.as_ref().map(|c| CsrSigningConfig {
            ca: c.ca.clone(),
            validity: Duration::from_secs(cfg.auth.node_cert_validity_days.max(1) * 24 * 3600),
        }),
        service_accounts: Some(ServiceAccountsConfig {
            issuer: issuer.clone(),
            root_ca_pem,
        }),
        kubernetes_service: Some(kubernetes_service),
        dns_service: dns.as_ref().map(|(_, s)| s.clone()),
        job: JobConfig {
            backoff_base: Duration::from_millis(cfg.controllers.job_backoff_base_ms.max(1)),
            backoff_max: Duration::from_secs(cfg.controllers.job_backoff_max_seconds.max(1)),
        },
        clock: cfg.controllers.clock.clone(),
        local_path: LocalPathConfig {
            dir: cfg.local_path_dir(),
            nodes: cfg.nodes.iter().map(|n| n.name.clone()).collect(),
        },
        pod_range: cfg
            .network
            .pod_range(&cfg.gateway.service_cidr)
            .map_err(|e| SystemError::Bootstrap(e.to_string()))?,
    };
    // One informer per resource for the whole process: the controllers, the scheduler and
    // every in-process kubelet and proxy read the same caches. They run on the control
    // arbiter, and stop with it.
    let informers = InformerFactory::on_arbiter(client.clone(), control_arbiter.handle());
    let scheduler_client = client.clone();
    let hpa_metrics: Arc<dyn MetricsSource> = Arc::new(scraped.clone());
    control_arbiter.spawn(
        Scraper {
            client: client.clone(),
            dialer,
            registry: scraped,
            pods: informers.informer(InformerSpec::all("pods")),
            period: Duration::from_secs(cfg.gateway.metrics_resolution_seconds.max(1)),
        }
        .run(),
    );
    let cm_informers = informers.clone();
    let controllers = Supervisor::start_in_arbiter(&control_arbiter.handle(), move |_| {
        ControllerManager::new(cm_informers, cm_cfg).with_metrics(hpa_metrics)
    });
    let scheduler = cfg.scheduler.enabled.then(|| {
        let informers = informers.clone();
        Supervisor::start_in_arbiter(&control_arbiter.handle(), move |_| {
            SchedulerActor::new(scheduler_client, SchedulerConfig::default())
                .with_informers(&informers)
                .with_leadership(scheduler_leading)
        })
    });
    // Pods are given the cluster DNS where they can reach its ClusterIP; elsewhere the
    // kubelet falls back to the node's resolvers and says so (MissingClusterDNS).
    let kernel = kernel_proxy_enabled(cfg);
    let kubelet_dns = DnsSettings {
        cluster_dns: if dns.is_some() && kernel {
            vec![IpAddr::V4(dns_ip)]
        } else {
            Vec::new()
        },
        cluster_domain: cfg.dns.cluster_domain.clone(),
        ..DnsSettings::default()
    };
    let nodes_arbiter = Arbiter::new();
    let pod_range = cfg
        .network
        .pod_range(&cfg.gateway.service_cidr)
        .map_err(|e| SystemError::Bootstrap(e.to_string()))?;
    let docker_nodes = cfg.nodes.iter().any(|n| n.runtime == "docker");
    let backend = cfg
        .network
        .backend()
        .map_err(|e| SystemError::Bootstrap(e.to_string()))?;
    let pod_network = pod_range.filter(|_| docker_nodes).map(|range| {
        start_pod_network(
            &host_id(&data_dir),
            range.cluster(),
            backend,
            cfg.nodes.iter().map(|n| n.name.clone()),
            &nodes_arbiter,
            &informers,
        )
    });
    let serving = NodeServing {
        client: Arc::new(
            LocalClient::new(objects.clone())
                .with_manager("kubelet")
                .with_reviewers(reviewers),
        ),
        ca_pem: credentials.as_ref().map(|c| c.ca.cert_pem().to_string()),
    };
    let kubelets = start_nodes(
        &cfg.nodes,
        Some(&data_dir.join("nodes")),
        &nodes_arbiter,
        &informers,
        &serving,
        &usage,
        &NodeNetwork {
            dns: kubelet_dns,
            kernel,
            // Nodes wait for podCIDRs only from a controller manager that gives them.
            pod_cidrs: pod_range.is_some()
                && cfg
                    .controllers
                    .enabled
                    .iter()
                    .any(|c| c == "*" || c == "nodeipam"),
        },
    )
    .await?;
    let kernel_proxy =
        kernel.then(|| start_kernel_proxy(cfg, &data_dir, &nodes_arbiter, &informers));
    let dns_addr = dns.as_ref().and_then(|(s, _)| s.local_addr());
    let dns_server = match dns {
        Some((sockets, _)) => Some(start_dns(cfg, sockets, &control_arbiter, &informers)?),
        None => None,
    };
    let kubeconfig = data_dir.join("kubeconfig");
    write_kubeconfig(&kubeconfig, &cfg.cluster.name, addr, credentials.as_ref())?;
    Ok(System {
        addr,
        store,
        data_dir,
        kubeconfig,
        credentials,
        gateway,
        store_arbiter,
        control_arbiter,
        nodes_arbiter,
        _controllers: controllers,
        nodes: kubelets,
        scheduler,
        kernel_rules: kernel_proxy.as_ref().map(|(_, r)| r.clone()),
        kernel_proxy: kernel_proxy.map(|(a, _)| a),
        pod_network,
        dns: dns_server,
        dns_addr,
        informers,
    })
}

/// A node run in this process against an API server elsewhere (`skiff node`).
pub struct NodeAgent {
    pub node: NodeHandle,
    arbiter: Arbiter,
    pod_network: Option<PodNetworkHandle>,
    kernel_rules: Option<Arc<KernelRules>>,
}

impl NodeAgent {
    pub fn stop(self) {
        self.arbiter.stop();
        let _ = self.arbiter.join();
        if let Some(net) = &self.pod_network {
            net.host.remove();
        }
        if let Some(rules) = &self.kernel_rules {
            rules.remove();
        }
    }
}

/// Start one node's kubelet and proxy, talking to the cluster through `client`.
pub async fn start_node_agent(
    node: &NodeConfig,
    client: Arc<dyn ApiClient>,
    net: NodeAgentNetwork,
    ca_pem: Option<String>,
) -> Result<NodeAgent, SystemError> {
    let arbiter = Arbiter::new();
    // The node's usage samples, served by its server for the API server's scraper.
    let usage = MetricsRegistry::default();
    // With the cluster's CA its server serves TLS (a certificate from the kubelet-serving
    // signer) to callers it checks; without, plain HTTP (an insecure cluster).
    let serving = NodeServing {
        client: client.clone(),
        ca_pem,
    };
    // Far from the API server, the kubelet watches only its own node's pods.
    let informers = InformerFactory::node_scoped(client, Some(arbiter.handle()));
    let docker = node.runtime == "docker";
    let kernel = docker && net.service_cidr.is_some() && skiff_actors::proxy::kernel::available();
    if docker && net.service_cidr.is_some() && !kernel {
        tracing::warn!("nft is missing or may not change the kernel's tables: ClusterIPs are not reachable on this host");
    }
    // Pods ask the cluster DNS at the kube-dns Service's address (the tenth of the
    // service range, as the server gives it), which this host's kernel rules lead to the
    // server; without those rules, the node's resolvers (MissingClusterDNS says so).
    let cluster_dns = match (&net.service_cidr, kernel) {
        (Some(cidr), true) => {
            skiff_actors::gateway::allocation::ServiceRanges::parse(cidr, "30000-32767")
                .map(|r| vec![IpAddr::V4(r.dns_address())])
                .map_err(|e| SystemError::Bootstrap(e.to_string()))?
        }
        _ => Vec::new(),
    };
    let mut started = start_nodes(
        std::slice::from_ref(node),
        None,
        &arbiter,
        &informers,
        &serving,
        &usage,
        &NodeNetwork {
            dns: DnsSettings {
                cluster_dns,
                ..DnsSettings::default()
            },
            kernel,
            pod_cidrs: net.pod_range.is_some(),
        },
    )
    .await?;
    let id = host_id(&node.data_dir.clone().unwrap_or_default());
    let pod_network = net.pod_range.filter(|_| docker).map(|(range, backend)| {
        start_pod_network(
            &id,
            range,
            backend,
            [node.name.clone()],
            &arbiter,
            &informers,
        )
    });
    let kernel_rules = match (&net.service_cidr, kernel) {
        (Some(cidr), true) => {
            let proxy = KernelProxy::new(&id, cidr.clone(), [node.name.clone()]);
            let rules = proxy.rules();
            let informers = informers.clone();
            Supervisor::start_in_arbiter(&arbiter.handle(), move |_| {
                Controller::new(proxy, &informers)
            });
            Some(rules)
        }
        _ => None,
    };
    match started.pop() {
        Some(node) => Ok(NodeAgent {
            node,
            arbiter,
            pod_network,
            kernel_rules,
        }),
        None => Err(SystemError::Bootstrap("no node started".into())),
    }
}

/// How a node started alone reaches pods and Services.
#[derive(Debug, Clone, Default)]
pub struct NodeAgentNetwork {
    /// The cluster's pod range and backend: the node waits for its podCIDR, runs its pods
    /// on a network holding it and routes the other nodes' blocks.
    pub pod_range: Option<(ipnet::Ipv4Net, Backend)>,
    /// The cluster's service range: ClusterIPs and node ports in this host's kernel.
    pub service_cidr: Option<String>,
}

/// How the nodes of this process reach Services: the DNS their pods are given, and
/// whether the host's kernel serves Services (else the nodes' userspace proxies do).
struct NodeNetwork {
    dns: DnsSettings,
    kernel: bool,
    /// The cluster gives nodes podCIDRs: Docker nodes wait for theirs and run their pods
    /// on a network holding it.
    pod_cidrs: bool,
}

/// The pod network agent of this host and what it put in the kernel.
pub struct PodNetworkHandle {
    pub agent: Addr<Controller<PodNetAgent>>,
    pub host: Arc<PodNetHost>,
}

/// The pod network agent for the nodes of this process, on the nodes' arbiter.
fn start_pod_network(
    id: &str,
    cluster: ipnet::Ipv4Net,
    backend: Backend,
    local: impl IntoIterator<Item = String>,
    arbiter: &Arbiter,
    informers: &InformerFactory,
) -> PodNetworkHandle {
    let host = Arc::new(PodNetHost::new(id, cluster));
    let agent = PodNetAgent::new(host.clone(), backend, local);
    let informers = informers.clone();
    let agent = Supervisor::start_in_arbiter(&arbiter.handle(), move |_| {
        Controller::new(agent, &informers)
    });
    PodNetworkHandle { agent, host }
}

/// A name for this cluster's rules on the host, stable across restarts of the same data
/// directory and different between clusters sharing the machine.
fn host_id(data_dir: &std::path::Path) -> String {
    format!(
        "{:08x}",
        fnv1a(data_dir.display().to_string().as_bytes()) as u32
    )
}

/// Whether this host programs ClusterIPs into its kernel: a node here runs containers,
/// the configuration asks for nftables, and `nft` may change the kernel's tables.
fn kernel_proxy_enabled(cfg: &Config) -> bool {
    if !cfg.nodes.iter().any(|n| n.runtime == "docker") {
        return false;
    }
    match cfg.proxy.cluster_ip.as_str() {
        "nftables" if skiff_actors::proxy::kernel::available() => true,
        "nftables" => {
            tracing::warn!("nft is missing or may not change the kernel's tables: ClusterIPs are not reachable on this host");
            false
        }
        _ => false,
    }
}

/// The cluster DNS's sockets, bound where pods reach this host, and its Service.
async fn bind_dns(
    cfg: &Config,
    cluster_ip: std::net::Ipv4Addr,
) -> Result<Option<(Sockets, SystemService)>, SystemError> {
    if !cfg.dns.enabled {
        return Ok(None);
    }
    let listen: SocketAddr = match &cfg.dns.listen {
        Some(l) => l
            .parse()
            .map_err(|_| SystemError::Bootstrap(format!("[dns] listen {l:?} is not ip:port")))?,
        None => {
            let mut ip = IpAddr::from([127, 0, 0, 1]);
            if cfg.nodes.iter().any(|n| n.runtime == "docker") {
                if let Ok(docker) = DockerRuntime::connect().await {
                    ip = docker.bridge_gateway().await.unwrap_or(ip);
                }
            } else if !cfg.advertise_address().is_loopback() {
                // A control plane without nodes of its own (`skiff server`): its nodes'
                // pods are elsewhere and reach it at the address it is advertised at.
                ip = cfg.advertise_address();
            }
            SocketAddr::new(ip, 0)
        }
    };
    let sockets = Sockets::bind(listen).map_err(|e| SystemError::Bootstrap(e.to_string()))?;
    let bound = sockets.local_addr().unwrap_or(listen);
    // Endpoints name an address a client can reach: not the unspecified one.
    let address = if bound.ip().is_unspecified() {
        cfg.advertise_address()
    } else {
        bound.ip()
    };
    let service =
        SystemService::kube_dns(cluster_ip.to_string(), address.to_string(), bound.port());
    Ok(Some((sockets, service)))
}

/// The DNS server and the reconciler keeping its zone, on `arbiter`.
fn start_dns(
    cfg: &Config,
    sockets: Sockets,
    arbiter: &Arbiter,
    informers: &InformerFactory,
) -> Result<(Addr<DnsServer>, Addr<Controller<ZoneReconciler>>), SystemError> {
    let upstream = if cfg.dns.upstream.is_empty() {
        Upstream::Host
    } else {
        let servers = cfg
            .dns
            .upstream
            .iter()
            .map(|u| {
                u.parse::<SocketAddr>()
                    .or_else(|_| u.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
                    .map_err(|_| {
                        SystemError::Bootstrap(format!("[dns] upstream {u:?} is not ip or ip:port"))
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Upstream::Servers(servers)
    };
    let zone = ZoneHandle::default();
    let reconciler = ZoneReconciler::new(cfg.dns.cluster_domain.clone(), zone.clone());
    let informers = informers.clone();
    let zone_addr = Supervisor::start_in_arbiter(&arbiter.handle(), move |_| {
        Controller::new(reconciler, &informers)
    });
    let server_addr = Supervisor::start_in_arbiter(&arbiter.handle(), move |_| {
        DnsServer::new(sockets, zone, upstream)
    });
    Ok((server_addr, zone_addr))
}

/// The kernel's ClusterIP rules for this host, once for all the nodes of the process (they
/// share one kernel), when one of them runs containers. The table is named after the data
/// directory, so a restarted process takes its own rules over and clusters sharing the
/// machine keep out of each other's.
fn start_kernel_proxy(
    cfg: &Config,
    data_dir: &std::path::Path,
    arbiter: &Arbiter,
    informers: &InformerFactory,
) -> (Addr<Controller<KernelProxy>>, Arc<KernelRules>) {
    let id = host_id(data_dir);
    let cidr = cfg.gateway.service_cidr.clone();
    let informers = informers.clone();
    let local = cfg.nodes.iter().map(|n| n.name.clone()).collect::<Vec<_>>();
    let proxy = KernelProxy::new(&id, cidr, local);
    let rules = proxy.rules();
    let addr = Supervisor::start_in_arbiter(&arbiter.handle(), move |_| {
        Controller::new(proxy, &informers)
    });
    (addr, rules)
}

/// A stable 64-bit FNV-1a hash (names derived from it must not change between runs).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// How the node servers of a process reach the API server and prove themselves.
struct NodeServing {
    /// For their serving certificate's request and their callers' reviews.
    client: Arc<dyn ApiClient>,
    /// The cluster CA (PEM); `None`: plain HTTP, nobody checked (insecure cluster).
    ca_pem: Option<String>,
}

/// Start a kubelet, a node server and a proxy per configured node, on the nodes'
/// arbiter, all reading `informers`.
async fn start_nodes(
    nodes: &[NodeConfig],
    nodes_dir: Option<&std::path::Path>,
    arbiter: &Arbiter,
    informers: &InformerFactory,
    serving: &NodeServing,
    usage: &MetricsRegistry,
    net: &NodeNetwork,
) -> Result<Vec<NodeHandle>, SystemError> {
    let (dns, kernel) = (&net.dns, net.kernel);
    let mut docker: Option<Arc<dyn Runtime>> = None;
    let mut started = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        let mut sim = None;
        let runtime: Arc<dyn Runtime> = match node.runtime.as_str() {
            "docker" => match &docker {
                Some(d) => d.clone(),
                None => {
                    let d: Arc<dyn Runtime> =
                        Arc::new(DockerRuntime::connect().await.map_err(|e| {
                            SystemError::Node {
                                node: node.name.clone(),
                                detail: e.to_string(),
                            }
                        })?);
                    docker = Some(d.clone());
                    d
                }
            },
            "sim" => {
                let rt = Arc::new(SimRuntime::new(SimConfig {
                    ip_offset: (i as u32) * 256,
                    ..SimConfig::default()
                }));
                sim = Some(rt.clone());
                rt
            }
            other => {
                return Err(SystemError::Node {
                    node: node.name.clone(),
                    detail: format!("unknown runtime {other:?} (docker or sim)"),
                })
            }
        };
        let address: IpAddr = match &node.address {
            Some(a) => a.parse().map_err(|_| SystemError::Node {
                node: node.name.clone(),
                detail: format!("address {a:?} is not an IP address"),
            })?,
            None => IpAddr::from([127, 0, 0, (i % 254) as u8 + 1]),
        };
        let listener =
            node_server::bind(address, node.server_port).map_err(|e| SystemError::Node {
                node: node.name.clone(),
                detail: format!(
                    "{e}: {}",
                    std::error::Error::source(&e)
                        .map(|s| s.to_string())
                        .unwrap_or_default()
                ),
            })?;
        let server_port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
        let data_dir = node
            .data_dir
            .clone()
            .or_else(|| nodes_dir.map(|d| d.join(&node.name)));
        let server_config = NodeServerConfig {
            node_name: node.name.clone(),
            listener,
            security: serving.ca_pem.as_ref().map(|ca| ServerSecurity {
                ca_pem: ca.clone(),
                sans: vec![node.name.clone(), address.to_string()],
                cert_dir: data_dir.as_ref().map(|d| d.join("pki")),
            }),
            samples: Some(usage.clone()),
        };
        let (server_client, server_runtime) = (serving.client.clone(), runtime.clone());
        let server_pods = informers.pods_on_node(&node.name);
        let server = Supervisor::start_in_arbiter(&arbiter.handle(), move |_| {
            NodeServer::new(server_config, server_client, server_runtime, server_pods)
        });
        let kcfg = KubeletConfig {
            address: address.to_string(),
            node_name: node.name.clone(),
            labels: node.labels.clone(),
            taints: node
                .taints
                .iter()
                .map(|t| parse_taint(t))
                .collect::<Result<_, _>>()
                .map_err(|detail| SystemError::Node {
                    node: node.name.clone(),
                    detail,
                })?,
            cpu: node.cpu.clone(),
            memory: node.memory.clone(),
            max_pods: node.pods,
            heartbeat_interval: Duration::from_secs(node.heartbeat_seconds.max(1)),
            stats_interval: Duration::from_secs(node.stats_interval_seconds.max(1)),
            data_dir,
            volume_sync_interval: Duration::from_secs(node.volume_sync_seconds.max(1)),
            dns: dns.clone(),
            require_pod_cidr: net.pod_cidrs && node.runtime == "docker",
            server_port,
            ..KubeletConfig::default()
        };
        let kubelet_informers = informers.clone();
        let sink: Arc<dyn MetricsSink> = Arc::new(usage.clone());
        let addr = Supervisor::start_in_arbiter(&arbiter.handle(), move |_| {
            Kubelet::new(kubelet_informers.client(), runtime, kcfg)
                .with_informers(&kubelet_informers)
                .with_metrics(sink)
        });
        let proxy_informers = informers.clone();
        let name = node.name.clone();
        let proxy = Supervisor::start_in_arbiter(&arbiter.handle(), move |_| {
            Controller::new(
                ProxyReconciler::new(name, address, kernel),
                &proxy_informers,
            )
        });
        started.push(NodeHandle {
            name: node.name.clone(),
            kubelet: addr,
            proxy,
            server,
            server_port,
            sim,
        });
    }
    Ok(started)
}

/// `key=value:Effect` or `key:Effect`, as `kubectl taint` writes them.
fn parse_taint(s: &str) -> Result<Value, String> {
    let (kv, effect) = s
        .rsplit_once(':')
        .ok_or_else(|| format!("taint {s:?} has no effect (key=value:Effect)"))?;
    if !matches!(effect, "NoSchedule" | "PreferNoSchedule" | "NoExecute") {
        return Err(format!("taint {s:?}: unknown effect {effect:?}"));
    }
    let (key, value) = kv.split_once('=').unwrap_or((kv, ""));
    Ok(json!({"key": key, "value": value, "effect": effect}))
}

/// Ask the gateway which address it bound.
#[derive(Message)]
#[rtype(result = "SocketAddr")]
struct GetAddr;

impl Handler<GetAddr> for GatewayActor {
    type Result = MessageResult<GetAddr>;
    fn handle(&mut self, _: GetAddr, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.addr)
    }
}

/// The namespaces every Kubernetes cluster has from its first start, and the built-in
/// RBAC roles and bindings.
/// The bootstrap-token Secret of the join token made at first start.
async fn create_join_token(
    objects: &Objects,
    token: &str,
    ttl_hours: u64,
) -> Result<(), SystemError> {
    let expiration =
        (ttl_hours > 0).then(|| chrono::Utc::now() + chrono::Duration::hours(ttl_hours as i64));
    let spec = TokenSpec::for_joining(
        token,
        expiration,
        "The join token skiff made at first start.",
    )
    .ok_or_else(|| SystemError::Bootstrap("the join token is malformed".into()))?;
    match ensure_created_in(objects, spec.secret_object()).await {
        Ok(_) | Err(ApiError::AlreadyExists { .. }) => Ok(()),
        Err(e) => Err(SystemError::Bootstrap(format!(
            "creating the join token: {e}"
        ))),
    }
}

async fn bootstrap(objects: &Objects) -> Result<(), SystemError> {
    for ns in gateway::objects::SYSTEM_NAMESPACES {
        let doc = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {
            "name": ns, "labels": {"kubernetes.io/metadata.name": ns}}});
        ensure(objects, doc)
            .await
            .map_err(|e| SystemError::Bootstrap(format!("namespace {ns}: {e}")))?;
    }
    // The built-in PriorityClasses; like kube-apiserver, a class already there is kept.
    for doc in gateway::priority::system_classes() {
        let what = format!("PriorityClass {}", meta::name(&doc).unwrap_or_default());
        match ensure_created(objects, doc).await {
            Ok(()) | Err(ApiError::AlreadyExists { .. }) => {}
            Err(e) => return Err(SystemError::Bootstrap(format!("{what}: {e}"))),
        }
    }
    // The default StorageClass, as k3s installs local-path; kept as it is when there.
    let class = skiff_actors::api::kinds::storage_class::local_path_class();
    match ensure_created(objects, class).await {
        Ok(()) | Err(ApiError::AlreadyExists { .. }) => {}
        Err(e) => {
            return Err(SystemError::Bootstrap(format!(
                "StorageClass local-path: {e}"
            )))
        }
    }
    for doc in gateway::auth::bootstrap::objects() {
        let what = format!("{} {}", doc["kind"], meta::name(&doc).unwrap_or_default());
        if !autoupdate(objects, &doc) {
            tracing::info!(object = %what, "built-in RBAC object customised; left alone");
            continue;
        }
        ensure(objects, doc)
            .await
            .map_err(|e| SystemError::Bootstrap(format!("{what}: {e}")))?;
    }
    Ok(())
}

/// Whether a built-in RBAC object may be brought up to date: yes unless it exists and an
/// administrator set its autoupdate annotation to "false", as Kubernetes honours.
fn autoupdate(objects: &Objects, doc: &Value) -> bool {
    let kind = doc["kind"].as_str().unwrap_or_default();
    let Some(info) = resources::by_kind(kind) else {
        return true;
    };
    let key = resources::object_key(info.name, None, meta::name(doc).unwrap_or_default());
    let annotation = gateway::auth::bootstrap::AUTOUPDATE_ANNOTATION;
    objects.store.get(&key).is_none_or(|o| {
        o.value
            .pointer("/metadata/annotations")
            .and_then(|a| a.get(annotation))
            .and_then(Value::as_str)
            != Some("false")
    })
}

/// A system Service (`kubernetes`, `kube-dns`) and its Endpoints, as the control plane
/// creates them at start (its controller keeps them afterwards).
async fn ensure_system_service(objects: &Objects, k: &SystemService) -> Result<(), SystemError> {
    for doc in [k.service(), k.endpoints(), k.endpoint_slice()] {
        let what = format!("{} {}", doc["kind"], k.name);
        match ensure_created_in(objects, doc).await {
            Ok(()) | Err(ApiError::AlreadyExists { .. }) => {}
            // Someone holds the address (a data directory from before this Service
            // existed): the cluster runs, without it.
            Err(e @ ApiError::Invalid { .. }) => {
                tracing::warn!(service = k.name, error = %e, "cannot create the system service")
            }
            Err(e) => return Err(SystemError::Bootstrap(format!("{what}: {e}"))),
        }
    }
    Ok(())
}

/// Create a namespaced object in its namespace.
async fn ensure_created_in(objects: &Objects, doc: Value) -> Result<(), ApiError> {
    let kind = doc.get("kind").and_then(Value::as_str).unwrap_or_default();
    let info = resources::by_kind(kind)
        .ok_or_else(|| ApiError::BadRequest(format!("unsupported kind {kind:?}")))?;
    let list = Target {
        resource: info,
        namespace: meta::namespace(&doc).map(str::to_string),
        name: None,
        subresource: None,
        legacy_watch: false,
    };
    objects
        .create(&list, doc, &WriteOptions::default())
        .await
        .map(|_| ())
}

/// Create a cluster-scoped object.
async fn ensure_created(objects: &Objects, doc: Value) -> Result<(), ApiError> {
    let kind = doc.get("kind").and_then(Value::as_str).unwrap_or_default();
    let info = resources::by_kind(kind)
        .ok_or_else(|| ApiError::BadRequest(format!("unsupported kind {kind:?}")))?;
    let list = Target {
        resource: info,
        namespace: None,
        name: None,
        subresource: None,
        legacy_watch: false,
    };
    objects
        .create(&list, doc, &WriteOptions::default())
        .await
        .map(|_| ())
}

/// Create the object if it is missing, otherwise merge the declared fields into it (a
/// no-op when nothing changed), so applying at every start is idempotent.
async fn ensure(objects: &Objects, doc: Value) -> Result<(), ApiError> {
    let kind = doc.get("kind").and_then(Value::as_str).unwrap_or_default();
    let api_version = doc
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default();
    // The manifest's own version first: a kind served in two (autoscaling/v1 and v2
    // HPAs) is written through the one the manifest is in.
    let info = resources::by_api_version_kind(api_version, kind)
        .or_else(|| resources::by_kind(kind))
        .ok_or_else(|| ApiError::BadRequest(format!("unsupported kind {kind:?}")))?;
    let namespace = info
        .namespaced
        .then(|| meta::namespace(&doc).unwrap_or("default").to_string());
    let name = meta::name(&doc).map(str::to_string);
    let list = Target {
        resource: info,
        namespace: namespace.clone(),
        name: None,
        subresource: None,
        legacy_watch: false,
    };
    match objects
        .create(&list, doc.clone(), &WriteOptions::default())
        .await
    {
        Ok(_) => Ok(()),
        Err(ApiError::AlreadyExists { .. }) => {
            let one = Target { name, ..list };
            objects
                .patch(&one, PatchType::Merge, doc, &WriteOptions::default())
                .await
                .map(|_| ())
        }
        Err(e) => Err(e),
    }
}

async fn apply_manifests(objects: &Objects, dir: &Path) -> Result<(), SystemError> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        tracing::debug!(dir = %dir.display(), "no manifests folder");
        return Ok(());
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("yaml" | "yml" | "json")
            )
        })
        .collect();
    files.sort();
    for file in files {
        let err = |detail: String| SystemError::Manifest {
            file: file.clone(),
            detail,
        };
        let text = std::fs::read_to_string(&file).map_err(|e| err(e.to_string()))?;
        for doc in serde_yaml_ng::Deserializer::from_str(&text) {
            let value = Value::deserialize(doc).map_err(|e| err(e.to_string()))?;
            if value.is_null() {
                continue;
            }
            ensure(objects, value)
                .await
                .map_err(|e| err(e.to_string()))?;
        }
        tracing::info!(file = %file.display(), "manifest applied");
    }
    Ok(())
}

use serde::Deserialize;

/// The address a client should dial: a wildcard listen address is reached on loopback.
fn client_addr(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => SocketAddr::from(([127, 0, 0, 1], addr.port())),
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, addr.port()))
        }
        _ => addr,
    }
}

/// The kubeconfig `kubectl --kubeconfig` needs and nothing else: the server, the CA to
/// trust it by, and the administrator's credential (none on the insecure path).
pub fn kubeconfig_yaml(
    cluster: &str,
    addr: SocketAddr,
    credentials: Option<&Credentials>,
) -> Result<String, SystemError> {
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let addr = client_addr(addr);
    let (cluster_entry, user) = match credentials {
        None => (json!({"server": format!("http://{addr}")}), json!({})),
        Some(c) => (
            json!({
                "server": format!("https://{addr}"),
                "certificate-authority-data": b64(c.ca.cert_pem()),
            }),
            match &c.admin {
                AdminCredential::Token(t) => json!({"token": t}),
                AdminCredential::Certificate(cred) => json!({
                    "client-certificate-data": b64(&cred.cert_pem),
                    "client-key-data": b64(&cred.key_pem),
                }),
            },
        ),
    };
    let doc = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": cluster, "cluster": cluster_entry}],
        "users": [{"name": format!("{cluster}-admin"), "user": user}],
        "contexts": [{"name": cluster, "context": {
            "cluster": cluster, "user": format!("{cluster}-admin"), "namespace": "default"}}],
        "current-context": cluster,
    });
    serde_yaml_ng::to_string(&doc).map_err(|e| SystemError::Bootstrap(format!("kubeconfig: {e}")))
}

fn write_kubeconfig(
    path: &Path,
    cluster: &str,
    addr: SocketAddr,
    credentials: Option<&Credentials>,
) -> Result<(), SystemError> {
    // It holds the administrator's credential: only its owner may read it.
    let text = kubeconfig_yaml(cluster, addr, credentials)?;
    skiff_actors::pki::write_secret(path, &text).map_err(SystemError::Kubeconfig)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubeconfig_carries_the_ca_and_admin_token_only_when_secure() {
        let ca = Arc::new(skiff_actors::pki::ClusterCa::generate("t").expect("ca"));
        let creds = Credentials {
            ca: ca.clone(),
            admin: AdminCredential::Token("tok".into()),
            join_token: "abcdef.0123456789abcdef".into(),
            join_token_new: false,
            pki_dir: PathBuf::from("/nonexistent"),
        };
        let addr: SocketAddr = "0.0.0.0:6443".parse().expect("addr");
        let doc: Value =
            serde_yaml_ng::from_str(&kubeconfig_yaml("c", addr, Some(&creds)).expect("yaml"))
                .expect("parse");
        let cluster = &doc["clusters"][0]["cluster"];
        // A wildcard listen address is dialled on loopback, which the certificate names.
        assert_eq!(cluster["server"], "https://127.0.0.1:6443");
        use base64::Engine;
        let ca_data = base64::engine::general_purpose::STANDARD
            .decode(
                cluster["certificate-authority-data"]
                    .as_str()
                    .expect("ca data"),
            )
            .expect("base64");
        assert_eq!(String::from_utf8_lossy(&ca_data), ca.cert_pem());
        assert_eq!(doc["users"][0]["user"]["token"], "tok");
        let plain: Value =
            serde_yaml_ng::from_str(&kubeconfig_yaml("c", addr, None).expect("yaml"))
                .expect("parse");
        assert_eq!(
            plain["clusters"][0]["cluster"]["server"],
            "http://127.0.0.1:6443"
        );
        assert_eq!(plain["users"][0]["user"], json!({}));
    }

    #[test]
    fn taints_parse_as_kubectl_writes_them() {
        assert_eq!(
            parse_taint("gpu=true:NoSchedule").ok(),
            Some(json!({"key": "gpu", "value": "true", "effect": "NoSchedule"}))
        );
        assert_eq!(
            parse_taint("dedicated:NoExecute")
                .ok()
                .map(|t| t["value"].clone()),
            Some(json!(""))
        );
        assert!(parse_taint("nokind").is_err());
        assert!(parse_taint("a=b:Sometimes").is_err());
    }
}
