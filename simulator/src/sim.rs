//! The running org's state and the in-process admin handle (the same operations the
//! `/__sim/` HTTP API offers).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use serde::{Deserialize, Serialize};

use crate::error::SimError;
use crate::faults::{Fault, FaultKind, FaultQueue};
use crate::oauth::{self, Session};
use crate::org::{CompiledOrg, FieldDef, OrgDefinition, ValidationRule};
use crate::store::{RecordView, Store};

/// Counters since start or the last `reset_stats`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// REST calls that passed authentication (each one counts against the API allocation).
    pub api_calls: u64,
    /// Requests to the token endpoint, granted or not.
    pub token_requests: u64,
    /// Authenticated collection upsert calls, whatever their outcome.
    pub upsert_calls: u64,
    /// Records saved (created or updated).
    pub records_written: u64,
    /// Records that came back with `success: false`.
    pub records_failed: u64,
}

#[derive(Default)]
pub(crate) struct Counters {
    pub api_calls: AtomicU64,
    pub token_requests: AtomicU64,
    pub upsert_calls: AtomicU64,
    pub records_written: AtomicU64,
    pub records_failed: AtomicU64,
}

/// The API allocation as the org reports it in `Sforce-Limit-Info`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiUsage {
    pub used: u64,
    pub max: u64,
}

pub(crate) struct Shared {
    /// For readers that do not touch records; `store.org` is the same Arc.
    pub org: RwLock<Arc<CompiledOrg>>,
    pub store: Mutex<Store>,
    pub sessions: Mutex<HashMap<String, Session>>,
    /// refresh token -> client_id.
    pub refresh_tokens: Mutex<HashMap<String, String>>,
    pub api_used: AtomicU64,
    pub inflight: AtomicU32,
    pub latency_ms: AtomicU64,
    pub stats: Counters,
    pub faults: Mutex<FaultQueue>,
    pub base_url: RwLock<String>,
}

/// Locks a mutex, ignoring poisoning: a panic in one request must not take the org down,
/// and every critical section leaves the data consistent at each await-free step.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    pub fn org(&self) -> Arc<CompiledOrg> {
        Arc::clone(&self.org.read().unwrap_or_else(|e| e.into_inner()))
    }

    pub fn usage(&self) -> ApiUsage {
        ApiUsage {
            used: self.api_used.load(Ordering::SeqCst),
            max: self.org().def.api.max,
        }
    }
}

/// A simulated org. Cheap to clone; all clones share one org. [`crate::serve`] puts one
/// behind a socket; [`Simulator::router`] gives the axum router for other uses.
#[derive(Clone)]
pub struct Simulator {
    pub(crate) shared: Arc<Shared>,
}

impl Simulator {
    pub fn new(org: OrgDefinition) -> Result<Self, SimError> {
        let compiled = Arc::new(CompiledOrg::compile(org)?);
        let shared = Shared {
            org: RwLock::new(Arc::clone(&compiled)),
            store: Mutex::new(Store::new(Arc::clone(&compiled))),
            sessions: Mutex::new(HashMap::new()),
            refresh_tokens: Mutex::new(HashMap::new()),
            api_used: AtomicU64::new(0),
            inflight: AtomicU32::new(0),
            latency_ms: AtomicU64::new(0),
            stats: Counters::default(),
            faults: Mutex::new(FaultQueue::default()),
            base_url: RwLock::new("http://127.0.0.1".into()),
        };
        let sim = Simulator {
            shared: Arc::new(shared),
        };
        sim.reset_runtime(&compiled.def);
        Ok(sim)
    }

    /// Where the org answers (login URL and instance_url), e.g. `https://127.0.0.1:41234`.
    pub fn base_url(&self) -> String {
        self.shared
            .base_url
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub(crate) fn set_base_url(&self, url: String) {
        *self
            .shared
            .base_url
            .write()
            .unwrap_or_else(|e| e.into_inner()) = url;
    }

    /// The org definition as it is now: API usage, latency and the valid refresh tokens are
    /// the live values, so that `replace_org(org())` changes nothing.
    pub fn org(&self) -> OrgDefinition {
        let mut def = self.shared.org().def.clone();
        def.api.used = self.shared.api_used.load(Ordering::SeqCst);
        def.latency_ms = self.shared.latency_ms.load(Ordering::SeqCst);
        let tokens = lock(&self.shared.refresh_tokens);
        for client in &mut def.oauth.clients {
            let mut live: Vec<String> = tokens
                .iter()
                .filter(|(_, c)| **c == client.client_id)
                .map(|(t, _)| t.clone())
                .collect();
            live.sort();
            client.refresh_tokens = live;
        }
        def
    }

    /// Replaces the whole definition (records are kept; API usage, latency and refresh
    /// tokens are taken from the new definition; access tokens stay valid).
    pub fn replace_org(&self, org: OrgDefinition) -> Result<(), SimError> {
        let compiled = self.install(org)?;
        self.reset_runtime(&compiled.def);
        Ok(())
    }

    /// Replaces the validation rules of one object.
    pub fn set_validation_rules(
        &self,
        object: &str,
        rules: Vec<ValidationRule>,
    ) -> Result<(), SimError> {
        self.edit_object(object, |def| def.validation_rules = rules)
    }

    /// Adds or replaces one field of an object (e.g. to make it updateable again).
    pub fn set_field(&self, object: &str, field: &str, def: FieldDef) -> Result<(), SimError> {
        self.edit_object(object, |obj| {
            let existing = obj
                .fields
                .keys()
                .find(|k| k.eq_ignore_ascii_case(field))
                .cloned();
            obj.fields
                .insert(existing.unwrap_or_else(|| field.to_owned()), def);
        })
    }

    fn edit_object(
        &self,
        object: &str,
        edit: impl FnOnce(&mut crate::org::ObjectDef),
    ) -> Result<(), SimError> {
        let current = self.shared.org();
        let (name, _) = current
            .object(object)
            .ok_or_else(|| SimError::UnknownObject(object.to_owned()))?;
        let mut def = current.def.clone();
        if let Some(obj) = def.objects.get_mut(name) {
            edit(obj);
        }
        self.install(def).map(|_| ())
    }

    fn install(&self, org: OrgDefinition) -> Result<Arc<CompiledOrg>, SimError> {
        let compiled = Arc::new(CompiledOrg::compile(org)?);
        // Swapped under the store lock so no upsert sees indexes built for another org.
        let mut store = lock(&self.shared.store);
        store.replace_org(Arc::clone(&compiled));
        *self.shared.org.write().unwrap_or_else(|e| e.into_inner()) = Arc::clone(&compiled);
        Ok(compiled)
    }

    fn reset_runtime(&self, def: &OrgDefinition) {
        self.shared.api_used.store(def.api.used, Ordering::SeqCst);
        self.shared
            .latency_ms
            .store(def.latency_ms, Ordering::SeqCst);
        let mut tokens = lock(&self.shared.refresh_tokens);
        tokens.clear();
        for client in &def.oauth.clients {
            for t in &client.refresh_tokens {
                tokens.insert(t.clone(), client.client_id.clone());
            }
        }
    }

    /// The records of an object, sorted by external id.
    pub fn records(&self, object: &str) -> Result<Vec<RecordView>, SimError> {
        let org = self.shared.org();
        let name = match org.object(object) {
            Some((n, _)) => n.to_owned(),
            None => object.to_owned(),
        };
        let store = lock(&self.shared.store);
        let Some(obj) = store.object(&name) else {
            return if org.object(object).is_some() {
                Ok(Vec::new())
            } else {
                Err(SimError::UnknownObject(object.to_owned()))
            };
        };
        let mut out: Vec<RecordView> = obj.records.iter().map(RecordView::from).collect();
        drop(store);
        out.sort_by(|a, b| a.external_id.cmp(&b.external_id).then(a.id.cmp(&b.id)));
        Ok(out)
    }

    /// Deletes every record of an object; returns how many there were.
    pub fn delete_records(&self, object: &str) -> Result<usize, SimError> {
        let org = self.shared.org();
        let (name, _) = org
            .object(object)
            .ok_or_else(|| SimError::UnknownObject(object.to_owned()))?;
        Ok(lock(&self.shared.store).clear(name))
    }

    pub fn stats(&self) -> Stats {
        let c = &self.shared.stats;
        Stats {
            api_calls: c.api_calls.load(Ordering::SeqCst),
            token_requests: c.token_requests.load(Ordering::SeqCst),
            upsert_calls: c.upsert_calls.load(Ordering::SeqCst),
            records_written: c.records_written.load(Ordering::SeqCst),
            records_failed: c.records_failed.load(Ordering::SeqCst),
        }
    }

    pub fn reset_stats(&self) {
        let c = &self.shared.stats;
        for counter in [
            &c.api_calls,
            &c.token_requests,
            &c.upsert_calls,
            &c.records_written,
            &c.records_failed,
        ] {
            counter.store(0, Ordering::SeqCst);
        }
    }

    /// Queues a fault for the next upsert calls; `expire_sessions` takes effect at once.
    pub fn push_fault(&self, fault: Fault) {
        if fault.kind == FaultKind::ExpireSessions {
            self.expire_sessions();
            return;
        }
        lock(&self.shared.faults).push(fault);
    }

    pub fn faults(&self) -> Vec<Fault> {
        lock(&self.shared.faults).list()
    }

    pub fn clear_faults(&self) {
        lock(&self.shared.faults).clear();
    }

    /// Invalidates every access token issued so far.
    pub fn expire_sessions(&self) {
        lock(&self.shared.sessions).clear();
    }

    pub fn set_latency_ms(&self, ms: u64) {
        self.shared.latency_ms.store(ms, Ordering::SeqCst);
    }

    pub fn latency_ms(&self) -> u64 {
        self.shared.latency_ms.load(Ordering::SeqCst)
    }

    /// Mints a refresh token for a client, as if a user had approved the connected app.
    pub fn issue_refresh_token(&self, client_id: &str) -> Result<String, SimError> {
        if self.shared.org().client(client_id).is_none() {
            return Err(SimError::UnknownClient(client_id.to_owned()));
        }
        let token = oauth::new_refresh_token();
        lock(&self.shared.refresh_tokens).insert(token.clone(), client_id.to_owned());
        Ok(token)
    }

    pub fn api_usage(&self) -> ApiUsage {
        self.shared.usage()
    }

    /// Sets how many API requests the org has used (e.g. close to the maximum).
    pub fn set_api_used(&self, used: u64) {
        self.shared.api_used.store(used, Ordering::SeqCst);
    }
}
