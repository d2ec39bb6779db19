//! The AWS adapters of crm-export: [`DynamoStore`] implements every state port
//! (`crm_export_core::ports::StateStore`) on DynamoDB, and [`EventBridgePublisher`]
//! implements `EventPublisher` on EventBridge. The table design is in `infra/TABLES.md`.
//!
//! Both clients get explicit timeouts and retry settings ([`SdkTimeouts`]) and count their
//! HTTP requests ([`RequestCounter`]), which the benchmark reads.

mod counter;
pub mod dynamodb;
pub mod eventbridge;

pub use counter::RequestCounter;
pub use dynamodb::{DynamoConfig, DynamoStore};
pub use eventbridge::{EventBridgeConfig, EventBridgePublisher};

use std::time::Duration;

/// Timeouts and retries of one SDK client. The SDK has no operation or attempt timeout by
/// default, so a hung connection could eat a Lambda's whole budget; these bound every call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SdkTimeouts {
    /// One call, retries included.
    pub operation: Duration,
    /// One HTTP attempt.
    pub attempt: Duration,
    pub connect: Duration,
    /// Attempts in total (the SDK's standard retry mode: throttling, 5xx, I/O errors).
    pub max_attempts: u32,
}

impl Default for SdkTimeouts {
    fn default() -> Self {
        Self {
            operation: Duration::from_secs(10),
            attempt: Duration::from_secs(3),
            connect: Duration::from_millis(3100),
            max_attempts: 3,
        }
    }
}

impl SdkTimeouts {
    fn timeout_config(&self) -> aws_sdk_dynamodb::config::timeout::TimeoutConfig {
        aws_sdk_dynamodb::config::timeout::TimeoutConfig::builder()
            .connect_timeout(self.connect)
            .operation_timeout(self.operation)
            .operation_attempt_timeout(self.attempt)
            .build()
    }

    fn retry_config(&self) -> aws_sdk_dynamodb::config::retry::RetryConfig {
        aws_sdk_dynamodb::config::retry::RetryConfig::standard()
            .with_max_attempts(self.max_attempts.max(1))
    }
}

/// Loads the AWS configuration from the environment (region, credentials, and
/// `AWS_ENDPOINT_URL` / `AWS_ENDPOINT_URL_<SERVICE>` for moto or another local endpoint).
pub async fn load_sdk_config() -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .load()
        .await
}
