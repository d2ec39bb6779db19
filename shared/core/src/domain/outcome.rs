//! What the CRM said, in the four classes of SPEC §4: accepted, transient, record-level
//! (per record) and request-level (the whole call).

use serde::{Deserialize, Serialize};

/// The CRM's error for one record, as reported (code, message, fields).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordError {
    pub code: String,
    pub message: String,
    #[serde(default)]
    pub fields: Vec<String>,
}

impl RecordError {
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            code: code.into(),
            message: message.into(),
            fields: Vec::new(),
        }
    }
}

/// Why a record was refused, as far as the adapter can tell from the code and message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectKind {
    /// The record's content (validation rule, required field, bad value, trigger, ...).
    Data,
    /// Permission or configuration: counts towards systemic-failure detection (§4.5).
    Configuration,
    /// An org-wide condition no record explains (storage limit): blocks the job at once.
    OrgWide,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "class", rename_all = "snake_case")]
pub enum RecordOutcome {
    Accepted {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        crm_id: Option<String>,
        created: bool,
    },
    /// Worth retrying as is (lock contention, rolled back for a sibling, ...). With
    /// `retry_smaller` the retry uses smaller requests (a trigger's CPU-time limit).
    Transient {
        error: RecordError,
        retry_smaller: bool,
    },
    /// Refused for good until someone changes the data or the org.
    Rejected {
        error: RecordError,
        kind: RejectKind,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestFailureKind {
    /// Outage, 5xx after retries, timeout, network error, or a reply the adapter could not
    /// read (outcome unknown).
    Unavailable,
    /// Authentication refused after one refresh.
    AuthFailed,
    /// The connection is refused for good (`invalid_grant`, inactive user/org): blocks.
    ConnectionRevoked,
    /// API disabled for the org or user: blocks.
    ApiDisabled,
    /// The org refuses the call for a configuration reason no record explains (object or
    /// external-id field unknown or not accessible, insufficient access): blocks.
    Misconfigured,
    /// The org's daily API allocation is spent (403 `REQUEST_LIMIT_EXCEEDED`, daily).
    DailyLimit,
    /// Too many concurrent long requests: transient.
    ConcurrencyLimit,
    /// The request was refused as a whole, probably for one record's content
    /// (400 `JSON_PARSER_ERROR`, ...): narrow it down by splitting.
    ContentRefused,
}

/// A failure of the whole call: no per-record outcome is known.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestFailure {
    pub kind: RequestFailureKind,
    pub code: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u16>,
}

impl RequestFailure {
    pub fn new(
        kind: RequestFailureKind,
        code: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            kind,
            code: code.into(),
            message: message.into(),
            http_status: None,
        }
    }
}

/// The org's API usage as the CRM reports it (`Sforce-Limit-Info: api-usage=USED/MAX`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiUsage {
    pub used: u64,
    pub max: u64,
}

impl ApiUsage {
    /// True when less than `ratio` of the org's allocation is left.
    pub fn below(&self, ratio: f64) -> bool {
        self.max > 0 && (self.max.saturating_sub(self.used) as f64) < ratio * self.max as f64
    }
}

/// The reply to one CRM operation, with every HTTP call it took (refresh-and-replay and
/// 5xx retries included) so the budget counts them all.
#[derive(Debug, Clone, PartialEq)]
pub struct CrmReply<T> {
    pub result: Result<T, RequestFailure>,
    pub api_calls: u32,
    pub usage: Option<ApiUsage>,
}
