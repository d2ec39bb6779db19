//! Serving the API on a developer's machine and in the contract test: demo data for a
//! store and tokens for it. The `crm-export-api-local` binary is a thin wrapper.

use crate::auth::WRITE_SCOPE;
use crate::jwt::{issue_hs256, JwtError};
use crm_export_core::ports::{Commit, ErrorWrite, StateStore, StoreError};
use crm_export_core::{
    ErrorStatus, Event, EventKind, ExportErrorItem, Halt, JobDefinition, JobId, JobRef, JobState,
    NewRecord, RecordError, RecordKey, RunId, Settings, SettingsChange, TenantId, Timestamp,
};
use serde_json::json;
use std::collections::BTreeMap;
use std::time::Duration;

/// What [`seed_demo`] created.
#[derive(Debug, Clone)]
pub struct Seeded {
    /// Halted on `halted_key`, with a parked and a resolved ExportErrors item.
    pub halted_job: JobRef,
    pub halted_key: RecordKey,
    pub parked_key: RecordKey,
    pub resolved_key: RecordKey,
    /// A job with nothing wrong.
    pub clean_job: JobRef,
}

fn fields(v: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
    v.as_object().cloned().unwrap_or_default()
}

fn item(
    key: &RecordKey,
    seq: u64,
    status: ErrorStatus,
    retry_attempts: u32,
    now: Timestamp,
    minutes_ago: i64,
) -> ExportErrorItem {
    let at = now - chrono::Duration::minutes(minutes_ago);
    ExportErrorItem {
        key: key.clone(),
        seq,
        fields: fields(json!({
            "id": key.as_str(),
            "email": format!("{}@example.com", key.as_str()),
            "amount": "12,50",
        })),
        error: RecordError {
            code: "FIELD_CUSTOM_VALIDATION_EXCEPTION".into(),
            message: "Amount must be a number".into(),
            fields: vec!["bizible2__Amount__c".into()],
        },
        status,
        attempts: 1 + retry_attempts,
        retry_attempts,
        first_seen: at - chrono::Duration::hours(1),
        last_seen: at,
        last_attempt_at: at,
        resolved_at: (status == ErrorStatus::Resolved).then_some(at),
        resolved_by_seq: (status == ErrorStatus::Resolved).then_some(seq),
    }
}

/// Seeds a tenant: export on, pause on, a job `touchpoints` halted on one record with
/// parked and resolved ExportErrors items, and a clean job `contacts`. Written through the
/// ports only, so any store can be seeded; the seed's own event is marked published.
pub async fn seed_demo(
    store: &dyn StateStore,
    tenant: &TenantId,
    now: Timestamp,
) -> Result<Seeded, StoreError> {
    let bad = |what: &str| StoreError::Invalid(format!("seed: {what}"));
    let settings = Settings {
        export_to_crm: true,
        ..Settings::default()
    };
    let base = store.get_settings(tenant).await?;
    let expected = base.as_ref().map_or(0, |v| v.version);
    let change = SettingsChange {
        version: expected + 1,
        at: now,
        actor: "seed".into(),
        old: base.map(|v| v.settings).unwrap_or_default(),
        new: settings,
        acknowledged_data_inconsistency: false,
    };
    let event = Event {
        id: uuid::Uuid::new_v4().to_string(),
        kind: EventKind::SettingsChanged,
        tenant: tenant.clone(),
        job: None,
        at: now,
        detail: json!({"actor": "seed"}),
    };
    store.put_settings(tenant, expected, change, event).await?;

    let touchpoints = JobRef::new(
        tenant.clone(),
        JobId::new("touchpoints").map_err(|_| bad("job id"))?,
    );
    store
        .put_job(
            tenant,
            JobDefinition {
                job_id: touchpoints.job.clone(),
                object: "bizible2__Bizible_Touchpoint__c".into(),
                external_id_field: "bizible2__UniqueId__c".into(),
                key_field: Some("id".into()),
                key_case_insensitive: false,
                field_map: BTreeMap::from([
                    ("id".to_string(), "bizible2__UniqueId__c".to_string()),
                    ("email".to_string(), "bizible2__Email__c".to_string()),
                    ("amount".to_string(), "bizible2__Amount__c".to_string()),
                ]),
            },
        )
        .await?;
    let key = |i: u32| RecordKey::from_stored(format!("tp-{i}"));
    let records = (1..=8)
        .map(|i| NewRecord {
            key: key(i),
            fields: fields(json!({"id": format!("tp-{i}"), "email": format!("person{i}@example.com"), "amount": "10"})),
        })
        .collect();
    let seqs = store
        .enqueue(&touchpoints, records, now - chrono::Duration::hours(2))
        .await?;
    let seq_of = |i: usize| seqs.get(i - 1).copied().ok_or_else(|| bad("enqueue"));
    let (halted, parked, resolved) = (key(5), key(2), key(3));
    let halt_item = item(&halted, seq_of(5)?, ErrorStatus::Open, 0, now, 5);
    let state = JobState {
        cursor: seq_of(4)?,
        halt: Some(Halt {
            seq: halt_item.seq,
            key: halted.clone(),
            error: halt_item.error.clone(),
            since: halt_item.first_seen,
            attempts: halt_item.attempts,
            last_attempt_at: halt_item.last_attempt_at,
        }),
        last_run_at: Some(now - chrono::Duration::minutes(5)),
        ..JobState::default()
    };
    let errors = vec![
        ErrorWrite::Put(halt_item),
        ErrorWrite::Put(item(&parked, seq_of(2)?, ErrorStatus::Parked, 30, now, 30)),
        ErrorWrite::Put(item(
            &resolved,
            seq_of(3)?,
            ErrorStatus::Resolved,
            1,
            now,
            60,
        )),
    ];
    commit_under_lease(store, &touchpoints, now, state, errors).await?;

    let contacts = JobRef::new(
        tenant.clone(),
        JobId::new("contacts").map_err(|_| bad("job id"))?,
    );
    store
        .put_job(
            tenant,
            JobDefinition {
                job_id: contacts.job.clone(),
                object: "Contact".into(),
                external_id_field: "External_Id__c".into(),
                key_field: None,
                key_case_insensitive: true,
                field_map: BTreeMap::new(),
            },
        )
        .await?;
    let records = (1..=3)
        .map(|i| NewRecord {
            key: RecordKey::from_stored(format!("c-{i}")),
            fields: fields(
                json!({"External_Id__c": format!("c-{i}"), "LastName": format!("Person {i}")}),
            ),
        })
        .collect();
    let seqs = store
        .enqueue(&contacts, records, now - chrono::Duration::hours(1))
        .await?;
    let done = JobState {
        cursor: seqs.last().copied().unwrap_or(0),
        last_run_at: Some(now - chrono::Duration::minutes(1)),
        ..JobState::default()
    };
    commit_under_lease(store, &contacts, now, done, Vec::new()).await?;

    let pending: Vec<String> = store
        .pending_events(tenant)
        .await?
        .into_iter()
        .map(|e| e.id)
        .collect();
    store.mark_published(tenant, &pending).await?;
    Ok(Seeded {
        halted_job: touchpoints,
        halted_key: halted,
        parked_key: parked,
        resolved_key: resolved,
        clean_job: contacts,
    })
}

/// State is only written under the job's lease, as a run would.
async fn commit_under_lease(
    store: &dyn StateStore,
    job: &JobRef,
    now: Timestamp,
    state: JobState,
    errors: Vec<ErrorWrite>,
) -> Result<(), StoreError> {
    let owner = RunId(format!("seed-{}", uuid::Uuid::new_v4()));
    let lease = store
        .acquire_lease(job, &owner, now, Duration::from_secs(60))
        .await?
        .ok_or_else(|| StoreError::Invalid(format!("seed: the lease of {job} is held")))?;
    let result = store
        .commit(
            job,
            &lease,
            now,
            Commit {
                state,
                errors,
                events: Vec::new(),
                ..Commit::default()
            },
        )
        .await;
    store.release_lease(job, &lease).await?;
    result
}

/// An HS256 token for `tenant`, as the local server accepts it.
pub fn local_token(
    secret: &[u8],
    tenant: &TenantId,
    actor: &str,
    can_write: bool,
    ttl: Duration,
) -> Result<String, JwtError> {
    let now = chrono::Utc::now().timestamp();
    let scope = if can_write {
        format!("crm-export/read {WRITE_SCOPE}")
    } else {
        "crm-export/read".to_string()
    };
    issue_hs256(
        secret,
        &json!({
            "sub": actor,
            "tenant_id": tenant.as_str(),
            "scope": scope,
            "iat": now,
            "exp": now + ttl.as_secs() as i64,
        }),
    )
}
