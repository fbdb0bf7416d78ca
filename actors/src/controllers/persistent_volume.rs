//! The PersistentVolume controller's binder, as `pkg/controller/volume/persistentvolume`:
//! claims are bound to the smallest Available volume of their class that has their access
//! modes, volume mode, capacity and selector (a volume pre-bound to a claim by its
//! `claimRef`, or a claim naming a volume in `volumeName`, is taken first), both sides
//! carrying the binding (`claimRef` and `volumeName`, `pv.kubernetes.io/bind-completed`,
//! `pv.kubernetes.io/bound-by-controller`) and their phases (claims Pending, Bound, Lost;
//! volumes Available, Bound, Released, Failed). A claim of a `WaitForFirstConsumer` class
//! waits for the scheduler to pick a node (`volume.kubernetes.io/selected-node`) or to
//! pre-bind a volume on it; a claim no volume fits whose class has a provisioner is handed
//! to it (`volume.kubernetes.io/storage-provisioner`). When a claim goes, its volume is
//! Released: Retain keeps it so; Delete leaves a provisioned volume to its provisioner and
//! fails any other (nothing in skiff can delete a volume it did not make).
//!
//! A bound claim that asks for more storage than it has, in a class that allows expansion,
//! is grown at once when its volume is a directory (hostPath or local), which has no size
//! to grow: the volume's capacity and the claim's status follow the request.
//!
//! Keys are claims (`namespace/name`) and volumes (`name`, no slash).

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::storage::v1 as storage;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use serde_json::{json, Value};

use crate::api::kinds::persistent_volume::{
    self as pv_kind, ANN_BETA_STORAGE_PROVISIONER, ANN_BIND_COMPLETED, ANN_BOUND_BY_CONTROLLER,
    ANN_PROVISIONED_BY, ANN_SELECTED_NODE, ANN_STORAGE_PROVISIONER,
};
use crate::api::kinds::persistent_volume_claim as pvc_kind;
use crate::api::kinds::storage_class::{self, NO_PROVISIONER};
use crate::api::selector::LabelSelector;
use crate::api::strategy::typed;
use crate::api::validation::storage::{quantity_bytes, storage_of, STORAGE};
use crate::api::ApiError;
use crate::client::PatchType;
use crate::runtime::{
    key_of, split_key, Action, Change, Context, InformerSpec, ReconcileError, Reconciler,
};

const CLAIMS: &str = pvc_kind::RESOURCE;
const VOLUMES: &str = pv_kind::RESOURCE;
const CLASSES: &str = storage_class::RESOURCE;

/// Whether the volume fits the claim, ignoring binding state and node: class, access
/// modes, volume mode, size and selector (`checkVolumeSatisfyClaim` plus the selector).
pub fn satisfies(volume: &core::PersistentVolume, claim: &core::PersistentVolumeClaim) -> bool {
    let (Some(vs), Some(cs)) = (volume.spec.as_ref(), claim.spec.as_ref()) else {
        return false;
    };
    let class = pvc_kind::class_of(claim).unwrap_or_default();
    if vs.storage_class_name.clone().unwrap_or_default() != class {
        return false;
    }
    let have = vs.access_modes.clone().unwrap_or_default();
    if !cs.access_modes.iter().flatten().all(|m| have.contains(m)) {
        return false;
    }
    let mode = |m: &Option<String>| m.clone().unwrap_or_else(|| "Filesystem".into());
    if mode(&vs.volume_mode) != mode(&cs.volume_mode) {
        return false;
    }
    match (
        storage_of(vs.capacity.as_ref()),
        pvc_kind::requested_bytes(claim),
    ) {
        (Some(cap), Some(req)) if cap >= req => {}
        _ => return false,
    }
    if let Some(sel) = &cs.selector {
        let raw = serde_json::to_value(sel).unwrap_or(Value::Null);
        let Ok(sel) = LabelSelector::from_label_selector_value(&raw) else {
            return false;
        };
        let labels: BTreeMap<String, String> = volume.metadata.labels.clone().unwrap_or_default();
        if !sel.matches(&labels) {
            return false;
        }
    }
    true
}

/// Whether the volume's `claimRef` names this claim (and, when it has a uid, this very
/// claim rather than an earlier one of the same name).
pub fn bound_to(volume: &core::PersistentVolume, claim: &core::PersistentVolumeClaim) -> bool {
    let Some((ns, name, uid)) = pv_kind::claim_ref(volume) else {
        return false;
    };
    Some(ns.as_str()) == claim.metadata.namespace.as_deref()
        && Some(name.as_str()) == claim.metadata.name.as_deref()
        && uid.is_none_or(|u| Some(u.as_str()) == claim.metadata.uid.as_deref())
}

/// `findBestMatchForClaim`: a volume pre-bound to the claim if one fits, else (unless
/// binding waits for a consumer) the smallest free volume that fits. `on_node` says
/// whether a volume's node affinity allows the node being considered (always true for
/// the controller, which does not place pods).
pub fn find_best_match<'a>(
    claim: &core::PersistentVolumeClaim,
    volumes: impl IntoIterator<Item = &'a core::PersistentVolume>,
    delay_binding: bool,
    on_node: impl Fn(&core::PersistentVolume) -> bool,
) -> Option<&'a core::PersistentVolume> {
    let mut best: Option<(&core::PersistentVolume, f64)> = None;
    for v in volumes {
        if v.metadata.deletion_timestamp.is_some() || !satisfies(v, claim) || !on_node(v) {
            continue;
        }
        if bound_to(v, claim) {
            return Some(v);
        }
        let free = pv_kind::claim_ref(v).is_none()
            && matches!(
                pv_kind::phase(v),
                pv_kind::PHASE_AVAILABLE | pv_kind::PHASE_PENDING
            );
        if delay_binding || !free {
            continue;
        }
        let size = storage_of(v.spec.as_ref().and_then(|s| s.capacity.as_ref())).unwrap_or(0.0);
        if best.is_none_or(|(_, s)| size < s) {
            best = Some((v, size));
        }
    }
    best.map(|(v, _)| v)
}

fn annotation<'a>(
    meta: &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    key: &str,
) -> Option<&'a str> {
    meta.annotations.as_ref()?.get(key).map(String::as_str)
}

fn set_annotation(
    meta: &mut k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    key: &str,
    value: &str,
) {
    meta.annotations
        .get_or_insert_with(Default::default)
        .insert(key.into(), value.into());
}

#[derive(Default)]
pub struct PersistentVolumeController;

#[async_trait::async_trait]
impl Reconciler for PersistentVolumeController {
    fn name(&self) -> &'static str {
        "persistentvolume-controller"
    }

    fn informers(&self) -> Vec<InformerSpec> {
        vec![
            InformerSpec::all(CLAIMS),
            InformerSpec::all(VOLUMES),
            InformerSpec::all(CLASSES),
        ]
    }

    fn keys_for(&self, resource: &str, change: &Change, ctx: &Context) -> Vec<String> {
        let obj = &change.object;
        match resource {
            CLAIMS => {
                // The claim, and the volume it names (which may be Released now).
                let mut keys = vec![key_of(obj)];
                if let Some(v) = obj.pointer("/spec/volumeName").and_then(Value::as_str) {
                    keys.push(v.to_string());
                }
                keys.extend(
                    ctx.cache(VOLUMES)
                        .list()
                        .iter()
                        .filter(|v| {
                            v.pointer("/spec/claimRef/name") == obj.pointer("/metadata/name")
                                && v.pointer("/spec/claimRef/namespace")
                                    == obj.pointer("/metadata/namespace")
                        })
                        .map(|v| key_of(v)),
                );
                keys
            }
            VOLUMES => {
                let mut keys = vec![key_of(obj)];
                if let (Some(ns), Some(name)) = (
                    obj.pointer("/spec/claimRef/namespace")
                        .and_then(Value::as_str),
                    obj.pointer("/spec/claimRef/name").and_then(Value::as_str),
                ) {
                    keys.push(format!("{ns}/{name}"));
                }
                // A volume that became free may be what a pending claim waits for.
                if obj.pointer("/spec/claimRef").is_none_or(Value::is_null) {
                    keys.extend(pending_claims(ctx));
                }
                keys
            }
            // A class appearing or changing concerns the claims still waiting.
            _ => pending_claims(ctx),
        }
    }

    async fn reconcile(&self, key: &str, ctx: &Context) -> Result<Action, ReconcileError> {
        if key.contains('/') {
            self.sync_claim(key, ctx).await
        } else {
            self.sync_volume(key, ctx).await
        }
    }
}

fn pending_claims(ctx: &Context) -> Vec<String> {
    ctx.cache(CLAIMS)
        .list()
        .iter()
        .filter(|c| {
            c.pointer("/status/phase").and_then(Value::as_str) != Some(pvc_kind::PHASE_BOUND)
        })
        .map(|c| key_of(c))
        .collect()
}

fn volumes(ctx: &Context) -> Vec<core::PersistentVolume> {
    ctx.cache(VOLUMES)
        .list()
        .iter()
        .filter_map(|v| typed::<core::PersistentVolume>(v))
        .collect()
}

fn class(ctx: &Context, name: &str) -> Option<storage::StorageClass> {
    ctx.cache(CLASSES).get(name).and_then(|c| typed(&c))
}

fn to_value<T: serde::Serialize>(obj: &T, api_version: &str, kind: &str) -> Value {
    let mut v = serde_json::to_value(obj).unwrap_or_else(|_| json!({}));
    v["apiVersion"] = json!(api_version);
    v["kind"] = json!(kind);
    v
}

impl PersistentVolumeController {
    async fn sync_claim(&self, key: &str, ctx: &Context) -> Result<Action, ReconcileError> {
        let Some(raw) = ctx.cache(CLAIMS).get(key) else {
            return Ok(Action::Done);
        };
        let Some(claim) = typed::<core::PersistentVolumeClaim>(&raw) else {
            return Ok(Action::Done);
        };
        if claim.metadata.deletion_timestamp.is_some() {
            return Ok(Action::Done);
        }
        let volume_name = claim
            .spec
            .as_ref()
            .and_then(|s| s.volume_name.clone())
            .unwrap_or_default();
        if volume_name.is_empty() {
            return self.sync_unbound_claim(&raw, claim, ctx).await;
        }
        let Some(volume) = ctx
            .cache(VOLUMES)
            .get(&volume_name)
            .and_then(|v| typed::<core::PersistentVolume>(&v))
        else {
            if annotation(&claim.metadata, ANN_BIND_COMPLETED).is_some() {
                if pvc_kind::phase(&claim) != pvc_kind::PHASE_LOST {
                    ctx.recorder
                        .warning(&raw, "ClaimLost", "Bound claim has lost reference to PersistentVolume. Data on the volume is lost!")
                        .await;
                    self.claim_phase(ctx, claim, pvc_kind::PHASE_LOST, None)
                        .await?;
                }
            } else if pvc_kind::phase(&claim) != pvc_kind::PHASE_PENDING {
                self.claim_phase(ctx, claim, pvc_kind::PHASE_PENDING, None)
                    .await?;
            }
            return Ok(Action::Done);
        };
        match pv_kind::claim_ref(&volume) {
            None => {
                // The user pre-bound the claim to this volume: bind the volume to it.
                if satisfies(&volume, &claim) {
                    self.bind(ctx, volume, claim).await?;
                } else {
                    let msg = format!("Cannot bind to requested volume \"{volume_name}\": requested PV is too small, or its class or access modes do not match");
                    ctx.recorder.warning(&raw, "VolumeMismatch", &msg).await;
                }
            }
            Some(_) if bound_to(&volume, &claim) => {
                self.bind(ctx, volume.clone(), claim.clone()).await?;
                self.expand_if_asked(ctx, &volume, &claim).await?;
            }
            Some(_) => {
                if annotation(&claim.metadata, ANN_BIND_COMPLETED).is_some() {
                    // It was bound and its volume now belongs to another claim.
                    if pvc_kind::phase(&claim) != pvc_kind::PHASE_LOST {
                        ctx.recorder
                            .warning(&raw, "ClaimMisbound", "Two claims are bound to the same volume, this one is bound incorrectly")
                            .await;
                        self.claim_phase(ctx, claim, pvc_kind::PHASE_LOST, None)
                            .await?;
                    }
                } else {
                    let msg =
                        format!("volume \"{volume_name}\" already bound to a different claim.");
                    ctx.recorder.warning(&raw, "FailedBinding", &msg).await;
                }
            }
        }
        Ok(Action::Done)
    }

    async fn sync_unbound_claim(
        &self,
        raw: &Value,
        claim: core::PersistentVolumeClaim,
        ctx: &Context,
    ) -> Result<Action, ReconcileError> {
        let class_name = pvc_kind::class_of(&claim).unwrap_or_default();
        let class = (!class_name.is_empty())
            .then(|| class(ctx, &class_name))
            .flatten();
        let delay = class.as_ref().is_some_and(|c| {
            storage_class::binding_mode(c) == storage_class::WAIT_FOR_FIRST_CONSUMER
        });
        let all = volumes(ctx);
        if let Some(volume) = find_best_match(&claim, &all, delay, |_| true) {
            self.bind(ctx, volume.clone(), claim).await?;
            return Ok(Action::Done);
        }
        let selected = annotation(&claim.metadata, ANN_SELECTED_NODE).is_some();
        if delay && !selected {
            ctx.recorder
                .normal(
                    raw,
                    "WaitForFirstConsumer",
                    "waiting for first consumer to be created before binding",
                )
                .await;
            return Ok(Action::Done);
        }
        match class.as_ref().map(|c| c.provisioner.as_str()) {
            Some(p) if p != NO_PROVISIONER => {
                if annotation(&claim.metadata, ANN_STORAGE_PROVISIONER) != Some(p) {
                    let mut claim = claim.clone();
                    set_annotation(&mut claim.metadata, ANN_STORAGE_PROVISIONER, p);
                    set_annotation(&mut claim.metadata, ANN_BETA_STORAGE_PROVISIONER, p);
                    self.update_claim(ctx, &claim).await?;
                }
                let msg = format!("Waiting for a volume to be created either by the external provisioner '{p}' or manually by the system administrator. If volume creation is delayed, please verify that the provisioner is running and correctly registered.");
                ctx.recorder.normal(raw, "ExternalProvisioning", &msg).await;
            }
            _ if class_name.is_empty() => {
                ctx.recorder
                    .normal(raw, "FailedBinding", "no persistent volumes available for this claim and no storage class is set")
                    .await;
            }
            _ if class.is_none() => {
                let msg = format!("storageclass.storage.k8s.io \"{class_name}\" not found");
                ctx.recorder.warning(raw, "ProvisioningFailed", &msg).await;
            }
            _ => {
                ctx.recorder
                    .normal(raw, "FailedBinding", "no persistent volumes available for this claim and no storage class is set")
                    .await;
            }
        }
        Ok(Action::Done)
    }

    /// `bind`: the volume's claimRef, the volume Bound, the claim's volumeName and
    /// annotations, the claim Bound with the volume's capacity and modes. Each step is
    /// skipped when already done; each write is conditional on the version read.
    async fn bind(
        &self,
        ctx: &Context,
        mut volume: core::PersistentVolume,
        mut claim: core::PersistentVolumeClaim,
    ) -> Result<(), ReconcileError> {
        let claim_name = claim.metadata.name.clone().unwrap_or_default();
        let ns = claim.metadata.namespace.clone().unwrap_or_default();
        let volume_name = volume.metadata.name.clone().unwrap_or_default();
        let full_ref = pv_kind::claim_ref(&volume).is_some_and(|(_, _, uid)| uid.is_some());
        if !full_ref {
            let spec = volume.spec.get_or_insert_with(Default::default);
            let by_controller = spec.claim_ref.is_none();
            spec.claim_ref = Some(core::ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("PersistentVolumeClaim".into()),
                namespace: Some(ns.clone()),
                name: Some(claim_name.clone()),
                uid: claim.metadata.uid.clone(),
                resource_version: claim.metadata.resource_version.clone(),
                ..Default::default()
            });
            if by_controller {
                set_annotation(&mut volume.metadata, ANN_BOUND_BY_CONTROLLER, "yes");
            }
            let written = ctx
                .client
                .update(
                    VOLUMES,
                    None,
                    &volume_name,
                    None,
                    to_value(&volume, "v1", "PersistentVolume"),
                )
                .await?;
            volume = typed(&written).unwrap_or(volume);
        }
        if pv_kind::phase(&volume) != pv_kind::PHASE_BOUND {
            self.volume_phase(ctx, volume.clone(), pv_kind::PHASE_BOUND, None)
                .await?;
        }
        let spec = claim.spec.get_or_insert_with(Default::default);
        let named = spec.volume_name.as_deref() == Some(volume_name.as_str());
        if !named || annotation(&claim.metadata, ANN_BIND_COMPLETED).is_none() {
            if !named {
                spec.volume_name = Some(volume_name.clone());
                set_annotation(&mut claim.metadata, ANN_BOUND_BY_CONTROLLER, "yes");
            }
            set_annotation(&mut claim.metadata, ANN_BIND_COMPLETED, "yes");
            claim = self.update_claim(ctx, &claim).await?;
        }
        let vspec = volume.spec.clone().unwrap_or_default();
        let status = claim.status.clone().unwrap_or_default();
        let capacity = vspec.capacity.clone();
        let stale = pvc_kind::phase(&claim) != pvc_kind::PHASE_BOUND
            || status.capacity != capacity
            || status.access_modes != vspec.access_modes;
        if stale
            && self
                .claim_phase(ctx, claim, pvc_kind::PHASE_BOUND, Some(&vspec))
                .await?
                .is_some()
        {
            tracing::info!(claim = %format!("{ns}/{claim_name}"), volume = %volume_name, "bound");
        }
        Ok(())
    }

    async fn update_claim(
        &self,
        ctx: &Context,
        claim: &core::PersistentVolumeClaim,
    ) -> Result<core::PersistentVolumeClaim, ReconcileError> {
        let ns = claim.metadata.namespace.clone();
        let name = claim.metadata.name.clone().unwrap_or_default();
        let written = ctx
            .client
            .update(
                CLAIMS,
                ns.as_deref(),
                &name,
                None,
                to_value(claim, "v1", "PersistentVolumeClaim"),
            )
            .await?;
        Ok(typed(&written).unwrap_or_else(|| claim.clone()))
    }

    async fn claim_phase(
        &self,
        ctx: &Context,
        mut claim: core::PersistentVolumeClaim,
        phase: &str,
        volume: Option<&core::PersistentVolumeSpec>,
    ) -> Result<Option<Value>, ReconcileError> {
        let ns = claim.metadata.namespace.clone();
        let name = claim.metadata.name.clone().unwrap_or_default();
        let status = claim.status.get_or_insert_with(Default::default);
        status.phase = Some(phase.into());
        match volume {
            Some(v) => {
                status.capacity = v.capacity.clone();
                status.access_modes = v.access_modes.clone();
            }
            None if phase == pvc_kind::PHASE_PENDING => {
                status.capacity = None;
                status.access_modes = None;
            }
            None => {}
        }
        match ctx
            .client
            .update(
                CLAIMS,
                ns.as_deref(),
                &name,
                Some("status"),
                to_value(&claim, "v1", "PersistentVolumeClaim"),
            )
            .await
        {
            Ok(v) => Ok(Some(v)),
            Err(ApiError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    async fn volume_phase(
        &self,
        ctx: &Context,
        mut volume: core::PersistentVolume,
        phase: &str,
        message: Option<(&str, String)>,
    ) -> Result<(), ReconcileError> {
        let name = volume.metadata.name.clone().unwrap_or_default();
        let status = volume.status.get_or_insert_with(Default::default);
        status.phase = Some(phase.into());
        match message {
            Some((reason, msg)) => {
                status.reason = Some(reason.into());
                status.message = Some(msg);
            }
            None => {
                status.reason = None;
                status.message = None;
            }
        }
        match ctx
            .client
            .update(
                VOLUMES,
                None,
                &name,
                Some("status"),
                to_value(&volume, "v1", "PersistentVolume"),
            )
            .await
        {
            Ok(_) | Err(ApiError::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Grow a directory volume to what its bound claim now asks for, when the class
    /// allows expansion (the resize admission refuses the request otherwise).
    async fn expand_if_asked(
        &self,
        ctx: &Context,
        volume: &core::PersistentVolume,
        claim: &core::PersistentVolumeClaim,
    ) -> Result<(), ReconcileError> {
        let Some(spec) = volume.spec.as_ref() else {
            return Ok(());
        };
        let (Some(want), Some(have)) = (
            pvc_kind::requested_bytes(claim),
            storage_of(spec.capacity.as_ref()),
        ) else {
            return Ok(());
        };
        if want <= have || (spec.host_path.is_none() && spec.local.is_none()) {
            return Ok(());
        }
        let expandable = pvc_kind::class_of(claim)
            .and_then(|c| class(ctx, &c))
            .is_some_and(|c| c.allow_volume_expansion == Some(true));
        if !expandable {
            return Ok(());
        }
        let request: Option<Quantity> = claim
            .spec
            .as_ref()
            .and_then(|s| s.resources.as_ref())
            .and_then(|r| r.requests.as_ref())
            .and_then(|r| r.get(STORAGE))
            .cloned();
        let Some(request) = request.filter(|q| quantity_bytes(q).is_some()) else {
            return Ok(());
        };
        let name = volume.metadata.name.clone().unwrap_or_default();
        ctx.client
            .patch(
                VOLUMES,
                None,
                &name,
                None,
                PatchType::Merge,
                json!({"spec": {"capacity": {STORAGE: request.0}}}),
            )
            .await?;
        // The claim's status capacity follows on the next pass, from the grown volume.
        Ok(())
    }

    async fn sync_volume(&self, key: &str, ctx: &Context) -> Result<Action, ReconcileError> {
        let (_, name) = split_key(key);
        let Some(raw) = ctx.cache(VOLUMES).get(name) else {
            return Ok(Action::Done);
        };
        let Some(volume) = typed::<core::PersistentVolume>(&raw) else {
            return Ok(Action::Done);
        };
        if volume.metadata.deletion_timestamp.is_some() {
            return Ok(Action::Done);
        }
        let phase = pv_kind::phase(&volume).to_string();
        let Some((ns, claim_name, uid)) = pv_kind::claim_ref(&volume) else {
            if phase != pv_kind::PHASE_AVAILABLE {
                self.volume_phase(ctx, volume, pv_kind::PHASE_AVAILABLE, None)
                    .await?;
            }
            return Ok(Action::Done);
        };
        let claim = ctx
            .cache(CLAIMS)
            .get(&format!("{ns}/{claim_name}"))
            .and_then(|c| typed::<core::PersistentVolumeClaim>(&c))
            .filter(|c| {
                uid.as_deref()
                    .is_none_or(|u| c.metadata.uid.as_deref() == Some(u))
            });
        let Some(claim) = claim else {
            if uid.is_none() {
                // Pre-bound by the user to a claim that does not exist yet.
                if phase != pv_kind::PHASE_AVAILABLE {
                    self.volume_phase(ctx, volume, pv_kind::PHASE_AVAILABLE, None)
                        .await?;
                }
                return Ok(Action::Done);
            }
            return self.reclaim(ctx, &raw, volume).await;
        };
        let claim_volume = claim
            .spec
            .as_ref()
            .and_then(|s| s.volume_name.clone())
            .unwrap_or_default();
        if claim_volume == name {
            if phase != pv_kind::PHASE_BOUND {
                self.volume_phase(ctx, volume, pv_kind::PHASE_BOUND, None)
                    .await?;
            }
        } else if claim_volume.is_empty() {
            // The claim side follows in its own reconcile.
            if phase != pv_kind::PHASE_AVAILABLE && phase != pv_kind::PHASE_BOUND {
                self.volume_phase(ctx, volume, pv_kind::PHASE_AVAILABLE, None)
                    .await?;
            }
        } else if annotation(&volume.metadata, ANN_BOUND_BY_CONTROLLER).is_some() {
            // The claim went to another volume: undo our half of the binding.
            let mut v = volume.clone();
            if let Some(s) = v.spec.as_mut() {
                s.claim_ref = None;
            }
            if let Some(a) = v.metadata.annotations.as_mut() {
                a.remove(ANN_BOUND_BY_CONTROLLER);
            }
            let written = ctx
                .client
                .update(
                    VOLUMES,
                    None,
                    name,
                    None,
                    to_value(&v, "v1", "PersistentVolume"),
                )
                .await?;
            if let Some(v) = typed::<core::PersistentVolume>(&written) {
                self.volume_phase(ctx, v, pv_kind::PHASE_AVAILABLE, None)
                    .await?;
            }
        } else if phase != pv_kind::PHASE_RELEASED {
            self.volume_phase(ctx, volume, pv_kind::PHASE_RELEASED, None)
                .await?;
        }
        Ok(Action::Done)
    }

    /// The claim is gone: the volume is Released, then its reclaim policy applies.
    async fn reclaim(
        &self,
        ctx: &Context,
        raw: &Arc<Value>,
        volume: core::PersistentVolume,
    ) -> Result<Action, ReconcileError> {
        let phase = pv_kind::phase(&volume).to_string();
        if phase == pv_kind::PHASE_FAILED {
            return Ok(Action::Done);
        }
        if phase != pv_kind::PHASE_RELEASED {
            self.volume_phase(ctx, volume.clone(), pv_kind::PHASE_RELEASED, None)
                .await?;
        }
        let policy = volume
            .spec
            .as_ref()
            .and_then(|s| s.persistent_volume_reclaim_policy.clone())
            .unwrap_or_else(|| pv_kind::RECLAIM_RETAIN.into());
        if policy != pv_kind::RECLAIM_DELETE {
            return Ok(Action::Done);
        }
        if annotation(&volume.metadata, ANN_PROVISIONED_BY).is_some() {
            // Its provisioner deletes the storage and then the volume.
            return Ok(Action::Done);
        }
        let name = volume.metadata.name.clone().unwrap_or_default();
        let msg = format!("error getting deleter volume plugin for volume \"{name}\": no deletable volume plugin matched");
        ctx.recorder.warning(raw, "VolumeFailedDelete", &msg).await;
        self.volume_phase(
            ctx,
            volume,
            pv_kind::PHASE_FAILED,
            Some(("VolumeFailedDelete", msg)),
        )
        .await?;
        Ok(Action::Done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pv(name: &str, size: &str, class: &str, modes: &[&str]) -> core::PersistentVolume {
        serde_json::from_value(
            json!({"metadata": {"name": name, "labels": {"tier": "fast"}},
            "spec": {"capacity": {"storage": size}, "accessModes": modes,
                "storageClassName": class, "hostPath": {"path": "/x"}, "volumeMode": "Filesystem"},
            "status": {"phase": "Available"}}),
        )
        .expect("pv")
    }

    fn pvc(size: &str, class: &str, modes: &[&str]) -> core::PersistentVolumeClaim {
        serde_json::from_value(
            json!({"metadata": {"name": "data", "namespace": "default", "uid": "u1"},
            "spec": {"resources": {"requests": {"storage": size}}, "accessModes": modes,
                "storageClassName": class, "volumeMode": "Filesystem"}}),
        )
        .expect("pvc")
    }

    fn name(v: Option<&core::PersistentVolume>) -> Option<&str> {
        v.and_then(|v| v.metadata.name.as_deref())
    }

    #[test]
    fn the_smallest_volume_that_fits_is_chosen() {
        let vols = vec![
            pv("big", "10Gi", "manual", &["ReadWriteOnce"]),
            pv("small", "500Mi", "manual", &["ReadWriteOnce"]),
            pv("right", "2Gi", "manual", &["ReadWriteOnce", "ReadOnlyMany"]),
        ];
        let claim = pvc("1Gi", "manual", &["ReadWriteOnce"]);
        assert_eq!(
            name(find_best_match(&claim, &vols, false, |_| true)),
            Some("right")
        );
    }

    #[test]
    fn class_access_modes_and_selector_must_match() {
        let vols = vec![
            pv("other-class", "2Gi", "slow", &["ReadWriteOnce"]),
            pv("rwo-only", "2Gi", "manual", &["ReadWriteOnce"]),
        ];
        let claim = pvc("1Gi", "manual", &["ReadWriteMany"]);
        assert!(find_best_match(&claim, &vols, false, |_| true).is_none());
        let mut picky = pvc("1Gi", "manual", &["ReadWriteOnce"]);
        picky.spec.as_mut().unwrap().selector =
            serde_json::from_value(json!({"matchLabels": {"tier": "slow"}})).ok();
        assert!(find_best_match(&picky, &vols, false, |_| true).is_none());
        picky.spec.as_mut().unwrap().selector =
            serde_json::from_value(json!({"matchLabels": {"tier": "fast"}})).ok();
        assert_eq!(
            name(find_best_match(&picky, &vols, false, |_| true)),
            Some("rwo-only")
        );
    }

    #[test]
    fn a_volume_pre_bound_to_the_claim_wins_and_others_claims_are_skipped() {
        let mut mine = pv("mine", "5Gi", "manual", &["ReadWriteOnce"]);
        mine.spec.as_mut().unwrap().claim_ref = Some(core::ObjectReference {
            namespace: Some("default".into()),
            name: Some("data".into()),
            ..Default::default()
        });
        let mut theirs = pv("theirs", "1Gi", "manual", &["ReadWriteOnce"]);
        theirs.spec.as_mut().unwrap().claim_ref = Some(core::ObjectReference {
            namespace: Some("default".into()),
            name: Some("other".into()),
            ..Default::default()
        });
        let free = pv("free", "1Gi", "manual", &["ReadWriteOnce"]);
        let claim = pvc("1Gi", "manual", &["ReadWriteOnce"]);
        let vols = vec![free.clone(), theirs.clone(), mine.clone()];
        assert_eq!(
            name(find_best_match(&claim, &vols, false, |_| true)),
            Some("mine")
        );
        let vols = vec![free, theirs];
        assert_eq!(
            name(find_best_match(&claim, &vols, false, |_| true)),
            Some("free")
        );
        // Waiting for a consumer: only a pre-bound volume is taken by the controller.
        assert!(find_best_match(&claim, &vols, true, |_| true).is_none());
    }

    #[test]
    fn a_claim_without_a_class_matches_only_volumes_without_one() {
        let vols = vec![
            pv("classed", "1Gi", "manual", &["ReadWriteOnce"]),
            pv("plain", "1Gi", "", &["ReadWriteOnce"]),
        ];
        let mut claim = pvc("1Gi", "", &["ReadWriteOnce"]);
        claim.spec.as_mut().unwrap().storage_class_name = None;
        assert_eq!(
            name(find_best_match(&claim, &vols, false, |_| true)),
            Some("plain")
        );
    }

    #[test]
    fn the_node_check_filters_volumes() {
        let vols = vec![
            pv("a", "1Gi", "manual", &["ReadWriteOnce"]),
            pv("b", "2Gi", "manual", &["ReadWriteOnce"]),
        ];
        let claim = pvc("1Gi", "manual", &["ReadWriteOnce"]);
        let on_b = |v: &core::PersistentVolume| v.metadata.name.as_deref() == Some("b");
        assert_eq!(name(find_best_match(&claim, &vols, false, on_b)), Some("b"));
    }
}
