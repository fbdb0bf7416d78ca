//! Kubernetes' protobuf encoding (`application/vnd.kubernetes.protobuf`) for every kind
//! k8s-pb knows, request and response bodies alike.
//!
//! A body is the magic `k8s\0` followed by a `runtime.Unknown` envelope: the object's
//! apiVersion and kind, and its message in `raw`. The messages are not decoded into
//! prost structs but walked with a table generated at build time from k8s-pb's prost types
//! (tags, wire types, nested messages) with k8s-openapi's JSON field names, so the result
//! is the object's JSON form, the one the rest of the gateway works on. apimachinery's
//! helper messages take their JSON forms: Time and MicroTime as RFC 3339, Duration as Go
//! prints it, Quantity as its string, IntOrString as a number or string, RawExtension and
//! FieldsV1 as the embedded JSON, bytes as base64.
//!
//! Watch events travel as length-prefixed `WatchEvent` frames (4 bytes big-endian, then
//! the message without envelope), their object an enveloped message in `object.raw`.

mod codec;
mod forms;
pub mod table;
mod wire;

use std::collections::HashMap;
use std::sync::OnceLock;

use serde_json::Value;

use table::{Message, MESSAGES};

/// The media type of Kubernetes protobuf bodies.
pub const MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf";
/// The media type of a protobuf watch stream.
pub const WATCH_MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf;stream=watch";

/// `k8s\0`: the prefix of every Kubernetes protobuf body.
pub const MAGIC: &[u8] = b"k8s\x00";

/// What can be wrong with a protobuf body; the texts are the ones Go's decoders give
/// where there is one.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ProtobufError {
    #[error("empty data")]
    Empty,
    #[error("empty body")]
    EmptyBody,
    #[error(
        "provided data does not appear to be a protobuf message, expected prefix [107 56 115 0]"
    )]
    NoMagic,
    #[error("unexpected EOF")]
    UnexpectedEof,
    #[error("proto: integer overflow")]
    Overflow,
    #[error("proto: negative length found during unmarshaling")]
    NegativeLength,
    #[error("proto: illegal wireType {0}")]
    IllegalWireType(u8),
    #[error("proto: illegal tag 0 (wire type {wire})")]
    IllegalTag { wire: u8 },
    #[error("proto: wrong wireType = {wire} for field {field}")]
    WrongWireType { wire: u8, field: String },
    #[error("proto: message nested too deeply")]
    TooDeep,
    #[error("Object 'Kind' is missing in protobuf envelope")]
    MissingKind,
    #[error("no kind {kind:?} is registered for version {api_version:?}")]
    UnknownKind { api_version: String, kind: String },
    #[error("embedded JSON is invalid: {0}")]
    EmbeddedJson(String),
    #[error("json: cannot unmarshal {found} into the protobuf field {field}")]
    Mismatch { field: String, found: &'static str },
    #[error("invalid base64 in {0}")]
    Base64(String),
    #[error("invalid time {0:?}")]
    BadTime(String),
    #[error("invalid duration {0:?}")]
    BadDuration(String),
}

/// The envelope of a body: the object's type and its message bytes.
#[derive(Debug, PartialEq)]
pub struct Envelope<'a> {
    pub api_version: String,
    pub kind: String,
    pub raw: &'a [u8],
}

impl Envelope<'_> {
    /// The version part of `apiVersion` (`v1` of `policy/v1`).
    pub fn version(&self) -> &str {
        self.api_version.rsplit('/').next().unwrap_or("")
    }
}

/// Strip the magic and read the `runtime.Unknown` envelope.
pub fn envelope(body: &[u8]) -> Result<Envelope<'_>, ProtobufError> {
    if body.is_empty() {
        return Err(ProtobufError::Empty);
    }
    let Some(rest) = body.strip_prefix(MAGIC) else {
        return Err(ProtobufError::NoMagic);
    };
    if rest.is_empty() {
        return Err(ProtobufError::EmptyBody);
    }
    let mut env = Envelope {
        api_version: String::new(),
        kind: String::new(),
        raw: &[],
    };
    for item in wire::Reader::new(rest) {
        match item? {
            (1, wire::Value::Bytes(type_meta)) => {
                for f in wire::Reader::new(type_meta) {
                    match f? {
                        (1, wire::Value::Bytes(v)) => {
                            env.api_version = String::from_utf8_lossy(v).into_owned()
                        }
                        (2, wire::Value::Bytes(v)) => {
                            env.kind = String::from_utf8_lossy(v).into_owned()
                        }
                        _ => {}
                    }
                }
            }
            (2, wire::Value::Bytes(raw)) => env.raw = raw,
            _ => {}
        }
    }
    Ok(env)
}

/// The k8s-pb module of an API group version (`rbac.authorization.k8s.io/v1` →
/// `api/rbac/v1`).
fn module_of(api_version: &str) -> String {
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    match group {
        "" => format!("api/core/{version}"),
        "meta.k8s.io" => format!("apimachinery/pkg/apis/meta/{version}"),
        "metrics.k8s.io" => format!("metrics/pkg/apis/metrics/{version}"),
        "apiextensions.k8s.io" => {
            format!("apiextensions_apiserver/pkg/apis/apiextensions/{version}")
        }
        "apiregistration.k8s.io" => format!("kube_aggregator/pkg/apis/apiregistration/{version}"),
        "internal.apiserver.k8s.io" => format!("api/apiserverinternal/{version}"),
        g => format!("api/{}/{version}", g.split('.').next().unwrap_or(g)),
    }
}

/// `(module, lowercase message name)` → message.
fn index() -> &'static HashMap<(&'static str, String), &'static Message> {
    static INDEX: OnceLock<HashMap<(&'static str, String), &'static Message>> = OnceLock::new();
    INDEX.get_or_init(|| {
        MESSAGES
            .iter()
            .map(|m| ((m.module, m.name.to_lowercase()), m))
            .collect()
    })
}

/// The message of a kind: in its group version's module, else (DeleteOptions, Status,
/// WatchEvent, ... which every group version has) in meta/v1.
pub fn message_for(api_version: &str, kind: &str) -> Option<&'static Message> {
    let kind = kind.to_lowercase();
    let module = module_of(api_version);
    let idx = index();
    idx.get(&(module.as_str(), kind.clone()))
        .or_else(|| idx.get(&("apimachinery/pkg/apis/meta/v1", kind)))
        .copied()
}

/// Decode the message of an envelope into the object's JSON, with apiVersion and kind.
pub fn decode_envelope(env: &Envelope<'_>) -> Result<Value, ProtobufError> {
    decode_at(env, 0)
}

fn decode_at(env: &Envelope<'_>, depth: usize) -> Result<Value, ProtobufError> {
    if env.kind.is_empty() {
        return Err(ProtobufError::MissingKind);
    }
    let msg =
        message_for(&env.api_version, &env.kind).ok_or_else(|| ProtobufError::UnknownKind {
            api_version: env.version().to_string(),
            kind: env.kind.clone(),
        })?;
    let mut obj = match codec::decode(msg, env.raw, depth)? {
        Some(Value::Object(o)) => o,
        _ => serde_json::Map::new(),
    };
    obj.insert("apiVersion".into(), Value::from(env.api_version.clone()));
    obj.insert("kind".into(), Value::from(env.kind.clone()));
    Ok(Value::Object(obj))
}

/// An enveloped object inside a RawExtension.
fn decode_nested(body: &[u8], depth: usize) -> Result<Value, ProtobufError> {
    decode_at(&envelope(body)?, depth)
}

/// Decode a whole body: magic, envelope, message.
pub fn decode(body: &[u8]) -> Result<Value, ProtobufError> {
    decode_envelope(&envelope(body)?)
}

/// Encode an object (its apiVersion and kind say which message) as a protobuf body.
pub fn encode(obj: &Value) -> Result<Vec<u8>, ProtobufError> {
    let api_version = obj.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    let kind = obj
        .get("kind")
        .and_then(Value::as_str)
        .ok_or(ProtobufError::MissingKind)?;
    let msg = message_for(api_version, kind).ok_or_else(|| ProtobufError::UnknownKind {
        api_version: api_version.to_string(),
        kind: kind.to_string(),
    })?;
    let mut raw = Vec::with_capacity(256);
    codec::encode(msg, obj, &mut raw, 0)?;
    Ok(wrap(api_version, kind, &raw))
}

/// A body of a message's bytes: the magic and the `runtime.Unknown` envelope.
pub fn wrap(api_version: &str, kind: &str, raw: &[u8]) -> Vec<u8> {
    let mut type_meta = Vec::new();
    wire::put_bytes(&mut type_meta, 1, api_version.as_bytes());
    wire::put_bytes(&mut type_meta, 2, kind.as_bytes());
    let mut out = Vec::with_capacity(raw.len() + type_meta.len() + 16);
    out.extend_from_slice(MAGIC);
    wire::put_bytes(&mut out, 1, &type_meta);
    wire::put_bytes(&mut out, 2, raw);
    wire::put_bytes(&mut out, 3, b"");
    wire::put_bytes(&mut out, 4, b"");
    out
}

/// One frame of a protobuf watch stream: the length, then a meta/v1 `WatchEvent` whose
/// object is the enveloped object.
pub fn watch_frame(event_type: &str, obj: &Value) -> Result<Vec<u8>, ProtobufError> {
    let object = encode(obj)?;
    let mut raw_extension = Vec::with_capacity(object.len() + 8);
    wire::put_bytes(&mut raw_extension, 1, &object);
    let mut event = Vec::with_capacity(raw_extension.len() + 24);
    wire::put_bytes(&mut event, 1, event_type.as_bytes());
    wire::put_bytes(&mut event, 2, &raw_extension);
    let mut out = Vec::with_capacity(event.len() + 4);
    out.extend_from_slice(&(event.len() as u32).to_be_bytes());
    out.extend_from_slice(&event);
    Ok(out)
}

/// Read one frame of a watch stream back: `(type, object, bytes used)`; `None` until the
/// whole frame is there.
pub fn read_watch_frame(buf: &[u8]) -> Result<Option<(String, Value, usize)>, ProtobufError> {
    let Some(len) = buf.get(..4) else {
        return Ok(None);
    };
    let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
    let Some(event) = buf.get(4..4 + len) else {
        return Ok(None);
    };
    let (mut kind, mut object) = (String::new(), Value::Null);
    for item in wire::Reader::new(event) {
        match item? {
            (1, wire::Value::Bytes(t)) => kind = String::from_utf8_lossy(t).into_owned(),
            (2, wire::Value::Bytes(ext)) => {
                for f in wire::Reader::new(ext) {
                    if let (1, wire::Value::Bytes(raw)) = f? {
                        object = decode(raw)?;
                    }
                }
            }
            _ => {}
        }
    }
    Ok(Some((kind, object, 4 + len)))
}

/// The start of a body for an error message, as kube-apiserver summarises it: hex of the
/// first 30 bytes (text, if it looks like JSON).
pub fn summarize(body: &[u8]) -> String {
    const MAX: usize = 30;
    let head = &body[..body.len().min(MAX)];
    let more = if body.len() > MAX { " ..." } else { "" };
    match body.first() {
        None => "<empty>".into(),
        Some(b'{') => format!("{}{more}", String::from_utf8_lossy(head)),
        Some(_) => {
            let hex: String = head.iter().map(|b| format!("{b:02x}")).collect();
            format!("{hex}{more}")
        }
    }
}

#[cfg(test)]
mod tests;
