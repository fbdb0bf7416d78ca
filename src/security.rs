//! A secure cluster's first start and every start after: the CA and serving certificate,
//! the token file with its admin token, the join token, and the gateway's TLS and
//! authenticator built from them. Everything lives in `<data_dir>/pki/`.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use skiff_actors::gateway::auth::authn::{self, Authenticator, TokenFile};
use skiff_actors::gateway::auth::bootstrap_token::{self, BootstrapTokenAuthenticator};
use skiff_actors::gateway::auth::serviceaccount::ServiceAccountAuthenticator;
use skiff_actors::gateway::{tls, GatewaySecurity};
use skiff_actors::pki::{self, ClusterCa, Credential};

use crate::config::Config;

#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    #[error(transparent)]
    Pki(#[from] pki::PkiError),
    #[error(transparent)]
    TokenFile(#[from] authn::TokenFileError),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("{path}: not a join token (expected <6 of [a-z0-9]>.<16 of [a-z0-9]>)")]
    BadJoinToken { path: PathBuf },
}

/// The credential the written kubeconfig carries for the administrator.
#[derive(Debug, Clone)]
pub enum AdminCredential {
    Token(String),
    Certificate(Credential),
}

/// What a secure cluster is started with.
pub struct Security {
    pub ca: Arc<ClusterCa>,
    pub admin: AdminCredential,
    pub join_token: String,
    /// The join token was made at this start: its bootstrap-token Secret is still to be
    /// created, and then its file written (see [`keep_join_token`]).
    pub join_token_new: bool,
    pub pki_dir: PathBuf,
    pub gateway: GatewaySecurity,
}

/// Load (or on first start create) the cluster's PKI and credentials; service account
/// tokens authenticate too when `service_accounts` is given.
pub fn prepare(
    cfg: &Config,
    service_accounts: Option<ServiceAccountAuthenticator>,
    bootstrap_tokens: Option<BootstrapTokenAuthenticator>,
) -> Result<Security, SecurityError> {
    let pki_dir = cfg.cluster.data_dir.join("pki");
    let ca = ClusterCa::load_or_create(&pki_dir)?;
    let (listen_ip, mut extra) = listen_host(&cfg.gateway.listen);
    extra.extend(cfg.gateway.tls_sans.iter().cloned());
    // In-cluster clients reach the API as the `kubernetes` Service (by name and cluster
    // IP) or at the advertised address, and verify it with the CA: kubeadm's SANs.
    extra.extend(
        [
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
        ]
        .map(String::from),
    );
    if let Ok(ranges) = skiff_actors::gateway::allocation::ServiceRanges::parse(
        &cfg.gateway.service_cidr,
        &cfg.gateway.node_port_range,
    ) {
        extra.push(ranges.first_address().to_string());
    }
    extra.push(cfg.advertise_address().to_string());
    let sans = pki::serving_sans(listen_ip, &extra);
    let serving = pki::load_or_issue_serving(&pki_dir, &ca, &sans)?;

    let token_path = cfg.token_file();
    if !token_path.exists() {
        let token = pki::random_token(32)?;
        let uid = uuid::Uuid::new_v4().to_string();
        let line = authn::token_file_line(&token, "admin", &uid, &["system:masters"]);
        pki::write_secret(&token_path, &line)?;
        tracing::info!(path = %token_path.display(), "created the token file with an admin token");
    }
    let tokens = TokenFile::load(&token_path)?;
    let admin = match admin_token(&token_path)? {
        Some(t) => AdminCredential::Token(t),
        // Someone's own token file with no administrator in it: the kubeconfig gets a
        // client certificate instead.
        None => AdminCredential::Certificate(admin_certificate(&pki_dir, &ca)?),
    };

    // The join token is a bootstrap token, valid while its Secret is: the file only keeps
    // the first one for the administrator. A new one is written once its Secret exists.
    let join_path = pki_dir.join(pki::JOIN_TOKEN);
    let join_token_new = !join_path.exists();
    let join_token = if join_token_new {
        pki::new_join_token()?
    } else {
        pki::read(&join_path)?.trim().to_string()
    };
    if bootstrap_token::parts(&join_token).is_none() {
        return Err(SecurityError::BadJoinToken {
            path: join_path.clone(),
        });
    }

    let verifier = tls::client_verifier(ca.cert_der())?;
    // The chain includes the CA, so a joining node holding only its pin
    // (`--discovery-token-ca-cert-hash`) can learn the CA from the handshake.
    let chain = Credential {
        cert_pem: format!("{}{}", serving.cert_pem, ca.cert_pem()),
        key_pem: serving.key_pem.clone(),
    };
    let server = tls::server_config(&chain, verifier.clone())?;
    let mut authenticator = Authenticator::new(tokens, Some(verifier));
    if let Some(b) = bootstrap_tokens {
        authenticator = authenticator.with_bootstrap_tokens(b);
    }
    if let Some(sa) = service_accounts {
        authenticator = authenticator.with_service_accounts(sa);
    }
    Ok(Security {
        ca: Arc::new(ca),
        admin,
        join_token,
        join_token_new,
        pki_dir,
        gateway: GatewaySecurity {
            tls: server,
            authenticator: Arc::new(authenticator),
        },
    })
}

/// The listen address's IP, or its host name as an extra SAN.
fn listen_host(listen: &str) -> (Option<IpAddr>, Vec<String>) {
    if let Ok(addr) = listen.parse::<std::net::SocketAddr>() {
        return (Some(addr.ip()), Vec::new());
    }
    match listen.rsplit_once(':') {
        Some((host, _)) if !host.is_empty() => (None, vec![host.to_string()]),
        _ => (None, Vec::new()),
    }
}

/// The first token in the token file of a user in `system:masters`.
fn admin_token(path: &Path) -> Result<Option<String>, SecurityError> {
    let text = pki::read(path)?;
    let lines =
        authn::parse_token_lines(&text).map_err(|(line, detail)| authn::TokenFileError::Parse {
            path: path.to_path_buf(),
            line,
            detail,
        })?;
    Ok(lines
        .into_iter()
        .find(|l| l.user.in_group("system:masters"))
        .map(|l| l.token))
}

/// Keep the first join token for the administrator (once its Secret exists), readable by
/// its owner only.
pub fn keep_join_token(pki_dir: &Path, token: &str) -> Result<(), SecurityError> {
    pki::write_secret(&pki_dir.join(pki::JOIN_TOKEN), &format!("{token}\n"))?;
    Ok(())
}

/// A client certificate for `admin` in `system:masters`, kept in the PKI folder.
fn admin_certificate(dir: &Path, ca: &ClusterCa) -> Result<Credential, SecurityError> {
    let (cert, key) = (dir.join("admin.crt"), dir.join("admin.key"));
    if cert.exists() && key.exists() {
        return Ok(Credential {
            cert_pem: pki::read(&cert)?,
            key_pem: pki::read(&key)?,
        });
    }
    let now = std::time::SystemTime::now();
    let year = std::time::Duration::from_secs(365 * 24 * 3600);
    let cred = ca.issue_client("admin", &["system:masters"], now, now + year)?;
    pki::write_secret(&cert, &cred.cert_pem)?;
    pki::write_secret(&key, &cred.key_pem)?;
    Ok(cred)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_start_creates_credentials_that_a_restart_reuses() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cfg = Config::load(None).expect("config");
        cfg.cluster.data_dir = dir.path().to_path_buf();
        cfg.gateway.listen = "127.0.0.1:0".into();
        let first = prepare(&cfg, None, None).expect("first start");
        assert!(first.join_token_new);
        keep_join_token(&first.pki_dir, &first.join_token).expect("kept");
        let second = prepare(&cfg, None, None).expect("second start");
        assert_eq!(first.ca.cert_pem(), second.ca.cert_pem());
        assert_eq!(first.join_token, second.join_token);
        assert!(!second.join_token_new);
        let (AdminCredential::Token(a), AdminCredential::Token(b)) = (&first.admin, &second.admin)
        else {
            panic!("the default token file has an admin token");
        };
        assert_eq!(a, b);
        let user = second
            .gateway
            .authenticator
            .authenticate(None, Some(a))
            .expect("admin token authenticates");
        assert_eq!(user.name, "admin");
        assert!(user.in_group("system:masters"));
    }

    #[test]
    fn a_broken_token_file_stops_the_start_with_its_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cfg = Config::load(None).expect("config");
        cfg.cluster.data_dir = dir.path().to_path_buf();
        let file = dir.path().join("tokens.csv");
        std::fs::write(&file, "tok,admin,1\nonly-two,columns\n").expect("write");
        cfg.auth.token_file = Some(file);
        let err = prepare(&cfg, None, None).err().expect("refused");
        assert!(err.to_string().contains("line 2"), "{err}");
    }

    #[test]
    fn a_token_file_without_an_administrator_gets_an_admin_certificate() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cfg = Config::load(None).expect("config");
        cfg.cluster.data_dir = dir.path().to_path_buf();
        let file = dir.path().join("tokens.csv");
        std::fs::write(&file, "tok,bob,1\n").expect("write");
        cfg.auth.token_file = Some(file);
        let sec = prepare(&cfg, None, None).expect("start");
        assert!(matches!(sec.admin, AdminCredential::Certificate(_)));
    }

    #[test]
    fn listen_host_names_become_sans() {
        assert_eq!(
            listen_host("10.1.2.3:6443"),
            (Some("10.1.2.3".parse().expect("ip")), vec![])
        );
        assert_eq!(
            listen_host("skiff.local:6443"),
            (None, vec!["skiff.local".into()])
        );
    }
}
