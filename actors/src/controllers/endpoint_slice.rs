//! The EndpointSlice controller (kube-controller-manager's `endpointslice`): for every
//! Service with a selector, EndpointSlices (discovery.k8s.io/v1) listing the selected
//! pods, at most 100 endpoints each, with each endpoint's conditions as Kubernetes sets
//! them (`serving` = the pod is Ready, `terminating` = it is being deleted, `ready` =
//! serving and not terminating, or always with `publishNotReadyAddresses`), its node and
//! zone. Pods whose containers resolve the Service's ports differently go to different
//! slices. A Service with no endpoints keeps one empty placeholder slice. Slices are
//! owned by their Service (garbage-collected with it) and updated in place, so that
//! watchers see few changes.
//!
//! [`SliceSet`] is the part shared with the mirroring controller: making a set of managed
//! slices of one Service equal to the desired ones.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use serde_json::Value;
use tracing::Instrument;

use super::endpoints::selector_of;
use super::pods;
use crate::api::kinds::endpoint_slice::{MANAGED_BY_LABEL, RESOURCE, SERVICE_NAME_LABEL};
use crate::api::{meta, ApiError};
use crate::client::EventKind;
use crate::runtime::{
    key_of, split_key, Action, Change, Context, InformerSpec, ReconcileError, Reconciler,
};

/// The `managed-by` value of this controller's slices.
pub const CONTROLLER_NAME: &str = "endpointslice-controller.k8s.io";
/// kube-controller-manager's `--max-endpoints-per-slice` default.
pub const DEFAULT_MAX_ENDPOINTS_PER_SLICE: usize = 100;
/// Set on the slices of headless Services.
const HEADLESS_LABEL: &str = "service.kubernetes.io/headless";
const ZONE_LABEL: &str = "topology.kubernetes.io/zone";

/// What one slice should hold.
#[derive(Debug, Clone, PartialEq)]
pub struct DesiredSlice {
    pub address_type: String,
    pub ports: Option<Vec<EndpointPort>>,
    pub endpoints: Vec<Endpoint>,
}

impl DesiredSlice {
    fn group(&self) -> String {
        format!(
            "{}|{}",
            self.address_type,
            serde_json::to_string(&self.ports).unwrap_or_default()
        )
    }
}

fn group_of(slice: &EndpointSlice) -> String {
    format!(
        "{}|{}",
        slice.address_type,
        serde_json::to_string(&slice.ports).unwrap_or_default()
    )
}

/// Endpoints by group key: the address type, the ports they share, the endpoints.
pub type Groups = BTreeMap<String, (String, Option<Vec<EndpointPort>>, Vec<Endpoint>)>;

/// Endpoints grouped by (address type, ports), each group cut into slices of `max`.
pub fn chunk(groups: Groups, max: usize) -> Vec<DesiredSlice> {
    let mut out = Vec::new();
    for (_, (address_type, ports, endpoints)) in groups {
        for part in endpoints.chunks(max.max(1)) {
            out.push(DesiredSlice {
                address_type: address_type.clone(),
                ports: ports.clone(),
                endpoints: part.to_vec(),
            });
        }
    }
    out
}

/// The slice address type of an address.
pub fn address_type(ip: &str) -> Option<&'static str> {
    match ip.parse::<std::net::IpAddr>().ok()? {
        std::net::IpAddr::V4(_) => Some("IPv4"),
        std::net::IpAddr::V6(_) => Some("IPv6"),
    }
}

/// One pod as an endpoint of `service`, with the zone of its node.
pub fn pod_endpoint(service: &Value, pod: &Value, zone: Option<String>) -> Option<Endpoint> {
    let ip = pod
        .pointer("/status/podIP")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())?;
    let publish_not_ready = service
        .pointer("/spec/publishNotReadyAddresses")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let serving = pods::is_ready(pod);
    let terminating = pods::is_deleting(pod);
    let ready = publish_not_ready || (serving && !terminating);
    let text = |p: &str| {
        pod.pointer(p)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    let svc_name = meta::name(service).unwrap_or_default();
    let hostname = match (text("/spec/hostname"), text("/spec/subdomain")) {
        (Some(h), Some(sub)) if sub == svc_name => Some(h),
        _ => None,
    };
    Some(Endpoint {
        addresses: vec![ip.to_string()],
        conditions: Some(EndpointConditions {
            ready: Some(ready),
            serving: Some(serving),
            terminating: Some(terminating),
        }),
        hostname,
        node_name: pods::node_name(pod).map(str::to_string),
        zone,
        target_ref: Some(ObjectReference {
            kind: Some("Pod".into()),
            namespace: meta::namespace(pod).map(str::to_string),
            name: meta::name(pod).map(str::to_string),
            uid: meta::uid(pod).map(str::to_string),
            ..ObjectReference::default()
        }),
        ..Endpoint::default()
    })
}

/// The Service's ports as this pod serves them (a named `targetPort` it lacks is left out).
fn pod_ports(service: &Value, pod: &Value) -> Vec<EndpointPort> {
    service
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|sp| {
            let number = super::endpoints::resolve_port(sp, pod)?;
            Some(EndpointPort {
                name: Some(
                    sp.get("name")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string(),
                ),
                port: Some(number as i32),
                protocol: Some(
                    sp.get("protocol")
                        .and_then(Value::as_str)
                        .unwrap_or("TCP")
                        .to_string(),
                ),
                app_protocol: sp
                    .get("appProtocol")
                    .and_then(Value::as_str)
                    .map(str::to_string),
            })
        })
        .collect()
}

/// The slices a selector-bearing Service should have over its selected pods.
pub fn desired_for_service(
    service: &Value,
    selected: &[Arc<Value>],
    zone_of: impl Fn(&str) -> Option<String>,
    max: usize,
) -> Vec<DesiredSlice> {
    let mut groups = Groups::new();
    let mut sorted: Vec<&Arc<Value>> = selected.iter().collect();
    sorted.sort_by_key(|p| meta::name(p).map(str::to_string));
    for pod in sorted {
        // Finished pods get no traffic; terminating ones stay, marked, for draining.
        if pods::is_terminated(pod) {
            continue;
        }
        let zone = pods::node_name(pod).and_then(&zone_of);
        let Some(ep) = pod_endpoint(service, pod, zone) else {
            continue;
        };
        let Some(kind) = address_type(&ep.addresses[0]) else {
            continue;
        };
        let ports = pod_ports(service, pod);
        let key = format!(
            "{kind}|{}",
            serde_json::to_string(&ports).unwrap_or_default()
        );
        groups
            .entry(key)
            .or_insert_with(|| (kind.to_string(), Some(ports), Vec::new()))
            .2
            .push(ep);
    }
    chunk(groups, max)
}

/// The managed slices of one Service, made equal to the desired ones.
pub struct SliceSet<'a> {
    pub namespace: &'a str,
    pub service: &'a str,
    pub managed_by: &'a str,
    /// The slices' labels (with the service-name and managed-by labels).
    pub labels: BTreeMap<String, String>,
    pub owner: OwnerReference,
    /// Names of new slices start with this.
    pub generate_name: String,
}

impl SliceSet<'_> {
    /// This set's slices among a namespace's.
    pub fn existing(&self, all: &[Arc<Value>]) -> Vec<EndpointSlice> {
        let mut out: Vec<EndpointSlice> = all
            .iter()
            .filter(|s| {
                let label = |k: &str| {
                    s.pointer("/metadata/labels")
                        .and_then(|l| l.get(k))
                        .and_then(Value::as_str)
                };
                label(SERVICE_NAME_LABEL) == Some(self.service)
                    && label(MANAGED_BY_LABEL) == Some(self.managed_by)
            })
            .filter_map(|s| crate::api::strategy::typed::<EndpointSlice>(s))
            .collect();
        out.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        out
    }

    fn build(&self, base: Option<&EndpointSlice>, want: &DesiredSlice) -> EndpointSlice {
        let mut metadata = base
            .map(|b| b.metadata.clone())
            .unwrap_or_else(|| ObjectMeta {
                generate_name: Some(self.generate_name.clone()),
                namespace: Some(self.namespace.to_string()),
                ..ObjectMeta::default()
            });
        metadata.labels = Some(self.labels.clone());
        metadata.owner_references = Some(vec![self.owner.clone()]);
        EndpointSlice {
            address_type: want.address_type.clone(),
            endpoints: Some(want.endpoints.clone()),
            metadata,
            ports: want.ports.clone(),
        }
    }

    fn unchanged(&self, have: &EndpointSlice, want: &DesiredSlice) -> bool {
        have.endpoints.clone().unwrap_or_default() == want.endpoints
            && have.ports == want.ports
            && have.metadata.labels.as_ref() == Some(&self.labels)
            && have.metadata.owner_references.as_deref() == Some(std::slice::from_ref(&self.owner))
    }

    /// Create, update and delete so that the slices are `desired` (an empty desire keeps
    /// one empty placeholder, as Kubernetes does).
    pub async fn apply(
        &self,
        ctx: &Context,
        existing: Vec<EndpointSlice>,
        mut desired: Vec<DesiredSlice>,
    ) -> Result<(), ApiError> {
        if desired.is_empty() {
            desired.push(DesiredSlice {
                address_type: "IPv4".into(),
                ports: None,
                endpoints: Vec::new(),
            });
        }
        let mut pool: BTreeMap<String, Vec<EndpointSlice>> = BTreeMap::new();
        for s in existing {
            pool.entry(group_of(&s)).or_default().push(s);
        }
        let mut creates = Vec::new();
        let mut updates = Vec::new();
        for want in &desired {
            match pool
                .get_mut(&want.group())
                .and_then(|v| (!v.is_empty()).then(|| v.remove(0)))
            {
                Some(have) if self.unchanged(&have, want) => {}
                Some(have) => updates.push(self.build(Some(&have), want)),
                None => creates.push(want),
            }
        }
        // Slices of groups no longer wanted are reused for new groups before any is
        // deleted (the address type cannot change in place).
        let mut leftovers: Vec<EndpointSlice> = pool.into_values().flatten().collect();
        let mut still_creating = Vec::new();
        for want in creates {
            match leftovers
                .iter()
                .position(|s| s.address_type == want.address_type)
            {
                Some(i) => {
                    let have = leftovers.remove(i);
                    updates.push(self.build(Some(&have), want));
                }
                None => still_creating.push(want),
            }
        }
        for slice in updates {
            let name = slice.metadata.name.clone().unwrap_or_default();
            let body = to_object(&slice);
            ctx.client
                .update(RESOURCE, Some(self.namespace), &name, None, body)
                .await?;
            tracing::debug!(slice = %name, "updated endpoint slice");
        }
        for want in still_creating {
            let body = to_object(&self.build(None, want));
            ctx.client
                .create(RESOURCE, Some(self.namespace), body)
                .await?;
            tracing::debug!(service = %self.service, endpoints = want.endpoints.len(), "created endpoint slice");
        }
        self.delete_all(ctx, leftovers).await
    }

    /// Delete every slice of the set.
    pub async fn delete_all(
        &self,
        ctx: &Context,
        existing: Vec<EndpointSlice>,
    ) -> Result<(), ApiError> {
        for slice in existing {
            let name = slice.metadata.name.unwrap_or_default();
            match ctx
                .client
                .delete(RESOURCE, Some(self.namespace), &name, None)
                .await
            {
                Ok(_) | Err(ApiError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// A slice as the API takes it.
pub fn to_object(slice: &EndpointSlice) -> Value {
    let mut v = serde_json::to_value(slice).unwrap_or(Value::Null);
    if let Some(m) = v.as_object_mut() {
        m.insert("apiVersion".into(), "discovery.k8s.io/v1".into());
        m.insert("kind".into(), "EndpointSlice".into());
    }
    v
}

/// The controller reference a Service's slices carry.
pub fn owner_of(obj: &Value, api_version: &str, kind: &str) -> OwnerReference {
    OwnerReference {
        api_version: api_version.into(),
        kind: kind.into(),
        name: meta::name(obj).unwrap_or_default().to_string(),
        uid: meta::uid(obj).unwrap_or_default().to_string(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// The labels of a Service's slices: the Service's own (but the two the controller
/// owns), the service name, the manager, and the headless mark.
fn slice_labels(service: &Value, managed_by: &str) -> BTreeMap<String, String> {
    let mut labels: BTreeMap<String, String> = service
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter(|(k, _)| *k != SERVICE_NAME_LABEL && *k != MANAGED_BY_LABEL)
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
        .collect();
    labels.insert(
        SERVICE_NAME_LABEL.into(),
        meta::name(service).unwrap_or_default().into(),
    );
    labels.insert(MANAGED_BY_LABEL.into(), managed_by.into());
    if service.pointer("/spec/clusterIP").and_then(Value::as_str) == Some("None") {
        labels.insert(HEADLESS_LABEL.into(), String::new());
    }
    labels
}

pub struct EndpointSliceController {
    max_per_slice: usize,
}

impl Default for EndpointSliceController {
    fn default() -> Self {
        EndpointSliceController {
            max_per_slice: DEFAULT_MAX_ENDPOINTS_PER_SLICE,
        }
    }
}

impl EndpointSliceController {
    pub fn new(max_per_slice: usize) -> Self {
        EndpointSliceController { max_per_slice }
    }

    async fn sync(&self, key: &str, ctx: &Context) -> Result<Action, ReconcileError> {
        let (ns, name) = split_key(key);
        let ns = ns.unwrap_or("default");
        let all = ctx.cache(RESOURCE).list_namespace(ns);
        let Some(service) = ctx.cache("services").get(key) else {
            // Garbage collection removes them too; this is quicker and needs no owner.
            let set = self.set_for(ns, name, None);
            let existing = set.existing(&all);
            set.delete_all(ctx, existing).await?;
            return Ok(Action::Done);
        };
        let Some(selector) = selector_of(&service) else {
            return Ok(Action::Done);
        };
        let selected: Vec<Arc<Value>> = ctx
            .cache("pods")
            .list_namespace(ns)
            .into_iter()
            .filter(|p| selector.matches_object(p))
            .collect();
        let nodes = ctx.cache("nodes");
        let zone_of = |node: &str| {
            nodes.get(node).and_then(|n| {
                n.pointer("/metadata/labels")
                    .and_then(|l| l.get(ZONE_LABEL))
                    .and_then(Value::as_str)
                    .map(str::to_string)
            })
        };
        let desired = desired_for_service(&service, &selected, zone_of, self.max_per_slice);
        let set = self.set_for(ns, name, Some(&service));
        let existing = set.existing(&all);
        match set.apply(ctx, existing, desired.clone()).await {
            // The cache was behind: read the slices afresh and try once more.
            Err(ApiError::Conflict { .. }) => {
                let fresh = ctx
                    .client
                    .list(RESOURCE, Some(ns), &crate::client::ListParams::default())
                    .await?;
                set.apply(ctx, set.existing(&fresh.items), desired).await?;
            }
            other => other?,
        }
        Ok(Action::Done)
    }

    fn set_for<'a>(&self, ns: &'a str, name: &'a str, service: Option<&Value>) -> SliceSet<'a> {
        SliceSet {
            namespace: ns,
            service: name,
            managed_by: CONTROLLER_NAME,
            labels: service
                .map(|s| slice_labels(s, CONTROLLER_NAME))
                .unwrap_or_default(),
            owner: service
                .map(|s| owner_of(s, "v1", "Service"))
                .unwrap_or_default(),
            generate_name: format!("{name}-"),
        }
    }
}

/// The Service a managed slice belongs to.
pub fn service_key_of_slice(slice: &Value, managed_by: &str) -> Option<String> {
    let labels = slice.pointer("/metadata/labels")?;
    if labels.get(MANAGED_BY_LABEL).and_then(Value::as_str) != Some(managed_by) {
        return None;
    }
    let svc = labels.get(SERVICE_NAME_LABEL).and_then(Value::as_str)?;
    Some(format!(
        "{}/{svc}",
        meta::namespace(slice).unwrap_or_default()
    ))
}

#[async_trait::async_trait]
impl Reconciler for EndpointSliceController {
    fn name(&self) -> &'static str {
        "endpointslice-controller"
    }

    fn informers(&self) -> Vec<InformerSpec> {
        vec![
            InformerSpec::all("services"),
            InformerSpec::all("pods"),
            InformerSpec::all(RESOURCE),
            InformerSpec::all("nodes"),
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
                    if [Some(&change.object), change.old.as_ref()]
                        .into_iter()
                        .flatten()
                        .any(|p| selector.matches_object(p))
                    {
                        keys.insert(key_of(&service));
                    }
                }
                keys.into_iter().collect()
            }
            // Someone edited or removed a slice this controller manages: put it back.
            RESOURCE if change.kind != EventKind::Added => {
                service_key_of_slice(&change.object, CONTROLLER_NAME)
                    .into_iter()
                    .collect()
            }
            _ => Vec::new(),
        }
    }

    async fn reconcile(&self, key: &str, ctx: &Context) -> Result<Action, ReconcileError> {
        let span = tracing::debug_span!("sync_endpoint_slices", service = %key);
        self.sync(key, ctx).instrument(span).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, ip: &str, ready: bool, port_name: &str, port: i64) -> Arc<Value> {
        Arc::new(
            json!({"metadata": {"name": name, "namespace": "ns", "uid": format!("u-{name}")},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "i",
                "ports": [{"name": port_name, "containerPort": port}]}]},
            "status": {"phase": "Running", "podIP": ip,
                "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}}),
        )
    }

    fn service() -> Value {
        json!({"metadata": {"name": "web", "namespace": "ns", "uid": "s1", "labels": {"app": "web"}},
            "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}})
    }

    #[test]
    fn endpoints_carry_conditions_node_zone_and_the_resolved_port() {
        let pods = vec![
            pod("a", "10.0.0.1", true, "http", 8080),
            pod("b", "10.0.0.2", false, "http", 8080),
        ];
        let slices = desired_for_service(&service(), &pods, |_| Some("z1".into()), 100);
        assert_eq!(slices.len(), 1);
        let s = &slices[0];
        assert_eq!(s.address_type, "IPv4");
        assert_eq!(s.ports.as_ref().unwrap()[0].port, Some(8080));
        let a = &s.endpoints[0];
        assert_eq!(a.addresses, ["10.0.0.1"]);
        assert_eq!(a.conditions.as_ref().unwrap().ready, Some(true));
        assert_eq!(a.node_name.as_deref(), Some("n1"));
        assert_eq!(a.zone.as_deref(), Some("z1"));
        let b = &s.endpoints[1].conditions.as_ref().unwrap();
        assert_eq!(
            (b.ready, b.serving, b.terminating),
            (Some(false), Some(false), Some(false))
        );
    }

    #[test]
    fn a_terminating_pod_stays_serving_but_not_ready() {
        let mut p = (*pod("a", "10.0.0.1", true, "http", 8080)).clone();
        p["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        let slices = desired_for_service(&service(), &[Arc::new(p)], |_| None, 100);
        let c = slices[0].endpoints[0].conditions.clone().unwrap();
        assert_eq!(
            (c.ready, c.serving, c.terminating),
            (Some(false), Some(true), Some(true))
        );
    }

    #[test]
    fn pods_resolving_ports_differently_get_their_own_slices_and_slices_hold_at_most_max() {
        let mut pods: Vec<Arc<Value>> = (0..5)
            .map(|i| pod(&format!("p{i}"), &format!("10.0.0.{i}"), true, "http", 8080))
            .collect();
        pods.push(pod("other", "10.0.1.1", true, "http", 9090));
        let slices = desired_for_service(&service(), &pods, |_| None, 2);
        let sizes: Vec<usize> = slices.iter().map(|s| s.endpoints.len()).collect();
        assert_eq!(sizes, [2, 2, 1, 1]);
        assert_eq!(slices[3].ports.as_ref().unwrap()[0].port, Some(9090));
    }

    #[test]
    fn slice_labels_name_the_service_and_the_manager() {
        let mut svc = service();
        svc["spec"]["clusterIP"] = json!("None");
        let l = slice_labels(&svc, CONTROLLER_NAME);
        assert_eq!(l[SERVICE_NAME_LABEL], "web");
        assert_eq!(l[MANAGED_BY_LABEL], CONTROLLER_NAME);
        assert_eq!(l["app"], "web");
        assert_eq!(l[HEADLESS_LABEL], "");
    }
}
