//! A scriptable CRM for engine tests: per-record outcomes by key and attempt, request-level
//! failures by call number, whole requests refused when a given record is in them. It
//! also watches the SPEC §7 rules a CRM can see: no key in two requests at once, and no
//! accepted version older than one accepted before (versions are read from field `_v`).

use crate::domain::*;
use crate::ports::{CrmClient, UpsertRequest};
use crate::testing::FakeClock;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The outcome scripted for one attempt of one record.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Scripted {
    Accept,
    Transient(&'static str),
    /// Transient, and smaller requests may help (a trigger's CPU-time limit).
    TransientSmaller(&'static str),
    Reject(&'static str, RejectKind),
}

/// One call the CRM received.
#[derive(Debug, Clone, PartialEq)]
pub struct CrmCall {
    pub number: u32,
    pub keys: Vec<String>,
    pub timeout: Duration,
    pub at: Timestamp,
}

#[derive(Debug, Clone)]
pub struct StoredRecord {
    pub fields: serde_json::Map<String, serde_json::Value>,
    pub writes: u32,
}

#[derive(Default)]
struct State {
    records: BTreeMap<String, StoredRecord>,
    max_version: HashMap<String, i64>,
    accepted: HashSet<(String, i64)>,
    scripts: HashMap<String, VecDeque<Scripted>>,
    always: HashMap<String, Scripted>,
    call_failures: HashMap<u32, RequestFailure>,
    lost_replies: HashSet<u32>,
    failing_from: Option<(u32, RequestFailure)>,
    poison: HashMap<String, RequestFailure>,
    attempts: HashMap<String, u32>,
    /// Key → deadline of the request carrying it. A request is dead past its deadline:
    /// the client gave up and, as the engine assumes of the CRM, nothing of it lands later.
    in_flight: HashMap<String, Timestamp>,
    concurrent: u32,
    max_concurrent: u32,
    calls: Vec<CrmCall>,
    violations: Vec<String>,
    latency: Duration,
    usage: Option<ApiUsage>,
}

#[derive(Default)]
pub struct FakeCrm {
    state: Mutex<State>,
    clock: Option<Arc<FakeClock>>,
    case_insensitive: bool,
}

impl FakeCrm {
    pub fn new() -> Self {
        Self::default()
    }
    /// Calls take `latency` of this clock's time; a call whose timeout is shorter fails
    /// with `TIMEOUT` and writes nothing.
    pub fn with_clock(clock: Arc<FakeClock>) -> Self {
        Self {
            clock: Some(clock),
            ..Self::default()
        }
    }
    pub fn case_insensitive(mut self) -> Self {
        self.case_insensitive = true;
        self
    }
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("fake crm lock")
    }
    fn ident(&self, key: &str) -> String {
        if self.case_insensitive {
            key.to_lowercase()
        } else {
            key.to_string()
        }
    }

    /// Outcomes for the next attempts of `key`, in order; afterwards the standing rule
    /// (or acceptance) applies.
    pub fn script(&self, key: &str, outcomes: impl IntoIterator<Item = Scripted>) {
        let k = self.ident(key);
        self.lock().scripts.entry(k).or_default().extend(outcomes);
    }
    /// `key` gets this outcome on every attempt until [`FakeCrm::clear`].
    pub fn always(&self, key: &str, outcome: Scripted) {
        let k = self.ident(key);
        self.lock().always.insert(k, outcome);
    }
    pub fn clear(&self, key: &str) {
        let k = self.ident(key);
        let mut s = self.lock();
        s.always.remove(&k);
        s.scripts.remove(&k);
        s.poison.remove(&k);
    }
    /// Call number `n` (1-based, all calls counted) fails as a whole.
    pub fn fail_call(&self, n: u32, failure: RequestFailure) {
        self.lock().call_failures.insert(n, failure);
    }
    /// Call number `n` is applied but its reply is lost (a timeout after the CRM wrote).
    pub fn lose_reply_of_call(&self, n: u32) {
        self.lock().lost_replies.insert(n);
    }
    /// Every call from number `n` on fails as a whole (an outage), until cleared.
    pub fn fail_from_call(&self, n: u32, failure: RequestFailure) {
        self.lock().failing_from = Some((n, failure));
    }
    /// Ends an outage and drops every whole-call failure still scheduled.
    pub fn end_outage(&self) {
        let mut s = self.lock();
        s.failing_from = None;
        s.call_failures.clear();
        s.lost_replies.clear();
    }
    /// Any request that contains `key` is refused as a whole.
    pub fn refuse_requests_with(&self, key: &str, failure: RequestFailure) {
        let k = self.ident(key);
        self.lock().poison.insert(k, failure);
    }
    pub fn set_latency(&self, d: Duration) {
        self.lock().latency = d;
    }
    pub fn set_usage(&self, usage: ApiUsage) {
        self.lock().usage = Some(usage);
    }

    pub fn record(&self, key: &str) -> Option<StoredRecord> {
        let k = self.ident(key);
        self.lock().records.get(&k).cloned()
    }
    pub fn records(&self) -> BTreeMap<String, StoredRecord> {
        self.lock().records.clone()
    }
    pub fn calls(&self) -> Vec<CrmCall> {
        self.lock().calls.clone()
    }
    pub fn call_count(&self) -> u32 {
        self.lock().calls.len() as u32
    }
    /// Attempts made for `key`, all calls together.
    pub fn attempts(&self, key: &str) -> u32 {
        let k = self.ident(key);
        self.lock().attempts.get(&k).copied().unwrap_or(0)
    }
    /// The most upsert calls that were in progress at once.
    pub fn max_concurrent_calls(&self) -> u32 {
        self.lock().max_concurrent
    }
    /// Whether version `v` (field `_v`) of `key` was ever accepted.
    pub fn was_accepted(&self, key: &str, v: i64) -> bool {
        let k = self.ident(key);
        self.lock().accepted.contains(&(k, v))
    }
    /// Broken SPEC §7 rules seen so far (empty when all is well).
    pub fn violations(&self) -> Vec<String> {
        self.lock().violations.clone()
    }

    fn now(&self) -> Timestamp {
        self.clock
            .as_ref()
            .map(|c| crate::ports::Clock::now(c.as_ref()))
            .unwrap_or_else(chrono::Utc::now)
    }

    fn key_of(
        &self,
        req: &UpsertRequest,
        rec: &serde_json::Map<String, serde_json::Value>,
    ) -> String {
        match rec.get(&req.external_id_field) {
            Some(serde_json::Value::String(s)) => self.ident(s),
            Some(v) => self.ident(&v.to_string()),
            None => String::new(),
        }
    }
}

#[async_trait::async_trait]
impl CrmClient for FakeCrm {
    async fn upsert(&self, req: &UpsertRequest) -> CrmReply<Vec<RecordOutcome>> {
        let keys: Vec<String> = req.records.iter().map(|r| self.key_of(req, r)).collect();
        let (number, latency, usage, started) = {
            let mut s = self.lock();
            let number = s.calls.len() as u32 + 1;
            let at = self.now();
            s.calls.push(CrmCall {
                number,
                keys: keys.clone(),
                timeout: req.timeout,
                at,
            });
            s.concurrent += 1;
            s.max_concurrent = s.max_concurrent.max(s.concurrent);
            let deadline =
                at + chrono::Duration::from_std(req.timeout).unwrap_or(chrono::Duration::MAX);
            for k in &keys {
                if let Some(other) = s.in_flight.insert(k.clone(), deadline) {
                    if other > at {
                        s.violations.push(format!(
                            "key {k} sent while already in flight (call {number})"
                        ));
                    }
                }
            }
            (number, s.latency, s.usage, at)
        };
        // Let concurrent calls overlap, as they would over a network.
        tokio::task::yield_now().await;
        let mut result = self.apply(req, &keys, number, latency, started);
        if self.lock().lost_replies.remove(&number) {
            result = Err(RequestFailure::new(
                RequestFailureKind::Unavailable,
                "TIMEOUT",
                "the reply was lost",
            ));
        }
        {
            let mut s = self.lock();
            s.concurrent -= 1;
            for k in &keys {
                // Only this call's entry: a later call may carry the key by now.
                if s.in_flight.get(k).is_some_and(|d| {
                    *d == started
                        + chrono::Duration::from_std(req.timeout).unwrap_or(chrono::Duration::MAX)
                }) {
                    s.in_flight.remove(k);
                }
            }
        }
        CrmReply {
            result,
            api_calls: 1,
            usage,
        }
    }

    async fn check_connection(&self, _timeout: Duration) -> CrmReply<()> {
        let mut s = self.lock();
        let number = s.calls.len() as u32 + 1;
        let at = self.now();
        s.calls.push(CrmCall {
            number,
            keys: Vec::new(),
            timeout: _timeout,
            at,
        });
        let result = match call_failure(&mut s, number) {
            Some(f) => Err(f),
            None => Ok(()),
        };
        CrmReply {
            result,
            api_calls: 1,
            usage: s.usage,
        }
    }
}

fn call_failure(s: &mut State, number: u32) -> Option<RequestFailure> {
    if let Some(f) = s.call_failures.remove(&number) {
        return Some(f);
    }
    match &s.failing_from {
        Some((from, f)) if number >= *from => Some(f.clone()),
        _ => None,
    }
}

impl FakeCrm {
    fn apply(
        &self,
        req: &UpsertRequest,
        keys: &[String],
        number: u32,
        latency: Duration,
        started: Timestamp,
    ) -> Result<Vec<RecordOutcome>, RequestFailure> {
        if let Some(clock) = &self.clock {
            // Calls in flight together finish together: each ends at its own start plus
            // the latency, not after the others.
            let to_chrono =
                |d: Duration| chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX);
            let deadline = started + to_chrono(req.timeout);
            let now = crate::ports::Clock::now(clock.as_ref());
            if latency > req.timeout || now > deadline {
                clock.advance_to(deadline);
                return Err(RequestFailure::new(
                    RequestFailureKind::Unavailable,
                    "TIMEOUT",
                    "the call timed out",
                ));
            }
            clock.advance_to(started + to_chrono(latency));
        }
        let mut s = self.lock();
        if let Some(f) = call_failure(&mut s, number) {
            return Err(f);
        }
        if let Some(f) = keys.iter().find_map(|k| s.poison.get(k).cloned()) {
            return Err(f);
        }
        let mut out = Vec::with_capacity(keys.len());
        for (k, rec) in keys.iter().zip(&req.records) {
            *s.attempts.entry(k.clone()).or_default() += 1;
            let scripted = s
                .scripts
                .get_mut(k)
                .and_then(|q| q.pop_front())
                .or_else(|| s.always.get(k).cloned())
                .unwrap_or(Scripted::Accept);
            out.push(match scripted {
                Scripted::Accept => {
                    if let Some(v) = rec.get("_v").and_then(|v| v.as_i64()) {
                        let max = s.max_version.get(k).copied().unwrap_or(i64::MIN);
                        if v < max {
                            s.violations.push(format!(
                                "stale overwrite of {k}: version {v} accepted after {max}"
                            ));
                        }
                        s.max_version.insert(k.clone(), max.max(v));
                        s.accepted.insert((k.clone(), v));
                    }
                    let created = !s.records.contains_key(k);
                    let entry = s.records.entry(k.clone()).or_insert(StoredRecord {
                        fields: Default::default(),
                        writes: 0,
                    });
                    entry.fields = rec.clone();
                    entry.writes += 1;
                    RecordOutcome::Accepted {
                        crm_id: Some(format!("003FAKE{k}")),
                        created,
                    }
                }
                Scripted::Transient(code) => RecordOutcome::Transient {
                    error: RecordError::new(code, "transient"),
                    retry_smaller: false,
                },
                Scripted::TransientSmaller(code) => RecordOutcome::Transient {
                    error: RecordError::new(code, "Apex CPU time limit exceeded"),
                    retry_smaller: true,
                },
                Scripted::Reject(code, kind) => RecordOutcome::Rejected {
                    error: RecordError::new(code, format!("{code} for {k}")),
                    kind,
                },
            });
        }
        Ok(out)
    }
}
