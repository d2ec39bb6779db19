//! `crmx --state dynamodb`: the troubleshooting path — run a job locally against the
//! service's DynamoDB tables. Here the tables live on the moto server that
//! `scripts/test-all` starts (`MOTO_ENDPOINT`); without it this test fails loudly.

mod common;

use common::{fixture, Crmx, Sim, JOB};
use crm_export_aws::{DynamoConfig, DynamoStore};

fn moto_endpoint() -> String {
    match std::env::var("MOTO_ENDPOINT") {
        Ok(v) if !v.trim().is_empty() => v,
        _ => panic!("MOTO_ENDPOINT is not set: this test needs the moto server that ./scripts/test-all starts"),
    }
}

#[test]
fn a_job_runs_locally_against_dynamodb_tables() {
    let endpoint = moto_endpoint();
    // This binary holds this one test, so setting the environment here races nothing.
    std::env::set_var("AWS_ENDPOINT_URL", &endpoint);
    std::env::set_var("AWS_REGION", "us-east-1");
    std::env::set_var("AWS_ACCESS_KEY_ID", "testing");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", "testing");
    let id = uuid::Uuid::new_v4().simple().to_string();
    let (state_table, queue_table) = (format!("crmx-{id}-state"), format!("crmx-{id}-queue"));
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = DynamoStore::from_env(DynamoConfig::new(&state_table, &queue_table)).await;
        store.create_tables().await.expect("tables on moto");
    });

    let sim = Sim::start();
    let c = Crmx::new();
    let with_state = |args: &[&str]| -> Vec<String> {
        let mut a: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        a.extend(
            [
                "--state",
                "dynamodb",
                "--state-table",
                &state_table,
                "--queue-table",
                &queue_table,
            ]
            .map(String::from),
        );
        a
    };
    let run = |args: &[&str]| {
        let a = with_state(args);
        let refs: Vec<&str> = a.iter().map(|s| s.as_str()).collect();
        c.run(&refs)
    };
    let define = run(&[
        "jobs",
        "define",
        JOB,
        "--object",
        "Contact",
        "--external-id-field",
        "External_Id__c",
        "--case-insensitive",
    ]);
    assert_eq!(define.code, 0, "{define:?}");
    assert_eq!(run(&["settings", "set", "--export-to-crm", "on"]).code, 0);
    let file = fixture("contacts.json").to_string_lossy().into_owned();
    let enq = run(&["enqueue", "--job", JOB, &file, "--json"]);
    assert_eq!(enq.code, 0, "{enq:?}");
    assert_eq!(enq.json()["records"], 3);

    let export = run(&["export", "--job", JOB, "--sim", &sim.url(), "--json"]);
    assert_eq!(export.code, 0, "{export:?}");
    assert_eq!(export.json()["report"]["outcome"]["outcome"], "completed");

    let st = run(&["status", "--job", JOB, "--json"]);
    assert_eq!(st.code, 0, "{st:?}");
    let job = &st.json()["jobs"][0];
    assert_eq!(
        (job["cursor"].as_u64(), job["backlog"].as_u64()),
        (Some(3), Some(0))
    );
    assert_eq!(
        sim.contact_keys().len(),
        2,
        "two distinct keys (one folded by case)"
    );
    // The state is in DynamoDB, not in the local state dir.
    assert!(!c.state_dir().join("crmx.sqlite").exists());
}
