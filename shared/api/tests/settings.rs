//! `/v1/settings` and its history: SPEC §3 rules through HTTP, optimistic concurrency,
//! history content and the `SettingsChanged` event.

mod common;

use axum::http::{Method, StatusCode};
use common::{tenant, Api};
use crm_export_core::ports::{Outbox, SettingsStore};
use crm_export_core::{EventKind, DATA_INCONSISTENCY_WARNING};
use serde_json::json;

#[tokio::test]
async fn a_new_tenant_reads_the_defaults_at_version_0_without_the_pause_setting() {
    // GIVEN a tenant that never saved settings (export is off by default)
    let api = Api::empty().await;
    // WHEN it reads them
    let r = api.get("acme", "/v1/settings").await;
    // THEN it sees the defaults, version 0 as ETag, and no pause setting
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.headers["etag"], "\"0\"");
    assert_eq!(r.headers["cache-control"], "no-store");
    assert_eq!(r.body["version"], 0);
    let s = &r.body["settings"];
    assert_eq!(s["export_to_crm"], false);
    assert_eq!(s["batch_size"], 200);
    assert_eq!(s["daily_api_limit"], 100_000);
    assert_eq!(s["max_retry_attempts"], 30);
    assert!(s.get("pause_on_export_errors").is_none(), "{s}");
}

#[tokio::test]
async fn a_change_is_stored_versioned_recorded_and_published() {
    let api = Api::empty().await;
    let r = api
        .patch_settings("acme", 0, &json!({"export_to_crm": true, "batch_size": 50}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.headers["etag"], "\"1\"");
    assert_eq!(r.body["version"], 1);
    assert_eq!(r.body["settings"]["batch_size"], 50);
    // Exporting is on now, so the pause setting shows (on by default).
    assert_eq!(r.body["settings"]["pause_on_export_errors"], true);

    let stored = api.stored("acme").await.unwrap();
    assert_eq!((stored.version, stored.settings.batch_size.get()), (1, 50));
    assert!(stored.settings.export_to_crm);

    // The history names who, when, old → new.
    let h = api.get("acme", "/v1/settings/history").await;
    assert_eq!(h.status, StatusCode::OK);
    let items = h.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["version"], 1);
    assert_eq!(items[0]["actor"], "user-of-acme");
    assert_eq!(items[0]["at"], "2026-03-01T12:00:00Z");
    assert_eq!(items[0]["acknowledged_data_inconsistency"], false);
    assert_eq!(
        items[0]["changes"],
        json!([
            {"setting": "export_to_crm", "old": false, "new": true},
            {"setting": "batch_size", "old": 200, "new": 50},
        ])
    );
    assert_eq!(h.body["next_page_token"], json!(null));

    // SettingsChanged was published and nothing is left in the outbox.
    let events = api.events.events();
    assert_eq!(events.len(), 1);
    let e = &events[0];
    assert_eq!(e.kind, EventKind::SettingsChanged);
    assert_eq!(e.tenant.as_str(), "acme");
    assert_eq!(e.detail["version"], 1);
    assert_eq!(e.detail["actor"], "user-of-acme");
    assert_eq!(e.detail["changes"][1]["setting"], "batch_size");
    assert!(api
        .store
        .pending_events(&tenant("acme"))
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn turning_pause_off_needs_the_acknowledgement_and_shows_the_warning() {
    let api = Api::seeded().await; // acme: export on, pause on, version 1
    let r = api
        .patch_settings("acme", 1, &json!({"pause_on_export_errors": false}))
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(r.error_code(), "acknowledgement_required");
    assert_eq!(r.body["error"]["warning"], DATA_INCONSISTENCY_WARNING);
    // Nothing changed, nothing recorded, nothing published.
    let stored = api.stored("acme").await.unwrap();
    assert_eq!(stored.version, 1);
    assert!(stored.settings.pause_on_export_errors);
    assert!(api.events.events().is_empty());

    // `false` is no acknowledgement either.
    let r = api
        .patch_settings(
            "acme",
            1,
            &json!({"pause_on_export_errors": false, "acknowledge_data_inconsistency": false}),
        )
        .await;
    assert_eq!(r.error_code(), "acknowledgement_required");

    let r = api
        .patch_settings(
            "acme",
            1,
            &json!({"pause_on_export_errors": false, "acknowledge_data_inconsistency": true}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["settings"]["pause_on_export_errors"], false);
    assert_eq!(r.body["warning"], DATA_INCONSISTENCY_WARNING);
    let h = api.get("acme", "/v1/settings/history?limit=1").await;
    assert_eq!(h.body["items"][0]["acknowledged_data_inconsistency"], true);
    assert_eq!(
        h.body["items"][0]["changes"],
        json!([{"setting": "pause_on_export_errors", "old": true, "new": false}])
    );
    assert_eq!(
        api.events.events()[0].detail["acknowledged_data_inconsistency"],
        true
    );

    // Turning it back on needs no acknowledgement.
    let r = api
        .patch_settings("acme", 2, &json!({"pause_on_export_errors": true}))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.get("warning").is_none());
}

#[tokio::test]
async fn the_pause_setting_is_neither_shown_nor_changeable_while_export_is_off() {
    let api = Api::empty().await;
    for pause in [true, false] {
        let r = api
            .patch_settings(
                "acme",
                0,
                &json!({"pause_on_export_errors": pause, "acknowledge_data_inconsistency": true}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CONFLICT);
        assert_eq!(r.error_code(), "pause_setting_unavailable");
    }
    assert!(api.stored("acme").await.is_none());

    // Turning export off hides it again, with its value kept.
    let api = Api::seeded().await;
    let r = api
        .patch_settings("acme", 1, &json!({"export_to_crm": false}))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body["settings"].get("pause_on_export_errors").is_none());
    let r = api.get("acme", "/v1/settings").await;
    assert!(r.body["settings"].get("pause_on_export_errors").is_none());
    assert!(
        api.stored("acme")
            .await
            .unwrap()
            .settings
            .pause_on_export_errors
    );
    // ... and changing it in the same request as turning export off is refused.
    let r = api
        .patch_settings(
            "acme",
            2,
            &json!({"export_to_crm": false, "pause_on_export_errors": true}),
        )
        .await;
    assert_eq!(r.error_code(), "pause_setting_unavailable");
}

#[tokio::test]
async fn values_are_validated_and_a_bad_patch_changes_nothing() {
    let api = Api::seeded().await;
    let cases = [
        (json!({"batch_size": 150}), "batch_size"),
        (json!({"batch_size": 0}), "batch_size"),
        (json!({"batch_size": 400}), "batch_size"),
        (json!({"daily_api_limit": 999}), "daily_api_limit"),
        (json!({"daily_api_limit": 10_000_001}), "daily_api_limit"),
        (json!({"max_retry_attempts": 0}), "max_retry_attempts"),
        // A valid value beside an invalid one is not applied either.
        (
            json!({"batch_size": 50, "daily_api_limit": 5}),
            "daily_api_limit",
        ),
    ];
    for (patch, field) in cases {
        let r = api.patch_settings("acme", 1, &patch).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{patch}");
        assert_eq!(r.error_code(), "invalid_setting");
        assert_eq!(r.body["error"]["field"], field);
    }
    for ok in [25, 50, 100, 200] {
        let v = api.stored("acme").await.unwrap().version;
        let r = api
            .patch_settings("acme", v, &json!({"batch_size": ok}))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{ok}");
    }
    let stored = api.stored("acme").await.unwrap();
    assert_eq!(stored.settings.daily_api_limit, 100_000);
    assert_eq!(stored.settings.batch_size.get(), 200);
    // An empty change is refused.
    let r = api.patch_settings("acme", stored.version, &json!({})).await;
    assert_eq!(
        (r.status, r.error_code()),
        (StatusCode::UNPROCESSABLE_ENTITY, "empty_change")
    );
}

#[tokio::test]
async fn writes_need_a_current_if_match() {
    let api = Api::seeded().await;
    let before = api.stored("acme").await.unwrap();
    // Missing → 428.
    let r = api
        .send_json(
            "acme",
            Method::PATCH,
            "/v1/settings",
            &[],
            &json!({"batch_size": 50}),
        )
        .await;
    assert_eq!(r.status, StatusCode::PRECONDITION_REQUIRED);
    assert_eq!(r.error_code(), "precondition_required");
    // `*` would defeat the point → 428 too.
    let r = api
        .send_json(
            "acme",
            Method::PATCH,
            "/v1/settings",
            &[("if-match", "*")],
            &json!({"batch_size": 50}),
        )
        .await;
    assert_eq!(r.status, StatusCode::PRECONDITION_REQUIRED);
    // Stale → 412, and the current version is named.
    let r = api
        .patch_settings("acme", 0, &json!({"batch_size": 50}))
        .await;
    assert_eq!(r.status, StatusCode::PRECONDITION_FAILED);
    assert_eq!(r.error_code(), "version_conflict");
    assert!(r.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("\"1\""));
    // From the future → 412 as well.
    let r = api
        .patch_settings("acme", 9, &json!({"batch_size": 50}))
        .await;
    assert_eq!(r.status, StatusCode::PRECONDITION_FAILED);
    // Malformed → 400.
    let r = api
        .send_json(
            "acme",
            Method::PATCH,
            "/v1/settings",
            &[("if-match", "W/\"1\"")],
            &json!({"batch_size": 50}),
        )
        .await;
    assert_eq!(
        (r.status, r.error_code()),
        (StatusCode::BAD_REQUEST, "invalid_if_match")
    );
    // Nothing changed by any of them.
    assert_eq!(api.stored("acme").await.unwrap(), before);
    assert!(api.events.events().is_empty());
    let h = api.get("acme", "/v1/settings/history").await;
    assert_eq!(
        h.body["items"].as_array().unwrap().len(),
        1,
        "only the seed's change"
    );
}

#[tokio::test]
async fn two_admins_cannot_silently_overwrite_each_other() {
    let api = Api::seeded().await;
    // Both read version 1.
    let etag = api.get("acme", "/v1/settings").await.headers["etag"].clone();
    assert_eq!(etag, "\"1\"");
    let first = api
        .patch_settings("acme", 1, &json!({"batch_size": 50}))
        .await;
    assert_eq!(first.status, StatusCode::OK);
    let second = api
        .patch_settings("acme", 1, &json!({"batch_size": 100}))
        .await;
    assert_eq!(second.status, StatusCode::PRECONDITION_FAILED);
    assert_eq!(
        api.stored("acme").await.unwrap().settings.batch_size.get(),
        50
    );
}

#[tokio::test]
async fn a_change_that_changes_nothing_is_not_recorded() {
    let api = Api::seeded().await;
    let r = api
        .patch_settings("acme", 1, &json!({"batch_size": 200}))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["version"], 1);
    assert!(api.events.events().is_empty());
    assert_eq!(api.stored("acme").await.unwrap().version, 1);
}

#[tokio::test]
async fn an_event_that_could_not_be_published_stays_in_the_outbox_until_the_next_write() {
    let api = Api::seeded().await;
    api.events.set_failing(true);
    let r = api
        .patch_settings("acme", 1, &json!({"batch_size": 50}))
        .await;
    // The change itself is stored: publishing is after the write, at least once.
    assert_eq!(r.status, StatusCode::OK);
    let pending = api.store.pending_events(&tenant("acme")).await.unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].kind, EventKind::SettingsChanged);

    api.events.set_failing(false);
    let r = api
        .patch_settings("acme", 2, &json!({"batch_size": 100}))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let versions: Vec<_> = api
        .events
        .events()
        .iter()
        .map(|e| e.detail["version"].clone())
        .collect();
    assert_eq!(versions, [json!(2), json!(3)]);
    assert!(api
        .store
        .pending_events(&tenant("acme"))
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn the_history_is_newest_first_and_paginated() {
    let api = Api::seeded().await;
    for (v, size) in [(1, 25), (2, 50), (3, 100), (4, 200)] {
        let r = api
            .patch_settings("acme", v, &json!({"batch_size": size}))
            .await;
        assert_eq!(r.status, StatusCode::OK);
        api.clock.advance(chrono::Duration::minutes(1));
    }
    let mut versions = Vec::new();
    let mut path = "/v1/settings/history?limit=2".to_string();
    loop {
        let r = api.get("acme", &path).await;
        assert_eq!(r.status, StatusCode::OK);
        let items = r.body["items"].as_array().unwrap();
        assert!(items.len() <= 2);
        versions.extend(items.iter().map(|i| i["version"].as_u64().unwrap()));
        match r.body["next_page_token"].as_str() {
            Some(t) => path = format!("/v1/settings/history?limit=2&page_token={t}"),
            None => break,
        }
    }
    assert_eq!(versions, [5, 4, 3, 2, 1]);
    let h = api.get("acme", "/v1/settings/history?limit=1").await;
    assert_eq!(h.body["items"][0]["at"], "2026-03-01T12:03:00Z");
    assert_eq!(
        h.body["items"][0]["changes"],
        json!([{"setting": "batch_size", "old": 100, "new": 200}])
    );
}

#[tokio::test]
async fn a_read_only_caller_reads_but_cannot_change() {
    let api = Api::seeded().await;
    let read_only = api.token("acme", false);
    let r = api
        .raw(Method::GET, "/v1/settings", Some(&read_only), &[], None)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = api
        .raw(
            Method::PATCH,
            "/v1/settings",
            Some(&read_only),
            &[("if-match", "\"1\""), ("content-type", "application/json")],
            Some(br#"{"batch_size": 50}"#.to_vec()),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.error_code(), "forbidden");
    assert_eq!(api.stored("acme").await.unwrap().version, 1);
    let history = api
        .store
        .settings_history(&tenant("acme"), None, 10)
        .await
        .unwrap();
    assert_eq!(history.items.len(), 1);
}
