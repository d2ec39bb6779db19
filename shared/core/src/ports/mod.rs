//! Ports: the small traits the engine talks to. Adapters (memory, SQLite, DynamoDB,
//! EventBridge, Salesforce, ...) implement them at the edges; they speak only our types.

mod crm;
mod store;
mod time;

pub use crm::{CrmClient, UpsertRequest};
pub use store::{
    hour_bucket, ApiBudget, Commit, ErrorFilter, ErrorWrite, ExportErrorStore, ExportQueue,
    JobCatalog, JobStateStore, Lease, LeaseStore, LeaseToken, Outbox, Page, SettingsStore,
    StateStore, StoreError,
};
pub use time::{Clock, SystemClock};

use crate::domain::Event;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("publishing events failed: {0}")]
pub struct PublishError(pub String);

/// Publishes the notable moments (SPEC §8). At least once: the engine records events with
/// the state change (outbox) and marks them published only after this returns Ok.
#[async_trait::async_trait]
pub trait EventPublisher: Send + Sync {
    async fn publish(&self, events: &[Event]) -> Result<(), PublishError>;
}
