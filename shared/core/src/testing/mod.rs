//! Test support shared by this crate's tests and other crates' tests (feature `testing`):
//! a controllable clock, a scriptable CRM, and the store conformance suite.

pub mod conformance;
mod fake_clock;
mod fake_crm;

pub use fake_clock::FakeClock;
pub use fake_crm::{CrmCall, FakeCrm, Scripted};
