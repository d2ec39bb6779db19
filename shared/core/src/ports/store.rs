//! The state ports. Every store (memory, SQLite, DynamoDB) implements all of them and passes
//! the one conformance suite in `testing::conformance`.

use crate::domain::{
    ErrorStatus, Event, ExportErrorItem, JobDefinition, JobId, JobRef, JobState, NewRecord, Record,
    RecordKey, RunId, Seq, SettingsChange, TenantId, Timestamp, VersionedSettings,
};
use async_trait::async_trait;
use std::collections::HashMap;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The caller's lease expired or was taken over: nothing was written.
    #[error("the job's lease is no longer held by this run")]
    LeaseLost,
    /// Optimistic concurrency: the stored version is not the one the write was based on.
    #[error("version conflict: expected version {expected}, found {found}")]
    VersionConflict { expected: u64, found: u64 },
    #[error("not found: {0}")]
    NotFound(String),
    /// The request itself is wrong (a bug or bad input), not worth retrying.
    #[error("invalid store request: {0}")]
    Invalid(String),
    /// The backend failed or throttled after its own retries; try again later.
    #[error("store unavailable: {0}")]
    Unavailable(String),
}

/// A page of results and the opaque token of the next one.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next: Option<String>,
}

/// The export queue of each job.
#[async_trait]
pub trait ExportQueue: Send + Sync {
    /// Appends records with consecutive seqs after the job's last one, all or nothing, and
    /// returns them. Concurrent producers never create gaps or duplicates, and a record is
    /// never visible before every smaller seq of its job.
    async fn enqueue(
        &self,
        job: &JobRef,
        records: Vec<NewRecord>,
        now: Timestamp,
    ) -> Result<Vec<Seq>, StoreError>;
    /// Up to `limit` records with seq > `after`, in seq order.
    async fn read_after(
        &self,
        job: &JobRef,
        after: Seq,
        limit: usize,
    ) -> Result<Vec<Record>, StoreError>;
    /// One record by seq.
    async fn get_record(&self, job: &JobRef, seq: Seq) -> Result<Option<Record>, StoreError>;
    /// The newest queued seq of each given key ("is a newer version queued?").
    async fn latest_seqs(
        &self,
        job: &JobRef,
        keys: &[RecordKey],
    ) -> Result<HashMap<RecordKey, Seq>, StoreError>;
    /// The highest seq assigned so far (0 when empty).
    async fn head(&self, job: &JobRef) -> Result<Seq, StoreError>;
}

/// Opaque proof of holding a job's lease; a new one per acquisition.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LeaseToken(pub String);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub token: LeaseToken,
    pub owner: RunId,
    pub expires_at: Timestamp,
}

impl Lease {
    pub fn time_left(&self, now: Timestamp) -> Duration {
        (self.expires_at - now).to_std().unwrap_or(Duration::ZERO)
    }
}

/// One runner per job at a time (SPEC §4.2).
#[async_trait]
pub trait LeaseStore: Send + Sync {
    /// Takes the lease if it is free or expired; `None` when another run holds it.
    async fn acquire_lease(
        &self,
        job: &JobRef,
        owner: &RunId,
        now: Timestamp,
        duration: Duration,
    ) -> Result<Option<Lease>, StoreError>;
    /// Extends a held lease; `LeaseLost` when it expired or was taken.
    async fn renew_lease(
        &self,
        job: &JobRef,
        lease: &Lease,
        now: Timestamp,
        duration: Duration,
    ) -> Result<Lease, StoreError>;
    /// Gives the lease up; a lease that is no longer held is not an error.
    async fn release_lease(&self, job: &JobRef, lease: &Lease) -> Result<(), StoreError>;
}

/// A change to one ExportErrors item, applied with a job commit.
// A batch carries few writes; boxing the item would only add allocations.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum ErrorWrite {
    /// Creates or replaces the item of `item.key`.
    Put(ExportErrorItem),
    /// The key was accepted at `by_seq`: an unresolved item with seq ≤ `by_seq` becomes
    /// `resolved` (same seq) or `superseded` (older seq). Otherwise nothing changes.
    Resolve {
        key: RecordKey,
        by_seq: Seq,
        at: Timestamp,
    },
}

/// Everything one batch changes, committed at once and only while the lease is held.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Commit {
    pub state: JobState,
    pub errors: Vec<ErrorWrite>,
    /// Recorded in the outbox with the change; published after it.
    pub events: Vec<Event>,
    /// CRM API calls made since the run's previous commit, added to the tenant's budget
    /// (the hour bucket of `now`) with the change, so a batch costs no separate budget write.
    pub api_calls: u64,
    /// When set, the lease is extended to `now + duration` with the change: the renewal
    /// after every batch (SPEC §4.2) without a request of its own.
    pub lease_extension: Option<Duration>,
}

impl Commit {
    pub fn new(state: JobState, errors: Vec<ErrorWrite>, events: Vec<Event>) -> Self {
        Self {
            state,
            errors,
            events,
            ..Self::default()
        }
    }
}

/// Cursor, halt, block and streaks of each job.
#[async_trait]
pub trait JobStateStore: Send + Sync {
    /// The job's state (the default state for a job never run).
    async fn load_state(&self, job: &JobRef) -> Result<JobState, StoreError>;
    /// Applies the commit atomically if `lease` is still held at `now` (state, ExportErrors
    /// writes, events, the API-call count and the lease extension, all or none); else
    /// `LeaseLost` and nothing changes.
    async fn commit(
        &self,
        job: &JobRef,
        lease: &Lease,
        now: Timestamp,
        commit: Commit,
    ) -> Result<(), StoreError>;
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ErrorFilter {
    pub status: Option<ErrorStatus>,
    pub code: Option<String>,
}

/// The ExportErrors items of each job (writes go through [`JobStateStore::commit`]).
#[async_trait]
pub trait ExportErrorStore: Send + Sync {
    async fn get_error(
        &self,
        job: &JobRef,
        key: &RecordKey,
    ) -> Result<Option<ExportErrorItem>, StoreError>;
    /// Key → item seq of every `open` or `parked` item.
    async fn unresolved_errors(&self, job: &JobRef) -> Result<HashMap<RecordKey, Seq>, StoreError>;
    /// `open` items whose last attempt is before `before`, oldest last attempt first (ties
    /// by key), starting after `after`.
    async fn open_errors_for_retry(
        &self,
        job: &JobRef,
        before: Timestamp,
        after: Option<(Timestamp, RecordKey)>,
        limit: usize,
    ) -> Result<Vec<ExportErrorItem>, StoreError>;
    /// Items matching the filter, newest last attempt first, paginated.
    async fn list_errors(
        &self,
        job: &JobRef,
        filter: &ErrorFilter,
        page: Option<&str>,
        limit: usize,
    ) -> Result<Page<ExportErrorItem>, StoreError>;
    async fn count_errors(&self, job: &JobRef, status: ErrorStatus) -> Result<u64, StoreError>;
}

/// Tenant settings, their history, and job definitions.
#[async_trait]
pub trait SettingsStore: Send + Sync {
    /// `None` for a tenant that never saved settings (defaults apply, version 0).
    async fn get_settings(
        &self,
        tenant: &TenantId,
    ) -> Result<Option<VersionedSettings>, StoreError>;
    /// Stores `change.new` if the stored version is `expected_version` (0: none stored),
    /// appends `change` to the history and `event` to the outbox, all at once. Returns the
    /// new version, or `VersionConflict` and nothing changes.
    async fn put_settings(
        &self,
        tenant: &TenantId,
        expected_version: u64,
        change: SettingsChange,
        event: Event,
    ) -> Result<u64, StoreError>;
    /// Changes, newest first.
    async fn settings_history(
        &self,
        tenant: &TenantId,
        page: Option<&str>,
        limit: usize,
    ) -> Result<Page<SettingsChange>, StoreError>;
    /// Every tenant that has settings.
    async fn list_tenants(&self) -> Result<Vec<TenantId>, StoreError>;
}

#[async_trait]
pub trait JobCatalog: Send + Sync {
    async fn get_job(
        &self,
        tenant: &TenantId,
        job: &JobId,
    ) -> Result<Option<JobDefinition>, StoreError>;
    /// Creates or replaces a job definition.
    async fn put_job(&self, tenant: &TenantId, def: JobDefinition) -> Result<(), StoreError>;
    async fn list_jobs(&self, tenant: &TenantId) -> Result<Vec<JobDefinition>, StoreError>;
}

/// Events recorded with a state change and not yet published.
#[async_trait]
pub trait Outbox: Send + Sync {
    async fn pending_events(&self, tenant: &TenantId) -> Result<Vec<Event>, StoreError>;
    async fn mark_published(&self, tenant: &TenantId, ids: &[String]) -> Result<(), StoreError>;
}

/// The product's own count of CRM API calls per tenant (SPEC §3 `daily_api_limit`).
#[async_trait]
pub trait ApiBudget: Send + Sync {
    async fn add_api_calls(
        &self,
        tenant: &TenantId,
        at: Timestamp,
        calls: u64,
    ) -> Result<(), StoreError>;
    /// Calls counted in the 24 h before `now`. Stores count in hourly buckets and include
    /// the whole oldest bucket, so the figure errs on the high side.
    async fn api_calls_last_24h(
        &self,
        tenant: &TenantId,
        now: Timestamp,
    ) -> Result<u64, StoreError>;
}

/// Every state port at once: what a store adapter provides.
pub trait StateStore:
    ExportQueue
    + LeaseStore
    + JobStateStore
    + ExportErrorStore
    + SettingsStore
    + JobCatalog
    + Outbox
    + ApiBudget
{
}

impl<T> StateStore for T where
    T: ExportQueue
        + LeaseStore
        + JobStateStore
        + ExportErrorStore
        + SettingsStore
        + JobCatalog
        + Outbox
        + ApiBudget
{
}

/// The start of the hourly bucket that holds `at` (seconds since the epoch).
pub fn hour_bucket(at: Timestamp) -> i64 {
    at.timestamp().div_euclid(3600) * 3600
}
