//! A container's environment as the kubelet builds it (pkg/kubelet/kubelet_pods.go,
//! `makeEnvironmentVariables`): `envFrom` ConfigMaps and Secrets first (with their prefix;
//! keys that are no valid variable names are skipped and reported), then `env` in order,
//! each `value` expanded against what is defined so far and each `valueFrom` resolved from
//! a ConfigMap or Secret key, a pod field or a container resource (limits defaulting to
//! the node's allocatable). Also the `$(VAR)` expansion of third_party/forked/golang/
//! expansion, used for `command`, `args` and `subPathExpr` as well.
//!
//! Plain functions over k8s-openapi types; the objects they read are fetched first
//! ([`fetch`]), so resolution itself is pure and testable.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, ResourceFieldSelector, Secret};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use super::spec::Placement;
use crate::api::validation::parse_quantity;
use crate::api::ApiError;
use crate::client::ApiClient;

/// Why a container's environment cannot be built; the kubelet's own wording, shown as the
/// `CreateContainerConfigError` message.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EnvError {
    #[error("configmap \"{0}\" not found")]
    ConfigMapNotFound(String),
    #[error("secret \"{0}\" not found")]
    SecretNotFound(String),
    #[error("couldn't find key {key} in ConfigMap {namespace}/{name}")]
    MissingConfigMapKey {
        key: String,
        namespace: String,
        name: String,
    },
    #[error("couldn't find key {key} in Secret {namespace}/{name}")]
    MissingSecretKey {
        key: String,
        namespace: String,
        name: String,
    },
    #[error("unsupported fieldPath: {0}")]
    UnsupportedField(String),
    #[error("unsupported container resource : {0}")]
    UnsupportedResource(String),
    #[error("{0}")]
    Api(#[from] ApiError),
}

/// The ConfigMaps and Secrets a container's environment refers to, as read from the API
/// (`None`: it does not exist).
#[derive(Debug, Clone, Default)]
pub struct Sources {
    pub config_maps: HashMap<String, Option<ConfigMap>>,
    pub secrets: HashMap<String, Option<Secret>>,
}

/// Keys of an `envFrom` source skipped because they are no valid variable names; the
/// kubelet reports them in an `InvalidEnvironmentVariableNames` event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// `configMap` or `secret`, as the event says.
    pub kind: &'static str,
    pub namespace: String,
    pub name: String,
    pub keys: Vec<String>,
}

impl Skipped {
    /// The event message, worded as the kubelet words it.
    pub fn message(&self) -> String {
        format!(
            "Keys [{}] from the EnvFrom {} {}/{} were skipped since they are considered invalid environment variable names.",
            self.keys.join(", "),
            self.kind,
            self.namespace,
            self.name
        )
    }
}

/// A container's resolved environment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Resolved {
    /// In order: `envFrom` variables, then `env`; a later definition of a name replaces
    /// the earlier one in place.
    pub env: Vec<(String, String)>,
    pub skipped: Vec<Skipped>,
}

impl Resolved {
    pub fn lookup(&self, name: &str) -> Option<&str> {
        self.env
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn set(&mut self, name: &str, value: String) {
        match self.env.iter_mut().find(|(n, _)| n == name) {
            Some(slot) => slot.1 = value,
            None => self.env.push((name.to_string(), value)),
        }
    }
}

/// The node's allocatable resources (`cpu`, `memory`, `ephemeral-storage`): what a
/// `resourceFieldRef` to an unset limit reads.
pub type Allocatable = BTreeMap<String, Quantity>;

/// The names of the ConfigMaps and Secrets `container`'s environment reads.
pub fn referenced(container: &Container) -> (BTreeSet<String>, BTreeSet<String>) {
    let (mut cms, mut secrets) = (BTreeSet::new(), BTreeSet::new());
    for from in container.env_from.iter().flatten() {
        if let Some(r) = &from.config_map_ref {
            cms.insert(r.name.clone());
        }
        if let Some(r) = &from.secret_ref {
            secrets.insert(r.name.clone());
        }
    }
    for var in container.env.iter().flatten() {
        let Some(from) = &var.value_from else {
            continue;
        };
        if let Some(r) = &from.config_map_key_ref {
            cms.insert(r.name.clone());
        }
        if let Some(r) = &from.secret_key_ref {
            secrets.insert(r.name.clone());
        }
    }
    (cms, secrets)
}

/// Read what `container`'s environment refers to. A missing object is recorded as such
/// (it may be optional); any other failure is an error.
pub async fn fetch(
    client: &dyn ApiClient,
    namespace: &str,
    container: &Container,
) -> Result<Sources, EnvError> {
    let (cms, secrets) = referenced(container);
    let mut sources = Sources::default();
    for name in cms {
        let cm = get_typed::<ConfigMap>(client, "configmaps", namespace, &name).await?;
        sources.config_maps.insert(name, cm);
    }
    for name in secrets {
        let s = get_typed::<Secret>(client, "secrets", namespace, &name).await?;
        sources.secrets.insert(name, s);
    }
    Ok(sources)
}

/// GET an object as its typed form; `None` when it does not exist.
pub async fn get_typed<T: serde::de::DeserializeOwned>(
    client: &dyn ApiClient,
    resource: &str,
    namespace: &str,
    name: &str,
) -> Result<Option<T>, ApiError> {
    match client.get(resource, Some(namespace), name).await {
        Ok(v) => serde_json::from_value(v)
            .map(Some)
            .map_err(|e| ApiError::Internal(format!("decoding {resource} {name:?}: {e}"))),
        Err(ApiError::NotFound { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

fn namespace_of(pod: &Pod) -> String {
    pod.metadata.namespace.clone().unwrap_or_default()
}

/// Environment variable names as apimachinery's `IsEnvVarName` allows them.
pub fn is_env_var_name(s: &str) -> bool {
    let mut chars = s.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || matches!(c, '-' | '.' | '_'));
    first_ok
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
        && s != "."
        && s != ".."
        && !s.starts_with("..")
}

/// `$(NAME)` references expanded with `mapping` (which answers for unknown names too);
/// `$$` is an escaped `$`; a `$` not starting a reference is kept; an unterminated `$(`
/// is kept as written.
pub fn expand_with(input: &str, mut mapping: impl FnMut(&str) -> String) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        let mut chars = after.chars();
        match chars.next() {
            // A trailing `$` is literal.
            None => {
                out.push('$');
                rest = "";
            }
            Some('$') => {
                out.push('$');
                rest = &after[1..];
            }
            Some('(') => match after[1..].find(')') {
                Some(end) => {
                    out.push_str(&mapping(&after[1..1 + end]));
                    rest = &after[end + 2..];
                }
                // Incomplete: `$(` is copied and the rest is read as plain text.
                None => {
                    out.push_str("$(");
                    rest = &after[1..];
                }
            },
            Some(c) => {
                out.push('$');
                out.push(c);
                rest = &after[c.len_utf8()..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Expansion against known variables; an unknown reference stays `$(NAME)`.
pub fn expand(input: &str, vars: &dyn Fn(&str) -> Option<String>) -> String {
    expand_with(input, |name| {
        vars(name).unwrap_or_else(|| format!("$({name})"))
    })
}

/// Expand `input` against a resolved environment.
pub fn expand_env(input: &str, env: &Resolved) -> String {
    expand(input, &|name| env.lookup(name).map(str::to_string))
}

/// Go's `%q` for the downward API's `key="value"` lines.
fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A label or annotation map as the downward API writes it: sorted `key="value"` lines.
pub fn format_map(m: &BTreeMap<String, String>) -> String {
    m.iter()
        .map(|(k, v)| format!("{k}={}", go_quote(v)))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `metadata.labels['app']` → (`labels`, `app`).
fn subscript(path: &str) -> Option<(&str, &str)> {
    let (field, key) = path.split_once('[')?;
    let key = key.strip_suffix(']')?;
    let key = key
        .strip_prefix('\'')
        .and_then(|k| k.strip_suffix('\''))
        .or_else(|| key.strip_prefix('"').and_then(|k| k.strip_suffix('"')))?;
    Some((field, key))
}

/// fieldpath's `ExtractFieldPathAsString` on a pod: its metadata fields, whole label and
/// annotation maps included (as the downward API volume writes them).
pub fn metadata_field(pod: &Pod, path: &str) -> Result<String, EnvError> {
    let m = &pod.metadata;
    let empty = BTreeMap::new();
    let map = |f: &str| match f {
        "metadata.labels" => Some(m.labels.as_ref().unwrap_or(&empty)),
        "metadata.annotations" => Some(m.annotations.as_ref().unwrap_or(&empty)),
        _ => None,
    };
    if let Some((field, key)) = subscript(path) {
        return match map(field) {
            Some(values) => Ok(values.get(key).cloned().unwrap_or_default()),
            None => Err(EnvError::UnsupportedField(path.to_string())),
        };
    }
    if let Some(values) = map(path) {
        return Ok(format_map(values));
    }
    match path {
        "metadata.name" => Ok(m.name.clone().unwrap_or_default()),
        "metadata.namespace" => Ok(m.namespace.clone().unwrap_or_default()),
        "metadata.uid" => Ok(m.uid.clone().unwrap_or_default()),
        _ => Err(EnvError::UnsupportedField(path.to_string())),
    }
}

/// The value of an env `fieldRef` (`podFieldSelectorRuntimeValue`): the pod's placement,
/// then its metadata.
pub fn pod_field(pod: &Pod, path: &str, at: Placement<'_>) -> Result<String, EnvError> {
    let spec = pod.spec.as_ref();
    Ok(match path {
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
        "spec.serviceAccountName" => spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_default(),
        "status.hostIP" | "status.hostIPs" => at.host_ip.to_string(),
        "status.podIP" | "status.podIPs" => at.pod_ip.unwrap_or_default().to_string(),
        _ => return metadata_field(pod, path),
    })
}

/// A container's limits with cpu, memory and ephemeral-storage defaulted to the node's
/// allocatable where unset (`defaultPodLimitsForDownwardAPI`).
fn defaulted_limits(container: &Container, allocatable: &Allocatable) -> Allocatable {
    let mut limits = container
        .resources
        .as_ref()
        .and_then(|r| r.limits.clone())
        .unwrap_or_default();
    for name in ["cpu", "memory", "ephemeral-storage"] {
        if !limits.contains_key(name) {
            if let Some(q) = allocatable.get(name) {
                limits.insert(name.to_string(), q.clone());
            }
        }
    }
    limits
}

fn quantity(q: Option<&Quantity>) -> f64 {
    q.and_then(|q| parse_quantity(&q.0)).unwrap_or(0.0)
}

/// `ExtractContainerResourceValue`: the value divided by the divisor (1 when unset),
/// rounded up; cpu compares millicores.
pub fn resource_value(
    selector: &ResourceFieldSelector,
    container: &Container,
    allocatable: &Allocatable,
) -> Result<String, EnvError> {
    let unsupported = || EnvError::UnsupportedResource(selector.resource.clone());
    let (section, name) = selector.resource.split_once('.').ok_or_else(unsupported)?;
    let values = match section {
        "limits" => defaulted_limits(container, allocatable),
        "requests" => container
            .resources
            .as_ref()
            .and_then(|r| r.requests.clone())
            .unwrap_or_default(),
        _ => return Err(unsupported()),
    };
    if !matches!(name, "cpu" | "memory" | "ephemeral-storage") && !name.starts_with("hugepages-") {
        return Err(unsupported());
    }
    let divisor = selector
        .divisor
        .as_ref()
        .and_then(|d| parse_quantity(&d.0))
        .filter(|d| *d != 0.0)
        .unwrap_or(1.0);
    let value = quantity(values.get(name));
    let n = if name == "cpu" {
        (value * 1000.0).ceil() / (divisor * 1000.0).ceil()
    } else {
        value.ceil() / divisor.ceil()
    };
    Ok(format!("{}", n.ceil() as i64))
}

/// Build the container's environment from its spec and the objects it refers to.
pub fn resolve(
    pod: &Pod,
    container: &Container,
    sources: &Sources,
    at: Placement<'_>,
    allocatable: &Allocatable,
) -> Result<Resolved, EnvError> {
    let ns = namespace_of(pod);
    let mut out = Resolved::default();
    // The service variables come first: `envFrom` and `env` may use and override them.
    for (k, v) in at.services {
        out.set(k, v.clone());
    }
    for from in container.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        let (kind, name, pairs): (&'static str, &str, Vec<(String, String)>) =
            if let Some(r) = &from.config_map_ref {
                match sources.config_maps.get(&r.name).cloned().flatten() {
                    Some(cm) => (
                        "configMap",
                        &r.name,
                        cm.data.unwrap_or_default().into_iter().collect(),
                    ),
                    None if r.optional == Some(true) => continue,
                    None => return Err(EnvError::ConfigMapNotFound(r.name.clone())),
                }
            } else if let Some(r) = &from.secret_ref {
                match sources.secrets.get(&r.name).cloned().flatten() {
                    Some(s) => (
                        "secret",
                        &r.name,
                        s.data
                            .unwrap_or_default()
                            .into_iter()
                            .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned()))
                            .collect(),
                    ),
                    None if r.optional == Some(true) => continue,
                    None => return Err(EnvError::SecretNotFound(r.name.clone())),
                }
            } else {
                continue;
            };
        let mut invalid = Vec::new();
        for (k, v) in pairs {
            let k = format!("{prefix}{k}");
            if is_env_var_name(&k) {
                out.set(&k, v);
            } else {
                invalid.push(k);
            }
        }
        if !invalid.is_empty() {
            invalid.sort();
            out.skipped.push(Skipped {
                kind,
                namespace: ns.clone(),
                name: name.to_string(),
                keys: invalid,
            });
        }
    }
    for var in container.env.iter().flatten() {
        let value = var.value.clone().unwrap_or_default();
        let value = if !value.is_empty() {
            expand_env(&value, &out)
        } else if let Some(from) = &var.value_from {
            if let Some(f) = &from.field_ref {
                pod_field(pod, &f.field_path, at)?
            } else if let Some(r) = &from.resource_field_ref {
                resource_value(r, container, allocatable)?
            } else if let Some(r) = &from.config_map_key_ref {
                let optional = r.optional == Some(true);
                let Some(cm) = sources.config_maps.get(&r.name).cloned().flatten() else {
                    if optional {
                        continue;
                    }
                    return Err(EnvError::ConfigMapNotFound(r.name.clone()));
                };
                match cm.data.as_ref().and_then(|d| d.get(&r.key)) {
                    Some(v) => v.clone(),
                    None if optional => continue,
                    None => {
                        return Err(EnvError::MissingConfigMapKey {
                            key: r.key.clone(),
                            namespace: ns,
                            name: r.name.clone(),
                        })
                    }
                }
            } else if let Some(r) = &from.secret_key_ref {
                let optional = r.optional == Some(true);
                let Some(s) = sources.secrets.get(&r.name).cloned().flatten() else {
                    if optional {
                        continue;
                    }
                    return Err(EnvError::SecretNotFound(r.name.clone()));
                };
                match s.data.as_ref().and_then(|d| d.get(&r.key)) {
                    Some(v) => String::from_utf8_lossy(&v.0).into_owned(),
                    None if optional => continue,
                    None => {
                        return Err(EnvError::MissingSecretKey {
                            key: r.key.clone(),
                            namespace: ns,
                            name: r.name.clone(),
                        })
                    }
                }
            } else {
                // Admission refuses every other source.
                String::new()
            }
        } else {
            String::new()
        };
        out.set(&var.name, value);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;
    use serde_json::json;

    fn pod() -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "prod", "uid": "u-1",
                "labels": {"app": "shop", "tier": "front"}, "annotations": {"note": "a \"b\""}},
            "spec": {"nodeName": "node-1", "serviceAccountName": "robot",
                "containers": [{"name": "app", "image": "busybox"}]},
        }))
        .expect("pod")
    }

    fn container(v: serde_json::Value) -> Container {
        serde_json::from_value(v).expect("container")
    }

    const AT: Placement<'static> = Placement {
        pod_ip: Some("10.1.0.7"),
        host_ip: "192.168.1.2",
        services: &[],
    };

    fn alloc() -> Allocatable {
        BTreeMap::from([
            ("cpu".to_string(), Quantity("4".into())),
            ("memory".to_string(), Quantity("8Gi".into())),
            ("ephemeral-storage".to_string(), Quantity("100Gi".into())),
        ])
    }

    fn sources() -> Sources {
        let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "cfg"},
            "data": {"color": "blue", "size": "L", "bad key": "x", "1st": "y"}}))
        .expect("cm");
        let secret = Secret {
            data: Some(BTreeMap::from([(
                "password".to_string(),
                ByteString(b"s3cr3t".to_vec()),
            )])),
            ..Default::default()
        };
        Sources {
            config_maps: HashMap::from([("cfg".to_string(), Some(cm)), ("gone".into(), None)]),
            secrets: HashMap::from([("db".to_string(), Some(secret)), ("nope".into(), None)]),
        }
    }

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn expansion_follows_the_kubelets_rules() {
        let v = vars(&[("A", "1"), ("B", "two")]);
        assert_eq!(expand("$(A)-$(B)", &v), "1-two");
        assert_eq!(expand("$$(A)", &v), "$(A)", "$$ escapes");
        assert_eq!(expand("$$$(A)", &v), "$1");
        assert_eq!(expand("$(NOPE)", &v), "$(NOPE)", "unknown kept");
        assert_eq!(expand("$(A", &v), "$(A", "unterminated kept");
        assert_eq!(expand("cost $5 $", &v), "cost $5 $");
        assert_eq!(expand("$()", &v), "$()");
        assert_eq!(expand("é$(A)é", &v), "é1é");
    }

    #[test]
    fn env_resolves_config_map_and_secret_keys_fields_and_earlier_variables() {
        let c = container(json!({"name": "app", "env": [
            {"name": "COLOR", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "color"}}},
            {"name": "PW", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}},
            {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "IPS", "valueFrom": {"fieldRef": {"fieldPath": "status.podIPs"}}},
            {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
            {"name": "URL", "value": "http://$(IPS)/$(POD)/$(COLOR)/$(LATER)"},
            {"name": "LATER", "value": "x"},
        ]}));
        let r = resolve(&pod(), &c, &sources(), AT, &alloc()).expect("env");
        assert_eq!(r.lookup("COLOR"), Some("blue"));
        assert_eq!(r.lookup("PW"), Some("s3cr3t"));
        assert_eq!(r.lookup("POD"), Some("web"));
        assert_eq!(r.lookup("APP"), Some("shop"));
        assert_eq!(
            r.lookup("URL"),
            Some("http://10.1.0.7/web/blue/$(LATER)"),
            "only earlier variables expand"
        );
    }

    #[test]
    fn env_from_adds_prefixed_keys_and_skips_invalid_names() {
        let c = container(json!({"name": "app", "envFrom": [
            {"configMapRef": {"name": "cfg"}, "prefix": "CFG_"},
            {"secretRef": {"name": "db"}},
            {"configMapRef": {"name": "gone", "optional": true}},
        ], "env": [{"name": "CFG_size", "value": "XL"}]}));
        let r = resolve(&pod(), &c, &sources(), AT, &alloc()).expect("env");
        assert_eq!(r.lookup("CFG_color"), Some("blue"));
        assert_eq!(r.lookup("CFG_1st"), Some("y"), "the prefix makes it valid");
        assert_eq!(r.lookup("password"), Some("s3cr3t"));
        assert_eq!(r.lookup("CFG_size"), Some("XL"), "env wins over envFrom");
        assert_eq!(r.skipped.len(), 1);
        assert_eq!(
            r.skipped[0].message(),
            "Keys [CFG_bad key] from the EnvFrom configMap prod/cfg were skipped since they are considered invalid environment variable names."
        );
    }

    #[test]
    fn missing_sources_and_keys_fail_in_the_kubelets_words_unless_optional() {
        let err = |env: serde_json::Value| {
            resolve(
                &pod(),
                &container(json!({"name": "a", "env": env})),
                &sources(),
                AT,
                &alloc(),
            )
            .map(|r| r.env)
            .map_err(|e| e.to_string())
        };
        assert_eq!(
            err(
                json!([{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "gone", "key": "k"}}}])
            ),
            Err("configmap \"gone\" not found".to_string())
        );
        assert_eq!(
            err(
                json!([{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "k"}}}])
            ),
            Err("couldn't find key k in ConfigMap prod/cfg".to_string())
        );
        assert_eq!(
            err(
                json!([{"name": "X", "valueFrom": {"secretKeyRef": {"name": "nope", "key": "k"}}}])
            ),
            Err("secret \"nope\" not found".to_string())
        );
        assert_eq!(
            err(json!([{"name": "X", "valueFrom": {"secretKeyRef": {"name": "db", "key": "k"}}}])),
            Err("couldn't find key k in Secret prod/db".to_string())
        );
        assert_eq!(
            err(
                json!([{"name": "X", "valueFrom": {"secretKeyRef": {"name": "db", "key": "k", "optional": true}}},
                        {"name": "Y", "valueFrom": {"configMapKeyRef": {"name": "gone", "key": "k", "optional": true}}}])
            ),
            Ok(vec![]),
            "optional references are left out"
        );
        let c = container(json!({"name": "a", "envFrom": [{"secretRef": {"name": "nope"}}]}));
        assert_eq!(
            resolve(&pod(), &c, &sources(), AT, &alloc())
                .map_err(|e| e.to_string())
                .err(),
            Some("secret \"nope\" not found".to_string())
        );
    }

    #[test]
    fn resource_refs_divide_round_up_and_default_limits_to_the_node() {
        let c = container(json!({"name": "a", "resources": {
            "limits": {"memory": "64Mi"}, "requests": {"cpu": "250m", "memory": "32Mi"}}}));
        let get = |resource: &str, divisor: Option<&str>| {
            let sel = ResourceFieldSelector {
                resource: resource.into(),
                divisor: divisor.map(|d| Quantity(d.into())),
                container_name: None,
            };
            resource_value(&sel, &c, &alloc()).map_err(|e| e.to_string())
        };
        assert_eq!(
            get("requests.cpu", None),
            Ok("1".into()),
            "250m rounds up to 1"
        );
        assert_eq!(get("requests.cpu", Some("1m")), Ok("250".into()));
        assert_eq!(get("limits.memory", Some("1Mi")), Ok("64".into()));
        assert_eq!(get("limits.cpu", None), Ok("4".into()), "node allocatable");
        assert_eq!(
            get("limits.ephemeral-storage", Some("1Gi")),
            Ok("100".into())
        );
        assert_eq!(get("requests.ephemeral-storage", None), Ok("0".into()));
        assert_eq!(
            get("limits.gpu", None),
            Err("unsupported container resource : limits.gpu".into())
        );
    }

    #[test]
    fn downward_metadata_formats_whole_maps_as_sorted_quoted_lines() {
        let p = pod();
        assert_eq!(
            metadata_field(&p, "metadata.labels").expect("labels"),
            "app=\"shop\"\ntier=\"front\""
        );
        assert_eq!(
            metadata_field(&p, "metadata.annotations").expect("annotations"),
            "note=\"a \\\"b\\\"\""
        );
        assert_eq!(
            metadata_field(&p, "metadata.labels['missing']").expect("missing"),
            ""
        );
        assert!(metadata_field(&p, "spec.nodeName").is_err());
        assert_eq!(pod_field(&p, "spec.nodeName", AT).expect("node"), "node-1");
        assert_eq!(
            pod_field(&p, "spec.serviceAccountName", AT).expect("sa"),
            "robot"
        );
        assert_eq!(
            pod_field(&p, "status.hostIP", AT).expect("host"),
            "192.168.1.2"
        );
    }
}
