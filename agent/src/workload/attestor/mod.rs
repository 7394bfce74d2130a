//! Workload attestors: selectors for a Workload API caller, read from the
//! kernel about the process at the other end of the socket.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use ironroot_api::selector::Selector;

use super::caller::{Caller, CallerError};

pub(crate) mod exe_hash;
pub mod k8s;
pub mod podman;
pub(crate) mod process;
mod procfs;
pub(crate) mod unix;
mod warn_once;

pub use exe_hash::ExeHasher;
pub use process::{ProcessAttestor, ProcessAttestorConfig};
pub use unix::{UnixAttestor, UnixAttestorConfig};
use warn_once::Notice;

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
    /// The caller is no longer what it was when it connected (it exec'd, or
    /// changed its credentials).
    #[error(transparent)]
    CallerChanged(CallerError),
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
            changed if changed.is_identity_lost() => WorkloadAttestError::CallerChanged(changed),
            other => WorkloadAttestError::Caller(other),
        }
    }
}

impl WorkloadAttestError {
    /// Whether the caller is refused for what it became since it connected
    /// (exited, exec'd, changed credentials), rather than the agent failing
    /// to attest it: the Workload API answers PermissionDenied for these.
    pub fn refuses_caller(&self) -> bool {
        matches!(
            self,
            WorkloadAttestError::ProcessGone { .. } | WorkloadAttestError::CallerChanged(_)
        )
    }
}

/// Runs every attestor for the caller, checking before and after that the
/// caller is still what it was when accepted ([`Caller::still_same`]): a
/// caller that exec'd or changed credentials since connect is refused with
/// the reason, and selectors read from a PID that was reused meanwhile are
/// never returned. Sorted, without duplicates.
pub fn attest_caller(
    attestors: &[Arc<dyn WorkloadAttestor>],
    caller: &Caller,
) -> Result<Vec<Selector>, WorkloadAttestError> {
    caller.still_same()?;
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
/// the caller's executable as recorded at accept (shared by the unix and
/// process attestors). A warning about the executable (path not UTF-8, too
/// large to hash, caller outside the agent's user namespace) is logged once
/// per executable, not on every call.
pub(crate) fn push_exe_selectors(
    out: &mut Vec<Selector>,
    caller: &Caller,
    hasher: &exe_hash::ExeHasher,
    max_bytes: u64,
    kind: &str,
    path_key: &str,
) -> Result<(), WorkloadAttestError> {
    let pid = caller.pid;
    let exe = caller.executable();
    if !exe.attestable() {
        if hasher.first_notice(Notice::NotAttestable(exe.id())) {
            tracing::warn!(
                pid,
                path = ?exe.path(),
                "caller outside the agent's user namespace, where a process can point \
                 /proc/PID/exe at any file without exec: no executable selectors \
                 (unix:path, unix:sha256, process:exe, process:sha256) for it \
                 (logged once per executable)"
            );
        }
        return Ok(());
    }
    match exe.path().to_str() {
        Some(p) => push_selector(out, pid, kind, format!("{path_key}:{p}")),
        // A lossy conversion could make two different paths look alike.
        None => {
            if hasher.first_notice(Notice::PathNotUtf8(exe.id())) {
                tracing::warn!(
                    pid,
                    path = ?exe.path(),
                    "executable path is not UTF-8: no unix:path or process:exe selector \
                     (logged once per executable)"
                );
            }
        }
    }
    match hasher.sha256(caller, max_bytes)? {
        exe_hash::ExeDigest::Sha256(hex) => push_selector(out, pid, kind, format!("sha256:{hex}")),
        exe_hash::ExeDigest::TooLarge { size, max } => {
            if hasher.first_notice(Notice::TooLarge {
                exe: exe.id(),
                size,
                max,
            }) {
                tracing::warn!(
                    pid,
                    path = ?exe.path(),
                    size,
                    max,
                    "executable larger than sha256_max_bytes: no sha256 selector for it \
                     (logged once per executable)"
                );
            }
        }
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
