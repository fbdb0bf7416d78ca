//! The node server's requests: authentication and authorization first, then the path
//! (`/exec/<ns>/<pod>/<container>`, `/portForward/<ns>/<pod>`, ...), then, for the
//! streaming ones, the protocol the client offered and the upgrade.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONNECTION, CONTENT_TYPE, UPGRADE};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rustls_pki_types::CertificateDer;
use serde_json::{json, Value};

use super::auth::{AuthError, NodeAttributes};
use super::{exec, logs, portforward, ws, Shared};
use crate::api::meta;
use crate::kubelet::runtime::{ContainerInfo, ContainerState, ExecRequest};
use crate::runtime::NODE_NAME;

pub type Body = UnsyncBoxBody<Bytes, std::io::Error>;

const STREAM_PROTOCOL_HEADER: &str = "x-stream-protocol-version";
const WS_PROTOCOL_HEADER: &str = "sec-websocket-protocol";

/// A refusal, as the kubelet words it (plain text).
#[derive(Debug)]
pub struct Refusal {
    pub status: StatusCode,
    pub message: String,
}

impl Refusal {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Refusal {
            status,
            message: message.into(),
        }
    }

    fn into_response(self) -> Response<Body> {
        text(self.status, self.message)
    }
}

pub fn text(status: StatusCode, message: impl Into<String>) -> Response<Body> {
    let mut resp = Response::new(full(Bytes::from(message.into())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

pub fn full(bytes: Bytes) -> Body {
    Full::new(bytes)
        .map_err(|e: Infallible| match e {})
        .boxed_unsync()
}

fn json_response(value: &Value) -> Response<Body> {
    let mut resp = Response::new(full(Bytes::from(value.to_string())));
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

/// The query, with repeated keys kept in order (`command=sh&command=-c`).
pub struct Query(Vec<(String, String)>);

impl Query {
    fn parse(q: Option<&str>) -> Query {
        Query(
            form_urlencoded::parse(q.unwrap_or("").as_bytes())
                .into_owned()
                .collect(),
        )
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn all(&self, key: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// `1`/`true` (any case) is set, as Go's `strconv.ParseBool` reads them.
    pub fn flag(&self, keys: &[&str]) -> bool {
        keys.iter().any(|k| {
            self.get(k)
                .is_some_and(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "t" | "true"))
        })
    }
}

pub async fn handle(
    shared: Arc<Shared>,
    peer: Option<&CertificateDer<'static>>,
    req: Request<Incoming>,
) -> Response<Body> {
    let path = req.uri().path().to_string();
    let method = req.method().as_str().to_string();
    let span = tracing::debug_span!("node_request", node = %shared.node, %method, %path);
    let _g = span.enter();
    if let Some(auth) = &shared.auth {
        let header = req
            .headers()
            .get(hyper::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let user = match auth.authenticate(peer, header).await {
            Ok(u) => u,
            Err(e) => return auth_refusal(e),
        };
        if let Err(e) = auth
            .authorize(&user, NodeAttributes::of(&method, &path))
            .await
        {
            return auth_refusal(e);
        }
    }
    match route(&shared, req, &path).await {
        Ok(resp) => resp,
        Err(refusal) => refusal.into_response(),
    }
}

fn auth_refusal(e: AuthError) -> Response<Body> {
    let status = match e {
        AuthError::Unauthorized => StatusCode::UNAUTHORIZED,
        AuthError::Forbidden(_) => StatusCode::FORBIDDEN,
        AuthError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
    };
    text(status, e.to_string())
}

async fn route(
    shared: &Arc<Shared>,
    req: Request<Incoming>,
    path: &str,
) -> Result<Response<Body>, Refusal> {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let query = Query::parse(req.uri().query());
    let get = req.method() == hyper::Method::GET;
    let streaming = matches!(*req.method(), hyper::Method::GET | hyper::Method::POST);
    match segs.as_slice() {
        ["healthz"] if get => Ok(text(StatusCode::OK, "ok")),
        ["pods"] if get => Ok(json_response(&pod_list(shared))),
        ["stats", "summary"] if get => match shared.stats.summary() {
            Some(summary) => Ok(json_response(&summary)),
            None => Err(Refusal::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "no usage sampled on this node yet",
            )),
        },
        ["metrics", which @ ("resource" | "cadvisor")] if get => match if *which == "resource" {
            shared.stats.resource_metrics()
        } else {
            shared.stats.cadvisor_metrics()
        } {
            Some(text) => {
                let mut resp = Response::new(full(Bytes::from(text)));
                resp.headers_mut().insert(
                    CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                );
                Ok(resp)
            }
            None => Err(Refusal::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "no usage sampled on this node yet",
            )),
        },
        ["containerLogs", ns, pod, container] if get => {
            logs::container_logs(shared, ns, pod, container, &query).await
        }
        ["exec", ns, pod, container] | ["exec", ns, pod, _, container] if streaming => {
            exec_route(shared, req, exec::Process::Exec, ns, pod, container, &query).await
        }
        ["attach", ns, pod, container] | ["attach", ns, pod, _, container] if streaming => {
            exec_route(
                shared,
                req,
                exec::Process::Attach,
                ns,
                pod,
                container,
                &query,
            )
            .await
        }
        ["portForward", ns, pod] | ["portForward", ns, pod, _] if streaming => {
            port_forward_route(shared, req, ns, pod, &query).await
        }
        _ => Err(Refusal::new(StatusCode::NOT_FOUND, "404 page not found")),
    }
}

/// This node's pods as a PodList.
fn pod_list(shared: &Shared) -> Value {
    let items: Vec<Value> = shared
        .pods
        .cache()
        .by_index(NODE_NAME, &shared.node)
        .iter()
        .map(|p| (**p).clone())
        .collect();
    json!({"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": items})
}

/// The pod `ns/name` on this node.
pub fn find_pod(shared: &Shared, ns: &str, name: &str) -> Result<Arc<Value>, Refusal> {
    shared
        .pods
        .cache()
        .by_index(NODE_NAME, &shared.node)
        .into_iter()
        .find(|p| meta::namespace(p) == Some(ns) && meta::name(p) == Some(name))
        .ok_or_else(|| Refusal::new(StatusCode::NOT_FOUND, "pod does not exist"))
}

/// The instances of `container` of `pod` the runtime has, newest first.
pub async fn container_instances(
    shared: &Shared,
    pod: &Value,
    container: &str,
) -> Result<Vec<ContainerInfo>, Refusal> {
    let uid = meta::uid(pod).unwrap_or_default();
    let all = shared
        .runtime
        .list(&shared.node)
        .await
        .map_err(|e| Refusal::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let mut mine: Vec<ContainerInfo> = all
        .into_iter()
        .filter(|c| c.pod_uid() == Some(uid) && c.container_name() == Some(container))
        .collect();
    mine.sort_by_key(|c| std::cmp::Reverse(c.attempt()));
    Ok(mine)
}

/// The running instance of `container` of pod `ns/name`.
async fn running_container(
    shared: &Shared,
    ns: &str,
    name: &str,
    container: &str,
) -> Result<(Arc<Value>, ContainerInfo), Refusal> {
    let pod = find_pod(shared, ns, name)?;
    let running = container_instances(shared, &pod, container)
        .await?
        .into_iter()
        .find(|c| matches!(c.state, ContainerState::Running { .. }))
        .ok_or_else(|| {
            Refusal::new(
                StatusCode::NOT_FOUND,
                format!("container not found (\"{container}\")"),
            )
        })?;
    Ok((pod, running))
}

/// The sandbox of pod `ns/name` (for its network namespace).
async fn sandbox(shared: &Shared, pod: &Value) -> Result<ContainerInfo, Refusal> {
    let uid = meta::uid(pod).unwrap_or_default();
    shared
        .runtime
        .list(&shared.node)
        .await
        .map_err(|e| Refusal::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .into_iter()
        .filter(|c| c.pod_uid() == Some(uid) && c.is_sandbox())
        .filter(|c| matches!(c.state, ContainerState::Running { .. }))
        .max_by_key(|c| c.attempt())
        .ok_or_else(|| Refusal::new(StatusCode::NOT_FOUND, "pod sandbox not found"))
}

/// The transport a client asked to upgrade to, and the protocol agreed on.
enum Upgrade {
    WebSocket { accept: String, protocol: String },
    Spdy { protocol: String },
}

/// Agree on a protocol: WebSocket subprotocols or SPDY's `X-Stream-Protocol-Version`,
/// the first of `ws`/`spdy` the client offers (none offered: the oldest, as the
/// kubelet's handshake allows).
fn negotiate(req: &Request<Incoming>, ws: &[&str], spdy: &[&str]) -> Result<Upgrade, Refusal> {
    let headers = req.headers();
    let upgrade = headers
        .get(UPGRADE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let offered = |name: &str| -> Vec<&str> {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect()
    };
    let pick = |offered: Vec<&str>, ours: &[&str]| -> Result<String, Refusal> {
        if offered.iter().all(|o| o.trim().is_empty()) {
            return Ok(ours.last().copied().unwrap_or_default().to_string());
        }
        ws::choose_protocol(&offered, ours)
            .map(str::to_string)
            .ok_or_else(|| {
                Refusal::new(
                    StatusCode::FORBIDDEN,
                    format!(
                        "unable to upgrade: unable to negotiate protocol: client supports {offered:?}, server supports {ours:?}"
                    ),
                )
            })
    };
    if upgrade.eq_ignore_ascii_case("websocket") {
        let key = headers
            .get("sec-websocket-key")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| Refusal::new(StatusCode::BAD_REQUEST, "missing Sec-WebSocket-Key"))?;
        Ok(Upgrade::WebSocket {
            accept: ws::accept_key(key),
            protocol: pick(offered(WS_PROTOCOL_HEADER), ws)?,
        })
    } else if upgrade.to_ascii_lowercase().starts_with("spdy/3") {
        Ok(Upgrade::Spdy {
            protocol: pick(offered(STREAM_PROTOCOL_HEADER), spdy)?,
        })
    } else {
        Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "Upgrade request required",
        ))
    }
}

/// The 101 answer for `upgrade`; `serve` runs on the upgraded connection.
fn switch<F, Fut>(req: Request<Incoming>, upgrade: Upgrade, serve: F) -> Response<Body>
where
    F: FnOnce(TokioIo<hyper::upgrade::Upgraded>, String) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let mut resp = Response::new(full(Bytes::new()));
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = resp.headers_mut();
    headers.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    let protocol = match upgrade {
        Upgrade::WebSocket { accept, protocol } => {
            headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
            if let Ok(v) = HeaderValue::from_str(&accept) {
                headers.insert("sec-websocket-accept", v);
            }
            if let Ok(v) = HeaderValue::from_str(&protocol) {
                headers.insert(WS_PROTOCOL_HEADER, v);
            }
            protocol
        }
        Upgrade::Spdy { protocol } => {
            headers.insert(UPGRADE, HeaderValue::from_static("SPDY/3.1"));
            if let Ok(v) = HeaderValue::from_str(&protocol) {
                headers.insert(STREAM_PROTOCOL_HEADER, v);
            }
            protocol
        }
    };
    tokio::spawn(async move {
        match hyper::upgrade::on(req).await {
            Ok(upgraded) => serve(TokioIo::new(upgraded), protocol).await,
            Err(e) => tracing::debug!(error = %e, "upgrade failed"),
        }
    });
    resp
}

async fn exec_route(
    shared: &Arc<Shared>,
    req: Request<Incoming>,
    process: exec::Process,
    ns: &str,
    pod: &str,
    container: &str,
    query: &Query,
) -> Result<Response<Body>, Refusal> {
    let exec = ExecRequest {
        command: query.all("command"),
        stdin: query.flag(&["input", "stdin"]),
        stdout: query.flag(&["output", "stdout"]),
        stderr: query.flag(&["error", "stderr"]),
        tty: query.flag(&["tty"]),
    };
    if !(exec.stdin || exec.stdout || exec.stderr) {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "you must specify at least 1 of stdin, stdout, stderr",
        ));
    }
    if process == exec::Process::Exec && exec.command.is_empty() {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "you must specify a command",
        ));
    }
    let (pod, running) = running_container(shared, ns, pod, container).await?;
    if process == exec::Process::Attach {
        attachable(&pod, container, &exec)?;
    }
    let upgrade = negotiate(&req, exec::WS_PROTOCOLS, exec::SPDY_PROTOCOLS)?;
    let runtime = shared.runtime.clone();
    let ws = matches!(upgrade, Upgrade::WebSocket { .. });
    tracing::debug!(container = %running.id, command = ?exec.command, "exec");
    Ok(switch(req, upgrade, move |io, protocol| async move {
        if ws {
            exec::serve_ws(io, &protocol, runtime, process, running.id, exec).await
        } else {
            exec::serve_spdy(io, &protocol, runtime, process, running.id, exec).await
        }
    }))
}

/// Attaching with stdin or a terminal needs a container started with them, as the
/// kubelet refuses otherwise.
fn attachable(pod: &Value, container: &str, req: &ExecRequest) -> Result<(), Refusal> {
    let spec = ["containers", "initContainers", "ephemeralContainers"]
        .iter()
        .filter_map(|list| pod.pointer(&format!("/spec/{list}"))?.as_array())
        .flatten()
        .find(|c| c["name"].as_str() == Some(container));
    let has = |name: &str| spec.and_then(|c| c[name].as_bool()).unwrap_or(false);
    if req.stdin && !has("stdin") {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            format!("stdin is not enabled for this container: {container}"),
        ));
    }
    if req.tty && !has("tty") {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            format!("tty is not enabled for this container: {container}"),
        ));
    }
    Ok(())
}

async fn port_forward_route(
    shared: &Arc<Shared>,
    req: Request<Incoming>,
    ns: &str,
    name: &str,
    query: &Query,
) -> Result<Response<Body>, Refusal> {
    let pod = find_pod(shared, ns, name)?;
    let sandbox = sandbox(shared, &pod).await?;
    let netns = shared
        .runtime
        .network_namespace(&sandbox.id)
        .await
        .map_err(|e| Refusal::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let target = portforward::Target {
        pod: format!("{ns}/{name}"),
        uid: meta::uid(&pod).unwrap_or_default().to_string(),
        netns,
    };
    let mut ws_protocols = vec![portforward::WS_TUNNEL_PROTOCOL];
    ws_protocols.extend_from_slice(portforward::WS_PROTOCOLS);
    let upgrade = negotiate(&req, &ws_protocols, &[portforward::SPDY_PROTOCOL])?;
    let ports: Vec<u16> = query
        .all("ports")
        .iter()
        .flat_map(|p| {
            p.split(',')
                .map(str::trim)
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .filter(|p| !p.is_empty())
        .map(|p| {
            p.parse::<u16>().ok().filter(|n| *n > 0).ok_or_else(|| {
                Refusal::new(
                    StatusCode::BAD_REQUEST,
                    format!("unable to parse \"{p}\" as a port: invalid port"),
                )
            })
        })
        .collect::<Result<_, _>>()?;
    match &upgrade {
        Upgrade::WebSocket { protocol, .. } if protocol != portforward::WS_TUNNEL_PROTOCOL => {
            if ports.is_empty() {
                return Err(Refusal::new(
                    StatusCode::BAD_REQUEST,
                    "query parameter \"port\" is required",
                ));
            }
            Ok(switch(req, upgrade, move |io, protocol| async move {
                portforward::serve_ws(io, &protocol, ports, target).await
            }))
        }
        Upgrade::WebSocket { .. } => Ok(switch(req, upgrade, move |io, _| async move {
            let tunnel = ws::into_byte_stream(ws::start(io));
            portforward::serve_spdy(tunnel, target).await
        })),
        Upgrade::Spdy { .. } => Ok(switch(req, upgrade, move |io, _| async move {
            portforward::serve_spdy(io, target).await
        })),
    }
}
