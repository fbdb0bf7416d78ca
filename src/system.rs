//! Building the actor tree for one cluster: the store on its own arbiter, the gateway in
//! front of it, then bootstrap (system namespaces, manifests, kubeconfig).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use actix::prelude::*;
use serde_json::{json, Value};
use std::time::Duration;

use skiff_actors::api::{meta, resources, ApiError};
use skiff_actors::client::{ApiClient, LocalClient};
use skiff_actors::controllers::manager::{ControllerManager, ControllerManagerConfig};
use skiff_actors::gateway::logs::NodeRuntimes;
use skiff_actors::gateway::objects::{PatchType, WriteOptions};
use skiff_actors::gateway::routing::Target;
use skiff_actors::gateway::{self, GatewayActor, GatewayConfig, Objects};
use skiff_actors::metrics::Metrics;
use skiff_actors::scheduler::{SchedulerActor, SchedulerConfig};
use skiff_actors::store::{self, StoreConfig, StoreHandle};

use crate::config::Config;

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
    #[error("bootstrap failed: {0}")]
    Bootstrap(String),
    #[error("manifest {file}: {detail}")]
    Manifest { file: PathBuf, detail: String },
    #[error("cannot write {path}")]
    Kubeconfig {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A running cluster.
pub struct System {
    pub addr: SocketAddr,
    pub store: StoreHandle,
    pub data_dir: PathBuf,
    pub kubeconfig: PathBuf,
    gateway: Addr<GatewayActor>,
    store_arbiter: Arbiter,
    control_arbiter: Arbiter,
    _controllers: Addr<ControllerManager>,
    pub scheduler: Option<Addr<SchedulerActor>>,
}

impl System {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stop serving, then stop the store so its RocksDB is closed and can be reopened.
    pub async fn shutdown(self) {
        let _ = self.gateway.send(gateway::Shutdown).await;
        self.control_arbiter.stop();
        let _ = self.control_arbiter.join();
        drop(self.store);
        self.store_arbiter.stop();
        let _ = self.store_arbiter.join();
    }
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
    let store_cfg = StoreConfig {
        path: data_dir.join("store"),
        history: cfg.store.history,
        watch_buffer: cfg.store.watch_buffer,
    };
    let store = match store::start(store_cfg, metrics.clone(), &store_arbiter.handle()) {
        Ok(s) => s,
        Err(e) => {
            store_arbiter.stop();
            let _ = store_arbiter.join();
            return Err(e.into());
        }
    };
    let objects = Objects::new(store.clone());
    bootstrap(&objects).await?;
    if let Some(dir) = cfg.manifests_dir() {
        apply_manifests(&objects, &dir).await?;
    }
    let gw_cfg = GatewayConfig {
        listen: cfg.gateway.listen.clone(),
        max_body_bytes: cfg.gateway.max_body_bytes,
        watch_timeout: cfg.watch_timeout(),
        workers: cfg.gateway.workers,
    };
    let runtimes = NodeRuntimes::default();
    let gateway = gateway::start(&gw_cfg, objects.clone(), runtimes.clone(), metrics)?;
    let addr = gateway
        .send(GetAddr)
        .await
        .map_err(|e| SystemError::Bootstrap(e.to_string()))?;
    // Controllers and the scheduler share an arbiter of their own, away from the HTTP
    // workers and the store, and reach the store only through the API client.
    let control_arbiter = Arbiter::new();
    let client: Arc<dyn ApiClient> = Arc::new(LocalClient::new(objects.clone()));
    let cm_cfg = ControllerManagerConfig {
        node_grace_period: Duration::from_secs(cfg.controllers.node_grace_period_seconds),
        node_eviction_timeout: Duration::from_secs(cfg.controllers.node_eviction_timeout_seconds),
        enabled: cfg.controllers.enabled.clone(),
    };
    let scheduler_client = client.clone();
    let controllers = ControllerManager::start_in_arbiter(&control_arbiter.handle(), move |_| {
        ControllerManager::new(client, cm_cfg)
    });
    let scheduler = cfg.scheduler.enabled.then(|| {
        Supervisor::start_in_arbiter(&control_arbiter.handle(), move |_| {
            SchedulerActor::new(scheduler_client, SchedulerConfig::default())
        })
    });
    let kubeconfig = data_dir.join("kubeconfig");
    write_kubeconfig(&kubeconfig, &cfg.cluster.name, addr)?;
    Ok(System {
        addr,
        store,
        data_dir,
        kubeconfig,
        gateway,
        store_arbiter,
        control_arbiter,
        _controllers: controllers,
        scheduler,
    })
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

/// The namespaces every Kubernetes cluster has from its first start.
async fn bootstrap(objects: &Objects) -> Result<(), SystemError> {
    for ns in gateway::objects::SYSTEM_NAMESPACES {
        let doc = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {
            "name": ns, "labels": {"kubernetes.io/metadata.name": ns}}});
        ensure(objects, doc)
            .await
            .map_err(|e| SystemError::Bootstrap(format!("namespace {ns}: {e}")))?;
    }
    Ok(())
}

/// Create the object if it is missing, otherwise merge the declared fields into it (a
/// no-op when nothing changed), so applying at every start is idempotent.
async fn ensure(objects: &Objects, doc: Value) -> Result<(), ApiError> {
    let kind = doc.get("kind").and_then(Value::as_str).unwrap_or_default();
    let info = resources::by_kind(kind)
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

fn write_kubeconfig(path: &Path, cluster: &str, addr: SocketAddr) -> Result<(), SystemError> {
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: {cluster}\n  cluster:\n    server: http://{addr}\nusers:\n- name: {cluster}-admin\n  user: {{}}\ncontexts:\n- name: {cluster}\n  context:\n    cluster: {cluster}\n    user: {cluster}-admin\n    namespace: default\ncurrent-context: {cluster}\n"
    );
    std::fs::write(path, text).map_err(|source| SystemError::Kubeconfig {
        path: path.to_path_buf(),
        source,
    })
}
