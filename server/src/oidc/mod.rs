//! OIDC discovery for JWT-SVIDs: what lets a relying party that speaks OpenID Connect
//! (cloud IAM federation, Vault/OpenBao's `jwt` auth method) verify JWT-SVIDs without a
//! SPIFFE library. Two documents, over HTTP/1.1 (plain, for loopback behind a TLS proxy, or
//! HTTPS with `[oidc] tls_cert_file`/`tls_key_file`):
//!
//! - `GET /.well-known/openid-configuration`: `issuer` (the `iss` of every JWT-SVID; config
//!   load makes the two equal), `jwks_uri`, and the fixed facts of JWT-SVIDs;
//! - `GET /keys`: the trust bundle's JWT authorities (not its X.509 roots) as a JWK Set with
//!   `use: "sig"` and `alg`. Read from the CA on every request, so a rotated key appears as
//!   soon as the CA publishes it (a third of `ca_ttl` before it signs), and a retired one
//!   disappears.
//!
//! Everything else is 404; methods other than GET and HEAD are 405. Nothing here is secret:
//! the endpoint is unauthenticated by design.

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, ALLOW, CACHE_CONTROL, CONTENT_TYPE};
use hyper::{Method, Response, StatusCode};
use ironroot_api::bundle::{BundleError, TrustBundle};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tracing::{error, info};

use crate::ca::{CaError, CertificateAuthority};
use crate::config::{OidcConfig, OidcTls};
use crate::http1::plain;
use crate::tls_files::{FileCertificate, FileOptions, TlsFileError};

/// The discovery document's path (OpenID Connect Discovery 1.0, §4).
pub const DISCOVERY_PATH: &str = "/.well-known/openid-configuration";
/// The JWK Set's path on this endpoint (`jwks_uri` defaults to the issuer plus this).
pub const KEYS_PATH: &str = "/keys";
/// The only JWS algorithm of JWT-SVIDs: their keys are P-256 keys in the HSM.
const SIGNING_ALGORITHMS: [&str; 1] = ["ES256"];

/// Why the endpoint did not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OidcError {
    /// `oidc.listen` cannot be bound.
    #[error("cannot bind the OIDC discovery endpoint (oidc.listen) on {address}: {source}")]
    Bind {
        /// The configured address.
        address: String,
        /// The I/O error (address in use, not an address of this host).
        #[source]
        source: std::io::Error,
    },
    /// `oidc.tls_cert_file` or `oidc.tls_key_file` cannot be read or holds no usable PEM.
    #[error("{key} {}: {reason}", path.display())]
    TlsFile {
        /// The option (`oidc.tls_cert_file`, `oidc.tls_key_file`).
        key: &'static str,
        /// The file it names.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// rustls refuses the certificate and key (they do not match, unsupported key type).
    #[error("oidc.tls_cert_file / oidc.tls_key_file cannot serve TLS: {0}")]
    Tls(#[source] rustls::Error),
}

/// Where the JWT authorities come from: the CA's current bundle.
type BundleSource = Box<dyn Fn() -> Result<TrustBundle, CaError> + Send + Sync>;

/// The two documents and how to answer a request for them.
pub(crate) struct Endpoint {
    discovery: Bytes,
    cache_control: HeaderValue,
    bundle: BundleSource,
}

/// The discovery document: what SPIRE's discovery provider serves, so relying parties
/// configured for it work unchanged.
pub(crate) fn discovery_document(issuer: &str, jwks_uri: &str) -> String {
    json!({
        "issuer": issuer,
        "jwks_uri": jwks_uri,
        "response_types_supported": ["id_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": SIGNING_ALGORITHMS,
    })
    .to_string()
}

/// The bundle's JWT authorities as an OIDC JWK Set: `kid`, `use: "sig"`, `alg`, the key's
/// parameters; no X.509 roots and no SPIFFE members.
pub(crate) fn jwks_document(bundle: &TrustBundle) -> Result<String, BundleError> {
    let jwt_only = TrustBundle {
        x509_authorities: Vec::new(),
        ..bundle.clone()
    };
    let spiffe: Value = serde_json::from_str(&jwt_only.to_jwks_json()?)
        .map_err(|e| BundleError::Json(e.to_string()))?;
    let keys: Vec<Value> = spiffe["keys"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|k| {
            let mut k = k.as_object()?.clone();
            let alg = match (
                k.get("kty")?.as_str()?,
                k.get("crv").and_then(Value::as_str),
            ) {
                ("EC", Some("P-256")) => "ES256",
                ("EC", Some("P-384")) => "ES384",
                ("RSA", _) => "RS256",
                // A key no JWT-SVID can be signed with: relying parties need not see it.
                _ => return None,
            };
            k.insert("use".into(), "sig".into());
            k.insert("alg".into(), alg.into());
            Some(Value::Object(k))
        })
        .collect();
    Ok(json!({ "keys": keys }).to_string())
}

impl Endpoint {
    pub(crate) fn new(cfg: &OidcConfig, bundle: BundleSource) -> Self {
        let cache_control =
            HeaderValue::try_from(format!("public, max-age={}", cfg.cache_max_age.as_secs()))
                .expect("digits are a valid header value");
        Endpoint {
            discovery: Bytes::from(discovery_document(&cfg.issuer, &cfg.jwks_uri)),
            cache_control,
            bundle,
        }
    }

    /// The answer to `method path`. HEAD gets GET's headers; hyper leaves the body out.
    pub(crate) fn respond(&self, method: &Method, path: &str) -> Response<Full<Bytes>> {
        if path != DISCOVERY_PATH && path != KEYS_PATH {
            return plain(StatusCode::NOT_FOUND, "not found\n");
        }
        if method != Method::GET && method != Method::HEAD {
            let mut r = plain(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n");
            r.headers_mut()
                .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
            return r;
        }
        let body = if path == DISCOVERY_PATH {
            self.discovery.clone()
        } else {
            match (self.bundle)()
                .map_err(|e| e.to_string())
                .and_then(|b| jwks_document(&b).map_err(|e| e.to_string()))
            {
                Ok(doc) => Bytes::from(doc),
                Err(e) => {
                    error!(error = %e, "OIDC discovery: the JWT keys cannot be served");
                    return plain(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "the JWT keys are unavailable; see the server log\n",
                    );
                }
            }
        };
        let mut r = Response::new(Full::new(body));
        let h = r.headers_mut();
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        h.insert(CACHE_CONTROL, self.cache_control.clone());
        r
    }
}

/// The HTTPS certificate chain and key, read again whenever either file changes (an
/// ACME client renewing in place needs no restart).
const OIDC_FILES: FileOptions = FileOptions {
    cert: "oidc.tls_cert_file",
    key: "oidc.tls_key_file",
    listener: "OIDC discovery",
};

impl From<TlsFileError> for OidcError {
    fn from(e: TlsFileError) -> Self {
        OidcError::TlsFile {
            key: e.option,
            path: e.path,
            reason: e.reason,
        }
    }
}

/// Binds `[oidc] listen` and serves the endpoint in the background.
pub(crate) async fn spawn(
    cfg: &OidcConfig,
    ca: Arc<CertificateAuthority>,
) -> Result<Vec<tokio::task::JoinHandle<()>>, OidcError> {
    let files = cfg
        .tls
        .as_ref()
        .map(|t: &OidcTls| FileCertificate::load(&t.cert_file, &t.key_file, OIDC_FILES))
        .transpose()?;
    let reloader = files.as_ref().map(FileCertificate::spawn_reloader);
    let tls = files
        .map(|f| crate::http1::tls_acceptor(f).map_err(OidcError::Tls))
        .transpose()?;
    let bind_error = |source| OidcError::Bind {
        address: cfg.listen.to_string(),
        source,
    };
    let listener = TcpListener::bind(cfg.listen.as_str())
        .await
        .map_err(bind_error)?;
    let address = listener.local_addr().map_err(bind_error)?;
    let endpoint = Arc::new(Endpoint::new(cfg, Box::new(move || ca.bundle())));
    info!(
        %address,
        issuer = %cfg.issuer,
        jwks_uri = %cfg.jwks_uri,
        https = tls.is_some(),
        "OIDC discovery endpoint listening"
    );
    let respond: crate::http1::Respond =
        Arc::new(move |method: &Method, path: &str| endpoint.respond(method, path));
    let serve = crate::http1::spawn(listener, tls, "OIDC discovery", cfg.limits, respond);
    Ok([Some(serve), reloader].into_iter().flatten().collect())
}

#[cfg(test)]
mod tests;
