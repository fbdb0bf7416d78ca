//! A seeded fuzz test of the gateway: thousands of malformed requests — mutated and
//! random bodies for create, update and the three patch types, protobuf bodies (well
//! formed, cut, with bytes flipped or inserted, without the magic, of another kind, nested
//! deeply), garbage headers,
//! Content-Length that lies, random and encoded paths and query strings — sent over raw
//! TCP so that nothing on the client side tidies them up. Every request must get an HTTP
//! answer below 500 (a panic in a handler shows up as a connection closed without one),
//! and the server must answer normally afterwards.
//!
//! `SKIFF_FUZZ_SEED` picks another seed and `SKIFF_FUZZ_CASES` another number of cases;
//! a failure prints the seed and the offending requests.

use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{json, Map, Value};
use skiff_actors::api::protobuf;
use skiff_integration::{call, client, TestCluster};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// xorshift64*: small, seedable, good enough to pick cases.
struct Rng(u64);

impl Rng {
    /// splitmix64 of the seed: distinct seeds give unrelated, non-zero states.
    fn seeded(seed: u64) -> Rng {
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Rng((z ^ (z >> 31)) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }

    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }

    fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len())]
    }
}

const WORDS: &[&str] = &[
    "",
    "-1",
    "0",
    "1e400",
    "NaN",
    "100Gi",
    "0x10",
    "🙂",
    "a\u{0}b",
    "../..",
    "$patch",
    "*",
    "Always",
    "TCP",
    "ClusterIP",
    "NodePort",
    "default",
    "kube-system",
    "app",
    "a=b",
    "\\",
    "\"",
    "{}",
    "[]",
    "null",
    "true",
    "100m",
    "-5m",
    "1.5",
    "99999999999999999999",
    "rbac.authorization.k8s.io",
    "Role",
    "ClusterRole",
    "User",
    "Group",
    "ServiceAccount",
    "spec.nodeName",
    "metadata.name",
    "%",
    "%00",
    "\u{202e}",
    "ünïcödé",
    "a/b",
    ":",
    "system:masters",
];

fn random_string(rng: &mut Rng) -> String {
    match rng.below(4) {
        0 => rng.pick(WORDS).to_string(),
        1 => "x".repeat(rng.below(70_000)),
        2 => (0..rng.below(40))
            .map(|_| char::from_u32(rng.below(0x2FFF) as u32).unwrap_or('?'))
            .collect(),
        _ => (0..rng.below(20))
            .map(|_| *rng.pick(&['a', 'Z', '-', '.', '_', '/', '0', ' ', '=', ',', '!']))
            .collect(),
    }
}

fn nested(rng: &mut Rng, depth: usize) -> Value {
    let mut v = json!(1);
    for _ in 0..depth {
        v = if rng.chance(50) {
            json!([v])
        } else {
            json!({ "a": v })
        };
    }
    v
}

fn junk(rng: &mut Rng, depth: usize) -> Value {
    match rng.below(17) {
        0 => Value::Null,
        1 => json!(rng.chance(50)),
        2 => json!(-1),
        3 => json!(i64::MAX),
        4 => json!(u64::MAX),
        5 => json!(1e308),
        6 => json!(-0.5),
        7 => json!(i64::MIN),
        8 | 9 => Value::String(random_string(rng)),
        10 => json!([]),
        11 => json!({}),
        // serde_json refuses more than 128 levels; stay inside to reach the handlers.
        12 => {
            let depth = rng.below(120);
            nested(rng, depth)
        }
        13 if depth < 3 => Value::Array((0..rng.below(5)).map(|_| junk(rng, depth + 1)).collect()),
        14 if depth < 3 => {
            let mut m = Map::new();
            for _ in 0..rng.below(5) {
                m.insert(random_string(rng), junk(rng, depth + 1));
            }
            Value::Object(m)
        }
        _ => Value::String(rng.pick(WORDS).to_string()),
    }
}

/// A value of the same JSON type as `v` but unusual: type checks pass, so validation,
/// defaulting, selectors and patching see it.
fn junk_like(rng: &mut Rng, v: &Value) -> Value {
    match v {
        Value::String(_) => Value::String(random_string(rng)),
        Value::Number(_) => {
            json!(*rng.pick(&[-1i64, 0, 1 << 31, -(1 << 31) - 1, 65536, 1 << 53, 7]))
        }
        Value::Bool(b) => json!(!b),
        Value::Array(a) => match (rng.below(3), a.first()) {
            (0, _) | (_, None) => json!([]),
            (1, Some(first)) => Value::Array(vec![first.clone(); 2 + rng.below(3)]),
            (_, Some(first)) => {
                let mut out = a.clone();
                out.push(junk_like(rng, first));
                Value::Array(out)
            }
        },
        Value::Object(m) => {
            let mut m = m.clone();
            m.insert(random_string(rng), Value::String(random_string(rng)));
            Value::Object(m)
        }
        Value::Null => junk(rng, 0),
    }
}

/// Every JSON pointer inside `v`.
fn pointers(v: &Value, at: String, out: &mut Vec<String>) {
    out.push(at.clone());
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                let k = k.replace('~', "~0").replace('/', "~1");
                pointers(x, format!("{at}/{k}"), out);
            }
        }
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                pointers(x, format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
}

/// A few random edits of a valid object: values replaced by junk, keys removed or added.
fn mutate(rng: &mut Rng, mut v: Value) -> Value {
    for _ in 0..1 + rng.below(4) {
        let mut ps = Vec::new();
        pointers(&v, String::new(), &mut ps);
        let p = rng.pick(&ps).clone();
        let edit = rng.below(3);
        let key = random_string(rng);
        let Some(slot) = v.pointer_mut(&p) else {
            continue;
        };
        let fresh = if rng.chance(60) {
            junk_like(rng, slot)
        } else {
            junk(rng, 0)
        };
        match (edit, slot) {
            (0, Value::Object(m)) if !m.is_empty() => {
                let k = m
                    .keys()
                    .nth(rng.below(m.len()))
                    .cloned()
                    .unwrap_or_default();
                m.remove(&k);
            }
            (1, Value::Object(m)) => {
                m.insert(key, fresh);
            }
            (1, Value::Array(a)) => a.push(fresh),
            (_, slot) => *slot = fresh,
        }
    }
    v
}

/// What the fuzz can address: a collection, one fixture object in it, a valid template.
struct Target {
    collection: &'static str,
    fixture: &'static str,
    subresources: &'static [&'static str],
    template: Value,
}

fn targets() -> Vec<Target> {
    vec![
        Target {
            collection: "/api/v1/namespaces/default/pods",
            fixture: "fx-pod",
            subresources: &["status", "binding", "log", "exec", "scale", "eviction"],
            template: json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "fx-pod", "labels": {"a": "b"}, "annotations": {"x": "y"}},
                "spec": {"containers": [{"name": "app", "image": "busybox", "ports": [{"containerPort": 80, "protocol": "TCP"}],
                    "env": [{"name": "X", "value": "y"}, {"name": "N", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
                    "resources": {"limits": {"cpu": "1", "memory": "1Gi"}, "requests": {"cpu": "100m"}},
                    "readinessProbe": {"httpGet": {"path": "/", "port": 80}, "periodSeconds": 5}}],
                    "restartPolicy": "Always", "nodeSelector": {"k": "v"},
                    "tolerations": [{"key": "k", "operator": "Exists", "effect": "NoSchedule"}],
                    "terminationGracePeriodSeconds": 5}}),
        },
        Target {
            collection: "/api/v1/namespaces/default/services",
            fixture: "fx-svc",
            subresources: &["status"],
            template: json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "fx-svc"},
                "spec": {"selector": {"a": "b"}, "type": "NodePort", "sessionAffinity": "None",
                    "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}]}}),
        },
        Target {
            collection: "/api/v1/namespaces/default/replicationcontrollers",
            fixture: "fx-rc",
            subresources: &["status", "scale"],
            template: json!({"apiVersion": "v1", "kind": "ReplicationController", "metadata": {"name": "fx-rc"},
                "spec": {"replicas": 1, "selector": {"a": "b"}, "template": {"metadata": {"labels": {"a": "b"}},
                    "spec": {"containers": [{"name": "c", "image": "i"}]}}}}),
        },
        Target {
            collection: "/api/v1/nodes",
            fixture: "fx-node",
            subresources: &["status"],
            template: json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "fx-node", "labels": {"x": "y"}},
                "spec": {"taints": [{"key": "k", "value": "v", "effect": "NoSchedule"}], "unschedulable": false},
                "status": {"capacity": {"cpu": "4", "memory": "8Gi", "pods": "110"},
                    "conditions": [{"type": "Ready", "status": "True"}],
                    "addresses": [{"type": "InternalIP", "address": "10.0.0.1"}]}}),
        },
        Target {
            collection: "/api/v1/namespaces",
            fixture: "fx-ns",
            subresources: &["status", "finalize"],
            template: json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "fx-ns"},
                "spec": {"finalizers": ["kubernetes"]}}),
        },
        Target {
            collection: "/api/v1/namespaces/default/endpoints",
            fixture: "fx-ep",
            subresources: &[],
            template: json!({"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "fx-ep"},
                "subsets": [{"addresses": [{"ip": "10.1.1.1", "targetRef": {"kind": "Pod", "name": "p"}}],
                    "ports": [{"port": 80, "name": "http"}]}]}),
        },
        Target {
            collection: "/api/v1/namespaces/default/resourcequotas",
            fixture: "fx-quota",
            subresources: &["status"],
            template: json!({"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "fx-quota"},
                "spec": {"hard": {"pods": "1000", "requests.cpu": "400", "count/services": "100"}}}),
        },
        Target {
            collection: "/api/v1/namespaces/default/events",
            fixture: "fx-ev",
            subresources: &[],
            template: json!({"apiVersion": "v1", "kind": "Event", "metadata": {"name": "fx-ev"},
                "involvedObject": {"kind": "Pod", "name": "fx-pod", "namespace": "default"},
                "reason": "R", "message": "m", "type": "Normal", "count": 1}),
        },
        Target {
            collection: "/apis/rbac.authorization.k8s.io/v1/namespaces/default/roles",
            fixture: "fx-role",
            subresources: &[],
            template: json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "fx-role"},
                "rules": [{"apiGroups": [""], "resources": ["pods", "pods/log"], "resourceNames": ["a"], "verbs": ["get", "list"]}]}),
        },
        Target {
            collection: "/apis/rbac.authorization.k8s.io/v1/clusterroles",
            fixture: "fx-cr",
            subresources: &[],
            template: json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "fx-cr"},
                "rules": [{"nonResourceURLs": ["/healthz", "/api/*"], "verbs": ["get"]},
                          {"apiGroups": ["*"], "resources": ["*/status"], "verbs": ["*"]}]}),
        },
        Target {
            collection: "/apis/rbac.authorization.k8s.io/v1/namespaces/default/rolebindings",
            fixture: "fx-rb",
            subresources: &[],
            template: json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "fx-rb"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "fx-role"},
                "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "jane"},
                             {"kind": "ServiceAccount", "name": "sa", "namespace": "default"}]}),
        },
        Target {
            collection: "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
            fixture: "fx-crb",
            subresources: &[],
            template: json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": "fx-crb"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
                "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "viewers"}]}),
        },
        Target {
            collection: "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases",
            fixture: "fx-lease",
            subresources: &[],
            template: json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "fx-lease"},
                "spec": {"holderIdentity": "h", "leaseDurationSeconds": 40}}),
        },
        Target {
            collection: "/apis/autoscaling/v1/namespaces/default/horizontalpodautoscalers",
            fixture: "fx-hpa",
            subresources: &["status"],
            template: json!({"apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "fx-hpa"},
                "spec": {"scaleTargetRef": {"kind": "ReplicationController", "name": "fx-rc", "apiVersion": "v1"},
                    "minReplicas": 1, "maxReplicas": 3, "targetCPUUtilizationPercentage": 50}}),
        },
        Target {
            collection: "/apis/autoscaling/v2/namespaces/default/horizontalpodautoscalers",
            fixture: "fx-hpa2",
            subresources: &["status"],
            template: json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "fx-hpa2"},
                "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "fx-d", "apiVersion": "apps/v1"},
                    "minReplicas": 1, "maxReplicas": 3,
                    "metrics": [{"type": "Resource", "resource": {"name": "memory",
                        "target": {"type": "AverageValue", "averageValue": "100Mi"}}}],
                    "behavior": {"scaleUp": {"policies": [{"type": "Pods", "value": 1, "periodSeconds": 30}]}}}}),
        },
        Target {
            collection: "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
            fixture: "",
            subresources: &[],
            template: json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
                "spec": {"resourceAttributes": {"namespace": "default", "verb": "create", "resource": "pods"}}}),
        },
    ]
}

const CONTENT_TYPES: &[&str] = &[
    "application/json",
    "application/json",
    "application/yaml",
    "application/vnd.kubernetes.protobuf",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
    "application/json-patch+json",
    "application/apply-patch+yaml",
    "text/plain",
    "application/json; charset=utf-16",
    "multipart/form-data; boundary=x",
    "*/*",
    ";;;",
    "",
];

const ACCEPTS: &[&str] = &[
    "application/json",
    "application/json;as=Table;v=v1;g=meta.k8s.io",
    "application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json",
    "application/json;as=Table;g=meta.k8s.io;v=v9",
    "application/vnd.kubernetes.protobuf",
    "application/vnd.kubernetes.protobuf;stream=watch",
    "application/yaml",
    "*/*",
    "text/html",
    ";q=0.1,,,",
];

const QUERY_KEYS: &[&str] = &[
    "labelSelector",
    "fieldSelector",
    "limit",
    "continue",
    "resourceVersion",
    "resourceVersionMatch",
    "timeoutSeconds",
    "dryRun",
    "fieldValidation",
    "propagationPolicy",
    "gracePeriodSeconds",
    "includeObject",
    "fieldManager",
    "pretty",
    "follow",
    "tailLines",
    "container",
    "previous",
    "sinceSeconds",
    "allowWatchBookmarks",
    "force",
    "orphanDependents",
];

const SELECTORS: &[&str] = &[
    "a in (",
    "!!",
    "a=b,c notin (d",
    "a==b",
    "a!=",
    "=b",
    "a in (b,c),!d",
    "spec.nodeName=x",
    "metadata.name!=y",
    "status.phase=Running,spec.restartPolicy=Always",
    "x",
    "a=b=c",
    "a,b,c",
    "a in ()",
    "(a)",
    "a notin (b",
    "a=😀",
    "metadata.namespace==default",
];

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn query(rng: &mut Rng) -> String {
    let mut parts = Vec::new();
    for _ in 0..rng.below(4) {
        let key = rng.pick(QUERY_KEYS);
        let value = match rng.below(4) {
            0 => rng.pick(SELECTORS).to_string(),
            1 => rng.pick(WORDS).to_string(),
            2 => rng.below(100_000).to_string(),
            _ => random_string(rng),
        };
        let mut value = percent_encode(&value);
        value.truncate(4000);
        parts.push(format!("{key}={value}"));
    }
    if rng.chance(3) {
        // A watch that ends at once, so the case still finishes.
        parts.push("watch=true&timeoutSeconds=0".into());
    }
    if rng.chance(3) {
        parts.push(
            rng.pick(&["%", "%zz", "a=%ff%fe", "&&&", "=", "a==b", "k=v#frag"])
                .to_string(),
        );
    }
    parts.join("&")
}

fn random_path(rng: &mut Rng, targets: &[Target]) -> String {
    let t = rng.pick(targets);
    let segs: Vec<String> = (0..rng.below(6))
        .map(|_| match rng.below(5) {
            0 => percent_encode(&random_string(rng)),
            1 => rng
                .pick(&[
                    "..",
                    ".",
                    "",
                    "%2F",
                    "%00",
                    "%ff",
                    "watch",
                    "namespaces",
                    "status",
                    "~",
                ])
                .to_string(),
            2 => "a".repeat(rng.below(9000)),
            _ => rng.pick(WORDS).replace(
                |c: char| !c.is_ascii_graphic() || c == '%' || c == '?' || c == '#',
                "x",
            ),
        })
        .collect();
    let base = match rng.below(8) {
        0 => "",
        1 => "/api",
        2 => "/api/v1",
        3 => "/apis",
        4 => "/apis/rbac.authorization.k8s.io",
        5 => "/openapi/v3",
        6 => "/api/v1/watch",
        _ => t.collection,
    };
    let mut p = base.to_string();
    for s in segs {
        p.push('/');
        p.push_str(&s);
    }
    if p.is_empty() {
        p.push('/');
    }
    p
}

fn strategic_patch(rng: &mut Rng, t: &Target) -> Value {
    let directives = [
        json!({"spec": {"containers": [{"name": "app", "$patch": "delete"}]}}),
        json!({"$patch": "replace"}),
        json!({"$patch": rng.pick(WORDS).to_string()}),
        json!({"metadata": {"labels": {"$patch": "replace", "z": "1"}}}),
        json!({"spec": {"$setElementOrder/containers": [{"name": "x"}, 5, null]}}),
        json!({"spec": {"$retainKeys": [1, "containers"], "containers": []}}),
        json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a", 1]}}),
        json!({"spec": {"containers": [5, "x", null, {"$patch": "merge"}]}}),
        json!({"spec": {"containers": {"$patch": "delete"}}}),
        json!({"spec": {"ports": [{"port": 80, "$patch": "delete"}, {"port": "x"}]}}),
        json!({"subsets": [{"$patch": "replace"}]}),
        json!({"rules": [{"$patch": "delete"}]}),
    ];
    let base = if rng.chance(50) {
        rng.pick(&directives).clone()
    } else {
        t.template.clone()
    };
    mutate(rng, base)
}

fn json_patch(rng: &mut Rng, t: &Target) -> Value {
    let mut ps = Vec::new();
    pointers(&t.template, String::new(), &mut ps);
    ps.extend(
        [
            "/spec/containers/-",
            "/metadata/labels/a~1b",
            "/x/y/z",
            "",
            "/spec/containers/999",
            "/metadata/labels/~2",
            "-",
            "/spec/containers/-1",
            "/spec/containers/01",
        ]
        .iter()
        .map(|s| s.to_string()),
    );
    let ops: Vec<Value> = (0..1 + rng.below(4))
        .map(|_| {
            let mut op = json!({
                "op": rng.pick(&["add", "remove", "replace", "move", "copy", "test", "junk"]),
                "path": rng.pick(&ps),
            });
            if rng.chance(70) {
                op["value"] = junk(rng, 0);
            }
            if rng.chance(30) {
                op["from"] = json!(rng.pick(&ps));
            }
            if rng.chance(10) {
                op = mutate(rng, op);
            }
            op
        })
        .collect();
    if rng.chance(5) {
        return junk(rng, 0);
    }
    Value::Array(ops)
}

fn body_bytes(rng: &mut Rng, v: &Value) -> Vec<u8> {
    let text = v.to_string().into_bytes();
    match rng.below(20) {
        0 => text[..rng.below(text.len() + 1)].to_vec(),
        1 => (0..rng.below(300)).map(|_| rng.next() as u8).collect(),
        2 => Vec::new(),
        3 => {
            let mut t = text;
            if !t.is_empty() {
                let i = rng.below(t.len());
                t[i] = 0xff;
            }
            t
        }
        4 => {
            // Deep nesting beyond any parser's recursion limit, as JSON and as YAML.
            let depth = 1000 + rng.below(100_000);
            let mut t = "[".repeat(depth);
            t.push_str(&"]".repeat(depth));
            t.into_bytes()
        }
        5 => b"- a: [b, {c: *x}]\n&x y: z\n  bad indent: : :\n".to_vec(),
        6 => b"null".to_vec(),
        7 => format!("k8s\0{}", random_string(rng)).into_bytes(),
        _ => text,
    }
}

/// A protobuf body of `obj` as kubectl's typed clients encode it, then perhaps broken:
/// cut, bytes flipped or inserted, the magic lost, another kind's object, messages nested
/// far deeper than any object, or noise in a valid envelope.
fn protobuf_body(rng: &mut Rng, obj: &Value, t: &Target, targets: &[Target]) -> Vec<u8> {
    let mut b = protobuf::encode(obj)
        .or_else(|_| protobuf::encode(&t.template))
        .unwrap_or_default();
    let api_version = t.template["apiVersion"].as_str().unwrap_or("v1");
    let kind = t.template["kind"].as_str().unwrap_or("Pod");
    match rng.below(10) {
        0..=2 => {}
        3 => b.truncate(rng.below(b.len() + 1)),
        4 => {
            for _ in 0..1 + rng.below(4) {
                if !b.is_empty() {
                    let i = rng.below(b.len());
                    b[i] = rng.next() as u8;
                }
            }
        }
        5 => {
            let i = rng.below(b.len() + 1);
            let junk: Vec<u8> = (0..1 + rng.below(16)).map(|_| rng.next() as u8).collect();
            b.splice(i..i, junk);
        }
        6 => {
            b.drain(..b.len().min(4));
        }
        7 => {
            let other = rng.pick(targets);
            b = protobuf::encode(&other.template).unwrap_or_default();
        }
        8 => {
            let mut inner: Vec<u8> = Vec::new();
            for _ in 0..200 + rng.below(5000) {
                let mut outer = vec![0x0a];
                let mut len = inner.len();
                while len >= 0x80 {
                    outer.push((len as u8) | 0x80);
                    len >>= 7;
                }
                outer.push(len as u8);
                outer.extend_from_slice(&inner);
                inner = outer;
            }
            b = protobuf::wrap(api_version, kind, &inner);
        }
        _ => {
            let noise: Vec<u8> = (0..rng.below(200)).map(|_| rng.next() as u8).collect();
            b = protobuf::wrap(api_version, kind, &noise);
        }
    }
    b
}

/// Headers saying the body is protobuf.
fn protobuf_headers(mut headers: Vec<(String, String)>) -> Vec<(String, String)> {
    headers.retain(|(k, _)| k != "Content-Type");
    headers.push((
        "Content-Type".into(),
        "application/vnd.kubernetes.protobuf".into(),
    ));
    headers.push(("X-Fuzz-Body".into(), PROTOBUF_MARK.into()));
    headers
}

/// Marks the cases whose body is protobuf, to count their answers.
const PROTOBUF_MARK: &str = "protobuf";

/// One request as bytes on the wire, and what it was, for the failure report.
struct Case {
    what: String,
    /// The request's parts, for clients that frame it themselves (TLS).
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    bytes: Vec<u8>,
    /// Close our writing half after sending (a body shorter than its Content-Length).
    half_close: bool,
}

fn request(
    method: &str,
    path: &str,
    headers: &[(String, String)],
    body: &[u8],
    rng: &mut Rng,
) -> Case {
    // A well-formed watch would stream until its timeout: make every watch end at once
    // (the last timeoutSeconds in the query wins).
    let path = if method == "GET" && path.contains("watch") {
        let sep = if path.contains('?') { '&' } else { '?' };
        format!("{path}{sep}timeoutSeconds=0")
    } else {
        path.to_string()
    };
    let path = path.as_str();
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: fuzz\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    let mut half_close = false;
    let framing = rng.below(100);
    match framing {
        0..=2 => {
            // Claims more than it sends, then stops sending.
            head.push_str(&format!(
                "Content-Length: {}\r\n",
                body.len() + 1 + rng.below(100)
            ));
            half_close = true;
        }
        3..=4 => head.push_str(&format!("Content-Length: {}\r\n", body.len() / 2)),
        5 => head.push_str(&format!(
            "Content-Length: {}\r\nContent-Length: 3\r\n",
            body.len()
        )),
        6 => head.push_str("Content-Length: -5\r\n"),
        7 => head.push_str("Content-Length: 99999999999999999999999\r\n"),
        8 => head.push_str("Transfer-Encoding: chunked\r\n"),
        _ => head.push_str(&format!("Content-Length: {}\r\n", body.len())),
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    if framing == 8 {
        // A chunked body with a lying or broken chunk size.
        bytes.extend_from_slice(format!("{:x}\r\n", body.len() + rng.below(3)).as_bytes());
        bytes.extend_from_slice(body);
        bytes.extend_from_slice(if rng.chance(50) {
            b"\r\n0\r\n\r\n"
        } else {
            b"\r\nzz\r\n"
        });
        half_close = true;
    } else {
        bytes.extend_from_slice(body);
    }
    let shown = String::from_utf8_lossy(&bytes[..bytes.len().min(600)]).to_string();
    Case {
        what: format!(
            "{method} {} [{}]",
            &path[..path.len().min(200)],
            shown.replace("\r\n", "⏎")
        ),
        method: method.to_string(),
        path: path.to_string(),
        headers: headers.to_vec(),
        body: body.to_vec(),
        bytes,
        half_close,
    }
}

fn header_junk(rng: &mut Rng) -> Vec<(String, String)> {
    let mut h = Vec::new();
    if rng.chance(90) {
        let ct = if rng.chance(60) {
            "application/json"
        } else {
            rng.pick(CONTENT_TYPES)
        };
        h.push(("Content-Type".to_string(), ct.to_string()));
    }
    if rng.chance(60) {
        h.push(("Accept".to_string(), rng.pick(ACCEPTS).to_string()));
    }
    if rng.chance(5) {
        h.push(("X-Junk".to_string(), "v".repeat(rng.below(40_000))));
    }
    if rng.chance(3) {
        for i in 0..rng.below(120) {
            h.push((format!("X-Many-{i}"), "1".into()));
        }
    }
    if rng.chance(3) {
        h.push((
            "Authorization".to_string(),
            format!("Bearer {}", rng.pick(WORDS)),
        ));
    }
    if rng.chance(3) {
        h.push(("Expect".to_string(), "100-continue".into()));
    }
    h
}

fn case(rng: &mut Rng, targets: &[Target], n: usize) -> Case {
    let t = rng.pick(targets);
    let headers = header_junk(rng);
    let named = |rng: &mut Rng| {
        if t.fixture.is_empty() || rng.chance(20) {
            format!("{}/fz-{n}", t.collection)
        } else {
            format!("{}/{}", t.collection, t.fixture)
        }
    };
    // Now and then a write goes to one of the resource's subresources instead.
    let subresource = |rng: &mut Rng| {
        if rng.chance(30) && !t.subresources.is_empty() {
            format!("/{}", rng.pick(t.subresources))
        } else {
            String::new()
        }
    };
    // Most writes carry no query, so that their bodies get past the query's checks.
    let mut q = if rng.chance(35) {
        query(rng)
    } else {
        String::new()
    };
    if !q.is_empty() {
        q.insert(0, '?');
    }
    match rng.below(13) {
        // Create a mutated object under a fresh name.
        0..=2 => {
            let mut obj = mutate(rng, t.template.clone());
            if rng.chance(80) && obj.get("metadata").is_some_and(Value::is_object) {
                obj["metadata"]["name"] = json!(format!("fz-{n}"));
            }
            let (headers, body) = if rng.chance(25) {
                (
                    protobuf_headers(headers),
                    protobuf_body(rng, &obj, t, targets),
                )
            } else {
                let body = body_bytes(rng, &obj);
                (headers, body)
            };
            request(
                "POST",
                &format!("{}{q}", t.collection),
                &headers,
                &body,
                rng,
            )
        }
        3..=4 => {
            let obj = mutate(rng, t.template.clone());
            let (headers, body) = if rng.chance(25) {
                (
                    protobuf_headers(headers),
                    protobuf_body(rng, &obj, t, targets),
                )
            } else {
                let body = body_bytes(rng, &obj);
                (headers, body)
            };
            let sub = subresource(rng);
            request(
                "PUT",
                &format!("{}{sub}{q}", named(rng)),
                &headers,
                &body,
                rng,
            )
        }
        5..=7 => {
            let (ct, patch) = match rng.below(3) {
                0 => (
                    "application/merge-patch+json",
                    mutate(rng, t.template.clone()),
                ),
                1 => (
                    "application/strategic-merge-patch+json",
                    strategic_patch(rng, t),
                ),
                _ => ("application/json-patch+json", json_patch(rng, t)),
            };
            let mut headers = headers;
            headers.retain(|(k, _)| k != "Content-Type");
            if rng.chance(90) {
                headers.push(("Content-Type".into(), ct.into()));
            }
            let body = body_bytes(rng, &patch);
            let sub = subresource(rng);
            request(
                "PATCH",
                &format!("{}{sub}{q}", named(rng)),
                &headers,
                &body,
                rng,
            )
        }
        8 => {
            let opts = mutate(
                rng,
                json!({"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 0,
                    "propagationPolicy": "Background", "preconditions": {"uid": "u", "resourceVersion": "1"},
                    "dryRun": ["All"]}),
            );
            let (headers, body) = if rng.chance(25) {
                let opts_target = Target {
                    collection: t.collection,
                    fixture: t.fixture,
                    subresources: &[],
                    template: opts.clone(),
                };
                (
                    protobuf_headers(headers),
                    protobuf_body(rng, &opts, &opts_target, targets),
                )
            } else {
                let body = body_bytes(rng, &opts);
                (headers, body)
            };
            let path = if rng.chance(50) {
                named(rng)
            } else {
                t.collection.to_string()
            };
            request("DELETE", &format!("{path}{q}"), &headers, &body, rng)
        }
        9 => {
            let method = rng.pick(&[
                "GET", "GET", "HEAD", "OPTIONS", "TRACE", "FOO", "get", "CONNECT",
            ]);
            let path = random_path(rng, targets);
            request(method, &format!("{path}{q}"), &headers, b"", rng)
        }
        10 => {
            let sub = rng.pick(&["", "/status", "/scale", "/log", "/binding", "/eviction"]);
            let q = format!("?{}", query(rng));
            request(
                "GET",
                &format!("{}{sub}{q}", named(rng)),
                &headers,
                b"",
                rng,
            )
        }
        11 => {
            // Lists and watches of a collection with selectors on its own fields.
            let field = rng.pick(&[
                "metadata.name",
                "metadata.namespace",
                "spec.nodeName",
                "status.phase",
                "spec.unschedulable",
                "spec.clusterIP",
                "spec.type",
                "involvedObject.name",
                "type",
                "reason",
                "status.replicas",
                "spec.signerName",
            ]);
            let op = rng.pick(&["=", "==", "!=", "=!", " in ", ""]);
            let value = percent_encode(&random_string(rng));
            let mut q = format!("?fieldSelector={field}{}{value}", percent_encode(op));
            if rng.chance(50) {
                q.push_str(&format!(
                    "&labelSelector={}",
                    percent_encode(rng.pick::<&str>(SELECTORS))
                ));
            }
            if rng.chance(30) {
                q.push_str("&watch=1&timeoutSeconds=0");
            }
            if rng.chance(30) {
                q.push_str(&format!(
                    "&limit={}&continue={}",
                    rng.below(3),
                    percent_encode(&random_string(rng))
                ));
            }
            let coll = t.collection.replace(
                "/namespaces/default",
                if rng.chance(50) {
                    ""
                } else {
                    "/namespaces/default"
                },
            );
            request("GET", &format!("{coll}{q}"), &headers, b"", rng)
        }
        _ => {
            let value = junk(rng, 0);
            let body = body_bytes(rng, &value);
            let method = rng.pick(&["POST", "PUT", "PATCH"]);
            let path = random_path(rng, targets);
            request(method, &format!("{path}{q}"), &headers, &body, rng)
        }
    }
}

/// Send one case on its own connection; the status code, or why there was none.
/// Whether an answer is the server failing. A read at a `resourceVersion` the store has
/// not reached is answered, as kube-apiserver answers it after waiting for its cache, 504
/// "Too large resource version" — the one 5xx that is an answer, not a failure.
fn server_error(code: u16, request: &str) -> bool {
    code >= 500 && !(code == 504 && request.contains("resourceVersion="))
}

async fn send(host: &str, c: &Case) -> Result<u16, String> {
    let mut s = TcpStream::connect(host)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    // The server may answer (and close) before reading everything: a failed write is not
    // a failure of the server, a missing answer is.
    let _ = s.write_all(&c.bytes).await;
    if c.half_close {
        let _ = s.shutdown().await;
    }
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut answer)).await;
    if read.is_err() {
        return Err("no answer within 30 s".into());
    }
    // Skip interim answers (100 Continue) to the final one.
    let text = String::from_utf8_lossy(&answer);
    let line = text
        .split("\r\n\r\n")
        .find(|part| !part.starts_with("HTTP/1.1 100"))
        .unwrap_or("")
        .to_string();
    let code = line
        .strip_prefix("HTTP/1.1 ")
        .and_then(|r| r.get(..3))
        .and_then(|c| c.parse::<u16>().ok());
    match (code, &read) {
        (Some(code), _) => Ok(code),
        (None, Ok(Err(e))) if answer.is_empty() => {
            Err(format!("connection failed without an answer: {e}"))
        }
        (None, _) => Err(format!(
            "no HTTP answer (got {:?})",
            String::from_utf8_lossy(&answer[..answer.len().min(200)])
        )),
    }
}

async fn create_fixtures(c: &TestCluster, http: &reqwest::Client, targets: &[Target]) {
    for t in targets.iter().filter(|t| !t.fixture.is_empty()) {
        let (code, body) = call(http.post(c.url(t.collection)).json(&t.template)).await;
        assert_eq!(code, 201, "fixture {}: {body}", t.fixture);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_never_get_a_5xx_or_a_dropped_connection() {
    let seed: u64 = std::env::var("SKIFF_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5EED_5C1F);
    let cases: usize = std::env::var("SKIFF_FUZZ_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(4000);
    let c = TestCluster::api_only();
    let targets = targets();
    create_fixtures(&c, &client(), &targets).await;
    let host = c.url.trim_start_matches("http://").to_string();
    let mut rng = Rng::seeded(seed);
    let generated: Vec<Case> = (0..cases).map(|n| case(&mut rng, &targets, n)).collect();
    let started = Instant::now();
    let results: Vec<(usize, Result<u16, String>)> =
        futures::stream::iter(generated.iter().enumerate())
            .map(|(i, case)| {
                let host = host.clone();
                async move { (i, send(&host, case).await) }
            })
            .buffer_unordered(8)
            .collect()
            .await;
    let elapsed = started.elapsed();
    let mut results_view: Vec<Result<u16, String>> = vec![Ok(0); results.len()];
    for (i, r) in &results {
        results_view[*i] = r.clone();
    }
    let mut failures = Vec::new();
    let mut codes = std::collections::BTreeMap::new();
    let mut protobuf_codes = std::collections::BTreeMap::new();
    for (i, r) in results {
        match r {
            Ok(code) => {
                *codes.entry(code).or_insert(0usize) += 1;
                if generated[i]
                    .what
                    .contains(&format!("X-Fuzz-Body: {PROTOBUF_MARK}"))
                {
                    *protobuf_codes.entry(code).or_insert(0usize) += 1;
                }
                if server_error(code, &generated[i].what) {
                    failures.push(format!("#{i} answered {code}: {}", generated[i].what));
                }
            }
            Err(e) => failures.push(format!("#{i} {e}: {}", generated[i].what)),
        }
    }
    eprintln!("fuzz seed {seed}: {cases} cases in {elapsed:?}, codes {codes:?}, protobuf bodies {protobuf_codes:?}");
    if let Ok(show) = std::env::var("SKIFF_FUZZ_SHOW") {
        for (i, r) in results_view.iter().enumerate() {
            if r.as_ref().ok().map(|c| c.to_string()) == Some(show.clone()) {
                eprintln!("{}", &generated[i].what);
            }
        }
    }
    assert!(
        failures.is_empty(),
        "seed {seed}: {} of {cases} cases failed:\n{}",
        failures.len(),
        failures
            .iter()
            .take(25)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    // Enough cases got past decoding to reach the object logic.
    assert!(
        codes.get(&201).copied().unwrap_or(0) + codes.get(&200).copied().unwrap_or(0) > cases / 50
    );
    assert!(
        codes.get(&422).copied().unwrap_or(0) > 0,
        "no case reached validation"
    );
    // Protobuf bodies both got through to the object logic and were refused.
    assert!(
        protobuf_codes.get(&201).copied().unwrap_or(0) > 0,
        "no protobuf body was created: {protobuf_codes:?}"
    );
    assert!(
        protobuf_codes.get(&400).copied().unwrap_or(0) > 0,
        "no protobuf body was refused: {protobuf_codes:?}"
    );

    // And the server still answers normally.
    let (code, _) = call(client().get(c.url("/healthz"))).await;
    assert_eq!(code, 200);
    let (code, list) = call(client().get(c.url("/api/v1/namespaces/default/pods"))).await;
    assert_eq!(code, 200, "{list}");
    let (code, created) = call(
        client()
            .post(c.url("/api/v1/namespaces/default/pods"))
            .json(&skiff_integration::pod("after-fuzz", json!({}))),
    )
    .await;
    assert_eq!(code, 201, "{created}");
    let (_, metrics) = call(client().get(c.url("/metrics"))).await;
    let text = metrics.as_str().unwrap_or_default();
    // 504 is the answer to a read at a revision the store has not reached (see
    // `server_error`); any other 5xx is a failure.
    let counted_5xx = text
        .lines()
        .filter(|l| l.contains("code=\"5") && !l.contains("code=\"504\""))
        .count();
    assert_eq!(counted_5xx, 0, "the server counted 5xx answers");
}

/// Send one case through an HTTPS client (which frames it itself: the lying framing of
/// the raw cases is left out); the status code, or why there was none.
async fn send_tls(http: &reqwest::Client, base: &str, c: &Case) -> Result<u16, String> {
    let Ok(method) = reqwest::Method::from_bytes(c.method.as_bytes()) else {
        return Ok(0);
    };
    let Ok(url) = reqwest::Url::parse(&format!("{base}{}", c.path)) else {
        return Ok(0);
    };
    let mut req = http.request(method, url).body(c.body.clone());
    for (k, v) in &c.headers {
        if k.eq_ignore_ascii_case("authorization") {
            continue;
        }
        if let Ok(v) = reqwest::header::HeaderValue::from_str(v) {
            req = req.header(k.as_str(), v);
        }
    }
    match req.send().await {
        Ok(resp) => {
            let code = resp.status().as_u16();
            resp.bytes()
                .await
                .map_err(|e| format!("reading the answer: {e}"))?;
            Ok(code)
        }
        // The client would not build the request (e.g. a URI too long for it to send):
        // nothing reached the server.
        Err(e) if e.is_builder() => Ok(0),
        Err(e) => Err(format!("no answer: {e}")),
    }
}

/// The same fuzz through authentication, limits and authorization as a user who may
/// write in one namespace and manage its roles: RBAC decisions, the escalation check and
/// access reviews meet malformed objects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_from_an_ordinary_user_never_get_a_5xx() {
    let seed: u64 = std::env::var("SKIFF_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0xA17F_0001);
    let cases: usize = std::env::var("SKIFF_FUZZ_CASES")
        .ok()
        .and_then(|s| s.parse::<usize>().ok())
        .map(|n| n / 2)
        .unwrap_or(1500);
    let c = TestCluster::start_secure();
    let admin = c.admin_client();
    let targets = targets();
    create_fixtures(&c, &admin, &targets).await;
    let binding = skiff_integration::user_role_binding("jane-admin", "admin", "jane");
    let (code, body) = call(
        admin
            .post(c.url("/apis/rbac.authorization.k8s.io/v1/namespaces/default/rolebindings"))
            .json(&binding),
    )
    .await;
    assert_eq!(code, 201, "{body}");
    let cred = c.client_cert("jane", &[]);
    // A connection per request, as the raw fuzz has: a pooled connection the server has
    // just closed after an error would fail the next request on the client's side.
    let jane = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(c.ca_pem().as_bytes()).expect("ca"))
        .identity(
            reqwest::Identity::from_pem(format!("{}{}", cred.cert_pem, cred.key_pem).as_bytes())
                .expect("identity"),
        )
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");
    let mut rng = Rng::seeded(seed);
    let generated: Vec<Case> = (0..cases).map(|n| case(&mut rng, &targets, n)).collect();
    let results: Vec<(usize, Result<u16, String>)> =
        futures::stream::iter(generated.iter().enumerate())
            .map(|(i, case)| {
                let (jane, base) = (jane.clone(), c.url.clone());
                async move { (i, send_tls(&jane, &base, case).await) }
            })
            .buffer_unordered(8)
            .collect()
            .await;
    let mut codes = std::collections::BTreeMap::new();
    let mut failures = Vec::new();
    for (i, r) in results {
        match r {
            Ok(code) if server_error(code, &generated[i].what) => {
                failures.push(format!("#{i} answered {code}: {}", generated[i].what))
            }
            Ok(code) => *codes.entry(code).or_insert(0usize) += 1,
            Err(e) => failures.push(format!("#{i} {e}: {}", generated[i].what)),
        }
    }
    eprintln!("authenticated fuzz seed {seed}: {cases} cases, codes {codes:?}");
    assert!(
        failures.is_empty(),
        "seed {seed}: {} cases failed:\n{}",
        failures.len(),
        failures
            .iter()
            .take(25)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        codes.get(&403).copied().unwrap_or(0) > 0,
        "no case was refused by RBAC"
    );
    assert!(
        codes.get(&201).copied().unwrap_or(0) > 0,
        "no case got through"
    );
    // (jane may well have deleted her own binding by now.)
    let (code, _) = call(admin.get(c.url("/api/v1/namespaces/default/pods"))).await;
    assert_eq!(code, 200);
}
