//! The actix side of the node proxy: a pod's log, exec, attach and port-forward, and
//! `nodes/<name>/proxy/...`, answered from the node's server (see `node_proxy`).

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::Bytes;
use futures::StreamExt;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;

use super::front;
use super::node_proxy::{self, SWITCH_HEADERS};
use super::routing::Target;
use super::AppState;
use crate::api::ApiError;

/// Serve a streaming target (`node_proxy::is_streaming`).
pub async fn serve(
    req: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
    target: &Target,
) -> Result<HttpResponse, ApiError> {
    let query: Vec<(String, String)> = form_urlencoded::parse(req.query_string().as_bytes())
        .into_owned()
        .collect();
    let (node_name, path) = match node_proxy::node_proxy_path(target, req.path()) {
        Some(rest) => {
            let q = req.query_string();
            let path = if q.is_empty() {
                rest
            } else {
                format!("{rest}?{q}")
            };
            (target.name.clone().unwrap_or_default(), path)
        }
        None => {
            let sub = target.subresource.as_deref().unwrap_or_default();
            let pod = state.objects.get(&Target {
                subresource: None,
                ..target.clone()
            })?;
            let container = match sub {
                "portforward" => None,
                _ => {
                    let asked = query
                        .iter()
                        .find(|(k, _)| k == "container")
                        .map(|(_, v)| v.as_str());
                    Some(node_proxy::pod_container(&pod, asked)?)
                }
            };
            if sub == "exec" && !query.iter().any(|(k, _)| k == "command") {
                return Err(ApiError::BadRequest(
                    "you must specify at least one command for the container".into(),
                ));
            }
            let node = node_proxy::pod_node(&pod, sub)?.to_string();
            let path = node_proxy::node_path(target, sub, container.as_deref(), &query);
            (node, path)
        }
    };
    let node = node_proxy::node_of(&state.objects, &node_name)?;
    let addr = node_proxy::node_address(&node)?;
    let upgrade = req.headers().contains_key("upgrade");
    // After an upgrade, the request's body is the client's side of the stream.
    let (body, client) = if upgrade {
        (Bytes::new(), Some(payload))
    } else {
        (read_payload(payload, state.max_body).await?, None)
    };
    // A SPDY upgrade arrives dressed as a WebSocket one (see `front`): the node is asked
    // for the protocol the client really wants.
    let real = req.headers().get(front::REAL_UPGRADE).map(|v| v.as_bytes());
    let headers = req
        .headers()
        .iter()
        .filter(|(n, _)| n.as_str() != front::REAL_UPGRADE)
        .map(|(n, v)| match (n.as_str(), real) {
            ("upgrade", Some(real)) => (n.as_str(), real),
            _ => (n.as_str(), v.as_bytes()),
        });
    let forwarded = node_proxy::node_request(req.method().as_str(), &path, addr, headers, body)?;
    tracing::debug!(node = %node_name, %addr, %path, upgrade, "to the node server");
    let resp = state.nodes.send(addr, forwarded).await?;
    let status =
        StatusCode::from_u16(resp.status().as_u16()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if let (Some(client), StatusCode::SWITCHING_PROTOCOLS) = (client, status) {
        return splice(resp, client).await;
    }
    if upgrade || !status.is_success() {
        // Refused by the node: its answer, as the client would have had it.
        let content_type = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("text/plain")
            .to_string();
        let (code, text) = node_proxy::read_body(resp).await;
        if content_type.starts_with("application/json") {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return Ok(HttpResponse::build(status)
                .content_type(content_type)
                .body(text));
        }
        // The kubelet words its refusals in plain text; clients read a Status.
        let reason = match code {
            400 => "BadRequest",
            401 => "Unauthorized",
            403 => "Forbidden",
            404 => "NotFound",
            503 => "ServiceUnavailable",
            _ => "InternalError",
        };
        return Err(ApiError::Remote {
            code,
            reason: reason.into(),
            message: text.trim().to_string(),
        });
    }
    let mut out = HttpResponse::build(status);
    if let Some(ct) = resp.headers().get("content-type") {
        out.insert_header(("content-type", ct.as_bytes()));
    }
    let body = http_body_util::BodyStream::new(resp.into_body()).filter_map(|frame| async move {
        match frame {
            Ok(f) => f.into_data().ok().map(Ok::<_, std::io::Error>),
            Err(e) => Some(Err(std::io::Error::other(e.to_string()))),
        }
    });
    Ok(out.streaming(body))
}

async fn read_payload(mut payload: web::Payload, limit: usize) -> Result<Bytes, ApiError> {
    let mut body = bytes::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| ApiError::BadRequest(e.to_string()))?;
        if body.len() + chunk.len() > limit {
            return Err(ApiError::TooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// Answer 101 with the node's protocol headers and join the two connections.
async fn splice(
    resp: hyper::Response<hyper::body::Incoming>,
    mut client: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let mut out = HttpResponse::build(StatusCode::SWITCHING_PROTOCOLS);
    let upgrade_to = resp
        .headers()
        .get("upgrade")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("websocket")
        .to_string();
    for name in SWITCH_HEADERS {
        for value in resp.headers().get_all(*name) {
            out.append_header((*name, value.as_bytes()));
        }
    }
    out.upgrade(upgrade_to);
    let upgraded = hyper::upgrade::on(resp)
        .await
        .map_err(|e| ApiError::ServiceUnavailable(format!("upgrade to the node failed: {e}")))?;
    let (node_read, mut node_write) = tokio::io::split(TokioIo::new(upgraded));
    actix_web::rt::spawn(async move {
        while let Some(chunk) = client.next().await {
            match chunk {
                Ok(bytes) => {
                    if node_write.write_all(&bytes).await.is_err() {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
        let _ = node_write.shutdown().await;
    });
    let down = tokio_util::io::ReaderStream::with_capacity(node_read, 64 * 1024);
    Ok(out.streaming(down))
}
