//! `crmx sim`: serves the Salesforce simulator until Ctrl-C.

use crate::config::{Config, StateBackend, SIM_CLIENT_ID};
use crate::error::{CliError, CliResult};
use crate::output::Outcome;
use crate::sim_admin::demo_org;
use serde_json::json;
use sf_simulator::{GrantType, ServeOptions};
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;

pub async fn run(
    cfg: &Config,
    org_file: Option<&Path>,
    port: u16,
    tls: bool,
    latency_ms: Option<u64>,
) -> CliResult<Outcome> {
    let org = match org_file {
        Some(p) => sf_simulator::load_org(p).map_err(|e| CliError::bad_input(e.to_string()))?,
        None => demo_org()?,
    };
    // The client `--sim` and the demo use, or else the org's first one.
    let client = org
        .oauth
        .clients
        .iter()
        .find(|c| c.client_id == SIM_CLIENT_ID)
        .or_else(|| org.oauth.clients.first())
        .cloned();
    let opts = ServeOptions {
        addr: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
        tls,
    };
    let handle = sf_simulator::serve(org, opts).await.map_err(|e| {
        CliError::unavailable(
            "simulator_unavailable",
            format!("cannot start the simulator: {e}"),
        )
    })?;
    if let Some(ms) = latency_ms {
        handle.set_latency_ms(ms);
    }
    let ca_file = match handle.ca_cert_pem() {
        Some(pem) => {
            let dir = match &cfg.state.backend {
                StateBackend::Sqlite { dir } => dir.clone(),
                StateBackend::Dynamodb { .. } => {
                    std::path::PathBuf::from(crate::config::DEFAULT_STATE_DIR)
                }
            };
            let dir = &dir;
            std::fs::create_dir_all(dir).map_err(|e| {
                CliError::unavailable(
                    "state_unavailable",
                    format!("cannot create {}: {e}", dir.display()),
                )
            })?;
            let path = dir.join("sim-ca.pem");
            std::fs::write(&path, pem).map_err(|e| {
                CliError::unavailable(
                    "state_unavailable",
                    format!("cannot write {}: {e}", path.display()),
                )
            })?;
            Some(path)
        }
        None => None,
    };
    let url = handle.base_url().to_owned();
    let org_id = handle.org().org_id;
    let refresh_token = client
        .as_ref()
        .and_then(|c| c.refresh_tokens.first().cloned());
    let banner_json = json!({
        "url": url,
        "token_url": handle.token_url(),
        "admin_url": format!("{url}/__sim/"),
        "org_id": org_id,
        "client_id": client.as_ref().map(|c| &c.client_id),
        "client_secret": client.as_ref().map(|c| &c.client_secret),
        "refresh_token": refresh_token,
        "grants": client.as_ref().map(|c| &c.grants),
        "ca_cert": ca_file,
        "latency_ms": handle.latency_ms(),
    });
    let mut stdout = std::io::stdout();
    if cfg.output.json {
        let _ = writeln!(stdout, "{banner_json}");
    } else if !cfg.output.quiet {
        let mut s = format!("Salesforce simulator (org {org_id}) serving at {url}\n");
        s.push_str(&format!("  login and instance URL  {url}\n"));
        s.push_str(&format!("  admin API               {url}/__sim/ (org, records/{{object}}, stats, faults, latency)\n"));
        if let Some(c) = &client {
            s.push_str(&format!(
                "  demo credentials        client_id {}  client_secret {}\n",
                c.client_id, c.client_secret
            ));
            if let Some(rt) = &refresh_token {
                if c.grants.contains(&GrantType::RefreshToken) {
                    s.push_str(&format!("  demo refresh token      {rt}\n"));
                }
            }
        }
        if let Some(p) = &ca_file {
            s.push_str(&format!("  CA certificate          {}\n", p.display()));
        }
        let ca_flag = ca_file
            .as_ref()
            .map(|p| format!(" --sim-ca {}", p.display()))
            .unwrap_or_default();
        s.push_str(&format!(
            "Export to it with: crmx export --job JOB --sim {url}{ca_flag}\nPress Ctrl-C to stop."
        ));
        let _ = writeln!(stdout, "{s}");
    }
    // A script reads the banner before the simulator is stopped: do not leave it buffered.
    let _ = stdout.flush();
    tokio::signal::ctrl_c()
        .await
        .map_err(|e| CliError::internal(format!("cannot wait for Ctrl-C: {e}")))?;
    let stats = handle.stats();
    handle.shutdown().await;
    Ok(Outcome {
        exit: crate::error::Exit::Ok,
        human: format!(
            "Simulator stopped after {} API calls ({} records written, {} refused).",
            stats.api_calls, stats.records_written, stats.records_failed
        ),
        json: serde_json::Value::Null,
        // The JSON document was the banner; the closing line is for people only.
        printed: true,
    })
}
