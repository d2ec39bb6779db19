//! Per-tenant settings (SPEC §3) and the one implementation of their change rules, used by
//! the settings API and the CLI alike.

use super::Timestamp;
use serde::{Deserialize, Serialize};

/// Records per CRM API call: one of 25, 50, 100, 200.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "u32", into = "u32")]
pub struct BatchSize(u32);

impl BatchSize {
    pub const ALLOWED: [u32; 4] = [25, 50, 100, 200];
    pub fn new(n: u32) -> Result<Self, SettingsError> {
        if Self::ALLOWED.contains(&n) {
            Ok(Self(n))
        } else {
            Err(SettingsError::InvalidValue {
                field: "batch_size",
                message: format!("batch_size must be one of 25, 50, 100 or 200, not {n}"),
            })
        }
    }
    pub fn get(self) -> usize {
        self.0 as usize
    }
}

impl Default for BatchSize {
    fn default() -> Self {
        Self(200)
    }
}
impl TryFrom<u32> for BatchSize {
    type Error = SettingsError;
    fn try_from(n: u32) -> Result<Self, SettingsError> {
        Self::new(n)
    }
}
impl From<BatchSize> for u32 {
    fn from(b: BatchSize) -> u32 {
        b.0
    }
}

pub const DAILY_API_LIMIT_MIN: u64 = 1_000;
pub const DAILY_API_LIMIT_MAX: u64 = 10_000_000;
pub const MAX_RETRY_ATTEMPTS_MAX: u32 = 1_000;
/// Upper bound of `max_in_flight`: Salesforce allows 25 concurrent long (≥ 20 s) requests
/// per production org and 5 in developer orgs; the product stays well below.
pub const MAX_IN_FLIGHT_MAX: u32 = 10;

/// Eight 200-record calls in flight keep the pipe full at a typical call time of 150 ms
/// (about 10,000 records/s) and stay far from the org's 25 long-running requests; calls
/// this short do not count as long-running at all. A developer org (5) needs a lower value.
fn default_max_in_flight() -> u32 {
    8
}

/// The warning shown whenever pause on export errors is turned off.
pub const DATA_INCONSISTENCY_WARNING: &str = "Turning off pause on export errors lets export jobs \
move past records the CRM refuses. The CRM can then be inconsistent with the source, and it is \
your responsibility to resolve the errors logged in ExportErrors (they are retried daily).";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub export_to_crm: bool,
    pub pause_on_export_errors: bool,
    pub batch_size: BatchSize,
    pub daily_api_limit: u64,
    pub max_retry_attempts: u32,
    /// CRM requests one tenant keeps in flight at once, all its jobs together.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            export_to_crm: false,
            pause_on_export_errors: true,
            batch_size: BatchSize::default(),
            daily_api_limit: 100_000,
            max_retry_attempts: 30,
            max_in_flight: default_max_in_flight(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionedSettings {
    pub settings: Settings,
    /// Incremented by every write; writes name the version they were based on.
    pub version: u64,
}

/// One recorded change of a tenant's settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettingsChange {
    pub version: u64,
    pub at: Timestamp,
    pub actor: String,
    pub old: Settings,
    pub new: Settings,
    pub acknowledged_data_inconsistency: bool,
}

/// One setting that a change altered, with its old and new value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SettingDiff {
    pub setting: String,
    pub old: serde_json::Value,
    pub new: serde_json::Value,
}

/// The settings that differ between `old` and `new`, in field order.
pub fn setting_changes(old: &Settings, new: &Settings) -> Vec<SettingDiff> {
    let as_map = |s: &Settings| match serde_json::to_value(s) {
        Ok(serde_json::Value::Object(map)) => map,
        _ => serde_json::Map::new(),
    };
    let (old, new) = (as_map(old), as_map(new));
    new.iter()
        .filter_map(|(setting, n)| {
            let o = old.get(setting).cloned().unwrap_or(serde_json::Value::Null);
            (o != *n).then(|| SettingDiff {
                setting: setting.clone(),
                old: o,
                new: n.clone(),
            })
        })
        .collect()
}

/// A requested change: absent fields stay as they are.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettingsPatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub export_to_crm: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pause_on_export_errors: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_size: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daily_api_limit: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_retry_attempts: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_in_flight: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acknowledge_data_inconsistency: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingsError {
    #[error("{message}")]
    InvalidValue {
        field: &'static str,
        message: String,
    },
    #[error("turning pause_on_export_errors off needs acknowledge_data_inconsistency: true. {DATA_INCONSISTENCY_WARNING}")]
    AcknowledgementRequired,
    #[error("pause_on_export_errors can only be seen and changed while export_to_crm is on")]
    PauseNotAvailable,
    #[error("the change names no setting")]
    EmptyChange,
}

impl SettingsError {
    /// Machine-readable code, the same in the API and the CLI.
    pub fn code(&self) -> &'static str {
        match self {
            SettingsError::InvalidValue { .. } => "invalid_setting",
            SettingsError::AcknowledgementRequired => "acknowledgement_required",
            SettingsError::PauseNotAvailable => "pause_setting_unavailable",
            SettingsError::EmptyChange => "empty_change",
        }
    }
}

/// Applies a patch under the SPEC §3 rules. Returns the new settings and whether the change
/// was acknowledged (turning pause off).
pub fn apply_patch(
    current: &Settings,
    patch: &SettingsPatch,
) -> Result<(Settings, bool), SettingsError> {
    let touches_any = patch.export_to_crm.is_some()
        || patch.pause_on_export_errors.is_some()
        || patch.batch_size.is_some()
        || patch.daily_api_limit.is_some()
        || patch.max_retry_attempts.is_some()
        || patch.max_in_flight.is_some();
    if !touches_any {
        return Err(SettingsError::EmptyChange);
    }
    let mut next = current.clone();
    if let Some(v) = patch.export_to_crm {
        next.export_to_crm = v;
    }
    if let Some(v) = patch.batch_size {
        next.batch_size = BatchSize::new(v)?;
    }
    if let Some(v) = patch.daily_api_limit {
        if !(DAILY_API_LIMIT_MIN..=DAILY_API_LIMIT_MAX).contains(&v) {
            return Err(SettingsError::InvalidValue {
                field: "daily_api_limit",
                message: format!(
                    "daily_api_limit must be between {DAILY_API_LIMIT_MIN} and {DAILY_API_LIMIT_MAX}, not {v}"
                ),
            });
        }
        next.daily_api_limit = v;
    }
    if let Some(v) = patch.max_retry_attempts {
        if !(1..=MAX_RETRY_ATTEMPTS_MAX).contains(&v) {
            return Err(SettingsError::InvalidValue {
                field: "max_retry_attempts",
                message: format!(
                    "max_retry_attempts must be between 1 and {MAX_RETRY_ATTEMPTS_MAX}, not {v}"
                ),
            });
        }
        next.max_retry_attempts = v;
    }
    if let Some(v) = patch.max_in_flight {
        if !(1..=MAX_IN_FLIGHT_MAX).contains(&v) {
            return Err(SettingsError::InvalidValue {
                field: "max_in_flight",
                message: format!(
                    "max_in_flight must be between 1 and {MAX_IN_FLIGHT_MAX}, not {v}"
                ),
            });
        }
        next.max_in_flight = v;
    }
    let acknowledged = patch.acknowledge_data_inconsistency == Some(true);
    if let Some(v) = patch.pause_on_export_errors {
        // Visible and changeable only while exporting is on (after this change).
        if !next.export_to_crm {
            return Err(SettingsError::PauseNotAvailable);
        }
        if current.pause_on_export_errors && !v && !acknowledged {
            return Err(SettingsError::AcknowledgementRequired);
        }
        next.pause_on_export_errors = v;
    }
    let turned_pause_off = current.pause_on_export_errors && !next.pause_on_export_errors;
    Ok((next, turned_pause_off && acknowledged))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn on() -> Settings {
        Settings {
            export_to_crm: true,
            ..Settings::default()
        }
    }

    #[test]
    fn turning_pause_off_needs_acknowledgement() {
        let patch = SettingsPatch {
            pause_on_export_errors: Some(false),
            ..Default::default()
        };
        assert_eq!(
            apply_patch(&on(), &patch),
            Err(SettingsError::AcknowledgementRequired)
        );
        let ack = SettingsPatch {
            acknowledge_data_inconsistency: Some(true),
            ..patch
        };
        let (next, acked) = apply_patch(&on(), &ack).unwrap();
        assert!(!next.pause_on_export_errors);
        assert!(acked);
    }

    #[test]
    fn turning_pause_on_needs_no_acknowledgement() {
        let off = Settings {
            pause_on_export_errors: false,
            ..on()
        };
        let patch = SettingsPatch {
            pause_on_export_errors: Some(true),
            ..Default::default()
        };
        let (next, acked) = apply_patch(&off, &patch).unwrap();
        assert!(next.pause_on_export_errors);
        assert!(!acked);
    }

    #[test]
    fn pause_is_not_changeable_while_export_is_off() {
        let patch = SettingsPatch {
            pause_on_export_errors: Some(true),
            ..Default::default()
        };
        assert_eq!(
            apply_patch(&Settings::default(), &patch),
            Err(SettingsError::PauseNotAvailable)
        );
    }

    #[test]
    fn batch_size_and_limits_are_validated() {
        for bad in [0, 1, 24, 150, 201, 500] {
            let p = SettingsPatch {
                batch_size: Some(bad),
                ..Default::default()
            };
            assert_eq!(
                apply_patch(&on(), &p).unwrap_err().code(),
                "invalid_setting"
            );
        }
        for bad in [0, 11] {
            let p = SettingsPatch {
                max_in_flight: Some(bad),
                ..Default::default()
            };
            assert!(apply_patch(&on(), &p).is_err());
        }
        for bad in [0, 999, 10_000_001] {
            let p = SettingsPatch {
                daily_api_limit: Some(bad),
                ..Default::default()
            };
            assert!(apply_patch(&on(), &p).is_err());
        }
        let p = SettingsPatch {
            batch_size: Some(50),
            daily_api_limit: Some(1000),
            ..Default::default()
        };
        let (s, _) = apply_patch(&on(), &p).unwrap();
        assert_eq!((s.batch_size.get(), s.daily_api_limit), (50, 1000));
    }

    #[test]
    fn a_failed_patch_changes_nothing() {
        let cur = on();
        let p = SettingsPatch {
            batch_size: Some(50),
            daily_api_limit: Some(5),
            ..Default::default()
        };
        assert!(apply_patch(&cur, &p).is_err());
        assert_eq!(cur, on());
    }
}
