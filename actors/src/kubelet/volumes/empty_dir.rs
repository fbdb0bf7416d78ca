//! `emptyDir`: a directory that lives as long as the pod. On disk it is a plain directory
//! under the pod; `medium: Memory` mounts a tmpfs there (sized by `sizeLimit`, else by the
//! pod's memory limits or the node's allocatable memory, as the kubelet sizes it), so every
//! container of the pod binds the same memory-backed directory.
//!
//! A disk `sizeLimit` is refused at admission: nothing here could enforce it.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{EmptyDirVolumeSource, Pod};

use super::{SetUpContext, VolumeError, VolumePlugin};
use crate::api::validation::parse_quantity;
use crate::kubelet::env::Allocatable;

pub const PLUGIN_DIR: &str = "kubernetes.io~empty-dir";

pub struct EmptyDir {
    memory: bool,
    /// The tmpfs size in bytes (Memory only; `None`: unbounded).
    size: Option<u64>,
}

/// The memory a memory-backed emptyDir may use: `sizeLimit` when it is below what the
/// pod may use, else the pod's memory limit (when every container has one) or the node's
/// allocatable memory (`calculateEmptyDirMemorySize`).
fn memory_size(source: &EmptyDirVolumeSource, pod: &Pod, allocatable: &Allocatable) -> Option<u64> {
    let node = allocatable.get("memory").and_then(|q| parse_quantity(&q.0));
    let containers = pod
        .spec
        .as_ref()
        .map(|s| s.containers.as_slice())
        .unwrap_or(&[]);
    let limits: Option<f64> = containers
        .iter()
        .map(|c| {
            c.resources
                .as_ref()
                .and_then(|r| r.limits.as_ref())
                .and_then(|l| l.get("memory"))
                .and_then(|q| parse_quantity(&q.0))
        })
        .sum();
    let pod_limit = match (limits.filter(|_| !containers.is_empty()), node) {
        (Some(l), Some(n)) => Some(l.min(n)),
        (Some(l), None) => Some(l),
        (None, n) => n,
    };
    let size_limit = source
        .size_limit
        .as_ref()
        .and_then(|q| parse_quantity(&q.0))
        .filter(|s| *s > 0.0);
    let size = match (size_limit, pod_limit) {
        (Some(s), Some(p)) => Some(s.min(p)),
        (s, p) => s.or(p),
    };
    size.map(|s| s.ceil() as u64)
}

impl EmptyDir {
    pub fn new(source: &EmptyDirVolumeSource, pod: &Pod, allocatable: &Allocatable) -> Self {
        let memory = source.medium.as_deref() == Some("Memory");
        EmptyDir {
            memory,
            size: memory
                .then(|| memory_size(source, pod, allocatable))
                .flatten(),
        }
    }
}

/// Whether `dir` is a mount point, from the kernel's mount table.
pub fn is_mount_point(dir: &Path) -> bool {
    let Ok(table) = std::fs::read_to_string("/proc/self/mounts") else {
        return false;
    };
    let want = dir.to_string_lossy();
    table
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .any(|mp| unescape_mount_path(mp) == want)
}

/// The mount table escapes spaces and such as octal (`\040`).
fn unescape_mount_path(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let v = (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn c_path(p: &Path) -> Result<CString, VolumeError> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| VolumeError::Tmpfs {
        path: p.display().to_string(),
        detail: "path contains a NUL byte".into(),
    })
}

fn mount_tmpfs(dir: &Path, size: Option<u64>) -> Result<(), VolumeError> {
    let target = c_path(dir)?;
    let fstype = CString::new("tmpfs").unwrap_or_default();
    let options = match size {
        Some(s) => format!("size={s},mode=0777"),
        None => "mode=0777".to_string(),
    };
    let data = CString::new(options).unwrap_or_default();
    // SAFETY: every pointer is a valid NUL-terminated string that outlives the call.
    let rc = unsafe {
        libc::mount(
            fstype.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV,
            data.as_ptr().cast(),
        )
    };
    if rc != 0 {
        return Err(VolumeError::Tmpfs {
            path: dir.display().to_string(),
            detail: std::io::Error::last_os_error().to_string(),
        });
    }
    Ok(())
}

fn unmount(dir: &Path) -> Result<(), VolumeError> {
    let target = c_path(dir)?;
    // SAFETY: a valid NUL-terminated path.
    let rc = unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
    if rc != 0 {
        return Err(VolumeError::Tmpfs {
            path: dir.display().to_string(),
            detail: std::io::Error::last_os_error().to_string(),
        });
    }
    Ok(())
}

/// Unmount whatever is mounted at or below `dir` (deepest first).
pub fn unmount_all_under(dir: &Path) {
    let Ok(table) = std::fs::read_to_string("/proc/self/mounts") else {
        return;
    };
    let mut points: Vec<PathBuf> = table
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .map(|mp| PathBuf::from(unescape_mount_path(mp)))
        .filter(|mp| mp.starts_with(dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for p in points {
        if let Err(e) = unmount(&p) {
            tracing::warn!(path = %p.display(), error = %e, "unmount failed");
        }
    }
}

#[async_trait::async_trait]
impl VolumePlugin for EmptyDir {
    fn plugin_dir(&self) -> Option<&'static str> {
        Some(PLUGIN_DIR)
    }

    async fn set_up(&self, _ctx: &SetUpContext<'_>, dir: &Path) -> Result<PathBuf, VolumeError> {
        std::fs::create_dir_all(dir).map_err(VolumeError::io("creating", dir))?;
        if self.memory && !is_mount_point(dir) {
            mount_tmpfs(dir, self.size)?;
        }
        // Every container may write to it, whatever user it runs as.
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777))
            .map_err(VolumeError::io("setting the mode of", dir))?;
        Ok(dir.to_path_buf())
    }

    fn tear_down(&self, dir: &Path) -> Result<(), VolumeError> {
        if self.memory && is_mount_point(dir) {
            unmount(dir)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use serde_json::json;

    fn pod(limits: serde_json::Value) -> Pod {
        serde_json::from_value(json!({"spec": {"containers": [
            {"name": "a", "resources": {"limits": limits}},
        ]}}))
        .expect("pod")
    }

    fn alloc() -> Allocatable {
        Allocatable::from([("memory".to_string(), Quantity("1Gi".into()))])
    }

    fn source(size: Option<&str>) -> EmptyDirVolumeSource {
        EmptyDirVolumeSource {
            medium: Some("Memory".into()),
            size_limit: size.map(|s| Quantity(s.into())),
            ..Default::default()
        }
    }

    #[test]
    fn memory_volumes_are_sized_by_size_limit_pod_limits_or_the_node() {
        let mib = 1024 * 1024;
        assert_eq!(
            memory_size(&source(Some("64Mi")), &pod(json!({})), &alloc()),
            Some(64 * mib)
        );
        assert_eq!(
            memory_size(&source(None), &pod(json!({"memory": "128Mi"})), &alloc()),
            Some(128 * mib)
        );
        assert_eq!(
            memory_size(
                &source(Some("2Gi")),
                &pod(json!({"memory": "128Mi"})),
                &alloc()
            ),
            Some(128 * mib),
            "never more than the pod may use"
        );
        assert_eq!(
            memory_size(&source(None), &pod(json!({})), &alloc()),
            Some(1024 * mib)
        );
    }

    #[test]
    fn mount_table_paths_are_unescaped() {
        assert_eq!(unescape_mount_path("/a\\040b"), "/a b");
        assert_eq!(unescape_mount_path("/plain"), "/plain");
    }
}
