//! JSON logs on stdout, one object per line, through `tracing`.
//!
//! Every line carries the fields of the spans it is in (`spans`: the runtime's invocation
//! span with `requestId`, then the handler's `run` span with `tenant`, `job`, `run_id`), so
//! one Logs Insights filter finds everything a run did. At info level the functions log
//! ids, counts and outcomes only: never a secret (the CRM configuration's `Debug` redacts
//! them) and never a record's fields.

use tracing_subscriber::EnvFilter;

/// The level comes from `RUST_LOG` when set, else from `AWS_LAMBDA_LOG_LEVEL` (what the
/// template's `LoggingConfig.ApplicationLogLevel` sets), else `info`. The SDK's own
/// chatter stays at warn.
pub fn filter_directives(rust_log: Option<&str>, lambda_level: Option<&str>) -> String {
    if let Some(directives) = rust_log.filter(|s| !s.trim().is_empty()) {
        return directives.to_string();
    }
    let level = match lambda_level.map(|l| l.trim().to_ascii_lowercase()) {
        Some(l) if ["trace", "debug", "info", "warn", "error"].contains(&l.as_str()) => l,
        // Lambda's FATAL has no tracing level; error is the closest.
        Some(l) if l == "fatal" => "error".to_string(),
        _ => "info".to_string(),
    };
    format!("{level},aws_config=warn,aws_smithy_runtime=warn,hyper=warn,rustls=warn")
}

/// Installs the JSON subscriber. Call once, first thing in `main`.
pub fn init() {
    let directives = filter_directives(
        std::env::var("RUST_LOG").ok().as_deref(),
        std::env::var("AWS_LAMBDA_LOG_LEVEL").ok().as_deref(),
    );
    let filter = EnvFilter::try_new(&directives).unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_span_list(true)
        .with_target(false)
        .with_ansi(false)
        .with_env_filter(filter)
        .with_writer(std::io::stdout)
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rust_log_wins_then_the_lambda_level() {
        assert_eq!(filter_directives(Some("debug"), Some("ERROR")), "debug");
        assert!(filter_directives(None, Some("DEBUG")).starts_with("debug,"));
        assert!(filter_directives(None, Some("FATAL")).starts_with("error,"));
        assert!(filter_directives(None, Some("nonsense")).starts_with("info,"));
        assert!(filter_directives(Some(" "), None).starts_with("info,"));
    }
}
