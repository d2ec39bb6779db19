//! One module per command; each takes the validated configuration and returns an
//! [`Outcome`] or a [`CliError`].

pub mod demo;
pub mod enqueue;
pub mod errors;
pub mod jobs;
pub mod ops;
pub mod run;
pub mod settings;
pub mod sim;
pub mod status;

use crate::config::{Cmd, Config};
use crate::error::{CliError, CliResult};
use crate::output::Outcome;
use crate::state::Local;
use crm_export_core::{JobDefinition, JobId, JobRef, TenantId};

pub async fn run(cfg: Config) -> CliResult<Outcome> {
    // The simulator has no state and the demo makes a fresh one; the others share the store.
    let open = || Local::open(&cfg.state.backend);
    let tenant = &cfg.tenant;
    match &cfg.command {
        Cmd::Sim {
            org,
            port,
            tls,
            latency_ms,
        } => sim::run(&cfg, org.as_deref(), *port, *tls, *latency_ms).await,
        Cmd::Demo => demo::run(&cfg).await,
        Cmd::Enqueue { job, file, format } => {
            enqueue::run(&open().await?, tenant, job, file, *format).await
        }
        Cmd::JobsDefine(def) => jobs::define(&open().await?, tenant, def).await,
        Cmd::JobsList => jobs::list(&open().await?, tenant).await,
        Cmd::Run {
            kind,
            job,
            crm,
            max_duration,
        } => run::run(&cfg, &open().await?, *kind, job, crm, *max_duration).await,
        Cmd::Status { job } => status::run(&open().await?, tenant, job.as_ref()).await,
        Cmd::Errors {
            job,
            filter,
            limit,
            include_values,
        } => errors::run(&open().await?, tenant, job, filter, *limit, *include_values).await,
        Cmd::SettingsShow => settings::show(&open().await?, tenant).await,
        Cmd::SettingsSet { patch, if_version } => {
            settings::set(&open().await?, tenant, &cfg.actor, patch, *if_version).await
        }
        Cmd::SettingsHistory { limit } => settings::history(&open().await?, tenant, *limit).await,
        Cmd::SkipHalted { job, acknowledged } => {
            ops::skip_halted(&open().await?, tenant, job, &cfg.actor, *acknowledged).await
        }
        Cmd::Reopen { job, key } => ops::reopen(&open().await?, tenant, job, key, &cfg.actor).await,
    }
}

/// The job's definition, or "not found" (exit 4) naming the tenant.
pub async fn job_definition(
    local: &Local,
    tenant: &TenantId,
    job: &JobId,
) -> CliResult<JobDefinition> {
    local.store.get_job(tenant, job).await?.ok_or_else(|| {
        CliError::not_found(
            "unknown_job",
            format!("job {job} is not defined for tenant {tenant} (see `crmx jobs list`, `crmx jobs define`)"),
        )
    })
}

pub fn job_ref(tenant: &TenantId, job: &JobId) -> JobRef {
    JobRef::new(tenant.clone(), job.clone())
}
