//! Workload history in ControllerRevisions, shared by the DaemonSet and StatefulSet
//! controllers (Kubernetes' `pkg/controller/history` and the DaemonSet's `update.go`):
//! a revision's `data` is the strategic merge patch that puts its pod template back
//! (`{"spec": {"template": {..., "$patch": "replace"}}}`, what `kubectl rollout undo`
//! PATCHes), revisions are numbered 1, 2, ... with the current one always the highest,
//! old ones beyond `revisionHistoryLimit` are deleted oldest first unless a live pod
//! still runs them, and a revision's template can be copied back onto its owner.

use std::sync::Arc;

use serde_json::{json, Map, Value};

use crate::api::{meta, ApiError};
use crate::runtime::{Context, ReconcileError};

/// The label naming the revision a pod (and a revision) belongs to.
pub const REVISION_HASH: &str = "controller-revision-hash";

/// The longest owner name a revision name keeps (`ControllerRevisionName`), so that the
/// name with its hash stays a valid DNS subdomain.
const MAX_PREFIX: usize = 223;

/// The `data` of a revision of `template`, as Kubernetes' `getPatch` writes it: the
/// template (with Go's `creationTimestamp: null`, so that kubectl's byte comparison of a
/// revision with its owner sees them equal) under `spec`, marked to replace the whole.
pub fn revision_data(template: &Value) -> Value {
    let mut t = match template {
        Value::Object(m) => m.clone(),
        _ => Map::new(),
    };
    match t.get_mut("metadata").and_then(Value::as_object_mut) {
        Some(m) => {
            m.entry("creationTimestamp").or_insert(Value::Null);
        }
        None => {
            t.insert("metadata".into(), json!({"creationTimestamp": null}));
        }
    }
    t.insert("$patch".into(), json!("replace"));
    json!({"spec": {"template": Value::Object(t)}})
}

/// Whether `revision` records `data` (Kubernetes compares the encoded bytes; the keys of
/// both are sorted, so comparing the values is the same test).
pub fn matches(revision: &Value, data: &Value) -> bool {
    revision.get("data") == Some(data)
}

/// FNV-1a (32 bit) over `bytes`.
fn fnv32a(bytes: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in bytes {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// `rand.SafeEncodeString` of a number's decimal digits.
pub fn safe_encode(n: u32) -> String {
    const ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    n.to_string()
        .bytes()
        .map(|b| ALPHANUMS[usize::from(b) % ALPHANUMS.len()] as char)
        .collect()
}

/// `HashControllerRevision`: FNV-1a over the encoded data and the collision count.
pub fn revision_hash(data: &Value, collision_count: Option<i32>) -> String {
    let mut bytes = data.to_string().into_bytes();
    if let Some(c) = collision_count {
        bytes.extend_from_slice(c.to_string().as_bytes());
    }
    safe_encode(fnv32a(&bytes))
}

/// `ControllerRevisionName`: `<owner>-<hash>`, the owner's name cut to fit.
pub fn revision_name(owner: &str, hash: &str) -> String {
    let mut cut = owner.len().min(MAX_PREFIX);
    while !owner.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}-{hash}", &owner[..cut])
}

pub fn number(revision: &Value) -> i64 {
    revision
        .get("revision")
        .and_then(Value::as_i64)
        .unwrap_or(0)
}

pub fn max_number<'a>(revisions: impl IntoIterator<Item = &'a Arc<Value>>) -> i64 {
    revisions.into_iter().map(|r| number(r)).max().unwrap_or(0)
}

pub fn hash_label(obj: &Value) -> Option<&str> {
    obj.pointer("/metadata/labels")?
        .get(REVISION_HASH)?
        .as_str()
}

/// The pod template a revision records, without the patch directive: what rolling back
/// copies onto the owner, and what a StatefulSet's pods of an older revision are made of.
pub fn template_of(revision: &Value) -> Option<Value> {
    let mut t = revision.pointer("/data/spec/template")?.clone();
    let m = t.as_object_mut()?;
    m.remove("$patch");
    if let Some(meta) = m.get_mut("metadata").and_then(Value::as_object_mut) {
        if meta.get("creationTimestamp") == Some(&Value::Null) {
            meta.remove("creationTimestamp");
        }
    }
    Some(t)
}

/// `owner` with the pod template of `revision` (Kubernetes' `ApplyRevision`).
pub fn apply_revision(owner: &Value, revision: &Value) -> Value {
    let mut out = owner.clone();
    if let Some(t) = template_of(revision) {
        out["spec"]["template"] = t;
    }
    out
}

/// A revision to create for an owner.
pub struct NewRevision<'a> {
    pub owner: &'a Value,
    pub reference: Value,
    pub name: String,
    pub hash: &'a str,
    pub data: Value,
    pub revision: i64,
    /// Annotations to copy (a DaemonSet's own annotations, `kubernetes.io/change-cause`
    /// included, which `kubectl rollout history` shows).
    pub annotations: Option<Value>,
}

/// What creating a revision came to.
pub enum Created {
    /// The new revision (or one with the same name and data, made before).
    Revision(Value),
    /// A revision of that name records another template: the owner's collision count
    /// must move so that the next hash differs.
    Collision,
}

/// Create the revision; an existing one with the same data is taken as it is.
pub async fn create(
    ctx: &Context,
    ns: &str,
    new: NewRevision<'_>,
) -> Result<Created, ReconcileError> {
    let mut labels = new
        .owner
        .pointer("/spec/template/metadata/labels")
        .cloned()
        .filter(Value::is_object)
        .unwrap_or_else(|| json!({}));
    labels[REVISION_HASH] = json!(new.hash);
    let mut metadata = json!({
        "name": new.name,
        "namespace": ns,
        "labels": labels,
        "ownerReferences": [new.reference],
    });
    if let Some(a) = new
        .annotations
        .filter(|a| a.as_object().is_some_and(|m| !m.is_empty()))
    {
        metadata["annotations"] = a;
    }
    let body = json!({
        "apiVersion": "apps/v1",
        "kind": "ControllerRevision",
        "metadata": metadata,
        "data": new.data,
        "revision": new.revision,
    });
    match ctx
        .client
        .create("controllerrevisions", Some(ns), body)
        .await
    {
        Ok(r) => Ok(Created::Revision(r)),
        Err(ApiError::AlreadyExists { .. }) => {
            let existing = ctx
                .client
                .get("controllerrevisions", Some(ns), &new.name)
                .await?;
            if matches(&existing, &new.data) {
                Ok(Created::Revision(existing))
            } else {
                Ok(Created::Collision)
            }
        }
        Err(e) => Err(e.into()),
    }
}

/// Give a revision a new number (it became current again, so it must be the highest).
pub async fn renumber(ctx: &Context, revision: &Value, to: i64) -> Result<Value, ReconcileError> {
    let ns = meta::namespace(revision);
    let name = meta::name(revision).unwrap_or_default();
    let mut body = revision.clone();
    body["revision"] = json!(to);
    Ok(ctx
        .client
        .update("controllerrevisions", ns, name, None, body)
        .await?)
}

/// The revisions to delete so that at most `limit` of `old` are kept: oldest first,
/// never one a live pod still runs.
pub fn to_truncate(
    old: &[Arc<Value>],
    limit: usize,
    live: impl Fn(&Value) -> bool,
) -> Vec<&Arc<Value>> {
    let mut kill = old.len().saturating_sub(limit);
    let mut sorted: Vec<&Arc<Value>> = old.iter().collect();
    sorted.sort_by_key(|r| number(r));
    let mut out = Vec::new();
    for r in sorted {
        if kill == 0 {
            break;
        }
        if live(r) {
            continue;
        }
        out.push(r);
        kill -= 1;
    }
    out
}

/// Delete what [`to_truncate`] chose.
pub async fn truncate(
    ctx: &Context,
    old: &[Arc<Value>],
    limit: usize,
    live: impl Fn(&Value) -> bool,
) -> Result<(), ReconcileError> {
    for r in to_truncate(old, limit, live) {
        let name = meta::name(r).unwrap_or_default();
        match ctx
            .client
            .delete("controllerrevisions", meta::namespace(r), name, None)
            .await
        {
            Ok(_) | Err(ApiError::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template(image: &str) -> Value {
        json!({"metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "c", "image": image}]}})
    }

    #[test]
    fn a_revision_is_a_patch_replacing_the_template_with_sorted_keys() {
        let data = revision_data(&template("a"));
        assert_eq!(
            data.to_string(),
            r#"{"spec":{"template":{"$patch":"replace","metadata":{"creationTimestamp":null,"labels":{"app":"web"}},"spec":{"containers":[{"image":"a","name":"c"}]}}}}"#
        );
        let rev = json!({"data": data, "revision": 3});
        assert!(matches(&rev, &revision_data(&template("a"))));
        assert!(!matches(&rev, &revision_data(&template("b"))));
        // Copying it back gives the template as it was.
        assert_eq!(template_of(&rev), Some(template("a")));
        let owner = json!({"spec": {"replicas": 2, "template": template("b")}});
        let back = apply_revision(&owner, &rev);
        assert_eq!(back["spec"]["template"], template("a"));
        assert_eq!(back["spec"]["replicas"], 2);
    }

    #[test]
    fn hashes_follow_the_data_and_the_collision_count() {
        let a = revision_data(&template("a"));
        let h = revision_hash(&a, None);
        assert_eq!(h, revision_hash(&revision_data(&template("a")), None));
        assert_ne!(h, revision_hash(&revision_data(&template("b")), None));
        assert_ne!(h, revision_hash(&a, Some(1)));
        assert!(h
            .bytes()
            .all(|b| b"bcdfghjklmnpqrstvwxz2456789".contains(&b)));
        assert_eq!(revision_name("web", &h), format!("web-{h}"));
        let long = "x".repeat(300);
        assert_eq!(revision_name(&long, "h").len(), MAX_PREFIX + 2);
    }

    #[test]
    fn truncation_deletes_the_oldest_revisions_no_pod_runs() {
        let rev = |n: i64, hash: &str| {
            Arc::new(json!({"metadata": {"name": format!("r{n}"),
                "labels": {REVISION_HASH: hash}}, "revision": n}))
        };
        let old = vec![rev(3, "c"), rev(1, "a"), rev(2, "b"), rev(4, "d")];
        let live = |r: &Value| hash_label(r) == Some("a");
        let names: Vec<_> = to_truncate(&old, 2, live)
            .into_iter()
            .map(|r| meta::name(r).unwrap_or_default().to_string())
            .collect();
        assert_eq!(names, ["r2", "r3"]);
        assert!(to_truncate(&old, 10, |_| false).is_empty());
        assert_eq!(max_number(&old), 4);
    }
}
