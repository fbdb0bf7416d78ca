//! The service account token authenticator (kube-apiserver's `pkg/serviceaccount`
//! validators): a bearer JWT signed by the cluster's service account key authenticates as
//! `system:serviceaccount:<ns>:<name>` in `system:serviceaccounts`,
//! `system:serviceaccounts:<ns>` (and `system:authenticated`) while what it names still
//! exists: the ServiceAccount with the same uid, and the Pod or Secret it is bound to.
//! Legacy tokens from `kubernetes.io/service-account-token` Secrets are good while their
//! Secret exists and holds them.

use std::sync::Arc;

use base64::Engine as _;
use chrono::{DateTime, Utc};
use serde_json::Value;
use subtle::ConstantTimeEq;

use super::UserInfo;
use crate::api::resources::object_key;
use crate::gateway::serviceaccount::token::{self, ObjectRef, TokenIssuer, LEGACY_ISSUER};
use crate::store::StoreHandle;

/// Every service account is in this group.
pub const ALL_SERVICE_ACCOUNTS: &str = "system:serviceaccounts";
/// How long an object being deleted still backs its tokens (kube's validator allows the
/// kubelet this long to stop the pod).
const DELETION_GRACE_SECONDS: i64 = 60;

/// Why a token was refused; only the log sees it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenInvalid {
    #[error("{0}")]
    Jwt(String),
    #[error("{kind} {namespace}/{name} not found")]
    Missing {
        kind: &'static str,
        namespace: String,
        name: String,
    },
    #[error("{kind} {namespace}/{name} has uid {actual}, the token names {claimed}")]
    UidMismatch {
        kind: &'static str,
        namespace: String,
        name: String,
        actual: String,
        claimed: String,
    },
    #[error("{kind} {namespace}/{name} is being deleted")]
    Deleted {
        kind: &'static str,
        namespace: String,
        name: String,
    },
    #[error("secret {namespace}/{name} no longer holds this token")]
    SecretChanged { namespace: String, name: String },
}

/// Authenticates service account tokens against the store.
#[derive(Clone)]
pub struct ServiceAccountAuthenticator {
    issuer: Arc<TokenIssuer>,
    store: StoreHandle,
}

/// The user of a service account.
pub fn user(namespace: &str, name: &str, uid: &str) -> UserInfo {
    UserInfo {
        name: token::username(namespace, name),
        uid: uid.to_string(),
        groups: vec![
            ALL_SERVICE_ACCOUNTS.to_string(),
            format!("{ALL_SERVICE_ACCOUNTS}:{namespace}"),
        ],
    }
}

impl ServiceAccountAuthenticator {
    pub fn new(issuer: Arc<TokenIssuer>, store: StoreHandle) -> Self {
        ServiceAccountAuthenticator { issuer, store }
    }

    /// Whether a bearer token is one this authenticator judges (a JWT naming one of our
    /// issuers); others are left to the rest of the chain.
    pub fn claims_ours(&self, token: &str) -> bool {
        TokenIssuer::unverified_issuer(token)
            .is_some_and(|iss| iss == self.issuer.issuer() || iss == LEGACY_ISSUER)
    }

    /// The user behind a token for one of `audiences` (the API server's own when empty),
    /// and the audiences it was good for.
    pub fn authenticate(
        &self,
        token: &str,
        audiences: &[String],
    ) -> Result<(UserInfo, Vec<String>), TokenInvalid> {
        let api = self.issuer.api_audiences();
        let wanted = if audiences.is_empty() {
            &api
        } else {
            audiences
        };
        let now = Utc::now();
        if TokenIssuer::unverified_issuer(token).as_deref() == Some(LEGACY_ISSUER) {
            return self.legacy(token, now).map(|u| (u, wanted.to_vec()));
        }
        let claims = self
            .issuer
            .verify(token, wanted)
            .map_err(|e| TokenInvalid::Jwt(e.to_string()))?;
        let k = &claims.kubernetes;
        let ns = k.namespace.as_str();
        self.check(
            "serviceaccounts",
            "serviceaccount",
            ns,
            &k.serviceaccount,
            now,
        )?;
        if let Some(pod) = &k.pod {
            self.check("pods", "pod", ns, pod, now)?;
        }
        if let Some(secret) = &k.secret {
            self.check("secrets", "secret", ns, secret, now)?;
        }
        if let (None, Some(node)) = (&k.pod, &k.node) {
            self.check("nodes", "node", "", node, now)?;
        }
        let matched = claims
            .aud
            .iter()
            .filter(|a| wanted.contains(a))
            .cloned()
            .collect();
        Ok((
            user(ns, &k.serviceaccount.name, &k.serviceaccount.uid),
            matched,
        ))
    }

    /// The object a token names exists, with the uid named, and is not long deleted.
    fn check(
        &self,
        resource: &str,
        kind: &'static str,
        namespace: &str,
        r: &ObjectRef,
        now: DateTime<Utc>,
    ) -> Result<Value, TokenInvalid> {
        let ns = (!namespace.is_empty()).then_some(namespace);
        let missing = || TokenInvalid::Missing {
            kind,
            namespace: namespace.to_string(),
            name: r.name.clone(),
        };
        let obj = self
            .store
            .get(&object_key(resource, ns, &r.name))
            .ok_or_else(missing)?;
        let actual = obj
            .value
            .pointer("/metadata/uid")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if !r.uid.is_empty() && actual != r.uid {
            return Err(TokenInvalid::UidMismatch {
                kind,
                namespace: namespace.to_string(),
                name: r.name.clone(),
                actual: actual.to_string(),
                claimed: r.uid.clone(),
            });
        }
        let deleted_long_ago = obj
            .value
            .pointer("/metadata/deletionTimestamp")
            .and_then(Value::as_str)
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .is_some_and(|t| {
                t.with_timezone(&Utc) + chrono::Duration::seconds(DELETION_GRACE_SECONDS) < now
            });
        if deleted_long_ago {
            return Err(TokenInvalid::Deleted {
                kind,
                namespace: namespace.to_string(),
                name: r.name.clone(),
            });
        }
        Ok((*obj.value).clone())
    }

    fn legacy(&self, token: &str, now: DateTime<Utc>) -> Result<UserInfo, TokenInvalid> {
        let c = self
            .issuer
            .verify_legacy(token)
            .map_err(|e| TokenInvalid::Jwt(e.to_string()))?;
        let secret = self.check(
            "secrets",
            "secret",
            &c.namespace,
            &ObjectRef {
                name: c.secret_name.clone(),
                uid: String::new(),
            },
            now,
        )?;
        let held = secret
            .pointer("/data/token")
            .and_then(Value::as_str)
            .and_then(|t| base64::engine::general_purpose::STANDARD.decode(t).ok())
            .unwrap_or_default();
        if !bool::from(held.ct_eq(token.as_bytes())) {
            return Err(TokenInvalid::SecretChanged {
                namespace: c.namespace,
                name: c.secret_name,
            });
        }
        self.check(
            "serviceaccounts",
            "serviceaccount",
            &c.namespace,
            &ObjectRef {
                name: c.service_account_name.clone(),
                uid: c.service_account_uid.clone(),
            },
            now,
        )?;
        Ok(user(
            &c.namespace,
            &c.service_account_name,
            &c.service_account_uid,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::serviceaccount::token::{Claims, KubernetesClaim, LegacyClaims};
    use crate::store::{self, StoreConfig, WriteOp};
    use serde_json::json;

    async fn started() -> (tempfile::TempDir, actix::Arbiter, StoreHandle) {
        let dir = tempfile::tempdir().expect("tempdir");
        let metrics = Arc::new(crate::metrics::Metrics::new().expect("metrics"));
        let arbiter = actix::Arbiter::new();
        let handle =
            store::start(StoreConfig::new(dir.path()), metrics, &arbiter.handle()).expect("store");
        (dir, arbiter, handle)
    }

    async fn put(store: &StoreHandle, resource: &str, obj: Value) {
        let ns = obj["metadata"]["namespace"].as_str().map(str::to_string);
        let name = obj["metadata"]["name"].as_str().expect("name").to_string();
        store
            .write(WriteOp::Create {
                key: object_key(resource, ns.as_deref(), &name),
                object: obj,
            })
            .await
            .expect("write");
    }

    fn claims(pod: Option<ObjectRef>) -> Claims {
        let t = Utc::now().timestamp();
        Claims {
            aud: vec![token::ISSUER.into()],
            exp: t + 600,
            iat: t,
            iss: token::ISSUER.into(),
            jti: "j".into(),
            kubernetes: KubernetesClaim {
                namespace: "dev".into(),
                serviceaccount: ObjectRef {
                    name: "builder".into(),
                    uid: "sa-uid".into(),
                },
                pod,
                ..KubernetesClaim::default()
            },
            nbf: t,
            sub: token::username("dev", "builder"),
        }
    }

    #[actix_rt::test]
    async fn a_token_is_good_while_its_account_and_pod_exist_with_their_uids() {
        let (_d, arbiter, store) = started().await;
        put(
            &store,
            "serviceaccounts",
            json!({"metadata": {"name": "builder", "namespace": "dev", "uid": "sa-uid"}}),
        )
        .await;
        put(
            &store,
            "pods",
            json!({"metadata": {"name": "web", "namespace": "dev", "uid": "pod-uid"}}),
        )
        .await;
        let issuer = Arc::new(TokenIssuer::generate().expect("issuer"));
        let authn = ServiceAccountAuthenticator::new(issuer.clone(), store.clone());
        let plain = issuer.issue(&claims(None)).expect("sign");
        assert!(authn.claims_ours(&plain));
        let (u, aud) = authn.authenticate(&plain, &[]).expect("valid");
        assert_eq!(u.name, "system:serviceaccount:dev:builder");
        assert_eq!(
            u.groups,
            vec!["system:serviceaccounts", "system:serviceaccounts:dev"]
        );
        assert_eq!(aud, vec![token::ISSUER.to_string()]);

        let bound = issuer
            .issue(&claims(Some(ObjectRef {
                name: "web".into(),
                uid: "pod-uid".into(),
            })))
            .expect("sign");
        assert!(authn.authenticate(&bound, &[]).is_ok());
        let recreated = issuer
            .issue(&claims(Some(ObjectRef {
                name: "web".into(),
                uid: "older".into(),
            })))
            .expect("sign");
        assert!(matches!(
            authn.authenticate(&recreated, &[]),
            Err(TokenInvalid::UidMismatch { .. })
        ));
        let gone = issuer
            .issue(&claims(Some(ObjectRef {
                name: "gone".into(),
                uid: "x".into(),
            })))
            .expect("sign");
        assert!(matches!(
            authn.authenticate(&gone, &[]),
            Err(TokenInvalid::Missing { .. })
        ));
        let mut other_sa = claims(None);
        other_sa.kubernetes.serviceaccount.uid = "before-recreation".into();
        let stale = issuer.issue(&other_sa).expect("sign");
        assert!(authn.authenticate(&stale, &[]).is_err());
        assert!(!authn.claims_ours("abcdef.0123456789abcdef"));
        arbiter.stop();
    }

    #[actix_rt::test]
    async fn a_legacy_token_is_good_while_its_secret_holds_it() {
        let (_d, arbiter, store) = started().await;
        let issuer = Arc::new(TokenIssuer::generate().expect("issuer"));
        put(
            &store,
            "serviceaccounts",
            json!({"metadata": {"name": "builder", "namespace": "dev", "uid": "sa-uid"}}),
        )
        .await;
        let legacy = issuer
            .issue_legacy(&LegacyClaims {
                iss: LEGACY_ISSUER.into(),
                namespace: "dev".into(),
                secret_name: "builder-token".into(),
                service_account_name: "builder".into(),
                service_account_uid: "sa-uid".into(),
                sub: token::username("dev", "builder"),
            })
            .expect("sign");
        let authn = ServiceAccountAuthenticator::new(issuer, store.clone());
        assert!(matches!(
            authn.authenticate(&legacy, &[]),
            Err(TokenInvalid::Missing { .. })
        ));
        let b64 = base64::engine::general_purpose::STANDARD.encode(&legacy);
        put(
            &store,
            "secrets",
            json!({"metadata": {"name": "builder-token", "namespace": "dev"},
            "type": "kubernetes.io/service-account-token", "data": {"token": b64}}),
        )
        .await;
        let (u, _) = authn.authenticate(&legacy, &[]).expect("valid");
        assert_eq!(u.name, "system:serviceaccount:dev:builder");
        arbiter.stop();
    }
}
