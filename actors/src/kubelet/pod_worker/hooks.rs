//! Lifecycle hooks: `postStart` right after a container starts (a failure kills it), and
//! `preStop` before the kubelet stops one (its time counts against the grace period),
//! with the kubelet's `FailedPostStartHook` / `FailedPreStopHook` events. A hook runs
//! `exec` in the container, `httpGet` against the pod, or `sleep`.

use super::*;

/// How long a `postStart` hook may take before it counts as failed; Kubernetes has no
/// bound, but a hook that never ends would hold the pod's sync (and its deletion) forever.
pub(super) const POST_START_LIMIT: Duration = Duration::from_secs(120);

/// Which hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Hook {
    PostStart,
    PreStop,
}

impl Hook {
    fn field(self) -> &'static str {
        match self {
            Hook::PostStart => "postStart",
            Hook::PreStop => "preStop",
        }
    }

    fn failed_reason(self) -> &'static str {
        match self {
            Hook::PostStart => "FailedPostStartHook",
            Hook::PreStop => "FailedPreStopHook",
        }
    }
}

/// What a hook runs, parsed from the container's `lifecycle`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Handler {
    Probe(ProbeSpec),
    Sleep(Duration),
}

/// The hook `hook` of `container`, if it has one (a handler that cannot be parsed, such as
/// a port name the container does not declare, is an error message).
pub(super) fn handler(container: &Value, hook: Hook) -> Option<Result<Handler, String>> {
    let h = container
        .pointer(&format!("/lifecycle/{}", hook.field()))
        .filter(|h| h.is_object())?;
    if let Some(sleep) = h.get("sleep") {
        let secs = sleep.get("seconds").and_then(Value::as_u64).unwrap_or(0);
        return Some(Ok(Handler::Sleep(Duration::from_secs(secs))));
    }
    Some(
        ProbeSpec::parse(h, container)
            .map(Handler::Probe)
            .map_err(|e| e.to_string()),
    )
}

/// Runs `hook` of `container` against its instance `id`, within `budget`. Returns an error
/// message worded as the kubelet's events word it.
pub(super) async fn run(
    deps: &WorkerDeps,
    pod: &Value,
    pod_ip: Option<String>,
    container: &Value,
    id: &str,
    hook: Hook,
    budget: Duration,
) -> Result<(), String> {
    let Some(handler) = handler(container, hook) else {
        return Ok(());
    };
    let name = name_of(container);
    let label = pod_label(pod);
    let spec = match handler {
        Err(e) => return Err(e),
        Ok(Handler::Sleep(d)) => {
            tokio::time::sleep(d.min(budget)).await;
            return Ok(());
        }
        Ok(Handler::Probe(mut spec)) => {
            spec.timeout = budget.max(Duration::from_secs(1));
            spec
        }
    };
    let what = match &spec.action {
        probe::Action::Exec(cmd) => format!("Exec lifecycle hook ({cmd:?})"),
        probe::Action::Http { path, .. } => format!("HTTP lifecycle hook ({path})"),
        probe::Action::Tcp { .. } => "TCP lifecycle hook".to_string(),
    };
    match probe::run(deps.runtime.clone(), id.to_string(), pod_ip, spec).await {
        Outcome::Success => Ok(()),
        Outcome::Failure(why) => Err(format!(
            "{what} for Container \"{name}\" in Pod \"{label}\" failed - error: {why}"
        )),
    }
}

/// Runs `hook`, recording the kubelet's event when it fails; returns whether it succeeded.
#[allow(clippy::too_many_arguments)]
pub(super) async fn run_recorded(
    deps: &WorkerDeps,
    pod: &Arc<Value>,
    pod_ip: Option<String>,
    container: &Value,
    id: &str,
    hook: Hook,
    budget: Duration,
) -> bool {
    match run(deps, pod, pod_ip, container, id, hook, budget).await {
        Ok(()) => true,
        Err(message) => {
            tracing::warn!(container = %name_of(container), hook = hook.field(), error = %message, "lifecycle hook failed");
            event(deps, pod, "Warning", hook.failed_reason(), message);
            false
        }
    }
}

/// Stops one container instance as the kubelet kills it: its `preStop` hook first (when it
/// has one and the instance runs), then SIGTERM with what is left of `grace` (never less
/// than the two seconds Kubernetes gives), then SIGKILL.
pub(super) async fn kill_container(
    deps: &WorkerDeps,
    pod: &Arc<Value>,
    pod_ip: Option<String>,
    container: Option<&Value>,
    id: &str,
    grace: Duration,
) -> Result<(), RuntimeError> {
    let started = Instant::now();
    if let Some(c) = container.filter(|c| handler(c, Hook::PreStop).is_some()) {
        run_recorded(deps, pod, pod_ip, c, id, Hook::PreStop, grace).await;
    }
    let left = grace.saturating_sub(started.elapsed()).max(MIN_GRACE);
    ignore_not_found(deps.runtime.stop(id, left).await)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hooks_parse_exec_http_and_sleep_handlers() {
        let c = json!({"name": "app", "ports": [{"name": "web", "containerPort": 8080}],
            "lifecycle": {"postStart": {"exec": {"command": ["sh", "-c", "true"]}},
                          "preStop": {"httpGet": {"port": "web", "path": "/stop"}}}});
        assert!(matches!(
            handler(&c, Hook::PostStart),
            Some(Ok(Handler::Probe(ProbeSpec {
                action: probe::Action::Exec(_),
                ..
            })))
        ));
        assert!(matches!(
            handler(&c, Hook::PreStop),
            Some(Ok(Handler::Probe(ProbeSpec {
                action: probe::Action::Http { port: 8080, .. },
                ..
            })))
        ));
        let s = json!({"name": "app", "lifecycle": {"preStop": {"sleep": {"seconds": 3}}}});
        assert_eq!(
            handler(&s, Hook::PreStop),
            Some(Ok(Handler::Sleep(Duration::from_secs(3))))
        );
        assert_eq!(handler(&s, Hook::PostStart), None);
    }
}
