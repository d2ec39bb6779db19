//! A caller only ever sees and changes its own tenant: the tenant comes from the token,
//! never the path or the body, on every route.

mod common;

use axum::http::{Method, StatusCode};
use common::{t0, tenant, Api};
use crm_export_core::ports::{
    Commit, ErrorWrite, ExportErrorStore, ExportQueue, JobCatalog, JobStateStore, LeaseStore,
};
use crm_export_core::{
    ErrorStatus, ExportErrorItem, JobDefinition, JobId, JobRef, NewRecord, RecordError, RecordKey,
    RunId,
};
use serde_json::json;
use std::time::Duration;

const SECRET_VALUE: &str = "only-acme-knows@example.com";

/// Gives acme a job globex does not have, with an item holding a recognisable value.
async fn acme_only_job(api: &Api) -> JobRef {
    let job = JobRef::new(tenant("acme"), JobId::new("acme-only").unwrap());
    api.store
        .put_job(
            &job.tenant,
            JobDefinition {
                job_id: job.job.clone(),
                object: "Lead".into(),
                external_id_field: "Ext__c".into(),
                key_field: None,
                key_case_insensitive: false,
                field_map: Default::default(),
            },
        )
        .await
        .unwrap();
    let key = RecordKey::from_stored("k1");
    let mut fields = serde_json::Map::new();
    fields.insert("Email".into(), json!(SECRET_VALUE));
    let seqs = api
        .store
        .enqueue(
            &job,
            vec![NewRecord {
                key: key.clone(),
                fields: fields.clone(),
            }],
            t0(),
        )
        .await
        .unwrap();
    let lease = api
        .store
        .acquire_lease(&job, &RunId("t".into()), t0(), Duration::from_secs(60))
        .await
        .unwrap()
        .unwrap();
    let item = ExportErrorItem {
        key,
        seq: seqs[0],
        fields,
        error: RecordError::new("REQUIRED_FIELD_MISSING", "LastName is required"),
        status: ErrorStatus::Parked,
        attempts: 3,
        retry_attempts: 30,
        first_seen: t0(),
        last_seen: t0(),
        last_attempt_at: t0(),
        resolved_at: None,
        resolved_by_seq: None,
    };
    let state = api.store.load_state(&job).await.unwrap();
    api.store
        .commit(
            &job,
            &lease,
            t0(),
            Commit {
                state,
                errors: vec![ErrorWrite::Put(item)],
                events: vec![],
                ..Commit::default()
            },
        )
        .await
        .unwrap();
    api.store.release_lease(&job, &lease).await.unwrap();
    job
}

#[tokio::test]
async fn another_tenants_jobs_cannot_be_read_or_changed() {
    let api = Api::seeded().await;
    let job = acme_only_job(&api).await;
    let globex_write = api.token("globex", true);
    let json_ct = [("content-type", "application/json")];
    let ack = Some(br#"{"acknowledge_data_inconsistency": true}"#.to_vec());
    let cases = [
        (Method::GET, "/v1/jobs/acme-only", None),
        (Method::GET, "/v1/jobs/acme-only/errors", None),
        (
            Method::GET,
            "/v1/jobs/acme-only/errors?include_values=true",
            None,
        ),
        (Method::POST, "/v1/jobs/acme-only/retry-runs", None),
        (Method::POST, "/v1/jobs/acme-only/halt/skip", ack.clone()),
        (Method::POST, "/v1/jobs/acme-only/errors/k1/reopen", None),
    ];
    for (method, path, body) in cases {
        let r = api
            .raw(method.clone(), path, Some(&globex_write), &json_ct, body)
            .await;
        assert_eq!(
            (r.status, r.error_code()),
            (StatusCode::NOT_FOUND, "unknown_job"),
            "{method} {path}"
        );
        assert!(!r.body.to_string().contains(SECRET_VALUE));
    }
    // Globex's listings never show acme's job or values.
    let r = api.get("globex", "/v1/jobs").await;
    let ids: Vec<_> = r.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["job_id"].clone())
        .collect();
    assert_eq!(ids, [json!("contacts"), json!("touchpoints")]);
    for path in [
        "/v1/jobs/touchpoints/errors?include_values=true",
        "/v1/jobs/contacts/errors?include_values=true",
    ] {
        let r = api.get("globex", path).await;
        assert_eq!(r.status, StatusCode::OK);
        assert!(!r.body.to_string().contains(SECRET_VALUE));
    }
    // Acme's item is untouched and no retry was requested.
    let item = api
        .store
        .get_error(&job, &RecordKey::from_stored("k1"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(item.status, ErrorStatus::Parked);
    assert!(api.retry.requests().is_empty());
    // Acme itself sees it.
    let r = api
        .get("acme", "/v1/jobs/acme-only/errors?include_values=true")
        .await;
    assert!(r.body.to_string().contains(SECRET_VALUE));
}

#[tokio::test]
async fn jobs_with_the_same_id_are_each_tenants_own() {
    let api = Api::seeded().await;
    let acme_tp = JobRef::new(tenant("acme"), JobId::new("touchpoints").unwrap());
    let globex_tp = JobRef::new(tenant("globex"), JobId::new("touchpoints").unwrap());
    // Globex skips its halted record and re-opens its parked item ...
    let r = api
        .send_json(
            "globex",
            Method::POST,
            "/v1/jobs/touchpoints/halt/skip",
            &[],
            &json!({"acknowledge_data_inconsistency": true}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = api
        .as_writer(
            "globex",
            Method::POST,
            "/v1/jobs/touchpoints/errors/tp-2/reopen",
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = api
        .as_writer("globex", Method::POST, "/v1/jobs/touchpoints/retry-runs")
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    // ... which changes globex's job only.
    assert!(api
        .store
        .load_state(&globex_tp)
        .await
        .unwrap()
        .halt
        .is_none());
    assert!(api.store.load_state(&acme_tp).await.unwrap().halt.is_some());
    let tp2 = RecordKey::from_stored("tp-2");
    assert_eq!(
        api.store
            .get_error(&acme_tp, &tp2)
            .await
            .unwrap()
            .unwrap()
            .status,
        ErrorStatus::Parked
    );
    assert_eq!(
        api.store
            .get_error(&globex_tp, &tp2)
            .await
            .unwrap()
            .unwrap()
            .status,
        ErrorStatus::Open
    );
    assert_eq!(api.retry.requests()[0].0, globex_tp);
    let r = api.get("acme", "/v1/jobs/touchpoints").await;
    assert_eq!(r.body["state"], "halted");
}

#[tokio::test]
async fn settings_and_history_are_each_tenants_own() {
    let api = Api::seeded().await;
    let r = api
        .patch_settings(
            "acme",
            1,
            &json!({"batch_size": 25, "daily_api_limit": 2000}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    // Globex still reads its own settings and history.
    let r = api.get("globex", "/v1/settings").await;
    assert_eq!(r.body["settings"]["batch_size"], 200);
    assert_eq!(r.headers["etag"], "\"1\"");
    let h = api.get("globex", "/v1/settings/history").await;
    let items = h.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["actor"], "seed");
    // Acme's history page token does not open anything of acme's for globex.
    let h = api.get("acme", "/v1/settings/history?limit=1").await;
    let token = h.body["next_page_token"].as_str().unwrap().to_string();
    let r = api
        .get(
            "globex",
            &format!("/v1/settings/history?limit=1&page_token={token}"),
        )
        .await;
    for item in r.body["items"].as_array().unwrap() {
        assert_eq!(item["actor"], "seed");
    }
    // Globex's write with acme's version changes globex only (its own version is 1 too).
    let r = api
        .patch_settings("globex", 1, &json!({"batch_size": 100}))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        api.stored("acme").await.unwrap().settings.batch_size.get(),
        25
    );
    assert_eq!(
        api.stored("globex")
            .await
            .unwrap()
            .settings
            .batch_size
            .get(),
        100
    );
    // Events carry the writer's tenant.
    let tenants: Vec<_> = api
        .events
        .events()
        .iter()
        .map(|e| e.tenant.as_str().to_string())
        .collect();
    assert_eq!(tenants, ["acme", "globex"]);
}
