//! `/v1/jobs`: listing, status, ExportErrors (personal data hidden by default), retry runs,
//! skipping the halted record and re-opening parked items.

mod common;

use axum::http::{Method, StatusCode};
use common::{t0, tenant, Api};
use crm_export_core::ports::{ExportErrorStore, JobStateStore};
use crm_export_core::{ErrorStatus, EventKind, JobId, JobRef, RecordKey};
use serde_json::json;

fn touchpoints() -> JobRef {
    JobRef::new(tenant("acme"), JobId::new("touchpoints").unwrap())
}

#[tokio::test]
async fn jobs_are_listed_with_their_status() {
    let api = Api::seeded().await;
    let r = api.get("acme", "/v1/jobs").await;
    assert_eq!(r.status, StatusCode::OK);
    let items = r.body["items"].as_array().unwrap();
    let ids: Vec<_> = items
        .iter()
        .map(|j| j["job_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["contacts", "touchpoints"]);
    assert_eq!(items[0]["state"], "running");
    assert_eq!(items[1]["state"], "halted");
    assert_eq!(r.body["next_page_token"], json!(null));
}

#[tokio::test]
async fn the_status_of_a_halted_job_says_where_and_why() {
    let api = Api::seeded().await;
    api.clock.advance(chrono::Duration::minutes(10));
    let r = api.get("acme", "/v1/jobs/touchpoints").await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let s = &r.body;
    assert_eq!(s["job_id"], "touchpoints");
    assert_eq!(s["definition"]["object"], "bizible2__Bizible_Touchpoint__c");
    assert_eq!(
        s["definition"]["external_id_field"],
        "bizible2__UniqueId__c"
    );
    assert_eq!(s["definition"]["key_field"], "id");
    assert_eq!(s["state"], "halted");
    assert_eq!(s["export_to_crm"], true);
    assert_eq!(s["pause_on_export_errors"], true);
    assert_eq!(
        (
            s["cursor"].as_u64(),
            s["head"].as_u64(),
            s["backlog"].as_u64()
        ),
        (Some(4), Some(8), Some(4))
    );
    let halt = &s["halt"];
    assert_eq!(halt["seq"], 5);
    assert_eq!(halt["record_key"], "tp-5");
    assert_eq!(halt["error_code"], "FIELD_CUSTOM_VALIDATION_EXCEPTION");
    assert_eq!(halt["error_message"], "Amount must be a number");
    assert_eq!(halt["error_fields"], json!(["bizible2__Amount__c"]));
    assert_eq!(halt["attempts"], 1);
    assert!(halt["since"].is_string());
    assert_eq!(s["block"], json!(null));
    assert_eq!(
        (s["open_errors"].as_u64(), s["parked_errors"].as_u64()),
        (Some(1), Some(1))
    );
    // Enqueued two hours before t0, read ten minutes after it.
    assert_eq!(s["oldest_unexported_age_seconds"], 2 * 3600 + 600);
    assert_eq!(s["oldest_unexported_at"], "2026-03-01T10:00:00Z");
}

#[tokio::test]
async fn unknown_and_malformed_job_ids() {
    let api = Api::seeded().await;
    let r = api.get("acme", "/v1/jobs/nope").await;
    assert_eq!(
        (r.status, r.error_code()),
        (StatusCode::NOT_FOUND, "unknown_job")
    );
    let r = api.get("acme", "/v1/jobs/Not%20A%20Job").await;
    assert_eq!(
        (r.status, r.error_code()),
        (StatusCode::BAD_REQUEST, "invalid_path")
    );
    for path in ["/v1/jobs/nope/errors", "/v1/jobs/nope/retry-runs"] {
        let r = if path.ends_with("errors") {
            api.get("acme", path).await
        } else {
            api.as_writer("acme", Method::POST, path).await
        };
        assert_eq!(
            (r.status, r.error_code()),
            (StatusCode::NOT_FOUND, "unknown_job"),
            "{path}"
        );
    }
}

#[tokio::test]
async fn export_errors_show_field_names_but_no_values_unless_asked() {
    let api = Api::seeded().await;
    let r = api.get("acme", "/v1/jobs/touchpoints/errors").await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let items = r.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 3);
    // Newest last attempt first.
    let keys: Vec<_> = items.iter().map(|i| i["key"].as_str().unwrap()).collect();
    assert_eq!(keys, ["tp-5", "tp-2", "tp-3"]);
    let first = &items[0];
    assert_eq!(first["status"], "open");
    assert_eq!(first["error"]["code"], "FIELD_CUSTOM_VALIDATION_EXCEPTION");
    assert_eq!(first["error"]["fields"], json!(["bizible2__Amount__c"]));
    assert_eq!(first["field_names"], json!(["amount", "email", "id"]));
    assert!(first.get("values").is_none());
    // No value of the record appears anywhere in the response.
    let text = r.body.to_string();
    assert!(!text.contains("@example.com"), "{text}");
    assert!(!text.contains("12,50"), "{text}");

    for q in ["include_values=false", ""] {
        let r = api
            .get("acme", &format!("/v1/jobs/touchpoints/errors?{q}"))
            .await;
        assert!(!r.body.to_string().contains("@example.com"));
    }

    let r = api
        .get("acme", "/v1/jobs/touchpoints/errors?include_values=true")
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let v = &r.body["items"][0]["values"];
    assert_eq!(v["email"], "tp-5@example.com");
    assert_eq!(v["amount"], "12,50");
}

#[tokio::test]
async fn export_errors_filter_by_status_and_code_and_paginate() {
    let api = Api::seeded().await;
    let r = api
        .get("acme", "/v1/jobs/touchpoints/errors?status=parked")
        .await;
    let keys: Vec<_> = r.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["key"].clone())
        .collect();
    assert_eq!(keys, [json!("tp-2")]);
    let r = api
        .get("acme", "/v1/jobs/touchpoints/errors?code=NOPE")
        .await;
    assert_eq!(r.body["items"], json!([]));
    let r = api
        .get(
            "acme",
            "/v1/jobs/touchpoints/errors?code=FIELD_CUSTOM_VALIDATION_EXCEPTION&status=resolved",
        )
        .await;
    assert_eq!(r.body["items"][0]["key"], "tp-3");
    assert_eq!(r.body["items"][0]["resolved_by_seq"], 3);

    let mut keys = Vec::new();
    let mut path = "/v1/jobs/touchpoints/errors?limit=1".to_string();
    for _ in 0..10 {
        let r = api.get("acme", &path).await;
        assert_eq!(r.status, StatusCode::OK);
        keys.extend(
            r.body["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["key"].as_str().unwrap().to_string()),
        );
        match r.body["next_page_token"].as_str() {
            Some(t) => path = format!("/v1/jobs/touchpoints/errors?limit=1&page_token={t}"),
            None => break,
        }
    }
    assert_eq!(keys, ["tp-5", "tp-2", "tp-3"]);
}

#[tokio::test]
async fn a_retry_run_is_requested_asynchronously() {
    let api = Api::seeded().await;
    let r = api
        .as_writer("acme", Method::POST, "/v1/jobs/touchpoints/retry-runs")
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{:?}", r.body);
    assert_eq!(r.body["job_id"], "touchpoints");
    assert_eq!(r.body["status"], "requested");
    let run_id = r.body["run_id"].as_str().unwrap();
    let requests = api.retry.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].0, touchpoints());
    assert_eq!(requests[0].1 .0, run_id);
}

#[tokio::test]
async fn a_retry_run_is_refused_while_export_is_off_or_the_bus_is_down() {
    let api = Api::seeded().await;
    api.retry.set_failing(true);
    let r = api
        .as_writer("acme", Method::POST, "/v1/jobs/touchpoints/retry-runs")
        .await;
    assert_eq!(
        (r.status, r.error_code()),
        (StatusCode::SERVICE_UNAVAILABLE, "retry_unavailable")
    );
    api.retry.set_failing(false);

    let r = api
        .patch_settings("acme", 1, &json!({"export_to_crm": false}))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = api
        .as_writer("acme", Method::POST, "/v1/jobs/touchpoints/retry-runs")
        .await;
    assert_eq!(
        (r.status, r.error_code()),
        (StatusCode::CONFLICT, "export_disabled")
    );
    assert!(api.retry.requests().is_empty());
}

#[tokio::test]
async fn skipping_the_halted_record_needs_the_acknowledgement_and_parks_it() {
    let api = Api::seeded().await;
    let skip = "/v1/jobs/touchpoints/halt/skip";
    for body in [json!({}), json!({"acknowledge_data_inconsistency": false})] {
        let r = api.send_json("acme", Method::POST, skip, &[], &body).await;
        assert_eq!(
            (r.status, r.error_code()),
            (StatusCode::CONFLICT, "acknowledgement_required")
        );
        assert!(r.body["error"]["warning"].is_string());
    }
    assert!(api
        .store
        .load_state(&touchpoints())
        .await
        .unwrap()
        .halt
        .is_some());

    let r = api
        .send_json(
            "acme",
            Method::POST,
            skip,
            &[],
            &json!({"acknowledge_data_inconsistency": true}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["key"], "tp-5");
    assert_eq!(r.body["status"], "parked");
    assert!(r.body.get("values").is_none());

    // The job moved on past the record; its item is parked.
    let state = api.store.load_state(&touchpoints()).await.unwrap();
    assert!(state.halt.is_none());
    assert_eq!(state.cursor, 5);
    let item = api
        .store
        .get_error(&touchpoints(), &RecordKey::from_stored("tp-5"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(item.status, ErrorStatus::Parked);
    let s = api.get("acme", "/v1/jobs/touchpoints").await;
    assert_eq!(s.body["state"], "running");
    assert_eq!(s.body["parked_errors"], 2);
    // The resume was published (through the engine's outbox publishing).
    assert!(api
        .events
        .events()
        .iter()
        .any(|e| e.kind == EventKind::ExportJobResumed));

    // Nothing is halted any more.
    let r = api
        .send_json(
            "acme",
            Method::POST,
            skip,
            &[],
            &json!({"acknowledge_data_inconsistency": true}),
        )
        .await;
    assert_eq!(
        (r.status, r.error_code()),
        (StatusCode::CONFLICT, "not_halted")
    );
}

#[tokio::test]
async fn a_parked_item_can_be_reopened() {
    let api = Api::seeded().await;
    let r = api
        .as_writer(
            "acme",
            Method::POST,
            "/v1/jobs/touchpoints/errors/tp-2/reopen",
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["status"], "open");
    assert_eq!(r.body["retry_attempts"], 0);
    let item = api
        .store
        .get_error(&touchpoints(), &RecordKey::from_stored("tp-2"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(item.status, ErrorStatus::Open);

    // Only parked items can be; unknown keys are 404.
    let r = api
        .as_writer(
            "acme",
            Method::POST,
            "/v1/jobs/touchpoints/errors/tp-2/reopen",
        )
        .await;
    assert_eq!(
        (r.status, r.error_code()),
        (StatusCode::CONFLICT, "not_parked")
    );
    let r = api
        .as_writer(
            "acme",
            Method::POST,
            "/v1/jobs/touchpoints/errors/tp-99/reopen",
        )
        .await;
    assert_eq!(
        (r.status, r.error_code()),
        (StatusCode::NOT_FOUND, "unknown_error_item")
    );
    // A key with reserved characters travels percent-encoded.
    let r = api
        .as_writer(
            "acme",
            Method::POST,
            "/v1/jobs/touchpoints/errors/a%2Fb%20c/reopen",
        )
        .await;
    assert_eq!(r.error_code(), "unknown_error_item");
    assert!(r.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("a/b c"));
}

#[tokio::test]
async fn operator_actions_wait_for_a_running_job() {
    use crm_export_core::ports::LeaseStore;
    use crm_export_core::RunId;
    let api = Api::seeded().await;
    // GIVEN a run holds the job's lease
    let lease = api
        .store
        .acquire_lease(
            &touchpoints(),
            &RunId("run-1".into()),
            t0(),
            std::time::Duration::from_secs(60),
        )
        .await
        .unwrap();
    assert!(lease.is_some());
    // THEN skip and re-open are refused, and nothing changed
    let r = api
        .send_json(
            "acme",
            Method::POST,
            "/v1/jobs/touchpoints/halt/skip",
            &[],
            &json!({"acknowledge_data_inconsistency": true}),
        )
        .await;
    assert_eq!(
        (r.status, r.error_code()),
        (StatusCode::CONFLICT, "job_busy")
    );
    let r = api
        .as_writer(
            "acme",
            Method::POST,
            "/v1/jobs/touchpoints/errors/tp-2/reopen",
        )
        .await;
    assert_eq!(r.error_code(), "job_busy");
    assert!(api
        .store
        .load_state(&touchpoints())
        .await
        .unwrap()
        .halt
        .is_some());
}

#[tokio::test]
async fn every_change_needs_the_write_scope() {
    let api = Api::seeded().await;
    let read_only = api.token("acme", false);
    let json = [("content-type", "application/json")];
    for (path, body) in [
        ("/v1/jobs/touchpoints/retry-runs", None),
        (
            "/v1/jobs/touchpoints/halt/skip",
            Some(br#"{"acknowledge_data_inconsistency":true}"#.to_vec()),
        ),
        ("/v1/jobs/touchpoints/errors/tp-2/reopen", None),
    ] {
        let r = api
            .raw(Method::POST, path, Some(&read_only), &json, body)
            .await;
        assert_eq!(
            (r.status, r.error_code()),
            (StatusCode::FORBIDDEN, "forbidden"),
            "{path}"
        );
    }
    assert!(api.retry.requests().is_empty());
    let state = api.store.load_state(&touchpoints()).await.unwrap();
    assert!(state.halt.is_some());
    let item = api
        .store
        .get_error(&touchpoints(), &RecordKey::from_stored("tp-2"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(item.status, ErrorStatus::Parked);
}
