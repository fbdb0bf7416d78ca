//! The StatefulSet controller, as `pkg/controller/statefulset`: pods named
//! `<set>-<ordinal>` (from `spec.ordinals.start`) with a stable network identity
//! (`hostname`, and `subdomain` = the governing Service), labelled with their name, index
//! and revision; `OrderedReady` creates one pod at a time in ordinal order, each waiting
//! for its predecessor to be Running and Ready (and available for minReadySeconds), and
//! deletes one at a time from the highest ordinal; `Parallel` does both at once;
//! RollingUpdate replaces pods from the highest ordinal down to `partition`, one at a time
//! and each after the one above is healthy again; OnDelete replaces a pod only when it is
//! deleted. History lives in ControllerRevisions; `currentRevision` becomes the
//! `updateRevision` once every pod runs it.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use k8s_openapi::api::apps::v1 as apps;
use serde_json::{json, Value};

use super::history::{self, Created, NewRevision};
use super::owned;
use super::pods;
use crate::api::selector::LabelSelector;
use crate::api::{meta, ApiError};
use crate::client::PatchType;
use crate::runtime::{
    key_of, split_key, Action, Change, Context, InformerSpec, ReconcileError, Reconciler,
};

pub const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";
pub const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";

const CLAIMS: &str = "persistentvolumeclaims";

/// Hash collisions tried before giving up for this pass.
const MAX_COLLISIONS: i32 = 8;

/// `getParentNameAndOrdinal`: `web-3` is ordinal 3 of `web`.
pub fn parent_and_ordinal(name: &str) -> Option<(&str, i32)> {
    let (parent, ordinal) = name.rsplit_once('-')?;
    if ordinal.is_empty() || !ordinal.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((parent, ordinal.parse().ok()?))
}

/// What the ordering decisions need to know about one pod.
#[derive(Debug, Clone, PartialEq)]
pub struct SetPod {
    pub name: String,
    pub ordinal: i32,
    pub revision: String,
    pub phase: String,
    pub ready: bool,
    pub ready_since: Option<DateTime<Utc>>,
    pub deleting: bool,
    /// Whether its name, labels and hostname are the ones its ordinal gives it.
    pub identity_ok: bool,
}

impl SetPod {
    fn running_ready(&self) -> bool {
        self.phase == "Running" && self.ready
    }

    fn available(&self, min_ready: i64, now: DateTime<Utc>) -> bool {
        self.running_ready()
            && (min_ready <= 0
                || self
                    .ready_since
                    .is_some_and(|t| t + chrono::Duration::seconds(min_ready) < now))
    }

    fn finished(&self) -> bool {
        self.phase == "Failed" || self.phase == "Succeeded"
    }
}

/// What the ordering decisions need to know about the set.
#[derive(Debug, Clone)]
pub struct SetFacts {
    pub start: i32,
    pub replicas: i32,
    /// OrderedReady (one at a time) rather than Parallel.
    pub ordered: bool,
    pub rolling: bool,
    /// `rollingUpdate.partition`, when a rollingUpdate is given.
    pub partition: Option<i32>,
    pub current_revision: String,
    pub update_revision: String,
    /// `status.currentReplicas`: without a partition, how many of the lowest ordinals
    /// are made at the current revision.
    pub current_replicas: i32,
    pub min_ready: i64,
}

/// Which revision a pod to create is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Made {
    Current,
    Update,
}

/// One step the controller takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Create {
        ordinal: i32,
        of: Made,
    },
    Delete(String),
    /// Relabel a pod whose identity labels are missing or wrong.
    Relabel(String),
}

/// `newVersionedStatefulSetPod`: pods below the partition (or, without one, below the
/// current replica count) are made of the current revision during a rolling update.
fn made_of(set: &SetFacts, index: i32) -> Made {
    if !set.rolling {
        return Made::Update;
    }
    let below = match set.partition {
        Some(p) => index < p,
        None => index < set.current_replicas,
    };
    if below {
        Made::Current
    } else {
        Made::Update
    }
}

/// `updateStatefulSet`'s decisions for one pass, in order: fill or repair the replicas
/// (ordinals `start..start+replicas`), then delete what is beyond them from the highest
/// ordinal, then roll the update from the highest ordinal down to the partition. In
/// OrderedReady mode the pass stops at the first step taken and at the first pod that is
/// not yet Running, Ready and available. Also returns whether time alone (minReadySeconds)
/// can unblock it.
pub fn plan(set: &SetFacts, pods: &[SetPod], now: DateTime<Utc>) -> (Vec<Step>, bool) {
    let n = set.replicas.max(0) as usize;
    let mut replicas: Vec<Option<&SetPod>> = vec![None; n];
    let mut condemned: Vec<&SetPod> = Vec::new();
    for p in pods {
        let index = p.ordinal - set.start;
        if index >= 0 && (index as usize) < n {
            replicas[index as usize] = Some(p);
        } else {
            condemned.push(p);
        }
    }
    condemned.sort_by_key(|p| p.ordinal);
    let unhealthy = |p: &SetPod| !p.running_ready() || p.deleting;
    // The first pod (replicas in order, then the condemned) that is not healthy: the one
    // OrderedReady may still delete while it waits. A missing replica counts as one.
    let first_unhealthy: Option<&str> = replicas
        .iter()
        .map(|r| r.map(|p| (p, unhealthy(p))))
        .chain(condemned.iter().map(|p| Some((*p, unhealthy(p)))))
        .find(|r| r.is_none_or(|(_, bad)| bad))
        .and_then(|r| r.map(|(p, _)| p.name.as_str()));
    let mut steps = Vec::new();
    let mut timed = false;
    let ordered = set.ordered;
    for (i, slot) in replicas.iter().enumerate() {
        let Some(p) = slot else {
            steps.push(Step::Create {
                ordinal: set.start + i as i32,
                of: made_of(set, i as i32),
            });
            if ordered {
                return (steps, timed);
            }
            continue;
        };
        if p.finished() && !p.deleting {
            // It is made again once it is gone.
            steps.push(Step::Delete(p.name.clone()));
            if ordered {
                return (steps, timed);
            }
            continue;
        }
        if p.deleting || !p.running_ready() {
            if ordered {
                return (steps, timed);
            }
            continue;
        }
        if !p.available(set.min_ready, now) {
            timed = true;
            if ordered {
                return (steps, timed);
            }
            continue;
        }
        if !p.identity_ok {
            steps.push(Step::Relabel(p.name.clone()));
        }
    }
    for p in condemned.iter().rev() {
        if p.deleting {
            if ordered {
                return (steps, timed);
            }
            continue;
        }
        let is_first = first_unhealthy == Some(p.name.as_str());
        if ordered && !is_first {
            if !p.running_ready() {
                return (steps, timed);
            }
            if !p.available(set.min_ready, now) {
                return (steps, true);
            }
        }
        steps.push(Step::Delete(p.name.clone()));
        if ordered {
            return (steps, timed);
        }
    }
    if !set.rolling {
        return (steps, timed);
    }
    let floor = set.partition.unwrap_or(0).max(0) as usize;
    for slot in replicas.iter().skip(floor).rev() {
        let Some(p) = slot else {
            return (steps, timed);
        };
        if p.revision != set.update_revision && !p.deleting {
            steps.push(Step::Delete(p.name.clone()));
            return (steps, timed);
        }
        if p.deleting || !p.available(set.min_ready, now) {
            timed |= p.running_ready() && !p.deleting;
            return (steps, timed);
        }
    }
    (steps, timed)
}

/// `computeReplicaStatus` and `completeRollingUpdate`.
pub fn status_of(set: &SetFacts, pods: &[SetPod], now: DateTime<Utc>) -> apps::StatefulSetStatus {
    let mut s = apps::StatefulSetStatus {
        replicas: pods.len() as i32,
        ..Default::default()
    };
    let (mut ready, mut available, mut current, mut updated) = (0, 0, 0, 0);
    for p in pods {
        if p.running_ready() {
            ready += 1;
            if p.available(set.min_ready, now) {
                available += 1;
            }
        }
        if !p.deleting {
            if p.revision == set.current_revision {
                current += 1;
            }
            if p.revision == set.update_revision {
                updated += 1;
            }
        }
    }
    s.ready_replicas = Some(ready);
    s.available_replicas = Some(available);
    s.current_replicas = Some(current);
    s.updated_replicas = Some(updated);
    s.current_revision = Some(set.current_revision.clone());
    s.update_revision = Some(set.update_revision.clone());
    if set.rolling && updated == s.replicas && ready == s.replicas {
        s.current_replicas = Some(updated);
        s.current_revision = Some(set.update_revision.clone());
    }
    s
}

#[derive(Default)]
pub struct StatefulSetController;

fn selector(set: &Value) -> Option<LabelSelector> {
    let raw = set.pointer("/spec/selector")?;
    LabelSelector::from_label_selector_value(raw)
        .ok()
        .filter(|s| !s.is_empty())
}

/// Whether `pod` is one of `set`'s by name (`isMemberOf`).
fn member_of(set: &Value, pod: &Value) -> bool {
    let name = meta::name(pod).unwrap_or_default();
    parent_and_ordinal(name).is_some_and(|(parent, _)| Some(parent) == meta::name(set))
}

#[async_trait::async_trait]
impl Reconciler for StatefulSetController {
    fn name(&self) -> &'static str {
        "statefulset-controller"
    }

    fn informers(&self) -> Vec<InformerSpec> {
        vec![
            InformerSpec::all("statefulsets"),
            InformerSpec::all("pods"),
            InformerSpec::all("controllerrevisions"),
            InformerSpec::all(CLAIMS),
        ]
    }

    fn keys_for(&self, resource: &str, change: &Change, ctx: &Context) -> Vec<String> {
        if resource == "statefulsets" {
            return vec![key_of(&change.object)];
        }
        let obj = &change.object;
        if resource == CLAIMS {
            // A claim of `<template>-<set>-<ordinal>`: the sets it may belong to.
            let ns = meta::namespace(obj).unwrap_or_default();
            let name = meta::name(obj).unwrap_or_default();
            return ctx
                .cache("statefulsets")
                .list_namespace(ns)
                .iter()
                .filter(|s| {
                    let set = meta::name(s).unwrap_or_default();
                    s.pointer("/spec/volumeClaimTemplates")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .filter_map(|t| t.pointer("/metadata/name").and_then(Value::as_str))
                        .any(|t| {
                            name.strip_prefix(&format!("{t}-{set}-")).is_some_and(|o| {
                                !o.is_empty() && o.bytes().all(|b| b.is_ascii_digit())
                            })
                        })
                })
                .map(|s| key_of(s))
                .collect();
        }
        let mut keys: Vec<String> = [Some(obj), change.old.as_ref()]
            .into_iter()
            .flatten()
            .filter_map(|o| owned::owner_key(o, "StatefulSet"))
            .collect();
        keys.dedup();
        if keys.is_empty() {
            let ns = meta::namespace(obj).unwrap_or_default();
            keys = ctx
                .cache("statefulsets")
                .list_namespace(ns)
                .iter()
                .filter(|s| selector(s).is_some_and(|sel| sel.matches_object(obj)))
                .map(|s| key_of(s))
                .collect();
        }
        keys
    }

    async fn reconcile(&self, key: &str, ctx: &Context) -> Result<Action, ReconcileError> {
        let Some(raw) = ctx.cache("statefulsets").get(key) else {
            return Ok(Action::Done);
        };
        let set: apps::StatefulSet = serde_json::from_value((*raw).clone())
            .map_err(|e| ReconcileError::Invalid(format!("statefulset {key}: {e}")))?;
        let Some(sel) = selector(&raw) else {
            ctx.recorder
                .warning(
                    &raw,
                    "SelectingAll",
                    "This statefulset is selecting all pods. A non-empty selector is required.",
                )
                .await;
            return Ok(Action::Done);
        };
        if pods::is_deleting(&raw) {
            return Ok(Action::Done);
        }
        let (ns, _) = split_key(key);
        let ns = ns.unwrap_or("default").to_string();
        Sync {
            ctx,
            key,
            raw: &raw,
            set: &set,
            ns: &ns,
            selector: sel,
        }
        .sync()
        .await
    }
}

/// One reconcile of one StatefulSet.
struct Sync<'a> {
    ctx: &'a Context,
    key: &'a str,
    raw: &'a Value,
    set: &'a apps::StatefulSet,
    ns: &'a str,
    selector: LabelSelector,
}

impl Sync<'_> {
    fn spec(&self) -> apps::StatefulSetSpec {
        self.set.spec.clone()
    }

    fn name(&self) -> &str {
        meta::name(self.raw).unwrap_or_default()
    }

    fn reference(&self) -> Value {
        owned::owner_ref("apps/v1", "StatefulSet", self.raw)
    }

    async fn sync(&self) -> Result<Action, ReconcileError> {
        let spec = self.spec();
        let candidates: Vec<Arc<Value>> = self
            .ctx
            .cache("pods")
            .list_namespace(self.ns)
            .into_iter()
            .filter(|p| member_of(self.raw, p))
            .collect();
        let owned_pods = owned::claim(
            self.ctx,
            "pods",
            self.raw,
            &self.reference(),
            &self.selector,
            candidates,
        )
        .await?;
        let revisions = owned::claim(
            self.ctx,
            "controllerrevisions",
            self.raw,
            &self.reference(),
            &self.selector,
            self.ctx
                .cache("controllerrevisions")
                .list_namespace(self.ns),
        )
        .await?;
        let Some((current, update, collisions)) = self.revisions(&revisions).await? else {
            return Ok(Action::RequeueAfter(Duration::from_secs(1)));
        };
        let current_name = meta::name(&current).unwrap_or_default().to_string();
        let update_name = meta::name(&update).unwrap_or_default().to_string();
        let strategy = spec.update_strategy.clone().unwrap_or_default();
        let status = self.set.status.clone().unwrap_or_default();
        let facts = SetFacts {
            start: spec.ordinals.as_ref().and_then(|o| o.start).unwrap_or(0),
            replicas: spec.replicas.unwrap_or(1),
            ordered: spec.pod_management_policy.as_deref() != Some("Parallel"),
            rolling: strategy.type_.as_deref().unwrap_or("RollingUpdate") == "RollingUpdate",
            partition: strategy.rolling_update.as_ref().and_then(|r| r.partition),
            current_revision: current_name.clone(),
            update_revision: update_name.clone(),
            current_replicas: status.current_replicas.unwrap_or(0),
            min_ready: i64::from(spec.min_ready_seconds.unwrap_or(0)),
        };
        let set_pods: Vec<SetPod> = owned_pods.iter().map(|p| self.facts_of(p)).collect();
        let now = Utc::now();
        let mut status = status_of(&facts, &set_pods, now);
        status.collision_count = collisions;
        status.observed_generation = self.set.metadata.generation;
        let (steps, timed) = plan(&facts, &set_pods, now);
        // Claims get the owners the retention policy wants before any pod is deleted, so
        // a condemned pod's claims go with it when whenScaled says Delete.
        for p in &owned_pods {
            let ordinal = parent_and_ordinal(meta::name(p).unwrap_or_default())
                .map(|(_, o)| o)
                .unwrap_or(-1);
            let index = ordinal - facts.start;
            let condemned = index < 0 || index >= facts.replicas.max(0);
            self.update_claim_owners(ordinal, Some(p.as_ref()), condemned)
                .await?;
        }
        for step in steps {
            self.take(&step, &current, &update).await?;
        }
        self.write_status(&status).await?;
        // Revisions no pod runs and that are neither current nor the update go beyond the
        // history limit, oldest first.
        let live: Vec<&str> = set_pods.iter().map(|p| p.revision.as_str()).collect();
        let old: Vec<Arc<Value>> = revisions
            .iter()
            .filter(|r| {
                let name = meta::name(r).unwrap_or_default();
                name != current_name && name != update_name && !live.contains(&name)
            })
            .cloned()
            .collect();
        let limit = spec.revision_history_limit.unwrap_or(10).max(0) as usize;
        history::truncate(self.ctx, &old, limit, |_| false).await?;
        Ok(if timed {
            Action::RequeueAfter(Duration::from_secs(facts.min_ready.max(1) as u64))
        } else {
            Action::Done
        })
    }

    fn facts_of(&self, pod: &Value) -> SetPod {
        let name = meta::name(pod).unwrap_or_default().to_string();
        let ordinal = parent_and_ordinal(&name).map(|(_, o)| o).unwrap_or(-1);
        let label = |k: &str| {
            pod.pointer("/metadata/labels")
                .and_then(|l| l.get(k))
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        let ready_since = pods::condition(pod, "Ready")
            .and_then(|c| c.get("lastTransitionTime"))
            .and_then(Value::as_str)
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc));
        SetPod {
            identity_ok: label(POD_NAME_LABEL) == name
                && label(POD_INDEX_LABEL) == ordinal.to_string(),
            name,
            ordinal,
            revision: label(history::REVISION_HASH),
            phase: pod
                .pointer("/status/phase")
                .and_then(Value::as_str)
                .unwrap_or("Pending")
                .to_string(),
            ready: pods::is_ready(pod),
            ready_since,
            deleting: pods::is_deleting(pod),
        }
    }

    /// `newStatefulSetPod`: the pod of `ordinal`, made of `revision`'s template.
    fn pod(&self, ordinal: i32, revision: &Value) -> Value {
        let template = history::template_of(revision)
            .or_else(|| self.raw.pointer("/spec/template").cloned())
            .unwrap_or_else(|| json!({}));
        let name = format!("{}-{ordinal}", self.name());
        let mut labels = template
            .pointer("/metadata/labels")
            .cloned()
            .filter(Value::is_object)
            .unwrap_or_else(|| json!({}));
        labels[POD_NAME_LABEL] = json!(name);
        labels[POD_INDEX_LABEL] = json!(ordinal.to_string());
        labels[history::REVISION_HASH] = json!(meta::name(revision).unwrap_or_default());
        let mut metadata = json!({
            "name": name,
            "labels": labels,
            "ownerReferences": [self.reference()],
        });
        if let Some(a) = template
            .pointer("/metadata/annotations")
            .filter(|a| a.as_object().is_some_and(|m| !m.is_empty()))
        {
            metadata["annotations"] = a.clone();
        }
        let mut spec = template.get("spec").cloned().unwrap_or_else(|| json!({}));
        claims::mount_claims(self.set, ordinal, &mut spec);
        spec["hostname"] = json!(name);
        if let Some(service) = self.spec().service_name.filter(|s| !s.is_empty()) {
            spec["subdomain"] = json!(service);
        }
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec})
    }

    async fn take(
        &self,
        step: &Step,
        current: &Value,
        update: &Value,
    ) -> Result<(), ReconcileError> {
        let set_name = self.name().to_string();
        match step {
            Step::Create { ordinal, of } => {
                let revision = if *of == Made::Current {
                    current
                } else {
                    update
                };
                let pod = self.pod(*ordinal, revision);
                let pod_name = format!("{set_name}-{ordinal}");
                self.create_claims(*ordinal, &pod_name).await?;
                match self.ctx.client.create("pods", Some(self.ns), pod).await {
                    Ok(_) => {
                        let msg =
                            format!("create Pod {pod_name} in StatefulSet {set_name} successful");
                        self.ctx
                            .recorder
                            .normal(self.raw, "SuccessfulCreate", &msg)
                            .await;
                    }
                    // The cache had not shown it yet; the next pass sees it.
                    Err(ApiError::AlreadyExists { .. }) => {}
                    Err(e) => {
                        let msg = format!(
                            "create Pod {pod_name} in StatefulSet {set_name} failed error: {e}"
                        );
                        self.ctx
                            .recorder
                            .warning(self.raw, "FailedCreate", &msg)
                            .await;
                        return Err(e.into());
                    }
                }
            }
            Step::Delete(pod_name) => {
                match self
                    .ctx
                    .client
                    .delete("pods", Some(self.ns), pod_name, None)
                    .await
                {
                    Ok(_) => {
                        let msg =
                            format!("delete Pod {pod_name} in StatefulSet {set_name} successful");
                        self.ctx
                            .recorder
                            .normal(self.raw, "SuccessfulDelete", &msg)
                            .await;
                    }
                    Err(ApiError::NotFound { .. }) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            Step::Relabel(pod_name) => {
                let ordinal = parent_and_ordinal(pod_name).map(|(_, o)| o).unwrap_or(0);
                let patch = json!({"metadata": {"labels": {
                    POD_NAME_LABEL: pod_name, POD_INDEX_LABEL: ordinal.to_string()}}});
                match self
                    .ctx
                    .client
                    .patch(
                        "pods",
                        Some(self.ns),
                        pod_name,
                        None,
                        PatchType::Merge,
                        patch,
                    )
                    .await
                {
                    Ok(_) | Err(ApiError::NotFound { .. }) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(())
    }

    /// `createPersistentVolumeClaims`: the claims of `ordinal` that do not exist yet; a
    /// claim still being deleted holds the pod back until it is gone.
    async fn create_claims(&self, ordinal: i32, pod_name: &str) -> Result<(), ReconcileError> {
        let set_name = self.name().to_string();
        for (name, mut claim) in claims::claims_for(self.set, ordinal) {
            match self.ctx.cache(CLAIMS).get(&format!("{}/{name}", self.ns)) {
                Some(c) if pods::is_deleting(&c) => {
                    return Err(ReconcileError::Invalid(format!(
                        "pvc {name} is being deleted"
                    )));
                }
                Some(_) => continue,
                None => {}
            }
            if claims::wanted_owners(self.set, false).0 {
                claim["metadata"]["ownerReferences"] =
                    json!([claims::owner("apps/v1", "StatefulSet", self.raw)]);
            }
            match self.ctx.client.create(CLAIMS, Some(self.ns), claim).await {
                Ok(_) => {
                    let msg = format!(
                        "create Claim {name} Pod {pod_name} in StatefulSet {set_name} success"
                    );
                    self.ctx
                        .recorder
                        .normal(self.raw, "SuccessfulCreate", &msg)
                        .await;
                }
                Err(ApiError::AlreadyExists { .. }) => {}
                Err(e) => {
                    let msg = format!(
                        "create Claim {name} for Pod {pod_name} in StatefulSet {set_name} failed error: {e}"
                    );
                    self.ctx
                        .recorder
                        .warning(self.raw, "FailedCreate", &msg)
                        .await;
                    return Err(e.into());
                }
            }
        }
        Ok(())
    }

    /// `UpdatePodClaimForRetentionPolicy`: the owner references of `ordinal`'s claims as
    /// the retention policy wants them.
    async fn update_claim_owners(
        &self,
        ordinal: i32,
        pod: Option<&Value>,
        condemned: bool,
    ) -> Result<(), ReconcileError> {
        let wanted = claims::wanted_owners(self.set, condemned);
        for (name, _) in claims::claims_for(self.set, ordinal) {
            let Some(claim) = self.ctx.cache(CLAIMS).get(&format!("{}/{name}", self.ns)) else {
                continue;
            };
            let Some(refs) = claims::owners_update(&claim, self.raw, pod, wanted) else {
                continue;
            };
            let patch = json!({"metadata": {"ownerReferences": refs}});
            match self
                .ctx
                .client
                .patch(CLAIMS, Some(self.ns), &name, None, PatchType::Merge, patch)
                .await
            {
                Ok(_) | Err(ApiError::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// `getStatefulSetRevisions`: the update revision (the one recording the current
    /// template: the latest, an older one renumbered when the set rolls back to it, or a
    /// new one) and the current revision (`status.currentRevision`, or the update one
    /// when there is none yet), with the collision count used.
    async fn revisions(
        &self,
        revisions: &[Arc<Value>],
    ) -> Result<Option<(Value, Value, Option<i32>)>, ReconcileError> {
        let template = self
            .raw
            .pointer("/spec/template")
            .cloned()
            .unwrap_or_else(|| json!({}));
        let data = history::revision_data(&template);
        let mut sorted: Vec<&Arc<Value>> = revisions.iter().collect();
        sorted.sort_by_key(|r| history::number(r));
        let next = history::max_number(revisions.iter()) + 1;
        let equal: Vec<&&Arc<Value>> = sorted
            .iter()
            .filter(|r| history::matches(r, &data))
            .collect();
        let mut collisions = self.set.status.as_ref().and_then(|s| s.collision_count);
        let update = match (equal.last(), sorted.last()) {
            (Some(eq), Some(latest)) if meta::name(eq) == meta::name(latest) => (****eq).clone(),
            (Some(eq), _) => history::renumber(self.ctx, eq, next).await?,
            (None, _) => {
                let mut made = None;
                for _ in 0..MAX_COLLISIONS {
                    let hash = history::revision_hash(&data, collisions);
                    let new = NewRevision {
                        owner: self.raw,
                        reference: self.reference(),
                        name: history::revision_name(self.name(), &hash),
                        hash: &hash,
                        data: data.clone(),
                        revision: next,
                        annotations: self.raw.pointer("/metadata/annotations").cloned(),
                    };
                    match history::create(self.ctx, self.ns, new).await? {
                        Created::Revision(r) => {
                            made = Some(r);
                            break;
                        }
                        Created::Collision => collisions = Some(collisions.unwrap_or(0) + 1),
                    }
                }
                match made {
                    Some(r) => r,
                    None => {
                        tracing::warn!(statefulset = self.key, "revision hash collisions");
                        return Ok(None);
                    }
                }
            }
        };
        let wanted = self
            .set
            .status
            .as_ref()
            .and_then(|s| s.current_revision.clone());
        let current = revisions
            .iter()
            .find(|r| wanted.is_some() && meta::name(r) == wanted.as_deref())
            .map(|r| (**r).clone())
            .unwrap_or_else(|| update.clone());
        Ok(Some((current, update, collisions)))
    }

    async fn write_status(&self, status: &apps::StatefulSetStatus) -> Result<(), ReconcileError> {
        let new = serde_json::to_value(status).unwrap_or_else(|_| json!({}));
        let old = self.raw.get("status").cloned().unwrap_or_else(|| json!({}));
        let keys = [
            "replicas",
            "readyReplicas",
            "availableReplicas",
            "currentReplicas",
            "updatedReplicas",
            "currentRevision",
            "updateRevision",
            "collisionCount",
            "observedGeneration",
        ];
        if keys.iter().all(|k| old.get(*k) == new.get(*k)) {
            return Ok(());
        }
        let patch: serde_json::Map<String, Value> = keys
            .iter()
            .map(|k| (k.to_string(), new.get(*k).cloned().unwrap_or(Value::Null)))
            .collect();
        match self
            .ctx
            .client
            .patch(
                "statefulsets",
                Some(self.ns),
                self.name(),
                Some("status"),
                PatchType::Merge,
                json!({"status": patch}),
            )
            .await
        {
            Ok(_) | Err(ApiError::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

mod claims;
#[cfg(test)]
mod tests;
