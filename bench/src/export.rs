//! One measurement of our export path: a fresh store with the job, its settings and N
//! queued records (the enqueue is timed apart), then export runs of the real engine with
//! the real Salesforce client against the simulator until the queue is drained.

use crate::data::{self, Contacts};
use crate::error::{BenchError, Context, Result};
use crate::rss;
use crate::sim::Sim;
use crate::store::{BenchStore, StoreKind};
use crm_export_core::engine::{Engine, EngineConfig, RunCounts, RunOptions};
use crm_export_core::events::RecordingPublisher;
use crm_export_core::ports::{Clock, CrmClient, StateStore, SystemClock, UpsertRequest};
use crm_export_core::{
    BatchSize, CrmReply, Event, EventKind, JobDefinition, JobRef, RecordOutcome, Settings,
    SettingsChange, TenantId,
};
use crm_export_salesforce::{Credentials, SalesforceClient, SalesforceConfig};
use serde::Serialize;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

pub const TENANT: &str = "bench";
/// Records per enqueue call (a producer's call); DynamoDB chunks further inside.
const ENQUEUE_CHUNK: usize = 5_000;
/// Export runs of one measurement at most (one is expected; more only after a deadline).
const MAX_RUNS: u32 = 20;
/// The deadline handed to each run: far beyond any measurement.
const RUN_BUDGET: chrono::Duration = chrono::Duration::hours(2);

/// The knobs of one measurement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Setting {
    pub latency_ms: u64,
    pub batch_size: u32,
    pub in_flight: u32,
}

impl Setting {
    /// `in_flight × batch_size / latency`, records per second (none at 0 ms).
    pub fn ideal_records_per_sec(&self) -> Option<f64> {
        (self.latency_ms > 0).then(|| {
            f64::from(self.in_flight) * f64::from(self.batch_size) * 1000.0 / self.latency_ms as f64
        })
    }
}

/// The job's settings: exporting on, the setting's batch size and window, defaults else.
pub fn settings_for(setting: &Setting) -> Result<Settings> {
    Ok(Settings {
        export_to_crm: true,
        batch_size: BatchSize::new(setting.batch_size).ctx("--batch-size")?,
        max_in_flight: setting.in_flight,
        ..Settings::default()
    })
}

pub fn tenant() -> TenantId {
    TenantId::new(TENANT).expect("a valid tenant id")
}

pub fn job_ref(def: &JobDefinition) -> JobRef {
    JobRef::new(tenant(), def.job_id.clone())
}

/// Stores the job definition and its settings, as an operator would have.
pub async fn define_job(store: &dyn StateStore, def: &JobDefinition, s: Settings) -> Result<()> {
    let tenant = tenant();
    store
        .put_job(&tenant, def.clone())
        .await
        .ctx("storing the job")?;
    let now = SystemClock.now();
    let change = SettingsChange {
        version: 1,
        at: now,
        actor: "crm-export-bench".into(),
        old: Settings::default(),
        new: s,
        acknowledged_data_inconsistency: false,
    };
    let event = Event {
        id: uuid::Uuid::new_v4().to_string(),
        kind: EventKind::SettingsChanged,
        tenant: tenant.clone(),
        job: None,
        at: now,
        detail: serde_json::json!({"version": 1, "actor": "crm-export-bench"}),
    };
    store
        .put_settings(&tenant, 0, change, event)
        .await
        .ctx("storing the settings")?;
    Ok(())
}

/// Queues records `0..n` in producer calls of [`ENQUEUE_CHUNK`]; returns the seconds taken.
pub async fn enqueue(
    store: &dyn StateStore,
    job: &JobRef,
    contacts: &Contacts,
    n: usize,
) -> Result<f64> {
    let started = Instant::now();
    let mut start = 0;
    while start < n {
        let end = (start + ENQUEUE_CHUNK).min(n);
        let records = contacts.records(start..end);
        store
            .enqueue(job, records, SystemClock.now())
            .await
            .ctx("enqueueing")?;
        start = end;
    }
    Ok(started.elapsed().as_secs_f64())
}

/// Our client for the simulator: the demo app's client credentials, trusting its CA.
pub fn client_config(sim_url: &str, ca_pem: &str) -> SalesforceConfig {
    let mut cfg = SalesforceConfig::new(
        sim_url,
        Credentials::ClientCredentials {
            client_id: data::CLIENT_ID.into(),
            client_secret: data::CLIENT_SECRET.into(),
        },
    );
    cfg.extra_root_ca_pem = Some(ca_pem.to_owned());
    cfg
}

/// Wraps the CRM client and records when each upsert started and ended.
pub struct TimedCrm<'a> {
    inner: &'a dyn CrmClient,
    origin: Instant,
    calls: Mutex<Vec<(f64, f64)>>,
    first_start: OnceLock<Instant>,
    first_answer: OnceLock<Instant>,
}

impl<'a> TimedCrm<'a> {
    pub fn new(inner: &'a dyn CrmClient) -> Self {
        Self {
            inner,
            origin: Instant::now(),
            calls: Mutex::new(Vec::new()),
            first_start: OnceLock::new(),
            first_answer: OnceLock::new(),
        }
    }
    /// When the first upsert was started (the client then still has to get a token).
    pub fn first_start(&self) -> Option<Instant> {
        self.first_start.get().copied()
    }
    /// When the first upsert was answered.
    pub fn first_answer(&self) -> Option<Instant> {
        self.first_answer.get().copied()
    }
    fn intervals(&self) -> Vec<(f64, f64)> {
        self.calls.lock().map(|c| c.clone()).unwrap_or_default()
    }
    fn secs(&self, at: Instant) -> f64 {
        at.saturating_duration_since(self.origin).as_secs_f64()
    }
}

#[async_trait::async_trait]
impl CrmClient for TimedCrm<'_> {
    async fn upsert(&self, request: &UpsertRequest) -> CrmReply<Vec<RecordOutcome>> {
        let started = Instant::now();
        let _ = self.first_start.set(started);
        let start = self.secs(started);
        let reply = self.inner.upsert(request).await;
        let now = Instant::now();
        let _ = self.first_answer.set(now);
        if let Ok(mut c) = self.calls.lock() {
            c.push((start, self.secs(now)));
        }
        reply
    }
    async fn check_connection(&self, timeout: Duration) -> CrmReply<()> {
        self.inner.check_connection(timeout).await
    }
}

/// How the CRM calls filled the export's time: where the window was full and where no
/// call was in flight at all (store and engine work between rounds of calls).
#[derive(Debug, Clone, Default, Serialize)]
pub struct CrmTiming {
    pub calls: usize,
    pub mean_call_ms: f64,
    pub max_call_ms: f64,
    /// Calls in flight on average over the export (the window is the most it can be).
    pub mean_in_flight: f64,
    /// Seconds with no call in flight, between the first call's start and the last one's
    /// end.
    pub idle_secs: f64,
    /// Stretches with no call in flight between two calls, and their mean length.
    pub idle_gaps: usize,
    pub mean_gap_ms: f64,
    /// From the run's start to the first call, and from the last answer to the run's end.
    pub before_first_call_ms: f64,
    pub after_last_call_ms: f64,
}

fn crm_timing(calls: &[(f64, f64)], start: f64, end: f64) -> CrmTiming {
    if calls.is_empty() {
        return CrmTiming::default();
    }
    let mut sorted = calls.to_vec();
    sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total: f64 = sorted.iter().map(|(s, e)| e - s).sum();
    let max = sorted.iter().map(|(s, e)| e - s).fold(0.0, f64::max);
    let (mut gaps, mut idle) = (0usize, 0.0f64);
    let mut busy_until = sorted[0].1;
    for (s, e) in &sorted[1..] {
        if *s > busy_until {
            gaps += 1;
            idle += s - busy_until;
        }
        busy_until = busy_until.max(*e);
    }
    let wall = (end - start).max(f64::EPSILON);
    CrmTiming {
        calls: sorted.len(),
        mean_call_ms: total * 1000.0 / sorted.len() as f64,
        max_call_ms: max * 1000.0,
        mean_in_flight: total / wall,
        idle_secs: idle,
        idle_gaps: gaps,
        mean_gap_ms: if gaps > 0 {
            idle * 1000.0 / gaps as f64
        } else {
            0.0
        },
        before_first_call_ms: (sorted[0].0 - start).max(0.0) * 1000.0,
        after_last_call_ms: (end - busy_until).max(0.0) * 1000.0,
    }
}

/// Calls of one store operation during an export.
#[derive(Debug, Clone, Serialize)]
pub struct StoreOpFigure {
    pub op: &'static str,
    pub calls: u64,
    pub total_secs: f64,
    pub mean_ms: f64,
}

/// Everything one measurement of our export path found.
#[derive(Debug, Clone, Serialize)]
pub struct ExportResult {
    pub store: &'static str,
    pub setting: Setting,
    pub records: usize,
    pub enqueue_secs: f64,
    pub export_secs: f64,
    pub records_per_sec: f64,
    pub ideal_records_per_sec: Option<f64>,
    pub ratio_to_ideal: Option<f64>,
    /// `in_flight × batch_size / mean call time`: the ideal with the calls as long as they
    /// really took (latency plus TLS, JSON and the simulator's own work), so the rest of
    /// the gap to it is the engine's.
    pub ideal_at_mean_call: Option<f64>,
    pub runs: u32,
    pub outcome: String,
    pub completed: bool,
    pub counts: RunCounts,
    pub sim: sf_simulator::Stats,
    /// Store port calls during the export, the time spent in them (summed over calls,
    /// so concurrent calls add up), and both by operation.
    pub store_calls: u64,
    pub store_secs: f64,
    pub store_calls_by_op: Vec<StoreOpFigure>,
    /// DynamoDB HTTP requests during the export (DynamoDB store only).
    pub backend_requests: Option<u64>,
    /// This process's RSS when the export started and its peak during it, KiB.
    pub rss_at_start_kb: Option<u64>,
    pub peak_rss_kb: Option<u64>,
    /// False when the peak could not be reset: it then covers the process's whole life.
    pub peak_is_per_setting: bool,
    /// The simulator child's peak RSS during the export (child mode only), KiB.
    pub sim_peak_rss_kb: Option<u64>,
    pub crm: CrmTiming,
}

impl ExportResult {
    pub fn per_1000(&self, n: u64) -> f64 {
        n as f64 * 1000.0 / self.records.max(1) as f64
    }
    pub fn sim_api_per_1000(&self) -> f64 {
        self.per_1000(self.sim.api_calls)
    }
    pub fn report_api_per_1000(&self) -> f64 {
        self.per_1000(self.counts.api_calls)
    }
    pub fn store_calls_per_1000(&self) -> f64 {
        self.per_1000(self.store_calls)
    }
    /// Every record accepted once, none refused, the queue drained.
    pub fn correct(&self) -> bool {
        self.completed
            && self.counts.accepted == self.records as u64
            && self.sim.records_written == self.records as u64
            && self.sim.records_failed == 0
    }
}

fn add_counts(total: &mut RunCounts, c: &RunCounts) {
    total.sent += c.sent;
    total.accepted += c.accepted;
    total.superseded += c.superseded;
    total.record_errors += c.record_errors;
    total.errors_resolved += c.errors_resolved;
    total.errors_parked += c.errors_parked;
    total.errors_skipped += c.errors_skipped;
    total.transient_retries += c.transient_retries;
    total.split_requests += c.split_requests;
    total.batches += c.batches;
    total.api_calls += c.api_calls;
}

/// A fresh store holding the job, its settings and records `0..n`.
pub struct Prepared {
    pub store: BenchStore,
    pub job: JobRef,
    pub records: usize,
    pub enqueue_secs: f64,
}

pub async fn prepare(
    kind: StoreKind,
    contacts: &Contacts,
    def: &JobDefinition,
    setting: &Setting,
    n: usize,
) -> Result<Prepared> {
    let store = BenchStore::fresh(kind).await?;
    let job = job_ref(def);
    define_job(store.port(), def, settings_for(setting)?).await?;
    let enqueue_secs = enqueue(store.port(), &job, contacts, n).await?;
    Ok(Prepared {
        store,
        job,
        records: n,
        enqueue_secs,
    })
}

/// Exports everything `prepared` holds to the simulator at `setting.latency_ms`.
pub async fn export(prepared: &Prepared, sim: &Sim, setting: &Setting) -> Result<ExportResult> {
    sim.reset().await?;
    sim.set_latency_ms(setting.latency_ms).await?;
    let store = &prepared.store;
    let client = SalesforceClient::new(client_config(sim.base_url(), sim.ca_pem()))
        .ctx("building the Salesforce client")?;
    let timed = TimedCrm::new(&client);
    let events = RecordingPublisher::new();
    let clock = SystemClock;
    let config = EngineConfig::default();
    let engine = Engine::new(store.port(), &timed, &events, &clock, &config);

    let peak_is_per_setting = rss::reset_peak(None);
    if let Some(pid) = sim.child_pid() {
        rss::reset_peak(Some(pid));
    }
    let rss_at_start_kb = rss::current_kb();
    let calls_before = store.calls();
    let requests_before = store.backend_requests();

    let started = Instant::now();
    let start_secs = started
        .saturating_duration_since(timed.origin)
        .as_secs_f64();
    let mut counts = RunCounts::default();
    let mut runs = 0;
    let outcome = loop {
        let opts = RunOptions::new(clock.now() + RUN_BUDGET);
        let report = engine
            .run_export(&prepared.job, &opts)
            .await
            .ctx("the export run failed")?;
        runs += 1;
        add_counts(&mut counts, &report.counts);
        let more = report.outcome.name() == "deadline_reached" && runs < MAX_RUNS;
        if !more {
            break report.outcome.name().to_owned();
        }
    };
    let export_secs = started.elapsed().as_secs_f64();
    let end_secs = start_secs + export_secs;

    let peak_rss_kb = rss::peak_kb();
    let sim_peak_rss_kb = sim
        .child_pid()
        .and_then(|pid| rss::status_kb(Some(pid), "VmHWM"));
    let calls = store.calls().since(&calls_before);
    let backend_requests = match (store.backend_requests(), requests_before) {
        (Some(a), Some(b)) => Some(a - b),
        _ => None,
    };
    let stats = sim.stats().await?;
    let records_per_sec = prepared.records as f64 / export_secs.max(f64::EPSILON);
    let ideal = setting.ideal_records_per_sec();
    let crm = crm_timing(&timed.intervals(), start_secs, end_secs);
    Ok(ExportResult {
        store: store.kind().name(),
        setting: *setting,
        records: prepared.records,
        enqueue_secs: prepared.enqueue_secs,
        export_secs,
        records_per_sec,
        ideal_records_per_sec: ideal,
        ratio_to_ideal: ideal.map(|i| records_per_sec / i),
        ideal_at_mean_call: (crm.mean_call_ms > 0.0).then(|| {
            f64::from(setting.in_flight) * f64::from(setting.batch_size) * 1000.0 / crm.mean_call_ms
        }),
        runs,
        completed: outcome == "completed",
        outcome,
        counts,
        sim: stats,
        store_calls: calls.total(),
        store_secs: calls.total_time().as_secs_f64(),
        store_calls_by_op: calls
            .nonzero()
            .into_iter()
            .map(|(op, n)| StoreOpFigure {
                op: op.name(),
                calls: n,
                total_secs: calls.time(op).as_secs_f64(),
                mean_ms: calls.mean_time(op).as_secs_f64() * 1000.0,
            })
            .collect(),
        backend_requests,
        rss_at_start_kb,
        peak_rss_kb,
        peak_is_per_setting,
        sim_peak_rss_kb,
        crm,
    })
}

/// Prepares, exports, cleans up: one setting end to end.
pub async fn measure(
    kind: StoreKind,
    contacts: &Contacts,
    def: &JobDefinition,
    sim: &Sim,
    setting: &Setting,
    n: usize,
) -> Result<ExportResult> {
    if n == 0 {
        return Err(BenchError::new("--records must be at least 1"));
    }
    let prepared = prepare(kind, contacts, def, setting, n).await?;
    let result = export(&prepared, sim, setting).await;
    prepared.store.cleanup().await;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_time_is_where_no_call_is_in_flight() {
        // Two rounds of two overlapping calls, 0.1 s apart.
        let calls = [(0.0, 1.0), (0.1, 1.1), (1.2, 2.2), (1.2, 2.0)];
        let t = crm_timing(&calls, 0.0, 2.5);
        assert_eq!(t.calls, 4);
        assert_eq!(t.idle_gaps, 1);
        assert!((t.idle_secs - 0.1).abs() < 1e-9);
        assert!((t.after_last_call_ms - 300.0).abs() < 1e-6);
        assert!((t.mean_in_flight - 3.8 / 2.5).abs() < 1e-9);
    }

    #[test]
    fn ideal_is_window_times_batch_over_latency() {
        let s = Setting {
            latency_ms: 150,
            batch_size: 200,
            in_flight: 4,
        };
        assert!((s.ideal_records_per_sec().unwrap() - 5333.333).abs() < 0.01);
        assert_eq!(Setting { latency_ms: 0, ..s }.ideal_records_per_sec(), None);
    }
}
