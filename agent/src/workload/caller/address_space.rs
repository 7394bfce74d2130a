//! Noticing exec(2): a handle on the address space a caller had when it
//! was accepted.
//!
//! exec replaces a process's address space (its `mm`), even when it runs the
//! same file again. Opening `/proc/PID/environ` (or `/proc/PID/mem`) ties
//! the open file to the address space of that moment without keeping its
//! memory alive; once exec has torn that address space down, reading through
//! the handle returns nothing. So "the handle still reads" means "no exec
//! since the handle was opened".
//!
//! The one case this cannot see: another process sharing the address space
//! (made with `clone(CLONE_VM)` without `CLONE_THREAD`; threads are killed by
//! exec) keeps it alive across the caller's exec. An exec of another file is
//! still refused then, by the executable's identity
//! ([`super::Executable`]); an exec of the same file is not noticed.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use super::proc_stat::is_gone;
use super::CallerError;

/// Which file holds the address space.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Via {
    /// `/proc/PID/environ`: opening it needs what reading `/proc/PID/exe`
    /// needs (ptrace read access). It reads at least one byte while the
    /// address space lives and the environment is not empty.
    Environ,
    /// `/proc/PID/mem`, for a caller with an empty environment: needs ptrace
    /// attach access. Reading address 0 fails with EIO while the address
    /// space lives (nothing is mapped there) and returns 0 bytes after.
    Mem,
}

/// An open handle on the address space of a caller at accept.
#[derive(Debug)]
pub(super) struct AddressSpace {
    file: File,
    via: Via,
}

impl AddressSpace {
    /// Opens the handle. Fails with ProcessGone if the process has no
    /// address space any more (it exited).
    pub(super) fn pin(pid: i32) -> Result<AddressSpace, CallerError> {
        let environ = open(pid, "environ")?;
        let held = AddressSpace {
            file: environ,
            via: Via::Environ,
        };
        if held.intact(pid)? {
            return Ok(held);
        }
        // Empty environment (or exited, or exec'd since the open): ask mem.
        let held = AddressSpace {
            file: open(pid, "mem")?,
            via: Via::Mem,
        };
        if held.intact(pid)? {
            return Ok(held);
        }
        Err(CallerError::ProcessGone { pid })
    }

    /// Whether the address space of accept is still there (no exec since,
    /// and not exited).
    pub(super) fn intact(&self, pid: i32) -> Result<bool, CallerError> {
        let mut byte = [0u8; 1];
        match (self.via, self.file.read_at(&mut byte, 0)) {
            (_, Ok(n)) => Ok(n > 0),
            (Via::Mem, Err(e)) if e.raw_os_error() == Some(libc::EIO) => Ok(true),
            (_, Err(source)) => Err(CallerError::AddressSpace { pid, source }),
        }
    }
}

fn open(pid: i32, name: &str) -> Result<File, CallerError> {
    File::open(format!("/proc/{pid}/{name}")).map_err(|source: io::Error| {
        if is_gone(&source) {
            CallerError::ProcessGone { pid }
        } else {
            CallerError::AddressSpace { pid, source }
        }
    })
}
