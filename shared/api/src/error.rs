//! The API's one error type and the one helper every error response comes from, so every
//! 4xx and 5xx — ours, the engine's, and axum's own rejections — has the same body:
//! `{"error":{"code":"...","message":"..."}}` plus, for some codes, a `warning` or `field`.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use crm_export_core::engine::OpsError;
use crm_export_core::ports::StoreError;
use crm_export_core::{SettingsError, DATA_INCONSISTENCY_WARNING};
use serde::Serialize;

/// An error answer: HTTP status, machine-readable code, human message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status} {code}: {message}")]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Shown with `acknowledgement_required`: what turning pause off risks.
    pub warning: Option<&'static str>,
    /// The offending setting of `invalid_setting`.
    pub field: Option<&'static str>,
}

/// The JSON body of every error response.
#[derive(Debug, Serialize)]
pub struct ErrorBody<'a> {
    pub error: ErrorDetail<'a>,
}

#[derive(Debug, Serialize)]
pub struct ErrorDetail<'a> {
    pub code: &'a str,
    pub message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warning: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<&'a str>,
}

/// The one place error responses are built.
pub fn error_response(
    status: StatusCode,
    code: &str,
    message: &str,
    warning: Option<&str>,
    field: Option<&str>,
) -> Response {
    let body = ErrorBody {
        error: ErrorDetail {
            code,
            message,
            warning,
            field,
        },
    };
    let mut resp = (status, Json(body)).into_response();
    if status == StatusCode::UNAUTHORIZED {
        // RFC 9110: a 401 names the scheme that would be accepted.
        resp.headers_mut().insert(
            axum::http::header::WWW_AUTHENTICATE,
            axum::http::HeaderValue::from_static("Bearer"),
        );
    }
    resp
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            warning: None,
            field: None,
        }
    }

    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthenticated", message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }

    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }

    /// A failure the caller cannot fix. The cause is logged here and not shown, since it
    /// may name internal resources.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "request failed");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "an internal error stopped the request; try again, and report it if it persists",
        )
    }

    fn with_warning(mut self) -> Self {
        self.warning = Some(DATA_INCONSISTENCY_WARNING);
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        error_response(
            self.status,
            self.code,
            &self.message,
            self.warning,
            self.field,
        )
    }
}

impl From<SettingsError> for ApiError {
    fn from(e: SettingsError) -> Self {
        // The code comes from the domain, so the CLI and the API agree on it.
        let status = match &e {
            SettingsError::InvalidValue { .. } | SettingsError::EmptyChange => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            SettingsError::AcknowledgementRequired | SettingsError::PauseNotAvailable => {
                StatusCode::CONFLICT
            }
        };
        let mut err = ApiError::new(status, e.code(), e.to_string());
        match e {
            SettingsError::InvalidValue { field, .. } => err.field = Some(field),
            SettingsError::AcknowledgementRequired => err = err.with_warning(),
            SettingsError::PauseNotAvailable | SettingsError::EmptyChange => {}
        }
        err
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(_) => {
                tracing::warn!(error = %e, "store unavailable");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "store_unavailable",
                    "the state store is unavailable; try again shortly",
                )
            }
            StoreError::VersionConflict { found, .. } => version_conflict(found),
            StoreError::LeaseLost => ApiError::conflict(
                "job_busy",
                "a run of the job took over while the change was being made; nothing was changed, try again",
            ),
            StoreError::NotFound(_) | StoreError::Invalid(_) => ApiError::internal(e),
        }
    }
}

impl From<OpsError> for ApiError {
    fn from(e: OpsError) -> Self {
        let code = e.code();
        match e {
            OpsError::UnknownJob(ref job) => {
                ApiError::not_found(code, format!("no job {:?}", job.job.as_str()))
            }
            OpsError::NoSuchError(_) => ApiError::not_found(code, e.to_string()),
            OpsError::NotHalted(_) | OpsError::NotParked { .. } | OpsError::Busy(_) => {
                ApiError::conflict(code, e.to_string())
            }
            OpsError::AcknowledgementRequired => {
                ApiError::conflict(code, e.to_string()).with_warning()
            }
            OpsError::Store(s) => s.into(),
        }
    }
}

/// `412 version_conflict`: the write was based on an old version.
pub fn version_conflict(current: u64) -> ApiError {
    ApiError::new(
        StatusCode::PRECONDITION_FAILED,
        "version_conflict",
        format!(
            "the settings were changed since you read them (current version {current}); read them again and re-apply your change with If-Match: \"{current}\""
        ),
    )
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        let status = r.status();
        let code = match &r {
            JsonRejection::JsonSyntaxError(_) => "malformed_json",
            JsonRejection::JsonDataError(_) => "invalid_body",
            JsonRejection::MissingJsonContentType(_) => "unsupported_media_type",
            _ if status == StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
            _ => "invalid_body",
        };
        // axum answers 422 for a body of the wrong shape; we keep 422 for rule violations
        // of well-formed input (invalid_setting) and answer 400 for the shape itself.
        let status = if status == StatusCode::UNPROCESSABLE_ENTITY {
            StatusCode::BAD_REQUEST
        } else {
            status
        };
        let message = match code {
            "payload_too_large" => format!(
                "the request body is larger than the {} bytes accepted",
                crate::MAX_BODY_BYTES
            ),
            "unsupported_media_type" => {
                "send the body as JSON with Content-Type: application/json".to_string()
            }
            _ => r.body_text(),
        };
        ApiError::new(status, code, message)
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        ApiError::bad_request("invalid_query", r.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        match r {
            PathRejection::FailedToDeserializePathParams(_) => {
                ApiError::bad_request("invalid_path", r.body_text())
            }
            // A handler asked for a parameter its route does not have: a bug.
            other => ApiError::internal(other.body_text()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_errors_keep_the_domain_code() {
        let e: ApiError = SettingsError::AcknowledgementRequired.into();
        assert_eq!(e.status, StatusCode::CONFLICT);
        assert_eq!(e.code, "acknowledgement_required");
        assert_eq!(e.warning, Some(DATA_INCONSISTENCY_WARNING));
        let e: ApiError = SettingsError::InvalidValue {
            field: "batch_size",
            message: "no".into(),
        }
        .into();
        assert_eq!(
            (e.status, e.code, e.field),
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_setting",
                Some("batch_size")
            )
        );
    }

    #[test]
    fn store_outages_are_503_and_hide_nothing_secret() {
        let e: ApiError = StoreError::Unavailable("table arn:aws:... throttled".into()).into();
        assert_eq!(e.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(!e.message.contains("arn:"));
    }
}
