//! core/v1 PersistentVolumeClaim: a user's request for storage, namespaced, with its
//! phase in `status` (written by the PersistentVolume controller). Validation follows
//! `ValidatePersistentVolumeClaim(Update)`: the spec is fixed once created, except that the
//! controller sets `volumeName` once and a bound claim may ask for more storage (whether its
//! class allows that is the resize admission's question, `gateway::storage`).
//! `dataSource`, `dataSourceRef` and `volumeAttributesClassName` are refused: nothing in
//! skiff clones, restores or modifies volumes.

use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1 as core;
use serde_json::{json, Value};

use crate::api::resources::{schema_of, ResourceInfo, Storage};
use crate::api::selector::LabelSelector;
use crate::api::strategy::{Typed, TypedStrategy};
use crate::api::table;
use crate::api::validation::storage::{self as sv, STORAGE};
use crate::api::validation::FieldError;

pub const RESOURCE: &str = "persistentvolumeclaims";

pub static INFO: ResourceInfo = ResourceInfo {
    group: "",
    version: "v1",
    name: RESOURCE,
    singular: "persistentvolumeclaim",
    kind: "PersistentVolumeClaim",
    namespaced: true,
    short_names: &["pvc"],
    subresources: &["status"],
    has_status_subresource: true,
    field_selectors: &[],
    categories: &[],
    schema: Some(schema_of::<core::PersistentVolumeClaim>),
    strategy: &Typed(PersistentVolumeClaimStrategy),
    storage: Storage::Stored,
};

pub const PHASE_PENDING: &str = "Pending";
pub const PHASE_BOUND: &str = "Bound";
pub const PHASE_LOST: &str = "Lost";
/// Finalizer keeping a claim a pod uses.
pub const PVC_PROTECTION_FINALIZER: &str = "kubernetes.io/pvc-protection";
/// The class annotation older clients still set instead of `spec.storageClassName`.
pub const ANN_BETA_STORAGE_CLASS: &str = "volume.beta.kubernetes.io/storage-class";

#[derive(Debug)]
pub struct PersistentVolumeClaimStrategy;

impl TypedStrategy for PersistentVolumeClaimStrategy {
    type Object = core::PersistentVolumeClaim;
    const KIND: &'static str = "PersistentVolumeClaim";
    const API_VERSION: &'static str = "v1";

    fn has_generation(&self) -> bool {
        false
    }

    fn default(&self, pvc: &mut core::PersistentVolumeClaim) {
        let spec = pvc.spec.get_or_insert_with(Default::default);
        spec.volume_mode.get_or_insert_with(|| "Filesystem".into());
    }

    fn prepare_for_create(&self, pvc: &mut core::PersistentVolumeClaim) {
        pvc.status = Some(core::PersistentVolumeClaimStatus {
            phase: Some(PHASE_PENDING.into()),
            ..Default::default()
        });
    }

    fn validate(
        &self,
        pvc: &core::PersistentVolumeClaim,
        old: Option<&core::PersistentVolumeClaim>,
    ) -> Vec<FieldError> {
        let mut errs = Vec::new();
        let spec = pvc.spec.clone().unwrap_or_default();
        validate_spec(&spec, "spec", &mut errs);
        if let Some(old) = old {
            validate_update(pvc, old, &mut errs);
        }
        errs
    }

    fn columns(&self) -> Vec<Value> {
        vec![
            table::name_column(0),
            table::column("Status", "string", 0, "phase represents the current phase of PersistentVolumeClaim."),
            table::column("Volume", "string", 0, "volumeName is the binding reference to the PersistentVolume backing this claim."),
            table::column("Capacity", "string", 0, "capacity represents the actual resources of the underlying volume."),
            table::column("Access Modes", "string", 0, "accessModes contains the actual access modes the volume backing the PVC has. More info: https://kubernetes.io/docs/concepts/storage/persistent-volumes#access-modes-1"),
            table::column("StorageClass", "string", 0, "storageClassName is the name of the StorageClass required by the claim. More info: https://kubernetes.io/docs/concepts/storage/persistent-volumes#class-1"),
            table::column("VolumeAttributesClass", "string", 0, "volumeAttributesClassName may be used to set the VolumeAttributesClass used by this claim."),
            table::age_column(),
            table::column("VolumeMode", "string", 1, "volumeMode defines what type of volume is required by the claim. Value of Filesystem is implied when not included in claim spec."),
        ]
    }

    fn cells(
        &self,
        pvc: &core::PersistentVolumeClaim,
        raw: &Value,
        now: DateTime<Utc>,
    ) -> Vec<Value> {
        let spec = pvc.spec.clone().unwrap_or_default();
        let status = pvc.status.clone().unwrap_or_default();
        let phase = if pvc.metadata.deletion_timestamp.is_some() {
            "Terminating".to_string()
        } else {
            status.phase.clone().unwrap_or_default()
        };
        let volume = spec.volume_name.clone().unwrap_or_default();
        let (capacity, modes) = if volume.is_empty() {
            (json!(""), String::new())
        } else {
            (
                sv::quantity_text(status.capacity.as_ref()),
                sv::access_modes_text(status.access_modes.as_ref()),
            )
        };
        vec![
            table::name(raw),
            json!(phase),
            json!(volume),
            capacity,
            json!(modes),
            json!(class_of(pvc).unwrap_or_default()),
            json!(spec
                .volume_attributes_class_name
                .unwrap_or_else(|| "<unset>".into())),
            table::age(raw, now),
            json!(spec.volume_mode.unwrap_or_else(|| "<unset>".into())),
        ]
    }
}

/// `ValidatePersistentVolumeClaimSpec`.
pub fn validate_spec(
    spec: &core::PersistentVolumeClaimSpec,
    path: &str,
    errs: &mut Vec<FieldError>,
) {
    sv::validate_access_modes(
        spec.access_modes.as_ref(),
        &format!("{path}.accessModes"),
        "at least 1 access mode is required",
        errs,
    );
    if let Some(sel) = &spec.selector {
        let raw = serde_json::to_value(sel).unwrap_or(Value::Null);
        if let Err(e) = LabelSelector::from_label_selector_value(&raw) {
            errs.push(FieldError::invalid(
                format!("{path}.selector"),
                &raw,
                e.to_string(),
            ));
        }
    }
    let storage_path = format!("{path}.resources[{STORAGE}]");
    match spec
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get(STORAGE))
    {
        None => errs.push(FieldError::required(&storage_path)),
        Some(q) => sv::validate_storage_size(q, &storage_path, errs),
    }
    sv::validate_class_name(
        spec.storage_class_name.as_ref(),
        &format!("{path}.storageClassName"),
        errs,
    );
    sv::validate_volume_mode(
        spec.volume_mode.as_ref(),
        &format!("{path}.volumeMode"),
        errs,
    );
    let unbuilt = [
        (
            "dataSource",
            spec.data_source.is_some(),
            "volume populators and snapshots are not built",
        ),
        (
            "dataSourceRef",
            spec.data_source_ref.is_some(),
            "volume populators and snapshots are not built",
        ),
        (
            "volumeAttributesClassName",
            spec.volume_attributes_class_name.is_some(),
            "VolumeAttributesClasses are not served",
        ),
    ];
    for (field, set, why) in unbuilt {
        if set {
            errs.push(FieldError::forbidden(
                format!("{path}.{field}"),
                format!("not supported by this server: {why}"),
            ));
        }
    }
}

fn validate_update(
    new: &core::PersistentVolumeClaim,
    old: &core::PersistentVolumeClaim,
    errs: &mut Vec<FieldError>,
) {
    let mut new_spec = new.spec.clone().unwrap_or_default();
    let mut old_spec = old.spec.clone().unwrap_or_default();
    // The controller sets volumeName once.
    if old_spec
        .volume_name
        .as_deref()
        .unwrap_or_default()
        .is_empty()
    {
        old_spec.volume_name = new_spec.volume_name.clone();
    }
    let requested = |s: &core::PersistentVolumeClaimSpec| {
        s.resources
            .as_ref()
            .and_then(|r| r.requests.as_ref())
            .and_then(|r| r.get(STORAGE))
            .cloned()
    };
    let (old_size, new_size) = (requested(&old_spec), requested(&new_spec));
    // A bound claim may change its storage request (within what follows).
    if phase(new) == PHASE_BOUND {
        if let (Some(r), Some(q)) = (
            new_spec
                .resources
                .as_mut()
                .and_then(|r| r.requests.as_mut()),
            old_size.clone(),
        ) {
            r.insert(STORAGE.into(), q);
        }
    }
    if new_spec != old_spec {
        errs.push(FieldError::forbidden(
            "spec",
            "spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims",
        ));
    }
    let bytes = |q: &Option<k8s_openapi::apimachinery::pkg::api::resource::Quantity>| {
        q.as_ref().and_then(sv::quantity_bytes)
    };
    if let (Some(o), Some(n)) = (bytes(&old_size), bytes(&new_size)) {
        if n < o {
            errs.push(FieldError::forbidden(
                "spec.resources.requests.storage",
                "field can not be less than previous value",
            ));
        }
    }
}

pub fn phase(pvc: &core::PersistentVolumeClaim) -> &str {
    pvc.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or(PHASE_PENDING)
}

/// `GetPersistentVolumeClaimClass`: the beta annotation, else `spec.storageClassName`;
/// `None` when neither is set (and "" when the claim asks for no class).
pub fn class_of(pvc: &core::PersistentVolumeClaim) -> Option<String> {
    if let Some(c) = pvc
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ANN_BETA_STORAGE_CLASS))
    {
        return Some(c.clone());
    }
    pvc.spec.as_ref()?.storage_class_name.clone()
}

/// The storage a claim requests, in bytes.
pub fn requested_bytes(pvc: &core::PersistentVolumeClaim) -> Option<f64> {
    sv::storage_of(pvc.spec.as_ref()?.resources.as_ref()?.requests.as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::validation::validate_object;

    fn pvc(spec: Value) -> Value {
        let mut v = json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": "data", "namespace": "default"}, "spec": spec});
        INFO.strategy.default(&mut v);
        v
    }

    fn good() -> Value {
        pvc(json!({"accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": "1Gi"}}}))
    }

    fn messages(obj: &Value, old: Option<&Value>) -> Vec<String> {
        validate_object(&INFO, obj, old)
            .iter()
            .map(FieldError::message)
            .collect()
    }

    #[test]
    fn a_claim_needs_access_modes_and_a_storage_request() {
        assert!(messages(&good(), None).is_empty());
        assert_eq!(
            messages(&pvc(json!({})), None),
            [
                "spec.accessModes: Required value: at least 1 access mode is required",
                "spec.resources[storage]: Required value",
            ]
        );
    }

    #[test]
    fn what_is_not_built_is_refused() {
        let mut v = good();
        v["spec"]["dataSource"] =
            json!({"kind": "VolumeSnapshot", "name": "s", "apiGroup": "snapshot.storage.k8s.io"});
        assert_eq!(
            messages(&v, None),
            ["spec.dataSource: Forbidden: not supported by this server: volume populators and snapshots are not built"]
        );
    }

    #[test]
    fn the_spec_is_fixed_except_volume_name_once_and_a_bound_claims_request() {
        let old = good();
        let mut named = old.clone();
        named["spec"]["volumeName"] = json!("pv1");
        assert!(messages(&named, Some(&old)).is_empty());
        let mut renamed = named.clone();
        renamed["spec"]["volumeName"] = json!("pv2");
        assert_eq!(
            messages(&renamed, Some(&named)),
            ["spec: Forbidden: spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims"]
        );
        let mut grown = named.clone();
        grown["spec"]["resources"]["requests"]["storage"] = json!("2Gi");
        assert_eq!(
            messages(&grown, Some(&named)).len(),
            1,
            "pending: immutable"
        );
        grown["status"] = json!({"phase": "Bound"});
        assert!(messages(&grown, Some(&named)).is_empty());
        let mut shrunk = grown.clone();
        shrunk["spec"]["resources"]["requests"]["storage"] = json!("1Mi");
        assert_eq!(
            messages(&shrunk, Some(&grown)),
            ["spec.resources.requests.storage: Forbidden: field can not be less than previous value"]
        );
    }

    #[test]
    fn the_row_shows_capacity_and_modes_only_once_bound() {
        let mut v = good();
        v["spec"]["storageClassName"] = json!("local-path");
        // As created: the phase is Pending from the start.
        v["status"] = json!({"phase": "Pending"});
        let cells = INFO.strategy.cells(&v, Utc::now());
        assert_eq!(cells.len(), INFO.strategy.columns().len());
        assert_eq!(
            &cells[1..6],
            &[
                json!("Pending"),
                json!(""),
                json!(""),
                json!(""),
                json!("local-path")
            ]
        );
        v["spec"]["volumeName"] = json!("pvc-1");
        v["status"] = json!({"phase": "Bound", "capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"]});
        let cells = INFO.strategy.cells(&v, Utc::now());
        assert_eq!(
            &cells[1..5],
            &[json!("Bound"), json!("pvc-1"), json!("1Gi"), json!("RWO")]
        );
    }
}
