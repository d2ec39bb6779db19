//! `crmx jobs define` and `crmx jobs list`.

use crate::error::CliResult;
use crate::jobs_fmt::describe_job;
use crate::output::Outcome;
use crate::state::Local;
use crm_export_core::{JobDefinition, TenantId};
use serde_json::json;

pub async fn define(local: &Local, tenant: &TenantId, def: &JobDefinition) -> CliResult<Outcome> {
    let previous = local.store.get_job(tenant, &def.job_id).await?;
    local.store.put_job(tenant, def.clone()).await?;
    let verb = match &previous {
        None => "Defined",
        Some(p) if p == def => "Unchanged",
        Some(_) => "Redefined",
    };
    let human = format!(
        "{verb} job {}/{}: {}",
        tenant,
        def.job_id,
        describe_job(def)
    );
    Ok(Outcome::ok(
        human,
        json!({"tenant": tenant, "job": def, "created": previous.is_none()}),
    ))
}

pub async fn list(local: &Local, tenant: &TenantId) -> CliResult<Outcome> {
    let jobs = local.store.list_jobs(tenant).await?;
    let human = if jobs.is_empty() {
        format!("No jobs for tenant {tenant}. Define one with `crmx jobs define`.")
    } else {
        jobs.iter()
            .map(|d| format!("{:<20} {}", d.job_id, describe_job(d)))
            .collect::<Vec<_>>()
            .join("\n")
    };
    Ok(Outcome::ok(human, json!({"tenant": tenant, "jobs": jobs})))
}
