//! Reading `/proc/PID/...` for attestors. An error caused by the caller
//! having exited becomes [`WorkloadAttestError::ProcessGone`], so callers of
//! the attestors see one reason whatever file noticed first.

use std::fs;
use std::io;
use std::path::Path;

use super::WorkloadAttestError;
use crate::workload::caller::{is_gone, Caller};

/// Maps an I/O error on a caller's `/proc` file: ProcessGone when the caller
/// is no longer the process it was (checked, not guessed from the errno,
/// because ENOENT also means "this kernel has no such file").
pub(crate) fn proc_err(
    caller: &Caller,
    what: &'static str,
    path: &Path,
    source: io::Error,
) -> WorkloadAttestError {
    if is_gone(&source) && caller.is_alive().is_err() {
        return WorkloadAttestError::ProcessGone { pid: caller.pid };
    }
    WorkloadAttestError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// Reads `/proc/PID/<rel>` as text.
pub(crate) fn read_text(
    caller: &Caller,
    rel: &str,
    what: &'static str,
) -> Result<String, WorkloadAttestError> {
    let path = caller.proc_path(rel);
    fs::read_to_string(&path).map_err(|e| proc_err(caller, what, &path, e))
}

/// Reads `/proc/PID/<rel>` as bytes.
pub(crate) fn read_bytes(
    caller: &Caller,
    rel: &str,
    what: &'static str,
) -> Result<Vec<u8>, WorkloadAttestError> {
    let path = caller.proc_path(rel);
    fs::read(&path).map_err(|e| proc_err(caller, what, &path, e))
}

/// The value of `Name:` in `/proc/PID/status` (trimmed).
pub(crate) fn status_field<'a>(status: &'a str, name: &str) -> Option<&'a str> {
    status.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k == name).then(|| v.trim())
    })
}

/// Like [`status_field`], but a missing field is a parse error.
pub(crate) fn require_status_field<'a>(
    caller: &Caller,
    status: &'a str,
    name: &str,
) -> Result<&'a str, WorkloadAttestError> {
    status_field(status, name).ok_or_else(|| WorkloadAttestError::Parse {
        what: "the process status",
        path: caller.proc_path("status"),
        reason: format!("no {name} line"),
    })
}
