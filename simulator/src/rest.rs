//! What every REST call goes through: the session check, the API allocation, the
//! concurrency limit, latency, and Salesforce's request-level error shape.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use crate::oauth;
use crate::sim::Shared;

pub(crate) const JSON: &str = "application/json;charset=UTF-8";

/// A request-level error: `[{"message": ..., "errorCode": ..., "fields": [...]}]`.
#[derive(Debug, Clone)]
pub(crate) struct RestError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Salesforce sends `fields` with 400 parse/validation errors, not with 401/403/404.
    pub fields: Option<Vec<String>>,
}

impl RestError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        RestError {
            status,
            code,
            message: message.into(),
            fields: None,
        }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        RestError {
            fields: Some(Vec::new()),
            ..RestError::new(StatusCode::BAD_REQUEST, code, message)
        }
    }

    pub fn invalid_session() -> Self {
        RestError::new(
            StatusCode::UNAUTHORIZED,
            "INVALID_SESSION_ID",
            "Session expired or invalid",
        )
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        RestError::new(StatusCode::NOT_FOUND, "NOT_FOUND", message)
    }

    pub fn total_requests() -> Self {
        RestError::new(
            StatusCode::FORBIDDEN,
            "REQUEST_LIMIT_EXCEEDED",
            "TotalRequests Limit exceeded.",
        )
    }

    pub fn body(&self) -> Value {
        let mut item = json!({"message": self.message, "errorCode": self.code});
        if let Some(fields) = &self.fields {
            item["fields"] = json!(fields);
        }
        json!([item])
    }
}

impl IntoResponse for RestError {
    fn into_response(self) -> Response {
        json_response(self.status, &self.body())
    }
}

pub(crate) fn json_response(status: StatusCode, body: &Value) -> Response {
    raw_response(status, JSON, body.to_string())
}

pub(crate) fn raw_response(status: StatusCode, content_type: &str, body: String) -> Response {
    let mut resp = (status, body).into_response();
    if let Ok(v) = HeaderValue::from_str(content_type) {
        resp.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    resp
}

/// Adds `Sforce-Limit-Info: api-usage=USED/MAX` as it stands now.
pub(crate) fn with_limit_info(shared: &Shared, mut resp: Response) -> Response {
    let usage = shared.usage();
    if let Ok(v) = HeaderValue::from_str(&format!("api-usage={}/{}", usage.used, usage.max)) {
        resp.headers_mut().insert("sforce-limit-info", v);
    }
    resp
}

/// Holds a slot of the concurrency limit for the duration of a call.
pub(crate) struct Call {
    shared: Arc<Shared>,
}

impl Drop for Call {
    fn drop(&mut self) {
        self.shared.inflight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Admits a REST call: valid session, allocation left (then it counts), a free concurrency
/// slot, then the configured latency. The error response already carries the limit header.
pub(crate) async fn admit(shared: &Arc<Shared>, headers: &HeaderMap) -> Result<Call, Response> {
    let call = admit_now(shared, headers)?;
    latency(shared).await;
    Ok(call)
}

/// [`admit`] without the latency: the caller does its work and then waits for the rest of
/// it ([`answer_after_latency`]), so that a call's time is the latency, as Salesforce's
/// response time includes its own work, and not the latency plus this process's.
// The refusal is the handler's response as it is; boxing it would only add an allocation.
#[allow(clippy::result_large_err)]
pub(crate) fn admit_now(shared: &Arc<Shared>, headers: &HeaderMap) -> Result<Call, Response> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("OAuth "))
        })
        .map(str::trim);
    let org = shared.org();
    let authenticated = token.is_some_and(|t| oauth::touch_session(shared, &org, t));
    if !authenticated {
        return Err(with_limit_info(
            shared,
            RestError::invalid_session().into_response(),
        ));
    }
    let max = org.def.api.max;
    let admitted = shared
        .api_used
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |used| {
            (used < max).then_some(used + 1)
        })
        .is_ok();
    if !admitted {
        return Err(with_limit_info(
            shared,
            RestError::total_requests().into_response(),
        ));
    }
    shared.stats.api_calls.fetch_add(1, Ordering::SeqCst);
    let inflight = shared.inflight.fetch_add(1, Ordering::SeqCst) + 1;
    let call = Call {
        shared: Arc::clone(shared),
    };
    if let Some(limit) = org.def.api.concurrent_max {
        if inflight > limit {
            return Err(with_limit_info(
                shared,
                RestError::new(
                    StatusCode::FORBIDDEN,
                    "REQUEST_LIMIT_EXCEEDED",
                    "ConcurrentPerOrgLongTxn Limit exceeded.",
                )
                .into_response(),
            ));
        }
    }
    Ok(call)
}

/// Waits until the configured latency has passed since `admitted`.
pub(crate) async fn answer_after_latency(shared: &Shared, admitted: tokio::time::Instant) {
    let ms = shared.latency_ms.load(Ordering::SeqCst);
    if ms > 0 {
        tokio::time::sleep_until(admitted + Duration::from_millis(ms)).await;
    }
}

pub(crate) async fn latency(shared: &Shared) {
    answer_after_latency(shared, tokio::time::Instant::now()).await;
}
