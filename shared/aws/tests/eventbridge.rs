//! The EventBridge publisher against moto: a bus, a rule on it that targets an SQS queue,
//! and more than ten events (two `PutEvents` calls) that must arrive with the right
//! `detail-type` and `detail`. Plus the resend of entries that failed on their own, against
//! a local stand-in that fails one entry once.

mod common;

use crm_export_aws::{EventBridgeConfig, EventBridgePublisher};
use crm_export_core::domain::*;
use crm_export_core::ports::EventPublisher;
use serde_json::json;
use std::collections::HashMap;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn events(n: usize) -> Vec<Event> {
    let job = JobRef::new(
        TenantId::new("acme").unwrap(),
        JobId::new("touchpoints").unwrap(),
    );
    let kinds = [
        EventKind::ExportJobHalted,
        EventKind::ExportJobResumed,
        EventKind::ExportRunCompleted,
    ];
    (0..n)
        .map(|i| {
            let at = chrono::DateTime::from_timestamp(1_772_000_000 + i as i64, 0).unwrap();
            Event::for_job(kinds[i % 3], &job, at, json!({ "n": i, "reason": "test" }))
        })
        .collect()
}

#[tokio::test]
async fn published_events_arrive_through_a_rule_in_sqs() {
    let sdk = common::moto_sdk_config().await;
    let id = uuid::Uuid::new_v4().simple().to_string();
    let eb = aws_sdk_eventbridge::Client::new(&sdk);
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let bus = format!("crm-export-{id}");
    eb.create_event_bus()
        .name(&bus)
        .send()
        .await
        .expect("create bus");
    let queue_url = sqs
        .create_queue()
        .queue_name(format!("events-{id}"))
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    let attrs = sqs
        .get_queue_attributes()
        .queue_url(&queue_url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        .send()
        .await
        .unwrap();
    let queue_arn =
        attrs.attributes().unwrap()[&aws_sdk_sqs::types::QueueAttributeName::QueueArn].clone();
    eb.put_rule()
        .name("all-crm-export")
        .event_bus_name(&bus)
        .event_pattern(json!({ "source": ["crm-export"] }).to_string())
        .send()
        .await
        .unwrap();
    eb.put_targets()
        .rule("all-crm-export")
        .event_bus_name(&bus)
        .targets(
            aws_sdk_eventbridge::types::Target::builder()
                .id("sqs")
                .arn(&queue_arn)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();

    let mut config = EventBridgeConfig::new(&bus);
    config.timeouts = common::moto_timeouts();
    let publisher = EventBridgePublisher::new(&sdk, config);
    let sent = events(23);
    publisher.publish(&sent).await.expect("publish");
    assert_eq!(
        publisher.request_count(),
        3,
        "23 events in calls of at most 10"
    );

    let mut received: HashMap<String, serde_json::Value> = HashMap::new();
    for _ in 0..20 {
        if received.len() == sent.len() {
            break;
        }
        let out = sqs
            .receive_message()
            .queue_url(&queue_url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await
            .unwrap();
        for m in out.messages() {
            let body: serde_json::Value = serde_json::from_str(m.body().unwrap()).unwrap();
            received.insert(
                body["detail"]["event_id"].as_str().unwrap().to_string(),
                body,
            );
            sqs.delete_message()
                .queue_url(&queue_url)
                .receipt_handle(m.receipt_handle().unwrap())
                .send()
                .await
                .unwrap();
        }
    }
    assert_eq!(received.len(), sent.len(), "every event arrives once");
    for e in &sent {
        let body = &received[&e.id];
        assert_eq!(body["source"], json!("crm-export"));
        assert_eq!(body["detail-type"], json!(e.kind.detail_type()));
        assert_eq!(
            body["detail"],
            e.envelope_detail(),
            "the detail is the event's envelope"
        );
    }
}

#[tokio::test]
async fn an_unknown_bus_is_an_error() {
    let sdk = common::moto_sdk_config().await;
    let mut config =
        EventBridgeConfig::new(format!("no-such-bus-{}", uuid::Uuid::new_v4().simple()));
    config.timeouts = common::moto_timeouts();
    let publisher = EventBridgePublisher::new(&sdk, config);
    let err = publisher
        .publish(&events(2))
        .await
        .expect_err("the bus does not exist");
    assert!(err.0.contains("ResourceNotFound"), "{err}");
}

/// A stand-in for EventBridge: answers each `PutEvents` with the next scripted reply and
/// records how many entries each request carried.
async fn stand_in(
    replies: Vec<serde_json::Value>,
) -> (String, tokio::task::JoinHandle<Vec<usize>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        let mut seen = Vec::new();
        for reply in replies {
            let (mut sock, _) = listener.accept().await.unwrap();
            let mut buf = Vec::new();
            let body_start = loop {
                let mut chunk = [0u8; 8192];
                let n = sock.read(&mut chunk).await.unwrap();
                buf.extend_from_slice(&chunk[..n]);
                if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    break p + 4;
                }
            };
            let head = String::from_utf8_lossy(&buf[..body_start]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map(|v| v.trim().parse().unwrap())
                .unwrap();
            while buf.len() < body_start + len {
                let mut chunk = [0u8; 8192];
                let n = sock.read(&mut chunk).await.unwrap();
                buf.extend_from_slice(&chunk[..n]);
            }
            let req: serde_json::Value =
                serde_json::from_slice(&buf[body_start..body_start + len]).unwrap();
            seen.push(req["Entries"].as_array().unwrap().len());
            let body = reply.to_string();
            let resp = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/x-amz-json-1.1\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            sock.write_all(resp.as_bytes()).await.unwrap();
            sock.shutdown().await.unwrap();
        }
        seen
    });
    (url, server)
}

async fn stand_in_publisher(url: &str, max_entry_attempts: u32) -> EventBridgePublisher {
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(url)
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
            "a", "b", None, None, "test",
        ))
        .load()
        .await;
    let mut config = EventBridgeConfig::new("bus");
    config.max_entry_attempts = max_entry_attempts;
    config.timeouts.max_attempts = 1;
    config.timeouts.operation = Duration::from_secs(10);
    EventBridgePublisher::new(&sdk, config)
}

#[tokio::test]
async fn only_the_entries_that_failed_are_sent_again() {
    let (url, server) = stand_in(vec![
        json!({ "FailedEntryCount": 1, "Entries": [
            { "EventId": "1" }, { "ErrorCode": "InternalFailure", "ErrorMessage": "try again" }, { "EventId": "3" }
        ] }),
        json!({ "FailedEntryCount": 0, "Entries": [{ "EventId": "2" }] }),
    ])
    .await;
    let publisher = stand_in_publisher(&url, 3).await;
    publisher
        .publish(&events(3))
        .await
        .expect("the resend succeeds");
    assert_eq!(
        server.await.unwrap(),
        vec![3, 1],
        "the second call carries only the failed entry"
    );
}

#[tokio::test]
async fn entries_that_keep_failing_are_an_error_after_the_bounded_attempts() {
    let fail = json!({ "FailedEntryCount": 1, "Entries": [{ "ErrorCode": "ThrottlingException", "ErrorMessage": "slow down" }] });
    let (url, server) = stand_in(vec![fail.clone(), fail]).await;
    let publisher = stand_in_publisher(&url, 2).await;
    let err = publisher
        .publish(&events(1))
        .await
        .expect_err("never accepted");
    assert!(
        err.0.contains("ThrottlingException") && err.0.contains("2 attempts"),
        "{err}"
    );
    assert_eq!(server.await.unwrap(), vec![1, 1]);
}
