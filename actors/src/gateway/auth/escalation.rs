//! RBAC's escalation check, after Kubernetes' pkg/registry/rbac: nobody grants through a
//! Role, ClusterRole or binding a permission they do not hold themselves, unless they may
//! `escalate` (roles) or `bind` (the referenced role). Without it, anyone allowed to write
//! a RoleBinding could bind themselves `cluster-admin`.

use std::sync::Arc;

use serde_json::Value;

use super::rbac::PolicyRule;
use super::{Attributes, Authorization, Decision, UserInfo};
use crate::api::{meta, resources, ApiError};
use crate::gateway::objects::Admit;
use crate::store::StoreHandle;

const RBAC_GROUP: &str = "rbac.authorization.k8s.io";

/// The admission check for writes of `resource` by `user`; `None` for other resources.
pub fn admission(
    authz: &Authorization,
    store: &StoreHandle,
    user: &UserInfo,
    resource: &str,
) -> Option<Admit> {
    if !matches!(
        resource,
        "roles" | "clusterroles" | "rolebindings" | "clusterrolebindings"
    ) {
        return None;
    }
    let (authz, store, user) = (authz.clone(), store.clone(), user.clone());
    let resource = resource.to_string();
    Some(Admit(Arc::new(move |obj: &Value| {
        check(&authz, &store, &user, &resource, obj)
    })))
}

fn allowed(authz: &Authorization, a: &Attributes) -> bool {
    authz.decide(a) == Decision::Allow
}

/// Whether `user` may write `obj` (of `resource`) without granting more than they hold.
pub fn check(
    authz: &Authorization,
    store: &StoreHandle,
    user: &UserInfo,
    resource: &str,
    obj: &Value,
) -> Result<(), ApiError> {
    let name = meta::name(obj).unwrap_or_default();
    let namespace = meta::namespace(obj).unwrap_or_default();
    let special = |verb: &str, res: &str, res_name: &str, ns: &str| Attributes {
        user: user.clone(),
        verb: verb.into(),
        resource_request: true,
        api_group: RBAC_GROUP.into(),
        resource: res.into(),
        subresource: String::new(),
        namespace: ns.into(),
        name: res_name.into(),
        path: String::new(),
    };
    let rules: Vec<PolicyRule> = match resource {
        "roles" | "clusterroles" => {
            if allowed(authz, &special("escalate", resource, name, namespace)) {
                return Ok(());
            }
            rules_of(obj)
        }
        _ => {
            let role_kind = obj
                .pointer("/roleRef/kind")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let role_name = obj
                .pointer("/roleRef/name")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let (role_resource, role_ns) = match role_kind {
                "Role" => ("roles", Some(namespace)),
                _ => ("clusterroles", None),
            };
            if allowed(authz, &special("bind", role_resource, role_name, namespace)) {
                return Ok(());
            }
            let key = resources::object_key(role_resource, role_ns, role_name);
            match store.get(&key) {
                Some(role) => rules_of(&role.value),
                None => {
                    return Err(ApiError::Forbidden(format!(
                        "{resource}.{RBAC_GROUP} {name:?} is forbidden: {role_kind} {role_name:?} not found, and user {:?} may not bind it",
                        user.name
                    )))
                }
            }
        }
    };
    let missing: Vec<&PolicyRule> = rules
        .iter()
        .filter(|r| !covered(authz, user, namespace, r))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let groups: Vec<String> = user.groups.iter().map(|g| format!("{g:?}")).collect();
    let listed: Vec<String> = missing.iter().map(|r| describe(r)).collect();
    Err(ApiError::Forbidden(format!(
        "{resource}.{RBAC_GROUP} {name:?} is forbidden: user {:?} (groups=[{}]) is attempting to grant RBAC permissions not currently held:\n{}",
        user.name,
        groups.join(" "),
        listed.join("\n")
    )))
}

fn rules_of(obj: &Value) -> Vec<PolicyRule> {
    obj.get("rules")
        .and_then(Value::as_array)
        .map(|r| r.iter().map(PolicyRule::from_value).collect())
        .unwrap_or_default()
}

/// Whether the user holds every permission `rule` grants, in `namespace`: each of its
/// verb/group/resource/name (or verb/URL) combinations is asked of the chain, with
/// wildcards asked as themselves so that only a wildcard covers a wildcard.
fn covered(authz: &Authorization, user: &UserInfo, namespace: &str, rule: &PolicyRule) -> bool {
    let names: Vec<&str> = if rule.resource_names.is_empty() {
        vec![""]
    } else {
        rule.resource_names.iter().map(String::as_str).collect()
    };
    for verb in &rule.verbs {
        for url in &rule.non_resource_urls {
            if !allowed(authz, &Attributes::for_path(user, verb, url)) {
                return false;
            }
        }
        for group in &rule.api_groups {
            for res in &rule.resources {
                let (resource, sub) = res.split_once('/').unwrap_or((res, ""));
                for name in &names {
                    let a = Attributes {
                        user: user.clone(),
                        verb: verb.clone(),
                        resource_request: true,
                        api_group: group.clone(),
                        resource: resource.into(),
                        subresource: sub.into(),
                        namespace: namespace.into(),
                        name: (*name).into(),
                        path: String::new(),
                    };
                    if !allowed(authz, &a) {
                        return false;
                    }
                }
            }
        }
    }
    true
}

/// A rule as Kubernetes prints it in the escalation message.
fn describe(r: &PolicyRule) -> String {
    let list = |xs: &[String]| {
        xs.iter()
            .map(|x| format!("{x:?}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut parts = Vec::new();
    if !r.api_groups.is_empty() {
        parts.push(format!("APIGroups:[{}]", list(&r.api_groups)));
    }
    if !r.resources.is_empty() {
        parts.push(format!("Resources:[{}]", list(&r.resources)));
    }
    if !r.resource_names.is_empty() {
        parts.push(format!("ResourceNames:[{}]", list(&r.resource_names)));
    }
    if !r.non_resource_urls.is_empty() {
        parts.push(format!("NonResourceURLs:[{}]", list(&r.non_resource_urls)));
    }
    parts.push(format!("Verbs:[{}]", list(&r.verbs)));
    format!("{{{}}}", parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::auth::rbac::Policy;
    use crate::gateway::auth::{Authorizer, PrivilegedGroup};
    use serde_json::json;

    /// jane may edit pods in dev and nothing else.
    struct Jane(Policy);

    impl Authorizer for Jane {
        fn authorize(&self, a: &Attributes) -> Decision {
            self.0.decide(a)
        }
    }

    fn chain() -> Authorization {
        let objs = [
            json!({"kind": "Role", "metadata": {"name": "pod-editor", "namespace": "dev"},
                "rules": [{"apiGroups": [""], "resources": ["pods", "pods/status"], "verbs": ["get", "create", "delete"]},
                          {"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["roles", "rolebindings"], "verbs": ["create", "update"]}]}),
            json!({"kind": "RoleBinding", "metadata": {"name": "jane", "namespace": "dev"},
                "roleRef": {"kind": "Role", "name": "pod-editor"},
                "subjects": [{"kind": "User", "name": "jane"}]}),
        ];
        Authorization::new(vec![
            Arc::new(PrivilegedGroup),
            Arc::new(Jane(Policy::from_objects(objs.iter()))),
        ])
    }

    fn jane() -> UserInfo {
        UserInfo {
            name: "jane".into(),
            uid: String::new(),
            groups: vec!["system:authenticated".into()],
        }
    }

    fn rule(groups: &[&str], res: &[&str], verbs: &[&str]) -> PolicyRule {
        PolicyRule::resource(groups, res, verbs)
    }

    #[test]
    fn a_rule_is_covered_only_by_permissions_held_in_that_namespace() {
        let a = chain();
        let u = jane();
        assert!(covered(
            &a,
            &u,
            "dev",
            &rule(&[""], &["pods"], &["get", "create"])
        ));
        assert!(covered(
            &a,
            &u,
            "dev",
            &rule(&[""], &["pods/status"], &["get"])
        ));
        assert!(!covered(&a, &u, "prod", &rule(&[""], &["pods"], &["get"])));
        assert!(!covered(&a, &u, "dev", &rule(&[""], &["pods"], &["patch"])));
        // Only a wildcard covers a wildcard.
        assert!(!covered(&a, &u, "dev", &rule(&[""], &["*"], &["get"])));
        assert!(!covered(&a, &u, "dev", &rule(&["*"], &["pods"], &["get"])));
        assert!(!covered(
            &a,
            &u,
            "dev",
            &PolicyRule::urls(&["/healthz"], &["get"])
        ));
        let admin = UserInfo::insecure_admin();
        assert!(covered(&a, &admin, "", &rule(&["*"], &["*"], &["*"])));
    }

    #[test]
    fn describe_prints_rules_as_kubernetes_does() {
        assert_eq!(
            describe(&rule(&["*"], &["*"], &["*"])),
            "{APIGroups:[\"*\"], Resources:[\"*\"], Verbs:[\"*\"]}"
        );
    }
}
