//! Request-level errors: the whole call fails with `[{"message","errorCode",...}]`.

mod common;

use common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};

fn contact(ext: &str, extra: Value) -> Value {
    let mut r = json!({"attributes": {"type": "Contact"}, "External_Id__c": ext, "LastName": "L"});
    for (k, v) in extra.as_object().unwrap() {
        r[k] = v.clone();
    }
    r
}

fn body(records: Vec<Value>) -> String {
    json!({"allOrNone": false, "records": records}).to_string()
}

#[tokio::test]
async fn more_than_200_records() {
    let sim = start(test_org()).await;
    let token = token(&sim).await;
    let records = (0..201)
        .map(|i| contact(&format!("R-{i}"), json!({})))
        .collect();
    let url = upsert_url(&sim, "Contact", "External_Id__c");
    let reply = patch_raw(&token, &url, body(records)).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        reply.text,
        r#"[{"message":"record limit reached. cannot submit more than 200 records into this call","errorCode":"EXCEEDED_ID_LIMIT","fields":[]}]"#
    );
    let records = (0..200)
        .map(|i| contact(&format!("R-{i}"), json!({})))
        .collect();
    let reply = patch_raw(&token, &url, body(records)).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json().as_array().unwrap().len(), 200);
}

#[tokio::test]
async fn malformed_json_body() {
    let sim = start(test_org()).await;
    let token = token(&sim).await;
    let url = upsert_url(&sim, "Contact", "External_Id__c");
    let reply = patch_raw(&token, &url, r#"{"records": [{"attributes": "#).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    let body = reply.json();
    assert_eq!(body[0]["errorCode"], "JSON_PARSER_ERROR");
    assert_eq!(body[0]["fields"], json!([]));
    assert!(
        body[0]["message"]
            .as_str()
            .unwrap()
            .contains("at [line:1, column:"),
        "{body}"
    );

    let reply = patch_raw(&token, &url, r#"{"records": []}"#).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.json()[0]["errorCode"], "REQUIRED_FIELD_MISSING");
}

/// The column just past the quoted value, 1-based, as Salesforce's parser reports it.
fn column_after(text: &str, needle: &str) -> usize {
    text.find(needle).unwrap() + needle.len() + 1
}

#[tokio::test]
async fn undeserialisable_values_fail_the_whole_request() {
    let sim = start(test_org()).await;
    let token = token(&sim).await;
    let url = upsert_url(&sim, "Contact", "External_Id__c");
    for (field, value, jackson_type) in [
        ("Birthdate", json!("2017-13-45"), "date"),
        ("Birthdate", json!("not a date"), "date"),
        ("Last_Sync__c", json!("2017-10-17 00:00:00"), "datetime"),
        ("Score__c", json!("abc"), "double"),
        ("Active__c", json!("yes"), "boolean"),
    ] {
        let text = body(vec![
            contact("OK-1", json!({})),
            contact("BAD-1", json!({ field: value.clone() })),
        ]);
        let reply = patch_raw(&token, &url, text.clone()).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{field}");
        let shown = value.as_str().unwrap();
        let column = column_after(&text, &format!("\"{shown}\""));
        assert_eq!(
            reply.json(),
            json!([{
                "message": format!("Cannot deserialize instance of {jackson_type} from VALUE_STRING value {shown} or request may be missing a required field at [line:1, column:{column}]"),
                "errorCode": "JSON_PARSER_ERROR",
                "fields": []
            }]),
            "{field}"
        );
    }
    assert!(
        sim.records("Contact").unwrap().is_empty(),
        "the valid sibling is not saved either"
    );
    assert_eq!(sim.stats().records_written, 0);
}

#[tokio::test]
async fn unknown_field() {
    let sim = start(test_org()).await;
    let token = token(&sim).await;
    let url = upsert_url(&sim, "Contact", "External_Id__c");
    let reply = patch_raw(
        &token,
        &url,
        body(vec![contact("F-1", json!({"Foo__c": 1}))]),
    )
    .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        reply.text,
        r#"[{"message":"No such column 'Foo__c' on sobject of type Contact","errorCode":"INVALID_FIELD","fields":[]}]"#
    );
}

#[tokio::test]
async fn unknown_object_or_external_id_field() {
    let sim = start(test_org()).await;
    let token = token(&sim).await;
    let text = body(vec![contact("N-1", json!({}))]);
    let reply = patch_raw(
        &token,
        &upsert_url(&sim, "Widget__c", "External_Id__c"),
        text.clone(),
    )
    .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(
        reply.text,
        r#"[{"message":"The requested resource does not exist","errorCode":"NOT_FOUND"}]"#
    );
    for field in ["LastName", "Nope__c"] {
        let reply = patch_raw(&token, &upsert_url(&sim, "Contact", field), text.clone()).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND);
        assert_eq!(
            reply.json(),
            json!([{"message": format!("Provided external ID field does not exist or is not accessible: {field}"),
                    "errorCode": "NOT_FOUND"}])
        );
    }
    // Collections upsert arrived in API 46.0.
    let old = upsert_url(&sim, "Contact", "External_Id__c").replace(API, "v45.0");
    let reply = patch_raw(&token, &old, text.clone()).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    // Only PATCH upserts.
    let reply = send(
        client()
            .post(upsert_url(&sim, "Contact", "External_Id__c"))
            .bearer_auth(&token)
            .body(text),
    )
    .await;
    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(reply.json()[0]["errorCode"], "METHOD_NOT_ALLOWED");
}

#[tokio::test]
async fn missing_or_invalid_token() {
    let sim = start(test_org()).await;
    let url = upsert_url(&sim, "Contact", "External_Id__c");
    let text = body(vec![contact("A-1", json!({}))]);
    let expected = r#"[{"message":"Session expired or invalid","errorCode":"INVALID_SESSION_ID"}]"#;
    let reply = send(client().patch(&url).body(text.clone())).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(reply.text, expected);
    let reply = patch_raw("00Dbogus!AQ123", &url, text).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(reply.text, expected);
    assert_eq!(
        sim.stats().api_calls,
        0,
        "unauthenticated calls do not count"
    );
    assert_eq!(sim.api_usage().used, 0);
}
