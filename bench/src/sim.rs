//! The simulator the benchmark exports to: the demo org served over HTTPS on loopback with a
//! generated CA (`sf_simulator::serve`, the same server `crmx sim --tls` runs), either in
//! this process or in a child process (this binary's hidden `serve-sim` subcommand), so
//! that the export path's memory and the simulator's are measured apart. Both are driven
//! the same way: through the simulator's `/__sim/` admin API.

use crate::data;
use crate::error::{BenchError, Context, Result};
use serde::{Deserialize, Serialize};
use sf_simulator::{ServeOptions, SimHandle, Stats};
use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimMode {
    /// In this process: the RSS figures cover the simulator too.
    InProcess,
    /// In a child process (`crm-export-bench serve-sim`): the RSS figures are the export
    /// path's alone, the simulator's are reported apart.
    Child,
}

impl SimMode {
    pub fn name(self) -> &'static str {
        match self {
            SimMode::InProcess => "in-process",
            SimMode::Child => "child process",
        }
    }
}

/// What the child prints on its first line.
#[derive(Serialize, Deserialize)]
struct Banner {
    url: String,
    ca_pem: String,
}

enum Inner {
    InProcess(SimHandle),
    Child(Child),
}

pub struct Sim {
    base_url: String,
    ca_pem: String,
    admin: reqwest::Client,
    inner: Option<Inner>,
}

impl Sim {
    pub async fn start(mode: SimMode) -> Result<Sim> {
        let (base_url, ca_pem, inner) = match mode {
            SimMode::InProcess => {
                let handle = serve_tls().await?;
                let ca = handle
                    .ca_cert_pem()
                    .ctx("the simulator serves TLS but has no CA")?
                    .to_owned();
                (handle.base_url().to_owned(), ca, Inner::InProcess(handle))
            }
            SimMode::Child => {
                let exe = std::env::current_exe().ctx("locating this executable")?;
                let mut child = Command::new(exe)
                    .arg("serve-sim")
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::inherit())
                    .spawn()
                    .ctx("starting the simulator child process")?;
                let banner = tokio::task::spawn_blocking({
                    let stdout = child.stdout.take();
                    move || -> Result<Banner> {
                        let mut line = String::new();
                        BufReader::new(stdout.ctx("the child's stdout")?)
                            .read_line(&mut line)
                            .ctx("reading the simulator child's banner")?;
                        serde_json::from_str(&line).ctx("the simulator child's banner")
                    }
                })
                .await
                .ctx("reading the simulator child's banner")?;
                let banner = match banner {
                    Ok(b) => b,
                    Err(e) => {
                        let _ = child.kill();
                        let _ = child.wait();
                        return Err(e);
                    }
                };
                (banner.url, banner.ca_pem, Inner::Child(child))
            }
        };
        let cert = reqwest::Certificate::from_pem(ca_pem.as_bytes()).ctx("the simulator's CA")?;
        let admin = reqwest::Client::builder()
            .use_rustls_tls()
            .add_root_certificate(cert)
            .timeout(Duration::from_secs(120))
            .build()
            .ctx("building the admin HTTP client")?;
        Ok(Sim {
            base_url,
            ca_pem,
            admin,
            inner: Some(inner),
        })
    }

    /// `https://127.0.0.1:PORT`: login URL and instance URL.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    pub fn token_url(&self) -> String {
        format!("{}/services/oauth2/token", self.base_url)
    }

    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    pub fn mode(&self) -> SimMode {
        match self.inner {
            Some(Inner::Child(_)) => SimMode::Child,
            _ => SimMode::InProcess,
        }
    }

    /// The child's pid, when the simulator runs in one.
    pub fn child_pid(&self) -> Option<u32> {
        match &self.inner {
            Some(Inner::Child(c)) => Some(c.id()),
            _ => None,
        }
    }

    async fn send(&self, req: reqwest::RequestBuilder, what: &str) -> Result<reqwest::Response> {
        let resp = req.send().await.ctx(format!("simulator admin {what}"))?;
        if !resp.status().is_success() {
            return Err(BenchError::new(format!(
                "simulator admin {what}: HTTP {}",
                resp.status()
            )));
        }
        Ok(resp)
    }

    fn url(&self, path: &str) -> String {
        format!("{}/__sim/{path}", self.base_url)
    }

    pub async fn set_latency_ms(&self, ms: u64) -> Result<()> {
        let req = self
            .admin
            .put(self.url("latency"))
            .json(&serde_json::json!({ "ms": ms }));
        self.send(req, "PUT latency").await.map(drop)
    }

    pub async fn stats(&self) -> Result<Stats> {
        let resp = self
            .send(self.admin.get(self.url("stats")), "GET stats")
            .await?;
        resp.json().await.ctx("simulator admin GET stats")
    }

    /// A clean org for the next measurement: no Contacts, zeroed stats, the API allocation
    /// unused.
    pub async fn reset(&self) -> Result<()> {
        let req = self
            .admin
            .delete(self.url(&format!("records/{}", data::OBJECT)));
        self.send(req, "DELETE records").await?;
        self.send(self.admin.post(self.url("reset-stats")), "POST reset-stats")
            .await?;
        let req = self
            .admin
            .put(self.url("api-usage"))
            .json(&serde_json::json!({ "used": 0 }));
        self.send(req, "PUT api-usage").await.map(drop)
    }

    pub async fn shutdown(mut self) {
        match self.inner.take() {
            Some(Inner::InProcess(h)) => h.shutdown().await,
            Some(Inner::Child(c)) => stop_child(c),
            None => {}
        }
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        if let Some(Inner::Child(c)) = self.inner.take() {
            stop_child(c);
        }
    }
}

/// Closing its stdin tells the child to stop; it is killed if it has not within 5 s.
fn stop_child(mut child: Child) {
    drop(child.stdin.take());
    for _ in 0..50 {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
}

async fn serve_tls() -> Result<SimHandle> {
    let opts = ServeOptions {
        addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        tls: true,
    };
    sf_simulator::serve(data::demo_org()?, opts)
        .await
        .ctx("starting the simulator")
}

/// The `serve-sim` subcommand: serves the demo org over TLS, prints the banner line, and
/// stops when stdin closes (the parent exited or let go of it).
pub async fn serve_child_main() -> Result<()> {
    use tokio::io::AsyncReadExt;
    let handle = serve_tls().await?;
    let banner = Banner {
        url: handle.base_url().to_owned(),
        ca_pem: handle
            .ca_cert_pem()
            .ctx("the simulator serves TLS but has no CA")?
            .to_owned(),
    };
    {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        writeln!(out, "{}", serde_json::to_string(&banner).ctx("the banner")?)
            .ctx("writing the banner")?;
        out.flush().ctx("writing the banner")?;
    }
    let mut stdin = tokio::io::stdin();
    let mut buf = [0u8; 64];
    while stdin.read(&mut buf).await.map(|n| n > 0).unwrap_or(false) {}
    handle.shutdown().await;
    Ok(())
}
