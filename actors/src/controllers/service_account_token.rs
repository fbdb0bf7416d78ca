//! The legacy token controller (kube-controller-manager's `serviceaccount-token`): a
//! Secret of type `kubernetes.io/service-account-token` whose annotation
//! `kubernetes.io/service-account.name` names an existing ServiceAccount gets `token` (a
//! legacy JWT, good while the Secret holds it), `ca.crt` and `namespace`, and the
//! account's uid in `kubernetes.io/service-account.uid`; one whose account is gone (or was
//! recreated with another uid) is deleted, as are an account's token Secrets when the
//! account is deleted.

use std::sync::Arc;

use base64::Engine as _;
use serde_json::{json, Value};

use crate::api::kinds::service_account;
use crate::api::ApiError;
use crate::gateway::serviceaccount::token::{self, LegacyClaims, TokenIssuer, LEGACY_ISSUER};
use crate::runtime::{
    key_of, split_key, Action, Change, Context, InformerSpec, ReconcileError, Reconciler,
};

const SECRETS: &str = "secrets";
pub const TOKEN_TYPE: &str = "kubernetes.io/service-account-token";
pub const NAME_ANNOTATION: &str = "kubernetes.io/service-account.name";
pub const UID_ANNOTATION: &str = "kubernetes.io/service-account.uid";

pub struct TokenController {
    issuer: Arc<TokenIssuer>,
    ca_pem: String,
}

fn annotation<'a>(obj: &'a Value, key: &str) -> Option<&'a str> {
    obj.pointer("/metadata/annotations")
        .and_then(|a| a.get(key))
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn is_token_secret(obj: &Value) -> bool {
    obj.get("type").and_then(Value::as_str) == Some(TOKEN_TYPE)
}

fn uid(obj: &Value) -> &str {
    obj.pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

impl TokenController {
    pub fn new(issuer: Arc<TokenIssuer>, ca_pem: String) -> Self {
        TokenController { issuer, ca_pem }
    }

    /// The Secret completed for `sa`, or `None` when it already is.
    fn completed(&self, secret: &Value, sa: &Value) -> Result<Option<Value>, ReconcileError> {
        let ns = secret
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let data = |k: &str| {
            secret
                .pointer(&format!("/data/{k}"))
                .and_then(Value::as_str)
        };
        let complete = data("token").is_some_and(|t| !t.is_empty())
            && data("ca.crt") == Some(b64(&self.ca_pem).as_str())
            && data("namespace") == Some(b64(ns).as_str())
            && annotation(secret, UID_ANNOTATION) == Some(uid(sa));
        if complete {
            return Ok(None);
        }
        let mut out = secret.clone();
        let sa_name = annotation(secret, NAME_ANNOTATION).unwrap_or_default();
        if data("token").is_none_or(str::is_empty) {
            let secret_name = secret
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let jwt = self
                .issuer
                .issue_legacy(&LegacyClaims {
                    iss: LEGACY_ISSUER.into(),
                    namespace: ns.into(),
                    secret_name: secret_name.into(),
                    service_account_name: sa_name.into(),
                    service_account_uid: uid(sa).into(),
                    sub: token::username(ns, sa_name),
                })
                .map_err(|e| ReconcileError::Invalid(e.to_string()))?;
            out["data"]["token"] = json!(b64(&jwt));
        }
        if !out.get("data").is_some_and(Value::is_object) {
            out["data"] = json!({});
        }
        out["data"]["ca.crt"] = json!(b64(&self.ca_pem));
        out["data"]["namespace"] = json!(b64(ns));
        out["metadata"]["annotations"][UID_ANNOTATION] = json!(uid(sa));
        Ok(Some(out))
    }
}

#[async_trait::async_trait]
impl Reconciler for TokenController {
    fn name(&self) -> &'static str {
        "serviceaccount-token-controller"
    }

    fn informers(&self) -> Vec<InformerSpec> {
        vec![
            InformerSpec::all(SECRETS),
            InformerSpec::all(service_account::RESOURCE),
        ]
    }

    fn keys_for(&self, resource: &str, change: &Change, ctx: &Context) -> Vec<String> {
        if resource == SECRETS {
            return if is_token_secret(&change.object) {
                vec![key_of(&change.object)]
            } else {
                Vec::new()
            };
        }
        // An account changed or went: its token Secrets are looked at again.
        let obj = &change.object;
        let ns = obj
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let name = obj
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        ctx.cache(SECRETS)
            .list_namespace(ns)
            .into_iter()
            .filter(|s| is_token_secret(s) && annotation(s, NAME_ANNOTATION) == Some(name))
            .map(|s| key_of(&s))
            .collect()
    }

    async fn reconcile(&self, key: &str, ctx: &Context) -> Result<Action, ReconcileError> {
        let Some(secret) = ctx.cache(SECRETS).get(key) else {
            return Ok(Action::Done);
        };
        if !is_token_secret(&secret) || secret.pointer("/metadata/deletionTimestamp").is_some() {
            return Ok(Action::Done);
        }
        let (ns, name) = split_key(key);
        let Some(sa_name) = annotation(&secret, NAME_ANNOTATION) else {
            return Ok(Action::Done);
        };
        // The cache may be behind a just-created account: ask the API before deleting.
        let sa = match ctx
            .cache(service_account::RESOURCE)
            .get(&format!("{}/{sa_name}", ns.unwrap_or_default()))
        {
            Some(sa) => Some((*sa).clone()),
            None => match ctx.client.get(service_account::RESOURCE, ns, sa_name).await {
                Ok(sa) => Some(sa),
                Err(ApiError::NotFound { .. }) => None,
                Err(e) => return Err(e.into()),
            },
        };
        let recreated =
            |sa: &Value| annotation(&secret, UID_ANNOTATION).is_some_and(|u| u != uid(sa));
        match sa {
            Some(sa) if !recreated(&sa) => {
                let Some(fixed) = self.completed(&secret, &sa)? else {
                    return Ok(Action::Done);
                };
                tracing::info!(secret = %key, "filling in a service account token secret");
                match ctx.client.update(SECRETS, ns, name, None, fixed).await {
                    Ok(_) | Err(ApiError::NotFound { .. }) => Ok(Action::Done),
                    Err(e) => Err(e.into()),
                }
            }
            _ => {
                tracing::info!(secret = %key, account = sa_name, "deleting the token secret of a missing service account");
                match ctx.client.delete(SECRETS, ns, name, None).await {
                    Ok(_) | Err(ApiError::NotFound { .. }) => Ok(Action::Done),
                    Err(e) => Err(e.into()),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_secret_is_completed_once_with_a_legacy_token() {
        let issuer = Arc::new(TokenIssuer::generate().expect("issuer"));
        let c = TokenController::new(issuer.clone(), "CA".into());
        let sa = json!({"metadata": {"name": "builder", "namespace": "dev", "uid": "u1"}});
        let secret = json!({"metadata": {"name": "builder-token", "namespace": "dev",
            "annotations": {NAME_ANNOTATION: "builder"}}, "type": TOKEN_TYPE});
        let done = c.completed(&secret, &sa).expect("ok").expect("changed");
        assert_eq!(done["data"]["ca.crt"], b64("CA"));
        assert_eq!(done["data"]["namespace"], b64("dev"));
        assert_eq!(done["metadata"]["annotations"][UID_ANNOTATION], "u1");
        let jwt = base64::engine::general_purpose::STANDARD
            .decode(done["data"]["token"].as_str().expect("token"))
            .expect("b64");
        let claims = issuer
            .verify_legacy(std::str::from_utf8(&jwt).expect("utf8"))
            .expect("valid");
        assert_eq!(claims.secret_name, "builder-token");
        assert_eq!(claims.service_account_uid, "u1");
        assert!(c.completed(&done, &sa).expect("ok").is_none());
    }
}
