//! The API server in front of the node servers, as kube-apiserver's upgrade-aware proxy:
//! `pods/log`, `pods/exec`, `pods/attach`, `pods/portforward` and `nodes/proxy` are
//! checked here (the pod is bound, the container is one of its own, the pod has not
//! completed), then sent to the node's server at its InternalIP and
//! `status.daemonEndpoints.kubeletEndpoint.Port`, authenticated with the API server's
//! kubelet client certificate; an upgraded connection is then spliced byte for byte,
//! whatever protocol the client and the node agreed on.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::HeaderName;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite};

use super::routing::Target;
use crate::api::resources;
use crate::api::ApiError;
use crate::pki::Credential;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Request headers an upgrade carries on to the node (the client's own credentials stay
/// here: the node trusts the API server's certificate).
const UPGRADE_HEADERS: &[&str] = &[
    "connection",
    "upgrade",
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-protocol",
    "x-stream-protocol-version",
];
/// Response headers of a 101 that the client needs back.
pub const SWITCH_HEADERS: &[&str] = &[
    "sec-websocket-accept",
    "sec-websocket-protocol",
    "x-stream-protocol-version",
];

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// How the API server connects to node servers.
#[derive(Clone)]
pub struct NodeDialer {
    /// `None` on the insecure path (node servers speak plain HTTP).
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl NodeDialer {
    pub fn plain() -> Self {
        NodeDialer { tls: None }
    }

    /// TLS to node servers whose certificates the cluster CA signed, as `client`.
    pub fn tls(ca_pem: &str, client: &Credential) -> Result<Self, super::tls::TlsError> {
        use super::tls::TlsError;
        let ca = CertificateDer::from_pem_slice(ca_pem.as_bytes())
            .map_err(|e| TlsError::Certificate(e.to_string()))?;
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(ca)
            .map_err(|e| TlsError::Verifier(e.to_string()))?;
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(client.cert_pem.as_bytes())
                .collect::<Result<_, _>>()
                .map_err(|e| TlsError::Certificate(e.to_string()))?;
        let key = PrivateKeyDer::from_pem_slice(client.key_pem.as_bytes())
            .map_err(|e| TlsError::Key(e.to_string()))?;
        let config = rustls::ClientConfig::builder_with_provider(super::tls::provider())
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Config)?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .map_err(TlsError::Config)?;
        Ok(NodeDialer {
            tls: Some(Arc::new(config)),
        })
    }

    async fn connect(&self, addr: SocketAddr) -> Result<Box<dyn Io>, ApiError> {
        let unreachable = |e: &dyn std::fmt::Display| {
            ApiError::ServiceUnavailable(format!("error dialing backend: {e}"))
        };
        let tcp = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(addr))
            .await
            .map_err(|_| unreachable(&"dial timeout"))?
            .map_err(|e| unreachable(&e))?;
        let _ = tcp.set_nodelay(true);
        match &self.tls {
            None => Ok(Box::new(tcp)),
            Some(config) => {
                let name = ServerName::IpAddress(addr.ip().into());
                let tls = tokio_rustls::TlsConnector::from(config.clone())
                    .connect(name, tcp)
                    .await
                    .map_err(|e| unreachable(&e))?;
                Ok(Box::new(tls))
            }
        }
    }

    /// Send `req` to the node server at `addr`; the connection serves this one request
    /// (and its upgrade, if any).
    pub async fn send(
        &self,
        addr: SocketAddr,
        req: Request<Full<Bytes>>,
    ) -> Result<Response<hyper::body::Incoming>, ApiError> {
        let io = self.connect(addr).await?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .map_err(|e| ApiError::ServiceUnavailable(format!("error dialing backend: {e}")))?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(error = %e, "node connection ended");
            }
        });
        sender
            .send_request(req)
            .await
            .map_err(|e| ApiError::ServiceUnavailable(format!("error talking to the node: {e}")))
    }
}

/// Where a node's server listens.
pub fn node_address(node: &Value) -> Result<SocketAddr, ApiError> {
    let name = node
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let addresses = node
        .pointer("/status/addresses")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let ip = ["InternalIP", "ExternalIP"]
        .iter()
        .find_map(|kind| {
            addresses
                .iter()
                .filter(|a| a["type"].as_str() == Some(kind))
                .find_map(|a| a["address"].as_str()?.parse::<IpAddr>().ok())
        })
        .ok_or_else(|| {
            ApiError::ServiceUnavailable(format!("node {name:?} has no address to reach it at"))
        })?;
    let port = node
        .pointer("/status/daemonEndpoints/kubeletEndpoint/Port")
        .and_then(Value::as_u64)
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p > 0)
        .ok_or_else(|| {
            ApiError::ServiceUnavailable(format!("node {name:?} reports no kubelet port"))
        })?;
    Ok(SocketAddr::new(ip, port))
}

/// The container a pod subresource request names, checked as kube-apiserver checks it.
pub fn pod_container(pod: &Value, asked: Option<&str>) -> Result<String, ApiError> {
    let name = pod
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let names = |list: &str| -> Vec<String> {
        pod.pointer(&format!("/spec/{list}"))
            .and_then(Value::as_array)
            .map(|cs| {
                cs.iter()
                    .filter_map(|c| c["name"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let (containers, init, ephemeral) = (
        names("containers"),
        names("initContainers"),
        names("ephemeralContainers"),
    );
    match asked.filter(|c| !c.is_empty()) {
        Some(c) => {
            if containers
                .iter()
                .chain(&init)
                .chain(&ephemeral)
                .any(|n| n == c)
            {
                Ok(c.to_string())
            } else {
                Err(ApiError::BadRequest(format!(
                    "container {c} is not valid for pod {name}"
                )))
            }
        }
        None if containers.len() == 1 => Ok(containers[0].clone()),
        None => {
            let mut message = format!(
                "a container name must be specified for pod {name}, choose one of: [{}]",
                containers.join(" ")
            );
            if !init.is_empty() {
                message.push_str(&format!(
                    " or one of the init containers: [{}]",
                    init.join(" ")
                ));
            }
            if !ephemeral.is_empty() {
                message.push_str(&format!(
                    " or one of the ephemeral containers: [{}]",
                    ephemeral.join(" ")
                ));
            }
            Err(ApiError::BadRequest(message))
        }
    }
}

/// The node a pod runs on; streams into a completed pod are refused with Kubernetes'
/// words.
pub fn pod_node<'a>(pod: &'a Value, verb: &str) -> Result<&'a str, ApiError> {
    let name = pod
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let phase = pod
        .pointer("/status/phase")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if matches!(phase, "Succeeded" | "Failed") && verb != "log" {
        let action = match verb {
            "attach" => "attach a container in",
            "portforward" => "port forward to",
            _ => "exec into a container in",
        };
        return Err(ApiError::BadRequest(format!(
            "cannot {action} a completed pod; current phase is {phase}"
        )));
    }
    pod.pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ApiError::BadRequest(format!("pod {name} does not have a host assigned")))
}

/// The node server path for pod subresource `sub` with the client's query, translated
/// as kube-apiserver does (`stdin=true` → `input=1`, ...).
pub fn node_path(
    target: &Target,
    sub: &str,
    container: Option<&str>,
    query: &[(String, String)],
) -> String {
    let ns = target.namespace.as_deref().unwrap_or_default();
    let pod = target.name.as_deref().unwrap_or_default();
    let truthy = |v: &str| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "t");
    let mut out = form_urlencoded::Serializer::new(String::new());
    let base = match sub {
        "log" => {
            for (k, v) in query {
                if matches!(
                    k.as_str(),
                    "follow"
                        | "previous"
                        | "timestamps"
                        | "tailLines"
                        | "limitBytes"
                        | "sinceSeconds"
                        | "sinceTime"
                ) {
                    out.append_pair(k, v);
                }
            }
            format!(
                "/containerLogs/{ns}/{pod}/{}",
                container.unwrap_or_default()
            )
        }
        "exec" | "attach" => {
            for (k, v) in query {
                let flag = match k.as_str() {
                    "stdin" => Some("input"),
                    "stdout" => Some("output"),
                    "stderr" => Some("error"),
                    "tty" => Some("tty"),
                    _ => None,
                };
                match flag {
                    Some(f) if truthy(v) => {
                        out.append_pair(f, "1");
                    }
                    Some(_) => {}
                    None if k == "command" && sub == "exec" => {
                        out.append_pair("command", v);
                    }
                    None => {}
                }
            }
            let path = if sub == "exec" { "exec" } else { "attach" };
            format!("/{path}/{ns}/{pod}/{}", container.unwrap_or_default())
        }
        _ => {
            for (k, v) in query {
                if k == "ports" {
                    out.append_pair(k, v);
                }
            }
            format!("/portForward/{ns}/{pod}")
        }
    };
    let q = out.finish();
    if q.is_empty() {
        base
    } else {
        format!("{base}?{q}")
    }
}

/// A request to a node server: `method path`, the upgrade headers of the client's
/// request (when it asks for one), and `body`.
pub fn node_request<'a>(
    method: &str,
    path: &str,
    addr: SocketAddr,
    headers: impl Iterator<Item = (&'a str, &'a [u8])>,
    body: Bytes,
) -> Result<Request<Full<Bytes>>, ApiError> {
    let mut builder = Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, addr.to_string());
    for (name, value) in headers {
        let lower = name.to_ascii_lowercase();
        if UPGRADE_HEADERS.contains(&lower.as_str()) || lower == "content-type" || lower == "accept"
        {
            if let Ok(n) = HeaderName::from_bytes(lower.as_bytes()) {
                builder = builder.header(n, value);
            }
        }
    }
    builder
        .body(Full::new(body))
        .map_err(|e| ApiError::BadRequest(format!("cannot forward the request: {e}")))
}

/// The node a `nodes/<name>/proxy/...` path names and the path on its server.
pub fn node_proxy_path(target: &Target, request_path: &str) -> Option<String> {
    if target.resource.name != "nodes" || target.subresource.as_deref() != Some("proxy") {
        return None;
    }
    let name = target.name.as_deref()?;
    let marker = format!("/nodes/{name}/proxy");
    let at = request_path.find(&marker)? + marker.len();
    let rest = &request_path[at..];
    Some(if rest.is_empty() {
        "/".into()
    } else {
        rest.into()
    })
}

/// Whether a target is one this module serves.
pub fn is_streaming(target: &Target) -> bool {
    matches!(
        (target.resource.name, target.subresource.as_deref()),
        ("pods", Some("log" | "exec" | "attach" | "portforward")) | ("nodes", Some("proxy"))
    )
}

/// The Node object `name`.
pub fn node_of(objects: &super::Objects, name: &str) -> Result<Arc<Value>, ApiError> {
    let info = resources::lookup("nodes").ok_or(ApiError::NoRoute)?;
    objects.get(&Target {
        resource: info,
        namespace: None,
        name: Some(name.to_string()),
        subresource: None,
        legacy_watch: false,
    })
}

/// Read a response body whole (an error answer from a node).
pub async fn read_body(resp: Response<hyper::body::Incoming>) -> (u16, String) {
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
        .unwrap_or_default();
    (status, body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn target() -> Target {
        Target {
            resource: resources::lookup("pods").unwrap(),
            namespace: Some("ns".into()),
            name: Some("p".into()),
            subresource: Some("exec".into()),
            legacy_watch: false,
        }
    }

    #[test]
    fn exec_options_become_the_kubelets_parameters() {
        let q = vec![
            ("command".to_string(), "sh".to_string()),
            ("command".to_string(), "-c".to_string()),
            ("stdin".to_string(), "true".to_string()),
            ("stdout".to_string(), "true".to_string()),
            ("tty".to_string(), "false".to_string()),
        ];
        assert_eq!(
            node_path(&target(), "exec", Some("c"), &q),
            "/exec/ns/p/c?command=sh&command=-c&input=1&output=1"
        );
    }

    #[test]
    fn a_pod_with_several_containers_needs_one_named() {
        let pod = json!({"metadata": {"name": "p"}, "spec": {
            "containers": [{"name": "a"}, {"name": "b"}], "initContainers": [{"name": "i"}]}});
        assert_eq!(pod_container(&pod, Some("i")).unwrap(), "i");
        let err = pod_container(&pod, None).unwrap_err().to_string();
        assert!(
            err.contains("choose one of: [a b] or one of the init containers: [i]"),
            "{err}"
        );
        let err = pod_container(&pod, Some("x")).unwrap_err().to_string();
        assert!(err.contains("container x is not valid for pod p"), "{err}");
    }

    #[test]
    fn a_completed_pod_refuses_exec_but_serves_logs() {
        let pod = json!({"metadata": {"name": "p"}, "spec": {"nodeName": "n1"},
            "status": {"phase": "Succeeded"}});
        assert!(pod_node(&pod, "exec").is_err());
        assert_eq!(pod_node(&pod, "log").unwrap(), "n1");
    }

    #[test]
    fn the_node_is_reached_at_its_internal_ip_and_kubelet_port() {
        let node = json!({"metadata": {"name": "n1"}, "status": {
            "addresses": [{"type": "Hostname", "address": "n1"},
                {"type": "InternalIP", "address": "10.0.0.2"}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}}}});
        assert_eq!(
            node_address(&node).unwrap(),
            "10.0.0.2:10250".parse().unwrap()
        );
    }
}
