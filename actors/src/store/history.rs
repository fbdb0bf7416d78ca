//! The watch history: the window of recent committed events that watches resume from and
//! lists at a past revision are rebuilt from. It lives in the [`Snapshot`](super::Snapshot)
//! beside the objects, under the same lock, so a reader always sees objects and history
//! at one revision. It is bounded by count and by age (etcd's compaction); what falls out
//! of it answers 410 Expired.

use std::collections::VecDeque;
use std::sync::Arc;

use super::{Event, Rev};

/// One kept event and when it was committed (Unix milliseconds), for the age bound.
#[derive(Debug, Clone)]
struct Kept {
    at_ms: i64,
    event: Arc<Event>,
}

#[derive(Debug, Default)]
pub struct History {
    events: VecDeque<Kept>,
    /// Every event after this revision is kept: watches and lists may start at or after it.
    oldest: Rev,
}

impl History {
    /// An empty history at `rev`: nothing before it can be replayed.
    pub fn starting_at(rev: Rev) -> Self {
        History {
            events: VecDeque::new(),
            oldest: rev,
        }
    }

    /// A history loaded from disk: `events` are every event after `oldest`, in order.
    pub fn loaded(oldest: Rev, events: Vec<(i64, Arc<Event>)>) -> Self {
        History {
            events: events
                .into_iter()
                .map(|(at_ms, event)| Kept { at_ms, event })
                .collect(),
            oldest,
        }
    }

    /// The oldest revision a watch or list can start at.
    pub fn oldest(&self) -> Rev {
        self.oldest
    }

    pub fn len(&self) -> usize {
        self.events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Keep a committed event, dropping the oldest beyond `capacity`.
    pub fn push(&mut self, event: Arc<Event>, at_ms: i64, capacity: usize) {
        self.events.push_back(Kept { at_ms, event });
        self.keep_last(capacity.max(1));
    }

    /// Forget the oldest events, keeping `keep`.
    pub fn keep_last(&mut self, keep: usize) {
        while self.events.len() > keep {
            self.evict();
        }
    }

    /// Forget the events committed before `cutoff_ms`.
    pub fn drop_older_than(&mut self, cutoff_ms: i64) {
        while self.events.front().is_some_and(|k| k.at_ms < cutoff_ms) {
            self.evict();
        }
    }

    fn evict(&mut self) {
        if let Some(k) = self.events.pop_front() {
            self.oldest = k.event.rev;
        }
    }

    /// The kept events after `rev`, in order (binary search: revisions only grow).
    pub fn after(&self, rev: Rev) -> impl Iterator<Item = &Arc<Event>> + '_ {
        let start = self.events.partition_point(|k| k.event.rev <= rev);
        self.events.range(start..).map(|k| &k.event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::EventKind;
    use serde_json::json;

    fn event(rev: Rev) -> Arc<Event> {
        Arc::new(Event {
            rev,
            kind: EventKind::Modified,
            key: "pods/a/x".into(),
            object: Arc::new(json!({})),
            prev: None,
        })
    }

    #[test]
    fn eviction_by_count_moves_the_oldest_revision_to_the_last_evicted_event() {
        let mut h = History::starting_at(0);
        for rev in 1..=5 {
            h.push(event(rev), 0, 3);
        }
        assert_eq!(h.oldest(), 2);
        let revs: Vec<_> = h.after(0).map(|e| e.rev).collect();
        assert_eq!(revs, vec![3, 4, 5]);
    }

    #[test]
    fn eviction_by_age_drops_only_events_committed_before_the_cutoff() {
        let mut h = History::starting_at(10);
        h.push(event(11), 1_000, 100);
        h.push(event(12), 2_000, 100);
        h.push(event(13), 3_000, 100);
        h.drop_older_than(2_500);
        assert_eq!(h.oldest(), 12);
        assert_eq!(h.len(), 1);
    }

    #[test]
    fn events_after_a_revision_are_found_without_scanning_older_ones() {
        let h = History::loaded(4, (5..=9).map(|r| (0, event(r))).collect());
        let revs: Vec<_> = h.after(7).map(|e| e.rev).collect();
        assert_eq!(revs, vec![8, 9]);
        assert_eq!(h.after(9).count(), 0);
        assert_eq!(h.after(0).count(), 5);
    }
}
