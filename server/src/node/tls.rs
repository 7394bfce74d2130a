//! TLS for the Node API: the server presents its own X.509-SVID
//! (`spiffe://<td>/spire/server`), issued by its CA and renewed at half life,
//! so agents check it against the trust bundle they were installed with.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use ironroot_api::spiffe_id::SpiffeId;
use ironroot_runtime::unix_now;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::net::TcpListener;
use tokio_stream::Stream;
use tracing::{info, warn};

use super::limits::{LimitedConnection, NodeLimits};
use crate::ca::{CaError, CertificateAuthority};

/// Why the server's own SVID could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// No key pair could be generated.
    #[error("server TLS key: {0}")]
    Key(#[source] rcgen::Error),
    /// The CA refused or failed to sign.
    #[error("cannot issue the server SVID: {0}")]
    Issue(#[source] Box<CaError>),
    /// rustls cannot sign with the key.
    #[error("server TLS key not usable by rustls: {0}")]
    Rustls(#[source] rustls::Error),
}

/// The server's current SVID, swapped in place on renewal.
#[derive(Debug)]
pub(crate) struct ServerIdentity {
    /// The key and SVID, the SVID's notAfter, and when it was issued.
    current: RwLock<(Arc<CertifiedKey>, i64, i64)>,
}

/// A fresh key (in memory; it only authenticates TLS) and an SVID for it.
fn issue(
    ca: &CertificateAuthority,
    ttl: u32,
) -> Result<(Arc<CertifiedKey>, i64, i64), IdentityError> {
    let issued_at = unix_now();
    let key = rcgen::KeyPair::generate().map_err(IdentityError::Key)?;
    let id = SpiffeId::server(ca.trust_domain());
    let svid = ca
        .sign_x509_svid(&key, &id, ttl, &[])
        .map_err(|e| IdentityError::Issue(Box::new(e)))?;
    let chain: Vec<CertificateDer<'static>> =
        svid.chain.into_iter().map(CertificateDer::from).collect();
    let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let signing =
        rustls::crypto::ring::sign::any_supported_type(&der).map_err(IdentityError::Rustls)?;
    Ok((
        Arc::new(CertifiedKey::new(chain, signing)),
        svid.expires_at,
        issued_at,
    ))
}

impl ServerIdentity {
    pub(crate) fn new(ca: &CertificateAuthority, ttl: u32) -> Result<Arc<Self>, IdentityError> {
        Ok(Arc::new(ServerIdentity {
            current: RwLock::new(issue(ca, ttl)?),
        }))
    }

    /// Renews the SVID when half its life is gone. Its life is what the CA granted, which
    /// can be less than `ttl` (cut to the CA's or the in-memory signing key's notAfter).
    pub(crate) fn renew_if_due(
        &self,
        ca: &CertificateAuthority,
        ttl: u32,
    ) -> Result<bool, IdentityError> {
        let (expires_at, issued_at) = self.current.read().map(|g| (g.1, g.2)).unwrap_or((0, 0));
        let due = unix_now() >= issued_at + (expires_at - issued_at) / 2;
        if !due {
            return Ok(false);
        }
        let fresh = issue(ca, ttl)?;
        if let Ok(mut g) = self.current.write() {
            *g = fresh;
        }
        Ok(true)
    }
}

impl ResolvesServerCert for ServerIdentity {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.read().ok().map(|g| g.0.clone())
    }
}

/// A Node API connection as the gRPC server gets it: TLS, holding its connection slot.
pub(crate) type NodeConnection =
    LimitedConnection<tokio_rustls::server::TlsStream<tokio::net::TcpStream>>;

/// Accepts TCP connections and completes TLS handshakes; failed handshakes
/// are logged and dropped without stopping the listener.
/// Client certificates are optional (a node attesting for the first time has
/// none) but, when sent, must verify to the current bundle; the agent API
/// then requires one.
/// A connection past `max_connections` (handshakes in progress count) is closed at
/// once, before any TLS work, and the refusal logged by `limits`.
pub(crate) fn tls_incoming(
    listener: TcpListener,
    identity: Arc<ServerIdentity>,
    client_roots: ironroot_api::tls::RootsSource,
    limits: Arc<NodeLimits>,
) -> impl Stream<Item = Result<NodeConnection, std::io::Error>> {
    let verifier = ironroot_api::tls::SpiffeClientVerifier::new(client_roots);
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map(|b| {
        b.with_client_cert_verifier(verifier)
            .with_cert_resolver(identity)
    });
    if let Ok(c) = config.as_mut() {
        c.alpn_protocols = vec![b"h2".to_vec()];
    }
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(async move {
        let config = match config {
            Ok(c) => Arc::new(c),
            Err(e) => {
                let _ = tx.send(Err(std::io::Error::other(e))).await;
                return;
            }
        };
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        loop {
            let (tcp, peer) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    warn!(error = %e, "node API accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Ok(permit) = limits.admit_connection(peer) else {
                drop(tcp);
                continue;
            };
            // Small gRPC frames: without this, Nagle + delayed ACK add ~40 ms per round trip.
            if let Err(e) = tcp.set_nodelay(true) {
                warn!(peer = %peer, error = %e, "cannot set TCP_NODELAY");
            }
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => {
                        let _ = tx.send(Ok(LimitedConnection::new(tls, permit))).await;
                    }
                    Ok(Err(e)) => info!(peer = %peer, error = %e, "node API TLS handshake failed"),
                    Err(_) => info!(peer = %peer, "node API TLS handshake timed out"),
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}
