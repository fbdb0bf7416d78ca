//! Pod status as the kubelet reports it: phase, conditions and container statuses, built
//! from what the pod worker knows (pure functions, so every rule is unit-tested), and the
//! merge patch that writes only the fields the kubelet owns.

use serde_json::{json, Map, Value};

/// The fields of `status` the kubelet writes; everything else (qosClass, nominatedNodeName,
/// ...) is left to whoever set it.
const OWNED_FIELDS: &[&str] = &[
    "phase",
    "conditions",
    "podIP",
    "podIPs",
    "hostIP",
    "hostIPs",
    "startTime",
    "containerStatuses",
    "initContainerStatuses",
    "ephemeralContainerStatuses",
    "reason",
    "message",
];

/// The conditions the kubelet sets; any other condition (a readiness gate's, a
/// disruption target) is someone else's and is kept as written.
const OWNED_CONDITIONS: &[&str] = &["Initialized", "ContainersReady", "Ready"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartPolicy {
    Always,
    OnFailure,
    Never,
}

impl RestartPolicy {
    pub fn of(pod: &Value) -> RestartPolicy {
        match pod.pointer("/spec/restartPolicy").and_then(Value::as_str) {
            Some("OnFailure") => RestartPolicy::OnFailure,
            Some("Never") => RestartPolicy::Never,
            _ => RestartPolicy::Always,
        }
    }

    /// Whether a container that exited with `exit_code` is started again.
    pub fn restarts(self, exit_code: i64) -> bool {
        match self {
            RestartPolicy::Always => true,
            RestartPolicy::OnFailure => exit_code != 0,
            RestartPolicy::Never => false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Pending,
    Running,
    Succeeded,
    Failed,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "Pending",
            Phase::Running => "Running",
            Phase::Succeeded => "Succeeded",
            Phase::Failed => "Failed",
        }
    }

    pub fn parse(s: Option<&str>) -> Option<Phase> {
        match s? {
            "Pending" => Some(Phase::Pending),
            "Running" => Some(Phase::Running),
            "Succeeded" => Some(Phase::Succeeded),
            "Failed" => Some(Phase::Failed),
            _ => None,
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, Phase::Succeeded | Phase::Failed)
    }
}

/// How a container instance ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Terminated {
    pub exit_code: i64,
    pub reason: String,
    /// From the container's termination message file, or its log's tail.
    pub message: Option<String>,
    pub started_at: String,
    pub finished_at: String,
    pub container_id: String,
}

impl Terminated {
    fn to_json(&self) -> Value {
        let mut t = json!({
            "exitCode": self.exit_code,
            "reason": self.reason,
            "startedAt": self.started_at,
            "finishedAt": self.finished_at,
            "containerID": self.container_id,
        });
        if let Some(m) = self.message.as_ref().filter(|m| !m.is_empty()) {
            t["message"] = json!(m);
        }
        json!({ "terminated": t })
    }
}

/// The state a container status reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    Waiting {
        reason: String,
        message: Option<String>,
    },
    Running {
        started_at: String,
    },
    Terminated(Terminated),
}

impl State {
    pub fn waiting(reason: &str, message: Option<String>) -> State {
        State::Waiting {
            reason: reason.to_string(),
            message,
        }
    }

    fn to_json(&self) -> Value {
        match self {
            State::Waiting { reason, message } => {
                let mut w = json!({"reason": reason});
                if let Some(m) = message {
                    w["message"] = json!(m);
                }
                json!({"waiting": w})
            }
            State::Running { started_at } => json!({"running": {"startedAt": started_at}}),
            State::Terminated(t) => t.to_json(),
        }
    }
}

/// One container as the status reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerView {
    pub name: String,
    pub image: String,
    pub image_id: String,
    /// `docker://<id>` of the current instance, if there is one.
    pub container_id: Option<String>,
    pub state: State,
    pub last_terminated: Option<Terminated>,
    pub ready: bool,
    pub restart_count: u32,
    /// Running and past its startup probe (if it has one).
    pub started: bool,
    /// An init container with `restartPolicy: Always`.
    pub sidecar: bool,
}

impl ContainerView {
    fn to_json(&self) -> Value {
        let mut s = json!({
            "name": self.name,
            "state": self.state.to_json(),
            "lastState": self.last_terminated.as_ref().map(Terminated::to_json).unwrap_or_else(|| json!({})),
            "ready": self.ready,
            "restartCount": self.restart_count,
            "image": self.image,
            "imageID": self.image_id,
            "started": self.started,
        });
        if let Some(id) = &self.container_id {
            s["containerID"] = json!(id);
        }
        s
    }

    /// Waiting for its first run (not a restart): what keeps a pod Pending.
    fn waiting_first_time(&self) -> bool {
        matches!(self.state, State::Waiting { .. }) && self.last_terminated.is_none()
    }
}

/// The pod phase from its containers, by Kubernetes' rules: any container that has not run
/// yet keeps the pod Pending; one running makes it Running; when all have stopped the
/// restart policy decides whether it is still Running (will restart), Succeeded or Failed.
/// A terminal phase already reported is never left.
pub fn phase(
    policy: RestartPolicy,
    containers: &[ContainerView],
    previous: Option<Phase>,
) -> Phase {
    if let Some(p) = previous.filter(|p| p.is_terminal()) {
        return p;
    }
    if containers.is_empty() {
        return Phase::Pending;
    }
    let waiting = containers.iter().filter(|c| c.waiting_first_time()).count();
    let running = containers
        .iter()
        .filter(|c| matches!(c.state, State::Running { .. }))
        .count();
    if waiting > 0 {
        return Phase::Pending;
    }
    if running > 0 {
        return Phase::Running;
    }
    // Every container has stopped (terminated, or waiting to restart after a run).
    let exit_code = |c: &ContainerView| match &c.state {
        State::Terminated(t) => Some(t.exit_code),
        _ => c.last_terminated.as_ref().map(|t| t.exit_code),
    };
    let succeeded = containers.iter().all(|c| exit_code(c) == Some(0));
    match policy {
        RestartPolicy::Always => Phase::Running,
        _ if succeeded => Phase::Succeeded,
        RestartPolicy::Never => Phase::Failed,
        // OnFailure: the failed ones will be restarted.
        RestartPolicy::OnFailure => Phase::Running,
    }
}

/// A condition that keeps its `lastTransitionTime` unless its status changed.
fn condition(
    existing: &Value,
    kind: &str,
    ok: bool,
    reason: Option<&str>,
    message: Option<String>,
    now: &str,
) -> Value {
    let status = if ok { "True" } else { "False" };
    let previous = existing
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c.get("type").and_then(Value::as_str) == Some(kind));
    let since = match previous {
        Some(p) if p.get("status").and_then(Value::as_str) == Some(status) => p
            .get("lastTransitionTime")
            .cloned()
            .unwrap_or_else(|| json!(now)),
        _ => json!(now),
    };
    let mut c =
        json!({"type": kind, "status": status, "lastProbeTime": null, "lastTransitionTime": since});
    if let Some(r) = reason {
        c["reason"] = json!(r);
    }
    if let Some(m) = message {
        c["message"] = json!(m);
    }
    c
}

/// The pod's conditions: PodScheduled as the binding wrote it, then Initialized,
/// ContainersReady and Ready.
pub fn conditions(
    existing: &Value,
    phase: Phase,
    containers: &[ContainerView],
    now: &str,
) -> Vec<Value> {
    pod_conditions(
        existing,
        phase,
        &Init {
            views: &[],
            initialized: true,
        },
        containers,
        &[],
        now,
    )
}

/// What the init containers tell the status.
#[derive(Debug, Clone, Copy)]
pub struct Init<'a> {
    pub views: &'a [ContainerView],
    /// Every regular init container has completed (or the app containers have started).
    pub initialized: bool,
}

/// The conditions with init containers and readiness gates (`gates`: the condition types
/// named by `spec.readinessGates`).
pub fn pod_conditions(
    existing: &Value,
    phase: Phase,
    init: &Init<'_>,
    containers: &[ContainerView],
    gates: &[&str],
    now: &str,
) -> Vec<Value> {
    let all = existing.as_array().map(Vec::as_slice).unwrap_or(&[]);
    let type_of = |c: &Value| {
        c.get("type")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let mut out = Vec::new();
    if let Some(scheduled) = all.iter().find(|c| type_of(c) == "PodScheduled") {
        out.push(scheduled.clone());
    }
    if init.initialized {
        out.push(condition(existing, "Initialized", true, None, None, now));
    } else {
        let incomplete: Vec<&str> = init
            .views
            .iter()
            .filter(|c| {
                if c.sidecar {
                    !c.started
                } else {
                    !matches!(&c.state, State::Terminated(t) if t.exit_code == 0)
                }
            })
            .map(|c| c.name.as_str())
            .collect();
        out.push(condition(
            existing,
            "Initialized",
            false,
            Some("ContainersNotInitialized"),
            Some(format!(
                "containers with incomplete status: [{}]",
                incomplete.join(" ")
            )),
            now,
        ));
    }
    // Sidecars count toward readiness next to the app containers.
    let unready: Vec<&str> = init
        .views
        .iter()
        .filter(|c| c.sidecar && !c.ready)
        .chain(containers.iter().filter(|c| !c.ready))
        .map(|c| c.name.as_str())
        .collect();
    let (ready, reason, message) = if phase == Phase::Succeeded {
        (false, Some("PodCompleted"), None)
    } else if unready.is_empty() {
        (true, None, None)
    } else {
        (
            false,
            Some("ContainersNotReady"),
            Some(format!(
                "containers with unready status: [{}]",
                unready.join(" ")
            )),
        )
    };
    out.push(condition(
        existing,
        "ContainersReady",
        ready,
        reason,
        message.clone(),
        now,
    ));
    // Ready also waits for every readiness gate's condition to be True.
    let (ready, reason, message) =
        match gates
            .iter()
            .find_map(|gate| match all.iter().find(|c| type_of(c) == *gate) {
                None => Some(format!(
                    "corresponding condition of pod readiness gate \"{gate}\" does not exist."
                )),
                Some(c) if c.get("status").and_then(Value::as_str) != Some("True") => {
                    Some(format!(
                        "the status of pod readiness gate \"{gate}\" is not \"True\", but {}",
                        c.get("status").and_then(Value::as_str).unwrap_or("Unknown")
                    ))
                }
                Some(_) => None,
            }) {
            Some(why) if ready => (false, Some("ReadinessGatesNotReady"), Some(why)),
            _ => (ready, reason, message),
        };
    out.push(condition(existing, "Ready", ready, reason, message, now));
    for other in all.iter().filter(|c| {
        let t = type_of(c);
        t != "PodScheduled" && !OWNED_CONDITIONS.contains(&t.as_str())
    }) {
        out.push(other.clone());
    }
    out
}

/// The pod phase with its init containers: a regular init container that failed under
/// `Never` fails the pod; until every one completed the pod is Pending.
pub fn phase_with_init(
    policy: RestartPolicy,
    init: &Init<'_>,
    containers: &[ContainerView],
    previous: Option<Phase>,
) -> Phase {
    if let Some(p) = previous.filter(|p| p.is_terminal()) {
        return p;
    }
    let failed = init
        .views
        .iter()
        .any(|c| !c.sidecar && matches!(&c.state, State::Terminated(t) if t.exit_code != 0));
    if failed && policy == RestartPolicy::Never {
        return Phase::Failed;
    }
    if !init.initialized {
        return Phase::Pending;
    }
    phase(policy, containers, previous)
}

/// Everything the status is built from.
#[derive(Debug, Clone)]
pub struct StatusInput<'a> {
    pub pod: &'a Value,
    pub containers: &'a [ContainerView],
    /// `ephemeralContainerStatuses`; they count for neither phase nor readiness.
    pub ephemeral: &'a [ContainerView],
    pub init: Init<'a>,
    /// Why the kubelet ended the pod itself (`DeadlineExceeded`), and its message.
    pub failure: Option<(&'a str, &'a str)>,
    pub pod_ip: Option<&'a str>,
    pub host_ip: &'a str,
    pub start_time: &'a str,
    pub now: &'a str,
}

/// The kubelet-owned part of the pod's status.
pub fn build(input: &StatusInput<'_>) -> Value {
    let existing = input
        .pod
        .get("status")
        .cloned()
        .unwrap_or_else(|| json!({}));
    let previous = Phase::parse(existing.get("phase").and_then(Value::as_str));
    let phase = match input.failure {
        Some(_) => Phase::Failed,
        None => phase_with_init(
            RestartPolicy::of(input.pod),
            &input.init,
            input.containers,
            previous,
        ),
    };
    let gates: Vec<&str> = input
        .pod
        .pointer("/spec/readinessGates")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|g| g.get("conditionType").and_then(Value::as_str))
        .collect();
    let mut s = Map::new();
    s.insert("phase".into(), json!(phase.as_str()));
    // A reason the kubelet gave (DeadlineExceeded) stays once written.
    let kept = existing
        .get("reason")
        .and_then(Value::as_str)
        .zip(existing.get("message").and_then(Value::as_str));
    if let Some((reason, message)) = input.failure.or(kept) {
        s.insert("reason".into(), json!(reason));
        s.insert("message".into(), json!(message));
    }
    s.insert(
        "conditions".into(),
        Value::Array(pod_conditions(
            &existing["conditions"],
            phase,
            &input.init,
            input.containers,
            &gates,
            input.now,
        )),
    );
    s.insert("hostIP".into(), json!(input.host_ip));
    s.insert("hostIPs".into(), json!([{"ip": input.host_ip}]));
    if let Some(ip) = input.pod_ip {
        s.insert("podIP".into(), json!(ip));
        s.insert("podIPs".into(), json!([{"ip": ip}]));
    }
    s.insert("startTime".into(), json!(input.start_time));
    s.insert(
        "containerStatuses".into(),
        Value::Array(
            input
                .containers
                .iter()
                .map(ContainerView::to_json)
                .collect(),
        ),
    );
    if !input.init.views.is_empty() {
        s.insert(
            "initContainerStatuses".into(),
            Value::Array(
                input
                    .init
                    .views
                    .iter()
                    .map(ContainerView::to_json)
                    .collect(),
            ),
        );
    }
    if !input.ephemeral.is_empty() {
        s.insert(
            "ephemeralContainerStatuses".into(),
            Value::Array(input.ephemeral.iter().map(ContainerView::to_json).collect()),
        );
    }
    Value::Object(s)
}

/// The kubelet-owned fields of a status, to compare with what was built.
pub fn owned(status: &Value) -> Value {
    let mut m = Map::new();
    for f in OWNED_FIELDS {
        if let Some(v) = status.get(*f).filter(|v| !v.is_null()) {
            m.insert((*f).to_string(), v.clone());
        }
    }
    Value::Object(m)
}

/// The merge patch writing `built` over `current` (the pod's status), or `None` when
/// nothing the kubelet owns changed.
pub fn patch(current: &Value, built: &Value) -> Option<Value> {
    if owned(current) == *built {
        return None;
    }
    Some(json!({"status": built}))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(name: &str, state: State, last: Option<i64>) -> ContainerView {
        ContainerView {
            name: name.into(),
            image: "busybox".into(),
            image_id: "sha256:1".into(),
            container_id: Some("docker://abc".into()),
            ready: matches!(state, State::Running { .. }),
            state,
            last_terminated: last.map(ended),
            restart_count: 0,
            started: false,
            sidecar: false,
        }
    }

    fn ended(code: i64) -> Terminated {
        Terminated {
            exit_code: code,
            reason: if code == 0 { "Completed" } else { "Error" }.into(),
            message: None,
            started_at: "2026-01-01T00:00:00Z".into(),
            finished_at: "2026-01-01T00:00:01Z".into(),
            container_id: "docker://abc".into(),
        }
    }

    fn running() -> State {
        State::Running {
            started_at: "2026-01-01T00:00:00Z".into(),
        }
    }

    #[test]
    fn restart_policy_decides_which_exits_restart() {
        assert!(RestartPolicy::Always.restarts(0));
        assert!(RestartPolicy::Always.restarts(1));
        assert!(!RestartPolicy::OnFailure.restarts(0));
        assert!(RestartPolicy::OnFailure.restarts(2));
        assert!(!RestartPolicy::Never.restarts(1));
        assert_eq!(
            RestartPolicy::of(&json!({"spec": {}})),
            RestartPolicy::Always
        );
    }

    #[test]
    fn a_container_that_never_ran_keeps_the_pod_pending_even_if_another_runs() {
        let cs = [
            view("a", running(), None),
            view("b", State::waiting("ErrImagePull", None), None),
        ];
        assert_eq!(phase(RestartPolicy::Always, &cs, None), Phase::Pending);
    }

    #[test]
    fn a_crash_looping_container_does_not_make_the_pod_pending() {
        let cs = [
            view("a", running(), None),
            view("b", State::waiting("CrashLoopBackOff", None), Some(1)),
        ];
        assert_eq!(phase(RestartPolicy::Always, &cs, None), Phase::Running);
    }

    #[test]
    fn all_exited_zero_without_restart_is_succeeded() {
        let cs = [view("a", State::Terminated(ended(0)), None)];
        assert_eq!(phase(RestartPolicy::Never, &cs, None), Phase::Succeeded);
        assert_eq!(phase(RestartPolicy::OnFailure, &cs, None), Phase::Succeeded);
        assert_eq!(phase(RestartPolicy::Always, &cs, None), Phase::Running);
    }

    #[test]
    fn a_non_zero_exit_under_never_is_failed_but_under_on_failure_is_running() {
        let cs = [
            view("a", State::Terminated(ended(0)), None),
            view("b", State::Terminated(ended(3)), None),
        ];
        assert_eq!(phase(RestartPolicy::Never, &cs, None), Phase::Failed);
        assert_eq!(phase(RestartPolicy::OnFailure, &cs, None), Phase::Running);
    }

    #[test]
    fn a_terminal_phase_is_never_left() {
        let cs = [view("a", running(), None)];
        assert_eq!(
            phase(RestartPolicy::Always, &cs, Some(Phase::Failed)),
            Phase::Failed
        );
    }

    #[test]
    fn ready_conditions_name_the_unready_containers_and_keep_transition_times() {
        let mut cs = vec![view("a", running(), None), view("b", running(), None)];
        cs[1].ready = false;
        let conds = conditions(&json!([]), Phase::Running, &cs, "T1");
        let ready = conds.iter().find(|c| c["type"] == "Ready").expect("Ready");
        assert_eq!(ready["status"], "False");
        assert_eq!(ready["message"], "containers with unready status: [b]");
        assert_eq!(ready["lastTransitionTime"], "T1");

        let again = conditions(&Value::Array(conds.clone()), Phase::Running, &cs, "T2");
        let ready = again.iter().find(|c| c["type"] == "Ready").expect("Ready");
        assert_eq!(
            ready["lastTransitionTime"], "T1",
            "no transition, time kept"
        );

        cs[1].ready = true;
        let flipped = conditions(&Value::Array(again), Phase::Running, &cs, "T3");
        let ready = flipped
            .iter()
            .find(|c| c["type"] == "Ready")
            .expect("Ready");
        assert_eq!(
            (
                ready["status"].as_str(),
                ready["lastTransitionTime"].as_str()
            ),
            (Some("True"), Some("T3"))
        );
    }

    #[test]
    fn pod_scheduled_is_kept_as_the_binding_wrote_it() {
        let existing =
            json!([{"type": "PodScheduled", "status": "True", "lastTransitionTime": "T0"}]);
        let conds = conditions(&existing, Phase::Pending, &[], "T1");
        assert_eq!(conds[0], existing[0]);
        let kinds: Vec<_> = conds
            .iter()
            .map(|c| c["type"].as_str().unwrap_or(""))
            .collect();
        assert_eq!(
            kinds,
            ["PodScheduled", "Initialized", "ContainersReady", "Ready"]
        );
    }

    #[test]
    fn the_status_carries_ips_start_time_and_container_states() {
        let pod = json!({"spec": {"restartPolicy": "Never"}, "status": {"qosClass": "BestEffort"}});
        let mut crashed = view("app", State::Terminated(ended(1)), None);
        crashed.restart_count = 0;
        let cs = [crashed];
        let built = build(&StatusInput {
            pod: &pod,
            containers: &cs,
            ephemeral: &[],
            init: Init {
                views: &[],
                initialized: true,
            },
            failure: None,
            pod_ip: Some("10.0.0.5"),
            host_ip: "127.0.0.1",
            start_time: "T0",
            now: "T1",
        });
        assert_eq!(built["phase"], "Failed");
        assert_eq!(built["podIP"], "10.0.0.5");
        assert_eq!(built["podIPs"], json!([{"ip": "10.0.0.5"}]));
        assert_eq!(built["hostIP"], "127.0.0.1");
        assert_eq!(built["startTime"], "T0");
        let s = &built["containerStatuses"][0];
        assert_eq!(s["state"]["terminated"]["exitCode"], 1);
        assert_eq!(s["state"]["terminated"]["reason"], "Error");
        assert_eq!(s["lastState"], json!({}));
        assert_eq!(s["containerID"], "docker://abc");
        assert!(
            built.get("qosClass").is_none(),
            "not the kubelet's to write"
        );
    }

    #[test]
    fn an_unchanged_status_is_not_written_again() {
        let pod = json!({"spec": {}, "status": {}});
        let cs = [view("app", running(), None)];
        let input = StatusInput {
            pod: &pod,
            containers: &cs,
            ephemeral: &[],
            init: Init {
                views: &[],
                initialized: true,
            },
            failure: None,
            pod_ip: Some("10.0.0.5"),
            host_ip: "127.0.0.1",
            start_time: "T0",
            now: "T1",
        };
        let built = build(&input);
        assert!(patch(&json!({}), &built).is_some());
        let mut written = built.clone();
        written["qosClass"] = json!("BestEffort");
        assert_eq!(patch(&written, &built), None);
    }

    fn init(views: &[ContainerView], initialized: bool) -> Init<'_> {
        Init { views, initialized }
    }

    #[test]
    fn init_containers_hold_the_pod_pending_and_one_failed_under_never_fails_it() {
        let apps = [view("app", State::waiting("PodInitializing", None), None)];
        let running_init = [view("setup", running(), None)];
        assert_eq!(
            phase_with_init(
                RestartPolicy::Always,
                &init(&running_init, false),
                &apps,
                None
            ),
            Phase::Pending
        );
        let failed = [view("setup", State::Terminated(ended(1)), None)];
        assert_eq!(
            phase_with_init(RestartPolicy::Never, &init(&failed, false), &apps, None),
            Phase::Failed
        );
        assert_eq!(
            phase_with_init(RestartPolicy::OnFailure, &init(&failed, false), &apps, None),
            Phase::Pending,
            "it is restarted"
        );
    }

    #[test]
    fn the_initialized_condition_names_the_incomplete_init_containers() {
        let mut side = view("side", running(), None);
        side.sidecar = true;
        side.started = true;
        let views = [
            view("done", State::Terminated(ended(0)), None),
            side,
            view("next", State::waiting("PodInitializing", None), None),
        ];
        let conds = pod_conditions(
            &json!([]),
            Phase::Pending,
            &init(&views, false),
            &[],
            &[],
            "T",
        );
        let c = conds
            .iter()
            .find(|c| c["type"] == "Initialized")
            .expect("Initialized");
        assert_eq!(c["status"], "False");
        assert_eq!(c["reason"], "ContainersNotInitialized");
        assert_eq!(c["message"], "containers with incomplete status: [next]");
    }

    #[test]
    fn ready_waits_for_readiness_gates_and_keeps_their_conditions() {
        let cs = [view("app", running(), None)];
        let existing = json!([{"type": "example.com/lb", "status": "False"}]);
        let conds = pod_conditions(
            &existing,
            Phase::Running,
            &init(&[], true),
            &cs,
            &["example.com/lb"],
            "T",
        );
        let ready = conds.iter().find(|c| c["type"] == "Ready").expect("Ready");
        assert_eq!(ready["status"], "False");
        assert_eq!(ready["reason"], "ReadinessGatesNotReady");
        assert_eq!(
            ready["message"],
            "the status of pod readiness gate \"example.com/lb\" is not \"True\", but False"
        );
        let cr = conds
            .iter()
            .find(|c| c["type"] == "ContainersReady")
            .expect("ContainersReady");
        assert_eq!(cr["status"], "True");
        assert!(conds.iter().any(|c| c["type"] == "example.com/lb"), "kept");
        let passed = json!([{"type": "example.com/lb", "status": "True"}]);
        let conds = pod_conditions(
            &passed,
            Phase::Running,
            &init(&[], true),
            &cs,
            &["example.com/lb"],
            "T",
        );
        let ready = conds.iter().find(|c| c["type"] == "Ready").expect("Ready");
        assert_eq!(ready["status"], "True");
    }

    #[test]
    fn a_failure_the_kubelet_decided_gives_failed_with_its_reason_and_init_statuses() {
        let pod = json!({"spec": {}, "status": {}});
        let cs = [view("app", running(), None)];
        let inits = [view("setup", State::Terminated(ended(0)), None)];
        let built = build(&StatusInput {
            pod: &pod,
            containers: &cs,
            ephemeral: &[],
            init: init(&inits, true),
            failure: Some((
                "DeadlineExceeded",
                "Pod was active on the node longer than the specified deadline",
            )),
            pod_ip: None,
            host_ip: "127.0.0.1",
            start_time: "T0",
            now: "T1",
        });
        assert_eq!(built["phase"], "Failed");
        assert_eq!(built["reason"], "DeadlineExceeded");
        assert_eq!(built["initContainerStatuses"][0]["name"], "setup");
    }
}
