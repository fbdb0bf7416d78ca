//! Kubernetes label and field selectors over `serde_json::Value` objects.
//!
//! The grammar, validation rules and matching semantics follow
//! `k8s.io/apimachinery/pkg/labels` and `k8s.io/apimachinery/pkg/fields`, so that
//! `kubectl get -l ...` / `--field-selector ...` behave as they do against a real
//! apiserver (including the error messages users see on a 400).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde_json::Value;

/// Longest allowed label value and label-key name part.
const MAX_LABEL_LENGTH: usize = 63;
/// Longest allowed DNS-1123 subdomain, used as the optional label-key prefix.
const MAX_PREFIX_LENGTH: usize = 253;

const NAME_CHARSET_MESSAGE: &str = "must consist of alphanumeric characters, '-', '_' or '.', \
     and must start and end with an alphanumeric character";
const PREFIX_MESSAGE: &str = "prefix part a lowercase RFC 1123 subdomain must consist of lower \
     case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character";

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SelectorError {
    #[error("unable to parse requirement: found '{found}', expected: {expected}")]
    UnexpectedToken { found: String, expected: String },
    #[error("unable to parse requirement: invalid label key \"{key}\": {reason}")]
    InvalidLabelKey { key: String, reason: String },
    #[error("invalid label value: \"{value}\": {reason}")]
    InvalidLabelValue { value: String, reason: String },
    #[error("unable to parse requirement: for '{operator}' operator, {reason}")]
    InvalidRequirementValues { operator: String, reason: String },
    #[error("\"{0}\" is not a valid label selector operator")]
    InvalidOperator(String),
    #[error("invalid label selector: {0}")]
    MalformedLabelSelector(String),
    #[error("invalid selector: '{selector}'; can't understand '{term}'")]
    InvalidFieldTerm { selector: String, term: String },
    #[error("invalid field selector: invalid escape sequence: {0}")]
    InvalidEscapeSequence(String),
    #[error("invalid field selector: unescaped character \"{0}\"")]
    UnescapedCharacter(char),
}

// ---------------------------------------------------------------------------
// Label selectors
// ---------------------------------------------------------------------------

/// The operator of one label requirement. `==` parses to `Equals`, as Kubernetes
/// treats both spellings identically when matching.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operator {
    Equals,
    NotEquals,
    In,
    NotIn,
    Exists,
    DoesNotExist,
    GreaterThan,
    LessThan,
}

impl Operator {
    fn name(self) -> &'static str {
        match self {
            Operator::Equals => "=",
            Operator::NotEquals => "!=",
            Operator::In => "in",
            Operator::NotIn => "notin",
            Operator::Exists => "exists",
            Operator::DoesNotExist => "!",
            Operator::GreaterThan => "gt",
            Operator::LessThan => "lt",
        }
    }
}

/// One `key <op> values` term of a label selector.
#[derive(Debug, Clone, PartialEq)]
pub struct Requirement {
    key: String,
    operator: Operator,
    values: BTreeSet<String>,
}

impl Requirement {
    /// Builds a requirement, applying the same checks as Kubernetes' `NewRequirement`.
    pub fn new(
        key: &str,
        operator: Operator,
        values: BTreeSet<String>,
    ) -> Result<Self, SelectorError> {
        validate_label_key(key)?;
        check_value_count(operator, &values)?;
        for value in &values {
            validate_label_value(value)?;
        }
        Ok(Requirement {
            key: key.to_string(),
            operator,
            values,
        })
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    pub fn operator(&self) -> Operator {
        self.operator
    }

    pub fn values(&self) -> &BTreeSet<String> {
        &self.values
    }

    /// Whether a label set satisfies this requirement. Negative operators match
    /// objects that lack the key entirely, as in Kubernetes.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let actual = labels.get(&self.key);
        match self.operator {
            Operator::Equals | Operator::In => actual.is_some_and(|v| self.values.contains(v)),
            Operator::NotEquals | Operator::NotIn => {
                actual.is_none_or(|v| !self.values.contains(v))
            }
            Operator::Exists => actual.is_some(),
            Operator::DoesNotExist => actual.is_none(),
            Operator::GreaterThan => self.compare_integer(actual, |have, want| have > want),
            Operator::LessThan => self.compare_integer(actual, |have, want| have < want),
        }
    }

    fn compare_integer(&self, actual: Option<&String>, cmp: fn(i64, i64) -> bool) -> bool {
        let Some(have) = actual.and_then(|v| v.parse::<i64>().ok()) else {
            return false;
        };
        self.values
            .iter()
            .filter_map(|v| v.parse::<i64>().ok())
            .any(|want| cmp(have, want))
    }
}

fn check_value_count(operator: Operator, values: &BTreeSet<String>) -> Result<(), SelectorError> {
    let invalid = |reason: &str| SelectorError::InvalidRequirementValues {
        operator: operator.name().to_string(),
        reason: reason.to_string(),
    };
    match operator {
        Operator::In | Operator::NotIn if values.is_empty() => {
            Err(invalid("values set can't be empty"))
        }
        Operator::Equals | Operator::NotEquals if values.len() != 1 => {
            Err(invalid("exactly one value is required"))
        }
        Operator::Exists | Operator::DoesNotExist if !values.is_empty() => {
            Err(invalid("values set must be empty"))
        }
        Operator::GreaterThan | Operator::LessThan => check_integer_value(values, invalid),
        _ => Ok(()),
    }
}

fn check_integer_value(
    values: &BTreeSet<String>,
    invalid: impl Fn(&str) -> SelectorError,
) -> Result<(), SelectorError> {
    if values.len() != 1 {
        return Err(invalid("exactly one value is required"));
    }
    if values.iter().any(|v| v.parse::<i64>().is_err()) {
        return Err(invalid("the value must be an integer"));
    }
    Ok(())
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let first = self.values.iter().next().map(String::as_str).unwrap_or("");
        match self.operator {
            Operator::Exists => write!(f, "{}", self.key),
            Operator::DoesNotExist => write!(f, "!{}", self.key),
            Operator::Equals => write!(f, "{}={}", self.key, first),
            Operator::NotEquals => write!(f, "{}!={}", self.key, first),
            Operator::GreaterThan => write!(f, "{}>{}", self.key, first),
            Operator::LessThan => write!(f, "{}<{}", self.key, first),
            Operator::In | Operator::NotIn => {
                let joined: Vec<&str> = self.values.iter().map(String::as_str).collect();
                write!(
                    f,
                    "{} {} ({})",
                    self.key,
                    self.operator.name(),
                    joined.join(",")
                )
            }
        }
    }
}

/// A parsed label selector: a conjunction of requirements, kept sorted by key so
/// that equal selectors compare and print identically.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LabelSelector {
    requirements: Vec<Requirement>,
    /// Set for a `null` metav1.LabelSelector, which Kubernetes defines as
    /// selecting nothing (unlike `{}`, which selects everything).
    nothing: bool,
}

impl LabelSelector {
    /// Parses the string syntax used by `?labelSelector=` and `kubectl -l`.
    pub fn parse(s: &str) -> Result<Self, SelectorError> {
        let tokens = lex(s);
        let mut parser = Parser { tokens, pos: 0 };
        let requirements = parser.parse_all()?;
        Ok(Self::from_requirements(requirements))
    }

    /// Builds an equality-only selector, as `labels.SelectorFromSet` does for a
    /// ReplicationController's or Service's `spec.selector` map.
    pub fn from_match_labels(map: &BTreeMap<String, String>) -> Self {
        let requirements = map
            .iter()
            .map(|(k, v)| Requirement {
                key: k.clone(),
                operator: Operator::Equals,
                values: BTreeSet::from([v.clone()]),
            })
            .collect();
        Self::from_requirements(requirements)
    }

    /// Converts a metav1.LabelSelector JSON object. `null` selects nothing and
    /// `{}` selects everything, matching `metav1.LabelSelectorAsSelector`.
    pub fn from_label_selector_value(v: &Value) -> Result<Self, SelectorError> {
        let obj = match v {
            Value::Null => return Ok(Self::nothing()),
            Value::Object(obj) => obj,
            _ => return Err(malformed("a label selector must be an object")),
        };
        let mut requirements = match_labels_requirements(obj.get("matchLabels"))?;
        requirements.extend(match_expressions_requirements(obj.get("matchExpressions"))?);
        Ok(Self::from_requirements(requirements))
    }

    /// A selector that matches no object at all.
    pub fn nothing() -> Self {
        LabelSelector {
            requirements: Vec::new(),
            nothing: true,
        }
    }

    /// True when the selector places no constraint (it matches everything).
    pub fn is_empty(&self) -> bool {
        !self.nothing && self.requirements.is_empty()
    }

    pub fn requirements(&self) -> &[Requirement] {
        &self.requirements
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        !self.nothing && self.requirements.iter().all(|r| r.matches(labels))
    }

    /// Matches against `obj.metadata.labels`; non-string label values are ignored
    /// because they cannot come from a valid object.
    pub fn matches_object(&self, obj: &Value) -> bool {
        self.matches(&object_labels(obj))
    }

    fn from_requirements(mut requirements: Vec<Requirement>) -> Self {
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        LabelSelector {
            requirements,
            nothing: false,
        }
    }
}

/// Reads `metadata.labels` into a map; missing labels mean an empty set.
pub fn object_labels(obj: &Value) -> BTreeMap<String, String> {
    obj.pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|labels| {
            labels
                .iter()
                .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

/// Prints the canonical form, e.g. `app=web,tier in (a,b)`. The "nothing"
/// selector prints as the empty string, as in Kubernetes, since the syntax has
/// no way to spell it.
impl fmt::Display for LabelSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, requirement) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{requirement}")?;
        }
        Ok(())
    }
}

fn malformed(reason: &str) -> SelectorError {
    SelectorError::MalformedLabelSelector(reason.to_string())
}

fn match_labels_requirements(v: Option<&Value>) -> Result<Vec<Requirement>, SelectorError> {
    let Some(map) = v.filter(|v| !v.is_null()) else {
        return Ok(Vec::new());
    };
    let map = map
        .as_object()
        .ok_or_else(|| malformed("matchLabels must be an object"))?;
    map.iter()
        .map(|(key, value)| {
            let value = value
                .as_str()
                .ok_or_else(|| malformed("matchLabels values must be strings"))?;
            Requirement::new(key, Operator::Equals, BTreeSet::from([value.to_string()]))
        })
        .collect()
}

fn match_expressions_requirements(v: Option<&Value>) -> Result<Vec<Requirement>, SelectorError> {
    let Some(list) = v.filter(|v| !v.is_null()) else {
        return Ok(Vec::new());
    };
    let list = list
        .as_array()
        .ok_or_else(|| malformed("matchExpressions must be a list"))?;
    list.iter().map(match_expression_requirement).collect()
}

fn match_expression_requirement(expr: &Value) -> Result<Requirement, SelectorError> {
    let key = expr
        .get("key")
        .and_then(Value::as_str)
        .ok_or_else(|| malformed("matchExpressions entries need a string key"))?;
    let operator = match expr.get("operator").and_then(Value::as_str) {
        Some("In") => Operator::In,
        Some("NotIn") => Operator::NotIn,
        Some("Exists") => Operator::Exists,
        Some("DoesNotExist") => Operator::DoesNotExist,
        Some(other) => return Err(SelectorError::InvalidOperator(other.to_string())),
        None => return Err(SelectorError::InvalidOperator(String::new())),
    };
    let values = expression_values(expr.get("values"))?;
    Requirement::new(key, operator, values)
}

fn expression_values(v: Option<&Value>) -> Result<BTreeSet<String>, SelectorError> {
    let Some(list) = v.filter(|v| !v.is_null()) else {
        return Ok(BTreeSet::new());
    };
    let list = list
        .as_array()
        .ok_or_else(|| malformed("matchExpressions values must be a list"))?;
    list.iter()
        .map(|v| {
            v.as_str()
                .map(str::to_string)
                .ok_or_else(|| malformed("matchExpressions values must be strings"))
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Label key / value validation
// ---------------------------------------------------------------------------

/// Validates a label key: an optional DNS-1123 subdomain prefix plus `/`, then a
/// name of at most 63 characters.
pub fn validate_label_key(key: &str) -> Result<(), SelectorError> {
    label_key_problem(key).map_or(Ok(()), |reason| {
        Err(SelectorError::InvalidLabelKey {
            key: key.to_string(),
            reason,
        })
    })
}

fn label_key_problem(key: &str) -> Option<String> {
    let parts: Vec<&str> = key.split('/').collect();
    let (prefix, name) = match parts.as_slice() {
        [name] => (None, *name),
        [prefix, name] => (Some(*prefix), *name),
        _ => {
            return Some(format!(
                "a qualified name {NAME_CHARSET_MESSAGE}, with an optional DNS subdomain \
                 prefix and '/' (e.g. 'example.com/MyName')"
            ))
        }
    };
    prefix
        .and_then(prefix_problem)
        .or_else(|| name_problem(name))
}

fn prefix_problem(prefix: &str) -> Option<String> {
    if prefix.is_empty() {
        return Some("prefix part must be non-empty".to_string());
    }
    if prefix.len() > MAX_PREFIX_LENGTH {
        return Some(format!(
            "prefix part must be no more than {MAX_PREFIX_LENGTH} characters"
        ));
    }
    if !is_dns1123_subdomain(prefix) {
        return Some(PREFIX_MESSAGE.to_string());
    }
    None
}

fn name_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("name part must be non-empty".to_string());
    }
    if name.len() > MAX_LABEL_LENGTH {
        return Some(format!(
            "name part must be no more than {MAX_LABEL_LENGTH} characters"
        ));
    }
    if !is_qualified_name_part(name) {
        return Some(format!("name part {NAME_CHARSET_MESSAGE}"));
    }
    None
}

/// Validates a label value: empty, or at most 63 characters of `[-_.A-Za-z0-9]`
/// starting and ending with an alphanumeric.
pub fn validate_label_value(value: &str) -> Result<(), SelectorError> {
    let reason = if value.len() > MAX_LABEL_LENGTH {
        format!("must be no more than {MAX_LABEL_LENGTH} characters")
    } else if !value.is_empty() && !is_qualified_name_part(value) {
        format!("a valid label must be an empty string or {NAME_CHARSET_MESSAGE}")
    } else {
        return Ok(());
    };
    Err(SelectorError::InvalidLabelValue {
        value: value.to_string(),
        reason,
    })
}

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`
fn is_qualified_name_part(s: &str) -> bool {
    let bytes = s.as_bytes();
    let edges_ok = matches!((bytes.first(), bytes.last()),
        (Some(a), Some(b)) if a.is_ascii_alphanumeric() && b.is_ascii_alphanumeric());
    edges_ok
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Dot-separated DNS-1123 labels: lowercase alphanumerics and `-`, alphanumeric at
/// both ends of every label.
fn is_dns1123_subdomain(s: &str) -> bool {
    s.split('.').all(|label| {
        let bytes = label.as_bytes();
        let edge = |b: Option<&u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        edge(bytes.first())
            && edge(bytes.last())
            && bytes
                .iter()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
    })
}

// ---------------------------------------------------------------------------
// Label selector lexer and parser
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
enum Token {
    /// Any run of non-special characters. `in`/`notin` are identifiers too: they
    /// only act as operators in operator position, so a label may be named `in`.
    Ident(String),
    Comma,
    Equals,
    DoubleEquals,
    NotEquals,
    Bang,
    Open,
    Close,
    Greater,
    Less,
}

impl Token {
    fn literal(&self) -> &str {
        match self {
            Token::Ident(s) => s,
            Token::Comma => ",",
            Token::Equals => "=",
            Token::DoubleEquals => "==",
            Token::NotEquals => "!=",
            Token::Bang => "!",
            Token::Open => "(",
            Token::Close => ")",
            Token::Greater => ">",
            Token::Less => "<",
        }
    }
}

fn is_special(c: char) -> bool {
    matches!(c, '!' | '=' | '(' | ')' | ',' | '<' | '>')
}

fn lex(s: &str) -> Vec<Token> {
    let mut tokens = Vec::new();
    let mut chars = s.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
            continue;
        }
        if !is_special(c) {
            let mut ident = String::new();
            while let Some(&c) = chars
                .peek()
                .filter(|c| !c.is_whitespace() && !is_special(**c))
            {
                ident.push(c);
                chars.next();
            }
            tokens.push(Token::Ident(ident));
            continue;
        }
        chars.next();
        tokens.push(symbol_token(c, &mut chars));
    }
    tokens
}

/// Maps a special character to its token, folding in a following `=` for the
/// two-character operators `==` and `!=`.
fn symbol_token(c: char, rest: &mut std::iter::Peekable<std::str::Chars<'_>>) -> Token {
    match c {
        '!' if rest.next_if_eq(&'=').is_some() => Token::NotEquals,
        '!' => Token::Bang,
        '=' if rest.next_if_eq(&'=').is_some() => Token::DoubleEquals,
        '=' => Token::Equals,
        '(' => Token::Open,
        ')' => Token::Close,
        ',' => Token::Comma,
        '<' => Token::Less,
        _ => Token::Greater,
    }
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }

    fn next(&mut self) -> Option<Token> {
        let token = self.tokens.get(self.pos).cloned();
        self.pos += 1;
        token
    }

    fn unexpected(found: Option<&Token>, expected: &str) -> SelectorError {
        SelectorError::UnexpectedToken {
            found: found.map(Token::literal).unwrap_or("").to_string(),
            expected: expected.to_string(),
        }
    }

    fn parse_all(&mut self) -> Result<Vec<Requirement>, SelectorError> {
        let mut requirements = Vec::new();
        if self.tokens.is_empty() {
            return Ok(requirements);
        }
        loop {
            requirements.push(self.requirement()?);
            match self.next() {
                None => return Ok(requirements),
                Some(Token::Comma) => {
                    if !matches!(self.peek(), Some(Token::Ident(_) | Token::Bang)) {
                        return Err(Self::unexpected(self.peek(), "identifier after ','"));
                    }
                }
                Some(other) => {
                    return Err(Self::unexpected(Some(&other), "',' or 'end of string'"))
                }
            }
        }
    }

    fn requirement(&mut self) -> Result<Requirement, SelectorError> {
        match self.next() {
            Some(Token::Bang) => {
                let key = self.identifier("identifier after '!'")?;
                Requirement::new(&key, Operator::DoesNotExist, BTreeSet::new())
            }
            Some(Token::Ident(key)) => self.requirement_for_key(&key),
            other => Err(Self::unexpected(other.as_ref(), "identifier")),
        }
    }

    fn identifier(&mut self, expected: &str) -> Result<String, SelectorError> {
        match self.next() {
            Some(Token::Ident(s)) => Ok(s),
            other => Err(Self::unexpected(other.as_ref(), expected)),
        }
    }

    fn requirement_for_key(&mut self, key: &str) -> Result<Requirement, SelectorError> {
        validate_label_key(key)?;
        if matches!(self.peek(), None | Some(Token::Comma)) {
            return Requirement::new(key, Operator::Exists, BTreeSet::new());
        }
        let operator = match self.next() {
            Some(Token::Equals | Token::DoubleEquals) => Operator::Equals,
            Some(Token::NotEquals) => Operator::NotEquals,
            Some(Token::Greater) => Operator::GreaterThan,
            Some(Token::Less) => Operator::LessThan,
            Some(Token::Ident(word)) if word == "in" => Operator::In,
            Some(Token::Ident(word)) if word == "notin" => Operator::NotIn,
            other => {
                return Err(Self::unexpected(
                    other.as_ref(),
                    "=, ==, !=, in, notin, >, <",
                ))
            }
        };
        let values = match operator {
            Operator::In | Operator::NotIn => self.value_set()?,
            _ => BTreeSet::from([self.exact_value()?]),
        };
        Requirement::new(key, operator, values)
    }

    /// The value after `=`, `!=`, `>` or `<`; an absent value means "" (`k=`).
    fn exact_value(&mut self) -> Result<String, SelectorError> {
        match self.peek() {
            None | Some(Token::Comma) => Ok(String::new()),
            Some(Token::Ident(_)) => self.identifier("identifier"),
            other => Err(Self::unexpected(other, "identifier")),
        }
    }

    /// `( v1, v2, ... )`. Empty slots such as `()`, `(a,)` or `(,a)` stand for the
    /// empty value, as in Kubernetes.
    fn value_set(&mut self) -> Result<BTreeSet<String>, SelectorError> {
        match self.next() {
            Some(Token::Open) => {}
            other => return Err(Self::unexpected(other.as_ref(), "'('")),
        }
        let mut values = BTreeSet::new();
        let mut current: Option<String> = None;
        loop {
            match self.next() {
                Some(Token::Ident(v)) if current.is_none() => current = Some(v),
                Some(Token::Comma) => {
                    values.insert(current.take().unwrap_or_default());
                }
                Some(Token::Close) => {
                    values.insert(current.take().unwrap_or_default());
                    return Ok(values);
                }
                other => return Err(Self::unexpected(other.as_ref(), "',', ')' or identifier")),
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Field selectors
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FieldOperator {
    Equals,
    NotEquals,
}

#[derive(Debug, Clone, PartialEq)]
struct FieldTerm {
    field: String,
    operator: FieldOperator,
    value: String,
}

/// A parsed field selector: a conjunction of `field=value` / `field!=value` terms.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FieldSelector {
    terms: Vec<FieldTerm>,
}

impl FieldSelector {
    pub fn parse(s: &str) -> Result<Self, SelectorError> {
        let mut terms = Vec::new();
        for part in split_unescaped_commas(s) {
            if part.trim().is_empty() {
                continue;
            }
            terms.push(parse_field_term(s, part)?);
        }
        Ok(FieldSelector { terms })
    }

    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }

    /// The field paths named, in order, so callers can reject unsupported ones.
    pub fn fields(&self) -> Vec<&str> {
        self.terms.iter().map(|t| t.field.as_str()).collect()
    }

    /// The value required for `field` by an `=` term, if any (useful for
    /// narrowing a scan, e.g. by `metadata.namespace`).
    pub fn required_value(&self, field: &str) -> Option<&str> {
        self.terms
            .iter()
            .find(|t| t.field == field && t.operator == FieldOperator::Equals)
            .map(|t| t.value.as_str())
    }

    pub fn matches(&self, obj: &Value) -> bool {
        self.terms.iter().all(|term| {
            let actual = field_value(obj, &term.field);
            match term.operator {
                FieldOperator::Equals => actual == term.value,
                FieldOperator::NotEquals => actual != term.value,
            }
        })
    }
}

impl fmt::Display for FieldSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, term) in self.terms.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            let op = match term.operator {
                FieldOperator::Equals => "=",
                FieldOperator::NotEquals => "!=",
            };
            write!(f, "{}{}{}", term.field, op, escape_field_value(&term.value))?;
        }
        Ok(())
    }
}

/// Escapes a value so that `FieldSelector::parse` reads it back verbatim.
pub fn escape_field_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if matches!(c, '\\' | ',' | '=') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Splits on commas that are not backslash-escaped.
fn split_unescaped_commas(s: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut start = 0;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        match (escaped, c) {
            (true, _) => escaped = false,
            (false, '\\') => escaped = true,
            (false, ',') => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts
}

fn parse_field_term(selector: &str, term: &str) -> Result<FieldTerm, SelectorError> {
    let invalid = || SelectorError::InvalidFieldTerm {
        selector: selector.to_string(),
        term: term.to_string(),
    };
    let (field, operator, raw_value) = split_field_term(term).ok_or_else(invalid)?;
    let field = field.trim();
    if field.is_empty() {
        return Err(invalid());
    }
    Ok(FieldTerm {
        field: field.to_string(),
        operator,
        value: unescape_field_value(raw_value)?,
    })
}

/// Finds the first unescaped operator; `!=` and `==` are tried before `=` so
/// that they are not mistaken for `=` followed by a value starting with `=`.
fn split_field_term(term: &str) -> Option<(&str, FieldOperator, &str)> {
    const OPERATORS: [(&str, FieldOperator); 3] = [
        ("!=", FieldOperator::NotEquals),
        ("==", FieldOperator::Equals),
        ("=", FieldOperator::Equals),
    ];
    let mut escaped = false;
    for (i, c) in term.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        if c == '\\' {
            escaped = true;
            continue;
        }
        let rest = &term[i..];
        if let Some((op, kind)) = OPERATORS.iter().find(|(op, _)| rest.starts_with(op)) {
            return Some((&term[..i], *kind, &rest[op.len()..]));
        }
    }
    None
}

fn unescape_field_value(raw: &str) -> Result<String, SelectorError> {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(e @ ('\\' | ',' | '=')) => out.push(e),
                Some(other) => {
                    return Err(SelectorError::InvalidEscapeSequence(format!("\\{other}")))
                }
                None => return Err(SelectorError::InvalidEscapeSequence("\\".to_string())),
            },
            ',' | '=' => return Err(SelectorError::UnescapedCharacter(c)),
            _ => out.push(c),
        }
    }
    Ok(out)
}

/// Resolves a dotted field path to the string Kubernetes would compare against.
/// Missing fields compare as "" (so `spec.nodeName=` finds unscheduled pods),
/// except for boolean fields Kubernetes always renders, which default to "false".
pub fn field_value(obj: &Value, path: &str) -> String {
    let found = path
        .split('.')
        .try_fold(obj, |current, segment| current.get(segment));
    match found {
        None | Some(Value::Null) => missing_field_default(path).to_string(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Bool(b)) => b.to_string(),
        Some(Value::Number(n)) => n.to_string(),
        // An Event's `source` field selector means `source.component`.
        Some(Value::Object(map)) if path == "source" => map
            .get("component")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
        Some(other) => other.to_string(),
    }
}

fn missing_field_default(path: &str) -> &'static str {
    match path {
        "spec.unschedulable" | "spec.hostNetwork" => "false",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn selects(selector: &str, pairs: &[(&str, &str)]) -> bool {
        match LabelSelector::parse(selector) {
            Ok(sel) => sel.matches(&labels(pairs)),
            Err(e) => panic!("{selector:?} failed to parse: {e}"),
        }
    }

    #[test]
    fn empty_selector_matches_everything() {
        let sel = LabelSelector::parse("  ").expect("parses");
        assert!(sel.is_empty());
        assert!(sel.matches(&labels(&[])));
        assert!(sel.matches(&labels(&[("a", "b")])));
    }

    #[test]
    fn equality_selectors_accept_all_three_spellings() {
        assert!(selects("app=web", &[("app", "web")]));
        assert!(selects("app==web", &[("app", "web")]));
        assert!(!selects("app=web", &[("app", "db")]));
        assert!(!selects("app=web", &[]));
        assert!(selects("app!=web", &[("app", "db")]));
        assert!(!selects("app!=web", &[("app", "web")]));
    }

    #[test]
    fn not_equals_matches_objects_without_the_key() {
        assert!(selects("app!=web", &[]));
    }

    #[test]
    fn set_based_in_requires_the_key() {
        assert!(selects("tier in (a, b)", &[("tier", "b")]));
        assert!(!selects("tier in (a,b)", &[("tier", "c")]));
        assert!(!selects("tier in (a,b)", &[]));
    }

    #[test]
    fn set_based_notin_matches_objects_without_the_key() {
        assert!(selects("tier notin (a,b)", &[]));
        assert!(selects("tier notin (a,b)", &[("tier", "c")]));
        assert!(!selects("tier notin (a,b)", &[("tier", "a")]));
    }

    #[test]
    fn exists_and_does_not_exist_check_only_the_key() {
        assert!(selects("app", &[("app", "")]));
        assert!(!selects("app", &[]));
        assert!(selects("!app", &[("other", "x")]));
        assert!(!selects("! app", &[("app", "x")]));
    }

    #[test]
    fn compound_selectors_require_every_term() {
        let sel = "app=web, tier in (fe,be),!canary,env";
        assert!(selects(
            sel,
            &[("app", "web"), ("tier", "fe"), ("env", "p")]
        ));
        assert!(!selects(sel, &[("app", "web"), ("tier", "fe")]));
        assert!(!selects(
            sel,
            &[
                ("app", "web"),
                ("tier", "fe"),
                ("env", "p"),
                ("canary", "1")
            ]
        ));
    }

    #[test]
    fn empty_values_are_allowed_in_equality_and_sets() {
        assert!(selects("app=", &[("app", "")]));
        assert!(selects("app in ()", &[("app", "")]));
        assert!(selects("app in (a,)", &[("app", "")]));
        assert!(selects("app in (,a)", &[("app", "a")]));
        assert!(selects("app=,b", &[("app", ""), ("b", "1")]));
    }

    #[test]
    fn greater_and_less_than_compare_integers() {
        assert!(selects("replicas>2", &[("replicas", "3")]));
        assert!(!selects("replicas>2", &[("replicas", "2")]));
        assert!(selects("replicas<2", &[("replicas", "1")]));
        assert!(!selects("replicas<2", &[("replicas", "x")]));
        assert!(!selects("replicas<2", &[]));
        assert!(LabelSelector::parse("replicas>x").is_err());
    }

    #[test]
    fn keywords_can_be_label_names() {
        assert!(selects("in=notin", &[("in", "notin")]));
        assert!(selects("notin in (in)", &[("notin", "in")]));
    }

    #[test]
    fn prefixed_keys_are_accepted() {
        assert!(selects(
            "app.kubernetes.io/name=web",
            &[("app.kubernetes.io/name", "web")]
        ));
    }

    #[test]
    fn invalid_selectors_are_rejected_with_kubernetes_messages() {
        let err = LabelSelector::parse("a b").expect_err("two identifiers");
        assert_eq!(
            err.to_string(),
            "unable to parse requirement: found 'b', expected: =, ==, !=, in, notin, >, <"
        );
        let err = LabelSelector::parse("a=b c").expect_err("trailing garbage");
        assert_eq!(
            err.to_string(),
            "unable to parse requirement: found 'c', expected: ',' or 'end of string'"
        );
        for bad in [
            "a=b,",
            "a in b",
            "a in (b",
            "a in (b c)",
            "!",
            "=b",
            "a=(b)",
            ",a",
            "a!",
            "a=b=c",
        ] {
            assert!(LabelSelector::parse(bad).is_err(), "{bad:?} should fail");
        }
    }

    #[test]
    fn invalid_label_keys_are_rejected() {
        for bad in [
            "-a=b",
            "a-=b",
            "/a=b",
            "Example.com/a=b",
            "a/b/c=d",
            "a_/b=c",
            &format!("{}=b", "k".repeat(64)),
        ] {
            let err = LabelSelector::parse(bad).expect_err(bad);
            assert!(
                matches!(err, SelectorError::InvalidLabelKey { .. }),
                "{bad:?}: {err:?}"
            );
        }
        assert!(LabelSelector::parse(&format!("{}=b", "k".repeat(63))).is_ok());
    }

    #[test]
    fn invalid_label_values_are_rejected() {
        let err = LabelSelector::parse("a=-b").expect_err("leading dash");
        assert!(err.to_string().starts_with("invalid label value: \"-b\""));
        assert!(LabelSelector::parse("a in (ok,bad_)").is_err());
        assert!(LabelSelector::parse(&format!("a={}", "v".repeat(64))).is_err());
        assert!(LabelSelector::parse("a=x.y_z-1").is_ok());
    }

    #[test]
    fn display_is_canonical_and_sorted_by_key() {
        let sel =
            LabelSelector::parse("tier in (b, a),app==web,!gone, env,n!=1,r>3").expect("parses");
        assert_eq!(sel.to_string(), "app=web,env,!gone,n!=1,r>3,tier in (a,b)");
        let again = LabelSelector::parse(&sel.to_string()).expect("round trips");
        assert_eq!(again, sel);
    }

    #[test]
    fn match_labels_build_equality_requirements() {
        let map = labels(&[("app", "web"), ("tier", "fe")]);
        let sel = LabelSelector::from_match_labels(&map);
        assert_eq!(sel.to_string(), "app=web,tier=fe");
        assert!(sel.matches(&labels(&[("app", "web"), ("tier", "fe"), ("x", "y")])));
        assert!(!sel.matches(&labels(&[("app", "web")])));
        assert!(LabelSelector::from_match_labels(&BTreeMap::new()).is_empty());
    }

    #[test]
    fn label_selector_json_combines_labels_and_expressions() {
        let v = json!({
            "matchLabels": {"app": "web"},
            "matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["fe", "be"]},
                {"key": "canary", "operator": "DoesNotExist"},
                {"key": "env", "operator": "NotIn", "values": ["dev"]},
                {"key": "zone", "operator": "Exists"}
            ]
        });
        let sel = LabelSelector::from_label_selector_value(&v).expect("valid");
        assert_eq!(
            sel.to_string(),
            "app=web,!canary,env notin (dev),tier in (be,fe),zone"
        );
        assert!(sel.matches(&labels(&[("app", "web"), ("tier", "fe"), ("zone", "a")])));
        assert!(!sel.matches(&labels(&[("app", "web"), ("tier", "fe")])));
    }

    #[test]
    fn null_label_selector_json_matches_nothing_but_empty_object_matches_everything() {
        let nothing = LabelSelector::from_label_selector_value(&Value::Null).expect("null ok");
        assert!(!nothing.is_empty());
        assert!(!nothing.matches(&labels(&[])));
        let everything = LabelSelector::from_label_selector_value(&json!({})).expect("{} ok");
        assert!(everything.is_empty());
        assert!(everything.matches(&labels(&[("a", "b")])));
    }

    #[test]
    fn invalid_label_selector_json_is_rejected() {
        let cases = [
            json!({"matchExpressions": [{"key": "a", "operator": "Bogus"}]}),
            json!({"matchExpressions": [{"key": "a", "operator": "In", "values": []}]}),
            json!({"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]}),
            json!({"matchExpressions": [{"operator": "Exists"}]}),
            json!({"matchLabels": {"a": 1}}),
            json!({"matchLabels": {"a": "-x"}}),
            json!({"matchLabels": ["a"]}),
            json!("app=web"),
        ];
        for case in cases {
            assert!(
                LabelSelector::from_label_selector_value(&case).is_err(),
                "{case} should fail"
            );
        }
        let err = LabelSelector::from_label_selector_value(
            &json!({"matchExpressions": [{"key": "a", "operator": "Bogus"}]}),
        )
        .expect_err("bad operator");
        assert_eq!(err, SelectorError::InvalidOperator("Bogus".into()));
    }

    #[test]
    fn matches_object_reads_metadata_labels() {
        let sel = LabelSelector::parse("app=web").expect("parses");
        assert!(sel.matches_object(&json!({"metadata": {"labels": {"app": "web"}}})));
        assert!(!sel.matches_object(&json!({"metadata": {"name": "x"}})));
        let neg = LabelSelector::parse("app notin (web)").expect("parses");
        assert!(neg.matches_object(&json!({})));
    }

    fn pod(node: Option<&str>, phase: &str) -> Value {
        let mut spec = json!({"restartPolicy": "Always"});
        if let Some(node) = node {
            spec["nodeName"] = json!(node);
        }
        json!({
            "kind": "Pod",
            "metadata": {"name": "p1", "namespace": "default"},
            "spec": spec,
            "status": {"phase": phase}
        })
    }

    #[test]
    fn field_selectors_match_dotted_paths() {
        let sel = FieldSelector::parse("metadata.name=p1,status.phase!=Failed").expect("parses");
        assert_eq!(sel.fields(), vec!["metadata.name", "status.phase"]);
        assert!(sel.matches(&pod(Some("n1"), "Running")));
        assert!(!sel.matches(&pod(Some("n1"), "Failed")));
        let double = FieldSelector::parse("metadata.namespace==default").expect("parses");
        assert!(double.matches(&pod(None, "Pending")));
    }

    #[test]
    fn missing_fields_compare_as_empty_so_unscheduled_pods_match() {
        let unscheduled = FieldSelector::parse("spec.nodeName=").expect("parses");
        assert!(unscheduled.matches(&pod(None, "Pending")));
        assert!(!unscheduled.matches(&pod(Some("n1"), "Running")));
        let scheduled = FieldSelector::parse("spec.nodeName!=").expect("parses");
        assert!(scheduled.matches(&pod(Some("n1"), "Running")));
    }

    #[test]
    fn numbers_and_bools_compare_by_string_form() {
        let obj = json!({"count": 3, "spec": {"unschedulable": true}});
        assert!(FieldSelector::parse("count=3").expect("ok").matches(&obj));
        assert!(FieldSelector::parse("spec.unschedulable=true")
            .expect("ok")
            .matches(&obj));
        let node = json!({"spec": {}});
        assert!(FieldSelector::parse("spec.unschedulable=false")
            .expect("ok")
            .matches(&node));
    }

    #[test]
    fn event_source_means_the_source_component() {
        let event = json!({"kind": "Event", "source": {"component": "kubelet", "host": "n1"},
                           "involvedObject": {"kind": "Pod", "name": "p1"}, "type": "Normal"});
        let sel = FieldSelector::parse("source=kubelet,involvedObject.kind=Pod,type=Normal")
            .expect("parses");
        assert!(sel.matches(&event));
    }

    #[test]
    fn field_selector_escapes_allow_commas_and_equals_in_values() {
        let sel =
            FieldSelector::parse(r"metadata.name=a\,b\=c\\d,status.phase=Running").expect("parses");
        let obj = json!({"metadata": {"name": r"a,b=c\d"}, "status": {"phase": "Running"}});
        assert!(sel.matches(&obj));
        assert_eq!(sel.fields(), vec!["metadata.name", "status.phase"]);
        assert_eq!(
            sel.to_string(),
            r"metadata.name=a\,b\=c\\d,status.phase=Running"
        );
        assert_eq!(
            FieldSelector::parse(&sel.to_string()).expect("round trips"),
            sel
        );
    }

    #[test]
    fn invalid_field_selectors_are_rejected() {
        assert!(matches!(
            FieldSelector::parse("metadata.name"),
            Err(SelectorError::InvalidFieldTerm { .. })
        ));
        assert_eq!(
            FieldSelector::parse(r"a=b\x"),
            Err(SelectorError::InvalidEscapeSequence(r"\x".into()))
        );
        assert_eq!(
            FieldSelector::parse("a=b\\"),
            Err(SelectorError::InvalidEscapeSequence("\\".into()))
        );
        assert_eq!(
            FieldSelector::parse("a=b=c"),
            Err(SelectorError::UnescapedCharacter('='))
        );
        assert!(FieldSelector::parse("=x").is_err());
    }

    #[test]
    fn empty_field_selector_matches_everything() {
        let sel = FieldSelector::parse("").expect("parses");
        assert!(sel.is_empty());
        assert!(sel.matches(&json!({})));
        assert!(
            FieldSelector::parse("a=b,")
                .expect("trailing comma ok")
                .fields()
                == vec!["a"]
        );
    }

    #[test]
    fn required_value_reports_equality_terms_only() {
        let sel = FieldSelector::parse("metadata.namespace=ns1,spec.nodeName!=n1").expect("ok");
        assert_eq!(sel.required_value("metadata.namespace"), Some("ns1"));
        assert_eq!(sel.required_value("spec.nodeName"), None);
    }
}
