//! Creates the two tables (tests, and the CLI against a local endpoint such as moto). In
//! AWS the SAM template creates them; this must stay in step with `infra/TABLES.md`.

use super::error;
use super::items::*;
use super::DynamoStore;
use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection,
    ProjectionType, ScalarAttributeType, TableStatus, TimeToLiveSpecification,
};
use crm_export_core::ports::StoreError;
use std::time::Duration;

fn attr(name: &str, t: ScalarAttributeType) -> Result<AttributeDefinition, StoreError> {
    AttributeDefinition::builder()
        .attribute_name(name)
        .attribute_type(t)
        .build()
        .map_err(error::build)
}
fn key_el(name: &str, t: KeyType) -> Result<KeySchemaElement, StoreError> {
    KeySchemaElement::builder()
        .attribute_name(name)
        .key_type(t)
        .build()
        .map_err(error::build)
}
fn gsi(
    name: &str,
    pk: &str,
    sk: &str,
    projection: ProjectionType,
) -> Result<GlobalSecondaryIndex, StoreError> {
    GlobalSecondaryIndex::builder()
        .index_name(name)
        .key_schema(key_el(pk, KeyType::Hash)?)
        .key_schema(key_el(sk, KeyType::Range)?)
        .projection(Projection::builder().projection_type(projection).build())
        .build()
        .map_err(error::build)
}

impl DynamoStore {
    /// Creates the state and queue tables (on-demand billing) and enables TTL on the
    /// state table, then waits until both are active. Tables that exist already are left
    /// as they are.
    pub async fn create_tables(&self) -> Result<(), StoreError> {
        use ScalarAttributeType::{N, S};
        let state = &self.config.state_table;
        let created = self
            .client
            .create_table()
            .table_name(state)
            .billing_mode(BillingMode::PayPerRequest)
            .attribute_definitions(attr(PK, S)?)
            .attribute_definitions(attr(SK, S)?)
            .attribute_definitions(attr(GSI_STATUS_PK, S)?)
            .attribute_definitions(attr(GSI_STATUS_SK, S)?)
            .attribute_definitions(attr(GSI_OPEN_PK, S)?)
            .attribute_definitions(attr(GSI_OPEN_SK, S)?)
            .key_schema(key_el(PK, KeyType::Hash)?)
            .key_schema(key_el(SK, KeyType::Range)?)
            .global_secondary_indexes(gsi(
                GSI_STATUS,
                GSI_STATUS_PK,
                GSI_STATUS_SK,
                ProjectionType::All,
            )?)
            // Keys only: retry candidates are re-read consistently from the table anyway.
            .global_secondary_indexes(gsi(
                GSI_OPEN,
                GSI_OPEN_PK,
                GSI_OPEN_SK,
                ProjectionType::KeysOnly,
            )?)
            .send()
            .await;
        let state_is_new = match created {
            Ok(_) => true,
            Err(e) if e.code() == Some("ResourceInUseException") => false,
            Err(e) => return Err(error::classify("CreateTable", e)),
        };
        let queue = &self.config.queue_table;
        let created = self
            .client
            .create_table()
            .table_name(queue)
            .billing_mode(BillingMode::PayPerRequest)
            .attribute_definitions(attr(PK, S)?)
            .attribute_definitions(attr(SEQ, N)?)
            .key_schema(key_el(PK, KeyType::Hash)?)
            .key_schema(key_el(SEQ, KeyType::Range)?)
            .send()
            .await;
        match created {
            Ok(_) => {}
            Err(e) if e.code() == Some("ResourceInUseException") => {}
            Err(e) => return Err(error::classify("CreateTable", e)),
        }
        self.wait_active(state).await?;
        self.wait_active(queue).await?;
        if state_is_new {
            self.client
                .update_time_to_live()
                .table_name(state)
                .time_to_live_specification(
                    TimeToLiveSpecification::builder()
                        .enabled(true)
                        .attribute_name(TTL)
                        .build()
                        .map_err(error::build)?,
                )
                .send()
                .await
                .map_err(|e| error::classify("UpdateTimeToLive", e))?;
        }
        Ok(())
    }

    /// Deletes both tables (test clean-up); missing tables are not an error.
    pub async fn delete_tables(&self) -> Result<(), StoreError> {
        for table in [&self.config.state_table, &self.config.queue_table] {
            match self.client.delete_table().table_name(table).send().await {
                Ok(_) => {}
                Err(e) if e.code() == Some("ResourceNotFoundException") => {}
                Err(e) => return Err(error::classify("DeleteTable", e)),
            }
        }
        Ok(())
    }

    async fn wait_active(&self, table: &str) -> Result<(), StoreError> {
        for _ in 0..120 {
            let out = self
                .client
                .describe_table()
                .table_name(table)
                .send()
                .await
                .map_err(|e| error::classify("DescribeTable", e))?;
            if out.table().and_then(|t| t.table_status()) == Some(&TableStatus::Active) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        Err(StoreError::Unavailable(format!(
            "table {table} did not become active within a minute"
        )))
    }
}
