//! The process at the other end of a Workload API connection.
//!
//! The kernel tells us the peer's PID, UID and GID (SO_PEERCRED). A PID alone
//! is not an identity: the caller can exit and the number can be handed to
//! another process, or it can exec another program and keep the number. So
//! a [`Caller`] is recorded once, when the connection is accepted: a pidfd,
//! which names one process for as long as we hold it; the process start
//! time; what it runs (`Executable`: device, inode and mount of
//! `/proc/PID/exe`, and its path); a handle on its address space of that
//! moment, which exec destroys; and its credentials.
//!
//! **Invariant: a caller's identity cannot change after connect.**
//! [`Caller::still_same`] refuses a caller whose process exited, whose PID
//! now names another process, that exec'd (another file, or the same one
//! again), or whose effective UID, GID or supplementary groups changed.
//! The attestors read the executable facts recorded here, and the Workload
//! API checks the caller before and after they run, so what a call is
//! granted is always what the connecting process was when it was accepted.
//!
//! "At connect" means when the agent accepts the connection, a moment after
//! connect(2): Linux records the PID and credentials at connect(2) but not
//! the program, so an exec in between is seen as the program the caller
//! had at accept.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;

use nix::sys::socket::{getsockopt, sockopt};

mod address_space;
mod credentials;
mod executable;
// pidfd_open(2) and SO_PEERPIDFD, which nix 0.29 does not wrap.
#[allow(unsafe_code)]
mod pidfd;
mod proc_stat;

use address_space::AddressSpace;
use credentials::Credentials;
pub(crate) use executable::same_user_namespace_as_agent;
pub(crate) use executable::{ExeId, Executable};
pub(crate) use proc_stat::{is_gone, read_stat};

/// Why a [`Caller`] could not be built or is no longer what it was.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CallerError {
    /// SO_PEERCRED failed (not a connected unix socket?).
    #[error("reading the peer credentials (SO_PEERCRED): {0}")]
    PeerCred(#[source] nix::Error),
    /// The peer's PID is 0: it lives in a PID namespace that is not visible
    /// from the agent's, so it cannot be attested.
    #[error("the peer has no PID in the agent's PID namespace")]
    NoPeerPid,
    /// Neither SO_PEERPIDFD nor pidfd_open gave a pidfd.
    #[error("opening a pidfd for PID {pid}: {source}")]
    Pidfd {
        /// The caller's PID.
        pid: i32,
        /// What the kernel said.
        #[source]
        source: io::Error,
    },
    /// The caller exited (its pidfd reports it, or `/proc/PID` is gone).
    #[error("process {pid} has exited")]
    ProcessGone {
        /// The caller's PID.
        pid: i32,
    },
    /// `/proc/PID/stat` now describes another process: the PID was reused.
    #[error("PID {pid} now belongs to another process (start time {recorded} became {current})")]
    Replaced {
        /// The caller's PID.
        pid: i32,
        /// Start time recorded when the connection was accepted.
        recorded: u64,
        /// Start time found now.
        current: u64,
    },
    /// `/proc/PID/exe` leads to another file than when the caller was
    /// accepted: it exec'd another program since it connected.
    #[error(
        "process {pid} runs another executable than when it connected ({} then, {} now): \
         it exec'd since connect; a new program must open its own connection",
        connected.display(),
        now.as_ref().map_or_else(|| "unknown".into(), |p| p.display().to_string())
    )]
    ExeChanged {
        /// The caller's PID.
        pid: i32,
        /// The executable recorded at accept.
        connected: PathBuf,
        /// The executable now, when it could be read.
        now: Option<PathBuf>,
    },
    /// The address space the caller had when accepted is gone while the
    /// process lives: it exec'd (possibly the same file again).
    #[error(
        "process {pid} has exec'd since it connected (its address space of then is gone); \
         a new program must open its own connection"
    )]
    Execed {
        /// The caller's PID.
        pid: i32,
    },
    /// The effective UID, GID or supplementary groups differ from those at
    /// connect (setuid, setgid or setgroups since).
    #[error(
        "process {pid} changed its credentials since it connected: {change}; \
         reconnect after changing credentials"
    )]
    CredentialsChanged {
        /// The caller's PID.
        pid: i32,
        /// What changed, e.g. "effective UID 65534 (was 0)".
        change: String,
    },
    /// `/proc/PID/exe` could not be read (the agent needs ptrace read
    /// access to its callers: root, or CAP_SYS_PTRACE).
    #[error("reading the executable of process {pid} (/proc/{pid}/exe): {source}")]
    ReadExe {
        /// The caller's PID.
        pid: i32,
        /// What the kernel said.
        #[source]
        source: io::Error,
    },
    /// The handle on the caller's address space (to notice exec) could not
    /// be opened or read.
    #[error(
        "holding the address space of process {pid} (/proc/{pid}/environ, or /proc/{pid}/mem \
         for an empty environment, which needs ptrace attach access): {source}"
    )]
    AddressSpace {
        /// The caller's PID.
        pid: i32,
        /// What the kernel said.
        #[source]
        source: io::Error,
    },
    /// The caller's user namespace could not be compared with the agent's.
    #[error("reading the user namespace of process {pid}: {source}")]
    UserNamespace {
        /// The caller's PID.
        pid: i32,
        /// What the kernel said.
        #[source]
        source: io::Error,
    },
    /// `/proc/PID/stat` or `/proc/PID/status` could not be read for a reason
    /// other than the process being gone.
    #[error("reading {path}: {source}")]
    ProcStat {
        /// The file.
        path: PathBuf,
        /// What the kernel said.
        #[source]
        source: io::Error,
    },
    /// `/proc/PID/stat` or `/proc/PID/status` did not have the expected
    /// layout.
    #[error("{path} is malformed: {error}")]
    ProcStatParse {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        error: proc_stat::ProcParseError,
    },
    /// poll(2) on the pidfd failed.
    #[error("polling the pidfd of PID {pid}: {source}")]
    Poll {
        /// The caller's PID.
        pid: i32,
        /// What the kernel said.
        #[source]
        source: nix::Error,
    },
}

impl CallerError {
    /// Whether this says the caller is no longer the process it was when
    /// accepted (exited, replaced, exec'd, credentials changed), as opposed
    /// to the agent failing to find out.
    pub fn is_identity_lost(&self) -> bool {
        matches!(
            self,
            CallerError::ProcessGone { .. }
                | CallerError::Replaced { .. }
                | CallerError::ExeChanged { .. }
                | CallerError::Execed { .. }
                | CallerError::CredentialsChanged { .. }
        )
    }
}

/// How the pidfd of a [`Caller`] was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PidfdSource {
    /// SO_PEERPIDFD (Linux 6.5+): the kernel's own reference to the process
    /// that connected, so it cannot name a different process.
    PeerPidfd,
    /// pidfd_open(pid) right after SO_PEERCRED: on older kernels. The PID
    /// could in principle be reused between connect(2) and this call; the
    /// window is microseconds and needs the caller to exit and PIDs to wrap.
    PidfdOpen,
}

/// A connected Workload API caller, as it was when accepted.
///
/// A caller's identity cannot change after connect: everything here is
/// recorded once, and [`Caller::still_same`] refuses the caller as soon as
/// the process is no longer what was recorded (see the module docs).
#[derive(Debug)]
pub struct Caller {
    /// PID in the agent's PID namespace (SO_PEERCRED).
    pub pid: i32,
    /// Effective UID at connect(2) time (SO_PEERCRED).
    pub uid: u32,
    /// Effective GID at connect(2) time (SO_PEERCRED).
    pub gid: u32,
    pidfd: OwnedFd,
    pidfd_source: PidfdSource,
    /// Field 22 of /proc/PID/stat (clock ticks after boot).
    start_time: u64,
    executable: Executable,
    address_space: AddressSpace,
    /// Credentials at accept: SO_PEERCRED's UID and GID, and the groups.
    credentials: Credentials,
}

impl Caller {
    /// Records the peer of a connected unix stream socket: SO_PEERCRED, a
    /// pidfd (SO_PEERPIDFD, else pidfd_open), the start time, the
    /// executable, a handle on the address space and the groups. Fails with
    /// [`CallerError::ProcessGone`] if the peer has already exited.
    pub fn from_socket(sock: BorrowedFd<'_>) -> Result<Caller, CallerError> {
        let cred = getsockopt(&sock, sockopt::PeerCredentials).map_err(CallerError::PeerCred)?;
        let pid = cred.pid();
        if pid <= 0 {
            return Err(CallerError::NoPeerPid);
        }
        let (pidfd, pidfd_source) = match pidfd::peer_pidfd(sock) {
            Ok(Some(fd)) => (fd, PidfdSource::PeerPidfd),
            Ok(None) => (pidfd::open_pidfd(pid)?, PidfdSource::PidfdOpen),
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {
                return Err(CallerError::ProcessGone { pid })
            }
            Err(source) => return Err(CallerError::Pidfd { pid, source }),
        };
        Self::record(pid, cred.uid(), cred.gid(), pidfd, pidfd_source)
    }

    /// A caller known only by PID (tests): pidfd_open, then as
    /// [`Caller::from_socket`] with the effective UID/GID of
    /// `/proc/PID/status`.
    #[cfg(test)]
    pub(crate) fn from_pid(pid: i32) -> Result<Caller, CallerError> {
        let pidfd = pidfd::open_pidfd(pid)?;
        let now = Credentials::read(pid)?;
        Self::record(pid, now.euid, now.egid, pidfd, PidfdSource::PidfdOpen)
    }

    fn record(
        pid: i32,
        uid: u32,
        gid: u32,
        pidfd: OwnedFd,
        pidfd_source: PidfdSource,
    ) -> Result<Caller, CallerError> {
        // The address space first: an exec after this point is noticed by
        // every later check, so the facts read next belong to the program
        // the handle holds. Then everything is vouched for by the pidfd
        // still naming a live process afterwards (the PID was not reused).
        let stat = read_stat(pid)?;
        let address_space = AddressSpace::pin(pid)?;
        let executable = Executable::record(pid)?;
        let status = Credentials::read(pid)?;
        let caller = Caller {
            pid,
            uid,
            gid,
            pidfd,
            pidfd_source,
            start_time: stat.start_time,
            executable,
            address_space,
            credentials: Credentials {
                euid: uid,
                egid: gid,
                groups: status.groups,
            },
        };
        caller.still_same()?;
        Ok(caller)
    }

    /// Checks that the process this caller was recorded from is still
    /// running, that `/proc/PID` still describes it (same start time), and
    /// that it is still what it was when accepted: the same executable, no
    /// exec since, the same credentials. Call it after the attestors have
    /// read `/proc/PID/...`: if it passes, what they read belonged to this
    /// caller as it was at connect.
    pub fn still_same(&self) -> Result<(), CallerError> {
        let pid = self.pid;
        // Each /proc read is vouched for by the pidfd being alive after it;
        // an error from a process that exited meanwhile is reported as
        // that, whatever file noticed first.
        let checks = || -> Result<(), CallerError> {
            self.check_alive_stat()?;
            self.executable.check(pid)?;
            if !self.address_space.intact(pid)? {
                return Err(CallerError::Execed { pid });
            }
            let now = Credentials::read(pid)?;
            if let Some(change) = now.change_from(&self.credentials) {
                return Err(CallerError::CredentialsChanged { pid, change });
            }
            Ok(())
        };
        let outcome = checks();
        if pidfd::pidfd_exited(pid, self.pidfd.as_fd())? {
            return Err(match outcome {
                Err(e @ CallerError::Replaced { .. }) => e,
                _ => CallerError::ProcessGone { pid },
            });
        }
        outcome
    }

    /// Checks only that the process is alive and `/proc/PID` describes it
    /// (start time, pidfd): whether an error reading `/proc/PID/...` means
    /// the caller went away.
    pub fn is_alive(&self) -> Result<(), CallerError> {
        self.check_alive_stat()?;
        if pidfd::pidfd_exited(self.pid, self.pidfd.as_fd())? {
            return Err(CallerError::ProcessGone { pid: self.pid });
        }
        Ok(())
    }

    fn check_alive_stat(&self) -> Result<(), CallerError> {
        let stat = read_stat(self.pid)?;
        if stat.start_time != self.start_time {
            return Err(CallerError::Replaced {
                pid: self.pid,
                recorded: self.start_time,
                current: stat.start_time,
            });
        }
        Ok(())
    }

    /// What the caller ran when it was accepted.
    pub fn executable(&self) -> &Executable {
        &self.executable
    }

    /// Supplementary GIDs at accept (sorted).
    pub fn groups(&self) -> &[u32] {
        &self.credentials.groups
    }

    /// The start time recorded when the caller was accepted (field 22 of
    /// `/proc/PID/stat`, clock ticks after boot).
    pub fn start_time(&self) -> u64 {
        self.start_time
    }

    /// How the pidfd was obtained.
    pub fn pidfd_source(&self) -> PidfdSource {
        self.pidfd_source
    }

    /// The pidfd naming the caller's process.
    pub fn pidfd(&self) -> BorrowedFd<'_> {
        self.pidfd.as_fd()
    }

    /// `/proc/PID/<rel>` for this caller.
    pub fn proc_path(&self, rel: &str) -> PathBuf {
        PathBuf::from(format!("/proc/{}/{rel}", self.pid))
    }
}

#[cfg(test)]
mod tests;
