//! The state store of a measurement, wrapped in core's `CountingStore` so that every port
//! call is counted: the embedded SQLite store in a temp dir, or the DynamoDB store on fresh
//! tables in the moto server at `MOTO_ENDPOINT` (whose SDK interceptor also counts the HTTP
//! requests behind the port calls).

use crate::error::{BenchError, Context, Result};
use crm_export_aws::{DynamoConfig, DynamoStore, SdkTimeouts};
use crm_export_core::ports::StateStore;
use crm_export_core::store::{CountingStore, StoreCalls};
use crm_export_sqlite::SqliteStore;
use std::path::Path;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    Sqlite,
    Dynamodb,
}

impl StoreKind {
    pub fn name(self) -> &'static str {
        match self {
            StoreKind::Sqlite => "sqlite",
            StoreKind::Dynamodb => "dynamodb",
        }
    }
}

impl std::str::FromStr for StoreKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "sqlite" | "embedded" => Ok(StoreKind::Sqlite),
            "dynamodb" | "dynamo" => Ok(StoreKind::Dynamodb),
            other => Err(format!("--store {other:?}: expected sqlite or dynamodb")),
        }
    }
}

enum Inner {
    Sqlite {
        store: CountingStore<SqliteStore>,
        _dir: Option<tempfile::TempDir>,
    },
    Dynamo {
        store: CountingStore<DynamoStore>,
    },
}

pub struct BenchStore {
    inner: Inner,
}

/// The file name of the SQLite store inside its directory.
pub const SQLITE_FILE: &str = "state.sqlite";

impl BenchStore {
    /// An empty store for one measurement.
    pub async fn fresh(kind: StoreKind) -> Result<Self> {
        match kind {
            StoreKind::Sqlite => {
                let dir = tempfile::Builder::new()
                    .prefix("crm-export-bench-")
                    .tempdir()
                    .ctx("creating a temp dir for the SQLite store")?;
                let store = SqliteStore::open(dir.path().join(SQLITE_FILE))
                    .ctx("opening the SQLite store")?;
                Ok(Self {
                    inner: Inner::Sqlite {
                        store: CountingStore::new(store),
                        _dir: Some(dir),
                    },
                })
            }
            StoreKind::Dynamodb => {
                let id = uuid::Uuid::new_v4().simple().to_string();
                let tables = DynamoTables {
                    state: format!("bench-{id}-state"),
                    queue: format!("bench-{id}-queue"),
                };
                let store = Self::open_dynamo(&tables).await?;
                if let Inner::Dynamo { store } = &store.inner {
                    store
                        .inner()
                        .create_tables()
                        .await
                        .ctx("creating the DynamoDB tables on moto")?;
                }
                Ok(store)
            }
        }
    }

    /// The SQLite store in the file at `path` (the cold path opens one made before).
    pub fn open_sqlite(path: &Path) -> Result<Self> {
        let store = SqliteStore::open(path).ctx("opening the SQLite store")?;
        Ok(Self {
            inner: Inner::Sqlite {
                store: CountingStore::new(store),
                _dir: None,
            },
        })
    }

    /// The DynamoDB store on existing tables in moto.
    pub async fn open_dynamo(tables: &DynamoTables) -> Result<Self> {
        let sdk = moto_sdk_config().await?;
        let mut config = DynamoConfig::new(tables.state.clone(), tables.queue.clone());
        // moto answers one request at a time and copies tables per transaction; the SDK
        // defaults are for AWS.
        config.timeouts = SdkTimeouts {
            operation: Duration::from_secs(300),
            attempt: Duration::from_secs(120),
            ..SdkTimeouts::default()
        };
        Ok(Self {
            inner: Inner::Dynamo {
                store: CountingStore::new(DynamoStore::new(&sdk, config)),
            },
        })
    }

    pub fn kind(&self) -> StoreKind {
        match self.inner {
            Inner::Sqlite { .. } => StoreKind::Sqlite,
            Inner::Dynamo { .. } => StoreKind::Dynamodb,
        }
    }

    /// The store as the engine sees it (counted).
    pub fn port(&self) -> &dyn StateStore {
        match &self.inner {
            Inner::Sqlite { store, .. } => store,
            Inner::Dynamo { store } => store,
        }
    }

    /// Port calls so far.
    pub fn calls(&self) -> StoreCalls {
        match &self.inner {
            Inner::Sqlite { store, .. } => store.snapshot(),
            Inner::Dynamo { store } => store.snapshot(),
        }
    }

    /// HTTP requests to DynamoDB so far (retries included); `None` for SQLite.
    pub fn backend_requests(&self) -> Option<u64> {
        match &self.inner {
            Inner::Sqlite { .. } => None,
            Inner::Dynamo { store } => Some(store.inner().request_count()),
        }
    }

    /// The SQLite file, if this is the SQLite store.
    pub fn sqlite_path(&self) -> Option<&Path> {
        match &self.inner {
            Inner::Sqlite { store, .. } => store.inner().path(),
            Inner::Dynamo { .. } => None,
        }
    }

    pub fn dynamo_tables(&self) -> Option<DynamoTables> {
        match &self.inner {
            Inner::Sqlite { .. } => None,
            Inner::Dynamo { store } => {
                let c = store.inner().config();
                Some(DynamoTables {
                    state: c.state_table.clone(),
                    queue: c.queue_table.clone(),
                })
            }
        }
    }

    /// Deletes what the store created (the temp dir goes with the value; DynamoDB tables
    /// are deleted so that moto does not keep them in memory).
    pub async fn cleanup(self) {
        if let Inner::Dynamo { store } = &self.inner {
            let _ = store.inner().delete_tables().await;
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DynamoTables {
    pub state: String,
    pub queue: String,
}

/// SDK configuration for the moto server at `MOTO_ENDPOINT` (fixed region, dummy
/// credentials). Fails clearly when the variable is not set.
pub async fn moto_sdk_config() -> Result<aws_config::SdkConfig> {
    let endpoint = moto_endpoint()?;
    Ok(aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
            "testing", "testing", None, None, "moto",
        ))
        .load()
        .await)
}

pub fn moto_endpoint() -> Result<String> {
    match std::env::var("MOTO_ENDPOINT") {
        Ok(v) if !v.trim().is_empty() => Ok(v),
        _ => Err(BenchError::new(
            "--store dynamodb needs a moto server: MOTO_ENDPOINT is not set. Start one \
             (./scripts/test-all does, or `.venv/bin/python shared/aws/tests/moto/serve.py \
             127.0.0.1 5000` with moto[server] 5.2.1 installed) and export \
             MOTO_ENDPOINT=http://127.0.0.1:5000",
        )),
    }
}
