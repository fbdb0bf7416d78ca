//! Deleting a pod: the grace period a deletion gives, and stopping and removing
//! everything the pod runs.

use super::*;

/// Kubernetes never gives a container less than this to stop in a graceful deletion.
pub(super) const MIN_GRACE: Duration = Duration::from_secs(2);
/// How long a pod deleted outright (no graceful phase) gets at most.
pub(super) const OUTRIGHT_GRACE: Duration = Duration::from_secs(2);

/// A deletion to carry out.
#[derive(Debug, Clone)]
pub(super) struct Kill {
    pub(super) deadline: DateTime<Utc>,
    /// The least time a container gets to stop, whatever the deadline says.
    pub(super) min_grace: Duration,
    /// Whether to remove the pod object afterwards (graceful deletion) or not (the pod is
    /// already gone from the API).
    pub(super) delete_object: bool,
}

pub(super) fn termination_grace(pod: &Value) -> Duration {
    let secs = pod
        .pointer("/spec/terminationGracePeriodSeconds")
        .and_then(Value::as_i64)
        .unwrap_or(30)
        .max(0);
    Duration::from_secs(secs as u64)
}

pub(super) fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// Runtime timestamps (Docker's carry nanoseconds) in the whole-second form of `metav1.Time`.
pub(super) fn k8s_time(s: &str) -> String {
    parse_time(s)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|| s.to_string())
}

impl Kill {
    /// The pod carries a `deletionTimestamp`: its containers get until then.
    pub(super) fn graceful(pod: &Value) -> Kill {
        let deadline = pod
            .pointer("/metadata/deletionTimestamp")
            .and_then(Value::as_str)
            .and_then(parse_time)
            .unwrap_or_else(|| Utc::now() + chrono_of(termination_grace(pod)));
        Kill {
            deadline,
            min_grace: MIN_GRACE,
            delete_object: true,
        }
    }

    /// The pod was removed from the API without a graceful phase.
    pub(super) fn outright(pod: &Value) -> Kill {
        Kill {
            deadline: Utc::now() + chrono_of(termination_grace(pod).min(OUTRIGHT_GRACE)),
            min_grace: Duration::ZERO,
            delete_object: false,
        }
    }

    /// Merge a second request: the earlier deadline wins, and once the pod is gone from
    /// the API there is nothing left to delete.
    pub(super) fn merge(&mut self, other: Kill) {
        self.deadline = self.deadline.min(other.deadline);
        self.min_grace = self.min_grace.min(other.min_grace);
        self.delete_object &= other.delete_object;
    }

    pub(super) fn remaining(&self) -> Duration {
        (self.deadline - Utc::now())
            .to_std()
            .unwrap_or(Duration::ZERO)
            .max(self.min_grace)
    }
}

pub(super) fn chrono_of(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

/// Stop everything the pod runs (SIGTERM, SIGKILL at the deadline), remove it, and after
/// a graceful deletion remove the pod object.
pub(super) async fn terminate(
    deps: &WorkerDeps,
    pod: &Arc<Value>,
    state: &mut PodState,
    kill: &Kill,
) -> Result<(), WorkerError> {
    let uid = meta::uid(pod).unwrap_or_default();
    let mine: Vec<ContainerInfo> = deps
        .runtime
        .list(&deps.config.node_name)
        .await?
        .into_iter()
        .filter(|c| c.pod_uid() == Some(uid))
        .collect();
    let (sandboxes, apps): (Vec<_>, Vec<_>) = mine.into_iter().partition(ContainerInfo::is_sandbox);
    let grace = kill.remaining();
    tracing::info!(grace = ?grace, containers = apps.len(), "stopping pod");
    let pod_ip = state.sandbox.as_ref().map(|s| s.ip.clone());
    let running = |c: &&ContainerInfo| {
        matches!(
            c.state,
            ContainerState::Running { .. } | ContainerState::Unknown
        )
    };
    let spec_of = |c: &ContainerInfo| c.container_name().and_then(|n| find_container(pod, n));
    let (sidecars, others): (Vec<&ContainerInfo>, Vec<&ContainerInfo>) = apps
        .iter()
        .filter(running)
        .partition(|c| spec_of(c).is_some_and(is_sidecar));
    // All app containers stop at once: each runs its preStop hook and gets what is left of
    // the grace period.
    let stops = others
        .iter()
        .map(|c| hooks::kill_container(deps, pod, pod_ip.clone(), spec_of(c), &c.id, grace));
    for r in futures::future::join_all(stops).await {
        r?;
    }
    // Sidecars outlive the app containers, and stop in the reverse of their start order.
    let order = |c: &&ContainerInfo| {
        init_containers(pod)
            .iter()
            .position(|i| Some(name_of(i)) == c.container_name())
            .unwrap_or(0)
    };
    let mut sidecars = sidecars;
    sidecars.sort_by_key(|c| std::cmp::Reverse(order(c)));
    for c in sidecars {
        let left = kill.remaining();
        hooks::kill_container(deps, pod, pod_ip.clone(), spec_of(c), &c.id, left).await?;
    }
    for c in &apps {
        ignore_not_found(deps.runtime.remove(&c.id).await)?;
    }
    for sb in &sandboxes {
        ignore_not_found(deps.runtime.stop(&sb.id, Duration::ZERO).await)?;
        ignore_not_found(deps.runtime.remove(&sb.id).await)?;
    }
    state.sandbox = None;
    state.containers.clear();
    // Volumes first: a memory-backed emptyDir is unmounted before its directory goes.
    deps.volumes.tear_down(pod);
    files::remove_pod_dir(&deps.config, uid);
    if kill.delete_object {
        let (ns, name) = (meta::namespace(pod), meta::name(pod).unwrap_or_default());
        // Only the pod this worker ran: one re-created under the same name is not ours.
        match deps.client.get("pods", ns, name).await {
            Ok(current) if meta::uid(&current) == Some(uid) => {
                match deps.client.delete_now("pods", ns, name).await {
                    Ok(_) | Err(ApiError::NotFound { .. }) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            Ok(_) | Err(ApiError::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    tracing::info!("pod stopped and removed");
    Ok(())
}

/// The reason and message of a pod the kubelet failed for its `activeDeadlineSeconds`.
pub(super) const DEADLINE_EXCEEDED: (&str, &str) = (
    "DeadlineExceeded",
    "Pod was active on the node longer than the specified deadline",
);

/// Fail the pod once it has been active longer than `activeDeadlineSeconds` (counted from
/// its start time, as the kubelet counts it); until then, wake up at the deadline.
pub(super) fn check_deadline(
    deps: &WorkerDeps,
    pod: &Arc<Value>,
    state: &mut PodState,
    report: &mut SyncReport,
) {
    if state.deadline_exceeded {
        return;
    }
    let Some(seconds) = pod
        .pointer("/spec/activeDeadlineSeconds")
        .and_then(Value::as_i64)
    else {
        return;
    };
    let Some(start) = state.start_time.as_deref().and_then(parse_time) else {
        return;
    };
    let left = (start + chrono::Duration::seconds(seconds) - Utc::now())
        .to_std()
        .unwrap_or(Duration::ZERO);
    if !left.is_zero() {
        report.wake(Some(Instant::now() + left));
        return;
    }
    tracing::info!(deadline_secs = seconds, "pod passed its active deadline");
    event(
        deps,
        pod,
        "Normal",
        DEADLINE_EXCEEDED.0,
        DEADLINE_EXCEEDED.1.to_string(),
    );
    state.deadline_exceeded = true;
}

/// Stop what still runs of a pod that is finished (its phase is terminal, or its deadline
/// passed): app containers first, then sidecars in reverse order, each with its preStop
/// hook and the pod's grace period. The containers stay for their logs and status.
pub(super) async fn stop_running(
    deps: &WorkerDeps,
    pod: &Arc<Value>,
    state: &mut PodState,
) -> Result<(), WorkerError> {
    let pod_ip = state.sandbox.as_ref().map(|s| s.ip.clone());
    let grace = termination_grace(pod);
    let mut order: Vec<String> = containers(pod)
        .iter()
        .map(|c| name_of(c).to_string())
        .collect();
    order.extend(
        ephemeral_containers(pod)
            .iter()
            .chain(init_containers(pod).iter().rev())
            .map(|c| name_of(c).to_string()),
    );
    for name in order {
        let Some(cur) = state
            .containers
            .get_mut(&name)
            .and_then(|r| r.current.as_mut())
            .filter(|c| c.running())
        else {
            continue;
        };
        hooks::kill_container(
            deps,
            pod,
            pod_ip.clone(),
            find_container(pod, &name),
            &cur.id,
            grace,
        )
        .await?;
        if let Ok(info) = deps.runtime.inspect(&cur.id).await {
            cur.state = info.state;
        }
    }
    Ok(())
}
