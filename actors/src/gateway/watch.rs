//! Watch responses streamed over a chunked response: newline-delimited JSON events, or
//! for a client that asked for protobuf, length-prefixed `WatchEvent` frames. Bookmarks
//! (`allowWatchBookmarks`) come every `bookmark_interval` and 2 s before the watch times
//! out, as kube-apiserver's cacher sends them; a watch-list ends its initial state with
//! the bookmark annotated `k8s.io/initial-events-end`. A watch that cannot start (its
//! revision compacted, or not reached) is answered 200 with a single ERROR event, as
//! kube-apiserver answers it once the request itself was valid.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::stream::{self, Stream};
use serde_json::{json, Value};
use tokio::time::Instant;

use super::read_options::INITIAL_EVENTS_END;
use super::render::{self, Format};
use crate::api::protobuf;
use crate::api::resources::ResourceInfo;
use crate::api::selector::{FieldSelector, LabelSelector};
use crate::api::ApiError;
use crate::metrics::Metrics;
use crate::store::{Event, EventKind, Progress, Rev, WatchStream};

/// A bookmark is not sent closer than this to the watch's end, so that the client has
/// the revision before the server closes the stream (kube-apiserver's 2 s).
const BOOKMARK_BEFORE_TIMEOUT: Duration = Duration::from_secs(2);

/// What a watch filters on and how it renders.
pub struct WatchSpec {
    pub info: &'static ResourceInfo,
    pub filter: WatchFilter,
    pub format: Format,
    pub timeout: Duration,
    /// `Some(interval)` when the client takes bookmarks.
    pub bookmarks: Option<Duration>,
    /// End the initial state with the annotated bookmark (a watch-list).
    pub initial_events_end: bool,
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

    /// A BOOKMARK: an object of the watched kind carrying only its resourceVersion (and,
    /// ending a watch-list's initial state, the initial-events-end annotation).
    fn bookmark(&self, rev: Rev, initial_events_end: bool) -> Bytes {
        let mut metadata = json!({"resourceVersion": rev.to_string()});
        if initial_events_end {
            metadata["annotations"] = json!({INITIAL_EVENTS_END: "true"});
        }
        let object = match self.format {
            Format::Table(_) => json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1",
                "metadata": metadata, "columnDefinitions": [], "rows": []}),
            _ => json!({"kind": self.info.kind, "apiVersion": self.info.api_version(),
                "metadata": metadata}),
        };
        match self.format {
            Format::Protobuf => Self::frame("BOOKMARK", &object),
            _ => line("BOOKMARK", object),
        }
    }

    fn encode(&self, kind: EventKind, obj: Arc<Value>) -> Bytes {
        let obj = crate::api::strategy::current_form(self.info.strategy, obj);
        let obj = if crate::api::resources::is_view(self.info) {
            Arc::new(self.info.strategy.to_view((*obj).clone()))
        } else {
            obj
        };
        let object = match self.format {
            Format::Json => (*obj).clone(),
            Format::Protobuf => return Self::frame(kind.as_str(), &obj),
            Format::Table(include) => render::table_body(self.info, &[obj], include, None, None),
        };
        line(kind.as_str(), object)
    }

    /// When the next bookmark is due after `now`, if before the watch ends.
    fn next_bookmark(&self, now: Instant, deadline: Instant) -> Option<Instant> {
        let interval = self.bookmarks?;
        let mut next = now + interval;
        if let Some(before_end) = deadline.checked_sub(BOOKMARK_BEFORE_TIMEOUT) {
            if before_end > now && before_end < next {
                next = before_end;
            }
        }
        (next < deadline).then_some(next)
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

/// One newline-delimited JSON watch event.
fn line(kind: &str, object: Value) -> Bytes {
    let mut line = json!({"type": kind, "object": object}).to_string();
    line.push('\n');
    Bytes::from(line)
}

/// The stream of a watch that could not start: one ERROR event with the Status.
pub fn error_stream(
    format: Format,
    err: &ApiError,
) -> impl Stream<Item = Result<Bytes, std::convert::Infallible>> {
    let status = err.to_status();
    let bytes = match format {
        Format::Protobuf => WatchSpec::frame("ERROR", &status),
        _ => line("ERROR", status),
    };
    stream::iter([Ok(bytes)])
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
    /// The initial-events-end bookmark is still to be sent.
    end_initial: bool,
    watch: WatchStream,
    deadline: Instant,
    next_bookmark: Option<Instant>,
    /// A bookmark is due, to be sent once the queued events are out.
    bookmark_due: bool,
    _open: OpenWatch,
}

impl State {
    /// The bytes for a store event, unless the filter hides it.
    fn render(&self, ev: &Event) -> Option<Bytes> {
        let (kind, obj) = self.spec.filter.translate(ev)?;
        Some(self.spec.encode(kind, obj))
    }
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
    let now = Instant::now();
    let deadline = now + spec.timeout;
    let state = State {
        next_bookmark: spec.next_bookmark(now, deadline),
        end_initial: spec.initial_events_end,
        spec,
        initial,
        watch,
        deadline,
        bookmark_due: false,
        _open: OpenWatch(metrics),
    };
    stream::unfold(state, |mut st| async move {
        loop {
            if let Some(ev) = st.initial.next() {
                match st.render(&ev) {
                    Some(bytes) => return Some((Ok(bytes), st)),
                    None => continue,
                }
            }
            if st.end_initial {
                st.end_initial = false;
                let bytes = st.spec.bookmark(st.watch.rev, true);
                return Some((Ok(bytes), st));
            }
            if st.bookmark_due {
                match st.watch.progress() {
                    Progress::Queued(ev) => match st.render(&ev) {
                        Some(bytes) => return Some((Ok(bytes), st)),
                        None => continue,
                    },
                    Progress::CaughtUp(rev) => {
                        st.bookmark_due = false;
                        st.next_bookmark = st.spec.next_bookmark(Instant::now(), st.deadline);
                        let bytes = st.spec.bookmark(rev, false);
                        return Some((Ok(bytes), st));
                    }
                    Progress::Closed => return None,
                }
            }
            let wake = st.next_bookmark.unwrap_or(st.deadline);
            tokio::select! {
                ev = st.watch.rx.recv() => {
                    let ev = ev?;
                    if let Some(bytes) = st.render(&ev) {
                        return Some((Ok(bytes), st));
                    }
                }
                _ = tokio::time::sleep_until(st.deadline) => return None,
                _ = tokio::time::sleep_until(wake), if st.next_bookmark.is_some() => {
                    st.next_bookmark = None;
                    st.bookmark_due = true;
                }
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
            bookmarks: None,
            initial_events_end: false,
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

    /// A watch stream fed by hand: its channel and progress stand in for the store's hub.
    fn fed(
        initial: Vec<Arc<Event>>,
        rev: Rev,
    ) -> (
        WatchStream,
        tokio::sync::mpsc::Sender<Arc<Event>>,
        Arc<std::sync::atomic::AtomicU64>,
    ) {
        let (tx, rx) = tokio::sync::mpsc::channel(10);
        let progress = Arc::new(std::sync::atomic::AtomicU64::new(rev));
        let stream = WatchStream {
            initial,
            rx,
            rev,
            progress: progress.clone(),
        };
        (stream, tx, progress)
    }

    fn added(rev: Rev, name: &str) -> Arc<Event> {
        Arc::new(Event {
            rev,
            kind: EventKind::Added,
            key: format!("pods/default/{name}"),
            object: Arc::new(json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": name, "resourceVersion": rev.to_string()}})),
            prev: None,
        })
    }

    async fn take(
        stream: impl Stream<Item = Result<Bytes, std::convert::Infallible>>,
        n: usize,
    ) -> Vec<Value> {
        use futures::StreamExt;
        let chunks: Vec<_> = tokio::time::timeout(Duration::from_secs(5), stream.take(n).collect())
            .await
            .expect("events in time");
        chunks
            .into_iter()
            .map(|c| serde_json::from_slice(&c.unwrap_or_default()).expect("JSON line"))
            .collect()
    }

    fn metrics() -> Arc<Metrics> {
        Arc::new(Metrics::new().expect("metrics"))
    }

    #[tokio::test]
    async fn a_watch_list_ends_its_initial_state_with_the_annotated_bookmark() {
        let (stream, _tx, _) = fed(vec![added(3, "a"), added(4, "b")], 5);
        let mut s = spec("");
        s.initial_events_end = true;
        let events = take(event_stream(s, stream, metrics()), 3).await;
        let types: Vec<_> = events
            .iter()
            .map(|e| e["type"].as_str().unwrap_or_default())
            .collect();
        assert_eq!(types, ["ADDED", "ADDED", "BOOKMARK"]);
        assert_eq!(
            events[2]["object"],
            json!({"kind": "Pod", "apiVersion": "v1", "metadata": {"resourceVersion": "5",
                "annotations": {"k8s.io/initial-events-end": "true"}}})
        );
    }

    #[tokio::test]
    async fn a_bookmark_waits_for_queued_events_and_carries_the_progress() {
        let (stream, tx, progress) = fed(Vec::new(), 5);
        let mut s = spec("");
        s.timeout = Duration::from_secs(10);
        s.bookmarks = Some(Duration::from_millis(50));
        tx.send(added(7, "a")).await.expect("send");
        progress.store(9, std::sync::atomic::Ordering::Release);
        let events = take(event_stream(s, stream, metrics()), 2).await;
        assert_eq!(events[0]["type"], "ADDED");
        assert_eq!(events[1]["type"], "BOOKMARK");
        assert_eq!(events[1]["object"]["metadata"]["resourceVersion"], "9");
    }

    #[test]
    fn the_last_bookmark_comes_two_seconds_before_the_timeout() {
        let mut s = spec("");
        s.bookmarks = Some(Duration::from_secs(60));
        let now = Instant::now();
        assert_eq!(
            s.next_bookmark(now, now + Duration::from_secs(10)),
            Some(now + Duration::from_secs(8))
        );
        assert_eq!(
            s.next_bookmark(now, now + Duration::from_secs(100)),
            Some(now + Duration::from_secs(60))
        );
        assert_eq!(s.next_bookmark(now, now + Duration::from_secs(1)), None);
        s.bookmarks = None;
        assert_eq!(s.next_bookmark(now, now + Duration::from_secs(100)), None);
    }

    #[test]
    fn protobuf_bookmarks_are_watch_event_frames_of_the_kind() {
        let mut s = spec("");
        s.format = Format::Protobuf;
        let bytes = s.bookmark(42, false);
        let (kind, obj, _) = protobuf::read_watch_frame(&bytes)
            .expect("a frame")
            .expect("complete");
        assert_eq!(kind, "BOOKMARK");
        assert_eq!(obj["kind"], "Pod");
        assert_eq!(obj["metadata"]["resourceVersion"], "42");
    }

    #[tokio::test]
    async fn a_watch_that_cannot_start_is_one_error_event() {
        let err = ApiError::Expired("too old resource version: 3 (9)".into());
        let events = take(error_stream(Format::Json, &err), 2).await;
        assert_eq!(events.len(), 1);
        assert_eq!(events[0]["type"], "ERROR");
        assert_eq!(events[0]["object"]["code"], 410);
        assert_eq!(
            events[0]["object"]["message"],
            "too old resource version: 3 (9)"
        );
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
