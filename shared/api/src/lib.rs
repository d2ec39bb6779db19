//! The settings and job-status HTTP API (SPEC §8): one axum [`Router`] that serves in
//! Lambda (through `lambda_http`, claims from API Gateway's JWT authorizer — see
//! [`lambda`], feature `lambda`) and locally (HS256 bearer tokens — see [`jwt`] and the
//! `crm-export-api-local` binary). Handlers parse, call the domain or the engine, and map
//! the result; every error goes through [`error::error_response`].
//!
//! Routes (the contract is `openapi.yaml` beside this crate):
//! `GET|PATCH /v1/settings`, `GET /v1/settings/history`, `GET /v1/jobs`,
//! `GET /v1/jobs/{job_id}`, `GET /v1/jobs/{job_id}/errors`,
//! `POST /v1/jobs/{job_id}/retry-runs`, `POST /v1/jobs/{job_id}/halt/skip`,
//! `POST /v1/jobs/{job_id}/errors/{key}/reopen`.

pub mod auth;
pub mod error;
pub mod extract;
pub mod jwt;
#[cfg(feature = "lambda")]
pub mod lambda;
pub mod local;
pub mod retry;
mod routes;
pub mod state;
pub mod views;

pub use auth::{Caller, Claims, Writer, WRITE_SCOPE};
pub use crm_export_core::engine::publish_outbox;
pub use error::{error_response, ApiError};
pub use jwt::JwtVerifier;
pub use retry::{RecordingRetryRequester, RetryRequester};
pub use state::ApiState;

use axum::extract::{MatchedPath, Request};
use axum::http::header::CACHE_CONTROL;
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use std::sync::Arc;

/// The largest request body accepted (a settings patch is a few hundred bytes).
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// The API's routes. Expects an outer layer to insert [`Claims`] for authenticated
/// requests (handlers answer 401 without them): use [`local_router`] or
/// `lambda::lambda_router`.
pub fn router(state: ApiState) -> Router {
    use routes::{jobs, settings};
    Router::new()
        .route(
            "/v1/settings",
            get(settings::get_settings).patch(settings::patch_settings),
        )
        .route("/v1/settings/history", get(settings::get_history))
        .route("/v1/jobs", get(jobs::list_jobs))
        .route("/v1/jobs/{job_id}", get(jobs::get_job))
        .route("/v1/jobs/{job_id}/errors", get(jobs::list_errors))
        .route(
            "/v1/jobs/{job_id}/retry-runs",
            post(jobs::request_retry_run),
        )
        .route("/v1/jobs/{job_id}/halt/skip", post(jobs::skip_halted))
        .route(
            "/v1/jobs/{job_id}/errors/{key}/reopen",
            post(jobs::reopen_error),
        )
        // After the routes: it applies to those registered before it.
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(not_found)
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn(observe))
        .with_state(state)
}

/// The router behind HS256 bearer-token verification, as served locally.
pub fn local_router(state: ApiState, verifier: JwtVerifier) -> Router {
    router(state).layer(middleware::from_fn_with_state(
        Arc::new(verifier),
        jwt::require_bearer,
    ))
}

async fn not_found() -> ApiError {
    ApiError::not_found("not_found", "no such route; see openapi.yaml")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not take that method; see the Allow header",
    )
}

/// Logs each request by its route template (never the raw path or query, which can hold
/// record keys) and marks responses as not cacheable: they are per tenant and may hold
/// personal data.
async fn observe(req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let started = std::time::Instant::now();
    let mut resp = next.run(req).await;
    resp.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    tracing::info!(%method, %route, status = resp.status().as_u16(), elapsed_ms = started.elapsed().as_millis() as u64, "request");
    resp
}
