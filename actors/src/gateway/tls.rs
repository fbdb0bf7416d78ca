//! HTTPS for the gateway: rustls (ring) with the serving certificate, client certificates
//! requested but never required at the handshake, and the peer's chain kept on the
//! connection so the authenticator can judge it and answer 401 the way kube-apiserver does
//! (a TLS alert would tell a client nothing).

use std::any::Any;
use std::sync::Arc;

use actix_web::dev::Extensions;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, UnixTime};

use crate::pki::Credential;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("bad certificate PEM: {0}")]
    Certificate(String),
    #[error("bad private key PEM: {0}")]
    Key(String),
    #[error("cannot build the client certificate verifier: {0}")]
    Verifier(String),
    #[error("cannot build the TLS configuration: {0}")]
    Config(#[source] rustls::Error),
}

/// The certificate chain a client presented on this connection (leaf first).
#[derive(Debug, Clone)]
pub struct PeerCertificates(pub Vec<CertificateDer<'static>>);

/// The crypto provider everything TLS in skiff uses: ring, which builds without cmake.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Verifies a client certificate chain against the cluster CA: signature chain, validity
/// period and client-auth usage.
pub fn client_verifier(
    ca: &CertificateDer<'static>,
) -> Result<Arc<dyn ClientCertVerifier>, TlsError> {
    let mut roots = RootCertStore::empty();
    roots
        .add(ca.clone())
        .map_err(|e| TlsError::Verifier(e.to_string()))?;
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .map_err(|e| TlsError::Verifier(e.to_string()))
}

/// The server's TLS configuration for this serving credential, asking clients for a
/// certificate from the cluster CA (without insisting on one).
pub fn server_config(
    serving: &Credential,
    verifier: Arc<dyn ClientCertVerifier>,
) -> Result<rustls::ServerConfig, TlsError> {
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(serving.cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(|e| TlsError::Certificate(e.to_string()))?;
    let key = PrivateKeyDer::from_pem_slice(serving.key_pem.as_bytes())
        .map_err(|e| TlsError::Key(e.to_string()))?;
    rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?
        .with_client_cert_verifier(Arc::new(DeferredClientAuth { inner: verifier }))
        .with_single_cert(chain, key)
        .map_err(TlsError::Config)
}

/// Accepts whatever certificate a client offers at the handshake, but still checks the
/// handshake signature made with its key (proof that the client holds the key), so a
/// copied certificate alone gets nobody in. Whether the chain is trusted is decided per
/// request by the authenticator.
#[derive(Debug)]
struct DeferredClientAuth {
    inner: Arc<dyn ClientCertVerifier>,
}

impl ClientCertVerifier for DeferredClientAuth {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The connection hook: keep the client's certificate chain with the connection.
pub fn capture_peer_certificates(conn: &dyn Any, ext: &mut Extensions) {
    type Tls = actix_tls::accept::rustls_0_23::TlsStream<actix_web::rt::net::TcpStream>;
    if let Some(tls) = conn.downcast_ref::<super::front::Sniffed<Tls>>() {
        let (_, session) = tls.inner.get_ref();
        if let Some(certs) = session.peer_certificates() {
            let chain = certs.iter().map(|c| c.clone().into_owned()).collect();
            ext.insert(PeerCertificates(chain));
        }
    }
}
