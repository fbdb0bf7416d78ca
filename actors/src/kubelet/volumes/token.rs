//! Service account tokens for projected volumes, as the kubelet's token manager
//! (pkg/kubelet/token) gets them: from the TokenRequest API
//! (`POST /api/v1/namespaces/<ns>/serviceaccounts/<sa>/token`, with the audience, the
//! expiry and a `boundObjectRef` to the pod), cached per pod and audience, and requested
//! again once 80% of a token's lifetime has passed or it is 24 hours old. A failed
//! refresh keeps a token that has not expired yet. Tokens are never made up here: without
//! the API the mount fails.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Duration, Utc};
use k8s_openapi::api::authentication::v1::{
    BoundObjectReference, TokenRequest, TokenRequestSpec, TokenRequestStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::api::ApiError;
use crate::client::ApiClient;

/// Kubernetes refreshes every token at least this often (24 hours).
pub fn max_ttl() -> Duration {
    Duration::hours(24)
}
/// The API's default `expirationSeconds` for a projected token.
pub const DEFAULT_EXPIRATION_SECONDS: i64 = 3600;

/// A token and when it expires.
#[derive(Debug, Clone, PartialEq)]
pub struct Token {
    pub token: String,
    pub expiration: DateTime<Utc>,
    /// The lifetime asked for (the issue time is `expiration` minus this).
    pub expiration_seconds: i64,
}

/// Where tokens come from: the API, or a fake in tests.
#[async_trait::async_trait]
pub trait TokenSource: Send + Sync {
    async fn request(
        &self,
        namespace: &str,
        service_account: &str,
        request: TokenRequest,
    ) -> Result<TokenRequestStatus, ApiError>;
}

/// The TokenRequest subresource through the kubelet's API client.
pub struct ApiTokenSource(pub Arc<dyn ApiClient>);

#[async_trait::async_trait]
impl TokenSource for ApiTokenSource {
    async fn request(
        &self,
        namespace: &str,
        service_account: &str,
        request: TokenRequest,
    ) -> Result<TokenRequestStatus, ApiError> {
        let mut body = serde_json::to_value(&request)
            .map_err(|e| ApiError::Internal(format!("encoding the TokenRequest: {e}")))?;
        body["apiVersion"] = "authentication.k8s.io/v1".into();
        body["kind"] = "TokenRequest".into();
        let answer = self
            .0
            .create_token(namespace, service_account, body)
            .await?;
        let tr: TokenRequest = serde_json::from_value(answer)
            .map_err(|e| ApiError::Internal(format!("decoding the TokenRequest: {e}")))?;
        tr.status
            .ok_or_else(|| ApiError::Internal("the TokenRequest came back without a token".into()))
    }
}

/// Whether a token is due for a new one at `now`: older than 24 hours, or within the last
/// 20% of its lifetime (the kubelet's `requiresRefresh`, without its jitter).
pub fn requires_refresh(now: DateTime<Utc>, t: &Token) -> bool {
    let ttl = Duration::seconds(t.expiration_seconds);
    let issued = t.expiration - ttl;
    now > issued + max_ttl()
        || now > t.expiration - Duration::seconds(t.expiration_seconds * 20 / 100)
}

/// What one projected token is for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TokenKey {
    pub namespace: String,
    pub service_account: String,
    pub pod_name: String,
    pub pod_uid: String,
    pub audience: String,
    pub expiration_seconds: i64,
}

/// Tokens of this node's pods.
#[derive(Default)]
pub struct TokenCache {
    tokens: Mutex<HashMap<TokenKey, Token>>,
}

impl TokenCache {
    /// A token for `key`: the cached one unless it needs refreshing, else a new one.
    pub async fn get(
        &self,
        source: &dyn TokenSource,
        key: &TokenKey,
        now: DateTime<Utc>,
    ) -> Result<Token, ApiError> {
        let cached = self.lock().get(key).cloned();
        if let Some(t) = cached.as_ref().filter(|t| !requires_refresh(now, t)) {
            return Ok(t.clone());
        }
        let request = TokenRequest {
            metadata: ObjectMeta::default(),
            spec: Some(TokenRequestSpec {
                audiences: (!key.audience.is_empty()).then(|| vec![key.audience.clone()]),
                expiration_seconds: Some(key.expiration_seconds),
                bound_object_ref: Some(BoundObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("Pod".into()),
                    name: Some(key.pod_name.clone()),
                    uid: Some(key.pod_uid.clone()),
                }),
                ..Default::default()
            }),
            status: None,
        };
        match source
            .request(&key.namespace, &key.service_account, request)
            .await
        {
            Ok(status) => {
                let (Some(token), Some(expiration)) = (status.token, status.expiration_timestamp)
                else {
                    return Err(ApiError::Internal(
                        "the TokenRequest came back without a token".into(),
                    ));
                };
                let token = Token {
                    token,
                    expiration: DateTime::from_timestamp(expiration.0.as_second(), 0)
                        .unwrap_or_default(),
                    expiration_seconds: key.expiration_seconds,
                };
                self.lock().insert(key.clone(), token.clone());
                Ok(token)
            }
            // A token that still works is better than none.
            Err(e) => match cached.filter(|t| now < t.expiration) {
                Some(t) => {
                    tracing::warn!(error = %e, "token refresh failed; keeping the current token");
                    Ok(t)
                }
                None => Err(e),
            },
        }
    }

    /// Drop the tokens of a pod that is gone.
    pub fn forget(&self, pod_uid: &str) {
        self.lock().retain(|k, _| k.pod_uid != pod_uid);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<TokenKey, Token>> {
        self.tokens.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    /// Issues numbered tokens valid for what was asked from a settable clock, or fails.
    #[derive(Default)]
    struct Fake {
        issued: Mutex<Vec<TokenRequest>>,
        now: Mutex<Option<DateTime<Utc>>>,
        fail: Mutex<bool>,
    }

    #[async_trait::async_trait]
    impl TokenSource for Fake {
        async fn request(
            &self,
            _ns: &str,
            _sa: &str,
            request: TokenRequest,
        ) -> Result<TokenRequestStatus, ApiError> {
            if *self.fail.lock().expect("lock") {
                return Err(ApiError::NoRoute);
            }
            let now = self.now.lock().expect("lock").expect("now");
            let secs = request
                .spec
                .as_ref()
                .and_then(|s| s.expiration_seconds)
                .unwrap_or(3600);
            let mut issued = self.issued.lock().expect("lock");
            issued.push(request);
            let exp = now + Duration::seconds(secs);
            Ok(TokenRequestStatus {
                token: Some(format!("t{}", issued.len())),
                expiration_timestamp: Some(Time(
                    k8s_openapi::jiff::Timestamp::from_second(exp.timestamp()).expect("time"),
                )),
            })
        }
    }

    fn key(secs: i64) -> TokenKey {
        TokenKey {
            namespace: "ns".into(),
            service_account: "default".into(),
            pod_name: "p".into(),
            pod_uid: "u1".into(),
            audience: "vault".into(),
            expiration_seconds: secs,
        }
    }

    #[tokio::test]
    async fn a_token_is_reused_until_eighty_percent_of_its_life_then_renewed() {
        let fake = Fake::default();
        let t0 = Utc::now();
        *fake.now.lock().expect("lock") = Some(t0);
        let cache = TokenCache::default();
        let k = key(1000);
        assert_eq!(cache.get(&fake, &k, t0).await.expect("token").token, "t1");
        let req = fake.issued.lock().expect("lock")[0]
            .spec
            .clone()
            .expect("spec");
        assert_eq!(req.audiences, Some(vec!["vault".to_string()]));
        assert_eq!(req.expiration_seconds, Some(1000));
        let bound = req.bound_object_ref.clone().expect("bound");
        assert_eq!(
            (bound.kind.as_deref(), bound.uid.as_deref()),
            (Some("Pod"), Some("u1"))
        );

        let later = t0 + Duration::seconds(790);
        assert_eq!(
            cache.get(&fake, &k, later).await.expect("token").token,
            "t1"
        );
        let due = t0 + Duration::seconds(801);
        *fake.now.lock().expect("lock") = Some(due);
        assert_eq!(cache.get(&fake, &k, due).await.expect("token").token, "t2");
    }

    #[tokio::test]
    async fn long_lived_tokens_are_renewed_after_a_day_and_a_failed_renewal_keeps_a_valid_one() {
        let fake = Fake::default();
        let t0 = Utc::now();
        *fake.now.lock().expect("lock") = Some(t0);
        let cache = TokenCache::default();
        let k = key(7 * 24 * 3600);
        cache.get(&fake, &k, t0).await.expect("token");
        let day = t0 + Duration::hours(24) + Duration::seconds(1);
        *fake.fail.lock().expect("lock") = true;
        assert_eq!(
            cache.get(&fake, &k, day).await.expect("kept").token,
            "t1",
            "the refresh failed but the token is still valid"
        );
        *fake.fail.lock().expect("lock") = false;
        *fake.now.lock().expect("lock") = Some(day);
        assert_eq!(cache.get(&fake, &k, day).await.expect("token").token, "t2");
    }

    #[tokio::test]
    async fn without_the_token_api_there_is_no_token() {
        let fake = Fake::default();
        *fake.fail.lock().expect("lock") = true;
        let cache = TokenCache::default();
        let err = cache
            .get(&fake, &key(3600), Utc::now())
            .await
            .map_err(|e| e.to_string());
        assert_eq!(
            err.err().as_deref(),
            Some("the server could not find the requested resource")
        );
        cache.forget("u1");
    }
}
