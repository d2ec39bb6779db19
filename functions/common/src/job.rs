//! The export and the ExportError retry functions: one command, one run of one tenant's
//! job, stopped in time by the invocation's deadline.

use crate::commands::{parse_command, Received};
use crate::config::FunctionConfig;
use crate::crm::{CrmFactory, LazyCrm};
use crate::emf::{Metrics, Unit};
use crate::error::FunctionError;
use crate::secrets::TenantSecrets;
use crm_export_aws::{DynamoStore, EventBridgePublisher};
use crm_export_core::engine::{Engine, EngineConfig, RunKind, RunOptions, RunReport};
use crm_export_core::ports::SystemClock;
use crm_export_core::Timestamp;
use lambda_runtime::{Context, LambdaEvent};
use serde_json::{json, Value};
use std::time::{Duration, SystemTime};
use tracing::Instrument;

/// The run's deadline: the invocation's, less the margin kept for the final commit and
/// the metrics.
pub fn run_deadline(context: &Context, margin: Duration) -> Timestamp {
    let deadline = context
        .deadline()
        .checked_sub(margin)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    Timestamp::from(deadline)
}

pub fn kind_name(kind: RunKind) -> &'static str {
    match kind {
        RunKind::Export => "export",
        RunKind::Retry => "retry",
    }
}

/// The metrics of one finished run (SPEC §8): records exported, record errors, API calls,
/// run duration, and a count by outcome (halted and blocked among them).
pub fn run_metrics(metrics: &Metrics, report: &RunReport) {
    let kind = kind_name(report.kind);
    let c = &report.counts;
    let duration_ms = (report.finished_at - report.started_at)
        .num_milliseconds()
        .max(0) as f64;
    let props = |doc: crate::emf::Doc| {
        doc.property("TenantId", report.job.tenant.as_str())
            .property("JobId", report.job.job.as_str())
            .property("RunId", report.run_id.0.as_str())
            .property("Outcome", report.outcome.name())
            .property("CursorBefore", report.cursor_before)
            .property("CursorAfter", report.cursor_after)
    };
    metrics.emit(&props(
        metrics
            .doc()
            .dimension("RunKind", kind)
            .count("RecordsSent", c.sent)
            .count("RecordsExported", c.accepted)
            .count("RecordsSuperseded", c.superseded)
            .count("RecordErrors", c.record_errors)
            .count("ErrorsResolved", c.errors_resolved)
            .count("ErrorsParked", c.errors_parked)
            .count("ApiCalls", c.api_calls)
            .count("Batches", c.batches)
            .metric("RunDuration", Unit::Milliseconds, duration_ms),
    ));
    metrics.emit(&props(
        metrics
            .doc()
            .dimension("RunKind", kind)
            .dimension("Outcome", report.outcome.name())
            .count("Runs", 1),
    ));
}

/// The dependencies of the export and retry functions, built once at cold start.
pub struct JobFunction {
    pub kind: RunKind,
    config: FunctionConfig,
    store: DynamoStore,
    events: EventBridgePublisher,
    crm: CrmFactory,
    metrics: Metrics,
    engine: EngineConfig,
}

impl JobFunction {
    /// Reads the configuration and builds the clients (`AWS_ENDPOINT_URL` honoured).
    pub async fn from_env(kind: RunKind) -> Result<Self, crate::config::ConfigError> {
        let config = FunctionConfig::from_env()?;
        let sdk = crm_export_aws::load_sdk_config().await;
        Ok(Self::new(kind, config, &sdk))
    }

    pub fn new(kind: RunKind, config: FunctionConfig, sdk: &aws_config::SdkConfig) -> Self {
        let store = DynamoStore::new(sdk, config.dynamo.clone());
        let events = EventBridgePublisher::new(sdk, config.events.clone());
        let secrets = TenantSecrets::new(sdk, config.secret_prefix.clone(), &config.sdk_timeouts);
        let crm = CrmFactory::new(secrets, config.secret_cache_ttl, config.credential_settle);
        let metrics = Metrics::new(
            config.metrics_namespace.clone(),
            config.service_name.clone(),
            config.metrics_job_dimensions,
        );
        Self {
            kind,
            config,
            store,
            events,
            crm,
            metrics,
            engine: EngineConfig::default(),
        }
    }

    /// Handles one command event.
    pub async fn handle(&self, event: LambdaEvent<Value>) -> Result<Value, FunctionError> {
        let kind = kind_name(self.kind);
        let now = chrono::Utc::now();
        let command = match parse_command(
            event.payload,
            self.kind,
            now,
            self.config.command_max_age,
        ) {
            Ok(Received::Run(c)) => c,
            Ok(Received::Stale { age }) => {
                tracing::warn!(
                    kind,
                    age_s = age.as_secs(),
                    max_age_s = self.config.command_max_age.as_secs(),
                    "command older than the schedule interval dropped; the next tick asks again"
                );
                self.metrics.emit(
                    &self
                        .metrics
                        .doc()
                        .dimension("RunKind", kind)
                        .count("CommandsDropped", 1),
                );
                return Ok(
                    json!({"status": "dropped", "reason": "stale", "age_seconds": age.as_secs()}),
                );
            }
            Err(e) => {
                tracing::error!(kind, code = e.code(), error = %e, "event refused");
                return Err(e);
            }
        };
        let job = command.job();
        let mut opts = RunOptions::new(run_deadline(&event.context, self.config.deadline_margin));
        if let Some(run_id) = command.run_id {
            opts.run_id = run_id;
        }
        let span = tracing::info_span!(
            "run",
            tenant = %job.tenant,
            job = %job.job,
            run_id = %opts.run_id,
            kind,
        );
        async {
            let crm = LazyCrm::new(&self.crm, job.tenant.clone());
            let engine = Engine::new(&self.store, &crm, &self.events, &SystemClock, &self.engine);
            let result = match self.kind {
                RunKind::Export => engine.run_export(&job, &opts).await,
                RunKind::Retry => engine.run_retry(&job, &opts).await,
            };
            match result {
                Ok(report) => {
                    run_metrics(&self.metrics, &report);
                    Ok(serde_json::to_value(&report).unwrap_or_else(|e| json!({"error": e.to_string()})))
                }
                Err(e) => {
                    let e = FunctionError::from(e);
                    tracing::error!(code = e.code(), retryable = e.is_retryable(), error = %e, "run could not be carried out");
                    self.metrics.emit(
                        &self
                            .metrics
                            .doc()
                            .dimension("RunKind", kind)
                            .count("RunErrors", 1)
                            .property("TenantId", job.tenant.as_str())
                            .property("JobId", job.job.as_str())
                            .property("Code", e.code()),
                    );
                    Err(e)
                }
            }
        }
        .instrument(span)
        .await
    }
}
