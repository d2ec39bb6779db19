//! An in-memory store for fast engine tests. Same semantics as the durable stores.

use super::pagination::{decode_token, encode_token};
use crate::domain::*;
use crate::ports::*;
use async_trait::async_trait;
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

#[derive(Default)]
struct JobData {
    records: BTreeMap<Seq, Record>,
    latest: HashMap<RecordKey, Seq>,
    state: JobState,
    lease: Option<Lease>,
    errors: BTreeMap<RecordKey, ExportErrorItem>,
}

#[derive(Default)]
struct TenantData {
    settings: Option<VersionedSettings>,
    history: Vec<SettingsChange>,
    jobs: BTreeMap<JobId, JobDefinition>,
    outbox: Vec<Event>,
    api_calls: BTreeMap<i64, u64>,
}

#[derive(Default)]
struct Inner {
    jobs: HashMap<JobRef, JobData>,
    tenants: BTreeMap<TenantId, TenantData>,
}

#[derive(Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// The lease currently recorded for a job (expired or not), for tests that watch who
    /// holds it.
    pub fn lease_of(&self, job: &JobRef) -> Option<Lease> {
        self.with(|i| i.jobs.get(job).and_then(|j| j.lease.clone()))
    }

    fn with<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> R {
        f(&mut self.inner.lock().expect("memory store lock"))
    }
}

fn holds(lease: &Option<Lease>, mine: &Lease, now: Timestamp) -> bool {
    matches!(lease, Some(l) if l.token == mine.token && l.expires_at > now)
}

/// Applies one ExportErrors write; shared by every store that keeps items as structs.
pub(crate) fn apply_error_write(errors: &mut BTreeMap<RecordKey, ExportErrorItem>, w: ErrorWrite) {
    match w {
        ErrorWrite::Put(item) => {
            errors.insert(item.key.clone(), item);
        }
        ErrorWrite::Resolve { key, by_seq, at } => {
            if let Some(item) = errors.get_mut(&key) {
                item.resolve(by_seq, at);
            }
        }
    }
}

fn lease_duration(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

#[async_trait]
impl ExportQueue for MemoryStore {
    async fn enqueue(
        &self,
        job: &JobRef,
        records: Vec<NewRecord>,
        now: Timestamp,
    ) -> Result<Vec<Seq>, StoreError> {
        Ok(self.with(|i| {
            let j = i.jobs.entry(job.clone()).or_default();
            let mut next = j.records.keys().next_back().copied().unwrap_or(0);
            let mut seqs = Vec::with_capacity(records.len());
            for r in records {
                next += 1;
                j.latest.insert(r.key.clone(), next);
                j.records.insert(
                    next,
                    Record {
                        seq: next,
                        key: r.key,
                        fields: r.fields,
                        enqueued_at: now,
                    },
                );
                seqs.push(next);
            }
            seqs
        }))
    }

    async fn read_after(
        &self,
        job: &JobRef,
        after: Seq,
        limit: usize,
    ) -> Result<Vec<Record>, StoreError> {
        Ok(self.with(|i| {
            i.jobs
                .get(job)
                .map(|j| {
                    j.records
                        .range(after + 1..)
                        .take(limit)
                        .map(|(_, r)| r.clone())
                        .collect()
                })
                .unwrap_or_default()
        }))
    }

    async fn get_record(&self, job: &JobRef, seq: Seq) -> Result<Option<Record>, StoreError> {
        Ok(self.with(|i| i.jobs.get(job).and_then(|j| j.records.get(&seq).cloned())))
    }

    async fn latest_seqs(
        &self,
        job: &JobRef,
        keys: &[RecordKey],
    ) -> Result<HashMap<RecordKey, Seq>, StoreError> {
        Ok(self.with(|i| {
            let mut out = HashMap::new();
            if let Some(j) = i.jobs.get(job) {
                for k in keys {
                    if let Some(s) = j.latest.get(k) {
                        out.insert(k.clone(), *s);
                    }
                }
            }
            out
        }))
    }

    async fn head(&self, job: &JobRef) -> Result<Seq, StoreError> {
        Ok(self.with(|i| {
            i.jobs
                .get(job)
                .and_then(|j| j.records.keys().next_back().copied())
                .unwrap_or(0)
        }))
    }
}

#[async_trait]
impl LeaseStore for MemoryStore {
    async fn acquire_lease(
        &self,
        job: &JobRef,
        owner: &RunId,
        now: Timestamp,
        duration: Duration,
    ) -> Result<Option<Lease>, StoreError> {
        Ok(self.with(|i| {
            let j = i.jobs.entry(job.clone()).or_default();
            if matches!(&j.lease, Some(l) if l.expires_at > now) {
                return None;
            }
            let lease = Lease {
                token: LeaseToken(uuid::Uuid::new_v4().to_string()),
                owner: owner.clone(),
                expires_at: now + lease_duration(duration),
            };
            j.lease = Some(lease.clone());
            Some(lease)
        }))
    }

    async fn renew_lease(
        &self,
        job: &JobRef,
        lease: &Lease,
        now: Timestamp,
        duration: Duration,
    ) -> Result<Lease, StoreError> {
        self.with(|i| {
            let j = i.jobs.entry(job.clone()).or_default();
            if !holds(&j.lease, lease, now) {
                return Err(StoreError::LeaseLost);
            }
            let renewed = Lease {
                expires_at: now + lease_duration(duration),
                ..lease.clone()
            };
            j.lease = Some(renewed.clone());
            Ok(renewed)
        })
    }

    async fn release_lease(&self, job: &JobRef, lease: &Lease) -> Result<(), StoreError> {
        self.with(|i| {
            if let Some(j) = i.jobs.get_mut(job) {
                if matches!(&j.lease, Some(l) if l.token == lease.token) {
                    j.lease = None;
                }
            }
        });
        Ok(())
    }
}

#[async_trait]
impl JobStateStore for MemoryStore {
    async fn load_state(&self, job: &JobRef) -> Result<JobState, StoreError> {
        Ok(self.with(|i| i.jobs.get(job).map(|j| j.state.clone()).unwrap_or_default()))
    }

    async fn commit(
        &self,
        job: &JobRef,
        lease: &Lease,
        now: Timestamp,
        commit: Commit,
    ) -> Result<(), StoreError> {
        self.with(|i| {
            let j = i.jobs.entry(job.clone()).or_default();
            if !holds(&j.lease, lease, now) {
                return Err(StoreError::LeaseLost);
            }
            j.state = commit.state;
            for w in commit.errors {
                apply_error_write(&mut j.errors, w);
            }
            if let (Some(d), Some(l)) = (commit.lease_extension, j.lease.as_mut()) {
                l.expires_at = now + lease_duration(d);
            }
            let t = i.tenants.entry(job.tenant.clone()).or_default();
            t.outbox.extend(commit.events);
            if commit.api_calls > 0 {
                *t.api_calls.entry(hour_bucket(now)).or_default() += commit.api_calls;
            }
            Ok(())
        })
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct ErrorPos(Timestamp, String);

#[async_trait]
impl ExportErrorStore for MemoryStore {
    async fn get_error(
        &self,
        job: &JobRef,
        key: &RecordKey,
    ) -> Result<Option<ExportErrorItem>, StoreError> {
        Ok(self.with(|i| i.jobs.get(job).and_then(|j| j.errors.get(key).cloned())))
    }

    async fn unresolved_errors(&self, job: &JobRef) -> Result<HashMap<RecordKey, Seq>, StoreError> {
        Ok(self.with(|i| {
            i.jobs
                .get(job)
                .map(|j| {
                    j.errors
                        .values()
                        .filter(|e| e.status.is_unresolved())
                        .map(|e| (e.key.clone(), e.seq))
                        .collect()
                })
                .unwrap_or_default()
        }))
    }

    async fn open_errors_for_retry(
        &self,
        job: &JobRef,
        before: Timestamp,
        after: Option<(Timestamp, RecordKey)>,
        limit: usize,
    ) -> Result<Vec<ExportErrorItem>, StoreError> {
        Ok(self.with(|i| {
            let Some(j) = i.jobs.get(job) else {
                return Vec::new();
            };
            let mut items: Vec<_> = j
                .errors
                .values()
                .filter(|e| e.status == ErrorStatus::Open && e.last_attempt_at < before)
                .filter(|e| match &after {
                    Some((t, k)) => (e.last_attempt_at, &e.key) > (*t, k),
                    None => true,
                })
                .cloned()
                .collect();
            items.sort_by(|a, b| (a.last_attempt_at, &a.key).cmp(&(b.last_attempt_at, &b.key)));
            items.truncate(limit);
            items
        }))
    }

    async fn list_errors(
        &self,
        job: &JobRef,
        filter: &ErrorFilter,
        page: Option<&str>,
        limit: usize,
    ) -> Result<Page<ExportErrorItem>, StoreError> {
        let after: Option<ErrorPos> = page.map(decode_token).transpose()?;
        Ok(self.with(|i| {
            let Some(j) = i.jobs.get(job) else {
                return Page {
                    items: Vec::new(),
                    next: None,
                };
            };
            let mut items: Vec<_> = j
                .errors
                .values()
                .filter(|e| filter.status.is_none_or(|s| e.status == s))
                .filter(|e| filter.code.as_deref().is_none_or(|c| e.error.code == c))
                .cloned()
                .collect();
            // Newest last attempt first; ties by key.
            items.sort_by(|a, b| (b.last_attempt_at, &a.key).cmp(&(a.last_attempt_at, &b.key)));
            if let Some(ErrorPos(t, k)) = &after {
                items.retain(|e| {
                    e.last_attempt_at < *t
                        || (e.last_attempt_at == *t && e.key.as_str() > k.as_str())
                });
            }
            let more = items.len() > limit;
            items.truncate(limit);
            let next = more
                .then(|| {
                    items.last().map(|e| {
                        encode_token(&ErrorPos(e.last_attempt_at, e.key.as_str().to_string()))
                    })
                })
                .flatten();
            Page { items, next }
        }))
    }

    async fn count_errors(&self, job: &JobRef, status: ErrorStatus) -> Result<u64, StoreError> {
        Ok(self.with(|i| {
            i.jobs
                .get(job)
                .map(|j| j.errors.values().filter(|e| e.status == status).count() as u64)
                .unwrap_or(0)
        }))
    }
}

#[async_trait]
impl SettingsStore for MemoryStore {
    async fn get_settings(
        &self,
        tenant: &TenantId,
    ) -> Result<Option<VersionedSettings>, StoreError> {
        Ok(self.with(|i| i.tenants.get(tenant).and_then(|t| t.settings.clone())))
    }

    async fn put_settings(
        &self,
        tenant: &TenantId,
        expected_version: u64,
        change: SettingsChange,
        event: Event,
    ) -> Result<u64, StoreError> {
        self.with(|i| {
            let t = i.tenants.entry(tenant.clone()).or_default();
            let found = t.settings.as_ref().map(|s| s.version).unwrap_or(0);
            if found != expected_version {
                return Err(StoreError::VersionConflict {
                    expected: expected_version,
                    found,
                });
            }
            let version = found + 1;
            t.settings = Some(VersionedSettings {
                settings: change.new.clone(),
                version,
            });
            t.history.push(SettingsChange { version, ..change });
            t.outbox.push(event);
            Ok(version)
        })
    }

    async fn settings_history(
        &self,
        tenant: &TenantId,
        page: Option<&str>,
        limit: usize,
    ) -> Result<Page<SettingsChange>, StoreError> {
        let before: Option<u64> = page.map(decode_token).transpose()?;
        Ok(self.with(|i| {
            let Some(t) = i.tenants.get(tenant) else {
                return Page {
                    items: Vec::new(),
                    next: None,
                };
            };
            let mut items: Vec<_> = t
                .history
                .iter()
                .rev()
                .filter(|c| before.is_none_or(|b| c.version < b))
                .cloned()
                .collect();
            let more = items.len() > limit;
            items.truncate(limit);
            let next = more
                .then(|| items.last().map(|c| encode_token(&c.version)))
                .flatten();
            Page { items, next }
        }))
    }

    async fn list_tenants(&self) -> Result<Vec<TenantId>, StoreError> {
        Ok(self.with(|i| {
            i.tenants
                .iter()
                .filter(|(_, t)| t.settings.is_some())
                .map(|(k, _)| k.clone())
                .collect()
        }))
    }
}

#[async_trait]
impl JobCatalog for MemoryStore {
    async fn get_job(
        &self,
        tenant: &TenantId,
        job: &JobId,
    ) -> Result<Option<JobDefinition>, StoreError> {
        Ok(self.with(|i| i.tenants.get(tenant).and_then(|t| t.jobs.get(job).cloned())))
    }

    async fn put_job(&self, tenant: &TenantId, def: JobDefinition) -> Result<(), StoreError> {
        self.with(|i| {
            i.tenants
                .entry(tenant.clone())
                .or_default()
                .jobs
                .insert(def.job_id.clone(), def)
        });
        Ok(())
    }

    async fn list_jobs(&self, tenant: &TenantId) -> Result<Vec<JobDefinition>, StoreError> {
        Ok(self.with(|i| {
            i.tenants
                .get(tenant)
                .map(|t| t.jobs.values().cloned().collect())
                .unwrap_or_default()
        }))
    }
}

#[async_trait]
impl Outbox for MemoryStore {
    async fn pending_events(&self, tenant: &TenantId) -> Result<Vec<Event>, StoreError> {
        Ok(self.with(|i| {
            i.tenants
                .get(tenant)
                .map(|t| t.outbox.clone())
                .unwrap_or_default()
        }))
    }

    async fn mark_published(&self, tenant: &TenantId, ids: &[String]) -> Result<(), StoreError> {
        self.with(|i| {
            if let Some(t) = i.tenants.get_mut(tenant) {
                t.outbox.retain(|e| !ids.contains(&e.id));
            }
        });
        Ok(())
    }
}

#[async_trait]
impl ApiBudget for MemoryStore {
    async fn add_api_calls(
        &self,
        tenant: &TenantId,
        at: Timestamp,
        calls: u64,
    ) -> Result<(), StoreError> {
        self.with(|i| {
            *i.tenants
                .entry(tenant.clone())
                .or_default()
                .api_calls
                .entry(hour_bucket(at))
                .or_default() += calls
        });
        Ok(())
    }

    async fn api_calls_last_24h(
        &self,
        tenant: &TenantId,
        now: Timestamp,
    ) -> Result<u64, StoreError> {
        let from = hour_bucket(now - chrono::Duration::hours(24));
        Ok(self.with(|i| {
            i.tenants
                .get(tenant)
                .map(|t| t.api_calls.range(from..).map(|(_, n)| n).sum())
                .unwrap_or(0)
        }))
    }
}
