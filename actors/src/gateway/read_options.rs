//! The read parameters of get, list and watch — `resourceVersion`,
//! `resourceVersionMatch`, `continue`, `sendInitialEvents`, `allowWatchBookmarks` —
//! validated as kube-apiserver validates `ListOptions`, with its words, and the continue
//! token in kube-apiserver's format.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{json, Value};

use crate::api::validation::{FieldError, FieldErrorKind};
use crate::api::ApiError;
use crate::store::Rev;

/// The annotation of the bookmark that ends a watch-list's initial events.
pub const INITIAL_EVENTS_END: &str = "k8s.io/initial-events-end";

/// How long a read at a revision the store has not reached waits for it before
/// answering "Too large resource version" (kube-apiserver's watch cache blocks 3 s).
pub const FRESHNESS_WAIT: Duration = Duration::from_secs(3);

const EXACT: &str = "Exact";
const NOT_OLDER_THAN: &str = "NotOlderThan";

/// Which state a get or a list reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReadAt {
    /// The latest state (a consistent read; `resourceVersion` unset).
    #[default]
    Latest,
    /// Any state (`resourceVersion=0`); skiff's is always the latest.
    Any,
    /// A state at least this recent.
    NotOlderThan(Rev),
    /// The state at exactly this revision.
    Exact(Rev),
}

impl ReadAt {
    /// A revision the store must have reached before the read can be answered.
    pub fn min_rev(self) -> Option<Rev> {
        match self {
            ReadAt::NotOlderThan(r) | ReadAt::Exact(r) => Some(r),
            ReadAt::Latest | ReadAt::Any => None,
        }
    }
}

/// A list's read parameters.
#[derive(Debug, Clone, Default)]
pub struct ListRead {
    pub at: ReadAt,
    pub continue_token: Option<String>,
}

/// Where a watch starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchStart {
    /// The current state first, as ADDED events (no `resourceVersion` or `0`, or
    /// `sendInitialEvents=true`), from a state at least as recent as `min_rev`.
    InitialState { min_rev: Option<Rev> },
    /// The changes after this revision.
    After(Rev),
    /// The changes from now on (`sendInitialEvents=false` without a revision).
    Now,
}

/// A watch's read parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchRead {
    pub start: WatchStart,
    /// `allowWatchBookmarks=true`.
    pub bookmarks: bool,
    /// End the initial state with the annotated bookmark (watch-list with bookmarks).
    pub initial_events_end: bool,
}

type Query = HashMap<String, String>;

fn param<'a>(q: &'a Query, name: &str) -> &'a str {
    q.get(name).map(String::as_str).unwrap_or("")
}

/// A boolean query parameter as Go's `strconv.ParseBool` reads it; `None` when absent.
fn flag(q: &Query, name: &str) -> Result<Option<bool>, ApiError> {
    match q.get(name).map(String::as_str) {
        None => Ok(None),
        Some("1" | "t" | "T" | "true" | "TRUE" | "True") => Ok(Some(true)),
        Some("" | "0" | "f" | "F" | "false" | "FALSE" | "False") => Ok(Some(false)),
        Some(other) => Err(ApiError::BadRequest(format!(
            "invalid value for {name}: strconv.ParseBool: parsing {other:?}: invalid syntax"
        ))),
    }
}

/// `resourceVersion` as a revision; "" and "0" are 0.
fn revision(rv: &str) -> Result<Rev, ApiError> {
    match rv {
        "" | "0" => Ok(0),
        _ => rv.parse().map_err(|_| {
            ApiError::BadRequest(format!(
                "invalid resource version: resourceVersion: Invalid value: {rv:?}: strconv.ParseUint: parsing {rv:?}: invalid syntax"
            ))
        }),
    }
}

fn forbidden(field: &str, detail: &str) -> FieldError {
    FieldError {
        field: field.into(),
        kind: FieldErrorKind::Forbidden,
        value: None,
        detail: detail.into(),
    }
}

fn not_supported(field: &str, value: &str, supported: &[&str]) -> FieldError {
    let supported: Vec<String> = supported.iter().map(|s| format!("{s:?}")).collect();
    FieldError {
        field: field.into(),
        kind: FieldErrorKind::NotSupported,
        value: Some(format!("{value:?}")),
        detail: format!("supported values: {}", supported.join(", ")),
    }
}

/// kube-apiserver's answer to invalid ListOptions: 422, `ListOptions.meta.k8s.io "" is
/// invalid: ...`.
fn invalid(causes: Vec<FieldError>) -> Result<(), ApiError> {
    if causes.is_empty() {
        return Ok(());
    }
    Err(ApiError::Invalid {
        kind: "ListOptions".into(),
        group: "meta.k8s.io".into(),
        name: String::new(),
        causes,
    })
}

/// A get's `resourceVersion`: unset is the latest, "0" any, N not older than N.
pub fn get(q: &Query) -> Result<ReadAt, ApiError> {
    Ok(match param(q, "resourceVersion") {
        "" => ReadAt::Latest,
        "0" => ReadAt::Any,
        rv => ReadAt::NotOlderThan(revision(rv)?),
    })
}

/// A list's read parameters; `limited` when it asks for a page (`limit` > 0).
pub fn list(q: &Query, limited: bool) -> Result<ListRead, ApiError> {
    let rv = param(q, "resourceVersion");
    let matching = param(q, "resourceVersionMatch");
    let continue_token = q.get("continue").filter(|c| !c.is_empty()).cloned();
    let mut causes = Vec::new();
    if !matching.is_empty() {
        if rv.is_empty() {
            causes.push(forbidden(
                "resourceVersionMatch",
                "resourceVersionMatch is forbidden unless resourceVersion is provided",
            ));
        }
        if continue_token.is_some() {
            causes.push(forbidden(
                "resourceVersionMatch",
                "resourceVersionMatch is forbidden when continue is provided",
            ));
        }
        if matching != EXACT && matching != NOT_OLDER_THAN {
            causes.push(not_supported(
                "resourceVersionMatch",
                matching,
                &[EXACT, NOT_OLDER_THAN, ""],
            ));
        }
        if matching == EXACT && rv == "0" {
            causes.push(forbidden(
                "resourceVersionMatch",
                "resourceVersionMatch \"exact\" is forbidden for resourceVersion \"0\"",
            ));
        }
    }
    if flag(q, "sendInitialEvents")?.is_some() {
        causes.push(forbidden(
            "sendInitialEvents",
            "sendInitialEvents is forbidden for list",
        ));
    }
    invalid(causes)?;
    let rev = revision(rv)?;
    if continue_token.is_some() && rev != 0 {
        return Err(ApiError::BadRequest(
            "specifying resource version is not allowed when using continue".into(),
        ));
    }
    let at = match (matching, rv) {
        (_, "") => ReadAt::Latest,
        (_, "0") => ReadAt::Any,
        (EXACT, _) => ReadAt::Exact(rev),
        (NOT_OLDER_THAN, _) => ReadAt::NotOlderThan(rev),
        // Without a match, a page at a revision is read at exactly it (the legacy
        // semantics kube-apiserver keeps), a whole list at least at it.
        _ if limited => ReadAt::Exact(rev),
        _ => ReadAt::NotOlderThan(rev),
    };
    Ok(ListRead { at, continue_token })
}

/// A watch's read parameters.
pub fn watch(q: &Query) -> Result<WatchRead, ApiError> {
    let rv = param(q, "resourceVersion");
    let matching = param(q, "resourceVersionMatch");
    let initial = flag(q, "sendInitialEvents")?;
    let mut causes = Vec::new();
    if initial.is_some() && matching != NOT_OLDER_THAN {
        causes.push(forbidden(
            "resourceVersionMatch",
            "sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
        ));
    }
    if !matching.is_empty() {
        if initial.is_none() {
            causes.push(forbidden(
                "resourceVersionMatch",
                "resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided",
            ));
        }
        if matching != NOT_OLDER_THAN {
            causes.push(not_supported(
                "resourceVersionMatch",
                matching,
                &[NOT_OLDER_THAN],
            ));
        }
        if q.get("continue").is_some_and(|c| !c.is_empty()) {
            causes.push(forbidden(
                "resourceVersionMatch",
                "resourceVersionMatch is forbidden when continue is provided",
            ));
        }
    }
    invalid(causes)?;
    let rev = revision(rv)?;
    let start = match initial {
        Some(true) => WatchStart::InitialState {
            min_rev: (rev > 0).then_some(rev),
        },
        Some(false) if rev == 0 => WatchStart::Now,
        None if rev == 0 => WatchStart::InitialState { min_rev: None },
        _ => WatchStart::After(rev),
    };
    let bookmarks = flag(q, "allowWatchBookmarks")?.unwrap_or(false);
    Ok(WatchRead {
        start,
        bookmarks,
        // kube-apiserver sends the annotated bookmark only to watchers that take bookmarks.
        initial_events_end: initial == Some(true) && bookmarks,
    })
}

/// Where a continued list resumes: the first key to read (inclusive) and the revision of
/// the first page (`None`: the latest, for the token of an expired one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Continue {
    pub start: String,
    pub rev: Option<Rev>,
}

const CONTINUE_VERSION: &str = "meta.k8s.io/v1";

/// kube-apiserver's continue token: base64url (unpadded) JSON of the API version, the
/// revision (-1: latest) and the start key relative to the list's prefix.
pub fn encode_continue(prefix: &str, start: &str, rev: i64) -> String {
    use base64::Engine;
    let relative = start.strip_prefix(prefix).unwrap_or(start);
    let raw = json!({"v": CONTINUE_VERSION, "rv": rev, "start": relative}).to_string();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
}

/// The token after a page that ended at `last_key`.
pub fn continue_after(prefix: &str, last_key: &str, rev: Rev) -> String {
    encode_continue(prefix, &format!("{last_key}\0"), rev as i64)
}

/// Read a continue token of a list under `prefix`, with kube-apiserver's messages.
pub fn decode_continue(token: &str, prefix: &str) -> Result<Continue, ApiError> {
    use base64::Engine;
    let bad = |why: String| {
        ApiError::BadRequest(format!(
            "invalid continue token: continue key is not valid{why}"
        ))
    };
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token.trim_end_matches('='))
        .map_err(|e| bad(format!(": {e}")))?;
    let v: Value = serde_json::from_slice(&raw).map_err(|e| bad(format!(": {e}")))?;
    let version = v.get("v").and_then(Value::as_str).unwrap_or_default();
    if version != CONTINUE_VERSION {
        return Err(bad(format!(
            ": server does not recognize this encoded version {version}"
        )));
    }
    let rev = v.get("rv").and_then(Value::as_i64).unwrap_or(0);
    if rev == 0 {
        return Err(bad(format!(
            ": incorrect encoded start resourceVersion (version {CONTINUE_VERSION})"
        )));
    }
    let start = v.get("start").and_then(Value::as_str).unwrap_or_default();
    if start.is_empty() {
        return Err(bad(format!(
            ": encoded start key empty (version {CONTINUE_VERSION})"
        )));
    }
    // The start is relative to the list's own prefix, so a token can never reach keys
    // outside it; one that climbs out of a path is refused as kube-apiserver does.
    if start.split('/').any(|seg| seg == "..") {
        return Err(bad(format!(": {start}")));
    }
    Ok(Continue {
        start: format!("{prefix}{start}"),
        rev: u64::try_from(rev).ok(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> Query {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn message(e: ApiError) -> (u16, String) {
        (e.code(), e.to_string())
    }

    #[test]
    fn list_revisions_follow_kube_apiserver_semantics() {
        let at = |pairs: &[(&str, &str)], limited| list(&q(pairs), limited).expect("valid").at;
        assert_eq!(at(&[], false), ReadAt::Latest);
        assert_eq!(at(&[("resourceVersion", "0")], false), ReadAt::Any);
        assert_eq!(
            at(&[("resourceVersion", "7")], false),
            ReadAt::NotOlderThan(7)
        );
        assert_eq!(at(&[("resourceVersion", "7")], true), ReadAt::Exact(7));
        assert_eq!(
            at(
                &[("resourceVersion", "7"), ("resourceVersionMatch", "Exact")],
                false
            ),
            ReadAt::Exact(7)
        );
        assert_eq!(
            at(
                &[
                    ("resourceVersion", "7"),
                    ("resourceVersionMatch", "NotOlderThan")
                ],
                true
            ),
            ReadAt::NotOlderThan(7)
        );
    }

    #[test]
    fn invalid_list_combinations_get_kube_apiserver_wording() {
        let err = |pairs: &[(&str, &str)]| message(list(&q(pairs), false).expect_err("invalid"));
        assert_eq!(
            err(&[("resourceVersionMatch", "Exact")]),
            (422, "ListOptions.meta.k8s.io \"\" is invalid: resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden unless resourceVersion is provided".into())
        );
        assert_eq!(
            err(&[("resourceVersion", "0"), ("resourceVersionMatch", "Exact")]).1,
            "ListOptions.meta.k8s.io \"\" is invalid: resourceVersionMatch: Forbidden: resourceVersionMatch \"exact\" is forbidden for resourceVersion \"0\""
        );
        assert_eq!(
            err(&[("resourceVersion", "5"), ("resourceVersionMatch", "Newest")]).1,
            "ListOptions.meta.k8s.io \"\" is invalid: resourceVersionMatch: Unsupported value: \"Newest\": supported values: \"Exact\", \"NotOlderThan\", \"\""
        );
        assert_eq!(
            err(&[
                ("resourceVersion", "5"),
                ("resourceVersionMatch", "Exact"),
                ("continue", "x")
            ])
            .0,
            422
        );
        assert_eq!(
            err(&[("sendInitialEvents", "true")]).1,
            "ListOptions.meta.k8s.io \"\" is invalid: sendInitialEvents: Forbidden: sendInitialEvents is forbidden for list"
        );
        assert_eq!(
            err(&[("resourceVersion", "5"), ("continue", "x")]),
            (
                400,
                "specifying resource version is not allowed when using continue".into()
            )
        );
        assert_eq!(err(&[("resourceVersion", "five")]).0, 400);
    }

    #[test]
    fn watch_list_needs_not_older_than_and_plain_watches_no_match() {
        let read = watch(&q(&[
            ("sendInitialEvents", "true"),
            ("resourceVersionMatch", "NotOlderThan"),
            ("allowWatchBookmarks", "true"),
        ]))
        .expect("watch-list");
        assert_eq!(read.start, WatchStart::InitialState { min_rev: None });
        assert!(read.initial_events_end && read.bookmarks);
        let from = watch(&q(&[
            ("sendInitialEvents", "true"),
            ("resourceVersionMatch", "NotOlderThan"),
            ("resourceVersion", "9"),
        ]))
        .expect("watch-list at 9");
        assert_eq!(from.start, WatchStart::InitialState { min_rev: Some(9) });
        assert!(!from.initial_events_end, "no bookmarks asked for");
        let err = watch(&q(&[("sendInitialEvents", "true")])).expect_err("no match");
        assert_eq!(
            message(err),
            (422, "ListOptions.meta.k8s.io \"\" is invalid: resourceVersionMatch: Forbidden: sendInitialEvents requires setting resourceVersionMatch to NotOlderThan".into())
        );
        let err = watch(&q(&[("resourceVersionMatch", "NotOlderThan")])).expect_err("no initial");
        assert!(err.to_string().contains(
            "resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided"
        ));
        assert_eq!(
            watch(&q(&[("resourceVersion", "4")])).expect("watch").start,
            WatchStart::After(4)
        );
        assert_eq!(
            watch(&q(&[
                ("sendInitialEvents", "false"),
                ("resourceVersionMatch", "NotOlderThan")
            ]))
            .expect("watch")
            .start,
            WatchStart::Now
        );
    }

    #[test]
    fn continue_tokens_are_kube_apiserver_tokens() {
        use base64::Engine;
        let tok = continue_after("pods/", "pods/default/a", 5);
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(&tok)
            .expect("base64");
        let v: Value = serde_json::from_slice(&raw).expect("json");
        assert_eq!(
            v,
            json!({"v": "meta.k8s.io/v1", "rv": 5, "start": "default/a\u{0}"})
        );
        assert_eq!(
            decode_continue(&tok, "pods/").expect("token"),
            Continue {
                start: "pods/default/a\u{0}".into(),
                rev: Some(5)
            }
        );
        let latest = encode_continue("pods/", "pods/default/a\u{0}", -1);
        assert_eq!(decode_continue(&latest, "pods/").expect("token").rev, None);
    }

    #[test]
    fn broken_continue_tokens_are_bad_requests() {
        use base64::Engine;
        let enc = |v: Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        let msg = |t: &str| message(decode_continue(t, "pods/").expect_err("invalid"));
        assert_eq!(msg("!!!").0, 400);
        assert_eq!(
            msg(&enc(json!({"v": "x/v9", "rv": 1, "start": "a"}))).1,
            "invalid continue token: continue key is not valid: server does not recognize this encoded version x/v9"
        );
        assert_eq!(
            msg(&enc(json!({"v": "meta.k8s.io/v1", "rv": 0, "start": "a"}))).1,
            "invalid continue token: continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)"
        );
        assert_eq!(
            msg(&enc(json!({"v": "meta.k8s.io/v1", "rv": 3, "start": ""}))).1,
            "invalid continue token: continue key is not valid: encoded start key empty (version meta.k8s.io/v1)"
        );
        assert_eq!(
            msg(&enc(
                json!({"v": "meta.k8s.io/v1", "rv": 3, "start": "../x"})
            ))
            .0,
            400
        );
    }
}
