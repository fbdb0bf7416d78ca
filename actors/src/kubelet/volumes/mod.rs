//! Pod volumes on the node, laid out as the kubelet lays them out:
//! `<node data dir>/pods/<uid>/volumes/<plugin>/<name>` (plugin `kubernetes.io~empty-dir`,
//! `kubernetes.io~configmap`, ...). A [`VolumeManager`] per kubelet sets a pod's volumes up
//! before its containers start, turns each container's `volumeMounts` into binds, keeps
//! the written volumes (configMap, secret, downwardAPI, projected) up to date in running
//! pods with a periodic resync, and removes everything with the pod.
//!
//! Each volume source is one [`VolumePlugin`] in a file of its own; [`plugin_for`] picks
//! it. A source that needs the API (a PersistentVolumeClaim resolved to its bound
//! PersistentVolume's path) is one more plugin whose `set_up` returns that path
//! ([`persistent_volume_claim`]).

pub mod atomic_writer;
pub mod config_map;
pub mod downward_api;
pub mod empty_dir;
pub mod host_path;
pub mod mounts;
pub mod persistent_volume_claim;
pub mod projected;
pub mod secret;
pub mod token;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Pod, Volume};
use serde_json::Value;

use super::env::{self, Allocatable, EnvError, Resolved};
use super::runtime::Mount;
use super::spec::Placement;
use crate::api::ApiError;
use crate::client::ApiClient;
use crate::runtime::Recorder;
use atomic_writer::WriteError;
use token::{TokenCache, TokenSource};

/// Why a volume could not be set up. Shown after `MountVolume.SetUp failed for volume
/// "<name>" : `, in the kubelet's words.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("configmap \"{0}\" not found")]
    ConfigMapNotFound(String),
    #[error("secret \"{0}\" not found")]
    SecretNotFound(String),
    #[error("configmap references non-existent config key: {0}")]
    MissingConfigMapKey(String),
    #[error("references non-existent secret key: {0}")]
    MissingSecretKey(String),
    #[error("hostPath type check failed: {path} is not a {what}")]
    HostPathType { path: String, what: &'static str },
    #[error("{0} is an invalid volume type")]
    InvalidHostPathType(String),
    #[error("container {0} not found")]
    ContainerNotFound(String),
    #[error("failed to fetch token: {0}")]
    Token(String),
    #[error("{0}")]
    Field(#[from] EnvError),
    #[error("mount of tmpfs at {path} failed: {detail}")]
    Tmpfs { path: String, detail: String },
    #[error("{0}")]
    Write(#[from] WriteError),
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Api(#[from] ApiError),
    /// A claim that does not (yet) resolve to a bound volume, in the kubelet's words.
    #[error("{0}")]
    Claim(String),
    #[error("volume source is not supported on this node")]
    Unsupported,
}

impl VolumeError {
    pub(crate) fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.display().to_string();
        move |source| VolumeError::Io { what, path, source }
    }
}

/// Why a container cannot be created now; `reason` is its waiting reason.
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    #[error("{0}")]
    Env(#[from] EnvError),
    #[error("MountVolume.SetUp failed for volume \"{volume}\" : {error}")]
    Mount {
        volume: String,
        error: Box<VolumeError>,
    },
    #[error("{0}")]
    Mounts(#[from] mounts::MountError),
    #[error("the pod does not decode: {0}")]
    Decode(String),
}

impl PrepareError {
    /// The container's waiting reason while this lasts: a volume that cannot be set up
    /// keeps the pod `ContainerCreating`; everything else is the container's configuration.
    pub fn reason(&self) -> &'static str {
        match self {
            PrepareError::Mount { .. } => "ContainerCreating",
            _ => "CreateContainerConfigError",
        }
    }

    /// The event the kubelet records for it.
    fn event(&self) -> (&'static str, String) {
        match self {
            PrepareError::Mount { .. } => ("FailedMount", self.to_string()),
            _ => ("Failed", format!("Error: {self}")),
        }
    }
}

/// What a container gets from the manager: its environment and its mounts.
#[derive(Debug, Clone, Default)]
pub struct Prepared {
    pub env: Resolved,
    pub mounts: Vec<Mount>,
}

/// What a plugin may read while setting a volume up.
pub struct SetUpContext<'a> {
    pub client: &'a dyn ApiClient,
    pub pod: &'a Pod,
    pub at: Placement<'a>,
    pub allocatable: &'a Allocatable,
    pub tokens: &'a TokenCache,
    pub token_source: &'a dyn TokenSource,
}

impl SetUpContext<'_> {
    pub fn namespace(&self) -> &str {
        self.pod.metadata.namespace.as_deref().unwrap_or_default()
    }

    pub fn uid(&self) -> &str {
        self.pod.metadata.uid.as_deref().unwrap_or_default()
    }
}

/// One volume source.
#[async_trait::async_trait]
pub trait VolumePlugin: Send + Sync {
    /// The directory under `volumes/` its volumes live in (`kubernetes.io~empty-dir`), or
    /// `None` for a source that only points at a path elsewhere (hostPath).
    fn plugin_dir(&self) -> Option<&'static str>;

    /// Make the volume present (idempotent: it runs before every container start and on
    /// every resync) and return the host path to bind. `dir` is the volume's own
    /// directory under the pod.
    async fn set_up(&self, ctx: &SetUpContext<'_>, dir: &Path) -> Result<PathBuf, VolumeError>;

    /// Whether the resync rewrites it (content that follows API objects).
    fn refreshes(&self) -> bool {
        false
    }

    /// Whether containers always get it read-only (written volumes are).
    fn read_only(&self) -> bool {
        false
    }

    /// Undo what `set_up` did besides files (a tmpfs mount), before the pod's directory
    /// is removed.
    fn tear_down(&self, _dir: &Path) -> Result<(), VolumeError> {
        Ok(())
    }
}

/// The plugin for a volume's source. Admission refuses every source not listed here.
pub fn plugin_for(
    volume: &Volume,
    pod: &Pod,
    allocatable: &Allocatable,
) -> Option<Box<dyn VolumePlugin>> {
    if let Some(s) = &volume.empty_dir {
        return Some(Box::new(empty_dir::EmptyDir::new(s, pod, allocatable)));
    }
    if let Some(s) = &volume.host_path {
        return Some(Box::new(host_path::HostPath(s.clone())));
    }
    if let Some(s) = &volume.config_map {
        return Some(Box::new(config_map::ConfigMapVolume(s.clone())));
    }
    if let Some(s) = &volume.secret {
        return Some(Box::new(secret::SecretVolume(s.clone())));
    }
    if let Some(s) = &volume.downward_api {
        return Some(Box::new(downward_api::DownwardApiVolume(s.clone())));
    }
    if let Some(s) = &volume.projected {
        return Some(Box::new(projected::ProjectedVolume(s.clone())));
    }
    if let Some(s) = &volume.persistent_volume_claim {
        return Some(Box::new(persistent_volume_claim::ClaimVolume(s.clone())));
    }
    None
}

/// The node-wide settings of the manager.
#[derive(Debug, Clone)]
pub struct VolumeConfig {
    /// The node's data directory (the kubelet's `--root-dir`).
    pub root: PathBuf,
    pub allocatable: Allocatable,
    /// How often written volumes of running pods are brought up to date.
    pub sync_period: Duration,
}

impl Default for VolumeConfig {
    fn default() -> Self {
        VolumeConfig {
            root: std::env::temp_dir().join(format!("skiff-kubelet-{}", std::process::id())),
            allocatable: Allocatable::new(),
            sync_period: Duration::from_secs(10),
        }
    }
}

/// The node's allocatable cpu and memory (as configured) and ephemeral storage (the size
/// of the filesystem holding the node's data directory).
pub fn node_allocatable(cpu: &str, memory: &str, root: &Path) -> Allocatable {
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    let mut out = Allocatable::from([
        ("cpu".to_string(), Quantity(cpu.to_string())),
        ("memory".to_string(), Quantity(memory.to_string())),
    ]);
    if let Some(bytes) = filesystem_size(root) {
        out.insert("ephemeral-storage".into(), Quantity(bytes.to_string()));
    }
    out
}

/// The size of the filesystem `path` is on (its nearest existing ancestor's).
fn filesystem_size(path: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let existing = path.ancestors().find(|p| p.exists())?;
    let c = std::ffi::CString::new(existing.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs writes into the zeroed struct we own; the path is NUL-terminated.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    (rc == 0).then(|| st.f_blocks as u64 * st.f_frsize as u64)
}

/// A pod whose volumes are set up.
#[derive(Debug, Clone)]
struct PodEntry {
    pod: Arc<Value>,
    pod_ip: Option<String>,
}

/// Sets up, refreshes and removes the volumes of one node's pods.
pub struct VolumeManager {
    config: VolumeConfig,
    client: Arc<dyn ApiClient>,
    recorder: Arc<Recorder>,
    host_ip: String,
    tokens: TokenCache,
    token_source: Arc<dyn TokenSource>,
    pods: Mutex<HashMap<String, PodEntry>>,
    syncing: std::sync::atomic::AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn decode<T: serde::de::DeserializeOwned>(v: &Value) -> Result<T, PrepareError> {
    serde_json::from_value(v.clone()).map_err(|e| PrepareError::Decode(e.to_string()))
}

impl VolumeManager {
    pub fn new(
        config: VolumeConfig,
        client: Arc<dyn ApiClient>,
        recorder: Arc<Recorder>,
        host_ip: impl Into<String>,
    ) -> Self {
        let token_source: Arc<dyn TokenSource> = Arc::new(token::ApiTokenSource(client.clone()));
        VolumeManager {
            config,
            client,
            recorder,
            host_ip: host_ip.into(),
            tokens: TokenCache::default(),
            token_source,
            pods: Mutex::new(HashMap::new()),
            syncing: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Tokens from elsewhere than the API (tests).
    pub fn with_token_source(mut self, source: Arc<dyn TokenSource>) -> Self {
        self.token_source = source;
        self
    }

    pub fn sync_period(&self) -> Duration {
        self.config.sync_period
    }

    /// `<root>/pods/<uid>`.
    pub fn pod_dir(&self, uid: &str) -> PathBuf {
        self.config.root.join("pods").join(uid)
    }

    fn volume_dir(&self, uid: &str, plugin: &str, name: &str) -> PathBuf {
        self.pod_dir(uid).join("volumes").join(plugin).join(name)
    }

    fn event(&self, pod: &Value, kind: &'static str, reason: &'static str, message: String) {
        let (recorder, pod) = (self.recorder.clone(), pod.clone());
        tokio::spawn(async move { recorder.record(&pod, kind, reason, &message).await });
    }

    /// Set every volume of the pod up, returning each one's host path by name.
    async fn set_up_all(&self, pod: &Pod, at: Placement<'_>) -> Result<VolumePaths, PrepareError> {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let ctx = SetUpContext {
            client: &*self.client,
            pod,
            at,
            allocatable: &self.config.allocatable,
            tokens: &self.tokens,
            token_source: &*self.token_source,
        };
        let mut paths = HashMap::new();
        for volume in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
            let failed = |error| PrepareError::Mount {
                volume: volume.name.clone(),
                error: Box::new(error),
            };
            let plugin = plugin_for(volume, pod, &self.config.allocatable)
                .ok_or_else(|| failed(VolumeError::Unsupported))?;
            let dir = match plugin.plugin_dir() {
                Some(p) => self.volume_dir(&uid, p, &volume.name),
                None => PathBuf::new(),
            };
            let path = plugin.set_up(&ctx, &dir).await.map_err(failed)?;
            paths.insert(volume.name.clone(), (path, plugin.read_only()));
        }
        Ok(paths)
    }

    /// Everything `container` needs before it is created: its environment (ConfigMaps and
    /// Secrets read now), the pod's volumes set up, and its mounts. Failures are recorded
    /// as the kubelet records them.
    pub async fn prepare(
        &self,
        pod_value: &Arc<Value>,
        container_value: &Value,
        at: Placement<'_>,
    ) -> Result<Prepared, PrepareError> {
        let result = self.try_prepare(pod_value, container_value, at).await;
        if let Err(e) = &result {
            let (reason, message) = e.event();
            self.event(pod_value, "Warning", reason, message);
        }
        result
    }

    async fn try_prepare(
        &self,
        pod_value: &Arc<Value>,
        container_value: &Value,
        at: Placement<'_>,
    ) -> Result<Prepared, PrepareError> {
        let pod: Pod = decode(pod_value)?;
        let container: Container = decode(container_value)?;
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let sources = env::fetch(&*self.client, &ns, &container).await?;
        let env = env::resolve(&pod, &container, &sources, at, &self.config.allocatable)?;
        for skipped in &env.skipped {
            self.event(
                pod_value,
                "Warning",
                "InvalidEnvironmentVariableNames",
                skipped.message(),
            );
        }
        let has_volumes = pod
            .spec
            .as_ref()
            .is_some_and(|s| s.volumes.as_ref().is_some_and(|v| !v.is_empty()));
        let mut out = Prepared {
            env,
            mounts: Vec::new(),
        };
        if !has_volumes {
            return Ok(out);
        }
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        lock(&self.pods).insert(
            uid,
            PodEntry {
                pod: pod_value.clone(),
                pod_ip: at.pod_ip.map(str::to_string),
            },
        );
        let paths = self.set_up_all(&pod, at).await?;
        out.mounts = mounts::for_container(&container, &paths, &out.env)?;
        Ok(out)
    }

    /// Rewrite the written volumes of every pod set up here (the kubelet's periodic sync
    /// of configMap, secret, downwardAPI and projected volumes). One round at a time.
    pub async fn sync_all(&self) {
        use std::sync::atomic::Ordering;
        if self.syncing.swap(true, Ordering::AcqRel) {
            return;
        }
        let entries: Vec<(String, PodEntry)> = lock(&self.pods)
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (uid, entry) in entries {
            self.sync_pod(&uid, entry).await;
        }
        self.syncing.store(false, Ordering::Release);
    }

    async fn sync_pod(&self, uid: &str, entry: PodEntry) {
        let (ns, name) = (
            crate::api::meta::namespace(&entry.pod)
                .unwrap_or_default()
                .to_string(),
            crate::api::meta::name(&entry.pod)
                .unwrap_or_default()
                .to_string(),
        );
        // The pod as it is now: labels and annotations may have changed.
        let current = match self.client.get("pods", Some(&ns), &name).await {
            Ok(p) if crate::api::meta::uid(&p) == Some(uid) => Arc::new(p),
            Ok(_) | Err(ApiError::NotFound { .. }) => return,
            Err(_) => entry.pod.clone(),
        };
        let Ok(pod) = decode::<Pod>(&current) else {
            return;
        };
        let at = Placement {
            pod_ip: entry.pod_ip.as_deref(),
            host_ip: &self.host_ip,
            services: &[],
        };
        let ctx = SetUpContext {
            client: &*self.client,
            pod: &pod,
            at,
            allocatable: &self.config.allocatable,
            tokens: &self.tokens,
            token_source: &*self.token_source,
        };
        for volume in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
            let Some(plugin) = plugin_for(volume, &pod, &self.config.allocatable) else {
                continue;
            };
            let (true, Some(dir)) = (plugin.refreshes(), plugin.plugin_dir()) else {
                continue;
            };
            let dir = self.volume_dir(uid, dir, &volume.name);
            if let Err(e) = plugin.set_up(&ctx, &dir).await {
                tracing::warn!(pod = %format!("{ns}/{name}"), volume = %volume.name, error = %e, "volume resync failed");
                self.event(
                    &current,
                    "Warning",
                    "FailedMount",
                    format!(
                        "MountVolume.SetUp failed for volume \"{}\" : {e}",
                        volume.name
                    ),
                );
            }
        }
        if let Some(e) = lock(&self.pods).get_mut(uid) {
            e.pod = current;
        }
    }

    /// Unmount and remove a pod's volumes (its containers are gone).
    pub fn tear_down(&self, pod_value: &Value) {
        let uid = crate::api::meta::uid(pod_value)
            .unwrap_or_default()
            .to_string();
        lock(&self.pods).remove(&uid);
        self.tokens.forget(&uid);
        if let Ok(pod) = serde_json::from_value::<Pod>(pod_value.clone()) {
            for volume in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
                if let Some(plugin) = plugin_for(volume, &pod, &self.config.allocatable) {
                    if let Some(dir) = plugin.plugin_dir() {
                        let dir = self.volume_dir(&uid, dir, &volume.name);
                        if let Err(e) = plugin.tear_down(&dir) {
                            tracing::warn!(volume = %volume.name, error = %e, "volume tear-down failed");
                        }
                    }
                }
            }
        }
        self.remove_pod_dir(&uid);
    }

    fn remove_pod_dir(&self, uid: &str) {
        if uid.is_empty() {
            return;
        }
        let dir = self.pod_dir(uid);
        // A tmpfs still mounted (a kubelet that died before tearing down) goes first.
        empty_dir::unmount_all_under(&dir);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => tracing::debug!(uid, "pod volumes removed"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(uid, error = %e, "removing the pod's volumes failed"),
        }
    }

    /// Remove the directories of pods that are neither running here nor known to the API
    /// (the kubelet's `cleanupOrphanedPodDirs`).
    pub fn remove_orphans(&self, keep: &HashSet<String>) {
        let Ok(entries) = std::fs::read_dir(self.config.root.join("pods")) else {
            return;
        };
        let active: HashSet<String> = lock(&self.pods).keys().cloned().collect();
        for entry in entries.flatten() {
            let uid = entry.file_name().to_string_lossy().into_owned();
            if !keep.contains(&uid) && !active.contains(&uid) {
                tracing::info!(uid = %uid, "removing volumes of a pod that no longer exists");
                self.remove_pod_dir(&uid);
            }
        }
    }
}

/// A volume's host paths by name, and whether its plugin forces read-only.
pub type VolumePaths = HashMap<String, (PathBuf, bool)>;

#[cfg(test)]
mod tests {
    use super::super::fake::FakeClient;
    use super::*;
    use serde_json::json;

    fn manager(client: Arc<FakeClient>, root: &Path) -> VolumeManager {
        let recorder = Arc::new(Recorder::new(client.clone(), "kubelet"));
        let config = VolumeConfig {
            root: root.to_path_buf(),
            ..VolumeConfig::default()
        };
        VolumeManager::new(config, client, recorder, "192.168.0.9")
    }

    const AT: Placement<'static> = Placement {
        pod_ip: Some("10.0.0.5"),
        host_ip: "192.168.0.9",
        services: &[],
    };

    fn pod(volumes: Value, container: Value) -> Arc<Value> {
        Arc::new(
            json!({"metadata": {"name": "p", "namespace": "ns", "uid": "u1"},
            "spec": {"volumes": volumes, "containers": [container]}}),
        )
    }

    #[tokio::test]
    async fn a_missing_secret_is_a_create_container_config_error_in_the_kubelets_words() {
        let dir = tempfile::tempdir().expect("tempdir");
        let client = Arc::new(FakeClient::default());
        let m = manager(client, dir.path());
        let c = json!({"name": "app", "env": [
            {"name": "PW", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]});
        let err = m
            .prepare(&pod(json!([]), c.clone()), &c, AT)
            .await
            .expect_err("no secret");
        assert_eq!(err.reason(), "CreateContainerConfigError");
        assert_eq!(err.to_string(), "secret \"s\" not found");
    }

    #[tokio::test]
    async fn volumes_are_laid_out_under_the_pod_mounted_and_removed_with_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let client = Arc::new(FakeClient::default());
        client.put(
            json!({"metadata": {"name": "cfg", "namespace": "ns"}, "data": {"color": "blue"}}),
        );
        let m = manager(client, dir.path());
        let host = dir.path().join("host");
        let c = json!({"name": "app", "volumeMounts": [
            {"name": "scratch", "mountPath": "/scratch"},
            {"name": "cfg", "mountPath": "/etc/cfg"},
            {"name": "host", "mountPath": "/host", "readOnly": true}]});
        let p = pod(
            json!([{"name": "scratch", "emptyDir": {}},
                   {"name": "cfg", "configMap": {"name": "cfg"}},
                   {"name": "host", "hostPath": {"path": host, "type": "DirectoryOrCreate"}}]),
            c.clone(),
        );
        let prepared = m.prepare(&p, &c, AT).await.expect("prepared");
        let volumes = dir.path().join("pods/u1/volumes");
        let scratch = volumes.join("kubernetes.io~empty-dir/scratch");
        assert!(scratch.is_dir());
        assert_eq!(
            std::fs::read_to_string(volumes.join("kubernetes.io~configmap/cfg/color"))
                .expect("cfg"),
            "blue"
        );
        assert!(host.is_dir(), "DirectoryOrCreate made it");
        let binds: Vec<(PathBuf, &str, bool)> = prepared
            .mounts
            .iter()
            .map(|m| (m.host_path.clone(), m.container_path.as_str(), m.read_only))
            .collect();
        assert_eq!(
            binds,
            vec![
                (scratch, "/scratch", false),
                (
                    volumes.join("kubernetes.io~configmap/cfg"),
                    "/etc/cfg",
                    true
                ),
                (host.clone(), "/host", true),
            ]
        );

        // A pod directory nobody knows is swept; a known one stays.
        let stray = dir.path().join("pods/gone");
        std::fs::create_dir_all(&stray).expect("mkdir");
        m.remove_orphans(&HashSet::new());
        assert!(!stray.exists());
        assert!(volumes.exists(), "the pod is set up here");

        m.tear_down(&p);
        assert!(!dir.path().join("pods/u1").exists());
        assert!(host.is_dir(), "a hostPath is the node's, not the pod's");
    }
}
