//! `metadata.managedFields`: which manager last set which field, recorded on every write
//! as kube-apiserver's field manager does for `Update` operations. A write takes
//! ownership of the fields it changed, away from every other manager; fields that are
//! gone are owned by nobody. Server-side apply, which resolves conflicts between
//! managers, builds on the same field sets.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Map, Value};

use super::patch::{list_identity, ListIdentity};

/// The longest field manager name kube-apiserver accepts.
pub const MAX_MANAGER_LEN: usize = 128;

/// One owned field in FieldsV1 form, from the root: `f:<field>`, `k:<key as JSON>` for a
/// keyed list element, `v:<value as JSON>` for a set element, and a final `.` for a map or
/// list element owned as a whole.
type Path = Vec<String>;

/// Which part of an object a write may change, and so which fields it can own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Resources without a status subresource: every field.
    All,
    /// The main resource of one with a status subresource: status is not written.
    NoStatus,
    /// The status subresource: status only.
    StatusOnly,
}

/// Who writes, and through which endpoint.
#[derive(Debug, Clone, Copy)]
pub struct Writer<'a> {
    pub manager: &'a str,
    pub api_version: &'a str,
    pub subresource: Option<&'a str>,
    pub scope: Scope,
}

/// The field manager of a request: `fieldManager` when given, else the user agent's
/// program name (what precedes the first `/`), printable characters only, at most 128
/// bytes, as kube-apiserver derives it.
pub fn manager_of(field_manager: Option<&str>, user_agent: Option<&str>) -> String {
    if let Some(m) = field_manager.filter(|m| !m.is_empty()) {
        return m.to_string();
    }
    let prefix = user_agent.unwrap_or("").split('/').next().unwrap_or("");
    let mut out = String::new();
    for c in prefix.chars().filter(|c| !c.is_control()) {
        if out.len() + c.len_utf8() > MAX_MANAGER_LEN {
            break;
        }
        out.push(c);
    }
    out
}

/// Kubernetes' check of an explicit `fieldManager` parameter.
pub fn validate_manager(m: &str) -> Result<(), String> {
    if m.len() > MAX_MANAGER_LEN {
        return Err(format!(
            "fieldManager: Too long: may not be more than {MAX_MANAGER_LEN} bytes"
        ));
    }
    if m.chars().any(char::is_control) {
        return Err(format!(
            "fieldManager: Invalid value: {m:?}: must only contain printable characters"
        ));
    }
    Ok(())
}

/// Record `writer`'s write of `new` (over `old`, `None` for a create) in
/// `new.metadata.managedFields`. A write that changes no field leaves the entries as
/// they were, so a no-op update stays a no-op.
pub fn record(kind: &str, old: Option<&Value>, new: &mut Value, writer: &Writer, now: &str) {
    if old.is_none() {
        return record_create(kind, new, writer, now);
    }
    let old_entries = old
        .and_then(|o| o.pointer("/metadata/managedFields"))
        .cloned();
    // A client may send managedFields of its own to replace the recorded ones (an empty
    // entry clears them, as in Kubernetes); otherwise the recorded ones carry over.
    let sent = new.pointer("/metadata/managedFields").cloned();
    let base = match (&sent, &old_entries) {
        (Some(s), o) if old.is_some() && Some(s) != o.as_ref() => Some(s.clone()),
        (_, o) if old.is_some() => o.clone(),
        _ => None,
    };
    let (changed, removed) = {
        let new_fields = fieldset(kind, new, writer.scope);
        match old {
            None => (
                new_fields.keys().cloned().collect::<BTreeSet<_>>(),
                BTreeSet::new(),
            ),
            Some(old) => {
                let old_fields = fieldset(kind, old, writer.scope);
                let changed = new_fields
                    .iter()
                    .filter(|(p, v)| old_fields.get(*p) != Some(v))
                    .map(|(p, _)| p.clone())
                    .collect();
                let removed = old_fields
                    .keys()
                    .filter(|p| !new_fields.contains_key(*p))
                    .cloned()
                    .collect();
                (changed, removed)
            }
        }
    };
    let mut entries: Vec<(Map<String, Value>, BTreeSet<Path>)> = base
        .as_ref()
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .filter_map(Value::as_object)
                .filter(|e| e.contains_key("manager") || e.contains_key("fieldsV1"))
                .map(|e| (e.clone(), paths_of(e.get("fieldsV1"))))
                .collect()
        })
        .unwrap_or_default();
    if !changed.is_empty() || !removed.is_empty() {
        for (_, set) in entries.iter_mut() {
            set.retain(|p| !changed.contains(p) && !removed.contains(p));
        }
        let own = entries.iter().position(|(e, _)| {
            e.get("manager").and_then(Value::as_str) == Some(writer.manager)
                && e.get("operation").and_then(Value::as_str) == Some("Update")
                && e.get("subresource").and_then(Value::as_str) == writer.subresource
        });
        if !changed.is_empty() {
            let idx = match own {
                Some(i) => i,
                None => {
                    entries.push((Map::new(), BTreeSet::new()));
                    entries.len() - 1
                }
            };
            let (entry, set) = &mut entries[idx];
            set.extend(changed.iter().cloned());
            stamp(entry, writer, now);
        }
        entries.retain(|(_, set)| !set.is_empty());
    }
    let list: Vec<Value> = entries
        .into_iter()
        .map(|(mut e, set)| {
            e.insert("fieldsV1".into(), tree_of(&set));
            Value::Object(e)
        })
        .collect();
    let unchanged = changed.is_empty() && removed.is_empty();
    let value = if unchanged && base == old_entries {
        old_entries
    } else if list.is_empty() {
        None
    } else {
        Some(Value::Array(list))
    };
    if let Some(m) = new.get_mut("metadata").and_then(Value::as_object_mut) {
        match value {
            Some(v) => {
                m.insert("managedFields".into(), v);
            }
            None => {
                m.remove("managedFields");
            }
        }
    }
}

/// The writer's entry, but for its fields: manager, Update, apiVersion, time, subresource.
fn stamp(entry: &mut Map<String, Value>, writer: &Writer, now: &str) {
    entry.insert("manager".into(), json!(writer.manager));
    entry.insert("operation".into(), json!("Update"));
    entry.insert("apiVersion".into(), json!(writer.api_version));
    entry.insert("time".into(), json!(now));
    entry.insert("fieldsType".into(), json!("FieldsV1"));
    if let Some(sub) = writer.subresource {
        entry.insert("subresource".into(), json!(sub));
    }
}

/// A create: the writer owns every field it wrote, and nobody else owns anything.
fn record_create(kind: &str, new: &mut Value, writer: &Writer, now: &str) {
    let tree = tree_of_object(kind, new, writer.scope);
    let Some(m) = new.get_mut("metadata").and_then(Value::as_object_mut) else {
        return;
    };
    if tree.as_object().is_none_or(Map::is_empty) {
        m.remove("managedFields");
        return;
    }
    let mut entry = Map::new();
    stamp(&mut entry, writer, now);
    entry.insert("fieldsV1".into(), tree);
    // Moved in, not `json!`: that would serialize the whole tree again.
    m.insert(
        "managedFields".into(),
        Value::Array(vec![Value::Object(entry)]),
    );
}

/// Metadata the server owns, never recorded as anyone's field (kube-apiserver strips
/// the same before computing field sets).
const SERVER_METADATA: &[&str] = &[
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "selfLink",
    "managedFields",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
];

/// Maps whose keys are data (labels, resource lists, ConfigMap data), owned key by key
/// and as a whole (`.`), unlike structs whose fields are owned one by one.
fn is_granular_map(kind: &str, names: &[String]) -> bool {
    let last = names.last().map(String::as_str).unwrap_or("");
    match last {
        "labels" | "annotations" | "nodeSelector" | "matchLabels" | "data" | "binaryData"
        | "stringData" | "limits" | "requests" | "hard" | "used" | "capacity" | "allocatable"
        | "overhead" | "parameters" => true,
        "selector" => {
            names.len() == 2
                && names[0] == "spec"
                && matches!(kind, "ReplicationController" | "Service")
        }
        _ => false,
    }
}

/// Every owned leaf of `obj` within `scope`, with its value (`None` for `.`).
fn fieldset<'v>(kind: &str, obj: &'v Value, scope: Scope) -> BTreeMap<Path, Option<&'v Value>> {
    let mut out = BTreeMap::new();
    visit_leaves(kind, obj, scope, &mut |path, v| {
        out.insert(path.to_vec(), v);
    });
    out
}

/// The FieldsV1 tree of every owned leaf of `obj`: what a create owns, built in one
/// descent rather than through a set of paths (the create path is hot). The same tree as
/// `tree_of` over `fieldset`'s paths.
fn tree_of_object(kind: &str, obj: &Value, scope: Scope) -> Value {
    let mut root = Map::new();
    let mut names = Vec::new();
    for (k, v) in obj.as_object().into_iter().flatten() {
        if !in_scope(k, scope) || v.is_null() {
            continue;
        }
        names.push(k.clone());
        let sub = if k == "metadata" {
            let mut node = Map::new();
            for (mk, mv) in v.as_object().into_iter().flatten() {
                if SERVER_METADATA.contains(&mk.as_str()) || mv.is_null() {
                    continue;
                }
                names.push(mk.clone());
                if let Some(sub) = subtree(kind, mv, &mut names) {
                    merge_node(&mut node, format!("f:{mk}"), sub);
                }
                names.pop();
            }
            (!node.is_empty()).then_some(node)
        } else {
            subtree(kind, v, &mut names)
        };
        if let Some(sub) = sub {
            merge_node(&mut root, format!("f:{k}"), sub);
        }
        names.pop();
    }
    Value::Object(root)
}

/// The tree below one value (`walk`'s leaves, relative to it); `None` when it owns none.
fn subtree(kind: &str, v: &Value, names: &mut Vec<String>) -> Option<Map<String, Value>> {
    match v {
        Value::Null => None,
        Value::Object(map) => {
            let mut node = Map::new();
            let granular = is_granular_map(kind, names);
            if granular {
                node.insert(".".into(), Value::Object(Map::new()));
            }
            fields_into(kind, map, names, &mut node);
            (granular || map.is_empty() || !node.is_empty()).then_some(node)
        }
        Value::Array(items) => match list_identity(kind, names) {
            ListIdentity::Keyed(key) if items.iter().all(|i| i.get(key).is_some()) => {
                let mut node = Map::new();
                for item in items {
                    let mut element = Map::new();
                    element.insert(".".into(), Value::Object(Map::new()));
                    if let Some(fields) = item.as_object() {
                        fields_into(kind, fields, names, &mut element);
                    }
                    merge_node(
                        &mut node,
                        format!("k:{}", json!({ key: item[key] })),
                        element,
                    );
                }
                (!node.is_empty()).then_some(node)
            }
            ListIdentity::Set if items.iter().all(|i| !i.is_object() && !i.is_array()) => {
                let mut node = Map::new();
                for item in items {
                    node.insert(format!("v:{item}"), Value::Object(Map::new()));
                }
                (!node.is_empty()).then_some(node)
            }
            _ => Some(Map::new()),
        },
        _ => Some(Map::new()),
    }
}

fn fields_into(
    kind: &str,
    map: &Map<String, Value>,
    names: &mut Vec<String>,
    node: &mut Map<String, Value>,
) {
    for (k, c) in map {
        if c.is_null() {
            continue;
        }
        names.push(k.clone());
        if let Some(sub) = subtree(kind, c, names) {
            merge_node(node, format!("f:{k}"), sub);
        }
        names.pop();
    }
}

/// Put `sub` at `key` of `node`, merging with what is there (a keyed list may name one
/// key twice).
fn merge_node(node: &mut Map<String, Value>, key: String, sub: Map<String, Value>) {
    match node.get_mut(&key).and_then(Value::as_object_mut) {
        Some(existing) => {
            for (k, v) in sub {
                match v {
                    Value::Object(m) => merge_node(existing, k, m),
                    other => {
                        existing.insert(k, other);
                    }
                }
            }
        }
        None => {
            node.insert(key, Value::Object(sub));
        }
    }
}

fn in_scope(field: &str, scope: Scope) -> bool {
    match (field, scope) {
        ("apiVersion" | "kind", _) => false,
        ("status", Scope::NoStatus) => false,
        ("status", Scope::StatusOnly) => true,
        (_, Scope::StatusOnly) => false,
        _ => true,
    }
}

/// Calls `leaf` with the path and value of every owned leaf of `obj` within `scope`.
fn visit_leaves<'v>(
    kind: &str,
    obj: &'v Value,
    scope: Scope,
    leaf: &mut dyn FnMut(&[String], Option<&'v Value>),
) {
    let Some(root) = obj.as_object() else {
        return;
    };
    let mut names = Vec::new();
    let mut path = Vec::new();
    for (k, v) in root {
        if !in_scope(k, scope) || v.is_null() {
            continue;
        }
        names.push(k.clone());
        path.push(format!("f:{k}"));
        if k == "metadata" {
            if let Some(m) = v.as_object() {
                for (mk, mv) in m {
                    if SERVER_METADATA.contains(&mk.as_str()) || mv.is_null() {
                        continue;
                    }
                    names.push(mk.clone());
                    path.push(format!("f:{mk}"));
                    walk(kind, mv, &mut names, &mut path, leaf);
                    path.pop();
                    names.pop();
                }
            }
        } else {
            walk(kind, v, &mut names, &mut path, leaf);
        }
        path.pop();
        names.pop();
    }
}

/// `leaf` at `path` plus one segment.
fn leaf_below<'v>(
    path: &mut Path,
    seg: String,
    v: Option<&'v Value>,
    leaf: &mut dyn FnMut(&[String], Option<&'v Value>),
) {
    path.push(seg);
    leaf(path, v);
    path.pop();
}

fn walk<'v>(
    kind: &str,
    v: &'v Value,
    names: &mut Vec<String>,
    path: &mut Path,
    leaf: &mut dyn FnMut(&[String], Option<&'v Value>),
) {
    match v {
        Value::Null => {}
        Value::Object(map) => {
            let granular = is_granular_map(kind, names);
            if granular {
                leaf_below(path, ".".into(), None, leaf);
            } else if map.is_empty() {
                leaf(path, Some(v));
            }
            walk_fields(kind, map, names, path, leaf);
        }
        Value::Array(items) => match list_identity(kind, names) {
            ListIdentity::Keyed(key) if items.iter().all(|i| i.get(key).is_some()) => {
                for item in items {
                    path.push(format!("k:{}", json!({ key: item[key] })));
                    leaf_below(path, ".".into(), None, leaf);
                    if let Some(fields) = item.as_object() {
                        // List elements add no segment to the schema path.
                        walk_fields(kind, fields, names, path, leaf);
                    }
                    path.pop();
                }
            }
            ListIdentity::Set if items.iter().all(|i| !i.is_object() && !i.is_array()) => {
                for item in items {
                    leaf_below(path, format!("v:{item}"), Some(item), leaf);
                }
            }
            _ => leaf(path, Some(v)),
        },
        _ => leaf(path, Some(v)),
    }
}

fn walk_fields<'v>(
    kind: &str,
    map: &'v Map<String, Value>,
    names: &mut Vec<String>,
    path: &mut Path,
    leaf: &mut dyn FnMut(&[String], Option<&'v Value>),
) {
    for (k, c) in map {
        if c.is_null() {
            continue;
        }
        names.push(k.clone());
        path.push(format!("f:{k}"));
        walk(kind, c, names, path, leaf);
        path.pop();
        names.pop();
    }
}

/// The leaf paths of a FieldsV1 tree.
fn paths_of(tree: Option<&Value>) -> BTreeSet<Path> {
    fn go(node: &Map<String, Value>, path: &mut Path, out: &mut BTreeSet<Path>) {
        for (k, v) in node {
            path.push(k.clone());
            match v.as_object() {
                Some(children) if !children.is_empty() => go(children, path, out),
                _ => {
                    out.insert(path.clone());
                }
            }
            path.pop();
        }
    }
    let mut out = BTreeSet::new();
    if let Some(node) = tree.and_then(Value::as_object) {
        go(node, &mut Vec::new(), &mut out);
    }
    out
}

/// The FieldsV1 tree of a set of leaf paths.
fn tree_of(set: &BTreeSet<Path>) -> Value {
    let mut root = Map::new();
    for path in set {
        insert_path(&mut root, path);
    }
    Value::Object(root)
}

fn insert_path(root: &mut Map<String, Value>, path: &[String]) {
    let mut node = root;
    for seg in path {
        if !node.contains_key(seg) {
            node.insert(seg.clone(), Value::Object(Map::new()));
        }
        node = node
            .get_mut(seg)
            .and_then(Value::as_object_mut)
            .expect("every node of the tree is an object");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writer(manager: &str) -> Writer<'_> {
        Writer {
            manager,
            api_version: "v1",
            subresource: None,
            scope: Scope::NoStatus,
        }
    }

    fn pod() -> Value {
        json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "uid": "u", "labels": {"app": "web"}},
            "spec": {"containers": [{"name": "c", "image": "busybox", "resources": {}}],
                     "restartPolicy": "Always"},
            "status": {"phase": "Pending"}})
    }

    #[test]
    fn the_create_tree_is_the_tree_of_the_field_set() {
        let objects = [
            pod(),
            json!({"metadata": {"name": "n", "labels": {}, "annotations": {"a": "b"}},
                "spec": {"containers": [{"name": "a", "ports": [{"containerPort": 80}],
                    "env": [{"name": "X", "value": "1"}, {"name": "X", "value": "2"}]},
                    {"image": "nameless"}],
                    "finalizers": ["x", "y"], "nodeSelector": {}, "empty": {},
                    "allNull": {"a": null}, "tolerations": [], "volumes": [null]},
                "status": {"phase": "Running"}}),
            json!({"metadata": {"uid": "only-server-fields"}, "data": {"k": "v"}}),
        ];
        for obj in &objects {
            for scope in [Scope::All, Scope::NoStatus, Scope::StatusOnly] {
                let set: BTreeSet<Path> = fieldset("Pod", obj, scope).into_keys().collect();
                assert_eq!(
                    tree_of_object("Pod", obj, scope),
                    tree_of(&set),
                    "{obj} in {scope:?}"
                );
            }
        }
    }

    #[test]
    fn a_create_owns_every_field_it_wrote_but_server_metadata_and_status() {
        let mut p = pod();
        record(
            "Pod",
            None,
            &mut p,
            &writer("kubectl-create"),
            "2026-12-01T00:00:00Z",
        );
        let mf = &p["metadata"]["managedFields"];
        assert_eq!(mf.as_array().map(Vec::len), Some(1));
        assert_eq!(mf[0]["manager"], "kubectl-create");
        assert_eq!(mf[0]["operation"], "Update");
        assert_eq!(mf[0]["fieldsType"], "FieldsV1");
        let f = &mf[0]["fieldsV1"];
        assert_eq!(f["f:metadata"], json!({"f:labels": {".": {}, "f:app": {}}}));
        assert_eq!(
            f["f:spec"]["f:containers"]["k:{\"name\":\"c\"}"],
            json!({".": {}, "f:image": {}, "f:name": {}, "f:resources": {}})
        );
        assert_eq!(f["f:spec"]["f:restartPolicy"], json!({}));
        assert!(f.get("f:status").is_none());
    }

    #[test]
    fn an_update_takes_the_fields_it_changed_from_their_previous_manager() {
        let mut old = pod();
        record("Pod", None, &mut old, &writer("kubectl-create"), "t1");
        let mut new = old.clone();
        new["metadata"]["labels"]["app"] = json!("db");
        new["metadata"]["labels"]["tier"] = json!("x");
        record("Pod", Some(&old), &mut new, &writer("kubectl-label"), "t2");
        let mf = new["metadata"]["managedFields"]
            .as_array()
            .expect("entries");
        assert_eq!(mf.len(), 2);
        let create = &mf[0]["fieldsV1"]["f:metadata"]["f:labels"];
        assert_eq!(create, &json!({".": {}}));
        assert_eq!(
            mf[1]["fieldsV1"]["f:metadata"]["f:labels"],
            json!({"f:app": {}, "f:tier": {}})
        );
        assert_eq!(mf[1]["time"], "t2");
        assert_eq!(mf[0]["time"], "t1");
    }

    #[test]
    fn an_update_that_changes_nothing_keeps_the_entries_as_they_were() {
        let mut old = pod();
        record("Pod", None, &mut old, &writer("a"), "t1");
        let mut new = old.clone();
        record("Pod", Some(&old), &mut new, &writer("b"), "t2");
        assert_eq!(new, old);
    }

    #[test]
    fn status_writes_are_recorded_apart_with_their_subresource() {
        let mut old = pod();
        record("Pod", None, &mut old, &writer("kubectl"), "t1");
        let mut new = old.clone();
        new["status"]["phase"] = json!("Running");
        let kubelet = Writer {
            manager: "kubelet",
            api_version: "v1",
            subresource: Some("status"),
            scope: Scope::StatusOnly,
        };
        record("Pod", Some(&old), &mut new, &kubelet, "t2");
        let mf = new["metadata"]["managedFields"]
            .as_array()
            .expect("entries");
        assert_eq!(mf.len(), 2);
        assert_eq!(mf[1]["subresource"], "status");
        assert_eq!(mf[1]["fieldsV1"], json!({"f:status": {"f:phase": {}}}));
    }

    #[test]
    fn finalizers_are_a_set_and_removed_fields_are_owned_by_nobody() {
        let mut old =
            json!({"metadata": {"name": "x", "finalizers": ["a", "b"]}, "spec": {"k": 1}});
        record("Service", None, &mut old, &writer("m"), "t");
        assert_eq!(
            old["metadata"]["managedFields"][0]["fieldsV1"]["f:metadata"]["f:finalizers"],
            json!({"v:\"a\"": {}, "v:\"b\"": {}})
        );
        let mut new = old.clone();
        new["metadata"]["finalizers"] = json!(["a"]);
        new["spec"] = json!({});
        record("Service", Some(&old), &mut new, &writer("m"), "t");
        let f = &new["metadata"]["managedFields"][0]["fieldsV1"];
        assert_eq!(f["f:metadata"]["f:finalizers"], json!({"v:\"a\"": {}}));
        assert_eq!(f["f:spec"], json!({}));
    }

    #[test]
    fn the_manager_defaults_to_the_user_agents_program_name() {
        assert_eq!(
            manager_of(None, Some("kubectl/v1.33.0 (linux/amd64) kubernetes/abc")),
            "kubectl"
        );
        assert_eq!(
            manager_of(Some("kubectl-create"), Some("kubectl/v1")),
            "kubectl-create"
        );
        assert_eq!(manager_of(None, None), "");
        assert_eq!(
            manager_of(None, Some(&"x".repeat(300))).len(),
            MAX_MANAGER_LEN
        );
        assert!(validate_manager(&"x".repeat(129)).is_err());
        assert!(validate_manager("ok").is_ok());
    }
}
