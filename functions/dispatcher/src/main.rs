//! The dispatcher: on each scheduled tick, the per-job gauges and one command per tenant
//! and job. The logic is in `crm_export_functions::dispatch`.

use crm_export_functions::dispatch::Dispatcher;
use crm_export_functions::logging;
use lambda_runtime::{service_fn, Error, LambdaEvent};

#[tokio::main]
async fn main() -> Result<(), Error> {
    logging::init();
    // Configuration and clients once per container; every invocation borrows them.
    let dispatcher = Dispatcher::from_env().await?;
    let dispatcher = &dispatcher;
    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<serde_json::Value>| async move { dispatcher.handle(event).await },
    ))
    .await
}
