//! core/v1 PersistentVolume: a piece of storage in the cluster, cluster-scoped, with its
//! phase in `status` (written by the PersistentVolume controller). Validation follows
//! `ValidatePersistentVolume(Update)`. Of the volume sources skiff serves `hostPath` and
//! `local` (both a directory on a node); any other source is refused with a 422 naming
//! it rather than accepted and never attached.

use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1 as core;
use serde_json::{json, Value};

use crate::api::resources::{schema_of, ResourceInfo, Storage};
use crate::api::strategy::{Part, Typed, TypedStrategy};
use crate::api::table;
use crate::api::validation::storage::{self as sv, STORAGE};
use crate::api::validation::FieldError;

pub const RESOURCE: &str = "persistentvolumes";

pub static INFO: ResourceInfo = ResourceInfo {
    group: "",
    version: "v1",
    name: RESOURCE,
    singular: "persistentvolume",
    kind: "PersistentVolume",
    namespaced: false,
    short_names: &["pv"],
    subresources: &["status"],
    has_status_subresource: true,
    field_selectors: &[],
    categories: &[],
    schema: Some(schema_of::<core::PersistentVolume>),
    strategy: &Typed(PersistentVolumeStrategy),
    storage: Storage::Stored,
};

pub const PHASE_PENDING: &str = "Pending";
pub const PHASE_AVAILABLE: &str = "Available";
pub const PHASE_BOUND: &str = "Bound";
pub const PHASE_RELEASED: &str = "Released";
pub const PHASE_FAILED: &str = "Failed";

pub const RECLAIM_DELETE: &str = "Delete";
pub const RECLAIM_RETAIN: &str = "Retain";
pub const RECLAIM_RECYCLE: &str = "Recycle";
const RECLAIM_POLICIES: &[&str] = &[RECLAIM_DELETE, RECLAIM_RECYCLE, RECLAIM_RETAIN];

/// Set on both sides once the controller has completed a binding.
pub const ANN_BIND_COMPLETED: &str = "pv.kubernetes.io/bind-completed";
/// The controller (not a user) made the binding; it may undo it.
pub const ANN_BOUND_BY_CONTROLLER: &str = "pv.kubernetes.io/bound-by-controller";
/// Which provisioner made a PV (so only it deletes it).
pub const ANN_PROVISIONED_BY: &str = "pv.kubernetes.io/provisioned-by";
/// The node a WaitForFirstConsumer claim is to be provisioned on (set by the scheduler).
pub const ANN_SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";
/// The provisioner expected to provision a claim (set by the controller).
pub const ANN_STORAGE_PROVISIONER: &str = "volume.kubernetes.io/storage-provisioner";
pub const ANN_BETA_STORAGE_PROVISIONER: &str = "volume.beta.kubernetes.io/storage-provisioner";
/// Finalizer keeping a PV that a claim is bound to.
pub const PV_PROTECTION_FINALIZER: &str = "kubernetes.io/pv-protection";

const HOST_PATH_TYPES: &[&str] = &[
    "",
    "BlockDevice",
    "CharDevice",
    "Directory",
    "DirectoryOrCreate",
    "File",
    "FileOrCreate",
    "Socket",
];

#[derive(Debug)]
pub struct PersistentVolumeStrategy;

impl TypedStrategy for PersistentVolumeStrategy {
    type Object = core::PersistentVolume;
    const KIND: &'static str = "PersistentVolume";
    const API_VERSION: &'static str = "v1";

    fn has_generation(&self) -> bool {
        false
    }

    fn default(&self, pv: &mut core::PersistentVolume) {
        let spec = pv.spec.get_or_insert_with(Default::default);
        spec.persistent_volume_reclaim_policy
            .get_or_insert_with(|| RECLAIM_RETAIN.into());
        spec.volume_mode.get_or_insert_with(|| "Filesystem".into());
    }

    fn prepare_for_create(&self, pv: &mut core::PersistentVolume) {
        // `PersistentVolumeStrategy.PrepareForCreate`: a new volume starts Pending.
        pv.status = Some(core::PersistentVolumeStatus {
            phase: Some(PHASE_PENDING.into()),
            last_phase_transition_time: Some(crate::runtime::to_time(Utc::now())),
            ..Default::default()
        });
    }

    fn prepare_for_update(
        &self,
        old: &core::PersistentVolume,
        new: &mut core::PersistentVolume,
        part: Part,
    ) {
        // A phase change stamps its time, as kube-apiserver's status strategy does.
        if part == Part::Status {
            let phase =
                |p: &core::PersistentVolume| p.status.as_ref().and_then(|s| s.phase.clone());
            if phase(old) != phase(new) {
                if let Some(s) = new.status.as_mut() {
                    s.last_phase_transition_time = Some(crate::runtime::to_time(Utc::now()));
                }
            }
        }
    }

    fn validate(
        &self,
        pv: &core::PersistentVolume,
        old: Option<&core::PersistentVolume>,
    ) -> Vec<FieldError> {
        let mut errs = Vec::new();
        let spec = pv.spec.clone().unwrap_or_default();
        validate_spec(&spec, &mut errs);
        if let Some(old) = old {
            let old_spec = old.spec.clone().unwrap_or_default();
            if source_of(&spec) != source_of(&old_spec) {
                errs.push(FieldError::forbidden(
                    "spec.persistentvolumesource",
                    "spec.persistentvolumesource is immutable after creation",
                ));
            }
            if spec.volume_mode != old_spec.volume_mode {
                errs.push(FieldError::immutable(
                    "spec.volumeMode",
                    &json!(spec.volume_mode),
                ));
            }
            if old_spec.node_affinity.is_some() && spec.node_affinity != old_spec.node_affinity {
                errs.push(FieldError::immutable(
                    "spec.nodeAffinity",
                    &serde_json::to_value(&spec.node_affinity).unwrap_or(Value::Null),
                ));
            }
        }
        errs
    }

    fn columns(&self) -> Vec<Value> {
        vec![
            table::name_column(0),
            table::column("Capacity", "string", 0, "capacity is the description of the persistent volume's resources and capacity. More info: https://kubernetes.io/docs/concepts/storage/persistent-volumes#capacity"),
            table::column("Access Modes", "string", 0, "accessModes contains all ways the volume can be mounted. More info: https://kubernetes.io/docs/concepts/storage/persistent-volumes#access-modes"),
            table::column("Reclaim Policy", "string", 0, "persistentVolumeReclaimPolicy defines what happens to a persistent volume when released from its claim. Valid options are Retain (default for manually created PersistentVolumes), Delete (default for dynamically provisioned PersistentVolumes), and Recycle (deprecated). Recycle must be supported by the volume plugin underlying this PersistentVolume. More info: https://kubernetes.io/docs/concepts/storage/persistent-volumes#reclaiming"),
            table::column("Status", "string", 0, "phase indicates if a volume is available, bound to a claim, or released by a claim. More info: https://kubernetes.io/docs/concepts/storage/persistent-volumes#phase"),
            table::column("Claim", "string", 0, "claimRef is part of a bi-directional binding between PersistentVolume and PersistentVolumeClaim. Expected to be non-nil when bound. claim.VolumeName is the authoritative bind between PV and PVC. More info: https://kubernetes.io/docs/concepts/storage/persistent-volumes#binding"),
            table::column("StorageClass", "string", 0, "storageClassName is the name of StorageClass to which this persistent volume belongs. Empty value means that this volume does not belong to any StorageClass."),
            table::column("VolumeAttributesClass", "string", 0, "Name of VolumeAttributesClass to which this persistent volume belongs. Empty value is not allowed. When this field is not set, it indicates that this volume does not belong to any VolumeAttributesClass."),
            table::column("Reason", "string", 0, "reason is a brief CamelCase string that describes any failure and is meant for machine parsing and tidy display in the CLI."),
            table::age_column(),
            table::column("VolumeMode", "string", 1, "volumeMode defines if a volume is intended to be used with a formatted filesystem or to remain in raw block state. Value of Filesystem is implied when not included in spec."),
        ]
    }

    fn cells(&self, pv: &core::PersistentVolume, raw: &Value, now: DateTime<Utc>) -> Vec<Value> {
        let spec = pv.spec.clone().unwrap_or_default();
        let status = pv.status.clone().unwrap_or_default();
        let claim = spec
            .claim_ref
            .as_ref()
            .map(|c| {
                format!(
                    "{}/{}",
                    c.namespace.as_deref().unwrap_or_default(),
                    c.name.as_deref().unwrap_or_default()
                )
            })
            .unwrap_or_default();
        vec![
            table::name(raw),
            sv::quantity_text(spec.capacity.as_ref()),
            json!(sv::access_modes_text(spec.access_modes.as_ref())),
            json!(spec.persistent_volume_reclaim_policy.unwrap_or_default()),
            json!(if pv.metadata.deletion_timestamp.is_some() {
                "Terminating".to_string()
            } else {
                status.phase.unwrap_or_default()
            }),
            json!(claim),
            json!(spec.storage_class_name.unwrap_or_default()),
            json!(spec
                .volume_attributes_class_name
                .unwrap_or_else(|| "<unset>".into())),
            json!(status.reason.unwrap_or_default()),
            table::age(raw, now),
            json!(spec.volume_mode.unwrap_or_else(|| "<unset>".into())),
        ]
    }
}

/// The volume source part of a spec (what `spec.persistentvolumesource` names).
fn source_of(spec: &core::PersistentVolumeSpec) -> Value {
    let mut v = serde_json::to_value(spec).unwrap_or(Value::Null);
    if let Some(m) = v.as_object_mut() {
        for k in [
            "accessModes",
            "capacity",
            "claimRef",
            "mountOptions",
            "nodeAffinity",
            "persistentVolumeReclaimPolicy",
            "storageClassName",
            "volumeMode",
            "volumeAttributesClassName",
        ] {
            m.remove(k);
        }
    }
    v
}

/// `ValidatePersistentVolumeSpec`.
fn validate_spec(spec: &core::PersistentVolumeSpec, errs: &mut Vec<FieldError>) {
    sv::validate_access_modes(spec.access_modes.as_ref(), "spec.accessModes", "", errs);
    match &spec.capacity {
        None => errs.push(FieldError::required("spec.capacity")),
        Some(c) if c.is_empty() => errs.push(FieldError::required("spec.capacity")),
        Some(c) => {
            if !c.contains_key(STORAGE) || c.len() > 1 {
                errs.push(FieldError::not_supported(
                    "spec.capacity",
                    &serde_json::to_value(c).unwrap_or(Value::Null),
                    &[STORAGE],
                ));
            }
            for (k, q) in c {
                sv::validate_storage_size(q, &format!("spec.capacity[{k}]"), errs);
            }
        }
    }
    if let Some(p) = &spec.persistent_volume_reclaim_policy {
        if !RECLAIM_POLICIES.contains(&p.as_str()) {
            errs.push(FieldError::not_supported(
                "spec.persistentVolumeReclaimPolicy",
                &json!(p),
                RECLAIM_POLICIES,
            ));
        } else if p == RECLAIM_RECYCLE {
            errs.push(FieldError::forbidden(
                "spec.persistentVolumeReclaimPolicy",
                "Recycle is not supported by this server (it is deprecated in Kubernetes): use Delete or Retain",
            ));
        }
    }
    sv::validate_class_name(
        spec.storage_class_name.as_ref(),
        "spec.storageClassName",
        errs,
    );
    sv::validate_volume_mode(spec.volume_mode.as_ref(), "spec.volumeMode", errs);
    if let Some(a) = &spec.node_affinity {
        match &a.required {
            None => errs.push(FieldError {
                detail: "must specify required node constraints".into(),
                ..FieldError::required("spec.nodeAffinity.required")
            }),
            Some(r) => sv::validate_node_selector(r, "spec.nodeAffinity.required", errs),
        }
    }
    validate_source(spec, errs);
}

/// Exactly one volume source, and only the ones skiff can provide.
fn validate_source(spec: &core::PersistentVolumeSpec, errs: &mut Vec<FieldError>) {
    let source = source_of(spec);
    let given: Vec<&String> = source
        .as_object()
        .map(|m| {
            m.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, _)| k)
                .collect()
        })
        .unwrap_or_default();
    let Some(first) = given.first() else {
        errs.push(FieldError {
            detail: "must specify a volume type".into(),
            ..FieldError::required("spec")
        });
        return;
    };
    for extra in given.iter().skip(1) {
        errs.push(FieldError::forbidden(
            format!("spec.{extra}"),
            "may not specify more than 1 volume type",
        ));
    }
    match first.as_str() {
        "hostPath" => {
            if let Some(h) = &spec.host_path {
                validate_local_path(&h.path, "spec.hostPath.path", errs);
                if let Some(t) = &h.type_ {
                    if !HOST_PATH_TYPES.contains(&t.as_str()) {
                        errs.push(FieldError::not_supported(
                            "spec.hostPath.type",
                            &json!(t),
                            &HOST_PATH_TYPES[1..],
                        ));
                    }
                }
            }
        }
        "local" => {
            if let Some(l) = &spec.local {
                validate_local_path(&l.path, "spec.local.path", errs);
                if l.fs_type.is_some() {
                    errs.push(FieldError::forbidden(
                        "spec.local.fsType",
                        "not supported by this server: local volumes are directories, not block devices to format",
                    ));
                }
            }
            let has_affinity = spec
                .node_affinity
                .as_ref()
                .and_then(|a| a.required.as_ref())
                .is_some();
            if !has_affinity {
                errs.push(FieldError {
                    detail: "Local volume requires node affinity".into(),
                    ..FieldError::required("spec.nodeAffinity")
                });
            }
        }
        other => errs.push(FieldError::forbidden(
            format!("spec.{other}"),
            format!("volume type {other} is not supported by this server: use hostPath or local"),
        )),
    }
}

fn validate_local_path(path: &str, field: &str, errs: &mut Vec<FieldError>) {
    if path.is_empty() {
        errs.push(FieldError::required(field));
        return;
    }
    if path.split('/').any(|part| part == "..") {
        errs.push(FieldError::invalid(
            field,
            &json!(path),
            "must not contain '..'",
        ));
    }
}

/// The PV's `spec.claimRef` as (namespace, name, uid).
pub fn claim_ref(pv: &core::PersistentVolume) -> Option<(String, String, Option<String>)> {
    let c = pv.spec.as_ref()?.claim_ref.as_ref()?;
    Some((
        c.namespace.clone().unwrap_or_default(),
        c.name.clone()?,
        c.uid.clone().filter(|u| !u.is_empty()),
    ))
}

pub fn phase(pv: &core::PersistentVolume) -> &str {
    pv.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or(PHASE_PENDING)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::validation::validate_object;

    fn pv(spec: Value) -> Value {
        let mut v = json!({"apiVersion": "v1", "kind": "PersistentVolume",
            "metadata": {"name": "pv1"}, "spec": spec});
        INFO.strategy.default(&mut v);
        v
    }

    fn messages(obj: &Value, old: Option<&Value>) -> Vec<String> {
        validate_object(&INFO, obj, old)
            .iter()
            .map(FieldError::message)
            .collect()
    }

    fn good() -> Value {
        pv(
            json!({"accessModes": ["ReadWriteOnce"], "capacity": {"storage": "1Gi"},
            "hostPath": {"path": "/srv/data"}}),
        )
    }

    #[test]
    fn a_host_path_volume_is_valid_and_defaults_to_retain() {
        let v = good();
        assert_eq!(v["spec"]["persistentVolumeReclaimPolicy"], "Retain");
        assert_eq!(v["spec"]["volumeMode"], "Filesystem");
        assert!(messages(&v, None).is_empty(), "{:?}", messages(&v, None));
    }

    #[test]
    fn access_modes_capacity_and_a_source_are_required() {
        assert_eq!(
            messages(&pv(json!({})), None),
            [
                "spec.accessModes: Required value",
                "spec.capacity: Required value",
                "spec: Required value: must specify a volume type",
            ]
        );
        let zero = pv(
            json!({"accessModes": ["ReadWriteOnce"], "capacity": {"storage": "0"},
            "hostPath": {"path": "/srv"}}),
        );
        assert_eq!(
            messages(&zero, None),
            ["spec.capacity[storage]: Invalid value: \"0\": must be greater than zero"]
        );
    }

    #[test]
    fn sources_skiff_cannot_provide_are_refused_by_name() {
        let nfs = pv(
            json!({"accessModes": ["ReadWriteMany"], "capacity": {"storage": "1Gi"},
            "nfs": {"server": "10.0.0.1", "path": "/x"}}),
        );
        assert_eq!(
            messages(&nfs, None),
            ["spec.nfs: Forbidden: volume type nfs is not supported by this server: use hostPath or local"]
        );
        let two = pv(
            json!({"accessModes": ["ReadWriteOnce"], "capacity": {"storage": "1Gi"},
            "hostPath": {"path": "/a"}, "local": {"path": "/b"}}),
        );
        assert!(messages(&two, None).contains(
            &"spec.local: Forbidden: may not specify more than 1 volume type".to_string()
        ));
    }

    #[test]
    fn a_local_volume_needs_node_affinity() {
        let l = pv(
            json!({"accessModes": ["ReadWriteOnce"], "capacity": {"storage": "1Gi"},
            "local": {"path": "/mnt/disk"}}),
        );
        assert_eq!(
            messages(&l, None),
            ["spec.nodeAffinity: Required value: Local volume requires node affinity"]
        );
    }

    #[test]
    fn the_source_may_not_change_but_the_capacity_may() {
        let old = good();
        let mut moved = old.clone();
        moved["spec"]["hostPath"]["path"] = json!("/elsewhere");
        assert_eq!(
            messages(&moved, Some(&old)),
            ["spec.persistentvolumesource: Forbidden: spec.persistentvolumesource is immutable after creation"]
        );
        let mut grown = old.clone();
        grown["spec"]["capacity"]["storage"] = json!("2Gi");
        assert!(messages(&grown, Some(&old)).is_empty());
    }

    #[test]
    fn the_row_shows_what_kubectl_get_pv_shows() {
        let mut v = good();
        v["spec"]["claimRef"] = json!({"namespace": "default", "name": "data"});
        v["spec"]["storageClassName"] = json!("local-path");
        v["status"] = json!({"phase": "Bound"});
        let cells = INFO.strategy.cells(&v, Utc::now());
        assert_eq!(cells.len(), INFO.strategy.columns().len());
        assert_eq!(
            &cells[1..9],
            &[
                json!("1Gi"),
                json!("RWO"),
                json!("Retain"),
                json!("Bound"),
                json!("default/data"),
                json!("local-path"),
                json!("<unset>"),
                json!("")
            ]
        );
    }
}
