//! Shared by the tests that run against a moto server (`scripts/test-all` starts one and
//! exports `MOTO_ENDPOINT`). Without it these tests fail loudly instead of skipping.

#![allow(dead_code)] // each test binary uses a different part

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_dynamodb::config::Credentials;
use crm_export_aws::{DynamoConfig, DynamoStore, SdkTimeouts};
use std::time::Duration;

/// The moto endpoint; panics with instructions when it is not set.
pub fn moto_endpoint() -> String {
    match std::env::var("MOTO_ENDPOINT") {
        Ok(v) if !v.trim().is_empty() => v,
        _ => panic!(
            "MOTO_ENDPOINT is not set: these tests need a moto server. Run ./scripts/test-all, \
             or start one (`python3 shared/aws/tests/moto/serve.py 127.0.0.1 5000`, moto[server] 5.2.1 installed) and export MOTO_ENDPOINT=http://127.0.0.1:5000"
        ),
    }
}

/// SDK configuration for moto: its endpoint, a fixed region, dummy credentials.
pub async fn moto_sdk_config() -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(moto_endpoint())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("testing", "testing", None, None, "moto"))
        .load()
        .await
}

/// Table names no other test binary or run uses. The timeouts are generous: moto answers
/// one request at a time (see `tests/moto/serve.py`) and copies whole tables per
/// transaction, so a busy test binary can wait seconds for an answer. AWS answers in
/// milliseconds; the defaults are for AWS.
pub fn unique_tables(prefix: &str) -> DynamoConfig {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let mut config = DynamoConfig::new(
        format!("{prefix}-{id}-state"),
        format!("{prefix}-{id}-queue"),
    );
    config.timeouts = moto_timeouts();
    config
}

pub fn moto_timeouts() -> SdkTimeouts {
    SdkTimeouts {
        operation: Duration::from_secs(120),
        attempt: Duration::from_secs(60),
        ..SdkTimeouts::default()
    }
}

/// A store on fresh tables, created here.
pub async fn fresh_store(prefix: &str) -> DynamoStore {
    let store = DynamoStore::new(&moto_sdk_config().await, unique_tables(prefix));
    store
        .create_tables()
        .await
        .expect("create the tables on moto");
    store
}
