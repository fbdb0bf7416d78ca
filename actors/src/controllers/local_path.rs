//! The built-in local-path provisioner (`skiff.io/local-path`), as k3s ships Rancher's
//! local-path-provisioner: for a claim of a class it provisions, once the scheduler has
//! picked the node of its first pod (`volume.kubernetes.io/selected-node`), it makes a
//! directory `<dir>/pvc-<uid>_<namespace>_<claim>` and a PersistentVolume with that
//! `hostPath`, node affinity to that node (`kubernetes.io/hostname`), the class's reclaim
//! policy and a `claimRef` to the claim, which the PersistentVolume controller then binds.
//! When such a volume is Released with reclaim policy Delete, the directory and then the
//! volume are removed; with Retain both stay.
//!
//! The directory is made on this machine, so the provisioner serves only the nodes run in
//! this process (all of them in the single-process cluster). A claim whose selected node is
//! elsewhere (a `skiff node` that joined over the network) gets a `ProvisioningFailed`
//! event saying so, rather than a volume whose directory is on the wrong machine.
//!
//! Keys are claims (`namespace/name`) and volumes (`name`, no slash).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::storage::v1 as storage;
use serde_json::{json, Value};

use crate::api::kinds::persistent_volume::{
    self as pv_kind, ANN_PROVISIONED_BY, ANN_SELECTED_NODE, ANN_STORAGE_PROVISIONER,
};
use crate::api::kinds::persistent_volume_claim as pvc_kind;
use crate::api::kinds::storage_class::{self, LOCAL_PATH_PROVISIONER};
use crate::api::strategy::typed;
use crate::api::validation::storage::{READ_WRITE_ONCE, READ_WRITE_ONCE_POD, STORAGE};
use crate::api::ApiError;
use crate::runtime::{
    key_of, split_key, Action, Change, Context, InformerSpec, ReconcileError, Reconciler,
};

const CLAIMS: &str = pvc_kind::RESOURCE;
const VOLUMES: &str = pv_kind::RESOURCE;
const CLASSES: &str = storage_class::RESOURCE;
pub const HOSTNAME_LABEL: &str = "kubernetes.io/hostname";

#[derive(Debug, thiserror::Error)]
pub enum LocalPathError {
    #[error("cannot create directory {path}")]
    Create {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot remove directory {path}")]
    Remove {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("path {path} is not under the local-path directory {dir}")]
    Outside { path: PathBuf, dir: PathBuf },
}

#[derive(Debug, Clone)]
pub struct LocalPathConfig {
    /// Where the volumes' directories are made.
    pub dir: PathBuf,
    /// The nodes run in this process, whose filesystem is this one.
    pub nodes: Vec<String>,
}

impl Default for LocalPathConfig {
    fn default() -> Self {
        LocalPathConfig {
            dir: PathBuf::from("skiff-data/storage"),
            nodes: Vec::new(),
        }
    }
}

pub struct LocalPathProvisioner {
    config: LocalPathConfig,
}

impl LocalPathProvisioner {
    pub fn new(config: LocalPathConfig) -> Self {
        LocalPathProvisioner { config }
    }
}

/// The volume's name, as external provisioners name them.
pub fn volume_name(claim: &core::PersistentVolumeClaim) -> String {
    format!("pvc-{}", claim.metadata.uid.as_deref().unwrap_or_default())
}

/// The directory of a claim's volume.
pub fn directory(dir: &Path, claim: &core::PersistentVolumeClaim) -> PathBuf {
    dir.join(format!(
        "{}_{}_{}",
        volume_name(claim),
        claim.metadata.namespace.as_deref().unwrap_or_default(),
        claim.metadata.name.as_deref().unwrap_or_default()
    ))
}

/// Make the directory, writable by whatever user a container runs as (as
/// local-path-provisioner's `mkdir -m 0777`).
pub fn make_directory(path: &Path) -> Result<(), LocalPathError> {
    let err = |source| LocalPathError::Create {
        path: path.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(path).map_err(err)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o777)).map_err(err)?;
    }
    Ok(())
}

/// Remove a volume's directory, refusing anything outside `dir` (a hand-edited volume
/// must not make the provisioner delete an arbitrary path). A directory already gone is
/// fine.
pub fn remove_directory(dir: &Path, path: &Path) -> Result<(), LocalPathError> {
    let inside = path.parent().is_some_and(|p| p == dir)
        && path
            .components()
            .all(|c| !matches!(c, std::path::Component::ParentDir));
    if !inside {
        return Err(LocalPathError::Outside {
            path: path.to_path_buf(),
            dir: dir.to_path_buf(),
        });
    }
    match std::fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(LocalPathError::Remove {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// The PersistentVolume for a claim provisioned on `node` at `path`.
pub fn volume_for(
    claim: &core::PersistentVolumeClaim,
    class: &storage::StorageClass,
    node: &str,
    path: &Path,
) -> Value {
    let spec = claim.spec.clone().unwrap_or_default();
    let request = spec
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get(STORAGE))
        .map(|q| q.0.clone())
        .unwrap_or_default();
    json!({
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {
            "name": volume_name(claim),
            "annotations": {ANN_PROVISIONED_BY: LOCAL_PATH_PROVISIONER},
        },
        "spec": {
            "capacity": {STORAGE: request},
            "accessModes": spec.access_modes.clone().unwrap_or_default(),
            "persistentVolumeReclaimPolicy": class.reclaim_policy.as_deref().unwrap_or(pv_kind::RECLAIM_DELETE),
            "storageClassName": class.metadata.name.clone().unwrap_or_default(),
            "volumeMode": spec.volume_mode.clone().unwrap_or_else(|| "Filesystem".into()),
            "hostPath": {"path": path.to_string_lossy(), "type": "DirectoryOrCreate"},
            "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": HOSTNAME_LABEL, "operator": "In", "values": [node]}]}]}},
            "claimRef": {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "namespace": claim.metadata.namespace.clone().unwrap_or_default(),
                "name": claim.metadata.name.clone().unwrap_or_default(),
                "uid": claim.metadata.uid.clone().unwrap_or_default(),
                "resourceVersion": claim.metadata.resource_version.clone().unwrap_or_default(),
            },
        },
    })
}

/// The node a volume's affinity pins it to (`kubernetes.io/hostname In [node]`).
pub fn pinned_node(volume: &core::PersistentVolume) -> Option<String> {
    let terms = &volume
        .spec
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required
        .as_ref()?
        .node_selector_terms;
    terms
        .iter()
        .flat_map(|t| t.match_expressions.iter().flatten())
        .find(|r| r.key == HOSTNAME_LABEL && r.operator == "In")
        .and_then(|r| r.values.as_ref()?.first().cloned())
}

fn annotation<'a>(
    meta: &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    key: &str,
) -> Option<&'a str> {
    meta.annotations.as_ref()?.get(key).map(String::as_str)
}

#[async_trait::async_trait]
impl Reconciler for LocalPathProvisioner {
    fn name(&self) -> &'static str {
        "local-path-provisioner"
    }

    fn informers(&self) -> Vec<InformerSpec> {
        vec![
            InformerSpec::all(CLAIMS),
            InformerSpec::all(VOLUMES),
            InformerSpec::all(CLASSES),
        ]
    }

    fn keys_for(&self, resource: &str, change: &Change, ctx: &Context) -> Vec<String> {
        let obj = &change.object;
        match resource {
            CLAIMS => vec![key_of(obj)],
            VOLUMES => {
                let ours = obj
                    .pointer("/metadata/annotations")
                    .and_then(|a| a.get(ANN_PROVISIONED_BY))
                    .and_then(Value::as_str)
                    == Some(LOCAL_PATH_PROVISIONER);
                if ours {
                    vec![key_of(obj)]
                } else {
                    Vec::new()
                }
            }
            _ => ctx
                .cache(CLAIMS)
                .list()
                .iter()
                .filter(|c| c.pointer("/spec/volumeName").is_none())
                .map(|c| key_of(c))
                .collect(),
        }
    }

    async fn reconcile(&self, key: &str, ctx: &Context) -> Result<Action, ReconcileError> {
        match split_key(key) {
            (Some(_), _) => self.provision(key, ctx).await,
            (None, name) => self.reclaim(name, ctx).await,
        }
    }
}

impl LocalPathProvisioner {
    fn is_local(&self, node: &str) -> bool {
        self.config.nodes.iter().any(|n| n == node)
    }

    /// Why the claim cannot be provisioned here, or the node to provision it on.
    fn refusal(
        &self,
        claim: &core::PersistentVolumeClaim,
        class: &storage::StorageClass,
    ) -> Result<String, String> {
        let Some(node) = annotation(&claim.metadata, ANN_SELECTED_NODE) else {
            return Err(format!("failed to provision volume with StorageClass \"{}\": configuration error, no node was specified: local-path volumes need volumeBindingMode WaitForFirstConsumer", class.metadata.name.clone().unwrap_or_default()));
        };
        let modes = claim
            .spec
            .as_ref()
            .and_then(|s| s.access_modes.clone())
            .unwrap_or_default();
        if modes
            .iter()
            .any(|m| m != READ_WRITE_ONCE && m != READ_WRITE_ONCE_POD)
        {
            return Err("failed to provision volume: only ReadWriteOnce and ReadWriteOncePod access modes are supported: a local-path volume is a directory on one node".into());
        }
        if !self.is_local(node) {
            return Err(format!("failed to provision volume on node \"{node}\": the local-path provisioner makes directories only on nodes run in the control plane's process"));
        }
        Ok(node.to_string())
    }

    async fn provision(&self, key: &str, ctx: &Context) -> Result<Action, ReconcileError> {
        let Some(raw) = ctx.cache(CLAIMS).get(key) else {
            return Ok(Action::Done);
        };
        let Some(claim) = typed::<core::PersistentVolumeClaim>(&raw) else {
            return Ok(Action::Done);
        };
        let unbound = claim
            .spec
            .as_ref()
            .and_then(|s| s.volume_name.as_deref())
            .is_none_or(str::is_empty);
        // The PersistentVolume controller hands a claim to its provisioner with this
        // annotation, once no existing volume fits.
        let handed =
            annotation(&claim.metadata, ANN_STORAGE_PROVISIONER) == Some(LOCAL_PATH_PROVISIONER);
        if !unbound || !handed || claim.metadata.deletion_timestamp.is_some() {
            return Ok(Action::Done);
        }
        let Some(class) = pvc_kind::class_of(&claim)
            .and_then(|c| ctx.cache(CLASSES).get(&c))
            .and_then(|c| typed::<storage::StorageClass>(&c))
            .filter(|c| c.provisioner == LOCAL_PATH_PROVISIONER)
        else {
            return Ok(Action::Done);
        };
        let name = volume_name(&claim);
        if ctx.cache(VOLUMES).get(&name).is_some() {
            return Ok(Action::Done);
        }
        let node = match self.refusal(&claim, &class) {
            Ok(node) => node,
            Err(msg) => {
                ctx.recorder.warning(&raw, "ProvisioningFailed", &msg).await;
                return Ok(Action::Done);
            }
        };
        let path = directory(&self.config.dir, &claim);
        let msg = format!("External provisioner is provisioning volume for claim \"{key}\"");
        ctx.recorder.normal(&raw, "Provisioning", &msg).await;
        if let Err(e) = make_directory(&path) {
            let detail = std::error::Error::source(&e)
                .map(ToString::to_string)
                .unwrap_or_default();
            let msg = format!("failed to provision volume: {e}: {detail}");
            ctx.recorder.warning(&raw, "ProvisioningFailed", &msg).await;
            return Err(ReconcileError::Invalid(e.to_string()));
        }
        let volume = volume_for(&claim, &class, &node, &path);
        match ctx.client.create(VOLUMES, None, volume).await {
            Ok(_) | Err(ApiError::AlreadyExists { .. }) => {
                tracing::info!(claim = key, volume = %name, node = %node, path = %path.display(), "provisioned");
                let msg = format!("Successfully provisioned volume {name}");
                ctx.recorder
                    .normal(&raw, "ProvisioningSucceeded", &msg)
                    .await;
                Ok(Action::Done)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// A Released volume of ours with reclaim policy Delete: its directory, then itself.
    async fn reclaim(&self, name: &str, ctx: &Context) -> Result<Action, ReconcileError> {
        let Some(raw) = ctx.cache(VOLUMES).get(name) else {
            return Ok(Action::Done);
        };
        let Some(volume) = typed::<core::PersistentVolume>(&raw) else {
            return Ok(Action::Done);
        };
        let spec = volume.spec.clone().unwrap_or_default();
        let released = pv_kind::phase(&volume) == pv_kind::PHASE_RELEASED;
        let delete =
            spec.persistent_volume_reclaim_policy.as_deref() == Some(pv_kind::RECLAIM_DELETE);
        if !released || !delete || volume.metadata.deletion_timestamp.is_some() {
            return Ok(Action::Done);
        }
        let node = pinned_node(&volume).unwrap_or_default();
        if !self.is_local(&node) {
            let msg = format!("the local-path provisioner removes directories only on nodes run in the control plane's process, not on \"{node}\"");
            ctx.recorder.warning(&raw, "VolumeFailedDelete", &msg).await;
            return Ok(Action::Done);
        }
        if let Some(h) = &spec.host_path {
            if let Err(e) = remove_directory(&self.config.dir, Path::new(&h.path)) {
                ctx.recorder
                    .warning(&raw, "VolumeFailedDelete", &e.to_string())
                    .await;
                return Err(ReconcileError::Invalid(e.to_string()));
            }
        }
        match ctx.client.delete(VOLUMES, None, name, None).await {
            Ok(_) | Err(ApiError::NotFound { .. }) => {
                tracing::info!(volume = name, "deleted on reclaim");
                Ok(Action::Done)
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// Labels are not used by the provisioner; kept for the type's users.
#[allow(dead_code)]
type Labels = BTreeMap<String, String>;

#[cfg(test)]
mod tests {
    use super::*;

    fn claim() -> core::PersistentVolumeClaim {
        serde_json::from_value(json!({"metadata": {"name": "data", "namespace": "web", "uid": "abc",
                "resourceVersion": "7"},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "2Gi"}},
                "storageClassName": "local-path"}}))
        .expect("claim")
    }

    #[test]
    fn the_volume_pins_the_node_and_points_back_at_the_claim() {
        let class: storage::StorageClass =
            serde_json::from_value(storage_class::local_path_class()).expect("class");
        let path = directory(Path::new("/var/lib/skiff/storage"), &claim());
        assert_eq!(path, Path::new("/var/lib/skiff/storage/pvc-abc_web_data"));
        let v = volume_for(&claim(), &class, "node-2", &path);
        assert_eq!(v["metadata"]["name"], "pvc-abc");
        assert_eq!(v["spec"]["capacity"]["storage"], "2Gi");
        assert_eq!(v["spec"]["persistentVolumeReclaimPolicy"], "Delete");
        assert_eq!(
            v["spec"]["hostPath"]["path"],
            "/var/lib/skiff/storage/pvc-abc_web_data"
        );
        assert_eq!(v["spec"]["claimRef"]["uid"], "abc");
        let typed: core::PersistentVolume = serde_json::from_value(v).expect("pv");
        assert_eq!(pinned_node(&typed).as_deref(), Some("node-2"));
        let errs = crate::api::validation::validate_object(
            &pv_kind::INFO,
            &serde_json::to_value(&typed).expect("json"),
            None,
        );
        assert!(errs.is_empty(), "{errs:?}");
    }

    #[test]
    fn directories_are_made_and_removed_only_under_the_dir() {
        let tmp = tempfile::tempdir().expect("tmp");
        let path = directory(tmp.path(), &claim());
        make_directory(&path).expect("made");
        assert!(path.is_dir());
        remove_directory(tmp.path(), &path).expect("removed");
        assert!(!path.exists());
        remove_directory(tmp.path(), &path).expect("already gone is fine");
        assert!(matches!(
            remove_directory(tmp.path(), Path::new("/etc")),
            Err(LocalPathError::Outside { .. })
        ));
    }
}
