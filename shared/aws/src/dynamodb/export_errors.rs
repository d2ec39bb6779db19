//! Reading ExportErrors items (they are written by the commit). Reads that drive what the
//! engine sends are strongly consistent: a key lookup, the `UNRES#` markers, and the retry
//! candidates re-read after the (eventually consistent) index found them. Listing and
//! counting for people use the `by_status` index as is.

use super::error;
use super::items::*;
use super::{DynamoStore, Item};
use async_trait::async_trait;
use aws_sdk_dynamodb::types::{AttributeValue, Select};
use crm_export_core::domain::*;
use crm_export_core::ports::*;
use crm_export_core::store::pagination::{decode_token, encode_token};
use std::collections::HashMap;

/// Page position of `list_errors`: last attempt and key of the last item returned.
#[derive(serde::Serialize, serde::Deserialize)]
struct ErrorPos(Timestamp, String);

const ALL_STATUSES: [ErrorStatus; 4] = [
    ErrorStatus::Open,
    ErrorStatus::Parked,
    ErrorStatus::Resolved,
    ErrorStatus::Superseded,
];

impl DynamoStore {
    /// One page of a GSI query.
    #[allow(clippy::too_many_arguments)]
    async fn query_index(
        &self,
        index: &str,
        key_condition: &str,
        values: &[(&str, AttributeValue)],
        filter: Option<(&str, AttributeValue)>,
        limit: usize,
        start: Option<Item>,
    ) -> Result<(Vec<Item>, Option<Item>), StoreError> {
        let mut q = self
            .client
            .query()
            .table_name(&self.config.state_table)
            .index_name(index)
            .key_condition_expression(key_condition)
            .limit(limit.clamp(1, 1000) as i32)
            .set_exclusive_start_key(start);
        let (pk_name, sk_name) = if index == GSI_OPEN {
            (GSI_OPEN_PK, GSI_OPEN_SK)
        } else {
            (GSI_STATUS_PK, GSI_STATUS_SK)
        };
        q = q.expression_attribute_names("#p", pk_name);
        if key_condition.contains("#s") {
            q = q.expression_attribute_names("#s", sk_name);
        }
        for (name, v) in values {
            q = q.expression_attribute_values(*name, v.clone());
        }
        if let Some((name, v)) = filter {
            q = q
                .filter_expression("#code = :code")
                .expression_attribute_names("#code", "code")
                .expression_attribute_values(name, v);
        }
        let out = q.send().await.map_err(|e| error::classify("Query", e))?;
        Ok((
            out.items.unwrap_or_default(),
            out.last_evaluated_key.filter(|k| !k.is_empty()),
        ))
    }

    /// Items of one status after `after_sk` in `by_status` order, up to `want` of them.
    async fn list_status(
        &self,
        job: &JobRef,
        status: ErrorStatus,
        after_sk: Option<&str>,
        code: Option<&str>,
        want: usize,
    ) -> Result<Vec<(String, Item)>, StoreError> {
        let mut values = vec![(":p", s(status_pk(job, status)))];
        let cond = match after_sk {
            Some(a) => {
                values.push((":after", s(a)));
                "#p = :p AND #s > :after"
            }
            None => "#p = :p",
        };
        let mut out = Vec::new();
        let mut start = None;
        loop {
            let filter = code.map(|c| (":code", s(c)));
            let (items, next) = self
                .query_index(GSI_STATUS, cond, &values, filter, want - out.len(), start)
                .await?;
            for item in items {
                out.push((get_s(&item, GSI_STATUS_SK)?.to_string(), item));
            }
            match next {
                Some(k) if out.len() < want => start = Some(k),
                _ => return Ok(out),
            }
        }
    }
}

#[async_trait]
impl ExportErrorStore for DynamoStore {
    async fn get_error(
        &self,
        job: &JobRef,
        key: &RecordKey,
    ) -> Result<Option<ExportErrorItem>, StoreError> {
        if check_key(key).is_err() {
            return Ok(None);
        }
        let out = self
            .client
            .get_item()
            .table_name(&self.config.state_table)
            .set_key(Some(error_key(job, key)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| error::classify("GetItem", e))?;
        out.item.as_ref().map(error_from).transpose()
    }

    async fn unresolved_errors(&self, job: &JobRef) -> Result<HashMap<RecordKey, Seq>, StoreError> {
        let items = self.query_prefix(&job_pk(job), PREFIX_UNRES).await?;
        items
            .iter()
            .map(|i| {
                let sk = get_s(i, SK)?;
                Ok((
                    RecordKey::from_stored(sk.strip_prefix(PREFIX_UNRES).unwrap_or(sk)),
                    get_n(i, SEQ)?,
                ))
            })
            .collect()
    }

    async fn open_errors_for_retry(
        &self,
        job: &JobRef,
        before: Timestamp,
        after: Option<(Timestamp, RecordKey)>,
        limit: usize,
    ) -> Result<Vec<ExportErrorItem>, StoreError> {
        let hi = sortable(before)?;
        let lo = after.as_ref().map(|(t, k)| open_sk(*t, k)).transpose()?;
        let mut values = vec![(":p", s(job_id(job))), (":hi", s(hi))];
        let cond = match &lo {
            Some(lo) => {
                values.push((":lo", s(lo)));
                "#p = :p AND #s BETWEEN :lo AND :hi"
            }
            None => "#p = :p AND #s < :hi",
        };
        let mut out = Vec::new();
        let mut start = None;
        while out.len() < limit {
            // The index holds keys only and lags behind writes: it proposes candidates, the
            // consistent re-read decides. An item resolved or retried since the index saw
            // it is dropped, so a stale version is never handed out for re-sending.
            let (found, next) = self
                .query_index(
                    GSI_OPEN,
                    cond,
                    &values,
                    None,
                    limit - out.len() + 1,
                    start.take(),
                )
                .await?;
            let mut positions: HashMap<String, String> = HashMap::new();
            let mut keys = Vec::new();
            for item in &found {
                let pos = get_s(item, GSI_OPEN_SK)?;
                if lo.as_deref() == Some(pos) {
                    continue; // BETWEEN includes the position we start after
                }
                let sk = get_s(item, SK)?.to_string();
                keys.push(key(job_pk(job), sk.clone()));
                positions.insert(sk, pos.to_string());
            }
            let mut fresh: Vec<(String, ExportErrorItem)> = Vec::new();
            for item in self.batch_get_state(keys).await? {
                let pos = positions.get(get_s(&item, SK)?);
                if opt_s(&item, GSI_OPEN_SK).is_some()
                    && opt_s(&item, GSI_OPEN_SK) == pos.map(String::as_str)
                {
                    fresh.push((pos.cloned().unwrap_or_default(), error_from(&item)?));
                }
            }
            fresh.sort_by(|a, b| a.0.cmp(&b.0));
            out.extend(fresh.into_iter().map(|(_, e)| e));
            match next {
                Some(k) => start = Some(k),
                None => break,
            }
        }
        out.truncate(limit);
        Ok(out)
    }

    async fn list_errors(
        &self,
        job: &JobRef,
        filter: &ErrorFilter,
        page: Option<&str>,
        limit: usize,
    ) -> Result<Page<ExportErrorItem>, StoreError> {
        let after: Option<ErrorPos> = page.map(decode_token).transpose()?;
        let after_sk = after
            .as_ref()
            .map(|ErrorPos(t, k)| status_sk(*t, &RecordKey::from_stored(k.clone())))
            .transpose()?;
        let statuses: Vec<ErrorStatus> = match filter.status {
            Some(s) => vec![s],
            None => ALL_STATUSES.to_vec(),
        };
        // Each status is its own index partition; without a status filter the four are
        // merged by their sort key (newest last attempt first, ties by key).
        let mut all = Vec::new();
        for status in statuses {
            all.extend(
                self.list_status(
                    job,
                    status,
                    after_sk.as_deref(),
                    filter.code.as_deref(),
                    limit + 1,
                )
                .await?,
            );
        }
        all.sort_by(|a, b| a.0.cmp(&b.0));
        let more = all.len() > limit;
        all.truncate(limit);
        let items: Vec<ExportErrorItem> = all
            .iter()
            .map(|(_, i)| error_from(i))
            .collect::<Result<_, _>>()?;
        let next = if more {
            items
                .last()
                .map(|e| encode_token(&ErrorPos(e.last_attempt_at, e.key.as_str().to_string())))
        } else {
            None
        };
        Ok(Page { items, next })
    }

    async fn count_errors(&self, job: &JobRef, status: ErrorStatus) -> Result<u64, StoreError> {
        let mut total = 0u64;
        let mut start = None;
        loop {
            let out = self
                .client
                .query()
                .table_name(&self.config.state_table)
                .index_name(GSI_STATUS)
                .key_condition_expression("#p = :p")
                .expression_attribute_names("#p", GSI_STATUS_PK)
                .expression_attribute_values(":p", s(status_pk(job, status)))
                .select(Select::Count)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| error::classify("Query", e))?;
            total += out.count.max(0) as u64;
            match out.last_evaluated_key {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => return Ok(total),
            }
        }
    }
}
