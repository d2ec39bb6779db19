//! Opening the state store the configuration names, and the ports every command shares.

use crate::config::{StateBackend, SQLITE_FILE};
use crate::error::{CliError, CliResult};
use crm_export_core::engine::EngineConfig;
use crm_export_core::events::RecordingPublisher;
use crm_export_core::ports::{StateStore, SystemClock};
use crm_export_sqlite::SqliteStore;

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

    /// Job status and operator actions (no CRM involved).
    pub fn operator(&self) -> crm_export_core::engine::Operator<'_> {
        crm_export_core::engine::Operator::new(
            self.store.as_ref(),
            &self.events,
            &self.clock,
            &self.engine,
        )
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
