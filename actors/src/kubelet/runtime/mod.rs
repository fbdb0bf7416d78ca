//! The container runtime boundary: what the kubelet and its pod workers ask of an engine.
//! `docker` drives the real Docker Engine through bollard; `sim` keeps containers in memory
//! for hollow nodes (scale tests with thousands of nodes and no containers).

pub mod docker;
pub mod images;
pub mod sim;

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use futures::stream::BoxStream;

/// Labels put on every container skiff creates, so a restarted kubelet can find (adopt)
/// what runs for its pods and remove what belongs to pods that no longer exist.
pub const LABEL_POD_UID: &str = "io.skiff.pod.uid";
pub const LABEL_POD_NAME: &str = "io.skiff.pod.name";
pub const LABEL_POD_NAMESPACE: &str = "io.skiff.pod.namespace";
pub const LABEL_NODE: &str = "io.skiff.node";
/// The container's name in the pod spec; `POD` for the pause (sandbox) container.
pub const LABEL_CONTAINER: &str = "io.skiff.container.name";
/// Restart count of this container instance (0 for the first).
pub const LABEL_ATTEMPT: &str = "io.skiff.container.attempt";
pub const SANDBOX_CONTAINER: &str = "POD";

#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum RuntimeError {
    /// The image is not present and the pull policy forbids pulling (`ErrImageNeverPull`).
    #[error("Container image \"{0}\" is not present with pull policy of Never")]
    ImageNeverPull(String),
    /// Pulling failed (no registry is reachable here) (`ErrImagePull`).
    #[error("failed to pull image \"{image}\": {detail}")]
    ImagePull { image: String, detail: String },
    #[error("container {0} not found")]
    NotFound(String),
    #[error("runtime unavailable: {0}")]
    Unavailable(String),
    #[error("runtime operation failed: {0}")]
    Failed(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullPolicy {
    Always,
    IfNotPresent,
    Never,
}

impl PullPolicy {
    pub fn parse(s: Option<&str>) -> PullPolicy {
        match s {
            Some("Always") => PullPolicy::Always,
            Some("Never") => PullPolicy::Never,
            _ => PullPolicy::IfNotPresent,
        }
    }
}

/// Identity of a pod's containers, carried as labels.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodRef {
    pub uid: String,
    pub name: String,
    pub namespace: String,
    pub node: String,
}

/// The pause container holding a pod's network namespace.
#[derive(Debug, Clone, Default)]
pub struct SandboxSpec {
    pub pod: PodRef,
    pub hostname: String,
    /// (container port, host port, protocol "tcp"/"udp") published on the host.
    pub host_ports: Vec<(u16, u16, String)>,
    /// The pod's host namespaces (`hostNetwork`, `hostPID`, `hostIPC`).
    pub namespaces: HostNamespaces,
    /// Namespaced kernel parameters (`securityContext.sysctls`), set in the sandbox whose
    /// network and IPC namespaces the containers join.
    pub sysctls: Vec<(String, String)>,
    /// The node's pod network the sandbox is attached to (its address from the node's
    /// podCIDR); `None`: the runtime's default network.
    pub network: Option<PodNetwork>,
}

/// A node's pod network: a bridge of its own holding the node's block of the cluster's
/// pod range, the bridge itself on the block's first address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodNetwork {
    /// The runtime's name for it (`skiff-<node>`).
    pub name: String,
    /// The node's podCIDR.
    pub subnet: ipnet::Ipv4Net,
    pub node: String,
}

impl PodNetwork {
    pub fn for_node(node: &str, subnet: ipnet::Ipv4Net) -> Self {
        PodNetwork {
            name: format!("skiff-{node}"),
            subnet: subnet.trunc(),
            node: node.to_string(),
        }
    }

    /// The bridge's address: the pods' gateway.
    pub fn gateway(&self) -> std::net::Ipv4Addr {
        crate::controllers::node_ipam::gateway_of(&self.subnet)
    }
}

/// Which of the host's namespaces a pod shares, and whether its containers share one
/// process namespace (`shareProcessNamespace`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HostNamespaces {
    pub network: bool,
    pub pid: bool,
    pub ipc: bool,
    pub share_pid: bool,
}

/// Who a container's process runs as and with which privileges (its effective
/// `securityContext`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Security {
    /// `uid`, `uid:gid` or `user:gid`; `None` keeps the image's user.
    pub user: Option<String>,
    /// Supplemental groups (`supplementalGroups` and `fsGroup`).
    pub group_add: Vec<String>,
    pub privileged: bool,
    pub read_only_rootfs: bool,
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    /// `allowPrivilegeEscalation: false`.
    pub no_new_privileges: bool,
    /// `seccomp=unconfined`, `apparmor=unconfined`.
    pub security_opt: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct SandboxInfo {
    pub id: String,
    /// The pod IP: the pause container's address.
    pub ip: String,
}

/// One app container, joined to its pod's sandbox network namespace.
#[derive(Debug, Clone, Default)]
pub struct ContainerSpec {
    pub pod: Option<PodRef>,
    pub name: String,
    pub image: String,
    /// Overrides the image's entrypoint when non-empty (Kubernetes `command`).
    pub command: Vec<String>,
    /// Overrides the image's cmd when non-empty (Kubernetes `args`).
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub working_dir: Option<String>,
    /// CPU limit in millicores.
    pub cpu_limit_millis: Option<u64>,
    pub memory_limit_bytes: Option<u64>,
    pub sandbox_id: String,
    pub attempt: u32,
    pub security: Security,
    pub namespaces: HostNamespaces,
    /// Host paths bound into the container: the pod's volumes and the kubelet's own files
    /// (the managed `/etc/hosts`, the termination message file).
    pub mounts: Vec<Mount>,
    /// Its stdin stays open for attaching (`stdin`); closed after the first attach ends
    /// (`stdinOnce`); under a pseudo-terminal (`tty`).
    pub stdin: bool,
    pub stdin_once: bool,
    pub tty: bool,
    /// The runtime id of the container whose process namespace this one joins (an
    /// ephemeral container's `targetContainerName`).
    pub pid_target: Option<String>,
}

/// How mounts under a bind propagate between host and container (Kubernetes'
/// `mountPropagation`: None, HostToContainer, Bidirectional).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Propagation {
    /// `None`: neither side sees the other's later mounts (`rprivate`).
    #[default]
    Private,
    /// `HostToContainer`: mounts made on the host show in the container (`rslave`).
    HostToContainer,
    /// `Bidirectional`: both ways (`rshared`); privileged containers only.
    Bidirectional,
}

impl Propagation {
    /// The engine's name for it.
    pub fn as_engine(self) -> &'static str {
        match self {
            Propagation::Private => "rprivate",
            Propagation::HostToContainer => "rslave",
            Propagation::Bidirectional => "rshared",
        }
    }
}

/// One bind mount of a host path into a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub host_path: std::path::PathBuf,
    pub container_path: String,
    pub read_only: bool,
    pub propagation: Propagation,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ContainerState {
    Created,
    Running {
        started_at: String,
    },
    Exited {
        exit_code: i64,
        /// `Completed`, `Error` or `OOMKilled`, as the kubelet reports them.
        reason: String,
        started_at: String,
        finished_at: String,
    },
    Unknown,
}

/// A container as the runtime sees it.
#[derive(Debug, Clone)]
pub struct ContainerInfo {
    pub id: String,
    pub labels: BTreeMap<String, String>,
    pub image: String,
    pub image_id: String,
    pub state: ContainerState,
}

impl ContainerInfo {
    pub fn pod_uid(&self) -> Option<&str> {
        self.labels.get(LABEL_POD_UID).map(String::as_str)
    }

    pub fn container_name(&self) -> Option<&str> {
        self.labels.get(LABEL_CONTAINER).map(String::as_str)
    }

    pub fn attempt(&self) -> u32 {
        self.labels
            .get(LABEL_ATTEMPT)
            .and_then(|a| a.parse().ok())
            .unwrap_or(0)
    }

    pub fn is_sandbox(&self) -> bool {
        self.container_name() == Some(SANDBOX_CONTAINER)
    }
}

#[derive(Debug, Clone, Default)]
pub struct LogOptions {
    pub follow: bool,
    pub tail_lines: Option<u64>,
    pub timestamps: bool,
    /// Only lines written at or after this time (`sinceSeconds`, `sinceTime`).
    pub since: Option<chrono::DateTime<chrono::Utc>>,
}

/// Result of running a command in a container (exec probes).
#[derive(Debug, Clone)]
pub struct ExecResult {
    pub exit_code: i64,
    pub output: String,
}

pub type LogStream = BoxStream<'static, Result<Bytes, RuntimeError>>;

/// An interactive command in a running container (`kubectl exec`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecRequest {
    pub command: Vec<String>,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    /// Under a pseudo-terminal: output comes as one stream (stdout) and can be resized.
    pub tty: bool,
}

/// A chunk of a process's output, by stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    Stdout(Bytes),
    Stderr(Bytes),
}

/// A started interactive command: its output until it ends, and its input.
pub struct ExecSession {
    /// The engine's id of this exec, for resizing it and reading its exit code.
    pub id: String,
    pub output: BoxStream<'static, Result<Output, RuntimeError>>,
    /// The process's stdin, when asked for; shutting it down closes the process's stdin.
    pub stdin: Option<std::pin::Pin<Box<dyn tokio::io::AsyncWrite + Send>>>,
}

/// One reading of a container's resource counters. CPU is cumulative: the kubelet turns
/// two readings into a rate itself, so the rate covers exactly its own sampling window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ContainerStats {
    /// CPU time used since the container started, in nanoseconds.
    pub cpu_usage_ns: u64,
    /// Memory in use that the kernel cannot simply drop (Kubernetes' working set).
    pub memory_working_set_bytes: u64,
    /// When the counters were read.
    pub at: chrono::DateTime<chrono::Utc>,
}

/// A container engine. Every container it creates carries the `LABEL_*` labels.
#[async_trait::async_trait]
pub trait Runtime: Send + Sync + 'static {
    /// `docker://20.10.24` style, for the node's `containerRuntimeVersion`.
    async fn version(&self) -> Result<String, RuntimeError>;

    /// Make `image` present according to `policy`; returns its image id.
    async fn ensure_image(&self, image: &str, policy: PullPolicy) -> Result<String, RuntimeError>;

    /// Make the node's pod network exist with `network`'s block, replacing one of the same
    /// name with another block and unused pod networks that overlap it (left by a node of
    /// another cluster, or of this one before its podCIDR changed).
    async fn ensure_network(&self, _network: &PodNetwork) -> Result<(), RuntimeError> {
        Ok(())
    }

    /// Create and start the pod's pause container (building the pause image first if the
    /// engine lacks it).
    async fn run_sandbox(&self, spec: &SandboxSpec) -> Result<SandboxInfo, RuntimeError>;

    /// Create and start an app container in the sandbox's network namespace; returns its id.
    async fn start_container(&self, spec: &ContainerSpec) -> Result<String, RuntimeError>;

    /// SIGTERM, then SIGKILL after `grace`.
    async fn stop(&self, id: &str, grace: Duration) -> Result<(), RuntimeError>;

    async fn remove(&self, id: &str) -> Result<(), RuntimeError>;

    /// Every container (running or exited) this node created, found by its labels.
    async fn list(&self, node: &str) -> Result<Vec<ContainerInfo>, RuntimeError>;

    async fn inspect(&self, id: &str) -> Result<ContainerInfo, RuntimeError>;

    /// The user an image runs as (its `USER`, empty for root), for `runAsNonRoot`.
    async fn image_user(&self, _image: &str) -> Result<String, RuntimeError> {
        Ok(String::new())
    }

    /// The IP of a sandbox (pod IP), for adopted pods; empty for a sandbox in the host's
    /// network (the pod IP is then the node's).
    async fn sandbox_ip(&self, id: &str) -> Result<String, RuntimeError>;

    async fn exec(
        &self,
        id: &str,
        cmd: &[String],
        timeout: Duration,
    ) -> Result<ExecResult, RuntimeError>;

    async fn logs(&self, id: &str, opts: &LogOptions) -> Result<LogStream, RuntimeError>;

    /// Read a running container's CPU and memory counters once.
    async fn stats(&self, id: &str) -> Result<ContainerStats, RuntimeError>;

    /// Start `req` in running container `id`, attached to its streams.
    async fn exec_start(&self, id: &str, req: &ExecRequest) -> Result<ExecSession, RuntimeError>;

    /// Resize an exec's terminal.
    async fn exec_resize(&self, exec_id: &str, width: u16, height: u16)
        -> Result<(), RuntimeError>;

    /// The exit code of an exec whose output has ended.
    async fn exec_exit_code(&self, exec_id: &str) -> Result<i64, RuntimeError>;

    /// Kill an exec's process (its caller went away before it ended).
    async fn exec_kill(&self, exec_id: &str) -> Result<(), RuntimeError>;

    /// Attach to running container `id`'s own streams (`req.command` is unused).
    async fn attach_start(&self, id: &str, req: &ExecRequest) -> Result<ExecSession, RuntimeError>;

    /// Resize a container's terminal (attach).
    async fn attach_resize(&self, id: &str, width: u16, height: u16) -> Result<(), RuntimeError>;

    /// The network namespace a sandbox's containers share (`/proc/<pid>/ns/net`), for
    /// port-forwarding into it; `None` for a sandbox in the host's network.
    async fn network_namespace(
        &self,
        sandbox_id: &str,
    ) -> Result<Option<std::path::PathBuf>, RuntimeError>;
}
