//! The client against the project's Salesforce simulator, over real HTTP(S): every case
//! goes through the token endpoint, the collections upsert and the simulator's faults.

use crm_export_core::ports::{CrmClient, UpsertRequest};
use crm_export_core::{ApiUsage, RecordOutcome, RejectKind, RequestFailureKind};
use crm_export_salesforce::{
    CredentialSink, Credentials, InMemoryCredentialSink, RetryPolicy, SalesforceClient,
    SalesforceConfig,
};
use serde_json::{json, Map, Value};
use sf_simulator::{Fault, FaultKind, OrgDefinition, ServeOptions, SimHandle};
use std::sync::Arc;
use std::time::{Duration, Instant};

const OBJECT: &str = "Contact";
const EXT: &str = "External_Id__c";
const API_MAX: u64 = 15_000;
const API_USED: u64 = 100;

fn org() -> OrgDefinition {
    serde_json::from_value(json!({
        "api": {"max": API_MAX, "used": API_USED},
        "oauth": {"clients": [
            {"client_id": "cc-app", "client_secret": "cc-secret", "grants": ["client_credentials"]},
            {"client_id": "rt-app", "client_secret": "rt-secret", "grants": ["refresh_token"],
             "refresh_tokens": ["rt-initial"], "rotate_refresh_tokens": true}
        ]},
        "objects": {"Contact": {
            "fields": {
                "External_Id__c": {"type": "string", "external_id": true, "unique": true, "length": 40},
                "LastName": {"type": "string", "required": true, "length": 80},
                "Email": {"type": "email"},
                "Birthdate": {"type": "date"},
                "Score__c": {"type": "number", "fls_editable": false}
            },
            "validation_rules": [{
                "name": "NotInvalid",
                "error_condition": {"field": "LastName", "op": "eq", "value": "Invalid"},
                "message": "Last name must not be Invalid",
                "error_field": "LastName"
            }]
        }}
    }))
    .expect("the test org parses")
}

async fn start_with(org: OrgDefinition, tls: bool) -> SimHandle {
    let opts = ServeOptions {
        tls,
        ..ServeOptions::default()
    };
    sf_simulator::serve(org, opts)
        .await
        .expect("the simulator starts")
}

async fn start() -> SimHandle {
    start_with(org(), false).await
}

fn client_credentials() -> Credentials {
    Credentials::ClientCredentials {
        client_id: "cc-app".into(),
        client_secret: "cc-secret".into(),
    }
}

fn refresh_token(token: &str) -> Credentials {
    Credentials::RefreshToken {
        client_id: "rt-app".into(),
        client_secret: Some("rt-secret".into()),
        refresh_token: token.into(),
    }
}

/// Short backoffs keep the retry tests fast; the shape of the policy is what is tested.
fn config(sim: &SimHandle, credentials: Credentials) -> SalesforceConfig {
    let mut cfg = SalesforceConfig::new(sim.base_url(), credentials);
    cfg.retry = RetryPolicy {
        max_attempts: 3,
        base_backoff_ms: 20,
        max_backoff_ms: 100,
        min_attempt_ms: 50,
    };
    cfg.connect_timeout_ms = 2_000;
    cfg
}

fn client(sim: &SimHandle) -> SalesforceClient {
    SalesforceClient::new(config(sim, client_credentials())).expect("client builds")
}

fn contact(key: &str, fields: Value) -> Map<String, Value> {
    let mut m = fields.as_object().cloned().unwrap_or_default();
    m.insert(EXT.into(), key.into());
    m
}

fn ok(key: &str) -> Map<String, Value> {
    contact(key, json!({"LastName": format!("Last {key}")}))
}

fn request(records: Vec<Map<String, Value>>) -> UpsertRequest {
    UpsertRequest {
        object: OBJECT.into(),
        external_id_field: EXT.into(),
        records,
        timeout: Duration::from_secs(10),
    }
}

fn stored_keys(sim: &SimHandle) -> Vec<String> {
    sim.records(OBJECT)
        .unwrap()
        .into_iter()
        .map(|r| r.external_id)
        .collect()
}

fn accepted(o: &RecordOutcome) -> bool {
    matches!(o, RecordOutcome::Accepted { .. })
}

#[tokio::test]
async fn upserts_and_maps_mixed_outcomes_by_position() {
    let sim = start().await;
    let c = client(&sim);
    let records = vec![
        ok("K-1"),
        contact("K-2", json!({})), // LastName missing
        ok("K-3"),
        contact("K-4", json!({"LastName": "Invalid"})), // validation rule
        contact("K-5", json!({"LastName": "Doe", "Score__c": 3})), // no FLS edit access
        ok("K-6"),
    ];
    let reply = c.upsert(&request(records)).await;
    let out = reply.result.expect("the call succeeds");
    assert_eq!(out.len(), 6);
    assert_eq!(reply.api_calls, 1);

    let ids: Vec<(String, String)> = sim
        .records(OBJECT)
        .unwrap()
        .into_iter()
        .map(|r| (r.external_id, r.id))
        .collect();
    let id_of = |k: &str| {
        ids.iter()
            .find(|(key, _)| key == k)
            .map(|(_, id)| id.clone())
    };
    for (i, key) in [(0, "K-1"), (2, "K-3"), (5, "K-6")] {
        assert_eq!(
            out[i],
            RecordOutcome::Accepted {
                crm_id: id_of(key),
                created: true
            },
            "position {i}"
        );
        assert!(id_of(key).is_some());
    }
    match &out[1] {
        RecordOutcome::Rejected {
            error,
            kind: RejectKind::Data,
        } => {
            assert_eq!(error.code, "REQUIRED_FIELD_MISSING");
            assert_eq!(error.fields, vec!["LastName".to_string()]);
        }
        other => panic!("position 1: {other:?}"),
    }
    match &out[3] {
        RecordOutcome::Rejected {
            error,
            kind: RejectKind::Data,
        } => {
            assert_eq!(error.code, "FIELD_CUSTOM_VALIDATION_EXCEPTION");
            assert_eq!(error.message, "Last name must not be Invalid");
            assert_eq!(error.fields, vec!["LastName".to_string()]);
        }
        other => panic!("position 3: {other:?}"),
    }
    match &out[4] {
        RecordOutcome::Rejected {
            error,
            kind: RejectKind::Configuration,
        } => {
            assert_eq!(error.code, "INVALID_FIELD_FOR_INSERT_UPDATE");
        }
        other => panic!("position 4: {other:?}"),
    }
    assert_eq!(stored_keys(&sim), vec!["K-1", "K-3", "K-6"]);

    // The same keys again are updates.
    let again = c.upsert(&request(vec![ok("K-1")])).await.result.unwrap();
    assert_eq!(
        again,
        vec![RecordOutcome::Accepted {
            crm_id: id_of("K-1"),
            created: false
        }]
    );
    assert_eq!(c.metrics().token_requests, 1, "the session is reused");
}

#[tokio::test]
async fn a_failed_record_without_id_gets_its_kind_and_fields() {
    let sim = start().await;
    let c = client(&sim);
    let out = c
        .upsert(&request(vec![contact(
            "K-1",
            json!({"LastName": "Doe", "Email": "not-an-email"}),
        )]))
        .await
        .result
        .unwrap();
    match &out[0] {
        RecordOutcome::Rejected {
            error,
            kind: RejectKind::Data,
        } => {
            assert_eq!(error.code, "INVALID_EMAIL_ADDRESS");
            assert_eq!(error.fields, vec!["Email".to_string()]);
        }
        other => panic!("{other:?}"),
    }
    assert!(stored_keys(&sim).is_empty());
}

#[tokio::test]
async fn a_duplicate_key_in_one_request_fails_both_as_data() {
    let sim = start().await;
    let c = client(&sim);
    let out = c
        .upsert(&request(vec![ok("K-1"), ok("K-2"), ok("K-1")]))
        .await
        .result
        .unwrap();
    for i in [0, 2] {
        assert!(
            matches!(&out[i], RecordOutcome::Rejected { kind: RejectKind::Data, error }
                if error.code == "DUPLICATE_VALUE" && error.message.contains("Duplicate external id specified")),
            "{i}: {:?}",
            out[i]
        );
    }
    assert!(accepted(&out[1]));
}

#[tokio::test]
async fn a_refused_token_is_a_revoked_connection_and_sends_no_record() {
    let sim = start().await;
    for (creds, code) in [
        (
            Credentials::ClientCredentials {
                client_id: "cc-app".into(),
                client_secret: "wrong".into(),
            },
            "invalid_client",
        ),
        (
            Credentials::ClientCredentials {
                client_id: "nobody".into(),
                client_secret: "x".into(),
            },
            "invalid_client_id",
        ),
        (refresh_token("rt-never-issued"), "invalid_grant"),
    ] {
        let c = SalesforceClient::new(config(&sim, creds)).unwrap();
        let reply = c.upsert(&request(vec![ok("K-1")])).await;
        let f = reply.result.expect_err("refused");
        assert_eq!(
            (f.kind, f.code.as_str()),
            (RequestFailureKind::ConnectionRevoked, code)
        );
        assert_eq!(reply.api_calls, 0);
        assert_eq!(
            c.metrics().token_requests,
            1,
            "a refused grant is not retried"
        );
    }
    let stats = sim.stats();
    assert_eq!(stats.upsert_calls, 0);
    assert_eq!(stats.token_requests, 3);
    assert!(stored_keys(&sim).is_empty());
}

#[tokio::test]
async fn an_inactive_user_is_a_revoked_connection() {
    let mut def = org();
    def.oauth.user_active = false;
    let sim = start_with(def, false).await;
    let f = client(&sim)
        .upsert(&request(vec![ok("K-1")]))
        .await
        .result
        .unwrap_err();
    assert_eq!(
        (f.kind, f.code.as_str()),
        (RequestFailureKind::ConnectionRevoked, "inactive_user")
    );
}

#[tokio::test]
async fn an_expired_session_is_refreshed_once_and_the_call_replayed() {
    let sim = start().await;
    let c = client(&sim);
    let first = c.upsert(&request(vec![ok("K-1")])).await;
    assert!(first.result.unwrap().iter().all(accepted));
    assert_eq!(first.api_calls, 1);

    sim.expire_sessions();
    let second = c
        .upsert(&request(vec![ok("K-2"), contact("K-3", json!({}))]))
        .await;
    let out = second.result.expect("replayed after one refresh");
    assert!(accepted(&out[0]));
    assert!(matches!(
        &out[1],
        RecordOutcome::Rejected {
            kind: RejectKind::Data,
            ..
        }
    ));
    // The refused call and its replay both count.
    assert_eq!(second.api_calls, 2);
    let m = c.metrics();
    assert_eq!(
        (m.token_requests, m.reauthentications, m.api_calls),
        (2, 1, 3)
    );
    assert_eq!(sim.stats().token_requests, 2);
    assert_eq!(stored_keys(&sim), vec!["K-1", "K-2"]);
}

#[tokio::test]
async fn concurrent_calls_share_one_refresh() {
    let sim = start().await;
    let c = Arc::new(client(&sim));
    assert!(c.upsert(&request(vec![ok("K-0")])).await.result.is_ok());
    sim.expire_sessions();
    let calls: Vec<_> = (1..=4)
        .map(|i| {
            let c = c.clone();
            tokio::spawn(async move { c.upsert(&request(vec![ok(&format!("K-{i}"))])).await })
        })
        .collect();
    for call in calls {
        assert!(call.await.unwrap().result.unwrap().iter().all(accepted));
    }
    assert_eq!(
        c.metrics().token_requests,
        2,
        "one initial token and one refresh for all four"
    );
    assert_eq!(stored_keys(&sim).len(), 5);
}

#[tokio::test]
async fn a_session_refused_twice_is_an_auth_failure() {
    let sim = start().await;
    let c = client(&sim);
    assert!(c.upsert(&request(vec![ok("K-1")])).await.result.is_ok());
    sim.push_fault(Fault {
        kind: FaultKind::Http {
            status: 401,
            content_type: "application/json".into(),
            body: r#"[{"message":"Session expired or invalid","errorCode":"INVALID_SESSION_ID"}]"#
                .into(),
            commit: false,
        },
        count: 2,
    });
    let reply = c.upsert(&request(vec![ok("K-2")])).await;
    let f = reply.result.unwrap_err();
    assert_eq!(
        (f.kind, f.code.as_str()),
        (RequestFailureKind::AuthFailed, "INVALID_SESSION_ID")
    );
    assert_eq!(reply.api_calls, 2);
    assert_eq!(c.metrics().token_requests, 2, "exactly one refresh");
}

#[tokio::test]
async fn a_bulk_style_400_invalid_session_is_refreshed_and_replayed() {
    let sim = start().await;
    let c = client(&sim);
    assert!(c.upsert(&request(vec![ok("K-1")])).await.result.is_ok());
    sim.push_fault(Fault::once(FaultKind::Http {
        status: 400,
        content_type: "application/json".into(),
        body: r#"{"exceptionCode":"InvalidSessionId","exceptionMessage":"Invalid session id"}"#
            .into(),
        commit: false,
    }));
    let reply = c.upsert(&request(vec![ok("K-2")])).await;
    assert!(reply.result.unwrap().iter().all(accepted));
    assert_eq!(reply.api_calls, 2);
    assert_eq!(
        (c.metrics().token_requests, c.metrics().reauthentications),
        (2, 1)
    );
}

#[tokio::test]
async fn the_daily_limit_stops_without_reauthenticating() {
    let sim = start().await;
    let c = client(&sim);
    assert!(c.upsert(&request(vec![ok("K-1")])).await.result.is_ok());
    let tokens_before = sim.stats().token_requests;

    sim.push_fault(Fault::once(FaultKind::RequestLimit));
    let reply = c.upsert(&request(vec![ok("K-2")])).await;
    let f = reply.result.unwrap_err();
    assert_eq!(
        (f.kind, f.code.as_str()),
        (RequestFailureKind::DailyLimit, "REQUEST_LIMIT_EXCEEDED")
    );
    assert_eq!(f.http_status, Some(403));
    assert_eq!(reply.api_calls, 1, "not retried");
    assert_eq!(
        sim.stats().token_requests,
        tokens_before,
        "no re-authentication on 403"
    );
    assert_eq!(c.metrics().token_requests, 1);

    // The org's own allocation spent gives the same answer.
    sim.set_api_used(API_MAX);
    let f = c
        .upsert(&request(vec![ok("K-3")]))
        .await
        .result
        .unwrap_err();
    assert_eq!(f.kind, RequestFailureKind::DailyLimit);
    assert_eq!(sim.stats().token_requests, tokens_before);
    assert_eq!(stored_keys(&sim), vec!["K-1"]);
}

#[tokio::test]
async fn the_concurrency_limit_is_its_own_kind() {
    let mut def = org();
    def.api.concurrent_max = Some(1);
    def.latency_ms = 300;
    let sim = start_with(def, false).await;
    let c = Arc::new(client(&sim));
    assert!(c.upsert(&request(vec![ok("K-0")])).await.result.is_ok());
    let (r1, r2) = (request(vec![ok("K-1")]), request(vec![ok("K-2")]));
    let (a, b) = tokio::join!(c.upsert(&r1), c.upsert(&r2));
    let kinds: Vec<_> = [a.result, b.result]
        .into_iter()
        .map(|r| r.err().map(|f| f.kind))
        .collect();
    assert!(kinds.contains(&None), "one call goes through: {kinds:?}");
    assert!(
        kinds.contains(&Some(RequestFailureKind::ConcurrencyLimit)),
        "{kinds:?}"
    );
}

const HTML_503: &str =
    "<html><head><title>Service Unavailable</title></head><body>Maintenance</body></html>";

fn html_503(count: u32) -> Fault {
    Fault {
        kind: FaultKind::Http {
            status: 503,
            content_type: "text/html".into(),
            body: HTML_503.into(),
            commit: false,
        },
        count,
    }
}

#[tokio::test]
async fn a_persistent_html_503_is_retried_then_unavailable() {
    let sim = start().await;
    let c = client(&sim);
    sim.push_fault(html_503(10));
    let started = Instant::now();
    let reply = c.upsert(&request(vec![ok("K-1")])).await;
    let f = reply.result.unwrap_err();
    assert_eq!(
        (f.kind, f.code.as_str(), f.http_status),
        (RequestFailureKind::Unavailable, "HTTP_503", Some(503))
    );
    assert_eq!(f.message, "non-JSON body: Service Unavailable");
    assert_eq!(reply.api_calls, 3, "max_attempts");
    assert_eq!(c.metrics().retries, 2);
    // Two backoffs of at least half their ceilings (10 ms, 20 ms).
    assert!(
        started.elapsed() >= Duration::from_millis(30),
        "{:?}",
        started.elapsed()
    );
    assert!(stored_keys(&sim).is_empty());
}

#[tokio::test]
async fn a_503_that_clears_is_retried_to_success() {
    let sim = start().await;
    let c = client(&sim);
    sim.push_fault(html_503(2));
    let reply = c.upsert(&request(vec![ok("K-1")])).await;
    assert!(reply.result.unwrap().iter().all(accepted));
    assert_eq!(reply.api_calls, 3);
    assert_eq!(stored_keys(&sim), vec!["K-1"]);
}

#[tokio::test]
async fn a_503_after_the_write_is_retried_as_an_update() {
    let sim = start().await;
    let c = client(&sim);
    sim.push_fault(Fault {
        kind: FaultKind::Http {
            status: 503,
            content_type: "text/html".into(),
            body: HTML_503.into(),
            commit: true,
        },
        count: 1,
    });
    let out = c.upsert(&request(vec![ok("K-1")])).await.result.unwrap();
    // The first attempt created the record; the client could not know, the retry updated it.
    assert!(
        matches!(out[0], RecordOutcome::Accepted { created: false, .. }),
        "{out:?}"
    );
    assert_eq!(stored_keys(&sim), vec!["K-1"]);
}

#[tokio::test]
async fn malformed_json_is_an_unknown_outcome() {
    let sim = start().await;
    let c = client(&sim);
    sim.push_fault(Fault::once(FaultKind::MalformedJson));
    let reply = c.upsert(&request(vec![ok("K-1"), ok("K-2")])).await;
    let f = reply.result.unwrap_err();
    assert_eq!(
        (f.kind, f.code.as_str()),
        (RequestFailureKind::Unavailable, "BAD_RESPONSE")
    );
    assert_eq!(
        reply.api_calls, 1,
        "an unreadable 200 is not retried: the writes happened"
    );
}

#[tokio::test]
async fn a_result_array_of_the_wrong_length_is_an_unknown_outcome() {
    let sim = start().await;
    let c = client(&sim);
    sim.push_fault(Fault::once(FaultKind::WrongLength));
    let f = c
        .upsert(&request(vec![ok("K-1"), ok("K-2"), ok("K-3")]))
        .await
        .result
        .unwrap_err();
    assert_eq!(
        (f.kind, f.code.as_str()),
        (RequestFailureKind::Unavailable, "BAD_RESPONSE")
    );
    assert!(
        f.message.contains("2 results for 3 records"),
        "{}",
        f.message
    );
}

#[tokio::test]
async fn a_bad_date_refuses_the_whole_request() {
    let sim = start().await;
    let c = client(&sim);
    let reply = c
        .upsert(&request(vec![
            ok("K-1"),
            contact("K-2", json!({"LastName": "Doe", "Birthdate": "2024-02-31"})),
            ok("K-3"),
        ]))
        .await;
    let f = reply.result.unwrap_err();
    assert_eq!(
        (f.kind, f.code.as_str(), f.http_status),
        (
            RequestFailureKind::ContentRefused,
            "JSON_PARSER_ERROR",
            Some(400)
        )
    );
    // The message says what went wrong, but not the record's value.
    assert!(
        f.message.contains("Cannot deserialize instance of date"),
        "{}",
        f.message
    );
    assert!(!f.message.contains("2024-02-31"), "{}", f.message);
    assert_eq!(reply.api_calls, 1);
    assert!(
        stored_keys(&sim).is_empty(),
        "nothing of the request was written"
    );
}

#[tokio::test]
async fn an_unknown_object_or_external_id_field_is_misconfigured() {
    let sim = start().await;
    let c = client(&sim);
    let mut req = request(vec![ok("K-1")]);
    req.object = "Nope__c".into();
    let f = c.upsert(&req).await.result.unwrap_err();
    assert_eq!(
        (f.kind, f.code.as_str()),
        (RequestFailureKind::Misconfigured, "NOT_FOUND")
    );
    let mut req = request(vec![ok("K-1")]);
    req.external_id_field = "LastName".into();
    let f = c.upsert(&req).await.result.unwrap_err();
    assert_eq!(
        (f.kind, f.code.as_str()),
        (RequestFailureKind::Misconfigured, "NOT_FOUND")
    );
}

#[tokio::test]
async fn a_rotated_refresh_token_is_written_back_and_the_old_one_dies() {
    let sim = start().await;
    let sink = Arc::new(InMemoryCredentialSink::holding("rt-initial"));
    let c = SalesforceClient::with_credential_sink(
        config(&sim, refresh_token("rt-initial")),
        sink.clone(),
    )
    .unwrap();
    assert!(c
        .upsert(&request(vec![ok("K-1")]))
        .await
        .result
        .unwrap()
        .iter()
        .all(accepted));
    let rotated = sink.current().expect("a token is stored");
    assert_ne!(rotated, "rt-initial");
    assert_eq!(
        (
            sink.rotations(),
            c.metrics().rotated_refresh_tokens,
            c.metrics().sink_failures
        ),
        (1, 1, 0)
    );

    // The old token no longer works anywhere.
    let stale = SalesforceClient::new(config(&sim, refresh_token("rt-initial"))).unwrap();
    let f = stale
        .upsert(&request(vec![ok("K-2")]))
        .await
        .result
        .unwrap_err();
    assert_eq!(
        (f.kind, f.code.as_str()),
        (RequestFailureKind::ConnectionRevoked, "invalid_grant")
    );

    // The stored one does, and the running client keeps rotating with what it holds.
    let fresh = SalesforceClient::new(config(&sim, refresh_token(&rotated))).unwrap();
    assert!(fresh.upsert(&request(vec![ok("K-3")])).await.result.is_ok());
    // `fresh` rotated again without a sink: the running client's token is now dead too,
    // which is why a durable sink must be shared by every process of one connection.
    sim.expire_sessions();
    let f = c
        .upsert(&request(vec![ok("K-4")]))
        .await
        .result
        .unwrap_err();
    assert_eq!(f.kind, RequestFailureKind::ConnectionRevoked);
}

#[tokio::test]
async fn a_token_rotated_by_another_process_is_reread_from_the_store() {
    let sim = start().await;
    let sink = Arc::new(InMemoryCredentialSink::holding("rt-initial"));
    let a = SalesforceClient::with_credential_sink(
        config(&sim, refresh_token("rt-initial")),
        sink.clone(),
    )
    .unwrap();
    assert!(a.upsert(&request(vec![ok("K-1")])).await.result.is_ok());
    // B started with the token A has since rotated away, but shares A's store.
    let b = SalesforceClient::with_credential_sink(
        config(&sim, refresh_token("rt-initial")),
        sink.clone(),
    )
    .unwrap();
    let reply = b.upsert(&request(vec![ok("K-2")])).await;
    assert!(reply.result.is_ok(), "{:?}", reply.result);
    assert_eq!(
        b.metrics().token_requests,
        2,
        "one refused, one with the stored token"
    );
    assert_eq!(sink.rotations(), 2);
    assert_eq!(sink.latest_refresh_token().await.unwrap(), sink.current());
}

#[tokio::test]
async fn tls_with_the_simulators_ca_trusted() {
    let sim = start_with(org(), true).await;
    assert!(sim.base_url().starts_with("https://"));
    let pem = sim.ca_cert_pem().expect("a CA for TLS").to_owned();

    let mut cfg = config(&sim, client_credentials());
    cfg.extra_root_ca_pem = Some(pem);
    let c = SalesforceClient::new(cfg).unwrap();
    assert!(c
        .upsert(&request(vec![ok("K-1")]))
        .await
        .result
        .unwrap()
        .iter()
        .all(accepted));
    assert_eq!(stored_keys(&sim), vec!["K-1"]);

    // Without the CA the certificate is not trusted: nothing is sent.
    let untrusting = client(&sim);
    let reply = untrusting.upsert(&request(vec![ok("K-2")])).await;
    assert_eq!(
        reply.result.unwrap_err().kind,
        RequestFailureKind::Unavailable
    );
    assert_eq!(reply.api_calls, 0);
    assert_eq!(stored_keys(&sim), vec!["K-1"]);
}

#[tokio::test]
async fn limit_info_is_read_into_usage() {
    let sim = start().await;
    let c = client(&sim);
    let reply = c.upsert(&request(vec![ok("K-1")])).await;
    assert_eq!(
        reply.usage,
        Some(ApiUsage {
            used: API_USED + 1,
            max: API_MAX
        })
    );

    sim.set_api_used(14_000);
    let check = c.check_connection(Duration::from_secs(5)).await;
    assert_eq!(check.result, Ok(()));
    assert_eq!(check.api_calls, 1);
    let usage = check.usage.expect("usage from /limits");
    assert_eq!(usage.max, API_MAX);
    // The /limits call itself may or may not be counted in what it reports.
    assert!((14_000..=14_001).contains(&usage.used), "{usage:?}");
    assert!(usage.below(0.1));
}

#[tokio::test]
async fn check_connection_reports_a_refused_connection() {
    let sim = start().await;
    let c = SalesforceClient::new(config(
        &sim,
        Credentials::ClientCredentials {
            client_id: "cc-app".into(),
            client_secret: "wrong".into(),
        },
    ))
    .unwrap();
    let check = c.check_connection(Duration::from_secs(5)).await;
    assert_eq!(
        check.result.unwrap_err().kind,
        RequestFailureKind::ConnectionRevoked
    );
    assert_eq!(check.api_calls, 0);
}

#[tokio::test]
async fn a_slow_org_times_out_within_the_call_timeout() {
    let sim = start().await;
    let c = client(&sim);
    assert!(c.upsert(&request(vec![ok("K-0")])).await.result.is_ok());
    sim.set_latency_ms(3_000);
    let mut req = request(vec![ok("K-1")]);
    req.timeout = Duration::from_millis(400);
    let started = Instant::now();
    let reply = c.upsert(&req).await;
    let elapsed = started.elapsed();
    let f = reply.result.unwrap_err();
    assert_eq!(
        (f.kind, f.code.as_str()),
        (RequestFailureKind::Unavailable, "TIMEOUT")
    );
    assert!(elapsed < Duration::from_millis(700), "{elapsed:?}");
    assert_eq!(reply.api_calls, 1);
}

#[tokio::test]
async fn a_retry_that_would_not_fit_is_not_started() {
    let sim = start().await;
    let mut cfg = config(&sim, client_credentials());
    cfg.retry = RetryPolicy {
        max_attempts: 10,
        base_backoff_ms: 400,
        max_backoff_ms: 400,
        min_attempt_ms: 200,
    };
    let c = SalesforceClient::new(cfg).unwrap();
    assert!(c.upsert(&request(vec![ok("K-0")])).await.result.is_ok());
    sim.push_fault(html_503(10));
    let mut req = request(vec![ok("K-1")]);
    req.timeout = Duration::from_millis(900);
    let started = Instant::now();
    let reply = c.upsert(&req).await;
    let elapsed = started.elapsed();
    let f = reply.result.unwrap_err();
    // Each retry waits 200-400 ms and needs 200 ms more: the second attempt always fits in
    // 900 ms, later ones only after short waits; whatever the jitter, the call gives up
    // with the 503 before the deadline instead of running into it.
    assert_eq!(
        (f.kind, f.code.as_str()),
        (RequestFailureKind::Unavailable, "HTTP_503")
    );
    assert!((2..=4).contains(&reply.api_calls), "{}", reply.api_calls);
    assert!(elapsed < Duration::from_millis(900), "{elapsed:?}");
}

#[tokio::test]
async fn a_token_request_counts_against_the_call_timeout() {
    let sim = start().await;
    sim.set_latency_ms(2_000);
    let c = client(&sim);
    let mut req = request(vec![ok("K-1")]);
    req.timeout = Duration::from_millis(300);
    let started = Instant::now();
    let reply = c.upsert(&req).await;
    let f = reply.result.unwrap_err();
    assert_eq!(
        (f.kind, f.code.as_str()),
        (RequestFailureKind::Unavailable, "TIMEOUT")
    );
    assert!(
        started.elapsed() < Duration::from_millis(600),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(reply.api_calls, 0);
}

#[tokio::test]
async fn trigger_failures_are_classified_by_their_message() {
    let mut def = org();
    let contact = def.objects.get_mut(OBJECT).unwrap();
    contact.triggers = serde_json::from_value(json!([
        {"name": "LockingTrigger", "when": {"field": "LastName", "op": "eq", "value": "Lock"}, "error": {"kind": "lock"}},
        {"name": "HeavyTrigger", "when": {"field": "LastName", "op": "eq", "value": "Heavy"}, "error": {"kind": "cpu_limit", "max_records": 1}},
        {"name": "BuggyTrigger", "when": {"field": "LastName", "op": "eq", "value": "Bug"},
         "error": {"kind": "exception", "message": "System.NullPointerException: Attempt to de-reference a null object"}}
    ]))
    .unwrap();
    contact.lock_contention =
        serde_json::from_value(json!([{"external_ids": ["K-LOCKED"]}])).unwrap();
    let sim = start_with(def, false).await;
    let c = client(&sim);
    let records = vec![
        contact_named("K-1", "Lock"),
        contact_named("K-2", "Bug"),
        contact_named("K-LOCKED", "Doe"),
        contact_named("K-4", "Doe"),
    ];
    let out = c.upsert(&request(records)).await.result.unwrap();
    assert!(
        matches!(&out[0], RecordOutcome::Transient { retry_smaller: false, error }
        if error.code == "CANNOT_INSERT_UPDATE_ACTIVATE_ENTITY"),
        "{:?}",
        out[0]
    );
    assert!(
        matches!(&out[1], RecordOutcome::Rejected { kind: RejectKind::Data, error }
        if error.code == "CANNOT_INSERT_UPDATE_ACTIVATE_ENTITY"),
        "{:?}",
        out[1]
    );
    assert!(
        matches!(&out[2], RecordOutcome::Transient { retry_smaller: false, error }
        if error.code == "UNABLE_TO_LOCK_ROW"),
        "{:?}",
        out[2]
    );
    assert!(accepted(&out[3]), "{:?}", out[3]);

    // A CPU-time limit fails the whole transaction: every record asks for a smaller call.
    let heavy = vec![
        contact_named("K-5", "Heavy"),
        contact_named("K-6", "Heavy"),
        contact_named("K-7", "Doe"),
    ];
    let out = c.upsert(&request(heavy)).await.result.unwrap();
    for o in &out {
        assert!(
            matches!(
                o,
                RecordOutcome::Transient {
                    retry_smaller: true,
                    ..
                }
            ),
            "{o:?}"
        );
    }
    let single = c
        .upsert(&request(vec![contact_named("K-5", "Heavy")]))
        .await
        .result
        .unwrap();
    assert!(accepted(&single[0]), "one record fits: {:?}", single[0]);
}

fn contact_named(key: &str, last: &str) -> Map<String, Value> {
    contact(key, json!({"LastName": last}))
}

#[tokio::test]
async fn the_storage_limit_is_org_wide() {
    let mut def = org();
    def.storage.max_records = Some(1);
    let sim = start_with(def, false).await;
    let out = client(&sim)
        .upsert(&request(vec![ok("K-1"), ok("K-2")]))
        .await
        .result
        .unwrap();
    assert!(accepted(&out[0]));
    assert!(
        matches!(&out[1], RecordOutcome::Rejected { kind: RejectKind::OrgWide, error }
        if error.code == "STORAGE_LIMIT_EXCEEDED"),
        "{:?}",
        out[1]
    );
}

/// A store that refuses every write, as a Secrets Manager outage would.
struct BrokenSink;

#[async_trait::async_trait]
impl CredentialSink for BrokenSink {
    async fn refresh_token_rotated(
        &self,
        _old: &str,
        _new: &str,
    ) -> Result<(), crm_export_salesforce::SinkError> {
        Err(crm_export_salesforce::SinkError::Failed(
            "store unavailable".into(),
        ))
    }
}

#[tokio::test]
async fn a_failing_sink_does_not_fail_the_call_and_the_new_token_stays_in_use() {
    let sim = start().await;
    let c = SalesforceClient::with_credential_sink(
        config(&sim, refresh_token("rt-initial")),
        Arc::new(BrokenSink),
    )
    .unwrap();
    assert!(c.upsert(&request(vec![ok("K-1")])).await.result.is_ok());
    assert_eq!(
        (
            c.metrics().rotated_refresh_tokens,
            c.metrics().sink_failures
        ),
        (1, 1)
    );
    // The old token is dead at the endpoint; the client refreshes with the rotated one.
    sim.expire_sessions();
    assert!(c.upsert(&request(vec![ok("K-2")])).await.result.is_ok());
    assert_eq!(c.metrics().token_requests, 2);
    assert_eq!(stored_keys(&sim), vec!["K-1", "K-2"]);
}
