//! The dispatcher: on every scheduled tick it surveys the tenants with `export_to_crm` on
//! and their jobs, emits the per-job gauges (so a job that never runs still shows), and
//! fans the work out as one command per tenant and job.
//!
//! * Export tick: `ExportRequested` for every job with work (records after the cursor, a
//!   halt to probe, a block to probe). A job with none is skipped: its run would only take
//!   the lease, find nothing and publish an empty `ExportRunCompleted` every interval.
//!   Plus `ExportErrorRetryRequested` for every job whose retry work is overdue (SPEC §5):
//!   open items, no retry pass completed in the last 24 h, and an open item whose last
//!   attempt is older than that.
//! * Retry tick (the daily schedule's input `{"sweep":"retry"}`): `ExportErrorRetryRequested`
//!   for every job with open ExportErrors items.
//!
//! It also publishes each tenant's pending outbox events (a `SettingsChanged` the API could
//! not publish must not wait for a run of a job with work).

use crate::commands::{CommandPublisher, JobCommand};
use crate::config::FunctionConfig;
use crate::emf::{Metrics, Unit};
use crate::error::FunctionError;
use crm_export_aws::{DynamoStore, EventBridgePublisher};
use crm_export_core::engine::{EngineConfig, RunKind};
use crm_export_core::ports::{EventPublisher, StateStore, StoreError};
use crm_export_core::{ErrorStatus, JobRef, Seq, TenantId, Timestamp};
use lambda_runtime::LambdaEvent;
use serde_json::{json, Value};
use tracing::Instrument;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sweep {
    Export,
    Retry,
}

impl Sweep {
    pub fn name(self) -> &'static str {
        match self {
            Sweep::Export => "export",
            Sweep::Retry => "retry",
        }
    }
}

/// A scheduled tick.
#[derive(Debug, Clone, PartialEq)]
pub struct Tick {
    pub sweep: Sweep,
    /// When it was scheduled, if the event says.
    pub time: Option<Timestamp>,
}

/// Reads a tick from either shape a schedule delivers:
/// * an EventBridge scheduled event (`"detail-type": "Scheduled Event"`, `time`, and
///   optionally `detail.sweep`), as a scheduled rule sends it;
/// * a schedule's own input, `{"sweep": "retry", "time": "..."}`, as EventBridge Scheduler
///   sends it (the template fills `time` from `<aws.scheduler.scheduled-time>`).
pub fn parse_tick(payload: &Value) -> Result<Tick, FunctionError> {
    let bad = |why: &str| FunctionError::BadEvent(format!("not a dispatcher tick: {why}"));
    let obj = payload
        .as_object()
        .ok_or_else(|| bad("not a JSON object"))?;
    let (sweep, time) = if obj.contains_key("detail-type") {
        let detail_type = obj["detail-type"].as_str().unwrap_or_default();
        if detail_type != "Scheduled Event" {
            return Err(bad(&format!("detail-type {detail_type:?}")));
        }
        (
            obj.get("detail").and_then(|d| d.get("sweep")),
            obj.get("time"),
        )
    } else {
        (obj.get("sweep"), obj.get("time"))
    };
    let sweep = match sweep.map(|s| s.as_str()) {
        None | Some(Some("export")) => Sweep::Export,
        Some(Some("retry")) => Sweep::Retry,
        Some(other) => return Err(bad(&format!("unknown sweep {other:?}"))),
    };
    let time = match time {
        None => None,
        Some(t) => Some(
            t.as_str()
                .and_then(|s| s.parse::<Timestamp>().ok())
                .ok_or_else(|| bad("time is not an RFC 3339 timestamp"))?,
        ),
    };
    Ok(Tick { sweep, time })
}

/// What the dispatcher saw of one job.
#[derive(Debug, Clone, PartialEq)]
pub struct JobSurvey {
    pub job: JobRef,
    pub cursor: Seq,
    pub head: Seq,
    pub halted_since: Option<Timestamp>,
    pub blocked_since: Option<Timestamp>,
    /// When the oldest record after the cursor was queued.
    pub oldest_unexported_at: Option<Timestamp>,
    pub open_errors: u64,
    pub retry_overdue: bool,
}

impl JobSurvey {
    pub fn backlog(&self) -> u64 {
        self.head.saturating_sub(self.cursor)
    }
    /// Anything for an export run to do: records to send, or a halt or block to probe.
    pub fn has_work(&self) -> bool {
        self.backlog() > 0 || self.halted_since.is_some() || self.blocked_since.is_some()
    }
}

#[derive(Debug, Default)]
pub struct Survey {
    /// Every tenant with settings.
    pub tenants: Vec<TenantId>,
    pub enabled_tenants: Vec<TenantId>,
    pub jobs: Vec<JobSurvey>,
    pub failed: Vec<(TenantId, StoreError)>,
}

/// Surveys every tenant with exporting on. A tenant whose reads fail is recorded in
/// `failed` and the others go on; only a failure to list the tenants fails the survey.
pub async fn survey(
    store: &dyn StateStore,
    now: Timestamp,
    retry_interval: chrono::Duration,
) -> Result<Survey, StoreError> {
    let tenants = store.list_tenants().await?;
    let mut out = Survey {
        tenants: tenants.clone(),
        ..Survey::default()
    };
    for tenant in tenants {
        match survey_tenant(store, &tenant, now, retry_interval).await {
            Ok(None) => {}
            Ok(Some(jobs)) => {
                out.enabled_tenants.push(tenant);
                out.jobs.extend(jobs);
            }
            Err(e) => {
                tracing::error!(%tenant, error = %e, "surveying the tenant failed");
                out.failed.push((tenant, e));
            }
        }
    }
    Ok(out)
}

async fn survey_tenant(
    store: &dyn StateStore,
    tenant: &TenantId,
    now: Timestamp,
    retry_interval: chrono::Duration,
) -> Result<Option<Vec<JobSurvey>>, StoreError> {
    let enabled = store
        .get_settings(tenant)
        .await?
        .is_some_and(|s| s.settings.export_to_crm);
    if !enabled {
        return Ok(None);
    }
    let mut jobs = Vec::new();
    for def in store.list_jobs(tenant).await? {
        let job = JobRef::new(tenant.clone(), def.job_id);
        jobs.push(survey_job(store, job, now, retry_interval).await?);
    }
    Ok(Some(jobs))
}

async fn survey_job(
    store: &dyn StateStore,
    job: JobRef,
    now: Timestamp,
    retry_interval: chrono::Duration,
) -> Result<JobSurvey, StoreError> {
    let state = store.load_state(&job).await?;
    let head = store.head(&job).await?;
    let oldest_unexported_at = if head > state.cursor {
        store
            .read_after(&job, state.cursor, 1)
            .await?
            .first()
            .map(|r| r.enqueued_at)
    } else {
        None
    };
    let open_errors = store.count_errors(&job, ErrorStatus::Open).await?;
    let due_by = now - retry_interval;
    let pass_is_old = state.last_retry_completed_at.is_none_or(|t| t < due_by);
    let retry_overdue = open_errors > 0
        && pass_is_old
        && !store
            .open_errors_for_retry(&job, due_by, None, 1)
            .await?
            .is_empty();
    Ok(JobSurvey {
        halted_since: state.halt.as_ref().map(|h| h.since),
        blocked_since: state.block.as_ref().map(|b| b.since),
        cursor: state.cursor,
        head,
        oldest_unexported_at,
        open_errors,
        retry_overdue,
        job,
    })
}

/// The commands a tick sends (see the module doc).
pub fn plan(survey: &Survey, sweep: Sweep) -> Vec<(RunKind, JobCommand)> {
    let mut commands = Vec::new();
    for j in &survey.jobs {
        match sweep {
            Sweep::Export => {
                if j.has_work() {
                    commands.push((RunKind::Export, JobCommand::for_job(&j.job)));
                }
                if j.retry_overdue {
                    commands.push((RunKind::Retry, JobCommand::for_job(&j.job)));
                }
            }
            Sweep::Retry => {
                if j.open_errors > 0 {
                    commands.push((RunKind::Retry, JobCommand::for_job(&j.job)));
                }
            }
        }
    }
    commands
}

fn age_seconds(now: Timestamp, since: Option<Timestamp>) -> f64 {
    since.map_or(0.0, |t| (now - t).num_milliseconds().max(0) as f64 / 1000.0)
}

/// The gauges of every surveyed job, and their fleet-wide aggregates (what the alarms
/// watch). A job without a halt reports a halt age of 0, so the series never has gaps.
pub fn survey_metrics(metrics: &Metrics, survey: &Survey, now: Timestamp, commands: usize) {
    let mut oldest_halt: f64 = 0.0;
    let mut oldest_block: f64 = 0.0;
    let mut oldest_unexported: f64 = 0.0;
    let (mut halted, mut blocked, mut backlog, mut open, mut overdue) = (0, 0, 0, 0, 0);
    for j in &survey.jobs {
        let halt_age = age_seconds(now, j.halted_since);
        let block_age = age_seconds(now, j.blocked_since);
        let unexported_age = age_seconds(now, j.oldest_unexported_at);
        oldest_halt = oldest_halt.max(halt_age);
        oldest_block = oldest_block.max(block_age);
        oldest_unexported = oldest_unexported.max(unexported_age);
        halted += u64::from(j.halted_since.is_some());
        blocked += u64::from(j.blocked_since.is_some());
        overdue += u64::from(j.retry_overdue);
        backlog += j.backlog();
        open += j.open_errors;
        let mut doc = metrics.doc();
        if metrics.job_dimensions {
            doc = doc.also_by(&[
                ("TenantId", j.job.tenant.to_string()),
                ("JobId", j.job.job.to_string()),
            ]);
        }
        metrics.emit(
            &doc.metric("JobHaltAge", Unit::Seconds, halt_age)
                .metric("JobBlockAge", Unit::Seconds, block_age)
                .metric("JobOldestUnexportedAge", Unit::Seconds, unexported_age)
                .count("JobBacklog", j.backlog())
                .count("JobOpenExportErrors", j.open_errors)
                .property("TenantId", j.job.tenant.as_str())
                .property("JobId", j.job.job.as_str())
                .property("Cursor", j.cursor)
                .property("Head", j.head)
                .property("Halted", j.halted_since.is_some())
                .property("Blocked", j.blocked_since.is_some())
                .property("RetryOverdue", j.retry_overdue),
        );
    }
    metrics.emit(
        &metrics
            .doc()
            .count("TenantsEnabled", survey.enabled_tenants.len() as u64)
            .count("TenantsFailed", survey.failed.len() as u64)
            .count("JobsEnabled", survey.jobs.len() as u64)
            .count("JobsHalted", halted)
            .count("JobsBlocked", blocked)
            .count("JobsRetryOverdue", overdue)
            .metric("OldestHaltAge", Unit::Seconds, oldest_halt)
            .metric("OldestBlockAge", Unit::Seconds, oldest_block)
            .metric("OldestUnexportedAge", Unit::Seconds, oldest_unexported)
            .count("Backlog", backlog)
            .count("OpenExportErrors", open)
            .count("CommandsPublished", commands as u64),
    );
}

/// The dispatcher function's dependencies, built once at cold start.
pub struct Dispatcher {
    config: FunctionConfig,
    store: DynamoStore,
    events: EventBridgePublisher,
    commands: CommandPublisher,
    metrics: Metrics,
    engine: EngineConfig,
}

impl Dispatcher {
    pub async fn from_env() -> Result<Self, crate::config::ConfigError> {
        let config = FunctionConfig::from_env()?;
        let sdk = crm_export_aws::load_sdk_config().await;
        Ok(Self::new(config, &sdk))
    }

    pub fn new(config: FunctionConfig, sdk: &aws_config::SdkConfig) -> Self {
        Self {
            store: DynamoStore::new(sdk, config.dynamo.clone()),
            events: EventBridgePublisher::new(sdk, config.events.clone()),
            commands: CommandPublisher::new(
                sdk,
                config.events.bus_name.clone(),
                &config.sdk_timeouts,
            ),
            metrics: Metrics::new(
                config.metrics_namespace.clone(),
                config.service_name.clone(),
                config.metrics_job_dimensions,
            ),
            engine: EngineConfig::default(),
            config,
        }
    }

    pub async fn handle(&self, event: LambdaEvent<Value>) -> Result<Value, FunctionError> {
        let now = chrono::Utc::now();
        let tick = parse_tick(&event.payload).inspect_err(|e| {
            tracing::error!(code = e.code(), error = %e, "event refused");
        })?;
        let span = tracing::info_span!("tick", sweep = tick.sweep.name());
        self.dispatch(tick, now).instrument(span).await
    }

    async fn dispatch(&self, tick: Tick, now: Timestamp) -> Result<Value, FunctionError> {
        // A late export tick would only duplicate the next one; a late daily retry tick
        // still runs (skipping it would skip a day).
        if let (Sweep::Export, Some(time)) = (tick.sweep, tick.time) {
            let age = (now - time).to_std().unwrap_or_default();
            if age > self.config.command_max_age {
                tracing::warn!(
                    age_s = age.as_secs(),
                    "tick older than the schedule interval dropped"
                );
                self.metrics
                    .emit(&self.metrics.doc().count("TicksDropped", 1));
                return Ok(
                    json!({"status": "dropped", "reason": "stale", "age_seconds": age.as_secs()}),
                );
            }
        }
        let survey = survey(&self.store, now, self.engine.retry_interval).await?;
        for tenant in &survey.tenants {
            self.publish_outbox(tenant).await;
        }
        let commands = plan(&survey, tick.sweep);
        let published = self.commands.publish(&commands, now).await;
        survey_metrics(
            &self.metrics,
            &survey,
            now,
            published.as_ref().map_or(0, |_| commands.len()),
        );
        let calls = published.map_err(FunctionError::Publish)?;
        tracing::info!(
            tenants = survey.tenants.len(),
            enabled = survey.enabled_tenants.len(),
            jobs = survey.jobs.len(),
            commands = commands.len(),
            put_events_calls = calls,
            failed_tenants = survey.failed.len(),
            "tick dispatched"
        );
        if !survey.failed.is_empty() {
            return Err(FunctionError::Survey {
                failed: survey.failed.len(),
                tenants: survey.tenants.len(),
            });
        }
        Ok(json!({
            "status": "dispatched",
            "sweep": tick.sweep.name(),
            "tenants": survey.tenants.len(),
            "enabled_tenants": survey.enabled_tenants.len(),
            "jobs": survey.jobs.len(),
            "commands": commands.len(),
        }))
    }

    async fn publish_outbox(&self, tenant: &TenantId) {
        let publisher: &dyn EventPublisher = &self.events;
        crm_export_api::publish_outbox(&self.store, publisher, tenant).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crm_export_core::ports::{
        Commit, ErrorWrite, ExportQueue, JobCatalog, JobStateStore, LeaseStore, SettingsStore,
    };
    use crm_export_core::store::MemoryStore;
    use crm_export_core::*;
    use serde_json::json;
    use std::time::Duration;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn ticks_from_a_scheduled_rule_and_from_scheduler() {
        let rule = json!({
            "version": "0", "id": "89d1a02d-5ec7-412e-82f5-13505f849b41",
            "detail-type": "Scheduled Event", "source": "aws.events",
            "account": "123456789012", "time": "2026-01-01T00:15:00Z", "region": "eu-west-1",
            "resources": ["arn:aws:events:eu-west-1:123456789012:rule/export-tick"], "detail": {}
        });
        assert_eq!(
            parse_tick(&rule).unwrap(),
            Tick {
                sweep: Sweep::Export,
                time: Some(at("2026-01-01T00:15:00Z"))
            }
        );
        let daily = json!({"sweep": "retry", "time": "2026-01-01T03:00:00Z"});
        assert_eq!(parse_tick(&daily).unwrap().sweep, Sweep::Retry);
        assert_eq!(parse_tick(&json!({})).unwrap().sweep, Sweep::Export);
        assert!(parse_tick(&json!({"sweep": "everything"})).is_err());
        assert!(parse_tick(&json!({"detail-type": "ExportRequested", "source": "x"})).is_err());
        assert!(parse_tick(&json!([1])).is_err());
    }

    fn job(t: &str, j: &str) -> JobRef {
        JobRef::new(t.parse().unwrap(), j.parse().unwrap())
    }

    async fn tenant(store: &MemoryStore, t: &str, on: bool, jobs: &[&str], now: Timestamp) {
        let tenant: TenantId = t.parse().unwrap();
        let new = Settings {
            export_to_crm: on,
            ..Settings::default()
        };
        let change = SettingsChange {
            version: 1,
            at: now,
            actor: "test".into(),
            old: Settings::default(),
            new,
            acknowledged_data_inconsistency: false,
        };
        let event = Event {
            id: uuid::Uuid::new_v4().to_string(),
            kind: EventKind::SettingsChanged,
            tenant: tenant.clone(),
            job: None,
            at: now,
            detail: json!({}),
        };
        store.put_settings(&tenant, 0, change, event).await.unwrap();
        for j in jobs {
            let def = JobDefinition {
                job_id: j.parse().unwrap(),
                object: "Contact".into(),
                external_id_field: "Ext__c".into(),
                key_field: None,
                key_case_insensitive: false,
                field_map: Default::default(),
            };
            store.put_job(&tenant, def).await.unwrap();
        }
    }

    fn item(key: &str, seq: Seq, last_attempt: Timestamp) -> ExportErrorItem {
        ExportErrorItem {
            key: RecordKey::from_stored(key),
            seq,
            fields: Default::default(),
            error: RecordError::new("FIELD_CUSTOM_VALIDATION_EXCEPTION", "no"),
            status: ErrorStatus::Open,
            attempts: 1,
            retry_attempts: 0,
            first_seen: last_attempt,
            last_seen: last_attempt,
            last_attempt_at: last_attempt,
            resolved_at: None,
            resolved_by_seq: None,
        }
    }

    async fn set_state(
        store: &MemoryStore,
        j: &JobRef,
        state: JobState,
        errors: Vec<ErrorWrite>,
        now: Timestamp,
    ) {
        let lease = store
            .acquire_lease(j, &RunId::random(), now, Duration::from_secs(60))
            .await
            .unwrap()
            .unwrap();
        let commit = Commit {
            state,
            errors,
            events: vec![],
            ..Commit::default()
        };
        store.commit(j, &lease, now, commit).await.unwrap();
        store.release_lease(j, &lease).await.unwrap();
    }

    async fn enqueue(store: &MemoryStore, j: &JobRef, keys: &[&str], at: Timestamp) {
        let records = keys
            .iter()
            .map(|k| NewRecord {
                key: RecordKey::from_stored(*k),
                fields: serde_json::from_value(json!({"Ext__c": k})).unwrap(),
            })
            .collect();
        store.enqueue(j, records, at).await.unwrap();
    }

    #[tokio::test]
    async fn an_export_tick_asks_for_jobs_with_work_and_overdue_retries_only() {
        let store = MemoryStore::new();
        let now = at("2026-01-10T12:00:00Z");
        let two_days_ago = now - chrono::Duration::days(2);
        tenant(
            &store,
            "acme",
            true,
            &["busy", "idle", "halted", "fresh-error"],
            now,
        )
        .await;
        tenant(&store, "globex", false, &["busy"], now).await;
        enqueue(
            &store,
            &job("acme", "busy"),
            &["a", "b"],
            now - chrono::Duration::minutes(30),
        )
        .await;
        enqueue(&store, &job("globex", "busy"), &["a"], now).await;
        // Halted two days ago on seq 1, last retry pass two days ago: overdue.
        let halted = job("acme", "halted");
        enqueue(&store, &halted, &["x"], two_days_ago).await;
        let halt = Halt {
            seq: 1,
            key: RecordKey::from_stored("x"),
            error: RecordError::new("FIELD_CUSTOM_VALIDATION_EXCEPTION", "no"),
            since: two_days_ago,
            attempts: 3,
            last_attempt_at: two_days_ago,
        };
        let state = JobState {
            halt: Some(halt),
            last_retry_completed_at: Some(two_days_ago),
            ..JobState::default()
        };
        set_state(
            &store,
            &halted,
            state,
            vec![ErrorWrite::Put(item("x", 1, two_days_ago))],
            now,
        )
        .await;
        // An error that failed an hour ago, never retried: not overdue yet.
        let fresh = job("acme", "fresh-error");
        let hour_ago = now - chrono::Duration::hours(1);
        enqueue(&store, &fresh, &["y"], hour_ago).await;
        let state = JobState {
            cursor: 1,
            ..JobState::default()
        };
        set_state(
            &store,
            &fresh,
            state,
            vec![ErrorWrite::Put(item("y", 1, hour_ago))],
            now,
        )
        .await;

        let s = survey(&store, now, chrono::Duration::hours(24))
            .await
            .unwrap();
        assert_eq!(s.tenants.len(), 2);
        assert_eq!(s.enabled_tenants.len(), 1, "globex has exporting off");
        assert_eq!(s.jobs.len(), 4);
        let by_name = |n: &str| s.jobs.iter().find(|j| j.job.job.as_str() == n).unwrap();
        assert_eq!(by_name("busy").backlog(), 2);
        assert_eq!(
            by_name("busy").oldest_unexported_at,
            Some(now - chrono::Duration::minutes(30))
        );
        assert_eq!(by_name("halted").halted_since, Some(two_days_ago));
        assert!(by_name("halted").retry_overdue);
        assert_eq!(by_name("fresh-error").open_errors, 1);
        assert!(!by_name("fresh-error").retry_overdue);

        let names = |cmds: Vec<(RunKind, JobCommand)>| -> Vec<String> {
            cmds.into_iter()
                .map(|(k, c)| format!("{:?} {}", k, c.job()))
                .collect()
        };
        assert_eq!(
            names(plan(&s, Sweep::Export)),
            [
                "Export acme/busy",
                "Export acme/halted",
                "Retry acme/halted"
            ]
        );
        assert_eq!(
            names(plan(&s, Sweep::Retry)),
            ["Retry acme/fresh-error", "Retry acme/halted"]
        );
    }

    #[tokio::test]
    async fn a_never_retried_job_is_overdue_once_an_item_is_a_day_old() {
        let store = MemoryStore::new();
        let now = at("2026-01-10T12:00:00Z");
        let old = now - chrono::Duration::hours(25);
        tenant(&store, "acme", true, &["j"], now).await;
        let j = job("acme", "j");
        enqueue(&store, &j, &["k"], old).await;
        let state = JobState {
            cursor: 1,
            ..JobState::default()
        };
        set_state(
            &store,
            &j,
            state,
            vec![ErrorWrite::Put(item("k", 1, old))],
            now,
        )
        .await;
        let s = survey(&store, now, chrono::Duration::hours(24))
            .await
            .unwrap();
        assert!(s.jobs[0].retry_overdue);
        assert!(!s.jobs[0].has_work(), "nothing queued after the cursor");
        assert_eq!(plan(&s, Sweep::Export).len(), 1);
    }
}
