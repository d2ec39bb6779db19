//! A local Lambda Runtime API (the part a function uses): the real bootstrap binary runs
//! as a child process with `AWS_LAMBDA_RUNTIME_API` pointing here, long-polls
//! `GET /2018-06-01/runtime/invocation/next` and posts `.../{id}/response` or
//! `.../{id}/error` (or `/runtime/init/error`), exactly as in Lambda. Deterministic: one
//! invocation at a time, fed by the test.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::Value;
use std::collections::HashMap;
use std::path::Path as FsPath;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::AsyncBufReadExt;
use tokio::sync::{mpsc, oneshot};

/// How an invocation ended, as the function reported it.
#[derive(Debug, Clone)]
pub enum Outcome {
    Response(Value),
    Error { error_type: String, body: Value },
}

impl Outcome {
    /// The response, or a panic naming the error.
    pub fn ok(self) -> Value {
        match self {
            Outcome::Response(v) => v,
            Outcome::Error { error_type, body } => {
                panic!("the function failed: {error_type} {body}")
            }
        }
    }
}

struct Invocation {
    id: String,
    payload: Vec<u8>,
    deadline_ms: u64,
}

#[derive(Default)]
struct Shared {
    waiting: Mutex<HashMap<String, oneshot::Sender<Outcome>>>,
    first_poll: Mutex<Option<Instant>>,
    init_error: Mutex<Option<String>>,
}

struct ApiState {
    shared: Arc<Shared>,
    next: Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<Invocation>>>,
}

impl Clone for ApiState {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
            next: self.next.clone(),
        }
    }
}

async fn next(State(s): State<ApiState>) -> Response {
    {
        let mut first = s.shared.first_poll.lock().unwrap();
        if first.is_none() {
            *first = Some(Instant::now());
        }
    }
    let inv = match s.next.lock().await.recv().await {
        Some(inv) => inv,
        None => return StatusCode::GONE.into_response(),
    };
    let mut headers = HeaderMap::new();
    let h = |v: &str| HeaderValue::from_str(v).unwrap();
    headers.insert("lambda-runtime-aws-request-id", h(&inv.id));
    headers.insert(
        "lambda-runtime-deadline-ms",
        h(&inv.deadline_ms.to_string()),
    );
    headers.insert(
        "lambda-runtime-invoked-function-arn",
        h("arn:aws:lambda:us-east-1:123456789012:function:under-test"),
    );
    headers.insert(
        "lambda-runtime-trace-id",
        h("Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=0"),
    );
    headers.insert("content-type", h("application/json"));
    (StatusCode::OK, headers, inv.payload).into_response()
}

fn finish(s: &ApiState, id: &str, outcome: Outcome) -> StatusCode {
    match s.shared.waiting.lock().unwrap().remove(id) {
        Some(tx) => {
            let _ = tx.send(outcome);
            StatusCode::ACCEPTED
        }
        None => StatusCode::BAD_REQUEST,
    }
}

async fn response(State(s): State<ApiState>, Path(id): Path<String>, body: Bytes) -> StatusCode {
    let v = serde_json::from_slice(&body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into()));
    finish(&s, &id, Outcome::Response(v))
}

async fn error(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    // Lambda reports the body's errorType (the runtime's header only says "unhandled").
    let error_type = body["errorType"]
        .as_str()
        .map(str::to_owned)
        .or_else(|| {
            headers
                .get("lambda-runtime-function-error-type")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        })
        .unwrap_or_default();
    finish(&s, &id, Outcome::Error { error_type, body })
}

async fn init_error(State(s): State<ApiState>, body: Bytes) -> StatusCode {
    *s.shared.init_error.lock().unwrap() = Some(String::from_utf8_lossy(&body).into());
    StatusCode::ACCEPTED
}

/// One function process behind its own Runtime API.
pub struct LambdaProcess {
    child: tokio::process::Child,
    spawned_at: Instant,
    shared: Arc<Shared>,
    tx: mpsc::UnboundedSender<Invocation>,
    stdout: tokio::task::JoinHandle<Vec<String>>,
    stderr: tokio::task::JoinHandle<Vec<String>>,
    server: tokio::task::JoinHandle<()>,
    counter: u32,
}

impl LambdaProcess {
    /// Starts `binary` with exactly `env` (plus the Runtime API's own variables).
    pub async fn start(binary: &FsPath, name: &str, env: &[(String, String)]) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared::default());
        let state = ApiState {
            shared: shared.clone(),
            next: Arc::new(tokio::sync::Mutex::new(rx)),
        };
        let app = Router::new()
            .route("/2018-06-01/runtime/invocation/next", get(next))
            .route(
                "/2018-06-01/runtime/invocation/{id}/response",
                post(response),
            )
            .route("/2018-06-01/runtime/invocation/{id}/error", post(error))
            .route("/2018-06-01/runtime/init/error", post(init_error))
            .with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });

        let mut cmd = tokio::process::Command::new(binary);
        // Only what Lambda would give the function, and what the test adds: nothing of the
        // test runner's environment (RUST_LOG, AWS profiles, ...) leaks in.
        cmd.env_clear()
            .env("AWS_LAMBDA_RUNTIME_API", addr.to_string())
            .env("AWS_LAMBDA_FUNCTION_NAME", name)
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .env("AWS_LAMBDA_LOG_STREAM_NAME", "2026/01/01/[$LATEST]test")
            .env(
                "AWS_LAMBDA_LOG_GROUP_NAME",
                format!("/aws/lambda/test/{name}"),
            )
            .env("AWS_LAMBDA_LOG_FORMAT", "JSON")
            .env("AWS_LAMBDA_LOG_LEVEL", "INFO")
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let spawned_at = Instant::now();
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        let out = child.stdout.take().unwrap();
        let err = child.stderr.take().unwrap();
        let read = |r: Box<dyn tokio::io::AsyncRead + Unpin + Send>| {
            tokio::spawn(async move {
                let mut lines = tokio::io::BufReader::new(r).lines();
                let mut all = Vec::new();
                while let Ok(Some(l)) = lines.next_line().await {
                    all.push(l);
                }
                all
            })
        };
        Self {
            stdout: read(Box::new(out)),
            stderr: read(Box::new(err)),
            child,
            spawned_at,
            shared,
            tx,
            server,
            counter: 0,
        }
    }

    /// Sends one event and waits for the function's answer (the invocation's deadline is
    /// `budget` from now).
    pub async fn invoke(&mut self, payload: &Value, budget: Duration) -> Outcome {
        self.counter += 1;
        let id = format!("req-{}-{}", std::process::id(), self.counter);
        let (done_tx, done_rx) = oneshot::channel();
        self.shared
            .waiting
            .lock()
            .unwrap()
            .insert(id.clone(), done_tx);
        let deadline_ms = (chrono::Utc::now() + chrono::Duration::from_std(budget).unwrap())
            .timestamp_millis() as u64;
        self.tx
            .send(Invocation {
                id,
                payload: serde_json::to_vec(payload).unwrap(),
                deadline_ms,
            })
            .unwrap();
        let wait = budget + Duration::from_secs(30);
        tokio::select! {
            r = done_rx => r.expect("the runtime API dropped the invocation"),
            status = self.child.wait() => {
                let init = self.shared.init_error.lock().unwrap().clone();
                let stdout = (&mut self.stdout).await.unwrap_or_default();
                let stderr = (&mut self.stderr).await.unwrap_or_default();
                panic!("the function exited ({status:?}) before answering; init error: {init:?}\nstdout: {stdout:#?}\nstderr: {stderr:#?}");
            }
            _ = tokio::time::sleep(wait) => panic!("no answer within {wait:?}"),
        }
    }

    /// Time from spawning the process to its first poll for an event: the init phase
    /// (configuration, SDK clients), what Lambda reports as Init Duration.
    pub fn init_duration(&self) -> Option<Duration> {
        self.shared
            .first_poll
            .lock()
            .unwrap()
            .map(|t| t - self.spawned_at)
    }

    /// Waits until the function polls for its first event.
    pub async fn wait_ready(&mut self, within: Duration) -> Duration {
        let until = Instant::now() + within;
        loop {
            if let Some(d) = self.init_duration() {
                return d;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                let init = self.shared.init_error.lock().unwrap().clone();
                panic!("the function exited during init ({status}); init error: {init:?}");
            }
            assert!(
                Instant::now() < until,
                "the function did not poll for an event within {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// The process's peak resident memory so far (Linux `VmHWM`), in KiB.
    pub fn peak_rss_kib(&self) -> Option<u64> {
        let pid = self.child.id()?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    }

    /// Stops the process and returns its stdout lines (logs and EMF) and stderr lines.
    pub async fn stop(mut self) -> Logs {
        let _ = self.child.kill().await;
        let stdout = self.stdout.await.unwrap_or_default();
        let stderr = self.stderr.await.unwrap_or_default();
        self.server.abort();
        Logs { stdout, stderr }
    }
}

/// What a function printed.
#[derive(Debug)]
pub struct Logs {
    pub stdout: Vec<String>,
    pub stderr: Vec<String>,
}

impl Logs {
    /// Every stdout line parsed as JSON; a line that is not JSON fails the test (the
    /// functions log JSON only, so CloudWatch can index every field).
    pub fn json(&self) -> Vec<Value> {
        self.stdout
            .iter()
            .map(|l| {
                serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}"))
            })
            .collect()
    }

    /// The EMF documents (lines with an `_aws` header).
    pub fn metrics(&self) -> Vec<Value> {
        self.json()
            .into_iter()
            .filter(|v| v.get("_aws").is_some())
            .collect()
    }

    /// The log lines (not EMF).
    pub fn lines(&self) -> Vec<Value> {
        self.json()
            .into_iter()
            .filter(|v| v.get("_aws").is_none())
            .collect()
    }

    /// The first EMF document that defines `metric`.
    pub fn metric_doc(&self, metric: &str) -> Value {
        self.metrics()
            .into_iter()
            .find(|d| {
                d["_aws"]["CloudWatchMetrics"][0]["Metrics"]
                    .as_array()
                    .is_some_and(|ms| ms.iter().any(|m| m["Name"] == metric))
            })
            .unwrap_or_else(|| panic!("no EMF document with {metric}; stdout: {:#?}", self.stdout))
    }

    pub fn all_text(&self) -> String {
        let mut s = self.stdout.join("\n");
        s.push('\n');
        s.push_str(&self.stderr.join("\n"));
        s
    }
}
