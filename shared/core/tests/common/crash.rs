//! A store wrapper that dies after a number of operations (every later call fails, as if
//! the process had crashed), or stalls at one operation to let another runner in, and a
//! CRM wrapper per runner that checks the runner still holds the lease for the whole of
//! every request it makes.
#![allow(dead_code)]

use crm_export_core::ports::*;
use crm_export_core::store::MemoryStore;
use crm_export_core::testing::{FakeClock, FakeCrm};
use crm_export_core::*;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub type Hook<'a> =
    Box<dyn Fn() -> Pin<Box<dyn Future<Output = ()> + Send + 'a>> + Send + Sync + 'a>;

/// What the CRM wrapper needs of a crashing store: whether the process died, and a way to
/// count its own steps.
pub trait Mortal: Send + Sync {
    fn crashed(&self) -> bool;
    fn tick(&self) -> bool;
}

impl Mortal for CrashStore<'_> {
    fn crashed(&self) -> bool {
        CrashStore::crashed(self)
    }
    fn tick(&self) -> bool {
        CrashStore::tick(self)
    }
}

pub struct CrashStore<'a> {
    pub inner: &'a MemoryStore,
    ops: AtomicU64,
    crash_after: Option<u64>,
    crashed: AtomicBool,
    stall_at: Option<u64>,
    on_stall: Option<Hook<'a>>,
}

impl<'a> CrashStore<'a> {
    pub fn new(inner: &'a MemoryStore, crash_after: Option<u64>) -> Self {
        Self {
            inner,
            ops: AtomicU64::new(0),
            crash_after,
            crashed: AtomicBool::new(false),
            stall_at: None,
            on_stall: None,
        }
    }
    pub fn stalling(inner: &'a MemoryStore, stall_at: u64, hook: Hook<'a>) -> Self {
        Self {
            stall_at: Some(stall_at),
            on_stall: Some(hook),
            ..Self::new(inner, None)
        }
    }
    pub fn crashed(&self) -> bool {
        self.crashed.load(Ordering::SeqCst)
    }
    /// Counts one step; true when the process "dies" at this step.
    pub fn tick(&self) -> bool {
        let n = self.ops.fetch_add(1, Ordering::SeqCst) + 1;
        if self.crash_after.is_some_and(|limit| n > limit) {
            self.crashed.store(true, Ordering::SeqCst);
        }
        self.crashed()
    }
    async fn gate(&self) -> Result<(), StoreError> {
        if self.tick() {
            return Err(StoreError::Unavailable("crashed".into()));
        }
        let n = self.ops.load(Ordering::SeqCst);
        if self.stall_at == Some(n) {
            if let Some(h) = &self.on_stall {
                h().await;
            }
        }
        Ok(())
    }
}

macro_rules! gated {
    ($self:ident . $m:ident ( $($a:expr),* )) => {{
        $self.gate().await?;
        $self.inner.$m($($a),*).await
    }};
}

#[async_trait::async_trait]
impl ExportQueue for CrashStore<'_> {
    async fn enqueue(
        &self,
        job: &JobRef,
        records: Vec<NewRecord>,
        now: Timestamp,
    ) -> Result<Vec<Seq>, StoreError> {
        gated!(self.enqueue(job, records, now))
    }
    async fn read_after(
        &self,
        job: &JobRef,
        after: Seq,
        limit: usize,
    ) -> Result<Vec<Record>, StoreError> {
        gated!(self.read_after(job, after, limit))
    }
    async fn get_record(&self, job: &JobRef, seq: Seq) -> Result<Option<Record>, StoreError> {
        gated!(self.get_record(job, seq))
    }
    async fn latest_seqs(
        &self,
        job: &JobRef,
        keys: &[RecordKey],
    ) -> Result<HashMap<RecordKey, Seq>, StoreError> {
        gated!(self.latest_seqs(job, keys))
    }
    async fn head(&self, job: &JobRef) -> Result<Seq, StoreError> {
        gated!(self.head(job))
    }
}

#[async_trait::async_trait]
impl LeaseStore for CrashStore<'_> {
    async fn acquire_lease(
        &self,
        job: &JobRef,
        owner: &RunId,
        now: Timestamp,
        d: Duration,
    ) -> Result<Option<Lease>, StoreError> {
        gated!(self.acquire_lease(job, owner, now, d))
    }
    async fn renew_lease(
        &self,
        job: &JobRef,
        lease: &Lease,
        now: Timestamp,
        d: Duration,
    ) -> Result<Lease, StoreError> {
        gated!(self.renew_lease(job, lease, now, d))
    }
    async fn release_lease(&self, job: &JobRef, lease: &Lease) -> Result<(), StoreError> {
        gated!(self.release_lease(job, lease))
    }
}

#[async_trait::async_trait]
impl JobStateStore for CrashStore<'_> {
    async fn load_state(&self, job: &JobRef) -> Result<JobState, StoreError> {
        gated!(self.load_state(job))
    }
    async fn commit(
        &self,
        job: &JobRef,
        lease: &Lease,
        now: Timestamp,
        commit: Commit,
    ) -> Result<(), StoreError> {
        gated!(self.commit(job, lease, now, commit))
    }
}

#[async_trait::async_trait]
impl ExportErrorStore for CrashStore<'_> {
    async fn get_error(
        &self,
        job: &JobRef,
        key: &RecordKey,
    ) -> Result<Option<ExportErrorItem>, StoreError> {
        gated!(self.get_error(job, key))
    }
    async fn unresolved_errors(&self, job: &JobRef) -> Result<HashMap<RecordKey, Seq>, StoreError> {
        gated!(self.unresolved_errors(job))
    }
    async fn open_errors_for_retry(
        &self,
        job: &JobRef,
        before: Timestamp,
        after: Option<(Timestamp, RecordKey)>,
        limit: usize,
    ) -> Result<Vec<ExportErrorItem>, StoreError> {
        gated!(self.open_errors_for_retry(job, before, after, limit))
    }
    async fn list_errors(
        &self,
        job: &JobRef,
        f: &ErrorFilter,
        page: Option<&str>,
        limit: usize,
    ) -> Result<Page<ExportErrorItem>, StoreError> {
        gated!(self.list_errors(job, f, page, limit))
    }
    async fn count_errors(&self, job: &JobRef, status: ErrorStatus) -> Result<u64, StoreError> {
        gated!(self.count_errors(job, status))
    }
}

#[async_trait::async_trait]
impl SettingsStore for CrashStore<'_> {
    async fn get_settings(&self, t: &TenantId) -> Result<Option<VersionedSettings>, StoreError> {
        gated!(self.get_settings(t))
    }
    async fn put_settings(
        &self,
        t: &TenantId,
        v: u64,
        c: SettingsChange,
        e: Event,
    ) -> Result<u64, StoreError> {
        gated!(self.put_settings(t, v, c, e))
    }
    async fn settings_history(
        &self,
        t: &TenantId,
        p: Option<&str>,
        l: usize,
    ) -> Result<Page<SettingsChange>, StoreError> {
        gated!(self.settings_history(t, p, l))
    }
    async fn list_tenants(&self) -> Result<Vec<TenantId>, StoreError> {
        gated!(self.list_tenants())
    }
}

#[async_trait::async_trait]
impl JobCatalog for CrashStore<'_> {
    async fn get_job(&self, t: &TenantId, j: &JobId) -> Result<Option<JobDefinition>, StoreError> {
        gated!(self.get_job(t, j))
    }
    async fn put_job(&self, t: &TenantId, d: JobDefinition) -> Result<(), StoreError> {
        gated!(self.put_job(t, d))
    }
    async fn list_jobs(&self, t: &TenantId) -> Result<Vec<JobDefinition>, StoreError> {
        gated!(self.list_jobs(t))
    }
}

#[async_trait::async_trait]
impl Outbox for CrashStore<'_> {
    async fn pending_events(&self, t: &TenantId) -> Result<Vec<Event>, StoreError> {
        gated!(self.pending_events(t))
    }
    async fn mark_published(&self, t: &TenantId, ids: &[String]) -> Result<(), StoreError> {
        gated!(self.mark_published(t, ids))
    }
}

#[async_trait::async_trait]
impl ApiBudget for CrashStore<'_> {
    async fn add_api_calls(&self, t: &TenantId, at: Timestamp, n: u64) -> Result<(), StoreError> {
        gated!(self.add_api_calls(t, at, n))
    }
    async fn api_calls_last_24h(&self, t: &TenantId, now: Timestamp) -> Result<u64, StoreError> {
        gated!(self.api_calls_last_24h(t, now))
    }
}

/// The CRM as one runner sees it: every request must be made while this runner holds the
/// lease for the request's whole timeout (SPEC §7 "one runner").
pub struct RunnerCrm<'a> {
    pub crm: &'a FakeCrm,
    pub store: &'a MemoryStore,
    pub crash: Option<&'a dyn Mortal>,
    pub clock: &'a FakeClock,
    pub job: JobRef,
    pub run_id: RunId,
    pub violations: Arc<Mutex<Vec<String>>>,
}

impl RunnerCrm<'_> {
    fn check_lease(&self, timeout: Duration) {
        let now = Clock::now(self.clock);
        let ok = match self.store.lease_of(&self.job) {
            Some(l) => {
                l.owner == self.run_id
                    && l.expires_at >= now + chrono::Duration::from_std(timeout).unwrap()
            }
            None => false,
        };
        if !ok {
            self.violations.lock().unwrap().push(format!(
                "run {} sent a request (timeout {timeout:?}) at {now} without holding the lease for it: {:?}",
                self.run_id,
                self.store.lease_of(&self.job)
            ));
        }
    }
    fn died(&self) -> bool {
        self.crash.is_some_and(|c| c.crashed())
    }
}

fn crashed_reply<T>() -> CrmReply<T> {
    CrmReply {
        result: Err(RequestFailure::new(
            RequestFailureKind::Unavailable,
            "CRASHED",
            "the process died",
        )),
        api_calls: 0,
        usage: None,
    }
}

#[async_trait::async_trait]
impl CrmClient for RunnerCrm<'_> {
    async fn upsert(&self, req: &UpsertRequest) -> CrmReply<Vec<RecordOutcome>> {
        if self.died() {
            return crashed_reply();
        }
        self.check_lease(req.timeout);
        let reply = self.crm.upsert(req).await;
        // Dying right after the CRM applied the write: the run never learns the outcome.
        if self.crash.is_some_and(|c| c.tick()) {
            return crashed_reply();
        }
        reply
    }
    async fn check_connection(&self, timeout: Duration) -> CrmReply<()> {
        if self.died() {
            return crashed_reply();
        }
        self.check_lease(timeout);
        self.crm.check_connection(timeout).await
    }
}
