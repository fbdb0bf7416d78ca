//! The node proxy (kube-proxy): for every port of a NodePort Service, listen on the node's
//! address at the node port and forward each TCP connection to an endpoint of the
//! service (ready ones, or terminating ones still serving when none is), round-robin. It
//! runs as a reconciler in the runtime's controller loop, on the process's shared Service
//! and EndpointSlice informers (every in-process node's proxy reads the same caches), one
//! reconcile per Service.

pub mod backends;
pub mod kernel;
pub mod slices;

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
const SLICES: &str = crate::api::kinds::endpoint_slice::RESOURCE;
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
    /// The host's kernel rules serve this node's address: nothing to listen for.
    kernel_serves: bool,
    /// Why this node's ports are served here rather than by the kernel, said once (a
    /// log line at start, an Event on the Node at the first sync).
    userspace_reason: Mutex<Option<String>>,
}

impl ProxyReconciler {
    /// A proxy for `node` at `address`. `kernel`: whether this host programs Services
    /// into its kernel; then the kernel serves node ports on every address but loopback
    /// ones, and this proxy only those.
    pub fn new(node: impl Into<String>, address: IpAddr, kernel: bool) -> Self {
        let node = node.into();
        let kernel_serves = kernel && !address.is_loopback();
        let reason = if kernel_serves {
            None
        } else if kernel {
            Some(format!("node {node}: its address {address} is a loopback address, which the kernel does not forward to pods; its node ports and load balancer ports are served by the userspace proxy"))
        } else {
            Some(format!("node {node}: Services are not programmed into this host's kernel (no nft, or [proxy] cluster_ip = \"none\"); its node ports and load balancer ports are served by the userspace proxy"))
        };
        if let Some(r) = &reason {
            tracing::info!(node = %node, "{r}");
        }
        ProxyReconciler {
            node,
            address,
            listeners: Mutex::new(HashMap::new()),
            kernel_serves,
            userspace_reason: Mutex::new(reason),
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

/// Whether the service load balancer lists `address` in the Service's ingress.
fn balanced_on(svc: &Value, address: IpAddr) -> bool {
    svc.pointer("/status/loadBalancer/ingress")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|i| {
            i.get("ip")
                .and_then(Value::as_str)
                .and_then(|s| s.parse::<IpAddr>().ok())
                == Some(address)
        })
}

/// The service ports to listen on at `address`, with the endpoints behind each: the node
/// port of NodePort and LoadBalancer Services, and the port itself of LoadBalancer
/// Services whose ingress names this address.
/// With `externalTrafficPolicy: Local`, only the endpoints on `node` are used.
pub fn plan(
    svc: &Value,
    endpoints: &[slices::SliceEndpoint],
    node: &str,
    address: IpAddr,
) -> Vec<PortPlan> {
    let kind = svc
        .pointer("/spec/type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP");
    if !matches!(kind, "NodePort" | "LoadBalancer") {
        return Vec::new();
    }
    let balanced = kind == "LoadBalancer" && balanced_on(svc, address);
    let local = svc
        .pointer("/spec/externalTrafficPolicy")
        .and_then(Value::as_str)
        == Some("Local");
    let ports = svc
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let single = ports.len() == 1;
    let mut out = Vec::new();
    for p in ports
        .iter()
        .filter(|p| p.get("protocol").and_then(Value::as_str).unwrap_or("TCP") == "TCP")
    {
        let name = p.get("name").and_then(Value::as_str).unwrap_or("");
        let mut backends: Vec<SocketAddr> = slices::targets(endpoints, name, "TCP", single)
            .into_iter()
            .filter(|(_, _, n)| !local || n.as_deref() == Some(node))
            .map(|(ip, port, _)| SocketAddr::new(ip, port))
            .collect();
        backends.sort();
        let node_port = p.get("nodePort").and_then(Value::as_u64).filter(|n| *n > 0);
        let label = |n: u64| {
            if name.is_empty() {
                n.to_string()
            } else {
                name.to_string()
            }
        };
        if let Some(np) = node_port {
            out.push(PortPlan {
                id: label(np),
                node_port: np as u16,
                backends: backends.clone(),
            });
        }
        if let (true, Some(port)) = (balanced, p.get("port").and_then(Value::as_u64)) {
            out.push(PortPlan {
                id: format!("lb/{}", label(port)),
                node_port: port as u16,
                backends,
            });
        }
    }
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
        vec![InformerSpec::all("services"), InformerSpec::all(SLICES)]
    }

    fn keys_for(&self, resource: &str, change: &Change, _ctx: &Context) -> Vec<String> {
        if resource == SLICES {
            // A slice names its Service in a label.
            return slices::service_key(&change.object).into_iter().collect();
        }
        vec![key_of(&change.object)]
    }

    fn workers(&self) -> usize {
        1
    }

    async fn reconcile(&self, key: &str, ctx: &Context) -> Result<Action, ReconcileError> {
        if self.kernel_serves {
            return Ok(Action::Done);
        }
        let reason = self
            .userspace_reason
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(reason) = reason {
            let node = serde_json::json!({"apiVersion": "v1", "kind": "Node",
                "metadata": {"name": self.node}});
            ctx.recorder.normal(&node, "UserspaceProxy", &reason).await;
        }
        let svc = ctx.cache("services").get(key);
        let ns = crate::runtime::split_key(key).0.unwrap_or_default();
        let mine: Vec<Arc<Value>> = ctx
            .cache(SLICES)
            .list_namespace(ns)
            .into_iter()
            .filter(|s| slices::service_key(s).as_deref() == Some(key))
            .collect();
        let endpoints = slices::endpoints(&mine);
        let wanted = svc
            .as_deref()
            .map(|s| plan(s, &endpoints, &self.node, self.address))
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
        let slice = json!({"metadata": {"name": "s", "namespace": "default",
                "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4", "endpoints": [
                {"addresses": ["172.17.0.2"], "conditions": {"ready": true}},
                {"addresses": ["172.17.0.3"]},
                {"addresses": ["172.17.0.9"], "conditions": {"ready": false}}],
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"},
                {"name": "metrics", "port": 9100, "protocol": "TCP"}]});
        let here: IpAddr = "127.0.0.1".parse().unwrap();
        let plans = plan(&svc, &slices::endpoints(&[Arc::new(slice)]), "n1", here);
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
        assert!(plan(&svc, &[], "n1", "127.0.0.1".parse().unwrap()).is_empty());
    }

    #[test]
    fn a_balanced_service_is_listened_for_on_its_port_where_its_ingress_says() {
        let svc = json!({"spec": {"type": "LoadBalancer", "ports": [
                {"name": "http", "port": 8080, "nodePort": 30080}]},
            "status": {"loadBalancer": {"ingress": [{"ip": "127.0.0.1"}]}}});
        let here: IpAddr = "127.0.0.1".parse().unwrap();
        let ports: Vec<(String, u16)> = plan(&svc, &[], "n1", here)
            .into_iter()
            .map(|p| (p.id, p.node_port))
            .collect();
        assert_eq!(ports, [("http".into(), 30080), ("lb/http".into(), 8080)]);
        let elsewhere: IpAddr = "127.0.0.2".parse().unwrap();
        assert_eq!(plan(&svc, &[], "n1", elsewhere).len(), 1);
    }

    #[test]
    fn client_ip_affinity_defaults_to_three_hours() {
        let svc = json!({"spec": {"sessionAffinity": "ClientIP"}});
        assert_eq!(affinity(&svc), Some(Duration::from_secs(10_800)));
        assert_eq!(affinity(&json!({"spec": {}})), None);
    }
}
