//! The resource metrics API, `metrics.k8s.io/v1beta1` (what metrics-server serves):
//! NodeMetrics and PodMetrics built from the kubelets' latest samples, read-only and not
//! stored. `kubectl top` reads these as JSON after finding the group in discovery.

use std::collections::HashMap;

use actix_web::http::Method;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Value};

use super::objects::ListOptions;
use super::render::{self, json_response};
use super::routing::Target;
use super::{auth, AppState};
use crate::api::resources::{self, ResourceInfo, Storage};
use crate::api::selector::{FieldSelector, LabelSelector};
use crate::api::strategy::Generic;
use crate::api::ApiError;
use crate::resource_metrics::{NodeUsage, PodUsage};

pub const GROUP: &str = "metrics.k8s.io";
pub const VERSION: &str = "v1beta1";
const API_VERSION: &str = "metrics.k8s.io/v1beta1";

/// The two read-only resources of the group; described like stored ones so that discovery
/// and authorization treat them the same way, but not in the store's registry.
const NODE_METRICS: ResourceInfo = ResourceInfo {
    group: GROUP,
    version: VERSION,
    name: "nodes",
    singular: "",
    kind: "NodeMetrics",
    namespaced: false,
    short_names: &[],
    subresources: &[],
    has_status_subresource: false,
    field_selectors: &[],
    categories: &[],
    schema: None,
    strategy: &Generic,
    storage: Storage::Memory,
};
const POD_METRICS: ResourceInfo = ResourceInfo {
    group: GROUP,
    version: VERSION,
    name: "pods",
    singular: "",
    kind: "PodMetrics",
    namespaced: true,
    short_names: &[],
    subresources: &[],
    has_status_subresource: false,
    field_selectors: &[],
    categories: &[],
    schema: None,
    strategy: &Generic,
    storage: Storage::Memory,
};

/// Register the group's routes; they must come before the generic `/apis/{group}/...`
/// routes.
pub fn routes(cfg: &mut web::ServiceConfig) {
    let base = format!("/apis/{GROUP}/{VERSION}");
    cfg.route(&base, web::get().to(resource_list))
        .route(&format!("{base}/"), web::get().to(resource_list))
        .route(&format!("{base}/nodes"), web::route().to(nodes))
        .route(&format!("{base}/nodes/{{name}}"), web::route().to(nodes))
        .route(&format!("{base}/pods"), web::route().to(pods))
        .route(
            &format!("{base}/namespaces/{{namespace}}/pods"),
            web::route().to(pods),
        )
        .route(
            &format!("{base}/namespaces/{{namespace}}/pods/{{name}}"),
            web::route().to(pods),
        );
}

/// The group's resources, for discovery.
pub fn resources() -> [&'static ResourceInfo; 2] {
    [&NODE_METRICS, &POD_METRICS]
}

/// The group's entry in `/apis`.
pub fn group_version() -> (&'static str, &'static str) {
    (GROUP, VERSION)
}

async fn resource_list() -> HttpResponse {
    let entry = |info: &ResourceInfo| {
        json!({"name": info.name, "singularName": "", "namespaced": info.namespaced,
            "kind": info.kind, "verbs": ["get", "list"]})
    };
    json_response(
        200,
        &json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": API_VERSION,
            "resources": [entry(&NODE_METRICS), entry(&POD_METRICS)]}),
    )
}

type Query = HashMap<String, String>;

/// What one request asks for, after routing and authorization.
struct Request {
    namespace: Option<String>,
    name: Option<String>,
    labels: LabelSelector,
    fields: FieldSelector,
}

fn parse(
    req: &HttpRequest,
    state: &AppState,
    info: &'static ResourceInfo,
) -> Result<Request, ApiError> {
    if req.method() != Method::GET {
        return Err(ApiError::MethodNotAllowed);
    }
    let m = req.match_info();
    let namespace = m.get("namespace").map(str::to_string);
    let name = m.get("name").map(str::to_string);
    let q = web::Query::<Query>::from_query(req.query_string())
        .map_err(|e| ApiError::BadRequest(format!("invalid query: {e}")))?
        .into_inner();
    let bad = |e: crate::api::selector::SelectorError| ApiError::BadRequest(e.to_string());
    let labels = match q.get("labelSelector") {
        Some(s) => LabelSelector::parse(s).map_err(bad)?,
        None => LabelSelector::default(),
    };
    let fields = match q.get("fieldSelector") {
        Some(s) => FieldSelector::parse(s).map_err(bad)?,
        None => FieldSelector::default(),
    };
    let target = Target {
        resource: info,
        namespace: namespace.clone(),
        name: name.clone(),
        subresource: None,
        legacy_watch: false,
    };
    let verb = if name.is_some() { "get" } else { "list" };
    let attrs = auth::Attributes::for_resource(&auth::user_of(req), verb, &target);
    state.authorization.check(&attrs)?;
    Ok(Request {
        namespace,
        name,
        labels,
        fields,
    })
}

fn answer(result: Result<Value, ApiError>) -> HttpResponse {
    match result {
        Ok(body) => json_response(200, &body),
        Err(e) => render::error_response(&e),
    }
}

async fn nodes(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    answer(parse(&req, &state, &NODE_METRICS).and_then(|r| node_metrics(&state, &r)))
}

async fn pods(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    answer(parse(&req, &state, &POD_METRICS).and_then(|r| pod_metrics(&state, &r)))
}

fn node_metrics(state: &AppState, r: &Request) -> Result<Value, ApiError> {
    // Only nodes that exist (and match the selector, which is about the Node's labels).
    let info = resources::lookup("nodes").ok_or(ApiError::NoRoute)?;
    let list = Target {
        resource: info,
        namespace: None,
        name: None,
        subresource: None,
        legacy_watch: false,
    };
    let opts = ListOptions {
        label_selector: r.labels.clone(),
        ..ListOptions::default()
    };
    let existing = state.objects.list(&list, &opts)?.items;
    let labels_of = |name: &str| {
        existing
            .iter()
            .find(|n| crate::api::meta::name(n) == Some(name))
            .map(|n| n.pointer("/metadata/labels").cloned().unwrap_or(json!({})))
    };
    let items: Vec<Value> = state
        .resource_metrics
        .nodes()
        .iter()
        .filter_map(|n| labels_of(&n.name).map(|labels| node_object(n, labels)))
        .filter(|o| r.fields.matches(o))
        .filter(|o| {
            r.name
                .as_deref()
                .is_none_or(|want| o["metadata"]["name"] == want)
        })
        .collect();
    single_or_list(r, items, "NodeMetricsList", "nodemetrics")
}

fn pod_metrics(state: &AppState, r: &Request) -> Result<Value, ApiError> {
    let items: Vec<Value> = state
        .resource_metrics
        .pods(r.namespace.as_deref())
        .iter()
        .filter(|p| r.labels.matches(&p.labels))
        .filter(|p| r.name.as_deref().is_none_or(|want| p.name == want))
        .map(pod_object)
        .filter(|o| r.fields.matches(o))
        .collect();
    single_or_list(r, items, "PodMetricsList", "podmetrics")
}

fn single_or_list(
    r: &Request,
    mut items: Vec<Value>,
    list_kind: &str,
    resource: &str,
) -> Result<Value, ApiError> {
    match &r.name {
        Some(name) => {
            let shown = match &r.namespace {
                Some(ns) => format!("{ns}/{name}"),
                None => name.clone(),
            };
            if items.is_empty() {
                return Err(ApiError::not_found(&format!("{resource}.{GROUP}"), &shown));
            }
            Ok(items.swap_remove(0))
        }
        None => Ok(json!({"kind": list_kind, "apiVersion": API_VERSION,
            "metadata": {}, "items": items})),
    }
}

/// CPU as Kubernetes prints nanocores (`123456n`), memory in Ki as metrics-server does.
fn cpu_quantity(nanocores: u64) -> String {
    format!("{nanocores}n")
}

fn memory_quantity(bytes: u64) -> String {
    format!("{}Ki", bytes / 1024)
}

/// A Go duration string (`5.004s`): what metav1.Duration decodes.
fn window(d: std::time::Duration) -> String {
    format!("{:.3}s", d.as_secs_f64())
}

fn timestamp(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn node_object(n: &NodeUsage, labels: Value) -> Value {
    json!({
        "kind": "NodeMetrics",
        "apiVersion": API_VERSION,
        "metadata": {"name": n.name, "labels": labels, "creationTimestamp": timestamp(chrono::Utc::now())},
        "timestamp": timestamp(n.timestamp),
        "window": window(n.window),
        "usage": {"cpu": cpu_quantity(n.cpu_nanocores), "memory": memory_quantity(n.memory_bytes)},
    })
}

fn pod_object(p: &PodUsage) -> Value {
    let containers: Vec<Value> = p
        .containers
        .iter()
        .map(|c| {
            json!({"name": c.name, "usage": {"cpu": cpu_quantity(c.cpu_nanocores),
                "memory": memory_quantity(c.memory_bytes)}})
        })
        .collect();
    json!({
        "kind": "PodMetrics",
        "apiVersion": API_VERSION,
        "metadata": {"name": p.name, "namespace": p.namespace, "labels": p.labels,
            "creationTimestamp": timestamp(chrono::Utc::now())},
        "timestamp": timestamp(p.timestamp),
        "window": window(p.window),
        "containers": containers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource_metrics::ContainerUsage;
    use std::collections::BTreeMap;
    use std::time::Duration;

    #[test]
    fn pod_metrics_render_as_metrics_server_does() {
        let p = PodUsage {
            namespace: "default".into(),
            name: "web-1".into(),
            uid: "u".into(),
            labels: BTreeMap::from([("app".to_string(), "web".to_string())]),
            containers: vec![ContainerUsage {
                name: "httpd".into(),
                cpu_nanocores: 250_000_000,
                memory_bytes: 3 << 20,
                ..Default::default()
            }],
            timestamp: chrono::Utc::now(),
            window: Duration::from_millis(5004),
        };
        let o = pod_object(&p);
        assert_eq!(o["containers"][0]["usage"]["cpu"], "250000000n");
        assert_eq!(o["containers"][0]["usage"]["memory"], "3072Ki");
        assert_eq!(o["window"], "5.004s");
        assert_eq!(o["metadata"]["labels"]["app"], "web");
        // The quantities parse back as Kubernetes quantities.
        let cpu = crate::api::validation::parse_quantity("250000000n").expect("quantity");
        assert!((cpu - 0.25).abs() < 1e-9);
    }

    #[test]
    fn a_missing_pod_is_a_not_found_naming_namespace_and_pod() {
        let r = Request {
            namespace: Some("default".into()),
            name: Some("nope".into()),
            labels: LabelSelector::default(),
            fields: FieldSelector::default(),
        };
        let err = single_or_list(&r, Vec::new(), "PodMetricsList", "podmetrics").unwrap_err();
        assert_eq!(err.code(), 404);
        assert!(err.to_string().contains("default/nope"), "{err}");
    }
}
