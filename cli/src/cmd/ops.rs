//! `crmx skip-halted` and `crmx reopen`: operator actions, done by the engine under the
//! job's lease.

use super::{job_definition, job_ref};
use crate::error::{CliError, CliResult};
use crate::output::Outcome;
use crate::state::Local;
use crm_export_core::{JobId, RecordKey, TenantId};
use serde_json::json;

pub async fn skip_halted(
    local: &Local,
    tenant: &TenantId,
    job: &JobId,
    actor: &str,
    acknowledged: bool,
) -> CliResult<Outcome> {
    job_definition(local, tenant, job).await?;
    let job = job_ref(tenant, job);
    let item = local
        .operator()
        .skip_halted(&job, actor, acknowledged)
        .await?;
    Ok(Outcome::ok(
        format!(
            "Skipped the halted record {} (seq {}) of {job}: its ExportErrors item is parked \
             ({}: {}). The next export run goes on after it; `crmx reopen --job {} {}` retries it.",
            item.key, item.seq, item.error.code, item.error.message, job.job, item.key
        ),
        json!({"job": job, "key": item.key, "seq": item.seq, "status": item.status.as_str()}),
    ))
}

pub async fn reopen(
    local: &Local,
    tenant: &TenantId,
    job: &JobId,
    key: &str,
    actor: &str,
) -> CliResult<Outcome> {
    let def = job_definition(local, tenant, job).await?;
    // The key is folded as the job folds keys, so `ABC` finds the item of `abc`.
    let key = RecordKey::from_external_id(key, def.key_case_insensitive)
        .ok_or_else(|| CliError::bad_input("the record key must not be empty"))?;
    let job = job_ref(tenant, job);
    let item = local.operator().reopen_error(&job, &key, actor).await?;
    Ok(Outcome::ok(
        format!(
            "Re-opened the ExportErrors item of {} (seq {}) in {job}: the next retry run sends it.",
            item.key, item.seq
        ),
        json!({"job": job, "key": item.key, "seq": item.seq, "status": item.status.as_str()}),
    ))
}
