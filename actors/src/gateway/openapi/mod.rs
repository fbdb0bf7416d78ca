//! The OpenAPI documents: `/openapi/v2` (Swagger 2.0, JSON or gnostic protobuf) and
//! `/openapi/v3` (a root listing one document per group version, each with its hash),
//! with the full schema of every served kind. `kubectl explain`, kubectl's strategic
//! merge computation in `apply`, its field-validation check and other clients read them.
//!
//! The documents are built on the first request for them, then kept as encoded bytes
//! only (the schema trees are dropped), so an idle server pays nothing for them.

mod paths;
mod proto;
mod schemas;

use std::sync::{Arc, Mutex};

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::Bytes;
use serde_json::{json, Map, Value};

use super::discovery::KUBE_MINOR;
use super::render;
use crate::api::ApiError;
use paths::PathItem;
use schemas::{Definitions, Flavor};

/// What client-go's `OpenAPISchema()` asks for.
pub const V2_PROTOBUF: &str = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf";
/// The spelling answered with (and also accepted), as kube-apiserver does: `@` is not a
/// token character, so Go's `mime.ParseMediaType` in the client refuses the other.
const V2_PROTOBUF_OLD: &str = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf";

/// One encoded document and its hash (hex SHA-256), for ETags and v3 URLs.
struct Encoded {
    body: Bytes,
    hash: String,
}

impl Encoded {
    fn new(body: Vec<u8>) -> Encoded {
        let digest = ring::digest::digest(&ring::digest::SHA256, &body);
        let hash = digest.as_ref().iter().map(|b| format!("{b:02X}")).collect();
        Encoded {
            body: Bytes::from(body),
            hash,
        }
    }
}

struct V2 {
    json: Encoded,
    protobuf: Encoded,
}

/// The v3 documents by the path they are served under (`api/v1`, `apis/<g>/<v>`).
struct V3 {
    groups: Vec<(String, Encoded)>,
    root: Bytes,
}

/// A document built for one generation of the kind registry: rebuilt when a kind is
/// added or removed, shared until then.
type Cached<T> = Mutex<Option<(u64, Arc<T>)>>;

static V2_DOCS: Cached<V2> = Mutex::new(None);
static V3_DOCS: Cached<V3> = Mutex::new(None);

/// The cached document, or a fresh one when the registry moved on since it was built.
/// Building holds the lock, so concurrent first requests build it once.
fn cached<T>(cache: &Cached<T>, build: impl FnOnce() -> T) -> Arc<T> {
    let generation = crate::api::resources::registry().generation();
    let mut slot = cache.lock().unwrap_or_else(|e| e.into_inner());
    match &*slot {
        Some((g, doc)) if *g == generation => doc.clone(),
        _ => {
            let doc = Arc::new(build());
            *slot = Some((generation, doc.clone()));
            doc
        }
    }
}

fn info() -> Value {
    json!({"title": "Kubernetes", "version": format!("v1.{KUBE_MINOR}.0")})
}

/// The paths of every served resource, grouped by the base path they live under, in the
/// order of the resource table.
fn paths_by_base(defs: &Definitions) -> Vec<(String, Vec<PathItem>)> {
    let mut out: Vec<(String, Vec<PathItem>)> = Vec::new();
    for info in schemas::served() {
        let base = info.base_path();
        let items = paths::resource_paths(info, defs);
        if items.is_empty() {
            continue;
        }
        match out.iter_mut().find(|(b, _)| *b == base) {
            Some((_, existing)) => existing.extend(items),
            None => {
                let mut all = vec![paths::discovery_path(&base, info.group, info.version)];
                all.extend(items);
                out.push((base, all));
            }
        }
    }
    out
}

fn v2_document() -> Value {
    let defs = schemas::build();
    let groups = paths_by_base(&defs);
    let items: Vec<PathItem> = groups.into_iter().flat_map(|(_, i)| i).collect();
    let mut roots = paths::referenced(&items);
    roots.extend(defs.kinds.iter().map(|(_, n)| n.clone()));
    json!({
        "swagger": "2.0",
        "info": info(),
        "paths": paths::paths_json(&items, Flavor::V2),
        "definitions": defs.closure(&roots, Flavor::V2),
    })
}

/// Gives the heap pages freed after building a document back to the kernel: the schema
/// trees are several times the size of the bytes kept, and glibc would otherwise hold on
/// to their pages for good (measured: +19 MiB RSS after both documents, +2 MiB kept).
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        extern "C" {
            fn malloc_trim(pad: usize) -> std::os::raw::c_int;
        }
        // SAFETY: malloc_trim only returns free pages of glibc's heap to the kernel; it
        // touches no memory in use and takes no pointers.
        unsafe {
            malloc_trim(0);
        }
    }
}

fn v2_docs() -> Arc<V2> {
    cached(&V2_DOCS, || {
        let doc = v2_document();
        let json = Encoded::new(doc.to_string().into_bytes());
        let protobuf = Encoded::new(proto::encode_document(&doc));
        drop(doc);
        tracing::debug!(
            json_bytes = json.body.len(),
            protobuf_bytes = protobuf.body.len(),
            "built the OpenAPI v2 document"
        );
        let docs = V2 { json, protobuf };
        release_freed_memory();
        docs
    })
}

fn v3_documents() -> Vec<(String, Value)> {
    let defs = schemas::build();
    paths_by_base(&defs)
        .into_iter()
        .map(|(base, items)| {
            let roots = paths::referenced(&items);
            let doc = json!({
                "openapi": "3.0.0",
                "info": info(),
                "paths": paths::paths_json(&items, Flavor::V3),
                "components": {"schemas": defs.closure(&roots, Flavor::V3)},
            });
            (base.trim_start_matches('/').to_string(), doc)
        })
        .collect()
}

fn v3_docs() -> Arc<V3> {
    cached(&V3_DOCS, || {
        let groups: Vec<(String, Encoded)> = v3_documents()
            .into_iter()
            .map(|(path, doc)| (path, Encoded::new(doc.to_string().into_bytes())))
            .collect();
        let paths: Map<String, Value> = groups
            .iter()
            .map(|(path, doc)| {
                let url = format!("/openapi/v3/{path}?hash={}", doc.hash);
                (path.clone(), json!({"serverRelativeURL": url}))
            })
            .collect();
        let root = Bytes::from(json!({ "paths": paths }).to_string());
        release_freed_memory();
        V3 { groups, root }
    })
}

/// Which of the v2 encodings the Accept header asks for first; `None` if neither.
fn v2_encoding(accept: &str) -> Option<bool> {
    if accept.trim().is_empty() {
        return Some(false);
    }
    accept.split(',').find_map(|part| {
        let media = part.split(';').next().unwrap_or("").trim();
        match media {
            V2_PROTOBUF | V2_PROTOBUF_OLD => Some(true),
            "application/json" | "application/*" | "*/*" => Some(false),
            _ => None,
        }
    })
}

fn not_acceptable() -> HttpResponse {
    HttpResponse::NotAcceptable()
        .content_type("application/json")
        .body(
            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": format!("only application/json and {V2_PROTOBUF} are served"),
                "reason": "NotAcceptable", "code": 406})
            .to_string(),
        )
}

fn etag_matches(req: &HttpRequest, etag: &str) -> bool {
    req.headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag))
}

fn document(req: &HttpRequest, doc: &Encoded, content_type: &str) -> HttpResponse {
    let etag = format!("\"{}\"", doc.hash);
    if etag_matches(req, &etag) {
        return HttpResponse::NotModified()
            .insert_header((header::ETAG, etag))
            .finish();
    }
    HttpResponse::Ok()
        .content_type(content_type)
        .insert_header((header::ETAG, etag))
        .insert_header((header::VARY, "Accept"))
        .body(doc.body.clone())
}

/// `GET /openapi/v2`: JSON, or gnostic protobuf when asked for (as kubectl asks).
pub async fn openapi_v2(req: HttpRequest) -> HttpResponse {
    let accept = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let Some(protobuf) = v2_encoding(&accept) else {
        return not_acceptable();
    };
    let docs = web::block(v2_docs).await;
    let Ok(docs) = docs else {
        return render::error_response(&ApiError::ServiceUnavailable(
            "the OpenAPI document could not be built".into(),
        ));
    };
    if protobuf {
        document(&req, &docs.protobuf, V2_PROTOBUF_OLD)
    } else {
        document(&req, &docs.json, "application/json")
    }
}

/// `GET /openapi/v3`: the group versions and the URL (with hash) of each one's document.
pub async fn openapi_v3_root() -> HttpResponse {
    match web::block(v3_docs).await {
        Ok(docs) => HttpResponse::Ok()
            .content_type("application/json")
            .body(docs.root.clone()),
        Err(_) => render::error_response(&ApiError::ServiceUnavailable(
            "the OpenAPI documents could not be built".into(),
        )),
    }
}

/// `GET /openapi/v3/api/v1`, `/openapi/v3/apis/<group>/<version>`. With the current
/// `hash` the answer may be cached for good, as kube-apiserver lets it; with a stale one
/// the client is sent to the current URL.
pub async fn openapi_v3_group(req: HttpRequest, path: web::Path<String>) -> HttpResponse {
    let wanted = path.into_inner().trim_matches('/').to_string();
    let Ok(docs) = web::block(v3_docs).await else {
        return render::error_response(&ApiError::ServiceUnavailable(
            "the OpenAPI documents could not be built".into(),
        ));
    };
    let Some((_, doc)) = docs.groups.iter().find(|(p, _)| *p == wanted) else {
        return render::error_response(&ApiError::NoRoute);
    };
    let hash =
        web::Query::<std::collections::HashMap<String, String>>::from_query(req.query_string())
            .ok()
            .and_then(|q| q.get("hash").cloned());
    match hash {
        Some(h) if h != doc.hash => HttpResponse::MovedPermanently()
            .insert_header((
                header::LOCATION,
                format!("/openapi/v3/{wanted}?hash={}", doc.hash),
            ))
            .finish(),
        Some(_) => {
            let mut resp = document(&req, doc, "application/json");
            resp.headers_mut().insert(
                header::CACHE_CONTROL,
                header::HeaderValue::from_static("public, immutable"),
            );
            resp
        }
        None => document(&req, doc, "application/json"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubectl_s_accept_header_gets_protobuf_and_json_is_the_default() {
        assert_eq!(v2_encoding(V2_PROTOBUF), Some(true));
        assert_eq!(
            v2_encoding(&format!("{V2_PROTOBUF}, application/json")),
            Some(true)
        );
        assert_eq!(v2_encoding("application/json"), Some(false));
        assert_eq!(v2_encoding(""), Some(false));
        assert_eq!(v2_encoding("text/html"), None);
    }

    #[test]
    fn the_v2_document_has_every_kind_with_paths_and_definitions() {
        let doc = v2_document();
        let defs = doc["definitions"].as_object().expect("definitions");
        for info in schemas::served() {
            let found = defs.values().any(|d| {
                d["x-kubernetes-group-version-kind"]
                    .as_array()
                    .is_some_and(|g| {
                        g.contains(&json!({"group": info.group, "kind": info.kind, "version": info.version}))
                    })
            });
            assert!(found, "{} has no definition with its GVK", info.kind);
        }
        let pod = &doc["paths"]["/api/v1/namespaces/{namespace}/pods/{name}"];
        assert_eq!(pod["get"]["operationId"], "readCoreV1NamespacedPod");
        assert_eq!(
            pod["get"]["responses"]["200"]["schema"]["$ref"],
            "#/definitions/io.k8s.api.core.v1.Pod"
        );
        // Every reference resolves.
        let text = doc.to_string();
        for r in text.split("\"#/definitions/").skip(1) {
            let name = r.split('"').next().unwrap_or("");
            assert!(defs.contains_key(name), "dangling reference {name}");
        }
    }

    #[test]
    fn v3_documents_are_per_group_version_and_self_contained() {
        let docs = v3_documents();
        let names: Vec<&str> = docs.iter().map(|(p, _)| p.as_str()).collect();
        assert!(names.contains(&"api/v1"));
        assert!(names.contains(&"apis/rbac.authorization.k8s.io/v1"));
        for (path, doc) in &docs {
            let schemas = doc["components"]["schemas"].as_object().expect("schemas");
            let text = doc.to_string();
            for r in text.split("\"#/components/schemas/").skip(1) {
                let name = r.split('"').next().unwrap_or("");
                assert!(schemas.contains_key(name), "{path}: dangling {name}");
            }
        }
        let (_, core) = docs.iter().find(|(p, _)| p == "api/v1").expect("core");
        assert!(core["components"]["schemas"]["io.k8s.api.core.v1.Pod"]
            ["x-kubernetes-group-version-kind"]
            .is_array());
        assert!(core["components"]["schemas"]
            .get("io.k8s.api.rbac.v1.Role")
            .is_none());
    }
}
