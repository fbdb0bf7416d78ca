//! The `DefaultTolerationSeconds` admission plugin: a pod that does not tolerate the
//! `not-ready` or `unreachable` NoExecute taint is given a toleration of it for a bounded
//! time (300 s unless configured), so that when its node is lost it is evicted after that
//! long, not at once, and not never.

use serde_json::{json, Value};

use crate::controllers::taints::{NOT_READY, NO_EXECUTE, UNREACHABLE};

/// How long pods tolerate a not-ready and an unreachable node unless they say otherwise
/// (kube-apiserver's `--default-not-ready-toleration-seconds` and
/// `--default-unreachable-toleration-seconds`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DefaultTolerations {
    pub not_ready_seconds: i64,
    pub unreachable_seconds: i64,
}

impl Default for DefaultTolerations {
    fn default() -> Self {
        DefaultTolerations {
            not_ready_seconds: 300,
            unreachable_seconds: 300,
        }
    }
}

/// Whether one of the tolerations covers the NoExecute taint `key` the way the plugin
/// checks it: the key is that one or empty, the effect NoExecute or empty.
fn covers(tolerations: &[Value], key: &str) -> bool {
    tolerations.iter().any(|t| {
        let field = |f: &str| t.get(f).and_then(Value::as_str).unwrap_or("");
        (field("key") == key || field("key").is_empty())
            && (field("effect") == NO_EXECUTE || field("effect").is_empty())
    })
}

/// Add the default tolerations the pod lacks (on create and update of a pod).
pub fn admit_pod(pod: &mut Value, defaults: &DefaultTolerations) {
    let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    let existing: Vec<Value> = spec
        .get("tolerations")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut added = Vec::new();
    for (key, seconds) in [
        (NOT_READY, defaults.not_ready_seconds),
        (UNREACHABLE, defaults.unreachable_seconds),
    ] {
        if !covers(&existing, key) {
            added.push(
                json!({"key": key, "operator": "Exists", "effect": NO_EXECUTE,
                "tolerationSeconds": seconds}),
            );
        }
    }
    if added.is_empty() {
        return;
    }
    let mut all = existing;
    all.extend(added);
    spec.insert("tolerations".into(), Value::Array(all));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pod_gets_both_default_tolerations_unless_it_has_its_own() {
        let mut pod = json!({"spec": {"containers": []}});
        admit_pod(&mut pod, &DefaultTolerations::default());
        assert_eq!(
            pod["spec"]["tolerations"],
            json!([
                {"key": NOT_READY, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
                {"key": UNREACHABLE, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
            ])
        );
        // Admitting again (an update) adds nothing.
        let before = pod.clone();
        admit_pod(&mut pod, &DefaultTolerations::default());
        assert_eq!(pod, before);

        let mut own = json!({"spec": {"tolerations": [
            {"key": UNREACHABLE, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 5}]}});
        let short = DefaultTolerations {
            not_ready_seconds: 30,
            unreachable_seconds: 30,
        };
        admit_pod(&mut own, &short);
        let tolerations = own["spec"]["tolerations"].as_array().unwrap();
        assert_eq!(tolerations.len(), 2);
        assert_eq!(tolerations[0]["tolerationSeconds"], 5, "kept as written");
        assert_eq!(tolerations[1]["key"], NOT_READY);
        assert_eq!(tolerations[1]["tolerationSeconds"], 30);

        // A toleration of everything covers both; one of NoSchedule only covers neither.
        let mut all = json!({"spec": {"tolerations": [{"operator": "Exists"}]}});
        admit_pod(&mut all, &short);
        assert_eq!(all["spec"]["tolerations"].as_array().unwrap().len(), 1);
        let mut no_schedule = json!({"spec": {"tolerations": [
            {"key": NOT_READY, "operator": "Exists", "effect": "NoSchedule"}]}});
        admit_pod(&mut no_schedule, &short);
        assert_eq!(
            no_schedule["spec"]["tolerations"].as_array().unwrap().len(),
            3
        );
    }
}
