//! The node authorizer and node restriction, after Kubernetes' plugin/pkg/auth/authorizer/node
//! and plugin/pkg/admission/noderestriction: a kubelet, authenticated as
//! `system:node:<name>` in `system:nodes`, may read what its pods and its proxy need and
//! write only its own objects.
//!
//! What skiff's kubelet, pod workers and node proxy call (actors/src/kubelet,
//! actors/src/proxy, controllers/recorder.rs), all allowed here for the node's own
//! objects:
//!
//! | caller | calls |
//! |---|---|
//! | kubelet register | get, create, patch `nodes/<self>`; patch `nodes/<self>/status` |
//! | kubelet heartbeat | get `nodes/<self>`; patch `nodes/<self>/status` |
//! | kubelet pod informer | list, watch `pods` (all namespaces, `spec.nodeName=<self>`) |
//! | pod worker | patch `pods/<p>/status`, get and delete `pods/<p>` for pods bound to it |
//! | proxy informers | list, watch `services`, `endpoints` |
//! | event recorder | create, patch `events` in the involved object's namespace |
//!
//! Beyond those, as in Kubernetes: get/list/watch nodes and namespaces, its own Lease in
//! `kube-node-lease`, CertificateSigningRequests (certificate renewal), `get` of the
//! Secrets, ConfigMaps, PersistentVolumeClaims and ServiceAccounts that pods bound to it
//! reference, and tokens (`serviceaccounts/token`) for those pods' service accounts (node
//! restriction in the TokenRequest handler makes them bound to such a pod). A write to
//! another node's objects, or to a pod bound elsewhere, is denied outright; anything not
//! listed is left to RBAC, which grants nodes nothing by default.

use serde_json::Value;

use super::node_refs::{self, Referenced};
use super::rbac::PolicyRule;
use super::{Attributes, Authorizer, Decision, UserInfo};
use crate::api::{meta, resources, ApiError};
use crate::store::StoreHandle;

pub const NODES_GROUP: &str = "system:nodes";
pub const NODE_USER_PREFIX: &str = "system:node:";
pub const NODE_LEASE_NAMESPACE: &str = "kube-node-lease";

const READ: &[&str] = &["get", "list", "watch"];

/// The name of the node a user is, when it is one (both the name and the group say so).
pub fn node_name(user: &UserInfo) -> Option<&str> {
    let name = user.name.strip_prefix(NODE_USER_PREFIX)?;
    (!name.is_empty() && user.in_group(NODES_GROUP)).then_some(name)
}

/// What every node may do regardless of which objects are its own (Kubernetes'
/// bootstrap `NodeRules`, narrowed to the resources skiff serves). Also the rules of the
/// `system:node` ClusterRole.
pub fn node_rules() -> Vec<PolicyRule> {
    vec![
        PolicyRule::resource(
            &[""],
            &["nodes", "pods", "services", "endpoints", "namespaces"],
            READ,
        ),
        // Its proxy reads the Services' endpoints as slices (kube-proxy's node-proxier).
        PolicyRule::resource(&["discovery.k8s.io"], &["endpointslices"], READ),
        PolicyRule::resource(&[""], &["pods/status"], &["get"]),
        PolicyRule::resource(&[""], &["events"], &["create", "update", "patch"]),
        PolicyRule::resource(
            &["certificates.k8s.io"],
            &["certificatesigningrequests"],
            &["create", "get", "list", "watch"],
        ),
        // Its server authenticates and authorizes callers against the API server.
        PolicyRule::resource(&["authentication.k8s.io"], &["tokenreviews"], &["create"]),
        PolicyRule::resource(
            &["authorization.k8s.io"],
            &["subjectaccessreviews", "localsubjectaccessreviews"],
            &["create"],
        ),
    ]
}

/// The node authorizer: first in the chain, as with kube-apiserver's
/// `--authorization-mode=Node,RBAC`.
pub struct NodeAuthorizer {
    store: StoreHandle,
    rules: Vec<PolicyRule>,
}

impl NodeAuthorizer {
    pub fn new(store: StoreHandle) -> Self {
        NodeAuthorizer {
            store,
            rules: node_rules(),
        }
    }

    /// The node a stored pod is bound to; `None` when there is no such pod.
    fn pod_node(&self, namespace: &str, name: &str) -> Option<String> {
        let key = resources::object_key("pods", Some(namespace), name);
        let pod = self.store.get(&key)?;
        Some(
            pod.value
                .pointer("/spec/nodeName")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
        )
    }

    /// Whether some pod bound to `node` in the request's namespace references the object
    /// (kube's node graph: object → pod → node).
    fn related(&self, node: &str, kind: Referenced, namespace: &str, name: &str) -> bool {
        let (pods, _) = self.store.list(&resources::prefix("pods", Some(namespace)));
        pods.iter().any(|(_, p)| {
            p.value.pointer("/spec/nodeName").and_then(Value::as_str) == Some(node)
                && node_refs::names(&p.value, kind).iter().any(|n| n == name)
        })
    }

    /// Secrets, ConfigMaps, PVCs and ServiceAccounts: one at a time, when related.
    fn decide_referenced(&self, node: &str, kind: Referenced, a: &Attributes) -> Decision {
        let token = kind == Referenced::ServiceAccount && a.subresource == "token";
        if token && a.verb != "create" {
            return Decision::Deny("can only create tokens for individual service accounts".into());
        }
        if !token && a.verb != "get" {
            return Decision::Deny("can only read individual resources of this type".into());
        }
        if !token && !a.subresource.is_empty() {
            return Decision::Deny("cannot read subresource".into());
        }
        if a.namespace.is_empty() || a.name.is_empty() {
            return Decision::Deny("can only read namespaced object of this type".into());
        }
        if self.related(node, kind, &a.namespace, &a.name) {
            Decision::Allow
        } else {
            Decision::Deny(format!(
                "no relationship found between node '{node}' and this object"
            ))
        }
    }

    fn decide_pod(&self, node: &str, a: &Attributes) -> Decision {
        let write = match (a.subresource.as_str(), a.verb.as_str()) {
            ("status", "update" | "patch") => "update pod status",
            ("", "delete") => "delete pods",
            _ => {
                return Decision::Deny(format!(
                    "node {node:?} can only read pods, update the status of and delete pods bound to it"
                ))
            }
        };
        match self.pod_node(&a.namespace, &a.name) {
            // No such pod: the handler answers 404 without writing anything.
            None => Decision::Allow,
            Some(bound) if bound == node => Decision::Allow,
            Some(_) => Decision::Deny(format!(
                "node {node:?} can only {write} for pods with spec.nodeName set to itself"
            )),
        }
    }
}

impl Authorizer for NodeAuthorizer {
    fn rules_for(&self, user: &UserInfo, _namespace: &str) -> super::Rules {
        // As kube's node authorizer: a node's rights depend on its pods and cannot be
        // listed as rules.
        match node_name(user) {
            Some(_) => super::Rules {
                incomplete: true,
                errors: vec!["node authorizer does not support user rule resolution".into()],
                ..super::Rules::default()
            },
            None => super::Rules::default(),
        }
    }

    fn authorize(&self, a: &Attributes) -> Decision {
        let Some(node) = node_name(&a.user) else {
            return Decision::NoOpinion;
        };
        if !a.resource_request {
            // Discovery, health and version are RBAC's (system:discovery and friends).
            return Decision::NoOpinion;
        }
        if self.rules.iter().any(|r| r.allows(a)) {
            return Decision::Allow;
        }
        match (a.api_group.as_str(), a.resource.as_str()) {
            ("", "nodes") => {
                let own = a.name == node;
                // A create names the node in its body: node restriction checks it there.
                let create = a.verb == "create" && a.name.is_empty() && a.subresource.is_empty();
                let allowed_verb = matches!(a.verb.as_str(), "update" | "patch")
                    || (a.subresource.is_empty() && a.verb == "delete");
                if create || (own && allowed_verb) {
                    Decision::Allow
                } else {
                    Decision::Deny(format!(
                        "node {node:?} is not allowed to modify node {:?}",
                        a.name
                    ))
                }
            }
            ("", "pods") => self.decide_pod(node, a),
            ("", resource) if Referenced::of_resource(resource).is_some() => {
                match Referenced::of_resource(resource) {
                    Some(kind) => self.decide_referenced(node, kind, a),
                    None => Decision::NoOpinion,
                }
            }
            ("coordination.k8s.io", "leases") => {
                let own = a.name == node || (a.verb == "create" && a.name.is_empty());
                let verb = matches!(
                    a.verb.as_str(),
                    "get" | "create" | "update" | "patch" | "delete"
                );
                if a.namespace == NODE_LEASE_NAMESPACE && own && verb {
                    Decision::Allow
                } else {
                    Decision::Deny(format!(
                        "node {node:?} can only access its own lease in namespace {NODE_LEASE_NAMESPACE:?}"
                    ))
                }
            }
            _ => Decision::NoOpinion,
        }
    }
}

/// Node restriction on creates, where the object's name is in the body rather than the
/// path: a node may create only its own Node and its own Lease.
pub fn admit_create(user: &UserInfo, resource: &str, body: &Value) -> Result<(), ApiError> {
    let Some(node) = node_name(user) else {
        return Ok(());
    };
    let name = meta::name(body).unwrap_or_default();
    let what = match resource {
        "nodes" => "node",
        "leases" => "lease",
        _ => return Ok(()),
    };
    if name == node {
        Ok(())
    } else {
        Err(ApiError::Forbidden(format!(
            "{resource} {name:?} is forbidden: node {node:?} is not allowed to create a {what} named {name:?}"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::auth::Authorization;
    use crate::gateway::routing;
    use std::sync::Arc;

    fn node_user(name: &str) -> UserInfo {
        UserInfo {
            name: format!("system:node:{name}"),
            uid: String::new(),
            groups: vec![NODES_GROUP.into(), "system:authenticated".into()],
        }
    }

    fn attrs(u: &UserInfo, verb: &str, group: &str, path: &str) -> Attributes {
        let (g, v) = if group.is_empty() {
            ("", "v1")
        } else {
            (group, "v1")
        };
        let t = routing::parse_in(g, v, path).expect("route");
        Attributes::for_resource(u, verb, &t)
    }

    fn decide(store: &StoreHandle, a: &Attributes) -> Decision {
        NodeAuthorizer::new(store.clone()).authorize(a)
    }

    /// A real store in a temporary directory, holding one pod bound to n1 and one to n2.
    async fn store_with_pods() -> (tempfile::TempDir, actix::Arbiter, StoreHandle) {
        use crate::store::{self, StoreConfig, WriteOp};
        let dir = tempfile::tempdir().expect("tempdir");
        let metrics = Arc::new(crate::metrics::Metrics::new().expect("metrics"));
        let arbiter = actix::Arbiter::new();
        let handle =
            store::start(StoreConfig::new(dir.path()), metrics, &arbiter.handle()).expect("store");
        for (name, node) in [("mine", "n1"), ("theirs", "n2")] {
            let pod = serde_json::json!({"kind": "Pod", "metadata": {"name": name, "namespace": "default"},
                "spec": {"nodeName": node, "serviceAccountName": format!("{name}-sa"),
                    "volumes": [{"name": "v", "secret": {"secretName": format!("{name}-secret")}},
                        {"name": "c", "configMap": {"name": format!("{name}-cm")}}]}});
            handle
                .write(WriteOp::Create {
                    key: resources::object_key("pods", Some("default"), name),
                    object: pod,
                })
                .await
                .expect("write");
        }
        (dir, arbiter, handle)
    }

    #[actix_rt::test]
    async fn a_node_writes_only_its_own_node_and_the_status_of_its_own_pods() {
        let (_dir, arbiter, store) = store_with_pods().await;
        let n1 = node_user("n1");
        let allow = |verb: &str, group: &str, path: &str| {
            assert_eq!(
                decide(&store, &attrs(&n1, verb, group, path)),
                Decision::Allow,
                "{verb} {path}"
            )
        };
        allow("patch", "", "nodes/n1/status");
        allow("patch", "", "nodes/n1");
        allow("create", "", "nodes");
        allow("get", "", "nodes/n2");
        allow("list", "", "pods");
        allow("watch", "", "pods");
        allow("patch", "", "namespaces/default/pods/mine/status");
        allow("delete", "", "namespaces/default/pods/mine");
        allow("get", "", "namespaces/default/pods/theirs");
        allow("list", "", "services");
        allow("watch", "", "endpoints");
        allow("watch", "discovery.k8s.io", "endpointslices");
        allow("create", "", "namespaces/default/events");
        allow("patch", "", "namespaces/kube-system/events/x");
        allow(
            "update",
            "coordination.k8s.io",
            "namespaces/kube-node-lease/leases/n1",
        );
        allow(
            "create",
            "certificates.k8s.io",
            "certificatesigningrequests",
        );
        // The pod is gone: nothing to protect, the handler answers 404.
        allow("patch", "", "namespaces/default/pods/gone/status");
        // What its own pods reference.
        allow("get", "", "namespaces/default/secrets/mine-secret");
        allow("get", "", "namespaces/default/configmaps/mine-cm");
        allow("get", "", "namespaces/default/serviceaccounts/mine-sa");
        allow(
            "create",
            "",
            "namespaces/default/serviceaccounts/mine-sa/token",
        );

        let deny = |verb: &str, group: &str, path: &str| {
            assert!(
                matches!(
                    decide(&store, &attrs(&n1, verb, group, path)),
                    Decision::Deny(_)
                ),
                "{verb} {path} should be denied"
            )
        };
        deny("patch", "", "nodes/n2/status");
        deny("update", "", "nodes/n2");
        deny("delete", "", "nodes/n2");
        deny("patch", "", "namespaces/default/pods/theirs/status");
        deny("delete", "", "namespaces/default/pods/theirs");
        deny("create", "", "namespaces/default/pods");
        deny("patch", "", "namespaces/default/pods/mine");
        deny("create", "", "namespaces/default/pods/mine/binding");
        deny("get", "", "namespaces/default/secrets/theirs-secret");
        deny("list", "", "namespaces/default/secrets");
        deny("get", "", "namespaces/default/configmaps/theirs-cm");
        deny(
            "create",
            "",
            "namespaces/default/serviceaccounts/theirs-sa/token",
        );
        deny("get", "", "namespaces/kube-system/secrets/mine-secret");
        deny(
            "update",
            "coordination.k8s.io",
            "namespaces/kube-node-lease/leases/n2",
        );
        deny(
            "update",
            "coordination.k8s.io",
            "namespaces/default/leases/n1",
        );
        arbiter.stop();
    }

    #[actix_rt::test]
    async fn other_users_and_other_resources_are_left_to_rbac() {
        let (_dir, arbiter, store) = store_with_pods().await;
        let jane = UserInfo {
            name: "jane".into(),
            uid: String::new(),
            groups: vec![],
        };
        assert_eq!(
            decide(&store, &attrs(&jane, "patch", "", "nodes/n2/status")),
            Decision::NoOpinion
        );
        // The name alone does not make a node: the group must say so too.
        let impostor = UserInfo {
            groups: vec![],
            ..node_user("n2")
        };
        assert_eq!(
            decide(&store, &attrs(&impostor, "patch", "", "nodes/n2/status")),
            Decision::NoOpinion
        );
        let n1 = node_user("n1");
        assert_eq!(
            decide(
                &store,
                &attrs(&n1, "list", "rbac.authorization.k8s.io", "clusterroles")
            ),
            Decision::NoOpinion
        );
        // In the chain, nobody else having an opinion makes that a 403.
        let chain = Authorization::new(vec![Arc::new(NodeAuthorizer::new(store.clone()))]);
        let err = chain
            .check(&attrs(
                &n1,
                "patch",
                "",
                "namespaces/default/pods/theirs/status",
            ))
            .expect_err("denied");
        assert_eq!(
            err.to_string(),
            "pods \"theirs\" is forbidden: User \"system:node:n1\" cannot patch resource \"pods/status\" in API group \"\" in the namespace \"default\": node \"n1\" can only update pod status for pods with spec.nodeName set to itself"
        );
        arbiter.stop();
    }

    #[test]
    fn a_node_may_create_only_its_own_node_and_lease() {
        let n1 = node_user("n1");
        let node = |name: &str| serde_json::json!({"metadata": {"name": name}});
        assert!(admit_create(&n1, "nodes", &node("n1")).is_ok());
        assert!(matches!(
            admit_create(&n1, "nodes", &node("n2")),
            Err(ApiError::Forbidden(_))
        ));
        assert!(admit_create(&n1, "leases", &node("n2")).is_err());
        assert!(admit_create(&n1, "events", &node("anything")).is_ok());
        let admin = UserInfo::insecure_admin();
        assert!(admit_create(&admin, "nodes", &node("n2")).is_ok());
    }
}
