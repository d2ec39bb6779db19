//! Sending a set of records and learning each one's fate: in-run retries of transient
//! failures, and narrowing a request refused as a whole down to the record (SPEC §4.4–4.5).

use super::run::{Flow, RunCtx, Stop};
use crate::domain::*;
use futures_lite_box::BoxFuture;

/// What became of one record in this run.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Fate {
    Accepted,
    Rejected(RecordError, RejectKind),
    /// Still failing transiently after the in-run retries; `true` when smaller requests
    /// may help (a trigger's CPU-time limit).
    Transient(RecordError, bool),
    /// Not known: the request failed as a whole, or was never sent.
    Unknown,
}

pub(super) struct Sent {
    pub fates: Vec<Fate>,
    /// Why sending stopped early, if it did.
    pub stop: Option<Stop>,
}

mod futures_lite_box {
    pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;
}

impl RunCtx<'_> {
    /// Sends `records` (one version per key) and returns every record's fate. With
    /// `narrow_outages` a request failing as a whole for any transient reason is narrowed
    /// down like a content refusal (it kept failing at this place for several runs).
    pub async fn send_records(&self, records: &[Record], narrow_outages: bool) -> Sent {
        let mut fates = vec![Fate::Unknown; records.len()];
        let all: Vec<usize> = (0..records.len()).collect();
        if let Err(stop) = self
            .send_narrowing(records, all, &mut fates, narrow_outages)
            .await
        {
            return Sent {
                fates,
                stop: Some(stop),
            };
        }
        let stop = self
            .retry_transients(records, &mut fates, narrow_outages)
            .await
            .err();
        Sent { fates, stop }
    }

    async fn retry_transients(
        &self,
        records: &[Record],
        fates: &mut [Fate],
        narrow: bool,
    ) -> Flow<()> {
        let cfg = self.eng.config;
        let mut chunk = records.len().max(1);
        for attempt in 0..cfg.transient_retries {
            let pending: Vec<usize> = (0..fates.len())
                .filter(|i| matches!(fates[*i], Fate::Transient(..)))
                .collect();
            if pending.is_empty() {
                return Ok(());
            }
            let backoff = cfg.transient_backoff.saturating_mul(1 << attempt.min(3));
            if self.now() + super::run::to_chrono(backoff + cfg.safety_margin) >= self.opts.deadline
            {
                return Err(Stop::Outcome(super::RunOutcome::DeadlineReached));
            }
            self.eng.clock.sleep(backoff).await;
            // A trigger hitting its CPU-time limit passes in smaller batches.
            if pending
                .iter()
                .any(|i| matches!(fates[*i], Fate::Transient(_, true)))
            {
                chunk = (chunk / 2).max(1);
            }
            self.count_transient_retries(pending.len() as u64);
            for part in pending.chunks(chunk.min(pending.len()).max(1)) {
                self.send_narrowing(records, part.to_vec(), fates, narrow)
                    .await?;
            }
        }
        Ok(())
    }

    /// Sends the records at `idx`; on a whole-request refusal that may be about content,
    /// splits until the guilty record is found.
    fn send_narrowing<'s>(
        &'s self,
        records: &'s [Record],
        idx: Vec<usize>,
        fates: &'s mut [Fate],
        narrow: bool,
    ) -> BoxFuture<'s, Flow<()>> {
        Box::pin(async move {
            let reply = self
                .upsert(&idx.iter().map(|i| &records[*i]).collect::<Vec<_>>())
                .await?;
            match reply {
                Ok(outcomes) => {
                    self.assign(&idx, outcomes, fates);
                    Ok(())
                }
                Err(failure) => {
                    self.narrow_down(records, idx, failure, fates, narrow, false)
                        .await
                }
            }
        })
    }

    fn narrow_down<'s>(
        &'s self,
        records: &'s [Record],
        idx: Vec<usize>,
        failure: RequestFailure,
        fates: &'s mut [Fate],
        narrow: bool,
        split: bool,
    ) -> BoxFuture<'s, Flow<()>> {
        Box::pin(async move {
            if !splittable(&failure, narrow) {
                return Err(Stop::Request(failure));
            }
            if idx.len() == 1 {
                let mut failure = failure;
                if failure.kind != RequestFailureKind::ContentRefused {
                    if !split {
                        // A lone record failing like an outage says nothing about the
                        // record: only a sibling that went through does.
                        return Err(Stop::Request(failure));
                    }
                    // An outage pinned on one record is confirmed by a second try alone,
                    // so a passing outage is not recorded against a record.
                    match self.upsert(&[&records[idx[0]]]).await? {
                        Ok(outcomes) => {
                            self.assign(&idx, outcomes, fates);
                            return Ok(());
                        }
                        Err(again) if again.kind == failure.kind => failure = again,
                        Err(other) => return Err(Stop::Request(other)),
                    }
                }
                // Alone and still refused: this record is the cause.
                let error = RecordError::new(failure.code.clone(), failure.message.clone());
                fates[idx[0]] = Fate::Rejected(error, RejectKind::Data);
                return Ok(());
            }
            let (left, right) = idx.split_at(idx.len() / 2);
            let (left, right) = (left.to_vec(), right.to_vec());
            self.count_split_requests(2);
            let first = self
                .upsert(&left.iter().map(|i| &records[*i]).collect::<Vec<_>>())
                .await?;
            let second = self
                .upsert(&right.iter().map(|i| &records[*i]).collect::<Vec<_>>())
                .await?;
            if let (Err(a), Err(b)) = (&first, &second) {
                // Both halves refused alike: not about one record's content.
                if a.code == b.code && a.message == b.message {
                    return Err(Stop::Request(a.clone()));
                }
            }
            for (part, reply) in [(left, first), (right, second)] {
                match reply {
                    Ok(outcomes) => self.assign(&part, outcomes, fates),
                    Err(f) => {
                        self.narrow_down(records, part, f, fates, narrow, true)
                            .await?
                    }
                }
            }
            Ok(())
        })
    }

    fn assign(&self, idx: &[usize], outcomes: Vec<RecordOutcome>, fates: &mut [Fate]) {
        for (i, outcome) in idx.iter().zip(outcomes) {
            fates[*i] = match outcome {
                RecordOutcome::Accepted { .. } => Fate::Accepted,
                RecordOutcome::Rejected { error, kind } => Fate::Rejected(error, kind),
                RecordOutcome::Transient {
                    error,
                    retry_smaller,
                } => Fate::Transient(error, retry_smaller),
            };
        }
    }
}

fn splittable(f: &RequestFailure, narrow_outages: bool) -> bool {
    match f.kind {
        RequestFailureKind::ContentRefused => true,
        RequestFailureKind::Unavailable | RequestFailureKind::ConcurrencyLimit => narrow_outages,
        _ => false,
    }
}
