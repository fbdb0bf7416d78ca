//! The built-in service load balancer (k3s's ServiceLB): a LoadBalancer Service is served
//! on the addresses of the Ready nodes, on its own port (the node proxies listen there
//! and forward to the endpoints), and its `status.loadBalancer.ingress` lists those
//! addresses. A node already serving an older LoadBalancer Service on the same port and
//! protocol does not serve a newer one (the port is taken there); a Service no node can
//! serve stays pending with an empty ingress, as in k3s. Services naming a
//! `loadBalancerClass` belong to another implementation and are left alone.

use std::collections::{BTreeSet, HashSet};

use serde_json::{json, Value};

use crate::runtime::{
    key_of, split_key, Action, Change, Context, InformerSpec, ReconcileError, Reconciler,
};

/// A node's address and whether it may serve.
fn node_address(node: &Value) -> Option<String> {
    let addresses = node
        .pointer("/status/addresses")
        .and_then(Value::as_array)?;
    let of = |kind: &str| {
        addresses
            .iter()
            .find(|a| a.get("type").and_then(Value::as_str) == Some(kind))
            .and_then(|a| a.get("address").and_then(Value::as_str))
            .map(str::to_string)
    };
    // k3s prefers the external address when a node has one.
    of("ExternalIP").or_else(|| of("InternalIP"))
}

pub fn is_managed(svc: &Value) -> bool {
    svc.pointer("/spec/type").and_then(Value::as_str) == Some("LoadBalancer")
        && svc
            .pointer("/spec/loadBalancerClass")
            .and_then(Value::as_str)
            .is_none()
}

/// (port, protocol) pairs a Service takes on a node.
fn ports(svc: &Value) -> HashSet<(u64, String)> {
    svc.pointer("/spec/ports")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|p| {
            Some((
                p.get("port").and_then(Value::as_u64)?,
                p.get("protocol")
                    .and_then(Value::as_str)
                    .unwrap_or("TCP")
                    .to_string(),
            ))
        })
        .collect()
}

/// Older first (then by name): who keeps a port when two Services want it.
fn age_key(svc: &Value) -> (String, String) {
    (
        svc.pointer("/metadata/creationTimestamp")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        key_of(svc),
    )
}

/// The addresses that serve `svc`: those of the Ready nodes where none of the `others`
/// (managed LoadBalancer Services older than it) takes one of its ports.
pub fn serving_addresses(svc: &Value, others: &[&Value], nodes: &[&Value]) -> Vec<String> {
    let mine = ports(svc);
    let taken = others
        .iter()
        .filter(|o| is_managed(o) && age_key(o) < age_key(svc))
        .any(|o| !ports(o).is_disjoint(&mine));
    if taken {
        // Every node serves every older LoadBalancer Service, so the port is taken on all.
        return Vec::new();
    }
    let set: BTreeSet<String> = nodes
        .iter()
        .filter(|n| super::pods::condition_true(n, "Ready"))
        .filter(|n| n.pointer("/spec/unschedulable").and_then(Value::as_bool) != Some(true))
        .filter_map(|n| node_address(n))
        .collect();
    set.into_iter().collect()
}

#[derive(Debug, Default)]
pub struct ServiceLbController;

#[async_trait::async_trait]
impl Reconciler for ServiceLbController {
    fn name(&self) -> &'static str {
        "service-lb-controller"
    }

    fn informers(&self) -> Vec<InformerSpec> {
        vec![InformerSpec::all("services"), InformerSpec::all("nodes")]
    }

    fn keys_for(&self, resource: &str, change: &Change, ctx: &Context) -> Vec<String> {
        match resource {
            "services" => vec![key_of(&change.object)],
            // A node coming, going or changing readiness changes every balancer's ingress.
            _ => ctx
                .cache("services")
                .list()
                .iter()
                .filter(|s| is_managed(s))
                .map(|s| key_of(s))
                .collect(),
        }
    }

    async fn reconcile(&self, key: &str, ctx: &Context) -> Result<Action, ReconcileError> {
        let Some(svc) = ctx.cache("services").get(key) else {
            return Ok(Action::Done);
        };
        let (ns, name) = split_key(key);
        let current = svc
            .pointer("/status/loadBalancer/ingress")
            .cloned()
            .unwrap_or(Value::Null);
        let want = if is_managed(&svc) {
            let services = ctx.cache("services").list();
            let others: Vec<&Value> = services
                .iter()
                .map(|s| &**s)
                .filter(|s| key_of(s) != key)
                .collect();
            let nodes = ctx.cache("nodes").list();
            let nodes: Vec<&Value> = nodes.iter().map(|n| &**n).collect();
            let ips = serving_addresses(&svc, &others, &nodes);
            if ips.is_empty() {
                Value::Null
            } else {
                Value::Array(
                    ips.into_iter()
                        .map(|ip| json!({"ip": ip, "ipMode": "VIP"}))
                        .collect(),
                )
            }
        } else if svc
            .pointer("/spec/loadBalancerClass")
            .and_then(Value::as_str)
            .is_some()
        {
            // Another implementation's.
            return Ok(Action::Done);
        } else {
            Value::Null
        };
        let same =
            current == want || (current.as_array().is_some_and(Vec::is_empty) && want.is_null());
        if same {
            return Ok(Action::Done);
        }
        let mut updated = (*svc).clone();
        updated["status"]["loadBalancer"] = if want.is_null() {
            json!({})
        } else {
            json!({"ingress": want})
        };
        ctx.client
            .update("services", ns, name, Some("status"), updated)
            .await?;
        tracing::info!(service = %key, ingress = %want, "load balancer status");
        Ok(Action::Done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, ip: &str, ready: bool) -> Value {
        json!({"metadata": {"name": name}, "status": {
            "addresses": [{"type": "InternalIP", "address": ip}],
            "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}})
    }

    fn lb(name: &str, created: &str, port: u64) -> Value {
        json!({"metadata": {"name": name, "namespace": "default", "creationTimestamp": created},
            "spec": {"type": "LoadBalancer", "ports": [{"port": port, "protocol": "TCP"}]}})
    }

    #[test]
    fn ready_nodes_serve_a_load_balancer() {
        let nodes = [
            node("a", "10.0.0.2", true),
            node("b", "10.0.0.1", true),
            node("c", "10.0.0.3", false),
        ];
        let refs: Vec<&Value> = nodes.iter().collect();
        assert_eq!(
            serving_addresses(&lb("web", "2026-01-01T00:00:00Z", 80), &[], &refs),
            ["10.0.0.1", "10.0.0.2"]
        );
    }

    #[test]
    fn an_older_service_keeps_its_port() {
        let nodes = [node("a", "10.0.0.1", true)];
        let refs: Vec<&Value> = nodes.iter().collect();
        let old = lb("old", "2026-01-01T00:00:00Z", 80);
        let new = lb("new", "2026-01-02T00:00:00Z", 80);
        assert!(serving_addresses(&new, &[&old], &refs).is_empty());
        assert_eq!(serving_addresses(&old, &[&new], &refs), ["10.0.0.1"]);
        let other_port = lb("other", "2026-01-02T00:00:00Z", 81);
        assert_eq!(serving_addresses(&other_port, &[&old], &refs), ["10.0.0.1"]);
    }

    #[test]
    fn a_load_balancer_class_is_someone_elses() {
        let mut svc = lb("web", "2026-01-01T00:00:00Z", 80);
        assert!(is_managed(&svc));
        svc["spec"]["loadBalancerClass"] = json!("example.com/lb");
        assert!(!is_managed(&svc));
    }
}
