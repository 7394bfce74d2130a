//! `/proc/PID/stat`: the fields the agent uses, and what "gone" means.

use std::fs;
use std::io;
use std::path::PathBuf;

use super::CallerError;

/// Why the text of `/proc/PID/stat` or `/proc/PID/status` is not what the kernel writes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProcParseError {
    #[error("no ')' after the command name")]
    NoCommandEnd,
    #[error("field {0} is missing")]
    MissingField(usize),
    #[error("field 3 (state) is empty")]
    EmptyState,
    #[error("field {field} ({name}): {error}")]
    Field {
        field: usize,
        name: &'static str,
        error: std::num::ParseIntError,
    },
    #[error("no {0} line")]
    MissingLine(&'static str),
    #[error("{0} has no effective field")]
    NoEffectiveId(&'static str),
    #[error("{line} effective field '{value}': {error}")]
    EffectiveId {
        line: &'static str,
        value: String,
        error: std::num::ParseIntError,
    },
    #[error("Groups entry '{value}': {error}")]
    Group {
        value: String,
        error: std::num::ParseIntError,
    },
}

/// The fields of `/proc/PID/stat` the agent uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProcStat {
    /// Field 3: R, S, D, Z, ...
    pub state: char,
    /// Field 4: the parent's PID.
    pub ppid: i32,
    /// Field 22: start time in clock ticks after boot.
    pub start_time: u64,
}

/// Parses `/proc/PID/stat`. The command name (field 2) is in parentheses and
/// may itself contain spaces and `)`, so the fields after it are found from
/// the last `)`.
pub(crate) fn parse_stat(text: &str) -> Result<ProcStat, ProcParseError> {
    let close = text.rfind(')').ok_or(ProcParseError::NoCommandEnd)?;
    let rest = text.get(close + 1..).unwrap_or_default();
    // rest holds fields 3.. (state is field 3).
    let fields: Vec<&str> = rest.split_ascii_whitespace().collect();
    let field = |n: usize| -> Result<&str, ProcParseError> {
        fields
            .get(n - 3)
            .copied()
            .ok_or(ProcParseError::MissingField(n))
    };
    let state = field(3)?.chars().next().ok_or(ProcParseError::EmptyState)?;
    let ppid = field(4)?.parse().map_err(|error| ProcParseError::Field {
        field: 4,
        name: "ppid",
        error,
    })?;
    let start_time = field(22)?.parse().map_err(|error| ProcParseError::Field {
        field: 22,
        name: "starttime",
        error,
    })?;
    Ok(ProcStat {
        state,
        ppid,
        start_time,
    })
}

/// Reads and parses `/proc/PID/stat`. A missing file (or ESRCH) means the
/// process is gone, and so does a zombie: it has exited, and what it ran can
/// no longer be read.
pub(crate) fn read_stat(pid: i32) -> Result<ProcStat, CallerError> {
    let path = PathBuf::from(format!("/proc/{pid}/stat"));
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if is_gone(&e) => return Err(CallerError::ProcessGone { pid }),
        Err(source) => return Err(CallerError::ProcStat { path, source }),
    };
    let stat = parse_stat(&text).map_err(|error| CallerError::ProcStatParse { path, error })?;
    if stat.state == 'Z' || stat.state == 'X' {
        return Err(CallerError::ProcessGone { pid });
    }
    Ok(stat)
}

/// Whether an I/O error under `/proc/PID` means the process is gone.
pub(crate) fn is_gone(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ESRCH)
}
