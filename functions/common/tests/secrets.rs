//! The tenant secrets against moto's Secrets Manager: the conditional write-back of a
//! rotated refresh token, the re-read after a refusal, and the per-container cache.

mod support;

use crm_export_core::{RequestFailureKind, TenantId};
use crm_export_functions::crm::CrmFactory;
use crm_export_functions::secrets::{SecretsManagerCredentialSink, TenantSecrets};
use crm_export_salesforce::{CredentialSink, SinkError};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

async fn secrets(prefix: &str) -> TenantSecrets {
    let sdk = support::sdk().await;
    TenantSecrets::new(&sdk, prefix, &support::moto_timeouts())
}

async fn create(s: &TenantSecrets, tenant: &str, token: &str) -> String {
    let name = s.secret_name(&tenant.parse::<TenantId>().unwrap());
    let doc = json!({
        "login_url": "https://login.example",
        "credentials": {"grant": "refresh_token", "client_id": "app", "refresh_token": token},
        "note": "kept on write-back"
    });
    s.client()
        .create_secret()
        .name(&name)
        .secret_string(doc.to_string())
        .send()
        .await
        .expect("create the secret on moto");
    name
}

async fn stages(s: &TenantSecrets, name: &str, stage: &str) -> Option<String> {
    let out = s
        .client()
        .get_secret_value()
        .secret_id(name)
        .version_stage(stage)
        .send()
        .await
        .ok()?;
    let v: serde_json::Value = serde_json::from_str(out.secret_string()?).ok()?;
    v["credentials"]["refresh_token"]
        .as_str()
        .map(str::to_owned)
}

#[tokio::test]
async fn a_rotation_is_written_only_over_the_token_it_replaces() {
    let s = secrets(&format!("{}/tenants/", support::unique("sink"))).await;
    let name = create(&s, "acme", "t0").await;
    let read = s.read(&name).await.unwrap();
    // Two containers of the same tenant, both started from version 0 (token t0).
    let a = SecretsManagerCredentialSink::new(s.clone(), &name, &read, Duration::ZERO);
    let b = SecretsManagerCredentialSink::new(s.clone(), &name, &read, Duration::ZERO);

    a.refresh_token_rotated("t0", "t1")
        .await
        .expect("a's rotation is stored");
    assert_eq!(stages(&s, &name, "AWSCURRENT").await.as_deref(), Some("t1"));
    assert_eq!(
        stages(&s, &name, "AWSPREVIOUS").await.as_deref(),
        Some("t0")
    );
    let now = s.read(&name).await.unwrap();
    assert_eq!(now.document["note"], "kept on write-back");
    assert_eq!(now.version_id, a.known_version());

    // b still believes t0 is current: its write reaches the conditional label move, which
    // refuses it because AWSCURRENT is no longer on version 0. t1 stays.
    assert_eq!(
        b.refresh_token_rotated("t0", "t2").await,
        Err(SinkError::Conflict)
    );
    assert_eq!(stages(&s, &name, "AWSCURRENT").await.as_deref(), Some("t1"));
    // Its refused version is left unlabelled as current, under the pending label only.
    assert_eq!(
        stages(&s, &name, crm_export_functions::secrets::PENDING_STAGE)
            .await
            .as_deref(),
        Some("t2")
    );

    // b's client, refused with t0, asks for the latest token: t1.
    assert_eq!(
        b.latest_refresh_token().await.unwrap().as_deref(),
        Some("t1")
    );
    // From there b's next rotation replaces t1 and succeeds.
    b.refresh_token_rotated("t1", "t3")
        .await
        .expect("b's rotation from t1");
    assert_eq!(stages(&s, &name, "AWSCURRENT").await.as_deref(), Some("t3"));
    // a's stale view is refused at the pre-check (the stored token is not t1).
    assert_eq!(
        a.refresh_token_rotated("t1", "t4").await,
        Err(SinkError::Conflict)
    );
    assert_eq!(stages(&s, &name, "AWSCURRENT").await.as_deref(), Some("t3"));
}

#[tokio::test]
async fn the_factory_reads_a_secret_once_per_ttl_and_rebuilds_after_a_rotation() {
    let prefix = format!("{}/tenants/", support::unique("factory"));
    let s = secrets(&prefix).await;
    let name = create(&s, "acme", "t0").await;
    let acme: TenantId = "acme".parse().unwrap();

    let cached = CrmFactory::new(s.clone(), Duration::from_secs(300), Duration::ZERO);
    let first = cached.client(&acme).await.unwrap();
    let second = cached.client(&acme).await.unwrap();
    assert!(Arc::ptr_eq(&first, &second));
    assert_eq!(
        cached.secret_reads(),
        1,
        "within the TTL the secret is not read again"
    );

    // TTL 0: every call re-reads; an unchanged version keeps the client (and its session).
    let fresh = CrmFactory::new(s.clone(), Duration::ZERO, Duration::ZERO);
    let c1 = fresh.client(&acme).await.unwrap();
    let c2 = fresh.client(&acme).await.unwrap();
    assert_eq!(fresh.secret_reads(), 2);
    assert!(Arc::ptr_eq(&c1, &c2));
    // Another container rotates the token: the next read sees a new version, new client.
    let read = s.read(&name).await.unwrap();
    SecretsManagerCredentialSink::new(s.clone(), &name, &read, Duration::ZERO)
        .refresh_token_rotated("t0", "t1")
        .await
        .unwrap();
    let c3 = fresh.client(&acme).await.unwrap();
    assert!(!Arc::ptr_eq(&c2, &c3));
}

#[tokio::test]
async fn a_missing_or_malformed_secret_is_a_configuration_failure() {
    let prefix = format!("{}/tenants/", support::unique("missing"));
    let s = secrets(&prefix).await;
    let factory = CrmFactory::new(s.clone(), Duration::from_secs(300), Duration::ZERO);
    let err = factory
        .client(&"nobody".parse().unwrap())
        .await
        .unwrap_err();
    assert_eq!(err.kind, RequestFailureKind::Misconfigured);
    assert_eq!(err.code, "CRM_CREDENTIALS_MISSING");

    let bad = s.secret_name(&"broken".parse().unwrap());
    s.client()
        .create_secret()
        .name(&bad)
        .secret_string(r#"{"login_url": "https://x", "credentials": {"grant": "password", "secret": "hunter2"}}"#)
        .send()
        .await
        .unwrap();
    let err = factory
        .client(&"broken".parse().unwrap())
        .await
        .unwrap_err();
    assert_eq!(err.code, "CRM_CREDENTIALS_INVALID");
    assert!(
        !err.message.contains("hunter2"),
        "the message names no secret value: {}",
        err.message
    );
}
