//! `crm-export-bench`: see bench/README.md. Exit 0 when every check passed, 1 when a check
//! failed (an export incomplete, a record refused, too many API calls), 2 on an error.

use clap::{Parser, Subcommand};
use crm_export_bench::cold::{self, ChildArgs};
use crm_export_bench::sim::{self, SimMode};
use crm_export_bench::store::{DynamoTables, StoreKind};
use crm_export_bench::{data, peer, run_bench, table, BenchOptions, BenchReport, Context};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::SystemTime;

#[derive(Parser, Debug)]
#[command(
    name = "crm-export-bench",
    about = "Benchmark of the export path: engine + Salesforce adapter against the simulator over TLS, with a simple-salesforce peer baseline and a cold-path mode."
)]
struct Args {
    /// Records to export per setting.
    #[arg(long, default_value_t = 100_000)]
    records: usize,
    /// Simulator latency per call, one setting each (comma-separated ms).
    #[arg(long, value_delimiter = ',', default_value = "0,150")]
    latency_ms: Vec<u64>,
    /// State store: sqlite (embedded, temp dir) or dynamodb (moto at MOTO_ENDPOINT).
    #[arg(long, default_value = "sqlite")]
    store: StoreKind,
    /// Where the simulator runs: child (its own process; RSS figures apart) or in-process.
    #[arg(long, default_value = "child")]
    sim: SimArg,
    /// Records per CRM call (the batch_size setting: 25, 50, 100 or 200).
    #[arg(long, default_value_t = 200)]
    batch_size: u32,
    /// Batches in flight at once (the max_in_flight setting; default: the product's).
    #[arg(long)]
    in_flight: Option<u32>,
    /// Also run the peer (simple-salesforce, sequential) at each latency.
    #[arg(long)]
    peer: bool,
    /// Records the peer exports (default: --records).
    #[arg(long)]
    peer_records: Option<usize>,
    /// The peer's virtualenv (created and reused).
    #[arg(long)]
    venv: Option<PathBuf>,
    /// Exit 1 when an export makes more API calls per 1,000 records than this.
    #[arg(long)]
    max_api_calls_per_1000: Option<f64>,
    /// Write every figure as JSON to this file too.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Cold path instead: a fresh process up to its first CRM call, --cold-runs times.
    #[arg(long)]
    cold: bool,
    #[arg(long, default_value_t = 7)]
    cold_runs: usize,
    #[command(subcommand)]
    internal: Option<Internal>,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum SimArg {
    Child,
    InProcess,
}

/// Processes the harness starts itself.
#[derive(Subcommand, Debug)]
enum Internal {
    /// Serves the demo org over TLS until stdin closes (the simulator child).
    #[command(hide = true)]
    ServeSim,
    /// One cold-path run (started by --cold).
    #[command(hide = true)]
    ColdChild {
        #[arg(long)]
        store: StoreKind,
        #[arg(long)]
        sqlite: Option<PathBuf>,
        #[arg(long)]
        state_table: Option<String>,
        #[arg(long)]
        queue_table: Option<String>,
        #[arg(long)]
        sim_url: String,
        #[arg(long)]
        ca_file: PathBuf,
    },
}

fn main() -> ExitCode {
    let main_at = SystemTime::now();
    let args = Args::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let result = rt.block_on(async_main(args, main_at));
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

fn say(s: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{s}");
    let _ = out.flush();
}

async fn async_main(args: Args, main_at: SystemTime) -> crm_export_bench::Result<ExitCode> {
    match args.internal {
        Some(Internal::ServeSim) => {
            sim::serve_child_main().await?;
            return Ok(ExitCode::SUCCESS);
        }
        Some(Internal::ColdChild {
            store,
            sqlite,
            state_table,
            queue_table,
            sim_url,
            ca_file,
        }) => {
            let tables = match (state_table, queue_table) {
                (Some(state), Some(queue)) => Some(DynamoTables { state, queue }),
                _ => None,
            };
            cold::child_main(
                ChildArgs {
                    store,
                    sqlite,
                    tables,
                    sim_url,
                    ca_file,
                },
                main_at,
            )
            .await?;
            return Ok(ExitCode::SUCCESS);
        }
        None => {}
    }
    let mode = match args.sim {
        SimArg::Child => SimMode::Child,
        SimArg::InProcess => SimMode::InProcess,
    };
    if args.cold {
        let def = data::job_definition()?;
        let contacts = data::Contacts::load(chrono::Utc::now().date_naive(), &def)?;
        say(&format!(
            "cold path: {} fresh processes, each opens the {} store, builds the client and the engine, and exports {} records to the simulator ({}, latency 0 ms){}",
            args.cold_runs.max(1),
            args.store.name(),
            cold::COLD_RECORDS,
            mode.name(),
            if cfg!(debug_assertions) { "; DEBUG build" } else { "" },
        ));
        let r = cold::run_cold(args.store, mode, args.cold_runs, &contacts, &def, &say).await?;
        say(&format!(
            "cold path median over {} runs ({} store), ms after spawn: process in main {:.1} | store opened {:.1} | engine ready {:.1} | first upsert started {} | first upsert answered {} | run done {:.1}",
            r.runs.len(),
            r.store,
            r.median_to_main_ms,
            r.median_to_store_opened_ms,
            r.median_to_engine_ready_ms,
            r.median_to_first_call_ms
                .map_or_else(|| "n/a".into(), |v| format!("{v:.1}")),
            r.median_to_first_answer_ms
                .map_or_else(|| "n/a".into(), |v| format!("{v:.1}")),
            r.median_to_done_ms
        ));
        if let Some(path) = &args.json {
            let text = serde_json::to_string_pretty(&r).ctx("serialising the figures")?;
            std::fs::write(path, text).ctx(format!("writing {}", path.display()))?;
        }
        return Ok(if r.correct() {
            ExitCode::SUCCESS
        } else {
            say("FAIL  a cold run did not export its records");
            ExitCode::from(1)
        });
    }

    let defaults = BenchOptions::default();
    let opts = BenchOptions {
        records: args.records,
        latencies_ms: args.latency_ms,
        store: args.store,
        sim: mode,
        batch_size: args.batch_size,
        in_flight: args.in_flight.unwrap_or(defaults.in_flight),
        peer_records: args.peer.then(|| args.peer_records.unwrap_or(args.records)),
        venv: args.venv.unwrap_or_else(peer::default_venv),
        max_api_per_1000: args.max_api_calls_per_1000,
    };
    let report: BenchReport = run_bench(&opts, &say).await?;
    say("");
    say(&table(&report));
    for c in &report.checks {
        say(&format!(
            "{}  {}",
            if c.pass { "PASS" } else { "FAIL" },
            c.name
        ));
    }
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&report).ctx("serialising the figures")?;
        std::fs::write(path, text).ctx(format!("writing {}", path.display()))?;
    }
    Ok(if report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
