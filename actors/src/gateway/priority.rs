//! The Priority admission plugin (kube-apiserver's `plugin/pkg/admission/priority`): a
//! pod created with `priorityClassName` gets that class's value as `spec.priority` and
//! its `preemptionPolicy`; a pod without one gets the global default class (or priority
//! 0); a class that does not exist refuses the pod (403). A PriorityClass may be the
//! global default only while no other one is.

use serde_json::{json, Value};

use crate::api::kinds::priority_class::{self, PREEMPT_LOWER_PRIORITY};
use crate::api::resources::{object_key, prefix};
use crate::api::{meta, ApiError};
use crate::store::StoreHandle;

const PODS: &str = "pods";
const CLASSES: &str = "priorityclasses";
/// How admission errors name the resource (`GroupResource`).
const CLASSES_GROUP_RESOURCE: &str = "priorityclasses.scheduling.k8s.io";

/// What a class gives a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Class {
    name: String,
    value: i64,
    preemption_policy: String,
}

impl Class {
    fn of(obj: &Value) -> Class {
        Class {
            name: meta::name(obj).unwrap_or_default().to_string(),
            value: obj.get("value").and_then(Value::as_i64).unwrap_or(0),
            preemption_policy: obj
                .get("preemptionPolicy")
                .and_then(Value::as_str)
                .unwrap_or(PREEMPT_LOWER_PRIORITY)
                .to_string(),
        }
    }
}

fn is_global_default(obj: &Value) -> bool {
    obj.get("globalDefault").and_then(Value::as_bool) == Some(true)
}

/// Admission on create of an object of `resource`.
pub fn admit_create(store: &StoreHandle, resource: &str, obj: &mut Value) -> Result<(), ApiError> {
    match resource {
        PODS => admit_pod(store, obj),
        CLASSES => admit_class(store, obj),
        _ => Ok(()),
    }
}

/// Admission on update (pods are admitted on create only, as in Kubernetes).
pub fn admit_update(store: &StoreHandle, resource: &str, obj: &Value) -> Result<(), ApiError> {
    match resource {
        CLASSES => admit_class(store, obj),
        _ => Ok(()),
    }
}

/// On a pod update, keep the priority and preemption policy admission set at create when
/// the new object leaves them out (`kubectl replace` of the manifest the pod was created
/// from), as kube-apiserver's Priority plugin does; a changed value still fails the
/// pod update validation.
pub fn keep_on_update(resource: &str, old: &Value, new: &mut Value) {
    if resource != PODS {
        return;
    }
    for field in ["priority", "preemptionPolicy"] {
        let kept = old.get("spec").and_then(|s| s.get(field)).cloned();
        let missing = new
            .get("spec")
            .and_then(|s| s.get(field))
            .is_none_or(Value::is_null);
        if let (Some(v), true, Some(spec)) = (kept, missing, new.get_mut("spec")) {
            if let Some(spec) = spec.as_object_mut() {
                spec.insert(field.to_string(), v);
            }
        }
    }
}

/// The stored classes, shared rather than copied (every pod create looks at them).
fn all_classes(store: &StoreHandle) -> Vec<std::sync::Arc<Value>> {
    store
        .list(&prefix(CLASSES, None))
        .0
        .into_iter()
        .map(|(_, o)| o.value)
        .collect()
}

/// The default class: of those marked globalDefault, the lowest value (Kubernetes' rule
/// should several exist, e.g. created concurrently).
fn default_class(classes: &[std::sync::Arc<Value>]) -> Option<Class> {
    classes
        .iter()
        .filter(|c| is_global_default(c))
        .map(|c| Class::of(c))
        .min_by_key(|c| c.value)
}

fn admit_pod(store: &StoreHandle, pod: &mut Value) -> Result<(), ApiError> {
    let forbidden = |pod: &Value, msg: String| {
        ApiError::Forbidden(format!(
            "pods \"{}\" is forbidden: {msg}",
            meta::name(pod).unwrap_or_default()
        ))
    };
    let named = pod
        .pointer("/spec/priorityClassName")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .map(str::to_string);
    let class = match &named {
        Some(name) => match store.get(&object_key(CLASSES, None, name)) {
            Some(o) => Some(Class::of(&o.value)),
            None => {
                return Err(forbidden(
                    pod,
                    format!("no PriorityClass with name {name} was found"),
                ))
            }
        },
        None => default_class(&all_classes(store)),
    };
    let (name, value, policy) = match class {
        Some(c) => (Some(c.name), c.value, c.preemption_policy),
        None => (None, 0, PREEMPT_LOWER_PRIORITY.to_string()),
    };
    let spec = &mut pod["spec"];
    if let Some(given) = spec.get("priority").and_then(Value::as_i64) {
        if given != value {
            return Err(forbidden(pod, format!("the integer value of priority ({given}) must not be provided in pod spec; priority admission controller computed {value} from the given PriorityClass name")));
        }
    }
    if let Some(given) = spec.get("preemptionPolicy").and_then(Value::as_str) {
        if given != policy {
            let given = given.to_string();
            return Err(forbidden(pod, format!("the string value of PreemptionPolicy ({given}) must not be provided in pod spec; priority admission controller computed {policy} from the given PriorityClass name")));
        }
    }
    let spec = &mut pod["spec"];
    if let Some(name) = name {
        spec["priorityClassName"] = json!(name);
    }
    spec["priority"] = json!(value);
    spec["preemptionPolicy"] = json!(policy);
    Ok(())
}

fn admit_class(store: &StoreHandle, class: &Value) -> Result<(), ApiError> {
    if !is_global_default(class) {
        return Ok(());
    }
    let name = meta::name(class).unwrap_or_default();
    let other = all_classes(store)
        .into_iter()
        .find(|c| is_global_default(c) && meta::name(c) != Some(name));
    match other {
        Some(o) => Err(ApiError::Forbidden(format!(
            "{CLASSES_GROUP_RESOURCE} \"{name}\" is forbidden: PriorityClass {} is already marked as default. Only one default can exist",
            meta::name(&o).unwrap_or_default()
        ))),
        None => Ok(()),
    }
}

/// The built-in classes, created at start when missing.
pub fn system_classes() -> Vec<Value> {
    priority_class::system_objects()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_update_without_priority_keeps_the_admitted_one() {
        let old =
            json!({"spec": {"priority": 1000, "preemptionPolicy": "Never", "containers": []}});
        let mut new = json!({"spec": {"containers": []}});
        keep_on_update(PODS, &old, &mut new);
        assert_eq!(new["spec"]["priority"], 1000);
        assert_eq!(new["spec"]["preemptionPolicy"], "Never");
        let mut changed = json!({"spec": {"priority": 5, "containers": []}});
        keep_on_update(PODS, &old, &mut changed);
        assert_eq!(
            changed["spec"]["priority"], 5,
            "left for validation to refuse"
        );
    }
}
