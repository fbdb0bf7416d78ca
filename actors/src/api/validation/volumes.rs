//! Validation of a pod's `volumes` and its containers' `volumeMounts`, after Kubernetes'
//! pkg/apis/core/validation (`ValidateVolumes`, `validateVolumeSource`, the per-source
//! checks, `ValidateVolumeMounts`, `validateMountPropagation`), with its field paths and
//! messages. Sources this cluster cannot provide are refused with a 422 naming the field,
//! never accepted and ignored: a disk-backed emptyDir `sizeLimit` (nothing would enforce it), the network and cloud
//! disk plugins.

use std::collections::HashSet;

use k8s_openapi::api::core::v1::{
    Container, DownwardAPIVolumeFile, KeyToPath, PodSpec, ProjectedVolumeSource, Volume,
};
use serde_json::Value;

use super::env::{validate_field_selector, validate_resource_selector, VOLUME_FIELD_PATHS};
use super::{
    child, dns1123_label_errors, duplicate, forbidden, index, invalid, not_supported, push_all,
    required, FieldError, FieldErrorKind,
};

const FILE_MODE_MSG: &str = "must be a number between 0 and 0777 (octal), both inclusive";
const HOST_PATH_TYPES: &[&str] = &[
    "",
    "BlockDevice",
    "CharDevice",
    "Directory",
    "DirectoryOrCreate",
    "File",
    "FileOrCreate",
    "Socket",
];
const PROPAGATIONS: &[&str] = &["Bidirectional", "HostToContainer", "None"];
const MIN_TOKEN_SECONDS: i64 = 10 * 60;
const MAX_TOKEN_SECONDS: i64 = 1 << 32;

fn text(s: &str) -> Value {
    Value::from(s)
}

fn not_found(field: impl Into<String>, value: &str) -> FieldError {
    FieldError {
        field: field.into(),
        kind: FieldErrorKind::NotFound,
        value: Some(super::render_value(&text(value))),
        detail: String::new(),
    }
}

fn validate_mode(mode: Option<i32>, field: String, errs: &mut Vec<FieldError>) {
    if let Some(m) = mode.filter(|m| !(0..=0o777).contains(m)) {
        errs.push(invalid(field, &Value::from(m), FILE_MODE_MSG));
    }
}

fn validate_no_backsteps(p: &str, field: &str, errs: &mut Vec<FieldError>) {
    if p.split('/').any(|s| s == "..") {
        errs.push(invalid(field, &text(p), "must not contain '..'"));
    }
}

/// `ValidateLocalDescendingPath`: relative, no `..` element.
fn validate_descending(p: &str, field: &str, errs: &mut Vec<FieldError>) {
    if p.starts_with('/') {
        errs.push(invalid(field, &text(p), "must be a relative path"));
    }
    validate_no_backsteps(p, field, errs);
}

/// `ValidateLocalNonReservedPath`: also not starting with `..` (the atomic writer's names).
fn validate_non_reserved(p: &str, field: &str, errs: &mut Vec<FieldError>) {
    validate_descending(p, field, errs);
    if p.starts_with("..") && !p.starts_with("../") {
        errs.push(invalid(field, &text(p), "must not start with '..'"));
    }
}

fn validate_key_to_path(kp: &KeyToPath, path: &str, errs: &mut Vec<FieldError>) {
    if kp.key.is_empty() {
        errs.push(required(child(path, "key"), ""));
    }
    if kp.path.is_empty() {
        errs.push(required(child(path, "path"), ""));
    }
    validate_non_reserved(&kp.path, &child(path, "path"), errs);
    validate_mode(kp.mode, child(path, "mode"), errs);
    if kp.user.is_some() {
        errs.push(forbidden(
            child(path, "user"),
            "file owners are not supported by this cluster",
        ));
    }
}

fn validate_downward_file(f: &DownwardAPIVolumeFile, path: &str, errs: &mut Vec<FieldError>) {
    if f.path.is_empty() {
        errs.push(required(child(path, "path"), ""));
    }
    validate_non_reserved(&f.path, &child(path, "path"), errs);
    match (&f.field_ref, &f.resource_field_ref) {
        (Some(fr), rr) => {
            validate_field_selector(fr, VOLUME_FIELD_PATHS, &child(path, "fieldRef"), errs);
            if rr.is_some() {
                errs.push(invalid(
                    path,
                    &text("resource"),
                    "fieldRef and resourceFieldRef can not be specified simultaneously",
                ));
            }
        }
        (None, Some(rr)) => {
            validate_resource_selector(rr, &child(path, "resourceFieldRef"), true, errs)
        }
        (None, None) => errs.push(required(
            path,
            "one of fieldRef and resourceFieldRef is required",
        )),
    }
    validate_mode(f.mode, child(path, "mode"), errs);
}

fn validate_projected(p: &ProjectedVolumeSource, path: &str, errs: &mut Vec<FieldError>) {
    validate_mode(p.default_mode, child(path, "defaultMode"), errs);
    let mut paths: HashSet<String> = HashSet::new();
    let mut claim = |file: &str, shown: &str, errs: &mut Vec<FieldError>| {
        if !file.is_empty() && !paths.insert(file.to_string()) {
            errs.push(invalid(path, &text(shown), "conflicting duplicate paths"));
        }
    };
    for (i, s) in p.sources.iter().flatten().enumerate() {
        let src = index(&child(path, "sources"), i);
        let mut count = 0;
        if let Some(sec) = &s.secret {
            count += 1;
            let sp = child(&src, "secret");
            if sec.name.is_empty() {
                errs.push(required(child(&sp, "name"), ""));
            }
            for (j, kp) in sec.items.iter().flatten().enumerate() {
                validate_key_to_path(kp, &index(&child(&sp, "items"), j), errs);
                claim(&kp.path, &sec.name, errs);
            }
        }
        if let Some(cm) = &s.config_map {
            count += 1;
            let cp = child(&src, "configMap");
            if cm.name.is_empty() {
                errs.push(required(child(&cp, "name"), ""));
            }
            for (j, kp) in cm.items.iter().flatten().enumerate() {
                validate_key_to_path(kp, &index(&child(&cp, "items"), j), errs);
                claim(&kp.path, &cm.name, errs);
            }
        }
        if let Some(d) = &s.downward_api {
            count += 1;
            let dp = child(&src, "downwardAPI");
            for f in d.items.iter().flatten() {
                validate_downward_file(f, &dp, errs);
                claim(&f.path, &f.path, errs);
            }
        }
        if let Some(t) = &s.service_account_token {
            count += 1;
            let tp = child(&src, "serviceAccountToken");
            let secs = t.expiration_seconds.unwrap_or(3600);
            if secs < MIN_TOKEN_SECONDS {
                errs.push(invalid(
                    child(&tp, "expirationSeconds"),
                    &Value::from(secs),
                    "may not specify a duration less than 10 minutes",
                ));
            }
            if secs > MAX_TOKEN_SECONDS {
                errs.push(invalid(
                    child(&tp, "expirationSeconds"),
                    &Value::from(secs),
                    "may not specify a duration larger than 2^32 seconds",
                ));
            }
            if t.path.is_empty() {
                errs.push(required(child(path, "path"), ""));
            } else {
                validate_non_reserved(&t.path, &child(path, "path"), errs);
            }
            if t.user.is_some() {
                errs.push(forbidden(
                    child(&tp, "user"),
                    "file owners are not supported by this cluster",
                ));
            }
        }
        if s.cluster_trust_bundle.is_some() {
            count += 1;
            errs.push(forbidden(
                child(&src, "clusterTrustBundle"),
                "clusterTrustBundle projections are not supported by this cluster",
            ));
        }
        if s.pod_certificate.is_some() {
            count += 1;
            errs.push(forbidden(
                child(&src, "podCertificate"),
                "podCertificate projections are not supported by this cluster",
            ));
        }
        if count > 1 {
            errs.push(forbidden(
                src,
                "may not specify more than 1 volume type per source",
            ));
        }
    }
}

/// The sources this cluster does not provide, by their JSON names.
fn unsupported_sources(v: &Volume) -> Vec<&'static str> {
    let present = [
        (v.aws_elastic_block_store.is_some(), "awsElasticBlockStore"),
        (v.azure_disk.is_some(), "azureDisk"),
        (v.azure_file.is_some(), "azureFile"),
        (v.cephfs.is_some(), "cephfs"),
        (v.cinder.is_some(), "cinder"),
        (v.csi.is_some(), "csi"),
        (v.ephemeral.is_some(), "ephemeral"),
        (v.fc.is_some(), "fc"),
        (v.flex_volume.is_some(), "flexVolume"),
        (v.flocker.is_some(), "flocker"),
        (v.gce_persistent_disk.is_some(), "gcePersistentDisk"),
        (v.git_repo.is_some(), "gitRepo"),
        (v.glusterfs.is_some(), "glusterfs"),
        (v.image.is_some(), "image"),
        (v.iscsi.is_some(), "iscsi"),
        (v.nfs.is_some(), "nfs"),
        (v.photon_persistent_disk.is_some(), "photonPersistentDisk"),
        (v.portworx_volume.is_some(), "portworxVolume"),
        (v.quobyte.is_some(), "quobyte"),
        (v.rbd.is_some(), "rbd"),
        (v.scale_io.is_some(), "scaleIO"),
        (v.storageos.is_some(), "storageos"),
        (v.vsphere_volume.is_some(), "vsphereVolume"),
    ];
    present
        .into_iter()
        .filter(|(p, _)| *p)
        .map(|(_, n)| n)
        .collect()
}

/// `validateVolumeSource`: exactly one source, each by its rules.
fn validate_source(v: &Volume, path: &str, errs: &mut Vec<FieldError>) {
    let mut count = 0;
    let mut one = |name: &str, errs: &mut Vec<FieldError>| -> bool {
        if count > 0 {
            errs.push(forbidden(
                child(path, name),
                "may not specify more than 1 volume type",
            ));
            false
        } else {
            count += 1;
            true
        }
    };
    if let Some(e) = &v.empty_dir {
        if one("emptyDir", errs) {
            let p = child(path, "emptyDir");
            let medium = e.medium.as_deref().unwrap_or_default();
            if !matches!(medium, "" | "Memory") {
                errs.push(not_supported(
                    child(&p, "medium"),
                    &text(medium),
                    &["", "Memory"],
                ));
            }
            if let Some(limit) = &e.size_limit {
                let size = crate::api::validation::parse_quantity(&limit.0);
                if size.is_some_and(|s| s < 0.0) {
                    errs.push(forbidden(
                        child(&p, "sizeLimit"),
                        "SizeLimit field must be a valid resource quantity",
                    ));
                } else if medium.is_empty() {
                    errs.push(forbidden(
                        child(&p, "sizeLimit"),
                        "a sizeLimit on a disk-backed emptyDir cannot be enforced by this cluster; use medium: Memory, or no sizeLimit",
                    ));
                }
            }
            if e.mode.is_some() {
                errs.push(forbidden(
                    child(&p, "mode"),
                    "emptyDir modes are not supported by this cluster",
                ));
            }
        }
    }
    if let Some(h) = &v.host_path {
        if one("hostPath", errs) {
            let p = child(path, "hostPath");
            if h.path.is_empty() {
                errs.push(required(child(&p, "path"), ""));
            } else {
                validate_no_backsteps(&h.path, &child(&p, "path"), errs);
                let t = h.type_.as_deref().unwrap_or_default();
                if !HOST_PATH_TYPES.contains(&t) {
                    errs.push(not_supported(child(&p, "type"), &text(t), HOST_PATH_TYPES));
                }
            }
        }
    }
    if let Some(s) = &v.secret {
        if one("secret", errs) {
            let p = child(path, "secret");
            if s.secret_name.as_deref().unwrap_or_default().is_empty() {
                errs.push(required(child(&p, "secretName"), ""));
            }
            validate_mode(s.default_mode, child(&p, "defaultMode"), errs);
            for (i, kp) in s.items.iter().flatten().enumerate() {
                validate_key_to_path(kp, &index(&child(&p, "items"), i), errs);
            }
            if s.default_user.is_some() {
                errs.push(forbidden(
                    child(&p, "defaultUser"),
                    "file owners are not supported by this cluster",
                ));
            }
        }
    }
    if let Some(c) = &v.persistent_volume_claim {
        if one("persistentVolumeClaim", errs) {
            let p = child(path, "persistentVolumeClaim");
            if c.claim_name.is_empty() {
                errs.push(required(child(&p, "claimName"), ""));
            }
        }
    }
    if let Some(d) = &v.downward_api {
        if one("downwardAPI", errs) {
            let p = child(path, "downwardAPI");
            validate_mode(d.default_mode, child(&p, "defaultMode"), errs);
            for f in d.items.iter().flatten() {
                validate_downward_file(f, &p, errs);
            }
            if d.default_user.is_some() {
                errs.push(forbidden(
                    child(&p, "defaultUser"),
                    "file owners are not supported by this cluster",
                ));
            }
        }
    }
    if let Some(c) = &v.config_map {
        if one("configMap", errs) {
            let p = child(path, "configMap");
            if c.name.is_empty() {
                errs.push(required(child(&p, "name"), ""));
            }
            validate_mode(c.default_mode, child(&p, "defaultMode"), errs);
            for (i, kp) in c.items.iter().flatten().enumerate() {
                validate_key_to_path(kp, &index(&child(&p, "items"), i), errs);
            }
            if c.default_user.is_some() {
                errs.push(forbidden(
                    child(&p, "defaultUser"),
                    "file owners are not supported by this cluster",
                ));
            }
        }
    }
    if let Some(pr) = &v.projected {
        if one("projected", errs) {
            let p = child(path, "projected");
            validate_projected(pr, &p, errs);
            if pr.default_user.is_some() {
                errs.push(forbidden(
                    child(&p, "defaultUser"),
                    "file owners are not supported by this cluster",
                ));
            }
        }
    }
    for name in unsupported_sources(v) {
        if one(name, errs) {
            errs.push(forbidden(
                child(path, name),
                format!("{name} volumes are not supported by this cluster"),
            ));
        }
    }
    if count == 0 {
        errs.push(required(path, "must specify a volume type"));
    }
}

/// `ValidateVolumes`: names (DNS labels, unique) and sources. Returns the valid names.
fn validate_volumes(volumes: &[Volume], path: &str, errs: &mut Vec<FieldError>) -> HashSet<String> {
    let mut names = HashSet::new();
    for (i, v) in volumes.iter().enumerate() {
        let p = index(path, i);
        validate_source(v, &p, errs);
        let name_path = child(&p, "name");
        if v.name.is_empty() {
            errs.push(required(&name_path, ""));
        } else {
            push_all(
                errs,
                &name_path,
                &text(&v.name),
                dns1123_label_errors(&v.name),
            );
        }
        if !names.insert(v.name.clone()) {
            errs.push(duplicate(&name_path, &text(&v.name)));
        }
    }
    names
}

/// `ValidateVolumeMounts` for one container at `path`.
fn validate_mounts(
    c: &Container,
    volumes: &HashSet<String>,
    path: &str,
    errs: &mut Vec<FieldError>,
) {
    let mounts_path = child(path, "volumeMounts");
    let mut points = HashSet::new();
    let privileged = c
        .security_context
        .as_ref()
        .and_then(|s| s.privileged)
        .unwrap_or(false);
    for (i, m) in c.volume_mounts.iter().flatten().enumerate() {
        let p = index(&mounts_path, i);
        if m.name.is_empty() {
            errs.push(required(child(&p, "name"), ""));
        }
        if !volumes.contains(&m.name) {
            errs.push(not_found(child(&p, "name"), &m.name));
        }
        if m.mount_path.is_empty() {
            errs.push(required(child(&p, "mountPath"), ""));
        }
        if !points.insert(m.mount_path.clone()) {
            errs.push(invalid(
                child(&p, "mountPath"),
                &text(&m.mount_path),
                "must be unique",
            ));
        }
        let sub = m.sub_path.as_deref().unwrap_or_default();
        if !sub.is_empty() {
            // Kubernetes reports these without the mount's index.
            validate_descending(sub, &child(&mounts_path, "subPath"), errs);
        }
        let expr = m.sub_path_expr.as_deref().unwrap_or_default();
        if !expr.is_empty() {
            if !sub.is_empty() {
                errs.push(invalid(
                    child(&p, "subPathExpr"),
                    &text(expr),
                    "subPathExpr and subPath are mutually exclusive",
                ));
            }
            validate_descending(expr, &child(&mounts_path, "subPathExpr"), errs);
        }
        if let Some(prop) = m.mount_propagation.as_deref() {
            let field = child(&mounts_path, "mountPropagation");
            if !PROPAGATIONS.contains(&prop) {
                errs.push(not_supported(&field, &text(prop), PROPAGATIONS));
            } else if prop == "Bidirectional" && !privileged {
                errs.push(forbidden(
                    field,
                    "Bidirectional mount propagation is available only to privileged containers",
                ));
            }
        }
        if m.recursive_read_only
            .as_deref()
            .is_some_and(|r| r != "Disabled")
        {
            errs.push(forbidden(
                child(&p, "recursiveReadOnly"),
                "recursive read-only mounts are not supported by this cluster's runtime",
            ));
        }
        if m.bind_mount_options.as_ref().is_some_and(|o| !o.is_empty()) {
            errs.push(forbidden(
                child(&p, "bindMountOptions"),
                "bind mount options are not supported by this cluster",
            ));
        }
    }
    if c.volume_devices.as_ref().is_some_and(|d| !d.is_empty()) {
        errs.push(forbidden(
            child(path, "volumeDevices"),
            "block volume devices are not supported by this cluster",
        ));
    }
}

/// A pod spec's volumes and every container's mounts and environment (at `path`, the
/// spec's). Skipped when the spec does not decode: the decoder has answered already.
pub fn validate_pod_volumes(spec: &Value, path: &str, errs: &mut Vec<FieldError>) {
    let Ok(spec) = crate::api::strategy::decode_ref::<PodSpec>(spec) else {
        return;
    };
    let names = validate_volumes(
        spec.volumes.as_deref().unwrap_or_default(),
        &child(path, "volumes"),
        errs,
    );
    // An ephemeral container mounts and reads its environment as any other does.
    let ephemeral: Vec<k8s_openapi::api::core::v1::Container> = spec
        .ephemeral_containers
        .iter()
        .flatten()
        .filter_map(|e| serde_json::from_value(serde_json::to_value(e).ok()?).ok())
        .collect();
    let lists = [
        ("containers", spec.containers.as_slice()),
        (
            "initContainers",
            spec.init_containers.as_deref().unwrap_or_default(),
        ),
        ("ephemeralContainers", ephemeral.as_slice()),
    ];
    for (list, containers) in lists {
        for (i, c) in containers.iter().enumerate() {
            let cp = index(&child(path, list), i);
            validate_mounts(c, &names, &cp, errs);
            super::env::validate_container_env(c, &cp, errs);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn errors(spec: Value) -> Vec<String> {
        let mut errs = Vec::new();
        validate_pod_volumes(&spec, "spec", &mut errs);
        errs.iter().map(FieldError::message).collect()
    }

    fn spec(volumes: Value, mounts: Value) -> Value {
        json!({"volumes": volumes, "containers": [{"name": "a", "image": "i", "volumeMounts": mounts}]})
    }

    #[test]
    fn a_mount_of_no_volume_is_not_found() {
        assert_eq!(
            errors(spec(json!([]), json!([{"name": "x", "mountPath": "/x"}]))),
            ["spec.containers[0].volumeMounts[0].name: Not found: \"x\""]
        );
    }

    #[test]
    fn volume_names_sources_and_mount_paths_follow_kubernetes() {
        let errs = errors(spec(
            json!([{"name": "a", "emptyDir": {}}, {"name": "a", "emptyDir": {}, "hostPath": {"path": "/x"}}, {"name": "b"}]),
            json!([{"name": "a", "mountPath": "/m"}, {"name": "a", "mountPath": "/m"},
                   {"name": "a", "mountPath": "/n", "subPath": "../up"},
                   {"name": "a", "mountPath": "/o", "subPath": "s", "subPathExpr": "$(X)"},
                   {"name": "a", "mountPath": "/p", "mountPropagation": "Bidirectional"}]),
        ));
        assert_eq!(
            errs,
            [
                "spec.volumes[1].hostPath: Forbidden: may not specify more than 1 volume type",
                "spec.volumes[1].name: Duplicate value: \"a\"",
                "spec.volumes[2]: Required value: must specify a volume type",
                "spec.containers[0].volumeMounts[1].mountPath: Invalid value: \"/m\": must be unique",
                "spec.containers[0].volumeMounts.subPath: Invalid value: \"../up\": must not contain '..'",
                "spec.containers[0].volumeMounts[3].subPathExpr: Invalid value: \"$(X)\": subPathExpr and subPath are mutually exclusive",
                "spec.containers[0].volumeMounts.mountPropagation: Forbidden: Bidirectional mount propagation is available only to privileged containers",
            ]
        );
    }

    #[test]
    fn items_modes_and_host_path_types_are_checked() {
        let errs = errors(spec(
            json!([
                {"name": "c", "configMap": {"name": "cfg", "defaultMode": 1024, "items": [{"key": "k", "path": "/abs"}, {"key": "", "path": "..x", "mode": -1}]}},
                {"name": "h", "hostPath": {"path": "/var/../etc", "type": "Dir"}},
            ]),
            json!([]),
        ));
        assert_eq!(
            errs,
            [
                "spec.volumes[0].configMap.defaultMode: Invalid value: 1024: must be a number between 0 and 0777 (octal), both inclusive",
                "spec.volumes[0].configMap.items[0].path: Invalid value: \"/abs\": must be a relative path",
                "spec.volumes[0].configMap.items[1].key: Required value",
                "spec.volumes[0].configMap.items[1].path: Invalid value: \"..x\": must not start with '..'",
                "spec.volumes[0].configMap.items[1].mode: Invalid value: -1: must be a number between 0 and 0777 (octal), both inclusive",
                "spec.volumes[1].hostPath.path: Invalid value: \"/var/../etc\": must not contain '..'",
                "spec.volumes[1].hostPath.type: Unsupported value: \"Dir\": supported values: \"\", \"BlockDevice\", \"CharDevice\", \"Directory\", \"DirectoryOrCreate\", \"File\", \"FileOrCreate\", \"Socket\"",
            ]
        );
    }

    #[test]
    fn what_this_cluster_cannot_provide_is_refused_naming_the_field() {
        let errs = errors(spec(
            json!([
                {"name": "p", "persistentVolumeClaim": {"claimName": ""}},
                {"name": "d", "emptyDir": {"sizeLimit": "1Gi"}},
                {"name": "m", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}},
                {"name": "n", "nfs": {"server": "s", "path": "/"}},
            ]),
            json!([]),
        ));
        assert_eq!(errs.len(), 3, "{errs:?}");
        assert!(
            errs[0].starts_with("spec.volumes[0].persistentVolumeClaim.claimName: Required value")
        );
        assert!(errs[1].starts_with("spec.volumes[1].emptyDir.sizeLimit: Forbidden: "));
        assert_eq!(
            errs[2],
            "spec.volumes[3].nfs: Forbidden: nfs volumes are not supported by this cluster"
        );
    }

    #[test]
    fn projected_sources_and_downward_files_are_checked() {
        let errs = errors(spec(
            json!([{"name": "p", "projected": {"sources": [
                {"serviceAccountToken": {"path": "token", "expirationSeconds": 60}},
                {"configMap": {"name": "c", "items": [{"key": "k", "path": "n"}]}},
                {"downwardAPI": {"items": [{"path": "n", "fieldRef": {"fieldPath": "spec.nodeName"}}]}},
            ]}}]),
            json!([]),
        ));
        // As in Kubernetes, a token's path takes no part in the duplicate check.
        assert_eq!(
            errs,
            [
                "spec.volumes[0].projected.sources[0].serviceAccountToken.expirationSeconds: Invalid value: 60: may not specify a duration less than 10 minutes",
                "spec.volumes[0].projected.sources[2].downwardAPI.fieldRef.fieldPath: Unsupported value: \"spec.nodeName\": supported values: \"metadata.annotations\", \"metadata.labels\", \"metadata.name\", \"metadata.namespace\", \"metadata.uid\"",
                "spec.volumes[0].projected: Invalid value: \"n\": conflicting duplicate paths",
            ]
        );
    }

    #[test]
    fn init_containers_are_checked_too() {
        let errs = errors(
            json!({"volumes": [], "containers": [{"name": "a", "image": "i"}],
            "initContainers": [{"name": "i", "image": "i", "volumeMounts": [{"name": "gone", "mountPath": "/g"}]}]}),
        );
        assert_eq!(
            errs,
            ["spec.initContainers[0].volumeMounts[0].name: Not found: \"gone\""]
        );
    }
}
