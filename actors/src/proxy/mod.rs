//! The node proxy (kube-proxy): for every port of a NodePort Service, listen on the node's
//! address at the node port and forward each TCP connection to a ready endpoint of the
//! service, round-robin. It runs as a reconciler in the runtime's controller loop, on the
//! process's shared Service and Endpoints informers (every in-process node's proxy reads
//! the same caches), one reconcile per Service.

pub mod backends;
pub mod kernel;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::net::TcpStream;

use crate::runtime::{key_of, Action, Change, Context, InformerSpec, ReconcileError, Reconciler};
use backends::{Backends, Connector};

/// How long a backend connect may take before the next backend is tried.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// A port that could not be bound is tried again this often.
const REBIND_AFTER: Duration = Duration::from_secs(10);

/// One service port this node listens for.
struct Listener {
    node_port: u16,
    backends: Arc<Backends>,
    accept: tokio::task::JoinHandle<()>,
}

impl Drop for Listener {
    fn drop(&mut self) {
        // Stop accepting (and free the port); connections already open carry on.
        self.accept.abort();
    }
}

struct Tcp;

#[async_trait::async_trait]
impl Connector for Tcp {
    type Conn = TcpStream;
    async fn connect(&self, addr: SocketAddr) -> std::io::Result<TcpStream> {
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
            Ok(r) => r,
            Err(_) => Err(std::io::Error::from(std::io::ErrorKind::TimedOut)),
        }
    }
}

pub struct ProxyReconciler {
    node: String,
    address: IpAddr,
    /// (service key, port identity) → listener.
    listeners: Mutex<HashMap<(String, String), Listener>>,
}

impl ProxyReconciler {
    pub fn new(node: impl Into<String>, address: IpAddr) -> Self {
        ProxyReconciler {
            node: node.into(),
            address,
            listeners: Mutex::new(HashMap::new()),
        }
    }

    /// The node ports this proxy listens on now (for tests and status).
    pub fn listening(&self) -> Vec<u16> {
        self.lock().values().map(|l| l.node_port).collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Listener>> {
        self.listeners.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One NodePort service port and where its traffic goes.
#[derive(Debug, Clone, PartialEq)]
pub struct PortPlan {
    pub id: String,
    pub node_port: u16,
    pub backends: Vec<SocketAddr>,
}

/// The service ports to listen on, with the ready endpoints behind each.
pub fn plan(svc: &Value, endpoints: Option<&Value>) -> Vec<PortPlan> {
    let kind = svc
        .pointer("/spec/type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP");
    if !matches!(kind, "NodePort" | "LoadBalancer") {
        return Vec::new();
    }
    let ports = svc
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let single = ports.len() == 1;
    ports
        .iter()
        .filter(|p| p.get("protocol").and_then(Value::as_str).unwrap_or("TCP") == "TCP")
        .filter_map(|p| {
            let node_port = p
                .get("nodePort")
                .and_then(Value::as_u64)
                .filter(|n| *n > 0)? as u16;
            let name = p.get("name").and_then(Value::as_str).unwrap_or("");
            let id = if name.is_empty() {
                node_port.to_string()
            } else {
                name.to_string()
            };
            Some(PortPlan {
                id,
                node_port,
                backends: endpoint_addresses(endpoints, name, single),
            })
        })
        .collect()
}

/// Ready addresses of the endpoints port named `name` (or the only port of a single-port
/// service).
fn endpoint_addresses(endpoints: Option<&Value>, name: &str, single: bool) -> Vec<SocketAddr> {
    let Some(ep) = endpoints else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for subset in ep
        .get("subsets")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let port = subset
            .get("ports")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find(|p| p.get("name").and_then(Value::as_str).unwrap_or("") == name || single)
            .and_then(|p| p.get("port").and_then(Value::as_u64));
        let Some(port) = port else { continue };
        for addr in subset
            .get("addresses")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(ip) = addr
                .get("ip")
                .and_then(Value::as_str)
                .and_then(|s| s.parse::<IpAddr>().ok())
            {
                out.push(SocketAddr::new(ip, port as u16));
            }
        }
    }
    out.sort();
    out
}

fn affinity(svc: &Value) -> Option<Duration> {
    (svc.pointer("/spec/sessionAffinity").and_then(Value::as_str) == Some("ClientIP")).then(|| {
        let secs = svc
            .pointer("/spec/sessionAffinityConfig/clientIP/timeoutSeconds")
            .and_then(Value::as_u64)
            .unwrap_or(10_800);
        Duration::from_secs(secs)
    })
}

/// Accept connections and splice each to a backend.
async fn serve(listener: tokio::net::TcpListener, backends: Arc<Backends>, service: String) {
    loop {
        let (client, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(service = %service, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let backends = backends.clone();
        let service = service.clone();
        tokio::spawn(async move {
            let mut client = client;
            match backends.connect(&Tcp, peer.ip()).await {
                Ok((addr, mut upstream)) => {
                    let _ = client.set_nodelay(true);
                    let _ = upstream.set_nodelay(true);
                    splice(&mut client, &mut upstream).await;
                    tracing::trace!(service = %service, backend = %addr, "connection done");
                }
                Err(e) => {
                    tracing::debug!(service = %service, error = %e, "no backend for connection")
                }
            }
        });
    }
}

/// Copy both ways until the backend is done: once it has sent everything and closed, the
/// client's connection is closed too (as it would be talking to the backend directly),
/// rather than held half-open waiting for the client to notice.
async fn splice(client: &mut TcpStream, upstream: &mut TcpStream) {
    use tokio::io::AsyncWriteExt;
    let (mut cr, mut cw) = client.split();
    let (mut ur, mut uw) = upstream.split();
    let to_backend = async {
        let _ = tokio::io::copy(&mut cr, &mut uw).await;
        let _ = uw.shutdown().await;
        // The client finished sending; keep relaying the answer until the backend is done.
        std::future::pending::<()>().await
    };
    let to_client = async {
        let _ = tokio::io::copy(&mut ur, &mut cw).await;
        let _ = cw.shutdown().await;
    };
    tokio::select! {
        _ = to_client => {}
        _ = to_backend => {}
    }
}

impl ProxyReconciler {
    fn bind(&self, port: u16) -> std::io::Result<tokio::net::TcpListener> {
        let std = std::net::TcpListener::bind(SocketAddr::new(self.address, port))?;
        std.set_nonblocking(true)?;
        tokio::net::TcpListener::from_std(std)
    }
}

#[async_trait::async_trait]
impl Reconciler for ProxyReconciler {
    fn name(&self) -> &'static str {
        "kube-proxy"
    }

    fn informers(&self) -> Vec<InformerSpec> {
        vec![
            InformerSpec::all("services"),
            InformerSpec::all("endpoints"),
        ]
    }

    fn keys_for(&self, _resource: &str, change: &Change, _ctx: &Context) -> Vec<String> {
        // Endpoints share their service's namespace and name.
        vec![key_of(&change.object)]
    }

    fn workers(&self) -> usize {
        1
    }

    async fn reconcile(&self, key: &str, ctx: &Context) -> Result<Action, ReconcileError> {
        let svc = ctx.cache("services").get(key);
        let endpoints = ctx.cache("endpoints").get(key);
        let wanted = svc
            .as_deref()
            .map(|s| plan(s, endpoints.as_deref()))
            .unwrap_or_default();
        let affinity = svc.as_deref().and_then(affinity);
        let mut failed = Vec::new();
        {
            let mut listeners = self.lock();
            listeners.retain(|(k, id), l| {
                k != key
                    || wanted
                        .iter()
                        .any(|w| &w.id == id && w.node_port == l.node_port)
            });
            for w in &wanted {
                let slot = (key.to_string(), w.id.clone());
                if let Some(l) = listeners.get(&slot) {
                    l.backends.set(w.backends.clone(), affinity);
                    continue;
                }
                match self.bind(w.node_port) {
                    Ok(listener) => {
                        let backends = Arc::new(Backends::default());
                        backends.set(w.backends.clone(), affinity);
                        let accept =
                            tokio::spawn(serve(listener, backends.clone(), key.to_string()));
                        tracing::info!(service = %key, node = %self.node, node_port = w.node_port, "listening");
                        listeners.insert(
                            slot,
                            Listener {
                                node_port: w.node_port,
                                backends,
                                accept,
                            },
                        );
                    }
                    Err(e) => failed.push((w.node_port, e)),
                }
            }
        }
        if failed.is_empty() {
            return Ok(Action::Done);
        }
        if let Some(svc) = svc.as_deref() {
            for (port, e) in &failed {
                let msg = format!(
                    "node {}: cannot listen on {}:{port} for the service: {e}",
                    self.node, self.address
                );
                ctx.recorder
                    .warning(svc, "FailedToBindNodePort", &msg)
                    .await;
            }
        }
        Ok(Action::RequeueAfter(REBIND_AFTER))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn node_port_service_plans_ready_endpoints_of_the_matching_port() {
        let svc = json!({"spec": {"type": "NodePort", "ports": [
            {"name": "http", "port": 80, "nodePort": 30080, "protocol": "TCP"},
            {"name": "metrics", "port": 9090, "nodePort": 30090}]}});
        let ep = json!({"subsets": [{"addresses": [{"ip": "172.17.0.2"}, {"ip": "172.17.0.3"}],
            "notReadyAddresses": [{"ip": "172.17.0.9"}],
            "ports": [{"name": "http", "port": 8080}, {"name": "metrics", "port": 9100}]}]});
        let plans = plan(&svc, Some(&ep));
        assert_eq!(plans.len(), 2);
        assert_eq!(plans[0].node_port, 30080);
        assert_eq!(
            plans[0].backends,
            vec![
                "172.17.0.2:8080".parse::<SocketAddr>().unwrap(),
                "172.17.0.3:8080".parse().unwrap()
            ]
        );
        assert_eq!(plans[1].backends[0].port(), 9100);
    }

    #[test]
    fn cluster_ip_services_are_not_listened_for() {
        let svc = json!({"spec": {"type": "ClusterIP", "ports": [{"port": 80}]}});
        assert!(plan(&svc, None).is_empty());
    }

    #[test]
    fn client_ip_affinity_defaults_to_three_hours() {
        let svc = json!({"spec": {"sessionAffinity": "ClientIP"}});
        assert_eq!(affinity(&svc), Some(Duration::from_secs(10_800)));
        assert_eq!(affinity(&json!({"spec": {}})), None);
    }
}
