//! Event publisher adapters that live in the core crate.

mod recording;

pub use recording::RecordingPublisher;
