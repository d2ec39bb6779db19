//! The per-tenant CRM client: built from the tenant's secret, cached in the warm container
//! for a short time, and only fetched when a run actually calls the CRM (a disabled tenant
//! or an idle job costs no Secrets Manager read).

use crate::secrets::{SecretError, SecretsManagerCredentialSink, TenantSecrets};
use crm_export_core::ports::{CrmClient, UpsertRequest};
use crm_export_core::{CrmReply, RecordOutcome, RequestFailure, RequestFailureKind, TenantId};
use crm_export_salesforce::SalesforceClient;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{Mutex, OnceCell};

struct Cached {
    client: Arc<SalesforceClient>,
    sink: Arc<SecretsManagerCredentialSink>,
    checked_at: Instant,
}

/// Builds and caches one Salesforce client per tenant.
pub struct CrmFactory {
    secrets: TenantSecrets,
    ttl: Duration,
    settle: Duration,
    cache: Mutex<HashMap<TenantId, Cached>>,
    reads: std::sync::atomic::AtomicU64,
}

impl CrmFactory {
    pub fn new(secrets: TenantSecrets, ttl: Duration, settle: Duration) -> Self {
        Self {
            secrets,
            ttl,
            settle,
            cache: Mutex::new(HashMap::new()),
            reads: Default::default(),
        }
    }

    /// Secrets Manager reads so far (for tests and the debug log).
    pub fn secret_reads(&self) -> u64 {
        self.reads.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The tenant's client: the cached one while it is younger than the TTL; after that
    /// the secret is read again, and the client is kept if the secret did not change (its
    /// access token stays valid) or rebuilt if it did.
    pub async fn client(&self, tenant: &TenantId) -> Result<Arc<SalesforceClient>, RequestFailure> {
        let mut cache = self.cache.lock().await;
        if let Some(c) = cache.get(tenant) {
            if c.checked_at.elapsed() < self.ttl {
                return Ok(c.client.clone());
            }
        }
        let name = self.secrets.secret_name(tenant);
        self.reads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let read = self
            .secrets
            .read(&name)
            .await
            .map_err(|e| failure(tenant, e))?;
        if let Some(c) = cache.get_mut(tenant) {
            if c.sink.known_version() == read.version_id {
                c.checked_at = Instant::now();
                return Ok(c.client.clone());
            }
        }
        let sink = Arc::new(SecretsManagerCredentialSink::new(
            self.secrets.clone(),
            name,
            &read,
            self.settle,
        ));
        let client =
            SalesforceClient::with_credential_sink(read.config, sink.clone()).map_err(|e| {
                RequestFailure::new(
                    RequestFailureKind::Misconfigured,
                    "CRM_CREDENTIALS_INVALID",
                    format!("the CRM connection of tenant {tenant} is unusable: {e}"),
                )
            })?;
        let client = Arc::new(client);
        // The client's Debug names login URL, API version and grant, never a secret.
        tracing::info!(%tenant, client = ?client, "CRM client built from the tenant secret");
        cache.insert(
            tenant.clone(),
            Cached {
                client: client.clone(),
                sink,
                checked_at: Instant::now(),
            },
        );
        Ok(client)
    }
}

/// A missing or malformed secret is a configuration problem no record explains (the
/// engine blocks the job until a probe succeeds); a Secrets Manager failure is an outage.
fn failure(tenant: &TenantId, e: SecretError) -> RequestFailure {
    let (kind, code) = match &e {
        SecretError::NotFound(_) => (RequestFailureKind::Misconfigured, "CRM_CREDENTIALS_MISSING"),
        SecretError::Invalid { .. } => {
            (RequestFailureKind::Misconfigured, "CRM_CREDENTIALS_INVALID")
        }
        SecretError::Unavailable(_) => (RequestFailureKind::Unavailable, "SECRETS_UNAVAILABLE"),
    };
    tracing::error!(%tenant, code, error = %e, "the tenant's CRM credentials could not be read");
    RequestFailure::new(kind, code, e.to_string())
}

/// The CRM port of one invocation: asks the factory for the tenant's client on first use
/// and keeps it (or the failure) for the rest of the invocation.
pub struct LazyCrm<'a> {
    factory: &'a CrmFactory,
    tenant: TenantId,
    client: OnceCell<Result<Arc<SalesforceClient>, RequestFailure>>,
}

impl<'a> LazyCrm<'a> {
    pub fn new(factory: &'a CrmFactory, tenant: TenantId) -> Self {
        Self {
            factory,
            tenant,
            client: OnceCell::new(),
        }
    }

    async fn get(&self) -> Result<Arc<SalesforceClient>, RequestFailure> {
        self.client
            .get_or_init(|| self.factory.client(&self.tenant))
            .await
            .clone()
    }
}

fn failed<T>(f: RequestFailure) -> CrmReply<T> {
    CrmReply {
        result: Err(f),
        api_calls: 0,
        usage: None,
    }
}

#[async_trait::async_trait]
impl CrmClient for LazyCrm<'_> {
    async fn upsert(&self, request: &UpsertRequest) -> CrmReply<Vec<RecordOutcome>> {
        match self.get().await {
            Ok(client) => client.upsert(request).await,
            Err(f) => failed(f),
        }
    }

    async fn check_connection(&self, timeout: Duration) -> CrmReply<()> {
        match self.get().await {
            Ok(client) => client.check_connection(timeout).await,
            Err(f) => failed(f),
        }
    }
}
