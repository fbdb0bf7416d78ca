//! Taints and tolerations as the node lifecycle, taint eviction and pod GC controllers read
//! them: the well-known keys the control plane manages, and Kubernetes' `ToleratesTaint`.

use k8s_openapi::api::core::v1::{Node, Pod, Taint, Toleration};

/// The node's kubelet stopped posting status (Ready=Unknown).
pub const UNREACHABLE: &str = "node.kubernetes.io/unreachable";
/// The node's kubelet reports it not ready (Ready=False).
pub const NOT_READY: &str = "node.kubernetes.io/not-ready";
/// `spec.unschedulable` (a cordoned node).
pub const UNSCHEDULABLE: &str = "node.kubernetes.io/unschedulable";
pub const MEMORY_PRESSURE: &str = "node.kubernetes.io/memory-pressure";
pub const DISK_PRESSURE: &str = "node.kubernetes.io/disk-pressure";
pub const PID_PRESSURE: &str = "node.kubernetes.io/pid-pressure";
pub const NETWORK_UNAVAILABLE: &str = "node.kubernetes.io/network-unavailable";
/// Set by an administrator on a node that is shut down for good: its terminating pods are
/// force-deleted (so StatefulSet pods can come back elsewhere).
pub const OUT_OF_SERVICE: &str = "node.kubernetes.io/out-of-service";

pub const NO_EXECUTE: &str = "NoExecute";
pub const NO_SCHEDULE: &str = "NoSchedule";

/// Kubernetes' `Toleration.ToleratesTaint`: the effect matches (or the toleration names
/// none), the key matches (an empty key with `Exists` matches every key), and `Exists`
/// ignores the value where `Equal` (the default) compares it.
pub fn tolerates(toleration: &Toleration, taint: &Taint) -> bool {
    let effect = toleration.effect.as_deref().unwrap_or("");
    if !effect.is_empty() && effect != taint.effect {
        return false;
    }
    let key = toleration.key.as_deref().unwrap_or("");
    let operator = toleration.operator.as_deref().unwrap_or("Equal");
    if !key.is_empty() && key != taint.key {
        return false;
    }
    match operator {
        "Exists" => true,
        "Equal" | "" => {
            !key.is_empty()
                && toleration.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or("")
        }
        _ => false,
    }
}

/// The node's taints with the given effect.
pub fn with_effect<'a>(node: &'a Node, effect: &'a str) -> impl Iterator<Item = &'a Taint> + 'a {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_deref())
        .unwrap_or(&[])
        .iter()
        .filter(move |t| t.effect == effect)
}

/// Whether the node carries a taint with this key and effect.
pub fn has(node: &Node, key: &str, effect: &str) -> bool {
    with_effect(node, effect).any(|t| t.key == key)
}

/// The pod's tolerations.
pub fn tolerations(pod: &Pod) -> &[Toleration] {
    pod.spec
        .as_ref()
        .and_then(|s| s.tolerations.as_deref())
        .unwrap_or(&[])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn taint(key: &str, value: Option<&str>, effect: &str) -> Taint {
        Taint {
            key: key.into(),
            value: value.map(str::to_string),
            effect: effect.into(),
            time_added: None,
        }
    }

    fn tol(key: &str, op: Option<&str>, value: Option<&str>, effect: Option<&str>) -> Toleration {
        Toleration {
            key: Some(key.into()).filter(|k: &String| !k.is_empty()),
            operator: op.map(str::to_string),
            value: value.map(str::to_string),
            effect: effect.map(str::to_string),
            toleration_seconds: None,
        }
    }

    #[test]
    fn tolerations_match_taints_as_kubernetes_does() {
        let t = taint("dedicated", Some("db"), NO_EXECUTE);
        assert!(tolerates(&tol("dedicated", None, Some("db"), None), &t));
        assert!(!tolerates(&tol("dedicated", None, Some("web"), None), &t));
        assert!(tolerates(
            &tol("dedicated", Some("Exists"), None, Some(NO_EXECUTE)),
            &t
        ));
        assert!(!tolerates(
            &tol("dedicated", Some("Exists"), None, Some(NO_SCHEDULE)),
            &t
        ));
        // An empty key with Exists tolerates everything; with Equal, nothing.
        assert!(tolerates(&tol("", Some("Exists"), None, None), &t));
        assert!(!tolerates(&tol("", None, Some("db"), None), &t));
        assert!(!tolerates(&tol("other", Some("Exists"), None, None), &t));
        assert!(!tolerates(&tol("dedicated", Some("Gt"), None, None), &t));
    }
}
