//! What every handler is given: the ports, built once (at cold start in Lambda) and shared.

use crate::retry::RetryRequester;
use crm_export_core::engine::{EngineConfig, Operator};
use crm_export_core::ports::{Clock, EventPublisher, StateStore, SystemClock};
use std::sync::Arc;

#[derive(Clone)]
pub struct ApiState {
    pub store: Arc<dyn StateStore>,
    pub events: Arc<dyn EventPublisher>,
    pub retry: Arc<dyn RetryRequester>,
    pub clock: Arc<dyn Clock>,
    /// The engine's tunables: operator actions take the job's lease for this long.
    pub engine_config: Arc<EngineConfig>,
}

impl ApiState {
    /// The ports with the system clock and the default engine configuration.
    pub fn new(
        store: Arc<dyn StateStore>,
        events: Arc<dyn EventPublisher>,
        retry: Arc<dyn RetryRequester>,
    ) -> Self {
        Self {
            store,
            events,
            retry,
            clock: Arc::new(SystemClock),
            engine_config: Arc::new(EngineConfig::default()),
        }
    }

    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Job status and the operator actions (they never call the CRM).
    pub fn operator(&self) -> Operator<'_> {
        Operator::new(
            &*self.store,
            &*self.events,
            &*self.clock,
            &self.engine_config,
        )
    }
}
