//! The agent's TLS channel to a server's Node API. The server must present
//! an X.509-SVID for `spiffe://<td>/spire/server` that verifies to the bundle
//! the agent was installed with; no DNS name is involved, so every server of the
//! trust domain passes the same check (`crate::servers` picks which one to dial).
//!
//! TLS 1.3 only: a TPM-resident agent key signs the CertificateVerify in the TPM, whose
//! TPM2_Hash takes at most 1024 bytes; TLS 1.2 would have it sign the whole handshake
//! transcript (see `crate::tls_key`). Both ends are ironroot, which speaks 1.3.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use hyper_util::rt::TokioIo;
use ironroot_api::spiffe_id::SpiffeId;
use ironroot_api::tls::SpiffeServerVerifier;
use rustls::client::ResolvesClientCert;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use tonic::transport::{Channel, Endpoint, Uri};

use crate::agent_key::AgentKey;
use crate::servers::{Server, Servers};

/// Why the agent has no channel to its server.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// A PEM bundle (the bootstrap trust bundle, the latest bundle, a DevID chain) could not be
    /// read.
    #[error("cannot read trust bundle {}", path.display())]
    ReadBundle {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a PEM bundle of certificates (or holds none).
    #[error("trust bundle {} {error}", path.display())]
    Bundle {
        /// The file.
        path: PathBuf,
        /// What is wrong with its content.
        error: ironroot_api::bundle::PemCertificatesError,
    },
    /// The TLS client configuration could not be built (roots that rustls refuses).
    #[error("cannot set up TLS 1.3")]
    Tls(#[source] rustls::Error),
    /// The software agent key (PKCS#8) is not a key rustls can sign with.
    #[error("the agent's software key cannot sign: {0}")]
    KeyUnusable(rustls::Error),
    /// The agent SVID and its key do not make a TLS client certificate.
    #[error("the agent SVID cannot be used as a TLS client certificate with the {kind} agent key: {error}")]
    ClientCertificate {
        /// The agent key's kind (`"software"` or `"tpm"`).
        kind: &'static str,
        /// rustls's reason.
        error: rustls::Error,
    },
    /// Neither `server_address` nor `server_addresses` names a server.
    #[error("no server address is configured (server_address or server_addresses)")]
    NoServerAddress,
    /// A server's name does not resolve.
    #[error("cannot resolve server address {address}")]
    Resolve {
        /// The address as configured.
        address: String,
        /// The resolver's error.
        #[source]
        source: std::io::Error,
    },
    /// No server of the trust domain could be reached: each one tried, with why.
    #[error("no server of the trust domain answered: {}", .failures.join("; "))]
    NoServerAnswered {
        /// Each failure, with its causes, in the order tried.
        failures: Vec<String>,
    },
    /// A server address is not a `host:port` a URI can hold.
    #[error("server address {address:?} is not host:port")]
    Address {
        /// The configured address.
        address: String,
        /// The transport's reason.
        #[source]
        source: tonic::transport::Error,
    },
    /// The TCP connection or the TLS handshake with the server failed (wrong address, server
    /// down, or a server certificate the roots do not verify).
    #[error("cannot reach the server at {address} over TLS")]
    Unreachable {
        /// The address dialled.
        address: String,
        /// The transport's reason.
        #[source]
        source: tonic::transport::Error,
    },
}

/// Reads the CERTIFICATE blocks of a PEM bundle.
pub fn read_bundle(path: &Path) -> Result<Vec<Vec<u8>>, ConnectError> {
    let text = std::fs::read(path).map_err(|source| ConnectError::ReadBundle {
        path: path.to_owned(),
        source,
    })?;
    ironroot_api::bundle::certificates_from_pem(&text).map_err(|error| ConnectError::Bundle {
        path: path.to_owned(),
        error,
    })
}

/// The agent's own SVID for mTLS: chain (leaf first) and its key (in the TPM or in
/// memory).
pub(crate) struct ClientIdentity {
    pub chain: Vec<Vec<u8>>,
    pub key: AgentKey,
}

/// The client certificate rustls presents: the SVID chain with its key, refused when the
/// leaf does not carry that key.
fn client_certificate(id: ClientIdentity) -> Result<Arc<dyn ResolvesClientCert>, ConnectError> {
    let chain: Vec<CertificateDer<'static>> =
        id.chain.into_iter().map(CertificateDer::from).collect();
    let key = id.key.signing_key().map_err(ConnectError::KeyUnusable)?;
    let certified = CertifiedKey::new(chain, key);
    certified
        .keys_match()
        .map_err(|error| ConnectError::ClientCertificate {
            kind: id.key.kind(),
            error,
        })?;
    Ok(Arc::new(SingleCertAndKey::from(certified)))
}

/// A gRPC channel over TLS to the first of `servers` that answers, accepting only
/// `server_id` under `roots`; with the server it reached.
pub async fn channel(
    servers: &Servers,
    roots: Vec<Vec<u8>>,
    server_id: SpiffeId,
) -> Result<(Channel, Server), ConnectError> {
    servers
        .connect(|server| {
            let (roots, server_id) = (roots.clone(), server_id.clone());
            async move { channel_with_identity(&server, roots, server_id, None).await }
        })
        .await
}

/// A channel to `server`, presenting `identity` (the agent SVID) as a client certificate.
pub(crate) async fn channel_with_identity(
    server: &Server,
    roots: Vec<Vec<u8>>,
    server_id: SpiffeId,
    identity: Option<ClientIdentity>,
) -> Result<Channel, ConnectError> {
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .map_err(ConnectError::Tls)?
    .dangerous()
    .with_custom_certificate_verifier(SpiffeServerVerifier::new(roots, server_id));
    let mut tls = match identity {
        None => builder.with_no_client_auth(),
        Some(id) => builder.with_client_cert_resolver(client_certificate(id)?),
    };
    tls.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(tls));
    let addr = server.socket;
    // The configured name is only the request's authority; the resolved address is dialled.
    Endpoint::try_from(format!("http://{}", server.configured))
        .map_err(|source| ConnectError::Address {
            address: server.configured.to_string(),
            source,
        })?
        // A silently dropped connection is noticed in seconds, not when TCP gives up.
        .connect_timeout(std::time::Duration::from_secs(10))
        .http2_keep_alive_interval(std::time::Duration::from_secs(15))
        .keep_alive_timeout(std::time::Duration::from_secs(10))
        .keep_alive_while_idle(true)
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let connector = connector.clone();
            async move {
                let tcp = tokio::net::TcpStream::connect(addr).await?;
                // Small gRPC frames: without this, Nagle + delayed ACK add ~40 ms per round trip.
                tcp.set_nodelay(true)?;
                // SVIDs carry no DNS name; the verifier checks the SPIFFE ID instead.
                let name =
                    ServerName::try_from("ironroot-server").map_err(std::io::Error::other)?;
                let tls = connector.connect(name, tcp).await?;
                Ok::<_, std::io::Error>(TokioIo::new(tls))
            }
        }))
        .await
        .map_err(|source| ConnectError::Unreachable {
            address: server.to_string(),
            source,
        })
}
