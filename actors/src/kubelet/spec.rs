//! From a pod spec to what the runtime is asked to run: the sandbox's host ports and host
//! namespaces, the pod's hostname and its kubelet-managed `/etc/hosts`, and each
//! container's command and args (`$(VAR)` references expanded against its environment,
//! which [`super::env`] resolves), working directory, limits and effective security context.

use serde_json::Value;

use super::env::{self, Resolved};
use super::runtime::{ContainerSpec, HostNamespaces, PodRef, SandboxSpec, Security};
use crate::api::validation::parse_quantity;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// `runAsNonRoot` cannot be honoured; worded as the kubelet words it.
    #[error("{0}")]
    RunAsNonRoot(String),
    #[error("failed to construct FQDN from pod hostname and cluster domain, FQDN {fqdn} is too long (64 characters is the max, {len} characters requested)")]
    FqdnTooLong { fqdn: String, len: usize },
}

/// The longest hostname the kernel takes (`setHostnameAsFQDN`).
const MAX_FQDN: usize = 64;
/// A DNS label, the longest hostname Kubernetes derives from a pod name.
const MAX_HOSTNAME: usize = 63;

/// What the pod's environment can refer to besides the pod object itself.
#[derive(Debug, Clone, Copy)]
pub struct Placement<'a> {
    pub pod_ip: Option<&'a str>,
    pub host_ip: &'a str,
    /// The service variables ([`super::service_env`]), which come first and which the
    /// container's own `env` may use and override.
    pub services: &'a [(String, String)],
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

fn flag(pod: &Value, field: &str) -> bool {
    pod.pointer(&format!("/spec/{field}"))
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

fn container_flag(container: &Value, field: &str) -> bool {
    container
        .get(field)
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

/// The host namespaces the pod shares.
pub fn namespaces(pod: &Value) -> HostNamespaces {
    HostNamespaces {
        network: flag(pod, "hostNetwork"),
        pid: flag(pod, "hostPID"),
        ipc: flag(pod, "hostIPC"),
        share_pid: flag(pod, "shareProcessNamespace"),
    }
}

/// The pod's hostname: `spec.hostname`, else its name cut to a DNS label (the kubelet's
/// `GeneratePodHostNameAndDomain`).
pub fn hostname(pod: &Value) -> String {
    if let Some(h) = pod
        .pointer("/spec/hostname")
        .and_then(Value::as_str)
        .filter(|h| !h.is_empty())
    {
        return h.to_string();
    }
    let name = pod
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("pod");
    let cut: String = name.chars().take(MAX_HOSTNAME).collect();
    cut.trim_end_matches(['-', '.']).to_string()
}

/// `<subdomain>.<namespace>.svc.<cluster domain>` when the pod names a subdomain.
pub fn host_domain(pod: &Value, cluster_domain: &str) -> Option<String> {
    let sub = pod
        .pointer("/spec/subdomain")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())?;
    let ns = pod
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("default");
    Some(format!("{sub}.{ns}.svc.{cluster_domain}"))
}

/// The hostname the sandbox gets: the FQDN with `setHostnameAsFQDN`, else the short one.
pub fn sandbox_hostname(pod: &Value, cluster_domain: &str) -> Result<String, SpecError> {
    let short = hostname(pod);
    match host_domain(pod, cluster_domain) {
        Some(domain) if flag(pod, "setHostnameAsFQDN") => {
            let fqdn = format!("{short}.{domain}");
            if fqdn.len() > MAX_FQDN {
                return Err(SpecError::FqdnTooLong {
                    len: fqdn.len(),
                    fqdn,
                });
            }
            Ok(fqdn)
        }
        _ => Ok(short),
    }
}

/// The kubelet-managed `/etc/hosts`, in the kubelet's format: localhost entries, the pod's
/// own address with its FQDN and hostname, then the pod's `hostAliases`. On the host's
/// network the node's own hosts file (`host_hosts`) replaces the first two parts.
pub fn hosts_file(
    pod: &Value,
    pod_ip: &str,
    cluster_domain: &str,
    host_hosts: Option<&str>,
) -> String {
    let mut out = String::new();
    match host_hosts {
        Some(node_file) => {
            out.push_str("# Kubernetes-managed hosts file (host network).\n");
            out.push_str(node_file);
            if !node_file.is_empty() && !node_file.ends_with('\n') {
                out.push('\n');
            }
        }
        None => {
            out.push_str("# Kubernetes-managed hosts file.\n");
            out.push_str("127.0.0.1\tlocalhost\n");
            out.push_str("::1\tlocalhost ip6-localhost ip6-loopback\n");
            out.push_str("fe00::0\tip6-localnet\n");
            out.push_str("fe00::0\tip6-mcastprefix\n");
            out.push_str("fe00::1\tip6-allnodes\n");
            out.push_str("fe00::2\tip6-allrouters\n");
            let name = hostname(pod);
            match host_domain(pod, cluster_domain) {
                Some(domain) => out.push_str(&format!("{pod_ip}\t{name}.{domain}\t{name}\n")),
                None => out.push_str(&format!("{pod_ip}\t{name}\n")),
            }
        }
    }
    let aliases = pod
        .pointer("/spec/hostAliases")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    if !aliases.is_empty() {
        out.push_str("\n# Entries added by HostAliases.\n");
        for alias in aliases {
            let ip = alias.get("ip").and_then(Value::as_str).unwrap_or_default();
            let names = strings(alias.get("hostnames"));
            if !ip.is_empty() && !names.is_empty() {
                out.push_str(&format!("{ip}\t{}\n", names.join("\t")));
            }
        }
    }
    out
}

/// Namespaced kernel parameters from `securityContext.sysctls`.
pub fn sysctls(pod: &Value) -> Vec<(String, String)> {
    pod.pointer("/spec/securityContext/sysctls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|s| {
            Some((
                s.get("name")?.as_str()?.to_string(),
                s.get("value")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
            ))
        })
        .collect()
}

pub fn sandbox(pod: &Value, node: &str, cluster_domain: &str) -> Result<SandboxSpec, SpecError> {
    Ok(SandboxSpec {
        pod: pod_ref(pod, node),
        hostname: sandbox_hostname(pod, cluster_domain)?,
        host_ports: host_ports(pod),
        namespaces: namespaces(pod),
        sysctls: sysctls(pod),
        network: None,
    })
}

/// A field of the container's security context, else the pod's (the container's wins).
fn effective<'a>(pod: &'a Value, container: &'a Value, field: &str) -> Option<&'a Value> {
    container
        .pointer(&format!("/securityContext/{field}"))
        .filter(|v| !v.is_null())
        .or_else(|| {
            pod.pointer(&format!("/spec/securityContext/{field}"))
                .filter(|v| !v.is_null())
        })
}

/// The container's effective security context for the engine. `image_user` is the image's
/// `USER` (empty: root), needed to check `runAsNonRoot` and to apply a `runAsGroup` alone.
pub fn security(pod: &Value, container: &Value, image_user: &str) -> Result<Security, SpecError> {
    let uid = effective(pod, container, "runAsUser").and_then(Value::as_i64);
    let gid = effective(pod, container, "runAsGroup").and_then(Value::as_i64);
    let non_root = effective(pod, container, "runAsNonRoot").and_then(Value::as_bool) == Some(true);
    let name = container
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let pod_label = format!(
        "{}_{}({})",
        pod.pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default(),
        pod.pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or_default(),
        pod.pointer("/metadata/uid")
            .and_then(Value::as_str)
            .unwrap_or_default(),
    );
    let image_uid_part = image_user.split(':').next().unwrap_or_default();
    if non_root {
        match uid {
            Some(0) => {
                return Err(SpecError::RunAsNonRoot(format!(
                    "container's runAsUser breaks non-root policy (pod: \"{pod_label}\", container: {name})"
                )))
            }
            Some(_) => {}
            None => match image_uid_part.parse::<i64>() {
                _ if image_uid_part.is_empty() => {
                    return Err(SpecError::RunAsNonRoot(format!(
                        "container has runAsNonRoot and image will run as root (pod: \"{pod_label}\", container: {name})"
                    )))
                }
                Ok(0) => {
                    return Err(SpecError::RunAsNonRoot(format!(
                        "container has runAsNonRoot and image will run as root (pod: \"{pod_label}\", container: {name})"
                    )))
                }
                Ok(_) => {}
                Err(_) => {
                    return Err(SpecError::RunAsNonRoot(format!(
                        "container has runAsNonRoot and image has non-numeric user ({image_uid_part}), cannot verify user is non-root (pod: \"{pod_label}\", container: {name})"
                    )))
                }
            },
        }
    }
    let user = match (uid, gid) {
        (Some(u), Some(g)) => Some(format!("{u}:{g}")),
        (Some(u), None) => Some(u.to_string()),
        // A group alone keeps the image's user.
        (None, Some(g)) => Some(format!(
            "{}:{g}",
            if image_uid_part.is_empty() {
                "0"
            } else {
                image_uid_part
            }
        )),
        (None, None) => None,
    };
    // Supplemental groups are the pod's; fsGroup is one more.
    let mut group_add: Vec<String> = pod
        .pointer("/spec/securityContext/supplementalGroups")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_i64)
        .map(|g| g.to_string())
        .collect();
    if let Some(fs) = pod
        .pointer("/spec/securityContext/fsGroup")
        .and_then(Value::as_i64)
    {
        let fs = fs.to_string();
        if !group_add.contains(&fs) {
            group_add.push(fs);
        }
    }
    let caps =
        |which: &str| strings(container.pointer(&format!("/securityContext/capabilities/{which}")));
    let cflag = |field: &str| {
        container
            .pointer(&format!("/securityContext/{field}"))
            .and_then(Value::as_bool)
    };
    let mut security_opt = Vec::new();
    let profile = |field: &str| {
        effective(pod, container, field)
            .and_then(|p| p.get("type"))
            .and_then(Value::as_str)
    };
    if profile("seccompProfile") == Some("Unconfined") {
        security_opt.push("seccomp=unconfined".to_string());
    }
    if profile("appArmorProfile") == Some("Unconfined") {
        security_opt.push("apparmor=unconfined".to_string());
    }
    Ok(Security {
        user,
        group_add,
        privileged: cflag("privileged") == Some(true),
        read_only_rootfs: cflag("readOnlyRootFilesystem") == Some(true),
        cap_add: caps("add"),
        cap_drop: caps("drop"),
        no_new_privileges: cflag("allowPrivilegeEscalation") == Some(false),
        security_opt,
    })
}

/// The runtime spec of attempt `attempt` of `container` in the sandbox `sandbox_id`, with
/// its resolved environment.
pub fn container(
    pod: &Value,
    container: &Value,
    env: &Resolved,
    node: &str,
    sandbox_id: &str,
    attempt: u32,
    image_user: &str,
) -> Result<ContainerSpec, SpecError> {
    let security = security(pod, container, image_user)?;
    let expand_all = |v: Vec<String>| {
        v.iter()
            .map(|s| env::expand_env(s, env))
            .collect::<Vec<_>>()
    };
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
        env: env.env.clone(),
        working_dir: container
            .get("workingDir")
            .and_then(Value::as_str)
            .filter(|w| !w.is_empty())
            .map(str::to_string),
        cpu_limit_millis,
        memory_limit_bytes,
        sandbox_id: sandbox_id.to_string(),
        attempt,
        security,
        namespaces: namespaces(pod),
        mounts: Vec::new(),
        stdin: container_flag(container, "stdin"),
        stdin_once: container_flag(container, "stdinOnce"),
        tty: container_flag(container, "tty"),
        pid_target: None,
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
    fn the_container_spec_carries_command_args_attempt_and_terminal() {
        let c = json!({"name": "app", "image": "busybox", "command": ["sh", "-c"],
            "args": ["echo $(POD) $$(POD)"], "workingDir": "/tmp", "stdin": true, "tty": true});
        let env = Resolved {
            env: vec![("POD".into(), "web".into())],
            skipped: vec![],
        };
        let s = container(&pod(), &c, &env, "node-1", "sb-1", 3, "").expect("spec");
        assert_eq!(s.command, vec!["sh", "-c"]);
        assert_eq!(s.args, vec!["echo web $(POD)"]);
        assert_eq!(s.working_dir.as_deref(), Some("/tmp"));
        assert_eq!((s.sandbox_id.as_str(), s.attempt), ("sb-1", 3));
        assert_eq!(s.pod.map(|p| p.uid), Some("u-1".to_string()));
        assert_eq!((s.stdin, s.stdin_once, s.tty), (true, false, true));
    }

    #[test]
    fn the_hosts_file_has_the_kubelets_header_fqdn_and_host_aliases() {
        let p = json!({"metadata": {"name": "web-0", "namespace": "prod"},
            "spec": {"hostname": "web", "subdomain": "db",
                "hostAliases": [{"ip": "10.9.9.9", "hostnames": ["foo.local", "bar.local"]}]}});
        let hosts = hosts_file(&p, "10.1.0.7", "cluster.local", None);
        assert_eq!(
            hosts,
            "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n10.1.0.7\tweb.db.prod.svc.cluster.local\tweb\n\n# Entries added by HostAliases.\n10.9.9.9\tfoo.local\tbar.local\n"
        );
        let plain = hosts_file(&pod(), "10.1.0.7", "cluster.local", None);
        assert!(
            plain.ends_with("fe00::2\tip6-allrouters\n10.1.0.7\tweb\n"),
            "{plain}"
        );
        let host_net = hosts_file(
            &pod(),
            "192.168.1.2",
            "cluster.local",
            Some("127.0.0.1 localhost\n"),
        );
        assert_eq!(
            host_net,
            "# Kubernetes-managed hosts file (host network).\n127.0.0.1 localhost\n"
        );
    }

    #[test]
    fn hostnames_come_from_the_spec_or_the_pod_name_and_fqdn_on_request() {
        let long = json!({"metadata": {"name": format!("{}-x", "a".repeat(62))}, "spec": {}});
        assert_eq!(hostname(&long), "a".repeat(62));
        let p = json!({"metadata": {"name": "p", "namespace": "ns"},
            "spec": {"hostname": "h", "subdomain": "s", "setHostnameAsFQDN": true}});
        assert_eq!(
            sandbox_hostname(&p, "cluster.local").unwrap(),
            "h.s.ns.svc.cluster.local"
        );
    }

    #[test]
    fn the_container_security_context_overrides_the_pods() {
        let p = json!({"metadata": {"name": "p", "namespace": "ns", "uid": "u"},
            "spec": {"securityContext": {"runAsUser": 1000, "runAsGroup": 3000,
                "supplementalGroups": [4000], "fsGroup": 2000,
                "seccompProfile": {"type": "Unconfined"}}}});
        let c = json!({"name": "app", "securityContext": {"runAsUser": 1001,
            "readOnlyRootFilesystem": true, "allowPrivilegeEscalation": false,
            "capabilities": {"add": ["NET_ADMIN"], "drop": ["ALL"]}}});
        let sec = security(&p, &c, "").unwrap();
        assert_eq!(sec.user.as_deref(), Some("1001:3000"));
        assert_eq!(sec.group_add, vec!["4000", "2000"]);
        assert!(sec.read_only_rootfs && sec.no_new_privileges && !sec.privileged);
        assert_eq!(
            (sec.cap_add, sec.cap_drop),
            (vec!["NET_ADMIN".to_string()], vec!["ALL".to_string()])
        );
        assert_eq!(sec.security_opt, vec!["seccomp=unconfined"]);
        let group_only = json!({"name": "app", "securityContext": {"runAsGroup": 5}});
        assert_eq!(
            security(&json!({}), &group_only, "nobody")
                .unwrap()
                .user
                .as_deref(),
            Some("nobody:5")
        );
    }

    #[test]
    fn run_as_non_root_refuses_root_and_unverifiable_images_as_the_kubelet_does() {
        let p = json!({"metadata": {"name": "p", "namespace": "ns", "uid": "u"},
            "spec": {"securityContext": {"runAsNonRoot": true}}});
        let c = json!({"name": "app"});
        assert_eq!(
            security(&p, &c, "").unwrap_err().to_string(),
            "container has runAsNonRoot and image will run as root (pod: \"p_ns(u)\", container: app)"
        );
        assert_eq!(
            security(&p, &c, "nobody").unwrap_err().to_string(),
            "container has runAsNonRoot and image has non-numeric user (nobody), cannot verify user is non-root (pod: \"p_ns(u)\", container: app)"
        );
        assert!(security(&p, &c, "65534:65534").is_ok());
        let as_user = json!({"name": "app", "securityContext": {"runAsUser": 1000}});
        assert!(security(&p, &as_user, "").is_ok());
        let as_root = json!({"name": "app", "securityContext": {"runAsUser": 0}});
        assert!(security(&p, &as_root, "")
            .unwrap_err()
            .to_string()
            .starts_with("container's runAsUser breaks non-root policy"));
    }
}
