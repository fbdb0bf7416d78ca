//! `downwardAPI` volumes: pod metadata (`fieldRef`; whole label and annotation maps as
//! sorted `key="value"` lines) and container resources (`resourceFieldRef`, limits
//! defaulting to the node's allocatable) as files; the resync rewrites them when labels or
//! annotations change.

use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{DownwardAPIVolumeFile, DownwardAPIVolumeSource};

use super::atomic_writer::{self, FileProjection, Payload};
use super::config_map::mode;
use super::{SetUpContext, VolumeError, VolumePlugin};
use crate::kubelet::env;

pub const PLUGIN_DIR: &str = "kubernetes.io~downward-api";

pub struct DownwardApiVolume(pub DownwardAPIVolumeSource);

/// `CollectData`: each item's value, or the first error.
pub fn payload(
    ctx: &SetUpContext<'_>,
    items: &[DownwardAPIVolumeFile],
    default_mode: Option<i32>,
) -> Result<Payload, VolumeError> {
    let mut out = Payload::new();
    for item in items {
        let data = if let Some(f) = &item.field_ref {
            env::metadata_field(ctx.pod, &f.field_path)?
        } else if let Some(r) = &item.resource_field_ref {
            let name = r.container_name.clone().unwrap_or_default();
            let container = ctx
                .pod
                .spec
                .iter()
                .flat_map(|s| {
                    s.containers
                        .iter()
                        .chain(s.init_containers.iter().flatten())
                })
                .find(|c| c.name == name)
                .ok_or_else(|| VolumeError::ContainerNotFound(name.clone()))?;
            env::resource_value(r, container, ctx.allocatable)?
        } else {
            String::new()
        };
        out.insert(
            item.path.clone(),
            FileProjection {
                data: data.into_bytes(),
                mode: mode(item.mode.or(default_mode)),
            },
        );
    }
    Ok(out)
}

#[async_trait::async_trait]
impl VolumePlugin for DownwardApiVolume {
    fn plugin_dir(&self) -> Option<&'static str> {
        Some(PLUGIN_DIR)
    }

    async fn set_up(&self, ctx: &SetUpContext<'_>, dir: &Path) -> Result<PathBuf, VolumeError> {
        let items = self.0.items.clone().unwrap_or_default();
        atomic_writer::write(dir, &payload(ctx, &items, self.0.default_mode)?)?;
        Ok(dir.to_path_buf())
    }

    fn refreshes(&self) -> bool {
        true
    }

    fn read_only(&self) -> bool {
        true
    }
}
