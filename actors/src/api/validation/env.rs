//! Validation of a container's `env` and `envFrom`, after Kubernetes'
//! pkg/apis/core/validation (`ValidateEnv`, `validateEnvVarValueFrom`, `ValidateEnvFrom`):
//! variable names, exactly one `valueFrom` source and never together with `value`, the
//! downward API fields an env var may read, resource selectors and their divisors,
//! ConfigMap and Secret key selectors.

use k8s_openapi::api::core::v1::{Container, EnvVar, ObjectFieldSelector, ResourceFieldSelector};
use serde_json::Value;

use super::{
    child, config_key_errors, dns1123_subdomain_errors, env_var_name_errors, forbidden, index,
    invalid, not_supported, push_all, qualified_name_errors, required, FieldError,
};

/// What an env var's `fieldRef` may read.
pub const ENV_FIELD_PATHS: &[&str] = &[
    "metadata.name",
    "metadata.namespace",
    "metadata.uid",
    "spec.nodeName",
    "spec.serviceAccountName",
    "status.hostIP",
    "status.hostIPs",
    "status.podIP",
    "status.podIPs",
];

/// What a downwardAPI volume file's `fieldRef` may read.
pub const VOLUME_FIELD_PATHS: &[&str] = &[
    "metadata.annotations",
    "metadata.labels",
    "metadata.name",
    "metadata.namespace",
    "metadata.uid",
];

const RESOURCES: &[&str] = &[
    "limits.cpu",
    "limits.ephemeral-storage",
    "limits.memory",
    "requests.cpu",
    "requests.ephemeral-storage",
    "requests.memory",
];
const HUGEPAGES_PREFIXES: &[&str] = &["limits.hugepages-", "requests.hugepages-"];
const CPU_DIVISORS: &[&str] = &["1m", "1"];
const BYTE_DIVISORS: &[&str] = &[
    "1", "1k", "1M", "1G", "1T", "1P", "1E", "1Ki", "1Mi", "1Gi", "1Ti", "1Pi", "1Ei",
];

fn text(s: &str) -> Value {
    Value::from(s)
}

/// `metadata.labels['k']` → (`metadata.labels`, `k`).
fn split_subscript(path: &str) -> Option<(&str, &str)> {
    let (field, rest) = path.split_once("['")?;
    let key = rest.strip_suffix("']")?;
    Some((field, key))
}

/// `validateObjectFieldSelector`. An unset apiVersion is the default, `v1`.
pub fn validate_field_selector(
    fs: &ObjectFieldSelector,
    allowed: &[&str],
    path: &str,
    errs: &mut Vec<FieldError>,
) {
    let version = fs.api_version.as_deref().unwrap_or("v1");
    if version.is_empty() {
        errs.push(required(child(path, "apiVersion"), ""));
        return;
    }
    if fs.field_path.is_empty() {
        errs.push(required(child(path, "fieldPath"), ""));
        return;
    }
    if version != "v1" {
        errs.push(invalid(
            child(path, "fieldPath"),
            &text(&fs.field_path),
            format!("error converting fieldPath: unsupported pod version: {version}"),
        ));
        return;
    }
    if let Some((field, key)) = split_subscript(&fs.field_path) {
        match field {
            "metadata.annotations" => push_all(
                errs,
                path,
                &text(key),
                qualified_name_errors(&key.to_lowercase()),
            ),
            "metadata.labels" => push_all(errs, path, &text(key), qualified_name_errors(key)),
            other => errs.push(invalid(path, &text(other), "does not support subscript")),
        }
    } else if !allowed.contains(&fs.field_path.as_str()) {
        errs.push(not_supported(
            child(path, "fieldPath"),
            &text(&fs.field_path),
            allowed,
        ));
    }
}

/// `validateContainerResourceFieldSelector` (`volume`: a downwardAPI file, which must
/// name its container).
pub fn validate_resource_selector(
    fs: &ResourceFieldSelector,
    path: &str,
    volume: bool,
    errs: &mut Vec<FieldError>,
) {
    let resource = fs.resource.as_str();
    if volume && fs.container_name.as_deref().unwrap_or_default().is_empty() {
        errs.push(required(child(path, "containerName"), ""));
    } else if resource.is_empty() {
        errs.push(required(child(path, "resource"), ""));
    } else if !RESOURCES.contains(&resource)
        && !HUGEPAGES_PREFIXES.iter().any(|p| resource.starts_with(p))
    {
        errs.push(not_supported(
            child(path, "resource"),
            &text(resource),
            RESOURCES,
        ));
    }
    let Some(divisor) = fs.divisor.as_ref().map(|d| d.0.as_str()) else {
        return;
    };
    if crate::api::validation::parse_quantity(divisor) == Some(0.0) {
        return;
    }
    let (allowed, what): (&[&str], &str) = match resource {
        "limits.cpu" | "requests.cpu" => (CPU_DIVISORS, "only divisor's values 1m and 1 are supported with the cpu resource"),
        "limits.memory" | "requests.memory" => (BYTE_DIVISORS, "only divisor's values 1, 1k, 1M, 1G, 1T, 1P, 1E, 1Ki, 1Mi, 1Gi, 1Ti, 1Pi, 1Ei are supported with the memory resource"),
        "limits.ephemeral-storage" | "requests.ephemeral-storage" => (BYTE_DIVISORS, "only divisor's values 1, 1k, 1M, 1G, 1T, 1P, 1E, 1Ki, 1Mi, 1Gi, 1Ti, 1Pi, 1Ei are supported with the local ephemeral storage resource"),
        _ => return,
    };
    if !allowed.contains(&divisor) {
        errs.push(invalid(child(path, "divisor"), &text(resource), what));
    }
}

fn validate_key_selector(name: &str, key: &str, path: &str, errs: &mut Vec<FieldError>) {
    push_all(
        errs,
        &child(path, "name"),
        &text(name),
        dns1123_subdomain_errors(name),
    );
    if key.is_empty() {
        errs.push(required(child(path, "key"), ""));
    } else {
        push_all(
            errs,
            &child(path, "key"),
            &text(key),
            config_key_errors(key),
        );
    }
}

fn validate_value_from(var: &EnvVar, path: &str, errs: &mut Vec<FieldError>) {
    let Some(from) = &var.value_from else {
        return;
    };
    let mut sources = 0;
    if let Some(f) = &from.field_ref {
        sources += 1;
        validate_field_selector(f, ENV_FIELD_PATHS, &child(path, "fieldRef"), errs);
    }
    if let Some(r) = &from.resource_field_ref {
        sources += 1;
        validate_resource_selector(r, &child(path, "resourceFieldRef"), false, errs);
    }
    if let Some(r) = &from.config_map_key_ref {
        sources += 1;
        validate_key_selector(&r.name, &r.key, &child(path, "configMapKeyRef"), errs);
    }
    if let Some(r) = &from.secret_key_ref {
        sources += 1;
        validate_key_selector(&r.name, &r.key, &child(path, "secretKeyRef"), errs);
    }
    if from.file_key_ref.is_some() {
        sources += 1;
        errs.push(forbidden(
            child(path, "fileKeyRef"),
            "environment variables from files are not supported by this cluster",
        ));
    }
    let empty = text("");
    if sources == 0 {
        errs.push(invalid(
            path,
            &empty,
            "must specify one of: `fieldRef`, `resourceFieldRef`, `configMapKeyRef` or `secretKeyRef`",
        ));
    } else if !var.value.as_deref().unwrap_or_default().is_empty() {
        errs.push(invalid(
            path,
            &empty,
            "may not be specified when `value` is not empty",
        ));
    } else if sources > 1 {
        errs.push(invalid(
            path,
            &empty,
            "may not have more than one field specified at a time",
        ));
    }
}

/// A container's `env` and `envFrom` (at the container's `path`).
pub fn validate_container_env(c: &Container, path: &str, errs: &mut Vec<FieldError>) {
    let env_path = child(path, "env");
    for (i, var) in c.env.iter().flatten().enumerate() {
        let p = index(&env_path, i);
        if var.name.is_empty() {
            errs.push(required(child(&p, "name"), ""));
        } else {
            push_all(
                errs,
                &child(&p, "name"),
                &text(&var.name),
                env_var_name_errors(&var.name),
            );
        }
        validate_value_from(var, &child(&p, "valueFrom"), errs);
    }
    let from_path = child(path, "envFrom");
    for (i, from) in c.env_from.iter().flatten().enumerate() {
        let p = index(&from_path, i);
        if let Some(prefix) = from.prefix.as_deref().filter(|p| !p.is_empty()) {
            push_all(
                errs,
                &child(&p, "prefix"),
                &text(prefix),
                env_var_name_errors(prefix),
            );
        }
        let mut sources = 0;
        let refs = [
            from.config_map_ref
                .as_ref()
                .map(|r| ("configMapRef", r.name.as_str())),
            from.secret_ref
                .as_ref()
                .map(|r| ("secretRef", r.name.as_str())),
        ];
        for (field, name) in refs.into_iter().flatten() {
            sources += 1;
            let name_path = child(&child(&p, field), "name");
            if name.is_empty() {
                errs.push(required(name_path, ""));
            } else {
                push_all(
                    errs,
                    &name_path,
                    &text(name),
                    dns1123_subdomain_errors(name),
                );
            }
        }
        let empty = text("");
        if sources == 0 {
            errs.push(invalid(
                &from_path,
                &empty,
                "must specify one of: `configMapRef` or `secretRef`",
            ));
        } else if sources > 1 {
            errs.push(invalid(
                &from_path,
                &empty,
                "may not have more than one field specified at a time",
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn errors(c: Value) -> Vec<String> {
        let c: Container = serde_json::from_value(c).expect("container");
        let mut errs = Vec::new();
        validate_container_env(&c, "spec.containers[0]", &mut errs);
        errs.iter().map(FieldError::message).collect()
    }

    #[test]
    fn value_from_takes_exactly_one_source_and_no_value() {
        assert_eq!(
            errors(json!({"name": "a", "env": [{"name": "X", "valueFrom": {}}]})),
            ["spec.containers[0].env[0].valueFrom: Invalid value: \"\": must specify one of: `fieldRef`, `resourceFieldRef`, `configMapKeyRef` or `secretKeyRef`"]
        );
        assert_eq!(
            errors(json!({"name": "a", "env": [{"name": "X", "valueFrom": {
                "fieldRef": {"fieldPath": "metadata.name"},
                "configMapKeyRef": {"name": "c", "key": "k"}}}]})),
            ["spec.containers[0].env[0].valueFrom: Invalid value: \"\": may not have more than one field specified at a time"]
        );
        assert_eq!(
            errors(json!({"name": "a", "env": [{"name": "X", "value": "v",
                "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]})),
            ["spec.containers[0].env[0].valueFrom: Invalid value: \"\": may not be specified when `value` is not empty"]
        );
    }

    #[test]
    fn selectors_are_checked_with_kubernetes_paths_and_words() {
        let errs = errors(json!({"name": "a", "env": [
            {"name": "1BAD", "value": "x"},
            {"name": "A", "valueFrom": {"fieldRef": {"fieldPath": "spec.bogus"}}},
            {"name": "B", "valueFrom": {"configMapKeyRef": {"name": "c", "key": ""}}},
            {"name": "C", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu", "divisor": "2"}}},
            {"name": "D", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['ok']"}}},
        ]}));
        assert!(errs[0].starts_with("spec.containers[0].env[0].name: Invalid value: \"1BAD\": a valid environment variable name"), "{errs:?}");
        assert!(errs[1].starts_with("spec.containers[0].env[1].valueFrom.fieldRef.fieldPath: Unsupported value: \"spec.bogus\": supported values: \"metadata.name\""), "{errs:?}");
        assert_eq!(
            errs[2],
            "spec.containers[0].env[2].valueFrom.configMapKeyRef.key: Required value"
        );
        assert_eq!(errs[3], "spec.containers[0].env[3].valueFrom.resourceFieldRef.divisor: Invalid value: \"limits.cpu\": only divisor's values 1m and 1 are supported with the cpu resource");
        assert_eq!(errs.len(), 4, "{errs:?}");
    }

    #[test]
    fn env_from_needs_one_source_and_a_valid_prefix() {
        assert_eq!(
            errors(json!({"name": "a", "envFrom": [{"prefix": "1_"}]})),
            [
                "spec.containers[0].envFrom[0].prefix: Invalid value: \"1_\": a valid environment variable name must consist of alphabetic characters, digits, '_', '-', or '.', and must not start with a digit (e.g. 'my.env-name',  or 'MY_ENV.NAME',  or 'MyEnvName1', regex used for validation is '[-._a-zA-Z][-._a-zA-Z0-9]*')",
                "spec.containers[0].envFrom: Invalid value: \"\": must specify one of: `configMapRef` or `secretRef`",
            ]
        );
        assert!(errors(
            json!({"name": "a", "envFrom": [{"configMapRef": {"name": "cfg"}, "prefix": "P_"}]})
        )
        .is_empty());
    }
}
