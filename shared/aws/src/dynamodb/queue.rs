//! The export queue: records in the queue table, a per-job counter (`HEAD`) and a per-key
//! index of the newest queued seq (`KEY#<key>`) in the state table.
//!
//! Enqueue is gap-free and ordered under concurrent producers because every transaction
//! that adds records also moves the counter, on the condition that the counter still holds
//! the value the seqs were computed from. Two producers that read the same counter cannot
//! both commit; the loser re-reads and retries. So transactions commit in seq order and a
//! record never becomes visible before a smaller seq of its job.

use super::error::{self, TxError};
use super::items::*;
use super::{backoff, DynamoStore, Item};
use async_trait::async_trait;
use aws_sdk_dynamodb::types::{
    Put, ReturnValuesOnConditionCheckFailure, TransactWriteItem, Update,
};
use crm_export_core::domain::*;
use crm_export_core::ports::*;
use std::collections::{HashMap, HashSet};

/// `TransactWriteItems` takes at most 100 items and 4 MB.
pub(crate) const MAX_TX_ITEMS: usize = 100;
const MAX_TX_BYTES: usize = 3_500_000;
/// The attribute that ties the counter and the records to one enqueue attempt.
const TX: &str = "tx";
/// DynamoDB's item limit is 400 KB; leave room for attribute names and keys.
const MAX_RECORD_BYTES: usize = 390_000;

/// Splits records into chunks that fit one transaction each: the counter update, one put
/// per record and one index put per distinct key.
fn plan_chunks(records: &[NewRecord]) -> Result<Vec<std::ops::Range<usize>>, StoreError> {
    let mut chunks = Vec::new();
    let mut start = 0;
    let mut keys: HashSet<&RecordKey> = HashSet::new();
    let mut bytes = 0usize;
    for (i, r) in records.iter().enumerate() {
        check_key(&r.key)?;
        let size = serde_json::to_string(&r.fields)
            .map(|s| s.len())
            .unwrap_or(0)
            + 2 * r.key.as_str().len()
            + 128;
        if size > MAX_RECORD_BYTES {
            return Err(StoreError::Invalid(format!(
                "record {:?} is about {size} bytes; DynamoDB items hold at most 400 KB",
                r.key.as_str()
            )));
        }
        let new_key = !keys.contains(&r.key);
        let items = 1 + (i - start + 1) + keys.len() + usize::from(new_key);
        if i > start && (items > MAX_TX_ITEMS || bytes + size > MAX_TX_BYTES) {
            chunks.push(start..i);
            start = i;
            keys.clear();
            bytes = 0;
        }
        keys.insert(&r.key);
        bytes += size;
    }
    if start < records.len() {
        chunks.push(start..records.len());
    }
    Ok(chunks)
}

impl DynamoStore {
    fn head_key(&self, job: &JobRef) -> Item {
        key(job_pk(job), SK_HEAD)
    }

    /// The job's counter, read consistently.
    async fn read_head(&self, job: &JobRef) -> Result<Seq, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.config.state_table)
            .set_key(Some(self.head_key(job)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| error::classify("GetItem", e))?;
        match out.item {
            Some(item) => get_n(&item, SEQ),
            None => Ok(0),
        }
    }

    /// One transaction: the counter moves from `head` to `head + records.len()` and the
    /// records and their keys' index items are written. `Err(current)` when another
    /// producer moved the counter first, with the value it holds now if DynamoDB returned it.
    ///
    /// The counter and the records carry a token of this attempt. When the SDK retries a
    /// transaction whose first attempt did commit (a timeout after the write), the retry
    /// fails its counter condition; the token tells that the records are ours and in place,
    /// instead of enqueueing them a second time. (AWS also de-duplicates such retries by
    /// `ClientRequestToken`; moto does not.)
    async fn enqueue_chunk(
        &self,
        job: &JobRef,
        head: Seq,
        records: &[NewRecord],
        now: Timestamp,
    ) -> Result<Result<(), Option<Seq>>, StoreError> {
        let state = &self.config.state_table;
        let new_head = head + records.len() as u64;
        let token = uuid::Uuid::new_v4().to_string();
        let counter = Update::builder()
            .table_name(state)
            .set_key(Some(self.head_key(job)))
            .update_expression("SET #seq = :new, #tx = :tx")
            .condition_expression(if head == 0 {
                "attribute_not_exists(#seq)"
            } else {
                "#seq = :expected"
            })
            .expression_attribute_names("#seq", SEQ)
            .expression_attribute_names("#tx", TX)
            .set_expression_attribute_values(Some({
                let mut v = HashMap::from([
                    (":new".to_string(), n(new_head)),
                    (":tx".to_string(), s(&token)),
                ]);
                if head > 0 {
                    v.insert(":expected".to_string(), n(head));
                }
                v
            }))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .build()
            .map_err(error::build)?;
        let mut tx = vec![TransactWriteItem::builder().update(counter).build()];
        let mut newest: HashMap<&RecordKey, Seq> = HashMap::new();
        for (i, r) in records.iter().enumerate() {
            let seq = head + 1 + i as u64;
            newest.insert(&r.key, seq);
            let mut item = record_item(job, seq, r, now)?;
            item.insert(TX.into(), s(&token));
            let put = Put::builder()
                .table_name(&self.config.queue_table)
                .set_item(Some(item))
                .build()
                .map_err(error::build)?;
            tx.push(TransactWriteItem::builder().put(put).build());
        }
        for (k, seq) in newest {
            // No condition needed: the counter condition orders all enqueues of the job, so
            // this transaction's seqs are above every committed one.
            let mut item = key(job_pk(job), format!("{PREFIX_KEY}{}", k.as_str()));
            item.insert(SEQ.into(), n(seq));
            let put = Put::builder()
                .table_name(state)
                .set_item(Some(item))
                .build()
                .map_err(error::build)?;
            tx.push(TransactWriteItem::builder().put(put).build());
        }
        match self
            .client
            .transact_write_items()
            .set_transact_items(Some(tx))
            .send()
            .await
        {
            Ok(_) => Ok(Ok(())),
            Err(e) => match error::transact(e) {
                TxError::Condition { index: 0, reason } => {
                    if reason.item().and_then(|i| opt_s(i, TX)) == Some(token.as_str()) {
                        return Ok(Ok(())); // our own earlier attempt moved the counter
                    }
                    if self.record_token(job, head + 1).await?.as_deref() == Some(token.as_str()) {
                        return Ok(Ok(())); // ours, and another producer has enqueued since
                    }
                    let current = reason.item().and_then(|item| get_n::<Seq>(item, SEQ).ok());
                    Ok(Err(current))
                }
                TxError::Condition { index, .. } => Err(StoreError::Unavailable(format!(
                    "enqueue: unexpected condition failure on item {index}"
                ))),
                TxError::Other(e) => Err(e),
            },
        }
    }
}

impl DynamoStore {
    /// The enqueue token stored with the record at `seq`, if the record exists.
    async fn record_token(&self, job: &JobRef, seq: Seq) -> Result<Option<String>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.config.queue_table)
            .set_key(Some(queue_key(job, seq)))
            .projection_expression("#tx")
            .expression_attribute_names("#tx", TX)
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| error::classify("GetItem", e))?;
        Ok(out
            .item
            .as_ref()
            .and_then(|i| opt_s(i, TX))
            .map(str::to_string))
    }
}

#[async_trait]
impl ExportQueue for DynamoStore {
    async fn enqueue(
        &self,
        job: &JobRef,
        records: Vec<NewRecord>,
        now: Timestamp,
    ) -> Result<Vec<Seq>, StoreError> {
        let chunks = plan_chunks(&records)?;
        let mut seqs = Vec::with_capacity(records.len());
        let mut head = None;
        for range in chunks {
            let chunk = &records[range];
            let mut attempt = 0;
            loop {
                let h = match head {
                    Some(h) => h,
                    None => self.read_head(job).await?,
                };
                match self.enqueue_chunk(job, h, chunk, now).await? {
                    Ok(()) => {
                        seqs.extend(h + 1..=h + chunk.len() as u64);
                        head = Some(h + chunk.len() as u64);
                        break;
                    }
                    Err(current) => {
                        // Another producer won the race for this counter value.
                        attempt += 1;
                        if attempt >= self.config.enqueue_max_attempts {
                            return Err(StoreError::Unavailable(format!(
                                "enqueue to {job}: the job's counter kept changing ({attempt} attempts)"
                            )));
                        }
                        head = current;
                        tokio::time::sleep(backoff(attempt.min(4))).await;
                    }
                }
            }
        }
        Ok(seqs)
    }

    async fn read_after(
        &self,
        job: &JobRef,
        after: Seq,
        limit: usize,
    ) -> Result<Vec<Record>, StoreError> {
        let mut out: Vec<Record> = Vec::new();
        let mut start = None;
        while out.len() < limit {
            let page = self
                .client
                .query()
                .table_name(&self.config.queue_table)
                .key_condition_expression("#pk = :pk AND #seq > :after")
                .expression_attribute_names("#pk", PK)
                .expression_attribute_names("#seq", SEQ)
                .expression_attribute_values(":pk", s(job_id(job)))
                .expression_attribute_values(":after", n(after))
                .limit((limit - out.len()).min(1000) as i32)
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| error::classify("Query", e))?;
            for item in page.items() {
                out.push(record_from(item)?);
            }
            match page.last_evaluated_key {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => break,
            }
        }
        // Records are written in seq order, gap-free. Should a read ever observe part of a
        // committing transaction, return only the unbroken run after `after`: never a
        // record whose predecessor is not visible yet.
        let contiguous = out
            .iter()
            .enumerate()
            .take_while(|(i, r)| r.seq == after + 1 + *i as u64)
            .count();
        out.truncate(contiguous);
        Ok(out)
    }

    async fn get_record(&self, job: &JobRef, seq: Seq) -> Result<Option<Record>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.config.queue_table)
            .set_key(Some(queue_key(job, seq)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| error::classify("GetItem", e))?;
        out.item.as_ref().map(record_from).transpose()
    }

    async fn latest_seqs(
        &self,
        job: &JobRef,
        keys: &[RecordKey],
    ) -> Result<HashMap<RecordKey, Seq>, StoreError> {
        let unique: HashSet<&RecordKey> = keys.iter().filter(|k| check_key(k).is_ok()).collect();
        let lookups = unique
            .into_iter()
            .map(|k| key(job_pk(job), format!("{PREFIX_KEY}{}", k.as_str())))
            .collect();
        let mut out = HashMap::new();
        for item in self.batch_get_state(lookups).await? {
            let sk = get_s(&item, SK)?;
            let k = sk.strip_prefix(PREFIX_KEY).unwrap_or(sk);
            out.insert(RecordKey::from_stored(k), get_n(&item, SEQ)?);
        }
        Ok(out)
    }

    async fn head(&self, job: &JobRef) -> Result<Seq, StoreError> {
        self.read_head(job).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(k: &str) -> NewRecord {
        NewRecord {
            key: RecordKey::from_stored(k),
            fields: serde_json::Map::new(),
        }
    }

    #[test]
    fn chunks_fit_the_transaction_item_limit() {
        // Distinct keys: counter + record + index item each → 49 records per transaction.
        let distinct: Vec<_> = (0..120).map(|i| rec(&format!("k{i}"))).collect();
        let c = plan_chunks(&distinct).unwrap();
        assert_eq!(c, vec![0..49, 49..98, 98..120]);
        // One key: counter + one index item → 98 records per transaction.
        let same: Vec<_> = (0..120).map(|_| rec("k")).collect();
        assert_eq!(plan_chunks(&same).unwrap(), vec![0..98, 98..120]);
        assert!(plan_chunks(&[]).unwrap().is_empty());
    }

    #[test]
    fn oversized_records_and_keys_are_refused() {
        let mut big = rec("k");
        big.fields
            .insert("x".into(), serde_json::Value::String("x".repeat(400_000)));
        assert!(matches!(plan_chunks(&[big]), Err(StoreError::Invalid(_))));
        assert!(matches!(
            plan_chunks(&[rec(&"k".repeat(1001))]),
            Err(StoreError::Invalid(_))
        ));
    }
}
