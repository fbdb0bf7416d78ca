//! `projected` volumes: configMap, secret, downwardAPI and serviceAccountToken sources in
//! one directory, written together by the atomic writer and refreshed by the resync (a
//! token is requested again when it is due, see [`super::token`]).

use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::ProjectedVolumeSource;

use super::atomic_writer::{self, FileProjection, Payload};
use super::config_map::mode;
use super::token::{TokenKey, DEFAULT_EXPIRATION_SECONDS};
use super::{config_map, downward_api, secret, SetUpContext, VolumeError, VolumePlugin};

pub const PLUGIN_DIR: &str = "kubernetes.io~projected";

pub struct ProjectedVolume(pub ProjectedVolumeSource);

/// Every source's files, in order (a later source's file of the same path wins).
pub async fn payload(
    ctx: &SetUpContext<'_>,
    source: &ProjectedVolumeSource,
) -> Result<Payload, VolumeError> {
    let default_mode = source.default_mode;
    let mut out = Payload::new();
    for s in source.sources.iter().flatten() {
        if let Some(cm) = &s.config_map {
            let items = cm.items.clone().unwrap_or_default();
            out.extend(
                config_map::fetch_payload(
                    ctx,
                    &cm.name,
                    &items,
                    default_mode,
                    cm.optional == Some(true),
                )
                .await?,
            );
        }
        if let Some(sec) = &s.secret {
            let items = sec.items.clone().unwrap_or_default();
            out.extend(
                secret::fetch_payload(
                    ctx,
                    &sec.name,
                    &items,
                    default_mode,
                    sec.optional == Some(true),
                )
                .await?,
            );
        }
        if let Some(d) = &s.downward_api {
            let items = d.items.clone().unwrap_or_default();
            out.extend(downward_api::payload(ctx, &items, default_mode)?);
        }
        if let Some(t) = &s.service_account_token {
            let pod = ctx.pod;
            let key = TokenKey {
                namespace: ctx.namespace().to_string(),
                service_account: pod
                    .spec
                    .as_ref()
                    .and_then(|s| s.service_account_name.clone())
                    .filter(|s| !s.is_empty())
                    .unwrap_or_else(|| "default".into()),
                pod_name: pod.metadata.name.clone().unwrap_or_default(),
                pod_uid: ctx.uid().to_string(),
                audience: t.audience.clone().unwrap_or_default(),
                expiration_seconds: t.expiration_seconds.unwrap_or(DEFAULT_EXPIRATION_SECONDS),
            };
            let token = ctx
                .tokens
                .get(ctx.token_source, &key, chrono::Utc::now())
                .await
                .map_err(|e| VolumeError::Token(e.to_string()))?;
            out.insert(
                t.path.clone(),
                FileProjection {
                    data: token.token.into_bytes(),
                    mode: mode(default_mode),
                },
            );
        }
    }
    Ok(out)
}

#[async_trait::async_trait]
impl VolumePlugin for ProjectedVolume {
    fn plugin_dir(&self) -> Option<&'static str> {
        Some(PLUGIN_DIR)
    }

    async fn set_up(&self, ctx: &SetUpContext<'_>, dir: &Path) -> Result<PathBuf, VolumeError> {
        atomic_writer::write(dir, &payload(ctx, &self.0).await?)?;
        Ok(dir.to_path_buf())
    }

    fn refreshes(&self) -> bool {
        true
    }

    fn read_only(&self) -> bool {
        true
    }
}
