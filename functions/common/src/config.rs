//! The functions' configuration, read once from the environment at cold start. A missing
//! or malformed variable fails the start-up (the init error names it) rather than the first
//! invocation. The template sets every variable; the defaults below are for local runs.

use crm_export_aws::{DynamoConfig, EventBridgeConfig, SdkTimeouts};
use std::time::Duration;

/// Where tenant CRM secrets live: `{prefix}{tenant}/salesforce`. The functions' IAM
/// policies are scoped to this prefix.
pub const DEFAULT_SECRET_PREFIX: &str = "crm-export/tenants/";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("environment variable {0} is required")]
    Missing(&'static str),
    #[error("environment variable {name} = {value:?} is invalid: {rule}")]
    Invalid {
        name: &'static str,
        value: String,
        rule: &'static str,
    },
}

/// Everything the four functions read from the environment.
#[derive(Debug, Clone)]
pub struct FunctionConfig {
    /// `STATE_TABLE`, `QUEUE_TABLE` (required), SDK timeouts.
    pub dynamo: DynamoConfig,
    /// `EVENT_BUS_NAME` (required): the custom bus for the public events (source
    /// `crm-export`) and the internal commands (source `crm-export.internal`).
    pub events: EventBridgeConfig,
    /// `TENANT_SECRET_PREFIX`: tenant secrets are `{prefix}{tenant}/salesforce`.
    pub secret_prefix: String,
    /// `SECRET_CACHE_TTL_SECONDS` (default 300): how long a warm container trusts a tenant
    /// secret it read before reading it again.
    pub secret_cache_ttl: Duration,
    /// `COMMAND_MAX_AGE_SECONDS` (default 900, the export schedule's interval): a command
    /// older than this is dropped, not run late.
    pub command_max_age: Duration,
    /// `DEADLINE_MARGIN_SECONDS` (default 15): the run is told to stop this long before
    /// the invocation's deadline, leaving time for the final commit, the events and the
    /// metrics.
    pub deadline_margin: Duration,
    /// `METRICS_NAMESPACE` (default `CrmExport`).
    pub metrics_namespace: String,
    /// `SERVICE_NAME` (default `crm-export`; the template passes the stack name): the value
    /// of the `Service` dimension, so two stacks in one account keep apart.
    pub service_name: String,
    /// `METRICS_JOB_DIMENSIONS` (default false): also publish the dispatcher's per-job
    /// gauges under `TenantId`/`JobId` dimensions. Costs one metric per job and gauge.
    pub metrics_job_dimensions: bool,
    /// `SDK_OPERATION_TIMEOUT_MS` / `SDK_ATTEMPT_TIMEOUT_MS`: bounds of every AWS call.
    pub sdk_timeouts: SdkTimeouts,
    /// `CREDENTIAL_SETTLE_MS` (default 1000): when a refused refresh token is still the
    /// stored one, how long to wait for a rotation in flight elsewhere to land before
    /// reading the store once more.
    pub credential_settle: Duration,
}

impl FunctionConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the configuration through `get` (the environment, or a map in tests).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let var = |name: &'static str| get(name).filter(|v| !v.trim().is_empty());
        let required = |name: &'static str| var(name).ok_or(ConfigError::Missing(name));
        let number = |name: &'static str, default: u64| -> Result<u64, ConfigError> {
            match var(name) {
                None => Ok(default),
                Some(v) => v.trim().parse().map_err(|_| ConfigError::Invalid {
                    name,
                    value: v,
                    rule: "must be a whole number",
                }),
            }
        };
        let flag = |name: &'static str| -> Result<bool, ConfigError> {
            match var(name).as_deref().map(str::trim) {
                None | Some("false") | Some("0") => Ok(false),
                Some("true") | Some("1") => Ok(true),
                Some(other) => Err(ConfigError::Invalid {
                    name,
                    value: other.to_string(),
                    rule: "must be true or false",
                }),
            }
        };

        let defaults = SdkTimeouts::default();
        let sdk_timeouts = SdkTimeouts {
            operation: Duration::from_millis(number(
                "SDK_OPERATION_TIMEOUT_MS",
                defaults.operation.as_millis() as u64,
            )?),
            attempt: Duration::from_millis(number(
                "SDK_ATTEMPT_TIMEOUT_MS",
                defaults.attempt.as_millis() as u64,
            )?),
            ..defaults
        };
        let mut dynamo = DynamoConfig::new(required("STATE_TABLE")?, required("QUEUE_TABLE")?);
        dynamo.timeouts = sdk_timeouts;
        let mut events = EventBridgeConfig::new(required("EVENT_BUS_NAME")?);
        events.timeouts = sdk_timeouts;

        let secret_prefix =
            var("TENANT_SECRET_PREFIX").unwrap_or_else(|| DEFAULT_SECRET_PREFIX.into());
        if secret_prefix.contains('*') {
            return Err(ConfigError::Invalid {
                name: "TENANT_SECRET_PREFIX",
                value: secret_prefix,
                rule: "must be a plain name prefix",
            });
        }
        let command_max_age = number("COMMAND_MAX_AGE_SECONDS", 900)?;
        if command_max_age == 0 {
            return Err(ConfigError::Invalid {
                name: "COMMAND_MAX_AGE_SECONDS",
                value: "0".into(),
                rule: "must be positive",
            });
        }
        Ok(Self {
            dynamo,
            events,
            secret_prefix,
            secret_cache_ttl: Duration::from_secs(number("SECRET_CACHE_TTL_SECONDS", 300)?),
            command_max_age: Duration::from_secs(command_max_age),
            deadline_margin: Duration::from_secs(number("DEADLINE_MARGIN_SECONDS", 15)?),
            metrics_namespace: var("METRICS_NAMESPACE").unwrap_or_else(|| "CrmExport".into()),
            service_name: var("SERVICE_NAME").unwrap_or_else(|| "crm-export".into()),
            metrics_job_dimensions: flag("METRICS_JOB_DIMENSIONS")?,
            sdk_timeouts,
            credential_settle: Duration::from_millis(number("CREDENTIAL_SETTLE_MS", 1000)?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    const BASE: [(&str, &str); 3] = [
        ("STATE_TABLE", "s"),
        ("QUEUE_TABLE", "q"),
        ("EVENT_BUS_NAME", "bus"),
    ];

    #[test]
    fn tables_and_bus_are_required() {
        assert_eq!(
            FunctionConfig::from_lookup(lookup(&BASE[1..])).unwrap_err(),
            ConfigError::Missing("STATE_TABLE")
        );
        assert_eq!(
            FunctionConfig::from_lookup(lookup(&BASE[..2])).unwrap_err(),
            ConfigError::Missing("EVENT_BUS_NAME")
        );
    }

    #[test]
    fn defaults_and_overrides() {
        let c = FunctionConfig::from_lookup(lookup(&BASE)).unwrap();
        assert_eq!(c.dynamo.state_table, "s");
        assert_eq!(c.events.bus_name, "bus");
        assert_eq!(c.secret_prefix, DEFAULT_SECRET_PREFIX);
        assert_eq!(c.command_max_age, Duration::from_secs(900));
        assert!(!c.metrics_job_dimensions);

        let mut pairs = BASE.to_vec();
        pairs.extend([
            ("COMMAND_MAX_AGE_SECONDS", "300"),
            ("METRICS_JOB_DIMENSIONS", "true"),
            ("SDK_ATTEMPT_TIMEOUT_MS", "60000"),
        ]);
        let c = FunctionConfig::from_lookup(lookup(&pairs)).unwrap();
        assert_eq!(c.command_max_age, Duration::from_secs(300));
        assert!(c.metrics_job_dimensions);
        assert_eq!(c.dynamo.timeouts.attempt, Duration::from_secs(60));
        assert_eq!(c.events.timeouts.attempt, Duration::from_secs(60));
    }

    #[test]
    fn malformed_values_name_the_variable() {
        let mut pairs = BASE.to_vec();
        pairs.push(("COMMAND_MAX_AGE_SECONDS", "15m"));
        let err = FunctionConfig::from_lookup(lookup(&pairs)).unwrap_err();
        assert!(err.to_string().contains("COMMAND_MAX_AGE_SECONDS"), "{err}");
        let mut pairs = BASE.to_vec();
        pairs.push(("METRICS_JOB_DIMENSIONS", "yes"));
        assert!(FunctionConfig::from_lookup(lookup(&pairs)).is_err());
    }
}
