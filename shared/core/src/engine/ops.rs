//! What operators and the settings API do to a job besides running it: read its status,
//! skip the halted record, re-open a parked item. Changes go under the job's lease, so they
//! never interleave with a run.

use super::outbox::publish_outbox;
use super::{EngineConfig, EngineError};
use crate::domain::*;
use crate::ports::{Clock, EventPublisher, StateStore};
use crate::ports::{Commit, ErrorWrite, StoreError};
use serde::Serialize;
use serde_json::json;

/// Where a job stands and why (SPEC §8 job status).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobStatus {
    pub job: JobRef,
    pub definition: JobDefinition,
    pub export_to_crm: bool,
    pub pause_on_export_errors: bool,
    pub cursor: Seq,
    /// The highest seq queued.
    pub head: Seq,
    /// Records queued after the cursor (older versions included).
    pub backlog: u64,
    pub oldest_unexported_at: Option<Timestamp>,
    pub halt: Option<Halt>,
    pub block: Option<Block>,
    pub open_errors: u64,
    pub parked_errors: u64,
    pub last_run_at: Option<Timestamp>,
    pub last_retry_completed_at: Option<Timestamp>,
}

#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    #[error("job {0} is not defined")]
    UnknownJob(JobRef),
    #[error("job {0} is not halted")]
    NotHalted(JobRef),
    #[error("no ExportErrors item for key {0}")]
    NoSuchError(RecordKey),
    #[error("the ExportErrors item for key {key} is {status}, not parked")]
    NotParked {
        key: RecordKey,
        status: &'static str,
    },
    #[error("skipping the halted record needs acknowledge_data_inconsistency. {DATA_INCONSISTENCY_WARNING}")]
    AcknowledgementRequired,
    #[error("a run of job {0} is in progress; try again when it ends")]
    Busy(JobRef),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl OpsError {
    pub fn code(&self) -> &'static str {
        match self {
            OpsError::UnknownJob(_) => "unknown_job",
            OpsError::NotHalted(_) => "not_halted",
            OpsError::NoSuchError(_) => "unknown_error_item",
            OpsError::NotParked { .. } => "not_parked",
            OpsError::AcknowledgementRequired => "acknowledgement_required",
            OpsError::Busy(_) => "job_busy",
            OpsError::Store(StoreError::Unavailable(_)) => "store_unavailable",
            OpsError::Store(_) => "store_error",
        }
    }
}

impl From<EngineError> for OpsError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::UnknownJob(j) => OpsError::UnknownJob(j),
            EngineError::Store(s) => OpsError::Store(s),
        }
    }
}

/// Operator actions and status: the store, the events and the clock, no CRM.
#[derive(Clone, Copy)]
pub struct Operator<'a> {
    pub store: &'a dyn StateStore,
    pub events: &'a dyn EventPublisher,
    pub clock: &'a dyn Clock,
    pub config: &'a EngineConfig,
}

impl<'a> Operator<'a> {
    pub fn new(
        store: &'a dyn StateStore,
        events: &'a dyn EventPublisher,
        clock: &'a dyn Clock,
        config: &'a EngineConfig,
    ) -> Self {
        Self {
            store,
            events,
            clock,
            config,
        }
    }

    pub async fn job_status(&self, job: &JobRef) -> Result<JobStatus, OpsError> {
        let definition = self
            .store
            .get_job(&job.tenant, &job.job)
            .await?
            .ok_or_else(|| OpsError::UnknownJob(job.clone()))?;
        let settings = self
            .store
            .get_settings(&job.tenant)
            .await?
            .map(|v| v.settings)
            .unwrap_or_default();
        let state = self.store.load_state(job).await?;
        let head = self.store.head(job).await?;
        let oldest = self.store.read_after(job, state.cursor, 1).await?;
        Ok(JobStatus {
            job: job.clone(),
            definition,
            export_to_crm: settings.export_to_crm,
            pause_on_export_errors: settings.pause_on_export_errors,
            cursor: state.cursor,
            head,
            backlog: head.saturating_sub(state.cursor),
            oldest_unexported_at: oldest.first().map(|r| r.enqueued_at),
            halt: state.halt,
            block: state.block,
            open_errors: self.store.count_errors(job, ErrorStatus::Open).await?,
            parked_errors: self.store.count_errors(job, ErrorStatus::Parked).await?,
            last_run_at: state.last_run_at,
            last_retry_completed_at: state.last_retry_completed_at,
        })
    }

    /// Moves a halted job past its record without turning pause off for the tenant: the
    /// record's item becomes `parked` (shown, not retried, can be re-opened).
    pub async fn skip_halted(
        &self,
        job: &JobRef,
        actor: &str,
        acknowledged: bool,
    ) -> Result<ExportErrorItem, OpsError> {
        if !acknowledged {
            return Err(OpsError::AcknowledgementRequired);
        }
        let lease = self.operator_lease(job, actor).await?;
        let result = async {
            let mut state = self.store.load_state(job).await?;
            let halt = state.halt.take().ok_or_else(|| OpsError::NotHalted(job.clone()))?;
            let mut item = self
                .store
                .get_error(job, &halt.key)
                .await?
                .ok_or_else(|| OpsError::NoSuchError(halt.key.clone()))?;
            item.status = ErrorStatus::Parked;
            state.cursor = state.cursor.max(halt.seq);
            let now = self.clock.now();
            let detail = json!({"reason": "skipped", "record_key": halt.key, "seq": halt.seq, "actor": actor});
            let event = Event::for_job(EventKind::ExportJobResumed, job, now, detail);
            let commit = Commit { state, errors: vec![ErrorWrite::Put(item.clone())], events: vec![event], ..Commit::default() };
            self.store.commit(job, &lease, now, commit).await?;
            tracing::info!(tenant = %job.tenant, job = %job.job, %actor, key = %halt.key, "halted record skipped and parked");
            Ok(item)
        }
        .await;
        self.release_operator_lease(job, &lease).await;
        result
    }

    /// Re-opens a parked ExportErrors item: the next retry run sends it again.
    pub async fn reopen_error(
        &self,
        job: &JobRef,
        key: &RecordKey,
        actor: &str,
    ) -> Result<ExportErrorItem, OpsError> {
        let lease = self.operator_lease(job, actor).await?;
        let result = async {
            let state = self.store.load_state(job).await?;
            let mut item = self.store.get_error(job, key).await?.ok_or_else(|| OpsError::NoSuchError(key.clone()))?;
            if item.status != ErrorStatus::Parked {
                return Err(OpsError::NotParked { key: key.clone(), status: item.status.as_str() });
            }
            item.status = ErrorStatus::Open;
            item.retry_attempts = 0;
            let commit = Commit { state, errors: vec![ErrorWrite::Put(item.clone())], events: Vec::new(), ..Commit::default() };
            self.store.commit(job, &lease, self.clock.now(), commit).await?;
            tracing::info!(tenant = %job.tenant, job = %job.job, %actor, key = %key, "parked item re-opened");
            Ok(item)
        }
        .await;
        self.release_operator_lease(job, &lease).await;
        result
    }

    /// Operator changes take the job's lease, so they never interleave with a run.
    async fn operator_lease(
        &self,
        job: &JobRef,
        actor: &str,
    ) -> Result<crate::ports::Lease, OpsError> {
        if self.store.get_job(&job.tenant, &job.job).await?.is_none() {
            return Err(OpsError::UnknownJob(job.clone()));
        }
        let owner = RunId(format!("operator:{actor}:{}", uuid::Uuid::new_v4()));
        self.store
            .acquire_lease(job, &owner, self.clock.now(), self.config.lease_duration)
            .await?
            .ok_or_else(|| OpsError::Busy(job.clone()))
    }

    async fn release_operator_lease(&self, job: &JobRef, lease: &crate::ports::Lease) {
        if let Err(e) = self.store.release_lease(job, lease).await {
            tracing::warn!(job = %job, error = %e, "releasing the operator lease failed; it expires by itself");
        }
        publish_outbox(self.store, self.events, &job.tenant).await;
    }
}
