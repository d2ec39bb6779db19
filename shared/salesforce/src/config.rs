//! Connection settings of one tenant's Salesforce org, read from a secret or a file.

use crate::retry::RetryPolicy;
use crate::secret::Secret;
use serde::{Deserialize, Serialize};
use std::time::Duration;

pub const DEFAULT_API_VERSION: &str = "62.0";

/// How to reach and authenticate against one org.
///
/// ```json
/// { "login_url": "https://acme.my.salesforce.com",
///   "credentials": { "grant": "refresh_token", "client_id": "3MVG9...",
///                    "client_secret": "...", "refresh_token": "5Aep861..." } }
/// ```
///
/// `Debug` is safe to log: secrets print as `Secret(***)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SalesforceConfig {
    /// Where the token endpoint lives (`https://login.salesforce.com`,
    /// `https://test.salesforce.com` or the org's My Domain; client credentials need the My
    /// Domain). REST calls go to the `instance_url` the token response names instead.
    pub login_url: String,
    #[serde(default = "default_api_version")]
    pub api_version: String,
    pub credentials: Credentials,
    #[serde(default)]
    pub retry: RetryPolicy,
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Timeout of one token request. A token request runs to its end even when the call
    /// that needed it gives up, so a rotated refresh token is never lost half-way.
    #[serde(default = "default_token_timeout_ms")]
    pub token_timeout_ms: u64,
    /// PEM certificate(s) trusted in addition to the built-in roots (a simulator's or a
    /// proxy's self-signed CA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra_root_ca_pem: Option<String>,
}

fn default_api_version() -> String {
    DEFAULT_API_VERSION.to_owned()
}

fn default_connect_timeout_ms() -> u64 {
    10_000
}

fn default_token_timeout_ms() -> u64 {
    30_000
}

impl SalesforceConfig {
    /// A configuration with the defaults for everything but the endpoint and credentials.
    pub fn new(login_url: impl Into<String>, credentials: Credentials) -> Self {
        Self {
            login_url: login_url.into(),
            api_version: default_api_version(),
            credentials,
            retry: RetryPolicy::default(),
            connect_timeout_ms: default_connect_timeout_ms(),
            token_timeout_ms: default_token_timeout_ms(),
            extra_root_ca_pem: None,
        }
    }

    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }

    pub fn token_timeout(&self) -> Duration {
        Duration::from_millis(self.token_timeout_ms)
    }
}

/// The OAuth 2.0 grant used to obtain access tokens. `client_id` (the connected app's
/// consumer key) is an identifier, not a secret (RFC 6749 §2.2), and stays readable in
/// `Debug` so operators can tell which app a tenant uses; everything else is redacted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "grant", rename_all = "snake_case")]
pub enum Credentials {
    /// Server-to-server with a Run As user; there is no refresh token, a new access token
    /// is requested whenever the session expires.
    ClientCredentials {
        client_id: String,
        client_secret: Secret,
    },
    /// A refresh token from a one-time authorisation. With refresh-token rotation the
    /// token endpoint returns a new one, written back through a
    /// [`CredentialSink`](crate::CredentialSink).
    RefreshToken {
        client_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        client_secret: Option<Secret>,
        refresh_token: Secret,
    },
}

impl Credentials {
    pub fn grant_name(&self) -> &'static str {
        match self {
            Credentials::ClientCredentials { .. } => "client_credentials",
            Credentials::RefreshToken { .. } => "refresh_token",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deserialises_both_grants_with_defaults() {
        let cfg: SalesforceConfig = serde_json::from_str(
            r#"{"login_url":"https://login.example","credentials":
                {"grant":"client_credentials","client_id":"app","client_secret":"s3cr3t"}}"#,
        )
        .unwrap();
        assert_eq!(cfg.api_version, "62.0");
        assert_eq!(cfg.retry, RetryPolicy::default());
        assert_eq!(cfg.connect_timeout(), Duration::from_secs(10));
        assert!(matches!(&cfg.credentials,
            Credentials::ClientCredentials { client_id, client_secret }
                if client_id == "app" && client_secret.expose() == "s3cr3t"));

        let cfg: SalesforceConfig = serde_json::from_str(
            r#"{"login_url":"https://login.example","api_version":"60.0",
                "retry":{"max_attempts":2},
                "credentials":{"grant":"refresh_token","client_id":"app","refresh_token":"rt-1"}}"#,
        )
        .unwrap();
        assert_eq!(cfg.api_version, "60.0");
        assert_eq!(cfg.retry.max_attempts, 2);
        assert!(matches!(&cfg.credentials,
            Credentials::RefreshToken { client_secret: None, refresh_token, .. }
                if refresh_token.expose() == "rt-1"));
    }

    #[test]
    fn debug_redacts_secrets() {
        let cfg = SalesforceConfig::new(
            "https://login.example",
            Credentials::RefreshToken {
                client_id: "app".into(),
                client_secret: Some("client-secret-value".into()),
                refresh_token: "refresh-token-value".into(),
            },
        );
        let dump = format!("{cfg:?}");
        assert!(
            !dump.contains("client-secret-value") && !dump.contains("refresh-token-value"),
            "{dump}"
        );
        assert!(dump.contains("Secret(***)"));
    }

    #[test]
    fn round_trips_through_json() {
        let cfg = SalesforceConfig::new(
            "https://login.example",
            Credentials::ClientCredentials {
                client_id: "app".into(),
                client_secret: "s".into(),
            },
        );
        let back: SalesforceConfig =
            serde_json::from_str(&serde_json::to_string(&cfg).unwrap()).unwrap();
        assert_eq!(back, cfg);
    }
}
