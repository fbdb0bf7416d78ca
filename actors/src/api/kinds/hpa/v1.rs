//! autoscaling/v1 HorizontalPodAutoscaler: a view of the stored v2 objects. Requests are
//! decoded in v1's terms and converted; defaults and validation are the v2 kind's, on the
//! stored form, as kube-apiserver validates every version as the internal object (so a
//! v1 client sees v2's field paths for what it carried in the metrics annotation).

use chrono::{DateTime, Utc};
use k8s_openapi::api::autoscaling;
use serde_json::Value;

use super::conversion;
use crate::api::resources::{schema_of, ResourceInfo, Storage};
use crate::api::strategy::{Part, Strategy};
use crate::api::validation::{self, DecodeError, FieldError};

pub static V1: ResourceInfo = ResourceInfo {
    group: "autoscaling",
    version: "v1",
    name: "horizontalpodautoscalers",
    singular: "horizontalpodautoscaler",
    kind: "HorizontalPodAutoscaler",
    namespaced: true,
    short_names: &["hpa"],
    subresources: &["status"],
    has_status_subresource: true,
    field_selectors: &[],
    categories: &["all"],
    schema: Some(schema_of::<autoscaling::v1::HorizontalPodAutoscaler>),
    strategy: &HpaV1Strategy,
    storage: Storage::View {
        of: super::API_VERSION,
    },
};

#[derive(Debug)]
pub struct HpaV1Strategy;

fn stored() -> &'static dyn Strategy {
    super::INFO.strategy
}

impl Strategy for HpaV1Strategy {
    fn decode(&self, obj: &Value) -> Result<Vec<String>, DecodeError> {
        validation::round_trip::<autoscaling::v1::HorizontalPodAutoscaler>(
            "HorizontalPodAutoscaler",
            "autoscaling/v1",
            obj,
        )
    }

    fn default(&self, obj: &mut Value) {
        stored().default(obj);
    }

    fn prepare_for_create(&self, obj: &mut Value) {
        stored().prepare_for_create(obj);
    }

    fn prepare_for_update(&self, old: &Value, new: &mut Value, part: Part) {
        stored().prepare_for_update(old, new, part);
    }

    fn validate(&self, obj: &Value, old: Option<&Value>) -> Vec<FieldError> {
        stored().validate(obj, old)
    }

    /// A round-trip annotation that does not parse would otherwise be kept as a plain
    /// annotation: refuse it, as kube-apiserver fails to convert it.
    fn validate_view_create(&self, view: &Value) -> Vec<FieldError> {
        conversion::unparseable_annotations(view)
            .into_iter()
            .map(|k| {
                let value = view["metadata"]["annotations"][k].clone();
                FieldError::invalid(
                    format!("metadata.annotations[{k}]"),
                    &value,
                    "must be the JSON kube-apiserver writes for this annotation",
                )
            })
            .collect()
    }

    fn list_strategy(&self, path: &[&str]) -> crate::api::patch::ListStrategy {
        stored().list_strategy(path)
    }

    fn columns(&self) -> Vec<Value> {
        stored().columns()
    }

    fn cells(&self, obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
        stored().cells(&conversion::to_v2(obj), now)
    }

    fn to_view(&self, stored: Value) -> Value {
        conversion::to_v1(&stored)
    }

    fn stored_from_view(&self, view: Value) -> Value {
        conversion::to_v2(&view)
    }

    fn upgrade_stored(&self, raw: &Value) -> Option<Value> {
        stored().upgrade_stored(raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn v1_writes_are_stored_as_v2_and_read_back_as_v1() {
        let v1 = json!({"apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"scaleTargetRef": {"apiVersion": "v1", "kind": "ReplicationController",
                "name": "web"}, "maxReplicas": 3, "targetCPUUtilizationPercentage": 50}});
        let mut stored_form = V1.strategy.stored_from_view(v1.clone());
        V1.strategy.default(&mut stored_form);
        assert_eq!(stored_form["apiVersion"], "autoscaling/v2");
        assert!(V1.strategy.validate(&stored_form, None).is_empty());
        let shown = V1.strategy.to_view(stored_form);
        assert_eq!(shown["spec"]["targetCPUUtilizationPercentage"], 50);
        assert_eq!(shown["spec"]["minReplicas"], 1);
        assert_eq!(
            V1.strategy.cells(&shown, Utc::now())[2],
            "cpu: <unknown>/50%"
        );
    }

    #[test]
    fn a_broken_metrics_annotation_is_refused_on_create() {
        let v1 = json!({"metadata": {"name": "web",
            "annotations": {conversion::METRICS_ANNOTATION: "not json"}},
            "spec": {"maxReplicas": 3}});
        let errs = V1.strategy.validate_view_create(&v1);
        assert_eq!(errs.len(), 1);
        assert_eq!(
            errs[0].field,
            "metadata.annotations[autoscaling.alpha.kubernetes.io/metrics]"
        );
    }
}
