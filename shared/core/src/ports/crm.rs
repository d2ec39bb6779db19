use crate::domain::{CrmReply, RecordOutcome};
use std::time::Duration;

/// One upsert call: at most one version of each key, at most 200 records.
#[derive(Debug, Clone, PartialEq)]
pub struct UpsertRequest {
    pub object: String,
    pub external_id_field: String,
    pub records: Vec<serde_json::Map<String, serde_json::Value>>,
    /// The whole call (retries included) must end within this; the engine derives it from
    /// the lease time left, so no write can land after another runner took over.
    pub timeout: Duration,
}

/// The CRM, bound to one tenant's connection.
#[async_trait::async_trait]
pub trait CrmClient: Send + Sync {
    /// Upserts by external id without all-or-none. On success the outcomes are in the
    /// order of `records`, exactly one each.
    async fn upsert(&self, request: &UpsertRequest) -> CrmReply<Vec<RecordOutcome>>;

    /// A cheap authenticated call that tells whether the connection works (the probe of a
    /// blocked job when there is no record to probe with).
    async fn check_connection(&self, timeout: Duration) -> CrmReply<()>;
}
