//! The heart of crm-export: domain types, the ports (traits) every adapter implements,
//! and the export / ExportError retry engine. Nothing here knows about AWS or HTTP, so the
//! Lambda functions and the `crmx` CLI run exactly the same code.

pub mod domain;
pub mod engine;
pub mod events;
pub mod ports;
pub mod store;

#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use domain::*;
