//! `crmx demo`, end to end: the real binary, the bundled coral-cloud data, the simulator.

mod common;

use common::Crmx;

#[test]
fn the_demo_passes_and_its_counts_match_the_data() {
    let c = Crmx::new();
    let r = c.run(&["demo", "--json"]);
    assert_eq!(r.code, 0, "the demo failed: {r:?}");
    let d = r.json();
    assert_eq!(d["passed"], true, "{d:#}");

    // The counts the data dictates (992 records, 941 keys, 51 older versions per wave,
    // 23 newest versions with a Birthdate in the future until 2042, 2 with Photo_URL__c).
    let s = &d["summary"];
    assert_eq!(s["records_enqueued"], 1984);
    assert_eq!(s["distinct_keys"], 941);
    assert_eq!(s["org_contacts"], 941);
    assert_eq!(s["superseded_in_queue"], 102);
    assert_eq!(s["errors_open"], 23);
    assert_eq!(s["errors_resolved"], 2);
    assert_eq!(s["errors_parked"], 0);
    // Every key was accepted at least once per wave, bar the 23 refused in wave 2.
    assert!(s["accepted"].as_u64().unwrap() >= 941 + 941 - 23, "{s}");

    let checks = d["checks"].as_array().expect("checks");
    assert!(checks.len() >= 10, "{checks:?}");
    for c in checks {
        assert_eq!(c["pass"], true, "check failed: {c}");
    }
    let names: Vec<&str> = checks.iter().filter_map(|c| c["name"].as_str()).collect();
    for needle in [
        "Contact records in the org = distinct keys",
        "every key with an open item holds its previous version",
        "every other key holds its newest version",
    ] {
        assert!(
            names.iter().any(|n| n.starts_with(needle)),
            "missing check {needle:?} in {names:?}"
        );
    }
    let halted = &d["phases"][0]["runs"][0]["outcome"];
    assert_eq!(halted["outcome"], "halted");
    assert_eq!(halted["key"], "10003177");
    assert!(d["elapsed_secs"].as_f64().unwrap() < 30.0, "too slow: {d}");

    // The state stays in the given state dir, readable by the other commands.
    let st = c.json(&["status", "--job", "contacts"]);
    let job = &st["jobs"][0];
    assert_eq!(job["state"], "up_to_date");
    assert_eq!(job["cursor"], 1984);
    assert_eq!(job["open_errors"], 23);

    // A second demo on the same state would mix two runs: refused, nothing changed.
    let before = c.snapshot();
    let again = c.run(&["demo", "--json"]);
    assert_eq!(again.code, 5, "{again:?}");
    assert_eq!(again.json()["error"]["code"], "demo_state_not_empty");
    assert_eq!(c.snapshot(), before);
}

#[test]
fn the_demo_prints_phases_counts_and_checks_but_no_record_values() {
    let c = Crmx::new();
    let r = c.run(&["demo"]);
    assert_eq!(r.code, 0, "{r:?}");
    for needle in [
        "== Phase 1",
        "HALTED on record 10003177",
        "FIELD_CUSTOM_VALIDATION_EXCEPTION: Birthdate cannot be in the future",
        "== Phase 2",
        "== Phase 3",
        "warning: Turning off pause on export errors",
        "INVALID_FIELD_FOR_INSERT_UPDATE 2",
        "== Phase 4",
        "2 resolved, 23 still open",
        "== Summary",
        "PASS  Contact records in the org = distinct keys",
        "demo PASSED",
    ] {
        assert!(
            r.stdout.contains(needle),
            "{needle:?} not printed:\n{}",
            r.stdout
        );
    }
    assert!(!r.stdout.contains("FAIL"), "{}", r.stdout);
    // Personal data stays out of the output: no e-mail, name or birthdate from the file
    // (ContactRef1 is Frayda Dowsing, born 1994-11-19; 10003177 is born 2042-05-03).
    for value in [
        "@example.com",
        "Dowsing",
        "Frayda",
        "1994-11-19",
        "2042-05-03",
    ] {
        assert!(
            !r.stdout.contains(value),
            "{value:?} printed:\n{}",
            r.stdout
        );
    }
}
