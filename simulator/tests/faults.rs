//! Faults queued through `POST /__sim/faults` for the next upsert calls.

mod common;

use std::time::{Duration, Instant};

use common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};

async fn post_fault(sim: &sf_simulator::SimHandle, fault: Value) -> Reply {
    send(
        client()
            .post(format!("{}/__sim/faults", sim.base_url()))
            .json(&fault),
    )
    .await
}

fn one(ext: &str) -> Value {
    json!([{"External_Id__c": ext, "LastName": "F"}])
}

#[tokio::test]
async fn http_fault_returns_the_page_and_writes_nothing() {
    let sim = start(test_org()).await;
    let token = token(&sim).await;
    let reply = post_fault(
        &sim,
        json!({"kind": "http", "status": 503, "content_type": "text/html",
               "body": "<html>Service Unavailable</html>", "count": 2}),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json()[0]["count"], 2);
    for _ in 0..2 {
        let reply = upsert(&sim, &token, one("H-1"), false).await;
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(reply.text, "<html>Service Unavailable</html>");
        assert_eq!(reply.headers["content-type"], "text/html");
        assert!(reply.limit_info().is_none());
    }
    assert!(sim.records("Contact").unwrap().is_empty());
    let reply = upsert(&sim, &token, one("H-1"), false).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(sim.records("Contact").unwrap().len(), 1);
}

#[tokio::test]
async fn http_fault_after_commit_writes() {
    let sim = start(test_org()).await;
    let token = token(&sim).await;
    post_fault(&sim, json!({"kind": "http", "status": 500, "content_type": "application/json",
                            "body": "[{\"errorCode\":\"UNKNOWN_EXCEPTION\",\"message\":\"An unexpected error occurred.\"}]",
                            "commit": true}))
    .await;
    let reply = upsert(&sim, &token, one("C-1"), false).await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(reply.json()[0]["errorCode"], "UNKNOWN_EXCEPTION");
    assert_eq!(sim.records("Contact").unwrap().len(), 1, "the write landed");
}

#[tokio::test]
async fn malformed_and_wrong_length_results_after_processing() {
    let sim = start(test_org()).await;
    let token = token(&sim).await;
    post_fault(
        &sim,
        json!([{"kind": "malformed_json"}, {"kind": "wrong_length"}]),
    )
    .await;
    let reply = upsert(&sim, &token, one("M-1"), false).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(
        serde_json::from_str::<Value>(&reply.text).is_err(),
        "{}",
        reply.text
    );
    assert!(reply.text.starts_with("[{"), "{}", reply.text);
    let reply = upsert(
        &sim,
        &token,
        json!([{"External_Id__c": "W-1", "LastName": "A"}, {"External_Id__c": "W-2", "LastName": "B"}]),
        false,
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json().as_array().unwrap().len(), 1);
    let keys: Vec<String> = sim
        .records("Contact")
        .unwrap()
        .into_iter()
        .map(|r| r.external_id)
        .collect();
    assert_eq!(keys, ["M-1", "W-1", "W-2"]);
}

#[tokio::test]
async fn request_limit_delay_and_clearing() {
    let sim = start(test_org()).await;
    let token = token(&sim).await;
    post_fault(&sim, json!({"kind": "request_limit"})).await;
    let reply = upsert(&sim, &token, one("R-1"), false).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(
        reply.text,
        r#"[{"message":"TotalRequests Limit exceeded.","errorCode":"REQUEST_LIMIT_EXCEEDED"}]"#
    );
    assert!(sim.records("Contact").unwrap().is_empty());

    post_fault(&sim, json!({"kind": "delay", "ms": 300})).await;
    let started = Instant::now();
    let reply = upsert(&sim, &token, one("R-1"), false).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(started.elapsed() >= Duration::from_millis(300));

    post_fault(&sim, json!({"kind": "request_limit", "count": 5})).await;
    let listed = send(client().get(format!("{}/__sim/faults", sim.base_url())))
        .await
        .json();
    assert_eq!(listed, json!([{"kind": "request_limit", "count": 5}]));
    let reply = send(client().delete(format!("{}/__sim/faults", sim.base_url()))).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    assert_eq!(
        upsert(&sim, &token, one("R-2"), false).await.status,
        StatusCode::OK
    );

    let bad = post_fault(&sim, json!({"kind": "explode"})).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(bad.json()["error"].as_str().unwrap().contains("explode"));
}

#[tokio::test]
async fn expire_sessions_fault_applies_at_once() {
    let sim = start(test_org()).await;
    let token = token(&sim).await;
    post_fault(&sim, json!({"kind": "expire_sessions"})).await;
    let reply = upsert(&sim, &token, one("X-1"), false).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert!(sim.faults().is_empty(), "expire_sessions is not queued");
    let fresh = common::token(&sim).await;
    assert_eq!(
        upsert(&sim, &fresh, one("X-1"), false).await.status,
        StatusCode::OK
    );
}
