//! [`Runtime`] kept in memory, for hollow nodes: scale tests run thousands of nodes in one
//! process with no engine and no containers. Containers "run" instantly (or after a
//! configured latency), never exit unless told to ([`SimRuntime::crash`]) or stopped, and
//! cost a few hundred bytes each.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use futures::StreamExt;
use tracing::{debug, instrument};

use super::{
    ContainerInfo, ContainerSpec, ContainerState, ContainerStats, ExecRequest, ExecResult,
    ExecSession, LogOptions, LogStream, PodRef, PullPolicy, Runtime, RuntimeError, SandboxInfo,
    SandboxSpec, LABEL_ATTEMPT, LABEL_CONTAINER, LABEL_NODE, LABEL_POD_NAME, LABEL_POD_NAMESPACE,
    LABEL_POD_UID, SANDBOX_CONTAINER,
};

/// Images whose name starts with this are "not in any registry": pulling them fails.
pub const MISSING_IMAGE_PREFIX: &str = "missing/";

/// Pod IPs come from 10.244.0.0/16, like the default pod network of kubeadm clusters.
const POD_NETWORK: u32 = u32::from_be_bytes([10, 244, 0, 0]);

/// Container ids are unique across every simulated runtime of the process.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Resource usage reported for a simulated container (for node and pod metrics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SimUsage {
    pub cpu_millis: u64,
    pub memory_bytes: u64,
}

#[derive(Debug, Clone, Default)]
pub struct SimConfig {
    /// Delay before a sandbox or container counts as started (0: instant).
    pub start_latency: Duration,
    /// Usage given to every new container; change one with [`SimRuntime::set_usage`].
    pub usage: SimUsage,
    /// Offset of this runtime's first pod IP within 10.244.0.0/16, so that hollow nodes
    /// can be given disjoint ranges (e.g. node i → i × 256).
    pub ip_offset: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SimState {
    Running {
        started: DateTime<Utc>,
    },
    Exited {
        code: i32,
        started: DateTime<Utc>,
        finished: DateTime<Utc>,
    },
}

/// One simulated container; kept small (the benchmark allows < 1 MiB per hollow node).
#[derive(Debug, Clone)]
struct SimContainer {
    pod: PodRef,
    name: String,
    attempt: u32,
    image: String,
    state: SimState,
    /// Sandboxes only: the pod IP.
    ip: Option<Ipv4Addr>,
    usage: SimUsage,
    /// CPU time used up to `cpu_at`: the simulated cumulative counter, advanced at the
    /// current usage rate whenever it is read or the rate changes.
    cpu_ns: u64,
    cpu_at: Instant,
}

impl SimContainer {
    fn is_running(&self) -> bool {
        matches!(self.state, SimState::Running { .. })
    }

    fn new(pod: PodRef, name: String, attempt: u32, image: String, usage: SimUsage) -> Self {
        SimContainer {
            pod,
            name,
            attempt,
            image,
            state: SimState::Running {
                started: Utc::now(),
            },
            ip: None,
            usage,
            cpu_ns: 0,
            cpu_at: Instant::now(),
        }
    }

    /// Bring the CPU counter up to now at the current rate (only while running).
    fn settle(&mut self) {
        let now = Instant::now();
        if self.is_running() {
            let elapsed = now.duration_since(self.cpu_at).as_nanos();
            let used = elapsed * u128::from(self.usage.cpu_millis) / 1000;
            self.cpu_ns = self
                .cpu_ns
                .saturating_add(u64::try_from(used).unwrap_or(u64::MAX));
        }
        self.cpu_at = now;
    }

    fn set_usage(&mut self, usage: SimUsage) {
        self.settle();
        self.usage = usage;
    }

    fn exit(&mut self, code: i32) {
        self.settle();
        if let SimState::Running { started } = self.state {
            self.state = SimState::Exited {
                code,
                started,
                finished: Utc::now(),
            };
        }
    }

    fn info(&self, id: &str) -> ContainerInfo {
        let labels = BTreeMap::from([
            (LABEL_POD_UID.to_string(), self.pod.uid.clone()),
            (LABEL_POD_NAME.to_string(), self.pod.name.clone()),
            (LABEL_POD_NAMESPACE.to_string(), self.pod.namespace.clone()),
            (LABEL_NODE.to_string(), self.pod.node.clone()),
            (LABEL_CONTAINER.to_string(), self.name.clone()),
            (LABEL_ATTEMPT.to_string(), self.attempt.to_string()),
        ]);
        ContainerInfo {
            id: id.to_string(),
            labels,
            image: self.image.clone(),
            image_id: image_id(&self.image),
            state: self.runtime_state(),
        }
    }

    fn runtime_state(&self) -> ContainerState {
        match self.state {
            SimState::Running { started } => ContainerState::Running {
                started_at: timestamp(started),
            },
            SimState::Exited {
                code,
                started,
                finished,
            } => ContainerState::Exited {
                exit_code: i64::from(code),
                reason: if code == 0 { "Completed" } else { "Error" }.to_string(),
                started_at: timestamp(started),
                finished_at: timestamp(finished),
            },
        }
    }
}

/// An in-memory container runtime for one or more hollow nodes.
#[derive(Debug, Default)]
pub struct SimRuntime {
    config: SimConfig,
    next_ip: AtomicU32,
    containers: Mutex<HashMap<String, SimContainer>>,
    /// Exit codes of the execs started, by exec id.
    execs: Mutex<HashMap<String, i64>>,
    /// Usage of new app containers: `config.usage` until [`SimRuntime::set_default_usage`].
    default_usage: Mutex<SimUsage>,
}

impl SimRuntime {
    pub fn new(config: SimConfig) -> Self {
        Self {
            default_usage: Mutex::new(config.usage),
            config,
            next_ip: AtomicU32::new(0),
            containers: Mutex::new(HashMap::new()),
            execs: Mutex::new(HashMap::new()),
        }
    }

    /// Makes the running container `container_name` of pod `pod_uid` exit with
    /// `exit_code`, as if its process had ended; false when no such container runs.
    pub fn crash(&self, pod_uid: &str, container_name: &str, exit_code: i32) -> bool {
        let mut containers = self.lock();
        let target = containers
            .values_mut()
            .filter(|c| c.pod.uid == pod_uid && c.name == container_name && c.is_running())
            .max_by_key(|c| c.attempt);
        match target {
            Some(container) => {
                container.exit(exit_code);
                true
            }
            None => false,
        }
    }

    /// Overrides the usage a container reports; false when it does not exist.
    pub fn set_usage(&self, id: &str, usage: SimUsage) -> bool {
        self.lock()
            .get_mut(id)
            .map(|c| c.set_usage(usage))
            .is_some()
    }

    /// Sets the usage of every running app container of one pod (how tests drive the
    /// metrics of hollow-node pods); returns how many containers it changed.
    pub fn set_pod_usage(&self, pod_uid: &str, usage: SimUsage) -> usize {
        let mut changed = 0;
        for c in self.lock().values_mut() {
            if c.pod.uid == pod_uid && c.name != SANDBOX_CONTAINER && c.is_running() {
                c.set_usage(usage);
                changed += 1;
            }
        }
        changed
    }

    /// Sets the usage of every running app container and of those started from now on.
    pub fn set_default_usage(&self, usage: SimUsage) {
        *self
            .default_usage
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = usage;
        for c in self.lock().values_mut() {
            if c.name != SANDBOX_CONTAINER && c.is_running() {
                c.set_usage(usage);
            }
        }
    }

    /// What a running container uses (None when missing or exited).
    pub fn usage(&self, id: &str) -> Option<SimUsage> {
        self.lock()
            .get(id)
            .filter(|c| c.is_running())
            .map(|c| c.usage)
    }

    /// Number of containers held (running or exited), for tests and memory accounting.
    pub fn container_count(&self) -> usize {
        self.lock().len()
    }

    /// A poisoned lock only means another thread panicked mid-update of a plain map;
    /// the map is still usable, so keep serving rather than cascading the panic.
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, SimContainer>> {
        self.containers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    async fn start_latency(&self) {
        if !self.config.start_latency.is_zero() {
            tokio::time::sleep(self.config.start_latency).await;
        }
    }

    /// Next address in 10.244.0.0/16, skipping network (.0) and broadcast (.255) octets.
    fn allocate_ip(&self) -> Ipv4Addr {
        loop {
            let n = self.next_ip.fetch_add(1, Ordering::Relaxed);
            let offset = self.config.ip_offset.wrapping_add(n) & 0xffff;
            let last = offset & 0xff;
            if last != 0 && last != 0xff {
                return Ipv4Addr::from(POD_NETWORK | offset);
            }
        }
    }

    /// Next host address of the node's pod block (after its gateway), wrapping around.
    fn allocate_in(&self, net: &super::PodNetwork) -> Ipv4Addr {
        let hosts = (1u32 << (32 - u32::from(net.subnet.prefix_len())))
            .saturating_sub(3)
            .max(1);
        let n = self.next_ip.fetch_add(1, Ordering::Relaxed) % hosts;
        Ipv4Addr::from(u32::from(net.subnet.network()) + 2 + n)
    }

    fn insert(&self, container: SimContainer) -> String {
        let id = format!("sim{:013x}", NEXT_ID.fetch_add(1, Ordering::Relaxed));
        self.lock().insert(id.clone(), container);
        id
    }

    fn with<T>(&self, id: &str, f: impl FnOnce(&mut SimContainer) -> T) -> Result<T, RuntimeError> {
        self.lock()
            .get_mut(id)
            .map(f)
            .ok_or_else(|| RuntimeError::NotFound(id.to_string()))
    }
}

#[async_trait::async_trait]
impl Runtime for SimRuntime {
    async fn version(&self) -> Result<String, RuntimeError> {
        Ok(format!("sim://{}", env!("CARGO_PKG_VERSION")))
    }

    async fn ensure_image(&self, image: &str, policy: PullPolicy) -> Result<String, RuntimeError> {
        if !image.starts_with(MISSING_IMAGE_PREFIX) {
            return Ok(image_id(image));
        }
        Err(match policy {
            PullPolicy::Never => RuntimeError::ImageNeverPull(image.to_string()),
            PullPolicy::Always | PullPolicy::IfNotPresent => RuntimeError::ImagePull {
                image: image.to_string(),
                detail: "repository does not exist (simulated)".into(),
            },
        })
    }

    #[instrument(skip(self, spec), fields(pod = %spec.pod.name, node = %spec.pod.node))]
    async fn run_sandbox(&self, spec: &SandboxSpec) -> Result<SandboxInfo, RuntimeError> {
        self.start_latency().await;
        let ip = match &spec.network {
            Some(net) => self.allocate_in(net),
            None => self.allocate_ip(),
        };
        let id = self.insert(SimContainer {
            ip: Some(ip),
            ..SimContainer::new(
                spec.pod.clone(),
                SANDBOX_CONTAINER.to_string(),
                0,
                super::images::PAUSE_IMAGE.to_string(),
                SimUsage::default(),
            )
        });
        debug!(%id, %ip, "sandbox running");
        Ok(SandboxInfo {
            id,
            ip: ip.to_string(),
        })
    }

    #[instrument(skip(self, spec), fields(container = %spec.name))]
    async fn start_container(&self, spec: &ContainerSpec) -> Result<String, RuntimeError> {
        let pod = spec.pod.clone().ok_or_else(|| {
            RuntimeError::Failed(format!("container {} has no pod reference", spec.name))
        })?;
        if spec.image.starts_with(MISSING_IMAGE_PREFIX) {
            return Err(RuntimeError::NotFound(format!(
                "No such image: {}",
                spec.image
            )));
        }
        // The engine refuses to join the namespaces of a sandbox that does not run.
        let sandbox_running = self.with(&spec.sandbox_id, |s| s.is_running())?;
        if !sandbox_running {
            return Err(RuntimeError::Failed(format!(
                "cannot join network of a non running container: {}",
                spec.sandbox_id
            )));
        }
        self.start_latency().await;
        let usage = *self
            .default_usage
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        Ok(self.insert(SimContainer::new(
            pod,
            spec.name.clone(),
            spec.attempt,
            spec.image.clone(),
            usage,
        )))
    }

    /// Simulated processes honour SIGTERM at once and exit 0.
    async fn stop(&self, id: &str, _grace: Duration) -> Result<(), RuntimeError> {
        self.with(id, |c| c.exit(0))
    }

    async fn remove(&self, id: &str) -> Result<(), RuntimeError> {
        self.lock().remove(id);
        Ok(())
    }

    async fn list(&self, node: &str) -> Result<Vec<ContainerInfo>, RuntimeError> {
        Ok(self
            .lock()
            .iter()
            .filter(|(_, c)| c.pod.node == node)
            .map(|(id, c)| c.info(id))
            .collect())
    }

    async fn inspect(&self, id: &str) -> Result<ContainerInfo, RuntimeError> {
        self.with(id, |c| c.info(id))
    }

    async fn sandbox_ip(&self, id: &str) -> Result<String, RuntimeError> {
        self.with(id, |c| c.ip)?
            .map(|ip| ip.to_string())
            .ok_or_else(|| RuntimeError::Failed(format!("{id} is not a sandbox")))
    }

    /// Every command succeeds except exactly `["false"]`, which exits 1.
    async fn exec(
        &self,
        id: &str,
        cmd: &[String],
        _timeout: Duration,
    ) -> Result<ExecResult, RuntimeError> {
        if !self.with(id, |c| c.is_running())? {
            return Err(RuntimeError::Failed(format!(
                "container {id} is not running"
            )));
        }
        let exit_code = if cmd == ["false"] { 1 } else { 0 };
        Ok(ExecResult {
            exit_code,
            output: String::new(),
        })
    }

    /// One line per container, `started <name>`; the stream ends even with `follow`.
    async fn logs(&self, id: &str, opts: &LogOptions) -> Result<LogStream, RuntimeError> {
        let (name, started) = self.with(id, |c| {
            let started = match c.state {
                SimState::Running { started } | SimState::Exited { started, .. } => started,
            };
            (c.name.clone(), started)
        })?;
        let mut line = format!("started {name}\n");
        if opts.timestamps {
            let stamp = started.to_rfc3339_opts(SecondsFormat::Nanos, true);
            line = format!("{stamp} {line}");
        }
        let lines = if opts.tail_lines == Some(0) || opts.since.is_some_and(|t| t > started) {
            Vec::new()
        } else {
            vec![Ok(Bytes::from(line))]
        };
        Ok(futures::stream::iter(lines).boxed())
    }

    async fn stats(&self, id: &str) -> Result<ContainerStats, RuntimeError> {
        self.with(id, |c| {
            if !c.is_running() {
                return Err(RuntimeError::Failed(format!(
                    "container {id} is not running"
                )));
            }
            c.settle();
            Ok(ContainerStats {
                cpu_usage_ns: c.cpu_ns,
                memory_working_set_bytes: c.usage.memory_bytes,
                at: Utc::now(),
            })
        })?
    }

    /// No process runs: the output is empty, stdin is drained, and the exit code is the
    /// one a probe would record (`false` fails, anything else succeeds).
    async fn exec_start(&self, id: &str, req: &ExecRequest) -> Result<ExecSession, RuntimeError> {
        if !self.with(id, |c| c.is_running())? {
            return Err(RuntimeError::Failed(format!(
                "container {id} is not running"
            )));
        }
        let exec_id = format!("sim-exec-{}", NEXT_ID.fetch_add(1, Ordering::Relaxed));
        let code = if req.command == ["false"] { 1 } else { 0 };
        self.execs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(exec_id.clone(), code);
        let stdin: Option<std::pin::Pin<Box<dyn tokio::io::AsyncWrite + Send>>> =
            req.stdin.then(|| Box::pin(tokio::io::sink()) as _);
        Ok(ExecSession {
            id: exec_id,
            output: futures::stream::empty().boxed(),
            stdin,
        })
    }

    async fn exec_resize(&self, _exec_id: &str, _w: u16, _h: u16) -> Result<(), RuntimeError> {
        Ok(())
    }

    async fn exec_exit_code(&self, exec_id: &str) -> Result<i64, RuntimeError> {
        self.execs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(exec_id)
            .ok_or_else(|| RuntimeError::NotFound(exec_id.to_string()))
    }

    async fn exec_kill(&self, exec_id: &str) -> Result<(), RuntimeError> {
        self.execs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(exec_id);
        Ok(())
    }

    async fn attach_start(&self, id: &str, req: &ExecRequest) -> Result<ExecSession, RuntimeError> {
        if !self.with(id, |c| c.is_running())? {
            return Err(RuntimeError::Failed(format!(
                "container {id} is not running"
            )));
        }
        // A simulated process writes nothing and reads its stdin to the end.
        let stdin: Option<std::pin::Pin<Box<dyn tokio::io::AsyncWrite + Send>>> =
            req.stdin.then(|| Box::pin(tokio::io::sink()) as _);
        Ok(ExecSession {
            id: id.to_string(),
            output: futures::stream::pending().boxed(),
            stdin,
        })
    }

    async fn attach_resize(&self, _id: &str, _w: u16, _h: u16) -> Result<(), RuntimeError> {
        Ok(())
    }

    async fn network_namespace(
        &self,
        _sandbox_id: &str,
    ) -> Result<Option<std::path::PathBuf>, RuntimeError> {
        Err(RuntimeError::Failed(
            "the simulated runtime has no network namespaces to forward ports into".into(),
        ))
    }
}

fn timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// A stable fake image id, so status shows the same id for the same image.
fn image_id(image: &str) -> String {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    image.hash(&mut hasher);
    format!("sha256:{:016x}", hasher.finish())
}

#[cfg(test)]
mod tests {
    use futures::TryStreamExt;

    use super::*;

    fn pod(uid: &str, node: &str) -> PodRef {
        PodRef {
            uid: uid.into(),
            name: format!("pod-{uid}"),
            namespace: "default".into(),
            node: node.into(),
        }
    }

    fn sandbox_spec(uid: &str, node: &str) -> SandboxSpec {
        SandboxSpec {
            pod: pod(uid, node),
            hostname: format!("pod-{uid}"),
            host_ports: vec![],
            ..Default::default()
        }
    }

    async fn run_pod(rt: &SimRuntime, uid: &str, node: &str) -> (SandboxInfo, String) {
        let sandbox = rt.run_sandbox(&sandbox_spec(uid, node)).await.unwrap();
        let id = rt
            .start_container(&ContainerSpec {
                pod: Some(pod(uid, node)),
                name: "app".into(),
                image: "skiff/busybox:latest".into(),
                sandbox_id: sandbox.id.clone(),
                ..Default::default()
            })
            .await
            .unwrap();
        (sandbox, id)
    }

    #[tokio::test]
    async fn sandboxes_get_distinct_deterministic_pod_ips() {
        let rt = SimRuntime::new(SimConfig::default());
        let a = rt.run_sandbox(&sandbox_spec("a", "n")).await.unwrap();
        let b = rt.run_sandbox(&sandbox_spec("b", "n")).await.unwrap();
        assert_eq!(a.ip, "10.244.0.1");
        assert_eq!(b.ip, "10.244.0.2");
        assert_eq!(rt.sandbox_ip(&a.id).await.unwrap(), a.ip);
    }

    #[tokio::test]
    async fn ip_offsets_give_nodes_disjoint_ranges_and_skip_broadcast() {
        let rt = SimRuntime::new(SimConfig {
            ip_offset: 3 * 256 + 254,
            ..Default::default()
        });
        let a = rt.run_sandbox(&sandbox_spec("a", "n")).await.unwrap();
        let b = rt.run_sandbox(&sandbox_spec("b", "n")).await.unwrap();
        assert_eq!(a.ip, "10.244.3.254");
        assert_eq!(b.ip, "10.244.4.1");
    }

    #[tokio::test]
    async fn started_containers_run_and_are_listed_with_their_labels() {
        let rt = SimRuntime::new(SimConfig::default());
        let (sandbox, app) = run_pod(&rt, "u1", "node-1").await;
        run_pod(&rt, "u2", "node-2").await;

        let listed = rt.list("node-1").await.unwrap();
        assert_eq!(listed.len(), 2);
        let info = rt.inspect(&app).await.unwrap();
        assert_eq!(info.pod_uid(), Some("u1"));
        assert_eq!(info.container_name(), Some("app"));
        assert!(matches!(info.state, ContainerState::Running { .. }));
        assert!(rt.inspect(&sandbox.id).await.unwrap().is_sandbox());
    }

    #[tokio::test]
    async fn crash_makes_a_running_container_exit_with_the_code() {
        let rt = SimRuntime::new(SimConfig::default());
        let (_, app) = run_pod(&rt, "u1", "n").await;
        assert!(rt.crash("u1", "app", 2));
        assert!(matches!(
            rt.inspect(&app).await.unwrap().state,
            ContainerState::Exited { exit_code: 2, reason, .. } if reason == "Error"
        ));
        assert!(
            !rt.crash("u1", "app", 2),
            "an exited container cannot crash again"
        );
    }

    #[tokio::test]
    async fn stop_exits_zero_as_completed_and_remove_is_idempotent() {
        let rt = SimRuntime::new(SimConfig::default());
        let (_, app) = run_pod(&rt, "u1", "n").await;
        rt.stop(&app, Duration::from_secs(30)).await.unwrap();
        assert!(matches!(
            rt.inspect(&app).await.unwrap().state,
            ContainerState::Exited { exit_code: 0, reason, .. } if reason == "Completed"
        ));
        rt.remove(&app).await.unwrap();
        rt.remove(&app).await.unwrap();
        assert!(matches!(
            rt.inspect(&app).await,
            Err(RuntimeError::NotFound(_))
        ));
    }

    #[tokio::test]
    async fn missing_images_fail_by_pull_policy() {
        let rt = SimRuntime::new(SimConfig::default());
        assert!(rt
            .ensure_image("skiff/busybox:latest", PullPolicy::Never)
            .await
            .is_ok());
        assert_eq!(
            rt.ensure_image("missing/x", PullPolicy::Never).await,
            Err(RuntimeError::ImageNeverPull("missing/x".into()))
        );
        assert!(matches!(
            rt.ensure_image("missing/x", PullPolicy::IfNotPresent).await,
            Err(RuntimeError::ImagePull { .. })
        ));
    }

    #[tokio::test]
    async fn exec_fails_only_for_false() {
        let rt = SimRuntime::new(SimConfig::default());
        let (_, app) = run_pod(&rt, "u1", "n").await;
        let timeout = Duration::from_secs(1);
        let ok = rt.exec(&app, &["true".into()], timeout).await.unwrap();
        let bad = rt.exec(&app, &["false".into()], timeout).await.unwrap();
        assert_eq!((ok.exit_code, bad.exit_code), (0, 1));
    }

    #[tokio::test]
    async fn logs_return_the_started_line() {
        let rt = SimRuntime::new(SimConfig::default());
        let (_, app) = run_pod(&rt, "u1", "n").await;
        let chunks: Vec<Bytes> = rt
            .logs(&app, &LogOptions::default())
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        assert_eq!(chunks.concat(), b"started app\n");
    }

    #[tokio::test]
    async fn containers_cannot_join_a_stopped_sandbox() {
        let rt = SimRuntime::new(SimConfig::default());
        let sandbox = rt.run_sandbox(&sandbox_spec("u1", "n")).await.unwrap();
        rt.stop(&sandbox.id, Duration::ZERO).await.unwrap();
        let started = rt
            .start_container(&ContainerSpec {
                pod: Some(pod("u1", "n")),
                name: "app".into(),
                image: "img".into(),
                sandbox_id: sandbox.id,
                ..Default::default()
            })
            .await;
        assert!(matches!(started, Err(RuntimeError::Failed(_))));
    }

    #[tokio::test]
    async fn configured_usage_is_reported_for_running_containers() {
        let usage = SimUsage {
            cpu_millis: 5,
            memory_bytes: 1 << 20,
        };
        let rt = SimRuntime::new(SimConfig {
            usage,
            ..Default::default()
        });
        let (_, app) = run_pod(&rt, "u1", "n").await;
        assert_eq!(rt.usage(&app), Some(usage));
        assert!(rt.set_usage(&app, SimUsage::default()));
        assert_eq!(rt.usage(&app), Some(SimUsage::default()));
    }

    #[tokio::test]
    async fn cpu_counter_advances_at_the_set_usage_rate() {
        let rt = SimRuntime::new(SimConfig::default());
        let (_, app) = run_pod(&rt, "u1", "n").await;
        let busy = SimUsage {
            cpu_millis: 500,
            memory_bytes: 7 << 20,
        };
        assert_eq!(rt.set_pod_usage("u1", busy), 1);
        let first = rt.stats(&app).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let second = rt.stats(&app).await.unwrap();
        let secs = (second.at - first.at).num_nanoseconds().unwrap() as f64 / 1e9;
        let millicores = (second.cpu_usage_ns - first.cpu_usage_ns) as f64 / secs / 1e6;
        assert!(
            (millicores - 500.0).abs() < 50.0,
            "rate {millicores}m, wanted about 500m"
        );
        assert_eq!(second.memory_working_set_bytes, 7 << 20);
        rt.stop(&app, Duration::ZERO).await.unwrap();
        assert!(rt.stats(&app).await.is_err());
    }

    #[tokio::test]
    async fn default_usage_reaches_running_and_new_containers() {
        let rt = SimRuntime::new(SimConfig::default());
        let (_, old) = run_pod(&rt, "u1", "n").await;
        let busy = SimUsage {
            cpu_millis: 300,
            memory_bytes: 1,
        };
        rt.set_default_usage(busy);
        let (_, new) = run_pod(&rt, "u2", "n").await;
        assert_eq!(rt.usage(&old), Some(busy));
        assert_eq!(rt.usage(&new), Some(busy));
    }

    #[tokio::test]
    async fn start_latency_delays_sandbox_and_container_start() {
        let rt = SimRuntime::new(SimConfig {
            start_latency: Duration::from_millis(50),
            ..Default::default()
        });
        let before = std::time::Instant::now();
        run_pod(&rt, "u1", "n").await;
        assert!(before.elapsed() >= Duration::from_millis(100));
    }
}
