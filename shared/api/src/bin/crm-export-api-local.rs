//! Serves the settings API locally with the same router as the Lambda function, on an
//! in-memory store seeded with demo data (a halted job, ExportErrors items), behind HS256
//! bearer tokens signed with `CRM_EXPORT_API_JWT_SECRET`.
//!
//! ```sh
//! export CRM_EXPORT_API_JWT_SECRET=$(head -c 32 /dev/urandom | base64)
//! cargo run -p crm-export-api --bin crm-export-api-local -- --port 8080 --print-token
//! ```
//!
//! Prints `CRM_EXPORT_API_URL=...` once it listens (and `CRM_EXPORT_API_TOKEN=...` with
//! `--print-token`) on stdout; logs go to stderr.

use clap::Parser;
use crm_export_api::local::{local_token, seed_demo};
use crm_export_api::{local_router, ApiState, JwtVerifier, RecordingRetryRequester};
use crm_export_core::events::RecordingPublisher;
use crm_export_core::store::MemoryStore;
use crm_export_core::TenantId;
use std::io::{IsTerminal, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

#[derive(Parser)]
#[command(about = "Serve the crm-export settings API locally on seeded demo data")]
struct Args {
    /// Port on 127.0.0.1; 0 picks a free one.
    #[arg(long, env = "CRM_EXPORT_API_PORT", default_value_t = 0)]
    port: u16,
    /// The tenant the demo data is seeded for.
    #[arg(long, default_value = "acme")]
    tenant: TenantId,
    /// Also seed this second tenant (to try tenant isolation).
    #[arg(long)]
    other_tenant: Option<TenantId>,
    /// Print a bearer token (write scope) for the seeded tenant on stdout.
    #[arg(long)]
    print_token: bool,
    /// Lifetime of the printed token.
    #[arg(long, default_value_t = 3600)]
    token_ttl_secs: u64,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,crm_export_api=info".into()),
        )
        .init();
    let args = Args::parse();
    // From the environment only, so it never shows in a process listing.
    let secret = std::env::var("CRM_EXPORT_API_JWT_SECRET")
        .map_err(|_| "set CRM_EXPORT_API_JWT_SECRET (at least 32 bytes) to sign tokens")?;
    let verifier = JwtVerifier::hs256(secret.as_bytes())?;

    let store = Arc::new(MemoryStore::new());
    let now = chrono::Utc::now();
    for tenant in std::iter::once(&args.tenant).chain(args.other_tenant.as_ref()) {
        seed_demo(&*store, tenant, now).await?;
    }
    let state = ApiState::new(
        store,
        Arc::new(RecordingPublisher::new()),
        Arc::new(RecordingRetryRequester::new()),
    );
    let app = local_router(state, verifier);

    let listener =
        tokio::net::TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, args.port))).await?;
    let addr = listener.local_addr()?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "CRM_EXPORT_API_URL=http://{addr}")?;
        if args.print_token {
            let token = local_token(
                secret.as_bytes(),
                &args.tenant,
                "local-admin",
                true,
                Duration::from_secs(args.token_ttl_secs),
            )?;
            writeln!(out, "CRM_EXPORT_API_TOKEN={token}")?;
        }
        out.flush()?;
    }
    tracing::info!(%addr, tenant = %args.tenant, "settings API listening");
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown())
        .await?;
    Ok(())
}

async fn shutdown() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing the SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
