//! core/v1 Secret: like a ConfigMap, but base64 `data` only, with `stringData` folded into
//! `data` on every write (as kube-apiserver's v1 conversion does, so `stringData` is never
//! stored or shown), and a `type` whose required keys Kubernetes' `ValidateSecret` checks.
//! The store encrypts the objects of this resource at rest (`store::encryption`).

use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1 as core;
use k8s_openapi::ByteString;
use serde_json::{json, Value};

use super::config_map::{key_errors, IMMUTABLE_SET, MAX_SIZE};
use crate::api::resources::{schema_of, ResourceInfo, Storage};
use crate::api::strategy::{Typed, TypedStrategy};
use crate::api::table;
use crate::api::validation::FieldError;

pub const RESOURCE: &str = "secrets";

pub const OPAQUE: &str = "Opaque";
pub const SERVICE_ACCOUNT_TOKEN: &str = "kubernetes.io/service-account-token";
pub const DOCKERCFG: &str = "kubernetes.io/dockercfg";
pub const DOCKER_CONFIG_JSON: &str = "kubernetes.io/dockerconfigjson";
pub const BASIC_AUTH: &str = "kubernetes.io/basic-auth";
pub const SSH_AUTH: &str = "kubernetes.io/ssh-auth";
pub const TLS: &str = "kubernetes.io/tls";
pub const BOOTSTRAP_TOKEN: &str = "bootstrap.kubernetes.io/token";

/// The annotation naming a token secret's service account, and the one its uid goes in.
pub const SERVICE_ACCOUNT_NAME_KEY: &str = "kubernetes.io/service-account.name";
pub const SERVICE_ACCOUNT_UID_KEY: &str = "kubernetes.io/service-account.uid";

/// The keys of a service-account-token secret the token controller fills.
pub const TOKEN_KEY: &str = "token";
pub const CA_CERT_KEY: &str = "ca.crt";
pub const NAMESPACE_KEY: &str = "namespace";

pub static INFO: ResourceInfo = ResourceInfo {
    group: "",
    version: "v1",
    name: RESOURCE,
    singular: "secret",
    kind: "Secret",
    namespaced: true,
    short_names: &[],
    subresources: &[],
    has_status_subresource: false,
    field_selectors: &["type"],
    categories: &[],
    schema: Some(schema_of::<core::Secret>),
    strategy: &Typed(SecretStrategy),
    storage: Storage::Stored,
};

#[derive(Debug)]
pub struct SecretStrategy;

/// `data[<key>]`.
fn data_key(key: &str) -> String {
    format!("data[{key}]")
}

/// A docker config key must hold a JSON object (Go's `json.Unmarshal` into a map).
fn check_json_object(secret: &core::Secret, key: &str, errs: &mut Vec<FieldError>) {
    let Some(bytes) = secret.data.as_ref().and_then(|d| d.get(key)) else {
        errs.push(FieldError::required(data_key(key)));
        return;
    };
    let detail = match serde_json::from_slice::<Value>(&bytes.0) {
        Ok(Value::Object(_)) => return,
        Ok(other) => format!(
            "json: cannot unmarshal {} into Go value of type map[string]interface {{}}",
            go_json_type(&other)
        ),
        Err(e) => e.to_string(),
    };
    errs.push(FieldError::invalid(
        data_key(key),
        &json!("<secret contents redacted>"),
        detail,
    ));
}

fn go_json_type(v: &Value) -> &'static str {
    match v {
        Value::Array(_) => "array",
        Value::String(_) => "string",
        Value::Number(_) => "number",
        Value::Bool(_) => "bool",
        _ => "null",
    }
}

impl TypedStrategy for SecretStrategy {
    type Object = core::Secret;
    const KIND: &'static str = "Secret";
    const API_VERSION: &'static str = "v1";

    fn has_generation(&self) -> bool {
        false
    }

    /// `stringData` entries overwrite `data` entries of the same key, then go; an unset
    /// type is Opaque.
    fn default(&self, secret: &mut core::Secret) {
        if let Some(strings) = secret.string_data.take() {
            let data = secret.data.get_or_insert_with(Default::default);
            for (k, v) in strings {
                data.insert(k, ByteString(v.into_bytes()));
            }
        }
        if secret.type_.as_deref().is_none_or(str::is_empty) {
            secret.type_ = Some(OPAQUE.to_string());
        }
    }

    fn validate(&self, secret: &core::Secret, old: Option<&core::Secret>) -> Vec<FieldError> {
        let mut errs = Vec::new();
        if let Some(old) = old {
            if secret.type_ != old.type_ {
                errs.push(FieldError::immutable("type", &json!(secret.type_)));
            }
            if old.immutable == Some(true) {
                if secret.immutable != Some(true) {
                    errs.push(FieldError::forbidden("immutable", IMMUTABLE_SET));
                }
                if secret.data != old.data {
                    errs.push(FieldError::forbidden("data", IMMUTABLE_SET));
                }
            }
        }
        let data = secret.data.clone().unwrap_or_default();
        key_errors(data.keys(), "data", &mut errs);
        if data.values().map(|v| v.0.len()).sum::<usize>() > MAX_SIZE {
            errs.push(FieldError::too_long("data", MAX_SIZE));
        }
        match secret.type_.as_deref().unwrap_or(OPAQUE) {
            SERVICE_ACCOUNT_TOKEN => {
                let named = secret
                    .metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(SERVICE_ACCOUNT_NAME_KEY))
                    .is_some_and(|n| !n.is_empty());
                if !named {
                    errs.push(FieldError::required(format!(
                        "metadata.annotations[{SERVICE_ACCOUNT_NAME_KEY}]"
                    )));
                }
            }
            DOCKERCFG => check_json_object(secret, ".dockercfg", &mut errs),
            DOCKER_CONFIG_JSON => check_json_object(secret, ".dockerconfigjson", &mut errs),
            // Either may be empty, but one of them must be there.
            BASIC_AUTH if !data.contains_key("username") && !data.contains_key("password") => {
                errs.push(FieldError::required(data_key("username")));
                errs.push(FieldError::required(data_key("password")));
            }
            SSH_AUTH if data.get("ssh-privatekey").is_none_or(|v| v.0.is_empty()) => {
                errs.push(FieldError::required(data_key("ssh-privatekey")));
            }
            TLS => {
                for key in ["tls.crt", "tls.key"] {
                    if !data.contains_key(key) {
                        errs.push(FieldError::required(data_key(key)));
                    }
                }
            }
            // Opaque and types Kubernetes does not know carry no rules.
            _ => {}
        }
        errs
    }

    fn columns(&self) -> Vec<Value> {
        vec![
            table::name_column(0),
            table::column("Type", "string", 0, "Used to facilitate programmatic handling of secret data. More info: https://kubernetes.io/docs/concepts/configuration/secret/#secret-types"),
            table::column("Data", "string", 0, "Data contains the secret data. Each key must consist of alphanumeric characters, '-', '_' or '.'. The serialized form of the secret data is a base64 encoded string, representing the arbitrary (possibly non-string) data value here. Described in https://tools.ietf.org/html/rfc4648#section-4"),
            table::age_column(),
        ]
    }

    fn cells(&self, secret: &core::Secret, raw: &Value, now: DateTime<Utc>) -> Vec<Value> {
        vec![
            table::name(raw),
            json!(secret.type_.as_deref().unwrap_or(OPAQUE)),
            json!(secret.data.as_ref().map_or(0, |d| d.len())),
            table::age(raw, now),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::validation::validate_object;
    use base64::Engine as _;

    fn secret(extra: Value) -> Value {
        let mut o = json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "s", "namespace": "default"}});
        for (k, v) in extra.as_object().cloned().unwrap_or_default() {
            o[k] = v;
        }
        INFO.strategy.default(&mut o);
        o
    }

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    fn messages(obj: &Value, old: Option<&Value>) -> Vec<String> {
        validate_object(&INFO, obj, old)
            .iter()
            .map(FieldError::message)
            .collect()
    }

    #[test]
    fn string_data_is_folded_into_data_and_wins() {
        let s = secret(json!({"data": {"a": b64("old"), "b": b64("kept")},
            "stringData": {"a": "new"}}));
        assert_eq!(s["data"], json!({"a": b64("new"), "b": b64("kept")}));
        assert!(s.get("stringData").is_none());
        assert_eq!(s["type"], OPAQUE);
        assert!(messages(&s, None).is_empty());
    }

    #[test]
    fn each_type_requires_its_keys() {
        assert_eq!(
            messages(
                &secret(json!({"type": TLS, "data": {"tls.crt": b64("c")}})),
                None
            ),
            vec!["data[tls.key]: Required value"]
        );
        assert_eq!(
            messages(&secret(json!({"type": BASIC_AUTH})), None),
            vec![
                "data[username]: Required value",
                "data[password]: Required value"
            ]
        );
        assert!(messages(
            &secret(json!({"type": BASIC_AUTH, "stringData": {"password": ""}})),
            None
        )
        .is_empty());
        assert_eq!(
            messages(
                &secret(json!({"type": SSH_AUTH, "stringData": {"ssh-privatekey": ""}})),
                None
            ),
            vec!["data[ssh-privatekey]: Required value"]
        );
        assert_eq!(
            messages(&secret(json!({"type": SERVICE_ACCOUNT_TOKEN})), None),
            vec!["metadata.annotations[kubernetes.io/service-account.name]: Required value"]
        );
        assert_eq!(
            messages(&secret(json!({"type": DOCKER_CONFIG_JSON})), None),
            vec!["data[.dockerconfigjson]: Required value"]
        );
        assert_eq!(
            messages(
                &secret(json!({"type": DOCKERCFG, "stringData": {".dockercfg": "[1]"}})),
                None
            ),
            vec!["data[.dockercfg]: Invalid value: \"<secret contents redacted>\": json: cannot unmarshal array into Go value of type map[string]interface {}"]
        );
        assert!(messages(
            &secret(json!({"type": DOCKER_CONFIG_JSON,
                "stringData": {".dockerconfigjson": "{\"auths\":{}}"}})),
            None
        )
        .is_empty());
    }

    #[test]
    fn data_is_bounded_by_one_mebibyte_and_keys_are_config_keys() {
        let big = "x".repeat(MAX_SIZE + 1);
        assert_eq!(
            messages(&secret(json!({"stringData": {"a": big}})), None),
            vec!["data: Too long: may not be more than 1048576 bytes"]
        );
        assert_eq!(
            messages(&secret(json!({"stringData": {"..": "x"}})), None),
            vec!["data[..]: Invalid value: \"..\": must not be '..'"]
        );
    }

    #[test]
    fn the_type_never_changes_and_immutable_data_stays() {
        let old = secret(json!({"stringData": {"a": "1"}, "immutable": true}));
        let mut retyped = old.clone();
        retyped["type"] = json!("example.com/mine");
        assert_eq!(
            messages(&retyped, Some(&old)),
            vec!["type: Invalid value: \"example.com/mine\": field is immutable"]
        );
        let changed = secret(json!({"stringData": {"a": "2"}, "immutable": true}));
        assert_eq!(
            messages(&changed, Some(&old)),
            vec!["data: Forbidden: field is immutable when `immutable` is set"]
        );
    }
}
