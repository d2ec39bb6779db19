//! Store adapters that live in the core crate. The SQLite and DynamoDB stores are their own
//! crates; all of them pass `testing::conformance`.

pub mod counting;
mod memory;
pub mod pagination;

pub use counting::{CountingStore, StoreCalls, StoreOp};
pub use memory::MemoryStore;
