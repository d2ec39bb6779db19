//! [`SalesforceClient`]: the `CrmClient` port over the REST API (sObject Collections
//! upsert), with the call's deadline as the outer bound of everything it does.

use crate::auth::{
    transport_fault, AuthCounters, Authenticator, CredentialSink, NoopCredentialSink, Session,
};
use crate::classify::{self, SfRecordError, Verdict};
use crate::config::SalesforceConfig;
use crate::error::ClientError;
use crate::limits::{parse_limit_info, parse_limits_body, LIMIT_INFO_HEADER};
use crate::urls;
use crm_export_core::ports::{CrmClient, UpsertRequest};
use crm_export_core::{ApiUsage, CrmReply, RecordOutcome, RequestFailure, RequestFailureKind};
use serde::Deserialize;
use std::fmt;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// The most records one collections call takes.
pub const MAX_RECORDS_PER_CALL: usize = 200;

/// Counters over the client's lifetime, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientMetrics {
    /// REST calls sent to the org (replays and retries included): what the org's API
    /// allocation is charged for.
    pub api_calls: u64,
    /// Requests to the token endpoint. Not Salesforce API calls, so not in `api_calls`.
    pub token_requests: u64,
    /// Calls replayed after a refused session.
    pub reauthentications: u64,
    /// Retries of transient failures (5xx, 429, connection errors).
    pub retries: u64,
    /// Refresh tokens the token endpoint rotated.
    pub rotated_refresh_tokens: u64,
    /// Rotated refresh tokens the credential sink failed to store.
    pub sink_failures: u64,
}

#[derive(Debug, Default)]
struct Counters {
    api_calls: AtomicU64,
    reauthentications: AtomicU64,
    retries: AtomicU64,
}

/// A Salesforce org, bound to one tenant's connection. Cheap to share (`Arc`) between
/// concurrent calls: they share one session and one token refresh at a time.
pub struct SalesforceClient {
    http: reqwest::Client,
    config: SalesforceConfig,
    auth: Authenticator,
    counters: Counters,
    auth_counters: Arc<AuthCounters>,
}

impl fmt::Debug for SalesforceClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SalesforceClient")
            .field("login_url", &self.config.login_url)
            .field("api_version", &self.config.api_version)
            .field("grant", &self.config.credentials.grant_name())
            .finish_non_exhaustive()
    }
}

impl SalesforceClient {
    /// A client whose rotated refresh tokens are not stored anywhere (client credentials,
    /// or orgs without rotation).
    pub fn new(config: SalesforceConfig) -> Result<Self, ClientError> {
        Self::with_credential_sink(config, Arc::new(NoopCredentialSink))
    }

    /// A client that writes rotated refresh tokens to `sink`.
    pub fn with_credential_sink(
        mut config: SalesforceConfig,
        sink: Arc<dyn CredentialSink>,
    ) -> Result<Self, ClientError> {
        config.api_version = normalise_version(&config.api_version)?;
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .connect_timeout(config.connect_timeout())
            // A redirect would turn the PATCH into a GET elsewhere; a 3xx is a wrong URL.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("crm-export/", env!("CARGO_PKG_VERSION")));
        if let Some(pem) = &config.extra_root_ca_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem.as_bytes())
                .map_err(|e| ClientError::RootCa(e.to_string()))?;
            if certs.is_empty() {
                return Err(ClientError::RootCa("no certificate found".into()));
            }
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        let http = builder
            .build()
            .map_err(|e| ClientError::Http(e.to_string()))?;
        let auth_counters = Arc::new(AuthCounters::default());
        let auth = Authenticator::new(http.clone(), &config, sink, auth_counters.clone())?;
        Ok(Self {
            http,
            config,
            auth,
            counters: Counters::default(),
            auth_counters,
        })
    }

    pub fn metrics(&self) -> ClientMetrics {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ClientMetrics {
            api_calls: load(&self.counters.api_calls),
            token_requests: load(&self.auth_counters.token_requests),
            reauthentications: load(&self.counters.reauthentications),
            retries: load(&self.counters.retries),
            rotated_refresh_tokens: load(&self.auth_counters.rotations),
            sink_failures: load(&self.auth_counters.sink_failures),
        }
    }

    /// Requests sent to the token endpoint so far (they are not Salesforce API calls).
    pub fn token_requests(&self) -> u64 {
        self.metrics().token_requests
    }

    fn data_url(&self, session: &Session, rest: &[&str]) -> Result<reqwest::Url, RequestFailure> {
        let version = format!("v{}", self.config.api_version);
        let mut segments = vec!["services", "data", version.as_str()];
        segments.extend_from_slice(rest);
        urls::with_segments(&session.instance_url, &segments).map_err(|e| {
            RequestFailure::new(
                RequestFailureKind::Misconfigured,
                "BAD_INSTANCE_URL",
                e.to_string(),
            )
        })
    }

    /// Sends one logical call: obtains a session, replays once after a refused session,
    /// retries transient failures under the retry policy, and never starts anything that
    /// cannot finish before `deadline`. `Ok` is a 2xx reply.
    async fn send<F>(
        &self,
        ctx: &CallCtx,
        deadline: Instant,
        build: F,
    ) -> Result<Reply, RequestFailure>
    where
        F: Fn(&Session) -> Result<reqwest::RequestBuilder, RequestFailure> + Send + Sync,
    {
        let mut session = self.auth.session(deadline).await?;
        let mut replayed = false;
        let mut attempts = 0u32;
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Err(classify::timeout_failure());
            }
            attempts += 1;
            let request = build(&session)?
                .bearer_auth(session.access_token.expose())
                .header(reqwest::header::ACCEPT, "application/json")
                .timeout(deadline - now);
            // Counted before sending: a call still in flight when the deadline drops this
            // future may well have reached the org and been charged.
            ctx.count_call(&self.counters);
            let verdict = match request.send().await {
                Err(e) => {
                    // A connection never made reached no org and costs no API call.
                    if e.is_connect() {
                        ctx.uncount_call(&self.counters);
                    }
                    classify::classify_transport(transport_fault(&e), Instant::now() >= deadline)
                }
                Ok(response) => {
                    ctx.note_usage_header(response.headers());
                    let status = response.status().as_u16();
                    match response.text().await {
                        Err(e) => classify::classify_transport(
                            transport_fault(&e),
                            Instant::now() >= deadline,
                        ),
                        Ok(body) if (200..300).contains(&status) => {
                            return Ok(Reply { status, body })
                        }
                        Ok(body) => classify::classify_http_error(status, &body),
                    }
                }
            };
            match verdict {
                Verdict::Reauthenticate if !replayed => {
                    tracing::info!("session refused; refreshing the token and replaying the call");
                    replayed = true;
                    attempts -= 1;
                    self.counters
                        .reauthentications
                        .fetch_add(1, Ordering::Relaxed);
                    session = self.auth.refresh(&session, deadline).await?;
                }
                Verdict::Reauthenticate => {
                    return Err(RequestFailure {
                        kind: RequestFailureKind::AuthFailed,
                        code: "INVALID_SESSION_ID".into(),
                        message: "the org refused a freshly issued session".into(),
                        http_status: Some(401),
                    })
                }
                Verdict::Retry(failure) => {
                    match self
                        .config
                        .retry
                        .next_delay(attempts, Instant::now(), deadline)
                    {
                        Some(delay) => {
                            tracing::warn!(code = %failure.code, status = ?failure.http_status, attempt = attempts, ?delay,
                            "transient failure; retrying");
                            self.counters.retries.fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(delay).await;
                        }
                        None => return Err(failure),
                    }
                }
                Verdict::Fail(failure) => return Err(failure),
            }
        }
    }

    async fn upsert_inner(
        &self,
        ctx: &CallCtx,
        request: &UpsertRequest,
        deadline: Instant,
    ) -> Result<Vec<RecordOutcome>, RequestFailure> {
        let n = request.records.len();
        if n == 0 {
            return Ok(Vec::new());
        }
        if n > MAX_RECORDS_PER_CALL {
            return Err(RequestFailure::new(
                RequestFailureKind::ContentRefused,
                "EXCEEDED_ID_LIMIT",
                format!("{n} records in one call; at most {MAX_RECORDS_PER_CALL} are allowed"),
            ));
        }
        let body = upsert_body(request);
        let reply = self
            .send(ctx, deadline, |session| {
                let url = self.data_url(
                    session,
                    &[
                        "composite",
                        "sobjects",
                        &request.object,
                        &request.external_id_field,
                    ],
                )?;
                Ok(self
                    .http
                    .patch(url)
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(body.clone()))
            })
            .await?;
        let outcomes = parse_upsert_reply(&reply, n, &request.external_id_field)?;
        tracing::debug!(
            object = %request.object,
            records = n,
            accepted = outcomes.iter().filter(|o| matches!(o, RecordOutcome::Accepted { .. })).count(),
            "upsert done"
        );
        Ok(outcomes)
    }

    async fn check_inner(&self, ctx: &CallCtx, deadline: Instant) -> Result<(), RequestFailure> {
        let limits = self
            .send(ctx, deadline, |s| {
                Ok(self.http.get(self.data_url(s, &["limits"])?))
            })
            .await;
        match limits {
            Ok(reply) => {
                if let Some(usage) = serde_json::from_str(&reply.body)
                    .ok()
                    .as_ref()
                    .and_then(parse_limits_body)
                {
                    ctx.set_usage(usage);
                }
                Ok(())
            }
            // `/limits` needs "View Setup and Configuration", which an integration user
            // that can upsert may lack; the resource list needs API access only.
            Err(f)
                if f.kind == RequestFailureKind::Misconfigured
                    && f.code == "INSUFFICIENT_ACCESS" =>
            {
                self.send(ctx, deadline, |s| {
                    Ok(self.http.get(self.data_url(s, &[""])?))
                })
                .await
                .map(|_| ())
            }
            Err(f) => Err(f),
        }
    }
}

#[async_trait::async_trait]
impl CrmClient for SalesforceClient {
    async fn upsert(&self, request: &UpsertRequest) -> CrmReply<Vec<RecordOutcome>> {
        let ctx = CallCtx::default();
        let deadline = Instant::now() + request.timeout;
        let result = bounded(deadline, self.upsert_inner(&ctx, request, deadline)).await;
        ctx.reply(result)
    }

    async fn check_connection(&self, timeout: Duration) -> CrmReply<()> {
        let ctx = CallCtx::default();
        let deadline = Instant::now() + timeout;
        let result = bounded(deadline, self.check_inner(&ctx, deadline)).await;
        ctx.reply(result)
    }
}

/// The deadline as a hard stop: whatever is still running when it passes is dropped
/// (a token request in flight finishes in its own task).
async fn bounded<T>(
    deadline: Instant,
    work: impl std::future::Future<Output = Result<T, RequestFailure>>,
) -> Result<T, RequestFailure> {
    tokio::time::timeout_at(deadline, work)
        .await
        .unwrap_or_else(|_| Err(classify::timeout_failure()))
}

fn normalise_version(v: &str) -> Result<String, ClientError> {
    let v = v.trim().trim_start_matches(['v', 'V']);
    let ok = v.split_once('.').is_some_and(|(a, b)| {
        !a.is_empty()
            && !b.is_empty()
            && a.chars().all(|c| c.is_ascii_digit())
            && b.chars().all(|c| c.is_ascii_digit())
    });
    if ok {
        Ok(v.to_owned())
    } else {
        Err(ClientError::ApiVersion(v.to_owned()))
    }
}

/// What one logical call used, kept outside the call's future so a timeout that drops the
/// future still reports every call it made.
#[derive(Default)]
struct CallCtx {
    api_calls: AtomicU32,
    usage: Mutex<Option<ApiUsage>>,
}

impl CallCtx {
    fn count_call(&self, counters: &Counters) {
        self.api_calls.fetch_add(1, Ordering::Relaxed);
        counters.api_calls.fetch_add(1, Ordering::Relaxed);
    }

    fn uncount_call(&self, counters: &Counters) {
        self.api_calls.fetch_sub(1, Ordering::Relaxed);
        counters.api_calls.fetch_sub(1, Ordering::Relaxed);
    }

    fn note_usage_header(&self, headers: &reqwest::header::HeaderMap) {
        if let Some(usage) = headers
            .get(LIMIT_INFO_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_limit_info)
        {
            self.set_usage(usage);
        }
    }

    fn set_usage(&self, usage: ApiUsage) {
        *self.usage.lock().unwrap_or_else(|p| p.into_inner()) = Some(usage);
    }

    fn reply<T>(self, result: Result<T, RequestFailure>) -> CrmReply<T> {
        if let Err(f) = &result {
            tracing::warn!(kind = ?f.kind, code = %f.code, status = ?f.http_status, "salesforce call failed");
        }
        CrmReply {
            result,
            api_calls: self.api_calls.into_inner(),
            usage: self.usage.into_inner().unwrap_or_else(|p| p.into_inner()),
        }
    }
}

struct Reply {
    status: u16,
    body: String,
}

/// `{"allOrNone":false,"records":[{"attributes":{"type":object}, ...fields}]}`.
/// The sObject Collections body, written straight from the request's records (no copy
/// of their values): `{"allOrNone":false,"records":[{"attributes":{"type":…},…},…]}`.
fn upsert_body(request: &UpsertRequest) -> Vec<u8> {
    use serde::ser::{SerializeMap, Serializer};
    struct Attributes<'a>(&'a str);
    impl serde::Serialize for Attributes<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let mut m = s.serialize_map(Some(1))?;
            m.serialize_entry("type", self.0)?;
            m.end()
        }
    }
    struct Record<'a>(&'a str, &'a serde_json::Map<String, serde_json::Value>);
    impl serde::Serialize for Record<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let mut m = s.serialize_map(None)?;
            m.serialize_entry("attributes", &Attributes(self.0))?;
            for (k, v) in self.1.iter().filter(|(k, _)| *k != "attributes") {
                m.serialize_entry(k, v)?;
            }
            m.end()
        }
    }
    struct Records<'a>(&'a UpsertRequest);
    impl serde::Serialize for Records<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.collect_seq(self.0.records.iter().map(|r| Record(&self.0.object, r)))
        }
    }
    #[derive(serde::Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Body<'a> {
        all_or_none: bool,
        records: Records<'a>,
    }
    serde_json::to_vec(&Body {
        all_or_none: false,
        records: Records(request),
    })
    .expect("a JSON map with string keys always serialises")
}

#[derive(Deserialize)]
struct UpsertResult {
    #[serde(default)]
    id: Option<String>,
    success: bool,
    #[serde(default)]
    errors: Option<Vec<SfRecordError>>,
    #[serde(default)]
    created: Option<bool>,
}

/// Maps results to outcomes by position (a failed item has no id to match on). Anything
/// but exactly one result per record is an unknown outcome for all of them.
fn parse_upsert_reply(
    reply: &Reply,
    expected: usize,
    external_id_field: &str,
) -> Result<Vec<RecordOutcome>, RequestFailure> {
    let results: Vec<UpsertResult> = serde_json::from_str(&reply.body).map_err(|e| {
        classify::bad_response(
            format!("the upsert reply is not an array of results: {e}"),
            reply.status,
        )
    })?;
    if results.len() != expected {
        return Err(classify::bad_response(
            format!(
                "{} results for {expected} records; outcomes cannot be matched",
                results.len()
            ),
            reply.status,
        ));
    }
    Ok(results
        .into_iter()
        .map(|r| {
            if r.success {
                RecordOutcome::Accepted {
                    crm_id: r.id.filter(|id| !id.is_empty()),
                    created: r.created.unwrap_or(false),
                }
            } else {
                classify::classify_record_errors(
                    r.errors.as_deref().unwrap_or_default(),
                    external_id_field,
                )
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crm_export_core::RejectKind;

    fn request(n: usize) -> UpsertRequest {
        UpsertRequest {
            object: "Contact".into(),
            external_id_field: "Ext_Id__c".into(),
            records: (0..n)
                .map(|i| {
                    let mut m = serde_json::Map::new();
                    m.insert("Ext_Id__c".into(), format!("K-{i}").into());
                    m.insert("LastName".into(), "Doe".into());
                    m
                })
                .collect(),
            timeout: Duration::from_secs(5),
        }
    }

    #[test]
    fn body_puts_attributes_first_and_all_or_none_off() {
        let mut req = request(2);
        req.records[0].insert("attributes".into(), serde_json::json!({"type": "Wrong"}));
        let body: serde_json::Value = serde_json::from_slice(&upsert_body(&req)).unwrap();
        assert_eq!(body["allOrNone"], false);
        let records = body["records"].as_array().unwrap();
        assert_eq!(records.len(), 2);
        assert_eq!(
            records[0]["attributes"],
            serde_json::json!({"type": "Contact"})
        );
        assert_eq!(
            records[0].as_object().unwrap().keys().next().unwrap(),
            "attributes"
        );
        assert_eq!(records[1]["Ext_Id__c"], "K-1");
    }

    fn reply(body: &str) -> Reply {
        Reply {
            status: 200,
            body: body.into(),
        }
    }

    #[test]
    fn results_map_by_position() {
        let body = r#"[{"id":"003A","success":true,"errors":[],"created":true},
                       {"success":false,"errors":[{"statusCode":"REQUIRED_FIELD_MISSING","message":"Required fields are missing: [LastName]","fields":["LastName"]}]},
                       {"id":null,"success":false,"created":false,"errors":[{"statusCode":"UNABLE_TO_LOCK_ROW","message":"locked","fields":[]}]},
                       {"id":"003D","success":true,"errors":[]}]"#;
        let out = parse_upsert_reply(&reply(body), 4, "Ext_Id__c").unwrap();
        assert_eq!(
            out[0],
            RecordOutcome::Accepted {
                crm_id: Some("003A".into()),
                created: true
            }
        );
        assert!(
            matches!(&out[1], RecordOutcome::Rejected { kind: RejectKind::Data, error } if error.fields == ["LastName"])
        );
        assert!(matches!(
            &out[2],
            RecordOutcome::Transient {
                retry_smaller: false,
                ..
            }
        ));
        assert_eq!(
            out[3],
            RecordOutcome::Accepted {
                crm_id: Some("003D".into()),
                created: false
            }
        );
    }

    #[test]
    fn wrong_length_and_malformed_replies_are_unknown_outcomes() {
        for body in [
            r#"[{"id":"003A","success":true}]"#,
            "[",
            "{}",
            r#"[{"id":"1"},{"id":"2"}]"#,
            "<html></html>",
        ] {
            let f = parse_upsert_reply(&reply(body), 2, "Ext_Id__c").unwrap_err();
            assert_eq!(
                (f.kind, f.code.as_str()),
                (RequestFailureKind::Unavailable, "BAD_RESPONSE"),
                "{body}"
            );
        }
    }

    #[test]
    fn versions_are_normalised() {
        assert_eq!(normalise_version("62.0").unwrap(), "62.0");
        assert_eq!(normalise_version("v59.0").unwrap(), "59.0");
        for bad in ["62", "", "v", "62.x", "../62.0"] {
            assert!(normalise_version(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn more_than_200_records_are_refused_without_a_call() {
        let client = SalesforceClient::new(SalesforceConfig::new(
            // Nothing listens there: a call would fail differently.
            "http://127.0.0.1:9",
            crate::Credentials::ClientCredentials {
                client_id: "a".into(),
                client_secret: "b".into(),
            },
        ))
        .unwrap();
        let reply = client.upsert(&request(201)).await;
        let f = reply.result.unwrap_err();
        assert_eq!(
            (f.kind, f.code.as_str()),
            (RequestFailureKind::ContentRefused, "EXCEEDED_ID_LIMIT")
        );
        assert_eq!(reply.api_calls, 0);
        assert_eq!(client.metrics(), ClientMetrics::default());

        let empty = client.upsert(&request(0)).await;
        assert_eq!(empty.result, Ok(vec![]));
        assert_eq!(client.token_requests(), 0);
    }

    #[test]
    fn bad_configuration_is_refused_at_construction() {
        let creds = crate::Credentials::ClientCredentials {
            client_id: "a".into(),
            client_secret: "b".into(),
        };
        let mut cfg = SalesforceConfig::new("not a url", creds.clone());
        assert!(matches!(
            SalesforceClient::new(cfg.clone()),
            Err(ClientError::LoginUrl(_))
        ));
        cfg.login_url = "https://login.example".into();
        cfg.extra_root_ca_pem = Some("not pem".into());
        assert!(matches!(
            SalesforceClient::new(cfg.clone()),
            Err(ClientError::RootCa(_))
        ));
        cfg.extra_root_ca_pem = None;
        cfg.api_version = "latest".into();
        assert!(matches!(
            SalesforceClient::new(cfg),
            Err(ClientError::ApiVersion(_))
        ));
    }

    #[test]
    fn debug_shows_no_secret() {
        let client = SalesforceClient::new(SalesforceConfig::new(
            "https://login.example",
            crate::Credentials::ClientCredentials {
                client_id: "a".into(),
                client_secret: "very-secret".into(),
            },
        ))
        .unwrap();
        let dump = format!("{client:?}");
        assert!(
            dump.contains("client_credentials") && !dump.contains("very-secret"),
            "{dump}"
        );
    }
}
