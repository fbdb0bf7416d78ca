//! Init containers: run in spec order, each to success before the next starts; a failed
//! one is restarted (with CrashLoopBackOff) unless the pod's `restartPolicy` is `Never`,
//! which fails the pod. Sidecars (init containers with `restartPolicy: Always`) start in
//! the same order, let the next one start once they run (and their startup probe passed),
//! and keep running, restarted whenever they exit, next to the app containers.

use super::*;

pub(super) fn init_containers(pod: &Value) -> &[Value] {
    pod.pointer("/spec/initContainers")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

pub(super) fn is_sidecar(container: &Value) -> bool {
    container.get("restartPolicy").and_then(Value::as_str) == Some("Always")
}

/// The ephemeral containers added to the running pod (`kubectl debug`).
pub(super) fn ephemeral_containers(pod: &Value) -> &[Value] {
    pod.pointer("/spec/ephemeralContainers")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

/// The init container, container or ephemeral container of that name.
pub(super) fn find_container<'a>(pod: &'a Value, name: &str) -> Option<&'a Value> {
    containers(pod)
        .iter()
        .chain(init_containers(pod))
        .chain(ephemeral_containers(pod))
        .find(|c| name_of(c) == name)
}

/// The current instance of `name` exited successfully.
fn completed(state: &PodState, name: &str) -> bool {
    state
        .containers
        .get(name)
        .and_then(|r| r.current.as_ref())
        .is_some_and(|i| matches!(i.state, ContainerState::Exited { exit_code: 0, .. }))
}

/// A sidecar counts as started once it runs and its startup probe (if any) passed.
fn sidecar_started(state: &PodState, input: &SyncInput, container: &Value) -> bool {
    let Some(cur) = state
        .containers
        .get(name_of(container))
        .and_then(|r| r.current.as_ref())
        .filter(|i| i.running())
    else {
        return false;
    };
    !container.get("startupProbe").is_some_and(Value::is_object) || input.started.contains(&cur.id)
}

/// Whether the pod is initialized: every regular init container completed, or an app
/// container has been started already (the kubelet does not run init containers again
/// for a pod whose app containers ran).
pub(super) fn initialized(pod: &Value, state: &PodState) -> bool {
    let apps_ran = containers(pod).iter().any(|c| {
        state
            .containers
            .get(name_of(c))
            .is_some_and(|r| r.current.is_some())
    });
    apps_ran
        || init_containers(pod)
            .iter()
            .filter(|c| !is_sidecar(c))
            .all(|c| completed(state, name_of(c)))
}

/// One pass over the init containers; returns whether the pod is initialized (the app
/// containers may start).
pub(super) async fn sync_init(
    deps: &WorkerDeps,
    pod: &Arc<Value>,
    state: &mut PodState,
    input: &SyncInput,
    now: Instant,
    report: &mut SyncReport,
) -> Result<bool, WorkerError> {
    let was_initialized = initialized(pod, state);
    // A regular init container must succeed: it is retried after a failure unless the
    // pod never restarts anything.
    let init_policy = match RestartPolicy::of(pod) {
        RestartPolicy::Never => RestartPolicy::Never,
        _ => RestartPolicy::OnFailure,
    };
    for c in init_containers(pod) {
        if is_sidecar(c) {
            sync_container(
                deps,
                pod,
                c,
                state,
                input,
                RestartPolicy::Always,
                false,
                now,
                report,
            )
            .await?;
            if !was_initialized && !sidecar_started(state, input, c) {
                return Ok(false);
            }
        } else if !was_initialized {
            sync_container(deps, pod, c, state, input, init_policy, false, now, report).await?;
            if !completed(state, name_of(c)) {
                return Ok(false);
            }
        }
    }
    Ok(true)
}
