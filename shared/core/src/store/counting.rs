//! [`CountingStore`]: a decorator that counts the calls made to every state port (and the
//! time they take) and delegates them to the store it wraps. It changes nothing else (same
//! results, same errors), so it can wrap any store — memory, SQLite, DynamoDB — wherever a
//! figure of "store requests per record" is wanted (the benchmark, metrics, tests that pin
//! how chatty the engine is).
//!
//! One port call is one count, whatever the store does underneath (a DynamoDB store may
//! send several HTTP requests for one call; its own request counter tells those).

use crate::domain::{
    ErrorStatus, Event, ExportErrorItem, JobDefinition, JobId, JobRef, JobState, NewRecord, Record,
    RecordKey, RunId, Seq, SettingsChange, TenantId, Timestamp, VersionedSettings,
};
use crate::ports::{
    ApiBudget, Commit, ErrorFilter, ExportErrorStore, ExportQueue, JobCatalog, JobStateStore,
    Lease, LeaseStore, Outbox, Page, SettingsStore, StoreError,
};
use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Every operation of the state ports, one per trait method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StoreOp {
    Enqueue,
    ReadAfter,
    GetRecord,
    LatestSeqs,
    Head,
    AcquireLease,
    RenewLease,
    ReleaseLease,
    LoadState,
    Commit,
    GetError,
    UnresolvedErrors,
    OpenErrorsForRetry,
    ListErrors,
    CountErrors,
    GetSettings,
    PutSettings,
    SettingsHistory,
    ListTenants,
    GetJob,
    PutJob,
    ListJobs,
    PendingEvents,
    MarkPublished,
    AddApiCalls,
    ApiCallsLast24h,
}

impl StoreOp {
    pub const ALL: [StoreOp; 26] = [
        StoreOp::Enqueue,
        StoreOp::ReadAfter,
        StoreOp::GetRecord,
        StoreOp::LatestSeqs,
        StoreOp::Head,
        StoreOp::AcquireLease,
        StoreOp::RenewLease,
        StoreOp::ReleaseLease,
        StoreOp::LoadState,
        StoreOp::Commit,
        StoreOp::GetError,
        StoreOp::UnresolvedErrors,
        StoreOp::OpenErrorsForRetry,
        StoreOp::ListErrors,
        StoreOp::CountErrors,
        StoreOp::GetSettings,
        StoreOp::PutSettings,
        StoreOp::SettingsHistory,
        StoreOp::ListTenants,
        StoreOp::GetJob,
        StoreOp::PutJob,
        StoreOp::ListJobs,
        StoreOp::PendingEvents,
        StoreOp::MarkPublished,
        StoreOp::AddApiCalls,
        StoreOp::ApiCallsLast24h,
    ];

    /// The port method's name (`read_after`, `commit`, ...).
    pub fn name(self) -> &'static str {
        match self {
            StoreOp::Enqueue => "enqueue",
            StoreOp::ReadAfter => "read_after",
            StoreOp::GetRecord => "get_record",
            StoreOp::LatestSeqs => "latest_seqs",
            StoreOp::Head => "head",
            StoreOp::AcquireLease => "acquire_lease",
            StoreOp::RenewLease => "renew_lease",
            StoreOp::ReleaseLease => "release_lease",
            StoreOp::LoadState => "load_state",
            StoreOp::Commit => "commit",
            StoreOp::GetError => "get_error",
            StoreOp::UnresolvedErrors => "unresolved_errors",
            StoreOp::OpenErrorsForRetry => "open_errors_for_retry",
            StoreOp::ListErrors => "list_errors",
            StoreOp::CountErrors => "count_errors",
            StoreOp::GetSettings => "get_settings",
            StoreOp::PutSettings => "put_settings",
            StoreOp::SettingsHistory => "settings_history",
            StoreOp::ListTenants => "list_tenants",
            StoreOp::GetJob => "get_job",
            StoreOp::PutJob => "put_job",
            StoreOp::ListJobs => "list_jobs",
            StoreOp::PendingEvents => "pending_events",
            StoreOp::MarkPublished => "mark_published",
            StoreOp::AddApiCalls => "add_api_calls",
            StoreOp::ApiCallsLast24h => "api_calls_last_24h",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl std::fmt::Display for StoreOp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Calls per operation at one moment; subtract two to get the calls in between.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreCalls {
    counts: [u64; StoreOp::ALL.len()],
    nanos: [u64; StoreOp::ALL.len()],
}

impl StoreCalls {
    pub fn get(&self, op: StoreOp) -> u64 {
        self.counts[op.index()]
    }
    /// Time spent in calls of `op` (summed over calls, so concurrent calls add up).
    pub fn time(&self, op: StoreOp) -> Duration {
        Duration::from_nanos(self.nanos[op.index()])
    }
    /// Mean time of one call of `op` (zero when it was never called).
    pub fn mean_time(&self, op: StoreOp) -> Duration {
        match self.get(op) {
            0 => Duration::ZERO,
            n => self.time(op) / u32::try_from(n).unwrap_or(u32::MAX),
        }
    }
    /// Every call, all operations together.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }
    /// Time spent in every call, all operations together.
    pub fn total_time(&self) -> Duration {
        Duration::from_nanos(self.nanos.iter().sum())
    }
    /// The operations called at least once, with their counts, in [`StoreOp::ALL`] order.
    pub fn nonzero(&self) -> Vec<(StoreOp, u64)> {
        StoreOp::ALL
            .iter()
            .map(|op| (*op, self.get(*op)))
            .filter(|(_, n)| *n > 0)
            .collect()
    }
    /// The calls made after `earlier` was taken (saturating).
    pub fn since(&self, earlier: &StoreCalls) -> StoreCalls {
        StoreCalls {
            counts: std::array::from_fn(|i| self.counts[i].saturating_sub(earlier.counts[i])),
            nanos: std::array::from_fn(|i| self.nanos[i].saturating_sub(earlier.nanos[i])),
        }
    }
}

/// Wraps a store and counts every port call and the time it took (from the call to its
/// answer). Implements every state port (and so `StateStore`) when the wrapped store does.
pub struct CountingStore<S> {
    inner: S,
    counts: [AtomicU64; StoreOp::ALL.len()],
    nanos: [AtomicU64; StoreOp::ALL.len()],
}

impl<S> CountingStore<S> {
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
            nanos: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }

    /// The wrapped store (calls made through it directly are not counted).
    pub fn inner(&self) -> &S {
        &self.inner
    }

    pub fn into_inner(self) -> S {
        self.inner
    }

    /// Calls of one operation so far.
    pub fn calls_of(&self, op: StoreOp) -> u64 {
        self.counts[op.index()].load(Ordering::Relaxed)
    }

    /// Every call so far.
    pub fn total_calls(&self) -> u64 {
        self.snapshot().total()
    }

    /// The counts and times of every operation now.
    pub fn snapshot(&self) -> StoreCalls {
        StoreCalls {
            counts: std::array::from_fn(|i| self.counts[i].load(Ordering::Relaxed)),
            nanos: std::array::from_fn(|i| self.nanos[i].load(Ordering::Relaxed)),
        }
    }

    pub fn reset(&self) {
        for c in self.counts.iter().chain(&self.nanos) {
            c.store(0, Ordering::Relaxed);
        }
    }

    /// Counts one call of `op` and adds the time `call` takes.
    async fn timed<T>(&self, op: StoreOp, call: impl std::future::Future<Output = T>) -> T {
        self.counts[op.index()].fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let out = call.await;
        let took = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.nanos[op.index()].fetch_add(took, Ordering::Relaxed);
        out
    }
}

impl<S: std::fmt::Debug> std::fmt::Debug for CountingStore<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CountingStore")
            .field("inner", &self.inner)
            .field("calls", &self.total_calls())
            .finish()
    }
}

#[async_trait]
impl<S: ExportQueue> ExportQueue for CountingStore<S> {
    async fn enqueue(
        &self,
        job: &JobRef,
        records: Vec<NewRecord>,
        now: Timestamp,
    ) -> Result<Vec<Seq>, StoreError> {
        self.timed(StoreOp::Enqueue, self.inner.enqueue(job, records, now))
            .await
    }
    async fn read_after(
        &self,
        job: &JobRef,
        after: Seq,
        limit: usize,
    ) -> Result<Vec<Record>, StoreError> {
        self.timed(StoreOp::ReadAfter, self.inner.read_after(job, after, limit))
            .await
    }
    async fn get_record(&self, job: &JobRef, seq: Seq) -> Result<Option<Record>, StoreError> {
        self.timed(StoreOp::GetRecord, self.inner.get_record(job, seq))
            .await
    }
    async fn latest_seqs(
        &self,
        job: &JobRef,
        keys: &[RecordKey],
    ) -> Result<HashMap<RecordKey, Seq>, StoreError> {
        self.timed(StoreOp::LatestSeqs, self.inner.latest_seqs(job, keys))
            .await
    }
    async fn head(&self, job: &JobRef) -> Result<Seq, StoreError> {
        self.timed(StoreOp::Head, self.inner.head(job)).await
    }
}

#[async_trait]
impl<S: LeaseStore> LeaseStore for CountingStore<S> {
    async fn acquire_lease(
        &self,
        job: &JobRef,
        owner: &RunId,
        now: Timestamp,
        duration: Duration,
    ) -> Result<Option<Lease>, StoreError> {
        self.timed(
            StoreOp::AcquireLease,
            self.inner.acquire_lease(job, owner, now, duration),
        )
        .await
    }
    async fn renew_lease(
        &self,
        job: &JobRef,
        lease: &Lease,
        now: Timestamp,
        duration: Duration,
    ) -> Result<Lease, StoreError> {
        self.timed(
            StoreOp::RenewLease,
            self.inner.renew_lease(job, lease, now, duration),
        )
        .await
    }
    async fn release_lease(&self, job: &JobRef, lease: &Lease) -> Result<(), StoreError> {
        self.timed(StoreOp::ReleaseLease, self.inner.release_lease(job, lease))
            .await
    }
}

#[async_trait]
impl<S: JobStateStore> JobStateStore for CountingStore<S> {
    async fn load_state(&self, job: &JobRef) -> Result<JobState, StoreError> {
        self.timed(StoreOp::LoadState, self.inner.load_state(job))
            .await
    }
    async fn commit(
        &self,
        job: &JobRef,
        lease: &Lease,
        now: Timestamp,
        commit: Commit,
    ) -> Result<(), StoreError> {
        self.timed(StoreOp::Commit, self.inner.commit(job, lease, now, commit))
            .await
    }
}

#[async_trait]
impl<S: ExportErrorStore> ExportErrorStore for CountingStore<S> {
    async fn get_error(
        &self,
        job: &JobRef,
        key: &RecordKey,
    ) -> Result<Option<ExportErrorItem>, StoreError> {
        self.timed(StoreOp::GetError, self.inner.get_error(job, key))
            .await
    }
    async fn unresolved_errors(&self, job: &JobRef) -> Result<HashMap<RecordKey, Seq>, StoreError> {
        self.timed(StoreOp::UnresolvedErrors, self.inner.unresolved_errors(job))
            .await
    }
    async fn open_errors_for_retry(
        &self,
        job: &JobRef,
        before: Timestamp,
        after: Option<(Timestamp, RecordKey)>,
        limit: usize,
    ) -> Result<Vec<ExportErrorItem>, StoreError> {
        self.timed(
            StoreOp::OpenErrorsForRetry,
            self.inner.open_errors_for_retry(job, before, after, limit),
        )
        .await
    }
    async fn list_errors(
        &self,
        job: &JobRef,
        filter: &ErrorFilter,
        page: Option<&str>,
        limit: usize,
    ) -> Result<Page<ExportErrorItem>, StoreError> {
        self.timed(
            StoreOp::ListErrors,
            self.inner.list_errors(job, filter, page, limit),
        )
        .await
    }
    async fn count_errors(&self, job: &JobRef, status: ErrorStatus) -> Result<u64, StoreError> {
        self.timed(StoreOp::CountErrors, self.inner.count_errors(job, status))
            .await
    }
}

#[async_trait]
impl<S: SettingsStore> SettingsStore for CountingStore<S> {
    async fn get_settings(
        &self,
        tenant: &TenantId,
    ) -> Result<Option<VersionedSettings>, StoreError> {
        self.timed(StoreOp::GetSettings, self.inner.get_settings(tenant))
            .await
    }
    async fn put_settings(
        &self,
        tenant: &TenantId,
        expected_version: u64,
        change: SettingsChange,
        event: Event,
    ) -> Result<u64, StoreError> {
        self.timed(
            StoreOp::PutSettings,
            self.inner
                .put_settings(tenant, expected_version, change, event),
        )
        .await
    }
    async fn settings_history(
        &self,
        tenant: &TenantId,
        page: Option<&str>,
        limit: usize,
    ) -> Result<Page<SettingsChange>, StoreError> {
        self.timed(
            StoreOp::SettingsHistory,
            self.inner.settings_history(tenant, page, limit),
        )
        .await
    }
    async fn list_tenants(&self) -> Result<Vec<TenantId>, StoreError> {
        self.timed(StoreOp::ListTenants, self.inner.list_tenants())
            .await
    }
}

#[async_trait]
impl<S: JobCatalog> JobCatalog for CountingStore<S> {
    async fn get_job(
        &self,
        tenant: &TenantId,
        job: &JobId,
    ) -> Result<Option<JobDefinition>, StoreError> {
        self.timed(StoreOp::GetJob, self.inner.get_job(tenant, job))
            .await
    }
    async fn put_job(&self, tenant: &TenantId, def: JobDefinition) -> Result<(), StoreError> {
        self.timed(StoreOp::PutJob, self.inner.put_job(tenant, def))
            .await
    }
    async fn list_jobs(&self, tenant: &TenantId) -> Result<Vec<JobDefinition>, StoreError> {
        self.timed(StoreOp::ListJobs, self.inner.list_jobs(tenant))
            .await
    }
}

#[async_trait]
impl<S: Outbox> Outbox for CountingStore<S> {
    async fn pending_events(&self, tenant: &TenantId) -> Result<Vec<Event>, StoreError> {
        self.timed(StoreOp::PendingEvents, self.inner.pending_events(tenant))
            .await
    }
    async fn mark_published(&self, tenant: &TenantId, ids: &[String]) -> Result<(), StoreError> {
        self.timed(
            StoreOp::MarkPublished,
            self.inner.mark_published(tenant, ids),
        )
        .await
    }
}

#[async_trait]
impl<S: ApiBudget> ApiBudget for CountingStore<S> {
    async fn add_api_calls(
        &self,
        tenant: &TenantId,
        at: Timestamp,
        calls: u64,
    ) -> Result<(), StoreError> {
        self.timed(
            StoreOp::AddApiCalls,
            self.inner.add_api_calls(tenant, at, calls),
        )
        .await
    }
    async fn api_calls_last_24h(
        &self,
        tenant: &TenantId,
        now: Timestamp,
    ) -> Result<u64, StoreError> {
        self.timed(
            StoreOp::ApiCallsLast24h,
            self.inner.api_calls_last_24h(tenant, now),
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::StateStore;
    use crate::store::MemoryStore;

    fn assert_state_store<T: StateStore>(_: &T) {}

    #[tokio::test]
    async fn counts_each_call_and_delegates() {
        let store = CountingStore::new(MemoryStore::default());
        assert_state_store(&store);
        let job = JobRef::new(
            TenantId::new("t1").unwrap(),
            crate::domain::JobId::new("j1").unwrap(),
        );
        let key = RecordKey::from_external_id("A1", false).unwrap();
        let rec = NewRecord {
            key: key.clone(),
            fields: serde_json::Map::new(),
        };
        let now = chrono::Utc::now();
        let seqs = store.enqueue(&job, vec![rec], now).await.unwrap();
        assert_eq!(seqs, vec![1]);
        assert_eq!(store.head(&job).await.unwrap(), 1);
        assert_eq!(store.read_after(&job, 0, 10).await.unwrap().len(), 1);
        assert_eq!(store.read_after(&job, 1, 10).await.unwrap().len(), 0);
        let before = store.snapshot();
        let latest = store
            .latest_seqs(&job, std::slice::from_ref(&key))
            .await
            .unwrap();
        assert_eq!(latest.get(&key), Some(&1));

        assert_eq!(store.calls_of(StoreOp::Enqueue), 1);
        assert_eq!(store.calls_of(StoreOp::ReadAfter), 2);
        assert_eq!(store.total_calls(), 5);
        let since = store.snapshot().since(&before);
        assert_eq!(since.nonzero(), vec![(StoreOp::LatestSeqs, 1)]);
        assert!(store.snapshot().total_time() >= since.total_time());
        assert_eq!(since.time(StoreOp::Enqueue), Duration::ZERO);
        store.reset();
        assert_eq!(store.total_calls(), 0);
    }

    #[test]
    fn op_indices_follow_all() {
        for (i, op) in StoreOp::ALL.iter().enumerate() {
            assert_eq!(op.index(), i, "{op}");
        }
    }
}
