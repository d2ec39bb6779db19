//! Test helper: a second OS process working on the same SQLite file as the test process
//! (tests/two_processes.rs), to prove the store is safe across processes.
//!
//! Usage:
//!   crmx-sqlite-stress enqueue <db> <tenant> <job> <batches> <tag> <start-file>
//!     enqueues `batches` batches of 1–3 records keyed `<tag>-<batch>-<i>` and prints one
//!     line `seqs <s1,s2,...>` per batch.
//!   crmx-sqlite-stress counter <db> <tenant> <job> <increments> <tag> <start-file>
//!     `increments` times: takes the job's lease, adds one to its cursor and records an
//!     event `{"who": tag, "cursor": n}` in the same commit, releases the lease.
//!     Prints `done <increments>`.
//! Both wait for `<start-file>` to exist before starting, and pause briefly between steps
//! (as real producers and runners do), so the processes' writes interleave.

use crm_export_core::domain::{
    Event, EventKind, JobId, JobRef, NewRecord, RecordKey, RunId, TenantId,
};
use crm_export_core::ports::{Commit, ExportQueue, JobStateStore, LeaseStore};
use crm_export_sqlite::SqliteStore;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// The pause between two steps of one process.
pub const PAUSE: Duration = Duration::from_millis(1);

fn usage() -> ExitCode {
    eprintln!(
        "usage: crmx-sqlite-stress (enqueue <db> <tenant> <job> <batches> <tag> \
         | counter <db> <tenant> <job> <increments> <tag>) <start-file>"
    );
    ExitCode::from(2)
}

fn wait_for(start: &Path) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !start.exists() {
        if Instant::now() > deadline {
            return Err(format!("{} never appeared", start.display()));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (mode, db, tenant, job, count, tag, start) = match args.as_slice() {
        [mode @ ("enqueue" | "counter"), db, tenant, job, count, tag, start] => {
            (*mode, *db, *tenant, *job, *count, *tag, Path::new(*start))
        }
        _ => return usage(),
    };
    let Ok(count) = count.parse::<usize>() else {
        return usage();
    };
    let result = match mode {
        "enqueue" => enqueue(db, tenant, job, count, tag, start).await,
        _ => counter(db, tenant, job, count, tag, start).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("crmx-sqlite-stress: {e}");
            ExitCode::FAILURE
        }
    }
}

fn job_ref(tenant: &str, job: &str) -> Result<JobRef, String> {
    Ok(JobRef::new(
        TenantId::new(tenant).map_err(|e| e.to_string())?,
        JobId::new(job).map_err(|e| e.to_string())?,
    ))
}

async fn enqueue(
    db: &str,
    tenant: &str,
    job: &str,
    batches: usize,
    tag: &str,
    start: &Path,
) -> Result<(), String> {
    let store = SqliteStore::open(db).map_err(|e| e.to_string())?;
    let job = job_ref(tenant, job)?;
    wait_for(start)?;
    for b in 0..batches {
        let records = (0..1 + b % 3)
            .map(|i| {
                let fields = serde_json::json!({ "tag": tag, "b": b, "i": i });
                NewRecord {
                    key: RecordKey::from_stored(format!("{tag}-{b}-{i}")),
                    fields: fields.as_object().cloned().unwrap_or_default(),
                }
            })
            .collect();
        let seqs = store
            .enqueue(&job, records, chrono::Utc::now())
            .await
            .map_err(|e| e.to_string())?;
        let list: Vec<String> = seqs.iter().map(|s| s.to_string()).collect();
        println!("seqs {}", list.join(","));
        tokio::time::sleep(PAUSE).await;
    }
    Ok(())
}

async fn counter(
    db: &str,
    tenant: &str,
    job: &str,
    increments: usize,
    tag: &str,
    start: &Path,
) -> Result<(), String> {
    let store = SqliteStore::open(db).map_err(|e| e.to_string())?;
    let job = job_ref(tenant, job)?;
    wait_for(start)?;
    let me = RunId(format!("{tag}-{}", RunId::random()));
    let mut done = 0;
    while done < increments {
        let now = chrono::Utc::now();
        let lease = store
            .acquire_lease(&job, &me, now, Duration::from_secs(30))
            .await
            .map_err(|e| e.to_string())?;
        let Some(lease) = lease else {
            tokio::time::sleep(PAUSE / 2).await;
            continue;
        };
        // Read-modify-write of the cursor: only safe because the lease is exclusive.
        let mut state = store.load_state(&job).await.map_err(|e| e.to_string())?;
        state.cursor += 1;
        let detail = serde_json::json!({ "who": tag, "cursor": state.cursor });
        let event = Event::for_job(EventKind::ExportRunCompleted, &job, now, detail);
        let commit = Commit {
            state,
            errors: vec![],
            events: vec![event],
            ..Commit::default()
        };
        store
            .commit(&job, &lease, chrono::Utc::now(), commit)
            .await
            .map_err(|e| e.to_string())?;
        store
            .release_lease(&job, &lease)
            .await
            .map_err(|e| e.to_string())?;
        done += 1;
        tokio::time::sleep(PAUSE).await;
    }
    println!("done {done}");
    Ok(())
}
