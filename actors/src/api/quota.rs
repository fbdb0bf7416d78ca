//! Resource quota arithmetic shared by the gateway's admission and the quota controller:
//! what an object counts against a quota, and Kubernetes' wording when it would exceed one.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::validation::quantity_value;

/// Resources tracked in `status.used`, by name.
pub type Usage = BTreeMap<String, f64>;

/// The resource names a quota can constrain that skiff tracks.
pub const TRACKED: &[&str] = &[
    "pods",
    "services",
    "replicationcontrollers",
    "resourcequotas",
    "requests.cpu",
    "requests.memory",
    "limits.cpu",
    "limits.memory",
    "cpu",
    "memory",
    "count/pods",
    "count/services",
    "count/replicationcontrollers",
];

fn terminal(pod: &Value) -> bool {
    matches!(
        pod.pointer("/status/phase").and_then(Value::as_str),
        Some("Succeeded") | Some("Failed")
    )
}

fn container_sum(pod: &Value, section: &str, res: &str) -> f64 {
    let sum = |list: Option<&Value>| -> f64 {
        list.and_then(Value::as_array)
            .map(|cs| {
                cs.iter()
                    .filter_map(|c| c.pointer(&format!("/resources/{section}/{res}")))
                    .filter_map(quantity_value)
                    .sum()
            })
            .unwrap_or(0.0)
    };
    let app = sum(pod.pointer("/spec/containers"));
    // Init containers run one at a time before the app containers: the pod needs the
    // larger of their largest request and the app containers' sum.
    let init_max = pod
        .pointer("/spec/initContainers")
        .and_then(Value::as_array)
        .map(|cs| {
            cs.iter()
                .filter_map(|c| c.pointer(&format!("/resources/{section}/{res}")))
                .filter_map(quantity_value)
                .fold(0.0, f64::max)
        })
        .unwrap_or(0.0);
    app.max(init_max)
}

/// What one object of `kind` counts against quotas.
pub fn usage_of(kind: &str, obj: &Value) -> Usage {
    let mut u = Usage::new();
    match kind {
        "Pod" => {
            if terminal(obj) {
                return u;
            }
            u.insert("pods".into(), 1.0);
            u.insert("count/pods".into(), 1.0);
            for (section, res) in [
                ("requests", "cpu"),
                ("requests", "memory"),
                ("limits", "cpu"),
                ("limits", "memory"),
            ] {
                let mut v = container_sum(obj, section, res);
                if section == "requests" && v == 0.0 {
                    // A request defaults to its limit when only the limit is set.
                    v = container_sum(obj, "limits", res);
                }
                u.insert(format!("{section}.{res}"), v);
                if section == "requests" {
                    u.insert(res.to_string(), v);
                }
            }
        }
        "Service" => {
            u.insert("services".into(), 1.0);
            u.insert("count/services".into(), 1.0);
        }
        "ReplicationController" => {
            u.insert("replicationcontrollers".into(), 1.0);
            u.insert("count/replicationcontrollers".into(), 1.0);
        }
        "ResourceQuota" => {
            u.insert("resourcequotas".into(), 1.0);
        }
        _ => {}
    }
    u
}

/// `spec.hard` as numbers (unparseable values are left out: validation rejects them).
pub fn hard_of(quota: &Value) -> Usage {
    quota
        .pointer("/spec/hard")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| quantity_value(v).map(|q| (k.clone(), q)))
                .collect()
        })
        .unwrap_or_default()
}

/// Sum the usage of `objects` (each with its kind) for the resources `hard` names.
pub fn total<'a>(hard: &Usage, objects: impl Iterator<Item = (&'a str, &'a Value)>) -> Usage {
    let mut used: Usage = hard.keys().map(|k| (k.clone(), 0.0)).collect();
    for (kind, obj) in objects {
        for (res, v) in usage_of(kind, obj) {
            if let Some(slot) = used.get_mut(&res) {
                *slot += v;
            }
        }
    }
    used
}

/// Check that adding `delta` keeps `used` within `hard`; the error is Kubernetes' message.
pub fn admit(quota_name: &str, hard: &Usage, used: &Usage, delta: &Usage) -> Result<(), String> {
    let over: Vec<&String> = hard
        .iter()
        .filter(|(res, limit)| {
            let d = delta.get(*res).copied().unwrap_or(0.0);
            d > 0.0 && used.get(*res).copied().unwrap_or(0.0) + d > **limit + 1e-9
        })
        .map(|(res, _)| res)
        .collect();
    if over.is_empty() {
        return Ok(());
    }
    let part = |m: &Usage| {
        over.iter()
            .map(|r| {
                format!(
                    "{r}={}",
                    format_quantity(r, m.get(*r).copied().unwrap_or(0.0))
                )
            })
            .collect::<Vec<_>>()
            .join(",")
    };
    Err(format!(
        "exceeded quota: {quota_name}, requested: {}, used: {}, limited: {}",
        part(delta),
        part(used),
        part(hard)
    ))
}

/// A quantity in Kubernetes' canonical form for its resource: millicores for fractional
/// cpu, binary suffixes for whole multiples of Ki/Mi/Gi, plain integers otherwise.
pub fn format_quantity(resource: &str, v: f64) -> String {
    let is_cpu = resource.ends_with("cpu");
    if is_cpu {
        let milli = (v * 1000.0).round() as i64;
        return if milli % 1000 == 0 {
            (milli / 1000).to_string()
        } else {
            format!("{milli}m")
        };
    }
    let n = v.round() as i64;
    for (suffix, unit) in [
        ("Ti", 1i64 << 40),
        ("Gi", 1 << 30),
        ("Mi", 1 << 20),
        ("Ki", 1 << 10),
    ] {
        if n != 0 && n % unit == 0 {
            return format!("{}{suffix}", n / unit);
        }
    }
    n.to_string()
}

/// `status.used` as Kubernetes writes it.
pub fn used_json(used: &Usage) -> Value {
    Value::Object(
        used.iter()
            .map(|(k, v)| (k.clone(), Value::String(format_quantity(k, *v))))
            .collect::<Map<String, Value>>(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(cpu: &str, mem: &str) -> Value {
        json!({"spec": {"containers": [{"resources": {"requests": {"cpu": cpu, "memory": mem}}}]}})
    }

    #[test]
    fn pod_counts_its_container_requests_and_one_pod() {
        let u = usage_of("Pod", &pod("250m", "64Mi"));
        assert_eq!(u["pods"], 1.0);
        assert_eq!(u["requests.cpu"], 0.25);
        assert_eq!(u["requests.memory"], 64.0 * 1024.0 * 1024.0);
    }

    #[test]
    fn finished_pods_do_not_count() {
        let mut p = pod("1", "1Gi");
        p["status"] = json!({"phase": "Succeeded"});
        assert!(usage_of("Pod", &p).is_empty());
    }

    #[test]
    fn exceeding_message_matches_kubernetes_wording() {
        let hard: Usage = [("pods".to_string(), 2.0)].into();
        let used: Usage = [("pods".to_string(), 2.0)].into();
        let delta = usage_of("Pod", &pod("0", "0"));
        let err = admit("compute", &hard, &used, &delta).expect_err("over quota");
        assert_eq!(
            err,
            "exceeded quota: compute, requested: pods=1, used: pods=2, limited: pods=2"
        );
        let used: Usage = [("pods".to_string(), 1.0)].into();
        assert!(admit("compute", &hard, &used, &delta).is_ok());
    }

    #[test]
    fn quantities_print_in_canonical_form() {
        assert_eq!(format_quantity("requests.cpu", 0.5), "500m");
        assert_eq!(format_quantity("limits.cpu", 2.0), "2");
        assert_eq!(format_quantity("requests.memory", 134217728.0), "128Mi");
        assert_eq!(format_quantity("pods", 3.0), "3");
    }
}
