//! API errors and their `Status` form: every failure a client sees is one of these, with the
//! HTTP code and reason Kubernetes uses for it.

use serde_json::{json, Value};

use super::validation::FieldError;

/// An error answered to an API client as a `meta/v1` `Status`.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{resource} \"{name}\" not found")]
    NotFound { resource: String, name: String },
    #[error("the server could not find the requested resource")]
    NoRoute,
    #[error("{resource} \"{name}\" already exists")]
    AlreadyExists { resource: String, name: String },
    #[error("Operation cannot be fulfilled on {resource} \"{name}\": {detail}")]
    Conflict {
        resource: String,
        name: String,
        detail: String,
    },
    #[error("{0}")]
    Expired(String),
    #[error("{0}")]
    Forbidden(String),
    /// No credential, or none the server accepts; the message never says which.
    #[error("Unauthorized")]
    Unauthorized,
    #[error("the request body is too large: limit is {limit} bytes")]
    TooLarge { limit: usize },
    #[error("the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json")]
    UnsupportedPatch,
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{kind} \"{name}\" is invalid: {}", causes.iter().map(FieldError::message).collect::<Vec<_>>().join(", "))]
    Invalid {
        kind: String,
        group: String,
        name: String,
        causes: Vec<FieldError>,
    },
    /// 422 without field causes: a well-formed request the server cannot carry out, such
    /// as a JSON patch whose `test` fails (kube-apiserver answers it as Invalid).
    #[error("{0}")]
    Unprocessable(String),
    #[error("the server does not allow this method on the requested resource")]
    MethodNotAllowed,
    #[error("{0}")]
    ServiceUnavailable(String),
    /// 408: the client did not send its request in time.
    #[error("{0}")]
    RequestTimeout(String),
    /// 429: a limit on requests was reached; retry after this many seconds.
    #[error("{message}")]
    TooManyRequests { message: String, retry_after: u64 },
    #[error("{0}")]
    Timeout(String),
    #[error("{0}")]
    Internal(String),
    /// A `Status` received from a remote server that has no closer variant.
    #[error("{message}")]
    Remote {
        code: u16,
        reason: String,
        message: String,
    },
}

impl ApiError {
    pub fn not_found(resource: &str, name: &str) -> Self {
        ApiError::NotFound {
            resource: resource.to_string(),
            name: name.to_string(),
        }
    }

    pub fn conflict(resource: &str, name: &str, detail: impl Into<String>) -> Self {
        ApiError::Conflict {
            resource: resource.to_string(),
            name: name.to_string(),
            detail: detail.into(),
        }
    }

    pub fn code(&self) -> u16 {
        match self {
            ApiError::BadRequest(_) => 400,
            ApiError::NotFound { .. } | ApiError::NoRoute => 404,
            ApiError::AlreadyExists { .. } | ApiError::Conflict { .. } => 409,
            ApiError::Expired(_) => 410,
            ApiError::Forbidden(_) => 403,
            ApiError::Unauthorized => 401,
            ApiError::TooLarge { .. } => 413,
            ApiError::UnsupportedPatch | ApiError::UnsupportedMediaType(_) => 415,
            ApiError::Invalid { .. } | ApiError::Unprocessable(_) => 422,
            ApiError::MethodNotAllowed => 405,
            ApiError::ServiceUnavailable(_) => 503,
            ApiError::TooManyRequests { .. } => 429,
            ApiError::RequestTimeout(_) => 408,
            ApiError::Timeout(_) => 504,
            ApiError::Internal(_) => 500,
            ApiError::Remote { code, .. } => *code,
        }
    }

    pub fn reason(&self) -> &str {
        match self {
            ApiError::BadRequest(_) => "BadRequest",
            ApiError::NotFound { .. } | ApiError::NoRoute => "NotFound",
            ApiError::AlreadyExists { .. } => "AlreadyExists",
            ApiError::Conflict { .. } => "Conflict",
            ApiError::Expired(_) => "Expired",
            ApiError::Forbidden(_) => "Forbidden",
            ApiError::Unauthorized => "Unauthorized",
            ApiError::TooLarge { .. } => "RequestEntityTooLarge",
            ApiError::UnsupportedPatch | ApiError::UnsupportedMediaType(_) => {
                "UnsupportedMediaType"
            }
            ApiError::Invalid { .. } | ApiError::Unprocessable(_) => "Invalid",
            ApiError::MethodNotAllowed => "MethodNotAllowed",
            ApiError::ServiceUnavailable(_) => "ServiceUnavailable",
            ApiError::TooManyRequests { .. } => "TooManyRequests",
            ApiError::RequestTimeout(_) => "Timeout",
            ApiError::Timeout(_) => "Timeout",
            ApiError::Internal(_) => "InternalError",
            ApiError::Remote { reason, .. } => reason,
        }
    }

    fn details(&self) -> Option<Value> {
        match self {
            ApiError::NotFound { resource, name }
            | ApiError::AlreadyExists { resource, name }
            | ApiError::Conflict { resource, name, .. } => {
                Some(json!({"name": name, "kind": resource}))
            }
            ApiError::Invalid {
                kind,
                group,
                name,
                causes,
            } => Some(json!({
                "name": name,
                "group": group,
                "kind": kind,
                "causes": causes.iter().map(|c| json!({
                    "reason": c.reason(),
                    "message": c.message(),
                    "field": c.field,
                })).collect::<Vec<_>>(),
            })),
            ApiError::ServiceUnavailable(_) => Some(json!({"retryAfterSeconds": 1})),
            ApiError::TooManyRequests { retry_after, .. } => {
                Some(json!({"retryAfterSeconds": retry_after}))
            }
            _ => None,
        }
    }

    /// The error a `Status` answered by a server stands for.
    pub fn from_status(code: u16, status: &Value) -> Self {
        let s = |p: &str| {
            status
                .pointer(p)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        let (message, reason) = (s("/message"), s("/reason"));
        let (resource, name) = (s("/details/kind"), s("/details/name"));
        match (code, reason.as_str()) {
            (404, _) if !name.is_empty() => ApiError::NotFound { resource, name },
            (409, "AlreadyExists") => ApiError::AlreadyExists { resource, name },
            (409, "Conflict") => ApiError::Conflict {
                resource,
                name,
                detail: message.rsplit(": ").next().unwrap_or("").to_string(),
            },
            (410, _) => ApiError::Expired(message),
            (503, _) => ApiError::ServiceUnavailable(message),
            (429, _) => ApiError::TooManyRequests {
                message,
                retry_after: status
                    .pointer("/details/retryAfterSeconds")
                    .and_then(Value::as_u64)
                    .unwrap_or(1),
            },
            (400, _) => ApiError::BadRequest(message),
            (403, _) => ApiError::Forbidden(message),
            (401, _) => ApiError::Unauthorized,
            _ => ApiError::Remote {
                code,
                reason,
                message,
            },
        }
    }

    /// The `Status` object Kubernetes would answer with.
    pub fn to_status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.to_string(),
            "reason": self.reason(),
            "code": self.code(),
        });
        if let Some(details) = self.details() {
            status["details"] = details;
        }
        status
    }
}

/// A `Status` reporting success, as Kubernetes answers some deletes and bindings.
pub fn success_status(code: u16, details: Option<Value>) -> Value {
    let mut status = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "code": code,
    });
    if let Some(details) = details {
        status["details"] = details;
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_found_status_carries_kubernetes_message_and_code() {
        let status = ApiError::not_found("pods", "web").to_status();
        assert_eq!(status["code"], 404);
        assert_eq!(status["reason"], "NotFound");
        assert_eq!(status["message"], "pods \"web\" not found");
        assert_eq!(status["details"]["kind"], "pods");
    }

    #[test]
    fn status_round_trips_to_the_same_error_kind() {
        let err = ApiError::not_found("pods", "web");
        let back = ApiError::from_status(err.code(), &err.to_status());
        assert!(matches!(back, ApiError::NotFound { ref name, .. } if name == "web"));
        let invalid = ApiError::from_status(422, &json!({"reason": "Invalid", "message": "bad"}));
        assert_eq!((invalid.code(), invalid.reason()), (422, "Invalid"));
    }

    #[test]
    fn conflict_message_matches_kubernetes_optimistic_lock_wording() {
        let err = ApiError::conflict(
            "pods",
            "web",
            "the object has been modified; please apply your changes to the latest version and try again",
        );
        assert_eq!(err.code(), 409);
        assert!(err
            .to_string()
            .starts_with("Operation cannot be fulfilled on pods \"web\""));
    }
}
