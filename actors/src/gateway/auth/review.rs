//! `SelfSubjectAccessReview` (authorization.k8s.io/v1): "may I do this?", answered by
//! the gateway's own authorizer chain for the requesting user, never stored. It is what
//! `kubectl auth can-i` posts.

use k8s_openapi::api::authorization::v1::{SelfSubjectAccessReview, SubjectAccessReviewStatus};
use serde_json::Value;

use super::{Attributes, Authorization, Decision, UserInfo};
use crate::api::validation::{self, FieldError, FieldErrorKind};
use crate::api::{meta, ApiError};

const KIND: &str = "SelfSubjectAccessReview";
const API_VERSION: &str = "authorization.k8s.io/v1";

/// Decide the review in `body` for `user`; the answer is the review with its status set.
pub fn self_subject_access_review(
    authz: &Authorization,
    user: &UserInfo,
    mut body: Value,
) -> Result<Value, ApiError> {
    let Some(map) = body.as_object_mut() else {
        return Err(ApiError::BadRequest(
            "the body of the request must be a JSON object".into(),
        ));
    };
    for (field, want) in [("kind", KIND), ("apiVersion", API_VERSION)] {
        match map.remove(field) {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) if s.is_empty() || s == want => {}
            Some(other) => {
                return Err(ApiError::BadRequest(format!(
                    "{field} {other} does not match the expected {want}"
                )))
            }
        }
    }
    validation::decode_check(KIND, &body).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let mut review: SelfSubjectAccessReview =
        serde_json::from_value(body).map_err(|e| ApiError::BadRequest(format!("{KIND}: {e}")))?;
    let attrs = attributes(user, &review)?;
    let decision = authz.decide(&attrs);
    tracing::debug!(user = %user.name, verb = %attrs.verb, resource = %attrs.resource, path = %attrs.path, ?decision, "access review");
    review.status = Some(match decision {
        Decision::Allow => SubjectAccessReviewStatus {
            allowed: true,
            ..Default::default()
        },
        Decision::Deny(reason) => SubjectAccessReviewStatus {
            allowed: false,
            denied: Some(true),
            reason: (!reason.is_empty()).then_some(reason),
            ..Default::default()
        },
        Decision::NoOpinion => SubjectAccessReviewStatus::default(),
    });
    review.metadata.creation_timestamp = None;
    serde_json::to_value(&review).map_err(|e| ApiError::Internal(e.to_string()))
}

fn invalid(field: &str, value: String, detail: &str) -> FieldError {
    FieldError {
        field: field.into(),
        kind: FieldErrorKind::Invalid,
        value: Some(value),
        detail: detail.into(),
    }
}

fn attributes(user: &UserInfo, review: &SelfSubjectAccessReview) -> Result<Attributes, ApiError> {
    let spec = &review.spec;
    let render = |v: &Option<_>| serde_json::to_string(v).unwrap_or_else(|_| "null".into());
    let cause = match (&spec.resource_attributes, &spec.non_resource_attributes) {
        (Some(_), Some(_)) => Some(invalid(
            "spec.nonResourceAttributes",
            render(&spec.non_resource_attributes),
            "cannot be specified in combination with resourceAttributes",
        )),
        (None, None) => Some(invalid(
            "spec.resourceAttributes",
            "null".into(),
            "exactly one of nonResourceAttributes or resourceAttributes must be specified",
        )),
        _ => None,
    };
    if let Some(cause) = cause {
        return Err(ApiError::Invalid {
            kind: KIND.into(),
            group: "authorization.k8s.io".into(),
            name: meta::name(&serde_json::to_value(&review.metadata).unwrap_or_default())
                .unwrap_or_default()
                .to_string(),
            causes: vec![cause],
        });
    }
    let text = |s: &Option<String>| s.clone().unwrap_or_default();
    if let Some(r) = &spec.resource_attributes {
        return Ok(Attributes {
            user: user.clone(),
            verb: text(&r.verb),
            resource_request: true,
            api_group: text(&r.group),
            resource: text(&r.resource),
            subresource: text(&r.subresource),
            namespace: text(&r.namespace),
            name: text(&r.name),
            path: String::new(),
        });
    }
    let n = spec.non_resource_attributes.clone().unwrap_or_default();
    Ok(Attributes::for_path(user, &text(&n.verb), &text(&n.path)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::auth::rbac::{Policy, PolicyRule};
    use crate::gateway::auth::Authorizer;
    use serde_json::json;
    use std::sync::Arc;

    struct ReadPods;
    impl Authorizer for ReadPods {
        fn authorize(&self, a: &Attributes) -> Decision {
            let p = Policy::from_objects(
                [
                    json!({"kind": "ClusterRole", "metadata": {"name": "r"},
                    "rules": [PolicyRule::resource(&[""], &["pods"], &["list"]).to_value()]}),
                    json!({"kind": "ClusterRoleBinding", "metadata": {"name": "b"},
                    "roleRef": {"kind": "ClusterRole", "name": "r"},
                    "subjects": [{"kind": "User", "name": "jane"}]}),
                ]
                .iter(),
            );
            match p.decide(a) {
                Decision::NoOpinion if a.resource == "nodes" => {
                    Decision::Deny("nodes are off limits".into())
                }
                d => d,
            }
        }
    }

    fn jane() -> UserInfo {
        UserInfo {
            name: "jane".into(),
            uid: String::new(),
            groups: vec![],
        }
    }

    fn review(attrs: Value) -> Value {
        json!({"apiVersion": API_VERSION, "kind": KIND, "spec": attrs})
    }

    #[test]
    fn a_review_answers_allowed_or_not_for_the_requesting_user() {
        let authz = Authorization::new(vec![Arc::new(ReadPods)]);
        let yes = self_subject_access_review(
            &authz,
            &jane(),
            review(json!({"resourceAttributes": {"namespace": "default", "verb": "list", "resource": "pods"}})),
        )
        .expect("review");
        assert_eq!(yes["status"]["allowed"], true);
        assert_eq!(yes["kind"], KIND);
        let no = self_subject_access_review(
            &authz,
            &jane(),
            review(json!({"resourceAttributes": {"namespace": "default", "verb": "create", "resource": "pods"}})),
        )
        .expect("review");
        assert_eq!(no["status"], json!({"allowed": false}));
        let denied = self_subject_access_review(
            &authz,
            &jane(),
            review(json!({"resourceAttributes": {"verb": "get", "resource": "nodes"}})),
        )
        .expect("review");
        assert_eq!(
            denied["status"],
            json!({"allowed": false, "denied": true, "reason": "nodes are off limits"})
        );
    }

    #[test]
    fn a_review_needs_exactly_one_kind_of_attributes() {
        let authz = Authorization::default();
        let err =
            self_subject_access_review(&authz, &jane(), review(json!({}))).expect_err("invalid");
        assert_eq!(err.code(), 422);
        let both = review(
            json!({"resourceAttributes": {"verb": "get"}, "nonResourceAttributes": {"path": "/", "verb": "get"}}),
        );
        assert_eq!(
            self_subject_access_review(&authz, &jane(), both)
                .expect_err("invalid")
                .code(),
            422
        );
        let wrong_type = review(json!({"resourceAttributes": {"verb": 5}}));
        assert_eq!(
            self_subject_access_review(&authz, &jane(), wrong_type)
                .expect_err("bad")
                .code(),
            400
        );
        assert_eq!(
            self_subject_access_review(&authz, &jane(), json!([1]))
                .expect_err("bad")
                .code(),
            400
        );
    }

    #[test]
    fn non_resource_reviews_ask_about_a_path() {
        let authz = Authorization::default();
        let r = self_subject_access_review(
            &authz,
            &jane(),
            review(json!({"nonResourceAttributes": {"path": "/healthz", "verb": "get"}})),
        )
        .expect("review");
        assert_eq!(r["status"]["allowed"], true);
    }
}
