//! Response bodies: lists, Tables and `Status` errors, in the shapes kubectl expects.

use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::HttpResponse;
use chrono::Utc;
use serde_json::{json, Value};

use crate::api::resources::ResourceInfo;
use crate::api::{table, ApiError};

/// What the client asked to get back, from its Accept header and `includeObject`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
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
        let wants_table = accept.is_some_and(|a| {
            a.split(',').any(|part| {
                let params: Vec<&str> = part.split(';').map(str::trim).collect();
                params.contains(&"as=Table")
                    && params.contains(&"g=meta.k8s.io")
                    && params.iter().any(|p| *p == "v=v1" || *p == "v=v1beta1")
            })
        });
        if !wants_table {
            return Ok(Format::Json);
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
}

pub fn json_response(code: u16, body: &Value) -> HttpResponse {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::OK);
    HttpResponse::build(status)
        .content_type("application/json")
        .body(body.to_string())
}

pub fn error_response(err: &ApiError) -> HttpResponse {
    let mut resp = json_response(err.code(), &err.to_status());
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
    // The events.k8s.io view prints the columns of the Events it shows.
    let cells = if info.group == crate::api::events_v1::GROUP {
        table::cells(info.name, &crate::api::events_v1::to_core(obj), Utc::now())
    } else {
        table::cells(info.name, obj, Utc::now())
    };
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
        "columnDefinitions": table::columns(info.name),
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
}
