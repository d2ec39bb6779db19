//! `POST /services/oauth2/token` (client credentials and refresh token grants) and the
//! access-token sessions it creates.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use axum::extract::rejection::{FormRejection, QueryRejection};
use axum::extract::{Form, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;
use base64::Engine;
use serde_json::{json, Map, Value};

use crate::org::{CompiledOrg, GrantType, OAuthClient};
use crate::rest::{json_response, latency};
use crate::sim::{lock, Shared, Simulator};

pub(crate) struct Session {
    last_used: Instant,
}

/// Whether `token` is a live session; a live one's inactivity clock restarts.
pub(crate) fn touch_session(shared: &Shared, org: &CompiledOrg, token: &str) -> bool {
    let lifetime = Duration::from_secs_f64(org.def.session_lifetime_secs);
    let mut sessions = lock(&shared.sessions);
    let Some(session) = sessions.get_mut(token) else {
        return false;
    };
    if session.last_used.elapsed() > lifetime {
        sessions.remove(token);
        return false;
    }
    session.last_used = Instant::now();
    true
}

fn random_chars(n: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut out = String::with_capacity(n);
    while out.len() < n {
        for b in uuid::Uuid::new_v4().as_bytes() {
            if out.len() == n {
                break;
            }
            out.push(ALPHABET[*b as usize % ALPHABET.len()] as char);
        }
    }
    out
}

pub(crate) fn new_refresh_token() -> String {
    format!("5Aep861{}", random_chars(80))
}

struct OAuthError {
    error: &'static str,
    description: &'static str,
}

const fn oauth_error(error: &'static str, description: &'static str) -> OAuthError {
    OAuthError { error, description }
}

const EXPIRED_GRANT: OAuthError = oauth_error("invalid_grant", "expired access/refresh token");
const BAD_CLIENT_ID: OAuthError = oauth_error("invalid_client_id", "client identifier invalid");
const BAD_SECRET: OAuthError = oauth_error("invalid_client", "invalid client credentials");
const UNSUPPORTED: OAuthError = oauth_error("unsupported_grant_type", "grant type not supported");

pub(crate) async fn token(
    State(sim): State<Simulator>,
    headers: HeaderMap,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
    form: Result<Form<HashMap<String, String>>, FormRejection>,
) -> Response {
    let shared = &sim.shared;
    shared.stats.token_requests.fetch_add(1, Ordering::SeqCst);
    latency(shared).await;
    // Salesforce also takes the parameters in the query string; the body wins.
    let mut params = query.map(|q| q.0).unwrap_or_default();
    params.extend(form.map(|f| f.0).unwrap_or_default());
    match grant(shared, &sim.base_url(), &headers, &params) {
        Ok(body) => json_response(StatusCode::OK, &body),
        Err(e) => json_response(
            StatusCode::BAD_REQUEST,
            &json!({"error": e.error, "error_description": e.description}),
        ),
    }
}

/// client_id and client_secret from the form, or from HTTP Basic when the form has none.
fn client_credentials(
    headers: &HeaderMap,
    params: &HashMap<String, String>,
) -> (Option<String>, Option<String>) {
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| {
            base64::engine::general_purpose::STANDARD
                .decode(b.trim())
                .ok()
        })
        .and_then(|raw| String::from_utf8(raw).ok())
        .and_then(|s| s.split_once(':').map(|(a, b)| (a.to_owned(), b.to_owned())));
    let id = params
        .get("client_id")
        .cloned()
        .or_else(|| basic.as_ref().map(|b| b.0.clone()));
    let secret = params
        .get("client_secret")
        .cloned()
        .or_else(|| basic.map(|b| b.1));
    (id, secret)
}

fn grant(
    shared: &Shared,
    base_url: &str,
    headers: &HeaderMap,
    params: &HashMap<String, String>,
) -> Result<Value, OAuthError> {
    let org = shared.org();
    let (client_id, secret) = client_credentials(headers, params);
    match params.get("grant_type").map(String::as_str) {
        Some("client_credentials") => {
            let client = org
                .client(client_id.as_deref().unwrap_or_default())
                .ok_or(BAD_CLIENT_ID)?;
            if secret.as_deref() != Some(client.client_secret.as_str()) {
                return Err(BAD_SECRET);
            }
            if !client.grants.contains(&GrantType::ClientCredentials) {
                return Err(oauth_error(
                    "invalid_grant",
                    "no client credentials user enabled",
                ));
            }
            check_active(&org)?;
            Ok(issue(shared, &org, base_url, client, None))
        }
        Some("refresh_token") => {
            let client = org
                .client(client_id.as_deref().unwrap_or_default())
                .ok_or(BAD_CLIENT_ID)?;
            match secret.as_deref() {
                Some(s) if s != client.client_secret => return Err(BAD_SECRET),
                None if client.require_secret_for_refresh => return Err(BAD_SECRET),
                _ => {}
            }
            if !client.grants.contains(&GrantType::RefreshToken) {
                return Err(UNSUPPORTED);
            }
            let presented = params.get("refresh_token").ok_or(EXPIRED_GRANT)?;
            let mut tokens = lock(&shared.refresh_tokens);
            if tokens.get(presented) != Some(&client.client_id) {
                return Err(EXPIRED_GRANT);
            }
            check_active(&org)?;
            let rotated = client.rotate_refresh_tokens.then(|| {
                tokens.remove(presented);
                let fresh = new_refresh_token();
                tokens.insert(fresh.clone(), client.client_id.clone());
                fresh
            });
            drop(tokens);
            Ok(issue(shared, &org, base_url, client, rotated))
        }
        _ => Err(UNSUPPORTED),
    }
}

fn check_active(org: &CompiledOrg) -> Result<(), OAuthError> {
    if !org.def.oauth.org_active {
        return Err(oauth_error("inactive_org", "organization is inactive"));
    }
    if !org.def.oauth.user_active {
        return Err(oauth_error("inactive_user", "user is inactive"));
    }
    Ok(())
}

fn issue(
    shared: &Shared,
    org: &CompiledOrg,
    base_url: &str,
    client: &OAuthClient,
    refresh_token: Option<String>,
) -> Value {
    let org_id15: String = org.def.org_id.chars().take(15).collect();
    let access_token = format!("{org_id15}!AQ{}", random_chars(96));
    let issued_at = chrono::Utc::now().timestamp_millis().to_string();
    let id = format!("{base_url}/id/{}/{}", org.def.org_id, org.def.user_id);
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, client.client_secret.as_bytes());
    let tag = ring::hmac::sign(&key, format!("{id}{issued_at}").as_bytes());
    let signature = base64::engine::general_purpose::STANDARD.encode(tag.as_ref());

    let lifetime = Duration::from_secs_f64(org.def.session_lifetime_secs);
    let mut sessions = lock(&shared.sessions);
    // Bounded memory for long runs that request many tokens.
    if sessions.len() >= 1024 {
        sessions.retain(|_, s| s.last_used.elapsed() <= lifetime);
    }
    sessions.insert(
        access_token.clone(),
        Session {
            last_used: Instant::now(),
        },
    );
    drop(sessions);

    let mut body = Map::new();
    body.insert("access_token".into(), access_token.into());
    if let Some(rt) = refresh_token {
        body.insert("refresh_token".into(), rt.into());
    }
    body.insert("signature".into(), signature.into());
    body.insert("scope".into(), client.scope.clone().into());
    body.insert("instance_url".into(), base_url.into());
    body.insert("id".into(), id.into());
    body.insert("token_type".into(), "Bearer".into());
    body.insert("issued_at".into(), issued_at.into());
    Value::Object(body)
}
