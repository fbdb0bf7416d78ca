//! The ServiceAccount controller (kube-controller-manager's `serviceaccount`): every
//! namespace that is not being deleted has a `default` ServiceAccount, created again if
//! someone deletes it. (A namespace created through the API gets its `default` account
//! at once from the gateway; this loop covers namespaces from before and deletions.)

use serde_json::Value;

use crate::api::kinds::service_account::{self, DEFAULT_NAME};
use crate::api::ApiError;
use crate::runtime::{Action, Change, Context, InformerSpec, ReconcileError, Reconciler};

const NAMESPACES: &str = "namespaces";

pub struct ServiceAccountController;

/// Whether a namespace is being deleted (then nothing may be created in it).
pub fn terminating(ns: &Value) -> bool {
    ns.pointer("/metadata/deletionTimestamp").is_some()
        || ns.pointer("/status/phase").and_then(Value::as_str) == Some("Terminating")
}

#[async_trait::async_trait]
impl Reconciler for ServiceAccountController {
    fn name(&self) -> &'static str {
        "serviceaccount-controller"
    }

    fn informers(&self) -> Vec<InformerSpec> {
        vec![
            InformerSpec::all(NAMESPACES),
            InformerSpec::all(service_account::RESOURCE),
        ]
    }

    fn keys_for(&self, resource: &str, change: &Change, _ctx: &Context) -> Vec<String> {
        let meta = |p: &str| {
            change
                .object
                .pointer(p)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        match resource {
            NAMESPACES => vec![meta("/metadata/name")],
            // Only the default account's changes matter: its deletion above all.
            _ if meta("/metadata/name") == DEFAULT_NAME => vec![meta("/metadata/namespace")],
            _ => Vec::new(),
        }
    }

    async fn reconcile(&self, key: &str, ctx: &Context) -> Result<Action, ReconcileError> {
        let Some(ns) = ctx.cache(NAMESPACES).get(key) else {
            return Ok(Action::Done);
        };
        if terminating(&ns) {
            return Ok(Action::Done);
        }
        let sa_key = format!("{key}/{DEFAULT_NAME}");
        if ctx.cache(service_account::RESOURCE).get(&sa_key).is_some() {
            return Ok(Action::Done);
        }
        tracing::info!(namespace = %key, "creating the default service account");
        match ctx
            .client
            .create(
                service_account::RESOURCE,
                Some(key),
                service_account::object(key, DEFAULT_NAME),
            )
            .await
        {
            // Already there (the cache is behind), or the namespace is going away.
            Ok(_) | Err(ApiError::AlreadyExists { .. }) | Err(ApiError::Forbidden(_)) => {
                Ok(Action::Done)
            }
            Err(ApiError::NotFound { .. }) => Ok(Action::Done),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_namespace_being_deleted_gets_no_account() {
        assert!(terminating(
            &json!({"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z"}})
        ));
        assert!(terminating(
            &json!({"metadata": {}, "status": {"phase": "Terminating"}})
        ));
        assert!(!terminating(
            &json!({"metadata": {}, "status": {"phase": "Active"}})
        ));
    }
}
