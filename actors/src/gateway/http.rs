//! The resource handler (`/api/v1`, `/apis/<group>/<version>`): routes a request to its verb, reads and decodes the body, and
//! renders the answer. Thin over [`Objects`](super::objects::Objects).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use actix_web::http::Method;
use actix_web::{web, HttpRequest, HttpResponse};
use futures::StreamExt;
use serde_json::{json, Value};

use super::objects::{
    check_fields, DeleteOptions, FieldValidation, ListOptions, PatchType, WriteOptions, Written,
};
use super::read_options::{self, ReadAt, WatchStart, FRESHNESS_WAIT};
use super::render::{self, Format};
use super::routing::{self, Target};
use super::watch::{self, WatchSpec};
use super::{auth, csr, eviction, node_proxy, reviews, streams, AppState};
use crate::api::selector::{FieldSelector, LabelSelector};
use crate::api::{managed_fields, meta, protobuf, resources, ApiError};

type Query = HashMap<String, String>;

/// Entry point for every request under `/api/v1/`.
pub async fn api_v1(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    let tail = req.match_info().query("tail").to_string();
    serve(&req, payload, &state, routing::parse(&tail), &tail).await
}

/// Entry point for every request under `/apis/<group>/<version>/`.
pub async fn apis(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    let info = req.match_info();
    let (group, version) = (info.query("group"), info.query("version"));
    let tail = info.query("tail").to_string();
    let target = routing::parse_in(group, version, &tail);
    serve(&req, payload, &state, target, &tail).await
}

async fn serve(
    req: &HttpRequest,
    payload: web::Payload,
    state: &web::Data<AppState>,
    target: Result<Target, ApiError>,
    tail: &str,
) -> HttpResponse {
    let started = Instant::now();
    let parsed = target.and_then(|t| {
        web::Query::<Query>::from_query(req.query_string())
            .map(|q| (t, q.into_inner()))
            .map_err(|e| ApiError::BadRequest(format!("invalid query: {e}")))
    });
    let (verb, resource, result) = match parsed {
        Ok((target, q)) => {
            let verb = verb_of(req.method(), &target, &q);
            let resource = match &target.subresource {
                Some(sub) => format!("{}/{sub}", target.resource.name),
                None => target.resource.name.to_string(),
            };
            let span = tracing::debug_span!("request", verb, resource = %resource, path = %tail);
            let _g = span.enter();
            let user = auth::user_of(req);
            let attrs = auth::Attributes::for_resource(&user, verb, &target);
            let result = match state.authorization.check(&attrs) {
                Ok(()) => handle(req, payload, state, target, verb, q).await,
                Err(e) => Err(e),
            };
            (verb, resource, result)
        }
        Err(e) => ("unknown", "unknown".to_string(), Err(e)),
    };
    let resp = result.unwrap_or_else(|e| {
        render::error_response_as(&e, Format::from_accept(header(req, "accept")))
    });
    let code = resp.status().as_u16().to_string();
    state
        .metrics
        .requests
        .with_label_values(&[verb, &resource, &code])
        .inc();
    if verb != "watch" {
        state
            .metrics
            .request_duration
            .with_label_values(&[verb, &resource])
            .observe(started.elapsed().as_secs_f64());
    }
    resp
}

fn verb_of(method: &Method, t: &Target, q: &Query) -> &'static str {
    // Opening a stream into a pod is a create, whichever method the upgrade came with
    // (kube-apiserver's AuthorizePodWebsocketUpgradeCreatePermission).
    if t.resource.name == "pods"
        && matches!(
            t.subresource.as_deref(),
            Some("exec" | "attach" | "portforward")
        )
    {
        return "create";
    }
    let watching = t.legacy_watch || q.get("watch").is_some_and(|w| w == "true" || w == "1");
    match (method.as_str(), t.name.is_some()) {
        ("GET", true) if watching => "watch",
        ("GET", true) => "get",
        ("GET", false) if watching => "watch",
        ("GET", false) => "list",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", true) => "delete",
        ("DELETE", false) => "deletecollection",
        _ => "unknown",
    }
}

async fn handle(
    req: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
    target: Target,
    verb: &str,
    q: Query,
) -> Result<HttpResponse, ApiError> {
    if node_proxy::is_streaming(&target) {
        if target.subresource.as_deref() == Some("log") && verb != "get" {
            return Err(ApiError::MethodNotAllowed);
        }
        return streams::serve(req, payload, state, &target).await;
    }
    let format = Format::negotiate(
        header(req, "accept"),
        q.get("includeObject").map(String::as_str),
    )?;
    let objects = &state.objects;
    if resources::is_review(target.resource) {
        if verb != "create" || target.name.is_some() {
            return Err(ApiError::MethodNotAllowed);
        }
        let body = read_object(
            req,
            payload,
            state.max_body,
            (target.resource.api_version(), target.resource.kind),
        )
        .await?;
        let by = reviews::Reviewers {
            authz: &state.authorization,
            authn: state.authentication.as_deref(),
        };
        let answer = reviews::review(
            target.resource,
            &auth::user_of(req),
            &by,
            target.namespace.as_deref(),
            body,
        )?;
        return Ok(render::respond(201, &answer, format));
    }
    // An eviction and a token request are only ever created.
    if matches!(target.subresource.as_deref(), Some("eviction" | "token")) && verb != "create" {
        return Err(ApiError::MethodNotAllowed);
    }
    match verb {
        "get" => {
            wait_fresh(state, read_options::get(&q)?).await?;
            let obj = objects.get(&target)?;
            Ok(match format {
                Format::Table(include) if target.subresource.is_none() => {
                    let rev = meta::resource_version(&obj).and_then(|r| r.parse().ok());
                    render::json_response(
                        200,
                        &render::table_body(target.resource, &[obj], include, rev, None),
                    )
                }
                _ => render::respond(200, &obj, format),
            })
        }
        "list" => {
            let mut opts = list_options(&q)?;
            let read = read_options::list(&q, opts.limit.is_some_and(|l| l > 0))?;
            opts.read_at = read.at;
            opts.continue_token = read.continue_token;
            wait_fresh(state, read.at).await?;
            let page = objects.list(&target, &opts)?;
            let body = match format {
                Format::Table(include) => render::table_body(
                    target.resource,
                    &page.items,
                    include,
                    Some(page.rev),
                    page.continue_token.as_deref(),
                ),
                Format::Json | Format::Protobuf => render::list_body(
                    target.resource,
                    &page.items,
                    page.rev,
                    page.continue_token.as_deref(),
                    page.remaining,
                ),
            };
            Ok(render::respond(200, &body, format))
        }
        "watch" => start_watch(state, target, &q, format).await,
        "create" => {
            let body = read_object(req, payload, state.max_body, request_type(&target)).await?;
            if target.subresource.as_deref() == Some("binding") {
                let status = objects.bind(&target, body).await?;
                return Ok(render::respond(201, &status, format));
            }
            if target.subresource.as_deref() == Some("eviction") {
                let status = evict(objects, &target, body, &q).await?;
                return Ok(render::respond(201, &status, format));
            }
            if target.subresource.as_deref() == Some("token") {
                let answer = objects.create_token(&target, body, &auth::user_of(req))?;
                return Ok(render::respond(201, &answer, format));
            }
            let mut body = body;
            if target.resource.name == csr::RESOURCE {
                csr::admit_create(&mut body, &auth::user_of(req))?;
            }
            auth::node::admit_create(&auth::user_of(req), target.resource.name, &body)?;
            let written = objects
                .create(&target, body, &admitted(req, state, &target, &q)?)
                .await?;
            Ok(written_response(written, format))
        }
        "update" => {
            let body = read_object(req, payload, state.max_body, request_type(&target)).await?;
            let written = objects
                .update(&target, body, &admitted(req, state, &target, &q)?)
                .await?;
            Ok(written_response(written, format))
        }
        "patch" => {
            let kind = PatchType::from_content_type(header(req, "content-type").unwrap_or(""))?;
            let bytes = read_body(req, payload, state.max_body).await?;
            let body = parse_json(&bytes)?;
            let written = objects
                .patch(&target, kind, body, &admitted(req, state, &target, &q)?)
                .await?;
            Ok(written_response(written, format))
        }
        "delete" => {
            let opts = delete_options(req, payload, state.max_body, &q).await?;
            let obj = objects.delete(&target, &opts).await?;
            Ok(render::respond(200, &obj, format))
        }
        "deletecollection" => {
            let opts = delete_options(req, payload, state.max_body, &q).await?;
            let list = list_options(&q)?;
            let (items, rev) = objects.delete_collection(&target, &list, &opts).await?;
            let items: Vec<_> = items.into_iter().map(std::sync::Arc::new).collect();
            Ok(render::respond(
                200,
                &render::list_body(target.resource, &items, rev, None, None),
                format,
            ))
        }
        _ => Err(ApiError::MethodNotAllowed),
    }
}

/// The type a create or update body must be, as `(apiVersion, kind)`: the resource's,
/// or its subresource's.
fn request_type(target: &Target) -> (String, &'static str) {
    match target.subresource.as_deref() {
        Some("binding") => ("v1".into(), "Binding"),
        Some("eviction") => ("policy/v1".into(), "Eviction"),
        Some("token") => ("authentication.k8s.io/v1".into(), "TokenRequest"),
        Some("scale") => ("autoscaling/v1".into(), "Scale"),
        _ => (target.resource.api_version(), target.resource.kind),
    }
}

/// `POST pods/<name>/eviction` (what `kubectl drain` sends): the Eviction's checks, then
/// [`eviction::evict`] with its DeleteOptions.
async fn evict(
    objects: &super::objects::Objects,
    target: &Target,
    body: Value,
    q: &Query,
) -> Result<Value, ApiError> {
    let name = target.name.as_deref().unwrap_or("");
    if !body.is_object() {
        return Err(ApiError::BadRequest("an Eviction must be an object".into()));
    }
    if let Some(kind) = body.get("kind").and_then(Value::as_str) {
        if kind != "Eviction" {
            let version = body.get("apiVersion").and_then(Value::as_str).unwrap_or("");
            return Err(ApiError::BadRequest(format!(
                "{kind} in version {:?} cannot be handled as a Eviction: no kind {kind:?} is registered for the eviction subresource",
                version.rsplit('/').next().unwrap_or("")
            )));
        }
    }
    if let Some(named) = body.pointer("/metadata/name").and_then(Value::as_str) {
        if named != name {
            return Err(ApiError::BadRequest(format!(
                "name in URL does not match name in Eviction object: {named}"
            )));
        }
    }
    let options = body
        .get("deleteOptions")
        .cloned()
        .unwrap_or_else(|| json!({}));
    let opts = delete_options_of(options, q)?;
    eviction::evict(objects, target, opts).await
}

fn written_response(w: Written, format: Format) -> HttpResponse {
    let mut resp = render::respond(if w.created { 201 } else { 200 }, &w.object, format);
    for warning in w.warnings {
        let text = format!("299 - \"{}\"", warning.replace('"', "\\\""));
        if let Ok(v) = actix_web::http::header::HeaderValue::from_str(&text) {
            resp.headers_mut().append(
                actix_web::http::header::HeaderName::from_static("warning"),
                v,
            );
        }
    }
    resp
}

/// Wait (briefly) for the store to reach the revision a read asks for, as
/// kube-apiserver waits for its watch cache; "Too large resource version" if it does not.
async fn wait_fresh(state: &AppState, at: ReadAt) -> Result<(), ApiError> {
    if matches!(at, ReadAt::Latest) {
        // A read of the latest state is consistent: on etcd it waits for the snapshot to
        // hold what the datastore has acknowledged (other servers' writes too).
        return state
            .objects
            .store
            .sync()
            .await
            .map_err(|e| super::objects::store_error(e, "", ""));
    }
    match at.min_rev() {
        Some(rev) => state
            .objects
            .store
            .wait_for_revision(rev, FRESHNESS_WAIT)
            .await
            .map_err(|e| super::objects::store_error(e, "", "")),
        None => Ok(()),
    }
}

async fn start_watch(
    state: &AppState,
    target: Target,
    q: &Query,
    format: Format,
) -> Result<HttpResponse, ApiError> {
    let mut opts = list_options(q)?;
    // Watching one object is a watch of its collection narrowed to its name.
    if let Some(name) = &target.name {
        opts.field_selector = FieldSelector::parse(&format!("metadata.name={name}"))
            .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    }
    let read = read_options::watch(q)?;
    let timeout = match q.get("timeoutSeconds") {
        Some(s) => Duration::from_secs(
            s.parse::<u64>()
                .map_err(|_| ApiError::BadRequest(format!("invalid timeoutSeconds: {s}")))?,
        ),
        None => state.watch_timeout,
    }
    .min(state.watch_timeout);
    let info = target.resource;
    // A field the resource cannot be selected on is refused, as a list would refuse it.
    check_fields(info, &opts.field_selector)?;
    let prefix = resources::prefix(info.name, target.namespace.as_deref());
    let spec = WatchSpec {
        info,
        filter: watch::WatchFilter {
            labels: opts.label_selector,
            fields: opts.field_selector,
        },
        format,
        timeout,
        bookmarks: read.bookmarks.then_some(state.bookmark_interval),
        initial_events_end: read.initial_events_end,
    };
    let content_type = spec.content_type();
    let body = match open_watch(&state.objects.store, &prefix, read.start).await {
        Ok(stream) => watch::event_stream(spec, stream, state.metrics.clone()).left_stream(),
        // The request was valid; what the store cannot serve is reported in the stream,
        // as kube-apiserver does (clients relist on its 410).
        Err(e) => watch::error_stream(format, &super::objects::store_error(e, info.name, ""))
            .right_stream(),
    };
    Ok(HttpResponse::Ok()
        .content_type(content_type)
        .insert_header(("Transfer-Encoding", "chunked"))
        .streaming(body))
}

/// Subscribe to the store where the watch starts, waiting briefly for a revision the
/// store has not reached.
async fn open_watch(
    store: &crate::store::StoreHandle,
    prefix: &str,
    start: WatchStart,
) -> Result<crate::store::WatchStream, crate::store::StoreError> {
    let from = match start {
        WatchStart::InitialState { min_rev } => {
            if let Some(rev) = min_rev {
                store.wait_for_revision(rev, FRESHNESS_WAIT).await?;
            }
            None
        }
        WatchStart::After(rev) => {
            store.wait_for_revision(rev, FRESHNESS_WAIT).await?;
            Some(rev)
        }
        WatchStart::Now => Some(store.revision()),
    };
    store.watch(prefix, from).await
}

fn list_options(q: &Query) -> Result<ListOptions, ApiError> {
    let label_selector = match q.get("labelSelector") {
        Some(s) => LabelSelector::parse(s).map_err(|e| ApiError::BadRequest(e.to_string()))?,
        None => LabelSelector::default(),
    };
    let field_selector = match q.get("fieldSelector") {
        Some(s) => FieldSelector::parse(s).map_err(|e| ApiError::BadRequest(e.to_string()))?,
        None => FieldSelector::default(),
    };
    let limit = match q.get("limit").map(String::as_str) {
        None | Some("") => None,
        Some(l) => Some(
            l.parse::<usize>()
                .map_err(|_| ApiError::BadRequest(format!("invalid limit: {l}")))?,
        ),
    };
    Ok(ListOptions {
        label_selector,
        field_selector,
        limit,
        continue_token: q.get("continue").filter(|c| !c.is_empty()).cloned(),
        read_at: ReadAt::Latest,
    })
}

/// Write options with the admission that depends on who writes (RBAC escalation).
fn admitted(
    req: &HttpRequest,
    state: &AppState,
    target: &Target,
    q: &Query,
) -> Result<WriteOptions, ApiError> {
    let mut opts = write_options(q)?;
    opts.manager = managed_fields::manager_of(
        q.get("fieldManager").map(String::as_str),
        header(req, "user-agent"),
    );
    opts.admit = auth::escalation::admission(
        &state.authorization,
        &state.objects.store,
        &auth::user_of(req),
        target.resource.name,
    );
    Ok(opts)
}

fn write_options(q: &Query) -> Result<WriteOptions, ApiError> {
    if let Some(m) = q.get("fieldManager") {
        managed_fields::validate_manager(m).map_err(ApiError::BadRequest)?;
    }
    Ok(WriteOptions {
        field_validation: FieldValidation::parse(q.get("fieldValidation").map(String::as_str))?,
        dry_run: dry_run(q)?,
        admit: None,
        manager: String::new(),
    })
}

fn dry_run(q: &Query) -> Result<bool, ApiError> {
    match q.get("dryRun").map(String::as_str) {
        None | Some("") => Ok(false),
        Some("All") => Ok(true),
        Some(other) => Err(ApiError::BadRequest(format!(
            "dryRun: Unsupported value: \"{other}\": supported values: \"All\""
        ))),
    }
}

async fn delete_options(
    req: &HttpRequest,
    payload: web::Payload,
    limit: usize,
    q: &Query,
) -> Result<DeleteOptions, ApiError> {
    let bytes = read_body(req, payload, limit).await?;
    let body = if bytes.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else if media_type(req) == protobuf::MEDIA_TYPE {
        decode_protobuf(&bytes, ("v1".into(), "DeleteOptions"))?
    } else {
        parse_json(&bytes)?
    };
    delete_options_of(body, q)
}

fn delete_options_of(body: Value, q: &Query) -> Result<DeleteOptions, ApiError> {
    if !body.is_object() {
        return Err(ApiError::BadRequest(
            "DeleteOptions must be a JSON object".into(),
        ));
    }
    crate::api::validation::decode_check("DeleteOptions", &body)
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let str_of = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_string);
    let precondition_rv = match str_of(body.pointer("/preconditions/resourceVersion")) {
        Some(rv) => Some(
            rv.parse()
                .map_err(|_| ApiError::BadRequest(format!("invalid resourceVersion {rv:?}")))?,
        ),
        None => None,
    };
    let grace_period = match (body.get("gracePeriodSeconds"), q.get("gracePeriodSeconds")) {
        (Some(v), _) => v.as_i64(),
        (None, Some(s)) => Some(
            s.parse()
                .map_err(|_| ApiError::BadRequest(format!("invalid gracePeriodSeconds: {s}")))?,
        ),
        _ => None,
    };
    let body_dry_run = body
        .get("dryRun")
        .and_then(Value::as_array)
        .is_some_and(|a| a.iter().any(|v| v == "All"));
    Ok(DeleteOptions {
        propagation: str_of(body.get("propagationPolicy"))
            .or_else(|| q.get("propagationPolicy").cloned()),
        precondition_uid: str_of(body.pointer("/preconditions/uid")),
        precondition_rv,
        grace_period,
        dry_run: body_dry_run || dry_run(q)?,
    })
}

fn header<'a>(req: &'a HttpRequest, name: &str) -> Option<&'a str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

/// Read the body, refusing more than `limit` bytes with 413 before buffering it all.
async fn read_body(
    req: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
) -> Result<web::BytesMut, ApiError> {
    let declared = header(req, "content-length").and_then(|l| l.parse::<usize>().ok());
    if declared.is_some_and(|l| l > limit) {
        return Err(ApiError::TooLarge { limit });
    }
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| match e {
            actix_web::error::PayloadError::Io(io) if io.kind() == std::io::ErrorKind::TimedOut => {
                ApiError::RequestTimeout(format!("reading request body: {io}"))
            }
            e => ApiError::BadRequest(format!("reading request body: {e}")),
        })?;
        if body.len() + chunk.len() > limit {
            return Err(ApiError::TooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The media type of the request body, lowercase and without parameters.
fn media_type(req: &HttpRequest) -> String {
    header(req, "content-type")
        .unwrap_or("application/json")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// Decode a protobuf body that must hold `expected` (`(apiVersion, kind)`, which also
/// fill in an envelope that leaves them out, as kube-apiserver's defaults do), with
/// kube-apiserver's words for what is wrong with it.
fn decode_protobuf(bytes: &[u8], expected: (String, &str)) -> Result<Value, ApiError> {
    let (default_version, kind) = expected;
    let mut env = protobuf::envelope(bytes).map_err(|e| {
        ApiError::BadRequest(format!(
            "the object provided is unrecognized (must be of type {kind}): {e} ({})",
            protobuf::summarize(bytes)
        ))
    })?;
    if env.kind.is_empty() {
        env.kind = kind.to_string();
    }
    if env.api_version.is_empty() {
        env.api_version = default_version;
    }
    let cannot = |why: String| {
        ApiError::BadRequest(format!(
            "{} in version {:?} cannot be handled as a {kind}: {why}",
            env.kind,
            env.version()
        ))
    };
    if protobuf::message_for(&env.api_version, &env.kind).is_none() {
        return Err(cannot(format!(
            "no kind {:?} is registered for version {:?}",
            env.kind, env.api_version
        )));
    }
    if env.kind != kind {
        let package = |api_version: &str| match api_version.split_once('/') {
            Some((group, _)) => group.split('.').next().unwrap_or(group).to_string(),
            None => "core".into(),
        };
        return Err(cannot(format!(
            "converting ({}.{}) to ({}.{kind}): unknown conversion",
            env.version(),
            env.kind,
            package(&env.api_version)
        )));
    }
    protobuf::decode_envelope(&env).map_err(|e| cannot(e.to_string()))
}

/// Decode a create or update body: JSON (also when no Content-Type is given), YAML, or
/// Kubernetes protobuf holding a `kind`.
async fn read_object(
    req: &HttpRequest,
    payload: web::Payload,
    limit: usize,
    expected: (String, &str),
) -> Result<Value, ApiError> {
    let media = media_type(req);
    let bytes = read_body(req, payload, limit).await?;
    match media.as_str() {
        "" | "application/json" | "*/*" | "text/plain" => parse_json(&bytes),
        "application/yaml" | "application/x-yaml" | "text/yaml" => serde_yaml_ng::from_slice(&bytes)
            .map_err(|e| ApiError::BadRequest(format!("error converting YAML to JSON: {e}"))),
        protobuf::MEDIA_TYPE => decode_protobuf(&bytes, expected),
        other => Err(ApiError::UnsupportedMediaType(format!(
            "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/vnd.kubernetes.protobuf (got {other})"
        ))),
    }
}

fn parse_json(bytes: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| {
        ApiError::BadRequest(format!("couldn't get version/kind; json parse error: {e}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn get_with_watch_parameter_is_a_watch() {
        let t = routing::parse("namespaces/default/pods").expect("route");
        let mut q = Query::new();
        assert_eq!(verb_of(&Method::GET, &t, &q), "list");
        q.insert("watch".into(), "true".into());
        assert_eq!(verb_of(&Method::GET, &t, &q), "watch");
        assert_eq!(verb_of(&Method::DELETE, &t, &q), "deletecollection");
    }

    #[test]
    fn limit_must_be_a_number() {
        let mut q = Query::new();
        q.insert("limit".into(), "ten".into());
        assert!(matches!(list_options(&q), Err(ApiError::BadRequest(_))));
    }
}
