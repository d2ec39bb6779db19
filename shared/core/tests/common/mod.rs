//! A small world for engine tests: memory store, fake CRM, recording publisher, fake clock.
#![allow(dead_code)]

pub mod crash;

use crm_export_core::engine::{Engine, EngineConfig, RunOptions, RunReport};
use crm_export_core::events::RecordingPublisher;
use crm_export_core::ports::*;
use crm_export_core::store::MemoryStore;
use crm_export_core::testing::{FakeClock, FakeCrm};
use crm_export_core::*;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

pub const EXT: &str = "Ext_Id__c";

pub struct World {
    pub store: MemoryStore,
    pub crm: FakeCrm,
    pub events: RecordingPublisher,
    pub clock: Arc<FakeClock>,
    pub config: EngineConfig,
    pub job: JobRef,
    pub deadline: Option<Timestamp>,
}

/// Stores changed settings as the next version, bypassing the change rules (engine tests
/// set values the rules would refuse a person, such as pause off without acknowledgement).
pub async fn set_settings(
    store: &MemoryStore,
    tenant: &TenantId,
    now: Timestamp,
    change: impl FnOnce(&mut Settings),
) {
    let current = store.get_settings(tenant).await.unwrap();
    let (old, version) = current.map(|v| (v.settings, v.version)).unwrap_or_default();
    let mut new = old.clone();
    change(&mut new);
    let ch = SettingsChange {
        version: version + 1,
        at: now,
        actor: "test".into(),
        old,
        new,
        acknowledged_data_inconsistency: true,
    };
    let ev = Event {
        id: uuid::Uuid::new_v4().to_string(),
        kind: EventKind::SettingsChanged,
        tenant: tenant.clone(),
        job: None,
        at: now,
        detail: json!({}),
    };
    store.put_settings(tenant, version, ch, ev).await.unwrap();
}

pub fn key(s: &str) -> RecordKey {
    RecordKey::from_external_id(s, false).unwrap()
}

pub fn failure(kind: RequestFailureKind, code: &str) -> RequestFailure {
    RequestFailure::new(kind, code, format!("{code} happened"))
}

impl World {
    pub async fn new() -> Self {
        Self::with(|_| {}).await
    }

    pub async fn with(tune: impl FnOnce(&mut EngineConfig)) -> Self {
        let clock = Arc::new(FakeClock::default());
        let mut config = EngineConfig {
            transient_backoff: Duration::from_millis(100),
            ..EngineConfig::default()
        };
        tune(&mut config);
        let w = World {
            store: MemoryStore::new(),
            crm: FakeCrm::with_clock(clock.clone()),
            events: RecordingPublisher::new(),
            clock,
            config,
            job: JobRef::new(
                TenantId::new("acme").unwrap(),
                JobId::new("contacts").unwrap(),
            ),
            deadline: None,
        };
        let def = JobDefinition {
            job_id: w.job.job.clone(),
            object: "Contact".into(),
            external_id_field: EXT.into(),
            key_field: None,
            key_case_insensitive: false,
            field_map: Default::default(),
        };
        w.store.put_job(&w.job.tenant, def).await.unwrap();
        // The rule tests read one batch at a time; pipelining has tests of its own.
        w.settings(|s| {
            s.export_to_crm = true;
            s.max_in_flight = 1;
        })
        .await;
        w
    }

    pub fn engine(&self) -> Engine<'_> {
        Engine::new(
            &self.store,
            &self.crm,
            &self.events,
            self.clock.as_ref(),
            &self.config,
        )
    }

    pub fn now(&self) -> Timestamp {
        Clock::now(self.clock.as_ref())
    }

    pub fn opts(&self) -> RunOptions {
        RunOptions::new(
            self.deadline
                .unwrap_or_else(|| self.now() + chrono::Duration::minutes(14)),
        )
    }

    /// Changes the tenant's settings directly (the rules are tested elsewhere).
    pub async fn settings(&self, change: impl FnOnce(&mut Settings)) {
        set_settings(&self.store, &self.job.tenant, self.now(), change).await;
    }

    pub async fn pause(&self, on: bool) {
        self.settings(|s| s.pause_on_export_errors = on).await;
    }

    pub async fn batch_size(&self, n: u32) {
        self.settings(|s| s.batch_size = BatchSize::new(n).unwrap())
            .await;
    }

    /// Enqueues one version of `k`; `_v` carries the seq so the fake CRM can spot stale
    /// overwrites.
    pub async fn put(&self, k: &str) -> Seq {
        self.put_to(&self.job, k).await
    }

    /// [`World::put`] for another job of the tenant.
    pub async fn put_to(&self, job: &JobRef, k: &str) -> Seq {
        let head = self.store.head(job).await.unwrap();
        let fields = json!({EXT: k, "Name": format!("name of {k}"), "_v": head + 1});
        let rec = NewRecord {
            key: key(k),
            fields: fields.as_object().unwrap().clone(),
        };
        self.store
            .enqueue(job, vec![rec], self.now())
            .await
            .unwrap()[0]
    }

    /// Defines another job of the tenant like the world's own.
    pub async fn add_job(&self, name: &str) -> JobRef {
        let job = JobRef::new(self.job.tenant.clone(), JobId::new(name).unwrap());
        let mut def = self
            .store
            .get_job(&self.job.tenant, &self.job.job)
            .await
            .unwrap()
            .unwrap();
        def.job_id = job.job.clone();
        self.store.put_job(&self.job.tenant, def).await.unwrap();
        job
    }

    /// Counts calls against the tenant's daily budget, as another job's would be.
    pub async fn spend_api_calls(&self, n: u64) {
        self.store
            .add_api_calls(&self.job.tenant, self.now(), n)
            .await
            .unwrap();
    }

    /// The tenant's calls in the last 24 h, as the store counts them.
    pub async fn api_calls_counted(&self) -> u64 {
        self.store
            .api_calls_last_24h(&self.job.tenant, self.now())
            .await
            .unwrap()
    }

    /// One export run of the world's job through other ports than its own (a wrapped
    /// store, a slow CRM).
    pub async fn export_via(&self, store: &dyn StateStore, crm: &dyn CrmClient) -> RunReport {
        Engine::new(store, crm, &self.events, self.clock.as_ref(), &self.config)
            .run_export(&self.job, &self.opts())
            .await
            .expect("export run")
    }

    pub async fn put_all(&self, keys: &[&str]) -> Vec<Seq> {
        let mut out = Vec::new();
        for k in keys {
            out.push(self.put(k).await);
        }
        out
    }

    pub async fn put_n(&self, prefix: &str, n: usize) -> Vec<String> {
        let keys: Vec<String> = (0..n).map(|i| format!("{prefix}{i:04}")).collect();
        for k in &keys {
            self.put(k).await;
        }
        keys
    }

    pub async fn export(&self) -> RunReport {
        self.engine()
            .run_export(&self.job, &self.opts())
            .await
            .expect("export run")
    }

    pub async fn retry(&self) -> RunReport {
        self.engine()
            .run_retry(&self.job, &self.opts())
            .await
            .expect("retry run")
    }

    pub async fn state(&self) -> JobState {
        self.store.load_state(&self.job).await.unwrap()
    }

    pub async fn item(&self, k: &str) -> Option<ExportErrorItem> {
        self.store.get_error(&self.job, &key(k)).await.unwrap()
    }

    pub async fn items(&self) -> Vec<ExportErrorItem> {
        let mut all = Vec::new();
        let mut page = None;
        loop {
            let p = self
                .store
                .list_errors(&self.job, &ErrorFilter::default(), page.as_deref(), 100)
                .await
                .unwrap();
            all.extend(p.items);
            match p.next {
                Some(n) => page = Some(n),
                None => break,
            }
        }
        all
    }

    pub fn published(&self, kind: EventKind) -> Vec<Event> {
        self.events
            .events()
            .into_iter()
            .filter(|e| e.kind == kind)
            .collect()
    }

    pub fn assert_crm_clean(&self) {
        assert_eq!(
            self.crm.violations(),
            Vec::<String>::new(),
            "the CRM saw a broken rule"
        );
    }

    pub fn advance(&self, d: Duration) {
        self.clock.advance(d);
    }

    pub fn advance_hours(&self, h: i64) {
        self.clock.advance(Duration::from_secs(h as u64 * 3600));
    }
}
