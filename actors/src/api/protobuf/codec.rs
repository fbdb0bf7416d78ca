//! The table-driven codec: protobuf bytes of one message to its JSON form and back.

use base64::Engine;
use serde_json::{Map, Number, Value};

use super::forms;
use super::table::{Field, Label, Message, Special, Wire, MESSAGES};
use super::wire::{self, Reader};
use super::ProtobufError;

/// Deeper nesting than any Kubernetes object has (JSONSchemaProps recursion aside) is
/// refused rather than followed down the stack.
const MAX_DEPTH: usize = 100;

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

/// Decode one message; `None` when its JSON form is absent (a zero Time, an empty
/// RawExtension).
pub fn decode(
    msg: &'static Message,
    buf: &[u8],
    depth: usize,
) -> Result<Option<Value>, ProtobufError> {
    if depth > MAX_DEPTH {
        return Err(ProtobufError::TooDeep);
    }
    if msg.special != Special::None {
        return decode_special(msg, buf, depth);
    }
    let mut out = Map::new();
    for item in Reader::new(buf) {
        let (tag, value) = item?;
        let Some(field) = msg.field(tag) else {
            continue;
        };
        match field.label {
            Label::Inline => {
                if let Some(Value::Object(inner)) =
                    scalar_or_message(field, field.wire, value, depth, msg)?
                {
                    out.extend(inner);
                }
            }
            Label::Optional => {
                let Some(v) = scalar_or_message(field, field.wire, value, depth, msg)? else {
                    continue;
                };
                if field.optional && v.as_str() == Some("") {
                    out.remove(field.json);
                    continue;
                }
                match (out.get_mut(field.json), v) {
                    // A message given twice is merged, as protobuf does.
                    (Some(Value::Object(old)), Value::Object(new)) => old.extend(new),
                    (_, v) => {
                        out.insert(field.json.to_string(), v);
                    }
                }
            }
            Label::Repeated => {
                let list = out
                    .entry(field.json)
                    .or_insert_with(|| Value::Array(Vec::new()));
                let Value::Array(list) = list else {
                    continue;
                };
                match (field.wire, value) {
                    // Packed numbers: a run of varints (or doubles) in one length.
                    (Wire::Bool | Wire::Int32 | Wire::Int64, wire::Value::Bytes(mut b)) => {
                        while !b.is_empty() {
                            let v = wire::varint(&mut b)?;
                            list.push(number(field.wire, v));
                        }
                    }
                    (Wire::Double, wire::Value::Bytes(b)) => {
                        if b.len() % 8 != 0 {
                            return Err(ProtobufError::UnexpectedEof);
                        }
                        for c in b.chunks_exact(8) {
                            let mut a = [0u8; 8];
                            a.copy_from_slice(c);
                            list.push(double(f64::from_le_bytes(a)));
                        }
                    }
                    (w, value) => {
                        let v = scalar_or_message(field, w, value, depth, msg)?;
                        list.push(v.unwrap_or(Value::Null));
                    }
                }
            }
            Label::Map => {
                let wire::Value::Bytes(entry) = value else {
                    return Err(wrong_wire(field, msg, value.wire_type()));
                };
                let (mut key, mut val) = (String::new(), None);
                for item in Reader::new(entry) {
                    match item? {
                        (1, wire::Value::Bytes(k)) => key = String::from_utf8_lossy(k).into_owned(),
                        (2, v) => val = scalar_or_message(field, field.wire, v, depth, msg)?,
                        _ => {}
                    }
                }
                let val = val.unwrap_or_else(|| default_of(field.wire));
                let map = out
                    .entry(field.json)
                    .or_insert_with(|| Value::Object(Map::new()));
                if let Value::Object(map) = map {
                    map.insert(key, val);
                }
            }
        }
    }
    // Empty repeated fields and maps are what JSON omits.
    out.retain(|_, v| !matches!(v, Value::Array(a) if a.is_empty()));
    Ok(Some(Value::Object(out)))
}

fn default_of(w: Wire) -> Value {
    match w {
        Wire::Bool => Value::Bool(false),
        Wire::Int32 | Wire::Int64 | Wire::Double => Value::from(0),
        Wire::String | Wire::Bytes => Value::from(""),
        Wire::Message(i) => match MESSAGES[i].special {
            Special::Quantity => Value::from("0"),
            Special::IntOrString => Value::from(0),
            Special::None => Value::Object(Map::new()),
            _ => Value::Null,
        },
    }
}

fn number(w: Wire, v: u64) -> Value {
    match w {
        Wire::Bool => Value::Bool(v != 0),
        Wire::Int32 => Value::from(v as i64 as i32),
        _ => Value::from(v as i64),
    }
}

fn double(f: f64) -> Value {
    Number::from_f64(f)
        .map(Value::Number)
        .unwrap_or(Value::Null)
}

fn wrong_wire(field: &Field, msg: &Message, wire: u8) -> ProtobufError {
    ProtobufError::WrongWireType {
        wire,
        field: format!("{}.{}", msg.name, field.json),
    }
}

fn scalar_or_message(
    field: &Field,
    w: Wire,
    value: wire::Value<'_>,
    depth: usize,
    msg: &Message,
) -> Result<Option<Value>, ProtobufError> {
    Ok(Some(match (w, value) {
        (Wire::Bool | Wire::Int32 | Wire::Int64, wire::Value::Varint(v)) => number(w, v),
        (Wire::Double, wire::Value::Fixed64(v)) => double(f64::from_bits(v)),
        (Wire::String, wire::Value::Bytes(b)) => {
            Value::from(String::from_utf8_lossy(b).into_owned())
        }
        (Wire::Bytes, wire::Value::Bytes(b)) => Value::from(b64().encode(b)),
        (Wire::Message(i), wire::Value::Bytes(b)) => return decode(&MESSAGES[i], b, depth + 1),
        (_, value) => return Err(wrong_wire(field, msg, value.wire_type())),
    }))
}

/// The integer and string fields of a helper message, by tag.
#[derive(Default)]
struct Parts {
    ints: [Option<i64>; 4],
    bytes: [Option<Vec<u8>>; 4],
}

fn parts(buf: &[u8]) -> Result<Parts, ProtobufError> {
    let mut p = Parts::default();
    for item in Reader::new(buf) {
        let (tag, value) = item?;
        let Some(i) = usize::try_from(tag).ok().filter(|t| *t < 4) else {
            continue;
        };
        match value {
            wire::Value::Varint(v) => p.ints[i] = Some(v as i64),
            wire::Value::Bytes(b) => p.bytes[i] = Some(b.to_vec()),
            _ => {}
        }
    }
    Ok(p)
}

fn decode_special(
    msg: &'static Message,
    buf: &[u8],
    depth: usize,
) -> Result<Option<Value>, ProtobufError> {
    let p = parts(buf)?;
    let text = |i: usize| {
        p.bytes[i]
            .as_deref()
            .map(|b| String::from_utf8_lossy(b).into_owned())
    };
    Ok(match msg.special {
        Special::Time | Special::MicroTime => {
            if p.ints[1].is_none() && p.ints[2].is_none() {
                return Ok(None);
            }
            let (s, n) = (p.ints[1].unwrap_or(0), p.ints[2].unwrap_or(0) as i32);
            forms::time_to_json(s, n, msg.special == Special::MicroTime).map(Value::from)
        }
        Special::Duration => Some(Value::from(forms::duration_to_json(p.ints[1].unwrap_or(0)))),
        Special::Quantity => Some(Value::from(text(1).unwrap_or_else(|| "0".into()))),
        Special::IntOrString => Some(if p.ints[1] == Some(1) {
            Value::from(text(3).unwrap_or_default())
        } else {
            Value::from(p.ints[2].unwrap_or(0) as i32)
        }),
        Special::RawExtension | Special::RawJson => match p.bytes[1].as_deref() {
            None | Some([]) => None,
            Some(raw) if raw.starts_with(super::MAGIC) && msg.special == Special::RawExtension => {
                Some(super::decode_nested(raw, depth + 1)?)
            }
            Some(raw) => Some(
                serde_json::from_slice(raw)
                    .map_err(|e| ProtobufError::EmbeddedJson(e.to_string()))?,
            ),
        },
        Special::None => decode(msg, buf, depth)?,
    })
}

/// Encode a JSON value as the message `msg`.
pub fn encode(
    msg: &'static Message,
    v: &Value,
    out: &mut Vec<u8>,
    depth: usize,
) -> Result<(), ProtobufError> {
    if depth > MAX_DEPTH {
        return Err(ProtobufError::TooDeep);
    }
    if msg.special != Special::None {
        return encode_special(msg, v, out);
    }
    let obj = match v {
        Value::Object(o) => o,
        Value::Null => return Ok(()),
        other => return Err(mismatch(msg.name, other)),
    };
    for field in msg.fields {
        if field.label == Label::Inline {
            encode_value(field, v, out, depth)?;
            continue;
        }
        let Some(v) = obj.get(field.json).filter(|v| !v.is_null()) else {
            continue;
        };
        match field.label {
            Label::Optional | Label::Inline => encode_value(field, v, out, depth)?,
            Label::Repeated => {
                let Value::Array(items) = v else {
                    return Err(mismatch(field.json, v));
                };
                for item in items {
                    encode_value(field, item, out, depth)?;
                }
            }
            Label::Map => {
                let Value::Object(map) = v else {
                    return Err(mismatch(field.json, v));
                };
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort();
                for k in keys {
                    let mut entry = Vec::new();
                    wire::put_bytes(&mut entry, 1, k.as_bytes());
                    let value_field = Field {
                        tag: 2,
                        json: field.json,
                        wire: field.wire,
                        label: Label::Optional,
                        optional: false,
                    };
                    encode_value(&value_field, &map[k], &mut entry, depth)?;
                    wire::put_bytes(out, field.tag, &entry);
                }
            }
        }
    }
    Ok(())
}

fn mismatch(what: &str, v: &Value) -> ProtobufError {
    let kind = match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    };
    ProtobufError::Mismatch {
        field: what.to_string(),
        found: kind,
    }
}

fn integer(field: &Field, v: &Value) -> Result<i64, ProtobufError> {
    match v {
        Value::Number(n) => n
            .as_i64()
            .or_else(|| n.as_u64().map(|u| u as i64))
            .or_else(|| n.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64))
            .ok_or_else(|| mismatch(field.json, v)),
        _ => Err(mismatch(field.json, v)),
    }
}

fn encode_value(
    field: &Field,
    v: &Value,
    out: &mut Vec<u8>,
    depth: usize,
) -> Result<(), ProtobufError> {
    match field.wire {
        Wire::Bool => {
            let b = v.as_bool().ok_or_else(|| mismatch(field.json, v))?;
            wire::put_varint_field(out, field.tag, u64::from(b));
        }
        Wire::Int32 => {
            let n = integer(field, v)? as i32;
            wire::put_varint_field(out, field.tag, i64::from(n) as u64);
        }
        Wire::Int64 => wire::put_varint_field(out, field.tag, integer(field, v)? as u64),
        Wire::Double => {
            let f = v.as_f64().ok_or_else(|| mismatch(field.json, v))?;
            wire::put_double(out, field.tag, f);
        }
        Wire::String => {
            let s = v.as_str().ok_or_else(|| mismatch(field.json, v))?;
            wire::put_bytes(out, field.tag, s.as_bytes());
        }
        Wire::Bytes => {
            let s = v.as_str().ok_or_else(|| mismatch(field.json, v))?;
            let b = b64()
                .decode(s)
                .map_err(|e| ProtobufError::Base64(format!("{}: {e}", field.json)))?;
            wire::put_bytes(out, field.tag, &b);
        }
        Wire::Message(i) => {
            let mut inner = Vec::new();
            encode(&MESSAGES[i], v, &mut inner, depth + 1)?;
            wire::put_bytes(out, field.tag, &inner);
        }
    }
    Ok(())
}

fn encode_special(
    msg: &'static Message,
    v: &Value,
    out: &mut Vec<u8>,
) -> Result<(), ProtobufError> {
    match msg.special {
        Special::Time | Special::MicroTime => {
            let s = v.as_str().ok_or_else(|| mismatch(msg.name, v))?;
            let (secs, nanos) =
                forms::time_from_json(s).ok_or_else(|| ProtobufError::BadTime(s.to_string()))?;
            wire::put_varint_field(out, 1, secs as u64);
            wire::put_varint_field(out, 2, i64::from(nanos) as u64);
        }
        Special::Duration => {
            let s = v.as_str().ok_or_else(|| mismatch(msg.name, v))?;
            let d = forms::duration_from_json(s)
                .ok_or_else(|| ProtobufError::BadDuration(s.to_string()))?;
            wire::put_varint_field(out, 1, d as u64);
        }
        Special::Quantity => {
            let s = match v {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                other => return Err(mismatch(msg.name, other)),
            };
            wire::put_bytes(out, 1, s.as_bytes());
        }
        Special::IntOrString => match v {
            Value::String(s) => {
                wire::put_varint_field(out, 1, 1);
                wire::put_varint_field(out, 2, 0);
                wire::put_bytes(out, 3, s.as_bytes());
            }
            Value::Number(_) => {
                let f = Field {
                    tag: 2,
                    json: msg.name,
                    wire: Wire::Int32,
                    label: Label::Optional,
                    optional: false,
                };
                wire::put_varint_field(out, 1, 0);
                encode_value(&f, v, out, 0)?;
                wire::put_bytes(out, 3, b"");
            }
            other => return Err(mismatch(msg.name, other)),
        },
        Special::RawExtension | Special::RawJson => {
            wire::put_bytes(out, 1, v.to_string().as_bytes());
        }
        Special::None => unreachable!("only special messages come here"),
    }
    Ok(())
}
