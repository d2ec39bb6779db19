//! The cold path: how long a fresh process takes from its start to an engine that can run
//! (store opened, Salesforce client built) and to the first CRM call answered (token
//! fetched over a new TLS connection, first upsert done). The parent prepares a store with
//! one batch of records, then starts this binary's hidden `cold-child` subcommand several
//! times; the child stamps wall-clock times (µs since the epoch) at each milestone and the
//! parent subtracts the time it spawned it. Medians over the runs are reported.

use crate::data::Contacts;
use crate::error::{BenchError, Context, Result};
use crate::export::{self, Setting, TimedCrm};
use crate::sim::{Sim, SimMode};
use crate::store::{BenchStore, DynamoTables, StoreKind};
use crm_export_core::engine::{Engine, EngineConfig, RunOptions};
use crm_export_core::events::RecordingPublisher;
use crm_export_core::ports::{Clock, SystemClock};
use crm_export_core::JobDefinition;
use crm_export_salesforce::SalesforceClient;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Records each cold run exports: one batch.
pub const COLD_RECORDS: usize = 200;

pub fn unix_us(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// What the child reports (µs since the epoch).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChildStamps {
    pub main_us: u64,
    pub store_opened_us: u64,
    pub engine_ready_us: u64,
    pub first_call_us: Option<u64>,
    pub first_answer_us: Option<u64>,
    pub done_us: u64,
    pub outcome: String,
    pub accepted: u64,
    pub api_calls: u64,
}

/// One cold run, in ms after the parent spawned the process.
#[derive(Debug, Clone, Serialize)]
pub struct ColdRun {
    pub to_main_ms: f64,
    pub to_store_opened_ms: f64,
    pub to_engine_ready_ms: f64,
    pub to_first_call_ms: Option<f64>,
    pub to_first_answer_ms: Option<f64>,
    pub to_done_ms: f64,
    pub outcome: String,
    pub accepted: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ColdResult {
    pub store: &'static str,
    pub runs: Vec<ColdRun>,
    pub median_to_main_ms: f64,
    pub median_to_store_opened_ms: f64,
    pub median_to_engine_ready_ms: f64,
    pub median_to_first_call_ms: Option<f64>,
    pub median_to_first_answer_ms: Option<f64>,
    pub median_to_done_ms: f64,
}

impl ColdResult {
    pub fn correct(&self) -> bool {
        self.runs
            .iter()
            .all(|r| r.outcome == "completed" && r.accepted == COLD_RECORDS as u64)
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

/// Runs the cold path `runs` times (simulator latency 0 ms, so the figures are ours).
pub async fn run_cold(
    kind: StoreKind,
    mode: SimMode,
    runs: usize,
    contacts: &Contacts,
    def: &JobDefinition,
    say: &dyn Fn(&str),
) -> Result<ColdResult> {
    let sim = Sim::start(mode).await?;
    let dir = tempfile::tempdir().ctx("creating a temp dir")?;
    let ca_file = dir.path().join("sim-ca.pem");
    std::fs::write(&ca_file, sim.ca_pem()).ctx("writing the simulator's CA")?;
    let exe = std::env::current_exe().ctx("locating this executable")?;
    let setting = Setting {
        latency_ms: 0,
        batch_size: 200,
        in_flight: crm_export_core::Settings::default().max_in_flight,
    };
    let mut out = Vec::new();
    for i in 0..runs.max(1) {
        let prepared = export::prepare(kind, contacts, def, &setting, COLD_RECORDS).await?;
        sim.reset().await?;
        let mut cmd = tokio::process::Command::new(&exe);
        cmd.arg("cold-child")
            .args(["--store", kind.name()])
            .args(["--sim-url", sim.base_url()])
            .arg("--ca-file")
            .arg(&ca_file)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        if let Some(p) = prepared.store.sqlite_path() {
            cmd.arg("--sqlite").arg(p);
        }
        if let Some(t) = prepared.store.dynamo_tables() {
            cmd.args(["--state-table", &t.state, "--queue-table", &t.queue]);
        }
        let spawned_us = unix_us(SystemTime::now());
        let child = cmd.spawn().ctx("starting the cold-path child")?;
        let output = tokio::time::timeout(Duration::from_secs(300), child.wait_with_output())
            .await
            .ctx("the cold-path child did not finish within 300 s")?
            .ctx("running the cold-path child")?;
        prepared.store.cleanup().await;
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stamps: ChildStamps = stdout
            .lines()
            .rev()
            .find_map(|l| serde_json::from_str(l).ok())
            .ctx(format!(
                "the cold-path child printed no result ({})",
                output.status
            ))?;
        let ms = |us: u64| us.saturating_sub(spawned_us) as f64 / 1000.0;
        let run = ColdRun {
            to_main_ms: ms(stamps.main_us),
            to_store_opened_ms: ms(stamps.store_opened_us),
            to_engine_ready_ms: ms(stamps.engine_ready_us),
            to_first_call_ms: stamps.first_call_us.map(ms),
            to_first_answer_ms: stamps.first_answer_us.map(ms),
            to_done_ms: ms(stamps.done_us),
            outcome: stamps.outcome,
            accepted: stamps.accepted,
        };
        say(&format!(
            "  cold run {}: main {:.1} ms, store opened {:.1} ms, engine ready {:.1} ms, first upsert started {}, answered {}, run done {:.1} ms ({}, {} accepted)",
            i + 1,
            run.to_main_ms,
            run.to_store_opened_ms,
            run.to_engine_ready_ms,
            run.to_first_call_ms
                .map_or_else(|| "never".into(), |v| format!("{v:.1} ms")),
            run.to_first_answer_ms
                .map_or_else(|| "never".into(), |v| format!("{v:.1} ms")),
            run.to_done_ms,
            run.outcome,
            run.accepted
        ));
        out.push(run);
    }
    sim.shutdown().await;
    let firsts: Vec<f64> = out.iter().filter_map(|r| r.to_first_answer_ms).collect();
    let starts: Vec<f64> = out.iter().filter_map(|r| r.to_first_call_ms).collect();
    Ok(ColdResult {
        store: kind.name(),
        median_to_main_ms: median(out.iter().map(|r| r.to_main_ms).collect()),
        median_to_store_opened_ms: median(out.iter().map(|r| r.to_store_opened_ms).collect()),
        median_to_engine_ready_ms: median(out.iter().map(|r| r.to_engine_ready_ms).collect()),
        median_to_first_call_ms: (starts.len() == out.len()).then(|| median(starts)),
        median_to_first_answer_ms: (firsts.len() == out.len()).then(|| median(firsts)),
        median_to_done_ms: median(out.iter().map(|r| r.to_done_ms).collect()),
        runs: out,
    })
}

/// Arguments of the `cold-child` subcommand.
#[derive(Debug, Clone)]
pub struct ChildArgs {
    pub store: StoreKind,
    pub sqlite: Option<PathBuf>,
    pub tables: Option<DynamoTables>,
    pub sim_url: String,
    pub ca_file: PathBuf,
}

/// The child: open the store, build the client and the engine, run one export, print the
/// stamps. `main_at` is when `main` was entered.
pub async fn child_main(args: ChildArgs, main_at: SystemTime) -> Result<()> {
    let main_us = unix_us(main_at);
    let store = match (args.store, &args.sqlite, &args.tables) {
        (StoreKind::Sqlite, Some(p), _) => BenchStore::open_sqlite(p)?,
        (StoreKind::Dynamodb, _, Some(t)) => BenchStore::open_dynamo(t).await?,
        _ => {
            return Err(BenchError::new(
                "cold-child needs --sqlite FILE or --state-table/--queue-table",
            ))
        }
    };
    let store_opened_us = unix_us(SystemTime::now());
    let ca = std::fs::read_to_string(&args.ca_file).ctx("reading the CA file")?;
    let client = SalesforceClient::new(export::client_config(&args.sim_url, &ca))
        .ctx("building the Salesforce client")?;
    let timed = TimedCrm::new(&client);
    let events = RecordingPublisher::new();
    let clock = SystemClock;
    let config = EngineConfig::default();
    let def = crate::data::job_definition()?;
    let job = export::job_ref(&def);
    let engine = Engine::new(store.port(), &timed, &events, &clock, &config);
    let engine_ready_us = unix_us(SystemTime::now());
    let opts = RunOptions::new(clock.now() + chrono::Duration::minutes(10));
    let report = engine
        .run_export(&job, &opts)
        .await
        .ctx("the export run failed")?;
    let done_us = unix_us(SystemTime::now());
    // Instant → wall clock: both read now, so the difference carries over.
    let (now, wall) = (std::time::Instant::now(), SystemTime::now());
    let wall_of = |at: std::time::Instant| unix_us(wall - now.saturating_duration_since(at));
    let first_call_us = timed.first_start().map(wall_of);
    let first_answer_us = timed.first_answer().map(wall_of);
    let stamps = ChildStamps {
        main_us,
        store_opened_us,
        engine_ready_us,
        first_call_us,
        first_answer_us,
        done_us,
        outcome: report.outcome.name().to_owned(),
        accepted: report.counts.accepted,
        api_calls: report.counts.api_calls,
    };
    println!("{}", serde_json::to_string(&stamps).ctx("the stamps")?);
    Ok(())
}
