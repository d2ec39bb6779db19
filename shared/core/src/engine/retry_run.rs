//! The ExportError retry run (SPEC §5): re-send the stored failed versions, oldest last
//! attempt first, under the job's lease.

use super::batch::one_spelling_each;
use super::export_run::{detect_block, request_stop, set_block};
use super::report::{RunKind, RunOutcome, RunReport};
use super::run::{Flow, Run, Start, Stop};
use super::send::Fate;
use super::{Engine, EngineError, RunOptions};
use crate::domain::*;
use crate::ports::ErrorWrite;

pub(super) async fn run(
    eng: &Engine<'_>,
    job: &JobRef,
    opts: &RunOptions,
) -> Result<RunReport, EngineError> {
    let mut run = match Run::start(eng, job, opts, RunKind::Retry).await? {
        Start::Ready(run) => run,
        Start::Finished(report) => return Ok(*report),
    };
    let result = async {
        if let Some(b) = &run.state.block {
            // A blocked job's open items would fail alike; the export run probes the block.
            return Ok(RunOutcome::Blocked {
                reason: b.reason,
                code: b.code.clone(),
            });
        }
        let before = run.now();
        if pass(&mut run, before).await? {
            run.state.last_retry_completed_at = Some(run.now());
        }
        Ok(RunOutcome::Completed)
    }
    .await;
    match result {
        Ok(outcome) | Err(Stop::Outcome(outcome)) => Ok(run.finish(outcome).await),
        Err(Stop::Request(f)) => Ok(run
            .finish(RunOutcome::RequestFailed {
                code: f.code,
                message: f.message,
            })
            .await),
        Err(Stop::Failed(e)) => {
            run.abandon().await;
            Err(e)
        }
    }
}

/// One pass over the open items last attempted before `before`. Returns true when it got
/// through all of them.
pub(super) async fn pass(run: &mut Run<'_>, before: Timestamp) -> Flow<bool> {
    let mut after: Option<(Timestamp, RecordKey)> = None;
    let mut first = true;
    loop {
        run.check_deadline()?;
        if !first {
            // Commits extend the lease; the settings are read again before every batch.
            run.reload_settings().await?;
        }
        first = false;
        let limit = run.settings.batch_size.get();
        let items = run
            .eng
            .store
            .open_errors_for_retry(&run.job, before, after.clone(), limit)
            .await?;
        let Some(last) = items.last() else {
            return Ok(true);
        };
        after = Some((last.last_attempt_at, last.key.clone()));
        let keys: Vec<RecordKey> = items.iter().map(|i| i.key.clone()).collect();
        let latest = run.eng.store.latest_seqs(&run.job, &keys).await?;
        let halted_key = run.state.halt.as_ref().map(|h| h.key.clone());
        let mut records = Vec::new();
        for item in items {
            // Never re-send a version older than one queued after it (it would overwrite
            // newer data); the halted record is left to the export run's probe.
            let newer_queued = latest.get(&item.key).is_some_and(|s| *s > item.seq);
            if newer_queued || halted_key.as_ref() == Some(&item.key) {
                run.counts.errors_skipped += 1;
                continue;
            }
            records.push(Record {
                seq: item.seq,
                key: item.key,
                fields: item.fields,
                enqueued_at: item.first_seen,
            });
        }
        if records.is_empty() {
            continue;
        }
        // Two spellings of a key (a job that treats them as two) never go in one request.
        for part in one_spelling_each(records) {
            retry_batch(run, &part).await?;
        }
    }
}

/// Sends one batch of stored failed versions and records what became of each.
async fn retry_batch(run: &mut Run<'_>, records: &[Record]) -> Flow<()> {
    let sent = run.send_records(records, false).await;
    run.counts.batches += 1;
    let mut events = Vec::new();
    if let Some((reason, example)) = detect_block(&sent.fates, run.eng.config) {
        // An org-wide cause: attempts are not counted against the items.
        set_block(run, reason, &example, &mut events);
        run.commit(Vec::new(), events).await?;
        return Err(Stop::Outcome(RunOutcome::Blocked {
            reason,
            code: example.code,
        }));
    }
    let mut writes = Vec::new();
    for (rec, fate) in records.iter().zip(&sent.fates) {
        match fate {
            Fate::Accepted => {
                run.counts.accepted += 1;
                writes.push(ErrorWrite::Resolve {
                    key: rec.key.clone(),
                    by_seq: rec.seq,
                    at: run.now(),
                });
            }
            Fate::Rejected(err, _) => {
                run.counts.record_errors += 1;
                let item = run.failed_item(rec, err, true).await?;
                if item.status == ErrorStatus::Parked {
                    run.counts.errors_parked += 1;
                }
                writes.push(ErrorWrite::Put(item));
            }
            Fate::Transient(..) | Fate::Unknown => {}
        }
    }
    match sent.stop {
        None => run.commit(writes, events).await,
        Some(Stop::Request(f)) => {
            let outcome = request_stop(run, f, &mut events, false);
            run.commit(writes, events).await?;
            Err(Stop::Outcome(outcome))
        }
        Some(stop) => {
            run.commit(writes, events).await?;
            Err(stop)
        }
    }
}
