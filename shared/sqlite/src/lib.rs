//! The embedded store of crm-export: every state port ([`StateStore`]) over one SQLite file,
//! for the local CLI ("run the job locally") and for tests. It passes the same conformance
//! suite as the in-memory and DynamoDB stores.
//!
//! # Schema (`PRAGMA user_version` = 1)
//!
//! | table | key | holds |
//! |---|---|---|
//! | `jobs` | `(tenant, job)` | `head` (last seq assigned), `state` (JSON [`JobState`], NULL = default), the lease (`lease_token`, `lease_owner`, `lease_expires_ns`) |
//! | `records` | `(tenant, job, seq)` | `key`, `fields` (JSON), `enqueued_ns`; index `(tenant, job, key, seq)` answers "newest seq of a key" |
//! | `export_errors` | `(tenant, job, key)` | `item` (JSON [`ExportErrorItem`]) plus the columns it is searched by: `seq`, `status`, `code`, `last_attempt_ns`; indexes `(tenant, job, status, last_attempt_ns, key)` and `(tenant, job, last_attempt_ns, key)` |
//! | `settings` | `tenant` | `version`, `settings` (JSON) |
//! | `settings_history` | `(tenant, version)` | `change` (JSON [`SettingsChange`]) |
//! | `job_definitions` | `(tenant, job)` | `definition` (JSON) |
//! | `outbox` | `id` (autoincrement = recording order) | `tenant`, `event_id`, `event` (JSON); index `(tenant, id)` |
//! | `api_calls` | `(tenant, hour)` | `calls` in that hourly bucket |
//!
//! Timestamps that are compared or sorted are integer nanoseconds since the epoch (UTC);
//! whole items are kept as JSON so they round-trip exactly. Migrations are a list of SQL
//! scripts applied in order under `BEGIN IMMEDIATE`, with `user_version` recording how many
//! have run, so two processes opening a new file at once migrate it once.
//!
//! # Why two processes (or two connections) can share one file
//!
//! * The file is in WAL mode: readers never block the writer and see a consistent snapshot
//!   of committed transactions only. Every connection waits up to `busy_timeout` for the
//!   write lock; still locked after that is [`StoreError::Unavailable`].
//! * Every write is one transaction started with `BEGIN IMMEDIATE`, which takes the
//!   database's single write lock *before* reading. Enqueue reads the job's `head`, inserts
//!   the records as `head+1..` and moves `head`, all under that lock: two producers
//!   (threads, connections or processes) are serialised, so seqs are gap-free and never
//!   duplicated, and a batch is all or nothing. Because the records and the new head become
//!   visible in one commit, no reader ever sees seq `s+1` without `s` (SPEC §7 "No gaps").
//! * `commit`, `renew_lease` and `acquire_lease` check the stored lease token and expiry in
//!   the same immediate transaction as their writes, so a runner whose lease expired or was
//!   taken over cannot write anything (SPEC §7 "One runner"). The state, the ExportErrors
//!   writes and the outbox events of one batch commit together or not at all; likewise
//!   settings, their history entry and the `SettingsChanged` event.
//! * `synchronous = FULL`: a committed transaction survives a crash of the process or the
//!   machine.
//! * WAL relies on shared memory, so the processes must run on one machine (not a network
//!   file system), which is what the local CLI does.
//!
//! SQLite calls block, so each port method runs on Tokio's blocking pool
//! (`spawn_blocking`) with a connection from a small pool; the async runtime never waits
//! on the file.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use crm_export_core::domain::*;
use crm_export_core::ports::*;
use rusqlite::{
    params, Connection, ErrorCode, OpenFlags, OptionalExtension, Transaction, TransactionBehavior,
};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// The schema, one script per version. Append only: never edit a released script.
const MIGRATIONS: &[&str] = &[r#"
CREATE TABLE jobs (
    tenant TEXT NOT NULL,
    job TEXT NOT NULL,
    head INTEGER NOT NULL DEFAULT 0,
    state TEXT,
    lease_token TEXT,
    lease_owner TEXT,
    lease_expires_ns INTEGER,
    PRIMARY KEY (tenant, job)
) WITHOUT ROWID;

CREATE TABLE records (
    tenant TEXT NOT NULL,
    job TEXT NOT NULL,
    seq INTEGER NOT NULL CHECK (seq > 0),
    key TEXT NOT NULL,
    fields TEXT NOT NULL,
    enqueued_ns INTEGER NOT NULL,
    PRIMARY KEY (tenant, job, seq)
) WITHOUT ROWID;
CREATE INDEX records_by_key ON records (tenant, job, key, seq);

CREATE TABLE export_errors (
    tenant TEXT NOT NULL,
    job TEXT NOT NULL,
    key TEXT NOT NULL,
    seq INTEGER NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('open', 'resolved', 'superseded', 'parked')),
    code TEXT NOT NULL,
    last_attempt_ns INTEGER NOT NULL,
    item TEXT NOT NULL,
    PRIMARY KEY (tenant, job, key)
) WITHOUT ROWID;
CREATE INDEX export_errors_by_status ON export_errors (tenant, job, status, last_attempt_ns, key);
CREATE INDEX export_errors_by_attempt ON export_errors (tenant, job, last_attempt_ns, key);

CREATE TABLE settings (
    tenant TEXT PRIMARY KEY NOT NULL,
    version INTEGER NOT NULL,
    settings TEXT NOT NULL
) WITHOUT ROWID;

CREATE TABLE settings_history (
    tenant TEXT NOT NULL,
    version INTEGER NOT NULL,
    change TEXT NOT NULL,
    PRIMARY KEY (tenant, version)
) WITHOUT ROWID;

CREATE TABLE job_definitions (
    tenant TEXT NOT NULL,
    job TEXT NOT NULL,
    definition TEXT NOT NULL,
    PRIMARY KEY (tenant, job)
) WITHOUT ROWID;

CREATE TABLE outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant TEXT NOT NULL,
    event_id TEXT NOT NULL,
    event TEXT NOT NULL
);
CREATE INDEX outbox_by_tenant ON outbox (tenant, id);

CREATE TABLE api_calls (
    tenant TEXT NOT NULL,
    hour INTEGER NOT NULL,
    calls INTEGER NOT NULL,
    PRIMARY KEY (tenant, hour)
) WITHOUT ROWID;
"#];

/// Connection settings.
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    /// How long a connection waits for another writer before giving up (`Unavailable`).
    pub busy_timeout: Duration,
    /// Connections kept per store (SQLite has one writer at a time anyway; more connections
    /// only let reads run alongside a write).
    pub max_connections: usize,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        Self {
            busy_timeout: Duration::from_secs(10),
            max_connections: 4,
        }
    }
}

/// Every state port over one SQLite file. Cheap to clone (clones share the pool).
#[derive(Clone)]
pub struct SqliteStore {
    pool: Arc<Pool>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.pool.path)
            .finish()
    }
}

struct Pool {
    /// `None` for an in-memory database (then the pool holds its only connection).
    path: Option<PathBuf>,
    options: SqliteOptions,
    slots: Mutex<Slots>,
    returned: Condvar,
}

struct Slots {
    idle: Vec<Connection>,
    open: usize,
}

impl SqliteStore {
    /// Opens (creating if needed) the store in the file at `path` and migrates its schema.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        Self::open_with(path, SqliteOptions::default())
    }

    pub fn open_with(path: impl AsRef<Path>, options: SqliteOptions) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        let mut conn = connect(Some(&path), &options)?;
        // WAL is a property of the file: set once, every later connection uses it.
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .map_err(sql_err)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Unavailable(format!(
                "cannot switch {} to WAL mode (got {mode})",
                path.display()
            )));
        }
        migrate(&mut conn)?;
        Ok(Self::with_first(Some(path), options, conn))
    }

    /// A private in-memory store (one connection): the SQLite code paths without a file.
    pub fn open_in_memory() -> Result<Self, StoreError> {
        let options = SqliteOptions {
            max_connections: 1,
            ..SqliteOptions::default()
        };
        let mut conn = connect(None, &options)?;
        migrate(&mut conn)?;
        Ok(Self::with_first(None, options, conn))
    }

    fn with_first(path: Option<PathBuf>, mut options: SqliteOptions, conn: Connection) -> Self {
        if path.is_none() {
            // Each in-memory connection would be a different database.
            options.max_connections = 1;
        }
        options.max_connections = options.max_connections.max(1);
        Self {
            pool: Arc::new(Pool {
                path,
                options,
                slots: Mutex::new(Slots {
                    idle: vec![conn],
                    open: 1,
                }),
                returned: Condvar::new(),
            }),
        }
    }

    /// The file this store is in (`None` in memory).
    pub fn path(&self) -> Option<&Path> {
        self.pool.path.as_deref()
    }

    /// Runs `f` with a pooled connection on the blocking pool.
    async fn run<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let pool = self.pool.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = pool.checkout()?;
            f(conn.conn.as_mut().expect("checked-out connection"))
        })
        .await
        .map_err(|e| StoreError::Unavailable(format!("sqlite task failed: {e}")))?
    }

    /// Runs `f` in one `BEGIN IMMEDIATE` transaction, committed when `f` returns Ok.
    async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        self.run(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(sql_err)?;
            let out = f(&tx)?;
            tx.commit().map_err(sql_err)?;
            Ok(out)
        })
        .await
    }
}

/// A checked-out connection; goes back to the pool when dropped (also on panic).
struct Pooled {
    pool: Arc<Pool>,
    conn: Option<Connection>,
}

impl Drop for Pooled {
    fn drop(&mut self) {
        let conn = self.conn.take().filter(|c| {
            // Transactions roll back when dropped, so this is only a safety net: a
            // connection still inside one is rolled back before reuse, or closed.
            c.is_autocommit() || (c.execute_batch("ROLLBACK").is_ok() && c.is_autocommit())
        });
        let mut slots = self.pool.slots.lock().unwrap_or_else(|p| p.into_inner());
        match conn {
            Some(c) => slots.idle.push(c),
            // An in-memory database lives in its only connection: it cannot be replaced.
            None => slots.open -= 1,
        }
        drop(slots);
        self.pool.returned.notify_one();
    }
}

impl Pool {
    fn checkout(self: &Arc<Self>) -> Result<Pooled, StoreError> {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(conn) = slots.idle.pop() {
                return Ok(Pooled {
                    pool: self.clone(),
                    conn: Some(conn),
                });
            }
            if slots.open < self.options.max_connections && self.path.is_some() {
                slots.open += 1;
                drop(slots);
                return match connect(self.path.as_deref(), &self.options) {
                    Ok(conn) => Ok(Pooled {
                        pool: self.clone(),
                        conn: Some(conn),
                    }),
                    Err(e) => {
                        self.slots.lock().unwrap_or_else(|p| p.into_inner()).open -= 1;
                        self.returned.notify_one();
                        Err(e)
                    }
                };
            }
            if slots.open == 0 && self.path.is_none() {
                return Err(StoreError::Unavailable(
                    "the in-memory database was lost".into(),
                ));
            }
            slots = self.returned.wait(slots).unwrap_or_else(|p| p.into_inner());
        }
    }
}

fn connect(path: Option<&Path>, options: &SqliteOptions) -> Result<Connection, StoreError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = match path {
        Some(p) => Connection::open_with_flags(p, flags),
        None => Connection::open_in_memory(),
    }
    .map_err(sql_err)?;
    conn.busy_timeout(options.busy_timeout).map_err(sql_err)?;
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(sql_err)?;
    Ok(conn)
}

fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sql_err)?;
    let current: i64 = tx
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(sql_err)?;
    let current = usize::try_from(current).unwrap_or(usize::MAX);
    if current > MIGRATIONS.len() {
        return Err(StoreError::Invalid(format!(
            "the database has schema version {current}, newer than this build knows ({})",
            MIGRATIONS.len()
        )));
    }
    for script in &MIGRATIONS[current..] {
        tx.execute_batch(script).map_err(sql_err)?;
    }
    tx.pragma_update(None, "user_version", MIGRATIONS.len() as i64)
        .map_err(sql_err)?;
    tx.commit().map_err(sql_err)
}

// ---------------------------------------------------------------------------------------
// Conversions
// ---------------------------------------------------------------------------------------

fn sql_err(e: rusqlite::Error) -> StoreError {
    match &e {
        rusqlite::Error::SqliteFailure(f, _) => match f.code {
            ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked => StoreError::Unavailable(
                format!("the database stayed locked by another writer: {e}"),
            ),
            ErrorCode::ConstraintViolation => {
                StoreError::Invalid(format!("constraint violated: {e}"))
            }
            _ => StoreError::Unavailable(format!("sqlite: {e}")),
        },
        _ => StoreError::Unavailable(format!("sqlite: {e}")),
    }
}

fn to_ns(t: Timestamp) -> Result<i64, StoreError> {
    t.timestamp_nanos_opt()
        .ok_or_else(|| StoreError::Invalid(format!("timestamp {t} is out of the storable range")))
}

fn from_ns(ns: i64) -> Timestamp {
    DateTime::from_timestamp_nanos(ns)
}

fn seq_to_sql(seq: Seq) -> Result<i64, StoreError> {
    i64::try_from(seq).map_err(|_| StoreError::Invalid(format!("seq {seq} is out of range")))
}

fn seq_from_sql(v: i64) -> Seq {
    v.max(0) as Seq
}

fn limit_to_sql(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

fn to_json<T: serde::Serialize>(v: &T) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(|e| StoreError::Invalid(format!("cannot serialise: {e}")))
}

fn from_json<T: serde::de::DeserializeOwned>(s: &str) -> Result<T, StoreError> {
    serde_json::from_str(s)
        .map_err(|e| StoreError::Unavailable(format!("corrupt stored JSON: {e}")))
}

fn ids(job: &JobRef) -> (String, String) {
    (
        job.tenant.as_str().to_string(),
        job.job.as_str().to_string(),
    )
}

/// Opaque page tokens: hex of a JSON position, so they survive URLs.
fn encode_token<T: serde::Serialize>(pos: &T) -> String {
    let json = serde_json::to_vec(pos).expect("page positions serialise");
    json.iter().map(|b| format!("{b:02x}")).collect()
}

fn decode_token<T: serde::de::DeserializeOwned>(token: &str) -> Result<T, StoreError> {
    let bad = || StoreError::Invalid("malformed page token".into());
    if token.len() % 2 != 0 || token.len() > 8192 || !token.is_ascii() {
        return Err(bad());
    }
    let bytes = (0..token.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&token[i..i + 2], 16).map_err(|_| bad()))
        .collect::<Result<Vec<u8>, _>>()?;
    serde_json::from_slice(&bytes).map_err(|_| bad())
}

/// Position after the last item of a `list_errors` page: (last attempt ns, key).
#[derive(serde::Serialize, serde::Deserialize)]
struct ErrorPos(i64, String);

/// Position after the last change of a `settings_history` page.
#[derive(serde::Serialize, serde::Deserialize)]
struct HistoryPos(u64);

// ---------------------------------------------------------------------------------------
// Shared transaction steps
// ---------------------------------------------------------------------------------------

/// Makes sure the job's row exists (head 0, default state, no lease).
fn ensure_job(tx: &Transaction<'_>, tenant: &str, job: &str) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO jobs (tenant, job) VALUES (?1, ?2) ON CONFLICT (tenant, job) DO NOTHING",
        params![tenant, job],
    )
    .map_err(sql_err)?;
    Ok(())
}

/// Whether `lease` is the job's stored lease and unexpired at `now_ns`.
fn lease_held(
    tx: &Transaction<'_>,
    tenant: &str,
    job: &str,
    lease: &Lease,
    now_ns: i64,
) -> Result<bool, StoreError> {
    let stored: Option<(Option<String>, Option<i64>)> = tx
        .query_row(
            "SELECT lease_token, lease_expires_ns FROM jobs WHERE tenant = ?1 AND job = ?2",
            params![tenant, job],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()
        .map_err(sql_err)?;
    Ok(matches!(stored, Some((Some(token), Some(exp))) if token == lease.token.0 && exp > now_ns))
}

fn insert_event(tx: &Transaction<'_>, tenant: &str, event: &Event) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO outbox (tenant, event_id, event) VALUES (?1, ?2, ?3)",
        params![tenant, event.id, to_json(event)?],
    )
    .map_err(sql_err)?;
    Ok(())
}

fn put_error(
    tx: &Transaction<'_>,
    tenant: &str,
    job: &str,
    item: &ExportErrorItem,
) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO export_errors (tenant, job, key, seq, status, code, last_attempt_ns, item)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
         ON CONFLICT (tenant, job, key) DO UPDATE SET
           seq = excluded.seq, status = excluded.status, code = excluded.code,
           last_attempt_ns = excluded.last_attempt_ns, item = excluded.item",
        params![
            tenant,
            job,
            item.key.as_str(),
            seq_to_sql(item.seq)?,
            item.status.as_str(),
            item.error.code,
            to_ns(item.last_attempt_at)?,
            to_json(item)?
        ],
    )
    .map_err(sql_err)?;
    Ok(())
}

fn get_error_tx(
    conn: &Connection,
    tenant: &str,
    job: &str,
    key: &str,
) -> Result<Option<ExportErrorItem>, StoreError> {
    let raw: Option<String> = conn
        .query_row(
            "SELECT item FROM export_errors WHERE tenant = ?1 AND job = ?2 AND key = ?3",
            params![tenant, job, key],
            |r| r.get(0),
        )
        .optional()
        .map_err(sql_err)?;
    raw.map(|s| from_json(&s)).transpose()
}

fn apply_error_write(
    tx: &Transaction<'_>,
    tenant: &str,
    job: &str,
    write: &ErrorWrite,
) -> Result<(), StoreError> {
    match write {
        ErrorWrite::Put(item) => put_error(tx, tenant, job, item),
        ErrorWrite::Resolve { key, by_seq, at } => {
            let Some(mut item) = get_error_tx(tx, tenant, job, key.as_str())? else {
                return Ok(());
            };
            if item.resolve(*by_seq, *at) {
                put_error(tx, tenant, job, &item)?;
            }
            Ok(())
        }
    }
}

fn lease_expiry(now: Timestamp, duration: Duration) -> Timestamp {
    let d = chrono::Duration::from_std(duration).unwrap_or(chrono::Duration::MAX);
    now.checked_add_signed(d)
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// Nanoseconds of a lease expiry, saturating (a lease beyond 2262 simply never expires).
fn expiry_ns(t: Timestamp) -> i64 {
    t.timestamp_nanos_opt().unwrap_or(if t.timestamp() > 0 {
        i64::MAX
    } else {
        i64::MIN
    })
}

// ---------------------------------------------------------------------------------------
// Ports
// ---------------------------------------------------------------------------------------

#[async_trait]
impl ExportQueue for SqliteStore {
    async fn enqueue(
        &self,
        job: &JobRef,
        records: Vec<NewRecord>,
        now: Timestamp,
    ) -> Result<Vec<Seq>, StoreError> {
        if records.is_empty() {
            return Ok(Vec::new());
        }
        let (tenant, job) = ids(job);
        let now_ns = to_ns(now)?;
        // Serialise outside the lock.
        let rows = records
            .into_iter()
            .map(|r| Ok((r.key.as_str().to_string(), to_json(&r.fields)?)))
            .collect::<Result<Vec<_>, StoreError>>()?;
        self.write(move |tx| {
            ensure_job(tx, &tenant, &job)?;
            // Under the write lock: nobody else can assign seqs until this commits.
            let head: i64 = tx
                .query_row("SELECT head FROM jobs WHERE tenant = ?1 AND job = ?2", params![tenant, job], |r| r.get(0))
                .map_err(sql_err)?;
            let mut seqs = Vec::with_capacity(rows.len());
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO records (tenant, job, seq, key, fields, enqueued_ns) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )
                .map_err(sql_err)?;
            let mut seq = head;
            for (key, fields) in &rows {
                seq = seq.checked_add(1).ok_or_else(|| StoreError::Invalid("the job's seqs are exhausted".into()))?;
                insert.execute(params![tenant, job, seq, key, fields, now_ns]).map_err(sql_err)?;
                seqs.push(seq_from_sql(seq));
            }
            tx.execute("UPDATE jobs SET head = ?3 WHERE tenant = ?1 AND job = ?2", params![tenant, job, seq])
                .map_err(sql_err)?;
            Ok(seqs)
        })
        .await
    }

    async fn read_after(
        &self,
        job: &JobRef,
        after: Seq,
        limit: usize,
    ) -> Result<Vec<Record>, StoreError> {
        if limit == 0 || after >= i64::MAX as u64 {
            return Ok(Vec::new());
        }
        let (tenant, job) = ids(job);
        self.run(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT seq, key, fields, enqueued_ns FROM records
                     WHERE tenant = ?1 AND job = ?2 AND seq > ?3 ORDER BY seq LIMIT ?4",
                )
                .map_err(sql_err)?;
            let rows = stmt
                .query_map(
                    params![tenant, job, after as i64, limit_to_sql(limit)],
                    |r| {
                        Ok((
                            r.get::<_, i64>(0)?,
                            r.get::<_, String>(1)?,
                            r.get::<_, String>(2)?,
                            r.get::<_, i64>(3)?,
                        ))
                    },
                )
                .map_err(sql_err)?;
            let mut out = Vec::new();
            for row in rows {
                let (seq, key, fields, ns) = row.map_err(sql_err)?;
                out.push(Record {
                    seq: seq_from_sql(seq),
                    key: RecordKey::from_stored(key),
                    fields: from_json(&fields)?,
                    enqueued_at: from_ns(ns),
                });
            }
            Ok(out)
        })
        .await
    }

    async fn get_record(&self, job: &JobRef, seq: Seq) -> Result<Option<Record>, StoreError> {
        let Ok(seq_i) = i64::try_from(seq) else {
            return Ok(None);
        };
        let (tenant, job) = ids(job);
        self.run(move |conn| {
            let row: Option<(String, String, i64)> = conn
                .query_row(
                    "SELECT key, fields, enqueued_ns FROM records WHERE tenant = ?1 AND job = ?2 AND seq = ?3",
                    params![tenant, job, seq_i],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .optional()
                .map_err(sql_err)?;
            row.map(|(key, fields, ns)| {
                Ok(Record { seq, key: RecordKey::from_stored(key), fields: from_json(&fields)?, enqueued_at: from_ns(ns) })
            })
            .transpose()
        })
        .await
    }

    async fn latest_seqs(
        &self,
        job: &JobRef,
        keys: &[RecordKey],
    ) -> Result<HashMap<RecordKey, Seq>, StoreError> {
        if keys.is_empty() {
            return Ok(HashMap::new());
        }
        let (tenant, job) = ids(job);
        let keys = keys.to_vec();
        self.run(move |conn| {
            // One indexed MAX per key (records_by_key); all in one read transaction so the
            // answers come from one snapshot.
            let tx = conn.transaction().map_err(sql_err)?;
            let mut out = HashMap::new();
            {
                let mut stmt = tx
                    .prepare_cached(
                        "SELECT MAX(seq) FROM records WHERE tenant = ?1 AND job = ?2 AND key = ?3",
                    )
                    .map_err(sql_err)?;
                for k in keys {
                    let max: Option<i64> = stmt
                        .query_row(params![tenant, job, k.as_str()], |r| r.get(0))
                        .map_err(sql_err)?;
                    if let Some(s) = max {
                        out.insert(k, seq_from_sql(s));
                    }
                }
            }
            tx.finish().map_err(sql_err)?;
            Ok(out)
        })
        .await
    }

    async fn head(&self, job: &JobRef) -> Result<Seq, StoreError> {
        let (tenant, job) = ids(job);
        self.run(move |conn| {
            let head: Option<i64> = conn
                .query_row(
                    "SELECT head FROM jobs WHERE tenant = ?1 AND job = ?2",
                    params![tenant, job],
                    |r| r.get(0),
                )
                .optional()
                .map_err(sql_err)?;
            Ok(seq_from_sql(head.unwrap_or(0)))
        })
        .await
    }
}

#[async_trait]
impl LeaseStore for SqliteStore {
    async fn acquire_lease(
        &self,
        job: &JobRef,
        owner: &RunId,
        now: Timestamp,
        duration: Duration,
    ) -> Result<Option<Lease>, StoreError> {
        let (tenant, job) = ids(job);
        let owner = owner.clone();
        let now_ns = to_ns(now)?;
        let expires_at = lease_expiry(now, duration);
        self.write(move |tx| {
            ensure_job(tx, &tenant, &job)?;
            let current: Option<i64> = tx
                .query_row(
                    "SELECT lease_expires_ns FROM jobs WHERE tenant = ?1 AND job = ?2 AND lease_token IS NOT NULL",
                    params![tenant, job],
                    |r| r.get(0),
                )
                .optional()
                .map_err(sql_err)?
                .flatten();
            if matches!(current, Some(exp) if exp > now_ns) {
                return Ok(None);
            }
            let lease = Lease { token: LeaseToken(uuid::Uuid::new_v4().to_string()), owner, expires_at };
            tx.execute(
                "UPDATE jobs SET lease_token = ?3, lease_owner = ?4, lease_expires_ns = ?5 WHERE tenant = ?1 AND job = ?2",
                params![tenant, job, lease.token.0, lease.owner.0, expiry_ns(expires_at)],
            )
            .map_err(sql_err)?;
            Ok(Some(lease))
        })
        .await
    }

    async fn renew_lease(
        &self,
        job: &JobRef,
        lease: &Lease,
        now: Timestamp,
        duration: Duration,
    ) -> Result<Lease, StoreError> {
        let (tenant, job) = ids(job);
        let lease = lease.clone();
        let now_ns = to_ns(now)?;
        let expires_at = lease_expiry(now, duration);
        self.write(move |tx| {
            if !lease_held(tx, &tenant, &job, &lease, now_ns)? {
                return Err(StoreError::LeaseLost);
            }
            tx.execute(
                "UPDATE jobs SET lease_expires_ns = ?3 WHERE tenant = ?1 AND job = ?2",
                params![tenant, job, expiry_ns(expires_at)],
            )
            .map_err(sql_err)?;
            Ok(Lease {
                expires_at,
                ..lease
            })
        })
        .await
    }

    async fn release_lease(&self, job: &JobRef, lease: &Lease) -> Result<(), StoreError> {
        let (tenant, job) = ids(job);
        let token = lease.token.0.clone();
        self.write(move |tx| {
            // Only the holder's token clears it: a lost lease's release touches nothing.
            tx.execute(
                "UPDATE jobs SET lease_token = NULL, lease_owner = NULL, lease_expires_ns = NULL
                 WHERE tenant = ?1 AND job = ?2 AND lease_token = ?3",
                params![tenant, job, token],
            )
            .map_err(sql_err)?;
            Ok(())
        })
        .await
    }
}

#[async_trait]
impl JobStateStore for SqliteStore {
    async fn load_state(&self, job: &JobRef) -> Result<JobState, StoreError> {
        let (tenant, job) = ids(job);
        self.run(move |conn| {
            let raw: Option<Option<String>> = conn
                .query_row(
                    "SELECT state FROM jobs WHERE tenant = ?1 AND job = ?2",
                    params![tenant, job],
                    |r| r.get(0),
                )
                .optional()
                .map_err(sql_err)?;
            match raw.flatten() {
                Some(s) => from_json(&s),
                None => Ok(JobState::default()),
            }
        })
        .await
    }

    async fn commit(
        &self,
        job: &JobRef,
        lease: &Lease,
        now: Timestamp,
        commit: Commit,
    ) -> Result<(), StoreError> {
        let (tenant, job) = ids(job);
        let lease = lease.clone();
        let now_ns = to_ns(now)?;
        let state = to_json(&commit.state)?;
        let extended = commit
            .lease_extension
            .map(|d| expiry_ns(lease_expiry(now, d)));
        let api_calls = i64::try_from(commit.api_calls).map_err(|_| {
            StoreError::Invalid(format!("{} calls is out of range", commit.api_calls))
        })?;
        let hour = hour_bucket(now);
        self.write(move |tx| {
            // The lease check and every write share one immediate transaction: nobody can
            // take the lease over between the check and the writes.
            if !lease_held(tx, &tenant, &job, &lease, now_ns)? {
                return Err(StoreError::LeaseLost);
            }
            tx.execute(
                "UPDATE jobs SET state = ?3, lease_expires_ns = COALESCE(?4, lease_expires_ns)
                 WHERE tenant = ?1 AND job = ?2",
                params![tenant, job, state, extended],
            )
            .map_err(sql_err)?;
            if api_calls > 0 {
                add_calls_tx(tx, &tenant, hour, api_calls)?;
            }
            for w in &commit.errors {
                apply_error_write(tx, &tenant, &job, w)?;
            }
            for e in &commit.events {
                insert_event(tx, &tenant, e)?;
            }
            Ok(())
        })
        .await
    }
}

fn items_from_rows(rows: Vec<String>) -> Result<Vec<ExportErrorItem>, StoreError> {
    rows.iter().map(|s| from_json(s)).collect()
}

#[async_trait]
impl ExportErrorStore for SqliteStore {
    async fn get_error(
        &self,
        job: &JobRef,
        key: &RecordKey,
    ) -> Result<Option<ExportErrorItem>, StoreError> {
        let (tenant, job) = ids(job);
        let key = key.as_str().to_string();
        self.run(move |conn| get_error_tx(conn, &tenant, &job, &key))
            .await
    }

    async fn unresolved_errors(&self, job: &JobRef) -> Result<HashMap<RecordKey, Seq>, StoreError> {
        let (tenant, job) = ids(job);
        self.run(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT key, seq FROM export_errors
                     WHERE tenant = ?1 AND job = ?2 AND status IN ('open', 'parked')",
                )
                .map_err(sql_err)?;
            let rows = stmt
                .query_map(params![tenant, job], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
                })
                .map_err(sql_err)?;
            rows.map(|r| {
                r.map(|(k, s)| (RecordKey::from_stored(k), seq_from_sql(s)))
                    .map_err(sql_err)
            })
            .collect()
        })
        .await
    }

    async fn open_errors_for_retry(
        &self,
        job: &JobRef,
        before: Timestamp,
        after: Option<(Timestamp, RecordKey)>,
        limit: usize,
    ) -> Result<Vec<ExportErrorItem>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let (tenant, job) = ids(job);
        let before_ns = to_ns(before)?;
        let (with_after, after_ns, after_key) = match after {
            Some((t, k)) => (1i64, to_ns(t)?, k.as_str().to_string()),
            None => (0, 0, String::new()),
        };
        self.run(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT item FROM export_errors
                     WHERE tenant = ?1 AND job = ?2 AND status = 'open' AND last_attempt_ns < ?3
                       AND (?4 = 0 OR last_attempt_ns > ?5 OR (last_attempt_ns = ?5 AND key > ?6))
                     ORDER BY last_attempt_ns, key LIMIT ?7",
                )
                .map_err(sql_err)?;
            let rows = stmt
                .query_map(
                    params![
                        tenant,
                        job,
                        before_ns,
                        with_after,
                        after_ns,
                        after_key,
                        limit_to_sql(limit)
                    ],
                    |r| r.get::<_, String>(0),
                )
                .map_err(sql_err)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(sql_err)?;
            items_from_rows(rows)
        })
        .await
    }

    async fn list_errors(
        &self,
        job: &JobRef,
        filter: &ErrorFilter,
        page: Option<&str>,
        limit: usize,
    ) -> Result<Page<ExportErrorItem>, StoreError> {
        let after: Option<ErrorPos> = page.map(decode_token).transpose()?;
        let (tenant, job) = ids(job);
        let status = filter.status.map(|s| s.as_str().to_string());
        let code = filter.code.clone();
        self.run(move |conn| {
            let (has_after, after_ns, after_key) = match after {
                Some(ErrorPos(ns, k)) => (1i64, ns, k),
                None => (0, 0, String::new()),
            };
            // Newest last attempt first, ties by key; one more than asked tells if there is
            // a next page.
            let mut stmt = conn
                .prepare_cached(
                    "SELECT item, last_attempt_ns, key FROM export_errors
                     WHERE tenant = ?1 AND job = ?2
                       AND (?3 IS NULL OR status = ?3)
                       AND (?4 IS NULL OR code = ?4)
                       AND (?5 = 0 OR last_attempt_ns < ?6 OR (last_attempt_ns = ?6 AND key > ?7))
                     ORDER BY last_attempt_ns DESC, key ASC LIMIT ?8",
                )
                .map_err(sql_err)?;
            let mut rows = stmt
                .query_map(
                    params![
                        tenant,
                        job,
                        status,
                        code,
                        has_after,
                        after_ns,
                        after_key,
                        limit_to_sql(limit).saturating_add(1)
                    ],
                    |r| {
                        Ok((
                            r.get::<_, String>(0)?,
                            r.get::<_, i64>(1)?,
                            r.get::<_, String>(2)?,
                        ))
                    },
                )
                .map_err(sql_err)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(sql_err)?;
            let more = rows.len() > limit;
            rows.truncate(limit);
            let next = match (more, rows.last()) {
                (true, Some((_, ns, key))) => Some(encode_token(&ErrorPos(*ns, key.clone()))),
                _ => None,
            };
            let items = items_from_rows(rows.into_iter().map(|(item, _, _)| item).collect())?;
            Ok(Page { items, next })
        })
        .await
    }

    async fn count_errors(&self, job: &JobRef, status: ErrorStatus) -> Result<u64, StoreError> {
        let (tenant, job) = ids(job);
        self.run(move |conn| {
            let n: i64 = conn
                .query_row(
                    "SELECT COUNT(*) FROM export_errors WHERE tenant = ?1 AND job = ?2 AND status = ?3",
                    params![tenant, job, status.as_str()],
                    |r| r.get(0),
                )
                .map_err(sql_err)?;
            Ok(n.max(0) as u64)
        })
        .await
    }
}

#[async_trait]
impl SettingsStore for SqliteStore {
    async fn get_settings(
        &self,
        tenant: &TenantId,
    ) -> Result<Option<VersionedSettings>, StoreError> {
        let tenant = tenant.as_str().to_string();
        self.run(move |conn| {
            let row: Option<(i64, String)> = conn
                .query_row(
                    "SELECT version, settings FROM settings WHERE tenant = ?1",
                    params![tenant],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()
                .map_err(sql_err)?;
            row.map(|(v, s)| {
                Ok(VersionedSettings {
                    settings: from_json(&s)?,
                    version: v.max(0) as u64,
                })
            })
            .transpose()
        })
        .await
    }

    async fn put_settings(
        &self,
        tenant: &TenantId,
        expected_version: u64,
        change: SettingsChange,
        event: Event,
    ) -> Result<u64, StoreError> {
        let tenant = tenant.as_str().to_string();
        let settings = to_json(&change.new)?;
        self.write(move |tx| {
            let found: u64 = tx
                .query_row("SELECT version FROM settings WHERE tenant = ?1", params![tenant], |r| r.get::<_, i64>(0))
                .optional()
                .map_err(sql_err)?
                .map_or(0, |v| v.max(0) as u64);
            if found != expected_version {
                return Err(StoreError::VersionConflict { expected: expected_version, found });
            }
            let version = found + 1;
            let v = seq_to_sql(version)?;
            tx.execute(
                "INSERT INTO settings (tenant, version, settings) VALUES (?1, ?2, ?3)
                 ON CONFLICT (tenant) DO UPDATE SET version = excluded.version, settings = excluded.settings",
                params![tenant, v, settings],
            )
            .map_err(sql_err)?;
            // The history entry carries the version the store assigned.
            let change = SettingsChange { version, ..change };
            tx.execute(
                "INSERT INTO settings_history (tenant, version, change) VALUES (?1, ?2, ?3)",
                params![tenant, v, to_json(&change)?],
            )
            .map_err(sql_err)?;
            insert_event(tx, &tenant, &event)?;
            Ok(version)
        })
        .await
    }

    async fn settings_history(
        &self,
        tenant: &TenantId,
        page: Option<&str>,
        limit: usize,
    ) -> Result<Page<SettingsChange>, StoreError> {
        let before: Option<HistoryPos> = page.map(decode_token).transpose()?;
        let before = before.map_or(i64::MAX, |HistoryPos(v)| {
            i64::try_from(v).unwrap_or(i64::MAX)
        });
        let tenant = tenant.as_str().to_string();
        self.run(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT version, change FROM settings_history WHERE tenant = ?1 AND version < ?2
                     ORDER BY version DESC LIMIT ?3",
                )
                .map_err(sql_err)?;
            let mut rows = stmt
                .query_map(
                    params![tenant, before, limit_to_sql(limit).saturating_add(1)],
                    |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)),
                )
                .map_err(sql_err)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(sql_err)?;
            let more = rows.len() > limit;
            rows.truncate(limit);
            let next = match (more, rows.last()) {
                (true, Some((v, _))) => Some(encode_token(&HistoryPos((*v).max(0) as u64))),
                _ => None,
            };
            let items = rows
                .iter()
                .map(|(_, c)| from_json(c))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Page { items, next })
        })
        .await
    }

    async fn list_tenants(&self) -> Result<Vec<TenantId>, StoreError> {
        self.run(|conn| {
            let mut stmt = conn
                .prepare_cached("SELECT tenant FROM settings ORDER BY tenant")
                .map_err(sql_err)?;
            let rows = stmt
                .query_map([], |r| r.get::<_, String>(0))
                .map_err(sql_err)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(sql_err)?;
            rows.into_iter()
                .map(|t| {
                    TenantId::new(t)
                        .map_err(|e| StoreError::Unavailable(format!("corrupt tenant id: {e}")))
                })
                .collect()
        })
        .await
    }
}

#[async_trait]
impl JobCatalog for SqliteStore {
    async fn get_job(
        &self,
        tenant: &TenantId,
        job: &JobId,
    ) -> Result<Option<JobDefinition>, StoreError> {
        let (tenant, job) = (tenant.as_str().to_string(), job.as_str().to_string());
        self.run(move |conn| {
            let raw: Option<String> = conn
                .query_row(
                    "SELECT definition FROM job_definitions WHERE tenant = ?1 AND job = ?2",
                    params![tenant, job],
                    |r| r.get(0),
                )
                .optional()
                .map_err(sql_err)?;
            raw.map(|s| from_json(&s)).transpose()
        })
        .await
    }

    async fn put_job(&self, tenant: &TenantId, def: JobDefinition) -> Result<(), StoreError> {
        let tenant = tenant.as_str().to_string();
        let job = def.job_id.as_str().to_string();
        let json = to_json(&def)?;
        self.write(move |tx| {
            tx.execute(
                "INSERT INTO job_definitions (tenant, job, definition) VALUES (?1, ?2, ?3)
                 ON CONFLICT (tenant, job) DO UPDATE SET definition = excluded.definition",
                params![tenant, job, json],
            )
            .map_err(sql_err)?;
            Ok(())
        })
        .await
    }

    async fn list_jobs(&self, tenant: &TenantId) -> Result<Vec<JobDefinition>, StoreError> {
        let tenant = tenant.as_str().to_string();
        self.run(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT definition FROM job_definitions WHERE tenant = ?1 ORDER BY job",
                )
                .map_err(sql_err)?;
            let rows = stmt
                .query_map(params![tenant], |r| r.get::<_, String>(0))
                .map_err(sql_err)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(sql_err)?;
            rows.iter().map(|s| from_json(s)).collect()
        })
        .await
    }
}

#[async_trait]
impl Outbox for SqliteStore {
    async fn pending_events(&self, tenant: &TenantId) -> Result<Vec<Event>, StoreError> {
        let tenant = tenant.as_str().to_string();
        self.run(move |conn| {
            let mut stmt = conn
                .prepare_cached("SELECT event FROM outbox WHERE tenant = ?1 ORDER BY id")
                .map_err(sql_err)?;
            let rows = stmt
                .query_map(params![tenant], |r| r.get::<_, String>(0))
                .map_err(sql_err)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(sql_err)?;
            rows.iter().map(|s| from_json(s)).collect()
        })
        .await
    }

    async fn mark_published(&self, tenant: &TenantId, ids: &[String]) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        let tenant = tenant.as_str().to_string();
        let ids = ids.to_vec();
        self.write(move |tx| {
            let mut stmt = tx
                .prepare_cached("DELETE FROM outbox WHERE tenant = ?1 AND event_id = ?2")
                .map_err(sql_err)?;
            for id in &ids {
                stmt.execute(params![tenant, id]).map_err(sql_err)?;
            }
            Ok(())
        })
        .await
    }
}

fn add_calls_tx(
    tx: &Transaction<'_>,
    tenant: &str,
    hour: i64,
    calls: i64,
) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO api_calls (tenant, hour, calls) VALUES (?1, ?2, ?3)
         ON CONFLICT (tenant, hour) DO UPDATE SET calls = calls + excluded.calls",
        params![tenant, hour, calls],
    )
    .map_err(sql_err)?;
    Ok(())
}

#[async_trait]
impl ApiBudget for SqliteStore {
    async fn add_api_calls(
        &self,
        tenant: &TenantId,
        at: Timestamp,
        calls: u64,
    ) -> Result<(), StoreError> {
        if calls == 0 {
            return Ok(());
        }
        let tenant = tenant.as_str().to_string();
        let hour = hour_bucket(at);
        let calls = i64::try_from(calls)
            .map_err(|_| StoreError::Invalid(format!("{calls} calls is out of range")))?;
        self.write(move |tx| add_calls_tx(tx, &tenant, hour, calls))
            .await
    }

    async fn api_calls_last_24h(
        &self,
        tenant: &TenantId,
        now: Timestamp,
    ) -> Result<u64, StoreError> {
        let tenant = tenant.as_str().to_string();
        let from = hour_bucket(now - chrono::Duration::hours(24));
        self.run(move |conn| {
            let n: i64 = conn
                .query_row(
                    "SELECT COALESCE(SUM(calls), 0) FROM api_calls WHERE tenant = ?1 AND hour >= ?2",
                    params![tenant, from],
                    |r| r.get(0),
                )
                .map_err(sql_err)?;
            Ok(n.max(0) as u64)
        })
        .await
    }
}
