//! `GET /services/data/vXX.X/limits` and the REST fallback for unknown resources.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};

use crate::rest::{self, json_response, with_limit_info, RestError};
use crate::sim::{lock, Simulator};
use crate::versions;

/// Salesforce counts about 2 KB of data storage per record.
const KB_PER_RECORD: u64 = 2;

fn max_remaining(max: u64, used: u64) -> Value {
    json!({"Max": max, "Remaining": max.saturating_sub(used)})
}

pub(crate) async fn limits(
    State(sim): State<Simulator>,
    Path(version): Path<String>,
    headers: HeaderMap,
) -> Response {
    let shared = &sim.shared;
    let call = match rest::admit(shared, &headers).await {
        Ok(call) => call,
        Err(resp) => return resp,
    };
    drop(call);
    if versions::parse(&version).is_none() {
        return with_limit_info(
            shared,
            RestError::not_found("The requested resource does not exist").into_response(),
        );
    }
    let usage = shared.usage();
    let org = shared.org();
    let records = lock(&shared.store).total_records();
    let storage_mb_max = org
        .def
        .storage
        .max_records
        .map_or(1024, |m| (m * KB_PER_RECORD).div_ceil(1024).max(1));
    let storage_mb_used = (records * KB_PER_RECORD).div_ceil(1024);

    let mut body = Map::new();
    body.insert(
        "ConcurrentAsyncGetReportInstances".into(),
        max_remaining(200, 0),
    );
    body.insert("ConcurrentSyncReportRuns".into(), max_remaining(20, 0));
    body.insert(
        "DailyApiRequests".into(),
        max_remaining(usage.max, usage.used),
    );
    body.insert("DailyAsyncApexExecutions".into(), max_remaining(250_000, 0));
    body.insert("DailyBulkApiBatches".into(), max_remaining(15_000, 0));
    body.insert(
        "DailyBulkV2QueryFileStorageMB".into(),
        max_remaining(976_562, 0),
    );
    body.insert("DailyBulkV2QueryJobs".into(), max_remaining(10_000, 0));
    body.insert(
        "DataStorageMB".into(),
        max_remaining(storage_mb_max, storage_mb_used),
    );
    body.insert("FileStorageMB".into(), max_remaining(20, 0));
    body.insert("PermissionSets".into(), max_remaining(1500, 0));
    body.insert("SingleEmail".into(), max_remaining(5000, 0));
    with_limit_info(shared, json_response(StatusCode::OK, &Value::Object(body)))
}

/// Any other URL: under `/services/data/` a counted call that finds nothing.
pub(crate) async fn not_found(
    State(sim): State<Simulator>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    if !uri.path().starts_with("/services/data/") {
        return StatusCode::NOT_FOUND.into_response();
    }
    let shared = &sim.shared;
    match rest::admit(shared, &headers).await {
        Ok(call) => {
            drop(call);
            with_limit_info(
                shared,
                RestError::not_found("The requested resource does not exist").into_response(),
            )
        }
        Err(resp) => resp,
    }
}
