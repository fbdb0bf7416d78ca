//! The scheduling queue, kube-scheduler's three lists in one map:
//! - *active*: pods to try now, highest `spec.priority` first, then first come first served;
//! - *backoff*: pods that failed recently and wait 1 s, 2 s, 4 s ... up to 10 s (doubling
//!   per attempt) before they are tried again;
//! - *unschedulable*: pods that fit nowhere. They wait for something that could make them
//!   fit (a node added or changed, a pod deleted) or at most the flush interval, so a pod
//!   that cannot run costs nothing while nothing changes.
//!
//! Time is passed in, so the rules are tested without sleeping.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Active,
    Backoff,
    Unschedulable {
        since: Instant,
    },
    /// Popped: being scheduled or its bind is in flight.
    InFlight,
}

#[derive(Debug)]
struct Entry {
    pod: Arc<Value>,
    state: State,
    attempts: u32,
    /// Not to be tried before this (set after every failure).
    backoff_until: Option<Instant>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QueueLengths {
    pub active: usize,
    pub backoff: usize,
    pub unschedulable: usize,
    pub in_flight: usize,
}

#[derive(Debug)]
pub struct SchedulingQueue {
    /// Keys by priority, then arrival order (kube-scheduler's activeQ orders by
    /// `spec.priority`, then by when the pod was queued); may hold keys that since left
    /// the active state (skipped).
    active: BinaryHeap<(i32, Reverse<u64>, String)>,
    /// Arrival counter for the ordering among equal priorities.
    seq: u64,
    entries: HashMap<String, Entry>,
    initial_backoff: Duration,
    max_backoff: Duration,
}

impl SchedulingQueue {
    pub fn new(initial_backoff: Duration, max_backoff: Duration) -> Self {
        SchedulingQueue {
            active: BinaryHeap::new(),
            seq: 0,
            entries: HashMap::new(),
            initial_backoff,
            max_backoff,
        }
    }

    /// A pod to schedule was added or updated. A new pod goes to the active list; an
    /// unschedulable one whose spec or labels changed is tried again (the change may make
    /// it fit); otherwise only the stored object is refreshed (our own status writes come
    /// back as updates and must not wake the pod, or it would spin).
    pub fn add_or_update(&mut self, key: &str, pod: Arc<Value>, now: Instant) {
        match self.entries.get_mut(key) {
            Some(entry) => {
                let changed = pod.get("spec") != entry.pod.get("spec")
                    || pod.pointer("/metadata/labels") != entry.pod.pointer("/metadata/labels");
                entry.pod = pod;
                if changed && matches!(entry.state, State::Unschedulable { .. }) {
                    self.wake(key, now);
                }
            }
            None => {
                let priority = priority_of(&pod);
                self.entries.insert(
                    key.to_string(),
                    Entry {
                        pod,
                        state: State::Active,
                        attempts: 0,
                        backoff_until: None,
                    },
                );
                self.push(priority, key);
            }
        }
    }

    /// The pod was deleted, bound, or is no longer ours to schedule.
    pub fn remove(&mut self, key: &str) {
        self.entries.remove(key);
    }

    pub fn contains(&self, key: &str) -> bool {
        self.entries.contains_key(key)
    }

    /// The next pod to try, marked in flight.
    pub fn pop(&mut self) -> Option<(String, Arc<Value>)> {
        while let Some((_, _, key)) = self.active.pop() {
            if let Some(entry) = self.entries.get_mut(&key) {
                if entry.state == State::Active {
                    entry.state = State::InFlight;
                    return Some((key, entry.pod.clone()));
                }
            }
        }
        None
    }

    pub fn has_active(&self) -> bool {
        // Stale keys make this an over-estimate; `pop` skips them.
        !self.active.is_empty()
    }

    /// The pod fits nowhere: park it until something changes (or the flush).
    pub fn unschedulable(&mut self, key: &str, now: Instant) {
        let (initial, max) = (self.initial_backoff, self.max_backoff);
        if let Some(entry) = self.entries.get_mut(key) {
            entry.attempts += 1;
            entry.backoff_until = Some(now + backoff(initial, max, entry.attempts));
            entry.state = State::Unschedulable { since: now };
        }
    }

    /// A transient failure (the bind failed): try again after the pod's backoff.
    pub fn backoff(&mut self, key: &str, now: Instant) {
        let (initial, max) = (self.initial_backoff, self.max_backoff);
        if let Some(entry) = self.entries.get_mut(key) {
            entry.attempts += 1;
            entry.backoff_until = Some(now + backoff(initial, max, entry.attempts));
            entry.state = State::Backoff;
        }
    }

    /// Something changed that may let unschedulable pods fit: move them all on (to the
    /// active list, or to backoff if they failed too recently).
    pub fn move_all_unschedulable(&mut self, now: Instant) -> usize {
        let keys: Vec<String> = self
            .entries
            .iter()
            .filter(|(_, e)| matches!(e.state, State::Unschedulable { .. }))
            .map(|(k, _)| k.clone())
            .collect();
        for key in &keys {
            self.wake(key, now);
        }
        keys.len()
    }

    /// Periodic housekeeping: backoffs that expired become active, and pods unschedulable
    /// for longer than `unschedulable_timeout` are tried again whatever happened.
    pub fn flush(&mut self, now: Instant, unschedulable_timeout: Duration) {
        let mut due: Vec<(Option<Instant>, String)> = self
            .entries
            .iter()
            .filter(|(_, e)| match e.state {
                State::Backoff => e.backoff_until.is_none_or(|t| t <= now),
                State::Unschedulable { since } => since + unschedulable_timeout <= now,
                _ => false,
            })
            .map(|(k, e)| (e.backoff_until, k.clone()))
            .collect();
        // Those that have waited longest go first.
        due.sort();
        for (_, key) in due {
            self.wake(&key, now);
        }
    }

    /// To the active list if its backoff is over, else to the backoff list.
    fn wake(&mut self, key: &str, now: Instant) {
        let Some(entry) = self.entries.get_mut(key) else {
            return;
        };
        if entry.backoff_until.is_some_and(|t| t > now) {
            entry.state = State::Backoff;
        } else if entry.state != State::Active {
            entry.state = State::Active;
            let priority = priority_of(&entry.pod);
            self.push(priority, key);
        }
    }

    fn push(&mut self, priority: i32, key: &str) {
        self.seq += 1;
        self.active
            .push((priority, Reverse(self.seq), key.to_string()));
    }

    pub fn lengths(&self) -> QueueLengths {
        let mut l = QueueLengths::default();
        for e in self.entries.values() {
            match e.state {
                State::Active => l.active += 1,
                State::Backoff => l.backoff += 1,
                State::Unschedulable { .. } => l.unschedulable += 1,
                State::InFlight => l.in_flight += 1,
            }
        }
        l
    }
}

/// `spec.priority` (0 when unset).
fn priority_of(pod: &Value) -> i32 {
    pod.pointer("/spec/priority")
        .and_then(Value::as_i64)
        .and_then(|p| i32::try_from(p).ok())
        .unwrap_or(0)
}

/// `initial * 2^(attempts-1)`, capped at `max`.
fn backoff(initial: Duration, max: Duration, attempts: u32) -> Duration {
    let factor = 1u32
        .checked_shl(attempts.saturating_sub(1))
        .unwrap_or(u32::MAX);
    initial.saturating_mul(factor).min(max)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn queue() -> SchedulingQueue {
        SchedulingQueue::new(Duration::from_secs(1), Duration::from_secs(10))
    }

    fn pod(cpu: &str) -> Arc<Value> {
        Arc::new(
            json!({"metadata": {"name": "p"}, "spec": {"containers": [{"resources": {"requests": {"cpu": cpu}}}]}}),
        )
    }

    #[test]
    fn pods_are_tried_in_arrival_order_and_only_once() {
        let mut q = queue();
        let now = Instant::now();
        q.add_or_update("ns/a", pod("1"), now);
        q.add_or_update("ns/b", pod("1"), now);
        q.add_or_update("ns/a", pod("1"), now);
        assert_eq!(q.pop().map(|(k, _)| k), Some("ns/a".to_string()));
        assert_eq!(q.pop().map(|(k, _)| k), Some("ns/b".to_string()));
        assert!(q.pop().is_none());
    }

    #[test]
    fn higher_priority_pods_are_tried_first_and_equal_ones_in_arrival_order() {
        let mut q = queue();
        let now = Instant::now();
        let with = |p: i64| Arc::new(json!({"metadata": {"name": "p"}, "spec": {"priority": p}}));
        q.add_or_update("ns/low", with(0), now);
        q.add_or_update("ns/high", with(1000), now);
        q.add_or_update("ns/low-2", with(0), now);
        q.add_or_update("ns/critical", with(2_000_000_000), now);
        let order: Vec<String> = std::iter::from_fn(|| q.pop().map(|(k, _)| k)).collect();
        assert_eq!(order, ["ns/critical", "ns/high", "ns/low", "ns/low-2"]);
    }

    #[test]
    fn backoff_doubles_from_one_second_up_to_ten() {
        let one = Duration::from_secs(1);
        let ten = Duration::from_secs(10);
        let got: Vec<u64> = (1..=6).map(|a| backoff(one, ten, a).as_secs()).collect();
        assert_eq!(got, vec![1, 2, 4, 8, 10, 10]);
        assert_eq!(backoff(one, ten, 100), ten);
    }

    #[test]
    fn a_failed_bind_is_retried_only_after_its_backoff() {
        let mut q = queue();
        let t0 = Instant::now();
        q.add_or_update("ns/a", pod("1"), t0);
        q.pop();
        q.backoff("ns/a", t0);
        q.flush(t0 + Duration::from_millis(500), Duration::from_secs(60));
        assert!(q.pop().is_none());
        q.flush(t0 + Duration::from_secs(1), Duration::from_secs(60));
        assert_eq!(q.pop().map(|(k, _)| k), Some("ns/a".to_string()));
    }

    #[test]
    fn an_unschedulable_pod_waits_for_a_cluster_change_not_a_timer_tick() {
        let mut q = queue();
        let t0 = Instant::now();
        q.add_or_update("ns/a", pod("1"), t0);
        q.pop();
        q.unschedulable("ns/a", t0);
        q.flush(t0 + Duration::from_secs(5), Duration::from_secs(60));
        assert!(
            q.pop().is_none(),
            "flush alone does not retry before the timeout"
        );
        assert_eq!(q.lengths().unschedulable, 1);
        q.move_all_unschedulable(t0 + Duration::from_secs(5));
        assert_eq!(q.pop().map(|(k, _)| k), Some("ns/a".to_string()));
    }

    #[test]
    fn a_cluster_change_right_after_a_failure_respects_the_backoff() {
        let mut q = queue();
        let t0 = Instant::now();
        q.add_or_update("ns/a", pod("1"), t0);
        q.pop();
        q.unschedulable("ns/a", t0);
        q.move_all_unschedulable(t0 + Duration::from_millis(100));
        assert!(q.pop().is_none());
        assert_eq!(q.lengths().backoff, 1);
        q.flush(t0 + Duration::from_secs(1), Duration::from_secs(60));
        assert!(q.pop().is_some());
    }

    #[test]
    fn unschedulable_pods_are_flushed_after_the_timeout() {
        let mut q = queue();
        let t0 = Instant::now();
        q.add_or_update("ns/a", pod("1"), t0);
        q.pop();
        q.unschedulable("ns/a", t0);
        q.flush(t0 + Duration::from_secs(60), Duration::from_secs(60));
        assert!(q.pop().is_some());
    }

    #[test]
    fn a_status_only_update_does_not_wake_an_unschedulable_pod_but_a_spec_change_does() {
        let mut q = queue();
        let t0 = Instant::now();
        q.add_or_update("ns/a", pod("8"), t0);
        q.pop();
        q.unschedulable("ns/a", t0);
        let later = t0 + Duration::from_secs(30);
        let mut with_status = (*pod("8")).clone();
        with_status["status"] =
            json!({"conditions": [{"type": "PodScheduled", "status": "False"}]});
        q.add_or_update("ns/a", Arc::new(with_status), later);
        assert!(q.pop().is_none());
        q.add_or_update("ns/a", pod("1"), later);
        let (_, p) = q.pop().expect("woken by the spec change");
        assert_eq!(
            p["spec"]["containers"][0]["resources"]["requests"]["cpu"],
            "1"
        );
    }

    #[test]
    fn a_removed_pod_is_never_popped() {
        let mut q = queue();
        let t0 = Instant::now();
        q.add_or_update("ns/a", pod("1"), t0);
        q.remove("ns/a");
        assert!(q.pop().is_none());
        // Re-created under the same name: queued once, not twice.
        q.add_or_update("ns/a", pod("1"), t0);
        assert!(q.pop().is_some());
        assert!(q.pop().is_none());
    }
}
