//! apps/v1 StatefulSet: defaults as `SetDefaults_StatefulSet` (OrderedReady, RollingUpdate
//! from partition 0, one replica, ten revisions, PVCs retained), validation as
//! `ValidateStatefulSet(Update)`, and the `scale` and `status` subresources. Each
//! `volumeClaimTemplates` entry is validated as a claim's spec.
//!
//! One field is refused rather than accepted and ignored:
//! `updateStrategy.rollingUpdate.maxUnavailable` (behind the MaxUnavailableStatefulSet
//! feature gate in Kubernetes), which the controller does not build.

use chrono::{DateTime, Utc};
use k8s_openapi::api::apps::v1 as apps;
use serde_json::{json, Value};

use super::{deployment, workload};
use crate::api::patch::ListStrategy;
use crate::api::resources::{schema_of, ResourceInfo, Storage};
use crate::api::strategy::{ScaleMapping, Typed, TypedStrategy};
use crate::api::table;
use crate::api::validation::FieldError;

pub static INFO: ResourceInfo = ResourceInfo {
    group: "apps",
    version: "v1",
    name: "statefulsets",
    singular: "statefulset",
    kind: "StatefulSet",
    namespaced: true,
    short_names: &["sts"],
    subresources: &["status", "scale"],
    has_status_subresource: true,
    field_selectors: &[],
    categories: &["all"],
    schema: Some(schema_of::<apps::StatefulSet>),
    strategy: &Typed(StatefulSetStrategy),
    storage: Storage::Stored,
};

const POLICIES: &[&str] = &["OrderedReady", "Parallel"];
const RETENTION: &[&str] = &["Retain", "Delete"];

#[derive(Debug)]
pub struct StatefulSetStrategy;

impl TypedStrategy for StatefulSetStrategy {
    type Object = apps::StatefulSet;
    const KIND: &'static str = "StatefulSet";
    const API_VERSION: &'static str = "apps/v1";

    fn default(&self, s: &mut apps::StatefulSet) {
        let spec = &mut s.spec;
        spec.pod_management_policy
            .get_or_insert_with(|| "OrderedReady".into());
        let strategy = spec.update_strategy.get_or_insert_with(Default::default);
        if strategy.type_.is_none() {
            strategy.type_ = Some("RollingUpdate".into());
            strategy.rolling_update.get_or_insert_with(Default::default);
        }
        if strategy.type_.as_deref() == Some("RollingUpdate") {
            if let Some(ru) = strategy.rolling_update.as_mut() {
                ru.partition.get_or_insert(0);
            }
        }
        let retention = spec
            .persistent_volume_claim_retention_policy
            .get_or_insert_with(Default::default);
        retention
            .when_deleted
            .get_or_insert_with(|| "Retain".into());
        retention.when_scaled.get_or_insert_with(|| "Retain".into());
        spec.replicas.get_or_insert(1);
        spec.revision_history_limit.get_or_insert(10);
        if let Some(pod) = spec.template.spec.as_mut() {
            crate::api::defaults::default_pod_spec_typed(pod);
        }
        // `SetDefaults_PersistentVolumeClaim` on each template, as kube-apiserver shows.
        for t in spec.volume_claim_templates.iter_mut().flatten() {
            t.spec
                .get_or_insert_with(Default::default)
                .volume_mode
                .get_or_insert_with(|| "Filesystem".into());
            t.status
                .get_or_insert_with(Default::default)
                .phase
                .get_or_insert_with(|| "Pending".into());
        }
    }

    fn prepare_for_create(&self, s: &mut apps::StatefulSet) {
        s.status = Some(Default::default());
    }

    fn validate(&self, s: &apps::StatefulSet, old: Option<&apps::StatefulSet>) -> Vec<FieldError> {
        let mut errs = Vec::new();
        let spec = &s.spec;
        match spec.pod_management_policy.as_deref() {
            None | Some("") => errs.push(FieldError::required("spec.podManagementPolicy")),
            Some(p) if !POLICIES.contains(&p) => errs.push(FieldError::not_supported(
                "spec.podManagementPolicy",
                &json!(p),
                POLICIES,
            )),
            Some(_) => {}
        }
        validate_update_strategy(spec.update_strategy.as_ref(), &mut errs);
        if let Some(r) = &spec.persistent_volume_claim_retention_policy {
            let path = "spec.persistentVolumeClaimRetentionPolicy";
            for (field, v) in [
                ("whenDeleted", &r.when_deleted),
                ("whenScaled", &r.when_scaled),
            ] {
                if let Some(v) = v.as_deref().filter(|v| !RETENTION.contains(v)) {
                    errs.push(FieldError::not_supported(
                        format!("{path}.{field}"),
                        &json!(v),
                        RETENTION,
                    ));
                }
            }
        }
        workload::non_negative(spec.replicas, "spec.replicas", &mut errs);
        workload::non_negative(spec.min_ready_seconds, "spec.minReadySeconds", &mut errs);
        workload::non_negative(
            spec.revision_history_limit,
            "spec.revisionHistoryLimit",
            &mut errs,
        );
        if let Some(o) = &spec.ordinals {
            workload::non_negative(o.start, "spec.ordinals.start", &mut errs);
        }
        // The pods get a volume per claim template, so the template's mounts are checked
        // against the union (Kubernetes skips the template's pod spec for this reason).
        let mut template = spec.template.clone();
        if let Some(pod) = template.spec.as_mut() {
            let volumes = pod.volumes.get_or_insert_with(Vec::new);
            for t in spec.volume_claim_templates.iter().flatten() {
                let name = t.metadata.name.clone().unwrap_or_default();
                if !name.is_empty() && !volumes.iter().any(|v| v.name == name) {
                    volumes.push(k8s_openapi::api::core::v1::Volume {
                        name: name.clone(),
                        persistent_volume_claim: Some(
                            k8s_openapi::api::core::v1::PersistentVolumeClaimVolumeSource {
                                claim_name: name,
                                read_only: None,
                            },
                        ),
                        ..Default::default()
                    });
                }
            }
        }
        workload::validate_selector_and_template(
            "StatefulSet",
            Some(&spec.selector),
            &template,
            &mut errs,
        );
        for e in errs.iter_mut() {
            if e.field == "spec.template.spec.activeDeadlineSeconds" {
                e.detail = "activeDeadlineSeconds in StatefulSet is not Supported".into();
            }
        }
        for (i, t) in spec.volume_claim_templates.iter().flatten().enumerate() {
            let path = format!("spec.volumeClaimTemplates[{i}]");
            match t.metadata.name.as_deref() {
                None | Some("") => errs.push(FieldError::required(format!("{path}.metadata.name"))),
                Some(n) => {
                    for msg in crate::api::validation::dns1123_subdomain_errors(n) {
                        errs.push(FieldError::invalid(
                            format!("{path}.metadata.name"),
                            &json!(n),
                            msg,
                        ));
                    }
                }
            }
            super::persistent_volume_claim::validate_spec(
                &t.spec.clone().unwrap_or_default(),
                &format!("{path}.spec"),
                &mut errs,
            );
        }
        if let Some(old) = old.map(|o| &o.spec) {
            // Only these may change: replicas, ordinals, template, updateStrategy,
            // revisionHistoryLimit, persistentVolumeClaimRetentionPolicy, minReadySeconds.
            let frozen = |x: &apps::StatefulSetSpec| {
                (
                    x.selector.clone(),
                    x.service_name.clone(),
                    x.pod_management_policy.clone(),
                    x.volume_claim_templates.clone(),
                )
            };
            if frozen(spec) != frozen(old) {
                errs.push(FieldError::forbidden(
                    "spec",
                    "updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'revisionHistoryLimit', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden",
                ));
            }
        }
        errs
    }

    fn list_strategy(&self, path: &[&str]) -> ListStrategy {
        workload::list_strategy(path)
    }

    fn scale(&self) -> Option<ScaleMapping> {
        Some(ScaleMapping {
            map_selector: false,
        })
    }

    fn columns(&self) -> Vec<Value> {
        vec![
            table::name_column(0),
            table::column("Ready", "string", 0, "Number of the pod with ready state"),
            table::age_column(),
            table::column("Containers", "string", 1, table::CONTAINERS_DESC),
            table::column("Images", "string", 1, table::IMAGES_DESC),
        ]
    }

    fn cells(&self, s: &apps::StatefulSet, raw: &Value, now: DateTime<Utc>) -> Vec<Value> {
        let spec = Some(&s.spec);
        let desired = spec.and_then(|s| s.replicas).unwrap_or(1);
        let ready = s
            .status
            .as_ref()
            .and_then(|s| s.ready_replicas)
            .unwrap_or(0);
        let (containers, images) = deployment::template_cells(spec.map(|s| &s.template));
        vec![
            table::name(raw),
            json!(format!("{ready}/{desired}")),
            table::age(raw, now),
            json!(containers),
            json!(images),
        ]
    }
}

fn validate_update_strategy(
    s: Option<&apps::StatefulSetUpdateStrategy>,
    errs: &mut Vec<FieldError>,
) {
    let path = "spec.updateStrategy";
    let Some(s) = s else {
        errs.push(FieldError::required(path));
        return;
    };
    match s.type_.as_deref() {
        None | Some("") => errs.push(FieldError::required(path)),
        Some("OnDelete") => {
            if let Some(ru) = &s.rolling_update {
                errs.push(FieldError::invalid(
                    format!("{path}.rollingUpdate"),
                    &serde_json::to_value(ru).unwrap_or(Value::Null),
                    "only allowed for updateStrategy 'RollingUpdate'",
                ));
            }
        }
        Some("RollingUpdate") => {
            let Some(ru) = &s.rolling_update else { return };
            workload::non_negative(
                ru.partition,
                &format!("{path}.rollingUpdate.partition"),
                errs,
            );
            if ru.max_unavailable.is_some() {
                errs.push(FieldError::forbidden(
                    format!("{path}.rollingUpdate.maxUnavailable"),
                    "not supported by this server: the MaxUnavailableStatefulSet feature is not built; updates replace one pod at a time",
                ));
            }
        }
        Some(other) => errs.push(FieldError::invalid(
            path,
            &json!(other),
            "must be 'RollingUpdate' or 'OnDelete'",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::validation::validate_object;

    fn set() -> Value {
        json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"serviceName": "web", "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}})
    }

    fn defaulted(mut s: Value) -> Value {
        INFO.strategy.default(&mut s);
        s
    }

    fn fields(s: &Value, old: Option<&Value>) -> Vec<String> {
        validate_object(&INFO, s, old)
            .into_iter()
            .map(|e| format!("{}: {}", e.field, e.detail))
            .collect()
    }

    #[test]
    fn defaults_are_ordered_ready_partition_zero_and_retained_claims() {
        let s = defaulted(set());
        assert_eq!(s["spec"]["podManagementPolicy"], "OrderedReady");
        assert_eq!(s["spec"]["updateStrategy"]["type"], "RollingUpdate");
        assert_eq!(s["spec"]["updateStrategy"]["rollingUpdate"]["partition"], 0);
        assert_eq!(s["spec"]["replicas"], 1);
        assert_eq!(s["spec"]["revisionHistoryLimit"], 10);
        let r = &s["spec"]["persistentVolumeClaimRetentionPolicy"];
        assert_eq!(
            (r["whenDeleted"].as_str(), r["whenScaled"].as_str()),
            (Some("Retain"), Some("Retain"))
        );
        assert_eq!(defaulted(s.clone()), s);
        assert!(fields(&s, None).is_empty(), "{:?}", fields(&s, None));
    }

    #[test]
    fn bad_input_is_refused_with_kubernetes_paths() {
        let base = defaulted(set());
        let mut s = base.clone();
        s["spec"]["template"]["metadata"]["labels"] = json!({"app": "db"});
        assert_eq!(
            fields(&s, None),
            ["spec.template.metadata.labels: `selector` does not match template `labels`"]
        );
        let mut s = base.clone();
        s["spec"]["updateStrategy"]["rollingUpdate"]["partition"] = json!(-1);
        s["spec"]["replicas"] = json!(-2);
        s["spec"]["podManagementPolicy"] = json!("Random");
        let f = fields(&s, None);
        assert!(
            f.iter()
                .any(|e| e.starts_with("spec.updateStrategy.rollingUpdate.partition: ")),
            "{f:?}"
        );
        assert!(f.iter().any(|e| e.starts_with("spec.replicas: ")), "{f:?}");
        assert!(
            f.iter()
                .any(|e| e.starts_with("spec.podManagementPolicy: ")),
            "{f:?}"
        );
        let mut s = base.clone();
        s["spec"]["updateStrategy"] =
            json!({"type": "OnDelete", "rollingUpdate": {"partition": 1}});
        assert_eq!(
            fields(&s, None),
            ["spec.updateStrategy.rollingUpdate: only allowed for updateStrategy 'RollingUpdate'"]
        );
    }

    #[test]
    fn what_is_not_built_is_refused_not_ignored() {
        let mut s = defaulted(set());
        s["spec"]["updateStrategy"]["rollingUpdate"]["maxUnavailable"] = json!(2);
        let f = fields(&s, None);
        assert!(
            f.iter()
                .any(|e| e.starts_with("spec.updateStrategy.rollingUpdate.maxUnavailable: ")),
            "{f:?}"
        );
    }

    #[test]
    fn claim_templates_are_validated_as_claims() {
        let mut s = set();
        s["spec"]["volumeClaimTemplates"] = json!([{"metadata": {"name": "data"},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}]);
        let s = defaulted(s);
        assert_eq!(
            s["spec"]["volumeClaimTemplates"][0]["spec"]["volumeMode"],
            "Filesystem"
        );
        assert!(fields(&s, None).is_empty(), "{:?}", fields(&s, None));
        let mut bad = s.clone();
        bad["spec"]["volumeClaimTemplates"][0]["spec"]["accessModes"] = json!([]);
        bad["spec"]["volumeClaimTemplates"][0]["spec"]["resources"] = json!({});
        assert_eq!(
            fields(&bad, None),
            [
                "spec.volumeClaimTemplates[0].spec.accessModes: at least 1 access mode is required",
                "spec.volumeClaimTemplates[0].spec.resources[storage]: ",
            ]
        );
    }

    #[test]
    fn only_the_mutable_fields_may_change() {
        let old = defaulted(set());
        let mut scaled = old.clone();
        scaled["spec"]["replicas"] = json!(5);
        scaled["spec"]["template"]["spec"]["containers"][0]["image"] = json!("busybox:2");
        assert!(fields(&scaled, Some(&old)).is_empty());
        let mut renamed = old.clone();
        renamed["spec"]["serviceName"] = json!("other");
        assert!(fields(&renamed, Some(&old))[0].starts_with("spec: updates to statefulset spec"));
    }

    #[test]
    fn the_table_row_shows_ready_over_desired() {
        let mut s = defaulted(set());
        s["spec"]["replicas"] = json!(3);
        s["status"] = json!({"replicas": 3, "readyReplicas": 2});
        let cells = INFO.strategy.cells(&s, Utc::now());
        assert_eq!(cells[1], "2/3");
        assert_eq!(cells.len(), INFO.strategy.columns().len());
    }
}
