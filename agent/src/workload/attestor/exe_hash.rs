//! SHA-256 of a caller's executable, shared by the `unix` and `process`
//! attestors (one cache for both).
//!
//! The file is opened through `/proc/PID/exe`, which reaches the file the
//! kernel is running even if its path was since replaced or unlinked, and is
//! checked to be the file recorded when the caller connected. It is hashed
//! lazily, on the first call that attests the caller (not at accept), and
//! hashes are cached by file identity so a busy workload costs one hash, not
//! one per connection.

use std::collections::HashMap;
use std::fs::Metadata;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::sync::Mutex;

use sha2::{Digest, Sha256};

use super::warn_once::{Notice, Notices};
use super::WorkloadAttestError;
use crate::workload::caller::Caller;

/// Default cap on the size of an executable that is hashed: 64 MiB.
pub(crate) const DEFAULT_SHA256_MAX_BYTES: u64 = 64 * 1024 * 1024;

/// Entries kept before the cache is emptied. Executables on one node are few;
/// the bound only stops a stream of distinct binaries from growing memory.
const MAX_CACHE_ENTRIES: usize = 4096;

/// What identifies one version of a file. mtime alone can be set back by the
/// file's owner (utimensat), so a modified binary could reuse a cached hash;
/// ctime cannot be set from user space and changes on every write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct FileKey {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: i64,
    mtime_nsec: i64,
    ctime: i64,
    ctime_nsec: i64,
}

impl FileKey {
    fn of(m: &Metadata) -> Self {
        FileKey {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime: m.mtime(),
            mtime_nsec: m.mtime_nsec(),
            ctime: m.ctime(),
            ctime_nsec: m.ctime_nsec(),
        }
    }
}

/// The outcome of hashing an executable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExeDigest {
    /// Lower-case hex SHA-256 of the whole file.
    Sha256(String),
    /// The file is larger than the cap; it was not read.
    TooLarge {
        /// The file's size.
        size: u64,
        /// The cap in force.
        max: u64,
    },
}

/// Hashes executables, with a cache keyed by device, inode, size, mtime and
/// ctime, and remembers which executables were warned about. Share one (in
/// an `Arc`) between attestors: each executable is hashed once and warned
/// about once.
#[derive(Debug, Default)]
pub struct ExeHasher {
    cache: Mutex<HashMap<FileKey, String>>,
    notices: Notices,
}

impl ExeHasher {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of cached hashes.
    pub fn cached(&self) -> usize {
        self.lock().len()
    }

    /// True the first time `notice` is given: log it then, not after.
    pub(crate) fn first_notice(&self, notice: Notice) -> bool {
        self.notices.first(notice)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<FileKey, String>> {
        // A panic while holding the lock cannot leave a half-written entry
        // (insert is one call), so a poisoned map is still sound.
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// SHA-256 of the caller's executable (the file recorded when it
    /// connected), unless it is larger than `max_bytes`.
    pub fn sha256(
        &self,
        caller: &Caller,
        max_bytes: u64,
    ) -> Result<ExeDigest, WorkloadAttestError> {
        let path = caller.proc_path("exe");
        let what = "the executable";
        let io_err = |source| WorkloadAttestError::Io {
            what,
            path: path.clone(),
            source,
        };
        let (mut file, before) = caller.executable().open_recorded(caller.pid)?;
        let key = FileKey::of(&before);
        if key.size > max_bytes {
            return Ok(ExeDigest::TooLarge {
                size: key.size,
                max: max_bytes,
            });
        }
        if let Some(hex) = self.lock().get(&key) {
            return Ok(ExeDigest::Sha256(hex.clone()));
        }
        // Hash outside the lock: other callers need not wait for this read.
        // Read at most size + 1 bytes so a file that grows cannot make us
        // read without bound.
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 64 * 1024];
        let mut total: u64 = 0;
        let mut limited = (&mut file).take(key.size.saturating_add(1));
        loop {
            let n = limited.read(&mut buf).map_err(io_err)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            total += n as u64;
        }
        let after = file.metadata().map_err(io_err)?;
        if total != key.size || FileKey::of(&after) != key {
            // The bytes hashed may mix two versions of the file.
            return Err(WorkloadAttestError::ExeChanged { pid: caller.pid });
        }
        let hex = hex::encode(hasher.finalize());
        let mut cache = self.lock();
        if cache.len() >= MAX_CACHE_ENTRIES {
            cache.clear();
        }
        cache.insert(key, hex.clone());
        Ok(ExeDigest::Sha256(hex))
    }
}

#[cfg(test)]
mod tests;
