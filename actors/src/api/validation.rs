//! The apiserver's decoding checks and validation for core/v1 objects.
//!
//! Objects arrive as `serde_json::Value` because the gateway stores and patches them
//! untyped; the typed k8s-openapi structs are used only to catch wrong JSON types and
//! unknown fields. Rules and messages follow k8s.io/kubernetes
//! pkg/apis/core/validation/validation.go and apimachinery's util/validation, so that
//! `kubectl` shows users the same errors a real cluster would.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::net::IpAddr;

pub(crate) mod dns;
pub(crate) mod env;
pub(crate) mod ephemeral;
pub(crate) mod podspec;
pub(crate) mod rbac;
pub(crate) mod scheduling;
pub mod storage;
pub(crate) mod volumes;

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{Map, Value};

use super::resources::ResourceInfo;
pub use super::strategy::NameRule;

/// One invalid field, as Kubernetes reports it in Status.details.causes.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldError {
    /// Path of the field, e.g. `spec.containers[0].image`.
    pub field: String,
    pub kind: FieldErrorKind,
    /// The offending value rendered as Kubernetes prints it: strings quoted (`"Foo"`),
    /// numbers and booleans bare, maps as `map[string]string{...}`.
    pub value: Option<String>,
    pub detail: String,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FieldErrorKind {
    Required,
    Invalid,
    Duplicate,
    NotSupported,
    Forbidden,
    TooLong,
    TooMany,
    NotFound,
}

impl FieldErrorKind {
    fn label(self) -> &'static str {
        match self {
            FieldErrorKind::Required => "Required value",
            FieldErrorKind::Invalid => "Invalid value",
            FieldErrorKind::Duplicate => "Duplicate value",
            FieldErrorKind::NotSupported => "Unsupported value",
            FieldErrorKind::Forbidden => "Forbidden",
            FieldErrorKind::TooLong => "Too long",
            FieldErrorKind::TooMany => "Too many",
            FieldErrorKind::NotFound => "Not found",
        }
    }
}

impl FieldError {
    /// A required field that is missing.
    pub fn required(field: impl Into<String>) -> Self {
        required(field, "")
    }

    /// A value that breaks a rule, said in `detail`.
    pub fn invalid(field: impl Into<String>, value: &Value, detail: impl Into<String>) -> Self {
        invalid(field, value, detail)
    }

    /// A value outside an enumeration.
    pub fn not_supported(field: impl Into<String>, value: &Value, supported: &[&str]) -> Self {
        not_supported(field, value, supported)
    }

    pub fn forbidden(field: impl Into<String>, detail: impl Into<String>) -> Self {
        forbidden(field, detail)
    }

    /// A value over a size limit (`max` bytes); Kubernetes shows no value.
    pub fn too_long(field: impl Into<String>, max: usize) -> Self {
        too_long(field, max)
    }

    /// A list longer than `max` items (Kubernetes' `TooMany`: shows the count).
    pub fn too_many(field: impl Into<String>, actual: usize, max: usize) -> Self {
        FieldError {
            field: field.into(),
            kind: FieldErrorKind::TooMany,
            value: Some(actual.to_string()),
            detail: format!("must have at most {max} items"),
        }
    }

    /// A field that must be unique, given twice.
    pub fn duplicate(field: impl Into<String>, value: &Value) -> Self {
        duplicate(field, value)
    }

    /// A field an update may not change.
    pub fn immutable(field: impl Into<String>, value: &Value) -> Self {
        invalid(field, value, IMMUTABLE_MSG)
    }

    /// The cause `reason` Kubernetes uses ("FieldValueRequired", ...).
    pub fn reason(&self) -> &'static str {
        match self.kind {
            FieldErrorKind::Required => "FieldValueRequired",
            FieldErrorKind::Invalid => "FieldValueInvalid",
            FieldErrorKind::Duplicate => "FieldValueDuplicate",
            FieldErrorKind::NotSupported => "FieldValueNotSupported",
            FieldErrorKind::Forbidden => "FieldValueForbidden",
            FieldErrorKind::TooLong => "FieldValueTooLong",
            FieldErrorKind::TooMany => "FieldValueTooMany",
            FieldErrorKind::NotFound => "FieldValueNotFound",
        }
    }

    /// The message Kubernetes prints, e.g. `spec.containers[0].image: Required value`.
    pub fn message(&self) -> String {
        format!("{}: {}", self.field, self.body())
    }

    /// The message without the field path (Kubernetes' `ErrorBody`).
    pub fn body(&self) -> String {
        // Kubernetes never shows the value for these kinds, even when it has one.
        let hides_value = matches!(
            self.kind,
            FieldErrorKind::Required | FieldErrorKind::Forbidden | FieldErrorKind::TooLong
        );
        let mut s = match (&self.value, hides_value) {
            (Some(v), false) => format!("{}: {}", self.kind.label(), v),
            _ => self.kind.label().to_string(),
        };
        if !self.detail.is_empty() {
            s.push_str(": ");
            s.push_str(&self.detail);
        }
        s
    }
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message())
    }
}

/// A body that does not decode as the typed kind (wrong JSON types etc.); the caller
/// answers 400 BadRequest with this message.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("{kind} in version \"{version}\" cannot be handled as a {kind}: {reason}")]
    Invalid {
        kind: String,
        version: String,
        /// Path of the field that failed to decode, when it could be located.
        field: Option<String>,
        reason: String,
    },
}

// ---------------------------------------------------------------------------
// Field errors: constructors and value rendering
// ---------------------------------------------------------------------------

fn required(field: impl Into<String>, detail: &str) -> FieldError {
    FieldError {
        field: field.into(),
        kind: FieldErrorKind::Required,
        value: None,
        detail: detail.to_string(),
    }
}

fn invalid(field: impl Into<String>, value: &Value, detail: impl Into<String>) -> FieldError {
    FieldError {
        field: field.into(),
        kind: FieldErrorKind::Invalid,
        value: Some(render_value(value)),
        detail: detail.into(),
    }
}

fn invalid_str(field: impl Into<String>, value: &str, detail: impl Into<String>) -> FieldError {
    invalid(field, &Value::from(value), detail)
}

pub(crate) fn duplicate(field: impl Into<String>, value: &Value) -> FieldError {
    FieldError {
        field: field.into(),
        kind: FieldErrorKind::Duplicate,
        value: Some(render_value(value)),
        detail: String::new(),
    }
}

fn not_supported(field: impl Into<String>, value: &Value, supported: &[&str]) -> FieldError {
    let quoted: Vec<String> = supported.iter().map(|s| quote(s)).collect();
    FieldError {
        field: field.into(),
        kind: FieldErrorKind::NotSupported,
        value: Some(render_value(value)),
        detail: format!("supported values: {}", quoted.join(", ")),
    }
}

fn forbidden(field: impl Into<String>, detail: impl Into<String>) -> FieldError {
    FieldError {
        field: field.into(),
        kind: FieldErrorKind::Forbidden,
        value: None,
        detail: detail.into(),
    }
}

fn too_long(field: impl Into<String>, max: usize) -> FieldError {
    let unit = if max == 1 { "byte" } else { "bytes" };
    FieldError {
        field: field.into(),
        kind: FieldErrorKind::TooLong,
        value: None,
        detail: format!("may not be more than {max} {unit}"),
    }
}

fn quote(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| format!("\"{s}\""))
}

/// Renders a bad value the way Go's field errors print it, so messages match kubectl's.
fn render_value(v: &Value) -> String {
    match v {
        Value::String(s) => quote(s),
        Value::Object(m) if m.values().all(Value::is_string) => {
            let pairs: Vec<String> = m
                .iter()
                .map(|(k, v)| format!("{}:{}", quote(k), render_value(v)))
                .collect();
            format!("map[string]string{{{}}}", pairs.join(", "))
        }
        other => other.to_string(),
    }
}

// ---------------------------------------------------------------------------
// Paths and JSON accessors
// ---------------------------------------------------------------------------

fn child(base: &str, name: &str) -> String {
    if base.is_empty() {
        name.to_string()
    } else {
        format!("{base}.{name}")
    }
}

fn index(base: &str, i: usize) -> String {
    format!("{base}[{i}]")
}

fn key(base: &str, k: &str) -> String {
    format!("{base}[{k}]")
}

/// A present, non-null member: Kubernetes treats `null` like an absent field.
fn get<'a>(v: &'a Value, name: &str) -> Option<&'a Value> {
    v.get(name).filter(|x| !x.is_null())
}

fn get_str<'a>(v: &'a Value, name: &str) -> &'a str {
    v.get(name).and_then(Value::as_str).unwrap_or("")
}

fn get_array<'a>(v: &'a Value, name: &str) -> &'a [Value] {
    v.get(name)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

fn get_object<'a>(v: &'a Value, name: &str) -> Option<&'a Map<String, Value>> {
    v.get(name).and_then(Value::as_object)
}

fn get_i64(v: &Value, name: &str) -> Option<i64> {
    v.get(name).and_then(Value::as_i64)
}

// ---------------------------------------------------------------------------
// Name and value formats (apimachinery util/validation)
// ---------------------------------------------------------------------------

const DNS1123_LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character";
const DNS1123_LABEL_FMT: &str = "[a-z0-9]([-a-z0-9]*[a-z0-9])?";
const DNS1123_SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character";
const DNS1123_SUBDOMAIN_FMT: &str =
    "[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*";
const DNS1035_LABEL_MSG: &str = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character";
const DNS1035_LABEL_FMT: &str = "[a-z]([-a-z0-9]*[a-z0-9])?";
const QUALIFIED_NAME_MSG: &str = "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";
const QUALIFIED_NAME_FMT: &str = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]";
const LABEL_VALUE_MSG: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";
const LABEL_VALUE_FMT: &str = "(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?";
const ENV_VAR_NAME_MSG: &str = "a valid environment variable name must consist of alphabetic characters, digits, '_', '-', or '.', and must not start with a digit";
const ENV_VAR_NAME_FMT: &str = "[-._a-zA-Z][-._a-zA-Z0-9]*";
const IP_MSG: &str = "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)";
const QUANTITY_MSG: &str =
    "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'";
const NONNEGATIVE_MSG: &str = "must be greater than or equal to 0";
const IMMUTABLE_MSG: &str = "field is immutable";
const PROTOCOLS: &[&str] = &["SCTP", "TCP", "UDP"];
const LABEL_MAX: usize = 63;
const SUBDOMAIN_MAX: usize = 253;
const TOTAL_ANNOTATION_SIZE: usize = 256 * 1024;

/// Builds Kubernetes' `RegexError` text, double space before "or" included, because
/// clients and tests compare these strings verbatim.
fn regex_error(msg: &str, fmt: &str, examples: &[&str]) -> String {
    let mut s = format!("{msg} (e.g. ");
    for (i, e) in examples.iter().enumerate() {
        if i > 0 {
            s.push_str(" or ");
        }
        let _ = write!(s, "'{e}', ");
    }
    let _ = write!(s, "regex used for validation is '{fmt}')");
    s
}

fn max_len_error(n: usize) -> String {
    format!("must be no more than {n} characters")
}

fn range_error(lo: i64, hi: i64) -> String {
    format!("must be between {lo} and {hi}, inclusive")
}

fn is_lower_alnum(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?` without a length limit.
fn matches_dns_label_chars(s: &str) -> bool {
    let starts_ok = s.chars().next().is_some_and(is_lower_alnum);
    let ends_ok = s.chars().last().is_some_and(is_lower_alnum);
    starts_ok && ends_ok && s.chars().all(|c| is_lower_alnum(c) || c == '-')
}

/// Is `s` a DNS-1123 label: at most 63 characters, `[a-z0-9]([-a-z0-9]*[a-z0-9])?`.
pub fn is_dns1123_label(s: &str) -> bool {
    s.len() <= LABEL_MAX && matches_dns_label_chars(s)
}

/// Is `s` a DNS-1123 subdomain: at most 253 characters, labels joined by '.'.
pub fn is_dns1123_subdomain(s: &str) -> bool {
    s.len() <= SUBDOMAIN_MAX && s.split('.').all(matches_dns_label_chars)
}

/// Is `s` a DNS-1035 label: a DNS-1123 label that starts with a letter.
pub fn is_dns1035_label(s: &str) -> bool {
    is_dns1123_label(s) && s.starts_with(|c: char| c.is_ascii_lowercase())
}

pub(crate) fn dns1123_label_errors(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > LABEL_MAX {
        errs.push(max_len_error(LABEL_MAX));
    }
    if !matches_dns_label_chars(s) {
        errs.push(regex_error(
            DNS1123_LABEL_MSG,
            DNS1123_LABEL_FMT,
            &["my-name", "123-abc"],
        ));
    }
    errs
}

/// apimachinery's `IsValidPathSegmentName`.
pub(crate) fn path_segment_errors(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    if s == "." || s == ".." {
        out.push(format!("may not be '{s}'"));
    }
    for bad in ['/', '%'] {
        if s.contains(bad) {
            out.push(format!("may not contain '{bad}'"));
        }
    }
    out
}

pub(crate) fn dns1123_subdomain_errors(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > SUBDOMAIN_MAX {
        errs.push(max_len_error(SUBDOMAIN_MAX));
    }
    if !s.split('.').all(matches_dns_label_chars) {
        errs.push(regex_error(
            DNS1123_SUBDOMAIN_MSG,
            DNS1123_SUBDOMAIN_FMT,
            &["example.com"],
        ));
    }
    errs
}

fn dns1035_label_errors(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > LABEL_MAX {
        errs.push(max_len_error(LABEL_MAX));
    }
    if !(matches_dns_label_chars(s) && s.starts_with(|c: char| c.is_ascii_lowercase())) {
        errs.push(regex_error(
            DNS1035_LABEL_MSG,
            DNS1035_LABEL_FMT,
            &["my-name", "abc-123"],
        ));
    }
    errs
}

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`
fn matches_qualified_name_part(s: &str) -> bool {
    let alnum = |c: char| c.is_ascii_alphanumeric();
    s.chars().next().is_some_and(alnum)
        && s.chars().last().is_some_and(alnum)
        && s.chars().all(|c| alnum(c) || matches!(c, '-' | '_' | '.'))
}

pub(crate) fn qualified_name_errors(s: &str) -> Vec<String> {
    let name_regex = || {
        regex_error(
            QUALIFIED_NAME_MSG,
            QUALIFIED_NAME_FMT,
            &["MyName", "my.name", "123-abc"],
        )
    };
    let mut errs = Vec::new();
    let parts: Vec<&str> = s.split('/').collect();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                errs.push("prefix part must be non-empty".to_string());
            } else {
                errs.extend(
                    dns1123_subdomain_errors(prefix)
                        .into_iter()
                        .map(|m| format!("prefix part {m}")),
                );
            }
            *name
        }
        _ => {
            errs.push(format!(
                "a qualified name {} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')",
                name_regex()
            ));
            return errs;
        }
    };
    if name.is_empty() {
        errs.push("name part must be non-empty".to_string());
    } else if name.len() > LABEL_MAX {
        errs.push(format!("name part {}", max_len_error(LABEL_MAX)));
    }
    if !matches_qualified_name_part(name) {
        errs.push(format!("name part {}", name_regex()));
    }
    errs
}

fn label_value_errors(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > LABEL_MAX {
        errs.push(max_len_error(LABEL_MAX));
    }
    if !(s.is_empty() || matches_qualified_name_part(s)) {
        errs.push(regex_error(
            LABEL_VALUE_MSG,
            LABEL_VALUE_FMT,
            &["MyValue", "my_value", "12345"],
        ));
    }
    errs
}

/// IANA_SVC_NAME: what container and service ports may be named.
fn port_name_errors(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > 15 {
        errs.push(max_len_error(15));
    }
    if !s.chars().all(|c| is_lower_alnum(c) || c == '-') {
        errs.push("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)".into());
    }
    if !s.chars().any(|c| c.is_ascii_lowercase()) {
        errs.push("must contain at least one letter (a-z)".into());
    }
    if s.contains("--") {
        errs.push("must not contain consecutive hyphens (--)".into());
    }
    if s.starts_with('-') || s.ends_with('-') {
        errs.push("must not begin or end with a hyphen (-)".into());
    }
    errs
}

fn env_var_name_errors(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    let first_ok = s
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || matches!(c, '-' | '.' | '_'));
    let rest_ok = s
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'));
    if !(first_ok && rest_ok) {
        errs.push(regex_error(
            ENV_VAR_NAME_MSG,
            ENV_VAR_NAME_FMT,
            &["my.env-name", "MY_ENV.NAME", "MyEnvName1"],
        ));
    }
    // Values that would let a path-like name escape its directory are refused too.
    if s == "." {
        errs.push("must not be '.'".into());
    } else if s == ".." {
        errs.push("must not be '..'".into());
    } else if s.starts_with("..") {
        errs.push("must not start with '..'".into());
    }
    errs
}

const CONFIG_KEY_MSG: &str =
    "a valid config key must consist of alphanumeric characters, '-', '_' or '.'";
const CONFIG_KEY_FMT: &str = "[-._a-zA-Z0-9]+";

/// apimachinery's `IsConfigMapKey`: what a ConfigMap or Secret key may be (it becomes a
/// file name in a volume, so it may not walk out of its directory).
pub(crate) fn config_key_errors(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > SUBDOMAIN_MAX {
        errs.push(max_len_error(SUBDOMAIN_MAX));
    }
    let chars_ok = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'));
    if !chars_ok {
        errs.push(regex_error(
            CONFIG_KEY_MSG,
            CONFIG_KEY_FMT,
            &["key.name", "KEY_NAME", "key-name"],
        ));
    }
    if s == "." {
        errs.push("must not be '.'".into());
    } else if s == ".." {
        errs.push("must not be '..'".into());
    } else if s.starts_with("..") {
        errs.push("must not start with '..'".into());
    }
    errs
}

fn port_num_errors(n: i64) -> Vec<String> {
    if (1..=65535).contains(&n) {
        Vec::new()
    } else {
        vec![range_error(1, 65535)]
    }
}

fn push_all(errs: &mut Vec<FieldError>, field: &str, value: &Value, msgs: Vec<String>) {
    errs.extend(msgs.into_iter().map(|m| invalid(field, value, m)));
}

// ---------------------------------------------------------------------------
// Quantities
// ---------------------------------------------------------------------------

/// Parses a Kubernetes `resource.Quantity` ("100m", "0.5", "128Mi", "1e3", "2k") into
/// base units (cores for cpu, bytes for memory). `None` when the syntax is invalid.
pub fn parse_quantity(s: &str) -> Option<f64> {
    let (sign, unsigned) = match s.as_bytes().first() {
        Some(b'-') => (-1.0, &s[1..]),
        Some(b'+') => (1.0, &s[1..]),
        _ => (1.0, s),
    };
    let number_len = unsigned
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(unsigned.len());
    let (number, suffix) = unsigned.split_at(number_len);
    let digits_ok = number.chars().filter(|&c| c == '.').count() <= 1
        && number.chars().any(|c| c.is_ascii_digit());
    if !digits_ok {
        return None;
    }
    let magnitude: f64 = number.parse().ok()?;
    Some(sign * magnitude * suffix_multiplier(suffix)?)
}

fn suffix_multiplier(suffix: &str) -> Option<f64> {
    let binary = |power: i32| Some(1024f64.powi(power));
    match suffix {
        "" => Some(1.0),
        "n" => Some(1e-9),
        "u" => Some(1e-6),
        "m" => Some(1e-3),
        "k" => Some(1e3),
        "M" => Some(1e6),
        "G" => Some(1e9),
        "T" => Some(1e12),
        "P" => Some(1e15),
        "E" => Some(1e18),
        "Ki" => binary(1),
        "Mi" => binary(2),
        "Gi" => binary(3),
        "Ti" => binary(4),
        "Pi" => binary(5),
        "Ei" => binary(6),
        _ => decimal_exponent(suffix),
    }
}

/// "e3", "E-2": a decimal exponent; a lone "E" (exa) is handled by the caller.
fn decimal_exponent(suffix: &str) -> Option<f64> {
    let exp = suffix.strip_prefix(['e', 'E'])?;
    let digits = exp.strip_prefix(['+', '-']).unwrap_or(exp);
    if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let power: i32 = exp.parse().ok()?;
    Some(10f64.powi(power))
}

/// The value of a quantity given as a JSON string or number (both are accepted on the wire).
pub fn quantity_value(v: &Value) -> Option<f64> {
    match v {
        Value::String(s) => parse_quantity(s),
        Value::Number(n) => n.as_f64(),
        _ => None,
    }
}

/// Text of a quantity for messages, whatever JSON type it came as.
fn quantity_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Checks syntax and sign; returns the parsed value for further comparisons.
fn validate_quantity(v: &Value, field: &str, errs: &mut Vec<FieldError>) -> Option<f64> {
    let Some(q) = quantity_value(v) else {
        errs.push(invalid(field, v, QUANTITY_MSG));
        return None;
    };
    if q < 0.0 {
        errs.push(invalid_str(field, &quantity_text(v), NONNEGATIVE_MSG));
    }
    Some(q)
}

// ---------------------------------------------------------------------------
// Decoding
// ---------------------------------------------------------------------------

/// Whether `decode_check` knows a typed schema for `kind`.
pub fn has_schema(kind: &str) -> bool {
    matches!(kind, "Binding" | "Scale" | "DeleteOptions") || schema_kind(kind).is_some()
}

/// The served kind (stored or review) named `kind`, whose strategy decodes it.
fn schema_kind(kind: &str) -> Option<&'static ResourceInfo> {
    crate::api::resources::registry().find(|r| r.kind == kind && !crate::api::resources::is_view(r))
}

/// Decode `obj` as the k8s-openapi type for `kind`, to catch type errors (the caller
/// answers 400 BadRequest). Returns the unknown field paths found in `obj` (e.g.
/// `spec.containers[0].imagee`), for fieldValidation=Strict. apiVersion and kind are not
/// checked here. Served kinds decode through their strategy; kinds without a schema
/// (see [`has_schema`]) decode as "no unknown fields".
pub fn decode_check(kind: &str, obj: &Value) -> Result<Vec<String>, DecodeError> {
    use k8s_openapi::api::core::v1 as core;
    match kind {
        "Binding" => round_trip::<core::Binding>(kind, "v1", obj),
        "Scale" => {
            round_trip::<k8s_openapi::api::autoscaling::v1::Scale>(kind, "autoscaling/v1", obj)
        }
        "DeleteOptions" => round_trip::<
            k8s_openapi::apimachinery::pkg::apis::meta::v1::DeleteOptions,
        >(kind, "v1", obj),
        _ => match schema_kind(kind) {
            Some(info) => info.strategy.decode(obj),
            None => Ok(Vec::new()),
        },
    }
}

/// Deserializes into `T` and serializes back: whatever the typed struct dropped was unknown.
pub(crate) fn round_trip<T: DeserializeOwned + Serialize>(
    kind: &str,
    version: &str,
    obj: &Value,
) -> Result<Vec<String>, DecodeError> {
    // The typed structs insist on their own apiVersion/kind; the gateway checks those
    // itself, so they are left out of the decode and of the comparison.
    let typed: T = super::strategy::decode_ref(obj).map_err(|e| {
        let mut input = obj.clone();
        if let Some(map) = input.as_object_mut() {
            map.remove("apiVersion");
            map.remove("kind");
        }
        let field = locate_decode_error::<T>(&input);
        DecodeError::Invalid {
            kind: kind.to_string(),
            version: version.to_string(),
            reason: go_like_reason(&e.to_string(), field.as_deref()),
            field,
        }
    })?;
    let mut back = serde_json::to_value(&typed).map_err(|e| DecodeError::Invalid {
        kind: kind.to_string(),
        version: version.to_string(),
        field: None,
        reason: e.to_string(),
    })?;
    if let (Some(b), Some(o)) = (back.as_object_mut(), obj.as_object()) {
        for k in ["apiVersion", "kind"] {
            if let Some(v) = o.get(k) {
                b.insert(k.to_string(), v.clone());
            }
        }
    }
    let mut unknown = Vec::new();
    collect_unknown(obj, &back, &mut Vec::new(), &mut unknown);
    Ok(unknown)
}

/// Turns serde's "invalid type: integer `5`, expected a string" into the Go wording
/// clients know ("json: cannot unmarshal number into Go struct field ... of type string").
fn go_like_reason(raw: &str, field: Option<&str>) -> String {
    let parsed = raw
        .strip_prefix("invalid type: ")
        .and_then(|rest| rest.split_once(", expected "));
    match (parsed, field) {
        (Some((got, expected)), Some(field)) if !field.is_empty() => format!(
            "json: cannot unmarshal {} into Go struct field {} of type {}",
            go_json_kind(got),
            field,
            go_type(expected)
        ),
        (_, Some(field)) if !field.is_empty() => format!("{raw} (field {field})"),
        _ => raw.to_string(),
    }
}

fn go_json_kind(serde_unexpected: &str) -> &'static str {
    let word = serde_unexpected.split_whitespace().next().unwrap_or("");
    match word {
        "string" => "string",
        "integer" | "floating" => "number",
        "map" => "object",
        "sequence" => "array",
        "boolean" => "bool",
        "null" => "null",
        _ => "value",
    }
}

fn go_type(serde_expected: &str) -> String {
    let t = serde_expected.trim();
    match t {
        "a string" => "string".into(),
        "i32" => "int32".into(),
        "i64" => "int64".into(),
        "u8" | "u16" | "u32" | "u64" => "uint".into(),
        "f32" | "f64" => "float64".into(),
        "a boolean" => "bool".into(),
        "a sequence" => "array".into(),
        "a map" => "map".into(),
        other => other.to_string(),
    }
}

/// Finds the field a decode error is about. serde_json's `from_value` reports no
/// position, so the input is re-rendered one member per line and decoded from text,
/// whose error line then maps back to a field path.
fn locate_decode_error<T: DeserializeOwned>(input: &Value) -> Option<String> {
    let mut text = String::new();
    let mut lines = vec![String::new()];
    render_lines(input, "", &mut text, &mut lines);
    let err = serde_json::from_str::<T>(&text).err()?;
    lines.get(err.line().checked_sub(1)?).cloned()
}

/// Writes `v` as JSON with each member on its own line and records each line's path.
fn render_lines(v: &Value, path: &str, out: &mut String, lines: &mut Vec<String>) {
    let newline = |out: &mut String, lines: &mut Vec<String>, p: &str| {
        out.push('\n');
        lines.push(p.to_string());
    };
    match v {
        Value::Object(map) => {
            out.push('{');
            for (i, (k, item)) in map.iter().enumerate() {
                let p = child(path, k);
                newline(out, lines, &p);
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&quote(k));
                out.push(':');
                render_lines(item, &p, out, lines);
            }
            newline(out, lines, path);
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                let p = index(path, i);
                newline(out, lines, &p);
                if i > 0 {
                    out.push(',');
                }
                render_lines(item, &p, out, lines);
            }
            newline(out, lines, path);
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// Input members (non-null) that the typed round trip lost are unknown fields.
/// The members of `input` that `typed` (its decode, encoded back) lost. The path is built
/// only for what is reported: most objects have no unknown field at all.
fn collect_unknown<'a>(
    input: &'a Value,
    typed: &Value,
    path: &mut Vec<Segment<'a>>,
    out: &mut Vec<String>,
) {
    match (input, typed) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in a {
                if v.is_null() {
                    continue;
                }
                path.push(Segment::Field(k));
                match b.get(k) {
                    None | Some(Value::Null) => out.push(render_path(path)),
                    Some(bv) => collect_unknown(v, bv, path, out),
                }
                path.pop();
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                path.push(Segment::Index(i));
                collect_unknown(x, y, path, out);
                path.pop();
            }
        }
        _ => {}
    }
}

#[derive(Clone, Copy)]
enum Segment<'a> {
    Field(&'a str),
    Index(usize),
}

fn render_path(path: &[Segment]) -> String {
    let mut out = String::new();
    for seg in path {
        out = match seg {
            Segment::Field(k) => child(&out, k),
            Segment::Index(i) => index(&out, *i),
        };
    }
    out
}

// ---------------------------------------------------------------------------
// Entry point
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq)]
enum Scope {
    Namespaced,
    Cluster,
    /// Kinds this module has no rules for: the namespace is checked only when given.
    Unknown,
}

/// Validate an object for create (`old` = None) or update (`old` = the stored object):
/// the request bodies of subresources and deletes by their own rules, every served kind
/// by its registered strategy. Returns every problem found; empty means valid. Expects
/// the caller to have applied defaults and set metadata.namespace from the request path.
pub fn validate(kind: &str, obj: &Value, old: Option<&Value>) -> Vec<FieldError> {
    let mut errs = Vec::new();
    match kind {
        // Request bodies for subresources and deletes carry no object metadata rules.
        "Binding" => validate_binding(obj, &mut errs),
        "Scale" => validate_scale(obj, &mut errs),
        "DeleteOptions" => validate_delete_options(obj, &mut errs),
        _ => match crate::api::resources::by_kind(kind) {
            Some(info) => errs = validate_object(info, obj, old),
            None => validate_meta(
                obj,
                old,
                NameRule::Dns1123Subdomain,
                Scope::Unknown,
                &mut errs,
            ),
        },
    }
    errs
}

/// A served object: its metadata by the generic rules (`ValidateObjectMeta` with the
/// kind's name rule and scope), then the kind's strategy.
pub fn validate_object(info: &ResourceInfo, obj: &Value, old: Option<&Value>) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let scope = if info.namespaced {
        Scope::Namespaced
    } else {
        Scope::Cluster
    };
    validate_meta(obj, old, info.strategy.name_rule(), scope, &mut errs);
    errs.extend(info.strategy.validate(obj, old));
    errs
}

fn validate_meta(
    obj: &Value,
    old: Option<&Value>,
    rule: NameRule,
    scope: Scope,
    errs: &mut Vec<FieldError>,
) {
    let meta = obj.get("metadata").unwrap_or(&Value::Null);
    validate_object_meta(meta, rule, scope, errs);
    if let Some(old) = old {
        let old_meta = old.get("metadata").unwrap_or(&Value::Null);
        validate_object_meta_update(meta, old_meta, errs);
    }
}

// ---------------------------------------------------------------------------
// Metadata
// ---------------------------------------------------------------------------

fn validate_object_meta(meta: &Value, rule: NameRule, scope: Scope, errs: &mut Vec<FieldError>) {
    let name = get_str(meta, "name");
    if name.is_empty() {
        // A generateName is resolved into a name by the caller before storing.
        if get_str(meta, "generateName").is_empty() {
            errs.push(required(
                "metadata.name",
                "name or generateName is required",
            ));
        }
    } else {
        let msgs = match rule {
            NameRule::Dns1123Label => dns1123_label_errors(name),
            NameRule::Dns1035Label => dns1035_label_errors(name),
            NameRule::Dns1123Subdomain => dns1123_subdomain_errors(name),
            NameRule::PathSegment => path_segment_errors(name),
        };
        push_all(errs, "metadata.name", &Value::from(name), msgs);
    }
    validate_meta_namespace(meta, scope, errs);
    if let Some(labels) = get_object(meta, "labels") {
        validate_labels(labels, "metadata.labels", errs);
    }
    if let Some(annotations) = get_object(meta, "annotations") {
        validate_annotations(annotations, "metadata.annotations", errs);
    }
}

fn validate_meta_namespace(meta: &Value, scope: Scope, errs: &mut Vec<FieldError>) {
    let namespace = get_str(meta, "namespace");
    match (scope, namespace.is_empty()) {
        (Scope::Namespaced, true) => errs.push(required("metadata.namespace", "")),
        (Scope::Cluster, false) => {
            errs.push(forbidden("metadata.namespace", "not allowed on this type"))
        }
        (Scope::Namespaced | Scope::Unknown, false) => push_all(
            errs,
            "metadata.namespace",
            &Value::from(namespace),
            dns1123_label_errors(namespace),
        ),
        _ => {}
    }
}

pub(crate) fn validate_labels(
    labels: &Map<String, Value>,
    field: &str,
    errs: &mut Vec<FieldError>,
) {
    for (k, v) in labels {
        push_all(
            errs,
            field,
            &Value::from(k.as_str()),
            qualified_name_errors(k),
        );
        if let Some(s) = v.as_str() {
            push_all(errs, field, v, label_value_errors(s));
        }
    }
}

fn validate_annotations(annotations: &Map<String, Value>, field: &str, errs: &mut Vec<FieldError>) {
    let mut total = 0;
    for (k, v) in annotations {
        // Annotation keys are qualified names in which case does not matter.
        let msgs = qualified_name_errors(&k.to_lowercase());
        push_all(errs, field, &Value::from(k.as_str()), msgs);
        total += k.len() + v.as_str().map_or(0, str::len);
    }
    if total > TOTAL_ANNOTATION_SIZE {
        errs.push(too_long(field, TOTAL_ANNOTATION_SIZE));
    }
}

fn validate_object_meta_update(meta: &Value, old: &Value, errs: &mut Vec<FieldError>) {
    for name in ["name", "namespace"] {
        immutable_str(meta, old, name, &child("metadata", name), errs);
    }
    // The gateway carries uid and creationTimestamp over when a client omits them
    // (as Kubernetes does), so only a conflicting value is an error.
    for name in ["uid", "creationTimestamp"] {
        if !get_str(meta, name).is_empty() {
            immutable_str(meta, old, name, &child("metadata", name), errs);
        }
    }
}

fn immutable_str(new: &Value, old: &Value, name: &str, field: &str, errs: &mut Vec<FieldError>) {
    let value = get_str(new, name);
    if value != get_str(old, name) {
        errs.push(invalid_str(field, value, IMMUTABLE_MSG));
    }
}

// ---------------------------------------------------------------------------
// Pod
// ---------------------------------------------------------------------------

const RESTART_POLICIES: &[&str] = &["Always", "OnFailure", "Never"];
const DNS_POLICIES: &[&str] = &["ClusterFirst", "ClusterFirstWithHostNet", "Default", "None"];
const PULL_POLICIES: &[&str] = &["Always", "IfNotPresent", "Never"];
const TAINT_EFFECTS: &[&str] = &["NoExecute", "NoSchedule", "PreferNoSchedule"];
const UPDATABLE_POD_FIELDS: &[&str] = &[
    "`spec.containers[*].image`",
    "`spec.initContainers[*].image`",
    "`spec.activeDeadlineSeconds`",
    "`spec.tolerations` (only additions to existing tolerations)",
    "`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)",
];

pub(crate) fn validate_pod(obj: &Value, old: Option<&Value>, errs: &mut Vec<FieldError>) {
    let spec = obj.get("spec").unwrap_or(&Value::Null);
    validate_pod_spec(spec, "spec", errs);
    match old {
        Some(old) => {
            let old_spec = old.get("spec").unwrap_or(&Value::Null);
            validate_pod_spec_update(spec, old_spec, errs);
        }
        None => ephemeral::validate_none_on_create(spec, "spec", errs),
    }
}

/// A write of the pod's `ephemeralcontainers` subresource: the object's metadata and its
/// whole spec as for any pod, and ephemeral containers only added
/// (`ValidatePodEphemeralContainersUpdate`); the rest of the spec is the old one.
pub fn validate_pod_ephemeral_containers_update(
    info: &ResourceInfo,
    obj: &Value,
    old: &Value,
) -> Vec<FieldError> {
    let mut errs = Vec::new();
    validate_meta(
        obj,
        Some(old),
        info.strategy.name_rule(),
        Scope::Namespaced,
        &mut errs,
    );
    let spec = obj.get("spec").unwrap_or(&Value::Null);
    validate_pod_spec(spec, "spec", &mut errs);
    ephemeral::validate_only_added(spec, old.get("spec").unwrap_or(&Value::Null), &mut errs);
    errs
}

fn validate_pod_spec(spec: &Value, path: &str, errs: &mut Vec<FieldError>) {
    let mut names = HashSet::new();
    let containers_path = child(path, "containers");
    let containers = get_array(spec, "containers");
    if containers.is_empty() {
        errs.push(required(&containers_path, ""));
    }
    validate_containers(containers, &containers_path, &mut names, errs);
    let init = get_array(spec, "initContainers");
    validate_containers(init, &child(path, "initContainers"), &mut names, errs);
    ephemeral::validate_ephemeral_containers(spec, path, &mut names, errs);
    validate_enum(spec, "restartPolicy", path, RESTART_POLICIES, errs);
    validate_enum(spec, "dnsPolicy", path, DNS_POLICIES, errs);
    dns::validate_pod_dns(spec, path, errs);
    validate_pod_spec_numbers(spec, path, errs);
    if let Some(selector) = get_object(spec, "nodeSelector") {
        validate_labels(selector, &child(path, "nodeSelector"), errs);
    }
    for (i, t) in get_array(spec, "tolerations").iter().enumerate() {
        validate_toleration(t, &index(&child(path, "tolerations"), i), errs);
    }
    scheduling::validate_pod_scheduling(spec, path, errs);
    podspec::validate_pod_spec_support(spec, path, errs);
    volumes::validate_pod_volumes(spec, path, errs);
}

/// An optional string member that, when present, must be one of `allowed`.
fn validate_enum(
    obj: &Value,
    name: &str,
    path: &str,
    allowed: &[&str],
    errs: &mut Vec<FieldError>,
) {
    let Some(v) = get(obj, name) else { return };
    let field = child(path, name);
    match v.as_str() {
        Some("") => errs.push(required(field, "")),
        Some(s) if allowed.contains(&s) => {}
        _ => errs.push(not_supported(field, v, allowed)),
    }
}

fn validate_pod_spec_numbers(spec: &Value, path: &str, errs: &mut Vec<FieldError>) {
    if let Some(ads) = get_i64(spec, "activeDeadlineSeconds") {
        if !(1..=i64::from(i32::MAX)).contains(&ads) {
            errs.push(invalid(
                child(path, "activeDeadlineSeconds"),
                &Value::from(ads),
                range_error(1, i64::from(i32::MAX)),
            ));
        }
    }
    if let Some(grace) = get_i64(spec, "terminationGracePeriodSeconds") {
        if grace < 0 {
            errs.push(invalid(
                child(path, "terminationGracePeriodSeconds"),
                &Value::from(grace),
                NONNEGATIVE_MSG,
            ));
        }
    }
}

fn validate_toleration(t: &Value, path: &str, errs: &mut Vec<FieldError>) {
    let key_name = get_str(t, "key");
    if !key_name.is_empty() {
        push_all(
            errs,
            &child(path, "key"),
            &Value::from(key_name),
            qualified_name_errors(key_name),
        );
    }
    let operator = get_str(t, "operator");
    if operator == "Exists" && !get_str(t, "value").is_empty() {
        errs.push(invalid(
            child(path, "operator"),
            &Value::from(operator),
            "value must be empty when `operator` is 'Exists'",
        ));
    }
    if !operator.is_empty() && operator != "Exists" && operator != "Equal" {
        errs.push(not_supported(
            child(path, "operator"),
            &Value::from(operator),
            &["Equal", "Exists"],
        ));
    }
    let effect = get_str(t, "effect");
    if !effect.is_empty() && !TAINT_EFFECTS.contains(&effect) {
        errs.push(not_supported(
            child(path, "effect"),
            &Value::from(effect),
            TAINT_EFFECTS,
        ));
    }
}

fn validate_containers(
    containers: &[Value],
    path: &str,
    names: &mut HashSet<String>,
    errs: &mut Vec<FieldError>,
) {
    for (i, c) in containers.iter().enumerate() {
        validate_container(c, &index(path, i), names, errs);
    }
}

fn validate_container(
    c: &Value,
    path: &str,
    names: &mut HashSet<String>,
    errs: &mut Vec<FieldError>,
) {
    let name = get_str(c, "name");
    let name_path = child(path, "name");
    if name.is_empty() {
        errs.push(required(&name_path, ""));
    } else {
        push_all(
            errs,
            &name_path,
            &Value::from(name),
            dns1123_label_errors(name),
        );
        if !names.insert(name.to_string()) {
            errs.push(duplicate(&name_path, &Value::from(name)));
        }
    }
    let image = get_str(c, "image");
    if image.is_empty() {
        errs.push(required(child(path, "image"), ""));
    } else if image.trim() != image {
        errs.push(invalid_str(
            child(path, "image"),
            image,
            "must not have leading or trailing whitespace",
        ));
    }
    validate_enum(c, "imagePullPolicy", path, PULL_POLICIES, errs);
    validate_container_ports(get_array(c, "ports"), &child(path, "ports"), errs);
    if let Some(resources) = get(c, "resources") {
        validate_resources(resources, &child(path, "resources"), errs);
    }
}

fn validate_container_ports(ports: &[Value], path: &str, errs: &mut Vec<FieldError>) {
    let mut names = HashSet::new();
    for (i, port) in ports.iter().enumerate() {
        let p = index(path, i);
        let name = get_str(port, "name");
        if !name.is_empty() {
            let msgs = port_name_errors(name);
            if !msgs.is_empty() {
                push_all(errs, &child(&p, "name"), &Value::from(name), msgs);
            } else if !names.insert(name) {
                errs.push(duplicate(child(&p, "name"), &Value::from(name)));
            }
        }
        match get(port, "containerPort") {
            None => errs.push(required(child(&p, "containerPort"), "")),
            Some(v) => validate_port_value(v, &child(&p, "containerPort"), errs),
        }
        if let Some(host_port) = get(port, "hostPort").filter(|v| v.as_i64() != Some(0)) {
            validate_port_value(host_port, &child(&p, "hostPort"), errs);
        }
        validate_protocol(port, &p, errs);
    }
}

fn validate_port_value(v: &Value, field: &str, errs: &mut Vec<FieldError>) {
    // A missing or non-integer port reads as 0, as it would in Go's zero-valued struct.
    let n = v.as_i64().unwrap_or(0);
    push_all(errs, field, &Value::from(n), port_num_errors(n));
}

/// An absent protocol means TCP (the default); an empty one is an error.
fn validate_protocol(port: &Value, path: &str, errs: &mut Vec<FieldError>) {
    validate_enum(port, "protocol", path, PROTOCOLS, errs);
}

/// The resource names a container may ask for without a domain prefix.
fn is_standard_container_resource(name: &str) -> bool {
    matches!(name, "cpu" | "memory" | "ephemeral-storage") || name.starts_with("hugepages-")
}

fn validate_resource_name_for_container(name: &str, field: &str, errs: &mut Vec<FieldError>) {
    if name.contains('/') {
        push_all(errs, field, &Value::from(name), qualified_name_errors(name));
    } else if !is_standard_container_resource(name) {
        errs.push(invalid_str(
            field,
            name,
            "must be a standard resource for containers",
        ));
    }
}

fn validate_resources(resources: &Value, path: &str, errs: &mut Vec<FieldError>) {
    let limits_path = child(path, "limits");
    let mut limits = BTreeMap::new();
    for (name, q) in get_object(resources, "limits").into_iter().flatten() {
        let field = key(&limits_path, name);
        validate_resource_name_for_container(name, &field, errs);
        if let Some(value) = validate_quantity(q, &field, errs) {
            limits.insert(name.as_str(), (value, q));
        }
    }
    let requests_path = child(path, "requests");
    for (name, q) in get_object(resources, "requests").into_iter().flatten() {
        let field = key(&requests_path, name);
        validate_resource_name_for_container(name, &field, errs);
        let Some(request) = validate_quantity(q, &field, errs) else {
            continue;
        };
        if let Some((limit, limit_raw)) = limits.get(name.as_str()) {
            if request > *limit {
                let detail = format!(
                    "must be less than or equal to {name} limit of {}",
                    quantity_text(limit_raw)
                );
                errs.push(invalid_str(field, &quantity_text(q), detail));
            }
        }
    }
}

fn validate_pod_spec_update(new: &Value, old: &Value, errs: &mut Vec<FieldError>) {
    validate_active_deadline_update(new, old, errs);
    if !only_added_tolerations(new, old) {
        errs.push(forbidden(
            "spec.tolerations",
            "existing toleration can not be modified except its tolerationSeconds",
        ));
    }
    let munged = munge_updatable_fields(new, old);
    let (munged, old) = (normalize(&munged), normalize(old));
    if munged != old {
        let mut changed = Vec::new();
        diff_paths(&munged, &old, "spec", &mut changed);
        let detail = format!(
            "pod updates may not change fields other than {}\n  changed: {}",
            UPDATABLE_POD_FIELDS.join(","),
            changed.join(", ")
        );
        errs.push(forbidden("spec", detail));
    }
}

fn validate_active_deadline_update(new: &Value, old: &Value, errs: &mut Vec<FieldError>) {
    let Some(previous) = get_i64(old, "activeDeadlineSeconds") else {
        return;
    };
    let field = "spec.activeDeadlineSeconds";
    match get_i64(new, "activeDeadlineSeconds") {
        None => errs.push(invalid(
            field,
            &Value::Null,
            "must not update from a positive integer to nil value",
        )),
        Some(now) if now > previous => errs.push(invalid(
            field,
            &Value::from(now),
            "must be less than or equal to previous value",
        )),
        _ => {}
    }
}

/// Every old toleration must survive, apart from its tolerationSeconds.
fn only_added_tolerations(new: &Value, old: &Value) -> bool {
    let strip = |t: &Value| {
        let mut t = normalize(t);
        if let Some(m) = t.as_object_mut() {
            m.remove("tolerationSeconds");
        }
        t
    };
    let new_list: Vec<Value> = get_array(new, "tolerations").iter().map(strip).collect();
    get_array(old, "tolerations")
        .iter()
        .all(|t| new_list.contains(&strip(t)))
}

/// Copies the old values of the fields a pod update may change into the new spec, so
/// that any remaining difference is a forbidden change.
fn munge_updatable_fields(new: &Value, old: &Value) -> Value {
    let mut munged = new.clone();
    for list in ["containers", "initContainers"] {
        copy_images(&mut munged, old, list);
    }
    for name in ["activeDeadlineSeconds", "tolerations"] {
        set_member(&mut munged, name, old.get(name));
    }
    let old_grace = get_i64(old, "terminationGracePeriodSeconds");
    if old_grace.is_some_and(|g| g < 0) && get_i64(new, "terminationGracePeriodSeconds") == Some(1)
    {
        set_member(
            &mut munged,
            "terminationGracePeriodSeconds",
            old.get("terminationGracePeriodSeconds"),
        );
    }
    munged
}

fn copy_images(munged: &mut Value, old: &Value, list: &str) {
    let old_list = get_array(old, list);
    let Some(new_list) = munged.get_mut(list).and_then(Value::as_array_mut) else {
        return;
    };
    if new_list.len() != old_list.len() {
        return;
    }
    for (c, o) in new_list.iter_mut().zip(old_list) {
        set_member(c, "image", o.get("image"));
    }
}

fn set_member(target: &mut Value, name: &str, value: Option<&Value>) {
    let Some(map) = target.as_object_mut() else {
        return;
    };
    match value {
        Some(v) => map.insert(name.to_string(), v.clone()),
        None => map.remove(name),
    };
}

/// Compares like Kubernetes' semantic equality: null, empty lists and empty maps equal
/// absence, and 30.0 equals 30.
fn normalize(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| (k.clone(), normalize(v)))
                .filter(|(_, v)| !is_empty_value(v))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(normalize).collect()),
        Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() && f.fract() == 0.0 && f.abs() < 9.0e15 => Value::from(f as i64),
            _ => v.clone(),
        },
        other => other.clone(),
    }
}

fn is_empty_value(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Array(a) => a.is_empty(),
        Value::Object(m) => m.is_empty(),
        _ => false,
    }
}

fn diff_paths(a: &Value, b: &Value, path: &str, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                let (l, r) = (
                    x.get(k).unwrap_or(&Value::Null),
                    y.get(k).unwrap_or(&Value::Null),
                );
                diff_paths(l, r, &child(path, k), out);
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (l, r)) in x.iter().zip(y).enumerate() {
                diff_paths(l, r, &index(path, i), out);
            }
        }
        _ if a != b => out.push(path.to_string()),
        _ => {}
    }
}

// ---------------------------------------------------------------------------
// Service
// ---------------------------------------------------------------------------

const SERVICE_TYPES: &[&str] = &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"];

pub(crate) fn validate_service(obj: &Value, old: Option<&Value>, errs: &mut Vec<FieldError>) {
    let spec = obj.get("spec").unwrap_or(&Value::Null);
    let service_type = get(spec, "type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP");
    validate_enum(spec, "type", "spec", SERVICE_TYPES, errs);
    let cluster_ip = get_str(spec, "clusterIP");
    let headless = cluster_ip == "None";
    let ports = get_array(spec, "ports");
    if ports.is_empty() && !headless && service_type != "ExternalName" {
        errs.push(required("spec.ports", ""));
    }
    validate_service_ports(ports, service_type, errs);
    if service_type == "ExternalName" {
        validate_external_name(spec, errs);
    } else if !cluster_ip.is_empty() && !headless && cluster_ip.parse::<IpAddr>().is_err() {
        errs.push(invalid_str(
            "spec.clusterIP",
            cluster_ip,
            "must be empty, 'None', or a valid IP address",
        ));
    }
    if let Some(selector) = get_object(spec, "selector") {
        validate_labels(selector, "spec.selector", errs);
    }
    validate_enum(spec, "sessionAffinity", "spec", &["ClientIP", "None"], errs);
    // Parts of a Service no part of skiff carries out yet: refused rather than ignored.
    for name in [
        "externalIPs",
        "loadBalancerSourceRanges",
        "loadBalancerIP",
        "healthCheckNodePort",
        "trafficDistribution",
    ] {
        let set = get(spec, name).is_some_and(|v| {
            !(v.as_array().is_some_and(Vec::is_empty) || v.as_str() == Some("") || v == 0)
        });
        if set {
            errs.push(forbidden(child("spec", name), podspec::UNSUPPORTED));
        }
    }
    if get(spec, "allocateLoadBalancerNodePorts").and_then(Value::as_bool) == Some(false) {
        errs.push(forbidden(
            "spec.allocateLoadBalancerNodePorts",
            "skiff's load balancer reaches Services through their node ports: must be true",
        ));
    }
    if let Some(old) = old {
        validate_service_update(spec, old, errs);
    }
}

fn validate_external_name(spec: &Value, errs: &mut Vec<FieldError>) {
    if !get_str(spec, "clusterIP").is_empty() {
        errs.push(forbidden(
            "spec.clusterIP",
            "may not be set for ExternalName services",
        ));
    }
    // A trailing dot marks the name as fully qualified and is allowed.
    let cname = get_str(spec, "externalName").trim_end_matches('.');
    if cname.is_empty() {
        errs.push(required("spec.externalName", ""));
    } else {
        push_all(
            errs,
            "spec.externalName",
            &Value::from(cname),
            dns1123_subdomain_errors(cname),
        );
    }
}

fn validate_service_ports(ports: &[Value], service_type: &str, errs: &mut Vec<FieldError>) {
    let require_name = ports.len() > 1;
    let mut names = HashSet::new();
    let mut node_ports = HashSet::new();
    for (i, port) in ports.iter().enumerate() {
        let p = index("spec.ports", i);
        validate_service_port_name(port, &p, require_name, &mut names, errs);
        validate_port_value(
            port.get("port").unwrap_or(&Value::Null),
            &child(&p, "port"),
            errs,
        );
        validate_protocol(port, &p, errs);
        if let Some(target) = get(port, "targetPort") {
            validate_port_num_or_name(target, &child(&p, "targetPort"), errs);
        }
        validate_node_port(port, &p, service_type, &mut node_ports, errs);
    }
}

fn validate_service_port_name(
    port: &Value,
    path: &str,
    require_name: bool,
    names: &mut HashSet<String>,
    errs: &mut Vec<FieldError>,
) {
    let name = get_str(port, "name");
    let field = child(path, "name");
    if name.is_empty() {
        if require_name {
            errs.push(required(field, ""));
        }
        return;
    }
    push_all(errs, &field, &Value::from(name), dns1123_label_errors(name));
    if !names.insert(name.to_string()) {
        errs.push(duplicate(field, &Value::from(name)));
    }
}

/// targetPort is an IntOrString: a port number, or the name of a container port.
fn validate_port_num_or_name(v: &Value, field: &str, errs: &mut Vec<FieldError>) {
    match v {
        // Zero and "" mean "same as port"; defaulting fills them in.
        Value::Number(n) if n.as_i64() == Some(0) => {}
        Value::String(s) if s.is_empty() => {}
        Value::Number(_) => validate_port_value(v, field, errs),
        Value::String(s) => push_all(errs, field, v, port_name_errors(s)),
        other => errs.push(invalid(field, other, "must be an integer or a string")),
    }
}

fn validate_node_port(
    port: &Value,
    path: &str,
    service_type: &str,
    seen: &mut HashSet<i64>,
    errs: &mut Vec<FieldError>,
) {
    let Some(v) = get(port, "nodePort").filter(|v| v.as_i64() != Some(0)) else {
        return;
    };
    let field = child(path, "nodePort");
    if service_type != "NodePort" && service_type != "LoadBalancer" {
        errs.push(forbidden(
            field,
            format!("may not be used when `type` is '{service_type}'"),
        ));
        return;
    }
    validate_port_value(v, &field, errs);
    let protocol = get(port, "protocol")
        .and_then(Value::as_str)
        .unwrap_or("TCP");
    // The same node port may serve TCP and UDP, so uniqueness is per protocol.
    let n = v.as_i64().unwrap_or(0);
    let slot = n * 4 + PROTOCOLS.iter().position(|p| *p == protocol).unwrap_or(3) as i64;
    if !seen.insert(slot) {
        errs.push(duplicate(field, v));
    }
}

fn validate_service_update(spec: &Value, old: &Value, errs: &mut Vec<FieldError>) {
    let old_spec = old.get("spec").unwrap_or(&Value::Null);
    let (new_ip, old_ip) = (get_str(spec, "clusterIP"), get_str(old_spec, "clusterIP"));
    let becomes_external = get_str(spec, "type") == "ExternalName";
    // An omitted clusterIP is carried over by the gateway; only a different one is an error.
    if !new_ip.is_empty() && !old_ip.is_empty() && new_ip != old_ip && !becomes_external {
        errs.push(invalid_str("spec.clusterIP", new_ip, IMMUTABLE_MSG));
    }
}

// ---------------------------------------------------------------------------
// ReplicationController
// ---------------------------------------------------------------------------

pub(crate) fn validate_rc(obj: &Value, errs: &mut Vec<FieldError>) {
    let spec = obj.get("spec").unwrap_or(&Value::Null);
    for name in ["replicas", "minReadySeconds"] {
        if let Some(n) = get_i64(spec, name).filter(|n| *n < 0) {
            errs.push(invalid(
                child("spec", name),
                &Value::from(n),
                NONNEGATIVE_MSG,
            ));
        }
    }
    let selector = get_object(spec, "selector").filter(|s| !s.is_empty());
    match selector {
        None => errs.push(required("spec.selector", "")),
        Some(s) => validate_labels(s, "spec.selector", errs),
    }
    match get(spec, "template") {
        None => errs.push(required("spec.template", "")),
        Some(template) => validate_rc_template(template, selector, errs),
    }
}

fn validate_rc_template(
    template: &Value,
    selector: Option<&Map<String, Value>>,
    errs: &mut Vec<FieldError>,
) {
    let meta = template.get("metadata").unwrap_or(&Value::Null);
    let empty = Map::new();
    let labels = get_object(meta, "labels").unwrap_or(&empty);
    let matches = selector.is_none_or(|s| s.iter().all(|(k, v)| labels.get(k) == Some(v)));
    if !matches {
        errs.push(invalid(
            "spec.template.metadata.labels",
            &Value::Object(labels.clone()),
            "`selector` does not match template `labels`",
        ));
    }
    validate_pod_template_spec(template, "spec.template", errs);
    let spec = template.get("spec").unwrap_or(&Value::Null);
    let policy = get(spec, "restartPolicy");
    if policy.is_some_and(|p| p.as_str() != Some("Always")) {
        errs.push(not_supported(
            "spec.template.spec.restartPolicy",
            policy.unwrap_or(&Value::Null),
            &["Always"],
        ));
    }
    if let Some(ads) = get(spec, "activeDeadlineSeconds") {
        errs.push(invalid(
            "spec.template.spec.activeDeadlineSeconds",
            ads,
            "activeDeadlineSeconds in ReplicationController is not Supported",
        ));
    }
}

/// A pod template (`ValidatePodTemplateSpec`) at `path`: its labels and annotations and
/// its pod spec, for every kind that embeds one.
pub(crate) fn validate_pod_template_spec(template: &Value, path: &str, errs: &mut Vec<FieldError>) {
    let meta = template.get("metadata").unwrap_or(&Value::Null);
    if let Some(labels) = get_object(meta, "labels") {
        validate_labels(labels, &format!("{path}.metadata.labels"), errs);
    }
    if let Some(annotations) = get_object(meta, "annotations") {
        validate_annotations(annotations, &format!("{path}.metadata.annotations"), errs);
    }
    let spec = template.get("spec").unwrap_or(&Value::Null);
    validate_pod_spec(spec, &format!("{path}.spec"), errs);
    ephemeral::validate_none_in_template(spec, &format!("{path}.spec"), errs);
}

// ---------------------------------------------------------------------------
// Namespace, Node, Endpoints, ResourceQuota, Event
// ---------------------------------------------------------------------------

pub(crate) fn validate_namespace(obj: &Value, errs: &mut Vec<FieldError>) {
    let spec = obj.get("spec").unwrap_or(&Value::Null);
    for (i, f) in get_array(spec, "finalizers").iter().enumerate() {
        let name = f.as_str().unwrap_or("");
        let field = index("spec.finalizers", i);
        if name.contains('/') {
            push_all(errs, &field, f, qualified_name_errors(name));
        } else if name != "kubernetes" {
            errs.push(invalid(
                field,
                f,
                "name is neither a standard finalizer name nor is it fully qualified",
            ));
        }
    }
}

pub(crate) fn validate_node(obj: &Value, old: Option<&Value>, errs: &mut Vec<FieldError>) {
    let spec = obj.get("spec").unwrap_or(&Value::Null);
    let cidr = get_str(spec, "podCIDR");
    if !cidr.is_empty() && !is_cidr(cidr) {
        errs.push(invalid_str(
            "spec.podCIDR",
            cidr,
            "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)",
        ));
    }
    validate_taints(get_array(spec, "taints"), errs);
    let old_cidr = old
        .and_then(|o| o.get("spec"))
        .map(|s| get_str(s, "podCIDR"))
        .unwrap_or("");
    if !old_cidr.is_empty() && old_cidr != cidr {
        errs.push(forbidden(
            "spec.podCIDR",
            "node updates may not change podCIDR except from \"\" to valid",
        ));
    }
}

fn is_cidr(s: &str) -> bool {
    let Some((ip, bits)) = s.split_once('/') else {
        return false;
    };
    let Ok(ip) = ip.parse::<IpAddr>() else {
        return false;
    };
    let max = if ip.is_ipv4() { 32 } else { 128 };
    bits.parse::<u8>().is_ok_and(|b| b <= max)
}

fn validate_taints(taints: &[Value], errs: &mut Vec<FieldError>) {
    let mut seen = HashSet::new();
    for (i, t) in taints.iter().enumerate() {
        let p = index("spec.taints", i);
        let taint_key = get_str(t, "key");
        push_all(
            errs,
            &child(&p, "key"),
            &Value::from(taint_key),
            qualified_name_errors(taint_key),
        );
        let value = get_str(t, "value");
        push_all(
            errs,
            &child(&p, "value"),
            &Value::from(value),
            label_value_errors(value),
        );
        let effect = get_str(t, "effect");
        if effect.is_empty() {
            errs.push(required(child(&p, "effect"), ""));
        } else if !TAINT_EFFECTS.contains(&effect) {
            errs.push(not_supported(
                child(&p, "effect"),
                &Value::from(effect),
                TAINT_EFFECTS,
            ));
        }
        if !seen.insert((taint_key, effect)) {
            errs.push(duplicate(p, t));
        }
    }
}

pub(crate) fn validate_endpoints(obj: &Value, errs: &mut Vec<FieldError>) {
    for (i, subset) in get_array(obj, "subsets").iter().enumerate() {
        let p = index("subsets", i);
        let ready = get_array(subset, "addresses");
        let not_ready = get_array(subset, "notReadyAddresses");
        if ready.is_empty() && not_ready.is_empty() {
            errs.push(required(
                &p,
                "must specify `addresses` or `notReadyAddresses`",
            ));
        }
        for (list, name) in [(ready, "addresses"), (not_ready, "notReadyAddresses")] {
            for (j, address) in list.iter().enumerate() {
                validate_endpoint_address(address, &index(&child(&p, name), j), errs);
            }
        }
        let ports = get_array(subset, "ports");
        for (j, port) in ports.iter().enumerate() {
            validate_endpoint_port(port, &index(&child(&p, "ports"), j), ports.len() > 1, errs);
        }
    }
}

fn validate_endpoint_address(address: &Value, path: &str, errs: &mut Vec<FieldError>) {
    let ip = get_str(address, "ip");
    let ip_path = child(path, "ip");
    match ip.parse::<IpAddr>() {
        _ if ip.is_empty() => errs.push(required(ip_path, "")),
        Err(_) => errs.push(invalid_str(ip_path, ip, IP_MSG)),
        // Loopback is allowed on purpose: skiff runs whole clusters on one machine.
        Ok(addr) if addr.is_unspecified() => errs.push(invalid_str(
            ip_path,
            ip,
            format!("may not be unspecified ({ip})"),
        )),
        Ok(_) => {}
    }
    let hostname = get_str(address, "hostname");
    if !hostname.is_empty() {
        push_all(
            errs,
            &child(path, "hostname"),
            &Value::from(hostname),
            dns1123_label_errors(hostname),
        );
    }
    let node = get_str(address, "nodeName");
    if !node.is_empty() {
        push_all(
            errs,
            &child(path, "nodeName"),
            &Value::from(node),
            dns1123_subdomain_errors(node),
        );
    }
}

fn validate_endpoint_port(
    port: &Value,
    path: &str,
    require_name: bool,
    errs: &mut Vec<FieldError>,
) {
    let name = get_str(port, "name");
    if name.is_empty() && require_name {
        errs.push(required(child(path, "name"), ""));
    } else if !name.is_empty() {
        push_all(
            errs,
            &child(path, "name"),
            &Value::from(name),
            dns1123_label_errors(name),
        );
    }
    validate_port_value(
        port.get("port").unwrap_or(&Value::Null),
        &child(path, "port"),
        errs,
    );
    validate_protocol(port, path, errs);
}

const STANDARD_QUOTA_RESOURCES: &[&str] = &[
    "cpu",
    "memory",
    "ephemeral-storage",
    "requests.cpu",
    "requests.memory",
    "requests.storage",
    "requests.ephemeral-storage",
    "limits.cpu",
    "limits.memory",
    "limits.ephemeral-storage",
    "pods",
    "services",
    "replicationcontrollers",
    "resourcequotas",
    "secrets",
    "configmaps",
    "persistentvolumeclaims",
    "services.nodeports",
    "services.loadbalancers",
];

const INTEGER_QUOTA_RESOURCES: &[&str] = &[
    "pods",
    "services",
    "replicationcontrollers",
    "resourcequotas",
    "secrets",
    "configmaps",
    "persistentvolumeclaims",
    "services.nodeports",
    "services.loadbalancers",
];

const QUOTA_SCOPES: &[&str] = &[
    "BestEffort",
    "CrossNamespacePodAffinity",
    "NotBestEffort",
    "NotTerminating",
    "PriorityClass",
    "Terminating",
];

fn is_standard_quota_resource(name: &str) -> bool {
    STANDARD_QUOTA_RESOURCES.contains(&name)
        || name.starts_with("hugepages-")
        || name.starts_with("requests.hugepages-")
}

pub(crate) fn validate_resource_quota(obj: &Value, errs: &mut Vec<FieldError>) {
    let spec = obj.get("spec").unwrap_or(&Value::Null);
    for (name, q) in get_object(spec, "hard").into_iter().flatten() {
        let field = key("spec.hard", name);
        if name.contains('/') {
            push_all(
                errs,
                &field,
                &Value::from(name.as_str()),
                qualified_name_errors(name),
            );
        } else if !is_standard_quota_resource(name) {
            errs.push(invalid_str(
                &field,
                name,
                "must be a standard resource for quota",
            ));
        }
        let Some(value) = validate_quantity(q, &field, errs) else {
            continue;
        };
        let integer =
            INTEGER_QUOTA_RESOURCES.contains(&name.as_str()) || name.starts_with("count/");
        if integer && value.fract() != 0.0 {
            errs.push(invalid_str(field, &quantity_text(q), "must be an integer"));
        }
    }
    for (i, scope) in get_array(spec, "scopes").iter().enumerate() {
        let known = scope.as_str().is_some_and(|s| QUOTA_SCOPES.contains(&s));
        if !known {
            errs.push(not_supported(index("spec.scopes", i), scope, QUOTA_SCOPES));
        }
    }
}

pub(crate) fn validate_event(obj: &Value, errs: &mut Vec<FieldError>) {
    let Some(involved) = get(obj, "involvedObject") else {
        errs.push(required("involvedObject", ""));
        return;
    };
    for name in ["kind", "name"] {
        if get_str(involved, name).is_empty() {
            errs.push(required(child("involvedObject", name), ""));
        }
    }
    let namespace = obj
        .get("metadata")
        .map(|m| get_str(m, "namespace"))
        .unwrap_or("");
    let involved_ns = get_str(involved, "namespace");
    // Events about cluster-scoped objects live in "default" (or nowhere) by convention.
    let matches = if involved_ns.is_empty() {
        namespace.is_empty() || namespace == "default"
    } else {
        namespace == involved_ns
    };
    if !matches {
        errs.push(invalid_str(
            "involvedObject.namespace",
            involved_ns,
            "does not match event.namespace",
        ));
    }
}

// ---------------------------------------------------------------------------
// Binding, Scale, DeleteOptions
// ---------------------------------------------------------------------------

fn validate_binding(obj: &Value, errs: &mut Vec<FieldError>) {
    let target = obj.get("target").unwrap_or(&Value::Null);
    let kind = get_str(target, "kind");
    if !kind.is_empty() && kind != "Node" {
        errs.push(not_supported(
            "target.kind",
            &Value::from(kind),
            &["Node", "<empty>"],
        ));
    }
    if get_str(target, "name").is_empty() {
        errs.push(required("target.name", ""));
    }
}

/// autoscaling/v1 HorizontalPodAutoscaler, with Kubernetes' messages.
fn validate_scale(obj: &Value, errs: &mut Vec<FieldError>) {
    let spec = obj.get("spec").unwrap_or(&Value::Null);
    if let Some(n) = get_i64(spec, "replicas").filter(|n| *n < 0) {
        errs.push(invalid("spec.replicas", &Value::from(n), NONNEGATIVE_MSG));
    }
}

fn validate_delete_options(obj: &Value, errs: &mut Vec<FieldError>) {
    let Some(policy) = get(obj, "propagationPolicy") else {
        return;
    };
    if get(obj, "orphanDependents").is_some() {
        errs.push(invalid(
            "propagationPolicy",
            policy,
            "orphanDependents and deletionPropagation cannot be both set",
        ));
    }
    let known = ["Foreground", "Background", "Orphan"];
    if !policy.as_str().is_some_and(|p| known.contains(&p)) {
        errs.push(not_supported(
            "propagationPolicy",
            policy,
            &["Foreground", "Background", "Orphan", "nil"],
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(spec: Value) -> Value {
        json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": spec,
        })
    }

    fn simple_pod() -> Value {
        pod(json!({"containers": [{"name": "app", "image": "nginx"}]}))
    }

    fn messages(errs: &[FieldError]) -> Vec<String> {
        errs.iter().map(FieldError::message).collect()
    }

    fn has(errs: &[FieldError], message: &str) -> bool {
        messages(errs).iter().any(|m| m == message)
    }

    fn rc(selector: Value, labels: Value) -> Value {
        json!({
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {
                "replicas": 2,
                "selector": selector,
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {"containers": [{"name": "app", "image": "nginx"}]},
                },
            },
        })
    }

    fn service(spec: Value) -> Value {
        json!({"metadata": {"name": "web", "namespace": "default"}, "spec": spec})
    }

    // --- formats ---

    #[test]
    fn dns_label_and_subdomain_rules_follow_rfc_1123() {
        assert!(is_dns1123_label("my-name"));
        assert!(is_dns1123_label("123-abc"));
        assert!(!is_dns1123_label("My-name"));
        assert!(!is_dns1123_label("-a"));
        assert!(!is_dns1123_label(""));
        assert!(!is_dns1123_label(&"a".repeat(64)));
        assert!(is_dns1123_subdomain("example.com"));
        assert!(!is_dns1123_subdomain("example..com"));
        assert!(!is_dns1123_subdomain("example.com."));
        assert!(!is_dns1123_subdomain(&"a.".repeat(127)));
        assert!(is_dns1035_label("abc-123"));
        assert!(!is_dns1035_label("1abc"));
    }

    #[test]
    fn qualified_names_allow_a_subdomain_prefix() {
        assert!(qualified_name_errors("app").is_empty());
        assert!(qualified_name_errors("example.com/My_Name").is_empty());
        assert_eq!(
            qualified_name_errors("/a"),
            vec!["prefix part must be non-empty"]
        );
        assert_eq!(qualified_name_errors("a/b/c").len(), 1);
        assert_eq!(qualified_name_errors("bad name").len(), 1);
    }

    #[test]
    fn port_names_must_be_iana_service_names() {
        assert!(port_name_errors("http").is_empty());
        assert!(port_name_errors("web-8080").is_empty());
        assert!(!port_name_errors("8080").is_empty());
        assert!(!port_name_errors("a--b").is_empty());
        assert!(!port_name_errors("averyveryverylongname").is_empty());
    }

    // --- quantities ---

    #[test]
    fn quantities_parse_in_base_units() {
        assert_eq!(parse_quantity("100m"), Some(0.1));
        assert_eq!(parse_quantity("1"), Some(1.0));
        assert_eq!(parse_quantity("0.5"), Some(0.5));
        assert_eq!(parse_quantity("128Mi"), Some(128.0 * 1024.0 * 1024.0));
        assert_eq!(parse_quantity("1Gi"), Some(1024f64.powi(3)));
        assert_eq!(parse_quantity("1e3"), Some(1000.0));
        assert_eq!(parse_quantity("2k"), Some(2000.0));
        assert_eq!(parse_quantity("1E"), Some(1e18));
        assert_eq!(parse_quantity("-1"), Some(-1.0));
        assert_eq!(parse_quantity(".5"), Some(0.5));
    }

    #[test]
    fn malformed_quantities_are_rejected() {
        for bad in ["", "abc", "1.2.3", "1Ki2", "1x", ".", "1e", "Mi", "1 Gi"] {
            assert_eq!(parse_quantity(bad), None, "{bad}");
        }
    }

    #[test]
    fn quantities_may_be_json_numbers() {
        assert_eq!(quantity_value(&json!(2)), Some(2.0));
        assert_eq!(quantity_value(&json!("250m")), Some(0.25));
        assert_eq!(quantity_value(&json!(true)), None);
    }

    // --- messages ---

    #[test]
    fn messages_match_kubernetes_wording() {
        let e = required("spec.containers[0].image", "");
        assert_eq!(e.message(), "spec.containers[0].image: Required value");
        assert_eq!(e.reason(), "FieldValueRequired");
        let e = not_supported("spec.restartPolicy", &json!("Sometimes"), RESTART_POLICIES);
        assert_eq!(
            e.message(),
            "spec.restartPolicy: Unsupported value: \"Sometimes\": supported values: \"Always\", \"OnFailure\", \"Never\""
        );
        let e = invalid("spec.replicas", &json!(-1), NONNEGATIVE_MSG);
        assert_eq!(
            e.message(),
            "spec.replicas: Invalid value: -1: must be greater than or equal to 0"
        );
        assert_eq!(
            too_long("metadata.annotations", 262144).message(),
            "metadata.annotations: Too long: may not be more than 262144 bytes"
        );
    }

    #[test]
    fn invalid_name_message_matches_kubernetes() {
        let mut p = simple_pod();
        p["metadata"]["name"] = json!("Foo");
        let errs = validate("Pod", &p, None);
        assert_eq!(
            messages(&errs),
            vec!["metadata.name: Invalid value: \"Foo\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"]
        );
        assert_eq!(errs[0].reason(), "FieldValueInvalid");
    }

    // --- decoding ---

    #[test]
    fn well_formed_pod_decodes_without_unknown_fields() {
        assert_eq!(decode_check("Pod", &simple_pod()).ok(), Some(vec![]));
    }

    #[test]
    fn strict_decode_reports_misspelled_container_field() {
        let p = pod(json!({"foo": 1, "containers": [{"name": "app", "imagee": "nginx"}]}));
        let unknown = decode_check("Pod", &p).unwrap_or_default();
        assert_eq!(unknown, vec!["spec.containers[0].imagee", "spec.foo"]);
    }

    #[test]
    fn strict_decode_ignores_free_form_maps_and_nulls() {
        let mut p = simple_pod();
        p["metadata"]["labels"] = json!({"anything": "goes"});
        p["spec"]["containers"][0]["resources"] =
            json!({"limits": {"cpu": 1, "example.com/gpu": "2"}});
        p["spec"]["nodeName"] = Value::Null;
        assert_eq!(decode_check("Pod", &p).ok(), Some(vec![]));
    }

    #[test]
    fn decode_reports_wrong_json_type_with_field_path() {
        let p = pod(json!({"containers": [{"name": "app", "image": 5}]}));
        let err = decode_check("Pod", &p)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.starts_with("Pod in version \"v1\" cannot be handled as a Pod: "),
            "{err}"
        );
        assert!(err.contains("spec.containers[0].image"), "{err}");
        assert!(err.contains("cannot unmarshal number"), "{err}");
    }

    #[test]
    fn decode_rejects_a_body_that_is_not_an_object() {
        assert!(decode_check("Service", &json!([1, 2])).is_err());
    }

    #[test]
    fn decode_accepts_missing_required_members() {
        // Kubernetes decodes a missing container name as "" and lets validation report it.
        let p = pod(json!({"containers": [{"image": "nginx"}]}));
        assert_eq!(decode_check("Pod", &p).ok(), Some(vec![]));
    }

    #[test]
    fn decode_ignores_api_version_and_kind() {
        let body = json!({"apiVersion": "meta.k8s.io/v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0});
        assert_eq!(decode_check("DeleteOptions", &body).ok(), Some(vec![]));
        let scale =
            json!({"apiVersion": "autoscaling/v1", "kind": "Scale", "spec": {"replicas": 3}});
        assert_eq!(decode_check("Scale", &scale).ok(), Some(vec![]));
    }

    #[test]
    fn unknown_kinds_decode_as_unchecked() {
        assert!(!has_schema("Widget"));
        assert_eq!(
            decode_check("Widget", &json!({"data": {}})).ok(),
            Some(vec![])
        );
    }

    // --- metadata ---

    #[test]
    fn valid_pod_has_no_errors() {
        assert_eq!(validate("Pod", &simple_pod(), None), vec![]);
    }

    #[test]
    fn name_is_required_unless_generate_name_is_given() {
        let mut p = simple_pod();
        p["metadata"] = json!({"namespace": "default"});
        let errs = validate("Pod", &p, None);
        assert!(has(
            &errs,
            "metadata.name: Required value: name or generateName is required"
        ));
        p["metadata"]["generateName"] = json!("web-");
        assert_eq!(validate("Pod", &p, None), vec![]);
    }

    #[test]
    fn namespaced_kinds_need_a_namespace_and_cluster_kinds_refuse_one() {
        let mut p = simple_pod();
        p["metadata"] = json!({"name": "web"});
        assert!(has(
            &validate("Pod", &p, None),
            "metadata.namespace: Required value"
        ));
        let ns = json!({"metadata": {"name": "team", "namespace": "default"}});
        assert!(has(
            &validate("Namespace", &ns, None),
            "metadata.namespace: Forbidden: not allowed on this type"
        ));
    }

    #[test]
    fn service_names_must_start_with_a_letter() {
        let mut s = service(json!({"ports": [{"port": 80}]}));
        s["metadata"]["name"] = json!("1web");
        let errs = validate("Service", &s, None);
        assert_eq!(errs.len(), 1);
        assert!(errs[0].detail.starts_with("a DNS-1035 label"));
    }

    #[test]
    fn namespace_names_are_labels_and_node_names_are_subdomains() {
        let ns = json!({"metadata": {"name": "a.b"}});
        assert_eq!(validate("Namespace", &ns, None).len(), 1);
        let node = json!({"metadata": {"name": "node-1.example.com"}});
        assert_eq!(validate("Node", &node, None), vec![]);
    }

    #[test]
    fn bad_label_keys_and_values_are_reported_on_metadata_labels() {
        let mut p = simple_pod();
        p["metadata"]["labels"] =
            json!({"bad key": "ok", "ok": "bad value!", "example.com/fine": "yes"});
        let errs = validate("Pod", &p, None);
        assert_eq!(errs.len(), 2, "{:?}", messages(&errs));
        assert!(errs.iter().all(|e| e.field == "metadata.labels"));
        assert_eq!(errs[0].value.as_deref(), Some("\"bad key\""));
    }

    #[test]
    fn annotation_keys_ignore_case_but_must_be_qualified() {
        let mut p = simple_pod();
        p["metadata"]["annotations"] = json!({"Example.COM/Thing": "x", "a/b/c": "y"});
        let errs = validate("Pod", &p, None);
        assert_eq!(errs.len(), 1, "{:?}", messages(&errs));
        assert_eq!(errs[0].field, "metadata.annotations");
    }

    #[test]
    fn oversized_annotations_are_too_long() {
        let mut p = simple_pod();
        p["metadata"]["annotations"] = json!({"big": "x".repeat(TOTAL_ANNOTATION_SIZE)});
        let errs = validate("Pod", &p, None);
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].reason(), "FieldValueTooLong");
    }

    #[test]
    fn update_may_not_change_name_namespace_or_uid() {
        let mut old = simple_pod();
        old["metadata"]["uid"] = json!("u1");
        old["metadata"]["creationTimestamp"] = json!("2024-01-01T00:00:00Z");
        let mut new = old.clone();
        new["metadata"]["name"] = json!("other");
        new["metadata"]["uid"] = json!("u2");
        let errs = validate("Pod", &new, Some(&old));
        assert!(has(
            &errs,
            "metadata.name: Invalid value: \"other\": field is immutable"
        ));
        assert!(has(
            &errs,
            "metadata.uid: Invalid value: \"u2\": field is immutable"
        ));
        assert_eq!(errs.len(), 2, "{:?}", messages(&errs));
    }

    #[test]
    fn update_without_uid_or_timestamp_keeps_the_stored_ones() {
        let mut old = simple_pod();
        old["metadata"]["uid"] = json!("u1");
        old["metadata"]["creationTimestamp"] = json!("2024-01-01T00:00:00Z");
        assert_eq!(validate("Pod", &simple_pod(), Some(&old)), vec![]);
    }

    // --- pods ---

    #[test]
    fn pod_without_containers_is_invalid() {
        let errs = validate("Pod", &pod(json!({"containers": []})), None);
        assert_eq!(messages(&errs), vec!["spec.containers: Required value"]);
        let mut no_spec = simple_pod();
        no_spec.as_object_mut().map(|m| m.remove("spec"));
        assert!(has(
            &validate("Pod", &no_spec, None),
            "spec.containers: Required value"
        ));
    }

    #[test]
    fn container_needs_a_name_and_an_image() {
        let errs = validate("Pod", &pod(json!({"containers": [{}]})), None);
        assert_eq!(
            messages(&errs),
            vec![
                "spec.containers[0].name: Required value",
                "spec.containers[0].image: Required value"
            ]
        );
    }

    #[test]
    fn container_names_must_be_unique_across_init_and_app_containers() {
        let spec = json!({
            "initContainers": [{"name": "app", "image": "busybox"}],
            "containers": [{"name": "app", "image": "nginx"}, {"name": "app", "image": "nginx"}],
        });
        let errs = validate("Pod", &pod(spec), None);
        assert_eq!(errs.len(), 2, "{:?}", messages(&errs));
        assert!(has(
            &errs,
            "spec.containers[1].name: Duplicate value: \"app\""
        ));
        assert!(has(
            &errs,
            "spec.initContainers[0].name: Duplicate value: \"app\""
        ));
    }

    #[test]
    fn container_ports_are_checked() {
        let spec = json!({"containers": [{"name": "app", "image": "nginx", "ports": [
            {"containerPort": 0},
            {"containerPort": 70000, "protocol": "HTTP"},
            {"containerPort": 80, "name": "http"},
            {"containerPort": 81, "name": "http"},
            {"containerPort": 82, "name": "8080"},
        ]}]});
        let errs = validate("Pod", &pod(spec), None);
        let p = "spec.containers[0].ports";
        assert!(has(
            &errs,
            &format!(
                "{p}[0].containerPort: Invalid value: 0: must be between 1 and 65535, inclusive"
            )
        ));
        assert!(has(&errs, &format!("{p}[1].containerPort: Invalid value: 70000: must be between 1 and 65535, inclusive")));
        assert!(has(&errs, &format!("{p}[1].protocol: Unsupported value: \"HTTP\": supported values: \"SCTP\", \"TCP\", \"UDP\"")));
        assert!(has(
            &errs,
            &format!("{p}[3].name: Duplicate value: \"http\"")
        ));
        assert!(has(
            &errs,
            &format!(
                "{p}[4].name: Invalid value: \"8080\": must contain at least one letter (a-z)"
            )
        ));
        assert_eq!(errs.len(), 5, "{:?}", messages(&errs));
    }

    #[test]
    fn env_var_names_must_be_valid() {
        let spec = json!({"containers": [{"name": "app", "image": "nginx", "env": [
            {"name": "GOOD_NAME", "value": "1"},
            {"value": "2"},
            {"name": "1BAD"},
            {"name": ".."},
        ]}]});
        let errs = validate("Pod", &pod(spec), None);
        assert!(has(&errs, "spec.containers[0].env[1].name: Required value"));
        assert!(errs
            .iter()
            .any(|e| e.field == "spec.containers[0].env[2].name"));
        assert!(has(
            &errs,
            "spec.containers[0].env[3].name: Invalid value: \"..\": must not be '..'"
        ));
        assert_eq!(errs.len(), 3, "{:?}", messages(&errs));
    }

    #[test]
    fn restart_policy_must_be_known() {
        let spec =
            json!({"restartPolicy": "Sometimes", "containers": [{"name": "a", "image": "b"}]});
        let errs = validate("Pod", &pod(spec), None);
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].kind, FieldErrorKind::NotSupported);
        assert_eq!(errs[0].reason(), "FieldValueNotSupported");
    }

    #[test]
    fn resource_requests_may_not_exceed_limits() {
        let spec = json!({"containers": [{"name": "a", "image": "b", "resources": {
            "limits": {"cpu": "500m", "memory": "128Mi"},
            "requests": {"cpu": 1, "memory": "64Mi"},
        }}]});
        let errs = validate("Pod", &pod(spec), None);
        assert_eq!(
            messages(&errs),
            vec!["spec.containers[0].resources.requests[cpu]: Invalid value: \"1\": must be less than or equal to cpu limit of 500m"]
        );
    }

    #[test]
    fn resource_quantities_must_parse_and_be_nonnegative() {
        let spec = json!({"containers": [{"name": "a", "image": "b", "resources": {
            "limits": {"cpu": "lots", "memory": "-1"},
            "requests": {"gpu": "1"},
        }}]});
        let errs = validate("Pod", &pod(spec), None);
        assert!(errs
            .iter()
            .any(|e| e.field == "spec.containers[0].resources.limits[cpu]"
                && e.detail == QUANTITY_MSG));
        assert!(has(&errs, "spec.containers[0].resources.limits[memory]: Invalid value: \"-1\": must be greater than or equal to 0"));
        assert!(has(&errs, "spec.containers[0].resources.requests[gpu]: Invalid value: \"gpu\": must be a standard resource for containers"));
        assert_eq!(errs.len(), 3, "{:?}", messages(&errs));
    }

    #[test]
    fn pod_update_may_change_image_and_add_tolerations() {
        let old = simple_pod();
        let mut new = old.clone();
        new["spec"]["containers"][0]["image"] = json!("nginx:2");
        new["spec"]["tolerations"] = json!([{"key": "k", "operator": "Exists"}]);
        new["spec"]["activeDeadlineSeconds"] = json!(30);
        assert_eq!(validate("Pod", &new, Some(&old)), vec![]);
    }

    #[test]
    fn pod_update_may_not_change_other_spec_fields() {
        let old = simple_pod();
        let mut new = old.clone();
        new["spec"]["containers"][0]["command"] = json!(["sh"]);
        let errs = validate("Pod", &new, Some(&old));
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].kind, FieldErrorKind::Forbidden);
        assert_eq!(errs[0].field, "spec");
        assert!(errs[0].message().starts_with("spec: Forbidden: pod updates may not change fields other than `spec.containers[*].image`"));
        assert!(errs[0].detail.contains("spec.containers[0].command"));
    }

    #[test]
    fn pod_update_may_not_remove_tolerations() {
        let mut old = simple_pod();
        old["spec"]["tolerations"] = json!([{"key": "k", "operator": "Exists"}]);
        let new = simple_pod();
        let errs = validate("Pod", &new, Some(&old));
        assert_eq!(
            messages(&errs),
            vec!["spec.tolerations: Forbidden: existing toleration can not be modified except its tolerationSeconds"]
        );
    }

    #[test]
    fn pod_update_treats_null_and_empty_like_absent() {
        let old = simple_pod();
        let mut new = old.clone();
        new["spec"]["volumes"] = json!([]);
        new["spec"]["nodeSelector"] = Value::Null;
        assert_eq!(validate("Pod", &new, Some(&old)), vec![]);
    }

    #[test]
    fn active_deadline_may_only_shrink_on_update() {
        let mut old = simple_pod();
        old["spec"]["activeDeadlineSeconds"] = json!(30);
        let mut new = old.clone();
        new["spec"]["activeDeadlineSeconds"] = json!(60);
        let errs = validate("Pod", &new, Some(&old));
        assert!(has(&errs, "spec.activeDeadlineSeconds: Invalid value: 60: must be less than or equal to previous value"));
    }

    // --- services ---

    #[test]
    fn service_needs_ports_unless_headless_or_external_name() {
        let errs = validate("Service", &service(json!({})), None);
        assert_eq!(messages(&errs), vec!["spec.ports: Required value"]);
        assert_eq!(
            validate("Service", &service(json!({"clusterIP": "None"})), None),
            vec![]
        );
        let external = service(json!({"type": "ExternalName", "externalName": "db.example.com."}));
        assert_eq!(validate("Service", &external, None), vec![]);
        let missing = service(json!({"type": "ExternalName"}));
        assert_eq!(
            messages(&validate("Service", &missing, None)),
            vec!["spec.externalName: Required value"]
        );
    }

    #[test]
    fn service_ports_need_unique_names_when_there_are_several() {
        let spec =
            json!({"ports": [{"port": 80}, {"name": "a", "port": 81}, {"name": "a", "port": 82}]});
        let errs = validate("Service", &service(spec), None);
        assert_eq!(
            messages(&errs),
            vec![
                "spec.ports[0].name: Required value",
                "spec.ports[2].name: Duplicate value: \"a\""
            ]
        );
    }

    #[test]
    fn service_port_and_target_port_ranges_are_checked() {
        let spec = json!({"ports": [{"port": 0, "targetPort": 70000, "protocol": "ICMP"}]});
        let errs = validate("Service", &service(spec), None);
        assert!(has(
            &errs,
            "spec.ports[0].port: Invalid value: 0: must be between 1 and 65535, inclusive"
        ));
        assert!(has(&errs, "spec.ports[0].targetPort: Invalid value: 70000: must be between 1 and 65535, inclusive"));
        assert!(
            errs.iter()
                .any(|e| e.field == "spec.ports[0].protocol"
                    && e.kind == FieldErrorKind::NotSupported)
        );
        assert_eq!(errs.len(), 3);
        let named = json!({"ports": [{"port": 80, "targetPort": "http"}]});
        assert_eq!(validate("Service", &service(named), None), vec![]);
        let bad_name = json!({"ports": [{"port": 80, "targetPort": "web_port"}]});
        let errs = validate("Service", &service(bad_name), None);
        assert_eq!(
            messages(&errs),
            vec!["spec.ports[0].targetPort: Invalid value: \"web_port\": must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)"]
        );
    }

    #[test]
    fn service_type_must_be_known() {
        let spec = json!({"type": "Magic", "ports": [{"port": 80}]});
        let errs = validate("Service", &service(spec), None);
        assert_eq!(
            messages(&errs),
            vec!["spec.type: Unsupported value: \"Magic\": supported values: \"ClusterIP\", \"ExternalName\", \"LoadBalancer\", \"NodePort\""]
        );
    }

    #[test]
    fn service_fields_skiff_does_not_carry_out_are_refused() {
        let spec = json!({"type": "LoadBalancer", "ports": [{"port": 80}],
            "externalIPs": ["192.0.2.1"], "loadBalancerSourceRanges": ["10.0.0.0/8"],
            "allocateLoadBalancerNodePorts": false});
        let errs = messages(&validate("Service", &service(spec), None));
        assert_eq!(
            errs,
            vec![
                "spec.externalIPs: Forbidden: not supported by skiff",
                "spec.loadBalancerSourceRanges: Forbidden: not supported by skiff",
                "spec.allocateLoadBalancerNodePorts: Forbidden: skiff's load balancer reaches Services through their node ports: must be true",
            ]
        );
        let plain = json!({"type": "LoadBalancer", "ports": [{"port": 80}], "externalIPs": []});
        assert!(validate("Service", &service(plain), None).is_empty());
    }

    #[test]
    fn node_port_is_only_for_node_port_and_load_balancer_services() {
        let cluster_ip = json!({"ports": [{"port": 80, "nodePort": 30080}]});
        let errs = validate("Service", &service(cluster_ip), None);
        assert_eq!(
            messages(&errs),
            vec!["spec.ports[0].nodePort: Forbidden: may not be used when `type` is 'ClusterIP'"]
        );
        let node_port = json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 30080}]});
        assert_eq!(validate("Service", &service(node_port), None), vec![]);
    }

    #[test]
    fn service_selector_labels_are_validated() {
        let spec = json!({"ports": [{"port": 80}], "selector": {"app": "bad value"}});
        let errs = validate("Service", &service(spec), None);
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].field, "spec.selector");
    }

    #[test]
    fn service_cluster_ip_is_immutable() {
        let old = service(json!({"clusterIP": "10.0.0.1", "ports": [{"port": 80}]}));
        let new = service(json!({"clusterIP": "10.0.0.2", "ports": [{"port": 80}]}));
        let errs = validate("Service", &new, Some(&old));
        assert_eq!(
            messages(&errs),
            vec!["spec.clusterIP: Invalid value: \"10.0.0.2\": field is immutable"]
        );
    }

    // --- replication controllers ---

    #[test]
    fn valid_rc_has_no_errors() {
        let r = rc(
            json!({"app": "web"}),
            json!({"app": "web", "tier": "front"}),
        );
        assert_eq!(validate("ReplicationController", &r, None), vec![]);
    }

    #[test]
    fn rc_selector_must_match_template_labels() {
        let r = rc(json!({"app": "web"}), json!({"app": "db"}));
        let errs = validate("ReplicationController", &r, None);
        assert_eq!(
            messages(&errs),
            vec!["spec.template.metadata.labels: Invalid value: map[string]string{\"app\":\"db\"}: `selector` does not match template `labels`"]
        );
    }

    #[test]
    fn rc_needs_a_selector_and_a_template() {
        let r =
            json!({"metadata": {"name": "web", "namespace": "default"}, "spec": {"replicas": -1}});
        let errs = validate("ReplicationController", &r, None);
        assert_eq!(
            messages(&errs),
            vec![
                "spec.replicas: Invalid value: -1: must be greater than or equal to 0",
                "spec.selector: Required value",
                "spec.template: Required value",
            ]
        );
    }

    #[test]
    fn rc_template_is_validated_as_a_pod_that_always_restarts() {
        let mut r = rc(json!({"app": "web"}), json!({"app": "web"}));
        r["spec"]["template"]["spec"] =
            json!({"restartPolicy": "Never", "containers": [{"name": "app"}]});
        let errs = validate("ReplicationController", &r, None);
        assert_eq!(
            messages(&errs),
            vec![
                "spec.template.spec.containers[0].image: Required value",
                "spec.template.spec.restartPolicy: Unsupported value: \"Never\": supported values: \"Always\"",
            ]
        );
    }

    // --- other kinds ---

    #[test]
    fn endpoints_addresses_need_valid_ips_and_ports() {
        let e = json!({"metadata": {"name": "web", "namespace": "default"}, "subsets": [
            {"addresses": [{"ip": "10.1.0.5"}, {}, {"ip": "nope"}], "ports": [{"port": 80}]},
            {"ports": [{"name": "a", "port": 0}, {"port": 81}]},
        ]});
        let errs = validate("Endpoints", &e, None);
        assert!(has(&errs, "subsets[0].addresses[1].ip: Required value"));
        assert!(has(
            &errs,
            &format!("subsets[0].addresses[2].ip: Invalid value: \"nope\": {IP_MSG}")
        ));
        assert!(has(
            &errs,
            "subsets[1]: Required value: must specify `addresses` or `notReadyAddresses`"
        ));
        assert!(has(
            &errs,
            "subsets[1].ports[0].port: Invalid value: 0: must be between 1 and 65535, inclusive"
        ));
        assert!(has(&errs, "subsets[1].ports[1].name: Required value"));
        assert_eq!(errs.len(), 5, "{:?}", messages(&errs));
    }

    #[test]
    fn resource_quota_hard_limits_must_be_known_quantities() {
        let q = json!({"metadata": {"name": "q", "namespace": "default"}, "spec": {"hard": {
            "pods": "10", "requests.cpu": "2", "limits.memory": "1Gi",
            "widgets": "1", "services": "1.5", "memory": "x",
        }}});
        let errs = validate("ResourceQuota", &q, None);
        assert!(has(
            &errs,
            "spec.hard[widgets]: Invalid value: \"widgets\": must be a standard resource for quota"
        ));
        assert!(has(
            &errs,
            "spec.hard[services]: Invalid value: \"1.5\": must be an integer"
        ));
        assert!(errs
            .iter()
            .any(|e| e.field == "spec.hard[memory]" && e.detail == QUANTITY_MSG));
        assert_eq!(errs.len(), 3, "{:?}", messages(&errs));
    }

    #[test]
    fn event_needs_its_involved_object() {
        let ev = json!({"metadata": {"name": "web.1", "namespace": "default"}});
        assert_eq!(
            messages(&validate("Event", &ev, None)),
            vec!["involvedObject: Required value"]
        );
        let ev = json!({"metadata": {"name": "web.1", "namespace": "default"},
            "involvedObject": {"kind": "Pod", "namespace": "other"}});
        let errs = validate("Event", &ev, None);
        assert!(has(&errs, "involvedObject.name: Required value"));
        assert!(has(
            &errs,
            "involvedObject.namespace: Invalid value: \"other\": does not match event.namespace"
        ));
        let node_event = json!({"metadata": {"name": "n.1", "namespace": "default"},
            "involvedObject": {"kind": "Node", "name": "n"}});
        assert_eq!(validate("Event", &node_event, None), vec![]);
    }

    #[test]
    fn node_taints_need_known_effects() {
        let node = json!({"metadata": {"name": "n1"}, "spec": {"taints": [
            {"key": "k", "effect": "NoSchedule"},
            {"key": "k", "effect": "Sometimes"},
            {"key": "k2"},
        ]}});
        let errs = validate("Node", &node, None);
        assert!(errs
            .iter()
            .any(|e| e.field == "spec.taints[1].effect" && e.kind == FieldErrorKind::NotSupported));
        assert!(has(&errs, "spec.taints[2].effect: Required value"));
        assert_eq!(errs.len(), 2, "{:?}", messages(&errs));
    }

    #[test]
    fn namespace_finalizers_must_be_standard_or_qualified() {
        let ns = json!({"metadata": {"name": "team"}, "spec": {"finalizers": ["kubernetes", "example.com/x", "custom"]}});
        let errs = validate("Namespace", &ns, None);
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].field, "spec.finalizers[2]");
    }

    #[test]
    fn binding_needs_a_node_target() {
        let errs = validate("Binding", &json!({"target": {"kind": "Pod"}}), None);
        assert_eq!(errs.len(), 2);
        assert!(has(&errs, "target.name: Required value"));
        assert_eq!(
            validate(
                "Binding",
                &json!({"target": {"kind": "Node", "name": "n1"}}),
                None
            ),
            vec![]
        );
    }

    #[test]
    fn scale_replicas_may_not_be_negative() {
        let errs = validate("Scale", &json!({"spec": {"replicas": -2}}), None);
        assert_eq!(
            messages(&errs),
            vec!["spec.replicas: Invalid value: -2: must be greater than or equal to 0"]
        );
    }

    #[test]
    fn delete_options_propagation_policy_must_be_known() {
        let errs = validate(
            "DeleteOptions",
            &json!({"propagationPolicy": "Later"}),
            None,
        );
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].kind, FieldErrorKind::NotSupported);
        let both = json!({"propagationPolicy": "Orphan", "orphanDependents": true});
        assert_eq!(validate("DeleteOptions", &both, None).len(), 1);
    }
}
