//! The store conformance suite against SqliteStore: on a fresh file per case, and on a
//! private in-memory database per case.

use crm_export_core::testing::conformance::StoreContext;
use crm_export_sqlite::SqliteStore;

mod file {
    use super::*;
    // The factory as a closure: a new file in the case's temp dir.
    crm_export_core::conformance_tests!(|ctx: StoreContext| async move {
        SqliteStore::open(ctx.temp_dir().join("store.db")).expect("open the SQLite store")
    });
}

mod in_memory {
    use super::*;

    // The factory as an async fn.
    async fn fresh(_ctx: StoreContext) -> SqliteStore {
        SqliteStore::open_in_memory().expect("open in memory")
    }

    crm_export_core::conformance_tests!(fresh);
}
