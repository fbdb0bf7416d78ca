//! core/v1 ConfigMap: configuration as string (`data`) and binary (`binaryData`) entries
//! whose keys become file names in volumes. Validation follows Kubernetes'
//! `ValidateConfigMap`/`ValidateConfigMapUpdate`: config keys, no key in both maps, the
//! 1 MiB total, and nothing but metadata changes once `immutable` is set.

use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1 as core;
use serde_json::{json, Value};

use crate::api::resources::{schema_of, ResourceInfo, Storage};
use crate::api::strategy::{Typed, TypedStrategy};
use crate::api::table;
use crate::api::validation::{config_key_errors, FieldError};

pub const RESOURCE: &str = "configmaps";

/// Kubernetes' `MaxSecretSize`, which bounds ConfigMaps too: the sum of the values.
pub const MAX_SIZE: usize = 1024 * 1024;

/// The message of the `immutable` rules, shared with Secrets.
pub const IMMUTABLE_SET: &str = "field is immutable when `immutable` is set";

pub static INFO: ResourceInfo = ResourceInfo {
    group: "",
    version: "v1",
    name: RESOURCE,
    singular: "configmap",
    kind: "ConfigMap",
    namespaced: true,
    short_names: &["cm"],
    subresources: &[],
    has_status_subresource: false,
    field_selectors: &[],
    categories: &[],
    schema: Some(schema_of::<core::ConfigMap>),
    strategy: &Typed(ConfigMapStrategy),
    storage: Storage::Stored,
};

#[derive(Debug)]
pub struct ConfigMapStrategy;

/// Invalid config keys of one map, with the map's field path.
pub(crate) fn key_errors<'a>(
    keys: impl Iterator<Item = &'a String>,
    path: &str,
    errs: &mut Vec<FieldError>,
) {
    for k in keys {
        for msg in config_key_errors(k) {
            errs.push(FieldError::invalid(format!("{path}[{k}]"), &json!(k), msg));
        }
    }
}

impl TypedStrategy for ConfigMapStrategy {
    type Object = core::ConfigMap;
    const KIND: &'static str = "ConfigMap";
    const API_VERSION: &'static str = "v1";

    fn has_generation(&self) -> bool {
        false
    }

    fn validate(&self, cm: &core::ConfigMap, old: Option<&core::ConfigMap>) -> Vec<FieldError> {
        let mut errs = Vec::new();
        if let Some(old) = old.filter(|o| o.immutable == Some(true)) {
            if cm.immutable != Some(true) {
                errs.push(FieldError::forbidden("immutable", IMMUTABLE_SET));
            }
            if cm.data != old.data {
                errs.push(FieldError::forbidden("data", IMMUTABLE_SET));
            }
            if cm.binary_data != old.binary_data {
                errs.push(FieldError::forbidden("binaryData", IMMUTABLE_SET));
            }
        }
        let mut total = 0;
        if let Some(data) = &cm.data {
            key_errors(data.keys(), "data", &mut errs);
            for (k, v) in data {
                if cm.binary_data.as_ref().is_some_and(|b| b.contains_key(k)) {
                    errs.push(FieldError::invalid(
                        format!("data[{k}]"),
                        &json!(k),
                        "duplicate of key present in binaryData",
                    ));
                }
                total += v.len();
            }
        }
        if let Some(binary) = &cm.binary_data {
            key_errors(binary.keys(), "binaryData", &mut errs);
            total += binary.values().map(|v| v.0.len()).sum::<usize>();
        }
        if total > MAX_SIZE {
            // Kubernetes names no field: the limit is the whole object's.
            errs.push(FieldError::too_long("", MAX_SIZE));
        }
        errs
    }

    fn columns(&self) -> Vec<Value> {
        vec![
            table::name_column(0),
            table::column("Data", "string", 0, "Data contains the configuration data. Each key must consist of alphanumeric characters, '-', '_' or '.'. Values with non-UTF-8 byte sequences must use the BinaryData field. The keys stored in Data must not overlap with the keys in the BinaryData field, this is enforced during validation process."),
            table::age_column(),
        ]
    }

    fn cells(&self, cm: &core::ConfigMap, raw: &Value, now: DateTime<Utc>) -> Vec<Value> {
        let n = cm.data.as_ref().map_or(0, |d| d.len())
            + cm.binary_data.as_ref().map_or(0, |d| d.len());
        vec![table::name(raw), json!(n), table::age(raw, now)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::validation::validate_object;

    fn cm(extra: Value) -> Value {
        let mut o = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "c", "namespace": "default"}});
        for (k, v) in extra.as_object().cloned().unwrap_or_default() {
            o[k] = v;
        }
        o
    }

    fn messages(obj: &Value, old: Option<&Value>) -> Vec<String> {
        validate_object(&INFO, obj, old)
            .iter()
            .map(FieldError::message)
            .collect()
    }

    #[test]
    fn keys_are_config_keys_and_not_in_both_maps() {
        assert!(messages(&cm(json!({"data": {"a.b_C-1": "x"}})), None).is_empty());
        assert_eq!(
            messages(&cm(json!({"data": {"a/b": "x", "..c": "y"}})), None),
            vec![
                "data[..c]: Invalid value: \"..c\": must not start with '..'",
                "data[a/b]: Invalid value: \"a/b\": a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')",
            ]
        );
        assert_eq!(
            messages(
                &cm(json!({"data": {"k": "x"}, "binaryData": {"k": "eA=="}})),
                None
            ),
            vec!["data[k]: Invalid value: \"k\": duplicate of key present in binaryData"]
        );
    }

    #[test]
    fn the_values_together_stay_within_one_mebibyte() {
        let big = "x".repeat(MAX_SIZE / 2 + 1);
        assert_eq!(
            messages(&cm(json!({"data": {"a": big, "b": big}})), None),
            vec![": Too long: may not be more than 1048576 bytes"]
        );
    }

    #[test]
    fn an_immutable_map_keeps_its_data_and_its_immutability() {
        let old = cm(json!({"data": {"a": "1"}, "immutable": true}));
        let mut relabelled = old.clone();
        relabelled["metadata"]["labels"] = json!({"x": "y"});
        assert!(messages(&relabelled, Some(&old)).is_empty());
        let changed = cm(json!({"data": {"a": "2"}}));
        assert_eq!(
            messages(&changed, Some(&old)),
            vec![
                "immutable: Forbidden: field is immutable when `immutable` is set",
                "data: Forbidden: field is immutable when `immutable` is set",
            ]
        );
        // A mutable map may change, and become immutable.
        let mutable = cm(json!({"data": {"a": "1"}}));
        assert!(messages(&old, Some(&mutable)).is_empty());
    }

    #[test]
    fn the_table_counts_both_maps() {
        let obj = cm(json!({"data": {"a": "1"}, "binaryData": {"b": "eA=="}}));
        let typed: core::ConfigMap = crate::api::strategy::typed(&obj).expect("decodes");
        let row = ConfigMapStrategy.cells(&typed, &obj, Utc::now());
        assert_eq!(row[1], json!(2));
        let names: Vec<Value> = ConfigMapStrategy
            .columns()
            .iter()
            .map(|c| c["name"].clone())
            .collect();
        assert_eq!(names, [json!("Name"), json!("Data"), json!("Age")]);
    }
}
