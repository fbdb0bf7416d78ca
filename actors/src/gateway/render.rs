//! Response bodies: lists, Tables and `Status` errors, in the shapes kubectl expects, in
//! JSON or (when the client asks for it) Kubernetes protobuf.

use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::HttpResponse;
use chrono::Utc;
use serde_json::{json, Value};

use crate::api::resources::ResourceInfo;
use crate::api::{protobuf, ApiError};

/// What the client asked to get back, from its Accept header and `includeObject`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    /// `application/vnd.kubernetes.protobuf`, which client-go's typed clients (and so
    /// kubectl's) ask for first.
    Protobuf,
    Table(IncludeObject),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IncludeObject {
    None,
    Metadata,
    Object,
}

impl Format {
    pub fn negotiate(
        accept: Option<&str>,
        include_object: Option<&str>,
    ) -> Result<Format, ApiError> {
        match Self::from_accept(accept) {
            Format::Table(_) => {}
            other => return Ok(other),
        }
        let include = match include_object {
            None | Some("") | Some("Metadata") => IncludeObject::Metadata,
            Some("None") => IncludeObject::None,
            Some("Object") => IncludeObject::Object,
            Some(other) => {
                return Err(ApiError::BadRequest(format!(
                    "includeObject: Unsupported value: \"{other}\": supported values: \"None\", \"Metadata\", \"Object\""
                )))
            }
        };
        Ok(Format::Table(include))
    }

    /// The first clause of the Accept header the gateway can answer, in the client's
    /// order (kubectl: `application/vnd.kubernetes.protobuf, */*`); JSON when none is.
    /// Tables are served in JSON only, as a clause asking for them in protobuf is passed
    /// over.
    pub fn from_accept(accept: Option<&str>) -> Format {
        for clause in accept.unwrap_or("").split(',') {
            let mut parts = clause.split(';').map(str::trim);
            let media = parts.next().unwrap_or("").to_ascii_lowercase();
            let params: Vec<&str> = parts.collect();
            if params.iter().any(|p| p.replace(' ', "") == "q=0") {
                continue;
            }
            let as_kind = params.iter().find_map(|p| p.strip_prefix("as="));
            let json = matches!(media.as_str(), "application/json" | "*/*" | "application/*");
            match as_kind {
                Some("Table")
                    if json
                        && params.contains(&"g=meta.k8s.io")
                        && params.iter().any(|p| *p == "v=v1" || *p == "v=v1beta1") =>
                {
                    return Format::Table(IncludeObject::Metadata)
                }
                Some(_) => continue,
                None if json => return Format::Json,
                None if media == protobuf::MEDIA_TYPE => return Format::Protobuf,
                None => {}
            }
        }
        Format::Json
    }
}

/// An object (or list, or Status) in the negotiated format; protobuf falls back to JSON
/// for what has no protobuf message.
pub fn respond(code: u16, body: &Value, format: Format) -> HttpResponse {
    if format == Format::Protobuf {
        match protobuf::encode(body) {
            Ok(bytes) => {
                let status = StatusCode::from_u16(code).unwrap_or(StatusCode::OK);
                return HttpResponse::build(status)
                    .content_type(protobuf::MEDIA_TYPE)
                    .body(bytes);
            }
            Err(e) => tracing::debug!(error = %e, "answering in JSON: no protobuf form"),
        }
    }
    json_response(code, body)
}

pub fn json_response(code: u16, body: &Value) -> HttpResponse {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::OK);
    HttpResponse::build(status)
        .content_type("application/json")
        .body(body.to_string())
}

pub fn error_response(err: &ApiError) -> HttpResponse {
    error_response_as(err, Format::Json)
}

/// A `Status` error in the format the client asked for.
pub fn error_response_as(err: &ApiError, format: Format) -> HttpResponse {
    let mut resp = respond(err.code(), &err.to_status(), format);
    let retry_after = match err {
        ApiError::ServiceUnavailable(_) => Some(1),
        ApiError::TooManyRequests { retry_after, .. } => Some(*retry_after),
        _ => None,
    };
    if let Some(secs) = retry_after {
        resp.headers_mut().insert(
            actix_web::http::header::RETRY_AFTER,
            actix_web::http::header::HeaderValue::from(secs),
        );
    }
    resp
}

pub fn list_body(
    info: &ResourceInfo,
    items: &[Arc<Value>],
    rev: u64,
    continue_token: Option<&str>,
    remaining: Option<usize>,
) -> Value {
    let mut metadata = json!({"resourceVersion": rev.to_string()});
    if let Some(tok) = continue_token {
        metadata["continue"] = json!(tok);
    }
    if let Some(n) = remaining {
        metadata["remainingItemCount"] = json!(n);
    }
    json!({
        "kind": info.list_kind(),
        "apiVersion": info.api_version(),
        "metadata": metadata,
        "items": items.iter().map(|i| &**i).collect::<Vec<_>>(),
    })
}

fn row(info: &ResourceInfo, obj: &Value, include: IncludeObject) -> Value {
    let cells = info.strategy.cells(obj, Utc::now());
    let object = match include {
        IncludeObject::None => Value::Null,
        IncludeObject::Metadata => json!({
            "kind": "PartialObjectMetadata",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": obj.get("metadata").cloned().unwrap_or(json!({})),
        }),
        IncludeObject::Object => obj.clone(),
    };
    let mut row = json!({"cells": cells});
    if !object.is_null() {
        row["object"] = object;
    }
    row
}

pub fn table_body(
    info: &ResourceInfo,
    items: &[Arc<Value>],
    include: IncludeObject,
    rev: Option<u64>,
    continue_token: Option<&str>,
) -> Value {
    let mut metadata = json!({});
    if let Some(rev) = rev {
        metadata["resourceVersion"] = json!(rev.to_string());
    }
    if let Some(tok) = continue_token {
        metadata["continue"] = json!(tok);
    }
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": metadata,
        "columnDefinitions": info.strategy.columns(),
        "rows": items.iter().map(|o| row(info, o, include)).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubectl_accept_header_selects_table() {
        let accept = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";
        assert_eq!(
            Format::negotiate(Some(accept), None).ok(),
            Some(Format::Table(IncludeObject::Metadata))
        );
        assert_eq!(
            Format::negotiate(Some("application/json"), None).ok(),
            Some(Format::Json)
        );
        assert!(Format::negotiate(Some(accept), Some("Everything")).is_err());
    }

    #[test]
    fn kubectl_typed_clients_get_protobuf_and_tables_stay_json() {
        let typed = "application/vnd.kubernetes.protobuf, */*";
        assert_eq!(Format::from_accept(Some(typed)), Format::Protobuf);
        assert_eq!(
            Format::from_accept(Some(
                "application/json, application/vnd.kubernetes.protobuf"
            )),
            Format::Json
        );
        assert_eq!(Format::from_accept(None), Format::Json);
        let table_pb = "application/vnd.kubernetes.protobuf;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1;g=meta.k8s.io,application/json";
        assert_eq!(
            Format::from_accept(Some(table_pb)),
            Format::Table(IncludeObject::Metadata)
        );
        assert_eq!(
            Format::from_accept(Some(
                "application/vnd.kubernetes.protobuf;q=0, application/json"
            )),
            Format::Json
        );
    }

    #[test]
    fn a_protobuf_status_is_what_client_go_decodes() {
        let resp = error_response_as(
            &ApiError::NotFound {
                resource: "pods".into(),
                name: "x".into(),
            },
            Format::Protobuf,
        );
        assert_eq!(resp.status().as_u16(), 404);
        let ct = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok());
        assert_eq!(ct, Some(protobuf::MEDIA_TYPE));
    }
}
