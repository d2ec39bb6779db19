//! The `/__sim/` admin API: read records back, change the org while it runs, stats, latency.

mod common;

use std::time::{Duration, Instant};

use common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};

fn admin(sim: &sf_simulator::SimHandle, path: &str) -> String {
    format!("{}/__sim/{path}", sim.base_url())
}

#[tokio::test]
async fn records_read_back_sorted_by_external_id() {
    let sim = start(test_org()).await;
    let token = token(&sim).await;
    upsert(
        &sim,
        &token,
        json!([{"External_Id__c": "B", "LastName": "Second"}, {"External_Id__c": "A", "LastName": "First"}]),
        false,
    )
    .await;
    upsert(
        &sim,
        &token,
        json!([{"External_Id__c": "B", "LastName": "Second again"}]),
        false,
    )
    .await;
    let reply = send(client().get(admin(&sim, "records/Contact"))).await;
    assert_eq!(reply.status, StatusCode::OK);
    let records = reply.json();
    let records = records.as_array().unwrap();
    assert_eq!(records.len(), 2);
    let mut keys: Vec<&str> = records[0]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "Id",
            "created_at",
            "external_id",
            "fields",
            "updated_at",
            "version"
        ]
    );
    assert_eq!(records[0]["external_id"], "A");
    assert_eq!(records[0]["version"], 1);
    assert_eq!(records[1]["external_id"], "B");
    assert_eq!(records[1]["version"], 2);
    assert_eq!(
        records[1]["fields"],
        json!({"External_Id__c": "B", "LastName": "Second again"})
    );
    assert!(records[1]["Id"].as_str().unwrap().starts_with("003"));

    let reply = send(client().get(admin(&sim, "records/contact"))).await;
    assert_eq!(
        reply.json().as_array().unwrap().len(),
        2,
        "object names ignore case"
    );
    let reply = send(client().get(admin(&sim, "records/Nope"))).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    let reply = send(client().delete(admin(&sim, "records/Contact"))).await;
    assert_eq!(reply.json(), json!({"deleted": 2}));
    assert!(sim.records("Contact").unwrap().is_empty());
}

#[tokio::test]
async fn changing_validation_rules_at_runtime_changes_outcomes() {
    let sim = start(test_org()).await;
    let token = token(&sim).await;
    let future =
        json!([{"External_Id__c": "F-1", "LastName": "Future", "Birthdate": "2042-05-03"}]);
    let r = upsert(&sim, &token, future.clone(), false).await.json();
    assert_eq!(only_error(&r[0]).0, "FIELD_CUSTOM_VALIDATION_EXCEPTION");

    // The admin deactivates the rule: the same record now goes through.
    let reply = send(
        client()
            .put(admin(&sim, "objects/Contact/validation_rules"))
            .json(&json!([{"name": "Birthdate_Not_In_Future", "active": false,
                           "error_condition": {"field": "Birthdate", "op": "after_today"},
                           "message": "Birthdate cannot be in the future", "error_field": "Birthdate"}])),
    )
    .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.text);
    let r = upsert(&sim, &token, future, false).await.json();
    assert_eq!(r[0]["success"], json!(true), "{r}");

    // A new rule through the whole-org PUT: names of at least 4 characters.
    let mut org: Value = send(client().get(admin(&sim, "org"))).await.json();
    org["objects"]["Contact"]["validation_rules"] = json!([{
        "name": "Name_Too_Short",
        "error_condition": {"all": [{"field": "LastName", "op": "not_blank"},
                                    {"not": {"field": "LastName", "op": "longer_than", "value": 3}}]},
        "message": "Last name must have at least 4 letters", "error_field": "LastName"}]);
    let reply = send(client().put(admin(&sim, "org")).json(&org)).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.text);
    let r = upsert(
        &sim,
        &token,
        json!([{"External_Id__c": "N-1", "LastName": "Li"}, {"External_Id__c": "N-2", "LastName": "Long"}]),
        false,
    )
    .await
    .json();
    assert_eq!(
        only_error(&r[0]),
        (
            "FIELD_CUSTOM_VALIDATION_EXCEPTION".into(),
            "Last name must have at least 4 letters".into(),
            json!(["LastName"])
        )
    );
    assert_eq!(r[1]["success"], json!(true));
    assert_eq!(
        sim.records("Contact").unwrap().len(),
        2,
        "records survive an org replace"
    );
}

#[tokio::test]
async fn a_field_can_be_made_writable_again() {
    let sim = start(test_org()).await;
    let token = token(&sim).await;
    let rec = json!([{"External_Id__c": "W-1", "LastName": "W", "Secret__c": "s"}]);
    let r = upsert(&sim, &token, rec.clone(), false).await.json();
    assert_eq!(only_error(&r[0]).0, "INVALID_FIELD_FOR_INSERT_UPDATE");
    let reply = send(
        client()
            .put(admin(&sim, "objects/Contact/fields/Secret__c"))
            .json(&json!({"type": "string"})),
    )
    .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    let r = upsert(&sim, &token, rec, false).await.json();
    assert_eq!(r[0]["success"], json!(true), "{r}");
}

#[tokio::test]
async fn bad_admin_input_is_refused_with_a_reason() {
    let sim = start(test_org()).await;
    let mut org: Value = send(client().get(admin(&sim, "org"))).await.json();
    org["objects"]["Contact"]["validation_rules"] = json!([{"name": "r", "error_condition": {"field": "Nope", "op": "is_blank"}, "message": "m"}]);
    let reply = send(client().put(admin(&sim, "org")).json(&org)).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert!(
        reply.json()["error"]
            .as_str()
            .unwrap()
            .contains("unknown field \"Nope\""),
        "{}",
        reply.text
    );
    let reply = send(client().put(admin(&sim, "org")).body("{not json")).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    let reply = send(
        client()
            .put(admin(&sim, "objects/Widget/validation_rules"))
            .json(&json!([])),
    )
    .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    // The org is unchanged after the refusals.
    assert_eq!(sim.org().objects["Contact"].validation_rules.len(), 1);
}

#[tokio::test]
async fn org_round_trips_with_live_values() {
    let sim = start(test_org()).await;
    let token = token(&sim).await;
    upsert(
        &sim,
        &token,
        json!([{"External_Id__c": "A", "LastName": "A"}]),
        false,
    )
    .await;
    let org: Value = send(client().get(admin(&sim, "org"))).await.json();
    assert_eq!(org["api"]["used"], 1);
    assert_eq!(org["today"], "2025-06-01");
    let reply = send(client().put(admin(&sim, "org")).json(&org)).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    assert_eq!(sim.api_usage().used, 1);
    let again: Value = send(client().get(admin(&sim, "org"))).await.json();
    assert_eq!(again, org);
}

#[tokio::test]
async fn stats_and_reset() {
    let sim = start(test_org()).await;
    let token = token(&sim).await;
    upsert(
        &sim,
        &token,
        json!([{"External_Id__c": "A", "LastName": "A"}, {"External_Id__c": "B"}]),
        false,
    )
    .await;
    let stats = send(client().get(admin(&sim, "stats"))).await.json();
    assert_eq!(
        stats,
        json!({"api_calls": 1, "token_requests": 1, "upsert_calls": 1, "records_written": 1, "records_failed": 1})
    );
    let reply = send(client().post(admin(&sim, "reset-stats"))).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    let stats = send(client().get(admin(&sim, "stats"))).await.json();
    assert_eq!(
        stats,
        json!({"api_calls": 0, "token_requests": 0, "upsert_calls": 0, "records_written": 0, "records_failed": 0})
    );
}

#[tokio::test]
async fn latency_applies_to_every_call() {
    let sim = start(test_org()).await;
    let token = token(&sim).await;
    let reply = send(
        client()
            .put(admin(&sim, "latency"))
            .json(&json!({"ms": 150})),
    )
    .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    assert_eq!(
        send(client().get(admin(&sim, "latency"))).await.json(),
        json!({"ms": 150})
    );
    let started = Instant::now();
    let reply = upsert(
        &sim,
        &token,
        json!([{"External_Id__c": "A", "LastName": "A"}]),
        false,
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(started.elapsed() >= Duration::from_millis(150));
    sim.set_latency_ms(0);
    assert_eq!(sim.org().latency_ms, 0);
}
