//! A node joining a cluster over the network: the kubelet TLS bootstrap. With a join
//! token the node asks the API server to sign a client certificate for
//! `system:node:<name>` (a CertificateSigningRequest), keeps the certificate and its key in
//! its data directory, and from then on authenticates with them alone.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use skiff_actors::api::ApiError;
use skiff_actors::client::{ApiClient, Credentials, HttpClient};

/// The signer Kubernetes uses for kubelet client certificates.
pub const KUBELET_CLIENT_SIGNER: &str = "kubernetes.io/kube-apiserver-client-kubelet";
/// How long a node waits for its certificate request to be signed.
const SIGN_DEADLINE: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot create the node's key or certificate request: {0}")]
    Csr(#[from] rcgen::Error),
    #[error("the node has no credential yet and no join token was given (--token)")]
    NoToken,
    #[error("the API server refused the join: {0}")]
    Refused(#[source] ApiError),
    #[error("certificate request {name} was denied: {reason}")]
    Denied { name: String, reason: String },
    #[error("certificate request {name} was not signed within {secs} s")]
    NotSigned { name: String, secs: u64 },
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

    fn load(&self) -> Result<Option<Vec<u8>>, JoinError> {
        if !self.cert.exists() || !self.key.exists() {
            return Ok(None);
        }
        let read = |p: &Path| {
            std::fs::read(p).map_err(|source| JoinError::Read {
                path: p.to_path_buf(),
                source,
            })
        };
        let mut pem = read(&self.cert)?;
        pem.extend_from_slice(b"\n");
        pem.extend(read(&self.key)?);
        Ok(Some(pem))
    }
}

/// The node's client identity (certificate and key PEM): the one it already has, or a new
/// one obtained with the join token.
pub async fn node_identity(
    server: &str,
    ca_pem: &[u8],
    node: &str,
    token: Option<&str>,
    files: &NodeCredentialFiles,
) -> Result<Vec<u8>, JoinError> {
    if let Some(pem) = files.load()? {
        tracing::info!(node, cert = %files.cert.display(), "using the node's existing credential");
        return Ok(pem);
    }
    let token = token.ok_or(JoinError::NoToken)?;
    let key = rcgen::KeyPair::generate()?;
    let csr_pem = certificate_request(node, &key)?;
    let client = HttpClient::with_credentials(
        server,
        &Credentials {
            ca_pem: Some(ca_pem.to_vec()),
            identity_pem: None,
            token: Some(token.to_string()),
        },
    )
    .map_err(JoinError::Refused)?;
    let cert_pem = request_signature(&client, node, &csr_pem).await?;
    write_private(&files.key, key.serialize_pem().as_bytes())?;
    write_private(&files.cert, cert_pem.as_bytes())?;
    tracing::info!(node, cert = %files.cert.display(), "joined: node credential issued");
    let mut pem = cert_pem.into_bytes();
    pem.extend_from_slice(b"\n");
    pem.extend(key.serialize_pem().into_bytes());
    Ok(pem)
}

/// A PKCS#10 request for `CN=system:node:<node>, O=system:nodes`.
pub fn certificate_request(node: &str, key: &rcgen::KeyPair) -> Result<String, rcgen::Error> {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, format!("system:node:{node}"));
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, "system:nodes");
    params.serialize_request(key)?.pem()
}

/// Post the request, then wait until it is signed (or denied).
async fn request_signature(
    client: &HttpClient,
    node: &str,
    csr_pem: &str,
) -> Result<String, JoinError> {
    use base64::Engine;
    let name = format!(
        "node-csr-{node}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let body = json!({
        "apiVersion": "certificates.k8s.io/v1",
        "kind": "CertificateSigningRequest",
        "metadata": {"name": name},
        "spec": {
            "request": base64::engine::general_purpose::STANDARD.encode(csr_pem),
            "signerName": KUBELET_CLIENT_SIGNER,
            "usages": ["digital signature", "client auth"],
        },
    });
    client
        .create("certificatesigningrequests", None, body)
        .await
        .map_err(JoinError::Refused)?;
    let started = Instant::now();
    loop {
        let csr = client
            .get("certificatesigningrequests", None, &name)
            .await
            .map_err(JoinError::Refused)?;
        if let Some(reason) = denial(&csr) {
            return Err(JoinError::Denied { name, reason });
        }
        if let Some(pem) = issued_certificate(&csr) {
            return Ok(pem);
        }
        if started.elapsed() > SIGN_DEADLINE {
            return Err(JoinError::NotSigned {
                name,
                secs: SIGN_DEADLINE.as_secs(),
            });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn issued_certificate(csr: &Value) -> Option<String> {
    use base64::Engine;
    let b64 = csr.pointer("/status/certificate")?.as_str()?;
    let bytes = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    String::from_utf8(bytes).ok().filter(|s| !s.is_empty())
}

fn denial(csr: &Value) -> Option<String> {
    csr.pointer("/status/conditions")?
        .as_array()?
        .iter()
        .find(|c| {
            matches!(
                c.get("type").and_then(Value::as_str),
                Some("Denied" | "Failed")
            )
        })
        .map(|c| {
            c.get("message")
                .or_else(|| c.get("reason"))
                .and_then(Value::as_str)
                .unwrap_or("no reason given")
                .to_string()
        })
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), JoinError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let err = |source| JoinError::Write {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(err)?;
    f.write_all(bytes).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_names_the_node_and_its_group() {
        let key = rcgen::KeyPair::generate().expect("key");
        let pem = certificate_request("worker-1", &key).expect("csr");
        let parsed = rcgen::CertificateSigningRequestParams::from_pem(&pem).expect("parses");
        let dn = format!("{:?}", parsed.params.distinguished_name);
        assert!(dn.contains("system:node:worker-1"), "{dn}");
        assert!(dn.contains("system:nodes"), "{dn}");
    }

    #[test]
    fn a_signed_request_yields_its_certificate_and_a_denied_one_its_reason() {
        use base64::Engine;
        let pem = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        let signed = json!({"status": {"certificate":
            base64::engine::general_purpose::STANDARD.encode(pem)}});
        assert_eq!(issued_certificate(&signed).as_deref(), Some(pem));
        assert_eq!(denial(&signed), None);
        let denied = json!({"status": {"conditions": [
            {"type": "Denied", "reason": "WrongSubject", "message": "subject is not a node"}]}});
        assert_eq!(denial(&denied).as_deref(), Some("subject is not a node"));
        assert_eq!(issued_certificate(&denied), None);
    }
}
