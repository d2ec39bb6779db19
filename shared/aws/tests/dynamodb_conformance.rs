//! The store conformance suite, unchanged, against the DynamoDB store on a moto server.
//! The tables are created once for this test binary; every case uses its own tenants.

mod common;

use crm_export_aws::{DynamoConfig, DynamoStore};
use crm_export_core::testing::conformance::StoreContext;
use tokio::sync::OnceCell;

static TABLES: OnceCell<DynamoConfig> = OnceCell::const_new();

async fn store(_ctx: StoreContext) -> DynamoStore {
    let config = TABLES
        .get_or_init(|| async {
            let store = common::fresh_store("conformance").await;
            store.config().clone()
        })
        .await
        .clone();
    // A client per test: each test has its own tokio runtime, and a client's connection
    // pool must not outlive the runtime it was used on.
    DynamoStore::new(&common::moto_sdk_config().await, config)
}

crm_export_core::conformance_tests!(store);
