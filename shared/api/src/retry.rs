//! The port through which the API asks for an ExportError retry run. The run itself is
//! asynchronous: in Lambda the adapter publishes an `ExportErrorRetryRequested` command on
//! EventBridge; locally [`RecordingRetryRequester`] keeps the requests.

use async_trait::async_trait;
use crm_export_core::{JobRef, RunId};
use std::sync::Mutex;

#[async_trait]
pub trait RetryRequester: Send + Sync {
    /// Hands the run over; `Err` with a reason when it could not be requested (the API
    /// then answers 503 and nothing was started).
    async fn request_retry(&self, job: &JobRef, run_id: &RunId) -> Result<(), String>;
}

/// Keeps every request, for tests and the local server. Can be told to fail.
#[derive(Default)]
pub struct RecordingRetryRequester {
    requests: Mutex<Vec<(JobRef, RunId)>>,
    failing: std::sync::atomic::AtomicBool,
}

impl RecordingRetryRequester {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn requests(&self) -> Vec<(JobRef, RunId)> {
        self.requests.lock().expect("retry requests lock").clone()
    }
    pub fn set_failing(&self, failing: bool) {
        self.failing
            .store(failing, std::sync::atomic::Ordering::SeqCst);
    }
}

#[async_trait]
impl RetryRequester for RecordingRetryRequester {
    async fn request_retry(&self, job: &JobRef, run_id: &RunId) -> Result<(), String> {
        if self.failing.load(std::sync::atomic::Ordering::SeqCst) {
            return Err("retry requester set to fail".into());
        }
        tracing::info!(%job, %run_id, "ExportError retry run requested");
        self.requests
            .lock()
            .expect("retry requests lock")
            .push((job.clone(), run_id.clone()));
        Ok(())
    }
}
