//! The pod's containers in the runtime: adopting what already runs, the sandbox, the
//! restart decision with CrashLoopBackOff, and starting one attempt of a container.

use super::*;

/// One instance (attempt) of a container, as the runtime last reported it.
#[derive(Debug, Clone)]
pub(super) struct Instance {
    pub(super) id: String,
    pub(super) attempt: u32,
    pub(super) image_id: String,
    pub(super) state: ContainerState,
    /// The termination message, once the instance exited and it was read.
    pub(super) message: Option<String>,
    pub(super) message_read: bool,
}

impl Instance {
    pub(super) fn of(info: &ContainerInfo) -> Instance {
        Instance {
            id: info.id.clone(),
            attempt: info.attempt(),
            image_id: info.image_id.clone(),
            state: info.state.clone(),
            message: None,
            message_read: false,
        }
    }

    pub(super) fn running(&self) -> bool {
        matches!(self.state, ContainerState::Running { .. })
    }

    pub(super) fn terminated(&self, scheme: &str) -> Option<Terminated> {
        match &self.state {
            ContainerState::Exited {
                exit_code,
                reason,
                started_at,
                finished_at,
            } => Some(Terminated {
                exit_code: *exit_code,
                reason: reason.clone(),
                message: self.message.clone(),
                started_at: k8s_time(started_at),
                finished_at: k8s_time(finished_at),
                container_id: format!("{scheme}://{}", self.id),
            }),
            _ => None,
        }
    }
}

/// Why a container is waiting, as its status says.
pub(super) type Waiting = (String, Option<String>);

/// What the worker knows about one container of its pod.
#[derive(Debug, Clone)]
pub(super) struct ContainerRecord {
    pub(super) current: Option<Instance>,
    /// The instance before `current`: its end is the container's `lastState`, and it is
    /// kept for `kubectl logs --previous`.
    pub(super) previous: Option<Instance>,
    /// Set by a sync when the container cannot run now.
    pub(super) waiting: Option<Waiting>,
    pub(super) crash: Backoff,
    /// The exited instance the current crash backoff was started for.
    pub(super) crash_for: Option<String>,
    /// Backoff of the steps before a start (image, configuration, the start itself).
    pub(super) prepare: Backoff,
    pub(super) prepare_error: Option<Waiting>,
}

impl ContainerRecord {
    pub(super) fn new(cfg: &WorkerConfig) -> Self {
        ContainerRecord {
            current: None,
            previous: None,
            waiting: None,
            crash: cfg.backoff(),
            crash_for: None,
            prepare: cfg.backoff(),
            prepare_error: None,
        }
    }
}

/// What the worker knows about its pod in the runtime.
#[derive(Debug, Clone)]
pub struct PodState {
    pub(super) adopted: bool,
    pub(super) sandbox: Option<SandboxInfo>,
    pub(super) sandbox_backoff: Backoff,
    pub(super) sandbox_error: Option<String>,
    pub(super) containers: BTreeMap<String, ContainerRecord>,
    pub(super) start_time: Option<String>,
    /// `activeDeadlineSeconds` passed: the kubelet failed the pod.
    pub(super) deadline_exceeded: bool,
}

impl PodState {
    pub(super) fn new(cfg: &WorkerConfig) -> Self {
        PodState {
            adopted: false,
            sandbox: None,
            sandbox_backoff: cfg.backoff(),
            sandbox_error: None,
            containers: BTreeMap::new(),
            start_time: None,
            deadline_exceeded: false,
        }
    }
}

/// The CrashLoopBackOff message, worded as the kubelet words it.
pub fn crash_loop_message(wait: Duration, container: &str, pod: &Value) -> String {
    format!(
        "back-off {} restarting failed container={container} pod={}",
        go_duration(wait),
        pod_label(pod)
    )
}

/// How long an instance ran, from its runtime timestamps.
pub(super) fn ran_for(started_at: &str, finished_at: &str) -> Option<Duration> {
    (parse_time(finished_at)? - parse_time(started_at)?)
        .to_std()
        .ok()
}

/// The pull policy, defaulted as the API server would (Always for `:latest` or no tag).
pub(super) fn pull_policy(container: &Value) -> PullPolicy {
    if let Some(p) = container.get("imagePullPolicy").and_then(Value::as_str) {
        return PullPolicy::parse(Some(p));
    }
    let image = container
        .get("image")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let last = image.rsplit('/').next().unwrap_or(image);
    if image.contains('@') {
        PullPolicy::IfNotPresent
    } else if !last.contains(':') || last.ends_with(":latest") {
        PullPolicy::Always
    } else {
        PullPolicy::IfNotPresent
    }
}

/// The waiting reason of a failed image step.
pub(super) fn image_failure(e: &RuntimeError) -> &'static str {
    match e {
        RuntimeError::ImageNeverPull(_) => "ErrImageNeverPull",
        _ => "ErrImagePull",
    }
}

/// While backing off after a failed step, ErrImagePull reads ImagePullBackOff; the other
/// reasons stay as they were.
pub(super) fn backing_off(error: &Waiting, image: &str) -> Waiting {
    match error.0.as_str() {
        "ErrImagePull" => (
            "ImagePullBackOff".into(),
            Some(format!("Back-off pulling image \"{image}\"")),
        ),
        _ => error.clone(),
    }
}

/// Find what already runs for the pod: the newest running sandbox, and per container the
/// newest instance (current) and the one before (previous). Everything older goes.
pub(super) async fn adopt(
    deps: &WorkerDeps,
    pod: &Value,
    state: &mut PodState,
) -> Result<(), WorkerError> {
    let uid = meta::uid(pod).unwrap_or_default();
    let mut mine: Vec<ContainerInfo> = deps
        .runtime
        .list(&deps.config.node_name)
        .await?
        .into_iter()
        .filter(|c| c.pod_uid() == Some(uid))
        .collect();
    mine.sort_by_key(|c| c.attempt());
    let (sandboxes, apps): (Vec<_>, Vec<_>) = mine.into_iter().partition(ContainerInfo::is_sandbox);
    let keep = sandboxes
        .iter()
        .rev()
        .find(|s| matches!(s.state, ContainerState::Running { .. }))
        .map(|s| s.id.clone());
    for sb in sandboxes.iter().filter(|s| Some(&s.id) != keep.as_ref()) {
        let _ = deps.runtime.remove(&sb.id).await;
    }
    if let Some(id) = keep {
        let ip = pod_ip_of(deps, deps.runtime.sandbox_ip(&id).await?);
        state.sandbox = Some(SandboxInfo { id, ip });
    }
    let mut by_name: BTreeMap<String, Vec<ContainerInfo>> = BTreeMap::new();
    for c in apps {
        by_name
            .entry(c.container_name().unwrap_or_default().to_string())
            .or_default()
            .push(c);
    }
    let adopted = by_name.len();
    for (name, mut instances) in by_name {
        let rec = state
            .containers
            .entry(name)
            .or_insert_with(|| ContainerRecord::new(&deps.config));
        rec.current = instances.pop().map(|c| Instance::of(&c));
        rec.previous = instances.pop().map(|c| Instance::of(&c));
        for old in instances {
            let _ = deps.runtime.remove(&old.id).await;
        }
    }
    if adopted > 0 || state.sandbox.is_some() {
        tracing::info!(
            containers = adopted,
            sandbox = state.sandbox.is_some(),
            "adopted existing containers"
        );
    }
    Ok(())
}

/// A sandbox in the host's network reports no address of its own: the pod IP is the node's.
pub(super) fn pod_ip_of(deps: &WorkerDeps, sandbox_ip: String) -> String {
    if sandbox_ip.is_empty() {
        deps.config.host_ip.clone()
    } else {
        sandbox_ip
    }
}

/// Read the termination message of every instance that exited since the last look.
pub(super) async fn read_messages(deps: &WorkerDeps, pod: &Value, state: &mut PodState) {
    for (name, rec) in state.containers.iter_mut() {
        let Some(container) = find_container(pod, name) else {
            continue;
        };
        for inst in [rec.current.as_mut(), rec.previous.as_mut()]
            .into_iter()
            .flatten()
        {
            if inst.message_read || !matches!(inst.state, ContainerState::Exited { .. }) {
                continue;
            }
            inst.message = files::termination_message(deps, pod, container, inst).await;
            inst.message_read = true;
        }
    }
}

/// Bring every known instance's state up to date.
pub(super) async fn refresh(deps: &WorkerDeps, state: &mut PodState) -> Result<(), WorkerError> {
    for rec in state.containers.values_mut() {
        let Some(cur) = rec.current.as_mut() else {
            continue;
        };
        if matches!(cur.state, ContainerState::Exited { .. }) {
            continue; // an exited instance never changes again
        }
        match deps.runtime.inspect(&cur.id).await {
            Ok(info) => {
                cur.state = info.state;
                if !info.image_id.is_empty() {
                    cur.image_id = info.image_id;
                }
            }
            // Removed behind our back: it ended, we cannot tell how.
            Err(RuntimeError::NotFound(_)) => {
                let started_at = match &cur.state {
                    ContainerState::Running { started_at } => started_at.clone(),
                    _ => String::new(),
                };
                cur.state = ContainerState::Exited {
                    exit_code: 137,
                    reason: "ContainerStatusUnknown".into(),
                    started_at,
                    finished_at: meta::now_rfc3339(),
                };
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Stop the app containers that still run (their network namespace is gone).
pub(super) async fn stop_cut_off(
    deps: &WorkerDeps,
    state: &mut PodState,
) -> Result<(), WorkerError> {
    for rec in state.containers.values_mut() {
        if let Some(cur) = rec.current.as_mut().filter(|c| c.running()) {
            ignore_not_found(deps.runtime.stop(&cur.id, Duration::ZERO).await)?;
            cur.state = match deps.runtime.inspect(&cur.id).await {
                Ok(info) => info.state,
                Err(_) => ContainerState::Exited {
                    exit_code: 137,
                    reason: "Error".into(),
                    started_at: String::new(),
                    finished_at: meta::now_rfc3339(),
                },
            };
        }
    }
    Ok(())
}

/// Make sure the pod has a running pause container.
pub(super) async fn ensure_sandbox(
    deps: &WorkerDeps,
    pod: &Arc<Value>,
    state: &mut PodState,
    now: Instant,
    report: &mut SyncReport,
) -> Result<(), WorkerError> {
    if let Some(sb) = state.sandbox.clone() {
        match deps.runtime.inspect(&sb.id).await {
            Ok(info) if matches!(info.state, ContainerState::Running { .. }) => return Ok(()),
            Ok(_) | Err(RuntimeError::NotFound(_)) => {
                tracing::warn!(sandbox = %sb.id, "pod sandbox is gone; recreating it");
                let _ = deps.runtime.remove(&sb.id).await;
                state.sandbox = None;
            }
            Err(e) => return Err(e.into()),
        }
    }
    stop_cut_off(deps, state).await?;
    if state.sandbox_backoff.waiting(now) {
        report.wake(state.sandbox_backoff.until());
        return Ok(());
    }
    let sandbox = spec::sandbox(pod, &deps.config.node_name, &deps.config.dns.cluster_domain)
        .map(|mut spec| {
            spec.network = deps.config.network.clone();
            spec
        })
        .map_err(|e| RuntimeError::Failed(e.to_string()));
    let run = match sandbox {
        Ok(spec) => deps.runtime.run_sandbox(&spec).await,
        Err(e) => Err(e),
    };
    match run.map(|sb| SandboxInfo {
        ip: pod_ip_of(deps, sb.ip),
        id: sb.id,
    }) {
        Ok(sb) => {
            tracing::debug!(sandbox = %sb.id, ip = %sb.ip, "sandbox running");
            // The pod's resolv.conf is formed once per sandbox, as the kubelet does.
            match files::write_resolv_conf(&deps.config, pod) {
                Ok(warnings) => {
                    for w in warnings {
                        event(deps, pod, "Warning", w.reason, w.message);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "resolv.conf not written"),
            }
            state.sandbox = Some(sb);
            state.sandbox_backoff.reset();
            state.sandbox_error = None;
        }
        Err(RuntimeError::Unavailable(detail)) => {
            return Err(RuntimeError::Unavailable(detail).into())
        }
        Err(e) => {
            let wait = state.sandbox_backoff.start(now);
            tracing::warn!(error = %e, retry_in = ?wait, "creating the pod sandbox failed");
            event(
                deps,
                pod,
                "Warning",
                "FailedCreatePodSandBox",
                format!("Failed to create pod sandbox: {e}"),
            );
            state.sandbox_error = Some(e.to_string());
            report.wake(state.sandbox_backoff.until());
        }
    }
    Ok(())
}

/// What to do about one container now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Next {
    /// Nothing: it runs, it is finished for good, or it is being started.
    Leave,
    /// Wait out the crash backoff.
    BackOff,
    /// Start this attempt.
    Start(u32),
}

/// The restart decision for a container's current instance, starting the crash backoff
/// the first time an exit is seen.
pub(super) fn decide(
    rec: &mut ContainerRecord,
    policy: RestartPolicy,
    terminal: bool,
    reset_after: Duration,
    now: Instant,
) -> Next {
    let Some(cur) = rec.current.as_ref() else {
        return if terminal {
            Next::Leave
        } else {
            Next::Start(0)
        };
    };
    match &cur.state {
        ContainerState::Running { .. } | ContainerState::Unknown => Next::Leave,
        // Created but never started (the kubelet died in between): start it over under
        // the same attempt number.
        ContainerState::Created if terminal => Next::Leave,
        ContainerState::Created => Next::Start(cur.attempt),
        ContainerState::Exited {
            exit_code,
            started_at,
            finished_at,
            ..
        } => {
            if terminal || !policy.restarts(*exit_code) {
                return Next::Leave;
            }
            if rec.crash_for.as_deref() != Some(cur.id.as_str()) {
                // A new exit: the next, longer wait — unless it ran long enough to count
                // as healthy, which forgives the earlier crashes.
                if ran_for(started_at, finished_at).is_some_and(|d| d >= reset_after) {
                    rec.crash.reset();
                }
                rec.crash.start(now);
                rec.crash_for = Some(cur.id.clone());
            }
            if rec.crash.waiting(now) {
                Next::BackOff
            } else {
                Next::Start(cur.attempt + 1)
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
pub(super) async fn sync_container(
    deps: &WorkerDeps,
    pod: &Arc<Value>,
    container: &Value,
    state: &mut PodState,
    input: &SyncInput,
    policy: RestartPolicy,
    terminal: bool,
    now: Instant,
    report: &mut SyncReport,
) -> Result<(), WorkerError> {
    let cfg = &deps.config;
    let name = name_of(container).to_string();
    let pod_ip = state.sandbox.as_ref().map(|s| s.ip.clone());
    let rec = state
        .containers
        .entry(name.clone())
        .or_insert_with(|| ContainerRecord::new(cfg));
    rec.waiting = None;

    // A failed liveness (or startup) probe kills the container; the restart policy then
    // decides as for any other exit.
    if let Some(cur) = rec
        .current
        .as_mut()
        .filter(|c| c.running() && input.unhealthy.contains_key(&c.id))
    {
        let probe = input.unhealthy.get(&cur.id).copied().unwrap_or("liveness");
        tracing::info!(container = %name, probe, "probe failed; killing the container");
        event(
            deps,
            pod,
            "Normal",
            "Killing",
            format!("Container {name} failed {probe} probe, will be restarted"),
        );
        hooks::kill_container(
            deps,
            pod,
            pod_ip,
            Some(container),
            &cur.id,
            termination_grace(pod),
        )
        .await?;
        if let Ok(info) = deps.runtime.inspect(&cur.id).await {
            cur.state = info.state;
        }
    }

    match decide(rec, policy, terminal, cfg.backoff_reset, now) {
        Next::Leave => Ok(()),
        Next::BackOff => {
            let message = crash_loop_message(rec.crash.current(), &name, pod);
            event(
                deps,
                pod,
                "Warning",
                "BackOff",
                format!(
                    "Back-off restarting failed container {name} in pod {}",
                    pod_label(pod)
                ),
            );
            rec.waiting = Some(("CrashLoopBackOff".into(), Some(message)));
            report.wake(rec.crash.until());
            Ok(())
        }
        Next::Start(attempt) => {
            start_container(deps, pod, container, state, attempt, now, report).await
        }
    }
}

/// Pull (as the policy says), then create and start one attempt of a container.
#[allow(clippy::too_many_arguments)]
pub(super) async fn start_container(
    deps: &WorkerDeps,
    pod: &Arc<Value>,
    container: &Value,
    state: &mut PodState,
    attempt: u32,
    now: Instant,
    report: &mut SyncReport,
) -> Result<(), WorkerError> {
    let cfg = &deps.config;
    let name = name_of(container).to_string();
    let image = container
        .get("image")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let sandbox = state.sandbox.clone();
    let sandbox_error = state.sandbox_error.clone();
    // An ephemeral container's target: the container whose processes it sees.
    let target = container
        .get("targetContainerName")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .map(|t| {
            let running = state
                .containers
                .get(t)
                .and_then(|r| r.current.as_ref())
                .filter(|i| i.running())
                .map(|i| i.id.clone());
            (t.to_string(), running)
        });
    let Some(rec) = state.containers.get_mut(&name) else {
        return Ok(());
    };
    let Some(sandbox) = sandbox else {
        rec.waiting = Some(("ContainerCreating".into(), sandbox_error));
        return Ok(());
    };
    if rec.prepare.waiting(now) {
        if let Some(err) = &rec.prepare_error {
            rec.waiting = Some(backing_off(err, &image));
        }
        report.wake(rec.prepare.until());
        return Ok(());
    }
    let fail = |rec: &mut ContainerRecord,
                reason: &str,
                message: String,
                report: &mut SyncReport| {
        let wait = rec.prepare.start(now);
        tracing::warn!(container = %name, reason, error = %message, retry_in = ?wait, "container not started");
        rec.prepare_error = Some((reason.to_string(), Some(message.clone())));
        rec.waiting = Some((reason.to_string(), Some(message)));
        report.wake(rec.prepare.until());
    };

    let policy = pull_policy(container);
    let pulled = match deps.runtime.ensure_image(&image, policy).await {
        // `Always` where no registry answers: a copy already on the node stands in, with a
        // warning, rather than leaving every `:latest` pod unable to start (skiff's nodes
        // reach no registry; their images are built or loaded locally).
        Err(RuntimeError::ImagePull { detail, .. }) if policy == PullPolicy::Always => {
            match deps.runtime.ensure_image(&image, PullPolicy::Never).await {
                Ok(id) => {
                    event(
                        deps,
                        pod,
                        "Warning",
                        "Failed",
                        format!("Failed to pull image \"{image}\": {detail}; using the image present on the node"),
                    );
                    Ok(id)
                }
                Err(_) => Err(RuntimeError::ImagePull {
                    image: image.clone(),
                    detail,
                }),
            }
        }
        other => other,
    };
    let image_id = match pulled {
        Ok(id) => id,
        Err(RuntimeError::Unavailable(d)) => return Err(RuntimeError::Unavailable(d).into()),
        Err(e) => {
            let reason = image_failure(&e);
            event(
                deps,
                pod,
                "Warning",
                "Failed",
                format!("Error: {reason}: {e}"),
            );
            fail(rec, reason, e.to_string(), report);
            return Ok(());
        }
    };
    let services = crate::kubelet::service_env::for_pod(deps.client.as_ref(), pod).await;
    let at = Placement {
        pod_ip: Some(&sandbox.ip),
        host_ip: &cfg.host_ip,
        services: &services,
    };
    // Volumes set up and the environment resolved; the manager records its own event.
    let prepared = match deps.volumes.prepare(pod, container, at).await {
        Ok(p) => p,
        Err(e) => {
            fail(rec, e.reason(), e.to_string(), report);
            return Ok(());
        }
    };
    // The image's own user decides `runAsNonRoot` (and a `runAsGroup` alone).
    let image_user = deps.runtime.image_user(&image_id).await.unwrap_or_default();
    let mut spec = match spec::container(
        pod,
        container,
        &prepared.env,
        &cfg.node_name,
        &sandbox.id,
        attempt,
        &image_user,
    ) {
        Ok(s) => s,
        Err(e) => {
            event(deps, pod, "Warning", "Failed", format!("Error: {e}"));
            fail(rec, "CreateContainerConfigError", e.to_string(), report);
            return Ok(());
        }
    };
    match target {
        Some((_, Some(id))) => spec.pid_target = Some(id),
        Some((t, None)) => {
            fail(
                rec,
                "CreateContainerError",
                format!("target container {t} is not running"),
                report,
            );
            return Ok(());
        }
        None => {}
    }
    match files::mounts(cfg, pod, container, &sandbox.ip, attempt) {
        Ok(m) => spec.mounts.extend(prepared.mounts.into_iter().chain(m)),
        Err(e) => {
            event(deps, pod, "Warning", "Failed", format!("Error: {e}"));
            fail(rec, "CreateContainerConfigError", e.to_string(), report);
            return Ok(());
        }
    }
    let id = match deps.runtime.start_container(&spec).await {
        Ok(id) => id,
        Err(RuntimeError::Unavailable(d)) => return Err(RuntimeError::Unavailable(d).into()),
        Err(e) => {
            event(deps, pod, "Warning", "Failed", format!("Error: {e}"));
            fail(rec, "RunContainerError", e.to_string(), report);
            return Ok(());
        }
    };
    rec.prepare.reset();
    rec.prepare_error = None;
    let info = deps.runtime.inspect(&id).await.ok();
    let new = Instance {
        id: id.clone(),
        attempt,
        image_id: info
            .as_ref()
            .map(|i| i.image_id.clone())
            .filter(|i| !i.is_empty())
            .unwrap_or(image_id),
        state: info.map(|i| i.state).unwrap_or(ContainerState::Running {
            started_at: meta::now_rfc3339(),
        }),
        message: None,
        message_read: false,
    };
    tracing::debug!(container = %name, id = %id, attempt, "container started");
    event(
        deps,
        pod,
        "Normal",
        "Started",
        format!("Started container {name}"),
    );
    // postStart runs before the container counts as started; a failure kills it, and the
    // restart policy decides as for any other exit.
    let mut new = new;
    if hooks::handler(container, hooks::Hook::PostStart).is_some()
        && !hooks::run_recorded(
            deps,
            pod,
            Some(sandbox.ip.clone()),
            container,
            &id,
            hooks::Hook::PostStart,
            hooks::POST_START_LIMIT,
        )
        .await
    {
        ignore_not_found(deps.runtime.stop(&id, termination_grace(pod)).await)?;
        if let Ok(info) = deps.runtime.inspect(&id).await {
            new.state = info.state;
        }
    }
    // The instance it replaces becomes `previous` (its logs stay readable); the one
    // before that is of no further use.
    match rec.current.take() {
        Some(old) if matches!(old.state, ContainerState::Created) => {
            let _ = deps.runtime.remove(&old.id).await;
        }
        Some(old) => {
            if let Some(older) = rec.previous.replace(old) {
                let _ = deps.runtime.remove(&older.id).await;
            }
        }
        None => {}
    }
    rec.current = Some(new);
    Ok(())
}
