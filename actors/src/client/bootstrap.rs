//! A node's TLS bootstrap, as the kubelet does it: with only the join token, make a key,
//! ask the cluster for a client certificate (a CSR to the kubelet client signer), and
//! wait until the control plane signs it. From then on the node presents that
//! certificate, as `system:node:<name>` in `system:nodes`.

use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};
use tracing::Instrument;

use super::{ApiClient, HttpClient, TlsOptions};
use crate::api::ApiError;
use crate::gateway::csr::{KUBELET_CLIENT_SIGNER, RESOURCE};
use crate::pki::{self, Credential};

#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error("cannot make the node's key and request")]
    Pki(#[from] pki::PkiError),
    #[error("the API server refused the request")]
    Api(#[from] ApiError),
    #[error("the certificate request {name} was {condition}: {message}")]
    Refused {
        name: String,
        condition: String,
        message: String,
    },
    #[error("no certificate for request {name} within {waited:?}")]
    Timeout { name: String, waited: Duration },
    #[error("the issued certificate is not readable: {0}")]
    BadCertificate(String),
}

/// Ask the cluster at `server` (trusted by `ca_pem`) for node `node_name`'s client
/// credential, authenticating with `join_token`, and wait up to `timeout` for it.
pub async fn request_node_credential(
    server: &str,
    ca_pem: &str,
    join_token: &str,
    node_name: &str,
    timeout: Duration,
) -> Result<Credential, BootstrapError> {
    let client = HttpClient::with_tls(
        server,
        &TlsOptions {
            ca_pem: ca_pem.to_string(),
            bearer_token: Some(join_token.to_string()),
            client_cert: None,
        },
    )?;
    request_with(&client, node_name, timeout).await
}

/// The same through any API client (authenticated as a bootstrapper, or as the node
/// renewing its certificate).
pub async fn request_with(
    client: &dyn ApiClient,
    node_name: &str,
    timeout: Duration,
) -> Result<Credential, BootstrapError> {
    let suffix = pki::random_token(6)?;
    let name = format!("node-csr-{node_name}-{suffix}");
    let span = tracing::info_span!("tls_bootstrap", node = %node_name, csr = %name);
    request_named(client, node_name, name, timeout)
        .instrument(span)
        .await
}

async fn request_named(
    client: &dyn ApiClient,
    node_name: &str,
    name: String,
    timeout: Duration,
) -> Result<Credential, BootstrapError> {
    let (key_pem, csr_pem) = pki::node_csr(node_name)?;
    let b64 = base64::engine::general_purpose::STANDARD;
    let csr = json!({
        "apiVersion": "certificates.k8s.io/v1",
        "kind": "CertificateSigningRequest",
        "metadata": {"name": name},
        "spec": {
            "request": b64.encode(csr_pem.as_bytes()),
            "signerName": KUBELET_CLIENT_SIGNER,
            "usages": ["digital signature", "client auth"],
        },
    });
    client.create(RESOURCE, None, csr).await?;
    let deadline = Instant::now() + timeout;
    loop {
        let obj = client.get(RESOURCE, None, &name).await?;
        if let Some(cert) = obj
            .pointer("/status/certificate")
            .and_then(Value::as_str)
            .filter(|c| !c.is_empty())
        {
            let pem = b64
                .decode(cert)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| BootstrapError::BadCertificate("not base64 PEM".into()))?;
            tracing::info!("node certificate issued");
            return Ok(Credential {
                cert_pem: pem,
                key_pem,
            });
        }
        if let Some(c) = refusal(&obj) {
            return Err(BootstrapError::Refused {
                name,
                condition: c.0,
                message: c.1,
            });
        }
        if Instant::now() >= deadline {
            return Err(BootstrapError::Timeout {
                name,
                waited: timeout,
            });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A Denied or Failed condition: (type, message).
fn refusal(csr: &Value) -> Option<(String, String)> {
    csr.pointer("/status/conditions")?
        .as_array()?
        .iter()
        .find(|c| matches!(c["type"].as_str(), Some("Denied" | "Failed")))
        .map(|c| {
            (
                c["type"].as_str().unwrap_or_default().to_string(),
                c["message"].as_str().unwrap_or_default().to_string(),
            )
        })
}
