//! [`Runtime`] on the local Docker Engine, through bollard.
//!
//! A pod is a pause container (the sandbox, holding the network and IPC namespaces) plus
//! one engine container per app container, joined to the sandbox with
//! `container:<sandbox id>` network and IPC modes, as dockershim did. Every container
//! carries the `LABEL_*` labels so a restarted kubelet can adopt or remove it.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use bollard::container::LogOutput;
use bollard::errors::Error as EngineError;
use bollard::exec::{ResizeExecOptions, StartExecOptions, StartExecResults};
use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, ContainerState as EngineState,
    ContainerStateStatusEnum, ContainerStatsResponse, ExecConfig, HostConfig, Ipam, IpamConfig,
    NetworkCreateRequest, PortBinding, RestartPolicy, RestartPolicyNameEnum,
};
use bollard::query_parameters::{
    AttachContainerOptionsBuilder, CreateContainerOptionsBuilder, CreateImageOptionsBuilder,
    ListContainersOptionsBuilder, ListNetworksOptionsBuilder, LogsOptionsBuilder,
    RemoveContainerOptionsBuilder, RemoveImageOptionsBuilder, ResizeContainerTTYOptionsBuilder,
    StatsOptionsBuilder, StopContainerOptionsBuilder,
};
use bollard::Docker;
use futures::{StreamExt, TryStreamExt};
use tracing::{debug, info, instrument, warn};

use super::images::{self, PAUSE_IMAGE};
use super::{
    ContainerInfo, ContainerSpec, ContainerState, ContainerStats, ExecRequest, ExecResult,
    ExecSession, LogOptions, LogStream, Mount, Output, PodNetwork, PodRef, PullPolicy, Runtime,
    RuntimeError, SandboxInfo, SandboxSpec, LABEL_ATTEMPT, LABEL_CONTAINER, LABEL_NODE,
    LABEL_POD_NAME, LABEL_POD_NAMESPACE, LABEL_POD_UID, SANDBOX_CONTAINER,
};

/// How long a pull may take before the pod worker is told `ErrImagePull`.
const DEFAULT_PULL_TIMEOUT: Duration = Duration::from_secs(30);
/// Exec output kept for a probe result (the kubelet keeps 10 KiB; some slack here).
const EXEC_OUTPUT_LIMIT: usize = 64 * 1024;
/// Parallel inspects when listing a node's containers.
const LIST_INSPECT_CONCURRENCY: usize = 16;
/// Docker's hostname limit (a DNS label).
const HOSTNAME_MAX: usize = 63;
/// Labels on the pod networks skiff makes: whose node, and which block.
const LABEL_NETWORK_NODE: &str = "io.skiff.network.node";
const LABEL_NETWORK_SUBNET: &str = "io.skiff.network.subnet";

/// The local Docker Engine as a skiff container runtime.
pub struct DockerRuntime {
    docker: Docker,
    pause_image: String,
    pull_timeout: Duration,
    /// Set once the pause image is known to exist, so concurrent sandboxes build it once
    /// and later sandboxes skip the lookup.
    pause_ready: tokio::sync::Mutex<bool>,
    /// Pod networks known to exist (name → subnet).
    networks: tokio::sync::Mutex<HashMap<String, String>>,
}

impl std::fmt::Debug for DockerRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DockerRuntime")
            .field("pause_image", &self.pause_image)
            .field("pull_timeout", &self.pull_timeout)
            .finish_non_exhaustive()
    }
}

impl DockerRuntime {
    /// Connects to the local engine socket and negotiates the API version down to the
    /// engine's (Debian's Docker 20.10 speaks 1.41, older than bollard's default).
    pub async fn connect() -> Result<Self, RuntimeError> {
        let docker = Docker::connect_with_local_defaults()
            .map_err(|e| RuntimeError::Unavailable(e.to_string()))?;
        let docker = docker
            .negotiate_version()
            .await
            .map_err(|e| RuntimeError::Unavailable(e.to_string()))?;
        Ok(Self::from_docker(docker))
    }

    /// Wraps an already connected (and version-negotiated) client.
    pub fn from_docker(docker: Docker) -> Self {
        Self {
            docker,
            pause_image: PAUSE_IMAGE.to_string(),
            pull_timeout: DEFAULT_PULL_TIMEOUT,
            pause_ready: tokio::sync::Mutex::new(false),
            networks: tokio::sync::Mutex::new(HashMap::new()),
        }
    }

    /// Uses another tag for the pause image (tests build their own, to see it built).
    pub fn with_pause_image(mut self, tag: impl Into<String>) -> Self {
        self.pause_image = tag.into();
        self
    }

    pub fn with_pull_timeout(mut self, timeout: Duration) -> Self {
        self.pull_timeout = timeout;
        self
    }

    pub fn pause_image(&self) -> &str {
        &self.pause_image
    }

    /// The host's address on the pods' network (the default bridge's gateway): where a
    /// pod reaches a server of this host, such as the cluster DNS.
    pub async fn bridge_gateway(&self) -> Option<std::net::IpAddr> {
        let net = self
            .docker
            .inspect_network(
                "bridge",
                None::<bollard::query_parameters::InspectNetworkOptions>,
            )
            .await
            .ok()?;
        // The engine may leave the gateway unsaid: it is then the subnet's first address.
        net.ipam?.config?.iter().find_map(|c| {
            if let Some(gw) = c.gateway.as_deref().and_then(|g| g.parse().ok()) {
                return Some(gw);
            }
            let (net, _) = c.subnet.as_deref()?.split_once('/')?;
            let net: std::net::Ipv4Addr = net.parse().ok()?;
            Some(std::net::IpAddr::V4(std::net::Ipv4Addr::from(
                u32::from(net) + 1,
            )))
        })
    }

    /// The underlying client, for building images (`images::build_busybox_image`).
    pub fn docker(&self) -> &Docker {
        &self.docker
    }

    /// Remove every container `node` created (running or not), found by its labels.
    pub async fn remove_node_containers(&self, node: &str) -> Result<(), RuntimeError> {
        for c in self.list(node).await? {
            self.remove(&c.id).await?;
        }
        Ok(())
    }

    /// Removes an image (forced); a missing image is not an error.
    pub async fn remove_image(&self, image: &str) -> Result<(), RuntimeError> {
        let options = RemoveImageOptionsBuilder::default().force(true).build();
        match self.docker.remove_image(image, Some(options), None).await {
            Ok(_) => Ok(()),
            Err(e) if status_of(&e) == Some(404) => Ok(()),
            Err(e) => Err(engine_error(e, image)),
        }
    }

    async fn inspect_raw(&self, id: &str) -> Result<ContainerInspectResponse, RuntimeError> {
        self.docker
            .inspect_container(id, None)
            .await
            .map_err(|e| engine_error(e, id))
    }

    /// Builds the pause image once per runtime if the engine lacks it.
    async fn ensure_pause(&self) -> Result<(), RuntimeError> {
        let mut ready = self.pause_ready.lock().await;
        if !*ready {
            images::ensure_pause_image_tagged(&self.docker, &self.pause_image).await?;
            *ready = true;
        }
        Ok(())
    }

    async fn create_and_start(
        &self,
        name: &str,
        body: ContainerCreateBody,
    ) -> Result<String, RuntimeError> {
        let options = CreateContainerOptionsBuilder::default().name(name).build();
        let created = self
            .docker
            .create_container(Some(options), body)
            .await
            .map_err(|e| engine_error(e, name))?;
        for warning in created.warnings.iter().filter(|w| !w.is_empty()) {
            warn!(container = %name, %warning, "engine warning on create");
        }
        if let Err(e) = self.docker.start_container(&created.id, None).await {
            // A container that cannot start (bad command, missing sandbox) would otherwise
            // linger as `Created` and block the name for the next attempt.
            let _ = self.remove(&created.id).await;
            return Err(engine_error(e, name));
        }
        Ok(created.id)
    }

    /// Pulls `image`, bounded by the pull timeout; any failure is `ImagePull`.
    async fn pull(&self, image: &str) -> Result<(), RuntimeError> {
        let (repo, tag) = split_reference(image);
        let mut options = CreateImageOptionsBuilder::default().from_image(&repo);
        if let Some(tag) = &tag {
            options = options.tag(tag);
        }
        let pull_failed = |detail: String| RuntimeError::ImagePull {
            image: image.to_string(),
            detail,
        };
        let progress = self
            .docker
            .create_image(Some(options.build()), None, None)
            .try_for_each(|_| async { Ok(()) });
        match tokio::time::timeout(self.pull_timeout, progress).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(pull_failed(engine_message(&e))),
            Err(_) => Err(pull_failed(format!(
                "timed out after {:?}",
                self.pull_timeout
            ))),
        }
    }

    /// The local image id for `image`, trying `image:latest` as the engine's CLI would.
    async fn local_image_id(&self, image: &str) -> Result<Option<String>, RuntimeError> {
        for candidate in image_candidates(image) {
            match self.docker.inspect_image(&candidate).await {
                Ok(found) => return Ok(Some(found.id.unwrap_or(candidate))),
                Err(e) if status_of(&e) == Some(404) => continue,
                Err(e) => return Err(engine_error(e, image)),
            }
        }
        Ok(None)
    }

    async fn pull_and_resolve(&self, image: &str) -> Result<String, RuntimeError> {
        self.pull(image).await?;
        self.local_image_id(image)
            .await?
            .ok_or_else(|| RuntimeError::ImagePull {
                image: image.to_string(),
                detail: "pull finished but the image is not present".into(),
            })
    }
}

#[async_trait::async_trait]
impl Runtime for DockerRuntime {
    async fn version(&self) -> Result<String, RuntimeError> {
        let version = self
            .docker
            .version()
            .await
            .map_err(|e| engine_error(e, "version"))?;
        let number = version.version.unwrap_or_else(|| "unknown".into());
        Ok(format!("docker://{number}"))
    }

    /// `Always` pulls even with a local copy; a failed pull is `ImagePull`, and the pod
    /// worker decides whether the local copy may stand in (it does, with a warning event).
    #[instrument(skip(self), fields(image = %image, policy = ?policy))]
    async fn ensure_image(&self, image: &str, policy: PullPolicy) -> Result<String, RuntimeError> {
        let local = self.local_image_id(image).await?;
        match (policy, local) {
            (PullPolicy::Always, Some(_)) => self.pull_and_resolve(image).await,
            (_, Some(id)) => Ok(id),
            (PullPolicy::Never, None) => Err(RuntimeError::ImageNeverPull(image.to_string())),
            (_, None) => self.pull_and_resolve(image).await,
        }
    }

    #[instrument(skip(self, network), fields(network = %network.name, subnet = %network.subnet))]
    async fn ensure_network(&self, network: &PodNetwork) -> Result<(), RuntimeError> {
        let subnet = network.subnet.to_string();
        let mut ensured = self.networks.lock().await;
        if ensured.get(&network.name) == Some(&subnet) {
            return Ok(());
        }
        let filters = HashMap::from([("label", vec![LABEL_NETWORK_NODE])]);
        let ours = self
            .docker
            .list_networks(Some(
                ListNetworksOptionsBuilder::new().filters(&filters).build(),
            ))
            .await
            .map_err(|e| engine_error(e, "pod networks"))?;
        for net in ours {
            let Some(name) = net.name.clone() else {
                continue;
            };
            let labels = net.labels.unwrap_or_default();
            let theirs = labels
                .get(LABEL_NETWORK_SUBNET)
                .cloned()
                .unwrap_or_default();
            if name == network.name && theirs == subnet {
                ensured.insert(name, subnet);
                return Ok(());
            }
            let overlaps = theirs.parse::<ipnet::Ipv4Net>().is_ok_and(|t| {
                t.contains(&network.subnet.network()) || network.subnet.contains(&t.network())
            });
            if name == network.name || overlaps {
                // A stale network in the way: gone if no container uses it, else the
                // engine's refusal says which one is in the way.
                info!(stale = %name, subnet = %theirs, "removing a pod network in the way");
                self.docker
                    .remove_network(&name)
                    .await
                    .map_err(|e| engine_error(e, &format!("pod network {name}")))?;
                ensured.remove(&name);
            }
        }
        let request = NetworkCreateRequest {
            name: network.name.clone(),
            driver: Some("bridge".into()),
            ipam: Some(Ipam {
                config: Some(vec![IpamConfig {
                    subnet: Some(subnet.clone()),
                    gateway: Some(network.gateway().to_string()),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            // Pods reach each other and other nodes' pods by their own addresses (a flat
            // network, no NAT); the network agent masquerades what leaves the cluster.
            options: Some(HashMap::from([(
                "com.docker.network.bridge.enable_ip_masquerade".to_string(),
                "false".to_string(),
            )])),
            labels: Some(HashMap::from([
                (LABEL_NETWORK_NODE.to_string(), network.node.clone()),
                (LABEL_NETWORK_SUBNET.to_string(), subnet.clone()),
            ])),
            ..Default::default()
        };
        match self.docker.create_network(request).await {
            Ok(_) => info!("pod network created"),
            // Made meanwhile by another kubelet of this engine under the same name.
            Err(e) if status_of(&e) == Some(409) => {}
            Err(e) => return Err(engine_error(e, &format!("pod network {}", network.name))),
        }
        ensured.insert(network.name.clone(), subnet);
        Ok(())
    }

    #[instrument(skip(self, spec), fields(pod = %spec.pod.name, ns = %spec.pod.namespace, node = %spec.pod.node))]
    async fn run_sandbox(&self, spec: &SandboxSpec) -> Result<SandboxInfo, RuntimeError> {
        self.ensure_pause().await?;
        if let Some(net) = &spec.network {
            self.ensure_network(net).await?;
        }
        let name = container_name(&spec.pod, SANDBOX_CONTAINER, 0);
        let body = sandbox_body(spec, &self.pause_image);
        let id = match self.create_and_start(&name, body.clone()).await {
            // Someone removed the pause image or the pod network since we checked: make
            // them again, once.
            Err(RuntimeError::NotFound(_)) => {
                *self.pause_ready.lock().await = false;
                self.ensure_pause().await?;
                if let Some(net) = &spec.network {
                    self.networks.lock().await.remove(&net.name);
                    self.ensure_network(net).await?;
                }
                self.create_and_start(&name, body).await?
            }
            other => other?,
        };
        let ip = self.sandbox_ip(&id).await?;
        info!(sandbox = %short(&id), %ip, "sandbox running");
        Ok(SandboxInfo { id, ip })
    }

    #[instrument(skip(self, spec), fields(container = %spec.name, image = %spec.image, sandbox = %short(&spec.sandbox_id)))]
    async fn start_container(&self, spec: &ContainerSpec) -> Result<String, RuntimeError> {
        let pod = spec.pod.as_ref().ok_or_else(|| {
            RuntimeError::Failed(format!("container {} has no pod reference", spec.name))
        })?;
        let name = container_name(pod, &spec.name, spec.attempt);
        let id = self.create_and_start(&name, app_body(spec, pod)).await?;
        debug!(id = %short(&id), "container started");
        Ok(id)
    }

    #[instrument(skip(self), fields(id = %short(id), grace_secs = grace.as_secs()))]
    async fn stop(&self, id: &str, grace: Duration) -> Result<(), RuntimeError> {
        let secs = i32::try_from(grace.as_secs()).unwrap_or(i32::MAX);
        let options = StopContainerOptionsBuilder::default().t(secs).build();
        // The engine answers only once the container is gone, i.e. after up to `grace`:
        // the client's request timeout must outlast it.
        let docker = self
            .docker
            .clone()
            .with_timeout(grace + Duration::from_secs(60));
        docker
            .stop_container(id, Some(options))
            .await
            .map_err(|e| engine_error(e, id))
    }

    /// Idempotent: removing a container that is already gone (or going) succeeds.
    #[instrument(skip(self), fields(id = %short(id)))]
    async fn remove(&self, id: &str) -> Result<(), RuntimeError> {
        let options = RemoveContainerOptionsBuilder::default()
            .force(true)
            .v(true)
            .build();
        match self.docker.remove_container(id, Some(options)).await {
            Ok(()) => Ok(()),
            Err(e) if status_of(&e) == Some(404) => Ok(()),
            Err(e) if status_of(&e) == Some(409) && engine_message(&e).contains("in progress") => {
                Ok(())
            }
            Err(e) => Err(engine_error(e, id)),
        }
    }

    #[instrument(skip(self), fields(node = %node))]
    async fn list(&self, node: &str) -> Result<Vec<ContainerInfo>, RuntimeError> {
        let filters = HashMap::from([("label", vec![format!("{LABEL_NODE}={node}")])]);
        let options = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        let summaries = self
            .docker
            .list_containers(Some(options))
            .await
            .map_err(|e| engine_error(e, node))?;
        let ids: Vec<String> = summaries.into_iter().filter_map(|s| s.id).collect();
        // The list lacks exit codes and timestamps; inspect each (concurrently) for them.
        let inspected: Vec<Result<ContainerInfo, RuntimeError>> = futures::stream::iter(ids)
            .map(|id| async move { self.inspect(&id).await })
            .buffered(LIST_INSPECT_CONCURRENCY)
            .collect()
            .await;
        let mut containers = Vec::with_capacity(inspected.len());
        for result in inspected {
            match result {
                Ok(info) => containers.push(info),
                // Removed between the list and the inspect: it is simply not there.
                Err(RuntimeError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(containers)
    }

    async fn inspect(&self, id: &str) -> Result<ContainerInfo, RuntimeError> {
        container_info(self.inspect_raw(id).await?)
    }

    async fn image_user(&self, image: &str) -> Result<String, RuntimeError> {
        let found = self
            .docker
            .inspect_image(image)
            .await
            .map_err(|e| engine_error(e, image))?;
        Ok(found.config.and_then(|c| c.user).unwrap_or_default())
    }

    async fn sandbox_ip(&self, id: &str) -> Result<String, RuntimeError> {
        let inspect = self.inspect_raw(id).await?;
        let host_network = inspect
            .host_config
            .as_ref()
            .and_then(|h| h.network_mode.as_deref())
            == Some("host");
        if host_network {
            return Ok(String::new());
        }
        if let Some(pid) = inspect
            .state
            .as_ref()
            .and_then(|s| s.pid)
            .filter(|p| *p > 0)
        {
            if let Err(e) = hairpin(pid) {
                tracing::debug!(sandbox = %short(id), error = %e, "hairpin mode not set");
            }
        }
        ip_of(&inspect)
            .ok_or_else(|| RuntimeError::Failed(format!("sandbox {} has no IP address", short(id))))
    }

    /// A command still running at `timeout` is reported as `Failed` (a probe failure); the
    /// engine offers no way to kill an exec'd process, so it is left to finish.
    #[instrument(skip(self, cmd), fields(id = %short(id), cmd = ?cmd))]
    async fn exec(
        &self,
        id: &str,
        cmd: &[String],
        timeout: Duration,
    ) -> Result<ExecResult, RuntimeError> {
        let config = ExecConfig {
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            cmd: Some(cmd.to_vec()),
            ..Default::default()
        };
        let created = self
            .docker
            .create_exec(id, config)
            .await
            .map_err(|e| engine_error(e, id))?;
        let run = async {
            let output = self.exec_output(&created.id).await?;
            let exit_code = self.wait_exec_exit(&created.id).await?;
            Ok(ExecResult { exit_code, output })
        };
        tokio::time::timeout(timeout, run)
            .await
            .unwrap_or_else(|_| {
                Err(RuntimeError::Failed(format!(
                    "command {cmd:?} timed out after {timeout:?}"
                )))
            })
    }

    async fn logs(&self, id: &str, opts: &LogOptions) -> Result<LogStream, RuntimeError> {
        // The log stream reports a missing container only when first polled; check up
        // front so the caller gets `NotFound` rather than a stream that fails.
        self.inspect_raw(id).await?;
        let tail = opts
            .tail_lines
            .map_or_else(|| "all".to_string(), |n| n.to_string());
        let options = LogsOptionsBuilder::default()
            .follow(opts.follow)
            .stdout(true)
            .stderr(true)
            .timestamps(opts.timestamps)
            .since(
                opts.since
                    .map_or(0, |t| t.timestamp().clamp(0, i64::from(i32::MAX)) as i32),
            )
            .tail(&tail)
            .build();
        let id = id.to_string();
        let stream = self
            .docker
            .logs(&id, Some(options))
            .map(move |chunk| {
                chunk
                    .map(LogOutput::into_bytes)
                    .map_err(|e| engine_error(e, &id))
            })
            .boxed();
        Ok(stream)
    }

    #[instrument(skip(self), fields(container = %short(id)))]
    async fn stats(&self, id: &str) -> Result<ContainerStats, RuntimeError> {
        // One-shot: one reading without the engine's own second sample (which costs a
        // second per call); the kubelet computes rates from its successive readings.
        let options = StatsOptionsBuilder::default()
            .stream(false)
            .one_shot(true)
            .build();
        let reading = self
            .docker
            .stats(id, Some(options))
            .next()
            .await
            .ok_or_else(|| RuntimeError::Failed(format!("no stats for container {}", short(id))))?
            .map_err(|e| engine_error(e, id))?;
        stats_from(&reading).ok_or_else(|| {
            RuntimeError::Failed(format!(
                "container {} reported no CPU usage (not running?)",
                short(id)
            ))
        })
    }

    #[instrument(skip(self, req), fields(container = %short(id)))]
    async fn exec_start(&self, id: &str, req: &ExecRequest) -> Result<ExecSession, RuntimeError> {
        let config = ExecConfig {
            attach_stdin: Some(req.stdin),
            attach_stdout: Some(req.stdout),
            attach_stderr: Some(req.stderr),
            tty: Some(req.tty),
            cmd: Some(req.command.clone()),
            ..Default::default()
        };
        let created = self
            .docker
            .create_exec(id, config)
            .await
            .map_err(|e| engine_error(e, id))?;
        let options = StartExecOptions {
            detach: false,
            tty: req.tty,
            output_capacity: Some(64 * 1024),
        };
        let started = self
            .docker
            .start_exec(&created.id, Some(options))
            .await
            .map_err(|e| engine_error(e, &created.id))?;
        let StartExecResults::Attached { output, input } = started else {
            return Err(RuntimeError::Failed("the engine detached the exec".into()));
        };
        let exec_id = created.id.clone();
        let output = output
            .map(move |chunk| match chunk {
                Ok(LogOutput::StdErr { message }) => Ok(Output::Stderr(message)),
                Ok(LogOutput::StdOut { message } | LogOutput::Console { message }) => {
                    Ok(Output::Stdout(message))
                }
                Ok(LogOutput::StdIn { message }) => Ok(Output::Stdout(message)),
                Err(e) => Err(engine_error(e, &exec_id)),
            })
            .boxed();
        Ok(ExecSession {
            id: created.id,
            output,
            stdin: req.stdin.then_some(input),
        })
    }

    async fn exec_resize(
        &self,
        exec_id: &str,
        width: u16,
        height: u16,
    ) -> Result<(), RuntimeError> {
        self.docker
            .resize_exec(exec_id, ResizeExecOptions { height, width })
            .await
            .map_err(|e| engine_error(e, exec_id))
    }

    async fn exec_exit_code(&self, exec_id: &str) -> Result<i64, RuntimeError> {
        self.wait_exec_exit(exec_id).await
    }

    async fn exec_kill(&self, exec_id: &str) -> Result<(), RuntimeError> {
        let inspect = self
            .docker
            .inspect_exec(exec_id)
            .await
            .map_err(|e| engine_error(e, exec_id))?;
        // The engine has no call to stop an exec: its process is killed by its pid, which
        // the engine reports in the host's pid namespace (this node's).
        match (inspect.running, inspect.pid) {
            (Some(true), Some(pid)) if pid > 0 => {
                // SAFETY: kill(2) with a pid the engine reported; no memory is involved.
                let rc = unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
                if rc != 0 {
                    let err = std::io::Error::last_os_error();
                    if err.raw_os_error() != Some(libc::ESRCH) {
                        return Err(RuntimeError::Failed(format!(
                            "cannot kill exec process {pid}: {err}"
                        )));
                    }
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    #[instrument(skip(self, req), fields(container = %short(id)))]
    async fn attach_start(&self, id: &str, req: &ExecRequest) -> Result<ExecSession, RuntimeError> {
        let options = AttachContainerOptionsBuilder::default()
            .stdin(req.stdin)
            .stdout(req.stdout)
            .stderr(req.stderr)
            .stream(true)
            .logs(false)
            .build();
        // The engine ends an attach's output as soon as its stdin ends, unless the
        // container closes its stdin then (`stdinOnce`); a client that closes its stdin
        // still sees what the container answers, so for the others its end is not passed on.
        let stdin_once = match req.stdin {
            true => self
                .docker
                .inspect_container(id, None)
                .await
                .map_err(|e| engine_error(e, id))?
                .config
                .and_then(|c| c.stdin_once)
                .unwrap_or(false),
            false => false,
        };
        let attached = self
            .docker
            .attach_container(id, Some(options))
            .await
            .map_err(|e| engine_error(e, id))?;
        let input: std::pin::Pin<Box<dyn tokio::io::AsyncWrite + Send>> = if stdin_once {
            attached.input
        } else {
            Box::pin(KeepOpen(attached.input))
        };
        let owner = id.to_string();
        let output = attached
            .output
            .map(move |chunk| match chunk {
                Ok(LogOutput::StdErr { message }) => Ok(Output::Stderr(message)),
                Ok(
                    LogOutput::StdOut { message }
                    | LogOutput::Console { message }
                    | LogOutput::StdIn { message },
                ) => Ok(Output::Stdout(message)),
                Err(e) => Err(engine_error(e, &owner)),
            })
            .boxed();
        Ok(ExecSession {
            id: id.to_string(),
            output,
            stdin: req.stdin.then_some(input),
        })
    }

    async fn attach_resize(&self, id: &str, width: u16, height: u16) -> Result<(), RuntimeError> {
        let options = ResizeContainerTTYOptionsBuilder::default()
            .w(i32::from(width))
            .h(i32::from(height))
            .build();
        self.docker
            .resize_container_tty(id, options)
            .await
            .map_err(|e| engine_error(e, id))
    }

    async fn network_namespace(
        &self,
        sandbox_id: &str,
    ) -> Result<Option<std::path::PathBuf>, RuntimeError> {
        let inspect = self.inspect_raw(sandbox_id).await?;
        let host = inspect
            .host_config
            .as_ref()
            .and_then(|h| h.network_mode.as_deref())
            == Some("host");
        if host {
            return Ok(None);
        }
        match inspect.state.as_ref().and_then(|s| s.pid) {
            Some(pid) if pid > 0 => Ok(Some(format!("/proc/{pid}/ns/net").into())),
            _ => Err(RuntimeError::Failed(format!(
                "sandbox {} is not running",
                short(sandbox_id)
            ))),
        }
    }
}

/// CPU and working-set memory from one engine reading, the way the kubelet's cAdvisor
/// figures them: working set is usage minus inactive file cache (cgroup v1 calls it
/// `total_inactive_file`, v2 `inactive_file`).
fn stats_from(reading: &ContainerStatsResponse) -> Option<ContainerStats> {
    let cpu = reading
        .cpu_stats
        .as_ref()?
        .cpu_usage
        .as_ref()?
        .total_usage?;
    let memory = reading.memory_stats.as_ref();
    let usage = memory.and_then(|m| m.usage).unwrap_or(0);
    let inactive = memory
        .and_then(|m| m.stats.as_ref())
        .and_then(|s| {
            s.get("total_inactive_file")
                .or_else(|| s.get("inactive_file"))
        })
        .copied()
        .unwrap_or(0);
    Some(ContainerStats {
        cpu_usage_ns: cpu,
        memory_working_set_bytes: usage.saturating_sub(inactive),
        at: chrono::Utc::now(),
    })
}

impl DockerRuntime {
    async fn exec_output(&self, exec_id: &str) -> Result<String, RuntimeError> {
        let started = self
            .docker
            .start_exec(exec_id, None)
            .await
            .map_err(|e| engine_error(e, exec_id))?;
        let StartExecResults::Attached { mut output, .. } = started else {
            return Ok(String::new());
        };
        let mut collected = Vec::new();
        while let Some(chunk) = output.next().await {
            let chunk = chunk.map_err(|e| engine_error(e, exec_id))?;
            let room = EXEC_OUTPUT_LIMIT.saturating_sub(collected.len());
            let bytes = chunk.into_bytes();
            collected.extend_from_slice(&bytes[..bytes.len().min(room)]);
        }
        Ok(String::from_utf8_lossy(&collected).into_owned())
    }

    /// The output stream can close a moment before the engine records the exit code.
    async fn wait_exec_exit(&self, exec_id: &str) -> Result<i64, RuntimeError> {
        loop {
            let inspect = self
                .docker
                .inspect_exec(exec_id)
                .await
                .map_err(|e| engine_error(e, exec_id))?;
            if inspect.running != Some(true) {
                return Ok(inspect.exit_code.unwrap_or(-1));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// `skiff_<node>_<ns>_<pod>_<container>_<attempt>`; Kubernetes names never contain `_`,
/// so the parts stay unambiguous. Characters the engine rejects become `-`.
pub fn container_name(pod: &PodRef, container: &str, attempt: u32) -> String {
    let parts = [
        pod.node.as_str(),
        pod.namespace.as_str(),
        pod.name.as_str(),
        container,
    ];
    let mut name = String::from("skiff");
    for part in parts {
        name.push('_');
        name.extend(part.chars().map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        }));
    }
    name.push_str(&format!("_{attempt}"));
    name
}

/// The `LABEL_*` labels identifying a container of `pod`.
pub fn pod_labels(pod: &PodRef, container: &str, attempt: u32) -> HashMap<String, String> {
    HashMap::from([
        (LABEL_POD_UID.to_string(), pod.uid.clone()),
        (LABEL_POD_NAME.to_string(), pod.name.clone()),
        (LABEL_POD_NAMESPACE.to_string(), pod.namespace.clone()),
        (LABEL_NODE.to_string(), pod.node.clone()),
        (LABEL_CONTAINER.to_string(), container.to_string()),
        (LABEL_ATTEMPT.to_string(), attempt.to_string()),
    ])
}

fn no_restart() -> RestartPolicy {
    // The pod worker owns restarts (with backoff and restartCount); the engine must not.
    RestartPolicy {
        name: Some(RestartPolicyNameEnum::NO),
        maximum_retry_count: None,
    }
}

/// The pause container: hostname, published host ports, shareable IPC; or the host's
/// network, PID and IPC namespaces as the pod asks.
pub fn sandbox_body(spec: &SandboxSpec, pause_image: &str) -> ContainerCreateBody {
    let ns = spec.namespaces;
    let mut bindings: HashMap<String, Option<Vec<PortBinding>>> = HashMap::new();
    for (container_port, host_port, protocol) in &spec.host_ports {
        let key = format!("{container_port}/{}", protocol.to_ascii_lowercase());
        bindings
            .entry(key)
            .or_insert_with(|| Some(Vec::new()))
            .get_or_insert_with(Vec::new)
            .push(PortBinding {
                host_ip: None,
                host_port: Some(host_port.to_string()),
            });
    }
    let mut exposed: Vec<String> = bindings.keys().cloned().collect();
    exposed.sort();
    let sysctls: HashMap<String, String> = spec.sysctls.iter().cloned().collect();
    ContainerCreateBody {
        image: Some(pause_image.to_string()),
        // On the host's network the pod has the node's hostname (the engine refuses
        // both), and its ports are the host's already.
        hostname: (!ns.network).then(|| pod_hostname(&spec.hostname)),
        labels: Some(pod_labels(&spec.pod, SANDBOX_CONTAINER, 0)),
        exposed_ports: (!exposed.is_empty() && !ns.network).then_some(exposed),
        host_config: Some(HostConfig {
            port_bindings: (!bindings.is_empty() && !ns.network).then_some(bindings),
            network_mode: if ns.network {
                Some("host".to_string())
            } else {
                spec.network.as_ref().map(|n| n.name.clone())
            },
            // App containers join this IPC namespace, which the engine allows only from
            // a `shareable` one (20.10 defaults to `private`).
            ipc_mode: Some(if ns.ipc { "host" } else { "shareable" }.into()),
            pid_mode: ns.pid.then(|| "host".to_string()),
            sysctls: (!sysctls.is_empty()).then_some(sysctls),
            init: Some(false),
            restart_policy: Some(no_restart()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A volume mount as the engine's `Binds` entry: `host:container[:ro,]<propagation>`.
pub fn bind(m: &Mount) -> String {
    let mut options = Vec::new();
    if m.read_only {
        options.push("ro");
    }
    options.push(m.propagation.as_engine());
    format!(
        "{}:{}:{}",
        m.host_path.display(),
        m.container_path,
        options.join(",")
    )
}

/// A writer whose shutdown only flushes: the connection's write side stays open.
struct KeepOpen(std::pin::Pin<Box<dyn tokio::io::AsyncWrite + Send>>);

impl tokio::io::AsyncWrite for KeepOpen {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.0.as_mut().poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        self.0.as_mut().poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        self.0.as_mut().poll_flush(cx)
    }
}

/// An app container joined to its sandbox's network and IPC namespaces. The PID namespace
/// stays private unless the pod shares one (`shareProcessNamespace`: the sandbox's) or the
/// host's; the security context becomes the engine's user, groups, capabilities and
/// security options.
pub fn app_body(spec: &ContainerSpec, pod: &PodRef) -> ContainerCreateBody {
    let sandbox = format!("container:{}", spec.sandbox_id);
    let ns = spec.namespaces;
    let pid_mode = if ns.pid {
        Some("host".to_string())
    } else if ns.share_pid {
        Some(sandbox.clone())
    } else {
        spec.pid_target.as_ref().map(|id| format!("container:{id}"))
    };
    let sec = &spec.security;
    let mut security_opt = sec.security_opt.clone();
    if sec.no_new_privileges {
        security_opt.push("no-new-privileges".into());
    }
    let some = |v: &Vec<String>| (!v.is_empty()).then(|| v.clone());
    let (entrypoint, cmd) = entrypoint_and_cmd(&spec.command, &spec.args);
    let env: Vec<String> = spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let memory = spec
        .memory_limit_bytes
        .map(|b| i64::try_from(b).unwrap_or(i64::MAX));
    let binds: Vec<String> = spec.mounts.iter().map(bind).collect();
    ContainerCreateBody {
        image: Some(spec.image.clone()),
        entrypoint,
        cmd,
        env: (!env.is_empty()).then_some(env),
        working_dir: spec.working_dir.clone().filter(|d| !d.is_empty()),
        labels: Some(pod_labels(pod, &spec.name, spec.attempt)),
        // `stdin`: kept open for `kubectl attach -i`; `stdinOnce`: closed when the first
        // attached client detaches.
        open_stdin: Some(spec.stdin),
        stdin_once: Some(spec.stdin_once),
        attach_stdin: Some(spec.stdin),
        tty: Some(spec.tty),
        user: sec.user.clone(),
        host_config: Some(HostConfig {
            network_mode: Some(sandbox.clone()),
            ipc_mode: Some(if ns.ipc { "host".to_string() } else { sandbox }),
            pid_mode,
            privileged: sec.privileged.then_some(true),
            readonly_rootfs: sec.read_only_rootfs.then_some(true),
            cap_add: some(&sec.cap_add),
            cap_drop: some(&sec.cap_drop),
            group_add: some(&sec.group_add),
            security_opt: some(&security_opt),
            binds: some(&binds),
            nano_cpus: spec
                .cpu_limit_millis
                .map(|m| i64::try_from(m.saturating_mul(1_000_000)).unwrap_or(i64::MAX)),
            memory,
            // Kubernetes gives containers no swap beyond their memory limit; the engine's
            // default (twice the limit) would delay or hide OOM kills.
            memory_swap: memory,
            init: Some(false),
            restart_policy: Some(no_restart()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Kubernetes `command`/`args` onto the engine's `Entrypoint`/`Cmd`:
/// command replaces the entrypoint and drops the image's cmd unless args are given;
/// args alone replace only the cmd.
pub fn entrypoint_and_cmd(
    command: &[String],
    args: &[String],
) -> (Option<Vec<String>>, Option<Vec<String>>) {
    let entrypoint = (!command.is_empty()).then(|| command.to_vec());
    let cmd = match (command.is_empty(), args.is_empty()) {
        (_, false) => Some(args.to_vec()),
        (false, true) => Some(Vec::new()),
        (true, true) => None,
    };
    (entrypoint, cmd)
}

/// A hostname the engine accepts: at most 63 characters, not ending in `-` or `.`.
fn pod_hostname(hostname: &str) -> String {
    let cut: String = hostname.chars().take(HOSTNAME_MAX).collect();
    cut.trim_end_matches(['-', '.']).to_string()
}

/// The pod IP: the address on the network the sandbox was started in (the node's pod
/// network, or the default bridge), else on any attached network.
fn ip_of(inspect: &ContainerInspectResponse) -> Option<String> {
    let networks = inspect.network_settings.as_ref()?.networks.as_ref()?;
    let usable = |name: &str| {
        networks
            .get(name)
            .and_then(|n| n.ip_address.clone())
            .filter(|ip| !ip.is_empty())
    };
    let mode = inspect
        .host_config
        .as_ref()
        .and_then(|h| h.network_mode.as_deref())
        .filter(|m| !matches!(*m, "default" | "host" | "none") && !m.starts_with("container:"));
    mode.and_then(usable)
        .or_else(|| usable("bridge"))
        .or_else(|| {
            let mut names: Vec<&String> = networks.keys().collect();
            names.sort();
            names.into_iter().find_map(|n| usable(n))
        })
}

/// Maps an engine inspect onto the runtime's view of a container.
pub fn container_info(inspect: ContainerInspectResponse) -> Result<ContainerInfo, RuntimeError> {
    let id = inspect
        .id
        .clone()
        .ok_or_else(|| RuntimeError::Failed("engine returned a container without id".into()))?;
    let config = inspect.config.as_ref();
    let labels: BTreeMap<String, String> = config
        .and_then(|c| c.labels.clone())
        .unwrap_or_default()
        .into_iter()
        .collect();
    Ok(ContainerInfo {
        id,
        labels,
        image: config.and_then(|c| c.image.clone()).unwrap_or_default(),
        image_id: inspect.image.clone().unwrap_or_default(),
        state: inspect
            .state
            .as_ref()
            .map_or(ContainerState::Unknown, map_state),
    })
}

/// Engine state → runtime state, with the kubelet's termination reasons.
pub fn map_state(state: &EngineState) -> ContainerState {
    let started_at = rfc3339(state.started_at.as_deref());
    match state.status {
        Some(ContainerStateStatusEnum::CREATED) => ContainerState::Created,
        Some(
            ContainerStateStatusEnum::RUNNING
            | ContainerStateStatusEnum::PAUSED
            | ContainerStateStatusEnum::RESTARTING,
        ) => ContainerState::Running { started_at },
        Some(ContainerStateStatusEnum::EXITED | ContainerStateStatusEnum::DEAD) => {
            let exit_code = state.exit_code.unwrap_or(-1);
            let reason = if state.oom_killed == Some(true) {
                "OOMKilled"
            } else if exit_code == 0 {
                "Completed"
            } else {
                "Error"
            };
            ContainerState::Exited {
                exit_code,
                reason: reason.to_string(),
                started_at,
                finished_at: rfc3339(state.finished_at.as_deref()),
            }
        }
        _ => ContainerState::Unknown,
    }
}

/// Engine timestamps (RFC 3339 with nanoseconds) at the second precision Kubernetes
/// uses; the engine's zero time (`0001-01-01T00:00:00Z`, "never") becomes empty.
pub fn rfc3339(ts: Option<&str>) -> String {
    let Some(parsed) = ts.and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok()) else {
        return String::new();
    };
    let utc = parsed.with_timezone(&chrono::Utc);
    if chrono::Datelike::year(&utc) <= 1 {
        return String::new();
    }
    utc.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// `busybox` → `["busybox", "busybox:latest"]`: the engine's API resolves only exact
/// references, while users (and the CLI) mean `:latest` when no tag is given.
pub fn image_candidates(image: &str) -> Vec<String> {
    match split_reference(image) {
        (repo, None) => vec![image.to_string(), format!("{repo}:latest")],
        _ => vec![image.to_string()],
    }
}

/// `repo[:tag]` or `repo@digest` → (repo, tag or digest). A `:` before the last `/` is a
/// registry port, not a tag.
pub fn split_reference(image: &str) -> (String, Option<String>) {
    if let Some((repo, digest)) = image.split_once('@') {
        return (repo.to_string(), Some(digest.to_string()));
    }
    let last_slash = image.rfind('/').map_or(0, |i| i + 1);
    match image[last_slash..].rfind(':') {
        Some(i) => {
            let at = last_slash + i;
            (image[..at].to_string(), Some(image[at + 1..].to_string()))
        }
        None => (image.to_string(), None),
    }
}

fn status_of(e: &EngineError) -> Option<u16> {
    match e {
        EngineError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

/// The engine's own message when it sent one, else the client error.
fn engine_message(e: &EngineError) -> String {
    match e {
        EngineError::DockerResponseServerError { message, .. } => message.clone(),
        EngineError::DockerStreamError { error } => error.clone(),
        other => other.to_string(),
    }
}

/// Maps a client error about `what` (a container id, name or image) to a `RuntimeError`:
/// 404 is `NotFound`, a dead socket or timeout is `Unavailable`, the rest `Failed` with
/// the engine's message.
pub(crate) fn engine_error(e: EngineError, what: &str) -> RuntimeError {
    match &e {
        EngineError::DockerResponseServerError {
            status_code: 404, ..
        } => RuntimeError::NotFound(format!("{what}: {}", engine_message(&e))),
        EngineError::SocketNotFoundError(_)
        | EngineError::RequestTimeoutError
        | EngineError::IOError { .. }
        | EngineError::HyperLegacyError { .. } => RuntimeError::Unavailable(e.to_string()),
        _ => RuntimeError::Failed(engine_message(&e)),
    }
}

/// The first 12 characters of an id, as the engine's CLI shows them.
fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

/// Hairpin mode on the bridge port of the sandbox's veth (the kubelet's `hairpin-veth`):
/// with the bridge's netfilter on, a pod whose connection to its own Service is DNATed
/// back to itself gets its packets back through the port they came in on, which a bridge
/// refuses otherwise. The host's end is the interface whose index is the container's
/// `eth0` peer (`iflink`).
fn hairpin(pid: i64) -> std::io::Result<()> {
    let peer = std::fs::read_to_string(format!("/proc/{pid}/root/sys/class/net/eth0/iflink"))?;
    let peer = peer.trim();
    for entry in std::fs::read_dir("/sys/class/net")? {
        let dir = entry?.path();
        let index = std::fs::read_to_string(dir.join("ifindex")).unwrap_or_default();
        if index.trim() == peer {
            let port = dir.join("brport/hairpin_mode");
            return if port.exists() {
                std::fs::write(port, "1")
            } else {
                Ok(())
            };
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use bollard::models::{ContainerConfig, EndpointSettings, NetworkSettings};

    use super::*;

    #[test]
    fn working_set_is_usage_minus_inactive_file_cache() {
        let reading: ContainerStatsResponse = serde_json::from_value(serde_json::json!({
            "cpu_stats": {"cpu_usage": {"total_usage": 123_456_789u64}},
            "memory_stats": {"usage": 10_485_760u64, "stats": {"total_inactive_file": 4_194_304u64}},
        }))
        .expect("stats json");
        let stats = stats_from(&reading).expect("stats");
        assert_eq!(stats.cpu_usage_ns, 123_456_789);
        assert_eq!(stats.memory_working_set_bytes, 6 << 20);
        // A stopped container reports no CPU counters.
        let empty: ContainerStatsResponse =
            serde_json::from_value(serde_json::json!({"cpu_stats": {}})).expect("json");
        assert!(stats_from(&empty).is_none());
    }

    fn pod() -> PodRef {
        PodRef {
            uid: "uid-1".into(),
            name: "web-0".into(),
            namespace: "default".into(),
            node: "node-a".into(),
        }
    }

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    fn exited(code: i64, oom: bool) -> EngineState {
        EngineState {
            status: Some(ContainerStateStatusEnum::EXITED),
            exit_code: Some(code),
            oom_killed: Some(oom),
            started_at: Some("2024-05-01T10:00:00.123456789Z".into()),
            finished_at: Some("2024-05-01T10:00:05.5Z".into()),
            ..Default::default()
        }
    }

    #[test]
    fn container_names_follow_the_skiff_pattern() {
        assert_eq!(
            container_name(&pod(), "app", 3),
            "skiff_node-a_default_web-0_app_3"
        );
        assert_eq!(
            container_name(&pod(), SANDBOX_CONTAINER, 0),
            "skiff_node-a_default_web-0_POD_0"
        );
    }

    #[test]
    fn characters_the_engine_rejects_are_replaced_in_names() {
        let mut p = pod();
        p.name = "a b/c".into();
        assert_eq!(container_name(&p, "x", 0), "skiff_node-a_default_a-b-c_x_0");
    }

    #[test]
    fn labels_identify_pod_node_container_and_attempt() {
        let labels = pod_labels(&pod(), "app", 2);
        assert_eq!(labels[LABEL_POD_UID], "uid-1");
        assert_eq!(labels[LABEL_POD_NAME], "web-0");
        assert_eq!(labels[LABEL_POD_NAMESPACE], "default");
        assert_eq!(labels[LABEL_NODE], "node-a");
        assert_eq!(labels[LABEL_CONTAINER], "app");
        assert_eq!(labels[LABEL_ATTEMPT], "2");
    }

    #[test]
    fn command_alone_clears_the_image_cmd() {
        let (entrypoint, cmd) = entrypoint_and_cmd(&strings(&["sleep"]), &[]);
        assert_eq!(entrypoint, Some(strings(&["sleep"])));
        assert_eq!(cmd, Some(vec![]));
    }

    #[test]
    fn args_alone_keep_the_image_entrypoint() {
        let (entrypoint, cmd) = entrypoint_and_cmd(&[], &strings(&["10"]));
        assert_eq!(entrypoint, None);
        assert_eq!(cmd, Some(strings(&["10"])));
    }

    #[test]
    fn neither_command_nor_args_keeps_image_defaults() {
        assert_eq!(entrypoint_and_cmd(&[], &[]), (None, None));
        let (e, c) = entrypoint_and_cmd(&strings(&["sh", "-c"]), &strings(&["echo hi"]));
        assert_eq!((e.unwrap().len(), c.unwrap().len()), (2, 1));
    }

    #[test]
    fn app_containers_join_the_sandbox_and_carry_limits() {
        let spec = ContainerSpec {
            pod: Some(pod()),
            name: "app".into(),
            image: "skiff/busybox:latest".into(),
            env: vec![("A".into(), "1".into())],
            working_dir: Some("/tmp".into()),
            cpu_limit_millis: Some(250),
            memory_limit_bytes: Some(64 << 20),
            sandbox_id: "abc".into(),
            attempt: 1,
            ..Default::default()
        };
        let body = app_body(&spec, &pod());
        let host = body.host_config.unwrap();
        assert_eq!(host.network_mode.as_deref(), Some("container:abc"));
        assert_eq!(host.ipc_mode.as_deref(), Some("container:abc"));
        assert_eq!(host.pid_mode, None);
        assert_eq!(host.nano_cpus, Some(250_000_000));
        assert_eq!(host.memory, Some(64 << 20));
        assert_eq!(host.memory_swap, Some(64 << 20));
        assert_eq!(
            host.restart_policy.unwrap().name,
            Some(RestartPolicyNameEnum::NO)
        );
        assert_eq!(body.env, Some(strings(&["A=1"])));
        assert_eq!(body.working_dir.as_deref(), Some("/tmp"));
        assert_eq!(body.labels.unwrap()[LABEL_ATTEMPT], "1");
    }

    #[test]
    fn sandbox_publishes_host_ports_and_shares_ipc() {
        let spec = SandboxSpec {
            pod: pod(),
            hostname: format!("{}-", "h".repeat(70)),
            host_ports: vec![(8080, 18080, "TCP".into()), (53, 5353, "udp".into())],
            ..Default::default()
        };
        let body = sandbox_body(&spec, "skiff/pause:1.0");
        assert_eq!(body.hostname.as_deref().map(str::len), Some(63));
        assert_eq!(body.exposed_ports, Some(strings(&["53/udp", "8080/tcp"])));
        let host = body.host_config.unwrap();
        assert_eq!(host.ipc_mode.as_deref(), Some("shareable"));
        let bindings = host.port_bindings.unwrap();
        let tcp = bindings["8080/tcp"].as_ref().unwrap();
        assert_eq!(tcp[0].host_port.as_deref(), Some("18080"));
        assert_eq!(body.labels.unwrap()[LABEL_CONTAINER], SANDBOX_CONTAINER);
    }

    #[test]
    fn exit_zero_is_completed_and_nonzero_is_error() {
        match map_state(&exited(0, false)) {
            ContainerState::Exited {
                exit_code,
                reason,
                started_at,
                finished_at,
            } => {
                assert_eq!((exit_code, reason.as_str()), (0, "Completed"));
                assert_eq!(started_at, "2024-05-01T10:00:00Z");
                assert_eq!(finished_at, "2024-05-01T10:00:05Z");
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(
            map_state(&exited(3, false)),
            ContainerState::Exited { exit_code: 3, reason, .. } if reason == "Error"
        ));
    }

    #[test]
    fn oom_killed_wins_over_the_exit_code() {
        assert!(matches!(
            map_state(&exited(137, true)),
            ContainerState::Exited { reason, .. } if reason == "OOMKilled"
        ));
    }

    #[test]
    fn running_created_and_unknown_states_are_mapped() {
        let running = EngineState {
            status: Some(ContainerStateStatusEnum::RUNNING),
            started_at: Some("2024-05-01T10:00:00Z".into()),
            ..Default::default()
        };
        assert_eq!(
            map_state(&running),
            ContainerState::Running {
                started_at: "2024-05-01T10:00:00Z".into()
            }
        );
        let created = EngineState {
            status: Some(ContainerStateStatusEnum::CREATED),
            ..Default::default()
        };
        assert_eq!(map_state(&created), ContainerState::Created);
        assert_eq!(map_state(&EngineState::default()), ContainerState::Unknown);
    }

    #[test]
    fn the_engines_zero_time_means_never() {
        assert_eq!(rfc3339(Some("0001-01-01T00:00:00Z")), "");
        assert_eq!(rfc3339(None), "");
        assert_eq!(rfc3339(Some("garbage")), "");
    }

    #[test]
    fn inspect_maps_labels_image_and_ip() {
        let inspect = ContainerInspectResponse {
            id: Some("0123456789abcdef".into()),
            image: Some("sha256:feed".into()),
            config: Some(ContainerConfig {
                image: Some("skiff/pause:1.0".into()),
                labels: Some(HashMap::from([(
                    LABEL_CONTAINER.to_string(),
                    "POD".to_string(),
                )])),
                ..Default::default()
            }),
            network_settings: Some(NetworkSettings {
                networks: Some(HashMap::from([(
                    "bridge".to_string(),
                    EndpointSettings {
                        ip_address: Some("172.17.0.5".into()),
                        ..Default::default()
                    },
                )])),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(ip_of(&inspect).as_deref(), Some("172.17.0.5"));
        let info = container_info(inspect).unwrap();
        assert!(info.is_sandbox());
        assert_eq!(info.image, "skiff/pause:1.0");
        assert_eq!(info.image_id, "sha256:feed");
        assert_eq!(info.state, ContainerState::Unknown);
    }

    #[test]
    fn image_references_split_tags_from_registry_ports() {
        assert_eq!(split_reference("busybox"), ("busybox".into(), None));
        assert_eq!(
            split_reference("skiff/pause:1.0"),
            ("skiff/pause".into(), Some("1.0".into()))
        );
        assert_eq!(
            split_reference("localhost:5000/app"),
            ("localhost:5000/app".into(), None)
        );
        assert_eq!(
            split_reference("app@sha256:abc"),
            ("app".into(), Some("sha256:abc".into()))
        );
        assert_eq!(
            image_candidates("busybox"),
            strings(&["busybox", "busybox:latest"])
        );
        assert_eq!(image_candidates("nope:1"), strings(&["nope:1"]));
    }

    #[test]
    fn engine_errors_keep_the_engines_message() {
        let missing = EngineError::DockerResponseServerError {
            status_code: 404,
            message: "No such container: x".into(),
        };
        assert_eq!(
            engine_error(missing, "x"),
            RuntimeError::NotFound("x: No such container: x".into())
        );
        let conflict = EngineError::DockerResponseServerError {
            status_code: 409,
            message: "name in use".into(),
        };
        assert_eq!(
            engine_error(conflict, "x"),
            RuntimeError::Failed("name in use".into())
        );
        assert!(matches!(
            engine_error(EngineError::RequestTimeoutError, "x"),
            RuntimeError::Unavailable(_)
        ));
    }
}
