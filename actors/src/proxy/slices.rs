//! What the proxies and the cluster DNS read of a Service's EndpointSlices: each
//! endpoint's address, conditions, node, hostname and ports, and which endpoints a
//! service port sends traffic to, as kube-proxy chooses them: the ready ones, or when
//! none is ready, the serving ones that are terminating (so that connections drain to
//! pods still answering while they shut down, rather than failing).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::Value;

use crate::api::kinds::endpoint_slice::SERVICE_NAME_LABEL;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlicePort {
    pub name: String,
    /// `TCP`, `UDP` or `SCTP`.
    pub protocol: String,
    pub port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SliceEndpoint {
    pub ip: IpAddr,
    pub ready: bool,
    pub serving: bool,
    pub terminating: bool,
    pub node: Option<String>,
    pub hostname: Option<String>,
    pub ports: Vec<SlicePort>,
}

/// The Service (`namespace/name`) a slice belongs to.
pub fn service_key(slice: &Value) -> Option<String> {
    let svc = slice
        .pointer("/metadata/labels")?
        .get(SERVICE_NAME_LABEL)?
        .as_str()?;
    let ns = slice.pointer("/metadata/namespace")?.as_str()?;
    Some(format!("{ns}/{svc}"))
}

/// Slices grouped by their Service's key.
pub fn by_service(slices: &[Arc<Value>]) -> HashMap<String, Vec<Arc<Value>>> {
    let mut out: HashMap<String, Vec<Arc<Value>>> = HashMap::new();
    for s in slices {
        if let Some(key) = service_key(s) {
            out.entry(key).or_default().push(s.clone());
        }
    }
    out
}

/// The endpoints of a Service's slices (an address in two slices counts once).
pub fn endpoints(slices: &[Arc<Value>]) -> Vec<SliceEndpoint> {
    let mut out: Vec<SliceEndpoint> = Vec::new();
    for raw in slices {
        let Some(slice) = crate::api::strategy::typed::<EndpointSlice>(raw) else {
            continue;
        };
        let ports: Vec<SlicePort> = slice
            .ports
            .iter()
            .flatten()
            .filter_map(|p| {
                Some(SlicePort {
                    name: p.name.clone().unwrap_or_default(),
                    protocol: p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                    port: u16::try_from(p.port?).ok()?,
                })
            })
            .collect();
        for ep in slice.endpoints.iter().flatten() {
            let c = ep.conditions.clone().unwrap_or_default();
            // Unset conditions mean ready (and so serving), not terminating.
            let ready = c.ready.unwrap_or(true);
            for addr in &ep.addresses {
                let Ok(ip) = addr.parse::<IpAddr>() else {
                    continue;
                };
                if out.iter().any(|e| e.ip == ip) {
                    continue;
                }
                out.push(SliceEndpoint {
                    ip,
                    ready,
                    serving: c.serving.unwrap_or(ready),
                    terminating: c.terminating.unwrap_or(false),
                    node: ep.node_name.clone(),
                    hostname: ep.hostname.clone(),
                    ports: ports.clone(),
                });
            }
        }
    }
    out.sort_by_key(|e| e.ip);
    out
}

/// Where one service port (`name`, `protocol`; a single-port Service matches any name)
/// sends traffic: (address, port, node) of the ready endpoints, or of the serving
/// terminating ones when none is ready.
pub fn targets(
    endpoints: &[SliceEndpoint],
    name: &str,
    protocol: &str,
    single: bool,
) -> Vec<(IpAddr, u16, Option<String>)> {
    let port_of = |e: &SliceEndpoint| {
        e.ports
            .iter()
            .find(|p| (p.name == name || single) && p.protocol == protocol)
            .map(|p| p.port)
    };
    let pick = |keep: &dyn Fn(&SliceEndpoint) -> bool| -> Vec<(IpAddr, u16, Option<String>)> {
        endpoints
            .iter()
            .filter(|e| keep(e))
            .filter_map(|e| Some((e.ip, port_of(e)?, e.node.clone())))
            .collect()
    };
    let ready = pick(&|e| e.ready);
    if !ready.is_empty() {
        return ready;
    }
    pick(&|e| e.serving && e.terminating)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn slice() -> Arc<Value> {
        Arc::new(json!({"metadata": {"name": "web-abc", "namespace": "ns",
                "labels": {SERVICE_NAME_LABEL: "web"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": [
                {"addresses": ["10.0.0.2"], "conditions": {"ready": true}, "nodeName": "n1"},
                {"addresses": ["10.0.0.3"], "conditions": {"ready": false, "serving": true, "terminating": true}},
                {"addresses": ["10.0.0.4"], "conditions": {"ready": false, "serving": false}}]}))
    }

    #[test]
    fn ready_endpoints_take_the_traffic() {
        let eps = endpoints(&[slice()]);
        assert_eq!(eps.len(), 3);
        assert_eq!(
            targets(&eps, "http", "TCP", false),
            [("10.0.0.2".parse().unwrap(), 8080, Some("n1".to_string()))]
        );
        assert!(targets(&eps, "http", "UDP", false).is_empty());
        assert_eq!(
            by_service(&[slice()]).keys().collect::<Vec<_>>(),
            ["ns/web"]
        );
    }

    #[test]
    fn with_none_ready_serving_terminating_endpoints_drain_the_traffic() {
        let mut s = (*slice()).clone();
        s["endpoints"][0]["conditions"]["ready"] = json!(false);
        s["endpoints"][0]["conditions"]["serving"] = json!(false);
        let eps = endpoints(&[Arc::new(s)]);
        assert_eq!(
            targets(&eps, "http", "TCP", false),
            [("10.0.0.3".parse().unwrap(), 8080, None)]
        );
    }
}
