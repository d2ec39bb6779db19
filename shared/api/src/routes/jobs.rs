//! `/v1/jobs`: list, status, ExportErrors, on-demand retry runs and the operator actions
//! (skip the halted record, re-open a parked item). Every job is looked up under the
//! caller's tenant, so another tenant's job is simply not there (404).

use super::{page_error, page_limit, page_token};
use crate::auth::{Caller, Writer};
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::state::ApiState;
use crate::views::{ExportErrorView, JobStatusView, PageView, RetryRunView};
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use crm_export_core::engine::OpsError;
use crm_export_core::ports::ErrorFilter;
use crm_export_core::{ErrorStatus, JobDefinition, JobId, JobRef, RecordKey, RunId};
use serde::Deserialize;

/// The job's definition under the caller's tenant; 404 when there is none.
async fn job_of(
    state: &ApiState,
    caller: &Caller,
    job: JobId,
) -> Result<(JobRef, JobDefinition), ApiError> {
    let job = JobRef::new(caller.tenant.clone(), job);
    match state.store.get_job(&job.tenant, &job.job).await? {
        Some(def) => Ok((job, def)),
        None => Err(OpsError::UnknownJob(job).into()),
    }
}

pub async fn list_jobs(
    State(state): State<ApiState>,
    caller: Caller,
) -> Result<Json<PageView<JobStatusView>>, ApiError> {
    let defs = state.store.list_jobs(&caller.tenant).await?;
    let engine = state.operator();
    let now = state.clock.now();
    let mut items = Vec::with_capacity(defs.len());
    for def in defs {
        let job = JobRef::new(caller.tenant.clone(), def.job_id);
        match engine.job_status(&job).await {
            Ok(s) => items.push(JobStatusView::new(&s, now)),
            // Deleted between the listing and the status read.
            Err(OpsError::UnknownJob(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(Json(PageView {
        items,
        next_page_token: None,
    }))
}

pub async fn get_job(
    State(state): State<ApiState>,
    caller: Caller,
    ApiPath(job): ApiPath<JobId>,
) -> Result<Json<JobStatusView>, ApiError> {
    let job = JobRef::new(caller.tenant, job);
    let status = state.operator().job_status(&job).await?;
    Ok(Json(JobStatusView::new(&status, state.clock.now())))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorsQuery {
    status: Option<ErrorStatus>,
    code: Option<String>,
    limit: Option<u32>,
    page_token: Option<String>,
    include_values: Option<bool>,
}

/// The longest error code accepted as a filter (Salesforce codes are far shorter).
const MAX_CODE_LEN: usize = 200;

pub async fn list_errors(
    State(state): State<ApiState>,
    caller: Caller,
    ApiPath(job): ApiPath<JobId>,
    ApiQuery(q): ApiQuery<ErrorsQuery>,
) -> Result<Json<PageView<ExportErrorView>>, ApiError> {
    let limit = page_limit(q.limit)?;
    let token = page_token(q.page_token.as_deref())?;
    if let Some(code) = &q.code {
        if code.is_empty() || code.len() > MAX_CODE_LEN {
            return Err(ApiError::bad_request(
                "invalid_query",
                format!("code must be 1 to {MAX_CODE_LEN} characters"),
            ));
        }
    }
    let (job, _) = job_of(&state, &caller, job).await?;
    let filter = ErrorFilter {
        status: q.status,
        code: q.code,
    };
    let page = state
        .store
        .list_errors(&job, &filter, token, limit)
        .await
        .map_err(page_error)?;
    let include_values = q.include_values.unwrap_or(false);
    if include_values {
        // Record values are personal data: who asked for them is worth an audit line.
        tracing::info!(tenant = %job.tenant, job = %job.job, actor = %caller.actor, items = page.items.len(), "ExportErrors read with record values");
    }
    Ok(Json(PageView {
        items: page
            .items
            .iter()
            .map(|i| ExportErrorView::new(i, include_values))
            .collect(),
        next_page_token: page.next,
    }))
}

pub async fn request_retry_run(
    State(state): State<ApiState>,
    Writer(caller): Writer,
    ApiPath(job): ApiPath<JobId>,
) -> Result<(StatusCode, Json<RetryRunView>), ApiError> {
    let (job, _) = job_of(&state, &caller, job).await?;
    let settings = state
        .store
        .get_settings(&job.tenant)
        .await?
        .map(|v| v.settings)
        .unwrap_or_default();
    if !settings.export_to_crm {
        return Err(ApiError::conflict(
            "export_disabled",
            "export_to_crm is off, so a retry run would do nothing; turn it on first",
        ));
    }
    let run_id = RunId::random();
    state
        .retry
        .request_retry(&job, &run_id)
        .await
        .map_err(|reason| {
            tracing::warn!(%job, %reason, "requesting a retry run failed");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "retry_unavailable",
                "the retry run could not be requested; nothing was started, try again shortly",
            )
        })?;
    tracing::info!(%job, %run_id, actor = %caller.actor, "retry run requested");
    Ok((
        StatusCode::ACCEPTED,
        Json(RetryRunView {
            run_id: run_id.0,
            job_id: job.job.as_str().to_string(),
            status: "requested",
        }),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SkipBody {
    #[serde(default)]
    acknowledge_data_inconsistency: bool,
}

pub async fn skip_halted(
    State(state): State<ApiState>,
    Writer(caller): Writer,
    ApiPath(job): ApiPath<JobId>,
    ApiJson(body): ApiJson<SkipBody>,
) -> Result<Json<ExportErrorView>, ApiError> {
    let job = JobRef::new(caller.tenant, job);
    let item = state
        .operator()
        .skip_halted(&job, &caller.actor, body.acknowledge_data_inconsistency)
        .await?;
    Ok(Json(ExportErrorView::new(&item, false)))
}

pub async fn reopen_error(
    State(state): State<ApiState>,
    Writer(caller): Writer,
    ApiPath((job, key)): ApiPath<(JobId, String)>,
) -> Result<Json<ExportErrorView>, ApiError> {
    let job = JobRef::new(caller.tenant, job);
    let key = RecordKey::from_stored(key);
    let item = state
        .operator()
        .reopen_error(&job, &key, &caller.actor)
        .await?;
    Ok(Json(ExportErrorView::new(&item, false)))
}
