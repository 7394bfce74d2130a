//! The admin unix socket: created with a restrictive mode, and every call is
//! checked against the caller's uid from SO_PEERCRED (defence in depth behind
//! the file mode).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use ironroot_api::admin::admin_server::AdminServer;
use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::transport::server::UdsConnectInfo;
use tonic::{Request, Status};

use super::AdminService;

/// Binds the socket at `path` with `mode`, replacing a stale socket file but
/// refusing to take over one that a running server still answers on.
pub fn bind_admin_socket(path: &Path, mode: u32) -> anyhow::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create admin socket directory {}", dir.display()))?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            anyhow::bail!(
                "admin socket {} is in use by another process (is a server already running?)",
                path.display()
            );
        }
        std::fs::remove_file(path)
            .with_context(|| format!("cannot remove stale admin socket {}", path.display()))?;
    }
    let listener = UnixListener::bind(path)
        .with_context(|| format!("cannot bind admin socket {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot set mode {mode:o} on {}", path.display()))?;
    Ok(listener)
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
pub async fn serve_admin(
    listener: UnixListener,
    service: AdminService,
    allowed_uids: Vec<u32>,
    max_request_bytes: usize,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let svc = AdminServer::new(service)
        .max_decoding_message_size(max_request_bytes)
        .max_encoding_message_size(64 * 1024 * 1024);
    let svc = tonic::service::interceptor::InterceptedService::new(
        svc,
        peer_check(Arc::new(allowed_uids)),
    );
    tonic::transport::Server::builder()
        .add_service(svc)
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), shutdown)
        .await
        .context("admin API server failed")
}
