//! The simulator's org and its `/__sim/` admin API over HTTP: what the demo uses to change
//! the org between phases and to read back what the org holds, exactly as a script would
//! against a `crmx sim` in another process.

use crate::error::{CliError, CliResult};
use serde::de::DeserializeOwned;
use serde::Serialize;
use sf_simulator::{FieldDef, OrgDefinition, RecordView, ValidationRule};

/// The simulator's built-in demo org.
pub fn demo_org() -> CliResult<OrgDefinition> {
    sf_simulator::demo::org()
        .map_err(|e| CliError::internal(format!("the built-in demo org does not parse: {e}")))
}

pub struct SimAdmin {
    http: reqwest::Client,
    base: String,
}

impl SimAdmin {
    pub fn new(base_url: &str) -> CliResult<Self> {
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .build()
            .map_err(|e| CliError::internal(format!("building an HTTP client: {e}")))?;
        Ok(Self {
            http,
            base: base_url.trim_end_matches('/').to_owned(),
        })
    }

    fn failed(&self, what: &str, e: impl std::fmt::Display) -> CliError {
        CliError::unavailable(
            "simulator_unavailable",
            format!("simulator admin API {what} failed: {e}"),
        )
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> CliResult<T> {
        let url = format!("{}/__sim/{path}", self.base);
        let resp = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|e| self.failed(&format!("GET {path}"), e))?;
        if !resp.status().is_success() {
            return Err(self.failed(&format!("GET {path}"), resp.status()));
        }
        resp.json()
            .await
            .map_err(|e| self.failed(&format!("GET {path}"), e))
    }

    async fn put<B: Serialize>(&self, path: &str, body: &B) -> CliResult<()> {
        let url = format!("{}/__sim/{path}", self.base);
        let resp = self
            .http
            .put(&url)
            .json(body)
            .send()
            .await
            .map_err(|e| self.failed(&format!("PUT {path}"), e))?;
        if !resp.status().is_success() {
            let status = resp.status();
            let body = resp.text().await.unwrap_or_default();
            return Err(self.failed(&format!("PUT {path}"), format!("{status} {body}")));
        }
        Ok(())
    }

    pub async fn org(&self) -> CliResult<OrgDefinition> {
        self.get("org").await
    }

    pub async fn records(&self, object: &str) -> CliResult<Vec<RecordView>> {
        self.get(&format!("records/{object}")).await
    }

    pub async fn set_validation_rules(
        &self,
        object: &str,
        rules: &[ValidationRule],
    ) -> CliResult<()> {
        self.put(&format!("objects/{object}/validation_rules"), &rules)
            .await
    }

    pub async fn set_field(&self, object: &str, field: &str, def: &FieldDef) -> CliResult<()> {
        self.put(&format!("objects/{object}/fields/{field}"), def)
            .await
    }

    /// Turns one validation rule of `object` on or off, keeping the others.
    pub async fn set_rule_active(&self, object: &str, rule: &str, active: bool) -> CliResult<()> {
        let org = self.org().await?;
        let mut rules = org
            .objects
            .get(object)
            .map(|o| o.validation_rules.clone())
            .ok_or_else(|| CliError::internal(format!("the org has no object {object}")))?;
        let r = rules
            .iter_mut()
            .find(|r| r.name == rule)
            .ok_or_else(|| CliError::internal(format!("{object} has no validation rule {rule}")))?;
        r.active = active;
        self.set_validation_rules(object, &rules).await
    }

    /// Grants or removes the integration user's edit access to one field (field-level
    /// security), keeping the field's definition.
    pub async fn set_field_editable(
        &self,
        object: &str,
        field: &str,
        editable: bool,
    ) -> CliResult<()> {
        let org = self.org().await?;
        let mut def = org
            .objects
            .get(object)
            .and_then(|o| o.fields.get(field))
            .cloned()
            .ok_or_else(|| CliError::internal(format!("{object} has no field {field}")))?;
        def.fls_editable = editable;
        self.set_field(object, field, &def).await
    }
}
