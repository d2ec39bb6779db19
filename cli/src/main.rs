//! `crmx`, the operator CLI of crm-export. Thin by design: parse and validate the command
//! line once into a [`config::Config`], call the engine and the stores, print.
//!
//! One exit path: [`run`] returns the command's [`Outcome`] or a [`CliError`], and `main`
//! is the only place that prints either and exits.

mod cli;
mod cmd;
mod config;
mod crm;
mod error;
mod input;
mod jobs_fmt;
mod output;
mod progress;
mod sim_admin;
mod state;

use clap::Parser;
use config::{Config, Output};
use error::{CliError, Exit};
use output::Outcome;
use std::ffi::OsString;
use std::io::Write;
use std::process::ExitCode;

fn main() -> ExitCode {
    // Until the flags are parsed, errors print for people.
    let mut output = Output {
        json: false,
        quiet: false,
    };
    let result = run(std::env::args_os(), &mut output);
    let exit = match &result {
        Ok(o) => o.exit,
        Err(e) => e.exit,
    };
    match result {
        Ok(outcome) => print_outcome(&outcome, output),
        Err(e) => print_error(&e, output),
    }
    ExitCode::from(exit.code())
}

fn print_outcome(o: &Outcome, output: Output) {
    let text = if output.json {
        // A command that printed its JSON document already (sim) has nothing to add.
        (!o.printed)
            .then(|| serde_json::to_string_pretty(&o.json).unwrap_or_else(|_| o.json.to_string()))
    } else {
        (!output.quiet && !o.human.is_empty()).then(|| o.human.clone())
    };
    if let Some(text) = text {
        // A closed pipe (`crmx status | head`) is not worth a panic.
        let _ = writeln!(std::io::stdout(), "{text}");
    }
}

fn print_error(e: &CliError, output: Output) {
    if output.json {
        // The one JSON document of the command, on stdout like any other.
        let _ = writeln!(std::io::stdout(), "{}", e.to_json());
    } else {
        let _ = writeln!(std::io::stderr(), "error[{}]: {}", e.code, e.message);
    }
}

/// Parses, validates and runs one command.
fn run(args: impl IntoIterator<Item = OsString>, output: &mut Output) -> Result<Outcome, CliError> {
    let args: Vec<OsString> = args.into_iter().collect();
    // `--json` is honoured for usage errors too, so a script always gets JSON back.
    output.json = args.iter().any(|a| a == "--json");
    let parsed = match cli::Cli::try_parse_from(&args) {
        Ok(p) => p,
        Err(e) => return clap_outcome(e),
    };
    let cfg = Config::from_cli(parsed)?;
    *output = cfg.output;
    init_tracing();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::internal(format!("cannot start the async runtime: {e}")))?;
    runtime.block_on(cmd::run(cfg))
}

/// `--help` and `--version` are outcomes (exit 0); anything else clap refuses is a usage
/// error (exit 2).
fn clap_outcome(e: clap::Error) -> Result<Outcome, CliError> {
    use clap::error::ErrorKind;
    let text = e.render().to_string();
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => Ok(Outcome {
            exit: Exit::Ok,
            human: text.trim_end().to_owned(),
            json: serde_json::json!({"help": text}),
            printed: false,
        }),
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => Err(CliError::new(
            Exit::Usage,
            "usage",
            format!("a command is needed\n\n{}", text.trim_end()),
        )),
        _ => {
            let message = text.trim_end().trim_start_matches("error: ").to_owned();
            Err(CliError::new(Exit::Usage, "usage", message))
        }
    }
}

/// Engine logs go to stderr: warnings by default, more with `RUST_LOG=info`.
fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
