//! The settings API function: `crm_export_api`'s router behind API Gateway (HTTP API,
//! JWT authorizer; the tenant comes from the verified claims). On-demand retry runs are
//! published as `ExportErrorRetryRequested` commands.

use crm_export_api::ApiState;
use crm_export_aws::{DynamoStore, EventBridgePublisher};
use crm_export_functions::commands::{CommandPublisher, EventBridgeRetryRequester};
use crm_export_functions::{logging, FunctionConfig};
use std::sync::Arc;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    logging::init();
    // Configuration and clients once per container; every request shares them.
    let config = FunctionConfig::from_env()?;
    let sdk = crm_export_aws::load_sdk_config().await;
    let store = Arc::new(DynamoStore::new(&sdk, config.dynamo.clone()));
    let events = Arc::new(EventBridgePublisher::new(&sdk, config.events.clone()));
    let commands =
        CommandPublisher::new(&sdk, config.events.bus_name.clone(), &config.sdk_timeouts);
    let retry = Arc::new(EventBridgeRetryRequester::new(commands));
    let state = ApiState::new(store, events, retry);
    lambda_http::run(crm_export_api::lambda::lambda_router(state)).await
}
