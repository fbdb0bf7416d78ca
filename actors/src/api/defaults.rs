//! Defaulting: the fields the apiserver fills in on create, as Kubernetes' SetDefaults_*
//! functions do, so clients read back what a real cluster would show them.

use k8s_openapi::api::core::v1::{Container, PodSpec};
use serde_json::{json, Map, Value};

use super::meta;
use super::strategy::Strategy;

/// Fill metadata every object gets on create, then the kind's defaults; status starts
/// afresh, as Kubernetes' create strategies reset it.
pub fn defaults_for_create(strategy: &dyn Strategy, obj: &mut Value, namespace: Option<&str>) {
    let has_generation = strategy.has_generation(obj);
    let m = meta::metadata_mut(obj);
    if let Some(ns) = namespace {
        m.insert("namespace".into(), Value::String(ns.to_string()));
    }
    m.insert(
        "uid".into(),
        Value::String(uuid::Uuid::new_v4().to_string()),
    );
    m.insert(
        "creationTimestamp".into(),
        Value::String(meta::now_rfc3339()),
    );
    m.remove("deletionTimestamp");
    m.remove("deletionGracePeriodSeconds");
    if has_generation {
        m.insert("generation".into(), json!(1));
    } else {
        m.remove("generation");
    }
    strategy.default_for_create(obj);
}

/// Pod spec defaults (`SetDefaults_PodSpec`, `SetDefaults_Container`) on the stored JSON
/// of a spec: decoded as a `PodSpec`, defaulted, encoded back. A spec that does not
/// decode is left as it is (decoding refuses it before defaulting runs).
pub fn default_pod_spec(spec: &mut Map<String, Value>) {
    let Ok(mut typed) = serde_json::from_value::<PodSpec>(Value::Object(std::mem::take(spec)))
        .map_err(|e| e.to_string())
    else {
        return;
    };
    default_pod_spec_typed(&mut typed);
    if let Ok(Value::Object(m)) = serde_json::to_value(&typed) {
        *spec = m;
    }
}

/// Pod spec defaults on the typed spec, for every kind that embeds a pod template.
pub fn default_pod_spec_typed(spec: &mut PodSpec) {
    spec.restart_policy.get_or_insert_with(|| "Always".into());
    spec.dns_policy.get_or_insert_with(|| "ClusterFirst".into());
    spec.scheduler_name
        .get_or_insert_with(|| "default-scheduler".into());
    spec.termination_grace_period_seconds.get_or_insert(30);
    spec.security_context.get_or_insert_with(Default::default);
    spec.enable_service_links.get_or_insert(true);
    // v1's deprecated `serviceAccount` and `serviceAccountName` are one field inside
    // Kubernetes: the conversion reads either and writes both.
    let named = |s: &Option<String>| s.clone().filter(|n| !n.is_empty());
    if let Some(n) = named(&spec.service_account_name).or_else(|| named(&spec.service_account)) {
        spec.service_account_name = Some(n.clone());
        spec.service_account = Some(n);
    }
    let init = spec.init_containers.iter_mut().flatten();
    for c in spec.containers.iter_mut().chain(init) {
        default_container(c);
    }
    for c in spec.ephemeral_containers.iter_mut().flatten() {
        c.image_pull_policy
            .get_or_insert_with(|| pull_policy_of(c.image.as_deref()).into());
        c.termination_message_path
            .get_or_insert_with(|| "/dev/termination-log".into());
        c.termination_message_policy
            .get_or_insert_with(|| "File".into());
    }
}

/// `Always` for an untagged or `:latest` image, else `IfNotPresent`.
fn pull_policy_of(image: Option<&str>) -> &'static str {
    match image {
        Some(image) if image_tag(image).is_none_or(|t| t == "latest") => "Always",
        _ => "IfNotPresent",
    }
}

fn default_container(c: &mut Container) {
    c.image_pull_policy
        .get_or_insert_with(|| pull_policy_of(c.image.as_deref()).into());
    c.termination_message_path
        .get_or_insert_with(|| "/dev/termination-log".into());
    c.termination_message_policy
        .get_or_insert_with(|| "File".into());
    c.resources.get_or_insert_with(Default::default);
    for p in c.ports.iter_mut().flatten() {
        p.protocol.get_or_insert_with(|| "TCP".into());
    }
}

/// The tag of an image reference, if it names one (a digest reference names none).
fn image_tag(image: &str) -> Option<&str> {
    if image.contains('@') {
        return Some("digest");
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    last.split_once(':').map(|(_, t)| t)
}

pub(crate) fn default_rc(obj: &mut Value) {
    let template_labels = obj
        .pointer("/spec/template/metadata/labels")
        .cloned()
        .unwrap_or(Value::Null);
    let spec = ensure_object(obj, "spec");
    set_missing(spec, "replicas", json!(1));
    set_missing(spec, "minReadySeconds", json!(0));
    let selector_empty = spec
        .get("selector")
        .and_then(Value::as_object)
        .is_none_or(Map::is_empty);
    if selector_empty && template_labels.is_object() {
        spec.insert("selector".into(), template_labels.clone());
    }
    if let Some(Value::Object(template)) = spec.get_mut("template") {
        let tspec = template
            .entry("spec")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(tspec) = tspec {
            default_pod_spec(tspec);
        }
    }
    let labels_empty = obj
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .is_none_or(Map::is_empty);
    if labels_empty && template_labels.is_object() {
        meta::metadata_mut(obj).insert("labels".into(), template_labels);
    }
}

pub fn default_service_spec(spec: &mut Map<String, Value>) {
    set_missing(spec, "type", json!("ClusterIP"));
    set_missing(spec, "sessionAffinity", json!("None"));
    if let Some(Value::Array(ports)) = spec.get_mut("ports") {
        for p in ports.iter_mut().filter_map(Value::as_object_mut) {
            set_missing(p, "protocol", json!("TCP"));
            if let Some(port) = p.get("port").cloned() {
                set_missing(p, "targetPort", port);
            }
        }
    }
}

pub(crate) fn default_event(obj: &mut Value) {
    let now = meta::now_rfc3339();
    let m = obj.as_object_mut();
    if let Some(m) = m {
        set_missing(m, "type", json!("Normal"));
        set_missing(m, "count", json!(1));
        if !m.contains_key("firstTimestamp") && !m.contains_key("eventTime") {
            m.insert("firstTimestamp".into(), json!(now));
        }
        if !m.contains_key("lastTimestamp") && !m.contains_key("eventTime") {
            m.insert("lastTimestamp".into(), json!(now));
        }
    }
}

/// Kubernetes' QoS class: Guaranteed when every container has equal cpu and memory limits
/// and requests, BestEffort when none has any, Burstable otherwise.
pub fn qos_class(spec: &Value) -> &'static str {
    let containers = spec
        .get("containers")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    let mut any = false;
    let mut guaranteed = !containers.is_empty();
    for c in containers {
        let requests = c.pointer("/resources/requests").and_then(Value::as_object);
        let limits = c.pointer("/resources/limits").and_then(Value::as_object);
        let non_empty = |m: Option<&Map<String, Value>>| m.is_some_and(|m| !m.is_empty());
        any |= non_empty(requests) || non_empty(limits);
        for res in ["cpu", "memory"] {
            let limit = limits.and_then(|l| l.get(res));
            // A request defaults to its limit, so only a differing explicit request breaks it.
            let request = requests.and_then(|r| r.get(res)).or(limit);
            if limit.is_none() || request != limit {
                guaranteed = false;
            }
        }
    }
    match (any, guaranteed) {
        (false, _) => "BestEffort",
        (true, true) => "Guaranteed",
        (true, false) => "Burstable",
    }
}

fn set_missing(m: &mut Map<String, Value>, key: &str, value: Value) {
    if m.get(key).is_none_or(Value::is_null) {
        m.insert(key.to_string(), value);
    }
}

pub(crate) fn ensure_object<'a>(obj: &'a mut Value, key: &str) -> &'a mut Map<String, Value> {
    if !obj.is_object() {
        *obj = Value::Object(Map::new());
    }
    let map = obj.as_object_mut().expect("object ensured above");
    let entry = map
        .entry(key.to_string())
        .or_insert_with(|| Value::Object(Map::new()));
    if !entry.is_object() {
        *entry = Value::Object(Map::new());
    }
    entry.as_object_mut().expect("object ensured above")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn untagged_and_latest_images_are_always_pulled() {
        let mut spec = json!({"containers": [
            {"name": "a", "image": "busybox"},
            {"name": "b", "image": "busybox:latest"},
            {"name": "c", "image": "registry:5000/busybox:1.36"},
        ]});
        default_pod_spec(spec.as_object_mut().expect("object"));
        let policies: Vec<_> = spec["containers"]
            .as_array()
            .expect("array")
            .iter()
            .map(|c| {
                c["imagePullPolicy"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string()
            })
            .collect();
        assert_eq!(policies, ["Always", "Always", "IfNotPresent"]);
    }

    #[test]
    fn rc_selector_and_labels_default_from_the_template() {
        let mut rc = json!({"metadata": {"name": "web"}, "spec": {"template": {
            "metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}});
        defaults_for_create(
            crate::api::kinds::replication_controller::INFO.strategy,
            &mut rc,
            Some("default"),
        );
        assert_eq!(rc["spec"]["selector"], json!({"app": "web"}));
        assert_eq!(rc["metadata"]["labels"], json!({"app": "web"}));
        assert_eq!(rc["spec"]["replicas"], 1);
        assert_eq!(rc["spec"]["template"]["spec"]["restartPolicy"], "Always");
    }

    #[test]
    fn qos_is_guaranteed_only_when_limits_equal_requests() {
        let g = json!({"containers": [{"resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}]});
        let b = json!({"containers": [{"resources": {"requests": {"cpu": "100m"}}}]});
        let e = json!({"containers": [{"name": "x"}]});
        assert_eq!(qos_class(&g), "Guaranteed");
        assert_eq!(qos_class(&b), "Burstable");
        assert_eq!(qos_class(&e), "BestEffort");
    }

    #[test]
    fn service_target_port_defaults_to_port() {
        let mut spec = json!({"ports": [{"port": 80}]});
        default_service_spec(spec.as_object_mut().expect("object"));
        assert_eq!(spec["ports"][0]["targetPort"], 80);
        assert_eq!(spec["ports"][0]["protocol"], "TCP");
        assert_eq!(spec["type"], "ClusterIP");
    }
}
