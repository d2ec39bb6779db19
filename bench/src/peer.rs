//! The peer baseline: `bench/peer/export_peer.py`, a plain sequential simple-salesforce
//! exporter, run as a child process against the same simulator, data and latency. Its
//! virtualenv (`.venv-bench` at the workspace root) is created on first use and reused.

use crate::error::{BenchError, Context, Result};
use crate::sim::Sim;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

/// Pinned: the figures compare against this version.
pub const SIMPLE_SALESFORCE_VERSION: &str = "1.12.10";

/// The workspace root (the bench crate's parent).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

pub fn default_venv() -> PathBuf {
    workspace_root().join(".venv-bench")
}

pub fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("peer/export_peer.py")
}

/// The venv's python with simple-salesforce at the pinned version, installing it if needed.
pub async fn ensure_venv(venv: &Path, say: &dyn Fn(&str)) -> Result<PathBuf> {
    let python = venv.join("bin/python");
    let check = format!(
        "import importlib.metadata as m, sys; \
         sys.exit(m.version('simple-salesforce') != '{SIMPLE_SALESFORCE_VERSION}')"
    );
    let ok = |python: PathBuf, check: String| async move {
        tokio::process::Command::new(python)
            .args(["-c", &check])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await
            .map(|s| s.success())
            .unwrap_or(false)
    };
    if python.exists() && ok(python.clone(), check.clone()).await {
        return Ok(python);
    }
    say(&format!(
        "creating {} with simple-salesforce=={SIMPLE_SALESFORCE_VERSION} (once)",
        venv.display()
    ));
    run(
        tokio::process::Command::new("python3").args(["-m", "venv", &venv.display().to_string()]),
        "python3 -m venv",
    )
    .await?;
    run(
        tokio::process::Command::new(venv.join("bin/pip")).args([
            "install",
            "--quiet",
            "--disable-pip-version-check",
            &format!("simple-salesforce=={SIMPLE_SALESFORCE_VERSION}"),
        ]),
        "pip install simple-salesforce",
    )
    .await?;
    if !ok(python.clone(), check).await {
        return Err(BenchError::new(format!(
            "{} has no simple-salesforce {SIMPLE_SALESFORCE_VERSION} after installing it",
            venv.display()
        )));
    }
    Ok(python)
}

async fn run(cmd: &mut tokio::process::Command, what: &str) -> Result<()> {
    let status = tokio::time::timeout(Duration::from_secs(600), cmd.status())
        .await
        .ctx(format!("{what} took more than 10 minutes"))?
        .ctx(what)?;
    if !status.success() {
        return Err(BenchError::new(format!("{what} failed ({status})")));
    }
    Ok(())
}

/// What the script prints.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PeerOutput {
    pub records: u64,
    pub accepted: u64,
    pub failed: u64,
    pub api_calls: u64,
    pub read_secs: f64,
    pub login_secs: f64,
    pub upsert_secs: f64,
    pub peak_rss_kb: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct PeerResult {
    pub latency_ms: u64,
    pub out: PeerOutput,
    /// From spawning the interpreter to its exit.
    pub process_secs: f64,
    /// Log in and upserts (what our export time covers too: token and calls).
    pub export_secs: f64,
    pub records_per_sec: f64,
    pub sim: sf_simulator::Stats,
}

impl PeerResult {
    pub fn sim_api_per_1000(&self) -> f64 {
        self.sim.api_calls as f64 * 1000.0 / self.out.records.max(1) as f64
    }
    pub fn correct(&self) -> bool {
        self.out.failed == 0
            && self.out.accepted == self.out.records
            && self.sim.records_written == self.out.records
    }
}

/// Runs the peer on the first `records` lines of `ndjson` against `sim` at `latency_ms`.
pub async fn run_peer(
    python: &Path,
    ndjson: &Path,
    ca_file: &Path,
    sim: &Sim,
    latency_ms: u64,
    records: usize,
) -> Result<PeerResult> {
    sim.reset().await?;
    sim.set_latency_ms(latency_ms).await?;
    // Bounded: far above a sequential run (a call per 200 records at this latency).
    let calls = records.div_ceil(200) as u64;
    let limit = Duration::from_secs(120 + calls * (latency_ms + 200) / 1000 * 3);
    let started = Instant::now();
    let mut cmd = tokio::process::Command::new(python);
    cmd.arg(script())
        .arg("--records")
        .arg(ndjson)
        .args(["--login-url", sim.base_url()])
        .args(["--client-id", crate::data::CLIENT_ID])
        .args(["--client-secret", crate::data::CLIENT_SECRET])
        .args(["--limit", &records.to_string()])
        .env("REQUESTS_CA_BUNDLE", ca_file)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = cmd.spawn().ctx("starting the peer exporter")?;
    let output = tokio::time::timeout(limit, child.wait_with_output())
        .await
        .ctx(format!(
            "the peer exporter did not finish within {}s",
            limit.as_secs()
        ))?
        .ctx("running the peer exporter")?;
    let process_secs = started.elapsed().as_secs_f64();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let last = stdout
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'));
    let out: PeerOutput = match last.map(serde_json::from_str) {
        Some(Ok(o)) => o,
        _ => {
            return Err(BenchError::new(format!(
                "the peer exporter printed no result ({}); stderr:\n{}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            )))
        }
    };
    let sim_stats = sim.stats().await?;
    let export_secs = out.login_secs + out.upsert_secs;
    Ok(PeerResult {
        latency_ms,
        records_per_sec: out.records as f64 / export_secs.max(f64::EPSILON),
        out,
        process_secs,
        export_secs,
        sim: sim_stats,
    })
}
