//! HTTPS with a CA generated at start, trusted by reqwest (rustls) through its PEM.

mod common;

use common::*;
use reqwest::StatusCode;
use serde_json::json;
use sf_simulator::{serve, ServeOptions};

#[tokio::test]
async fn https_with_the_generated_ca() {
    let opts = ServeOptions {
        tls: true,
        ..ServeOptions::default()
    };
    let sim = serve(org_def(test_org()), opts).await.unwrap();
    assert!(
        sim.base_url().starts_with("https://127.0.0.1:"),
        "{}",
        sim.base_url()
    );
    let pem = sim.ca_cert_pem().expect("a CA for TLS");
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"));

    let ca = reqwest::Certificate::from_pem(pem.as_bytes()).unwrap();
    let trusted = reqwest::Client::builder()
        .add_root_certificate(ca)
        .build()
        .unwrap();
    let resp = trusted
        .post(sim.token_url())
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", "cc-client"),
            ("client_secret", "cc-secret"),
        ])
        .send()
        .await
        .expect("TLS handshake with the generated CA");
    assert_eq!(resp.status(), StatusCode::OK);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["instance_url"], sim.base_url());
    let token = body["access_token"].as_str().unwrap();

    let body = json!({"allOrNone": false, "records": [
        {"attributes": {"type": "Contact"}, "External_Id__c": "TLS-1", "LastName": "Secure"}]});
    for host in ["127.0.0.1", "localhost"] {
        let url = format!(
            "https://{host}:{}/services/data/{API}/composite/sobjects/Contact/External_Id__c",
            sim.addr().port()
        );
        let resp = trusted
            .patch(url)
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{host}");
        assert!(resp.headers().contains_key("sforce-limit-info"));
    }
    assert_eq!(sim.records("Contact").unwrap()[0].version, 2);

    // Without the CA the certificate is not trusted.
    let untrusted = reqwest::Client::new();
    assert!(untrusted
        .get(format!("{}/services/data/", sim.base_url()))
        .send()
        .await
        .is_err());
    assert!(StaticPlainHttp::refused(&sim).await);
    sim.shutdown().await;
}

struct StaticPlainHttp;

impl StaticPlainHttp {
    /// Plain HTTP to the TLS port does not get an answer from the org.
    async fn refused(sim: &sf_simulator::SimHandle) -> bool {
        let url = format!("http://127.0.0.1:{}/services/data/", sim.addr().port());
        match reqwest::Client::new().get(url).send().await {
            Err(_) => true,
            Ok(resp) => !resp.status().is_success(),
        }
    }
}

#[tokio::test]
async fn plain_http_has_no_ca_and_shutdown_stops_serving() {
    let sim = start(test_org()).await;
    assert!(sim.ca_cert_pem().is_none());
    assert!(sim.base_url().starts_with("http://127.0.0.1:"));
    let url = format!("{}/services/data/", sim.base_url());
    assert_eq!(
        client().get(&url).send().await.unwrap().status(),
        StatusCode::OK
    );
    sim.shutdown().await;
    assert!(reqwest::Client::new().get(&url).send().await.is_err());
}
