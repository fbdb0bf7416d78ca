//! Server-side `meta.k8s.io/v1` Table rendering for `kubectl get`.
//!
//! kubectl asks the API server for `application/json;as=Table;v=v1;g=meta.k8s.io`
//! and prints whatever columns and cells come back, so these must match
//! kube-apiserver's printers (k8s.io/kubernetes pkg/printers/internalversion)
//! column for column. Like kube-apiserver, rows always carry the wide cells:
//! the server renders with `Wide: true` and kubectl hides `priority: 1`
//! columns unless `-o wide` is asked for. Column names are sent in the
//! server's mixed case ("Cluster-IP", "Last Seen"); kubectl upper-cases them.
//!
//! Objects arrive as loose JSON, so every accessor falls back to the zero value
//! Go would see for a missing field and nothing here can panic on input.

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use std::collections::BTreeSet;

const NONE: &str = "<none>";
const UNKNOWN: &str = "<unknown>";

const NAME_DESC: &str = "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names";
const AGE_DESC: &str = "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. Null for lists. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata";
pub(crate) const CONTAINERS_DESC: &str = "Names of each container in the template.";
pub(crate) const IMAGES_DESC: &str = "Images referenced by each container in the template.";

/// Column definitions (JSON objects: name, type, format, description, priority) for a
/// stored resource (plural lowercase name), from its kind's strategy; an unknown
/// resource gets the generic Name + Age columns.
pub fn columns(resource: &str) -> Vec<Value> {
    match super::resources::lookup(resource) {
        Some(info) => info.strategy.columns(),
        None => generic_columns(),
    }
}

/// The cells of one row, in the same order as `columns(resource)`.
pub fn cells(resource: &str, obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    match super::resources::lookup(resource) {
        Some(info) => info.strategy.cells(obj, now),
        None => generic_cells(obj, now),
    }
}

/// Kubernetes' human duration as used in the AGE column ("5s", "3m20s", "2d4h", "3y45d"...), k8s.io/apimachinery/pkg/util/duration.HumanDuration.
pub fn human_duration(d: chrono::Duration) -> String {
    // Up to two seconds in the future counts as "now": clocks of the writer
    // and the reader are allowed to disagree a little.
    let seconds = d.num_seconds();
    if seconds < -1 {
        return "<invalid>".to_string();
    }
    if seconds < 0 {
        return "0s".to_string();
    }
    if seconds < 60 * 2 {
        return format!("{seconds}s");
    }
    let minutes = d.num_minutes();
    if minutes < 10 {
        return with_remainder(minutes, "m", seconds % 60, "s");
    }
    if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = d.num_hours();
    if hours < 8 {
        return with_remainder(hours, "h", minutes % 60, "m");
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        return with_remainder(hours / 24, "d", hours % 24, "h");
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        return with_remainder(hours / 24 / 365, "y", (hours / 24) % 365, "d");
    }
    format!("{}y", hours / 24 / 365)
}

/// "3m20s", but "3m" when the smaller unit is zero.
fn with_remainder(big: i64, big_unit: &str, small: i64, small_unit: &str) -> String {
    if small == 0 {
        format!("{big}{big_unit}")
    } else {
        format!("{big}{big_unit}{small}{small_unit}")
    }
}

// ---------------------------------------------------------------------------
// Column definitions
// ---------------------------------------------------------------------------

pub(crate) fn column(name: &str, kind: &str, priority: i64, description: &str) -> Value {
    json!({
        "name": name,
        "type": kind,
        "format": "",
        "description": description,
        "priority": priority,
    })
}

pub(crate) fn name_column(priority: i64) -> Value {
    json!({
        "name": "Name",
        "type": "string",
        "format": "name",
        "description": NAME_DESC,
        "priority": priority,
    })
}

pub(crate) fn age_column() -> Value {
    column("Age", "string", 0, AGE_DESC)
}

pub(crate) fn generic_columns() -> Vec<Value> {
    vec![name_column(0), age_column()]
}

pub(crate) fn pod_columns() -> Vec<Value> {
    vec![
        name_column(0),
        column("Ready", "string", 0, "The aggregate readiness state of this pod for accepting traffic."),
        column("Status", "string", 0, "The aggregate status of the containers in this pod."),
        column("Restarts", "string", 0, "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted."),
        age_column(),
        column("IP", "string", 1, "podIP address allocated to the pod. Routable at least within the cluster. Empty if not yet allocated."),
        column("Node", "string", 1, "NodeName indicates in which node this pod is scheduled."),
        column("Nominated Node", "string", 1, "nominatedNodeName is set only when this pod preempts other pods on the node, but it cannot be scheduled right away as preemption victims receive their graceful termination periods."),
        column("Readiness Gates", "string", 1, "If specified, all readiness gates will be evaluated for pod readiness."),
    ]
}

pub(crate) fn node_columns() -> Vec<Value> {
    vec![
        name_column(0),
        column("Status", "string", 0, "The status of the node"),
        column("Roles", "string", 0, "The roles of the node"),
        age_column(),
        column("Version", "string", 0, "Kubelet Version reported by the node."),
        column("Internal-IP", "string", 1, "List of addresses reachable to the node."),
        column("External-IP", "string", 1, "List of addresses reachable to the node."),
        column("OS-Image", "string", 1, "OS Image reported by the node from /etc/os-release (e.g. Debian GNU/Linux 7 (wheezy))."),
        column("Kernel-Version", "string", 1, "Kernel Version reported by the node from 'uname -r' (e.g. 3.16.0-0.bpo.4-amd64)."),
        column("Container-Runtime", "string", 1, "ContainerRuntime Version reported by the node through runtime remote API (e.g. containerd://1.4.2)."),
    ]
}

pub(crate) fn namespace_columns() -> Vec<Value> {
    vec![
        name_column(0),
        column("Status", "string", 0, "The status of the namespace"),
        age_column(),
    ]
}

pub(crate) fn service_columns() -> Vec<Value> {
    vec![
        name_column(0),
        column("Type", "string", 0, "type determines how the Service is exposed."),
        column("Cluster-IP", "string", 0, "clusterIP is the IP address of the service and is usually assigned randomly."),
        column("External-IP", "string", 0, "externalIPs is a list of IP addresses for which nodes in the cluster will also accept traffic for this service."),
        column("Port(s)", "string", 0, "The list of ports that are exposed by this service."),
        age_column(),
        column("Selector", "string", 1, "Route service traffic to pods with label keys and values matching this selector."),
    ]
}

pub(crate) fn endpoints_columns() -> Vec<Value> {
    vec![
        name_column(0),
        column(
            "Endpoints",
            "string",
            0,
            "The set of all endpoints is the union of all subsets.",
        ),
        age_column(),
    ]
}

pub(crate) fn replication_controller_columns() -> Vec<Value> {
    vec![
        name_column(0),
        column(
            "Desired",
            "integer",
            0,
            "Replicas is the number of desired replicas.",
        ),
        column(
            "Current",
            "integer",
            0,
            "Replicas is the most recently observed number of replicas.",
        ),
        column(
            "Ready",
            "integer",
            0,
            "The number of ready replicas for this replication controller.",
        ),
        age_column(),
        column("Containers", "string", 1, CONTAINERS_DESC),
        column("Images", "string", 1, IMAGES_DESC),
        column(
            "Selector",
            "string",
            1,
            "Selector is a label query over pods that should match the Replicas count.",
        ),
    ]
}

pub(crate) fn resource_quota_columns() -> Vec<Value> {
    vec![
        name_column(0),
        age_column(),
        column("Request", "string", 0, "Request represents a minimum amount of cpu/memory that a container may consume."),
        column("Limit", "string", 0, "Limits control the maximum amount of cpu/memory that a container may use independent of contention on the node."),
    ]
}

/// Events are the one table whose Name column is not first: kube-apiserver
/// leads with "Last Seen" and keeps the name as a wide-only column.
pub(crate) fn event_columns() -> Vec<Value> {
    vec![
        column("Last Seen", "string", 0, "The time at which the most recent occurrence of this event was recorded."),
        column("Type", "string", 0, "Type of this event (Normal, Warning), new types could be added in the future"),
        column("Reason", "string", 0, "This should be a short, machine understandable string that gives the reason for the transition into the object's current status."),
        column("Object", "string", 0, "The object that this event is about."),
        column("Subobject", "string", 1, "If referring to a piece of an object instead of an entire object, this string should contain a valid JSON/Go field access statement, such as desiredState.manifest.containers[2]."),
        column("Source", "string", 1, "The component reporting this event. Should be a short machine understandable string."),
        column("Message", "string", 0, "A human-readable description of the status of this operation."),
        column("First Seen", "string", 1, "The time at which the event was first recorded. (Time of server receipt is in TypeMeta.)"),
        column("Count", "string", 1, "The number of times this event has occurred."),
        name_column(1),
    ]
}

// ---------------------------------------------------------------------------
// Lenient JSON access
// ---------------------------------------------------------------------------

static NULL: Value = Value::Null;

/// The value at `path`, or null when any step is missing or not an object.
fn at<'a>(v: &'a Value, path: &[&str]) -> &'a Value {
    path.iter()
        .fold(v, |cur, key| cur.get(key).unwrap_or(&NULL))
}

fn text<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    at(v, path).as_str().unwrap_or("")
}

fn list<'a>(v: &'a Value, path: &[&str]) -> &'a [Value] {
    at(v, path).as_array().map(Vec::as_slice).unwrap_or(&[])
}

fn int(v: &Value, path: &[&str]) -> i64 {
    let value = at(v, path);
    value
        .as_i64()
        .or_else(|| value.as_f64().map(|f| f as i64))
        .unwrap_or(0)
}

fn flag(v: &Value, path: &[&str]) -> bool {
    at(v, path).as_bool().unwrap_or(false)
}

fn is_object(v: &Value, path: &[&str]) -> bool {
    at(v, path).is_object()
}

fn time(v: &Value, path: &[&str]) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text(v, path))
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// The string or "<none>" when empty, as kubectl shows absent values.
fn or_none(s: &str) -> String {
    if s.is_empty() {
        NONE.to_string()
    } else {
        s.to_string()
    }
}

fn or_unknown(s: &str) -> String {
    if s.is_empty() {
        UNKNOWN.to_string()
    } else {
        s.to_string()
    }
}

fn since(t: Option<DateTime<Utc>>, now: DateTime<Utc>) -> String {
    match t {
        Some(t) => human_duration(now - t),
        None => UNKNOWN.to_string(),
    }
}

pub(crate) fn name(obj: &Value) -> Value {
    json!(text(obj, &["metadata", "name"]))
}

pub(crate) fn age(obj: &Value, now: DateTime<Utc>) -> Value {
    json!(since(time(obj, &["metadata", "creationTimestamp"]), now))
}

/// labels.FormatLabels: sorted "k=v" pairs, "<none>" when empty.
pub(crate) fn format_labels(map: &Value) -> String {
    let Some(map) = map.as_object() else {
        return NONE.to_string();
    };
    let mut pairs: Vec<String> = map
        .iter()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
        .collect();
    pairs.sort();
    or_none(&pairs.join(","))
}

pub(crate) fn generic_cells(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    vec![name(obj), age(obj, now)]
}

// ---------------------------------------------------------------------------
// CertificateSigningRequests
// ---------------------------------------------------------------------------

pub(crate) fn csr_columns() -> Vec<Value> {
    vec![
        name_column(0),
        age_column(),
        column(
            "SignerName",
            "string",
            0,
            "The name of the signer that the request is for.",
        ),
        column(
            "Requestor",
            "string",
            0,
            "Name of the user that created the request.",
        ),
        column(
            "RequestedDuration",
            "string",
            0,
            "The requested validity of the issued certificate.",
        ),
        column(
            "Condition",
            "string",
            0,
            "The approval, denial and issuance of the request.",
        ),
    ]
}

/// kubectl's CONDITION: Approved, Denied or Pending, then Failed and Issued if so.
fn csr_condition(obj: &Value) -> String {
    let has = |kind: &str| {
        obj.pointer("/status/conditions")
            .and_then(Value::as_array)
            .is_some_and(|cs| cs.iter().any(|c| c["type"] == kind))
    };
    let mut status = if has("Denied") {
        "Denied".to_string()
    } else if has("Approved") {
        "Approved".to_string()
    } else {
        "Pending".to_string()
    };
    if has("Failed") {
        status.push_str(",Failed");
    }
    let issued = obj
        .pointer("/status/certificate")
        .and_then(Value::as_str)
        .is_some_and(|c| !c.is_empty());
    if issued {
        status.push_str(",Issued");
    }
    status
}

pub(crate) fn csr_cells(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let requested = match obj
        .pointer("/spec/expirationSeconds")
        .and_then(Value::as_i64)
    {
        Some(s) => human_duration(chrono::Duration::seconds(s)),
        None => NONE.to_string(),
    };
    vec![
        name(obj),
        age(obj, now),
        json!(text(obj, &["spec", "signerName"])),
        json!(text(obj, &["spec", "username"])),
        json!(requested),
        json!(csr_condition(obj)),
    ]
}

// ---------------------------------------------------------------------------
// Pods
// ---------------------------------------------------------------------------

/// Restart count plus the time of the newest restart among counted containers.
#[derive(Default, Clone, Copy)]
struct Restarts {
    count: i64,
    last: Option<DateTime<Utc>>,
}

impl Restarts {
    fn record(&mut self, status: &Value) {
        self.count += int(status, &["restartCount"]);
        if let Some(finished) = time(status, &["lastState", "terminated", "finishedAt"]) {
            if self.last.is_none_or(|last| last < finished) {
                self.last = Some(finished);
            }
        }
    }

    fn render(&self, now: DateTime<Utc>) -> String {
        match self.last {
            Some(last) if self.count != 0 => {
                format!("{} ({} ago)", self.count, since(Some(last), now))
            }
            _ => self.count.to_string(),
        }
    }
}

/// What the READY, STATUS and RESTARTS columns are computed from.
struct PodSummary {
    ready: usize,
    total: usize,
    reason: String,
    restarts: Restarts,
}

pub(crate) fn pod_cells(pod: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let summary = summarize_pod(pod);
    vec![
        name(pod),
        json!(format!("{}/{}", summary.ready, summary.total)),
        json!(summary.reason),
        json!(summary.restarts.render(now)),
        age(pod, now),
        json!(or_none(pod_ip(pod))),
        json!(or_none(text(pod, &["spec", "nodeName"]))),
        json!(or_none(text(pod, &["status", "nominatedNodeName"]))),
        json!(readiness_gates(pod)),
    ]
}

fn summarize_pod(pod: &Value) -> PodSummary {
    let mut summary = PodSummary {
        ready: 0,
        total: list(pod, &["spec", "containers"]).len() + sidecar_names(pod).len(),
        reason: initial_pod_reason(pod),
        restarts: Restarts::default(),
    };
    let (initializing, sidecar_restarts) = walk_init_containers(pod, &mut summary);
    if !initializing || condition_true(pod, "Initialized") {
        walk_containers(pod, sidecar_restarts, &mut summary);
    }
    apply_deletion(pod, &mut summary.reason);
    summary
}

/// Phase (the API server defaults a new pod to Pending) unless the kubelet
/// gave a reason, or scheduling gates still hold the pod back.
fn initial_pod_reason(pod: &Value) -> String {
    let gated = list(pod, &["status", "conditions"])
        .iter()
        .any(|c| text(c, &["type"]) == "PodScheduled" && text(c, &["reason"]) == "SchedulingGated");
    if gated {
        return "SchedulingGated".to_string();
    }
    let reason = text(pod, &["status", "reason"]);
    if !reason.is_empty() {
        return reason.to_string();
    }
    match text(pod, &["status", "phase"]) {
        "" => "Pending".to_string(),
        phase => phase.to_string(),
    }
}

/// Init containers with `restartPolicy: Always` are sidecars: they count
/// toward READY and keep running next to the app containers.
fn sidecar_names(pod: &Value) -> BTreeSet<&str> {
    list(pod, &["spec", "initContainers"])
        .iter()
        .filter(|c| text(c, &["restartPolicy"]) == "Always")
        .map(|c| text(c, &["name"]))
        .collect()
}

/// Walks init container statuses in order, stopping at the first one still
/// blocking startup, which then names the pod's status ("Init:1/2",
/// "Init:CrashLoopBackOff"...). Returns whether one is blocking, and the
/// restarts of sidecars alone, which are the only init restarts still shown
/// once the pod is initialized.
fn walk_init_containers(pod: &Value, summary: &mut PodSummary) -> (bool, Restarts) {
    let sidecars = sidecar_names(pod);
    let declared = list(pod, &["spec", "initContainers"]).len();
    let mut sidecar_restarts = Restarts::default();
    for (i, status) in list(pod, &["status", "initContainerStatuses"])
        .iter()
        .enumerate()
    {
        summary.restarts.record(status);
        let is_sidecar = sidecars.contains(text(status, &["name"]));
        if is_sidecar {
            sidecar_restarts.record(status);
        }
        if is_object(status, &["state", "terminated"])
            && int(status, &["state", "terminated", "exitCode"]) == 0
        {
            continue;
        }
        if is_sidecar && flag(status, &["started"]) {
            summary.ready += usize::from(flag(status, &["ready"]));
            continue;
        }
        summary.reason = blocking_init_reason(status, i, declared);
        return (true, sidecar_restarts);
    }
    (false, sidecar_restarts)
}

fn blocking_init_reason(status: &Value, index: usize, declared: usize) -> String {
    let terminated = at(status, &["state", "terminated"]);
    if terminated.is_object() {
        return match text(terminated, &["reason"]) {
            "" => format!("Init:{}", exit_description(terminated)),
            reason => format!("Init:{reason}"),
        };
    }
    match text(status, &["state", "waiting", "reason"]) {
        "" | "PodInitializing" => format!("Init:{index}/{declared}"),
        reason => format!("Init:{reason}"),
    }
}

/// "Signal:9" or "ExitCode:1" for a terminated state without a reason.
fn exit_description(terminated: &Value) -> String {
    match int(terminated, &["signal"]) {
        0 => format!("ExitCode:{}", int(terminated, &["exitCode"])),
        signal => format!("Signal:{signal}"),
    }
}

/// App containers are walked last to first so the first container's problem
/// wins, matching kubectl.
fn walk_containers(pod: &Value, sidecar_restarts: Restarts, summary: &mut PodSummary) {
    summary.restarts = sidecar_restarts;
    let mut has_running = false;
    for status in list(pod, &["status", "containerStatuses"]).iter().rev() {
        summary.restarts.record(status);
        let waiting = text(status, &["state", "waiting", "reason"]);
        let terminated = at(status, &["state", "terminated"]);
        if !waiting.is_empty() {
            summary.reason = waiting.to_string();
        } else if terminated.is_object() {
            summary.reason = match text(terminated, &["reason"]) {
                "" => exit_description(terminated),
                reason => reason.to_string(),
            };
        } else if flag(status, &["ready"]) && is_object(status, &["state", "running"]) {
            has_running = true;
            summary.ready += 1;
        }
    }
    // A finished container next to a still-running one does not make the pod
    // "Completed".
    if summary.reason == "Completed" && has_running {
        summary.reason = if condition_true(pod, "Ready") {
            "Running".to_string()
        } else {
            "NotReady".to_string()
        };
    }
}

fn apply_deletion(pod: &Value, reason: &mut String) {
    if at(pod, &["metadata", "deletionTimestamp"]).is_null() {
        return;
    }
    if text(pod, &["status", "reason"]) == "NodeLost" {
        *reason = "Unknown".to_string();
    } else if !matches!(text(pod, &["status", "phase"]), "Succeeded" | "Failed") {
        *reason = "Terminating".to_string();
    }
}

fn condition_true(pod: &Value, kind: &str) -> bool {
    list(pod, &["status", "conditions"])
        .iter()
        .any(|c| text(c, &["type"]) == kind && text(c, &["status"]) == "True")
}

fn pod_ip(pod: &Value) -> &str {
    list(pod, &["status", "podIPs"])
        .first()
        .map(|ip| text(ip, &["ip"]))
        .filter(|ip| !ip.is_empty())
        .unwrap_or_else(|| text(pod, &["status", "podIP"]))
}

/// "1/2" readiness gates whose condition is True, "<none>" without gates.
fn readiness_gates(pod: &Value) -> String {
    let gates = list(pod, &["spec", "readinessGates"]);
    if gates.is_empty() {
        return NONE.to_string();
    }
    let conditions = list(pod, &["status", "conditions"]);
    let passed = gates
        .iter()
        .filter(|gate| {
            let kind = text(gate, &["conditionType"]);
            conditions
                .iter()
                .find(|c| text(c, &["type"]) == kind)
                .is_some_and(|c| text(c, &["status"]) == "True")
        })
        .count();
    format!("{passed}/{}", gates.len())
}

// ---------------------------------------------------------------------------
// Nodes
// ---------------------------------------------------------------------------

pub(crate) fn node_cells(node: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let info = |field: &str| or_unknown(text(node, &["status", "nodeInfo", field]));
    vec![
        name(node),
        json!(node_status(node)),
        json!(or_none(&node_roles(node).join(","))),
        age(node, now),
        json!(text(node, &["status", "nodeInfo", "kubeletVersion"])),
        json!(node_address(node, "InternalIP")),
        json!(node_address(node, "ExternalIP")),
        json!(info("osImage")),
        json!(info("kernelVersion")),
        json!(info("containerRuntimeVersion")),
    ]
}

fn node_status(node: &Value) -> String {
    // Later duplicates win, as they do in the printer's condition map.
    let ready = list(node, &["status", "conditions"])
        .iter()
        .rev()
        .find(|c| text(c, &["type"]) == "Ready");
    let mut status = match ready {
        Some(c) if text(c, &["status"]) == "True" => "Ready".to_string(),
        Some(_) => "NotReady".to_string(),
        None => "Unknown".to_string(),
    };
    if flag(node, &["spec", "unschedulable"]) {
        status.push_str(",SchedulingDisabled");
    }
    status
}

/// Roles come from `node-role.kubernetes.io/<role>` label keys and the older
/// `kubernetes.io/role=<role>` label, sorted and de-duplicated.
fn node_roles(node: &Value) -> Vec<String> {
    let Some(labels) = at(node, &["metadata", "labels"]).as_object() else {
        return Vec::new();
    };
    let roles: BTreeSet<String> = labels
        .iter()
        .filter_map(|(key, value)| {
            if let Some(role) = key.strip_prefix("node-role.kubernetes.io/") {
                return Some(role.to_string()).filter(|r| !r.is_empty());
            }
            let value = value.as_str().unwrap_or("");
            (key == "kubernetes.io/role" && !value.is_empty()).then(|| value.to_string())
        })
        .collect();
    roles.into_iter().collect()
}

fn node_address(node: &Value, kind: &str) -> String {
    list(node, &["status", "addresses"])
        .iter()
        .find(|a| text(a, &["type"]) == kind)
        .map(|a| text(a, &["address"]).to_string())
        .unwrap_or_else(|| NONE.to_string())
}

// ---------------------------------------------------------------------------
// Namespaces
// ---------------------------------------------------------------------------

pub(crate) fn namespace_cells(ns: &Value, now: DateTime<Utc>) -> Vec<Value> {
    // The API server marks every new namespace Active, so a missing phase
    // means nobody has changed it yet.
    let phase = match text(ns, &["status", "phase"]) {
        "" => "Active",
        phase => phase,
    };
    vec![name(ns), json!(phase), age(ns, now)]
}

// ---------------------------------------------------------------------------
// Services
// ---------------------------------------------------------------------------

pub(crate) fn service_cells(svc: &Value, now: DateTime<Utc>) -> Vec<Value> {
    vec![
        name(svc),
        json!(service_type(svc)),
        json!(cluster_ip(svc)),
        json!(service_external_ip(svc)),
        json!(or_none(&service_ports(svc))),
        age(svc, now),
        json!(format_labels(at(svc, &["spec", "selector"]))),
    ]
}

/// The API server defaults `spec.type` to ClusterIP.
fn service_type(svc: &Value) -> &str {
    match text(svc, &["spec", "type"]) {
        "" => "ClusterIP",
        kind => kind,
    }
}

fn cluster_ip(svc: &Value) -> String {
    let first = list(svc, &["spec", "clusterIPs"])
        .first()
        .and_then(Value::as_str)
        .unwrap_or("");
    if first.is_empty() {
        or_none(text(svc, &["spec", "clusterIP"]))
    } else {
        first.to_string()
    }
}

fn service_external_ip(svc: &Value) -> String {
    let external: Vec<&str> = list(svc, &["spec", "externalIPs"])
        .iter()
        .filter_map(Value::as_str)
        .collect();
    match service_type(svc) {
        "ClusterIP" | "NodePort" => or_none(&external.join(",")),
        "LoadBalancer" => {
            let mut all = load_balancer_ingress(svc);
            all.extend(external.iter().map(|ip| ip.to_string()));
            if all.is_empty() {
                "<pending>".to_string()
            } else {
                all.join(",")
            }
        }
        "ExternalName" => text(svc, &["spec", "externalName"]).to_string(),
        _ => UNKNOWN.to_string(),
    }
}

/// Sorted, de-duplicated ingress IPs (or hostnames when an entry has no IP).
/// Server-side tables are rendered wide, so the list is never clipped.
fn load_balancer_ingress(svc: &Value) -> Vec<String> {
    let set: BTreeSet<String> = list(svc, &["status", "loadBalancer", "ingress"])
        .iter()
        .map(|i| match text(i, &["ip"]) {
            "" => text(i, &["hostname"]).to_string(),
            ip => ip.to_string(),
        })
        .filter(|s| !s.is_empty())
        .collect();
    set.into_iter().collect()
}

/// "80/TCP,443:30443/TCP"; the protocol defaults to TCP as the API server
/// would have set it.
fn service_ports(svc: &Value) -> String {
    list(svc, &["spec", "ports"])
        .iter()
        .map(|p| {
            let protocol = match text(p, &["protocol"]) {
                "" => "TCP",
                protocol => protocol,
            };
            let port = int(p, &["port"]);
            match int(p, &["nodePort"]) {
                node_port if node_port > 0 => format!("{port}:{node_port}/{protocol}"),
                _ => format!("{port}/{protocol}"),
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

// ---------------------------------------------------------------------------
// Endpoints
// ---------------------------------------------------------------------------

/// How many endpoints are spelled out before " + N more...".
const ENDPOINTS_SHOWN: usize = 3;

pub(crate) fn endpoints_cells(ep: &Value, now: DateTime<Utc>) -> Vec<Value> {
    vec![name(ep), json!(format_endpoints(ep)), age(ep, now)]
}

fn format_endpoints(ep: &Value) -> String {
    let subsets = list(ep, &["subsets"]);
    if subsets.is_empty() {
        return NONE.to_string();
    }
    let all: Vec<String> = subsets.iter().flat_map(subset_endpoints).collect();
    let shown = all[..all.len().min(ENDPOINTS_SHOWN)].join(",");
    if all.len() > ENDPOINTS_SHOWN {
        format!("{shown} + {} more...", all.len() - ENDPOINTS_SHOWN)
    } else {
        shown
    }
}

/// Every "ip:port" of a subset, port by port; bare IPs for headless
/// services that declare no ports.
fn subset_endpoints(subset: &Value) -> Vec<String> {
    let ips: Vec<&str> = list(subset, &["addresses"])
        .iter()
        .map(|a| text(a, &["ip"]))
        .collect();
    let ports = list(subset, &["ports"]);
    if ports.is_empty() {
        return ips.iter().map(|ip| ip.to_string()).collect();
    }
    ports
        .iter()
        .flat_map(|p| {
            let port = int(p, &["port"]);
            ips.iter().map(move |ip| join_host_port(ip, port))
        })
        .collect()
}

/// net.JoinHostPort: IPv6 addresses are bracketed.
fn join_host_port(host: &str, port: i64) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

// ---------------------------------------------------------------------------
// Replication controllers
// ---------------------------------------------------------------------------

pub(crate) fn replication_controller_cells(rc: &Value, now: DateTime<Utc>) -> Vec<Value> {
    // The API server defaults spec.replicas to 1.
    let desired = at(rc, &["spec", "replicas"]).as_i64().unwrap_or(1);
    let containers = list(rc, &["spec", "template", "spec", "containers"]);
    let field = |key: &str| {
        containers
            .iter()
            .map(|c| text(c, &[key]))
            .collect::<Vec<_>>()
            .join(",")
    };
    vec![
        name(rc),
        json!(desired),
        json!(int(rc, &["status", "replicas"])),
        json!(int(rc, &["status", "readyReplicas"])),
        age(rc, now),
        json!(field("name")),
        json!(field("image")),
        json!(format_labels(at(rc, &["spec", "selector"]))),
    ]
}

// ---------------------------------------------------------------------------
// Horizontal pod autoscalers
// ---------------------------------------------------------------------------

// ---------------------------------------------------------------------------
// Resource quotas
// ---------------------------------------------------------------------------

pub(crate) fn resource_quota_cells(quota: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let (requests, limits) = quota_usage(quota);
    vec![name(quota), age(quota, now), json!(requests), json!(limits)]
}

/// "pods: 1/10, requests.cpu: 0/2" for every hard limit in name order;
/// `limits.*` resources go to the second column, everything else the first.
fn quota_usage(quota: &Value) -> (String, String) {
    let hard = at(quota, &["status", "hard"]);
    let used = at(quota, &["status", "used"]);
    let Some(hard) = hard.as_object() else {
        return (String::new(), String::new());
    };
    let mut resources: Vec<&String> = hard.keys().collect();
    resources.sort();
    let mut requests = Vec::new();
    let mut limits = Vec::new();
    for resource in resources {
        let entry = format!(
            "{resource}: {}/{}",
            quantity(used.get(resource.as_str())),
            quantity(hard.get(resource.as_str()))
        );
        if resource.starts_with("limits.") {
            limits.push(entry);
        } else {
            requests.push(entry);
        }
    }
    (requests.join(", "), limits.join(", "))
}

/// A quantity as stored; a missing one is Go's zero Quantity, "0".
fn quantity(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => "0".to_string(),
    }
}

// ---------------------------------------------------------------------------
// Events
// ---------------------------------------------------------------------------

pub(crate) fn event_cells(event: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let (last_seen, first_seen, count) = event_timing(event, now);
    vec![
        json!(last_seen),
        json!(text(event, &["type"])),
        json!(text(event, &["reason"])),
        json!(event_object(event)),
        json!(text(event, &["involvedObject", "fieldPath"])),
        json!(event_source(event)),
        json!(text(event, &["message"]).trim()),
        json!(first_seen),
        json!(count),
        name(event),
    ]
}

/// Last seen, first seen and count, reconciling the old core/v1 fields with
/// the events.k8s.io ones (eventTime, series) that newer reporters fill.
fn event_timing(event: &Value, now: DateTime<Utc>) -> (String, String, i64) {
    let first = time(event, &["firstTimestamp"]).or_else(|| time(event, &["eventTime"]));
    let first_seen = since(first, now);
    let series = at(event, &["series"]);
    if series.is_object() {
        let last_seen = since(time(series, &["lastObservedTime"]), now);
        return (last_seen, first_seen, int(series, &["count"]));
    }
    let last_seen = match time(event, &["lastTimestamp"]) {
        Some(last) => since(Some(last), now),
        None => first_seen.clone(),
    };
    // Singleton events from the new API carry no count.
    let count = match int(event, &["count"]) {
        0 => 1,
        count => count,
    };
    (last_seen, first_seen, count)
}

/// "pod/web-1", or just the lower-cased kind when the object has no name.
fn event_object(event: &Value) -> String {
    let kind = text(event, &["involvedObject", "kind"]).to_lowercase();
    match text(event, &["involvedObject", "name"]) {
        "" => kind,
        name => format!("{kind}/{name}"),
    }
}

/// "kubelet, node-1": component and host, falling back to the reporting
/// controller and instance that events.k8s.io writers fill instead.
fn event_source(event: &Value) -> String {
    let first_non_empty = |a: &[&str], b: &[&str]| match text(event, a) {
        "" => text(event, b).to_string(),
        s => s.to_string(),
    };
    let component = first_non_empty(&["source", "component"], &["reportingComponent"]);
    let host = first_non_empty(&["source", "host"], &["reportingInstance"]);
    if host.is_empty() {
        component
    } else {
        format!("{component}, {host}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Duration, TimeZone};

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2024, 6, 1, 12, 0, 0)
            .single()
            .expect("valid date")
    }

    /// RFC 3339 text for `now() - ago`.
    fn ago(ago: Duration) -> String {
        (now() - ago).to_rfc3339()
    }

    fn names(resource: &str) -> Vec<String> {
        columns(resource)
            .iter()
            .map(|c| c["name"].as_str().unwrap_or("").to_string())
            .collect()
    }

    fn wide_names(resource: &str) -> Vec<String> {
        columns(resource)
            .iter()
            .filter(|c| c["priority"] == 1)
            .map(|c| c["name"].as_str().unwrap_or("").to_string())
            .collect()
    }

    fn running(name: &str, ready: bool, restarts: i64) -> Value {
        json!({
            "name": name, "ready": ready, "restartCount": restarts,
            "state": {"running": {"startedAt": ago(Duration::minutes(10))}}
        })
    }

    fn pod(status: Value) -> Value {
        json!({
            "metadata": {"name": "web-1", "creationTimestamp": ago(Duration::hours(3))},
            "spec": {"containers": [{"name": "app"}, {"name": "log"}], "nodeName": "node-a"},
            "status": status
        })
    }

    fn pod_cell(obj: &Value, column: &str) -> Value {
        let index = names("pods").iter().position(|n| n == column);
        let row = cells("pods", obj, now());
        index
            .and_then(|i| row.get(i).cloned())
            .unwrap_or(Value::Null)
    }

    #[test]
    fn human_duration_matches_apimachinery_buckets() {
        let cases = [
            (Duration::seconds(-5), "<invalid>"),
            (Duration::milliseconds(-1500), "0s"),
            (Duration::seconds(5), "5s"),
            (Duration::seconds(119), "119s"),
            (Duration::seconds(200), "3m20s"),
            (Duration::minutes(5), "5m"),
            (Duration::minutes(150), "150m"),
            (Duration::minutes(185), "3h5m"),
            (Duration::hours(7), "7h"),
            (Duration::hours(30), "30h"),
            (Duration::hours(52), "2d4h"),
            (Duration::days(3), "3d"),
            (Duration::days(300), "300d"),
            (Duration::days(365 * 3 + 45), "3y45d"),
            (Duration::days(365 * 2), "2y"),
            (Duration::days(365 * 9), "9y"),
        ];
        for (d, want) in cases {
            assert_eq!(human_duration(d), want, "for {d:?}");
        }
    }

    #[test]
    fn every_resource_but_events_starts_with_a_name_column() {
        for resource in [
            "pods",
            "nodes",
            "namespaces",
            "services",
            "endpoints",
            "replicationcontrollers",
            "resourcequotas",
            "configmaps",
        ] {
            let cols = columns(resource);
            assert_eq!(cols[0]["name"], "Name", "{resource}");
            assert_eq!(cols[0]["format"], "name", "{resource}");
            assert_eq!(cols[0]["priority"], 0, "{resource}");
        }
    }

    #[test]
    fn cells_line_up_with_columns_for_every_resource_even_when_empty() {
        for resource in [
            "pods",
            "nodes",
            "namespaces",
            "services",
            "endpoints",
            "replicationcontrollers",
            "resourcequotas",
            "events",
            "horizontalpodautoscalers",
            "certificatesigningrequests",
            "secrets",
        ] {
            for obj in [json!({}), json!(null), json!({"metadata": 7, "spec": "x"})] {
                assert_eq!(
                    cells(resource, &obj, now()).len(),
                    columns(resource).len(),
                    "{resource} {obj}"
                );
            }
        }
    }

    #[test]
    fn csr_rows_show_requestor_and_condition_like_kubectl() {
        let csr = json!({"metadata": {"name": "node-csr-w1"}, "spec": {
            "signerName": "kubernetes.io/kube-apiserver-client-kubelet",
            "username": "system:bootstrap:abcdef", "expirationSeconds": 3600},
            "status": {"conditions": [{"type": "Approved", "status": "True"}],
                "certificate": "Zm9v"}});
        let row = cells("certificatesigningrequests", &csr, now());
        assert_eq!(row[2], "kubernetes.io/kube-apiserver-client-kubelet");
        assert_eq!(row[3], "system:bootstrap:abcdef");
        assert_eq!(row[4], "60m");
        assert_eq!(row[5], "Approved,Issued");
        let pending = json!({"metadata": {"name": "x"}, "spec": {}});
        let row = cells("certificatesigningrequests", &pending, now());
        assert_eq!(
            (row[4].as_str(), row[5].as_str()),
            (Some("<none>"), Some("Pending"))
        );
    }

    #[test]
    fn pod_columns_put_ip_node_and_gates_behind_wide() {
        assert_eq!(
            names("pods")[..5],
            ["Name", "Ready", "Status", "Restarts", "Age"]
        );
        assert_eq!(
            wide_names("pods"),
            ["IP", "Node", "Nominated Node", "Readiness Gates"]
        );
    }

    #[test]
    fn pod_row_shows_ready_count_and_running_phase() {
        let p = pod(json!({
            "phase": "Running",
            "podIPs": [{"ip": "10.1.0.5"}],
            "containerStatuses": [running("app", true, 0), running("log", false, 0)]
        }));
        let row = cells("pods", &p, now());
        assert_eq!(
            row,
            vec![
                json!("web-1"),
                json!("1/2"),
                json!("Running"),
                json!("0"),
                json!("3h"),
                json!("10.1.0.5"),
                json!("node-a"),
                json!("<none>"),
                json!("<none>"),
            ]
        );
    }

    #[test]
    fn pod_row_shows_crashloop_reason_and_restarts() {
        let p = pod(json!({
            "phase": "Running",
            "containerStatuses": [
                {
                    "name": "app", "ready": false, "restartCount": 4,
                    "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                    "lastState": {"terminated": {"exitCode": 1, "finishedAt": ago(Duration::minutes(5))}}
                },
                running("log", true, 1)
            ]
        }));
        assert_eq!(pod_cell(&p, "Status"), "CrashLoopBackOff");
        assert_eq!(pod_cell(&p, "Restarts"), "5 (5m ago)");
        assert_eq!(pod_cell(&p, "Ready"), "1/2");
    }

    #[test]
    fn pod_restarts_without_a_last_termination_are_a_bare_number() {
        let p = pod(json!({"phase": "Running", "containerStatuses": [running("app", true, 2)]}));
        assert_eq!(pod_cell(&p, "Restarts"), "2");
    }

    #[test]
    fn pod_first_container_problem_wins_over_later_ones() {
        let p = pod(json!({
            "phase": "Pending",
            "containerStatuses": [
                {"name": "app", "state": {"waiting": {"reason": "ErrImagePull"}}},
                {"name": "log", "state": {"waiting": {"reason": "ContainerCreating"}}}
            ]
        }));
        assert_eq!(pod_cell(&p, "Status"), "ErrImagePull");
    }

    #[test]
    fn pod_terminated_containers_show_completed_error_or_exit_code() {
        let done = |reason: &str, code: i64| {
            pod(json!({
                "phase": "Failed",
                "containerStatuses": [{"name": "app", "state": {"terminated": {"reason": reason, "exitCode": code}}}]
            }))
        };
        assert_eq!(pod_cell(&done("Completed", 0), "Status"), "Completed");
        assert_eq!(pod_cell(&done("Error", 1), "Status"), "Error");
        assert_eq!(pod_cell(&done("", 3), "Status"), "ExitCode:3");
        let signalled = pod(json!({
            "containerStatuses": [{"name": "app", "state": {"terminated": {"signal": 9, "exitCode": 137}}}]
        }));
        assert_eq!(pod_cell(&signalled, "Status"), "Signal:9");
    }

    #[test]
    fn pod_completed_container_beside_a_running_one_reads_as_running_or_not_ready() {
        let status = |ready: &str| {
            json!({
                "phase": "Running",
                "conditions": [{"type": "Ready", "status": ready}],
                "containerStatuses": [
                    running("app", true, 0),
                    {"name": "log", "state": {"terminated": {"reason": "Completed", "exitCode": 0}}}
                ]
            })
        };
        assert_eq!(pod_cell(&pod(status("True")), "Status"), "Running");
        assert_eq!(pod_cell(&pod(status("False")), "Status"), "NotReady");
    }

    #[test]
    fn pod_with_deletion_timestamp_is_terminating_unless_finished() {
        let mut p =
            pod(json!({"phase": "Running", "containerStatuses": [running("app", true, 0)]}));
        p["metadata"]["deletionTimestamp"] = json!(ago(Duration::seconds(3)));
        assert_eq!(pod_cell(&p, "Status"), "Terminating");
        p["status"]["phase"] = json!("Succeeded");
        p["status"]["containerStatuses"] = json!([]);
        assert_eq!(pod_cell(&p, "Status"), "Succeeded");
        p["status"]["reason"] = json!("NodeLost");
        assert_eq!(pod_cell(&p, "Status"), "Unknown");
    }

    #[test]
    fn pod_waiting_on_init_containers_shows_init_progress() {
        let mut p = pod(json!({
            "phase": "Pending",
            "initContainerStatuses": [
                {"name": "migrate", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
                {"name": "seed", "state": {"running": {}}}
            ],
            "containerStatuses": [
                {"name": "app", "state": {"waiting": {"reason": "PodInitializing"}}}
            ]
        }));
        p["spec"]["initContainers"] = json!([{"name": "migrate"}, {"name": "seed"}]);
        assert_eq!(pod_cell(&p, "Status"), "Init:1/2");
    }

    #[test]
    fn pod_failing_init_container_shows_its_reason_and_restarts() {
        let mut p = pod(json!({
            "phase": "Pending",
            "initContainerStatuses": [{
                "name": "migrate", "restartCount": 3,
                "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                "lastState": {"terminated": {"exitCode": 1, "finishedAt": ago(Duration::seconds(40))}}
            }]
        }));
        p["spec"]["initContainers"] = json!([{"name": "migrate"}]);
        assert_eq!(pod_cell(&p, "Status"), "Init:CrashLoopBackOff");
        assert_eq!(pod_cell(&p, "Restarts"), "3 (40s ago)");
        p["status"]["initContainerStatuses"][0]["state"] = json!({"terminated": {"exitCode": 2}});
        assert_eq!(pod_cell(&p, "Status"), "Init:ExitCode:2");
    }

    #[test]
    fn pod_sidecar_init_containers_count_toward_ready() {
        let mut p = pod(json!({
            "phase": "Running",
            "conditions": [{"type": "Initialized", "status": "True"}],
            "initContainerStatuses": [{
                "name": "proxy", "started": true, "ready": true, "restartCount": 1,
                "state": {"running": {}}
            }],
            "containerStatuses": [running("app", true, 0), running("log", true, 0)]
        }));
        p["spec"]["initContainers"] = json!([{"name": "proxy", "restartPolicy": "Always"}]);
        assert_eq!(pod_cell(&p, "Ready"), "3/3");
        assert_eq!(pod_cell(&p, "Status"), "Running");
        assert_eq!(pod_cell(&p, "Restarts"), "1");
    }

    #[test]
    fn pod_with_no_status_renders_pending_defaults() {
        let p = json!({"metadata": {"name": "bare"}, "spec": {"containers": [{"name": "app"}]}});
        let row = cells("pods", &p, now());
        assert_eq!(
            row,
            vec![
                json!("bare"),
                json!("0/1"),
                json!("Pending"),
                json!("0"),
                json!("<unknown>"),
                json!("<none>"),
                json!("<none>"),
                json!("<none>"),
                json!("<none>"),
            ]
        );
    }

    #[test]
    fn pod_scheduling_gated_condition_overrides_phase() {
        let p = pod(json!({
            "phase": "Pending",
            "conditions": [{"type": "PodScheduled", "status": "False", "reason": "SchedulingGated"}]
        }));
        assert_eq!(pod_cell(&p, "Status"), "SchedulingGated");
    }

    #[test]
    fn pod_readiness_gates_count_true_conditions() {
        let mut p = pod(json!({
            "phase": "Running",
            "conditions": [{"type": "example.com/lb", "status": "True"}]
        }));
        p["spec"]["readinessGates"] =
            json!([{"conditionType": "example.com/lb"}, {"conditionType": "example.com/dns"}]);
        assert_eq!(pod_cell(&p, "Readiness Gates"), "1/2");
    }

    #[test]
    fn pod_wide_ip_falls_back_to_pod_ip_and_shows_nominated_node() {
        let p = pod(json!({"podIP": "10.0.0.9", "nominatedNodeName": "node-b"}));
        assert_eq!(pod_cell(&p, "IP"), "10.0.0.9");
        assert_eq!(pod_cell(&p, "Nominated Node"), "node-b");
    }

    fn node(ready: Option<&str>, unschedulable: bool) -> Value {
        let conditions: Vec<Value> = ready
            .map(|s| json!({"type": "Ready", "status": s}))
            .into_iter()
            .collect();
        json!({
            "metadata": {
                "name": "node-a",
                "creationTimestamp": ago(Duration::days(2) + Duration::hours(4)),
                "labels": {
                    "node-role.kubernetes.io/control-plane": "",
                    "node-role.kubernetes.io/": "",
                    "kubernetes.io/role": "worker",
                    "kubernetes.io/hostname": "node-a"
                }
            },
            "spec": {"unschedulable": unschedulable},
            "status": {
                "conditions": conditions,
                "addresses": [
                    {"type": "Hostname", "address": "node-a"},
                    {"type": "InternalIP", "address": "192.168.1.10"}
                ],
                "nodeInfo": {"kubeletVersion": "v1.32.0", "osImage": "Debian GNU/Linux 12", "kernelVersion": "6.1.0", "containerRuntimeVersion": "skiff://0.1.0"}
            }
        })
    }

    #[test]
    fn node_row_shows_ready_roles_version_and_wide_system_info() {
        let row = cells("nodes", &node(Some("True"), false), now());
        assert_eq!(
            row,
            vec![
                json!("node-a"),
                json!("Ready"),
                json!("control-plane,worker"),
                json!("2d4h"),
                json!("v1.32.0"),
                json!("192.168.1.10"),
                json!("<none>"),
                json!("Debian GNU/Linux 12"),
                json!("6.1.0"),
                json!("skiff://0.1.0"),
            ]
        );
        assert_eq!(
            wide_names("nodes"),
            [
                "Internal-IP",
                "External-IP",
                "OS-Image",
                "Kernel-Version",
                "Container-Runtime"
            ]
        );
    }

    #[test]
    fn node_status_adds_scheduling_disabled_when_cordoned() {
        let status = |ready, cordoned| cells("nodes", &node(ready, cordoned), now())[1].clone();
        assert_eq!(status(Some("True"), true), "Ready,SchedulingDisabled");
        assert_eq!(status(Some("False"), false), "NotReady");
        assert_eq!(status(Some("Unknown"), false), "NotReady");
        assert_eq!(status(None, true), "Unknown,SchedulingDisabled");
    }

    #[test]
    fn node_without_roles_or_info_shows_none_and_unknown() {
        let row = cells("nodes", &json!({"metadata": {"name": "n"}}), now());
        assert_eq!(row[2], "<none>");
        assert_eq!(row[4], "");
        assert_eq!(row[5], "<none>");
        assert_eq!(row[7], "<unknown>");
    }

    #[test]
    fn namespace_row_shows_phase_and_age() {
        let ns = json!({
            "metadata": {"name": "dev", "creationTimestamp": ago(Duration::seconds(45))},
            "status": {"phase": "Terminating"}
        });
        assert_eq!(
            cells("namespaces", &ns, now()),
            vec![json!("dev"), json!("Terminating"), json!("45s")]
        );
        assert_eq!(names("namespaces"), ["Name", "Status", "Age"]);
    }

    #[test]
    fn service_row_formats_node_ports_and_selector() {
        let svc = json!({
            "metadata": {"name": "web", "creationTimestamp": ago(Duration::minutes(200))},
            "spec": {
                "type": "NodePort",
                "clusterIP": "10.96.0.20",
                "clusterIPs": ["10.96.0.20"],
                "ports": [
                    {"port": 80, "nodePort": 30080, "protocol": "TCP"},
                    {"port": 53, "protocol": "UDP"}
                ],
                "selector": {"tier": "web", "app": "shop"}
            }
        });
        assert_eq!(
            cells("services", &svc, now()),
            vec![
                json!("web"),
                json!("NodePort"),
                json!("10.96.0.20"),
                json!("<none>"),
                json!("80:30080/TCP,53/UDP"),
                json!("3h20m"),
                json!("app=shop,tier=web"),
            ]
        );
        assert_eq!(
            names("services"),
            [
                "Name",
                "Type",
                "Cluster-IP",
                "External-IP",
                "Port(s)",
                "Age",
                "Selector"
            ]
        );
        assert_eq!(wide_names("services"), ["Selector"]);
    }

    #[test]
    fn service_external_ip_follows_service_type() {
        let external = |spec: Value, status: Value| {
            let svc = json!({"spec": spec, "status": status});
            cells("services", &svc, now())[3].clone()
        };
        assert_eq!(
            external(json!({"type": "LoadBalancer"}), json!({})),
            "<pending>"
        );
        assert_eq!(
            external(
                json!({"type": "LoadBalancer", "externalIPs": ["1.2.3.4"]}),
                json!({"loadBalancer": {"ingress": [{"ip": "5.6.7.8"}, {"hostname": "lb.example.com"}]}})
            ),
            "5.6.7.8,lb.example.com,1.2.3.4"
        );
        assert_eq!(
            external(
                json!({"type": "ExternalName", "externalName": "db.example.com"}),
                json!({})
            ),
            "db.example.com"
        );
        assert_eq!(
            external(json!({"externalIPs": ["9.9.9.9"]}), json!({})),
            "9.9.9.9"
        );
        assert_eq!(external(json!({"type": "Weird"}), json!({})), "<unknown>");
    }

    #[test]
    fn service_without_ports_or_cluster_ip_shows_none() {
        let row = cells("services", &json!({"metadata": {"name": "s"}}), now());
        assert_eq!(row[1], "ClusterIP");
        assert_eq!(row[2], "<none>");
        assert_eq!(row[4], "<none>");
        assert_eq!(row[6], "<none>");
    }

    #[test]
    fn endpoints_show_first_three_and_count_the_rest() {
        let ep = json!({
            "metadata": {"name": "kube-dns"},
            "subsets": [{
                "addresses": [{"ip": "10.1.0.20"}, {"ip": "10.1.0.21"}],
                "ports": [{"name": "dns", "port": 53, "protocol": "UDP"}, {"name": "dns-tcp", "port": 53}, {"name": "metrics", "port": 9153}]
            }]
        });
        assert_eq!(
            cells("endpoints", &ep, now())[1],
            "10.1.0.20:53,10.1.0.21:53,10.1.0.20:53 + 3 more..."
        );
    }

    #[test]
    fn endpoints_without_subsets_show_none_and_headless_shows_bare_ips() {
        assert_eq!(
            cells("endpoints", &json!({"subsets": []}), now())[1],
            "<none>"
        );
        let headless = json!({"subsets": [{"addresses": [{"ip": "10.0.0.1"}, {"ip": "fd00::1"}]}]});
        assert_eq!(cells("endpoints", &headless, now())[1], "10.0.0.1,fd00::1");
        let v6 = json!({"subsets": [{"addresses": [{"ip": "fd00::1"}], "ports": [{"port": 80}]}]});
        assert_eq!(cells("endpoints", &v6, now())[1], "[fd00::1]:80");
    }

    #[test]
    fn replication_controller_row_shows_counts_and_wide_template() {
        let rc = json!({
            "metadata": {"name": "web", "creationTimestamp": ago(Duration::days(10))},
            "spec": {
                "replicas": 3,
                "selector": {"app": "web"},
                "template": {"spec": {"containers": [
                    {"name": "app", "image": "nginx:1.27"},
                    {"name": "log", "image": "busybox"}
                ]}}
            },
            "status": {"replicas": 3, "readyReplicas": 2}
        });
        assert_eq!(
            cells("replicationcontrollers", &rc, now()),
            vec![
                json!("web"),
                json!(3),
                json!(3),
                json!(2),
                json!("10d"),
                json!("app,log"),
                json!("nginx:1.27,busybox"),
                json!("app=web"),
            ]
        );
        let types: Vec<Value> = columns("replicationcontrollers")[1..4]
            .iter()
            .map(|c| c["type"].clone())
            .collect();
        assert_eq!(
            types,
            [json!("integer"), json!("integer"), json!("integer")]
        );
    }

    #[test]
    fn replication_controller_without_spec_defaults_to_one_replica() {
        let row = cells("replicationcontrollers", &json!({}), now());
        assert_eq!(row[1], 1);
        assert_eq!(row[2], 0);
        assert_eq!(row[7], "<none>");
    }

    #[test]
    fn resource_quota_splits_requests_and_limits_in_name_order() {
        let quota = json!({
            "metadata": {"name": "compute", "creationTimestamp": ago(Duration::minutes(7))},
            "status": {
                "hard": {"requests.cpu": "2", "pods": "10", "limits.memory": "2Gi", "limits.cpu": "4"},
                "used": {"pods": "1", "limits.cpu": "500m", "limits.memory": "256Mi"}
            }
        });
        assert_eq!(
            cells("resourcequotas", &quota, now()),
            vec![
                json!("compute"),
                json!("7m"),
                json!("pods: 1/10, requests.cpu: 0/2"),
                json!("limits.cpu: 500m/4, limits.memory: 256Mi/2Gi"),
            ]
        );
        assert_eq!(names("resourcequotas"), ["Name", "Age", "Request", "Limit"]);
    }

    #[test]
    fn resource_quota_without_status_has_empty_usage() {
        let row = cells("resourcequotas", &json!({"metadata": {"name": "q"}}), now());
        assert_eq!(row[2], "");
        assert_eq!(row[3], "");
    }

    #[test]
    fn event_columns_follow_kube_apiserver_order_and_priorities() {
        assert_eq!(
            names("events"),
            [
                "Last Seen",
                "Type",
                "Reason",
                "Object",
                "Subobject",
                "Source",
                "Message",
                "First Seen",
                "Count",
                "Name"
            ]
        );
        assert_eq!(
            wide_names("events"),
            ["Subobject", "Source", "First Seen", "Count", "Name"]
        );
    }

    #[test]
    fn event_row_shows_object_source_and_counts() {
        let event = json!({
            "metadata": {"name": "web-1.17d3"},
            "type": "Warning",
            "reason": "BackOff",
            "message": "Back-off restarting failed container\n",
            "involvedObject": {"kind": "Pod", "name": "web-1", "fieldPath": "spec.containers{app}"},
            "source": {"component": "kubelet", "host": "node-a"},
            "firstTimestamp": ago(Duration::minutes(30)),
            "lastTimestamp": ago(Duration::seconds(20)),
            "count": 7
        });
        assert_eq!(
            cells("events", &event, now()),
            vec![
                json!("20s"),
                json!("Warning"),
                json!("BackOff"),
                json!("pod/web-1"),
                json!("spec.containers{app}"),
                json!("kubelet, node-a"),
                json!("Back-off restarting failed container"),
                json!("30m"),
                json!(7),
                json!("web-1.17d3"),
            ]
        );
    }

    #[test]
    fn event_from_new_api_uses_event_time_series_and_reporting_controller() {
        let singleton = json!({
            "eventTime": "2024-06-01T11:59:50.123456Z",
            "reportingComponent": "skiff-scheduler",
            "involvedObject": {"kind": "Node"}
        });
        let row = cells("events", &singleton, now());
        assert_eq!(row[0], "9s");
        assert_eq!(row[3], "node");
        assert_eq!(row[5], "skiff-scheduler");
        assert_eq!(row[7], "9s");
        assert_eq!(row[8], 1);

        let series = json!({
            "eventTime": ago(Duration::minutes(4)),
            "series": {"count": 12, "lastObservedTime": ago(Duration::seconds(30))}
        });
        let row = cells("events", &series, now());
        assert_eq!(row[0], "30s");
        assert_eq!(row[7], "4m");
        assert_eq!(row[8], 12);
    }

    #[test]
    fn event_without_any_timestamp_is_unknown() {
        let row = cells("events", &json!({"count": 2}), now());
        assert_eq!(row[0], "<unknown>");
        assert_eq!(row[7], "<unknown>");
        assert_eq!(row[8], 2);
    }

    #[test]
    fn unknown_resources_get_name_and_age() {
        assert_eq!(names("widgets"), ["Name", "Age"]);
        let cm =
            json!({"metadata": {"name": "settings", "creationTimestamp": "2024-06-01T11:00:00Z"}});
        assert_eq!(
            cells("widgets", &cm, now()),
            vec![json!("settings"), json!("60m")]
        );
    }

    #[test]
    fn malformed_creation_timestamp_reads_as_unknown_age() {
        let cm = json!({"metadata": {"name": "x", "creationTimestamp": "yesterday"}});
        assert_eq!(cells("widgets", &cm, now())[1], "<unknown>");
    }

    #[test]
    fn column_definitions_carry_every_table_field() {
        for col in columns("pods").iter().chain(columns("events").iter()) {
            for field in ["name", "type", "format", "description", "priority"] {
                assert!(col.get(field).is_some(), "{col} lacks {field}");
            }
        }
    }
}
