//! Two SqliteStore instances (two separate connections, as two CLI invocations would
//! have) on one file: concurrent producers get gap-free seqs, and a lease race has one
//! winner whose commit alone succeeds.

use chrono::{TimeZone, Utc};
use crm_export_core::domain::*;
use crm_export_core::ports::*;
use crm_export_sqlite::{SqliteOptions, SqliteStore};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

/// One connection per store, so the two stores really are two connections.
fn open_pair(path: &std::path::Path) -> (Arc<SqliteStore>, Arc<SqliteStore>) {
    let opts = SqliteOptions {
        max_connections: 1,
        ..SqliteOptions::default()
    };
    let a = SqliteStore::open_with(path, opts.clone()).expect("open a");
    let b = SqliteStore::open_with(path, opts).expect("open b");
    (Arc::new(a), Arc::new(b))
}

fn job() -> JobRef {
    JobRef::new(
        TenantId::new("acme").unwrap(),
        JobId::new("touchpoints").unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_connections_enqueue_concurrently_without_gaps() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = open_pair(&dir.path().join("store.db"));
    let job = job();
    let barrier = Arc::new(tokio::sync::Barrier::new(4));
    let mut tasks = Vec::new();
    // Two producers on each connection.
    for (p, store) in [a.clone(), a.clone(), b.clone(), b.clone()]
        .into_iter()
        .enumerate()
    {
        let (job, barrier) = (job.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let mut out = Vec::new();
            for n in 0..40usize {
                let len = 1 + (n + p) % 3;
                let records = (0..len)
                    .map(|i| NewRecord {
                        key: RecordKey::from_stored(format!("p{p}-{n}-{i}")),
                        fields: serde_json::json!({ "p": p, "n": n, "i": i })
                            .as_object()
                            .cloned()
                            .unwrap(),
                    })
                    .collect();
                let seqs = store
                    .enqueue(&job, records, Utc::now())
                    .await
                    .expect("enqueue");
                out.push((p, n, seqs));
            }
            out
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let mut seen = BTreeSet::new();
    for (_, _, seqs) in &all {
        assert!(
            seqs.windows(2).all(|w| w[1] == w[0] + 1),
            "a batch gets consecutive seqs"
        );
        for s in seqs {
            assert!(seen.insert(*s), "seq {s} assigned twice");
        }
    }
    let total = seen.len() as u64;
    assert_eq!(
        seen,
        (1..=total).collect(),
        "gap-free seqs across both connections"
    );
    // Both connections see the same queue.
    assert_eq!(a.head(&job).await.unwrap(), total);
    assert_eq!(b.head(&job).await.unwrap(), total);
    let records = b.read_after(&job, 0, 10_000).await.unwrap();
    assert_eq!(records.len() as u64, total);
    for (p, n, seqs) in &all {
        for (i, s) in seqs.iter().enumerate() {
            assert_eq!(
                records[(*s - 1) as usize].key.as_str(),
                format!("p{p}-{n}-{i}")
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_connections_race_for_the_lease_and_only_the_holder_commits() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = open_pair(&dir.path().join("store.db"));
    let job = job();
    let t0 = Utc.with_ymd_and_hms(2026, 3, 1, 10, 0, 0).unwrap();
    for round in 0..20i64 {
        // Each round starts after the previous lease expired, so both may take it.
        let now = t0 + chrono::Duration::seconds(100 * round);
        let barrier = Arc::new(tokio::sync::Barrier::new(2));
        let race = |store: Arc<SqliteStore>, name: &'static str| {
            let (job, barrier) = (job.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                let lease = store
                    .acquire_lease(&job, &RunId(name.into()), now, Duration::from_secs(60))
                    .await
                    .unwrap();
                (store, lease)
            })
        };
        let (ra, rb) = (race(a.clone(), "a"), race(b.clone(), "b"));
        let ((sa, la), (sb, lb)) = (ra.await.unwrap(), rb.await.unwrap());
        assert!(
            la.is_some() != lb.is_some(),
            "round {round}: exactly one connection gets the lease"
        );
        let (winner, lease, loser) = match (la, lb) {
            (Some(l), None) => (sa, l, sb),
            (None, Some(l)) => (sb, l, sa),
            _ => unreachable!(),
        };
        // The loser forges a lease with a guessed token: refused, nothing written.
        let forged = Lease {
            token: LeaseToken(format!("guess-{round}")),
            ..lease.clone()
        };
        let state = JobState {
            cursor: round as u64 + 1,
            ..JobState::default()
        };
        let bad = Commit {
            state: JobState {
                cursor: 999,
                ..JobState::default()
            },
            errors: vec![],
            events: vec![],
            ..Commit::default()
        };
        assert_eq!(
            loser.commit(&job, &forged, now, bad).await,
            Err(StoreError::LeaseLost)
        );
        winner
            .commit(
                &job,
                &lease,
                now,
                Commit {
                    state: state.clone(),
                    errors: vec![],
                    events: vec![],
                    ..Commit::default()
                },
            )
            .await
            .unwrap();
        // Both connections see the winner's state.
        assert_eq!(loser.load_state(&job).await.unwrap(), state);
        // The old lease, past its expiry in the next round, can no longer commit either.
        let later = now + chrono::Duration::seconds(60);
        let late = Commit {
            state: JobState {
                cursor: 999,
                ..JobState::default()
            },
            errors: vec![],
            events: vec![],
            ..Commit::default()
        };
        assert_eq!(
            winner.commit(&job, &lease, later, late).await,
            Err(StoreError::LeaseLost)
        );
    }
    assert_eq!(a.load_state(&job).await.unwrap().cursor, 20);
}
