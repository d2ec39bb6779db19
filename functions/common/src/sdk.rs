//! Small helpers for the AWS SDK clients this crate builds itself.

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use crm_export_aws::SdkTimeouts;

/// The SDK timeout and retry settings of `t` (the SDK sets no operation timeout by
/// default, so a hung connection could eat the invocation).
pub fn timeouts(t: &SdkTimeouts) -> (TimeoutConfig, RetryConfig) {
    (
        TimeoutConfig::builder()
            .connect_timeout(t.connect)
            .operation_timeout(t.operation)
            .operation_attempt_timeout(t.attempt)
            .build(),
        RetryConfig::standard().with_max_attempts(t.max_attempts.max(1)),
    )
}

/// An SDK error with its code and message (the `Display` of an `SdkError` alone is only
/// "service error").
pub fn describe<E, R>(e: &aws_sdk_eventbridge::error::SdkError<E, R>) -> String
where
    E: aws_sdk_eventbridge::error::ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    use aws_sdk_eventbridge::error::ProvideErrorMetadata;
    match (e.code(), e.message()) {
        (Some(code), Some(msg)) => format!("{code}: {msg}"),
        (Some(code), None) => code.to_string(),
        _ => {
            let mut s = e.to_string();
            let mut src = std::error::Error::source(e);
            while let Some(inner) = src {
                s.push_str(": ");
                s.push_str(&inner.to_string());
                src = inner.source();
            }
            s
        }
    }
}
