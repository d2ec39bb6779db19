//! SPEC §7 invariants under random record streams (with repeated keys), CRM outcomes,
//! setting toggles, crashes between any two steps, lease expiry and overlapping runs.
//! Each case is a random script of steps; after every step the invariants are checked
//! against a simple model of what was queued.
//!
//! CI runs `PROPTEST_CASES` cases (64 by default in `scripts/test-all`); a long run is
//! `PROPTEST_CASES=5000 cargo test -p crm-export-core --test engine_properties`.

mod common;

use common::crash::{CrashStore, Hook, Mortal, RunnerCrm};
use crm_export_core::engine::{Engine, EngineConfig, RunOptions, RunOutcome, RunReport};
use crm_export_core::events::RecordingPublisher;
use crm_export_core::ports::*;
use crm_export_core::store::MemoryStore;
use crm_export_core::testing::{FakeClock, FakeCrm, Scripted};
use crm_export_core::*;
use proptest::prelude::*;
use serde_json::json;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const KEYS: usize = 40;
const EXT: &str = "Ext__c";

#[derive(Debug, Clone, Copy)]
enum Out {
    Accept,
    Reject,
    Config,
    Transient,
    Poison,
    Storage,
}

#[derive(Debug, Clone, Copy)]
enum Fail {
    Outage,
    LostReply,
    Revoked,
    DailyLimit,
    Content,
}

#[derive(Debug, Clone)]
enum Step {
    Enqueue(Vec<usize>),
    Outcome {
        from: usize,
        len: usize,
        out: Out,
    },
    FailNextCall(Fail),
    Pause(bool),
    ExportToCrm(bool),
    Batch(u32),
    Latency(u64),
    Wait(u64),
    RunExport {
        crash_after: Option<u64>,
    },
    RunRetry {
        crash_after: Option<u64>,
    },
    Overlap,
    Zombie {
        stall_at: u64,
    },
    /// A producer enqueues while a run reads and sends.
    EnqueueMidRun {
        stall_at: u64,
        keys: Vec<usize>,
    },
    Window(u32),
}

fn step() -> impl Strategy<Value = Step> {
    let out = prop_oneof![
        4 => Just(Out::Accept),
        3 => Just(Out::Reject),
        2 => Just(Out::Config),
        2 => Just(Out::Transient),
        1 => Just(Out::Poison),
        1 => Just(Out::Storage),
    ];
    let fail = prop_oneof![
        Just(Fail::Outage),
        Just(Fail::LostReply),
        Just(Fail::Revoked),
        Just(Fail::DailyLimit),
        Just(Fail::Content)
    ];
    let crash = prop::option::weighted(0.35, 1u64..60);
    prop_oneof![
        6 => prop::collection::vec(prop_oneof![3 => 0..8usize, 2 => 0..KEYS], 1..30).prop_map(Step::Enqueue),
        4 => (0..KEYS, 1..30usize, out).prop_map(|(from, len, out)| Step::Outcome { from, len, out }),
        1 => fail.prop_map(Step::FailNextCall),
        2 => any::<bool>().prop_map(Step::Pause),
        1 => prop::bool::weighted(0.8).prop_map(Step::ExportToCrm),
        1 => prop_oneof![Just(25u32), Just(50u32)].prop_map(Step::Batch),
        1 => prop_oneof![3 => 1u64..5, 1 => 5u64..40].prop_map(Step::Latency),
        1 => (1u64..2000).prop_map(Step::Wait),
        6 => crash.clone().prop_map(|crash_after| Step::RunExport { crash_after }),
        2 => crash.prop_map(|crash_after| Step::RunRetry { crash_after }),
        1 => Just(Step::Overlap),
        1 => (1u64..40).prop_map(|stall_at| Step::Zombie { stall_at }),
        2 => (1u64..40, prop::collection::vec(0..8usize, 1..6))
            .prop_map(|(stall_at, keys)| Step::EnqueueMidRun { stall_at, keys }),
        1 => (1u32..=8).prop_map(Step::Window),
    ]
}

/// Request-level codes the script injects: never to be recorded against a record.
const OUTAGE_CODES: [&str; 5] = [
    "SERVER_UNAVAILABLE",
    "invalid_grant",
    "REQUEST_LIMIT_EXCEEDED",
    "CRASHED",
    "TIMEOUT",
];

struct World {
    store: MemoryStore,
    crm: FakeCrm,
    events: RecordingPublisher,
    clock: Arc<FakeClock>,
    config: EngineConfig,
    job: JobRef,
    /// Every enqueued record: (seq, key), in seq order.
    queued: Vec<(Seq, String)>,
    pause_ever_off: bool,
    cursor: Seq,
    lease_violations: Arc<Mutex<Vec<String>>>,
}

fn config() -> EngineConfig {
    EngineConfig {
        lease_duration: Duration::from_secs(60),
        request_timeout: Duration::from_secs(30),
        min_request_timeout: Duration::from_secs(2),
        safety_margin: Duration::from_secs(2),
        transient_retries: 2,
        transient_backoff: Duration::from_secs(1),
        ..EngineConfig::default()
    }
}

impl World {
    async fn new() -> Self {
        let clock = Arc::new(FakeClock::default());
        let crm = FakeCrm::with_clock(clock.clone());
        crm.set_latency(Duration::from_secs(1));
        let w = World {
            store: MemoryStore::new(),
            crm,
            events: RecordingPublisher::new(),
            clock,
            config: config(),
            job: JobRef::new(TenantId::new("prop").unwrap(), JobId::new("job").unwrap()),
            queued: Vec::new(),
            pause_ever_off: false,
            cursor: 0,
            lease_violations: Arc::new(Mutex::new(Vec::new())),
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
        w.settings(|s| s.export_to_crm = true).await;
        w
    }

    fn now(&self) -> Timestamp {
        Clock::now(self.clock.as_ref())
    }

    async fn settings(&self, change: impl FnOnce(&mut Settings)) {
        common::set_settings(&self.store, &self.job.tenant, self.now(), change).await;
    }

    fn runner<'a>(&'a self, run_id: &RunId, crash: Option<&'a dyn Mortal>) -> RunnerCrm<'a> {
        RunnerCrm {
            crm: &self.crm,
            store: &self.store,
            crash,
            clock: self.clock.as_ref(),
            job: self.job.clone(),
            run_id: run_id.clone(),
            violations: self.lease_violations.clone(),
        }
    }

    fn opts(&self) -> RunOptions {
        RunOptions::new(self.now() + chrono::Duration::minutes(10))
    }

    async fn run(
        &self,
        export: bool,
        store: &dyn StateStore,
        crash: Option<&dyn Mortal>,
    ) -> Option<RunReport> {
        let opts = self.opts();
        let crm = self.runner(&opts.run_id, crash);
        let engine = Engine::new(store, &crm, &self.events, self.clock.as_ref(), &self.config);
        let r = if export {
            engine.run_export(&self.job, &opts).await
        } else {
            engine.run_retry(&self.job, &opts).await
        };
        r.ok()
    }

    /// Enqueues one version of each key; `_v` carries the seq so the fake CRM can spot
    /// stale overwrites.
    async fn enqueue_now(&self, keys: &[usize]) {
        let head = self.store.head(&self.job).await.unwrap();
        let recs: Vec<NewRecord> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| {
                let key = format!("k{k:02}");
                let fields = json!({EXT: key, "_v": head + 1 + i as u64});
                NewRecord {
                    key: RecordKey::from_stored(key),
                    fields: fields.as_object().unwrap().clone(),
                }
            })
            .collect();
        self.store
            .enqueue(&self.job, recs, self.now())
            .await
            .unwrap();
    }

    async fn enqueue(&mut self, keys: &[usize]) {
        self.enqueue_now(keys).await;
        self.sync_queue().await;
    }

    /// Brings the model's view of the queue up to the store's head.
    async fn sync_queue(&mut self) {
        let known = self.queued.last().map_or(0, |(s, _)| *s);
        for r in self
            .store
            .read_after(&self.job, known, usize::MAX)
            .await
            .unwrap()
        {
            self.queued.push((r.seq, r.key.as_str().to_string()));
        }
    }

    async fn apply(&mut self, step: &Step) -> Option<RunReport> {
        match step {
            Step::Enqueue(keys) => {
                self.enqueue(keys).await;
                None
            }
            Step::Window(n) => {
                self.settings(|s| s.max_in_flight = *n).await;
                None
            }
            Step::EnqueueMidRun { stall_at, keys } => {
                let w: &World = self;
                let hook: Hook<'_> = Box::new(move || {
                    Box::pin(async move {
                        w.enqueue_now(keys).await;
                    })
                });
                let r = {
                    let stalling = CrashStore::stalling(&self.store, *stall_at, hook);
                    self.run(true, &stalling, None).await
                };
                // The model learns of the records enqueued mid-run from the store.
                self.sync_queue().await;
                r
            }
            Step::Outcome { from, len, out } => {
                for i in *from..(*from + *len).min(KEYS) {
                    let k = format!("k{i:02}");
                    self.crm.clear(&k);
                    match out {
                        Out::Accept => {}
                        Out::Reject => self.crm.always(
                            &k,
                            Scripted::Reject("FIELD_CUSTOM_VALIDATION_EXCEPTION", RejectKind::Data),
                        ),
                        Out::Config => self.crm.always(
                            &k,
                            Scripted::Reject(
                                "INSUFFICIENT_ACCESS_OR_READONLY",
                                RejectKind::Configuration,
                            ),
                        ),
                        Out::Transient => self
                            .crm
                            .script(&k, [Scripted::Transient("UNABLE_TO_LOCK_ROW"); 4]),
                        Out::Poison => self.crm.refuse_requests_with(
                            &k,
                            RequestFailure::new(
                                RequestFailureKind::ContentRefused,
                                "JSON_PARSER_ERROR",
                                format!("bad date in {k}"),
                            ),
                        ),
                        Out::Storage => self.crm.always(
                            &k,
                            Scripted::Reject("STORAGE_LIMIT_EXCEEDED", RejectKind::OrgWide),
                        ),
                    }
                }
                None
            }
            Step::FailNextCall(Fail::LostReply) => {
                self.crm.lose_reply_of_call(self.crm.call_count() + 1);
                None
            }
            Step::FailNextCall(f) => {
                let (kind, code) = match f {
                    Fail::LostReply => unreachable!("handled above"),
                    Fail::Outage => (RequestFailureKind::Unavailable, "SERVER_UNAVAILABLE"),
                    Fail::Revoked => (RequestFailureKind::ConnectionRevoked, "invalid_grant"),
                    Fail::DailyLimit => (RequestFailureKind::DailyLimit, "REQUEST_LIMIT_EXCEEDED"),
                    Fail::Content => (RequestFailureKind::ContentRefused, "JSON_PARSER_ERROR"),
                };
                self.crm.fail_call(
                    self.crm.call_count() + 1,
                    RequestFailure::new(kind, code, "injected"),
                );
                None
            }
            Step::Pause(on) => {
                self.pause_ever_off |= !on;
                self.settings(|s| s.pause_on_export_errors = *on).await;
                None
            }
            Step::ExportToCrm(on) => {
                self.settings(|s| s.export_to_crm = *on).await;
                None
            }
            Step::Batch(n) => {
                self.settings(|s| s.batch_size = BatchSize::new(*n).unwrap())
                    .await;
                None
            }
            Step::Latency(s) => {
                self.crm.set_latency(Duration::from_secs(*s));
                None
            }
            Step::Wait(minutes) => {
                self.clock.advance(Duration::from_secs(minutes * 60));
                None
            }
            Step::RunExport { crash_after } | Step::RunRetry { crash_after } => {
                let export = matches!(step, Step::RunExport { .. });
                match crash_after {
                    None => self.run(export, &self.store, None).await,
                    Some(n) => {
                        let crash = CrashStore::new(&self.store, Some(*n));
                        let r = self.run(export, &crash, Some(&crash)).await;
                        if crash.crashed() {
                            // The process restarts once its lease has expired.
                            self.clock
                                .advance(self.config.lease_duration + Duration::from_secs(1));
                        }
                        r
                    }
                }
            }
            Step::Overlap => {
                // Interleaved on one thread; the per-runner lease check in `check` proves
                // that they never both write.
                let (a, _b) = tokio::join!(
                    self.run(true, &self.store, None),
                    self.run(true, &self.store, None)
                );
                a
            }
            Step::Zombie { stall_at } => {
                // Run A stalls past its lease; run B takes over and runs to its end; then A
                // wakes up and must neither write to the CRM nor commit.
                let w: &World = self;
                let hook: Hook<'_> = Box::new(move || {
                    Box::pin(async move {
                        w.clock
                            .advance(w.config.lease_duration + Duration::from_secs(1));
                        w.run(true, &w.store, None).await;
                    })
                });
                let stalling = CrashStore::stalling(&self.store, *stall_at, hook);
                self.run(true, &stalling, None).await
            }
        }
    }

    async fn check(
        &mut self,
        step: &Step,
        report: Option<&RunReport>,
    ) -> Result<(), TestCaseError> {
        let state = self.store.load_state(&self.job).await.unwrap();
        let head = self.store.head(&self.job).await.unwrap();
        prop_assert!(
            state.cursor >= self.cursor,
            "the cursor went back from {} to {} at {step:?}",
            self.cursor,
            state.cursor
        );
        prop_assert!(state.cursor <= head);
        self.cursor = state.cursor;

        // No stale overwrite, one key in flight at a time.
        prop_assert_eq!(self.crm.violations(), Vec::<String>::new());
        // One runner: every request was made under the sender's own live lease.
        prop_assert_eq!(
            self.lease_violations.lock().unwrap().clone(),
            Vec::<String>::new()
        );

        let items: std::collections::HashMap<String, ExportErrorItem> = {
            let mut all = Vec::new();
            let mut page = None;
            loop {
                let p = self
                    .store
                    .list_errors(&self.job, &ErrorFilter::default(), page.as_deref(), 500)
                    .await
                    .unwrap();
                all.extend(p.items);
                match p.next {
                    Some(n) => page = Some(n),
                    None => break,
                }
            }
            all.into_iter()
                .map(|i| (i.key.as_str().to_string(), i))
                .collect()
        };

        for (i, (seq, key)) in self.queued.iter().enumerate() {
            if *seq > state.cursor {
                break;
            }
            let accepted = self.crm.was_accepted(key, *seq as i64);
            let newer_queued = self.queued[i + 1..].iter().any(|(_, k)| k == key);
            let logged = items
                .get(key)
                .is_some_and(|it| it.status.is_unresolved() && it.seq >= *seq);
            // Nothing lost.
            prop_assert!(
                accepted || newer_queued || logged,
                "record {seq} ({key}) is behind the cursor {} but was neither accepted, superseded nor logged",
                state.cursor
            );
            // Halt holds (pause on throughout).
            if !self.pause_ever_off {
                prop_assert!(
                    accepted || newer_queued,
                    "with pause on the cursor passed refused record {seq} ({key})"
                );
            }
        }
        if let Some(h) = &state.halt {
            prop_assert_eq!(
                h.seq,
                state.cursor + 1,
                "the job halts on the record just after the cursor"
            );
        }
        // Outages are not record errors.
        for it in items.values() {
            prop_assert!(
                !OUTAGE_CODES.contains(&it.error.code.as_str()),
                "an outage was logged as a record error: {it:?}"
            );
        }
        // No floods: a block creates at most one item in the batch that found it.
        if let (Some(b), Some(RunOutcome::Blocked { .. })) =
            (&state.block, report.map(|r| &r.outcome))
        {
            if b.attempts == 1 {
                let fresh = items
                    .values()
                    .filter(|it| it.last_seen == b.since && it.error.code == b.code)
                    .count();
                prop_assert!(fresh <= 1, "{fresh} items for one org-wide cause");
            }
        }
        Ok(())
    }
}

fn run_case(steps: Vec<Step>) -> Result<(), TestCaseError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut w = World::new().await;
        for step in &steps {
            let report = w.apply(step).await;
            if std::env::var("DEBUG_CALLS").is_ok() {
                eprintln!("{step:?} -> {:?}", report.as_ref().map(|r| &r.outcome));
                for c in w.crm.calls() {
                    eprintln!(
                        "  call {} at {} timeout {:?} keys {:?}",
                        c.number, c.at, c.timeout, c.keys
                    );
                }
            }
            w.check(step, report.as_ref()).await?;
        }
        // Finally: with the CRM healthy and pause off, everything drains and nothing queued
        // is lost.
        w.crm.end_outage();
        w.crm.set_latency(Duration::from_secs(1));
        for i in 0..KEYS {
            w.crm.clear(&format!("k{i:02}"));
        }
        w.settings(|s| {
            s.export_to_crm = true;
            s.pause_on_export_errors = true;
        })
        .await;
        w.clock.advance(Duration::from_secs(3600));
        let mut last = None;
        for _ in 0..20 {
            let r = w.run(true, &w.store, None).await;
            let done = matches!(r.as_ref().map(|r| &r.outcome), Some(RunOutcome::Completed));
            last = r;
            if done {
                break;
            }
        }
        let last = last.map(|r| r.outcome);
        prop_assert_eq!(last, Some(RunOutcome::Completed));
        // The daily retry run re-exports whatever was logged.
        w.clock.advance(Duration::from_secs(25 * 3600));
        let retry = w.run(false, &w.store, None).await.map(|r| r.outcome);
        prop_assert_eq!(retry, Some(RunOutcome::Completed));
        w.check(&Step::Wait(0), None).await?;
        let head = w.store.head(&w.job).await.unwrap();
        prop_assert_eq!(w.store.load_state(&w.job).await.unwrap().cursor, head);
        // Every key's newest version ended up in the CRM.
        for (seq, key) in w.queued.iter().rev() {
            if w.queued
                .iter()
                .rev()
                .find(|(_, k)| k == key)
                .map(|(s, _)| s)
                == Some(seq)
            {
                let held = w.crm.record(key).map(|r| r.fields["_v"].as_u64().unwrap());
                prop_assert_eq!(
                    held,
                    Some(*seq),
                    "the CRM does not hold the newest version of {}",
                    key
                );
            }
        }
        Ok(())
    })
}

proptest! {
    #![proptest_config(ProptestConfig {
        // PROPTEST_CASES overrides this; the test script bounds it for CI.
        cases: 64,
        max_shrink_iters: 2000,
        failure_persistence: None,
        .. ProptestConfig::default()
    })]

    #[test]
    fn spec_7_invariants_hold_across_crashes_toggles_and_overlapping_runs(steps in prop::collection::vec(step(), 1..60)) {
        run_case(steps)?;
    }
}

/// Cases proptest once found, kept as plain tests.
#[test]
fn regression_probe_of_a_block_while_a_producer_enqueues() {
    run_case(vec![
        Step::Enqueue(vec![18, 6, 0, 0, 0]),
        Step::Outcome {
            from: 0,
            len: 1,
            out: Out::Storage,
        },
        Step::Batch(25),
        Step::Outcome {
            from: 1,
            len: 18,
            out: Out::Reject,
        },
        Step::RunExport { crash_after: None },
        Step::Enqueue(vec![
            0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        ]),
        Step::Pause(false),
        Step::EnqueueMidRun {
            stall_at: 15,
            keys: vec![0],
        },
    ])
    .unwrap();
}
