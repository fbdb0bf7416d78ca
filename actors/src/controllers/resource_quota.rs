//! The resource quota controller: keeps each ResourceQuota's `status.hard` and
//! `status.used` true to what exists in its namespace (admission in the gateway refuses
//! creates beyond `spec.hard`; this makes the usage visible and corrects it after deletes).

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::api::{meta, quota, resources, ApiError};
use crate::runtime::{
    key_of, split_key, Action, Change, Context, InformerSpec, ReconcileError, Reconciler,
};

/// The resources whose objects count against quotas.
const COUNTED: &[&str] = &["pods", "services", "replicationcontrollers"];

#[derive(Default)]
pub struct ResourceQuotaController;

#[async_trait::async_trait]
impl Reconciler for ResourceQuotaController {
    fn name(&self) -> &'static str {
        "resourcequota-controller"
    }

    fn informers(&self) -> Vec<InformerSpec> {
        let mut specs = vec![InformerSpec::all("resourcequotas")];
        specs.extend(COUNTED.iter().map(|r| InformerSpec::all(r)));
        specs
    }

    fn keys_for(&self, resource: &str, change: &Change, ctx: &Context) -> Vec<String> {
        if resource == "resourcequotas" {
            return vec![key_of(&change.object)];
        }
        let ns = meta::namespace(&change.object).unwrap_or_default();
        ctx.cache("resourcequotas")
            .list_namespace(ns)
            .iter()
            .map(|q| key_of(q))
            .collect()
    }

    fn resync(&self) -> Option<Duration> {
        Some(Duration::from_secs(300))
    }

    async fn reconcile(&self, key: &str, ctx: &Context) -> Result<Action, ReconcileError> {
        let Some(q) = ctx.cache("resourcequotas").get(key) else {
            return Ok(Action::Done);
        };
        let (ns, name) = split_key(key);
        let ns = ns.unwrap_or("default");
        let hard = quota::hard_of(&q);
        let mut counted: Vec<(&'static str, Arc<Value>)> = Vec::new();
        for res in COUNTED.iter().chain(["resourcequotas"].iter()) {
            let kind = resources::lookup(res).map(|r| r.kind).unwrap_or_default();
            counted.extend(
                ctx.cache(res)
                    .list_namespace(ns)
                    .into_iter()
                    .map(|o| (kind, o)),
            );
        }
        let used = quota::total(&hard, counted.iter().map(|(k, o)| (*k, &**o)));
        let status = json!({
            "hard": q.pointer("/spec/hard").cloned().unwrap_or(json!({})),
            "used": quota::used_json(&used),
        });
        if q.get("status") == Some(&status) {
            return Ok(Action::Done);
        }
        match ctx
            .client
            .update(
                "resourcequotas",
                Some(ns),
                name,
                Some("status"),
                json!({"apiVersion": "v1", "kind": "ResourceQuota",
                    "metadata": {"name": name, "namespace": ns,
                        "resourceVersion": meta::resource_version(&q)},
                    "status": status}),
            )
            .await
        {
            Ok(_) | Err(ApiError::NotFound { .. }) => Ok(Action::Done),
            // The quota changed under us: its own event queues it again.
            Err(ApiError::Conflict { .. }) => Ok(Action::Done),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quota_controller_watches_quotas_first_and_every_counted_resource() {
        let specs = ResourceQuotaController.informers();
        assert_eq!(specs[0].resource, "resourcequotas");
        for r in COUNTED {
            assert!(specs.iter().any(|s| s.resource == *r));
        }
    }
}
