//! The small declarative condition language used by validation rules, triggers and lock
//! contention rules.
//!
//! A condition is JSON: a test `{"field": "Birthdate", "op": "after_today"}`,
//! `{"field": "LeadSource", "op": "eq", "value": "Web"}`, or a combinator
//! `{"all": [..]}`, `{"any": [..]}`, `{"not": {..}}`. It is parsed by hand (not derived) so
//! that a bad org file gets a message naming the problem rather than serde's "did not match
//! any variant".

use std::cmp::Ordering;

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "Value", into = "Value")]
pub enum Condition {
    All(Vec<Condition>),
    Any(Vec<Condition>),
    Not(Box<Condition>),
    /// `field` is `None` only for [`Op::IsNew`], which looks at the record, not a field.
    Test {
        field: Option<String>,
        op: Op,
        value: Option<Value>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Gt,
    Gte,
    Lt,
    Lte,
    In,
    NotIn,
    Contains,
    NotContains,
    StartsWith,
    EndsWith,
    IsBlank,
    NotBlank,
    AfterToday,
    BeforeToday,
    LongerThan,
    ShorterThan,
    Changed,
    IsNew,
}

const OPS: &[(&str, Op)] = &[
    ("eq", Op::Eq),
    ("ne", Op::Ne),
    ("gt", Op::Gt),
    ("gte", Op::Gte),
    ("lt", Op::Lt),
    ("lte", Op::Lte),
    ("in", Op::In),
    ("not_in", Op::NotIn),
    ("contains", Op::Contains),
    ("not_contains", Op::NotContains),
    ("starts_with", Op::StartsWith),
    ("ends_with", Op::EndsWith),
    ("is_blank", Op::IsBlank),
    ("not_blank", Op::NotBlank),
    ("after_today", Op::AfterToday),
    ("before_today", Op::BeforeToday),
    ("longer_than", Op::LongerThan),
    ("shorter_than", Op::ShorterThan),
    ("changed", Op::Changed),
    ("is_new", Op::IsNew),
];

impl Op {
    pub fn name(self) -> &'static str {
        OPS.iter()
            .find(|(_, op)| *op == self)
            .map(|(n, _)| *n)
            .unwrap_or("?")
    }

    fn parse(name: &str) -> Result<Op, String> {
        OPS.iter()
            .find(|(n, _)| *n == name)
            .map(|(_, op)| *op)
            .ok_or_else(|| {
                let names: Vec<&str> = OPS.iter().map(|(n, _)| *n).collect();
                format!("unknown op {name:?} (expected one of {})", names.join(", "))
            })
    }

    fn needs_value(self) -> bool {
        !matches!(
            self,
            Op::IsBlank | Op::NotBlank | Op::AfterToday | Op::BeforeToday | Op::Changed | Op::IsNew
        )
    }
}

impl TryFrom<Value> for Condition {
    type Error = String;

    fn try_from(value: Value) -> Result<Self, String> {
        let Value::Object(map) = value else {
            return Err(format!("a condition must be a JSON object, got {value}"));
        };
        for (key, ctor) in [
            ("all", Condition::All as fn(Vec<Condition>) -> Condition),
            ("any", Condition::Any),
        ] {
            if let Some(items) = map.get(key) {
                if map.len() != 1 {
                    return Err(format!("{key:?} must be the only key of its condition"));
                }
                let Value::Array(items) = items else {
                    return Err(format!("{key:?} takes an array of conditions"));
                };
                let parsed = items
                    .iter()
                    .enumerate()
                    .map(|(i, c)| {
                        Condition::try_from(c.clone()).map_err(|e| format!("{key}[{i}]: {e}"))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                return Ok(ctor(parsed));
            }
        }
        if let Some(inner) = map.get("not") {
            if map.len() != 1 {
                return Err("\"not\" must be the only key of its condition".into());
            }
            let inner = Condition::try_from(inner.clone()).map_err(|e| format!("not: {e}"))?;
            return Ok(Condition::Not(Box::new(inner)));
        }
        parse_test(map)
    }
}

fn parse_test(map: Map<String, Value>) -> Result<Condition, String> {
    if let Some(bad) = map
        .keys()
        .find(|k| !matches!(k.as_str(), "field" | "op" | "value"))
    {
        return Err(format!(
            "unknown key {bad:?} in condition (a test has field, op, value; combinators are all, any, not)"
        ));
    }
    let op = match map.get("op") {
        Some(Value::String(s)) => Op::parse(s)?,
        Some(other) => return Err(format!("op must be a string, got {other}")),
        None => return Err("a condition needs \"op\" (or is one of all/any/not)".into()),
    };
    let field = match map.get("field") {
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        Some(other) => return Err(format!("field must be a non-empty string, got {other}")),
        None if op == Op::IsNew => None,
        None => return Err(format!("op {:?} needs a \"field\"", op.name())),
    };
    let value = map.get("value").cloned();
    match (op.needs_value(), &value) {
        (true, None) => return Err(format!("op {:?} needs a \"value\"", op.name())),
        (false, Some(_)) => return Err(format!("op {:?} takes no \"value\"", op.name())),
        _ => {}
    }
    if let Some(v) = &value {
        match op {
            Op::In | Op::NotIn if !v.is_array() => {
                return Err(format!("op {:?} takes an array value", op.name()))
            }
            Op::LongerThan | Op::ShorterThan if v.as_u64().is_none() => {
                return Err(format!(
                    "op {:?} takes a non-negative integer value",
                    op.name()
                ))
            }
            Op::Contains | Op::NotContains | Op::StartsWith | Op::EndsWith if !v.is_string() => {
                return Err(format!("op {:?} takes a string value", op.name()))
            }
            _ => {}
        }
    }
    Ok(Condition::Test { field, op, value })
}

impl From<Condition> for Value {
    fn from(c: Condition) -> Value {
        let mut map = Map::new();
        match c {
            Condition::All(items) => {
                map.insert("all".into(), items.into_iter().map(Value::from).collect());
            }
            Condition::Any(items) => {
                map.insert("any".into(), items.into_iter().map(Value::from).collect());
            }
            Condition::Not(inner) => {
                map.insert("not".into(), Value::from(*inner));
            }
            Condition::Test { field, op, value } => {
                if let Some(f) = field {
                    map.insert("field".into(), Value::String(f));
                }
                map.insert("op".into(), Value::String(op.name().into()));
                if let Some(v) = value {
                    map.insert("value".into(), v);
                }
            }
        }
        Value::Object(map)
    }
}

/// What a condition is evaluated against: the record as it would be saved.
pub struct Subject<'a> {
    /// Stored fields merged with the incoming ones.
    pub fields: &'a Map<String, Value>,
    /// Stored fields before this write; `None` for a new record.
    pub old: Option<&'a Map<String, Value>>,
    pub today: NaiveDate,
}

impl Condition {
    /// Every field name the condition mentions, so the org loader can check they exist.
    pub fn fields(&self) -> Vec<&str> {
        let mut out = Vec::new();
        self.collect_fields(&mut out);
        out
    }

    fn collect_fields<'a>(&'a self, out: &mut Vec<&'a str>) {
        match self {
            Condition::All(items) | Condition::Any(items) => {
                items.iter().for_each(|c| c.collect_fields(out))
            }
            Condition::Not(inner) => inner.collect_fields(out),
            Condition::Test { field, .. } => out.extend(field.as_deref()),
        }
    }

    /// Rewrites field names with `canon` (the org's spelling), failing on unknown ones.
    pub fn canonicalize(&mut self, canon: &dyn Fn(&str) -> Option<String>) -> Result<(), String> {
        match self {
            Condition::All(items) | Condition::Any(items) => {
                items.iter_mut().try_for_each(|c| c.canonicalize(canon))
            }
            Condition::Not(inner) => inner.canonicalize(canon),
            Condition::Test { field: Some(f), .. } => {
                *f = canon(f).ok_or_else(|| format!("unknown field {f:?}"))?;
                Ok(())
            }
            Condition::Test { field: None, .. } => Ok(()),
        }
    }

    pub fn eval(&self, s: &Subject<'_>) -> bool {
        match self {
            Condition::All(items) => items.iter().all(|c| c.eval(s)),
            Condition::Any(items) => items.iter().any(|c| c.eval(s)),
            Condition::Not(inner) => !inner.eval(s),
            Condition::Test { field, op, value } => {
                let null = Value::Null;
                let current = field
                    .as_deref()
                    .and_then(|f| s.fields.get(f))
                    .unwrap_or(&null);
                test(
                    *op,
                    current,
                    value.as_ref().unwrap_or(&null),
                    field.as_deref(),
                    s,
                )
            }
        }
    }
}

fn test(op: Op, current: &Value, arg: &Value, field: Option<&str>, s: &Subject<'_>) -> bool {
    match op {
        Op::Eq => equal(current, arg),
        Op::Ne => !equal(current, arg),
        Op::Gt => compare(current, arg) == Some(Ordering::Greater),
        Op::Gte => matches!(
            compare(current, arg),
            Some(Ordering::Greater | Ordering::Equal)
        ),
        Op::Lt => compare(current, arg) == Some(Ordering::Less),
        Op::Lte => matches!(
            compare(current, arg),
            Some(Ordering::Less | Ordering::Equal)
        ),
        Op::In => arg
            .as_array()
            .is_some_and(|a| a.iter().any(|v| equal(current, v))),
        Op::NotIn => !arg
            .as_array()
            .is_some_and(|a| a.iter().any(|v| equal(current, v))),
        Op::Contains => text(current).contains(arg.as_str().unwrap_or_default()),
        Op::NotContains => !text(current).contains(arg.as_str().unwrap_or_default()),
        Op::StartsWith => text(current).starts_with(arg.as_str().unwrap_or_default()),
        Op::EndsWith => text(current).ends_with(arg.as_str().unwrap_or_default()),
        Op::IsBlank => is_blank(current),
        Op::NotBlank => !is_blank(current),
        Op::AfterToday => date_of(current).is_some_and(|d| d > s.today),
        Op::BeforeToday => date_of(current).is_some_and(|d| d < s.today),
        Op::LongerThan => (text(current).chars().count() as u64) > arg.as_u64().unwrap_or(u64::MAX),
        Op::ShorterThan => (text(current).chars().count() as u64) < arg.as_u64().unwrap_or(0),
        Op::Changed => match (s.old, field) {
            (Some(old), Some(f)) => !equal(old.get(f).unwrap_or(&Value::Null), current),
            _ => false,
        },
        Op::IsNew => s.old.is_none(),
    }
}

fn is_blank(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        _ => false,
    }
}

/// Text view of a value, as a formula's TEXT() would give; blank for null.
fn text(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn date_of(v: &Value) -> Option<NaiveDate> {
    let s = v.as_str()?;
    NaiveDate::parse_from_str(s.get(..10)?, "%Y-%m-%d").ok()
}

fn equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(_), _) | (_, Value::Number(_)) => match (number(a), number(b)) {
            (Some(x), Some(y)) => x == y,
            _ => false,
        },
        (Value::String(x), Value::String(y)) => x == y,
        // Blank text and null are the same thing in a formula.
        (Value::Null, Value::String(s)) | (Value::String(s), Value::Null) => s.is_empty(),
        _ => a == b,
    }
}

fn compare(a: &Value, b: &Value) -> Option<Ordering> {
    match (a, b) {
        (Value::Null, _) | (_, Value::Null) => None,
        (Value::Number(_), _) | (_, Value::Number(_)) => number(a)?.partial_cmp(&number(b)?),
        // ISO dates and the simulator's normalised datetimes order correctly as text.
        (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
        (Value::Bool(x), Value::Bool(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn subject(fields: &Map<String, Value>) -> Subject<'_> {
        Subject {
            fields,
            old: None,
            today: NaiveDate::from_ymd_opt(2025, 6, 1).unwrap(),
        }
    }

    fn cond(v: Value) -> Condition {
        Condition::try_from(v).unwrap()
    }

    #[test]
    fn after_today_compares_dates_and_ignores_blank() {
        let c = cond(json!({"field": "Birthdate", "op": "after_today"}));
        let future = json!({"Birthdate": "2042-05-03"});
        let past = json!({"Birthdate": "1994-11-19"});
        let blank = json!({});
        assert!(c.eval(&subject(future.as_object().unwrap())));
        assert!(!c.eval(&subject(past.as_object().unwrap())));
        assert!(!c.eval(&subject(blank.as_object().unwrap())));
    }

    #[test]
    fn combinators_and_ops() {
        let c = cond(json!({"all": [
            {"field": "LeadSource", "op": "in", "value": ["Web", "Referral"]},
            {"not": {"field": "Email", "op": "ends_with", "value": "@example.com"}},
            {"any": [{"field": "Age", "op": "gte", "value": 18}, {"op": "is_new"}]}
        ]}));
        let ok = json!({"LeadSource": "Web", "Email": "a@b.org", "Age": 30});
        let bad = json!({"LeadSource": "Web", "Email": "a@example.com", "Age": 30});
        assert!(c.eval(&subject(ok.as_object().unwrap())));
        assert!(!c.eval(&subject(bad.as_object().unwrap())));
    }

    #[test]
    fn round_trips_through_json() {
        let v = json!({"any": [{"field": "A", "op": "longer_than", "value": 3}, {"op": "is_new"}]});
        assert_eq!(Value::from(cond(v.clone())), v);
    }

    #[test]
    fn bad_conditions_are_explained() {
        let e = Condition::try_from(json!({"field": "A", "op": "bigger"})).unwrap_err();
        assert!(e.contains("unknown op \"bigger\""), "{e}");
        let e = Condition::try_from(json!({"field": "A", "op": "eq"})).unwrap_err();
        assert!(e.contains("needs a \"value\""), "{e}");
        let e = Condition::try_from(json!({"all": [{"op": "is_blank"}]})).unwrap_err();
        assert!(
            e.contains("all[0]") && e.contains("needs a \"field\""),
            "{e}"
        );
    }

    #[test]
    fn changed_needs_an_old_record() {
        let c = cond(json!({"field": "Email", "op": "changed"}));
        let new = json!({"Email": "b@x.org"});
        let old = json!({"Email": "a@x.org"});
        let s = Subject {
            fields: new.as_object().unwrap(),
            old: Some(old.as_object().unwrap()),
            today: NaiveDate::from_ymd_opt(2025, 6, 1).unwrap(),
        };
        assert!(c.eval(&s));
        assert!(!c.eval(&subject(new.as_object().unwrap())));
    }
}
