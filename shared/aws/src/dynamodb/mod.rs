//! The DynamoDB store: every state port on two tables (state + queue). The design, keys
//! and the condition behind each operation are in `infra/TABLES.md`.

mod budget;
mod commit;
mod error;
mod export_errors;
mod items;
mod lease;
mod outbox;
mod queue;
mod settings;
mod tables;

use crate::{RequestCounter, SdkTimeouts};
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{AttributeValue, KeysAndAttributes};
use aws_sdk_dynamodb::Client;
use crm_export_core::ports::StoreError;
use std::collections::HashMap;
use std::time::Duration;

type Item = HashMap<String, AttributeValue>;

/// Where the store keeps its data and how its client behaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DynamoConfig {
    /// Job state, leases, ExportErrors, settings, job definitions, outbox, API budget.
    pub state_table: String,
    /// The export queue (records by job and seq).
    pub queue_table: String,
    /// How long resolved and superseded ExportErrors items are kept (TTL).
    pub error_retention: Duration,
    /// How long an hourly API budget bucket is kept (TTL); at least 24 h.
    pub budget_retention: Duration,
    /// How often an enqueue re-reads the job's counter after another producer won the race.
    pub enqueue_max_attempts: u32,
    pub timeouts: SdkTimeouts,
}

impl DynamoConfig {
    pub const DEFAULT_STATE_TABLE: &'static str = "crm-export-state";
    pub const DEFAULT_QUEUE_TABLE: &'static str = "crm-export-queue";

    /// The default settings with the given table names.
    pub fn new(state_table: impl Into<String>, queue_table: impl Into<String>) -> Self {
        Self {
            state_table: state_table.into(),
            queue_table: queue_table.into(),
            error_retention: Duration::from_secs(30 * 24 * 3600),
            budget_retention: Duration::from_secs(48 * 3600),
            enqueue_max_attempts: 100,
            timeouts: SdkTimeouts::default(),
        }
    }

    /// Table names from `STATE_TABLE` and `QUEUE_TABLE`, falling back to the defaults.
    pub fn from_env() -> Self {
        let var = |name: &str, default: &str| {
            std::env::var(name)
                .ok()
                .filter(|v| !v.is_empty())
                .unwrap_or_else(|| default.to_string())
        };
        Self::new(
            var("STATE_TABLE", Self::DEFAULT_STATE_TABLE),
            var("QUEUE_TABLE", Self::DEFAULT_QUEUE_TABLE),
        )
    }
}

impl Default for DynamoConfig {
    fn default() -> Self {
        Self::new(Self::DEFAULT_STATE_TABLE, Self::DEFAULT_QUEUE_TABLE)
    }
}

/// The DynamoDB adapter of every state port. Cheap to clone (the client is shared).
#[derive(Debug, Clone)]
pub struct DynamoStore {
    client: Client,
    config: DynamoConfig,
    counter: RequestCounter,
}

impl DynamoStore {
    /// A store on a client built from `sdk` with the configured timeouts, retries and a
    /// request counter.
    pub fn new(sdk: &aws_config::SdkConfig, config: DynamoConfig) -> Self {
        let counter = RequestCounter::new();
        let client_config = aws_sdk_dynamodb::config::Builder::from(sdk)
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

    /// A store configured from the environment (region, credentials, `AWS_ENDPOINT_URL`
    /// or `AWS_ENDPOINT_URL_DYNAMODB` for a local endpoint such as moto).
    pub async fn from_env(config: DynamoConfig) -> Self {
        Self::new(&crate::load_sdk_config().await, config)
    }

    pub fn config(&self) -> &DynamoConfig {
        &self.config
    }

    /// The underlying client (for tooling; the ports are the way to change state).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// DynamoDB HTTP requests sent by this store so far, retries included.
    pub fn request_count(&self) -> u64 {
        self.counter.get()
    }

    /// The counter behind [`Self::request_count`] (clones share it).
    pub fn request_counter(&self) -> &RequestCounter {
        &self.counter
    }

    /// Reads items of the state table by key, consistently, 100 keys per request, retrying
    /// unprocessed keys a bounded number of times. Returns the items found.
    /// Sends a transaction's `Update` as a request of its own: the same write, so the
    /// commit and the standalone port build it in one place.
    async fn update_alone(
        &self,
        u: &aws_sdk_dynamodb::types::Update,
    ) -> Result<(), aws_sdk_dynamodb::error::SdkError<UpdateItemError>> {
        self.client
            .update_item()
            .table_name(u.table_name())
            .set_key(Some(u.key().clone()))
            .update_expression(u.update_expression())
            .set_condition_expression(u.condition_expression().map(str::to_owned))
            .set_expression_attribute_names(u.expression_attribute_names().cloned())
            .set_expression_attribute_values(u.expression_attribute_values().cloned())
            .send()
            .await
            .map(|_| ())
    }

    async fn batch_get_state(&self, keys: Vec<Item>) -> Result<Vec<Item>, StoreError> {
        let table = self.config.state_table.clone();
        let mut found = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(100) {
            let mut pending: Vec<Item> = chunk.to_vec();
            let mut attempt = 0u32;
            while !pending.is_empty() {
                if attempt > 0 {
                    if attempt >= UNPROCESSED_MAX_ATTEMPTS {
                        return Err(StoreError::Unavailable(format!(
                            "BatchGetItem left {} keys unprocessed after {attempt} attempts",
                            pending.len()
                        )));
                    }
                    tokio::time::sleep(backoff(attempt)).await;
                }
                attempt += 1;
                let ka = KeysAndAttributes::builder()
                    .set_keys(Some(std::mem::take(&mut pending)))
                    .consistent_read(true);
                let out = self
                    .client
                    .batch_get_item()
                    .request_items(&table, ka.build().map_err(error::build)?)
                    .send()
                    .await
                    .map_err(|e| error::classify("BatchGetItem", e))?;
                if let Some(mut resp) = out.responses {
                    found.extend(resp.remove(&table).unwrap_or_default());
                }
                if let Some(mut un) = out.unprocessed_keys {
                    if let Some(ka) = un.remove(&table) {
                        pending = ka.keys;
                    }
                }
            }
        }
        Ok(found)
    }
}

const UNPROCESSED_MAX_ATTEMPTS: u32 = 8;

/// Exponential backoff with jitter: 10 ms, 20 ms, ... capped at 1 s, times 0.5–1.5.
fn backoff(attempt: u32) -> Duration {
    let base = 10u64.saturating_mul(1 << attempt.min(7)).min(1000);
    let jitter = (uuid::Uuid::new_v4().as_u128() % 1000) as u64; // 0..1000 ‰
    Duration::from_millis(base / 2 + base * jitter / 1000)
}
