//! Who is asking (authentication) and whether they may (authorization), with the shapes
//! kube-apiserver uses: a `UserInfo` from the authenticator, the request's `Attributes`,
//! and an authorizer's `Decision`.

pub mod authn;
pub mod bootstrap;
pub mod bootstrap_token;
pub mod escalation;
pub mod node;
pub mod node_refs;
pub mod nonresource;
pub mod rbac;
pub mod review;
pub mod serviceaccount;

use std::sync::Arc;

use serde::Serialize;

use super::routing::Target;
use crate::api::ApiError;

/// The authenticated identity of a request.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct UserInfo {
    pub name: String,
    pub uid: String,
    pub groups: Vec<String>,
}

impl UserInfo {
    /// The identity of every request on the insecure (plain HTTP) path: like
    /// kube-apiserver's old insecure port, it is trusted as an administrator.
    pub fn insecure_admin() -> Self {
        UserInfo {
            name: "system:admin".into(),
            uid: String::new(),
            groups: vec!["system:masters".into(), "system:authenticated".into()],
        }
    }

    pub fn in_group(&self, group: &str) -> bool {
        self.groups.iter().any(|g| g == group)
    }
}

/// What a request asks to do (kube's `authorizer.Attributes`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attributes {
    pub user: UserInfo,
    /// get, list, watch, create, update, patch, delete, deletecollection.
    pub verb: String,
    /// False for non-resource paths such as `/version` or `/healthz`.
    pub resource_request: bool,
    pub api_group: String,
    pub resource: String,
    pub subresource: String,
    pub namespace: String,
    pub name: String,
    /// The request path, for non-resource requests.
    pub path: String,
}

impl Attributes {
    /// A request for a path outside the resource API (`/version`, `/healthz`, discovery);
    /// `verb` is the lower-case HTTP method, as Kubernetes has it.
    pub fn for_path(user: &UserInfo, verb: &str, path: &str) -> Self {
        Attributes {
            user: user.clone(),
            verb: verb.to_string(),
            resource_request: false,
            api_group: String::new(),
            resource: String::new(),
            subresource: String::new(),
            namespace: String::new(),
            name: String::new(),
            path: path.to_string(),
        }
    }

    pub fn for_resource(user: &UserInfo, verb: &str, target: &Target) -> Self {
        Attributes {
            user: user.clone(),
            verb: verb.to_string(),
            resource_request: true,
            api_group: target.resource.group.to_string(),
            resource: target.resource.name.to_string(),
            subresource: target.subresource.clone().unwrap_or_default(),
            namespace: target.namespace.clone().unwrap_or_default(),
            name: target.name.clone().unwrap_or_default(),
            path: String::new(),
        }
    }

    /// kube-apiserver's Forbidden message for these attributes.
    pub fn forbidden_message(&self, reason: &str) -> String {
        let mut msg = if self.resource_request {
            let res = if self.subresource.is_empty() {
                self.resource.clone()
            } else {
                format!("{}/{}", self.resource, self.subresource)
            };
            // The subject is the group-qualified resource without its subresource, as
            // apierrors.NewForbidden writes it.
            let qualified = if self.api_group.is_empty() {
                self.resource.clone()
            } else {
                format!("{}.{}", self.resource, self.api_group)
            };
            let subject = if self.name.is_empty() {
                qualified
            } else {
                format!("{qualified} \"{}\"", self.name)
            };
            let scope = if self.namespace.is_empty() {
                "at the cluster scope".to_string()
            } else {
                format!("in the namespace \"{}\"", self.namespace)
            };
            format!(
                "{subject} is forbidden: User \"{}\" cannot {} resource \"{res}\" in API group \"{}\" {scope}",
                self.user.name, self.verb, self.api_group
            )
        } else {
            format!(
                "forbidden: User \"{}\" cannot {} path \"{}\"",
                self.user.name, self.verb, self.path
            )
        };
        if !reason.is_empty() {
            msg.push_str(": ");
            msg.push_str(reason);
        }
        msg
    }
}

/// An authorizer's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// Denied outright, with a reason appended to the Forbidden message.
    Deny(String),
    /// This authorizer has nothing to say; the next one decides.
    NoOpinion,
}

/// What a user may do in a namespace, as far as the authorizers can enumerate it (the
/// answer to a SelfSubjectRulesReview, `kubectl auth can-i --list`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rules {
    /// Rules with resources.
    pub resource: Vec<rbac::PolicyRule>,
    /// Rules with non-resource URLs.
    pub non_resource: Vec<rbac::PolicyRule>,
    /// Some authorizer could not enumerate what it would allow.
    pub incomplete: bool,
    pub errors: Vec<String>,
}

impl Rules {
    /// Everything, as an authorizer that allows all.
    pub fn everything() -> Self {
        Rules {
            resource: vec![rbac::PolicyRule::resource(&["*"], &["*"], &["*"])],
            non_resource: vec![rbac::PolicyRule::urls(&["*"], &["*"])],
            ..Rules::default()
        }
    }

    fn extend(&mut self, other: Rules) {
        self.resource.extend(other.resource);
        self.non_resource.extend(other.non_resource);
        self.incomplete |= other.incomplete;
        self.errors.extend(other.errors);
    }
}

/// Decides whether a request may proceed.
pub trait Authorizer: Send + Sync {
    fn authorize(&self, attrs: &Attributes) -> Decision;

    /// The rules `user` has in `namespace` by this authorizer; one that cannot tell says
    /// nothing (kube's authorizers that do not resolve rules).
    fn rules_for(&self, _user: &UserInfo, _namespace: &str) -> Rules {
        Rules::default()
    }
}

/// Allows everything: the insecure path.
pub struct AlwaysAllow;

impl Authorizer for AlwaysAllow {
    fn authorize(&self, _attrs: &Attributes) -> Decision {
        Decision::Allow
    }

    fn rules_for(&self, _user: &UserInfo, _namespace: &str) -> Rules {
        Rules::everything()
    }
}

/// The group whose members may do anything, decided before any other authorizer so that
/// no RBAC mistake can lock the administrators out (kube-apiserver's privileged group).
pub const PRIVILEGED_GROUP: &str = "system:masters";

/// Allows members of [`PRIVILEGED_GROUP`]; no opinion on anyone else.
pub struct PrivilegedGroup;

impl Authorizer for PrivilegedGroup {
    fn authorize(&self, attrs: &Attributes) -> Decision {
        if attrs.user.in_group(PRIVILEGED_GROUP) {
            Decision::Allow
        } else {
            Decision::NoOpinion
        }
    }

    fn rules_for(&self, user: &UserInfo, _namespace: &str) -> Rules {
        if user.in_group(PRIVILEGED_GROUP) {
            Rules::everything()
        } else {
            Rules::default()
        }
    }
}

/// The authorizer chain in the gateway: the first Allow or Deny wins; no opinion from
/// anyone is a denial.
#[derive(Clone)]
pub struct Authorization {
    chain: Vec<Arc<dyn Authorizer>>,
}

impl Default for Authorization {
    fn default() -> Self {
        Authorization::new(vec![Arc::new(AlwaysAllow)])
    }
}

impl Authorization {
    pub fn new(chain: Vec<Arc<dyn Authorizer>>) -> Self {
        Authorization { chain }
    }

    /// kube-apiserver's `--authorization-mode=Node,RBAC`, behind the privileged group.
    pub fn node_and_rbac(store: crate::store::StoreHandle) -> Self {
        Authorization::new(vec![
            Arc::new(PrivilegedGroup),
            Arc::new(node::NodeAuthorizer::new(store.clone())),
            Arc::new(rbac::Rbac::new(store)),
        ])
    }

    pub fn decide(&self, attrs: &Attributes) -> Decision {
        for a in &self.chain {
            match a.authorize(attrs) {
                Decision::NoOpinion => continue,
                d => return d,
            }
        }
        Decision::NoOpinion
    }

    /// The union of what every authorizer in the chain enumerates for `user`.
    pub fn rules_for(&self, user: &UserInfo, namespace: &str) -> Rules {
        let mut all = Rules::default();
        for a in &self.chain {
            all.extend(a.rules_for(user, namespace));
        }
        all
    }

    /// Ok when allowed, otherwise the 403 Forbidden Status kube-apiserver would send.
    pub fn check(&self, attrs: &Attributes) -> Result<(), ApiError> {
        match self.decide(attrs) {
            Decision::Allow => Ok(()),
            Decision::Deny(reason) => Err(ApiError::Forbidden(attrs.forbidden_message(&reason))),
            Decision::NoOpinion => Err(ApiError::Forbidden(attrs.forbidden_message(""))),
        }
    }
}

/// The user a request was authenticated as: what the authentication middleware put in
/// the request's extensions, or the insecure administrator when nothing authenticates.
pub fn user_of(req: &actix_web::HttpRequest) -> UserInfo {
    use actix_web::HttpMessage;
    req.extensions()
        .get::<UserInfo>()
        .cloned()
        .unwrap_or_else(UserInfo::insecure_admin)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::routing;

    fn viewer() -> UserInfo {
        UserInfo {
            name: "jane".into(),
            uid: "1".into(),
            groups: vec!["system:authenticated".into()],
        }
    }

    #[test]
    fn forbidden_message_matches_kube_apiserver() {
        let t = routing::parse("namespaces/default/pods").expect("route");
        let a = Attributes::for_resource(&viewer(), "create", &t);
        assert_eq!(
            a.forbidden_message(""),
            "pods is forbidden: User \"jane\" cannot create resource \"pods\" in API group \"\" in the namespace \"default\""
        );
        let t = routing::parse("nodes/n1/status").expect("route");
        let a = Attributes::for_resource(&viewer(), "patch", &t);
        assert_eq!(
            a.forbidden_message(""),
            "nodes \"n1\" is forbidden: User \"jane\" cannot patch resource \"nodes/status\" in API group \"\" at the cluster scope"
        );
    }

    #[test]
    fn forbidden_message_qualifies_grouped_resources() {
        let t = routing::parse_in("rbac.authorization.k8s.io", "v1", "namespaces/dev/roles")
            .expect("route");
        let a = Attributes::for_resource(&viewer(), "list", &t);
        assert_eq!(
            a.forbidden_message(""),
            "roles.rbac.authorization.k8s.io is forbidden: User \"jane\" cannot list resource \"roles\" in API group \"rbac.authorization.k8s.io\" in the namespace \"dev\""
        );
    }

    #[test]
    fn no_opinion_from_every_authorizer_is_a_denial() {
        struct Silent;
        impl Authorizer for Silent {
            fn authorize(&self, _: &Attributes) -> Decision {
                Decision::NoOpinion
            }
        }
        let authz = Authorization::new(vec![Arc::new(Silent)]);
        let t = routing::parse("pods").expect("route");
        let a = Attributes::for_resource(&viewer(), "list", &t);
        assert!(matches!(authz.check(&a), Err(ApiError::Forbidden(_))));
        assert!(Authorization::default().check(&a).is_ok());
    }
}
