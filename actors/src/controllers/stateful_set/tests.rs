//! The StatefulSet controller's ordering decisions, on plain facts and a fake clock.

use super::*;

fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_default()
}

fn set(replicas: i32) -> SetFacts {
    SetFacts {
        start: 0,
        replicas,
        ordered: true,
        rolling: true,
        partition: Some(0),
        current_revision: "web-1".into(),
        update_revision: "web-1".into(),
        current_replicas: 0,
        min_ready: 0,
    }
}

fn pod(ordinal: i32, revision: &str) -> SetPod {
    SetPod {
        name: format!("web-{ordinal}"),
        ordinal,
        revision: revision.into(),
        phase: "Running".into(),
        ready: true,
        ready_since: Some(t0() - chrono::Duration::seconds(60)),
        deleting: false,
        identity_ok: true,
    }
}

fn pending(ordinal: i32) -> SetPod {
    SetPod {
        phase: "Pending".into(),
        ready: false,
        ready_since: None,
        ..pod(ordinal, "web-1")
    }
}

fn create(ordinal: i32) -> Step {
    Step::Create {
        ordinal,
        of: Made::Update,
    }
}

#[test]
fn names_carry_the_parent_and_the_ordinal() {
    assert_eq!(parent_and_ordinal("web-0"), Some(("web", 0)));
    assert_eq!(parent_and_ordinal("my-db-12"), Some(("my-db", 12)));
    assert_eq!(parent_and_ordinal("web-x"), None);
    assert_eq!(parent_and_ordinal("web"), None);
}

#[test]
fn ordered_ready_creates_one_pod_at_a_time_and_waits_for_it() {
    let now = t0();
    let s = set(3);
    assert_eq!(plan(&s, &[], now).0, [create(0)]);
    // web-0 exists but is not Running and Ready: nothing else happens.
    assert!(plan(&s, &[pending(0)], now).0.is_empty());
    assert_eq!(plan(&s, &[pod(0, "web-1")], now).0, [create(1)]);
    assert_eq!(
        plan(&s, &[pod(0, "web-1"), pod(1, "web-1")], now).0,
        [create(2)]
    );
    // Ordinals start where spec.ordinals.start says.
    let mut from5 = set(2);
    from5.start = 5;
    assert_eq!(plan(&from5, &[], now).0, [create(5)]);
}

#[test]
fn min_ready_seconds_holds_the_next_pod_until_the_clock_passes_it() {
    let mut s = set(2);
    s.min_ready = 30;
    let mut p0 = pod(0, "web-1");
    p0.ready_since = Some(t0() - chrono::Duration::seconds(10));
    let (steps, timed) = plan(&s, std::slice::from_ref(&p0), t0());
    assert!(steps.is_empty());
    assert!(timed);
    let later = t0() + chrono::Duration::seconds(21);
    assert_eq!(plan(&s, &[p0], later).0, [create(1)]);
}

#[test]
fn ordered_ready_deletes_from_the_highest_ordinal_one_at_a_time() {
    let now = t0();
    let s = set(1);
    let pods = [pod(0, "web-1"), pod(1, "web-1"), pod(2, "web-1")];
    assert_eq!(plan(&s, &pods, now).0, [Step::Delete("web-2".into())]);
    // While web-2 terminates, web-1 waits.
    let mut terminating = pods.clone();
    terminating[2].deleting = true;
    assert!(plan(&s, &terminating, now).0.is_empty());
    assert_eq!(plan(&s, &pods[..2], now).0, [Step::Delete("web-1".into())]);
}

#[test]
fn parallel_creates_and_deletes_at_once() {
    let now = t0();
    let mut s = set(3);
    s.ordered = false;
    assert_eq!(plan(&s, &[], now).0, [create(0), create(1), create(2)]);
    s.replicas = 0;
    let pods = [pod(0, "web-1"), pending(1)];
    assert_eq!(
        plan(&s, &pods, now).0,
        [Step::Delete("web-1".into()), Step::Delete("web-0".into())]
    );
}

#[test]
fn a_rolling_update_replaces_from_the_top_down_to_the_partition() {
    let now = t0();
    let mut s = set(3);
    s.update_revision = "web-2".into();
    s.partition = Some(1);
    let old = [pod(0, "web-1"), pod(1, "web-1"), pod(2, "web-1")];
    assert_eq!(plan(&s, &old, now).0, [Step::Delete("web-2".into())]);
    // web-2 is recreated at the update revision; until it is healthy, web-1 waits.
    let mut recreated = old.clone();
    recreated[2] = pending(2);
    recreated[2].revision = "web-2".into();
    assert!(plan(&s, &recreated, now).0.is_empty());
    recreated[2] = pod(2, "web-2");
    assert_eq!(plan(&s, &recreated, now).0, [Step::Delete("web-1".into())]);
    // Below the partition nothing is replaced, and a missing pod there is made of the
    // current revision.
    let done = [pod(0, "web-1"), pod(1, "web-2"), pod(2, "web-2")];
    assert!(plan(&s, &done, now).0.is_empty());
    assert_eq!(
        plan(&s, &done[1..], now).0,
        [Step::Create {
            ordinal: 0,
            of: Made::Current
        }]
    );
}

#[test]
fn on_delete_replaces_nothing_by_itself() {
    let now = t0();
    let mut s = set(2);
    s.rolling = false;
    s.partition = None;
    s.update_revision = "web-2".into();
    assert!(plan(&s, &[pod(0, "web-1"), pod(1, "web-1")], now)
        .0
        .is_empty());
    assert_eq!(plan(&s, &[pod(0, "web-1")], now).0, [create(1)]);
}

#[test]
fn failed_pods_are_deleted_to_be_made_again_and_labels_repaired() {
    let now = t0();
    let s = set(2);
    let mut failed = pod(0, "web-1");
    failed.phase = "Failed".into();
    assert_eq!(plan(&s, &[failed], now).0, [Step::Delete("web-0".into())]);
    let mut unlabelled = pod(0, "web-1");
    unlabelled.identity_ok = false;
    assert_eq!(
        plan(&s, &[unlabelled, pod(1, "web-1")], now).0,
        [Step::Relabel("web-0".into())]
    );
}

#[test]
fn status_counts_revisions_and_completes_the_rollout() {
    let now = t0();
    let mut s = set(2);
    s.update_revision = "web-2".into();
    let st = status_of(&s, &[pod(0, "web-1"), pod(1, "web-2")], now);
    assert_eq!(st.replicas, 2);
    assert_eq!(st.ready_replicas, Some(2));
    assert_eq!(st.current_replicas, Some(1));
    assert_eq!(st.updated_replicas, Some(1));
    assert_eq!(st.current_revision.as_deref(), Some("web-1"));
    let st = status_of(&s, &[pod(0, "web-2"), pod(1, "web-2")], now);
    assert_eq!(st.current_revision.as_deref(), Some("web-2"));
    assert_eq!(st.current_replicas, Some(2));
}
