//! The operations of the OpenAPI documents, one per verb and path as kube-apiserver
//! publishes them: `operationId`s such as `readCoreV1NamespacedPod`, the query
//! parameters each verb takes, request bodies and responses referencing the schemas,
//! `x-kubernetes-action` and `x-kubernetes-group-version-kind`.

use serde_json::{json, Map, Value};

use super::schemas::{self, Definitions, Flavor};
use crate::api::resources::{self, ResourceInfo};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Type {
    String,
    Integer,
    Boolean,
}

/// One parameter, in the query unless `path` is set.
#[derive(Debug, Clone)]
struct Param {
    name: &'static str,
    ty: Type,
    description: String,
    path: bool,
}

fn query(name: &'static str, ty: Type, description: &str) -> Param {
    Param {
        name,
        ty,
        description: description.to_string(),
        path: false,
    }
}

fn dry_run() -> Param {
    query(
        "dryRun",
        Type::String,
        "When present, indicates that modifications should not be persisted. Valid values: All.",
    )
}

fn field_manager() -> Param {
    query(
        "fieldManager",
        Type::String,
        "A name associated with the actor or entity that is making these changes.",
    )
}

fn field_validation() -> Param {
    query(
        "fieldValidation",
        Type::String,
        "How the server handles fields of the request body it does not know or that are duplicated: Ignore, Warn (the default) or Strict.",
    )
}

fn write_params() -> Vec<Param> {
    vec![dry_run(), field_manager(), field_validation()]
}

fn patch_params() -> Vec<Param> {
    let mut p = write_params();
    p.push(query(
        "force",
        Type::Boolean,
        "Force an apply request through conflicts.",
    ));
    p
}

fn delete_params() -> Vec<Param> {
    vec![
        dry_run(),
        query(
            "gracePeriodSeconds",
            Type::Integer,
            "The duration in seconds before the object should be deleted.",
        ),
        query(
            "orphanDependents",
            Type::Boolean,
            "Deprecated: use propagationPolicy. Whether the dependent objects should be orphaned.",
        ),
        query(
            "propagationPolicy",
            Type::String,
            "Whether and how garbage collection will be performed: Orphan, Background or Foreground.",
        ),
    ]
}

fn selection_params() -> Vec<Param> {
    vec![
        query(
            "continue",
            Type::String,
            "The continue token of the previous page of a paged list.",
        ),
        query(
            "fieldSelector",
            Type::String,
            "A selector restricting the list of returned objects by their fields.",
        ),
        query(
            "labelSelector",
            Type::String,
            "A selector restricting the list of returned objects by their labels.",
        ),
        query(
            "limit",
            Type::Integer,
            "The maximum number of responses to return for a list call.",
        ),
        query(
            "resourceVersion",
            Type::String,
            "Constrains which resource versions the request may be served from.",
        ),
        query(
            "resourceVersionMatch",
            Type::String,
            "How resourceVersion is applied to list calls: Exact or NotOlderThan.",
        ),
        query(
            "timeoutSeconds",
            Type::Integer,
            "Timeout for the list or watch call.",
        ),
    ]
}

fn list_params() -> Vec<Param> {
    let mut p = vec![query(
        "allowWatchBookmarks",
        Type::Boolean,
        "Requests watch events of type BOOKMARK.",
    )];
    p.extend(selection_params());
    p.push(query(
        "sendInitialEvents",
        Type::Boolean,
        "With watch=true, starts the watch stream with synthetic events of the current state.",
    ));
    p.push(query(
        "watch",
        Type::Boolean,
        "Watch for changes to the described resources and return them as a stream of add, update, and remove notifications.",
    ));
    p
}

fn log_params() -> Vec<Param> {
    vec![
        query(
            "container",
            Type::String,
            "The container for which to stream logs.",
        ),
        query("follow", Type::Boolean, "Follow the log stream of the pod."),
        query(
            "limitBytes",
            Type::Integer,
            "The number of bytes to read from the server before terminating the log output.",
        ),
        query(
            "previous",
            Type::Boolean,
            "Return previous terminated container logs.",
        ),
        query(
            "sinceSeconds",
            Type::Integer,
            "A relative time in seconds before the current time from which to show logs.",
        ),
        query(
            "tailLines",
            Type::Integer,
            "The number of lines from the end of the logs to show.",
        ),
        query(
            "timestamps",
            Type::Boolean,
            "Add an RFC3339 timestamp at the beginning of every line.",
        ),
    ]
}

/// What a request carries.
#[derive(Debug, Clone)]
enum Body {
    Object(String),
    Patch,
    Delete,
}

/// What a response carries: a definition, or plain text.
#[derive(Debug, Clone)]
enum Reply {
    Object(String),
    Text,
}

#[derive(Debug, Clone)]
struct Operation {
    method: &'static str,
    id: String,
    description: String,
    action: &'static str,
    gvk: Option<(&'static str, &'static str, String)>,
    params: Vec<Param>,
    body: Option<Body>,
    codes: &'static [u16],
    reply: Reply,
    watchable: bool,
    tag: String,
}

/// The operations of one path, and the parameters they share (path parameters, pretty).
#[derive(Debug, Clone)]
pub struct PathItem {
    pub path: String,
    params: Vec<Param>,
    ops: Vec<Operation>,
}

/// `rbac.authorization.k8s.io` → `RbacAuthorization`, `""` → `Core`.
fn group_camel(group: &str) -> String {
    if group.is_empty() {
        return "Core".into();
    }
    group
        .trim_end_matches(".k8s.io")
        .split('.')
        .map(capitalize)
        .collect()
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

/// The tag kube-apiserver gives a group version's operations: `core_v1`,
/// `rbacAuthorization_v1`.
fn tag(group: &str, version: &str) -> String {
    let camel = group_camel(group);
    let mut c = camel.chars();
    let lower: String = match c.next() {
        Some(f) => f.to_lowercase().chain(c).collect(),
        None => String::new(),
    };
    format!("{lower}_{version}")
}

fn path_param(name: &'static str, description: String) -> Param {
    Param {
        name,
        ty: Type::String,
        description,
        path: true,
    }
}

/// The paths and operations of one served resource.
pub fn resource_paths(info: &'static ResourceInfo, defs: &Definitions) -> Vec<PathItem> {
    let Some(def) = defs.kind_name(info).map(str::to_string) else {
        return Vec::new();
    };
    let prefix = format!("{}{}", group_camel(info.group), capitalize(info.version));
    let scope = if info.namespaced { "Namespaced" } else { "" };
    let ns_segment = if info.namespaced {
        "/namespaces/{namespace}"
    } else {
        ""
    };
    let collection = format!("{}{ns_segment}/{}", info.base_path(), info.name);
    let item_path = format!("{collection}/{{name}}");
    let kind = info.kind;
    let gvk = Some((info.group, info.version, kind.to_string()));
    let tag = tag(info.group, info.version);
    let pretty = query(
        "pretty",
        Type::String,
        "If 'true', then the output is pretty printed.",
    );
    let namespace_param = path_param(
        "namespace",
        "object name and auth scope, such as for teams and projects".into(),
    );
    let mut scope_params = Vec::new();
    if info.namespaced {
        scope_params.push(namespace_param);
    }
    scope_params.push(pretty.clone());
    let op = |method, verb: &str, sub: &str, action, params, body, codes, reply| Operation {
        method,
        id: format!("{verb}{prefix}{scope}{kind}{sub}"),
        description: String::new(),
        action,
        gvk: gvk.clone(),
        params,
        body,
        codes,
        reply,
        watchable: false,
        tag: tag.clone(),
    };
    let object = Reply::Object(def.clone());
    let mut items = Vec::new();

    if resources::is_review(info) {
        let mut create = op(
            "post",
            "create",
            "",
            "post",
            write_params(),
            Some(Body::Object(def.clone())),
            &[200, 201, 202],
            object,
        );
        create.description = format!("create a {kind}");
        items.push(PathItem {
            path: collection,
            params: scope_params,
            ops: vec![create],
        });
        return items;
    }

    let verbs = info.verbs();
    let list_def = format!("{def}List");
    let mut collection_ops = Vec::new();
    let mut list = op(
        "get",
        "list",
        "",
        "list",
        list_params(),
        None,
        &[200],
        Reply::Object(list_def.clone()),
    );
    list.description = format!("list or watch objects of kind {kind}");
    list.watchable = true;
    collection_ops.push(list.clone());
    let mut create = op(
        "post",
        "create",
        "",
        "post",
        write_params(),
        Some(Body::Object(def.clone())),
        &[200, 201, 202],
        object.clone(),
    );
    create.description = format!("create a {kind}");
    collection_ops.push(create);
    if verbs.contains(&"deletecollection") {
        let mut params = selection_params();
        params.extend(delete_params());
        let mut dc = op(
            "delete",
            "delete",
            "",
            "deletecollection",
            params,
            Some(Body::Delete),
            &[200],
            Reply::Object(schemas::STATUS.into()),
        );
        dc.id = format!("delete{prefix}Collection{scope}{kind}");
        dc.description = format!("delete collection of {kind}");
        collection_ops.push(dc);
    }
    items.push(PathItem {
        path: collection.clone(),
        params: scope_params.clone(),
        ops: collection_ops,
    });

    let mut item_params = vec![path_param("name", format!("name of the {kind}"))];
    item_params.extend(scope_params.iter().cloned());
    let item_ops =
        |sub: &str, what: &str, def: &str, gvk: Option<(&'static str, &'static str, String)>| {
            let reply = Reply::Object(def.to_string());
            let mut read = op(
                "get",
                "read",
                sub,
                "get",
                vec![],
                None,
                &[200],
                reply.clone(),
            );
            read.description = format!("read {what} of the specified {kind}");
            let mut replace = op(
                "put",
                "replace",
                sub,
                "put",
                write_params(),
                Some(Body::Object(def.to_string())),
                &[200, 201],
                reply.clone(),
            );
            replace.description = format!("replace {what} of the specified {kind}");
            let mut patch = op(
                "patch",
                "patch",
                sub,
                "patch",
                patch_params(),
                Some(Body::Patch),
                &[200, 201],
                reply,
            );
            patch.description = format!("partially update {what} of the specified {kind}");
            let mut ops = vec![read, replace, patch];
            for o in &mut ops {
                o.gvk = gvk.clone();
            }
            ops
        };
    let mut object_ops = item_ops("", "the object", &def, gvk.clone());
    let mut delete = op(
        "delete",
        "delete",
        "",
        "delete",
        delete_params(),
        Some(Body::Delete),
        &[200, 202],
        object.clone(),
    );
    delete.description = format!("delete a {kind}");
    object_ops.insert(2, delete);
    items.push(PathItem {
        path: item_path.clone(),
        params: item_params.clone(),
        ops: object_ops,
    });

    if info.namespaced {
        let mut all = list.clone();
        all.id = format!("list{prefix}{kind}ForAllNamespaces");
        all.params = list_params();
        items.push(PathItem {
            path: format!("{}/{}", info.base_path(), info.name),
            params: vec![pretty],
            ops: vec![all],
        });
    }

    for sub in info.subresources {
        let path = format!("{item_path}/{sub}");
        let ops = match *sub {
            "status" | "approval" => item_ops(&capitalize(sub), sub, &def, gvk.clone()),
            "scale" => item_ops(
                "Scale",
                "scale",
                schemas::SCALE,
                Some(("autoscaling", "v1", "Scale".into())),
            ),
            "binding" => {
                let mut bind = op(
                    "post",
                    "create",
                    "Binding",
                    "post",
                    write_params(),
                    Some(Body::Object(schemas::BINDING.into())),
                    &[200, 201, 202],
                    Reply::Object(schemas::BINDING.into()),
                );
                bind.gvk = Some(("", "v1", "Binding".into()));
                bind.description = format!("create binding of a {kind}");
                vec![bind]
            }
            "finalize" => {
                let mut fin = op(
                    "put",
                    "replace",
                    "Finalize",
                    "put",
                    write_params(),
                    Some(Body::Object(def.clone())),
                    &[200, 201],
                    object.clone(),
                );
                fin.description = format!("replace finalize of the specified {kind}");
                vec![fin]
            }
            "log" => {
                let mut log = op(
                    "get",
                    "read",
                    "Log",
                    "get",
                    log_params(),
                    None,
                    &[200],
                    Reply::Text,
                );
                log.gvk = None;
                log.description = format!("read log of the specified {kind}");
                vec![log]
            }
            _ => continue,
        };
        items.push(PathItem {
            path,
            params: item_params.clone(),
            ops,
        });
    }
    items
}

/// `GET <base>/`: the group version's discovery document.
pub fn discovery_path(base: &str, group: &str, version: &str) -> PathItem {
    let id = format!(
        "get{}{}APIResources",
        group_camel(group),
        capitalize(version)
    );
    PathItem {
        path: format!("{base}/"),
        params: Vec::new(),
        ops: vec![Operation {
            method: "get",
            id,
            description: "get available resources".into(),
            action: "",
            gvk: None,
            params: Vec::new(),
            body: None,
            codes: &[200],
            reply: Reply::Object(schemas::RESOURCE_LIST.into()),
            watchable: false,
            tag: tag(group, version),
        }],
    }
}

/// The definitions a set of paths references.
pub fn referenced(items: &[PathItem]) -> Vec<String> {
    let mut out = vec![schemas::STATUS.to_string()];
    for op in items.iter().flat_map(|i| &i.ops) {
        if let Reply::Object(d) = &op.reply {
            out.push(d.clone());
        }
        match &op.body {
            Some(Body::Object(d)) => out.push(d.clone()),
            Some(Body::Patch) => out.push(schemas::PATCH.into()),
            Some(Body::Delete) => out.push(schemas::DELETE_OPTIONS.into()),
            None => {}
        }
        if op.watchable {
            out.push(schemas::WATCH_EVENT.into());
        }
    }
    out.sort();
    out.dedup();
    out
}

const OBJECT_TYPES: &[&str] = &[
    "application/json",
    "application/yaml",
    "application/vnd.kubernetes.protobuf",
];
const WATCH_TYPES: &[&str] = &[
    "application/json",
    "application/yaml",
    "application/vnd.kubernetes.protobuf",
    "application/json;stream=watch",
    "application/vnd.kubernetes.protobuf;stream=watch",
];
const PATCH_TYPES: &[&str] = &[
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
];

fn type_name(ty: Type) -> &'static str {
    match ty {
        Type::String => "string",
        Type::Integer => "integer",
        Type::Boolean => "boolean",
    }
}

fn param_json(p: &Param, flavor: Flavor) -> Value {
    let mut v = json!({
        "name": p.name,
        "in": if p.path { "path" } else { "query" },
        "description": p.description,
        "uniqueItems": true,
    });
    if p.path {
        v["required"] = json!(true);
    }
    match flavor {
        Flavor::V2 => v["type"] = json!(type_name(p.ty)),
        Flavor::V3 => v["schema"] = json!({"type": type_name(p.ty), "uniqueItems": true}),
    }
    v
}

fn reference(name: &str, flavor: Flavor) -> Value {
    match flavor {
        Flavor::V2 => json!({"$ref": format!("#/definitions/{name}")}),
        Flavor::V3 => json!({"$ref": format!("#/components/schemas/{name}")}),
    }
}

fn reply_schema(reply: &Reply, flavor: Flavor) -> Value {
    match reply {
        Reply::Object(d) => reference(d, flavor),
        Reply::Text => json!({"type": "string"}),
    }
}

fn status_text(code: u16) -> &'static str {
    match code {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        _ => "Unauthorized",
    }
}

fn operation_json(op: &Operation, flavor: Flavor) -> Value {
    let mut params: Vec<Value> = op.params.iter().map(|p| param_json(p, flavor)).collect();
    let produces: &[&str] = match (&op.reply, op.watchable) {
        (Reply::Text, _) => &[
            "text/plain",
            "application/json",
            "application/yaml",
            "application/vnd.kubernetes.protobuf",
        ],
        (_, true) => WATCH_TYPES,
        _ => OBJECT_TYPES,
    };
    let mut responses = Map::new();
    for code in op.codes {
        let schema = reply_schema(&op.reply, flavor);
        let r = match flavor {
            Flavor::V2 => json!({"description": status_text(*code), "schema": schema}),
            Flavor::V3 => {
                let content: Map<String, Value> = produces
                    .iter()
                    .map(|t| (t.to_string(), json!({"schema": schema.clone()})))
                    .collect();
                json!({"description": status_text(*code), "content": content})
            }
        };
        responses.insert(code.to_string(), r);
    }
    responses.insert("401".into(), json!({"description": "Unauthorized"}));
    let mut v = json!({
        "tags": [op.tag],
        "description": op.description,
        "operationId": op.id,
        "responses": responses,
    });
    if !op.action.is_empty() {
        v["x-kubernetes-action"] = json!(op.action);
    }
    if let Some((g, ver, k)) = &op.gvk {
        v["x-kubernetes-group-version-kind"] = json!({"group": g, "kind": k, "version": ver});
    }
    let body_schema = |body: &Body| match body {
        Body::Object(d) => reference(d, flavor),
        Body::Patch => reference(schemas::PATCH, flavor),
        Body::Delete => reference(schemas::DELETE_OPTIONS, flavor),
    };
    let consumes: &[&str] = match op.body {
        Some(Body::Patch) => PATCH_TYPES,
        _ => &["*/*"],
    };
    match flavor {
        Flavor::V2 => {
            if let Some(body) = &op.body {
                params.insert(
                    0,
                    json!({"name": "body", "in": "body", "required": !matches!(body, Body::Delete),
                        "schema": body_schema(body)}),
                );
            }
            v["consumes"] = json!(consumes);
            v["produces"] = json!(produces);
            v["schemes"] = json!(["https"]);
        }
        Flavor::V3 => {
            if let Some(body) = &op.body {
                let content: Map<String, Value> = consumes
                    .iter()
                    .map(|t| (t.to_string(), json!({"schema": body_schema(body)})))
                    .collect();
                let mut rb = json!({"content": content});
                if !matches!(body, Body::Delete) {
                    rb["required"] = json!(true);
                }
                v["requestBody"] = rb;
            }
        }
    }
    if !params.is_empty() {
        v["parameters"] = json!(params);
    }
    v
}

/// The `paths` object of a document.
pub fn paths_json(items: &[PathItem], flavor: Flavor) -> Map<String, Value> {
    items
        .iter()
        .map(|item| {
            let mut v = Map::new();
            for op in &item.ops {
                v.insert(op.method.to_string(), operation_json(op, flavor));
            }
            if !item.params.is_empty() {
                let params: Vec<Value> =
                    item.params.iter().map(|p| param_json(p, flavor)).collect();
                v.insert("parameters".into(), json!(params));
            }
            (item.path.clone(), Value::Object(v))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operation_ids_follow_kube_apiserver() {
        assert_eq!(group_camel(""), "Core");
        assert_eq!(
            group_camel("rbac.authorization.k8s.io"),
            "RbacAuthorization"
        );
        assert_eq!(
            tag("rbac.authorization.k8s.io", "v1"),
            "rbacAuthorization_v1"
        );
        assert_eq!(tag("", "v1"), "core_v1");
        let defs = schemas::build();
        let pods = resources::lookup("pods").expect("pods");
        let items = resource_paths(pods, &defs);
        let ids: Vec<&str> = items
            .iter()
            .flat_map(|i| i.ops.iter().map(|o| o.id.as_str()))
            .collect();
        for id in [
            "listCoreV1NamespacedPod",
            "createCoreV1NamespacedPod",
            "deleteCoreV1CollectionNamespacedPod",
            "readCoreV1NamespacedPod",
            "replaceCoreV1NamespacedPod",
            "patchCoreV1NamespacedPod",
            "deleteCoreV1NamespacedPod",
            "listCoreV1PodForAllNamespaces",
            "readCoreV1NamespacedPodStatus",
            "createCoreV1NamespacedPodBinding",
            "readCoreV1NamespacedPodLog",
        ] {
            assert!(ids.contains(&id), "{id} missing from {ids:?}");
        }
        let nodes = resources::lookup("nodes").expect("nodes");
        let ids: Vec<String> = resource_paths(nodes, &defs)
            .iter()
            .flat_map(|i| i.ops.iter().map(|o| o.id.clone()))
            .collect();
        assert!(ids.contains(&"readCoreV1Node".to_string()));
    }

    #[test]
    fn every_patch_takes_field_validation_and_strategic_merge_patches() {
        let defs = schemas::build();
        for info in schemas::served() {
            let items = resource_paths(info, &defs);
            let v3 = paths_json(&items, Flavor::V3);
            for (path, item) in &v3 {
                let Some(patch) = item.get("patch") else {
                    continue;
                };
                let names: Vec<&str> = patch["parameters"]
                    .as_array()
                    .expect("parameters")
                    .iter()
                    .filter_map(|p| p["name"].as_str())
                    .collect();
                assert!(names.contains(&"fieldValidation"), "{path}");
                assert!(
                    patch["requestBody"]["content"]
                        .get("application/strategic-merge-patch+json")
                        .is_some(),
                    "{path}"
                );
            }
        }
    }
}
