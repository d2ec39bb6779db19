//! `PATCH /services/data/vXX.X/composite/sobjects/{SObject}/{ExtIdField}`: sObject
//! Collections upsert, with Salesforce's order of checks and per-record results.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::decode::{self, Incoming};
use crate::faults::FaultKind;
use crate::ids;
use crate::org::{
    CompiledOrg, FieldDef, FieldType, ObjectDef, TriggerError, TriggerEvent, TriggerTiming,
};
use crate::rest::{self, json_response, raw_response, with_limit_info, RestError};
use crate::rules::Subject;
use crate::sim::{lock, Shared, Simulator};
use crate::store::{index_key, Record, Store};
use crate::versions;

/// One entry of `errors` in a per-record result.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub(crate) struct RecordError {
    #[serde(rename = "statusCode")]
    pub status_code: &'static str,
    pub message: String,
    pub fields: Vec<String>,
}

impl RecordError {
    pub fn new(status_code: &'static str, message: impl Into<String>, fields: Vec<String>) -> Self {
        RecordError {
            status_code,
            message: message.into(),
            fields,
        }
    }
}

/// An UpsertResult. A failed one has no `id` key at all.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub(crate) struct UpsertResult {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub success: bool,
    pub errors: Vec<RecordError>,
    pub created: bool,
}

impl UpsertResult {
    fn failed(errors: Vec<RecordError>) -> Self {
        UpsertResult {
            id: None,
            success: false,
            errors,
            created: false,
        }
    }
}

pub(crate) async fn upsert(
    State(sim): State<Simulator>,
    Path((version, sobject, field)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let shared = &sim.shared;
    let admitted = tokio::time::Instant::now();
    let call = match rest::admit_now(shared, &headers) {
        Ok(call) => call,
        Err(resp) => return resp,
    };
    let resp = handle(shared, &version, &sobject, &field, &body).await;
    rest::answer_after_latency(shared, admitted).await;
    drop(call);
    match resp {
        // A fault's raw response stands for something in front of the org (a CDN page).
        Handled::Raw(resp) => resp,
        Handled::Rest(resp) => with_limit_info(shared, resp),
    }
}

enum Handled {
    Rest(Response),
    Raw(Response),
}

async fn handle(
    shared: &Shared,
    version: &str,
    sobject: &str,
    field: &str,
    body: &[u8],
) -> Handled {
    if !versions::supports_collections_upsert(version) {
        return Handled::Rest(
            RestError::not_found("The requested resource does not exist").into_response(),
        );
    }
    shared.stats.upsert_calls.fetch_add(1, Ordering::SeqCst);
    let fault = lock(&shared.faults).take();
    match &fault {
        Some(FaultKind::RequestLimit) => {
            return Handled::Rest(RestError::total_requests().into_response())
        }
        Some(FaultKind::Delay { ms }) => tokio::time::sleep(Duration::from_millis(*ms)).await,
        Some(FaultKind::Http {
            status,
            content_type,
            body,
            commit: false,
        }) => return Handled::Raw(raw_fault(*status, content_type, body)),
        _ => {}
    }

    let results = match process(shared, sobject, field, body) {
        Ok(results) => results,
        Err(e) => return Handled::Rest(e.into_response()),
    };
    let written = results.iter().filter(|r| r.success).count() as u64;
    let stats = &shared.stats;
    stats.records_written.fetch_add(written, Ordering::SeqCst);
    stats
        .records_failed
        .fetch_add(results.len() as u64 - written, Ordering::SeqCst);

    let mut results = serde_json::to_value(&results).unwrap_or(Value::Array(vec![]));
    match fault {
        Some(FaultKind::MalformedJson) => {
            let text = results.to_string();
            let cut = text.len() / 2;
            let cut = (0..=cut)
                .rev()
                .find(|i| text.is_char_boundary(*i))
                .unwrap_or(0);
            Handled::Rest(raw_response(
                StatusCode::OK,
                rest::JSON,
                text[..cut].to_owned(),
            ))
        }
        Some(FaultKind::WrongLength) => {
            if let Value::Array(items) = &mut results {
                items.pop();
            }
            Handled::Rest(json_response(StatusCode::OK, &results))
        }
        Some(FaultKind::Http {
            status,
            content_type,
            body,
            ..
        }) => Handled::Raw(raw_fault(status, &content_type, &body)),
        _ => Handled::Rest(json_response(StatusCode::OK, &results)),
    }
}

fn raw_fault(status: u16, content_type: &str, body: &str) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
    raw_response(status, content_type, body.to_owned())
}

/// Decodes against the org the store holds, then applies under the store lock. Decoding
/// runs outside the lock; if the org changed meanwhile the body is decoded again.
fn process(
    shared: &Shared,
    sobject: &str,
    field: &str,
    body: &[u8],
) -> Result<Vec<UpsertResult>, RestError> {
    let mut org = Arc::clone(&lock(&shared.store).org);
    loop {
        let (object, ext_field) = resolve(&org, sobject, field)?;
        let incoming = decode::decode(body, &org, &object)?;
        let mut store = lock(&shared.store);
        if !Arc::ptr_eq(&store.org, &org) {
            org = Arc::clone(&store.org);
            continue;
        }
        return Ok(apply(&mut store, &object, &ext_field, incoming, Utc::now()));
    }
}

/// The canonical object and external-id field names from the URL.
fn resolve(org: &CompiledOrg, sobject: &str, field: &str) -> Result<(String, String), RestError> {
    let (object, _) = org
        .object(sobject)
        .ok_or_else(|| RestError::not_found("The requested resource does not exist"))?;
    match org.field(object, field) {
        Some((name, def)) if def.external_id => Ok((object.to_owned(), name.to_owned())),
        _ => Err(RestError::not_found(format!(
            "Provided external ID field does not exist or is not accessible: {field}"
        ))),
    }
}

enum Outcome {
    Pending,
    Failed(Vec<RecordError>),
    Saved { id: String, created: bool },
}

enum Undo {
    Insert,
    Update(usize, Record),
}

fn label<'a>(name: &'a str, def: &'a FieldDef) -> &'a str {
    def.label.as_deref().unwrap_or(name)
}

/// A row another transaction holds: the record itself, or for a new record its parent.
fn locked_row(existing: Option<&Record>) -> String {
    existing.map_or_else(|| ids::with_checksum("0015g00000LOCKD"), |r| r.id.clone())
}

struct Call<'a> {
    org: &'a CompiledOrg,
    object: &'a str,
    def: &'a ObjectDef,
    ext: &'a str,
    ext_def: &'a FieldDef,
    now: DateTime<Utc>,
}

/// Applies one call's records in order and returns one result per record.
pub(crate) fn apply(
    store: &mut Store,
    object: &str,
    ext: &str,
    incoming: Incoming,
    now: DateTime<Utc>,
) -> Vec<UpsertResult> {
    let org = Arc::clone(&store.org);
    let Some((_, def)) = org.object(object) else {
        return Vec::new();
    };
    let Some((_, ext_def)) = org.field(object, ext) else {
        return Vec::new();
    };
    let call = Call {
        org: &org,
        object,
        def,
        ext,
        ext_def,
        now,
    };

    let keys: Vec<Option<String>> = incoming
        .records
        .iter()
        .map(|r| {
            r.as_ref()
                .ok()
                .and_then(|f| f.get(ext))
                .and_then(|v| index_key(ext_def, v))
        })
        .collect();
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for k in keys.iter().flatten() {
        *seen.entry(k.as_str()).or_default() += 1;
    }
    let mut outcomes: Vec<Outcome> = incoming
        .records
        .iter()
        .zip(&keys)
        .map(|(rec, key)| match (rec, key) {
            (Err(e), _) => Outcome::Failed(vec![e.clone()]),
            (Ok(_), None) => Outcome::Failed(vec![RecordError::new(
                "MISSING_ARGUMENT",
                format!("{ext} not specified"),
                vec![],
            )]),
            (Ok(fields), Some(k)) if seen[k.as_str()] > 1 => {
                let raw = match fields.get(ext) {
                    Some(Value::String(s)) => s.clone(),
                    Some(v) => v.to_string(),
                    None => k.clone(),
                };
                Outcome::Failed(vec![RecordError::new(
                    "DUPLICATE_VALUE",
                    format!("Duplicate external id specified: {raw}"),
                    vec![ext.to_owned()],
                )])
            }
            (Ok(_), Some(_)) => Outcome::Pending,
        })
        .collect();

    let mut undo: Vec<Undo> = Vec::new();
    let mut cpu_hits: HashMap<usize, u32> = HashMap::new();
    for (i, rec) in incoming.records.iter().enumerate() {
        if !matches!(outcomes[i], Outcome::Pending) {
            continue;
        }
        let (Ok(fields), Some(key)) = (rec, &keys[i]) else {
            continue;
        };
        outcomes[i] = save_one(&call, store, fields, key, &mut undo, &mut cpu_hits);
    }

    let cpu_failure = def
        .triggers
        .iter()
        .enumerate()
        .find_map(|(ti, t)| match t.error {
            TriggerError::CpuLimit { max_records }
                if cpu_hits.get(&ti).copied().unwrap_or(0) > max_records =>
            {
                Some(RecordError::new(
                    "CANNOT_INSERT_UPDATE_ACTIVATE_ENTITY",
                    format!(
                        "{}: System.LimitException: Apex CPU time limit exceeded",
                        t.name
                    ),
                    vec![],
                ))
            }
            _ => None,
        });
    let any_failed = outcomes.iter().any(|o| matches!(o, Outcome::Failed(_)));
    if cpu_failure.is_some() || (incoming.all_or_none && any_failed) {
        rollback(store, object, undo);
        for o in outcomes.iter_mut() {
            if let Some(e) = &cpu_failure {
                *o = Outcome::Failed(vec![e.clone()]);
            } else if matches!(o, Outcome::Saved { .. }) {
                *o = Outcome::Failed(vec![RecordError::new(
                    "ALL_OR_NONE_OPERATION_ROLLED_BACK",
                    "Record rolled back because not all records were valid and the request was \
                     using AllOrNone header",
                    vec![],
                )]);
            }
        }
    }

    outcomes
        .into_iter()
        .map(|o| match o {
            Outcome::Saved { id, created } => UpsertResult {
                id: Some(id),
                success: true,
                errors: vec![],
                created,
            },
            Outcome::Failed(errors) => UpsertResult::failed(errors),
            Outcome::Pending => UpsertResult::failed(vec![RecordError::new(
                "UNKNOWN_EXCEPTION",
                "record was not processed",
                vec![],
            )]),
        })
        .collect()
}

fn rollback(store: &mut Store, object: &str, undo: Vec<Undo>) {
    for step in undo.into_iter().rev() {
        match step {
            Undo::Insert => store.pop_last(object),
            Undo::Update(pos, old) => store.replace(object, pos, old),
        }
    }
}

/// Whether this attempt of `key` against a rule limited to `fail_attempts` still fails.
fn attempt_fails(
    store: &mut Store,
    call: &Call<'_>,
    rule: String,
    key: &str,
    fail_attempts: Option<u32>,
) -> bool {
    let n = store
        .attempts
        .entry((call.object.to_owned(), rule, key.to_owned()))
        .or_default();
    *n += 1;
    fail_attempts.is_none_or(|max| *n <= max)
}

/// Salesforce's order of execution for one record: row lock, API-level field checks,
/// before triggers, system validation, validation rules, uniqueness and storage, after
/// triggers, save.
fn save_one(
    call: &Call<'_>,
    store: &mut Store,
    fields: &Map<String, Value>,
    key: &str,
    undo: &mut Vec<Undo>,
    cpu_hits: &mut HashMap<usize, u32>,
) -> Outcome {
    let fail =
        |code, msg: String, f: Vec<String>| Outcome::Failed(vec![RecordError::new(code, msg, f)]);
    let matches = store.find(call.object, call.ext, key).to_vec();
    if matches.len() > 1 {
        let ids: Vec<&str> = matches
            .iter()
            .map(|&p| store.record(call.object, p).id.as_str())
            .collect();
        return fail(
            "DUPLICATE_EXTERNAL_ID",
            format!(
                "{}: more than one record found for external id field: [{}]",
                label(call.ext, call.ext_def),
                ids.join(", ")
            ),
            vec![],
        );
    }
    let existing: Option<(usize, Record)> = matches
        .first()
        .map(|&p| (p, store.record(call.object, p).clone()));
    let old = existing.as_ref().map(|(_, r)| r);
    let mut merged = old.map(|r| r.fields.clone()).unwrap_or_default();
    for (k, v) in fields {
        merged.insert(k.clone(), v.clone());
    }
    let subject = Subject {
        fields: &merged,
        old: old.map(|r| &r.fields),
        today: call.org.today(),
    };

    for (ri, rule) in call.def.lock_contention.iter().enumerate() {
        let keyed = rule.external_ids.is_empty()
            || rule.external_ids.iter().any(|e| {
                index_key(call.ext_def, &Value::String(e.clone())).as_deref() == Some(key)
            });
        if rule.active
            && keyed
            && rule.when.as_ref().is_none_or(|c| c.eval(&subject))
            && attempt_fails(store, call, format!("lock{ri}"), key, rule.fail_attempts)
        {
            return fail(
                "UNABLE_TO_LOCK_ROW",
                format!(
                    "unable to obtain exclusive access to this record or 1 records: {}",
                    locked_row(old)
                ),
                vec![],
            );
        }
    }

    let denied: Vec<String> = fields
        .keys()
        .filter(|k| {
            call.def
                .fields
                .get(k.as_str())
                .is_some_and(|f| !f.updateable || !f.fls_editable)
        })
        .cloned()
        .collect();
    if !denied.is_empty() {
        return fail(
            "INVALID_FIELD_FOR_INSERT_UPDATE",
            format!(
                "Unable to create/update fields: {}. Please check the security settings of this \
                 field and verify that it is read/write for your profile or permission set.",
                denied.join(", ")
            ),
            denied,
        );
    }
    for (name, value) in fields {
        let Some(f) = call.def.fields.get(name.as_str()) else {
            continue;
        };
        if f.kind == FieldType::Picklist && f.restricted {
            if let Value::String(s) = value {
                if !f.picklist_values.iter().any(|p| p == s) {
                    return fail(
                        "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
                        format!(
                            "{}: bad value for restricted picklist field: {s}",
                            label(name, f)
                        ),
                        vec![name.clone()],
                    );
                }
            }
        }
    }

    let event = if old.is_none() {
        TriggerEvent::Insert
    } else {
        TriggerEvent::Update
    };
    if let Some(failed) = run_triggers(
        call,
        store,
        TriggerTiming::Before,
        event,
        &subject,
        key,
        old,
        cpu_hits,
    ) {
        return failed;
    }

    if let Some(failed) = system_validation(call, fields, &merged) {
        return failed;
    }

    let rule_errors: Vec<RecordError> = call
        .def
        .validation_rules
        .iter()
        .filter(|r| r.active && r.error_condition.eval(&subject))
        .map(|r| {
            RecordError::new(
                "FIELD_CUSTOM_VALIDATION_EXCEPTION",
                r.message.clone(),
                r.error_field.iter().cloned().collect(),
            )
        })
        .collect();
    if !rule_errors.is_empty() {
        return Outcome::Failed(rule_errors);
    }

    for (name, f) in call.def.fields.iter().filter(|(_, f)| f.unique) {
        let Some(k) = merged.get(name).and_then(|v| index_key(f, v)) else {
            continue;
        };
        let own = existing.as_ref().map(|(p, _)| *p);
        if let Some(&other) = store
            .find(call.object, name, &k)
            .iter()
            .find(|&&p| Some(p) != own)
        {
            return fail(
                "DUPLICATE_VALUE",
                format!(
                    "duplicate value found: {name} duplicates value on record with id: {}",
                    store.record(call.object, other).id
                ),
                vec![],
            );
        }
    }

    if old.is_none() {
        if let Some(max) = call.org.def.storage.max_records {
            if store.total_records() >= max {
                return fail(
                    "STORAGE_LIMIT_EXCEEDED",
                    "storage limit exceeded".into(),
                    vec![],
                );
            }
        }
    }

    if let Some(failed) = run_triggers(
        call,
        store,
        TriggerTiming::After,
        event,
        &subject,
        key,
        old,
        cpu_hits,
    ) {
        return failed;
    }

    let external_id = match merged.get(call.ext) {
        Some(Value::String(s)) => s.clone(),
        Some(v) => v.to_string(),
        None => key.to_owned(),
    };
    match existing {
        Some((pos, prev)) => {
            let id = prev.id.clone();
            let updated = Record {
                id: id.clone(),
                external_id,
                fields: merged,
                version: prev.version + 1,
                created_at: prev.created_at,
                updated_at: call.now,
            };
            store.replace(call.object, pos, updated);
            undo.push(Undo::Update(pos, prev));
            Outcome::Saved { id, created: false }
        }
        None => {
            let id = store.next_id(call.object);
            store.insert(
                call.object,
                Record {
                    id: id.clone(),
                    external_id,
                    fields: merged,
                    version: 1,
                    created_at: call.now,
                    updated_at: call.now,
                },
            );
            undo.push(Undo::Insert);
            Outcome::Saved { id, created: true }
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn run_triggers(
    call: &Call<'_>,
    store: &mut Store,
    timing: TriggerTiming,
    event: TriggerEvent,
    subject: &Subject<'_>,
    key: &str,
    old: Option<&Record>,
    cpu_hits: &mut HashMap<usize, u32>,
) -> Option<Outcome> {
    let phase = match (timing, event) {
        (TriggerTiming::Before, TriggerEvent::Insert) => "BeforeInsert",
        (TriggerTiming::Before, TriggerEvent::Update) => "BeforeUpdate",
        (TriggerTiming::After, TriggerEvent::Insert) => "AfterInsert",
        (TriggerTiming::After, TriggerEvent::Update) => "AfterUpdate",
    };
    for (ti, t) in call.def.triggers.iter().enumerate() {
        if !t.active
            || t.timing != timing
            || !t.events.contains(&event)
            || !t.when.as_ref().is_none_or(|c| c.eval(subject))
        {
            continue;
        }
        if let TriggerError::CpuLimit { .. } = t.error {
            // Decided for the whole call once every record has been seen.
            *cpu_hits.entry(ti).or_default() += 1;
            continue;
        }
        if !attempt_fails(store, call, format!("trigger{ti}"), key, t.fail_attempts) {
            continue;
        }
        let name = &t.name;
        let error = match &t.error {
            TriggerError::Exception { message } => RecordError::new(
                "CANNOT_INSERT_UPDATE_ACTIVATE_ENTITY",
                format!(
                    "{name}: execution of {phase}\n\ncaused by: {message}\n\nTrigger.{name}: line 1, column 1"
                ),
                vec![],
            ),
            TriggerError::AddError { message, field } => RecordError::new(
                "FIELD_CUSTOM_VALIDATION_EXCEPTION",
                message.clone(),
                field.iter().cloned().collect(),
            ),
            TriggerError::Lock => {
                let row = locked_row(old);
                RecordError::new(
                    "CANNOT_INSERT_UPDATE_ACTIVATE_ENTITY",
                    format!(
                        "{name}: execution of {phase}\n\ncaused by: System.DmlException: Update \
                         failed. First exception on row 0 with id {row}; first error: \
                         UNABLE_TO_LOCK_ROW, unable to obtain exclusive access to this record or \
                         1 records: {row}: []\n\nTrigger.{name}: line 1, column 1"
                    ),
                    vec![],
                )
            }
            TriggerError::CpuLimit { .. } => continue,
        };
        return Some(Outcome::Failed(vec![error]));
    }
    None
}

/// Required fields on the record as saved; length and e-mail format on the values sent.
fn system_validation(
    call: &Call<'_>,
    fields: &Map<String, Value>,
    merged: &Map<String, Value>,
) -> Option<Outcome> {
    let missing: Vec<String> = call
        .def
        .fields
        .iter()
        .filter(|(name, f)| {
            f.required
                && match merged.get(name.as_str()) {
                    None | Some(Value::Null) => true,
                    Some(Value::String(s)) => s.trim().is_empty(),
                    _ => false,
                }
        })
        .map(|(name, _)| name.clone())
        .collect();
    if !missing.is_empty() {
        return Some(Outcome::Failed(vec![RecordError::new(
            "REQUIRED_FIELD_MISSING",
            format!("Required fields are missing: [{}]", missing.join(", ")),
            missing,
        )]));
    }
    for (name, value) in fields {
        let (Some(f), Value::String(s)) = (call.def.fields.get(name.as_str()), value) else {
            continue;
        };
        if let Some(max) = f.max_length() {
            if s.chars().count() > max as usize {
                return Some(Outcome::Failed(vec![RecordError::new(
                    "STRING_TOO_LONG",
                    format!(
                        "{}: data value too large: {s} (max length={max})",
                        label(name, f)
                    ),
                    vec![name.clone()],
                )]));
            }
        }
        if f.kind == FieldType::Email && !s.is_empty() && !valid_email(s) {
            return Some(Outcome::Failed(vec![RecordError::new(
                "INVALID_EMAIL_ADDRESS",
                format!("{}: invalid email address: {s}", label(name, f)),
                vec![name.clone()],
            )]));
        }
    }
    None
}

/// Roughly Salesforce's check: one @, a non-empty local part, a dotted domain, no spaces.
fn valid_email(s: &str) -> bool {
    let Some((local, domain)) = s.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && !domain.contains('@')
        && !s.chars().any(char::is_whitespace)
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains("..")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn email_check() {
        assert!(valid_email("fraydadowsing@example.com"));
        assert!(!valid_email("not-an-email"));
        assert!(!valid_email("a@b"));
        assert!(!valid_email("a b@c.com"));
        assert!(!valid_email("a@@c.com"));
    }
}
