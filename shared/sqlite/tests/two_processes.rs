//! Cross-process safety: the `crmx-sqlite-stress` helper binary runs as separate OS
//! processes on the same SQLite file as this test process, all enqueuing (or taking the
//! lease) at once.

use crm_export_core::domain::*;
use crm_export_core::ports::*;
use crm_export_sqlite::SqliteStore;
use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const HELPER: &str = env!("CARGO_BIN_EXE_crmx-sqlite-stress");
/// The helper's pause between steps; this process pauses alike.
const PAUSE: Duration = Duration::from_millis(1);

fn spawn(args: &[&str]) -> Child {
    Command::new(HELPER)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the helper process")
}

fn finish(child: Child) -> String {
    let out = child.wait_with_output().expect("wait for the helper");
    assert!(
        out.status.success(),
        "helper failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

fn job() -> JobRef {
    JobRef::new(
        TenantId::new("acme").unwrap(),
        JobId::new("touchpoints").unwrap(),
    )
}

fn start(path: &Path) {
    std::fs::write(path, b"go").expect("create the start file");
}

/// How often the writer changes along `order`: three processes that ran one after the
/// other give 2; more shows their writes interleaved.
fn switches<T: PartialEq>(order: &[T]) -> usize {
    order.windows(2).filter(|w| w[0] != w[1]).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_enqueue_concurrently_with_gap_free_seqs() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("store.db");
    let go = dir.path().join("go");
    let (db_s, go_s) = (db.to_str().unwrap(), go.to_str().unwrap());
    // The file and schema exist before the children start (they would also cope without).
    let store = SqliteStore::open(&db).unwrap();
    let job = job();
    const BATCHES: usize = 60;
    let n = BATCHES.to_string();
    let children: Vec<Child> = ["c1", "c2"]
        .iter()
        .map(|tag| spawn(&["enqueue", db_s, "acme", "touchpoints", &n, tag, go_s]))
        .collect();
    start(&go);
    // This process enqueues too, at the same time.
    let mut batches: Vec<(String, Vec<Seq>)> = Vec::new();
    for b in 0..BATCHES {
        let records = (0..1 + b % 3)
            .map(|i| NewRecord {
                key: RecordKey::from_stored(format!("parent-{b}-{i}")),
                fields: serde_json::json!({ "tag": "parent", "b": b, "i": i })
                    .as_object()
                    .cloned()
                    .unwrap(),
            })
            .collect();
        let seqs = store
            .enqueue(&job, records, chrono::Utc::now())
            .await
            .unwrap();
        batches.push(("parent".into(), seqs));
        tokio::time::sleep(PAUSE).await;
    }
    for (tag, child) in ["c1", "c2"].into_iter().zip(children) {
        let out = finish(child);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), BATCHES, "{tag} reported every batch");
        for line in lines {
            let list = line.strip_prefix("seqs ").expect("a `seqs` line");
            batches.push((
                tag.into(),
                list.split(',').map(|s| s.parse().expect("a seq")).collect(),
            ));
        }
    }
    let mut seen = BTreeSet::new();
    for (_, seqs) in &batches {
        assert!(
            seqs.windows(2).all(|w| w[1] == w[0] + 1),
            "a batch gets consecutive seqs: {seqs:?}"
        );
        for s in seqs {
            assert!(seen.insert(*s), "seq {s} assigned twice (across processes)");
        }
    }
    let total = seen.len() as u64;
    assert_eq!(
        total,
        3 * (0..BATCHES).map(|b| 1 + b % 3).sum::<usize>() as u64
    );
    assert_eq!(
        seen,
        (1..=total).collect(),
        "gap-free seqs across processes"
    );
    assert_eq!(store.head(&job).await.unwrap(), total);
    // Every seq holds the record of the process that was given it.
    let records = store.read_after(&job, 0, 10_000).await.unwrap();
    assert_eq!(records.len() as u64, total);
    for (tag, seqs) in &batches {
        for s in seqs {
            assert_eq!(
                records[(*s - 1) as usize].fields["tag"],
                serde_json::json!(tag),
                "seq {s}"
            );
        }
    }
    // The processes really wrote at the same time (else this proved little).
    let writers: Vec<String> = records
        .iter()
        .map(|r| r.fields["tag"].to_string())
        .collect();
    assert!(switches(&writers) > 2, "the processes' batches interleave");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_take_turns_with_the_lease() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("store.db");
    let go = dir.path().join("go");
    let (db_s, go_s) = (db.to_str().unwrap(), go.to_str().unwrap());
    let store = SqliteStore::open(&db).unwrap();
    let job = job();
    const INCREMENTS: usize = 25;
    let n = INCREMENTS.to_string();
    let children: Vec<Child> = ["c1", "c2"]
        .iter()
        .map(|tag| spawn(&["counter", db_s, "acme", "touchpoints", &n, tag, go_s]))
        .collect();
    start(&go);
    // The same read-modify-write of the cursor under the lease, from this process.
    let me = RunId::random();
    let mut done = 0;
    while done < INCREMENTS {
        let now = chrono::Utc::now();
        let Some(lease) = store
            .acquire_lease(&job, &me, now, Duration::from_secs(30))
            .await
            .unwrap()
        else {
            tokio::time::sleep(PAUSE / 2).await;
            continue;
        };
        let mut state = store.load_state(&job).await.unwrap();
        state.cursor += 1;
        let detail = serde_json::json!({ "who": "parent", "cursor": state.cursor });
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
            .unwrap();
        store.release_lease(&job, &lease).await.unwrap();
        done += 1;
        tokio::time::sleep(PAUSE).await;
    }
    for child in children {
        assert_eq!(finish(child).trim(), format!("done {INCREMENTS}"));
    }
    // Had two processes ever held the lease at once, increments would have been lost.
    assert_eq!(
        store.load_state(&job).await.unwrap().cursor,
        3 * INCREMENTS as u64
    );
    // Each commit's event went into the outbox with it, in commit order.
    let events = store.pending_events(&job.tenant).await.unwrap();
    let cursors: Vec<u64> = events
        .iter()
        .map(|e| e.detail["cursor"].as_u64().unwrap())
        .collect();
    assert_eq!(cursors, (1..=3 * INCREMENTS as u64).collect::<Vec<_>>());
    let holders: Vec<String> = events.iter().map(|e| e.detail["who"].to_string()).collect();
    assert!(
        switches(&holders) > 2,
        "the processes took turns with the lease"
    );
}
