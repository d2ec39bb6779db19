//! Reading the next batch: the records after the cursor, one version per key (the newest
//! queued one); older versions are superseded and never sent.

use super::run::{Flow, Run, RunCtx};
use crate::domain::{Record, RecordKey, Seq};
use std::collections::{HashMap, HashSet};

/// The records after the cursor that one batch covers, in seq order.
pub(super) struct Window {
    pub records: Vec<Record>,
    /// `superseded[i]`: a newer version of `records[i]`'s key is queued.
    pub superseded: Vec<bool>,
    pub end: WindowEnd,
}

/// Keys compared without case: two spellings of one key are never in flight together,
/// nor in one request, even in a job that treats them as two keys (if the CRM's
/// external-id field is case-insensitive after all, two requests would race for one
/// record, and one request would be refused as a duplicate).
#[derive(Default)]
pub(super) struct BusyKeys(HashSet<String>);

impl BusyKeys {
    fn fold(key: &RecordKey) -> String {
        key.as_str().to_lowercase()
    }
    pub fn insert(&mut self, key: &RecordKey) {
        self.0.insert(Self::fold(key));
    }
    pub fn remove(&mut self, key: &RecordKey) {
        self.0.remove(&Self::fold(key));
    }
    pub fn contains(&self, key: &RecordKey) -> bool {
        !self.0.is_empty() && self.0.contains(&Self::fold(key))
    }
}

/// Splits records into requests that hold one spelling of a key each: the k-th spelling
/// (by seq) of a key goes in the k-th request, so the newest is sent last.
pub(super) fn one_spelling_each(records: Vec<Record>) -> Vec<Vec<Record>> {
    let mut seqs: HashMap<String, Vec<Seq>> = HashMap::new();
    for r in &records {
        seqs.entry(BusyKeys::fold(&r.key)).or_default().push(r.seq);
    }
    for s in seqs.values_mut() {
        s.sort_unstable();
    }
    let mut rounds: Vec<Vec<Record>> = Vec::new();
    for r in records {
        let round = seqs[&BusyKeys::fold(&r.key)]
            .iter()
            .position(|s| *s == r.seq)
            .unwrap_or(0);
        if rounds.len() <= round {
            rounds.resize_with(round + 1, Vec::new);
        }
        rounds[round].push(r);
    }
    rounds
}

/// Why a window ends where it does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum WindowEnd {
    /// It holds as many sendable records as asked for.
    Full,
    /// Nothing more is queued (for now).
    QueueEnd,
    /// The next record's key is in flight in another request.
    Busy,
    /// The read-ahead bound was reached (many superseded records).
    ReadAhead,
}

impl Window {
    /// Moves the sendable records out, leaving their seq and key in place (what applying
    /// the batch's outcome needs of them), so a batch's records are not copied.
    pub fn take_sendable(&mut self) -> Vec<Record> {
        self.records
            .iter_mut()
            .zip(&self.superseded)
            .filter(|(_, s)| !**s)
            .map(|(r, _)| {
                let stub = Record {
                    seq: r.seq,
                    key: r.key.clone(),
                    fields: Default::default(),
                    enqueued_at: r.enqueued_at,
                };
                std::mem::replace(r, stub)
            })
            .collect()
    }
    pub fn last_seq(&self) -> Option<Seq> {
        self.records.last().map(|r| r.seq)
    }
}

impl Run<'_> {
    /// Reads records after the cursor until `limit` sendable ones are found, the queue
    /// ends, or the read-ahead bound is reached.
    pub async fn read_window(&self, limit: usize) -> Flow<Window> {
        self.read_window_from(self.state.cursor, limit, &BusyKeys::default())
            .await
    }
}

impl RunCtx<'_> {
    /// Like [`Run::read_window`] from `after`, but ends just before a record whose key is
    /// in `busy` (in flight in another request: one key is never in two at once) or is
    /// another spelling of a key the window already sends.
    pub async fn read_window_from(
        &self,
        after: Seq,
        limit: usize,
        busy: &BusyKeys,
    ) -> Flow<Window> {
        let mut window = Window {
            records: Vec::new(),
            superseded: Vec::new(),
            end: WindowEnd::QueueEnd,
        };
        let mut after = after;
        let mut sendable = 0;
        // Key → position of its sendable version in the window. Pages are read at
        // different times, so a later page can hold a version newer than the one an
        // earlier page found to be the newest: that one is superseded after all.
        let mut position: HashMap<RecordKey, usize> = HashMap::new();
        let mut spellings = BusyKeys::default();
        let page = limit.max(1);
        loop {
            let records = self.eng.store.read_after(&self.job, after, page).await?;
            let full = records.len() == page;
            if records.is_empty() {
                break;
            }
            let keys: Vec<_> = records.iter().map(|r| r.key.clone()).collect();
            let latest = self.eng.store.latest_seqs(&self.job, &keys).await?;
            for r in records {
                after = r.seq;
                let superseded = latest.get(&r.key).is_some_and(|s| *s > r.seq);
                let other_spelling = !position.contains_key(&r.key) && spellings.contains(&r.key);
                if !superseded && (busy.contains(&r.key) || other_spelling) {
                    // Once this window's request is over, the next window goes on from here.
                    window.end = WindowEnd::Busy;
                    return Ok(window);
                }
                if !superseded {
                    spellings.insert(&r.key);
                    if let Some(older) = position.insert(r.key.clone(), window.records.len()) {
                        window.superseded[older] = true;
                        sendable -= 1;
                    }
                }
                window.records.push(r);
                window.superseded.push(superseded);
                if !superseded {
                    sendable += 1;
                    if sendable == limit {
                        window.end = WindowEnd::Full;
                        return Ok(window);
                    }
                }
            }
            if !full {
                break;
            }
            if window.records.len() >= self.eng.config.max_window {
                window.end = WindowEnd::ReadAhead;
                break;
            }
        }
        Ok(window)
    }
}
