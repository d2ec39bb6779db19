//! `crmx status`: where each job stands and why.

use super::{job_definition, job_ref};
use crate::error::CliResult;
use crate::jobs_fmt::describe_job;
use crate::output::{age, when, Outcome};
use crate::state::Local;
use crm_export_core::engine::JobStatus;
use crm_export_core::ports::Clock;
use crm_export_core::{JobId, TenantId, Timestamp};
use serde_json::{json, Value};

pub async fn run(local: &Local, tenant: &TenantId, job: Option<&JobId>) -> CliResult<Outcome> {
    let jobs = match job {
        Some(j) => vec![job_definition(local, tenant, j).await?.job_id],
        None => local
            .store
            .list_jobs(tenant)
            .await?
            .into_iter()
            .map(|d| d.job_id)
            .collect(),
    };
    let mut statuses = Vec::new();
    for j in &jobs {
        statuses.push(job_status(local, &job_ref(tenant, j)).await?);
    }
    let now = local.clock.now();
    let human = if statuses.is_empty() {
        format!("No jobs for tenant {tenant}. Define one with `crmx jobs define`.")
    } else {
        statuses
            .iter()
            .map(|s| human_status(s, now))
            .collect::<Vec<_>>()
            .join("\n\n")
    };
    let json = json!({
        "tenant": tenant,
        "jobs": statuses.iter().map(|s| status_json(s, now)).collect::<Vec<_>>(),
    });
    Ok(Outcome::ok(human, json))
}

pub async fn job_status(local: &Local, job: &crm_export_core::JobRef) -> CliResult<JobStatus> {
    Ok(local.operator().job_status(job).await?)
}

/// One word for where a job stands.
pub fn state_word(s: &JobStatus) -> &'static str {
    if s.block.is_some() {
        "blocked"
    } else if s.halt.is_some() {
        "halted"
    } else if s.backlog > 0 {
        "behind"
    } else {
        "up_to_date"
    }
}

fn secs_since(t: Option<Timestamp>, now: Timestamp) -> Option<i64> {
    t.map(|t| (now - t).num_seconds().max(0))
}

pub fn status_json(s: &JobStatus, now: Timestamp) -> Value {
    let mut v = serde_json::to_value(s).unwrap_or_default();
    v["state"] = json!(state_word(s));
    v["oldest_unexported_age_secs"] = json!(secs_since(s.oldest_unexported_at, now));
    v["halt_age_secs"] = json!(secs_since(s.halt.as_ref().map(|h| h.since), now));
    v["block_age_secs"] = json!(secs_since(s.block.as_ref().map(|b| b.since), now));
    v
}

pub fn human_status(s: &JobStatus, now: Timestamp) -> String {
    let on = |b: bool| if b { "on" } else { "off" };
    let mut out = format!(
        "job {} ({}): {}\n",
        s.job,
        describe_job(&s.definition),
        state_word(s).to_uppercase().replace('_', " ")
    );
    out.push_str(&format!(
        "  export_to_crm {}, pause on export errors {}\n",
        on(s.export_to_crm),
        if s.export_to_crm {
            on(s.pause_on_export_errors)
        } else {
            "(hidden while export_to_crm is off)"
        }
    ));
    out.push_str(&format!(
        "  cursor {} of {} queued, backlog {} records",
        s.cursor, s.head, s.backlog
    ));
    if let Some(t) = s.oldest_unexported_at {
        out.push_str(&format!(
            ", oldest un-exported record queued {} ago",
            age(now - t)
        ));
    }
    out.push('\n');
    match &s.halt {
        Some(h) => {
            out.push_str(&format!(
                "  halted on record {} (seq {}) since {} ({} ago), {} attempt{}, last {}\n",
                h.key,
                h.seq,
                when(Some(h.since)),
                age(now - h.since),
                h.attempts,
                if h.attempts == 1 { "" } else { "s" },
                when(Some(h.last_attempt_at)),
            ));
            out.push_str(&format!("    {}: {}", h.error.code, h.error.message));
            if !h.error.fields.is_empty() {
                out.push_str(&format!(" [{}]", h.error.fields.join(", ")));
            }
            out.push('\n');
        }
        None => out.push_str("  not halted\n"),
    }
    if let Some(b) = &s.block {
        out.push_str(&format!(
            "  BLOCKED ({}) since {} ({} ago), {} attempts: {}: {}\n",
            b.reason.as_str(),
            when(Some(b.since)),
            age(now - b.since),
            b.attempts,
            b.code,
            b.message
        ));
    }
    out.push_str(&format!(
        "  ExportErrors: {} open, {} parked\n",
        s.open_errors, s.parked_errors
    ));
    out.push_str(&format!(
        "  last run {}, last retry pass {}",
        when(s.last_run_at),
        when(s.last_retry_completed_at)
    ));
    out
}
