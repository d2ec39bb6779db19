//! The internal commands: `ExportRequested` and `ExportErrorRetryRequested`, EventBridge
//! custom events under the source `crm-export.internal` on the service's bus, one per
//! tenant and job. The dispatcher and the settings API publish them; a rule per type
//! invokes the export or the retry function. They are not part of the public event
//! contract (SPEC §8).
//!
//! A command is only worth running within one schedule interval: after that the next
//! tick has asked again. The targets' event age limits drop older ones, and the handlers
//! check the age again ([`parse_command`]) so a late delivery never runs.

use crate::error::FunctionError;
use crate::sdk::timeouts;
use aws_lambda_events::eventbridge::EventBridgeEvent;
use aws_sdk_eventbridge::primitives::DateTime;
use aws_sdk_eventbridge::types::PutEventsRequestEntry;
use crm_export_aws::SdkTimeouts;
use crm_export_core::engine::RunKind;
use crm_export_core::{JobId, JobRef, RunId, TenantId, Timestamp};
use serde::{Deserialize, Serialize};
use std::time::Duration;

pub const COMMAND_SOURCE: &str = "crm-export.internal";
pub const EXPORT_REQUESTED: &str = "ExportRequested";
pub const RETRY_REQUESTED: &str = "ExportErrorRetryRequested";
/// Entries per `PutEvents` call (API limit).
pub const MAX_ENTRIES_PER_CALL: usize = 10;

/// The `detail-type` of the command that starts a run of this kind.
pub fn detail_type(kind: RunKind) -> &'static str {
    match kind {
        RunKind::Export => EXPORT_REQUESTED,
        RunKind::Retry => RETRY_REQUESTED,
    }
}

/// The `detail` of a command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobCommand {
    pub tenant_id: TenantId,
    pub job_id: JobId,
    /// Set when someone waits for this run (the settings API answers with it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<RunId>,
}

impl JobCommand {
    pub fn for_job(job: &JobRef) -> Self {
        Self {
            tenant_id: job.tenant.clone(),
            job_id: job.job.clone(),
            run_id: None,
        }
    }
    pub fn job(&self) -> JobRef {
        JobRef::new(self.tenant_id.clone(), self.job_id.clone())
    }
}

/// What to do with a received command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received {
    Run(JobCommand),
    /// Older than the limit: the next tick asks again.
    Stale {
        age: Duration,
    },
}

/// Parses the EventBridge event a command rule delivers and checks its age against `now`.
pub fn parse_command(
    payload: serde_json::Value,
    kind: RunKind,
    now: Timestamp,
    max_age: Duration,
) -> Result<Received, FunctionError> {
    let event: EventBridgeEvent<serde_json::Value> = serde_json::from_value(payload)
        .map_err(|e| FunctionError::BadEvent(format!("not an EventBridge event: {e}")))?;
    let expected = detail_type(kind);
    if event.source != COMMAND_SOURCE || event.detail_type != expected {
        return Err(FunctionError::BadEvent(format!(
            "expected {expected} from {COMMAND_SOURCE}, got {:?} from {:?}",
            event.detail_type, event.source
        )));
    }
    let command: JobCommand = serde_json::from_value(event.detail)
        .map_err(|e| FunctionError::BadEvent(format!("bad {expected} detail: {e}")))?;
    // EventBridge always stamps `time`; a command without one cannot be aged, so it is
    // run (the job's lease still keeps runs apart).
    if let Some(time) = event.time {
        let age = (now - time).to_std().unwrap_or_default();
        if age > max_age {
            return Ok(Received::Stale { age });
        }
    }
    Ok(Received::Run(command))
}

/// Publishes commands on the bus, at most ten per `PutEvents` call, re-sending entries
/// that failed on their own a bounded number of times.
#[derive(Debug, Clone)]
pub struct CommandPublisher {
    client: aws_sdk_eventbridge::Client,
    bus: String,
}

impl CommandPublisher {
    pub fn new(sdk: &aws_config::SdkConfig, bus: impl Into<String>, t: &SdkTimeouts) -> Self {
        let (timeout, retry) = timeouts(t);
        let conf = aws_sdk_eventbridge::config::Builder::from(sdk)
            .timeout_config(timeout)
            .retry_config(retry)
            .build();
        Self {
            client: aws_sdk_eventbridge::Client::from_conf(conf),
            bus: bus.into(),
        }
    }

    fn entry(
        &self,
        kind: RunKind,
        command: &JobCommand,
        time: Timestamp,
    ) -> Result<PutEventsRequestEntry, String> {
        let detail = serde_json::to_string(command).map_err(|e| e.to_string())?;
        Ok(PutEventsRequestEntry::builder()
            .event_bus_name(&self.bus)
            .source(COMMAND_SOURCE)
            .detail_type(detail_type(kind))
            .detail(detail)
            .time(DateTime::from_secs_and_nanos(
                time.timestamp(),
                time.timestamp_subsec_nanos(),
            ))
            .build())
    }

    /// Publishes every command, stamped with `time`. Returns how many calls it took.
    pub async fn publish(
        &self,
        commands: &[(RunKind, JobCommand)],
        time: Timestamp,
    ) -> Result<usize, String> {
        let mut calls = 0;
        for chunk in commands.chunks(MAX_ENTRIES_PER_CALL) {
            let mut entries = chunk
                .iter()
                .map(|(k, c)| self.entry(*k, c, time))
                .collect::<Result<Vec<_>, _>>()?;
            let mut attempt = 0;
            loop {
                attempt += 1;
                calls += 1;
                let out = self
                    .client
                    .put_events()
                    .set_entries(Some(entries.clone()))
                    .send()
                    .await
                    .map_err(|e| format!("PutEvents: {}", crate::sdk::describe(&e)))?;
                if out.failed_entry_count() == 0 {
                    break;
                }
                // Results are in request order; a failed entry carries an error code.
                let results = out.entries();
                let failed: Vec<PutEventsRequestEntry> = entries
                    .into_iter()
                    .enumerate()
                    .filter(|(i, _)| results.get(*i).is_none_or(|r| r.error_code().is_some()))
                    .map(|(_, e)| e)
                    .collect();
                if failed.is_empty() {
                    break;
                }
                if attempt >= 4 {
                    return Err(format!(
                        "{} commands not accepted after {attempt} attempts",
                        failed.len()
                    ));
                }
                tracing::warn!(
                    failed = failed.len(),
                    attempt,
                    "PutEvents: re-sending commands that failed"
                );
                tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
                entries = failed;
            }
        }
        Ok(calls)
    }
}

/// The settings API's way to start an ExportError retry run: an
/// `ExportErrorRetryRequested` command carrying the run id the API answered with.
pub struct EventBridgeRetryRequester {
    publisher: CommandPublisher,
}

impl EventBridgeRetryRequester {
    pub fn new(publisher: CommandPublisher) -> Self {
        Self { publisher }
    }
}

#[async_trait::async_trait]
impl crm_export_api::RetryRequester for EventBridgeRetryRequester {
    async fn request_retry(&self, job: &JobRef, run_id: &RunId) -> Result<(), String> {
        let command = JobCommand {
            run_id: Some(run_id.clone()),
            ..JobCommand::for_job(job)
        };
        self.publisher
            .publish(&[(RunKind::Retry, command)], chrono::Utc::now())
            .await
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(detail_type: &str, source: &str, time: &str) -> serde_json::Value {
        json!({
            "version": "0", "id": "6a7e8feb-b491-4cf7-a9f1-bf3703467718",
            "detail-type": detail_type, "source": source, "account": "123456789012",
            "time": time, "region": "eu-west-1", "resources": [],
            "detail": {"tenant_id": "acme", "job_id": "contacts"}
        })
    }

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn a_fresh_command_runs_and_a_stale_one_is_dropped() {
        let now = at("2026-01-01T00:20:00Z");
        let max = Duration::from_secs(900);
        let fresh = event(EXPORT_REQUESTED, COMMAND_SOURCE, "2026-01-01T00:10:00Z");
        match parse_command(fresh, RunKind::Export, now, max).unwrap() {
            Received::Run(c) => assert_eq!(c.job().to_string(), "acme/contacts"),
            other => panic!("{other:?}"),
        }
        let stale = event(EXPORT_REQUESTED, COMMAND_SOURCE, "2026-01-01T00:04:59Z");
        assert_eq!(
            parse_command(stale, RunKind::Export, now, max).unwrap(),
            Received::Stale {
                age: Duration::from_secs(901)
            }
        );
    }

    #[test]
    fn a_command_of_the_other_kind_or_source_is_refused() {
        let now = at("2026-01-01T00:00:00Z");
        let max = Duration::from_secs(900);
        let retry = event(RETRY_REQUESTED, COMMAND_SOURCE, "2026-01-01T00:00:00Z");
        let err = parse_command(retry, RunKind::Export, now, max).unwrap_err();
        assert!(!err.is_retryable());
        let public = event(EXPORT_REQUESTED, "crm-export", "2026-01-01T00:00:00Z");
        assert!(parse_command(public, RunKind::Export, now, max).is_err());
        let mut bad_tenant = event(EXPORT_REQUESTED, COMMAND_SOURCE, "2026-01-01T00:00:00Z");
        bad_tenant["detail"]["tenant_id"] = json!("Not A Tenant");
        assert!(matches!(
            parse_command(bad_tenant, RunKind::Export, now, max),
            Err(FunctionError::BadEvent(_))
        ));
    }

    #[test]
    fn the_run_id_travels_in_the_detail() {
        let c = JobCommand {
            run_id: Some(RunId("r-1".into())),
            ..JobCommand::for_job(&JobRef::new(
                "acme".parse().unwrap(),
                "contacts".parse().unwrap(),
            ))
        };
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(
            v,
            json!({"tenant_id":"acme","job_id":"contacts","run_id":"r-1"})
        );
        let plain = serde_json::to_value(JobCommand::for_job(&c.job())).unwrap();
        assert!(plain.get("run_id").is_none());
    }
}
