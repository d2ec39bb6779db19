//! The export run of one job (SPEC §4): probe a block, probe a halt, then batch after batch
//! until the queue is empty, the run must stop, or the job halts or blocks.

use super::batch::Window;
use super::pipeline::Pipeline;
use super::report::{RunKind, RunOutcome, RunReport};
use super::run::{Flow, Run, Start, Stop};
use super::send::{Fate, Sent};
use super::{retry_run, Engine, EngineConfig, EngineError, RunOptions};
use crate::domain::*;
use crate::ports::ErrorWrite;
use serde_json::json;

pub(super) async fn run(
    eng: &Engine<'_>,
    job: &JobRef,
    opts: &RunOptions,
) -> Result<RunReport, EngineError> {
    let mut run = match Run::start(eng, job, opts, RunKind::Export).await? {
        Start::Ready(run) => run,
        Start::Finished(report) => return Ok(*report),
    };
    match body(&mut run).await {
        Ok(outcome) | Err(Stop::Outcome(outcome)) => Ok(run.finish(outcome).await),
        Err(Stop::Request(f)) => {
            // Every request stop is turned into an outcome where it happens; this is a
            // safety net that still records nothing against records.
            let outcome = RunOutcome::RequestFailed {
                code: f.code,
                message: f.message,
            };
            Ok(run.finish(outcome).await)
        }
        Err(Stop::Failed(e)) => {
            run.abandon().await;
            Err(e)
        }
    }
}

async fn body(run: &mut Run<'_>) -> Flow<RunOutcome> {
    if run.state.block.is_none() && retry_due(run) {
        // The daily retry was starved (lease busy or cut short): do the due work first.
        let before = run.now() - run.eng.config.retry_interval;
        if retry_run::pass(run, before).await? {
            run.state.last_retry_completed_at = Some(run.now());
        }
    }
    if run.state.block.is_some() {
        probe_block(run).await?;
    }
    if run.state.halt.is_some() {
        probe_halt(run).await?;
    }
    let mut pipe = Pipeline::new(run.state.cursor);
    let result = export_batches(run, &mut pipe).await;
    pipe.drain().await;
    result
}

/// Batch after batch with up to the run's window in flight, until the queue is empty, the
/// run must stop, or the job halts or blocks. The caller drains what is still in flight.
async fn export_batches<'a>(run: &mut Run<'a>, pipe: &mut Pipeline<'a>) -> Flow<RunOutcome> {
    let cfg = run.eng.config;
    // A planned stop (deadline, settings) met while filling: no new request, but the ones
    // in flight finish and are applied first.
    let mut planned: Option<Stop> = None;
    loop {
        while planned.is_none() {
            if !pipe.may_start(run.width()) {
                // Every slot this run holds is busy: take another while its share allows.
                if pipe.may_start(run.width() + 1) && run.grow_slots().await? {
                    continue;
                }
                break;
            }
            if let Err(stop) = run.check_deadline() {
                planned = Some(stop);
                break;
            }
            if pipe.started > 0 || run.counts.batches > 0 {
                // A settings change takes effect at the next batch.
                if let Err(stop) = run.reload_settings().await {
                    planned = Some(stop);
                    break;
                }
            }
            let batch_size = run.settings.batch_size.get();
            let window = run
                .read_window_from(pipe.read_pos, batch_size, pipe.busy())
                .await?;
            if window.records.is_empty() {
                pipe.note_end(window.end);
                break;
            }
            // A request failure that kept repeating at the cursor is narrowed down.
            let narrow = pipe.is_empty()
                && pipe.read_pos == run.state.cursor
                && run.state.request_failure_streak.is_some_and(|s| {
                    s.seq == run.state.cursor && s.runs >= cfg.request_failure_streak_limit
                });
            let ctx = std::sync::Arc::clone(&run.ctx);
            pipe.start(&ctx, window, narrow);
        }
        while let Some(batch) = pipe.pop_finished() {
            let outcome = match batch.sent {
                None => {
                    run.counts.superseded += batch.window.records.len() as u64;
                    advance(run, batch.window.last_seq().unwrap_or(run.state.cursor));
                    run.commit(Vec::new(), Vec::new()).await?;
                    None
                }
                Some(sent) => apply_batch(run, &batch.window, &batch.sendable, sent).await?,
            };
            if let Some(outcome) = outcome {
                // Later batches' records stay after the cursor and are sent again.
                return Ok(outcome);
            }
        }
        if pipe.in_flight() == 0 && pipe.is_empty() {
            if let Some(stop) = planned {
                return Err(stop);
            }
            if !pipe.may_start(run.width()) {
                // Caught up: the last read found nothing after everything was applied.
                return Ok(RunOutcome::Completed);
            }
            continue;
        }
        let pause = run.settings.pause_on_export_errors;
        pipe.wait(pause, |fates| detect_block(fates, cfg).is_some())
            .await;
    }
}

fn retry_due(run: &Run<'_>) -> bool {
    if run.unresolved.is_empty() {
        return false;
    }
    match run.state.last_retry_completed_at {
        Some(t) => run.now() - t > run.eng.config.retry_interval,
        None => true,
    }
}

/// Moves the cursor and forgets streaks the cursor has passed.
fn advance(run: &mut Run<'_>, cursor: Seq) {
    if cursor > run.state.cursor {
        run.state.cursor = cursor;
        run.state.request_failure_streak = None;
        if run.state.transient_streak.is_some_and(|s| s.seq <= cursor) {
            run.state.transient_streak = None;
        }
    }
}

/// An org-wide cause in the fates of one request, if any (SPEC §4.5).
pub(super) fn detect_block(
    fates: &[Fate],
    cfg: &EngineConfig,
) -> Option<(BlockReason, RecordError)> {
    if let Some(Fate::Rejected(e, _)) = fates
        .iter()
        .find(|f| matches!(f, Fate::Rejected(_, RejectKind::OrgWide)))
    {
        return Some((BlockReason::StorageLimit, e.clone()));
    }
    if fates.len() < cfg.systemic_min_batch {
        return None;
    }
    let mut by_code: std::collections::BTreeMap<&str, (usize, &RecordError)> = Default::default();
    for f in fates {
        if let Fate::Rejected(e, RejectKind::Configuration) = f {
            by_code.entry(e.code.as_str()).or_insert((0, e)).0 += 1;
        }
    }
    let (count, error) = by_code.into_values().max_by_key(|(n, _)| *n)?;
    (count as f64 >= cfg.systemic_ratio * fates.len() as f64)
        .then(|| (BlockReason::SystemicFailure, error.clone()))
}

/// What a request-level failure does to the job; the caller commits.
pub(super) fn request_stop(
    run: &mut Run<'_>,
    f: RequestFailure,
    events: &mut Vec<Event>,
    count_streak: bool,
) -> RunOutcome {
    let reason = match f.kind {
        RequestFailureKind::ConnectionRevoked => Some(BlockReason::ConnectionRefused),
        RequestFailureKind::ApiDisabled => Some(BlockReason::ApiDisabled),
        RequestFailureKind::Misconfigured => Some(BlockReason::SystemicFailure),
        _ => None,
    };
    if let Some(reason) = reason {
        set_block(
            run,
            reason,
            &RecordError::new(f.code.clone(), f.message.clone()),
            events,
        );
        return RunOutcome::Blocked {
            reason,
            code: f.code,
        };
    }
    if f.kind == RequestFailureKind::DailyLimit {
        return RunOutcome::BudgetExhausted { code: f.code };
    }
    if count_streak {
        let cursor = run.state.cursor;
        run.state.request_failure_streak =
            Some(Streak::bump(run.state.request_failure_streak, cursor));
    }
    RunOutcome::RequestFailed {
        code: f.code,
        message: f.message,
    }
}

pub(super) fn set_block(
    run: &mut Run<'_>,
    reason: BlockReason,
    error: &RecordError,
    events: &mut Vec<Event>,
) {
    let now = run.now();
    match &mut run.state.block {
        Some(b) => {
            b.attempts += 1;
            b.last_attempt_at = now;
        }
        None => {
            run.state.block = Some(Block {
                reason,
                code: error.code.clone(),
                message: error.message.clone(),
                since: now,
                attempts: 1,
                last_attempt_at: now,
            });
            events.push(run.event(
                EventKind::ExportJobBlocked,
                json!({"reason": reason.as_str(), "code": error.code, "message": error.message}),
            ));
        }
    }
}

/// Turns a planned or request stop met while sending into the run's outcome (committing
/// what the stop changed); store failures pass through.
async fn outcome_of(
    run: &mut Run<'_>,
    stop: Stop,
    mut events: Vec<Event>,
    writes: Vec<ErrorWrite>,
) -> Flow<RunOutcome> {
    let outcome = match stop {
        Stop::Outcome(o) => o,
        Stop::Request(f) => request_stop(run, f, &mut events, true),
        Stop::Failed(e) => {
            // Keep what is known (accepted records, logged errors) before giving up.
            let _ = run.commit(writes, events).await;
            return Err(Stop::Failed(e));
        }
    };
    if outcome != RunOutcome::LeaseLost {
        run.commit(writes, events).await?;
    }
    Ok(outcome)
}

/// Applies every record's fate in one sent batch. `Some(outcome)` when the run stops.
async fn apply_batch(
    run: &mut Run<'_>,
    window: &Window,
    sendable: &[Record],
    sent: Sent,
) -> Flow<Option<RunOutcome>> {
    let cfg = run.eng.config;
    run.counts.batches += 1;
    let mut fates = sent.fates;
    // A record failing transiently at the same place run after run is a record failure.
    for (rec, fate) in sendable.iter().zip(fates.iter_mut()) {
        if let Fate::Transient(e, _) = fate {
            let runs = run
                .state
                .transient_streak
                .filter(|s| s.seq == rec.seq)
                .map_or(0, |s| s.runs);
            if runs + 1 >= cfg.transient_streak_limit {
                *fate = Fate::Rejected(e.clone(), RejectKind::Data);
            }
        }
    }
    let block = detect_block(&fates, cfg);
    let pause = run.settings.pause_on_export_errors;
    let fate_of: std::collections::HashMap<Seq, &Fate> =
        sendable.iter().map(|r| r.seq).zip(fates.iter()).collect();

    let mut cursor = run.state.cursor;
    let mut stopped = false;
    let mut writes = Vec::new();
    let mut events = Vec::new();
    let mut halt_on: Option<(&Record, RecordError)> = None;
    let mut transient_at: Option<Seq> = None;
    // The window keeps only the seq and key of what it sent; the records themselves (with
    // their fields, for ExportErrors items) are `sendable`, in the same order.
    let mut sent_records = sendable.iter();
    for (entry, superseded) in window.records.iter().zip(&window.superseded) {
        if *superseded {
            if !stopped {
                run.counts.superseded += 1;
                cursor = entry.seq;
            }
            continue;
        }
        let rec = sent_records.next().unwrap_or(entry);
        match fate_of.get(&rec.seq).copied().unwrap_or(&Fate::Unknown) {
            Fate::Accepted => {
                run.counts.accepted += 1;
                writes.extend(run.resolve_write(&rec.key, rec.seq));
                if !stopped {
                    cursor = rec.seq;
                }
            }
            Fate::Rejected(err, _) if !stopped => {
                run.counts.record_errors += 1;
                if block.is_some() || pause {
                    // The cursor stays just before it; later records are sent again.
                    stopped = true;
                    halt_on = Some((rec, err.clone()));
                } else {
                    let item = run.failed_item(rec, err, false).await?;
                    writes.push(ErrorWrite::Put(item));
                    cursor = rec.seq;
                }
            }
            Fate::Rejected(..) => {}
            Fate::Transient(..) | Fate::Unknown => {
                if !stopped {
                    stopped = true;
                    if matches!(fate_of.get(&rec.seq), Some(Fate::Transient(..))) {
                        transient_at = Some(rec.seq);
                    }
                }
            }
        }
    }
    advance(run, cursor);
    if let Some(seq) = transient_at {
        run.state.transient_streak = Some(Streak::bump(run.state.transient_streak, seq));
    }

    if let Some((reason, example)) = block {
        // One item at most for an org-wide cause, whatever the pause setting.
        if let Some((rec, err)) = &halt_on {
            writes.push(ErrorWrite::Put(run.failed_item(rec, err, false).await?));
        }
        set_block(run, reason, &example, &mut events);
        run.commit(writes, events).await?;
        return Ok(Some(RunOutcome::Blocked {
            reason,
            code: example.code,
        }));
    }
    if let Some((rec, err)) = halt_on {
        let item = run.failed_item(rec, &err, false).await?;
        let now = run.now();
        run.state.halt = Some(Halt {
            seq: rec.seq,
            key: rec.key.clone(),
            error: err.clone(),
            since: now,
            attempts: 1,
            last_attempt_at: now,
        });
        events.push(run.event(EventKind::ExportJobHalted, halt_detail(rec, &err, now, 1)));
        writes.push(ErrorWrite::Put(item));
        run.commit(writes, events).await?;
        return Ok(Some(RunOutcome::Halted {
            key: rec.key.clone(),
            seq: rec.seq,
            code: err.code,
        }));
    }
    if let Some(stop) = sent.stop {
        return outcome_of(run, stop, events, writes).await.map(Some);
    }
    if let Some(seq) = transient_at {
        let code = match fate_of.get(&seq) {
            Some(Fate::Transient(e, _)) => e.code.clone(),
            _ => "TRANSIENT".into(),
        };
        run.commit(writes, events).await?;
        let message = format!("record {seq} kept failing transiently; the next run tries again");
        return Ok(Some(RunOutcome::RequestFailed { code, message }));
    }
    run.commit(writes, events).await?;
    Ok(None)
}

pub(super) fn halt_detail(
    rec: &Record,
    err: &RecordError,
    since: Timestamp,
    attempts: u32,
) -> serde_json::Value {
    json!({
        "record_key": rec.key, "seq": rec.seq, "error_code": err.code, "message": err.message,
        "fields": err.fields, "since": since, "attempts": attempts,
    })
}

/// The probe of a blocked job: one record (or a connection check) tells whether the cause
/// is gone. Returns Ok when the block is cleared.
async fn probe_block(run: &mut Run<'_>) -> Flow<()> {
    let block = run.state.block.clone().expect("probe_block needs a block");
    let probe = match &run.state.halt {
        Some(h) => run.eng.store.get_record(&run.job, h.seq).await?,
        None => run.read_window(1).await?.take_sendable().into_iter().next(),
    };
    let mut events = Vec::new();
    let cleared = match probe {
        Some(rec) => {
            let sent = run.send_records(std::slice::from_ref(&rec), false).await;
            match (sent.fates.into_iter().next(), sent.stop) {
                (_, Some(Stop::Request(f))) => {
                    let outcome = request_stop(run, f, &mut events, false);
                    run.commit(Vec::new(), events).await?;
                    return Err(Stop::Outcome(outcome));
                }
                (_, Some(stop)) => return Err(stop),
                (Some(Fate::Accepted), None) => true,
                (Some(Fate::Rejected(e, kind)), None) => {
                    kind != RejectKind::OrgWide
                        && !(kind == RejectKind::Configuration && e.code == block.code)
                }
                _ => false,
            }
        }
        None => match run.check_connection().await? {
            Ok(()) => true,
            Err(f) => {
                let outcome = request_stop(run, f, &mut events, false);
                run.commit(Vec::new(), events).await?;
                return Err(Stop::Outcome(outcome));
            }
        },
    };
    if !cleared {
        set_block(
            run,
            block.reason,
            &RecordError::new(block.code.clone(), block.message.clone()),
            &mut events,
        );
        run.commit(Vec::new(), events).await?;
        return Err(Stop::Outcome(RunOutcome::Blocked {
            reason: block.reason,
            code: block.code,
        }));
    }
    run.state.block = None;
    events.push(run.event(
        EventKind::ExportJobResumed,
        json!({"reason": "block_cleared", "block_reason": block.reason.as_str()}),
    ));
    run.commit(Vec::new(), events).await?;
    Ok(())
}

/// The probe of a halted job (SPEC §4.3). Returns Ok when the job may go on.
async fn probe_halt(run: &mut Run<'_>) -> Flow<()> {
    let halt = run.state.halt.clone().expect("probe_halt needs a halt");
    let latest = run
        .eng
        .store
        .latest_seqs(&run.job, std::slice::from_ref(&halt.key))
        .await?;
    let record = run.eng.store.get_record(&run.job, halt.seq).await?;
    let superseded = latest.get(&halt.key).is_some_and(|s| *s > halt.seq);
    let Some(record) = record.filter(|_| !superseded) else {
        // A newer version is queued: the halted one will never be sent again. Its item
        // stays open until a newer version is accepted.
        run.state.halt = None;
        let e = run.event(
            EventKind::ExportJobResumed,
            json!({"reason": "superseded", "record_key": halt.key, "seq": halt.seq}),
        );
        run.commit(Vec::new(), vec![e]).await?;
        return Ok(());
    };
    let sent = run.send_records(std::slice::from_ref(&record), false).await;
    let mut events = Vec::new();
    match (sent.fates.into_iter().next(), sent.stop) {
        (_, Some(stop)) => {
            let outcome = outcome_of(run, stop, events, Vec::new()).await?;
            Err(Stop::Outcome(outcome))
        }
        (Some(Fate::Accepted), None) => {
            run.counts.accepted += 1;
            run.state.halt = None;
            advance(run, halt.seq);
            let writes = run.resolve_write(&halt.key, halt.seq).into_iter().collect();
            events.push(run.event(
                EventKind::ExportJobResumed,
                json!({"reason": "probe_accepted", "record_key": halt.key, "seq": halt.seq}),
            ));
            run.commit(writes, events).await?;
            Ok(())
        }
        (Some(Fate::Rejected(err, kind)), None) => {
            run.counts.record_errors += 1;
            let item = run.failed_item(&record, &err, false).await?;
            if kind == RejectKind::OrgWide {
                set_block(run, BlockReason::StorageLimit, &err, &mut events);
                run.commit(vec![ErrorWrite::Put(item)], events).await?;
                return Err(Stop::Outcome(RunOutcome::Blocked {
                    reason: BlockReason::StorageLimit,
                    code: err.code,
                }));
            }
            if run.settings.pause_on_export_errors {
                let now = run.now();
                if let Some(h) = &mut run.state.halt {
                    h.attempts += 1;
                    h.last_attempt_at = now;
                    h.error = err.clone();
                }
                run.commit(vec![ErrorWrite::Put(item)], events).await?;
                return Err(Stop::Outcome(RunOutcome::Halted {
                    key: halt.key,
                    seq: halt.seq,
                    code: err.code,
                }));
            }
            // Pause was turned off: log it, move past it.
            run.state.halt = None;
            advance(run, halt.seq);
            events.push(run.event(
                EventKind::ExportJobResumed,
                json!({"reason": "pause_disabled", "record_key": halt.key, "seq": halt.seq}),
            ));
            run.commit(vec![ErrorWrite::Put(item)], events).await?;
            Ok(())
        }
        // Still failing transiently after the in-run retries: the halt stays, try again
        // at the next run.
        (Some(Fate::Transient(e, _)), None) => Err(Stop::Outcome(RunOutcome::RequestFailed {
            code: e.code,
            message: e.message,
        })),
        (Some(Fate::Unknown) | None, None) => Err(Stop::Outcome(RunOutcome::RequestFailed {
            code: "UNKNOWN".into(),
            message: "the probe's outcome is unknown".into(),
        })),
    }
}
