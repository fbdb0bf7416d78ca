//! What PersistentVolumes, PersistentVolumeClaims and StorageClasses share in
//! `pkg/apis/core/validation` and `pkg/apis/storage/validation`: access modes, the storage
//! quantity, volume modes, class names and node selectors (a PV's node affinity, a class's
//! allowed topologies).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1 as core;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use serde_json::{json, Value};

use super::{dns1123_subdomain_errors, parse_quantity, FieldError};
use crate::api::selector::validate_label_key;

pub const READ_WRITE_ONCE: &str = "ReadWriteOnce";
pub const READ_ONLY_MANY: &str = "ReadOnlyMany";
pub const READ_WRITE_MANY: &str = "ReadWriteMany";
pub const READ_WRITE_ONCE_POD: &str = "ReadWriteOncePod";
/// Sorted, as Kubernetes lists them in "supported values".
pub const ACCESS_MODES: &[&str] = &[
    READ_ONLY_MANY,
    READ_WRITE_MANY,
    READ_WRITE_ONCE,
    READ_WRITE_ONCE_POD,
];
pub const VOLUME_MODES: &[&str] = &["Block", "Filesystem"];
pub const STORAGE: &str = "storage";
const NODE_SELECTOR_OPERATORS: &[&str] = &["DoesNotExist", "Exists", "Gt", "In", "Lt", "NotIn"];

/// `ValidatePersistentVolumeClaimSpec`'s and the PV's access mode rules.
pub fn validate_access_modes(
    modes: Option<&Vec<String>>,
    path: &str,
    required_detail: &str,
    errs: &mut Vec<FieldError>,
) {
    let modes = modes.map(Vec::as_slice).unwrap_or_default();
    if modes.is_empty() {
        errs.push(FieldError {
            detail: required_detail.to_string(),
            ..FieldError::required(path)
        });
        return;
    }
    for m in modes {
        if !ACCESS_MODES.contains(&m.as_str()) {
            errs.push(FieldError::not_supported(path, &json!(m), ACCESS_MODES));
        }
    }
    if modes.len() > 1 && modes.iter().any(|m| m == READ_WRITE_ONCE_POD) {
        errs.push(FieldError::forbidden(
            path,
            "may not use ReadWriteOncePod with other access modes",
        ));
    }
}

/// The bytes of a quantity, if it parses.
pub fn quantity_bytes(q: &Quantity) -> Option<f64> {
    parse_quantity(&q.0)
}

/// `validateBasicResource`: a storage size is a valid quantity above zero.
pub fn validate_storage_size(q: &Quantity, path: &str, errs: &mut Vec<FieldError>) {
    match quantity_bytes(q) {
        None => errs.push(FieldError::invalid(
            path,
            &json!(q.0),
            "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'",
        )),
        Some(v) if v <= 0.0 => errs.push(FieldError::invalid(
            path,
            &json!(q.0),
            "must be greater than zero",
        )),
        Some(_) => {}
    }
}

/// The storage quantity of a capacity or request map.
pub fn storage_of(map: Option<&BTreeMap<String, Quantity>>) -> Option<f64> {
    map.and_then(|m| m.get(STORAGE)).and_then(quantity_bytes)
}

pub fn validate_volume_mode(mode: Option<&String>, path: &str, errs: &mut Vec<FieldError>) {
    if let Some(m) = mode {
        if !VOLUME_MODES.contains(&m.as_str()) {
            errs.push(FieldError::not_supported(path, &json!(m), VOLUME_MODES));
        }
    }
}

/// `ValidateClassName`: a non-empty class name is a DNS subdomain.
pub fn validate_class_name(name: Option<&String>, path: &str, errs: &mut Vec<FieldError>) {
    if let Some(n) = name.filter(|n| !n.is_empty()) {
        for msg in dns1123_subdomain_errors(n) {
            errs.push(FieldError::invalid(path, &json!(n), msg));
        }
    }
}

/// `ValidateNodeSelector`: at least one term, each requirement with a valid key, a known
/// operator and the values that operator wants.
pub fn validate_node_selector(sel: &core::NodeSelector, path: &str, errs: &mut Vec<FieldError>) {
    let terms_path = format!("{path}.nodeSelectorTerms");
    if sel.node_selector_terms.is_empty() {
        errs.push(FieldError {
            detail: "must have at least one node selector term".into(),
            ..FieldError::required(&terms_path)
        });
    }
    for (i, term) in sel.node_selector_terms.iter().enumerate() {
        let term_path = format!("{terms_path}[{i}]");
        for (j, r) in term.match_expressions.iter().flatten().enumerate() {
            let p = format!("{term_path}.matchExpressions[{j}]");
            validate_requirement(&r.key, &r.operator, r.values.as_ref(), &p, errs);
        }
        for (j, r) in term.match_fields.iter().flatten().enumerate() {
            let p = format!("{term_path}.matchFields[{j}]");
            if r.key != "metadata.name" {
                errs.push(FieldError::invalid(
                    format!("{p}.key"),
                    &json!(r.key),
                    "not a valid field selector key",
                ));
            }
            validate_requirement("metadata.name", &r.operator, r.values.as_ref(), &p, errs);
        }
    }
}

fn validate_requirement(
    key: &str,
    op: &str,
    values: Option<&Vec<String>>,
    path: &str,
    errs: &mut Vec<FieldError>,
) {
    if key != "metadata.name" {
        if let Err(e) = validate_label_key(key) {
            errs.push(FieldError::invalid(
                format!("{path}.key"),
                &json!(key),
                e.to_string(),
            ));
        }
    }
    let n = values.map_or(0, Vec::len);
    let values_path = format!("{path}.values");
    match op {
        "In" | "NotIn" if n == 0 => errs.push(FieldError {
            detail: "must be specified when `operator` is 'In' or 'NotIn'".into(),
            ..FieldError::required(&values_path)
        }),
        "Exists" | "DoesNotExist" if n > 0 => errs.push(FieldError::forbidden(
            &values_path,
            "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
        )),
        "Gt" | "Lt" if n != 1 => errs.push(FieldError {
            detail: "must be specified single value when `operator` is 'Lt' or 'Gt'".into(),
            ..FieldError::required(&values_path)
        }),
        o if !NODE_SELECTOR_OPERATORS.contains(&o) => errs.push(FieldError::not_supported(
            format!("{path}.operator"),
            &json!(o),
            NODE_SELECTOR_OPERATORS,
        )),
        _ => {}
    }
}

/// `kubectl get`'s short form of access modes (`RWO,ROX`), in Kubernetes' order.
pub fn access_modes_text(modes: Option<&Vec<String>>) -> String {
    let modes = modes.map(Vec::as_slice).unwrap_or_default();
    let has = |m: &str| modes.iter().any(|x| x == m);
    [
        (READ_WRITE_ONCE, "RWO"),
        (READ_ONLY_MANY, "ROX"),
        (READ_WRITE_MANY, "RWX"),
        (READ_WRITE_ONCE_POD, "RWOP"),
    ]
    .iter()
    .filter(|(m, _)| has(m))
    .map(|(_, s)| *s)
    .collect::<Vec<_>>()
    .join(",")
}

/// A quantity as the printers show it (the stored string).
pub fn quantity_text(map: Option<&BTreeMap<String, Quantity>>) -> Value {
    json!(map
        .and_then(|m| m.get(STORAGE))
        .map(|q| q.0.clone())
        .unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_modes_are_required_known_and_read_write_once_pod_alone() {
        let mut errs = Vec::new();
        validate_access_modes(None, "spec.accessModes", "", &mut errs);
        validate_access_modes(
            Some(&vec!["ReadWriteSome".into()]),
            "spec.accessModes",
            "",
            &mut errs,
        );
        validate_access_modes(
            Some(&vec![READ_WRITE_ONCE_POD.into(), READ_WRITE_ONCE.into()]),
            "spec.accessModes",
            "",
            &mut errs,
        );
        let msgs: Vec<String> = errs.iter().map(FieldError::message).collect();
        assert_eq!(
            msgs,
            [
                "spec.accessModes: Required value",
                "spec.accessModes: Unsupported value: \"ReadWriteSome\": supported values: \"ReadOnlyMany\", \"ReadWriteMany\", \"ReadWriteOnce\", \"ReadWriteOncePod\"",
                "spec.accessModes: Forbidden: may not use ReadWriteOncePod with other access modes",
            ]
        );
    }

    #[test]
    fn access_modes_print_short_in_kubernetes_order() {
        let modes = vec![READ_WRITE_MANY.into(), READ_WRITE_ONCE.into()];
        assert_eq!(access_modes_text(Some(&modes)), "RWO,RWX");
        assert_eq!(access_modes_text(None), "");
    }
}
