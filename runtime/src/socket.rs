//! Binding a unix socket the way both binaries bind theirs (the agent's Workload
//! API and SDS sockets, the server's admin socket): the directory is created, a
//! stale socket file left by a crash is replaced, but a socket that a running
//! process still answers on is never taken over, and the mode is set before the
//! first connection is accepted.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use tokio::net::UnixListener;

/// Why a unix socket could not be bound. Each binary maps it into its own error,
/// which says whose socket it was.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// The socket's directory cannot be created.
    #[error("cannot create socket directory {}: {source}", dir.display())]
    CreateDir {
        /// The directory.
        dir: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// Another process answers on the socket: taking it over would cut that
    /// process's clients off.
    #[error("{} is in use by another process", path.display())]
    InUse {
        /// The socket.
        path: PathBuf,
    },
    /// A stale socket file cannot be removed.
    #[error("cannot remove stale socket {}: {source}", path.display())]
    RemoveStale {
        /// The socket.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The socket cannot be bound.
    #[error("cannot bind {}: {source}", path.display())]
    Bind {
        /// The socket.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The socket's mode cannot be set (the listener is dropped rather than left
    /// open with another mode).
    #[error("cannot set mode {mode:o} on {}: {source}", path.display())]
    Mode {
        /// The socket.
        path: PathBuf,
        /// The mode asked for.
        mode: u32,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
}

/// Binds a listener at `path` and sets the socket file's mode to `mode`.
/// Must be called within a tokio runtime.
pub fn bind_unix(path: &Path, mode: u32) -> Result<UnixListener, BindError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|source| BindError::CreateDir {
            dir: dir.to_owned(),
            source,
        })?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(BindError::InUse {
                path: path.to_owned(),
            });
        }
        std::fs::remove_file(path).map_err(|source| BindError::RemoveStale {
            path: path.to_owned(),
            source,
        })?;
    }
    let listener = UnixListener::bind(path).map_err(|source| BindError::Bind {
        path: path.to_owned(),
        source,
    })?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(|source| {
        BindError::Mode {
            path: path.to_owned(),
            mode,
            source,
        }
    })?;
    Ok(listener)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::{bind_unix, BindError};

    #[tokio::test]
    async fn binds_with_the_mode_replaces_a_stale_file_and_refuses_a_live_socket() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("sub").join("api.sock");
        let live = bind_unix(&path, 0o600).expect("bind in a new directory");
        let mode = std::fs::metadata(&path)
            .expect("socket file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(matches!(
            bind_unix(&path, 0o600),
            Err(BindError::InUse { .. })
        ));
        // Dropping the listener leaves the file behind, as a crash would.
        drop(live);
        assert!(path.exists());
        let _again = bind_unix(&path, 0o666).expect("a stale socket file is replaced");
        let mode = std::fs::metadata(&path)
            .expect("socket file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o666);
    }
}
