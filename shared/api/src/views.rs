//! What the API shows: the response bodies, built from domain types. Each matches a schema
//! of `openapi.yaml`. They decide what is hidden: `pause_on_export_errors` while exporting
//! is off, and record values (personal data) unless asked for.

use crm_export_core::engine::JobStatus;
use crm_export_core::{
    Block, ExportErrorItem, Halt, Settings, SettingsChange, Timestamp, DATA_INCONSISTENCY_WARNING,
};
use serde::Serialize;
use std::collections::BTreeMap;

/// A tenant's settings as shown: every setting the domain has, except
/// `pause_on_export_errors` while `export_to_crm` is off (SPEC §3: only visible then).
/// Built from the domain's own serialisation, so a new setting shows up without a change
/// here.
pub fn settings_view(s: &Settings) -> serde_json::Map<String, serde_json::Value> {
    let mut map = match serde_json::to_value(s) {
        Ok(serde_json::Value::Object(map)) => map,
        _ => serde_json::Map::new(),
    };
    if !s.export_to_crm {
        map.remove("pause_on_export_errors");
    }
    map
}

/// `GET` and `PATCH /v1/settings`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SettingsResponse {
    /// The version to send back in `If-Match` (also the ETag).
    pub version: u64,
    pub settings: serde_json::Map<String, serde_json::Value>,
    /// Shown while pause on export errors is off: the tenant resolves logged errors.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warning: Option<&'static str>,
}

impl SettingsResponse {
    pub fn new(settings: &Settings, version: u64) -> Self {
        let pause_off = settings.export_to_crm && !settings.pause_on_export_errors;
        Self {
            version,
            settings: settings_view(settings),
            warning: pause_off.then_some(DATA_INCONSISTENCY_WARNING),
        }
    }
}

/// One setting that changed (the domain's own diff).
pub use crm_export_core::settings::SettingDiff as SettingChangeView;

/// One entry of the settings history: who, when, old → new, acknowledged or not.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HistoryEntryView {
    pub version: u64,
    pub at: Timestamp,
    pub actor: String,
    pub acknowledged_data_inconsistency: bool,
    pub changes: Vec<SettingChangeView>,
}

pub use crm_export_core::settings::setting_changes;

impl From<&SettingsChange> for HistoryEntryView {
    fn from(c: &SettingsChange) -> Self {
        Self {
            version: c.version,
            at: c.at,
            actor: c.actor.clone(),
            acknowledged_data_inconsistency: c.acknowledged_data_inconsistency,
            changes: setting_changes(&c.old, &c.new),
        }
    }
}

/// A page of items and the token of the next page (`null` on the last page).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PageView<T> {
    pub items: Vec<T>,
    pub next_page_token: Option<String>,
}

/// The record a job is halted on.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HaltView {
    pub seq: u64,
    pub record_key: String,
    pub error_code: String,
    pub error_message: String,
    pub error_fields: Vec<String>,
    pub since: Timestamp,
    pub attempts: u32,
    pub last_attempt_at: Timestamp,
}

impl From<&Halt> for HaltView {
    fn from(h: &Halt) -> Self {
        Self {
            seq: h.seq,
            record_key: h.key.as_str().to_string(),
            error_code: h.error.code.clone(),
            error_message: h.error.message.clone(),
            error_fields: h.error.fields.clone(),
            since: h.since,
            attempts: h.attempts,
            last_attempt_at: h.last_attempt_at,
        }
    }
}

/// Why a job is blocked.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BlockView {
    pub reason: &'static str,
    pub code: String,
    pub message: String,
    pub since: Timestamp,
    pub attempts: u32,
    pub last_attempt_at: Timestamp,
}

impl From<&Block> for BlockView {
    fn from(b: &Block) -> Self {
        Self {
            reason: b.reason.as_str(),
            code: b.code.clone(),
            message: b.message.clone(),
            since: b.since,
            attempts: b.attempts,
            last_attempt_at: b.last_attempt_at,
        }
    }
}

/// What a job exports.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobDefinitionView {
    pub object: String,
    pub external_id_field: String,
    pub key_field: String,
    pub key_case_insensitive: bool,
    pub field_map: BTreeMap<String, String>,
}

/// Where a job stands and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobStatusView {
    pub job_id: String,
    pub definition: JobDefinitionView,
    /// `disabled` (export off), `blocked`, `halted` or `running` (nothing stops it).
    pub state: &'static str,
    pub export_to_crm: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pause_on_export_errors: Option<bool>,
    pub cursor: u64,
    pub head: u64,
    pub backlog: u64,
    pub oldest_unexported_at: Option<Timestamp>,
    pub oldest_unexported_age_seconds: Option<u64>,
    pub halt: Option<HaltView>,
    pub block: Option<BlockView>,
    pub open_errors: u64,
    pub parked_errors: u64,
    pub last_run_at: Option<Timestamp>,
    pub last_retry_completed_at: Option<Timestamp>,
}

impl JobStatusView {
    pub fn new(s: &JobStatus, now: Timestamp) -> Self {
        let state = if !s.export_to_crm {
            "disabled"
        } else if s.block.is_some() {
            "blocked"
        } else if s.halt.is_some() {
            "halted"
        } else {
            "running"
        };
        Self {
            job_id: s.job.job.as_str().to_string(),
            definition: JobDefinitionView {
                object: s.definition.object.clone(),
                external_id_field: s.definition.external_id_field.clone(),
                key_field: s.definition.key_field().to_string(),
                key_case_insensitive: s.definition.key_case_insensitive,
                field_map: s.definition.field_map.clone(),
            },
            state,
            export_to_crm: s.export_to_crm,
            pause_on_export_errors: s.export_to_crm.then_some(s.pause_on_export_errors),
            cursor: s.cursor,
            head: s.head,
            backlog: s.backlog,
            oldest_unexported_at: s.oldest_unexported_at,
            oldest_unexported_age_seconds: s
                .oldest_unexported_at
                .map(|t| (now - t).num_seconds().max(0) as u64),
            halt: s.halt.as_ref().map(HaltView::from),
            block: s.block.as_ref().map(BlockView::from),
            open_errors: s.open_errors,
            parked_errors: s.parked_errors,
            last_run_at: s.last_run_at,
            last_retry_completed_at: s.last_retry_completed_at,
        }
    }
}

/// The CRM's error for a record.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RecordErrorView {
    pub code: String,
    pub message: String,
    pub fields: Vec<String>,
}

/// One ExportErrors item. `field_names` always; `values` (personal data) only when asked.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExportErrorView {
    pub key: String,
    pub seq: u64,
    pub status: &'static str,
    pub error: RecordErrorView,
    pub field_names: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub values: Option<serde_json::Map<String, serde_json::Value>>,
    pub attempts: u32,
    pub retry_attempts: u32,
    pub first_seen: Timestamp,
    pub last_seen: Timestamp,
    pub last_attempt_at: Timestamp,
    pub resolved_at: Option<Timestamp>,
    pub resolved_by_seq: Option<u64>,
}

impl ExportErrorView {
    pub fn new(item: &ExportErrorItem, include_values: bool) -> Self {
        let mut field_names: Vec<String> = item.fields.keys().cloned().collect();
        field_names.sort();
        Self {
            key: item.key.as_str().to_string(),
            seq: item.seq,
            status: item.status.as_str(),
            error: RecordErrorView {
                code: item.error.code.clone(),
                message: item.error.message.clone(),
                fields: item.error.fields.clone(),
            },
            field_names,
            values: include_values.then(|| item.fields.clone()),
            attempts: item.attempts,
            retry_attempts: item.retry_attempts,
            first_seen: item.first_seen,
            last_seen: item.last_seen,
            last_attempt_at: item.last_attempt_at,
            resolved_at: item.resolved_at,
            resolved_by_seq: item.resolved_by_seq,
        }
    }
}

/// `202` to a retry-run request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RetryRunView {
    pub run_id: String,
    pub job_id: String,
    pub status: &'static str,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pause_is_hidden_while_export_is_off() {
        let off = Settings::default();
        let v = serde_json::to_value(SettingsResponse::new(&off, 0)).unwrap();
        assert!(v["settings"].get("pause_on_export_errors").is_none());
        let on = Settings {
            export_to_crm: true,
            pause_on_export_errors: false,
            ..Settings::default()
        };
        let v = serde_json::to_value(SettingsResponse::new(&on, 4)).unwrap();
        assert_eq!(v["settings"]["pause_on_export_errors"], false);
        assert_eq!(v["warning"], DATA_INCONSISTENCY_WARNING);
    }

    #[test]
    fn changes_list_only_what_differs() {
        let old = Settings::default();
        let new = Settings {
            export_to_crm: true,
            daily_api_limit: 5_000,
            ..old.clone()
        };
        let c = setting_changes(&old, &new);
        let names: Vec<_> = c.iter().map(|c| c.setting.as_str()).collect();
        assert_eq!(names, ["export_to_crm", "daily_api_limit"]);
        assert_eq!(c[1].old, 100_000);
        assert_eq!(c[1].new, 5_000);
    }
}
