use crate::domain::Event;
use crate::ports::{EventPublisher, PublishError};
use std::sync::Mutex;

/// Keeps what was published, for tests and for the CLI's local runs. It can be told to
/// fail, to test at-least-once delivery.
#[derive(Default)]
pub struct RecordingPublisher {
    published: Mutex<Vec<Event>>,
    failing: std::sync::atomic::AtomicBool,
}

impl RecordingPublisher {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn events(&self) -> Vec<Event> {
        self.published.lock().expect("publisher lock").clone()
    }
    pub fn set_failing(&self, failing: bool) {
        self.failing
            .store(failing, std::sync::atomic::Ordering::SeqCst);
    }
}

#[async_trait::async_trait]
impl EventPublisher for RecordingPublisher {
    async fn publish(&self, events: &[Event]) -> Result<(), PublishError> {
        if self.failing.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(PublishError("publisher set to fail".into()));
        }
        self.published
            .lock()
            .expect("publisher lock")
            .extend_from_slice(events);
        Ok(())
    }
}
