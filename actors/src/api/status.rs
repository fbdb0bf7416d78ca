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
    /// 410 for a continue token whose revision is compacted; the Status carries a token
    /// that continues (inconsistently) from the same key at the latest revision.
    #[error("The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.")]
    ExpiredContinue { continue_token: String },
    /// 504: a read at a revision the store did not reach in time (kube-apiserver's
    /// `NewTooLargeResourceVersionError`).
    #[error("Timeout: Too large resource version: {requested}, current: {current}")]
    TooLargeResourceVersion { requested: u64, current: u64 },
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
    #[error("{kind}{} \"{name}\" is invalid: {}", group_suffix(group), causes.iter().map(FieldError::message).collect::<Vec<_>>().join(", "))]
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
    /// 429 for an eviction a PodDisruptionBudget does not allow now; `cause` says which
    /// budget and why, as the `DisruptionBudget` cause kube-apiserver adds.
    #[error("Cannot evict pod as it would violate the pod's disruption budget.")]
    DisruptionBudget { cause: String, retry_after: u64 },
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

/// A kind is qualified by its group in messages, as Kubernetes' `GroupKind.String()`
/// prints it (`Deployment.apps`, `ListOptions.meta.k8s.io`, `Pod`).
fn group_suffix(group: &str) -> String {
    if group.is_empty() {
        String::new()
    } else {
        format!(".{group}")
    }
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
            ApiError::Expired(_) | ApiError::ExpiredContinue { .. } => 410,
            ApiError::TooLargeResourceVersion { .. } => 504,
            ApiError::Forbidden(_) => 403,
            ApiError::Unauthorized => 401,
            ApiError::TooLarge { .. } => 413,
            ApiError::UnsupportedPatch | ApiError::UnsupportedMediaType(_) => 415,
            ApiError::Invalid { .. } | ApiError::Unprocessable(_) => 422,
            ApiError::MethodNotAllowed => 405,
            ApiError::ServiceUnavailable(_) => 503,
            ApiError::TooManyRequests { .. } | ApiError::DisruptionBudget { .. } => 429,
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
            ApiError::Expired(_) | ApiError::ExpiredContinue { .. } => "Expired",
            ApiError::TooLargeResourceVersion { .. } => "Timeout",
            ApiError::Forbidden(_) => "Forbidden",
            ApiError::Unauthorized => "Unauthorized",
            ApiError::TooLarge { .. } => "RequestEntityTooLarge",
            ApiError::UnsupportedPatch | ApiError::UnsupportedMediaType(_) => {
                "UnsupportedMediaType"
            }
            ApiError::Invalid { .. } | ApiError::Unprocessable(_) => "Invalid",
            ApiError::MethodNotAllowed => "MethodNotAllowed",
            ApiError::ServiceUnavailable(_) => "ServiceUnavailable",
            ApiError::TooManyRequests { .. } | ApiError::DisruptionBudget { .. } => {
                "TooManyRequests"
            }
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
                    "message": c.body(),
                    "field": c.field,
                })).collect::<Vec<_>>(),
            })),
            ApiError::ServiceUnavailable(_) => Some(json!({"retryAfterSeconds": 1})),
            ApiError::TooLargeResourceVersion { .. } => Some(json!({
                "causes": [{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}],
                "retryAfterSeconds": 1,
            })),
            ApiError::TooManyRequests { retry_after, .. } => {
                Some(json!({"retryAfterSeconds": retry_after}))
            }
            ApiError::DisruptionBudget { cause, retry_after } => {
                let mut d = json!({"causes": [{"reason": "DisruptionBudget", "message": cause}]});
                if *retry_after > 0 {
                    d["retryAfterSeconds"] = json!(retry_after);
                }
                Some(d)
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
            (504, "Timeout")
                if status
                    .pointer("/details/causes/0/reason")
                    .and_then(Value::as_str)
                    == Some("ResourceVersionTooLarge") =>
            {
                let (requested, current) = too_large_revisions(&message);
                ApiError::TooLargeResourceVersion { requested, current }
            }
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
        if let ApiError::ExpiredContinue { continue_token } = self {
            status["metadata"] = json!({"continue": continue_token});
        }
        status
    }
}

/// The revisions of a "Too large resource version: X, current: Y" message.
fn too_large_revisions(message: &str) -> (u64, u64) {
    let mut numbers = message
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse().ok());
    (numbers.next().unwrap_or(0), numbers.next().unwrap_or(0))
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
    fn too_large_resource_version_is_a_timeout_with_its_cause() {
        let err = ApiError::TooLargeResourceVersion {
            requested: 12,
            current: 9,
        };
        let status = err.to_status();
        assert_eq!(status["code"], 504);
        assert_eq!(status["reason"], "Timeout");
        assert_eq!(
            status["message"],
            "Timeout: Too large resource version: 12, current: 9"
        );
        assert_eq!(
            status["details"]["causes"][0]["reason"],
            "ResourceVersionTooLarge"
        );
        assert!(matches!(
            ApiError::from_status(504, &status),
            ApiError::TooLargeResourceVersion {
                requested: 12,
                current: 9
            }
        ));
    }

    #[test]
    fn an_expired_continue_token_status_carries_the_inconsistent_token() {
        let status = ApiError::ExpiredContinue {
            continue_token: "abc".into(),
        }
        .to_status();
        assert_eq!(
            (status["code"].as_u64(), status["reason"].as_str()),
            (Some(410), Some("Expired"))
        );
        assert_eq!(status["metadata"]["continue"], "abc");
        assert!(status["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("The provided continue parameter is too old")));
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
