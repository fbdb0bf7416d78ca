//! `configMap` volumes: the ConfigMap's keys (all of them, or the `items` asked for) as
//! files with `defaultMode` or the item's `mode`, written with the atomic writer and
//! rewritten by the resync when the ConfigMap changes. A missing ConfigMap or key fails
//! the mount unless the volume is `optional`.

use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{ConfigMap, ConfigMapVolumeSource, KeyToPath};

use super::atomic_writer::{self, FileProjection, Payload};
use super::{SetUpContext, VolumeError, VolumePlugin};
use crate::kubelet::env::get_typed;

pub const PLUGIN_DIR: &str = "kubernetes.io~configmap";
/// The API's default for `defaultMode` (0644).
pub const DEFAULT_MODE: i32 = 0o644;

pub struct ConfigMapVolume(pub ConfigMapVolumeSource);

pub fn mode(m: Option<i32>) -> u32 {
    (m.unwrap_or(DEFAULT_MODE) & 0o777) as u32
}

/// The kubelet's `MakePayload`, shared by ConfigMap and Secret sources: every key of
/// `files` (or the `items` asked for) as a file with `defaultMode` or the item's `mode`;
/// a missing item key is skipped when `optional`, else `missing(key)`.
pub fn key_payload(
    files: std::collections::BTreeMap<String, Vec<u8>>,
    items: &[KeyToPath],
    default_mode: Option<i32>,
    optional: bool,
    missing: fn(String) -> VolumeError,
) -> Result<Payload, VolumeError> {
    if items.is_empty() {
        return Ok(files
            .into_iter()
            .map(|(k, data)| {
                let mode = mode(default_mode);
                (k, FileProjection { data, mode })
            })
            .collect());
    }
    let mut out = Payload::new();
    for item in items {
        let Some(data) = files.get(&item.key) else {
            if optional {
                continue;
            }
            return Err(missing(item.key.clone()));
        };
        out.insert(
            item.path.clone(),
            FileProjection {
                data: data.clone(),
                mode: mode(item.mode.or(default_mode)),
            },
        );
    }
    Ok(out)
}

/// `MakePayload` for a ConfigMap: `data` and `binaryData` keys as files.
pub fn payload(
    items: &[KeyToPath],
    cm: &ConfigMap,
    default_mode: Option<i32>,
    optional: bool,
) -> Result<Payload, VolumeError> {
    // The API refuses a key in both maps, so one map of bytes loses nothing.
    let mut files: std::collections::BTreeMap<String, Vec<u8>> = cm
        .binary_data
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect();
    for (k, v) in cm.data.clone().unwrap_or_default() {
        files.insert(k, v.into_bytes());
    }
    key_payload(
        files,
        items,
        default_mode,
        optional,
        VolumeError::MissingConfigMapKey,
    )
}

/// The payload of a ConfigMap source (volume or projection); an absent optional one
/// gives nothing.
pub async fn fetch_payload(
    ctx: &SetUpContext<'_>,
    name: &str,
    items: &[KeyToPath],
    default_mode: Option<i32>,
    optional: bool,
) -> Result<Payload, VolumeError> {
    match get_typed::<ConfigMap>(ctx.client, "configmaps", ctx.namespace(), name).await? {
        Some(cm) => payload(items, &cm, default_mode, optional),
        None if optional => Ok(Payload::new()),
        None => Err(VolumeError::ConfigMapNotFound(name.to_string())),
    }
}

#[async_trait::async_trait]
impl VolumePlugin for ConfigMapVolume {
    fn plugin_dir(&self) -> Option<&'static str> {
        Some(PLUGIN_DIR)
    }

    async fn set_up(&self, ctx: &SetUpContext<'_>, dir: &Path) -> Result<PathBuf, VolumeError> {
        let s = &self.0;
        let items = s.items.clone().unwrap_or_default();
        let payload = fetch_payload(
            ctx,
            &s.name,
            &items,
            s.default_mode,
            s.optional == Some(true),
        )
        .await?;
        atomic_writer::write(dir, &payload)?;
        Ok(dir.to_path_buf())
    }

    fn refreshes(&self) -> bool {
        true
    }

    fn read_only(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cm() -> ConfigMap {
        serde_json::from_value(json!({"data": {"a": "1", "b": "2"}, "binaryData": {"bin": "AAE="}}))
            .expect("cm")
    }

    fn item(key: &str, path: &str, mode: Option<i32>) -> KeyToPath {
        KeyToPath {
            key: key.into(),
            path: path.into(),
            mode,
            ..Default::default()
        }
    }

    #[test]
    fn every_key_becomes_a_file_with_the_default_mode() {
        let p = payload(&[], &cm(), None, false).expect("payload");
        assert_eq!(p.keys().collect::<Vec<_>>(), ["a", "b", "bin"]);
        assert_eq!(p["bin"].data, vec![0, 1]);
        assert!(p.values().all(|f| f.mode == 0o644));
    }

    #[test]
    fn items_pick_keys_paths_and_modes_and_a_missing_key_fails_unless_optional() {
        let p = payload(
            &[item("a", "conf/a.txt", Some(0o400))],
            &cm(),
            Some(0o600),
            false,
        )
        .expect("payload");
        assert_eq!(p.len(), 1);
        assert_eq!(p["conf/a.txt"].mode, 0o400);
        let p = payload(&[item("b", "b", None)], &cm(), Some(0o600), false).expect("payload");
        assert_eq!(p["b"].mode, 0o600);
        let err = payload(&[item("zz", "z", None)], &cm(), None, false).map_err(|e| e.to_string());
        assert_eq!(
            err.err().as_deref(),
            Some("configmap references non-existent config key: zz")
        );
        assert!(payload(&[item("zz", "z", None)], &cm(), None, true)
            .expect("optional")
            .is_empty());
    }
}
