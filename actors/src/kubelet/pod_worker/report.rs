//! The pod's status as the worker reports it: container views in spec order, and the
//! status write.

use super::*;

/// The app containers as the status reports them, in spec order; while the pod
/// initializes, those not started yet wait with `PodInitializing`.
pub(super) fn views(
    pod: &Value,
    state: &PodState,
    input: &SyncInput,
    scheme: &str,
    initialized: bool,
) -> Vec<ContainerView> {
    let pending = if initialized {
        "ContainerCreating"
    } else {
        "PodInitializing"
    };
    views_of(containers(pod), state, input, scheme, pending)
}

/// The ephemeral containers as `ephemeralContainerStatuses` reports them: never ready.
pub(super) fn ephemeral_views(
    pod: &Value,
    state: &PodState,
    input: &SyncInput,
    scheme: &str,
) -> Vec<ContainerView> {
    let mut views = views_of(
        ephemeral_containers(pod),
        state,
        input,
        scheme,
        "ContainerCreating",
    );
    for v in &mut views {
        v.ready = false;
    }
    views
}

/// The init containers as `initContainerStatuses` reports them.
pub(super) fn init_views(
    pod: &Value,
    state: &PodState,
    input: &SyncInput,
    scheme: &str,
) -> Vec<ContainerView> {
    let mut views = views_of(
        init_containers(pod),
        state,
        input,
        scheme,
        "PodInitializing",
    );
    for (v, c) in views.iter_mut().zip(init_containers(pod)) {
        v.sidecar = is_sidecar(c);
        // A regular init container that completed counts as ready, as the kubelet has it.
        if !v.sidecar {
            v.ready = matches!(&v.state, State::Terminated(t) if t.exit_code == 0);
        }
    }
    views
}

fn views_of(
    list: &[Value],
    state: &PodState,
    input: &SyncInput,
    scheme: &str,
    pending: &str,
) -> Vec<ContainerView> {
    list.iter()
        .map(|c| {
            let name = name_of(c);
            let image = c.get("image").and_then(Value::as_str).unwrap_or_default();
            let rec = state.containers.get(name);
            let cur = rec.and_then(|r| r.current.as_ref());
            let previous = rec
                .and_then(|r| r.previous.as_ref())
                .and_then(|p| p.terminated(scheme));
            let (view_state, last) = match (rec.and_then(|r| r.waiting.clone()), cur) {
                (Some((reason, message)), _) => (
                    State::Waiting { reason, message },
                    cur.and_then(|c| c.terminated(scheme)).or(previous),
                ),
                (None, Some(i)) => match &i.state {
                    ContainerState::Running { started_at } => (
                        State::Running {
                            started_at: k8s_time(started_at),
                        },
                        previous,
                    ),
                    ContainerState::Exited { .. } => (
                        i.terminated(scheme)
                            .map(State::Terminated)
                            .unwrap_or_else(|| State::waiting(pending, None)),
                        previous,
                    ),
                    _ => (State::waiting(pending, None), previous),
                },
                (None, None) => (State::waiting(pending, None), None),
            };
            let running = matches!(view_state, State::Running { .. });
            let has_startup = c.get("startupProbe").is_some_and(Value::is_object);
            let started =
                running && (!has_startup || cur.is_some_and(|i| input.started.contains(&i.id)));
            let has_readiness = c.get("readinessProbe").is_some_and(Value::is_object);
            let ready = started
                && (!has_readiness || cur.is_some_and(|i| input.ready.get(&i.id) == Some(&true)));
            ContainerView {
                name: name.to_string(),
                image: image.to_string(),
                image_id: cur.map(|i| i.image_id.clone()).unwrap_or_default(),
                container_id: cur
                    .filter(|_| !matches!(view_state, State::Waiting { .. }))
                    .map(|i| format!("{scheme}://{}", i.id)),
                state: view_state,
                last_terminated: last,
                ready,
                restart_count: cur.map(|i| i.attempt).unwrap_or(0),
                started,
                sidecar: false,
            }
        })
        .collect()
}

/// Write the pod's status if anything the kubelet owns changed.
pub(super) async fn write_status(
    deps: &WorkerDeps,
    pod: &Value,
    state: &PodState,
    input: &SyncInput,
    initialized: bool,
    report: &mut SyncReport,
) -> Result<(), WorkerError> {
    let cfg = &deps.config;
    let views = views(pod, state, input, &cfg.id_scheme, initialized);
    let inits = init_views(pod, state, input, &cfg.id_scheme);
    let ephemeral = ephemeral_views(pod, state, input, &cfg.id_scheme);
    let now = meta::now_rfc3339();
    let existing = pod.get("status").cloned().unwrap_or_else(|| json!({}));
    // A finished pod whose sandbox is gone keeps reporting the IP it had.
    let pod_ip = state.sandbox.as_ref().map(|s| s.ip.clone()).or_else(|| {
        existing
            .get("podIP")
            .and_then(Value::as_str)
            .map(str::to_string)
    });
    let start_time = state.start_time.clone().unwrap_or_else(|| now.clone());
    let built = status::build(&StatusInput {
        pod,
        containers: &views,
        ephemeral: &ephemeral,
        init: status::Init {
            views: &inits,
            initialized,
        },
        failure: state.deadline_exceeded.then_some(DEADLINE_EXCEEDED),
        pod_ip: pod_ip.as_deref(),
        host_ip: &cfg.host_ip,
        start_time: &start_time,
        now: &now,
    });
    // Our copy of the pod may predate our own last write: do not write the same again.
    if let Some((last, rv)) = &input.last_written {
        if *last == built && rv_of(pod) <= *rv {
            return Ok(());
        }
    }
    let Some(patch) = status::patch(&existing, &built) else {
        return Ok(());
    };
    let (ns, name) = (meta::namespace(pod), meta::name(pod).unwrap_or_default());
    match deps
        .client
        .patch("pods", ns, name, Some("status"), PatchType::Merge, patch)
        .await
    {
        Ok(written) => {
            tracing::debug!(phase = %built["phase"], "pod status written");
            report.written = Some((built, written));
            Ok(())
        }
        // Deleted meanwhile: the kubelet tells us.
        Err(ApiError::NotFound { .. }) => Ok(()),
        Err(e) => Err(e.into()),
    }
}
