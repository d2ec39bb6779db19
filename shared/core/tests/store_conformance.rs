//! The store conformance suite against the in-memory reference store.

use crm_export_core::store::MemoryStore;
use crm_export_core::testing::conformance::StoreContext;

// A fresh store per case: the memory store needs nothing from the context.
crm_export_core::conformance_tests!(|_ctx: StoreContext| async { MemoryStore::new() });
