//! The shipped demo org file against the real coral-cloud Contact data, and `load_org` errors.

mod common;

use std::collections::HashMap;
use std::path::PathBuf;

use chrono::NaiveDate;
use common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};
use sf_simulator::{load_org, serve, ServeOptions, SimError};

fn demo_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("orgs/demo-contacts.json")
}

/// The coral-cloud Contacts: in the shared data folder next to the workspace, or a small
/// sample written here when the workspace is checked out without it.
fn contacts() -> Vec<Value> {
    let shared = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/data/coral-cloud__data-Contact-large.json");
    let text = std::fs::read_to_string(&shared).unwrap_or_else(|_| {
        json!({"records": [
            {"attributes": {"type": "Contact", "referenceId": "ContactRef1"}, "LastName": "Dowsing",
             "FirstName": "Frayda", "MailingStreet": "94046 Grasskamp Junction", "MailingCity": "Honolulu",
             "MailingState": "Hawaii", "MailingPostalCode": "96815", "MailingCountry": "United States",
             "MobilePhone": "707-490-8673", "Email": "fraydadowsing@example.com",
             "LeadSource": "Online Travel Agent", "Birthdate": "1994-11-19", "External_Id__c": "10008756",
             "Guest_Type__c": "Romance Retreaters", "Interest1__c": "Dining Experiences",
             "Interest2__c": "Cultural Tours & Workshops", "Interest3__c": "Family & Kids' Activities",
             "Preferred_Name__c": "Frayda"},
            {"attributes": {"type": "Contact", "referenceId": "ContactRef2"}, "LastName": "Heinsius",
             "FirstName": "Nedi", "LeadSource": "Partnerships", "Birthdate": "2042-05-03",
             "External_Id__c": "10003177", "Email": "nediheinsius@example.com",
             "Photo_URL__c": "https://example.com/p.png", "Next_Check_in_Date__c": "2025-07-01"}
        ]})
        .to_string()
    });
    let v: Value = serde_json::from_str(&text).unwrap();
    v["records"].as_array().unwrap().clone()
}

#[tokio::test]
async fn demo_org_accepts_the_coral_cloud_contacts() {
    let mut org = load_org(demo_path()).expect("demo org loads");
    org.today = Some(NaiveDate::from_ymd_opt(2026, 1, 1).unwrap());
    let sim = serve(org, ServeOptions::default()).await.unwrap();
    let (status, body) = token_call(
        &sim,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", "crmx-demo-client"),
            ("client_secret", "crmx-demo-secret"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let token = body["access_token"].as_str().unwrap().to_owned();

    // One version per key (the last), as the exporter sends them; referenceId is tree-API only.
    let mut latest: HashMap<String, Value> = HashMap::new();
    let mut order = Vec::new();
    for mut r in contacts() {
        r["attributes"] = json!({"type": "Contact"});
        let key = r["External_Id__c"].as_str().unwrap().to_owned();
        if latest.insert(key.clone(), r).is_none() {
            order.push(key);
        }
    }
    let records: Vec<Value> = order.iter().map(|k| latest[k].clone()).collect();
    let future: Vec<&str> = records
        .iter()
        .filter(|r| r["Birthdate"].as_str().is_some_and(|b| b > "2026-01-01"))
        .map(|r| r["External_Id__c"].as_str().unwrap())
        .collect();

    let url = upsert_url(&sim, "Contact", "External_Id__c");
    let mut failed = Vec::new();
    for chunk in records.chunks(200) {
        let body = json!({"allOrNone": false, "records": chunk}).to_string();
        let reply = patch_raw(&token, &url, body).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
        for (rec, result) in chunk.iter().zip(reply.json().as_array().unwrap()) {
            if result["success"] != json!(true) {
                let (code, message, fields) = only_error(result);
                assert_eq!(code, "FIELD_CUSTOM_VALIDATION_EXCEPTION");
                assert_eq!(message, "Birthdate cannot be in the future");
                assert_eq!(fields, json!(["Birthdate"]));
                failed.push(rec["External_Id__c"].as_str().unwrap().to_owned());
            }
        }
    }
    assert_eq!(failed, future);
    let stored = sim.records("Contact").unwrap();
    assert_eq!(stored.len(), records.len() - future.len());
    assert!(stored.iter().all(|r| r.version == 1));
}

#[test]
fn load_org_explains_bad_files() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.json");
    assert!(matches!(load_org(&missing), Err(SimError::ReadOrg { .. })));

    let broken = dir.path().join("broken.json");
    std::fs::write(
        &broken,
        "{\n  \"objects\": {\n    \"Contact\": {\"fields\": {\"A\": {\"type\": \"strng\"}}}}}",
    )
    .unwrap();
    let e = load_org(&broken).unwrap_err().to_string();
    assert!(
        e.contains("broken.json") && e.contains("unknown variant `strng`") && e.contains("line 3"),
        "{e}"
    );

    let invalid = dir.path().join("invalid.json");
    std::fs::write(
        &invalid,
        r#"{"objects": {"Contact": {"fields": {"A": {"type": "string"}},
            "triggers": [{"name": "T", "error": {"kind": "add_error", "message": "m", "field": "B"}}]}}}"#,
    )
    .unwrap();
    let e = load_org(&invalid).unwrap_err().to_string();
    assert!(
        e.contains("objects.Contact.triggers[0] (T).error.field: unknown field \"B\""),
        "{e}"
    );
}
