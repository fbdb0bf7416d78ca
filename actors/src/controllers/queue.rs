//! The work queue: keys to reconcile, deduplicated, with at most one reconcile per key in
//! flight (a key that changes while it is being reconciled is queued again after), and
//! per-key exponential backoff for failures.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Duration;

#[derive(Debug)]
pub struct WorkQueue {
    queue: VecDeque<String>,
    queued: HashSet<String>,
    in_flight: HashSet<String>,
    /// Keys that changed while in flight: queued again when their reconcile ends.
    dirty: HashSet<String>,
    failures: HashMap<String, u32>,
    base: Duration,
    max: Duration,
}

impl Default for WorkQueue {
    fn default() -> Self {
        WorkQueue::new(Duration::from_millis(50), Duration::from_secs(60))
    }
}

impl WorkQueue {
    pub fn new(base: Duration, max: Duration) -> Self {
        WorkQueue {
            queue: VecDeque::new(),
            queued: HashSet::new(),
            in_flight: HashSet::new(),
            dirty: HashSet::new(),
            failures: HashMap::new(),
            base,
            max,
        }
    }

    pub fn add(&mut self, key: String) {
        if self.in_flight.contains(&key) {
            self.dirty.insert(key);
        } else if self.queued.insert(key.clone()) {
            self.queue.push_back(key);
        }
    }

    /// The next key to reconcile, marked in flight.
    pub fn pop(&mut self) -> Option<String> {
        let key = self.queue.pop_front()?;
        self.queued.remove(&key);
        self.in_flight.insert(key.clone());
        Some(key)
    }

    /// A reconcile ended; `ok` resets the key's backoff.
    pub fn done(&mut self, key: &str, ok: bool) {
        self.in_flight.remove(key);
        if ok {
            self.failures.remove(key);
        }
        if self.dirty.remove(key) {
            self.add(key.to_string());
        }
    }

    /// How long to wait before retrying a key that just failed.
    pub fn backoff(&mut self, key: &str) -> Duration {
        let n = self.failures.entry(key.to_string()).or_insert(0);
        *n = n.saturating_add(1);
        let factor = 2u32.saturating_pow(n.saturating_sub(1).min(20));
        (self.base * factor).min(self.max)
    }

    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_queued_once_however_often_it_is_added() {
        let mut q = WorkQueue::default();
        q.add("a".into());
        q.add("a".into());
        q.add("b".into());
        assert_eq!(q.len(), 2);
    }

    #[test]
    fn a_key_changed_during_its_reconcile_runs_again_afterwards_not_concurrently() {
        let mut q = WorkQueue::default();
        q.add("a".into());
        let k = q.pop().expect("key");
        q.add("a".into());
        assert!(
            q.pop().is_none(),
            "no second reconcile of the same key in flight"
        );
        q.done(&k, true);
        assert_eq!(q.pop().as_deref(), Some("a"));
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_and_resets_on_success() {
        let mut q = WorkQueue::new(Duration::from_millis(10), Duration::from_millis(50));
        let waits: Vec<_> = (0..5).map(|_| q.backoff("a").as_millis()).collect();
        assert_eq!(waits, vec![10, 20, 40, 50, 50]);
        q.add("a".into());
        let k = q.pop().expect("key");
        q.done(&k, true);
        assert_eq!(q.backoff("a").as_millis(), 10);
    }
}
