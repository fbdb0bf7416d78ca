//! The Services the control plane itself provides, kept as it declares them: selector-less
//! Services at fixed addresses of the service range, with Endpoints and an EndpointSlice
//! naming the server that answers. Changed or deleted, they are put back. The system's start creates them
//! first (before any client could take the address); this loop keeps them.
//!
//! - `default/kubernetes` (kube-apiserver's bootstrap controller): the first address,
//!   port 443 named `https` to the API server's advertised address and port, so that a
//!   pod's in-cluster configuration (`KUBERNETES_SERVICE_HOST`/`_PORT`) reaches the API;
//! - `kube-system/kube-dns`: the tenth address, `dns` (UDP) and `dns-tcp` (TCP) on 53, to
//!   the cluster DNS server.

use serde_json::{json, Value};

use crate::api::ApiError;
use crate::runtime::{Action, Change, Context, InformerSpec, ReconcileError, Reconciler};

const SERVICES: &str = "services";
const ENDPOINTS: &str = "endpoints";
const SLICES: &str = crate::api::kinds::endpoint_slice::RESOURCE;
pub const KUBERNETES_PORT_NAME: &str = "https";
pub const KUBERNETES_SERVICE_PORT: u16 = 443;
pub const DNS_PORT: u16 = 53;

/// One port of a system Service: the Service's port, and where the server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SystemPort {
    pub name: &'static str,
    pub protocol: &'static str,
    pub port: u16,
    pub target: u16,
}

/// A system Service: what its Service and Endpoints must say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SystemService {
    pub namespace: &'static str,
    pub name: &'static str,
    pub labels: Vec<(&'static str, &'static str)>,
    pub cluster_ip: String,
    /// The server's address (the Endpoints' one address).
    pub address: String,
    pub ports: Vec<SystemPort>,
}

impl SystemService {
    /// `default/kubernetes`: 443 to the API server at `address:port`.
    pub fn kubernetes(cluster_ip: String, address: String, port: u16) -> Self {
        SystemService {
            namespace: "default",
            name: "kubernetes",
            labels: vec![("component", "apiserver"), ("provider", "kubernetes")],
            cluster_ip,
            address,
            ports: vec![SystemPort {
                name: KUBERNETES_PORT_NAME,
                protocol: "TCP",
                port: KUBERNETES_SERVICE_PORT,
                target: port,
            }],
        }
    }

    /// `kube-system/kube-dns`: 53 on UDP and TCP to the cluster DNS at `address:port`.
    pub fn kube_dns(cluster_ip: String, address: String, port: u16) -> Self {
        SystemService {
            namespace: "kube-system",
            name: "kube-dns",
            labels: vec![
                ("k8s-app", "kube-dns"),
                ("kubernetes.io/cluster-service", "true"),
                ("kubernetes.io/name", "CoreDNS"),
            ],
            cluster_ip,
            address,
            ports: vec![
                SystemPort {
                    name: "dns",
                    protocol: "UDP",
                    port: DNS_PORT,
                    target: port,
                },
                SystemPort {
                    name: "dns-tcp",
                    protocol: "TCP",
                    port: DNS_PORT,
                    target: port,
                },
            ],
        }
    }

    fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    fn service_ports(&self) -> Value {
        Value::Array(
            self.ports
                .iter()
                .map(|p| json!({"name": p.name, "port": p.port, "protocol": p.protocol, "targetPort": p.target}))
                .collect(),
        )
    }

    /// The Service as the control plane creates it.
    pub fn service(&self) -> Value {
        let labels: serde_json::Map<String, Value> = self
            .labels
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect();
        json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": self.name, "namespace": self.namespace, "labels": labels},
            "spec": {"type": "ClusterIP", "clusterIP": self.cluster_ip,
                "clusterIPs": [self.cluster_ip], "sessionAffinity": "None",
                "ports": self.service_ports()}})
    }

    fn subsets(&self) -> Value {
        let ports: Vec<Value> = self
            .ports
            .iter()
            .map(|p| json!({"name": p.name, "port": p.target, "protocol": p.protocol}))
            .collect();
        json!([{"addresses": [{"ip": self.address}], "ports": ports}])
    }

    /// The Endpoints naming the server.
    pub fn endpoints(&self) -> Value {
        json!({"apiVersion": "v1", "kind": "Endpoints",
            "metadata": {"name": self.name, "namespace": self.namespace,
                "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
            "subsets": self.subsets()})
    }

    fn slice_body(&self) -> (Value, Value, Value) {
        let address_type = match self.address.parse::<std::net::IpAddr>() {
            Ok(std::net::IpAddr::V6(_)) => "IPv6",
            _ => "IPv4",
        };
        let ports: Vec<Value> = self
            .ports
            .iter()
            .map(|p| json!({"name": p.name, "port": p.target, "protocol": p.protocol}))
            .collect();
        (
            json!(address_type),
            json!([{"addresses": [self.address], "conditions": {"ready": true}}]),
            Value::Array(ports),
        )
    }

    /// The EndpointSlice naming the server (the Endpoints are not mirrored: the control
    /// plane writes both, as kube-apiserver does for `kubernetes`).
    pub fn endpoint_slice(&self) -> Value {
        let (address_type, endpoints, ports) = self.slice_body();
        json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": self.name, "namespace": self.namespace,
                "labels": {crate::api::kinds::endpoint_slice::SERVICE_NAME_LABEL: self.name}},
            "addressType": address_type, "endpoints": endpoints, "ports": ports})
    }

    fn slice_ok(&self, slice: &Value) -> bool {
        let (address_type, endpoints, ports) = self.slice_body();
        slice.get("addressType") == Some(&address_type)
            && slice.get("endpoints") == Some(&endpoints)
            && slice.get("ports") == Some(&ports)
    }

    /// Whether a Service's ports are as they must be (its cluster IP cannot change).
    fn service_ok(&self, svc: &Value) -> bool {
        let ports = svc.pointer("/spec/ports").cloned().unwrap_or(Value::Null);
        let want = self.service_ports();
        // Compare the fields we set; the server may have filled in others (nodePort).
        let same = |a: &Value, b: &Value| {
            ["name", "port", "protocol", "targetPort"]
                .iter()
                .all(|f| a.get(*f) == b.get(*f))
        };
        matches!((ports.as_array(), want.as_array()), (Some(p), Some(w)) if p.len() == w.len() && p.iter().zip(w).all(|(a, b)| same(a, b)))
            && svc.pointer("/spec/type").and_then(Value::as_str) == Some("ClusterIP")
            && svc.pointer("/spec/selector").is_none_or(Value::is_null)
    }
}

pub struct SystemServiceController {
    config: SystemService,
    name: &'static str,
}

impl SystemServiceController {
    /// `name`: the controller's, in logs and stats.
    pub fn new(name: &'static str, config: SystemService) -> Self {
        SystemServiceController { config, name }
    }

    async fn ensure_service(&self, ctx: &Context) -> Result<(), ApiError> {
        let ns = Some(self.config.namespace);
        match ctx.cache(SERVICES).get(&self.config.key()) {
            None => match ctx.client.create(SERVICES, ns, self.config.service()).await {
                Ok(_) | Err(ApiError::AlreadyExists { .. }) => Ok(()),
                Err(e) => Err(e),
            },
            Some(svc) if self.config.service_ok(&svc) => Ok(()),
            Some(svc) => {
                tracing::info!(service = %self.config.key(), "restoring the system service's ports");
                let mut fixed = (*svc).clone();
                fixed["spec"]["ports"] = self.config.service_ports();
                fixed["spec"]["type"] = json!("ClusterIP");
                if let Some(spec) = fixed["spec"].as_object_mut() {
                    spec.remove("selector");
                }
                ctx.client
                    .update(SERVICES, ns, self.config.name, None, fixed)
                    .await
                    .map(|_| ())
            }
        }
    }

    async fn ensure_endpoints(&self, ctx: &Context) -> Result<(), ApiError> {
        let ns = Some(self.config.namespace);
        match ctx.cache(ENDPOINTS).get(&self.config.key()) {
            None => match ctx
                .client
                .create(ENDPOINTS, ns, self.config.endpoints())
                .await
            {
                Ok(_) | Err(ApiError::AlreadyExists { .. }) => Ok(()),
                Err(e) => Err(e),
            },
            Some(ep) if ep.get("subsets") == Some(&self.config.subsets()) => Ok(()),
            Some(ep) => {
                let mut fixed = (*ep).clone();
                fixed["subsets"] = self.config.subsets();
                ctx.client
                    .update(ENDPOINTS, ns, self.config.name, None, fixed)
                    .await
                    .map(|_| ())
            }
        }
    }
}

impl SystemServiceController {
    async fn ensure_slice(&self, ctx: &Context) -> Result<(), ApiError> {
        let ns = Some(self.config.namespace);
        match ctx.cache(SLICES).get(&self.config.key()) {
            None => match ctx
                .client
                .create(SLICES, ns, self.config.endpoint_slice())
                .await
            {
                Ok(_) | Err(ApiError::AlreadyExists { .. }) => Ok(()),
                Err(e) => Err(e),
            },
            Some(s) if self.config.slice_ok(&s) => Ok(()),
            Some(s) => {
                let mut fixed = (*s).clone();
                let want = self.config.endpoint_slice();
                for k in ["addressType", "endpoints", "ports"] {
                    fixed[k] = want[k].clone();
                }
                ctx.client
                    .update(SLICES, ns, self.config.name, None, fixed)
                    .await
                    .map(|_| ())
            }
        }
    }
}

#[async_trait::async_trait]
impl Reconciler for SystemServiceController {
    fn name(&self) -> &'static str {
        self.name
    }

    fn informers(&self) -> Vec<InformerSpec> {
        vec![
            InformerSpec::all(SERVICES),
            InformerSpec::all(ENDPOINTS),
            InformerSpec::all(SLICES),
        ]
    }

    fn keys_for(&self, _resource: &str, change: &Change, _ctx: &Context) -> Vec<String> {
        let text = |p: &str| change.object.pointer(p).and_then(Value::as_str);
        if text("/metadata/name") == Some(self.config.name)
            && text("/metadata/namespace") == Some(self.config.namespace)
        {
            vec![self.config.key()]
        } else {
            Vec::new()
        }
    }

    async fn reconcile(&self, _key: &str, ctx: &Context) -> Result<Action, ReconcileError> {
        self.ensure_service(ctx).await?;
        self.ensure_endpoints(ctx).await?;
        self.ensure_slice(ctx).await?;
        Ok(Action::Done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kubernetes_service_sends_443_to_the_api_servers_port() {
        let k = SystemService::kubernetes("10.96.0.1".into(), "192.168.1.5".into(), 6443);
        let svc = k.service();
        assert_eq!(svc["spec"]["clusterIP"], "10.96.0.1");
        assert_eq!(
            svc["spec"]["ports"][0],
            json!({"name": "https", "port": 443, "protocol": "TCP", "targetPort": 6443})
        );
        assert!(k.service_ok(&svc));
        let mut changed = svc.clone();
        changed["spec"]["ports"][0]["targetPort"] = json!(8443);
        assert!(!k.service_ok(&changed));
        let ep = k.endpoints();
        assert_eq!(ep["subsets"][0]["addresses"][0]["ip"], "192.168.1.5");
        assert_eq!(ep["subsets"][0]["ports"][0]["port"], 6443);
        let slice = k.endpoint_slice();
        assert_eq!(
            slice["metadata"]["labels"]["kubernetes.io/service-name"],
            "kubernetes"
        );
        assert_eq!(slice["endpoints"][0]["addresses"][0], "192.168.1.5");
        assert!(k.slice_ok(&slice));
    }

    #[test]
    fn kube_dns_serves_53_on_udp_and_tcp_from_the_dns_servers_port() {
        let d = SystemService::kube_dns("10.96.0.10".into(), "172.17.0.1".into(), 40053);
        let svc = d.service();
        assert_eq!(svc["metadata"]["namespace"], "kube-system");
        assert_eq!(svc["metadata"]["labels"]["k8s-app"], "kube-dns");
        assert_eq!(svc["spec"]["ports"][0]["protocol"], "UDP");
        assert_eq!(svc["spec"]["ports"][1]["name"], "dns-tcp");
        assert_eq!(
            d.endpoints()["subsets"][0]["ports"],
            json!([{"name": "dns", "port": 40053, "protocol": "UDP"},
                {"name": "dns-tcp", "port": 40053, "protocol": "TCP"}])
        );
    }
}
