//! Opening the state store the configuration names, and the ports every command shares.

use crate::config::{StateBackend, SQLITE_FILE};
use crate::error::{CliError, CliResult};
use crm_export_aws::{DynamoConfig, DynamoStore, EventBridgeConfig, EventBridgePublisher};
use crm_export_core::engine::EngineConfig;
use crm_export_core::events::RecordingPublisher;
use crm_export_core::ports::{EventPublisher, PublishError, StateStore, SystemClock};
use crm_export_core::Event;
use crm_export_sqlite::SqliteStore;

/// The store and the other local ports of one invocation.
pub struct Local {
    pub store: Box<dyn StateStore>,
    /// Events are reported; with a bus configured they are also sent to it.
    pub events: LocalEvents,
    pub clock: SystemClock,
    pub engine: EngineConfig,
}

impl Local {
    pub async fn open(backend: &StateBackend) -> CliResult<Local> {
        let mut bus = None;
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
            StateBackend::Dynamodb {
                state_table,
                queue_table,
                event_bus,
            } => {
                if let Some(name) = event_bus {
                    bus = Some(EventBridgePublisher::from_env(EventBridgeConfig::new(name)).await);
                }
                Box::new(DynamoStore::from_env(DynamoConfig::new(state_table, queue_table)).await)
            }
        };
        Ok(Local {
            store,
            events: LocalEvents {
                recorded: RecordingPublisher::new(),
                bus,
            },
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
            .recorded
            .events()
            .iter()
            .map(|e| e.kind.detail_type().to_owned())
            .collect()
    }
}

/// Reports every event; sends it to the bus first when one is configured, so a failed
/// send leaves it in the outbox like any other publisher would.
pub struct LocalEvents {
    pub recorded: RecordingPublisher,
    bus: Option<EventBridgePublisher>,
}

#[async_trait::async_trait]
impl EventPublisher for LocalEvents {
    async fn publish(&self, events: &[Event]) -> Result<(), PublishError> {
        if let Some(bus) = &self.bus {
            bus.publish(events).await?;
        }
        self.recorded.publish(events).await
    }
}
