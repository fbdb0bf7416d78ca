//! The DaemonSet controller's decisions, on plain facts and a fake clock.

use super::*;
use chrono::DateTime;

fn ds(extra_spec: Value) -> Value {
    let mut d = json!({"apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": "agent", "namespace": "default", "uid": "u1"},
        "spec": {"selector": {"matchLabels": {"app": "agent"}},
            "template": {"metadata": {"labels": {"app": "agent"}},
                "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}});
    if let Some(m) = extra_spec.as_object() {
        for (k, v) in m {
            d["spec"]["template"]["spec"][k] = v.clone();
        }
    }
    d
}

fn node(name: &str, labels: Value, taints: Value) -> Value {
    json!({"metadata": {"name": name, "labels": labels}, "spec": {"taints": taints},
        "status": {"conditions": [{"type": "Ready", "status": "True"}]}})
}

fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_default()
}

fn pod(name: &str, hash: &str, ready_for: Option<i64>, now: DateTime<Utc>) -> DaemonPod {
    DaemonPod {
        name: name.into(),
        hash: Some(hash.into()),
        generation: None,
        created: format!("2026-01-01T00:00:0{}Z", name.len() % 10),
        phase: "Running".into(),
        deleting: false,
        ready: ready_for.is_some(),
        ready_since: ready_for.map(|s| now - chrono::Duration::seconds(s)),
    }
}

fn facts(names: &[&str]) -> Vec<NodeFacts> {
    names
        .iter()
        .map(|n| NodeFacts {
            name: n.to_string(),
            should_run: true,
            should_continue: true,
        })
        .collect()
}

fn rev(hash: &str) -> Revision {
    Revision {
        hash: hash.into(),
        generation: None,
    }
}

#[test]
fn eligibility_follows_selector_affinity_and_taints_with_the_default_tolerations() {
    let judge = |d: &Value| daemon_pod(d, "h", Some(1), None);
    let plain = ds(json!({}));
    let ssd = ds(json!({"nodeSelector": {"disk": "ssd"}}));
    let n = node("n1", json!({"disk": "hdd"}), json!([]));
    assert_eq!(should_run(&judge(&plain), &n), (true, true));
    assert_eq!(should_run(&judge(&ssd), &n), (false, false));
    let affinity = ds(
        json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
        {"nodeSelectorTerms": [{"matchExpressions": [{"key": "disk", "operator": "In", "values": ["hdd"]}]}]}}}}),
    );
    assert_eq!(should_run(&judge(&affinity), &n), (true, true));
    // An untolerated NoSchedule taint keeps new pods off but lets a running one stay;
    // NoExecute removes it too.
    let gpu = node(
        "n2",
        json!({}),
        json!([{"key": "gpu", "effect": "NoSchedule"}]),
    );
    assert_eq!(should_run(&judge(&plain), &gpu), (false, true));
    let evict = node(
        "n3",
        json!({}),
        json!([{"key": "gpu", "effect": "NoExecute"}]),
    );
    assert_eq!(should_run(&judge(&plain), &evict), (false, false));
    let tolerant = ds(json!({"tolerations": [{"key": "gpu", "operator": "Exists"}]}));
    assert_eq!(should_run(&judge(&tolerant), &evict), (true, true));
    // Cordoned and unreachable nodes keep their daemon pods (default tolerations).
    let mut cordoned = node(
        "n4",
        json!({}),
        json!([
        {"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"},
        {"key": "node.kubernetes.io/unreachable", "effect": "NoExecute"}]),
    );
    cordoned["spec"]["unschedulable"] = json!(true);
    assert_eq!(should_run(&judge(&plain), &cordoned), (true, true));
}

#[test]
fn a_daemon_pod_is_pinned_to_its_node_and_carries_the_default_tolerations() {
    let d = ds(json!({"hostNetwork": true, "tolerations": [
        {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 30}]}));
    let p = daemon_pod(&d, "abc", Some(2), Some("n1"));
    assert_eq!(p["metadata"]["generateName"], "agent-");
    assert_eq!(p["metadata"]["labels"]["controller-revision-hash"], "abc");
    assert_eq!(p["metadata"]["labels"]["pod-template-generation"], "2");
    assert_eq!(p["metadata"]["ownerReferences"][0]["kind"], "DaemonSet");
    let term = &p["spec"]["affinity"]["nodeAffinity"]
        ["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"][0];
    assert_eq!(term["matchFields"][0]["key"], "metadata.name");
    assert_eq!(term["matchFields"][0]["values"][0], "n1");
    assert_eq!(target_node(&p).as_deref(), Some("n1"));
    let tolerations = p["spec"]["tolerations"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    // Six defaults plus network-unavailable for hostNetwork; the user's not-ready
    // toleration is replaced by the one without tolerationSeconds.
    assert_eq!(tolerations.len(), 7, "{tolerations:?}");
    assert!(tolerations
        .iter()
        .all(|t| t.get("tolerationSeconds").is_none()));
    assert!(tolerations
        .iter()
        .any(|t| t["key"] == "node.kubernetes.io/network-unavailable"));
}

#[test]
fn manage_fills_eligible_nodes_and_clears_ineligible_and_departed_ones() {
    let now = t0();
    let mut nodes = facts(&["a", "b", "c"]);
    nodes[2].should_run = false;
    nodes[2].should_continue = false;
    let mut by_node = BTreeMap::new();
    by_node.insert(
        "a".to_string(),
        vec![
            pod("pa", "h", Some(60), now),
            pod("pa2", "h", Some(60), now),
        ],
    );
    by_node.insert("c".to_string(), vec![pod("pc", "h", Some(60), now)]);
    by_node.insert("gone".to_string(), vec![pod("pg", "h", Some(60), now)]);
    let plan = plan_manage(&nodes, &by_node, false, &rev("h"), 0, now);
    assert_eq!(plan.create, ["b"]);
    // The younger of two pods on one node goes, as do the pods of c; the gone node's pod
    // is deleted at once, since no kubelet will finish it.
    assert_eq!(plan.delete, ["pa2", "pc"]);
    assert_eq!(plan.force, ["pg"]);
    let mut failed = pod("pf", "h", None, now);
    failed.phase = "Failed".into();
    let by_node = BTreeMap::from([("a".to_string(), vec![failed])]);
    let plan = plan_manage(&facts(&["a"]), &by_node, false, &rev("h"), 0, now);
    assert_eq!(plan.failed, [("a".to_string(), "pf".to_string())]);
    assert!(plan.create.is_empty());
}

#[test]
fn without_surge_old_pods_go_only_while_max_unavailable_allows() {
    let now = t0();
    let nodes = facts(&["a", "b", "c"]);
    let old = |n: &str| pod(&format!("old-{n}"), "h1", Some(60), now);
    let all_old: BTreeMap<_, _> = ["a", "b", "c"]
        .iter()
        .map(|n| (n.to_string(), vec![old(n)]))
        .collect();
    let plan = plan_rolling(&nodes, &all_old, 0, 1, &rev("h2"), 0, now);
    assert_eq!(plan.delete, ["old-a"]);
    let plan = plan_rolling(&nodes, &all_old, 0, 2, &rev("h2"), 0, now);
    assert_eq!(plan.delete, ["old-a", "old-b"]);
    // A new pod that is not available yet (minReadySeconds on the fake clock) uses the
    // budget up; once it has been ready long enough the next old pod goes.
    let mut one_new = all_old.clone();
    one_new.insert("a".into(), vec![pod("new-a", "h2", Some(5), now)]);
    let plan = plan_rolling(&nodes, &one_new, 0, 1, &rev("h2"), 10, now);
    assert!(plan.delete.is_empty(), "{plan:?}");
    let later = now + chrono::Duration::seconds(6);
    let plan = plan_rolling(&nodes, &one_new, 0, 1, &rev("h2"), 10, later);
    assert_eq!(plan.delete, ["old-b"]);
    // An old pod that is unavailable anyway is replaced regardless of the budget.
    let mut broken = one_new.clone();
    broken.insert("c".into(), vec![pod("old-c", "h1", None, now)]);
    let plan = plan_rolling(&nodes, &broken, 0, 1, &rev("h2"), 10, now);
    assert_eq!(plan.delete, ["old-c"]);
}

#[test]
fn with_surge_new_pods_start_beside_old_ones_and_old_ones_go_when_replaced() {
    let now = t0();
    let nodes = facts(&["a", "b", "c"]);
    let all_old: BTreeMap<_, _> = ["a", "b", "c"]
        .iter()
        .map(|n| {
            (
                n.to_string(),
                vec![pod(&format!("old-{n}"), "h1", Some(60), now)],
            )
        })
        .collect();
    let plan = plan_rolling(&nodes, &all_old, 1, 0, &rev("h2"), 0, now);
    assert_eq!(plan.create, ["a"]);
    assert!(plan.delete.is_empty());
    // While a's new pod is not available, nothing else surges.
    let mut surging = all_old.clone();
    surging.insert(
        "a".into(),
        vec![
            pod("old-a", "h1", Some(60), now),
            pod("new-a", "h2", None, now),
        ],
    );
    let plan = plan_rolling(&nodes, &surging, 1, 0, &rev("h2"), 0, now);
    assert_eq!(plan, Plan::default());
    // Once it is available, the old pod goes.
    surging.insert(
        "a".into(),
        vec![
            pod("old-a", "h1", Some(60), now),
            pod("new-a", "h2", Some(1), now),
        ],
    );
    let plan = plan_rolling(&nodes, &surging, 1, 0, &rev("h2"), 0, now);
    assert_eq!(plan.delete, ["old-a"]);
    // Manage with surge keeps both pods while the new one is not available.
    let plan = plan_manage(&nodes, &surging, true, &rev("h2"), 5, now);
    assert!(plan.delete.is_empty(), "{plan:?}");
}

#[test]
fn percentages_resolve_against_the_nodes_that_should_run_the_pod() {
    let mut d: apps::DaemonSet = serde_json::from_value(ds(json!({}))).expect("ds");
    let spec = &mut d.spec;
    spec.update_strategy = Some(apps::DaemonSetUpdateStrategy {
        type_: Some("RollingUpdate".into()),
        rolling_update: Some(apps::RollingUpdateDaemonSet {
            max_unavailable: Some(
                k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String("25%".into()),
            ),
            max_surge: None,
        }),
    });
    assert_eq!(rollout_limits(&d, 10), (0, 3));
    assert_eq!(rollout_limits(&d, 0), (0, 1));
}

#[test]
fn status_counts_the_oldest_pod_of_each_node() {
    let now = t0();
    let mut nodes = facts(&["a", "b", "c", "d"]);
    nodes[3].should_run = false;
    let by_node = BTreeMap::from([
        ("a".to_string(), vec![pod("pa", "h2", Some(60), now)]),
        ("b".to_string(), vec![pod("pb", "h1", Some(2), now)]),
        ("d".to_string(), vec![pod("pd", "h2", Some(60), now)]),
    ]);
    let s = status_counts(&nodes, &by_node, &rev("h2"), 10, now);
    assert_eq!(s.desired_number_scheduled, 3);
    assert_eq!(s.current_number_scheduled, 2);
    assert_eq!(s.number_misscheduled, 1);
    assert_eq!(s.number_ready, 2);
    assert_eq!(s.number_available, Some(1));
    assert_eq!(s.number_unavailable, Some(2));
    assert_eq!(s.updated_number_scheduled, Some(1));
}

#[test]
fn failed_pods_on_a_node_are_deleted_with_growing_back_off() {
    let c = DaemonSetController::new();
    let t = Instant::now();
    assert!(c.failed_backoff("ns/ds", "n", t).is_ok());
    assert!(c
        .failed_backoff("ns/ds", "n", t + Duration::from_millis(500))
        .is_err());
    assert!(c
        .failed_backoff("ns/ds", "n", t + Duration::from_secs(1))
        .is_ok());
    // The next wait is twice as long.
    assert!(c
        .failed_backoff("ns/ds", "n", t + Duration::from_secs(2))
        .is_err());
    assert!(c
        .failed_backoff("ns/ds", "n", t + Duration::from_secs(3))
        .is_ok());
    assert!(c.failed_backoff("ns/ds", "other", t).is_ok());
}
