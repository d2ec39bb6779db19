//! The API budget: one counter item per tenant and hour (`API#<hour>`), incremented with
//! `ADD` and expiring (TTL) once it can no longer count towards the last 24 h.

use super::error;
use super::items::*;
use super::DynamoStore;
use async_trait::async_trait;
use aws_sdk_dynamodb::types::Update;
use crm_export_core::domain::*;
use crm_export_core::ports::*;

/// Sort key of an hour bucket: fixed width, so buckets sort like their hours.
fn bucket_sk(bucket: i64) -> String {
    format!(
        "{PREFIX_API}{:020}",
        (bucket as i128 - i64::MIN as i128) as u64
    )
}

impl DynamoStore {
    fn bucket_ttl(&self, bucket: i64) -> i64 {
        let keep = self
            .config
            .budget_retention
            .max(std::time::Duration::from_secs(25 * 3600));
        bucket.saturating_add(keep.as_secs() as i64)
    }

    /// The increment of a tenant's hour bucket: one more item of a commit's transaction,
    /// or sent alone by `add_api_calls`.
    pub(crate) fn budget_add(
        &self,
        tenant: &TenantId,
        at: Timestamp,
        calls: u64,
    ) -> Result<Update, StoreError> {
        let bucket = hour_bucket(at);
        Update::builder()
            .table_name(&self.config.state_table)
            .set_key(Some(key(tenant_pk(tenant), bucket_sk(bucket))))
            .update_expression("ADD #calls :n SET #ttl = :ttl")
            .expression_attribute_names("#calls", "calls")
            .expression_attribute_names("#ttl", TTL)
            .expression_attribute_values(":n", n(calls))
            .expression_attribute_values(":ttl", n(self.bucket_ttl(bucket)))
            .build()
            .map_err(error::build)
    }
}

#[async_trait]
impl ApiBudget for DynamoStore {
    async fn add_api_calls(
        &self,
        tenant: &TenantId,
        at: Timestamp,
        calls: u64,
    ) -> Result<(), StoreError> {
        let update = self.budget_add(tenant, at, calls)?;
        self.update_alone(&update)
            .await
            .map_err(|e| error::classify("UpdateItem", e))
    }

    async fn api_calls_last_24h(
        &self,
        tenant: &TenantId,
        now: Timestamp,
    ) -> Result<u64, StoreError> {
        // The key range selects the buckets, so an expired bucket that TTL has not removed
        // yet (or never will, on moto) is not counted.
        let from = hour_bucket(now - chrono::Duration::hours(24));
        let mut total = 0u64;
        let mut start = None;
        loop {
            let page = self
                .client
                .query()
                .table_name(&self.config.state_table)
                .key_condition_expression("#pk = :pk AND #sk BETWEEN :lo AND :hi")
                .expression_attribute_names("#pk", PK)
                .expression_attribute_names("#sk", SK)
                .expression_attribute_values(":pk", s(tenant_pk(tenant)))
                .expression_attribute_values(":lo", s(bucket_sk(from)))
                .expression_attribute_values(":hi", s(bucket_sk(i64::MAX)))
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| error::classify("Query", e))?;
            for item in page.items() {
                total = total.saturating_add(get_n::<u64>(item, "calls")?);
            }
            match page.last_evaluated_key {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => return Ok(total),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_keys_sort_like_hours() {
        let keys: Vec<_> = [-7200, -3600, 0, 3600, 1_700_000_000]
            .iter()
            .map(|b| bucket_sk(*b))
            .collect();
        assert!(keys.windows(2).all(|w| w[0] < w[1]), "{keys:?}");
        assert!(bucket_sk(i64::MAX) > keys[4]);
    }
}
