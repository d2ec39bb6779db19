//! The outbox: events recorded in the transaction of the state change they describe
//! (`OUTBOX#<event id>` items of the tenant), deleted once published.

use super::commit::item_bytes;
use super::error;
use super::items::*;
use super::{backoff, DynamoStore, Item, UNPROCESSED_MAX_ATTEMPTS};
use async_trait::async_trait;
use aws_sdk_dynamodb::types::{DeleteRequest, Put, TransactWriteItem, WriteRequest};
use crm_export_core::domain::*;
use crm_export_core::ports::*;
use std::sync::atomic::{AtomicU64, Ordering};

/// Orders the events of a tenant as they were recorded: wall-clock nanoseconds, made
/// strictly increasing within the process, then the event's index in its transaction.
fn next_order() -> u64 {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let next = |prev: u64| now.max(prev + 1);
    match LAST.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |prev| {
        Some(next(prev))
    }) {
        Ok(prev) | Err(prev) => next(prev),
    }
}

impl DynamoStore {
    /// The transaction item that records `event` in the tenant's outbox, and its size.
    pub(crate) fn outbox_put(
        &self,
        tenant: &TenantId,
        event: &Event,
        index: usize,
    ) -> Result<(TransactWriteItem, usize), StoreError> {
        let mut item = key(tenant_pk(tenant), format!("{PREFIX_OUTBOX}{}", event.id));
        item.insert("ord".into(), s(format!("{:020}#{index:05}", next_order())));
        item.insert("event".into(), to_json(event)?);
        let bytes = item_bytes(&item);
        let put = Put::builder()
            .table_name(&self.config.state_table)
            .set_item(Some(item))
            .build()
            .map_err(error::build)?;
        Ok((TransactWriteItem::builder().put(put).build(), bytes))
    }

    /// Every item of a partition whose sort key starts with `prefix`, read consistently.
    pub(crate) async fn query_prefix(
        &self,
        pk: &str,
        prefix: &str,
    ) -> Result<Vec<Item>, StoreError> {
        let mut out = Vec::new();
        let mut start = None;
        loop {
            let mut q = self
                .client
                .query()
                .table_name(&self.config.state_table)
                .expression_attribute_names("#pk", PK)
                .expression_attribute_values(":pk", s(pk));
            // DynamoDB refuses an empty string in a key condition: no prefix, whole partition.
            q = if prefix.is_empty() {
                q.key_condition_expression("#pk = :pk")
            } else {
                q.key_condition_expression("#pk = :pk AND begins_with(#sk, :prefix)")
                    .expression_attribute_names("#sk", SK)
                    .expression_attribute_values(":prefix", s(prefix))
            };
            let page = q
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| error::classify("Query", e))?;
            out.extend(page.items.unwrap_or_default());
            match page.last_evaluated_key {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => return Ok(out),
            }
        }
    }

    /// Deletes items of the state table, 25 per request, retrying unprocessed ones.
    pub(crate) async fn batch_delete_state(&self, keys: Vec<Item>) -> Result<(), StoreError> {
        let table = self.config.state_table.clone();
        for chunk in keys.chunks(25) {
            let mut pending: Vec<WriteRequest> = chunk
                .iter()
                .map(|k| {
                    DeleteRequest::builder()
                        .set_key(Some(k.clone()))
                        .build()
                        .map(|d| WriteRequest::builder().delete_request(d).build())
                        .map_err(error::build)
                })
                .collect::<Result<_, _>>()?;
            let mut attempt = 0;
            while !pending.is_empty() {
                if attempt > 0 {
                    if attempt >= UNPROCESSED_MAX_ATTEMPTS {
                        return Err(StoreError::Unavailable(format!(
                            "BatchWriteItem left {} deletes unprocessed after {attempt} attempts",
                            pending.len()
                        )));
                    }
                    tokio::time::sleep(backoff(attempt)).await;
                }
                attempt += 1;
                let out = self
                    .client
                    .batch_write_item()
                    .request_items(&table, std::mem::take(&mut pending))
                    .send()
                    .await
                    .map_err(|e| error::classify("BatchWriteItem", e))?;
                if let Some(mut un) = out.unprocessed_items {
                    pending = un.remove(&table).unwrap_or_default();
                }
            }
        }
        Ok(())
    }
}

#[async_trait]
impl Outbox for DynamoStore {
    async fn pending_events(&self, tenant: &TenantId) -> Result<Vec<Event>, StoreError> {
        let mut items = self.query_prefix(&tenant_pk(tenant), PREFIX_OUTBOX).await?;
        items.sort_by(|a, b| opt_s(a, "ord").cmp(&opt_s(b, "ord")));
        items.iter().map(|i| from_json(i, "event")).collect()
    }

    async fn mark_published(&self, tenant: &TenantId, ids: &[String]) -> Result<(), StoreError> {
        // Deleting an item that is gone already is not an error, so this is idempotent.
        let mut unique: Vec<&String> = ids.iter().collect();
        unique.sort();
        unique.dedup();
        let keys = unique
            .into_iter()
            .map(|id| key(tenant_pk(tenant), format!("{PREFIX_OUTBOX}{id}")))
            .collect();
        self.batch_delete_state(keys).await
    }
}
