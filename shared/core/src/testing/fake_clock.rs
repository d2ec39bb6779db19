use crate::domain::Timestamp;
use crate::ports::Clock;
use std::sync::Mutex;
use std::time::Duration;

/// A clock that only moves when told to, or when something sleeps on it (sleeping
/// advances it at once), so backoff and deadlines are instant and deterministic.
#[derive(Debug)]
pub struct FakeClock {
    now: Mutex<Timestamp>,
}

impl FakeClock {
    pub fn new(start: Timestamp) -> Self {
        Self {
            now: Mutex::new(start),
        }
    }
    pub fn at(rfc3339: &str) -> Self {
        Self::new(
            chrono::DateTime::parse_from_rfc3339(rfc3339)
                .expect("valid timestamp")
                .to_utc(),
        )
    }
    pub fn advance(&self, d: Duration) {
        let mut now = self.now.lock().expect("clock lock");
        *now += chrono::Duration::from_std(d).expect("duration fits");
    }
    /// Moves the clock forward to `t` (never back).
    pub fn advance_to(&self, t: Timestamp) {
        let mut now = self.now.lock().expect("clock lock");
        if t > *now {
            *now = t;
        }
    }
    pub fn set(&self, t: Timestamp) {
        *self.now.lock().expect("clock lock") = t;
    }
}

impl Default for FakeClock {
    fn default() -> Self {
        Self::at("2026-01-05T09:00:00Z")
    }
}

#[async_trait::async_trait]
impl Clock for FakeClock {
    fn now(&self) -> Timestamp {
        *self.now.lock().expect("clock lock")
    }
    async fn sleep(&self, d: Duration) {
        self.advance(d);
        tokio::task::yield_now().await;
    }
}
