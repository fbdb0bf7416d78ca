//! Validation of RBAC objects (rbac.authorization.k8s.io/v1), after Kubernetes'
//! pkg/apis/rbac/validation: rules need verbs and either resources or non-resource URLs,
//! a binding's roleRef names a Role or ClusterRole and never changes.

use serde_json::Value;

use super::{
    child, get, get_array, get_str, index, invalid, not_supported, path_segment_errors, push_all,
    required, FieldError,
};

pub const RBAC_GROUP: &str = "rbac.authorization.k8s.io";

/// A Role (`namespaced`) or ClusterRole: every rule checked.
pub fn validate_role(obj: &Value, namespaced: bool, errs: &mut Vec<FieldError>) {
    // An aggregated ClusterRole's rules are filled in by a controller, which skiff
    // does not run; its rules are still checked like any other.
    for (i, rule) in get_array(obj, "rules").iter().enumerate() {
        validate_rule(rule, namespaced, &index("rules", i), errs);
    }
}

fn validate_rule(rule: &Value, namespaced: bool, path: &str, errs: &mut Vec<FieldError>) {
    let len = |name: &str| get_array(rule, name).len();
    if len("verbs") == 0 {
        errs.push(required(
            child(path, "verbs"),
            "verbs must contain at least one value",
        ));
    }
    if len("nonResourceURLs") > 0 {
        let urls = get(rule, "nonResourceURLs").cloned().unwrap_or(Value::Null);
        if namespaced {
            errs.push(invalid(
                child(path, "nonResourceURLs"),
                &urls,
                "namespaced rules cannot apply to non-resource URLs",
            ));
        }
        if len("apiGroups") > 0 || len("resources") > 0 || len("resourceNames") > 0 {
            errs.push(invalid(
                child(path, "nonResourceURLs"),
                &urls,
                "rules cannot apply to both regular resources and non-resource URLs",
            ));
        }
        return;
    }
    if len("apiGroups") == 0 {
        errs.push(required(
            child(path, "apiGroups"),
            "resource rules must supply at least one api group",
        ));
    }
    if len("resources") == 0 {
        errs.push(required(
            child(path, "resources"),
            "resource rules must supply at least one resource",
        ));
    }
}

/// A RoleBinding (`namespaced`) or ClusterRoleBinding; `old` is the stored binding on update.
pub fn validate_binding(
    obj: &Value,
    old: Option<&Value>,
    namespaced: bool,
    errs: &mut Vec<FieldError>,
) {
    let role_ref = obj.get("roleRef").unwrap_or(&Value::Null);
    let group = get_str(role_ref, "apiGroup");
    if group != RBAC_GROUP {
        errs.push(not_supported(
            "roleRef.apiGroup",
            &Value::from(group),
            &[RBAC_GROUP],
        ));
    }
    let kind = get_str(role_ref, "kind");
    let kinds: &[&str] = if namespaced {
        &["Role", "ClusterRole"]
    } else {
        &["ClusterRole"]
    };
    if !kinds.contains(&kind) {
        errs.push(not_supported("roleRef.kind", &Value::from(kind), kinds));
    }
    let name = get_str(role_ref, "name");
    if name.is_empty() {
        errs.push(required("roleRef.name", ""));
    } else {
        push_all(
            errs,
            "roleRef.name",
            &Value::from(name),
            path_segment_errors(name),
        );
    }
    for (i, subject) in get_array(obj, "subjects").iter().enumerate() {
        validate_subject(subject, namespaced, &index("subjects", i), errs);
    }
    if let Some(old) = old {
        let old_ref = old.get("roleRef").unwrap_or(&Value::Null);
        if old_ref != role_ref {
            errs.push(invalid("roleRef", role_ref, "cannot change roleRef"));
        }
    }
}

fn validate_subject(subject: &Value, namespaced: bool, path: &str, errs: &mut Vec<FieldError>) {
    let name = get_str(subject, "name");
    if name.is_empty() {
        errs.push(required(child(path, "name"), ""));
    }
    let group = get_str(subject, "apiGroup");
    match get_str(subject, "kind") {
        "ServiceAccount" => {
            if !group.is_empty() {
                errs.push(not_supported(
                    child(path, "apiGroup"),
                    &Value::from(group),
                    &[""],
                ));
            }
            if !namespaced && get_str(subject, "namespace").is_empty() {
                errs.push(required(child(path, "namespace"), ""));
            }
        }
        "User" | "Group" => {
            if group != RBAC_GROUP {
                errs.push(not_supported(
                    child(path, "apiGroup"),
                    &Value::from(group),
                    &[RBAC_GROUP],
                ));
            }
        }
        other => errs.push(not_supported(
            child(path, "kind"),
            &Value::from(other),
            &["ServiceAccount", "User", "Group"],
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::super::validate;
    use serde_json::json;

    fn fields(kind: &str, obj: &serde_json::Value, old: Option<&serde_json::Value>) -> Vec<String> {
        validate(kind, obj, old)
            .into_iter()
            .map(|e| e.message())
            .collect()
    }

    #[test]
    fn a_rule_without_verbs_is_invalid() {
        let role = json!({"metadata": {"name": "r", "namespace": "dev"},
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": []}]});
        assert_eq!(
            fields("Role", &role, None),
            vec!["rules[0].verbs: Required value: verbs must contain at least one value"]
        );
    }

    #[test]
    fn namespaced_roles_cannot_name_non_resource_urls() {
        let role = json!({"metadata": {"name": "r", "namespace": "dev"},
            "rules": [{"nonResourceURLs": ["/healthz"], "verbs": ["get"]}]});
        assert_eq!(fields("Role", &role, None).len(), 1);
        let cluster = json!({"metadata": {"name": "system:r"},
            "rules": [{"nonResourceURLs": ["/healthz"], "verbs": ["get"]}]});
        assert!(fields("ClusterRole", &cluster, None).is_empty());
    }

    #[test]
    fn cluster_role_bindings_may_only_refer_to_cluster_roles() {
        let b = json!({"metadata": {"name": "b"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "x"},
            "subjects": [{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "jane"}]});
        assert_eq!(
            fields("ClusterRoleBinding", &b, None),
            vec!["roleRef.kind: Unsupported value: \"Role\": supported values: \"ClusterRole\""]
        );
    }

    #[test]
    fn role_ref_cannot_change_on_update() {
        let old = json!({"metadata": {"name": "b", "namespace": "dev"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"}});
        let mut new = old.clone();
        new["roleRef"]["name"] = json!("edit");
        let errs = fields("RoleBinding", &new, Some(&old));
        assert_eq!(errs.len(), 1);
        assert!(errs[0].starts_with("roleRef: Invalid value"), "{errs:?}");
        assert!(errs[0].ends_with("cannot change roleRef"));
    }

    #[test]
    fn subjects_need_a_known_kind_and_a_name() {
        let b = json!({"metadata": {"name": "b", "namespace": "dev"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
            "subjects": [{"kind": "Robot", "name": ""}]});
        let errs = fields("RoleBinding", &b, None);
        assert_eq!(errs.len(), 2, "{errs:?}");
    }
}
