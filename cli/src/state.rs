//! Opening the state store the configuration names, and the ports every command shares.

use crate::config::{StateBackend, SQLITE_FILE};
use crate::error::{CliError, CliResult};
use crm_export_core::engine::EngineConfig;
use crm_export_core::events::RecordingPublisher;
use crm_export_core::ports::{CrmClient, StateStore, SystemClock, UpsertRequest};
use crm_export_core::{CrmReply, RecordOutcome, RequestFailure, RequestFailureKind};
use crm_export_sqlite::SqliteStore;
use std::time::Duration;

/// The store and the other local ports of one invocation.
pub struct Local {
    pub store: Box<dyn StateStore>,
    /// Local runs publish to memory: the events are reported, not sent to a bus.
    pub events: RecordingPublisher,
    pub clock: SystemClock,
    pub engine: EngineConfig,
}

impl Local {
    pub fn open(backend: &StateBackend) -> CliResult<Local> {
        let store: Box<dyn StateStore> = match backend {
            StateBackend::Sqlite { dir } => {
                std::fs::create_dir_all(dir).map_err(|e| {
                    CliError::unavailable(
                        "store_unavailable",
                        format!("cannot create the state dir {}: {e}", dir.display()),
                    )
                })?;
                Box::new(SqliteStore::open(dir.join(SQLITE_FILE))?)
            }
        };
        Ok(Local {
            store,
            events: RecordingPublisher::new(),
            clock: SystemClock,
            engine: EngineConfig::default(),
        })
    }

    /// The detail types of the events published so far, in order.
    pub fn published(&self) -> Vec<String> {
        self.events
            .events()
            .iter()
            .map(|e| e.kind.detail_type().to_owned())
            .collect()
    }
}

/// The CRM of commands that never call it (status, skip-halted, reopen): the engine wants
/// one, and a call reaching it would be a bug, reported as a misconfiguration.
pub struct NoCrm;

#[async_trait::async_trait]
impl CrmClient for NoCrm {
    async fn upsert(&self, _request: &UpsertRequest) -> CrmReply<Vec<RecordOutcome>> {
        CrmReply {
            result: Err(no_crm()),
            api_calls: 0,
            usage: None,
        }
    }
    async fn check_connection(&self, _timeout: Duration) -> CrmReply<()> {
        CrmReply {
            result: Err(no_crm()),
            api_calls: 0,
            usage: None,
        }
    }
}

fn no_crm() -> RequestFailure {
    RequestFailure::new(
        RequestFailureKind::Misconfigured,
        "NO_CRM",
        "this command has no CRM connection",
    )
}
