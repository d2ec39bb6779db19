//! The command line as clap sees it: raw flags and arguments. `config.rs` turns them into
//! the validated [`crate::config::Config`] everything else takes.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

use crate::error::EXIT_CODES_HELP;

#[derive(Debug, Parser)]
#[command(
    name = "crmx",
    version,
    about = "Operate crm-export locally: enqueue records, run export and ExportError retry runs, \
             inspect jobs and errors, change settings, run the Salesforce simulator and the demo.",
    after_help = EXIT_CODES_HELP,
    after_long_help = EXIT_CODES_HELP
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
#[command(next_help_heading = "Global options")]
pub struct GlobalArgs {
    /// Directory holding the local state (the SQLite file) [default: .crmx]
    #[arg(long, global = true, env = "CRMX_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Where the state lives: the embedded store, or the service's DynamoDB tables (the
    /// AWS region, credentials and `AWS_ENDPOINT_URL` come from the environment)
    #[arg(
        long = "state",
        global = true,
        env = "CRMX_STATE",
        value_enum,
        default_value = "sqlite"
    )]
    pub state_kind: StateKind,
    /// DynamoDB state table (with --state dynamodb)
    #[arg(
        long,
        global = true,
        env = "STATE_TABLE",
        default_value = "crm-export-state"
    )]
    pub state_table: String,
    /// DynamoDB queue table (with --state dynamodb)
    #[arg(
        long,
        global = true,
        env = "QUEUE_TABLE",
        default_value = "crm-export-queue"
    )]
    pub queue_table: String,
    /// EventBridge bus the events go to (with --state dynamodb); without it they are only
    /// reported
    #[arg(long, global = true, env = "EVENT_BUS_NAME")]
    pub event_bus: Option<String>,
    /// Tenant to work on
    #[arg(long, global = true, env = "CRMX_TENANT", default_value = "demo")]
    pub tenant: String,
    /// Machine output: one JSON document per command on stdout
    #[arg(long, global = true)]
    pub json: bool,
    /// Print nothing but errors (the exit code tells the outcome)
    #[arg(short, long, global = true)]
    pub quiet: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StateKind {
    Sqlite,
    Dynamodb,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Queue the records of a file (sObject Tree JSON, NDJSON or CSV) for a job, all or nothing
    Enqueue(EnqueueArgs),
    /// Define and list jobs
    #[command(subcommand)]
    Jobs(JobsCommand),
    /// Run one export run of a job against a CRM
    Export(RunArgs),
    /// Run one ExportError retry run of a job: re-send its open ExportErrors items
    RetryErrors(RunArgs),
    /// Show where each job stands: cursor, backlog, halt, block, open and parked errors
    Status(StatusArgs),
    /// List a job's ExportErrors items (field names only unless --include-values)
    Errors(ErrorsArgs),
    /// Show, change and audit the tenant's settings
    #[command(subcommand)]
    Settings(SettingsCommand),
    /// Move a halted job past its record; the record's item is parked (needs acknowledgement)
    SkipHalted(SkipHaltedArgs),
    /// Re-open a parked ExportErrors item, so the next retry run sends it again
    Reopen(ReopenArgs),
    /// Serve the built-in Salesforce simulator until Ctrl-C
    Sim(SimArgs),
    /// The guided demo: real data, the simulator, pause on and off, the daily retry
    Demo(DemoArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FileFormat {
    /// sObject Tree JSON: {"records":[{"attributes":{...}, ...}]}
    Tree,
    /// One JSON object per line
    Ndjson,
    /// A header row, then one record per row; values are strings, empty cells are absent
    Csv,
}

#[derive(Debug, Args)]
pub struct EnqueueArgs {
    /// The job to queue the records for
    #[arg(long)]
    pub job: String,
    /// The file to read
    pub file: PathBuf,
    /// The file's format [default: from the extension: .json tree, .ndjson/.jsonl, .csv]
    #[arg(long, value_enum)]
    pub format: Option<FileFormat>,
}

#[derive(Debug, Subcommand)]
pub enum JobsCommand {
    /// Create or replace a job definition
    Define(DefineArgs),
    /// List the tenant's jobs
    List,
}

#[derive(Debug, Args)]
pub struct DefineArgs {
    /// Job id ([a-z0-9][a-z0-9_-]{0,62})
    pub job: String,
    /// CRM object API name, e.g. Contact
    #[arg(long)]
    pub object: String,
    /// CRM external-id field the upsert matches on, e.g. External_Id__c
    #[arg(long)]
    pub external_id_field: String,
    /// Source field holding the key [default: the external-id field]
    #[arg(long)]
    pub key_field: Option<String>,
    /// The CRM matches external ids ignoring case (keys that differ only in case are one key)
    #[arg(long)]
    pub case_insensitive: bool,
    /// Map a source field to a CRM field (repeatable); without any, fields keep their names
    #[arg(long = "map", value_name = "SRC=DST")]
    pub map: Vec<String>,
}

#[derive(Debug, Args)]
#[group(id = "crm_target", required = true, multiple = false)]
pub struct CrmArgs {
    /// A JSON Salesforce connection (login_url, credentials, optional extra_root_ca_pem)
    #[arg(long, value_name = "FILE", group = "crm_target")]
    pub crm: Option<PathBuf>,
    /// A simulator's URL (`crmx sim`); uses the demo org's client credentials
    #[arg(long, value_name = "URL", group = "crm_target")]
    pub sim: Option<String>,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The job to run
    #[arg(long)]
    pub job: String,
    #[command(flatten)]
    pub crm: CrmArgs,
    /// PEM CA certificate to trust for --sim over https (as printed by `crmx sim --tls`)
    #[arg(long, value_name = "FILE", requires = "sim")]
    pub sim_ca: Option<PathBuf>,
    /// The run stops cleanly before this much time has passed (e.g. 90s, 10m, 1h)
    #[arg(long, default_value = "10m", value_name = "DURATION")]
    pub max_duration: String,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Only this job [default: every job of the tenant]
    #[arg(long)]
    pub job: Option<String>,
}

#[derive(Debug, Args)]
pub struct ErrorsArgs {
    #[arg(long)]
    pub job: String,
    /// Only items with this status: open, parked, resolved, superseded
    #[arg(long)]
    pub status: Option<String>,
    /// Only items with this error code (e.g. FIELD_CUSTOM_VALIDATION_EXCEPTION)
    #[arg(long)]
    pub code: Option<String>,
    /// At most this many items, newest last attempt first
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
    /// Also print the record values (personal data)
    #[arg(long)]
    pub include_values: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OnOff {
    On,
    Off,
}

impl OnOff {
    pub fn as_bool(self) -> bool {
        self == OnOff::On
    }
}

#[derive(Debug, Subcommand)]
pub enum SettingsCommand {
    /// Show the tenant's settings and their version
    Show,
    /// Change settings (optimistic concurrency on the version read)
    Set(SettingsSetArgs),
    /// Show the recorded changes, newest first
    History(HistoryArgs),
}

#[derive(Debug, Args)]
pub struct SettingsSetArgs {
    #[arg(long, value_enum)]
    pub export_to_crm: Option<OnOff>,
    /// Turning it off needs --acknowledge-data-inconsistency
    #[arg(long, value_enum)]
    pub pause_on_export_errors: Option<OnOff>,
    /// Records per CRM API call: 25, 50, 100 or 200
    #[arg(long)]
    pub batch_size: Option<u32>,
    /// CRM API calls per rolling 24 h, all jobs: 1000 to 10000000
    #[arg(long)]
    pub daily_api_limit: Option<u64>,
    /// Failed retry runs after which an ExportErrors item is parked
    #[arg(long)]
    pub max_retry_attempts: Option<u32>,
    /// CRM requests the tenant keeps in flight at once, all jobs together: 1 to 10 (default 8)
    #[arg(long)]
    pub max_in_flight: Option<u32>,
    /// Accept that turning pause off can leave the CRM inconsistent with the source
    #[arg(long)]
    pub acknowledge_data_inconsistency: bool,
    /// Only if the settings are still at this version (as `settings show` printed it)
    #[arg(long, value_name = "VERSION")]
    pub if_version: Option<u64>,
}

#[derive(Debug, Args)]
pub struct HistoryArgs {
    #[arg(long, default_value_t = 20)]
    pub limit: usize,
}

#[derive(Debug, Args)]
pub struct SkipHaltedArgs {
    #[arg(long)]
    pub job: String,
    /// Accept that the skipped record stays out of the CRM until its item is resolved
    #[arg(long)]
    pub acknowledge_data_inconsistency: bool,
}

#[derive(Debug, Args)]
pub struct ReopenArgs {
    #[arg(long)]
    pub job: String,
    /// The record key (external-id value) of the parked item
    pub key: String,
}

#[derive(Debug, Args)]
pub struct SimArgs {
    /// An org definition file [default: the built-in demo org]
    #[arg(long, value_name = "FILE")]
    pub org: Option<PathBuf>,
    /// Port on 127.0.0.1 (0: any free port)
    #[arg(long, default_value_t = 0)]
    pub port: u16,
    /// Serve HTTPS with a fresh self-signed CA (written to the state dir)
    #[arg(long)]
    pub tls: bool,
    /// Added to every call, to make runs look like a real org
    #[arg(long, value_name = "N")]
    pub latency_ms: Option<u64>,
}

#[derive(Debug, Args)]
pub struct DemoArgs {}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_definition_is_consistent() {
        // clap checks conflicting names, groups and defaults only when asked.
        Cli::command().debug_assert();
    }

    #[test]
    fn global_flags_work_after_the_subcommand() {
        let cli = Cli::try_parse_from(["crmx", "status", "--json", "--tenant", "acme"]).unwrap();
        assert!(cli.global.json);
        assert_eq!(cli.global.tenant, "acme");
    }

    #[test]
    fn a_run_needs_exactly_one_crm() {
        assert!(Cli::try_parse_from(["crmx", "export", "--job", "j"]).is_err());
        assert!(Cli::try_parse_from([
            "crmx", "export", "--job", "j", "--crm", "f.json", "--sim", "http://x"
        ])
        .is_err());
        assert!(Cli::try_parse_from(["crmx", "export", "--job", "j", "--sim", "http://x"]).is_ok());
    }
}
