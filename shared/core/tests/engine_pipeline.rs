//! Pipelining: up to `max_in_flight` batches in flight, outcomes applied in seq order, one
//! key never in two requests at once, the cursor only past final outcomes.

mod common;

use common::crash::{CrashStore, Hook};
use common::*;
use crm_export_core::engine::{Engine, RunOutcome};
use crm_export_core::ports::*;
use crm_export_core::testing::{FakeCrm, Scripted};
use crm_export_core::*;
use std::time::Duration;

async fn pipelined(width: u32) -> World {
    let w = World::new().await;
    w.settings(|s| {
        s.batch_size = BatchSize::new(25).unwrap();
        s.max_in_flight = width;
    })
    .await;
    w
}

#[tokio::test]
async fn batches_go_out_together_up_to_the_window_and_the_cursor_ends_at_the_head() {
    let w = pipelined(4).await;
    w.put_n("k", 200).await;
    w.crm.set_latency(Duration::from_millis(150));
    let r = w.export().await;
    assert_eq!(r.outcome, RunOutcome::Completed);
    assert_eq!(r.counts.batches, 8);
    assert_eq!(w.crm.max_concurrent_calls(), 4);
    assert_eq!(
        w.crm.call_count(),
        8,
        "5 calls per 1,000 records at batch size 200 scale"
    );
    assert_eq!(w.state().await.cursor, 200);
    w.assert_crm_clean();
}

#[tokio::test]
async fn the_window_is_a_bound_not_a_target() {
    let w = pipelined(2).await;
    w.put_n("k", 200).await;
    w.export().await;
    assert_eq!(w.crm.max_concurrent_calls(), 2);
}

#[tokio::test]
async fn a_halt_in_an_early_batch_holds_the_cursor_even_when_later_batches_succeed() {
    let w = pipelined(4).await;
    let keys = w.put_n("k", 100).await;
    w.crm.always(
        &keys[30],
        Scripted::Reject("FIELD_CUSTOM_VALIDATION_EXCEPTION", RejectKind::Data),
    );
    let r = w.export().await;
    assert!(
        matches!(r.outcome, RunOutcome::Halted { seq: 31, .. }),
        "{:?}",
        r.outcome
    );
    assert_eq!(w.state().await.cursor, 30);
    // Batches 3 and 4 went out with batch 2 and were accepted, but stay after the cursor:
    // they are sent again once the halt clears.
    assert!(w.crm.record(&keys[80]).is_some());
    assert_eq!(w.items().await.len(), 1);
    w.crm.clear(&keys[30]);
    assert_eq!(w.export().await.outcome, RunOutcome::Completed);
    assert_eq!(w.crm.attempts(&keys[80]), 2);
    w.assert_crm_clean();
}

#[tokio::test]
async fn a_request_failure_in_a_later_batch_keeps_the_earlier_batches_progress() {
    let w = pipelined(4).await;
    w.put_n("k", 100).await;
    w.crm.fail_call(
        3,
        failure(RequestFailureKind::Unavailable, "SERVER_UNAVAILABLE"),
    );
    let r = w.export().await;
    assert!(matches!(r.outcome, RunOutcome::RequestFailed { .. }));
    assert_eq!(
        w.state().await.cursor,
        50,
        "batches 1 and 2 are final, batch 3 is not"
    );
    assert!(w.items().await.is_empty());
}

#[tokio::test]
async fn pause_off_logs_refusals_from_every_batch_in_flight() {
    let w = pipelined(4).await;
    w.pause(false).await;
    let keys = w.put_n("k", 100).await;
    for i in [5, 40, 95] {
        w.crm.always(
            &keys[i],
            Scripted::Reject("REQUIRED_FIELD_MISSING", RejectKind::Data),
        );
    }
    let r = w.export().await;
    assert_eq!(r.outcome, RunOutcome::Completed);
    let items = w.items().await;
    assert_eq!(items.len(), 3);
    for item in &items {
        // The failed version itself is kept, to be retried.
        assert_eq!(item.fields[EXT], item.key.as_str(), "{item:?}");
        assert!(item.fields.contains_key("_v"), "{item:?}");
    }
    assert_eq!(w.state().await.cursor, 100);
}

/// A newer version of a key that is in flight arrives while the next batches are read:
/// the newer one must wait until the request holding the older one is over.
#[tokio::test]
async fn a_key_in_flight_is_never_sent_again_before_its_request_ends() {
    for stall_at in 1..24 {
        let w = pipelined(4).await;
        // 30 records: the newer version lands within the same round's read-ahead.
        w.put_n("k", 30).await;
        let hook: Hook<'_> = Box::new(|| {
            Box::pin(async {
                w.put("k0010").await;
            })
        });
        let store = CrashStore::stalling(&w.store, stall_at, hook);
        let opts = w.opts();
        let engine = Engine::new(&store, &w.crm, &w.events, w.clock.as_ref(), &w.config);
        engine.run_export(&w.job, &opts).await.unwrap();
        w.assert_crm_clean();
        w.export().await;
        assert_eq!(
            w.crm.record("k0010").unwrap().fields["_v"],
            31,
            "stall at {stall_at}"
        );
        w.assert_crm_clean();
    }
}

/// The window is per tenant across its jobs: two jobs running at once share it.
#[tokio::test]
async fn two_jobs_of_one_tenant_share_the_tenants_window() {
    let w = pipelined(4).await;
    let other = w.add_job("leads").await;
    w.put_n("k", 200).await;
    for i in 0..200 {
        w.put_to(&other, &format!("l{i:04}")).await;
    }
    w.crm.set_latency(Duration::from_millis(100));
    let engine = w.engine();
    let (oa, ob) = (w.opts(), w.opts());
    let (a, b) = tokio::join!(
        engine.run_export(&w.job, &oa),
        engine.run_export(&other, &ob)
    );
    assert_eq!(a.unwrap().outcome, RunOutcome::Completed);
    assert_eq!(b.unwrap().outcome, RunOutcome::Completed);
    assert!(
        w.crm.max_concurrent_calls() <= 4,
        "{} calls at once",
        w.crm.max_concurrent_calls()
    );
    assert_eq!(w.state().await.cursor, 200);
    assert_eq!(w.store.load_state(&other).await.unwrap().cursor, 200);
}

#[tokio::test]
async fn a_run_finding_every_slot_taken_reports_the_tenant_busy() {
    let w = pipelined(2).await;
    w.put("a").await;
    for i in 0..2 {
        let slot = JobRef::new(w.job.tenant.clone(), JobId::tenant_slot(i));
        let held = w
            .store
            .acquire_lease(
                &slot,
                &RunId("other-job".into()),
                w.now(),
                Duration::from_secs(60),
            )
            .await
            .unwrap();
        assert!(held.is_some());
    }
    let r = w.export().await;
    assert_eq!(r.outcome, RunOutcome::TenantBusy);
    assert_eq!(w.crm.call_count(), 0);
    // Its job lease was given back: once the slots free up, the job runs.
    w.advance(Duration::from_secs(61));
    assert_eq!(w.export().await.outcome, RunOutcome::Completed);
}

/// Delegates to the fake CRM after a real wait: long for a call carrying `slow_key`,
/// short for the others. Counts the calls started while the slow one was out.
struct SlowKeyCrm<'a> {
    inner: &'a FakeCrm,
    slow_key: String,
    slow: Duration,
    fast: Duration,
    started: std::sync::atomic::AtomicU32,
    started_during_slow: std::sync::atomic::AtomicU32,
}

#[async_trait::async_trait]
impl CrmClient for SlowKeyCrm<'_> {
    async fn upsert(&self, req: &UpsertRequest) -> CrmReply<Vec<RecordOutcome>> {
        use std::sync::atomic::Ordering::SeqCst;
        let n = self.started.fetch_add(1, SeqCst) + 1;
        let slow = req
            .records
            .iter()
            .any(|r| r[EXT].as_str() == Some(self.slow_key.as_str()));
        tokio::time::sleep(if slow { self.slow } else { self.fast }).await;
        if slow {
            self.started_during_slow
                .store(self.started.load(SeqCst) - n, SeqCst);
        }
        self.inner.upsert(req).await
    }
    async fn check_connection(&self, timeout: Duration) -> CrmReply<()> {
        self.inner.check_connection(timeout).await
    }
}

/// The window is kept full: while one call is slow, the other slots go on with new
/// batches instead of waiting for a round to end; the cursor still waits for the slow one.
#[tokio::test]
async fn a_slow_call_does_not_hold_the_other_slots_back() {
    let w = pipelined(4).await;
    w.put_n("k", 400).await;
    let crm = SlowKeyCrm {
        inner: &w.crm,
        slow_key: "k0000".into(),
        slow: Duration::from_millis(600),
        fast: Duration::from_millis(10),
        started: Default::default(),
        started_during_slow: Default::default(),
    };
    let r = w.export_via(&w.store, &crm).await;
    assert_eq!(r.outcome, RunOutcome::Completed);
    assert_eq!(r.counts.batches, 16);
    let during = crm
        .started_during_slow
        .load(std::sync::atomic::Ordering::SeqCst);
    // In lock-step rounds only the 3 other calls of the first round would start; here the
    // 3 free slots work through the other 15 batches (10 ms each) while the slow call runs.
    assert!(
        during >= 10,
        "only {during} calls started during the slow one"
    );
    assert!(w.crm.max_concurrent_calls() <= 4);
    assert_eq!(w.state().await.cursor, 400);
    w.assert_crm_clean();
}

/// What one batch costs the store: a read, a supersede check, a settings read and one
/// commit, which also extends the lease and counts the API calls. No separate lease
/// renewals or budget writes, and the budget is read once per run, not per request.
#[tokio::test]
async fn a_batch_costs_four_store_calls_and_the_budget_still_counts_every_call() {
    let mut w = pipelined(8).await;
    w.batch_size(200).await;
    w.put_n("k", 2000).await;
    w.crm.set_latency(Duration::from_millis(150));
    let store = crm_export_core::store::CountingStore::new(std::mem::take(&mut w.store));
    let r = w.export_via(&store, &w.crm).await;
    let calls = store.snapshot();
    w.store = store.into_inner();
    assert_eq!(r.outcome, RunOutcome::Completed);
    assert_eq!(r.counts.batches, 10);
    use crm_export_core::store::StoreOp::*;
    assert_eq!(
        calls.get(ReadAfter),
        11,
        "10 windows and the read that finds the end"
    );
    assert_eq!(calls.get(LatestSeqs), 10);
    assert_eq!(
        calls.get(Commit),
        11,
        "one per batch and the run's final event"
    );
    assert_eq!(calls.get(RenewLease), 0, "commits extend the lease");
    assert_eq!(calls.get(AddApiCalls), 0, "commits count the calls");
    assert_eq!(calls.get(ApiCallsLast24h), 1);
    assert!(calls.get(GetSettings) <= 12, "{}", calls.get(GetSettings));
    // Per run, not per batch: the job lease and the tenant's 8 request slots, taken and
    // given back once each.
    assert_eq!(calls.get(AcquireLease), 9);
    assert_eq!(calls.get(ReleaseLease), 9);
    assert_eq!(
        w.api_calls_counted().await,
        10,
        "every CRM call reached the tenant's budget"
    );
}

/// A halt in the first batch stops the run, but only once the requests in flight are
/// over: the lease is never given back with a write of ours still out.
#[tokio::test]
async fn a_stopping_run_waits_for_its_requests_before_giving_the_lease_back() {
    let w = pipelined(4).await;
    let keys = w.put_n("k", 100).await;
    w.crm.always(
        &keys[3],
        Scripted::Reject("FIELD_CUSTOM_VALIDATION_EXCEPTION", RejectKind::Data),
    );
    let crm = SlowKeyCrm {
        inner: &w.crm,
        slow_key: keys[60].clone(),
        slow: Duration::from_millis(300),
        fast: Duration::from_millis(1),
        started: Default::default(),
        started_during_slow: Default::default(),
    };
    let r = w.export_via(&w.store, &crm).await;
    assert!(
        matches!(r.outcome, RunOutcome::Halted { seq: 4, .. }),
        "{:?}",
        r.outcome
    );
    // The slow call (batch 3) had started with the first round and was answered before
    // the run returned.
    assert!(w.crm.record(&keys[60]).is_some());
    assert_eq!(w.state().await.cursor, 3);
    w.assert_crm_clean();
}

/// A run takes the tenant's slots as its window fills, not its whole share up front: a
/// run with little to send writes few leases.
#[tokio::test]
async fn a_run_takes_only_the_slots_it_fills() {
    for (records, slots) in [(10, 1), (60, 3), (400, 8)] {
        let mut w = pipelined(8).await;
        w.put_n("k", records).await;
        w.crm.set_latency(Duration::from_millis(150));
        let store = crm_export_core::store::CountingStore::new(std::mem::take(&mut w.store));
        let r = w.export_via(&store, &w.crm).await;
        let calls = store.snapshot();
        w.store = store.into_inner();
        assert_eq!(r.outcome, RunOutcome::Completed);
        use crm_export_core::store::StoreOp::*;
        assert_eq!(calls.get(AcquireLease), 1 + slots, "{records} records");
        assert_eq!(calls.get(ReleaseLease), 1 + slots, "{records} records");
        assert_eq!(
            w.crm.max_concurrent_calls(),
            slots as u32,
            "{records} records"
        );
        assert_eq!(w.state().await.cursor, records as u64);
    }
}

/// With several requests out, the budget counts the ones in flight too: near the limit
/// they cannot all pass the check on the same count.
#[tokio::test]
async fn requests_in_flight_count_against_the_daily_limit() {
    let w = pipelined(8).await;
    w.settings(|s| s.daily_api_limit = 1000).await;
    w.spend_api_calls(997).await;
    w.put_n("k", 1000).await;
    w.crm.set_latency(Duration::from_millis(150));
    let r = w.export().await;
    assert!(
        matches!(r.outcome, RunOutcome::BudgetExhausted { .. }),
        "{:?}",
        r.outcome
    );
    assert_eq!(w.crm.call_count(), 3);
    assert_eq!(w.api_calls_counted().await, 1000);
}

/// Several jobs of one tenant spending one budget at once: each reads the count again
/// after a share of what was left, and near the limit before every request, so together
/// they pass it by at most the calls in flight across the tenant.
#[tokio::test]
async fn jobs_sharing_a_budget_stop_close_to_its_limit() {
    let w = pipelined(8).await;
    w.settings(|s| s.daily_api_limit = 1000).await;
    w.spend_api_calls(820).await;
    let mut jobs = vec![w.job.clone()];
    for name in ["b", "c", "d"] {
        jobs.push(w.add_job(name).await);
    }
    for job in &jobs {
        for i in 0..2000 {
            w.put_to(job, &format!("{}{i:04}", job.job)).await;
        }
    }
    w.crm.set_latency(Duration::from_millis(100));
    let engine = w.engine();
    let runs = jobs.iter().map(|j| {
        let opts = w.opts();
        async move { engine.run_export(j, &opts).await.unwrap() }
    });
    let reports = futures::future::join_all(runs).await;
    for r in &reports {
        assert!(
            matches!(r.outcome, RunOutcome::BudgetExhausted { .. }),
            "{:?}",
            r.outcome
        );
    }
    let total = w.api_calls_counted().await;
    assert_eq!(total, 820 + u64::from(w.crm.call_count()));
    assert!(
        (1000..=1008).contains(&total),
        "{total} calls counted against a limit of 1000"
    );
}

/// Two spellings of a key are never in flight together, even in a job that treats them
/// as two keys: where the CRM's field is case-insensitive after all, they are one record,
/// and the later version must land last.
#[tokio::test]
async fn spellings_of_one_key_are_never_in_flight_together() {
    let mut w = pipelined(4).await;
    w.crm = FakeCrm::with_clock(w.clock.clone()).case_insensitive();
    for round in 0..4 {
        for i in 0..25 {
            let k = format!("cs{i:04}");
            w.put(&if round % 2 == 0 { k } else { k.to_uppercase() })
                .await;
        }
    }
    let r = w.export().await;
    assert_eq!(r.outcome, RunOutcome::Completed);
    w.assert_crm_clean();
    for i in 0..25 {
        let stored = w.crm.record(&format!("cs{i:04}")).unwrap();
        assert_eq!(stored.fields["_v"], 76 + i, "cs{i:04}");
    }
}

/// Nor do two spellings go in one request: the window ends before the second, which goes
/// in a later request once the first is answered; the ExportError retry run splits them
/// the same way, the newer version last.
#[tokio::test]
async fn spellings_of_one_key_never_share_a_request() {
    let mut w = pipelined(4).await;
    w.crm = FakeCrm::with_clock(w.clock.clone()).case_insensitive();
    w.pause(false).await;
    for i in 0..10 {
        w.put(&format!("ab-{i}")).await;
        w.put(&format!("AB-{i}")).await;
    }
    let r = w.export().await;
    assert_eq!(r.outcome, RunOutcome::Completed);
    w.assert_crm_clean();
    for i in 0..10 {
        assert_eq!(
            w.crm.record(&format!("ab-{i}")).unwrap().fields["_v"],
            2 * i + 2
        );
    }
    // Both spellings refused, then fixed: the retry run sends them apart, older first.
    let w = pipelined(4).await;
    let mut w = w;
    w.crm = FakeCrm::with_clock(w.clock.clone()).case_insensitive();
    w.pause(false).await;
    w.put("cd-1").await;
    w.put("CD-1").await;
    w.crm.always(
        "cd-1",
        Scripted::Reject("FIELD_CUSTOM_VALIDATION_EXCEPTION", RejectKind::Data),
    );
    w.crm.always(
        "CD-1",
        Scripted::Reject("FIELD_CUSTOM_VALIDATION_EXCEPTION", RejectKind::Data),
    );
    assert_eq!(w.export().await.outcome, RunOutcome::Completed);
    assert_eq!(w.items().await.len(), 2);
    w.crm.clear("cd-1");
    w.crm.clear("CD-1");
    w.advance_hours(25);
    let r = w.retry().await;
    assert_eq!(r.outcome, RunOutcome::Completed);
    assert_eq!(r.counts.accepted, 2);
    w.assert_crm_clean();
    assert_eq!(w.crm.record("cd-1").unwrap().fields["_v"], 2);
}
