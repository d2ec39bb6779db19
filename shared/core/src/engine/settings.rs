//! Changing a tenant's settings: the SPEC §3 rules (`apply_patch`), optimistic
//! concurrency, the change history and the `SettingsChanged` event, in one place for the
//! settings API and the CLI.

use crate::domain::settings::setting_changes;
use crate::domain::*;
use crate::ports::{SettingsStore, StoreError};
use serde::Serialize;
use serde_json::json;

/// What one change did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SettingsChanged {
    pub changed: bool,
    pub version: u64,
    pub old: Settings,
    pub new: Settings,
    pub acknowledged_data_inconsistency: bool,
    /// The data-inconsistency warning, when this change turned pause off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warning: Option<&'static str>,
}

#[derive(Debug, thiserror::Error)]
pub enum ChangeSettingsError {
    #[error(transparent)]
    Rule(#[from] SettingsError),
    /// The settings moved on since the version the change was based on.
    #[error("the settings are at version {found}, not {expected}")]
    VersionConflict { expected: u64, found: u64 },
    #[error(transparent)]
    Store(StoreError),
}

/// Reads the tenant's settings (defaults at version 0 when none are stored).
pub async fn current_settings<S: SettingsStore + ?Sized>(
    store: &S,
    tenant: &TenantId,
) -> Result<VersionedSettings, StoreError> {
    Ok(store
        .get_settings(tenant)
        .await?
        .unwrap_or(VersionedSettings {
            settings: Settings::default(),
            version: 0,
        }))
}

/// Applies `patch` on top of `expected_version` (or the version read, when `None`),
/// records who changed what and the `SettingsChanged` event with it. A patch that changes
/// nothing writes nothing.
pub async fn change_settings<S: SettingsStore + ?Sized>(
    store: &S,
    tenant: &TenantId,
    expected_version: Option<u64>,
    patch: &SettingsPatch,
    actor: &str,
    now: Timestamp,
) -> Result<SettingsChanged, ChangeSettingsError> {
    let cur = current_settings(store, tenant)
        .await
        .map_err(ChangeSettingsError::Store)?;
    // Checked before the rules, so a stale writer is told to re-read rather than judged
    // against settings it has not seen.
    if let Some(expected) = expected_version {
        if expected != cur.version {
            return Err(ChangeSettingsError::VersionConflict {
                expected,
                found: cur.version,
            });
        }
    }
    let (new, acknowledged) = apply_patch(&cur.settings, patch)?;
    if new == cur.settings {
        return Ok(SettingsChanged {
            changed: false,
            version: cur.version,
            old: cur.settings.clone(),
            new,
            acknowledged_data_inconsistency: false,
            warning: None,
        });
    }
    let warning = (cur.settings.pause_on_export_errors && !new.pause_on_export_errors)
        .then_some(DATA_INCONSISTENCY_WARNING);
    let version = cur.version + 1;
    let event = Event {
        id: uuid::Uuid::new_v4().to_string(),
        kind: EventKind::SettingsChanged,
        tenant: tenant.clone(),
        job: None,
        at: now,
        detail: json!({
            "version": version,
            "actor": actor,
            "acknowledged_data_inconsistency": acknowledged,
            "changes": setting_changes(&cur.settings, &new),
        }),
    };
    let change = SettingsChange {
        version,
        at: now,
        actor: actor.to_string(),
        old: cur.settings.clone(),
        new: new.clone(),
        acknowledged_data_inconsistency: acknowledged,
    };
    let stored = match store.put_settings(tenant, cur.version, change, event).await {
        Ok(v) => v,
        // Another write landed between our read and this one.
        Err(StoreError::VersionConflict { found, .. }) => {
            return Err(ChangeSettingsError::VersionConflict {
                expected: cur.version,
                found,
            })
        }
        Err(e) => return Err(ChangeSettingsError::Store(e)),
    };
    tracing::info!(%tenant, %actor, version = stored, acknowledged, "settings changed");
    Ok(SettingsChanged {
        changed: true,
        version: stored,
        old: cur.settings,
        new,
        acknowledged_data_inconsistency: acknowledged,
        warning,
    })
}
