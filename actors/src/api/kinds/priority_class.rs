//! scheduling.k8s.io/v1 PriorityClass: a name for a pod priority. Cluster-scoped; `value`
//! and `preemptionPolicy` are fixed once created; names starting with `system-` are
//! reserved for the two built-in classes, which exist from the first start. The Priority
//! admission that turns a pod's `priorityClassName` into `spec.priority` lives with the
//! gateway's admission (`gateway::priority`), because it reads other objects.

use chrono::{DateTime, Utc};
use k8s_openapi::api::scheduling::v1 as scheduling;
use serde_json::{json, Value};

use crate::api::resources::{schema_of, ResourceInfo, Storage};
use crate::api::strategy::{Typed, TypedStrategy};
use crate::api::table;
use crate::api::validation::FieldError;

pub static INFO: ResourceInfo = ResourceInfo {
    group: "scheduling.k8s.io",
    version: "v1",
    name: "priorityclasses",
    singular: "priorityclass",
    kind: "PriorityClass",
    namespaced: false,
    short_names: &["pc"],
    subresources: &[],
    has_status_subresource: false,
    field_selectors: &[],
    categories: &[],
    schema: Some(schema_of::<scheduling::PriorityClass>),
    strategy: &Typed(PriorityClassStrategy),
    storage: Storage::Stored,
};

/// Names with this prefix belong to the built-in classes.
pub const SYSTEM_PREFIX: &str = "system-";
/// The highest value a class that is not a system class may have.
pub const HIGHEST_USER_DEFINABLE_PRIORITY: i32 = 1_000_000_000;
pub const SYSTEM_CLUSTER_CRITICAL: &str = "system-cluster-critical";
pub const SYSTEM_NODE_CRITICAL: &str = "system-node-critical";
pub const PREEMPT_LOWER_PRIORITY: &str = "PreemptLowerPriority";
pub const PREEMPT_NEVER: &str = "Never";
pub const PREEMPTION_POLICIES: &[&str] = &[PREEMPT_LOWER_PRIORITY, PREEMPT_NEVER];

/// The built-in classes (name, value, description), as kube-apiserver creates them.
pub const SYSTEM_CLASSES: [(&str, i32, &str); 2] = [
    (
        SYSTEM_NODE_CRITICAL,
        2_000_001_000,
        "Used for system critical pods that must not be moved from their current node.",
    ),
    (
        SYSTEM_CLUSTER_CRITICAL,
        2_000_000_000,
        "Used for system critical pods that must run in the cluster, but can be moved to another node if necessary.",
    ),
];

/// The built-in classes as objects to create at start.
pub fn system_objects() -> Vec<Value> {
    SYSTEM_CLASSES
        .iter()
        .map(|(name, value, description)| {
            json!({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
                "metadata": {"name": name}, "value": value, "description": description,
                "preemptionPolicy": PREEMPT_LOWER_PRIORITY})
        })
        .collect()
}

/// Kubernetes' `IsKnownSystemPriorityClass`: why a `system-` name with these fields is
/// not one of the built-in classes, or None if it is.
fn unknown_system_class(name: &str, value: i32, global_default: bool) -> Option<String> {
    let Some((_, known, _)) = SYSTEM_CLASSES.iter().find(|(n, _, _)| *n == name) else {
        return Some(format!("{name} is not a known system priority class"));
    };
    if *known != value {
        return Some(format!("value of {name} PriorityClass must be {known}"));
    }
    if global_default {
        return Some(format!(
            "globalDefault of {name} PriorityClass must be false"
        ));
    }
    None
}

#[derive(Debug)]
pub struct PriorityClassStrategy;

impl TypedStrategy for PriorityClassStrategy {
    type Object = scheduling::PriorityClass;
    const KIND: &'static str = "PriorityClass";
    const API_VERSION: &'static str = "scheduling.k8s.io/v1";

    fn has_generation(&self) -> bool {
        false
    }

    fn default(&self, pc: &mut scheduling::PriorityClass) {
        pc.preemption_policy
            .get_or_insert_with(|| PREEMPT_LOWER_PRIORITY.to_string());
    }

    fn validate(
        &self,
        pc: &scheduling::PriorityClass,
        old: Option<&scheduling::PriorityClass>,
    ) -> Vec<FieldError> {
        let mut errs = Vec::new();
        let name = pc.metadata.name.as_deref().unwrap_or_default();
        let global_default = pc.global_default.unwrap_or(false);
        if name.starts_with(SYSTEM_PREFIX) {
            if let Some(why) = unknown_system_class(name, pc.value.unwrap_or(0), global_default) {
                errs.push(FieldError::forbidden(
                    "metadata.name",
                    format!("priority class is a system priority class: {why}"),
                ));
            }
        } else if pc.value.unwrap_or(0) > HIGHEST_USER_DEFINABLE_PRIORITY {
            errs.push(FieldError::forbidden(
                "value",
                format!(
                    "maximum allowed value of a user defined priority is {HIGHEST_USER_DEFINABLE_PRIORITY}"
                ),
            ));
        }
        if let Some(policy) = &pc.preemption_policy {
            if !PREEMPTION_POLICIES.contains(&policy.as_str()) {
                errs.push(FieldError::not_supported(
                    "preemptionPolicy",
                    &json!(policy),
                    PREEMPTION_POLICIES,
                ));
            }
        }
        if let Some(old) = old {
            if pc.value != old.value {
                errs.push(FieldError::forbidden(
                    "value",
                    "may not be changed in an update.",
                ));
            }
            if pc.preemption_policy != old.preemption_policy {
                errs.push(FieldError::immutable(
                    "preemptionPolicy",
                    &json!(pc.preemption_policy),
                ));
            }
        }
        errs
    }

    fn columns(&self) -> Vec<Value> {
        vec![
            table::name_column(0),
            table::column("Value", "integer", 0, "value represents the integer value of this priority class. This is the actual priority that pods receive when they have the name of this class in their pod spec."),
            table::column("Global-Default", "boolean", 0, "globalDefault specifies whether this PriorityClass should be considered as the default priority for pods that do not have any priority class. Only one PriorityClass can be marked as `globalDefault`. However, if more than one PriorityClasses exists with their `globalDefault` field set to true, the smallest value of such global default PriorityClasses will be used as the default priority."),
            table::age_column(),
            table::column("PreemptionPolicy", "string", 0, "preemptionPolicy is the Policy for preempting pods with lower priority. One of Never, PreemptLowerPriority. Defaults to PreemptLowerPriority if unset."),
        ]
    }

    fn cells(&self, pc: &scheduling::PriorityClass, raw: &Value, now: DateTime<Utc>) -> Vec<Value> {
        vec![
            table::name(raw),
            json!(pc.value.unwrap_or(0)),
            json!(pc.global_default.unwrap_or(false)),
            table::age(raw, now),
            json!(pc
                .preemption_policy
                .as_deref()
                .unwrap_or(PREEMPT_LOWER_PRIORITY)),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::validation::validate_object;

    fn class(name: &str, value: i64) -> Value {
        let mut pc = json!({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
            "metadata": {"name": name}, "value": value});
        INFO.strategy.default(&mut pc);
        pc
    }

    fn messages(pc: &Value, old: Option<&Value>) -> Vec<String> {
        validate_object(&INFO, pc, old)
            .iter()
            .map(FieldError::message)
            .collect()
    }

    #[test]
    fn a_class_defaults_to_preempting_lower_priorities() {
        assert_eq!(
            class("high", 1000)["preemptionPolicy"],
            PREEMPT_LOWER_PRIORITY
        );
        assert!(messages(&class("high", 1000), None).is_empty());
    }

    #[test]
    fn system_names_are_reserved_for_the_built_in_classes() {
        assert_eq!(
            messages(&class("system-mine", 10), None),
            vec!["metadata.name: Forbidden: priority class is a system priority class: system-mine is not a known system priority class"]
        );
        assert_eq!(
            messages(&class(SYSTEM_NODE_CRITICAL, 10), None),
            vec!["metadata.name: Forbidden: priority class is a system priority class: value of system-node-critical PriorityClass must be 2000001000"]
        );
        for o in system_objects() {
            assert!(messages(&o, None).is_empty(), "{o}");
        }
    }

    #[test]
    fn user_classes_stay_at_or_below_one_billion_and_keep_their_value() {
        assert_eq!(
            messages(&class("huge", 1_000_000_001), None),
            vec![
                "value: Forbidden: maximum allowed value of a user defined priority is 1000000000"
            ]
        );
        let old = class("high", 1000);
        let mut new = class("high", 2000);
        new["preemptionPolicy"] = json!("Never");
        assert_eq!(
            messages(&new, Some(&old)),
            vec![
                "value: Forbidden: may not be changed in an update.",
                "preemptionPolicy: Invalid value: \"Never\": field is immutable"
            ]
        );
    }

    #[test]
    fn the_table_has_kubectls_columns() {
        let names: Vec<String> = PriorityClassStrategy
            .columns()
            .iter()
            .map(|c| c["name"].as_str().unwrap_or_default().to_string())
            .collect();
        assert_eq!(
            names,
            ["Name", "Value", "Global-Default", "Age", "PreemptionPolicy"]
        );
    }
}
