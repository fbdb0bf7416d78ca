//! A node's TLS bootstrap, as the kubelet does it: with only the join token, make a key,
//! ask the cluster for a client certificate (a CSR to the kubelet client signer), and
//! wait until the control plane signs it. From then on the node presents that
//! certificate, as `system:node:<name>` in `system:nodes`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use base64::Engine;
use serde_json::{json, Value};
use tracing::Instrument;

use super::{ApiClient, Credentials, HttpClient};
use crate::api::ApiError;
use crate::gateway::csr::{KUBELET_CLIENT_SIGNER, RESOURCE};
use crate::gateway::tls;
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
    #[error("cannot reach {server} to learn its CA: {detail}")]
    Discovery { server: String, detail: String },
    #[error("{server} presented no CA matching {pin}")]
    PinMismatch { server: String, pin: String },
}

/// Learn the cluster CA from the server's TLS handshake, trusting it only if its public
/// key hashes to `pin` (kubeadm's `--discovery-token-ca-cert-hash`, `sha256:<hex>`) and
/// it signed the serving certificate. Nothing is sent before that check: no token leaves
/// the node for a server that is not the cluster's.
pub async fn discover_ca(servers: &str, pin: &str) -> Result<String, BootstrapError> {
    // Of several servers (comma-separated), the first that answers.
    let mut last = None;
    for server in servers.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        match discover_ca_at(server, pin).await {
            Err(e @ BootstrapError::PinMismatch { .. }) => return Err(e),
            Err(e) => last = Some(e),
            Ok(ca) => return Ok(ca),
        }
    }
    Err(last.unwrap_or_else(|| BootstrapError::PinMismatch {
        server: servers.to_string(),
        pin: pin.to_string(),
    }))
}

async fn discover_ca_at(server: &str, pin: &str) -> Result<String, BootstrapError> {
    let found = Arc::new(Mutex::new(None));
    let presented = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let verifier = PinnedCa {
        pin: pin.trim().to_ascii_lowercase(),
        found: found.clone(),
        presented: presented.clone(),
    };
    let config = rustls::ClientConfig::builder_with_provider(tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| discovery(server, e))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    let client = reqwest::Client::builder()
        .use_preconfigured_tls(config)
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| discovery(server, e))?;
    let url = format!("{}/version", server.trim_end_matches('/'));
    // Any answer (a 401 without credentials) means the handshake, and so the pin, passed.
    let sent = client.get(&url).send().await;
    let ca = found.lock().unwrap_or_else(|e| e.into_inner()).take();
    match (sent, ca) {
        (Ok(_), Some(ca)) => Ok(ca),
        // No handshake at all: the server is not there (try another), not a wrong pin.
        (Err(e), None) if !presented.load(std::sync::atomic::Ordering::Relaxed) => {
            Err(discovery(server, e))
        }
        (_, None) => Err(BootstrapError::PinMismatch {
            server: server.to_string(),
            pin: pin.to_string(),
        }),
        (Err(e), Some(_)) => Err(discovery(server, e)),
    }
}

fn discovery(server: &str, e: impl std::fmt::Display) -> BootstrapError {
    BootstrapError::Discovery {
        server: server.to_string(),
        detail: e.to_string(),
    }
}

/// Accepts a server whose presented chain holds the pinned CA and whose certificate that
/// CA signed (for the name dialled); records the CA's PEM.
#[derive(Debug)]
struct PinnedCa {
    pin: String,
    found: Arc<Mutex<Option<String>>>,
    /// The server presented certificates (it was reached, whatever the pin says).
    presented: Arc<std::sync::atomic::AtomicBool>,
}

impl rustls::client::danger::ServerCertVerifier for PinnedCa {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let bad = |why: &str| rustls::Error::General(why.to_string());
        self.presented
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let ca = intermediates
            .iter()
            .find(|c| pki::cert_hash(c).is_ok_and(|h| h == self.pin))
            .ok_or_else(|| bad("no presented certificate matches the CA pin"))?;
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(ca.clone().into_owned())
            .map_err(|e| bad(&e.to_string()))?;
        let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            tls::provider(),
        )
        .build()
        .map_err(|e| bad(&e.to_string()))?;
        inner.verify_server_cert(end_entity, &[], server_name, ocsp_response, now)?;
        *self.found.lock().unwrap_or_else(|e| e.into_inner()) = Some(pki::der_to_pem(ca));
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &tls::provider().signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &tls::provider().signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        tls::provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
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
    let client = HttpClient::with_credentials(
        server,
        &Credentials {
            ca_pem: Some(ca_pem.as_bytes().to_vec()),
            identity_pem: None,
            token: Some(join_token.to_string()),
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
