//! `crmx settings show|set|history`. Changes go through `apply_patch` (the one
//! implementation of the SPEC §3 rules, shared with the settings API) and are written with
//! the version they were based on, so a concurrent change is refused, not overwritten.

use crate::error::{CliError, CliResult};
use crate::output::{when, Outcome};
use crate::state::Local;
use crm_export_core::engine::{change_settings, publish_outbox, ChangeSettingsError};
use crm_export_core::ports::Clock;
use crm_export_core::settings::setting_changes;
use crm_export_core::{Settings, SettingsPatch, TenantId};
use serde::Serialize;
use serde_json::{json, Value};

/// The stored settings and their version (defaults at version 0 when never saved).
pub async fn current(local: &Local, tenant: &TenantId) -> CliResult<(Settings, u64)> {
    Ok(local
        .store
        .get_settings(tenant)
        .await?
        .map(|v| (v.settings, v.version))
        .unwrap_or_default())
}

pub async fn show(local: &Local, tenant: &TenantId) -> CliResult<Outcome> {
    let (s, version) = current(local, tenant).await?;
    Ok(Outcome::ok(
        human_settings(tenant, &s, version),
        json!({"tenant": tenant, "version": version, "settings": s}),
    ))
}

fn human_settings(tenant: &TenantId, s: &Settings, version: u64) -> String {
    let on = |b: bool| if b { "on" } else { "off" };
    let mut out = format!("settings of tenant {tenant} (version {version})\n");
    out.push_str(&format!(
        "  export_to_crm           {}\n",
        on(s.export_to_crm)
    ));
    if s.export_to_crm {
        out.push_str(&format!(
            "  pause_on_export_errors  {}\n",
            on(s.pause_on_export_errors)
        ));
    } else {
        // SPEC §3: only visible while exporting is on.
        out.push_str("  pause_on_export_errors  (hidden while export_to_crm is off)\n");
    }
    out.push_str(&format!(
        "  batch_size              {}\n",
        s.batch_size.get()
    ));
    out.push_str(&format!(
        "  daily_api_limit         {}\n",
        s.daily_api_limit
    ));
    out.push_str(&format!(
        "  max_retry_attempts      {}\n",
        s.max_retry_attempts
    ));
    out.push_str(&format!("  max_in_flight           {}", s.max_in_flight));
    out
}

/// What one change did.
#[derive(Debug, Clone, Serialize)]
pub struct Changed {
    pub tenant: TenantId,
    pub changed: bool,
    pub version: u64,
    pub old: Settings,
    pub new: Settings,
    pub acknowledged_data_inconsistency: bool,
    /// The data-inconsistency warning, when this change turned pause off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warning: Option<&'static str>,
}

/// Applies `patch` under the rules and stores it on top of the version read (or
/// `if_version`), recording who changed what.
pub async fn change(
    local: &Local,
    tenant: &TenantId,
    actor: &str,
    patch: &SettingsPatch,
    if_version: Option<u64>,
) -> CliResult<Changed> {
    let changed = change_settings(
        local.store.as_ref(),
        tenant,
        if_version,
        patch,
        actor,
        local.clock.now(),
    )
    .await
    .map_err(|e| match e {
        ChangeSettingsError::Rule(rule) => CliError::from(rule),
        ChangeSettingsError::VersionConflict { expected, found } => CliError::refused(
            "version_conflict",
            format!(
                "the settings are at version {found}, not {expected}: someone changed them; \
                 read them again (crmx settings show) and retry"
            ),
        ),
        ChangeSettingsError::Store(store) => CliError::from(store),
    })?;
    // Published now rather than with the tenant's next run.
    publish_outbox(local.store.as_ref(), &local.events, tenant).await;
    Ok(Changed {
        tenant: tenant.clone(),
        changed: changed.changed,
        version: changed.version,
        old: changed.old,
        new: changed.new,
        acknowledged_data_inconsistency: changed.acknowledged_data_inconsistency,
        warning: changed.warning,
    })
}

pub async fn set(
    local: &Local,
    tenant: &TenantId,
    actor: &str,
    patch: &SettingsPatch,
    if_version: Option<u64>,
) -> CliResult<Outcome> {
    let c = change(local, tenant, actor, patch, if_version).await?;
    let mut human = if c.changed {
        format!(
            "Settings changed (version {}) by {actor}.\n{}",
            c.version,
            human_settings(tenant, &c.new, c.version)
        )
    } else {
        format!(
            "Nothing to change: the settings already are so (version {}).",
            c.version
        )
    };
    if let Some(w) = c.warning {
        human = format!("warning: {w}\n{human}");
    }
    Ok(Outcome::ok(
        human,
        serde_json::to_value(&c).unwrap_or_default(),
    ))
}

pub async fn history(local: &Local, tenant: &TenantId, limit: usize) -> CliResult<Outcome> {
    let page = local.store.settings_history(tenant, None, limit).await?;
    let human = if page.items.is_empty() {
        format!("No recorded settings changes for tenant {tenant}.")
    } else {
        page.items
            .iter()
            .map(|c| {
                format!(
                    "version {} at {} by {}{}: {}",
                    c.version,
                    when(Some(c.at)),
                    c.actor,
                    if c.acknowledged_data_inconsistency {
                        " (data inconsistency acknowledged)"
                    } else {
                        ""
                    },
                    diff(&c.old, &c.new)
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    let entries: Vec<Value> = page
        .items
        .iter()
        .map(|c| {
            let mut v = serde_json::to_value(c).unwrap_or_default();
            v["changes"] = json!(setting_changes(&c.old, &c.new));
            v
        })
        .collect();
    Ok(Outcome::ok(
        human,
        json!({"tenant": tenant, "entries": entries, "more": page.next.is_some()}),
    ))
}

/// `{setting, old, new}` for every setting that differs, in the domain's field order (the
/// shape the settings API uses in its history and `SettingsChanged` events).
/// `setting old -> new, ...` for people.
fn diff(old: &Settings, new: &Settings) -> String {
    let parts: Vec<String> = setting_changes(old, new)
        .iter()
        .map(|c| format!("{} {} -> {}", c.setting, c.old, c.new))
        .collect();
    if parts.is_empty() {
        "no change".into()
    } else {
        parts.join(", ")
    }
}
