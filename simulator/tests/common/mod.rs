//! Helpers shared by the integration tests: a test org, a running simulator, a token, and
//! an upsert call that returns status, headers and JSON body.

#![allow(dead_code)]

use reqwest::header::HeaderMap;
use reqwest::StatusCode;
use serde_json::{json, Value};
use sf_simulator::{serve, OrgDefinition, ServeOptions, SimHandle};

pub const API: &str = "v62.0";

/// A Contact object exercising every check, "today" pinned to 2025-06-01, three clients.
pub fn test_org() -> Value {
    json!({
        "org_id": "00D5g00000TESTOEAA",
        "user_id": "0055g00000TESTUAAA",
        "today": "2025-06-01",
        "api": {"max": 1000, "used": 0},
        "oauth": {"clients": [
            {"client_id": "cc-client", "client_secret": "cc-secret", "grants": ["client_credentials"]},
            {"client_id": "rt-client", "client_secret": "rt-secret", "grants": ["refresh_token"],
             "refresh_tokens": ["rt-static"]},
            {"client_id": "rot-client", "client_secret": "rot-secret", "grants": ["refresh_token"],
             "refresh_tokens": ["rot-1"], "rotate_refresh_tokens": true}
        ]},
        "objects": {"Contact": {
            "fields": {
                "LastName": {"type": "string", "label": "Last Name", "length": 80, "required": true},
                "FirstName": {"type": "string", "label": "First Name", "length": 40},
                "Email": {"type": "email"},
                "Birthdate": {"type": "date"},
                "LeadSource": {"type": "picklist", "label": "Lead Source", "restricted": true,
                               "picklist_values": ["Web", "Referral", "Partner"]},
                "External_Id__c": {"type": "string", "length": 20, "external_id": true, "unique": true},
                "Code__c": {"type": "string", "length": 20, "external_id": true, "unique": true,
                            "case_sensitive": true},
                "Badge__c": {"type": "string", "unique": true},
                "Legacy_Id__c": {"type": "string", "external_id": true},
                "Score__c": {"type": "number"},
                "Active__c": {"type": "boolean"},
                "Last_Sync__c": {"type": "datetime"},
                "Notes__c": {"type": "textarea", "label": "Notes", "length": 20},
                "Formula__c": {"type": "string", "updateable": false},
                "Secret__c": {"type": "string", "fls_editable": false}
            },
            "validation_rules": [
                {"name": "Birthdate_Not_In_Future", "active": true,
                 "error_condition": {"field": "Birthdate", "op": "after_today"},
                 "message": "Birthdate cannot be in the future", "error_field": "Birthdate"}
            ],
            "triggers": [
                {"name": "ContactTrigger", "when": {"field": "LastName", "op": "eq", "value": "Explode"},
                 "error": {"kind": "exception", "message": "System.NullPointerException: Attempt to de-reference a null object"}},
                {"name": "RollupTrigger", "timing": "after", "events": ["update"],
                 "when": {"field": "LastName", "op": "eq", "value": "LockMe"},
                 "error": {"kind": "lock"}},
                {"name": "GuardTrigger", "when": {"field": "FirstName", "op": "eq", "value": "AddError"},
                 "error": {"kind": "add_error", "message": "Guard says no", "field": "FirstName"}},
                {"name": "HeavyTrigger", "when": {"field": "LastName", "op": "eq", "value": "Heavy"},
                 "error": {"kind": "cpu_limit", "max_records": 2}}
            ],
            "lock_contention": [
                {"external_ids": ["LOCK-1"], "fail_attempts": 2}
            ]
        }}
    })
}

pub fn org_def(v: Value) -> OrgDefinition {
    serde_json::from_value(v).expect("test org parses")
}

pub async fn start(org: Value) -> SimHandle {
    serve(org_def(org), ServeOptions::default())
        .await
        .expect("simulator starts")
}

pub fn client() -> reqwest::Client {
    reqwest::Client::new()
}

pub async fn token_call(sim: &SimHandle, form: &[(&str, &str)]) -> (StatusCode, Value) {
    let resp = client()
        .post(sim.token_url())
        .form(form)
        .send()
        .await
        .expect("token request");
    let status = resp.status();
    (status, resp.json().await.expect("token body is JSON"))
}

/// A fresh access token from the client-credentials client.
pub async fn token(sim: &SimHandle) -> String {
    let (status, body) = token_call(
        sim,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", "cc-client"),
            ("client_secret", "cc-secret"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["access_token"].as_str().unwrap().to_owned()
}

pub fn upsert_url(sim: &SimHandle, object: &str, field: &str) -> String {
    format!(
        "{}/services/data/{API}/composite/sobjects/{object}/{field}",
        sim.base_url()
    )
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub text: String,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text))
    }

    pub fn limit_info(&self) -> Option<String> {
        self.headers
            .get("sforce-limit-info")
            .map(|v| v.to_str().unwrap().to_owned())
    }
}

pub async fn send(req: reqwest::RequestBuilder) -> Reply {
    let resp = req.send().await.expect("request");
    Reply {
        status: resp.status(),
        headers: resp.headers().clone(),
        text: resp.text().await.expect("body"),
    }
}

pub async fn patch_raw(token: &str, url: &str, body: impl Into<reqwest::Body>) -> Reply {
    send(
        client()
            .patch(url)
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(body),
    )
    .await
}

/// Upserts Contacts on External_Id__c; `records` are plain field maps (attributes added).
pub async fn upsert(sim: &SimHandle, token: &str, records: Value, all_or_none: bool) -> Reply {
    let records: Vec<Value> = records
        .as_array()
        .expect("records array")
        .iter()
        .map(|r| {
            let mut r = r.clone();
            r["attributes"] = json!({"type": "Contact"});
            r
        })
        .collect();
    let body = json!({"allOrNone": all_or_none, "records": records});
    let url = upsert_url(sim, "Contact", "External_Id__c");
    patch_raw(token, &url, body.to_string()).await
}

/// The single error of a failed result, as (statusCode, message, fields).
pub fn only_error(result: &Value) -> (String, String, Value) {
    assert_eq!(result["success"], json!(false), "{result}");
    assert!(
        result.get("id").is_none(),
        "a failed result has no id key: {result}"
    );
    assert_eq!(result["created"], json!(false), "{result}");
    let errors = result["errors"].as_array().expect("errors array");
    assert_eq!(errors.len(), 1, "{result}");
    (
        errors[0]["statusCode"].as_str().unwrap().to_owned(),
        errors[0]["message"].as_str().unwrap().to_owned(),
        errors[0]["fields"].clone(),
    )
}
