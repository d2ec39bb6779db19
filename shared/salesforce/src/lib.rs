//! The Salesforce REST adapter of crm-export: [`SalesforceClient`] implements the
//! [`CrmClient`](crm_export_core::ports::CrmClient) port with OAuth 2.0 (client credentials
//! or refresh token, with rotation written back through a [`CredentialSink`]) and the sObject
//! Collections upsert (`allOrNone=false`, at most 200 records per call).
//!
//! Every decision about an error is in [`classify`] (tables there and in `ERRORS.md`); how
//! often and how long to retry is in [`retry`]; the call's timeout bounds both.

mod auth;
pub mod classify;
mod client;
mod config;
mod error;
pub mod limits;
mod redact;
pub mod retry;
mod secret;
mod urls;

pub use auth::{CredentialSink, InMemoryCredentialSink, NoopCredentialSink, SinkError};
pub use client::{ClientMetrics, SalesforceClient, MAX_RECORDS_PER_CALL};
pub use config::{Credentials, SalesforceConfig, DEFAULT_API_VERSION};
pub use error::ClientError;
pub use retry::RetryPolicy;
pub use secret::Secret;
