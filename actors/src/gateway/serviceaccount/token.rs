//! Service account tokens: JWTs signed with the cluster's service account key
//! (`<data_dir>/pki/sa.key`, ECDSA P-256, ES256), carrying the claims kube-apiserver puts
//! in them (`pkg/serviceaccount/claims.go`): `iss`, `sub`, `aud`, `exp`/`iat`/`nbf`, `jti`
//! and the private `kubernetes.io` claim naming the namespace, the service account and
//! what the token is bound to. Legacy (Secret-based) tokens carry the older flat claims
//! and the `kubernetes/serviceaccount` issuer.

use std::path::Path;
use std::sync::OnceLock;

use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::PrivatePkcs8KeyDer;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::pki::{self, PkiError};

/// The key file under `<data_dir>/pki/`.
pub const KEY_FILE: &str = "sa.key";
/// The issuer (and API audience) of tokens from the TokenRequest API, kubeadm's default.
pub const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
/// The issuer legacy Secret-based tokens carry.
pub const LEGACY_ISSUER: &str = "kubernetes/serviceaccount";
/// The OIDC discovery paths (served by the gateway).
pub const DISCOVERY_PATH: &str = "/.well-known/openid-configuration";
pub const JWKS_PATH: &str = "/openid/v1/jwks";
/// Clock skew allowed on `exp` and `nbf`, as kube-apiserver's validator (jwt.DefaultLeeway).
const LEEWAY_SECONDS: u64 = 60;
/// The DER prefix of a P-256 SubjectPublicKeyInfo; the 65-byte point follows it.
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error(transparent)]
    Pki(#[from] PkiError),
    #[error("{path}: not a PKCS#8 ECDSA P-256 private key: {detail}")]
    BadKey { path: String, detail: String },
    #[error("cannot sign the token: {0}")]
    Sign(String),
    #[error("invalid token: {0}")]
    Invalid(String),
}

/// A name and uid, as the `kubernetes.io` claim refers to objects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ObjectRef {
    pub name: String,
    #[serde(default)]
    pub uid: String,
}

/// The private `kubernetes.io` claim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct KubernetesClaim {
    pub namespace: String,
    pub serviceaccount: ObjectRef,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<ObjectRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<ObjectRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<ObjectRef>,
    /// When the token's requested lifetime ends and its extended one goes on (tokens of
    /// projected volumes, `--service-account-extend-token-expiration`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warnafter: Option<i64>,
}

/// The claims of a bound (TokenRequest) token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub aud: Vec<String>,
    pub exp: i64,
    pub iat: i64,
    pub iss: String,
    pub jti: String,
    #[serde(rename = "kubernetes.io")]
    pub kubernetes: KubernetesClaim,
    pub nbf: i64,
    pub sub: String,
}

/// The claims of a legacy token, as the token controller wrote them into Secrets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LegacyClaims {
    pub iss: String,
    #[serde(rename = "kubernetes.io/serviceaccount/namespace")]
    pub namespace: String,
    #[serde(rename = "kubernetes.io/serviceaccount/secret.name")]
    pub secret_name: String,
    #[serde(rename = "kubernetes.io/serviceaccount/service-account.name")]
    pub service_account_name: String,
    #[serde(rename = "kubernetes.io/serviceaccount/service-account.uid")]
    pub service_account_uid: String,
    pub sub: String,
}

/// `system:serviceaccount:<ns>:<name>`.
pub fn username(namespace: &str, name: &str) -> String {
    format!("system:serviceaccount:{namespace}:{name}")
}

/// Signs and verifies the cluster's service account tokens.
pub struct TokenIssuer {
    encoding: EncodingKey,
    decoding: DecodingKey,
    kid: String,
    /// The public key's coordinates, base64url.
    x: String,
    y: String,
    issuer: String,
    /// Where the JWKS is served, known once the gateway has bound its address.
    jwks_uri: OnceLock<String>,
}

impl std::fmt::Debug for TokenIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenIssuer")
            .field("issuer", &self.issuer)
            .field("kid", &self.kid)
            .finish()
    }
}

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

impl TokenIssuer {
    /// Load `<dir>/sa.key`, creating it (mode 0600) on first start.
    pub fn load_or_create(dir: &Path) -> Result<TokenIssuer, TokenError> {
        let path = dir.join(KEY_FILE);
        if !path.exists() {
            let rng = ring::rand::SystemRandom::new();
            let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
                .map_err(|_| PkiError::Random)?;
            let pem = pem_of("PRIVATE KEY", doc.as_ref());
            pki::write_secret(&path, &pem)?;
            tracing::info!(path = %path.display(), "created the service account signing key");
        }
        let text = pki::read(&path)?;
        let der = PrivatePkcs8KeyDer::from_pem_slice(text.as_bytes()).map_err(|e| {
            TokenError::BadKey {
                path: path.display().to_string(),
                detail: e.to_string(),
            }
        })?;
        Self::from_pkcs8(der.secret_pkcs8_der()).map_err(|detail| TokenError::BadKey {
            path: path.display().to_string(),
            detail,
        })
    }

    /// An issuer over a PKCS#8 P-256 key.
    pub fn from_pkcs8(der: &[u8]) -> Result<TokenIssuer, String> {
        let rng = ring::rand::SystemRandom::new();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der, &rng)
            .map_err(|e| e.to_string())?;
        let point = pair.public_key().as_ref();
        if point.len() != 65 || point[0] != 4 {
            return Err("unexpected public key encoding".into());
        }
        let (x, y) = (b64url(&point[1..33]), b64url(&point[33..65]));
        // kube-apiserver's key id: the SHA-256 of the DER public key, base64url.
        let mut spki = P256_SPKI_PREFIX.to_vec();
        spki.extend_from_slice(point);
        let kid = b64url(ring::digest::digest(&ring::digest::SHA256, &spki).as_ref());
        let decoding = DecodingKey::from_ec_components(&x, &y).map_err(|e| e.to_string())?;
        Ok(TokenIssuer {
            encoding: EncodingKey::from_ec_der(der),
            decoding,
            kid,
            x,
            y,
            issuer: ISSUER.to_string(),
            jwks_uri: OnceLock::new(),
        })
    }

    /// A throwaway issuer with a fresh key (tests).
    pub fn generate() -> Result<TokenIssuer, String> {
        let rng = ring::rand::SystemRandom::new();
        let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map_err(|e| e.to_string())?;
        Self::from_pkcs8(doc.as_ref())
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The audiences the API server itself accepts (kube-apiserver's `--api-audiences`,
    /// which default to the issuer).
    pub fn api_audiences(&self) -> Vec<String> {
        vec![self.issuer.clone()]
    }

    /// Record where the JWKS is served (`https://<advertise address>:<port>/openid/v1/jwks`).
    pub fn set_jwks_uri(&self, uri: String) {
        let _ = self.jwks_uri.set(uri);
    }

    fn sign<T: Serialize>(&self, claims: &T) -> Result<String, TokenError> {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding)
            .map_err(|e| TokenError::Sign(e.to_string()))
    }

    /// A bound token with these claims.
    pub fn issue(&self, claims: &Claims) -> Result<String, TokenError> {
        self.sign(claims)
    }

    /// A legacy token, as the token controller puts into `kubernetes.io/service-account-token`
    /// Secrets: no expiry, no audience.
    pub fn issue_legacy(&self, claims: &LegacyClaims) -> Result<String, TokenError> {
        self.sign(claims)
    }

    /// The claims of a token of ours that is valid now for one of `audiences`: signature,
    /// issuer, `exp` and `nbf` (with a minute's leeway), audience. Whether the objects it
    /// names still exist is for the authenticator to check.
    pub fn verify(&self, token: &str, audiences: &[String]) -> Result<Claims, TokenError> {
        let mut v = Validation::new(Algorithm::ES256);
        v.leeway = LEEWAY_SECONDS;
        v.validate_nbf = true;
        v.set_issuer(&[&self.issuer]);
        v.set_audience(audiences);
        v.set_required_spec_claims(&["exp", "iss", "sub", "aud"]);
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &v)
            .map(|d| d.claims)
            .map_err(|e| TokenError::Invalid(e.to_string()))
    }

    /// The claims of a legacy token of ours (signature and issuer only: they never expire).
    pub fn verify_legacy(&self, token: &str) -> Result<LegacyClaims, TokenError> {
        let mut v = Validation::new(Algorithm::ES256);
        v.validate_exp = false;
        v.validate_aud = false;
        v.set_issuer(&[LEGACY_ISSUER]);
        v.set_required_spec_claims(&["iss", "sub"]);
        jsonwebtoken::decode::<LegacyClaims>(token, &self.decoding, &v)
            .map(|d| d.claims)
            .map_err(|e| TokenError::Invalid(e.to_string()))
    }

    /// The issuer a token claims, read without checking anything (to pick the validator).
    pub fn unverified_issuer(token: &str) -> Option<String> {
        let payload = token.split('.').nth(1)?;
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload.trim_end_matches('='))
            .ok()?;
        let v: Value = serde_json::from_slice(&bytes).ok()?;
        v.get("iss")?.as_str().map(str::to_string)
    }

    /// The JSON Web Key Set of `/openid/v1/jwks`.
    pub fn jwks(&self) -> Value {
        json!({"keys": [{
            "use": "sig",
            "kty": "EC",
            "kid": self.kid,
            "crv": "P-256",
            "alg": "ES256",
            "x": self.x,
            "y": self.y,
        }]})
    }

    /// The OIDC discovery document of `/.well-known/openid-configuration`, as
    /// kube-apiserver serves it.
    pub fn discovery(&self) -> Value {
        let jwks_uri = self
            .jwks_uri
            .get()
            .cloned()
            .unwrap_or_else(|| format!("{}{JWKS_PATH}", self.issuer));
        json!({
            "issuer": self.issuer,
            "jwks_uri": jwks_uri,
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["ES256"],
        })
    }
}

fn pem_of(label: &str, der: &[u8]) -> String {
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in body.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(now: i64, exp: i64, aud: &str) -> Claims {
        Claims {
            aud: vec![aud.into()],
            exp,
            iat: now,
            iss: ISSUER.into(),
            jti: "j".into(),
            kubernetes: KubernetesClaim {
                namespace: "dev".into(),
                serviceaccount: ObjectRef {
                    name: "builder".into(),
                    uid: "u1".into(),
                },
                ..KubernetesClaim::default()
            },
            nbf: now,
            sub: username("dev", "builder"),
        }
    }

    fn now() -> i64 {
        chrono::Utc::now().timestamp()
    }

    #[test]
    fn a_token_verifies_for_its_audience_until_it_expires() {
        let issuer = TokenIssuer::generate().expect("issuer");
        let t = now();
        let token = issuer.issue(&claims(t, t + 600, ISSUER)).expect("sign");
        let got = issuer
            .verify(&token, &issuer.api_audiences())
            .expect("valid");
        assert_eq!(got.sub, "system:serviceaccount:dev:builder");
        assert_eq!(got.kubernetes.serviceaccount.uid, "u1");
        // Another audience only: not for the API server.
        let other = issuer.issue(&claims(t, t + 600, "vault")).expect("sign");
        assert!(issuer.verify(&other, &issuer.api_audiences()).is_err());
        assert!(issuer.verify(&other, &["vault".to_string()]).is_ok());
        // Expired beyond the leeway.
        let old = issuer
            .issue(&claims(t - 7200, t - 120, ISSUER))
            .expect("sign");
        assert!(issuer.verify(&old, &issuer.api_audiences()).is_err());
    }

    #[test]
    fn another_key_or_a_changed_payload_does_not_verify() {
        let issuer = TokenIssuer::generate().expect("issuer");
        let stranger = TokenIssuer::generate().expect("issuer");
        let t = now();
        let token = stranger.issue(&claims(t, t + 600, ISSUER)).expect("sign");
        assert!(issuer.verify(&token, &issuer.api_audiences()).is_err());
        let mine = issuer.issue(&claims(t, t + 600, ISSUER)).expect("sign");
        let mut parts: Vec<String> = mine.split('.').map(str::to_string).collect();
        let mut forged = claims(t, t + 600, ISSUER);
        forged.kubernetes.namespace = "kube-system".into();
        parts[1] = b64url(&serde_json::to_vec(&forged).expect("json"));
        assert!(issuer
            .verify(&parts.join("."), &issuer.api_audiences())
            .is_err());
        assert!(issuer.verify("garbage", &issuer.api_audiences()).is_err());
    }

    #[test]
    fn the_key_is_created_once_and_the_jwks_names_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = TokenIssuer::load_or_create(dir.path()).expect("create");
        let b = TokenIssuer::load_or_create(dir.path()).expect("load");
        assert_eq!(a.jwks(), b.jwks());
        let t = now();
        let token = a.issue(&claims(t, t + 600, ISSUER)).expect("sign");
        assert!(b.verify(&token, &b.api_audiences()).is_ok());
        let header = jsonwebtoken::decode_header(&token).expect("header");
        assert_eq!(header.kid.as_deref(), a.jwks()["keys"][0]["kid"].as_str());
        assert_eq!(a.discovery()["issuer"], ISSUER);
        assert_eq!(
            TokenIssuer::unverified_issuer(&token).as_deref(),
            Some(ISSUER)
        );
    }

    #[test]
    fn legacy_tokens_verify_without_expiry() {
        let issuer = TokenIssuer::generate().expect("issuer");
        let claims = LegacyClaims {
            iss: LEGACY_ISSUER.into(),
            namespace: "dev".into(),
            secret_name: "builder-token".into(),
            service_account_name: "builder".into(),
            service_account_uid: "u1".into(),
            sub: username("dev", "builder"),
        };
        let token = issuer.issue_legacy(&claims).expect("sign");
        assert_eq!(issuer.verify_legacy(&token).expect("valid"), claims);
        assert!(issuer.verify(&token, &issuer.api_audiences()).is_err());
    }
}
