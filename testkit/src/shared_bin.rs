//! Binaries another user can run, wherever the checkout lives.
//!
//! Tests that run a program as another uid (nobody, to be refused) cannot
//! run it from the cargo target dir: in a clone under root's home (mode
//! 0700 on Debian) that user cannot even reach it, and the test fails with
//! EACCES for a reason that has nothing to do with what it checks. So such
//! a test runs a copy in a fresh temporary directory every user can enter.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// A copy of a binary in a directory every user can traverse; removed on
/// drop.
#[derive(Debug)]
pub struct SharedBinary {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl SharedBinary {
    /// Copies `bin` (mode 0755) into a new directory under the system temp
    /// dir (mode 0755). Panics, naming the fix, if some directory above it
    /// is not traversable by other users (TMPDIR pointing into a private
    /// home, say).
    pub fn copy_of(bin: &Path) -> SharedBinary {
        let dir = tempfile::Builder::new()
            .prefix("ironroot-shared-bin-")
            .tempdir()
            .unwrap_or_else(|e| panic!("temp dir for a copy of {}: {e}", bin.display()));
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755))
            .unwrap_or_else(|e| panic!("chmod {}: {e}", dir.path().display()));
        for d in dir.path().ancestors().skip(1) {
            let mode = fs::metadata(d)
                .unwrap_or_else(|e| panic!("stat {}: {e}", d.display()))
                .permissions()
                .mode();
            assert!(
                mode & 0o001 != 0,
                "{} (mode {:o}) cannot be traversed by other users, so they cannot run \
                 a copy of {} under it: point TMPDIR at a directory they can reach",
                d.display(),
                mode & 0o7777,
                bin.display()
            );
        }
        let name = bin.file_name().unwrap_or_else(|| "program".as_ref());
        let path = dir.path().join(name);
        fs::copy(bin, &path)
            .unwrap_or_else(|e| panic!("copy {} to {}: {e}", bin.display(), path.display()));
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755))
            .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
        SharedBinary { _dir: dir, path }
    }

    /// The copy.
    pub fn path(&self) -> &Path {
        &self.path
    }
}
