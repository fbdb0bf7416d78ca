//! `secret` volumes: the Secret's keys (all, or `items`) as files, like configMap volumes
//! but from `data` (decrypted by the API server, base64 in transit), read-only, refreshed
//! by the resync. A missing Secret or key fails the mount unless `optional`.

use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{KeyToPath, Secret, SecretVolumeSource};

use super::atomic_writer::{self, Payload};
use super::config_map::key_payload;
use super::{SetUpContext, VolumeError, VolumePlugin};
use crate::kubelet::env::get_typed;

pub const PLUGIN_DIR: &str = "kubernetes.io~secret";

pub struct SecretVolume(pub SecretVolumeSource);

/// `MakePayload` for a Secret.
pub fn payload(
    items: &[KeyToPath],
    secret: &Secret,
    default_mode: Option<i32>,
    optional: bool,
) -> Result<Payload, VolumeError> {
    let files = secret
        .data
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect();
    key_payload(
        files,
        items,
        default_mode,
        optional,
        VolumeError::MissingSecretKey,
    )
}

pub async fn fetch_payload(
    ctx: &SetUpContext<'_>,
    name: &str,
    items: &[KeyToPath],
    default_mode: Option<i32>,
    optional: bool,
) -> Result<Payload, VolumeError> {
    match get_typed::<Secret>(ctx.client, "secrets", ctx.namespace(), name).await? {
        Some(s) => payload(items, &s, default_mode, optional),
        None if optional => Ok(Payload::new()),
        None => Err(VolumeError::SecretNotFound(name.to_string())),
    }
}

#[async_trait::async_trait]
impl VolumePlugin for SecretVolume {
    fn plugin_dir(&self) -> Option<&'static str> {
        Some(PLUGIN_DIR)
    }

    async fn set_up(&self, ctx: &SetUpContext<'_>, dir: &Path) -> Result<PathBuf, VolumeError> {
        let s = &self.0;
        let name = s.secret_name.clone().unwrap_or_default();
        let items = s.items.clone().unwrap_or_default();
        let payload =
            fetch_payload(ctx, &name, &items, s.default_mode, s.optional == Some(true)).await?;
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
    use k8s_openapi::ByteString;
    use std::collections::BTreeMap;

    #[test]
    fn secret_keys_become_files_and_a_missing_item_key_fails_in_the_kubelets_words() {
        let s = Secret {
            data: Some(BTreeMap::from([(
                "tls.key".to_string(),
                ByteString(b"k".to_vec()),
            )])),
            ..Default::default()
        };
        let p = payload(&[], &s, Some(0o400), false).expect("payload");
        assert_eq!(p["tls.key"].data, b"k");
        assert_eq!(p["tls.key"].mode, 0o400);
        let item = KeyToPath {
            key: "x".into(),
            path: "x".into(),
            ..Default::default()
        };
        let err = payload(&[item], &s, None, false).map_err(|e| e.to_string());
        assert_eq!(
            err.err().as_deref(),
            Some("references non-existent secret key: x")
        );
    }
}
