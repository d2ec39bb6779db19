use super::{RecordError, RecordKey, Seq, Timestamp};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorStatus {
    Open,
    Resolved,
    Superseded,
    Parked,
}

impl ErrorStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorStatus::Open => "open",
            ErrorStatus::Resolved => "resolved",
            ErrorStatus::Superseded => "superseded",
            ErrorStatus::Parked => "parked",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "open" => ErrorStatus::Open,
            "resolved" => ErrorStatus::Resolved,
            "superseded" => ErrorStatus::Superseded,
            "parked" => ErrorStatus::Parked,
            _ => return None,
        })
    }
    /// Items that still stand for a record the CRM does not hold.
    pub fn is_unresolved(self) -> bool {
        matches!(self, ErrorStatus::Open | ErrorStatus::Parked)
    }
}

/// One item of a job's ExportErrors: the latest failed version of one record key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExportErrorItem {
    pub key: RecordKey,
    pub seq: Seq,
    pub fields: serde_json::Map<String, serde_json::Value>,
    pub error: RecordError,
    pub status: ErrorStatus,
    /// Failed sends of this key, all runs together.
    pub attempts: u32,
    /// Failed ExportError retry runs; parked at `max_retry_attempts`.
    pub retry_attempts: u32,
    pub first_seen: Timestamp,
    pub last_seen: Timestamp,
    pub last_attempt_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_at: Option<Timestamp>,
    /// The seq whose acceptance resolved or superseded this item.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_by_seq: Option<Seq>,
}

impl ExportErrorItem {
    /// The key was accepted at `by_seq`: an unresolved item of that version becomes
    /// `resolved`, of an older one `superseded`. Returns whether the item changed (a newer
    /// failed version, or an item already resolved, stays as it is).
    pub fn resolve(&mut self, by_seq: Seq, at: Timestamp) -> bool {
        if !self.status.is_unresolved() || self.seq > by_seq {
            return false;
        }
        self.status = if self.seq == by_seq {
            ErrorStatus::Resolved
        } else {
            ErrorStatus::Superseded
        };
        self.resolved_at = Some(at);
        self.resolved_by_seq = Some(by_seq);
        true
    }
}
