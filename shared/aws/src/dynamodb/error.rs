//! SDK errors → `StoreError`. Throttling, timeouts and service failures are `Unavailable`
//! (try again later); a request DynamoDB refuses as malformed is `Invalid`. Condition
//! failures are not handled here: each operation maps them to its port's meaning.

use aws_sdk_dynamodb::error::{BuildError, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::CancellationReason;
use crm_export_core::ports::StoreError;

/// Classifies a failed call of `op`.
pub(crate) fn classify<E, R>(op: &str, err: SdkError<E, R>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug,
{
    match &err {
        SdkError::ServiceError(se) => {
            let e = se.err();
            let code = e.code().unwrap_or("Unknown");
            let msg = e.message().unwrap_or("");
            if code == "ValidationException" || code == "SerializationException" {
                StoreError::Invalid(format!("{op}: {code}: {msg}"))
            } else {
                StoreError::Unavailable(format!("{op}: {code}: {msg}"))
            }
        }
        SdkError::ConstructionFailure(_) => StoreError::Invalid(format!(
            "{op}: request could not be built: {}",
            describe(&err)
        )),
        _ => StoreError::Unavailable(format!("{op}: {}", describe(&err))),
    }
}

/// The error with its sources, on one line (SdkError's Display alone says little).
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

pub(crate) fn build(e: BuildError) -> StoreError {
    StoreError::Invalid(format!("DynamoDB request could not be built: {e}"))
}

/// The outcome of a `TransactWriteItems` call.
pub(crate) enum TxError {
    /// Cancelled because the condition of the item at this index (in request order)
    /// failed; the reason carries the item's old value when it was asked for.
    Condition {
        index: usize,
        reason: CancellationReason,
    },
    Other(StoreError),
}

/// Splits a transaction failure into "a condition failed" and everything else.
pub(crate) fn transact(
    err: SdkError<
        aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError,
        aws_sdk_dynamodb::config::http::HttpResponse,
    >,
) -> TxError {
    use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError as E;
    if let SdkError::ServiceError(se) = &err {
        if let E::TransactionCanceledException(tce) = se.err() {
            let reasons = tce.cancellation_reasons();
            if let Some((index, reason)) = reasons
                .iter()
                .enumerate()
                .find(|(_, r)| r.code() == Some("ConditionalCheckFailed"))
            {
                return TxError::Condition {
                    index,
                    reason: reason.clone(),
                };
            }
            // Conflicts with a concurrent transaction or write, throttling, ...: transient.
            let codes: Vec<&str> = reasons
                .iter()
                .filter_map(|r| r.code())
                .filter(|c| *c != "None")
                .collect();
            if codes.contains(&"ValidationError") {
                return TxError::Other(StoreError::Invalid(format!(
                    "TransactWriteItems cancelled: {codes:?}: {}",
                    tce.message().unwrap_or("")
                )));
            }
            return TxError::Other(StoreError::Unavailable(format!(
                "TransactWriteItems cancelled: {codes:?}"
            )));
        }
    }
    TxError::Other(classify("TransactWriteItems", err))
}

/// True when a single-item write failed its condition.
pub(crate) fn is_condition_failed<E, R>(err: &SdkError<E, R>) -> bool
where
    E: ProvideErrorMetadata,
{
    matches!(err, SdkError::ServiceError(se) if se.err().code() == Some("ConditionalCheckFailedException"))
}
