//! `events.k8s.io/v1` Events: the same stored objects as core/v1 Events, seen through
//! other field names (one store, two views, as kube-apiserver converts between them).
//! Stored in the core form; converted on the way in and out.

use serde_json::{Map, Value};

use super::validation::{FieldError, FieldErrorKind};

pub const GROUP: &str = "events.k8s.io";
pub const API_VERSION: &str = "events.k8s.io/v1";

/// core/v1 field → events.k8s.io/v1 field, where the names differ.
const RENAMES: &[(&str, &str)] = &[
    ("involvedObject", "regarding"),
    ("message", "note"),
    ("reportingComponent", "reportingController"),
    ("source", "deprecatedSource"),
    ("firstTimestamp", "deprecatedFirstTimestamp"),
    ("lastTimestamp", "deprecatedLastTimestamp"),
    ("count", "deprecatedCount"),
];

/// Fields with the same name in both.
const SAME: &[&str] = &[
    "metadata",
    "action",
    "reason",
    "related",
    "reportingInstance",
    "series",
    "type",
    "eventTime",
];

/// The events.k8s.io/v1 view of a stored (core/v1) Event.
pub fn to_v1(core: &Value) -> Value {
    convert(core, API_VERSION, |k| {
        RENAMES.iter().find(|(c, _)| *c == k).map(|(_, v)| *v)
    })
}

/// The stored (core/v1) form of an events.k8s.io/v1 Event.
pub fn to_core(v1: &Value) -> Value {
    convert(v1, "v1", |k| {
        RENAMES.iter().find(|(_, v)| *v == k).map(|(c, _)| *c)
    })
}

fn convert(src: &Value, api_version: &str, rename: impl Fn(&str) -> Option<&'static str>) -> Value {
    let Some(map) = src.as_object() else {
        return src.clone();
    };
    let mut out = Map::new();
    out.insert("kind".into(), Value::String("Event".into()));
    out.insert("apiVersion".into(), Value::String(api_version.into()));
    for (k, v) in map {
        if k == "kind" || k == "apiVersion" {
            continue;
        }
        match rename(k) {
            Some(new) => {
                out.insert(new.to_string(), v.clone());
            }
            // Fields the other version does not have are dropped, as a conversion does;
            // unknown fields were refused or warned about before this.
            None if SAME.contains(&k.as_str()) => {
                out.insert(k.clone(), v.clone());
            }
            None => {}
        }
    }
    Value::Object(out)
}

/// What kube-apiserver checks beyond the core Event's validation when an Event is
/// created through events.k8s.io/v1: the fields that API makes required, and the
/// deprecated ones it leaves to the server.
pub fn validate_create(v1: &Value) -> Vec<FieldError> {
    let text = |f: &str| v1.get(f).and_then(Value::as_str).unwrap_or("");
    let err = |field: &str, kind: FieldErrorKind, value: Option<String>, detail: &str| FieldError {
        field: field.into(),
        kind,
        value,
        detail: detail.into(),
    };
    let mut out = Vec::new();
    if text("eventTime").is_empty() {
        out.push(err("eventTime", FieldErrorKind::Required, None, ""));
    }
    let ty = text("type");
    if ty != "Normal" && ty != "Warning" {
        out.push(err(
            "type",
            FieldErrorKind::Invalid,
            Some("\"\"".into()),
            &format!("has invalid value: {ty}"),
        ));
    }
    for f in [
        "deprecatedFirstTimestamp",
        "deprecatedLastTimestamp",
        "deprecatedCount",
        "deprecatedSource",
    ] {
        if v1.get(f).is_some_and(|v| !v.is_null()) {
            out.push(err(
                f,
                FieldErrorKind::Invalid,
                Some("\"\"".into()),
                "needs to be unset",
            ));
        }
    }
    for f in [
        "reportingController",
        "reportingInstance",
        "action",
        "reason",
    ] {
        let v = text(f);
        if v.is_empty() {
            out.push(err(f, FieldErrorKind::Required, None, ""));
        } else if v.len() > 128 {
            out.push(err(
                f,
                FieldErrorKind::Invalid,
                Some(format!("{v:?}")),
                "can have at most 128 characters",
            ));
        }
    }
    if text("note").len() > 1024 {
        out.push(err(
            "note",
            FieldErrorKind::Invalid,
            Some("\"\"".into()),
            "can have at most 1024 characters",
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_two_views_rename_fields_and_round_trip() {
        let core = json!({"kind": "Event", "apiVersion": "v1",
            "metadata": {"name": "e", "namespace": "default"},
            "involvedObject": {"kind": "Pod", "name": "p"}, "message": "pulled",
            "reason": "Pulled", "type": "Normal", "count": 3,
            "firstTimestamp": "2026-01-01T00:00:00Z", "lastTimestamp": "2026-01-01T00:01:00Z",
            "source": {"component": "kubelet"}, "reportingComponent": "kubelet",
            "reportingInstance": "n1"});
        let v1 = to_v1(&core);
        assert_eq!(v1["apiVersion"], "events.k8s.io/v1");
        assert_eq!(v1["regarding"]["name"], "p");
        assert_eq!(v1["note"], "pulled");
        assert_eq!(v1["deprecatedCount"], 3);
        assert_eq!(v1["deprecatedSource"]["component"], "kubelet");
        assert_eq!(v1["reportingController"], "kubelet");
        assert!(v1.get("message").is_none());
        assert_eq!(to_core(&v1), core);
    }

    #[test]
    fn a_v1_create_needs_its_time_reporter_action_and_reason() {
        let fields = |v: Value| -> Vec<String> {
            validate_create(&v).into_iter().map(|e| e.field).collect()
        };
        assert_eq!(
            fields(json!({"type": "Normal"})),
            [
                "eventTime",
                "reportingController",
                "reportingInstance",
                "action",
                "reason"
            ]
        );
        let ok = json!({"eventTime": "2026-01-01T00:00:00.000000Z", "type": "Warning",
            "reportingController": "skiff.io/test", "reportingInstance": "i",
            "action": "Test", "reason": "Tested"});
        assert!(fields(ok.clone()).is_empty());
        let mut old_style = ok;
        old_style["deprecatedCount"] = json!(2);
        assert_eq!(fields(old_style), ["deprecatedCount"]);
    }
}
