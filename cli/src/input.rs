//! Reading the records of an enqueued file. Every record is checked before anything is
//! queued (all or nothing): a malformed file or a record without its key names the place
//! (record number, line) and nothing reaches the store.

use crate::cli::FileFormat;
use crate::error::{CliError, CliResult};
use crm_export_core::{JobDefinition, NewRecord};
use serde_json::{Map, Value};
use std::path::Path;

/// Problems listed in one error before the rest are only counted.
const MAX_LISTED: usize = 10;

/// Where a record came from, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// 1-based position among the file's records.
    pub index: usize,
    /// 1-based line, where the format has one per record.
    pub line: Option<u64>,
    /// The sObject Tree `referenceId`, if any.
    pub reference: Option<String>,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "record #{}", self.index)?;
        match (&self.reference, self.line) {
            (Some(r), Some(l)) => write!(f, " ({r}, line {l})"),
            (Some(r), None) => write!(f, " ({r})"),
            (None, Some(l)) => write!(f, " (line {l})"),
            (None, None) => Ok(()),
        }
    }
}

/// Reads and checks every record of `path` for job `def`.
pub fn read_file(
    path: &Path,
    format: FileFormat,
    def: &JobDefinition,
) -> CliResult<Vec<NewRecord>> {
    let bytes = std::fs::read(path)
        .map_err(|e| CliError::bad_input(format!("cannot read {}: {e}", path.display())))?;
    let text = String::from_utf8(bytes).map_err(|e| {
        CliError::bad_input(format!(
            "{} is not UTF-8 text (invalid byte at offset {})",
            path.display(),
            e.utf8_error().valid_up_to()
        ))
    })?;
    parse(&text, format, def).map_err(|e| CliError::bad_input(format!("{}: {e}", path.display())))
}

/// Parses and checks the records of one file's text. The error message says what is wrong
/// and where; nothing has been queued when it is returned.
pub fn parse(
    text: &str,
    format: FileFormat,
    def: &JobDefinition,
) -> Result<Vec<NewRecord>, String> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let raw = match format {
        FileFormat::Tree => parse_tree(text)?,
        FileFormat::Ndjson => parse_ndjson(text)?,
        FileFormat::Csv => parse_csv(text)?,
    };
    if raw.is_empty() {
        return Err("the file holds no records; nothing was enqueued".into());
    }
    let mut problems = Vec::new();
    let mut records = Vec::with_capacity(raw.len());
    for (origin, value) in raw {
        match check(def, &origin, value) {
            Ok(r) => records.push(r),
            Err(p) => problems.push(p),
        }
    }
    if problems.is_empty() {
        return Ok(records);
    }
    let total = problems.len();
    let mut msg = format!(
        "{total} of {} records are invalid; nothing was enqueued:",
        total + records.len()
    );
    for p in problems.iter().take(MAX_LISTED) {
        msg.push_str("\n  ");
        msg.push_str(p);
    }
    if total > MAX_LISTED {
        msg.push_str(&format!("\n  ... and {} more", total - MAX_LISTED));
    }
    Err(msg)
}

/// One record's checks: an object, of the job's object type, with its key.
fn check(def: &JobDefinition, origin: &Origin, value: Value) -> Result<NewRecord, String> {
    let Value::Object(mut fields) = value else {
        return Err(format!("{origin}: is not a JSON object"));
    };
    if let Some(attrs) = fields.remove("attributes") {
        let ty = attrs.get("type").and_then(Value::as_str);
        if let Some(ty) = ty {
            if !ty.eq_ignore_ascii_case(&def.object) {
                return Err(format!(
                    "{origin}: is a {ty} record, but job {} exports {}",
                    def.job_id, def.object
                ));
            }
        }
    }
    let key_field = def.key_field();
    let Some(key) = def.key_of(&fields) else {
        let why = match fields.get(key_field) {
            None | Some(Value::Null) => "has no",
            Some(Value::String(_)) => "has an empty",
            Some(_) => "has an unusable (not a string or number)",
        };
        return Err(format!(
            "{origin}: {why} {key_field} (the key of job {})",
            def.job_id
        ));
    };
    Ok(NewRecord { key, fields })
}

fn json_error(e: &serde_json::Error, hint: &str) -> String {
    format!(
        "malformed JSON at line {}, column {}: {e}{hint}",
        e.line(),
        e.column()
    )
}

fn parse_tree(text: &str) -> Result<Vec<(Origin, Value)>, String> {
    let doc: Value = serde_json::from_str(text).map_err(|e| {
        let hint = if e.to_string().contains("trailing characters") {
            " (one JSON document per line? pass --format ndjson)"
        } else {
            ""
        };
        json_error(&e, hint)
    })?;
    let records = match doc {
        Value::Object(mut o) => match o.remove("records") {
            Some(Value::Array(a)) => a,
            _ => {
                return Err(
                    "not an sObject Tree file: expected {\"records\": [...]} at the top".into(),
                )
            }
        },
        _ => {
            return Err("not an sObject Tree file: expected {\"records\": [...]} at the top".into())
        }
    };
    Ok(records
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            let reference = v
                .get("attributes")
                .and_then(|a| a.get("referenceId"))
                .and_then(Value::as_str)
                .map(str::to_owned);
            (
                Origin {
                    index: i + 1,
                    line: None,
                    reference,
                },
                v,
            )
        })
        .collect())
}

fn parse_ndjson(text: &str) -> Result<Vec<(Origin, Value)>, String> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let line_no = i as u64 + 1;
        let value: Value = serde_json::from_str(line).map_err(|e| {
            format!(
                "malformed JSON at line {line_no}, column {}: {e}",
                e.column()
            )
        })?;
        out.push((
            Origin {
                index: out.len() + 1,
                line: Some(line_no),
                reference: None,
            },
            value,
        ));
    }
    Ok(out)
}

fn parse_csv(text: &str) -> Result<Vec<(Origin, Value)>, String> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(false)
        .from_reader(text.as_bytes());
    let headers = reader
        .headers()
        .map_err(|e| format!("unreadable CSV header: {e}"))?
        .clone();
    let first = headers.get(0).unwrap_or("").trim_start();
    if first.starts_with('{') || first.starts_with('[') {
        return Err("this looks like JSON, not CSV; pass --format tree or ndjson".into());
    }
    let mut seen = std::collections::HashSet::new();
    for (i, h) in headers.iter().enumerate() {
        if h.trim().is_empty() {
            return Err(format!("CSV header column {} has no name", i + 1));
        }
        if !seen.insert(h) {
            return Err(format!("CSV header names column {h:?} twice"));
        }
    }
    let mut out = Vec::new();
    for row in reader.records() {
        let row = row.map_err(|e| match e.position() {
            Some(p) => format!("malformed CSV at line {}: {e}", p.line()),
            None => format!("malformed CSV: {e}"),
        })?;
        let mut fields = Map::new();
        for (h, v) in headers.iter().zip(row.iter()) {
            // An empty cell means "no value", not an empty string.
            if !v.is_empty() {
                fields.insert(h.to_owned(), Value::String(v.to_owned()));
            }
        }
        out.push((
            Origin {
                index: out.len() + 1,
                line: row.position().map(|p| p.line()),
                reference: None,
            },
            Value::Object(fields),
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crm_export_core::JobId;

    fn job(case_insensitive: bool) -> JobDefinition {
        JobDefinition {
            job_id: JobId::new("contacts").unwrap(),
            object: "Contact".into(),
            external_id_field: "External_Id__c".into(),
            key_field: None,
            key_case_insensitive: case_insensitive,
            field_map: Default::default(),
        }
    }

    #[test]
    fn tree_records_lose_their_attributes_and_keep_their_keys() {
        let text = r#"{"records":[
            {"attributes":{"type":"Contact","referenceId":"R1"},"LastName":"A","External_Id__c":"AbC"},
            {"attributes":{"type":"Contact","referenceId":"R2"},"LastName":"B","External_Id__c":42}]}"#;
        let recs = parse(text, FileFormat::Tree, &job(true)).unwrap();
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[0].key.as_str(), "abc");
        assert_eq!(recs[1].key.as_str(), "42");
        assert!(!recs[0].fields.contains_key("attributes"));
    }

    #[test]
    fn a_record_without_its_key_names_the_record_and_nothing_passes() {
        let text = r#"{"records":[
            {"attributes":{"type":"Contact","referenceId":"R1"},"External_Id__c":"1"},
            {"attributes":{"type":"Contact","referenceId":"R2"},"LastName":"B"},
            {"attributes":{"type":"Contact","referenceId":"R3"},"External_Id__c":"  "}]}"#;
        let e = parse(text, FileFormat::Tree, &job(false)).unwrap_err();
        assert!(e.contains("2 of 3 records are invalid"), "{e}");
        assert!(e.contains("record #2 (R2): has no External_Id__c"), "{e}");
        assert!(
            e.contains("record #3 (R3): has an empty External_Id__c"),
            "{e}"
        );
    }

    #[test]
    fn records_of_another_object_are_refused() {
        let text = r#"{"records":[{"attributes":{"type":"Account"},"External_Id__c":"1"}]}"#;
        let e = parse(text, FileFormat::Tree, &job(false)).unwrap_err();
        assert!(
            e.contains("is a Account record, but job contacts exports Contact"),
            "{e}"
        );
    }

    #[test]
    fn malformed_json_names_the_line() {
        let e = parse(
            "{\"records\": [\n{\"a\": 1,,}\n]}",
            FileFormat::Tree,
            &job(false),
        )
        .unwrap_err();
        assert!(e.contains("line 2"), "{e}");
        let e = parse(
            "{\"External_Id__c\":\"1\"}\n\n{\"External_Id__c\": }\n",
            FileFormat::Ndjson,
            &job(false),
        )
        .unwrap_err();
        assert!(e.contains("line 3"), "{e}");
        let e = parse("{\"a\":1}\n{\"b\":2}\n", FileFormat::Tree, &job(false)).unwrap_err();
        assert!(e.contains("--format ndjson"), "{e}");
    }

    #[test]
    fn csv_cells_are_strings_and_empty_cells_are_absent() {
        let text = "External_Id__c,LastName,Email\n1,Smith,\n2,\"Doe, Jr.\",d@example.com\n";
        let recs = parse(text, FileFormat::Csv, &job(false)).unwrap();
        assert_eq!(recs.len(), 2);
        assert!(!recs[0].fields.contains_key("Email"));
        assert_eq!(recs[1].fields["LastName"], "Doe, Jr.");
        let e = parse(
            "External_Id__c,LastName\n1,A\n,B\n",
            FileFormat::Csv,
            &job(false),
        )
        .unwrap_err();
        assert!(
            e.contains("record #2 (line 3): has no External_Id__c"),
            "{e}"
        );
        let e = parse(
            "External_Id__c,LastName\n1,A,extra\n",
            FileFormat::Csv,
            &job(false),
        )
        .unwrap_err();
        assert!(e.contains("line 2"), "{e}");
        let e = parse("{\"records\":[]}\n", FileFormat::Csv, &job(false)).unwrap_err();
        assert!(e.contains("looks like JSON"), "{e}");
    }

    #[test]
    fn an_empty_file_is_refused() {
        assert!(parse("External_Id__c\n", FileFormat::Csv, &job(false)).is_err());
        assert!(parse("\n\n", FileFormat::Ndjson, &job(false)).is_err());
        assert!(parse("{\"records\":[]}", FileFormat::Tree, &job(false)).is_err());
    }
}
