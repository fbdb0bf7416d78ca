//! The kubelet: one actor per node. It registers the node and heartbeats its Ready
//! condition, watches the pods bound to its node and keeps one [`PodWorker`] per pod UID,
//! relists the runtime every second to tell workers about container changes (Kubernetes'
//! PLEG), and removes containers of pods that no longer exist.
//!
//! Its pods come from the process's shared pod informer (through its `spec.nodeName`
//! index), or, on a node agent of its own, from an informer watching only this node's pods.
//!
//! Nothing important lives only in memory: a restarted kubelet re-registers, is told its
//! pods again by the informer, and its new workers adopt the containers still running.

use crate::kubelet::dns::DnsSettings;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use futures::StreamExt;
use serde_json::{json, Value};

use super::backoff::Backoff;
use super::node::{self, NodeFacts};
use super::pod_worker::{
    PodRemoved, PodWorker, RuntimeChanged, Shutdown, UpdatePod, WorkerConfig, WorkerDeps,
    WorkerFinished,
};
use super::runtime::{ContainerInfo, ContainerState, PodNetwork, Runtime, RuntimeError};
use super::stats::{self, Sampler};
use super::volumes::{self, VolumeConfig, VolumeManager};
use crate::api::{meta, ApiError};
use crate::client::{ApiClient, EventKind, PatchType};
use crate::controllers::node_lifecycle::NODE_LEASE_NAMESPACE;
use crate::resource_metrics::MetricsSink;
use crate::runtime::{
    guard, key_of, node_filter, Change, Informer, InformerFactory, InformerSpec, Notification,
    Recorder, NODE_NAME,
};
use tracing::Instrument;

/// How long containers of a pod that vanished while the kubelet was away get to stop.
const ORPHAN_GRACE: Duration = Duration::from_secs(2);

#[derive(Debug, Clone)]
pub struct KubeletConfig {
    pub node_name: String,
    pub labels: BTreeMap<String, String>,
    /// Taints to register with, as Kubernetes writes them (`{"key", "value", "effect"}`).
    pub taints: Vec<Value>,
    /// Capacity (and allocatable): cpu and memory as quantities, and the pod limit.
    pub cpu: String,
    pub memory: String,
    pub max_pods: u32,
    /// How often the node's Lease is renewed and its status computed (the kubelet's
    /// `nodeStatusUpdateFrequency`, 10 s).
    pub heartbeat_interval: Duration,
    /// The status is written only when it changed, when the API server's copy differs
    /// from it, or after this long (the kubelet's `nodeStatusReportFrequency`, 5 min).
    pub status_report_interval: Duration,
    /// The node's InternalIP (`status.hostIP` of its pods).
    pub address: String,
    /// How often the runtime is listed to notice containers that exited.
    pub relist_interval: Duration,
    /// How often every pod is synced even if nothing was reported.
    pub resync_interval: Duration,
    /// CrashLoopBackOff and image pull backoff: first wait (doubling), cap, and how long
    /// a container must run for its backoff to start over.
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    pub backoff_reset: Duration,
    /// How often container CPU and memory are sampled for the metrics API (when the
    /// kubelet has a metrics sink).
    pub stats_interval: Duration,
    /// The node's data directory (the kubelet's `--root-dir`): pod volumes live under
    /// `<data_dir>/pods/<uid>/volumes`. Unset: a directory of this process and node under
    /// the system's temporary directory.
    pub data_dir: Option<std::path::PathBuf>,
    /// How often configMap, secret, downwardAPI and projected volumes of running pods are
    /// brought up to date (the kubelet's sync period).
    pub volume_sync_interval: Duration,
    /// The cluster's DNS for pods' resolv.conf (the kubelet's `clusterDNS`,
    /// `clusterDomain` and `resolvConf`).
    pub dns: DnsSettings,
    /// Pods run on a network of the node's own holding its podCIDR, so the node waits for
    /// the controller manager to give it one before it runs pods (as a kubelet waits for
    /// its network plugin). Off: pods run on the runtime's default network.
    pub require_pod_cidr: bool,
    /// The port the node's server listens on, published in the node's status.
    pub server_port: u16,
}

impl Default for KubeletConfig {
    fn default() -> Self {
        KubeletConfig {
            node_name: "node-1".into(),
            labels: BTreeMap::new(),
            taints: Vec::new(),
            cpu: "4".into(),
            memory: "8Gi".into(),
            max_pods: 110,
            heartbeat_interval: Duration::from_secs(10),
            status_report_interval: Duration::from_secs(300),
            address: "127.0.0.1".into(),
            relist_interval: Duration::from_secs(1),
            resync_interval: Duration::from_secs(10),
            backoff_base: Duration::from_secs(10),
            backoff_max: Duration::from_secs(300),
            backoff_reset: Duration::from_secs(600),
            stats_interval: Duration::from_secs(5),
            data_dir: None,
            volume_sync_interval: Duration::from_secs(10),
            dns: DnsSettings::default(),
            require_pod_cidr: false,
            server_port: 10250,
        }
    }
}

impl KubeletConfig {
    fn worker_config(&self, id_scheme: &str, network: Option<PodNetwork>) -> WorkerConfig {
        WorkerConfig {
            network,
            node_name: self.node_name.clone(),
            host_ip: self.address.clone(),
            backoff_base: self.backoff_base,
            backoff_max: self.backoff_max,
            backoff_reset: self.backoff_reset,
            resync_interval: self.resync_interval,
            id_scheme: id_scheme.to_string(),
            // The kubelet's files of each pod (/etc/hosts, termination messages) beside its
            // volumes: `<root>/pods/<uid>/`.
            pods_dir: self.root_dir().join("pods"),
            dns: self.dns.clone(),
        }
    }

    /// The node's root directory (the kubelet's `--root-dir`), absolute: Docker binds need
    /// absolute host paths.
    fn root_dir(&self) -> std::path::PathBuf {
        let dir = self.data_dir.clone().unwrap_or_else(|| {
            std::env::temp_dir()
                .join(format!("skiff-kubelet-{}", std::process::id()))
                .join(&self.node_name)
        });
        std::path::absolute(&dir).unwrap_or(dir)
    }

    fn volume_config(&self) -> VolumeConfig {
        let root = self.root_dir();
        VolumeConfig {
            allocatable: volumes::node_allocatable(&self.cpu, &self.memory, &root),
            root,
            sync_period: self.volume_sync_interval,
        }
    }

    fn facts(&self, runtime_version: String) -> NodeFacts {
        NodeFacts {
            name: self.node_name.clone(),
            labels: self.labels.clone(),
            taints: self.taints.clone(),
            cpu: self.cpu.clone(),
            memory: self.memory.clone(),
            max_pods: self.max_pods,
            address: self.address.clone(),
            runtime_version,
            server_port: self.server_port,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KubeletError {
    #[error("node registration failed: {0}")]
    Register(#[source] ApiError),
    #[error("heartbeat failed: {0}")]
    Heartbeat(#[source] ApiError),
    #[error("renewing the node's lease failed: {0}")]
    Lease(#[source] ApiError),
    #[error("runtime call failed: {0}")]
    Runtime(#[from] RuntimeError),
    #[error("the node has no podCIDR yet (the controller manager's nodeipam gives it one)")]
    NoPodCidr,
}

/// A change to one of the node's pods.
#[derive(Message)]
#[rtype(result = "()")]
struct PodEvent(Change);

/// A change of this node's Node object.
#[derive(Message)]
#[rtype(result = "()")]
struct NodeEvent(Change);

/// The UIDs of the pods that have a worker (tests and diagnostics).
#[derive(Message)]
#[rtype(result = "Vec<String>")]
pub struct ListPodWorkers;

/// Panic inside the handler (tests of supervision).
#[doc(hidden)]
#[derive(Message, Clone, Copy)]
#[rtype(result = "()")]
pub struct InjectPanic;

struct WorkerEntry {
    key: String,
    addr: Addr<PodWorker>,
}

/// The node agent. Start it with `actix::Supervisor::start(|_| Kubelet::new(...))`.
pub struct Kubelet {
    client: Arc<dyn ApiClient>,
    runtime: Arc<dyn Runtime>,
    config: KubeletConfig,
    worker_config: Arc<WorkerConfig>,
    recorder: Arc<Recorder>,
    /// Where this node's pods are read (`by_index(NODE_NAME, node)`).
    pods: Arc<Informer>,
    /// Where this node's Node object is read (`get(node)`), to see what the API server
    /// holds of its status without asking for it.
    node: Arc<Informer>,
    /// The conditions last written, and when.
    last_status: Option<(Vec<ConditionSignature>, std::time::Instant)>,
    workers: HashMap<String, WorkerEntry>,
    /// Pods whose worker finished while the pod is still in the cache (its deletion is on
    /// its way): no new worker for them.
    finished: HashSet<String>,
    /// Container id → (pod uid, state) at the last relist.
    seen: HashMap<String, (String, String)>,
    /// Orphan containers being removed.
    removing: HashSet<String>,
    registered: bool,
    /// Restarts in a row, and how long the current start waits before registering.
    restart_backoff: crate::runtime::RestartBackoff,
    resume_in: Duration,
    relisting: bool,
    heartbeating: bool,
    register_backoff: Backoff,
    /// Where usage samples go; none: this kubelet does not sample.
    metrics: Option<Arc<dyn MetricsSink>>,
    sampler: Sampler,
    sampling: bool,
    volumes: Arc<VolumeManager>,
}

impl Kubelet {
    /// A kubelet with an informer of its own, watching only its node's pods (a node agent
    /// alone in its process); [`with_informers`](Self::with_informers) shares the
    /// process's.
    pub fn new(
        client: Arc<dyn ApiClient>,
        runtime: Arc<dyn Runtime>,
        config: KubeletConfig,
    ) -> Self {
        let recorder = Arc::new(Recorder::new(client.clone(), "kubelet"));
        let factory = InformerFactory::node_scoped(client.clone(), None);
        let pods = factory.pods_on_node(&config.node_name);
        let node = factory.informer(InformerSpec::fields(
            "nodes",
            format!("metadata.name={}", config.node_name),
        ));
        let volumes = Arc::new(VolumeManager::new(
            config.volume_config(),
            client.clone(),
            recorder.clone(),
            config.address.clone(),
        ));
        Kubelet {
            volumes,
            worker_config: Arc::new(config.worker_config("docker", None)),
            client,
            runtime,
            config,
            recorder,
            pods,
            node,
            last_status: None,
            workers: HashMap::new(),
            finished: HashSet::new(),
            seen: HashMap::new(),
            removing: HashSet::new(),
            registered: false,
            restart_backoff: Default::default(),
            resume_in: Duration::ZERO,
            relisting: false,
            heartbeating: false,
            register_backoff: Backoff::new(Duration::from_millis(200), Duration::from_secs(10)),
            metrics: None,
            sampler: Sampler::default(),
            sampling: false,
        }
    }

    /// Sample container usage every `stats_interval` and report it to `sink`.
    pub fn with_metrics(mut self, sink: Arc<dyn MetricsSink>) -> Self {
        self.metrics = Some(sink);
        self
    }

    /// Read the node's pods from the process's informers.
    pub fn with_informers(mut self, informers: &InformerFactory) -> Self {
        self.pods = informers.pods_on_node(&self.config.node_name);
        self.node = informers.informer(InformerSpec::all("nodes"));
        self
    }

    /// Start supervised on the current arbiter.
    pub fn start_supervised(self) -> Addr<Self> {
        actix::Supervisor::start(move |_| self)
    }

    /// This node's pods as the informer has them now.
    fn node_pods(&self) -> Vec<Arc<Value>> {
        self.pods
            .cache()
            .by_index(NODE_NAME, &self.config.node_name)
    }

    fn register(&mut self, ctx: &mut Context<Self>) {
        let (client, runtime, config) = (
            self.client.clone(),
            self.runtime.clone(),
            self.config.clone(),
        );
        let fut = async move { register(&*client, &*runtime, &config).await };
        crate::runtime::spawn_guarded(self, ctx, fut, |res, act, ctx| match res {
            Ok((version, network)) => act.registered(version, network, ctx),
            Err(e) => {
                let wait = act.register_backoff.start(std::time::Instant::now());
                tracing::warn!(node = %act.config.node_name, error = %e, retry_in = ?wait, "node registration failed");
                crate::runtime::run_later_guarded(ctx, wait, |act, ctx| act.register(ctx));
            }
        });
    }

    /// The node exists: run its pods.
    fn registered(
        &mut self,
        runtime_version: String,
        network: Option<PodNetwork>,
        ctx: &mut Context<Self>,
    ) {
        self.register_backoff.reset();
        if self.registered {
            return;
        }
        self.registered = true;
        let scheme = runtime_version
            .split("://")
            .next()
            .filter(|s| !s.is_empty() && *s != runtime_version);
        tracing::info!(node = %self.config.node_name, runtime = %runtime_version,
            pod_network = ?network.as_ref().map(|n| n.subnet), "node registered");
        self.worker_config = Arc::new(
            self.config
                .worker_config(scheme.unwrap_or("docker"), network),
        );

        crate::runtime::run_interval_guarded(ctx, self.config.heartbeat_interval, |act, ctx| {
            act.heartbeat(ctx)
        });

        // A shared informer tells of every pod in the cluster: keep this node's, seen as a
        // watch filtered by node would report them (bound here: Added; gone: Deleted).
        let node = self.config.node_name.clone();
        let ours = self.pods.subscribe().filter_map(move |n| {
            let change = match n {
                Notification::Changed(c) => c.restricted(node_filter(&node)),
                Notification::Synced => None,
            };
            futures::future::ready(change.map(PodEvent))
        });
        ctx.add_message_stream(ours);
        // Our own Node: when what the API server holds differs from what we last wrote
        // (the node lifecycle controller marked it Unknown), write it again now.
        let node = self.config.node_name.clone();
        let own = self.node.subscribe().filter_map(move |n| {
            let change = match n {
                Notification::Changed(c) if meta::name(&c.object) == Some(node.as_str()) => {
                    Some(NodeEvent(c))
                }
                _ => None,
            };
            futures::future::ready(change)
        });
        ctx.add_message_stream(own);

        crate::runtime::run_interval_guarded(ctx, self.config.relist_interval, |act, ctx| {
            act.relist(ctx)
        });
        crate::runtime::run_interval_guarded(ctx, self.volumes.sync_period(), |act, _| {
            let volumes = act.volumes.clone();
            tokio::spawn(async move { volumes.sync_all().await });
        });
        if self.metrics.is_some() {
            crate::runtime::run_interval_guarded(ctx, self.config.stats_interval, |act, ctx| {
                act.sample(ctx)
            });
        }
    }

    /// Read every running container's counters off the actor (stats calls can be slow on a
    /// busy engine), then turn them into a report. A round still running skips the next.
    fn sample(&mut self, ctx: &mut Context<Self>) {
        if self.sampling {
            return;
        }
        self.sampling = true;
        let node = self.config.node_name.clone();
        let span = tracing::debug_span!("sample_stats", node = %node);
        let fut = stats::read_node(self.runtime.clone(), node).instrument(span);
        crate::runtime::spawn_guarded(self, ctx, fut, |res, act, _| {
            act.sampling = false;
            match res {
                Ok(readings) => {
                    let report =
                        act.sampler
                            .report(&act.config.node_name, readings, act.pods.cache());
                    if let Some(sink) = &act.metrics {
                        sink.report(report);
                    }
                }
                Err(e) => {
                    tracing::debug!(node = %act.config.node_name, error = %e, "stats sampling failed")
                }
            }
        });
    }

    /// Renew the Lease; write the status too when it is due (changed, differing from the
    /// API server's copy, or not written for the report interval).
    fn heartbeat(&mut self, ctx: &mut Context<Self>) {
        if self.heartbeating {
            return;
        }
        self.heartbeating = true;
        let (client, name) = (self.client.clone(), self.config.node_name.clone());
        let held = self.node.cache().get(&name);
        let conditions = node::conditions(
            held.as_deref().unwrap_or(&Value::Null),
            &meta::now_rfc3339(),
        );
        let signature = conditions_signature(&conditions);
        let due = match (&self.last_status, held.as_deref()) {
            (Some((last, at)), Some(held)) => {
                *last != signature
                    || at.elapsed() >= self.config.status_report_interval
                    || signature != signature_of(held)
            }
            // Never written by this kubelet, or the node is not (yet) in the cache.
            _ => true,
        };
        // Kubernetes renews a 40 s lease every 10 s: a lease lasts four heartbeats.
        let lease_duration = self.config.heartbeat_interval * 4;
        let fut = async move {
            heartbeat(
                &*client,
                &name,
                held.as_deref(),
                lease_duration,
                due.then_some(conditions),
            )
            .await
        };
        crate::runtime::spawn_guarded(self, ctx, fut, move |res, act, ctx| {
            act.heartbeating = false;
            match res {
                Ok(wrote_status) => {
                    if wrote_status {
                        act.last_status = Some((signature, std::time::Instant::now()));
                    }
                }
                // Someone deleted the node: register it again.
                Err(KubeletError::Heartbeat(ApiError::NotFound { .. })) => {
                    tracing::warn!(node = %act.config.node_name, "node object is gone; registering again");
                    act.last_status = None;
                    act.register(ctx);
                }
                Err(e) => {
                    tracing::warn!(node = %act.config.node_name, error = %e, "heartbeat failed")
                }
            }
        });
    }

    /// Our Node changed in the API server: write our status again if its copy of the
    /// conditions is not ours.
    fn on_node(&mut self, change: Change, ctx: &mut Context<Self>) {
        if change.kind == EventKind::Deleted || !self.registered {
            return;
        }
        let ours = self.last_status.as_ref().map(|(s, _)| s.clone());
        if ours.is_some_and(|s| s != signature_of(&change.object)) {
            tracing::info!(node = %self.config.node_name, "the API server's node status is not ours; writing it again");
            self.heartbeat(ctx);
        }
    }

    fn on_pod(&mut self, change: Change, ctx: &mut Context<Self>) {
        let obj = change.object;
        let uid = meta::uid(&obj).unwrap_or_default().to_string();
        // The same name under a new UID: the old pod is gone.
        if let Some(old_uid) = change
            .old
            .as_deref()
            .and_then(meta::uid)
            .filter(|o| *o != uid)
        {
            let old_uid = old_uid.to_string();
            self.pod_gone(&old_uid);
        }
        if change.kind == EventKind::Deleted {
            self.pod_gone(&uid);
            return;
        }
        if uid.is_empty() || self.finished.contains(&uid) {
            return;
        }
        match self.workers.get(&uid) {
            Some(w) => w.addr.do_send(UpdatePod(obj)),
            None => self.spawn_worker(uid, obj, ctx),
        }
    }

    fn pod_gone(&mut self, uid: &str) {
        self.finished.remove(uid);
        if let Some(w) = self.workers.get(uid) {
            w.addr.do_send(PodRemoved);
        }
    }

    fn spawn_worker(&mut self, uid: String, pod: Arc<Value>, ctx: &mut Context<Self>) {
        let deps = WorkerDeps {
            client: self.client.clone(),
            runtime: self.runtime.clone(),
            config: self.worker_config.clone(),
            recorder: self.recorder.clone(),
            volumes: self.volumes.clone(),
        };
        let key = key_of(&pod);
        tracing::debug!(pod = %key, uid = %uid, "starting pod worker");
        let worker = PodWorker::new(deps, pod, ctx.address().recipient());
        let addr = actix::Supervisor::start(move |_| worker);
        self.workers.insert(uid, WorkerEntry { key, addr });
    }

    fn worker_finished(&mut self, uid: String) {
        let Some(entry) = self.workers.remove(&uid) else {
            return;
        };
        let still_listed = self
            .pods
            .cache()
            .get(&entry.key)
            .is_some_and(|p| meta::uid(&p) == Some(uid.as_str()));
        if still_listed {
            self.finished.insert(uid);
        }
    }

    fn relist(&mut self, ctx: &mut Context<Self>) {
        if self.relisting {
            return;
        }
        self.relisting = true;
        let (runtime, node) = (self.runtime.clone(), self.config.node_name.clone());
        let fut = async move { runtime.list(&node).await };
        crate::runtime::spawn_guarded(self, ctx, fut, |res, act, ctx| {
            act.relisting = false;
            match res {
                Ok(list) => {
                    let _ = guard(act, ctx, |act, ctx| act.relisted(list, ctx));
                }
                Err(e) => {
                    tracing::debug!(node = %act.config.node_name, error = %e, "runtime relist failed")
                }
            }
        });
    }

    /// Tell workers whose containers changed, and remove containers nobody owns.
    fn relisted(&mut self, list: Vec<ContainerInfo>, ctx: &mut Context<Self>) {
        let mut changed: HashSet<String> = HashSet::new();
        let mut next = HashMap::with_capacity(list.len());
        for c in &list {
            let uid = c.pod_uid().unwrap_or_default().to_string();
            let sig = signature(&c.state);
            if self.seen.get(&c.id).map(|(_, s)| s) != Some(&sig) {
                changed.insert(uid.clone());
            }
            next.insert(c.id.clone(), (uid, sig));
        }
        for (id, (uid, _)) in &self.seen {
            if !next.contains_key(id) {
                changed.insert(uid.clone());
            }
        }
        self.seen = next;
        for uid in &changed {
            if let Some(w) = self.workers.get(uid) {
                w.addr.do_send(RuntimeChanged);
            }
        }
        // Only a synced pod list can tell that a pod no longer exists.
        if !self.pods.synced() {
            return;
        }
        let listed: HashSet<String> = self
            .node_pods()
            .iter()
            .filter_map(|p| meta::uid(p).map(str::to_string))
            .collect();
        let mut keep = listed.clone();
        keep.extend(self.workers.keys().cloned());
        self.volumes.remove_orphans(&keep);
        let orphans: Vec<ContainerInfo> = list
            .into_iter()
            .filter(|c| {
                let uid = c.pod_uid().unwrap_or_default();
                !self.workers.contains_key(uid)
                    && !listed.contains(uid)
                    && !self.removing.contains(&c.id)
            })
            .collect();
        if orphans.is_empty() {
            return;
        }
        tracing::info!(node = %self.config.node_name, containers = orphans.len(), "removing containers of pods that no longer exist");
        self.removing.extend(orphans.iter().map(|c| c.id.clone()));
        let runtime = self.runtime.clone();
        let ids: Vec<String> = orphans.iter().map(|c| c.id.clone()).collect();
        ctx.spawn(
            async move { remove_orphans(&*runtime, orphans).await }
                .into_actor(self)
                .map(move |_, act, _| {
                    for id in ids {
                        act.removing.remove(&id);
                    }
                }),
        );
    }
}

/// What about a container's state counts as a change worth a sync.
fn signature(state: &ContainerState) -> String {
    match state {
        ContainerState::Created => "created".into(),
        ContainerState::Running { started_at } => format!("running {started_at}"),
        ContainerState::Exited {
            exit_code,
            finished_at,
            ..
        } => format!("exited {exit_code} {finished_at}"),
        ContainerState::Unknown => "unknown".into(),
    }
}

/// Create the node, or bring an existing one up to date; then post its full status and
/// make its pod network. Returns the runtime's version and the pod network.
async fn register(
    client: &dyn ApiClient,
    runtime: &dyn Runtime,
    config: &KubeletConfig,
) -> Result<(String, Option<PodNetwork>), KubeletError> {
    let version = match runtime.version().await {
        Ok(v) => v,
        Err(e) => {
            tracing::warn!(error = %e, "runtime version unknown");
            "docker://unknown".to_string()
        }
    };
    let facts = config.facts(version.clone());
    let name = &config.node_name;
    let existing = match client.get("nodes", None, name).await {
        Ok(node) => {
            if let Some(patch) = node::reregister_patch(&node, &facts) {
                client
                    .patch("nodes", None, name, None, PatchType::Merge, patch)
                    .await
                    .map_err(KubeletError::Register)?
            } else {
                node
            }
        }
        Err(ApiError::NotFound { .. }) => {
            match client.create("nodes", None, node::new_node(&facts)).await {
                Ok(node) => node,
                // Created meanwhile (a second kubelet of the same name, or a retry): update it.
                Err(ApiError::AlreadyExists { .. }) => client
                    .get("nodes", None, name)
                    .await
                    .map_err(KubeletError::Register)?,
                Err(e) => return Err(KubeletError::Register(e)),
            }
        }
        Err(e) => return Err(KubeletError::Register(e)),
    };
    let status = node::status(&existing, &facts, &meta::now_rfc3339());
    client
        .patch(
            "nodes",
            None,
            name,
            Some("status"),
            PatchType::Strategic,
            status,
        )
        .await
        .map_err(KubeletError::Register)?;
    let network = pod_network(client, config, &existing).await?;
    if let Some(net) = &network {
        runtime.ensure_network(net).await?;
    }
    Ok((version, network))
}

/// The node's pod network from its podCIDR. When the node must have one, its allocation
/// (by the controller manager, right after the node is created) is waited for a moment
/// before registration is tried again.
async fn pod_network(
    client: &dyn ApiClient,
    config: &KubeletConfig,
    node: &Value,
) -> Result<Option<PodNetwork>, KubeletError> {
    let of = |node: &Value| {
        serde_json::from_value::<k8s_openapi::api::core::v1::Node>(node.clone())
            .ok()
            .and_then(|n| crate::controllers::node_ipam::pod_cidr(&n).and_then(|c| c.parse().ok()))
            .map(|subnet| PodNetwork::for_node(&config.node_name, subnet))
    };
    if !config.require_pod_cidr {
        return Ok(None);
    }
    if let Some(net) = of(node) {
        return Ok(Some(net));
    }
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let node = client
            .get("nodes", None, &config.node_name)
            .await
            .map_err(KubeletError::Register)?;
        if let Some(net) = of(&node) {
            return Ok(Some(net));
        }
    }
    Err(KubeletError::NoPodCidr)
}

/// What a condition says, without its timestamps: what decides whether the status changed.
type ConditionSignature = (String, String, String, String);

fn conditions_signature(conditions: &[Value]) -> Vec<ConditionSignature> {
    let field = |c: &Value, f: &str| c.get(f).and_then(Value::as_str).unwrap_or("").to_string();
    conditions
        .iter()
        .map(|c| {
            (
                field(c, "type"),
                field(c, "status"),
                field(c, "reason"),
                field(c, "message"),
            )
        })
        .collect()
}

/// The signature of the conditions the kubelet writes, as `node` holds them.
fn signature_of(node: &Value) -> Vec<ConditionSignature> {
    let held = node
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    let ours = node::conditions(&Value::Null, "");
    conditions_signature(&ours)
        .into_iter()
        .map(|(kind, ..)| {
            held.iter()
                .find(|c| c.get("type").and_then(Value::as_str) == Some(kind.as_str()))
                .map(|c| conditions_signature(std::slice::from_ref(c)).remove(0))
                .unwrap_or((kind, String::new(), String::new(), String::new()))
        })
        .collect()
}

/// Renew the node's Lease and, when given, write its conditions. Returns whether the
/// status was written.
async fn heartbeat(
    client: &dyn ApiClient,
    name: &str,
    held: Option<&Value>,
    lease_duration: Duration,
    conditions: Option<Vec<Value>>,
) -> Result<bool, KubeletError> {
    renew_lease(client, held, name, lease_duration).await?;
    let Some(conditions) = conditions else {
        return Ok(false);
    };
    client
        .patch(
            "nodes",
            None,
            name,
            Some("status"),
            PatchType::Strategic,
            json!({"status": {"conditions": conditions}}),
        )
        .await
        .map_err(KubeletError::Heartbeat)?;
    Ok(true)
}

/// Renew (or create) the node's Lease in `kube-node-lease`, owned by its Node so it goes
/// with it. A Lease that is gone is made again only while the Node exists (a deleted node
/// is registered again first).
async fn renew_lease(
    client: &dyn ApiClient,
    held: Option<&Value>,
    name: &str,
    duration: Duration,
) -> Result<(), KubeletError> {
    let spec = node::lease_spec(name, duration, chrono::Utc::now());
    match client
        .patch(
            "leases",
            Some(NODE_LEASE_NAMESPACE),
            name,
            None,
            PatchType::Merge,
            json!({ "spec": spec }),
        )
        .await
    {
        Err(ApiError::NotFound { .. }) => {
            let current = match held {
                Some(n) => n.clone(),
                None => client
                    .get("nodes", None, name)
                    .await
                    .map_err(KubeletError::Heartbeat)?,
            };
            client
                .create(
                    "leases",
                    Some(NODE_LEASE_NAMESPACE),
                    node::lease(&current, name, spec),
                )
                .await
                .map(|_| ())
                .map_err(KubeletError::Lease)
        }
        other => other.map(|_| ()).map_err(KubeletError::Lease),
    }
}

/// Stop and remove containers of pods that no longer exist: app containers first, then
/// the sandboxes whose namespaces they used.
async fn remove_orphans(runtime: &dyn Runtime, orphans: Vec<ContainerInfo>) {
    let (sandboxes, apps): (Vec<_>, Vec<_>) =
        orphans.into_iter().partition(ContainerInfo::is_sandbox);
    let stops = apps
        .iter()
        .filter(|c| matches!(c.state, ContainerState::Running { .. }))
        .map(|c| runtime.stop(&c.id, ORPHAN_GRACE));
    futures::future::join_all(stops).await;
    for c in apps.iter().chain(&sandboxes) {
        if matches!(c.state, ContainerState::Running { .. }) && c.is_sandbox() {
            let _ = runtime.stop(&c.id, Duration::ZERO).await;
        }
        if let Err(e) = runtime.remove(&c.id).await {
            tracing::debug!(container = %c.id, error = %e, "orphan not removed");
        }
    }
}

impl Actor for Kubelet {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        tracing::info!(node = %self.config.node_name, wait = ?self.resume_in, "kubelet starting");
        // After failures in a row, a restarted kubelet waits before it registers and
        // syncs pods again, so one that panics at every start does not spin.
        if self.resume_in.is_zero() {
            self.register(ctx);
        } else {
            crate::runtime::run_later_guarded(ctx, self.resume_in, |act, ctx| act.register(ctx));
        }
    }
}

impl Supervised for Kubelet {
    fn restarting(&mut self, _ctx: &mut Self::Context) {
        crate::runtime::record_restart("Kubelet");
        self.resume_in = self.restart_backoff.on_restart(std::time::Instant::now());
        // The workers go (leaving their containers running); the fresh list of pods
        // starts new ones, which adopt those containers.
        for w in self.workers.values() {
            w.addr.do_send(Shutdown);
        }
        self.workers.clear();
        self.finished.clear();
        self.seen.clear();
        self.removing.clear();
        self.registered = false;
        self.relisting = false;
        self.heartbeating = false;
        self.last_status = None;
        self.sampling = false;
        self.sampler = Sampler::default();
    }
}

impl Handler<PodEvent> for Kubelet {
    type Result = ();

    fn handle(&mut self, msg: PodEvent, ctx: &mut Self::Context) {
        let _ = guard(self, ctx, |act, ctx| act.on_pod(msg.0, ctx));
    }
}

impl Handler<NodeEvent> for Kubelet {
    type Result = ();

    fn handle(&mut self, msg: NodeEvent, ctx: &mut Self::Context) {
        let _ = guard(self, ctx, |act, ctx| act.on_node(msg.0, ctx));
    }
}

impl Handler<WorkerFinished> for Kubelet {
    type Result = ();

    fn handle(&mut self, msg: WorkerFinished, ctx: &mut Self::Context) {
        let _ = guard(self, ctx, |act, _| act.worker_finished(msg.uid));
    }
}

impl Handler<ListPodWorkers> for Kubelet {
    type Result = Vec<String>;

    fn handle(&mut self, _: ListPodWorkers, _: &mut Self::Context) -> Vec<String> {
        self.workers.keys().cloned().collect()
    }
}

impl Handler<InjectPanic> for Kubelet {
    type Result = ();

    fn handle(&mut self, _: InjectPanic, ctx: &mut Self::Context) {
        let _ = guard(self, ctx, |_, _| panic!("injected kubelet panic"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_container_state_change_changes_its_signature() {
        let running = ContainerState::Running {
            started_at: "T0".into(),
        };
        let exited = ContainerState::Exited {
            exit_code: 1,
            reason: "Error".into(),
            started_at: "T0".into(),
            finished_at: "T1".into(),
        };
        assert_ne!(signature(&running), signature(&exited));
        assert_eq!(signature(&running), signature(&running.clone()));
    }

    #[test]
    fn workers_use_the_runtimes_scheme_for_container_ids() {
        let cfg = KubeletConfig::default();
        assert_eq!(cfg.worker_config("docker", None).id_scheme, "docker");
        assert_eq!(cfg.worker_config("docker", None).host_ip, "127.0.0.1");
    }
}
