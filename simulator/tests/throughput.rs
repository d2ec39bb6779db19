//! The benchmark's shape: many 200-record calls, several in flight, with latency.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};

fn batch(call: usize) -> String {
    let records: Vec<Value> = (0..200)
        .map(|i| {
            json!({"attributes": {"type": "Contact"}, "External_Id__c": format!("T{call:04}-{i:03}"),
                   "LastName": "Load", "Email": "load@example.com", "Birthdate": "1990-01-01"})
        })
        .collect();
    json!({"allOrNone": false, "records": records}).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_is_not_serialised_across_calls() {
    let mut org = test_org();
    org["latency_ms"] = json!(200);
    let sim = Arc::new(start(org).await);
    let token = Arc::new(token(&sim).await);
    let started = Instant::now();
    let calls: Vec<_> = (0..8)
        .map(|c| {
            let (sim, token) = (Arc::clone(&sim), Arc::clone(&token));
            tokio::spawn(async move {
                let url = upsert_url(&sim, "Contact", "External_Id__c");
                patch_raw(&token, &url, batch(c)).await.status
            })
        })
        .collect();
    for call in calls {
        assert_eq!(call.await.unwrap(), StatusCode::OK);
    }
    // Eight 200 ms calls in parallel; serialised they would take 1.6 s.
    assert!(
        started.elapsed() < Duration::from_millis(1200),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(sim.records("Contact").unwrap().len(), 1600);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_calls_in_flight_write_every_record() {
    let mut org = test_org();
    org["api"] = json!({"max": 100000});
    let sim = Arc::new(start(org).await);
    let token = Arc::new(token(&sim).await);
    let calls = 60;
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let (sim, token, next) = (Arc::clone(&sim), Arc::clone(&token), Arc::clone(&next));
            tokio::spawn(async move {
                let url = upsert_url(&sim, "Contact", "External_Id__c");
                loop {
                    let c = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    if c >= calls {
                        break;
                    }
                    let reply = patch_raw(&token, &url, batch(c)).await;
                    assert_eq!(reply.status, StatusCode::OK);
                    let results = reply.json();
                    assert!(results
                        .as_array()
                        .unwrap()
                        .iter()
                        .all(|r| r["created"] == json!(true)));
                }
            })
        })
        .collect();
    for w in workers {
        w.await.unwrap();
    }
    let stats = sim.stats();
    assert_eq!(
        (
            stats.upsert_calls,
            stats.records_written,
            stats.records_failed
        ),
        (60, 12_000, 0)
    );
    assert_eq!(sim.api_usage().used, 60);
}
