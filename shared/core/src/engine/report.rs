use crate::domain::{BlockReason, JobRef, RecordKey, RunId, Seq, Timestamp};
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunKind {
    Export,
    Retry,
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum RunOutcome {
    /// `export_to_crm` is off: nothing was done.
    Disabled,
    /// Another run holds the job's lease.
    AlreadyRunning,
    /// The tenant's other jobs hold all its request slots (`max_in_flight`).
    TenantBusy,
    /// Everything queued (or every open item) was processed.
    Completed,
    /// Pause is on and a record was refused: the job stays on it.
    Halted {
        key: RecordKey,
        seq: Seq,
        code: String,
    },
    /// A cause no single record explains.
    Blocked { reason: BlockReason, code: String },
    /// Stopped before the deadline; the next run goes on.
    DeadlineReached,
    /// The tenant's daily API limit or the org's allocation is (nearly) spent.
    BudgetExhausted { code: String },
    /// The CRM failed the request as a whole; nothing is recorded against records.
    RequestFailed { code: String, message: String },
    /// Another runner took the lease over; this run stopped without committing.
    LeaseLost,
}

impl RunOutcome {
    pub fn name(&self) -> &'static str {
        match self {
            RunOutcome::Disabled => "disabled",
            RunOutcome::AlreadyRunning => "already_running",
            RunOutcome::TenantBusy => "tenant_busy",
            RunOutcome::Completed => "completed",
            RunOutcome::Halted { .. } => "halted",
            RunOutcome::Blocked { .. } => "blocked",
            RunOutcome::DeadlineReached => "deadline_reached",
            RunOutcome::BudgetExhausted { .. } => "budget_exhausted",
            RunOutcome::RequestFailed { .. } => "request_failed",
            RunOutcome::LeaseLost => "lease_lost",
        }
    }
    /// A failed run (as opposed to one that stopped for a planned reason).
    pub fn is_failure(&self) -> bool {
        matches!(
            self,
            RunOutcome::RequestFailed { .. } | RunOutcome::LeaseLost
        )
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RunCounts {
    /// Records sent to the CRM (each send of a record counts once).
    pub sent: u64,
    pub accepted: u64,
    /// Older versions passed over because a newer version of the key is queued.
    pub superseded: u64,
    /// Record-level failures (halted on, or logged to ExportErrors).
    pub record_errors: u64,
    /// ExportErrors items resolved or superseded by an accepted version.
    pub errors_resolved: u64,
    /// ExportErrors items parked (retry run).
    pub errors_parked: u64,
    /// Open items left alone by the retry run (newer version queued, halted record).
    pub errors_skipped: u64,
    pub transient_retries: u64,
    /// Extra requests made to narrow a refused request down to the record.
    pub split_requests: u64,
    pub batches: u64,
    pub api_calls: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunReport {
    pub run_id: RunId,
    pub kind: RunKind,
    pub job: JobRef,
    pub outcome: RunOutcome,
    pub counts: RunCounts,
    pub cursor_before: Seq,
    pub cursor_after: Seq,
    pub started_at: Timestamp,
    pub finished_at: Timestamp,
}
