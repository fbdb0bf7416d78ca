//! The root CA certificate publisher (kube-controller-manager's `root-ca-cert-publisher`):
//! every namespace that is not being deleted has the `kube-root-ca.crt` ConfigMap holding
//! the cluster CA as `ca.crt`, which pods' projected token volumes mount; a changed or
//! deleted one is put back.

use serde_json::{json, Value};

use super::service_account::terminating;
use crate::api::kinds::config_map;
use crate::api::ApiError;
use crate::gateway::serviceaccount::admission::ROOT_CA_CONFIG_MAP;
use crate::runtime::{Action, Change, Context, InformerSpec, ReconcileError, Reconciler};

const NAMESPACES: &str = "namespaces";
const DESCRIPTION_ANNOTATION: &str = "kubernetes.io/description";
const DESCRIPTION: &str = "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters.";

pub struct RootCaPublisher {
    ca_pem: String,
}

impl RootCaPublisher {
    pub fn new(ca_pem: String) -> Self {
        RootCaPublisher { ca_pem }
    }

    /// The ConfigMap as it must be in `namespace`.
    pub fn config_map(&self, namespace: &str) -> Value {
        json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": ROOT_CA_CONFIG_MAP, "namespace": namespace,
                "annotations": {DESCRIPTION_ANNOTATION: DESCRIPTION}},
            "data": {"ca.crt": self.ca_pem}})
    }

    fn up_to_date(&self, cm: &Value) -> bool {
        cm.get("data") == Some(&json!({"ca.crt": self.ca_pem}))
            && cm
                .pointer("/metadata/annotations")
                .and_then(|a| a.get(DESCRIPTION_ANNOTATION))
                .and_then(Value::as_str)
                == Some(DESCRIPTION)
            && cm.get("binaryData").is_none_or(Value::is_null)
    }
}

#[async_trait::async_trait]
impl Reconciler for RootCaPublisher {
    fn name(&self) -> &'static str {
        "root-ca-cert-publisher"
    }

    fn informers(&self) -> Vec<InformerSpec> {
        vec![
            InformerSpec::all(NAMESPACES),
            InformerSpec::all(config_map::RESOURCE),
        ]
    }

    fn keys_for(&self, resource: &str, change: &Change, _ctx: &Context) -> Vec<String> {
        let text = |p: &str| {
            change
                .object
                .pointer(p)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        match resource {
            NAMESPACES => vec![text("/metadata/name")],
            _ if text("/metadata/name") == ROOT_CA_CONFIG_MAP => {
                vec![text("/metadata/namespace")]
            }
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
        let cm_key = format!("{key}/{ROOT_CA_CONFIG_MAP}");
        let result = match ctx.cache(config_map::RESOURCE).get(&cm_key) {
            None => {
                tracing::info!(namespace = %key, "publishing the root CA");
                ctx.client
                    .create(config_map::RESOURCE, Some(key), self.config_map(key))
                    .await
            }
            Some(cm) if self.up_to_date(&cm) => return Ok(Action::Done),
            Some(cm) => {
                tracing::info!(namespace = %key, "restoring the root CA config map");
                let mut fixed = (*cm).clone();
                let want = self.config_map(key);
                fixed["data"] = want["data"].clone();
                if let Some(m) = fixed.as_object_mut() {
                    m.remove("binaryData");
                }
                fixed["metadata"]["annotations"][DESCRIPTION_ANNOTATION] = json!(DESCRIPTION);
                ctx.client
                    .update(
                        config_map::RESOURCE,
                        Some(key),
                        ROOT_CA_CONFIG_MAP,
                        None,
                        fixed,
                    )
                    .await
            }
        };
        match result {
            // Someone else's write came first (the next event brings us back), or the
            // namespace is going away.
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

    #[test]
    fn only_the_exact_bundle_and_description_are_up_to_date() {
        let p = RootCaPublisher::new("PEM".into());
        let cm = p.config_map("dev");
        assert!(p.up_to_date(&cm));
        let mut changed = cm.clone();
        changed["data"]["ca.crt"] = json!("other");
        assert!(!p.up_to_date(&changed));
        let mut extra = cm.clone();
        extra["data"]["more"] = json!("x");
        assert!(!p.up_to_date(&extra));
    }
}
