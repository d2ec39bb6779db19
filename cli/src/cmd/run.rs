//! `crmx export` and `crmx retry-errors`: one run of one job against a CRM, with the
//! deadline passed to the engine as a plain timestamp (as the Lambda does).

use super::{job_definition, job_ref};
use crate::config::{Config, CrmTarget};
use crate::crm;
use crate::error::{CliResult, Exit};
use crate::output::Outcome;
use crate::progress::RunProgress;
use crate::state::Local;
use crm_export_core::engine::{Engine, RunKind, RunOptions, RunOutcome, RunReport};
use crm_export_core::ports::{Clock, CrmClient};
use crm_export_core::{ErrorStatus, JobId, JobRef};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

pub async fn run(
    cfg: &Config,
    local: &Local,
    kind: RunKind,
    job: &JobId,
    target: &CrmTarget,
    max_duration: Duration,
) -> CliResult<Outcome> {
    // An unknown job is "not found" before anything connects anywhere.
    job_definition(local, &cfg.tenant, job).await?;
    let client = crm::client(target)?;
    let job = job_ref(&cfg.tenant, job);
    let report = run_once(
        local,
        &client,
        kind,
        &job,
        max_duration,
        cfg.output.chatty(),
    )
    .await?;
    Ok(report_outcome(&report, &local.published()))
}

/// One run, with a progress bar when asked for and possible.
pub async fn run_once(
    local: &Local,
    crm: &dyn CrmClient,
    kind: RunKind,
    job: &JobRef,
    max_duration: Duration,
    show_progress: bool,
) -> CliResult<RunReport> {
    let engine = Engine::new(
        local.store.as_ref(),
        crm,
        &local.events,
        &local.clock,
        &local.engine,
    );
    let deadline = local.clock.now()
        + chrono::Duration::from_std(max_duration).unwrap_or(chrono::Duration::MAX);
    let mut opts = RunOptions::new(deadline);
    let progress = if show_progress {
        progress_for(local, kind, job).await?
    } else {
        None
    };
    if let Some(p) = &progress {
        opts = opts.with_observer(p.clone());
    }
    // Ctrl-C stops the run at the next batch boundary: cursor committed, lease released
    // (a second Ctrl-C aborts at once).
    let stop = opts.stop.clone();
    let interrupt = tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("stopping after the current batch (Ctrl-C again to abort)");
            stop.store(true, std::sync::atomic::Ordering::SeqCst);
            if tokio::signal::ctrl_c().await.is_ok() {
                std::process::exit(130);
            }
        }
    });
    let report = match kind {
        RunKind::Export => engine.run_export(job, &opts).await,
        RunKind::Retry => engine.run_retry(job, &opts).await,
    };
    interrupt.abort();
    if let Some(p) = &progress {
        p.finish();
    }
    Ok(report?)
}

async fn progress_for(
    local: &Local,
    kind: RunKind,
    job: &JobRef,
) -> CliResult<Option<Arc<RunProgress>>> {
    let cursor = local.store.load_state(job).await?.cursor;
    let total = match kind {
        RunKind::Export => local.store.head(job).await?.saturating_sub(cursor),
        RunKind::Retry => local.store.count_errors(job, ErrorStatus::Open).await?,
    };
    Ok(RunProgress::new(kind, total, cursor).map(Arc::new))
}

/// The exit code of a run's outcome (see `error::Exit`).
pub fn exit_of(outcome: &RunOutcome) -> Exit {
    match outcome {
        RunOutcome::Completed => Exit::Ok,
        RunOutcome::Disabled => Exit::Disabled,
        RunOutcome::Halted { .. } => Exit::Halted,
        RunOutcome::Blocked { .. } => Exit::Blocked,
        RunOutcome::AlreadyRunning
        | RunOutcome::TenantBusy
        | RunOutcome::DeadlineReached
        | RunOutcome::BudgetExhausted { .. }
        | RunOutcome::RequestFailed { .. }
        | RunOutcome::LeaseLost => Exit::StoppedEarly,
    }
}

/// One line saying how a run ended, for people.
pub fn outcome_line(r: &RunReport) -> String {
    let what = match r.kind {
        RunKind::Export => "export run",
        RunKind::Retry => "ExportError retry run",
    };
    let how = match &r.outcome {
        RunOutcome::Completed => "completed".to_owned(),
        RunOutcome::Disabled => {
            "did nothing: export_to_crm is off (crmx settings set --export-to-crm on)".to_owned()
        }
        RunOutcome::AlreadyRunning => "not started: another run holds the job's lease".into(),
        RunOutcome::TenantBusy => {
            "not started: the tenant's other jobs hold all its request slots (max_in_flight)".into()
        }
        RunOutcome::Halted { key, seq, code } => {
            format!("HALTED on record {key} (seq {seq}): {code}")
        }
        RunOutcome::Blocked { reason, code } => {
            format!("BLOCKED ({}): {code}", reason.as_str())
        }
        RunOutcome::DeadlineReached => "stopped at its deadline; the next run goes on".into(),
        RunOutcome::BudgetExhausted { code } => format!("stopped: API budget spent ({code})"),
        RunOutcome::RequestFailed { code, message } => {
            format!("stopped: the CRM failed the request ({code}: {message})")
        }
        RunOutcome::LeaseLost => "stopped: another runner took the job over".into(),
    };
    format!("{what} of {}: {how}", r.job)
}

/// The counts of a run, for people.
pub fn counts_line(r: &RunReport) -> String {
    let c = &r.counts;
    let mut s = format!(
        "sent {}, accepted {}, superseded {}, record errors {}, errors resolved {}",
        c.sent, c.accepted, c.superseded, c.record_errors, c.errors_resolved
    );
    if c.errors_parked > 0 || c.errors_skipped > 0 {
        s.push_str(&format!(
            ", parked {}, left to the export run {}",
            c.errors_parked, c.errors_skipped
        ));
    }
    if c.transient_retries > 0 || c.split_requests > 0 {
        s.push_str(&format!(
            ", transient retries {}, split requests {}",
            c.transient_retries, c.split_requests
        ));
    }
    s.push_str(&format!(
        "; {} batches, {} API calls",
        c.batches, c.api_calls
    ));
    s
}

pub fn report_outcome(report: &RunReport, events: &[String]) -> Outcome {
    let secs = (report.finished_at - report.started_at).num_milliseconds() as f64 / 1000.0;
    let mut human = format!(
        "{}\n  {}\n  cursor {} -> {} in {secs:.1}s",
        outcome_line(report),
        counts_line(report),
        report.cursor_before,
        report.cursor_after
    );
    if let RunOutcome::Halted { .. } | RunOutcome::Blocked { .. } = report.outcome {
        human.push_str(&format!(
            "\n  see `crmx status --job {}` and `crmx errors --job {}`",
            report.job.job, report.job.job
        ));
    }
    let json =
        json!({"report": report, "events": events, "exit_code": exit_of(&report.outcome).code()});
    Outcome::ok(human, json).with_exit(exit_of(&report.outcome))
}
