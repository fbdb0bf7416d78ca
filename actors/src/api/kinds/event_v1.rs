//! events.k8s.io/v1 Event: a view of the stored core/v1 Events (one store, two views, as
//! kube-apiserver converts between them); decoded and validated in the view's terms,
//! stored and defaulted in the core form.

use chrono::{DateTime, Utc};
use k8s_openapi::api::events;
use serde_json::Value;

use crate::api::events_v1;
use crate::api::resources::{schema_of, ResourceInfo, Storage};
use crate::api::strategy::Strategy;
use crate::api::validation::{self, DecodeError, FieldError};

pub static INFO: ResourceInfo = ResourceInfo {
    group: "events.k8s.io",
    version: "v1",
    name: "events",
    singular: "event",
    kind: "Event",
    namespaced: true,
    short_names: &["ev"],
    subresources: &[],
    has_status_subresource: false,
    field_selectors: &[],
    categories: &[],
    schema: Some(schema_of::<events::v1::Event>),
    strategy: &EventV1Strategy,
    storage: Storage::View { of: "v1" },
};

#[derive(Debug)]
pub struct EventV1Strategy;

impl Strategy for EventV1Strategy {
    fn decode(&self, obj: &Value) -> Result<Vec<String>, DecodeError> {
        validation::round_trip::<events::v1::Event>("Event", events_v1::API_VERSION, obj)
    }

    fn default(&self, obj: &mut Value) {
        super::event::EventStrategy.default(obj);
    }

    fn validate(&self, obj: &Value, old: Option<&Value>) -> Vec<FieldError> {
        super::event::EventStrategy.validate(obj, old)
    }

    fn validate_view_create(&self, view: &Value) -> Vec<FieldError> {
        events_v1::validate_create(view)
    }

    fn columns(&self) -> Vec<Value> {
        super::event::EventStrategy.columns()
    }

    fn cells(&self, obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
        super::event::EventStrategy.cells(&events_v1::to_core(obj), now)
    }

    fn to_view(&self, stored: Value) -> Value {
        events_v1::to_v1(&stored)
    }

    fn stored_from_view(&self, view: Value) -> Value {
        events_v1::to_core(&view)
    }
}
