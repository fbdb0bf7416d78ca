//! The schemas of the OpenAPI documents: every served kind's k8s-openapi type through
//! schemars, named as Kubernetes names them (`io.k8s.api.core.v1.Pod`), with the
//! extensions clients read: `x-kubernetes-group-version-kind` on each kind and list, and
//! the list and patch strategies of [`crate::api::patch`]'s merge-key table.

use schemars::generate::SchemaSettings;
use schemars::SchemaGenerator;
use serde_json::{json, Map, Value};

use k8s_openapi::api::{autoscaling, core::v1 as core};
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;

use crate::api::patch::{list_strategy, ListStrategy};
use crate::api::resources::{self, ResourceInfo};

/// Where the generator puts its definitions, and so the prefix of every `$ref` it writes.
pub const REF_PREFIX: &str = "#/definitions/";
const V3_REF_PREFIX: &str = "#/components/schemas/";

pub const STATUS: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Status";
pub const DELETE_OPTIONS: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions";
pub const PATCH: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Patch";
pub const WATCH_EVENT: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.WatchEvent";
pub const RESOURCE_LIST: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.APIResourceList";
pub const SCALE: &str = "io.k8s.api.autoscaling.v1.Scale";
pub const BINDING: &str = "io.k8s.api.core.v1.Binding";
const QUANTITY: &str = "io.k8s.apimachinery.pkg.api.resource.Quantity";
const INT_OR_STRING: &str = "io.k8s.apimachinery.pkg.util.intstr.IntOrString";

/// Deeper than any served kind nests (Pod → spec → containers → … is about 8).
const MAX_DEPTH: usize = 24;

/// Which document a schema is written for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// Swagger 2.0 (`/openapi/v2`): `$ref` with sibling descriptions.
    V2,
    /// OpenAPI 3.0 (`/openapi/v3/...`): references under `components/schemas`, wrapped
    /// in `allOf` where they carry a description, as kube-apiserver writes them.
    V3,
}

/// The definitions of every served kind and of the types they use, in v2 form.
pub struct Definitions {
    pub schemas: Map<String, Value>,
    /// The definition name of each served kind, in the order of the resource table.
    pub kinds: Vec<(&'static ResourceInfo, String)>,
}

impl Definitions {
    /// The definition of a kind's objects.
    pub fn kind_name(&self, info: &ResourceInfo) -> Option<&str> {
        self.kinds
            .iter()
            .find(|(i, _)| {
                i.group == info.group && i.version == info.version && i.kind == info.kind
            })
            .map(|(_, n)| n.as_str())
    }

    /// Every definition reachable from `roots`, rendered for `flavor`.
    pub fn closure(&self, roots: &[String], flavor: Flavor) -> Map<String, Value> {
        let mut seen: Vec<String> = Vec::new();
        let mut todo: Vec<String> = roots.to_vec();
        while let Some(name) = todo.pop() {
            if seen.contains(&name) {
                continue;
            }
            if let Some(schema) = self.schemas.get(&name) {
                collect_refs(schema, &mut todo);
                seen.push(name);
            }
        }
        seen.into_iter()
            .filter_map(|name| {
                let schema = self.schemas.get(&name)?;
                Some((name.clone(), render(&name, schema, flavor)))
            })
            .collect()
    }
}

/// Every resource the documents describe: the stored kinds and the reviews.
pub fn served() -> impl Iterator<Item = &'static ResourceInfo> {
    resources::registry().all().into_iter()
}

/// The name a `$ref` points at.
pub fn ref_name(schema: &Value) -> Option<&str> {
    schema.get("$ref")?.as_str()?.strip_prefix(REF_PREFIX)
}

/// A (v2) reference to a definition.
pub fn reference(name: &str) -> Value {
    json!({ "$ref": format!("{REF_PREFIX}{name}") })
}

fn gvk(group: &str, version: &str, kind: &str) -> Value {
    json!({"group": group, "kind": kind, "version": version})
}

/// Generates the definitions of every served kind from its k8s-openapi type.
pub fn build() -> Definitions {
    let mut generator: SchemaGenerator = SchemaSettings::draft07()
        .with(|s| {
            s.definitions_path = "/definitions".into();
            s.meta_schema = None;
            s.transforms.clear();
        })
        .into_generator();
    let mut kinds = Vec::new();
    for info in served() {
        if let Some(schema_fn) = info.schema {
            let schema = schema_fn(&mut generator);
            if let Some(name) = ref_name(schema.as_value()) {
                kinds.push((info, name.to_string()));
            }
        }
    }
    // Types the operations of every group use.
    generator.subschema_for::<meta::Status>();
    generator.subschema_for::<meta::DeleteOptions>();
    generator.subschema_for::<meta::Patch>();
    generator.subschema_for::<meta::WatchEvent<core::Pod>>();
    generator.subschema_for::<meta::ListMeta>();
    generator.subschema_for::<meta::APIResourceList>();
    generator.subschema_for::<autoscaling::v1::Scale>();
    generator.subschema_for::<core::Binding>();
    let mut schemas = generator.take_definitions(false);

    let mut group_versions: Vec<(&str, &str)> = Vec::new();
    for (info, name) in &kinds {
        if !group_versions.contains(&(info.group, info.version)) {
            group_versions.push((info.group, info.version));
        }
        if let Some(def) = schemas.get_mut(name) {
            add_gvk(def, gvk(info.group, info.version, info.kind));
            // k8s-openapi requires `metadata` because its Rust field is not optional;
            // Kubernetes' documents do not.
            if let Some(required) = def.get_mut("required").and_then(Value::as_array_mut) {
                required.retain(|r| r != "metadata");
                if required.is_empty() {
                    def.as_object_mut().map(|d| d.remove("required"));
                }
            }
        }
        if !resources::is_review(info) {
            let list = list_schema(&schemas, info, name);
            schemas.insert(format!("{name}List"), list);
        }
    }
    for name in [DELETE_OPTIONS, WATCH_EVENT] {
        if let Some(def) = schemas.get_mut(name) {
            for (g, v) in &group_versions {
                add_gvk(def, gvk(g, v, name.rsplit('.').next().unwrap_or(name)));
            }
        }
    }
    for (name, g, v, k) in [
        (STATUS, "", "v1", "Status"),
        (SCALE, "autoscaling", "v1", "Scale"),
        (BINDING, "", "v1", "Binding"),
        (RESOURCE_LIST, "", "v1", "APIResourceList"),
    ] {
        if let Some(def) = schemas.get_mut(name) {
            add_gvk(def, gvk(g, v, k));
        }
    }
    for (info, name) in &kinds {
        annotate_lists(&mut schemas, info.kind, name);
    }
    Definitions { schemas, kinds }
}

fn add_gvk(def: &mut Value, entry: Value) {
    let Some(obj) = def.as_object_mut() else {
        return;
    };
    let list = obj
        .entry("x-kubernetes-group-version-kind")
        .or_insert_with(|| json!([]));
    if let Some(list) = list.as_array_mut() {
        if !list.contains(&entry) {
            list.push(entry);
        }
    }
}

/// `<Kind>List`, the shape of every list response (k8s-openapi has no schema for its
/// generic `List<T>`).
fn list_schema(schemas: &Map<String, Value>, info: &ResourceInfo, item: &str) -> Value {
    let prop = |field: &str| {
        schemas
            .get(item)
            .and_then(|d| d.get("properties"))
            .and_then(|p| p.get(field))
            .cloned()
            .unwrap_or_else(|| json!({"type": "string"}))
    };
    let mut metadata = reference("io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta");
    metadata["description"] = json!("Standard list metadata.");
    json!({
        "description": format!("{}List is a list of {} objects.", info.kind, info.kind),
        "type": "object",
        "properties": {
            "apiVersion": prop("apiVersion"),
            "items": {
                "description": format!("List of {}.", info.name),
                "type": "array",
                "items": reference(item),
            },
            "kind": prop("kind"),
            "metadata": metadata,
        },
        "required": ["items"],
        "x-kubernetes-group-version-kind": [gvk(info.group, info.version, &info.list_kind())],
    })
}

/// One list field's strategy, found by walking a kind's schema.
struct Found {
    definition: String,
    property: String,
    strategy: ListStrategy,
}

/// Publishes the merge-key table as extensions on the list properties it names, walking
/// the kind's schema with the same paths the patch code looks lists up by. A definition
/// reached from several kinds (ObjectMeta, PodSpec) gets one strategy per property: the
/// first merging one found.
fn annotate_lists(schemas: &mut Map<String, Value>, kind: &str, root: &str) {
    let mut found = Vec::new();
    let mut stack = vec![root.to_string()];
    walk(schemas, kind, root, &mut Vec::new(), &mut stack, &mut found);
    for f in found {
        let Some(prop) = schemas
            .get_mut(&f.definition)
            .and_then(|d| d.get_mut("properties"))
            .and_then(|p| p.get_mut(&f.property))
            .and_then(Value::as_object_mut)
        else {
            continue;
        };
        if prop.contains_key("x-kubernetes-patch-strategy") {
            continue;
        }
        match f.strategy {
            ListStrategy::MergeByKey(key) => {
                prop.insert("x-kubernetes-list-type".into(), json!("map"));
                prop.insert("x-kubernetes-list-map-keys".into(), json!([key]));
                prop.insert("x-kubernetes-patch-merge-key".into(), json!(key));
                prop.insert("x-kubernetes-patch-strategy".into(), json!("merge"));
            }
            ListStrategy::MergePrimitive => {
                prop.insert("x-kubernetes-list-type".into(), json!("set"));
                prop.insert("x-kubernetes-patch-strategy".into(), json!("merge"));
            }
            ListStrategy::Replace => {}
        }
    }
}

fn walk(
    schemas: &Map<String, Value>,
    kind: &str,
    definition: &str,
    path: &mut Vec<String>,
    stack: &mut Vec<String>,
    found: &mut Vec<Found>,
) {
    let Some(props) = schemas
        .get(definition)
        .and_then(|d| d.get("properties"))
        .and_then(Value::as_object)
    else {
        return;
    };
    for (name, schema) in props {
        path.push(name.clone());
        let inner = if schema.get("type").and_then(Value::as_str) == Some("array") {
            let strategy = list_strategy(kind, path);
            if strategy != ListStrategy::Replace {
                found.push(Found {
                    definition: definition.to_string(),
                    property: name.clone(),
                    strategy,
                });
            }
            schema.get("items").and_then(ref_name)
        } else {
            ref_name(schema)
        };
        if let Some(inner) = inner {
            if !stack.iter().any(|s| s == inner) && stack.len() < MAX_DEPTH {
                stack.push(inner.to_string());
                walk(schemas, kind, inner, path, stack, found);
                stack.pop();
            }
        }
        path.pop();
    }
}

fn collect_refs(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            if let Some(name) = ref_name(value) {
                out.push(name.to_string());
            }
            map.values().for_each(|v| collect_refs(v, out));
        }
        Value::Array(items) => items.iter().for_each(|v| collect_refs(v, out)),
        _ => {}
    }
}

/// One definition as the document of `flavor` writes it.
fn render(name: &str, schema: &Value, flavor: Flavor) -> Value {
    let description = schema.get("description").cloned().unwrap_or(Value::Null);
    // k8s-openapi writes these for CRD schemas; built-in documents type them as
    // kube-apiserver does, so clients show and check them the same way.
    let special = match (name, flavor) {
        (QUANTITY, Flavor::V2) => Some(json!({"type": "string"})),
        (QUANTITY, Flavor::V3) => Some(json!({"oneOf": [{"type": "string"}, {"type": "number"}]})),
        (INT_OR_STRING, Flavor::V2) => Some(json!({"type": "string", "format": "int-or-string"})),
        (INT_OR_STRING, Flavor::V3) => Some(json!({
            "format": "int-or-string",
            "oneOf": [{"type": "integer"}, {"type": "string"}],
        })),
        _ => None,
    };
    if let Some(mut s) = special {
        if !description.is_null() {
            s["description"] = description;
        }
        return s;
    }
    match flavor {
        Flavor::V2 => schema.clone(),
        Flavor::V3 => to_v3(schema),
    }
}

/// Rewrites references for OpenAPI 3: `#/components/schemas/...`, and a reference with
/// siblings (a field's description) as `allOf: [ref]` beside them, since siblings of a
/// `$ref` are ignored in OpenAPI 3.0.
fn to_v3(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut out: Map<String, Value> = map
                .iter()
                .filter(|(k, _)| k.as_str() != "$ref")
                .map(|(k, v)| (k.clone(), to_v3(v)))
                .collect();
            if let Some(name) = ref_name(value) {
                let r = json!({ "$ref": format!("{V3_REF_PREFIX}{name}") });
                if out.is_empty() {
                    return r;
                }
                out.insert("allOf".into(), json!([r]));
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(items.iter().map(to_v3).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defs() -> Definitions {
        build()
    }

    #[test]
    fn every_served_kind_has_a_definition_named_as_kubernetes_names_it_with_its_gvk() {
        let d = defs();
        for info in served() {
            let name = d
                .kind_name(info)
                .unwrap_or_else(|| panic!("{} missing", info.kind));
            assert!(
                name.starts_with("io.k8s.api.") && name.ends_with(info.kind),
                "{name}"
            );
            let gvks = &d.schemas[name]["x-kubernetes-group-version-kind"];
            assert_eq!(
                gvks,
                &json!([{"group": info.group, "kind": info.kind, "version": info.version}]),
                "{name}"
            );
        }
        assert!(d.schemas.contains_key("io.k8s.api.core.v1.Pod"));
        assert!(d.schemas.contains_key("io.k8s.api.core.v1.PodList"));
        assert_eq!(
            d.schemas["io.k8s.api.core.v1.PodList"]["x-kubernetes-group-version-kind"][0]["kind"],
            "PodList"
        );
    }

    #[test]
    fn merge_keys_of_the_patch_table_become_extensions() {
        let d = defs();
        let containers = &d.schemas["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"];
        assert_eq!(containers["x-kubernetes-patch-merge-key"], "name");
        assert_eq!(containers["x-kubernetes-patch-strategy"], "merge");
        assert_eq!(containers["x-kubernetes-list-type"], "map");
        assert_eq!(containers["x-kubernetes-list-map-keys"], json!(["name"]));
        let ports = &d.schemas["io.k8s.api.core.v1.Container"]["properties"]["ports"];
        assert_eq!(ports["x-kubernetes-patch-merge-key"], "containerPort");
        let svc_ports = &d.schemas["io.k8s.api.core.v1.ServiceSpec"]["properties"]["ports"];
        assert_eq!(svc_ports["x-kubernetes-patch-merge-key"], "port");
        let finalizers = &d.schemas["io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"]
            ["properties"]["finalizers"];
        assert_eq!(finalizers["x-kubernetes-list-type"], "set");
        assert_eq!(finalizers["x-kubernetes-patch-strategy"], "merge");
        // A list the table leaves alone carries no patch extension.
        let args = &d.schemas["io.k8s.api.core.v1.Container"]["properties"]["args"];
        assert!(args.get("x-kubernetes-patch-strategy").is_none());
    }

    #[test]
    fn v3_references_live_under_components_and_wrap_described_refs_in_all_of() {
        let d = defs();
        let defs = d.closure(&["io.k8s.api.core.v1.Pod".to_string()], Flavor::V3);
        let spec = &defs["io.k8s.api.core.v1.Pod"]["properties"]["spec"];
        assert_eq!(
            spec["allOf"][0]["$ref"],
            "#/components/schemas/io.k8s.api.core.v1.PodSpec"
        );
        assert!(spec["description"].is_string());
        assert!(defs.contains_key("io.k8s.api.core.v1.Container"));
        assert!(!defs.contains_key("io.k8s.api.rbac.v1.Role"));
        let text = serde_json::to_string(&defs).expect("json");
        assert!(!text.contains("#/definitions/"));
    }

    #[test]
    fn quantities_and_int_or_strings_are_typed_as_kube_apiserver_types_them() {
        let d = defs();
        let v2 = d.closure(&["io.k8s.api.core.v1.Pod".to_string()], Flavor::V2);
        assert_eq!(v2[QUANTITY]["type"], "string");
        assert_eq!(v2[INT_OR_STRING]["format"], "int-or-string");
        assert!(v2[QUANTITY]["description"].is_string());
    }
}
