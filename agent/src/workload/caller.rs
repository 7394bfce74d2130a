//! The process at the other end of a Workload API connection.
//!
//! The kernel tells us the peer's PID, UID and GID (SO_PEERCRED). A PID alone
//! is not an identity: the caller can exit and the number can be handed to
//! another process while attestors are still reading `/proc/PID/...`. So a
//! [`Caller`] also holds a pidfd, which names one process for as long as we
//! hold it, and the process start time; [`Caller::still_same`] is checked
//! after the attestors have gathered their selectors.

use std::fs;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::PathBuf;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{getsockopt, sockopt};

/// Why a [`Caller`] could not be built or is no longer the process it was.
#[derive(Debug, thiserror::Error)]
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
    /// `/proc/PID/stat` could not be read for a reason other than the
    /// process being gone.
    #[error("reading {path}: {source}")]
    ProcStat {
        /// The file.
        path: PathBuf,
        /// What the kernel said.
        #[source]
        source: io::Error,
    },
    /// `/proc/PID/stat` did not have the expected layout.
    #[error("{path} is malformed: {reason}")]
    ProcStatParse {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
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

/// A connected Workload API caller.
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
pub(crate) fn parse_stat(text: &str) -> Result<ProcStat, String> {
    let close = text.rfind(')').ok_or("no ')' after the command name")?;
    let rest = text.get(close + 1..).unwrap_or_default();
    // rest holds fields 3.. (state is field 3).
    let fields: Vec<&str> = rest.split_ascii_whitespace().collect();
    let field = |n: usize| -> Result<&str, String> {
        fields
            .get(n - 3)
            .copied()
            .ok_or_else(|| format!("field {n} is missing"))
    };
    let state = field(3)?.chars().next().ok_or("field 3 (state) is empty")?;
    let ppid = field(4)?
        .parse()
        .map_err(|e| format!("field 4 (ppid): {e}"))?;
    let start_time = field(22)?
        .parse()
        .map_err(|e| format!("field 22 (starttime): {e}"))?;
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
    let stat = parse_stat(&text).map_err(|reason| CallerError::ProcStatParse { path, reason })?;
    if stat.state == 'Z' || stat.state == 'X' {
        return Err(CallerError::ProcessGone { pid });
    }
    Ok(stat)
}

/// Whether an I/O error under `/proc/PID` means the process is gone.
pub(crate) fn is_gone(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ESRCH)
}

// SO_PEERPIDFD is 77 where the generic socket option numbers apply; libc
// does not export it for every target yet. Elsewhere pidfd_open is used.
#[cfg(any(
    target_arch = "x86_64",
    target_arch = "x86",
    target_arch = "aarch64",
    target_arch = "arm",
    target_arch = "riscv64",
    target_arch = "s390x",
    target_arch = "loongarch64"
))]
const SO_PEERPIDFD: Option<libc::c_int> = Some(77);
#[cfg(not(any(
    target_arch = "x86_64",
    target_arch = "x86",
    target_arch = "aarch64",
    target_arch = "arm",
    target_arch = "riscv64",
    target_arch = "s390x",
    target_arch = "loongarch64"
)))]
const SO_PEERPIDFD: Option<libc::c_int> = None;

/// SO_PEERPIDFD: `Ok(None)` when the kernel does not know the option.
fn peer_pidfd(sock: BorrowedFd<'_>) -> io::Result<Option<OwnedFd>> {
    let Some(opt) = SO_PEERPIDFD else {
        return Ok(None);
    };
    let mut fd: libc::c_int = -1;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `fd` and `len` are valid for writes of the sizes given; the
    // socket fd is borrowed for the duration of the call.
    let rc = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            opt,
            (&mut fd as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::ENOPROTOOPT) | Some(libc::EINVAL) => Ok(None),
            _ => Err(e),
        };
    }
    if fd < 0 {
        return Ok(None);
    }
    // SAFETY: the kernel just installed `fd` for us; nothing else owns it.
    Ok(Some(unsafe { OwnedFd::from_raw_fd(fd) }))
}

/// pidfd_open(2); nix 0.29 does not wrap it.
pub(crate) fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: plain syscall with integer arguments.
    let rc = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = libc::c_int::try_from(rc).map_err(|_| io::Error::other("pidfd out of range"))?;
    // SAFETY: the kernel just returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Whether the process behind `pidfd` has exited. A pidfd polls readable
/// once its process has exited (zombie or reaped).
fn pidfd_exited(pid: i32, pidfd: BorrowedFd<'_>) -> Result<bool, CallerError> {
    let mut fds = [PollFd::new(pidfd, PollFlags::POLLIN)];
    poll(&mut fds, PollTimeout::ZERO).map_err(|source| CallerError::Poll { pid, source })?;
    let revents = fds[0].revents().unwrap_or(PollFlags::empty());
    Ok(revents.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR))
}

impl Caller {
    /// Reads the peer of a connected unix stream socket: SO_PEERCRED, a pidfd
    /// (SO_PEERPIDFD, else pidfd_open) and the start time. Fails with
    /// [`CallerError::ProcessGone`] if the peer has already exited.
    pub fn from_socket(sock: BorrowedFd<'_>) -> Result<Caller, CallerError> {
        let cred = getsockopt(&sock, sockopt::PeerCredentials).map_err(CallerError::PeerCred)?;
        let pid = cred.pid();
        if pid <= 0 {
            return Err(CallerError::NoPeerPid);
        }
        let (pidfd, pidfd_source) = match peer_pidfd(sock) {
            Ok(Some(fd)) => (fd, PidfdSource::PeerPidfd),
            Ok(None) => (open_pidfd(pid)?, PidfdSource::PidfdOpen),
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {
                return Err(CallerError::ProcessGone { pid })
            }
            Err(source) => return Err(CallerError::Pidfd { pid, source }),
        };
        Self::with_pidfd(pid, cred.uid(), cred.gid(), pidfd, pidfd_source)
    }

    /// A caller known only by PID (tests): pidfd_open, the start time, and
    /// the real UID/GID from `/proc/PID/status`.
    #[cfg(test)]
    pub(crate) fn from_pid(pid: i32) -> Result<Caller, CallerError> {
        let pidfd = open_pidfd(pid)?;
        let path = PathBuf::from(format!("/proc/{pid}/status"));
        let status = fs::read_to_string(&path).map_err(|source| CallerError::ProcStat {
            path: path.clone(),
            source,
        })?;
        let first = |name: &str| -> Option<u32> {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_ascii_whitespace().next())
                .and_then(|v| v.parse().ok())
        };
        let (Some(uid), Some(gid)) = (first("Uid:"), first("Gid:")) else {
            return Err(CallerError::ProcStatParse {
                path,
                reason: "no Uid/Gid line".into(),
            });
        };
        Self::with_pidfd(pid, uid, gid, pidfd, PidfdSource::PidfdOpen)
    }

    fn with_pidfd(
        pid: i32,
        uid: u32,
        gid: u32,
        pidfd: OwnedFd,
        pidfd_source: PidfdSource,
    ) -> Result<Caller, CallerError> {
        // Stat first, then poll: if the pidfd's process is still running
        // after the read, the PID could not have been reused before it, so
        // the start time recorded is that process's.
        let stat = read_stat(pid)?;
        if pidfd_exited(pid, pidfd.as_fd())? {
            return Err(CallerError::ProcessGone { pid });
        }
        Ok(Caller {
            pid,
            uid,
            gid,
            pidfd,
            pidfd_source,
            start_time: stat.start_time,
        })
    }

    /// Checks that the process this caller was built from is still running
    /// and that `/proc/PID` still describes it (same start time). Call it
    /// after the attestors have read `/proc/PID/...`: if it passes, what they
    /// read belonged to this caller.
    pub fn still_same(&self) -> Result<(), CallerError> {
        // Same order as at construction: the /proc read is vouched for by the
        // pidfd being alive afterwards.
        let stat = read_stat(self.pid)?;
        if stat.start_time != self.start_time {
            return Err(CallerError::Replaced {
                pid: self.pid,
                recorded: self.start_time,
                current: stat.start_time,
            });
        }
        if pidfd_exited(self.pid, self.pidfd.as_fd())? {
            return Err(CallerError::ProcessGone { pid: self.pid });
        }
        Ok(())
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

fn open_pidfd(pid: i32) -> Result<OwnedFd, CallerError> {
    pidfd_open(pid).map_err(|source| {
        if source.raw_os_error() == Some(libc::ESRCH) {
            CallerError::ProcessGone { pid }
        } else {
            CallerError::Pidfd { pid, source }
        }
    })
}

#[cfg(test)]
mod tests;
