//! Bad input and bad credentials: each gets a 4xx with the one JSON error shape, and
//! nothing is half-applied.

mod common;

use axum::http::{Method, StatusCode};
use common::{tenant, Api, SECRET};
use crm_export_api::jwt::issue_hs256;
use crm_export_core::ports::{ExportErrorStore, JobStateStore, SettingsStore};
use crm_export_core::{JobId, JobRef};
use serde_json::json;

async fn nothing_changed(api: &Api) {
    let s = api.stored("acme").await.unwrap();
    assert_eq!(s.version, 1);
    assert_eq!(s.settings.batch_size.get(), 200);
    let history = api
        .store
        .settings_history(&tenant("acme"), None, 10)
        .await
        .unwrap();
    assert_eq!(history.items.len(), 1);
    assert!(api.events.events().is_empty());
    assert!(api.retry.requests().is_empty());
    let job = JobRef::new(tenant("acme"), JobId::new("touchpoints").unwrap());
    assert!(api.store.load_state(&job).await.unwrap().halt.is_some());
    assert_eq!(
        api.store
            .count_errors(&job, crm_export_core::ErrorStatus::Parked)
            .await
            .unwrap(),
        1
    );
}

#[tokio::test]
async fn malformed_bodies_are_refused_with_the_shared_error_shape() {
    let api = Api::seeded().await;
    let token = api.token("acme", true);
    let settings_headers = [("content-type", "application/json"), ("if-match", "\"1\"")];
    let cases: Vec<(&str, Vec<u8>, StatusCode, &str)> = vec![
        (
            "truncated JSON",
            br#"{"batch_size": 50"#.to_vec(),
            StatusCode::BAD_REQUEST,
            "malformed_json",
        ),
        (
            "not JSON",
            b"batch_size=50".to_vec(),
            StatusCode::BAD_REQUEST,
            "malformed_json",
        ),
        (
            "unknown field",
            br#"{"batch_size": 50, "bogus": 1}"#.to_vec(),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        (
            "tenant in the body",
            br#"{"tenant_id": "globex", "batch_size": 50}"#.to_vec(),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        (
            "wrong type",
            br#"{"batch_size": "50"}"#.to_vec(),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        (
            "negative",
            br#"{"daily_api_limit": -5}"#.to_vec(),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        (
            "not an object",
            br#"[1, 2]"#.to_vec(),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        (
            "too big for u32",
            br#"{"batch_size": 4294967296}"#.to_vec(),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        (
            "empty",
            Vec::new(),
            StatusCode::BAD_REQUEST,
            "malformed_json",
        ),
    ];
    for (what, body, status, code) in cases {
        let r = api
            .raw(
                Method::PATCH,
                "/v1/settings",
                Some(&token),
                &settings_headers,
                Some(body),
            )
            .await;
        assert_eq!(
            (r.status, r.error_code()),
            (status, code),
            "{what}: {:?}",
            r.body
        );
        assert_eq!(r.headers["content-type"], "application/json", "{what}");
    }
    // A body of the right shape but a wrong content type.
    let r = api
        .raw(
            Method::PATCH,
            "/v1/settings",
            Some(&token),
            &[("if-match", "\"1\""), ("content-type", "text/plain")],
            Some(br#"{"batch_size": 50}"#.to_vec()),
        )
        .await;
    assert_eq!(
        (r.status, r.error_code()),
        (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
    );
    // Skip with unknown fields or wrong types.
    for body in [
        json!({"acknowledge": true}),
        json!({"acknowledge_data_inconsistency": "yes"}),
    ] {
        let r = api
            .send_json(
                "acme",
                Method::POST,
                "/v1/jobs/touchpoints/halt/skip",
                &[],
                &body,
            )
            .await;
        assert_eq!(
            (r.status, r.error_code()),
            (StatusCode::BAD_REQUEST, "invalid_body"),
            "{body}"
        );
    }
    nothing_changed(&api).await;
}

#[tokio::test]
async fn an_oversized_body_is_413() {
    let api = Api::seeded().await;
    let token = api.token("acme", true);
    // Valid JSON, just too much of it.
    let padding = " ".repeat(crm_export_api::MAX_BODY_BYTES);
    let body = format!("{{\"batch_size\": 50{padding}}}");
    let r = api
        .raw(
            Method::PATCH,
            "/v1/settings",
            Some(&token),
            &[("content-type", "application/json"), ("if-match", "\"1\"")],
            Some(body.into_bytes()),
        )
        .await;
    assert_eq!(
        (r.status, r.error_code()),
        (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large")
    );
    nothing_changed(&api).await;
}

#[tokio::test]
async fn bad_query_parameters_are_400() {
    let api = Api::seeded().await;
    let cases = [
        ("/v1/jobs/touchpoints/errors?limit=abc", "invalid_query"),
        ("/v1/jobs/touchpoints/errors?limit=0", "invalid_query"),
        ("/v1/jobs/touchpoints/errors?limit=201", "invalid_query"),
        ("/v1/jobs/touchpoints/errors?limit=-1", "invalid_query"),
        ("/v1/jobs/touchpoints/errors?status=bogus", "invalid_query"),
        (
            "/v1/jobs/touchpoints/errors?include_values=yes",
            "invalid_query",
        ),
        ("/v1/jobs/touchpoints/errors?code=", "invalid_query"),
        (
            "/v1/jobs/touchpoints/errors?tenant_id=globex",
            "invalid_query",
        ),
        (
            "/v1/jobs/touchpoints/errors?page_token=zz",
            "invalid_page_token",
        ),
        (
            "/v1/jobs/touchpoints/errors?page_token=7b7d",
            "invalid_page_token",
        ),
        (
            "/v1/jobs/touchpoints/errors?page_token=",
            "invalid_page_token",
        ),
        ("/v1/settings/history?limit=abc", "invalid_query"),
        (
            "/v1/settings/history?page_token=not-a-token",
            "invalid_page_token",
        ),
        ("/v1/settings/history?bogus=1", "invalid_query"),
    ];
    for (path, code) in cases {
        let r = api.get("acme", path).await;
        assert_eq!(
            (r.status, r.error_code()),
            (StatusCode::BAD_REQUEST, code),
            "{path}: {:?}",
            r.body
        );
    }
}

#[tokio::test]
async fn unknown_routes_are_404_and_wrong_methods_405() {
    let api = Api::seeded().await;
    for path in [
        "/",
        "/v1",
        "/v2/settings",
        "/v1/settings/nope",
        "/v1/jobs/touchpoints/nope",
    ] {
        let r = api.get("acme", path).await;
        assert_eq!(
            (r.status, r.error_code()),
            (StatusCode::NOT_FOUND, "not_found"),
            "{path}"
        );
    }
    for (method, path, allow) in [
        (Method::DELETE, "/v1/settings", "GET,HEAD,PATCH"),
        (Method::PUT, "/v1/settings", "GET,HEAD,PATCH"),
        (Method::POST, "/v1/jobs", "GET,HEAD"),
        (Method::GET, "/v1/jobs/touchpoints/retry-runs", "POST"),
        (Method::PATCH, "/v1/jobs/touchpoints/halt/skip", "POST"),
    ] {
        let r = api.as_writer("acme", method.clone(), path).await;
        assert_eq!(
            (r.status, r.error_code()),
            (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            "{method} {path}"
        );
        assert_eq!(r.headers["allow"], allow, "{method} {path}");
    }
    nothing_changed(&api).await;
}

#[tokio::test]
async fn missing_or_bad_credentials_are_401_on_every_route() {
    let api = Api::seeded().await;
    let now = chrono::Utc::now().timestamp();
    let other_secret = b"another-secret-another-secret-another".as_slice();
    let tokens: Vec<(&str, Option<String>)> = vec![
        ("none", None),
        ("garbage", Some("not.a.jwt".to_string())),
        ("other secret", Some(issue_hs256(other_secret, &json!({"sub": "u", "tenant_id": "acme", "scope": "crm-export/write", "exp": now + 600})).unwrap())),
        ("expired", Some(issue_hs256(SECRET, &json!({"sub": "u", "tenant_id": "acme", "scope": "crm-export/write", "exp": now - 3600})).unwrap())),
        ("no tenant", Some(issue_hs256(SECRET, &json!({"sub": "u", "scope": "crm-export/write", "exp": now + 600})).unwrap())),
        ("bad tenant", Some(issue_hs256(SECRET, &json!({"sub": "u", "tenant_id": "ACME!", "scope": "crm-export/write", "exp": now + 600})).unwrap())),
        ("no subject", Some(issue_hs256(SECRET, &json!({"tenant_id": "acme", "scope": "crm-export/write", "exp": now + 600})).unwrap())),
    ];
    let routes = [
        (Method::GET, "/v1/settings"),
        (Method::PATCH, "/v1/settings"),
        (Method::GET, "/v1/settings/history"),
        (Method::GET, "/v1/jobs"),
        (Method::GET, "/v1/jobs/touchpoints"),
        (Method::GET, "/v1/jobs/touchpoints/errors"),
        (Method::POST, "/v1/jobs/touchpoints/retry-runs"),
        (Method::POST, "/v1/jobs/touchpoints/halt/skip"),
        (Method::POST, "/v1/jobs/touchpoints/errors/tp-2/reopen"),
    ];
    let headers = [("content-type", "application/json"), ("if-match", "\"1\"")];
    for (what, token) in &tokens {
        for (method, path) in &routes {
            let body =
                Some(br#"{"batch_size": 50, "acknowledge_data_inconsistency": true}"#.to_vec());
            let r = api
                .raw(method.clone(), path, token.as_deref(), &headers, body)
                .await;
            assert_eq!(
                (r.status, r.error_code()),
                (StatusCode::UNAUTHORIZED, "unauthenticated"),
                "{what}: {method} {path}"
            );
            assert_eq!(r.headers["www-authenticate"], "Bearer");
        }
    }
    // Like API Gateway's authorizer, the local layer answers nothing but 401 without a
    // verified token, not even whether a route exists.
    for (what, token) in &tokens[..4] {
        let r = api
            .raw(Method::GET, "/v1/nope", token.as_deref(), &[], None)
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{what}");
    }
    // A scheme other than Bearer is no token either.
    let r = api
        .raw(
            Method::GET,
            "/v1/settings",
            None,
            &[("authorization", "Basic dXNlcjpwYXNz")],
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    nothing_changed(&api).await;
}

#[tokio::test]
async fn the_router_without_an_authenticating_layer_serves_nobody() {
    // Lambda deployed without the authorizer: no Claims extension, so 401.
    let api = Api::seeded().await;
    let state =
        crm_export_api::ApiState::new(api.store.clone(), api.events.clone(), api.retry.clone());
    let app = crm_export_api::router(state);
    use tower::ServiceExt;
    let req = axum::http::Request::get("/v1/settings")
        .body(axum::body::Body::empty())
        .unwrap();
    let resp = app.oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let body = axum::body::to_bytes(resp.into_body(), 1 << 16)
        .await
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["error"]["code"], "unauthenticated");
}
