//! The reviews of authorization.k8s.io/v1 and authentication.k8s.io/v1, answered by the
//! gateway's own authenticator and authorizer chain and never stored:
//! `SelfSubjectAccessReview` ("may I?", what `kubectl auth can-i` posts),
//! `SubjectAccessReview` and `LocalSubjectAccessReview` ("may they?"),
//! `SelfSubjectRulesReview` ("what may I do here?", `kubectl auth can-i --list`) and
//! `TokenReview` ("who is this token?").

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewStatus, UserInfo as KubeUser};
use k8s_openapi::api::authorization::v1::{
    NonResourceAttributes, NonResourceRule, ResourceAttributes, ResourceRule,
    SelfSubjectAccessReview, SelfSubjectRulesReview, SubjectAccessReview,
    SubjectAccessReviewStatus, SubjectRulesReviewStatus,
};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

use super::authn::Authenticator;
use super::{Attributes, Authorization, Decision, UserInfo};
use crate::api::validation::{self, FieldError, FieldErrorKind};
use crate::api::ApiError;

const KIND: &str = "SelfSubjectAccessReview";
const AUTHZ: &str = "authorization.k8s.io/v1";
const AUTHN: &str = "authentication.k8s.io/v1";
/// The audience kube-apiserver's own tokens are for (its default service account issuer).
pub const API_AUDIENCE: &str = "https://kubernetes.default.svc.cluster.local";

/// Decode a review body of `kind` into its type, refusing another kind or version.
fn decode<T: DeserializeOwned>(
    kind: &str,
    api_version: &str,
    mut body: Value,
) -> Result<T, ApiError> {
    let Some(map) = body.as_object_mut() else {
        return Err(ApiError::BadRequest(
            "the body of the request must be a JSON object".into(),
        ));
    };
    for (field, want) in [("kind", kind), ("apiVersion", api_version)] {
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
    validation::decode_check(kind, &body).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    serde_json::from_value(body).map_err(|e| ApiError::BadRequest(format!("{kind}: {e}")))
}

fn answer(kind: &str, api_version: &str, review: impl serde::Serialize) -> Result<Value, ApiError> {
    let mut v = serde_json::to_value(&review).map_err(|e| ApiError::Internal(e.to_string()))?;
    v["kind"] = json!(kind);
    v["apiVersion"] = json!(api_version);
    if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("creationTimestamp");
    }
    Ok(v)
}

fn status_of(decision: Decision) -> SubjectAccessReviewStatus {
    match decision {
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
    }
}

/// Decide the review in `body` for `user`; the answer is the review with its status set.
pub fn self_subject_access_review(
    authz: &Authorization,
    user: &UserInfo,
    body: Value,
) -> Result<Value, ApiError> {
    let mut review: SelfSubjectAccessReview = decode(KIND, AUTHZ, body)?;
    let spec = &review.spec;
    let attrs = attributes(
        KIND,
        user,
        &spec.resource_attributes,
        &spec.non_resource_attributes,
    )?;
    let decision = authz.decide(&attrs);
    tracing::debug!(user = %user.name, verb = %attrs.verb, resource = %attrs.resource, path = %attrs.path, ?decision, "access review");
    review.status = Some(status_of(decision));
    answer(KIND, AUTHZ, review)
}

/// `SubjectAccessReview` (cluster-wide) or, with the path's `namespace`,
/// `LocalSubjectAccessReview`: may the user the spec names do this?
pub fn subject_access_review(
    authz: &Authorization,
    body: Value,
    namespace: Option<&str>,
) -> Result<Value, ApiError> {
    let kind = match namespace {
        Some(_) => "LocalSubjectAccessReview",
        None => "SubjectAccessReview",
    };
    // The two kinds have the same shape.
    let mut review: SubjectAccessReview = decode(kind, AUTHZ, body)?;
    let spec = &mut review.spec;
    let name = review.metadata.name.clone().unwrap_or_default();
    let invalid_review = |cause: FieldError| ApiError::Invalid {
        kind: kind.into(),
        group: "authorization.k8s.io".into(),
        name: name.clone(),
        causes: vec![cause],
    };
    if spec.user.as_deref().unwrap_or("").is_empty()
        && spec.groups.as_ref().is_none_or(Vec::is_empty)
    {
        return Err(invalid_review(invalid(
            "spec.user",
            "\"\"".into(),
            "at least one of user or group must be specified",
        )));
    }
    if let Some(ns) = namespace {
        if spec.non_resource_attributes.is_some() {
            return Err(invalid_review(invalid(
                "spec.nonResourceAttributes",
                serde_json::to_string(&spec.non_resource_attributes).unwrap_or_default(),
                "disallowed on this kind of request",
            )));
        }
        if let Some(ra) = spec.resource_attributes.as_mut() {
            match ra.namespace.as_deref() {
                None | Some("") => ra.namespace = Some(ns.to_string()),
                Some(n) if n == ns => {}
                Some(_) => {
                    return Err(ApiError::BadRequest(format!(
                        "spec.resourceAttributes.namespace must match namespace: {ns}"
                    )))
                }
            }
        }
        review.metadata.namespace = Some(ns.to_string());
    }
    let spec = &review.spec;
    let subject = UserInfo {
        name: spec.user.clone().unwrap_or_default(),
        uid: spec.uid.clone().unwrap_or_default(),
        groups: spec.groups.clone().unwrap_or_default(),
    };
    let attrs = attributes(
        kind,
        &subject,
        &spec.resource_attributes,
        &spec.non_resource_attributes,
    )?;
    let decision = authz.decide(&attrs);
    tracing::debug!(user = %subject.name, verb = %attrs.verb, resource = %attrs.resource, ?decision, "subject access review");
    review.status = Some(status_of(decision));
    answer(kind, AUTHZ, review)
}

/// `SelfSubjectRulesReview`: the rules the caller has in `spec.namespace`.
pub fn self_subject_rules_review(
    authz: &Authorization,
    user: &UserInfo,
    body: Value,
) -> Result<Value, ApiError> {
    const RULES: &str = "SelfSubjectRulesReview";
    let mut review: SelfSubjectRulesReview = decode(RULES, AUTHZ, body)?;
    let ns = review.spec.namespace.clone().unwrap_or_default();
    if ns.is_empty() {
        return Err(ApiError::BadRequest("no namespace on request".into()));
    }
    let rules = authz.rules_for(user, &ns);
    let opt = |v: &Vec<String>| (!v.is_empty()).then(|| v.clone());
    review.status = Some(SubjectRulesReviewStatus {
        resource_rules: rules
            .resource
            .iter()
            .map(|r| ResourceRule {
                verbs: r.verbs.clone(),
                api_groups: opt(&r.api_groups),
                resources: opt(&r.resources),
                resource_names: opt(&r.resource_names),
            })
            .collect(),
        non_resource_rules: rules
            .non_resource
            .iter()
            .map(|r| NonResourceRule {
                verbs: r.verbs.clone(),
                non_resource_urls: opt(&r.non_resource_urls),
            })
            .collect(),
        incomplete: rules.incomplete,
        evaluation_error: (!rules.errors.is_empty()).then(|| rules.errors.join(", ")),
    });
    answer(RULES, AUTHZ, review)
}

/// `TokenReview`: who the token in the spec authenticates as, for the audiences asked
/// (the API server's own when none are). `authn` is `None` on the insecure path.
pub fn token_review(authn: Option<&Authenticator>, body: Value) -> Result<Value, ApiError> {
    const TOKEN: &str = "TokenReview";
    let mut review: TokenReview = decode(TOKEN, AUTHN, body)?;
    let token = review.spec.token.clone();
    if token.is_empty() {
        return Err(ApiError::BadRequest(
            "token is required for TokenReview in authentication".into(),
        ));
    }
    // Static tokens are good for the API server's audience only; service account tokens
    // for the audiences they were issued for.
    let wanted = review.spec.audiences.clone().unwrap_or_default();
    let user = authn.and_then(|a| a.authenticate_token(&token, &wanted, API_AUDIENCE));
    review.status = Some(match user {
        Some((u, audiences)) => TokenReviewStatus {
            authenticated: Some(true),
            audiences: Some(audiences),
            user: Some(KubeUser {
                username: Some(u.name),
                uid: (!u.uid.is_empty()).then_some(u.uid),
                groups: Some(u.groups),
                extra: None,
            }),
            error: None,
        },
        None => TokenReviewStatus {
            authenticated: Some(false),
            user: Some(KubeUser::default()),
            ..Default::default()
        },
    });
    answer(TOKEN, AUTHN, review)
}

fn invalid(field: &str, value: String, detail: &str) -> FieldError {
    FieldError {
        field: field.into(),
        kind: FieldErrorKind::Invalid,
        value: Some(value),
        detail: detail.into(),
    }
}

fn attributes(
    kind: &str,
    user: &UserInfo,
    resource: &Option<ResourceAttributes>,
    non_resource: &Option<NonResourceAttributes>,
) -> Result<Attributes, ApiError> {
    let render = |v: &Option<_>| serde_json::to_string(v).unwrap_or_else(|_| "null".into());
    let cause = match (resource, non_resource) {
        (Some(_), Some(_)) => Some(invalid(
            "spec.nonResourceAttributes",
            render(non_resource),
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
            kind: kind.into(),
            group: "authorization.k8s.io".into(),
            name: String::new(),
            causes: vec![cause],
        });
    }
    let text = |s: &Option<String>| s.clone().unwrap_or_default();
    if let Some(r) = resource {
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
    let n = non_resource.clone().unwrap_or_default();
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
        json!({"apiVersion": AUTHZ, "kind": KIND, "spec": attrs})
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
