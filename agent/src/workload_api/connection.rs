//! Accepting workload connections: each caller is identified (and counted
//! against its uid's limits) when it connects, before any call.

use std::os::fd::AsFd;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Instant;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{UnixListener, UnixStream};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;
use tonic::transport::server::Connected;
use tracing::warn;

use crate::workload::caller::Caller;
use crate::workload::h2_authority::AuthorityShim;
use crate::workload::limits::{CallerLimits, ConnectionPermit};
use crate::workload::refuse::Refuser;

/// A workload's connection, with the caller identified at accept time. The
/// [`AuthorityShim`] lets the server take any `:authority` a client sends over
/// the unix socket and logs its protocol-level refusals.
pub(crate) struct CallerConn {
    stream: AuthorityShim<UnixStream>,
    caller: Arc<Caller>,
    /// Counts the connection against its uid's limit until it closes.
    _permit: ConnectionPermit,
}

impl Connected for CallerConn {
    type ConnectInfo = Arc<Caller>;
    fn connect_info(&self) -> Self::ConnectInfo {
        self.caller.clone()
    }
}

impl AsyncRead for CallerConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for CallerConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// The uid of the peer (SO_PEERCRED), read before anything else costs work.
fn peer_uid(stream: &UnixStream) -> Option<u32> {
    use nix::sys::socket::{getsockopt, sockopt};
    getsockopt(&stream.as_fd(), sockopt::PeerCredentials)
        .ok()
        .map(|c| c.uid())
}

/// Accepts workload connections and identifies each caller; a connection
/// whose caller cannot be identified is dropped, one over its uid's limits
/// is refused (`ResourceExhausted`, see [`Refuser`]) before it is attested.
pub(crate) fn incoming(
    listener: UnixListener,
    limits: Arc<CallerLimits>,
) -> impl Stream<Item = std::io::Result<CallerConn>> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let refuser = Refuser::default();
    tokio::spawn(async move {
        loop {
            let stream = match listener.accept().await {
                Ok((s, _)) => s,
                Err(e) => {
                    warn!(error = %e, "workload API accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Some(uid) = peer_uid(&stream) else {
                warn!("workload caller has no peer credentials; connection dropped");
                continue;
            };
            let permit = match limits.admit_connection(uid, Instant::now()) {
                Ok(p) => p,
                Err(e) => {
                    // Logged (throttled) by admit_connection.
                    refuser.refuse(stream, &e);
                    continue;
                }
            };
            match Caller::from_socket(stream.as_fd()) {
                Ok(caller) => {
                    let conn = CallerConn {
                        stream: AuthorityShim::new(stream, caller.pid),
                        caller: Arc::new(caller),
                        _permit: permit,
                    };
                    if tx.send(Ok(conn)).await.is_err() {
                        return;
                    }
                }
                Err(e) => {
                    warn!(error = %e, "workload caller could not be identified; connection dropped")
                }
            }
        }
    });
    ReceiverStream::new(rx)
}
