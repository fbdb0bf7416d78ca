//! core/v1 PodTemplate: a stored pod template, the first kind written as a
//! [`TypedStrategy`] over its k8s-openapi type.

use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1 as core;
use serde_json::{json, Value};

use crate::api::patch::{self, ListStrategy};
use crate::api::resources::{schema_of, ResourceInfo, Storage};
use crate::api::strategy::{Typed, TypedStrategy};
use crate::api::validation::{self, FieldError};
use crate::api::{defaults, table};

pub static INFO: ResourceInfo = ResourceInfo {
    group: "",
    version: "v1",
    name: "podtemplates",
    singular: "podtemplate",
    kind: "PodTemplate",
    namespaced: true,
    short_names: &[],
    subresources: &[],
    has_status_subresource: false,
    field_selectors: &[],
    categories: &[],
    schema: Some(schema_of::<core::PodTemplate>),
    strategy: &Typed(PodTemplateStrategy),
    storage: Storage::Stored,
};

#[derive(Debug)]
pub struct PodTemplateStrategy;

impl TypedStrategy for PodTemplateStrategy {
    type Object = core::PodTemplate;
    const KIND: &'static str = "PodTemplate";
    const API_VERSION: &'static str = "v1";

    fn default(&self, obj: &mut core::PodTemplate) {
        if let Some(spec) = obj.template.as_mut().and_then(|t| t.spec.as_mut()) {
            defaults::default_pod_spec_typed(spec);
        }
    }

    fn validate(
        &self,
        obj: &core::PodTemplate,
        _old: Option<&core::PodTemplate>,
    ) -> Vec<FieldError> {
        let mut errs = Vec::new();
        // Until the pod spec rules are typed, the template is checked in its JSON form.
        match obj.template.as_ref().map(serde_json::to_value) {
            Some(Ok(template)) => {
                validation::validate_pod_template_spec(&template, "template", &mut errs)
            }
            _ => errs.push(FieldError::required("template")),
        }
        errs
    }

    fn list_strategy(&self, path: &[&str]) -> ListStrategy {
        match path {
            ["template", "metadata", rest @ ..] => patch::object_meta_list(rest),
            ["template", "spec", rest @ ..] => patch::pod_spec_list(rest),
            _ => ListStrategy::Replace,
        }
    }

    fn columns(&self) -> Vec<Value> {
        vec![
            table::name_column(0),
            table::column("Containers", "string", 0, table::CONTAINERS_DESC),
            table::column("Images", "string", 0, table::IMAGES_DESC),
            table::column(
                "Pod Labels",
                "string",
                0,
                "The labels for the pod template.",
            ),
        ]
    }

    fn cells(&self, obj: &core::PodTemplate, raw: &Value, _now: DateTime<Utc>) -> Vec<Value> {
        let template = obj.template.as_ref();
        let containers = template
            .and_then(|t| t.spec.as_ref())
            .map(|s| s.containers.as_slice())
            .unwrap_or_default();
        let join = |f: fn(&core::Container) -> &str| {
            containers.iter().map(f).collect::<Vec<_>>().join(",")
        };
        let labels = raw
            .pointer("/template/metadata/labels")
            .cloned()
            .unwrap_or(Value::Null);
        vec![
            table::name(raw),
            json!(join(|c| c.name.as_str())),
            json!(join(|c| c.image.as_deref().unwrap_or_default())),
            json!(table::format_labels(&labels)),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template() -> Value {
        json!({"apiVersion": "v1", "kind": "PodTemplate",
            "metadata": {"name": "t", "namespace": "default"},
            "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "c", "image": "busybox"}]}}})
    }

    #[test]
    fn defaulting_reaches_the_template_pod_spec_and_keeps_the_type_fields() {
        let mut t = template();
        INFO.strategy.default(&mut t);
        assert_eq!(t["template"]["spec"]["restartPolicy"], "Always");
        assert_eq!(
            t["template"]["spec"]["containers"][0]["imagePullPolicy"],
            "Always"
        );
        assert_eq!(t["kind"], "PodTemplate");
        assert_eq!(t["apiVersion"], "v1");
    }

    #[test]
    fn validation_reports_template_paths() {
        let mut t = template();
        t["template"]["spec"]["containers"][0]["name"] = json!("Bad_Name");
        let errs = INFO.strategy.validate(&t, None);
        assert!(
            errs.iter()
                .any(|e| e.field == "template.spec.containers[0].name"),
            "{errs:?}"
        );
    }

    #[test]
    fn a_template_is_printed_with_its_containers_images_and_labels() {
        let cells = INFO.strategy.cells(&template(), Utc::now());
        assert_eq!(cells[1], "c");
        assert_eq!(cells[2], "busybox");
        assert_eq!(cells[3], "app=web");
        assert_eq!(INFO.strategy.columns().len(), cells.len());
    }

    #[test]
    fn template_containers_merge_by_name() {
        assert_eq!(
            INFO.strategy
                .list_strategy(&["template", "spec", "containers"]),
            ListStrategy::MergeByKey("name")
        );
    }
}
