//! placeholder
use crate::config::Config;
use crate::error::CliResult;
use crate::output::Outcome;
pub async fn run(_cfg: &Config) -> CliResult<Outcome> {
    Ok(Outcome::ok("", serde_json::Value::Null))
}
