//! The admin API over mTLS (`--tls-address`): the caller presents an admin X.509-SVID and
//! accepts only the server's own SVID (`spiffe://<td>/spire/server`) under the bundle it
//! was given, the trust domain being the one its SVID names.

use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context};
use hyper_util::rt::TokioIo;
use ironroot_api::spiffe_id::SpiffeId;
use ironroot_api::tls::{svid_spiffe_id, SpiffeServerVerifier};
use rustls::pki_types::{
    CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, PrivateSec1KeyDer, ServerName,
};
use rustls::sign::CertifiedKey;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::cli::AdminTlsArgs;

fn read(what: &str, path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read {what} {}", path.display()))
}

/// The CERTIFICATE blocks of the PEM file at `path` (at least one).
fn certificates(what: &str, path: &Path) -> anyhow::Result<Vec<Vec<u8>>> {
    let certs = ironroot_api::bundle::certificates_from_pem(&read(what, path)?)
        .map_err(|e| anyhow::anyhow!("{what} {}: {e}", path.display()))?;
    if certs.is_empty() {
        bail!("{what} {} holds no CERTIFICATE block", path.display());
    }
    Ok(certs)
}

/// The one private key of the PEM file at `path`.
fn private_key(path: &Path) -> anyhow::Result<PrivateKeyDer<'static>> {
    let text = read("--svid-key", path)?;
    let blocks = pem::parse_many(&text)
        .with_context(|| format!("--svid-key {} is not PEM", path.display()))?;
    for b in blocks {
        match b.tag() {
            "PRIVATE KEY" => {
                return Ok(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
                    b.into_contents(),
                )))
            }
            "EC PRIVATE KEY" => {
                return Ok(PrivateKeyDer::Sec1(PrivateSec1KeyDer::from(
                    b.into_contents(),
                )))
            }
            _ => {}
        }
    }
    bail!(
        "--svid-key {} holds no PRIVATE KEY or EC PRIVATE KEY block",
        path.display()
    )
}

/// A channel to the admin API at `--tls-address` with the SVID and bundle of `args`.
pub(super) async fn connect(args: &AdminTlsArgs, address: &str) -> anyhow::Result<Channel> {
    let (Some(cert), Some(key), Some(bundle)) = (&args.svid_cert, &args.svid_key, &args.bundle)
    else {
        bail!("--tls-address needs --svid-cert, --svid-key and --bundle");
    };
    let chain = certificates("--svid-cert", cert)?;
    let id = svid_spiffe_id(&chain[0])
        .map_err(|e| anyhow::anyhow!("--svid-cert {}: {e}", cert.display()))?;
    let roots = certificates("--bundle", bundle)?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&private_key(key)?)
        .map_err(|e| anyhow::anyhow!("--svid-key {}: {e}", key.display()))?;
    let certified = CertifiedKey::new(
        chain.into_iter().map(CertificateDer::from).collect(),
        signing,
    );
    certified.keys_match().map_err(|e| {
        anyhow::anyhow!(
            "--svid-key {} is not the key of --svid-cert {}: {e}",
            key.display(),
            cert.display()
        )
    })?;
    let server_id = SpiffeId::server(id.trust_domain());
    let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])?
    .dangerous()
    .with_custom_certificate_verifier(SpiffeServerVerifier::new(roots, server_id))
    .with_client_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(certified)));
    tls.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(tls));
    let dial = address.to_owned();
    Endpoint::try_from(format!("http://{address}"))
        .with_context(|| format!("--tls-address {address:?} is not host:port"))?
        .connect_timeout(std::time::Duration::from_secs(10))
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let (connector, dial) = (connector.clone(), dial.clone());
            async move {
                let tcp = tokio::net::TcpStream::connect(dial).await?;
                tcp.set_nodelay(true)?;
                // SVIDs carry no DNS name; the verifier checks the SPIFFE ID instead.
                let name =
                    ServerName::try_from("ironroot-server").map_err(std::io::Error::other)?;
                let tls = connector.connect(name, tcp).await?;
                Ok::<_, std::io::Error>(TokioIo::new(tls))
            }
        }))
        .await
        .with_context(|| format!("cannot reach the admin API over TLS at {address}"))
}
