//! Request limits, so that one client cannot starve the others: caps on requests in
//! flight (kube-apiserver's max-inflight filter: read-only and mutating requests counted
//! apart, watches and followed logs exempt, 429 with `Retry-After: 1` beyond the cap), a
//! per-client share of them, a per-client token bucket, a per-client cap on open watches,
//! and a deadline for a request body to arrive. Slow request heads and idle connections
//! are cut off by the HTTP server's own timeouts (see [`LimitsConfig`]).
//!
//! A client is its authenticated user name, or its address when nothing authenticated it
//! (the insecure path). Authenticated members of `system:masters` are never turned away,
//! as in Kubernetes: an administrator can always get an answer from an overloaded server.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use actix_web::body::{BodySize, BoxBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::error::PayloadError;
use actix_web::middleware::Next;
use actix_web::{web, HttpMessage};
use futures::StreamExt;

use super::auth::{UserInfo, PRIVILEGED_GROUP};
use super::render;
use crate::api::ApiError;

const TOO_MANY: &str = "Too many requests, please try again later.";
/// Client entries kept before idle ones are forgotten.
const MAX_TRACKED_CLIENTS: usize = 4096;

/// Limits for the gateway; 0 turns a cap off.
#[derive(Debug, Clone)]
pub struct LimitsConfig {
    /// Read-only (GET) requests in flight at once (kube: `--max-requests-inflight`).
    pub max_requests_inflight: usize,
    /// Mutating requests in flight at once (kube: `--max-mutating-requests-inflight`).
    pub max_mutating_requests_inflight: usize,
    /// Requests one client may have in flight at once.
    pub max_inflight_per_client: usize,
    /// Sustained requests per second per client (token bucket); 0 = no rate limit.
    pub client_qps: f64,
    /// Requests a client may make in a burst above `client_qps`.
    pub client_burst: u32,
    /// Watches one client may hold open at once.
    pub max_watches_per_client: usize,
    /// A request body must have arrived completely this long after the request started.
    pub request_body_timeout: Duration,
    /// A request head (request line and headers) must arrive within this time.
    pub client_request_timeout: Duration,
    /// Time given a client to acknowledge the close of its connection.
    pub client_disconnect_timeout: Duration,
    /// An idle keep-alive connection is closed after this long.
    pub keep_alive: Duration,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_requests_inflight: 400,
            max_mutating_requests_inflight: 200,
            max_inflight_per_client: 100,
            client_qps: 0.0,
            client_burst: 0,
            max_watches_per_client: 100,
            request_body_timeout: Duration::from_secs(60),
            client_request_timeout: Duration::from_secs(5),
            client_disconnect_timeout: Duration::from_secs(1),
            keep_alive: Duration::from_secs(60),
        }
    }
}

/// What a request is, for the limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    ReadOnly,
    Mutating,
    /// A watch: counted against the client's watch cap, not the in-flight caps.
    Watch,
    /// A followed log, an exec, attach or port-forward, a node proxy: long-running, exempt
    /// like a watch but not counted as one.
    LongRunning,
}

impl Class {
    pub fn of(method: &str, path: &str, query: &str) -> Class {
        let flag = |name: &str| {
            query.split('&').any(|kv| {
                kv.split_once('=')
                    .is_some_and(|(k, v)| k == name && (v == "true" || v == "1"))
            })
        };
        let is_get = method == "GET";
        let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let legacy_watch = match segs.first() {
            Some(&"api") => segs.get(2) == Some(&"watch"),
            Some(&"apis") => segs.get(3) == Some(&"watch"),
            _ => false,
        };
        if is_get && (legacy_watch || flag("watch")) {
            Class::Watch
        } else if (is_get && segs.last() == Some(&"log") && flag("follow"))
            || matches!(segs.last(), Some(&("exec" | "attach" | "portforward")))
            || (segs.get(..3) == Some(&["api", "v1", "nodes"]) && segs.get(4) == Some(&"proxy"))
        {
            // Streams to a node's server: as long as the user keeps them open.
            Class::LongRunning
        } else if matches!(method, "GET" | "HEAD" | "OPTIONS") {
            Class::ReadOnly
        } else {
            Class::Mutating
        }
    }
}

#[derive(Debug)]
struct Client {
    inflight: usize,
    watches: usize,
    tokens: f64,
    refilled: Instant,
}

/// The limits' shared state (one per gateway, shared by its workers).
pub struct Limits {
    cfg: LimitsConfig,
    readonly: AtomicUsize,
    mutating: AtomicUsize,
    clients: Mutex<HashMap<String, Client>>,
}

/// Holds one slot of a limit until dropped.
pub struct Permit {
    limits: Arc<Limits>,
    key: String,
    class: Class,
    global: bool,
}

impl Drop for Permit {
    fn drop(&mut self) {
        if self.global {
            self.limits
                .counter(self.class)
                .fetch_sub(1, Ordering::AcqRel);
        }
        let mut clients = self.limits.lock();
        if let Some(c) = clients.get_mut(&self.key) {
            match self.class {
                Class::Watch => c.watches = c.watches.saturating_sub(1),
                Class::LongRunning => {}
                _ => c.inflight = c.inflight.saturating_sub(1),
            }
        }
    }
}

fn too_many(retry_after: u64) -> ApiError {
    ApiError::TooManyRequests {
        message: TOO_MANY.into(),
        retry_after: retry_after.max(1),
    }
}

impl Limits {
    pub fn new(cfg: LimitsConfig) -> Self {
        Limits {
            cfg,
            readonly: AtomicUsize::new(0),
            mutating: AtomicUsize::new(0),
            clients: Mutex::new(HashMap::new()),
        }
    }

    pub fn config(&self) -> &LimitsConfig {
        &self.cfg
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Client>> {
        // Every update is a single field write: a poisoned map is still consistent.
        self.clients.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn counter(&self, class: Class) -> &AtomicUsize {
        match class {
            Class::Mutating => &self.mutating,
            _ => &self.readonly,
        }
    }

    /// Take a slot for a request of `class` from client `key`, or say why not (429).
    /// `privileged` clients are counted but never refused.
    pub fn admit(
        self: &Arc<Self>,
        key: &str,
        class: Class,
        privileged: bool,
    ) -> Result<Permit, ApiError> {
        let now = Instant::now();
        let mut clients = self.lock();
        if clients.len() >= MAX_TRACKED_CLIENTS && !clients.contains_key(key) {
            let burst = f64::from(self.cfg.client_burst.max(1));
            clients.retain(|_, c| c.inflight > 0 || c.watches > 0 || c.tokens < burst);
        }
        let client = clients.entry(key.to_string()).or_insert_with(|| Client {
            inflight: 0,
            watches: 0,
            tokens: f64::from(self.cfg.client_burst.max(1)),
            refilled: now,
        });
        if !privileged {
            self.take_token(client, now)?;
            match class {
                Class::Watch => {
                    let cap = self.cfg.max_watches_per_client;
                    if cap > 0 && client.watches >= cap {
                        return Err(ApiError::TooManyRequests {
                            message: format!(
                                "Too many watches: this client already holds {cap}, the most allowed; please try again later."
                            ),
                            retry_after: 1,
                        });
                    }
                }
                Class::ReadOnly | Class::Mutating => {
                    let cap = self.cfg.max_inflight_per_client;
                    if cap > 0 && client.inflight >= cap {
                        return Err(too_many(1));
                    }
                }
                Class::LongRunning => {}
            }
        }
        let global = matches!(class, Class::ReadOnly | Class::Mutating);
        if global {
            let cap = match class {
                Class::Mutating => self.cfg.max_mutating_requests_inflight,
                _ => self.cfg.max_requests_inflight,
            };
            let counter = self.counter(class);
            let before = counter.fetch_add(1, Ordering::AcqRel);
            if cap > 0 && before >= cap && !privileged {
                counter.fetch_sub(1, Ordering::AcqRel);
                return Err(too_many(1));
            }
        }
        match class {
            Class::Watch => client.watches += 1,
            Class::LongRunning => {}
            _ => client.inflight += 1,
        }
        Ok(Permit {
            limits: self.clone(),
            key: key.to_string(),
            class,
            global,
        })
    }

    /// The token bucket: `client_qps` tokens a second up to `client_burst`.
    fn take_token(&self, c: &mut Client, now: Instant) -> Result<(), ApiError> {
        let qps = self.cfg.client_qps;
        if qps <= 0.0 {
            return Ok(());
        }
        let burst = f64::from(self.cfg.client_burst.max(1));
        let elapsed = now.saturating_duration_since(c.refilled).as_secs_f64();
        c.tokens = (c.tokens + elapsed * qps).min(burst);
        c.refilled = now;
        if c.tokens >= 1.0 {
            c.tokens -= 1.0;
            Ok(())
        } else {
            let wait = ((1.0 - c.tokens) / qps).ceil() as u64;
            Err(too_many(wait))
        }
    }
}

/// Who the limits see: the authenticated user, else the peer address.
fn client_key(req: &ServiceRequest) -> (String, bool) {
    if let Some(user) = req.extensions().get::<UserInfo>() {
        return (
            format!("user:{}", user.name),
            user.in_group(PRIVILEGED_GROUP),
        );
    }
    let ip = req
        .peer_addr()
        .map(|a| a.ip().to_string())
        .unwrap_or_default();
    (format!("ip:{ip}"), false)
}

/// Middleware applying the limits to every request.
pub async fn enforce(
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let Some(limits) = req
        .app_data::<web::Data<Limits>>()
        .map(|d| d.clone().into_inner())
    else {
        return next
            .call(req)
            .await
            .map(ServiceResponse::map_into_boxed_body);
    };
    let class = Class::of(req.method().as_str(), req.path(), req.query_string());
    let (key, privileged) = client_key(&req);
    let permit = match limits.admit(&key, class, privileged) {
        Ok(p) => p,
        Err(e) => {
            tracing::debug!(client = %key, ?class, error = %e, "request refused by limits");
            let (http, _) = req.into_parts();
            return Ok(ServiceResponse::new(http, render::error_response(&e)));
        }
    };
    if has_body(&req) {
        let body = req.take_payload();
        req.set_payload(with_deadline(body, limits.cfg.request_body_timeout));
    }
    let res = next.call(req).await?;
    Ok(match class {
        // A watch holds its slot for as long as its stream is open.
        Class::Watch | Class::LongRunning => res.map_body(|_, body| {
            BoxBody::new(Guarded {
                inner: body.boxed(),
                _permit: permit,
            })
        }),
        _ => res.map_into_boxed_body(),
    })
}

fn has_body(req: &ServiceRequest) -> bool {
    let h = req.headers();
    h.contains_key("transfer-encoding")
        || h.get("content-length")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim() != "0")
}

/// The request body, failing with a timeout once `limit` has passed since it was wrapped:
/// a client dribbling its body cannot hold a request in flight for ever.
fn with_deadline(body: Payload, limit: Duration) -> Payload {
    let deadline = tokio::time::Instant::now() + limit;
    let stream = futures::stream::unfold((false, body), move |(done, mut body)| async move {
        if done {
            return None;
        }
        match tokio::time::timeout_at(deadline, body.next()).await {
            Ok(Some(item)) => Some((item, (false, body))),
            Ok(None) => None,
            Err(_) => {
                let err = std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!(
                        "the request body did not arrive within {}s",
                        limit.as_secs()
                    ),
                );
                Some((Err(PayloadError::Io(err)), (true, body)))
            }
        }
    });
    let boxed: Pin<Box<dyn futures::Stream<Item = Result<bytes::Bytes, PayloadError>>>> =
        Box::pin(stream);
    Payload::from(boxed)
}

/// A response body that keeps a [`Permit`] until the body is done or dropped.
struct Guarded {
    inner: BoxBody,
    _permit: Permit,
}

impl MessageBody for Guarded {
    type Error = Box<dyn std::error::Error>;

    fn size(&self) -> BodySize {
        self.inner.size()
    }

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<bytes::Bytes, Self::Error>>> {
        Pin::new(&mut self.inner).poll_next(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(cfg: LimitsConfig) -> Arc<Limits> {
        Arc::new(Limits::new(cfg))
    }

    #[test]
    fn watches_and_followed_logs_are_long_running() {
        assert_eq!(Class::of("GET", "/api/v1/pods", "watch=true"), Class::Watch);
        assert_eq!(Class::of("GET", "/api/v1/watch/pods", ""), Class::Watch);
        assert_eq!(
            Class::of("GET", "/apis/coordination.k8s.io/v1/watch/leases", ""),
            Class::Watch
        );
        assert_eq!(
            Class::of(
                "GET",
                "/api/v1/namespaces/d/pods/p/log",
                "follow=true&container=a"
            ),
            Class::LongRunning
        );
        assert_eq!(
            Class::of("GET", "/api/v1/namespaces/d/pods/p/log", ""),
            Class::ReadOnly
        );
        assert_eq!(
            Class::of("GET", "/api/v1/pods", "watch=false"),
            Class::ReadOnly
        );
        assert_eq!(
            Class::of("POST", "/api/v1/namespaces/d/pods", "watch=true"),
            Class::Mutating
        );
        // A namespace called "watch" is not a watch.
        assert_eq!(
            Class::of("GET", "/api/v1/namespaces/watch/pods", ""),
            Class::ReadOnly
        );
    }

    #[test]
    fn in_flight_caps_refuse_beyond_the_limit_and_release_on_drop() {
        let l = limits(LimitsConfig {
            max_requests_inflight: 2,
            max_mutating_requests_inflight: 1,
            max_inflight_per_client: 0,
            ..LimitsConfig::default()
        });
        let a = l.admit("a", Class::ReadOnly, false).expect("first");
        let _b = l.admit("b", Class::ReadOnly, false).expect("second");
        let err = l
            .admit("c", Class::ReadOnly, false)
            .err()
            .expect("third refused");
        assert_eq!((err.code(), err.to_string().as_str()), (429, TOO_MANY));
        // Mutating requests have their own cap.
        let _m = l.admit("c", Class::Mutating, false).expect("mutating");
        assert!(l.admit("c", Class::Mutating, false).is_err());
        // Administrators always get through.
        let _admin = l.admit("root", Class::ReadOnly, true).expect("privileged");
        drop(a);
        drop(_admin);
        assert!(l.admit("c", Class::ReadOnly, false).is_ok());
    }

    #[test]
    fn one_client_cannot_take_every_slot() {
        let l = limits(LimitsConfig {
            max_inflight_per_client: 2,
            ..LimitsConfig::default()
        });
        let _held: Vec<_> = (0..2)
            .map(|_| l.admit("greedy", Class::ReadOnly, false).expect("slot"))
            .collect();
        assert_eq!(
            l.admit("greedy", Class::Mutating, false)
                .err()
                .map(|e| e.code()),
            Some(429)
        );
        assert!(l.admit("polite", Class::ReadOnly, false).is_ok());
    }

    #[test]
    fn watches_per_client_are_capped_while_open() {
        let l = limits(LimitsConfig {
            max_watches_per_client: 1,
            ..LimitsConfig::default()
        });
        let w = l.admit("a", Class::Watch, false).expect("watch");
        let err = l
            .admit("a", Class::Watch, false)
            .err()
            .expect("second watch refused");
        assert_eq!(err.code(), 429);
        assert!(err.to_string().starts_with("Too many watches"));
        assert!(l.admit("b", Class::Watch, false).is_ok());
        // Watches do not take in-flight slots.
        assert_eq!(l.readonly.load(Ordering::Acquire), 0);
        drop(w);
        assert!(l.admit("a", Class::Watch, false).is_ok());
    }

    #[test]
    fn the_token_bucket_allows_a_burst_then_the_rate() {
        let l = limits(LimitsConfig {
            client_qps: 1.0,
            client_burst: 3,
            ..LimitsConfig::default()
        });
        for _ in 0..3 {
            drop(l.admit("a", Class::ReadOnly, false).expect("burst"));
        }
        let err = l
            .admit("a", Class::ReadOnly, false)
            .err()
            .expect("over the rate");
        assert!(matches!(
            err,
            ApiError::TooManyRequests { retry_after: 1, .. }
        ));
        assert!(
            l.admit("b", Class::ReadOnly, false).is_ok(),
            "others have their own bucket"
        );
        // A second later one more token has dripped in.
        {
            let mut clients = l.lock();
            let c = clients.get_mut("a").expect("tracked");
            c.refilled -= Duration::from_millis(1100);
        }
        assert!(l.admit("a", Class::ReadOnly, false).is_ok());
    }
}
