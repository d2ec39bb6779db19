//! Domain types shared by the engine, the ports and every adapter.

mod event;
mod export_error;
mod ids;
mod job;
mod outcome;
mod record;
pub mod settings;

pub use event::{Event, EventKind, EVENT_SOURCE};
pub use export_error::{ErrorStatus, ExportErrorItem};
pub use ids::{IdError, JobId, JobRef, RecordKey, RunId, TenantId};
pub use job::{Block, BlockReason, Halt, JobDefinition, JobState, Streak};
pub use outcome::{
    ApiUsage, CrmReply, RecordError, RecordOutcome, RejectKind, RequestFailure, RequestFailureKind,
};
pub use record::{NewRecord, Record, Seq};
pub use settings::{
    apply_patch, BatchSize, Settings, SettingsChange, SettingsError, SettingsPatch,
    VersionedSettings, DATA_INCONSISTENCY_WARNING,
};

/// Wall-clock time. Stored as UTC everywhere.
pub type Timestamp = chrono::DateTime<chrono::Utc>;
