//! The validated configuration of one invocation: flags, environment and files are read and
//! checked here once, and every command takes the result. Nothing below this module sees a
//! raw string it still has to validate (except the records of an enqueued file, whose rules
//! depend on the job definition in the store).

use crate::cli::{self, Cli, Command, FileFormat, JobsCommand, SettingsCommand, StateKind};
use crate::error::{CliError, CliResult};
use crm_export_core::engine::RunKind;
use crm_export_core::ports::ErrorFilter;
use crm_export_core::{ErrorStatus, JobDefinition, JobId, SettingsPatch, TenantId};
use crm_export_salesforce::{Credentials, SalesforceConfig};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The demo org's connected app (see `simulator/orgs/demo-contacts.json`); `--sim` uses it.
/// Not a secret: it only opens a local simulator.
pub use sf_simulator::demo::{CLIENT_ID as SIM_CLIENT_ID, CLIENT_SECRET as SIM_CLIENT_SECRET};

/// The state dir used when neither `--state-dir` nor `CRMX_STATE_DIR` is given.
pub const DEFAULT_STATE_DIR: &str = ".crmx";
/// The SQLite file inside the state dir.
pub const SQLITE_FILE: &str = "crmx.sqlite";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Output {
    pub json: bool,
    pub quiet: bool,
}

impl Output {
    /// Whether human-readable progress may be printed while a command runs.
    pub fn chatty(&self) -> bool {
        !self.json && !self.quiet
    }
}

/// Where the state lives: the embedded SQLite store, or the service's DynamoDB tables
/// (the troubleshooting path: run a job locally against the production state).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateBackend {
    Sqlite {
        dir: PathBuf,
    },
    Dynamodb {
        state_table: String,
        queue_table: String,
        event_bus: Option<String>,
    },
}

impl StateBackend {
    pub fn describe(&self) -> String {
        match self {
            StateBackend::Sqlite { dir } => format!("sqlite:{}", dir.join(SQLITE_FILE).display()),
            StateBackend::Dynamodb {
                state_table,
                queue_table,
                ..
            } => {
                format!("dynamodb:{state_table},{queue_table}")
            }
        }
    }
}

#[derive(Debug, Clone)]
pub struct StateConfig {
    pub backend: StateBackend,
    /// Given by flag or environment (the demo then uses it instead of a temp dir).
    pub explicit: bool,
}

/// Which CRM a run talks to.
#[derive(Debug, Clone)]
pub struct CrmTarget {
    pub config: SalesforceConfig,
    /// The connection file, which a rotated refresh token is written back to.
    pub file: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub enum Cmd {
    Enqueue {
        job: JobId,
        file: PathBuf,
        format: FileFormat,
    },
    JobsDefine(JobDefinition),
    JobsList,
    Run {
        kind: RunKind,
        job: JobId,
        crm: Box<CrmTarget>,
        max_duration: Duration,
    },
    Status {
        job: Option<JobId>,
    },
    Errors {
        job: JobId,
        filter: ErrorFilter,
        limit: usize,
        include_values: bool,
    },
    SettingsShow,
    SettingsSet {
        patch: SettingsPatch,
        /// Refuse unless the stored version is this one (optimistic concurrency across a
        /// read and a later write); without it, the version read just before the write.
        if_version: Option<u64>,
    },
    SettingsHistory {
        limit: usize,
    },
    SkipHalted {
        job: JobId,
        acknowledged: bool,
    },
    Reopen {
        job: JobId,
        key: String,
    },
    Sim {
        org: Option<PathBuf>,
        port: u16,
        tls: bool,
        latency_ms: Option<u64>,
    },
    Demo,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub output: Output,
    pub state: StateConfig,
    pub tenant: TenantId,
    /// Who changes settings and operates jobs (recorded in the settings history).
    pub actor: String,
    pub command: Cmd,
}

impl Config {
    pub fn from_cli(cli: Cli) -> CliResult<Config> {
        let g = cli.global;
        let explicit = g.state_dir.is_some();
        let dir = g
            .state_dir
            .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR));
        Ok(Config {
            output: Output {
                json: g.json,
                quiet: g.quiet,
            },
            state: StateConfig {
                backend: match g.state_kind {
                    StateKind::Sqlite => StateBackend::Sqlite { dir },
                    StateKind::Dynamodb => StateBackend::Dynamodb {
                        state_table: g.state_table,
                        queue_table: g.queue_table,
                        event_bus: g.event_bus,
                    },
                },
                explicit,
            },
            tenant: TenantId::new(g.tenant)?,
            actor: local_actor(),
            command: command(cli.command)?,
        })
    }
}

fn command(c: Command) -> CliResult<Cmd> {
    Ok(match c {
        Command::Enqueue(a) => {
            let format = match a.format {
                Some(f) => f,
                None => format_from_extension(&a.file)?,
            };
            Cmd::Enqueue {
                job: job_id(&a.job)?,
                file: a.file,
                format,
            }
        }
        Command::Jobs(JobsCommand::List) => Cmd::JobsList,
        Command::Jobs(JobsCommand::Define(a)) => Cmd::JobsDefine(job_definition(a)?),
        Command::Export(a) => run_cmd(RunKind::Export, a)?,
        Command::RetryErrors(a) => run_cmd(RunKind::Retry, a)?,
        Command::Status(a) => Cmd::Status {
            job: a.job.as_deref().map(job_id).transpose()?,
        },
        Command::Errors(a) => {
            let status = match a.status.as_deref() {
                None => None,
                Some(s) => Some(ErrorStatus::parse(s).ok_or_else(|| {
                    CliError::bad_input(format!(
                        "--status {s:?} is not one of open, parked, resolved, superseded"
                    ))
                })?),
            };
            if a.limit == 0 {
                return Err(CliError::bad_input("--limit must be at least 1"));
            }
            Cmd::Errors {
                job: job_id(&a.job)?,
                filter: ErrorFilter {
                    status,
                    code: a.code.filter(|c| !c.trim().is_empty()),
                },
                limit: a.limit,
                include_values: a.include_values,
            }
        }
        Command::Settings(SettingsCommand::Show) => Cmd::SettingsShow,
        Command::Settings(SettingsCommand::History(a)) => Cmd::SettingsHistory {
            limit: a.limit.max(1),
        },
        Command::Settings(SettingsCommand::Set(a)) => Cmd::SettingsSet {
            patch: SettingsPatch {
                export_to_crm: a.export_to_crm.map(cli::OnOff::as_bool),
                pause_on_export_errors: a.pause_on_export_errors.map(cli::OnOff::as_bool),
                batch_size: a.batch_size,
                daily_api_limit: a.daily_api_limit,
                max_retry_attempts: a.max_retry_attempts,
                max_in_flight: a.max_in_flight,
                acknowledge_data_inconsistency: a.acknowledge_data_inconsistency.then_some(true),
            },
            if_version: a.if_version,
        },
        Command::SkipHalted(a) => Cmd::SkipHalted {
            job: job_id(&a.job)?,
            acknowledged: a.acknowledge_data_inconsistency,
        },
        Command::Reopen(a) => {
            if a.key.trim().is_empty() {
                return Err(CliError::bad_input("the record key must not be empty"));
            }
            Cmd::Reopen {
                job: job_id(&a.job)?,
                key: a.key,
            }
        }
        Command::Sim(a) => Cmd::Sim {
            org: a.org,
            port: a.port,
            tls: a.tls,
            latency_ms: a.latency_ms,
        },
        Command::Demo(_) => Cmd::Demo,
    })
}

fn job_id(s: &str) -> CliResult<JobId> {
    Ok(JobId::new(s)?)
}

pub fn format_from_extension(path: &Path) -> CliResult<FileFormat> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match ext.as_deref() {
        Some("json") => Ok(FileFormat::Tree),
        Some("ndjson" | "jsonl") => Ok(FileFormat::Ndjson),
        Some("csv") => Ok(FileFormat::Csv),
        _ => Err(CliError::bad_input(format!(
            "cannot tell the format of {} from its extension (.json, .ndjson, .jsonl, .csv); pass --format tree|ndjson|csv",
            path.display()
        ))),
    }
}

fn job_definition(a: cli::DefineArgs) -> CliResult<JobDefinition> {
    let job_id = job_id(&a.job)?;
    let name = |flag: &str, v: &str| -> CliResult<String> {
        let v = v.trim();
        if v.is_empty() || v.chars().any(char::is_whitespace) {
            return Err(CliError::bad_input(format!(
                "--{flag} must be a non-empty API name without spaces, not {v:?}"
            )));
        }
        Ok(v.to_owned())
    };
    let mut field_map = BTreeMap::new();
    for m in &a.map {
        let (src, dst) = m.split_once('=').ok_or_else(|| {
            CliError::bad_input(format!("--map {m:?} must look like SOURCE_FIELD=CRM_FIELD"))
        })?;
        let (src, dst) = (name("map", src)?, name("map", dst)?);
        if field_map.insert(src.clone(), dst).is_some() {
            return Err(CliError::bad_input(format!(
                "--map maps source field {src:?} twice"
            )));
        }
    }
    Ok(JobDefinition {
        job_id,
        object: name("object", &a.object)?,
        external_id_field: name("external-id-field", &a.external_id_field)?,
        key_field: a
            .key_field
            .as_deref()
            .map(|k| name("key-field", k))
            .transpose()?,
        key_case_insensitive: a.case_insensitive,
        field_map,
    })
}

fn run_cmd(kind: RunKind, a: cli::RunArgs) -> CliResult<Cmd> {
    let max_duration = parse_duration(&a.max_duration)?;
    // A run keeps a safety margin and needs time for at least one request before its
    // deadline; a shorter budget could never send anything.
    let engine = crm_export_core::engine::EngineConfig::default();
    let minimum =
        engine.safety_margin + engine.min_request_timeout + std::time::Duration::from_secs(1);
    if max_duration < minimum {
        return Err(CliError::bad_input(format!(
            "--max-duration {} is too short: a run needs at least {}s (safety margin and one request)",
            a.max_duration,
            minimum.as_secs()
        )));
    }
    let crm = match (a.crm.crm, a.crm.sim) {
        (Some(path), _) => CrmTarget {
            config: read_crm_file(&path)?,
            file: Some(path),
        },
        (None, Some(url)) => CrmTarget {
            config: sim_config(&url, a.sim_ca.as_deref())?,
            file: None,
        },
        // clap's group makes one of them required.
        (None, None) => return Err(CliError::bad_input("pass --crm FILE or --sim URL")),
    };
    Ok(Cmd::Run {
        kind,
        job: job_id(&a.job)?,
        crm: Box::new(crm),
        max_duration,
    })
}

fn read_crm_file(path: &Path) -> CliResult<SalesforceConfig> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        CliError::bad_input(format!("cannot read --crm file {}: {e}", path.display()))
    })?;
    serde_json::from_str(&text).map_err(|e| {
        // "invalid type: string \"...\"" would echo a value, maybe a secret: say where only.
        let msg = e.to_string();
        let why = if msg.starts_with("invalid type") || msg.starts_with("invalid value") {
            format!(
                "a value has the wrong type at line {}, column {}",
                e.line(),
                e.column()
            )
        } else {
            msg
        };
        CliError::bad_input(format!(
            "--crm file {} is not a Salesforce connection: {why}",
            path.display()
        ))
    })
}

/// The connection to a simulator, with the demo org's client credentials.
pub fn sim_config(url: &str, ca: Option<&Path>) -> CliResult<SalesforceConfig> {
    let url = url.trim_end_matches('/');
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(CliError::bad_input(format!(
            "--sim {url:?} is not an http(s) URL (crmx sim prints it)"
        )));
    }
    let mut cfg = SalesforceConfig::new(
        url,
        Credentials::ClientCredentials {
            client_id: SIM_CLIENT_ID.into(),
            client_secret: SIM_CLIENT_SECRET.into(),
        },
    );
    if let Some(ca) = ca {
        let pem = std::fs::read_to_string(ca).map_err(|e| {
            CliError::bad_input(format!("cannot read --sim-ca {}: {e}", ca.display()))
        })?;
        cfg.extra_root_ca_pem = Some(pem);
    }
    Ok(cfg)
}

/// `90s`, `10m`, `1h`, `1h30m`, `500ms`; a bare number is seconds.
pub fn parse_duration(s: &str) -> CliResult<Duration> {
    let bad = || {
        CliError::bad_input(format!(
            "--max-duration {s:?} is not a duration like 90s, 10m or 1h"
        ))
    };
    let s = s.trim();
    if s.is_empty() {
        return Err(bad());
    }
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        if digits == 0 {
            return Err(bad());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n * 60),
            "h" => Duration::from_secs(n * 3600),
            _ => return Err(bad()),
        };
        total += unit;
        rest = &rest[unit_len..];
    }
    if total.is_zero() {
        return Err(bad());
    }
    Ok(total)
}

/// The local user, recorded as the actor of settings changes and operator actions.
fn local_actor() -> String {
    let user = ["USER", "USERNAME", "LOGNAME"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|s| !s.trim().is_empty()))
        .unwrap_or_else(|| "unknown".into());
    format!("cli:{user}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("10m").unwrap(), Duration::from_secs(600));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("45").unwrap(), Duration::from_secs(45));
        for bad in ["", "m", "10x", "0s", "-5m", "1.5h"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn formats_come_from_the_extension() {
        assert_eq!(
            format_from_extension(Path::new("a/b.JSON")).unwrap(),
            FileFormat::Tree
        );
        assert_eq!(
            format_from_extension(Path::new("x.jsonl")).unwrap(),
            FileFormat::Ndjson
        );
        assert_eq!(
            format_from_extension(Path::new("x.csv")).unwrap(),
            FileFormat::Csv
        );
        assert_eq!(
            format_from_extension(Path::new("x.txt"))
                .unwrap_err()
                .exit
                .code(),
            3
        );
    }

    #[test]
    fn a_bad_crm_file_is_explained_without_echoing_values() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("crm.json");
        std::fs::write(
            &path,
            r#"{"login_url":"https://x","credentials":{"grant":"client_credentials","client_id":"a","client_secret":["s3cr3t-value"]}}"#,
        )
        .unwrap();
        let e = read_crm_file(&path).unwrap_err();
        assert_eq!(e.exit.code(), 3);
        assert!(!e.message.contains("s3cr3t-value"), "{}", e.message);
        assert!(e.message.contains("wrong type at line 1"), "{}", e.message);
        std::fs::write(&path, r#"{"credentials":{}}"#).unwrap();
        let e = read_crm_file(&path).unwrap_err();
        assert!(e.message.contains("missing field"), "{}", e.message);
    }

    #[test]
    fn the_demo_org_holds_the_sim_credentials() {
        // `--sim` relies on these; the demo org file is the simulator's, so check they agree.
        let org = include_str!("../../simulator/orgs/demo-contacts.json");
        for needle in [SIM_CLIENT_ID, SIM_CLIENT_SECRET] {
            assert!(org.contains(needle), "{needle} not in the demo org");
        }
    }
}
