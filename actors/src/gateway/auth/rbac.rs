//! Role-based access control, after Kubernetes' plugin/pkg/auth/authorizer/rbac: a request
//! is allowed when a ClusterRoleBinding, or a RoleBinding in the request's namespace,
//! binds the user (by name, group or service account) to a role with a matching rule.
//! Nothing denies outright: no matching rule is "no opinion".
//!
//! The authorizer runs on every request, so the roles and bindings are compiled once into
//! a [`Policy`] and reused until one of them changes (the store tracks the revision of
//! each resource's last change: [`last_change`](crate::store::StoreHandle::last_change),
//! four map lookups). Each decision is then a scan of the cluster bindings plus the
//! bindings of one namespace.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use serde_json::Value;

use super::{Attributes, Authorizer, Decision, UserInfo};
use crate::api::meta;
use crate::store::{Rev, StoreHandle};

const RESOURCES: &[&str] = &[
    "clusterrolebindings",
    "clusterroles",
    "rolebindings",
    "roles",
];

/// One rule of a role, as stored (`rbac/v1 PolicyRule`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicyRule {
    pub verbs: Vec<String>,
    pub api_groups: Vec<String>,
    pub resources: Vec<String>,
    pub resource_names: Vec<String>,
    pub non_resource_urls: Vec<String>,
}

fn strings(v: &Value, field: &str) -> Vec<String> {
    v.get(field)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

impl PolicyRule {
    /// A rule for resources: `verbs` on `resources` in `groups`.
    pub fn resource(groups: &[&str], resources: &[&str], verbs: &[&str]) -> Self {
        let own = |xs: &[&str]| xs.iter().map(|s| s.to_string()).collect();
        PolicyRule {
            verbs: own(verbs),
            api_groups: own(groups),
            resources: own(resources),
            ..PolicyRule::default()
        }
    }

    /// A rule for non-resource paths (`/healthz`, `/api/*`).
    pub fn urls(urls: &[&str], verbs: &[&str]) -> Self {
        let own = |xs: &[&str]| xs.iter().map(|s| s.to_string()).collect();
        PolicyRule {
            verbs: own(verbs),
            non_resource_urls: own(urls),
            ..PolicyRule::default()
        }
    }

    pub fn from_value(v: &Value) -> Self {
        PolicyRule {
            verbs: strings(v, "verbs"),
            api_groups: strings(v, "apiGroups"),
            resources: strings(v, "resources"),
            resource_names: strings(v, "resourceNames"),
            non_resource_urls: strings(v, "nonResourceURLs"),
        }
    }

    /// The rule as a `PolicyRule` JSON object, for the objects bootstrapped at start.
    pub fn to_value(&self) -> Value {
        let mut m = serde_json::Map::new();
        for (k, v) in [
            ("apiGroups", &self.api_groups),
            ("resources", &self.resources),
            ("resourceNames", &self.resource_names),
            ("nonResourceURLs", &self.non_resource_urls),
            ("verbs", &self.verbs),
        ] {
            if !v.is_empty() || k == "verbs" {
                m.insert(k.into(), Value::from(v.clone()));
            }
        }
        Value::Object(m)
    }

    /// Kubernetes' `RuleAllows`.
    pub fn allows(&self, a: &Attributes) -> bool {
        let any = |xs: &[String], x: &str| xs.iter().any(|s| s == "*" || s == x);
        if !any(&self.verbs, &a.verb) {
            return false;
        }
        if !a.resource_request {
            return self.non_resource_urls.iter().any(|u| {
                u == "*"
                    || *u == a.path
                    || u.strip_suffix('*').is_some_and(|p| a.path.starts_with(p))
            });
        }
        any(&self.api_groups, &a.api_group)
            && self.matches_resource(&a.resource, &a.subresource)
            && (self.resource_names.is_empty() || self.resource_names.contains(&a.name))
    }

    fn matches_resource(&self, resource: &str, sub: &str) -> bool {
        let combined = if sub.is_empty() {
            resource.to_string()
        } else {
            format!("{resource}/{sub}")
        };
        self.resources.iter().any(|r| {
            r == "*"
                || *r == combined
                // `*/status` covers the status of every resource.
                || (!sub.is_empty() && r.strip_prefix("*/") == Some(sub))
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Subject {
    User(String),
    Group(String),
    /// namespace, name
    ServiceAccount(String, String),
}

impl Subject {
    fn from_value(v: &Value, binding_ns: &str) -> Option<Self> {
        let name = v.get("name")?.as_str()?.to_string();
        match v.get("kind")?.as_str()? {
            "User" => Some(Subject::User(name)),
            "Group" => Some(Subject::Group(name)),
            "ServiceAccount" => {
                let ns = v
                    .get("namespace")
                    .and_then(Value::as_str)
                    .filter(|s| !s.is_empty())
                    .unwrap_or(binding_ns);
                Some(Subject::ServiceAccount(ns.to_string(), name))
            }
            _ => None,
        }
    }

    fn applies_to(&self, user: &UserInfo) -> bool {
        match self {
            Subject::User(n) => *n == user.name,
            Subject::Group(g) => user.in_group(g),
            Subject::ServiceAccount(ns, n) => {
                user.name.strip_prefix("system:serviceaccount:")
                    == Some(format!("{ns}:{n}").as_str())
            }
        }
    }

    fn describe(&self) -> String {
        match self {
            Subject::User(n) => format!("User {n:?}"),
            Subject::Group(g) => format!("Group {g:?}"),
            Subject::ServiceAccount(ns, n) => format!("ServiceAccount \"{ns}/{n}\""),
        }
    }
}

#[derive(Debug, Clone)]
struct Binding {
    name: String,
    /// Empty for a ClusterRoleBinding.
    namespace: String,
    role_kind: String,
    role_name: String,
    subjects: Vec<Subject>,
}

impl Binding {
    fn from_value(v: &Value) -> Option<Self> {
        let namespace = meta::namespace(v).unwrap_or_default().to_string();
        let role = v.get("roleRef")?;
        Some(Binding {
            name: meta::name(v)?.to_string(),
            role_kind: role.get("kind")?.as_str()?.to_string(),
            role_name: role.get("name")?.as_str()?.to_string(),
            subjects: v
                .get("subjects")
                .and_then(Value::as_array)
                .map(|s| {
                    s.iter()
                        .filter_map(|x| Subject::from_value(x, &namespace))
                        .collect()
                })
                .unwrap_or_default(),
            namespace,
        })
    }
}

/// Every role and binding, compiled.
#[derive(Debug, Default)]
pub struct Policy {
    cluster_roles: HashMap<String, Vec<PolicyRule>>,
    /// (namespace, name) → rules.
    roles: HashMap<(String, String), Vec<PolicyRule>>,
    cluster_bindings: Vec<Binding>,
    /// namespace → its RoleBindings.
    bindings: HashMap<String, Vec<Binding>>,
}

fn rules_of(v: &Value) -> Vec<PolicyRule> {
    v.get("rules")
        .and_then(Value::as_array)
        .map(|r| r.iter().map(PolicyRule::from_value).collect())
        .unwrap_or_default()
}

impl Policy {
    /// Compile stored objects of the four RBAC kinds (others are ignored).
    pub fn from_objects<'a>(objects: impl IntoIterator<Item = &'a Value>) -> Self {
        let mut p = Policy::default();
        for v in objects {
            let name = meta::name(v).unwrap_or_default().to_string();
            match v.get("kind").and_then(Value::as_str) {
                Some("ClusterRole") => {
                    p.cluster_roles.insert(name, rules_of(v));
                }
                Some("Role") => {
                    let ns = meta::namespace(v).unwrap_or_default().to_string();
                    p.roles.insert((ns, name), rules_of(v));
                }
                Some("ClusterRoleBinding") => p.cluster_bindings.extend(Binding::from_value(v)),
                Some("RoleBinding") => {
                    if let Some(b) = Binding::from_value(v) {
                        p.bindings.entry(b.namespace.clone()).or_default().push(b);
                    }
                }
                _ => {}
            }
        }
        p
    }

    fn role_rules(&self, b: &Binding) -> &[PolicyRule] {
        let rules = match b.role_kind.as_str() {
            "ClusterRole" => self.cluster_roles.get(&b.role_name),
            // A RoleBinding's Role lives in the binding's namespace.
            "Role" if !b.namespace.is_empty() => {
                self.roles.get(&(b.namespace.clone(), b.role_name.clone()))
            }
            _ => None,
        };
        rules.map(Vec::as_slice).unwrap_or(&[])
    }

    /// Every rule bound to `user` in `namespace`: ClusterRoleBindings' and the
    /// namespace's RoleBindings'.
    pub fn rules_for(&self, user: &UserInfo, namespace: &str) -> super::Rules {
        let mut out = super::Rules::default();
        let local = self
            .bindings
            .get(namespace)
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        for b in self.cluster_bindings.iter().chain(local) {
            if !b.subjects.iter().any(|s| s.applies_to(user)) {
                continue;
            }
            for r in self.role_rules(b) {
                if r.non_resource_urls.is_empty() {
                    out.resource.push(r.clone());
                } else {
                    out.non_resource.push(r.clone());
                }
            }
        }
        out
    }

    /// Allow with Kubernetes' "allowed by" reason, or no opinion.
    pub fn decide(&self, a: &Attributes) -> Decision {
        let namespaced = if a.resource_request && !a.namespace.is_empty() {
            self.bindings.get(&a.namespace).map(Vec::as_slice)
        } else {
            None
        };
        let candidates = self
            .cluster_bindings
            .iter()
            .chain(namespaced.unwrap_or(&[]));
        for b in candidates {
            let Some(subject) = b.subjects.iter().find(|s| s.applies_to(&a.user)) else {
                continue;
            };
            if self.role_rules(b).iter().any(|r| r.allows(a)) {
                let what = if b.namespace.is_empty() {
                    format!("ClusterRoleBinding {:?}", b.name)
                } else {
                    format!("RoleBinding \"{}/{}\"", b.name, b.namespace)
                };
                tracing::trace!(binding = %what, subject = %subject.describe(), "rbac allowed");
                return Decision::Allow;
            }
        }
        Decision::NoOpinion
    }
}

/// A compiled policy and the revision of the last RBAC change it includes.
type Cached = (Rev, Arc<Policy>);

/// The RBAC authorizer over the store's roles and bindings.
pub struct Rbac {
    store: StoreHandle,
    cache: RwLock<Option<Cached>>,
}

impl Rbac {
    pub fn new(store: StoreHandle) -> Self {
        Rbac {
            store,
            cache: RwLock::new(None),
        }
    }

    /// The compiled policy, rebuilt only when an RBAC object changed.
    pub fn policy(&self) -> Arc<Policy> {
        let changed = self.store.last_change(RESOURCES);
        if let Some((seen, p)) = &*self.cache.read().unwrap_or_else(|e| e.into_inner()) {
            if *seen == changed {
                return p.clone();
            }
        }
        let mut values = Vec::new();
        for resource in RESOURCES {
            let (items, _) = self.store.list(&format!("{resource}/"));
            values.extend(items.into_iter().map(|(_, o)| o.value));
        }
        let policy = Arc::new(Policy::from_objects(values.iter().map(|v| &**v)));
        tracing::debug!(
            revision = changed,
            objects = values.len(),
            "rbac policy compiled"
        );
        // The revision read before listing: a change racing the rebuild makes the next
        // call rebuild again rather than keep a stale policy.
        *self.cache.write().unwrap_or_else(|e| e.into_inner()) = Some((changed, policy.clone()));
        policy
    }
}

impl Authorizer for Rbac {
    fn rules_for(&self, user: &UserInfo, namespace: &str) -> super::Rules {
        self.policy().rules_for(user, namespace)
    }

    fn authorize(&self, attrs: &Attributes) -> Decision {
        self.policy().decide(attrs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn user(name: &str, groups: &[&str]) -> UserInfo {
        UserInfo {
            name: name.into(),
            uid: String::new(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
        }
    }

    fn res(
        u: &UserInfo,
        verb: &str,
        group: &str,
        resource: &str,
        sub: &str,
        ns: &str,
    ) -> Attributes {
        Attributes {
            user: u.clone(),
            verb: verb.into(),
            resource_request: true,
            api_group: group.into(),
            resource: resource.into(),
            subresource: sub.into(),
            namespace: ns.into(),
            name: String::new(),
            path: String::new(),
        }
    }

    fn path(u: &UserInfo, verb: &str, p: &str) -> Attributes {
        Attributes {
            resource_request: false,
            path: p.into(),
            ..res(u, verb, "", "", "", "")
        }
    }

    #[test]
    fn resource_rules_match_verb_group_resource_and_subresource() {
        let jane = user("jane", &[]);
        let r = PolicyRule::resource(&[""], &["pods", "pods/log"], &["get", "list"]);
        assert!(r.allows(&res(&jane, "list", "", "pods", "", "dev")));
        assert!(r.allows(&res(&jane, "get", "", "pods", "log", "dev")));
        assert!(!r.allows(&res(&jane, "get", "", "pods", "status", "dev")));
        assert!(!r.allows(&res(&jane, "create", "", "pods", "", "dev")));
        assert!(!r.allows(&res(&jane, "get", "apps", "pods", "", "dev")));
        let status = PolicyRule::resource(&["*"], &["*/status"], &["*"]);
        assert!(status.allows(&res(&jane, "patch", "", "nodes", "status", "")));
        assert!(!status.allows(&res(&jane, "patch", "", "nodes", "", "")));
    }

    #[test]
    fn resource_names_narrow_a_rule() {
        let jane = user("jane", &[]);
        let mut r = PolicyRule::resource(&[""], &["nodes"], &["get"]);
        r.resource_names = vec!["n1".into()];
        let mut a = res(&jane, "get", "", "nodes", "", "");
        a.name = "n1".into();
        assert!(r.allows(&a));
        a.name = "n2".into();
        assert!(!r.allows(&a));
    }

    #[test]
    fn non_resource_urls_match_exactly_or_by_trailing_star() {
        let jane = user("jane", &[]);
        let r = PolicyRule::urls(&["/healthz", "/apis/*"], &["get"]);
        assert!(r.allows(&path(&jane, "get", "/healthz")));
        assert!(!r.allows(&path(&jane, "get", "/healthz/etcd")));
        assert!(r.allows(&path(&jane, "get", "/apis/rbac.authorization.k8s.io")));
        assert!(!r.allows(&path(&jane, "post", "/healthz")));
        // A resource rule never matches a path, nor a URL rule a resource.
        assert!(!r.allows(&res(&jane, "get", "", "healthz", "", "")));
    }

    fn policy() -> Policy {
        let objs = [
            json!({"kind": "ClusterRole", "metadata": {"name": "view"},
                "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}]}),
            json!({"kind": "Role", "metadata": {"name": "editor", "namespace": "dev"},
                "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["create"]}]}),
            json!({"kind": "ClusterRoleBinding", "metadata": {"name": "viewers"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
                "subjects": [{"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": "viewers"}]}),
            json!({"kind": "RoleBinding", "metadata": {"name": "jane-edits", "namespace": "dev"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "editor"},
                "subjects": [{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "jane"},
                             {"kind": "ServiceAccount", "name": "builder"}]}),
            json!({"kind": "RoleBinding", "metadata": {"name": "bob-views", "namespace": "prod"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
                "subjects": [{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "bob"}]}),
        ];
        Policy::from_objects(objs.iter())
    }

    #[test]
    fn cluster_bindings_apply_everywhere_and_role_bindings_in_their_namespace() {
        let p = policy();
        let viewer = user("amy", &["viewers"]);
        assert_eq!(
            p.decide(&res(&viewer, "list", "", "pods", "", "")),
            Decision::Allow
        );
        assert_eq!(
            p.decide(&res(&viewer, "create", "", "pods", "", "dev")),
            Decision::NoOpinion
        );
        let jane = user("jane", &[]);
        assert_eq!(
            p.decide(&res(&jane, "create", "", "pods", "", "dev")),
            Decision::Allow
        );
        assert_eq!(
            p.decide(&res(&jane, "create", "", "pods", "", "prod")),
            Decision::NoOpinion
        );
        let bob = user("bob", &[]);
        assert_eq!(
            p.decide(&res(&bob, "get", "", "pods", "", "prod")),
            Decision::Allow
        );
        // A RoleBinding to a ClusterRole grants it only in the binding's namespace.
        assert_eq!(
            p.decide(&res(&bob, "get", "", "pods", "", "dev")),
            Decision::NoOpinion
        );
        assert_eq!(
            p.decide(&res(&bob, "list", "", "pods", "", "")),
            Decision::NoOpinion
        );
    }

    #[test]
    fn service_account_subjects_default_to_the_binding_namespace() {
        let p = policy();
        let sa = user("system:serviceaccount:dev:builder", &[]);
        assert_eq!(
            p.decide(&res(&sa, "create", "", "pods", "", "dev")),
            Decision::Allow
        );
        let other = user("system:serviceaccount:prod:builder", &[]);
        assert_eq!(
            p.decide(&res(&other, "create", "", "pods", "", "dev")),
            Decision::NoOpinion
        );
    }

    #[test]
    fn a_binding_to_a_missing_role_grants_nothing() {
        let objs = [
            json!({"kind": "ClusterRoleBinding", "metadata": {"name": "b"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "nope"},
            "subjects": [{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "jane"}]}),
        ];
        let p = Policy::from_objects(objs.iter());
        let jane = user("jane", &[]);
        assert_eq!(
            p.decide(&res(&jane, "get", "", "pods", "", "")),
            Decision::NoOpinion
        );
    }

    #[test]
    fn rules_round_trip_through_json() {
        let mut r = PolicyRule::resource(&[""], &["pods"], &["get"]);
        r.resource_names = vec!["a".into()];
        assert_eq!(PolicyRule::from_value(&r.to_value()), r);
        let u = PolicyRule::urls(&["/version"], &["get"]);
        assert_eq!(
            u.to_value(),
            json!({"nonResourceURLs": ["/version"], "verbs": ["get"]})
        );
    }

    #[actix_rt::test]
    async fn the_policy_is_compiled_again_only_when_an_rbac_object_changes() {
        use crate::store::{self, StoreConfig, WriteOp};
        let dir = tempfile::tempdir().expect("tempdir");
        let metrics = Arc::new(crate::metrics::Metrics::new().expect("metrics"));
        let arbiter = actix::Arbiter::new();
        let handle =
            store::start(StoreConfig::new(dir.path()), metrics, &arbiter.handle()).expect("store");
        let write = |key: &str, object: Value| {
            handle.write(WriteOp::Create {
                key: key.to_string(),
                object,
            })
        };
        let rbac = Rbac::new(handle.clone());
        let first = rbac.policy();
        write("pods/default/p", json!({"kind": "Pod"}))
            .await
            .expect("write");
        assert!(
            Arc::ptr_eq(&first, &rbac.policy()),
            "a pod does not touch the policy"
        );
        write(
            "clusterroles//r",
            json!({"kind": "ClusterRole", "metadata": {"name": "r"},
                "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]}),
        )
        .await
        .expect("write");
        let second = rbac.policy();
        assert!(!Arc::ptr_eq(&first, &second));
        assert!(second.cluster_roles.contains_key("r"));
        arbiter.stop();
    }

    /// The cost of a decision with the policy cached, over a store holding the built-in
    /// policy and 1,000 RoleBindings in 100 namespaces: run with
    /// `cargo test -p skiff-actors --release --lib rbac_decision_cost -- --ignored --nocapture`.
    #[actix_rt::test]
    #[ignore]
    async fn rbac_decision_cost() {
        use crate::api::resources::object_key;
        use crate::store::{self, StoreConfig, WriteOp};
        let dir = tempfile::tempdir().expect("tempdir");
        let metrics = Arc::new(crate::metrics::Metrics::new().expect("metrics"));
        let arbiter = actix::Arbiter::new();
        let handle =
            store::start(StoreConfig::new(dir.path()), metrics, &arbiter.handle()).expect("store");
        let mut writes = Vec::new();
        for obj in crate::gateway::auth::bootstrap::objects() {
            let info = crate::api::resources::by_kind(obj["kind"].as_str().unwrap_or_default())
                .expect("kind");
            let key = object_key(info.name, None, meta::name(&obj).unwrap_or_default());
            writes.push(handle.write(WriteOp::Create { key, object: obj }));
        }
        for i in 0..1000 {
            let ns = format!("ns{}", i % 100);
            let obj = json!({"kind": "RoleBinding", "metadata": {"name": format!("b{i}"), "namespace": ns},
                "roleRef": {"kind": "ClusterRole", "name": "view"},
                "subjects": [{"kind": "User", "name": format!("user{i}")}]});
            let key = object_key("rolebindings", Some(&ns), &format!("b{i}"));
            writes.push(handle.write(WriteOp::Create { key, object: obj }));
        }
        for w in futures::future::join_all(writes).await {
            w.expect("write");
        }
        let rbac = Rbac::new(handle.clone());
        let u = user("user999", &["system:authenticated"]);
        let allowed = res(&u, "list", "", "pods", "", "ns99");
        let denied = res(&u, "create", "", "pods", "", "ns99");
        assert_eq!(rbac.authorize(&allowed), Decision::Allow);
        let n = 100_000;
        let started = std::time::Instant::now();
        for i in 0..n {
            let a = if i % 2 == 0 { &allowed } else { &denied };
            std::hint::black_box(rbac.authorize(a));
        }
        let per = started.elapsed() / n;
        eprintln!("rbac decision with 1,016 RBAC objects: {per:?} per request");
        arbiter.stop();
    }
}
