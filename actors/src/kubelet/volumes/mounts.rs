//! A container's `volumeMounts` as binds (the kubelet's `makeMounts`): the volume's host
//! path, or a `subPath` inside it (`subPathExpr` expanded from the container's
//! environment first), checked so it cannot leave the volume, created as a directory when
//! missing; read-only when asked or when the volume is written by the kubelet; with the
//! mount propagation asked for.
//!
//! A subPath is bound by the path it resolves to now: after an atomic update of a
//! configMap volume it keeps the old file, as in Kubernetes.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Container, VolumeMount};

use super::VolumePaths;
use crate::kubelet::env::{expand_with, Resolved};
use crate::kubelet::runtime::{Mount, Propagation};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MountError {
    #[error("cannot find volume \"{volume}\" to mount into container \"{container}\"")]
    NoVolume { volume: String, container: String },
    #[error("missing value for {0}")]
    MissingExpansion(String),
    #[error("error SubPath `{0}` must not be an absolute path")]
    AbsoluteSubPath(String),
    #[error("unable to provision SubPath `{0}`: must not contain '..'")]
    Backsteps(String),
    #[error("failed to create subPath directory for volumeMount \"{volume}\" of container \"{container}\"")]
    CreateSubPath { volume: String, container: String },
    #[error("subpath \"{sub}\" not within volume path \"{volume}\"")]
    Escapes { sub: String, volume: String },
}

/// `ExpandContainerVolumeMounts`: `$(VAR)` from the environment; a missing or empty
/// variable is an error.
pub fn expand_sub_path(expr: &str, env: &Resolved) -> Result<String, MountError> {
    let mut missing = std::collections::BTreeSet::new();
    let out = expand_with(expr, |name| match env.lookup(name) {
        Some(v) if !v.is_empty() => v.to_string(),
        _ => {
            missing.insert(name.to_string());
            String::new()
        }
    });
    if missing.is_empty() {
        Ok(out)
    } else {
        Err(MountError::MissingExpansion(
            missing.into_iter().collect::<Vec<_>>().join(", "),
        ))
    }
}

pub fn propagation(m: &VolumeMount) -> Propagation {
    match m.mount_propagation.as_deref() {
        Some("HostToContainer") => Propagation::HostToContainer,
        Some("Bidirectional") => Propagation::Bidirectional,
        _ => Propagation::Private,
    }
}

/// The host path of `sub` inside `volume`, made if missing, refused if it leaves it.
fn sub_path(
    volume: &Path,
    sub: &str,
    m: &VolumeMount,
    container: &str,
) -> Result<PathBuf, MountError> {
    if Path::new(sub).is_absolute() {
        return Err(MountError::AbsoluteSubPath(sub.to_string()));
    }
    if sub.split('/').any(|s| s == "..") {
        return Err(MountError::Backsteps(sub.to_string()));
    }
    let path = volume.join(sub);
    if std::fs::symlink_metadata(&path).is_err() {
        // Made now with the volume's own mode, not later by the runtime as root's 0755.
        let mode = std::fs::metadata(volume)
            .map(|m| m.permissions().mode() & 0o7777)
            .unwrap_or(0o755);
        let made = std::fs::create_dir_all(&path)
            .and_then(|_| std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)));
        if made.is_err() {
            return Err(MountError::CreateSubPath {
                volume: m.name.clone(),
                container: container.to_string(),
            });
        }
    }
    let escapes = || MountError::Escapes {
        sub: sub.to_string(),
        volume: volume.display().to_string(),
    };
    let root = std::fs::canonicalize(volume).map_err(|_| escapes())?;
    let resolved = std::fs::canonicalize(&path).map_err(|_| escapes())?;
    if !resolved.starts_with(&root) {
        return Err(escapes());
    }
    Ok(resolved)
}

/// The binds of `container`'s `volumeMounts`, given where each pod volume is.
pub fn for_container(
    container: &Container,
    volumes: &VolumePaths,
    env: &Resolved,
) -> Result<Vec<Mount>, MountError> {
    let mut out = Vec::new();
    for m in container.volume_mounts.iter().flatten() {
        let Some((path, forced_ro)) = volumes.get(&m.name) else {
            return Err(MountError::NoVolume {
                volume: m.name.clone(),
                container: container.name.clone(),
            });
        };
        let sub = match (&m.sub_path_expr, &m.sub_path) {
            (Some(expr), _) if !expr.is_empty() => expand_sub_path(expr, env)?,
            (_, Some(sub)) => sub.clone(),
            _ => String::new(),
        };
        let host_path = if sub.is_empty() {
            path.clone()
        } else {
            sub_path(path, &sub, m, &container.name)?
        };
        let container_path = if m.mount_path.starts_with('/') {
            m.mount_path.clone()
        } else {
            format!("/{}", m.mount_path)
        };
        out.push(Mount {
            host_path,
            container_path,
            read_only: m.read_only == Some(true) || *forced_ro,
            propagation: propagation(m),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn container(mounts: serde_json::Value) -> Container {
        serde_json::from_value(json!({"name": "app", "volumeMounts": mounts})).expect("container")
    }

    fn env() -> Resolved {
        Resolved {
            env: vec![
                ("POD".into(), "web-0".into()),
                ("EMPTY".into(), String::new()),
            ],
            skipped: vec![],
        }
    }

    #[test]
    fn mounts_bind_volume_paths_with_read_only_and_propagation() {
        let dir = tempfile::tempdir().expect("tempdir");
        let vols = VolumePaths::from([
            ("data".to_string(), (dir.path().to_path_buf(), false)),
            ("cfg".to_string(), (dir.path().join("cfg"), true)),
        ]);
        let c = container(json!([
            {"name": "data", "mountPath": "/data", "mountPropagation": "HostToContainer"},
            {"name": "data", "mountPath": "/ro", "readOnly": true, "mountPropagation": "Bidirectional"},
            {"name": "cfg", "mountPath": "/etc/cfg"},
        ]));
        let m = for_container(&c, &vols, &env()).expect("mounts");
        assert_eq!(m[0].propagation, Propagation::HostToContainer);
        assert!(!m[0].read_only);
        assert!(m[1].read_only);
        assert_eq!(m[1].propagation, Propagation::Bidirectional);
        assert!(m[2].read_only, "written volumes are always read-only");
        let missing = container(json!([{"name": "nope", "mountPath": "/x"}]));
        assert_eq!(
            for_container(&missing, &vols, &env())
                .map_err(|e| e.to_string())
                .err()
                .as_deref(),
            Some("cannot find volume \"nope\" to mount into container \"app\"")
        );
    }

    #[test]
    fn sub_paths_are_created_inside_the_volume_and_may_not_leave_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let vol = dir.path().join("vol");
        std::fs::create_dir(&vol).expect("mkdir");
        std::os::unix::fs::symlink("/etc", vol.join("out")).expect("symlink");
        let vols = VolumePaths::from([("v".to_string(), (vol.clone(), false))]);
        let m = for_container(
            &container(json!([{"name": "v", "mountPath": "/w", "subPathExpr": "logs/$(POD)"}])),
            &vols,
            &env(),
        )
        .expect("mounts");
        assert!(vol.join("logs/web-0").is_dir(), "made");
        assert!(m[0].host_path.ends_with("logs/web-0"));
        let err = |sub: serde_json::Value| {
            for_container(
                &container(json!([{"name": "v", "mountPath": "/w", "subPath": sub}])),
                &vols,
                &env(),
            )
            .map_err(|e| e.to_string())
            .err()
        };
        assert_eq!(
            err(json!("out")).map(|e| e.starts_with("subpath \"out\" not within volume path")),
            Some(true)
        );
        assert_eq!(
            err(json!("/abs")).as_deref(),
            Some("error SubPath `/abs` must not be an absolute path")
        );
        assert_eq!(
            err(json!("a/../..")).as_deref(),
            Some("unable to provision SubPath `a/../..`: must not contain '..'")
        );
        let expr =
            container(json!([{"name": "v", "mountPath": "/w", "subPathExpr": "$(EMPTY)/$(NOPE)"}]));
        assert_eq!(
            for_container(&expr, &vols, &env())
                .map_err(|e| e.to_string())
                .err()
                .as_deref(),
            Some("missing value for EMPTY, NOPE")
        );
    }
}
