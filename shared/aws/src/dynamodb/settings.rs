//! Tenant settings (optimistic concurrency on a version), their change history, the
//! tenant registry and the job catalog.

use super::error::{self, TxError};
use super::items::*;
use super::{DynamoStore, Item};
use async_trait::async_trait;
use aws_sdk_dynamodb::types::{Put, ReturnValuesOnConditionCheckFailure, TransactWriteItem};
use crm_export_core::domain::*;
use crm_export_core::ports::*;
use crm_export_core::store::pagination::{decode_token, encode_token};

const VERSION: &str = "version";

fn put(table: &str, item: Item) -> Result<Put, StoreError> {
    Put::builder()
        .table_name(table)
        .set_item(Some(item))
        .build()
        .map_err(error::build)
}

fn history_sk(version: u64) -> String {
    format!("{PREFIX_HIST}{version:020}")
}

impl DynamoStore {
    async fn get_state_item(&self, item_key: Item) -> Result<Option<Item>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.config.state_table)
            .set_key(Some(item_key))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| error::classify("GetItem", e))?;
        Ok(out.item)
    }
}

#[async_trait]
impl SettingsStore for DynamoStore {
    async fn get_settings(
        &self,
        tenant: &TenantId,
    ) -> Result<Option<VersionedSettings>, StoreError> {
        let Some(item) = self
            .get_state_item(key(tenant_pk(tenant), SK_SETTINGS))
            .await?
        else {
            return Ok(None);
        };
        Ok(Some(VersionedSettings {
            settings: from_json(&item, "settings")?,
            version: get_n(&item, VERSION)?,
        }))
    }

    async fn put_settings(
        &self,
        tenant: &TenantId,
        expected_version: u64,
        change: SettingsChange,
        event: Event,
    ) -> Result<u64, StoreError> {
        let table = &self.config.state_table;
        let version = expected_version + 1;
        let change = SettingsChange { version, ..change };
        let mut settings = key(tenant_pk(tenant), SK_SETTINGS);
        settings.insert("settings".into(), to_json(&change.new)?);
        settings.insert(VERSION.into(), n(version));
        settings.insert("updated_at".into(), ts(change.at));
        let mut p = Put::builder()
            .table_name(table)
            .set_item(Some(settings))
            .condition_expression(if expected_version == 0 {
                "attribute_not_exists(#v)"
            } else {
                "#v = :expected"
            })
            .expression_attribute_names("#v", VERSION)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        if expected_version > 0 {
            p = p.expression_attribute_values(":expected", n(expected_version));
        }
        let p = p.build().map_err(error::build)?;

        let mut history = key(tenant_pk(tenant), history_sk(version));
        history.insert("change".into(), to_json(&change)?);
        let mut tx = vec![
            TransactWriteItem::builder().put(p).build(),
            TransactWriteItem::builder()
                .put(put(table, history)?)
                .build(),
            self.outbox_put(tenant, &event, 0)?.0,
        ];
        if expected_version == 0 {
            // The first settings of a tenant register it for the dispatcher.
            tx.push(
                TransactWriteItem::builder()
                    .put(put(table, key(TENANTS_PK, tenant.as_str()))?)
                    .build(),
            );
        }
        match self
            .client
            .transact_write_items()
            .set_transact_items(Some(tx))
            .send()
            .await
        {
            Ok(_) => Ok(version),
            Err(e) => match error::transact(e) {
                TxError::Condition { index: 0, reason } => {
                    let found = match reason.item().map(|i| get_n::<u64>(i, VERSION)) {
                        Some(Ok(v)) => v,
                        _ => self
                            .get_settings(tenant)
                            .await?
                            .map(|s| s.version)
                            .unwrap_or(0),
                    };
                    Err(StoreError::VersionConflict {
                        expected: expected_version,
                        found,
                    })
                }
                TxError::Condition { index, .. } => Err(StoreError::Unavailable(format!(
                    "put_settings: unexpected condition failure on item {index}"
                ))),
                TxError::Other(e) => Err(e),
            },
        }
    }

    async fn settings_history(
        &self,
        tenant: &TenantId,
        page: Option<&str>,
        limit: usize,
    ) -> Result<Page<SettingsChange>, StoreError> {
        // The token is the version of the last change returned: the next page holds older ones.
        let before: Option<u64> = page.map(decode_token).transpose()?;
        if before == Some(0) || before == Some(1) || limit == 0 {
            return Ok(Page {
                items: Vec::new(),
                next: None,
            });
        }
        let upper = match before {
            Some(b) => history_sk(b - 1),
            None => history_sk(u64::MAX),
        };
        let mut items = Vec::new();
        let mut start = None;
        loop {
            let out = self
                .client
                .query()
                .table_name(&self.config.state_table)
                .key_condition_expression("#pk = :pk AND #sk BETWEEN :lo AND :hi")
                .expression_attribute_names("#pk", PK)
                .expression_attribute_names("#sk", SK)
                .expression_attribute_values(":pk", s(tenant_pk(tenant)))
                .expression_attribute_values(":lo", s(PREFIX_HIST))
                .expression_attribute_values(":hi", s(upper.clone()))
                .scan_index_forward(false)
                .limit((limit + 1 - items.len()).min(1000) as i32)
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| error::classify("Query", e))?;
            for item in out.items() {
                items.push(from_json::<SettingsChange>(item, "change")?);
            }
            match out.last_evaluated_key {
                Some(k) if !k.is_empty() && items.len() <= limit => start = Some(k),
                _ => break,
            }
        }
        let more = items.len() > limit;
        items.truncate(limit);
        let next = if more {
            items.last().map(|c| encode_token(&c.version))
        } else {
            None
        };
        Ok(Page { items, next })
    }

    async fn list_tenants(&self) -> Result<Vec<TenantId>, StoreError> {
        let items = self.query_prefix(TENANTS_PK, "").await?;
        items
            .iter()
            .map(|i| {
                TenantId::new(get_s(i, SK)?)
                    .map_err(|e| StoreError::Unavailable(format!("stored tenant id: {e}")))
            })
            .collect()
    }
}

#[async_trait]
impl JobCatalog for DynamoStore {
    async fn get_job(
        &self,
        tenant: &TenantId,
        job: &JobId,
    ) -> Result<Option<JobDefinition>, StoreError> {
        let item = self
            .get_state_item(key(tenant_pk(tenant), format!("{PREFIX_JOBDEF}{job}")))
            .await?;
        item.as_ref()
            .map(|i| from_json(i, "definition"))
            .transpose()
    }

    async fn put_job(&self, tenant: &TenantId, def: JobDefinition) -> Result<(), StoreError> {
        let mut item = key(tenant_pk(tenant), format!("{PREFIX_JOBDEF}{}", def.job_id));
        item.insert("definition".into(), to_json(&def)?);
        self.client
            .put_item()
            .table_name(&self.config.state_table)
            .set_item(Some(item))
            .send()
            .await
            .map_err(|e| error::classify("PutItem", e))?;
        Ok(())
    }

    async fn list_jobs(&self, tenant: &TenantId) -> Result<Vec<JobDefinition>, StoreError> {
        let items = self.query_prefix(&tenant_pk(tenant), PREFIX_JOBDEF).await?;
        items.iter().map(|i| from_json(i, "definition")).collect()
    }
}
