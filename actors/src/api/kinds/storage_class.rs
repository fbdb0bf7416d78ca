//! storage.k8s.io/v1 StorageClass: how claims of a class get their volumes (the
//! provisioner, its parameters, the reclaim policy and when to bind). Cluster-scoped; its
//! provisioner, parameters, reclaim policy and binding mode are fixed once created.
//! Validation follows `ValidateStorageClass(Update)`. The class marked with
//! [`DEFAULT_CLASS_ANNOTATION`] is the one claims without a class get (`gateway::storage`).
//! skiff installs `local-path` as the default, served by its built-in provisioner
//! (`controllers::local_path`), as k3s does.

use chrono::{DateTime, Utc};
use k8s_openapi::api::storage::v1 as storage;
use serde_json::{json, Value};

use crate::api::resources::{schema_of, ResourceInfo, Storage};
use crate::api::strategy::{Typed, TypedStrategy};
use crate::api::table;
use crate::api::validation::{qualified_name_errors, FieldError};

pub const RESOURCE: &str = "storageclasses";

pub static INFO: ResourceInfo = ResourceInfo {
    group: "storage.k8s.io",
    version: "v1",
    name: RESOURCE,
    singular: "storageclass",
    kind: "StorageClass",
    namespaced: false,
    short_names: &["sc"],
    subresources: &[],
    has_status_subresource: false,
    field_selectors: &[],
    categories: &[],
    schema: Some(schema_of::<storage::StorageClass>),
    strategy: &Typed(StorageClassStrategy),
    storage: Storage::Stored,
};

/// Marks the default class (value "true").
pub const DEFAULT_CLASS_ANNOTATION: &str = "storageclass.kubernetes.io/is-default-class";
pub const BETA_DEFAULT_CLASS_ANNOTATION: &str = "storageclass.beta.kubernetes.io/is-default-class";
pub const IMMEDIATE: &str = "Immediate";
pub const WAIT_FOR_FIRST_CONSUMER: &str = "WaitForFirstConsumer";
const BINDING_MODES: &[&str] = &[IMMEDIATE, WAIT_FOR_FIRST_CONSUMER];
const RECLAIM_POLICIES: &[&str] = &["Delete", "Retain"];
/// Classes of statically made volumes name this provisioner.
pub const NO_PROVISIONER: &str = "kubernetes.io/no-provisioner";
/// The built-in local-path provisioner and its default class.
pub const LOCAL_PATH_PROVISIONER: &str = "skiff.io/local-path";
pub const LOCAL_PATH_CLASS: &str = "local-path";
const MAX_PARAMETERS_SIZE: usize = 256 * 1024;
const MAX_PROVISIONER_LENGTH: usize = 63;

/// The default class skiff installs at first start.
pub fn local_path_class() -> Value {
    json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
        "metadata": {"name": LOCAL_PATH_CLASS,
            "annotations": {DEFAULT_CLASS_ANNOTATION: "true"}},
        "provisioner": LOCAL_PATH_PROVISIONER,
        "reclaimPolicy": "Delete",
        "volumeBindingMode": WAIT_FOR_FIRST_CONSUMER})
}

/// Whether a class is marked default (`IsDefaultAnnotation`).
pub fn is_default(class: &storage::StorageClass) -> bool {
    let a = class.metadata.annotations.as_ref();
    [DEFAULT_CLASS_ANNOTATION, BETA_DEFAULT_CLASS_ANNOTATION]
        .iter()
        .any(|k| a.and_then(|a| a.get(*k)).map(String::as_str) == Some("true"))
}

/// The binding mode, Immediate when unset.
pub fn binding_mode(class: &storage::StorageClass) -> &str {
    class.volume_binding_mode.as_deref().unwrap_or(IMMEDIATE)
}

#[derive(Debug)]
pub struct StorageClassStrategy;

impl TypedStrategy for StorageClassStrategy {
    type Object = storage::StorageClass;
    const KIND: &'static str = "StorageClass";
    const API_VERSION: &'static str = "storage.k8s.io/v1";

    fn has_generation(&self) -> bool {
        false
    }

    fn default(&self, c: &mut storage::StorageClass) {
        c.reclaim_policy.get_or_insert_with(|| "Delete".into());
        c.volume_binding_mode
            .get_or_insert_with(|| IMMEDIATE.into());
    }

    fn validate(
        &self,
        c: &storage::StorageClass,
        old: Option<&storage::StorageClass>,
    ) -> Vec<FieldError> {
        let mut errs = Vec::new();
        if c.provisioner.is_empty() {
            errs.push(FieldError::required("provisioner"));
        } else {
            for msg in qualified_name_errors(&c.provisioner.to_lowercase()) {
                errs.push(FieldError::invalid(
                    "provisioner",
                    &json!(c.provisioner),
                    msg,
                ));
            }
            if c.provisioner.len() > MAX_PROVISIONER_LENGTH {
                errs.push(FieldError::too_long("provisioner", MAX_PROVISIONER_LENGTH));
            }
        }
        if let Some(params) = &c.parameters {
            let mut total = 0;
            for (k, v) in params {
                if k.is_empty() {
                    errs.push(FieldError::invalid(
                        "parameters",
                        &json!(""),
                        "field can not be empty.",
                    ));
                }
                total += k.len() + v.len();
            }
            if total > MAX_PARAMETERS_SIZE {
                errs.push(FieldError::too_long("parameters", MAX_PARAMETERS_SIZE));
            }
        }
        match c.reclaim_policy.as_deref() {
            Some(p) if !RECLAIM_POLICIES.contains(&p) => errs.push(FieldError::not_supported(
                "reclaimPolicy",
                &json!(p),
                RECLAIM_POLICIES,
            )),
            _ => {}
        }
        match c.volume_binding_mode.as_deref() {
            None => errs.push(FieldError::required("volumeBindingMode")),
            Some(m) if !BINDING_MODES.contains(&m) => errs.push(FieldError::not_supported(
                "volumeBindingMode",
                &json!(m),
                BINDING_MODES,
            )),
            Some(_) => {}
        }
        for (i, term) in c.allowed_topologies.iter().flatten().enumerate() {
            let path = format!("allowedTopologies[{i}]");
            let exprs = term.match_label_expressions.as_deref().unwrap_or_default();
            if exprs.is_empty() {
                errs.push(FieldError {
                    detail: "must have at least one label expression".into(),
                    ..FieldError::required(format!("{path}.matchLabelExpressions"))
                });
            }
            for (j, e) in exprs.iter().enumerate() {
                let p = format!("{path}.matchLabelExpressions[{j}]");
                if e.values.is_empty() {
                    errs.push(FieldError {
                        detail: "must specify as least one value".into(),
                        ..FieldError::required(format!("{p}.values"))
                    });
                }
                if let Err(err) = crate::api::selector::validate_label_key(&e.key) {
                    errs.push(FieldError::invalid(
                        format!("{p}.key"),
                        &json!(e.key),
                        err.to_string(),
                    ));
                }
            }
        }
        if let Some(o) = &c.mount_options {
            if !o.is_empty() {
                errs.push(FieldError::forbidden(
                    "mountOptions",
                    "not supported by this server: its volumes are directories, mounted without options",
                ));
            }
        }
        if let Some(old) = old {
            if c.parameters != old.parameters {
                errs.push(FieldError::forbidden(
                    "parameters",
                    "updates to parameters are forbidden.",
                ));
            }
            if c.provisioner != old.provisioner {
                errs.push(FieldError::forbidden(
                    "provisioner",
                    "updates to provisioner are forbidden.",
                ));
            }
            if c.reclaim_policy != old.reclaim_policy {
                errs.push(FieldError::forbidden(
                    "reclaimPolicy",
                    "updates to reclaimPolicy are forbidden.",
                ));
            }
            if c.volume_binding_mode != old.volume_binding_mode {
                errs.push(FieldError::forbidden(
                    "volumeBindingMode",
                    "field is immutable",
                ));
            }
        }
        errs
    }

    fn columns(&self) -> Vec<Value> {
        vec![
            table::name_column(0),
            table::column("Provisioner", "string", 0, "provisioner indicates the type of the provisioner."),
            table::column("ReclaimPolicy", "string", 0, "reclaimPolicy controls the reclaimPolicy for dynamically provisioned PersistentVolumes of this storage class. Defaults to Delete."),
            table::column("VolumeBindingMode", "string", 0, "volumeBindingMode indicates how PersistentVolumeClaims should be provisioned and bound.  When unset, VolumeBindingImmediate is used. This field is only honored by servers that enable the VolumeScheduling feature."),
            table::column("AllowVolumeExpansion", "string", 0, "allowVolumeExpansion shows whether the storage class allow volume expand."),
            table::age_column(),
        ]
    }

    fn cells(&self, c: &storage::StorageClass, raw: &Value, now: DateTime<Utc>) -> Vec<Value> {
        let mut name = c.metadata.name.clone().unwrap_or_default();
        if is_default(c) {
            name.push_str(" (default)");
        }
        vec![
            json!(name),
            json!(c.provisioner),
            json!(c.reclaim_policy.as_deref().unwrap_or("Delete")),
            json!(binding_mode(c)),
            json!(c.allow_volume_expansion.unwrap_or(false).to_string()),
            table::age(raw, now),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::validation::validate_object;

    fn messages(obj: &Value, old: Option<&Value>) -> Vec<String> {
        validate_object(&INFO, obj, old)
            .iter()
            .map(FieldError::message)
            .collect()
    }

    fn defaulted(mut v: Value) -> Value {
        INFO.strategy.default(&mut v);
        v
    }

    #[test]
    fn the_local_path_class_is_valid_default_and_waits_for_a_consumer() {
        let c = defaulted(local_path_class());
        assert!(messages(&c, None).is_empty(), "{:?}", messages(&c, None));
        let cells = INFO.strategy.cells(&c, Utc::now());
        assert_eq!(
            &cells[..5],
            &[
                json!("local-path (default)"),
                json!("skiff.io/local-path"),
                json!("Delete"),
                json!("WaitForFirstConsumer"),
                json!("false")
            ]
        );
    }

    #[test]
    fn a_class_defaults_to_delete_and_immediate_and_needs_a_provisioner() {
        let c = defaulted(
            json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
            "metadata": {"name": "fast"}, "provisioner": ""}),
        );
        assert_eq!(c["reclaimPolicy"], "Delete");
        assert_eq!(c["volumeBindingMode"], "Immediate");
        assert_eq!(messages(&c, None), ["provisioner: Required value"]);
    }

    #[test]
    fn provisioner_policy_mode_and_parameters_are_fixed() {
        let old = defaulted(local_path_class());
        let mut new = old.clone();
        new["provisioner"] = json!("example.com/other");
        new["reclaimPolicy"] = json!("Retain");
        new["volumeBindingMode"] = json!("Immediate");
        new["parameters"] = json!({"a": "b"});
        assert_eq!(
            messages(&new, Some(&old)),
            [
                "parameters: Forbidden: updates to parameters are forbidden.",
                "provisioner: Forbidden: updates to provisioner are forbidden.",
                "reclaimPolicy: Forbidden: updates to reclaimPolicy are forbidden.",
                "volumeBindingMode: Forbidden: field is immutable",
            ]
        );
        let mut annotated = old.clone();
        annotated["metadata"]["annotations"][DEFAULT_CLASS_ANNOTATION] = json!("false");
        assert!(messages(&annotated, Some(&old)).is_empty());
    }
}
