//! The storage admission plugins of kube-apiserver:
//!
//! - `DefaultStorageClass`: a claim created without `spec.storageClassName` (and without
//!   the beta annotation) gets the default class, the newest if several are marked;
//! - `StorageObjectInUseProtection`: new claims and volumes get the
//!   `kubernetes.io/pvc-protection` / `kubernetes.io/pv-protection` finalizers, which the
//!   storage-protection controller removes once nothing uses them;
//! - `PersistentVolumeClaimResize`: a claim may ask for more storage only if its class
//!   allows volume expansion.

use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::storage::v1 as storage;
use serde_json::{json, Value};

use crate::api::kinds::persistent_volume::{self, PV_PROTECTION_FINALIZER};
use crate::api::kinds::persistent_volume_claim::{self as pvc_kind, PVC_PROTECTION_FINALIZER};
use crate::api::kinds::storage_class;
use crate::api::resources::{object_key, prefix};
use crate::api::strategy::typed;
use crate::api::{meta, ApiError};
use crate::store::StoreHandle;

/// Admission on create of an object of `resource`.
pub fn admit_create(store: &StoreHandle, resource: &str, obj: &mut Value) -> Result<(), ApiError> {
    match resource {
        pvc_kind::RESOURCE => {
            default_class(store, obj);
            add_finalizer(obj, PVC_PROTECTION_FINALIZER);
        }
        persistent_volume::RESOURCE => add_finalizer(obj, PV_PROTECTION_FINALIZER),
        _ => {}
    }
    Ok(())
}

/// Admission on update.
pub fn admit_update(
    store: &StoreHandle,
    resource: &str,
    old: &Value,
    new: &Value,
) -> Result<(), ApiError> {
    if resource != pvc_kind::RESOURCE {
        return Ok(());
    }
    let (Some(old_claim), Some(new_claim)) = (
        typed::<core::PersistentVolumeClaim>(old),
        typed::<core::PersistentVolumeClaim>(new),
    ) else {
        return Ok(());
    };
    let grows = matches!(
        (pvc_kind::requested_bytes(&old_claim), pvc_kind::requested_bytes(&new_claim)),
        (Some(o), Some(n)) if n > o
    );
    if !grows {
        return Ok(());
    }
    let expandable = pvc_kind::class_of(&new_claim)
        .filter(|c| !c.is_empty())
        .and_then(|c| store.get(&object_key(storage_class::RESOURCE, None, &c)))
        .and_then(|o| typed::<storage::StorageClass>(&o.value))
        .is_some_and(|c| c.allow_volume_expansion == Some(true));
    if expandable {
        return Ok(());
    }
    Err(ApiError::Forbidden(format!(
        "persistentvolumeclaims \"{}\" is forbidden: only dynamically provisioned pvc can be resized and the storageclass that provisions the pvc must support resize",
        meta::name(new).unwrap_or_default()
    )))
}

/// `DefaultStorageClass`: fill in the default class when the claim names none (an empty
/// name asks for no class and is kept).
fn default_class(store: &StoreHandle, obj: &mut Value) {
    let named = obj
        .pointer("/spec/storageClassName")
        .is_some_and(|v| !v.is_null())
        || obj
            .pointer("/metadata/annotations")
            .and_then(|a| a.get(pvc_kind::ANN_BETA_STORAGE_CLASS))
            .is_some();
    if named {
        return;
    }
    let Some(name) = default_class_name(store) else {
        return;
    };
    if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
        spec.insert("storageClassName".into(), json!(name));
    }
}

/// The default class: the newest of those marked default (then by name, so the choice
/// is stable), as `GetDefaultClass` picks it.
pub fn default_class_name(store: &StoreHandle) -> Option<String> {
    let mut defaults: Vec<storage::StorageClass> = store
        .list(&prefix(storage_class::RESOURCE, None))
        .0
        .into_iter()
        .filter_map(|(_, o)| typed::<storage::StorageClass>(&o.value))
        .filter(storage_class::is_default)
        .collect();
    defaults.sort_by(|a, b| {
        let created = |c: &storage::StorageClass| c.metadata.creation_timestamp.clone();
        created(b)
            .cmp(&created(a))
            .then_with(|| a.metadata.name.cmp(&b.metadata.name))
    });
    defaults.into_iter().next().and_then(|c| c.metadata.name)
}

fn add_finalizer(obj: &mut Value, finalizer: &str) {
    let metadata = meta::metadata_mut(obj);
    let list = metadata.entry("finalizers").or_insert_with(|| json!([]));
    if let Some(list) = list.as_array_mut() {
        if !list.iter().any(|f| f == finalizer) {
            list.push(json!(finalizer));
        }
    }
}
