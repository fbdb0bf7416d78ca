//! From a pod spec to what the runtime is asked to run: the sandbox's host ports, and each
//! container's command, environment (including `valueFrom.fieldRef` and `$(VAR)`
//! references), working directory and limits.

use std::collections::HashMap;

use serde_json::Value;

use super::runtime::{ContainerSpec, PodRef, SandboxSpec};
use crate::api::validation::parse_quantity;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("env var {var:?}: unsupported fieldRef {path:?}")]
    UnsupportedField { var: String, path: String },
    #[error("env var {var:?}: unsupported resourceFieldRef {resource:?}")]
    UnsupportedResource { var: String, resource: String },
    #[error("env var {var:?}: {source_kind} is not supported on this node")]
    UnsupportedSource { var: String, source_kind: String },
}

/// What the pod's environment can refer to besides the pod object itself.
#[derive(Debug, Clone, Copy)]
pub struct Placement<'a> {
    pub pod_ip: Option<&'a str>,
    pub host_ip: &'a str,
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// `metadata.labels['app']` → (`labels`, `app`).
fn map_subscript(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix("metadata.")?;
    let (field, key) = rest.split_once('[')?;
    let key = key.strip_suffix(']')?;
    let key = key
        .strip_prefix('\'')
        .and_then(|k| k.strip_suffix('\''))
        .or_else(|| key.strip_prefix('"').and_then(|k| k.strip_suffix('"')))?;
    Some((field, key))
}

/// The value of a downward-API `fieldRef` path, or `None` if the path is not supported.
pub fn field_ref(pod: &Value, path: &str, at: Placement<'_>) -> Option<String> {
    let text = |p: &str| {
        pod.pointer(p)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    Some(match path {
        "metadata.name" => text("/metadata/name"),
        "metadata.namespace" => text("/metadata/namespace"),
        "metadata.uid" => text("/metadata/uid"),
        "spec.nodeName" => text("/spec/nodeName"),
        "spec.serviceAccountName" => text("/spec/serviceAccountName"),
        "status.podIP" | "status.podIPs" => at.pod_ip.unwrap_or_default().to_string(),
        "status.hostIP" | "status.hostIPs" => at.host_ip.to_string(),
        _ => {
            let (field, key) = map_subscript(path)?;
            match field {
                "labels" | "annotations" => pod
                    .pointer(&format!("/metadata/{field}"))
                    .and_then(|m| m.get(key))
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                _ => return None,
            }
        }
    })
}

/// A `resourceFieldRef`: the container's limit (or request), divided by `divisor`, rounded
/// up as Kubernetes does.
fn resource_ref(container: &Value, r: &Value) -> Option<String> {
    let resource = r.get("resource")?.as_str()?;
    let (section, name) = resource.split_once('.')?;
    if !matches!(section, "limits" | "requests") {
        return None;
    }
    let value = container
        .pointer(&format!("/resources/{section}/{name}"))
        .and_then(Value::as_str)
        .and_then(parse_quantity)
        .unwrap_or(0.0);
    let divisor = r
        .get("divisor")
        .and_then(Value::as_str)
        .and_then(parse_quantity)
        .filter(|d| *d > 0.0)
        .unwrap_or(1.0);
    Some(format!("{}", (value / divisor).ceil() as i64))
}

/// Expand `$(NAME)` references to earlier variables; `$$(NAME)` escapes to `$(NAME)`, and
/// an unknown reference is left as written (Kubernetes' rules).
pub fn expand(input: &str, vars: &HashMap<String, String>) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let tail = &rest[pos..];
        if let Some(after) = tail.strip_prefix("$$") {
            out.push('$');
            rest = after;
        } else if let Some(body) = tail.strip_prefix("$(") {
            match body.find(')') {
                Some(end) => {
                    let name = &body[..end];
                    match vars.get(name) {
                        Some(v) => out.push_str(v),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    rest = &body[end + 1..];
                }
                None => {
                    out.push_str(tail);
                    rest = "";
                }
            }
        } else {
            out.push('$');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    out
}

/// The container's environment, in order, with references resolved.
pub fn env(
    pod: &Value,
    container: &Value,
    at: Placement<'_>,
) -> Result<Vec<(String, String)>, SpecError> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut vars: HashMap<String, String> = HashMap::new();
    for e in container
        .get("env")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let Some(name) = e.get("name").and_then(Value::as_str) else {
            continue;
        };
        let value = if let Some(from) = e.get("valueFrom").filter(|v| v.is_object()) {
            if let Some(f) = from.get("fieldRef") {
                let path = f
                    .get("fieldPath")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                field_ref(pod, path, at).ok_or_else(|| SpecError::UnsupportedField {
                    var: name.into(),
                    path: path.into(),
                })?
            } else if let Some(r) = from.get("resourceFieldRef") {
                resource_ref(container, r).ok_or_else(|| SpecError::UnsupportedResource {
                    var: name.into(),
                    resource: r
                        .get("resource")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .into(),
                })?
            } else {
                let kind = from
                    .as_object()
                    .and_then(|m| m.keys().next().cloned())
                    .unwrap_or_default();
                return Err(SpecError::UnsupportedSource {
                    var: name.into(),
                    source_kind: kind,
                });
            }
        } else {
            expand(
                e.get("value").and_then(Value::as_str).unwrap_or_default(),
                &vars,
            )
        };
        vars.insert(name.to_string(), value.clone());
        // A later definition of the same name wins, in place, as with docker's --env.
        match out.iter_mut().find(|(n, _)| n == name) {
            Some(slot) => slot.1 = value,
            None => out.push((name.to_string(), value)),
        }
    }
    Ok(out)
}

/// cpu and memory limits as the engine takes them: millicores and bytes.
pub fn limits(container: &Value) -> (Option<u64>, Option<u64>) {
    let q = |name: &str| {
        container
            .pointer(&format!("/resources/limits/{name}"))
            .and_then(|v| match v {
                Value::String(s) => parse_quantity(s),
                Value::Number(n) => n.as_f64(),
                _ => None,
            })
            .filter(|v| *v > 0.0)
    };
    let cpu = q("cpu").map(|c| (c * 1000.0).ceil() as u64);
    let memory = q("memory").map(|m| m.ceil() as u64);
    (cpu, memory)
}

/// The identity labels of a pod's containers.
pub fn pod_ref(pod: &Value, node: &str) -> PodRef {
    let text = |p: &str| {
        pod.pointer(p)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    PodRef {
        uid: text("/metadata/uid"),
        name: text("/metadata/name"),
        namespace: text("/metadata/namespace"),
        node: node.to_string(),
    }
}

/// Ports the pod's containers publish on the host: (container port, host port, protocol).
pub fn host_ports(pod: &Value) -> Vec<(u16, u16, String)> {
    let containers = pod.pointer("/spec/containers").and_then(Value::as_array);
    let mut out = Vec::new();
    for port in containers.into_iter().flatten().flat_map(|c| {
        c.get("ports")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
    }) {
        let get = |f: &str| {
            port.get(f)
                .and_then(Value::as_u64)
                .and_then(|p| u16::try_from(p).ok())
        };
        if let (Some(container_port), Some(host_port)) = (get("containerPort"), get("hostPort")) {
            if host_port > 0 {
                let proto = port
                    .get("protocol")
                    .and_then(Value::as_str)
                    .unwrap_or("TCP")
                    .to_ascii_lowercase();
                out.push((container_port, host_port, proto));
            }
        }
    }
    out
}

pub fn sandbox(pod: &Value, node: &str) -> SandboxSpec {
    SandboxSpec {
        pod: pod_ref(pod, node),
        hostname: pod
            .pointer("/spec/hostname")
            .and_then(Value::as_str)
            .or_else(|| pod.pointer("/metadata/name").and_then(Value::as_str))
            .unwrap_or("pod")
            .to_string(),
        host_ports: host_ports(pod),
    }
}

/// The runtime spec of attempt `attempt` of `container` in the sandbox `sandbox_id`.
pub fn container(
    pod: &Value,
    container: &Value,
    node: &str,
    sandbox_id: &str,
    attempt: u32,
    at: Placement<'_>,
) -> Result<ContainerSpec, SpecError> {
    let env = env(pod, container, at)?;
    let vars: HashMap<String, String> = env.iter().cloned().collect();
    let expand_all = |v: Vec<String>| v.iter().map(|s| expand(s, &vars)).collect::<Vec<_>>();
    let (cpu_limit_millis, memory_limit_bytes) = limits(container);
    Ok(ContainerSpec {
        pod: Some(pod_ref(pod, node)),
        name: container
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        image: container
            .get("image")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        command: expand_all(strings(container.get("command"))),
        args: expand_all(strings(container.get("args"))),
        env,
        working_dir: container
            .get("workingDir")
            .and_then(Value::as_str)
            .filter(|w| !w.is_empty())
            .map(str::to_string),
        cpu_limit_millis,
        memory_limit_bytes,
        sandbox_id: sandbox_id.to_string(),
        attempt,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod() -> Value {
        json!({
            "metadata": {"name": "web", "namespace": "prod", "uid": "u-1", "labels": {"app": "shop"}},
            "spec": {"nodeName": "node-1", "serviceAccountName": "robot", "containers": [
                {"name": "app", "image": "busybox", "ports": [{"containerPort": 80, "hostPort": 8080}, {"containerPort": 81}]}
            ]},
        })
    }

    const AT: Placement<'static> = Placement {
        pod_ip: Some("10.1.0.7"),
        host_ip: "192.168.1.2",
    };

    #[test]
    fn field_refs_resolve_to_the_pods_identity_and_placement() {
        let p = pod();
        let get = |path: &str| field_ref(&p, path, AT);
        assert_eq!(get("metadata.name").as_deref(), Some("web"));
        assert_eq!(get("metadata.namespace").as_deref(), Some("prod"));
        assert_eq!(get("metadata.uid").as_deref(), Some("u-1"));
        assert_eq!(get("spec.nodeName").as_deref(), Some("node-1"));
        assert_eq!(get("spec.serviceAccountName").as_deref(), Some("robot"));
        assert_eq!(get("status.podIP").as_deref(), Some("10.1.0.7"));
        assert_eq!(get("status.hostIP").as_deref(), Some("192.168.1.2"));
        assert_eq!(get("metadata.labels['app']").as_deref(), Some("shop"));
        assert_eq!(get("spec.bogus"), None);
    }

    #[test]
    fn env_resolves_values_field_refs_and_earlier_variables_in_order() {
        let c = json!({"name": "app", "env": [
            {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "URL", "value": "http://$(IP):80/$(POD)/$(NOPE)/$$(POD)"},
        ]});
        let env = env(&pod(), &c, AT).expect("env");
        assert_eq!(
            env,
            vec![
                ("POD".to_string(), "web".to_string()),
                ("IP".to_string(), "10.1.0.7".to_string()),
                (
                    "URL".to_string(),
                    "http://10.1.0.7:80/web/$(NOPE)/$(POD)".to_string()
                ),
            ]
        );
    }

    #[test]
    fn env_from_an_unsupported_source_is_an_error_not_an_empty_value() {
        let c = json!({"name": "app", "env": [
            {"name": "PW", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
        ]});
        assert!(matches!(
            env(&pod(), &c, AT),
            Err(SpecError::UnsupportedSource { .. })
        ));
    }

    #[test]
    fn limits_become_millicores_and_bytes() {
        let c = json!({"resources": {"limits": {"cpu": "250m", "memory": "64Mi"}}});
        assert_eq!(limits(&c), (Some(250), Some(64 * 1024 * 1024)));
        let c = json!({"resources": {"limits": {"cpu": "2"}}});
        assert_eq!(limits(&c), (Some(2000), None));
        assert_eq!(limits(&json!({})), (None, None));
    }

    #[test]
    fn only_ports_with_a_host_port_are_published() {
        assert_eq!(host_ports(&pod()), vec![(80, 8080, "tcp".to_string())]);
    }

    #[test]
    fn the_container_spec_carries_command_args_and_attempt() {
        let c = json!({"name": "app", "image": "busybox", "command": ["sh", "-c"],
            "args": ["echo $(POD)"], "workingDir": "/tmp",
            "env": [{"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]});
        let s = container(&pod(), &c, "node-1", "sb-1", 3, AT).expect("spec");
        assert_eq!(s.command, vec!["sh", "-c"]);
        assert_eq!(s.args, vec!["echo web"]);
        assert_eq!(s.working_dir.as_deref(), Some("/tmp"));
        assert_eq!((s.sandbox_id.as_str(), s.attempt), ("sb-1", 3));
        assert_eq!(s.pod.map(|p| p.uid), Some("u-1".to_string()));
    }
}
