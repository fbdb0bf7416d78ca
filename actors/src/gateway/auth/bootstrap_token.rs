//! Bootstrap tokens as kube-apiserver's bootstrap token authenticator and kubeadm keep
//! them: a token `<id>.<secret>` is good while the `kube-system` Secret
//! `bootstrap-token-<id>` of type `bootstrap.kubernetes.io/token` holds that secret, allows
//! `usage-bootstrap-authentication`, and its `expiration` has not passed. It authenticates
//! as `system:bootstrap:<id>` in `system:bootstrappers` and the token's extra groups.
//! Deleting the Secret (`skiff token delete`, or the token cleaner once it expires)
//! revokes the token.

use base64::Engine;
use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};
use subtle::ConstantTimeEq;

use super::UserInfo;
use crate::api::resources::object_key;
use crate::store::StoreHandle;

/// The Secret type of bootstrap tokens.
pub const SECRET_TYPE: &str = "bootstrap.kubernetes.io/token";
/// Their Secrets' names: this prefix and the token's id.
pub const SECRET_PREFIX: &str = "bootstrap-token-";
/// Where their Secrets live.
pub const NAMESPACE: &str = "kube-system";
/// The group every bootstrap token is in.
pub const BOOTSTRAPPERS: &str = "system:bootstrappers";
/// The extra group kubeadm gives node join tokens (which the node-bootstrapper binding
/// names).
pub const DEFAULT_NODE_GROUP: &str = "system:bootstrappers:kubeadm:default-node-token";

/// The token's id and secret, if it has the bootstrap-token shape
/// (`[a-z0-9]{6}.[a-z0-9]{16}`).
pub fn parts(token: &str) -> Option<(&str, &str)> {
    let (id, secret) = token.split_once('.')?;
    let ok = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    };
    (ok(id, 6) && ok(secret, 16)).then_some((id, secret))
}

/// What a new bootstrap token is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenSpec {
    pub id: String,
    pub secret: String,
    /// After this the token is refused and its Secret deleted; `None`: never.
    pub expiration: Option<DateTime<Utc>>,
    pub description: String,
    /// `authentication` and/or `signing`.
    pub usages: Vec<String>,
    /// Extra groups, each `system:bootstrappers:...`.
    pub groups: Vec<String>,
}

impl TokenSpec {
    /// A node join token: for authentication and signing, in kubeadm's default group.
    pub fn for_joining(
        token: &str,
        expiration: Option<DateTime<Utc>>,
        description: &str,
    ) -> Option<TokenSpec> {
        let (id, secret) = parts(token)?;
        Some(TokenSpec {
            id: id.to_string(),
            secret: secret.to_string(),
            expiration,
            description: description.to_string(),
            usages: vec!["authentication".into(), "signing".into()],
            groups: vec![DEFAULT_NODE_GROUP.into()],
        })
    }

    /// The Secret that holds the token.
    pub fn secret_object(&self) -> Value {
        let b64 = |s: &str| json!(base64::engine::general_purpose::STANDARD.encode(s));
        let mut data = Map::new();
        data.insert("token-id".into(), b64(&self.id));
        data.insert("token-secret".into(), b64(&self.secret));
        if let Some(t) = self.expiration {
            data.insert(
                "expiration".into(),
                b64(&t.format("%Y-%m-%dT%H:%M:%SZ").to_string()),
            );
        }
        if !self.description.is_empty() {
            data.insert("description".into(), b64(&self.description));
        }
        for usage in &self.usages {
            data.insert(format!("usage-bootstrap-{usage}"), b64("true"));
        }
        if !self.groups.is_empty() {
            data.insert("auth-extra-groups".into(), b64(&self.groups.join(",")));
        }
        json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": format!("{SECRET_PREFIX}{}", self.id), "namespace": NAMESPACE},
            "type": SECRET_TYPE,
            "data": data,
        })
    }
}

/// A field of a bootstrap token Secret, decoded.
pub fn field(secret: &Value, name: &str) -> Option<String> {
    let raw = secret.pointer(&format!("/data/{name}"))?.as_str()?;
    let bytes = base64::engine::general_purpose::STANDARD.decode(raw).ok()?;
    String::from_utf8(bytes).ok()
}

/// When the token expires; `Err` when its `expiration` is not a time (such a token is
/// refused and collected as expired, as Kubernetes does).
pub fn expiration(secret: &Value) -> Result<Option<DateTime<Utc>>, String> {
    match field(secret, "expiration") {
        None => Ok(None),
        Some(s) => DateTime::parse_from_rfc3339(&s)
            .map(|t| Some(t.with_timezone(&Utc)))
            .map_err(|_| s),
    }
}

/// Whether a Secret is a bootstrap token's.
pub fn is_token_secret(secret: &Value) -> bool {
    secret.get("type").and_then(Value::as_str) == Some(SECRET_TYPE)
}

/// Why a bootstrap token was refused (logged at debug; the client sees 401 only).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenRefused {
    #[error("not a bootstrap token")]
    Malformed,
    #[error("no secret for bootstrap token {0}")]
    Missing(String),
    #[error("the secret of bootstrap token {0} is not of type {SECRET_TYPE}")]
    WrongType(String),
    #[error("bootstrap token {0} does not match its secret")]
    Mismatch(String),
    #[error("bootstrap token {0} is not for authentication")]
    NotForAuthentication(String),
    #[error("bootstrap token {0} has expired")]
    Expired(String),
    #[error("the secret of bootstrap token {0} is being deleted")]
    Deleted(String),
}

/// Checks bootstrap tokens against their Secrets in the store.
#[derive(Clone)]
pub struct BootstrapTokenAuthenticator {
    store: StoreHandle,
}

impl BootstrapTokenAuthenticator {
    pub fn new(store: StoreHandle) -> Self {
        BootstrapTokenAuthenticator { store }
    }

    pub fn authenticate(&self, token: &str, now: DateTime<Utc>) -> Result<UserInfo, TokenRefused> {
        let (id, secret) = parts(token).ok_or(TokenRefused::Malformed)?;
        let key = object_key("secrets", Some(NAMESPACE), &format!("{SECRET_PREFIX}{id}"));
        let obj = self
            .store
            .get(&key)
            .ok_or_else(|| TokenRefused::Missing(id.into()))?;
        check(&obj.value, id, secret, now)
    }
}

/// The bootstrap authenticator's checks of one token against its Secret.
fn check(s: &Value, id: &str, secret: &str, now: DateTime<Utc>) -> Result<UserInfo, TokenRefused> {
    if !is_token_secret(s) {
        return Err(TokenRefused::WrongType(id.into()));
    }
    if s.pointer("/metadata/deletionTimestamp").is_some() {
        return Err(TokenRefused::Deleted(id.into()));
    }
    let held_id = field(s, "token-id").unwrap_or_default();
    let held_secret = field(s, "token-secret").unwrap_or_default();
    if held_id != id || !bool::from(held_secret.as_bytes().ct_eq(secret.as_bytes())) {
        return Err(TokenRefused::Mismatch(id.into()));
    }
    if field(s, "usage-bootstrap-authentication").as_deref() != Some("true") {
        return Err(TokenRefused::NotForAuthentication(id.into()));
    }
    match expiration(s) {
        Ok(Some(t)) if t <= now => return Err(TokenRefused::Expired(id.into())),
        Err(_) => return Err(TokenRefused::Expired(id.into())),
        _ => {}
    }
    let mut groups = vec![BOOTSTRAPPERS.to_string()];
    // Extra groups must be bootstrappers' groups: a token cannot claim system:masters.
    groups.extend(
        field(s, "auth-extra-groups")
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|g| g.starts_with("system:bootstrappers:"))
            .map(str::to_string),
    );
    Ok(UserInfo {
        name: format!("system:bootstrap:{id}"),
        uid: String::new(),
        groups,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    const TOKEN: &str = "abcdef.0123456789abcdef";

    #[test]
    fn a_token_is_good_until_it_expires_and_only_with_its_secret() {
        let spec = TokenSpec::for_joining(TOKEN, Some(t("2026-01-02T00:00:00Z")), "join").unwrap();
        let secret = spec.secret_object();
        assert_eq!(secret["metadata"]["name"], "bootstrap-token-abcdef");
        assert_eq!(secret["type"], SECRET_TYPE);
        let user = check(
            &secret,
            "abcdef",
            "0123456789abcdef",
            t("2026-01-01T00:00:00Z"),
        )
        .expect("good");
        assert_eq!(user.name, "system:bootstrap:abcdef");
        assert_eq!(user.groups, [BOOTSTRAPPERS, DEFAULT_NODE_GROUP]);
        assert_eq!(
            check(
                &secret,
                "abcdef",
                "0123456789abcdee",
                t("2026-01-01T00:00:00Z")
            ),
            Err(TokenRefused::Mismatch("abcdef".into()))
        );
        assert_eq!(
            check(
                &secret,
                "abcdef",
                "0123456789abcdef",
                t("2026-01-02T00:00:00Z")
            ),
            Err(TokenRefused::Expired("abcdef".into()))
        );
        assert_eq!(expiration(&secret), Ok(Some(t("2026-01-02T00:00:00Z"))));
    }

    #[test]
    fn a_token_not_for_authentication_or_claiming_other_groups_is_held_to_its_place() {
        let mut spec = TokenSpec::for_joining(TOKEN, None, "").unwrap();
        spec.usages = vec!["signing".into()];
        let now = t("2026-01-01T00:00:00Z");
        assert_eq!(
            check(&spec.secret_object(), "abcdef", "0123456789abcdef", now),
            Err(TokenRefused::NotForAuthentication("abcdef".into()))
        );
        spec.usages = vec!["authentication".into()];
        spec.groups = vec!["system:masters".into(), "system:bootstrappers:x".into()];
        let user = check(&spec.secret_object(), "abcdef", "0123456789abcdef", now).unwrap();
        assert_eq!(user.groups, [BOOTSTRAPPERS, "system:bootstrappers:x"]);
        let mut opaque = spec.secret_object();
        opaque["type"] = json!("Opaque");
        assert_eq!(
            check(&opaque, "abcdef", "0123456789abcdef", now),
            Err(TokenRefused::WrongType("abcdef".into()))
        );
    }

    #[test]
    fn only_the_bootstrap_token_shape_is_a_bootstrap_token() {
        assert_eq!(parts(TOKEN), Some(("abcdef", "0123456789abcdef")));
        assert!(parts("ABCDEF.0123456789abcdef").is_none());
        assert!(parts("abcdef0123456789abcdef").is_none());
        assert!(parts("abcde.0123456789abcdef").is_none());
    }
}
