//! Building the Salesforce client of a run, and writing rotated refresh tokens back to the
//! `--crm` file so the next invocation is not locked out.

use crate::config::CrmTarget;
use crate::error::{CliError, CliResult};
use crm_export_salesforce::{
    CredentialSink, Credentials, NoopCredentialSink, SalesforceClient, SalesforceConfig, SinkError,
};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

pub fn client(target: &CrmTarget) -> CliResult<SalesforceClient> {
    let sink: Arc<dyn CredentialSink> = match (&target.file, &target.config.credentials) {
        (Some(path), Credentials::RefreshToken { .. }) => Arc::new(FileCredentialSink::new(path)),
        _ => Arc::new(NoopCredentialSink),
    };
    SalesforceClient::with_credential_sink(target.config.clone(), sink)
        .map_err(|e| CliError::bad_input(format!("the CRM connection is unusable: {e}")))
}

/// Keeps the refresh token of a `--crm` file current: a rotation rewrites the file
/// (atomically: a temp file renamed over it), only if it still holds the replaced token.
pub struct FileCredentialSink {
    path: PathBuf,
    lock: Mutex<()>,
}

impl FileCredentialSink {
    pub fn new(path: &Path) -> Self {
        Self {
            path: path.to_owned(),
            lock: Mutex::new(()),
        }
    }

    fn read(&self) -> Result<SalesforceConfig, SinkError> {
        let text = std::fs::read_to_string(&self.path)
            .map_err(|e| SinkError::Failed(format!("reading {}: {e}", self.path.display())))?;
        serde_json::from_str(&text)
            .map_err(|e| SinkError::Failed(format!("parsing {}: {e}", self.path.display())))
    }

    fn stored_token(cfg: &SalesforceConfig) -> Option<String> {
        match &cfg.credentials {
            Credentials::RefreshToken { refresh_token, .. } => {
                Some(refresh_token.expose().to_owned())
            }
            Credentials::ClientCredentials { .. } => None,
        }
    }
}

#[async_trait::async_trait]
impl CredentialSink for FileCredentialSink {
    async fn refresh_token_rotated(&self, old: &str, new: &str) -> Result<(), SinkError> {
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut cfg = self.read()?;
        if Self::stored_token(&cfg).as_deref() != Some(old) {
            return Err(SinkError::Conflict);
        }
        if let Credentials::RefreshToken { refresh_token, .. } = &mut cfg.credentials {
            *refresh_token = new.into();
        }
        let text = serde_json::to_string_pretty(&cfg)
            .map_err(|e| SinkError::Failed(format!("serialising the connection: {e}")))?;
        let dir = self
            .path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let tmp = tempfile::NamedTempFile::new_in(dir)
            .map_err(|e| SinkError::Failed(format!("creating a temp file: {e}")))?;
        std::fs::write(tmp.path(), text)
            .map_err(|e| SinkError::Failed(format!("writing a temp file: {e}")))?;
        tmp.persist(&self.path)
            .map_err(|e| SinkError::Failed(format!("replacing {}: {e}", self.path.display())))?;
        Ok(())
    }

    async fn latest_refresh_token(&self) -> Result<Option<String>, SinkError> {
        Ok(Self::stored_token(&self.read()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_rotation_rewrites_the_file_only_from_the_stored_token() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("crm.json");
        let cfg = SalesforceConfig::new(
            "https://login.example",
            Credentials::RefreshToken {
                client_id: "app".into(),
                client_secret: None,
                refresh_token: "rt-1".into(),
            },
        );
        std::fs::write(&path, serde_json::to_string(&cfg).unwrap()).unwrap();
        let sink = FileCredentialSink::new(&path);
        sink.refresh_token_rotated("rt-1", "rt-2").await.unwrap();
        assert_eq!(
            sink.latest_refresh_token().await.unwrap().as_deref(),
            Some("rt-2")
        );
        // A rotation from a token the file no longer holds (another process rotated first)
        // must not overwrite the newer one.
        assert_eq!(
            sink.refresh_token_rotated("rt-1", "rt-3").await,
            Err(SinkError::Conflict)
        );
        assert_eq!(
            sink.latest_refresh_token().await.unwrap().as_deref(),
            Some("rt-2")
        );
    }
}
