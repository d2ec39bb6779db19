//! The API under test: the local router (HS256 tokens) on a MemoryStore seeded with demo
//! data, a recording publisher and retry requester, and a clock the tests control.
#![allow(dead_code)] // each test file uses a different part of the harness

use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use axum::Router;
use crm_export_api::local::{local_token, seed_demo, Seeded};
use crm_export_api::{local_router, ApiState, JwtVerifier, RecordingRetryRequester};
use crm_export_core::events::RecordingPublisher;
use crm_export_core::ports::Clock;
use crm_export_core::store::MemoryStore;
use crm_export_core::{TenantId, Timestamp};
use serde_json::Value;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tower::ServiceExt;

pub const SECRET: &[u8] = b"test-secret-test-secret-test-secret!";

/// A clock that stands still unless a test moves it.
pub struct TestClock(Mutex<Timestamp>);

impl TestClock {
    pub fn at(t: Timestamp) -> Self {
        Self(Mutex::new(t))
    }
    pub fn advance(&self, d: chrono::Duration) {
        *self.0.lock().unwrap() += d;
    }
}

#[async_trait::async_trait]
impl Clock for TestClock {
    fn now(&self) -> Timestamp {
        *self.0.lock().unwrap()
    }
    async fn sleep(&self, d: Duration) {
        self.advance(chrono::Duration::from_std(d).unwrap());
    }
}

pub fn t0() -> Timestamp {
    "2026-03-01T12:00:00Z".parse().unwrap()
}

pub fn tenant(s: &str) -> TenantId {
    TenantId::new(s).unwrap()
}

pub struct Api {
    pub store: Arc<MemoryStore>,
    pub events: Arc<RecordingPublisher>,
    pub retry: Arc<RecordingRetryRequester>,
    pub clock: Arc<TestClock>,
    pub app: Router,
    /// What seeding created for "acme" (and "globex" when seeded).
    pub acme: Option<Seeded>,
    pub globex: Option<Seeded>,
}

/// A response: status, headers and the JSON body (`Null` when empty).
#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Resp {
    /// Asserts the shared error shape and returns the code.
    pub fn error_code(&self) -> &str {
        let err = self
            .body
            .get("error")
            .unwrap_or_else(|| panic!("no error object in {:?}", self.body));
        assert!(
            err["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{:?}",
            self.body
        );
        err["code"].as_str().expect("error code")
    }
}

impl Api {
    /// Nothing seeded: tenants start with default settings and no jobs.
    pub async fn empty() -> Self {
        Self::build(&[]).await
    }

    /// "acme" and "globex" each seeded with the demo data.
    pub async fn seeded() -> Self {
        Self::build(&["acme", "globex"]).await
    }

    async fn build(seed: &[&str]) -> Self {
        let store = Arc::new(MemoryStore::new());
        let clock = Arc::new(TestClock::at(t0()));
        let mut seeded = Vec::new();
        for t in seed {
            seeded.push(Some(seed_demo(&*store, &tenant(t), t0()).await.unwrap()));
        }
        seeded.resize(2, None);
        let events = Arc::new(RecordingPublisher::new());
        let retry = Arc::new(RecordingRetryRequester::new());
        let state =
            ApiState::new(store.clone(), events.clone(), retry.clone()).with_clock(clock.clone());
        let app = local_router(state, JwtVerifier::hs256(SECRET).unwrap());
        let globex = seeded.pop().flatten();
        let acme = seeded.pop().flatten();
        Self {
            store,
            events,
            retry,
            clock,
            app,
            acme,
            globex,
        }
    }

    pub fn token(&self, tenant_id: &str, write: bool) -> String {
        local_token(
            SECRET,
            &tenant(tenant_id),
            &format!("user-of-{tenant_id}"),
            write,
            Duration::from_secs(600),
        )
        .unwrap()
    }

    /// Sends a request with optional bearer token, extra headers and raw body.
    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Resp {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req
            .body(body.map(Body::from).unwrap_or_else(Body::empty))
            .unwrap();
        let resp = self.app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                panic!("non-JSON body ({e}): {}", String::from_utf8_lossy(&bytes))
            })
        };
        Resp {
            status,
            headers,
            body,
        }
    }

    /// A request as the tenant's writer.
    pub async fn as_writer(&self, tenant_id: &str, method: Method, path: &str) -> Resp {
        let t = self.token(tenant_id, true);
        self.raw(method, path, Some(&t), &[], None).await
    }

    pub async fn get(&self, tenant_id: &str, path: &str) -> Resp {
        let t = self.token(tenant_id, false);
        self.raw(Method::GET, path, Some(&t), &[], None).await
    }

    /// A JSON request as the tenant's writer with extra headers.
    pub async fn send_json(
        &self,
        tenant_id: &str,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: &Value,
    ) -> Resp {
        let t = self.token(tenant_id, true);
        let mut h = vec![("content-type", "application/json")];
        h.extend_from_slice(headers);
        self.raw(
            method,
            path,
            Some(&t),
            &h,
            Some(serde_json::to_vec(body).unwrap()),
        )
        .await
    }

    /// PATCH /v1/settings with If-Match of `version`.
    pub async fn patch_settings(&self, tenant_id: &str, version: u64, body: &Value) -> Resp {
        let etag = format!("\"{version}\"");
        self.send_json(
            tenant_id,
            Method::PATCH,
            "/v1/settings",
            &[("if-match", &etag)],
            body,
        )
        .await
    }

    /// The stored settings (as the domain has them) and version.
    pub async fn stored(&self, tenant_id: &str) -> Option<crm_export_core::VersionedSettings> {
        use crm_export_core::ports::SettingsStore;
        self.store.get_settings(&tenant(tenant_id)).await.unwrap()
    }
}
