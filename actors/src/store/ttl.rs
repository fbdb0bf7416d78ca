//! Events expire: kube-apiserver writes each Event with an etcd lease of `--event-ttl`
//! (one hour by default), renewed by every write of it, and etcd deletes it when the
//! lease runs out. The store keeps the same promise: an Event not written for `ttl` is
//! deleted, as a normal delete watchers see.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::{Object, Rev};

/// The key prefix of core/v1 Events (events.k8s.io/v1 Events are the same objects).
pub const EVENTS_PREFIX: &str = "events/";

/// When each Event was last written.
#[derive(Debug, Default)]
pub struct EventTtl {
    ttl: Option<Duration>,
    written: HashMap<String, DateTime<Utc>>,
}

impl EventTtl {
    /// `ttl` of `None` keeps Events for ever. `objects` is the state loaded from disk:
    /// their write times are not kept, so each counts from the latest timestamp it
    /// carries (never later than `now`), or from `now` if it carries none.
    pub fn new<'a>(
        ttl: Option<Duration>,
        objects: impl Iterator<Item = (&'a String, &'a Object)>,
        now: DateTime<Utc>,
    ) -> Self {
        let written = objects
            .filter(|(k, _)| k.starts_with(EVENTS_PREFIX))
            .map(|(k, o)| (k.clone(), last_timestamp(&o.value).unwrap_or(now).min(now)))
            .collect();
        EventTtl { ttl, written }
    }

    /// Note a write of `key` (`deleted` when it went away).
    pub fn note(&mut self, key: &str, deleted: bool, now: DateTime<Utc>) {
        if !key.starts_with(EVENTS_PREFIX) || self.ttl.is_none() {
            return;
        }
        if deleted {
            self.written.remove(key);
        } else {
            self.written.insert(key.to_string(), now);
        }
    }

    /// The Events whose time is up at `now`, with the revision they must still be at
    /// for the expiry to apply (a write since renews them).
    pub fn expired<'a>(
        &self,
        now: DateTime<Utc>,
        current: impl Fn(&str) -> Option<&'a Object>,
    ) -> Vec<(String, Rev)> {
        let Some(ttl) = self.ttl.and_then(|t| chrono::Duration::from_std(t).ok()) else {
            return Vec::new();
        };
        let mut out: Vec<(String, Rev)> = self
            .written
            .iter()
            .filter(|(_, at)| **at + ttl <= now)
            .filter_map(|(k, _)| current(k).map(|o| (k.clone(), o.rev)))
            .collect();
        out.sort();
        out
    }

    /// How often to look for expired Events: a tenth of the TTL, between 1 s and 60 s.
    pub fn sweep_period(&self) -> Option<Duration> {
        self.ttl
            .map(|t| (t / 10).clamp(Duration::from_secs(1), Duration::from_secs(60)))
    }
}

/// The latest of the times an Event records about itself.
fn last_timestamp(event: &Value) -> Option<DateTime<Utc>> {
    [
        "/lastTimestamp",
        "/eventTime",
        "/series/lastObservedTime",
        "/metadata/creationTimestamp",
    ]
    .iter()
    .filter_map(|p| event.pointer(p).and_then(Value::as_str))
    .filter_map(|s| DateTime::parse_from_rfc3339(s).ok())
    .map(|t| t.with_timezone(&Utc))
    .max()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::BTreeMap;
    use std::sync::Arc;

    fn obj(rev: Rev, v: Value) -> Object {
        Object {
            rev,
            value: Arc::new(v),
        }
    }

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("time")
            .with_timezone(&Utc)
    }

    #[test]
    fn an_event_expires_a_ttl_after_its_last_write_and_a_write_renews_it() {
        let objects = BTreeMap::new();
        let mut ttl = EventTtl::new(
            Some(Duration::from_secs(3600)),
            objects.iter(),
            at("2026-01-01T00:00:00Z"),
        );
        let e = obj(7, json!({}));
        ttl.note("events/default/a", false, at("2026-01-01T00:00:00Z"));
        let current = |_: &str| Some(&e);
        assert!(ttl.expired(at("2026-01-01T00:59:59Z"), current).is_empty());
        ttl.note("events/default/a", false, at("2026-01-01T00:30:00Z"));
        assert!(ttl.expired(at("2026-01-01T01:00:00Z"), current).is_empty());
        assert_eq!(
            ttl.expired(at("2026-01-01T01:30:00Z"), current),
            vec![("events/default/a".to_string(), 7)]
        );
        ttl.note("events/default/a", true, at("2026-01-01T01:30:00Z"));
        assert!(ttl.expired(at("2026-01-02T00:00:00Z"), current).is_empty());
    }

    #[test]
    fn events_loaded_from_disk_count_from_their_latest_timestamp() {
        let mut objects = BTreeMap::new();
        objects.insert(
            "events/default/old".to_string(),
            obj(
                1,
                json!({"lastTimestamp": "2026-01-01T00:00:00Z",
                "metadata": {"creationTimestamp": "2025-12-31T00:00:00Z"}}),
            ),
        );
        objects.insert(
            "events/default/bare".to_string(),
            obj(2, json!({"metadata": {}})),
        );
        objects.insert("pods/default/p".to_string(), obj(3, json!({})));
        let now = at("2026-01-01T00:30:00Z");
        let ttl = EventTtl::new(Some(Duration::from_secs(3600)), objects.iter(), now);
        let current = |k: &str| objects.get(k);
        assert_eq!(
            ttl.expired(at("2026-01-01T01:00:00Z"), current),
            vec![("events/default/old".to_string(), 1)]
        );
        assert_eq!(ttl.expired(at("2026-01-01T01:30:00Z"), current).len(), 2);
    }

    #[test]
    fn without_a_ttl_nothing_expires() {
        let objects = BTreeMap::new();
        let now = at("2026-01-01T00:00:00Z");
        let mut ttl = EventTtl::new(None, objects.iter(), now);
        ttl.note("events/default/a", false, now);
        let e = obj(1, json!({}));
        assert!(ttl
            .expired(at("2030-01-01T00:00:00Z"), |_| Some(&e))
            .is_empty());
        assert_eq!(ttl.sweep_period(), None);
    }
}
