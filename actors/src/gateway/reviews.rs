//! Reviews: create-only resources answered from the request itself and never stored, such
//! as `SelfSubjectReview` (what `kubectl auth whoami` asks).

use serde_json::{json, Value};

use super::auth::authn::Authenticator;
use super::auth::{self, Authorization, UserInfo};
use crate::api::resources::ResourceInfo;
use crate::api::ApiError;

/// Who answers a review: the chains every request goes through.
pub struct Reviewers<'a> {
    pub authz: &'a Authorization,
    /// `None` on the insecure path, where no token means anything.
    pub authn: Option<&'a Authenticator>,
}

/// The answer to creating review `info` with `body`, as `user` (in `namespace` for the
/// namespaced LocalSubjectAccessReview).
pub fn review(
    info: &ResourceInfo,
    user: &UserInfo,
    by: &Reviewers,
    namespace: Option<&str>,
    body: Value,
) -> Result<Value, ApiError> {
    if let Some(kind) = body.get("kind").and_then(Value::as_str) {
        if kind != info.kind {
            return Err(ApiError::BadRequest(format!(
                "the body names kind {kind:?}, expected {:?}",
                info.kind
            )));
        }
    }
    match info.name {
        "selfsubjectreviews" => Ok(self_subject_review(info, user)),
        "selfsubjectaccessreviews" => {
            auth::review::self_subject_access_review(by.authz, user, body)
        }
        "subjectaccessreviews" => auth::review::subject_access_review(by.authz, body, None),
        "localsubjectaccessreviews" => {
            let ns = namespace.ok_or(ApiError::MethodNotAllowed)?;
            auth::review::subject_access_review(by.authz, body, Some(ns))
        }
        "selfsubjectrulesreviews" => auth::review::self_subject_rules_review(by.authz, user, body),
        "tokenreviews" => auth::review::token_review(by.authn, body),
        _ => Err(ApiError::NoRoute),
    }
}

fn self_subject_review(info: &ResourceInfo, user: &UserInfo) -> Value {
    let mut user_info = json!({"username": user.name, "groups": user.groups});
    if !user.uid.is_empty() {
        user_info["uid"] = json!(user.uid);
    }
    json!({
        "kind": info.kind,
        "apiVersion": info.api_version(),
        "metadata": {"creationTimestamp": null},
        "status": {"userInfo": user_info},
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::resources;

    #[test]
    fn self_subject_review_names_the_caller() {
        let info = resources::lookup_in("authentication.k8s.io", "v1", "selfsubjectreviews")
            .expect("served");
        let user = UserInfo {
            name: "jane".into(),
            uid: String::new(),
            groups: vec!["devs".into(), "system:authenticated".into()],
        };
        let authz = Authorization::default();
        let by = Reviewers {
            authz: &authz,
            authn: None,
        };
        let r =
            review(info, &user, &by, None, json!({"kind": "SelfSubjectReview"})).expect("review");
        assert_eq!(r["status"]["userInfo"]["username"], "jane");
        assert_eq!(r["status"]["userInfo"]["groups"][0], "devs");
        assert!(r["status"]["userInfo"].get("uid").is_none());
        assert!(review(info, &user, &by, None, json!({"kind": "Pod"})).is_err());
    }
}
