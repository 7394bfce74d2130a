//! Refusing a Workload API connection that is over its caller's limit
//! ([`super::limits`]) with a gRPC `ResourceExhausted` status that names the
//! limit, rather than a bare reset the client can only report as a
//! transport error.
//!
//! Answering costs an HTTP/2 handshake, which is the work a limit exists to
//! shed, so it is bounded: at most [`MAX_REFUSING`] refused connections are
//! answered at once, each for at most [`LINGER`]; past that a refused
//! connection is closed at once. Either way the caller is never attested and
//! never reaches the Workload API.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::UnixStream;
use tokio::sync::Semaphore;

use super::limits::LimitExceeded;

/// Refused connections answered at once, at most.
pub(crate) const MAX_REFUSING: usize = 32;

/// How long a refused connection is kept to answer its calls.
pub(crate) const LINGER: Duration = Duration::from_millis(500);

/// Answers refused connections (cheap to clone).
#[derive(Clone)]
pub(crate) struct Refuser {
    slots: Arc<Semaphore>,
}

impl Default for Refuser {
    fn default() -> Self {
        Refuser {
            slots: Arc::new(Semaphore::new(MAX_REFUSING)),
        }
    }
}

impl Refuser {
    /// Answers every call on `stream` with `why` as `ResourceExhausted` for
    /// [`LINGER`], then closes it; or closes it now if [`MAX_REFUSING`]
    /// refusals are already being answered.
    pub(crate) fn refuse(&self, stream: UnixStream, why: &LimitExceeded) {
        let Ok(slot) = self.slots.clone().try_acquire_owned() else {
            return;
        };
        let status = why.to_status();
        tokio::spawn(async move {
            let _slot = slot;
            let svc = hyper::service::service_fn(move |_req| {
                let status = status.clone();
                async move { Ok::<_, Infallible>(status.into_http::<Empty<Bytes>>()) }
            });
            let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc);
            tokio::pin!(conn);
            if tokio::time::timeout(LINGER, conn.as_mut()).await.is_err() {
                conn.as_mut().graceful_shutdown();
                let _ = tokio::time::timeout(LINGER, conn).await;
            }
        });
    }
}
