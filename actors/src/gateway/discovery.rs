//! Discovery and OpenAPI documents, so kubectl can map kinds to resources and knows the
//! server validates fields itself.

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Map, Value};

use super::render::{self, json_response};
use super::AppState;
use crate::api::resources::{self, ResourceInfo, RESOURCES};
use crate::api::ApiError;

pub const KUBE_MINOR: &str = "33";

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

pub async fn api_versions(req: HttpRequest) -> HttpResponse {
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

fn group_entry(group: &str, version: &str) -> Value {
    let gv = json!({"groupVersion": format!("{group}/{version}"), "version": version});
    json!({"name": group, "versions": [gv], "preferredVersion": gv})
}

/// Every group version served: the registry's, and the metrics API that is not stored.
fn all_groups() -> Vec<(&'static str, &'static str)> {
    let mut groups = resources::groups();
    groups.push(super::metrics_api::group_version());
    groups
}

pub async fn api_groups() -> HttpResponse {
    let groups: Vec<Value> = all_groups()
        .into_iter()
        .map(|(g, v)| group_entry(g, v))
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
            let mut body = group_entry(g, v);
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

fn verbs(info: &ResourceInfo) -> Vec<&'static str> {
    if resources::is_review(info) {
        return vec!["create"];
    }
    let mut v = vec![
        "create",
        "delete",
        "deletecollection",
        "get",
        "list",
        "patch",
        "update",
        "watch",
    ];
    if info.name == "namespaces" {
        v.retain(|x| *x != "deletecollection");
    }
    v
}

fn subresource_entry(info: &ResourceInfo, sub: &str) -> Value {
    let (kind, group, version, verbs): (&str, Option<&str>, Option<&str>, Vec<&str>) = match sub {
        "scale" => (
            "Scale",
            Some("autoscaling"),
            Some("v1"),
            vec!["get", "patch", "update"],
        ),
        "binding" => ("Binding", None, None, vec!["create"]),
        "eviction" => ("Eviction", Some("policy"), Some("v1"), vec!["create"]),
        "log" => ("Pod", None, None, vec!["get"]),
        "finalize" => (info.kind, None, None, vec!["update"]),
        _ => (info.kind, None, None, vec!["get", "patch", "update"]),
    };
    let mut e = json!({
        "name": format!("{}/{sub}", info.name),
        "singularName": "",
        "namespaced": info.namespaced,
        "kind": kind,
        "verbs": verbs,
    });
    if let (Some(g), Some(v)) = (group, version) {
        e["group"] = json!(g);
        e["version"] = json!(v);
    }
    e
}

pub async fn api_v1_resources() -> HttpResponse {
    resource_list("", "v1")
}

fn resource_list(group: &str, version: &str) -> HttpResponse {
    let mut resources = Vec::new();
    for info in RESOURCES
        .iter()
        .chain(resources::REVIEWS)
        .filter(|r| r.group == group && r.version == version)
    {
        resources.push(json!({
            "name": info.name,
            "singularName": info.singular,
            "namespaced": info.namespaced,
            "kind": info.kind,
            "verbs": verbs(info),
            "shortNames": info.short_names,
            "storageVersionHash": "",
        }));
        for sub in info.subresources {
            resources.push(subresource_entry(info, sub));
        }
    }
    let group_version = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    json_response(
        200,
        &json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": resources}),
    )
}

fn path_item(info: &ResourceInfo, v3: bool) -> Value {
    let param = |name: &str| {
        if v3 {
            json!({"name": name, "in": "query", "schema": {"type": "string", "uniqueItems": true}})
        } else {
            json!({"name": name, "in": "query", "type": "string", "uniqueItems": true})
        }
    };
    let gvk = json!({"group": info.group, "version": info.version, "kind": info.kind});
    let op = |action: &str| {
        json!({
            "operationId": format!("{action}{}", info.kind),
            "tags": [format!("{}_{}", if info.group.is_empty() { "core" } else { info.group }, info.version)],
            "parameters": [param("dryRun"), param("fieldManager"), param("fieldValidation")],
            "x-kubernetes-action": action,
            "x-kubernetes-group-version-kind": gvk,
            "responses": {"200": {"description": "OK"}},
        })
    };
    json!({"get": op("get"), "put": op("put"), "patch": op("patch"), "delete": op("delete")})
}

fn object_path(info: &ResourceInfo) -> String {
    if info.namespaced {
        format!(
            "{}/namespaces/{{namespace}}/{}/{{name}}",
            info.base_path(),
            info.name
        )
    } else {
        format!("{}/{}/{{name}}", info.base_path(), info.name)
    }
}

/// Swagger 2.0 paths for the served resources: enough for clients that look up which
/// operations and parameters exist (schemas are left open).
pub async fn openapi_v2(req: HttpRequest) -> HttpResponse {
    let accept = req
        .headers()
        .get("accept")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    // kubectl asks for protobuf first; saying we only speak JSON makes it fall back to the
    // OpenAPI v3 document (served below) instead of failing to parse JSON as protobuf.
    if accept.contains("protobuf") && !accept.contains("json") {
        return HttpResponse::NotAcceptable()
            .content_type("application/json")
            .body(json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                "message": "only application/json is served", "reason": "NotAcceptable", "code": 406}).to_string());
    }
    let mut paths = Map::new();
    for info in RESOURCES {
        paths.insert(object_path(info), path_item(info, false));
    }
    json_response(
        200,
        &json!({
            "swagger": "2.0",
            "info": {"title": "Kubernetes (skiff)", "version": format!("v1.{KUBE_MINOR}.0")},
            "paths": paths,
            "definitions": {},
        }),
    )
}

pub async fn openapi_v3_root() -> HttpResponse {
    let mut paths = Map::new();
    let mut bases: Vec<String> = RESOURCES.iter().map(|r| r.base_path()).collect();
    bases.dedup();
    for base in bases {
        let rel = base.trim_start_matches('/').to_string();
        let url = format!("/openapi/v3/{rel}?hash={}", spec_hash());
        paths.insert(rel, json!({"serverRelativeURL": url}));
    }
    json_response(200, &json!({ "paths": paths }))
}

fn spec_hash() -> String {
    format!(
        "skiff{}{}",
        env!("CARGO_PKG_VERSION").replace('.', ""),
        RESOURCES.len()
    )
}

/// `/openapi/v3/api/v1`, `/openapi/v3/apis/<group>/<version>`: one group version's paths.
pub async fn openapi_v3_group(path: web::Path<String>) -> HttpResponse {
    let base = format!("/{}", path.into_inner().trim_end_matches('/'));
    let mut paths = Map::new();
    for info in RESOURCES.iter().filter(|r| r.base_path() == base) {
        paths.insert(object_path(info), path_item(info, true));
    }
    if paths.is_empty() {
        return render::error_response(&ApiError::NoRoute);
    }
    json_response(
        200,
        &json!({
            "openapi": "3.0.0",
            "info": {"title": "Kubernetes (skiff)", "version": format!("v1.{KUBE_MINOR}.0")},
            "paths": paths,
            "components": {"schemas": {}},
        }),
    )
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
