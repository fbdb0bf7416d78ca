//! Ephemeral containers (`spec.ephemeralContainers`), as Kubernetes validates them: added
//! only through the pod's `ephemeralcontainers` subresource, never on create nor in a
//! template, never changed or removed once added, and without the fields that make no
//! sense for a container that is never restarted and serves no traffic.

use std::collections::HashSet;

use serde_json::Value;

use super::{child, forbidden, get, get_array, get_str, index, FieldError, FieldErrorKind};

/// What an ephemeral container may not have (`validateFieldAllowList` of the
/// EphemeralContainerCommon fields Kubernetes leaves out).
const NOT_ALLOWED: &[&str] = &[
    "lifecycle",
    "livenessProbe",
    "ports",
    "readinessProbe",
    "resizePolicy",
    "resources",
    "restartPolicy",
    "startupProbe",
];

const NOT_FOR_EPHEMERAL: &str = "cannot be set for an Ephemeral Container";

/// Set to something other than its zero value (Go's reflection test of the allow list).
fn is_set(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) => false,
        Some(Value::Object(m)) => m.values().any(|v| is_set(Some(v))),
        Some(Value::Array(a)) => !a.is_empty(),
        Some(Value::String(s)) => !s.is_empty(),
        Some(_) => true,
    }
}

/// The rules of ephemeral containers beyond those of every container: names unique
/// among all the pod's containers (`names` holds the others), the allow list, no
/// subPath mounts, and a target that is one of the pod's containers.
pub(crate) fn validate_ephemeral_containers(
    spec: &Value,
    path: &str,
    names: &mut HashSet<String>,
    errs: &mut Vec<FieldError>,
) {
    let targets: HashSet<&str> = get_array(spec, "containers")
        .iter()
        .chain(get_array(spec, "initContainers"))
        .map(|c| get_str(c, "name"))
        .collect();
    let list_path = child(path, "ephemeralContainers");
    for (i, c) in get_array(spec, "ephemeralContainers").iter().enumerate() {
        let p = index(&list_path, i);
        super::validate_container(c, &p, names, errs);
        for name in NOT_ALLOWED {
            if is_set(c.get(*name)) {
                errs.push(forbidden(child(&p, name), NOT_FOR_EPHEMERAL));
            }
        }
        for (j, m) in get_array(c, "volumeMounts").iter().enumerate() {
            let mp = index(&child(&p, "volumeMounts"), j);
            for name in ["subPath", "subPathExpr"] {
                if is_set(m.get(name)) {
                    errs.push(forbidden(child(&mp, name), NOT_FOR_EPHEMERAL));
                }
            }
        }
        if let Some(target) = get(c, "targetContainerName").and_then(Value::as_str) {
            if !target.is_empty() && !targets.contains(target) {
                errs.push(FieldError {
                    field: child(&p, "targetContainerName"),
                    kind: FieldErrorKind::NotFound,
                    value: Some(super::render_value(&Value::from(target))),
                    detail: String::new(),
                });
            }
        }
    }
}

/// A pod is created without ephemeral containers (`ValidatePodCreate`).
pub(crate) fn validate_none_on_create(spec: &Value, path: &str, errs: &mut Vec<FieldError>) {
    if !get_array(spec, "ephemeralContainers").is_empty() {
        errs.push(forbidden(
            child(path, "ephemeralContainers"),
            "cannot have ephemeral containers on create",
        ));
    }
}

/// A pod template has none either (`ValidatePodTemplateSpec`).
pub(crate) fn validate_none_in_template(spec: &Value, path: &str, errs: &mut Vec<FieldError>) {
    if !get_array(spec, "ephemeralContainers").is_empty() {
        errs.push(forbidden(
            child(path, "ephemeralContainers"),
            "ephemeral containers not allowed in pod template",
        ));
    }
}

/// Through the subresource, ephemeral containers are only added: each one the pod had
/// is still there, unchanged (`ValidatePodEphemeralContainersUpdate`).
pub(crate) fn validate_only_added(new: &Value, old: &Value, errs: &mut Vec<FieldError>) {
    let path = "spec.ephemeralContainers";
    let new_list = get_array(new, "ephemeralContainers");
    for old_c in get_array(old, "ephemeralContainers") {
        let name = get_str(old_c, "name");
        match new_list.iter().find(|c| get_str(c, "name") == name) {
            None => errs.push(forbidden(
                path,
                format!("existing ephemeral containers \"{name}\" may not be removed\n"),
            )),
            Some(c) if super::normalize(c) != super::normalize(old_c) => {
                let mut changed = Vec::new();
                super::diff_paths(c, old_c, name, &mut changed);
                errs.push(forbidden(
                    path,
                    format!(
                        "existing ephemeral containers \"{name}\" may not be changed\n  changed: {}",
                        changed.join(", ")
                    ),
                ))
            }
            Some(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn errors(spec: Value) -> Vec<String> {
        let mut names = HashSet::from(["app".to_string()]);
        let mut errs = Vec::new();
        validate_ephemeral_containers(&spec, "spec", &mut names, &mut errs);
        errs.iter().map(FieldError::message).collect()
    }

    #[test]
    fn an_ephemeral_container_has_a_unique_name_a_real_target_and_no_serving_fields() {
        let spec = json!({
            "containers": [{"name": "app", "image": "busybox"}],
            "ephemeralContainers": [
                {"name": "app", "image": "busybox"},
                {"name": "dbg", "image": "busybox", "targetContainerName": "nope",
                 "ports": [{"containerPort": 80}], "resources": {"limits": {"cpu": "1"}},
                 "volumeMounts": [{"name": "v", "mountPath": "/v", "subPath": "x"}]},
                {"name": "ok", "image": "busybox", "targetContainerName": "app", "resources": {}}
            ]
        });
        assert_eq!(
            errors(spec),
            vec![
                "spec.ephemeralContainers[0].name: Duplicate value: \"app\"",
                "spec.ephemeralContainers[1].ports: Forbidden: cannot be set for an Ephemeral Container",
                "spec.ephemeralContainers[1].resources: Forbidden: cannot be set for an Ephemeral Container",
                "spec.ephemeralContainers[1].volumeMounts[0].subPath: Forbidden: cannot be set for an Ephemeral Container",
                "spec.ephemeralContainers[1].targetContainerName: Not found: \"nope\"",
            ]
        );
    }

    #[test]
    fn ephemeral_containers_are_only_ever_added() {
        let old = json!({"ephemeralContainers": [{"name": "a", "image": "busybox"}]});
        let mut errs = Vec::new();
        let added = json!({"ephemeralContainers": [
            {"name": "a", "image": "busybox"}, {"name": "b", "image": "busybox"}]});
        validate_only_added(&added, &old, &mut errs);
        assert!(errs.is_empty(), "{errs:?}");
        validate_only_added(&json!({"ephemeralContainers": []}), &old, &mut errs);
        let changed = json!({"ephemeralContainers": [{"name": "a", "image": "other"}]});
        validate_only_added(&changed, &old, &mut errs);
        let msgs: Vec<String> = errs.iter().map(FieldError::message).collect();
        assert_eq!(msgs[0], "spec.ephemeralContainers: Forbidden: existing ephemeral containers \"a\" may not be removed\n");
        assert!(msgs[1].starts_with("spec.ephemeralContainers: Forbidden: existing ephemeral containers \"a\" may not be changed"), "{msgs:?}");
    }
}
