//! The Lambda entry: real API Gateway v2 events through `lambda_http`'s conversion and the
//! router, with the tenant taken from the JWT authorizer's claims.
#![cfg(feature = "lambda")]

mod common;

use axum::http::StatusCode;
use common::Api;
use crm_export_api::lambda::lambda_router;
use crm_export_api::ApiState;
use tower::ServiceExt;

async fn call(api: &Api, event: &str) -> (StatusCode, serde_json::Value) {
    let state = ApiState::new(api.store.clone(), api.events.clone(), api.retry.clone());
    let req = lambda_http::request::from_str(event).expect("a valid API Gateway v2 event");
    let req = req.map(|b| axum::body::Body::from(b.to_vec()));
    let resp = lambda_router(state).oneshot(req).await.unwrap();
    let status = resp.status();
    let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    (status, serde_json::from_slice(&body).unwrap())
}

#[tokio::test]
async fn the_authorizers_tenant_is_served() {
    let api = Api::seeded().await;
    // acme changes its settings so its answer differs from globex's.
    let r = api
        .patch_settings("acme", 1, &serde_json::json!({"batch_size": 25}))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let (status, body) = call(&api, include_str!("data/apigw_v2_get_settings.json")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["version"], 2);
    assert_eq!(body["settings"]["batch_size"], 25);
}

#[tokio::test]
async fn a_read_only_token_cannot_change_settings() {
    let api = Api::seeded().await;
    let (status, body) = call(
        &api,
        include_str!("data/apigw_v2_patch_settings_read_only.json"),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["error"]["code"], "forbidden");
    assert_eq!(
        api.stored("globex")
            .await
            .unwrap()
            .settings
            .batch_size
            .get(),
        200
    );
}

#[tokio::test]
async fn without_the_authorizer_nobody_is_served() {
    let api = Api::seeded().await;
    let (status, body) = call(&api, include_str!("data/apigw_v2_no_authorizer.json")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"]["code"], "unauthenticated");
}
