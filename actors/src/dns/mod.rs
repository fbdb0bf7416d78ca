//! Cluster DNS (CoreDNS in a Kubernetes cluster): `cluster.local` names for Services and
//! pods, on UDP and TCP, behind the `kube-dns` Service in `kube-system`.
//!
//! Two supervised actors: [`DnsServer`] owns the sockets and hickory's server; a
//! [`ZoneReconciler`] on the shared runtime rebuilds the [`zone::Zone`] from the process's
//! Service and EndpointSlice informers whenever they change (changes arriving together are
//! one rebuild), and the server answers from the newest one. Names outside the cluster go
//! to the upstream resolvers (the host's `/etc/resolv.conf`, or `[dns] upstream`), through
//! hickory's resolver and its cache.

pub mod handler;
pub mod zone;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use actix::{Actor, Context as ActorContext, Supervised};
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::TokioResolver;
use hickory_server::Server;

use crate::runtime::{Action, Change, Context, InformerSpec, ReconcileError, Reconciler};
pub use handler::{ClusterDns, ZoneHandle};

/// The one key every change maps to: the zone is rebuilt whole.
const KEY: &str = "zone";
/// A TCP client that sends nothing for this long is dropped.
const TCP_IDLE: Duration = Duration::from_secs(10);
/// Responses queued per TCP connection.
const TCP_RESPONSE_BUFFER: usize = 32;
/// Names outside the cluster cached (the resolver's cache, CoreDNS's `cache` plugin).
const CACHE_ENTRIES: u64 = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the upstream resolvers cannot be read: {0}")]
    Upstream(String),
}

/// Where names outside the cluster are asked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Upstream {
    /// The host's `/etc/resolv.conf`.
    #[default]
    Host,
    /// These servers.
    Servers(Vec<SocketAddr>),
}

impl Upstream {
    /// The resolver (with its cache) for these upstreams. Queries arrive fully qualified,
    /// so no search path or ndots applies.
    pub fn resolver(&self) -> Result<TokioResolver, DnsError> {
        let provider = TokioRuntimeProvider::default();
        let mut builder = match self {
            Upstream::Host => {
                TokioResolver::builder(provider).map_err(|e| DnsError::Upstream(e.to_string()))?
            }
            Upstream::Servers(addrs) => {
                let servers = addrs
                    .iter()
                    .map(|a| {
                        let mut udp = ConnectionConfig::udp();
                        udp.port = a.port();
                        let mut tcp = ConnectionConfig::tcp();
                        tcp.port = a.port();
                        NameServerConfig::new(a.ip(), true, vec![udp, tcp])
                    })
                    .collect();
                TokioResolver::builder_with_config(
                    ResolverConfig::from_name_servers(servers),
                    provider,
                )
            }
        };
        let opts = builder.options_mut();
        opts.ndots = 0;
        opts.cache_size = CACHE_ENTRIES;
        opts.attempts = 2;
        opts.timeout = Duration::from_secs(2);
        builder
            .build()
            .map_err(|e| DnsError::Upstream(e.to_string()))
    }
}

/// The bound sockets of the server: UDP and TCP on one address and port.
pub struct Sockets {
    udp: std::net::UdpSocket,
    tcp: std::net::TcpListener,
}

impl Sockets {
    /// Bind UDP and TCP on `addr`; with port 0, one free port for both.
    pub fn bind(addr: SocketAddr) -> Result<Sockets, DnsError> {
        let bind_err = |source| DnsError::Bind { addr, source };
        let mut last = None;
        // With port 0 the UDP port the kernel picks may be taken for TCP: try a few.
        for _ in 0..8 {
            let udp = std::net::UdpSocket::bind(addr).map_err(bind_err)?;
            let port = udp.local_addr().map_err(bind_err)?.port();
            match std::net::TcpListener::bind(SocketAddr::new(addr.ip(), port)) {
                Ok(tcp) => {
                    udp.set_nonblocking(true).map_err(bind_err)?;
                    tcp.set_nonblocking(true).map_err(bind_err)?;
                    return Ok(Sockets { udp, tcp });
                }
                Err(e) if addr.port() == 0 => last = Some(e),
                Err(e) => return Err(bind_err(e)),
            }
        }
        Err(bind_err(last.unwrap_or_else(|| {
            std::io::Error::from(std::io::ErrorKind::AddrInUse)
        })))
    }

    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.udp.local_addr().ok()
    }
}

/// The DNS server actor: (re)starts hickory's server on its sockets, answering from the
/// zone handle. A restart keeps the sockets, so the address never changes.
pub struct DnsServer {
    sockets: Sockets,
    zone: ZoneHandle,
    upstream: Upstream,
    server: Option<Server<ClusterDns>>,
}

impl DnsServer {
    pub fn new(sockets: Sockets, zone: ZoneHandle, upstream: Upstream) -> Self {
        DnsServer {
            sockets,
            zone,
            upstream,
            server: None,
        }
    }

    fn serve(&mut self) -> std::io::Result<()> {
        let resolver = match self.upstream.resolver() {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::warn!(error = %e, "names outside the cluster will be refused");
                None
            }
        };
        let mut server = Server::new(ClusterDns::new(self.zone.clone(), resolver));
        server.register_socket(tokio::net::UdpSocket::from_std(
            self.sockets.udp.try_clone()?,
        )?);
        server.register_listener(
            tokio::net::TcpListener::from_std(self.sockets.tcp.try_clone()?)?,
            TCP_IDLE,
            TCP_RESPONSE_BUFFER,
        );
        self.server = Some(server);
        Ok(())
    }

    fn shutdown(&mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown_token().cancel();
        }
    }
}

impl Actor for DnsServer {
    type Context = ActorContext<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        use actix::ActorContext as _;
        match self.serve() {
            Ok(()) => {
                tracing::info!(addr = ?self.sockets.local_addr(), "cluster DNS serving")
            }
            Err(e) => {
                tracing::error!(error = %e, "cluster DNS cannot serve");
                ctx.stop();
            }
        }
    }

    fn stopping(&mut self, _ctx: &mut Self::Context) -> actix::Running {
        self.shutdown();
        actix::Running::Stop
    }
}

impl Supervised for DnsServer {
    fn restarting(&mut self, _ctx: &mut Self::Context) {
        crate::runtime::record_restart("DnsServer");
        self.shutdown();
    }
}

impl actix::Handler<crate::runtime::InjectPanic> for DnsServer {
    type Result = ();

    fn handle(&mut self, _: crate::runtime::InjectPanic, ctx: &mut Self::Context) {
        crate::runtime::inject_panic(self, ctx);
    }
}

/// Keeps the zone of the DNS server equal to the Services and their EndpointSlices.
pub struct ZoneReconciler {
    domain: String,
    zone: ZoneHandle,
    serial: AtomicU32,
}

impl ZoneReconciler {
    pub fn new(domain: impl Into<String>, zone: ZoneHandle) -> Self {
        ZoneReconciler {
            domain: domain.into(),
            zone,
            serial: AtomicU32::new(1),
        }
    }
}

#[async_trait::async_trait]
impl Reconciler for ZoneReconciler {
    fn name(&self) -> &'static str {
        "cluster-dns"
    }

    fn informers(&self) -> Vec<InformerSpec> {
        vec![
            InformerSpec::all("services"),
            InformerSpec::all(crate::api::kinds::endpoint_slice::RESOURCE),
        ]
    }

    fn keys_for(&self, _resource: &str, _change: &Change, _ctx: &Context) -> Vec<String> {
        vec![KEY.to_string()]
    }

    fn workers(&self) -> usize {
        1
    }

    async fn reconcile(&self, _key: &str, ctx: &Context) -> Result<Action, ReconcileError> {
        let services = ctx.cache("services").list();
        let slices = crate::proxy::slices::by_service(
            &ctx.cache(crate::api::kinds::endpoint_slice::RESOURCE)
                .list(),
        );
        let by_key: HashMap<(String, String), Vec<crate::proxy::slices::SliceEndpoint>> = slices
            .iter()
            .filter_map(|(key, list)| {
                let (ns, name) = crate::runtime::split_key(key);
                Some((
                    (ns?.to_string(), name.to_string()),
                    crate::proxy::slices::endpoints(list),
                ))
            })
            .collect();
        let serial = self.serial.fetch_add(1, Ordering::Relaxed);
        let zone = zone::Zone::build(&self.domain, services.iter().map(|s| &**s), &by_key, serial);
        self.zone.set(zone);
        tracing::debug!(
            services = services.len(),
            serial,
            "cluster DNS zone rebuilt"
        );
        Ok(Action::Done)
    }
}
