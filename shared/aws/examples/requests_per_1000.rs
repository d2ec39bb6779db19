//! Measures DynamoDB requests per 1,000 exported records through the DynamoDB store:
//! enqueue N records (default 10,000, in producer calls of 1,000), then work through the
//! queue as an export run does, batch by batch (200): read the batch after the cursor,
//! look up the newest queued seq of its keys, commit the cursor. Requests are counted by
//! the store's SDK interceptor (`DynamoStore::request_count`), retries included.
//!
//! Not a timing benchmark: run it against moto (or a real table) to see the request mix.
//!
//!   MOTO_ENDPOINT=http://127.0.0.1:5000 cargo run -p crm-export-aws --example requests_per_1000 [-- N]

use crm_export_aws::{DynamoConfig, DynamoStore, SdkTimeouts};
use crm_export_core::domain::*;
use crm_export_core::ports::*;
use std::time::{Duration, Instant};

const BATCH: usize = 200;
const PRODUCER_CALL: usize = 1_000;

#[tokio::main]
async fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse().expect("N is a number"))
        .unwrap_or(10_000);
    let endpoint = std::env::var("MOTO_ENDPOINT")
        .expect("set MOTO_ENDPOINT to a moto server (see scripts/test-all)");
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
            "testing", "testing", None, None, "moto",
        ))
        .load()
        .await;
    let id = uuid::Uuid::new_v4().simple().to_string();
    let mut config = DynamoConfig::new(format!("bench-{id}-state"), format!("bench-{id}-queue"));
    // moto is slow with large tables; the SDK defaults are for AWS.
    config.timeouts = SdkTimeouts {
        operation: Duration::from_secs(300),
        attempt: Duration::from_secs(120),
        ..SdkTimeouts::default()
    };
    let store = DynamoStore::new(&sdk, config);
    store.create_tables().await.expect("create tables");
    let job = JobRef::new(
        TenantId::new(format!("bench-{}", &id[..8])).unwrap(),
        JobId::new("touchpoints").unwrap(),
    );
    let now = chrono::Utc::now();

    let started = Instant::now();
    let base = store.request_count();
    for start in (0..n).step_by(PRODUCER_CALL) {
        let records = (start..(start + PRODUCER_CALL).min(n))
            .map(|i| {
                let key = format!("TP-{i:06}");
                let fields = serde_json::json!({ "bizible2__UniqueId__c": key, "Touchpoint_Date__c": "2026-03-01", "n": i });
                NewRecord { key: RecordKey::from_stored(key), fields: fields.as_object().unwrap().clone() }
            })
            .collect();
        store.enqueue(&job, records, now).await.expect("enqueue");
    }
    let enqueue = store.request_count() - base;

    let lease = store
        .acquire_lease(&job, &RunId::random(), now, Duration::from_secs(3600))
        .await
        .unwrap()
        .expect("lease");
    let (mut reads, mut lookups, mut commits) = (0, 0, 0);
    let mut cursor = 0;
    loop {
        let c = store.request_count();
        let batch = store
            .read_after(&job, cursor, BATCH)
            .await
            .expect("read_after");
        reads += store.request_count() - c;
        if batch.is_empty() {
            break;
        }
        let c = store.request_count();
        let keys: Vec<RecordKey> = batch.iter().map(|r| r.key.clone()).collect();
        let latest = store.latest_seqs(&job, &keys).await.expect("latest_seqs");
        assert_eq!(latest.len(), keys.len());
        lookups += store.request_count() - c;
        cursor = batch.last().unwrap().seq;
        let c = store.request_count();
        let state = JobState {
            cursor,
            last_run_at: Some(now),
            ..JobState::default()
        };
        store
            .commit(
                &job,
                &lease,
                now,
                Commit {
                    state,
                    errors: vec![],
                    events: vec![],
                    ..Commit::default()
                },
            )
            .await
            .expect("commit");
        commits += store.request_count() - c;
    }
    assert_eq!(cursor, n as u64, "every record was read");
    let total = store.request_count() - base;
    let per_1000 = |x: u64| x as f64 * 1000.0 / n as f64;
    println!("records: {n} (producer calls of {PRODUCER_CALL}, batches of {BATCH})");
    println!(
        "enqueue:      {enqueue:>6} requests  {:>7.1} per 1,000 records",
        per_1000(enqueue)
    );
    println!(
        "read_after:   {reads:>6} requests  {:>7.1} per 1,000 records",
        per_1000(reads)
    );
    println!(
        "latest_seqs:  {lookups:>6} requests  {:>7.1} per 1,000 records",
        per_1000(lookups)
    );
    println!(
        "commit:       {commits:>6} requests  {:>7.1} per 1,000 records",
        per_1000(commits)
    );
    println!(
        "total:        {total:>6} requests  {:>7.1} per 1,000 records (+1 lease acquire)",
        per_1000(total - 1)
    );
    println!("wall time against this endpoint: {:.1?}", started.elapsed());
    store.delete_tables().await.expect("delete tables");
}
