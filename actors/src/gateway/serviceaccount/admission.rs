//! The ServiceAccount admission plugin (kube-apiserver's
//! `plugin/pkg/admission/serviceaccount`), on pod creation: a pod without
//! `serviceAccountName` runs as `default`; a pod naming an account that does not exist is
//! refused (403); the account's `imagePullSecrets` are given to a pod without any; and
//! unless the pod or the account says `automountServiceAccountToken: false`, every
//! container and init container mounts the `kube-api-access-<random>` projected volume
//! (a bound token, the cluster CA and the namespace) read-only at
//! `/var/run/secrets/kubernetes.io/serviceaccount`.

use std::time::Duration;

use serde_json::{json, Value};

use crate::api::kinds::service_account::DEFAULT_NAME;
use crate::api::resources::object_key;
use crate::api::{meta, ApiError};
use crate::store::StoreHandle;

use super::request::WARN_ONLY_EXPIRATION_SECONDS;

/// Where the token, `ca.crt` and `namespace` appear in every container.
pub const MOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// The prefix of the projected volume's name.
pub const VOLUME_PREFIX: &str = "kube-api-access-";
/// The ConfigMap the root CA publisher keeps in every namespace.
pub const ROOT_CA_CONFIG_MAP: &str = "kube-root-ca.crt";
/// How often, and how far apart, the `default` account is looked for before a pod is
/// refused: the ServiceAccount controller creates it right after its namespace.
const DEFAULT_ATTEMPTS: u32 = 10;

/// The `kube-api-access` volume Kubernetes' admission writes (`TokenVolumeSource`).
pub fn token_volume(name: &str) -> Value {
    json!({"name": name, "projected": {
    "defaultMode": 0o644,
    "sources": [
        {"serviceAccountToken": {"expirationSeconds": WARN_ONLY_EXPIRATION_SECONDS, "path": "token"}},
        {"configMap": {"name": ROOT_CA_CONFIG_MAP, "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
        {"downwardAPI": {"items": [{"path": "namespace",
            "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
    ]}})
}

/// A name from `prefix` and five random characters, as apimachinery's
/// SimpleNameGenerator makes them (no vowels, no look-alike digits).
pub fn generate_name(prefix: &str) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut bytes = [0u8; 5];
    // uuid v4 draws from the OS generator; its bytes are as good as any for a suffix.
    bytes.copy_from_slice(&uuid::Uuid::new_v4().as_bytes()[..5]);
    let suffix: String = bytes
        .iter()
        .map(|b| ALPHABET[(*b as usize) % ALPHABET.len()] as char)
        .collect();
    format!("{prefix}{suffix}")
}

async fn lookup(store: &StoreHandle, namespace: &str, name: &str) -> Option<Value> {
    let key = object_key("serviceaccounts", Some(namespace), name);
    let attempts = if name == DEFAULT_NAME {
        DEFAULT_ATTEMPTS
    } else {
        1
    };
    for i in 0..attempts {
        if i > 0 {
            let jitter = u64::from(uuid::Uuid::new_v4().as_bytes()[0]) % 100;
            tokio::time::sleep(Duration::from_millis(100 + jitter)).await;
        }
        if let Some(sa) = store.get(&key) {
            return Some((*sa.value).clone());
        }
    }
    None
}

/// Admit a pod being created in `namespace` (mutating it as Kubernetes does).
pub async fn admit_pod(
    store: &StoreHandle,
    namespace: &str,
    pod: &mut Value,
) -> Result<(), ApiError> {
    let pod_name = meta::name(pod).unwrap_or_default().to_string();
    let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else {
        return Ok(());
    };
    let named = spec
        .get("serviceAccountName")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        // The deprecated field still names the account when the new one is absent.
        .or_else(|| {
            spec.get("serviceAccount")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
        })
        .unwrap_or(DEFAULT_NAME)
        .to_string();
    spec.insert("serviceAccountName".into(), json!(named));
    spec.insert("serviceAccount".into(), json!(named));
    let Some(sa) = lookup(store, namespace, &named).await else {
        return Err(ApiError::Forbidden(format!(
            "pods {pod_name:?} is forbidden: error looking up service account {namespace}/{named}: serviceaccount {named:?} not found"
        )));
    };
    let no_pull_secrets = spec
        .get("imagePullSecrets")
        .and_then(Value::as_array)
        .is_none_or(Vec::is_empty);
    if no_pull_secrets {
        if let Some(secrets) = sa
            .get("imagePullSecrets")
            .and_then(Value::as_array)
            .filter(|s| !s.is_empty())
        {
            let refs: Vec<Value> = secrets
                .iter()
                .filter_map(|s| s.get("name"))
                .map(|n| json!({"name": n}))
                .collect();
            spec.insert("imagePullSecrets".into(), json!(refs));
        }
    }
    let automount = spec
        .get("automountServiceAccountToken")
        .and_then(Value::as_bool)
        .or_else(|| {
            sa.get("automountServiceAccountToken")
                .and_then(Value::as_bool)
        })
        .unwrap_or(true);
    if automount {
        mount_token(spec);
    }
    Ok(())
}

/// Mount the token volume in every container that has nothing at the mount path yet, and
/// add the volume when some container mounts it and the pod has none already.
fn mount_token(spec: &mut serde_json::Map<String, Value>) {
    let existing = spec
        .get("volumes")
        .and_then(Value::as_array)
        .and_then(|vs| {
            vs.iter()
                .filter_map(|v| v.get("name").and_then(Value::as_str))
                .find(|n| n.starts_with(VOLUME_PREFIX))
                .map(str::to_string)
        });
    let volume_name = existing
        .clone()
        .unwrap_or_else(|| generate_name(VOLUME_PREFIX));
    let mount = json!({"name": volume_name, "readOnly": true, "mountPath": MOUNT_PATH});
    let mut needed = false;
    for list in ["initContainers", "containers"] {
        let Some(containers) = spec.get_mut(list).and_then(Value::as_array_mut) else {
            continue;
        };
        for c in containers.iter_mut().filter_map(Value::as_object_mut) {
            let taken = c
                .get("volumeMounts")
                .and_then(Value::as_array)
                .is_some_and(|ms| {
                    ms.iter()
                        .any(|m| m.get("mountPath").and_then(Value::as_str) == Some(MOUNT_PATH))
                });
            if taken {
                continue;
            }
            let mounts = c.entry("volumeMounts").or_insert_with(|| json!([]));
            if !mounts.is_array() {
                *mounts = json!([]);
            }
            if let Some(ms) = mounts.as_array_mut() {
                ms.push(mount.clone());
                needed = true;
            }
        }
    }
    if existing.is_none() && needed {
        let volumes = spec.entry("volumes").or_insert_with(|| json!([]));
        if !volumes.is_array() {
            *volumes = json!([]);
        }
        if let Some(vs) = volumes.as_array_mut() {
            vs.push(token_volume(&volume_name));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_container_mounts_one_generated_token_volume() {
        let mut pod = json!({"spec": {
            "initContainers": [{"name": "init", "image": "busybox"}],
            "containers": [
                {"name": "a", "image": "busybox"},
                {"name": "b", "image": "busybox", "volumeMounts": [{"name": "own", "mountPath": MOUNT_PATH}]},
            ],
            "volumes": [{"name": "own", "emptyDir": {}}]}});
        mount_token(pod["spec"].as_object_mut().expect("spec"));
        let volumes = pod["spec"]["volumes"].as_array().expect("volumes");
        assert_eq!(volumes.len(), 2);
        let name = volumes[1]["name"].as_str().expect("name");
        assert!(
            name.starts_with(VOLUME_PREFIX) && name.len() == VOLUME_PREFIX.len() + 5,
            "{name}"
        );
        assert_eq!(volumes[1], token_volume(name));
        assert_eq!(volumes[1]["projected"]["defaultMode"], 420);
        assert_eq!(
            volumes[1]["projected"]["sources"][0]["serviceAccountToken"]["expirationSeconds"],
            3607
        );
        let expected = json!({"name": name, "readOnly": true, "mountPath": MOUNT_PATH});
        assert_eq!(
            pod["spec"]["initContainers"][0]["volumeMounts"],
            json!([expected])
        );
        assert_eq!(
            pod["spec"]["containers"][0]["volumeMounts"],
            json!([expected])
        );
        // A container with its own mount at the path keeps it alone.
        assert_eq!(
            pod["spec"]["containers"][1]["volumeMounts"]
                .as_array()
                .map(Vec::len),
            Some(1)
        );
        // Admitting again changes nothing.
        let before = pod.clone();
        mount_token(pod["spec"].as_object_mut().expect("spec"));
        assert_eq!(pod, before);
    }

    #[test]
    fn generated_names_use_the_name_generator_alphabet() {
        let n = generate_name("kube-api-access-");
        let suffix = n.strip_prefix("kube-api-access-").expect("prefix");
        assert_eq!(suffix.len(), 5);
        assert!(
            suffix
                .chars()
                .all(|c| "bcdfghjklmnpqrstvwxz2456789".contains(c)),
            "{n}"
        );
    }

    async fn store_with_sa(sa: Option<Value>) -> (tempfile::TempDir, actix::Arbiter, StoreHandle) {
        use crate::store::{self, StoreConfig, WriteOp};
        use std::sync::Arc;
        let dir = tempfile::tempdir().expect("tempdir");
        let metrics = Arc::new(crate::metrics::Metrics::new().expect("metrics"));
        let arbiter = actix::Arbiter::new();
        let handle =
            store::start(StoreConfig::new(dir.path()), metrics, &arbiter.handle()).expect("store");
        if let Some(sa) = sa {
            let name = sa["metadata"]["name"].as_str().expect("name").to_string();
            handle
                .write(WriteOp::Create {
                    key: object_key("serviceaccounts", Some("dev"), &name),
                    object: sa,
                })
                .await
                .expect("write");
        }
        (dir, arbiter, handle)
    }

    #[actix_rt::test]
    async fn a_missing_account_is_refused_with_the_plugins_words() {
        let (_d, arbiter, store) = store_with_sa(None).await;
        let mut pod = json!({"metadata": {"name": "x"}, "spec": {"serviceAccountName": "sa", "containers": []}});
        let err = admit_pod(&store, "dev", &mut pod)
            .await
            .expect_err("refused");
        assert_eq!(
            err.to_string(),
            "pods \"x\" is forbidden: error looking up service account dev/sa: serviceaccount \"sa\" not found"
        );
        assert!(matches!(err, ApiError::Forbidden(_)));
        arbiter.stop();
    }

    #[actix_rt::test]
    async fn the_default_account_is_assumed_and_automount_can_be_turned_off() {
        let sa = json!({"metadata": {"name": "default", "namespace": "dev"},
            "automountServiceAccountToken": false, "imagePullSecrets": [{"name": "regcred"}]});
        let (_d, arbiter, store) = store_with_sa(Some(sa)).await;
        let mut pod = json!({"metadata": {"name": "x"}, "spec": {"containers": [{"name": "c", "image": "i"}]}});
        admit_pod(&store, "dev", &mut pod).await.expect("admitted");
        assert_eq!(pod["spec"]["serviceAccountName"], "default");
        assert_eq!(pod["spec"]["serviceAccount"], "default");
        assert_eq!(
            pod["spec"]["imagePullSecrets"],
            json!([{"name": "regcred"}])
        );
        assert!(pod["spec"].get("volumes").is_none());
        // The pod's own word wins over the account's.
        let mut pod = json!({"metadata": {"name": "y"}, "spec": {"automountServiceAccountToken": true,
            "containers": [{"name": "c", "image": "i"}]}});
        admit_pod(&store, "dev", &mut pod).await.expect("admitted");
        assert_eq!(pod["spec"]["volumes"].as_array().map(Vec::len), Some(1));
        arbiter.stop();
    }
}
