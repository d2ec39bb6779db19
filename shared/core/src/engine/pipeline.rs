//! Batches in flight: up to the run's window of requests go out at once, a new one starts
//! as soon as any finishes, and their outcomes are handed back strictly in seq order, so
//! the cursor only moves past final outcomes (SPEC §4.4–4.6). One key is never in two
//! requests at once: a window ends before a record whose key is in flight.

use super::batch::{BusyKeys, Window, WindowEnd};
use super::run::RunCtx;
use super::send::{Fate, Sent};
use crate::domain::{Record, RejectKind, Seq};
use futures::stream::{FuturesUnordered, StreamExt};
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

type InFlight<'a> = Pin<Box<dyn Future<Output = (u64, Vec<Record>, Sent)> + Send + 'a>>;

/// One batch, from its read to the moment its outcome is applied.
struct Batch {
    window: Window,
    /// The records sent (one version per key), in seq order; with the request while it
    /// is in flight.
    sendable: Vec<Record>,
    answer: Answer,
}

/// Where a batch's request stands.
enum Answer {
    InFlight,
    /// Every record of the window was superseded: finished at once, with no request.
    NothingToSend,
    Sent(Sent),
}

/// A batch whose request is over, handed out in seq order to be applied.
pub(super) struct Finished {
    pub window: Window,
    pub sendable: Vec<Record>,
    /// `None` when the window had nothing to send.
    pub sent: Option<Sent>,
}

pub(super) struct Pipeline<'a> {
    /// Batches not applied yet, oldest first; `queue[0]` has index `head`.
    queue: VecDeque<Batch>,
    head: u64,
    in_flight: FuturesUnordered<InFlight<'a>>,
    busy: BusyKeys,
    /// The last seq read: the next window starts after it.
    pub read_pos: Seq,
    /// Why the last read ended: at the queue's end nothing more is read in this run; cut
    /// short by a key in flight, reading goes on once a request finishes.
    last_end: Option<WindowEnd>,
    /// No new batch starts until the batch with this index is applied: its fates may stop
    /// the run, and requests started meanwhile would be wasted.
    hold_until: Option<u64>,
    pub started: u64,
}

impl<'a> Pipeline<'a> {
    pub fn new(cursor: Seq) -> Self {
        Self {
            queue: VecDeque::new(),
            head: 0,
            in_flight: FuturesUnordered::new(),
            busy: BusyKeys::default(),
            read_pos: cursor,
            last_end: None,
            hold_until: None,
            started: 0,
        }
    }

    pub fn busy(&self) -> &BusyKeys {
        &self.busy
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Nothing read and not yet applied.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Whether another window may be read and sent now.
    pub fn may_start(&self, width: usize) -> bool {
        self.in_flight.len() < width.max(1)
            && self.hold_until.is_none()
            && !matches!(self.last_end, Some(WindowEnd::Busy | WindowEnd::QueueEnd))
    }

    /// The read found the queue's end (the run has caught up once everything in flight is
    /// applied) or only a key in flight (reading goes on when a request finishes).
    pub fn note_end(&mut self, end: WindowEnd) {
        self.last_end = Some(end);
    }

    /// Queues a window read after `read_pos`; its sendable records go out at once (through
    /// `ctx`, so the request goes on while earlier batches are applied). A batch that is
    /// narrowed down goes alone: the next starts once it is applied.
    pub fn start(&mut self, ctx: &Arc<RunCtx<'a>>, mut window: Window, narrow: bool) {
        let index = self.head + self.queue.len() as u64;
        if let Some(last) = window.last_seq() {
            self.read_pos = last;
        }
        self.last_end = match window.end {
            WindowEnd::Full | WindowEnd::ReadAhead => None,
            end => Some(end),
        };
        self.started += 1;
        let sendable = window.take_sendable();
        if sendable.is_empty() {
            self.queue.push_back(Batch {
                window,
                sendable,
                answer: Answer::NothingToSend,
            });
            return;
        }
        if narrow {
            self.hold_until = Some(index);
        }
        for r in &sendable {
            self.busy.insert(&r.key);
        }
        let ctx = Arc::clone(ctx);
        self.in_flight.push(Box::pin(async move {
            let sent = ctx.send_records(&sendable, narrow).await;
            (index, sendable, sent)
        }));
        self.queue.push_back(Batch {
            window,
            sendable: Vec::new(),
            answer: Answer::InFlight,
        });
    }

    /// Waits for the next request to finish (any of them) and records its fates. `pause`
    /// says whether a refused record will stop the run.
    pub async fn wait(&mut self, pause: bool, stops: impl Fn(&[Fate]) -> bool) {
        let Some((index, records, sent)) = self.in_flight.next().await else {
            return;
        };
        for r in &records {
            self.busy.remove(&r.key);
        }
        // Keys were freed: a read cut short by one can go on. The queue's end stays the
        // end for this run (the next run takes what producers queue meanwhile).
        if self.last_end == Some(WindowEnd::Busy) {
            self.last_end = None;
        }
        let may_stop = sent.stop.is_some()
            || stops(&sent.fates)
            || sent.fates.iter().any(|f| match f {
                Fate::Accepted => false,
                Fate::Rejected(_, kind) => pause || *kind == RejectKind::OrgWide,
                Fate::Transient(..) | Fate::Unknown => true,
            });
        if may_stop {
            self.hold_until = Some(self.hold_until.map_or(index, |h| h.min(index)));
        }
        let batch = &mut self.queue[(index - self.head) as usize];
        batch.sendable = records;
        batch.answer = Answer::Sent(sent);
    }

    /// The oldest batch, once its request has finished: applied strictly in order.
    pub fn pop_finished(&mut self) -> Option<Finished> {
        if matches!(self.queue.front()?.answer, Answer::InFlight) {
            return None;
        }
        let batch = self.queue.pop_front()?;
        if self.hold_until.is_some_and(|h| h <= self.head) {
            self.hold_until = None;
        }
        self.head += 1;
        Some(Finished {
            window: batch.window,
            sendable: batch.sendable,
            sent: match batch.answer {
                Answer::Sent(sent) => Some(sent),
                Answer::NothingToSend | Answer::InFlight => None,
            },
        })
    }

    /// Waits for every request still in flight and forgets their outcomes. A run never
    /// gives its lease back with a request out: the CRM could still apply it after a
    /// successor's.
    pub async fn drain(&mut self) {
        while self.in_flight.next().await.is_some() {}
        self.queue.clear();
    }
}
