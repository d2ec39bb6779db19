//! Turns a collections request body into typed records, failing the whole request where
//! Salesforce's deserialiser does (bad JSON, unknown field, a value that cannot become the
//! field's type) and single records where the save would.

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use serde_json::{Map, Number, Value};

use crate::collections::RecordError;
use crate::jsonpos;
use crate::org::{CompiledOrg, FieldType};
use crate::rest::RestError;

pub(crate) const MAX_RECORDS: usize = 200;

pub(crate) struct Incoming {
    pub all_or_none: bool,
    /// Fields by their defined name, values converted to the field's type.
    pub records: Vec<Result<Map<String, Value>, RecordError>>,
}

fn parser_error(message: String) -> RestError {
    RestError::bad_request("JSON_PARSER_ERROR", message)
}

/// Jackson's name of the token a value starts with, and the text it quotes.
fn token(v: &Value) -> (&'static str, String) {
    match v {
        Value::String(s) => ("VALUE_STRING", s.clone()),
        Value::Number(n) if n.is_f64() => ("VALUE_NUMBER_FLOAT", n.to_string()),
        Value::Number(n) => ("VALUE_NUMBER_INT", n.to_string()),
        Value::Bool(true) => ("VALUE_TRUE", "true".into()),
        Value::Bool(false) => ("VALUE_FALSE", "false".into()),
        Value::Null => ("VALUE_NULL", "null".into()),
        Value::Object(_) => ("START_OBJECT", "{".into()),
        Value::Array(_) => ("START_ARRAY", "[".into()),
    }
}

fn cannot_deserialize(type_name: &str, v: &Value, (line, column): (usize, usize)) -> RestError {
    let (tok, text) = token(v);
    parser_error(format!(
        "Cannot deserialize instance of {type_name} from {tok} value {text} or request may be \
         missing a required field at [line:{line}, column:{column}]"
    ))
}

pub(crate) fn decode(body: &[u8], org: &CompiledOrg, object: &str) -> Result<Incoming, RestError> {
    let root: Value = serde_json::from_slice(body).map_err(|e| {
        let text = e.to_string();
        let msg = text.split(" at line ").next().unwrap_or(&text);
        parser_error(format!(
            "{msg} at [line:{}, column:{}]",
            e.line(),
            e.column()
        ))
    })?;
    let Value::Object(root) = root else {
        return Err(cannot_deserialize(
            "SObjectCollectionsRequest",
            &root,
            (1, 1),
        ));
    };
    let all_or_none = match root.get("allOrNone") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => true,
        Some(Value::String(s)) if s.eq_ignore_ascii_case("false") => false,
        Some(other) => return Err(cannot_deserialize("boolean", other, (1, 1))),
    };
    let records = match root.get("records") {
        Some(Value::Array(a)) if !a.is_empty() => a,
        Some(Value::Array(_)) | None | Some(Value::Null) => {
            return Err(RestError::bad_request(
                "REQUIRED_FIELD_MISSING",
                "At least 1 record is required.",
            ))
        }
        Some(other) => return Err(cannot_deserialize("List<SObject>", other, (1, 1))),
    };
    if records.len() > MAX_RECORDS {
        return Err(RestError::bad_request(
            "EXCEEDED_ID_LIMIT",
            "record limit reached. cannot submit more than 200 records into this call",
        ));
    }
    let mut out = Vec::with_capacity(records.len());
    for (i, rec) in records.iter().enumerate() {
        let Value::Object(map) = rec else {
            return Err(cannot_deserialize("SObject", rec, (1, 1)));
        };
        out.push(decode_record(body, org, object, i, map)?);
    }
    Ok(Incoming {
        all_or_none,
        records: out,
    })
}

fn decode_record(
    body: &[u8],
    org: &CompiledOrg,
    object: &str,
    index: usize,
    map: &Map<String, Value>,
) -> Result<Result<Map<String, Value>, RecordError>, RestError> {
    let mut problem = match map.get("attributes").and_then(|a| a.get("type")) {
        Some(Value::String(t)) if t.eq_ignore_ascii_case(object) => None,
        Some(Value::String(t)) => Some(RecordError::new(
            "INVALID_TYPE",
            format!("sObject type '{t}' does not match the type {object} of this upsert"),
            vec![],
        )),
        _ => Some(RecordError::new(
            "INVALID_TYPE",
            "Must specify a type in attributes field",
            vec![],
        )),
    };
    let mut fields = Map::new();
    for (key, value) in map {
        if key == "attributes" {
            continue;
        }
        if key.eq_ignore_ascii_case("Id") {
            if !value.is_null() && problem.is_none() {
                problem = Some(RecordError::new(
                    "INVALID_FIELD_FOR_INSERT_UPDATE",
                    "cannot specify Id in an upsert call: use the external id field",
                    vec!["Id".into()],
                ));
            }
            continue;
        }
        let Some((name, def)) = org.field(object, key) else {
            return Err(RestError::bad_request(
                "INVALID_FIELD",
                format!("No such column '{key}' on sobject of type {object}"),
            ));
        };
        let converted = convert(def.kind, value).map_err(|type_name| {
            let at = match jsonpos::locate(body, index, key) {
                // Jackson reports the position just past the offending token.
                Some((start, _)) if value.is_object() || value.is_array() => {
                    jsonpos::line_column(body, start + 1)
                }
                Some((_, end)) => jsonpos::line_column(body, end),
                None => (1, 1),
            };
            cannot_deserialize(type_name, value, at)
        })?;
        fields.insert(name.to_owned(), converted);
    }
    Ok(match problem {
        Some(e) => Err(e),
        None => Ok(fields),
    })
}

/// The value as stored, or the Jackson type name it cannot be read as.
fn convert(kind: FieldType, v: &Value) -> Result<Value, &'static str> {
    if v.is_null() {
        return Ok(Value::Null);
    }
    match kind {
        _ if kind.is_text() => match v {
            Value::String(_) => Ok(v.clone()),
            Value::Number(n) => Ok(Value::String(n.to_string())),
            Value::Bool(b) => Ok(Value::String(b.to_string())),
            _ => Err("string"),
        },
        FieldType::Date => v
            .as_str()
            .and_then(parse_date)
            .map(|d| Value::String(d.format("%Y-%m-%d").to_string()))
            .ok_or("date"),
        FieldType::Datetime => v
            .as_str()
            .and_then(parse_datetime)
            .map(|d| Value::String(d.format("%Y-%m-%dT%H:%M:%S%.3f+0000").to_string()))
            .ok_or("datetime"),
        FieldType::Number => match v {
            Value::Number(_) => Ok(v.clone()),
            Value::String(s) => s
                .trim()
                .parse::<Number>()
                .ok()
                .filter(|n| n.as_f64().is_some_and(f64::is_finite))
                .map(Value::Number)
                .ok_or("double"),
            _ => Err("double"),
        },
        FieldType::Boolean => match v {
            Value::Bool(_) => Ok(v.clone()),
            Value::String(s) if s.eq_ignore_ascii_case("true") => Ok(Value::Bool(true)),
            Value::String(s) if s.eq_ignore_ascii_case("false") => Ok(Value::Bool(false)),
            _ => Err("boolean"),
        },
        _ => Err("string"),
    }
}

fn parse_date(s: &str) -> Option<NaiveDate> {
    let b = s.as_bytes();
    let shaped = b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit());
    if shaped {
        return NaiveDate::parse_from_str(s, "%Y-%m-%d").ok();
    }
    // A full datetime is accepted for a date field; only its date is kept.
    parse_datetime(s).map(|d| d.date_naive())
}

fn parse_datetime(s: &str) -> Option<DateTime<Utc>> {
    // Salesforce refuses "2017-10-17 00:00:00"; chrono's RFC 3339 parser would take it.
    if s.contains(' ') || s.len() < 10 {
        return None;
    }
    if s.len() == 10 {
        let d = parse_date(s)?;
        return Some(d.and_hms_opt(0, 0, 0)?.and_utc());
    }
    if let Ok(d) = DateTime::parse_from_rfc3339(s) {
        return Some(d.with_timezone(&Utc));
    }
    if let Ok(d) = DateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f%z") {
        return Some(d.with_timezone(&Utc));
    }
    NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f")
        .ok()
        .map(|d| d.and_utc())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn converts_values_like_salesforce() {
        assert_eq!(
            convert(FieldType::Date, &json!("1994-11-19")),
            Ok(json!("1994-11-19"))
        );
        assert_eq!(convert(FieldType::Date, &json!("2017-13-45")), Err("date"));
        assert_eq!(convert(FieldType::Date, &json!("not a date")), Err("date"));
        assert_eq!(convert(FieldType::Date, &json!(20170101)), Err("date"));
        assert_eq!(
            convert(FieldType::Datetime, &json!("2024-01-02T03:04:05+02:00")),
            Ok(json!("2024-01-02T01:04:05.000+0000"))
        );
        assert_eq!(
            convert(FieldType::Datetime, &json!("2017-10-17 00:00:00")),
            Err("datetime")
        );
        assert_eq!(convert(FieldType::Number, &json!("12")), Ok(json!(12)));
        assert_eq!(convert(FieldType::Number, &json!("twelve")), Err("double"));
        assert_eq!(convert(FieldType::Boolean, &json!("TRUE")), Ok(json!(true)));
        assert_eq!(convert(FieldType::Boolean, &json!(1)), Err("boolean"));
        assert_eq!(
            convert(FieldType::String, &json!(10008756)),
            Ok(json!("10008756"))
        );
        assert_eq!(convert(FieldType::String, &json!({"a": 1})), Err("string"));
        assert_eq!(convert(FieldType::Date, &Value::Null), Ok(Value::Null));
    }
}
