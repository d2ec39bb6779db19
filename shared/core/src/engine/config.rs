use std::time::Duration;

/// Engine tunables. The defaults suit a Lambda invocation of up to 15 minutes and the
/// Salesforce limits in the research notes; the CLI and the Lambdas share them.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// How long a lease lasts; renewed after every batch.
    pub lease_duration: Duration,
    /// Upper bound of one CRM operation (its retries included).
    pub request_timeout: Duration,
    /// A request is not started with less time than this left (lease or deadline).
    pub min_request_timeout: Duration,
    /// Kept free before the lease end and the deadline for the commit after a request.
    pub safety_margin: Duration,
    /// In-run retries of records that failed transiently.
    pub transient_retries: u32,
    /// First backoff before a transient retry; doubled each time, capped at 8×.
    pub transient_backoff: Duration,
    /// Runs in a row a record may fail transiently at the same position before it is
    /// treated as a record-level failure.
    pub transient_streak_limit: u32,
    /// Runs in a row a request may fail as a whole at the same cursor before the run
    /// narrows it down by splitting.
    pub request_failure_streak_limit: u32,
    /// Systemic failure: at least this many records in the batch ...
    pub systemic_min_batch: usize,
    /// ... and at least this share of them failing with one configuration code.
    pub systemic_ratio: f64,
    /// Stop when the CRM reports less than this share of the org's allocation left.
    pub org_allocation_floor: f64,
    /// The ExportError retry work is due this long after the last pass.
    pub retry_interval: chrono::Duration,
    /// Records read ahead to fill one batch when many are superseded.
    pub max_window: usize,
    /// The tenant's API-call count is read again after this many calls of the run (in
    /// between, a run adds its own calls to the last reading) ...
    pub budget_reread_calls: u64,
    /// ... or after this long ...
    pub budget_reread_interval: Duration,
    /// ... and before every request once the count is within this share of the limit.
    pub budget_reread_share: f64,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            lease_duration: Duration::from_secs(180),
            request_timeout: Duration::from_secs(120),
            min_request_timeout: Duration::from_secs(5),
            safety_margin: Duration::from_secs(5),
            transient_retries: 3,
            transient_backoff: Duration::from_millis(500),
            transient_streak_limit: 3,
            request_failure_streak_limit: 3,
            systemic_min_batch: 20,
            systemic_ratio: 0.9,
            org_allocation_floor: 0.1,
            retry_interval: chrono::Duration::hours(24),
            max_window: 2_000,
            budget_reread_calls: 50,
            budget_reread_interval: Duration::from_secs(30),
            budget_reread_share: 0.1,
        }
    }
}
