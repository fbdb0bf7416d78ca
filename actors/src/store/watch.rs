//! Watch history and fan-out: a bounded window of recent events to resume watches from,
//! and the live watchers each change is sent to.

use std::collections::VecDeque;
use std::sync::Arc;

use tokio::sync::mpsc;

use super::{Event, EventKind, Rev, Snapshot, StoreError};

/// A started watch: the events to replay first, then the live channel.
pub struct WatchStream {
    pub initial: Vec<Arc<Event>>,
    pub rx: mpsc::Receiver<Arc<Event>>,
    /// The revision the watch is current to once `initial` is consumed.
    pub rev: Rev,
}

struct Watcher {
    prefix: String,
    tx: mpsc::Sender<Arc<Event>>,
}

pub struct WatchHub {
    history: VecDeque<Arc<Event>>,
    capacity: usize,
    /// Watches must start at or after this revision; earlier events are gone.
    oldest: Rev,
    watchers: Vec<Watcher>,
    buffer: usize,
}

impl WatchHub {
    /// A hub whose history starts at `rev`: nothing before it can be replayed.
    pub fn new(rev: Rev, capacity: usize, buffer: usize) -> Self {
        WatchHub {
            history: VecDeque::new(),
            capacity: capacity.max(1),
            oldest: rev,
            watchers: Vec::new(),
            buffer: buffer.max(1),
        }
    }

    pub fn publish(&mut self, event: Arc<Event>) {
        if self.history.len() == self.capacity {
            if let Some(evicted) = self.history.pop_front() {
                self.oldest = evicted.rev;
            }
        }
        self.history.push_back(event.clone());
        // A watcher that is gone or too slow to keep its buffer is dropped: its stream ends
        // and the client re-watches from its last revision, as with the apiserver's cacher.
        self.watchers.retain(|w| {
            if !event.key.starts_with(&w.prefix) {
                return !w.tx.is_closed();
            }
            w.tx.try_send(event.clone()).is_ok()
        });
    }

    /// Forget the oldest events, keeping `keep`.
    pub fn compact(&mut self, keep: usize) {
        while self.history.len() > keep {
            if let Some(evicted) = self.history.pop_front() {
                self.oldest = evicted.rev;
            }
        }
    }

    pub fn subscribe(
        &mut self,
        prefix: &str,
        from: Option<Rev>,
        snapshot: &Snapshot,
    ) -> Result<WatchStream, StoreError> {
        let initial = match from {
            None => snapshot
                .objects
                .range(prefix.to_string()..)
                .take_while(|(k, _)| k.starts_with(prefix))
                .map(|(k, o)| {
                    Arc::new(Event {
                        rev: o.rev,
                        kind: EventKind::Added,
                        key: k.clone(),
                        object: o.value.clone(),
                        prev: None,
                    })
                })
                .collect(),
            Some(rev) if rev < self.oldest => {
                return Err(StoreError::Expired {
                    requested: rev,
                    oldest: self.oldest,
                })
            }
            Some(rev) => self
                .history
                .iter()
                .filter(|e| e.rev > rev && e.key.starts_with(prefix))
                .cloned()
                .collect(),
        };
        let (tx, rx) = mpsc::channel(self.buffer);
        self.watchers.push(Watcher {
            prefix: prefix.to_string(),
            tx,
        });
        Ok(WatchStream {
            initial,
            rx,
            rev: snapshot.rev,
        })
    }

    /// End every watch (their clients re-watch), as after a restart.
    pub fn close_all(&mut self) {
        self.watchers.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(rev: Rev, key: &str) -> Arc<Event> {
        Arc::new(Event {
            rev,
            kind: EventKind::Modified,
            key: key.into(),
            object: Arc::new(json!({})),
            prev: None,
        })
    }

    #[test]
    fn resume_replays_only_events_after_the_revision_under_the_prefix() {
        let mut hub = WatchHub::new(0, 10, 10);
        for (rev, key) in [(1, "pods/a/x"), (2, "nodes//n"), (3, "pods/a/y")] {
            hub.publish(event(rev, key));
        }
        let w = hub
            .subscribe("pods/", Some(1), &Snapshot::default())
            .expect("watch");
        let revs: Vec<_> = w.initial.iter().map(|e| e.rev).collect();
        assert_eq!(revs, vec![3]);
    }

    #[test]
    fn watching_from_a_revision_evicted_from_history_is_expired() {
        let mut hub = WatchHub::new(0, 2, 10);
        for rev in 1..=5 {
            hub.publish(event(rev, "pods/a/x"));
        }
        assert!(matches!(
            hub.subscribe("pods/", Some(2), &Snapshot::default()),
            Err(StoreError::Expired { .. })
        ));
        assert!(hub
            .subscribe("pods/", Some(3), &Snapshot::default())
            .is_ok());
    }

    #[test]
    fn slow_watcher_is_dropped_instead_of_blocking_the_store() {
        let mut hub = WatchHub::new(0, 10, 1);
        let mut w = hub
            .subscribe("pods/", Some(0), &Snapshot::default())
            .expect("watch");
        hub.publish(event(1, "pods/a/x"));
        hub.publish(event(2, "pods/a/x"));
        assert_eq!(w.rx.try_recv().map(|e| e.rev).ok(), Some(1));
        assert!(w.rx.try_recv().is_err());
        assert!(hub.watchers.is_empty());
    }
}
