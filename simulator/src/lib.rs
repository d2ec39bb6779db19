//! A local Salesforce org over HTTP(S), faithful enough that a Salesforce client cannot tell
//! it from a real org for what it covers: the OAuth token endpoint (client credentials and
//! refresh token grants, rotation), sObject Collections upsert with Salesforce's request- and
//! record-level errors, `Sforce-Limit-Info` and `/limits`, session expiry, and an admin API
//! (`/__sim/...` and [`Simulator`]'s methods) to change the org while it runs and to inject
//! faults. See README.md for the org definition format.

mod admin;
mod collections;
mod decode;
pub mod demo;
mod error;
mod faults;
mod ids;
mod jsonpos;
mod limits;
mod oauth;
mod org;
mod rest;
mod rules;
mod server;
mod sim;
mod store;
mod tls;
mod versions;

pub use error::SimError;
pub use faults::{Fault, FaultKind};
pub use org::{
    load_org, ApiAllocation, FieldDef, FieldType, GrantType, LockRule, OAuthClient, OAuthSettings,
    ObjectDef, OrgDefinition, Storage, Trigger, TriggerError, TriggerEvent, TriggerTiming,
    ValidationRule,
};
pub use rules::{Condition, Op};
pub use server::{serve, serve_simulator, ServeOptions, SimHandle};
pub use sim::{ApiUsage, Simulator, Stats};
pub use store::RecordView;
