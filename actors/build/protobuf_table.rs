//! Generates the protobuf field table the gateway's codec runs on (`api::protobuf`).
//!
//! It reads the prost-generated Kubernetes types of the `k8s-pb` crate with `syn` and, per
//! message, writes out its fields: tag, wire type, whether repeated or a map, and the
//! nested message. The JSON name of each field comes from `k8s-openapi`'s serde field
//! names (`"volumeID" => Field::Key_volume_id`), so initialisms come out as the API spells
//! them; whether the field is optional there too (an `Option<_>`), which tells the decoder
//! which empty strings were only proto2 defaults.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use syn::punctuated::Punctuated;
use syn::{Expr, Lit, Meta, Token};

/// The JSON facts of one k8s-openapi struct field.
struct JsonField {
    name: String,
    optional: bool,
}

/// `<module path>` → lowercase struct name → rust field → JSON facts.
type JsonNames = HashMap<String, HashMap<String, HashMap<String, JsonField>>>;

#[derive(Debug)]
enum Wire {
    Bool,
    Int32,
    Int64,
    Double,
    String,
    Bytes,
    /// Module path and message name, resolved to an index once every message is known.
    Message(String, String),
}

#[derive(Debug)]
enum Label {
    Optional,
    Repeated,
    Map,
}

/// Whether `field` of `m` is a Go struct embedded with `json:",inline"` (Probe's
/// ProbeHandler, Volume's VolumeSource): proto nests it under a name, JSON spreads its
/// fields into the parent. k8s-openapi's struct then lacks the field but has the nested
/// message's fields.
fn is_inline(
    field: &FieldDef,
    json: &HashMap<String, JsonField>,
    messages: &[MessageDef],
    index: &BTreeMap<(String, String), usize>,
) -> bool {
    let (Label::Optional, Wire::Message(module, name)) = (&field.label, &field.wire) else {
        return false;
    };
    if json.is_empty() || json.contains_key(&squash(&field.rust)) {
        return false;
    }
    let Some(&i) = index.get(&(module.clone(), name.clone())) else {
        return false;
    };
    messages[i]
        .fields
        .iter()
        .any(|f| json.contains_key(&squash(&f.rust)))
}

struct FieldDef {
    tag: u32,
    rust: String,
    wire: Wire,
    label: Label,
}

struct MessageDef {
    module: String,
    name: String,
    fields: Vec<FieldDef>,
}

/// The version a package resolved to in the workspace's Cargo.lock.
fn locked_version(lock: &str, package: &str) -> Option<String> {
    let mut lines = lock.lines();
    while let Some(line) = lines.next() {
        if line.trim() == format!("name = \"{package}\"") {
            let v = lines.next()?.trim();
            return v
                .strip_prefix("version = \"")
                .and_then(|s| s.strip_suffix('"'))
                .map(str::to_string);
        }
    }
    None
}

/// The unpacked source of a registry crate: from `cargo metadata`, else the registry
/// folders under `CARGO_HOME`.
fn crate_source(package: &str) -> PathBuf {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let lock = std::fs::read_to_string(manifest_dir.join("../Cargo.lock")).unwrap_or_default();
    let version = locked_version(&lock, package);
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")));
    if let (Some(home), Some(version)) = (&home, &version) {
        if let Ok(registries) = std::fs::read_dir(home.join("registry/src")) {
            for reg in registries.flatten() {
                let dir = reg.path().join(format!("{package}-{version}"));
                if dir.join("Cargo.toml").exists() {
                    return dir;
                }
            }
        }
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = std::process::Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--offline"])
        .current_dir(&manifest_dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run cargo metadata to find {package}: {e}"));
    let meta: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("cargo metadata prints JSON");
    let pkgs = meta["packages"].as_array().cloned().unwrap_or_default();
    let manifest = pkgs
        .iter()
        .find(|p| p["name"] == package && version.as_deref().is_none_or(|v| p["version"] == v))
        .and_then(|p| p["manifest_path"].as_str())
        .unwrap_or_else(|| panic!("{package} is not among the workspace's packages"));
    PathBuf::from(manifest)
        .parent()
        .expect("a manifest has a folder")
        .to_path_buf()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<_> = entries.flatten().map(|e| e.path()).collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn module_of(root: &Path, file: &Path) -> String {
    let rel = file
        .parent()
        .unwrap_or(root)
        .strip_prefix(root)
        .unwrap_or(Path::new(""));
    rel.components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join("/")
}

/// k8s-openapi's structs: each file holds one, its fields, and its deserializer's keys.
fn json_names(openapi_root: &Path) -> JsonNames {
    let mut files = Vec::new();
    rust_files(openapi_root, &mut files);
    let mut out = JsonNames::new();
    for file in files {
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        let Some(name) = text.lines().find_map(|l| {
            l.strip_prefix("pub struct ")
                .and_then(|r| r.split([' ', '{', '(', ';']).next())
                .map(str::to_string)
        }) else {
            continue;
        };
        let mut optional = HashMap::new();
        let mut in_struct = false;
        for line in text.lines() {
            if line.starts_with("pub struct ") {
                in_struct = true;
                continue;
            }
            if in_struct && line.starts_with('}') {
                break;
            }
            if let Some(rest) = line.strip_prefix("    pub ") {
                if let Some((field, ty)) = rest.split_once(": ") {
                    optional.insert(
                        field.trim_start_matches("r#").to_string(),
                        ty.starts_with("Option<"),
                    );
                }
            }
        }
        let mut fields = HashMap::new();
        for line in text.lines() {
            let l = line.trim();
            let Some(rest) = l.strip_prefix('"') else {
                continue;
            };
            let Some((json, rest)) = rest.split_once("\" => Field::Key_") else {
                continue;
            };
            let rust = rest.trim_end_matches(',').to_string();
            let opt = optional.get(&rust).copied().unwrap_or(true);
            fields.insert(
                squash(&rust),
                JsonField {
                    name: json.to_string(),
                    optional: opt,
                },
            );
        }
        out.entry(module_of(openapi_root, &file))
            .or_default()
            .insert(name.to_lowercase(), fields);
    }
    out
}

/// A rust field name as both crates would agree on it (`r#type`, `type_` → `type`).
fn normalise(rust: &str) -> String {
    rust.trim_start_matches("r#")
        .trim_end_matches('_')
        .to_string()
}

/// A field name without case or underscores: prost spells `nonResourceURLs`
/// `non_resource_ur_ls` where k8s-openapi has `non_resource_urls`.
fn squash(rust: &str) -> String {
    normalise(rust).replace('_', "").to_lowercase()
}

/// `snake_case` → `lowerCamel`, for the few fields k8s-openapi does not have.
fn camel(snake: &str) -> String {
    let mut out = String::new();
    let mut up = false;
    for c in snake.chars() {
        if c == '_' {
            up = true;
        } else if up {
            out.extend(c.to_uppercase());
            up = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// The message type a field's rust type names: the innermost path under Option, Vec, Box
/// and (for maps) the value of a BTreeMap, resolved against the file's module.
fn message_type(ty: &syn::Type, module: &str) -> Option<(String, String)> {
    let syn::Type::Path(tp) = ty else {
        return None;
    };
    let last = tp.path.segments.last()?;
    let ident = last.ident.to_string();
    if matches!(ident.as_str(), "Option" | "Vec" | "Box" | "BTreeMap") {
        let syn::PathArguments::AngleBracketed(args) = &last.arguments else {
            return None;
        };
        let inner = args.args.iter().rev().find_map(|a| match a {
            syn::GenericArgument::Type(t) => Some(t),
            _ => None,
        })?;
        return message_type(inner, module);
    }
    let mut segs: Vec<String> = if module.is_empty() {
        Vec::new()
    } else {
        module.split('/').map(str::to_string).collect()
    };
    let idents: Vec<String> = tp
        .path
        .segments
        .iter()
        .map(|s| s.ident.to_string())
        .collect();
    let (name, path) = idents.split_last()?;
    for p in path {
        match p.as_str() {
            "super" => {
                segs.pop();
            }
            "crate" => segs.clear(),
            other => segs.push(other.to_string()),
        }
    }
    Some((segs.join("/"), name.clone()))
}

fn parse_messages(pb_root: &Path) -> Vec<MessageDef> {
    let mut files = Vec::new();
    rust_files(pb_root, &mut files);
    let mut out = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("k8s-pb source is readable");
        let ast = syn::parse_file(&text).expect("k8s-pb source parses");
        let module = module_of(pb_root, &file);
        for item in ast.items {
            let syn::Item::Struct(s) = item else { continue };
            let is_message = s.attrs.iter().any(|a| {
                a.path().is_ident("derive") && a.meta.to_token_stream_string().contains("Message")
            });
            if !is_message {
                continue;
            }
            let syn::Fields::Named(named) = &s.fields else {
                continue;
            };
            let mut fields = Vec::new();
            for f in &named.named {
                let Some(attr) = f.attrs.iter().find(|a| a.path().is_ident("prost")) else {
                    continue;
                };
                let metas = attr
                    .parse_args_with(Punctuated::<Meta, Token![,]>::parse_terminated)
                    .expect("prost attributes parse");
                let mut wire = None;
                let mut label = Label::Optional;
                let mut tag = 0;
                for m in metas {
                    match m {
                        Meta::Path(p) => {
                            let id = p.get_ident().map(|i| i.to_string()).unwrap_or_default();
                            match id.as_str() {
                                "repeated" => label = Label::Repeated,
                                "optional" | "required" | "boxed" => {}
                                "bool" => wire = Some("bool".to_string()),
                                "int32" => wire = Some("int32".into()),
                                "int64" => wire = Some("int64".into()),
                                "double" => wire = Some("double".into()),
                                "string" => wire = Some("string".into()),
                                "message" => wire = Some("message".into()),
                                other => panic!("unexpected prost attribute {other}"),
                            }
                        }
                        Meta::NameValue(nv) => {
                            let key = nv
                                .path
                                .get_ident()
                                .map(|i| i.to_string())
                                .unwrap_or_default();
                            let val = match &nv.value {
                                Expr::Lit(l) => match &l.lit {
                                    Lit::Str(s) => s.value(),
                                    _ => String::new(),
                                },
                                _ => String::new(),
                            };
                            match key.as_str() {
                                "tag" => tag = val.parse().expect("numeric tag"),
                                "bytes" => wire = Some("bytes".into()),
                                "btree_map" | "map" => {
                                    label = Label::Map;
                                    let value = val.split(',').nth(1).unwrap_or("").trim();
                                    wire = Some(value.to_string());
                                }
                                "packed" => {}
                                other => panic!("unexpected prost attribute {other}"),
                            }
                        }
                        Meta::List(_) => {}
                    }
                }
                let rust = f.ident.as_ref().expect("named field").to_string();
                let wire = match wire.as_deref() {
                    Some("bool") => Wire::Bool,
                    Some("int32") => Wire::Int32,
                    Some("int64") => Wire::Int64,
                    Some("double") => Wire::Double,
                    Some("string") => Wire::String,
                    Some("bytes") => Wire::Bytes,
                    Some("message") => {
                        let (m, n) = message_type(&f.ty, &module)
                            .unwrap_or_else(|| panic!("no message type for {}.{rust}", s.ident));
                        Wire::Message(m, n)
                    }
                    other => panic!("unexpected wire type {other:?} on {}.{rust}", s.ident),
                };
                fields.push(FieldDef {
                    tag,
                    rust: normalise(&rust),
                    wire,
                    label,
                });
            }
            fields.sort_by_key(|f| f.tag);
            out.push(MessageDef {
                module: module.clone(),
                name: s.ident.to_string(),
                fields,
            });
        }
    }
    out
}

trait TokenString {
    fn to_token_stream_string(&self) -> String;
}

impl TokenString for Meta {
    fn to_token_stream_string(&self) -> String {
        match self {
            Meta::List(l) => l.tokens.to_string(),
            _ => String::new(),
        }
    }
}

/// Messages whose JSON form is not an object of their fields.
fn special(module: &str, name: &str) -> &'static str {
    match (module, name) {
        ("apimachinery/pkg/apis/meta/v1", "Time") => "Time",
        ("apimachinery/pkg/apis/meta/v1", "MicroTime") => "MicroTime",
        ("apimachinery/pkg/apis/meta/v1", "Duration") => "Duration",
        ("apimachinery/pkg/apis/meta/v1", "FieldsV1") => "RawJson",
        ("apimachinery/pkg/runtime", "RawExtension") => "RawExtension",
        ("apimachinery/pkg/util/intstr", "IntOrString") => "IntOrString",
        ("apimachinery/pkg/api/resource", "Quantity") => "Quantity",
        ("apimachinery/pkg/api/resource", "QuantityValue") => "Quantity",
        (m, "Json") if m.starts_with("apiextensions_apiserver/") => "RawJson",
        _ => "None",
    }
}

pub fn generate(out_file: &Path) {
    let pb = crate_source("k8s-pb");
    let openapi = crate_source("k8s-openapi");
    println!("cargo:rerun-if-changed={}", pb.join("src").display());
    println!("cargo:rerun-if-changed=build/protobuf_table.rs");
    println!("cargo:rerun-if-changed=../Cargo.lock");
    let names = json_names(&openapi.join("src/v1_37"));
    let messages = parse_messages(&pb.join("src"));
    let index: BTreeMap<(String, String), usize> = messages
        .iter()
        .enumerate()
        .map(|(i, m)| ((m.module.clone(), m.name.clone()), i))
        .collect();

    let mut code = String::new();
    code.push_str(
        "// Generated by build/protobuf_table.rs from k8s-pb and k8s-openapi; do not edit.\n",
    );
    code.push_str("pub static MESSAGES: &[Message] = &[\n");
    let no_names = HashMap::new();
    // Messages k8s-openapi inlines (VolumeSource into Volume) use their module's names,
    // then any module's.
    let mut by_module: HashMap<&str, HashMap<&str, &str>> = HashMap::new();
    let mut global: HashMap<&str, &str> = HashMap::new();
    for (module, types) in &names {
        for fields in types.values() {
            for (key, f) in fields {
                by_module
                    .entry(module.as_str())
                    .or_default()
                    .insert(key.as_str(), f.name.as_str());
                global.insert(key.as_str(), f.name.as_str());
            }
        }
    }
    for m in &messages {
        let json = names
            .get(&m.module)
            .and_then(|types| types.get(&m.name.to_lowercase()))
            .unwrap_or(&no_names);
        let _ = writeln!(
            code,
            "    Message {{ module: {:?}, name: {:?}, special: Special::{}, fields: &[",
            m.module,
            m.name,
            special(&m.module, &m.name)
        );
        for f in &m.fields {
            let key = squash(&f.rust);
            let inlined = by_module
                .get(m.module.as_str())
                .and_then(|names| names.get(key.as_str()))
                .or_else(|| global.get(key.as_str()));
            let (json_name, optional) = match (json.get(&key), inlined) {
                (Some(j), _) => (j.name.clone(), j.optional),
                (None, Some(name)) => (name.to_string(), true),
                (None, None) => (camel(&f.rust), true),
            };
            let wire = match &f.wire {
                Wire::Bool => "Wire::Bool".to_string(),
                Wire::Int32 => "Wire::Int32".into(),
                Wire::Int64 => "Wire::Int64".into(),
                Wire::Double => "Wire::Double".into(),
                Wire::String => "Wire::String".into(),
                Wire::Bytes => "Wire::Bytes".into(),
                Wire::Message(module, name) => {
                    let i = index
                        .get(&(module.clone(), name.clone()))
                        .unwrap_or_else(|| panic!("message {module}/{name} not generated"));
                    format!("Wire::Message({i})")
                }
            };
            let label = match f.label {
                _ if is_inline(f, json, &messages, &index) => "Label::Inline",
                Label::Optional => "Label::Optional",
                Label::Repeated => "Label::Repeated",
                Label::Map => "Label::Map",
            };
            let _ = writeln!(
                code,
                "        Field {{ tag: {}, json: {:?}, wire: {wire}, label: {label}, optional: {optional} }},",
                f.tag, json_name
            );
        }
        code.push_str("    ] },\n");
    }
    code.push_str("];\n");
    std::fs::write(out_file, code).expect("OUT_DIR is writable");
}
