use super::{RecordKey, Timestamp};
use serde::{Deserialize, Serialize};

/// Position in a job's export queue: strictly increasing, gap-free, assigned at enqueue.
pub type Seq = u64;

/// A record to be enqueued: the key is derived from the job's external-id field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewRecord {
    pub key: RecordKey,
    pub fields: serde_json::Map<String, serde_json::Value>,
}

/// One version of a record in the export queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub seq: Seq,
    pub key: RecordKey,
    pub fields: serde_json::Map<String, serde_json::Value>,
    pub enqueued_at: Timestamp,
}
