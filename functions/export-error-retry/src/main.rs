//! The ExportError retry function (`CRMExport_ExportError`): one
//! `ExportErrorRetryRequested` command, from the daily sweep or the settings API, one retry
//! run of one tenant's job (SPEC §5). The logic is in `crm_export_functions::job`.

use crm_export_functions::job::JobFunction;
use crm_export_functions::{logging, RunKind};
use lambda_runtime::{service_fn, Error, LambdaEvent};

#[tokio::main]
async fn main() -> Result<(), Error> {
    logging::init();
    // Configuration and clients once per container; every invocation borrows them.
    let function = JobFunction::from_env(RunKind::Retry).await?;
    let function = &function;
    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<serde_json::Value>| async move { function.handle(event).await },
    ))
    .await
}
