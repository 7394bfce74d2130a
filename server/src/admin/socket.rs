//! The admin unix socket: created with a restrictive mode, and every call is
//! checked against the caller's uid from SO_PEERCRED (defence in depth behind
//! the file mode).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ironroot_api::admin::admin_server::AdminServer;
use ironroot_runtime::socket::{bind_unix, BindError};
use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::transport::server::UdsConnectInfo;
use tonic::{Request, Status};

use super::AdminService;

/// Why the admin socket could not be set up or served.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdminSocketError {
    /// The socket's directory cannot be created.
    #[error("cannot create admin socket directory {}: {source}", dir.display())]
    CreateDir {
        /// The directory (the socket path's parent).
        dir: PathBuf,
        /// The I/O error (permissions, read-only file system).
        #[source]
        source: std::io::Error,
    },
    /// Another process answers on the socket: taking it over would cut that server off.
    /// The operator stops the other server, or gives this one another `admin.socket_path`.
    #[error(
        "admin socket {} is in use by another process (is a server already running?)",
        path.display()
    )]
    InUse {
        /// The configured socket path.
        path: PathBuf,
    },
    /// A stale socket file cannot be removed.
    #[error("cannot remove stale admin socket {}: {source}", path.display())]
    RemoveStale {
        /// The configured socket path.
        path: PathBuf,
        /// The I/O error (permissions).
        #[source]
        source: std::io::Error,
    },
    /// The socket cannot be bound.
    #[error("cannot bind admin socket {}: {source}", path.display())]
    Bind {
        /// The configured socket path.
        path: PathBuf,
        /// The I/O error (permissions, a path too long for a unix socket).
        #[source]
        source: std::io::Error,
    },
    /// The socket's mode cannot be set: it is not left open with another mode.
    #[error("cannot set mode {mode:o} on {}: {source}", path.display())]
    Mode {
        /// The configured socket path.
        path: PathBuf,
        /// The configured mode (`admin.socket_mode`).
        mode: u32,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The gRPC server stopped with an error.
    #[error("admin API server failed: {0}")]
    Serve(#[source] tonic::transport::Error),
}

/// Binds the socket at `path` with `mode`, replacing a stale socket file but
/// refusing to take over one that a running server still answers on.
pub(crate) fn bind_admin_socket(path: &Path, mode: u32) -> Result<UnixListener, AdminSocketError> {
    // The admin socket's own variants keep its messages ("is a server already running?").
    bind_unix(path, mode).map_err(|e| match e {
        BindError::CreateDir { dir, source } => AdminSocketError::CreateDir { dir, source },
        BindError::InUse { path } => AdminSocketError::InUse { path },
        BindError::RemoveStale { path, source } => AdminSocketError::RemoveStale { path, source },
        BindError::Bind { path, source } => AdminSocketError::Bind { path, source },
        BindError::Mode { path, mode, source } => AdminSocketError::Mode { path, mode, source },
    })
}

/// Rejects callers whose uid is not allowed.
fn peer_check(
    allowed: Arc<Vec<u32>>,
) -> impl Fn(Request<()>) -> Result<Request<()>, Status> + Clone {
    move |req: Request<()>| {
        let uid = req
            .extensions()
            .get::<UdsConnectInfo>()
            .and_then(|i| i.peer_cred)
            .map(|c| c.uid());
        match uid {
            Some(u) if allowed.contains(&u) => Ok(req),
            Some(u) => {
                tracing::warn!(uid = u, "admin call refused: uid not allowed");
                Err(Status::permission_denied(format!(
                    "caller uid {u} may not use the admin API (allowed uids: {:?}); run as root",
                    allowed.as_slice()
                )))
            }
            None => Err(Status::permission_denied(
                "the caller's credentials could not be read from the socket",
            )),
        }
    }
}

/// Serves the admin API on `listener` until `shutdown` completes.
pub(crate) async fn serve_admin(
    listener: UnixListener,
    service: AdminService,
    allowed_uids: Vec<u32>,
    max_request_bytes: usize,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), AdminSocketError> {
    let svc = AdminServer::new(service)
        .max_decoding_message_size(max_request_bytes)
        .max_encoding_message_size(64 * 1024 * 1024);
    let svc = super::counted::Counted::new(
        tonic::service::interceptor::InterceptedService::new(
            svc,
            peer_check(Arc::new(allowed_uids)),
        ),
        "socket",
    );
    tonic::transport::Server::builder()
        .add_service(svc)
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), shutdown)
        .await
        .map_err(AdminSocketError::Serve)
}
