//! The three patch formats the Kubernetes API accepts on PATCH:
//! JSON merge patch (RFC 7386), JSON patch (RFC 6902) and strategic merge patch.
//!
//! Strategic merge patch follows `k8s.io/apimachinery/pkg/util/strategicpatch`.
//! Instead of reflecting over Go struct tags, the `patchStrategy`/`patchMergeKey` tags
//! come from each kind's strategy (`Strategy::list_strategy`, by JSON path), with
//! ObjectMeta's and the PodSpec's shared here.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

const PATCH_DIRECTIVE: &str = "$patch";
const RETAIN_KEYS_DIRECTIVE: &str = "$retainKeys";
const SET_ELEMENT_ORDER_PREFIX: &str = "$setElementOrder";
const DELETE_FROM_PRIMITIVE_LIST_PREFIX: &str = "$deleteFromPrimitiveList";

#[derive(Debug, thiserror::Error)]
pub enum PatchError {
    #[error("invalid patch: {0}")]
    InvalidPatch(String),
    #[error("invalid JSON pointer {pointer:?}: {reason}")]
    InvalidPointer { pointer: String, reason: String },
    #[error("path {path:?} does not exist")]
    PathNotFound { path: String },
    #[error("array index {index:?} is out of range at {path:?} (array length is {len})")]
    IndexOutOfRange {
        path: String,
        index: String,
        len: usize,
    },
    #[error("testing value {path} failed: test failed")]
    TestFailed { path: String },
    #[error(
        "unknown JSON patch operation {0:?}: expected add, remove, replace, move, copy or test"
    )]
    UnknownOperation(String),
    #[error("cannot move {from:?} into its own child {path:?}")]
    MoveIntoChild { from: String, path: String },
    #[error("invalid strategic merge patch directive: {0}")]
    InvalidDirective(String),
    #[error("list {list:?}: element {element} does not contain the merge key {key:?}")]
    MissingMergeKey {
        list: String,
        key: String,
        element: String,
    },
}

fn invalid(reason: impl Into<String>) -> PatchError {
    PatchError::InvalidPatch(reason.into())
}

/// JSON equality with numbers compared by value, so `1` equals `1.0` as RFC 6902
/// requires for `test` (serde_json keeps integers and floats distinct).
fn json_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            x == y || matches!((x.as_f64(), y.as_f64()), (Some(p), Some(q)) if p == q)
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| json_equal(p, q))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_equal(v, w)))
        }
        _ => a == b,
    }
}

// ---------------------------------------------------------------------------
// JSON merge patch (RFC 7386)
// ---------------------------------------------------------------------------

/// Applies an RFC 7386 JSON merge patch: objects merge recursively, `null`
/// removes a key, and anything else (including arrays) replaces the target.
pub fn merge_patch(target: &Value, patch: &Value) -> Value {
    let Value::Object(patch) = patch else {
        return patch.clone();
    };
    let mut result = match target {
        Value::Object(map) => map.clone(),
        _ => Map::new(),
    };
    for (key, value) in patch {
        if value.is_null() {
            result.remove(key);
            continue;
        }
        let merged = merge_patch(result.get(key).unwrap_or(&Value::Null), value);
        result.insert(key.clone(), merged);
    }
    Value::Object(result)
}

// ---------------------------------------------------------------------------
// JSON patch (RFC 6902)
// ---------------------------------------------------------------------------

/// Applies an RFC 6902 JSON patch. Operations apply in order to a copy, so a
/// failing operation leaves no partial result behind.
pub fn json_patch(target: &Value, patch: &Value) -> Result<Value, PatchError> {
    let operations = patch
        .as_array()
        .ok_or_else(|| invalid("a JSON patch must be an array of operations"))?;
    let mut doc = target.clone();
    for operation in operations {
        apply_operation(&mut doc, &Operation::parse(operation)?)?;
    }
    Ok(doc)
}

struct Operation<'a> {
    op: &'a str,
    path: &'a str,
    from: Option<&'a str>,
    value: Option<&'a Value>,
}

impl<'a> Operation<'a> {
    fn parse(v: &'a Value) -> Result<Self, PatchError> {
        let obj = v
            .as_object()
            .ok_or_else(|| invalid(format!("operation {v} is not an object")))?;
        let op = obj
            .get("op")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid(format!("operation {v} has no \"op\" string")))?;
        let path = obj
            .get("path")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid(format!("operation {v} has no \"path\" string")))?;
        Ok(Operation {
            op,
            path,
            from: obj.get("from").and_then(Value::as_str),
            value: obj.get("value"),
        })
    }

    /// `value` may legitimately be `null`, so only its absence is an error.
    fn value(&self) -> Result<&'a Value, PatchError> {
        self.value.ok_or_else(|| {
            invalid(format!(
                "{:?} operation on {:?} needs a \"value\"",
                self.op, self.path
            ))
        })
    }

    fn from(&self) -> Result<&'a str, PatchError> {
        self.from.ok_or_else(|| {
            invalid(format!(
                "{:?} operation on {:?} needs a \"from\"",
                self.op, self.path
            ))
        })
    }
}

fn apply_operation(doc: &mut Value, op: &Operation<'_>) -> Result<(), PatchError> {
    match op.op {
        "add" => pointer_add(doc, op.path, op.value()?.clone()),
        "remove" => pointer_remove(doc, op.path).map(drop),
        "replace" => pointer_replace(doc, op.path, op.value()?.clone()),
        "move" => apply_move(doc, op.from()?, op.path),
        "copy" => {
            let value = pointer_get(doc, op.from()?)?.clone();
            pointer_add(doc, op.path, value)
        }
        "test" => apply_test(doc, op.path, op.value()?),
        other => Err(PatchError::UnknownOperation(other.to_string())),
    }
}

fn apply_move(doc: &mut Value, from: &str, path: &str) -> Result<(), PatchError> {
    if from == path {
        // Still required to exist, but moving onto itself changes nothing.
        return pointer_get(doc, from).map(drop);
    }
    if path.starts_with(&format!("{from}/")) {
        return Err(PatchError::MoveIntoChild {
            from: from.to_string(),
            path: path.to_string(),
        });
    }
    let value = pointer_remove(doc, from)?;
    pointer_add(doc, path, value)
}

fn apply_test(doc: &Value, path: &str, expected: &Value) -> Result<(), PatchError> {
    let failed = || PatchError::TestFailed {
        path: path.to_string(),
    };
    match pointer_get(doc, path) {
        Ok(actual) if json_equal(actual, expected) => Ok(()),
        Ok(_) | Err(PatchError::PathNotFound { .. } | PatchError::IndexOutOfRange { .. }) => {
            Err(failed())
        }
        Err(other) => Err(other),
    }
}

/// Splits an RFC 6901 pointer into unescaped reference tokens.
fn parse_pointer(pointer: &str) -> Result<Vec<String>, PatchError> {
    if pointer.is_empty() {
        return Ok(Vec::new());
    }
    let rest = pointer
        .strip_prefix('/')
        .ok_or_else(|| bad_pointer(pointer, "must be empty or start with '/'"))?;
    rest.split('/')
        .map(|token| unescape_token(pointer, token))
        .collect()
}

fn bad_pointer(pointer: &str, reason: &str) -> PatchError {
    PatchError::InvalidPointer {
        pointer: pointer.to_string(),
        reason: reason.to_string(),
    }
}

fn unescape_token(pointer: &str, token: &str) -> Result<String, PatchError> {
    let mut out = String::with_capacity(token.len());
    let mut chars = token.chars();
    while let Some(c) = chars.next() {
        if c != '~' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('0') => out.push('~'),
            Some('1') => out.push('/'),
            _ => return Err(bad_pointer(pointer, "'~' must be followed by '0' or '1'")),
        }
    }
    Ok(out)
}

/// Parses an array index token: decimal digits without leading zeros.
fn parse_index(pointer: &str, token: &str, len: usize) -> Result<usize, PatchError> {
    let out_of_range = || PatchError::IndexOutOfRange {
        path: pointer.to_string(),
        index: token.to_string(),
        len,
    };
    if token == "-" {
        return Err(out_of_range());
    }
    let well_formed = !token.is_empty()
        && token.bytes().all(|b| b.is_ascii_digit())
        && (token == "0" || !token.starts_with('0'));
    if !well_formed {
        return Err(bad_pointer(
            pointer,
            &format!("{token:?} is not a valid array index"),
        ));
    }
    // Digits only, so a parse failure can only mean overflow: out of range.
    token.parse::<usize>().map_err(|_| out_of_range())
}

fn not_found(pointer: &str) -> PatchError {
    PatchError::PathNotFound {
        path: pointer.to_string(),
    }
}

fn child<'v>(value: &'v Value, token: &str, pointer: &str) -> Result<&'v Value, PatchError> {
    match value {
        Value::Object(map) => map.get(token).ok_or_else(|| not_found(pointer)),
        Value::Array(list) => {
            let index = parse_index(pointer, token, list.len())?;
            list.get(index).ok_or_else(|| PatchError::IndexOutOfRange {
                path: pointer.to_string(),
                index: token.to_string(),
                len: list.len(),
            })
        }
        _ => Err(not_found(pointer)),
    }
}

fn child_mut<'v>(
    value: &'v mut Value,
    token: &str,
    pointer: &str,
) -> Result<&'v mut Value, PatchError> {
    match value {
        Value::Object(map) => map.get_mut(token).ok_or_else(|| not_found(pointer)),
        Value::Array(list) => {
            let len = list.len();
            let index = parse_index(pointer, token, len)?;
            list.get_mut(index)
                .ok_or_else(|| PatchError::IndexOutOfRange {
                    path: pointer.to_string(),
                    index: token.to_string(),
                    len,
                })
        }
        _ => Err(not_found(pointer)),
    }
}

fn pointer_get<'v>(doc: &'v Value, pointer: &str) -> Result<&'v Value, PatchError> {
    parse_pointer(pointer)?
        .iter()
        .try_fold(doc, |current, token| child(current, token, pointer))
}

/// Resolves everything but the last token, returning the container and the last
/// token; `None` means the pointer names the whole document.
fn parent_mut<'v>(
    doc: &'v mut Value,
    pointer: &str,
) -> Result<Option<(&'v mut Value, String)>, PatchError> {
    let mut tokens = parse_pointer(pointer)?;
    let Some(last) = tokens.pop() else {
        return Ok(None);
    };
    let parent = tokens
        .iter()
        .try_fold(doc, |current, token| child_mut(current, token, pointer))?;
    Ok(Some((parent, last)))
}

fn pointer_add(doc: &mut Value, pointer: &str, value: Value) -> Result<(), PatchError> {
    let Some((parent, last)) = parent_mut(doc, pointer)? else {
        *doc = value;
        return Ok(());
    };
    match parent {
        Value::Object(map) => {
            map.insert(last, value);
        }
        Value::Array(list) if last == "-" => list.push(value),
        Value::Array(list) => {
            let index = parse_index(pointer, &last, list.len())?;
            if index > list.len() {
                return Err(PatchError::IndexOutOfRange {
                    path: pointer.to_string(),
                    index: last,
                    len: list.len(),
                });
            }
            list.insert(index, value);
        }
        _ => return Err(not_found(pointer)),
    }
    Ok(())
}

fn pointer_remove(doc: &mut Value, pointer: &str) -> Result<Value, PatchError> {
    let Some((parent, last)) = parent_mut(doc, pointer)? else {
        return Err(invalid("cannot remove the whole document"));
    };
    match parent {
        Value::Object(map) => map.remove(&last).ok_or_else(|| not_found(pointer)),
        Value::Array(list) => {
            let index = parse_index(pointer, &last, list.len())?;
            if index >= list.len() {
                return Err(PatchError::IndexOutOfRange {
                    path: pointer.to_string(),
                    index: last,
                    len: list.len(),
                });
            }
            Ok(list.remove(index))
        }
        _ => Err(not_found(pointer)),
    }
}

fn pointer_replace(doc: &mut Value, pointer: &str, value: Value) -> Result<(), PatchError> {
    match parent_mut(doc, pointer)? {
        None => *doc = value,
        Some((parent, last)) => *child_mut(parent, &last, pointer)? = value,
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Strategic merge patch: schema
// ---------------------------------------------------------------------------

/// How a list field is patched, from its `patchStrategy`/`patchMergeKey` tags. The one
/// table of merge keys: the OpenAPI documents publish it as `x-kubernetes-patch-*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListStrategy {
    /// No merge strategy: the patch list replaces the original wholesale.
    Replace,
    /// `patchStrategy:"merge"` on a list of objects, keyed by this field.
    MergeByKey(&'static str),
    /// `patchStrategy:"merge"` on a list of scalars: an ordered set union.
    MergePrimitive,
}

/// Looks up the strategy for the list at `path` (map keys only; list elements
/// add no path segment) inside an object of `kind`: ObjectMeta's lists for every kind,
/// the rest from the kind's registered strategy.
pub(crate) fn list_strategy(kind: &str, path: &[String]) -> ListStrategy {
    let path: Vec<&str> = path.iter().map(String::as_str).collect();
    if let ["metadata", rest @ ..] = path.as_slice() {
        return object_meta_list(rest);
    }
    match super::resources::by_kind(kind) {
        Some(info) => info.strategy.list_strategy(&path),
        None => ListStrategy::Replace,
    }
}

pub(crate) fn object_meta_list(rest: &[&str]) -> ListStrategy {
    match rest {
        ["ownerReferences"] => ListStrategy::MergeByKey("uid"),
        ["finalizers"] => ListStrategy::MergePrimitive,
        _ => ListStrategy::Replace,
    }
}

/// The lists of a PodSpec (relative to it), for every kind that embeds one.
pub(crate) fn pod_spec_list(rest: &[&str]) -> ListStrategy {
    match rest {
        ["containers" | "initContainers" | "ephemeralContainers"] => {
            ListStrategy::MergeByKey("name")
        }
        ["containers" | "initContainers" | "ephemeralContainers", field] => container_list(field),
        ["volumes" | "imagePullSecrets" | "resourceClaims" | "schedulingGates"] => {
            ListStrategy::MergeByKey("name")
        }
        ["hostAliases"] => ListStrategy::MergeByKey("ip"),
        ["topologySpreadConstraints"] => ListStrategy::MergeByKey("topologyKey"),
        _ => ListStrategy::Replace,
    }
}

fn container_list(field: &str) -> ListStrategy {
    match field {
        "ports" => ListStrategy::MergeByKey("containerPort"),
        "env" => ListStrategy::MergeByKey("name"),
        "volumeMounts" => ListStrategy::MergeByKey("mountPath"),
        "volumeDevices" => ListStrategy::MergeByKey("devicePath"),
        _ => ListStrategy::Replace,
    }
}

/// How the elements of a list are told apart, for field ownership (managedFields) as
/// for patching: by a key field, as a set of scalars, or not at all (atomic).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListIdentity {
    Keyed(&'static str),
    Set,
    Atomic,
}

/// The identity of the list at `path` (map keys only) in an object of `kind`.
pub fn list_identity(kind: &str, path: &[String]) -> ListIdentity {
    match list_strategy(kind, path) {
        ListStrategy::MergeByKey(k) => ListIdentity::Keyed(k),
        ListStrategy::MergePrimitive => ListIdentity::Set,
        ListStrategy::Replace => ListIdentity::Atomic,
    }
}

// ---------------------------------------------------------------------------
// Strategic merge patch: merging
// ---------------------------------------------------------------------------

/// Applies a Kubernetes strategic merge patch to an object of the given kind
/// (e.g. "Pod"). Kinds without known merge keys still get map merging, `null`
/// deletion, directives and the ObjectMeta list rules.
pub fn strategic_merge_patch(
    target: &Value,
    patch: &Value,
    kind: &str,
) -> Result<Value, PatchError> {
    let patch = patch
        .as_object()
        .ok_or_else(|| invalid("a strategic merge patch must be a JSON object"))?;
    let merger = Merger { kind };
    merger
        .merge_map(target.as_object(), patch, &[])
        .map(Value::Object)
}

fn is_directive_key(key: &str) -> bool {
    key == PATCH_DIRECTIVE
        || key == RETAIN_KEYS_DIRECTIVE
        || key.starts_with(SET_ELEMENT_ORDER_PREFIX)
        || key.starts_with(DELETE_FROM_PRIMITIVE_LIST_PREFIX)
}

fn has_patch_directive(v: &Value) -> bool {
    v.get(PATCH_DIRECTIVE).is_some()
}

fn is_delete_directive(map: &Map<String, Value>) -> bool {
    map.get(PATCH_DIRECTIVE).and_then(Value::as_str) == Some("delete")
}

fn child_path(path: &[String], key: &str) -> Vec<String> {
    let mut child = path.to_vec();
    child.push(key.to_string());
    child
}

fn dotted(path: &[String]) -> String {
    path.join(".")
}

/// Extracts `<list>` from `$setElementOrder/<list>`-style directive keys.
fn directive_target<'k>(key: &'k str, prefix: &str) -> Result<Option<&'k str>, PatchError> {
    let Some(rest) = key.strip_prefix(prefix) else {
        return Ok(None);
    };
    match rest.strip_prefix('/').filter(|field| !field.is_empty()) {
        Some(field) => Ok(Some(field)),
        None => Err(PatchError::InvalidDirective(format!(
            "{key:?} must have the form {prefix}/<list field>"
        ))),
    }
}

/// What identifies a list element for ordering: its merge key value, or the
/// element itself for primitive lists.
fn identity<'v>(v: &'v Value, key: Option<&str>) -> Option<&'v Value> {
    match key {
        Some(key) => v.get(key),
        None => Some(v),
    }
}

fn position_of(ids: &[&Value], v: &Value, key: Option<&str>) -> Option<usize> {
    let id = identity(v, key)?;
    ids.iter().position(|candidate| json_equal(candidate, id))
}

/// Orders a merged list the way Kubernetes does: elements named by `order_ids`
/// (the patch list, or `$setElementOrder`) come in that order; the remaining,
/// server-only elements keep their original order and are interleaved by their
/// original positions. An element absent from the original (a new one) is
/// emitted before the server-only elements that follow it, so without a
/// `$setElementOrder` new items land at the front, exactly as in Kubernetes.
fn order_merged(
    merged: Vec<Value>,
    order_ids: &[&Value],
    server_ids: &[&Value],
    key: Option<&str>,
) -> Vec<Value> {
    let (mut ordered, mut server_only): (Vec<Value>, Vec<Value>) = merged
        .into_iter()
        .partition(|v| position_of(order_ids, v, key).is_some());
    ordered.sort_by_key(|v| position_of(order_ids, v, key));
    server_only.sort_by_key(|v| position_of(server_ids, v, key).unwrap_or(usize::MAX));

    let mut out = Vec::with_capacity(ordered.len() + server_only.len());
    let mut left = server_only.into_iter().peekable();
    let mut right = ordered.into_iter().peekable();
    loop {
        let take_left = match (left.peek(), right.peek()) {
            (Some(l), Some(r)) => matches!(
                (position_of(server_ids, l, key), position_of(server_ids, r, key)),
                (Some(a), Some(b)) if a < b
            ),
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => return out,
        };
        out.extend(if take_left { left.next() } else { right.next() });
    }
}

struct Merger<'k> {
    kind: &'k str,
}

impl Merger<'_> {
    fn merge_map(
        &self,
        original: Option<&Map<String, Value>>,
        patch: &Map<String, Value>,
        path: &[String],
    ) -> Result<Map<String, Value>, PatchError> {
        if let Some(directive) = patch.get(PATCH_DIRECTIVE) {
            return self.map_directive(directive, patch, path);
        }
        let mut result = original.cloned().unwrap_or_default();
        apply_retain_keys(&mut result, patch, path)?;
        let ordered = self.apply_set_element_order(&mut result, patch, path)?;
        for (key, value) in patch {
            if !is_directive_key(key) && !ordered.contains(key) {
                self.merge_field(&mut result, key, value, path)?;
            }
        }
        apply_primitive_deletions(&mut result, patch)?;
        Ok(result)
    }

    /// `$patch: replace` swaps the whole map for the patch; `$patch: delete`
    /// empties it (Kubernetes yields `{}` rather than dropping the key).
    fn map_directive(
        &self,
        directive: &Value,
        patch: &Map<String, Value>,
        path: &[String],
    ) -> Result<Map<String, Value>, PatchError> {
        match directive.as_str() {
            Some("replace") => {
                let mut rest = patch.clone();
                rest.remove(PATCH_DIRECTIVE);
                self.merge_map(None, &rest, path)
            }
            Some("delete") => Ok(Map::new()),
            _ => Err(PatchError::InvalidDirective(format!(
                "unknown $patch value {directive} at {:?}",
                dotted(path)
            ))),
        }
    }

    fn merge_field(
        &self,
        result: &mut Map<String, Value>,
        key: &str,
        value: &Value,
        path: &[String],
    ) -> Result<(), PatchError> {
        if value.is_null() {
            result.remove(key);
            return Ok(());
        }
        let child = child_path(path, key);
        let merged = match (result.get(key), value) {
            (Some(Value::Object(o)), Value::Object(p)) => {
                Value::Object(self.merge_map(Some(o), p, &child)?)
            }
            // Deleting something that is not there must not create it.
            (None, Value::Object(p)) if is_delete_directive(p) => return Ok(()),
            (Some(Value::Array(o)), Value::Array(p)) => {
                Value::Array(self.merge_list(o, p, &child)?)
            }
            _ => self.clean(value, &child)?,
        };
        result.insert(key.to_string(), merged);
        Ok(())
    }

    /// Turns a patch fragment with nothing to merge into into plain data,
    /// resolving directives and dropping `null`s so none leak into the object.
    fn clean(&self, value: &Value, path: &[String]) -> Result<Value, PatchError> {
        match value {
            Value::Object(p) => Ok(Value::Object(self.merge_map(None, p, path)?)),
            Value::Array(p) => Ok(Value::Array(self.merge_list(&[], p, path)?)),
            other => Ok(other.clone()),
        }
    }

    fn merge_list(
        &self,
        original: &[Value],
        patch: &[Value],
        path: &[String],
    ) -> Result<Vec<Value>, PatchError> {
        match list_strategy(self.kind, path) {
            ListStrategy::Replace => self.replace_list(patch, path),
            ListStrategy::MergeByKey(key) => self.merge_keyed_list(original, patch, key, path),
            ListStrategy::MergePrimitive => merge_primitive_list(original, patch, path),
        }
    }

    fn replace_list(&self, patch: &[Value], path: &[String]) -> Result<Vec<Value>, PatchError> {
        patch
            .iter()
            .filter(|v| !has_patch_directive(v))
            .map(|v| match v {
                Value::Object(p) => self.merge_map(None, p, path).map(Value::Object),
                other => Ok(other.clone()),
            })
            .collect()
    }

    fn merge_keyed_list(
        &self,
        original: &[Value],
        patch: &[Value],
        key: &'static str,
        path: &[String],
    ) -> Result<Vec<Value>, PatchError> {
        let mut base = original.to_vec();
        let ListPatch { items, replace } = split_list_directives(&mut base, patch, key, path)?;
        if replace {
            return items
                .iter()
                .map(|item| self.merge_map(None, item, path).map(Value::Object))
                .collect();
        }
        let server_ids: Vec<&Value> = original.iter().filter_map(|v| v.get(key)).collect();
        let mut order_ids = Vec::with_capacity(items.len());
        for item in &items {
            let id = merge_key_value(item, key, path)?;
            order_ids.push(id);
            match base.iter().position(|e| has_key_value(e, key, id)) {
                Some(i) => {
                    let merged = self.merge_map(base[i].as_object(), item, path)?;
                    base[i] = Value::Object(merged);
                }
                None => {
                    let fresh = self.merge_map(None, item, path)?;
                    base.push(Value::Object(fresh));
                }
            }
        }
        Ok(order_merged(base, &order_ids, &server_ids, Some(key)))
    }

    /// Handles `$setElementOrder/<list>`: merges that list now and reorders it.
    /// Returns the fields it dealt with so the main loop skips them.
    fn apply_set_element_order(
        &self,
        result: &mut Map<String, Value>,
        patch: &Map<String, Value>,
        path: &[String],
    ) -> Result<BTreeSet<String>, PatchError> {
        let mut handled = BTreeSet::new();
        for (directive, order) in patch {
            let Some(field) = directive_target(directive, SET_ELEMENT_ORDER_PREFIX)? else {
                continue;
            };
            let order = order.as_array().ok_or_else(|| {
                PatchError::InvalidDirective(format!("{directive:?} must be a list"))
            })?;
            if self.order_one_list(result, patch, field, order, path)? {
                handled.insert(field.to_string());
            }
        }
        Ok(handled)
    }

    fn order_one_list(
        &self,
        result: &mut Map<String, Value>,
        patch: &Map<String, Value>,
        field: &str,
        order: &[Value],
        path: &[String],
    ) -> Result<bool, PatchError> {
        let child = child_path(path, field);
        let key = match list_strategy(self.kind, &child) {
            ListStrategy::MergeByKey(key) => Some(key),
            ListStrategy::MergePrimitive => None,
            // Order only means something for merged lists; a replaced list
            // already takes the patch's order.
            ListStrategy::Replace => return Ok(false),
        };
        let patch_list = match patch.get(field) {
            Some(Value::Array(list)) => Some(list.as_slice()),
            // A null or non-list value is a plain replacement; let the main loop do it.
            Some(_) => return Ok(false),
            None => None,
        };
        let original = result.get(field).and_then(Value::as_array).cloned();
        if original.is_none() && patch_list.is_none() {
            return Ok(false);
        }
        let original = original.unwrap_or_default();
        let order_ids: Vec<&Value> = order.iter().filter_map(|v| identity(v, key)).collect();
        check_patch_follows_order(patch_list.unwrap_or_default(), &order_ids, key, &child)?;
        let merged = match patch_list {
            Some(list) => self.merge_list(&original, list, &child)?,
            None => original.clone(),
        };
        let server_ids: Vec<&Value> = original.iter().filter_map(|v| identity(v, key)).collect();
        let ordered = order_merged(merged, &order_ids, &server_ids, key);
        result.insert(field.to_string(), Value::Array(ordered));
        Ok(true)
    }
}

/// The ordinary entries of a merge-list patch, once its directives are applied.
struct ListPatch<'p> {
    items: Vec<&'p Map<String, Value>>,
    /// A `{"$patch": "replace"}` entry asked for the list to be replaced whole.
    replace: bool,
}

/// Applies `$patch: delete` entries to `base` and separates out the ordinary
/// items.
fn split_list_directives<'p>(
    base: &mut Vec<Value>,
    patch: &'p [Value],
    key: &str,
    path: &[String],
) -> Result<ListPatch<'p>, PatchError> {
    let mut items = Vec::new();
    let mut replace = false;
    for element in patch {
        let item = element.as_object().ok_or_else(|| {
            invalid(format!(
                "{:?} is merged by {key:?}, so its elements must be objects, not {element}",
                dotted(path)
            ))
        })?;
        match item.get(PATCH_DIRECTIVE).map(|d| (d, d.as_str())) {
            None => items.push(item),
            Some((_, Some("delete"))) => {
                let id = merge_key_value(item, key, path)?;
                base.retain(|e| !has_key_value(e, key, id));
            }
            Some((_, Some("replace"))) => replace = true,
            Some((_, Some("merge"))) => {
                return Err(PatchError::InvalidDirective(
                    "merging lists cannot yet be specified in the patch".to_string(),
                ))
            }
            Some((directive, _)) => {
                return Err(PatchError::InvalidDirective(format!(
                    "unknown $patch value {directive} in list {:?}",
                    dotted(path)
                )))
            }
        }
    }
    Ok(ListPatch { items, replace })
}

fn merge_key_value<'m>(
    item: &'m Map<String, Value>,
    key: &str,
    path: &[String],
) -> Result<&'m Value, PatchError> {
    item.get(key).ok_or_else(|| PatchError::MissingMergeKey {
        list: dotted(path),
        key: key.to_string(),
        element: Value::Object(item.clone()).to_string(),
    })
}

fn has_key_value(element: &Value, key: &str, id: &Value) -> bool {
    element.get(key).is_some_and(|v| json_equal(v, id))
}

/// Set union that keeps the first occurrence, then Kubernetes ordering.
fn merge_primitive_list(
    original: &[Value],
    patch: &[Value],
    path: &[String],
) -> Result<Vec<Value>, PatchError> {
    if original
        .iter()
        .chain(patch)
        .any(|v| v.is_object() || v.is_array())
    {
        return Err(invalid(format!(
            "{:?} is a list of scalars and cannot merge objects or lists",
            dotted(path)
        )));
    }
    let mut merged: Vec<Value> = Vec::with_capacity(original.len() + patch.len());
    for v in original.iter().chain(patch) {
        if !merged.iter().any(|m| json_equal(m, v)) {
            merged.push(v.clone());
        }
    }
    let order_ids: Vec<&Value> = patch.iter().collect();
    let server_ids: Vec<&Value> = original.iter().collect();
    Ok(order_merged(merged, &order_ids, &server_ids, None))
}

/// Rejects patches whose list order contradicts their `$setElementOrder`, as
/// Kubernetes does, since the result would be ambiguous.
fn check_patch_follows_order(
    patch_list: &[Value],
    order_ids: &[&Value],
    key: Option<&str>,
    path: &[String],
) -> Result<(), PatchError> {
    if order_ids.is_empty() {
        return Ok(());
    }
    let mut next = 0;
    for item in patch_list.iter().filter(|v| !has_patch_directive(v)) {
        let Some(id) = identity(item, key) else {
            continue;
        };
        let found = order_ids
            .get(next..)
            .and_then(|rest| rest.iter().position(|o| json_equal(o, id)));
        match found {
            Some(offset) => next += offset + 1,
            None => {
                return Err(PatchError::InvalidDirective(format!(
                    "the order of {:?} in the patch does not match its $setElementOrder list",
                    dotted(path)
                )))
            }
        }
    }
    Ok(())
}

/// `$retainKeys`: drop every original field not listed, after checking that the
/// patch itself only sets listed fields.
fn apply_retain_keys(
    result: &mut Map<String, Value>,
    patch: &Map<String, Value>,
    path: &[String],
) -> Result<(), PatchError> {
    let Some(retain) = patch.get(RETAIN_KEYS_DIRECTIVE) else {
        return Ok(());
    };
    let keep: BTreeSet<&str> = retain
        .as_array()
        .ok_or_else(|| {
            PatchError::InvalidDirective("$retainKeys must be a list of field names".into())
        })?
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let stray = patch
        .iter()
        .find(|(k, v)| !v.is_null() && !is_directive_key(k) && !keep.contains(k.as_str()));
    if let Some((k, _)) = stray {
        return Err(PatchError::InvalidDirective(format!(
            "field {k:?} at {:?} is set by the patch but missing from $retainKeys",
            dotted(path)
        )));
    }
    result.retain(|k, _| keep.contains(k.as_str()));
    Ok(())
}

/// `$deleteFromPrimitiveList/<list>`: remove the listed scalars from `<list>`.
fn apply_primitive_deletions(
    result: &mut Map<String, Value>,
    patch: &Map<String, Value>,
) -> Result<(), PatchError> {
    for (directive, doomed) in patch {
        let Some(field) = directive_target(directive, DELETE_FROM_PRIMITIVE_LIST_PREFIX)? else {
            continue;
        };
        let doomed = doomed
            .as_array()
            .ok_or_else(|| PatchError::InvalidDirective(format!("{directive:?} must be a list")))?;
        if let Some(Value::Array(list)) = result.get_mut(field) {
            list.retain(|v| !doomed.iter().any(|d| json_equal(d, v)));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn smp(target: Value, patch: Value, kind: &str) -> Value {
        match strategic_merge_patch(&target, &patch, kind) {
            Ok(v) => v,
            Err(e) => panic!("strategic merge patch failed: {e}"),
        }
    }

    fn jp(target: Value, patch: Value) -> Result<Value, PatchError> {
        json_patch(&target, &patch)
    }

    fn names(list: &Value) -> Vec<&str> {
        list.as_array()
            .map(|l| l.iter().filter_map(|e| e["name"].as_str()).collect())
            .unwrap_or_default()
    }

    fn contains_directive(v: &Value) -> bool {
        match v {
            Value::Object(m) => m
                .iter()
                .any(|(k, v)| k.starts_with('$') || contains_directive(v)),
            Value::Array(l) => l.iter().any(contains_directive),
            _ => false,
        }
    }

    // -- merge patch ---------------------------------------------------------

    #[test]
    fn merge_patch_follows_the_rfc_7386_examples() {
        let cases = [
            (json!({"a": "b"}), json!({"a": "c"}), json!({"a": "c"})),
            (
                json!({"a": "b"}),
                json!({"b": "c"}),
                json!({"a": "b", "b": "c"}),
            ),
            (json!({"a": "b"}), json!({"a": null}), json!({})),
            (
                json!({"a": "b", "b": "c"}),
                json!({"a": null}),
                json!({"b": "c"}),
            ),
            (json!({"a": ["b"]}), json!({"a": "c"}), json!({"a": "c"})),
            (json!({"a": "c"}), json!({"a": ["b"]}), json!({"a": ["b"]})),
            (
                json!({"a": {"b": "c"}}),
                json!({"a": {"b": "d", "c": null}}),
                json!({"a": {"b": "d"}}),
            ),
            (
                json!({"a": [{"b": "c"}]}),
                json!({"a": [1]}),
                json!({"a": [1]}),
            ),
            (json!(["a", "b"]), json!(["c", "d"]), json!(["c", "d"])),
            (json!({"a": "b"}), json!(["c"]), json!(["c"])),
            (json!({"a": "foo"}), json!(null), json!(null)),
            (
                json!({"e": null}),
                json!({"a": 1}),
                json!({"e": null, "a": 1}),
            ),
            (
                json!([1, 2]),
                json!({"a": "b", "c": null}),
                json!({"a": "b"}),
            ),
            (
                json!({}),
                json!({"a": {"bb": {"ccc": null}}}),
                json!({"a": {"bb": {}}}),
            ),
        ];
        for (target, patch, expected) in cases {
            assert_eq!(merge_patch(&target, &patch), expected, "patch {patch}");
        }
    }

    // -- JSON patch ----------------------------------------------------------

    #[test]
    fn json_patch_applies_every_operation_in_order() {
        let doc = json!({"a": {"b": [1, 2, 3]}, "c": "x"});
        let patch = json!([
            {"op": "add", "path": "/a/b/1", "value": 9},
            {"op": "remove", "path": "/a/b/0"},
            {"op": "replace", "path": "/c", "value": "y"},
            {"op": "copy", "from": "/c", "path": "/d"},
            {"op": "move", "from": "/a/b", "path": "/e"},
            {"op": "test", "path": "/e", "value": [9, 2, 3]},
            {"op": "add", "path": "/e/-", "value": 4}
        ]);
        assert_eq!(
            jp(doc, patch).expect("applies"),
            json!({"a": {}, "c": "y", "d": "y", "e": [9, 2, 3, 4]})
        );
    }

    #[test]
    fn json_patch_unescapes_pointer_tokens() {
        let doc = json!({"metadata": {"annotations": {"a/b": "1", "m~n": "2"}}});
        let patch = json!([
            {"op": "replace", "path": "/metadata/annotations/a~1b", "value": "x"},
            {"op": "remove", "path": "/metadata/annotations/m~0n"},
            {"op": "add", "path": "/metadata/annotations/k8s.io~1x", "value": "y"}
        ]);
        assert_eq!(
            jp(doc, patch).expect("applies"),
            json!({"metadata": {"annotations": {"a/b": "x", "k8s.io/x": "y"}}})
        );
    }

    #[test]
    fn json_patch_add_replaces_existing_keys_and_the_root() {
        assert_eq!(
            jp(
                json!({"a": 1}),
                json!([{"op": "add", "path": "/a", "value": 2}])
            )
            .expect("ok"),
            json!({"a": 2})
        );
        assert_eq!(
            jp(
                json!({"a": 1}),
                json!([{"op": "add", "path": "", "value": [1]}])
            )
            .expect("ok"),
            json!([1])
        );
        assert_eq!(
            jp(
                json!({"a": 1}),
                json!([{"op": "add", "path": "/n", "value": null}])
            )
            .expect("ok"),
            json!({"a": 1, "n": null})
        );
    }

    #[test]
    fn json_patch_test_failure_is_an_error() {
        let err = jp(
            json!({"a": "x"}),
            json!([{"op": "replace", "path": "/a", "value": "y"},
                   {"op": "test", "path": "/a", "value": "x"}]),
        )
        .expect_err("test fails");
        assert!(matches!(err, PatchError::TestFailed { ref path } if path == "/a"));
        let missing = jp(json!({}), json!([{"op": "test", "path": "/a", "value": 1}]));
        assert!(matches!(missing, Err(PatchError::TestFailed { .. })));
    }

    #[test]
    fn json_patch_test_compares_numbers_by_value() {
        let doc = json!({"n": 1, "o": {"x": [2.0]}});
        let patch = json!([
            {"op": "test", "path": "/n", "value": 1.0},
            {"op": "test", "path": "/o", "value": {"x": [2]}}
        ]);
        assert!(jp(doc, patch).is_ok());
    }

    #[test]
    fn json_patch_rejects_out_of_range_indices() {
        let doc = json!({"l": [1, 2]});
        let cases = [
            json!([{"op": "add", "path": "/l/3", "value": 0}]),
            json!([{"op": "remove", "path": "/l/2"}]),
            json!([{"op": "replace", "path": "/l/2", "value": 0}]),
            json!([{"op": "remove", "path": "/l/-"}]),
            json!([{"op": "add", "path": "/l/99999999999999999999999", "value": 0}]),
        ];
        for patch in cases {
            let err = jp(doc.clone(), patch.clone()).expect_err("out of range");
            assert!(
                matches!(err, PatchError::IndexOutOfRange { .. }),
                "{patch}: {err:?}"
            );
        }
        assert_eq!(
            jp(doc, json!([{"op": "add", "path": "/l/2", "value": 3}])).expect("end insert"),
            json!({"l": [1, 2, 3]})
        );
    }

    #[test]
    fn json_patch_rejects_malformed_pointers_and_operations() {
        let doc = json!({"l": [1], "a": {"b": 1}});
        let invalid_pointer = [
            json!([{"op": "remove", "path": "a"}]),
            json!([{"op": "remove", "path": "/a~2"}]),
            json!([{"op": "remove", "path": "/l/01"}]),
            json!([{"op": "remove", "path": "/l/x"}]),
        ];
        for patch in invalid_pointer {
            let err = jp(doc.clone(), patch.clone()).expect_err("bad pointer");
            assert!(
                matches!(err, PatchError::InvalidPointer { .. }),
                "{patch}: {err:?}"
            );
        }
        assert!(matches!(
            jp(doc.clone(), json!([{"op": "frobnicate", "path": "/a"}])),
            Err(PatchError::UnknownOperation(_))
        ));
        assert!(matches!(
            jp(doc.clone(), json!([{"op": "add", "path": "/x"}])),
            Err(PatchError::InvalidPatch(_))
        ));
        assert!(matches!(
            jp(doc.clone(), json!([{"op": "move", "path": "/x"}])),
            Err(PatchError::InvalidPatch(_))
        ));
        assert!(matches!(
            jp(doc.clone(), json!({"op": "add"})),
            Err(PatchError::InvalidPatch(_))
        ));
        assert!(matches!(
            jp(
                doc.clone(),
                json!([{"op": "add", "path": "/missing/x", "value": 1}])
            ),
            Err(PatchError::PathNotFound { .. })
        ));
        assert!(matches!(
            jp(
                doc.clone(),
                json!([{"op": "add", "path": "/a/b/c", "value": 1}])
            ),
            Err(PatchError::PathNotFound { .. })
        ));
        assert!(matches!(
            jp(
                doc.clone(),
                json!([{"op": "replace", "path": "/nope", "value": 1}])
            ),
            Err(PatchError::PathNotFound { .. })
        ));
        assert!(matches!(
            jp(doc, json!([{"op": "move", "from": "/a", "path": "/a/c"}])),
            Err(PatchError::MoveIntoChild { .. })
        ));
    }

    #[test]
    fn json_patch_move_onto_itself_is_a_no_op() {
        let doc = json!({"a": {"b": 1}});
        let patch = json!([{"op": "move", "from": "/a", "path": "/a"}]);
        assert_eq!(jp(doc.clone(), patch).expect("ok"), doc);
        assert!(jp(doc, json!([{"op": "move", "from": "/ab", "path": "/abc"}])).is_err());
    }

    // -- strategic merge patch ------------------------------------------------

    fn pod() -> Value {
        json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": "p",
                "labels": {"app": "web", "tier": "fe"},
                "finalizers": ["a", "b"]
            },
            "spec": {
                "containers": [
                    {"name": "app", "image": "app:1",
                     "ports": [{"containerPort": 80, "protocol": "TCP"}],
                     "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                     "args": ["--x", "--y"]},
                    {"name": "sidecar", "image": "side:1"}
                ],
                "tolerations": [{"key": "k", "operator": "Exists"}],
                "volumes": [{"name": "v1", "emptyDir": {}}]
            }
        })
    }

    #[test]
    fn strategic_patch_merges_containers_by_name() {
        let out = smp(
            pod(),
            json!({"spec": {"containers": [{"name": "app", "image": "app:2"}]}}),
            "Pod",
        );
        let containers = &out["spec"]["containers"];
        assert_eq!(names(containers), vec!["app", "sidecar"]);
        assert_eq!(containers[0]["image"], "app:2");
        assert_eq!(containers[0]["env"], pod()["spec"]["containers"][0]["env"]);
        assert_eq!(containers[1]["image"], "side:1");
    }

    #[test]
    fn strategic_patch_merges_env_and_ports_inside_containers() {
        let out = smp(
            pod(),
            json!({"spec": {"containers": [{"name": "app",
                "env": [{"name": "B", "value": "20"}],
                "ports": [{"containerPort": 80, "name": "http"}]}]}}),
            "Pod",
        );
        let app = &out["spec"]["containers"][0];
        assert_eq!(
            app["env"],
            json!([{"name": "A", "value": "1"}, {"name": "B", "value": "20"}])
        );
        assert_eq!(
            app["ports"],
            json!([{"containerPort": 80, "protocol": "TCP", "name": "http"}])
        );
    }

    #[test]
    fn new_merge_list_items_without_order_go_first_like_kubernetes() {
        let out = smp(
            pod(),
            json!({"spec": {"containers": [{"name": "new", "image": "n:1"}]}}),
            "Pod",
        );
        assert_eq!(
            names(&out["spec"]["containers"]),
            vec!["new", "app", "sidecar"]
        );
    }

    #[test]
    fn strategic_patch_replaces_lists_without_a_merge_strategy() {
        let out = smp(
            pod(),
            json!({"spec": {
                "tolerations": [{"key": "other", "operator": "Exists"}],
                "containers": [{"name": "app", "args": ["--z"]}]
            }}),
            "Pod",
        );
        assert_eq!(
            out["spec"]["tolerations"],
            json!([{"key": "other", "operator": "Exists"}])
        );
        assert_eq!(out["spec"]["containers"][0]["args"], json!(["--z"]));
    }

    #[test]
    fn strategic_patch_null_deletes_map_keys() {
        let out = smp(
            pod(),
            json!({"metadata": {"labels": {"tier": null, "new": "x"}, "missing": null}}),
            "Pod",
        );
        assert_eq!(out["metadata"]["labels"], json!({"app": "web", "new": "x"}));
        assert!(out["metadata"].get("missing").is_none());
    }

    #[test]
    fn delete_directive_removes_one_list_entry_by_merge_key() {
        let out = smp(
            pod(),
            json!({"spec": {"containers": [{"name": "sidecar", "$patch": "delete"}],
                            "volumes": [{"name": "nope", "$patch": "delete"}]}}),
            "Pod",
        );
        assert_eq!(names(&out["spec"]["containers"]), vec!["app"]);
        assert_eq!(names(&out["spec"]["volumes"]), vec!["v1"]);
        assert!(!contains_directive(&out));
    }

    #[test]
    fn delete_directive_on_a_map_empties_it() {
        let out = smp(
            json!({"spec": {"affinity": {"nodeAffinity": {}}, "x": 1}}),
            json!({"spec": {"affinity": {"$patch": "delete"}, "absent": {"$patch": "delete"}}}),
            "Pod",
        );
        assert_eq!(out, json!({"spec": {"affinity": {}, "x": 1}}));
    }

    #[test]
    fn replace_directive_on_a_map_discards_the_original_fields() {
        let out = smp(
            pod(),
            json!({"metadata": {"labels": {"$patch": "replace", "only": "this"}}}),
            "Pod",
        );
        assert_eq!(out["metadata"]["labels"], json!({"only": "this"}));
        assert_eq!(out["metadata"]["name"], "p");
    }

    #[test]
    fn replace_directive_inside_a_list_replaces_the_whole_list() {
        let out = smp(
            pod(),
            json!({"spec": {"containers": [{"$patch": "replace"}, {"name": "solo", "image": "s"}]}}),
            "Pod",
        );
        assert_eq!(
            out["spec"]["containers"],
            json!([{"name": "solo", "image": "s"}])
        );
    }

    #[test]
    fn retain_keys_drops_unlisted_fields() {
        let target = json!({"spec": {"volumes": [{"name": "v", "emptyDir": {}}]}});
        let patch = json!({"spec": {"volumes": [{"name": "v", "$retainKeys": ["name", "hostPath"],
                                                   "hostPath": {"path": "/x"}}]}});
        let out = smp(target, patch, "Pod");
        assert_eq!(
            out["spec"]["volumes"],
            json!([{"name": "v", "hostPath": {"path": "/x"}}])
        );
        let bad = json!({"spec": {"$retainKeys": ["a"], "b": 1}});
        assert!(matches!(
            strategic_merge_patch(&pod(), &bad, "Pod"),
            Err(PatchError::InvalidDirective(_))
        ));
    }

    #[test]
    fn set_element_order_reorders_merged_lists_and_keeps_server_only_items_in_place() {
        // Server-only items keep their slot relative to the items around them in
        // the live list (Kubernetes' mergeSortedSlice), here between "a" and "b".
        let target = json!({"spec": {"containers": [
            {"name": "c"}, {"name": "a"}, {"name": "server"}, {"name": "b"}
        ]}});
        let patch = json!({"spec": {
            "$setElementOrder/containers": [{"name": "c"}, {"name": "new"}, {"name": "a"}, {"name": "b"}],
            "containers": [{"name": "new", "image": "n"}, {"name": "a", "image": "a2"}]
        }});
        let out = smp(target, patch, "Pod");
        assert_eq!(
            names(&out["spec"]["containers"]),
            vec!["c", "new", "a", "server", "b"]
        );
        assert_eq!(out["spec"]["containers"][2]["image"], "a2");
        assert!(!contains_directive(&out));
    }

    #[test]
    fn set_element_order_puts_trailing_server_only_items_last() {
        let target =
            json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}, {"name": "server"}]}});
        let patch = json!({"spec": {
            "$setElementOrder/containers": [{"name": "b"}, {"name": "a"}, {"name": "new"}],
            "containers": [{"name": "new"}]
        }});
        let out = smp(target, patch, "Pod");
        assert_eq!(
            names(&out["spec"]["containers"]),
            vec!["b", "a", "new", "server"]
        );
    }

    #[test]
    fn set_element_order_alone_just_reorders() {
        let target = json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}]}});
        let patch =
            json!({"spec": {"$setElementOrder/containers": [{"name": "b"}, {"name": "a"}]}});
        let out = smp(target, patch, "Pod");
        assert_eq!(names(&out["spec"]["containers"]), vec!["b", "a"]);
    }

    #[test]
    fn set_element_order_contradicting_the_patch_list_is_rejected() {
        let patch = json!({"spec": {
            "$setElementOrder/containers": [{"name": "app"}, {"name": "sidecar"}],
            "containers": [{"name": "sidecar"}, {"name": "app"}]
        }});
        assert!(matches!(
            strategic_merge_patch(&pod(), &patch, "Pod"),
            Err(PatchError::InvalidDirective(_))
        ));
    }

    #[test]
    fn finalizers_merge_as_a_set_and_support_primitive_deletion() {
        let out = smp(
            pod(),
            json!({"metadata": {"finalizers": ["b", "c"]}}),
            "Pod",
        );
        assert_eq!(out["metadata"]["finalizers"], json!(["a", "b", "c"]));
        let out = smp(
            pod(),
            json!({"metadata": {
                "$setElementOrder/finalizers": ["b", "c"],
                "finalizers": ["c"],
                "$deleteFromPrimitiveList/finalizers": ["a"]
            }}),
            "Pod",
        );
        assert_eq!(out["metadata"]["finalizers"], json!(["b", "c"]));
        assert!(!contains_directive(&out));
    }

    #[test]
    fn replication_controller_template_uses_pod_spec_merge_keys() {
        let rc = json!({"kind": "ReplicationController", "spec": {"replicas": 1, "template": {
            "metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "app", "image": "a:1", "env": [{"name": "X", "value": "1"}]},
                                    {"name": "b", "image": "b:1"}]}
        }}});
        let patch = json!({"spec": {"replicas": 3, "template": {"spec": {"containers": [
            {"name": "app", "env": [{"name": "Y", "value": "2"}]}
        ]}}}});
        let out = smp(rc, patch, "ReplicationController");
        let spec = &out["spec"]["template"]["spec"];
        assert_eq!(out["spec"]["replicas"], 3);
        assert_eq!(names(&spec["containers"]), vec!["app", "b"]);
        assert_eq!(names(&spec["containers"][0]["env"]), vec!["Y", "X"]);
        assert_eq!(spec["containers"][0]["image"], "a:1");
    }

    #[test]
    fn service_ports_merge_by_port_number() {
        let svc = json!({"spec": {"ports": [{"port": 80, "name": "http"}, {"port": 443, "name": "https"}]}});
        let out = smp(
            svc,
            json!({"spec": {"ports": [{"port": 443, "targetPort": 8443}]}}),
            "Service",
        );
        assert_eq!(
            out["spec"]["ports"],
            json!([{"port": 80, "name": "http"}, {"port": 443, "name": "https", "targetPort": 8443}])
        );
    }

    #[test]
    fn node_status_merges_conditions_and_addresses_by_type() {
        let node = json!({"spec": {"podCIDRs": ["10.0.0.0/24"]}, "status": {
            "conditions": [{"type": "Ready", "status": "False"}, {"type": "MemoryPressure", "status": "False"}],
            "addresses": [{"type": "InternalIP", "address": "1.2.3.4"}]
        }});
        let patch = json!({"spec": {"podCIDRs": ["fd00::/64"]}, "status": {
            "conditions": [{"type": "Ready", "status": "True"}],
            "addresses": [{"type": "Hostname", "address": "n1"}]
        }});
        let out = smp(node, patch, "Node");
        assert_eq!(
            out["status"]["conditions"],
            json!([{"type": "Ready", "status": "True"}, {"type": "MemoryPressure", "status": "False"}])
        );
        assert_eq!(out["status"]["addresses"].as_array().map(Vec::len), Some(2));
        assert_eq!(out["spec"]["podCIDRs"], json!(["fd00::/64", "10.0.0.0/24"]));
    }

    #[test]
    fn owner_references_merge_by_uid() {
        let target = json!({"metadata": {"ownerReferences": [{"uid": "1", "name": "a"}]}});
        let patch = json!({"metadata": {"ownerReferences": [{"uid": "1", "controller": true}]}});
        let out = smp(target, patch, "Event");
        assert_eq!(
            out["metadata"]["ownerReferences"],
            json!([{"uid": "1", "name": "a", "controller": true}])
        );
    }

    #[test]
    fn directives_in_new_subtrees_never_reach_the_result() {
        let out = smp(
            json!({"metadata": {"name": "p"}}),
            json!({"spec": {"containers": [{"name": "a", "env": [{"name": "X", "$patch": "delete"}],
                                             "resources": {"$patch": "replace", "limits": {"cpu": "1"}}},
                                            {"$patch": "replace"}]},
                   "metadata": {"$setElementOrder/finalizers": ["x"], "finalizers": ["x"]}}),
            "Pod",
        );
        assert!(!contains_directive(&out), "{out}");
        assert_eq!(
            out["spec"]["containers"][0]["resources"],
            json!({"limits": {"cpu": "1"}})
        );
        assert_eq!(out["metadata"]["finalizers"], json!(["x"]));
    }

    #[test]
    fn strategic_patch_errors_on_bad_input() {
        assert!(matches!(
            strategic_merge_patch(&pod(), &json!([1]), "Pod"),
            Err(PatchError::InvalidPatch(_))
        ));
        assert!(matches!(
            strategic_merge_patch(
                &pod(),
                &json!({"spec": {"containers": [{"image": "x"}]}}),
                "Pod"
            ),
            Err(PatchError::MissingMergeKey { .. })
        ));
        assert!(matches!(
            strategic_merge_patch(&pod(), &json!({"spec": {"containers": ["x"]}}), "Pod"),
            Err(PatchError::InvalidPatch(_))
        ));
        assert!(matches!(
            strategic_merge_patch(&pod(), &json!({"spec": {"$patch": "explode"}}), "Pod"),
            Err(PatchError::InvalidDirective(_))
        ));
        assert!(matches!(
            strategic_merge_patch(
                &pod(),
                &json!({"metadata": {"$setElementOrder": []}}),
                "Pod"
            ),
            Err(PatchError::InvalidDirective(_))
        ));
        assert!(matches!(
            strategic_merge_patch(
                &pod(),
                &json!({"metadata": {"finalizers": [{"a": 1}]}}),
                "Pod"
            ),
            Err(PatchError::InvalidPatch(_))
        ));
    }

    #[test]
    fn strategic_patch_on_unknown_kinds_replaces_lists() {
        let out = smp(
            json!({"subsets": [{"addresses": [{"ip": "1"}]}], "metadata": {"finalizers": ["a"]}}),
            json!({"subsets": [{"addresses": [{"ip": "2"}]}], "metadata": {"finalizers": ["b"]}}),
            "Endpoints",
        );
        assert_eq!(out["subsets"], json!([{"addresses": [{"ip": "2"}]}]));
        assert_eq!(out["metadata"]["finalizers"], json!(["b", "a"]));
    }
}
