//! The four functions end to end: each real bootstrap binary runs behind a local Lambda
//! Runtime API and gets real event payloads (an EventBridge scheduled event, EventBridge
//! custom events, API Gateway HTTP API v2 requests). AWS is moto (DynamoDB, EventBridge →
//! SQS to see what reached the bus, Secrets Manager), the CRM is the Salesforce simulator.
//! Each test checks the effects in DynamoDB, in the simulator and on the bus.

mod support;

use crm_export_core::ports::{
    Commit, ErrorWrite, ExportErrorStore, ExportQueue, JobStateStore, LeaseStore, Outbox,
};
use crm_export_core::*;
use serde_json::{json, Value};
use std::time::Duration;
use support::runtime::{LambdaProcess, Outcome};
use support::*;

const BUDGET: Duration = Duration::from_secs(120);

fn job(tenant: &TenantId, j: &str) -> JobRef {
    JobRef::new(tenant.clone(), j.parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_function_exports_halts_on_a_refused_record_and_rotates_the_refresh_token() {
    let aws = Aws::new("fx-export").await;
    let sim = simulator("rt-initial", true).await;
    let tenant = aws.onboard("acme", true, &["contacts"]).await;
    let contacts = job(&tenant, "contacts");
    aws.put_secret("acme", &salesforce_secret(&sim, "rt-initial"))
        .await;
    let marker = "personal-data-marker@example.com";
    aws.store
        .enqueue(
            &contacts,
            vec![
                contact("c-1", "Lovelace", marker),
                contact("c-2", "Refused", marker),
                contact("c-3", "Hopper", marker),
            ],
            chrono::Utc::now(),
        )
        .await
        .unwrap();

    let mut f = LambdaProcess::start(&binary("export"), "export", &aws.function_env()).await;
    let init = f.wait_ready(Duration::from_secs(30)).await;
    eprintln!("export function init: {init:?}");
    let event = command_event(
        "ExportRequested",
        json!({"tenant_id": "acme", "job_id": "contacts"}),
        chrono::Utc::now(),
    );
    let report = f.invoke(&event, BUDGET).await.ok();
    let logs = f.stop().await;

    // The run halted on the refused record (pause is on by default).
    assert_eq!(report["outcome"]["outcome"], "halted", "{report}");
    assert_eq!(report["outcome"]["key"], "c-2");
    // DynamoDB: the cursor stopped before c-2, the halt and its ExportErrors item exist.
    let state = aws.store.load_state(&contacts).await.unwrap();
    assert_eq!(state.cursor, 1);
    assert_eq!(state.halt.as_ref().map(|h| h.key.as_str()), Some("c-2"));
    let item = aws
        .store
        .get_error(&contacts, &RecordKey::from_stored("c-2"))
        .await
        .unwrap()
        .expect("an ExportErrors item for c-2");
    assert_eq!(item.status, ErrorStatus::Open);
    assert_eq!(item.error.code, "FIELD_CUSTOM_VALIDATION_EXCEPTION");
    // The simulator holds the accepted record, not the refused one.
    let records = sim.records(support::OBJECT).unwrap();
    let keys: Vec<String> = records
        .iter()
        .filter_map(|r| {
            r.fields
                .get(support::EXT)
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .collect();
    assert!(keys.contains(&"c-1".to_string()), "{keys:?}");
    assert!(!keys.contains(&"c-2".to_string()), "{keys:?}");
    // The bus: the halt, the run's summary, and the onboarding's SettingsChanged from the
    // outbox, all under the public source.
    let events = aws.bus_events(3).await;
    let halted = of_type(&events, "ExportJobHalted");
    assert_eq!(halted.len(), 1, "{events:#?}");
    assert_eq!(halted[0]["source"], "crm-export");
    assert_eq!(halted[0]["detail"]["tenant_id"], "acme");
    assert_eq!(halted[0]["detail"]["job_id"], "contacts");
    assert_eq!(
        of_type(&events, "ExportRunCompleted").len(),
        1,
        "{events:#?}"
    );
    assert_eq!(of_type(&events, "SettingsChanged").len(), 1, "{events:#?}");

    // The rotated refresh token went back to Secrets Manager, and it is the one the org
    // now accepts (the old one is revoked).
    let (secret, _) = aws.current_secret("acme").await;
    let stored = secret["credentials"]["refresh_token"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(stored, "rt-initial");
    let live = sim.org().oauth.clients[0].refresh_tokens.clone();
    assert_eq!(live, vec![stored.clone()]);
    assert_eq!(
        secret["login_url"],
        sim.base_url(),
        "the rest of the document is kept"
    );

    // Logs: JSON only, every line of the run names tenant, job and run id, and neither the
    // record values nor any credential is printed.
    let lines = logs.lines();
    let in_run = run_lines(&lines);
    assert!(!in_run.is_empty(), "{:#?}", logs.stdout);
    for l in &in_run {
        let span = run_span(l);
        assert_eq!(span["tenant"], "acme");
        assert_eq!(span["job"], "contacts");
        assert_eq!(span["run_id"], report["run_id"]);
    }
    let text = logs.all_text();
    for secret in [
        marker,
        "rt-initial",
        stored.as_str(),
        support::CLIENT_SECRET,
    ] {
        assert!(
            !text.contains(secret),
            "{secret:?} leaked into the logs:\n{text}"
        );
    }
    // EMF: the run's metrics, by run kind, with the job as properties.
    let doc = logs.metric_doc("RecordsExported");
    assert_eq!(
        doc["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
        json!([["Service", "RunKind"]])
    );
    assert_eq!(doc["RunKind"], "export");
    assert_eq!(doc["TenantId"], "acme");
    assert_eq!(doc["RecordErrors"], 1.0);
    assert!(doc["RecordsExported"].as_f64().unwrap() >= 1.0);
    assert!(doc["ApiCalls"].as_f64().unwrap() >= 1.0);
    let runs = logs.metric_doc("Runs");
    assert_eq!(runs["Outcome"], "halted");
}

/// The demo's data through the real export binary: the 992 coral-cloud contacts (941
/// distinct keys). Prints the function's peak memory for the deployment notes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_function_exports_the_demo_contacts() {
    let aws = Aws::new("fx-demo").await;
    let sim = simulator("rt-demo", false).await;
    let tenant = aws.onboard("coral", true, &["contacts"]).await;
    let contacts = job(&tenant, "contacts");
    aws.put_secret("coral", &salesforce_secret(&sim, "rt-demo"))
        .await;
    let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../data/coral-cloud/Contact-large.json");
    let data: Value = serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
    let records: Vec<NewRecord> = data["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let key = r[EXT].as_str().unwrap();
            contact(
                key,
                r["LastName"].as_str().unwrap(),
                r["Email"].as_str().unwrap_or("none@example.com"),
            )
        })
        .collect();
    assert_eq!(records.len(), 992);
    aws.store
        .enqueue(&contacts, records, chrono::Utc::now())
        .await
        .unwrap();

    let mut f = LambdaProcess::start(&binary("export"), "export", &aws.function_env()).await;
    let init = f.wait_ready(Duration::from_secs(30)).await;
    let event = command_event(
        "ExportRequested",
        json!({"tenant_id": "coral", "job_id": "contacts"}),
        chrono::Utc::now(),
    );
    let invoked = std::time::Instant::now();
    let report = f.invoke(&event, BUDGET).await.ok();
    eprintln!(
        "export function on the demo contacts: init {init:?}, first invocation {:?} (moto and the simulator included)",
        invoked.elapsed()
    );
    let peak = f.peak_rss_kib();
    f.stop().await;
    assert_eq!(report["outcome"]["outcome"], "completed", "{report}");
    assert_eq!(report["counts"]["accepted"], 941);
    assert_eq!(report["counts"]["superseded"], 51);
    assert_eq!(sim.records(support::OBJECT).unwrap().len(), 941);
    let peak = peak.expect("the function's peak memory is readable on Linux");
    eprintln!("export function peak RSS on the demo contacts: {peak} KiB");
    assert!(peak > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_function_drops_a_command_older_than_the_interval() {
    let aws = Aws::new("fx-stale").await;
    let sim = simulator("rt-stale", false).await;
    let tenant = aws.onboard("acme", true, &["contacts"]).await;
    let contacts = job(&tenant, "contacts");
    aws.put_secret("acme", &salesforce_secret(&sim, "rt-stale"))
        .await;
    aws.store
        .enqueue(
            &contacts,
            vec![contact("c-1", "Lovelace", "a@example.com")],
            chrono::Utc::now(),
        )
        .await
        .unwrap();

    let mut f = LambdaProcess::start(&binary("export"), "export", &aws.function_env()).await;
    // COMMAND_MAX_AGE_SECONDS is 900: a command from 16 minutes ago is too old.
    let event = command_event(
        "ExportRequested",
        json!({"tenant_id": "acme", "job_id": "contacts"}),
        chrono::Utc::now() - chrono::Duration::minutes(16),
    );
    let answer = f.invoke(&event, BUDGET).await.ok();
    let logs = f.stop().await;

    assert_eq!(answer["status"], "dropped", "{answer}");
    assert_eq!(answer["reason"], "stale");
    assert_eq!(sim.stats().token_requests, 0, "the CRM was not contacted");
    assert!(sim.records(support::OBJECT).unwrap().is_empty());
    let state = aws.store.load_state(&contacts).await.unwrap();
    assert_eq!(state.cursor, 0);
    assert_eq!(state.last_run_at, None, "no run started");
    assert!(aws
        .store
        .acquire_lease(
            &contacts,
            &RunId::random(),
            chrono::Utc::now(),
            Duration::from_secs(1)
        )
        .await
        .unwrap()
        .is_some());
    let dropped = logs.metric_doc("CommandsDropped");
    assert_eq!(dropped["CommandsDropped"], 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_function_stops_before_the_invocation_deadline() {
    let aws = Aws::new("fx-deadline").await;
    let sim = simulator("rt-deadline", false).await;
    let tenant = aws.onboard("acme", true, &["contacts"]).await;
    let contacts = job(&tenant, "contacts");
    aws.put_secret("acme", &salesforce_secret(&sim, "rt-deadline"))
        .await;
    aws.store
        .enqueue(
            &contacts,
            vec![contact("c-1", "Lovelace", "a@example.com")],
            chrono::Utc::now(),
        )
        .await
        .unwrap();
    let mut f = LambdaProcess::start(&binary("export"), "export", &aws.function_env()).await;
    let event = command_event(
        "ExportRequested",
        json!({"tenant_id": "acme", "job_id": "contacts"}),
        chrono::Utc::now(),
    );
    // 20 s left in the invocation, 15 s kept back (DEADLINE_MARGIN_SECONDS): too little
    // for a CRM request and its commit, so the run stops cleanly before sending.
    let report = f.invoke(&event, Duration::from_secs(20)).await.ok();
    f.stop().await;
    assert_eq!(report["outcome"]["outcome"], "deadline_reached", "{report}");
    assert_eq!(sim.stats().token_requests, 0, "no CRM request was started");
    assert_eq!(aws.store.load_state(&contacts).await.unwrap().cursor, 0);
    // The lease was given back: the next run can start at once.
    assert!(aws
        .store
        .acquire_lease(
            &contacts,
            &RunId::random(),
            chrono::Utc::now(),
            Duration::from_secs(1)
        )
        .await
        .unwrap()
        .is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_function_reports_bad_events_and_unknown_jobs_as_non_retryable() {
    let aws = Aws::new("fx-errors").await;
    aws.onboard("acme", true, &["contacts"]).await;
    let mut f = LambdaProcess::start(&binary("export"), "export", &aws.function_env()).await;

    let unknown = command_event(
        "ExportRequested",
        json!({"tenant_id": "acme", "job_id": "not-defined"}),
        chrono::Utc::now(),
    );
    match f.invoke(&unknown, BUDGET).await {
        Outcome::Error { error_type, body } => {
            assert_eq!(error_type, "NonRetryable", "{body}");
            assert!(
                body["errorMessage"]
                    .as_str()
                    .unwrap()
                    .starts_with("unknown_job:"),
                "{body}"
            );
        }
        other => panic!("expected an error, got {other:?}"),
    }
    // A retry command sent to the export function: refused, not run.
    let wrong = command_event(
        "ExportErrorRetryRequested",
        json!({"tenant_id": "acme", "job_id": "contacts"}),
        chrono::Utc::now(),
    );
    match f.invoke(&wrong, BUDGET).await {
        Outcome::Error { error_type, body } => {
            assert_eq!(error_type, "NonRetryable");
            assert!(
                body["errorMessage"]
                    .as_str()
                    .unwrap()
                    .starts_with("bad_event:"),
                "{body}"
            );
        }
        other => panic!("expected an error, got {other:?}"),
    }
    // The same warm process still serves a good event afterwards (clients built once).
    let fine = command_event(
        "ExportRequested",
        json!({"tenant_id": "acme", "job_id": "contacts"}),
        chrono::Utc::now(),
    );
    let report = f.invoke(&fine, BUDGET).await.ok();
    assert_eq!(
        report["outcome"]["outcome"], "completed",
        "nothing queued: {report}"
    );
    let logs = f.stop().await;
    let errors = logs.metric_doc("RunErrors");
    assert_eq!(errors["Code"], "unknown_job");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_function_blocks_a_job_whose_tenant_has_no_crm_secret() {
    let aws = Aws::new("fx-nosecret").await;
    let tenant = aws.onboard("acme", true, &["contacts"]).await;
    let contacts = job(&tenant, "contacts");
    aws.store
        .enqueue(
            &contacts,
            vec![contact("c-1", "Lovelace", "a@example.com")],
            chrono::Utc::now(),
        )
        .await
        .unwrap();
    let mut f = LambdaProcess::start(&binary("export"), "export", &aws.function_env()).await;
    let event = command_event(
        "ExportRequested",
        json!({"tenant_id": "acme", "job_id": "contacts"}),
        chrono::Utc::now(),
    );
    let report = f.invoke(&event, BUDGET).await.ok();
    f.stop().await;
    // Not a function error: a configuration problem of one tenant, shown on the job.
    assert_eq!(report["outcome"]["outcome"], "blocked", "{report}");
    let state = aws.store.load_state(&contacts).await.unwrap();
    let block = state.block.expect("the job is blocked");
    assert_eq!(block.code, "CRM_CREDENTIALS_MISSING");
    assert_eq!(state.cursor, 0);
    let events = aws.bus_events(1).await;
    assert_eq!(of_type(&events, "ExportJobBlocked").len(), 1, "{events:#?}");
}

async fn set_state(aws: &Aws, j: &JobRef, state: JobState, errors: Vec<ErrorWrite>) {
    let now = chrono::Utc::now();
    let lease = aws
        .store
        .acquire_lease(j, &RunId::random(), now, Duration::from_secs(60))
        .await
        .unwrap()
        .unwrap();
    aws.store
        .commit(
            j,
            &lease,
            now,
            Commit {
                state,
                errors,
                events: vec![],
                ..Commit::default()
            },
        )
        .await
        .unwrap();
    aws.store.release_lease(j, &lease).await.unwrap();
}

fn open_item(key: &str, seq: Seq, fields: Value, last_attempt: Timestamp) -> ExportErrorItem {
    ExportErrorItem {
        key: RecordKey::from_stored(key),
        seq,
        fields: serde_json::from_value(fields).unwrap(),
        error: RecordError::new("FIELD_CUSTOM_VALIDATION_EXCEPTION", "refused"),
        status: ErrorStatus::Open,
        attempts: 1,
        retry_attempts: 0,
        first_seen: last_attempt,
        last_seen: last_attempt,
        last_attempt_at: last_attempt,
        resolved_at: None,
        resolved_by_seq: None,
    }
}

fn commands(events: &[Value]) -> Vec<String> {
    let mut out: Vec<String> = events
        .iter()
        .filter(|e| e["source"] == "crm-export.internal")
        .map(|e| {
            format!(
                "{} {}/{}",
                e["detail-type"].as_str().unwrap(),
                e["detail"]["tenant_id"].as_str().unwrap(),
                e["detail"]["job_id"].as_str().unwrap()
            )
        })
        .collect();
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dispatcher_fans_out_commands_and_emits_the_job_gauges() {
    let aws = Aws::new("fx-dispatch").await;
    let now = chrono::Utc::now();
    let two_days_ago = now - chrono::Duration::days(2);
    let acme = aws.onboard("acme", true, &["busy", "idle", "halted"]).await;
    let globex = aws.onboard("globex", false, &["busy"]).await;
    aws.store
        .enqueue(
            &job(&acme, "busy"),
            vec![contact("b-1", "L", "a@example.com")],
            now - chrono::Duration::minutes(40),
        )
        .await
        .unwrap();
    aws.store
        .enqueue(
            &job(&globex, "busy"),
            vec![contact("g-1", "L", "a@example.com")],
            now,
        )
        .await
        .unwrap();
    // Halted two days ago on seq 1; the last retry pass was two days ago too: overdue.
    let halted = job(&acme, "halted");
    aws.store
        .enqueue(
            &halted,
            vec![contact("h-1", "Refused", "a@example.com")],
            two_days_ago,
        )
        .await
        .unwrap();
    let state = JobState {
        halt: Some(Halt {
            seq: 1,
            key: RecordKey::from_stored("h-1"),
            error: RecordError::new("FIELD_CUSTOM_VALIDATION_EXCEPTION", "refused"),
            since: two_days_ago,
            attempts: 5,
            last_attempt_at: two_days_ago,
        }),
        last_retry_completed_at: Some(two_days_ago),
        ..JobState::default()
    };
    let item = open_item("h-1", 1, json!({"External_Id__c": "h-1"}), two_days_ago);
    set_state(&aws, &halted, state, vec![ErrorWrite::Put(item)]).await;

    let mut f =
        LambdaProcess::start(&binary("dispatcher"), "dispatcher", &aws.function_env()).await;
    // What a scheduled rule delivers.
    let scheduled = json!({
        "version": "0", "id": "53dc4d37-cffa-4f76-80c9-8b7d4a4d2eaa",
        "detail-type": "Scheduled Event", "source": "aws.events",
        "account": "123456789012", "time": now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "region": "us-east-1",
        "resources": ["arn:aws:events:us-east-1:123456789012:rule/crm-export-tick"],
        "detail": {}
    });
    let answer = f.invoke(&scheduled, BUDGET).await.ok();
    assert_eq!(answer["status"], "dispatched", "{answer}");
    let events = aws.bus_events(4).await;
    assert_eq!(
        commands(&events),
        [
            "ExportErrorRetryRequested acme/halted",
            "ExportRequested acme/busy",
            "ExportRequested acme/halted",
        ],
        "idle jobs and tenants with exporting off get no command"
    );
    // The onboarding's SettingsChanged events were in the outbox: the tick published them
    // (both tenants', exporting on or off) and emptied the outbox in DynamoDB.
    assert_eq!(of_type(&events, "SettingsChanged").len(), 2, "{events:#?}");
    for t in [&acme, &globex] {
        assert!(aws.store.pending_events(t).await.unwrap().is_empty());
    }

    // The daily sweep (Scheduler input): a retry command for each job with open items.
    let daily = json!({"sweep": "retry", "time": now.to_rfc3339()});
    let answer = f.invoke(&daily, BUDGET).await.ok();
    assert_eq!(answer["sweep"], "retry");
    let events = aws.bus_events(1).await;
    assert_eq!(commands(&events), ["ExportErrorRetryRequested acme/halted"]);

    // A tick delivered late is dropped: the next one is due.
    let late = json!({"sweep": "export", "time": (now - chrono::Duration::hours(1)).to_rfc3339()});
    let answer = f.invoke(&late, BUDGET).await.ok();
    assert_eq!(answer["status"], "dropped");
    let logs = f.stop().await;
    assert!(commands(&aws.bus_events(0).await).is_empty());

    // The gauges: fleet-wide aggregates (what the alarms watch) and one line per job.
    let summary = logs.metric_doc("OldestHaltAge");
    assert_eq!(
        summary["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
        json!([["Service"]])
    );
    assert_eq!(summary["Service"], "crm-export-test");
    assert_eq!(summary["JobsEnabled"], 3.0);
    assert_eq!(summary["JobsHalted"], 1.0);
    assert_eq!(summary["JobsBlocked"], 0.0);
    assert_eq!(summary["CommandsPublished"], 3.0);
    assert!(
        summary["OldestHaltAge"].as_f64().unwrap() >= 2.0 * 86400.0 - 60.0,
        "{summary}"
    );
    // The oldest un-exported record is the halted one, queued two days ago.
    assert!(summary["OldestUnexportedAge"].as_f64().unwrap() >= 2.0 * 86400.0 - 60.0);
    assert_eq!(summary["OpenExportErrors"], 1.0);
    let per_job: Vec<Value> = logs
        .metrics()
        .into_iter()
        .filter(|d| d.get("JobHaltAge").is_some())
        .collect();
    let idle = per_job
        .iter()
        .find(|d| d["JobId"] == "idle")
        .expect("a gauge for the idle job");
    assert_eq!(idle["JobBacklog"], 0.0);
    assert_eq!(idle["JobHaltAge"], 0.0);
    let busy = per_job
        .iter()
        .find(|d| d["JobId"] == "busy" && d["TenantId"] == "acme")
        .unwrap();
    assert!(busy["JobOldestUnexportedAge"].as_f64().unwrap() >= 40.0 * 60.0 - 60.0);
    assert!(
        per_job.iter().all(|d| d["TenantId"] != "globex"),
        "no gauges for disabled tenants"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_function_resends_open_export_errors_and_resolves_them() {
    let aws = Aws::new("fx-retry").await;
    // The org's rule that refused the record is gone: the stored version goes through now.
    let sim = simulator("rt-retry", false).await;
    let tenant = aws.onboard("acme", true, &["contacts"]).await;
    let contacts = job(&tenant, "contacts");
    aws.put_secret("acme", &salesforce_secret(&sim, "rt-retry"))
        .await;
    let yesterday = chrono::Utc::now() - chrono::Duration::hours(25);
    aws.store
        .enqueue(
            &contacts,
            vec![contact("r-1", "Refused", "a@example.com")],
            yesterday,
        )
        .await
        .unwrap();
    // Logged with pause off and passed over: cursor past it, item open.
    let fields = json!({"External_Id__c": "r-1", "LastName": "Curie", "Email": "a@example.com"});
    let state = JobState {
        cursor: 1,
        ..JobState::default()
    };
    set_state(
        &aws,
        &contacts,
        state,
        vec![ErrorWrite::Put(open_item("r-1", 1, fields, yesterday))],
    )
    .await;

    let mut f = LambdaProcess::start(
        &binary("export-error-retry"),
        "export-error-retry",
        &aws.function_env(),
    )
    .await;
    let event = command_event(
        "ExportErrorRetryRequested",
        json!({"tenant_id": "acme", "job_id": "contacts", "run_id": "run-from-the-api"}),
        chrono::Utc::now(),
    );
    let report = f.invoke(&event, BUDGET).await.ok();
    let logs = f.stop().await;

    assert_eq!(report["kind"], "retry");
    assert_eq!(
        report["run_id"], "run-from-the-api",
        "the API's run id is the run's"
    );
    assert_eq!(report["outcome"]["outcome"], "completed", "{report}");
    let item = aws
        .store
        .get_error(&contacts, &RecordKey::from_stored("r-1"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(item.status, ErrorStatus::Resolved);
    let state = aws.store.load_state(&contacts).await.unwrap();
    assert!(state.last_retry_completed_at.is_some());
    let records = sim.records(support::OBJECT).unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].fields["LastName"], "Curie");
    let events = aws.bus_events(1).await;
    let retried = of_type(&events, "ExportErrorsRetried");
    assert_eq!(retried.len(), 1, "{events:#?}");
    assert_eq!(retried[0]["detail"]["run_id"], "run-from-the-api");
    assert_eq!(logs.metric_doc("RecordsExported")["RunKind"], "retry");
}

/// An API Gateway HTTP API (payload 2.0) request with a JWT authorizer's claims.
fn api_request(
    method: &str,
    path: &str,
    headers: Value,
    body: Option<Value>,
    tenant: &str,
) -> Value {
    json!({
        "version": "2.0",
        "routeKey": format!("{method} /v1/{{proxy+}}"),
        "rawPath": path,
        "rawQueryString": "",
        "headers": headers,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "abc123",
            "authorizer": {"jwt": {
                "claims": {
                    "sub": "7c1e2f3a-0000-4000-8000-00000000abcd",
                    "tenant_id": tenant,
                    "scope": "crm-export/read crm-export/write",
                    "iss": "https://cognito-idp.us-east-1.amazonaws.com/us-east-1_Example",
                    "token_use": "access"
                },
                "scopes": null
            }},
            "domainName": "abc123.execute-api.us-east-1.amazonaws.com",
            "domainPrefix": "abc123",
            "http": {"method": method, "path": path, "protocol": "HTTP/1.1", "sourceIp": "203.0.113.7", "userAgent": "test"},
            "requestId": uuid::Uuid::new_v4().to_string(),
            "routeKey": format!("{method} /v1/{{proxy+}}"),
            "stage": "$default",
            "time": "01/Jan/2026:00:00:00 +0000",
            "timeEpoch": 1767225600000u64
        },
        "body": body.map(|b| b.to_string()),
        "isBase64Encoded": false
    })
}

fn body_of(response: &Value) -> Value {
    serde_json::from_str(response["body"].as_str().unwrap_or("null")).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_api_serves_the_callers_tenant_and_publishes_changes_and_retry_requests() {
    let aws = Aws::new("fx-api").await;
    let tenant = aws.onboard("acme", true, &["contacts"]).await;
    let mut f =
        LambdaProcess::start(&binary("settings-api"), "settings-api", &aws.function_env()).await;

    let get = api_request(
        "GET",
        "/v1/settings",
        json!({"accept": "application/json"}),
        None,
        "acme",
    );
    let response = f.invoke(&get, BUDGET).await.ok();
    assert_eq!(response["statusCode"], 200, "{response}");
    let settings = body_of(&response);
    assert_eq!(settings["settings"]["export_to_crm"], true, "{settings}");
    assert_eq!(settings["version"], 1);
    assert_eq!(response["headers"]["etag"], "\"1\"");

    let patch = api_request(
        "PATCH",
        "/v1/settings",
        json!({"content-type": "application/json", "if-match": "\"1\""}),
        Some(json!({"batch_size": 50})),
        "acme",
    );
    let response = f.invoke(&patch, BUDGET).await.ok();
    assert_eq!(response["statusCode"], 200, "{response}");
    assert_eq!(body_of(&response)["settings"]["batch_size"], 50);
    let stored = crm_export_core::ports::SettingsStore::get_settings(&aws.store, &tenant)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.version, 2);
    assert_eq!(stored.settings.batch_size.get(), 50);

    let retry = api_request(
        "POST",
        "/v1/jobs/contacts/retry-runs",
        json!({}),
        None,
        "acme",
    );
    let response = f.invoke(&retry, BUDGET).await.ok();
    assert_eq!(response["statusCode"], 202, "{response}");
    let run_id = body_of(&response)["run_id"].as_str().unwrap().to_string();

    // Another tenant's token sees its own (empty) settings, never acme's.
    let other = api_request("GET", "/v1/jobs/contacts", json!({}), None, "globex");
    let response = f.invoke(&other, BUDGET).await.ok();
    assert_eq!(response["statusCode"], 404, "{response}");
    f.stop().await;

    let events = aws.bus_events(3).await;
    let changed = of_type(&events, "SettingsChanged");
    assert!(
        changed.iter().any(|e| e["detail"]["version"] == 2),
        "{events:#?}"
    );
    let requested = of_type(&events, "ExportErrorRetryRequested");
    assert_eq!(requested.len(), 1, "{events:#?}");
    assert_eq!(requested[0]["source"], "crm-export.internal");
    assert_eq!(requested[0]["detail"]["tenant_id"], "acme");
    assert_eq!(requested[0]["detail"]["job_id"], "contacts");
    assert_eq!(requested[0]["detail"]["run_id"], run_id.as_str());
}
