//! `[oidc]`: the OIDC discovery endpoint for JWT-SVIDs (docs/operations.md, "OIDC
//! discovery"), and the one rule that ties it to `[ca] jwt_issuer`: the discovery
//! document's `issuer` is the `iss` JWT-SVIDs carry, or relying parties refuse every token.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::{invalid, listener_limits, InvalidOption, ListenAddress, ValueError};
use crate::http1::{
    ListenerLimits, DEFAULT_HEADER_READ_TIMEOUT, DEFAULT_MAX_CONNECTIONS_PER_ADDRESS,
};

/// How long relying parties and proxies may cache the documents.
pub(crate) const DEFAULT_OIDC_CACHE_MAX_AGE: Duration = Duration::from_secs(300);

/// `[oidc]` as written (empty strings: unset).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct OidcFile {
    listen: String,
    issuer: String,
    jwks_uri: String,
    tls_cert_file: Option<PathBuf>,
    tls_key_file: Option<PathBuf>,
    #[serde(with = "humantime_serde")]
    cache_max_age: Duration,
    max_connections_per_address: usize,
    #[serde(with = "humantime_serde")]
    header_read_timeout: Duration,
}

impl Default for OidcFile {
    fn default() -> Self {
        OidcFile {
            listen: String::new(),
            issuer: String::new(),
            jwks_uri: String::new(),
            tls_cert_file: None,
            tls_key_file: None,
            cache_max_age: DEFAULT_OIDC_CACHE_MAX_AGE,
            max_connections_per_address: DEFAULT_MAX_CONNECTIONS_PER_ADDRESS,
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
        }
    }
}

/// The discovery endpoint, checked. Only built when `[oidc] listen` is set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OidcConfig {
    /// Where the endpoint listens.
    pub(crate) listen: ListenAddress,
    /// The discovery document's `issuer`, equal to JWT-SVIDs' `iss`.
    pub(crate) issuer: String,
    /// Where relying parties fetch the keys: `issuer + "/keys"` unless configured.
    pub(crate) jwks_uri: String,
    /// Certificate chain and key (PEM) to serve HTTPS; `None`: plain HTTP.
    pub(crate) tls: Option<OidcTls>,
    /// `Cache-Control: max-age` of both documents.
    pub(crate) cache_max_age: Duration,
    /// The listener's per-address connection cap and header deadline.
    pub(crate) limits: ListenerLimits,
}

/// The HTTPS certificate chain and private key files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OidcTls {
    pub(crate) cert_file: PathBuf,
    pub(crate) key_file: PathBuf,
}

/// An issuer or JWKS URL: `http(s)://host[:port][/path]`, no query, fragment or trailing
/// slash (discovery appends `/.well-known/openid-configuration` to the issuer verbatim).
fn check_url(key: &'static str, url: &str) -> Result<(), InvalidOption> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| {
            invalid(
                key,
                format!("{url:?} must start with https:// (or http://)"),
            )
        })?;
    let host = rest.split('/').next().unwrap_or_default();
    if host.is_empty() {
        return Err(invalid(key, format!("{url:?} has no host")));
    }
    if url.contains(['?', '#']) || url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(invalid(
            key,
            format!("{url:?} must not contain a query, a fragment, spaces or control characters"),
        ));
    }
    if url.ends_with('/') {
        return Err(invalid(
            key,
            format!("{url:?} must not end with '/' (write it without the trailing slash)"),
        ));
    }
    Ok(())
}

/// Checks `[oidc]` and makes `[ca] jwt_issuer` and `[oidc] issuer` agree: one set, the
/// other follows; both set and different is refused. Returns the endpoint (when `listen`
/// is set) and the `iss` JWT-SVIDs are to carry.
pub(super) fn oidc(
    f: OidcFile,
    jwt_issuer: Option<String>,
    ca_ttl: Duration,
) -> Result<(Option<OidcConfig>, Option<String>), InvalidOption> {
    let oidc_issuer = (!f.issuer.is_empty()).then_some(f.issuer);
    if let Some(i) = &oidc_issuer {
        // A relying party compares this string with its own, byte for byte.
        check_url("oidc.issuer", i)?;
    }
    // Which option the issuer came from, to name it in a refusal.
    let (issuer, issuer_key) = match (jwt_issuer, oidc_issuer) {
        (Some(ca), Some(oidc)) if ca != oidc => {
            return Err(invalid(
                "oidc.issuer",
                format!(
                    "{oidc:?} differs from ca.jwt_issuer {ca:?}: the discovery document's \
                     issuer must be the iss JWT-SVIDs carry; set one of the two, or both equal"
                ),
            ))
        }
        (_, Some(i)) => (Some(i), "oidc.issuer"),
        (Some(i), None) => (Some(i), "ca.jwt_issuer"),
        (None, None) => (None, "oidc.issuer"),
    };
    if f.listen.is_empty() {
        // No endpoint: ca.jwt_issuer alone stays any string, as JWT allows.
        return Ok((None, issuer));
    }
    let listen = f
        .listen
        .parse()
        .map_err(|e: ValueError| invalid("oidc.listen", e.to_string()))?;
    let Some(issuer) = issuer else {
        return Err(invalid(
            "oidc.issuer",
            "oidc.listen is set but neither oidc.issuer nor ca.jwt_issuer is: set the URL \
             relying parties reach this endpoint at (e.g. \"https://oidc.example.org\")",
        ));
    };
    check_url(issuer_key, &issuer)?;
    let jwks_uri = if f.jwks_uri.is_empty() {
        format!("{issuer}/keys")
    } else {
        check_url("oidc.jwks_uri", &f.jwks_uri)?;
        f.jwks_uri
    };
    let tls = match (f.tls_cert_file, f.tls_key_file) {
        (Some(cert_file), Some(key_file)) => Some(OidcTls {
            cert_file,
            key_file,
        }),
        (None, None) => None,
        (Some(_), None) | (None, Some(_)) => {
            return Err(invalid(
                "oidc.tls_cert_file",
                "set both oidc.tls_cert_file and oidc.tls_key_file, or neither (plain HTTP)",
            ))
        }
    };
    // A new JWT key is published a third of ca_ttl before it signs (prepared at half its
    // predecessor's life, active at a sixth remaining): a cached JWKS must expire sooner.
    if f.cache_max_age >= ca_ttl / 3 {
        return Err(invalid(
            "oidc.cache_max_age",
            format!(
                "must be shorter than a third of ca.ca_ttl ({}): relying parties must fetch \
                 a rotated key before it signs",
                humantime::format_duration(ca_ttl / 3)
            ),
        ));
    }
    let limits = listener_limits(
        "oidc",
        (
            "oidc.max_connections_per_address",
            f.max_connections_per_address,
        ),
        ("oidc.header_read_timeout", f.header_read_timeout),
    )?;
    Ok((
        Some(OidcConfig {
            listen,
            issuer: issuer.clone(),
            jwks_uri,
            tls,
            cache_max_age: f.cache_max_age,
            limits,
        }),
        Some(issuer),
    ))
}
