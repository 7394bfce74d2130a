//! Which podman sockets may be dialled at all.
//!
//! Whoever can write a directory on the way to a socket can put their own
//! server there, which then answers anything about any container. So a
//! podman socket is dialled only if the socket and every directory above it
//! (after resolving symbolic links) are owned by root or by the uid whose
//! podman it is, and no directory is writable by anyone else — except a
//! root-owned sticky directory such as `/tmp`, where others may add entries
//! but not rename or remove what they do not own. The rootful socket must
//! therefore sit in root's directories only; a rootless user's socket
//! (in that user's own `/run/user/<uid>`) is dialled only for the uids the
//! operator listed in `rootless_uids`.

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// Why a socket path is not dialled.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SocketRefused {
    /// The path does not lead to anything (no podman listening there).
    #[error("cannot resolve {path}: {source}")]
    Unresolvable {
        /// The path.
        path: PathBuf,
        /// What the kernel said.
        #[source]
        source: std::io::Error,
    },
    /// The path breaks the ownership rule.
    #[error("{0}")]
    Unsafe(String),
}

/// The canonical path of `socket` (to dial, so links cannot be swapped in
/// between), once the rule above holds for `owner` (0 for the rootful
/// podman, the user's uid for a rootless one).
pub(crate) fn safe_socket_path(socket: &Path, owner: u32) -> Result<PathBuf, SocketRefused> {
    let canonical = fs::canonicalize(socket).map_err(|source| SocketRefused::Unresolvable {
        path: socket.to_owned(),
        source,
    })?;
    let allowed = if owner == 0 {
        "root".to_owned()
    } else {
        format!("root or uid {owner}")
    };
    let meta = fs::symlink_metadata(&canonical)
        .map_err(|e| SocketRefused::Unsafe(format!("cannot stat {}: {e}", canonical.display())))?;
    if !meta.file_type().is_socket() {
        return Err(SocketRefused::Unsafe(format!(
            "{} is not a socket",
            canonical.display()
        )));
    }
    if meta.uid() != 0 && meta.uid() != owner {
        return Err(SocketRefused::Unsafe(format!(
            "{} is owned by uid {}; only {allowed} may own it",
            canonical.display(),
            meta.uid(),
        )));
    }
    for dir in canonical.ancestors().skip(1) {
        let m = fs::symlink_metadata(dir)
            .map_err(|e| SocketRefused::Unsafe(format!("cannot stat {}: {e}", dir.display())))?;
        if m.uid() != 0 && m.uid() != owner {
            return Err(SocketRefused::Unsafe(format!(
                "directory {} is owned by uid {}; only {allowed} may own the directories \
                 above this podman socket (their owner could put another server there)",
                dir.display(),
                m.uid(),
            )));
        }
        let mode = m.mode();
        let others_write = mode & 0o022 != 0;
        let sticky_root = mode & 0o1000 != 0 && m.uid() == 0;
        if others_write && !sticky_root {
            return Err(SocketRefused::Unsafe(format!(
                "directory {} is writable by group or others (mode {:o}); they could put \
                 another server there",
                dir.display(),
                mode & 0o7777
            )));
        }
    }
    Ok(canonical)
}

#[cfg(test)]
mod tests;
