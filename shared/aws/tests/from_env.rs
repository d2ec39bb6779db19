//! `DynamoStore::from_env` honours `AWS_ENDPOINT_URL` (how the CLI reaches moto). Its own
//! test binary: it sets process environment variables.

mod common;

use crm_export_aws::DynamoStore;
use crm_export_core::ports::ExportQueue;

#[tokio::test]
async fn from_env_uses_the_endpoint_from_the_environment() {
    std::env::set_var("AWS_ENDPOINT_URL", common::moto_endpoint());
    std::env::set_var("AWS_REGION", "us-east-1");
    std::env::set_var("AWS_ACCESS_KEY_ID", "testing");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", "testing");
    let mut config = common::unique_tables("fromenv");
    config.timeouts = common::moto_timeouts();
    let store = DynamoStore::from_env(config).await;
    store
        .create_tables()
        .await
        .expect("tables created through AWS_ENDPOINT_URL");
    let job = crm_export_core::domain::JobRef::new("t-env".parse().unwrap(), "j".parse().unwrap());
    assert_eq!(store.head(&job).await.unwrap(), 0);
    store.delete_tables().await.unwrap();
}
