//! Discovery, as kube-apiserver serves it: the legacy documents (`/api`, `/apis`,
//! `/api/v1`, `/apis/<group>/<version>`) and aggregated discovery (`/api` and `/apis` with
//! `Accept: application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList`, also
//! v2beta1), which kubectl asks for first. Both are made from the resource table: names,
//! kinds, scope, verbs, short names, categories and subresources.

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Value};

use super::render::{self, json_response};
use super::AppState;
use crate::api::resources::{self, ResourceInfo};
use crate::api::ApiError;

pub const KUBE_MINOR: &str = "33";

const DISCOVERY_GROUP: &str = "apidiscovery.k8s.io";

pub async fn version() -> HttpResponse {
    json_response(
        200,
        &json!({
            "major": "1",
            "minor": KUBE_MINOR,
            "gitVersion": format!("v1.{KUBE_MINOR}.0-skiff.{}", env!("CARGO_PKG_VERSION")),
            "gitCommit": "",
            "gitTreeState": "clean",
            "buildDate": "",
            "goVersion": "n/a (rust)",
            "compiler": "rustc",
            "platform": format!("{}/{}", std::env::consts::OS, std::env::consts::ARCH),
        }),
    )
}

/// Which discovery document a request's Accept header asks for first: aggregated
/// (`Some("v2")`, `Some("v2beta1")`) or the legacy one (`None`).
pub fn aggregated_version(req: &HttpRequest) -> Option<&'static str> {
    let accept = req.headers().get(header::ACCEPT)?.to_str().ok()?;
    for part in accept.split(',') {
        let mut params = part.split(';').map(str::trim);
        let media = params.next().unwrap_or("");
        let params: Vec<&str> = params.collect();
        let is = |p: &str| params.contains(&p);
        if media == "application/json"
            && is(&format!("g={DISCOVERY_GROUP}"))
            && is("as=APIGroupDiscoveryList")
        {
            if is("v=v2") {
                return Some("v2");
            }
            if is("v=v2beta1") {
                return Some("v2beta1");
            }
        }
        if matches!(media, "application/json" | "*/*" | "application/*") && params.is_empty() {
            return None;
        }
    }
    None
}

fn aggregated_response(version: &str, items: Vec<Value>) -> HttpResponse {
    let body = json!({
        "kind": "APIGroupDiscoveryList",
        "apiVersion": format!("{DISCOVERY_GROUP}/{version}"),
        "metadata": {},
        "items": items,
    });
    HttpResponse::Ok()
        .content_type(format!(
            "application/json;g={DISCOVERY_GROUP};v={version};as=APIGroupDiscoveryList"
        ))
        .insert_header((header::VARY, "Accept"))
        .body(body.to_string())
}

pub async fn api_versions(req: HttpRequest) -> HttpResponse {
    if let Some(version) = aggregated_version(&req) {
        return aggregated_response(version, vec![aggregated_group("", &["v1"])]);
    }
    let server = req.connection_info().host().to_string();
    json_response(
        200,
        &json!({
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server}],
        }),
    )
}

/// A group's `APIGroup` entry: its versions, the preferred one first.
fn group_entry(group: &str, versions: &[&str]) -> Value {
    let gv =
        |version: &str| json!({"groupVersion": format!("{group}/{version}"), "version": version});
    let all: Vec<Value> = versions.iter().map(|v| gv(v)).collect();
    let preferred = all.first().cloned().unwrap_or(Value::Null);
    json!({"name": group, "versions": all, "preferredVersion": preferred})
}

/// Every group served with its versions (preferred first): the registry's, and the
/// metrics API that is not stored.
fn all_groups() -> Vec<(&'static str, Vec<&'static str>)> {
    let mut groups = resources::group_versions();
    let (group, version) = super::metrics_api::group_version();
    groups.push((group, vec![version]));
    groups
}

/// The resources of one group version: the table's, the reviews, and the metrics API's.
fn resources_of(group: &str, version: &str) -> Vec<&'static ResourceInfo> {
    resources::registry()
        .all()
        .into_iter()
        .chain(super::metrics_api::resources())
        .filter(|r| r.group == group && r.version == version)
        .collect()
}

pub async fn api_groups(req: HttpRequest) -> HttpResponse {
    if let Some(version) = aggregated_version(&req) {
        let items = all_groups()
            .into_iter()
            .map(|(g, v)| aggregated_group(g, &v))
            .collect();
        return aggregated_response(version, items);
    }
    let groups: Vec<Value> = all_groups()
        .into_iter()
        .map(|(g, v)| group_entry(g, &v))
        .collect();
    json_response(
        200,
        &json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}),
    )
}

/// `/apis/<group>`: the group's versions.
pub async fn api_group(path: web::Path<String>) -> HttpResponse {
    let group = path.into_inner();
    match all_groups().into_iter().find(|(g, _)| *g == group) {
        Some((g, v)) => {
            let mut body = group_entry(g, &v);
            body["kind"] = json!("APIGroup");
            body["apiVersion"] = json!("v1");
            json_response(200, &body)
        }
        None => render::error_response(&ApiError::NoRoute),
    }
}

/// `/apis/<group>/<version>`: the resources of one group version.
pub async fn api_group_resources(path: web::Path<(String, String)>) -> HttpResponse {
    let (group, version) = path.into_inner();
    if !resources::groups().contains(&(group.as_str(), version.as_str())) {
        return render::error_response(&ApiError::NoRoute);
    }
    resource_list(&group, &version)
}

/// What a subresource answers with and which verbs it takes.
struct Subresource {
    kind: &'static str,
    /// Group and version of `kind` when they are not the parent's.
    group_version: Option<(&'static str, &'static str)>,
    verbs: &'static [&'static str],
}

fn subresource(info: &ResourceInfo, sub: &str) -> Subresource {
    let (kind, group_version, verbs): (&str, _, &[&str]) = match sub {
        "scale" => (
            "Scale",
            Some(("autoscaling", "v1")),
            &["get", "patch", "update"],
        ),
        "binding" => ("Binding", None, &["create"]),
        "eviction" => ("Eviction", Some(("policy", "v1")), &["create"]),
        "token" => (
            "TokenRequest",
            Some(("authentication.k8s.io", "v1")),
            &["create"],
        ),
        "log" => ("Pod", None, &["get"]),
        // Kubernetes' discovery: the streaming subresources answer connect options kinds.
        "exec" => ("PodExecOptions", None, &["create", "get"]),
        "attach" => ("PodAttachOptions", None, &["create", "get"]),
        "portforward" => ("PodPortForwardOptions", None, &["create", "get"]),
        "proxy" if info.name == "nodes" => (
            "NodeProxyOptions",
            None,
            &[
                "create", "delete", "get", "head", "options", "patch", "update",
            ],
        ),
        "finalize" => (info.kind, None, &["update"]),
        _ => (info.kind, None, &["get", "patch", "update"]),
    };
    Subresource {
        kind,
        group_version,
        verbs,
    }
}

fn subresource_entry(info: &ResourceInfo, sub: &str) -> Value {
    let s = subresource(info, sub);
    let mut e = json!({
        "name": format!("{}/{sub}", info.name),
        "singularName": "",
        "namespaced": info.namespaced,
        "kind": s.kind,
        "verbs": s.verbs,
    });
    if let Some((g, v)) = s.group_version {
        e["group"] = json!(g);
        e["version"] = json!(v);
    }
    e
}

pub async fn api_v1_resources() -> HttpResponse {
    resource_list("", "v1")
}

/// One resource's entry in an `APIResourceList`.
fn legacy_entry(info: &ResourceInfo) -> Value {
    let mut e = json!({
        "name": info.name,
        "singularName": info.singular,
        "namespaced": info.namespaced,
        "kind": info.kind,
        "verbs": info.verbs(),
        "storageVersionHash": "",
    });
    if !info.short_names.is_empty() {
        e["shortNames"] = json!(info.short_names);
    }
    if !info.categories.is_empty() {
        e["categories"] = json!(info.categories);
    }
    e
}

fn resource_list_body(group: &str, version: &str) -> Value {
    let mut resources = Vec::new();
    for info in resources_of(group, version) {
        resources.push(legacy_entry(info));
        for sub in info.subresources {
            resources.push(subresource_entry(info, sub));
        }
    }
    let group_version = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": resources})
}

fn resource_list(group: &str, version: &str) -> HttpResponse {
    json_response(200, &resource_list_body(group, version))
}

/// One resource in aggregated discovery (`APIResourceDiscovery`).
fn aggregated_resource(info: &ResourceInfo) -> Value {
    let kind = |group: &str, version: &str, kind: &str| json!({"group": group, "version": version, "kind": kind});
    let subresources: Vec<Value> = info
        .subresources
        .iter()
        .map(|sub| {
            let s = subresource(info, sub);
            let (g, v) = s.group_version.unwrap_or((info.group, info.version));
            json!({"subresource": sub, "responseKind": kind(g, v, s.kind), "verbs": s.verbs})
        })
        .collect();
    let mut e = json!({
        "resource": info.name,
        "responseKind": kind(info.group, info.version, info.kind),
        "scope": if info.namespaced { "Namespaced" } else { "Cluster" },
        "singularResource": info.singular,
        "verbs": info.verbs(),
    });
    if !info.short_names.is_empty() {
        e["shortNames"] = json!(info.short_names);
    }
    if !info.categories.is_empty() {
        e["categories"] = json!(info.categories);
    }
    if !subresources.is_empty() {
        e["subresources"] = json!(subresources);
    }
    e
}

/// One group in aggregated discovery (`APIGroupDiscovery`), with its versions in order
/// of preference.
fn aggregated_group(group: &str, versions: &[&str]) -> Value {
    let versions: Vec<Value> = versions
        .iter()
        .map(|version| {
            let resources: Vec<Value> = resources_of(group, version)
                .into_iter()
                .map(aggregated_resource)
                .collect();
            json!({"version": version, "resources": resources, "freshness": "Current"})
        })
        .collect();
    json!({
        "metadata": {"name": group, "creationTimestamp": null},
        "versions": versions,
    })
}

pub async fn healthz(state: web::Data<AppState>) -> HttpResponse {
    if state.objects.store.addr.connected() {
        HttpResponse::Ok().content_type("text/plain").body("ok")
    } else {
        HttpResponse::ServiceUnavailable()
            .content_type("text/plain")
            .body("store unavailable")
    }
}

pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    match state.metrics.render() {
        Ok(text) => HttpResponse::Ok()
            .content_type("text/plain; version=0.0.4")
            .body(text),
        Err(e) => HttpResponse::InternalServerError().body(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    fn legacy(group: &str, version: &str, name: &str) -> Value {
        resource_list_body(group, version)["resources"]
            .as_array()
            .expect("resources")
            .iter()
            .find(|r| r["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("{name} not in {group}/{version}"))
    }

    fn aggregated(group: &str, version: &str, name: &str) -> Value {
        aggregated_group(group, &[version])["versions"][0]["resources"]
            .as_array()
            .expect("resources")
            .iter()
            .find(|r| r["resource"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("{name} not in {group}/{version}"))
    }

    #[test]
    fn every_kind_declared_once_appears_in_both_discovery_formats() {
        for info in resources::registry().all() {
            let l = legacy(info.group, info.version, info.name);
            let a = aggregated(info.group, info.version, info.name);
            assert_eq!(l["kind"], info.kind);
            assert_eq!(a["responseKind"]["kind"], info.kind);
            assert_eq!(l["singularName"], info.singular);
            assert_eq!(a["singularResource"], info.singular);
            assert_eq!(l["verbs"], a["verbs"]);
            assert_eq!(
                a["scope"],
                if info.namespaced {
                    "Namespaced"
                } else {
                    "Cluster"
                }
            );
            assert_eq!(l.get("shortNames"), a.get("shortNames"));
            assert_eq!(l.get("categories"), a.get("categories"));
        }
    }

    #[test]
    fn the_all_category_holds_what_kubectl_get_all_lists() {
        for (group, name) in [
            ("", "pods"),
            ("", "services"),
            ("", "replicationcontrollers"),
            ("autoscaling", "horizontalpodautoscalers"),
        ] {
            let version = "v1";
            assert_eq!(
                aggregated(group, version, name)["categories"],
                json!(["all"])
            );
            assert_eq!(legacy(group, version, name)["categories"], json!(["all"]));
        }
        assert!(aggregated("", "v1", "nodes").get("categories").is_none());
        assert!(aggregated("", "v1", "events").get("categories").is_none());
    }

    #[test]
    fn subresources_name_their_response_kind() {
        let rc = aggregated("", "v1", "replicationcontrollers");
        let scale = rc["subresources"]
            .as_array()
            .expect("subresources")
            .iter()
            .find(|s| s["subresource"] == "scale")
            .cloned()
            .expect("scale");
        assert_eq!(
            scale["responseKind"],
            json!({"group": "autoscaling", "version": "v1", "kind": "Scale"})
        );
        assert_eq!(scale["verbs"], json!(["get", "patch", "update"]));
    }

    #[test]
    fn autoscaling_is_one_group_in_two_versions_preferring_v2() {
        let (_, versions) = all_groups()
            .into_iter()
            .find(|(g, _)| *g == "autoscaling")
            .expect("autoscaling");
        let entry = group_entry("autoscaling", &versions);
        assert_eq!(entry["preferredVersion"]["groupVersion"], "autoscaling/v2");
        assert_eq!(entry["versions"][1]["groupVersion"], "autoscaling/v1");
        let agg = aggregated_group("autoscaling", &versions);
        assert_eq!(agg["versions"][0]["version"], "v2");
        assert_eq!(agg["versions"][1]["version"], "v1");
        for v in ["v1", "v2"] {
            let hpa = aggregated("autoscaling", v, "horizontalpodautoscalers");
            assert_eq!(hpa["responseKind"]["version"], v);
            assert_eq!(hpa["shortNames"], json!(["hpa"]));
        }
        let groups = all_groups();
        assert_eq!(
            groups.iter().filter(|(g, _)| *g == "autoscaling").count(),
            1
        );
    }

    #[test]
    fn the_metrics_api_is_in_aggregated_discovery() {
        let nodes = aggregated("metrics.k8s.io", "v1beta1", "nodes");
        assert_eq!(nodes["responseKind"]["kind"], "NodeMetrics");
        assert_eq!(nodes["verbs"], json!(["get", "list"]));
    }

    #[test]
    fn accept_headers_choose_the_discovery_format() {
        let with = |accept: &str| {
            let req = TestRequest::default()
                .insert_header((header::ACCEPT, accept))
                .to_http_request();
            aggregated_version(&req)
        };
        // What kubectl 1.32 sends.
        assert_eq!(
            with("application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json"),
            Some("v2")
        );
        assert_eq!(
            with("application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json"),
            Some("v2beta1")
        );
        assert_eq!(with("application/json"), None);
        assert_eq!(
            with("application/json, application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"),
            None
        );
        let req = TestRequest::default().to_http_request();
        assert_eq!(aggregated_version(&req), None);
    }
}
