//! The workload plugins through the engine: inter-pod affinity, topology spread, preferred
//! node affinity, priority and preemption, with kube-scheduler's messages.

use std::sync::Arc;
use std::time::Instant;

use serde_json::{json, Value};

use super::engine::{Decision, Engine};
use super::SchedulerConfig;
use crate::client::EventKind;

fn node(name: &str, cpu: &str, zone: &str) -> Value {
    json!({"metadata": {"name": name, "labels": {
            "kubernetes.io/hostname": name, "topology.kubernetes.io/zone": zone}},
        "spec": {},
        "status": {"allocatable": {"cpu": cpu, "memory": "8Gi", "pods": "110"},
                   "conditions": [{"type": "Ready", "status": "True"}]}})
}

fn engine(nodes: &[Value]) -> Engine {
    let mut e = Engine::new(&SchedulerConfig::default());
    for n in nodes {
        e.on_node(EventKind::Added, n, Instant::now());
    }
    e
}

/// A pod labelled `app`, requesting `cpu`, with `extra` merged into its spec.
fn pod(name: &str, app: &str, cpu: &str, extra: Value) -> Arc<Value> {
    let mut p = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}"),
            "labels": {"app": app}, "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {"containers": [{"name": "c", "image": "i",
            "resources": {"requests": {"cpu": cpu}}}]}});
    if let (Some(spec), Some(extra)) = (p["spec"].as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            spec.insert(k.clone(), v.clone());
        }
    }
    Arc::new(p)
}

fn bound(p: &Value, node: &str) -> Arc<Value> {
    let mut b = p.clone();
    b["spec"]["nodeName"] = json!(node);
    Arc::new(b)
}

/// Queue `p` and schedule it: `Ok(node)` once bound (and observed bound), or the message.
fn place(e: &mut Engine, p: &Arc<Value>) -> Result<String, String> {
    let now = Instant::now();
    e.on_pod(EventKind::Added, p, now);
    match e.schedule_next(now) {
        Some(Decision::Bind { key, pod, node, .. }) => {
            e.bind_succeeded(&key);
            e.on_pod(EventKind::Modified, &bound(&pod, &node), now);
            Ok(node)
        }
        Some(Decision::Unschedulable { message, .. }) => Err(message),
        Some(Decision::Preempt { message, node, .. }) => {
            Err(format!("preempt on {node}: {message}"))
        }
        None => Err("nothing scheduled".into()),
    }
}

fn anti_affinity_to(app: &str, key: &str) -> Value {
    json!({"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"app": app}}, "topologyKey": key}]}}})
}

fn affinity_to(app: &str, key: &str) -> Value {
    json!({"affinity": {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"app": app}}, "topologyKey": key}]}}})
}

fn three_nodes() -> Vec<Value> {
    vec![
        node("a", "4", "z1"),
        node("b", "4", "z1"),
        node("c", "4", "z2"),
    ]
}

#[test]
fn required_anti_affinity_puts_one_replica_per_node_and_says_why_the_fourth_waits() {
    let mut e = engine(&three_nodes());
    let mut nodes: Vec<String> = (0..3)
        .map(|i| {
            let p = pod(
                &format!("web-{i}"),
                "web",
                "100m",
                anti_affinity_to("web", "kubernetes.io/hostname"),
            );
            place(&mut e, &p).expect("placed")
        })
        .collect();
    nodes.sort();
    assert_eq!(nodes, ["a", "b", "c"]);
    let fourth = pod(
        "web-3",
        "web",
        "100m",
        anti_affinity_to("web", "kubernetes.io/hostname"),
    );
    assert_eq!(
        place(&mut e, &fourth),
        Err(
            "0/3 nodes are available: 3 node(s) didn't match pod anti-affinity rules. \
             preemption: 0/3 nodes are available: 3 No preemption victims found for incoming pod.."
                .into()
        )
    );
}

#[test]
fn an_existing_pods_required_anti_affinity_keeps_matching_pods_out_of_its_zone() {
    let mut e = engine(&three_nodes());
    let loner = pod(
        "loner",
        "loner",
        "100m",
        anti_affinity_to("web", "topology.kubernetes.io/zone"),
    );
    let at = place(&mut e, &loner).expect("placed");
    let web = pod("web", "web", "100m", json!({}));
    let web_node = place(&mut e, &web).expect("placed");
    let zone = |n: &str| if n == "c" { "z2" } else { "z1" };
    assert_ne!(
        zone(&at),
        zone(&web_node),
        "{at} and {web_node} share a zone"
    );
    // With the other zone full, the symmetry rule is the reason given.
    let mut e = engine(&[node("a", "4", "z1"), node("c", "1", "z2")]);
    let mut pinned = anti_affinity_to("web", "topology.kubernetes.io/zone");
    pinned["nodeSelector"] = json!({"kubernetes.io/hostname": "a"});
    assert_eq!(
        place(&mut e, &pod("loner", "loner", "100m", pinned)),
        Ok("a".into())
    );
    let big = pod("big-web", "web", "2", json!({}));
    assert_eq!(
        place(&mut e, &big),
        Err(
            "0/2 nodes are available: 1 Insufficient cpu, \
             1 node(s) didn't satisfy existing pods anti-affinity rules. \
             preemption: 0/2 nodes are available: 2 No preemption victims found for incoming pod.."
                .into()
        )
    );
}

#[test]
fn required_affinity_co_locates_and_the_first_of_a_self_affine_group_goes_anywhere() {
    let mut e = engine(&three_nodes());
    let db = place(&mut e, &pod("db", "db", "100m", json!({}))).expect("placed");
    for i in 0..3 {
        let p = pod(
            &format!("cache-{i}"),
            "cache",
            "100m",
            affinity_to("db", "kubernetes.io/hostname"),
        );
        assert_eq!(place(&mut e, &p), Ok(db.clone()));
    }
    // Nothing matches "queue" yet, but the pod matches its own term: it is placed, and
    // its group follows it.
    let first = pod(
        "queue-0",
        "queue",
        "100m",
        affinity_to("queue", "kubernetes.io/hostname"),
    );
    let at = place(&mut e, &first).expect("placed");
    let second = pod(
        "queue-1",
        "queue",
        "100m",
        affinity_to("queue", "kubernetes.io/hostname"),
    );
    assert_eq!(place(&mut e, &second), Ok(at));
    // A term nothing matches, on a pod that does not match it either, waits.
    let orphan = pod(
        "orphan",
        "x",
        "100m",
        affinity_to("nothing", "kubernetes.io/hostname"),
    );
    assert_eq!(
        place(&mut e, &orphan),
        Err(
            "0/3 nodes are available: 3 node(s) didn't match pod affinity rules. \
             preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling.."
                .into()
        )
    );
}

#[test]
fn affinity_terms_see_other_namespaces_only_when_asked() {
    let mut e = engine(&three_nodes());
    let mut other = (*pod("db", "db", "100m", json!({}))).clone();
    other["metadata"]["namespace"] = json!("data");
    let db = place(&mut e, &Arc::new(other)).expect("placed");
    e.on_namespace(
        EventKind::Added,
        &json!({"metadata": {"name": "data", "labels": {"team": "storage"}}}),
        Instant::now(),
    );
    let own_ns = pod(
        "near-0",
        "near",
        "100m",
        affinity_to("db", "kubernetes.io/hostname"),
    );
    assert!(
        place(&mut e, &own_ns).is_err(),
        "db is in another namespace"
    );
    let selected = pod(
        "near-1",
        "near",
        "100m",
        json!({"affinity": {"podAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": [{
            "labelSelector": {"matchLabels": {"app": "db"}},
            "namespaceSelector": {"matchLabels": {"team": "storage"}},
            "topologyKey": "kubernetes.io/hostname"}]}}}),
    );
    assert_eq!(place(&mut e, &selected), Ok(db));
}

fn spread_zone(max_skew: i64, when: &str) -> Value {
    json!({"topologySpreadConstraints": [{"maxSkew": max_skew,
        "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": when,
        "labelSelector": {"matchLabels": {"app": "web"}}}]})
}

#[test]
fn a_zone_spread_constraint_alternates_zones_and_refuses_to_skew() {
    // Zone z1 has two nodes, z2 one: without the constraint z1 would get two of every three.
    let mut e = engine(&three_nodes());
    let zone = |n: &str| if n == "c" { "z2" } else { "z1" };
    let mut per_zone = std::collections::BTreeMap::new();
    for i in 0..6 {
        let p = pod(
            &format!("web-{i}"),
            "web",
            "100m",
            spread_zone(1, "DoNotSchedule"),
        );
        let n = place(&mut e, &p).expect("placed");
        *per_zone.entry(zone(&n)).or_insert(0) += 1;
    }
    assert_eq!(
        per_zone.into_iter().collect::<Vec<_>>(),
        [("z1", 3), ("z2", 3)]
    );
}

#[test]
fn spread_skew_and_missing_labels_are_reported_as_kube_scheduler_words_them() {
    let unlabelled = json!({"metadata": {"name": "bare"}, "spec": {},
        "status": {"allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"},
                   "conditions": [{"type": "Ready", "status": "True"}]}});
    let mut e = engine(&[node("a", "4", "z1"), node("c", "1", "z2"), unlabelled]);
    for i in 0..2 {
        let p = pod(
            &format!("web-{i}"),
            "web",
            "600m",
            spread_zone(1, "DoNotSchedule"),
        );
        place(&mut e, &p).expect("placed");
    }
    // One pod in each zone now; c has no cpu left, and a third in z1 is within skew 1
    // only while z2 has one too: it goes to a. A fourth would make z1 two above z2.
    let third = pod("web-2", "web", "600m", spread_zone(1, "DoNotSchedule"));
    assert_eq!(place(&mut e, &third), Ok("a".into()));
    let fourth = pod("web-3", "web", "600m", spread_zone(1, "DoNotSchedule"));
    assert_eq!(
        place(&mut e, &fourth),
        Err("0/3 nodes are available: 1 Insufficient cpu, \
             1 node(s) didn't match pod topology spread constraints, \
             1 node(s) didn't match pod topology spread constraints (missing required label). \
             preemption: 0/3 nodes are available: 1 Preemption is not helpful for scheduling, \
             2 No preemption victims found for incoming pod.."
            .into())
    );
}

#[test]
fn schedule_anyway_prefers_the_emptier_zone_but_never_refuses() {
    let mut e = engine(&[node("a", "4", "z1"), node("c", "4", "z2")]);
    let first = place(
        &mut e,
        &pod("w0", "web", "100m", spread_zone(1, "ScheduleAnyway")),
    )
    .expect("placed");
    let second = place(
        &mut e,
        &pod("w1", "web", "100m", spread_zone(1, "ScheduleAnyway")),
    )
    .expect("placed");
    assert_ne!(first, second);
}

#[test]
fn preferred_node_affinity_picks_the_heavier_preference() {
    let mut e = engine(&three_nodes());
    let p = pod(
        "p",
        "x",
        "100m",
        json!({"affinity": {"nodeAffinity": {
        "preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 10, "preference": {"matchExpressions": [
                {"key": "topology.kubernetes.io/zone", "operator": "In", "values": ["z1"]}]}},
            {"weight": 80, "preference": {"matchExpressions": [
                {"key": "kubernetes.io/hostname", "operator": "In", "values": ["c"]}]}}]}}}),
    );
    assert_eq!(place(&mut e, &p), Ok("c".into()));
}

#[test]
fn preferred_pod_affinity_draws_a_pod_to_its_peer() {
    let mut e = engine(&three_nodes());
    let db = place(&mut e, &pod("db", "db", "100m", json!({}))).expect("placed");
    let p = pod(
        "app",
        "app",
        "100m",
        json!({"affinity": {"podAffinity": {
        "preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 100, "podAffinityTerm": {
            "labelSelector": {"matchLabels": {"app": "db"}}, "topologyKey": "kubernetes.io/hostname"}}]}}}),
    );
    assert_eq!(place(&mut e, &p), Ok(db));
}

fn with_priority(p: &Arc<Value>, priority: i64, policy: &str) -> Arc<Value> {
    let mut v = (**p).clone();
    v["spec"]["priority"] = json!(priority);
    v["spec"]["preemptionPolicy"] = json!(policy);
    Arc::new(v)
}

#[test]
fn a_high_priority_pod_preempts_the_cheapest_victim_and_holds_the_room() {
    let mut e = engine(&[node("a", "1", "z1"), node("b", "1", "z1")]);
    let low = with_priority(
        &pod("low", "batch", "800m", json!({})),
        10,
        "PreemptLowerPriority",
    );
    let mid = with_priority(
        &pod("mid", "batch", "800m", json!({})),
        100,
        "PreemptLowerPriority",
    );
    let low_node = place(&mut e, &low).expect("placed");
    let mid_node = place(&mut e, &mid).expect("placed");
    assert_ne!(low_node, mid_node);
    let high = with_priority(
        &pod("high", "web", "800m", json!({})),
        1000,
        "PreemptLowerPriority",
    );
    let now = Instant::now();
    e.on_pod(EventKind::Added, &high, now);
    match e.schedule_next(now) {
        Some(Decision::Preempt {
            node,
            victims,
            message,
            ..
        }) => {
            assert_eq!(node, low_node, "the lowest-priority victim's node");
            let names: Vec<&str> = victims.iter().map(|v| v.name.as_str()).collect();
            assert_eq!(names, ["low"]);
            assert_eq!(message, "0/2 nodes are available: 2 Insufficient cpu.");
        }
        other => panic!("expected a preemption, got {other:?}"),
    }
    // While the victim terminates, the preemptor waits instead of evicting more.
    let mut going = (*bound(&low, &low_node)).clone();
    going["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:10Z");
    e.on_pod(EventKind::Modified, &Arc::new(going), now);
    let retry = now + std::time::Duration::from_secs(61);
    e.flush(retry);
    match e.schedule_next(retry) {
        Some(Decision::Unschedulable { key, message, .. }) => {
            assert_eq!(key, "default/high");
            assert_eq!(
                message,
                "0/2 nodes are available: 2 Insufficient cpu. \
                 preemption: not eligible due to a terminating pod on the nominated node.."
            );
        }
        other => panic!("expected to wait for the victim, got {other:?}"),
    }
    // The victim is gone; while the preemptor backs off, a lower-priority pod may not
    // take the room held for it.
    e.on_pod(EventKind::Deleted, &bound(&low, &low_node), retry);
    let pinned = json!({"nodeSelector": {"kubernetes.io/hostname": low_node.clone()}});
    let sneaky = with_priority(
        &pod("sneaky", "batch", "800m", pinned),
        5,
        "PreemptLowerPriority",
    );
    e.on_pod(EventKind::Added, &sneaky, retry);
    match e.schedule_next(retry) {
        Some(Decision::Unschedulable { key, message, .. }) => {
            assert_eq!(key, "default/sneaky");
            assert!(message.starts_with("0/2 nodes are available: 1 Insufficient cpu, 1 node(s) didn't match Pod's node affinity/selector."), "{message}");
        }
        other => panic!("expected the room to be held, got {other:?}"),
    }
    let later = retry + std::time::Duration::from_secs(5);
    e.flush(later);
    match e.schedule_next(later) {
        Some(Decision::Bind { key, node, .. }) => {
            assert_eq!((key.as_str(), node), ("default/high", low_node));
        }
        other => panic!("expected the preemptor bound, got {other:?}"),
    }
}

#[test]
fn a_pod_that_never_preempts_says_so() {
    let mut e = engine(&[node("a", "1", "z1")]);
    place(
        &mut e,
        &with_priority(
            &pod("low", "b", "800m", json!({})),
            0,
            "PreemptLowerPriority",
        ),
    )
    .expect("placed");
    let polite = with_priority(&pod("polite", "w", "800m", json!({})), 1000, "Never");
    assert_eq!(
        place(&mut e, &polite),
        Err("0/1 nodes are available: 1 Insufficient cpu. \
             preemption: not eligible due to preemptionPolicy=Never.."
            .into())
    );
    let equal = with_priority(
        &pod("equal", "w", "800m", json!({})),
        0,
        "PreemptLowerPriority",
    );
    assert_eq!(
        place(&mut e, &equal),
        Err(
            "0/1 nodes are available: 1 Insufficient cpu. \
             preemption: 0/1 nodes are available: 1 No preemption victims found for incoming pod.."
                .into()
        )
    );
}

#[test]
fn preemption_evicts_the_lower_priority_pod_an_anti_affinity_forbids() {
    let mut e = engine(&[node("a", "4", "z1")]);
    let low = with_priority(
        &pod("noisy", "noisy", "100m", json!({})),
        0,
        "PreemptLowerPriority",
    );
    place(&mut e, &low).expect("placed");
    let shy = with_priority(
        &pod(
            "shy",
            "shy",
            "100m",
            anti_affinity_to("noisy", "kubernetes.io/hostname"),
        ),
        1000,
        "PreemptLowerPriority",
    );
    let now = Instant::now();
    e.on_pod(EventKind::Added, &shy, now);
    match e.schedule_next(now) {
        Some(Decision::Preempt {
            node,
            victims,
            message,
            ..
        }) => {
            assert_eq!(node, "a");
            assert_eq!(victims.len(), 1);
            assert_eq!(victims[0].name, "noisy");
            assert_eq!(
                message,
                "0/1 nodes are available: 1 node(s) didn't match pod anti-affinity rules."
            );
        }
        other => panic!("expected a preemption, got {other:?}"),
    }
}

#[test]
fn preemption_prefers_the_node_whose_victim_no_disruption_budget_protects() {
    let mut e = engine(&[node("a", "1", "z1"), node("b", "1", "z1")]);
    // The guarded pod is the younger one, so without its budget preemption would pick
    // its node (the latest-started victim loses the tie).
    let mut young = (*pod("guarded", "db", "800m", json!({}))).clone();
    young["metadata"]["creationTimestamp"] = json!("2026-01-02T00:00:00Z");
    let guarded = with_priority(&Arc::new(young), 10, "PreemptLowerPriority");
    let free = with_priority(
        &pod("free", "batch", "800m", json!({})),
        10,
        "PreemptLowerPriority",
    );
    let guarded_node = place(&mut e, &guarded).expect("placed");
    let free_node = place(&mut e, &free).expect("placed");
    assert_ne!(guarded_node, free_node);
    let budget = |allowed: i64, disrupted: Value| {
        json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": {"name": "db", "namespace": "default"},
            "spec": {"selector": {"matchLabels": {"app": "db"}}, "minAvailable": 1},
            "status": {"disruptionsAllowed": allowed, "disruptedPods": disrupted}})
    };
    let high = |name: &str| {
        with_priority(
            &pod(name, "web", "800m", json!({})),
            1000,
            "PreemptLowerPriority",
        )
    };
    let preempted_on = |e: &mut Engine, p: &Arc<Value>| {
        let now = Instant::now();
        e.on_pod(EventKind::Added, p, now);
        match e.schedule_next(now) {
            Some(Decision::Preempt { node, victims, .. }) => {
                let names: Vec<String> = victims.iter().map(|v| v.name.clone()).collect();
                (node, names)
            }
            other => panic!("expected a preemption, got {other:?}"),
        }
    };
    let mut unguarded = engine(&[node("a", "1", "z1"), node("b", "1", "z1")]);
    place(&mut unguarded, &guarded).expect("placed");
    place(&mut unguarded, &free).expect("placed");
    let (chosen, _) = preempted_on(&mut unguarded, &high("high"));
    assert_eq!(
        chosen, guarded_node,
        "without a budget the younger victim goes"
    );
    e.on_pdb(EventKind::Added, &budget(0, json!({})));
    let (chosen, victims) = preempted_on(&mut e, &high("high"));
    assert_eq!(
        (chosen, victims),
        (free_node.clone(), vec!["free".to_string()])
    );
    // When the only node left holds a protected pod, it is still evicted: a budget is
    // a preference for preemption, not a wall.
    let mut e = engine(&[node("a", "1", "z1")]);
    place(&mut e, &guarded).expect("placed");
    e.on_pdb(EventKind::Added, &budget(0, json!({})));
    let (_, victims) = preempted_on(&mut e, &high("high"));
    assert_eq!(victims, ["guarded"]);
}

#[test]
fn budgets_count_each_selected_victim_once_and_skip_pods_already_disrupted() {
    use super::info::PodMeta;
    use super::preemption::{Budget, Budgets, DisruptionBudgets};
    let meta = |name: &str, app: &str| {
        Arc::new(PodMeta {
            namespace: "default".into(),
            name: name.into(),
            labels: [("app".to_string(), app.to_string())].into(),
            ..PodMeta::default()
        })
    };
    let mut budgets = Budgets::default();
    budgets.set(
        "default/db".into(),
        Some(Budget::from_pdb(&json!({
            "metadata": {"name": "db", "namespace": "default"},
            "spec": {"selector": {"matchLabels": {"app": "db"}}},
            "status": {"disruptionsAllowed": 1, "disruptedPods": {"db-0": "2026-01-01T00:00:00Z"}}}))),
    );
    // An empty selector matches nothing, as in policy/v1.
    budgets.set(
        "default/all".into(),
        Some(Budget::from_pdb(&json!({
            "metadata": {"name": "all", "namespace": "default"},
            "spec": {"selector": {}},
            "status": {"disruptionsAllowed": 0}}))),
    );
    let (violating, fine) = budgets.partition(vec![
        meta("db-0", "db"),
        meta("db-1", "db"),
        meta("db-2", "db"),
        meta("web-0", "web"),
    ]);
    let names = |v: &[Arc<PodMeta>]| v.iter().map(|m| m.name.clone()).collect::<Vec<_>>();
    assert_eq!(names(&violating), ["db-2"]);
    assert_eq!(names(&fine), ["db-0", "db-1", "web-0"]);
}
