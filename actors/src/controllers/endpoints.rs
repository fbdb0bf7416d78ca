//! The endpoints controller (Kubernetes' service controller for Endpoints): for every
//! Service with a selector, keeps an Endpoints object of the same name listing the IPs of
//! the matching pods, ready ones under `addresses` and the others under
//! `notReadyAddresses`, with each service port resolved to the pod's port number.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde_json::{json, Value};
use tracing::Instrument;

use super::pods;
use crate::api::selector::LabelSelector;
use crate::api::{meta, ApiError};
use crate::client::EventKind;
use crate::runtime::{
    key_of, split_key, Action, Change, Context, InformerSpec, ReconcileError, Reconciler,
};

/// Keeps one Endpoints object per selector-bearing Service.
#[derive(Debug, Default, Clone, Copy)]
pub struct EndpointsController;

impl EndpointsController {
    pub fn new() -> Self {
        EndpointsController
    }
}

/// The selector of a service, or `None` when it has none: such a service's Endpoints are
/// written by the user, and this controller must leave them alone.
pub(crate) fn selector_of(service: &Value) -> Option<LabelSelector> {
    let map = service.pointer("/spec/selector")?.as_object()?;
    if map.is_empty() {
        return None;
    }
    let labels: BTreeMap<String, String> = map
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
        .collect();
    Some(LabelSelector::from_match_labels(&labels))
}

fn service_ports(service: &Value) -> &[Value] {
    service
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

fn protocol_of(port: &Value) -> &str {
    port.get("protocol")
        .and_then(Value::as_str)
        .unwrap_or("TCP")
}

/// The port number a service port reaches on one pod: a numeric `targetPort` is taken as
/// is, a named one is looked up among the pod's container ports (same name and protocol,
/// as Kubernetes' `FindPort`), and a missing one means "same as `port`".
pub(crate) fn resolve_port(svc_port: &Value, pod: &Value) -> Option<i64> {
    match svc_port.get("targetPort") {
        Some(Value::Number(n)) => n.as_i64().filter(|p| *p > 0),
        Some(Value::String(name)) if !name.is_empty() => {
            let protocol = protocol_of(svc_port);
            pod.pointer("/spec/containers")
                .and_then(Value::as_array)?
                .iter()
                .filter_map(|c| c.get("ports").and_then(Value::as_array))
                .flatten()
                .find(|p| {
                    p.get("name").and_then(Value::as_str) == Some(name.as_str())
                        && protocol_of(p) == protocol
                })
                .and_then(|p| p.get("containerPort").and_then(Value::as_i64))
        }
        _ => svc_port.get("port").and_then(Value::as_i64),
    }
}

/// One resolved port of an Endpoints subset.
fn endpoint_port(svc_port: &Value, number: i64) -> Value {
    let mut port = json!({"port": number, "protocol": protocol_of(svc_port)});
    if let Some(name) = svc_port
        .get("name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
    {
        port["name"] = json!(name);
    }
    port
}

/// Whether a pod belongs in the Endpoints at all: it needs an IP, and a pod that is being
/// deleted or has finished must not receive new traffic.
fn is_eligible(pod: &Value, publish_not_ready: bool) -> bool {
    let has_ip = pod
        .pointer("/status/podIP")
        .and_then(Value::as_str)
        .is_some_and(|ip| !ip.is_empty());
    has_ip && !pods::is_terminated(pod) && (publish_not_ready || !pods::is_deleting(pod))
}

fn address_of(pod: &Value, service: &str) -> Value {
    let mut address = json!({
        "ip": pod.pointer("/status/podIP").and_then(Value::as_str).unwrap_or_default(),
        "targetRef": {
            "kind": "Pod",
            "name": meta::name(pod),
            "namespace": meta::namespace(pod),
            "uid": meta::uid(pod),
        },
    });
    if let Some(node) = pods::node_name(pod) {
        address["nodeName"] = json!(node);
    }
    // A pod naming this service as its subdomain is known by its hostname under it
    // (`<hostname>.<service>.<namespace>.svc`), as the endpoints controller records it.
    let text = |p: &str| {
        pod.pointer(p)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
    if let (Some(host), Some(sub)) = (text("/spec/hostname"), text("/spec/subdomain")) {
        if sub == service {
            address["hostname"] = json!(host);
        }
    }
    address
}

/// What a service's Endpoints should hold.
#[derive(Debug, Default, PartialEq)]
struct Desired {
    subsets: Vec<Value>,
    /// Service ports whose named `targetPort` no selected pod exposes.
    unresolved: Vec<String>,
}

/// One subset being built: the ports its pods serve and their addresses.
#[derive(Debug, Default)]
struct Subset {
    ports: Vec<Value>,
    ready: Vec<Value>,
    not_ready: Vec<Value>,
}

/// Addresses grouped by the exact set of ports they serve, as Kubernetes' `RepackSubsets`
/// does: pods whose containers name their ports differently cannot share a subset.
fn desired_subsets(service: &Value, selected: &[Arc<Value>]) -> Desired {
    let ports = service_ports(service);
    let publish_not_ready = service
        .pointer("/spec/publishNotReadyAddresses")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    // Keyed by the serialized port list.
    let mut groups: BTreeMap<String, Subset> = BTreeMap::new();
    let mut resolved_somewhere = vec![false; ports.len()];
    let mut any_pod = false;
    for pod in selected
        .iter()
        .filter(|p| is_eligible(p, publish_not_ready))
    {
        any_pod = true;
        let mut pod_ports = Vec::new();
        for (i, svc_port) in ports.iter().enumerate() {
            if let Some(number) = resolve_port(svc_port, pod) {
                resolved_somewhere[i] = true;
                pod_ports.push(endpoint_port(svc_port, number));
            }
        }
        // A pod that serves none of the service's ports cannot take its traffic.
        if !ports.is_empty() && pod_ports.is_empty() {
            continue;
        }
        let group_key = Value::Array(pod_ports.clone()).to_string();
        let group = groups.entry(group_key).or_insert_with(|| Subset {
            ports: pod_ports,
            ..Subset::default()
        });
        if publish_not_ready || pods::is_ready(pod) {
            group
                .ready
                .push(address_of(pod, meta::name(service).unwrap_or_default()));
        } else {
            group
                .not_ready
                .push(address_of(pod, meta::name(service).unwrap_or_default()));
        }
    }
    let by_ip = |a: &Value, b: &Value| {
        let ip = |v: &Value| {
            v.get("ip")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        ip(a).cmp(&ip(b))
    };
    let subsets = groups
        .into_values()
        .map(
            |Subset {
                 ports,
                 mut ready,
                 mut not_ready,
             }| {
                ready.sort_by(by_ip);
                not_ready.sort_by(by_ip);
                let mut subset = json!({});
                if !ready.is_empty() {
                    subset["addresses"] = Value::Array(ready);
                }
                if !not_ready.is_empty() {
                    subset["notReadyAddresses"] = Value::Array(not_ready);
                }
                if !ports.is_empty() {
                    subset["ports"] = Value::Array(ports);
                }
                subset
            },
        )
        .collect();
    let unresolved = if any_pod {
        ports
            .iter()
            .zip(&resolved_somewhere)
            .filter(|(_, resolved)| !**resolved)
            .map(|(p, _)| describe_port(p))
            .collect()
    } else {
        Vec::new()
    };
    Desired {
        subsets,
        unresolved,
    }
}

fn describe_port(port: &Value) -> String {
    let name = port.get("name").and_then(Value::as_str).unwrap_or("");
    let target = match port.get("targetPort") {
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
        None => String::new(),
    };
    if name.is_empty() {
        format!("targetPort {target:?}")
    } else {
        format!("port {name:?} (targetPort {target:?})")
    }
}

/// `null` and a missing field mean the same as an empty list or map.
fn or_empty(v: Option<&Value>, empty: Value) -> Value {
    match v {
        None | Some(Value::Null) => empty,
        Some(v) => v.clone(),
    }
}

fn needs_update(existing: &Value, subsets: &[Value], labels: &Value) -> bool {
    or_empty(existing.get("subsets"), json!([])) != Value::Array(subsets.to_vec())
        || or_empty(existing.pointer("/metadata/labels"), json!({})) != *labels
}

#[async_trait::async_trait]
impl Reconciler for EndpointsController {
    fn name(&self) -> &'static str {
        "endpoints-controller"
    }

    fn informers(&self) -> Vec<InformerSpec> {
        vec![
            InformerSpec::all("services"),
            InformerSpec::all("pods"),
            InformerSpec::all("endpoints"),
        ]
    }

    fn keys_for(&self, resource: &str, change: &Change, ctx: &Context) -> Vec<String> {
        match resource {
            "services" => vec![key_of(&change.object)],
            "pods" => {
                let ns = meta::namespace(&change.object).unwrap_or_default();
                let mut keys = BTreeSet::new();
                for service in ctx.cache("services").list_namespace(ns) {
                    let Some(selector) = selector_of(&service) else {
                        continue;
                    };
                    // Old labels too: a pod relabelled out of a service must leave it.
                    let matches = [Some(&change.object), change.old.as_ref()]
                        .into_iter()
                        .flatten()
                        .any(|p| selector.matches_object(p));
                    if matches {
                        keys.insert(key_of(&service));
                    }
                }
                keys.into_iter().collect()
            }
            // Someone removed or edited Endpoints this controller owns: put them back.
            "endpoints" if change.kind != EventKind::Added => {
                let key = key_of(&change.object);
                let managed = ctx
                    .cache("services")
                    .get(&key)
                    .is_some_and(|s| selector_of(&s).is_some());
                if managed {
                    vec![key]
                } else {
                    vec![]
                }
            }
            _ => vec![],
        }
    }

    async fn reconcile(&self, key: &str, ctx: &Context) -> Result<Action, ReconcileError> {
        let span = tracing::debug_span!("sync_endpoints", service = %key);
        self.sync(key, ctx).instrument(span).await
    }
}

impl EndpointsController {
    async fn sync(&self, key: &str, ctx: &Context) -> Result<Action, ReconcileError> {
        let (ns, name) = split_key(key);
        let ns = ns.unwrap_or("default");
        let existing = ctx.cache("endpoints").get(key);
        let Some(service) = ctx.cache("services").get(key) else {
            // The Service is gone: its Endpoints go with it.
            if existing.is_some() {
                match ctx.client.delete("endpoints", Some(ns), name, None).await {
                    Ok(_) | Err(ApiError::NotFound { .. }) => {
                        tracing::debug!("deleted endpoints of a deleted service")
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            return Ok(Action::Done);
        };
        let Some(selector) = selector_of(&service) else {
            return Ok(Action::Done);
        };
        let selected: Vec<_> = ctx
            .cache("pods")
            .list_namespace(ns)
            .into_iter()
            .filter(|p| selector.matches_object(p))
            .collect();
        let desired = desired_subsets(&service, &selected);
        for port in &desired.unresolved {
            let msg = format!(
                "Service {port} matches no container port of any selected pod; the port is left out of the Endpoints"
            );
            ctx.recorder
                .warning(&service, "FailedToResolvePort", &msg)
                .await;
        }
        let labels = or_empty(service.pointer("/metadata/labels"), json!({}));
        let wrote = self
            .write(
                ctx,
                ns,
                name,
                existing.as_deref(),
                &desired.subsets,
                &labels,
            )
            .await;
        match wrote {
            // The cache was behind the store: read the current object and try once more,
            // rather than waiting out a backoff for a race that is normal.
            Err(ApiError::Conflict { .. }) | Err(ApiError::AlreadyExists { .. }) => {
                let fresh = match ctx.client.get("endpoints", Some(ns), name).await {
                    Ok(v) => Some(v),
                    Err(ApiError::NotFound { .. }) => None,
                    Err(e) => return Err(e.into()),
                };
                self.write(ctx, ns, name, fresh.as_ref(), &desired.subsets, &labels)
                    .await?;
            }
            other => other?,
        }
        Ok(Action::Done)
    }

    /// Create the Endpoints, or update them if they differ; the update carries the read
    /// resourceVersion so a concurrent writer is never overwritten blindly.
    async fn write(
        &self,
        ctx: &Context,
        ns: &str,
        name: &str,
        existing: Option<&Value>,
        subsets: &[Value],
        labels: &Value,
    ) -> Result<(), ApiError> {
        match existing {
            None => {
                let endpoints = json!({
                    "apiVersion": "v1",
                    "kind": "Endpoints",
                    "metadata": {"name": name, "namespace": ns, "labels": labels},
                    "subsets": subsets,
                });
                ctx.client
                    .create("endpoints", Some(ns), endpoints)
                    .await
                    .map(|_| tracing::debug!(subsets = subsets.len(), "created endpoints"))
            }
            Some(current) if needs_update(current, subsets, labels) => {
                let mut updated = current.clone();
                updated["subsets"] = Value::Array(subsets.to_vec());
                meta::metadata_mut(&mut updated).insert("labels".into(), labels.clone());
                ctx.client
                    .update("endpoints", Some(ns), name, None, updated)
                    .await
                    .map(|_| tracing::debug!(subsets = subsets.len(), "updated endpoints"))
            }
            Some(_) => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, ip: &str, ready: bool, ports: Value) -> Arc<Value> {
        Arc::new(json!({
            "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}"),
                "labels": {"app": "web"}},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "i", "ports": ports}]},
            "status": {"podIP": ip, "phase": "Running",
                "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]},
        }))
    }

    fn service(ports: Value) -> Value {
        json!({"metadata": {"name": "web", "namespace": "default"},
            "spec": {"selector": {"app": "web"}, "ports": ports}})
    }

    #[test]
    fn numeric_target_port_is_used_as_is_and_missing_one_means_the_service_port() {
        let p = pod("a", "10.0.0.1", true, json!([]));
        assert_eq!(
            resolve_port(&json!({"port": 80, "targetPort": 8080}), &p),
            Some(8080)
        );
        assert_eq!(resolve_port(&json!({"port": 80}), &p), Some(80));
    }

    #[test]
    fn named_target_port_resolves_to_the_container_port_of_that_name_and_protocol() {
        let p = pod(
            "a",
            "10.0.0.1",
            true,
            json!([{"name": "dns", "containerPort": 53, "protocol": "UDP"},
                {"name": "http", "containerPort": 8080}]),
        );
        assert_eq!(
            resolve_port(&json!({"port": 80, "targetPort": "http"}), &p),
            Some(8080)
        );
        assert_eq!(
            resolve_port(
                &json!({"port": 53, "targetPort": "dns", "protocol": "UDP"}),
                &p
            ),
            Some(53)
        );
        assert_eq!(
            resolve_port(&json!({"port": 53, "targetPort": "dns"}), &p),
            None
        );
        assert_eq!(
            resolve_port(&json!({"port": 80, "targetPort": "nope"}), &p),
            None
        );
    }

    #[test]
    fn ready_and_not_ready_pods_land_in_separate_address_lists() {
        let svc =
            service(json!([{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}]));
        let pods = [
            pod("b", "10.0.0.2", true, json!([])),
            pod("a", "10.0.0.1", true, json!([])),
            pod("c", "10.0.0.3", false, json!([])),
        ];
        let d = desired_subsets(&svc, &pods);
        assert_eq!(d.subsets.len(), 1);
        let s = &d.subsets[0];
        let ips: Vec<_> = s["addresses"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["ip"].clone())
            .collect();
        assert_eq!(ips, [json!("10.0.0.1"), json!("10.0.0.2")]);
        assert_eq!(s["notReadyAddresses"][0]["ip"], "10.0.0.3");
        assert_eq!(
            s["addresses"][0]["targetRef"],
            json!({"kind": "Pod", "name": "a",
            "namespace": "default", "uid": "uid-a"})
        );
        assert_eq!(s["addresses"][0]["nodeName"], "n1");
        assert_eq!(
            s["ports"],
            json!([{"name": "http", "port": 8080, "protocol": "TCP"}])
        );
        assert!(d.unresolved.is_empty());
    }

    #[test]
    fn pods_that_resolve_a_named_port_differently_get_separate_subsets() {
        let svc =
            service(json!([{"name": "http", "port": 80, "targetPort": "web", "protocol": "TCP"}]));
        let pods = [
            pod(
                "a",
                "10.0.0.1",
                true,
                json!([{"name": "web", "containerPort": 8080}]),
            ),
            pod(
                "b",
                "10.0.0.2",
                true,
                json!([{"name": "web", "containerPort": 9090}]),
            ),
            pod(
                "c",
                "10.0.0.3",
                true,
                json!([{"name": "web", "containerPort": 8080}]),
            ),
        ];
        let d = desired_subsets(&svc, &pods);
        assert_eq!(d.subsets.len(), 2);
        let by_port: BTreeMap<i64, usize> = d
            .subsets
            .iter()
            .map(|s| {
                (
                    s["ports"][0]["port"].as_i64().unwrap(),
                    s["addresses"].as_array().unwrap().len(),
                )
            })
            .collect();
        assert_eq!(by_port, BTreeMap::from([(8080, 2), (9090, 1)]));
    }

    #[test]
    fn a_port_name_no_pod_has_is_reported_and_left_out() {
        let svc = service(json!([
            {"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"},
            {"name": "metrics", "port": 9100, "targetPort": "metrics", "protocol": "TCP"},
        ]));
        let d = desired_subsets(&svc, &[pod("a", "10.0.0.1", true, json!([]))]);
        assert_eq!(
            d.subsets[0]["ports"],
            json!([{"name": "http", "port": 8080, "protocol": "TCP"}])
        );
        assert_eq!(
            d.unresolved,
            vec!["port \"metrics\" (targetPort \"metrics\")".to_string()]
        );
    }

    #[test]
    fn pods_without_an_ip_or_being_deleted_or_finished_are_skipped() {
        let svc = service(json!([{"port": 80}]));
        let mut deleting = (*pod("d", "10.0.0.4", true, json!([]))).clone();
        deleting["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        let mut done = (*pod("f", "10.0.0.5", false, json!([]))).clone();
        done["status"]["phase"] = json!("Succeeded");
        let pods = [
            pod("n", "", true, json!([])),
            Arc::new(deleting),
            Arc::new(done),
        ];
        let d = desired_subsets(&svc, &pods);
        assert!(d.subsets.is_empty());
        assert!(
            d.unresolved.is_empty(),
            "no pods, nothing to resolve against"
        );
    }

    #[test]
    fn publish_not_ready_addresses_lists_every_pod_as_ready() {
        let mut svc = service(json!([{"port": 80}]));
        svc["spec"]["publishNotReadyAddresses"] = json!(true);
        let d = desired_subsets(&svc, &[pod("a", "10.0.0.1", false, json!([]))]);
        assert_eq!(d.subsets[0]["addresses"][0]["ip"], "10.0.0.1");
        assert!(d.subsets[0].get("notReadyAddresses").is_none());
    }

    #[test]
    fn services_without_a_selector_are_not_managed() {
        assert!(selector_of(&json!({"spec": {"ports": []}})).is_none());
        assert!(selector_of(&json!({"spec": {"selector": {}}})).is_none());
        assert!(selector_of(&service(json!([]))).is_some());
    }

    #[test]
    fn unchanged_endpoints_need_no_update() {
        let existing =
            json!({"metadata": {"name": "web"}, "subsets": [{"addresses": [{"ip": "10.0.0.1"}]}]});
        assert!(!needs_update(
            &existing,
            &[json!({"addresses": [{"ip": "10.0.0.1"}]})],
            &json!({})
        ));
        assert!(needs_update(&existing, &[], &json!({})));
        assert!(!needs_update(&json!({"metadata": {}}), &[], &json!({})));
        assert!(needs_update(
            &json!({"metadata": {}}),
            &[],
            &json!({"app": "web"})
        ));
    }
}
