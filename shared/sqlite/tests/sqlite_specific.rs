//! Behaviour specific to the SQLite store: atomicity when a write fails half-way, error
//! mapping, persistence across reopen, schema migrations, and not blocking the runtime.

use chrono::{TimeZone, Utc};
use crm_export_core::domain::*;
use crm_export_core::ports::*;
use crm_export_sqlite::{SqliteOptions, SqliteStore};
use rusqlite::Connection;
use serde_json::json;
use std::path::Path;
use std::time::Duration;

fn job() -> JobRef {
    JobRef::new(
        TenantId::new("acme").unwrap(),
        JobId::new("touchpoints").unwrap(),
    )
}

fn t0() -> Timestamp {
    Utc.with_ymd_and_hms(2026, 3, 1, 10, 0, 0).unwrap()
}

fn rec(k: &str) -> NewRecord {
    NewRecord {
        key: RecordKey::from_stored(k),
        fields: json!({ "Id__c": k }).as_object().cloned().unwrap(),
    }
}

fn item(k: &str, seq: Seq) -> ExportErrorItem {
    ExportErrorItem {
        key: RecordKey::from_stored(k),
        seq,
        fields: serde_json::Map::new(),
        error: RecordError::new("REQUIRED_FIELD_MISSING", "missing"),
        status: ErrorStatus::Open,
        attempts: 1,
        retry_attempts: 0,
        first_seen: t0(),
        last_seen: t0(),
        last_attempt_at: t0(),
        resolved_at: None,
        resolved_by_seq: None,
    }
}

fn event(id: &str) -> Event {
    Event {
        id: id.to_string(),
        kind: EventKind::SettingsChanged,
        tenant: job().tenant,
        job: None,
        at: t0(),
        detail: json!({}),
    }
}

/// A trigger that makes one insert fail, to see a failure half-way through a transaction.
fn poison(path: &Path, sql: &str) {
    Connection::open(path).unwrap().execute_batch(sql).unwrap();
}

#[tokio::test]
async fn a_failed_enqueue_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let store = SqliteStore::open(&path).unwrap();
    poison(
        &path,
        "CREATE TRIGGER poison BEFORE INSERT ON records WHEN NEW.key = 'poison'
         BEGIN SELECT RAISE(ABORT, 'poisoned'); END;",
    );
    let job = job();
    let got = store
        .enqueue(&job, vec![rec("a"), rec("poison"), rec("b")], t0())
        .await;
    // RAISE(ABORT) is a constraint failure: mapped to Invalid.
    assert!(matches!(got, Err(StoreError::Invalid(_))), "got {got:?}");
    assert_eq!(store.head(&job).await.unwrap(), 0, "no seq was taken");
    assert!(
        store.read_after(&job, 0, 10).await.unwrap().is_empty(),
        "no record of the batch is visible"
    );
    assert!(store
        .latest_seqs(&job, &[RecordKey::from_stored("a")])
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        store.enqueue(&job, vec![rec("c")], t0()).await.unwrap(),
        vec![1],
        "the next enqueue starts at 1"
    );
}

#[tokio::test]
async fn a_commit_failing_half_way_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let store = SqliteStore::open(&path).unwrap();
    poison(
        &path,
        "CREATE TRIGGER poison BEFORE INSERT ON outbox WHEN NEW.event_id = 'poison'
         BEGIN SELECT RAISE(ABORT, 'poisoned'); END;",
    );
    let job = job();
    let lease = store
        .acquire_lease(&job, &RunId::random(), t0(), Duration::from_secs(60))
        .await
        .unwrap()
        .unwrap();
    let commit = Commit {
        state: JobState {
            cursor: 5,
            ..JobState::default()
        },
        errors: vec![ErrorWrite::Put(item("k", 3))],
        events: vec![event("fine"), event("poison")],
        ..Commit::default()
    };
    assert!(matches!(
        store.commit(&job, &lease, t0(), commit).await,
        Err(StoreError::Invalid(_))
    ));
    assert_eq!(
        store.load_state(&job).await.unwrap(),
        JobState::default(),
        "state unchanged"
    );
    assert_eq!(
        store
            .get_error(&job, &RecordKey::from_stored("k"))
            .await
            .unwrap(),
        None,
        "no error item"
    );
    assert!(
        store.pending_events(&job.tenant).await.unwrap().is_empty(),
        "no event of the commit"
    );
    // The lease is untouched and a good commit goes through.
    let good = Commit {
        state: JobState {
            cursor: 5,
            ..JobState::default()
        },
        errors: vec![],
        events: vec![event("fine")],
        ..Commit::default()
    };
    store.commit(&job, &lease, t0(), good).await.unwrap();
    assert_eq!(store.load_state(&job).await.unwrap().cursor, 5);
}

#[tokio::test]
async fn a_settings_write_failing_half_way_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let store = SqliteStore::open(&path).unwrap();
    poison(
        &path,
        "CREATE TRIGGER poison BEFORE INSERT ON outbox WHEN NEW.event_id = 'poison'
         BEGIN SELECT RAISE(ABORT, 'poisoned'); END;",
    );
    let tenant = job().tenant;
    let new = Settings {
        export_to_crm: true,
        ..Settings::default()
    };
    let change = SettingsChange {
        version: 1,
        at: t0(),
        actor: "admin".into(),
        old: Settings::default(),
        new,
        acknowledged_data_inconsistency: false,
    };
    assert!(matches!(
        store
            .put_settings(&tenant, 0, change.clone(), event("poison"))
            .await,
        Err(StoreError::Invalid(_))
    ));
    assert_eq!(
        store.get_settings(&tenant).await.unwrap(),
        None,
        "settings unchanged"
    );
    assert!(
        store
            .settings_history(&tenant, None, 10)
            .await
            .unwrap()
            .items
            .is_empty(),
        "no history entry"
    );
    assert_eq!(
        store
            .put_settings(&tenant, 0, change, event("fine"))
            .await
            .unwrap(),
        1,
        "version 0 still expected"
    );
}

#[tokio::test]
async fn a_writer_holding_the_lock_past_the_busy_timeout_is_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let opts = SqliteOptions {
        busy_timeout: Duration::from_millis(100),
        ..SqliteOptions::default()
    };
    let store = SqliteStore::open_with(&path, opts).unwrap();
    let other = Connection::open(&path).unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();
    let got = store.enqueue(&job(), vec![rec("a")], t0()).await;
    assert!(
        matches!(got, Err(StoreError::Unavailable(_))),
        "got {got:?}"
    );
    // Readers are not blocked by the writer (WAL).
    assert_eq!(store.head(&job()).await.unwrap(), 0);
    other.execute_batch("ROLLBACK").unwrap();
    assert_eq!(
        store.enqueue(&job(), vec![rec("a")], t0()).await.unwrap(),
        vec![1]
    );
}

/// SQLite work runs off the async threads: on a single-threaded runtime a timer still fires
/// while a store call waits for another writer's lock.
#[tokio::test(flavor = "current_thread")]
async fn waiting_for_the_lock_does_not_block_the_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let store = SqliteStore::open(&path).unwrap();
    let other = Connection::open(&path).unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();
    let pending = tokio::spawn({
        let store = store.clone();
        async move { store.enqueue(&job(), vec![rec("a")], t0()).await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!pending.is_finished(), "the enqueue waits for the lock ...");
    other.execute_batch("COMMIT").unwrap();
    // ... and completes once it is free.
    assert_eq!(pending.await.unwrap().unwrap(), vec![1]);
}

#[tokio::test]
async fn data_survives_reopening_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let job = job();
    {
        let store = SqliteStore::open(&path).unwrap();
        store
            .enqueue(&job, vec![rec("a"), rec("b")], t0())
            .await
            .unwrap();
        let lease = store
            .acquire_lease(&job, &RunId::random(), t0(), Duration::from_secs(60))
            .await
            .unwrap()
            .unwrap();
        let commit = Commit {
            state: JobState {
                cursor: 1,
                ..JobState::default()
            },
            errors: vec![ErrorWrite::Put(item("b", 2))],
            events: vec![event("e1")],
            ..Commit::default()
        };
        store.commit(&job, &lease, t0(), commit).await.unwrap();
    }
    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(store.head(&job).await.unwrap(), 2);
    assert_eq!(store.load_state(&job).await.unwrap().cursor, 1);
    assert_eq!(
        store
            .get_error(&job, &RecordKey::from_stored("b"))
            .await
            .unwrap(),
        Some(item("b", 2))
    );
    assert_eq!(
        store.pending_events(&job.tenant).await.unwrap(),
        vec![event("e1")]
    );
    // The lease is still held after reopening (it lives in the file, not the process).
    assert_eq!(
        store
            .acquire_lease(&job, &RunId::random(), t0(), Duration::from_secs(60))
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store.enqueue(&job, vec![rec("c")], t0()).await.unwrap(),
        vec![3],
        "seqs continue"
    );
}

#[test]
fn the_schema_is_versioned_in_wal_mode_with_its_indexes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    SqliteStore::open(&path).unwrap();
    // Opening again does not re-run the migration (it would fail on existing tables).
    SqliteStore::open(&path).unwrap();
    let conn = Connection::open(&path).unwrap();
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, 1);
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    let columns = |index: &str| -> Vec<String> {
        let mut stmt = conn
            .prepare(&format!("PRAGMA index_info('{index}')"))
            .unwrap();
        stmt.query_map([], |r| r.get::<_, String>(2))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    assert_eq!(columns("records_by_key"), ["tenant", "job", "key", "seq"]);
    assert_eq!(
        columns("export_errors_by_status"),
        ["tenant", "job", "status", "last_attempt_ns", "key"]
    );
    assert_eq!(columns("outbox_by_tenant"), ["tenant", "id"]);
    // Records by (job, seq) and API calls by (tenant, hour) are the tables' primary keys.
    let pk = |table: &str| -> Vec<String> {
        let mut stmt = conn
            .prepare(&format!("PRAGMA table_info('{table}')"))
            .unwrap();
        let mut cols: Vec<(i64, String)> = stmt
            .query_map([], |r| Ok((r.get::<_, i64>(5)?, r.get::<_, String>(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .filter(|(pk, _)| *pk > 0)
            .collect();
        cols.sort();
        cols.into_iter().map(|(_, c)| c).collect()
    };
    assert_eq!(pk("records"), ["tenant", "job", "seq"]);
    assert_eq!(pk("api_calls"), ["tenant", "hour"]);
    assert_eq!(pk("export_errors"), ["tenant", "job", "key"]);
}

#[test]
fn a_file_from_a_newer_build_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    SqliteStore::open(&path).unwrap();
    Connection::open(&path)
        .unwrap()
        .execute_batch("PRAGMA user_version = 99")
        .unwrap();
    let got = SqliteStore::open(&path);
    assert!(
        matches!(got, Err(StoreError::Invalid(ref m)) if m.contains("99")),
        "got {got:?}"
    );
}

#[tokio::test]
async fn out_of_range_values_are_invalid_not_corrupting() {
    let store = SqliteStore::open_in_memory().unwrap();
    let job = job();
    // SQLite integers are i64: a seq beyond that cannot be stored.
    let lease = store
        .acquire_lease(&job, &RunId::random(), t0(), Duration::from_secs(60))
        .await
        .unwrap()
        .unwrap();
    let commit = Commit {
        state: JobState::default(),
        errors: vec![ErrorWrite::Put(item("k", u64::MAX))],
        events: vec![],
        ..Commit::default()
    };
    assert!(matches!(
        store.commit(&job, &lease, t0(), commit).await,
        Err(StoreError::Invalid(_))
    ));
    assert_eq!(
        store
            .get_error(&job, &RecordKey::from_stored("k"))
            .await
            .unwrap(),
        None
    );
    // Reading past any storable seq is simply empty.
    assert!(store
        .read_after(&job, u64::MAX, 10)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(store.get_record(&job, u64::MAX).await.unwrap(), None);
    // A lease of "forever" does not overflow.
    let job2 = JobRef::new(job.tenant.clone(), JobId::new("other").unwrap());
    let forever = store
        .acquire_lease(&job2, &RunId::random(), t0(), Duration::MAX)
        .await
        .unwrap()
        .unwrap();
    assert!(store
        .renew_lease(
            &job2,
            &forever,
            t0() + chrono::Duration::days(365),
            Duration::from_secs(1)
        )
        .await
        .is_ok());
}
