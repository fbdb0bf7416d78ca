//! Watch responses streamed over a chunked response: newline-delimited JSON events, or
//! for a client that asked for protobuf, length-prefixed `WatchEvent` frames.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::stream::{self, Stream};
use serde_json::{json, Value};
use tokio::time::Instant;

use super::render::{self, Format};
use crate::api::protobuf;
use crate::api::resources::ResourceInfo;
use crate::api::selector::{FieldSelector, LabelSelector};
use crate::metrics::Metrics;
use crate::store::{Event, EventKind, WatchStream};

/// What a watch filters on and how it renders.
pub struct WatchSpec {
    pub info: &'static ResourceInfo,
    pub filter: WatchFilter,
    pub format: Format,
    pub timeout: Duration,
}

/// The selectors of a watch.
pub struct WatchFilter {
    pub labels: LabelSelector,
    pub fields: FieldSelector,
}

impl WatchFilter {
    fn matches(&self, obj: &Value) -> bool {
        self.labels.matches_object(obj) && self.fields.matches(obj)
    }

    /// The event a filtered watcher sees: a change that moves an object into the selection
    /// is ADDED, out of it DELETED, as the apiserver's watch cache reports it.
    pub fn translate(&self, ev: &Event) -> Option<(EventKind, Arc<Value>)> {
        let now = ev.kind != EventKind::Deleted && self.matches(&ev.object);
        let before = match ev.kind {
            EventKind::Added => false,
            EventKind::Deleted => self.matches(&ev.object),
            EventKind::Modified => ev.prev.as_deref().is_some_and(|p| self.matches(p)),
        };
        match (before, now) {
            (false, true) => Some((EventKind::Added, ev.object.clone())),
            (true, true) => Some((EventKind::Modified, ev.object.clone())),
            (true, false) => Some((EventKind::Deleted, ev.object.clone())),
            (false, false) => None,
        }
    }
}

impl WatchSpec {
    /// The Content-Type of the stream.
    pub fn content_type(&self) -> &'static str {
        match self.format {
            Format::Protobuf => protobuf::WATCH_MEDIA_TYPE,
            _ => "application/json",
        }
    }

    fn encode(&self, kind: EventKind, obj: Arc<Value>) -> Bytes {
        let obj = if crate::api::resources::is_view(self.info) {
            Arc::new(crate::api::events_v1::to_v1(&obj))
        } else {
            obj
        };
        let object = match self.format {
            Format::Json => (*obj).clone(),
            Format::Protobuf => return Self::frame(kind.as_str(), &obj),
            Format::Table(include) => render::table_body(self.info, &[obj], include, None, None),
        };
        let mut line = json!({"type": kind.as_str(), "object": object}).to_string();
        line.push('\n');
        Bytes::from(line)
    }

    /// A protobuf frame; an object that cannot be encoded becomes an ERROR event, as
    /// kube-apiserver reports an encoding failure in the stream.
    fn frame(kind: &str, obj: &Value) -> Bytes {
        match protobuf::watch_frame(kind, obj) {
            Ok(frame) => Bytes::from(frame),
            Err(e) => {
                let status =
                    crate::api::ApiError::Internal(format!("encoding the watch event: {e}"))
                        .to_status();
                Bytes::from(protobuf::watch_frame("ERROR", &status).unwrap_or_default())
            }
        }
    }
}

/// Decrements the open-watch gauge when the stream is dropped (client gone or timed out).
struct OpenWatch(Arc<Metrics>);

impl Drop for OpenWatch {
    fn drop(&mut self) {
        self.0.open_watches.dec();
    }
}

struct State {
    spec: WatchSpec,
    initial: std::vec::IntoIter<Arc<Event>>,
    watch: WatchStream,
    deadline: Instant,
    _open: OpenWatch,
}

/// The byte stream of a watch response; it ends at the timeout or when the store drops
/// the watcher (the client then re-watches from its last resourceVersion).
pub fn event_stream(
    spec: WatchSpec,
    mut watch: WatchStream,
    metrics: Arc<Metrics>,
) -> impl Stream<Item = Result<Bytes, std::convert::Infallible>> {
    metrics.open_watches.inc();
    let initial = std::mem::take(&mut watch.initial).into_iter();
    let deadline = Instant::now() + spec.timeout;
    let state = State {
        spec,
        initial,
        watch,
        deadline,
        _open: OpenWatch(metrics),
    };
    stream::unfold(state, |mut st| async move {
        loop {
            let ev = match st.initial.next() {
                Some(ev) => ev,
                None => {
                    tokio::select! {
                        ev = st.watch.rx.recv() => ev?,
                        _ = tokio::time::sleep_until(st.deadline) => return None,
                    }
                }
            };
            if let Some((kind, obj)) = st.spec.filter.translate(&ev) {
                let bytes = st.spec.encode(kind, obj);
                return Some((Ok(bytes), st));
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::resources;

    fn spec(selector: &str) -> WatchSpec {
        WatchSpec {
            info: resources::lookup("pods").expect("pods"),
            filter: WatchFilter {
                labels: LabelSelector::parse(selector).expect("selector"),
                fields: FieldSelector::default(),
            },
            format: Format::Json,
            timeout: Duration::from_secs(1),
        }
    }

    fn modified(prev: Value, now: Value) -> Event {
        Event {
            rev: 2,
            kind: EventKind::Modified,
            key: "pods/default/p".into(),
            object: Arc::new(now),
            prev: Some(Arc::new(prev)),
        }
    }

    #[test]
    fn protobuf_watchers_get_length_prefixed_watch_events() {
        let mut s = spec("");
        s.format = Format::Protobuf;
        assert_eq!(
            s.content_type(),
            "application/vnd.kubernetes.protobuf;stream=watch"
        );
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}});
        let bytes = s.encode(EventKind::Added, Arc::new(pod.clone()));
        let (kind, obj, used) = protobuf::read_watch_frame(&bytes)
            .expect("a frame")
            .expect("complete");
        assert_eq!((kind.as_str(), used), ("ADDED", bytes.len()));
        assert_eq!(obj, pod);
    }

    #[test]
    fn relabelled_object_leaving_the_selector_is_seen_as_deleted() {
        let ev = modified(
            json!({"metadata": {"labels": {"app": "web"}}}),
            json!({"metadata": {"labels": {"app": "db"}}}),
        );
        let (kind, _) = spec("app=web").filter.translate(&ev).expect("event");
        assert_eq!(kind, EventKind::Deleted);
    }

    #[test]
    fn relabelled_object_entering_the_selector_is_seen_as_added() {
        let ev = modified(
            json!({"metadata": {"labels": {"app": "db"}}}),
            json!({"metadata": {"labels": {"app": "web"}}}),
        );
        let (kind, _) = spec("app=web").filter.translate(&ev).expect("event");
        assert_eq!(kind, EventKind::Added);
        assert!(spec("app=other").filter.translate(&ev).is_none());
    }
}
