//! The API allocation: Sforce-Limit-Info, /limits, REQUEST_LIMIT_EXCEEDED, concurrency.

mod common;

use common::*;
use reqwest::StatusCode;
use serde_json::json;

async fn get_limits(sim: &sf_simulator::SimHandle, token: &str) -> Reply {
    send(
        client()
            .get(format!("{}/services/data/{API}/limits", sim.base_url()))
            .bearer_auth(token),
    )
    .await
}

#[tokio::test]
async fn every_rest_call_counts_and_reports_usage() {
    let sim = start(test_org()).await;
    let token = token(&sim).await;
    for i in 1..=3 {
        let reply = upsert(
            &sim,
            &token,
            json!([{"External_Id__c": format!("L-{i}"), "LastName": "L"}]),
            false,
        )
        .await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(
            reply.limit_info().as_deref(),
            Some(format!("api-usage={i}/1000").as_str())
        );
    }
    let reply = get_limits(&sim, &token).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.limit_info().as_deref(), Some("api-usage=4/1000"));
    let body = reply.json();
    assert_eq!(
        body["DailyApiRequests"],
        json!({"Max": 1000, "Remaining": 996})
    );
    assert!(body["DailyBulkApiBatches"]["Max"].is_u64());

    // An unknown REST resource is still a counted call.
    let reply = send(
        client()
            .get(format!(
                "{}/services/data/{API}/sobjects/Nothing",
                sim.base_url()
            ))
            .bearer_auth(&token),
    )
    .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(reply.limit_info().as_deref(), Some("api-usage=5/1000"));

    // The versions list needs no session and is not counted.
    let reply = send(client().get(format!("{}/services/data/", sim.base_url()))).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.limit_info().is_none());
    let versions = reply.json();
    assert!(versions.as_array().unwrap().contains(
        &json!({"label": "Winter '25", "url": "/services/data/v62.0", "version": "62.0"})
    ));
    assert_eq!(sim.api_usage().used, 5);
    assert_eq!(sim.stats().api_calls, 5);

    // Unauthenticated responses carry the header too, without counting.
    let reply = send(client().get(format!("{}/services/data/{API}/limits", sim.base_url()))).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(reply.limit_info().as_deref(), Some("api-usage=5/1000"));
}

#[tokio::test]
async fn spent_allocation_gives_request_limit_exceeded() {
    let mut org = test_org();
    org["api"] = json!({"max": 3, "used": 1});
    let sim = start(org).await;
    let token = token(&sim).await;
    for _ in 0..2 {
        assert_eq!(get_limits(&sim, &token).await.status, StatusCode::OK);
    }
    let reply = upsert(
        &sim,
        &token,
        json!([{"External_Id__c": "X", "LastName": "L"}]),
        false,
    )
    .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(
        reply.text,
        r#"[{"message":"TotalRequests Limit exceeded.","errorCode":"REQUEST_LIMIT_EXCEEDED"}]"#
    );
    assert_eq!(reply.limit_info().as_deref(), Some("api-usage=3/3"));
    assert!(sim.records("Contact").unwrap().is_empty());

    // The admin API can give the allocation back.
    let resp = send(
        client()
            .put(format!("{}/__sim/api-usage", sim.base_url()))
            .body(r#"{"used": 0}"#),
    )
    .await;
    assert_eq!(resp.status, StatusCode::NO_CONTENT);
    let reply = get_limits(&sim, &token).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        reply.json()["DailyApiRequests"],
        json!({"Max": 3, "Remaining": 2})
    );
}

#[tokio::test]
async fn concurrent_request_limit() {
    let mut org = test_org();
    org["api"] = json!({"max": 1000, "concurrent_max": 1});
    org["latency_ms"] = json!(400);
    let sim = start(org).await;
    let token = token(&sim).await;
    let (a, b) = tokio::join!(get_limits(&sim, &token), async {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        get_limits(&sim, &token).await
    });
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(b.status, StatusCode::FORBIDDEN);
    assert_eq!(
        b.text,
        r#"[{"message":"ConcurrentPerOrgLongTxn Limit exceeded.","errorCode":"REQUEST_LIMIT_EXCEEDED"}]"#
    );
    // Once the first call is done the slot is free again.
    assert_eq!(get_limits(&sim, &token).await.status, StatusCode::OK);
}
