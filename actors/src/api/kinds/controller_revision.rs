//! apps/v1 ControllerRevision: an immutable snapshot of a workload's state (`data`, a
//! strategic merge patch restoring its pod template) numbered by `revision`. DaemonSets
//! and StatefulSets keep their history in them, and `kubectl rollout history|undo` reads
//! them client-side. Validation as `ValidateControllerRevision(Update)`.

use chrono::{DateTime, Utc};
use k8s_openapi::api::apps::v1 as apps;
use serde_json::{json, Value};

use super::workload;
use crate::api::resources::{schema_of, ResourceInfo, Storage};
use crate::api::strategy::{Typed, TypedStrategy};
use crate::api::table;
use crate::api::validation::FieldError;

pub static INFO: ResourceInfo = ResourceInfo {
    group: "apps",
    version: "v1",
    name: "controllerrevisions",
    singular: "controllerrevision",
    kind: "ControllerRevision",
    namespaced: true,
    short_names: &[],
    subresources: &[],
    has_status_subresource: false,
    field_selectors: &[],
    categories: &[],
    schema: Some(schema_of::<apps::ControllerRevision>),
    strategy: &Typed(ControllerRevisionStrategy),
    storage: Storage::Stored,
};

#[derive(Debug)]
pub struct ControllerRevisionStrategy;

impl TypedStrategy for ControllerRevisionStrategy {
    type Object = apps::ControllerRevision;
    const KIND: &'static str = "ControllerRevision";
    const API_VERSION: &'static str = "apps/v1";

    /// A revision has no desired state of its own to count generations of.
    fn has_generation(&self) -> bool {
        false
    }

    fn validate(
        &self,
        cr: &apps::ControllerRevision,
        old: Option<&apps::ControllerRevision>,
    ) -> Vec<FieldError> {
        let mut errs = Vec::new();
        if cr.data.0.is_null() {
            errs.push(FieldError::required("data"));
        }
        if let Some(r) = cr.revision.filter(|r| *r < 0) {
            errs.push(FieldError::invalid(
                "revision",
                &json!(r),
                workload::NONNEGATIVE,
            ));
        }
        if let Some(old) = old {
            if old.data != cr.data {
                errs.push(FieldError::immutable("data", &cr.data.0));
            }
        }
        errs
    }

    fn columns(&self) -> Vec<Value> {
        vec![
            table::name_column(0),
            table::column("Controller", "string", 0, "Controller of the object"),
            table::column(
                "Revision",
                "integer",
                0,
                "Revision indicates the revision of the state represented by Data.",
            ),
            table::age_column(),
        ]
    }

    fn cells(&self, cr: &apps::ControllerRevision, raw: &Value, now: DateTime<Utc>) -> Vec<Value> {
        vec![
            table::name(raw),
            json!(controller_cell(cr)),
            json!(cr.revision.unwrap_or(0)),
            table::age(raw, now),
        ]
    }
}

/// The CONTROLLER cell as kubectl's printer writes it: `daemonset.apps/web`.
fn controller_cell(cr: &apps::ControllerRevision) -> String {
    let owner = cr
        .metadata
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true));
    match owner {
        None => "<none>".into(),
        Some(o) => {
            let group = o.api_version.split_once('/').map(|(g, _)| g).unwrap_or("");
            let kind = if group.is_empty() {
                o.kind.to_lowercase()
            } else {
                format!("{}.{group}", o.kind.to_lowercase())
            };
            format!("{kind}/{}", o.name)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::validation::validate_object;

    fn revision() -> Value {
        json!({"apiVersion": "apps/v1", "kind": "ControllerRevision",
            "metadata": {"name": "web-abc", "namespace": "default",
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "DaemonSet",
                    "name": "web", "uid": "u", "controller": true}]},
            "data": {"spec": {"template": {"$patch": "replace"}}}, "revision": 1})
    }

    fn fields(cr: &Value, old: Option<&Value>) -> Vec<String> {
        validate_object(&INFO, cr, old)
            .into_iter()
            .map(|e| format!("{}: {}", e.field, e.detail))
            .collect()
    }

    #[test]
    fn data_is_required_and_immutable_while_the_revision_number_may_move() {
        let old = revision();
        assert!(fields(&old, None).is_empty(), "{:?}", fields(&old, None));
        let mut renumbered = old.clone();
        renumbered["revision"] = json!(4);
        assert!(fields(&renumbered, Some(&old)).is_empty());
        let mut changed = old.clone();
        changed["data"] = json!({"spec": {}});
        assert_eq!(fields(&changed, Some(&old)), ["data: field is immutable"]);
        let mut missing = old.clone();
        missing.as_object_mut().map(|m| m.remove("data"));
        assert_eq!(validate_object(&INFO, &missing, None)[0].field, "data");
        let mut negative = old;
        negative["revision"] = json!(-1);
        assert_eq!(
            fields(&negative, None),
            [format!("revision: {}", workload::NONNEGATIVE)]
        );
    }

    #[test]
    fn the_table_names_the_controller_with_its_group() {
        let cells = INFO.strategy.cells(&revision(), Utc::now());
        assert_eq!(cells[1], "daemonset.apps/web");
        assert_eq!(cells[2], 1);
    }
}
