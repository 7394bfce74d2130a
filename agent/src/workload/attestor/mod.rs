//! Workload attestors: selectors for a Workload API caller, read from the
//! kernel about the process at the other end of the socket.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use ironroot_api::selector::Selector;

use super::caller::{Caller, CallerError};

pub mod exe_hash;
pub mod podman;
pub mod process;
mod procfs;
pub mod unix;

pub use exe_hash::{ExeDigest, ExeHasher, DEFAULT_SHA256_MAX_BYTES};
pub use process::{ProcessAttestor, ProcessAttestorConfig};
pub use unix::{UnixAttestor, UnixAttestorConfig};

/// Finds selectors for a caller.
pub trait WorkloadAttestor: Send + Sync {
    /// The selector type this attestor produces (`unix`, `process`, ...).
    fn name(&self) -> &'static str;
    /// Selectors for the caller. Blocking (called from spawn_blocking). An
    /// attestor that cannot reach what it needs returns an error, never an
    /// empty list silently.
    fn attest(&self, caller: &Caller) -> Result<Vec<Selector>, WorkloadAttestError>;
}

/// Why an attestor could not produce the selectors of a caller.
#[derive(Debug, thiserror::Error)]
pub enum WorkloadAttestError {
    /// The caller exited (or its PID now names another process) while it
    /// was being attested.
    #[error("process {pid} has exited")]
    ProcessGone {
        /// The caller's PID.
        pid: i32,
    },
    /// Reading something about the caller failed.
    #[error("reading {what} ({path}): {source}")]
    Io {
        /// What was being read, e.g. "the executable".
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What the kernel said.
        #[source]
        source: io::Error,
    },
    /// A `/proc` file did not have the expected layout.
    #[error("{what} ({path}) is malformed: {reason}")]
    Parse {
        /// What was being read.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// The executable changed while it was being hashed.
    #[error("the executable of process {pid} changed while it was being hashed")]
    ExeChanged {
        /// The caller's PID.
        pid: i32,
    },
    /// Something the attestor depends on (a name service, an API) failed.
    #[error("{attestor} attestor unavailable: {reason}")]
    Unavailable {
        /// The attestor.
        attestor: &'static str,
        /// What failed.
        reason: String,
    },
    /// Checking the caller itself failed.
    #[error(transparent)]
    Caller(CallerError),
}

impl From<CallerError> for WorkloadAttestError {
    fn from(e: CallerError) -> Self {
        match e {
            // One variant for "the caller is not there any more", whichever
            // layer noticed.
            CallerError::ProcessGone { pid } | CallerError::Replaced { pid, .. } => {
                WorkloadAttestError::ProcessGone { pid }
            }
            other => WorkloadAttestError::Caller(other),
        }
    }
}

/// Runs every attestor for the caller, then checks that the caller is still
/// the same process ([`Caller::still_same`]), so selectors read from a PID
/// that was reused meanwhile are never returned. Sorted, without duplicates.
pub fn attest_caller(
    attestors: &[Arc<dyn WorkloadAttestor>],
    caller: &Caller,
) -> Result<Vec<Selector>, WorkloadAttestError> {
    let mut all = Vec::new();
    for a in attestors {
        all.extend(a.attest(caller)?);
    }
    caller.still_same()?;
    all.sort();
    all.dedup();
    Ok(all)
}

/// Adds `<kind>:<path_key>:<executable path>` and `<kind>:sha256:<hex>` for
/// the caller's executable (shared by the unix and process attestors).
pub(crate) fn push_exe_selectors(
    out: &mut Vec<Selector>,
    caller: &Caller,
    hasher: &exe_hash::ExeHasher,
    max_bytes: u64,
    kind: &str,
    path_key: &str,
) -> Result<(), WorkloadAttestError> {
    let pid = caller.pid;
    let exe = procfs::exe_path(caller)?;
    match exe.to_str() {
        Some(p) => push_selector(out, pid, kind, format!("{path_key}:{p}")),
        // A lossy conversion could make two different paths look alike.
        None => tracing::warn!(
            pid,
            path = ?exe,
            "executable path is not UTF-8; no {kind}:{path_key} selector"
        ),
    }
    match hasher.sha256(caller, max_bytes)? {
        exe_hash::ExeDigest::Sha256(hex) => push_selector(out, pid, kind, format!("sha256:{hex}")),
        exe_hash::ExeDigest::TooLarge { size, max } => tracing::warn!(
            pid,
            path = ?exe,
            size,
            max,
            "executable larger than sha256_max_bytes; no {kind}:sha256 selector"
        ),
    }
    Ok(())
}

/// Adds `kind:value` to `out`. A value that is not a valid selector (a control
/// character in a file name, too long) is left out with a warning: fewer
/// selectors can only match fewer entries, never more.
pub(crate) fn push_selector(out: &mut Vec<Selector>, pid: i32, kind: &str, value: String) {
    match Selector::new(kind, value) {
        Ok(s) => out.push(s),
        Err(e) => tracing::warn!(pid, kind, error = %e, "selector left out"),
    }
}

#[cfg(test)]
mod tests;
