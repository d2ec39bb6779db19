//! DynamoDB-specific behaviour the conformance suite cannot see: transaction chunking of
//! large enqueues and commits, the item layout (TTL, index keys), error mapping, and the
//! request counter. Runs against moto (`MOTO_ENDPOINT`).

mod common;

use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{TimeZone, Utc};
use crm_export_aws::{DynamoConfig, DynamoStore};
use crm_export_core::domain::*;
use crm_export_core::ports::*;
use serde_json::json;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::OnceCell;

static TABLES: OnceCell<DynamoConfig> = OnceCell::const_new();

async fn store() -> DynamoStore {
    let config = TABLES
        .get_or_init(|| async { common::fresh_store("adapter").await.config().clone() })
        .await
        .clone();
    DynamoStore::new(&common::moto_sdk_config().await, config)
}

fn job() -> JobRef {
    JobRef::new(
        TenantId::new(format!("t-{}", uuid::Uuid::new_v4().simple())).unwrap(),
        JobId::new("touchpoints").unwrap(),
    )
}

fn t0() -> Timestamp {
    Utc.with_ymd_and_hms(2026, 3, 1, 10, 0, 0).unwrap()
}

fn rec(k: &str, n: usize) -> NewRecord {
    NewRecord {
        key: RecordKey::from_stored(k),
        fields: json!({ "Id__c": k, "n": n }).as_object().unwrap().clone(),
    }
}

fn open_item(k: &str, seq: Seq, at: Timestamp) -> ExportErrorItem {
    ExportErrorItem {
        key: RecordKey::from_stored(k),
        seq,
        fields: json!({ "Id__c": k }).as_object().unwrap().clone(),
        error: RecordError::new("FIELD_CUSTOM_VALIDATION_EXCEPTION", "refused"),
        status: ErrorStatus::Open,
        attempts: 1,
        retry_attempts: 0,
        first_seen: at,
        last_seen: at,
        last_attempt_at: at,
        resolved_at: None,
        resolved_by_seq: None,
    }
}

#[tokio::test]
async fn an_enqueue_larger_than_one_transaction_is_gap_free_and_ordered() {
    let store = store().await;
    let job = job();
    // 250 distinct keys need 6 transactions (49 records each with their index items).
    let records: Vec<_> = (0..250).map(|i| rec(&format!("k{i}"), i)).collect();
    let seqs = store.enqueue(&job, records, t0()).await.unwrap();
    assert_eq!(seqs, (1..=250).collect::<Vec<_>>());
    let read = store.read_after(&job, 0, 1000).await.unwrap();
    assert_eq!(read.len(), 250);
    assert!(read
        .iter()
        .enumerate()
        .all(|(i, r)| r.seq == i as u64 + 1 && r.fields["n"] == json!(i)));
    let latest = store
        .latest_seqs(
            &job,
            &[RecordKey::from_stored("k0"), RecordKey::from_stored("k249")],
        )
        .await
        .unwrap();
    assert_eq!(
        (
            latest[&RecordKey::from_stored("k0")],
            latest[&RecordKey::from_stored("k249")]
        ),
        (1, 250)
    );
}

#[tokio::test]
async fn concurrent_large_enqueues_leave_no_gap_and_each_chunk_is_consecutive() {
    let store = Arc::new(store().await);
    let job = job();
    let mut tasks = Vec::new();
    for p in 0..3 {
        let (store, job) = (store.clone(), job.clone());
        tasks.push(tokio::spawn(async move {
            let records: Vec<_> = (0..120).map(|i| rec(&format!("p{p}-{i}"), i)).collect();
            (p, store.enqueue(&job, records, t0()).await.unwrap())
        }));
    }
    let mut all = BTreeSet::new();
    for t in tasks {
        let (p, seqs) = t.await.unwrap();
        assert_eq!(seqs.len(), 120);
        // Each transaction's records are consecutive; a producer's chunks may interleave
        // with others' (49 + 49 + 22 records).
        for chunk in [&seqs[0..49], &seqs[49..98], &seqs[98..120]] {
            assert!(
                chunk.windows(2).all(|w| w[1] == w[0] + 1),
                "producer {p}: {chunk:?}"
            );
        }
        for (i, s) in seqs.iter().enumerate() {
            let r = store.get_record(&job, *s).await.unwrap().unwrap();
            assert_eq!(
                r.key.as_str(),
                format!("p{p}-{i}"),
                "seq {s} holds what producer {p} sent"
            );
        }
        all.extend(seqs);
    }
    assert_eq!(
        all,
        (1..=360).collect::<BTreeSet<_>>(),
        "no gaps, no duplicates"
    );
    assert_eq!(store.head(&job).await.unwrap(), 360);
}

#[tokio::test]
async fn a_commit_larger_than_one_transaction_applies_everything() {
    let store = store().await;
    let job = job();
    let lease = store
        .acquire_lease(&job, &RunId::random(), t0(), Duration::from_secs(60))
        .await
        .unwrap()
        .unwrap();
    // 150 items + their markers need several transactions.
    let puts = (0..150)
        .map(|i| ErrorWrite::Put(open_item(&format!("k{i:03}"), i + 1, t0())))
        .collect();
    let state = JobState {
        cursor: 150,
        ..JobState::default()
    };
    let event = Event::for_job(
        EventKind::ExportRunCompleted,
        &job,
        t0(),
        json!({"exported": 0}),
    );
    store
        .commit(
            &job,
            &lease,
            t0(),
            Commit {
                state: state.clone(),
                errors: puts,
                events: vec![event.clone()],
                ..Commit::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(store.load_state(&job).await.unwrap(), state);
    assert_eq!(
        store.count_errors(&job, ErrorStatus::Open).await.unwrap(),
        150
    );
    assert_eq!(store.unresolved_errors(&job).await.unwrap().len(), 150);
    assert_eq!(
        store.pending_events(&job.tenant).await.unwrap(),
        vec![event]
    );

    // Resolving 120 of them (read first, then written in chunks) leaves 30 unresolved.
    let at = t0() + chrono::Duration::seconds(5);
    let resolves = (0..120)
        .map(|i| ErrorWrite::Resolve {
            key: RecordKey::from_stored(format!("k{i:03}")),
            by_seq: 500,
            at,
        })
        .collect();
    store
        .commit(
            &job,
            &lease,
            at,
            Commit {
                state: state.clone(),
                errors: resolves,
                events: vec![],
                ..Commit::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(store.unresolved_errors(&job).await.unwrap().len(), 30);
    assert_eq!(
        store
            .count_errors(&job, ErrorStatus::Superseded)
            .await
            .unwrap(),
        120
    );
    let retry = store
        .open_errors_for_retry(&job, at, None, 1000)
        .await
        .unwrap();
    assert_eq!(
        retry.len(),
        30,
        "superseded items are no longer retry candidates"
    );
    assert!(retry.iter().all(|e| e.key.as_str() >= "k120"));
}

#[tokio::test]
async fn a_large_commit_without_the_lease_writes_nothing() {
    let store = store().await;
    let job = job();
    let lease = store
        .acquire_lease(&job, &RunId::random(), t0(), Duration::from_secs(60))
        .await
        .unwrap()
        .unwrap();
    let puts = (0..150)
        .map(|i| ErrorWrite::Put(open_item(&format!("k{i:03}"), i + 1, t0())))
        .collect();
    let late = t0() + chrono::Duration::seconds(61);
    let res = store
        .commit(
            &job,
            &lease,
            late,
            Commit {
                state: JobState {
                    cursor: 9,
                    ..JobState::default()
                },
                errors: puts,
                events: vec![],
                ..Commit::default()
            },
        )
        .await;
    assert_eq!(res, Err(StoreError::LeaseLost));
    assert_eq!(
        store.count_errors(&job, ErrorStatus::Open).await.unwrap(),
        0,
        "the first chunk is lease-checked too"
    );
    assert_eq!(store.load_state(&job).await.unwrap(), JobState::default());
}

#[tokio::test]
async fn resolved_items_get_a_ttl_and_leave_the_retry_index() {
    let store = store().await;
    let job = job();
    let lease = store
        .acquire_lease(&job, &RunId::random(), t0(), Duration::from_secs(60))
        .await
        .unwrap()
        .unwrap();
    let put = ErrorWrite::Put(open_item("k", 3, t0()));
    store
        .commit(
            &job,
            &lease,
            t0(),
            Commit {
                state: JobState::default(),
                errors: vec![put],
                events: vec![],
                ..Commit::default()
            },
        )
        .await
        .unwrap();
    let raw = |store: DynamoStore, job: JobRef| async move {
        store
            .client()
            .get_item()
            .table_name(&store.config().state_table)
            .key(
                "pk",
                AttributeValue::S(format!("JOB#{}#{}", job.tenant, job.job)),
            )
            .key("sk", AttributeValue::S("ERR#k".into()))
            .send()
            .await
            .unwrap()
            .item
            .unwrap()
    };
    let item = raw(store.clone(), job.clone()).await;
    assert!(
        item.contains_key("open_pk") && !item.contains_key("ttl"),
        "an open item is a retry candidate without expiry"
    );
    let at = t0() + chrono::Duration::seconds(1);
    let resolve = ErrorWrite::Resolve {
        key: RecordKey::from_stored("k"),
        by_seq: 3,
        at,
    };
    store
        .commit(
            &job,
            &lease,
            at,
            Commit {
                state: JobState::default(),
                errors: vec![resolve],
                events: vec![],
                ..Commit::default()
            },
        )
        .await
        .unwrap();
    let item = raw(store.clone(), job.clone()).await;
    assert!(
        !item.contains_key("open_pk"),
        "a resolved item leaves the sparse retry index"
    );
    let ttl: i64 = item["ttl"].as_n().unwrap().parse().unwrap();
    assert_eq!(
        ttl,
        at.timestamp() + 30 * 24 * 3600,
        "expires 30 days after resolution"
    );
    assert_eq!(
        item["status_pk"].as_s().unwrap(),
        &format!("{}#{}#resolved", job.tenant, job.job)
    );
}

#[tokio::test]
async fn a_missing_table_is_unavailable_not_a_panic() {
    let config = common::unique_tables("missing");
    let store = DynamoStore::new(&common::moto_sdk_config().await, config);
    let job = job();
    assert!(matches!(
        store.head(&job).await,
        Err(StoreError::Unavailable(_))
    ));
    assert!(matches!(
        store.enqueue(&job, vec![rec("a", 1)], t0()).await,
        Err(StoreError::Unavailable(_))
    ));
    let lease = Lease {
        token: LeaseToken("x".into()),
        owner: RunId::random(),
        expires_at: t0(),
    };
    let commit = Commit {
        state: JobState::default(),
        errors: vec![],
        events: vec![],
        ..Commit::default()
    };
    assert!(matches!(
        store.commit(&job, &lease, t0(), commit).await,
        Err(StoreError::Unavailable(_))
    ));
}

#[tokio::test]
async fn an_unreachable_endpoint_is_unavailable_within_the_timeouts() {
    // A port nothing listens on: connection refused, retried by the SDK, then Unavailable.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(format!("http://127.0.0.1:{port}"))
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
            "a", "b", None, None, "test",
        ))
        .load()
        .await;
    let store = DynamoStore::new(&sdk, DynamoConfig::default());
    let started = std::time::Instant::now();
    let res = store.head(&job()).await;
    assert!(matches!(res, Err(StoreError::Unavailable(_))), "{res:?}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "bounded by the operation timeout"
    );
    assert_eq!(
        store.request_count(),
        3,
        "three attempts (standard retry mode)"
    );
}

#[tokio::test]
async fn create_tables_is_idempotent_and_requests_are_counted() {
    let store = store().await;
    store
        .create_tables()
        .await
        .expect("existing tables are fine");
    let before = store.request_count();
    let job = job();
    store
        .enqueue(&job, vec![rec("a", 1), rec("b", 2)], t0())
        .await
        .unwrap();
    // A counter read and one transaction.
    assert_eq!(store.request_count() - before, 2);
}

#[tokio::test]
async fn requests_per_thousand_records_stay_batched() {
    // The request budget of the export path (see examples/requests_per_1000.rs for the
    // full measurement): a per-record request anywhere would multiply these numbers.
    let store = store().await;
    let job = job();
    let records: Vec<_> = (0..1000).map(|i| rec(&format!("k{i:04}"), i)).collect();
    let c = store.request_count();
    store.enqueue(&job, records, t0()).await.unwrap();
    // One counter read, then 21 transactions of at most 49 records with their index items.
    assert_eq!(store.request_count() - c, 22, "enqueue");
    let lease = store
        .acquire_lease(&job, &RunId::random(), t0(), Duration::from_secs(600))
        .await
        .unwrap()
        .unwrap();
    let c = store.request_count();
    let mut cursor = 0;
    for _ in 0..5 {
        let batch = store.read_after(&job, cursor, 200).await.unwrap();
        assert_eq!(batch.len(), 200);
        let keys: Vec<_> = batch.iter().map(|r| r.key.clone()).collect();
        assert_eq!(store.latest_seqs(&job, &keys).await.unwrap().len(), 200);
        cursor = batch.last().unwrap().seq;
        let state = JobState {
            cursor,
            ..JobState::default()
        };
        store
            .commit(
                &job,
                &lease,
                t0(),
                Commit {
                    state,
                    errors: vec![],
                    events: vec![],
                    ..Commit::default()
                },
            )
            .await
            .unwrap();
    }
    // Per batch of 200: one Query, two BatchGetItem (100 keys each), one transaction.
    assert_eq!(store.request_count() - c, 5 * 4, "read, look up and commit");
}
