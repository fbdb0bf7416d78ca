//! The node server's serving certificate, obtained as the kubelet obtains it with
//! `serverTLSBootstrap`: a CertificateSigningRequest for the `kubernetes.io/kubelet-serving`
//! signer naming the node's name and addresses, approved and signed by the controller
//! manager; kept in the node's `pki/` directory and reused while it still fits, and
//! requested again (rotated) once 70–90% of its lifetime has passed, as the kubelet's
//! certificate manager does.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use serde_json::{json, Value};

use crate::api::ApiError;
use crate::client::ApiClient;
use crate::gateway::csr::KUBELET_SERVING_SIGNER;
use crate::pki::{self, Credential, PkiError};

const CERT_FILE: &str = "kubelet-server.crt";
const KEY_FILE: &str = "kubelet-server.key";
/// A stored certificate this close to expiry is requested again.
const RENEW_MARGIN: Duration = Duration::from_secs(24 * 3600);
const POLL: Duration = Duration::from_millis(200);

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("cannot make the certificate request")]
    Pki(#[from] PkiError),
    #[error("the API server refused the certificate request: {0}")]
    Api(#[from] ApiError),
    #[error("certificate request {name} was {outcome}: {message}")]
    Refused {
        name: String,
        outcome: String,
        message: String,
    },
    #[error("certificate request {0} was signed with something that is not a PEM certificate")]
    BadCertificate(String),
}

/// Where a node keeps its serving credential, and what it must cover.
pub struct ServingRequest {
    pub node: String,
    /// The node's name and addresses.
    pub sans: Vec<String>,
    /// The cluster CA (DER), which signs it.
    pub ca_der: Vec<u8>,
    /// `<node data dir>/pki`; none: requested anew each start.
    pub dir: Option<PathBuf>,
}

/// The stored credential when it still fits, else a newly signed one (stored).
pub async fn serving_credential(
    client: &Arc<dyn ApiClient>,
    req: &ServingRequest,
) -> Result<Credential, CertError> {
    if let Some(cred) = req.dir.as_deref().and_then(|d| stored(d, req)) {
        return Ok(cred);
    }
    renewed_credential(client, req).await
}

/// A newly signed credential, stored in place of the old one.
pub async fn renewed_credential(
    client: &Arc<dyn ApiClient>,
    req: &ServingRequest,
) -> Result<Credential, CertError> {
    let cred = request(client, req).await?;
    if let Some(dir) = &req.dir {
        let saved = std::fs::create_dir_all(dir)
            .map_err(|e| PkiError::Write {
                path: dir.clone(),
                source: e,
            })
            .and_then(|()| pki::write_secret(&dir.join(KEY_FILE), &cred.key_pem))
            .and_then(|()| pki::write_secret(&dir.join(CERT_FILE), &cred.cert_pem));
        if let Err(e) = saved {
            tracing::warn!(node = %req.node, error = %e, "cannot keep the serving certificate");
        }
    }
    Ok(cred)
}

fn stored(dir: &Path, req: &ServingRequest) -> Option<Credential> {
    let cred = Credential {
        cert_pem: std::fs::read_to_string(dir.join(CERT_FILE)).ok()?,
        key_pem: std::fs::read_to_string(dir.join(KEY_FILE)).ok()?,
    };
    pki::serving_cert_fits(&cred.cert_pem, &req.ca_der, &req.sans, RENEW_MARGIN)
        .ok()
        .filter(|fits| *fits)
        .map(|_| cred)
}

/// Create the request, then wait for the signer's certificate (or a refusal).
async fn request(
    client: &Arc<dyn ApiClient>,
    req: &ServingRequest,
) -> Result<Credential, CertError> {
    let (key_pem, csr_pem) = pki::node_serving_csr(&req.node, &req.sans)?;
    let user = format!("system:node:{}", req.node);
    // The requester is recorded by the API server from whoever authenticated; an
    // in-process node writes its own identity (its client is the control plane's).
    let csr = json!({
        "apiVersion": "certificates.k8s.io/v1",
        "kind": "CertificateSigningRequest",
        "metadata": {"generateName": "csr-"},
        "spec": {
            "request": base64::engine::general_purpose::STANDARD.encode(csr_pem.as_bytes()),
            "signerName": KUBELET_SERVING_SIGNER,
            "usages": ["digital signature", "server auth"],
            "username": user,
            "groups": ["system:nodes", "system:authenticated"],
        }
    });
    let created = client
        .create("certificatesigningrequests", None, csr)
        .await?;
    let name = created
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    tracing::info!(node = %req.node, csr = %name, "serving certificate requested");
    loop {
        let csr = client
            .get("certificatesigningrequests", None, &name)
            .await?;
        if let Some(cert) = csr
            .pointer("/status/certificate")
            .and_then(Value::as_str)
            .filter(|c| !c.is_empty())
        {
            let pem = base64::engine::general_purpose::STANDARD
                .decode(cert)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| CertError::BadCertificate(name.clone()))?;
            tracing::info!(node = %req.node, csr = %name, "serving certificate issued");
            return Ok(Credential {
                cert_pem: pem,
                key_pem,
            });
        }
        if let Some((outcome, message)) = refusal(&csr) {
            return Err(CertError::Refused {
                name,
                outcome,
                message,
            });
        }
        tokio::time::sleep(POLL).await;
    }
}

fn refusal(csr: &Value) -> Option<(String, String)> {
    csr.pointer("/status/conditions")?
        .as_array()?
        .iter()
        .find(|c| matches!(c["type"].as_str(), Some("Denied" | "Failed")))
        .map(|c| {
            (
                c["type"].as_str().unwrap_or_default().to_lowercase(),
                c["message"].as_str().unwrap_or_default().to_string(),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::rotation_deadline;

    #[test]
    fn a_serving_certificate_is_rotated_between_70_and_90_percent_of_its_lifetime() {
        let ca = pki::ClusterCa::generate("test-ca").expect("ca");
        let (_, csr) = pki::node_serving_csr("n1", &["n1".to_string()]).expect("csr");
        let cert = ca
            .sign_serving_csr(&csr, Duration::from_secs(1000))
            .expect("signed");
        let (not_before, not_after) = pki::cert_validity(&cert).expect("validity");
        let lifetime = not_after.duration_since(not_before).expect("lifetime");
        let at = |j| rotation_deadline(&cert, j).expect("deadline");
        let offset = |j| at(j).duration_since(not_before).expect("after not_before");
        assert_eq!(offset(0.0), lifetime.mul_f64(0.7));
        assert_eq!(offset(0.5), lifetime.mul_f64(0.8));
        assert_eq!(offset(1.0), lifetime.mul_f64(0.9));
        assert!(at(1.0) < not_after);
        assert!(rotation_deadline("not a certificate", 0.5).is_none());
    }
}
