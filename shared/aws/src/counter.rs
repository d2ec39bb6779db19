//! Counts the HTTP requests an SDK client sends (every attempt, retries included).

use aws_sdk_dynamodb::config::interceptors::BeforeTransmitInterceptorContextRef;
use aws_sdk_dynamodb::config::{ConfigBag, Intercept, RuntimeComponents};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// An interceptor that counts requests; clones share one count.
#[derive(Debug, Clone, Default)]
pub struct RequestCounter {
    count: Arc<AtomicU64>,
}

impl RequestCounter {
    pub fn new() -> Self {
        Self::default()
    }
    /// Requests sent so far.
    pub fn get(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
    pub fn reset(&self) {
        self.count.store(0, Ordering::Relaxed);
    }
}

impl Intercept for RequestCounter {
    fn name(&self) -> &'static str {
        "crm-export-request-counter"
    }

    // Runs once per HTTP attempt, just before it is sent, so retries count too.
    fn read_before_transmit(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        self.count.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}
