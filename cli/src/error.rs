//! The CLI's one error type and its exit codes. Every failure of every command ends up as a
//! [`CliError`] returned from `run()`; `main` is the only place that prints it and exits.

use crm_export_core::engine::{EngineError, OpsError};
use crm_export_core::ports::StoreError;
use crm_export_core::{IdError, SettingsError};

/// The exit codes scripts can rely on (documented in README.md and `crmx --help`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Done; a run completed.
    Ok,
    /// A demo check failed, or an unexpected internal failure.
    Failure,
    /// The command line is wrong (unknown flag, missing argument).
    Usage,
    /// An input file or value is wrong (unreadable, malformed, a record without its key).
    BadInput,
    /// The job, record or ExportErrors item does not exist.
    NotFound,
    /// Refused by a rule: acknowledgement required, version conflict, invalid setting,
    /// nothing to skip, job busy.
    Refused,
    /// The store or the CRM is unavailable (try again later).
    Unavailable,
    /// The run halted on a record (pause on export errors).
    Halted,
    /// The job is blocked (a cause no single record explains).
    Blocked,
    /// The run stopped early: deadline, API budget, request failure, already running, tenant busy,
    /// lease lost. The next run goes on from where this one stopped.
    StoppedEarly,
    /// The run did nothing because `export_to_crm` is off.
    Disabled,
}

impl Exit {
    pub fn code(self) -> u8 {
        match self {
            Exit::Ok => 0,
            Exit::Failure => 1,
            Exit::Usage => 2,
            Exit::BadInput => 3,
            Exit::NotFound => 4,
            Exit::Refused => 5,
            Exit::Unavailable => 6,
            Exit::Halted => 10,
            Exit::Blocked => 11,
            Exit::StoppedEarly => 12,
            Exit::Disabled => 13,
        }
    }
}

/// The exit-code table as printed by `crmx --help` (kept next to [`Exit`] so they agree;
/// a unit test checks every code is listed).
pub const EXIT_CODES_HELP: &str = "\
Exit codes:
   0  ok; the run completed
   1  a demo check failed, or an internal error
   2  usage error (unknown flag, missing argument)
   3  bad input (unreadable or malformed file, record without its key, invalid value)
   4  not found (job, ExportErrors item)
   5  refused by a rule (acknowledgement required, version conflict, invalid setting, job busy)
   6  store or CRM unavailable
  10  run halted on a record (pause on export errors)
  11  job blocked
  12  run stopped early (deadline, API budget, request failure, already running, tenant busy)
  13  run did nothing: export_to_crm is off";

/// A failure with its exit code, a machine-readable code and a message for people.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct CliError {
    pub exit: Exit,
    /// Stable, machine-readable (`unknown_job`, `bad_input`, `acknowledgement_required`, ...).
    pub code: String,
    pub message: String,
}

impl CliError {
    pub fn new(exit: Exit, code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            exit,
            code: code.into(),
            message: message.into(),
        }
    }
    pub fn bad_input(message: impl Into<String>) -> Self {
        Self::new(Exit::BadInput, "bad_input", message)
    }
    pub fn not_found(code: &str, message: impl Into<String>) -> Self {
        Self::new(Exit::NotFound, code, message)
    }
    pub fn refused(code: &str, message: impl Into<String>) -> Self {
        Self::new(Exit::Refused, code, message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(Exit::Failure, "internal", message)
    }
    pub fn unavailable(code: &str, message: impl Into<String>) -> Self {
        Self::new(Exit::Unavailable, code, message)
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({"error": {
            "code": self.code,
            "exit_code": self.exit.code(),
            "message": self.message,
        }})
    }
}

impl From<StoreError> for CliError {
    fn from(e: StoreError) -> Self {
        let (exit, code) = match &e {
            StoreError::VersionConflict { .. } => (Exit::Refused, "version_conflict"),
            StoreError::NotFound(_) => (Exit::NotFound, "not_found"),
            StoreError::Invalid(_) => (Exit::BadInput, "invalid_store_request"),
            StoreError::Unavailable(_) => (Exit::Unavailable, "store_unavailable"),
            StoreError::LeaseLost => (Exit::StoppedEarly, "lease_lost"),
        };
        Self::new(exit, code, e.to_string())
    }
}

impl From<EngineError> for CliError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::UnknownJob(_) => Self::not_found(e.code(), e.to_string()),
            EngineError::Store(s) => s.into(),
        }
    }
}

impl From<OpsError> for CliError {
    fn from(e: OpsError) -> Self {
        let exit = match &e {
            OpsError::UnknownJob(_) | OpsError::NoSuchError(_) => Exit::NotFound,
            OpsError::NotHalted(_)
            | OpsError::NotParked { .. }
            | OpsError::AcknowledgementRequired
            | OpsError::Busy(_) => Exit::Refused,
            OpsError::Store(s) => return s.clone().into(),
        };
        Self::new(exit, e.code(), e.to_string())
    }
}

impl From<SettingsError> for CliError {
    fn from(e: SettingsError) -> Self {
        // Every settings rule violation is a refusal by a rule; the code says which.
        Self::new(Exit::Refused, e.code(), e.to_string())
    }
}

impl From<IdError> for CliError {
    fn from(e: IdError) -> Self {
        Self::bad_input(e.to_string())
    }
}

pub type CliResult<T> = Result<T, CliError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_exit_code_is_in_the_help_table() {
        let all = [
            Exit::Ok,
            Exit::Failure,
            Exit::Usage,
            Exit::BadInput,
            Exit::NotFound,
            Exit::Refused,
            Exit::Unavailable,
            Exit::Halted,
            Exit::Blocked,
            Exit::StoppedEarly,
            Exit::Disabled,
        ];
        for e in all {
            let line = format!("\n{:>4}  ", e.code());
            assert!(EXIT_CODES_HELP.contains(&line), "{e:?} missing from help");
        }
        let listed = EXIT_CODES_HELP.lines().skip(1).count();
        assert_eq!(
            listed,
            all.len(),
            "help lists a code that Exit does not have"
        );
    }

    #[test]
    fn store_errors_map_to_documented_codes() {
        let e: CliError = StoreError::VersionConflict {
            expected: 1,
            found: 2,
        }
        .into();
        assert_eq!(
            (e.exit, e.code.as_str()),
            (Exit::Refused, "version_conflict")
        );
        let e: CliError = StoreError::Unavailable("disk".into()).into();
        assert_eq!(e.exit.code(), 6);
    }
}
