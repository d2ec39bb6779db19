//! Enqueue in every format and run exports and retries against a simulator: one in the test
//! process, and one started as `crmx sim`.

mod common;

use common::{coral_cloud, fixture, Crmx, Sim, JOB};
use std::io::{BufRead, BufReader};
use std::process::Stdio;

fn path(name: &str) -> String {
    fixture(name).to_string_lossy().into_owned()
}

fn exporting() -> Crmx {
    let c = Crmx::new();
    c.define_contacts();
    c.ok(&["settings", "set", "--export-to-crm", "on"]);
    c
}

#[test]
fn every_format_enqueues_and_exports() {
    let sim = Sim::start();
    let c = exporting();

    // sObject Tree: FX-T-001 and fx-t-001 are one key (the job folds case).
    let tree = c.json(&["enqueue", "--job", JOB, &path("contacts.json")]);
    assert_eq!(
        (tree["records"].as_u64(), tree["distinct_keys"].as_u64()),
        (Some(3), Some(2))
    );
    assert_eq!(
        (tree["first_seq"].as_u64(), tree["last_seq"].as_u64()),
        (Some(1), Some(3))
    );
    // NDJSON, with a blank line that is skipped.
    let nd = c.json(&["enqueue", "--job", JOB, &path("contacts.ndjson")]);
    assert_eq!(
        (nd["records"].as_u64(), nd["first_seq"].as_u64()),
        (Some(3), Some(4))
    );
    // CSV, with the format given explicitly this time.
    let csv = c.json(&[
        "enqueue",
        "--job",
        JOB,
        &path("contacts.csv"),
        "--format",
        "csv",
    ]);
    assert_eq!(
        (csv["records"].as_u64(), csv["last_seq"].as_u64()),
        (Some(3), Some(9))
    );

    let st = c.json(&["status", "--job", JOB]);
    assert_eq!(
        (
            st["jobs"][0]["backlog"].as_u64(),
            st["jobs"][0]["state"].as_str()
        ),
        (Some(9), Some("behind"))
    );

    let run = c.run(&["export", "--job", JOB, "--sim", &sim.url(), "--json"]);
    assert_eq!(run.code, 0, "{run:?}");
    let report = &run.json()["report"];
    assert_eq!(report["outcome"]["outcome"], "completed");
    assert_eq!(report["counts"]["accepted"], 8);
    assert_eq!(report["counts"]["superseded"], 1);
    assert_eq!(report["cursor_after"], 9);

    assert_eq!(
        sim.contact_keys(),
        [
            "FX-C-001", "FX-C-002", "FX-C-003", "FX-N-001", "FX-N-002", "FX-N-003", "FX-T-002",
            "fx-t-001"
        ]
    );
    let records = sim.handle.records("Contact").unwrap();
    let get = |k: &str| {
        records
            .iter()
            .find(|r| r.external_id.eq_ignore_ascii_case(k))
            .unwrap()
    };
    // The newer version of the folded key won; CSV empty cells were not sent as "".
    assert_eq!(get("FX-T-001").fields["LastName"], "Ortega-Ruiz");
    assert_eq!(get("FX-C-002").fields["LastName"], "Van der Berg, Jr.");
    assert!(!get("FX-C-003").fields.contains_key("FirstName"));
    assert!(!get("FX-C-001").fields.contains_key("MobilePhone"));

    let st = c.json(&["status", "--job", JOB]);
    assert_eq!(st["jobs"][0]["state"], "up_to_date");
    // Nothing left: a second run completes with nothing sent.
    let again = c.json(&["export", "--job", JOB, "--sim", &sim.url()]);
    assert_eq!(again["report"]["counts"]["sent"], 0);
}

#[test]
fn a_halt_is_shown_skipped_reopened_and_retried() {
    let sim = Sim::start();
    let c = exporting();
    c.ok(&["enqueue", "--job", JOB, &path("future-birthdate.ndjson")]);

    // Pause on: the run halts on the refused record (exit 10).
    let r = c.run(&["export", "--job", JOB, "--sim", &sim.url()]);
    assert_eq!(r.code, 10, "{r:?}");
    assert!(
        r.stdout
            .contains("HALTED on record fx-f-002 (seq 2): FIELD_CUSTOM_VALIDATION_EXCEPTION"),
        "{r:?}"
    );
    let st = c.json(&["status", "--job", JOB]);
    let job = &st["jobs"][0];
    assert_eq!(job["state"], "halted");
    assert_eq!(job["cursor"], 1);
    assert_eq!(job["halt"]["key"], "fx-f-002");
    assert_eq!(job["halt"]["attempts"], 1);
    assert_eq!(
        job["halt"]["error"]["code"],
        "FIELD_CUSTOM_VALIDATION_EXCEPTION"
    );
    assert_eq!(
        job["halt"]["error"]["message"],
        "Birthdate cannot be in the future"
    );
    assert!(job["halt"]["since"].is_string());
    let human = c.ok(&["status"]);
    assert!(
        human
            .stdout
            .contains("halted on record fx-f-002 (seq 2) since"),
        "{human:?}"
    );
    assert!(human.stdout.contains("1 attempt,"), "{human:?}");

    // Field names by default; values only on request (personal data).
    let e = c.json(&["errors", "--job", JOB]);
    let item = &e["items"][0];
    assert_eq!(item["key"], "fx-f-002");
    assert!(item["field_names"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f == "Birthdate"));
    assert!(item.get("fields").is_none(), "{item}");
    assert!(!c
        .ok(&["errors", "--job", JOB])
        .stdout
        .contains("2199-12-31"));
    let v = c.json(&["errors", "--job", JOB, "--include-values"]);
    assert_eq!(v["items"][0]["fields"]["Birthdate"], "2199-12-31");
    let by_code = c.json(&["errors", "--job", JOB, "--code", "NOPE"]);
    assert_eq!(by_code["items"].as_array().unwrap().len(), 0);

    // The next run probes the same record again: still halted, attempts 2.
    assert_eq!(
        c.run(&["export", "--job", JOB, "--sim", &sim.url()]).code,
        10
    );
    assert_eq!(
        c.json(&["status", "--job", JOB])["jobs"][0]["halt"]["attempts"],
        2
    );

    // Skipping needs the acknowledgement; with it the item is parked.
    let no_ack = c.run(&["skip-halted", "--job", JOB]);
    assert_eq!(no_ack.code, 5, "{no_ack:?}");
    assert!(
        no_ack.stderr.contains("error[acknowledgement_required]"),
        "{no_ack:?}"
    );
    let skipped = c.json(&[
        "skip-halted",
        "--job",
        JOB,
        "--acknowledge-data-inconsistency",
    ]);
    assert_eq!(skipped["status"], "parked");
    let not_halted = c.run(&[
        "skip-halted",
        "--job",
        JOB,
        "--acknowledge-data-inconsistency",
    ]);
    assert_eq!(not_halted.code, 5, "{not_halted:?}");

    // The run goes on past it.
    let done = c.json(&["export", "--job", JOB, "--sim", &sim.url()]);
    assert_eq!(done["report"]["outcome"]["outcome"], "completed");
    assert_eq!(sim.contact_keys(), ["FX-F-001", "FX-F-003"]);
    let st = c.json(&["status", "--job", JOB]);
    assert_eq!(
        (
            st["jobs"][0]["parked_errors"].as_u64(),
            st["jobs"][0]["open_errors"].as_u64()
        ),
        (Some(1), Some(0))
    );

    // Re-opened (the key is folded like the job's keys), the retry run sends it again.
    let reopened = c.json(&["reopen", "--job", JOB, "FX-F-002"]);
    assert_eq!(reopened["status"], "open");
    let missing = c.run(&["reopen", "--job", JOB, "FX-NONE"]);
    assert_eq!(missing.code, 4, "{missing:?}");
    let retry = c.json(&["retry-errors", "--job", JOB, "--sim", &sim.url()]);
    assert_eq!(retry["report"]["kind"], "retry");
    assert_eq!(retry["report"]["counts"]["record_errors"], 1);
    let e = c.json(&["errors", "--job", JOB, "--status", "open"]);
    assert_eq!(e["items"][0]["retry_attempts"], 1);
    assert!(retry["events"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e == "ExportErrorsRetried"));
}

#[test]
fn runs_report_disabled_and_early_stops_with_their_codes() {
    let sim = Sim::start();
    let c = Crmx::new();
    c.define_contacts();
    c.ok(&["enqueue", "--job", JOB, &path("contacts.csv")]);
    // export_to_crm is off by default: the run does nothing (13).
    let r = c.run(&["export", "--job", JOB, "--sim", &sim.url()]);
    assert_eq!(r.code, 13, "{r:?}");
    assert!(
        r.stdout.contains("did nothing: export_to_crm is off"),
        "{r:?}"
    );
    assert_eq!(
        c.run(&["retry-errors", "--job", JOB, "--sim", &sim.url()])
            .code,
        13
    );
    assert!(sim.contact_keys().is_empty());

    // A deadline too close for one request: stopped early (12), nothing sent.
    c.ok(&["settings", "set", "--export-to-crm", "on"]);
    let r = c.run(&[
        "export",
        "--job",
        JOB,
        "--sim",
        &sim.url(),
        "--max-duration",
        "2s",
        "--json",
    ]);
    // Too short to send anything: refused up front rather than a run that never moves.
    assert_eq!(r.code, 3, "{r:?}");
    assert_eq!(r.json()["error"]["code"], "bad_input");
    assert!(sim.contact_keys().is_empty());

    // A CRM that does not answer: the request fails, nothing is recorded against records.
    let r = c.run(&[
        "export",
        "--job",
        JOB,
        "--sim",
        "http://127.0.0.1:9",
        "--json",
    ]);
    assert_eq!(r.code, 12, "{r:?}");
    assert_eq!(r.json()["report"]["outcome"]["outcome"], "request_failed");
    let st = c.json(&["status", "--job", JOB]);
    assert_eq!(
        (
            st["jobs"][0]["cursor"].as_u64(),
            st["jobs"][0]["open_errors"].as_u64()
        ),
        (Some(0), Some(0))
    );
}

#[test]
fn a_crm_file_connects_with_a_refresh_token() {
    let sim = Sim::start();
    let c = exporting();
    let crm = c.state_dir().join("crm.json");
    let cfg = serde_json::json!({
        "login_url": sim.url(),
        "credentials": {
            "grant": "refresh_token",
            "client_id": "crmx-demo-client",
            "client_secret": "crmx-demo-secret",
            "refresh_token": "crmx-demo-refresh-token"
        }
    });
    std::fs::write(&crm, cfg.to_string()).unwrap();
    c.ok(&["enqueue", "--job", JOB, &path("contacts.ndjson")]);
    let r = c.run(&["export", "--job", JOB, "--crm", crm.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(sim.contact_keys(), ["FX-N-001", "FX-N-002", "FX-N-003"]);
    // The secrets in the file never reach the output.
    assert!(
        !r.stdout.contains("crmx-demo-secret") && !r.stderr.contains("crmx-demo-refresh-token")
    );

    let bad = c.state_dir().join("bad-crm.json");
    std::fs::write(&bad, r#"{"login_url": "x"}"#).unwrap();
    let r = c.run(&["export", "--job", JOB, "--crm", bad.to_str().unwrap()]);
    assert_eq!(r.code, 3, "{r:?}");
    assert!(r.stderr.contains("is not a Salesforce connection"), "{r:?}");
}

/// Kills the `crmx sim` child when the test ends, whatever happens.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn crmx_sim_serves_the_demo_org_for_the_real_data() {
    let c = exporting();
    let mut child = Child(
        c.command(&["sim", "--json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("crmx sim starts"),
    );
    let mut line = String::new();
    BufReader::new(child.0.stdout.take().unwrap())
        .read_line(&mut line)
        .expect("the banner");
    let banner: serde_json::Value = serde_json::from_str(&line).expect("a JSON banner");
    let url = banner["url"].as_str().unwrap().to_owned();
    assert!(url.starts_with("http://127.0.0.1:"), "{banner}");
    assert_eq!(banner["client_id"], "crmx-demo-client");

    // The bundled coral-cloud file: 992 records, 941 keys; pause on halts on 10003177.
    let e = c.json(&["enqueue", "--job", JOB, coral_cloud().to_str().unwrap()]);
    assert_eq!(
        (e["records"].as_u64(), e["distinct_keys"].as_u64()),
        (Some(992), Some(941))
    );
    let r = c.run(&["export", "--job", JOB, "--sim", &url, "--json"]);
    assert_eq!(r.code, 10, "{r:?}");
    assert_eq!(r.json()["report"]["outcome"]["key"], "10003177");
    assert!(r.json()["events"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e == "ExportJobHalted"));
}
