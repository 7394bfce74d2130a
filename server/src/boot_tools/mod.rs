//! Offline tools for diagnosing measured boot: `eventlog show` (every event of a firmware
//! log, decoded, and the PCR values it replays to) and `policy check` (a policy evaluated
//! against a log, every violation listed). Neither needs a server or a TPM.
//!
//! Exit statuses: 0 success (for `policy check`: the policy passes), 1 the policy fails,
//! 2 unusable input (a file that cannot be read, a log that does not parse, a policy that
//! does not load), with the reason on standard error.

mod decode;
mod devpath;
mod policy_check;
mod report;
mod text;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use ironroot_tpm::verify::eventlog::{EventLog, EventLogError};
use ironroot_tpm::verify::policy::{Policy, PolicyError};
use serde::Serialize;

use crate::cli::{EventlogCommand, Output, PolicyCheckArgs};

pub(crate) use policy_check::{PolicyCheckReport, Verdict};
pub(crate) use report::{EventLogReport, EVENTLOG_SCHEMA};

/// Exit status when the policy fails.
pub(crate) const EXIT_FAIL: u8 = 1;
/// Exit status for unusable input.
pub(crate) const EXIT_UNUSABLE: u8 = 2;

/// Why a tool's input cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum InputError {
    /// The file cannot be read.
    #[error("cannot read the {what} {}: {source}", path.display())]
    Read {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    /// The log does not parse.
    #[error("{} is not a valid TCG event log: {source}", path.display())]
    EventLog {
        path: PathBuf,
        source: EventLogError,
    },
    /// The policy does not load.
    #[error("{} is not a usable policy: {source}", path.display())]
    Policy { path: PathBuf, source: PolicyError },
}

/// Reads and parses an event log file.
pub(crate) fn load_eventlog(path: &Path) -> Result<EventLog, InputError> {
    let bytes = std::fs::read(path).map_err(|source| InputError::Read {
        what: "event log",
        path: path.to_path_buf(),
        source,
    })?;
    EventLog::parse(&bytes).map_err(|source| InputError::EventLog {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads and validates a policy file.
pub(crate) fn load_policy(path: &Path) -> Result<Policy, InputError> {
    let text = std::fs::read_to_string(path).map_err(|source| InputError::Read {
        what: "policy",
        path: path.to_path_buf(),
        source,
    })?;
    Policy::from_toml(&text).map_err(|source| InputError::Policy {
        path: path.to_path_buf(),
        source,
    })
}

/// `eventlog show`.
pub fn eventlog(cmd: EventlogCommand) -> ExitCode {
    let EventlogCommand::Show { file, output } = cmd;
    match load_eventlog(&file) {
        Ok(log) => {
            let report = EventLogReport::of(&log);
            match output {
                Output::Json => emit_json(&report),
                Output::Text => emit(&text::render(&report)),
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            if output == Output::Json {
                emit_json(&EventLogFailure {
                    schema: EVENTLOG_SCHEMA,
                    error: e.to_string(),
                });
            }
            ExitCode::from(EXIT_UNUSABLE)
        }
    }
}

/// `policy check`.
pub fn policy_check(args: &PolicyCheckArgs) -> ExitCode {
    let report = match load_policy(&args.policy) {
        Ok(policy) => match load_eventlog(&args.eventlog) {
            Ok(log) => PolicyCheckReport::evaluate(&policy, &log),
            Err(e) => unusable(e, Some(policy.name)),
        },
        Err(e) => unusable(e, None),
    };
    match args.output {
        Output::Json => emit_json(&report),
        // The reason is on standard error already.
        Output::Text if report.verdict == Verdict::Unusable => {}
        Output::Text => emit(&report.render()),
    }
    ExitCode::from(match report.verdict {
        Verdict::Pass => 0,
        Verdict::Fail => EXIT_FAIL,
        Verdict::Unusable => EXIT_UNUSABLE,
    })
}

fn unusable(e: InputError, policy: Option<String>) -> PolicyCheckReport {
    eprintln!("error: {e}");
    let mut r = PolicyCheckReport::unusable(e.to_string());
    r.policy = policy;
    r
}

/// The JSON of `eventlog show` for a log that cannot be read or parsed.
#[derive(Serialize)]
struct EventLogFailure {
    schema: &'static str,
    error: String,
}

/// Writes to standard output; a closed pipe (`| head`) ends the output, not the process
/// with a panic.
fn emit(s: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(s.as_bytes()).and_then(|()| out.flush());
}

fn emit_json<T: Serialize>(v: &T) {
    match serde_json::to_string_pretty(v) {
        Ok(s) => emit(&format!("{s}\n")),
        Err(e) => eprintln!("error: cannot write the JSON report: {e}"),
    }
}
