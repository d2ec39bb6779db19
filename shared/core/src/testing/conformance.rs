//! The store conformance suite: one set of cases every [`StateStore`] must pass, unchanged,
//! whatever its backend (memory, SQLite, DynamoDB).
//!
//! # Running it from a store crate
//!
//! Enable the `testing` feature of `crm-export-core` in the crate's dev-dependencies, have
//! `tokio` as a (dev-)dependency (the generated tests are `#[tokio::test]`s), and in an
//! integration test write:
//!
//! ```text
//! use crm_export_core::testing::conformance::StoreContext;
//!
//! // A closure ...
//! crm_export_core::conformance_tests!(|ctx: StoreContext| async move {
//!     SqliteStore::open(ctx.temp_dir().join("store.db")).expect("open the store")
//! });
//!
//! // ... or an async fn (handy when building the store takes several steps):
//! async fn make_store(ctx: StoreContext) -> DynamoStore { ... }
//! crm_export_core::conformance_tests!(make_store);
//! ```
//!
//! Each invocation defines the test functions in the current module, so wrap it in a `mod`
//! to run the suite twice in one file (e.g. against two configurations).
//!
//! The macro expands to one `#[tokio::test]` per case, named after the case, so a failure
//! names the broken behaviour. The factory is called once per test with a fresh
//! [`StoreContext`]; it returns the store (any `S: StateStore + 'static`). A store that keeps
//! data in files uses [`StoreContext::temp_dir`] (removed when the test ends); a store that
//! shares one backend between tests (DynamoDB tables on one server) may ignore the context:
//! every case uses its own random tenant ids, so tests never see each other's data, and no
//! case assumes it is alone in the store (e.g. `list_tenants` is checked for inclusion).
//!
//! Every case is also a plain `pub async fn case(store: Arc<S>)`, callable directly.
//!
//! Where the ports leave something open the cases are deliberately lenient, so that every
//! sound backend passes: a page may come back short or empty as long as following the
//! tokens visits every item exactly once, and `list_errors` does not fix the order of
//! items with the same last attempt time. Where the ports do fix it (seqs start at 1 and
//! are gap-free, `open_errors_for_retry` breaks ties by key, a lease is held while
//! `now < expires_at`), the cases check it exactly.

use crate::domain::*;
use crate::ports::*;
use chrono::{DateTime, TimeZone, Utc};
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// Expands to one `#[tokio::test]` per conformance case, each building its store with
/// `$factory`: an `FnOnce(StoreContext) -> impl Future<Output = S>`. See the module docs.
#[macro_export]
macro_rules! conformance_tests {
    ($factory:expr $(,)?) => {
        $crate::__conformance_cases! {
            $factory;
            enqueue_assigns_consecutive_seqs_from_one,
            enqueue_of_nothing_changes_nothing,
            queues_are_per_job_and_tenant,
            read_after_orders_and_limits,
            get_record_finds_exact_seq,
            records_round_trip_keys_and_fields,
            latest_seqs_returns_newest_version_per_key,
            fresh_job_has_default_state_and_empty_queue,
            lease_acquire_and_contend,
            lease_expires_and_can_be_taken_over,
            lease_renew_extends_only_while_held,
            lease_release_only_by_holder,
            commit_applies_state_errors_and_events,
            commit_refused_after_expiry_changes_nothing,
            commit_refused_after_takeover_or_release_changes_nothing,
            commit_extends_the_lease_and_counts_api_calls_with_the_change,
            refused_commit_neither_extends_the_lease_nor_counts_calls,
            error_put_creates_and_replaces,
            error_resolve_semantics,
            error_writes_apply_in_order,
            unresolved_errors_lists_open_and_parked,
            open_errors_for_retry_order_filters_and_limit,
            list_errors_filters_and_orders_newest_first,
            list_errors_pagination_covers_every_item_once,
            list_errors_bad_token_is_invalid,
            count_errors_per_status,
            settings_put_get_with_versions,
            settings_version_conflict_changes_nothing,
            settings_history_newest_first_and_paginated,
            list_tenants_lists_tenants_with_settings,
            job_catalog_put_get_list,
            outbox_pending_and_mark_published,
            api_budget_counts_hourly_buckets_of_last_24h,
            concurrent_producers_get_gap_free_seqs,
            concurrent_lease_race_has_one_winner,
            reader_never_sees_a_gap_while_producers_enqueue,
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_cases {
    ($factory:expr; $($case:ident),* $(,)?) => {
        $(
            // Several worker threads, so the concurrency cases really run in parallel.
            #[::tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case() {
                let ctx = $crate::testing::conformance::StoreContext::new(stringify!($case));
                let store = $crate::testing::conformance::make_store(&ctx, $factory).await;
                $crate::testing::conformance::$case(store).await;
                drop(ctx);
            }
        )*
    };
}

/// What the factory gets to build an isolated store for one test.
#[derive(Clone)]
pub struct StoreContext {
    inner: Arc<CtxInner>,
}

struct CtxInner {
    case: &'static str,
    unique: String,
    dir: OnceLock<PathBuf>,
}

impl Drop for CtxInner {
    fn drop(&mut self) {
        if let Some(dir) = self.dir.get() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

impl StoreContext {
    pub fn new(case: &'static str) -> Self {
        let unique = uuid::Uuid::new_v4().simple().to_string()[..16].to_string();
        Self {
            inner: Arc::new(CtxInner {
                case,
                unique,
                dir: OnceLock::new(),
            }),
        }
    }

    /// The name of the case being run.
    pub fn case(&self) -> &'static str {
        self.inner.case
    }

    /// A random id for this test (lower-case hex), e.g. for a table prefix.
    pub fn unique_id(&self) -> &str {
        &self.inner.unique
    }

    /// A fresh directory for this test, created on first use and removed when the test
    /// ends (after the store is dropped).
    pub fn temp_dir(&self) -> &Path {
        self.inner.dir.get_or_init(|| {
            let dir = std::env::temp_dir().join(format!(
                "crmx-conformance-{}-{}",
                self.inner.case, self.inner.unique
            ));
            std::fs::create_dir_all(&dir).expect("create the test's temp dir");
            dir
        })
    }
}

/// Calls the factory with the context; used by [`conformance_tests!`].
pub async fn make_store<S, F, Fut>(ctx: &StoreContext, factory: F) -> Arc<S>
where
    S: StateStore + 'static,
    F: FnOnce(StoreContext) -> Fut,
    Fut: Future<Output = S>,
{
    Arc::new(factory(ctx.clone()).await)
}

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// A tenant id no other test uses (DynamoDB runs share tables between tests).
pub fn unique_tenant() -> TenantId {
    TenantId::new(format!("t-{}", uuid::Uuid::new_v4().simple())).expect("valid tenant id")
}

/// A job of a fresh tenant.
pub fn unique_job() -> JobRef {
    JobRef::new(
        unique_tenant(),
        JobId::new("touchpoints").expect("valid job id"),
    )
}

/// A fixed instant; cases pass `now` explicitly, so stores never read the wall clock.
/// Millisecond precision everywhere, which every backend can store.
pub fn t0() -> Timestamp {
    Utc.with_ymd_and_hms(2026, 3, 1, 10, 0, 0)
        .single()
        .expect("valid instant")
}

fn at_ms(ms: i64) -> Timestamp {
    t0() + chrono::Duration::milliseconds(ms)
}

fn at_s(s: i64) -> Timestamp {
    t0() + chrono::Duration::seconds(s)
}

fn key(s: &str) -> RecordKey {
    RecordKey::from_stored(s)
}

fn rec(k: &str, fields: serde_json::Value) -> NewRecord {
    let serde_json::Value::Object(fields) = fields else {
        panic!("fields must be an object")
    };
    NewRecord {
        key: key(k),
        fields,
    }
}

fn simple(k: &str, n: u64) -> NewRecord {
    rec(k, json!({ "Id__c": k, "n": n }))
}

const LEASE: Duration = Duration::from_secs(60);

fn run_id(name: &str) -> RunId {
    RunId(format!("{name}-{}", uuid::Uuid::new_v4().simple()))
}

fn item(
    k: &str,
    seq: Seq,
    status: ErrorStatus,
    code: &str,
    last_attempt: Timestamp,
) -> ExportErrorItem {
    ExportErrorItem {
        key: key(k),
        seq,
        fields:
            json!({ "Id__c": k, "Email": format!("{k}@example.com"), "nested": { "a": [1, 2] } })
                .as_object()
                .cloned()
                .expect("object"),
        error: RecordError {
            code: code.to_string(),
            message: format!("{code} on {k}"),
            fields: vec!["Email".to_string()],
        },
        status,
        attempts: 2,
        retry_attempts: 1,
        first_seen: t0(),
        last_seen: last_attempt,
        last_attempt_at: last_attempt,
        resolved_at: None,
        resolved_by_seq: None,
    }
}

fn event(job: &JobRef, kind: EventKind, n: u32) -> Event {
    Event::for_job(
        kind,
        job,
        at_s(n as i64),
        json!({ "n": n, "reason": "test" }),
    )
}

fn tenant_event(tenant: &TenantId, n: u32) -> Event {
    Event {
        id: uuid::Uuid::new_v4().to_string(),
        kind: EventKind::SettingsChanged,
        tenant: tenant.clone(),
        job: None,
        at: at_s(n as i64),
        detail: json!({ "version": n }),
    }
}

fn state_with_cursor(cursor: Seq) -> JobState {
    JobState {
        cursor,
        halt: Some(Halt {
            seq: cursor + 1,
            key: key("halted"),
            error: RecordError::new("FIELD_CUSTOM_VALIDATION_EXCEPTION", "bad"),
            since: t0(),
            attempts: 3,
            last_attempt_at: at_s(5),
        }),
        transient_streak: Some(Streak {
            seq: cursor + 1,
            runs: 2,
        }),
        last_run_at: Some(at_s(7)),
        ..JobState::default()
    }
}

fn commit_of(state: JobState, errors: Vec<ErrorWrite>, events: Vec<Event>) -> Commit {
    Commit {
        state,
        errors,
        events,
        ..Commit::default()
    }
}

async fn must_lease<S: StateStore>(store: &S, job: &JobRef, now: Timestamp) -> Lease {
    store
        .acquire_lease(job, &run_id("runner"), now, LEASE)
        .await
        .expect("acquire_lease")
        .expect("the lease is free")
}

/// Puts error items through a commit (the only write path for ExportErrors).
async fn put_items<S: StateStore>(store: &S, job: &JobRef, items: Vec<ExportErrorItem>) {
    let now = t0();
    let lease = must_lease(store, job, now).await;
    let state = store.load_state(job).await.expect("load_state");
    store
        .commit(
            job,
            &lease,
            now,
            commit_of(
                state,
                items.into_iter().map(ErrorWrite::Put).collect(),
                vec![],
            ),
        )
        .await
        .expect("commit error items");
    store.release_lease(job, &lease).await.expect("release");
}

async fn write_errors<S: StateStore>(store: &S, job: &JobRef, writes: Vec<ErrorWrite>) {
    let now = t0();
    let lease = must_lease(store, job, now).await;
    let state = store.load_state(job).await.expect("load_state");
    store
        .commit(job, &lease, now, commit_of(state, writes, vec![]))
        .await
        .expect("commit");
    store.release_lease(job, &lease).await.expect("release");
}

fn settings(batch: u32, pause: bool) -> Settings {
    Settings {
        export_to_crm: true,
        pause_on_export_errors: pause,
        batch_size: BatchSize::new(batch).expect("allowed batch size"),
        ..Settings::default()
    }
}

fn change(version: u64, old: Settings, new: Settings, n: i64) -> SettingsChange {
    SettingsChange {
        version,
        at: at_s(n),
        actor: format!("admin-{n}@example.com"),
        old,
        new,
        acknowledged_data_inconsistency: n % 2 == 1,
    }
}

fn job_def(id: &str, object: &str) -> JobDefinition {
    JobDefinition {
        job_id: JobId::new(id).expect("valid job id"),
        object: object.to_string(),
        external_id_field: "Ext_Id__c".to_string(),
        key_field: Some("id".to_string()),
        key_case_insensitive: true,
        field_map: BTreeMap::from([("email".to_string(), "Email".to_string())]),
    }
}

/// Follows `list_errors` tokens to the end; panics on a runaway loop.
async fn all_pages<S: StateStore>(
    store: &S,
    job: &JobRef,
    filter: &ErrorFilter,
    limit: usize,
) -> Vec<ExportErrorItem> {
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    for _ in 0..200 {
        let page = store
            .list_errors(job, filter, token.as_deref(), limit)
            .await
            .expect("list_errors");
        assert!(
            page.items.len() <= limit,
            "a page holds at most `limit` items"
        );
        out.extend(page.items);
        match page.next {
            Some(t) => token = Some(t),
            None => return out,
        }
    }
    panic!("list_errors pagination did not end");
}

fn keys_of(items: &[ExportErrorItem]) -> Vec<String> {
    items.iter().map(|i| i.key.as_str().to_string()).collect()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

// ---------------------------------------------------------------------------------------
// Export queue
// ---------------------------------------------------------------------------------------

pub async fn enqueue_assigns_consecutive_seqs_from_one<S: StateStore + 'static>(store: Arc<S>) {
    let job = unique_job();
    let seqs = store
        .enqueue(
            &job,
            vec![simple("a", 1), simple("b", 2), simple("c", 3)],
            t0(),
        )
        .await
        .unwrap();
    assert_eq!(seqs, vec![1, 2, 3], "the first record of a job gets seq 1");
    assert_eq!(store.head(&job).await.unwrap(), 3);
    let more = store
        .enqueue(&job, vec![simple("a", 4), simple("d", 5)], at_s(1))
        .await
        .unwrap();
    assert_eq!(more, vec![4, 5], "seqs continue after the job's last one");
    let one = store
        .enqueue(&job, vec![simple("e", 6)], at_s(2))
        .await
        .unwrap();
    assert_eq!(one, vec![6]);
    assert_eq!(store.head(&job).await.unwrap(), 6);
    let all = store.read_after(&job, 0, 100).await.unwrap();
    assert_eq!(
        all.iter().map(|r| r.seq).collect::<Vec<_>>(),
        (1..=6).collect::<Vec<_>>()
    );
}

pub async fn enqueue_of_nothing_changes_nothing<S: StateStore + 'static>(store: Arc<S>) {
    let job = unique_job();
    assert_eq!(
        store.enqueue(&job, vec![], t0()).await.unwrap(),
        Vec::<Seq>::new()
    );
    assert_eq!(store.head(&job).await.unwrap(), 0);
    store
        .enqueue(&job, vec![simple("a", 1)], t0())
        .await
        .unwrap();
    assert_eq!(
        store.enqueue(&job, vec![], t0()).await.unwrap(),
        Vec::<Seq>::new()
    );
    assert_eq!(
        store.head(&job).await.unwrap(),
        1,
        "an empty enqueue takes no seq"
    );
    assert_eq!(
        store
            .enqueue(&job, vec![simple("b", 2)], t0())
            .await
            .unwrap(),
        vec![2]
    );
}

pub async fn queues_are_per_job_and_tenant<S: StateStore + 'static>(store: Arc<S>) {
    let a = unique_job();
    let b = JobRef::new(a.tenant.clone(), JobId::new("contacts").unwrap());
    // Same job id under another tenant.
    let c = JobRef::new(unique_tenant(), a.job.clone());
    assert_eq!(
        store
            .enqueue(&a, vec![simple("x", 1), simple("y", 2)], t0())
            .await
            .unwrap(),
        vec![1, 2]
    );
    assert_eq!(
        store.enqueue(&b, vec![simple("x", 3)], t0()).await.unwrap(),
        vec![1]
    );
    assert_eq!(
        store.enqueue(&c, vec![simple("z", 4)], t0()).await.unwrap(),
        vec![1]
    );
    assert_eq!(store.head(&a).await.unwrap(), 2);
    assert_eq!(store.head(&b).await.unwrap(), 1);
    assert_eq!(store.head(&c).await.unwrap(), 1);
    let b_records = store.read_after(&b, 0, 10).await.unwrap();
    assert_eq!(b_records.len(), 1);
    assert_eq!(b_records[0].fields["n"], json!(3));
    let c_latest = store.latest_seqs(&c, &[key("x"), key("z")]).await.unwrap();
    assert_eq!(
        c_latest,
        HashMap::from([(key("z"), 1)]),
        "keys of other jobs are not seen"
    );
}

pub async fn read_after_orders_and_limits<S: StateStore + 'static>(store: Arc<S>) {
    let job = unique_job();
    let recs: Vec<_> = (1..=10).map(|n| simple(&format!("k{n:02}"), n)).collect();
    store.enqueue(&job, recs, t0()).await.unwrap();
    let page = store.read_after(&job, 0, 4).await.unwrap();
    assert_eq!(
        page.iter().map(|r| r.seq).collect::<Vec<_>>(),
        vec![1, 2, 3, 4]
    );
    let page = store.read_after(&job, 4, 4).await.unwrap();
    assert_eq!(
        page.iter().map(|r| r.seq).collect::<Vec<_>>(),
        vec![5, 6, 7, 8]
    );
    let page = store.read_after(&job, 8, 4).await.unwrap();
    assert_eq!(
        page.iter().map(|r| r.seq).collect::<Vec<_>>(),
        vec![9, 10],
        "a short last page"
    );
    assert!(
        store.read_after(&job, 10, 4).await.unwrap().is_empty(),
        "nothing after the head"
    );
    assert!(store.read_after(&job, 1000, 4).await.unwrap().is_empty());
    assert!(
        store.read_after(&job, 0, 0).await.unwrap().is_empty(),
        "limit 0 reads nothing"
    );
    let rest = store.read_after(&job, 3, 100).await.unwrap();
    assert_eq!(rest.len(), 7);
    assert!(
        rest.windows(2).all(|w| w[1].seq == w[0].seq + 1),
        "in seq order, no gaps"
    );
    assert_eq!(rest[0].key, key("k04"));
}

pub async fn get_record_finds_exact_seq<S: StateStore + 'static>(store: Arc<S>) {
    let job = unique_job();
    store
        .enqueue(&job, vec![simple("a", 1), simple("b", 2)], at_s(3))
        .await
        .unwrap();
    let r = store
        .get_record(&job, 2)
        .await
        .unwrap()
        .expect("seq 2 exists");
    assert_eq!(
        r,
        Record {
            seq: 2,
            key: key("b"),
            fields: simple("b", 2).fields,
            enqueued_at: at_s(3)
        }
    );
    assert_eq!(store.get_record(&job, 0).await.unwrap(), None);
    assert_eq!(store.get_record(&job, 3).await.unwrap(), None);
    assert_eq!(store.get_record(&unique_job(), 1).await.unwrap(), None);
}

pub async fn records_round_trip_keys_and_fields<S: StateStore + 'static>(store: Arc<S>) {
    let job = unique_job();
    let fields = json!({
        "Id__c": "Ünïcødé key",
        "Email": null,
        "Amount": 12.5,
        "Big": 9007199254740993u64,
        "Neg": -3,
        "Flag": true,
        "Tags": ["a", "b"],
        "Nested": { "x": { "y": "z" } },
        "Quote": "it's \"quoted\" -- ; DROP TABLE records;"
    });
    let enqueued_at = at_ms(1234);
    let seqs = store
        .enqueue(
            &job,
            vec![
                rec("Ünïcødé key", fields.clone()),
                rec("with space", json!({})),
            ],
            enqueued_at,
        )
        .await
        .unwrap();
    assert_eq!(seqs, vec![1, 2]);
    let got = store.read_after(&job, 0, 10).await.unwrap();
    assert_eq!(got[0].key, key("Ünïcødé key"));
    assert_eq!(
        serde_json::Value::Object(got[0].fields.clone()),
        fields,
        "fields round-trip exactly"
    );
    assert_eq!(got[0].enqueued_at, enqueued_at);
    assert_eq!(got[1].key, key("with space"));
    assert!(got[1].fields.is_empty(), "an empty field map round-trips");
}

pub async fn latest_seqs_returns_newest_version_per_key<S: StateStore + 'static>(store: Arc<S>) {
    let job = unique_job();
    // A case-insensitive job folds keys before they reach the store: the store compares keys
    // exactly, so "abc" (folded) and "ABC" (a case-sensitive job's key) are different keys.
    let folded = RecordKey::from_external_id("AbC", true).unwrap();
    assert_eq!(folded, key("abc"));
    let upper = RecordKey::from_external_id("ABC", false).unwrap();
    let mk = |k: &RecordKey, n: u64| NewRecord {
        key: k.clone(),
        fields: simple(k.as_str(), n).fields,
    };
    store
        .enqueue(
            &job,
            vec![mk(&folded, 1), mk(&key("x"), 2), mk(&upper, 3)],
            t0(),
        )
        .await
        .unwrap();
    store
        .enqueue(&job, vec![mk(&key("x"), 4), mk(&folded, 5)], t0())
        .await
        .unwrap();
    // Two versions of one key in one batch: the later one is the newer.
    store
        .enqueue(&job, vec![mk(&key("y"), 6), mk(&key("y"), 7)], t0())
        .await
        .unwrap();
    let latest = store
        .latest_seqs(
            &job,
            &[folded.clone(), upper.clone(), key("x"), key("missing")],
        )
        .await
        .unwrap();
    assert_eq!(
        latest,
        HashMap::from([(folded.clone(), 5), (upper.clone(), 3), (key("x"), 4)]),
        "newest seq per key; unknown keys are absent; keys are compared exactly"
    );
    assert!(store.latest_seqs(&job, &[]).await.unwrap().is_empty());
    assert_eq!(
        store.latest_seqs(&job, &[key("y")]).await.unwrap(),
        HashMap::from([(key("y"), 7)])
    );
    // Many keys at once (stores may have to chunk their lookups).
    let many: Vec<NewRecord> = (0..120).map(|n| simple(&format!("m{n}"), n)).collect();
    store.enqueue(&job, many, t0()).await.unwrap();
    let wanted: Vec<RecordKey> = (0..120).map(|n| key(&format!("m{n}"))).collect();
    let latest = store.latest_seqs(&job, &wanted).await.unwrap();
    assert_eq!(latest.len(), 120);
    assert_eq!(latest[&key("m0")], 8);
    assert_eq!(latest[&key("m119")], 127);
}

pub async fn fresh_job_has_default_state_and_empty_queue<S: StateStore + 'static>(store: Arc<S>) {
    let job = unique_job();
    assert_eq!(store.head(&job).await.unwrap(), 0);
    assert!(store.read_after(&job, 0, 10).await.unwrap().is_empty());
    assert!(store
        .latest_seqs(&job, &[key("a")])
        .await
        .unwrap()
        .is_empty());
    assert_eq!(store.load_state(&job).await.unwrap(), JobState::default());
    assert_eq!(store.get_error(&job, &key("a")).await.unwrap(), None);
    assert!(store.unresolved_errors(&job).await.unwrap().is_empty());
    assert!(store
        .open_errors_for_retry(&job, at_s(1_000_000), None, 10)
        .await
        .unwrap()
        .is_empty());
    let page = store
        .list_errors(&job, &ErrorFilter::default(), None, 10)
        .await
        .unwrap();
    assert!(page.items.is_empty());
    assert_eq!(
        store.count_errors(&job, ErrorStatus::Open).await.unwrap(),
        0
    );
    assert!(store.pending_events(&job.tenant).await.unwrap().is_empty());
    assert_eq!(store.get_settings(&job.tenant).await.unwrap(), None);
    assert!(store.list_jobs(&job.tenant).await.unwrap().is_empty());
    assert_eq!(
        store.api_calls_last_24h(&job.tenant, t0()).await.unwrap(),
        0
    );
}

// ---------------------------------------------------------------------------------------
// Leases
// ---------------------------------------------------------------------------------------

pub async fn lease_acquire_and_contend<S: StateStore + 'static>(store: Arc<S>) {
    let job = unique_job();
    let owner = run_id("a");
    let lease = store
        .acquire_lease(&job, &owner, t0(), LEASE)
        .await
        .unwrap()
        .expect("a free lease is taken");
    assert_eq!(lease.owner, owner);
    assert_eq!(lease.expires_at, t0() + chrono::Duration::seconds(60));
    assert_eq!(lease.time_left(at_s(20)), Duration::from_secs(40));
    // Held: nobody else gets it, not even the same owner again.
    assert_eq!(
        store
            .acquire_lease(&job, &run_id("b"), at_s(1), LEASE)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store
            .acquire_lease(&job, &owner, at_s(59), LEASE)
            .await
            .unwrap(),
        None
    );
    // Another job's lease is independent.
    let other = JobRef::new(job.tenant.clone(), JobId::new("other").unwrap());
    assert!(store
        .acquire_lease(&other, &run_id("c"), at_s(1), LEASE)
        .await
        .unwrap()
        .is_some());
    // After a release the next acquisition gets a new token.
    store.release_lease(&job, &lease).await.unwrap();
    let again = store
        .acquire_lease(&job, &owner, at_s(2), LEASE)
        .await
        .unwrap()
        .expect("released lease is free");
    assert_ne!(
        again.token, lease.token,
        "every acquisition gets a new token"
    );
}

pub async fn lease_expires_and_can_be_taken_over<S: StateStore + 'static>(store: Arc<S>) {
    let job = unique_job();
    let first = store
        .acquire_lease(&job, &run_id("a"), t0(), LEASE)
        .await
        .unwrap()
        .unwrap();
    // Held until just before expires_at ...
    assert_eq!(
        store
            .acquire_lease(&job, &run_id("b"), at_ms(59_999), LEASE)
            .await
            .unwrap(),
        None
    );
    // ... and free from expires_at on (held means now < expires_at).
    let second = store
        .acquire_lease(&job, &run_id("b"), at_s(60), LEASE)
        .await
        .unwrap()
        .expect("an expired lease can be taken by another run");
    assert_ne!(second.token, first.token);
    assert_eq!(second.expires_at, at_s(120));
    assert_eq!(
        store
            .acquire_lease(&job, &run_id("c"), at_s(61), LEASE)
            .await
            .unwrap(),
        None,
        "the new holder's lease is held"
    );
}

pub async fn lease_renew_extends_only_while_held<S: StateStore + 'static>(store: Arc<S>) {
    let job = unique_job();
    let lease = store
        .acquire_lease(&job, &run_id("a"), t0(), LEASE)
        .await
        .unwrap()
        .unwrap();
    let renewed = store
        .renew_lease(&job, &lease, at_s(50), LEASE)
        .await
        .unwrap();
    assert_eq!(renewed.token, lease.token, "renewal keeps the token");
    assert_eq!(renewed.owner, lease.owner);
    assert_eq!(renewed.expires_at, at_s(110));
    // The renewal counts: at 100 s the first expiry has passed but the lease is still held.
    assert_eq!(
        store
            .acquire_lease(&job, &run_id("b"), at_s(100), LEASE)
            .await
            .unwrap(),
        None
    );
    // Renewing with the old copy (same token) works too while held.
    let renewed2 = store
        .renew_lease(&job, &lease, at_s(100), Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(renewed2.expires_at, at_s(130));
    // Past expiry, even if nobody took it: LeaseLost.
    assert_eq!(
        store.renew_lease(&job, &renewed2, at_s(130), LEASE).await,
        Err(StoreError::LeaseLost)
    );
    assert_eq!(
        store.renew_lease(&job, &renewed2, at_s(200), LEASE).await,
        Err(StoreError::LeaseLost)
    );
    // A failed renewal does not resurrect it: another run can take it.
    let b = store
        .acquire_lease(&job, &run_id("b"), at_s(201), LEASE)
        .await
        .unwrap()
        .expect("free after expiry");
    // After a takeover the old holder's renewal fails, even "before" its old expiry.
    assert_eq!(
        store.renew_lease(&job, &renewed2, at_s(202), LEASE).await,
        Err(StoreError::LeaseLost)
    );
    assert!(store.renew_lease(&job, &b, at_s(202), LEASE).await.is_ok());
    // Renewing a job never leased: LeaseLost.
    assert_eq!(
        store.renew_lease(&unique_job(), &b, at_s(202), LEASE).await,
        Err(StoreError::LeaseLost)
    );
}

pub async fn lease_release_only_by_holder<S: StateStore + 'static>(store: Arc<S>) {
    let job = unique_job();
    let old = store
        .acquire_lease(&job, &run_id("a"), t0(), LEASE)
        .await
        .unwrap()
        .unwrap();
    let new = store
        .acquire_lease(&job, &run_id("b"), at_s(61), LEASE)
        .await
        .unwrap()
        .expect("expired");
    // The old holder's release is not an error and does nothing.
    store
        .release_lease(&job, &old)
        .await
        .expect("releasing a lost lease is not an error");
    assert_eq!(
        store
            .acquire_lease(&job, &run_id("c"), at_s(62), LEASE)
            .await
            .unwrap(),
        None,
        "still held by b"
    );
    assert!(store.renew_lease(&job, &new, at_s(62), LEASE).await.is_ok());
    // The holder's release frees it at once.
    store.release_lease(&job, &new).await.unwrap();
    assert!(store
        .acquire_lease(&job, &run_id("c"), at_s(63), LEASE)
        .await
        .unwrap()
        .is_some());
    // Releasing twice, or on a job never leased, is fine.
    store.release_lease(&job, &new).await.unwrap();
    store.release_lease(&unique_job(), &new).await.unwrap();
    // A released lease cannot be renewed.
    assert_eq!(
        store.renew_lease(&job, &new, at_s(64), LEASE).await,
        Err(StoreError::LeaseLost)
    );
}

// ---------------------------------------------------------------------------------------
// Commit
// ---------------------------------------------------------------------------------------

pub async fn commit_applies_state_errors_and_events<S: StateStore + 'static>(store: Arc<S>) {
    let job = unique_job();
    let lease = must_lease(&*store, &job, t0()).await;
    let state = state_with_cursor(7);
    let e1 = event(&job, EventKind::ExportJobHalted, 1);
    let e2 = event(&job, EventKind::ExportRunCompleted, 2);
    let it = item(
        "k1",
        8,
        ErrorStatus::Open,
        "FIELD_CUSTOM_VALIDATION_EXCEPTION",
        at_s(5),
    );
    store
        .commit(
            &job,
            &lease,
            at_s(30),
            commit_of(
                state.clone(),
                vec![ErrorWrite::Put(it.clone())],
                vec![e1.clone(), e2.clone()],
            ),
        )
        .await
        .expect("commit while held");
    assert_eq!(
        store.load_state(&job).await.unwrap(),
        state,
        "the state round-trips exactly"
    );
    assert_eq!(store.get_error(&job, &key("k1")).await.unwrap(), Some(it));
    assert_eq!(
        store.pending_events(&job.tenant).await.unwrap(),
        vec![e1.clone(), e2.clone()],
        "events in order"
    );
    // A second commit replaces the state and appends its events after the first ones.
    let state2 = JobState {
        cursor: 9,
        ..JobState::default()
    };
    let e3 = event(&job, EventKind::ExportJobResumed, 3);
    store
        .commit(
            &job,
            &lease,
            at_s(59),
            commit_of(state2.clone(), vec![], vec![e3.clone()]),
        )
        .await
        .unwrap();
    assert_eq!(store.load_state(&job).await.unwrap(), state2);
    assert_eq!(
        store.pending_events(&job.tenant).await.unwrap(),
        vec![e1, e2, e3]
    );
    // Committing does not renew or release the lease.
    assert_eq!(
        store
            .acquire_lease(&job, &run_id("b"), at_s(59), LEASE)
            .await
            .unwrap(),
        None
    );
    // The state is per job.
    let other = JobRef::new(job.tenant.clone(), JobId::new("other").unwrap());
    assert_eq!(store.load_state(&other).await.unwrap(), JobState::default());
}

/// Snapshot of everything a commit could change, to prove a refused one changed nothing.
async fn snapshot<S: StateStore>(
    store: &S,
    job: &JobRef,
) -> (JobState, Vec<ExportErrorItem>, Vec<Event>) {
    let items = all_pages(store, job, &ErrorFilter::default(), 100).await;
    let mut items = items;
    items.sort_by(|a, b| a.key.cmp(&b.key));
    (
        store.load_state(job).await.unwrap(),
        items,
        store.pending_events(&job.tenant).await.unwrap(),
    )
}

fn refused_commit(job: &JobRef) -> Commit {
    commit_of(
        JobState {
            cursor: 99,
            ..JobState::default()
        },
        vec![
            ErrorWrite::Put(item("new", 50, ErrorStatus::Open, "X", at_s(9))),
            ErrorWrite::Resolve {
                key: key("k1"),
                by_seq: 8,
                at: at_s(9),
            },
        ],
        vec![event(job, EventKind::ExportRunCompleted, 9)],
    )
}

async fn seed_for_refusal<S: StateStore>(store: &S, job: &JobRef, lease: &Lease) {
    store
        .commit(
            job,
            lease,
            at_s(1),
            commit_of(
                state_with_cursor(3),
                vec![ErrorWrite::Put(item(
                    "k1",
                    8,
                    ErrorStatus::Open,
                    "X",
                    at_s(1),
                ))],
                vec![event(job, EventKind::ExportJobHalted, 1)],
            ),
        )
        .await
        .expect("seed commit");
}

pub async fn commit_refused_after_expiry_changes_nothing<S: StateStore + 'static>(store: Arc<S>) {
    let job = unique_job();
    let lease = must_lease(&*store, &job, t0()).await;
    seed_for_refusal(&*store, &job, &lease).await;
    let before = snapshot(&*store, &job).await;
    // At expires_at the lease is no longer held, even though nobody took it over.
    assert_eq!(
        store
            .commit(&job, &lease, at_s(60), refused_commit(&job))
            .await,
        Err(StoreError::LeaseLost)
    );
    assert_eq!(
        store
            .commit(&job, &lease, at_s(3600), refused_commit(&job))
            .await,
        Err(StoreError::LeaseLost)
    );
    assert_eq!(
        snapshot(&*store, &job).await,
        before,
        "a refused commit writes nothing"
    );
    // A lease for another job does not allow committing this one.
    let other = JobRef::new(job.tenant.clone(), JobId::new("other").unwrap());
    let other_lease = must_lease(&*store, &other, at_s(100)).await;
    assert_eq!(
        store
            .commit(&job, &other_lease, at_s(101), refused_commit(&job))
            .await,
        Err(StoreError::LeaseLost)
    );
    assert_eq!(snapshot(&*store, &job).await, before);
    // A job never leased: LeaseLost as well.
    let never = unique_job();
    assert_eq!(
        store
            .commit(&never, &lease, at_s(1), refused_commit(&never))
            .await,
        Err(StoreError::LeaseLost)
    );
    assert_eq!(store.load_state(&never).await.unwrap(), JobState::default());
    assert!(store
        .pending_events(&never.tenant)
        .await
        .unwrap()
        .is_empty());
}

pub async fn commit_extends_the_lease_and_counts_api_calls_with_the_change<
    S: StateStore + 'static,
>(
    store: Arc<S>,
) {
    let job = unique_job();
    let lease = must_lease(&*store, &job, t0()).await;
    let calls_before = store
        .api_calls_last_24h(&job.tenant, at_s(50))
        .await
        .unwrap();
    let commit = Commit {
        api_calls: 7,
        lease_extension: Some(LEASE),
        ..commit_of(
            JobState {
                cursor: 5,
                ..JobState::default()
            },
            Vec::new(),
            Vec::new(),
        )
    };
    store
        .commit(&job, &lease, at_s(50), commit)
        .await
        .expect("the holder's commit");
    assert_eq!(store.load_state(&job).await.unwrap().cursor, 5);
    assert_eq!(
        store
            .api_calls_last_24h(&job.tenant, at_s(50))
            .await
            .unwrap(),
        calls_before + 7,
        "the commit's API calls are counted in the tenant's budget"
    );
    // The lease now runs until 50 s + LEASE: past its first expiry (60 s) it is still held
    // by the same token, so nobody else takes it and the holder's commits go through.
    assert_eq!(
        store
            .acquire_lease(&job, &run_id("other"), at_s(61), LEASE)
            .await
            .unwrap(),
        None,
        "an extended lease is still held after its first expiry"
    );
    let plain = commit_of(
        JobState {
            cursor: 6,
            ..JobState::default()
        },
        Vec::new(),
        Vec::new(),
    );
    store
        .commit(&job, &lease, at_s(100), plain.clone())
        .await
        .expect("a commit within the extended lease");
    assert_eq!(store.load_state(&job).await.unwrap().cursor, 6);
    // Without an extension nothing moves the expiry: at 50 s + LEASE it is gone.
    assert_eq!(
        store.commit(&job, &lease, at_s(110), plain).await,
        Err(StoreError::LeaseLost)
    );
    assert!(store
        .acquire_lease(&job, &run_id("other"), at_s(110), LEASE)
        .await
        .unwrap()
        .is_some());
    // A commit with no calls leaves the budget alone.
    assert_eq!(
        store
            .api_calls_last_24h(&job.tenant, at_s(110))
            .await
            .unwrap(),
        calls_before + 7
    );
}

pub async fn refused_commit_neither_extends_the_lease_nor_counts_calls<S: StateStore + 'static>(
    store: Arc<S>,
) {
    let job = unique_job();
    let lease = must_lease(&*store, &job, t0()).await;
    let taker = store
        .acquire_lease(&job, &run_id("taker"), at_s(60), LEASE)
        .await
        .unwrap()
        .expect("the expired lease can be taken");
    let late = Commit {
        api_calls: 4,
        lease_extension: Some(LEASE),
        ..refused_commit(&job)
    };
    assert_eq!(
        store.commit(&job, &lease, at_s(61), late).await,
        Err(StoreError::LeaseLost)
    );
    assert_eq!(
        store
            .api_calls_last_24h(&job.tenant, at_s(61))
            .await
            .unwrap(),
        0,
        "a refused commit counts no calls"
    );
    assert_eq!(store.load_state(&job).await.unwrap(), JobState::default());
    // The successor's lease is untouched: it expires when it said it would.
    store
        .commit(&job, &taker, at_s(119), refused_commit(&job))
        .await
        .expect("the successor commits within its own lease");
    assert_eq!(
        store
            .commit(&job, &taker, at_s(120), refused_commit(&job))
            .await,
        Err(StoreError::LeaseLost)
    );
}

pub async fn commit_refused_after_takeover_or_release_changes_nothing<S: StateStore + 'static>(
    store: Arc<S>,
) {
    let job = unique_job();
    let old = must_lease(&*store, &job, t0()).await;
    seed_for_refusal(&*store, &job, &old).await;
    let before = snapshot(&*store, &job).await;
    let new = store
        .acquire_lease(&job, &run_id("b"), at_s(61), LEASE)
        .await
        .unwrap()
        .expect("expired");
    // The old runner's `now` may lag (clock skew): its commit is still refused, because the
    // lease it names is no longer the stored one.
    assert_eq!(
        store
            .commit(&job, &old, at_s(30), refused_commit(&job))
            .await,
        Err(StoreError::LeaseLost)
    );
    assert_eq!(snapshot(&*store, &job).await, before);
    // A forged lease with the holder's owner and expiry but another token is refused too.
    let forged = Lease {
        token: LeaseToken("forged".into()),
        ..new.clone()
    };
    assert_eq!(
        store
            .commit(&job, &forged, at_s(62), refused_commit(&job))
            .await,
        Err(StoreError::LeaseLost)
    );
    assert_eq!(snapshot(&*store, &job).await, before);
    // After release, the released lease cannot commit.
    store.release_lease(&job, &new).await.unwrap();
    assert_eq!(
        store
            .commit(&job, &new, at_s(63), refused_commit(&job))
            .await,
        Err(StoreError::LeaseLost)
    );
    assert_eq!(snapshot(&*store, &job).await, before);
    // The rightful holder's commit goes through.
    let third = must_lease(&*store, &job, at_s(64)).await;
    store
        .commit(&job, &third, at_s(65), refused_commit(&job))
        .await
        .expect("holder commits");
    assert_eq!(store.load_state(&job).await.unwrap().cursor, 99);
}

// ---------------------------------------------------------------------------------------
// ExportErrors
// ---------------------------------------------------------------------------------------

pub async fn error_put_creates_and_replaces<S: StateStore + 'static>(store: Arc<S>) {
    let job = unique_job();
    let first = item(
        "k1",
        3,
        ErrorStatus::Open,
        "REQUIRED_FIELD_MISSING",
        at_s(1),
    );
    put_items(&*store, &job, vec![first.clone()]).await;
    assert_eq!(
        store.get_error(&job, &key("k1")).await.unwrap(),
        Some(first)
    );
    // Put replaces the whole item of the key (a newer failed version, refreshed error).
    let mut second = item(
        "k1",
        9,
        ErrorStatus::Parked,
        "INVALID_EMAIL_ADDRESS",
        at_s(2),
    );
    second.attempts = 31;
    second.retry_attempts = 30;
    second.resolved_at = Some(at_s(3));
    second.resolved_by_seq = Some(4);
    put_items(&*store, &job, vec![second.clone()]).await;
    assert_eq!(
        store.get_error(&job, &key("k1")).await.unwrap(),
        Some(second),
        "replaced exactly"
    );
    assert_eq!(
        all_pages(&*store, &job, &ErrorFilter::default(), 10)
            .await
            .len(),
        1,
        "one item per key"
    );
    assert_eq!(
        store.get_error(&job, &key("K1")).await.unwrap(),
        None,
        "keys are compared exactly"
    );
    // Items are per job.
    let other = JobRef::new(job.tenant.clone(), JobId::new("other").unwrap());
    assert_eq!(store.get_error(&other, &key("k1")).await.unwrap(), None);
}

pub async fn error_resolve_semantics<S: StateStore + 'static>(store: Arc<S>) {
    let job = unique_job();
    put_items(
        &*store,
        &job,
        vec![
            item("equal", 5, ErrorStatus::Open, "X", at_s(1)),
            item("older", 5, ErrorStatus::Open, "X", at_s(1)),
            item("newer", 5, ErrorStatus::Open, "X", at_s(1)),
            item("parked", 5, ErrorStatus::Parked, "X", at_s(1)),
            {
                let mut r = item("done", 5, ErrorStatus::Resolved, "X", at_s(1));
                r.resolved_at = Some(at_s(2));
                r.resolved_by_seq = Some(5);
                r
            },
            {
                let mut r = item("gone", 5, ErrorStatus::Superseded, "X", at_s(1));
                r.resolved_at = Some(at_s(2));
                r.resolved_by_seq = Some(6);
                r
            },
        ],
    )
    .await;
    let before_newer = store.get_error(&job, &key("newer")).await.unwrap();
    let before_done = store.get_error(&job, &key("done")).await.unwrap();
    let before_gone = store.get_error(&job, &key("gone")).await.unwrap();
    let at = at_s(10);
    write_errors(
        &*store,
        &job,
        vec![
            ErrorWrite::Resolve {
                key: key("equal"),
                by_seq: 5,
                at,
            },
            ErrorWrite::Resolve {
                key: key("older"),
                by_seq: 7,
                at,
            },
            // The item holds a newer version than the accepted one: it stays open.
            ErrorWrite::Resolve {
                key: key("newer"),
                by_seq: 4,
                at,
            },
            ErrorWrite::Resolve {
                key: key("parked"),
                by_seq: 5,
                at,
            },
            ErrorWrite::Resolve {
                key: key("done"),
                by_seq: 9,
                at,
            },
            ErrorWrite::Resolve {
                key: key("gone"),
                by_seq: 9,
                at,
            },
            ErrorWrite::Resolve {
                key: key("absent"),
                by_seq: 9,
                at,
            },
        ],
    )
    .await;
    let get = |k: &'static str| {
        let store = store.clone();
        let job = job.clone();
        async move { store.get_error(&job, &key(k)).await.unwrap() }
    };
    let equal = get("equal").await.unwrap();
    assert_eq!(
        (equal.status, equal.resolved_at, equal.resolved_by_seq),
        (ErrorStatus::Resolved, Some(at), Some(5))
    );
    let mut expected = item("equal", 5, ErrorStatus::Resolved, "X", at_s(1));
    expected.resolved_at = Some(at);
    expected.resolved_by_seq = Some(5);
    assert_eq!(equal, expected, "only status and resolution fields change");
    let older = get("older").await.unwrap();
    assert_eq!(
        (older.status, older.resolved_at, older.resolved_by_seq),
        (ErrorStatus::Superseded, Some(at), Some(7))
    );
    assert_eq!(
        get("newer").await,
        before_newer,
        "item seq newer than the accepted one: no change"
    );
    let parked = get("parked").await.unwrap();
    assert_eq!(
        parked.status,
        ErrorStatus::Resolved,
        "a parked item is unresolved and resolves"
    );
    assert_eq!(
        get("done").await,
        before_done,
        "an already resolved item does not change"
    );
    assert_eq!(
        get("gone").await,
        before_gone,
        "an already superseded item does not change"
    );
    assert_eq!(
        get("absent").await,
        None,
        "resolving an unknown key creates nothing"
    );
}

pub async fn error_writes_apply_in_order<S: StateStore + 'static>(store: Arc<S>) {
    let job = unique_job();
    // Put then Resolve of the same key in one commit: the resolve sees the put.
    write_errors(
        &*store,
        &job,
        vec![
            ErrorWrite::Put(item("a", 3, ErrorStatus::Open, "X", at_s(1))),
            ErrorWrite::Resolve {
                key: key("a"),
                by_seq: 3,
                at: at_s(2),
            },
            ErrorWrite::Put(item("b", 4, ErrorStatus::Open, "X", at_s(1))),
            ErrorWrite::Put(item("b", 6, ErrorStatus::Open, "Y", at_s(3))),
        ],
    )
    .await;
    assert_eq!(
        store
            .get_error(&job, &key("a"))
            .await
            .unwrap()
            .unwrap()
            .status,
        ErrorStatus::Resolved
    );
    let b = store.get_error(&job, &key("b")).await.unwrap().unwrap();
    assert_eq!(
        (b.seq, b.error.code.as_str()),
        (6, "Y"),
        "the later put of a key wins"
    );
    // Resolve then Put: the put replaces the resolved item with an open one.
    write_errors(
        &*store,
        &job,
        vec![
            ErrorWrite::Resolve {
                key: key("b"),
                by_seq: 6,
                at: at_s(4),
            },
            ErrorWrite::Put(item("b", 8, ErrorStatus::Open, "Z", at_s(5))),
        ],
    )
    .await;
    let b = store.get_error(&job, &key("b")).await.unwrap().unwrap();
    assert_eq!((b.seq, b.status), (8, ErrorStatus::Open));
}

pub async fn unresolved_errors_lists_open_and_parked<S: StateStore + 'static>(store: Arc<S>) {
    let job = unique_job();
    put_items(
        &*store,
        &job,
        vec![
            item("o", 3, ErrorStatus::Open, "X", at_s(1)),
            item("p", 4, ErrorStatus::Parked, "X", at_s(1)),
            item("r", 5, ErrorStatus::Resolved, "X", at_s(1)),
            item("s", 6, ErrorStatus::Superseded, "X", at_s(1)),
        ],
    )
    .await;
    assert_eq!(
        store.unresolved_errors(&job).await.unwrap(),
        HashMap::from([(key("o"), 3), (key("p"), 4)])
    );
    write_errors(
        &*store,
        &job,
        vec![ErrorWrite::Resolve {
            key: key("o"),
            by_seq: 3,
            at: at_s(2),
        }],
    )
    .await;
    assert_eq!(
        store.unresolved_errors(&job).await.unwrap(),
        HashMap::from([(key("p"), 4)])
    );
}

pub async fn open_errors_for_retry_order_filters_and_limit<S: StateStore + 'static>(store: Arc<S>) {
    let job = unique_job();
    put_items(
        &*store,
        &job,
        vec![
            item("c", 1, ErrorStatus::Open, "X", at_s(30)),
            item("a", 2, ErrorStatus::Open, "X", at_s(10)),
            item("b", 3, ErrorStatus::Open, "X", at_s(10)),
            item("d", 4, ErrorStatus::Open, "X", at_ms(10_001)),
            item("e", 5, ErrorStatus::Open, "X", at_s(50)),
            item("parked", 6, ErrorStatus::Parked, "X", at_s(5)),
            item("resolved", 7, ErrorStatus::Resolved, "X", at_s(5)),
            item("superseded", 8, ErrorStatus::Superseded, "X", at_s(5)),
        ],
    )
    .await;
    let keys = |v: Vec<ExportErrorItem>| keys_of(&v);
    let all = store
        .open_errors_for_retry(&job, at_s(1000), None, 100)
        .await
        .unwrap();
    assert_eq!(
        keys(all.clone()),
        vec!["a", "b", "d", "c", "e"],
        "open only, oldest attempt first, ties by key"
    );
    assert_eq!(
        all[0],
        item("a", 2, ErrorStatus::Open, "X", at_s(10)),
        "whole items"
    );
    // `before` is exclusive.
    assert_eq!(
        keys(
            store
                .open_errors_for_retry(&job, at_s(30), None, 100)
                .await
                .unwrap()
        ),
        vec!["a", "b", "d"]
    );
    assert!(store
        .open_errors_for_retry(&job, at_s(10), None, 100)
        .await
        .unwrap()
        .is_empty());
    // `after` continues strictly after the given (last attempt, key) position.
    let after_a = Some((at_s(10), key("a")));
    assert_eq!(
        keys(
            store
                .open_errors_for_retry(&job, at_s(1000), after_a, 100)
                .await
                .unwrap()
        ),
        vec!["b", "d", "c", "e"]
    );
    let after_b = Some((at_s(10), key("b")));
    assert_eq!(
        keys(
            store
                .open_errors_for_retry(&job, at_s(1000), after_b, 100)
                .await
                .unwrap()
        ),
        vec!["d", "c", "e"]
    );
    // A position that is not an item (between d and c).
    let between = Some((at_s(20), key("zzz")));
    assert_eq!(
        keys(
            store
                .open_errors_for_retry(&job, at_s(1000), between, 100)
                .await
                .unwrap()
        ),
        vec!["c", "e"]
    );
    // limit, and paging with the last item's position.
    let mut seen = Vec::new();
    let mut after: Option<(Timestamp, RecordKey)> = None;
    loop {
        let page = store
            .open_errors_for_retry(&job, at_s(1000), after.clone(), 2)
            .await
            .unwrap();
        assert!(page.len() <= 2);
        let Some(last) = page.last() else { break };
        after = Some((last.last_attempt_at, last.key.clone()));
        seen.extend(keys_of(&page));
        assert!(seen.len() <= 5, "paging ends");
    }
    assert_eq!(seen, vec!["a", "b", "d", "c", "e"]);
    assert!(store
        .open_errors_for_retry(&job, at_s(1000), None, 0)
        .await
        .unwrap()
        .is_empty());
}

async fn seed_list_items<S: StateStore>(store: &S, job: &JobRef) -> Vec<ExportErrorItem> {
    let items = vec![
        item("a", 1, ErrorStatus::Open, "VALIDATION", at_s(10)),
        item("b", 2, ErrorStatus::Open, "REQUIRED", at_s(40)),
        item("c", 3, ErrorStatus::Parked, "VALIDATION", at_s(20)),
        item("d", 4, ErrorStatus::Resolved, "VALIDATION", at_s(40)),
        item("e", 5, ErrorStatus::Superseded, "REQUIRED", at_s(30)),
        item("f", 6, ErrorStatus::Open, "VALIDATION", at_s(40)),
        item("g", 7, ErrorStatus::Open, "VALIDATION", at_ms(30_001)),
        item("h", 8, ErrorStatus::Open, "DUPLICATE", at_s(5)),
    ];
    put_items(store, job, items.clone()).await;
    items
}

fn assert_newest_first(items: &[ExportErrorItem]) {
    assert!(
        items
            .windows(2)
            .all(|w| w[0].last_attempt_at >= w[1].last_attempt_at),
        "newest last attempt first: {:?}",
        items
            .iter()
            .map(|i| (i.key.as_str(), i.last_attempt_at))
            .collect::<Vec<_>>()
    );
}

pub async fn list_errors_filters_and_orders_newest_first<S: StateStore + 'static>(store: Arc<S>) {
    let job = unique_job();
    let items = seed_list_items(&*store, &job).await;
    let all = all_pages(&*store, &job, &ErrorFilter::default(), 100).await;
    assert_newest_first(&all);
    assert_eq!(
        sorted(keys_of(&all)),
        vec!["a", "b", "c", "d", "e", "f", "g", "h"]
    );
    // The three items at 40 s come first (in some order), then g, e, c, a, h.
    assert_eq!(sorted(keys_of(&all[..3])), vec!["b", "d", "f"]);
    assert_eq!(keys_of(&all[3..]), vec!["g", "e", "c", "a", "h"]);
    let by_key: HashMap<_, _> = items.iter().map(|i| (i.key.clone(), i.clone())).collect();
    assert!(all.iter().all(|i| by_key[&i.key] == *i), "whole items");

    let open = ErrorFilter {
        status: Some(ErrorStatus::Open),
        code: None,
    };
    let got = all_pages(&*store, &job, &open, 100).await;
    assert_newest_first(&got);
    assert_eq!(sorted(keys_of(&got)), vec!["a", "b", "f", "g", "h"]);

    let code = ErrorFilter {
        status: None,
        code: Some("VALIDATION".into()),
    };
    let got = all_pages(&*store, &job, &code, 100).await;
    assert_newest_first(&got);
    assert_eq!(sorted(keys_of(&got)), vec!["a", "c", "d", "f", "g"]);

    let both = ErrorFilter {
        status: Some(ErrorStatus::Open),
        code: Some("VALIDATION".into()),
    };
    assert_eq!(
        sorted(keys_of(&all_pages(&*store, &job, &both, 100).await)),
        vec!["a", "f", "g"]
    );

    let parked = ErrorFilter {
        status: Some(ErrorStatus::Parked),
        code: None,
    };
    assert_eq!(
        keys_of(&all_pages(&*store, &job, &parked, 100).await),
        vec!["c"]
    );
    let nothing = ErrorFilter {
        status: None,
        code: Some("NO_SUCH_CODE".into()),
    };
    assert!(all_pages(&*store, &job, &nothing, 100).await.is_empty());
    let case = ErrorFilter {
        status: None,
        code: Some("validation".into()),
    };
    assert!(
        all_pages(&*store, &job, &case, 100).await.is_empty(),
        "codes are compared exactly"
    );
}

pub async fn list_errors_pagination_covers_every_item_once<S: StateStore + 'static>(store: Arc<S>) {
    let job = unique_job();
    seed_list_items(&*store, &job).await;
    // More items with one shared last attempt, so page boundaries fall inside ties.
    let tied: Vec<_> = (0..9)
        .map(|n| {
            item(
                &format!("t{n}"),
                100 + n,
                ErrorStatus::Open,
                "TIED",
                at_s(25),
            )
        })
        .collect();
    put_items(&*store, &job, tied).await;
    let everything = sorted(keys_of(
        &all_pages(&*store, &job, &ErrorFilter::default(), 1000).await,
    ));
    assert_eq!(everything.len(), 17);
    for limit in [1, 2, 3, 5, 16, 17, 18] {
        let got = all_pages(&*store, &job, &ErrorFilter::default(), limit).await;
        assert_newest_first(&got);
        assert_eq!(
            sorted(keys_of(&got)),
            everything,
            "limit {limit}: every item exactly once"
        );
    }
    let open = ErrorFilter {
        status: Some(ErrorStatus::Open),
        code: None,
    };
    let open_all = sorted(keys_of(&all_pages(&*store, &job, &open, 1000).await));
    assert_eq!(open_all.len(), 14);
    for limit in [1, 4] {
        let got = all_pages(&*store, &job, &open, limit).await;
        assert_newest_first(&got);
        assert_eq!(
            sorted(keys_of(&got)),
            open_all,
            "filtered, limit {limit}: every item exactly once"
        );
    }
    // The first page of a longer list says there is more.
    let first = store
        .list_errors(&job, &ErrorFilter::default(), None, 3)
        .await
        .unwrap();
    assert!(
        first.next.is_some(),
        "a page short of the end carries a token"
    );
}

pub async fn list_errors_bad_token_is_invalid<S: StateStore + 'static>(store: Arc<S>) {
    let job = unique_job();
    seed_list_items(&*store, &job).await;
    for bad in ["%%% not a token %%%", "zz"] {
        let got = store
            .list_errors(&job, &ErrorFilter::default(), Some(bad), 3)
            .await;
        assert!(
            matches!(got, Err(StoreError::Invalid(_))),
            "bad token {bad:?} → Invalid, got {got:?}"
        );
    }
}

pub async fn count_errors_per_status<S: StateStore + 'static>(store: Arc<S>) {
    let job = unique_job();
    seed_list_items(&*store, &job).await;
    assert_eq!(
        store.count_errors(&job, ErrorStatus::Open).await.unwrap(),
        5
    );
    assert_eq!(
        store.count_errors(&job, ErrorStatus::Parked).await.unwrap(),
        1
    );
    assert_eq!(
        store
            .count_errors(&job, ErrorStatus::Resolved)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        store
            .count_errors(&job, ErrorStatus::Superseded)
            .await
            .unwrap(),
        1
    );
    write_errors(
        &*store,
        &job,
        vec![ErrorWrite::Resolve {
            key: key("a"),
            by_seq: 1,
            at: at_s(99),
        }],
    )
    .await;
    assert_eq!(
        store.count_errors(&job, ErrorStatus::Open).await.unwrap(),
        4
    );
    assert_eq!(
        store
            .count_errors(&job, ErrorStatus::Resolved)
            .await
            .unwrap(),
        2
    );
    let other = JobRef::new(job.tenant.clone(), JobId::new("other").unwrap());
    assert_eq!(
        store.count_errors(&other, ErrorStatus::Open).await.unwrap(),
        0
    );
}

// ---------------------------------------------------------------------------------------
// Settings, job catalog, outbox, API budget
// ---------------------------------------------------------------------------------------

pub async fn settings_put_get_with_versions<S: StateStore + 'static>(store: Arc<S>) {
    let tenant = unique_tenant();
    assert_eq!(
        store.get_settings(&tenant).await.unwrap(),
        None,
        "never saved: None (version 0)"
    );
    let s1 = settings(100, true);
    let v1 = store
        .put_settings(
            &tenant,
            0,
            change(1, Settings::default(), s1.clone(), 1),
            tenant_event(&tenant, 1),
        )
        .await
        .unwrap();
    assert_eq!(v1, 1);
    assert_eq!(
        store.get_settings(&tenant).await.unwrap(),
        Some(VersionedSettings {
            settings: s1.clone(),
            version: 1
        })
    );
    let s2 = Settings {
        daily_api_limit: 5_000,
        max_retry_attempts: 7,
        ..settings(25, false)
    };
    let v2 = store
        .put_settings(
            &tenant,
            1,
            change(2, s1, s2.clone(), 2),
            tenant_event(&tenant, 2),
        )
        .await
        .unwrap();
    assert_eq!(v2, 2);
    assert_eq!(
        store.get_settings(&tenant).await.unwrap(),
        Some(VersionedSettings {
            settings: s2,
            version: 2
        })
    );
    // Settings are per tenant.
    assert_eq!(store.get_settings(&unique_tenant()).await.unwrap(), None);
}

pub async fn settings_version_conflict_changes_nothing<S: StateStore + 'static>(store: Arc<S>) {
    let tenant = unique_tenant();
    let s1 = settings(50, true);
    store
        .put_settings(
            &tenant,
            0,
            change(1, Settings::default(), s1.clone(), 1),
            tenant_event(&tenant, 1),
        )
        .await
        .unwrap();
    let before = (
        store.get_settings(&tenant).await.unwrap(),
        store.settings_history(&tenant, None, 100).await.unwrap(),
        store.pending_events(&tenant).await.unwrap(),
    );
    let other = settings(200, false);
    // A second "create" (expected 0) and a stale or future version are refused.
    for (expected, found) in [(0, 1), (2, 1), (7, 1)] {
        let got = store
            .put_settings(
                &tenant,
                expected,
                change(expected + 1, s1.clone(), other.clone(), 9),
                tenant_event(&tenant, 9),
            )
            .await;
        assert_eq!(got, Err(StoreError::VersionConflict { expected, found }));
    }
    let after = (
        store.get_settings(&tenant).await.unwrap(),
        store.settings_history(&tenant, None, 100).await.unwrap(),
        store.pending_events(&tenant).await.unwrap(),
    );
    assert_eq!(
        after, before,
        "a conflict changes neither settings, history nor outbox"
    );
    // A tenant without settings refuses any expected version but 0.
    let fresh = unique_tenant();
    let got = store
        .put_settings(
            &fresh,
            1,
            change(2, s1.clone(), other.clone(), 3),
            tenant_event(&fresh, 3),
        )
        .await;
    assert_eq!(
        got,
        Err(StoreError::VersionConflict {
            expected: 1,
            found: 0
        })
    );
    assert_eq!(store.get_settings(&fresh).await.unwrap(), None);
    assert!(store.pending_events(&fresh).await.unwrap().is_empty());
    assert!(store
        .settings_history(&fresh, None, 10)
        .await
        .unwrap()
        .items
        .is_empty());
}

pub async fn settings_history_newest_first_and_paginated<S: StateStore + 'static>(store: Arc<S>) {
    let tenant = unique_tenant();
    let mut current = Settings::default();
    let mut changes = Vec::new();
    for v in 1..=5u64 {
        let next = settings(BatchSize::ALLOWED[(v as usize) % 4], v % 2 == 0);
        let c = change(v, current.clone(), next.clone(), v as i64);
        let got = store
            .put_settings(&tenant, v - 1, c.clone(), tenant_event(&tenant, v as u32))
            .await
            .unwrap();
        assert_eq!(got, v);
        changes.push(c);
        current = next;
    }
    let all = store.settings_history(&tenant, None, 100).await.unwrap();
    assert_eq!(
        all.items.iter().map(|c| c.version).collect::<Vec<_>>(),
        vec![5, 4, 3, 2, 1],
        "newest first"
    );
    let mut expected = changes.clone();
    expected.reverse();
    assert_eq!(
        all.items, expected,
        "changes round-trip exactly (who, when, old → new, ack)"
    );
    // Pages of 2, following the opaque tokens.
    let mut versions = Vec::new();
    let mut token: Option<String> = None;
    for _ in 0..10 {
        let page = store
            .settings_history(&tenant, token.as_deref(), 2)
            .await
            .unwrap();
        assert!(page.items.len() <= 2);
        versions.extend(page.items.iter().map(|c| c.version));
        match page.next {
            Some(t) => token = Some(t),
            None => break,
        }
    }
    assert_eq!(
        versions,
        vec![5, 4, 3, 2, 1],
        "every change exactly once, in order"
    );
    let first = store.settings_history(&tenant, None, 2).await.unwrap();
    assert!(first.next.is_some());
    let bad = store
        .settings_history(&tenant, Some("%%% not a token %%%"), 2)
        .await;
    assert!(
        matches!(bad, Err(StoreError::Invalid(_))),
        "bad token → Invalid, got {bad:?}"
    );
    assert!(store
        .settings_history(&unique_tenant(), None, 10)
        .await
        .unwrap()
        .items
        .is_empty());
}

pub async fn list_tenants_lists_tenants_with_settings<S: StateStore + 'static>(store: Arc<S>) {
    let a = unique_tenant();
    let b = unique_tenant();
    let only_job = unique_tenant();
    let only_calls = unique_tenant();
    for t in [&a, &b] {
        store
            .put_settings(
                t,
                0,
                change(1, Settings::default(), settings(200, true), 1),
                tenant_event(t, 1),
            )
            .await
            .unwrap();
    }
    store
        .put_job(&only_job, job_def("touchpoints", "Contact"))
        .await
        .unwrap();
    store.add_api_calls(&only_calls, t0(), 3).await.unwrap();
    let tenants: BTreeSet<TenantId> = store.list_tenants().await.unwrap().into_iter().collect();
    // Other tests may share the backend: check inclusion, not equality.
    assert!(
        tenants.contains(&a) && tenants.contains(&b),
        "tenants with settings are listed"
    );
    assert!(
        !tenants.contains(&only_job),
        "a tenant without settings is not listed"
    );
    assert!(!tenants.contains(&only_calls));
    let listed = store.list_tenants().await.unwrap();
    assert_eq!(listed.len(), tenants.len(), "each tenant once");
}

pub async fn job_catalog_put_get_list<S: StateStore + 'static>(store: Arc<S>) {
    let tenant = unique_tenant();
    let tp = job_def("touchpoints", "bizible2__Bizible_Touchpoint__c");
    let contacts = job_def("contacts", "Contact");
    assert_eq!(store.get_job(&tenant, &tp.job_id).await.unwrap(), None);
    store.put_job(&tenant, tp.clone()).await.unwrap();
    store.put_job(&tenant, contacts.clone()).await.unwrap();
    assert_eq!(
        store.get_job(&tenant, &tp.job_id).await.unwrap(),
        Some(tp.clone()),
        "definitions round-trip"
    );
    let mut listed = store.list_jobs(&tenant).await.unwrap();
    listed.sort_by(|a, b| a.job_id.cmp(&b.job_id));
    assert_eq!(listed, vec![contacts.clone(), tp.clone()]);
    // put replaces.
    let tp2 = JobDefinition {
        object: "Lead".into(),
        key_field: None,
        field_map: BTreeMap::new(),
        ..tp.clone()
    };
    store.put_job(&tenant, tp2.clone()).await.unwrap();
    assert_eq!(store.get_job(&tenant, &tp.job_id).await.unwrap(), Some(tp2));
    assert_eq!(store.list_jobs(&tenant).await.unwrap().len(), 2);
    // Per tenant.
    let other = unique_tenant();
    assert_eq!(store.get_job(&other, &tp.job_id).await.unwrap(), None);
    assert!(store.list_jobs(&other).await.unwrap().is_empty());
}

pub async fn outbox_pending_and_mark_published<S: StateStore + 'static>(store: Arc<S>) {
    let job = unique_job();
    let tenant = job.tenant.clone();
    let lease = must_lease(&*store, &job, t0()).await;
    let e1 = event(&job, EventKind::ExportJobHalted, 1);
    let e2 = event(&job, EventKind::ExportJobBlocked, 2);
    store
        .commit(
            &job,
            &lease,
            at_s(1),
            commit_of(JobState::default(), vec![], vec![e1.clone(), e2.clone()]),
        )
        .await
        .unwrap();
    let e3 = tenant_event(&tenant, 3);
    store
        .put_settings(
            &tenant,
            0,
            change(1, Settings::default(), settings(200, true), 3),
            e3.clone(),
        )
        .await
        .unwrap();
    let other_job = JobRef::new(tenant.clone(), JobId::new("other").unwrap());
    let lease2 = must_lease(&*store, &other_job, t0()).await;
    let e4 = event(&other_job, EventKind::ExportRunFailed, 4);
    store
        .commit(
            &other_job,
            &lease2,
            at_s(2),
            commit_of(JobState::default(), vec![], vec![e4.clone()]),
        )
        .await
        .unwrap();
    assert_eq!(
        store.pending_events(&tenant).await.unwrap(),
        vec![e1.clone(), e2.clone(), e3.clone(), e4.clone()],
        "every event of the tenant, in the order recorded, exactly as recorded"
    );
    // Another tenant's outbox is separate.
    let stranger = unique_job();
    let ls = must_lease(&*store, &stranger, t0()).await;
    let e5 = event(&stranger, EventKind::ExportRunCompleted, 5);
    store
        .commit(
            &stranger,
            &ls,
            at_s(3),
            commit_of(JobState::default(), vec![], vec![e5.clone()]),
        )
        .await
        .unwrap();
    assert_eq!(
        store.pending_events(&stranger.tenant).await.unwrap(),
        vec![e5.clone()]
    );
    store
        .mark_published(&stranger.tenant, std::slice::from_ref(&e1.id))
        .await
        .unwrap();
    assert_eq!(
        store.pending_events(&tenant).await.unwrap().len(),
        4,
        "marking is per tenant"
    );
    // Marking some leaves the rest, in order; unknown ids are ignored.
    store
        .mark_published(
            &tenant,
            &[e2.id.clone(), e4.id.clone(), "no-such-event".into()],
        )
        .await
        .unwrap();
    assert_eq!(
        store.pending_events(&tenant).await.unwrap(),
        vec![e1.clone(), e3.clone()]
    );
    store
        .mark_published(&tenant, std::slice::from_ref(&e2.id))
        .await
        .expect("marking twice is fine");
    store.mark_published(&tenant, &[]).await.unwrap();
    store
        .mark_published(&tenant, &[e1.id.clone(), e3.id.clone()])
        .await
        .unwrap();
    assert!(store.pending_events(&tenant).await.unwrap().is_empty());
    assert_eq!(
        store.pending_events(&stranger.tenant).await.unwrap(),
        vec![e5]
    );
}

pub async fn api_budget_counts_hourly_buckets_of_last_24h<S: StateStore + 'static>(store: Arc<S>) {
    let tenant = unique_tenant();
    let t = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
    let now = t("2026-01-02T12:30:00Z");
    assert_eq!(
        hour_bucket(now - chrono::Duration::hours(24)),
        t("2026-01-01T12:00:00Z").timestamp()
    );
    store
        .add_api_calls(&tenant, t("2026-01-01T11:59:59Z"), 1)
        .await
        .unwrap(); // bucket before the window
    store
        .add_api_calls(&tenant, t("2026-01-01T12:00:00Z"), 2)
        .await
        .unwrap(); // the oldest bucket, counted whole
    store
        .add_api_calls(&tenant, t("2026-01-01T12:10:00Z"), 4)
        .await
        .unwrap(); // >24 h ago, same oldest bucket
    store
        .add_api_calls(&tenant, t("2026-01-02T03:00:00Z"), 8)
        .await
        .unwrap();
    store
        .add_api_calls(&tenant, t("2026-01-02T03:59:59Z"), 16)
        .await
        .unwrap(); // adds to the same bucket
    store
        .add_api_calls(&tenant, t("2026-01-02T12:29:59Z"), 32)
        .await
        .unwrap();
    store
        .add_api_calls(&tenant, t("2026-01-02T12:30:00Z"), 64)
        .await
        .unwrap(); // at `now`
    store
        .add_api_calls(&tenant, t("2025-12-30T12:00:00Z"), 1000)
        .await
        .unwrap(); // days old
    assert_eq!(
        store.api_calls_last_24h(&tenant, now).await.unwrap(),
        2 + 4 + 8 + 16 + 32 + 64
    );
    // An hour later the oldest bucket has left the window.
    assert_eq!(
        store
            .api_calls_last_24h(&tenant, t("2026-01-02T13:30:00Z"))
            .await
            .unwrap(),
        8 + 16 + 32 + 64
    );
    // Two days later nothing is left.
    assert_eq!(
        store
            .api_calls_last_24h(&tenant, t("2026-01-04T13:30:00Z"))
            .await
            .unwrap(),
        0
    );
    // Per tenant, and zero calls add nothing.
    let other = unique_tenant();
    store.add_api_calls(&other, now, 0).await.unwrap();
    assert_eq!(store.api_calls_last_24h(&other, now).await.unwrap(), 0);
    store.add_api_calls(&other, now, 5).await.unwrap();
    assert_eq!(store.api_calls_last_24h(&other, now).await.unwrap(), 5);
    assert_eq!(store.api_calls_last_24h(&tenant, now).await.unwrap(), 126);
}

// ---------------------------------------------------------------------------------------
// Concurrency
// ---------------------------------------------------------------------------------------

/// What producer `p` sends as batch `b`: `len` records tagged so the reader can check them.
fn tagged_batch(p: usize, b: usize, len: usize) -> Vec<NewRecord> {
    (0..len)
        .map(|i| {
            rec(
                &format!("p{p}-b{b}-{i}"),
                json!({ "p": p, "b": b, "i": i, "len": len }),
            )
        })
        .collect()
}

/// Runs `producers` tasks that each enqueue `batches` batches of 1–4 records into `job`
/// at once; returns every (seqs, producer, batch) enqueued.
async fn run_producers<S: StateStore + 'static>(
    store: Arc<S>,
    job: &JobRef,
    producers: usize,
    batches: usize,
) -> Vec<(Vec<Seq>, usize, usize)> {
    let barrier = Arc::new(tokio::sync::Barrier::new(producers));
    let mut tasks = Vec::new();
    for p in 0..producers {
        let (store, job, barrier) = (store.clone(), job.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let mut out = Vec::new();
            for b in 0..batches {
                let len = 1 + (p + b) % 4;
                let seqs = store
                    .enqueue(&job, tagged_batch(p, b, len), t0())
                    .await
                    .expect("enqueue");
                assert_eq!(seqs.len(), len, "one seq per record");
                out.push((seqs, p, b));
            }
            out
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("producer task"));
    }
    all
}

/// Checks seqs are 1..=n without gaps or duplicates, each batch consecutive, and every
/// record readable with the fields its producer sent.
async fn check_enqueued<S: StateStore>(
    store: &S,
    job: &JobRef,
    enqueued: &[(Vec<Seq>, usize, usize)],
) {
    let total: usize = enqueued.iter().map(|(s, _, _)| s.len()).sum();
    let mut seen = BTreeSet::new();
    for (seqs, _, _) in enqueued {
        assert!(
            seqs.windows(2).all(|w| w[1] == w[0] + 1),
            "a batch gets consecutive seqs: {seqs:?}"
        );
        for s in seqs {
            assert!(seen.insert(*s), "seq {s} assigned twice");
        }
    }
    assert_eq!(
        seen,
        (1..=total as u64).collect::<BTreeSet<_>>(),
        "seqs are exactly 1..={total}, no gaps"
    );
    assert_eq!(store.head(job).await.unwrap(), total as u64);
    let records = store.read_after(job, 0, total + 10).await.unwrap();
    assert_eq!(records.len(), total, "every record is readable");
    let by_seq: HashMap<Seq, &Record> = records.iter().map(|r| (r.seq, r)).collect();
    for (seqs, p, b) in enqueued {
        for (i, s) in seqs.iter().enumerate() {
            let r = by_seq[s];
            assert_eq!(
                r.key.as_str(),
                format!("p{p}-b{b}-{i}"),
                "seq {s} holds the record its producer sent"
            );
            assert_eq!(
                (r.fields["p"].clone(), r.fields["b"].clone()),
                (json!(p), json!(b))
            );
        }
    }
}

pub async fn concurrent_producers_get_gap_free_seqs<S: StateStore + 'static>(store: Arc<S>) {
    let job = unique_job();
    let enqueued = run_producers(store.clone(), &job, 8, 12).await;
    check_enqueued(&*store, &job, &enqueued).await;
}

pub async fn concurrent_lease_race_has_one_winner<S: StateStore + 'static>(store: Arc<S>) {
    let job = unique_job();
    const RUNNERS: usize = 8;
    // A run whose lease expired before the race: its late commit must be refused too.
    let stale = must_lease(&*store, &job, t0()).await;
    let now = at_s(120);
    for round in 0..3u64 {
        let barrier = Arc::new(tokio::sync::Barrier::new(RUNNERS));
        let mut tasks = Vec::new();
        for r in 0..RUNNERS {
            let (store, job, barrier, stale) =
                (store.clone(), job.clone(), barrier.clone(), stale.clone());
            tasks.push(tokio::spawn(async move {
                barrier.wait().await;
                let got = store
                    .acquire_lease(&job, &run_id(&format!("r{r}")), now, LEASE)
                    .await
                    .expect("acquire");
                // Everyone commits at once: the winner with its lease, the others with the
                // stale one (as a run that lost its lease would).
                let won = got.is_some();
                let lease = got.clone().unwrap_or(stale);
                let state = JobState {
                    cursor: 1000 * (round + 1) + r as u64,
                    ..JobState::default()
                };
                let res = store
                    .commit(&job, &lease, now, commit_of(state, vec![], vec![]))
                    .await;
                (r, won, got, res)
            }));
        }
        let mut winners = Vec::new();
        for t in tasks {
            let (r, won, lease, res) = t.await.expect("runner task");
            if won {
                assert_eq!(res, Ok(()), "the holder's commit succeeds");
                winners.push((r, lease.unwrap()));
            } else {
                assert_eq!(
                    res,
                    Err(StoreError::LeaseLost),
                    "a runner without the lease cannot commit"
                );
            }
        }
        assert_eq!(
            winners.len(),
            1,
            "exactly one runner acquires the lease (round {round})"
        );
        let (r, lease) = winners.pop().unwrap();
        assert_eq!(
            store.load_state(&job).await.unwrap().cursor,
            1000 * (round + 1) + r as u64,
            "the winner's state"
        );
        store.release_lease(&job, &lease).await.unwrap();
    }
}

pub async fn reader_never_sees_a_gap_while_producers_enqueue<S: StateStore + 'static>(
    store: Arc<S>,
) {
    let job = unique_job();
    const PRODUCERS: usize = 6;
    const BATCHES: usize = 15;
    let expected_total: u64 = (0..PRODUCERS)
        .flat_map(|p| (0..BATCHES).map(move |b| (1 + (p + b) % 4) as u64))
        .sum();
    let reader = {
        let (store, job) = (store.clone(), job.clone());
        tokio::spawn(async move {
            // Polls like the export run: read after the cursor, move the cursor to the last
            // record read. A record visible before a smaller seq would be skipped forever.
            let mut cursor: Seq = 0;
            let mut polls = 0u64;
            let deadline = std::time::Instant::now() + Duration::from_secs(60);
            while cursor < expected_total {
                assert!(
                    std::time::Instant::now() < deadline,
                    "reader stuck at {cursor}"
                );
                let page = store.read_after(&job, cursor, 7).await.expect("read_after");
                for r in &page {
                    assert_eq!(
                        r.seq,
                        cursor + 1,
                        "seq {} visible while seq {} is not",
                        r.seq,
                        cursor + 1
                    );
                    cursor = r.seq;
                }
                polls += 1;
                if page.is_empty() {
                    tokio::task::yield_now().await;
                }
            }
            (cursor, polls)
        })
    };
    let enqueued = run_producers(store.clone(), &job, PRODUCERS, BATCHES).await;
    let (cursor, polls) = reader.await.expect("reader task");
    assert_eq!(cursor, expected_total, "the reader saw every record");
    assert!(polls > 1, "the reader polled while producers ran");
    check_enqueued(&*store, &job, &enqueued).await;
}
