//! The HTTP/1.1 listener of the server's unauthenticated documents: the OIDC discovery
//! endpoint ([`crate::oidc`]) and the federation bundle endpoint ([`crate::federation`]).
//! One accept loop for both: a bounded number of open connections (past it, new ones are
//! closed unanswered), a deadline on the TLS handshake and on a request's headers, and a
//! responder that maps a method and path to an answer.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, warn};

/// Open connections at once; past it, new ones are closed unanswered.
pub(crate) const MAX_CONNECTIONS: usize = 256;
/// How long a client has to finish its TLS handshake and send a request's headers.
pub(crate) const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The answer to a request's method and path.
pub(crate) type Respond = Arc<dyn Fn(&Method, &str) -> Response<Full<Bytes>> + Send + Sync>;

/// Serves `listener` in the background: HTTPS through `tls`, plain HTTP without. `name`
/// names the endpoint in log lines.
pub(crate) fn spawn(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    name: &'static str,
    respond: Respond,
) -> tokio::task::JoinHandle<()> {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    tokio::spawn(async move {
        loop {
            let tcp = match listener.accept().await {
                Ok((tcp, _)) => tcp,
                Err(e) => {
                    // Out of descriptors, mostly: wait rather than spin.
                    warn!(error = %e, endpoint = name, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                debug!(
                    endpoint = name,
                    "{MAX_CONNECTIONS} connections open; one refused"
                );
                continue;
            };
            let (respond, tls) = (respond.clone(), tls.clone());
            tokio::spawn(async move {
                let _slot = slot;
                match tls {
                    None => serve_connection(tcp, respond, name).await,
                    Some(acceptor) => {
                        match tokio::time::timeout(HEADER_READ_TIMEOUT, acceptor.accept(tcp)).await
                        {
                            Ok(Ok(stream)) => serve_connection(stream, respond, name).await,
                            Ok(Err(e)) => {
                                debug!(error = %e, endpoint = name, "TLS handshake failed")
                            }
                            Err(_) => debug!(endpoint = name, "TLS handshake timed out"),
                        }
                    }
                }
            });
        }
    })
}

async fn serve_connection<S>(stream: S, respond: Respond, name: &'static str)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let respond = respond.clone();
        async move { Ok::<_, Infallible>(respond(req.method(), req.uri().path())) }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    if let Err(e) = builder
        .serve_connection(TokioIo::new(stream), service)
        .await
    {
        debug!(error = %e, endpoint = name, "connection ended with an error");
    }
}

/// A short text answer that no cache keeps.
pub(crate) fn plain(status: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}
