//! The HTTP(S) server: routes, the accept loop and the handle that owns them.

use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::Deref;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tower::Service;

use crate::error::SimError;
use crate::org::OrgDefinition;
use crate::rest::{with_limit_info, RestError};
use crate::sim::Simulator;
use crate::{admin, collections, limits, oauth, tls, versions};

/// Collections bodies of 200 wide records stay far below this; Salesforce's own cap is larger.
const BODY_LIMIT: usize = 64 * 1024 * 1024;
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, Debug)]
pub struct ServeOptions {
    /// Port 0 picks a free port.
    pub addr: SocketAddr,
    pub tls: bool,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            tls: false,
        }
    }
}

impl Simulator {
    /// The simulator's routes: OAuth, REST and `/__sim/` admin.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/services/oauth2/token", post(oauth::token))
            .route("/services/data", get(versions::versions))
            .route("/services/data/", get(versions::versions))
            .route("/services/data/{version}/limits", get(limits::limits))
            .route("/services/data/{version}/limits/", get(limits::limits))
            .route(
                "/services/data/{version}/composite/sobjects/{sobject}/{field}",
                patch(collections::upsert).fallback(method_not_allowed),
            )
            .merge(admin::routes())
            .fallback(limits::not_found)
            .layer(DefaultBodyLimit::max(BODY_LIMIT))
            .with_state(self.clone())
    }
}

async fn method_not_allowed(State(sim): State<Simulator>, method: Method) -> Response {
    let resp = RestError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "METHOD_NOT_ALLOWED",
        format!("HTTP Method '{method}' not allowed. Allowed are PATCH"),
    )
    .into_response();
    with_limit_info(&sim.shared, resp)
}

/// A running simulator. Dereferences to [`Simulator`] for the admin operations. Dropping it
/// (or `shutdown`) stops the server.
pub struct SimHandle {
    sim: Simulator,
    addr: SocketAddr,
    base_url: String,
    ca_pem: Option<String>,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl Deref for SimHandle {
    type Target = Simulator;
    fn deref(&self) -> &Simulator {
        &self.sim
    }
}

impl SimHandle {
    /// `http(s)://127.0.0.1:PORT`: the login URL and the `instance_url` tokens carry.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The token endpoint, `{base_url}/services/oauth2/token`.
    pub fn token_url(&self) -> String {
        format!("{}/services/oauth2/token", self.base_url)
    }

    /// PEM of the CA that issued the server certificate, when serving HTTPS.
    pub fn ca_cert_pem(&self) -> Option<&str> {
        self.ca_pem.as_deref()
    }

    /// A clone of the org, to keep after the handle is moved or to share between tasks.
    pub fn simulator(&self) -> Simulator {
        self.sim.clone()
    }

    /// Stops accepting, closes open connections and waits for the server task.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// Starts a simulator for `org` on `opts.addr`.
pub async fn serve(org: OrgDefinition, opts: ServeOptions) -> Result<SimHandle, SimError> {
    serve_simulator(Simulator::new(org)?, opts).await
}

/// Serves an existing [`Simulator`] (for callers that built it first).
pub async fn serve_simulator(sim: Simulator, opts: ServeOptions) -> Result<SimHandle, SimError> {
    let tls = if opts.tls {
        Some(tls::generate()?)
    } else {
        None
    };
    let listener = TcpListener::bind(opts.addr)
        .await
        .map_err(|source| SimError::Bind {
            addr: opts.addr,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| SimError::Bind {
        addr: opts.addr,
        source,
    })?;
    let host = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let base_url = format!("{scheme}://{}", SocketAddr::new(host, addr.port()));
    sim.set_base_url(base_url.clone());

    let (stop, stopped) = watch::channel(false);
    let router = sim.router();
    let acceptor = tls
        .as_ref()
        .map(|t| tokio_rustls::TlsAcceptor::from(std::sync::Arc::clone(&t.config)));
    let task = tokio::spawn(accept_loop(listener, router, acceptor, stopped));
    Ok(SimHandle {
        sim,
        addr,
        base_url,
        ca_pem: tls.map(|t| t.ca_pem),
        stop,
        task: Some(task),
    })
}

async fn accept_loop(
    listener: TcpListener,
    router: Router,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    mut stopped: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            _ = stopped.changed() => return,
            accepted = listener.accept() => accepted,
        };
        let (tcp, _) = match accepted {
            Ok(conn) => conn,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "sf-simulator: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Nagle plus delayed ACKs would add ~40 ms to small responses and skew latency runs.
        let _ = tcp.set_nodelay(true);
        let router = router.clone();
        let stopped = stopped.clone();
        match &acceptor {
            None => {
                tokio::spawn(serve_connection(tcp, router, stopped));
            }
            Some(acceptor) => {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => serve_connection(stream, router, stopped).await,
                        Ok(Err(e)) => {
                            tracing::debug!(error = %e, "sf-simulator: TLS handshake failed")
                        }
                        Err(_) => tracing::debug!("sf-simulator: TLS handshake timed out"),
                    }
                });
            }
        }
    }
}

async fn serve_connection<I>(io: I, router: Router, mut stopped: watch::Receiver<bool>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let mut router = router.clone();
        async move {
            let resp: Result<Response, Infallible> =
                router.call(req.map(axum::body::Body::new)).await;
            resp
        }
    });
    let builder = auto::Builder::new(TokioExecutor::new());
    let conn = builder.serve_connection(TokioIo::new(io), service);
    tokio::select! {
        _ = conn => {}
        _ = stopped.changed() => {}
    }
}
