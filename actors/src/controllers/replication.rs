//! The replication controller: keeps `spec.replicas` pods matching each
//! ReplicationController's selector, and reports how many exist, are ready and available.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::pods::{self, controller_ref};
use crate::api::selector::LabelSelector;
use crate::api::{meta, ApiError};
use crate::client::{EventKind, PatchType};
use crate::runtime::{
    key_of, split_key, Action, Change, Context, InformerSpec, ReconcileError, Reconciler,
};

/// Creates and deletes this controller has asked for but not yet seen in its pod cache.
/// Until they are seen it does not act again for that RC, so it never over-creates while
/// its own creates are in flight (Kubernetes' ControllerExpectations).
#[derive(Debug, Clone, Copy)]
struct Expectations {
    adds: i64,
    dels: i64,
    set: Instant,
}

/// Expectations older than this are assumed lost (a watch event that never came).
const EXPECTATIONS_TTL: Duration = Duration::from_secs(300);
/// Pods created at most per reconcile; the rest follow on the next pass.
const BURST: usize = 500;

#[derive(Default)]
pub struct ReplicationController {
    expectations: Mutex<HashMap<String, Expectations>>,
}

impl ReplicationController {
    fn expect(&self, key: &str, adds: i64, dels: i64) {
        self.lock().insert(
            key.to_string(),
            Expectations {
                adds,
                dels,
                set: Instant::now(),
            },
        );
    }

    fn observed(&self, key: &str, kind: EventKind) {
        if let Some(e) = self.lock().get_mut(key) {
            match kind {
                EventKind::Added => e.adds -= 1,
                EventKind::Deleted => e.dels -= 1,
                EventKind::Modified => {}
            }
        }
    }

    fn satisfied(&self, key: &str) -> bool {
        match self.lock().get(key) {
            None => true,
            Some(e) => (e.adds <= 0 && e.dels <= 0) || e.set.elapsed() > EXPECTATIONS_TTL,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Expectations>> {
        self.expectations.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn selector_of(rc: &Value) -> Option<LabelSelector> {
    let map = rc.pointer("/spec/selector")?.as_object()?;
    if map.is_empty() {
        return None;
    }
    let labels: BTreeMap<String, String> = map
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
        .collect();
    Some(LabelSelector::from_match_labels(&labels))
}

fn owner_ref(rc: &Value) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "ReplicationController",
        "name": meta::name(rc),
        "uid": meta::uid(rc),
        "controller": true,
        "blockOwnerDeletion": true,
    })
}

fn owned_by(pod: &Value, rc: &Value) -> bool {
    controller_ref(pod)
        .and_then(|r| r.get("uid"))
        .and_then(Value::as_str)
        == meta::uid(rc)
}

/// The pod a template describes, owned by `rc`.
fn pod_from_template(rc: &Value) -> Value {
    let template = rc.pointer("/spec/template").cloned().unwrap_or(json!({}));
    let name = meta::name(rc).unwrap_or("rc");
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": format!("{name}-"),
            "labels": template.pointer("/metadata/labels").cloned().unwrap_or(json!({})),
            "annotations": template.pointer("/metadata/annotations").cloned().unwrap_or(json!({})),
            "ownerReferences": [owner_ref(rc)],
        },
        "spec": template.get("spec").cloned().unwrap_or(json!({})),
    })
}

fn is_available(pod: &Value, min_ready_seconds: i64) -> bool {
    if !pods::is_ready(pod) {
        return false;
    }
    if min_ready_seconds <= 0 {
        return true;
    }
    let since = pods::condition(pod, "Ready")
        .and_then(|c| c.get("lastTransitionTime"))
        .and_then(Value::as_str)
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok());
    since.is_some_and(|t| {
        (chrono::Utc::now() - t.with_timezone(&chrono::Utc)).num_seconds() >= min_ready_seconds
    })
}

#[async_trait::async_trait]
impl Reconciler for ReplicationController {
    fn name(&self) -> &'static str {
        "replication-controller"
    }

    fn informers(&self) -> Vec<InformerSpec> {
        vec![
            InformerSpec::all("replicationcontrollers"),
            InformerSpec::all("pods"),
        ]
    }

    fn keys_for(&self, resource: &str, change: &Change, ctx: &Context) -> Vec<String> {
        if resource == "replicationcontrollers" {
            return vec![key_of(&change.object)];
        }
        let pod = &change.object;
        let ns = meta::namespace(pod).unwrap_or_default();
        let mut keys = Vec::new();
        for p in [Some(pod), change.old.as_ref()].into_iter().flatten() {
            if let Some(owner) = controller_ref(p) {
                if owner.get("kind").and_then(Value::as_str) == Some("ReplicationController") {
                    let key = format!(
                        "{ns}/{}",
                        owner.get("name").and_then(Value::as_str).unwrap_or("")
                    );
                    if !keys.contains(&key) {
                        keys.push(key);
                    }
                }
            }
        }
        if let Some(owner_key) = keys.first() {
            self.observed(owner_key, change.kind);
        } else if pods::is_active(pod) {
            // An orphan: every RC whose selector matches may adopt it.
            for rc in ctx.cache("replicationcontrollers").list_namespace(ns) {
                if selector_of(&rc).is_some_and(|s| s.matches_object(pod)) {
                    keys.push(key_of(&rc));
                }
            }
        }
        keys
    }

    async fn reconcile(&self, key: &str, ctx: &Context) -> Result<Action, ReconcileError> {
        let Some(rc) = ctx.cache("replicationcontrollers").get(key) else {
            self.lock().remove(key);
            return Ok(Action::Done);
        };
        let (ns, _) = split_key(key);
        let ns = ns.unwrap_or("default");
        let Some(selector) = selector_of(&rc) else {
            ctx.recorder
                .warning(
                    &rc,
                    "InvalidSelector",
                    "spec.selector is empty: no pods can be managed",
                )
                .await;
            return Ok(Action::Done);
        };
        let candidates: Vec<_> = ctx
            .cache("pods")
            .list_namespace(ns)
            .into_iter()
            .filter(|p| pods::is_active(p) && selector.matches_object(p))
            .collect();
        let mut active = Vec::new();
        for pod in candidates {
            let adoptable = controller_ref(&pod).is_none() && !pods::is_deleting(&rc);
            if owned_by(&pod, &rc) || (adoptable && self.adopt(ctx, &rc, &pod).await?) {
                active.push(pod);
            }
        }
        if self.satisfied(key) && !pods::is_deleting(&rc) {
            self.manage(key, ctx, &rc, &mut active, ns).await?;
        }
        self.write_status(ctx, &rc, &active, ns).await?;
        // Available counts depend on time (minReadySeconds); look again once it can change.
        let min_ready = rc
            .pointer("/spec/minReadySeconds")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        Ok(if min_ready > 0 {
            Action::RequeueAfter(Duration::from_secs(min_ready as u64))
        } else {
            Action::Done
        })
    }
}

impl ReplicationController {
    async fn adopt(&self, ctx: &Context, rc: &Value, pod: &Value) -> Result<bool, ReconcileError> {
        let ns = meta::namespace(pod).unwrap_or("default");
        let name = meta::name(pod).unwrap_or_default();
        let patch = json!({"metadata": {"ownerReferences": [owner_ref(rc)],
            "resourceVersion": meta::resource_version(pod)}});
        match ctx
            .client
            .patch("pods", Some(ns), name, None, PatchType::Strategic, patch)
            .await
        {
            Ok(_) => Ok(true),
            // Someone else changed or removed it first; the next event brings it back.
            Err(ApiError::Conflict { .. }) | Err(ApiError::NotFound { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    async fn manage(
        &self,
        key: &str,
        ctx: &Context,
        rc: &Value,
        active: &mut Vec<std::sync::Arc<Value>>,
        ns: &str,
    ) -> Result<(), ReconcileError> {
        let want = rc
            .pointer("/spec/replicas")
            .and_then(Value::as_i64)
            .unwrap_or(1)
            .max(0) as usize;
        let have = active.len();
        if have < want {
            let n = (want - have).min(BURST);
            self.expect(key, n as i64, 0);
            let template = pod_from_template(rc);
            for i in 0..n {
                match ctx.client.create("pods", Some(ns), template.clone()).await {
                    Ok(pod) => {
                        let msg = format!("Created pod: {}", meta::name(&pod).unwrap_or_default());
                        ctx.recorder.normal(rc, "SuccessfulCreate", &msg).await;
                    }
                    Err(e) => {
                        // The creates that did not happen will not be observed either.
                        self.expect(key, 0, 0);
                        ctx.recorder
                            .warning(rc, "FailedCreate", &format!("Error creating: {e}"))
                            .await;
                        tracing::debug!(created = i, error = %e, "pod create failed");
                        return Err(e.into());
                    }
                }
            }
        } else if have > want {
            active.sort_by(|a, b| pods::deletion_order(a, b));
            let victims: Vec<_> = active.drain(..have - want).collect();
            self.expect(key, 0, victims.len() as i64);
            for pod in victims {
                let name = meta::name(&pod).unwrap_or_default();
                match ctx.client.delete("pods", Some(ns), name, None).await {
                    Ok(_) | Err(ApiError::NotFound { .. }) => {
                        ctx.recorder
                            .normal(rc, "SuccessfulDelete", &format!("Deleted pod: {name}"))
                            .await;
                    }
                    Err(e) => {
                        self.expect(key, 0, 0);
                        return Err(e.into());
                    }
                }
            }
        }
        Ok(())
    }

    async fn write_status(
        &self,
        ctx: &Context,
        rc: &Value,
        active: &[std::sync::Arc<Value>],
        ns: &str,
    ) -> Result<(), ReconcileError> {
        let min_ready = rc
            .pointer("/spec/minReadySeconds")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        let template_labels = rc
            .pointer("/spec/template/metadata/labels")
            .and_then(Value::as_object);
        let fully_labeled = active
            .iter()
            .filter(|p| {
                template_labels.is_none_or(|tl| {
                    tl.iter().all(|(k, v)| {
                        p.pointer(&format!(
                            "/metadata/labels/{}",
                            k.replace('~', "~0").replace('/', "~1")
                        )) == Some(v)
                    })
                })
            })
            .count();
        let status = json!({
            "replicas": active.len(),
            "fullyLabeledReplicas": fully_labeled,
            "readyReplicas": active.iter().filter(|p| pods::is_ready(p)).count(),
            "availableReplicas": active.iter().filter(|p| is_available(p, min_ready)).count(),
            "observedGeneration": rc.pointer("/metadata/generation").cloned().unwrap_or(json!(1)),
        });
        let current = rc.get("status").cloned().unwrap_or(json!({}));
        let unchanged = [
            "replicas",
            "fullyLabeledReplicas",
            "readyReplicas",
            "availableReplicas",
            "observedGeneration",
        ]
        .iter()
        .all(|k| current.get(*k).cloned().unwrap_or(json!(0)) == status[*k]);
        if unchanged {
            return Ok(());
        }
        let name = meta::name(rc).unwrap_or_default();
        match ctx
            .client
            .patch(
                "replicationcontrollers",
                Some(ns),
                name,
                Some("status"),
                PatchType::Merge,
                json!({"status": status}),
            )
            .await
        {
            Ok(_) | Err(ApiError::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_pod_is_owned_by_its_rc_and_named_after_it() {
        let rc = json!({"metadata": {"name": "web", "uid": "u1"}, "spec": {"template": {
            "metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}});
        let pod = pod_from_template(&rc);
        assert_eq!(pod["metadata"]["generateName"], "web-");
        assert_eq!(pod["metadata"]["labels"]["app"], "web");
        assert_eq!(pod["metadata"]["ownerReferences"][0]["uid"], "u1");
        assert_eq!(pod["metadata"]["ownerReferences"][0]["controller"], true);
        assert!(owned_by(&pod, &rc));
    }

    #[test]
    fn expectations_hold_back_until_creates_are_observed() {
        let rc = ReplicationController::default();
        rc.expect("ns/web", 2, 0);
        assert!(!rc.satisfied("ns/web"));
        rc.observed("ns/web", EventKind::Added);
        assert!(!rc.satisfied("ns/web"));
        rc.observed("ns/web", EventKind::Added);
        assert!(rc.satisfied("ns/web"));
    }

    #[test]
    fn empty_selector_selects_nothing_rather_than_everything() {
        assert!(selector_of(&json!({"spec": {"selector": {}}})).is_none());
        assert!(selector_of(&json!({"spec": {}})).is_none());
    }
}
