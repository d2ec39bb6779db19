use super::{JobId, RecordError, RecordKey, Seq, Timestamp};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What a job exports: which CRM object, upserted on which external-id field, and how
/// source fields map to CRM fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobDefinition {
    pub job_id: JobId,
    /// CRM object API name, e.g. `Contact`.
    pub object: String,
    /// CRM external-id field the upsert matches on, e.g. `External_Id__c`.
    pub external_id_field: String,
    /// The source field holding the key (defaults to `external_id_field`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_field: Option<String>,
    /// Whether the CRM matches external ids case-insensitively (then keys that differ only
    /// in case are one key).
    #[serde(default)]
    pub key_case_insensitive: bool,
    /// Source field → CRM field. Empty: every source field is sent under its own name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub field_map: BTreeMap<String, String>,
}

impl JobDefinition {
    pub fn key_field(&self) -> &str {
        self.key_field.as_deref().unwrap_or(&self.external_id_field)
    }

    /// The CRM body of one record: mapped fields, with `attributes` and nulls-as-given.
    pub fn to_crm_fields(
        &self,
        fields: &serde_json::Map<String, serde_json::Value>,
    ) -> serde_json::Map<String, serde_json::Value> {
        let mut out = serde_json::Map::new();
        if self.field_map.is_empty() {
            for (k, v) in fields {
                if k != "attributes" {
                    out.insert(k.clone(), v.clone());
                }
            }
        } else {
            for (src, dst) in &self.field_map {
                if let Some(v) = fields.get(src) {
                    out.insert(dst.clone(), v.clone());
                }
            }
        }
        if let Some(v) = fields.get(self.key_field()) {
            out.insert(self.external_id_field.clone(), v.clone());
        }
        out
    }

    /// Derives the record key from the source fields; `None` when the key is missing.
    pub fn key_of(&self, fields: &serde_json::Map<String, serde_json::Value>) -> Option<RecordKey> {
        let raw = match fields.get(self.key_field())? {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Number(n) => n.to_string(),
            _ => return None,
        };
        RecordKey::from_external_id(&raw, self.key_case_insensitive)
    }
}

/// The record a job is stopped on (pause on, record-level failure).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Halt {
    pub seq: Seq,
    pub key: RecordKey,
    pub error: RecordError,
    pub since: Timestamp,
    pub attempts: u32,
    pub last_attempt_at: Timestamp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BlockReason {
    /// The CRM refused the connection for good (`invalid_grant`, inactive user or org).
    ConnectionRefused,
    /// The API is disabled for the org or the user.
    ApiDisabled,
    /// The org is out of storage.
    StorageLimit,
    /// Most of a batch failed with the same permission/configuration code.
    SystemicFailure,
}

impl BlockReason {
    pub fn as_str(self) -> &'static str {
        match self {
            BlockReason::ConnectionRefused => "connection_refused",
            BlockReason::ApiDisabled => "api_disabled",
            BlockReason::StorageLimit => "storage_limit",
            BlockReason::SystemicFailure => "systemic_failure",
        }
    }
}

/// A job stopped for a cause no single record explains. Pause off does not bypass it; a
/// successful probe clears it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Block {
    pub reason: BlockReason,
    pub code: String,
    pub message: String,
    pub since: Timestamp,
    pub attempts: u32,
    pub last_attempt_at: Timestamp,
}

/// Counts consecutive runs that stopped at the same place for the same kind of failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Streak {
    pub seq: Seq,
    pub runs: u32,
}

impl Streak {
    /// The streak after one more failing run at `seq`.
    pub fn bump(prev: Option<Streak>, seq: Seq) -> Streak {
        match prev {
            Some(s) if s.seq == seq => Streak {
                seq,
                runs: s.runs + 1,
            },
            _ => Streak { seq, runs: 1 },
        }
    }
}

/// Per-job progress, committed only by the lease holder.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JobState {
    /// The highest seq whose outcome is final; 0 before the first record.
    pub cursor: Seq,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub halt: Option<Halt>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block: Option<Block>,
    /// Runs in a row in which the record at `seq` kept failing transiently.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transient_streak: Option<Streak>,
    /// Runs in a row whose request failed as a whole at the cursor `seq`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_failure_streak: Option<Streak>,
    /// When the last ExportError retry run finished its pass over the open items.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_retry_completed_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run_at: Option<Timestamp>,
}
