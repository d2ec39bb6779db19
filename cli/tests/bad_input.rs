//! Bad input gets a clear error, a documented non-zero exit code, and changes nothing.

mod common;

use common::{fixture, Crmx, JOB};

/// A state with a job, settings and queued records, so "changes nothing" means something.
fn prepared() -> Crmx {
    let c = Crmx::new();
    c.define_contacts();
    c.ok(&["settings", "set", "--export-to-crm", "on"]);
    c.ok(&[
        "enqueue",
        "--job",
        JOB,
        fixture("contacts.ndjson").to_str().unwrap(),
    ]);
    c
}

fn path(name: &str) -> String {
    fixture(name).to_string_lossy().into_owned()
}

/// Runs a command that must fail with `exit` and a message containing `needle`, in human
/// and JSON mode, and checks that the state is unchanged.
fn refused(c: &Crmx, args: &[&str], exit: i32, code: &str, needle: &str) {
    let before = c.snapshot();
    let r = c.run(args);
    assert_eq!(r.code, exit, "crmx {args:?}: {r:?}");
    assert!(
        r.stderr.starts_with(&format!("error[{code}]: ")),
        "crmx {args:?}: {r:?}"
    );
    assert!(r.stderr.contains(needle), "crmx {args:?}: {r:?}");
    assert!(
        r.stdout.is_empty(),
        "an error prints nothing on stdout: {r:?}"
    );

    let mut with_json = args.to_vec();
    with_json.push("--json");
    let j = c.run(&with_json);
    assert_eq!(j.code, exit, "{j:?}");
    let doc = j.json();
    assert_eq!(doc["error"]["code"], code, "{doc}");
    assert_eq!(doc["error"]["exit_code"], exit, "{doc}");
    assert!(
        doc["error"]["message"].as_str().unwrap().contains(needle),
        "{doc}"
    );

    assert_eq!(c.snapshot(), before, "crmx {args:?} changed the state");
}

#[test]
fn an_unreadable_file_is_bad_input() {
    let c = prepared();
    let missing = c.state_dir().join("no-such-file.json");
    refused(
        &c,
        &["enqueue", "--job", JOB, missing.to_str().unwrap()],
        3,
        "bad_input",
        "cannot read",
    );
    // A directory is not a file either.
    let dir = c.state_dir().join("a-dir.json");
    std::fs::create_dir(&dir).unwrap();
    refused(
        &c,
        &["enqueue", "--job", JOB, dir.to_str().unwrap()],
        3,
        "bad_input",
        "cannot read",
    );
}

#[test]
fn a_wrong_format_is_bad_input_with_the_line() {
    let c = prepared();
    refused(
        &c,
        &[
            "enqueue",
            "--job",
            JOB,
            &path("contacts.csv"),
            "--format",
            "tree",
        ],
        3,
        "bad_input",
        "malformed JSON at line 1",
    );
    refused(
        &c,
        &["enqueue", "--job", JOB, &path("malformed.ndjson")],
        3,
        "bad_input",
        "malformed JSON at line 3",
    );
    refused(
        &c,
        &[
            "enqueue",
            "--job",
            JOB,
            &path("contacts.json"),
            "--format",
            "csv",
        ],
        3,
        "bad_input",
        "looks like JSON, not CSV",
    );
    refused(
        &c,
        &["enqueue", "--job", JOB, &path("notes.txt")],
        3,
        "bad_input",
        "pass --format",
    );
}

#[test]
fn a_record_without_its_key_is_named_and_nothing_is_enqueued() {
    let c = prepared();
    refused(
        &c,
        &["enqueue", "--job", JOB, &path("no-key.json")],
        3,
        "bad_input",
        "record #2 (KeyRef2): has no External_Id__c (the key of job contacts)",
    );
    // The valid records around it were not queued either (all or nothing).
    let st = c.json(&["status", "--job", JOB]);
    assert_eq!(st["jobs"][0]["head"], 3, "{st}");
}

#[test]
fn an_unknown_job_is_not_found() {
    let c = prepared();
    refused(
        &c,
        &["enqueue", "--job", "nope", &path("contacts.ndjson")],
        4,
        "unknown_job",
        "job nope is not defined for tenant demo",
    );
    refused(&c, &["status", "--job", "nope"], 4, "unknown_job", "nope");
    refused(&c, &["errors", "--job", "nope"], 4, "unknown_job", "nope");
    // Checked before connecting anywhere: the CRM URL is never dialled.
    refused(
        &c,
        &["export", "--job", "nope", "--sim", "http://127.0.0.1:9"],
        4,
        "unknown_job",
        "nope",
    );
    refused(
        &c,
        &["reopen", "--job", "nope", "some-key"],
        4,
        "unknown_job",
        "nope",
    );
    // Another tenant does not see this tenant's job.
    refused(
        &c,
        &["status", "--job", JOB, "--tenant", "other"],
        4,
        "unknown_job",
        "tenant other",
    );
}

#[test]
fn invalid_settings_are_refused_by_the_rules() {
    let c = prepared();
    refused(
        &c,
        &["settings", "set", "--batch-size", "150"],
        5,
        "invalid_setting",
        "batch_size must be one of 25, 50, 100 or 200, not 150",
    );
    refused(
        &c,
        &["settings", "set", "--pause-on-export-errors", "off"],
        5,
        "acknowledgement_required",
        "it is your responsibility to resolve the errors logged in ExportErrors",
    );
    refused(
        &c,
        &[
            "settings",
            "set",
            "--daily-api-limit",
            "5",
            "--batch-size",
            "50",
        ],
        5,
        "invalid_setting",
        "daily_api_limit must be between 1000 and 10000000",
    );
    refused(
        &c,
        &["settings", "set"],
        5,
        "empty_change",
        "names no setting",
    );
}

#[test]
fn bad_values_and_usage_errors_have_their_codes() {
    let c = prepared();
    refused(
        &c,
        &[
            "jobs",
            "define",
            "Bad Job",
            "--object",
            "Contact",
            "--external-id-field",
            "X",
        ],
        3,
        "bad_input",
        "job id \"Bad Job\" is invalid",
    );
    refused(
        &c,
        &["status", "--tenant", "Acme_Corp"],
        3,
        "bad_input",
        "tenant id",
    );
    refused(
        &c,
        &[
            "export",
            "--job",
            JOB,
            "--sim",
            "http://x",
            "--max-duration",
            "soon",
        ],
        3,
        "bad_input",
        "--max-duration \"soon\"",
    );
    refused(
        &c,
        &["errors", "--job", JOB, "--status", "broken"],
        3,
        "bad_input",
        "--status \"broken\"",
    );
    // clap's refusals are usage errors (2), also in JSON.
    refused(
        &c,
        &["enqueue", &path("contacts.ndjson")],
        2,
        "usage",
        "--job",
    );
    refused(&c, &["export", "--job", JOB], 2, "usage", "--crm");
    refused(&c, &["status", "--frobnicate"], 2, "usage", "--frobnicate");
}

#[test]
fn help_lists_the_exit_codes() {
    let c = Crmx::new();
    let r = c.ok(&["--help"]);
    for line in [
        "Exit codes:",
        " 3  bad input",
        "10  run halted",
        "12  run stopped early",
    ] {
        assert!(
            r.stdout.contains(line),
            "{line:?} not in help:\n{}",
            r.stdout
        );
    }
}
