//! The `/__sim/` admin API: JSON over HTTP, no authentication, the same operations as the
//! methods of [`crate::Simulator`].

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::json;

use crate::error::SimError;
use crate::faults::Fault;
use crate::org::{FieldDef, OrgDefinition, ValidationRule};
use crate::sim::Simulator;

pub(crate) fn routes() -> Router<Simulator> {
    Router::new()
        .route("/__sim/org", get(get_org).put(put_org))
        .route(
            "/__sim/objects/{object}/validation_rules",
            put(put_validation_rules),
        )
        .route("/__sim/objects/{object}/fields/{field}", put(put_field))
        .route(
            "/__sim/records/{object}",
            get(get_records).delete(delete_records),
        )
        .route("/__sim/stats", get(get_stats))
        .route("/__sim/reset-stats", post(reset_stats))
        .route(
            "/__sim/faults",
            get(get_faults).post(post_faults).delete(delete_faults),
        )
        .route("/__sim/latency", get(get_latency).put(put_latency))
        .route("/__sim/api-usage", get(get_api_usage).put(put_api_usage))
        .route("/__sim/expire-sessions", post(expire_sessions))
        .route(
            "/__sim/oauth/clients/{client_id}/refresh-tokens",
            post(issue_refresh_token),
        )
}

fn error(status: StatusCode, message: impl std::fmt::Display) -> Response {
    (status, Json(json!({"error": message.to_string()}))).into_response()
}

fn sim_error(e: SimError) -> Response {
    let status = match e {
        SimError::UnknownObject(_) | SimError::UnknownClient(_) => StatusCode::NOT_FOUND,
        _ => StatusCode::BAD_REQUEST,
    };
    error(status, e)
}

/// The body as `T`, or the 400 response explaining why not (boxed: a Response is large).
fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, Box<Response>> {
    serde_json::from_slice(body).map_err(|e| Box::new(error(StatusCode::BAD_REQUEST, e)))
}

fn done(result: Result<(), SimError>) -> Response {
    match result {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => sim_error(e),
    }
}

async fn get_org(State(sim): State<Simulator>) -> Response {
    Json(sim.org()).into_response()
}

async fn put_org(State(sim): State<Simulator>, body: Bytes) -> Response {
    match parse::<OrgDefinition>(&body) {
        Ok(org) => done(sim.replace_org(org)),
        Err(resp) => *resp,
    }
}

async fn put_validation_rules(
    State(sim): State<Simulator>,
    Path(object): Path<String>,
    body: Bytes,
) -> Response {
    match parse::<Vec<ValidationRule>>(&body) {
        Ok(rules) => done(sim.set_validation_rules(&object, rules)),
        Err(resp) => *resp,
    }
}

async fn put_field(
    State(sim): State<Simulator>,
    Path((object, field)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    match parse::<FieldDef>(&body) {
        Ok(def) => done(sim.set_field(&object, &field, def)),
        Err(resp) => *resp,
    }
}

async fn get_records(State(sim): State<Simulator>, Path(object): Path<String>) -> Response {
    match sim.records(&object) {
        Ok(records) => Json(records).into_response(),
        Err(e) => sim_error(e),
    }
}

async fn delete_records(State(sim): State<Simulator>, Path(object): Path<String>) -> Response {
    match sim.delete_records(&object) {
        Ok(n) => Json(json!({"deleted": n})).into_response(),
        Err(e) => sim_error(e),
    }
}

async fn get_stats(State(sim): State<Simulator>) -> Response {
    Json(sim.stats()).into_response()
}

async fn reset_stats(State(sim): State<Simulator>) -> Response {
    sim.reset_stats();
    StatusCode::NO_CONTENT.into_response()
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    Many(Vec<Fault>),
    One(Fault),
}

async fn get_faults(State(sim): State<Simulator>) -> Response {
    Json(sim.faults()).into_response()
}

async fn post_faults(State(sim): State<Simulator>, body: Bytes) -> Response {
    // Parsed as one fault first so that a mistake gets serde's message, not "no variant".
    let faults = match serde_json::from_slice::<Fault>(&body) {
        Ok(f) => vec![f],
        Err(one_err) => match parse::<OneOrMany>(&body) {
            Ok(OneOrMany::Many(list)) => list,
            Ok(OneOrMany::One(f)) => vec![f],
            Err(_) => return error(StatusCode::BAD_REQUEST, one_err),
        },
    };
    for f in faults {
        sim.push_fault(f);
    }
    Json(sim.faults()).into_response()
}

async fn delete_faults(State(sim): State<Simulator>) -> Response {
    sim.clear_faults();
    StatusCode::NO_CONTENT.into_response()
}

#[derive(Deserialize)]
struct Latency {
    ms: u64,
}

async fn get_latency(State(sim): State<Simulator>) -> Response {
    Json(json!({"ms": sim.latency_ms()})).into_response()
}

async fn put_latency(State(sim): State<Simulator>, body: Bytes) -> Response {
    match parse::<Latency>(&body) {
        Ok(l) => {
            sim.set_latency_ms(l.ms);
            StatusCode::NO_CONTENT.into_response()
        }
        Err(resp) => *resp,
    }
}

#[derive(Deserialize)]
struct Used {
    used: u64,
}

async fn get_api_usage(State(sim): State<Simulator>) -> Response {
    Json(sim.api_usage()).into_response()
}

async fn put_api_usage(State(sim): State<Simulator>, body: Bytes) -> Response {
    match parse::<Used>(&body) {
        Ok(u) => {
            sim.set_api_used(u.used);
            StatusCode::NO_CONTENT.into_response()
        }
        Err(resp) => *resp,
    }
}

async fn expire_sessions(State(sim): State<Simulator>) -> Response {
    sim.expire_sessions();
    StatusCode::NO_CONTENT.into_response()
}

async fn issue_refresh_token(
    State(sim): State<Simulator>,
    Path(client_id): Path<String>,
) -> Response {
    match sim.issue_refresh_token(&client_id) {
        Ok(token) => (StatusCode::CREATED, Json(json!({"refresh_token": token}))).into_response(),
        Err(e) => sim_error(e),
    }
}
