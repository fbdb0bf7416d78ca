//! A node joining a cluster over the network: the kubelet TLS bootstrap. With the join
//! token the node gets a client certificate for `system:node:<name>` signed through a
//! CertificateSigningRequest (`client::bootstrap`), keeps it and its key in its data
//! directory, and from then on authenticates with them alone.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use skiff_actors::client::bootstrap::{self, BootstrapError};
use skiff_actors::pki::{self, PkiError};

/// How long a node waits for its certificate request to be signed.
const SIGN_DEADLINE: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error("cannot read the node's credential")]
    Read(#[source] PkiError),
    #[error("cannot keep the node's credential")]
    Write(#[source] PkiError),
    #[error("the node has no credential yet and no join token was given (--token)")]
    NoToken,
    #[error("the cluster did not issue a node credential")]
    Bootstrap(#[from] BootstrapError),
}

/// Where a node keeps its credential.
pub struct NodeCredentialFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl NodeCredentialFiles {
    pub fn in_dir(dir: &Path) -> Self {
        NodeCredentialFiles {
            cert: dir.join("node.crt"),
            key: dir.join("node.key"),
        }
    }

    /// The credential kept from an earlier join, unless it is missing, unreadable or
    /// expired (then the node joins again with its token).
    fn load(&self) -> Result<Option<String>, JoinError> {
        if !self.cert.exists() || !self.key.exists() {
            return Ok(None);
        }
        let cert = pki::read(&self.cert).map_err(JoinError::Read)?;
        let key = pki::read(&self.key).map_err(JoinError::Read)?;
        match pki::cert_not_after(&cert) {
            Ok(end) if end > SystemTime::now() => Ok(Some(format!("{cert}\n{key}"))),
            Ok(_) => {
                tracing::warn!(cert = %self.cert.display(), "the node's certificate has expired; joining again");
                Ok(None)
            }
            Err(e) => {
                tracing::warn!(cert = %self.cert.display(), error = %e, "the node's certificate is unreadable; joining again");
                Ok(None)
            }
        }
    }
}

/// The node's client identity (certificate and key PEM): the one it already has, or a new
/// one obtained with the join token.
pub async fn node_identity(
    server: &str,
    ca_pem: &str,
    node: &str,
    token: Option<&str>,
    files: &NodeCredentialFiles,
) -> Result<String, JoinError> {
    if let Some(pem) = files.load()? {
        tracing::info!(node, cert = %files.cert.display(), "using the node's existing credential");
        return Ok(pem);
    }
    let token = token.ok_or(JoinError::NoToken)?;
    let issued =
        bootstrap::request_node_credential(server, ca_pem, token, node, SIGN_DEADLINE).await?;
    pki::write_secret(&files.key, &issued.key_pem).map_err(JoinError::Write)?;
    pki::write_secret(&files.cert, &issued.cert_pem).map_err(JoinError::Write)?;
    tracing::info!(node, cert = %files.cert.display(), "joined: node credential issued");
    Ok(format!("{}\n{}", issued.cert_pem, issued.key_pem))
}

/// While the node runs, renew its client certificate through a CertificateSigningRequest
/// at 70-90% of its lifetime (as the kubelet's certificate manager does), authenticated by
/// the certificate it has; each new one is kept in the data directory and used for new
/// connections. A failed request is tried again shortly, well before the old one expires.
pub async fn keep_renewing(
    client: std::sync::Arc<skiff_actors::client::HttpClient>,
    node: String,
    files: NodeCredentialFiles,
    mut cert_pem: String,
) {
    loop {
        let jitter = (uuid::Uuid::new_v4().as_u128() % 1000) as f64 / 1000.0;
        let Some(at) = pki::rotation_deadline(&cert_pem, jitter) else {
            tracing::warn!(
                node,
                "the node's certificate is unreadable; not renewing it"
            );
            return;
        };
        let wait = at
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO);
        tracing::debug!(node, ?wait, "node certificate renewal scheduled");
        tokio::time::sleep(wait).await;
        match renew(&client, &node, &files).await {
            Ok(pem) => {
                tracing::info!(node, cert = %files.cert.display(), "node certificate renewed");
                cert_pem = pem;
            }
            Err(e) => {
                tracing::warn!(node, error = %e, "renewing the node certificate failed; trying again");
                tokio::time::sleep(RENEW_RETRY).await;
            }
        }
    }
}

/// How long a failed renewal waits before the next try.
const RENEW_RETRY: Duration = Duration::from_secs(30);

async fn renew(
    client: &skiff_actors::client::HttpClient,
    node: &str,
    files: &NodeCredentialFiles,
) -> Result<String, JoinError> {
    let issued = bootstrap::request_with(client, node, SIGN_DEADLINE).await?;
    pki::write_secret(&files.key, &issued.key_pem).map_err(JoinError::Write)?;
    pki::write_secret(&files.cert, &issued.cert_pem).map_err(JoinError::Write)?;
    client
        .renew_identity(format!("{}\n{}", issued.cert_pem, issued.key_pem).as_bytes())
        .map_err(|e| JoinError::Bootstrap(BootstrapError::Api(e)))?;
    Ok(issued.cert_pem)
}
