//! Tenant CRM credentials in AWS Secrets Manager, and the conditional write-back of a
//! rotated refresh token.
//!
//! Each tenant has one secret, `{prefix}{tenant}/salesforce`, whose value is a
//! `SalesforceConfig` JSON document. It is read with `VersionStage=AWSCURRENT`.
//!
//! **Write-back.** Secrets Manager has no conditional `PutSecretValue`, but moving a
//! staging label is conditional: `UpdateSecretVersionStage(AWSCURRENT, MoveToVersionId =
//! new, RemoveFromVersionId = old)` fails unless `AWSCURRENT` is on `old` at that moment.
//! So a rotation `old → new` is
//!
//! 1. find the version whose refresh token is `old` and that is current (the one this
//!    container read; if the token differs, re-read; if the current one still is not
//!    `old`, someone else rotated: `Conflict`);
//! 2. `PutSecretValue` of the document with the new token, under a fresh version id and
//!    only the staging label `CRMX_PENDING` (so it is not current yet);
//! 3. move `AWSCURRENT` from `old`'s version to the new one, conditionally, as above.
//!
//! Two jobs of one tenant that rotate at once can therefore never overwrite each other's
//! newer token with an older one: the second label move fails and that job keeps using its
//! own token in memory (the Salesforce client does), while the store holds the other's.
//! A refresh refused because another container rotated the token first is recovered by
//! [`SecretsManagerCredentialSink::latest_refresh_token`], which the client calls once.

use crate::sdk::{describe, timeouts};
use aws_sdk_secretsmanager::error::ProvideErrorMetadata;
use aws_sdk_secretsmanager::Client;
use crm_export_aws::SdkTimeouts;
use crm_export_core::TenantId;
use crm_export_salesforce::{CredentialSink, SalesforceConfig, SinkError};
use serde_json::Value;
use std::sync::Mutex;
use std::time::Duration;

/// The staging label of a version written but not (yet) made current.
pub const PENDING_STAGE: &str = "CRMX_PENDING";
const CURRENT_STAGE: &str = "AWSCURRENT";

/// Why a tenant's CRM configuration could not be had.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("the secret {0} does not exist")]
    NotFound(String),
    #[error("the secret {name} is not a Salesforce configuration: {reason}")]
    Invalid { name: String, reason: String },
    #[error("Secrets Manager failed: {0}")]
    Unavailable(String),
}

/// One read of a tenant's secret.
#[derive(Debug, Clone)]
pub struct SecretValue {
    pub version_id: String,
    /// The document as stored (unknown fields are kept on write-back).
    pub document: Value,
    pub config: SalesforceConfig,
}

/// Reads tenant secrets.
#[derive(Debug, Clone)]
pub struct TenantSecrets {
    client: Client,
    prefix: String,
}

impl TenantSecrets {
    pub fn new(sdk: &aws_config::SdkConfig, prefix: impl Into<String>, t: &SdkTimeouts) -> Self {
        let (timeout, retry) = timeouts(t);
        let conf = aws_sdk_secretsmanager::config::Builder::from(sdk)
            .timeout_config(timeout)
            .retry_config(retry)
            .build();
        Self::from_client(Client::from_conf(conf), prefix)
    }

    pub fn from_client(client: Client, prefix: impl Into<String>) -> Self {
        Self {
            client,
            prefix: prefix.into(),
        }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The secret name of a tenant's Salesforce connection.
    pub fn secret_name(&self, tenant: &TenantId) -> String {
        format!("{}{}/salesforce", self.prefix, tenant)
    }

    /// Reads the current version of `name`.
    pub async fn read(&self, name: &str) -> Result<SecretValue, SecretError> {
        let out = self
            .client
            .get_secret_value()
            .secret_id(name)
            // Explicit: moto answers an unstaged read with the version last *put*, not the
            // one AWSCURRENT was moved to; AWS reads AWSCURRENT either way.
            .version_stage(CURRENT_STAGE)
            .send()
            .await
            .map_err(|e| match e.code() {
                Some("ResourceNotFoundException") => SecretError::NotFound(name.to_string()),
                _ => SecretError::Unavailable(describe(&e)),
            })?;
        let invalid = |reason: String| SecretError::Invalid {
            name: name.to_string(),
            reason,
        };
        let text = out
            .secret_string()
            .ok_or_else(|| invalid("it has no string value".into()))?;
        let document: Value = serde_json::from_str(text)
            .map_err(|e| invalid(format!("not JSON: {}", redact_quoted(&e.to_string()))))?;
        let config: SalesforceConfig = serde_json::from_value(document.clone())
            .map_err(|e| invalid(redact_quoted(&e.to_string())))?;
        let version_id = out
            .version_id()
            .ok_or_else(|| invalid("the read returned no version id".into()))?
            .to_string();
        Ok(SecretValue {
            version_id,
            document,
            config,
        })
    }
}

/// The error says where the document is wrong, never what it holds: serde quotes values
/// in double quotes (`invalid type: string "..."`) and names fields in backticks.
fn redact_quoted(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut inside = false;
    for c in message.chars() {
        if c == '"' {
            if !inside {
                out.push_str("\"…\"");
            }
            inside = !inside;
        } else if !inside {
            out.push(c);
        }
    }
    out
}

fn refresh_token_of(document: &Value) -> Option<&str> {
    document.get("credentials")?.get("refresh_token")?.as_str()
}

/// The rotated-refresh-token sink of one tenant's Salesforce client (see the module doc).
pub struct SecretsManagerCredentialSink {
    secrets: TenantSecrets,
    name: String,
    /// The version this container believes current, and its document.
    known: Mutex<(String, Value)>,
    /// How long to wait before re-reading when the store still holds a refused token.
    settle: Duration,
}

impl std::fmt::Debug for SecretsManagerCredentialSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretsManagerCredentialSink")
            .field("name", &self.name)
            .field("version", &self.known_version())
            .finish_non_exhaustive()
    }
}

impl SecretsManagerCredentialSink {
    /// A sink for the secret `name`, starting from the value just read.
    pub fn new(
        secrets: TenantSecrets,
        name: impl Into<String>,
        read: &SecretValue,
        settle: Duration,
    ) -> Self {
        Self {
            secrets,
            name: name.into(),
            known: Mutex::new((read.version_id.clone(), read.document.clone())),
            settle,
        }
    }

    /// The version id this sink last read or wrote.
    pub fn known_version(&self) -> String {
        self.lock().0.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (String, Value)> {
        self.known.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn reread(&self) -> Result<(String, Value), SinkError> {
        let v = self
            .secrets
            .read(&self.name)
            .await
            .map_err(|e| SinkError::Failed(e.to_string()))?;
        let known = (v.version_id, v.document);
        *self.lock() = known.clone();
        Ok(known)
    }

    async fn current_version_id(&self) -> Result<String, SinkError> {
        Ok(self.reread().await?.0)
    }
}

#[async_trait::async_trait]
impl CredentialSink for SecretsManagerCredentialSink {
    async fn refresh_token_rotated(&self, old: &str, new: &str) -> Result<(), SinkError> {
        let mut known = self.lock().clone();
        if refresh_token_of(&known.1) != Some(old) {
            known = self.reread().await?;
            if refresh_token_of(&known.1) != Some(old) {
                return Err(SinkError::Conflict);
            }
        }
        let (old_version, mut document) = known;
        document["credentials"]["refresh_token"] = Value::String(new.to_string());
        let text =
            serde_json::to_string(&document).map_err(|e| SinkError::Failed(e.to_string()))?;
        let new_version = uuid::Uuid::new_v4().to_string();
        let client = self.secrets.client();
        client
            .put_secret_value()
            .secret_id(&self.name)
            .secret_string(text)
            .client_request_token(&new_version)
            .version_stages(PENDING_STAGE)
            .send()
            .await
            .map_err(|e| SinkError::Failed(describe(&e)))?;
        let moved = client
            .update_secret_version_stage()
            .secret_id(&self.name)
            .version_stage(CURRENT_STAGE)
            .move_to_version_id(&new_version)
            .remove_from_version_id(&old_version)
            .send()
            .await;
        match moved {
            Ok(_) => {
                *self.lock() = (new_version, document);
                Ok(())
            }
            Err(e) => {
                // Refused because AWSCURRENT moved on since the read (another job rotated):
                // that is the conflict the condition exists for. Anything else is a failure.
                let detail = describe(&e);
                match self.current_version_id().await {
                    Ok(current) if current != old_version => Err(SinkError::Conflict),
                    _ => Err(SinkError::Failed(detail)),
                }
            }
        }
    }

    async fn latest_refresh_token(&self) -> Result<Option<String>, SinkError> {
        let before = refresh_token_of(&self.lock().1).map(str::to_owned);
        let (_, mut document) = self.reread().await?;
        // A token refused while the store still holds it may have been rotated by another
        // container whose write has not landed yet: give it a moment, twice.
        for _ in 0..2 {
            if refresh_token_of(&document).map(str::to_owned) != before || self.settle.is_zero() {
                break;
            }
            tokio::time::sleep(self.settle).await;
            document = self.reread().await?.1;
        }
        Ok(refresh_token_of(&document).map(str::to_owned))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_errors_never_repeat_the_values() {
        let err = serde_json::from_str::<SalesforceConfig>(
            r#"{"login_url": "https://x", "credentials": {"grant": "refresh_token", "client_id": 7, "refresh_token": "s3cr3t"}}"#,
        )
        .unwrap_err()
        .to_string();
        let shown = redact_quoted(&format!("{err} near \"s3cr3t\""));
        assert!(!shown.contains("s3cr3t"), "{shown}");
        assert!(shown.contains("invalid type"), "{shown}");
    }
}
