//! The EndpointSlice mirroring controller (kube-controller-manager's
//! `endpointslicemirroring`): Endpoints written by hand for a Service without a selector
//! get EndpointSlices that say the same, so that everything reading slices (the proxies,
//! the DNS) sees them. Addresses become ready endpoints, `notReadyAddresses` not-ready
//! ones; at most 1000 per slice. Endpoints labelled
//! `endpointslice.kubernetes.io/skip-mirror: "true"` are left alone, and the slices go
//! when the Endpoints, the Service, or the Service's selector-lessness does.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort};
use serde_json::Value;

use super::endpoint_slice::{
    address_type, chunk, owner_of, service_key_of_slice, DesiredSlice, Groups, SliceSet,
};
use crate::api::kinds::endpoint_slice::{MANAGED_BY_LABEL, RESOURCE, SERVICE_NAME_LABEL};
use crate::client::EventKind;
use crate::runtime::{
    key_of, split_key, Action, Change, Context, InformerSpec, ReconcileError, Reconciler,
};

pub const CONTROLLER_NAME: &str = "endpointslicemirroring-controller.k8s.io";
const SKIP_MIRROR_LABEL: &str = "endpointslice.kubernetes.io/skip-mirror";
/// kube-controller-manager's `--mirroring-max-endpoints-per-subset` default.
const MAX_PER_SLICE: usize = 1000;

fn mirrored_endpoint(addr: &Value, ready: bool) -> Option<(String, Endpoint)> {
    let text = |k: &str| {
        addr.get(k)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    let ip = text("ip")?;
    let kind = address_type(&ip)?;
    let target_ref = addr
        .get("targetRef")
        .filter(|t| !t.is_null())
        .and_then(|t| serde_json::from_value::<ObjectReference>(t.clone()).ok());
    Some((
        kind.to_string(),
        Endpoint {
            addresses: vec![ip],
            conditions: Some(EndpointConditions {
                ready: Some(ready),
                serving: Some(ready),
                terminating: Some(false),
            }),
            hostname: text("hostname"),
            node_name: text("nodeName"),
            target_ref,
            ..Endpoint::default()
        },
    ))
}

/// The slices that mirror an Endpoints object.
pub fn desired_for_endpoints(endpoints: &Value) -> Vec<DesiredSlice> {
    let mut groups = Groups::new();
    for subset in endpoints
        .get("subsets")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let ports: Vec<EndpointPort> = subset
            .get("ports")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|p| EndpointPort {
                name: Some(
                    p.get("name")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string(),
                ),
                port: p.get("port").and_then(Value::as_i64).map(|n| n as i32),
                protocol: Some(
                    p.get("protocol")
                        .and_then(Value::as_str)
                        .unwrap_or("TCP")
                        .to_string(),
                ),
                app_protocol: p
                    .get("appProtocol")
                    .and_then(Value::as_str)
                    .map(str::to_string),
            })
            .collect();
        let list = |k: &str| {
            subset
                .get(k)
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
        };
        let addresses = list("addresses").into_iter().map(|a| (a, true));
        let not_ready = list("notReadyAddresses").into_iter().map(|a| (a, false));
        for (addr, ready) in addresses.chain(not_ready) {
            let Some((kind, ep)) = mirrored_endpoint(&addr, ready) else {
                continue;
            };
            let key = format!(
                "{kind}|{}",
                serde_json::to_string(&ports).unwrap_or_default()
            );
            groups
                .entry(key)
                .or_insert_with(|| (kind, Some(ports.clone()), Vec::new()))
                .2
                .push(ep);
        }
    }
    chunk(groups, MAX_PER_SLICE)
}

fn mirror_labels(endpoints: &Value, service: &str) -> BTreeMap<String, String> {
    let mut labels: BTreeMap<String, String> = endpoints
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter(|(k, _)| *k != MANAGED_BY_LABEL && *k != SERVICE_NAME_LABEL)
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
        .collect();
    labels.insert(SERVICE_NAME_LABEL.into(), service.into());
    labels.insert(MANAGED_BY_LABEL.into(), CONTROLLER_NAME.into());
    labels
}

/// Whether these Endpoints are to be mirrored: their Service exists without a selector,
/// and they do not ask to be skipped.
fn mirrored(endpoints: &Value, service: Option<&Value>) -> bool {
    let Some(service) = service else {
        return false;
    };
    let has_selector = service
        .pointer("/spec/selector")
        .and_then(Value::as_object)
        .is_some_and(|m| !m.is_empty());
    let skip = endpoints
        .pointer("/metadata/labels")
        .and_then(|l| l.get(SKIP_MIRROR_LABEL))
        .and_then(Value::as_str)
        == Some("true");
    !has_selector && !skip
}

#[derive(Debug, Default)]
pub struct EndpointSliceMirroringController;

#[async_trait::async_trait]
impl Reconciler for EndpointSliceMirroringController {
    fn name(&self) -> &'static str {
        "endpointslice-mirroring-controller"
    }

    fn informers(&self) -> Vec<InformerSpec> {
        vec![
            InformerSpec::all("services"),
            InformerSpec::all("endpoints"),
            InformerSpec::all(RESOURCE),
        ]
    }

    fn keys_for(&self, resource: &str, change: &Change, _ctx: &Context) -> Vec<String> {
        match resource {
            "services" | "endpoints" => vec![key_of(&change.object)],
            RESOURCE if change.kind != EventKind::Added => {
                service_key_of_slice(&change.object, CONTROLLER_NAME)
                    .into_iter()
                    .collect()
            }
            _ => Vec::new(),
        }
    }

    async fn reconcile(&self, key: &str, ctx: &Context) -> Result<Action, ReconcileError> {
        let (ns, name) = split_key(key);
        let ns = ns.unwrap_or("default");
        let endpoints = ctx.cache("endpoints").get(key);
        let service = ctx.cache("services").get(key);
        let all: Vec<Arc<Value>> = ctx.cache(RESOURCE).list_namespace(ns);
        let mut set = SliceSet {
            namespace: ns,
            service: name,
            managed_by: CONTROLLER_NAME,
            labels: BTreeMap::new(),
            owner: Default::default(),
            generate_name: format!("{name}-"),
        };
        let existing = set.existing(&all);
        match endpoints
            .as_deref()
            .filter(|e| mirrored(e, service.as_deref()))
        {
            Some(ep) => {
                set.labels = mirror_labels(ep, name);
                set.owner = owner_of(ep, "v1", "Endpoints");
                let desired = desired_for_endpoints(ep);
                set.apply(ctx, existing, desired).await?;
            }
            None if !existing.is_empty() => set.delete_all(ctx, existing).await?,
            None => {}
        }
        tracing::trace!(endpoints = %key, "mirrored");
        Ok(Action::Done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn addresses_mirror_as_ready_and_not_ready_endpoints_with_their_ports() {
        let ep = json!({"metadata": {"name": "ext", "namespace": "ns", "labels": {"team": "a"}},
            "subsets": [{"addresses": [{"ip": "192.0.2.1", "hostname": "one"}],
                "notReadyAddresses": [{"ip": "192.0.2.2"}],
                "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]}]});
        let slices = desired_for_endpoints(&ep);
        assert_eq!(slices.len(), 1);
        let s = &slices[0];
        assert_eq!(s.ports.as_ref().unwrap()[0].port, Some(8080));
        assert_eq!(s.endpoints[0].hostname.as_deref(), Some("one"));
        assert_eq!(
            s.endpoints[0].conditions.as_ref().unwrap().ready,
            Some(true)
        );
        assert_eq!(
            s.endpoints[1].conditions.as_ref().unwrap().ready,
            Some(false)
        );
        let labels = mirror_labels(&ep, "ext");
        assert_eq!(labels["team"], "a");
        assert_eq!(labels[MANAGED_BY_LABEL], CONTROLLER_NAME);
    }

    #[test]
    fn only_selectorless_services_endpoints_are_mirrored_unless_skipped() {
        let ep = json!({"metadata": {"name": "x"}});
        let plain = json!({"spec": {}});
        let selecting = json!({"spec": {"selector": {"app": "x"}}});
        assert!(mirrored(&ep, Some(&plain)));
        assert!(!mirrored(&ep, Some(&selecting)));
        assert!(!mirrored(&ep, None));
        let skip = json!({"metadata": {"name": "x", "labels": {SKIP_MIRROR_LABEL: "true"}}});
        assert!(!mirrored(&skip, Some(&plain)));
    }
}
