//! ControllerRef adopt/release for any owned resource (Kubernetes'
//! `ControllerRefManager`): an owner keeps what it controls and still selects, adopts
//! matching orphans, and lets go of what it controls but no longer selects. The
//! DaemonSet and StatefulSet controllers claim their pods and their ControllerRevisions
//! with it.

use std::sync::Arc;

use serde_json::{json, Value};

use super::pods::{self, controller_ref};
use crate::api::selector::LabelSelector;
use crate::api::{meta, ApiError};
use crate::client::PatchType;
use crate::runtime::{Context, ReconcileError};

/// The controller reference an owner of `kind` (apiVersion `api_version`) puts on what
/// it makes.
pub fn owner_ref(api_version: &str, kind: &str, owner: &Value) -> Value {
    json!({
        "apiVersion": api_version,
        "kind": kind,
        "name": meta::name(owner),
        "uid": meta::uid(owner),
        "controller": true,
        "blockOwnerDeletion": true,
    })
}

/// Whether `obj` is controlled by `owner` (by uid).
pub fn controlled_by(obj: &Value, owner: &Value) -> bool {
    controller_ref(obj)
        .and_then(|r| r.get("uid"))
        .and_then(Value::as_str)
        .is_some_and(|u| Some(u) == meta::uid(owner))
}

/// The namespace/name key of the owner of `kind` controlling `obj`, if any.
pub fn owner_key(obj: &Value, kind: &str) -> Option<String> {
    let r = controller_ref(obj)?;
    if r.get("kind").and_then(Value::as_str) != Some(kind) {
        return None;
    }
    let ns = meta::namespace(obj).unwrap_or_default();
    Some(format!(
        "{ns}/{}",
        r.get("name").and_then(Value::as_str).unwrap_or_default()
    ))
}

/// Claim `candidates` of `resource` for `owner`: what it controls and selects is kept,
/// matching orphans are adopted (not while the owner is being deleted), and what it
/// controls but no longer selects is released.
pub async fn claim(
    ctx: &Context,
    resource: &str,
    owner: &Value,
    reference: &Value,
    selector: &LabelSelector,
    candidates: Vec<Arc<Value>>,
) -> Result<Vec<Arc<Value>>, ReconcileError> {
    let deleting_owner = pods::is_deleting(owner);
    let mut out = Vec::new();
    for obj in candidates {
        let matches = selector.matches_object(&obj);
        if controlled_by(&obj, owner) {
            if matches {
                out.push(obj);
            } else if !deleting_owner {
                release(ctx, resource, owner, &obj).await?;
            }
        } else if matches
            && controller_ref(&obj).is_none()
            && !pods::is_deleting(&obj)
            && !deleting_owner
            && adopt(ctx, resource, reference, &obj).await?
        {
            out.push(obj);
        }
    }
    Ok(out)
}

/// Put the owner's reference on an orphan; false when someone else got there first.
async fn adopt(
    ctx: &Context,
    resource: &str,
    reference: &Value,
    obj: &Value,
) -> Result<bool, ReconcileError> {
    let ns = meta::namespace(obj);
    let name = meta::name(obj).unwrap_or_default();
    // The resourceVersion makes it a compare-and-swap: an orphan that changed meanwhile
    // (maybe adopted by another owner) is looked at again on its next event.
    let patch = json!({"metadata": {"ownerReferences": [reference],
        "resourceVersion": meta::resource_version(obj)}});
    match ctx
        .client
        .patch(resource, ns, name, None, PatchType::Strategic, patch)
        .await
    {
        Ok(_) => Ok(true),
        Err(ApiError::Conflict { .. }) | Err(ApiError::NotFound { .. }) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Drop the owner's reference from something it no longer selects.
async fn release(
    ctx: &Context,
    resource: &str,
    owner: &Value,
    obj: &Value,
) -> Result<(), ReconcileError> {
    let ns = meta::namespace(obj);
    let name = meta::name(obj).unwrap_or_default();
    let patch = json!({"metadata": {
        "ownerReferences": [{"$patch": "delete", "uid": meta::uid(owner)}],
        "uid": meta::uid(obj)}});
    match ctx
        .client
        .patch(resource, ns, name, None, PatchType::Strategic, patch)
        .await
    {
        Ok(_) | Err(ApiError::NotFound { .. }) | Err(ApiError::Conflict { .. }) => Ok(()),
        Err(e) => Err(e.into()),
    }
}
