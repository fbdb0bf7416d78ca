//! kube-scheduler's VolumeBinding plugin: the claims, volumes and classes it watches, and
//! what they mean for a pod.
//!
//! - PreFilter ([`VolumeCache::prepare`]): every claim the pod names must exist, not be
//!   being deleted, and be bound unless its class waits for a first consumer; otherwise
//!   the pod fits no node and says why in Kubernetes' words.
//! - Filter ([`PodVolumes::check`]): a node must satisfy the node affinity of every bound
//!   claim's volume, and, for each claim still waiting for a consumer, have a free volume
//!   that fits it there or be a place its class's provisioner may provision on.
//! - PreBind ([`PodVolumes::prebind`]): on the chosen node, pre-bind the chosen free
//!   volumes to their claims (`claimRef`) and mark the rest for provisioning there
//!   (`volume.kubernetes.io/selected-node`); the pod is bound once every claim is Bound.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;

use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::storage::v1 as storage;
use serde_json::{json, Value};

use super::filters::Reason;
use super::info::{node_selector_terms, terms_match, NodeInfo, NodeRequirement};
use crate::api::kinds::persistent_volume::{
    ANN_BOUND_BY_CONTROLLER, ANN_SELECTED_NODE, ANN_STORAGE_PROVISIONER,
};
use crate::api::kinds::persistent_volume_claim as pvc_kind;
use crate::api::kinds::storage_class::{self, NO_PROVISIONER, WAIT_FOR_FIRST_CONSUMER};
use crate::api::strategy::typed;
use crate::api::ApiError;
use crate::client::{ApiClient, EventKind, PatchType};
use crate::controllers::persistent_volume::find_best_match;
use crate::controllers::storage_protection::claims_of;
use crate::runtime::Informer;

/// What the scheduler must do before binding a pod to its node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PreBind {
    /// Pre-bind this free volume to the claim (`claimRef` with the claim's uid).
    BindVolume {
        volume: String,
        namespace: String,
        claim: String,
        uid: String,
    },
    /// Ask the claim's provisioner to provision it on this node.
    SelectNode {
        namespace: String,
        claim: String,
        node: String,
    },
}

impl PreBind {
    /// The claim it is about, `namespace/name`.
    pub fn claim_key(&self) -> String {
        match self {
            PreBind::BindVolume {
                namespace, claim, ..
            }
            | PreBind::SelectNode {
                namespace, claim, ..
            } => format!("{namespace}/{claim}"),
        }
    }

    /// The resource, namespace, name and merge patch that carry it out.
    pub fn patch(&self) -> (&'static str, Option<String>, String, Value) {
        match self {
            PreBind::BindVolume {
                volume,
                namespace,
                claim,
                uid,
            } => (
                "persistentvolumes",
                None,
                volume.clone(),
                json!({"metadata": {"annotations": {ANN_BOUND_BY_CONTROLLER: "yes"}},
                    "spec": {"claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                        "namespace": namespace, "name": claim, "uid": uid}}}),
            ),
            PreBind::SelectNode {
                namespace,
                claim,
                node,
            } => (
                pvc_kind::RESOURCE,
                Some(namespace.clone()),
                claim.clone(),
                json!({"metadata": {"annotations": {ANN_SELECTED_NODE: node}}}),
            ),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PreBindError {
    #[error("writing {what} failed")]
    Write {
        what: String,
        #[source]
        source: ApiError,
    },
    #[error("persistentvolume \"{0}\" was taken by another claim")]
    VolumeTaken(String),
    #[error("persistentvolumeclaim \"{0}\" was deleted or is being deleted")]
    ClaimGone(String),
    #[error("persistentvolumeclaim \"{0}\" lost its selected node (its provisioner gave up)")]
    Deselected(String),
    #[error("timed out waiting for the condition: claims {0:?} not bound")]
    Timeout(Vec<String>),
}

/// Carry out the PreBind steps, then wait (on the claims' informer) until every claim
/// they name is Bound, or one is gone, or its provisioning was given up, or `timeout`.
pub async fn run_prebind(
    client: &dyn ApiClient,
    claims: &Arc<Informer>,
    steps: &[PreBind],
    timeout: Duration,
) -> Result<(), PreBindError> {
    for step in steps {
        let (resource, ns, name, patch) = step.patch();
        let what = format!("{resource} {name}");
        if let PreBind::BindVolume { claim, .. } = step {
            // Pre-bind only a volume still free, conditionally on the version read.
            let current =
                client
                    .get(resource, None, &name)
                    .await
                    .map_err(|source| PreBindError::Write {
                        what: what.clone(),
                        source,
                    })?;
            let taken = current
                .pointer("/spec/claimRef/name")
                .and_then(Value::as_str)
                .is_some_and(|c| c != claim);
            if taken {
                return Err(PreBindError::VolumeTaken(name));
            }
            let updated = crate::api::patch::merge_patch(&current, &patch);
            client
                .update(resource, None, &name, None, updated)
                .await
                .map_err(|source| PreBindError::Write { what, source })?;
        } else {
            client
                .patch(
                    resource,
                    ns.as_deref(),
                    &name,
                    None,
                    PatchType::Merge,
                    patch,
                )
                .await
                .map_err(|source| PreBindError::Write { what, source })?;
        }
    }
    let keys: Vec<String> = steps.iter().map(PreBind::claim_key).collect();
    let provisioning: Vec<String> = steps
        .iter()
        .filter(|s| matches!(s, PreBind::SelectNode { .. }))
        .map(PreBind::claim_key)
        .collect();
    let cache = claims.cache().clone();
    let state = || -> Result<bool, PreBindError> {
        let mut all = true;
        for k in &keys {
            let Some(c) = cache.get(k) else {
                return Err(PreBindError::ClaimGone(k.clone()));
            };
            if c.pointer("/metadata/deletionTimestamp").is_some() {
                return Err(PreBindError::ClaimGone(k.clone()));
            }
            let bound =
                c.pointer("/status/phase").and_then(Value::as_str) == Some(pvc_kind::PHASE_BOUND);
            let selected = c
                .pointer("/metadata/annotations")
                .and_then(|a| a.get(ANN_SELECTED_NODE))
                .is_some();
            if !bound && provisioning.contains(k) && !selected && synced_after_patch(&c) {
                return Err(PreBindError::Deselected(k.clone()));
            }
            all &= bound;
        }
        Ok(all)
    };
    let mut changes = claims.subscribe();
    let wait = async {
        loop {
            if state()? {
                return Ok(());
            }
            if changes.next().await.is_none() {
                return Err(PreBindError::Timeout(keys.clone()));
            }
        }
    };
    match tokio::time::timeout(timeout, wait).await {
        Ok(r) => r,
        Err(_) => Err(PreBindError::Timeout(keys.clone())),
    }
}

/// Whether the cached claim already shows our selected-node patch could have been seen:
/// a claim that never had the annotation in the cache is simply not updated yet, so only
/// a claim the provisioner has looked at (it carries the storage-provisioner annotation)
/// counts as deselected.
fn synced_after_patch(claim: &Value) -> bool {
    claim
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(ANN_STORAGE_PROVISIONER))
        .is_some()
}

/// A claim that waits for its first consumer: where it could go.
#[derive(Debug, Clone)]
struct Waiting {
    claim: Arc<core::PersistentVolumeClaim>,
    /// Whether the class has a provisioner, and where it may provision (its
    /// `allowedTopologies`, `None` for anywhere).
    provision: Option<Option<Vec<Vec<NodeRequirement>>>>,
    /// The node an earlier cycle already asked its provisioner for (a second pod of the
    /// claim scheduled meanwhile must not move it).
    selected: Option<String>,
}

/// The volume facts of one pod for one scheduling cycle.
#[derive(Debug, Clone, Default)]
pub struct PodVolumes {
    /// The node affinity of each bound claim's volume that has one (all must match).
    bound: Vec<Vec<Vec<NodeRequirement>>>,
    waiting: Vec<Waiting>,
    /// The volumes a waiting claim may take (a snapshot, only when some claim waits).
    volumes: Vec<Arc<core::PersistentVolume>>,
}

fn affinity_terms(volume: &core::PersistentVolume) -> Option<Vec<Vec<NodeRequirement>>> {
    let required = volume
        .spec
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required
        .as_ref()?;
    let raw = serde_json::to_value(required).ok()?;
    Some(node_selector_terms(&raw))
}

impl PodVolumes {
    pub fn is_empty(&self) -> bool {
        self.bound.is_empty() && self.waiting.is_empty()
    }

    fn on_node(volume: &core::PersistentVolume, node: &NodeInfo) -> bool {
        affinity_terms(volume).is_none_or(|t| terms_match(&t, node))
    }

    /// The Filter: `node(s) had volume node affinity conflict` when a bound volume cannot
    /// be reached from the node, `node(s) didn't find available persistent volumes to
    /// bind` when a waiting claim has neither a volume nor a provisioner there.
    pub fn check(&self, node: &NodeInfo) -> Result<(), Reason> {
        if self.bound.iter().any(|terms| !terms_match(terms, node)) {
            return Err(Reason::VolumeNodeAffinityConflict);
        }
        for w in &self.waiting {
            let fits = find_best_match(&w.claim, self.volumes.iter().map(|v| &**v), false, |v| {
                Self::on_node(v, node)
            })
            .is_some();
            let provisionable = w.selected.as_deref().is_none_or(|s| s == node.name)
                && w.provision
                    .as_ref()
                    .is_some_and(|topology| topology.as_ref().is_none_or(|t| terms_match(t, node)));
            if !fits && !provisionable {
                return Err(Reason::VolumeBindConflict);
            }
        }
        Ok(())
    }

    /// The PreBind steps for `node` (which passed [`check`](Self::check)): a free volume
    /// there for each waiting claim that has one (each taken once), provisioning for the
    /// others.
    pub fn prebind(&self, node: &NodeInfo) -> Vec<PreBind> {
        let mut taken: Vec<String> = Vec::new();
        let mut steps = Vec::new();
        for w in &self.waiting {
            let meta = &w.claim.metadata;
            let namespace = meta.namespace.clone().unwrap_or_default();
            let claim = meta.name.clone().unwrap_or_default();
            let found = find_best_match(&w.claim, self.volumes.iter().map(|v| &**v), false, |v| {
                Self::on_node(v, node)
                    && !taken
                        .iter()
                        .any(|t| Some(t.as_str()) == v.metadata.name.as_deref())
            });
            match found {
                Some(v) => {
                    let volume = v.metadata.name.clone().unwrap_or_default();
                    taken.push(volume.clone());
                    steps.push(PreBind::BindVolume {
                        volume,
                        namespace,
                        claim,
                        uid: meta.uid.clone().unwrap_or_default(),
                    });
                }
                None => steps.push(PreBind::SelectNode {
                    namespace,
                    claim,
                    node: node.name.clone(),
                }),
            }
        }
        steps
    }
}

/// The claims, volumes and classes the scheduler has seen.
#[derive(Debug, Default)]
pub struct VolumeCache {
    claims: HashMap<String, Arc<core::PersistentVolumeClaim>>,
    volumes: HashMap<String, Arc<core::PersistentVolume>>,
    classes: HashMap<String, Arc<storage::StorageClass>>,
}

fn key(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> String {
    match meta.namespace.as_deref().filter(|n| !n.is_empty()) {
        Some(ns) => format!("{ns}/{}", meta.name.as_deref().unwrap_or_default()),
        None => meta.name.clone().unwrap_or_default(),
    }
}

fn upsert<T: serde::de::DeserializeOwned>(
    map: &mut HashMap<String, Arc<T>>,
    kind: EventKind,
    raw: &Value,
    meta: impl Fn(&T) -> &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) {
    let Some(obj) = typed::<T>(raw) else {
        return;
    };
    let k = key(meta(&obj));
    if kind == EventKind::Deleted {
        map.remove(&k);
    } else {
        map.insert(k, Arc::new(obj));
    }
}

impl VolumeCache {
    pub fn on_claim(&mut self, kind: EventKind, raw: &Value) {
        upsert(
            &mut self.claims,
            kind,
            raw,
            |c: &core::PersistentVolumeClaim| &c.metadata,
        );
    }

    pub fn on_volume(&mut self, kind: EventKind, raw: &Value) {
        upsert(
            &mut self.volumes,
            kind,
            raw,
            |v: &core::PersistentVolume| &v.metadata,
        );
    }

    pub fn on_class(&mut self, kind: EventKind, raw: &Value) {
        upsert(&mut self.classes, kind, raw, |c: &storage::StorageClass| {
            &c.metadata
        });
    }

    /// Whether every claim of the pod is Bound (what PreBind waits for).
    pub fn all_bound(&self, namespace: &str, claims: &[String]) -> bool {
        claims.iter().all(|c| {
            self.claims
                .get(&format!("{namespace}/{c}"))
                .is_some_and(|c| pvc_kind::phase(c) == pvc_kind::PHASE_BOUND)
        })
    }

    /// The PreFilter: the pod's volume facts, or why it fits no node.
    pub fn prepare(&self, pod: &Value) -> Result<PodVolumes, String> {
        let names = claims_of(pod);
        let mut out = PodVolumes::default();
        if names.is_empty() {
            return Ok(out);
        }
        let ns = pod
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or("default");
        let mut unbound_immediate = false;
        for name in &names {
            let Some(claim) = self.claims.get(&format!("{ns}/{name}")) else {
                return Err(format!("persistentvolumeclaim \"{name}\" not found"));
            };
            if claim.metadata.deletion_timestamp.is_some() {
                return Err(format!("persistentvolumeclaim \"{name}\" is being deleted"));
            }
            let volume_name = claim
                .spec
                .as_ref()
                .and_then(|s| s.volume_name.clone())
                .unwrap_or_default();
            if !volume_name.is_empty() && pvc_kind::phase(claim) == pvc_kind::PHASE_BOUND {
                match self.volumes.get(&volume_name) {
                    Some(v) => {
                        if let Some(terms) = affinity_terms(v) {
                            out.bound.push(terms);
                        }
                    }
                    None => return Err(format!("persistentvolume \"{volume_name}\" not found")),
                }
                continue;
            }
            let class_name = pvc_kind::class_of(claim).unwrap_or_default();
            let class = self.classes.get(&class_name);
            let waits =
                class.is_some_and(|c| storage_class::binding_mode(c) == WAIT_FOR_FIRST_CONSUMER);
            if !waits || !volume_name.is_empty() {
                // Immediate binding is the controller's job; the pod waits for it.
                unbound_immediate = true;
                continue;
            }
            let provision = class
                .filter(|c| c.provisioner != NO_PROVISIONER)
                .map(|c| {
                    c.allowed_topologies.as_ref().filter(|t| !t.is_empty()).map(|terms| {
                        let raw = json!({"nodeSelectorTerms": terms.iter().map(|t| json!({
                            "matchExpressions": t.match_label_expressions.iter().flatten().map(|e| json!({
                                "key": e.key, "operator": "In", "values": e.values})).collect::<Vec<_>>()
                        })).collect::<Vec<_>>()});
                        node_selector_terms(&raw)
                    })
                });
            let selected = claim
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(ANN_SELECTED_NODE))
                .cloned();
            out.waiting.push(Waiting {
                claim: claim.clone(),
                provision,
                selected,
            });
        }
        if unbound_immediate {
            return Err("pod has unbound immediate PersistentVolumeClaims".into());
        }
        if !out.waiting.is_empty() {
            out.volumes = self.volumes.values().cloned().collect();
            // A stable order, so equal volumes are chosen the same way every time.
            out.volumes
                .sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str) -> NodeInfo {
        NodeInfo {
            name: name.into(),
            labels: [("kubernetes.io/hostname".to_string(), name.to_string())]
                .into_iter()
                .collect(),
            ..Default::default()
        }
    }

    fn pod(claims: &[&str]) -> Value {
        json!({"metadata": {"name": "p", "namespace": "default"},
            "spec": {"volumes": claims.iter().map(|c| json!({"name": c,
                "persistentVolumeClaim": {"claimName": c}})).collect::<Vec<_>>()}})
    }

    fn cache() -> VolumeCache {
        let mut c = VolumeCache::default();
        c.on_class(EventKind::Added, &storage_class::local_path_class());
        c.on_class(
            EventKind::Added,
            &json!({"metadata": {"name": "manual"}, "provisioner": NO_PROVISIONER,
                "volumeBindingMode": "Immediate"}),
        );
        c.on_class(
            EventKind::Added,
            &json!({"metadata": {"name": "static-wffc"}, "provisioner": NO_PROVISIONER,
                "volumeBindingMode": "WaitForFirstConsumer"}),
        );
        c
    }

    fn claim(name: &str, class: &str, volume: Option<&str>) -> Value {
        let mut c = json!({"metadata": {"name": name, "namespace": "default", "uid": format!("u-{name}")},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}},
                "storageClassName": class, "volumeMode": "Filesystem"},
            "status": {"phase": "Pending"}});
        if let Some(v) = volume {
            c["spec"]["volumeName"] = json!(v);
            c["status"]["phase"] = json!("Bound");
        }
        c
    }

    fn volume(name: &str, class: &str, on: &str) -> Value {
        json!({"metadata": {"name": name},
            "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                "storageClassName": class, "volumeMode": "Filesystem", "hostPath": {"path": "/x"},
                "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                    {"key": "kubernetes.io/hostname", "operator": "In", "values": [on]}]}]}}},
            "status": {"phase": "Available"}})
    }

    #[test]
    fn a_missing_or_unbound_immediate_claim_fits_no_node() {
        let mut c = cache();
        assert_eq!(
            c.prepare(&pod(&["data"])).err().as_deref(),
            Some("persistentvolumeclaim \"data\" not found")
        );
        c.on_claim(EventKind::Added, &claim("data", "manual", None));
        assert_eq!(
            c.prepare(&pod(&["data"])).err().as_deref(),
            Some("pod has unbound immediate PersistentVolumeClaims")
        );
        assert!(c.prepare(&pod(&[])).expect("no claims").is_empty());
    }

    #[test]
    fn a_bound_claim_pins_the_pod_to_its_volumes_node() {
        let mut c = cache();
        c.on_volume(EventKind::Added, &volume("pv-a", "local-path", "a"));
        c.on_claim(EventKind::Added, &claim("data", "local-path", Some("pv-a")));
        let v = c.prepare(&pod(&["data"])).expect("prepared");
        assert_eq!(v.check(&node("a")), Ok(()));
        assert_eq!(v.check(&node("b")), Err(Reason::VolumeNodeAffinityConflict));
        assert!(v.prebind(&node("a")).is_empty());
    }

    #[test]
    fn a_waiting_claim_is_provisioned_on_the_chosen_node() {
        let mut c = cache();
        c.on_claim(EventKind::Added, &claim("data", "local-path", None));
        let v = c.prepare(&pod(&["data"])).expect("prepared");
        assert_eq!(v.check(&node("b")), Ok(()));
        assert_eq!(
            v.prebind(&node("b")),
            [PreBind::SelectNode {
                namespace: "default".into(),
                claim: "data".into(),
                node: "b".into()
            }]
        );
    }

    #[test]
    fn a_waiting_claim_without_a_provisioner_needs_a_free_volume_on_the_node() {
        let mut c = cache();
        c.on_volume(EventKind::Added, &volume("pv-a", "static-wffc", "a"));
        c.on_claim(EventKind::Added, &claim("data", "static-wffc", None));
        let v = c.prepare(&pod(&["data"])).expect("prepared");
        assert_eq!(v.check(&node("b")), Err(Reason::VolumeBindConflict));
        assert_eq!(v.check(&node("a")), Ok(()));
        assert_eq!(
            v.prebind(&node("a")),
            [PreBind::BindVolume {
                volume: "pv-a".into(),
                namespace: "default".into(),
                claim: "data".into(),
                uid: "u-data".into()
            }]
        );
        assert_eq!(
            Reason::VolumeBindConflict.to_string(),
            "node(s) didn't find available persistent volumes to bind"
        );
    }
}
