//! Events off the scheduling path: the scheduler hands an event to a bounded queue and
//! moves on; a few writers drain it. When the queue is full (a burst of thousands of binds)
//! events are dropped and counted rather than slowing placement, as Kubernetes' event
//! broadcaster drops events beyond its queue.

use std::sync::Arc;

use serde_json::Value;
use tokio::sync::{mpsc, Semaphore};

use crate::controllers::recorder::Recorder;

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
    /// A queue of `capacity` events and the future that writes them with at most
    /// `writers` writes in flight (run it for as long as the queue is used).
    pub fn new(
        recorder: Arc<Recorder>,
        capacity: usize,
        writers: usize,
    ) -> (EventQueue, impl std::future::Future<Output = ()>) {
        let (tx, mut rx) = mpsc::channel::<PodEvent>(capacity.max(1));
        let slots = Arc::new(Semaphore::new(writers.max(1)));
        let drain = async move {
            while let Some(event) = rx.recv().await {
                let Ok(slot) = slots.clone().acquire_owned().await else {
                    return;
                };
                let recorder = recorder.clone();
                actix::spawn(async move {
                    recorder
                        .record(&event.pod, event.kind, event.reason, &event.message)
                        .await;
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
    use crate::api::ApiError;
    use crate::client::{ApiClient, ListParams, ObjectList, PatchType, WatchStream};
    use serde_json::json;
    use std::sync::Mutex;

    /// Records the events created; everything else is unused here.
    #[derive(Default)]
    struct Created(Mutex<Vec<Value>>);

    #[async_trait::async_trait]
    impl ApiClient for Created {
        async fn get(&self, _: &str, _: Option<&str>, name: &str) -> Result<Value, ApiError> {
            Err(ApiError::not_found("events", name))
        }
        async fn list(
            &self,
            _: &str,
            _: Option<&str>,
            _: &ListParams,
        ) -> Result<ObjectList, ApiError> {
            Ok(ObjectList {
                items: vec![],
                resource_version: 0,
            })
        }
        async fn watch(
            &self,
            _: &str,
            _: Option<&str>,
            _: &ListParams,
            _: u64,
        ) -> Result<WatchStream, ApiError> {
            Err(ApiError::MethodNotAllowed)
        }
        async fn create(&self, _: &str, _: Option<&str>, object: Value) -> Result<Value, ApiError> {
            self.0
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(object.clone());
            Ok(object)
        }
        async fn update(
            &self,
            _: &str,
            _: Option<&str>,
            _: &str,
            _: Option<&str>,
            o: Value,
        ) -> Result<Value, ApiError> {
            Ok(o)
        }
        async fn patch(
            &self,
            _: &str,
            _: Option<&str>,
            _: &str,
            _: Option<&str>,
            _: PatchType,
            p: Value,
        ) -> Result<Value, ApiError> {
            Ok(p)
        }
        async fn delete(
            &self,
            _: &str,
            _: Option<&str>,
            _: &str,
            _: Option<&str>,
        ) -> Result<Value, ApiError> {
            Ok(Value::Null)
        }
        async fn bind(&self, _: &str, _: &str, _: &str) -> Result<(), ApiError> {
            Ok(())
        }
    }

    fn event(i: usize) -> PodEvent {
        PodEvent {
            pod: Arc::new(
                json!({"kind": "Pod", "metadata": {"name": format!("p{i}"), "namespace": "default", "uid": format!("u{i}")}}),
            ),
            kind: "Normal",
            reason: "Scheduled",
            message: format!("Successfully assigned default/p{i} to n1"),
        }
    }

    #[actix_rt::test]
    async fn queued_events_are_written_and_a_full_queue_drops_instead_of_blocking() {
        let client = Arc::new(Created::default());
        let recorder = Arc::new(Recorder::new(client.clone(), "default-scheduler"));
        let (queue, drain) = EventQueue::new(recorder, 2, 1);
        // Not draining yet: the third event does not fit.
        assert!(queue.send(event(0)));
        assert!(queue.send(event(1)));
        assert!(!queue.send(event(2)));
        actix::spawn(drain);
        for _ in 0..100 {
            if client.0.lock().map(|c| c.len()).unwrap_or(0) == 2 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let created = client.0.lock().map(|c| c.clone()).unwrap_or_default();
        assert_eq!(created.len(), 2);
        assert_eq!(created[0]["reason"], "Scheduled");
        assert_eq!(
            created[0]["message"],
            "Successfully assigned default/p0 to n1"
        );
    }
}
