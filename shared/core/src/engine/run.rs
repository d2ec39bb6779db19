//! What every run shares: taking the lease, the job state held in memory, the gate in
//! front of every CRM request (budget, deadline, lease time), commits, events and the
//! clean stop.
//!
//! A run is split in two: [`RunCtx`] is what requests in flight share (the ports, the
//! lease, the counters), behind an `Arc` so they can go on while [`Run`] — the job state,
//! only ever changed by the sequential apply side — commits earlier batches.

use super::report::{RunCounts, RunKind, RunOutcome, RunReport};
use super::{Engine, EngineError, RunOptions};
use crate::domain::*;
use crate::ports::{Commit, CrmClient, ErrorWrite, Lease, StoreError, UpsertRequest};
use std::collections::HashMap;
use std::ops::Deref;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// Why a run leaves its normal path.
#[derive(Debug)]
pub(super) enum Stop {
    /// A planned stop with this outcome (deadline, budget, disabled, lease lost, ...).
    Outcome(RunOutcome),
    /// The CRM failed a request as a whole.
    Request(RequestFailure),
    /// A store failure: the run is abandoned, the next one starts over.
    Failed(EngineError),
}

impl From<StoreError> for Stop {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::LeaseLost => Stop::Outcome(RunOutcome::LeaseLost),
            other => Stop::Failed(EngineError::Store(other)),
        }
    }
}

pub(super) type Flow<T> = Result<T, Stop>;

pub(super) enum Start<'a> {
    Ready(Box<Run<'a>>),
    Finished(Box<RunReport>),
}

pub(super) struct Run<'a> {
    pub ctx: Arc<RunCtx<'a>>,
    pub state: JobState,
    pub settings: Settings,
    /// Key → seq of every open or parked ExportErrors item, kept current by `commit`.
    pub unresolved: HashMap<RecordKey, Seq>,
    /// Counts kept by the (sequential) apply side; the send side counts in `live`.
    pub counts: RunCounts,
    pub cursor_before: Seq,
    pub started_at: Timestamp,
}

impl<'a> Deref for Run<'a> {
    type Target = RunCtx<'a>;
    fn deref(&self) -> &RunCtx<'a> {
        &self.ctx
    }
}

/// What requests in flight share with the run that started them.
pub(super) struct RunCtx<'a> {
    pub eng: Engine<'a>,
    pub job: JobRef,
    pub def: JobDefinition,
    pub opts: RunOptions,
    pub kind: RunKind,
    /// Lease, usage and send counters; never locked across an await.
    live: Mutex<Live>,
    /// Set while one request renews the leases, so concurrent ones do not all renew.
    renewing: AtomicBool,
    /// Held while the budget is read, so requests going out together read it once.
    budget_read: tokio::sync::Mutex<()>,
}

struct Live {
    lease: Lease,
    /// The tenant request slots this run holds (at least one).
    slots: Vec<(JobRef, Lease)>,
    org_usage: Option<ApiUsage>,
    /// The longest CRM call so far: a call is not started when one as long would not end
    /// before the deadline.
    slowest_call: Duration,
    sent: u64,
    api_calls: u64,
    transient_retries: u64,
    split_requests: u64,
    /// This run's calls on their way to the tenant's budget.
    unstored: Unstored,
    /// The settings the request side needs, as of the last read.
    limits: Limits,
    /// Requests that passed the budget check and are not answered yet: they count.
    reserved: u64,
    budget: Option<BudgetView>,
    /// Readings taken so far.
    budget_reads: u64,
    /// The most slots this run may hold (its fair share of the tenant's window).
    slot_share: u32,
    slots_to_try: SlotCursor,
}

/// What the request side (budget, slots) needs of the settings.
#[derive(Clone, Copy)]
struct Limits {
    daily_api_limit: u64,
    /// `max_in_flight`: how many requests the tenant's runs keep out together.
    window: u32,
}

impl From<&Settings> for Limits {
    fn from(s: &Settings) -> Self {
        Self {
            daily_api_limit: s.daily_api_limit,
            window: s.max_in_flight.max(1),
        }
    }
}

/// The tenant's slots `next..end` this run has not tried yet; each is tried once per run.
#[derive(Clone, Copy)]
struct SlotCursor {
    next: u32,
    end: u32,
}

/// The tenant's API budget as last read, so that a request does not cost a store read.
#[derive(Clone, Copy)]
struct BudgetView {
    /// `api_calls_last_24h` as read.
    used: u64,
    /// This run's calls surely in the store when the read started: every call after them
    /// is added to `used` (calls whose commit was under way may count twice: erring high).
    flushed_before: u64,
    /// This run's calls at the read, to re-read after `budget_reread_calls` more.
    calls_at_read: u64,
    /// What was left of the limit at the read: the run reads again after a share of it
    /// (split over the tenant's window), so the tenant's runs together cannot spend it
    /// all between two reads.
    headroom: u64,
    read_at: Timestamp,
}

/// A run's calls not surely in the tenant's budget yet.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Unstored {
    /// Made and not sent to the store yet: they go with the next commit.
    waiting: u64,
    /// On their way (a commit or flush not answered yet): a budget read may or may not
    /// see them, so they do not count as stored.
    sending: u64,
}

impl Unstored {
    fn add(&mut self, calls: u64) {
        self.waiting += calls;
    }

    /// Takes the waiting calls, to send them to the store.
    fn take(&mut self) -> u64 {
        let calls = std::mem::take(&mut self.waiting);
        self.sending += calls;
        calls
    }

    /// The write carrying `calls` was answered: stored, or they wait for the next one.
    fn answered(&mut self, calls: u64, stored: bool) {
        self.sending -= calls;
        if !stored {
            self.waiting += calls;
        }
    }

    fn total(&self) -> u64 {
        self.waiting + self.sending
    }
}

impl Live {
    /// This run's calls that are surely in the store.
    fn stored_calls(&self) -> u64 {
        self.api_calls - self.unstored.total()
    }

    /// The tenant's count as this run sees it: the last reading plus this run's calls
    /// since (not the ones in flight: see `reserved`).
    fn budget_used(&self) -> Option<u64> {
        self.budget
            .map(|b| b.used + self.api_calls.saturating_sub(b.flushed_before))
    }
}

impl<'a> Run<'a> {
    pub async fn start(
        eng: &Engine<'a>,
        job: &JobRef,
        opts: &RunOptions,
        kind: RunKind,
    ) -> Result<Start<'a>, EngineError> {
        let started_at = eng.clock.now();
        publish_pending(eng, &job.tenant).await;
        let finished = |outcome| {
            Start::Finished(Box::new(RunReport {
                run_id: opts.run_id.clone(),
                kind,
                job: job.clone(),
                outcome,
                counts: RunCounts::default(),
                cursor_before: 0,
                cursor_after: 0,
                started_at,
                finished_at: eng.clock.now(),
            }))
        };
        let settings = load_settings(eng, &job.tenant).await?;
        if !settings.export_to_crm {
            return Ok(finished(RunOutcome::Disabled));
        }
        let def = eng
            .store
            .get_job(&job.tenant, &job.job)
            .await?
            .ok_or_else(|| EngineError::UnknownJob(job.clone()))?;
        let Some(lease) = eng
            .store
            .acquire_lease(
                job,
                &opts.run_id,
                eng.clock.now(),
                eng.config.lease_duration,
            )
            .await?
        else {
            return Ok(finished(RunOutcome::AlreadyRunning));
        };
        // The tenant's request slots: all its jobs together keep at most `max_in_flight`
        // requests in flight, whichever process runs them.
        // A run takes its fair share of them, so the tenant's other jobs can run alongside.
        let window = settings.max_in_flight.max(1);
        let jobs = eng
            .store
            .list_jobs(&job.tenant)
            .await
            .map(|j| j.len().max(1) as u32);
        let share = match jobs {
            Ok(n) => window.div_ceil(n),
            Err(e) => {
                release_all(eng, job, &lease, &[]).await;
                return Err(e.into());
            }
        };
        // One slot to begin with; the pipeline takes more as it fills (`grow_slots`), so a
        // run with little to send does not take (and write) the whole share.
        let mut slots_to_try = SlotCursor {
            next: 0,
            end: window,
        };
        let slots: Vec<_> = match take_next_slot(eng, job, &opts.run_id, &mut slots_to_try).await {
            Ok(taken) => taken.into_iter().collect(),
            Err(e) => {
                release_all(eng, job, &lease, &[]).await;
                return Err(e.into());
            }
        };
        if slots.is_empty() {
            release_all(eng, job, &lease, &slots).await;
            return Ok(finished(RunOutcome::TenantBusy));
        }
        let loaded = async {
            let state = eng.store.load_state(job).await?;
            let unresolved = eng.store.unresolved_errors(job).await?;
            Ok::<_, StoreError>((state, unresolved))
        }
        .await;
        let (state, unresolved) = match loaded {
            Ok(v) => v,
            Err(e) => {
                release_all(eng, job, &lease, &slots).await;
                return Err(e.into());
            }
        };
        tracing::info!(tenant = %job.tenant, job = %job.job, run_id = %opts.run_id, kind = ?kind, cursor = state.cursor, "run started");
        Ok(Start::Ready(Box::new(Run {
            ctx: Arc::new(RunCtx {
                eng: *eng,
                job: job.clone(),
                def,
                opts: opts.clone(),
                kind,
                live: Mutex::new(Live {
                    lease,
                    slots,
                    org_usage: None,
                    slowest_call: Duration::ZERO,
                    sent: 0,
                    api_calls: 0,
                    transient_retries: 0,
                    split_requests: 0,
                    unstored: Unstored::default(),
                    limits: Limits::from(&settings),
                    reserved: 0,
                    budget: None,
                    budget_reads: 0,
                    slot_share: share,
                    slots_to_try,
                }),
                renewing: AtomicBool::new(false),
                budget_read: tokio::sync::Mutex::new(()),
            }),
            cursor_before: state.cursor,
            state,
            settings,
            unresolved,
            counts: RunCounts::default(),
            started_at,
        })))
    }

    /// Counts so far, send side included.
    pub fn counts(&self) -> RunCounts {
        let live = self.live();
        RunCounts {
            sent: live.sent,
            api_calls: live.api_calls,
            transient_retries: live.transient_retries,
            split_requests: live.split_requests,
            ..self.counts.clone()
        }
    }

    /// Re-reads the settings (a change takes effect at the next batch). `Disabled` when
    /// exporting was turned off meanwhile.
    pub async fn reload_settings(&mut self) -> Flow<()> {
        self.settings = load_settings(&self.eng, &self.job.tenant)
            .await
            .map_err(Stop::Failed)?;
        if !self.settings.export_to_crm {
            return Err(Stop::Outcome(RunOutcome::Disabled));
        }
        self.live().limits = Limits::from(&self.settings);
        Ok(())
    }

    /// How many requests this run may have in flight: its slots, within the setting.
    pub fn width(&self) -> usize {
        self.live()
            .slots
            .len()
            .min(self.settings.max_in_flight.max(1) as usize)
    }

    /// Takes one more of the tenant's request slots if the run's share and the setting
    /// allow it and one is free; true when the window grew.
    pub async fn grow_slots(&self) -> Flow<bool> {
        let (mut to_try, room) = {
            let live = self.live();
            let cap = live.slot_share.min(live.limits.window) as usize;
            (live.slots_to_try, live.slots.len() < cap)
        };
        if !room {
            return Ok(false);
        }
        let taken = take_next_slot(&self.eng, &self.job, &self.opts.run_id, &mut to_try).await;
        let mut live = self.live();
        live.slots_to_try = to_try;
        match taken? {
            Some(slot) => {
                live.slots.push(slot);
                Ok(true)
            }
            None => Ok(false),
        }
    }
}

/// Whether a count is within `share` of the limit, where every request reads it again.
fn near_limit(limit: u64, share: f64) -> impl Fn(u64) -> bool {
    move |used| used as f64 >= limit as f64 * (1.0 - share)
}

/// Takes the first free one of the tenant's request slots not tried yet, if any.
async fn take_next_slot(
    eng: &Engine<'_>,
    job: &JobRef,
    owner: &RunId,
    to_try: &mut SlotCursor,
) -> Result<Option<(JobRef, Lease)>, StoreError> {
    while to_try.next < to_try.end {
        let slot = JobRef::new(job.tenant.clone(), JobId::tenant_slot(to_try.next));
        to_try.next += 1;
        let lease = eng
            .store
            .acquire_lease(&slot, owner, eng.clock.now(), eng.config.lease_duration)
            .await?;
        if let Some(l) = lease {
            return Ok(Some((slot, l)));
        }
    }
    Ok(None)
}

impl RunCtx<'_> {
    pub fn now(&self) -> Timestamp {
        self.eng.clock.now()
    }

    fn live(&self) -> MutexGuard<'_, Live> {
        self.live.lock().expect("run state lock")
    }

    pub fn lease(&self) -> Lease {
        self.live().lease.clone()
    }

    pub fn count_transient_retries(&self, n: u64) {
        self.live().transient_retries += n;
    }

    pub fn count_split_requests(&self, n: u64) {
        self.live().split_requests += n;
    }

    fn margin(&self) -> chrono::Duration {
        to_chrono(self.eng.config.safety_margin)
    }

    /// Stops before the deadline with room for one more request and its commit.
    pub fn check_deadline(&self) -> Flow<()> {
        let need = self.margin()
            + to_chrono(
                self.eng
                    .config
                    .min_request_timeout
                    .max(self.live().slowest_call),
            );
        let stopped = self.opts.stop.load(std::sync::atomic::Ordering::SeqCst);
        if stopped || self.now() + need >= self.opts.deadline {
            return Err(Stop::Outcome(RunOutcome::DeadlineReached));
        }
        Ok(())
    }

    pub async fn renew_lease(&self) -> Flow<()> {
        let (current, slots) = {
            let live = self.live();
            (live.lease.clone(), live.slots.clone())
        };
        let now = self.now();
        let d = self.eng.config.lease_duration;
        let renewed = self
            .eng
            .store
            .renew_lease(&self.job, &current, now, d)
            .await?;
        let mut kept = Vec::with_capacity(slots.len());
        for (slot, lease) in slots {
            match self.eng.store.renew_lease(&slot, &lease, now, d).await {
                Ok(l) => kept.push((slot, l)),
                // An expired slot went to another run: this run narrows its window.
                Err(StoreError::LeaseLost) => {}
                Err(e) => return Err(e.into()),
            }
        }
        if kept.is_empty() {
            return Err(Stop::Outcome(RunOutcome::LeaseLost));
        }
        // A commit may have extended the job lease meanwhile: keep the later expiry.
        let mut live = self.live();
        if renewed.expires_at > live.lease.expires_at {
            live.lease = renewed;
        }
        live.slots = kept;
        Ok(())
    }

    /// Time left on the shortest of the job lease and the slot leases.
    fn lease_time_left(&self) -> Duration {
        let now = self.now();
        let live = self.live();
        live.slots
            .iter()
            .map(|(_, l)| l.time_left(now))
            .fold(live.lease.time_left(now), Duration::min)
    }

    /// The timeout of the next request: never past the lease (so no write of ours can land
    /// after another runner took over) nor the deadline.
    async fn request_timeout(&self) -> Flow<Duration> {
        let cfg = self.eng.config;
        let mut left = self.lease_time_left().saturating_sub(cfg.safety_margin);
        // Commits extend the job lease; the slot leases are renewed here, once they could
        // cut a request short. One request renews while the others go on with what is left.
        if left < cfg.request_timeout && !self.renewing.swap(true, Ordering::SeqCst) {
            let renewed = self.renew_lease().await;
            self.renewing.store(false, Ordering::SeqCst);
            renewed?;
            left = self.lease_time_left().saturating_sub(cfg.safety_margin);
        }
        let until_deadline = (self.opts.deadline - self.now())
            .to_std()
            .unwrap_or(Duration::ZERO)
            .saturating_sub(cfg.safety_margin);
        let timeout = cfg.request_timeout.min(left).min(until_deadline);
        if timeout < cfg.min_request_timeout {
            return Err(Stop::Outcome(RunOutcome::DeadlineReached));
        }
        Ok(timeout)
    }

    /// Refuses a request the API budget cannot pay for (SPEC §4.7), and otherwise counts
    /// it as reserved until its answer is accounted. The tenant's count is read from the
    /// store at the start and again after `budget_reread_calls` calls of this run, after
    /// `budget_reread_interval`, after 1/`max_in_flight` of what was left at the last read
    /// (so the tenant's runs together cannot spend it all between two reads), and before
    /// every request once within `budget_reread_share` of the limit; in between, this
    /// run's own calls, answered or in flight, are added to the last reading.
    async fn check_budget(&self) -> Flow<()> {
        let cfg = self.eng.config;
        let now = self.now();
        let (limits, fresh, reads) = {
            let live = self.live();
            let near = near_limit(live.limits.daily_api_limit, cfg.budget_reread_share);
            let fresh = live.budget.is_some_and(|b| {
                let every = cfg
                    .budget_reread_calls
                    .min((b.headroom / u64::from(live.limits.window)).max(1));
                live.budget_used().is_some_and(|used| !near(used))
                    && live.api_calls.saturating_sub(b.calls_at_read) < every
                    && now - b.read_at < to_chrono(cfg.budget_reread_interval)
            });
            (live.limits, fresh, live.budget_reads)
        };
        if !fresh {
            self.read_budget(reads).await?;
        }
        if let Some(u) = self.live().org_usage {
            if u.below(self.eng.config.org_allocation_floor) {
                return Err(Stop::Outcome(RunOutcome::BudgetExhausted {
                    code: "org_allocation_low".into(),
                }));
            }
        }
        // Decided under the lock, with the requests already out: the run's concurrent
        // requests cannot all pass on the same count.
        let mut live = self.live();
        let used = live.budget_used().unwrap_or(0) + live.reserved;
        if used >= limits.daily_api_limit {
            return Err(Stop::Outcome(RunOutcome::BudgetExhausted {
                code: "daily_api_limit".into(),
            }));
        }
        live.reserved += 1;
        Ok(())
    }

    /// Reads the tenant's count, once for requests going out together: one that waited
    /// while another read it (`reads` is the number of reads it saw) uses that reading,
    /// unless the count is near the limit, where every request reads.
    async fn read_budget(&self, reads: u64) -> Flow<()> {
        let _reading = self.budget_read.lock().await;
        let (total, flushed) = {
            let live = self.live();
            let near = near_limit(
                live.limits.daily_api_limit,
                self.eng.config.budget_reread_share,
            );
            if live.budget_reads != reads && live.budget_used().is_some_and(|u| !near(u)) {
                return Ok(());
            }
            (live.api_calls, live.stored_calls())
        };
        let now = self.now();
        let used = self
            .eng
            .store
            .api_calls_last_24h(&self.job.tenant, now)
            .await?;
        let mut live = self.live();
        live.budget_reads += 1;
        live.budget = Some(BudgetView {
            used,
            flushed_before: flushed,
            calls_at_read: total,
            headroom: live
                .limits
                .daily_api_limit
                .saturating_sub(used + live.reserved),
            read_at: now,
        });
        Ok(())
    }

    /// Passes a request through the budget, deadline and lease gate: `Ok` with its
    /// timeout, and the request counted as reserved until `account` takes its answer.
    async fn admit(&self) -> Flow<Duration> {
        self.check_budget().await?;
        self.request_timeout().await.inspect_err(|_| {
            let mut live = self.live();
            live.reserved = live.reserved.saturating_sub(1);
        })
    }

    /// Counts an answered request's calls; they reach the tenant's budget with the next
    /// commit, or at once near the limit, where the tenant's other runs must see them.
    async fn account(&self, api_calls: u32, usage: Option<ApiUsage>) {
        let near = {
            let mut live = self.live();
            live.reserved = live.reserved.saturating_sub(1);
            live.api_calls += u64::from(api_calls);
            live.unstored.add(u64::from(api_calls));
            if usage.is_some() {
                live.org_usage = usage;
            }
            let near = near_limit(
                live.limits.daily_api_limit,
                self.eng.config.budget_reread_share,
            );
            live.budget_used().is_some_and(near)
        };
        if near {
            self.flush_api_calls().await;
        }
    }

    /// Adds the calls no commit carried to the budget (a run ending without a commit).
    async fn flush_api_calls(&self) {
        let calls = self.live().unstored.take();
        if calls == 0 {
            return;
        }
        let added = self
            .eng
            .store
            .add_api_calls(&self.job.tenant, self.now(), calls)
            .await;
        if let Err(e) = &added {
            tracing::warn!(job = %self.job, error = %e, calls, "counting the run's API calls failed");
        }
        self.live().unstored.answered(calls, added.is_ok());
    }

    /// One upsert call, behind the budget, deadline and lease gate.
    pub async fn upsert(
        &self,
        records: &[&Record],
    ) -> Flow<Result<Vec<RecordOutcome>, RequestFailure>> {
        let timeout = self.admit().await?;
        let request = UpsertRequest {
            object: self.def.object.clone(),
            external_id_field: self.def.external_id_field.clone(),
            records: records
                .iter()
                .map(|r| self.def.to_crm_fields(&r.fields))
                .collect(),
            timeout,
        };
        self.live().sent += records.len() as u64;
        let crm: &dyn CrmClient = self.eng.crm;
        let started = self.now();
        let reply = crm.upsert(&request).await;
        let took = (self.now() - started).to_std().unwrap_or_default();
        {
            let mut live = self.live();
            live.slowest_call = live.slowest_call.max(took);
        }
        self.account(reply.api_calls, reply.usage).await;
        Ok(match reply.result {
            Ok(outcomes) if outcomes.len() != records.len() => Err(RequestFailure::new(
                RequestFailureKind::Unavailable,
                "BAD_RESPONSE",
                format!(
                    "the CRM returned {} outcomes for {} records",
                    outcomes.len(),
                    records.len()
                ),
            )),
            other => other,
        })
    }

    /// The connection probe of a blocked job with nothing to send.
    pub async fn check_connection(&self) -> Flow<Result<(), RequestFailure>> {
        let timeout = self.admit().await?;
        let reply = self.eng.crm.check_connection(timeout).await;
        self.account(reply.api_calls, reply.usage).await;
        Ok(reply.result)
    }

    pub fn event(&self, kind: EventKind, mut detail: serde_json::Value) -> Event {
        detail["run_id"] = serde_json::json!(self.opts.run_id);
        Event::for_job(kind, &self.job, self.now(), detail)
    }
}

impl Run<'_> {
    /// Commits the in-memory state with these item writes and events, under the lease;
    /// the same write extends the lease and counts the calls made since the last commit.
    pub async fn commit(&mut self, errors: Vec<ErrorWrite>, events: Vec<Event>) -> Flow<()> {
        let now = self.now();
        self.state.last_run_at = Some(now);
        let extension = self.eng.config.lease_duration;
        let api_calls = self.live().unstored.take();
        let commit = Commit {
            state: self.state.clone(),
            errors: errors.clone(),
            events,
            api_calls,
            lease_extension: Some(extension),
        };
        let lease = self.lease();
        let committed = self.eng.store.commit(&self.job, &lease, now, commit).await;
        self.live().unstored.answered(api_calls, committed.is_ok());
        committed?;
        {
            let until = now + to_chrono(extension);
            let mut live = self.live();
            if live.lease.token == lease.token && until > live.lease.expires_at {
                live.lease.expires_at = until;
            }
        }
        if let Some(o) = &self.opts.observer {
            o.batch_committed(&self.counts(), self.state.cursor);
        }
        for w in errors {
            match w {
                ErrorWrite::Put(item) => {
                    if item.status.is_unresolved() {
                        self.unresolved.insert(item.key, item.seq);
                    } else {
                        self.unresolved.remove(&item.key);
                    }
                }
                ErrorWrite::Resolve { key, by_seq, .. } => {
                    if self.unresolved.get(&key).is_some_and(|s| *s <= by_seq) {
                        self.unresolved.remove(&key);
                        self.counts.errors_resolved += 1;
                    }
                }
            }
        }
        Ok(())
    }

    /// Resolves the open item of an accepted key, if there is one to resolve.
    pub fn resolve_write(&self, key: &RecordKey, seq: Seq) -> Option<ErrorWrite> {
        self.unresolved
            .get(key)
            .filter(|s| **s <= seq)
            .map(|_| ErrorWrite::Resolve {
                key: key.clone(),
                by_seq: seq,
                at: self.now(),
            })
    }

    /// The ExportErrors item after `record` failed with `error` (a new failure episode
    /// starts fresh; a repeat counts one more attempt).
    pub async fn failed_item(
        &self,
        record: &Record,
        error: &RecordError,
        from_retry: bool,
    ) -> Flow<ExportErrorItem> {
        let now = self.now();
        let existing = if self.unresolved.contains_key(&record.key) {
            self.eng.store.get_error(&self.job, &record.key).await?
        } else {
            None
        };
        Ok(match existing {
            Some(mut item) if item.status.is_unresolved() && item.seq <= record.seq => {
                if item.seq != record.seq {
                    item.seq = record.seq;
                    item.fields = record.fields.clone();
                    item.retry_attempts = 0;
                    item.status = ErrorStatus::Open;
                }
                item.error = error.clone();
                item.attempts += 1;
                if from_retry {
                    item.retry_attempts += 1;
                    if item.retry_attempts >= self.settings.max_retry_attempts {
                        item.status = ErrorStatus::Parked;
                    }
                }
                item.last_seen = now;
                item.last_attempt_at = now;
                item
            }
            _ => ExportErrorItem {
                key: record.key.clone(),
                seq: record.seq,
                fields: record.fields.clone(),
                error: error.clone(),
                status: ErrorStatus::Open,
                attempts: 1,
                retry_attempts: 0,
                first_seen: now,
                last_seen: now,
                last_attempt_at: now,
                resolved_at: None,
                resolved_by_seq: None,
            },
        })
    }

    /// Ends the run: records the run event with the final state, publishes what is
    /// pending, gives the lease back.
    pub async fn finish(mut self, mut outcome: RunOutcome) -> RunReport {
        if outcome != RunOutcome::LeaseLost {
            let (kind, detail) = match &outcome {
                RunOutcome::RequestFailed { code, message } => (
                    EventKind::ExportRunFailed,
                    serde_json::json!({"run_kind": self.kind, "code": code, "message": message, "counts": self.counts()}),
                ),
                _ if self.kind == RunKind::Retry => (
                    EventKind::ExportErrorsRetried,
                    serde_json::json!({"outcome": outcome, "counts": self.counts()}),
                ),
                _ => (
                    EventKind::ExportRunCompleted,
                    serde_json::json!({"outcome": outcome, "counts": self.counts(), "cursor": self.state.cursor}),
                ),
            };
            let event = self.event(kind, detail);
            match self.commit(Vec::new(), vec![event]).await {
                Ok(()) => {}
                Err(Stop::Outcome(RunOutcome::LeaseLost)) => outcome = RunOutcome::LeaseLost,
                Err(e) => tracing::warn!(job = %self.job, error = ?e, "final commit failed"),
            }
            publish_pending(&self.eng, &self.job.tenant).await;
            let (lease, slots) = {
                let live = self.live();
                (live.lease.clone(), live.slots.clone())
            };
            release_all(&self.eng, &self.job, &lease, &slots).await;
        }
        // Calls no commit carried (the last one failed, or the lease was lost) still count.
        self.flush_api_calls().await;
        let report = RunReport {
            run_id: self.opts.run_id.clone(),
            kind: self.kind,
            job: self.job.clone(),
            outcome,
            counts: self.counts(),
            cursor_before: self.cursor_before,
            cursor_after: self.state.cursor,
            started_at: self.started_at,
            finished_at: self.now(),
        };
        tracing::info!(
            tenant = %self.job.tenant, job = %self.job.job, run_id = %self.opts.run_id,
            outcome = report.outcome.name(), sent = report.counts.sent, accepted = report.counts.accepted,
            record_errors = report.counts.record_errors, api_calls = report.counts.api_calls,
            cursor = report.cursor_after, "run finished"
        );
        report
    }

    /// Gives the lease back after a store failure; nothing else can be trusted then.
    pub async fn abandon(self) {
        self.flush_api_calls().await;
        let (lease, slots) = {
            let live = self.live();
            (live.lease.clone(), live.slots.clone())
        };
        release_all(&self.eng, &self.job, &lease, &slots).await;
    }
}

/// Gives the job lease and the slots back; a failure only means they expire by themselves.
async fn release_all(eng: &Engine<'_>, job: &JobRef, lease: &Lease, slots: &[(JobRef, Lease)]) {
    for (slot, l) in slots {
        let _ = eng.store.release_lease(slot, l).await;
    }
    if let Err(e) = eng.store.release_lease(job, lease).await {
        tracing::warn!(%job, error = %e, "releasing the lease failed; it expires by itself");
    }
}

pub(super) async fn load_settings(
    eng: &Engine<'_>,
    tenant: &TenantId,
) -> Result<Settings, EngineError> {
    Ok(eng
        .store
        .get_settings(tenant)
        .await?
        .map(|v| v.settings)
        .unwrap_or_default())
}

/// Publishes the outbox (at least once: a crash before it is marked republishes).
pub(super) async fn publish_pending(eng: &Engine<'_>, tenant: &TenantId) {
    super::publish_outbox(eng.store, eng.events, tenant).await;
}

pub(super) fn to_chrono(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

#[cfg(test)]
mod tests {
    use super::Unstored;

    #[test]
    fn calls_on_their_way_to_the_store_do_not_count_as_stored() {
        let mut u = Unstored::default();
        u.add(5);
        assert_eq!(u.take(), 5);
        // A budget read now must not take the 5 as stored: its read may miss them.
        assert_eq!(u.total(), 5);
        u.add(2);
        u.answered(5, true);
        assert_eq!(u.total(), 2);
        assert_eq!(u.take(), 2);
        u.answered(2, false);
        assert_eq!(
            u,
            Unstored {
                waiting: 2,
                sending: 0
            },
            "a failed write's calls wait again"
        );
    }
}
