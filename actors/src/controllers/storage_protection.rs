//! The PVC and PV protection controllers (`pkg/controller/volume/pvcprotection`,
//! `pvprotection`) in one loop: the storage admission gives every claim the
//! `kubernetes.io/pvc-protection` finalizer and every volume `kubernetes.io/pv-protection`;
//! this removes them once the object is being deleted and nothing uses it: a claim no pod
//! that can still run names in its volumes, a volume no claim is bound to. So `kubectl
//! delete pvc` on a claim in use leaves it `Terminating` until its pods are gone.
//!
//! Keys are claims (`namespace/name`) and volumes (`name`, no slash).

use k8s_openapi::api::core::v1 as core;
use serde_json::{json, Value};

use super::pods;
use crate::api::kinds::persistent_volume::{self as pv_kind, PV_PROTECTION_FINALIZER};
use crate::api::kinds::persistent_volume_claim::{self as pvc_kind, PVC_PROTECTION_FINALIZER};
use crate::api::strategy::typed;
use crate::api::ApiError;
use crate::runtime::{
    key_of, split_key, Action, Change, Context, InformerSpec, ReconcileError, Reconciler,
};

const CLAIMS: &str = pvc_kind::RESOURCE;
const VOLUMES: &str = pv_kind::RESOURCE;

/// The claims a pod's volumes name.
pub fn claims_of(pod: &Value) -> Vec<String> {
    pod.pointer("/spec/volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|v| {
            v.pointer("/persistentVolumeClaim/claimName")
                .and_then(Value::as_str)
        })
        .map(str::to_string)
        .collect()
}

/// `podUsesPVC`: a pod that has not finished and names the claim keeps it.
fn in_use(ctx: &Context, ns: &str, claim: &str) -> bool {
    ctx.cache("pods")
        .list_namespace(ns)
        .iter()
        .any(|p| !pods::is_terminated(p) && claims_of(p).iter().any(|c| c == claim))
}

#[derive(Default)]
pub struct StorageProtectionController;

#[async_trait::async_trait]
impl Reconciler for StorageProtectionController {
    fn name(&self) -> &'static str {
        "storage-protection-controller"
    }

    fn informers(&self) -> Vec<InformerSpec> {
        vec![
            InformerSpec::all(CLAIMS),
            InformerSpec::all(VOLUMES),
            InformerSpec::all("pods"),
        ]
    }

    fn keys_for(&self, resource: &str, change: &Change, _ctx: &Context) -> Vec<String> {
        let obj = &change.object;
        match resource {
            "pods" => {
                let ns = obj
                    .pointer("/metadata/namespace")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                claims_of(obj)
                    .into_iter()
                    .map(|c| format!("{ns}/{c}"))
                    .collect()
            }
            _ => vec![key_of(obj)],
        }
    }

    async fn reconcile(&self, key: &str, ctx: &Context) -> Result<Action, ReconcileError> {
        let (ns, name) = split_key(key);
        match ns {
            Some(ns) => {
                let Some(raw) = ctx.cache(CLAIMS).get(key) else {
                    return Ok(Action::Done);
                };
                let Some(claim) = typed::<core::PersistentVolumeClaim>(&raw) else {
                    return Ok(Action::Done);
                };
                if claim.metadata.deletion_timestamp.is_none()
                    || !has(&claim.metadata, PVC_PROTECTION_FINALIZER)
                    || in_use(ctx, ns, name)
                {
                    return Ok(Action::Done);
                }
                remove_finalizer(ctx, CLAIMS, Some(ns), &raw, PVC_PROTECTION_FINALIZER).await
            }
            None => {
                let Some(raw) = ctx.cache(VOLUMES).get(name) else {
                    return Ok(Action::Done);
                };
                let Some(volume) = typed::<core::PersistentVolume>(&raw) else {
                    return Ok(Action::Done);
                };
                if volume.metadata.deletion_timestamp.is_none()
                    || !has(&volume.metadata, PV_PROTECTION_FINALIZER)
                    || pv_kind::phase(&volume) == pv_kind::PHASE_BOUND
                {
                    return Ok(Action::Done);
                }
                remove_finalizer(ctx, VOLUMES, None, &raw, PV_PROTECTION_FINALIZER).await
            }
        }
    }
}

fn has(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta, finalizer: &str) -> bool {
    meta.finalizers.iter().flatten().any(|f| f == finalizer)
}

/// Drop one finalizer, conditional on the version read (a conflict is retried with a
/// fresh cache).
async fn remove_finalizer(
    ctx: &Context,
    resource: &str,
    ns: Option<&str>,
    raw: &Value,
    finalizer: &str,
) -> Result<Action, ReconcileError> {
    let mut obj = raw.clone();
    let kept: Vec<Value> = obj
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|f| f.as_str() != Some(finalizer))
        .cloned()
        .collect();
    obj["metadata"]["finalizers"] = json!(kept);
    let name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    match ctx.client.update(resource, ns, &name, None, obj).await {
        Ok(_) | Err(ApiError::NotFound { .. }) => {
            tracing::debug!(resource, name = %name, finalizer, "protection finalizer removed");
            Ok(Action::Done)
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pods_claims_are_read_from_its_volumes() {
        let pod = json!({"spec": {"volumes": [
            {"name": "a", "persistentVolumeClaim": {"claimName": "data"}},
            {"name": "b", "emptyDir": {}},
            {"name": "c", "persistentVolumeClaim": {"claimName": "logs"}}]}});
        assert_eq!(claims_of(&pod), ["data", "logs"]);
        assert!(claims_of(&json!({"spec": {}})).is_empty());
    }
}
