//! Collections upsert: create versus update, and every per-record outcome.

mod common;

use common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};

fn results(reply: &Reply) -> Vec<Value> {
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    reply.json().as_array().expect("array").clone()
}

fn ok_id(result: &Value, created: bool) -> String {
    let id = result["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no id: {result}"))
        .to_owned();
    assert_eq!(
        result,
        &json!({"id": id, "success": true, "errors": [], "created": created})
    );
    assert_eq!(id.len(), 18);
    assert!(id.starts_with("003"), "{id}");
    id
}

#[tokio::test]
async fn create_then_update_sets_created_and_versions() {
    let sim = start(test_org()).await;
    let token = token(&sim).await;
    let r = results(
        &upsert(
            &sim,
            &token,
            json!([
                {"External_Id__c": "C-2", "LastName": "Dowsing", "FirstName": "Frayda"},
                {"External_Id__c": "C-1", "LastName": "Heinsius"}
            ]),
            false,
        )
        .await,
    );
    assert_eq!(r.len(), 2);
    let id2 = ok_id(&r[0], true);
    let id1 = ok_id(&r[1], true);
    assert_ne!(id1, id2);

    let r = results(
        &upsert(
            &sim,
            &token,
            json!([
                {"External_Id__c": "C-2", "FirstName": "Fray"},
                {"External_Id__c": "C-3", "LastName": "Reape"}
            ]),
            false,
        )
        .await,
    );
    assert_eq!(ok_id(&r[0], false), id2);
    ok_id(&r[1], true);

    let records = sim.records("Contact").unwrap();
    let keys: Vec<&str> = records.iter().map(|r| r.external_id.as_str()).collect();
    assert_eq!(keys, ["C-1", "C-2", "C-3"]);
    assert_eq!(records[1].id, id2);
    assert_eq!(records[1].version, 2);
    assert_eq!(records[0].version, 1);
    // An update only changes the fields it sends.
    assert_eq!(records[1].fields["LastName"], "Dowsing");
    assert_eq!(records[1].fields["FirstName"], "Fray");
    assert!(records[1].updated_at >= records[1].created_at);
    let stats = sim.stats();
    assert_eq!(
        (
            stats.upsert_calls,
            stats.records_written,
            stats.records_failed
        ),
        (2, 4, 0)
    );
}

#[tokio::test]
async fn per_record_failures_have_salesforce_shapes() {
    let sim = start(test_org()).await;
    let token = token(&sim).await;
    let long = "x".repeat(81);
    let reply = upsert(
        &sim,
        &token,
        json!([
            {"External_Id__c": "E-01", "FirstName": "NoLast"},
            {"External_Id__c": "E-02", "LastName": long},
            {"External_Id__c": "E-03", "LastName": "P", "LeadSource": "Billboard"},
            {"External_Id__c": "E-04", "LastName": "M", "Email": "not-an-email"},
            {"External_Id__c": "E-05", "LastName": "B", "Birthdate": "2042-05-03"},
            {"External_Id__c": "E-06", "LastName": "F", "Formula__c": "x"},
            {"External_Id__c": "E-07", "LastName": "S", "Secret__c": "x"},
            {"External_Id__c": "E-08", "LastName": "Explode"},
            {"External_Id__c": "E-09", "LastName": "G", "FirstName": "AddError"},
            {"External_Id__c": "E-10", "LastName": "Fine", "LeadSource": "Web", "Email": "a@b.org",
             "Birthdate": "1994-11-19", "Notes__c": "short"},
            {"External_Id__c": "E-11", "LastName": "N", "Notes__c": "this note is longer than twenty"}
        ]),
        false,
    )
    .await;
    let r = results(&reply);
    assert_eq!(r.len(), 11);
    // Exact serialisation of a failure: no id key, statusCode (not errorCode), created false.
    assert_eq!(
        r[0].to_string(),
        r#"{"success":false,"errors":[{"statusCode":"REQUIRED_FIELD_MISSING","message":"Required fields are missing: [LastName]","fields":["LastName"]}],"created":false}"#
    );
    let fls = |f: &str| {
        format!(
            "Unable to create/update fields: {f}. Please check the security settings of this field \
             and verify that it is read/write for your profile or permission set."
        )
    };
    let expected = [
        (
            "STRING_TOO_LONG",
            format!("Last Name: data value too large: {long} (max length=80)"),
            json!(["LastName"]),
        ),
        (
            "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
            "Lead Source: bad value for restricted picklist field: Billboard".into(),
            json!(["LeadSource"]),
        ),
        (
            "INVALID_EMAIL_ADDRESS",
            "Email: invalid email address: not-an-email".into(),
            json!(["Email"]),
        ),
        (
            "FIELD_CUSTOM_VALIDATION_EXCEPTION",
            "Birthdate cannot be in the future".into(),
            json!(["Birthdate"]),
        ),
        (
            "INVALID_FIELD_FOR_INSERT_UPDATE",
            fls("Formula__c"),
            json!(["Formula__c"]),
        ),
        (
            "INVALID_FIELD_FOR_INSERT_UPDATE",
            fls("Secret__c"),
            json!(["Secret__c"]),
        ),
        (
            "CANNOT_INSERT_UPDATE_ACTIVATE_ENTITY",
            "ContactTrigger: execution of BeforeInsert\n\ncaused by: System.NullPointerException: \
             Attempt to de-reference a null object\n\nTrigger.ContactTrigger: line 1, column 1"
                .into(),
            json!([]),
        ),
        (
            "FIELD_CUSTOM_VALIDATION_EXCEPTION",
            "Guard says no".into(),
            json!(["FirstName"]),
        ),
    ];
    for (i, (code, message, fields)) in expected.into_iter().enumerate() {
        let got = only_error(&r[i + 1]);
        assert_eq!(got, (code.to_owned(), message, fields), "record {}", i + 1);
    }
    ok_id(&r[9], true);
    let (code, message, _) = only_error(&r[10]);
    assert_eq!(code, "STRING_TOO_LONG");
    assert!(message.ends_with("(max length=20)"), "{message}");

    let stored = sim.records("Contact").unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].external_id, "E-10");
    let stats = sim.stats();
    assert_eq!((stats.records_written, stats.records_failed), (1, 10));
}

#[tokio::test]
async fn all_or_none_rolls_back_every_sibling() {
    let sim = start(test_org()).await;
    let token = token(&sim).await;
    ok_id(
        &results(
            &upsert(
                &sim,
                &token,
                json!([{"External_Id__c": "K-1", "LastName": "Old"}]),
                false,
            )
            .await,
        )[0],
        true,
    );
    let r = results(
        &upsert(
            &sim,
            &token,
            json!([
                {"External_Id__c": "K-1", "LastName": "New"},
                {"External_Id__c": "K-2", "FirstName": "NoLast"},
                {"External_Id__c": "K-3", "LastName": "Fine"}
            ]),
            true,
        )
        .await,
    );
    let rolled_back = (
        "ALL_OR_NONE_OPERATION_ROLLED_BACK".to_owned(),
        "Record rolled back because not all records were valid and the request was using AllOrNone header".to_owned(),
        json!([]),
    );
    assert_eq!(only_error(&r[0]), rolled_back);
    assert_eq!(only_error(&r[1]).0, "REQUIRED_FIELD_MISSING");
    assert_eq!(only_error(&r[2]), rolled_back);
    let stored = sim.records("Contact").unwrap();
    assert_eq!(stored.len(), 1, "nothing committed");
    assert_eq!(stored[0].fields["LastName"], "Old");
    assert_eq!(stored[0].version, 1);

    // allOrNone is read from the body only: in the query string it is ignored.
    let url = format!(
        "{}?allOrNone=true",
        upsert_url(&sim, "Contact", "External_Id__c")
    );
    let body = json!({"records": [
        {"attributes": {"type": "Contact"}, "External_Id__c": "K-4", "FirstName": "NoLast"},
        {"attributes": {"type": "Contact"}, "External_Id__c": "K-5", "LastName": "Fine"}
    ]});
    let r = results(&patch_raw(&token, &url, body.to_string()).await);
    assert_eq!(only_error(&r[0]).0, "REQUIRED_FIELD_MISSING");
    ok_id(&r[1], true);
}

#[tokio::test]
async fn duplicate_keys_in_one_request_fail_both_rows() {
    let sim = start(test_org()).await;
    let token = token(&sim).await;
    let r = results(
        &upsert(
            &sim,
            &token,
            json!([
                {"External_Id__c": "D-1", "LastName": "A"},
                {"External_Id__c": "D-2", "LastName": "B"},
                {"External_Id__c": "d-1", "LastName": "C"}
            ]),
            false,
        )
        .await,
    );
    assert_eq!(
        only_error(&r[0]),
        (
            "DUPLICATE_VALUE".into(),
            "Duplicate external id specified: D-1".into(),
            json!(["External_Id__c"])
        )
    );
    ok_id(&r[1], true);
    assert_eq!(
        only_error(&r[2]),
        (
            "DUPLICATE_VALUE".into(),
            "Duplicate external id specified: d-1".into(),
            json!(["External_Id__c"])
        )
    );
    assert_eq!(sim.records("Contact").unwrap().len(), 1);
}

#[tokio::test]
async fn external_id_case_rules() {
    let sim = start(test_org()).await;
    let token = token(&sim).await;
    // External_Id__c is unique and case-insensitive: "abc-1" finds "ABC-1".
    let first = ok_id(
        &results(
            &upsert(
                &sim,
                &token,
                json!([{"External_Id__c": "ABC-1", "LastName": "A"}]),
                false,
            )
            .await,
        )[0],
        true,
    );
    let again = ok_id(
        &results(
            &upsert(
                &sim,
                &token,
                json!([{"External_Id__c": "abc-1", "LastName": "B"}]),
                false,
            )
            .await,
        )[0],
        false,
    );
    assert_eq!(first, again);
    let stored = sim.records("Contact").unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].version, 2);

    // Code__c is unique and case-sensitive: "X-1" and "x-1" are two records.
    let url = upsert_url(&sim, "Contact", "Code__c");
    for (code, ext, created) in [
        ("X-1", "upper", true),
        ("x-1", "lower", true),
        ("X-1", "upper", false),
    ] {
        let body = json!({"records": [{"attributes": {"type": "Contact"}, "Code__c": code,
                                       "LastName": "C", "External_Id__c": ext}]});
        let r = results(&patch_raw(&token, &url, body.to_string()).await);
        ok_id(&r[0], created);
    }
    assert_eq!(sim.records("Contact").unwrap().len(), 3);
}

#[tokio::test]
async fn unique_fields_and_non_unique_external_ids() {
    let sim = start(test_org()).await;
    let token = token(&sim).await;
    let r = results(
        &upsert(
            &sim,
            &token,
            json!([
                {"External_Id__c": "U-1", "LastName": "A", "Badge__c": "B7", "Legacy_Id__c": "L1"},
                {"External_Id__c": "U-2", "LastName": "B", "Badge__c": "b7"},
                {"External_Id__c": "U-3", "LastName": "C", "Legacy_Id__c": "L1"},
                {"LastName": "NoKey"}
            ]),
            false,
        )
        .await,
    );
    let first = ok_id(&r[0], true);
    assert_eq!(
        only_error(&r[1]),
        (
            "DUPLICATE_VALUE".into(),
            format!("duplicate value found: Badge__c duplicates value on record with id: {first}"),
            json!([])
        )
    );
    let third = ok_id(&r[2], true);
    assert_eq!(
        only_error(&r[3]),
        (
            "MISSING_ARGUMENT".into(),
            "External_Id__c not specified".into(),
            json!([])
        )
    );

    // Two stored records share Legacy_Id__c (external id, not unique).
    let url = upsert_url(&sim, "Contact", "Legacy_Id__c");
    let body = json!({"records": [{"attributes": {"type": "Contact"}, "Legacy_Id__c": "L1", "LastName": "Z"}]});
    let r = results(&patch_raw(&token, &url, body.to_string()).await);
    assert_eq!(
        only_error(&r[0]),
        (
            "DUPLICATE_EXTERNAL_ID".into(),
            format!("Legacy_Id__c: more than one record found for external id field: [{first}, {third}]"),
            json!([])
        )
    );
}

#[tokio::test]
async fn lock_contention_fails_the_first_attempts() {
    let sim = start(test_org()).await;
    let token = token(&sim).await;
    for attempt in 1..=3 {
        let r = results(
            &upsert(
                &sim,
                &token,
                json!([{"External_Id__c": "lock-1", "LastName": "L"}]),
                false,
            )
            .await,
        );
        if attempt <= 2 {
            let (code, message, fields) = only_error(&r[0]);
            assert_eq!(code, "UNABLE_TO_LOCK_ROW");
            assert!(
                message.starts_with(
                    "unable to obtain exclusive access to this record or 1 records: 001"
                ),
                "{message}"
            );
            assert_eq!(fields, json!([]));
        } else {
            ok_id(&r[0], true);
        }
    }
}

#[tokio::test]
async fn trigger_wrapping_a_lock_and_cpu_limit() {
    let sim = start(test_org()).await;
    let token = token(&sim).await;
    // RollupTrigger fires after update only: the insert succeeds, the update fails.
    let id = ok_id(
        &results(
            &upsert(
                &sim,
                &token,
                json!([{"External_Id__c": "T-1", "LastName": "LockMe"}]),
                false,
            )
            .await,
        )[0],
        true,
    );
    let r = results(
        &upsert(
            &sim,
            &token,
            json!([{"External_Id__c": "T-1", "LastName": "LockMe", "FirstName": "x"}]),
            false,
        )
        .await,
    );
    let (code, message, _) = only_error(&r[0]);
    assert_eq!(code, "CANNOT_INSERT_UPDATE_ACTIVATE_ENTITY");
    assert!(
        message.starts_with("RollupTrigger: execution of AfterUpdate\n\ncaused by: "),
        "{message}"
    );
    assert!(
        message.contains(&format!("UNABLE_TO_LOCK_ROW, unable to obtain exclusive access to this record or 1 records: {id}")),
        "{message}"
    );
    let stored = sim.records("Contact").unwrap();
    assert_eq!(
        stored[0].version, 1,
        "an after-trigger failure saves nothing"
    );
    assert!(stored[0].fields.get("FirstName").is_none());

    // More than max_records matching records in one call: the whole call fails.
    let heavy = |n: usize| -> Value {
        let mut v: Vec<Value> = (0..n)
            .map(|i| json!({"External_Id__c": format!("H-{i}"), "LastName": "Heavy"}))
            .collect();
        v.push(json!({"External_Id__c": "H-light", "LastName": "Light"}));
        Value::Array(v)
    };
    let r = results(&upsert(&sim, &token, heavy(3), false).await);
    assert_eq!(r.len(), 4);
    for item in &r {
        assert_eq!(
            only_error(item),
            (
                "CANNOT_INSERT_UPDATE_ACTIVATE_ENTITY".into(),
                "HeavyTrigger: System.LimitException: Apex CPU time limit exceeded".into(),
                json!([])
            )
        );
    }
    assert_eq!(
        sim.records("Contact").unwrap().len(),
        1,
        "nothing of the failed call is saved"
    );
    let r = results(&upsert(&sim, &token, heavy(2), false).await);
    assert!(r.iter().all(|x| x["success"] == json!(true)), "{r:?}");
}

#[tokio::test]
async fn storage_limit_blocks_creates_not_updates() {
    let mut org = test_org();
    org["storage"] = json!({"max_records": 2});
    let sim = start(org).await;
    let token = token(&sim).await;
    let r = results(
        &upsert(
            &sim,
            &token,
            json!([
                {"External_Id__c": "S-1", "LastName": "A"},
                {"External_Id__c": "S-2", "LastName": "B"},
                {"External_Id__c": "S-3", "LastName": "C"}
            ]),
            false,
        )
        .await,
    );
    assert_eq!(
        only_error(&r[2]),
        (
            "STORAGE_LIMIT_EXCEEDED".into(),
            "storage limit exceeded".into(),
            json!([])
        )
    );
    let r = results(
        &upsert(
            &sim,
            &token,
            json!([{"External_Id__c": "S-1", "LastName": "A2"}]),
            false,
        )
        .await,
    );
    ok_id(&r[0], false);
}

#[tokio::test]
async fn values_are_converted_and_null_clears() {
    let sim = start(test_org()).await;
    let token = token(&sim).await;
    let r = results(
        &upsert(
            &sim,
            &token,
            json!([{"External_Id__c": "V-1", "LastName": "V", "Score__c": "12.5", "Active__c": "true",
                    "Last_Sync__c": "2024-01-02T03:04:05+02:00", "FirstName": "Keep", "lastname": "Lower"}]),
            false,
        )
        .await,
    );
    ok_id(&r[0], true);
    let f = &sim.records("Contact").unwrap()[0].fields;
    assert_eq!(f["Score__c"], json!(12.5));
    assert_eq!(f["Active__c"], json!(true));
    assert_eq!(f["Last_Sync__c"], json!("2024-01-02T01:04:05.000+0000"));
    // Field names are case-insensitive and stored with the defined spelling.
    assert_eq!(f["LastName"], json!("Lower"));

    let r = results(
        &upsert(
            &sim,
            &token,
            json!([{"External_Id__c": "V-1", "FirstName": null}]),
            false,
        )
        .await,
    );
    ok_id(&r[0], false);
    assert_eq!(
        sim.records("Contact").unwrap()[0].fields["FirstName"],
        Value::Null
    );
    // Clearing a required field is refused.
    let r = results(
        &upsert(
            &sim,
            &token,
            json!([{"External_Id__c": "V-1", "LastName": null}]),
            false,
        )
        .await,
    );
    assert_eq!(only_error(&r[0]).0, "REQUIRED_FIELD_MISSING");
}
