//! `crmx errors`: a job's ExportErrors items. Record values are personal data: only their
//! field names are shown unless `--include-values` is given.

use super::{job_definition, job_ref};
use crate::error::CliResult;
use crate::output::{when, Outcome};
use crate::state::Local;
use crm_export_core::ports::ErrorFilter;
use crm_export_core::{ExportErrorItem, JobId, TenantId};
use serde_json::{json, Value};

pub async fn run(
    local: &Local,
    tenant: &TenantId,
    job: &JobId,
    filter: &ErrorFilter,
    limit: usize,
    include_values: bool,
) -> CliResult<Outcome> {
    job_definition(local, tenant, job).await?;
    let job = job_ref(tenant, job);
    let page = local.store.list_errors(&job, filter, None, limit).await?;
    let more = page.next.is_some();
    let items: Vec<Value> = page
        .items
        .iter()
        .map(|i| item_json(i, include_values))
        .collect();
    let mut human = if page.items.is_empty() {
        format!("No ExportErrors items for {job} match.")
    } else {
        let mut s = format!("ExportErrors of {job} (newest last attempt first):");
        for i in &page.items {
            s.push('\n');
            s.push_str(&item_human(i, include_values));
        }
        s
    };
    if more {
        human.push_str(&format!(
            "\n(more items: raise --limit above {limit} or filter by --status / --code)"
        ));
    }
    Ok(Outcome::ok(
        human,
        json!({"job": job, "items": items, "more": more}),
    ))
}

fn item_json(i: &ExportErrorItem, include_values: bool) -> Value {
    let mut v = json!({
        "key": i.key,
        "seq": i.seq,
        "status": i.status.as_str(),
        "error": i.error,
        "attempts": i.attempts,
        "retry_attempts": i.retry_attempts,
        "first_seen": i.first_seen,
        "last_seen": i.last_seen,
        "last_attempt_at": i.last_attempt_at,
        "resolved_at": i.resolved_at,
        "resolved_by_seq": i.resolved_by_seq,
        "field_names": i.fields.keys().collect::<Vec<_>>(),
    });
    if include_values {
        v["fields"] = Value::Object(i.fields.clone());
    }
    v
}

fn item_human(i: &ExportErrorItem, include_values: bool) -> String {
    let mut s = format!(
        "  {} (seq {}) {}: {}: {}",
        i.key,
        i.seq,
        i.status.as_str(),
        i.error.code,
        i.error.message
    );
    if !i.error.fields.is_empty() {
        s.push_str(&format!(" [{}]", i.error.fields.join(", ")));
    }
    s.push_str(&format!(
        "\n      {} attempts ({} in retry runs), first seen {}, last attempt {}",
        i.attempts,
        i.retry_attempts,
        when(Some(i.first_seen)),
        when(Some(i.last_attempt_at))
    ));
    if let Some(r) = i.resolved_at {
        s.push_str(&format!(", resolved {}", when(Some(r))));
    }
    if include_values {
        s.push_str(&format!(
            "\n      values: {}",
            serde_json::to_string(&i.fields).unwrap_or_default()
        ));
    } else {
        s.push_str(&format!(
            "\n      fields: {}",
            i.fields.keys().cloned().collect::<Vec<_>>().join(", ")
        ));
    }
    s
}
