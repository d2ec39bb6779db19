//! What a command hands back to `main` to print: a human text, a JSON document and the exit
//! code. Commands never print their result themselves (progress lines aside), so `--json`
//! and `--quiet` are honoured in one place.

use crate::error::Exit;
use serde_json::Value;

#[derive(Debug)]
pub struct Outcome {
    pub exit: Exit,
    /// Printed on stdout unless `--json` or `--quiet`.
    pub human: String,
    /// Printed on stdout with `--json`: the command's one JSON document.
    pub json: Value,
    /// The command already printed its document (a long-running `sim` prints it at start).
    pub printed: bool,
}

impl Outcome {
    pub fn ok(human: impl Into<String>, json: Value) -> Self {
        Self {
            exit: Exit::Ok,
            human: human.into(),
            json,
            printed: false,
        }
    }
    pub fn with_exit(mut self, exit: Exit) -> Self {
        self.exit = exit;
        self
    }
}

/// Formats an optional timestamp for people.
pub fn when(t: Option<crm_export_core::Timestamp>) -> String {
    t.map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| "never".into())
}

/// A duration for people: `3s`, `4m 05s`, `2h 03m`, `3d 04h`.
pub fn age(d: chrono::Duration) -> String {
    let s = d.num_seconds().max(0);
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m {:02}s", s / 60, s % 60),
        3600..=86_399 => format!("{}h {:02}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d {:02}h", s / 86_400, (s % 86_400) / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_well() {
        assert_eq!(age(chrono::Duration::seconds(5)), "5s");
        assert_eq!(age(chrono::Duration::seconds(245)), "4m 05s");
        assert_eq!(age(chrono::Duration::seconds(7380)), "2h 03m");
        assert_eq!(age(chrono::Duration::seconds(2 * 86_400 + 3600)), "2d 01h");
        assert_eq!(age(chrono::Duration::seconds(-3)), "0s");
    }
}
