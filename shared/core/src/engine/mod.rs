//! The export engine: the export run (SPEC §4), the ExportError retry run (§5) and the
//! operator actions, written against the ports only. Lambda handlers and the CLI build an
//! [`Engine`] from their adapters and call the same functions; the deadline is a plain
//! timestamp so both run the same code.

mod batch;
mod config;
mod export_run;
mod ops;
mod outbox;
mod pipeline;
mod report;
mod retry_run;
mod run;
mod send;
mod settings;

pub use config::EngineConfig;
pub use ops::{JobStatus, Operator, OpsError};
pub use outbox::{publish_outbox, Published};
pub use report::{RunCounts, RunKind, RunOutcome, RunReport};
pub use settings::{change_settings, current_settings, ChangeSettingsError, SettingsChanged};

use crate::domain::{JobRef, RunId, Timestamp};
use crate::ports::{Clock, CrmClient, EventPublisher, StateStore, StoreError};

/// Why a run could not be carried out at all (as opposed to a run that stopped for a
/// reason the report describes).
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("job {0} is not defined")]
    UnknownJob(JobRef),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl EngineError {
    pub fn code(&self) -> &'static str {
        match self {
            EngineError::UnknownJob(_) => "unknown_job",
            EngineError::Store(StoreError::Unavailable(_)) => "store_unavailable",
            EngineError::Store(_) => "store_error",
        }
    }
    /// Worth retrying the invocation (the state is intact; the next run starts over).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            EngineError::Store(StoreError::Unavailable(_) | StoreError::LeaseLost)
        )
    }
}

/// Told about a run's progress after every committed batch (a progress bar, metrics).
pub trait RunObserver: Send + Sync {
    fn batch_committed(&self, counts: &RunCounts, cursor: crate::domain::Seq);
}

/// What one run is given besides the ports.
#[derive(Clone)]
pub struct RunOptions {
    pub run_id: RunId,
    /// The run stops cleanly (cursor committed, lease released) before this time.
    pub deadline: Timestamp,
    pub observer: Option<std::sync::Arc<dyn RunObserver>>,
    /// Set from outside (Ctrl-C, SIGTERM) to stop the run at the next batch boundary,
    /// cleanly, as at its deadline.
    pub stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl std::fmt::Debug for RunOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunOptions")
            .field("run_id", &self.run_id)
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}

impl RunOptions {
    pub fn new(deadline: Timestamp) -> Self {
        Self {
            run_id: RunId::random(),
            deadline,
            observer: None,
            stop: Default::default(),
        }
    }
    pub fn with_observer(mut self, observer: std::sync::Arc<dyn RunObserver>) -> Self {
        self.observer = Some(observer);
        self
    }
}

/// The ports one engine works with. Cheap to build per invocation.
#[derive(Clone, Copy)]
pub struct Engine<'a> {
    pub store: &'a dyn StateStore,
    pub crm: &'a dyn CrmClient,
    pub events: &'a dyn EventPublisher,
    pub clock: &'a dyn Clock,
    pub config: &'a EngineConfig,
}

impl<'a> Engine<'a> {
    pub fn new(
        store: &'a dyn StateStore,
        crm: &'a dyn CrmClient,
        events: &'a dyn EventPublisher,
        clock: &'a dyn Clock,
        config: &'a EngineConfig,
    ) -> Self {
        Self {
            store,
            crm,
            events,
            clock,
            config,
        }
    }

    /// One export run of one job (SPEC §4).
    pub async fn run_export(
        &self,
        job: &JobRef,
        opts: &RunOptions,
    ) -> Result<RunReport, EngineError> {
        export_run::run(self, job, opts).await
    }

    /// Status and operator actions, which need no CRM.
    pub fn operator(&self) -> Operator<'a> {
        Operator::new(self.store, self.events, self.clock, self.config)
    }

    /// One ExportError retry run of one job (SPEC §5).
    pub async fn run_retry(
        &self,
        job: &JobRef,
        opts: &RunOptions,
    ) -> Result<RunReport, EngineError> {
        retry_run::run(self, job, opts).await
    }
}
