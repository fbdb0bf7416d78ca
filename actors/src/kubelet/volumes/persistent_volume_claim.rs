//! `persistentVolumeClaim` volumes: the claim resolved to the PersistentVolume bound to it
//! (the kubelet's `getPVCExtractPV` and `getPVSpec`, with their messages), and that
//! volume's `hostPath` or `local` path bound into the containers. The path is the
//! volume's, not the pod's: it outlives the pod, which is what a claim is for.

use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{
    PersistentVolume, PersistentVolumeClaim, PersistentVolumeClaimVolumeSource,
};

use super::host_path::check_type;
use super::{SetUpContext, VolumeError, VolumePlugin};
use crate::kubelet::env::get_typed;

pub struct ClaimVolume(pub PersistentVolumeClaimVolumeSource);

/// The bound volume's path on this node, after the checks the kubelet makes.
pub async fn resolve(ctx: &SetUpContext<'_>, claim_name: &str) -> Result<PathBuf, VolumeError> {
    let ns = ctx.namespace();
    let claim: PersistentVolumeClaim = get_typed(ctx.client, "persistentvolumeclaims", ns, claim_name)
        .await?
        .ok_or_else(|| {
            VolumeError::Claim(format!(
                "error processing PVC {ns}/{claim_name}: failed to fetch PVC from API server: persistentvolumeclaims \"{claim_name}\" not found"
            ))
        })?;
    if claim.metadata.deletion_timestamp.is_some() {
        return Err(VolumeError::Claim(format!(
            "error processing PVC {ns}/{claim_name}: PVC is being deleted"
        )));
    }
    let phase = claim
        .status
        .as_ref()
        .and_then(|s| s.phase.clone())
        .unwrap_or_default();
    let volume_name = claim
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.clone())
        .unwrap_or_default();
    if phase != "Bound" || volume_name.is_empty() {
        return Err(VolumeError::Claim(format!(
            "error processing PVC {ns}/{claim_name}: PVC {ns}/{claim_name} has non-bound phase ({phase:?}) or empty pvc.Spec.VolumeName ({volume_name:?})"
        )));
    }
    let pv: PersistentVolume = match ctx.client.get("persistentvolumes", None, &volume_name).await {
        Ok(v) => serde_json::from_value(v)
            .map_err(|e| VolumeError::Claim(format!("decoding PV {volume_name:?}: {e}")))?,
        Err(e) => {
            return Err(VolumeError::Claim(format!(
                "error processing PVC {ns}/{claim_name}: failed to fetch PV {volume_name:?} from API server: {e}"
            )))
        }
    };
    let spec = pv.spec.unwrap_or_default();
    let claim_uid = claim.metadata.uid.unwrap_or_default();
    match spec.claim_ref.as_ref().and_then(|r| r.uid.clone()) {
        Some(uid) if uid == claim_uid => {}
        Some(uid) => {
            return Err(VolumeError::Claim(format!(
                "error processing PVC {ns}/{claim_name}: found PV object {volume_name:?} but its ClaimRef UID {uid:?} does not point to the PVC object's UID {claim_uid:?}"
            )))
        }
        None => {
            return Err(VolumeError::Claim(format!(
                "error processing PVC {ns}/{claim_name}: found PV object {volume_name:?} but it has a nil or empty ClaimRef"
            )))
        }
    }
    if let Some(h) = spec.host_path {
        let path = PathBuf::from(&h.path);
        check_type(&path, h.type_.as_deref().unwrap_or_default())?;
        return Ok(path);
    }
    if let Some(l) = spec.local {
        // A local volume is a path the administrator made: it must be there.
        let path = PathBuf::from(&l.path);
        if !path.exists() {
            return Err(VolumeError::Claim(format!(
                "path {:?} does not exist",
                l.path
            )));
        }
        return Ok(path);
    }
    Err(VolumeError::Unsupported)
}

#[async_trait::async_trait]
impl VolumePlugin for ClaimVolume {
    fn plugin_dir(&self) -> Option<&'static str> {
        None
    }

    async fn set_up(&self, ctx: &SetUpContext<'_>, _dir: &Path) -> Result<PathBuf, VolumeError> {
        resolve(ctx, &self.0.claim_name).await
    }

    fn read_only(&self) -> bool {
        self.0.read_only == Some(true)
    }
}
