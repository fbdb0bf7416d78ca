//! Who may call the node server, decided as the kubelet's Webhook modes do: a client
//! certificate from the cluster CA names its user (CN) and groups (O), a bearer token is
//! judged by a TokenReview, and each request is authorized by a SubjectAccessReview
//! against the API server for `nodes/<subresource>` of this node. Answers are cached as
//! the kubelet caches them (authorized for 5 minutes, refused for 30 seconds, tokens for 2
//! minutes), so a stream of execs does not cost a review each.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls_pki_types::CertificateDer;
use serde_json::{json, Value};

use crate::client::ApiClient;
use crate::gateway::auth::UserInfo;
use crate::pki;

const ALLOWED_TTL: Duration = Duration::from_secs(300);
const DENIED_TTL: Duration = Duration::from_secs(30);
const TOKEN_TTL: Duration = Duration::from_secs(120);
/// Entries kept per cache before expired ones are swept.
const CACHE_SWEEP_AT: usize = 1024;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    /// No credential, or one that does not authenticate: 401.
    #[error("Unauthorized")]
    Unauthorized,
    /// Authenticated but not allowed: 403 with the kubelet's wording.
    #[error("{0}")]
    Forbidden(String),
    /// The API server could not answer a review: 503 (the caller may retry).
    #[error("cannot reach the API server to authorize the request: {0}")]
    Unavailable(String),
}

/// What a request does to the node, in SubjectAccessReview terms.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NodeAttributes {
    pub verb: &'static str,
    pub subresource: &'static str,
}

impl NodeAttributes {
    /// The kubelet's mapping from a path to the `nodes` subresource it is authorized as.
    pub fn of(method: &str, path: &str) -> NodeAttributes {
        let verb = match method {
            "POST" => "create",
            "PUT" => "update",
            "PATCH" => "patch",
            "DELETE" => "delete",
            _ => "get",
        };
        let top = path.trim_start_matches('/').split('/').next().unwrap_or("");
        let subresource = match top {
            "stats" => "stats",
            "metrics" => "metrics",
            "logs" => "log",
            "spec" => "spec",
            // exec, attach, portForward, containerLogs, pods, healthz, run.
            _ => "proxy",
        };
        NodeAttributes { verb, subresource }
    }
}

struct Cached<T> {
    at: Instant,
    ttl: Duration,
    value: T,
}

struct TtlCache<K, T> {
    entries: Mutex<HashMap<K, Cached<T>>>,
}

impl<K: std::hash::Hash + Eq, T: Clone> TtlCache<K, T> {
    fn new() -> Self {
        TtlCache {
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn get(&self, key: &K) -> Option<T> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .get(key)
            .filter(|c| c.at.elapsed() < c.ttl)
            .map(|c| c.value.clone())
    }

    fn put(&self, key: K, value: T, ttl: Duration) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= CACHE_SWEEP_AT {
            entries.retain(|_, c| c.at.elapsed() < c.ttl);
        }
        entries.insert(
            key,
            Cached {
                at: Instant::now(),
                ttl,
                value,
            },
        );
    }
}

/// The node server's authenticator and authorizer.
pub struct NodeAuth {
    node: String,
    client: Arc<dyn ApiClient>,
    tokens: TtlCache<String, Option<UserInfo>>,
    decisions: TtlCache<(UserInfo, NodeAttributes), Result<(), String>>,
}

impl NodeAuth {
    pub fn new(node: impl Into<String>, client: Arc<dyn ApiClient>) -> Self {
        NodeAuth {
            node: node.into(),
            client,
            tokens: TtlCache::new(),
            decisions: TtlCache::new(),
        }
    }

    /// The caller: its client certificate (already verified against the cluster CA by
    /// the TLS handshake) or else its bearer token.
    pub async fn authenticate(
        &self,
        peer: Option<&CertificateDer<'static>>,
        authorization: Option<&str>,
    ) -> Result<UserInfo, AuthError> {
        if let Some(cert) = peer {
            let subject = pki::cert_subject(cert).map_err(|_| AuthError::Unauthorized)?;
            let mut groups = subject.organizations;
            groups.push("system:authenticated".into());
            return Ok(UserInfo {
                name: subject.common_name,
                uid: String::new(),
                groups,
            });
        }
        let token = crate::gateway::auth::authn::bearer_token(authorization)
            .ok_or(AuthError::Unauthorized)?;
        if let Some(cached) = self.tokens.get(&token.to_string()) {
            return cached.ok_or(AuthError::Unauthorized);
        }
        let review = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
            "spec": {"token": token}});
        let answer = self
            .client
            .create("tokenreviews", None, review)
            .await
            .map_err(|e| AuthError::Unavailable(e.to_string()))?;
        let user = user_of_review(&answer);
        self.tokens.put(token.to_string(), user.clone(), TOKEN_TTL);
        user.ok_or(AuthError::Unauthorized)
    }

    /// Whether `user` may do `attrs` to this node.
    pub async fn authorize(&self, user: &UserInfo, attrs: NodeAttributes) -> Result<(), AuthError> {
        let key = (user.clone(), attrs.clone());
        if let Some(decision) = self.decisions.get(&key) {
            return decision.map_err(AuthError::Forbidden);
        }
        let mut spec = json!({"user": user.name, "groups": user.groups,
            "resourceAttributes": {"verb": attrs.verb, "resource": "nodes",
                "subresource": attrs.subresource, "name": self.node}});
        if !user.uid.is_empty() {
            spec["uid"] = json!(user.uid);
        }
        let review = json!({"apiVersion": "authorization.k8s.io/v1",
            "kind": "SubjectAccessReview", "spec": spec});
        let answer = self
            .client
            .create("subjectaccessreviews", None, review)
            .await
            .map_err(|e| AuthError::Unavailable(e.to_string()))?;
        let allowed = answer
            .pointer("/status/allowed")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let decision = if allowed {
            Ok(())
        } else {
            // The kubelet's own words for a refusal.
            Err(format!(
                "Forbidden (user={}, verb={}, resource=nodes, subresource={})",
                user.name, attrs.verb, attrs.subresource
            ))
        };
        let ttl = if allowed { ALLOWED_TTL } else { DENIED_TTL };
        self.decisions.put(key, decision.clone(), ttl);
        decision.map_err(AuthError::Forbidden)
    }
}

fn user_of_review(answer: &Value) -> Option<UserInfo> {
    let status = answer.get("status")?;
    if status.get("authenticated").and_then(Value::as_bool) != Some(true) {
        return None;
    }
    let user = status.get("user")?;
    Some(UserInfo {
        name: user.get("username")?.as_str()?.to_string(),
        uid: user
            .get("uid")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        groups: user
            .get("groups")
            .and_then(Value::as_array)
            .map(|gs| {
                gs.iter()
                    .filter_map(|g| g.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_map_to_the_node_subresources_the_kubelet_authorizes() {
        let of = NodeAttributes::of;
        assert_eq!(of("POST", "/exec/ns/p/c").subresource, "proxy");
        assert_eq!(of("POST", "/exec/ns/p/c").verb, "create");
        assert_eq!(of("GET", "/containerLogs/ns/p/c").subresource, "proxy");
        assert_eq!(of("GET", "/stats/summary").subresource, "stats");
        assert_eq!(of("GET", "/metrics/resource").subresource, "metrics");
        assert_eq!(of("GET", "/logs/").subresource, "log");
        assert_eq!(of("GET", "/pods").verb, "get");
    }

    #[test]
    fn a_token_review_names_the_user_only_when_it_authenticated() {
        let yes = json!({"status": {"authenticated": true,
            "user": {"username": "jane", "uid": "1", "groups": ["dev"]}}});
        assert_eq!(user_of_review(&yes).map(|u| u.name), Some("jane".into()));
        let no = json!({"status": {"authenticated": false, "user": {}}});
        assert_eq!(user_of_review(&no), None);
    }
}
