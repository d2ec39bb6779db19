//! OAuth 2.0 against `{login_url}/services/oauth2/token`: one cached session shared by
//! every concurrent call, at most one token request at a time, and rotated refresh tokens
//! written back through a [`CredentialSink`].

use crate::classify::{self, TransportFault, Verdict};
use crate::config::{Credentials, SalesforceConfig};
use crate::error::ClientError;
use crate::retry::RetryPolicy;
use crate::secret::Secret;
use crate::urls;
use crm_export_core::{RequestFailure, RequestFailureKind};
use serde::Deserialize;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use tokio::sync::Mutex;
use tokio::time::Instant;
use tracing::Instrument;

/// Why a credential store refused a write.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SinkError {
    /// The stored token is no longer the one being replaced (another process rotated it).
    #[error("the stored refresh token changed in the meantime")]
    Conflict,
    #[error("the credential store failed: {0}")]
    Failed(String),
}

/// Where a rotated refresh token goes. With refresh-token rotation the token endpoint
/// invalidates the old token when it hands out a new one, so the new one must reach the
/// durable store (a Secrets Manager secret, a file) or the next process is locked out.
#[async_trait::async_trait]
pub trait CredentialSink: Send + Sync {
    /// `new` replaced `old`. A durable implementation writes conditionally on `old` still
    /// being stored and answers [`SinkError::Conflict`] otherwise.
    async fn refresh_token_rotated(&self, old: &str, new: &str) -> Result<(), SinkError>;

    /// The refresh token the store holds now, when it can tell. Read once before a refused
    /// refresh is reported as a revoked connection: another process sharing the store may
    /// have rotated the token this one started with.
    async fn latest_refresh_token(&self) -> Result<Option<String>, SinkError> {
        Ok(None)
    }
}

/// Drops rotated tokens: for client credentials (nothing to rotate) and for orgs without
/// rotation.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoopCredentialSink;

#[async_trait::async_trait]
impl CredentialSink for NoopCredentialSink {
    async fn refresh_token_rotated(&self, _old: &str, _new: &str) -> Result<(), SinkError> {
        Ok(())
    }
}

/// Keeps the current refresh token in memory, with the same conditional semantics a
/// durable store has. For tests and the CLI.
#[derive(Default)]
pub struct InMemoryCredentialSink {
    state: StdMutex<InMemoryState>,
}

#[derive(Default)]
struct InMemoryState {
    current: Option<Secret>,
    rotations: u32,
}

impl InMemoryCredentialSink {
    /// A store that holds `token` (a rotation is then accepted only from it).
    pub fn holding(token: impl Into<String>) -> Self {
        Self {
            state: StdMutex::new(InMemoryState {
                current: Some(Secret::new(token)),
                rotations: 0,
            }),
        }
    }

    /// The stored refresh token.
    pub fn current(&self) -> Option<String> {
        self.lock().current.as_ref().map(|s| s.expose().to_owned())
    }

    /// How many rotations were written.
    pub fn rotations(&self) -> u32 {
        self.lock().rotations
    }

    /// Replaces the stored token, as another process would.
    pub fn set(&self, token: impl Into<String>) {
        self.lock().current = Some(Secret::new(token));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, InMemoryState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl fmt::Debug for InMemoryCredentialSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.lock();
        f.debug_struct("InMemoryCredentialSink")
            .field("current", &s.current)
            .field("rotations", &s.rotations)
            .finish()
    }
}

#[async_trait::async_trait]
impl CredentialSink for InMemoryCredentialSink {
    async fn refresh_token_rotated(&self, old: &str, new: &str) -> Result<(), SinkError> {
        let mut s = self.lock();
        if let Some(current) = &s.current {
            if current.expose() != old {
                return Err(SinkError::Conflict);
            }
        }
        s.current = Some(Secret::new(new));
        s.rotations += 1;
        Ok(())
    }

    async fn latest_refresh_token(&self) -> Result<Option<String>, SinkError> {
        Ok(self.current())
    }
}

/// An access token and the instance it is valid for. `generation` tells a caller whose
/// call was refused whether someone else refreshed in the meantime.
#[derive(Clone)]
pub(crate) struct Session {
    pub access_token: Secret,
    pub instance_url: reqwest::Url,
    pub generation: u64,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("access_token", &self.access_token)
            .field("instance_url", &self.instance_url.as_str())
            .field("generation", &self.generation)
            .finish()
    }
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: Option<String>,
    instance_url: Option<String>,
    refresh_token: Option<String>,
}

struct AuthState {
    session: Option<Arc<Session>>,
    /// The refresh token in force (rotations replace it); `None` for client credentials.
    refresh_token: Option<Secret>,
    generation: u64,
}

/// Counters shared with the client's metrics.
#[derive(Debug, Default)]
pub(crate) struct AuthCounters {
    pub token_requests: AtomicU64,
    pub rotations: AtomicU64,
    pub sink_failures: AtomicU64,
}

pub(crate) struct Authenticator {
    inner: Arc<Inner>,
    state: Arc<Mutex<AuthState>>,
}

struct Inner {
    http: reqwest::Client,
    token_url: reqwest::Url,
    credentials: Credentials,
    retry: RetryPolicy,
    token_timeout: std::time::Duration,
    sink: Arc<dyn CredentialSink>,
    counters: Arc<AuthCounters>,
}

impl Authenticator {
    pub fn new(
        http: reqwest::Client,
        config: &SalesforceConfig,
        sink: Arc<dyn CredentialSink>,
        counters: Arc<AuthCounters>,
    ) -> Result<Self, ClientError> {
        let token_url = urls::join(&config.login_url, &["services", "oauth2", "token"])
            .map_err(|e| ClientError::LoginUrl(e.0))?;
        let refresh_token = match &config.credentials {
            Credentials::RefreshToken { refresh_token, .. } => Some(refresh_token.clone()),
            Credentials::ClientCredentials { .. } => None,
        };
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                token_url,
                credentials: config.credentials.clone(),
                retry: config.retry.clone(),
                token_timeout: config.token_timeout(),
                sink,
                counters,
            }),
            state: Arc::new(Mutex::new(AuthState {
                session: None,
                refresh_token,
                generation: 0,
            })),
        })
    }

    /// The cached session, or a new one.
    pub async fn session(&self, deadline: Instant) -> Result<Arc<Session>, RequestFailure> {
        self.obtain(None, deadline).await
    }

    /// A session newer than `stale` (which the org refused): the one another call already
    /// obtained, or a new one.
    pub async fn refresh(
        &self,
        stale: &Session,
        deadline: Instant,
    ) -> Result<Arc<Session>, RequestFailure> {
        self.obtain(Some(stale.generation), deadline).await
    }

    async fn obtain(
        &self,
        stale: Option<u64>,
        deadline: Instant,
    ) -> Result<Arc<Session>, RequestFailure> {
        let guard = tokio::time::timeout_at(deadline, self.state.clone().lock_owned())
            .await
            .map_err(|_| classify::timeout_failure())?;
        if let Some(session) = &guard.session {
            if stale != Some(session.generation) {
                return Ok(session.clone());
            }
        }
        // The token request runs in its own task holding the lock: it finishes (and a
        // rotated refresh token is stored) even when this caller's deadline passes first,
        // and concurrent callers wait for its result instead of refreshing again.
        let inner = self.inner.clone();
        // The task keeps the caller's span, so its log lines name the tenant, job and run.
        let task = tokio::spawn(
            async move {
                let mut guard = guard;
                let result = inner.fetch(&mut guard, deadline).await;
                if let Ok(session) = &result {
                    guard.session = Some(session.clone());
                } else {
                    guard.session = None;
                }
                result
            }
            .instrument(tracing::Span::current()),
        );
        match tokio::time::timeout_at(deadline, task).await {
            Ok(Ok(result)) => result,
            Ok(Err(join)) => Err(RequestFailure::new(
                RequestFailureKind::Unavailable,
                "INTERNAL",
                format!("the token request task failed: {join}"),
            )),
            Err(_) => Err(classify::timeout_failure()),
        }
    }
}

impl Inner {
    /// Requests a token, retrying transient failures while new attempts fit before
    /// `deadline`.
    async fn fetch(
        &self,
        state: &mut AuthState,
        deadline: Instant,
    ) -> Result<Arc<Session>, RequestFailure> {
        let mut attempts = 0;
        let mut reread_store = matches!(self.credentials, Credentials::RefreshToken { .. });
        loop {
            attempts += 1;
            let verdict = match self.request(state).await {
                Ok(session_parts) => {
                    let (access_token, instance_url, rotated) = session_parts;
                    if let (Some(new), Some(old)) = (rotated, state.refresh_token.clone()) {
                        if new.expose() != old.expose() {
                            self.store_rotated(state, &old, new).await;
                        }
                    }
                    state.generation += 1;
                    return Ok(Arc::new(Session {
                        access_token,
                        instance_url,
                        generation: state.generation,
                    }));
                }
                Err(v) => v,
            };
            match verdict {
                Verdict::Fail(f)
                    if f.kind == RequestFailureKind::ConnectionRevoked && reread_store =>
                {
                    reread_store = false;
                    match self.sink.latest_refresh_token().await {
                        Ok(Some(latest))
                            if state
                                .refresh_token
                                .as_ref()
                                .map(|t| t.expose() != latest)
                                .unwrap_or(false) =>
                        {
                            tracing::info!("refresh token refused; retrying once with the one the credential store holds now");
                            state.refresh_token = Some(Secret::new(latest));
                            continue;
                        }
                        Ok(_) => return Err(f),
                        Err(e) => {
                            tracing::warn!(error = %e, "could not re-read the credential store");
                            return Err(f);
                        }
                    }
                }
                Verdict::Fail(f) => return Err(f),
                // A token endpoint never answers with a session error; treat it as a refusal.
                Verdict::Reauthenticate => {
                    return Err(RequestFailure::new(
                        RequestFailureKind::AuthFailed,
                        "TOKEN_REFUSED",
                        "the token endpoint refused the request",
                    ))
                }
                Verdict::Retry(f) => {
                    match self.retry.next_delay(attempts, Instant::now(), deadline) {
                        Some(delay) => {
                            tracing::debug!(code = %f.code, attempt = attempts, ?delay, "token request failed; retrying");
                            tokio::time::sleep(delay).await;
                        }
                        None => return Err(f),
                    }
                }
            }
        }
    }

    async fn store_rotated(&self, state: &mut AuthState, old: &Secret, new: Secret) {
        self.counters.rotations.fetch_add(1, Ordering::Relaxed);
        // The old token is dead at the endpoint already: use the new one from now on,
        // whatever the store says.
        state.refresh_token = Some(new.clone());
        if let Err(e) = self
            .sink
            .refresh_token_rotated(old.expose(), new.expose())
            .await
        {
            self.counters.sink_failures.fetch_add(1, Ordering::Relaxed);
            tracing::error!(error = %e, "the rotated refresh token could not be stored; this process keeps using it");
        } else {
            tracing::info!("refresh token rotated and stored");
        }
    }

    /// One token request. `Ok` carries the access token, the instance URL and a rotated
    /// refresh token, if any.
    async fn request(
        &self,
        state: &AuthState,
    ) -> Result<(Secret, reqwest::Url, Option<Secret>), Verdict> {
        let form: Vec<(&str, &str)> = match (&self.credentials, &state.refresh_token) {
            (
                Credentials::ClientCredentials {
                    client_id,
                    client_secret,
                },
                _,
            ) => vec![
                ("grant_type", "client_credentials"),
                ("client_id", client_id),
                ("client_secret", client_secret.expose()),
            ],
            (
                Credentials::RefreshToken {
                    client_id,
                    client_secret,
                    ..
                },
                Some(refresh_token),
            ) => {
                let mut form = vec![
                    ("grant_type", "refresh_token"),
                    ("refresh_token", refresh_token.expose()),
                    ("client_id", client_id.as_str()),
                ];
                if let Some(secret) = client_secret {
                    form.push(("client_secret", secret.expose()));
                }
                form
            }
            (Credentials::RefreshToken { .. }, None) => {
                return Err(Verdict::Fail(RequestFailure::new(
                    RequestFailureKind::AuthFailed,
                    "NO_REFRESH_TOKEN",
                    "no refresh token is configured",
                )))
            }
        };
        self.counters.token_requests.fetch_add(1, Ordering::Relaxed);
        let sent = self
            .http
            .post(self.token_url.clone())
            .header(reqwest::header::ACCEPT, "application/json")
            .form(&form)
            .timeout(self.token_timeout)
            .send()
            .await;
        let response = match sent {
            Ok(r) => r,
            Err(e) => return Err(classify::classify_transport(transport_fault(&e), false)),
        };
        let status = response.status().as_u16();
        let body = match response.text().await {
            Ok(b) => b,
            Err(e) => return Err(classify::classify_transport(transport_fault(&e), false)),
        };
        if status != 200 {
            let verdict = classify::classify_token_error(status, &body);
            if let Verdict::Fail(f) | Verdict::Retry(f) = &verdict {
                tracing::warn!(status, code = %f.code, grant = self.credentials.grant_name(), "token request refused");
            }
            return Err(verdict);
        }
        let bad = |what: &str| {
            Verdict::Fail(classify::bad_response(
                format!("token response {what}"),
                status,
            ))
        };
        let parsed: TokenResponse = serde_json::from_str(&body).map_err(|_| bad("is not JSON"))?;
        let access_token = parsed
            .access_token
            .filter(|t| !t.is_empty())
            .ok_or_else(|| bad("has no access_token"))?;
        let instance_url = parsed
            .instance_url
            .and_then(|u| reqwest::Url::parse(&u).ok())
            .filter(|u| matches!(u.scheme(), "http" | "https"))
            .ok_or_else(|| bad("has no usable instance_url"))?;
        Ok((
            Secret::new(access_token),
            instance_url,
            parsed
                .refresh_token
                .filter(|t| !t.is_empty())
                .map(Secret::new),
        ))
    }
}

pub(crate) fn transport_fault(e: &reqwest::Error) -> TransportFault {
    if e.is_timeout() {
        TransportFault::Timeout
    } else if e.is_connect() {
        TransportFault::Connect
    } else {
        TransportFault::Other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn in_memory_sink_writes_conditionally() {
        let sink = InMemoryCredentialSink::holding("rt-1");
        sink.refresh_token_rotated("rt-1", "rt-2").await.unwrap();
        assert_eq!(sink.current().as_deref(), Some("rt-2"));
        assert_eq!(
            sink.refresh_token_rotated("rt-1", "rt-3").await,
            Err(SinkError::Conflict)
        );
        assert_eq!(sink.current().as_deref(), Some("rt-2"));
        assert_eq!(sink.rotations(), 1);
        assert_eq!(
            sink.latest_refresh_token().await.unwrap().as_deref(),
            Some("rt-2")
        );
        assert!(!format!("{sink:?}").contains("rt-2"));
    }

    #[tokio::test]
    async fn noop_sink_accepts_and_knows_nothing() {
        assert_eq!(
            NoopCredentialSink.refresh_token_rotated("a", "b").await,
            Ok(())
        );
        assert_eq!(NoopCredentialSink.latest_refresh_token().await, Ok(None));
    }
}
