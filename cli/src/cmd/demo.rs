//! `crmx demo`: the main job end to end on real data. The bundled coral-cloud Contacts go
//! through the real engine, the real SQLite store and the real Salesforce client, over HTTP
//! to an in-process simulator whose org changes between phases through its admin API:
//!
//! 1. pause on, a validation rule refuses future birthdates: the job halts on the first one;
//! 2. the rule is deactivated: the next run's probe is accepted and the job catches up;
//! 3. pause off (acknowledged), a second wave, a stricter org: refused records are logged to
//!    ExportErrors and the job completes;
//! 4. one cause fixed, the daily retry run: the items that became valid are resolved.
//!
//! It ends with checks of the org's records (read back through the admin API) against
//! what the data says must be there, and exits non-zero when one fails. Only keys, codes
//! and counts are printed, never record values.

use super::run::{counts_line, outcome_line, run_once};
use super::{enqueue, settings, status};
use crate::cli::FileFormat;
use crate::config::{sim_config, Config, StateBackend};
use crate::error::{CliError, CliResult, Exit};
use crate::input;
use crate::output::Outcome;
use crate::sim_admin::{demo_org, SimAdmin};
use crate::state::Local;
use crm_export_core::engine::{RunKind, RunReport};
use crm_export_core::ports::{Clock, ErrorFilter};
use crm_export_core::{
    ErrorStatus, JobDefinition, JobId, JobRef, NewRecord, RecordKey, SettingsPatch, Timestamp,
    DATA_INCONSISTENCY_WARNING,
};
use crm_export_salesforce::SalesforceClient;
use serde_json::{json, Map, Value};
use sf_simulator::ServeOptions;
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::time::{Duration, Instant};

/// The bundled data (see data/coral-cloud/SOURCE.md), compiled in so that the demo works
/// from a clean clone whatever the current directory.
const CONTACTS: &str = include_str!("../../../data/coral-cloud/Contact-large.json");
const CONTACTS_PATH: &str = "data/coral-cloud/Contact-large.json";

const JOB: &str = "contacts";
const OBJECT: &str = "Contact";
const EXTERNAL_ID: &str = "External_Id__c";
const BIRTHDATE_RULE: &str = "Birthdate_Not_In_Future";
const PHOTO_FIELD: &str = "Photo_URL__c";
/// Far above what the demo needs; a run never stops on it.
const RUN_BUDGET: Duration = Duration::from_secs(120);

/// Prints progress lines for people (not with `--json` or `--quiet`).
struct Say(bool);

impl Say {
    fn line(&self, s: impl AsRef<str>) {
        if self.0 {
            let _ = writeln!(std::io::stdout(), "{}", s.as_ref());
        }
    }
    fn header(&self, s: &str) {
        self.line(format!("\n== {s} =="));
    }
    fn run(&self, r: &RunReport, events: &[String]) {
        self.line(format!("  {}", outcome_line(r)));
        self.line(format!("    {}", counts_line(r)));
        if !events.is_empty() {
            self.line(format!("    events published: {}", events.join(", ")));
        }
    }
}

#[derive(Debug, Clone, serde::Serialize)]
struct Check {
    name: String,
    pass: bool,
    expected: Value,
    actual: Value,
}

fn check(name: impl Into<String>, expected: impl Into<Value>, actual: impl Into<Value>) -> Check {
    let (expected, actual) = (expected.into(), actual.into());
    Check {
        name: name.into(),
        pass: expected == actual,
        expected,
        actual,
    }
}

pub async fn run(cfg: &Config) -> CliResult<Outcome> {
    let started = Instant::now();
    let say = Say(cfg.output.chatty());

    // State: the given state dir (it must not hold an earlier demo), else a fresh temp dir.
    let temp;
    let dir = if cfg.state.explicit {
        match &cfg.state.backend {
            StateBackend::Sqlite { dir } => dir.clone(),
            StateBackend::Dynamodb { .. } => {
                return Err(CliError::bad_input(
                    "the demo runs on the embedded store; drop --state dynamodb",
                ))
            }
        }
    } else {
        temp = tempfile::tempdir().map_err(|e| {
            CliError::unavailable(
                "store_unavailable",
                format!("cannot create a temp dir: {e}"),
            )
        })?;
        temp.path().to_owned()
    };
    let backend = StateBackend::Sqlite { dir };
    let local = Local::open(&backend).await?;
    let job = JobRef::new(cfg.tenant.clone(), JobId::new(JOB)?);
    if local.store.head(&job).await? > 0 {
        return Err(CliError::refused(
            "demo_state_not_empty",
            format!(
                "{} already holds records of job {job}; run the demo with an empty --state-dir (or none: a temp dir)",
                backend.describe()
            ),
        ));
    }

    // The simulator, in process on a random loopback port, reached over real HTTP.
    let sim = sf_simulator::serve(demo_org()?, ServeOptions::default())
        .await
        .map_err(|e| {
            CliError::unavailable(
                "simulator_unavailable",
                format!("cannot start the simulator: {e}"),
            )
        })?;
    let admin = SimAdmin::new(sim.base_url())?;
    let client = SalesforceClient::new(sim_config(sim.base_url(), None)?)
        .map_err(|e| CliError::internal(format!("the Salesforce client does not build: {e}")))?;

    // The job, with the org's own case rule for its external-id field.
    let org = admin.org().await?;
    let case_insensitive = org
        .objects
        .get(OBJECT)
        .and_then(|o| o.fields.get(EXTERNAL_ID))
        .map(|f| f.case_insensitive())
        .ok_or_else(|| CliError::internal("the demo org has no Contact.External_Id__c"))?;
    let def = JobDefinition {
        job_id: job.job.clone(),
        object: OBJECT.into(),
        external_id_field: EXTERNAL_ID.into(),
        key_field: None,
        key_case_insensitive: case_insensitive,
        field_map: BTreeMap::new(),
    };
    local.store.put_job(&cfg.tenant, def.clone()).await?;
    let records = input::parse(CONTACTS, FileFormat::Tree, &def)
        .map_err(|e| CliError::internal(format!("the bundled data does not parse: {e}")))?;
    let data = DataFacts::of(&records, local.clock.now().date_naive());

    let actor = format!("{} (crmx demo)", cfg.actor);
    let patch = SettingsPatch {
        export_to_crm: Some(true),
        pause_on_export_errors: Some(true),
        batch_size: Some(200),
        ..SettingsPatch::default()
    };
    settings::change(&local, &cfg.tenant, &actor, &patch, None).await?;

    say.line("crmx demo: pause on export errors, end to end");
    say.line(format!(
        "  data       {CONTACTS_PATH} (trailheadapps/coral-cloud, CC0-1.0): {} Contacts, {} distinct {EXTERNAL_ID}",
        records.len(),
        data.distinct_keys
    ));
    say.line(format!(
        "             {} keys on 2-3 records, {} newest versions with a future Birthdate, {} with {PHOTO_FIELD}",
        data.duplicated_keys,
        data.future_birthdates.len(),
        data.with_photo.len()
    ));
    say.line(format!(
        "  simulator  {} (org {}), real Salesforce client over HTTP",
        sim.base_url(),
        org.org_id
    ));
    say.line(format!(
        "  state      {} (tenant {}, job {JOB}: {OBJECT} upserted on {EXTERNAL_ID}, keys case-{})",
        backend.describe(),
        cfg.tenant,
        if case_insensitive {
            "insensitive"
        } else {
            "sensitive"
        }
    ));
    say.line("  settings   export_to_crm on, pause_on_export_errors on, batch_size 200");

    let mut checks = Vec::new();
    let mut phases = Vec::new();
    let mut reports: Vec<RunReport> = Vec::new();
    let export = |kind| run_once(&local, &client, kind, &job, RUN_BUDGET, false);
    let mut events = EventCursor(0);

    // Phase 1: pause on; the org refuses future birthdates.
    say.header("Phase 1: pause on, the org refuses Birthdates in the future");
    let wave1 = enqueue::enqueue(&local, &job, records.clone()).await?;
    say.line(format!(
        "  enqueued {} records ({} distinct keys), seq {}..{}",
        wave1.records, wave1.distinct_keys, wave1.first_seq, wave1.last_seq
    ));
    let r1 = export(RunKind::Export).await?;
    say.run(&r1, &events.since_last(&local));
    let s1 = status::job_status(&local, &job).await?;
    let now = local.clock.now();
    for l in status::human_status(&s1, now).lines() {
        say.line(format!("  | {l}"));
    }
    let r1b = export(RunKind::Export).await?;
    let s1b = status::job_status(&local, &job).await?;
    let r1b_events = events.since_last(&local);
    say.line(format!(
        "  export run again, the rule still active: {} (attempts on the halted record: {}; events published: {})",
        r1b.outcome.name(),
        s1b.halt.as_ref().map_or(0, |h| h.attempts),
        r1b_events.join(", ")
    ));
    checks.push(check(
        "phase 1: the job halts on the first refused contact",
        json!({"outcome": "halted", "key": data.first_future.as_ref().map(RecordKey::as_str)}),
        json!({"outcome": r1.outcome.name(), "key": s1.halt.as_ref().map(|h| h.key.as_str())}),
    ));
    checks.push(check(
        "phase 1: the next run retries the halted record (attempts 2)",
        json!({"outcome": "halted", "attempts": 2}),
        json!({"outcome": r1b.outcome.name(), "attempts": s1b.halt.as_ref().map(|h| h.attempts)}),
    ));
    phases.push(
        json!({"phase": 1, "name": "pause_on_halts", "runs": [&r1, &r1b],
        "status": status::status_json(&s1b, now)}),
    );
    reports.extend([r1, r1b]);

    // Phase 2: the rule is fixed; the probe is accepted and the job catches up.
    say.header("Phase 2: the rule is fixed (deactivated for the integration user)");
    admin.set_rule_active(OBJECT, BIRTHDATE_RULE, false).await?;
    say.line(format!(
        "  org: validation rule {BIRTHDATE_RULE} deactivated"
    ));
    let r2 = export(RunKind::Export).await?;
    let r2_events = events.since_last(&local);
    say.run(&r2, &r2_events);
    let s2 = status::job_status(&local, &job).await?;
    say.line(format!(
        "  status: {}, cursor {} of {}, {} open ExportErrors",
        status::state_word(&s2),
        s2.cursor,
        s2.head,
        s2.open_errors
    ));
    checks.push(check(
        "phase 2: the probe is accepted, the job resumes and completes, nothing left open",
        json!({"outcome": "completed", "resumed": true, "cursor": wave1.last_seq, "open": 0}),
        json!({"outcome": r2.outcome.name(), "resumed": r2_events.iter().any(|e| e == "ExportJobResumed"),
            "cursor": s2.cursor, "open": s2.open_errors}),
    ));
    phases.push(
        json!({"phase": 2, "name": "rule_fixed_resumes", "runs": [&r2],
        "status": status::status_json(&s2, local.clock.now())}),
    );
    reports.push(r2);

    // Phase 3: pause off; a second wave meets a stricter org.
    say.header("Phase 3: pause off, a second wave, a stricter org");
    let pause_off = SettingsPatch {
        pause_on_export_errors: Some(false),
        acknowledge_data_inconsistency: Some(true),
        ..SettingsPatch::default()
    };
    let changed = settings::change(&local, &cfg.tenant, &actor, &pause_off, None).await?;
    say.line(format!(
        "  settings: pause_on_export_errors off, acknowledged (version {})",
        changed.version
    ));
    say.line(format!(
        "  warning: {}",
        changed.warning.unwrap_or(DATA_INCONSISTENCY_WARNING)
    ));
    admin.set_rule_active(OBJECT, BIRTHDATE_RULE, true).await?;
    admin.set_field_editable(OBJECT, PHOTO_FIELD, false).await?;
    say.line(format!(
        "  org: {BIRTHDATE_RULE} active again; {PHOTO_FIELD} no longer editable by the integration user"
    ));
    let wave2_started = local.clock.now();
    let wave2 = enqueue::enqueue(&local, &job, records.clone()).await?;
    say.line(format!(
        "  enqueued the file again: {} new versions, seq {}..{}",
        wave2.records, wave2.first_seq, wave2.last_seq
    ));
    let r3 = export(RunKind::Export).await?;
    say.run(&r3, &events.since_last(&local));
    let by_code = open_by_code(&local, &job).await?;
    say.line(format!(
        "  ExportErrors open by code: {}",
        by_code
            .iter()
            .map(|(c, n)| format!("{c} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    let expected_codes = {
        let mut m = BTreeMap::new();
        let validation = data.future_birthdates.len();
        let photo_only = data.photo_only().len();
        if validation > 0 {
            m.insert(
                "FIELD_CUSTOM_VALIDATION_EXCEPTION".to_owned(),
                validation as u64,
            );
        }
        if photo_only > 0 {
            m.insert(
                "INVALID_FIELD_FOR_INSERT_UPDATE".to_owned(),
                photo_only as u64,
            );
        }
        m
    };
    checks.push(check(
        "phase 3: pause off, the run completes and logs every refused record",
        json!({"outcome": "completed", "open_by_code": expected_codes}),
        json!({"outcome": r3.outcome.name(), "open_by_code": by_code}),
    ));
    phases.push(
        json!({"phase": 3, "name": "pause_off_logs_errors", "runs": [&r3],
        "open_by_code": by_code}),
    );
    reports.push(r3);

    // Phase 4: one cause fixed; the daily retry run.
    say.header("Phase 4: the daily ExportError retry run");
    admin.set_field_editable(OBJECT, PHOTO_FIELD, true).await?;
    say.line(format!("  org: {PHOTO_FIELD} editable again"));
    let r4 = export(RunKind::Retry).await?;
    say.run(&r4, &events.since_last(&local));
    let open = list_all(&local, &job, ErrorStatus::Open).await?;
    let resolved = list_all(&local, &job, ErrorStatus::Resolved).await?;
    let retried_once = open.iter().filter(|i| i.retry_attempts == 1).count();
    say.line(format!(
        "  ExportErrors: {} resolved, {} still open ({} with 1 retry attempt counted)",
        resolved.len(),
        open.len(),
        retried_once
    ));
    checks.push(check(
        "phase 4: items that became valid are resolved, the rest stay open with an attempt counted",
        json!({"outcome": "completed", "resolved": data.photo_only().len(), "open": data.future_birthdates.len(), "retried_once": data.future_birthdates.len()}),
        json!({"outcome": r4.outcome.name(), "resolved": resolved.len(), "open": open.len(), "retried_once": retried_once}),
    ));
    phases.push(json!({"phase": 4, "name": "daily_retry", "runs": [&r4],
        "open": open.len(), "resolved": resolved.len()}));
    reports.push(r4);

    // Summary: the store's counts, and the org read back through its admin API.
    say.header("Summary");
    let accepted: u64 = reports.iter().map(|r| r.counts.accepted).sum();
    let superseded: u64 = reports.iter().map(|r| r.counts.superseded).sum();
    let parked = local.store.count_errors(&job, ErrorStatus::Parked).await?;
    let final_status = status::job_status(&local, &job).await?;
    let org_records = admin.records(OBJECT).await?;
    say.line(format!(
        "  records enqueued {} ({} distinct keys); accepted {} (sends over all runs, re-sends included)",
        wave1.records + wave2.records,
        data.distinct_keys,
        accepted
    ));
    say.line(format!(
        "  superseded in the queue {superseded}; ExportErrors open {}, resolved {}, parked {parked}",
        open.len(),
        resolved.len()
    ));
    say.line(format!(
        "  org: {} Contact records (read back through {}/__sim/records/{OBJECT})",
        org_records.len(),
        sim.base_url()
    ));

    checks.push(check(
        "superseded in the queue = records minus distinct keys, per wave",
        2 * (records.len() - data.distinct_keys) as u64,
        superseded,
    ));
    checks.push(check(
        "the job caught up: cursor = queue head, not halted, not blocked",
        json!({"cursor": wave2.last_seq, "halted": false, "blocked": false}),
        json!({"cursor": final_status.cursor, "halted": final_status.halt.is_some(), "blocked": final_status.block.is_some()}),
    ));
    checks.push(check(
        "Contact records in the org = distinct keys",
        data.distinct_keys as u64,
        org_records.len() as u64,
    ));
    let org_check = OrgCheck::run(
        &def,
        &org_records,
        &records,
        wave1.first_seq,
        &open,
        wave2_started,
    );
    checks.push(check(
        "every key with an open item holds its previous version (unchanged since phase 2)",
        open.len() as u64,
        org_check.previous_ok,
    ));
    checks.push(check(
        "every other key holds its newest version (written in phases 3-4)",
        (data.distinct_keys - open.len()) as u64,
        org_check.newest_ok,
    ));
    checks.push(check(
        "open items = the newest versions with a future Birthdate in the data",
        json!(data
            .future_birthdates
            .iter()
            .map(RecordKey::as_str)
            .collect::<Vec<_>>()),
        json!(sorted_keys(&open)),
    ));

    for c in &checks {
        say.line(format!(
            "  {}  {}",
            if c.pass { "PASS" } else { "FAIL" },
            c.name
        ));
        if !c.pass {
            say.line(format!("        expected {}, got {}", c.expected, c.actual));
        }
    }
    if !org_check.problems.is_empty() {
        say.line("  first mismatches (keys only):");
        for p in org_check.problems.iter().take(5) {
            say.line(format!("    {p}"));
        }
    }
    let passed = checks.iter().all(|c| c.pass);
    let elapsed = started.elapsed().as_secs_f64();
    sim.shutdown().await;

    let summary = json!({
        "records_enqueued": wave1.records + wave2.records,
        "distinct_keys": data.distinct_keys,
        "accepted": accepted,
        "superseded_in_queue": superseded,
        "errors_open": open.len(),
        "errors_resolved": resolved.len(),
        "errors_parked": parked,
        "org_contacts": org_records.len(),
    });
    let human = format!(
        "\ndemo {} in {elapsed:.1}s ({} of {} checks passed)",
        if passed { "PASSED" } else { "FAILED" },
        checks.iter().filter(|c| c.pass).count(),
        checks.len()
    );
    let json = json!({
        "passed": passed,
        "elapsed_secs": elapsed,
        "tenant": cfg.tenant,
        "job": job,
        "state": backend.describe(),
        "phases": phases,
        "summary": summary,
        "checks": checks,
    });
    let exit = if passed { Exit::Ok } else { Exit::Failure };
    Ok(Outcome::ok(human, json).with_exit(exit))
}

/// The events published since the last look (the engine publishes to memory locally).
struct EventCursor(usize);

impl EventCursor {
    fn since_last(&mut self, local: &Local) -> Vec<String> {
        let all = local.published();
        let new = all.get(self.0..).unwrap_or_default().to_vec();
        self.0 = all.len();
        new
    }
}

/// What the bundled data says must happen, computed from the file alone (the oracle the
/// org is checked against).
struct DataFacts {
    distinct_keys: usize,
    duplicated_keys: usize,
    /// The first record (in file order) that is the newest version of its key and has a
    /// future Birthdate: where pause on must halt.
    first_future: Option<RecordKey>,
    /// Keys whose newest version has a future Birthdate, sorted.
    future_birthdates: Vec<RecordKey>,
    /// Keys whose newest version carries Photo_URL__c, sorted.
    with_photo: Vec<RecordKey>,
}

impl DataFacts {
    fn of(records: &[NewRecord], today: chrono::NaiveDate) -> Self {
        let mut newest: HashMap<&RecordKey, usize> = HashMap::new();
        let mut count: HashMap<&RecordKey, usize> = HashMap::new();
        for (i, r) in records.iter().enumerate() {
            newest.insert(&r.key, i);
            *count.entry(&r.key).or_default() += 1;
        }
        let is_newest = |i: usize, r: &NewRecord| newest.get(&r.key) == Some(&i);
        let future = |r: &NewRecord| {
            r.fields
                .get("Birthdate")
                .and_then(Value::as_str)
                .and_then(|d| chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").ok())
                .is_some_and(|d| d > today)
        };
        let mut future_birthdates = Vec::new();
        let mut with_photo = Vec::new();
        let mut first_future = None;
        for (i, r) in records.iter().enumerate() {
            if !is_newest(i, r) {
                continue;
            }
            if future(r) {
                first_future.get_or_insert_with(|| r.key.clone());
                future_birthdates.push(r.key.clone());
            }
            if r.fields.contains_key(PHOTO_FIELD) {
                with_photo.push(r.key.clone());
            }
        }
        future_birthdates.sort();
        with_photo.sort();
        Self {
            distinct_keys: newest.len(),
            duplicated_keys: count.values().filter(|n| **n > 1).count(),
            first_future,
            future_birthdates,
            with_photo,
        }
    }

    /// Keys refused only for the photo field (a future Birthdate would still refuse them).
    fn photo_only(&self) -> Vec<&RecordKey> {
        self.with_photo
            .iter()
            .filter(|k| !self.future_birthdates.contains(k))
            .collect()
    }
}

/// The org compared key by key with the queue: which version each key must hold.
struct OrgCheck {
    previous_ok: u64,
    newest_ok: u64,
    problems: Vec<String>,
}

impl OrgCheck {
    fn run(
        def: &JobDefinition,
        org: &[sf_simulator::RecordView],
        records: &[NewRecord],
        wave1_first_seq: u64,
        open: &[crm_export_core::ExportErrorItem],
        wave2_started: Timestamp,
    ) -> Self {
        // The newest version of each key in one wave (both waves are the same file).
        let mut newest: HashMap<&RecordKey, &NewRecord> = HashMap::new();
        for r in records {
            newest.insert(&r.key, r);
        }
        let open_keys: HashMap<&RecordKey, u64> = open.iter().map(|i| (&i.key, i.seq)).collect();
        let mut out = Self {
            previous_ok: 0,
            newest_ok: 0,
            problems: Vec::new(),
        };
        let wave_len = records.len() as u64;
        for view in org {
            let Some(key) =
                RecordKey::from_external_id(&view.external_id, def.key_case_insensitive)
            else {
                out.problems
                    .push(format!("org record {} has no key", view.id));
                continue;
            };
            let Some(expected) = newest.get(&key) else {
                out.problems
                    .push(format!("org holds {key}, which was never queued"));
                continue;
            };
            let fields_match = same_fields(&def.to_crm_fields(&expected.fields), &view.fields);
            match open_keys.get(&key) {
                // The refused version is from wave 2; the org must still hold wave 1's,
                // untouched since wave 2 started.
                Some(seq) => {
                    let refused_in_wave2 = *seq >= wave1_first_seq + wave_len;
                    if fields_match && refused_in_wave2 && view.updated_at < wave2_started {
                        out.previous_ok += 1;
                    } else {
                        out.problems.push(format!(
                            "{key}: open item (seq {seq}) but the org record was written at {} or differs",
                            view.updated_at
                        ));
                    }
                }
                None => {
                    if fields_match && view.updated_at >= wave2_started {
                        out.newest_ok += 1;
                    } else {
                        out.problems.push(format!(
                            "{key}: no open item but the org record is not the newest version"
                        ));
                    }
                }
            }
        }
        out
    }
}

/// Every field the product sent is in the org with the same value (the org adds its own).
fn same_fields(sent: &Map<String, Value>, org: &Map<String, Value>) -> bool {
    sent.iter().all(|(k, v)| {
        org.get(k)
            .or_else(|| {
                org.iter()
                    .find(|(ok, _)| ok.eq_ignore_ascii_case(k))
                    .map(|(_, v)| v)
            })
            .is_some_and(|o| o == v)
    })
}

fn sorted_keys(items: &[crm_export_core::ExportErrorItem]) -> Vec<&str> {
    let mut keys: Vec<&str> = items.iter().map(|i| i.key.as_str()).collect();
    keys.sort_unstable();
    keys
}

async fn list_all(
    local: &Local,
    job: &JobRef,
    status: ErrorStatus,
) -> CliResult<Vec<crm_export_core::ExportErrorItem>> {
    let filter = ErrorFilter {
        status: Some(status),
        code: None,
    };
    let mut items = Vec::new();
    let mut page: Option<String> = None;
    loop {
        let p = local
            .store
            .list_errors(job, &filter, page.as_deref(), 200)
            .await?;
        items.extend(p.items);
        match p.next {
            Some(n) => page = Some(n),
            None => return Ok(items),
        }
    }
}

async fn open_by_code(local: &Local, job: &JobRef) -> CliResult<BTreeMap<String, u64>> {
    let mut m = BTreeMap::new();
    for i in list_all(local, job, ErrorStatus::Open).await? {
        *m.entry(i.error.code).or_default() += 1;
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> (Vec<NewRecord>, DataFacts) {
        let def = JobDefinition {
            job_id: JobId::new(JOB).unwrap(),
            object: OBJECT.into(),
            external_id_field: EXTERNAL_ID.into(),
            key_field: None,
            key_case_insensitive: true,
            field_map: BTreeMap::new(),
        };
        let records = input::parse(CONTACTS, FileFormat::Tree, &def).unwrap();
        // Pinned "today" so the counts below are the file's documented facts.
        let today = chrono::NaiveDate::from_ymd_opt(2025, 6, 1).unwrap();
        let facts = DataFacts::of(&records, today);
        (records, facts)
    }

    #[test]
    fn the_bundled_data_has_the_documented_shape() {
        let (records, f) = facts();
        assert_eq!(records.len(), 992);
        assert_eq!(f.distinct_keys, 941);
        assert_eq!(f.duplicated_keys, 50);
        // 26 future Birthdates in all, 23 on the newest version of their key.
        assert_eq!(f.future_birthdates.len(), 23);
        assert_eq!(f.with_photo.len(), 2);
        assert_eq!(f.photo_only().len(), 2);
        assert_eq!(
            f.first_future.as_ref().map(RecordKey::as_str),
            Some("10003177")
        );
    }

    #[test]
    fn the_org_check_catches_a_stale_or_overwritten_record() {
        let def = JobDefinition {
            job_id: JobId::new(JOB).unwrap(),
            object: OBJECT.into(),
            external_id_field: EXTERNAL_ID.into(),
            key_field: None,
            key_case_insensitive: true,
            field_map: BTreeMap::new(),
        };
        let rec = |k: &str, name: &str| NewRecord {
            key: RecordKey::from_external_id(k, true).unwrap(),
            fields: serde_json::from_value(json!({"LastName": name, EXTERNAL_ID: k})).unwrap(),
        };
        // One wave of two keys (seq 1, 2); the second wave is seq 3, 4.
        let records = vec![rec("A1", "Ann"), rec("B2", "Bob")];
        let t = |s: i64| chrono::DateTime::from_timestamp(s, 0).unwrap();
        let view = |k: &str, name: &str, at: i64| sf_simulator::RecordView {
            id: format!("003{k}"),
            external_id: k.into(),
            version: 1,
            fields: serde_json::from_value(json!({"LastName": name, EXTERNAL_ID: k})).unwrap(),
            created_at: t(0),
            updated_at: t(at),
        };
        let open_item = |k: &str, seq: u64| crm_export_core::ExportErrorItem {
            key: RecordKey::from_external_id(k, true).unwrap(),
            seq,
            fields: Map::new(),
            error: crm_export_core::RecordError::new("X", "x"),
            status: ErrorStatus::Open,
            attempts: 1,
            retry_attempts: 0,
            first_seen: t(0),
            last_seen: t(0),
            last_attempt_at: t(0),
            resolved_at: None,
            resolved_by_seq: None,
        };
        let wave2 = t(100);
        // Right: B2 refused in wave 2 and untouched since; A1 written in wave 2.
        let good = [view("A1", "Ann", 150), view("B2", "Bob", 50)];
        let c = OrgCheck::run(&def, &good, &records, 1, &[open_item("B2", 4)], wave2);
        assert_eq!((c.previous_ok, c.newest_ok), (1, 1), "{:?}", c.problems);
        // Wrong: B2 has an open item but was overwritten in wave 2; A1 was never
        // written by wave 2; C3 was never queued.
        let bad = [
            view("A1", "Ann", 50),
            view("B2", "Bob", 150),
            view("C3", "Cy", 150),
        ];
        let c = OrgCheck::run(&def, &bad, &records, 1, &[open_item("B2", 4)], wave2);
        assert_eq!((c.previous_ok, c.newest_ok), (0, 0));
        assert_eq!(c.problems.len(), 3, "{:?}", c.problems);
        // Wrong content: the org holds other values than the ones sent.
        let changed = [view("A1", "Anne", 150)];
        let c = OrgCheck::run(&def, &changed, &records, 1, &[], wave2);
        assert_eq!(c.newest_ok, 0);
    }

    #[test]
    fn fields_compare_by_value_and_ignore_what_the_org_adds() {
        let sent: Map<String, Value> =
            serde_json::from_value(json!({"LastName": "A", "External_Id__c": "1"})).unwrap();
        let org: Map<String, Value> =
            serde_json::from_value(json!({"lastname": "A", "External_Id__c": "1", "Id": "003"}))
                .unwrap();
        assert!(same_fields(&sent, &org));
        let changed: Map<String, Value> =
            serde_json::from_value(json!({"LastName": "B", "External_Id__c": "1"})).unwrap();
        assert!(!same_fields(&sent, &changed));
    }
}
