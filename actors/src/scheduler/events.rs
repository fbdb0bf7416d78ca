//! Events off the scheduling path: the scheduler hands an event to a bounded queue and
//! moves on; a few writers drain it. When the queue is full (a burst of thousands of binds)
//! events are dropped and counted rather than slowing placement, as Kubernetes' event
//! broadcaster drops events beyond its queue.

use std::future::Future;
use std::sync::Arc;

use serde_json::Value;
use tokio::sync::{mpsc, Semaphore};

/// One event to write about a pod.
#[derive(Debug)]
pub struct PodEvent {
    pub pod: Arc<Value>,
    pub kind: &'static str,
    pub reason: &'static str,
    pub message: String,
}

/// The sending half; cheap to use from the actor.
#[derive(Clone)]
pub struct EventQueue {
    tx: mpsc::Sender<PodEvent>,
}

impl EventQueue {
    /// A queue of `capacity` events and the future that drains it through `write` (the
    /// scheduler's event recorder) with at most `writers` writes in flight; run the
    /// future for as long as the queue is used.
    pub fn new<W, F>(
        write: W,
        capacity: usize,
        writers: usize,
    ) -> (EventQueue, impl Future<Output = ()>)
    where
        W: Fn(PodEvent) -> F + 'static,
        F: Future<Output = ()> + 'static,
    {
        let (tx, mut rx) = mpsc::channel::<PodEvent>(capacity.max(1));
        let slots = Arc::new(Semaphore::new(writers.max(1)));
        let drain = async move {
            while let Some(event) = rx.recv().await {
                let Ok(slot) = slots.clone().acquire_owned().await else {
                    return;
                };
                let written = write(event);
                actix::spawn(async move {
                    written.await;
                    drop(slot);
                });
            }
        };
        (EventQueue { tx }, drain)
    }

    /// Queue an event; false if it was dropped because the queue is full (or gone).
    pub fn send(&self, event: PodEvent) -> bool {
        self.tx.try_send(event).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::Mutex;
    use std::time::Duration;

    fn event(i: usize) -> PodEvent {
        PodEvent {
            pod: Arc::new(json!({"kind": "Pod", "metadata": {"name": format!("p{i}")}})),
            kind: "Normal",
            reason: "Scheduled",
            message: format!("Successfully assigned default/p{i} to n1"),
        }
    }

    #[actix_rt::test]
    async fn queued_events_are_written_and_a_full_queue_drops_instead_of_blocking() {
        let written = Arc::new(Mutex::new(Vec::new()));
        let sink = written.clone();
        let write = move |e: PodEvent| {
            let sink = sink.clone();
            async move {
                sink.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(e.message)
            }
        };
        let (queue, drain) = EventQueue::new(write, 2, 1);
        // Not draining yet: the third event does not fit and is dropped at once.
        assert!(queue.send(event(0)));
        assert!(queue.send(event(1)));
        assert!(!queue.send(event(2)));
        actix::spawn(drain);
        let count = || written.lock().map(|w| w.len()).unwrap_or(0);
        for _ in 0..100 {
            if count() == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let got = written.lock().map(|w| w.clone()).unwrap_or_default();
        assert_eq!(
            got,
            vec![
                "Successfully assigned default/p0 to n1".to_string(),
                "Successfully assigned default/p1 to n1".to_string()
            ]
        );
    }
}
