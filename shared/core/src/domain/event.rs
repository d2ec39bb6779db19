use super::{JobRef, Timestamp};
use serde::{Deserialize, Serialize};

/// The notable moments published on the bus (SPEC §8), source `crm-export`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EventKind {
    ExportJobHalted,
    ExportJobResumed,
    ExportJobBlocked,
    ExportRunCompleted,
    ExportRunFailed,
    ExportErrorsRetried,
    SettingsChanged,
}

impl EventKind {
    /// The EventBridge `detail-type`.
    pub fn detail_type(self) -> &'static str {
        match self {
            EventKind::ExportJobHalted => "ExportJobHalted",
            EventKind::ExportJobResumed => "ExportJobResumed",
            EventKind::ExportJobBlocked => "ExportJobBlocked",
            EventKind::ExportRunCompleted => "ExportRunCompleted",
            EventKind::ExportRunFailed => "ExportRunFailed",
            EventKind::ExportErrorsRetried => "ExportErrorsRetried",
            EventKind::SettingsChanged => "SettingsChanged",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        use EventKind::*;
        [
            ExportJobHalted,
            ExportJobResumed,
            ExportJobBlocked,
            ExportRunCompleted,
            ExportRunFailed,
            ExportErrorsRetried,
            SettingsChanged,
        ]
        .into_iter()
        .find(|k| k.detail_type() == s)
    }
}

pub const EVENT_SOURCE: &str = "crm-export";

/// An event, recorded with the state change it describes (outbox) and published after it:
/// delivery is at least once, `id` lets consumers drop duplicates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub id: String,
    pub kind: EventKind,
    pub tenant: super::TenantId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<super::JobId>,
    pub at: Timestamp,
    pub detail: serde_json::Value,
}

impl Event {
    pub fn for_job(
        kind: EventKind,
        job: &JobRef,
        at: Timestamp,
        detail: serde_json::Value,
    ) -> Self {
        Self {
            id: uuid::Uuid::new_v4().to_string(),
            kind,
            tenant: job.tenant.clone(),
            job: Some(job.job.clone()),
            at,
            detail,
        }
    }

    /// The `detail` as published: the event's own fields plus its specific detail.
    pub fn envelope_detail(&self) -> serde_json::Value {
        let mut d = serde_json::json!({
            "event_id": self.id,
            "tenant_id": self.tenant,
            "occurred_at": self.at,
        });
        if let Some(job) = &self.job {
            d["job_id"] = serde_json::json!(job);
        }
        if let serde_json::Value::Object(extra) = &self.detail {
            for (k, v) in extra {
                d[k] = v.clone();
            }
        }
        d
    }
}
