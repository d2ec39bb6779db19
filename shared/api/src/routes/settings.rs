//! `/v1/settings`: read, change (optimistic concurrency, history, `SettingsChanged`) and
//! the change history. The rules are the domain's `apply_patch`, shared with the CLI.

use super::{page_limit, page_token};
use crate::auth::{Caller, Writer};
use crate::error::{version_conflict, ApiError};
use crate::extract::{ApiJson, ApiQuery, IfMatch};
use crate::state::ApiState;
use crate::views::{HistoryEntryView, PageView, SettingsResponse};
use axum::extract::State;
use axum::http::header::ETAG;
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use axum::Json;
use crm_export_core::engine::{
    change_settings, current_settings, publish_outbox, ChangeSettingsError,
};
use crm_export_core::{SettingsPatch, TenantId, VersionedSettings};
use serde::Deserialize;

async fn current(state: &ApiState, tenant: &TenantId) -> Result<VersionedSettings, ApiError> {
    Ok(current_settings(&*state.store, tenant).await?)
}

fn with_etag(body: SettingsResponse) -> Response {
    let etag = HeaderValue::from_str(&format!("\"{}\"", body.version))
        .expect("a quoted number is a valid header value");
    ([(ETAG, etag)], Json(body)).into_response()
}

pub async fn get_settings(
    State(state): State<ApiState>,
    caller: Caller,
) -> Result<Response, ApiError> {
    let cur = current(&state, &caller.tenant).await?;
    Ok(with_etag(SettingsResponse::new(&cur.settings, cur.version)))
}

pub async fn patch_settings(
    State(state): State<ApiState>,
    Writer(caller): Writer,
    IfMatch(expected): IfMatch,
    ApiJson(patch): ApiJson<SettingsPatch>,
) -> Result<Response, ApiError> {
    let now = state.clock.now();
    let changed = change_settings(
        &*state.store,
        &caller.tenant,
        Some(expected),
        &patch,
        &caller.actor,
        now,
    )
    .await
    .map_err(|e| match e {
        ChangeSettingsError::Rule(rule) => ApiError::from(rule),
        ChangeSettingsError::VersionConflict { found, .. } => version_conflict(found),
        ChangeSettingsError::Store(store) => ApiError::from(store),
    })?;
    if changed.changed {
        publish_outbox(&*state.store, &*state.events, &caller.tenant).await;
    }
    Ok(with_etag(SettingsResponse::new(
        &changed.new,
        changed.version,
    )))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    limit: Option<u32>,
    page_token: Option<String>,
}

pub async fn get_history(
    State(state): State<ApiState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<HistoryQuery>,
) -> Result<Json<PageView<HistoryEntryView>>, ApiError> {
    let limit = page_limit(q.limit)?;
    let token = page_token(q.page_token.as_deref())?;
    let page = state
        .store
        .settings_history(&caller.tenant, token, limit)
        .await
        .map_err(super::page_error)?;
    Ok(Json(PageView {
        items: page.items.iter().map(HistoryEntryView::from).collect(),
        next_page_token: page.next,
    }))
}
