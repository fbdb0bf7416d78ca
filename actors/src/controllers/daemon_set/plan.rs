//! What the DaemonSet controller decides, apart from the API calls that carry it out:
//! the daemon pod of a node, which nodes should run one, what `manage` and the rolling
//! update ask for, and the status counts. Pure functions of the facts and the clock.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use k8s_openapi::api::apps::v1 as apps;
use serde_json::{json, Value};

use super::TEMPLATE_GENERATION_LABEL;
use crate::api::kinds::workload;
use crate::api::meta;
use crate::controllers::{history, owned, pods};
use crate::scheduler::info::{NodeInfo, PodInfo, TaintEffect};

/// The tolerations every daemon pod gets (`AddOrUpdateDaemonPodTolerations`): it stays on
/// not-ready and unreachable nodes, and is placed despite pressure and cordons.
fn default_tolerations(host_network: bool) -> Vec<Value> {
    let t = |key: &str, effect: &str| json!({"key": format!("node.kubernetes.io/{key}"), "operator": "Exists", "effect": effect});
    let mut out = vec![
        t("not-ready", "NoExecute"),
        t("unreachable", "NoExecute"),
        t("disk-pressure", "NoSchedule"),
        t("memory-pressure", "NoSchedule"),
        t("pid-pressure", "NoSchedule"),
        t("unschedulable", "NoSchedule"),
    ];
    if host_network {
        out.push(t("network-unavailable", "NoSchedule"));
    }
    out
}

/// Add `wanted` to `spec.tolerations`, replacing one with the same key, operator, value
/// and effect (`AddOrUpdateTolerationInPodSpec`).
fn add_tolerations(spec: &mut Value, wanted: Vec<Value>) {
    let same = |a: &Value, b: &Value| {
        ["key", "operator", "value", "effect"].iter().all(|f| {
            let s = |v: &Value| v.get(*f).and_then(Value::as_str).unwrap_or("").to_string();
            let (x, y) = (s(a), s(b));
            // An empty operator means Equal.
            if *f == "operator" {
                let eq = |o: String| if o.is_empty() { "Equal".into() } else { o };
                eq(x) == eq(y)
            } else {
                x == y
            }
        })
    };
    let list = spec
        .as_object_mut()
        .map(|m| m.entry("tolerations").or_insert_with(|| json!([])));
    let Some(Value::Array(list)) = list else {
        return;
    };
    for t in wanted {
        match list.iter_mut().find(|o| same(o, &t)) {
            Some(existing) => *existing = t,
            None => list.push(t),
        }
    }
}

/// The daemon pod of `ds` for `node` (or, without a node, the pod the eligibility checks
/// judge): the template with the revision labels, the default tolerations and, for a
/// node, the affinity term that pins it there (`ReplaceDaemonSetPodNodeNameNodeAffinity`).
pub(super) fn daemon_pod(
    ds: &Value,
    hash: &str,
    generation: Option<i64>,
    node: Option<&str>,
) -> Value {
    let template = ds
        .pointer("/spec/template")
        .cloned()
        .unwrap_or_else(|| json!({}));
    let mut labels = template
        .pointer("/metadata/labels")
        .cloned()
        .filter(Value::is_object)
        .unwrap_or_else(|| json!({}));
    if !hash.is_empty() {
        labels[history::REVISION_HASH] = json!(hash);
    }
    if let Some(g) = generation {
        labels[TEMPLATE_GENERATION_LABEL] = json!(g.to_string());
    }
    let mut spec = template.get("spec").cloned().unwrap_or_else(|| json!({}));
    let host_network = spec.get("hostNetwork").and_then(Value::as_bool) == Some(true);
    add_tolerations(&mut spec, default_tolerations(host_network));
    if let Some(node) = node {
        let term = json!({"nodeSelectorTerms": [{"matchFields": [
            {"key": "metadata.name", "operator": "In", "values": [node]}]}]});
        if !spec.get("affinity").is_some_and(Value::is_object) {
            spec["affinity"] = json!({});
        }
        if !spec["affinity"]
            .get("nodeAffinity")
            .is_some_and(Value::is_object)
        {
            spec["affinity"]["nodeAffinity"] = json!({});
        }
        // The node matched the DaemonSet's own terms already; the pod needs only this one.
        spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"] = term;
    }
    let name = meta::name(ds).unwrap_or("ds");
    let mut metadata = json!({
        "generateName": format!("{name}-"),
        "labels": labels,
        "ownerReferences": [owned::owner_ref("apps/v1", "DaemonSet", ds)],
    });
    if let Some(a) = template
        .pointer("/metadata/annotations")
        .filter(|a| a.as_object().is_some_and(|m| !m.is_empty()))
    {
        metadata["annotations"] = a.clone();
    }
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec})
}

/// Whether a node should run the daemon pod, and whether a pod already there may keep
/// running (`NodeShouldRunDaemonPod`): the pod must fit the node's name, selector and
/// affinity; an untolerated NoSchedule taint stops new pods, an untolerated NoExecute one
/// removes running pods too.
pub fn should_run(pod: &Value, node: &Value) -> (bool, bool) {
    let info = NodeInfo::from_node(node);
    if let Some(wanted) = pods::node_name(pod) {
        if wanted != info.name {
            return (false, false);
        }
    }
    let pod = PodInfo::from_pod(pod);
    if !pod.matches_node_selector(&info) {
        return (false, false);
    }
    let untolerated = |effect: TaintEffect| {
        info.taints
            .iter()
            .any(|t| t.effect == effect && !pod.tolerates(t))
    };
    let no_execute = untolerated(TaintEffect::NoExecute);
    if no_execute || untolerated(TaintEffect::NoSchedule) {
        return (false, !no_execute);
    }
    (true, true)
}

/// The node a daemon pod is for: its `spec.nodeName`, or before binding the node its
/// affinity term names (`GetTargetNodeName`).
pub(super) fn target_node(pod: &Value) -> Option<String> {
    if let Some(n) = pods::node_name(pod) {
        return Some(n.to_string());
    }
    let terms = pod
        .pointer("/spec/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms")?
        .as_array()?;
    terms.iter().find_map(|t| {
        t.get("matchFields")?.as_array()?.iter().find_map(|r| {
            let pinned =
                r.get("key")?.as_str()? == "metadata.name" && r.get("operator")?.as_str()? == "In";
            let values = r.get("values")?.as_array()?;
            (pinned && values.len() == 1).then(|| values[0].as_str().map(str::to_string))?
        })
    })
}

/// What the planning needs to know about one daemon pod.
#[derive(Debug, Clone, PartialEq)]
pub struct DaemonPod {
    pub name: String,
    pub hash: Option<String>,
    pub generation: Option<String>,
    pub created: String,
    pub phase: String,
    pub deleting: bool,
    pub ready: bool,
    pub ready_since: Option<DateTime<Utc>>,
}

impl DaemonPod {
    pub(super) fn of(pod: &Value) -> DaemonPod {
        let label = |k: &str| {
            pod.pointer("/metadata/labels")
                .and_then(|l| l.get(k))
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        let ready_since = pods::condition(pod, "Ready")
            .and_then(|c| c.get("lastTransitionTime"))
            .and_then(Value::as_str)
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc));
        DaemonPod {
            name: meta::name(pod).unwrap_or_default().to_string(),
            hash: label(history::REVISION_HASH),
            generation: label(TEMPLATE_GENERATION_LABEL),
            created: pod
                .pointer("/metadata/creationTimestamp")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            phase: pod
                .pointer("/status/phase")
                .and_then(Value::as_str)
                .unwrap_or("Pending")
                .to_string(),
            deleting: pods::is_deleting(pod),
            ready: pods::is_ready(pod),
            ready_since,
        }
    }

    /// `IsPodAvailable`: ready for longer than minReadySeconds.
    pub fn available(&self, min_ready: i64, now: DateTime<Utc>) -> bool {
        self.ready
            && (min_ready <= 0
                || self
                    .ready_since
                    .is_some_and(|t| t + chrono::Duration::seconds(min_ready) < now))
    }

    /// `IsPodUpdated`: of the current revision, by hash or by template generation.
    pub fn updated(&self, rev: &Revision) -> bool {
        (!rev.hash.is_empty() && self.hash.as_deref() == Some(rev.hash.as_str()))
            || rev
                .generation
                .is_some_and(|g| self.generation.as_deref() == Some(g.to_string().as_str()))
    }
}

/// The current revision as pods are compared with it.
#[derive(Debug, Clone)]
pub struct Revision {
    pub hash: String,
    pub generation: Option<i64>,
}

/// One node as the planning sees it.
#[derive(Debug, Clone)]
pub struct NodeFacts {
    pub name: String,
    pub should_run: bool,
    pub should_continue: bool,
}

/// What one pass asks for: pods to create (by node), to delete (by name), failed pods to
/// delete once their node's back-off allows, and pods of nodes that are gone, which no
/// kubelet will finish deleting (Kubernetes' pod garbage collector force-deletes them).
#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    pub create: Vec<String>,
    pub delete: Vec<String>,
    pub failed: Vec<(String, String)>,
    pub force: Vec<String>,
}

impl Plan {
    pub(super) fn is_empty(&self) -> bool {
        self.create.is_empty()
            && self.delete.is_empty()
            && self.failed.is_empty()
            && self.force.is_empty()
    }
}

/// Oldest first, then by name (`podByCreationTimestampAndPhase`).
fn by_age(pods: &mut [&DaemonPod]) {
    pods.sort_by(|a, b| a.created.cmp(&b.created).then_with(|| a.name.cmp(&b.name)));
}

/// `manage`/`podsShouldBeOnNode`: each eligible node gets a pod, failed and finished
/// pods go, extra pods go (with surge, an old and a new pod may share a node until the
/// new one is available), and pods on nodes that should not run them, or that left, go.
pub fn plan_manage(
    nodes: &[NodeFacts],
    by_node: &BTreeMap<String, Vec<DaemonPod>>,
    surge: bool,
    rev: &Revision,
    min_ready: i64,
    now: DateTime<Utc>,
) -> Plan {
    let mut plan = Plan::default();
    let none = Vec::new();
    for node in nodes {
        let pods = by_node.get(&node.name).unwrap_or(&none);
        if node.should_run && pods.is_empty() {
            plan.create.push(node.name.clone());
        } else if node.should_continue {
            let mut running = Vec::new();
            for p in pods.iter().filter(|p| !p.deleting) {
                match p.phase.as_str() {
                    "Failed" => plan.failed.push((node.name.clone(), p.name.clone())),
                    "Succeeded" => plan.delete.push(p.name.clone()),
                    _ => running.push(p),
                }
            }
            by_age(&mut running);
            if !surge {
                plan.delete
                    .extend(running.iter().skip(1).map(|p| p.name.clone()));
                continue;
            }
            if running.len() <= 1 {
                if running.is_empty() && node.should_run {
                    plan.create.push(node.name.clone());
                }
                continue;
            }
            // Two pods may share the node only while the new one is not yet available
            // and the old one still serves; otherwise only the oldest new one stays.
            let (mut oldest_new, mut oldest_old) = (None, None);
            for p in running {
                let slot = if p.updated(rev) {
                    &mut oldest_new
                } else {
                    &mut oldest_old
                };
                if slot.is_none() {
                    *slot = Some(p);
                } else {
                    plan.delete.push(p.name.clone());
                }
            }
            if let (Some(new), Some(old)) = (oldest_new, oldest_old) {
                if !old.ready || new.available(min_ready, now) {
                    plan.delete.push(old.name.clone());
                }
            }
        } else {
            plan.delete
                .extend(pods.iter().filter(|p| !p.deleting).map(|p| p.name.clone()));
        }
    }
    // Pods of nodes that are gone, terminating ones included: no kubelet will finish them.
    for (node, pods) in by_node {
        if !nodes.iter().any(|n| &n.name == node) {
            plan.force.extend(pods.iter().map(|p| p.name.clone()));
        }
    }
    plan
}

/// `findUpdatedPodsOnNode`: the node's one new and one old live pod; `None` when it has
/// more than one of either (the manage step cleans that up first).
fn split_node<'a>(
    pods: &'a [DaemonPod],
    rev: &Revision,
) -> Option<(Option<&'a DaemonPod>, Option<&'a DaemonPod>)> {
    let (mut new, mut old) = (None, None);
    for p in pods.iter().filter(|p| !p.deleting) {
        let slot = if p.updated(rev) { &mut new } else { &mut old };
        if slot.is_some() {
            return None;
        }
        *slot = Some(p);
    }
    Some((new, old))
}

/// maxSurge and maxUnavailable resolved against the number of nodes that should run the
/// pod, percentages rounded up; a configuration that allows neither moves one at a time.
pub fn rollout_limits(ds: &apps::DaemonSet, desired: i32) -> (i32, i32) {
    let ru = ds
        .spec
        .update_strategy
        .as_ref()
        .and_then(|s| s.rolling_update.as_ref());
    let surge = workload::scaled(ru.and_then(|r| r.max_surge.as_ref()), desired, true);
    let mut unavailable =
        workload::scaled(ru.and_then(|r| r.max_unavailable.as_ref()), desired, true);
    if surge == 0 && unavailable == 0 {
        unavailable = 1;
    }
    (surge, unavailable)
}

/// `rollingUpdate`: without surge, delete old pods while no more than maxUnavailable
/// nodes are without an available pod (old pods that are unavailable anyway always go);
/// with surge, start new pods beside old ones on up to maxSurge nodes at once (at once
/// where the old pod is unavailable), and delete each old pod once its replacement is
/// available.
pub fn plan_rolling(
    nodes: &[NodeFacts],
    by_node: &BTreeMap<String, Vec<DaemonPod>>,
    max_surge: i32,
    max_unavailable: i32,
    rev: &Revision,
    min_ready: i64,
    now: DateTime<Utc>,
) -> Plan {
    let mut view: BTreeMap<&str, &[DaemonPod]> = by_node
        .iter()
        .map(|(n, p)| (n.as_str(), p.as_slice()))
        .collect();
    for n in nodes.iter().filter(|n| n.should_run) {
        view.entry(n.name.as_str()).or_insert(&[]);
    }
    let runs = |node: &str| nodes.iter().any(|n| n.name == node && n.should_run);
    let mut plan = Plan::default();
    if max_surge == 0 {
        let mut unavailable = 0;
        let (mut replace, mut candidates) = (Vec::new(), Vec::new());
        for pods in view.values() {
            match split_node(pods, rev) {
                None | Some((None, None)) | Some((Some(_), Some(_))) => unavailable += 1,
                Some((Some(new), None)) => {
                    if !new.available(min_ready, now) {
                        unavailable += 1;
                    }
                }
                Some((None, Some(old))) => {
                    if !old.available(min_ready, now) {
                        replace.push(old.name.clone());
                    } else if unavailable < max_unavailable {
                        candidates.push(old.name.clone());
                    }
                }
            }
        }
        let room = (max_unavailable - unavailable).clamp(0, candidates.len() as i32) as usize;
        plan.delete = replace;
        plan.delete.extend(candidates.into_iter().take(room));
        return plan;
    }
    let mut surging = 0;
    let (mut allowed, mut candidates) = (Vec::new(), Vec::new());
    for (node, pods) in &view {
        match split_node(pods, rev) {
            None => surging += 1,
            Some((_, None)) => {}
            Some((None, Some(old))) => {
                if !runs(node) {
                    continue;
                }
                if !old.available(min_ready, now) {
                    allowed.push(node.to_string());
                } else {
                    candidates.push(node.to_string());
                }
            }
            Some((Some(new), Some(old))) => {
                if new.available(min_ready, now) {
                    plan.delete.push(old.name.clone());
                } else {
                    surging += 1;
                }
            }
        }
    }
    let room = (max_surge - surging).clamp(0, candidates.len() as i32) as usize;
    plan.create = allowed;
    plan.create.extend(candidates.into_iter().take(room));
    plan
}

/// `updateDaemonSetStatus`'s counts.
pub fn status_counts(
    nodes: &[NodeFacts],
    by_node: &BTreeMap<String, Vec<DaemonPod>>,
    rev: &Revision,
    min_ready: i64,
    now: DateTime<Utc>,
) -> apps::DaemonSetStatus {
    let mut s = apps::DaemonSetStatus::default();
    let (mut available, mut updated) = (0, 0);
    for node in nodes {
        let mut pods: Vec<&DaemonPod> = by_node.get(&node.name).into_iter().flatten().collect();
        if !node.should_run {
            if !pods.is_empty() {
                s.number_misscheduled += 1;
            }
            continue;
        }
        s.desired_number_scheduled += 1;
        if pods.is_empty() {
            continue;
        }
        s.current_number_scheduled += 1;
        by_age(&mut pods);
        let pod = pods[0];
        if pod.ready {
            s.number_ready += 1;
            if pod.available(min_ready, now) {
                available += 1;
            }
        }
        if pod.updated(rev) {
            updated += 1;
        }
    }
    s.number_available = Some(available);
    s.updated_number_scheduled = Some(updated);
    s.number_unavailable = Some(s.desired_number_scheduled - available);
    s
}
