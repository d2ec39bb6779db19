//! axum's extractors with their rejections turned into [`ApiError`], so malformed input
//! gets the same JSON error body as every other error.

use crate::error::ApiError;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header::IF_MATCH;
use axum::http::request::Parts;
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

/// `Json<T>` with our error body.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        axum::Json::<T>::from_request(req, state)
            .await
            .map(|axum::Json(v)| ApiJson(v))
            .map_err(ApiError::from)
    }
}

/// `Query<T>` with our error body.
#[derive(Debug)]
pub struct ApiQuery<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(v)| ApiQuery(v))
            .map_err(ApiError::from)
    }
}

/// `Path<T>` with our error body.
#[derive(Debug)]
pub struct ApiPath<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(v)| ApiPath(v))
            .map_err(ApiError::from)
    }
}

/// The settings version a write is based on, from `If-Match: "<version>"`. Required:
/// without it two admins could silently overwrite each other (SPEC §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IfMatch(pub u64);

impl IfMatch {
    /// Parses one entity tag as we issue it: `"7"`. A bare `7` is taken too, since it
    /// cannot mean anything else; `*` and weak tags are refused.
    pub fn parse(raw: &str) -> Result<u64, ApiError> {
        let raw = raw.trim();
        if raw == "*" {
            return Err(ApiError::new(
                StatusCode::PRECONDITION_REQUIRED,
                "precondition_required",
                "If-Match: * is not accepted; send the ETag of the settings you read, e.g. If-Match: \"3\"",
            ));
        }
        let inner = raw
            .strip_prefix('"')
            .and_then(|r| r.strip_suffix('"'))
            .unwrap_or(raw);
        if inner.is_empty() || !inner.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ApiError::bad_request(
                "invalid_if_match",
                "If-Match must be the ETag of the settings you read, e.g. If-Match: \"3\"",
            ));
        }
        inner.parse().map_err(|_| {
            ApiError::bad_request("invalid_if_match", "the If-Match version is out of range")
        })
    }
}

impl<S: Send + Sync> FromRequestParts<S> for IfMatch {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let mut values = parts.headers.get_all(IF_MATCH).iter();
        let Some(first) = values.next() else {
            return Err(ApiError::new(
                StatusCode::PRECONDITION_REQUIRED,
                "precondition_required",
                "changing settings needs If-Match with the ETag of the settings you read (GET /v1/settings)",
            ));
        };
        if values.next().is_some() {
            return Err(ApiError::bad_request(
                "invalid_if_match",
                "send one If-Match header with one ETag",
            ));
        }
        let text = first.to_str().map_err(|_| {
            ApiError::bad_request("invalid_if_match", "If-Match is not visible ASCII")
        })?;
        Self::parse(text).map(IfMatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_match_takes_our_etags_only() {
        assert_eq!(IfMatch::parse("\"7\"").unwrap(), 7);
        assert_eq!(IfMatch::parse("7").unwrap(), 7);
        assert_eq!(
            IfMatch::parse("*").unwrap_err().code,
            "precondition_required"
        );
        for bad in [
            "W/\"7\"",
            "\"\"",
            "\"7",
            "abc",
            "\"1\", \"2\"",
            "99999999999999999999999",
        ] {
            assert_eq!(
                IfMatch::parse(bad).unwrap_err().code,
                "invalid_if_match",
                "{bad}"
            );
        }
    }
}
