//! Decoding the Kubernetes protobuf envelope that kubectl's typed clients send as request
//! bodies (`kubectl create namespace` posts `application/vnd.kubernetes.protobuf`, and
//! client-go only falls back to JSON on a 415 for CBOR, not for protobuf).
//!
//! Only what those clients post is understood: the `runtime.Unknown` envelope, ObjectMeta,
//! the Namespace kind, the RBAC kinds (`kubectl create role|clusterrole|rolebinding|
//! clusterrolebinding`), autoscaling/v1 HorizontalPodAutoscaler (`kubectl autoscale`),
//! SelfSubjectReview (`kubectl auth whoami`) and SelfSubjectAccessReview (`kubectl auth
//! can-i`). Anything else gets a clear 415 asking for JSON.

use serde_json::{json, Map, Value};

/// `k8s\0`: the prefix of every Kubernetes protobuf body.
const MAGIC: &[u8] = b"k8s\x00";

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ProtobufError {
    #[error("not a Kubernetes protobuf body (missing the k8s magic prefix)")]
    NoMagic,
    #[error("truncated protobuf message")]
    Truncated,
    #[error("unsupported protobuf wire type {0}")]
    WireType(u8),
    #[error("field {field} is not valid UTF-8")]
    Utf8 { field: u32 },
    #[error("protobuf request bodies are not accepted for {0}; send application/json")]
    UnsupportedKind(String),
}

enum Field<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed,
}

/// Iterate over the fields of one protobuf message.
struct Fields<'a> {
    buf: &'a [u8],
}

fn varint(buf: &mut &[u8]) -> Result<u64, ProtobufError> {
    let mut out = 0u64;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = buf.split_first().ok_or(ProtobufError::Truncated)?;
        *buf = rest;
        out |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(out);
        }
    }
    Err(ProtobufError::Truncated)
}

impl<'a> Iterator for Fields<'a> {
    type Item = Result<(u32, Field<'a>), ProtobufError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.buf.is_empty() {
            return None;
        }
        Some(self.read())
    }
}

impl<'a> Fields<'a> {
    fn read(&mut self) -> Result<(u32, Field<'a>), ProtobufError> {
        let key = varint(&mut self.buf)?;
        let number = (key >> 3) as u32;
        let field = match (key & 7) as u8 {
            0 => Field::Varint(varint(&mut self.buf)?),
            1 => {
                self.skip(8)?;
                Field::Fixed
            }
            2 => {
                let len = varint(&mut self.buf)? as usize;
                if len > self.buf.len() {
                    return Err(ProtobufError::Truncated);
                }
                let (data, rest) = self.buf.split_at(len);
                self.buf = rest;
                Field::Bytes(data)
            }
            5 => {
                self.skip(4)?;
                Field::Fixed
            }
            other => return Err(ProtobufError::WireType(other)),
        };
        Ok((number, field))
    }

    fn skip(&mut self, n: usize) -> Result<(), ProtobufError> {
        if n > self.buf.len() {
            return Err(ProtobufError::Truncated);
        }
        self.buf = &self.buf[n..];
        Ok(())
    }
}

fn fields(buf: &[u8]) -> Fields<'_> {
    Fields { buf }
}

fn text(field: u32, b: &[u8]) -> Result<String, ProtobufError> {
    String::from_utf8(b.to_vec()).map_err(|_| ProtobufError::Utf8 { field })
}

/// A `map<string,string>` entry.
fn map_entry(b: &[u8]) -> Result<(String, String), ProtobufError> {
    let (mut k, mut v) = (String::new(), String::new());
    for f in fields(b) {
        match f? {
            (1, Field::Bytes(x)) => k = text(1, x)?,
            (2, Field::Bytes(x)) => v = text(2, x)?,
            _ => {}
        }
    }
    Ok((k, v))
}

fn object_meta(b: &[u8]) -> Result<Value, ProtobufError> {
    let mut m = Map::new();
    let mut labels = Map::new();
    let mut annotations = Map::new();
    let mut finalizers = Vec::new();
    for f in fields(b) {
        match f? {
            (1, Field::Bytes(x)) => {
                m.insert("name".into(), json!(text(1, x)?));
            }
            (2, Field::Bytes(x)) => {
                m.insert("generateName".into(), json!(text(2, x)?));
            }
            (3, Field::Bytes(x)) => {
                m.insert("namespace".into(), json!(text(3, x)?));
            }
            (6, Field::Bytes(x)) => {
                m.insert("resourceVersion".into(), json!(text(6, x)?));
            }
            (11, Field::Bytes(x)) => {
                let (k, v) = map_entry(x)?;
                labels.insert(k, json!(v));
            }
            (12, Field::Bytes(x)) => {
                let (k, v) = map_entry(x)?;
                annotations.insert(k, json!(v));
            }
            (14, Field::Bytes(x)) => finalizers.push(json!(text(14, x)?)),
            _ => {}
        }
    }
    for (key, map) in [("labels", labels), ("annotations", annotations)] {
        if !map.is_empty() {
            m.insert(key.into(), Value::Object(map));
        }
    }
    if !finalizers.is_empty() {
        m.insert("finalizers".into(), Value::Array(finalizers));
    }
    // Empty strings are proto3-style defaults, not values the client set.
    m.retain(|_, v| v.as_str() != Some(""));
    Ok(Value::Object(m))
}

fn namespace(raw: &[u8]) -> Result<Value, ProtobufError> {
    let mut obj = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {}});
    for f in fields(raw) {
        match f? {
            (1, Field::Bytes(x)) => obj["metadata"] = object_meta(x)?,
            (2, Field::Bytes(spec)) => {
                let mut fins = Vec::new();
                for sf in fields(spec) {
                    if let (1, Field::Bytes(x)) = sf? {
                        fins.push(json!(text(1, x)?));
                    }
                }
                if !fins.is_empty() {
                    obj["spec"] = json!({"finalizers": fins});
                }
            }
            _ => {}
        }
    }
    Ok(obj)
}

/// The strings of a repeated string field `number` of one message.
fn strings(b: &[u8], number: u32) -> Result<Vec<Value>, ProtobufError> {
    let mut out = Vec::new();
    for f in fields(b) {
        if let (n, Field::Bytes(x)) = f? {
            if n == number {
                out.push(json!(text(n, x)?));
            }
        }
    }
    Ok(out)
}

/// A message of string fields, by field number and JSON name; unset ones are left out.
fn string_fields(b: &[u8], names: &[(u32, &str)]) -> Result<Value, ProtobufError> {
    let mut m = Map::new();
    for f in fields(b) {
        if let (n, Field::Bytes(x)) = f? {
            // Go writes unset strings as empty ones; JSON leaves them out (omitempty).
            if let Some((_, name)) = names.iter().find(|(num, _)| *num == n) {
                if !x.is_empty() {
                    m.insert((*name).to_string(), json!(text(n, x)?));
                }
            }
        }
    }
    Ok(Value::Object(m))
}

/// rbac/v1 PolicyRule: its repeated string fields.
fn policy_rule(b: &[u8]) -> Result<Value, ProtobufError> {
    let mut m = Map::new();
    let names = [
        (1, "verbs"),
        (2, "apiGroups"),
        (3, "resources"),
        (4, "resourceNames"),
        (5, "nonResourceURLs"),
    ];
    for (n, name) in names {
        let values = strings(b, n)?;
        if !values.is_empty() || n == 1 {
            m.insert(name.to_string(), Value::Array(values));
        }
    }
    Ok(Value::Object(m))
}

/// rbac/v1 AggregationRule: label selectors (matchLabels) of the roles to aggregate.
fn aggregation_rule(b: &[u8]) -> Result<Value, ProtobufError> {
    let mut selectors = Vec::new();
    for f in fields(b) {
        if let (1, Field::Bytes(sel)) = f? {
            let mut labels = Map::new();
            for sf in fields(sel) {
                if let (1, Field::Bytes(x)) = sf? {
                    let (k, v) = map_entry(x)?;
                    labels.insert(k, json!(v));
                }
            }
            selectors.push(json!({ "matchLabels": labels }));
        }
    }
    Ok(json!({ "clusterRoleSelectors": selectors }))
}

/// Role and ClusterRole: metadata, rules, and a ClusterRole's aggregation rule.
fn role(kind: &str, raw: &[u8]) -> Result<Value, ProtobufError> {
    let mut obj = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": kind,
        "metadata": {}, "rules": []});
    let mut rules = Vec::new();
    for f in fields(raw) {
        match f? {
            (1, Field::Bytes(x)) => obj["metadata"] = object_meta(x)?,
            (2, Field::Bytes(x)) => rules.push(policy_rule(x)?),
            (3, Field::Bytes(x)) if kind == "ClusterRole" => {
                obj["aggregationRule"] = aggregation_rule(x)?
            }
            _ => {}
        }
    }
    obj["rules"] = Value::Array(rules);
    Ok(obj)
}

/// RoleBinding and ClusterRoleBinding: metadata, subjects and the role they grant.
fn binding(kind: &str, raw: &[u8]) -> Result<Value, ProtobufError> {
    let mut obj = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": kind,
        "metadata": {}});
    let mut subjects = Vec::new();
    for f in fields(raw) {
        match f? {
            (1, Field::Bytes(x)) => obj["metadata"] = object_meta(x)?,
            (2, Field::Bytes(x)) => subjects.push(string_fields(
                x,
                &[(1, "kind"), (2, "apiGroup"), (3, "name"), (4, "namespace")],
            )?),
            (3, Field::Bytes(x)) => {
                obj["roleRef"] = string_fields(x, &[(1, "apiGroup"), (2, "kind"), (3, "name")])?
            }
            _ => {}
        }
    }
    if !subjects.is_empty() {
        obj["subjects"] = Value::Array(subjects);
    }
    Ok(obj)
}

fn base64(b: &[u8]) -> Value {
    use base64::Engine;
    json!(base64::engine::general_purpose::STANDARD.encode(b))
}

/// A `meta/v1` Time (seconds since the epoch) as the RFC 3339 text JSON carries.
fn time(b: &[u8]) -> Result<Value, ProtobufError> {
    let mut seconds = 0i64;
    for f in fields(b) {
        if let (1, Field::Varint(v)) = f? {
            seconds = v as i64;
        }
    }
    Ok(chrono::DateTime::from_timestamp(seconds, 0)
        .map(|t| json!(t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)))
        .unwrap_or(Value::Null))
}

/// Insert a string field unless it is proto3's empty default.
fn put_text(
    m: &mut Map<String, Value>,
    key: &str,
    field: u32,
    b: &[u8],
) -> Result<(), ProtobufError> {
    let t = text(field, b)?;
    if !t.is_empty() {
        m.insert(key.into(), json!(t));
    }
    Ok(())
}

/// `kubectl certificate approve|deny` PUTs the whole CSR to its approval subresource.
fn certificate_signing_request(raw: &[u8]) -> Result<Value, ProtobufError> {
    let mut obj = json!({"apiVersion": "certificates.k8s.io/v1",
        "kind": "CertificateSigningRequest", "metadata": {}});
    for f in fields(raw) {
        match f? {
            (1, Field::Bytes(x)) => obj["metadata"] = object_meta(x)?,
            (2, Field::Bytes(x)) => obj["spec"] = csr_spec(x)?,
            (3, Field::Bytes(x)) => obj["status"] = csr_status(x)?,
            _ => {}
        }
    }
    Ok(obj)
}

fn csr_spec(b: &[u8]) -> Result<Value, ProtobufError> {
    let mut m = Map::new();
    let (mut groups, mut usages) = (Vec::new(), Vec::new());
    for f in fields(b) {
        match f? {
            (1, Field::Bytes(x)) => {
                m.insert("request".into(), base64(x));
            }
            (2, Field::Bytes(x)) => put_text(&mut m, "username", 2, x)?,
            (3, Field::Bytes(x)) => put_text(&mut m, "uid", 3, x)?,
            (4, Field::Bytes(x)) => groups.push(json!(text(4, x)?)),
            (5, Field::Bytes(x)) => usages.push(json!(text(5, x)?)),
            (7, Field::Bytes(x)) => put_text(&mut m, "signerName", 7, x)?,
            (8, Field::Varint(v)) => {
                m.insert("expirationSeconds".into(), json!(v as i32));
            }
            _ => {}
        }
    }
    if !groups.is_empty() {
        m.insert("groups".into(), Value::Array(groups));
    }
    if !usages.is_empty() {
        m.insert("usages".into(), Value::Array(usages));
    }
    Ok(Value::Object(m))
}

fn csr_status(b: &[u8]) -> Result<Value, ProtobufError> {
    let mut m = Map::new();
    let mut conditions = Vec::new();
    for f in fields(b) {
        match f? {
            (1, Field::Bytes(x)) => {
                let mut c = Map::new();
                for cf in fields(x) {
                    match cf? {
                        (1, Field::Bytes(y)) => put_text(&mut c, "type", 1, y)?,
                        (2, Field::Bytes(y)) => put_text(&mut c, "reason", 2, y)?,
                        (3, Field::Bytes(y)) => put_text(&mut c, "message", 3, y)?,
                        (4, Field::Bytes(y)) => {
                            c.insert("lastUpdateTime".into(), time(y)?);
                        }
                        (5, Field::Bytes(y)) => {
                            c.insert("lastTransitionTime".into(), time(y)?);
                        }
                        (6, Field::Bytes(y)) => put_text(&mut c, "status", 6, y)?,
                        _ => {}
                    }
                }
                conditions.push(Value::Object(c));
            }
            (2, Field::Bytes(x)) if !x.is_empty() => {
                m.insert("certificate".into(), base64(x));
            }
            _ => {}
        }
    }
    if !conditions.is_empty() {
        m.insert("conditions".into(), Value::Array(conditions));
    }
    Ok(Value::Object(m))
}

/// A kind whose request carries nothing but metadata (`kubectl auth whoami`'s review).
fn metadata_only(kind: &str, api_version: &str, raw: &[u8]) -> Result<Value, ProtobufError> {
    let mut obj = json!({"apiVersion": api_version, "kind": kind, "metadata": {}});
    for f in fields(raw) {
        if let (1, Field::Bytes(x)) = f? {
            obj["metadata"] = object_meta(x)?;
        }
    }
    Ok(obj)
}

/// autoscaling/v1 `HorizontalPodAutoscaler`: metadata = 1, spec = 2 (scaleTargetRef = 1
/// {kind = 1, name = 2, apiVersion = 3}, minReplicas = 2, maxReplicas = 3,
/// targetCPUUtilizationPercentage = 4); status is the controller's and is not read.
fn horizontal_pod_autoscaler(raw: &[u8]) -> Result<Value, ProtobufError> {
    let mut obj = json!({"apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler",
        "metadata": {}, "spec": {}});
    for f in fields(raw) {
        match f? {
            (1, Field::Bytes(x)) => obj["metadata"] = object_meta(x)?,
            (2, Field::Bytes(spec)) => {
                for sf in fields(spec) {
                    // int32 fields: negative values arrive sign-extended to 64 bits.
                    let int = |v: u64| json!(v as i64 as i32);
                    match sf? {
                        (1, Field::Bytes(r)) => {
                            let mut target = Map::new();
                            for rf in fields(r) {
                                let (n, key) = match rf? {
                                    (1, Field::Bytes(x)) => (1, ("kind", x)),
                                    (2, Field::Bytes(x)) => (2, ("name", x)),
                                    (3, Field::Bytes(x)) => (3, ("apiVersion", x)),
                                    _ => continue,
                                };
                                target.insert(key.0.into(), json!(text(n, key.1)?));
                            }
                            obj["spec"]["scaleTargetRef"] = Value::Object(target);
                        }
                        (2, Field::Varint(v)) => obj["spec"]["minReplicas"] = int(v),
                        (3, Field::Varint(v)) => obj["spec"]["maxReplicas"] = int(v),
                        (4, Field::Varint(v)) => {
                            obj["spec"]["targetCPUUtilizationPercentage"] = int(v)
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    Ok(obj)
}

/// authorization/v1 SelfSubjectAccessReview: metadata 1, spec 2 (resourceAttributes 1,
/// nonResourceAttributes 2).
fn self_subject_access_review(raw: &[u8]) -> Result<Value, ProtobufError> {
    const RESOURCE: &[(u32, &str)] = &[
        (1, "namespace"),
        (2, "verb"),
        (3, "group"),
        (4, "version"),
        (5, "resource"),
        (6, "subresource"),
        (7, "name"),
    ];
    const NON_RESOURCE: &[(u32, &str)] = &[(1, "path"), (2, "verb")];
    let mut obj = json!({"apiVersion": "authorization.k8s.io/v1",
        "kind": "SelfSubjectAccessReview", "metadata": {}, "spec": {}});
    for f in fields(raw) {
        match f? {
            (1, Field::Bytes(x)) => obj["metadata"] = object_meta(x)?,
            (2, Field::Bytes(spec)) => {
                for sf in fields(spec) {
                    match sf? {
                        (1, Field::Bytes(x)) => {
                            obj["spec"]["resourceAttributes"] = string_fields(x, RESOURCE)?
                        }
                        (2, Field::Bytes(x)) => {
                            obj["spec"]["nonResourceAttributes"] = string_fields(x, NON_RESOURCE)?
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    Ok(obj)
}

/// Decode a protobuf request body into the JSON object it stands for.
pub fn decode(body: &[u8]) -> Result<Value, ProtobufError> {
    let rest = body.strip_prefix(MAGIC).ok_or(ProtobufError::NoMagic)?;
    let (mut kind, mut raw) = (String::new(), &[][..]);
    for f in fields(rest) {
        match f? {
            (1, Field::Bytes(type_meta)) => {
                for tf in fields(type_meta) {
                    if let (2, Field::Bytes(x)) = tf? {
                        kind = text(2, x)?;
                    }
                }
            }
            (2, Field::Bytes(x)) => raw = x,
            (_, Field::Varint(_)) | (_, Field::Fixed) | (_, Field::Bytes(_)) => {}
        }
    }
    match kind.as_str() {
        "Namespace" => namespace(raw),
        "Role" | "ClusterRole" => role(&kind, raw),
        "RoleBinding" | "ClusterRoleBinding" => binding(&kind, raw),
        "HorizontalPodAutoscaler" => horizontal_pod_autoscaler(raw),
        "SelfSubjectReview" => metadata_only(&kind, "authentication.k8s.io/v1", raw),
        "SelfSubjectAccessReview" => self_subject_access_review(raw),
        "CertificateSigningRequest" => certificate_signing_request(raw),
        other => Err(ProtobufError::UnsupportedKind(other.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes_field(n: u32, data: &[u8]) -> Vec<u8> {
        let mut out = vec![((n << 3) | 2) as u8];
        let mut len = data.len();
        while len >= 0x80 {
            out.push((len as u8 & 0x7f) | 0x80);
            len >>= 7;
        }
        out.push(len as u8);
        out.extend_from_slice(data);
        out
    }

    fn varint_field(n: u32, v: u8) -> Vec<u8> {
        vec![((n << 3) as u8), v]
    }

    /// A `runtime.Unknown` envelope around `raw`, as kubectl's typed clients send it.
    fn envelope(api_version: &str, kind: &str, raw: &[u8]) -> Vec<u8> {
        let type_meta = [
            bytes_field(1, api_version.as_bytes()),
            bytes_field(2, kind.as_bytes()),
        ]
        .concat();
        [
            MAGIC.to_vec(),
            bytes_field(1, &type_meta),
            bytes_field(2, raw),
        ]
        .concat()
    }

    #[test]
    fn csr_from_kubectl_certificate_approve_decodes_with_its_conditions() {
        let meta = [bytes_field(1, b"dana"), bytes_field(6, b"42")].concat();
        let spec = [
            bytes_field(1, b"PEM"),
            bytes_field(2, b"admin"),
            bytes_field(4, b"system:masters"),
            bytes_field(5, b"client auth"),
            bytes_field(7, b"kubernetes.io/kube-apiserver-client"),
            varint_field(8, 100),
        ]
        .concat();
        let when = varint_field(1, 10);
        let cond = [
            bytes_field(1, b"Approved"),
            bytes_field(2, b"KubectlApprove"),
            bytes_field(4, &when),
            bytes_field(6, b"True"),
        ]
        .concat();
        let status = bytes_field(1, &cond);
        let raw = [
            bytes_field(1, &meta),
            bytes_field(2, &spec),
            bytes_field(3, &status),
        ]
        .concat();
        let body = envelope("certificates.k8s.io/v1", "CertificateSigningRequest", &raw);
        let obj = decode(&body).expect("decodes");
        assert_eq!(obj["metadata"]["resourceVersion"], "42");
        assert_eq!(obj["spec"]["request"], "UEVN");
        assert_eq!(obj["spec"]["groups"], json!(["system:masters"]));
        assert_eq!(obj["spec"]["expirationSeconds"], 100);
        let c = &obj["status"]["conditions"][0];
        assert_eq!(
            (c["type"].as_str(), c["status"].as_str()),
            (Some("Approved"), Some("True"))
        );
        assert_eq!(c["lastUpdateTime"], "1970-01-01T00:00:10Z");
        assert!(obj["status"].get("certificate").is_none());
    }

    #[test]
    fn namespace_from_kubectl_create_namespace_decodes_to_json() {
        let label = [bytes_field(1, b"team"), bytes_field(2, b"a")].concat();
        let meta = [bytes_field(1, b"demo"), bytes_field(11, &label)].concat();
        let raw = [
            bytes_field(1, &meta),
            bytes_field(2, &[]),
            bytes_field(3, &[]),
        ]
        .concat();
        let body = envelope("v1", "Namespace", &raw);
        let obj = decode(&body).expect("decodes");
        assert_eq!(obj["metadata"]["name"], "demo");
        assert_eq!(obj["metadata"]["labels"]["team"], "a");
        assert_eq!(obj["kind"], "Namespace");
    }

    #[test]
    fn role_binding_from_kubectl_create_rolebinding_decodes_to_json() {
        let meta = bytes_field(1, b"read-pods");
        let subject = [
            bytes_field(1, b"User"),
            bytes_field(2, b"rbac.authorization.k8s.io"),
            bytes_field(3, b"jane"),
        ]
        .concat();
        let role_ref = [
            bytes_field(1, b"rbac.authorization.k8s.io"),
            bytes_field(2, b"Role"),
            bytes_field(3, b"pod-reader"),
        ]
        .concat();
        let raw = [
            bytes_field(1, &meta),
            bytes_field(2, &subject),
            bytes_field(3, &role_ref),
        ]
        .concat();
        let body = envelope("rbac.authorization.k8s.io/v1", "RoleBinding", &raw);
        let obj = decode(&body).expect("decodes");
        assert_eq!(obj["apiVersion"], "rbac.authorization.k8s.io/v1");
        assert_eq!(
            obj["subjects"][0],
            json!({"kind": "User",
            "apiGroup": "rbac.authorization.k8s.io", "name": "jane"})
        );
        assert_eq!(obj["roleRef"]["name"], "pod-reader");
    }

    #[test]
    fn role_rules_keep_their_repeated_fields() {
        let rule = [
            bytes_field(1, b"get"),
            bytes_field(1, b"list"),
            bytes_field(2, b""),
            bytes_field(3, b"pods"),
        ]
        .concat();
        let raw = [
            bytes_field(1, &bytes_field(1, b"reader")),
            bytes_field(2, &rule),
        ]
        .concat();
        let obj = role("Role", &raw).expect("decodes");
        assert_eq!(
            obj["rules"][0],
            json!({"verbs": ["get", "list"], "apiGroups": [""],
            "resources": ["pods"]})
        );
    }

    #[test]
    fn self_subject_review_from_kubectl_auth_whoami_decodes() {
        let raw = [bytes_field(1, &[]), bytes_field(2, &[])].concat();
        let body = envelope("authentication.k8s.io/v1", "SelfSubjectReview", &raw);
        let obj = decode(&body).expect("decodes");
        assert_eq!(obj["kind"], "SelfSubjectReview");
        assert_eq!(obj["apiVersion"], "authentication.k8s.io/v1");
    }

    #[test]
    fn hpa_from_kubectl_autoscale_decodes_to_json() {
        let varint = |n: u32, v: u8| vec![((n << 3) as u8), v];
        let target = [
            bytes_field(1, b"ReplicationController"),
            bytes_field(2, b"web"),
            bytes_field(3, b"v1"),
        ]
        .concat();
        let spec = [
            bytes_field(1, &target),
            varint(2, 1),
            varint(3, 5),
            varint(4, 50),
        ]
        .concat();
        let raw = [
            bytes_field(1, &bytes_field(1, b"web")),
            bytes_field(2, &spec),
        ]
        .concat();
        let body = envelope("autoscaling/v1", "HorizontalPodAutoscaler", &raw);
        let obj = decode(&body).expect("decodes");
        assert_eq!(obj["metadata"]["name"], "web");
        assert_eq!(
            obj["spec"],
            json!({"scaleTargetRef": {"kind": "ReplicationController", "name": "web",
                "apiVersion": "v1"}, "minReplicas": 1, "maxReplicas": 5,
                "targetCPUUtilizationPercentage": 50})
        );
    }

    #[test]
    fn access_review_from_kubectl_auth_can_i_decodes() {
        let attrs = [
            bytes_field(1, b"default"),
            bytes_field(2, b"create"),
            bytes_field(5, b"pods"),
        ]
        .concat();
        let spec = bytes_field(1, &attrs);
        let raw = [bytes_field(1, &[]), bytes_field(2, &spec)].concat();
        let body = envelope("authorization.k8s.io/v1", "SelfSubjectAccessReview", &raw);
        let obj = decode(&body).expect("decodes");
        assert_eq!(
            obj["spec"],
            json!({"resourceAttributes": {"namespace": "default", "verb": "create", "resource": "pods"}})
        );
    }

    #[test]
    fn other_kinds_and_garbage_are_refused_cleanly() {
        let type_meta = [bytes_field(1, b"v1"), bytes_field(2, b"Pod")].concat();
        let body = [MAGIC.to_vec(), bytes_field(1, &type_meta)].concat();
        assert_eq!(
            decode(&body),
            Err(ProtobufError::UnsupportedKind("Pod".into()))
        );
        assert_eq!(decode(b"{}"), Err(ProtobufError::NoMagic));
        assert_eq!(decode(b"k8s\x00\x0a\x7f"), Err(ProtobufError::Truncated));
    }
}
