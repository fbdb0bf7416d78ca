//! The field table generated at build time from k8s-pb's prost types (see
//! `actors/build/protobuf_table.rs`): one entry per message, its fields in tag order.

/// How a field's values travel on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    Bool,
    Int32,
    Int64,
    Double,
    String,
    Bytes,
    /// A nested message: its index in [`MESSAGES`].
    Message(usize),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Label {
    Optional,
    Repeated,
    /// A Go struct embedded with `json:",inline"`: a nested message on the wire whose
    /// fields are the parent's in JSON.
    Inline,
    /// `map<string, V>`: repeated entries with the key at tag 1 and the value at tag 2.
    Map,
}

/// Messages whose JSON form is not an object of their fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Special {
    None,
    /// meta/v1 Time: RFC 3339 to the second.
    Time,
    /// meta/v1 MicroTime: RFC 3339 with microseconds.
    MicroTime,
    /// meta/v1 Duration: Go's duration string (`1h2m3s`).
    Duration,
    /// resource.Quantity: its string.
    Quantity,
    /// intstr.IntOrString: a number or a string.
    IntOrString,
    /// runtime.RawExtension: an embedded object (JSON, or a protobuf envelope).
    RawExtension,
    /// FieldsV1 and apiextensions JSON: embedded JSON.
    RawJson,
}

#[derive(Debug)]
pub struct Field {
    pub tag: u32,
    /// The JSON name, as k8s-openapi (and the API) spells it.
    pub json: &'static str,
    pub wire: Wire,
    pub label: Label,
    /// Optional in k8s-openapi: an empty string here is the proto2 default of a Go
    /// non-pointer field, which JSON would have omitted.
    pub optional: bool,
}

#[derive(Debug)]
pub struct Message {
    /// k8s-pb's module path (`api/core/v1`).
    pub module: &'static str,
    pub name: &'static str,
    pub special: Special,
    pub fields: &'static [Field],
}

impl Message {
    pub fn field(&self, tag: u32) -> Option<&'static Field> {
        self.fields
            .binary_search_by_key(&tag, |f| f.tag)
            .ok()
            .map(|i| &self.fields[i])
    }
}

include!(concat!(env!("OUT_DIR"), "/protobuf_table.rs"));
