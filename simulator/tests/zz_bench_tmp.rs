mod common;
use std::sync::Arc;
use std::time::Instant;
use common::*;
use serde_json::{json, Value};
use sf_simulator::{serve, ServeOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench() {
    for (latency, tls) in [(0u64, false), (0, true), (150, true)] {
        let mut org = test_org();
        org["api"] = json!({"max": 1000000});
        org["latency_ms"] = json!(latency);
        let sim = Arc::new(serve(org_def(org), ServeOptions { tls, ..ServeOptions::default() }).await.unwrap());
        let http = {
            let mut b = reqwest::Client::builder();
            if let Some(pem) = sim.ca_cert_pem() { b = b.add_root_certificate(reqwest::Certificate::from_pem(pem.as_bytes()).unwrap()); }
            b.build().unwrap()
        };
        let resp: Value = http.post(sim.token_url()).form(&[("grant_type","client_credentials"),("client_id","cc-client"),("client_secret","cc-secret")]).send().await.unwrap().json().await.unwrap();
        let token = resp["access_token"].as_str().unwrap().to_owned();
        let started = Instant::now();
        let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let workers: Vec<_> = (0..8).map(|_| {
            let (sim, token, next, http) = (sim.clone(), token.clone(), next.clone(), http.clone());
            tokio::spawn(async move {
                let url = upsert_url(&sim, "Contact", "External_Id__c");
                loop {
                    let c = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    if c >= 500 { break; }
                    let recs: Vec<Value> = (0..200).map(|i| json!({"attributes":{"type":"Contact"},"External_Id__c": format!("B{c:04}-{i:03}"),"LastName":"Load","FirstName":"F","Email":"x@example.com","Birthdate":"1990-01-01","LeadSource":"Web"})).collect();
                    let body = json!({"allOrNone":false,"records":recs}).to_string();
                    let r = http.patch(&url).bearer_auth(&token).header("content-type","application/json").body(body).send().await.unwrap();
                    assert_eq!(r.status(), 200);
                    let _ = r.bytes().await.unwrap();
                }
            })
        }).collect();
        for w in workers { w.await.unwrap(); }
        println!("latency {latency} tls {tls}: 100k records in {:?}, stats {:?}", started.elapsed(), sim.stats());
    }
}
