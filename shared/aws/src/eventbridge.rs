//! The EventBridge publisher of the notable moments (SPEC §8): source `crm-export`,
//! `DetailType` = the event kind, `Detail` = the event's envelope JSON. `PutEvents` takes
//! at most 10 entries and 256 KB per call; entries that fail on their own (the call
//! succeeds with `FailedEntryCount` > 0) are sent again, a bounded number of times.

use crate::{RequestCounter, SdkTimeouts};
use async_trait::async_trait;
use aws_sdk_eventbridge::error::ProvideErrorMetadata;
use aws_sdk_eventbridge::primitives::DateTime;
use aws_sdk_eventbridge::types::PutEventsRequestEntry;
use aws_sdk_eventbridge::Client;
use crm_export_core::domain::{Event, EVENT_SOURCE};
use crm_export_core::ports::{EventPublisher, PublishError};
use std::time::Duration;

/// Entries per `PutEvents` call (API limit).
pub const MAX_ENTRIES_PER_CALL: usize = 10;
/// Bytes per `PutEvents` call as EventBridge counts them (API limit: 256 KB).
pub const MAX_BYTES_PER_CALL: usize = 256 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventBridgeConfig {
    /// Name or ARN of the event bus.
    pub bus_name: String,
    /// How often entries that failed on their own are sent in total before giving up.
    pub max_entry_attempts: u32,
    pub timeouts: SdkTimeouts,
}

impl EventBridgeConfig {
    pub fn new(bus_name: impl Into<String>) -> Self {
        Self {
            bus_name: bus_name.into(),
            max_entry_attempts: 4,
            timeouts: SdkTimeouts::default(),
        }
    }

    /// The bus from `EVENT_BUS_NAME` (the account's `default` bus when unset).
    pub fn from_env() -> Self {
        Self::new(
            std::env::var("EVENT_BUS_NAME")
                .ok()
                .filter(|v| !v.is_empty())
                .unwrap_or_else(|| "default".into()),
        )
    }
}

#[derive(Debug, Clone)]
pub struct EventBridgePublisher {
    client: Client,
    config: EventBridgeConfig,
    counter: RequestCounter,
}

/// The size of an entry as EventBridge counts it: time (14 bytes), source, detail type,
/// detail and resources.
fn entry_size(e: &PutEventsRequestEntry) -> usize {
    14 + e.source().map_or(0, str::len)
        + e.detail_type().map_or(0, str::len)
        + e.detail().map_or(0, str::len)
        + e.resources().iter().map(String::len).sum::<usize>()
}

/// Splits entries of the given sizes into calls within both limits, in order.
fn plan_calls(sizes: &[usize]) -> Result<Vec<std::ops::Range<usize>>, PublishError> {
    let mut calls = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, &size) in sizes.iter().enumerate() {
        if size > MAX_BYTES_PER_CALL {
            return Err(PublishError(format!(
                "event {i} is {size} bytes; EventBridge takes at most {MAX_BYTES_PER_CALL}"
            )));
        }
        if i > start && (i - start == MAX_ENTRIES_PER_CALL || bytes + size > MAX_BYTES_PER_CALL) {
            calls.push(start..i);
            start = i;
            bytes = 0;
        }
        bytes += size;
    }
    if start < sizes.len() {
        calls.push(start..sizes.len());
    }
    Ok(calls)
}

impl EventBridgePublisher {
    pub fn new(sdk: &aws_config::SdkConfig, config: EventBridgeConfig) -> Self {
        let counter = RequestCounter::new();
        let client_config = aws_sdk_eventbridge::config::Builder::from(sdk)
            .timeout_config(config.timeouts.timeout_config())
            .retry_config(config.timeouts.retry_config())
            .interceptor(counter.clone())
            .build();
        Self {
            client: Client::from_conf(client_config),
            config,
            counter,
        }
    }

    /// A publisher configured from the environment (`AWS_ENDPOINT_URL` honoured).
    pub async fn from_env(config: EventBridgeConfig) -> Self {
        Self::new(&crate::load_sdk_config().await, config)
    }

    /// `PutEvents` requests sent so far, retries included.
    pub fn request_count(&self) -> u64 {
        self.counter.get()
    }

    fn entry(&self, event: &Event) -> Result<PutEventsRequestEntry, PublishError> {
        let detail = serde_json::to_string(&event.envelope_detail())
            .map_err(|e| PublishError(format!("event {}: {e}", event.id)))?;
        Ok(PutEventsRequestEntry::builder()
            .event_bus_name(&self.config.bus_name)
            .source(EVENT_SOURCE)
            .detail_type(event.kind.detail_type())
            .detail(detail)
            .time(DateTime::from_secs_and_nanos(
                event.at.timestamp(),
                event.at.timestamp_subsec_nanos(),
            ))
            .build())
    }

    /// Sends one call's entries; resends only those that failed, until none is left or the
    /// attempts are spent.
    async fn send_call(&self, mut entries: Vec<PutEventsRequestEntry>) -> Result<(), PublishError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let out = self
                .client
                .put_events()
                .set_entries(Some(entries.clone()))
                .send()
                .await
                .map_err(|e| {
                    PublishError(format!(
                        "PutEvents: {}: {}",
                        e.code().unwrap_or("error"),
                        e.message().map_or_else(|| describe(&e), str::to_string)
                    ))
                })?;
            if out.failed_entry_count() == 0 {
                return Ok(());
            }
            // Result entries are in request order; a failed one carries an error code.
            let results = out.entries();
            let mut failed = Vec::new();
            let mut codes = Vec::new();
            for (i, entry) in entries.into_iter().enumerate() {
                match results.get(i) {
                    Some(r) if r.error_code().is_none() => {}
                    r => {
                        codes.push(
                            r.and_then(|r| r.error_code())
                                .unwrap_or("missing result")
                                .to_string(),
                        );
                        failed.push(entry);
                    }
                }
            }
            if failed.is_empty() {
                return Ok(());
            }
            if attempt >= self.config.max_entry_attempts {
                return Err(PublishError(format!(
                    "{} events not accepted after {attempt} attempts: {codes:?}",
                    failed.len()
                )));
            }
            tracing::warn!(
                failed = failed.len(),
                ?codes,
                attempt,
                "PutEvents: resending entries that failed"
            );
            tokio::time::sleep(Duration::from_millis(100 << attempt.min(5))).await;
            entries = failed;
        }
    }
}

fn describe(err: &dyn std::error::Error) -> String {
    let mut s = err.to_string();
    let mut src = err.source();
    while let Some(e) = src {
        s.push_str(": ");
        s.push_str(&e.to_string());
        src = e.source();
    }
    s
}

#[async_trait]
impl EventPublisher for EventBridgePublisher {
    async fn publish(&self, events: &[Event]) -> Result<(), PublishError> {
        let entries = events
            .iter()
            .map(|e| self.entry(e))
            .collect::<Result<Vec<_>, _>>()?;
        let sizes: Vec<usize> = entries.iter().map(entry_size).collect();
        for call in plan_calls(&sizes)? {
            self.send_call(entries[call].to_vec()).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_hold_at_most_ten_entries_and_256_kb() {
        assert_eq!(plan_calls(&[100; 25]).unwrap(), vec![0..10, 10..20, 20..25]);
        let big = 100 * 1024;
        // Two 100 KB entries fit, a third would pass 256 KB.
        assert_eq!(plan_calls(&[big, big, big, 10]).unwrap(), vec![0..2, 2..4]);
        assert!(plan_calls(&[MAX_BYTES_PER_CALL + 1]).is_err());
        assert!(plan_calls(&[]).unwrap().is_empty());
    }
}
