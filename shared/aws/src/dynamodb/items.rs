//! Attribute conversions: keys of every item type, timestamps, and domain types ↔ items.
//! The domain never sees `AttributeValue`.

use super::Item;
use aws_sdk_dynamodb::types::AttributeValue;
use crm_export_core::domain::*;
use crm_export_core::ports::StoreError;
use std::time::Duration;

// ---- attribute names -------------------------------------------------------------------

pub(crate) const PK: &str = "pk";
pub(crate) const SK: &str = "sk";
/// Queue table sort key (a number).
pub(crate) const SEQ: &str = "seq";
/// The TTL attribute of the state table (epoch seconds).
pub(crate) const TTL: &str = "ttl";
/// GSI `by_status`: every ExportErrors item, by job and status, newest last attempt first.
pub(crate) const GSI_STATUS: &str = "by_status";
pub(crate) const GSI_STATUS_PK: &str = "status_pk";
pub(crate) const GSI_STATUS_SK: &str = "status_sk";
/// GSI `open_by_last_attempt`: only `open` items (sparse), oldest last attempt first.
pub(crate) const GSI_OPEN: &str = "open_by_last_attempt";
pub(crate) const GSI_OPEN_PK: &str = "open_pk";
pub(crate) const GSI_OPEN_SK: &str = "open_sk";

// ---- keys ------------------------------------------------------------------------------

/// Items of one job in the state table share this partition key.
pub(crate) fn job_pk(job: &JobRef) -> String {
    format!("JOB#{}#{}", job.tenant, job.job)
}
/// Items of one tenant in the state table share this partition key.
pub(crate) fn tenant_pk(tenant: &TenantId) -> String {
    format!("TENANT#{tenant}")
}
/// The tenant registry: one item per tenant with settings, in one partition.
pub(crate) const TENANTS_PK: &str = "TENANTS";
/// Partition key of a job in the queue table and prefix of its GSI partition keys.
pub(crate) fn job_id(job: &JobRef) -> String {
    format!("{}#{}", job.tenant, job.job)
}

pub(crate) const SK_HEAD: &str = "HEAD";
pub(crate) const SK_LEASE: &str = "LEASE";
pub(crate) const SK_STATE: &str = "STATE";
pub(crate) const SK_SETTINGS: &str = "SETTINGS";
pub(crate) const PREFIX_KEY: &str = "KEY#";
pub(crate) const PREFIX_ERR: &str = "ERR#";
pub(crate) const PREFIX_UNRES: &str = "UNRES#";
pub(crate) const PREFIX_HIST: &str = "HIST#";
pub(crate) const PREFIX_JOBDEF: &str = "JOBDEF#";
pub(crate) const PREFIX_OUTBOX: &str = "OUTBOX#";
pub(crate) const PREFIX_API: &str = "API#";

/// Record keys end up in sort keys (1,024 bytes at most, prefix included).
const MAX_KEY_BYTES: usize = 1000;

pub(crate) fn check_key(key: &RecordKey) -> Result<(), StoreError> {
    if key.as_str().len() > MAX_KEY_BYTES {
        return Err(StoreError::Invalid(format!(
            "record key of {} bytes is longer than the {MAX_KEY_BYTES} bytes DynamoDB keys allow",
            key.as_str().len()
        )));
    }
    Ok(())
}

pub(crate) fn key(pk: impl Into<String>, sk: impl Into<String>) -> Item {
    Item::from([(PK.to_string(), s(pk)), (SK.to_string(), s(sk))])
}

pub(crate) fn queue_key(job: &JobRef, seq: Seq) -> Item {
    Item::from([(PK.to_string(), s(job_id(job))), (SEQ.to_string(), n(seq))])
}

// ---- values ----------------------------------------------------------------------------

pub(crate) fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}
pub(crate) fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn corrupt(what: &str, name: &str) -> StoreError {
    StoreError::Unavailable(format!(
        "stored {what} has a missing or malformed attribute {name:?}"
    ))
}

pub(crate) fn get_s<'a>(item: &'a Item, name: &str) -> Result<&'a str, StoreError> {
    match item.get(name) {
        Some(AttributeValue::S(v)) => Ok(v),
        _ => Err(corrupt("item", name)),
    }
}
pub(crate) fn get_n<T: std::str::FromStr>(item: &Item, name: &str) -> Result<T, StoreError> {
    match item.get(name) {
        Some(AttributeValue::N(v)) => v.parse().map_err(|_| corrupt("item", name)),
        _ => Err(corrupt("item", name)),
    }
}
pub(crate) fn opt_s<'a>(item: &'a Item, name: &str) -> Option<&'a str> {
    match item.get(name) {
        Some(AttributeValue::S(v)) => Some(v),
        _ => None,
    }
}
pub(crate) fn opt_n<T: std::str::FromStr>(
    item: &Item,
    name: &str,
) -> Result<Option<T>, StoreError> {
    match item.get(name) {
        None | Some(AttributeValue::Null(_)) => Ok(None),
        Some(AttributeValue::N(v)) => v.parse().map(Some).map_err(|_| corrupt("item", name)),
        Some(_) => Err(corrupt("item", name)),
    }
}

/// A JSON document attribute (domain structs that no key or condition looks into).
pub(crate) fn to_json<T: serde::Serialize>(v: &T) -> Result<AttributeValue, StoreError> {
    serde_json::to_string(v)
        .map(AttributeValue::S)
        .map_err(|e| StoreError::Invalid(format!("cannot serialise: {e}")))
}
pub(crate) fn from_json<T: serde::de::DeserializeOwned>(
    item: &Item,
    name: &str,
) -> Result<T, StoreError> {
    serde_json::from_str(get_s(item, name)?)
        .map_err(|e| StoreError::Unavailable(format!("stored {name:?} is not readable: {e}")))
}

// ---- time ------------------------------------------------------------------------------

/// Timestamps are stored as RFC 3339 with nanoseconds, which round-trips exactly.
pub(crate) fn ts(t: Timestamp) -> AttributeValue {
    s(t.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true))
}
pub(crate) fn get_ts(item: &Item, name: &str) -> Result<Timestamp, StoreError> {
    chrono::DateTime::parse_from_rfc3339(get_s(item, name)?)
        .map(|t| t.with_timezone(&chrono::Utc))
        .map_err(|_| corrupt("timestamp", name))
}
pub(crate) fn opt_ts(item: &Item, name: &str) -> Result<Option<Timestamp>, StoreError> {
    if item.contains_key(name) {
        get_ts(item, name).map(Some)
    } else {
        Ok(None)
    }
}

/// Nanoseconds since the epoch, for comparisons in condition expressions.
pub(crate) fn nanos(t: Timestamp) -> Result<i64, StoreError> {
    t.timestamp_nanos_opt()
        .ok_or_else(|| StoreError::Invalid(format!("timestamp {t} is out of range")))
}

/// A fixed-width decimal that sorts like the time: for ascending sort keys.
pub(crate) fn sortable(t: Timestamp) -> Result<String, StoreError> {
    Ok(format!(
        "{:020}",
        (nanos(t)? as i128 - i64::MIN as i128) as u64
    ))
}
/// A fixed-width decimal that sorts against the time: for newest-first sort keys.
pub(crate) fn sortable_desc(t: Timestamp) -> Result<String, StoreError> {
    Ok(format!(
        "{:020}",
        u64::MAX - (nanos(t)? as i128 - i64::MIN as i128) as u64
    ))
}

/// Epoch seconds of `t + keep`, the value of a TTL attribute.
pub(crate) fn expiry(t: Timestamp, keep: Duration) -> i64 {
    t.timestamp()
        .saturating_add(keep.as_secs().min(i64::MAX as u64) as i64)
}

// ---- records ---------------------------------------------------------------------------

pub(crate) fn record_item(
    job: &JobRef,
    seq: Seq,
    r: &NewRecord,
    at: Timestamp,
) -> Result<Item, StoreError> {
    let mut item = queue_key(job, seq);
    item.insert("key".into(), s(r.key.as_str()));
    item.insert("fields".into(), to_json(&r.fields)?);
    item.insert("enqueued_at".into(), ts(at));
    Ok(item)
}

pub(crate) fn record_from(item: &Item) -> Result<Record, StoreError> {
    Ok(Record {
        seq: get_n(item, SEQ)?,
        key: RecordKey::from_stored(get_s(item, "key")?),
        fields: from_json(item, "fields")?,
        enqueued_at: get_ts(item, "enqueued_at")?,
    })
}

// ---- ExportErrors ----------------------------------------------------------------------

pub(crate) fn error_key(job: &JobRef, key: &RecordKey) -> Item {
    self::key(job_pk(job), format!("{PREFIX_ERR}{}", key.as_str()))
}
pub(crate) fn unresolved_key(job: &JobRef, key: &RecordKey) -> Item {
    self::key(job_pk(job), format!("{PREFIX_UNRES}{}", key.as_str()))
}

pub(crate) fn status_pk(job: &JobRef, status: ErrorStatus) -> String {
    format!("{}#{}", job_id(job), status.as_str())
}
/// `by_status` sort key: newest last attempt first, ties by key.
pub(crate) fn status_sk(last_attempt: Timestamp, key: &RecordKey) -> Result<String, StoreError> {
    Ok(format!("{}#{}", sortable_desc(last_attempt)?, key.as_str()))
}
/// `open_by_last_attempt` sort key: oldest last attempt first, ties by key.
pub(crate) fn open_sk(last_attempt: Timestamp, key: &RecordKey) -> Result<String, StoreError> {
    Ok(format!("{}#{}", sortable(last_attempt)?, key.as_str()))
}

/// The item of an ExportErrors entry, with its index keys and, once it is resolved or
/// superseded, its expiry.
pub(crate) fn error_item(
    job: &JobRef,
    e: &ExportErrorItem,
    retention: Duration,
    now: Timestamp,
) -> Result<Item, StoreError> {
    check_key(&e.key)?;
    let mut item = error_key(job, &e.key);
    item.insert("key".into(), s(e.key.as_str()));
    item.insert(SEQ.into(), n(e.seq));
    item.insert("fields".into(), to_json(&e.fields)?);
    item.insert("code".into(), s(&e.error.code));
    item.insert("error".into(), to_json(&e.error)?);
    item.insert("status".into(), s(e.status.as_str()));
    item.insert("attempts".into(), n(e.attempts));
    item.insert("retry_attempts".into(), n(e.retry_attempts));
    item.insert("first_seen".into(), ts(e.first_seen));
    item.insert("last_seen".into(), ts(e.last_seen));
    item.insert("last_attempt_at".into(), ts(e.last_attempt_at));
    if let Some(t) = e.resolved_at {
        item.insert("resolved_at".into(), ts(t));
    }
    if let Some(by) = e.resolved_by_seq {
        item.insert("resolved_by_seq".into(), n(by));
    }
    item.insert(GSI_STATUS_PK.into(), s(status_pk(job, e.status)));
    item.insert(
        GSI_STATUS_SK.into(),
        s(status_sk(e.last_attempt_at, &e.key)?),
    );
    if e.status == ErrorStatus::Open {
        item.insert(GSI_OPEN_PK.into(), s(job_id(job)));
        item.insert(GSI_OPEN_SK.into(), s(open_sk(e.last_attempt_at, &e.key)?));
    }
    if matches!(e.status, ErrorStatus::Resolved | ErrorStatus::Superseded) {
        item.insert(
            TTL.into(),
            n(expiry(e.resolved_at.unwrap_or(now), retention)),
        );
    }
    Ok(item)
}

pub(crate) fn error_from(item: &Item) -> Result<ExportErrorItem, StoreError> {
    let status = get_s(item, "status")?;
    Ok(ExportErrorItem {
        key: RecordKey::from_stored(get_s(item, "key")?),
        seq: get_n(item, SEQ)?,
        fields: from_json(item, "fields")?,
        error: from_json(item, "error")?,
        status: ErrorStatus::parse(status).ok_or_else(|| corrupt("ExportErrors item", "status"))?,
        attempts: get_n(item, "attempts")?,
        retry_attempts: get_n(item, "retry_attempts")?,
        first_seen: get_ts(item, "first_seen")?,
        last_seen: get_ts(item, "last_seen")?,
        last_attempt_at: get_ts(item, "last_attempt_at")?,
        resolved_at: opt_ts(item, "resolved_at")?,
        resolved_by_seq: opt_n(item, "resolved_by_seq")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn sortable_times_sort_like_the_times() {
        let a = chrono::Utc
            .with_ymd_and_hms(1969, 12, 31, 23, 59, 59)
            .unwrap();
        let b = chrono::Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let c = b + chrono::Duration::nanoseconds(1);
        let asc: Vec<_> = [a, b, c].iter().map(|t| sortable(*t).unwrap()).collect();
        assert!(asc[0] < asc[1] && asc[1] < asc[2], "{asc:?}");
        let desc: Vec<_> = [a, b, c]
            .iter()
            .map(|t| sortable_desc(*t).unwrap())
            .collect();
        assert!(desc[0] > desc[1] && desc[1] > desc[2], "{desc:?}");
        assert!(asc.iter().chain(&desc).all(|s| s.len() == 20));
    }

    #[test]
    fn error_items_round_trip_and_only_open_ones_are_in_the_retry_index() {
        let job = JobRef::new(TenantId::new("t1").unwrap(), JobId::new("j_1").unwrap());
        let at = chrono::Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap()
            + chrono::Duration::nanoseconds(123);
        let mut e = ExportErrorItem {
            key: RecordKey::from_stored("K-1"),
            seq: 7,
            fields: serde_json::json!({"a": 1.5, "b": [1, "x"], "c": null})
                .as_object()
                .unwrap()
                .clone(),
            error: RecordError {
                code: "FIELD_CUSTOM_VALIDATION_EXCEPTION".into(),
                message: "no".into(),
                fields: vec!["a".into()],
            },
            status: ErrorStatus::Open,
            attempts: 2,
            retry_attempts: 1,
            first_seen: at,
            last_seen: at,
            last_attempt_at: at,
            resolved_at: None,
            resolved_by_seq: None,
        };
        let item = error_item(&job, &e, Duration::from_secs(60), at).unwrap();
        assert_eq!(error_from(&item).unwrap(), e);
        assert!(item.contains_key(GSI_OPEN_PK) && !item.contains_key(TTL));

        e.status = ErrorStatus::Resolved;
        e.resolved_at = Some(at);
        e.resolved_by_seq = Some(7);
        let item = error_item(&job, &e, Duration::from_secs(60), at).unwrap();
        assert_eq!(error_from(&item).unwrap(), e);
        assert!(!item.contains_key(GSI_OPEN_PK));
        assert_eq!(get_n::<i64>(&item, TTL).unwrap(), at.timestamp() + 60);
    }
}
