//! The node server: the kubelet's HTTPS API on the node's address (`:10250` unless
//! configured), the one path by which the API server reaches a node's containers, for
//! nodes in its process and on other machines alike. It serves `/containerLogs`,
//! `/exec`, `/attach`, `/portForward`, `/pods`, `/stats/summary`, `/metrics/resource` and
//! `/healthz`, with its serving certificate from the cluster's kubelet-serving signer,
//! callers authenticated by client certificate or bearer token and authorized by
//! SubjectAccessReview.
//!
//! It runs on hyper, a task per connection on the node's arbiter (no threads of its own,
//! so thousands of hollow nodes can each have one), because exec and port-forward need
//! raw HTTP upgrades (SPDY as well as WebSocket).

pub mod auth;
mod certs;
mod exec;
mod logs;
mod portforward;
mod routes;
mod spdy;
mod stats;
mod ws;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use futures::FutureExt;
use hyper_util::rt::TokioIo;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::client::ApiClient;
use crate::kubelet::runtime::Runtime;
use crate::pki::{self, Credential};
use crate::runtime::Informer;

pub use exec::{Outcome, TermSize};

/// How long a TLS handshake may take before the connection is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Wait between attempts to get a serving certificate.
const CERT_RETRY: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {addr}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("bad serving credential: {0}")]
    Credential(String),
    #[error("cannot build the TLS configuration")]
    Tls(#[source] rustls::Error),
}

/// How the node server proves itself and checks its callers.
#[derive(Debug, Clone)]
pub struct ServerSecurity {
    /// The cluster CA (PEM): it signs the serving certificate and the callers' client
    /// certificates.
    pub ca_pem: String,
    /// Names and addresses the serving certificate must cover (the node's name and
    /// addresses).
    pub sans: Vec<String>,
    /// Where the serving credential is kept between starts.
    pub cert_dir: Option<PathBuf>,
}

/// What one node server serves.
pub struct NodeServerConfig {
    pub node_name: String,
    /// Bound by whoever starts the server, so the node can publish its port at once (and
    /// a restarted server keeps it).
    pub listener: Arc<std::net::TcpListener>,
    /// `None`: plain HTTP and no authentication, for clusters on the insecure path.
    pub security: Option<ServerSecurity>,
    /// The kubelet's usage samples, for `/stats/summary`.
    pub samples: Option<crate::resource_metrics::MetricsRegistry>,
}

/// Bind the node server's address (port 0: any free port).
pub fn bind(
    address: std::net::IpAddr,
    port: u16,
) -> Result<Arc<std::net::TcpListener>, ServerError> {
    let addr = std::net::SocketAddr::new(address, port);
    let listener = std::net::TcpListener::bind(addr).map_err(|source| ServerError::Bind {
        addr: addr.to_string(),
        source,
    })?;
    listener
        .set_nonblocking(true)
        .map_err(|source| ServerError::Bind {
            addr: addr.to_string(),
            source,
        })?;
    Ok(Arc::new(listener))
}

/// What every request handler reads.
pub(crate) struct Shared {
    pub node: String,
    pub runtime: Arc<dyn Runtime>,
    /// This node's pods, as the kubelet sees them.
    pub pods: Arc<Informer>,
    /// `None` on the insecure path: every caller is allowed.
    pub auth: Option<auth::NodeAuth>,
    pub stats: stats::StatsSource,
}

/// The node server actor: serves until stopped; restarted by its supervisor with the
/// same listener.
pub struct NodeServer {
    shared: Arc<Shared>,
    client: Arc<dyn ApiClient>,
    listener: Arc<std::net::TcpListener>,
    security: Option<ServerSecurity>,
}

impl NodeServer {
    pub fn new(
        config: NodeServerConfig,
        client: Arc<dyn ApiClient>,
        runtime: Arc<dyn Runtime>,
        pods: Arc<Informer>,
    ) -> Self {
        let auth = config
            .security
            .as_ref()
            .map(|_| auth::NodeAuth::new(config.node_name.clone(), client.clone()));
        NodeServer {
            shared: Arc::new(Shared {
                stats: stats::StatsSource::new(config.node_name.clone(), config.samples),
                node: config.node_name,
                runtime,
                pods,
                auth,
            }),
            client,
            listener: config.listener,
            security: config.security,
        }
    }

    /// The port this server listens on.
    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or(0)
    }
}

impl Actor for NodeServer {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let shared = self.shared.clone();
        let client = self.client.clone();
        let security = self.security.clone();
        let listener = self.listener.clone();
        ctx.spawn(
            async move {
                let (tls, rotation) = match security {
                    Some(sec) => {
                        let request = serving_request(&shared.node, &sec);
                        let (acceptor, cert_pem) = acceptor(&client, &request, &sec).await;
                        let current = Arc::new(std::sync::RwLock::new(acceptor));
                        let rotation =
                            rotate(client, request, sec, cert_pem, current.clone()).boxed();
                        (Some(current), rotation)
                    }
                    None => (None, futures::future::pending().boxed()),
                };
                let listener = match listener
                    .try_clone()
                    .and_then(tokio::net::TcpListener::from_std)
                {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::error!(node = %shared.node, error = %e, "node server cannot listen");
                        return;
                    }
                };
                tracing::info!(node = %shared.node, addr = ?listener.local_addr().ok(),
                    tls = tls.is_some(), "node server listening");
                // Both end with the actor, which drops this future.
                futures::future::join(serve(listener, tls, shared), rotation).await;
            }
            .into_actor(self),
        );
    }
}

impl Supervised for NodeServer {
    fn restarting(&mut self, _ctx: &mut Self::Context) {
        crate::runtime::record_restart("NodeServer");
    }
}

impl Handler<crate::runtime::InjectPanic> for NodeServer {
    type Result = ();

    fn handle(&mut self, _: crate::runtime::InjectPanic, ctx: &mut Self::Context) {
        crate::runtime::inject_panic(self, ctx);
    }
}

/// The TLS acceptor in use; replaced when the serving certificate is rotated.
type CurrentAcceptor = Arc<std::sync::RwLock<tokio_rustls::TlsAcceptor>>;

fn serving_request(node: &str, sec: &ServerSecurity) -> certs::ServingRequest {
    let ca_der = CertificateDer::from_pem_slice(sec.ca_pem.as_bytes())
        .map(|c| c.to_vec())
        .unwrap_or_default();
    certs::ServingRequest {
        node: node.to_string(),
        sans: sec.sans.clone(),
        ca_der,
        dir: sec.cert_dir.clone(),
    }
}

/// The TLS acceptor and its certificate, once the serving certificate is had (retrying
/// until it is: the server is of no use without it).
async fn acceptor(
    client: &Arc<dyn ApiClient>,
    request: &certs::ServingRequest,
    sec: &ServerSecurity,
) -> (tokio_rustls::TlsAcceptor, String) {
    loop {
        let built = certs::serving_credential(client, request)
            .await
            .map_err(|e| e.to_string())
            .and_then(|cred| {
                let config = tls_config(&cred, &sec.ca_pem).map_err(|e| e.to_string())?;
                Ok((config, cred.cert_pem))
            });
        match built {
            Ok((config, pem)) => return (tokio_rustls::TlsAcceptor::from(Arc::new(config)), pem),
            Err(e) => {
                tracing::warn!(node = %request.node, error = %e, retry_in = ?CERT_RETRY,
                    "node server has no serving certificate yet");
                tokio::time::sleep(CERT_RETRY).await;
            }
        }
    }
}

/// Request a new serving certificate at each rotation deadline and serve new connections
/// with it (connections already open keep theirs).
async fn rotate(
    client: Arc<dyn ApiClient>,
    request: certs::ServingRequest,
    sec: ServerSecurity,
    mut cert_pem: String,
    current: CurrentAcceptor,
) {
    loop {
        let jitter = (uuid::Uuid::new_v4().as_u128() % 1000) as f64 / 1000.0;
        let wait = pki::rotation_deadline(&cert_pem, jitter)
            .and_then(|at| at.duration_since(std::time::SystemTime::now()).ok())
            .unwrap_or(Duration::ZERO);
        tokio::time::sleep(wait).await;
        let renewed = certs::renewed_credential(&client, &request)
            .await
            .map_err(|e| e.to_string())
            .and_then(|cred| {
                let config = tls_config(&cred, &sec.ca_pem).map_err(|e| e.to_string())?;
                Ok((config, cred.cert_pem))
            });
        match renewed {
            Ok((config, pem)) => {
                let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
                *current.write().unwrap_or_else(|e| e.into_inner()) = acceptor;
                cert_pem = pem;
                tracing::info!(node = %request.node, "serving certificate rotated");
            }
            Err(e) => {
                tracing::warn!(node = %request.node, error = %e, retry_in = ?CERT_RETRY,
                    "serving certificate not rotated yet");
                tokio::time::sleep(CERT_RETRY).await;
            }
        }
    }
}

/// Client certificates are asked for and verified against the cluster CA when offered;
/// a caller without one may still come with a bearer token.
fn tls_config(cred: &Credential, ca_pem: &str) -> Result<rustls::ServerConfig, ServerError> {
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(cred.cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(|e| ServerError::Credential(e.to_string()))?;
    let key = PrivateKeyDer::from_pem_slice(cred.key_pem.as_bytes())
        .map_err(|e| ServerError::Credential(e.to_string()))?;
    let ca = CertificateDer::from_pem_slice(ca_pem.as_bytes())
        .map_err(|e| ServerError::Credential(e.to_string()))?;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(ca)
        .map_err(|e| ServerError::Credential(e.to_string()))?;
    let provider = crate::gateway::tls::provider();
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .allow_unauthenticated()
    .build()
    .map_err(|e| ServerError::Credential(e.to_string()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(ServerError::Tls)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(ServerError::Tls)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

async fn serve(
    listener: tokio::net::TcpListener,
    tls: Option<CurrentAcceptor>,
    shared: Arc<Shared>,
) {
    loop {
        let (tcp, _) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of descriptors and the like: wait rather than spin.
                tracing::warn!(node = %shared.node, error = %e, "node server accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let tls = tls
            .as_ref()
            .map(|t| t.read().unwrap_or_else(|e| e.into_inner()).clone());
        let shared = shared.clone();
        tokio::spawn(async move {
            match tls {
                Some(acceptor) => {
                    let Ok(Ok(stream)) =
                        tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await
                    else {
                        return;
                    };
                    let peer = stream
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|c| c.first())
                        .map(|c| c.clone().into_owned());
                    serve_connection(TokioIo::new(stream), shared, peer).await;
                }
                None => serve_connection(TokioIo::new(tcp), shared, None).await,
            }
        });
    }
}

async fn serve_connection<IO>(io: IO, shared: Arc<Shared>, peer: Option<CertificateDer<'static>>)
where
    IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let peer = Arc::new(peer);
    let service = hyper::service::service_fn(move |req| {
        let (shared, peer) = (shared.clone(), peer.clone());
        async move {
            Ok::<_, std::convert::Infallible>(
                routes::handle(shared, peer.as_ref().as_ref(), req).await,
            )
        }
    });
    if let Err(e) = hyper::server::conn::http1::Builder::new()
        .serve_connection(io, service)
        .with_upgrades()
        .await
    {
        tracing::debug!(error = %e, "node server connection ended");
    }
}
