//! The kubelet's own files of a pod, under `<pods dir>/<pod uid>/` as the kubelet keeps
//! them under `/var/lib/kubelet/pods/<uid>/`: the managed `etc-hosts`, the pod's
//! `resolv.conf` and one termination message file per container attempt, bind-mounted
//! into the containers; removed with the pod.

use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use super::*;
use crate::kubelet::runtime::{LogOptions, Mount, Propagation};

/// The most of a termination message the kubelet keeps (per container).
pub(super) const MAX_MESSAGE_BYTES: usize = 4096;
/// Lines of log read for `FallbackToLogsOnError`.
pub(super) const FALLBACK_LOG_LINES: u64 = 80;
const DEFAULT_MESSAGE_PATH: &str = "/dev/termination-log";

pub(super) fn pod_dir(cfg: &WorkerConfig, uid: &str) -> PathBuf {
    cfg.pods_dir.join(uid)
}

fn termination_log(cfg: &WorkerConfig, uid: &str, container: &str, attempt: u32) -> PathBuf {
    pod_dir(cfg, uid)
        .join("containers")
        .join(container)
        .join(format!("{attempt}-termination-log"))
}

fn resolv_conf_path(cfg: &WorkerConfig, uid: &str) -> PathBuf {
    pod_dir(cfg, uid).join("resolv.conf")
}

/// Form and write the pod's resolv.conf (at sandbox creation), with the warnings forming
/// it gave.
pub(super) fn write_resolv_conf(
    cfg: &WorkerConfig,
    pod: &Value,
) -> Result<Vec<crate::kubelet::dns::DnsWarning>, RuntimeError> {
    let uid = meta::uid(pod).unwrap_or_default();
    let dir = pod_dir(cfg, uid);
    std::fs::create_dir_all(&dir).map_err(|e| io_error(&dir, e))?;
    let (conf, warnings) = crate::kubelet::dns::pod_resolv_conf(pod, &cfg.dns);
    let path = resolv_conf_path(cfg, uid);
    std::fs::write(&path, conf.render()).map_err(|e| io_error(&path, e))?;
    let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644));
    Ok(warnings)
}

fn io_error(what: &std::path::Path, e: std::io::Error) -> RuntimeError {
    RuntimeError::Failed(format!("{}: {e}", what.display()))
}

/// The files one attempt of `container` mounts: the pod's `/etc/hosts` (written now, with
/// the pod's address), its `/etc/resolv.conf` (written with the sandbox; now if a
/// restarted kubelet adopted a sandbox without one) and an empty, world-writable
/// termination message file (the process may run as any user).
pub(super) fn mounts(
    cfg: &WorkerConfig,
    pod: &Value,
    container: &Value,
    pod_ip: &str,
    attempt: u32,
) -> Result<Vec<Mount>, RuntimeError> {
    let uid = meta::uid(pod).unwrap_or_default();
    let dir = pod_dir(cfg, uid);
    std::fs::create_dir_all(&dir).map_err(|e| io_error(&dir, e))?;
    let node_hosts = spec::namespaces(pod)
        .network
        .then(|| std::fs::read_to_string("/etc/hosts").unwrap_or_default());
    let hosts = dir.join("etc-hosts");
    let content = spec::hosts_file(pod, pod_ip, &cfg.dns.cluster_domain, node_hosts.as_deref());
    std::fs::write(&hosts, content).map_err(|e| io_error(&hosts, e))?;
    let _ = std::fs::set_permissions(&hosts, std::fs::Permissions::from_mode(0o644));
    let log = termination_log(cfg, uid, name_of(container), attempt);
    if let Some(parent) = log.parent() {
        std::fs::create_dir_all(parent).map_err(|e| io_error(parent, e))?;
    }
    std::fs::write(&log, b"").map_err(|e| io_error(&log, e))?;
    std::fs::set_permissions(&log, std::fs::Permissions::from_mode(0o666))
        .map_err(|e| io_error(&log, e))?;
    let message_path = container
        .get("terminationMessagePath")
        .and_then(Value::as_str)
        .filter(|p| !p.is_empty())
        .unwrap_or(DEFAULT_MESSAGE_PATH);
    let resolv = resolv_conf_path(cfg, uid);
    if !resolv.exists() {
        write_resolv_conf(cfg, pod)?;
    }
    Ok(vec![
        Mount {
            host_path: hosts,
            container_path: "/etc/hosts".into(),
            read_only: false,
            propagation: Propagation::Private,
        },
        Mount {
            host_path: resolv,
            container_path: "/etc/resolv.conf".into(),
            read_only: false,
            propagation: Propagation::Private,
        },
        Mount {
            host_path: log,
            container_path: message_path.to_string(),
            read_only: false,
            propagation: Propagation::Private,
        },
    ])
}

/// The last `max` bytes of a file (a message longer than the limit keeps its end, as the
/// kubelet does).
fn tail_of_file(path: &std::path::Path, max: usize) -> Option<String> {
    let mut f = std::fs::File::open(path).ok()?;
    let len = f.metadata().ok()?.len();
    let start = len.saturating_sub(max as u64);
    f.seek(SeekFrom::Start(start)).ok()?;
    let mut buf = Vec::new();
    f.read_to_end(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf).into_owned())
}

fn tail_bytes(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut start = s.len() - max;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    s[start..].to_string()
}

/// The termination message of an exited attempt: the file the container wrote, or with
/// `FallbackToLogsOnError` and a failed exit, the tail of its log.
pub(super) async fn termination_message(
    deps: &WorkerDeps,
    pod: &Value,
    container: &Value,
    instance: &Instance,
) -> Option<String> {
    let uid = meta::uid(pod).unwrap_or_default();
    let path = termination_log(&deps.config, uid, name_of(container), instance.attempt);
    let written = tail_of_file(&path, MAX_MESSAGE_BYTES).filter(|m| !m.is_empty());
    if written.is_some() {
        return written;
    }
    let fallback = container
        .get("terminationMessagePolicy")
        .and_then(Value::as_str)
        == Some("FallbackToLogsOnError");
    let failed =
        matches!(instance.state, ContainerState::Exited { exit_code, .. } if exit_code != 0);
    if !(fallback && failed) {
        return None;
    }
    let opts = LogOptions {
        follow: false,
        tail_lines: Some(FALLBACK_LOG_LINES),
        timestamps: false,
        since: None,
    };
    let mut stream = deps.runtime.logs(&instance.id, &opts).await.ok()?;
    let mut out = Vec::new();
    while let Some(chunk) = futures::StreamExt::next(&mut stream).await {
        match chunk {
            Ok(bytes) => out.extend_from_slice(&bytes),
            Err(_) => break,
        }
    }
    let text = String::from_utf8_lossy(&out);
    Some(tail_bytes(&text, MAX_MESSAGE_BYTES)).filter(|m| !m.is_empty())
}

/// Remove the pod's directory (after its containers are gone).
pub(super) fn remove_pod_dir(cfg: &WorkerConfig, uid: &str) {
    let dir = pod_dir(cfg, uid);
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "removing the pod directory failed")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_message_keeps_its_end_on_a_character_boundary() {
        let s = format!("{}é{}", "a".repeat(10), "b".repeat(4095));
        let t = tail_bytes(&s, MAX_MESSAGE_BYTES);
        assert!(t.len() <= MAX_MESSAGE_BYTES && t.ends_with('b'));
        assert_eq!(tail_bytes("short", MAX_MESSAGE_BYTES), "short");
    }

    #[test]
    fn mounts_write_the_hosts_file_the_resolv_conf_and_an_empty_writable_message_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = WorkerConfig {
            pods_dir: dir.path().to_path_buf(),
            dns: crate::kubelet::dns::DnsSettings {
                cluster_dns: vec!["10.96.0.10".parse().expect("ip")],
                ..Default::default()
            },
            ..WorkerConfig::default()
        };
        let pod = json!({"metadata": {"name": "p", "namespace": "ns", "uid": "u1"}, "spec": {}});
        let c = json!({"name": "app", "terminationMessagePath": "/tmp/msg"});
        let m = mounts(&cfg, &pod, &c, "10.0.0.3", 2).expect("mounts");
        assert_eq!(m[0].container_path, "/etc/hosts");
        let hosts = std::fs::read_to_string(&m[0].host_path).expect("hosts");
        assert!(hosts.starts_with("# Kubernetes-managed hosts file.\n"));
        assert!(hosts.ends_with("10.0.0.3\tp\n"));
        assert_eq!(m[1].container_path, "/etc/resolv.conf");
        let resolv = std::fs::read_to_string(&m[1].host_path).expect("resolv.conf");
        assert!(resolv.contains("nameserver 10.96.0.10\n"), "{resolv}");
        assert!(
            resolv.starts_with("search ns.svc.cluster.local "),
            "{resolv}"
        );
        assert_eq!(m[2].container_path, "/tmp/msg");
        let mode = std::fs::metadata(&m[2].host_path)
            .expect("log")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o666);
        remove_pod_dir(&cfg, "u1");
        assert!(!dir.path().join("u1").exists());
    }
}
