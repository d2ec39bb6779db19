//! `crmx settings`: a round trip through the rules, the version and the history.

mod common;

use common::Crmx;

#[test]
fn settings_round_trip_with_versions_and_history() {
    let c = Crmx::new();
    let s = c.json(&["settings", "show"]);
    assert_eq!(s["version"], 0);
    assert_eq!(s["settings"]["export_to_crm"], false);
    assert_eq!(s["settings"]["pause_on_export_errors"], true);
    assert_eq!(s["settings"]["batch_size"], 200);
    // The pause setting is hidden (and unchangeable) while exporting is off.
    let shown = c.ok(&["settings", "show"]);
    assert!(
        shown.stdout.contains("(hidden while export_to_crm is off)"),
        "{shown:?}"
    );
    let r = c.run(&["settings", "set", "--pause-on-export-errors", "on"]);
    assert_eq!(r.code, 5, "{r:?}");
    assert!(
        r.stderr.contains("error[pause_setting_unavailable]"),
        "{r:?}"
    );

    let v1 = c.json(&[
        "settings",
        "set",
        "--export-to-crm",
        "on",
        "--batch-size",
        "50",
        "--daily-api-limit",
        "5000",
        "--max-retry-attempts",
        "5",
    ]);
    assert_eq!(v1["version"], 1);
    assert_eq!(v1["changed"], true);
    assert!(v1.get("warning").is_none(), "{v1}");
    let s = c.json(&["settings", "show"]);
    assert_eq!(s["version"], 1);
    assert_eq!(s["settings"]["batch_size"], 50);
    assert_eq!(s["settings"]["daily_api_limit"], 5000);
    assert_eq!(s["settings"]["max_retry_attempts"], 5);

    // Turning pause off with the acknowledgement prints the warning.
    let off = c.ok(&[
        "settings",
        "set",
        "--pause-on-export-errors",
        "off",
        "--acknowledge-data-inconsistency",
    ]);
    assert!(
        off.stdout.starts_with(
            "warning: Turning off pause on export errors lets export jobs move past records"
        ),
        "{off:?}"
    );
    let s = c.json(&["settings", "show"]);
    assert_eq!(
        (
            s["version"].as_u64(),
            s["settings"]["pause_on_export_errors"].as_bool()
        ),
        (Some(2), Some(false))
    );

    // A write based on an old version is refused and changes nothing.
    let stale = c.run(&[
        "settings",
        "set",
        "--batch-size",
        "100",
        "--if-version",
        "1",
    ]);
    assert_eq!(stale.code, 5, "{stale:?}");
    assert!(
        stale.stderr.contains("error[version_conflict]"),
        "{stale:?}"
    );
    assert_eq!(c.json(&["settings", "show"])["settings"]["batch_size"], 50);
    let fresh = c.json(&[
        "settings",
        "set",
        "--batch-size",
        "100",
        "--if-version",
        "2",
    ]);
    assert_eq!(fresh["version"], 3);

    // Turning pause back on needs no acknowledgement; a no-op is not recorded.
    let on = c.json(&["settings", "set", "--pause-on-export-errors", "on"]);
    assert_eq!(
        (
            on["version"].as_u64(),
            on["acknowledged_data_inconsistency"].as_bool()
        ),
        (Some(4), Some(false))
    );
    let same = c.json(&["settings", "set", "--pause-on-export-errors", "on"]);
    assert_eq!(
        (same["changed"].as_bool(), same["version"].as_u64()),
        (Some(false), Some(4))
    );

    // Every change is recorded, newest first, with who and whether it was acknowledged.
    let h = c.json(&["settings", "history"]);
    let changes = h["entries"].as_array().unwrap();
    assert_eq!(changes.len(), 4, "{h:#}");
    let versions: Vec<u64> = changes
        .iter()
        .map(|c| c["version"].as_u64().unwrap())
        .collect();
    assert_eq!(versions, [4, 3, 2, 1]);
    assert!(changes.iter().all(|c| c["actor"] == "cli:tester"), "{h:#}");
    let acked: Vec<bool> = changes
        .iter()
        .map(|c| c["acknowledged_data_inconsistency"].as_bool().unwrap())
        .collect();
    assert_eq!(acked, [false, false, true, false]);
    assert_eq!(changes[2]["old"]["pause_on_export_errors"], true);
    assert_eq!(changes[2]["new"]["pause_on_export_errors"], false);
    assert_eq!(
        changes[2]["changes"],
        serde_json::json!([{"setting": "pause_on_export_errors", "old": true, "new": false}])
    );
    let human = c.ok(&["settings", "history"]);
    assert!(
        human
            .stdout
            .contains("(data inconsistency acknowledged): pause_on_export_errors true -> false"),
        "{human:?}"
    );
}

#[test]
fn tenants_have_their_own_settings() {
    let c = Crmx::new();
    c.ok(&[
        "settings",
        "set",
        "--export-to-crm",
        "on",
        "--tenant",
        "acme",
    ]);
    assert_eq!(
        c.json(&["settings", "show", "--tenant", "acme"])["settings"]["export_to_crm"],
        true
    );
    assert_eq!(
        c.json(&["settings", "show"])["settings"]["export_to_crm"],
        false
    );
}
