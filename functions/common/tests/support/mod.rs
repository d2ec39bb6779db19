//! What the handler tests share: the function binaries, a moto-backed AWS (DynamoDB,
//! EventBridge → SQS to observe the bus, Secrets Manager), the Salesforce simulator, and
//! the Lambda Runtime API emulator in [`runtime`].
//!
//! Tests that need moto fail loudly without `MOTO_ENDPOINT` (`scripts/test-all` starts
//! one). The binaries are the ones `sam build` made when `CRM_EXPORT_LAMBDA_DIR` names
//! its cargo-lambda output (`target/lambda`, one `<bin>/bootstrap` each; the test script
//! sets it), otherwise they are built here with `cargo build`.

#![allow(dead_code)] // each test binary uses a different part

pub mod runtime;

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_dynamodb::config::Credentials;
use crm_export_aws::{DynamoConfig, DynamoStore, SdkTimeouts};
use crm_export_core::ports::{JobCatalog, SettingsStore};
use crm_export_core::*;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

pub const OBJECT: &str = "Contact";
pub const EXT: &str = "External_Id__c";
pub const CLIENT_ID: &str = "crmx-app";
pub const CLIENT_SECRET: &str = "crmx-app-secret";

/// The moto endpoint; panics with instructions when it is not set.
pub fn moto_endpoint() -> String {
    match std::env::var("MOTO_ENDPOINT") {
        Ok(v) if !v.trim().is_empty() => v,
        _ => panic!(
            "MOTO_ENDPOINT is not set: the handler tests need a moto server. Run ./scripts/test-all, \
             or start one (`moto_server -H 127.0.0.1 -p 5000`) and export MOTO_ENDPOINT=http://127.0.0.1:5000"
        ),
    }
}

pub async fn sdk() -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(moto_endpoint())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("testing", "testing", None, None, "moto"))
        .load()
        .await
}

/// moto answers one request at a time (shared/aws/tests/moto/serve.py) and tests run in
/// parallel, so calls can queue for seconds; AWS answers in milliseconds.
pub fn moto_timeouts() -> SdkTimeouts {
    SdkTimeouts {
        operation: Duration::from_secs(120),
        attempt: Duration::from_secs(60),
        ..SdkTimeouts::default()
    }
}

pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}

/// The path of a function's bootstrap binary.
pub fn binary(name: &str) -> PathBuf {
    if let Ok(dir) = std::env::var("CRM_EXPORT_LAMBDA_DIR") {
        let path = PathBuf::from(dir).join(name).join("bootstrap");
        assert!(
            path.is_file(),
            "CRM_EXPORT_LAMBDA_DIR is set but {} does not exist (run sam build or cargo lambda build)",
            path.display()
        );
        return path;
    }
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    let dir = BUILT.get_or_init(|| {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
        let status = std::process::Command::new(env!("CARGO"))
            .current_dir(&root)
            .args([
                "build",
                "-p",
                "export",
                "-p",
                "dispatcher",
                "-p",
                "export-error-retry",
                "-p",
                "settings-api",
            ])
            .status()
            .expect("run cargo build for the function binaries");
        assert!(status.success(), "building the function binaries failed");
        std::env::var("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|_| root.join("target"))
            .join("debug")
    });
    dir.join(name)
}

/// One test's private slice of AWS: tables, a bus whose every event lands in an SQS
/// queue, and the prefix of its tenant secrets.
pub struct Aws {
    pub sdk: SdkConfig,
    pub store: DynamoStore,
    pub bus: String,
    pub queue_url: String,
    pub secret_prefix: String,
    pub sqs: aws_sdk_sqs::Client,
    pub secrets: aws_sdk_secretsmanager::Client,
}

impl Aws {
    pub async fn new(prefix: &str) -> Self {
        let sdk = sdk().await;
        let name = unique(prefix);
        let mut config = DynamoConfig::new(format!("{name}-state"), format!("{name}-queue"));
        config.timeouts = moto_timeouts();
        let store = DynamoStore::new(&sdk, config);
        store
            .create_tables()
            .await
            .expect("create the tables on moto");

        let events = aws_sdk_eventbridge::Client::new(&sdk);
        let sqs = aws_sdk_sqs::Client::new(&sdk);
        let bus = format!("{name}-bus");
        events
            .create_event_bus()
            .name(&bus)
            .send()
            .await
            .expect("create the bus");
        let queue_url = sqs
            .create_queue()
            .queue_name(format!("{name}-observer"))
            .send()
            .await
            .expect("create the observer queue")
            .queue_url
            .unwrap();
        let queue_arn = sqs
            .get_queue_attributes()
            .queue_url(&queue_url)
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
            .send()
            .await
            .unwrap()
            .attributes
            .unwrap()[&aws_sdk_sqs::types::QueueAttributeName::QueueArn]
            .clone();
        // Everything the service puts on its bus: public events and internal commands.
        events
            .put_rule()
            .name(format!("{name}-all"))
            .event_bus_name(&bus)
            .event_pattern(json!({"source": ["crm-export", "crm-export.internal"]}).to_string())
            .send()
            .await
            .expect("create the observer rule");
        events
            .put_targets()
            .rule(format!("{name}-all"))
            .event_bus_name(&bus)
            .targets(
                aws_sdk_eventbridge::types::Target::builder()
                    .id("observer")
                    .arn(queue_arn)
                    .build()
                    .unwrap(),
            )
            .send()
            .await
            .expect("target the observer queue");
        Self {
            secrets: aws_sdk_secretsmanager::Client::new(&sdk),
            secret_prefix: format!("{name}/tenants/"),
            sdk,
            store,
            bus,
            queue_url,
            sqs,
        }
    }

    /// The environment the template gives the functions, pointed at moto.
    pub fn function_env(&self) -> Vec<(String, String)> {
        let cfg = self.store.config();
        [
            ("AWS_ENDPOINT_URL", moto_endpoint()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_ACCESS_KEY_ID", "testing".into()),
            ("AWS_SECRET_ACCESS_KEY", "testing".into()),
            ("STATE_TABLE", cfg.state_table.clone()),
            ("QUEUE_TABLE", cfg.queue_table.clone()),
            ("EVENT_BUS_NAME", self.bus.clone()),
            ("TENANT_SECRET_PREFIX", self.secret_prefix.clone()),
            ("COMMAND_MAX_AGE_SECONDS", "900".into()),
            ("METRICS_NAMESPACE", "CrmExportTest".into()),
            ("SERVICE_NAME", "crm-export-test".into()),
            ("SDK_OPERATION_TIMEOUT_MS", "120000".into()),
            ("SDK_ATTEMPT_TIMEOUT_MS", "60000".into()),
            ("CREDENTIAL_SETTLE_MS", "0".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// Every event that reached the bus so far (the EventBridge envelopes), waiting until
    /// at least `at_least` have arrived or 20 s have passed.
    pub async fn bus_events(&self, at_least: usize) -> Vec<Value> {
        let mut all = Vec::new();
        let until = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let out = self
                .sqs
                .receive_message()
                .queue_url(&self.queue_url)
                .max_number_of_messages(10)
                .wait_time_seconds(1)
                .send()
                .await
                .expect("receive from the observer queue");
            let msgs = out.messages.unwrap_or_default();
            let got = msgs.len();
            for m in msgs {
                all.push(serde_json::from_str(m.body().unwrap()).unwrap());
                self.sqs
                    .delete_message()
                    .queue_url(&self.queue_url)
                    .receipt_handle(m.receipt_handle().unwrap())
                    .send()
                    .await
                    .unwrap();
            }
            if (got == 0 && all.len() >= at_least) || std::time::Instant::now() > until {
                return all;
            }
        }
    }

    pub fn secret_name(&self, tenant: &str) -> String {
        format!("{}{tenant}/salesforce", self.secret_prefix)
    }

    /// Stores the tenant's Salesforce configuration as onboarding does.
    pub async fn put_secret(&self, tenant: &str, config: &Value) {
        self.secrets
            .create_secret()
            .name(self.secret_name(tenant))
            .secret_string(config.to_string())
            .send()
            .await
            .expect("create the tenant secret");
    }

    /// The tenant's secret as stored now (AWSCURRENT), with its version stages.
    pub async fn current_secret(&self, tenant: &str) -> (Value, String) {
        let out = self
            .secrets
            .get_secret_value()
            .secret_id(self.secret_name(tenant))
            .version_stage("AWSCURRENT")
            .send()
            .await
            .expect("read the tenant secret");
        (
            serde_json::from_str(out.secret_string().unwrap()).unwrap(),
            out.version_id().unwrap().to_string(),
        )
    }

    /// Settings with exporting on/off and the given jobs (object Contact, upsert on
    /// External_Id__c).
    pub async fn onboard(&self, tenant: &str, export_to_crm: bool, jobs: &[&str]) -> TenantId {
        let t: TenantId = tenant.parse().unwrap();
        let new = Settings {
            export_to_crm,
            ..Settings::default()
        };
        let now = chrono::Utc::now();
        let change = SettingsChange {
            version: 1,
            at: now,
            actor: "onboarding".into(),
            old: Settings::default(),
            new,
            acknowledged_data_inconsistency: false,
        };
        let event = Event {
            id: uuid::Uuid::new_v4().to_string(),
            kind: EventKind::SettingsChanged,
            tenant: t.clone(),
            job: None,
            at: now,
            detail: json!({"version": 1}),
        };
        self.store.put_settings(&t, 0, change, event).await.unwrap();
        for j in jobs {
            let def = JobDefinition {
                job_id: j.parse().unwrap(),
                object: OBJECT.into(),
                external_id_field: EXT.into(),
                key_field: None,
                key_case_insensitive: false,
                field_map: Default::default(),
            };
            self.store.put_job(&t, def).await.unwrap();
        }
        t
    }
}

/// A simulated org: Contact upserted on External_Id__c, LastName required, a validation
/// rule refusing LastName "Refused", one connected app whose refresh tokens rotate.
pub fn org(refresh_token: &str, with_rule: bool) -> sf_simulator::OrgDefinition {
    let rules = if with_rule {
        json!([{
            "name": "NotRefused",
            "error_condition": {"field": "LastName", "op": "eq", "value": "Refused"},
            "message": "This contact is refused by a validation rule",
            "error_field": "LastName"
        }])
    } else {
        json!([])
    };
    serde_json::from_value(json!({
        "oauth": {"clients": [{
            "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, "grants": ["refresh_token"],
            "refresh_tokens": [refresh_token], "rotate_refresh_tokens": true
        }]},
        "objects": {"Contact": {
            "fields": {
                "External_Id__c": {"type": "string", "external_id": true, "unique": true, "length": 40},
                "LastName": {"type": "string", "required": true, "length": 80},
                "Email": {"type": "email"}
            },
            "validation_rules": rules
        }}
    }))
    .expect("the test org parses")
}

pub async fn simulator(refresh_token: &str, with_rule: bool) -> sf_simulator::SimHandle {
    sf_simulator::serve(
        org(refresh_token, with_rule),
        sf_simulator::ServeOptions::default(),
    )
    .await
    .expect("the simulator starts")
}

/// The tenant secret's document: a `SalesforceConfig` for the simulator.
pub fn salesforce_secret(sim: &sf_simulator::SimHandle, refresh_token: &str) -> Value {
    json!({
        "login_url": sim.base_url(),
        "credentials": {
            "grant": "refresh_token",
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "refresh_token": refresh_token
        },
        "retry": {"max_attempts": 2}
    })
}

pub fn contact(key: &str, last_name: &str, email: &str) -> NewRecord {
    NewRecord {
        key: RecordKey::from_stored(key),
        fields: serde_json::from_value(json!({EXT: key, "LastName": last_name, "Email": email}))
            .unwrap(),
    }
}

/// An EventBridge custom event as a rule delivers it to Lambda.
pub fn command_event(
    detail_type: &str,
    detail: Value,
    time: chrono::DateTime<chrono::Utc>,
) -> Value {
    json!({
        "version": "0",
        "id": uuid::Uuid::new_v4().to_string(),
        "detail-type": detail_type,
        "source": "crm-export.internal",
        "account": "123456789012",
        "time": time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "region": "us-east-1",
        "resources": [],
        "detail": detail
    })
}

/// The events of one `detail-type` among `events`.
pub fn of_type<'a>(events: &'a [Value], detail_type: &str) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|e| e["detail-type"] == detail_type)
        .collect()
}

/// Lines of the run's span: every log line inside the run names its tenant, job and run.
pub fn run_lines(lines: &[Value]) -> Vec<&Value> {
    lines
        .iter()
        .filter(|l| {
            l["spans"]
                .as_array()
                .is_some_and(|s| s.iter().any(|sp| sp["name"] == "run"))
        })
        .collect()
}

pub fn run_span(line: &Value) -> &Value {
    line["spans"]
        .as_array()
        .unwrap()
        .iter()
        .find(|sp| sp["name"] == "run")
        .unwrap()
}
