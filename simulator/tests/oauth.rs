//! The token endpoint: grants, rotation, and Salesforce's error bodies.

mod common;

use base64::Engine;
use common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};

fn cc_form<'a>(id: &'a str, secret: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("grant_type", "client_credentials"),
        ("client_id", id),
        ("client_secret", secret),
    ]
}

fn error(error: &str, description: &str) -> Value {
    json!({"error": error, "error_description": description})
}

#[tokio::test]
async fn client_credentials_response_has_salesforce_shape() {
    let sim = start(test_org()).await;
    let before = chrono::Utc::now().timestamp_millis();
    let resp = send(
        client()
            .post(sim.token_url())
            .form(&cc_form("cc-client", "cc-secret")),
    )
    .await;
    assert_eq!(resp.status, StatusCode::OK);
    assert!(
        resp.limit_info().is_none(),
        "the token endpoint sends no Sforce-Limit-Info"
    );
    let body = resp.json();
    let mut keys: Vec<&str> = body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "access_token",
            "id",
            "instance_url",
            "issued_at",
            "scope",
            "signature",
            "token_type"
        ]
    );
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["instance_url"], sim.base_url());
    assert_eq!(
        body["id"],
        format!(
            "{}/id/00D5g00000TESTOEAA/0055g00000TESTUAAA",
            sim.base_url()
        )
    );
    assert!(body["access_token"]
        .as_str()
        .unwrap()
        .starts_with("00D5g00000TESTO!"));
    let issued_at: i64 = body["issued_at"]
        .as_str()
        .expect("issued_at is a string")
        .parse()
        .unwrap();
    assert!(issued_at >= before && issued_at <= chrono::Utc::now().timestamp_millis());

    // signature = base64(HMAC-SHA256(client_secret, id + issued_at))
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"cc-secret");
    let msg = format!(
        "{}{}",
        body["id"].as_str().unwrap(),
        body["issued_at"].as_str().unwrap()
    );
    let sig = base64::engine::general_purpose::STANDARD
        .decode(body["signature"].as_str().unwrap())
        .unwrap();
    ring::hmac::verify(&key, msg.as_bytes(), &sig).expect("signature verifies");
    assert_eq!(sim.stats().token_requests, 1);
}

#[tokio::test]
async fn client_credentials_accepts_http_basic() {
    let sim = start(test_org()).await;
    let resp = send(
        client()
            .post(sim.token_url())
            .basic_auth("cc-client", Some("cc-secret"))
            .form(&[("grant_type", "client_credentials")]),
    )
    .await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    let token = resp.json()["access_token"].as_str().unwrap().to_owned();
    let limits = send(
        client()
            .get(format!("{}/services/data/{API}/limits", sim.base_url()))
            .bearer_auth(&token),
    )
    .await;
    assert_eq!(limits.status, StatusCode::OK);
}

#[tokio::test]
async fn bad_client_credentials_get_oauth_errors() {
    let sim = start(test_org()).await;
    let cases = [
        (
            cc_form("cc-client", "wrong"),
            error("invalid_client", "invalid client credentials"),
        ),
        (
            cc_form("nobody", "x"),
            error("invalid_client_id", "client identifier invalid"),
        ),
        (
            cc_form("rt-client", "rt-secret"),
            error("invalid_grant", "no client credentials user enabled"),
        ),
        (
            vec![("grant_type", "password"), ("client_id", "cc-client")],
            error("unsupported_grant_type", "grant type not supported"),
        ),
        (
            vec![("client_id", "cc-client")],
            error("unsupported_grant_type", "grant type not supported"),
        ),
    ];
    for (form, expected) in cases {
        let (status, body) = token_call(&sim, &form).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{form:?}");
        assert_eq!(body, expected, "{form:?}");
    }
    assert_eq!(sim.stats().token_requests, 5);
}

fn refresh_form<'a>(client_id: &'a str, token: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("grant_type", "refresh_token"),
        ("client_id", client_id),
        ("refresh_token", token),
    ]
}

#[tokio::test]
async fn refresh_without_rotation_keeps_the_token() {
    let sim = start(test_org()).await;
    for _ in 0..2 {
        let (status, body) = token_call(&sim, &refresh_form("rt-client", "rt-static")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(body.get("refresh_token").is_none(), "{body}");
        assert!(body.get("expires_in").is_none(), "{body}");
        assert_eq!(body["token_type"], "Bearer");
    }
    // A wrong secret is refused even though the secret is optional.
    let mut form = refresh_form("rt-client", "rt-static");
    form.push(("client_secret", "nope"));
    let (status, body) = token_call(&sim, &form).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body, error("invalid_client", "invalid client credentials"));
}

#[tokio::test]
async fn rotation_issues_a_new_refresh_token_and_revokes_the_old() {
    let sim = start(test_org()).await;
    let mut form = refresh_form("rot-client", "rot-1");
    form.push(("client_secret", "rot-secret"));
    let (status, body) = token_call(&sim, &form).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let fresh = body["refresh_token"]
        .as_str()
        .expect("rotated token")
        .to_owned();
    assert_ne!(fresh, "rot-1");

    let (status, body) = token_call(&sim, &refresh_form("rot-client", "rot-1")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body, error("invalid_grant", "expired access/refresh token"));

    let (status, body) = token_call(&sim, &refresh_form("rot-client", &fresh)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let newest = body["refresh_token"].as_str().unwrap().to_owned();
    let live = sim.org().oauth.clients[2].refresh_tokens.clone();
    assert_eq!(live, vec![newest]);
}

#[tokio::test]
async fn invalid_refresh_grants() {
    let sim = start(test_org()).await;
    let expired = error("invalid_grant", "expired access/refresh token");
    for form in [
        refresh_form("rt-client", "never-issued"),
        // A token of another client.
        refresh_form("rot-client", "rt-static"),
        vec![("grant_type", "refresh_token"), ("client_id", "rt-client")],
    ] {
        let (status, body) = token_call(&sim, &form).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{form:?}");
        assert_eq!(body, expired, "{form:?}");
    }
    let (_, body) = token_call(&sim, &refresh_form("ghost", "rt-static")).await;
    assert_eq!(
        body,
        error("invalid_client_id", "client identifier invalid")
    );
    // The refresh grant is not enabled for the client-credentials client.
    let (_, body) = token_call(&sim, &refresh_form("cc-client", "rt-static")).await;
    assert_eq!(
        body,
        error("unsupported_grant_type", "grant type not supported")
    );
}

#[tokio::test]
async fn inactive_user_and_org() {
    let sim = start(test_org()).await;
    let mut org = sim.org();
    org.oauth.user_active = false;
    sim.replace_org(org.clone()).unwrap();
    let (status, body) = token_call(&sim, &cc_form("cc-client", "cc-secret")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body, error("inactive_user", "user is inactive"));
    let (_, body) = token_call(&sim, &refresh_form("rt-client", "rt-static")).await;
    assert_eq!(body, error("inactive_user", "user is inactive"));

    org.oauth.org_active = false;
    sim.replace_org(org).unwrap();
    let (_, body) = token_call(&sim, &cc_form("cc-client", "cc-secret")).await;
    assert_eq!(body, error("inactive_org", "organization is inactive"));
}

#[tokio::test]
async fn admin_can_mint_a_refresh_token() {
    let sim = start(test_org()).await;
    let resp = send(client().post(format!(
        "{}/__sim/oauth/clients/rt-client/refresh-tokens",
        sim.base_url()
    )))
    .await;
    assert_eq!(resp.status, StatusCode::CREATED);
    let minted = resp.json()["refresh_token"].as_str().unwrap().to_owned();
    let (status, _) = token_call(&sim, &refresh_form("rt-client", &minted)).await;
    assert_eq!(status, StatusCode::OK);
    let missing = send(client().post(format!(
        "{}/__sim/oauth/clients/ghost/refresh-tokens",
        sim.base_url()
    )))
    .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
}
