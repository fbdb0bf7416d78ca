//! `POST serviceaccounts/<name>/token` (authentication.k8s.io/v1 TokenRequest), as
//! kube-apiserver's `pkg/registry/core/serviceaccount/storage/token.go` answers it: the
//! audiences default to the API server's, `expirationSeconds` to an hour (at least ten
//! minutes), a bound Pod, Secret or Node is looked up and named in the token, and a node
//! may only ask for tokens bound to pods scheduled on it (node restriction).

use chrono::{DateTime, Utc};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestStatus};
use k8s_openapi::api::core::v1 as core;
use serde_json::{json, Value};

use super::token::{self, Claims, KubernetesClaim, ObjectRef, TokenIssuer};
use crate::api::resources::object_key;
use crate::api::strategy::typed;
use crate::api::validation::FieldError;
use crate::api::ApiError;
use crate::gateway::auth::{node, UserInfo};
use crate::runtime::to_time;
use crate::store::StoreHandle;

pub const KIND: &str = "TokenRequest";
pub const GROUP: &str = "authentication.k8s.io";
pub const API_VERSION: &str = "authentication.k8s.io/v1";
/// kube-apiserver's default lifetime of a requested token.
pub const DEFAULT_EXPIRATION_SECONDS: i64 = 3600;
const MIN_EXPIRATION_SECONDS: i64 = 600;
const MAX_EXPIRATION_SECONDS: i64 = 1 << 32;
/// The lifetime the kubelet asks for projected tokens; such a pod-bound token for the API
/// server's audience is extended to a year and warns after the hour
/// (`--service-account-extend-token-expiration`, on by default).
pub const WARN_ONLY_EXPIRATION_SECONDS: i64 = 3607;
const EXTENDED_EXPIRATION_SECONDS: i64 = 365 * 24 * 3600;

fn stored<T: serde::de::DeserializeOwned>(
    store: &StoreHandle,
    resource: &str,
    namespace: Option<&str>,
    name: &str,
) -> Result<T, ApiError> {
    let obj = store
        .get(&object_key(resource, namespace, name))
        .ok_or_else(|| ApiError::not_found(resource, name))?;
    typed::<T>(&obj.value)
        .ok_or_else(|| ApiError::Internal(format!("stored {resource} {name:?} does not decode")))
}

fn invalid(name: &str, causes: Vec<FieldError>) -> ApiError {
    ApiError::Invalid {
        kind: KIND.into(),
        group: GROUP.into(),
        name: name.into(),
        causes,
    }
}

/// The static checks of `ValidateTokenRequest`.
fn validate(req: &TokenRequest) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let exp = req
        .spec
        .as_ref()
        .and_then(|s| s.expiration_seconds)
        .unwrap_or(DEFAULT_EXPIRATION_SECONDS);
    if exp < MIN_EXPIRATION_SECONDS {
        errs.push(FieldError::invalid(
            "spec.expirationSeconds",
            &json!(exp),
            "may not specify a duration less than 10 minutes",
        ));
    }
    if exp > MAX_EXPIRATION_SECONDS {
        errs.push(FieldError::invalid(
            "spec.expirationSeconds",
            &json!(exp),
            "may not specify a duration larger than 2^32 seconds",
        ));
    }
    errs
}

/// What a token is bound to, looked up.
#[derive(Default)]
struct Bound {
    pod: Option<ObjectRef>,
    secret: Option<ObjectRef>,
    node: Option<ObjectRef>,
}

fn uid_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> String {
    meta.uid.clone().unwrap_or_default()
}

fn bound_objects(
    store: &StoreHandle,
    namespace: &str,
    sa_name: &str,
    req: &TokenRequest,
) -> Result<Bound, ApiError> {
    let Some(r) = req.spec.as_ref().and_then(|s| s.bound_object_ref.as_ref()) else {
        return Ok(Bound::default());
    };
    let api_version = r.api_version.clone().unwrap_or_default();
    let kind = r.kind.clone().unwrap_or_default();
    let (group, version) = match api_version.split_once('/') {
        Some((g, v)) => (g.to_string(), v.to_string()),
        None => (String::new(), api_version.clone()),
    };
    let name = r.name.clone().unwrap_or_default();
    let mut bound = Bound::default();
    let uid = match (group.as_str(), kind.as_str()) {
        ("", "Pod") => {
            let pod: core::Pod = stored(store, "pods", Some(namespace), &name)?;
            let spec = pod.spec.clone().unwrap_or_default();
            if spec.service_account_name.as_deref().unwrap_or_default() != sa_name {
                return Err(ApiError::BadRequest(format!(
                    "cannot bind token for serviceaccount {sa_name:?} to pod running with different serviceaccount name."
                )));
            }
            if let Some(node_name) = spec.node_name.filter(|n| !n.is_empty()) {
                // A missing Node still has its name recorded, as kube-apiserver does.
                let uid = store
                    .get(&object_key("nodes", None, &node_name))
                    .and_then(|n| {
                        n.value
                            .pointer("/metadata/uid")
                            .and_then(Value::as_str)
                            .map(str::to_string)
                    })
                    .unwrap_or_default();
                bound.node = Some(ObjectRef {
                    name: node_name,
                    uid,
                });
            }
            let uid = uid_of(&pod.metadata);
            bound.pod = Some(ObjectRef {
                name: name.clone(),
                uid: uid.clone(),
            });
            uid
        }
        ("", "Secret") => {
            let secret: core::Secret = stored(store, "secrets", Some(namespace), &name)?;
            let uid = uid_of(&secret.metadata);
            bound.secret = Some(ObjectRef {
                name: name.clone(),
                uid: uid.clone(),
            });
            uid
        }
        ("", "Node") => {
            let node: core::Node = stored(store, "nodes", None, &name)?;
            let uid = uid_of(&node.metadata);
            bound.node = Some(ObjectRef {
                name: name.clone(),
                uid: uid.clone(),
            });
            uid
        }
        _ => {
            return Err(ApiError::BadRequest(format!(
                "cannot bind token to object of type {group}/{version}, Kind={kind}"
            )))
        }
    };
    if let Some(want) = r.uid.as_deref().filter(|u| !u.is_empty()) {
        if want != uid {
            return Err(ApiError::conflict(
                &kind,
                &name,
                format!("the UID in the bound object reference ({want}) does not match the UID in record. The object might have been deleted and then recreated"),
            ));
        }
    }
    Ok(bound)
}

/// Node restriction on TokenRequests: a node asks only for tokens bound to a pod
/// scheduled on it, named with its uid.
fn admit_node(
    store: &StoreHandle,
    node: &str,
    namespace: &str,
    name: &str,
    req: &TokenRequest,
) -> Result<(), ApiError> {
    let forbidden =
        |why: &str| ApiError::Forbidden(format!("serviceaccounts {name:?} is forbidden: {why}"));
    let r = req.spec.as_ref().and_then(|s| s.bound_object_ref.as_ref());
    let pod_ref = r.filter(|r| {
        r.api_version.as_deref() == Some("v1")
            && r.kind.as_deref() == Some("Pod")
            && r.name.as_deref().is_some_and(|n| !n.is_empty())
    });
    let Some(pod_ref) = pod_ref else {
        return Err(forbidden("node requested token not bound to a pod"));
    };
    let want_uid = pod_ref.uid.as_deref().unwrap_or_default();
    if want_uid.is_empty() {
        return Err(forbidden(
            "node requested token with a pod binding without a uid",
        ));
    }
    let pod_name = pod_ref.name.as_deref().unwrap_or_default();
    let pod: core::Pod = stored(store, "pods", Some(namespace), pod_name)?;
    if uid_of(&pod.metadata) != want_uid {
        return Err(forbidden(&format!("the UID in the bound object reference ({want_uid}) does not match the UID in record. The object might have been deleted and then recreated")));
    }
    if pod.spec.and_then(|s| s.node_name).as_deref() != Some(node) {
        return Err(forbidden(
            "node requested token bound to a pod scheduled on a different node",
        ));
    }
    Ok(())
}

fn drop_nulls(v: &mut Value) {
    if let Some(map) = v.as_object_mut() {
        map.retain(|_, x| !x.is_null());
        map.values_mut().for_each(drop_nulls);
    }
}

/// Answer a TokenRequest for service account `name` in `namespace` at `now`.
pub fn create_token(
    store: &StoreHandle,
    issuer: &TokenIssuer,
    user: &UserInfo,
    namespace: &str,
    name: &str,
    body: Value,
    now: DateTime<Utc>,
) -> Result<Value, ApiError> {
    if let Some(kind) = body.get("kind").and_then(Value::as_str) {
        if kind != KIND {
            return Err(ApiError::BadRequest(format!(
                "{kind} in version {:?} cannot be handled as a TokenRequest: no kind {kind:?} is registered for the token subresource",
                body.get("apiVersion").and_then(Value::as_str).unwrap_or_default().rsplit('/').next().unwrap_or("")
            )));
        }
    }
    // What kubectl sends carries an empty status and nulls for what it leaves unset.
    let mut body = body;
    if let Some(map) = body.as_object_mut() {
        for key in ["status", "apiVersion", "kind"] {
            map.remove(key);
        }
    }
    drop_nulls(&mut body);
    let mut req: TokenRequest = serde_json::from_value(body).map_err(|e| {
        ApiError::BadRequest(format!(
            "TokenRequest in version \"v1\" cannot be handled as a TokenRequest: {e}"
        ))
    })?;
    if let Some(n) = req.metadata.name.as_deref().filter(|n| !n.is_empty()) {
        if n != name {
            return Err(invalid(
                name,
                vec![FieldError::invalid(
                    "metadata.name",
                    &json!(n),
                    "must match the service account name if specified",
                )],
            ));
        }
    }
    if let Some(ns) = req.metadata.namespace.as_deref().filter(|n| !n.is_empty()) {
        if ns != namespace {
            return Err(invalid(
                name,
                vec![FieldError::invalid(
                    "metadata.namespace",
                    &json!(ns),
                    "must match the service account namespace if specified",
                )],
            ));
        }
    }
    let sa: core::ServiceAccount = stored(store, "serviceaccounts", Some(namespace), name)?;
    let spec = req.spec.get_or_insert_with(Default::default);
    let audiences = spec.audiences.get_or_insert_with(Vec::new);
    if audiences.is_empty() {
        *audiences = issuer.api_audiences();
    }
    let audiences = audiences.clone();
    let expiration = *spec
        .expiration_seconds
        .get_or_insert(DEFAULT_EXPIRATION_SECONDS);
    req.metadata.name = Some(name.to_string());
    req.metadata.namespace = Some(namespace.to_string());
    req.metadata.creation_timestamp = Some(to_time(now));
    req.status = None;
    let errs = validate(&req);
    if !errs.is_empty() {
        return Err(invalid("", errs));
    }
    if let Some(node) = node::node_name(user) {
        admit_node(store, node, namespace, name, &req)?;
    }
    let bound = bound_objects(store, namespace, name, &req)?;

    let api = issuer.api_audiences();
    let for_api = audiences.iter().all(|a| api.contains(a));
    let (lifetime, warnafter) =
        if bound.pod.is_some() && expiration == WARN_ONLY_EXPIRATION_SECONDS && for_api {
            (
                EXTENDED_EXPIRATION_SECONDS,
                Some(now.timestamp() + expiration),
            )
        } else {
            (expiration, None)
        };
    let t = now.timestamp();
    let claims = Claims {
        aud: audiences,
        exp: t + lifetime,
        iat: t,
        iss: issuer.issuer().to_string(),
        jti: uuid::Uuid::new_v4().to_string(),
        kubernetes: KubernetesClaim {
            namespace: namespace.to_string(),
            serviceaccount: ObjectRef {
                name: name.to_string(),
                uid: uid_of(&sa.metadata),
            },
            pod: bound.pod,
            secret: bound.secret,
            node: bound.node,
            warnafter,
        },
        nbf: t,
        sub: token::username(namespace, name),
    };
    let token = issuer
        .issue(&claims)
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    req.status = Some(TokenRequestStatus {
        token: Some(token),
        expiration_timestamp: Some(to_time(now + chrono::Duration::seconds(expiration))),
    });
    let mut out = serde_json::to_value(&req).map_err(|e| ApiError::Internal(e.to_string()))?;
    out["apiVersion"] = json!(API_VERSION);
    out["kind"] = json!(KIND);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{self, StoreConfig, WriteOp};
    use std::sync::Arc;

    async fn store_with(
        objects: &[(&str, Option<&str>, Value)],
    ) -> (tempfile::TempDir, actix::Arbiter, StoreHandle) {
        let dir = tempfile::tempdir().expect("tempdir");
        let metrics = Arc::new(crate::metrics::Metrics::new().expect("metrics"));
        let arbiter = actix::Arbiter::new();
        let handle =
            store::start(StoreConfig::new(dir.path()), metrics, &arbiter.handle()).expect("store");
        for (resource, ns, obj) in objects {
            let name = obj["metadata"]["name"].as_str().expect("name");
            handle
                .write(WriteOp::Create {
                    key: object_key(resource, *ns, name),
                    object: obj.clone(),
                })
                .await
                .expect("write");
        }
        (dir, arbiter, handle)
    }

    fn sa() -> Value {
        json!({"apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": "builder", "namespace": "dev", "uid": "sa-uid"}})
    }

    fn pod(sa: &str, node: &str) -> Value {
        json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web", "namespace": "dev", "uid": "pod-uid"},
            "spec": {"serviceAccountName": sa, "nodeName": node, "containers": []}})
    }

    fn admin() -> UserInfo {
        UserInfo::insecure_admin()
    }

    #[actix_rt::test]
    async fn a_request_gets_a_token_for_the_api_audience_valid_an_hour() {
        let (_d, arbiter, store) = store_with(&[("serviceaccounts", Some("dev"), sa())]).await;
        let issuer = TokenIssuer::generate().expect("issuer");
        let now = Utc::now();
        let body = json!({"apiVersion": API_VERSION, "kind": KIND, "spec": {}});
        let out =
            create_token(&store, &issuer, &admin(), "dev", "builder", body, now).expect("token");
        assert_eq!(out["kind"], KIND);
        assert_eq!(out["spec"]["expirationSeconds"], 3600);
        assert_eq!(out["spec"]["audiences"], json!([token::ISSUER]));
        let tok = out["status"]["token"].as_str().expect("token");
        let claims = issuer.verify(tok, &issuer.api_audiences()).expect("valid");
        assert_eq!(claims.sub, "system:serviceaccount:dev:builder");
        assert_eq!(claims.exp - claims.iat, 3600);
        assert_eq!(claims.kubernetes.serviceaccount.uid, "sa-uid");
        arbiter.stop();
    }

    #[actix_rt::test]
    async fn short_lifetimes_missing_accounts_and_foreign_kinds_are_refused() {
        let (_d, arbiter, store) = store_with(&[
            ("serviceaccounts", Some("dev"), sa()),
            ("pods", Some("dev"), pod("default", "n1")),
        ])
        .await;
        let issuer = TokenIssuer::generate().expect("issuer");
        let now = Utc::now();
        let ask = |name: &str, spec: Value| {
            create_token(
                &store,
                &issuer,
                &admin(),
                "dev",
                name,
                json!({"spec": spec}),
                now,
            )
        };
        let err = ask("builder", json!({"expirationSeconds": 100})).expect_err("too short");
        assert_eq!(
            err.to_string(),
            "TokenRequest.authentication.k8s.io \"\" is invalid: spec.expirationSeconds: Invalid value: 100: may not specify a duration less than 10 minutes"
        );
        assert!(matches!(
            ask("ghost", json!({})),
            Err(ApiError::NotFound { .. })
        ));
        let err = ask(
            "builder",
            json!({"boundObjectRef": {"kind": "ConfigMap", "apiVersion": "v1", "name": "x"}}),
        )
        .expect_err("configmap");
        assert_eq!(
            err.to_string(),
            "cannot bind token to object of type /v1, Kind=ConfigMap"
        );
        let err = ask(
            "builder",
            json!({"boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": "web"}}),
        )
        .expect_err("other account");
        assert!(
            err.to_string()
                .contains("pod running with different serviceaccount name"),
            "{err}"
        );
        arbiter.stop();
    }

    #[actix_rt::test]
    async fn a_pod_bound_token_names_the_pod_and_its_node_and_nodes_need_their_own_pods() {
        let (_d, arbiter, store) = store_with(&[
            ("serviceaccounts", Some("dev"), sa()),
            ("pods", Some("dev"), pod("builder", "n1")),
        ])
        .await;
        let issuer = TokenIssuer::generate().expect("issuer");
        let now = Utc::now();
        let spec = json!({"expirationSeconds": 3607, "boundObjectRef":
            {"kind": "Pod", "apiVersion": "v1", "name": "web", "uid": "pod-uid"}});
        let out = create_token(
            &store,
            &issuer,
            &admin(),
            "dev",
            "builder",
            json!({"spec": spec.clone()}),
            now,
        )
        .expect("token");
        let claims = issuer
            .verify(
                out["status"]["token"].as_str().expect("token"),
                &issuer.api_audiences(),
            )
            .expect("valid");
        assert_eq!(
            claims.kubernetes.pod,
            Some(ObjectRef {
                name: "web".into(),
                uid: "pod-uid".into()
            })
        );
        assert_eq!(
            claims.kubernetes.node.as_ref().map(|n| n.name.as_str()),
            Some("n1")
        );
        // The projected-volume lifetime is extended, with a warning time at the hour.
        assert_eq!(claims.kubernetes.warnafter, Some(now.timestamp() + 3607));
        assert_eq!(claims.exp - claims.iat, EXTENDED_EXPIRATION_SECONDS);

        let node_user = |n: &str| UserInfo {
            name: format!("system:node:{n}"),
            uid: String::new(),
            groups: vec![node::NODES_GROUP.into()],
        };
        assert!(create_token(
            &store,
            &issuer,
            &node_user("n1"),
            "dev",
            "builder",
            json!({"spec": spec.clone()}),
            now
        )
        .is_ok());
        let err = create_token(
            &store,
            &issuer,
            &node_user("n2"),
            "dev",
            "builder",
            json!({"spec": spec}),
            now,
        )
        .expect_err("other node");
        assert!(
            err.to_string().contains("scheduled on a different node"),
            "{err}"
        );
        let err = create_token(
            &store,
            &issuer,
            &node_user("n1"),
            "dev",
            "builder",
            json!({"spec": {}}),
            now,
        )
        .expect_err("unbound");
        assert!(err.to_string().contains("not bound to a pod"), "{err}");
        let stale = json!({"spec": {"boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": "web", "uid": "old"}}});
        let err =
            create_token(&store, &issuer, &admin(), "dev", "builder", stale, now).expect_err("uid");
        assert!(matches!(err, ApiError::Conflict { .. }), "{err}");
        arbiter.stop();
    }
}
