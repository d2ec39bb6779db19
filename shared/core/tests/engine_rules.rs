//! One test per rule of SPEC §4–§6, named after the rule. Each uses the in-memory store
//! and the scriptable fake CRM; the same engine runs against the real adapters elsewhere.

mod common;

use common::*;
use crm_export_core::engine::RunOutcome;
use crm_export_core::ports::*;
use crm_export_core::testing::Scripted;
use crm_export_core::*;
use std::time::Duration;

use RejectKind::{Configuration, Data, OrgWide};
use RequestFailureKind as K;

// ---- §4.1 export_to_crm -------------------------------------------------------------

#[tokio::test]
async fn s4_1_disabled_export_does_nothing() {
    let w = World::new().await;
    w.put_all(&["a", "b"]).await;
    w.settings(|s| s.export_to_crm = false).await;
    let r = w.export().await;
    assert_eq!(r.outcome, RunOutcome::Disabled);
    assert_eq!(w.crm.call_count(), 0);
    assert_eq!(w.state().await.cursor, 0);
}

// ---- §4.2 lease ---------------------------------------------------------------------

#[tokio::test]
async fn s4_2_a_run_while_another_holds_the_lease_reports_already_running() {
    let w = World::new().await;
    w.put("a").await;
    let other = w
        .store
        .acquire_lease(
            &w.job,
            &RunId("other".into()),
            w.now(),
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    assert!(other.is_some());
    let r = w.export().await;
    assert_eq!(r.outcome, RunOutcome::AlreadyRunning);
    assert_eq!(w.crm.call_count(), 0);
    // Once the other lease expires the job runs again.
    w.advance(Duration::from_secs(61));
    assert_eq!(w.export().await.outcome, RunOutcome::Completed);
}

#[tokio::test]
async fn s4_2_no_request_timeout_exceeds_the_lease_time_left() {
    let w = World::with(|c| {
        c.lease_duration = Duration::from_secs(30);
        c.request_timeout = Duration::from_secs(120);
        c.safety_margin = Duration::from_secs(2);
    })
    .await;
    w.batch_size(25).await;
    w.put_n("k", 100).await;
    w.crm.set_latency(Duration::from_secs(10));
    let r = w.export().await;
    assert_eq!(r.outcome, RunOutcome::Completed);
    for call in w.crm.calls() {
        assert!(
            call.timeout <= Duration::from_secs(28),
            "timeout {:?} exceeds the lease left",
            call.timeout
        );
    }
    // Four 10 s calls outlast one 30 s lease: it was renewed along the way.
    assert_eq!(w.state().await.cursor, 100);
}

#[tokio::test]
async fn s4_2_the_retry_run_takes_the_same_lease() {
    let w = World::new().await;
    w.store
        .acquire_lease(
            &w.job,
            &RunId("export".into()),
            w.now(),
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    assert_eq!(w.retry().await.outcome, RunOutcome::AlreadyRunning);
}

// ---- §4.3 halted and blocked jobs ---------------------------------------------------

async fn halted_on_b(w: &World) {
    w.put_all(&["a", "b", "c"]).await;
    w.crm.always(
        "b",
        Scripted::Reject("FIELD_CUSTOM_VALIDATION_EXCEPTION", Data),
    );
    let r = w.export().await;
    assert!(
        matches!(r.outcome, RunOutcome::Halted { ref code, seq: 2, .. } if code == "FIELD_CUSTOM_VALIDATION_EXCEPTION")
    );
}

#[tokio::test]
async fn s4_3_a_newer_version_of_the_halted_key_supersedes_it() {
    let w = World::new().await;
    halted_on_b(&w).await;
    w.crm.clear("b");
    w.put("b").await; // seq 4
    let calls_before = w.crm.attempts("b");
    let r = w.export().await;
    assert_eq!(r.outcome, RunOutcome::Completed);
    let resumed = w.published(EventKind::ExportJobResumed);
    assert_eq!(resumed[0].detail["reason"], "superseded");
    // The halted version was never sent again; the newer one was, once.
    assert_eq!(w.crm.attempts("b"), calls_before + 1);
    assert_eq!(w.crm.record("b").unwrap().fields["_v"], 4);
    // Its item stayed open until the newer version was accepted, then superseded.
    let item = w.item("b").await.unwrap();
    assert_eq!(item.status, ErrorStatus::Superseded);
    assert_eq!(item.resolved_by_seq, Some(4));
    w.assert_crm_clean();
}

#[tokio::test]
async fn s4_3_halt_probe_accepted_resumes_and_resolves() {
    let w = World::new().await;
    halted_on_b(&w).await;
    w.crm.clear("b");
    let r = w.export().await;
    assert_eq!(r.outcome, RunOutcome::Completed);
    assert!(w.state().await.halt.is_none());
    assert_eq!(w.state().await.cursor, 3);
    assert_eq!(w.item("b").await.unwrap().status, ErrorStatus::Resolved);
    assert_eq!(
        w.published(EventKind::ExportJobResumed)[0].detail["reason"],
        "probe_accepted"
    );
}

#[tokio::test]
async fn s4_3_halt_probe_refused_with_pause_on_counts_an_attempt_and_stops() {
    let w = World::new().await;
    halted_on_b(&w).await;
    let calls = w.crm.call_count();
    let r = w.export().await;
    assert!(matches!(r.outcome, RunOutcome::Halted { seq: 2, .. }));
    // The probe is the halted record alone.
    let probe = &w.crm.calls()[calls as usize];
    assert_eq!(probe.keys, vec!["b".to_string()]);
    assert_eq!(w.crm.call_count(), calls + 1);
    let halt = w.state().await.halt.unwrap();
    assert_eq!(halt.attempts, 2);
    assert_eq!(w.item("b").await.unwrap().attempts, 2);
    assert_eq!(w.state().await.cursor, 1);
}

#[tokio::test]
async fn s4_3_and_s6_pause_turned_off_while_halted_logs_and_moves_past() {
    let w = World::new().await;
    halted_on_b(&w).await;
    w.pause(false).await;
    let r = w.export().await;
    assert_eq!(r.outcome, RunOutcome::Completed);
    let state = w.state().await;
    assert!(state.halt.is_none());
    assert_eq!(state.cursor, 3);
    let item = w.item("b").await.unwrap();
    assert_eq!((item.status, item.attempts), (ErrorStatus::Open, 2));
    assert_eq!(
        w.published(EventKind::ExportJobResumed)[0].detail["reason"],
        "pause_disabled"
    );
}

// ---- §4.4 batches and outcomes -----------------------------------------------------

#[tokio::test]
async fn s4_4_only_the_newest_queued_version_of_a_key_is_sent() {
    let w = World::new().await;
    w.put_all(&["a", "b", "a", "c", "a"]).await;
    let r = w.export().await;
    assert_eq!(r.outcome, RunOutcome::Completed);
    assert_eq!(r.counts.superseded, 2);
    assert_eq!(w.crm.attempts("a"), 1);
    assert_eq!(w.crm.record("a").unwrap().fields["_v"], 5);
    assert_eq!(w.state().await.cursor, 5);
}

#[tokio::test]
async fn s4_4_a_version_superseded_in_a_later_batch_is_never_sent() {
    let w = World::new().await;
    w.batch_size(25).await;
    w.put("x").await; // seq 1, superseded by seq 40
    w.put_n("k", 38).await;
    w.put("x").await;
    w.export().await;
    assert_eq!(w.crm.attempts("x"), 1);
    assert_eq!(w.crm.record("x").unwrap().fields["_v"], 40);
    // The first batch still carried 25 records: superseded ones do not take a slot.
    assert_eq!(w.crm.calls()[0].keys.len(), 25);
    assert!(!w.crm.calls()[0].keys.contains(&"x".to_string()));
    w.assert_crm_clean();
}

#[tokio::test]
async fn s4_4_keys_differing_only_in_case_are_one_key_when_the_crm_folds_case() {
    let w = World::new().await;
    let mut def = w
        .store
        .get_job(&w.job.tenant, &w.job.job)
        .await
        .unwrap()
        .unwrap();
    def.key_case_insensitive = true;
    w.store.put_job(&w.job.tenant, def.clone()).await.unwrap();
    for k in ["Abc", "aBC"] {
        let fields = serde_json::json!({EXT: k, "_v": 1});
        let rec = NewRecord {
            key: def.key_of(fields.as_object().unwrap()).unwrap(),
            fields: fields.as_object().unwrap().clone(),
        };
        w.store.enqueue(&w.job, vec![rec], w.now()).await.unwrap();
    }
    let r = w.export().await;
    assert_eq!((r.counts.accepted, r.counts.superseded), (1, 1));
    assert_eq!(w.crm.calls()[0].keys, vec!["aBC".to_string()]);
}

#[tokio::test]
async fn s4_4_accepted_resolves_an_open_item_as_resolved_or_superseded() {
    let w = World::new().await;
    w.pause(false).await;
    w.put_all(&["a", "b"]).await;
    w.crm
        .script("a", [Scripted::Reject("REQUIRED_FIELD_MISSING", Data)]);
    w.crm
        .script("b", [Scripted::Reject("REQUIRED_FIELD_MISSING", Data)]);
    w.export().await;
    assert_eq!(w.item("a").await.unwrap().status, ErrorStatus::Open);
    // a: a newer version accepted → superseded; b: the same version accepted (retry) → resolved.
    w.put("a").await;
    w.export().await;
    assert_eq!(w.item("a").await.unwrap().status, ErrorStatus::Superseded);
    w.advance_hours(25);
    w.retry().await;
    assert_eq!(w.item("b").await.unwrap().status, ErrorStatus::Resolved);
}

#[tokio::test]
async fn s4_4_transient_records_are_retried_alone_within_the_run() {
    let w = World::new().await;
    w.put_all(&["a", "b", "c"]).await;
    w.crm.script(
        "b",
        [
            Scripted::Transient("UNABLE_TO_LOCK_ROW"),
            Scripted::Transient("UNABLE_TO_LOCK_ROW"),
        ],
    );
    let r = w.export().await;
    assert_eq!(r.outcome, RunOutcome::Completed);
    assert_eq!(r.counts.transient_retries, 2);
    let calls = w.crm.calls();
    assert_eq!(calls.len(), 3);
    assert_eq!(calls[1].keys, vec!["b".to_string()]);
    assert!(
        w.items().await.is_empty(),
        "transient failures are not record errors"
    );
    assert_eq!(w.state().await.cursor, 3);
}

#[tokio::test]
async fn s4_4_transients_left_after_bounded_retries_stop_the_run_like_a_request_failure() {
    let w = World::new().await;
    w.put_all(&["a", "b", "c"]).await;
    w.crm.always("b", Scripted::Transient("UNABLE_TO_LOCK_ROW"));
    let r = w.export().await;
    assert!(
        matches!(r.outcome, RunOutcome::RequestFailed { ref code, .. } if code == "UNABLE_TO_LOCK_ROW")
    );
    assert_eq!(w.crm.call_count(), 1 + w.config.transient_retries);
    assert_eq!(
        w.state().await.cursor,
        1,
        "the cursor stops before the record whose outcome is unknown"
    );
    assert!(w.items().await.is_empty());
}

#[tokio::test]
async fn s4_4_a_record_transient_at_the_same_place_for_several_runs_becomes_record_level() {
    let w = World::new().await;
    w.put_all(&["a", "b"]).await;
    w.crm.always("b", Scripted::Transient("UNABLE_TO_LOCK_ROW"));
    for _ in 1..w.config.transient_streak_limit {
        assert!(matches!(
            w.export().await.outcome,
            RunOutcome::RequestFailed { .. }
        ));
        assert!(w.items().await.is_empty());
    }
    let r = w.export().await;
    assert!(
        matches!(r.outcome, RunOutcome::Halted { seq: 2, .. }),
        "{:?}",
        r.outcome
    );
    assert_eq!(w.item("b").await.unwrap().error.code, "UNABLE_TO_LOCK_ROW");
}

#[tokio::test]
async fn s4_4_pause_on_halts_just_before_the_first_refused_record() {
    let w = World::new().await;
    w.put_all(&["a", "b", "c", "d"]).await;
    w.crm.always(
        "b",
        Scripted::Reject("FIELD_CUSTOM_VALIDATION_EXCEPTION", Data),
    );
    w.crm.always(
        "d",
        Scripted::Reject("FIELD_CUSTOM_VALIDATION_EXCEPTION", Data),
    );
    let r = w.export().await;
    assert!(matches!(r.outcome, RunOutcome::Halted { seq: 2, .. }));
    let state = w.state().await;
    assert_eq!(state.cursor, 1);
    let halt = state.halt.unwrap();
    assert_eq!((halt.key.as_str(), halt.attempts), ("b", 1));
    // An item for the halted record only; d is past the cursor and will be sent again.
    let items = w.items().await;
    assert_eq!(items.len(), 1);
    assert_eq!(items[0].key.as_str(), "b");
    let halted = w.published(EventKind::ExportJobHalted);
    assert_eq!(halted.len(), 1);
    assert_eq!(halted[0].detail["record_key"], "b");
    assert_eq!(
        halted[0].detail["error_code"],
        "FIELD_CUSTOM_VALIDATION_EXCEPTION"
    );
}

#[tokio::test]
async fn s4_4_records_after_the_halt_are_sent_again_on_resume() {
    let w = World::new().await;
    halted_on_b(&w).await;
    assert_eq!(w.crm.attempts("c"), 1);
    w.crm.clear("b");
    w.export().await;
    assert_eq!(w.crm.attempts("c"), 2);
    w.assert_crm_clean();
}

#[tokio::test]
async fn s4_4_pause_off_logs_every_refused_record_and_carries_on() {
    let w = World::new().await;
    w.pause(false).await;
    w.put_all(&["a", "b", "c", "d"]).await;
    w.crm.always(
        "b",
        Scripted::Reject("FIELD_CUSTOM_VALIDATION_EXCEPTION", Data),
    );
    w.crm
        .always("d", Scripted::Reject("INVALID_EMAIL_ADDRESS", Data));
    let r = w.export().await;
    assert_eq!(r.outcome, RunOutcome::Completed);
    assert_eq!(r.counts.record_errors, 2);
    assert_eq!(w.state().await.cursor, 4);
    let mut keys: Vec<_> = w
        .items()
        .await
        .into_iter()
        .map(|i| (i.key.as_str().to_string(), i.status))
        .collect();
    keys.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        keys,
        vec![
            ("b".into(), ErrorStatus::Open),
            ("d".into(), ErrorStatus::Open)
        ]
    );
    assert!(w.published(EventKind::ExportJobHalted).is_empty());
}

#[tokio::test]
async fn s4_4_a_request_level_failure_creates_no_items_and_keeps_the_cursor() {
    let w = World::new().await;
    w.batch_size(25).await;
    w.put_n("k", 60).await;
    w.crm
        .fail_call(2, failure(K::Unavailable, "SERVER_UNAVAILABLE"));
    let r = w.export().await;
    assert!(
        matches!(r.outcome, RunOutcome::RequestFailed { ref code, .. } if code == "SERVER_UNAVAILABLE")
    );
    // §4.6: the first batch was committed; the second's outcome is unknown.
    assert_eq!(w.state().await.cursor, 25);
    assert!(w.items().await.is_empty());
    assert_eq!(w.published(EventKind::ExportRunFailed).len(), 1);
    // The next run starts there again.
    let r = w.export().await;
    assert_eq!(r.outcome, RunOutcome::Completed);
    assert_eq!(w.crm.calls()[2].keys[0], "k0025");
}

// ---- §4.5 narrowing down and systemic failures ----------------------------------------

#[tokio::test]
async fn s4_5_a_request_refused_for_one_records_content_is_narrowed_to_that_record() {
    let w = World::new().await;
    w.pause(false).await;
    let keys = w.put_n("k", 16).await;
    w.crm
        .refuse_requests_with("k0011", failure(K::ContentRefused, "JSON_PARSER_ERROR"));
    let r = w.export().await;
    assert_eq!(r.outcome, RunOutcome::Completed);
    // Everyone but the guilty record was accepted.
    for k in &keys {
        assert_eq!(w.crm.record(k).is_some(), k != "k0011", "{k}");
    }
    let items = w.items().await;
    assert_eq!(items.len(), 1);
    assert_eq!(
        (items[0].key.as_str(), items[0].error.code.as_str()),
        ("k0011", "JSON_PARSER_ERROR")
    );
    // log2(16) levels of halving, two requests each.
    assert_eq!(r.counts.split_requests, 8);
}

#[tokio::test]
async fn s4_5_narrowing_with_pause_on_halts_on_the_guilty_record() {
    let w = World::new().await;
    w.put_n("k", 8).await;
    w.crm
        .refuse_requests_with("k0005", failure(K::ContentRefused, "JSON_PARSER_ERROR"));
    let r = w.export().await;
    assert!(matches!(r.outcome, RunOutcome::Halted { seq: 6, .. }));
    assert_eq!(w.state().await.cursor, 5);
}

#[tokio::test]
async fn s4_5_splitting_stops_when_both_halves_fail_alike() {
    let w = World::new().await;
    w.put_n("k", 8).await;
    // Every request is refused the same way: not about one record.
    w.crm
        .fail_from_call(1, failure(K::ContentRefused, "INVALID_FIELD"));
    let r = w.export().await;
    assert!(
        matches!(r.outcome, RunOutcome::RequestFailed { ref code, .. } if code == "INVALID_FIELD")
    );
    assert_eq!(w.crm.call_count(), 3, "the first request and one split");
    assert!(w.items().await.is_empty());
    assert_eq!(w.state().await.cursor, 0);
}

#[tokio::test]
async fn s4_5_a_request_failure_repeating_at_the_same_cursor_is_narrowed() {
    let w = World::new().await;
    w.pause(false).await;
    w.put_n("k", 4).await;
    // The CRM times out whenever k0002 is in the request (say, a trigger loops on it).
    w.crm
        .refuse_requests_with("k0002", failure(K::Unavailable, "TIMEOUT"));
    for _ in 0..w.config.request_failure_streak_limit {
        let r = w.export().await;
        assert!(matches!(r.outcome, RunOutcome::RequestFailed { .. }));
        assert!(w.items().await.is_empty());
    }
    let r = w.export().await;
    assert_eq!(r.outcome, RunOutcome::Completed);
    assert_eq!(w.item("k0002").await.unwrap().error.code, "TIMEOUT");
    assert!(w.crm.record("k0003").is_some());
}

#[tokio::test]
async fn s4_5_a_trigger_cpu_time_limit_is_retried_in_smaller_batches() {
    let w = World::new().await;
    let keys = w.put_n("k", 8).await;
    for k in &keys {
        w.crm.script(
            k,
            [Scripted::TransientSmaller(
                "CANNOT_INSERT_UPDATE_ACTIVATE_ENTITY",
            )],
        );
    }
    let r = w.export().await;
    assert_eq!(r.outcome, RunOutcome::Completed);
    let calls = w.crm.calls();
    assert_eq!(calls[0].keys.len(), 8);
    assert!(calls[1..].iter().all(|c| c.keys.len() <= 4), "{calls:?}");
}

#[tokio::test]
async fn s4_5_most_of_a_batch_failing_with_one_permission_code_blocks_with_one_item() {
    for pause in [true, false] {
        let w = World::new().await;
        w.pause(pause).await;
        let keys = w.put_n("k", 30).await;
        for k in keys.iter().skip(2) {
            w.crm.always(
                k,
                Scripted::Reject("INSUFFICIENT_ACCESS_OR_READONLY", Configuration),
            );
        }
        let r = w.export().await;
        assert!(
            matches!(
                r.outcome,
                RunOutcome::Blocked {
                    reason: BlockReason::SystemicFailure,
                    ..
                }
            ),
            "pause {pause}: {:?}",
            r.outcome
        );
        assert_eq!(
            w.items().await.len(),
            1,
            "no flood of items (pause {pause})"
        );
        assert_eq!(w.state().await.cursor, 2);
        assert_eq!(w.published(EventKind::ExportJobBlocked).len(), 1);
        assert!(w.state().await.halt.is_none());
    }
}

#[tokio::test]
async fn s4_5_storage_limit_blocks_at_once() {
    let w = World::new().await;
    w.put_all(&["a", "b"]).await;
    w.crm
        .always("a", Scripted::Reject("STORAGE_LIMIT_EXCEEDED", OrgWide));
    let r = w.export().await;
    assert!(matches!(
        r.outcome,
        RunOutcome::Blocked {
            reason: BlockReason::StorageLimit,
            ..
        }
    ));
}

#[tokio::test]
async fn s4_5_a_connection_refused_for_good_blocks_and_pause_off_does_not_bypass_it() {
    let w = World::new().await;
    w.put_all(&["a", "b"]).await;
    w.crm
        .fail_from_call(1, failure(K::ConnectionRevoked, "invalid_grant"));
    let r = w.export().await;
    assert!(matches!(
        r.outcome,
        RunOutcome::Blocked {
            reason: BlockReason::ConnectionRefused,
            ..
        }
    ));
    assert!(w.items().await.is_empty());
    w.pause(false).await;
    let r = w.export().await;
    assert!(matches!(r.outcome, RunOutcome::Blocked { .. }));
    assert_eq!(w.state().await.block.unwrap().attempts, 2);
    // A successful probe clears it.
    w.crm.end_outage();
    let r = w.export().await;
    assert_eq!(r.outcome, RunOutcome::Completed);
    assert!(w.state().await.block.is_none());
    assert_eq!(w.state().await.cursor, 2);
    assert_eq!(
        w.published(EventKind::ExportJobResumed)[0].detail["reason"],
        "block_cleared"
    );
}

#[tokio::test]
async fn s4_5_a_blocked_job_with_nothing_queued_probes_the_connection() {
    let w = World::new().await;
    w.put("a").await;
    w.crm
        .fail_call(1, failure(K::ApiDisabled, "API_DISABLED_FOR_ORG"));
    assert!(matches!(
        w.export().await.outcome,
        RunOutcome::Blocked {
            reason: BlockReason::ApiDisabled,
            ..
        }
    ));
    // Drain the queue out of band: the probe then has no record and checks the connection.
    let mut st = w.state().await;
    st.cursor = 1;
    let lease = w
        .store
        .acquire_lease(&w.job, &RunId("op".into()), w.now(), Duration::from_secs(5))
        .await
        .unwrap()
        .unwrap();
    w.store
        .commit(
            &w.job,
            &lease,
            w.now(),
            Commit {
                state: st,
                errors: vec![],
                events: vec![],
                ..Commit::default()
            },
        )
        .await
        .unwrap();
    w.store.release_lease(&w.job, &lease).await.unwrap();
    let r = w.export().await;
    assert_eq!(r.outcome, RunOutcome::Completed);
    assert_eq!(
        w.crm.calls().last().unwrap().keys.len(),
        0,
        "a connection check, not an upsert"
    );
}

// ---- §4.6 / §4.7 commits, deadline, budget ---------------------------------------------

#[tokio::test]
async fn s4_6_the_cursor_is_committed_after_every_batch() {
    let w = World::new().await;
    w.batch_size(25).await;
    w.put_n("k", 75).await;
    let r = w.export().await;
    assert_eq!(r.counts.batches, 3);
    assert_eq!(w.state().await.cursor, 75);
}

#[tokio::test]
async fn s4_7_the_run_stops_cleanly_before_its_deadline() {
    let mut w = World::new().await;
    w.batch_size(25).await;
    w.put_n("k", 100).await;
    w.crm.set_latency(Duration::from_secs(20));
    w.deadline = Some(w.now() + chrono::Duration::seconds(60));
    let r = w.export().await;
    assert_eq!(r.outcome, RunOutcome::DeadlineReached);
    assert!(
        w.now() <= w.deadline.unwrap(),
        "finished after the deadline"
    );
    let cursor = w.state().await.cursor;
    assert!(cursor > 0 && cursor < 100);
    // The lease was released: the next run goes on at once.
    w.deadline = None;
    assert_eq!(w.export().await.outcome, RunOutcome::Completed);
}

#[tokio::test]
async fn s4_7_the_run_stops_when_the_daily_api_limit_is_spent() {
    let w = World::new().await;
    w.settings(|s| {
        s.batch_size = BatchSize::new(25).unwrap();
        s.daily_api_limit = 1000;
    })
    .await;
    w.store
        .add_api_calls(&w.job.tenant, w.now(), 998)
        .await
        .unwrap();
    w.put_n("k", 100).await;
    let r = w.export().await;
    assert!(
        matches!(r.outcome, RunOutcome::BudgetExhausted { ref code } if code == "daily_api_limit")
    );
    assert_eq!(w.crm.call_count(), 2);
    assert_eq!(w.state().await.cursor, 50);
    // A day later the budget is back.
    w.advance_hours(25);
    assert_eq!(w.export().await.outcome, RunOutcome::Completed);
}

/// A run adds its own calls to the count it read, and reads the count again before every
/// request once it is near the limit: calls of the tenant's other runs made meanwhile count.
#[tokio::test]
async fn s4_7_calls_of_the_tenants_other_runs_count_once_the_budget_is_near_its_end() {
    use common::crash::{CrashStore, Hook};
    let w = World::new().await;
    w.settings(|s| {
        s.batch_size = BatchSize::new(25).unwrap();
        s.daily_api_limit = 1000;
    })
    .await;
    w.spend_api_calls(880).await;
    w.put_n("k", 1000).await;
    // Another job of the tenant spends 100 calls while this run goes.
    let hook: Hook<'_> = Box::new(|| Box::pin(w.spend_api_calls(100)));
    let r = w
        .export_via(&CrashStore::stalling(&w.store, 30, hook), &w.crm)
        .await;
    assert!(
        matches!(r.outcome, RunOutcome::BudgetExhausted { ref code } if code == "daily_api_limit"),
        "{:?}",
        r.outcome
    );
    // 880 read at the start; from 900 on (880 + 20 of ours) every request reads again and
    // finds 880 + 100 + 20: the limit. Alone, the run would have made 120 calls.
    assert_eq!(w.crm.call_count(), 20);
    assert_eq!(
        w.api_calls_counted().await,
        1000,
        "every call of the run was counted"
    );
}

/// Far from the limit the count is read again every `budget_reread_calls` calls, so the
/// tenant's other runs are seen without a read before every request.
#[tokio::test]
async fn s4_7_the_budget_is_read_again_every_fifty_calls() {
    use common::crash::{CrashStore, Hook};
    let w = World::new().await;
    w.settings(|s| {
        s.batch_size = BatchSize::new(25).unwrap();
        s.daily_api_limit = 1000;
    })
    .await;
    w.spend_api_calls(100).await;
    w.put_n("k", 2000).await;
    let hook: Hook<'_> = Box::new(|| Box::pin(w.spend_api_calls(850)));
    let r = w
        .export_via(&CrashStore::stalling(&w.store, 30, hook), &w.crm)
        .await;
    assert!(
        matches!(r.outcome, RunOutcome::BudgetExhausted { .. }),
        "{:?}",
        r.outcome
    );
    // Read at the start (100) and after 50 calls (100 + 850 + 50): the limit. Counting
    // only its own calls, the run would have gone on to 800.
    assert_eq!(w.crm.call_count(), 50);
}

#[tokio::test]
async fn s4_7_the_run_stops_when_the_org_reports_less_than_ten_percent_left() {
    let w = World::new().await;
    w.batch_size(25).await;
    w.put_n("k", 100).await;
    w.crm.set_usage(ApiUsage {
        used: 95_000,
        max: 100_000,
    });
    let r = w.export().await;
    assert!(
        matches!(r.outcome, RunOutcome::BudgetExhausted { ref code } if code == "org_allocation_low")
    );
    assert_eq!(w.crm.call_count(), 1);
}

#[tokio::test]
async fn s4_7_a_daily_request_limit_stops_but_a_concurrency_limit_is_transient() {
    let w = World::new().await;
    w.put_all(&["a", "b"]).await;
    w.crm
        .fail_call(1, failure(K::DailyLimit, "REQUEST_LIMIT_EXCEEDED"));
    let r = w.export().await;
    assert!(matches!(r.outcome, RunOutcome::BudgetExhausted { .. }));
    assert!(w.state().await.block.is_none());
    w.crm
        .fail_call(2, failure(K::ConcurrencyLimit, "REQUEST_LIMIT_EXCEEDED"));
    let r = w.export().await;
    assert!(matches!(r.outcome, RunOutcome::RequestFailed { .. }));
    assert_eq!(w.export().await.outcome, RunOutcome::Completed);
}

/// Changes the tenant's settings while the first CRM call is in flight.
struct TurnOffDuringFirstCall<'a> {
    w: &'a World,
}

#[async_trait::async_trait]
impl CrmClient for TurnOffDuringFirstCall<'_> {
    async fn upsert(&self, req: &UpsertRequest) -> CrmReply<Vec<RecordOutcome>> {
        let reply = self.w.crm.upsert(req).await;
        if self.w.crm.call_count() == 1 {
            self.w.settings(|s| s.export_to_crm = false).await;
        }
        reply
    }
    async fn check_connection(&self, t: Duration) -> CrmReply<()> {
        self.w.crm.check_connection(t).await
    }
}

#[tokio::test]
async fn s3_settings_are_reread_before_every_batch() {
    let w = World::new().await;
    w.batch_size(25).await;
    w.put_n("k", 60).await;
    let crm = TurnOffDuringFirstCall { w: &w };
    let engine = crm_export_core::engine::Engine::new(
        &w.store,
        &crm,
        &w.events,
        w.clock.as_ref(),
        &w.config,
    );
    let r = engine.run_export(&w.job, &w.opts()).await.unwrap();
    assert_eq!(r.outcome, RunOutcome::Disabled);
    assert_eq!(w.crm.call_count(), 1);
    assert_eq!(
        w.state().await.cursor,
        25,
        "the batch in flight was committed"
    );
}

// ---- §4.8 run summary --------------------------------------------------------------

#[tokio::test]
async fn s4_8_a_completed_run_publishes_its_counts() {
    let w = World::new().await;
    w.put_all(&["a", "b", "a"]).await;
    w.export().await;
    let done = w.published(EventKind::ExportRunCompleted);
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].detail["counts"]["accepted"], 2);
    assert_eq!(done[0].detail["counts"]["superseded"], 1);
    assert_eq!(done[0].detail["outcome"]["outcome"], "completed");
}

// ---- §5 the ExportError retry run --------------------------------------------------

async fn logged(w: &World, keys: &[&str], code: &'static str) {
    w.pause(false).await;
    w.put_all(keys).await;
    for k in keys {
        w.crm.always(k, Scripted::Reject(code, Data));
    }
    w.export().await;
    assert_eq!(w.items().await.len(), keys.len());
}

#[tokio::test]
async fn s5_accepted_items_are_resolved_and_refused_ones_count_an_attempt() {
    let w = World::new().await;
    logged(&w, &["a", "b"], "FIELD_CUSTOM_VALIDATION_EXCEPTION").await;
    w.crm.clear("a");
    w.advance_hours(24);
    let r = w.retry().await;
    assert_eq!(r.outcome, RunOutcome::Completed);
    assert_eq!(w.item("a").await.unwrap().status, ErrorStatus::Resolved);
    let b = w.item("b").await.unwrap();
    assert_eq!(
        (b.status, b.attempts, b.retry_attempts),
        (ErrorStatus::Open, 2, 1)
    );
    let retried = w.published(EventKind::ExportErrorsRetried);
    assert_eq!(retried[0].detail["counts"]["accepted"], 1);
    assert!(w.state().await.last_retry_completed_at.is_some());
}

#[tokio::test]
async fn s5_an_item_is_parked_at_max_retry_attempts() {
    let w = World::new().await;
    logged(&w, &["a"], "FIELD_CUSTOM_VALIDATION_EXCEPTION").await;
    w.settings(|s| s.max_retry_attempts = 3).await;
    for _ in 0..3 {
        w.advance_hours(24);
        w.retry().await;
    }
    assert_eq!(w.item("a").await.unwrap().status, ErrorStatus::Parked);
    let sent = w.crm.attempts("a");
    w.advance_hours(24);
    w.retry().await;
    assert_eq!(w.crm.attempts("a"), sent, "parked items are not retried");
}

#[tokio::test]
async fn s5_a_key_with_a_newer_version_is_never_resent() {
    let w = World::new().await;
    logged(&w, &["a", "b"], "FIELD_CUSTOM_VALIDATION_EXCEPTION").await;
    w.crm.clear("a");
    w.crm.clear("b");
    // a: newer version accepted by the export run; b: newer version queued, not sent yet.
    w.put("a").await;
    w.export().await;
    w.put("b").await;
    let (a_sent, b_sent) = (w.crm.attempts("a"), w.crm.attempts("b"));
    w.advance_hours(24);
    let r = w.retry().await;
    assert_eq!((w.crm.attempts("a"), w.crm.attempts("b")), (a_sent, b_sent));
    assert_eq!(w.item("a").await.unwrap().status, ErrorStatus::Superseded);
    assert_eq!(w.item("b").await.unwrap().status, ErrorStatus::Open);
    assert_eq!(r.counts.errors_skipped, 1);
    w.assert_crm_clean();
}

#[tokio::test]
async fn s5_a_newer_version_the_crm_took_without_us_hearing_of_it_is_never_overwritten() {
    let w = World::new().await;
    logged(&w, &["a"], "FIELD_CUSTOM_VALIDATION_EXCEPTION").await;
    w.crm.clear("a");
    w.put("a").await;
    // The CRM applies the newer version but the reply is lost: the item stays open.
    w.crm.lose_reply_of_call(w.crm.call_count() + 1);
    assert!(matches!(
        w.export().await.outcome,
        RunOutcome::RequestFailed { .. }
    ));
    assert_eq!(w.crm.record("a").unwrap().fields["_v"], 2);
    assert_eq!(w.item("a").await.unwrap().status, ErrorStatus::Open);
    w.advance_hours(24);
    w.retry().await;
    assert_eq!(
        w.crm.record("a").unwrap().fields["_v"],
        2,
        "the retry run sent the stale version"
    );
    w.assert_crm_clean();
}

#[tokio::test]
async fn s5_the_halted_record_is_left_to_the_export_runs_probe() {
    let w = World::new().await;
    halted_on_b(&w).await;
    let before = w.crm.attempts("b");
    w.advance_hours(24);
    let r = w.retry().await;
    assert_eq!(w.crm.attempts("b"), before);
    assert_eq!(r.counts.errors_skipped, 1);
}

#[tokio::test]
async fn s5_items_are_retried_oldest_last_attempt_first_and_a_cut_short_run_goes_on_next_time() {
    let mut w = World::new().await;
    w.pause(false).await;
    w.batch_size(25).await;
    let keys = w.put_n("k", 75).await;
    for k in &keys {
        w.crm.always(
            k,
            Scripted::Reject("FIELD_CUSTOM_VALIDATION_EXCEPTION", Data),
        );
    }
    w.export().await;
    w.advance_hours(24);
    w.crm.set_latency(Duration::from_secs(20));
    w.deadline = Some(w.now() + chrono::Duration::seconds(50));
    let first = w.crm.call_count();
    let r = w.retry().await;
    assert_eq!(r.outcome, RunOutcome::DeadlineReached);
    assert!(w.state().await.last_retry_completed_at.is_none());
    let tried: Vec<String> = w.crm.calls()[first as usize..]
        .iter()
        .flat_map(|c| c.keys.clone())
        .collect();
    assert!(!tried.is_empty());
    // The next day starts with the items this run did not reach.
    w.deadline = None;
    w.advance_hours(1);
    let next = w.crm.call_count();
    w.retry().await;
    let next_first = &w.crm.calls()[next as usize].keys[0];
    assert!(
        !tried.contains(next_first),
        "{next_first} was retried first again"
    );
}

#[tokio::test]
async fn s5_a_request_failure_stops_the_retry_run_without_counting_attempts() {
    let w = World::new().await;
    logged(&w, &["a"], "FIELD_CUSTOM_VALIDATION_EXCEPTION").await;
    w.advance_hours(24);
    w.crm
        .fail_from_call(1, failure(K::Unavailable, "SERVER_UNAVAILABLE"));
    let r = w.retry().await;
    assert!(matches!(r.outcome, RunOutcome::RequestFailed { .. }));
    assert_eq!(w.item("a").await.unwrap().attempts, 1);
    assert!(w.state().await.last_retry_completed_at.is_none());
}

#[tokio::test]
async fn s5_overdue_retry_work_is_done_first_by_the_next_export_run() {
    let w = World::new().await;
    logged(&w, &["a"], "FIELD_CUSTOM_VALIDATION_EXCEPTION").await;
    w.crm.clear("a");
    w.advance_hours(25);
    w.put("z").await;
    let r = w.export().await;
    assert_eq!(r.outcome, RunOutcome::Completed);
    assert_eq!(w.item("a").await.unwrap().status, ErrorStatus::Resolved);
    assert!(w.state().await.last_retry_completed_at.is_some());
    let calls = w.crm.calls();
    assert_eq!(
        calls[calls.len() - 2].keys,
        vec!["a".to_string()],
        "retry work came first"
    );
}

// ---- §6 toggles ----------------------------------------------------------------------

#[tokio::test]
async fn s6_pause_turned_on_with_open_errors_does_not_halt_on_old_errors() {
    let w = World::new().await;
    logged(&w, &["a"], "FIELD_CUSTOM_VALIDATION_EXCEPTION").await;
    w.pause(true).await;
    w.put_all(&["b", "c"]).await;
    assert_eq!(w.export().await.outcome, RunOutcome::Completed);
    // The next new record-level failure halts.
    w.put("d").await;
    w.crm
        .always("d", Scripted::Reject("REQUIRED_FIELD_MISSING", Data));
    assert!(matches!(
        w.export().await.outcome,
        RunOutcome::Halted { .. }
    ));
}

#[tokio::test]
async fn s6_export_to_crm_off_keeps_cursor_halt_and_items() {
    let w = World::new().await;
    halted_on_b(&w).await;
    let before = (w.state().await, w.items().await);
    w.settings(|s| s.export_to_crm = false).await;
    assert_eq!(w.export().await.outcome, RunOutcome::Disabled);
    assert_eq!(w.retry().await.outcome, RunOutcome::Disabled);
    assert_eq!((w.state().await, w.items().await), before);
}

// ---- §8 events, operator actions ---------------------------------------------------

#[tokio::test]
async fn s8_events_survive_a_failed_publish_and_go_out_with_the_next_run() {
    let w = World::new().await;
    w.events.set_failing(true);
    halted_on_b(&w).await;
    assert!(w.events.events().is_empty());
    assert!(!w
        .store
        .pending_events(&w.job.tenant)
        .await
        .unwrap()
        .is_empty());
    w.events.set_failing(false);
    w.export().await;
    let halted = w.published(EventKind::ExportJobHalted);
    assert_eq!(halted.len(), 1);
    let ids: std::collections::HashSet<_> =
        w.events.events().iter().map(|e| e.id.clone()).collect();
    assert_eq!(
        ids.len(),
        w.events.events().len(),
        "each event has a unique id"
    );
    assert!(w
        .store
        .pending_events(&w.job.tenant)
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn operator_skip_parks_the_halted_record_and_moves_on() {
    let w = World::new().await;
    halted_on_b(&w).await;
    let eng = w.engine().operator();
    assert!(
        eng.skip_halted(&w.job, "ops@acme", false).await.is_err(),
        "needs the acknowledgement"
    );
    let item = eng.skip_halted(&w.job, "ops@acme", true).await.unwrap();
    assert_eq!(item.status, ErrorStatus::Parked);
    assert_eq!(w.state().await.cursor, 2);
    assert_eq!(w.export().await.outcome, RunOutcome::Completed);
    assert_eq!(w.state().await.cursor, 3);
    // Re-opened, the item goes back to the retry run.
    let reopened = eng
        .reopen_error(&w.job, &key("b"), "ops@acme")
        .await
        .unwrap();
    assert_eq!(reopened.status, ErrorStatus::Open);
    w.crm.clear("b");
    w.advance_hours(24);
    w.retry().await;
    assert_eq!(w.item("b").await.unwrap().status, ErrorStatus::Resolved);
}

#[tokio::test]
async fn job_status_says_where_the_job_stands() {
    let w = World::new().await;
    halted_on_b(&w).await;
    let st = w.engine().operator().job_status(&w.job).await.unwrap();
    assert_eq!(
        (st.cursor, st.head, st.backlog, st.open_errors),
        (1, 3, 2, 1)
    );
    let halt = st.halt.unwrap();
    assert_eq!(
        (halt.key.as_str(), halt.error.code.as_str()),
        ("b", "FIELD_CUSTOM_VALIDATION_EXCEPTION")
    );
    assert!(st.oldest_unexported_at.is_some());
}
