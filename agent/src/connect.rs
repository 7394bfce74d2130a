//! The agent's TLS channel to the server's Node API. The server must present
//! an X.509-SVID for spiffe://<td>/spire/server that verifies to the bundle
//! the agent was installed with; no DNS name is involved.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use hyper_util::rt::TokioIo;
use ironroot_api::spiffe_id::SpiffeId;
use ironroot_api::tls::SpiffeServerVerifier;
use rustls::pki_types::ServerName;
use tonic::transport::{Channel, Endpoint, Uri};

/// Reads the CERTIFICATE blocks of a PEM bundle.
pub fn read_bundle(path: &Path) -> anyhow::Result<Vec<Vec<u8>>> {
    let text = std::fs::read(path)
        .with_context(|| format!("cannot read trust bundle {}", path.display()))?;
    let certs = ironroot_api::bundle::certificates_from_pem(&text)
        .map_err(|e| anyhow::anyhow!("trust bundle {} {e}", path.display()))?;
    Ok(certs)
}

/// The agent's own SVID for mTLS: chain (leaf first) and PKCS#8 key.
pub struct ClientIdentity {
    pub chain: Vec<Vec<u8>>,
    pub key_pkcs8: Vec<u8>,
}

/// A gRPC channel over TLS to `address`, accepting only `server_id` under `roots`.
pub async fn channel(
    address: &str,
    roots: Vec<Vec<u8>>,
    server_id: SpiffeId,
) -> anyhow::Result<Channel> {
    channel_with_identity(address, roots, server_id, None).await
}

/// [`channel`], presenting `identity` (the agent SVID) as a client certificate.
pub async fn channel_with_identity(
    address: &str,
    roots: Vec<Vec<u8>>,
    server_id: SpiffeId,
    identity: Option<ClientIdentity>,
) -> anyhow::Result<Channel> {
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .dangerous()
    .with_custom_certificate_verifier(SpiffeServerVerifier::new(roots, server_id));
    let mut tls = match identity {
        None => builder.with_no_client_auth(),
        Some(id) => builder
            .with_client_auth_cert(
                id.chain
                    .into_iter()
                    .map(rustls::pki_types::CertificateDer::from)
                    .collect(),
                rustls::pki_types::PrivateKeyDer::Pkcs8(id.key_pkcs8.into()),
            )
            .context("the agent SVID cannot be used as a TLS client certificate")?,
    };
    tls.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(tls));
    let addr = address.to_string();
    Endpoint::try_from(format!("http://{address}"))
        .with_context(|| format!("server_address {address:?} is not host:port"))?
        // A silently dropped connection is noticed in seconds, not when TCP gives up.
        .connect_timeout(std::time::Duration::from_secs(10))
        .http2_keep_alive_interval(std::time::Duration::from_secs(15))
        .keep_alive_timeout(std::time::Duration::from_secs(10))
        .keep_alive_while_idle(true)
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let (connector, addr) = (connector.clone(), addr.clone());
            async move {
                let tcp = tokio::net::TcpStream::connect(&addr).await?;
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
        .with_context(|| format!("cannot reach the server at {address} over TLS"))
}
