//! The deployment controller, as `pkg/controller/deployment`: a ReplicaSet per pod
//! template (named and labelled by the template's hash), rolled out with RollingUpdate
//! (maxSurge / maxUnavailable) or Recreate, scaled proportionally when the Deployment is
//! scaled mid-rollout, revisions in annotations for `kubectl rollout history|undo`, old
//! ReplicaSets kept up to `revisionHistoryLimit`, and the `Progressing` / `Available`
//! conditions with Kubernetes' reasons and messages.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use k8s_openapi::api::apps::v1 as apps;
use serde_json::{json, Map, Value};

use super::pods::controller_ref;
use crate::api::kinds::workload;
use crate::api::{meta, ApiError};
use crate::client::PatchType;
use crate::runtime::{
    key_of, split_key, Action, Change, Context, InformerSpec, ReconcileError, Reconciler,
};

pub const REVISION: &str = "deployment.kubernetes.io/revision";
pub const REVISION_HISTORY: &str = "deployment.kubernetes.io/revision-history";
pub const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
pub const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";
pub const HASH_LABEL: &str = "pod-template-hash";

/// Annotations of a Deployment that are its own, not copied onto its ReplicaSets.
const NOT_COPIED: &[&str] = &[
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION,
    REVISION_HISTORY,
    DESIRED_REPLICAS,
    MAX_REPLICAS,
];

#[derive(Default)]
pub struct DeploymentController;

/// One ReplicaSet as the rollout arithmetic sees it.
#[derive(Debug, Clone)]
struct Rs {
    raw: Arc<Value>,
    typed: apps::ReplicaSet,
}

impl Rs {
    fn name(&self) -> &str {
        meta::name(&self.raw).unwrap_or_default()
    }
    fn replicas(&self) -> i32 {
        self.typed.spec.replicas.unwrap_or(1)
    }
    fn status(&self) -> apps::ReplicaSetStatus {
        self.typed.status.clone().unwrap_or_default()
    }
    fn available(&self) -> i32 {
        self.status().available_replicas.unwrap_or(0)
    }
    fn revision(&self) -> i64 {
        annotation(&self.raw, REVISION)
            .and_then(|r| r.parse().ok())
            .unwrap_or(0)
    }
    fn created(&self) -> String {
        self.raw
            .pointer("/metadata/creationTimestamp")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    }
}

fn annotation<'a>(obj: &'a Value, key: &str) -> Option<&'a str> {
    obj.pointer("/metadata/annotations")?.get(key)?.as_str()
}

/// Drops what Go's encoding leaves out (`false`, `0`, `""`, empty lists and maps) so that
/// templates compare as Kubernetes' semantic equality does: a client that echoes
/// `stdin: false` or `generation: 0` back has not changed the template.
fn without_zero_values(v: &Value) -> Value {
    fn zero(v: &Value) -> bool {
        match v {
            Value::Null => true,
            Value::Bool(b) => !b,
            Value::Number(n) => n.as_f64() == Some(0.0),
            Value::String(s) => s.is_empty(),
            Value::Array(a) => a.is_empty(),
            Value::Object(m) => m.is_empty(),
        }
    }
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| (k.clone(), without_zero_values(v)))
                .filter(|(_, v)| !zero(v))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(without_zero_values).collect()),
        other => other.clone(),
    }
}

/// A template without the hash label, as templates are compared (`EqualIgnoreHash`).
fn template_without_hash(template: &Value) -> Value {
    let mut t = without_zero_values(template);
    if let Some(labels) = t
        .pointer_mut("/metadata/labels")
        .and_then(Value::as_object_mut)
    {
        labels.remove(HASH_LABEL);
        if labels.is_empty() {
            if let Some(m) = t.get_mut("metadata").and_then(Value::as_object_mut) {
                m.remove("labels");
            }
        }
    }
    t
}

/// The pod-template hash (`ComputeHash`): FNV-1a over the template and the collision
/// count, written in the alphabet of `rand.SafeEncodeString`.
pub fn template_hash(template: &Value, collision_count: Option<i32>) -> String {
    let mut bytes = template_without_hash(template).to_string().into_bytes();
    if let Some(c) = collision_count {
        bytes.extend_from_slice(c.to_string().as_bytes());
    }
    let mut h: u32 = 0x811c_9dc5;
    for b in bytes {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    const ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    h.to_string()
        .bytes()
        .map(|b| ALPHANUMS[usize::from(b) % ALPHANUMS.len()] as char)
        .collect()
}

/// maxSurge and maxUnavailable resolved against the replicas (`ResolveFenceposts`).
fn fenceposts(d: &apps::Deployment) -> (i32, i32) {
    let replicas = d.spec.replicas.unwrap_or(1);
    let ru = d
        .spec
        .strategy
        .as_ref()
        .and_then(|s| s.rolling_update.as_ref());
    let surge = workload::scaled(ru.and_then(|r| r.max_surge.as_ref()), replicas, true);
    let unavailable =
        workload::scaled(ru.and_then(|r| r.max_unavailable.as_ref()), replicas, false);
    if surge == 0 && unavailable == 0 {
        // Both zero would never progress; Kubernetes allows one unavailable.
        return (0, 1);
    }
    (surge, unavailable)
}

fn is_recreate(d: &apps::Deployment) -> bool {
    d.spec.strategy.as_ref().and_then(|s| s.type_.as_deref()) == Some("Recreate")
}

/// The replicas the new ReplicaSet should have now (`NewRSNewReplicas`).
fn new_rs_replicas(d: &apps::Deployment, all: &[&Rs], new_replicas: i32) -> i32 {
    let replicas = d.spec.replicas.unwrap_or(1);
    if is_recreate(d) {
        return replicas;
    }
    let (surge, _) = fenceposts(d);
    let current: i32 = all.iter().map(|r| r.replicas()).sum();
    let max_total = replicas + surge;
    if current >= max_total {
        return new_replicas;
    }
    let up = (max_total - current).min(replicas - new_replicas);
    new_replicas + up.max(0)
}

/// How far old ReplicaSets may be scaled down now (`reconcileOldReplicaSets`): unhealthy
/// replicas first, then available ones down to the minimum availability. Returns the
/// new replica counts, oldest first.
fn scale_down_old(d: &apps::Deployment, old: &[&Rs], new: Option<&Rs>) -> Vec<i32> {
    let replicas = d.spec.replicas.unwrap_or(1);
    let (_, max_unavailable) = fenceposts(d);
    let min_available = replicas - max_unavailable;
    let mut sizes: Vec<i32> = old.iter().map(|r| r.replicas()).collect();
    let old_total: i32 = sizes.iter().sum();
    if old_total == 0 {
        return sizes;
    }
    let new_replicas = new.map_or(0, Rs::replicas);
    let all_total = old_total + new_replicas;
    let new_unavailable = new.map_or(0, |n| n.replicas() - n.available()).max(0);
    let max_scaled_down = all_total - min_available - new_unavailable;
    if max_scaled_down <= 0 {
        return sizes;
    }
    // Unhealthy replicas of old sets go first: they serve nothing.
    let mut cleaned = 0;
    for (i, rs) in old.iter().enumerate() {
        if cleaned >= max_scaled_down {
            break;
        }
        let unhealthy = (sizes[i] - rs.available()).max(0);
        let n = unhealthy.min(max_scaled_down - cleaned);
        sizes[i] -= n;
        cleaned += n;
    }
    // Then available ones, as long as enough stay available.
    let available: i32 =
        old.iter().map(|r| r.available()).sum::<i32>() + new.map_or(0, Rs::available);
    let mut budget = (available - min_available).min(max_scaled_down - cleaned);
    for size in sizes.iter_mut() {
        if budget <= 0 {
            break;
        }
        let n = (*size).min(budget);
        *size -= n;
        budget -= n;
    }
    sizes
}

/// Proportional scaling (`scale`): the replicas to add (or remove) spread over the active
/// ReplicaSets by their share of the Deployment's last size, the remainder to the largest.
/// `sets` are (current replicas, max-replicas annotation); returns the new sizes.
fn proportional(
    sets: &[(i32, Option<i32>)],
    replicas: i32,
    surge: i32,
    status_replicas: i32,
) -> Vec<i32> {
    let allowed = replicas + surge;
    let total: i32 = sets.iter().map(|s| s.0).sum();
    let to_add = allowed - total;
    let mut out: Vec<i32> = sets.iter().map(|s| s.0).collect();
    if to_add == 0 {
        return out;
    }
    let mut added = 0;
    for (i, (size, annotated)) in sets.iter().enumerate() {
        if *size == 0 && to_add > 0 {
            continue;
        }
        let proportion = if replicas == 0 {
            -size
        } else {
            let base = annotated.unwrap_or(status_replicas).max(1);
            let target = (f64::from(*size) * f64::from(allowed) / f64::from(base)).round() as i32;
            target - size
        };
        let room = to_add - added;
        let step = if to_add > 0 {
            proportion.clamp(0, room)
        } else {
            proportion.clamp(room, 0)
        };
        out[i] += step;
        added += step;
    }
    // What rounding left goes to the largest set (the first: sets come largest first).
    if let Some(first) = out.first_mut() {
        *first = (*first + to_add - added).max(0);
    }
    out
}

fn condition<'a>(status: &'a Value, kind: &str) -> Option<&'a Value> {
    status
        .get("conditions")?
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind)
}

fn field<'a>(c: Option<&'a Value>, name: &str) -> Option<&'a str> {
    c?.get(name)?.as_str()
}

/// A condition as it should read now: its transition time moves only when its status
/// does, its update time when its reason does or when `touch` says progress was made.
fn condition_json(
    prev: Option<&Value>,
    kind: &str,
    status: &str,
    reason: &str,
    message: &str,
    now: &str,
    touch: bool,
) -> Value {
    let same = field(prev, "status") == Some(status);
    let transition = field(prev, "lastTransitionTime")
        .filter(|_| same)
        .unwrap_or(now);
    let unchanged = same && field(prev, "reason") == Some(reason);
    let update = field(prev, "lastUpdateTime")
        .filter(|_| unchanged && !touch)
        .unwrap_or(now);
    json!({"type": kind, "status": status, "reason": reason, "message": message,
        "lastTransitionTime": transition, "lastUpdateTime": update})
}

#[async_trait::async_trait]
impl Reconciler for DeploymentController {
    fn name(&self) -> &'static str {
        "deployment-controller"
    }

    fn informers(&self) -> Vec<InformerSpec> {
        vec![
            InformerSpec::all("deployments"),
            InformerSpec::all("replicasets"),
        ]
    }

    fn keys_for(&self, resource: &str, change: &Change, ctx: &Context) -> Vec<String> {
        if resource == "deployments" {
            return vec![key_of(&change.object)];
        }
        let rs = &change.object;
        let ns = meta::namespace(rs).unwrap_or_default();
        let owner = controller_ref(rs)
            .filter(|o| o.get("kind").and_then(Value::as_str) == Some("Deployment"));
        match owner {
            Some(o) => vec![format!(
                "{ns}/{}",
                o.get("name").and_then(Value::as_str).unwrap_or("")
            )],
            // An orphan ReplicaSet: every Deployment that selects it may adopt it.
            None => ctx
                .cache("deployments")
                .list_namespace(ns)
                .into_iter()
                .filter(|d| selects(d, rs))
                .map(|d| key_of(&d))
                .collect(),
        }
    }

    async fn reconcile(&self, key: &str, ctx: &Context) -> Result<Action, ReconcileError> {
        let Some(raw) = ctx.cache("deployments").get(key) else {
            return Ok(Action::Done);
        };
        if raw.pointer("/metadata/deletionTimestamp").is_some() {
            return Ok(Action::Done);
        }
        let d: apps::Deployment = serde_json::from_value((*raw).clone())
            .map_err(|e| ReconcileError::Invalid(format!("deployment {key}: {e}")))?;
        let (ns, _) = split_key(key);
        let ns = ns.unwrap_or("default").to_string();
        let sets = self.claim(ctx, &raw, &ns).await?;
        let mut run = Rollout {
            ctx,
            raw: &raw,
            d: &d,
            ns: &ns,
            sets,
            created: None,
        };
        run.sync().await
    }
}

fn selects(d: &Value, rs: &Value) -> bool {
    let Some(sel) = d.pointer("/spec/selector") else {
        return false;
    };
    crate::api::selector::LabelSelector::from_label_selector_value(sel)
        .ok()
        .filter(|s| !s.is_empty())
        .is_some_and(|s| s.matches_object(rs))
}

fn owner_ref(d: &Value) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment", "name": meta::name(d),
        "uid": meta::uid(d), "controller": true, "blockOwnerDeletion": true})
}

impl DeploymentController {
    /// The Deployment's ReplicaSets: those it controls and still selects, and matching
    /// orphans it adopts; controlled ones it no longer selects are released.
    async fn claim(&self, ctx: &Context, d: &Value, ns: &str) -> Result<Vec<Rs>, ReconcileError> {
        let uid = meta::uid(d);
        let mut out = Vec::new();
        for rs in ctx.cache("replicasets").list_namespace(ns) {
            let owner = controller_ref(&rs)
                .and_then(|o| o.get("uid"))
                .and_then(Value::as_str);
            let name = meta::name(&rs).unwrap_or_default().to_string();
            let keep = match owner {
                Some(o) if Some(o) == uid => {
                    if selects(d, &rs) {
                        true
                    } else {
                        let patch = json!({"metadata": {"ownerReferences": [{"$patch": "delete", "uid": uid}], "uid": meta::uid(&rs)}});
                        ignore_gone(
                            ctx.client
                                .patch(
                                    "replicasets",
                                    Some(ns),
                                    &name,
                                    None,
                                    PatchType::Strategic,
                                    patch,
                                )
                                .await,
                        )?;
                        false
                    }
                }
                None if selects(d, &rs) && rs.pointer("/metadata/deletionTimestamp").is_none() => {
                    let patch = json!({"metadata": {"ownerReferences": [owner_ref(d)], "uid": meta::uid(&rs)}});
                    match ctx
                        .client
                        .patch(
                            "replicasets",
                            Some(ns),
                            &name,
                            None,
                            PatchType::Strategic,
                            patch,
                        )
                        .await
                    {
                        Ok(_) => true,
                        Err(ApiError::NotFound { .. } | ApiError::Conflict { .. }) => false,
                        Err(e) => return Err(e.into()),
                    }
                }
                _ => false,
            };
            if keep {
                if let Ok(typed) = serde_json::from_value((*rs).clone()) {
                    out.push(Rs { raw: rs, typed });
                }
            }
        }
        // Oldest first, as Kubernetes sorts them (by creation, then name).
        out.sort_by(|a, b| {
            a.created()
                .cmp(&b.created())
                .then_with(|| a.name().cmp(b.name()))
        });
        Ok(out)
    }
}

fn ignore_gone<T>(r: Result<T, ApiError>) -> Result<(), ReconcileError> {
    match r {
        Ok(_) | Err(ApiError::NotFound { .. }) | Err(ApiError::Conflict { .. }) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// One reconcile of one Deployment.
struct Rollout<'a> {
    ctx: &'a Context,
    raw: &'a Value,
    d: &'a apps::Deployment,
    ns: &'a str,
    sets: Vec<Rs>,
    /// Set when this pass created the new ReplicaSet (for the Progressing reason).
    created: Option<String>,
}

impl Rollout<'_> {
    fn replicas(&self) -> i32 {
        self.d.spec.replicas.unwrap_or(1)
    }

    fn template(&self) -> Value {
        self.raw
            .pointer("/spec/template")
            .cloned()
            .unwrap_or(json!({}))
    }

    fn new_index(&self) -> Option<usize> {
        let want = template_without_hash(&self.template());
        // The oldest match wins, as FindNewReplicaSet does.
        self.sets.iter().position(|rs| {
            template_without_hash(rs.raw.pointer("/spec/template").unwrap_or(&Value::Null)) == want
        })
    }

    fn max_old_revision(&self, new: Option<usize>) -> i64 {
        self.sets
            .iter()
            .enumerate()
            .filter(|(i, _)| Some(*i) != new)
            .map(|(_, r)| r.revision())
            .max()
            .unwrap_or(0)
    }

    async fn sync(&mut self) -> Result<Action, ReconcileError> {
        let paused = self.d.spec.paused.unwrap_or(false);
        let mut new = self.new_index();
        if !paused {
            new = Some(self.ensure_new(new).await?);
        } else if let Some(i) = new {
            self.sync_revision(i).await?;
        }
        if paused || self.is_scaling_event() {
            self.scale(new).await?;
        } else if is_recreate(self.d) {
            self.recreate(new).await?;
        } else {
            self.rolling(new).await?;
        }
        if !paused && self.complete(new) {
            self.cleanup(new).await?;
        }
        self.write_status(new, paused).await
    }

    /// Find or create the ReplicaSet of the current template and give it the newest
    /// revision.
    async fn ensure_new(&mut self, found: Option<usize>) -> Result<usize, ReconcileError> {
        if let Some(i) = found {
            self.sync_revision(i).await?;
            return Ok(i);
        }
        let collision = self.d.status.as_ref().and_then(|s| s.collision_count);
        let template = self.template();
        let hash = template_hash(&template, collision);
        let name = format!("{}-{hash}", meta::name(self.raw).unwrap_or("deploy"));
        let mut rs_template = template.clone();
        rs_template["metadata"]["labels"][HASH_LABEL] = json!(hash);
        let mut selector = self
            .raw
            .pointer("/spec/selector")
            .cloned()
            .unwrap_or(json!({}));
        selector["matchLabels"][HASH_LABEL] = json!(hash);
        let revision = self.max_old_revision(None) + 1;
        let all: Vec<&Rs> = self.sets.iter().collect();
        let replicas = new_rs_replicas(self.d, &all, 0);
        let mut annotations = self.copied_annotations();
        annotations.insert(REVISION.into(), json!(revision.to_string()));
        annotations.insert(DESIRED_REPLICAS.into(), json!(self.replicas().to_string()));
        annotations.insert(
            MAX_REPLICAS.into(),
            json!((self.replicas() + fenceposts(self.d).0).to_string()),
        );
        let body = json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": name, "namespace": self.ns,
                "labels": rs_template["metadata"]["labels"].clone(),
                "annotations": annotations,
                "ownerReferences": [owner_ref(self.raw)]},
            "spec": {"replicas": replicas, "minReadySeconds": self.d.spec.min_ready_seconds.unwrap_or(0),
                "selector": selector, "template": rs_template}});
        match self
            .ctx
            .client
            .create("replicasets", Some(self.ns), body)
            .await
        {
            Ok(rs) => {
                let typed = serde_json::from_value(rs.clone())
                    .map_err(|e| ReconcileError::Invalid(e.to_string()))?;
                let msg = format!("Scaled up replica set {name} from 0 to {replicas}");
                self.ctx
                    .recorder
                    .normal(self.raw, "ScalingReplicaSet", &msg)
                    .await;
                self.created = Some(name);
                self.sets.push(Rs {
                    raw: Arc::new(rs),
                    typed,
                });
                Ok(self.sets.len() - 1)
            }
            Err(ApiError::AlreadyExists { .. }) => {
                // A ReplicaSet of that name with another template: a hash collision. Count
                // it so the next hash differs, as Kubernetes does.
                let count = collision.unwrap_or(0) + 1;
                let patch = json!({"status": {"collisionCount": count}});
                ignore_gone(
                    self.ctx
                        .client
                        .patch(
                            "deployments",
                            Some(self.ns),
                            meta::name(self.raw).unwrap_or_default(),
                            Some("status"),
                            PatchType::Merge,
                            patch,
                        )
                        .await,
                )?;
                Err(ReconcileError::Invalid(format!(
                    "hash collision on ReplicaSet {name}"
                )))
            }
            Err(e) => Err(e.into()),
        }
    }

    fn copied_annotations(&self) -> Map<String, Value> {
        self.raw
            .pointer("/metadata/annotations")
            .and_then(Value::as_object)
            .map(|a| {
                a.iter()
                    .filter(|(k, _)| !NOT_COPIED.contains(&k.as_str()))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The new ReplicaSet carries the newest revision (a rollback to an old template moves
    /// its revision up, recording the old one in revision-history) and the Deployment's
    /// annotations.
    async fn sync_revision(&mut self, i: usize) -> Result<(), ReconcileError> {
        let want = self.max_old_revision(Some(i)) + 1;
        let rs = &self.sets[i];
        let have = rs.revision();
        let mut annotations = Map::new();
        if have < want {
            annotations.insert(REVISION.into(), json!(want.to_string()));
            if have > 0 {
                let mut history: Vec<String> = annotation(&rs.raw, REVISION_HISTORY)
                    .map(|h| h.split(',').map(str::to_string).collect())
                    .unwrap_or_default();
                history.push(have.to_string());
                annotations.insert(REVISION_HISTORY.into(), json!(history.join(",")));
            }
        }
        for (k, v) in self.copied_annotations() {
            if annotation(&rs.raw, &k) != v.as_str() {
                annotations.insert(k, v);
            }
        }
        if annotations.is_empty() {
            return Ok(());
        }
        let name = rs.name().to_string();
        let out = self
            .ctx
            .client
            .patch(
                "replicasets",
                Some(self.ns),
                &name,
                None,
                PatchType::Merge,
                json!({"metadata": {"annotations": annotations}}),
            )
            .await;
        if let Ok(v) = &out {
            if let Ok(typed) = serde_json::from_value(v.clone()) {
                self.sets[i] = Rs {
                    raw: Arc::new(v.clone()),
                    typed,
                };
            }
        }
        ignore_gone(out)
    }

    /// Set one ReplicaSet's size, with the annotations proportional scaling reads.
    async fn resize(&mut self, i: usize, size: i32) -> Result<bool, ReconcileError> {
        let rs = &self.sets[i];
        let desired = self.replicas().to_string();
        let max = (self.replicas() + fenceposts(self.d).0).to_string();
        let same = rs.replicas() == size
            && annotation(&rs.raw, DESIRED_REPLICAS) == Some(desired.as_str())
            && annotation(&rs.raw, MAX_REPLICAS) == Some(max.as_str());
        if same {
            return Ok(false);
        }
        let (name, from) = (rs.name().to_string(), rs.replicas());
        let patch = json!({"metadata": {"annotations": {DESIRED_REPLICAS: desired, MAX_REPLICAS: max}},
            "spec": {"replicas": size}});
        match self
            .ctx
            .client
            .patch(
                "replicasets",
                Some(self.ns),
                &name,
                None,
                PatchType::Merge,
                patch,
            )
            .await
        {
            Ok(v) => {
                if from != size {
                    let verb = if size > from { "up" } else { "down" };
                    let msg = format!("Scaled {verb} replica set {name} from {from} to {size}");
                    self.ctx
                        .recorder
                        .normal(self.raw, "ScalingReplicaSet", &msg)
                        .await;
                }
                if let Ok(typed) = serde_json::from_value(v.clone()) {
                    self.sets[i] = Rs {
                        raw: Arc::new(v),
                        typed,
                    };
                }
                Ok(from != size)
            }
            Err(ApiError::NotFound { .. } | ApiError::Conflict { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// The Deployment was scaled: some active ReplicaSet was sized for another replica
    /// count.
    fn is_scaling_event(&self) -> bool {
        let want = self.replicas().to_string();
        self.sets
            .iter()
            .filter(|r| r.replicas() > 0)
            .any(|r| annotation(&r.raw, DESIRED_REPLICAS).is_some_and(|d| d != want))
    }

    async fn scale(&mut self, new: Option<usize>) -> Result<(), ReconcileError> {
        let active: Vec<usize> = (0..self.sets.len())
            .filter(|i| self.sets[*i].replicas() > 0)
            .collect();
        // One active set (or none): it takes all replicas.
        if active.len() <= 1 {
            if let Some(i) = active.first().copied().or(new) {
                self.resize(i, self.replicas()).await?;
            }
            return Ok(());
        }
        let (surge, _) = fenceposts(self.d);
        let surge = if is_recreate(self.d) { 0 } else { surge };
        // Largest first, newer first among equals.
        let mut order = active.clone();
        order.sort_by(|a, b| {
            let (ra, rb) = (&self.sets[*a], &self.sets[*b]);
            rb.replicas()
                .cmp(&ra.replicas())
                .then_with(|| rb.created().cmp(&ra.created()))
        });
        let sets: Vec<(i32, Option<i32>)> = order
            .iter()
            .map(|i| {
                let rs = &self.sets[*i];
                (
                    rs.replicas(),
                    annotation(&rs.raw, MAX_REPLICAS).and_then(|m| m.parse().ok()),
                )
            })
            .collect();
        let status_replicas = self.d.status.as_ref().and_then(|s| s.replicas).unwrap_or(0);
        let sizes = proportional(&sets, self.replicas(), surge, status_replicas);
        for (i, size) in order.into_iter().zip(sizes) {
            self.resize(i, size).await?;
        }
        Ok(())
    }

    fn old(&self, new: Option<usize>) -> Vec<usize> {
        (0..self.sets.len()).filter(|i| Some(*i) != new).collect()
    }

    async fn rolling(&mut self, new: Option<usize>) -> Result<(), ReconcileError> {
        let Some(n) = new else { return Ok(()) };
        let all: Vec<&Rs> = self.sets.iter().collect();
        let target = new_rs_replicas(self.d, &all, self.sets[n].replicas()).min(self.replicas());
        let target = if self.sets[n].replicas() > self.replicas() {
            self.replicas()
        } else {
            target
        };
        if self.resize(n, target).await? {
            return Ok(());
        }
        let old = self.old(new);
        let old_sets: Vec<&Rs> = old.iter().map(|i| &self.sets[*i]).collect();
        let sizes = scale_down_old(self.d, &old_sets, Some(&self.sets[n]));
        for (i, size) in old.into_iter().zip(sizes) {
            if size != self.sets[i].replicas() {
                self.resize(i, size).await?;
            }
        }
        Ok(())
    }

    async fn recreate(&mut self, new: Option<usize>) -> Result<(), ReconcileError> {
        let old = self.old(new);
        for i in &old {
            if self.sets[*i].replicas() > 0 {
                self.resize(*i, 0).await?;
            }
        }
        // The new pods start only once every old one is gone.
        let old_running = old.iter().any(|i| {
            let s = self.sets[*i].status();
            self.sets[*i].replicas() > 0 || s.replicas > 0
        });
        if let (false, Some(n)) = (old_running, new) {
            self.resize(n, self.replicas()).await?;
        }
        Ok(())
    }

    fn complete(&self, new: Option<usize>) -> bool {
        let Some(n) = new else { return false };
        let rs = &self.sets[n];
        let s = rs.status();
        let replicas = self.replicas();
        let old_pods: i32 = self
            .old(new)
            .iter()
            .map(|i| self.sets[*i].status().replicas)
            .sum();
        rs.replicas() == replicas
            && s.replicas == replicas
            && s.available_replicas.unwrap_or(0) >= replicas
            && old_pods == 0
    }

    /// Old ReplicaSets scaled to zero beyond revisionHistoryLimit are deleted, oldest
    /// revision first.
    async fn cleanup(&mut self, new: Option<usize>) -> Result<(), ReconcileError> {
        let limit = self.d.spec.revision_history_limit.unwrap_or(10).max(0) as usize;
        let mut idle: Vec<&Rs> = self
            .old(new)
            .into_iter()
            .map(|i| &self.sets[i])
            .filter(|r| {
                r.replicas() == 0
                    && r.status().replicas == 0
                    && r.raw.pointer("/metadata/deletionTimestamp").is_none()
            })
            .collect();
        if idle.len() <= limit {
            return Ok(());
        }
        idle.sort_by_key(|r| r.revision());
        let doomed: Vec<String> = idle[..idle.len() - limit]
            .iter()
            .map(|r| r.name().to_string())
            .collect();
        for name in doomed {
            ignore_gone(
                self.ctx
                    .client
                    .delete("replicasets", Some(self.ns), &name, None)
                    .await,
            )?;
        }
        Ok(())
    }

    async fn write_status(
        &mut self,
        new: Option<usize>,
        paused: bool,
    ) -> Result<Action, ReconcileError> {
        let now: DateTime<Utc> = Utc::now();
        let stamp = now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let old = self.d.status.clone().unwrap_or_default();
        let replicas = self.replicas();
        let sum = |f: fn(&apps::ReplicaSetStatus) -> i32| -> i32 {
            self.sets.iter().map(|r| f(&r.status())).sum()
        };
        let total = sum(|s| s.replicas);
        let ready = sum(|s| s.ready_replicas.unwrap_or(0));
        let available = sum(|s| s.available_replicas.unwrap_or(0));
        let updated = new.map_or(0, |n| self.sets[n].status().replicas);
        let (_, max_unavailable) = fenceposts(self.d);
        let new_name = new
            .map(|n| self.sets[n].name().to_string())
            .unwrap_or_default();
        let mut conditions = Vec::new();
        let old_raw = self.raw.get("status").cloned().unwrap_or(json!({}));
        let avail = condition(&old_raw, "Available");
        conditions.push(if available >= replicas - max_unavailable {
            condition_json(
                avail,
                "Available",
                "True",
                "MinimumReplicasAvailable",
                "Deployment has minimum availability.",
                &stamp,
                false,
            )
        } else {
            condition_json(
                avail,
                "Available",
                "False",
                "MinimumReplicasUnavailable",
                "Deployment does not have minimum availability.",
                &stamp,
                false,
            )
        });
        let prog = condition(&old_raw, "Progressing");
        let deadline = self.d.spec.progress_deadline_seconds;
        let complete = self.complete(new);
        let old_status_old = old.replicas.unwrap_or(0) - old.updated_replicas.unwrap_or(0);
        let progressed = updated > old.updated_replicas.unwrap_or(0)
            || (total - updated) < old_status_old
            || ready > old.ready_replicas.unwrap_or(0)
            || available > old.available_replicas.unwrap_or(0);
        let mut requeue = None;
        let progressing = if paused {
            Some(condition_json(
                prog,
                "Progressing",
                "Unknown",
                "DeploymentPaused",
                "Deployment is paused",
                &stamp,
                false,
            ))
        } else if deadline.is_none() {
            None
        } else if complete {
            Some(condition_json(
                prog,
                "Progressing",
                "True",
                "NewReplicaSetAvailable",
                &format!("ReplicaSet \"{new_name}\" has successfully progressed."),
                &stamp,
                false,
            ))
        } else if let Some(name) = &self.created {
            Some(condition_json(
                prog,
                "Progressing",
                "True",
                "NewReplicaSetCreated",
                &format!("Created new replica set \"{name}\""),
                &stamp,
                true,
            ))
        } else if progressed
            || prog.is_none()
            || (field(prog, "reason") == Some("DeploymentPaused"))
        {
            let (reason, msg) = if field(prog, "reason") == Some("DeploymentPaused") {
                ("DeploymentResumed", "Deployment is resumed".to_string())
            } else if progressed {
                (
                    "ReplicaSetUpdated",
                    format!("ReplicaSet \"{new_name}\" is progressing."),
                )
            } else {
                (
                    "FoundNewReplicaSet",
                    format!("Found new replica set \"{new_name}\""),
                )
            };
            Some(condition_json(
                prog,
                "Progressing",
                if reason == "DeploymentResumed" {
                    "Unknown"
                } else {
                    "True"
                },
                reason,
                &msg,
                &stamp,
                true,
            ))
        } else {
            // No progress this pass: has it been too long since the last?
            let last = field(prog, "lastUpdateTime")
                .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.with_timezone(&Utc))
                .unwrap_or(now);
            let limit = chrono::Duration::seconds(i64::from(deadline.unwrap_or(600)));
            if (field(prog, "reason") == Some("ProgressDeadlineExceeded")) || now - last > limit {
                Some(condition_json(
                    prog,
                    "Progressing",
                    "False",
                    "ProgressDeadlineExceeded",
                    &format!("ReplicaSet \"{new_name}\" has timed out progressing."),
                    &stamp,
                    false,
                ))
            } else {
                requeue = Some(
                    (last + limit - now).to_std().unwrap_or_default() + Duration::from_secs(1),
                );
                prog.cloned()
            }
        };
        conditions.extend(progressing);
        let mut status = json!({
            "observedGeneration": self.raw.pointer("/metadata/generation").cloned().unwrap_or(json!(1)),
            "replicas": total,
            "updatedReplicas": updated,
            "readyReplicas": ready,
            "availableReplicas": available,
            "unavailableReplicas": (replicas - available).max(0),
            "conditions": conditions,
        });
        if let Some(c) = old.collision_count {
            status["collisionCount"] = json!(c);
        }
        let mut annotations = json!({});
        if let Some(n) = new {
            let rev = self.sets[n].revision().to_string();
            if annotation(self.raw, REVISION) != Some(rev.as_str()) {
                annotations[REVISION] = json!(rev);
            }
        }
        let name = meta::name(self.raw).unwrap_or_default().to_string();
        if annotations.as_object().is_some_and(|a| !a.is_empty()) {
            ignore_gone(
                self.ctx
                    .client
                    .patch(
                        "deployments",
                        Some(self.ns),
                        &name,
                        None,
                        PatchType::Merge,
                        json!({"metadata": {"annotations": annotations}}),
                    )
                    .await,
            )?;
        }
        let current = self.raw.get("status").cloned().unwrap_or(json!({}));
        let changed = status
            .as_object()
            .is_some_and(|m| m.iter().any(|(k, v)| current.get(k) != Some(v)));
        if changed {
            ignore_gone(
                self.ctx
                    .client
                    .patch(
                        "deployments",
                        Some(self.ns),
                        &name,
                        Some("status"),
                        PatchType::Merge,
                        json!({"status": status}),
                    )
                    .await,
            )?;
        }
        // Readiness over minReadySeconds and the progress deadline move with time alone.
        let min_ready = self.d.spec.min_ready_seconds.unwrap_or(0);
        Ok(match (requeue, min_ready > 0 && !complete) {
            (Some(r), _) => Action::RequeueAfter(r),
            (None, true) => Action::RequeueAfter(Duration::from_secs(1)),
            _ => Action::Done,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment(replicas: i32, surge: &str, unavailable: &str) -> apps::Deployment {
        serde_json::from_value(json!({"metadata": {"name": "web"}, "spec": {
            "replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": surge, "maxUnavailable": unavailable}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}}))
        .expect("deployment")
    }

    fn rs(name: &str, replicas: i32, available: i32) -> Rs {
        let raw = json!({"metadata": {"name": name}, "spec": {"replicas": replicas,
            "selector": {}}, "status": {"replicas": replicas, "availableReplicas": available}});
        Rs {
            typed: serde_json::from_value(raw.clone()).expect("rs"),
            raw: Arc::new(raw),
        }
    }

    #[test]
    fn fenceposts_round_surge_up_and_unavailability_down() {
        assert_eq!(fenceposts(&deployment(10, "25%", "25%")), (3, 2));
        assert_eq!(fenceposts(&deployment(1, "25%", "25%")), (1, 0));
        assert_eq!(fenceposts(&deployment(3, "0", "0")), (0, 1));
    }

    #[test]
    fn the_new_set_surges_no_further_than_max_surge() {
        let d = deployment(10, "25%", "25%");
        let old = rs("old", 10, 10);
        let new = rs("new", 0, 0);
        assert_eq!(new_rs_replicas(&d, &[&old, &new], 0), 3);
        let new = rs("new", 3, 0);
        assert_eq!(
            new_rs_replicas(&d, &[&old, &new], 3),
            3,
            "already at 13 pods"
        );
    }

    #[test]
    fn old_sets_scale_down_only_to_minimum_availability() {
        let d = deployment(10, "25%", "25%");
        // 10 old available, 3 new not yet available: 2 may go (min available 8).
        let old = rs("old", 10, 10);
        let new = rs("new", 3, 0);
        assert_eq!(scale_down_old(&d, &[&old], Some(&new)), [8]);
        // Unhealthy old replicas go first, beyond that budget.
        let sick = rs("sick", 10, 6);
        assert_eq!(scale_down_old(&d, &[&sick], Some(&rs("new", 3, 3))), [5]);
    }

    #[test]
    fn scaling_mid_rollout_spreads_proportionally() {
        // 10 replicas at surge 3 (13 total: 8 old + 5 new), scaled to 20 (surge 5): 25.
        let sizes = proportional(&[(8, Some(13)), (5, Some(13))], 20, 5, 13);
        assert_eq!(sizes.iter().sum::<i32>(), 25);
        assert_eq!(sizes, [15, 10]);
        // Scaled down to 5 (surge 2): 7 in the same proportion.
        let down = proportional(&[(8, Some(13)), (5, Some(13))], 5, 2, 13);
        assert_eq!(down.iter().sum::<i32>(), 7);
        assert_eq!(down, [4, 3]);
    }

    #[test]
    fn templates_echoed_back_with_go_zero_values_are_the_same_template() {
        let t = json!({"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [
            {"name": "c", "image": "i", "resources": {}}]}});
        let echoed = json!({"metadata": {"generation": 0, "labels": {"app": "web"}}, "spec": {
            "hostPID": false, "containers": [{"name": "c", "image": "i", "stdin": false, "resources": {}}]}});
        assert_eq!(template_without_hash(&t), template_without_hash(&echoed));
        assert_eq!(template_hash(&t, None), template_hash(&echoed, None));
    }

    #[test]
    fn the_hash_ignores_the_hash_label_and_moves_with_collisions() {
        let t = json!({"metadata": {"labels": {"app": "web"}}, "spec": {"containers": []}});
        let mut labelled = t.clone();
        labelled["metadata"]["labels"][HASH_LABEL] = json!("x");
        assert_eq!(template_hash(&t, None), template_hash(&labelled, None));
        assert_ne!(template_hash(&t, None), template_hash(&t, Some(1)));
        assert!(template_hash(&t, None)
            .chars()
            .all(|c| "bcdfghjklmnpqrstvwxz2456789".contains(c)));
    }
}
