//! `crmx enqueue`: every record of a file is checked first, then all are queued in one
//! all-or-nothing store call.

use super::{job_definition, job_ref};
use crate::cli::FileFormat;
use crate::error::CliResult;
use crate::input;
use crate::output::Outcome;
use crate::state::Local;
use crm_export_core::ports::Clock;
use crm_export_core::{JobId, JobRef, NewRecord, Seq, TenantId};
use serde::Serialize;
use std::collections::HashSet;
use std::path::Path;

#[derive(Debug, Clone, Serialize)]
pub struct Enqueued {
    pub job: JobRef,
    pub records: usize,
    pub distinct_keys: usize,
    pub first_seq: Seq,
    pub last_seq: Seq,
}

pub async fn run(
    local: &Local,
    tenant: &TenantId,
    job: &JobId,
    file: &Path,
    format: FileFormat,
) -> CliResult<Outcome> {
    let def = job_definition(local, tenant, job).await?;
    let records = input::read_file(file, format, &def)?;
    let done = enqueue(local, &job_ref(tenant, job), records).await?;
    let human = format!(
        "Enqueued {} records ({} distinct keys) for {} from {}: seq {}..{}.",
        done.records,
        done.distinct_keys,
        done.job,
        file.display(),
        done.first_seq,
        done.last_seq
    );
    Ok(Outcome::ok(
        human,
        serde_json::to_value(&done).unwrap_or_default(),
    ))
}

/// Queues checked records in one store call (all or nothing).
pub async fn enqueue(local: &Local, job: &JobRef, records: Vec<NewRecord>) -> CliResult<Enqueued> {
    let count = records.len();
    let distinct_keys = records
        .iter()
        .map(|r| r.key.clone())
        .collect::<HashSet<_>>()
        .len();
    let seqs = local.store.enqueue(job, records, local.clock.now()).await?;
    Ok(Enqueued {
        job: job.clone(),
        records: count,
        distinct_keys,
        first_seq: seqs.first().copied().unwrap_or_default(),
        last_seq: seqs.last().copied().unwrap_or_default(),
    })
}
