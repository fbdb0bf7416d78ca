//! Watch fan-out: the live watchers each committed change is sent to. The history that
//! watches resume from is the snapshot's ([`History`](super::history::History)).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc;

use super::{Event, EventKind, Rev, Snapshot, StoreError};

/// A started watch: the events to replay first, then the live channel.
pub struct WatchStream {
    pub initial: Vec<Arc<Event>>,
    pub rx: mpsc::Receiver<Arc<Event>>,
    /// The revision the watch is current to once `initial` is consumed.
    pub rev: Rev,
    /// The revision of the last event offered to every watcher. Read before finding
    /// `rx` empty, it is a revision the watch is current to: what a bookmark may carry.
    pub progress: Arc<AtomicU64>,
}

/// Where a watch stands, for a bookmark.
#[derive(Debug)]
pub enum Progress {
    /// Every change up to this revision has been taken from the stream.
    CaughtUp(Rev),
    /// This event was still queued: deliver it (and ask again) before any bookmark.
    Queued(Arc<Event>),
    /// The store ended the watch.
    Closed,
}

impl WatchStream {
    /// The revision this watch is current to, once nothing waits in `rx`.
    pub fn progress(&mut self) -> Progress {
        // Read before looking at the queue: the hub stores it after offering the event to
        // every watcher, so an empty queue then means everything up to it was taken.
        let progress = self.progress.load(Ordering::Acquire);
        match self.rx.try_recv() {
            Ok(ev) => Progress::Queued(ev),
            Err(mpsc::error::TryRecvError::Empty) => Progress::CaughtUp(progress.max(self.rev)),
            Err(mpsc::error::TryRecvError::Disconnected) => Progress::Closed,
        }
    }
}

struct Watcher {
    prefix: String,
    tx: mpsc::Sender<Arc<Event>>,
}

pub struct WatchHub {
    watchers: Vec<Watcher>,
    buffer: usize,
    progress: Arc<AtomicU64>,
}

impl WatchHub {
    /// A hub for a store at `rev`.
    pub fn new(rev: Rev, buffer: usize) -> Self {
        WatchHub {
            watchers: Vec::new(),
            buffer: buffer.max(1),
            progress: Arc::new(AtomicU64::new(rev)),
        }
    }

    pub fn publish(&mut self, event: Arc<Event>) {
        // A watcher that is gone or too slow to keep its buffer is dropped: its stream ends
        // and the client re-watches from its last revision, as with the apiserver's cacher.
        self.watchers.retain(|w| {
            if !event.key.starts_with(&w.prefix) {
                return !w.tx.is_closed();
            }
            w.tx.try_send(event.clone()).is_ok()
        });
        self.progress.store(event.rev, Ordering::Release);
    }

    /// Start a watch under `prefix`: from the current state (as ADDED events) when `from`
    /// is `None`, else with every kept event after `from`.
    pub fn subscribe(
        &mut self,
        prefix: &str,
        from: Option<Rev>,
        snapshot: &Snapshot,
    ) -> Result<WatchStream, StoreError> {
        let oldest = snapshot.history.oldest();
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
            Some(rev) if rev < oldest => {
                return Err(StoreError::Expired {
                    requested: rev,
                    oldest,
                })
            }
            Some(rev) if rev > snapshot.rev => {
                return Err(StoreError::TooLarge {
                    requested: rev,
                    current: snapshot.rev,
                })
            }
            Some(rev) => snapshot
                .history
                .after(rev)
                .filter(|e| e.key.starts_with(prefix))
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
            progress: self.progress.clone(),
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

    /// A snapshot at the last of `events`, keeping the last `capacity` of them.
    fn snapshot(events: &[(Rev, &str)], capacity: usize) -> Snapshot {
        let mut snap = Snapshot::default();
        for (rev, key) in events {
            snap.history.push(event(*rev, key), 0, capacity);
            snap.rev = *rev;
        }
        snap
    }

    #[test]
    fn resume_replays_only_events_after_the_revision_under_the_prefix() {
        let mut hub = WatchHub::new(0, 10);
        let snap = snapshot(&[(1, "pods/a/x"), (2, "nodes//n"), (3, "pods/a/y")], 10);
        let w = hub.subscribe("pods/", Some(1), &snap).expect("watch");
        let revs: Vec<_> = w.initial.iter().map(|e| e.rev).collect();
        assert_eq!(revs, vec![3]);
    }

    #[test]
    fn watching_from_a_revision_evicted_from_history_is_expired() {
        let mut hub = WatchHub::new(0, 10);
        let events: Vec<(Rev, &str)> = (1..=5).map(|r| (r, "pods/a/x")).collect();
        let snap = snapshot(&events, 2);
        assert!(matches!(
            hub.subscribe("pods/", Some(2), &snap),
            Err(StoreError::Expired {
                requested: 2,
                oldest: 3
            })
        ));
        assert!(hub.subscribe("pods/", Some(3), &snap).is_ok());
    }

    #[test]
    fn watching_from_a_revision_not_reached_yet_is_too_large() {
        let mut hub = WatchHub::new(0, 10);
        let snap = snapshot(&[(1, "pods/a/x")], 10);
        assert!(matches!(
            hub.subscribe("pods/", Some(2), &snap),
            Err(StoreError::TooLarge {
                requested: 2,
                current: 1
            })
        ));
    }

    #[test]
    fn a_watch_is_caught_up_to_the_progress_only_once_its_queue_is_empty() {
        let mut hub = WatchHub::new(0, 10);
        let mut w = hub
            .subscribe("pods/", Some(0), &Snapshot::default())
            .expect("watch");
        hub.publish(event(1, "pods/a/x"));
        hub.publish(event(2, "nodes//n"));
        assert!(matches!(w.progress(), Progress::Queued(ev) if ev.rev == 1));
        assert!(matches!(w.progress(), Progress::CaughtUp(2)));
    }

    #[test]
    fn slow_watcher_is_dropped_instead_of_blocking_the_store() {
        let mut hub = WatchHub::new(0, 1);
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
