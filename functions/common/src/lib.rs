//! What the crm-export Lambda functions share. Each binary in `functions/*` reads its
//! configuration and builds its clients once (at cold start), then hands every event to
//! one of the handlers here:
//!
//! * [`job::JobFunction`]: the `export` and `export-error-retry` functions (one command,
//!   one run of one tenant's job);
//! * [`dispatch::Dispatcher`]: the scheduled fan-out and the per-job gauges;
//! * the `settings-api` function serves `crm_export_api`'s router, with
//!   [`commands::EventBridgeRetryRequester`] for on-demand retry runs.
//!
//! Plumbing: [`config`] (environment), [`logging`] (JSON logs), [`emf`] (metrics),
//! [`commands`] (the internal command events), [`secrets`] and [`crm`] (tenant CRM
//! credentials in Secrets Manager, cached per warm container), [`error`] (Lambda
//! diagnostics).

pub mod commands;
pub mod config;
pub mod crm;
pub mod dispatch;
pub mod emf;
pub mod error;
pub mod job;
pub mod logging;
pub mod sdk;
pub mod secrets;

pub use config::FunctionConfig;
pub use crm_export_core::engine::RunKind;
pub use error::FunctionError;
