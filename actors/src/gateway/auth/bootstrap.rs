//! The built-in RBAC policy every cluster starts with, after Kubernetes'
//! plugin/pkg/auth/authorizer/rbac/bootstrappolicy, narrowed to the resources skiff
//! serves: the user-facing `cluster-admin`, `admin`, `edit` and `view` roles, and the
//! `system:` roles and bindings that let any authenticated user discover the API and ask
//! what it may do, and let bootstrapping nodes request certificates.

use serde_json::{json, Value};

use super::node;
use super::rbac::PolicyRule;

/// Bootstrapped objects are re-applied at every start unless this annotation says "false"
/// (Kubernetes' own switch for keeping a customised default role).
pub const AUTOUPDATE_ANNOTATION: &str = "rbac.authorization.kubernetes.io/autoupdate";

const READ: &[&str] = &["get", "list", "watch"];
const WRITE: &[&str] = &["create", "delete", "deletecollection", "patch", "update"];
const RBAC_GROUP: &str = "rbac.authorization.k8s.io";

fn metadata(name: &str) -> Value {
    json!({
        "name": name,
        "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"},
        "annotations": {AUTOUPDATE_ANNOTATION: "true"},
    })
}

fn cluster_role(name: &str, rules: &[PolicyRule]) -> Value {
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": metadata(name),
        "rules": rules.iter().map(PolicyRule::to_value).collect::<Vec<_>>(),
    })
}

fn cluster_binding(name: &str, role: &str, groups: &[&str]) -> Value {
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": metadata(name),
        "roleRef": {"apiGroup": RBAC_GROUP, "kind": "ClusterRole", "name": role},
        "subjects": groups.iter()
            .map(|g| json!({"apiGroup": RBAC_GROUP, "kind": "Group", "name": g}))
            .collect::<Vec<_>>(),
    })
}

/// `view`: read everything in a namespace except roles, bindings and secrets (reading a
/// secret, a service account token among them, would let a viewer act as someone else).
pub fn view_rules() -> Vec<PolicyRule> {
    vec![
        PolicyRule::resource(
            &[""],
            &[
                "pods",
                "pods/log",
                "pods/status",
                "replicationcontrollers",
                "replicationcontrollers/scale",
                "replicationcontrollers/status",
                "services",
                "services/status",
                "endpoints",
                "configmaps",
                "persistentvolumeclaims",
                "persistentvolumeclaims/status",
                "serviceaccounts",
                "resourcequotas",
                "resourcequotas/status",
                "events",
                "namespaces",
                "namespaces/status",
            ],
            READ,
        ),
        PolicyRule::resource(
            &["autoscaling"],
            &[
                "horizontalpodautoscalers",
                "horizontalpodautoscalers/status",
            ],
            READ,
        ),
        PolicyRule::resource(
            &["apps"],
            &[
                "deployments",
                "deployments/scale",
                "deployments/status",
                "replicasets",
                "replicasets/scale",
                "replicasets/status",
                "daemonsets",
                "daemonsets/status",
                "statefulsets",
                "statefulsets/scale",
                "statefulsets/status",
                "controllerrevisions",
            ],
            READ,
        ),
        PolicyRule::resource(
            &["policy"],
            &["poddisruptionbudgets", "poddisruptionbudgets/status"],
            READ,
        ),
        PolicyRule::resource(&["discovery.k8s.io"], &["endpointslices"], READ),
        PolicyRule::resource(
            &["batch"],
            &["jobs", "jobs/status", "cronjobs", "cronjobs/status"],
            READ,
        ),
    ]
}

/// `edit`: `view` plus writing workloads and services (not quotas, namespaces or RBAC).
pub fn edit_rules() -> Vec<PolicyRule> {
    let mut rules = view_rules();
    // Reading secrets is an escalation `view` does not get; `edit` may run pods that
    // mount any of them anyway.
    rules.push(PolicyRule::resource(&[""], &["secrets"], READ));
    rules.push(PolicyRule::resource(
        &[""],
        &[
            "pods",
            "replicationcontrollers",
            "replicationcontrollers/scale",
            "services",
            "endpoints",
            "configmaps",
            "secrets",
            "persistentvolumeclaims",
            "serviceaccounts",
        ],
        WRITE,
    ));
    rules.push(PolicyRule::resource(
        &[""],
        &["serviceaccounts/token"],
        &["create"],
    ));
    rules.push(PolicyRule::resource(
        &["autoscaling"],
        &["horizontalpodautoscalers"],
        WRITE,
    ));
    rules.push(PolicyRule::resource(
        &["apps"],
        &[
            "deployments",
            "deployments/scale",
            "deployments/rollback",
            "replicasets",
            "replicasets/scale",
            "daemonsets",
            "statefulsets",
            "statefulsets/scale",
        ],
        WRITE,
    ));
    rules.push(PolicyRule::resource(
        &["policy"],
        &["poddisruptionbudgets"],
        WRITE,
    ));
    rules.push(PolicyRule::resource(
        &["batch"],
        &["jobs", "cronjobs"],
        WRITE,
    ));
    // `kubectl drain` evicts.
    rules.push(PolicyRule::resource(&[""], &["pods/eviction"], &["create"]));
    // exec, attach, cp and port-forward (Kubernetes' `edit` aggregates them).
    let mut streams = READ.to_vec();
    streams.extend_from_slice(WRITE);
    rules.push(PolicyRule::resource(
        &[""],
        &["pods/attach", "pods/exec", "pods/portforward", "pods/proxy"],
        &streams,
    ));
    rules
}

/// `admin`: `edit` plus managing roles and bindings inside a namespace.
pub fn admin_rules() -> Vec<PolicyRule> {
    let mut rules = edit_rules();
    let mut all = READ.to_vec();
    all.extend_from_slice(WRITE);
    rules.push(PolicyRule::resource(
        &[RBAC_GROUP],
        &["roles", "rolebindings"],
        &all,
    ));
    rules
}

/// Kubernetes' `system:node` role: what the node authorizer grants a kubelet, as a role
/// an administrator can bind (it is not bound by default; the node authorizer decides).
fn system_node_rules() -> Vec<PolicyRule> {
    let mut rules = node::node_rules();
    rules.push(PolicyRule::resource(
        &[""],
        &["nodes"],
        &["create", "update", "patch", "delete"],
    ));
    rules.push(PolicyRule::resource(
        &[""],
        &["nodes/status", "pods/status"],
        &["patch", "update"],
    ));
    rules.push(PolicyRule::resource(&[""], &["pods"], &["delete"]));
    rules.push(PolicyRule::resource(
        &["coordination.k8s.io"],
        &["leases"],
        &["get", "create", "update", "patch", "delete"],
    ));
    rules
}

/// Every built-in ClusterRole and ClusterRoleBinding, roles first.
pub fn objects() -> Vec<Value> {
    let discovery_urls = [
        "/api",
        "/api/*",
        "/apis",
        "/apis/*",
        "/healthz",
        "/livez",
        "/openapi",
        "/openapi/*",
        "/readyz",
        "/version",
        "/version/",
    ];
    let public_urls = ["/healthz", "/livez", "/readyz", "/version", "/version/"];
    vec![
        cluster_role(
            "cluster-admin",
            &[
                PolicyRule::resource(&["*"], &["*"], &["*"]),
                PolicyRule::urls(&["*"], &["*"]),
            ],
        ),
        cluster_role("admin", &admin_rules()),
        cluster_role("edit", &edit_rules()),
        cluster_role("view", &view_rules()),
        cluster_role(
            "system:discovery",
            &[PolicyRule::urls(&discovery_urls, &["get"])],
        ),
        cluster_role(
            "system:basic-user",
            &[
                PolicyRule::resource(
                    &["authorization.k8s.io"],
                    &["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
                    &["create"],
                ),
                PolicyRule::resource(
                    &["authentication.k8s.io"],
                    &["selfsubjectreviews"],
                    &["create"],
                ),
            ],
        ),
        cluster_role(
            "system:public-info-viewer",
            &[PolicyRule::urls(&public_urls, &["get"])],
        ),
        cluster_role(
            "system:monitoring",
            &[PolicyRule::urls(
                &[
                    "/healthz",
                    "/healthz/*",
                    "/livez",
                    "/livez/*",
                    "/readyz",
                    "/readyz/*",
                    "/metrics",
                ],
                &["get"],
            )],
        ),
        cluster_role(
            "system:node-bootstrapper",
            &[PolicyRule::resource(
                &["certificates.k8s.io"],
                &["certificatesigningrequests"],
                &["create", "get", "list", "watch"],
            )],
        ),
        cluster_role("system:node", &system_node_rules()),
        // The service account issuer's OIDC discovery; bound to service accounts only, as
        // in Kubernetes (bind it to system:unauthenticated to publish it to anyone).
        cluster_role(
            "system:service-account-issuer-discovery",
            &[PolicyRule::urls(
                crate::gateway::auth::authn::ANONYMOUS_PATHS,
                &["get"],
            )],
        ),
        // What a component that delegates authentication and authorization to the API
        // server needs (bound by whoever runs one, as in Kubernetes).
        cluster_role(
            "system:auth-delegator",
            &[
                PolicyRule::resource(&["authentication.k8s.io"], &["tokenreviews"], &["create"]),
                PolicyRule::resource(
                    &["authorization.k8s.io"],
                    &["subjectaccessreviews"],
                    &["create"],
                ),
            ],
        ),
        cluster_binding("cluster-admin", "cluster-admin", &["system:masters"]),
        cluster_binding(
            "system:discovery",
            "system:discovery",
            &["system:authenticated"],
        ),
        cluster_binding(
            "system:basic-user",
            "system:basic-user",
            &["system:authenticated"],
        ),
        cluster_binding(
            "system:public-info-viewer",
            "system:public-info-viewer",
            &["system:authenticated", "system:unauthenticated"],
        ),
        cluster_binding(
            "system:monitoring",
            "system:monitoring",
            &["system:monitoring"],
        ),
        cluster_binding(
            "system:node-bootstrapper",
            "system:node-bootstrapper",
            &["system:bootstrappers"],
        ),
        cluster_binding(
            "system:service-account-issuer-discovery",
            "system:service-account-issuer-discovery",
            &["system:serviceaccounts"],
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::validation;
    use crate::gateway::auth::rbac::Policy;
    use crate::gateway::auth::{Attributes, Decision, UserInfo};
    use crate::gateway::routing;

    #[test]
    fn every_builtin_object_is_valid() {
        for obj in objects() {
            let kind = obj["kind"].as_str().expect("kind");
            assert_eq!(
                validation::decode_check(kind, &obj).expect("decodes"),
                Vec::<String>::new()
            );
            assert!(validation::validate(kind, &obj, None).is_empty(), "{obj}");
        }
    }

    fn user(groups: &[&str]) -> UserInfo {
        UserInfo {
            name: "jane".into(),
            uid: String::new(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
        }
    }

    fn can(p: &Policy, u: &UserInfo, verb: &str, group: &str, path: &str) -> bool {
        let t = routing::parse_in(group, "v1", path).expect("route");
        p.decide(&Attributes::for_resource(u, verb, &t)) == Decision::Allow
    }

    #[test]
    fn masters_may_do_anything_and_authenticated_users_only_discover() {
        let objs = objects();
        let p = Policy::from_objects(objs.iter());
        let admin = user(&["system:masters"]);
        assert!(can(&p, &admin, "delete", "", "nodes/n1"));
        assert!(can(
            &p,
            &admin,
            "create",
            "rbac.authorization.k8s.io",
            "clusterroles"
        ));
        let anyone = user(&["system:authenticated"]);
        assert!(!can(&p, &anyone, "list", "", "pods"));
        assert!(can(
            &p,
            &anyone,
            "create",
            "authorization.k8s.io",
            "selfsubjectaccessreviews"
        ));
        let version = Attributes {
            resource_request: false,
            path: "/version".into(),
            verb: "get".into(),
            ..Attributes::for_resource(&anyone, "get", &routing::parse("pods").expect("route"))
        };
        assert_eq!(p.decide(&version), Decision::Allow);
        let metrics = Attributes {
            path: "/metrics".into(),
            ..version
        };
        assert_eq!(p.decide(&metrics), Decision::NoOpinion);
    }

    #[test]
    fn view_reads_configmaps_but_not_secrets_and_edit_writes_both() {
        let u = user(&[]);
        let allowed = |rules: &[PolicyRule], verb: &str, path: &str| {
            let t = routing::parse_in("", "v1", path).expect("route");
            let a = Attributes::for_resource(&u, verb, &t);
            rules.iter().any(|r| r.allows(&a))
        };
        let view = view_rules();
        assert!(allowed(&view, "get", "namespaces/dev/configmaps/c"));
        assert!(allowed(&view, "list", "namespaces/dev/serviceaccounts"));
        assert!(!allowed(&view, "get", "namespaces/dev/secrets/s"));
        assert!(!allowed(&view, "list", "namespaces/dev/secrets"));
        let edit = edit_rules();
        assert!(allowed(&edit, "get", "namespaces/dev/secrets/s"));
        assert!(allowed(&edit, "create", "namespaces/dev/secrets"));
        assert!(allowed(&edit, "update", "namespaces/dev/configmaps/c"));
    }

    #[test]
    fn view_edit_and_admin_build_on_each_other() {
        let view = view_rules();
        let edit = edit_rules();
        let admin = admin_rules();
        assert!(edit.starts_with(&view) && admin.starts_with(&edit));
        let roles = PolicyRule::resource(&[RBAC_GROUP], &["roles"], &["list"]);
        let u = user(&[]);
        let t = routing::parse_in(RBAC_GROUP, "v1", "namespaces/dev/roles").expect("route");
        let a = Attributes::for_resource(&u, "list", &t);
        assert!(roles.allows(&a));
        assert!(!edit.iter().any(|r| r.allows(&a)));
        assert!(admin.iter().any(|r| r.allows(&a)));
    }
}
