//! Request-level faults queued by a test or the demo for the next upsert calls.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

/// One queued fault; it applies to the next `count` upsert calls, in queue order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Fault {
    #[serde(flatten)]
    pub kind: FaultKind,
    #[serde(default = "one")]
    pub count: u32,
}

fn one() -> u32 {
    1
}

impl Fault {
    pub fn once(kind: FaultKind) -> Self {
        Fault { kind, count: 1 }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FaultKind {
    /// Answer with this status, content type and body instead of processing the call, or
    /// after processing it when `commit` is true (the writes land, the caller cannot know).
    Http {
        status: u16,
        #[serde(default = "html")]
        content_type: String,
        #[serde(default)]
        body: String,
        #[serde(default)]
        commit: bool,
    },
    /// Process the call, then answer 200 with the result JSON cut in half.
    MalformedJson,
    /// Process the call, then answer 200 with the last result missing.
    WrongLength,
    /// 403 REQUEST_LIMIT_EXCEEDED "TotalRequests Limit exceeded." without processing.
    RequestLimit,
    /// Invalidate every access token now (applied when posted, not queued).
    ExpireSessions,
    /// Wait this long before processing the call normally.
    Delay { ms: u64 },
}

fn html() -> String {
    "text/html".into()
}

#[derive(Default)]
pub(crate) struct FaultQueue {
    queue: VecDeque<Fault>,
}

impl FaultQueue {
    pub fn push(&mut self, fault: Fault) {
        if fault.count > 0 {
            self.queue.push_back(fault);
        }
    }

    /// The fault for the next call, if any, using up one of its count.
    pub fn take(&mut self) -> Option<FaultKind> {
        let front = self.queue.front_mut()?;
        let kind = front.kind.clone();
        front.count -= 1;
        if front.count == 0 {
            self.queue.pop_front();
        }
        Some(kind)
    }

    pub fn list(&self) -> Vec<Fault> {
        self.queue.iter().cloned().collect()
    }

    pub fn clear(&mut self) {
        self.queue.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_the_documented_shapes() {
        let f: Fault = serde_json::from_value(json!({"kind": "http", "status": 503,
            "content_type": "text/html", "body": "<html>Service Unavailable</html>", "count": 2}))
        .unwrap();
        assert_eq!(f.count, 2);
        assert!(matches!(
            f.kind,
            FaultKind::Http {
                status: 503,
                commit: false,
                ..
            }
        ));
        let f: Fault = serde_json::from_value(json!({"kind": "malformed_json"})).unwrap();
        assert_eq!(f, Fault::once(FaultKind::MalformedJson));
        let f: Fault = serde_json::from_value(json!({"kind": "delay", "ms": 5})).unwrap();
        assert_eq!(f.kind, FaultKind::Delay { ms: 5 });
    }

    #[test]
    fn queue_uses_counts_in_order() {
        let mut q = FaultQueue::default();
        q.push(Fault {
            kind: FaultKind::WrongLength,
            count: 2,
        });
        q.push(Fault::once(FaultKind::RequestLimit));
        assert_eq!(q.take(), Some(FaultKind::WrongLength));
        assert_eq!(q.take(), Some(FaultKind::WrongLength));
        assert_eq!(q.take(), Some(FaultKind::RequestLimit));
        assert_eq!(q.take(), None);
    }
}
