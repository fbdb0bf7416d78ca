//! Events (`core/v1`), so that `kubectl describe` and `kubectl get events` tell what the
//! controllers did. Repeats of the same event are counted on one object, as Kubernetes'
//! event correlator does.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

use crate::api::meta;
use crate::client::{ApiClient, PatchType};

/// (involved uid, reason, message): what makes two events the same event.
type EventId = (String, String, String);
/// Where the recorded event is and how often it happened: (namespace, name, count).
type Recorded = (String, String, u64);

pub struct Recorder {
    client: Arc<dyn ApiClient>,
    component: &'static str,
    /// (involved uid, reason, message) → (namespace, event name, count).
    seen: Mutex<HashMap<EventId, Recorded>>,
}

impl Recorder {
    pub fn new(client: Arc<dyn ApiClient>, component: &'static str) -> Self {
        Recorder {
            client,
            component,
            seen: Mutex::new(HashMap::new()),
        }
    }

    pub async fn normal(&self, obj: &Value, reason: &str, message: &str) {
        self.record(obj, "Normal", reason, message).await
    }

    pub async fn warning(&self, obj: &Value, reason: &str, message: &str) {
        self.record(obj, "Warning", reason, message).await
    }

    /// Record an event about `obj`; failures are logged, never passed on: an event is a
    /// report, and losing one must not fail the work it reports on.
    pub async fn record(&self, obj: &Value, kind: &str, reason: &str, message: &str) {
        let uid = meta::uid(obj).unwrap_or_default().to_string();
        let namespace = meta::namespace(obj)
            .filter(|n| !n.is_empty())
            .unwrap_or("default")
            .to_string();
        let now = meta::now_rfc3339();
        let id = (uid.clone(), reason.to_string(), message.to_string());
        let previous = self
            .seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .cloned();
        if let Some((ns, name, count)) = previous {
            let patch = json!({"count": count + 1, "lastTimestamp": now});
            if self
                .client
                .patch("events", Some(&ns), &name, None, PatchType::Merge, patch)
                .await
                .is_ok()
            {
                self.remember(id, ns, name, count + 1);
                return;
            }
        }
        let name = format!(
            "{}.{:x}",
            meta::name(obj).unwrap_or("object"),
            uuid::Uuid::new_v4().as_u128() as u64
        );
        let event = json!({
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": name, "namespace": namespace},
            "involvedObject": {
                "kind": obj.get("kind").cloned().unwrap_or(Value::Null),
                "apiVersion": obj.get("apiVersion").cloned().unwrap_or(json!("v1")),
                "name": meta::name(obj),
                "namespace": meta::namespace(obj),
                "uid": uid,
                "resourceVersion": meta::resource_version(obj),
            },
            "reason": reason,
            "message": message,
            "type": kind,
            "source": {"component": self.component},
            "reportingComponent": self.component,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        });
        match self.client.create("events", Some(&namespace), event).await {
            Ok(_) => self.remember(id, namespace, name, 1),
            Err(e) => tracing::debug!(error = %e, reason, "event not recorded"),
        }
    }

    fn remember(&self, id: EventId, ns: String, name: String, count: u64) {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        // Bounded: forget everything rather than grow without limit under event storms.
        if seen.len() > 10_000 {
            seen.clear();
        }
        seen.insert(id, (ns, name, count));
    }
}
