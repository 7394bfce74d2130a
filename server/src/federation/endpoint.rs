//! This trust domain's bundle endpoint (SPIFFE Federation §4): `GET /` answers the CA's
//! current bundle as a SPIFFE JWK Set (`x509-svid` and `jwt-svid` keys, `spiffe_sequence`,
//! `spiffe_refresh_hint`), read from the CA on every request so a rotation shows at once.
//!
//! Profiles (§5.2): `https_spiffe` presents an X.509-SVID `spiffe://<td>/spire/server`
//! issued by this server's CA (a key in memory that only authenticates TLS, renewed at half
//! life, as the Node API's); `https_web` presents the operator's certificate and key,
//! re-read when either file changes (a broken new pair is logged and the old one kept).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, ALLOW, CACHE_CONTROL, CONTENT_TYPE};
use hyper::{Method, Response, StatusCode};
use rustls::server::ResolvesServerCert;
use tokio::net::TcpListener;
use tracing::{error, info};

use crate::ca::CertificateAuthority;
use crate::config::{BundleEndpointConfig, EndpointProfile};
use crate::http1::plain;
use crate::node::tls::{IdentityError, ServerIdentity};
use crate::tls_files::{FileCertificate, FileOptions, TlsFileError};

/// Lifetime asked for the endpoint's SVID (renewed at half of what the CA grants).
const SVID_TTL: u32 = 3600;
/// How often the SVID is checked for renewal: often, because after a CA rotation its life
/// is cut to the old CA certificate's notAfter, and peers must never see it expired.
const SVID_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// Why the bundle endpoint did not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EndpointError {
    /// `federation.bundle_endpoint.listen` cannot be bound.
    #[error(
        "cannot bind the bundle endpoint (federation.bundle_endpoint.listen) on {address}: \
         {source}"
    )]
    Bind {
        /// The configured address.
        address: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The https_web certificate or key file is unusable.
    #[error("{key} {}: {reason}", path.display())]
    TlsFile {
        /// `federation.bundle_endpoint.cert_file` or `key_file`.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The https_spiffe SVID could not be issued.
    #[error("bundle endpoint (https_spiffe): {0}")]
    Identity(#[source] IdentityError),
    /// rustls refused the configuration.
    #[error("bundle endpoint TLS: {0}")]
    Tls(#[source] rustls::Error),
}

/// The https_web profile's files, as the configuration names them.
const WEB_FILES: FileOptions = FileOptions {
    cert: "federation.bundle_endpoint.cert_file",
    key: "federation.bundle_endpoint.key_file",
    listener: "bundle endpoint (https_web)",
};

impl From<TlsFileError> for EndpointError {
    fn from(e: TlsFileError) -> Self {
        EndpointError::TlsFile {
            key: e.option,
            path: e.path,
            reason: e.reason,
        }
    }
}

/// The answer to `method path`: the bundle at `/`, 404 elsewhere, 405 for methods other
/// than GET and HEAD, 503 (logged) while the CA cannot give its bundle.
pub(crate) fn respond(
    ca: &CertificateAuthority,
    method: &Method,
    path: &str,
) -> Response<Full<Bytes>> {
    if path != "/" {
        return plain(StatusCode::NOT_FOUND, "not found; the bundle is at /\n");
    }
    if method != Method::GET && method != Method::HEAD {
        let mut r = plain(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n");
        r.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    let document = ca
        .bundle()
        .map_err(|e| e.to_string())
        .and_then(|b| b.to_jwks_json().map_err(|e| e.to_string()));
    match document {
        Ok(doc) => {
            let mut r = Response::new(Full::new(Bytes::from(doc)));
            let h = r.headers_mut();
            h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            // Peers poll at the refresh hint; an intermediate cache must not hold a
            // rotated bundle back.
            h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            r
        }
        Err(e) => {
            error!(error = %e, "bundle endpoint: the trust bundle cannot be served");
            plain(
                StatusCode::SERVICE_UNAVAILABLE,
                "the trust bundle is unavailable; see the server log\n",
            )
        }
    }
}

/// Binds `[federation.bundle_endpoint] listen` and serves the bundle in the background,
/// with the task that keeps its certificate current.
pub(crate) async fn spawn(
    cfg: &BundleEndpointConfig,
    ca: Arc<CertificateAuthority>,
) -> Result<Vec<tokio::task::JoinHandle<()>>, EndpointError> {
    let bind_error = |source| EndpointError::Bind {
        address: cfg.listen.to_string(),
        source,
    };
    let (resolver, upkeep): (Arc<dyn ResolvesServerCert>, tokio::task::JoinHandle<()>) = match &cfg
        .profile
    {
        EndpointProfile::HttpsSpiffe => {
            let identity = {
                let ca = ca.clone();
                tokio::task::spawn_blocking(move || ServerIdentity::new(&ca, SVID_TTL))
                    .await
                    .map_err(|e| EndpointError::Tls(rustls::Error::General(e.to_string())))?
                    .map_err(EndpointError::Identity)?
            };
            let (ca, id) = (ca.clone(), identity.clone());
            let upkeep = tokio::spawn(async move {
                let mut tick = tokio::time::interval(SVID_CHECK_INTERVAL);
                loop {
                    tick.tick().await;
                    let (ca, id) = (ca.clone(), id.clone());
                    match tokio::task::spawn_blocking(move || id.renew_if_due(&ca, SVID_TTL)).await
                    {
                        Ok(Ok(true)) => info!("bundle endpoint SVID renewed"),
                        Ok(Ok(false)) => {}
                        Ok(Err(e)) => {
                            error!(error = %e, "bundle endpoint SVID renewal failed; retried in 1 s")
                        }
                        Err(e) => error!(error = %e, "bundle endpoint SVID renewal task failed"),
                    }
                }
            });
            (identity, upkeep)
        }
        EndpointProfile::HttpsWeb {
            cert_file,
            key_file,
        } => {
            let web = FileCertificate::load(cert_file, key_file, WEB_FILES)?;
            let upkeep = web.spawn_reloader();
            (web, upkeep)
        }
    };
    let tls = crate::http1::tls_acceptor(resolver).map_err(EndpointError::Tls)?;
    let listener = TcpListener::bind(cfg.listen.as_str())
        .await
        .map_err(bind_error)?;
    let address = listener.local_addr().map_err(bind_error)?;
    let profile = match cfg.profile {
        EndpointProfile::HttpsSpiffe => "https_spiffe",
        EndpointProfile::HttpsWeb { .. } => "https_web",
    };
    info!(%address, profile, "federation bundle endpoint listening (GET /)");
    let serve = crate::http1::spawn(
        listener,
        Some(tls),
        "bundle endpoint",
        cfg.limits,
        Arc::new(move |method: &Method, path: &str| respond(&ca, method, path)),
    );
    Ok(vec![serve, upkeep])
}
