//! pidfds: SO_PEERPIDFD where the kernel has it, else pidfd_open, and
//! whether the process behind one has exited.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use super::CallerError;

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
pub(super) fn peer_pidfd(sock: BorrowedFd<'_>) -> io::Result<Option<OwnedFd>> {
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
fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: plain syscall with integer arguments.
    let rc = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = libc::c_int::try_from(rc).map_err(|_| io::Error::other("pidfd out of range"))?;
    // SAFETY: the kernel just returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// pidfd_open, with ESRCH reported as the process being gone.
pub(super) fn open_pidfd(pid: i32) -> Result<OwnedFd, CallerError> {
    pidfd_open(pid).map_err(|source| {
        if source.raw_os_error() == Some(libc::ESRCH) {
            CallerError::ProcessGone { pid }
        } else {
            CallerError::Pidfd { pid, source }
        }
    })
}

/// Whether the process behind `pidfd` has exited. A pidfd polls readable
/// once its process has exited (zombie or reaped).
pub(super) fn pidfd_exited(pid: i32, pidfd: BorrowedFd<'_>) -> Result<bool, CallerError> {
    let mut fds = [PollFd::new(pidfd, PollFlags::POLLIN)];
    poll(&mut fds, PollTimeout::ZERO).map_err(|source| CallerError::Poll { pid, source })?;
    let revents = fds[0].revents().unwrap_or(PollFlags::empty());
    Ok(revents.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR))
}
