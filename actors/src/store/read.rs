//! Pages of a list, at the latest revision or at a past one still in the history.
//!
//! A past revision is never materialised: the keys changed since it are collected from
//! the history (the state each had at that revision is the `prev` of its first change
//! after it) and merged, in key order, with the current objects, which are what every
//! other key held then too. A page therefore costs its own length plus the changes since
//! its revision, never a copy of the whole prefix.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;

use serde_json::Value;

use super::{Object, Rev, Snapshot, StoreError};

/// What to read.
#[derive(Debug, Clone, Default)]
pub struct ListQuery<'a> {
    pub prefix: &'a str,
    /// The first key to return (inclusive); `None` starts at the prefix.
    pub start: Option<&'a str>,
    /// The revision to read at; `None` reads the latest.
    pub rev: Option<Rev>,
    /// At most this many items; `None` (or 0) for all of them.
    pub limit: Option<usize>,
    /// Count the objects after the page (only meaningful when nothing is filtered out).
    pub count_remaining: bool,
}

/// A page and the revision it was read at.
#[derive(Debug, Clone)]
pub struct ListResult {
    pub items: Vec<(String, Object)>,
    pub rev: Rev,
    /// Set when more keys follow the page: the last key it returned, to continue after.
    pub more_after: Option<String>,
    /// How many objects follow the page, when asked and cheap to tell (the first page).
    pub remaining: Option<usize>,
}

/// Read one page under `q.prefix`, keeping the objects `keep` accepts.
pub fn list(
    snap: &Snapshot,
    q: &ListQuery<'_>,
    mut keep: impl FnMut(&Object) -> bool,
) -> Result<ListResult, StoreError> {
    let rev = match q.rev {
        None => snap.rev,
        Some(r) if r > snap.rev => {
            return Err(StoreError::TooLarge {
                requested: r,
                current: snap.rev,
            })
        }
        Some(r) if r < snap.history.oldest() => {
            return Err(StoreError::Expired {
                requested: r,
                oldest: snap.history.oldest(),
            })
        }
        Some(r) => r,
    };
    let start = q.start.unwrap_or(q.prefix);
    let changed = changed_since(snap, rev, q.prefix, start);
    let limit = q.limit.filter(|l| *l > 0).unwrap_or(usize::MAX);
    let mut items: Vec<(String, Object)> = Vec::new();
    let mut more = false;
    for (key, obj) in merged(snap, q.prefix, start, &changed) {
        if items.len() == limit {
            more = true;
            break;
        }
        if keep(&obj) {
            items.push((key.to_string(), obj));
        }
    }
    let more_after = if more {
        items.last().map(|(k, _)| k.clone())
    } else {
        None
    };
    let remaining = match (more, q.count_remaining && q.start.is_none()) {
        (true, true) => count_at(snap, q.prefix, &changed).map(|n| n.saturating_sub(items.len())),
        _ => None,
    };
    Ok(ListResult {
        items,
        rev,
        more_after,
        remaining,
    })
}

/// The keys under `prefix`, from `start` on, changed after `rev`, each with the state it
/// had at `rev` (`None`: it did not exist).
fn changed_since<'s>(
    snap: &'s Snapshot,
    rev: Rev,
    prefix: &str,
    start: &str,
) -> BTreeMap<&'s str, Option<Object>> {
    let mut changed = BTreeMap::new();
    if rev >= snap.rev {
        return changed;
    }
    for e in snap.history.after(rev) {
        if e.key.starts_with(prefix) && e.key.as_str() >= start {
            changed
                .entry(e.key.as_str())
                .or_insert_with(|| e.prev.as_ref().map(object_of));
        }
    }
    changed
}

/// The objects under `prefix` from `start` on, as of the revision `changed` was made
/// for, in key order.
fn merged<'s>(
    snap: &'s Snapshot,
    prefix: &'s str,
    start: &str,
    changed: &'s BTreeMap<&'s str, Option<Object>>,
) -> impl Iterator<Item = (&'s str, Object)> + 's {
    let mut current = snap
        .objects
        .range::<str, _>((Bound::Included(start), Bound::Unbounded))
        .take_while(move |(k, _)| k.starts_with(prefix))
        .peekable();
    let mut past = changed.iter().peekable();
    std::iter::from_fn(move || loop {
        let take_current = match (current.peek(), past.peek()) {
            (None, None) => return None,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some((ck, _)), Some((pk, _))) => {
                if ck.as_str() == **pk {
                    // Changed since: its past state wins over the current one.
                    current.next();
                    false
                } else {
                    ck.as_str() < **pk
                }
            }
        };
        if take_current {
            let (k, o) = current.next()?;
            return Some((k.as_str(), o.clone()));
        }
        let (k, state) = past.next()?;
        if let Some(o) = state {
            return Some((*k, o.clone()));
        }
    })
}

/// How many objects were under `prefix` at the revision `changed` (which covers the
/// whole prefix) was made for, from the per-prefix counts; `None` for a prefix that is
/// not counted.
fn count_at(
    snap: &Snapshot,
    prefix: &str,
    changed: &BTreeMap<&str, Option<Object>>,
) -> Option<usize> {
    let now = snap.count(prefix)? as i64;
    let delta: i64 = changed
        .iter()
        .map(|(k, past)| past.is_some() as i64 - snap.objects.contains_key(*k) as i64)
        .sum();
    usize::try_from(now + delta).ok()
}

/// An object version from its value: the revision is its resourceVersion.
fn object_of(value: &Arc<Value>) -> Object {
    let rev = value
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Object {
        rev,
        value: value.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::history::History;
    use crate::store::{Event, EventKind};
    use serde_json::json;

    fn obj(name: &str, rev: Rev) -> Object {
        Object {
            rev,
            value: Arc::new(
                json!({"metadata": {"name": name, "resourceVersion": rev.to_string()}}),
            ),
        }
    }

    /// Objects a, b, c written at 1, 2, 3; then b modified (4), c deleted (5), d added (6).
    fn snapshot() -> Snapshot {
        let mut snap = Snapshot::new(3, BTreeMap::new());
        snap.history = History::starting_at(0);
        let mut events = Vec::new();
        let mut put = |snap: &mut Snapshot, rev, key: &str, kind, new: Option<Object>| {
            let prev = snap.objects.get(key).map(|o| o.value.clone());
            match &new {
                Some(o) => snap.insert(key.to_string(), o.clone()),
                None => snap.remove(key),
            }
            snap.rev = rev;
            events.push((
                0,
                Arc::new(Event {
                    rev,
                    kind,
                    key: key.into(),
                    object: new.map(|o| o.value).or(prev.clone()).unwrap_or_default(),
                    prev,
                }),
            ));
        };
        put(
            &mut snap,
            1,
            "pods/ns/a",
            EventKind::Added,
            Some(obj("a", 1)),
        );
        put(
            &mut snap,
            2,
            "pods/ns/b",
            EventKind::Added,
            Some(obj("b", 2)),
        );
        put(
            &mut snap,
            3,
            "pods/ns/c",
            EventKind::Added,
            Some(obj("c", 3)),
        );
        put(
            &mut snap,
            4,
            "pods/ns/b",
            EventKind::Modified,
            Some(obj("b", 4)),
        );
        put(&mut snap, 5, "pods/ns/c", EventKind::Deleted, None);
        put(
            &mut snap,
            6,
            "pods/ns/d",
            EventKind::Added,
            Some(obj("d", 6)),
        );
        snap.history = History::loaded(0, events);
        snap
    }

    fn names(r: &ListResult) -> Vec<(String, Rev)> {
        r.items
            .iter()
            .map(|(k, o)| (k.rsplit('/').next().unwrap_or_default().to_string(), o.rev))
            .collect()
    }

    fn query(rev: Option<Rev>) -> ListQuery<'static> {
        ListQuery {
            prefix: "pods/",
            rev,
            ..ListQuery::default()
        }
    }

    #[test]
    fn a_list_at_a_past_revision_shows_the_objects_as_they_were() {
        let snap = snapshot();
        let r = list(&snap, &query(Some(3)), |_| true).expect("list");
        assert_eq!(r.rev, 3);
        assert_eq!(
            names(&r),
            vec![("a".into(), 1), ("b".into(), 2), ("c".into(), 3)]
        );
        let now = list(&snap, &query(None), |_| true).expect("list");
        assert_eq!(
            names(&now),
            vec![("a".into(), 1), ("b".into(), 4), ("d".into(), 6)]
        );
    }

    #[test]
    fn pages_at_one_revision_continue_after_the_last_key() {
        let snap = snapshot();
        let mut q = query(Some(4));
        q.limit = Some(2);
        q.count_remaining = true;
        let first = list(&snap, &q, |_| true).expect("page 1");
        assert_eq!(names(&first), vec![("a".into(), 1), ("b".into(), 4)]);
        assert_eq!(first.remaining, Some(1));
        let after = first.more_after.expect("more");
        let start = format!("{after}\0");
        q.start = Some(&start);
        let second = list(&snap, &q, |_| true).expect("page 2");
        assert_eq!(names(&second), vec![("c".into(), 3)]);
        assert!(second.more_after.is_none());
    }

    #[test]
    fn a_revision_out_of_the_history_is_expired_and_a_future_one_too_large() {
        let mut snap = snapshot();
        snap.history.keep_last(2);
        assert!(matches!(
            list(&snap, &query(Some(3)), |_| true),
            Err(StoreError::Expired {
                requested: 3,
                oldest: 4
            })
        ));
        assert!(list(&snap, &query(Some(4)), |_| true).is_ok());
        assert!(matches!(
            list(&snap, &query(Some(7)), |_| true),
            Err(StoreError::TooLarge {
                requested: 7,
                current: 6
            })
        ));
    }

    #[test]
    fn a_filtered_page_ends_at_its_limit_th_match() {
        let snap = snapshot();
        let mut q = query(None);
        q.limit = Some(1);
        let only_d = list(&snap, &q, |o| o.value["metadata"]["name"] == "b").expect("list");
        assert_eq!(names(&only_d), vec![("b".into(), 4)]);
        assert_eq!(only_d.more_after.as_deref(), Some("pods/ns/b"));
        assert_eq!(only_d.remaining, None);
    }
}
