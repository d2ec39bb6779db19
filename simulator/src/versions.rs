//! API versions: `GET /services/data/` and the `vXX.X` segment of every REST URL.

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{json, Value};

use crate::rest::json_response;

pub(crate) const OLDEST: u32 = 31;
pub(crate) const NEWEST: u32 = 66;
/// sObject Collections upsert exists from API 46.0.
const COLLECTIONS_UPSERT_SINCE: u32 = 46;

/// The major version of a `vXX.X` path segment the org serves.
pub(crate) fn parse(segment: &str) -> Option<u32> {
    let (major, minor) = segment.strip_prefix('v')?.split_once('.')?;
    let major: u32 = major.parse().ok()?;
    (minor == "0" && (OLDEST..=NEWEST).contains(&major)).then_some(major)
}

pub(crate) fn supports_collections_upsert(segment: &str) -> bool {
    parse(segment).is_some_and(|v| v >= COLLECTIONS_UPSERT_SINCE)
}

/// Release name of a version: three releases a year, v62.0 was Winter '25.
fn label(version: u32) -> String {
    let offset = version as i64 - 62;
    let year = 25 + offset.div_euclid(3);
    let season = ["Winter", "Spring", "Summer"][offset.rem_euclid(3) as usize];
    format!("{season} '{year:02}")
}

pub(crate) fn list() -> Value {
    Value::Array(
        (OLDEST..=NEWEST)
            .map(|v| {
                json!({
                    "label": label(v),
                    "url": format!("/services/data/v{v}.0"),
                    "version": format!("{v}.0"),
                })
            })
            .collect(),
    )
}

/// `GET /services/data/`: needs no session and does not count against the allocation.
pub(crate) async fn versions() -> Response {
    json_response(StatusCode::OK, &list())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_parsing() {
        assert_eq!(label(62), "Winter '25");
        assert_eq!(label(61), "Summer '24");
        assert_eq!(label(31), "Summer '14");
        assert_eq!(label(66), "Spring '26");
        assert_eq!(parse("v62.0"), Some(62));
        assert_eq!(parse("v99.0"), None);
        assert_eq!(parse("62.0"), None);
        assert!(!supports_collections_upsert("v45.0"));
        assert!(supports_collections_upsert("v46.0"));
    }
}
