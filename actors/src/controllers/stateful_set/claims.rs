//! A StatefulSet's PersistentVolumeClaims, as `stateful_set_utils.go` makes them: one per
//! `volumeClaimTemplates` entry and ordinal, named `<template>-<set>-<ordinal>`, labelled
//! with the set's `matchLabels`, created before the pod and mounted by it under the
//! template's name. They outlive their pods; `persistentVolumeClaimRetentionPolicy`
//! decides, through owner references the garbage collector follows, whether they go
//! with the set (`whenDeleted: Delete`: owned by the set) or with a pod removed by a
//! scale-down (`whenScaled: Delete`: owned by that pod once it is condemned).

use k8s_openapi::api::apps::v1 as apps;
use serde_json::{json, Value};

use crate::api::meta;

/// `getPersistentVolumeClaimName`.
pub fn claim_name(template: &str, set: &str, ordinal: i32) -> String {
    format!("{template}-{set}-{ordinal}")
}

fn template_name(t: &k8s_openapi::api::core::v1::PersistentVolumeClaim) -> String {
    t.metadata.name.clone().unwrap_or_default()
}

/// The claims of `ordinal`: (name, object to create).
pub fn claims_for(set: &apps::StatefulSet, ordinal: i32) -> Vec<(String, Value)> {
    let set_name = set.metadata.name.clone().unwrap_or_default();
    let match_labels = set.spec.selector.match_labels.clone().unwrap_or_default();
    set.spec
        .volume_claim_templates
        .iter()
        .flatten()
        .map(|t| {
            let name = claim_name(&template_name(t), &set_name, ordinal);
            let mut labels = t.metadata.labels.clone().unwrap_or_default();
            labels.extend(match_labels.clone());
            let mut metadata = json!({"name": name, "labels": labels});
            if let Some(a) = t.metadata.annotations.as_ref().filter(|a| !a.is_empty()) {
                metadata["annotations"] = json!(a);
            }
            let claim = json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                "metadata": metadata,
                "spec": serde_json::to_value(&t.spec).unwrap_or_else(|_| json!({}))});
            (name, claim)
        })
        .collect()
}

/// `updateStorage`: the pod's volumes name its claims, replacing any pod template volume
/// of the same name.
pub fn mount_claims(set: &apps::StatefulSet, ordinal: i32, pod_spec: &mut Value) {
    let set_name = set.metadata.name.clone().unwrap_or_default();
    let templates: Vec<String> = set
        .spec
        .volume_claim_templates
        .iter()
        .flatten()
        .map(template_name)
        .collect();
    if templates.is_empty() {
        return;
    }
    let mut volumes: Vec<Value> = pod_spec
        .get("volumes")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    volumes.retain(|v| {
        !templates
            .iter()
            .any(|t| v.get("name").and_then(Value::as_str) == Some(t.as_str()))
    });
    for t in &templates {
        volumes.push(json!({"name": t, "persistentVolumeClaim": {
            "claimName": claim_name(t, &set_name, ordinal)}}));
    }
    pod_spec["volumes"] = json!(volumes);
}

/// What a claim's owner references should say under the retention policy
/// (`updateClaimOwnerRefForSetAndPod`): whether the set owns it, and whether the pod does.
pub fn wanted_owners(set: &apps::StatefulSet, condemned: bool) -> (bool, bool) {
    let policy = set
        .spec
        .persistent_volume_claim_retention_policy
        .clone()
        .unwrap_or_default();
    let delete = |v: &Option<String>| v.as_deref() == Some("Delete");
    match (delete(&policy.when_deleted), delete(&policy.when_scaled)) {
        (false, false) => (false, false),
        (true, false) => (true, false),
        (false, true) => (false, condemned),
        (true, true) => (!condemned, condemned),
    }
}

/// A non-controller owner reference, as the StatefulSet controller sets them on claims.
pub fn owner(api_version: &str, kind: &str, obj: &Value) -> Value {
    json!({"apiVersion": api_version, "kind": kind,
        "name": meta::name(obj), "uid": meta::uid(obj), "blockOwnerDeletion": true})
}

/// The claim's owner references with the set's and the pod's as wanted (others kept);
/// `None` when they already are.
pub fn owners_update(
    claim: &Value,
    set: &Value,
    pod: Option<&Value>,
    wanted: (bool, bool),
) -> Option<Vec<Value>> {
    let refs: Vec<Value> = claim
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let uid_of = |r: &Value| r.get("uid").and_then(Value::as_str).map(str::to_string);
    let set_uid = meta::uid(set).map(str::to_string);
    let pod_uid = pod.and_then(meta::uid).map(str::to_string);
    let is_set = |r: &Value| uid_of(r).is_some() && uid_of(r) == set_uid;
    let is_pod = |r: &Value| {
        r.get("kind").and_then(Value::as_str) == Some("Pod")
            && r.get("name").and_then(Value::as_str) == pod.and_then(meta::name)
    };
    let mut out: Vec<Value> = refs
        .iter()
        .filter(|r| !is_set(r) && !is_pod(r))
        .cloned()
        .collect();
    if wanted.0 {
        out.push(owner("apps/v1", "StatefulSet", set));
    }
    if let (true, Some(p)) = (wanted.1, pod) {
        if pod_uid.is_some() {
            out.push(owner("v1", "Pod", p));
        }
    }
    let same = out.len() == refs.len()
        && out
            .iter()
            .all(|r| refs.iter().any(|x| uid_of(x) == uid_of(r)));
    (!same).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(policy: Value) -> apps::StatefulSet {
        serde_json::from_value(json!({"metadata": {"name": "web", "namespace": "default", "uid": "s1"},
            "spec": {"selector": {"matchLabels": {"app": "web"}}, "serviceName": "web",
                "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "i"}],
                    "volumes": [{"name": "data", "emptyDir": {}}, {"name": "cache", "emptyDir": {}}]}},
                "persistentVolumeClaimRetentionPolicy": policy,
                "volumeClaimTemplates": [{"metadata": {"name": "data", "labels": {"tier": "db"}},
                    "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}]}}))
        .expect("set")
    }

    #[test]
    fn claims_are_named_per_template_set_and_ordinal_with_the_selector_labels() {
        let s = set(json!({}));
        let claims = claims_for(&s, 2);
        assert_eq!(claims.len(), 1);
        assert_eq!(claims[0].0, "data-web-2");
        assert_eq!(
            claims[0].1["metadata"]["labels"],
            json!({"app": "web", "tier": "db"})
        );
        assert_eq!(
            claims[0].1["spec"]["resources"]["requests"]["storage"],
            "1Gi"
        );
    }

    #[test]
    fn the_pod_mounts_its_claims_in_place_of_same_named_volumes() {
        let s = set(json!({}));
        let mut spec = serde_json::to_value(s.spec.template.spec.clone()).expect("spec");
        mount_claims(&s, 0, &mut spec);
        assert_eq!(
            spec["volumes"],
            json!([{"name": "cache", "emptyDir": {}},
                {"name": "data", "persistentVolumeClaim": {"claimName": "data-web-0"}}])
        );
    }

    #[test]
    fn the_retention_policy_decides_who_owns_a_claim() {
        let both = set(json!({"whenDeleted": "Delete", "whenScaled": "Delete"}));
        assert_eq!(wanted_owners(&both, false), (true, false));
        assert_eq!(wanted_owners(&both, true), (false, true));
        let retain = set(json!({"whenDeleted": "Retain", "whenScaled": "Retain"}));
        assert_eq!(wanted_owners(&retain, true), (false, false));
        let scaled = set(json!({"whenDeleted": "Retain", "whenScaled": "Delete"}));
        assert_eq!(wanted_owners(&scaled, false), (false, false));
        assert_eq!(wanted_owners(&scaled, true), (false, true));
    }

    #[test]
    fn owner_references_are_rewritten_only_when_they_differ() {
        let s = json!({"metadata": {"name": "web", "uid": "s1"}});
        let pod = json!({"metadata": {"name": "web-3", "uid": "p3"}});
        let claim = json!({"metadata": {"name": "data-web-3"}});
        let refs = owners_update(&claim, &s, Some(&pod), (false, true)).expect("changed");
        assert_eq!(refs.len(), 1);
        assert_eq!(refs[0]["kind"], "Pod");
        let owned = json!({"metadata": {"name": "data-web-3", "ownerReferences": refs}});
        assert!(owners_update(&owned, &s, Some(&pod), (false, true)).is_none());
        assert_eq!(
            owners_update(&owned, &s, Some(&pod), (false, false)),
            Some(vec![])
        );
    }
}
