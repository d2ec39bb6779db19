//! The one place where Salesforce replies become the SPEC §4 classes. Every decision the
//! adapter makes about an error is in this file; the retry policy ([`crate::retry`]) only
//! decides how often and how long to wait for what this file calls transient.
//! `ERRORS.md` beside `Cargo.toml` holds the same tables for readers without the source.
//!
//! # Per-record errors (`errors[].statusCode` of a collections upsert result)
//!
//! | statusCode | outcome | why |
//! |---|---|---|
//! | *any code* whose message names a governor limit (`Apex CPU time limit exceeded`, `Too many SOQL queries`, `Too many DML statements`, `Too many DML rows`, `Too many query rows`, `Apex heap size too large`) | Transient, `retry_smaller` | a trigger ran out of per-transaction budget; fewer records per call fit |
//! | `UNABLE_TO_LOCK_ROW` | Transient | row or parent lock contention |
//! | `ALL_OR_NONE_OPERATION_ROLLED_BACK`, `PROCESSING_HALTED` | Transient | rolled back because a sibling failed |
//! | `UNKNOWN_EXCEPTION`, `SERVER_UNAVAILABLE`, `REQUEST_RUNNING_TOO_LONG`, `TOO_MANY_APEX_REQUESTS`, `INVALID_SESSION_ID` | Transient | the platform, not the record |
//! | `CANNOT_INSERT_UPDATE_ACTIVATE_ENTITY`, `CANNOT_EXECUTE_FLOW_TRIGGER` | by the message: a wrapped status code is classified by this table (`first error: UNABLE_TO_LOCK_ROW` → Transient, `STORAGE_LIMIT_EXCEEDED` → OrgWide, `INSUFFICIENT_ACCESS_…` → Configuration); else lock wording (`unable to obtain exclusive access`) → Transient, `storage limit` → OrgWide, other `Limit exceeded` wording (`AsyncApexExecutions Limit exceeded`) → Transient; otherwise **Data** | a trigger or flow threw; usually because of the record |
//! | `DUPLICATE_VALUE` | `Duplicate external id specified` → **Data** (the key twice in one request); a duplicate *on the external-id field itself* → Transient (two concurrent upserts created the key: a retry becomes an update); any other unique field → **Data** | |
//! | `INVALID_FIELD` | `Foreign key external ID … not found` → **Data** (the parent is missing); otherwise (`No such column`) → **Configuration** | |
//! | `STORAGE_LIMIT_EXCEEDED`, `API_DISABLED_FOR_ORG`, `API_CURRENTLY_DISABLED` | Rejected **OrgWide** | nothing any record can fix; blocks the job at once |
//! | `INSUFFICIENT_ACCESS`, `INSUFFICIENT_ACCESS_OR_READONLY`, `INSUFFICIENT_ACCESS_ON_CROSS_REFERENCE_ENTITY`, `INVALID_FIELD_FOR_INSERT_UPDATE`, `ENTITY_IS_LOCKED`, `CANNOT_MODIFY_MANAGED_OBJECT`, `INVALID_ACCESS_LEVEL`, `INVALID_TYPE`, `NO_APPLICABLE_PROCESS` | Rejected **Configuration** | permissions, field-level security, approval locks, schema: an admin must change the org |
//! | `REQUIRED_FIELD_MISSING`, `FIELD_CUSTOM_VALIDATION_EXCEPTION`, `FIELD_FILTER_VALIDATION_EXCEPTION`, `FIELD_INTEGRITY_EXCEPTION`, `INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST`, `STRING_TOO_LONG`, `NUMBER_OUTSIDE_VALID_RANGE`, `INVALID_EMAIL_ADDRESS`, `MALFORMED_ID`, `INVALID_ID_FIELD`, `INVALID_CROSS_REFERENCE_KEY`, `INVALID_TYPE_ON_FIELD_IN_RECORD`, `ENTITY_IS_DELETED`, `DUPLICATES_DETECTED`, `DUPLICATE_EXTERNAL_ID`, `INACTIVE_OWNER_OR_USER`, `CANNOT_UPDATE_CONVERTED_LEAD`, `JSON_PARSER_ERROR` | Rejected **Data** | the record's content, or (`DUPLICATE_EXTERNAL_ID`) the org's copies of this one key |
//! | any other code | Rejected **Data** | halting on the record is the safe default: nothing is lost and an operator sees the code |
//! | `success:false` with no error | Transient (`NO_ERROR_DETAIL`) | nothing says the record is at fault; a repeat at the same position becomes record-level in the engine |
//!
//! A record with several errors takes the most severe: OrgWide, Configuration, Data,
//! Transient with `retry_smaller`, Transient. Its message lists the others.
//!
//! # Request-level errors (the whole call)
//!
//! | HTTP | errorCode / body | verdict |
//! |---|---|---|
//! | 401 | any (`INVALID_SESSION_ID`) | refresh the token once and replay; a second 401 → **AuthFailed** |
//! | 400 | `InvalidSessionId` / `INVALID_SESSION_ID` (Bulk-style) | as 401 |
//! | 400 | `JSON_PARSER_ERROR`, `INVALID_FIELD`, `MALFORMED_*`, `EXCEEDED_ID_LIMIT`, anything else | **ContentRefused** (split to find the record) |
//! | 403 | `REQUEST_LIMIT_EXCEEDED` with concurrency wording (`concurrent`, `ConcurrentPerOrgLongTxn`) | **ConcurrencyLimit** (transient for the engine; never re-authenticate) |
//! | 403 | `REQUEST_LIMIT_EXCEEDED` otherwise (`TotalRequests Limit exceeded`) | **DailyLimit** (never re-authenticate) |
//! | 403 | `API_DISABLED_FOR_ORG`, `API_CURRENTLY_DISABLED` | **ApiDisabled** |
//! | 403 | `INSUFFICIENT_ACCESS`, anything else | **Misconfigured** |
//! | 404 | `NOT_FOUND` (unknown object or external-id field), any body | **Misconfigured** |
//! | 413 | any | **ContentRefused** (smaller requests fit) |
//! | 408, 409, 429, 5xx but 501/505 | any, JSON or not (an HTML 503 from the CDN) | retried with backoff, then **Unavailable** (code from the body, else `HTTP_<status>`) |
//! | 501, 505, 3xx, other 4xx (405, 406, 411, 412, 414, 415, 431, …) | any | **Misconfigured** (the client or its URL is wrong; retrying cannot help) |
//! | 2xx whose body is not the expected JSON, or a result array of the wrong length | | **Unavailable** `BAD_RESPONSE` (the outcome is unknown) |
//! | timeout with the deadline reached | | **Unavailable** `TIMEOUT` |
//! | connect timeout, connection refused/reset, other transport errors | | retried with backoff, then **Unavailable** (`TIMEOUT`, `CONNECTION_FAILED`, `NETWORK_ERROR`) |
//!
//! # OAuth token endpoint (`error` of the token response)
//!
//! | error | verdict |
//! |---|---|
//! | `invalid_grant`, `inactive_user`, `inactive_org`, `invalid_client_id`, `invalid_client`, `unsupported_grant_type`, `unauthorized_client` | **ConnectionRevoked** (a refresh-token grant first re-reads the credential store once, in case another process rotated the token) |
//! | `rate_limit_exceeded`, or no `error` with 408/429/5xx (HTML bodies included) | retried with backoff, then **Unavailable** |
//! | `invalid_request` | **Misconfigured** (e.g. client credentials against `login.salesforce.com` instead of the My Domain) |
//! | no `error` with 404 or 3xx | **Misconfigured** (wrong `login_url`) |
//! | any other `error`, or another status | **AuthFailed** |
//! | 200 without `access_token` or `instance_url`, or not JSON | **Unavailable** `BAD_RESPONSE` |

use crm_export_core::{RecordError, RecordOutcome, RejectKind, RequestFailure, RequestFailureKind};
use serde::Deserialize;

/// One entry of a result's `errors` array, as Salesforce sends it (any field may be
/// missing or null).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct SfRecordError {
    #[serde(rename = "statusCode", default)]
    pub status_code: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub fields: Option<Vec<String>>,
}

/// The class of one per-record error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordClass {
    Transient { retry_smaller: bool },
    Rejected(RejectKind),
}

impl RecordClass {
    fn severity(self) -> u8 {
        match self {
            RecordClass::Transient {
                retry_smaller: false,
            } => 0,
            RecordClass::Transient {
                retry_smaller: true,
            } => 1,
            RecordClass::Rejected(RejectKind::Data) => 2,
            RecordClass::Rejected(RejectKind::Configuration) => 3,
            RecordClass::Rejected(RejectKind::OrgWide) => 4,
        }
    }
}

const TRANSIENT: &[&str] = &[
    "UNABLE_TO_LOCK_ROW",
    "ALL_OR_NONE_OPERATION_ROLLED_BACK",
    "PROCESSING_HALTED",
    "UNKNOWN_EXCEPTION",
    "SERVER_UNAVAILABLE",
    "REQUEST_RUNNING_TOO_LONG",
    "TOO_MANY_APEX_REQUESTS",
    "INVALID_SESSION_ID",
];

const ORG_WIDE: &[&str] = &[
    "STORAGE_LIMIT_EXCEEDED",
    "API_DISABLED_FOR_ORG",
    "API_CURRENTLY_DISABLED",
];

const CONFIGURATION: &[&str] = &[
    "INSUFFICIENT_ACCESS",
    "INSUFFICIENT_ACCESS_OR_READONLY",
    "INSUFFICIENT_ACCESS_ON_CROSS_REFERENCE_ENTITY",
    "INVALID_FIELD_FOR_INSERT_UPDATE",
    "ENTITY_IS_LOCKED",
    "CANNOT_MODIFY_MANAGED_OBJECT",
    "INVALID_ACCESS_LEVEL",
    "INVALID_TYPE",
    "NO_APPLICABLE_PROCESS",
];

const DATA: &[&str] = &[
    "REQUIRED_FIELD_MISSING",
    "FIELD_CUSTOM_VALIDATION_EXCEPTION",
    "FIELD_FILTER_VALIDATION_EXCEPTION",
    "FIELD_INTEGRITY_EXCEPTION",
    "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
    "STRING_TOO_LONG",
    "NUMBER_OUTSIDE_VALID_RANGE",
    "INVALID_EMAIL_ADDRESS",
    "MALFORMED_ID",
    "INVALID_ID_FIELD",
    "INVALID_CROSS_REFERENCE_KEY",
    "INVALID_TYPE_ON_FIELD_IN_RECORD",
    "ENTITY_IS_DELETED",
    "DUPLICATES_DETECTED",
    "DUPLICATE_EXTERNAL_ID",
    "INACTIVE_OWNER_OR_USER",
    "CANNOT_UPDATE_CONVERTED_LEAD",
    "JSON_PARSER_ERROR",
];

/// Codes whose message carries the real cause (a trigger or flow that threw).
const WRAPPERS: &[&str] = &[
    "CANNOT_INSERT_UPDATE_ACTIVATE_ENTITY",
    "CANNOT_EXECUTE_FLOW_TRIGGER",
];

/// Codes decided by their message rather than by the lists above.
const READ_THE_MESSAGE: &[&str] = &["DUPLICATE_VALUE", "INVALID_FIELD"];

/// Every status code this module names, for the documentation check in the tests.
pub fn known_record_codes() -> impl Iterator<Item = &'static str> {
    [
        TRANSIENT,
        ORG_WIDE,
        CONFIGURATION,
        DATA,
        WRAPPERS,
        READ_THE_MESSAGE,
    ]
    .into_iter()
    .flatten()
    .copied()
}

const GOVERNOR_LIMITS: &[&str] = &[
    "apex cpu time limit exceeded",
    "too many soql queries",
    "too many dml statements",
    "too many dml rows",
    "too many query rows",
    "apex heap size too large",
];

/// Classifies one per-record error. `external_id_field` is the field the upsert matches
/// on: a duplicate on that very field can only be a race between two creates.
pub fn classify_record_error(
    code: &str,
    message: &str,
    fields: &[String],
    external_id_field: &str,
) -> RecordClass {
    let lower = message.to_ascii_lowercase();
    if GOVERNOR_LIMITS.iter().any(|g| lower.contains(g)) {
        return RecordClass::Transient {
            retry_smaller: true,
        };
    }
    classify_code(code, message, &lower, fields, external_id_field, true)
}

fn classify_code(
    code: &str,
    message: &str,
    lower: &str,
    fields: &[String],
    external_id_field: &str,
    unwrap: bool,
) -> RecordClass {
    let code = code.trim();
    if WRAPPERS.contains(&code) {
        if unwrap {
            if let Some(inner) = wrapped_code(message) {
                return classify_code(inner, message, lower, &[], external_id_field, false);
            }
        }
        return if lower.contains("unable to obtain exclusive access") {
            RecordClass::Transient {
                retry_smaller: false,
            }
        } else if lower.contains("storage limit") {
            RecordClass::Rejected(RejectKind::OrgWide)
        } else if lower.contains("limit exceeded") {
            RecordClass::Transient {
                retry_smaller: false,
            }
        } else {
            RecordClass::Rejected(RejectKind::Data)
        };
    }
    match code {
        "DUPLICATE_VALUE" => {
            let on_key = !external_id_field.is_empty()
                && (fields
                    .iter()
                    .any(|f| f.eq_ignore_ascii_case(external_id_field))
                    || lower.contains(&external_id_field.to_ascii_lowercase()));
            if lower.contains("duplicate external id specified") || !on_key {
                RecordClass::Rejected(RejectKind::Data)
            } else {
                RecordClass::Transient {
                    retry_smaller: false,
                }
            }
        }
        "INVALID_FIELD" if lower.contains("foreign key external id") => {
            RecordClass::Rejected(RejectKind::Data)
        }
        "INVALID_FIELD" => RecordClass::Rejected(RejectKind::Configuration),
        c if TRANSIENT.contains(&c) => RecordClass::Transient {
            retry_smaller: false,
        },
        c if ORG_WIDE.contains(&c) => RecordClass::Rejected(RejectKind::OrgWide),
        c if CONFIGURATION.contains(&c) => RecordClass::Rejected(RejectKind::Configuration),
        _ => RecordClass::Rejected(RejectKind::Data),
    }
}

/// The first status code this table knows that a wrapper's message names, e.g.
/// `… first error: UNABLE_TO_LOCK_ROW, unable to obtain …`.
fn wrapped_code(message: &str) -> Option<&str> {
    message
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|t| t.contains('_') && !WRAPPERS.contains(t))
        .find(|t| known_record_codes().any(|k| k == *t))
}

/// The outcome of a result item with `success:false`: the most severe of its errors
/// decides, and the message lists the others.
pub fn classify_record_errors(errors: &[SfRecordError], external_id_field: &str) -> RecordOutcome {
    let judged: Vec<(RecordClass, RecordError)> = errors
        .iter()
        .map(|e| {
            let error = RecordError {
                code: e.status_code.clone().unwrap_or_default(),
                message: e.message.clone().unwrap_or_default(),
                fields: e.fields.clone().unwrap_or_default(),
            };
            (
                classify_record_error(
                    &error.code,
                    &error.message,
                    &error.fields,
                    external_id_field,
                ),
                error,
            )
        })
        .collect();
    let Some(worst) = judged.iter().map(|(c, _)| c.severity()).max() else {
        return RecordOutcome::Transient {
            error: RecordError::new(
                "NO_ERROR_DETAIL",
                "Salesforce reported a failure without an error",
            ),
            retry_smaller: false,
        };
    };
    let decisive = judged
        .iter()
        .position(|(c, _)| c.severity() == worst)
        .unwrap_or(0);
    let class = judged[decisive].0;
    let mut error = judged[decisive].1.clone();
    // Classified on the raw text; kept without the values some messages carry.
    error.message = crate::redact::redact_values(&error.message);
    for (i, (_, other)) in judged.iter().enumerate() {
        if i == decisive {
            continue;
        }
        error.message.push_str(&format!(
            " [also {}: {}]",
            other.code,
            crate::redact::redact_values(&other.message)
        ));
        for f in &other.fields {
            if !error.fields.contains(f) {
                error.fields.push(f.clone());
            }
        }
    }
    match class {
        RecordClass::Transient { retry_smaller } => RecordOutcome::Transient {
            error,
            retry_smaller,
        },
        RecordClass::Rejected(kind) => RecordOutcome::Rejected { error, kind },
    }
}

/// What to do about a failed call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The session is expired or invalid: refresh the token once and replay the call.
    Reauthenticate,
    /// Transient: retry under the retry policy; this is the failure once retries or time
    /// are spent.
    Retry(RequestFailure),
    /// Final for this call.
    Fail(RequestFailure),
}

/// The code and message of an error body in any of the shapes Salesforce uses: REST
/// `[{"errorCode","message"}]`, Bulk `{"exceptionCode","exceptionMessage"}` (JSON or XML),
/// OAuth `{"error","error_description"}`. Anything else (an HTML page from the CDN, an
/// empty body) gives no code and a short description.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ErrorBody {
    pub code: Option<String>,
    pub message: Option<String>,
}

const MAX_MESSAGE: usize = 500;

pub fn parse_error_body(body: &str) -> ErrorBody {
    let trimmed = body.trim();
    if let Ok(value) = serde_json::from_str::<serde_json::Value>(trimmed) {
        let first = match &value {
            serde_json::Value::Array(items) => items.first().cloned().unwrap_or_default(),
            other => other.clone(),
        };
        let text = |keys: &[&str]| {
            keys.iter().find_map(|k| {
                first
                    .get(*k)
                    .and_then(|v| v.as_str())
                    .map(|s| truncate(s.trim()))
            })
        };
        return ErrorBody {
            code: text(&["errorCode", "exceptionCode", "error", "statusCode"])
                .filter(|c| !c.is_empty()),
            message: text(&["message", "exceptionMessage", "error_description"]),
        };
    }
    if trimmed.is_empty() {
        return ErrorBody {
            code: None,
            message: Some("empty body".into()),
        };
    }
    if trimmed.starts_with('<') {
        if let Some(code) = xml_text(trimmed, "exceptionCode") {
            return ErrorBody {
                code: Some(code),
                message: xml_text(trimmed, "exceptionMessage"),
            };
        }
        let title = xml_text(trimmed, "title").or_else(|| xml_text(trimmed, "TITLE"));
        let message = match title {
            Some(t) => format!("non-JSON body: {t}"),
            None => "non-JSON body".to_owned(),
        };
        return ErrorBody {
            code: None,
            message: Some(message),
        };
    }
    ErrorBody {
        code: None,
        message: Some(truncate(trimmed)),
    }
}

fn xml_text(doc: &str, tag: &str) -> Option<String> {
    let open = format!("<{tag}>");
    let start = doc.find(&open)? + open.len();
    let end = doc[start..].find("</")? + start;
    Some(truncate(doc[start..end].trim()))
}

fn truncate(s: &str) -> String {
    match s.char_indices().nth(MAX_MESSAGE) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

fn failure(
    kind: RequestFailureKind,
    code: String,
    message: Option<String>,
    status: u16,
) -> RequestFailure {
    RequestFailure {
        kind,
        message: message.unwrap_or_else(|| format!("HTTP {status}")),
        code,
        http_status: Some(status),
    }
}

fn is_invalid_session(code: Option<&str>) -> bool {
    code.map(|c| c.replace('_', "").eq_ignore_ascii_case("invalidsessionid"))
        .unwrap_or(false)
}

/// Classifies a non-2xx REST reply. Tolerates any body.
pub fn classify_http_error(status: u16, body: &str) -> Verdict {
    use RequestFailureKind::*;
    let ErrorBody { code, message } = parse_error_body(body);
    // A whole-request refusal can name a record's value (a bad date); narrowed down, this
    // message becomes the record's error.
    let message = message.map(|m| crate::redact::redact_values(&m));
    let code_or = |fallback: &str| code.clone().unwrap_or_else(|| fallback.to_owned());
    let default_code = format!("HTTP_{status}");
    let fail = |kind, c: String| Verdict::Fail(failure(kind, c, message.clone(), status));
    match status {
        401 => Verdict::Reauthenticate,
        400 if is_invalid_session(code.as_deref()) => Verdict::Reauthenticate,
        400 => fail(ContentRefused, code_or("BAD_REQUEST")),
        403 => match code.as_deref() {
            Some("REQUEST_LIMIT_EXCEEDED") => {
                let m = message.as_deref().unwrap_or_default().to_ascii_lowercase();
                let kind = if !m.contains("totalrequests") && m.contains("concurrent") {
                    ConcurrencyLimit
                } else {
                    DailyLimit
                };
                fail(kind, code_or(""))
            }
            Some("API_DISABLED_FOR_ORG") | Some("API_CURRENTLY_DISABLED") => {
                fail(ApiDisabled, code_or(""))
            }
            _ => fail(Misconfigured, code_or(&default_code)),
        },
        404 => fail(Misconfigured, code_or("NOT_FOUND")),
        413 => fail(ContentRefused, code_or(&default_code)),
        408 | 409 | 429 => Verdict::Retry(failure(
            Unavailable,
            code_or(&default_code),
            message.clone(),
            status,
        )),
        501 | 505 => fail(Misconfigured, code_or(&default_code)),
        500..=599 => Verdict::Retry(failure(
            Unavailable,
            code_or(&default_code),
            message.clone(),
            status,
        )),
        300..=499 => fail(Misconfigured, code_or(&default_code)),
        _ => fail(Unavailable, "BAD_RESPONSE".to_owned()),
    }
}

/// Classifies a refused token request (any non-200 reply of `/services/oauth2/token`).
pub fn classify_token_error(status: u16, body: &str) -> Verdict {
    use RequestFailureKind::*;
    let ErrorBody { code, message } = parse_error_body(body);
    // A whole-request refusal can name a record's value (a bad date); narrowed down, this
    // message becomes the record's error.
    let message = message.map(|m| crate::redact::redact_values(&m));
    let fail = |kind, c: String| Verdict::Fail(failure(kind, c, message.clone(), status));
    match code.as_deref().map(str::to_ascii_lowercase).as_deref() {
        Some(
            "invalid_grant"
            | "inactive_user"
            | "inactive_org"
            | "invalid_client_id"
            | "invalid_client"
            | "unsupported_grant_type"
            | "unauthorized_client",
        ) => fail(ConnectionRevoked, code.clone().unwrap_or_default()),
        Some("rate_limit_exceeded") => Verdict::Retry(failure(
            Unavailable,
            code.clone().unwrap_or_default(),
            message.clone(),
            status,
        )),
        Some("invalid_request") => fail(Misconfigured, code.clone().unwrap_or_default()),
        Some(_) if status < 500 => fail(AuthFailed, code.clone().unwrap_or_default()),
        _ => match status {
            408 | 429 | 500..=599 => Verdict::Retry(failure(
                Unavailable,
                code.clone().unwrap_or_else(|| format!("HTTP_{status}")),
                message.clone(),
                status,
            )),
            300..=399 | 404 => fail(Misconfigured, format!("HTTP_{status}")),
            _ => fail(AuthFailed, format!("HTTP_{status}")),
        },
    }
}

/// A failure below HTTP, as far as the classification needs to know it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportFault {
    Timeout,
    Connect,
    Other,
}

/// Classifies a transport failure. `deadline_reached`: the call's time is up, so a timeout
/// is final.
pub fn classify_transport(fault: TransportFault, deadline_reached: bool) -> Verdict {
    let (code, message) = match fault {
        TransportFault::Timeout => ("TIMEOUT", "the request timed out"),
        TransportFault::Connect => ("CONNECTION_FAILED", "could not connect"),
        TransportFault::Other => ("NETWORK_ERROR", "the connection failed during the request"),
    };
    let failure = RequestFailure::new(RequestFailureKind::Unavailable, code, message);
    if deadline_reached {
        Verdict::Fail(RequestFailure::new(
            RequestFailureKind::Unavailable,
            "TIMEOUT",
            "the call's time ran out",
        ))
    } else {
        Verdict::Retry(failure)
    }
}

/// The failure reported when the call's deadline passes.
pub fn timeout_failure() -> RequestFailure {
    RequestFailure::new(
        RequestFailureKind::Unavailable,
        "TIMEOUT",
        "the call's time ran out",
    )
}

/// The failure reported for a 2xx reply the client cannot map to outcomes.
pub fn bad_response(message: impl Into<String>, status: u16) -> RequestFailure {
    RequestFailure {
        kind: RequestFailureKind::Unavailable,
        code: "BAD_RESPONSE".into(),
        message: message.into(),
        http_status: Some(status),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use RecordClass::*;
    use RejectKind::*;
    use RequestFailureKind::*;

    const EXT: &str = "Ext_Id__c";

    fn t() -> RecordClass {
        Transient {
            retry_smaller: false,
        }
    }

    /// One row per line of the per-record table: (code, message, fields, expected).
    #[test]
    fn per_record_table() {
        let rows: &[(&str, &str, &[&str], RecordClass)] = &[
            ("UNABLE_TO_LOCK_ROW", "unable to obtain exclusive access to this record or 1 records: 001x", &[], t()),
            ("ALL_OR_NONE_OPERATION_ROLLED_BACK", "Record rolled back because not all records were valid", &[], t()),
            ("PROCESSING_HALTED", "The transaction was rolled back since another operation in the same transaction failed.", &[], t()),
            ("UNKNOWN_EXCEPTION", "An unexpected error occurred.", &[], t()),
            ("SERVER_UNAVAILABLE", "", &[], t()),
            ("REQUEST_RUNNING_TOO_LONG", "", &[], t()),
            ("TOO_MANY_APEX_REQUESTS", "", &[], t()),
            ("INVALID_SESSION_ID", "", &[], t()),
            // Wrappers: read the message.
            ("CANNOT_INSERT_UPDATE_ACTIVATE_ENTITY",
             "ContactTrigger: execution of AfterUpdate caused by: System.DmlException: Update failed. First exception on row 0; first error: UNABLE_TO_LOCK_ROW, unable to obtain exclusive access to this record: []",
             &[], t()),
            ("CANNOT_INSERT_UPDATE_ACTIVATE_ENTITY", "ContactTrigger: unable to obtain exclusive access to this record", &[], t()),
            ("CANNOT_INSERT_UPDATE_ACTIVATE_ENTITY", "Trigger: System.AsyncException: AsyncApexExecutions Limit exceeded.", &[], t()),
            ("CANNOT_INSERT_UPDATE_ACTIVATE_ENTITY", "ContactTrigger: System.LimitException: Apex CPU time limit exceeded", &[], Transient { retry_smaller: true }),
            ("CANNOT_INSERT_UPDATE_ACTIVATE_ENTITY", "ContactTrigger: System.LimitException: Too many SOQL queries: 101", &[], Transient { retry_smaller: true }),
            ("CANNOT_INSERT_UPDATE_ACTIVATE_ENTITY", "Trigger: first error: STORAGE_LIMIT_EXCEEDED, storage limit exceeded", &[], Rejected(OrgWide)),
            ("CANNOT_INSERT_UPDATE_ACTIVATE_ENTITY", "Trigger: Data storage limit reached", &[], Rejected(OrgWide)),
            ("CANNOT_INSERT_UPDATE_ACTIVATE_ENTITY", "Trigger: first error: INSUFFICIENT_ACCESS_ON_CROSS_REFERENCE_ENTITY, insufficient access rights on cross-reference id", &[], Rejected(Configuration)),
            ("CANNOT_INSERT_UPDATE_ACTIVATE_ENTITY", "Trigger: first error: REQUIRED_FIELD_MISSING, Required fields are missing: [Name]", &[], Rejected(Data)),
            ("CANNOT_INSERT_UPDATE_ACTIVATE_ENTITY", "ContactTrigger: execution of BeforeInsert caused by: System.NullPointerException: Attempt to de-reference a null object", &[], Rejected(Data)),
            ("CANNOT_EXECUTE_FLOW_TRIGGER", "We can't save this record because the “Lead Flow” process failed.", &[], Rejected(Data)),
            ("CANNOT_EXECUTE_FLOW_TRIGGER", "The flow failed: first error: UNABLE_TO_LOCK_ROW, unable to obtain exclusive access", &[], t()),
            // Any code: a governor limit in the message.
            ("FIELD_CUSTOM_VALIDATION_EXCEPTION", "Apex CPU time limit exceeded", &[], Transient { retry_smaller: true }),
            // DUPLICATE_VALUE by message.
            ("DUPLICATE_VALUE", "Duplicate external id specified: K-1", &[EXT], Rejected(Data)),
            ("DUPLICATE_VALUE", "duplicate value found: Ext_Id__c duplicates value on record with id: 003xx", &[EXT], t()),
            ("DUPLICATE_VALUE", "duplicate value found: ext_id__c duplicates value on record with id: 003xx", &[], t()),
            ("DUPLICATE_VALUE", "duplicate value found: Email__c duplicates value on record with id: 003xx", &["Email__c"], Rejected(Data)),
            // INVALID_FIELD by message.
            ("INVALID_FIELD", "Foreign key external ID: 42 not found for field Acct_Ext__c in entity Account", &[], Rejected(Data)),
            ("INVALID_FIELD", "No such column 'Foo__c' on sobject of type Contact", &[], Rejected(Configuration)),
            // Org-wide.
            ("STORAGE_LIMIT_EXCEEDED", "storage limit exceeded", &[], Rejected(OrgWide)),
            ("API_DISABLED_FOR_ORG", "", &[], Rejected(OrgWide)),
            ("API_CURRENTLY_DISABLED", "", &[], Rejected(OrgWide)),
            // Configuration.
            ("INSUFFICIENT_ACCESS", "", &[], Rejected(Configuration)),
            ("INSUFFICIENT_ACCESS_OR_READONLY", "insufficient access rights on object id", &[], Rejected(Configuration)),
            ("INSUFFICIENT_ACCESS_ON_CROSS_REFERENCE_ENTITY", "insufficient access rights on cross-reference id: 500x", &[], Rejected(Configuration)),
            ("INVALID_FIELD_FOR_INSERT_UPDATE", "Unable to create/update fields: Score__c.", &["Score__c"], Rejected(Configuration)),
            ("ENTITY_IS_LOCKED", "the entity is locked for editing", &[], Rejected(Configuration)),
            ("CANNOT_MODIFY_MANAGED_OBJECT", "", &[], Rejected(Configuration)),
            ("INVALID_ACCESS_LEVEL", "", &[], Rejected(Configuration)),
            ("INVALID_TYPE", "Must send a concrete entity type.", &[], Rejected(Configuration)),
            ("NO_APPLICABLE_PROCESS", "", &[], Rejected(Configuration)),
            // Data.
            ("REQUIRED_FIELD_MISSING", "Required fields are missing: [LastName]", &["LastName"], Rejected(Data)),
            ("FIELD_CUSTOM_VALIDATION_EXCEPTION", "Email must be corporate", &[], Rejected(Data)),
            ("FIELD_FILTER_VALIDATION_EXCEPTION", "Value does not exist or does not match filter criteria.", &[], Rejected(Data)),
            ("FIELD_INTEGRITY_EXCEPTION", "", &[], Rejected(Data)),
            ("INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST", "bad value for restricted picklist field: X", &[], Rejected(Data)),
            ("STRING_TOO_LONG", "data value too large: x (max length=15)", &[], Rejected(Data)),
            ("NUMBER_OUTSIDE_VALID_RANGE", "", &[], Rejected(Data)),
            ("INVALID_EMAIL_ADDRESS", "Email: invalid email address: x", &["Email"], Rejected(Data)),
            ("MALFORMED_ID", "", &[], Rejected(Data)),
            ("INVALID_ID_FIELD", "", &[], Rejected(Data)),
            ("INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id", &[], Rejected(Data)),
            ("INVALID_TYPE_ON_FIELD_IN_RECORD", "", &[], Rejected(Data)),
            ("ENTITY_IS_DELETED", "entity is deleted", &[], Rejected(Data)),
            ("DUPLICATES_DETECTED", "Use one of these records?", &[], Rejected(Data)),
            ("DUPLICATE_EXTERNAL_ID", "Ext: more than one record found for external id field: [a, b]", &[], Rejected(Data)),
            ("INACTIVE_OWNER_OR_USER", "", &[], Rejected(Data)),
            ("CANNOT_UPDATE_CONVERTED_LEAD", "", &[], Rejected(Data)),
            ("JSON_PARSER_ERROR", "", &[], Rejected(Data)),
            // Unknown codes.
            ("SOMETHING_NEW_IN_V99", "whatever", &[], Rejected(Data)),
            ("", "", &[], Rejected(Data)),
        ];
        for (code, message, fields, expected) in rows {
            let fields: Vec<String> = fields.iter().map(|f| f.to_string()).collect();
            assert_eq!(
                classify_record_error(code, message, &fields, EXT),
                *expected,
                "{code}: {message}"
            );
        }
    }

    #[test]
    fn every_listed_code_is_documented_in_errors_md() {
        let doc = include_str!("../ERRORS.md");
        let mut missing: Vec<&str> = known_record_codes()
            .filter(|c| !doc.contains(&format!("`{c}`")))
            .collect();
        for c in [
            "INVALID_SESSION_ID",
            "InvalidSessionId",
            "JSON_PARSER_ERROR",
            "REQUEST_LIMIT_EXCEEDED",
            "API_DISABLED_FOR_ORG",
            "API_CURRENTLY_DISABLED",
            "INSUFFICIENT_ACCESS",
            "NOT_FOUND",
            "invalid_grant",
            "inactive_user",
            "inactive_org",
            "invalid_client_id",
            "invalid_client",
            "unsupported_grant_type",
            "rate_limit_exceeded",
            "BAD_RESPONSE",
            "TIMEOUT",
        ] {
            if !doc.contains(&format!("`{c}`")) {
                missing.push(c);
            }
        }
        assert!(missing.is_empty(), "not in ERRORS.md: {missing:?}");
    }

    #[test]
    fn errors_md_holds_the_same_tables_as_this_module() {
        let doc = include_str!("../ERRORS.md");
        let rows: Vec<&str> = include_str!("classify.rs")
            .lines()
            .filter_map(|l| l.strip_prefix("//! |"))
            .filter(|row| !doc.contains(&format!("|{row}")))
            .collect();
        assert!(
            rows.is_empty(),
            "table rows missing from ERRORS.md: {rows:#?}"
        );
    }

    fn err(code: &str, message: &str, fields: &[&str]) -> SfRecordError {
        SfRecordError {
            status_code: Some(code.into()),
            message: Some(message.into()),
            fields: Some(fields.iter().map(|f| f.to_string()).collect()),
        }
    }

    #[test]
    fn one_error_keeps_code_message_and_fields() {
        let out = classify_record_errors(
            &[err(
                "REQUIRED_FIELD_MISSING",
                "Required fields are missing: [LastName]",
                &["LastName"],
            )],
            EXT,
        );
        assert_eq!(
            out,
            RecordOutcome::Rejected {
                error: RecordError {
                    code: "REQUIRED_FIELD_MISSING".into(),
                    message: "Required fields are missing: [LastName]".into(),
                    fields: vec!["LastName".into()],
                },
                kind: Data,
            }
        );
    }

    #[test]
    fn the_most_severe_of_several_errors_decides() {
        let out = classify_record_errors(
            &[
                err("UNABLE_TO_LOCK_ROW", "locked", &[]),
                err("INVALID_FIELD_FOR_INSERT_UPDATE", "no FLS", &["Score__c"]),
                err("REQUIRED_FIELD_MISSING", "missing", &["LastName"]),
            ],
            EXT,
        );
        let RecordOutcome::Rejected { error, kind } = out else {
            panic!("{out:?}")
        };
        assert_eq!(kind, Configuration);
        assert_eq!(error.code, "INVALID_FIELD_FOR_INSERT_UPDATE");
        assert!(
            error.message.starts_with("no FLS")
                && error.message.contains("UNABLE_TO_LOCK_ROW")
                && error.message.contains("REQUIRED_FIELD_MISSING"),
            "{}",
            error.message
        );
        assert_eq!(
            error.fields,
            vec!["Score__c".to_string(), "LastName".to_string()]
        );
    }

    #[test]
    fn transient_errors_stay_transient_and_cpu_limit_asks_for_smaller() {
        let out = classify_record_errors(
            &[
                err("UNABLE_TO_LOCK_ROW", "a", &[]),
                err(
                    "CANNOT_INSERT_UPDATE_ACTIVATE_ENTITY",
                    "Apex CPU time limit exceeded",
                    &[],
                ),
            ],
            EXT,
        );
        assert!(
            matches!(out, RecordOutcome::Transient { retry_smaller: true, ref error } if error.code == "CANNOT_INSERT_UPDATE_ACTIVATE_ENTITY"),
            "{out:?}"
        );
    }

    #[test]
    fn a_failure_without_errors_is_transient() {
        let out = classify_record_errors(&[], EXT);
        assert!(
            matches!(out, RecordOutcome::Transient { retry_smaller: false, ref error } if error.code == "NO_ERROR_DETAIL"),
            "{out:?}"
        );
    }

    #[test]
    fn null_fields_in_errors_are_tolerated() {
        let e: SfRecordError = serde_json::from_str(
            r#"{"statusCode":"STRING_TOO_LONG","message":null,"fields":null}"#,
        )
        .unwrap();
        let out = classify_record_errors(&[e], EXT);
        assert!(
            matches!(out, RecordOutcome::Rejected { kind: Data, ref error } if error.code == "STRING_TOO_LONG" && error.fields.is_empty())
        );
    }

    fn kind_of(v: &Verdict) -> Option<(RequestFailureKind, String, bool)> {
        match v {
            Verdict::Reauthenticate => None,
            Verdict::Retry(f) => Some((f.kind, f.code.clone(), true)),
            Verdict::Fail(f) => Some((f.kind, f.code.clone(), false)),
        }
    }

    /// Kind, code and whether retried; `None` for refresh-and-replay.
    type ExpectedVerdict = Option<(RequestFailureKind, &'static str, bool)>;

    const HTML_503: &str = "<!DOCTYPE html><html><head><title>Service Unavailable</title></head><body>down for maintenance</body></html>";

    /// One row per line of the request-level table: (status, body, expected kind, code,
    /// retried). `None` means refresh-and-replay.
    #[test]
    fn request_level_table() {
        let rows: &[(u16, &str, ExpectedVerdict)] = &[
            (401, r#"[{"message":"Session expired or invalid","errorCode":"INVALID_SESSION_ID"}]"#, None),
            (401, "", None),
            (401, HTML_503, None),
            (400, r#"{"exceptionCode":"InvalidSessionId","exceptionMessage":"Invalid session id"}"#, None),
            (400, "<error><exceptionCode>InvalidSessionId</exceptionCode><exceptionMessage>Invalid session id</exceptionMessage></error>", None),
            (400, r#"[{"message":"Cannot deserialize instance of date from VALUE_STRING value 31/02/2024","errorCode":"JSON_PARSER_ERROR"}]"#, Some((ContentRefused, "JSON_PARSER_ERROR", false))),
            (400, r#"[{"message":"No such column 'X' on sobject of type Contact","errorCode":"INVALID_FIELD"}]"#, Some((ContentRefused, "INVALID_FIELD", false))),
            (400, r#"[{"message":"bad","errorCode":"MALFORMED_QUERY"}]"#, Some((ContentRefused, "MALFORMED_QUERY", false))),
            (400, r#"[{"message":"record limit reached. cannot submit more than 200 records into this call","errorCode":"EXCEEDED_ID_LIMIT"}]"#, Some((ContentRefused, "EXCEEDED_ID_LIMIT", false))),
            (400, "not json", Some((ContentRefused, "BAD_REQUEST", false))),
            (403, r#"[{"message":"TotalRequests Limit exceeded.","errorCode":"REQUEST_LIMIT_EXCEEDED"}]"#, Some((DailyLimit, "REQUEST_LIMIT_EXCEEDED", false))),
            (403, r#"[{"message":"ConcurrentPerOrgLongTxn Limit exceeded.","errorCode":"REQUEST_LIMIT_EXCEEDED"}]"#, Some((ConcurrencyLimit, "REQUEST_LIMIT_EXCEEDED", false))),
            (403, r#"[{"message":"Too many concurrent requests","errorCode":"REQUEST_LIMIT_EXCEEDED"}]"#, Some((ConcurrencyLimit, "REQUEST_LIMIT_EXCEEDED", false))),
            (403, r#"[{"message":"Limit exceeded","errorCode":"REQUEST_LIMIT_EXCEEDED"}]"#, Some((DailyLimit, "REQUEST_LIMIT_EXCEEDED", false))),
            (403, r#"[{"message":"The REST API is not enabled for this Organization.","errorCode":"API_DISABLED_FOR_ORG"}]"#, Some((ApiDisabled, "API_DISABLED_FOR_ORG", false))),
            (403, r#"[{"message":"API is disabled for this User","errorCode":"API_CURRENTLY_DISABLED"}]"#, Some((ApiDisabled, "API_CURRENTLY_DISABLED", false))),
            (403, r#"[{"message":"insufficient access","errorCode":"INSUFFICIENT_ACCESS"}]"#, Some((Misconfigured, "INSUFFICIENT_ACCESS", false))),
            (403, HTML_503, Some((Misconfigured, "HTTP_403", false))),
            (404, r#"[{"message":"The requested resource does not exist","errorCode":"NOT_FOUND"}]"#, Some((Misconfigured, "NOT_FOUND", false))),
            (404, "", Some((Misconfigured, "NOT_FOUND", false))),
            (413, "", Some((ContentRefused, "HTTP_413", false))),
            (408, "", Some((Unavailable, "HTTP_408", true))),
            (409, "", Some((Unavailable, "HTTP_409", true))),
            (429, "", Some((Unavailable, "HTTP_429", true))),
            (500, r#"[{"message":"An unexpected error occurred. Please include this ErrorId","errorCode":"UNKNOWN_EXCEPTION"}]"#, Some((Unavailable, "UNKNOWN_EXCEPTION", true))),
            (502, "Bad Gateway", Some((Unavailable, "HTTP_502", true))),
            (503, HTML_503, Some((Unavailable, "HTTP_503", true))),
            (503, r#"[{"message":"Server too busy","errorCode":"SERVER_UNAVAILABLE"}]"#, Some((Unavailable, "SERVER_UNAVAILABLE", true))),
            (504, "", Some((Unavailable, "HTTP_504", true))),
            (501, "", Some((Misconfigured, "HTTP_501", false))),
            (405, r#"[{"errorCode":"METHOD_NOT_ALLOWED","message":"HTTP Method 'PATCH' not allowed"}]"#, Some((Misconfigured, "METHOD_NOT_ALLOWED", false))),
            (415, "", Some((Misconfigured, "HTTP_415", false))),
            (302, "", Some((Misconfigured, "HTTP_302", false))),
            (204, "", Some((Unavailable, "BAD_RESPONSE", false))),
        ];
        for (status, body, expected) in rows {
            let got = kind_of(&classify_http_error(*status, body));
            let expected = expected.map(|(k, c, r)| (k, c.to_string(), r));
            assert_eq!(got, expected, "{status} {body}");
        }
    }

    #[test]
    fn request_failures_carry_status_and_a_readable_message() {
        let Verdict::Retry(f) = classify_http_error(503, HTML_503) else {
            panic!()
        };
        assert_eq!(f.http_status, Some(503));
        assert_eq!(f.message, "non-JSON body: Service Unavailable");
        let Verdict::Fail(f) = classify_http_error(
            403,
            r#"[{"message":"TotalRequests Limit exceeded.","errorCode":"REQUEST_LIMIT_EXCEEDED"}]"#,
        ) else {
            panic!()
        };
        assert_eq!(f.message, "TotalRequests Limit exceeded.");
        let long = "x".repeat(5_000);
        let Verdict::Retry(f) = classify_http_error(502, &long) else {
            panic!()
        };
        assert!(f.message.chars().count() <= MAX_MESSAGE + 1);
    }

    /// One row per line of the OAuth table.
    #[test]
    fn token_endpoint_table() {
        let oauth = |e: &str| format!(r#"{{"error":"{e}","error_description":"details"}}"#);
        let rows: Vec<(u16, String, RequestFailureKind, &str, bool)> = vec![
            (
                400,
                oauth("invalid_grant"),
                ConnectionRevoked,
                "invalid_grant",
                false,
            ),
            (
                400,
                oauth("inactive_user"),
                ConnectionRevoked,
                "inactive_user",
                false,
            ),
            (
                400,
                oauth("inactive_org"),
                ConnectionRevoked,
                "inactive_org",
                false,
            ),
            (
                400,
                oauth("invalid_client_id"),
                ConnectionRevoked,
                "invalid_client_id",
                false,
            ),
            (
                401,
                oauth("invalid_client"),
                ConnectionRevoked,
                "invalid_client",
                false,
            ),
            (
                400,
                oauth("unsupported_grant_type"),
                ConnectionRevoked,
                "unsupported_grant_type",
                false,
            ),
            (
                400,
                oauth("unauthorized_client"),
                ConnectionRevoked,
                "unauthorized_client",
                false,
            ),
            (
                400,
                oauth("rate_limit_exceeded"),
                Unavailable,
                "rate_limit_exceeded",
                true,
            ),
            (
                400,
                oauth("invalid_request"),
                Misconfigured,
                "invalid_request",
                false,
            ),
            (
                400,
                oauth("something_else"),
                AuthFailed,
                "something_else",
                false,
            ),
            (503, HTML_503.to_owned(), Unavailable, "HTTP_503", true),
            (
                500,
                oauth("server_error"),
                Unavailable,
                "server_error",
                true,
            ),
            (429, String::new(), Unavailable, "HTTP_429", true),
            (
                404,
                "<html>not here</html>".to_owned(),
                Misconfigured,
                "HTTP_404",
                false,
            ),
            (302, String::new(), Misconfigured, "HTTP_302", false),
            (401, String::new(), AuthFailed, "HTTP_401", false),
        ];
        for (status, body, kind, code, retried) in rows {
            assert_eq!(
                kind_of(&classify_token_error(status, &body)),
                Some((kind, code.to_string(), retried)),
                "{status} {body}"
            );
        }
    }

    #[test]
    fn transport_faults() {
        for fault in [
            TransportFault::Timeout,
            TransportFault::Connect,
            TransportFault::Other,
        ] {
            assert!(
                matches!(classify_transport(fault, false), Verdict::Retry(ref f) if f.kind == Unavailable),
                "{fault:?}"
            );
            assert!(
                matches!(classify_transport(fault, true), Verdict::Fail(ref f) if f.kind == Unavailable && f.code == "TIMEOUT"),
                "{fault:?}"
            );
        }
        assert!(
            matches!(classify_transport(TransportFault::Connect, false), Verdict::Retry(ref f) if f.code == "CONNECTION_FAILED")
        );
    }

    #[test]
    fn error_bodies_in_every_shape() {
        assert_eq!(
            parse_error_body(r#"[{"message":"m","errorCode":"C"}]"#),
            ErrorBody {
                code: Some("C".into()),
                message: Some("m".into())
            }
        );
        assert_eq!(
            parse_error_body(r#"{"error":"invalid_grant","error_description":"expired"}"#),
            ErrorBody {
                code: Some("invalid_grant".into()),
                message: Some("expired".into())
            }
        );
        assert_eq!(
            parse_error_body("[]"),
            ErrorBody {
                code: None,
                message: None
            }
        );
        assert_eq!(
            parse_error_body(""),
            ErrorBody {
                code: None,
                message: Some("empty body".into())
            }
        );
        assert_eq!(parse_error_body("<html><body>x</body></html>").code, None);
    }
}
