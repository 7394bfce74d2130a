//! What program a caller runs, recorded when it is accepted.
//!
//! The executable is known by the file `/proc/PID/exe` reaches: its device,
//! inode and mount ([`ExeId`]), and the path the kernel gave for it then.
//! The attestors use these recorded facts, never a path read again later;
//! [`super::Caller::still_same`] refuses a caller whose `/proc/PID/exe` is
//! no longer that file.

use std::ffi::CString;
use std::fmt;
use std::fs::{self, File};
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use super::proc_stat::is_gone;
use super::CallerError;

/// One file on one mount: what `/proc/PID/exe` led to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ExeId {
    /// The device (major, minor) holding the file.
    pub dev: (u32, u32),
    /// Its inode.
    pub ino: u64,
    /// The mount it was reached through (statx `stx_mnt_id`: the unique,
    /// never reused id where the kernel has it (6.8+), else the classic
    /// one); `None` on kernels before 5.8.
    pub mnt_id: Option<u64>,
}

impl fmt::Display for ExeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "device {}:{} inode {}", self.dev.0, self.dev.1, self.ino)?;
        if let Some(m) = self.mnt_id {
            write!(f, " mount {m}")?;
        }
        Ok(())
    }
}

/// The program of a caller, as recorded at accept.
#[derive(Debug, Clone)]
pub struct Executable {
    path: PathBuf,
    id: ExeId,
    attestable: bool,
}

impl Executable {
    /// Reads `/proc/PID/exe`: identity, path, identity again (so path and
    /// identity describe one file even if the caller execs meanwhile), and
    /// whether the caller shares the agent's user namespace.
    pub(super) fn record(pid: i32) -> Result<Executable, CallerError> {
        let link = proc_exe(pid);
        let id = statx_id(Target::Path(&link)).map_err(|e| exe_err(pid, e))?;
        let path = fs::read_link(&link).map_err(|e| exe_err(pid, e))?;
        let again = statx_id(Target::Path(&link)).map_err(|e| exe_err(pid, e))?;
        if again != id {
            return Err(CallerError::ExeChanged {
                pid,
                connected: path,
                now: None,
            });
        }
        Ok(Executable {
            path,
            id,
            attestable: same_user_namespace_as_agent(pid)?,
        })
    }

    /// The path of the executable when the caller was accepted, as the
    /// kernel reports it (with " (deleted)" if it had been unlinked).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file's identity when the caller was accepted.
    pub fn id(&self) -> ExeId {
        self.id
    }

    /// Whether the executable is evidence of what the caller runs. It is not
    /// for a caller outside the agent's user namespace: there a process may
    /// point its own `/proc/PID/exe` at any executable file it can open,
    /// without exec (prctl `PR_SET_MM_MAP` with an `exe_fd` needs only
    /// CAP_CHECKPOINT_RESTORE or CAP_SYS_ADMIN in its own user namespace,
    /// which an unprivileged `unshare -U` grants). Such a caller gets no
    /// executable selectors.
    pub fn attestable(&self) -> bool {
        self.attestable
    }

    /// Opens the executable the caller runs now and checks it is the file
    /// recorded at accept; the file (for hashing) and its metadata.
    pub(crate) fn open_recorded(&self, pid: i32) -> Result<(File, fs::Metadata), CallerError> {
        let link = proc_exe(pid);
        let file = File::open(&link).map_err(|e| exe_err(pid, e))?;
        let now = statx_id(Target::Fd(file.as_raw_fd())).map_err(|e| exe_err(pid, e))?;
        if now != self.id {
            return Err(self.changed(pid));
        }
        let meta = file.metadata().map_err(|e| exe_err(pid, e))?;
        Ok((file, meta))
    }

    /// Fails unless `/proc/PID/exe` still leads to the recorded file.
    pub(super) fn check(&self, pid: i32) -> Result<(), CallerError> {
        let now = statx_id(Target::Path(&proc_exe(pid))).map_err(|e| exe_err(pid, e))?;
        if now != self.id {
            return Err(self.changed(pid));
        }
        Ok(())
    }

    fn changed(&self, pid: i32) -> CallerError {
        CallerError::ExeChanged {
            pid,
            connected: self.path.clone(),
            now: fs::read_link(proc_exe(pid)).ok(),
        }
    }
}

fn proc_exe(pid: i32) -> PathBuf {
    PathBuf::from(format!("/proc/{pid}/exe"))
}

fn exe_err(pid: i32, source: io::Error) -> CallerError {
    if is_gone(&source) {
        // ENOENT on /proc/PID/exe: a zombie, a kernel thread, or gone. The
        // caller checks the pidfd before trusting this.
        CallerError::ProcessGone { pid }
    } else {
        CallerError::ReadExe { pid, source }
    }
}

enum Target<'a> {
    Path(&'a Path),
    Fd(RawFd),
}

/// statx(2) for device, inode and mount id (std's metadata has no mount id).
#[allow(unsafe_code)] // neither std nor nix 0.29 wraps statx
fn statx_id(target: Target<'_>) -> io::Result<ExeId> {
    let (dirfd, path, flags) = match target {
        Target::Path(p) => (
            libc::AT_FDCWD,
            CString::new(p.as_os_str().as_encoded_bytes())
                .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?,
            0,
        ),
        Target::Fd(fd) => (fd, CString::default(), libc::AT_EMPTY_PATH),
    };
    let mask = libc::STATX_INO | libc::STATX_MNT_ID | libc::STATX_MNT_ID_UNIQUE;
    let mut buf = MaybeUninit::<libc::statx>::zeroed();
    // SAFETY: `path` is NUL-terminated and outlives the call; `buf` is
    // valid for writes of one statx.
    let rc = unsafe { libc::statx(dirfd, path.as_ptr(), flags, mask, buf.as_mut_ptr()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: statx succeeded and filled the buffer (zeroed beforehand).
    let st = unsafe { buf.assume_init() };
    if st.stx_mask & libc::STATX_INO == 0 {
        return Err(io::Error::other("statx gave no inode number"));
    }
    let mnt_id = (st.stx_mask & (libc::STATX_MNT_ID | libc::STATX_MNT_ID_UNIQUE) != 0)
        .then_some(st.stx_mnt_id);
    Ok(ExeId {
        dev: (st.stx_dev_major, st.stx_dev_minor),
        ino: st.stx_ino,
        mnt_id,
    })
}

/// Whether process `pid` is in the agent's user namespace.
pub(crate) fn same_user_namespace_as_agent(pid: i32) -> Result<bool, CallerError> {
    // Read once: the agent's namespace does not change. The error is kept as its kind
    // and text, io::Error not being Clone.
    static OWN: OnceLock<Result<(u64, u64), (io::ErrorKind, String)>> = OnceLock::new();
    let own = OWN
        .get_or_init(|| {
            fs::metadata("/proc/self/ns/user")
                .map(|m| (m.dev(), m.ino()))
                .map_err(|e| (e.kind(), e.to_string()))
        })
        .as_ref()
        .map_err(|(kind, e)| CallerError::UserNamespace {
            pid,
            source: io::Error::new(*kind, format!("the agent's own: {e}")),
        })?;
    let theirs = fs::metadata(format!("/proc/{pid}/ns/user")).map_err(|source| {
        if is_gone(&source) {
            CallerError::ProcessGone { pid }
        } else {
            CallerError::UserNamespace { pid, source }
        }
    })?;
    Ok((theirs.dev(), theirs.ino()) == *own)
}
