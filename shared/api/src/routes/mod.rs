//! The handlers, one file per resource, and the helpers they share for paging.

pub mod jobs;
pub mod settings;

use crate::error::ApiError;
use crm_export_core::ports::StoreError;

pub const DEFAULT_PAGE_LIMIT: u32 = 50;
pub const MAX_PAGE_LIMIT: u32 = 200;
/// Tokens we issue are far shorter; a longer one is not ours.
const MAX_PAGE_TOKEN_LEN: usize = 4096;

fn page_limit(limit: Option<u32>) -> Result<usize, ApiError> {
    match limit.unwrap_or(DEFAULT_PAGE_LIMIT) {
        n @ 1..=MAX_PAGE_LIMIT => Ok(n as usize),
        n => Err(ApiError::bad_request(
            "invalid_query",
            format!("limit must be between 1 and {MAX_PAGE_LIMIT}, not {n}"),
        )),
    }
}

fn page_token(token: Option<&str>) -> Result<Option<&str>, ApiError> {
    match token {
        Some(t) if t.is_empty() || t.len() > MAX_PAGE_TOKEN_LEN => Err(bad_page_token()),
        other => Ok(other),
    }
}

fn bad_page_token() -> ApiError {
    ApiError::bad_request(
        "invalid_page_token",
        "page_token is not a token this API issued; start again without it",
    )
}

/// A store refuses a token it did not issue as `Invalid`: that is the caller's input.
fn page_error(e: StoreError) -> ApiError {
    match e {
        StoreError::Invalid(_) => bad_page_token(),
        other => other.into(),
    }
}
