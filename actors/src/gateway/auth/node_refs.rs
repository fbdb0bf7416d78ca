//! What a pod references, for the node authorizer's graph: the Secrets, ConfigMaps,
//! PersistentVolumeClaims and ServiceAccount a kubelet needs to run it (Kubernetes'
//! `VisitPodSecretNames`, `VisitPodConfigmapNames` and the PVC and service account edges
//! of the node graph).

use serde_json::Value;

/// The kinds of object a pod's kubelet may read because of the pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Referenced {
    Secret,
    ConfigMap,
    Claim,
    ServiceAccount,
}

impl Referenced {
    pub fn of_resource(resource: &str) -> Option<Referenced> {
        Some(match resource {
            "secrets" => Referenced::Secret,
            "configmaps" => Referenced::ConfigMap,
            "persistentvolumeclaims" => Referenced::Claim,
            "serviceaccounts" => Referenced::ServiceAccount,
            _ => return None,
        })
    }
}

fn str_at<'a>(v: &'a Value, pointer: &str) -> Option<&'a str> {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

fn array<'a>(v: &'a Value, pointer: &str) -> impl Iterator<Item = &'a Value> {
    v.pointer(pointer)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

/// The containers of every kind: init, regular and ephemeral.
fn containers(pod: &Value) -> impl Iterator<Item = &Value> {
    array(pod, "/spec/initContainers")
        .chain(array(pod, "/spec/containers"))
        .chain(array(pod, "/spec/ephemeralContainers"))
}

/// The names of objects of `kind` that `pod` references.
pub fn names(pod: &Value, kind: Referenced) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut add = |s: Option<&str>| {
        if let Some(s) = s {
            out.push(s.to_string());
        }
    };
    let volumes: Vec<&Value> = array(pod, "/spec/volumes").collect();
    match kind {
        Referenced::ServiceAccount => {
            add(str_at(pod, "/spec/serviceAccountName").or(Some("default")));
        }
        Referenced::Claim => {
            let pod_name = str_at(pod, "/metadata/name").unwrap_or_default();
            for v in &volumes {
                add(str_at(v, "/persistentVolumeClaim/claimName"));
                // A generic ephemeral volume's claim is named after the pod and volume.
                if v.get("ephemeral").is_some() {
                    if let Some(vol) = str_at(v, "/name") {
                        add(Some(&format!("{pod_name}-{vol}")));
                    }
                }
            }
        }
        Referenced::Secret => {
            for s in array(pod, "/spec/imagePullSecrets") {
                add(str_at(s, "/name"));
            }
            for c in containers(pod) {
                for e in array(c, "/env") {
                    add(str_at(e, "/valueFrom/secretKeyRef/name"));
                }
                for e in array(c, "/envFrom") {
                    add(str_at(e, "/secretRef/name"));
                }
            }
            for v in &volumes {
                add(str_at(v, "/secret/secretName"));
                for src in array(v, "/projected/sources") {
                    add(str_at(src, "/secret/name"));
                }
                // Volume plugins that take credentials from a Secret.
                if let Some(map) = v.as_object() {
                    for source in map.values().filter(|s| s.is_object()) {
                        add(str_at(source, "/secretRef/name"));
                        add(str_at(source, "/nodePublishSecretRef/name"));
                    }
                }
                add(str_at(v, "/azureFile/secretName"));
            }
        }
        Referenced::ConfigMap => {
            for c in containers(pod) {
                for e in array(c, "/env") {
                    add(str_at(e, "/valueFrom/configMapKeyRef/name"));
                }
                for e in array(c, "/envFrom") {
                    add(str_at(e, "/configMapRef/name"));
                }
            }
            for v in &volumes {
                add(str_at(v, "/configMap/name"));
                for src in array(v, "/projected/sources") {
                    add(str_at(src, "/configMap/name"));
                }
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_way_a_pod_names_secrets_and_config_maps_counts() {
        let pod = json!({"metadata": {"name": "web"}, "spec": {
            "serviceAccountName": "builder",
            "imagePullSecrets": [{"name": "regcred"}],
            "initContainers": [{"name": "i", "envFrom": [{"secretRef": {"name": "init-env"}}]}],
            "containers": [{"name": "c",
                "env": [{"name": "A", "valueFrom": {"secretKeyRef": {"name": "db", "key": "k"}}},
                        {"name": "B", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "k"}}}],
                "envFrom": [{"configMapRef": {"name": "env-cm"}}]}],
            "volumes": [
                {"name": "s", "secret": {"secretName": "certs"}},
                {"name": "c", "configMap": {"name": "files"}},
                {"name": "p", "projected": {"sources": [{"secret": {"name": "proj-s"}}, {"configMap": {"name": "kube-root-ca.crt"}}]}},
                {"name": "d", "persistentVolumeClaim": {"claimName": "data"}},
                {"name": "e", "ephemeral": {"volumeClaimTemplate": {}}},
                {"name": "x", "csi": {"driver": "d", "nodePublishSecretRef": {"name": "csi-creds"}}}]}});
        assert_eq!(
            names(&pod, Referenced::Secret),
            vec!["certs", "csi-creds", "db", "init-env", "proj-s", "regcred"]
        );
        assert_eq!(
            names(&pod, Referenced::ConfigMap),
            vec!["env-cm", "files", "kube-root-ca.crt", "settings"]
        );
        assert_eq!(names(&pod, Referenced::Claim), vec!["data", "web-e"]);
        assert_eq!(names(&pod, Referenced::ServiceAccount), vec!["builder"]);
    }
}
