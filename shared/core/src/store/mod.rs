//! Store adapters that live in the core crate. The SQLite and DynamoDB stores are their own
//! crates; all of them pass `testing::conformance`.

mod memory;
pub mod pagination;

pub use memory::MemoryStore;
