//! The controller-manager: starts one supervised actor per controller, all reading the
//! process's shared informers, and keeps their addresses for as long as it runs.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

use super::autoscaler::{Autoscaler, AutoscalerConfig};
use super::cron_job::CronJobController;
use super::csr_signing::CsrSigningController;
use super::daemon_set::DaemonSetController;
use super::deployment::DeploymentController;
use super::disruption::DisruptionController;
use super::endpoint_slice::EndpointSliceController;
use super::endpoint_slice_mirroring::EndpointSliceMirroringController;
use super::endpoints::EndpointsController;
use super::garbage_collector::GarbageCollector;
use super::job::{JobConfig, JobController};
use super::local_path::{LocalPathConfig, LocalPathProvisioner};
use super::namespace::NamespaceController;
use super::node_ipam::{NodeIpamController, PodRange};
use super::node_lifecycle::{NodeLifecycleConfig, NodeLifecycleController};
use super::persistent_volume::PersistentVolumeController;
use super::pod_gc::{PodGcConfig, PodGcController};
use super::replica_set::{ReplicaKind, ReplicaSetController};
use super::resource_quota::ResourceQuotaController;
use super::root_ca_publisher::RootCaPublisher;
use super::service_account::ServiceAccountController;
use super::service_account_token::TokenController;
use super::service_lb::ServiceLbController;
use super::stateful_set::StatefulSetController;
use super::storage_protection::StorageProtectionController;
use super::system_service::{SystemService, SystemServiceController};
use super::taint_eviction::TaintEvictionController;
use super::token_cleaner::TokenCleaner;
use super::ttl_after_finished::TtlAfterFinishedController;
use crate::gateway::serviceaccount::token::TokenIssuer;
use crate::pki::ClusterCa;
use crate::resource_metrics::{MetricsRegistry, MetricsSource};
use crate::runtime::{Controller, InformerFactory, SharedClock};

/// What the CSR approver and signer needs: the cluster CA, and how long what it signs is
/// valid. Absent on an insecure cluster, which has no CA.
#[derive(Debug, Clone)]
pub struct CsrSigningConfig {
    pub ca: Arc<ClusterCa>,
    pub validity: Duration,
}

/// What the root CA publisher and the legacy token controller need: the cluster CA's
/// certificate and the service account token signer.
#[derive(Debug, Clone)]
pub struct ServiceAccountsConfig {
    pub issuer: Arc<TokenIssuer>,
    pub root_ca_pem: String,
}

#[derive(Debug, Clone)]
pub struct ControllerManagerConfig {
    /// Heartbeat grace, monitor period and the eviction rates of the node lifecycle
    /// controller.
    pub node_lifecycle: NodeLifecycleConfig,
    /// The pod garbage collector's threshold and quarantine.
    pub pod_gc: PodGcConfig,
    /// Controllers to run by name, `*` for all.
    pub enabled: Vec<String>,
    /// The horizontal pod autoscaler's sync period and scale-down window.
    pub autoscaler: AutoscalerConfig,
    /// For `csrsigning`, which runs only when it is given.
    pub csr_signing: Option<CsrSigningConfig>,
    /// For `root-ca-cert-publisher` and `serviceaccount-token`, which run only when given.
    pub service_accounts: Option<ServiceAccountsConfig>,
    /// For `kubernetes-service` (the `kubernetes` Service and Endpoints), which runs only
    /// when given.
    pub kubernetes_service: Option<SystemService>,
    /// `kube-system/kube-dns`, when the cluster serves DNS (kept whatever `enabled` says:
    /// it follows `[dns] enabled`).
    pub dns_service: Option<SystemService>,
    /// The Job controller's back-off.
    pub job: JobConfig,
    /// The time the job, cronjob and ttl-after-finished controllers go by (a fake one in
    /// tests).
    pub clock: SharedClock,
    /// Whether this server holds the kube-controller-manager Lease (`None`: no election,
    /// the controllers always run).
    pub leadership: Option<tokio::sync::watch::Receiver<bool>>,
    /// Where the local-path provisioner makes volumes, and for which nodes.
    pub local_path: LocalPathConfig,
    /// The cluster's pod range, from which `nodeipam` gives each node its podCIDR (no
    /// allocation when `None`, as kube-controller-manager without
    /// `--allocate-node-cidrs`).
    pub pod_range: Option<PodRange>,
}

impl ControllerManagerConfig {
    fn runs(&self, name: &str) -> bool {
        self.enabled.iter().any(|e| e == "*" || e == name)
    }
}

impl Default for ControllerManagerConfig {
    fn default() -> Self {
        ControllerManagerConfig {
            node_lifecycle: NodeLifecycleConfig::default(),
            pod_gc: PodGcConfig::default(),
            enabled: vec!["*".into()],
            autoscaler: AutoscalerConfig::default(),
            csr_signing: None,
            service_accounts: None,
            kubernetes_service: None,
            dns_service: None,
            job: JobConfig::default(),
            clock: SharedClock::default(),
            local_path: LocalPathConfig::default(),
            leadership: None,
            pod_range: None,
        }
    }
}

pub struct ControllerManager {
    informers: InformerFactory,
    config: ControllerManagerConfig,
    /// Pod usage for the autoscaler.
    metrics: Arc<dyn MetricsSource>,
    /// Held so the controllers live as long as the manager.
    running: Vec<Box<dyn std::any::Any>>,
}

impl ControllerManager {
    pub fn new(informers: InformerFactory, config: ControllerManagerConfig) -> Self {
        ControllerManager {
            informers,
            config,
            metrics: Arc::new(MetricsRegistry::default()),
            running: Vec::new(),
        }
    }

    /// Where the autoscaler reads pod usage (without it, it sees none and does not scale).
    pub fn with_metrics(mut self, metrics: Arc<dyn MetricsSource>) -> Self {
        self.metrics = metrics;
        self
    }

    fn start_all(&mut self) {
        let c = || &self.informers;
        let cfg = self.config.clone();
        // With several servers, only the holder of the kube-controller-manager Lease runs
        // them; the others keep their caches warm to take over.
        let gate = cfg.leadership.clone();
        let mut running: Vec<Box<dyn std::any::Any>> = Vec::new();
        if cfg.runs("replication") {
            running.push(Box::new(
                Controller::new(
                    ReplicaSetController::new(ReplicaKind::ReplicationController),
                    c(),
                )
                .gated(gate.clone())
                .start_supervised(),
            ));
        }
        if cfg.runs("replicaset") {
            running.push(Box::new(
                Controller::new(ReplicaSetController::new(ReplicaKind::ReplicaSet), c())
                    .gated(gate.clone())
                    .start_supervised(),
            ));
        }
        if cfg.runs("deployment") {
            running.push(Box::new(
                Controller::new(DeploymentController, c())
                    .gated(gate.clone())
                    .start_supervised(),
            ));
        }
        if cfg.runs("disruption") {
            running.push(Box::new(
                Controller::new(DisruptionController, c())
                    .gated(gate.clone())
                    .start_supervised(),
            ));
        }
        if cfg.runs("daemonset") {
            running.push(Box::new(
                Controller::new(DaemonSetController::new(), c())
                    .gated(gate.clone())
                    .start_supervised(),
            ));
        }
        if cfg.runs("statefulset") {
            running.push(Box::new(
                Controller::new(StatefulSetController, c())
                    .gated(gate.clone())
                    .start_supervised(),
            ));
        }
        if cfg.runs("endpoints") {
            running.push(Box::new(
                Controller::new(EndpointsController::new(), c())
                    .gated(gate.clone())
                    .start_supervised(),
            ));
        }
        if cfg.runs("endpointslice") {
            running.push(Box::new(
                Controller::new(EndpointSliceController::default(), c())
                    .gated(gate.clone())
                    .start_supervised(),
            ));
        }
        if cfg.runs("servicelb") {
            running.push(Box::new(
                Controller::new(ServiceLbController, c())
                    .gated(gate.clone())
                    .start_supervised(),
            ));
        }
        if cfg.runs("endpointslicemirroring") {
            running.push(Box::new(
                Controller::new(EndpointSliceMirroringController, c())
                    .gated(gate.clone())
                    .start_supervised(),
            ));
        }
        // Heartbeats, taints and token expirations are stamped by the system's clock, so
        // the controllers that judge them read that one, not the batch controllers' clock
        // a test may move.
        let system_clock = SharedClock::default;
        if cfg.runs("nodelifecycle") {
            let lifecycle = NodeLifecycleController::new(cfg.node_lifecycle, system_clock());
            running.push(Box::new(
                Controller::new(lifecycle, c())
                    .gated(gate.clone())
                    .start_supervised(),
            ));
        }
        if cfg.runs("taint-eviction-controller") {
            let eviction = TaintEvictionController::new(system_clock());
            running.push(Box::new(
                Controller::new(eviction, c())
                    .gated(gate.clone())
                    .start_supervised(),
            ));
        }
        if cfg.runs("tokencleaner") {
            let cleaner = TokenCleaner::new(system_clock());
            running.push(Box::new(
                Controller::new(cleaner, c())
                    .gated(gate.clone())
                    .start_supervised(),
            ));
        }
        if cfg.runs("podgc") {
            let gc = PodGcController::new(cfg.pod_gc, system_clock());
            running.push(Box::new(
                Controller::new(gc, c())
                    .gated(gate.clone())
                    .start_supervised(),
            ));
        }
        if let (true, Some(range)) = (cfg.runs("nodeipam"), cfg.pod_range) {
            running.push(Box::new(
                Controller::new(NodeIpamController::new(range), c())
                    .gated(gate.clone())
                    .start_supervised(),
            ));
        }
        if cfg.runs("namespace") {
            running.push(Box::new(
                Controller::new(NamespaceController::new(), c())
                    .gated(gate.clone())
                    .start_supervised(),
            ));
        }
        if cfg.runs("resourcequota") {
            running.push(Box::new(
                Controller::new(ResourceQuotaController, c())
                    .gated(gate.clone())
                    .start_supervised(),
            ));
        }
        if cfg.runs("garbagecollector") {
            running.push(Box::new(
                Controller::new(GarbageCollector::new(), c())
                    .gated(gate.clone())
                    .start_supervised(),
            ));
        }
        if cfg.runs("horizontalpodautoscaling") {
            let hpa = Autoscaler::new(cfg.autoscaler.clone(), self.metrics.clone());
            running.push(Box::new(
                Controller::new(hpa, c())
                    .gated(gate.clone())
                    .start_supervised(),
            ));
        }
        if cfg.runs("job") {
            let job = JobController::new(cfg.job.clone(), cfg.clock.clone());
            running.push(Box::new(
                Controller::new(job, c())
                    .gated(gate.clone())
                    .start_supervised(),
            ));
        }
        if cfg.runs("cronjob") {
            let cron = CronJobController::new(cfg.clock.clone());
            running.push(Box::new(
                Controller::new(cron, c())
                    .gated(gate.clone())
                    .start_supervised(),
            ));
        }
        if cfg.runs("ttl-after-finished") {
            let ttl = TtlAfterFinishedController::new(cfg.clock.clone());
            running.push(Box::new(
                Controller::new(ttl, c())
                    .gated(gate.clone())
                    .start_supervised(),
            ));
        }
        if cfg.runs("persistentvolume-binder") {
            running.push(Box::new(
                Controller::new(PersistentVolumeController, c())
                    .gated(gate.clone())
                    .start_supervised(),
            ));
        }
        if cfg.runs("storage-protection") {
            running.push(Box::new(
                Controller::new(StorageProtectionController, c())
                    .gated(gate.clone())
                    .start_supervised(),
            ));
        }
        if cfg.runs("local-path-provisioner") {
            let provisioner = LocalPathProvisioner::new(cfg.local_path.clone());
            running.push(Box::new(
                Controller::new(provisioner, c())
                    .gated(gate.clone())
                    .start_supervised(),
            ));
        }
        if let (true, Some(csr)) = (cfg.runs("csrsigning"), cfg.csr_signing.clone()) {
            running.push(Box::new(
                Controller::new(CsrSigningController::new(csr.ca, csr.validity), c())
                    .gated(gate.clone())
                    .start_supervised(),
            ));
        }
        if cfg.runs("serviceaccount") {
            running.push(Box::new(
                Controller::new(ServiceAccountController, c())
                    .gated(gate.clone())
                    .start_supervised(),
            ));
        }
        if let Some(sa) = cfg.service_accounts.clone() {
            if cfg.runs("root-ca-cert-publisher") {
                running.push(Box::new(
                    Controller::new(RootCaPublisher::new(sa.root_ca_pem.clone()), c())
                        .gated(gate.clone())
                        .start_supervised(),
                ));
            }
            if cfg.runs("serviceaccount-token") {
                running.push(Box::new(
                    Controller::new(TokenController::new(sa.issuer, sa.root_ca_pem), c())
                        .gated(gate.clone())
                        .start_supervised(),
                ));
            }
        }
        if let (true, Some(k)) = (
            cfg.runs("kubernetes-service"),
            cfg.kubernetes_service.clone(),
        ) {
            running.push(Box::new(
                Controller::new(
                    SystemServiceController::new("kubernetes-service-controller", k),
                    c(),
                )
                .gated(gate.clone())
                .start_supervised(),
            ));
        }
        if let Some(d) = cfg.dns_service.clone() {
            running.push(Box::new(
                Controller::new(
                    SystemServiceController::new("kube-dns-service-controller", d),
                    c(),
                )
                .gated(gate.clone())
                .start_supervised(),
            ));
        }
        self.running = running;
    }
}

impl Actor for ControllerManager {
    type Context = Context<Self>;

    fn started(&mut self, _ctx: &mut Self::Context) {
        // Each controller is its own supervised actor: a restart of the manager keeps
        // them running rather than starting a second set.
        if !self.running.is_empty() {
            return;
        }
        self.start_all();
        tracing::info!(
            controllers = self.running.len(),
            "controller-manager started"
        );
    }
}

impl actix::Supervised for ControllerManager {
    fn restarting(&mut self, _ctx: &mut Self::Context) {
        crate::runtime::record_restart("ControllerManager");
    }
}

pub use crate::runtime::InjectPanic;

impl Handler<InjectPanic> for ControllerManager {
    type Result = ();

    fn handle(&mut self, _: InjectPanic, ctx: &mut Self::Context) {
        crate::runtime::inject_panic(self, ctx);
    }
}
