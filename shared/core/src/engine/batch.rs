//! Reading the next batch: the records after the cursor, one version per key (the newest
//! queued one); older versions are superseded and never sent.

use super::run::{Flow, Run};
use crate::domain::{Record, RecordKey, Seq};
use std::collections::{HashMap, HashSet};

/// The records after the cursor that one batch covers, in seq order.
pub(super) struct Window {
    pub records: Vec<Record>,
    /// `superseded[i]`: a newer version of `records[i]`'s key is queued.
    pub superseded: Vec<bool>,
}

impl Window {
    pub fn sendable(&self) -> Vec<Record> {
        self.records
            .iter()
            .zip(&self.superseded)
            .filter(|(_, s)| !**s)
            .map(|(r, _)| r.clone())
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
        self.read_window_from(self.state.cursor, limit, &HashSet::new())
            .await
    }

    /// Like [`Run::read_window`] from `after`, but ends just before a record whose key is
    /// in `busy` (in flight in another request: one key is never in two at once).
    pub async fn read_window_from(
        &self,
        after: Seq,
        limit: usize,
        busy: &HashSet<RecordKey>,
    ) -> Flow<Window> {
        let mut window = Window {
            records: Vec::new(),
            superseded: Vec::new(),
        };
        let mut after = after;
        let mut sendable = 0;
        // Key → position of its sendable version in the window. Pages are read at
        // different times, so a later page can hold a version newer than the one an
        // earlier page found to be the newest: that one is superseded after all.
        let mut position: HashMap<RecordKey, usize> = HashMap::new();
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
                if !superseded && busy.contains(&r.key) {
                    return Ok(window);
                }
                if !superseded {
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
                        return Ok(window);
                    }
                }
            }
            if !full || window.records.len() >= self.eng.config.max_window {
                break;
            }
        }
        Ok(window)
    }
}
