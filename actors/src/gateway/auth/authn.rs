//! Authentication, as kube-apiserver does it: a client certificate signed by the cluster
//! CA (CN = user, O = groups), a bearer token from the token file (`--token-auth-file`),
//! the join token (a bootstrap token) for nodes joining the cluster, or a service account
//! token (a JWT from the TokenRequest API or a legacy token Secret). The first that
//! succeeds names the user; a request none of them accepts gets 401 and no data, except
//! that the service account issuer's discovery documents may be asked for anonymously
//! (RBAC then decides, as kube-apiserver's anonymous authentication does).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use actix_web::body::{BoxBody, EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{web, HttpMessage};
use rustls::server::danger::ClientCertVerifier;
use rustls_pki_types::{CertificateDer, UnixTime};
use subtle::ConstantTimeEq;

use super::bootstrap_token::{self, BootstrapTokenAuthenticator};
use super::serviceaccount::ServiceAccountAuthenticator;
use super::UserInfo;
use crate::api::ApiError;
use crate::gateway::tls::PeerCertificates;
use crate::gateway::{render, AppState};
use crate::pki;

/// Every authenticated user is in this group.
pub const AUTHENTICATED: &str = "system:authenticated";
/// The group of users authenticated by a bootstrap (join) token.
pub const BOOTSTRAPPERS: &str = bootstrap_token::BOOTSTRAPPERS;
/// The user and group of a request without credentials, where one is let through.
pub const ANONYMOUS: &str = "system:anonymous";
pub const UNAUTHENTICATED: &str = "system:unauthenticated";
/// The paths a request without credentials may ask for (and RBAC decide on): the service
/// account issuer's OIDC discovery, which kube-apiserver's default anonymous access and
/// the `system:service-account-issuer-discovery` role exist for.
pub const ANONYMOUS_PATHS: &[&str] = &[
    "/.well-known/openid-configuration",
    "/.well-known/openid-configuration/",
    "/openid/v1/jwks",
    "/openid/v1/jwks/",
];

#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    #[error("cannot read token file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("token file {path}, line {line}: {detail}")]
    Parse {
        path: PathBuf,
        line: usize,
        detail: String,
    },
}

/// Why a request was not authenticated. The client only ever sees "Unauthorized"; the
/// reason goes to the log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthnError {
    #[error("no credential")]
    NoCredential,
    #[error("invalid bearer token")]
    InvalidToken,
    #[error("client certificate rejected: {0}")]
    InvalidCertificate(String),
}

/// A SHA-256 digest of a token: lookups compare digests in constant time, so neither
/// a token's length nor how much of it matched shows in the answer's timing.
type Digest = [u8; 32];

fn digest(token: &str) -> Digest {
    let d = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// The users of a token file: `token,user,uid,"group1,group2"` per line.
#[derive(Default)]
pub struct TokenFile {
    entries: Vec<(Digest, UserInfo)>,
}

impl std::fmt::Debug for TokenFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenFile")
            .field("users", &self.entries.len())
            .finish()
    }
}

impl TokenFile {
    pub fn load(path: &Path) -> Result<TokenFile, TokenFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| TokenFileError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        TokenFile::parse(&text).map_err(|(line, detail)| TokenFileError::Parse {
            path: path.to_path_buf(),
            line,
            detail,
        })
    }

    /// Parse the file's text; an error names the (1-based) line and what is wrong.
    pub fn parse(text: &str) -> Result<TokenFile, (usize, String)> {
        let entries = parse_token_lines(text)?
            .into_iter()
            .map(|l| (digest(&l.token), l.user))
            .collect();
        Ok(TokenFile { entries })
    }

    fn authenticate(&self, token: &str) -> Option<UserInfo> {
        let d = digest(token);
        let mut found = None;
        // Look at every entry whatever matched, so the time taken says nothing.
        for (e, user) in &self.entries {
            if bool::from(e.ct_eq(&d)) {
                found = Some(user.clone());
            }
        }
        found
    }
}

/// One user of a token file.
pub struct TokenLine {
    pub token: String,
    pub user: UserInfo,
}

/// The lines of a token file, checked: at least token, user and uid, no empty token or
/// user, no token twice.
pub fn parse_token_lines(text: &str) -> Result<Vec<TokenLine>, (usize, String)> {
    let mut lines: Vec<TokenLine> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        let mut fields = split_csv(line).map_err(|e| (n, e))?.into_iter();
        let (Some(token), Some(name), Some(uid)) = (fields.next(), fields.next(), fields.next())
        else {
            return Err((
                n,
                "must have at least 3 columns (token, user name, user uid)".into(),
            ));
        };
        if token.is_empty() {
            return Err((n, "empty token".into()));
        }
        if name.is_empty() {
            return Err((n, "empty user name".into()));
        }
        if lines.iter().any(|l| l.token == token) {
            return Err((n, "duplicate token".into()));
        }
        let groups = fields
            .next()
            .map(|g| {
                g.split(',')
                    .map(str::trim)
                    .filter(|g| !g.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        lines.push(TokenLine {
            token,
            user: UserInfo { name, uid, groups },
        });
    }
    Ok(lines)
}

/// One line of the token file in the format `TokenFile::parse` reads.
pub fn token_file_line(token: &str, user: &str, uid: &str, groups: &[&str]) -> String {
    format!("{token},{user},{uid},\"{}\"\n", groups.join(","))
}

/// Split one CSV record: commas separate fields, double quotes enclose a field that may
/// hold commas, and `""` inside quotes is one quote.
fn split_csv(line: &str) -> Result<Vec<String>, String> {
    let mut fields = Vec::new();
    let mut cur = String::new();
    let mut chars = line.trim_end_matches('\r').chars().peekable();
    let mut quoted = false;
    let mut at_start = true;
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (false, '"') if at_start => {
                quoted = true;
                at_start = false;
            }
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                cur.push('"');
            }
            (true, '"') => {
                quoted = false;
                if chars.peek().is_some_and(|c| *c != ',') {
                    return Err("unexpected text after a closing quote".into());
                }
            }
            (false, ',') => {
                fields.push(std::mem::take(&mut cur).trim().to_string());
                at_start = true;
            }
            (_, c) => {
                if !(at_start && c == ' ' && !quoted) {
                    at_start = false;
                    cur.push(c);
                }
            }
        }
    }
    if quoted {
        return Err("unterminated quoted field".into());
    }
    fields.push(cur.trim().to_string());
    Ok(fields)
}

/// Who a request is from.
pub struct Authenticator {
    tokens: TokenFile,
    /// Bootstrap tokens (a joining node's), checked against their Secrets.
    bootstrap: Option<BootstrapTokenAuthenticator>,
    /// Verifies client certificates against the cluster CA (chain and validity).
    certs: Option<Arc<dyn ClientCertVerifier>>,
    service_accounts: Option<ServiceAccountAuthenticator>,
}

impl Authenticator {
    pub fn new(tokens: TokenFile, certs: Option<Arc<dyn ClientCertVerifier>>) -> Self {
        Authenticator {
            tokens,
            bootstrap: None,
            certs,
            service_accounts: None,
        }
    }

    /// Also accept bootstrap tokens.
    pub fn with_bootstrap_tokens(mut self, b: BootstrapTokenAuthenticator) -> Self {
        self.bootstrap = Some(b);
        self
    }

    /// Also accept service account tokens.
    pub fn with_service_accounts(mut self, sa: ServiceAccountAuthenticator) -> Self {
        self.service_accounts = Some(sa);
        self
    }

    /// The user a bearer token names, for `audiences` (the API server's when empty), with
    /// the audiences it is good for: a TokenReview's question. Tokens other than service
    /// account tokens are good for the API server's audience only.
    pub fn authenticate_token(
        &self,
        token: &str,
        audiences: &[String],
        api_audience: &str,
    ) -> Option<(UserInfo, Vec<String>)> {
        if let Some(sa) = self
            .service_accounts
            .as_ref()
            .filter(|s| s.claims_ours(token))
        {
            return match sa.authenticate(token, audiences) {
                Ok((user, matched)) => Some((with_authenticated(user), matched)),
                Err(reason) => {
                    tracing::debug!(%reason, "service account token refused");
                    None
                }
            };
        }
        let for_api = audiences.is_empty() || audiences.iter().any(|a| a == api_audience);
        if !for_api {
            return None;
        }
        self.authenticate(None, Some(token))
            .ok()
            .map(|u| (u, vec![api_audience.to_string()]))
    }

    /// The user behind a request's client certificate chain and bearer token. Like kube's
    /// union authenticator, a rejected certificate does not stop a valid token.
    pub fn authenticate(
        &self,
        peer: Option<&[CertificateDer<'static>]>,
        bearer: Option<&str>,
    ) -> Result<UserInfo, AuthnError> {
        let mut failure = AuthnError::NoCredential;
        if let Some((leaf, intermediates)) = peer.and_then(<[_]>::split_first) {
            match self.authenticate_cert(leaf, intermediates) {
                Ok(user) => return Ok(with_authenticated(user)),
                Err(e) => failure = e,
            }
        }
        if let Some(token) = bearer {
            let user = self
                .tokens
                .authenticate(token)
                .or_else(|| self.bootstrap_token(token))
                .or_else(|| self.service_account(token));
            match user {
                Some(user) => return Ok(with_authenticated(user)),
                None => failure = AuthnError::InvalidToken,
            }
        }
        Err(failure)
    }

    fn authenticate_cert(
        &self,
        leaf: &CertificateDer<'static>,
        intermediates: &[CertificateDer<'static>],
    ) -> Result<UserInfo, AuthnError> {
        let verifier = self
            .certs
            .as_ref()
            .ok_or_else(|| AuthnError::InvalidCertificate("no client CA".into()))?;
        verifier
            .verify_client_cert(leaf, intermediates, UnixTime::now())
            .map_err(|e| AuthnError::InvalidCertificate(e.to_string()))?;
        let subject =
            pki::cert_subject(leaf).map_err(|e| AuthnError::InvalidCertificate(e.to_string()))?;
        if subject.common_name.is_empty() {
            return Err(AuthnError::InvalidCertificate(
                "the certificate has no common name".into(),
            ));
        }
        Ok(UserInfo {
            name: subject.common_name,
            uid: String::new(),
            groups: subject.organizations,
        })
    }
}

impl Authenticator {
    fn bootstrap_token(&self, token: &str) -> Option<UserInfo> {
        bootstrap_token::parts(token)?;
        match self
            .bootstrap
            .as_ref()?
            .authenticate(token, chrono::Utc::now())
        {
            Ok(user) => Some(user),
            Err(reason) => {
                tracing::debug!(%reason, "bootstrap token refused");
                None
            }
        }
    }

    fn service_account(&self, token: &str) -> Option<UserInfo> {
        let sa = self
            .service_accounts
            .as_ref()
            .filter(|s| s.claims_ours(token))?;
        match sa.authenticate(token, &[]) {
            Ok((user, _)) => Some(user),
            Err(reason) => {
                tracing::debug!(%reason, "service account token refused");
                None
            }
        }
    }
}

fn with_authenticated(mut user: UserInfo) -> UserInfo {
    if !user.in_group(AUTHENTICATED) {
        user.groups.push(AUTHENTICATED.into());
    }
    user
}

/// The token of an `Authorization: Bearer <token>` header, if there is one.
pub fn bearer_token(header: Option<&str>) -> Option<&str> {
    let mut parts = header?.split_whitespace();
    let (scheme, token) = (parts.next()?, parts.next()?);
    (scheme.eq_ignore_ascii_case("bearer") && parts.next().is_none()).then_some(token)
}

/// Middleware on every route: puts the authenticated `UserInfo` into the request's
/// extensions, or answers 401 with a `Status` before any handler runs. Without an
/// authenticator (the insecure path) requests pass untouched.
pub async fn middleware(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody, BoxBody>>, actix_web::Error> {
    let authn = req
        .app_data::<web::Data<AppState>>()
        .and_then(|s| s.authentication.clone());
    let Some(authn) = authn else {
        return next
            .call(req)
            .await
            .map(ServiceResponse::map_into_left_body);
    };
    let peer = req.conn_data::<PeerCertificates>().map(|p| p.0.clone());
    let header = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok());
    match authn.authenticate(peer.as_deref(), bearer_token(header)) {
        Ok(user) => {
            tracing::trace!(user = %user.name, "authenticated");
            req.extensions_mut().insert(user);
            next.call(req)
                .await
                .map(ServiceResponse::map_into_left_body)
        }
        Err(AuthnError::NoCredential) if ANONYMOUS_PATHS.contains(&req.path()) => {
            req.extensions_mut().insert(UserInfo {
                name: ANONYMOUS.into(),
                uid: String::new(),
                groups: vec![UNAUTHENTICATED.into()],
            });
            next.call(req)
                .await
                .map(ServiceResponse::map_into_left_body)
        }
        Err(reason) => {
            tracing::debug!(%reason, path = %req.path(), "unauthorized request");
            let resp = render::error_response(&ApiError::Unauthorized);
            Ok(req.into_response(resp).map_into_right_body())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_file_lines_parse_like_kube_apiserver_reads_them() {
        let file =
            TokenFile::parse("# comment\nabc,admin,1,\"system:masters,devs\"\n\n  def , bob , 2\n")
                .expect("parse");
        let admin = file.authenticate("abc").expect("admin");
        assert_eq!(admin.name, "admin");
        assert_eq!(admin.uid, "1");
        assert_eq!(admin.groups, vec!["system:masters", "devs"]);
        let bob = file.authenticate("def").expect("bob");
        assert_eq!((bob.name.as_str(), bob.groups.len()), ("bob", 0));
        assert!(file.authenticate("ab").is_none());
        assert!(file.authenticate("").is_none());
    }

    #[test]
    fn token_file_errors_name_the_line() {
        let err = TokenFile::parse("a,b,c\nonly,two\n")
            .map(|_| ())
            .unwrap_err();
        assert_eq!(err.0, 2);
        assert!(err.1.contains("at least 3 columns"), "{}", err.1);
        assert_eq!(
            TokenFile::parse("a,b,c\na,d,e\n").map(|_| ()).unwrap_err(),
            (2, "duplicate token".to_string())
        );
        assert!(TokenFile::parse("a,b,c,\"g1,g2\n").is_err());
        assert!(TokenFile::parse(",b,c\n").is_err());
    }

    #[test]
    fn written_lines_read_back() {
        let line = token_file_line("tok", "admin", "u1", &["system:masters", "x"]);
        let file = TokenFile::parse(&line).expect("parse");
        assert_eq!(
            file.authenticate("tok").expect("user").groups,
            vec!["system:masters", "x"]
        );
    }

    #[test]
    fn no_credential_and_a_wrong_token_are_different_failures() {
        let authn = Authenticator::new(TokenFile::parse("good,admin,1\n").expect("parse"), None);
        assert_eq!(
            authn.authenticate(None, None),
            Err(AuthnError::NoCredential)
        );
        assert_eq!(
            authn.authenticate(None, Some("bad")),
            Err(AuthnError::InvalidToken)
        );
        let admin = authn.authenticate(None, Some("good")).expect("admin");
        assert_eq!(admin.groups, vec![AUTHENTICATED]);
    }

    #[test]
    fn certificates_must_chain_to_the_cluster_ca_and_be_in_their_validity() {
        use rustls_pki_types::pem::PemObject;
        use std::time::{Duration, SystemTime};
        let ca = pki::ClusterCa::generate("cluster").expect("ca");
        let verifier = crate::gateway::tls::client_verifier(ca.cert_der()).expect("verifier");
        let authn = Authenticator::new(TokenFile::default(), Some(verifier));
        let chain = |cred: &pki::Credential| {
            vec![CertificateDer::from_pem_slice(cred.cert_pem.as_bytes()).expect("pem")]
        };
        let (now, hour) = (SystemTime::now(), Duration::from_secs(3600));
        let jane = ca
            .issue_client("jane", &["devs"], now - hour, now + hour)
            .expect("cert");
        let user = authn.authenticate(Some(&chain(&jane)), None).expect("jane");
        assert_eq!(user.name, "jane");
        assert_eq!(user.groups, vec!["devs", AUTHENTICATED]);
        let expired = ca
            .issue_client("jane", &[], now - 2 * hour, now - hour)
            .expect("cert");
        assert!(matches!(
            authn.authenticate(Some(&chain(&expired)), None),
            Err(AuthnError::InvalidCertificate(_))
        ));
        let other = pki::ClusterCa::generate("other").expect("ca");
        let foreign = other
            .issue_client("jane", &[], now - hour, now + hour)
            .expect("cert");
        assert!(matches!(
            authn.authenticate(Some(&chain(&foreign)), None),
            Err(AuthnError::InvalidCertificate(_))
        ));
    }

    #[test]
    fn bearer_header_is_parsed_case_insensitively() {
        assert_eq!(bearer_token(Some("Bearer abc")), Some("abc"));
        assert_eq!(bearer_token(Some("bearer  abc")), Some("abc"));
        assert_eq!(bearer_token(Some("Basic abc")), None);
        assert_eq!(bearer_token(Some("Bearer")), None);
        assert_eq!(bearer_token(Some("Bearer a b")), None);
        assert_eq!(bearer_token(None), None);
    }
}
