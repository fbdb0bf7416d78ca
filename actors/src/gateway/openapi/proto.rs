//! `/openapi/v2` in protobuf (`application/com.github.proto-openapi.spec.v2@v1.0+protobuf`),
//! which client-go's `OpenAPISchema()` asks for and decodes as gnostic's `openapi.v2.Document`
//! with no JSON fallback. A small encoder from the JSON document: the field numbers are
//! those of gnostic's `OpenAPIv2.proto`; vendor extensions travel as YAML text (JSON is
//! YAML), as gnostic's `Any.yaml` carries them.

use serde_json::{Map, Value};

/// One protobuf message being written.
#[derive(Default)]
struct Msg(Vec<u8>);

impl Msg {
    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.0.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
    }

    fn key(&mut self, field: u32, wire: u8) {
        self.varint((u64::from(field) << 3) | u64::from(wire));
    }

    fn bytes(&mut self, field: u32, b: &[u8]) {
        self.key(field, 2);
        self.varint(b.len() as u64);
        self.0.extend_from_slice(b);
    }

    fn string(&mut self, field: u32, s: &str) {
        if !s.is_empty() {
            self.bytes(field, s.as_bytes());
        }
    }

    fn message(&mut self, field: u32, m: Msg) {
        self.bytes(field, &m.0);
    }

    fn bool(&mut self, field: u32, b: bool) {
        if b {
            self.key(field, 0);
            self.varint(1);
        }
    }

    fn int64(&mut self, field: u32, v: i64) {
        if v != 0 {
            self.key(field, 0);
            self.varint(v as u64);
        }
    }

    fn double(&mut self, field: u32, v: f64) {
        if v != 0.0 {
            self.key(field, 1);
            self.0.extend_from_slice(&v.to_le_bytes());
        }
    }

    /// A string field taken from `obj[key]`, if it is a string.
    fn str_of(&mut self, field: u32, obj: &Map<String, Value>, key: &str) {
        if let Some(s) = obj.get(key).and_then(Value::as_str) {
            self.string(field, s);
        }
    }

    fn strings_of(&mut self, field: u32, obj: &Map<String, Value>, key: &str) {
        for s in obj.get(key).and_then(Value::as_array).into_iter().flatten() {
            if let Some(s) = s.as_str() {
                self.bytes(field, s.as_bytes());
            }
        }
    }

    fn bool_of(&mut self, field: u32, obj: &Map<String, Value>, key: &str) {
        self.bool(
            field,
            obj.get(key).and_then(Value::as_bool).unwrap_or(false),
        );
    }
}

/// gnostic `Any`: the value as YAML text (field 2).
fn any(v: &Value) -> Msg {
    let mut m = Msg::default();
    m.string(2, &v.to_string());
    m
}

/// Vendor extensions (`x-...` keys) as repeated `NamedAny` in `field`.
fn extensions(m: &mut Msg, field: u32, obj: &Map<String, Value>) {
    for (k, v) in obj.iter().filter(|(k, _)| k.starts_with("x-")) {
        let mut named = Msg::default();
        named.string(1, k);
        named.message(2, any(v));
        m.message(field, named);
    }
}

fn obj(v: &Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap_or_default()
}

/// Encodes a Swagger 2.0 document (as `/openapi/v2` serves it in JSON).
pub fn encode_document(doc: &Value) -> Vec<u8> {
    let d = obj(doc);
    let mut m = Msg::default();
    m.str_of(1, &d, "swagger");
    if let Some(info) = d.get("info").and_then(Value::as_object) {
        let mut i = Msg::default();
        i.str_of(1, info, "title");
        i.str_of(2, info, "version");
        i.str_of(3, info, "description");
        extensions(&mut i, 7, info);
        m.message(2, i);
    }
    m.str_of(3, &d, "host");
    m.str_of(4, &d, "basePath");
    m.strings_of(5, &d, "schemes");
    m.strings_of(6, &d, "consumes");
    m.strings_of(7, &d, "produces");
    if let Some(paths) = d.get("paths").and_then(Value::as_object) {
        let mut p = Msg::default();
        for (path, item) in paths {
            let mut named = Msg::default();
            named.string(1, path);
            named.message(2, path_item(&obj(item)));
            p.message(2, named);
        }
        m.message(8, p);
    }
    if let Some(defs) = d.get("definitions").and_then(Value::as_object) {
        m.message(9, named_schemas(defs));
    }
    extensions(&mut m, 16, &d);
    m.0
}

/// `Definitions` and `Properties` alike: repeated `NamedSchema` in field 1.
fn named_schemas(map: &Map<String, Value>) -> Msg {
    let mut out = Msg::default();
    for (name, s) in map {
        let mut named = Msg::default();
        named.string(1, name);
        named.message(2, schema(s));
        out.message(1, named);
    }
    out
}

fn path_item(item: &Map<String, Value>) -> Msg {
    let mut m = Msg::default();
    m.str_of(1, item, "$ref");
    for (method, field) in [
        ("get", 2),
        ("put", 3),
        ("post", 4),
        ("delete", 5),
        ("options", 6),
        ("head", 7),
        ("patch", 8),
    ] {
        if let Some(op) = item.get(method).and_then(Value::as_object) {
            m.message(field, operation(op));
        }
    }
    for p in item
        .get("parameters")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        m.message(9, parameters_item(&obj(p)));
    }
    extensions(&mut m, 10, item);
    m
}

fn operation(op: &Map<String, Value>) -> Msg {
    let mut m = Msg::default();
    m.strings_of(1, op, "tags");
    m.str_of(2, op, "summary");
    m.str_of(3, op, "description");
    m.str_of(5, op, "operationId");
    m.strings_of(6, op, "produces");
    m.strings_of(7, op, "consumes");
    for p in op
        .get("parameters")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        m.message(8, parameters_item(&obj(p)));
    }
    if let Some(responses) = op.get("responses").and_then(Value::as_object) {
        let mut rs = Msg::default();
        for (code, r) in responses {
            let r = obj(r);
            let mut resp = Msg::default();
            resp.str_of(1, &r, "description");
            if let Some(s) = r.get("schema") {
                let mut item = Msg::default();
                item.message(1, schema(s));
                resp.message(2, item);
            }
            extensions(&mut resp, 5, &r);
            let mut value = Msg::default();
            value.message(1, resp);
            let mut named = Msg::default();
            named.string(1, code);
            named.message(2, value);
            rs.message(1, named);
        }
        m.message(9, rs);
    }
    m.strings_of(10, op, "schemes");
    m.bool_of(11, op, "deprecated");
    extensions(&mut m, 13, op);
    m
}

/// `ParametersItem` → `Parameter` → a body parameter, or a query or path one.
fn parameters_item(p: &Map<String, Value>) -> Msg {
    let mut param = Msg::default();
    match p.get("in").and_then(Value::as_str).unwrap_or("") {
        "body" => {
            let mut b = Msg::default();
            b.str_of(1, p, "description");
            b.str_of(2, p, "name");
            b.str_of(3, p, "in");
            b.bool_of(4, p, "required");
            if let Some(s) = p.get("schema") {
                b.message(5, schema(s));
            }
            extensions(&mut b, 6, p);
            param.message(1, b);
        }
        location => {
            // Query and path sub-schemas share their first fields; `allowEmptyValue`
            // (5) exists only on the query one, shifting the rest by one.
            let query = location != "path";
            let shift = u32::from(query);
            let mut s = Msg::default();
            s.bool_of(1, p, "required");
            s.str_of(2, p, "in");
            s.str_of(3, p, "description");
            s.str_of(4, p, "name");
            s.str_of(5 + shift, p, "type");
            s.str_of(6 + shift, p, "format");
            s.bool_of(19 + shift, p, "uniqueItems");
            extensions(&mut s, 22 + shift, p);
            let mut non_body = Msg::default();
            non_body.message(if query { 3 } else { 4 }, s);
            param.message(2, non_body);
        }
    }
    let mut item = Msg::default();
    item.message(1, param);
    item
}

fn schema(v: &Value) -> Msg {
    let s = obj(v);
    let mut m = Msg::default();
    m.str_of(1, &s, "$ref");
    m.str_of(2, &s, "format");
    m.str_of(3, &s, "title");
    m.str_of(4, &s, "description");
    if let Some(d) = s.get("default") {
        m.message(5, any(d));
    }
    let num = |k: &str| s.get(k).and_then(Value::as_f64).unwrap_or(0.0);
    let int = |k: &str| s.get(k).and_then(Value::as_i64).unwrap_or(0);
    m.double(6, num("multipleOf"));
    m.double(7, num("maximum"));
    m.bool_of(8, &s, "exclusiveMaximum");
    m.double(9, num("minimum"));
    m.bool_of(10, &s, "exclusiveMinimum");
    m.int64(11, int("maxLength"));
    m.int64(12, int("minLength"));
    m.str_of(13, &s, "pattern");
    m.int64(14, int("maxItems"));
    m.int64(15, int("minItems"));
    m.bool_of(16, &s, "uniqueItems");
    m.int64(17, int("maxProperties"));
    m.int64(18, int("minProperties"));
    m.strings_of(19, &s, "required");
    for e in s
        .get("enum")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        m.message(20, any(e));
    }
    match s.get("additionalProperties") {
        Some(Value::Bool(b)) => {
            let mut a = Msg::default();
            a.key(2, 0);
            a.varint(u64::from(*b));
            m.message(21, a);
        }
        Some(other @ Value::Object(_)) => {
            let mut a = Msg::default();
            a.message(1, schema(other));
            m.message(21, a);
        }
        _ => {}
    }
    match s.get("type") {
        Some(Value::String(t)) => {
            let mut ty = Msg::default();
            ty.string(1, t);
            m.message(22, ty);
        }
        Some(Value::Array(ts)) => {
            let mut ty = Msg::default();
            for t in ts.iter().filter_map(Value::as_str) {
                ty.bytes(1, t.as_bytes());
            }
            m.message(22, ty);
        }
        _ => {}
    }
    match s.get("items") {
        Some(Value::Array(items)) => {
            let mut it = Msg::default();
            for i in items {
                it.message(1, schema(i));
            }
            m.message(23, it);
        }
        Some(item @ Value::Object(_)) => {
            let mut it = Msg::default();
            it.message(1, schema(item));
            m.message(23, it);
        }
        _ => {}
    }
    for a in s
        .get("allOf")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        m.message(24, schema(a));
    }
    if let Some(props) = s.get("properties").and_then(Value::as_object) {
        m.message(25, named_schemas(props));
    }
    m.str_of(26, &s, "discriminator");
    m.bool_of(27, &s, "readOnly");
    if let Some(e) = s.get("example") {
        m.message(30, any(e));
    }
    extensions(&mut m, 31, &s);
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A minimal protobuf reader for the tests: the fields of one message.
    fn fields(mut b: &[u8]) -> Vec<(u32, Vec<u8>)> {
        fn varint(b: &mut &[u8]) -> u64 {
            let mut v = 0u64;
            let mut shift = 0;
            loop {
                let byte = b[0];
                *b = &b[1..];
                v |= u64::from(byte & 0x7f) << shift;
                if byte < 0x80 {
                    return v;
                }
                shift += 7;
            }
        }
        let mut out = Vec::new();
        while !b.is_empty() {
            let key = varint(&mut b);
            let (field, wire) = ((key >> 3) as u32, key & 7);
            match wire {
                0 => out.push((field, varint(&mut b).to_le_bytes().to_vec())),
                1 => {
                    out.push((field, b[..8].to_vec()));
                    b = &b[8..];
                }
                2 => {
                    let len = varint(&mut b) as usize;
                    out.push((field, b[..len].to_vec()));
                    b = &b[len..];
                }
                _ => panic!("wire type {wire}"),
            }
        }
        out
    }

    fn get(b: &[u8], field: u32) -> Vec<Vec<u8>> {
        fields(b)
            .into_iter()
            .filter(|(f, _)| *f == field)
            .map(|(_, v)| v)
            .collect()
    }

    #[test]
    fn a_document_encodes_with_gnostic_field_numbers() {
        let doc = json!({
            "swagger": "2.0",
            "info": {"title": "Kubernetes", "version": "v1.33.0"},
            "paths": {"/api/v1/pods": {"get": {"operationId": "listCoreV1PodForAllNamespaces",
                "parameters": [{"name": "watch", "in": "query", "type": "boolean", "uniqueItems": true}],
                "responses": {"200": {"description": "OK", "schema": {"$ref": "#/definitions/P"}}},
                "x-kubernetes-action": "list"}}},
            "definitions": {"P": {"type": "object", "properties": {"spec": {"type": "string"}},
                "x-kubernetes-group-version-kind": [{"group": "", "kind": "Pod", "version": "v1"}]}},
        });
        let b = encode_document(&doc);
        assert_eq!(get(&b, 1), vec![b"2.0".to_vec()]);
        let info = &get(&b, 2)[0];
        assert_eq!(get(info, 1), vec![b"Kubernetes".to_vec()]);
        // paths → NamedPathItem → PathItem.get → Operation.operation_id
        let paths = &get(&b, 8)[0];
        let named = &get(paths, 2)[0];
        assert_eq!(get(named, 1), vec![b"/api/v1/pods".to_vec()]);
        let op = &get(&get(named, 2)[0], 2)[0];
        assert_eq!(get(op, 5), vec![b"listCoreV1PodForAllNamespaces".to_vec()]);
        // the query parameter: ParametersItem.parameter.non_body.query.name
        let param = &get(&get(&get(&get(op, 8)[0], 1)[0], 2)[0], 3)[0];
        assert_eq!(get(param, 4), vec![b"watch".to_vec()]);
        assert_eq!(get(param, 6), vec![b"boolean".to_vec()]);
        let ext = &get(op, 13)[0];
        assert_eq!(get(ext, 1), vec![b"x-kubernetes-action".to_vec()]);
        assert_eq!(get(&get(ext, 2)[0], 2), vec![b"\"list\"".to_vec()]);
        // definitions → NamedSchema → Schema: type, properties, vendor extension
        let def = &get(&get(&b, 9)[0], 1)[0];
        let schema = &get(def, 2)[0];
        assert_eq!(get(&get(schema, 22)[0], 1), vec![b"object".to_vec()]);
        let prop = &get(&get(schema, 25)[0], 1)[0];
        assert_eq!(get(prop, 1), vec![b"spec".to_vec()]);
        let gvk = &get(schema, 31)[0];
        assert_eq!(
            get(gvk, 1),
            vec![b"x-kubernetes-group-version-kind".to_vec()]
        );
    }
}
