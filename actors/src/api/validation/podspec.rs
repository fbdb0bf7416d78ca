//! The pod spec as skiff's kubelet can run it: Kubernetes' own rules for init containers,
//! sidecars, lifecycle hooks, probes, security contexts and host namespaces, and a refusal
//! (422 naming the field) of every part of the spec no part of skiff carries out, so that
//! nothing is accepted and then silently ignored.
//!
//! Not refused here because other parts of the pod spec are built elsewhere: `volumes`,
//! `volumeMounts`, `env` and `envFrom` sources, service accounts.

use serde_json::Value;

use super::{
    child, dns1123_label_errors, dns1123_subdomain_errors, forbidden, get, get_array, get_i64,
    get_str, index, invalid, not_supported, push_all, required, FieldError,
};

/// The detail of a refusal: the field is valid Kubernetes, but skiff does not run it.
pub(crate) const UNSUPPORTED: &str = "not supported by skiff";

const TERMINATION_MESSAGE_POLICIES: &[&str] = &["File", "FallbackToLogsOnError"];
const PROFILE_TYPES: &[&str] = &["RuntimeDefault", "Unconfined"];
const PROC_MOUNTS: &[&str] = &["Default"];
const CONTAINER_RESTART_POLICIES: &[&str] = &["Always"];
const OS_NAMES: &[&str] = &["linux"];
const SUPPLEMENTAL_GROUPS_POLICIES: &[&str] = &["Merge"];
/// Kubernetes' bound on a termination message path.
const MAX_TERMINATION_PATH: usize = 4096;

fn set(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) | Some(Value::Bool(false)) => false,
        Some(Value::Array(a)) => !a.is_empty(),
        Some(Value::Object(m)) => !m.is_empty(),
        Some(Value::String(s)) => !s.is_empty(),
        Some(_) => true,
    }
}

fn refuse_if_set(obj: &Value, name: &str, path: &str, errs: &mut Vec<FieldError>) {
    if set(obj.get(name)) {
        errs.push(forbidden(child(path, name), UNSUPPORTED));
    }
}

/// Everything of a pod spec (at `path`) the kubelet's support depends on.
pub(crate) fn validate_pod_spec_support(spec: &Value, path: &str, errs: &mut Vec<FieldError>) {
    for name in [
        "runtimeClassName",
        "overhead",
        "resourceClaims",
        "resources",
        "schedulingGates",
    ] {
        refuse_if_set(spec, name, path, errs);
    }
    if get(spec, "hostUsers").and_then(Value::as_bool) == Some(false) {
        errs.push(forbidden(
            child(path, "hostUsers"),
            "user namespaces are not supported by skiff",
        ));
    }
    if let Some(os) = get(spec, "os") {
        let name = os.get("name").unwrap_or(&Value::Null);
        if name.as_str() != Some("linux") {
            errs.push(not_supported(
                child(&child(path, "os"), "name"),
                name,
                OS_NAMES,
            ));
        }
    }
    if let Some(sc) = get(spec, "securityContext") {
        let sc_path = child(path, "securityContext");
        for name in ["seLinuxOptions", "windowsOptions", "seLinuxChangePolicy"] {
            refuse_if_set(sc, name, &sc_path, errs);
        }
        if let Some(p) = get(sc, "supplementalGroupsPolicy") {
            if !p
                .as_str()
                .is_some_and(|p| SUPPLEMENTAL_GROUPS_POLICIES.contains(&p))
            {
                errs.push(not_supported(
                    child(&sc_path, "supplementalGroupsPolicy"),
                    p,
                    SUPPLEMENTAL_GROUPS_POLICIES,
                ));
            }
        }
        validate_profiles(sc, &sc_path, errs);
    }
    validate_host_identity(spec, path, errs);
    let host_pid = get(spec, "hostPID").and_then(Value::as_bool) == Some(true);
    let share = get(spec, "shareProcessNamespace").and_then(Value::as_bool) == Some(true);
    if host_pid && share {
        errs.push(invalid(
            child(path, "shareProcessNamespace"),
            &Value::Bool(true),
            "ShareProcessNamespace and HostPID cannot both be enabled",
        ));
    }
    let host_network = get(spec, "hostNetwork").and_then(Value::as_bool) == Some(true);
    let containers_path = child(path, "containers");
    for (i, c) in get_array(spec, "containers").iter().enumerate() {
        let p = index(&containers_path, i);
        validate_container(c, &p, Role::App, errs);
        validate_host_network_ports(c, &p, host_network, errs);
    }
    let init_path = child(path, "initContainers");
    for (i, c) in get_array(spec, "initContainers").iter().enumerate() {
        let p = index(&init_path, i);
        let role = if get(c, "restartPolicy").is_some() {
            Role::Sidecar
        } else {
            Role::Init
        };
        validate_container(c, &p, role, errs);
        validate_host_network_ports(c, &p, host_network, errs);
    }
    let ephemeral_path = child(path, "ephemeralContainers");
    for (i, c) in get_array(spec, "ephemeralContainers").iter().enumerate() {
        validate_container(c, &index(&ephemeral_path, i), Role::Ephemeral, errs);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    App,
    /// An init container run to completion.
    Init,
    /// An init container with a `restartPolicy` (only `Always` is valid): a sidecar.
    Sidecar,
    /// Added to a running pod for debugging; the fields it may not have are refused by
    /// the ephemeral containers' own rules.
    Ephemeral,
}

fn validate_container(c: &Value, path: &str, role: Role, errs: &mut Vec<FieldError>) {
    for name in ["resizePolicy", "volumeDevices", "restartPolicyRules"] {
        refuse_if_set(c, name, path, errs);
    }
    // Host ports are published on every address of the node.
    for (i, port) in get_array(c, "ports").iter().enumerate() {
        refuse_if_set(port, "hostIP", &index(&child(path, "ports"), i), errs);
    }
    if let Some(resources) = get(c, "resources") {
        refuse_if_set(resources, "claims", &child(path, "resources"), errs);
    }
    match (role, get(c, "restartPolicy")) {
        (Role::App, Some(_)) => errs.push(forbidden(
            child(path, "restartPolicy"),
            "may not be set for non-init containers",
        )),
        (Role::Sidecar, Some(p))
            if !p
                .as_str()
                .is_some_and(|p| CONTAINER_RESTART_POLICIES.contains(&p)) =>
        {
            errs.push(not_supported(
                child(path, "restartPolicy"),
                p,
                CONTAINER_RESTART_POLICIES,
            ))
        }
        _ => {}
    }
    if role == Role::Init {
        for name in [
            "lifecycle",
            "livenessProbe",
            "readinessProbe",
            "startupProbe",
        ] {
            if get(c, name).is_some() {
                errs.push(forbidden(
                    child(path, name),
                    "may not be set for init containers without restartPolicy=Always",
                ));
            }
        }
    }
    for name in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(probe) = get(c, name) {
            validate_probe(probe, name, &child(path, name), errs);
        }
    }
    if let Some(lifecycle) = get(c, "lifecycle") {
        let lp = child(path, "lifecycle");
        refuse_if_set(lifecycle, "stopSignal", &lp, errs);
        for hook in ["postStart", "preStop"] {
            if let Some(h) = get(lifecycle, hook) {
                validate_handler(h, &child(&lp, hook), errs);
            }
        }
    }
    if let Some(sc) = get(c, "securityContext") {
        let sp = child(path, "securityContext");
        for name in ["seLinuxOptions", "windowsOptions"] {
            refuse_if_set(sc, name, &sp, errs);
        }
        if let Some(m) = get(sc, "procMount") {
            if !m.as_str().is_some_and(|m| PROC_MOUNTS.contains(&m)) {
                errs.push(not_supported(child(&sp, "procMount"), m, PROC_MOUNTS));
            }
        }
        validate_profiles(sc, &sp, errs);
        let privileged = get(sc, "privileged").and_then(Value::as_bool) == Some(true);
        let escalation = get(sc, "allowPrivilegeEscalation").and_then(Value::as_bool);
        if privileged && escalation == Some(false) {
            errs.push(invalid(
                child(&sp, "allowPrivilegeEscalation"),
                &Value::Bool(false),
                "cannot set `allowPrivilegeEscalation` to false and `privileged` to true",
            ));
        }
    }
    if let Some(p) = get(c, "terminationMessagePolicy") {
        if !p
            .as_str()
            .is_some_and(|p| TERMINATION_MESSAGE_POLICIES.contains(&p))
        {
            errs.push(not_supported(
                child(path, "terminationMessagePolicy"),
                p,
                TERMINATION_MESSAGE_POLICIES,
            ));
        }
    }
    let message_path = get_str(c, "terminationMessagePath");
    if !message_path.is_empty() {
        let field = child(path, "terminationMessagePath");
        if !message_path.starts_with('/') {
            errs.push(invalid(
                field,
                &Value::from(message_path),
                "must be an absolute path",
            ));
        } else if message_path.len() > MAX_TERMINATION_PATH {
            errs.push(super::too_long(field, MAX_TERMINATION_PATH));
        }
    }
}

/// seccomp and AppArmor: the engine's default profile or none; a profile on the node
/// (`Localhost`) is not supported.
fn validate_profiles(sc: &Value, path: &str, errs: &mut Vec<FieldError>) {
    for name in ["seccompProfile", "appArmorProfile"] {
        if let Some(profile) = get(sc, name) {
            let kind = profile.get("type").unwrap_or(&Value::Null);
            if !kind.as_str().is_some_and(|k| PROFILE_TYPES.contains(&k)) {
                errs.push(not_supported(
                    child(&child(path, name), "type"),
                    kind,
                    PROFILE_TYPES,
                ));
            }
        }
    }
}

fn validate_probe(probe: &Value, kind: &str, path: &str, errs: &mut Vec<FieldError>) {
    refuse_if_set(probe, "grpc", path, errs);
    refuse_if_set(probe, "terminationGracePeriodSeconds", path, errs);
    if kind != "readinessProbe" {
        if let Some(n) = get_i64(probe, "successThreshold").filter(|n| *n != 1) {
            errs.push(invalid(
                child(path, "successThreshold"),
                &Value::from(n),
                "must be 1",
            ));
        }
    }
}

/// A lifecycle hook runs `exec`, `httpGet` or `sleep`; `tcpSocket` is kept in the API only
/// for compatibility and never ran.
fn validate_handler(h: &Value, path: &str, errs: &mut Vec<FieldError>) {
    refuse_if_set(h, "tcpSocket", path, errs);
    if let Some(sleep) = get(h, "sleep") {
        let secs = get_i64(sleep, "seconds").unwrap_or(-1);
        if secs < 0 {
            errs.push(invalid(
                child(&child(path, "sleep"), "seconds"),
                &Value::from(secs),
                "must be non-negative",
            ));
        }
    }
}

/// `hostname`, `subdomain` (DNS labels) and `hostAliases` (an IP and subdomain names each),
/// which make the pod's `/etc/hosts`.
fn validate_host_identity(spec: &Value, path: &str, errs: &mut Vec<FieldError>) {
    for name in ["hostname", "subdomain"] {
        let v = get_str(spec, name);
        if !v.is_empty() {
            push_all(
                errs,
                &child(path, name),
                &Value::from(v),
                dns1123_label_errors(v),
            );
        }
    }
    let aliases = child(path, "hostAliases");
    for (i, alias) in get_array(spec, "hostAliases").iter().enumerate() {
        let p = index(&aliases, i);
        let ip = get_str(alias, "ip");
        if ip.is_empty() {
            errs.push(required(child(&p, "ip"), ""));
        } else if ip.parse::<std::net::IpAddr>().is_err() {
            errs.push(invalid(
                child(&p, "ip"),
                &Value::from(ip),
                "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
            ));
        }
        for (j, h) in get_array(alias, "hostnames").iter().enumerate() {
            let name = h.as_str().unwrap_or_default();
            push_all(
                errs,
                &index(&child(&p, "hostnames"), j),
                h,
                dns1123_subdomain_errors(name),
            );
        }
    }
}

/// On the host's network a published port is the container's own port.
fn validate_host_network_ports(
    c: &Value,
    path: &str,
    host_network: bool,
    errs: &mut Vec<FieldError>,
) {
    if !host_network {
        return;
    }
    for (i, port) in get_array(c, "ports").iter().enumerate() {
        let (container, host) = (
            get_i64(port, "containerPort"),
            get_i64(port, "hostPort").unwrap_or(0),
        );
        if host != 0 && Some(host) != container {
            errs.push(invalid(
                child(&index(&child(path, "ports"), i), "hostPort"),
                &Value::from(host),
                "must match `containerPort` when `hostNetwork` is true",
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn errors(spec: Value) -> Vec<String> {
        let mut errs = Vec::new();
        validate_pod_spec_support(&spec, "spec", &mut errs);
        errs.iter().map(FieldError::message).collect()
    }

    fn app(extra: Value) -> Value {
        let mut c = json!({"name": "app", "image": "busybox"});
        if let (Some(c), Some(e)) = (c.as_object_mut(), extra.as_object()) {
            c.extend(e.clone());
        }
        c
    }

    #[test]
    fn a_plain_pod_and_everything_skiff_runs_pass() {
        let spec = json!({
            "hostNetwork": false, "hostPID": true, "hostIPC": true, "hostUsers": true,
            "os": {"name": "linux"},
            "securityContext": {"runAsUser": 1000, "fsGroup": 2000,
                "seccompProfile": {"type": "RuntimeDefault"}},
            "initContainers": [
                {"name": "setup", "image": "busybox"},
                {"name": "side", "image": "busybox", "restartPolicy": "Always",
                 "startupProbe": {"exec": {"command": ["true"]}},
                 "lifecycle": {"preStop": {"sleep": {"seconds": 1}}}}
            ],
            "containers": [app(json!({
                "lifecycle": {"postStart": {"exec": {"command": ["true"]}},
                              "preStop": {"httpGet": {"port": 80}}},
                "securityContext": {"readOnlyRootFilesystem": true, "procMount": "Default",
                    "capabilities": {"add": ["NET_ADMIN"], "drop": ["ALL"]}},
                "terminationMessagePolicy": "FallbackToLogsOnError",
                "terminationMessagePath": "/tmp/msg",
                "stdin": false
            }))]
        });
        assert_eq!(errors(spec), Vec::<String>::new());
    }

    #[test]
    fn fields_skiff_does_not_run_are_refused_by_name() {
        let spec = json!({
            "runtimeClassName": "gvisor",
            "hostUsers": false,
            "os": {"name": "windows"},
            "securityContext": {"seLinuxOptions": {"level": "s0"}},
            "containers": [app(json!({
                "resizePolicy": [{"resourceName": "cpu", "restartPolicy": "NotRequired"}],
                "securityContext": {"procMount": "Unmasked",
                    "seccompProfile": {"type": "Localhost", "localhostProfile": "p.json"}},
                "livenessProbe": {"grpc": {"port": 9000}}
            }))]
        });
        let errs = errors(spec);
        for expected in [
            "spec.runtimeClassName: Forbidden: not supported by skiff",
            "spec.hostUsers: Forbidden: user namespaces are not supported by skiff",
            "spec.os.name: Unsupported value: \"windows\": supported values: \"linux\"",
            "spec.securityContext.seLinuxOptions: Forbidden: not supported by skiff",
            "spec.containers[0].resizePolicy: Forbidden: not supported by skiff",
            "spec.containers[0].securityContext.procMount: Unsupported value: \"Unmasked\": supported values: \"Default\"",
            "spec.containers[0].securityContext.seccompProfile.type: Unsupported value: \"Localhost\": supported values: \"RuntimeDefault\", \"Unconfined\"",
            "spec.containers[0].livenessProbe.grpc: Forbidden: not supported by skiff",
        ] {
            assert!(errs.iter().any(|e| e == expected), "{expected} in {errs:#?}");
        }
    }

    #[test]
    fn init_containers_follow_kubernetes_rules_for_sidecars_and_probes() {
        let spec = json!({
            "initContainers": [
                {"name": "a", "image": "busybox", "readinessProbe": {"exec": {"command": ["true"]}}},
                {"name": "b", "image": "busybox", "restartPolicy": "OnFailure"}
            ],
            "containers": [app(json!({"restartPolicy": "Always"}))]
        });
        let errs = errors(spec);
        assert!(errs.contains(&"spec.initContainers[0].readinessProbe: Forbidden: may not be set for init containers without restartPolicy=Always".to_string()), "{errs:?}");
        assert!(errs.contains(&"spec.initContainers[1].restartPolicy: Unsupported value: \"OnFailure\": supported values: \"Always\"".to_string()), "{errs:?}");
        assert!(errs.contains(
            &"spec.containers[0].restartPolicy: Forbidden: may not be set for non-init containers"
                .to_string()
        ));
    }

    #[test]
    fn host_network_needs_matching_host_ports_and_host_pid_excludes_sharing() {
        let spec = json!({"hostNetwork": true, "hostPID": true, "shareProcessNamespace": true,
            "containers": [app(json!({"ports": [{"containerPort": 80, "hostPort": 8080}]}))]});
        let errs = errors(spec);
        assert!(errs.contains(&"spec.containers[0].ports[0].hostPort: Invalid value: 8080: must match `containerPort` when `hostNetwork` is true".to_string()), "{errs:?}");
        assert!(errs.contains(&"spec.shareProcessNamespace: Invalid value: true: ShareProcessNamespace and HostPID cannot both be enabled".to_string()), "{errs:?}");
    }

    #[test]
    fn lifecycle_tcp_socket_and_bad_termination_messages_are_refused() {
        let spec = json!({"containers": [app(json!({
            "lifecycle": {"preStop": {"tcpSocket": {"port": 80}}},
            "terminationMessagePolicy": "Always",
            "terminationMessagePath": "relative/path"
        }))]});
        let errs = errors(spec);
        assert!(errs.contains(
            &"spec.containers[0].lifecycle.preStop.tcpSocket: Forbidden: not supported by skiff"
                .to_string()
        ));
        assert!(errs.contains(&"spec.containers[0].terminationMessagePolicy: Unsupported value: \"Always\": supported values: \"File\", \"FallbackToLogsOnError\"".to_string()));
        assert!(errs.contains(&"spec.containers[0].terminationMessagePath: Invalid value: \"relative/path\": must be an absolute path".to_string()));
    }

    #[test]
    fn host_aliases_need_an_ip_and_dns_names() {
        let spec = json!({"hostname": "Bad_Name", "hostAliases": [{"ip": "nope", "hostnames": ["ok.local", "Not OK"]}],
            "containers": [app(json!({}))]});
        let errs = errors(spec);
        assert!(
            errs.iter()
                .any(|e| e.starts_with("spec.hostname: Invalid value: \"Bad_Name\"")),
            "{errs:?}"
        );
        assert!(
            errs.iter().any(|e| e.starts_with(
                "spec.hostAliases[0].ip: Invalid value: \"nope\": must be a valid IP address"
            )),
            "{errs:?}"
        );
        assert!(
            errs.iter()
                .any(|e| e
                    .starts_with("spec.hostAliases[0].hostnames[1]: Invalid value: \"Not OK\"")),
            "{errs:?}"
        );
    }
}
