//! `/v1/settings`: read, change (optimistic concurrency, history, `SettingsChanged`) and
//! the change history. The rules are the domain's `apply_patch`, shared with the CLI.

use super::{page_limit, page_token};
use crate::auth::{Caller, Writer};
use crate::error::{version_conflict, ApiError};
use crate::extract::{ApiJson, ApiQuery, IfMatch};
use crate::outbox::publish_outbox;
use crate::state::ApiState;
use crate::views::{setting_changes, HistoryEntryView, PageView, SettingsResponse};
use axum::extract::State;
use axum::http::header::ETAG;
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use axum::Json;
use crm_export_core::ports::StoreError;
use crm_export_core::{
    apply_patch, Event, EventKind, SettingsChange, SettingsPatch, TenantId, VersionedSettings,
};
use serde::Deserialize;
use serde_json::json;

async fn current(state: &ApiState, tenant: &TenantId) -> Result<VersionedSettings, ApiError> {
    Ok(state
        .store
        .get_settings(tenant)
        .await?
        .unwrap_or_else(|| VersionedSettings {
            settings: Default::default(),
            version: 0,
        }))
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
    let cur = current(&state, &caller.tenant).await?;
    // Checked before the rules, so a stale writer is told to re-read rather than being
    // judged against settings it has not seen.
    if cur.version != expected {
        return Err(version_conflict(cur.version));
    }
    let (next, acknowledged) = apply_patch(&cur.settings, &patch)?;
    if next == cur.settings {
        // Nothing changes: no version, no history entry, no event.
        return Ok(with_etag(SettingsResponse::new(&cur.settings, cur.version)));
    }
    let now = state.clock.now();
    let changes = setting_changes(&cur.settings, &next);
    let event = Event {
        id: uuid::Uuid::new_v4().to_string(),
        kind: EventKind::SettingsChanged,
        tenant: caller.tenant.clone(),
        job: None,
        at: now,
        detail: json!({
            "version": cur.version + 1,
            "actor": caller.actor,
            "acknowledged_data_inconsistency": acknowledged,
            "changes": changes,
        }),
    };
    let change = SettingsChange {
        version: cur.version + 1,
        at: now,
        actor: caller.actor.clone(),
        old: cur.settings.clone(),
        new: next.clone(),
        acknowledged_data_inconsistency: acknowledged,
    };
    let version = match state
        .store
        .put_settings(&caller.tenant, expected, change, event)
        .await
    {
        Ok(v) => v,
        // Another write landed between our read and this one.
        Err(StoreError::VersionConflict { found, .. }) => return Err(version_conflict(found)),
        Err(e) => return Err(e.into()),
    };
    let changed: Vec<&str> = changes.iter().map(|c| c.setting.as_str()).collect();
    tracing::info!(tenant = %caller.tenant, actor = %caller.actor, version, ?changed, acknowledged, "settings changed");
    publish_outbox(&*state.store, &*state.events, &caller.tenant).await;
    Ok(with_etag(SettingsResponse::new(&next, version)))
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
