//! The progress bar of a run: on a terminal, unless `--json` or `--quiet`.

use crm_export_core::engine::{RunCounts, RunKind, RunObserver};
use crm_export_core::Seq;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;

pub struct RunProgress {
    bar: ProgressBar,
    kind: RunKind,
    cursor_start: Seq,
}

impl RunProgress {
    /// A bar over `total` records (export: the backlog; retry: the open items), or `None`
    /// when stderr is not a terminal.
    pub fn new(kind: RunKind, total: u64, cursor_start: Seq) -> Option<Self> {
        if !std::io::stderr().is_terminal() {
            return None;
        }
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
        let style = ProgressStyle::with_template(
            "{spinner} {prefix} [{bar:30}] {pos}/{len} {msg} ({elapsed})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        bar.set_style(style);
        bar.set_prefix(match kind {
            RunKind::Export => "export",
            RunKind::Retry => "retry",
        });
        Some(Self {
            bar,
            kind,
            cursor_start,
        })
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

impl RunObserver for RunProgress {
    fn batch_committed(&self, counts: &RunCounts, cursor: Seq) {
        let pos = match self.kind {
            RunKind::Export => cursor.saturating_sub(self.cursor_start),
            RunKind::Retry => counts.accepted + counts.record_errors + counts.errors_skipped,
        };
        self.bar.set_position(pos);
        self.bar.set_message(format!(
            "accepted {}, errors {}",
            counts.accepted, counts.record_errors
        ));
    }
}
