//! The export function: one `ExportRequested` command, one export run of one tenant's job
//! (SPEC §4), stopped before the invocation's deadline. The logic is in
//! `crm_export_functions::job`.

use crm_export_functions::job::JobFunction;
use crm_export_functions::{logging, RunKind};
use lambda_runtime::{service_fn, Error, LambdaEvent};

#[tokio::main]
async fn main() -> Result<(), Error> {
    logging::init();
    // Configuration and clients once per container; every invocation borrows them.
    let function = JobFunction::from_env(RunKind::Export).await?;
    let function = &function;
    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<serde_json::Value>| async move { function.handle(event).await },
    ))
    .await
}
