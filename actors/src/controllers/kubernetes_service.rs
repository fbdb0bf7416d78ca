//! The `kubernetes` Service in `default` and its Endpoints, which kube-apiserver's
//! bootstrap controller keeps: the first address of the service range, port 443 named
//! `https` to the API server's port, and Endpoints naming the API server's advertised
//! address, so that a pod's in-cluster configuration
//! (`KUBERNETES_SERVICE_HOST`/`_PORT`) reaches the API. Changed or deleted, they are put
//! back. The gateway's start creates them first (before any client could take the
//! address); this loop keeps them.

use serde_json::{json, Value};

use crate::api::ApiError;
use crate::runtime::{Action, Change, Context, InformerSpec, ReconcileError, Reconciler};

pub const NAMESPACE: &str = "default";
pub const NAME: &str = "kubernetes";
const KEY: &str = "default/kubernetes";
const SERVICES: &str = "services";
const ENDPOINTS: &str = "endpoints";
pub const PORT_NAME: &str = "https";
pub const SERVICE_PORT: u16 = 443;

/// Where the API server is, as the Service and Endpoints must say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubernetesServiceConfig {
    /// The first address of the service range.
    pub cluster_ip: String,
    /// The API server's advertised address and port.
    pub address: String,
    pub port: u16,
}

impl KubernetesServiceConfig {
    fn ports(&self) -> Value {
        json!([{"name": PORT_NAME, "port": SERVICE_PORT, "protocol": "TCP", "targetPort": self.port}])
    }

    /// The Service as kube-apiserver creates it.
    pub fn service(&self) -> Value {
        json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": NAME, "namespace": NAMESPACE,
                "labels": {"component": "apiserver", "provider": "kubernetes"}},
            "spec": {"type": "ClusterIP", "clusterIP": self.cluster_ip,
                "clusterIPs": [self.cluster_ip], "sessionAffinity": "None",
                "ports": self.ports()}})
    }

    fn subsets(&self) -> Value {
        json!([{"addresses": [{"ip": self.address}],
            "ports": [{"name": PORT_NAME, "port": self.port, "protocol": "TCP"}]}])
    }

    /// The Endpoints naming the API server.
    pub fn endpoints(&self) -> Value {
        json!({"apiVersion": "v1", "kind": "Endpoints",
            "metadata": {"name": NAME, "namespace": NAMESPACE,
                "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
            "subsets": self.subsets()})
    }

    /// Whether a Service's ports are as they must be (its cluster IP cannot change).
    fn service_ok(&self, svc: &Value) -> bool {
        let ports = svc.pointer("/spec/ports").cloned().unwrap_or(Value::Null);
        let want = self.ports();
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

pub struct KubernetesServiceController {
    config: KubernetesServiceConfig,
}

impl KubernetesServiceController {
    pub fn new(config: KubernetesServiceConfig) -> Self {
        KubernetesServiceController { config }
    }

    async fn ensure_service(&self, ctx: &Context) -> Result<(), ApiError> {
        let current = ctx.cache(SERVICES).get(KEY);
        match current {
            None => match ctx
                .client
                .create(SERVICES, Some(NAMESPACE), self.config.service())
                .await
            {
                Ok(_) | Err(ApiError::AlreadyExists { .. }) => Ok(()),
                Err(e) => Err(e),
            },
            Some(svc) if self.config.service_ok(&svc) => Ok(()),
            Some(svc) => {
                tracing::info!("restoring the kubernetes service's ports");
                let mut fixed = (*svc).clone();
                fixed["spec"]["ports"] = self.config.ports();
                fixed["spec"]["type"] = json!("ClusterIP");
                if let Some(spec) = fixed["spec"].as_object_mut() {
                    spec.remove("selector");
                }
                ctx.client
                    .update(SERVICES, Some(NAMESPACE), NAME, None, fixed)
                    .await
                    .map(|_| ())
            }
        }
    }

    async fn ensure_endpoints(&self, ctx: &Context) -> Result<(), ApiError> {
        match ctx.cache(ENDPOINTS).get(KEY) {
            None => match ctx
                .client
                .create(ENDPOINTS, Some(NAMESPACE), self.config.endpoints())
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
                    .update(ENDPOINTS, Some(NAMESPACE), NAME, None, fixed)
                    .await
                    .map(|_| ())
            }
        }
    }
}

#[async_trait::async_trait]
impl Reconciler for KubernetesServiceController {
    fn name(&self) -> &'static str {
        "kubernetes-service-controller"
    }

    fn informers(&self) -> Vec<InformerSpec> {
        vec![InformerSpec::all(SERVICES), InformerSpec::all(ENDPOINTS)]
    }

    fn keys_for(&self, _resource: &str, change: &Change, _ctx: &Context) -> Vec<String> {
        let text = |p: &str| change.object.pointer(p).and_then(Value::as_str);
        if text("/metadata/name") == Some(NAME) && text("/metadata/namespace") == Some(NAMESPACE) {
            vec![KEY.to_string()]
        } else {
            Vec::new()
        }
    }

    async fn reconcile(&self, _key: &str, ctx: &Context) -> Result<Action, ReconcileError> {
        self.ensure_service(ctx).await?;
        self.ensure_endpoints(ctx).await?;
        Ok(Action::Done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> KubernetesServiceConfig {
        KubernetesServiceConfig {
            cluster_ip: "10.96.0.1".into(),
            address: "192.168.1.5".into(),
            port: 6443,
        }
    }

    #[test]
    fn the_service_sends_443_to_the_api_servers_port() {
        let svc = cfg().service();
        assert_eq!(svc["spec"]["clusterIP"], "10.96.0.1");
        assert_eq!(
            svc["spec"]["ports"][0],
            json!({"name": "https", "port": 443, "protocol": "TCP", "targetPort": 6443})
        );
        assert!(cfg().service_ok(&svc));
        let mut changed = svc.clone();
        changed["spec"]["ports"][0]["targetPort"] = json!(8443);
        assert!(!cfg().service_ok(&changed));
        let ep = cfg().endpoints();
        assert_eq!(ep["subsets"][0]["addresses"][0]["ip"], "192.168.1.5");
        assert_eq!(ep["subsets"][0]["ports"][0]["port"], 6443);
    }
}
