//! The job lease: one item per job, taken and renewed with conditional writes on its
//! expiry and token (SPEC §4.2).

use super::error;
use super::items::*;
use super::{DynamoStore, Item};
use async_trait::async_trait;
use aws_sdk_dynamodb::types::{ConditionCheck, TransactWriteItem, Update};
use crm_export_core::domain::*;
use crm_export_core::ports::*;
use std::time::Duration;

const EXPIRES_NS: &str = "expires_ns";

fn expires(now: Timestamp, duration: Duration) -> Result<Timestamp, StoreError> {
    chrono::Duration::from_std(duration)
        .ok()
        .and_then(|d| now.checked_add_signed(d))
        .ok_or_else(|| StoreError::Invalid(format!("lease duration {duration:?} is out of range")))
}

impl DynamoStore {
    fn lease_key(&self, job: &JobRef) -> Item {
        key(job_pk(job), SK_LEASE)
    }

    /// A transaction item that fails unless `lease` is still held at `now`.
    pub(crate) fn lease_check(
        &self,
        job: &JobRef,
        lease: &Lease,
        now: Timestamp,
    ) -> Result<TransactWriteItem, StoreError> {
        let check = ConditionCheck::builder()
            .table_name(&self.config.state_table)
            .set_key(Some(self.lease_key(job)))
            .condition_expression("#token = :token AND #exp > :now")
            .expression_attribute_names("#token", "token")
            .expression_attribute_names("#exp", EXPIRES_NS)
            .expression_attribute_values(":token", s(&lease.token.0))
            .expression_attribute_values(":now", n(nanos(now)?))
            .build()
            .map_err(error::build)?;
        Ok(TransactWriteItem::builder().condition_check(check).build())
    }

    /// The lease extended to `now + duration`, if still held at `now`: a commit's first
    /// transaction item, or sent alone by `renew_lease`.
    pub(crate) fn lease_extend(
        &self,
        job: &JobRef,
        lease: &Lease,
        now: Timestamp,
        duration: Duration,
    ) -> Result<Update, StoreError> {
        let until = expires(now, duration)?;
        Update::builder()
            .table_name(&self.config.state_table)
            .set_key(Some(self.lease_key(job)))
            .update_expression("SET #exp = :new, #at = :at")
            .condition_expression("#token = :token AND #exp > :now")
            .expression_attribute_names("#exp", EXPIRES_NS)
            .expression_attribute_names("#at", "expires_at")
            .expression_attribute_names("#token", "token")
            .expression_attribute_values(":new", n(nanos(until)?))
            .expression_attribute_values(":at", ts(until))
            .expression_attribute_values(":token", s(&lease.token.0))
            .expression_attribute_values(":now", n(nanos(now)?))
            .build()
            .map_err(error::build)
    }
}

#[async_trait]
impl LeaseStore for DynamoStore {
    async fn acquire_lease(
        &self,
        job: &JobRef,
        owner: &RunId,
        now: Timestamp,
        duration: Duration,
    ) -> Result<Option<Lease>, StoreError> {
        let lease = Lease {
            token: LeaseToken(uuid::Uuid::new_v4().to_string()),
            owner: owner.clone(),
            expires_at: expires(now, duration)?,
        };
        let mut item = self.lease_key(job);
        item.insert("token".into(), s(&lease.token.0));
        item.insert("owner".into(), s(&owner.0));
        item.insert("expires_at".into(), ts(lease.expires_at));
        item.insert(EXPIRES_NS.into(), n(nanos(lease.expires_at)?));
        let res = self
            .client
            .put_item()
            .table_name(&self.config.state_table)
            .set_item(Some(item))
            // Free: never taken, released, or expired.
            .condition_expression("attribute_not_exists(#pk) OR #exp <= :now")
            .expression_attribute_names("#pk", PK)
            .expression_attribute_names("#exp", EXPIRES_NS)
            .expression_attribute_values(":now", n(nanos(now)?))
            .send()
            .await;
        match res {
            Ok(_) => Ok(Some(lease)),
            Err(e) if error::is_condition_failed(&e) => Ok(None),
            Err(e) => Err(error::classify("PutItem", e)),
        }
    }

    async fn renew_lease(
        &self,
        job: &JobRef,
        lease: &Lease,
        now: Timestamp,
        duration: Duration,
    ) -> Result<Lease, StoreError> {
        let renewed = Lease {
            expires_at: expires(now, duration)?,
            ..lease.clone()
        };
        let update = self.lease_extend(job, lease, now, duration)?;
        match self.update_alone(&update).await {
            Ok(()) => Ok(renewed),
            Err(e) if error::is_condition_failed(&e) => Err(StoreError::LeaseLost),
            Err(e) => Err(error::classify("UpdateItem", e)),
        }
    }

    async fn release_lease(&self, job: &JobRef, lease: &Lease) -> Result<(), StoreError> {
        let res = self
            .client
            .delete_item()
            .table_name(&self.config.state_table)
            .set_key(Some(self.lease_key(job)))
            .condition_expression("#token = :token")
            .expression_attribute_names("#token", "token")
            .expression_attribute_values(":token", s(&lease.token.0))
            .send()
            .await;
        match res {
            Ok(_) => Ok(()),
            // Taken over or gone already: nothing of ours to release.
            Err(e) if error::is_condition_failed(&e) => Ok(()),
            Err(e) => Err(error::classify("DeleteItem", e)),
        }
    }
}
