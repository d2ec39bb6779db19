//! Job state and the batch commit: state, ExportErrors writes and outbox events in one
//! `TransactWriteItems`, with a `ConditionCheck` on the lease item, so nothing is written
//! unless the run still holds the lease.

use super::error::{self, TxError};
use super::items::*;
use super::queue::MAX_TX_ITEMS;
use super::{DynamoStore, Item};
use async_trait::async_trait;
use aws_sdk_dynamodb::types::{Delete, Put, TransactWriteItem};
use crm_export_core::domain::*;
use crm_export_core::ports::*;
use std::collections::{HashMap, HashSet};

const MAX_TX_BYTES: usize = 3_500_000;

/// Transaction items that belong together (an ExportErrors item and its marker) and their
/// approximate size.
struct Group {
    items: Vec<TransactWriteItem>,
    bytes: usize,
}

impl DynamoStore {
    /// Folds the commit's ExportErrors writes into one final item per key (a transaction
    /// may touch an item once). `Resolve` depends on the stored item, which is read first;
    /// that read is safe because only the lease holder writes a job's ExportErrors items,
    /// and the transaction re-checks the lease.
    async fn error_groups(
        &self,
        job: &JobRef,
        writes: Vec<ErrorWrite>,
        now: Timestamp,
    ) -> Result<Vec<Group>, StoreError> {
        let mut first_is_resolve = Vec::new();
        let mut seen = HashSet::new();
        for w in &writes {
            let (k, is_resolve) = match w {
                ErrorWrite::Put(item) => (&item.key, false),
                ErrorWrite::Resolve { key, .. } => (key, true),
            };
            check_key(k)?;
            if seen.insert(k.clone()) && is_resolve {
                first_is_resolve.push(error_key(job, k));
            }
        }
        let mut current: HashMap<RecordKey, ExportErrorItem> = HashMap::new();
        for item in self.batch_get_state(first_is_resolve).await? {
            let e = error_from(&item)?;
            current.insert(e.key.clone(), e);
        }
        let mut order: Vec<RecordKey> = Vec::new();
        let mut changed = HashSet::new();
        for w in writes {
            match w {
                ErrorWrite::Put(item) => {
                    if changed.insert(item.key.clone()) {
                        order.push(item.key.clone());
                    }
                    current.insert(item.key.clone(), item);
                }
                ErrorWrite::Resolve { key, by_seq, at } => {
                    if let Some(item) = current.get_mut(&key) {
                        if item.resolve(by_seq, at) && changed.insert(key.clone()) {
                            order.push(key);
                        }
                    }
                }
            }
        }
        let state = &self.config.state_table;
        let mut groups = Vec::with_capacity(order.len());
        for k in order {
            let e = &current[&k];
            let item = error_item(job, e, self.config.error_retention, now)?;
            let bytes = item_bytes(&item);
            let put = Put::builder()
                .table_name(state)
                .set_item(Some(item))
                .build()
                .map_err(error::build)?;
            // The marker lists unresolved keys for `unresolved_errors`, read consistently.
            let marker = if e.status.is_unresolved() {
                let mut m = unresolved_key(job, &k);
                m.insert(SEQ.into(), n(e.seq));
                let p = Put::builder()
                    .table_name(state)
                    .set_item(Some(m))
                    .build()
                    .map_err(error::build)?;
                TransactWriteItem::builder().put(p).build()
            } else {
                let d = Delete::builder()
                    .table_name(state)
                    .set_key(Some(unresolved_key(job, &k)))
                    .build()
                    .map_err(error::build)?;
                TransactWriteItem::builder().delete(d).build()
            };
            groups.push(Group {
                items: vec![TransactWriteItem::builder().put(put).build(), marker],
                bytes: bytes + 200,
            });
        }
        Ok(groups)
    }

    /// Runs one lease-checked transaction (the check is item 0).
    async fn lease_checked(&self, items: Vec<TransactWriteItem>) -> Result<(), StoreError> {
        match self
            .client
            .transact_write_items()
            .set_transact_items(Some(items))
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => match error::transact(e) {
                TxError::Condition { index: 0, .. } => Err(StoreError::LeaseLost),
                TxError::Condition { index, .. } => Err(StoreError::Unavailable(format!(
                    "commit: unexpected condition failure on item {index}"
                ))),
                TxError::Other(e) => Err(e),
            },
        }
    }
}

/// Rough size of an item as DynamoDB counts it (names plus values).
pub(crate) fn item_bytes(item: &Item) -> usize {
    use aws_sdk_dynamodb::types::AttributeValue as A;
    item.iter()
        .map(|(k, v)| {
            k.len()
                + match v {
                    A::S(s) => s.len(),
                    A::N(n) => n.len(),
                    _ => 64,
                }
        })
        .sum()
}

#[async_trait]
impl JobStateStore for DynamoStore {
    async fn load_state(&self, job: &JobRef) -> Result<JobState, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.config.state_table)
            .set_key(Some(key(job_pk(job), SK_STATE)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| error::classify("GetItem", e))?;
        match out.item {
            Some(item) => from_json(&item, "state"),
            None => Ok(JobState::default()),
        }
    }

    async fn commit(
        &self,
        job: &JobRef,
        lease: &Lease,
        now: Timestamp,
        commit: Commit,
    ) -> Result<(), StoreError> {
        let state_table = &self.config.state_table;
        let mut state_item = key(job_pk(job), SK_STATE);
        state_item.insert("state".into(), to_json(&commit.state)?);
        state_item.insert("updated_at".into(), ts(now));
        // Item 0 checks the lease (and extends it when asked): a failed condition there
        // means the lease is lost.
        let lease_item = match commit.lease_extension {
            Some(d) => {
                let update = self.lease_extend(job, lease, now, d)?;
                TransactWriteItem::builder().update(update).build()
            }
            None => self.lease_check(job, lease, now)?,
        };
        let mut last = vec![
            lease_item,
            TransactWriteItem::builder()
                .put(
                    Put::builder()
                        .table_name(state_table)
                        .set_item(Some(state_item))
                        .build()
                        .map_err(error::build)?,
                )
                .build(),
        ];
        if commit.api_calls > 0 {
            let update = self.budget_add(&job.tenant, now, commit.api_calls)?;
            last.push(TransactWriteItem::builder().update(update).build());
        }
        let fixed = last.len();
        let mut last_bytes = 0;
        for (i, event) in commit.events.iter().enumerate() {
            let (put, bytes) = self.outbox_put(&job.tenant, event, i)?;
            last.push(put);
            last_bytes += bytes;
        }
        if last.len() > MAX_TX_ITEMS {
            return Err(StoreError::Invalid(format!(
                "a commit carries {} events; at most {} fit in one transaction with the state",
                commit.events.len(),
                MAX_TX_ITEMS - fixed
            )));
        }
        let groups = self.error_groups(job, commit.errors, now).await?;
        let error_items: usize = groups.iter().map(|g| g.items.len()).sum();
        let error_bytes: usize = groups.iter().map(|g| g.bytes).sum();
        if last.len() + error_items <= MAX_TX_ITEMS && last_bytes + error_bytes <= MAX_TX_BYTES {
            last.extend(groups.into_iter().flat_map(|g| g.items));
            return self.lease_checked(last).await;
        }
        // Too much for one transaction: the ExportErrors items first, each chunk checked
        // against the lease, then state and events. Should the run stop in between, the
        // items written are still true (they record what the CRM said about those
        // records) and the cursor has not moved past anything; see infra/TABLES.md.
        let mut chunk = vec![self.lease_check(job, lease, now)?];
        let mut bytes = 0;
        for g in groups {
            if chunk.len() + g.items.len() > MAX_TX_ITEMS || bytes + g.bytes > MAX_TX_BYTES {
                let full = std::mem::replace(&mut chunk, vec![self.lease_check(job, lease, now)?]);
                self.lease_checked(full).await?;
                bytes = 0;
            }
            bytes += g.bytes;
            chunk.extend(g.items);
        }
        if chunk.len() > 1 {
            self.lease_checked(chunk).await?;
        }
        self.lease_checked(last).await
    }
}
