//! A small HTTPS/1.1 client for the Kubernetes attestors (the server's TokenReview calls
//! to the API server, the agent's pod list from the kubelet): one request per connection,
//! the peer verified against the operator's CA file (with its host name or address), an
//! optional client certificate, one deadline over connect, handshake, request and body,
//! and a cap on the body read. Built with the `https` feature.
//!
//! There is one way to skip verification of the peer ([`TlsOptions::insecure_skip_verify`],
//! SPIRE's `skip_kubelet_verification`): callers offer it only behind an explicit option
//! and log it loudly.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

/// Why a request got no HTTP answer. Each variant names what the operator can check.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HttpsError {
    /// A TLS option's file is unusable.
    #[error("{option} ({}): {reason}", path.display())]
    Config {
        /// The option naming the file.
        option: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The URL is not `https://host[:port]`.
    #[error("{url:?} is not an https://host[:port] URL: {reason}")]
    BadUrl {
        /// The URL as configured.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Nothing answered at the address (refused, no route, name not resolved).
    #[error("{authority} unreachable: {source}")]
    Unreachable {
        /// `host:port`.
        authority: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The TLS handshake failed: most often the peer's certificate does not chain to the
    /// configured CA, or does not name the host dialled.
    #[error(
        "TLS handshake with {authority} refused: {source} (check the CA file and that the \
         peer's certificate names the host dialled)"
    )]
    Tls {
        /// `host:port`.
        authority: String,
        /// The handshake error.
        #[source]
        source: std::io::Error,
    },
    /// The deadline passed before the whole answer was read.
    #[error("{authority}: no complete answer within {timeout:?}")]
    Timeout {
        /// `host:port`.
        authority: String,
        /// The deadline.
        timeout: Duration,
    },
    /// The HTTP exchange broke (bad response, connection closed mid-way).
    #[error("{authority}: HTTP exchange failed: {reason}")]
    Http {
        /// `host:port`.
        authority: String,
        /// What failed.
        reason: String,
    },
    /// The body is larger than the cap.
    #[error("{authority}: response body larger than {max} bytes")]
    TooLarge {
        /// `host:port`.
        authority: String,
        /// The cap.
        max: usize,
    },
}

impl HttpsError {
    /// Whether the TLS handshake (peer verification) failed, as opposed to the network or
    /// HTTP.
    pub fn is_tls(&self) -> bool {
        matches!(self, HttpsError::Tls { .. })
    }
}

/// A file and the name of the option that names it (for messages).
pub type OptionFile = (&'static str, PathBuf);

/// How the client verifies the peer and proves itself.
#[derive(Debug, Clone, Default)]
pub struct TlsOptions {
    /// CA certificates (PEM) the peer's certificate must chain to, and the option that
    /// names the file (for messages).
    pub ca_file: Option<OptionFile>,
    /// Client certificate chain and key (PEM), with their options' names.
    pub client_cert: Option<(OptionFile, OptionFile)>,
    /// Accept any peer certificate. Only for an operator's explicit option, logged loudly
    /// by the caller.
    pub insecure_skip_verify: bool,
}

fn bad(option: &'static str, path: &Path, reason: impl Into<String>) -> HttpsError {
    HttpsError::Config {
        option,
        path: path.to_owned(),
        reason: reason.into(),
    }
}

fn read_certs(
    option: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, HttpsError> {
    let pem = std::fs::read(path).map_err(|e| bad(option, path, e.to_string()))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(option, path, e.to_string()))?;
    if certs.is_empty() {
        return Err(bad(option, path, "no PEM certificate in it"));
    }
    Ok(certs)
}

impl TlsOptions {
    /// The rustls client configuration. Without a CA file and without
    /// `insecure_skip_verify` the configuration is refused: there is nothing to verify the
    /// peer against.
    pub fn client_config(&self) -> Result<Arc<rustls::ClientConfig>, HttpsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| HttpsError::Http {
                authority: String::new(),
                reason: e.to_string(),
            })?;
        let builder = if self.insecure_skip_verify {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAnyPeer(provider)))
        } else {
            let (option, path) = self.ca_file.as_ref().ok_or_else(|| HttpsError::Config {
                option: "ca_file",
                path: PathBuf::new(),
                reason: "no CA file to verify the peer with".into(),
            })?;
            let mut roots = rustls::RootCertStore::empty();
            for cert in read_certs(option, path)? {
                roots
                    .add(cert)
                    .map_err(|e| bad(option, path, e.to_string()))?;
            }
            builder.with_root_certificates(roots)
        };
        let config = match &self.client_cert {
            None => builder.with_no_client_auth(),
            Some(((cert_option, cert_file), (key_option, key_file))) => {
                let chain = read_certs(cert_option, cert_file)?;
                let key = PrivateKeyDer::from_pem_file(key_file)
                    .map_err(|e| bad(key_option, key_file, e.to_string()))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| bad(cert_option, cert_file, e.to_string()))?
            }
        };
        Ok(Arc::new(config))
    }
}

/// `insecure_skip_verify`: signatures are still checked (the handshake must be with the
/// key of the certificate shown), the certificate itself is not.
#[derive(Debug)]
struct AcceptAnyPeer(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AcceptAnyPeer {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// An HTTP answer: status, headers and body (at most the cap).
#[derive(Debug, Clone)]
pub struct Response {
    /// The HTTP status code.
    pub status: u16,
    /// The response headers (`Cache-Control` for a cached key set).
    pub headers: http::HeaderMap,
    /// The body.
    pub body: Bytes,
}

/// A client for one `https://host:port` base URL.
#[derive(Clone)]
pub struct HttpsClient {
    tls: Arc<rustls::ClientConfig>,
    host: String,
    port: u16,
    timeout: Duration,
    max_body: usize,
}

impl std::fmt::Debug for HttpsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpsClient")
            .field("authority", &self.authority())
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl HttpsClient {
    /// A client for `base_url` (`https://host[:port]`, default port 443; a path is
    /// refused), with `timeout` over each whole request and bodies capped at `max_body`.
    pub fn new(
        base_url: &str,
        tls: Arc<rustls::ClientConfig>,
        timeout: Duration,
        max_body: usize,
    ) -> Result<Self, HttpsError> {
        let bad_url = |reason: &str| HttpsError::BadUrl {
            url: base_url.to_owned(),
            reason: reason.to_owned(),
        };
        let uri: http::Uri = base_url.parse().map_err(|_| bad_url("not a URL"))?;
        if uri.scheme_str() != Some("https") {
            return Err(bad_url("the scheme must be https"));
        }
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(bad_url("a base URL has no path or query"));
        }
        let host = uri.host().ok_or_else(|| bad_url("no host"))?;
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        ServerName::try_from(host.clone())
            .map_err(|_| bad_url("the host is not a DNS name or IP address"))?;
        Ok(HttpsClient {
            tls,
            host,
            port: uri.port_u16().unwrap_or(443),
            timeout,
            max_body,
        })
    }

    /// `host:port`.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// Sends `method path` with `Authorization: Bearer <bearer>` when given and a JSON
    /// `body` when given; the status and body of the answer, whatever the status.
    pub async fn request(
        &self,
        method: http::Method,
        path: &str,
        bearer: Option<&str>,
        body: Option<Vec<u8>>,
    ) -> Result<Response, HttpsError> {
        let authority = self.authority();
        tokio::time::timeout(self.timeout, self.exchange(method, path, bearer, body))
            .await
            .map_err(|_| HttpsError::Timeout {
                authority,
                timeout: self.timeout,
            })?
    }

    async fn exchange(
        &self,
        method: http::Method,
        path: &str,
        bearer: Option<&str>,
        body: Option<Vec<u8>>,
    ) -> Result<Response, HttpsError> {
        let authority = self.authority();
        let http_err = |e: &dyn std::fmt::Display| HttpsError::Http {
            authority: authority.clone(),
            reason: e.to_string(),
        };
        let tcp = tokio::net::TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|source| HttpsError::Unreachable {
                authority: authority.clone(),
                source,
            })?;
        let name = ServerName::try_from(self.host.clone()).map_err(|e| http_err(&e))?;
        let tls = tokio_rustls::TlsConnector::from(self.tls.clone())
            .connect(name, tcp)
            .await
            .map_err(|source| HttpsError::Tls {
                authority: authority.clone(),
                source,
            })?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| http_err(&e))?;
        let mut req = http::Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::HOST, &authority)
            .header(http::header::ACCEPT, "application/json")
            .header(http::header::CONNECTION, "close");
        if let Some(token) = bearer {
            req = req.header(http::header::AUTHORIZATION, format!("Bearer {token}"));
        }
        if body.is_some() {
            req = req.header(http::header::CONTENT_TYPE, "application/json");
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| http_err(&e))?;
        let max = self.max_body;
        let authority_for_body = authority.clone();
        // The sender is moved in and dropped when the answer is read, so the connection
        // task ends too; both run on this task (no spawn: callers may be on a blocking
        // thread of a current-thread runtime).
        let exchange = async {
            let mut sender = sender;
            let resp = sender.send_request(req).await.map_err(|e| http_err(&e))?;
            let status = resp.status().as_u16();
            let headers = resp.headers().clone();
            let body = Limited::new(resp.into_body(), max)
                .collect()
                .await
                .map_err(|e| {
                    if e.downcast_ref::<http_body_util::LengthLimitError>()
                        .is_some()
                    {
                        HttpsError::TooLarge {
                            authority: authority_for_body.clone(),
                            max,
                        }
                    } else {
                        http_err(&e)
                    }
                })?
                .to_bytes();
            Ok(Response {
                status,
                headers,
                body,
            })
        };
        let (answer, _conn) = tokio::join!(exchange, conn);
        answer
    }
}

/// Runs `f` to completion from synchronous code on a thread of a tokio runtime's blocking
/// pool (where the attestors run), or on a private current-thread runtime outside one.
pub fn block_on<F: Future>(f: F) -> F::Output {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => match handle.runtime_flavor() {
            tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(|| handle.block_on(f))
            }
            _ => handle.block_on(f),
        },
        Err(_) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a current-thread tokio runtime")
            .block_on(f),
    }
}
