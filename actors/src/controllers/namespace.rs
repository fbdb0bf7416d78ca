//! The namespace controller: once a namespace is being deleted (the gateway has set its
//! `deletionTimestamp` and phase `Terminating`, and refuses new objects in it), deletes
//! everything inside it, and when nothing is left removes the `kubernetes` finalizer
//! through the `finalize` subresource so the gateway can remove the namespace itself.

use std::time::Duration;

use serde_json::Value;
use tracing::Instrument;

use super::pods;
use crate::api::{meta, resources, ApiError};
use crate::client::{EventKind, ListParams};
use crate::runtime::{key_of, Action, Change, Context, InformerSpec, ReconcileError, Reconciler};

/// The finalizer the gateway puts in `spec.finalizers` of every namespace; this
/// controller owns it.
pub const FINALIZER: &str = "kubernetes";

/// How long to wait before looking again at content that is still going away (objects
/// held by finalizers of their own, such as a foreground-deleted controller).
const RECHECK: Duration = Duration::from_secs(1);

/// Empties and finalizes namespaces that are being deleted.
#[derive(Debug, Default, Clone, Copy)]
pub struct NamespaceController;

impl NamespaceController {
    pub fn new() -> Self {
        NamespaceController
    }
}

fn is_terminating(ns: &Value) -> bool {
    pods::is_deleting(ns)
        || ns.pointer("/status/phase").and_then(Value::as_str) == Some("Terminating")
}

/// The namespaced resources in the order their objects are deleted: workload
/// controllers (the kinds that scale) first so they do not race to replace what is being
/// removed, events last so the story of the teardown stays readable until the end.
fn deletion_order() -> Vec<&'static str> {
    let rank = |r: &resources::ResourceInfo| {
        if r.strategy.scale().is_some() {
            0
        } else if r.name == "events" {
            2
        } else {
            1
        }
    };
    let mut kinds: Vec<_> = resources::registry()
        .stored()
        .into_iter()
        .filter(|r| r.namespaced)
        .collect();
    kinds.sort_by_key(|r| rank(r));
    kinds.into_iter().map(|r| r.name).collect()
}

fn has_finalizer(ns: &Value) -> bool {
    ns.pointer("/spec/finalizers")
        .and_then(Value::as_array)
        .is_some_and(|f| f.iter().any(|v| v.as_str() == Some(FINALIZER)))
}

/// The namespace with this controller's finalizer removed from `spec.finalizers`, leaving
/// any other finalizer for whoever owns it.
fn without_finalizer(ns: &Value) -> Value {
    let mut out = ns.clone();
    if let Some(list) = out
        .pointer_mut("/spec/finalizers")
        .and_then(Value::as_array_mut)
    {
        list.retain(|v| v.as_str() != Some(FINALIZER));
    }
    out
}

#[async_trait::async_trait]
impl Reconciler for NamespaceController {
    fn name(&self) -> &'static str {
        "namespace-controller"
    }

    fn informers(&self) -> Vec<InformerSpec> {
        vec![InformerSpec::all("namespaces")]
    }

    fn keys_for(&self, _resource: &str, change: &Change, _ctx: &Context) -> Vec<String> {
        if change.kind != EventKind::Deleted && is_terminating(&change.object) {
            vec![key_of(&change.object)]
        } else {
            vec![]
        }
    }

    async fn reconcile(&self, key: &str, ctx: &Context) -> Result<Action, ReconcileError> {
        let span = tracing::info_span!("sync_namespace", namespace = %key);
        self.sync(key, ctx).instrument(span).await
    }
}

impl NamespaceController {
    async fn sync(&self, name: &str, ctx: &Context) -> Result<Action, ReconcileError> {
        let Some(ns) = ctx.cache("namespaces").get(name) else {
            return Ok(Action::Done);
        };
        if !is_terminating(&ns) {
            return Ok(Action::Done);
        }
        self.delete_content(ctx, name).await?;
        let remaining = self.remaining(ctx, name).await?;
        if remaining > 0 {
            tracing::debug!(remaining, "namespace content still going away");
            return Ok(Action::RequeueAfter(RECHECK));
        }
        self.finalize(ctx, name).await?;
        Ok(Action::Done)
    }

    /// Ask for the deletion of every object in the namespace not already being deleted.
    async fn delete_content(&self, ctx: &Context, ns: &str) -> Result<(), ReconcileError> {
        for resource in deletion_order() {
            let list = ctx
                .client
                .list(resource, Some(ns), &ListParams::default())
                .await?;
            for obj in list.items.iter().filter(|o| !pods::is_deleting(o)) {
                let name = meta::name(obj).unwrap_or_default();
                match ctx.client.delete(resource, Some(ns), name, None).await {
                    Ok(_) | Err(ApiError::NotFound { .. }) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(())
    }

    /// Objects still in the namespace (deleted ones held back by finalizers included).
    async fn remaining(&self, ctx: &Context, ns: &str) -> Result<usize, ReconcileError> {
        let mut count = 0;
        for resource in deletion_order() {
            let list = ctx
                .client
                .list(resource, Some(ns), &ListParams::default())
                .await?;
            count += list.items.len();
        }
        Ok(count)
    }

    /// Remove this controller's finalizer, reading the namespace fresh so the update's
    /// resourceVersion precondition holds.
    async fn finalize(&self, ctx: &Context, name: &str) -> Result<(), ReconcileError> {
        let ns = match ctx.client.get("namespaces", None, name).await {
            Ok(ns) => ns,
            Err(ApiError::NotFound { .. }) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        if !has_finalizer(&ns) {
            return Ok(());
        }
        match ctx
            .client
            .update(
                "namespaces",
                None,
                name,
                Some("finalize"),
                without_finalizer(&ns),
            )
            .await
        {
            Ok(_) | Err(ApiError::NotFound { .. }) => {
                tracing::info!("namespace emptied and finalized");
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_namespace_is_terminating_once_marked_for_deletion_or_in_phase_terminating() {
        assert!(is_terminating(
            &json!({"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z"}})
        ));
        assert!(is_terminating(&json!({"status": {"phase": "Terminating"}})));
        assert!(!is_terminating(&json!({"status": {"phase": "Active"}})));
    }

    #[test]
    fn controllers_are_deleted_first_and_events_last() {
        let order = deletion_order();
        assert_eq!(order.first(), Some(&"replicationcontrollers"));
        assert_eq!(order.last(), Some(&"events"));
        for r in ["pods", "services", "endpoints", "resourcequotas"] {
            assert!(order.contains(&r), "{r} must be emptied too");
        }
        assert!(!order.contains(&"nodes") && !order.contains(&"namespaces"));
    }

    #[test]
    fn finalizing_removes_only_the_kubernetes_finalizer() {
        let ns = json!({"metadata": {"name": "x"},
            "spec": {"finalizers": ["kubernetes", "example.com/other"]}});
        assert!(has_finalizer(&ns));
        let out = without_finalizer(&ns);
        assert_eq!(out["spec"]["finalizers"], json!(["example.com/other"]));
        assert!(!has_finalizer(&out));
        assert!(!has_finalizer(&json!({"spec": {}})));
    }
}
