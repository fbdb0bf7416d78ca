//! The kubelet's Node object: what it registers (labels, taints, capacity, addresses,
//! nodeInfo) and the conditions it posts with every heartbeat.

use std::collections::BTreeMap;

use serde_json::{json, Value};

/// What the node looks like, from the kubelet's configuration and the host.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeFacts {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub taints: Vec<Value>,
    pub cpu: String,
    pub memory: String,
    pub max_pods: u32,
    pub address: String,
    pub runtime_version: String,
    /// The port of the node's server (`status.daemonEndpoints.kubeletEndpoint.Port`).
    pub server_port: u16,
}

/// The kubelet version skiff reports.
pub const KUBELET_VERSION: &str = "v1.33.0-skiff";

/// Go's name for the machine architecture (what `kubernetes.io/arch` carries).
pub fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// `PRETTY_NAME` from /etc/os-release.
fn os_image() -> String {
    std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("PRETTY_NAME="))
                .map(|v| v.trim_matches('"').to_string())
        })
        .unwrap_or_else(|| "Linux".into())
}

/// The labels every kubelet puts on its node, then the configured ones.
pub fn labels(facts: &NodeFacts) -> BTreeMap<String, String> {
    let mut l = BTreeMap::from([
        ("kubernetes.io/hostname".to_string(), facts.name.clone()),
        ("kubernetes.io/os".to_string(), "linux".to_string()),
        ("kubernetes.io/arch".to_string(), go_arch().to_string()),
    ]);
    l.extend(facts.labels.clone());
    l
}

/// The Node to create when none exists.
pub fn new_node(facts: &NodeFacts) -> Value {
    let mut node = json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": facts.name, "labels": labels(facts)},
        "spec": {},
    });
    if !facts.taints.is_empty() {
        node["spec"]["taints"] = json!(facts.taints);
    }
    node
}

fn same_taint(a: &Value, b: &Value) -> bool {
    a.get("key") == b.get("key") && a.get("effect") == b.get("effect")
}

/// The metadata/spec patch for an existing node, or `None` if it already has everything:
/// configured labels are set, configured taints added. Nothing is removed — taints others
/// set (the node lifecycle controller's, `kubectl taint`) are theirs to remove.
pub fn reregister_patch(existing: &Value, facts: &NodeFacts) -> Option<Value> {
    let want = labels(facts);
    let have = existing.pointer("/metadata/labels");
    let missing_labels: BTreeMap<&String, &String> = want
        .iter()
        .filter(|(k, v)| {
            have.and_then(|h| h.get(k.as_str())).and_then(Value::as_str) != Some(v.as_str())
        })
        .collect();
    let current: Vec<Value> = existing
        .pointer("/spec/taints")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let added: Vec<&Value> = facts
        .taints
        .iter()
        .filter(|t| !current.iter().any(|c| same_taint(c, t)))
        .collect();
    if missing_labels.is_empty() && added.is_empty() {
        return None;
    }
    let mut patch = json!({});
    if !missing_labels.is_empty() {
        patch["metadata"] = json!({"labels": missing_labels});
    }
    if !added.is_empty() {
        let mut taints = current;
        taints.extend(added.into_iter().cloned());
        patch["spec"] = json!({"taints": taints});
    }
    Some(patch)
}

/// The conditions the kubelet posts: Ready=True and no pressure, each with a fresh
/// heartbeat and a transition time kept unless its status changed (after the node lifecycle
/// controller marked the node Unknown, Ready flips back to True with a new transition).
pub fn conditions(existing: &Value, now: &str) -> Vec<Value> {
    let defs = [
        (
            "Ready",
            "True",
            "KubeletReady",
            "kubelet is posting ready status",
        ),
        (
            "MemoryPressure",
            "False",
            "KubeletHasSufficientMemory",
            "kubelet has sufficient memory available",
        ),
        (
            "DiskPressure",
            "False",
            "KubeletHasNoDiskPressure",
            "kubelet has no disk pressure",
        ),
        (
            "PIDPressure",
            "False",
            "KubeletHasSufficientPID",
            "kubelet has sufficient PID available",
        ),
    ];
    defs.iter()
        .map(|(kind, status, reason, message)| {
            let previous = existing
                .pointer("/status/conditions")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .find(|c| c.get("type").and_then(Value::as_str) == Some(kind));
            let since = previous
                .filter(|p| p.get("status").and_then(Value::as_str) == Some(status))
                .and_then(|p| p.get("lastTransitionTime").cloned())
                .unwrap_or_else(|| json!(now));
            json!({"type": kind, "status": status, "reason": reason, "message": message,
                "lastHeartbeatTime": now, "lastTransitionTime": since})
        })
        .collect()
}

/// The full status the kubelet registers with.
pub fn status(existing: &Value, facts: &NodeFacts, now: &str) -> Value {
    let resources =
        json!({"cpu": facts.cpu, "memory": facts.memory, "pods": facts.max_pods.to_string()});
    json!({"status": {
        "capacity": resources,
        "allocatable": resources,
        "addresses": [
            {"type": "InternalIP", "address": facts.address},
            {"type": "Hostname", "address": facts.name},
        ],
        "nodeInfo": {
            "kubeletVersion": KUBELET_VERSION,
            "kubeProxyVersion": KUBELET_VERSION,
            "containerRuntimeVersion": facts.runtime_version,
            "osImage": os_image(),
            "kernelVersion": read_trimmed("/proc/sys/kernel/osrelease"),
            "operatingSystem": "linux",
            "architecture": go_arch(),
            "machineID": read_trimmed("/etc/machine-id"),
            "bootID": read_trimmed("/proc/sys/kernel/random/boot_id"),
            "systemUUID": "",
        },
        "daemonEndpoints": {"kubeletEndpoint": {"Port": facts.server_port}},
        "conditions": conditions(existing, now),
    }})
}

/// The spec of the node's Lease, renewed now (renewTime is a MicroTime).
pub fn lease_spec(
    name: &str,
    duration: std::time::Duration,
    now: chrono::DateTime<chrono::Utc>,
) -> Value {
    json!({
        "holderIdentity": name,
        "leaseDurationSeconds": duration.as_secs().max(1),
        "renewTime": now.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string(),
    })
}

/// The node's Lease in `kube-node-lease`, owned by its Node (so it is collected with it).
pub fn lease(node: &Value, name: &str, spec: Value) -> Value {
    let mut owners = Vec::new();
    if let Some(uid) = node.pointer("/metadata/uid").and_then(Value::as_str) {
        owners.push(json!({"apiVersion": "v1", "kind": "Node", "name": name, "uid": uid}));
    }
    json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": name, "ownerReferences": owners},
        "spec": spec,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lease_is_held_by_the_node_owned_by_it_and_renewed_in_microseconds() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-01-01T00:00:01.5Z")
            .expect("time")
            .with_timezone(&chrono::Utc);
        let spec = lease_spec("n1", std::time::Duration::from_secs(40), now);
        assert_eq!(spec["renewTime"], "2026-01-01T00:00:01.500000Z");
        assert_eq!(spec["leaseDurationSeconds"], 40);
        let l = lease(&json!({"metadata": {"uid": "u1"}}), "n1", spec);
        assert_eq!(l["metadata"]["ownerReferences"][0]["uid"], "u1");
        assert_eq!(l["spec"]["holderIdentity"], "n1");
    }

    fn facts() -> NodeFacts {
        NodeFacts {
            name: "n1".into(),
            labels: BTreeMap::from([("zone".to_string(), "a".to_string())]),
            taints: vec![json!({"key": "dedicated", "value": "db", "effect": "NoSchedule"})],
            cpu: "4".into(),
            memory: "8Gi".into(),
            max_pods: 110,
            address: "127.0.0.1".into(),
            runtime_version: "docker://20.10.24".into(),
            server_port: 10250,
        }
    }

    #[test]
    fn a_new_node_carries_hostname_and_configured_labels_and_taints() {
        let n = new_node(&facts());
        assert_eq!(n["metadata"]["labels"]["kubernetes.io/hostname"], "n1");
        assert_eq!(n["metadata"]["labels"]["zone"], "a");
        assert_eq!(n["spec"]["taints"][0]["key"], "dedicated");
    }

    #[test]
    fn re_registering_keeps_taints_others_set_and_adds_missing_ones() {
        let existing = json!({"metadata": {"labels": {"kubernetes.io/hostname": "n1"}},
            "spec": {"taints": [{"key": "node.kubernetes.io/unreachable", "effect": "NoExecute"}]}});
        let patch = reregister_patch(&existing, &facts()).expect("patch");
        let taints = patch["spec"]["taints"].as_array().expect("taints");
        assert_eq!(taints.len(), 2);
        assert_eq!(taints[0]["key"], "node.kubernetes.io/unreachable");
        assert_eq!(patch["metadata"]["labels"]["zone"], "a");
        assert!(patch["metadata"]["labels"]
            .get("kubernetes.io/hostname")
            .is_none());

        let complete =
            json!({"metadata": {"labels": labels(&facts())}, "spec": {"taints": facts().taints}});
        assert_eq!(reregister_patch(&complete, &facts()), None);
    }

    #[test]
    fn ready_flips_back_to_true_with_a_new_transition_time_after_unknown() {
        let unknown = json!({"status": {"conditions": [
            {"type": "Ready", "status": "Unknown", "lastTransitionTime": "T0"},
            {"type": "MemoryPressure", "status": "False", "lastTransitionTime": "T0"}]}});
        let conds = conditions(&unknown, "T5");
        assert_eq!(conds[0]["status"], "True");
        assert_eq!(conds[0]["reason"], "KubeletReady");
        assert_eq!(conds[0]["lastTransitionTime"], "T5");
        assert_eq!(conds[0]["lastHeartbeatTime"], "T5");
        assert_eq!(
            conds[1]["lastTransitionTime"], "T0",
            "unchanged status keeps its time"
        );
    }

    #[test]
    fn the_status_reports_capacity_addresses_and_node_info() {
        let s = status(&json!({}), &facts(), "T1");
        assert_eq!(
            s["status"]["capacity"],
            json!({"cpu": "4", "memory": "8Gi", "pods": "110"})
        );
        assert_eq!(s["status"]["allocatable"], s["status"]["capacity"]);
        assert_eq!(
            s["status"]["addresses"][0],
            json!({"type": "InternalIP", "address": "127.0.0.1"})
        );
        assert_eq!(s["status"]["nodeInfo"]["kubeletVersion"], KUBELET_VERSION);
        assert_eq!(
            s["status"]["nodeInfo"]["containerRuntimeVersion"],
            "docker://20.10.24"
        );
        assert_eq!(s["status"]["nodeInfo"]["operatingSystem"], "linux");
    }
}
