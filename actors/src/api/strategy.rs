//! What a kind is, beyond its name: the per-kind strategy kube-apiserver keeps in
//! `pkg/registry/<group>/<kind>/strategy.go`. The gateway's generic create, update, patch
//! and table code calls these hooks; a kind overrides the ones it needs.
//!
//! Two ways to write one: [`Strategy`] directly, over the stored JSON (the seed's kinds,
//! whose validators predate the typed objects), or [`TypedStrategy`], over the kind's
//! k8s-openapi type, which a blanket impl adapts: the object is decoded once, defaulted
//! and validated as the typed struct, and encoded back.

use std::fmt::Debug;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use super::patch::ListStrategy;
use super::table;
use super::validation::{self, DecodeError, FieldError};

/// Which part of an object an update writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Main,
    Status,
    /// A namespace's `spec.finalizers` (the `finalize` subresource).
    Finalizers,
    /// A CSR's `status.conditions` (the `approval` subresource).
    Approval,
    /// A pod's `spec.ephemeralContainers` (the `ephemeralcontainers` subresource).
    EphemeralContainers,
}

/// The names an object of the kind may have (`ValidateObjectMeta`'s name function).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameRule {
    Dns1123Label,
    Dns1035Label,
    Dns1123Subdomain,
    /// Any name usable as one path segment (RBAC names such as `system:node`).
    PathSegment,
}

/// How a kind's `scale` subresource maps onto its fields: `spec.replicas`,
/// `status.replicas`, and the selector the Scale's `status.selector` shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScaleMapping {
    /// The selector is a plain label map (ReplicationController) rather than a
    /// `LabelSelector` (apps/v1 kinds).
    pub map_selector: bool,
}

/// The per-kind hooks of the generic store. Every method has the behaviour of a kind
/// with no rules of its own, so a kind overrides only what differs.
pub trait Strategy: Send + Sync + Debug + 'static {
    /// Decode `obj` as the kind's typed struct: a type error is a 400, the unknown field
    /// paths it returns feed `fieldValidation`.
    fn decode(&self, _obj: &Value) -> Result<Vec<String>, DecodeError> {
        Ok(Vec::new())
    }

    /// Whether objects carry `metadata.generation` (kinds with a desired state).
    fn has_generation(&self, obj: &Value) -> bool {
        obj.get("spec").is_some()
    }

    /// Field defaults (Kubernetes' `SetDefaults_*`), applied on create, update and patch
    /// alike; idempotent, never touching status.
    fn default(&self, _obj: &mut Value) {}

    /// What a new object starts with beyond its defaults: create strategies reset status.
    fn prepare_for_create(&self, _obj: &mut Value) {}

    /// [`Strategy::default`] then [`Strategy::prepare_for_create`], as a create runs them;
    /// typed strategies decode the object once for both.
    fn default_for_create(&self, obj: &mut Value) {
        self.default(obj);
        self.prepare_for_create(obj);
    }

    /// What an update through `part` may not change, beyond the generic split between
    /// the main resource and `status`.
    fn prepare_for_update(&self, _old: &Value, _new: &mut Value, _part: Part) {}

    /// The rule for `metadata.name`.
    fn name_rule(&self) -> NameRule {
        NameRule::Dns1123Subdomain
    }

    /// The kind's own validation (object metadata is validated generically before), on
    /// create (`old` = None) and update.
    fn validate(&self, _obj: &Value, _old: Option<&Value>) -> Vec<FieldError> {
        Vec::new()
    }

    /// How the list at `path` (map keys only) merges in a strategic merge patch and is
    /// owned in managedFields; ObjectMeta's lists are handled before this is asked.
    fn list_strategy(&self, _path: &[&str]) -> ListStrategy {
        ListStrategy::Replace
    }

    /// The `scale` subresource, for kinds that have one.
    fn scale(&self) -> Option<ScaleMapping> {
        None
    }

    /// Table column definitions (`kubectl get`).
    fn columns(&self) -> Vec<Value> {
        table::generic_columns()
    }

    /// One Table row, in the order of [`Strategy::columns`].
    fn cells(&self, obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
        table::generic_cells(obj, now)
    }

    /// For a view of another resource's objects: the stored form as this resource shows
    /// it, and back (events.k8s.io/v1 Events over core/v1 ones).
    fn to_view(&self, stored: Value) -> Value {
        stored
    }

    fn stored_from_view(&self, view: Value) -> Value {
        view
    }

    /// Validation of a create through a view, in the view's own terms.
    fn validate_view_create(&self, _view: &Value) -> Vec<FieldError> {
        Vec::new()
    }

    /// The stored object in the kind's current storage version. An object an earlier
    /// skiff stored in an older version (autoscaling/v1 HPAs, before v2 was the stored
    /// one) is converted when it is read, as kube-apiserver decodes whatever version etcd
    /// holds; `None` when `stored` is current, so readers keep sharing the store's copy.
    fn upgrade_stored(&self, _stored: &Value) -> Option<Value> {
        None
    }
}

/// [`Strategy::upgrade_stored`] over a shared object: the same `Arc` when nothing is to
/// be converted.
pub fn current_form(strategy: &dyn Strategy, stored: Arc<Value>) -> Arc<Value> {
    match strategy.upgrade_stored(&stored) {
        Some(upgraded) => Arc::new(upgraded),
        None => stored,
    }
}

/// A kind with no rules of its own (read-only or in-memory resources).
#[derive(Debug)]
pub struct Generic;

impl Strategy for Generic {}

/// A strategy written over the kind's k8s-openapi type; wrapped in [`Typed`] it is a
/// [`Strategy`] that decodes the stored JSON into `Object` for each hook and encodes the
/// result back.
pub trait TypedStrategy: Send + Sync + Debug + 'static {
    type Object: DeserializeOwned + Serialize + Send;

    /// `kind` and `apiVersion` of the type, for decode errors.
    const KIND: &'static str;
    const API_VERSION: &'static str;

    fn has_generation(&self) -> bool {
        true
    }
    fn default(&self, _obj: &mut Self::Object) {}
    fn prepare_for_create(&self, _obj: &mut Self::Object) {}
    fn prepare_for_update(&self, _old: &Self::Object, _new: &mut Self::Object, _part: Part) {}
    fn name_rule(&self) -> NameRule {
        NameRule::Dns1123Subdomain
    }
    fn validate(&self, _obj: &Self::Object, _old: Option<&Self::Object>) -> Vec<FieldError> {
        Vec::new()
    }
    fn list_strategy(&self, _path: &[&str]) -> ListStrategy {
        ListStrategy::Replace
    }
    fn scale(&self) -> Option<ScaleMapping> {
        None
    }
    fn columns(&self) -> Vec<Value> {
        table::generic_columns()
    }
    fn cells(&self, _obj: &Self::Object, raw: &Value, now: DateTime<Utc>) -> Vec<Value> {
        table::generic_cells(raw, now)
    }
    /// See [`Strategy::upgrade_stored`]; works on the raw form, since an older version
    /// does not decode as `Object`.
    fn upgrade_stored(&self, _raw: &Value) -> Option<Value> {
        None
    }
}

/// Decode the stored JSON as `T`; apiVersion and kind are the gateway's to check.
pub fn typed<T: DeserializeOwned>(obj: &Value) -> Option<T> {
    decode_ref(obj).ok()
}

/// Decode `obj` as `T` by reference, without its apiVersion and kind (the typed structs
/// insist on their own, while a stored object may be another version's view): no copy of
/// the JSON is made, which on the write path costs as much as the decode itself.
pub fn decode_ref<T: DeserializeOwned>(obj: &Value) -> Result<T, serde_json::Error> {
    match obj {
        Value::Object(map) => {
            let fields = map
                .iter()
                .filter(|(k, _)| !matches!(k.as_str(), "apiVersion" | "kind"))
                .map(|(k, v)| (k.as_str(), v));
            T::deserialize(serde::de::value::MapDeserializer::<_, serde_json::Error>::new(fields))
        }
        other => T::deserialize(other),
    }
}

/// Encode `typed` back into `obj`, keeping its apiVersion and kind.
fn store_typed<T: Serialize>(typed: &T, obj: &mut Value) {
    let Ok(Value::Object(mut fresh)) = serde_json::to_value(typed) else {
        return;
    };
    if let Some(old) = obj.as_object() {
        for k in ["apiVersion", "kind"] {
            if let Some(v) = old.get(k) {
                fresh.insert(k.to_string(), v.clone());
            }
        }
    }
    *obj = Value::Object(fresh);
}

/// Run `f` on the typed form of `obj` and store the result; an object that does not
/// decode is left alone (decoding has refused it before any hook runs).
fn with_typed<T: DeserializeOwned + Serialize>(obj: &mut Value, f: impl FnOnce(&mut T)) {
    if let Some(mut t) = typed::<T>(obj) {
        f(&mut t);
        store_typed(&t, obj);
    }
}

/// The [`Strategy`] of a [`TypedStrategy`]: `strategy: &Typed(MyKind)`.
#[derive(Debug)]
pub struct Typed<S>(pub S);

impl<S: TypedStrategy> Strategy for Typed<S> {
    fn decode(&self, obj: &Value) -> Result<Vec<String>, DecodeError> {
        validation::round_trip::<S::Object>(S::KIND, S::API_VERSION, obj)
    }
    fn has_generation(&self, _obj: &Value) -> bool {
        TypedStrategy::has_generation(&self.0)
    }
    fn default(&self, obj: &mut Value) {
        with_typed(obj, |t| TypedStrategy::default(&self.0, t));
    }
    fn prepare_for_create(&self, obj: &mut Value) {
        with_typed(obj, |t| TypedStrategy::prepare_for_create(&self.0, t));
    }
    fn default_for_create(&self, obj: &mut Value) {
        with_typed(obj, |t| {
            TypedStrategy::default(&self.0, t);
            TypedStrategy::prepare_for_create(&self.0, t);
        });
    }
    fn prepare_for_update(&self, old: &Value, new: &mut Value, part: Part) {
        if let Some(old) = typed::<S::Object>(old) {
            with_typed(new, |t| {
                TypedStrategy::prepare_for_update(&self.0, &old, t, part)
            });
        }
    }
    fn name_rule(&self) -> NameRule {
        TypedStrategy::name_rule(&self.0)
    }
    fn validate(&self, obj: &Value, old: Option<&Value>) -> Vec<FieldError> {
        let Some(new) = typed::<S::Object>(obj) else {
            return Vec::new();
        };
        let old = old.and_then(typed::<S::Object>);
        TypedStrategy::validate(&self.0, &new, old.as_ref())
    }
    fn list_strategy(&self, path: &[&str]) -> ListStrategy {
        TypedStrategy::list_strategy(&self.0, path)
    }
    fn scale(&self) -> Option<ScaleMapping> {
        TypedStrategy::scale(&self.0)
    }
    fn columns(&self) -> Vec<Value> {
        TypedStrategy::columns(&self.0)
    }
    fn cells(&self, obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
        match typed::<S::Object>(obj) {
            Some(t) => TypedStrategy::cells(&self.0, &t, obj, now),
            // An object that does not decode still gets a whole row: its name and age
            // where the columns have them, the rest empty.
            None => {
                let columns = TypedStrategy::columns(&self.0);
                let generic = table::generic_cells(obj, now);
                columns
                    .iter()
                    .map(|c| match c["name"].as_str() {
                        Some("Name") => generic[0].clone(),
                        Some("Age") => generic[1].clone(),
                        _ => Value::String(String::new()),
                    })
                    .collect()
            }
        }
    }
    fn upgrade_stored(&self, stored: &Value) -> Option<Value> {
        TypedStrategy::upgrade_stored(&self.0, stored)
    }
}
