//! Runs the real `crmx` binary with its own state dir per test, and a Salesforce simulator
//! in the test process for the commands that talk to a CRM.

#![allow(dead_code)] // each test file uses a different part of this module

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub const JOB: &str = "contacts";

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// The coral-cloud data bundled with the project.
pub fn coral_cloud() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/coral-cloud/Contact-large.json")
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// stdout as the command's one JSON document.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not one JSON document ({e}):\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// One test's crmx: a fresh state dir, a fixed tenant, no inherited CRMX_* variables.
pub struct Crmx {
    pub dir: tempfile::TempDir,
}

impl Crmx {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    pub fn state_dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_crmx"));
        c.args(args)
            .arg("--state-dir")
            .arg(self.dir.path())
            .env_remove("CRMX_STATE_DIR")
            .env_remove("CRMX_TENANT")
            .env("USER", "tester")
            .env("RUST_LOG", "warn");
        c
    }

    pub fn run(&self, args: &[&str]) -> Run {
        let out: Output = self.command(args).output().expect("crmx runs");
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Runs and insists on exit 0.
    pub fn ok(&self, args: &[&str]) -> Run {
        let r = self.run(args);
        assert_eq!(r.code, 0, "crmx {args:?} failed: {r:?}");
        r
    }

    /// Runs with `--json`, insists on exit 0, returns the document.
    pub fn json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.push("--json");
        self.ok(&a).json()
    }

    /// The contacts job as the demo org defines it (case-insensitive external id).
    pub fn define_contacts(&self) {
        self.ok(&[
            "jobs",
            "define",
            JOB,
            "--object",
            "Contact",
            "--external-id-field",
            "External_Id__c",
            "--case-insensitive",
        ]);
    }

    /// Everything a command could change, without the fields that move with the clock.
    pub fn snapshot(&self) -> Value {
        let mut status = self.json(&["status"]);
        if let Some(jobs) = status["jobs"].as_array_mut() {
            for j in jobs {
                for k in [
                    "oldest_unexported_age_secs",
                    "halt_age_secs",
                    "block_age_secs",
                ] {
                    j.as_object_mut().map(|o| o.remove(k));
                }
            }
        }
        let errors = if self.run(&["status", "--job", JOB]).code == 0 {
            self.json(&[
                "errors",
                "--job",
                JOB,
                "--limit",
                "1000",
                "--include-values",
            ])
        } else {
            Value::Null
        };
        serde_json::json!({
            "status": status,
            "errors": errors,
            "settings": self.json(&["settings", "show"]),
            "history": self.json(&["settings", "history"]),
            "jobs": self.json(&["jobs", "list"]),
        })
    }
}

/// A simulator serving the demo org in this process, on its own runtime so the test thread
/// can block on child processes while it answers.
pub struct Sim {
    pub handle: sf_simulator::SimHandle,
    _rt: tokio::runtime::Runtime,
}

impl Sim {
    pub fn start() -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let org_file =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../simulator/orgs/demo-contacts.json");
        let org = sf_simulator::load_org(org_file).expect("the demo org loads");
        let handle = rt
            .block_on(sf_simulator::serve(
                org,
                sf_simulator::ServeOptions::default(),
            ))
            .expect("the simulator starts");
        Self { handle, _rt: rt }
    }

    pub fn url(&self) -> String {
        self.handle.base_url().to_owned()
    }

    /// External ids of the Contacts the org holds, sorted.
    pub fn contact_keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self
            .handle
            .records("Contact")
            .expect("Contact exists")
            .into_iter()
            .map(|r| r.external_id)
            .collect();
        keys.sort();
        keys
    }
}
