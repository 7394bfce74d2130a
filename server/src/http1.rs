//! The HTTP/1.1 listener of the server's unauthenticated documents: the OIDC discovery
//! endpoint ([`crate::oidc`]) and the federation bundle endpoint ([`crate::federation`]).
//! One accept loop for both: a bounded number of open connections, and of open connections
//! from one source address (past either, new ones are closed unanswered: one host holding
//! slow connections cannot starve the others), a deadline on the TLS handshake and on each
//! request's headers (which also closes a kept-alive connection left idle), and a responder
//! that maps a method and path to an answer. The per-address cap and the deadline are the
//! listener's section's options ([`ListenerLimits`]).

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use ironroot_runtime::log_throttle::LogThrottle;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, warn};

/// The TLS side of an HTTPS listener served here: no client certificates, the server's
/// certificate from `resolver` at each handshake (so a renewed one is served without a
/// restart), ALPN `http/1.1`.
pub(crate) fn tls_acceptor(
    resolver: Arc<dyn rustls::server::ResolvesServerCert>,
) -> Result<TlsAcceptor, rustls::Error> {
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Open connections at once; past it, new ones are closed unanswered.
pub(crate) const MAX_CONNECTIONS: usize = 256;
/// At most one log line per refusing limit in this period.
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(10);

/// Default of `max_connections_per_address` (`[oidc]`, `[federation.bundle_endpoint]`).
pub(crate) const DEFAULT_MAX_CONNECTIONS_PER_ADDRESS: usize = 16;
/// Default of `header_read_timeout` (`[oidc]`, `[federation.bundle_endpoint]`).
pub(crate) const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The configurable limits of one listener, from its section (`[oidc]`,
/// `[federation.bundle_endpoint]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ListenerLimits {
    /// The section's name, to name the options in refusals (`oidc`).
    pub(crate) section: &'static str,
    /// Open connections from one source address at once (an IPv6 /64 counts as one
    /// address); past it, new ones from there are closed unanswered.
    pub(crate) max_connections_per_address: usize,
    /// How long a client has to finish its TLS handshake, and then each request's headers;
    /// a kept-alive connection waiting for its next request is closed after it too.
    pub(crate) header_read_timeout: Duration,
}

#[cfg(test)]
impl ListenerLimits {
    /// The defaults, for `section`.
    pub(crate) fn defaults(section: &'static str) -> Self {
        ListenerLimits {
            section,
            max_connections_per_address: DEFAULT_MAX_CONNECTIONS_PER_ADDRESS,
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
        }
    }
}

/// Open connections per source address: an entry lives while its address has one open, so
/// the table never holds more than [`MAX_CONNECTIONS`] entries.
struct OpenPerAddress {
    max: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One open connection of an address; dropping it closes the count.
struct AddressSlot {
    table: Arc<OpenPerAddress>,
    key: IpAddr,
}

impl OpenPerAddress {
    fn take(table: &Arc<Self>, peer: IpAddr) -> Option<AddressSlot> {
        let key = address_key(peer);
        let mut open = table.open.lock().unwrap_or_else(PoisonError::into_inner);
        let n = open.entry(key).or_insert(0);
        if *n >= table.max {
            return None;
        }
        *n += 1;
        Some(AddressSlot {
            table: table.clone(),
            key,
        })
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut open = self
            .table
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = open.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.key);
            }
        }
    }
}

/// What counts as one source address: an IPv4 address (IPv4-mapped IPv6 included), or an
/// IPv6 /64 (one host usually holds a whole /64).
fn address_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !u128::from(u64::MAX))),
        v4 => v4,
    }
}

/// The answer to a request's method and path.
pub(crate) type Respond = Arc<dyn Fn(&Method, &str) -> Response<Full<Bytes>> + Send + Sync>;

/// Serves `listener` in the background: HTTPS through `tls`, plain HTTP without, within
/// `limits`. `name` names the endpoint in log lines.
pub(crate) fn spawn(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    name: &'static str,
    limits: ListenerLimits,
    respond: Respond,
) -> tokio::task::JoinHandle<()> {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let per_address = Arc::new(OpenPerAddress {
        max: limits.max_connections_per_address,
        open: Mutex::new(HashMap::new()),
    });
    tokio::spawn(async move {
        let mut log = LogThrottle::new(REFUSAL_LOG_EVERY);
        loop {
            let (tcp, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors, mostly: wait rather than spin.
                    warn!(error = %e, endpoint = name, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Some(address_slot) = OpenPerAddress::take(&per_address, peer.ip()) else {
                if let Some(suppressed) = log.admit("per-address", Instant::now()) {
                    warn!(
                        endpoint = name,
                        %peer,
                        suppressed,
                        "connection refused: {} connections from this address are open \
                         ({}.max_connections_per_address)",
                        limits.max_connections_per_address,
                        limits.section,
                    );
                }
                continue;
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                if let Some(suppressed) = log.admit("total", Instant::now()) {
                    warn!(
                        endpoint = name,
                        %peer,
                        suppressed,
                        "connection refused: {MAX_CONNECTIONS} connections are open (a fixed \
                         limit; {}.max_connections_per_address bounds one address's share)",
                        limits.section,
                    );
                }
                continue;
            };
            let (respond, tls) = (respond.clone(), tls.clone());
            tokio::spawn(async move {
                let _slots = (slot, address_slot);
                match tls {
                    None => serve_connection(tcp, respond, name, limits).await,
                    Some(acceptor) => {
                        let deadline = limits.header_read_timeout;
                        match tokio::time::timeout(deadline, acceptor.accept(tcp)).await {
                            Ok(Ok(stream)) => serve_connection(stream, respond, name, limits).await,
                            Ok(Err(e)) => {
                                debug!(error = %e, endpoint = name, "TLS handshake failed")
                            }
                            Err(_) => debug!(
                                endpoint = name,
                                %peer,
                                "connection closed: TLS handshake not finished within {}.\
                                 header_read_timeout",
                                limits.section
                            ),
                        }
                    }
                }
            });
        }
    })
}

async fn serve_connection<S>(
    stream: S,
    respond: Respond,
    name: &'static str,
    limits: ListenerLimits,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let respond = respond.clone();
        async move { Ok::<_, Infallible>(respond(req.method(), req.uri().path())) }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    if let Err(e) = builder
        .serve_connection(TokioIo::new(stream), service)
        .await
    {
        if e.is_timeout() {
            debug!(
                endpoint = name,
                "connection closed: no complete request headers within {}.header_read_timeout",
                limits.section
            );
        } else {
            debug!(error = %e, endpoint = name, "connection ended with an error");
        }
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

#[cfg(test)]
#[path = "http1_tests.rs"]
mod tests;
