//! Access tokens expire after `session_lifetime_secs` of inactivity; each call resets it.

mod common;

use std::time::Duration;

use common::*;
use reqwest::StatusCode;
use serde_json::json;

async fn call(sim: &sf_simulator::SimHandle, token: &str) -> StatusCode {
    send(
        client()
            .get(format!("{}/services/data/{API}/limits", sim.base_url()))
            .bearer_auth(token),
    )
    .await
    .status
}

#[tokio::test]
async fn inactivity_expires_the_session_and_activity_extends_it() {
    let mut org = test_org();
    org["session_lifetime_secs"] = json!(2.0);
    let sim = start(org).await;
    let token = token(&sim).await;
    assert_eq!(call(&sim, &token).await, StatusCode::OK);
    // 2.4 s after issue but never 2 s idle: still valid.
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_millis(1200)).await;
        assert_eq!(call(&sim, &token).await, StatusCode::OK);
    }
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let reply = send(
        client()
            .get(format!("{}/services/data/{API}/limits", sim.base_url()))
            .bearer_auth(&token),
    )
    .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        reply.json(),
        json!([{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}])
    );
    // A new token works.
    let fresh = common::token(&sim).await;
    assert_eq!(call(&sim, &fresh).await, StatusCode::OK);
}

#[tokio::test]
async fn admin_can_expire_every_session() {
    let sim = start(test_org()).await;
    let a = token(&sim).await;
    let b = token(&sim).await;
    assert_eq!(call(&sim, &a).await, StatusCode::OK);
    let resp = send(client().post(format!("{}/__sim/expire-sessions", sim.base_url()))).await;
    assert_eq!(resp.status, StatusCode::NO_CONTENT);
    assert_eq!(call(&sim, &a).await, StatusCode::UNAUTHORIZED);
    assert_eq!(call(&sim, &b).await, StatusCode::UNAUTHORIZED);
    let c = token(&sim).await;
    assert_eq!(call(&sim, &c).await, StatusCode::OK);
}
