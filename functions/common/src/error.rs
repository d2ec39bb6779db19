//! How a failed invocation is reported to Lambda. `errorType` is `Retryable` when the same
//! event could succeed later (the store or the bus was unavailable, the lease was lost) and
//! `NonRetryable` when it never will (a malformed event, an undefined job). A run that
//! *stopped* for a reason its report describes (halted, blocked, CRM outage, budget) is not
//! an error of the function: the handler answers with the report.

use crm_export_core::engine::EngineError;
use crm_export_core::ports::StoreError;
use lambda_runtime::Diagnostic;

#[derive(Debug, thiserror::Error)]
pub enum FunctionError {
    #[error("bad event: {0}")]
    BadEvent(String),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("publishing commands failed: {0}")]
    Publish(String),
    #[error("{failed} of {tenants} tenants could not be surveyed; see the log")]
    Survey { failed: usize, tenants: usize },
}

impl FunctionError {
    pub fn is_retryable(&self) -> bool {
        match self {
            FunctionError::BadEvent(_) => false,
            FunctionError::Engine(e) => e.is_retryable(),
            FunctionError::Store(e) => {
                matches!(e, StoreError::Unavailable(_) | StoreError::LeaseLost)
            }
            FunctionError::Publish(_) | FunctionError::Survey { .. } => true,
        }
    }

    /// A short machine-readable code, in the log line and the error message.
    pub fn code(&self) -> &'static str {
        match self {
            FunctionError::BadEvent(_) => "bad_event",
            FunctionError::Engine(e) => e.code(),
            FunctionError::Store(StoreError::Unavailable(_)) => "store_unavailable",
            FunctionError::Store(_) => "store_error",
            FunctionError::Publish(_) => "publish_failed",
            FunctionError::Survey { .. } => "survey_incomplete",
        }
    }
}

impl From<FunctionError> for Diagnostic {
    fn from(e: FunctionError) -> Self {
        Diagnostic {
            error_type: if e.is_retryable() {
                "Retryable"
            } else {
                "NonRetryable"
            }
            .to_string(),
            error_message: format!("{}: {e}", e.code()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crm_export_core::JobRef;

    #[test]
    fn diagnostics_say_whether_a_retry_can_help() {
        let d: Diagnostic =
            FunctionError::Engine(EngineError::Store(StoreError::Unavailable("x".into()))).into();
        assert_eq!(d.error_type, "Retryable");
        assert!(d.error_message.starts_with("store_unavailable: "));
        let job = JobRef::new("acme".parse().unwrap(), "contacts".parse().unwrap());
        let d: Diagnostic = FunctionError::Engine(EngineError::UnknownJob(job)).into();
        assert_eq!(d.error_type, "NonRetryable");
        assert_eq!(
            d.error_message,
            "unknown_job: job acme/contacts is not defined"
        );
        let d: Diagnostic = FunctionError::BadEvent("nope".into()).into();
        assert_eq!(d.error_type, "NonRetryable");
    }
}
