//! The operator actions the API calls (status, skip, re-open) never talk to the CRM, but
//! the engine is built with one. This one refuses every call, so a mistake shows up as a
//! failed request instead of a write to a customer's CRM.

use crm_export_core::ports::{CrmClient, UpsertRequest};
use crm_export_core::{CrmReply, RecordOutcome, RequestFailure, RequestFailureKind};
use std::time::Duration;

#[derive(Debug, Clone, Copy, Default)]
pub struct NoCrm;

fn refused() -> RequestFailure {
    RequestFailure::new(
        RequestFailureKind::Misconfigured,
        "NO_CRM",
        "the settings API has no CRM connection",
    )
}

#[async_trait::async_trait]
impl CrmClient for NoCrm {
    async fn upsert(&self, _request: &UpsertRequest) -> CrmReply<Vec<RecordOutcome>> {
        tracing::error!("the settings API tried to call the CRM");
        CrmReply {
            result: Err(refused()),
            api_calls: 0,
            usage: None,
        }
    }

    async fn check_connection(&self, _timeout: Duration) -> CrmReply<()> {
        tracing::error!("the settings API tried to call the CRM");
        CrmReply {
            result: Err(refused()),
            api_calls: 0,
            usage: None,
        }
    }
}
