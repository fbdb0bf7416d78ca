//! The gateway: kube-apiserver's HTTP face, an actix-web server owned by an actor.

pub mod allocation;
pub mod auth;
pub mod csr;
mod discovery;
mod eviction;
mod front;
mod http;
pub mod limits;
pub mod metrics_api;
pub mod node_proxy;
pub mod objects;
mod openapi;
pub mod priority;
pub mod read_options;
pub mod recover;
mod render;
pub(crate) mod reviews;
pub mod routing;
pub mod serviceaccount;
pub mod storage;
mod streams;
pub mod tls;
pub mod tolerations;
pub mod watch;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use actix_service::{fn_service, map_config, IntoServiceFactory, ServiceFactoryExt};
use actix_web::dev::{AppConfig, ServerHandle};
use actix_web::{web, App, HttpResponse};

use crate::api::ApiError;
use crate::metrics::Metrics;
use crate::resource_metrics::MetricsSource;
pub use objects::Objects;

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("cannot listen on {addr}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the server bound no address")]
    NoAddress,
}

/// What makes the gateway secure: TLS with the serving certificate, and who may call.
/// Without it the gateway serves plain HTTP and trusts everyone (`--insecure-http`).
pub struct GatewaySecurity {
    pub tls: rustls::ServerConfig,
    pub authenticator: Arc<auth::authn::Authenticator>,
}

#[derive(Debug, Clone)]
pub struct GatewayConfig {
    pub listen: String,
    pub max_body_bytes: usize,
    /// Upper bound on one watch request, like kube-apiserver's min-request-timeout.
    pub watch_timeout: Duration,
    /// How often watchers that allow bookmarks get one (kube-apiserver: every minute).
    pub bookmark_interval: Duration,
    pub workers: usize,
    pub limits: limits::LimitsConfig,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            listen: "127.0.0.1:6443".into(),
            max_body_bytes: 3 * 1024 * 1024,
            watch_timeout: Duration::from_secs(1800),
            bookmark_interval: Duration::from_secs(60),
            workers: 2,
            limits: limits::LimitsConfig::default(),
        }
    }
}

/// Shared by every HTTP worker.
pub struct AppState {
    pub objects: Objects,
    /// How node servers are reached (logs, exec, attach, port-forward, node proxy).
    pub nodes: node_proxy::NodeDialer,
    /// Node and pod usage for `metrics.k8s.io`.
    pub resource_metrics: Arc<dyn MetricsSource>,
    pub metrics: Arc<Metrics>,
    pub max_body: usize,
    pub watch_timeout: Duration,
    pub bookmark_interval: Duration,
    pub authorization: auth::Authorization,
    /// `None` on the insecure path: every request is the insecure administrator.
    pub authentication: Option<Arc<auth::authn::Authenticator>>,
}

/// Stop the HTTP server (gracefully) when the actor stops.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Shutdown;

pub use crate::runtime::InjectPanic;

/// Starts an HTTP server on (a copy of) the gateway's listening socket.
type Serve = Box<dyn Fn(std::net::TcpListener) -> std::io::Result<actix_server::Server>>;

/// Owns the HTTP server. Supervised: after a panic the server it ran stops (finishing the
/// requests in flight) and the restarted actor serves the same socket again, so the
/// address never stops accepting connections.
pub struct GatewayActor {
    listener: std::net::TcpListener,
    serve: Serve,
    handle: Option<ServerHandle>,
    pub addr: SocketAddr,
    shut_down: bool,
    backoff: crate::runtime::RestartBackoff,
    resume_in: Duration,
}

impl GatewayActor {
    /// Serve the listening socket, or try again shortly when the server cannot start.
    fn serve(&mut self, ctx: &mut Context<Self>) {
        if self.shut_down || self.handle.is_some() {
            return;
        }
        match self.listener.try_clone().and_then(|l| (self.serve)(l)) {
            Ok(server) => {
                self.handle = Some(run_server(server));
                tracing::info!(addr = %self.addr, "gateway listening");
            }
            Err(e) => {
                tracing::error!(addr = %self.addr, error = %e, "cannot serve the gateway; trying again");
                ctx.run_later(Duration::from_secs(1), |act, ctx| act.serve(ctx));
            }
        }
    }

    fn stop_server(&mut self) -> Option<impl std::future::Future<Output = ()>> {
        let handle = self.handle.take()?;
        Some(async move { handle.stop(true).await })
    }
}

/// Run an HTTP server in the background; its handle stops it.
fn run_server(server: actix_server::Server) -> ServerHandle {
    let handle = server.handle();
    actix::spawn(async move {
        if let Err(e) = server.await {
            tracing::error!(error = %e, "gateway server failed");
        }
    });
    handle
}

impl Actor for GatewayActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        if self.resume_in.is_zero() {
            self.serve(ctx);
        } else {
            ctx.run_later(self.resume_in, |act, ctx| act.serve(ctx));
        }
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        if let Some(stop) = self.stop_server() {
            actix::spawn(stop);
        }
    }
}

impl actix::Supervised for GatewayActor {
    fn restarting(&mut self, _ctx: &mut Self::Context) {
        crate::runtime::record_restart("GatewayActor");
        self.resume_in = self.backoff.on_restart(std::time::Instant::now());
    }
}

impl Handler<Shutdown> for GatewayActor {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _msg: Shutdown, _ctx: &mut Self::Context) -> Self::Result {
        // The actor stays (its supervisor would only start it again); the server goes.
        self.shut_down = true;
        let stop = self.stop_server();
        Box::pin(async move {
            if let Some(stop) = stop {
                stop.await;
            }
        })
    }
}

impl Handler<InjectPanic> for GatewayActor {
    type Result = ();

    fn handle(&mut self, _: InjectPanic, ctx: &mut Self::Context) {
        crate::runtime::inject_panic(self, ctx);
    }
}

async fn not_found() -> HttpResponse {
    render::error_response(&ApiError::NoRoute)
}

/// Bind the listen address and start serving (HTTPS when `security` is given), deciding
/// every request with `authorization`; the returned actor owns the server.
pub fn start(
    config: &GatewayConfig,
    objects: Objects,
    nodes: node_proxy::NodeDialer,
    resource_metrics: Arc<dyn MetricsSource>,
    metrics: Arc<Metrics>,
    authorization: auth::Authorization,
    security: Option<GatewaySecurity>,
) -> Result<Addr<GatewayActor>, GatewayError> {
    let (tls, authentication) = match security {
        Some(s) => (Some(s.tls), Some(s.authenticator)),
        None => (None, None),
    };
    let state = web::Data::new(AppState {
        objects,
        nodes,
        resource_metrics,
        metrics,
        max_body: config.max_body_bytes,
        watch_timeout: config.watch_timeout,
        bookmark_interval: config.bookmark_interval,
        authorization,
        authentication,
    });
    let limits = web::Data::new(limits::Limits::new(config.limits.clone()));
    let timeouts = config.limits.clone();
    let make_app = move || {
        App::new()
            .app_data(state.clone())
            .app_data(limits.clone())
            // The last wrapped runs first: authentication, then the limits (per
            // authenticated user), then authorization of non-resource paths, as in
            // kube-apiserver's filter chain. Authentication covers every route, discovery
            // and health included.
            .wrap(actix_web::middleware::from_fn(auth::nonresource::authorize))
            .wrap(actix_web::middleware::from_fn(limits::enforce))
            .wrap(actix_web::middleware::from_fn(auth::authn::middleware))
            // Outermost: a handler's panic is that request's 500, nothing more.
            .wrap(actix_web::middleware::from_fn(recover::recover))
            // Bodies are read by hand with our own limit and a Status answer.
            .app_data(web::PayloadConfig::new(usize::MAX))
            .configure(metrics_api::routes)
            .route("/version", web::get().to(discovery::version))
            .route("/version/", web::get().to(discovery::version))
            .route("/api", web::get().to(discovery::api_versions))
            .route("/api/", web::get().to(discovery::api_versions))
            .route("/api/v1", web::get().to(discovery::api_v1_resources))
            .route("/api/v1/", web::get().to(discovery::api_v1_resources))
            .route("/apis", web::get().to(discovery::api_groups))
            .route("/apis/", web::get().to(discovery::api_groups))
            .route("/apis/{group}", web::get().to(discovery::api_group))
            .route("/apis/{group}/", web::get().to(discovery::api_group))
            .route(
                "/apis/{group}/{version}",
                web::get().to(discovery::api_group_resources),
            )
            .route(
                "/apis/{group}/{version}/",
                web::get().to(discovery::api_group_resources),
            )
            .route("/openapi/v2", web::get().to(openapi::openapi_v2))
            .route("/openapi/v3", web::get().to(openapi::openapi_v3_root))
            .route(
                "/openapi/v3/{path:.*}",
                web::get().to(openapi::openapi_v3_group),
            )
            .route(
                serviceaccount::token::DISCOVERY_PATH,
                web::get().to(serviceaccount::openid_configuration),
            )
            .route(
                serviceaccount::token::JWKS_PATH,
                web::get().to(serviceaccount::jwks),
            )
            .route("/healthz", web::get().to(discovery::healthz))
            .route("/readyz", web::get().to(discovery::healthz))
            .route("/livez", web::get().to(discovery::healthz))
            .route("/metrics", web::get().to(discovery::metrics))
            .route("/api/v1/{tail:.*}", web::route().to(http::api_v1))
            .route(
                "/apis/{group}/{version}/{tail:.*}",
                web::route().to(http::apis),
            )
            .default_service(web::route().to(not_found))
    };
    let listener = std::net::TcpListener::bind(&config.listen)
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
        .map_err(|source| GatewayError::Bind {
            addr: config.listen.clone(),
            source,
        })?;
    let addr = listener.local_addr().map_err(|_| GatewayError::NoAddress)?;
    let head_timeout = timeouts.client_request_timeout;
    let tls = tls.map(|mut tls| {
        tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Arc::new(tls)
    });
    let workers = config.workers.max(1);
    let serve = move |listener: std::net::TcpListener| -> std::io::Result<actix_server::Server> {
        let (make_app, timeouts) = (make_app.clone(), timeouts.clone());
        // actix-web's HttpServer, assembled by hand so that each connection's first request
        // head passes `front::sniff` (SPDY upgrades) before actix-http serves it. A macro,
        // as the service's type depends on the connection's (TLS or plain).
        macro_rules! http {
            () => {
                actix_http::HttpService::build()
                    // Slow clients: a head that does not arrive in time gets 408 and the
                    // connection is closed; idle keep-alive connections are dropped.
                    .keep_alive(timeouts.keep_alive)
                    .client_request_timeout(timeouts.client_request_timeout)
                    .client_disconnect_timeout(timeouts.client_disconnect_timeout)
                    .on_connect_ext(|io: &_, ext: &mut actix_web::dev::Extensions| {
                        tls::capture_peer_certificates(io as &dyn std::any::Any, ext)
                    })
                    .finish(map_config(
                        make_app()
                            .into_factory()
                            .map_err(|e: actix_web::Error| e.error_response()),
                        |_| AppConfig::default(),
                    ))
                    .map_err(|e| tracing::debug!(error = %e, "connection ended"))
            };
        }
        let builder = actix_server::Server::build()
            .workers(workers)
            .disable_signals()
            .shutdown_timeout(1);
        let bound = match tls.clone() {
            Some(tls) => builder.listen("skiff-gateway", listener, move || {
                use actix_tls::accept::rustls_0_23::{Acceptor, TlsStream};
                let mut acceptor = Acceptor::new((*tls).clone());
                acceptor.set_handshake_timeout(Duration::from_secs(10));
                acceptor
                    .map_err(|e| tracing::debug!(error = ?e, "TLS handshake failed"))
                    .and_then(fn_service(
                        move |io: TlsStream<actix_web::rt::net::TcpStream>| async move {
                            let peer = io.get_ref().0.peer_addr().ok();
                            let _ = io.get_ref().0.set_nodelay(true);
                            let h2 = io.get_ref().1.alpn_protocol() == Some(b"h2");
                            Ok::<_, ()>(if h2 {
                                (
                                    front::Sniffed::passthrough(io),
                                    actix_http::Protocol::Http2,
                                    peer,
                                )
                            } else {
                                (
                                    front::sniff(io, head_timeout).await,
                                    actix_http::Protocol::Http1,
                                    peer,
                                )
                            })
                        },
                    ))
                    .and_then(http!())
            }),
            None => builder.listen("skiff-gateway", listener, move || {
                fn_service(move |io: actix_web::rt::net::TcpStream| async move {
                    let peer = io.peer_addr().ok();
                    let _ = io.set_nodelay(true);
                    Ok::<_, ()>((
                        front::sniff(io, head_timeout).await,
                        actix_http::Protocol::Http1,
                        peer,
                    ))
                })
                .and_then(http!())
            }),
        };
        Ok(bound?.run())
    };
    // The first server starts here, so that a socket it cannot serve is the caller's error.
    let first = listener
        .try_clone()
        .and_then(&serve)
        .map_err(|source| GatewayError::Bind {
            addr: config.listen.clone(),
            source,
        })?;
    let handle = run_server(first);
    tracing::info!(%addr, "gateway listening");
    Ok(actix::Supervisor::start(move |_| GatewayActor {
        listener,
        serve: Box::new(serve),
        handle: Some(handle),
        addr,
        shut_down: false,
        backoff: crate::runtime::RestartBackoff::default(),
        resume_in: Duration::ZERO,
    }))
}
