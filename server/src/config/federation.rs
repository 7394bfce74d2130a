//! `[federation]`: this trust domain's bundle endpoint and the trust domains it federates
//! with (SPIFFE Federation; docs/federation.md). Everything is off by default: no endpoint
//! is served and no bundle is fetched unless configured.

use std::path::PathBuf;
use std::time::Duration;

use ironroot_api::spiffe_id::{SpiffeId, TrustDomain};
use serde::Deserialize;

use super::{invalid, listener_limits, InvalidOption, ListenAddress, ValueError};
use crate::http1::{
    ListenerLimits, DEFAULT_HEADER_READ_TIMEOUT, DEFAULT_MAX_CONNECTIONS_PER_ADDRESS,
};

/// Shortest wait between two fetches of one relationship, whatever the peer's refresh hint.
pub(crate) const DEFAULT_MIN_REFRESH: Duration = Duration::from_secs(5);
/// Longest wait between two fetches, whatever the peer's refresh hint.
pub(crate) const DEFAULT_MAX_REFRESH: Duration = Duration::from_secs(3600);
/// The wait when the peer's bundle carries no refresh hint (SPIRE's default).
pub(crate) const DEFAULT_REFRESH_WITHOUT_HINT: Duration = Duration::from_secs(300);
/// One fetch (connect, TLS, request, body) must finish within this.
pub(crate) const DEFAULT_FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// The roots an `https_web` relationship trusts unless it names `ca_file` (Debian's bundle
/// of the system's CA certificates).
pub(crate) const DEFAULT_WEB_CA_FILE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// `[federation]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct FederationFile {
    bundle_endpoint: Option<BundleEndpointFile>,
    federates_with: Vec<RelationshipFile>,
    #[serde(with = "humantime_serde")]
    min_refresh_interval: Duration,
    #[serde(with = "humantime_serde")]
    max_refresh_interval: Duration,
    #[serde(with = "humantime_serde")]
    refresh_without_hint: Duration,
    #[serde(with = "humantime_serde")]
    fetch_timeout: Duration,
}

impl Default for FederationFile {
    fn default() -> Self {
        FederationFile {
            bundle_endpoint: None,
            federates_with: Vec::new(),
            min_refresh_interval: DEFAULT_MIN_REFRESH,
            max_refresh_interval: DEFAULT_MAX_REFRESH,
            refresh_without_hint: DEFAULT_REFRESH_WITHOUT_HINT,
            fetch_timeout: DEFAULT_FETCH_TIMEOUT,
        }
    }
}

/// `[federation.bundle_endpoint]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct BundleEndpointFile {
    listen: String,
    profile: String,
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    max_connections_per_address: usize,
    #[serde(with = "humantime_serde")]
    header_read_timeout: Duration,
}

impl Default for BundleEndpointFile {
    fn default() -> Self {
        BundleEndpointFile {
            listen: String::new(),
            profile: String::new(),
            cert_file: None,
            key_file: None,
            max_connections_per_address: DEFAULT_MAX_CONNECTIONS_PER_ADDRESS,
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
        }
    }
}

/// One `[[federation.federates_with]]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RelationshipFile {
    trust_domain: String,
    bundle_endpoint_url: String,
    profile: String,
    #[serde(default)]
    endpoint_spiffe_id: Option<String>,
    #[serde(default)]
    ca_file: Option<PathBuf>,
}

/// `[federation]`, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FederationConfig {
    /// This trust domain's bundle endpoint; `None`: not served.
    pub(crate) bundle_endpoint: Option<BundleEndpointConfig>,
    /// The trust domains whose bundles this server fetches, one poller each.
    pub(crate) relationships: Vec<Relationship>,
    /// Bounds on the wait between fetches of one relationship.
    pub(crate) refresh: RefreshBounds,
    /// Deadline of one fetch.
    pub(crate) fetch_timeout: Duration,
}

/// How often a relationship's bundle is fetched: the peer's refresh hint, within bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RefreshBounds {
    /// `min_refresh_interval`.
    pub(crate) min: Duration,
    /// `max_refresh_interval`.
    pub(crate) max: Duration,
    /// `refresh_without_hint`.
    pub(crate) without_hint: Duration,
}

/// The bundle endpoint, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BundleEndpointConfig {
    /// Where it listens.
    pub(crate) listen: ListenAddress,
    /// What it authenticates with.
    pub(crate) profile: EndpointProfile,
    /// The listener's per-address connection cap and header deadline.
    pub(crate) limits: ListenerLimits,
}

/// The certificate the bundle endpoint presents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum EndpointProfile {
    /// An X.509-SVID `spiffe://<td>/spire/server` from this server's CA.
    HttpsSpiffe,
    /// An operator's Web PKI certificate and key (PEM), reloaded when the files change.
    HttpsWeb {
        cert_file: PathBuf,
        key_file: PathBuf,
    },
}

/// One federation relationship: a trust domain and where and how its bundle is fetched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Relationship {
    /// The federated trust domain.
    pub(crate) trust_domain: TrustDomain,
    /// `https://host[:port][/path]`.
    pub(crate) url: BundleUrl,
    /// How the endpoint is authenticated.
    pub(crate) profile: PeerProfile,
}

/// A bundle endpoint URL split for the HTTPS client: the base and the request path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BundleUrl {
    /// `https://host[:port]`.
    pub(crate) base: String,
    /// The path (and query), `/` when none.
    pub(crate) path: String,
}

impl std::fmt::Display for BundleUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}{}", self.base, self.path)
    }
}

/// How a peer's bundle endpoint is authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PeerProfile {
    /// Its X.509-SVID must verify to the last stored bundle of the trust domain and name
    /// exactly `endpoint_spiffe_id`.
    HttpsSpiffe { endpoint_spiffe_id: SpiffeId },
    /// Its Web PKI certificate must verify to `ca_file` for the URL's host.
    HttpsWeb { ca_file: PathBuf },
}

const HTTPS_SPIFFE: &str = "https_spiffe";
const HTTPS_WEB: &str = "https_web";

fn bundle_endpoint(f: BundleEndpointFile) -> Result<Option<BundleEndpointConfig>, InvalidOption> {
    if f.listen.is_empty() {
        return Ok(None);
    }
    let listen = f
        .listen
        .parse()
        .map_err(|e: ValueError| invalid("federation.bundle_endpoint.listen", e.to_string()))?;
    let profile =
        match (f.profile.as_str(), f.cert_file, f.key_file) {
            ("" | HTTPS_SPIFFE, None, None) => EndpointProfile::HttpsSpiffe,
            ("" | HTTPS_SPIFFE, _, _) => return Err(invalid(
                "federation.bundle_endpoint.cert_file",
                "the https_spiffe profile serves the server's own X.509-SVID: remove cert_file \
                 and key_file, or set profile = \"https_web\"",
            )),
            (HTTPS_WEB, Some(cert_file), Some(key_file)) => EndpointProfile::HttpsWeb {
                cert_file,
                key_file,
            },
            (HTTPS_WEB, _, _) => {
                return Err(invalid(
                    "federation.bundle_endpoint.cert_file",
                    "the https_web profile needs both cert_file and key_file (PEM)",
                ))
            }
            (other, _, _) => {
                return Err(invalid(
                    "federation.bundle_endpoint.profile",
                    format!("{other:?} is not a profile: write \"https_spiffe\" or \"https_web\""),
                ))
            }
        };
    let limits = listener_limits(
        "federation.bundle_endpoint",
        (
            "federation.bundle_endpoint.max_connections_per_address",
            f.max_connections_per_address,
        ),
        (
            "federation.bundle_endpoint.header_read_timeout",
            f.header_read_timeout,
        ),
    )?;
    Ok(Some(BundleEndpointConfig {
        listen,
        profile,
        limits,
    }))
}

/// `https://host[:port][/path]`: no user info, fragment, spaces or control characters.
fn bundle_url(url: &str) -> Result<BundleUrl, InvalidOption> {
    let key = "federation.federates_with.bundle_endpoint_url";
    let rest = url
        .strip_prefix("https://")
        .ok_or_else(|| invalid(key, format!("{url:?} must start with https://")))?;
    if url.contains(['#', '@']) || url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(invalid(
            key,
            format!("{url:?} must not contain user info, a fragment, spaces or control characters"),
        ));
    }
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    if authority.is_empty() {
        return Err(invalid(key, format!("{url:?} has no host")));
    }
    let path = match path {
        "" => "/".to_owned(),
        p if p.starts_with('?') => format!("/{p}"),
        p => p.to_owned(),
    };
    Ok(BundleUrl {
        base: format!("https://{authority}"),
        path,
    })
}

fn relationship(f: RelationshipFile, own: &TrustDomain) -> Result<Relationship, InvalidOption> {
    let trust_domain = TrustDomain::parse(&f.trust_domain).map_err(|e| {
        invalid(
            "federation.federates_with.trust_domain",
            format!("{:?}: {e}", f.trust_domain),
        )
    })?;
    if &trust_domain == own {
        return Err(invalid(
            "federation.federates_with.trust_domain",
            format!("{trust_domain} is this server's own trust domain"),
        ));
    }
    let url = bundle_url(&f.bundle_endpoint_url)?;
    let profile = match (f.profile.as_str(), f.endpoint_spiffe_id, f.ca_file) {
        (HTTPS_SPIFFE, Some(id), None) => {
            let id = SpiffeId::parse(&id).map_err(|e| {
                invalid(
                    "federation.federates_with.endpoint_spiffe_id",
                    format!("{id:?}: {e}"),
                )
            })?;
            // The endpoint's SVID is checked against the stored bundle of this trust domain
            // only: an endpoint of another trust domain could not be authenticated.
            if id.trust_domain() != &trust_domain {
                return Err(invalid(
                    "federation.federates_with.endpoint_spiffe_id",
                    format!(
                        "{id} is not in trust domain {trust_domain}: the endpoint is \
                         authenticated with that trust domain's bundle, so its SPIFFE ID \
                         must be in it"
                    ),
                ));
            }
            PeerProfile::HttpsSpiffe {
                endpoint_spiffe_id: id,
            }
        }
        (HTTPS_SPIFFE, None, _) => {
            return Err(invalid(
                "federation.federates_with.endpoint_spiffe_id",
                format!(
                    "{trust_domain}: the https_spiffe profile needs endpoint_spiffe_id (the \
                     SPIFFE ID the endpoint presents, e.g. \"spiffe://{trust_domain}/spire/server\")"
                ),
            ))
        }
        (HTTPS_SPIFFE, Some(_), Some(_)) => {
            return Err(invalid(
                "federation.federates_with.ca_file",
                format!(
                    "{trust_domain}: ca_file is for the https_web profile; an https_spiffe \
                     endpoint is authenticated with the trust domain's bundle"
                ),
            ))
        }
        (HTTPS_WEB, None, ca_file) => PeerProfile::HttpsWeb {
            ca_file: ca_file.unwrap_or_else(|| PathBuf::from(DEFAULT_WEB_CA_FILE)),
        },
        (HTTPS_WEB, Some(_), _) => {
            return Err(invalid(
                "federation.federates_with.endpoint_spiffe_id",
                format!("{trust_domain}: endpoint_spiffe_id is for the https_spiffe profile"),
            ))
        }
        (other, _, _) => {
            return Err(invalid(
                "federation.federates_with.profile",
                format!(
                    "{trust_domain}: {other:?} is not a profile: write \"https_spiffe\" or \
                     \"https_web\""
                ),
            ))
        }
    };
    Ok(Relationship {
        trust_domain,
        url,
        profile,
    })
}

/// Checks `[federation]` for a server of trust domain `own`.
pub(super) fn federation(
    f: FederationFile,
    own: &TrustDomain,
) -> Result<FederationConfig, InvalidOption> {
    let bundle_endpoint = f
        .bundle_endpoint
        .map(bundle_endpoint)
        .transpose()?
        .flatten();
    let mut relationships: Vec<Relationship> = Vec::with_capacity(f.federates_with.len());
    for r in f.federates_with {
        let r = relationship(r, own)?;
        if relationships
            .iter()
            .any(|o| o.trust_domain == r.trust_domain)
        {
            return Err(invalid(
                "federation.federates_with.trust_domain",
                format!(
                    "{} appears twice: one relationship per trust domain",
                    r.trust_domain
                ),
            ));
        }
        relationships.push(r);
    }
    if f.min_refresh_interval.is_zero() {
        return Err(invalid(
            "federation.min_refresh_interval",
            "must be more than 0 (a peer's endpoint is not to be fetched in a loop)",
        ));
    }
    if f.max_refresh_interval < f.min_refresh_interval {
        return Err(invalid(
            "federation.max_refresh_interval",
            "must not be shorter than federation.min_refresh_interval",
        ));
    }
    if f.fetch_timeout.is_zero() {
        return Err(invalid("federation.fetch_timeout", "must be more than 0"));
    }
    Ok(FederationConfig {
        bundle_endpoint,
        relationships,
        refresh: RefreshBounds {
            min: f.min_refresh_interval,
            max: f.max_refresh_interval,
            without_hint: f.refresh_without_hint,
        },
        fetch_timeout: f.fetch_timeout,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<FederationConfig, InvalidOption> {
        let f: FederationFile = toml::from_str(text).expect("TOML");
        federation(f, &TrustDomain::parse("td-a.test").unwrap())
    }

    #[test]
    fn nothing_is_served_or_fetched_by_default() {
        let c = load("").unwrap();
        assert_eq!(c.bundle_endpoint, None);
        assert!(c.relationships.is_empty());
        assert_eq!(c.refresh.min, DEFAULT_MIN_REFRESH);
        assert_eq!(c.refresh.max, DEFAULT_MAX_REFRESH);
    }

    #[test]
    fn relationships_are_typed_per_profile() {
        let c = load(
            r#"
            [bundle_endpoint]
            listen = "127.0.0.1:8443"
            [[federates_with]]
            trust_domain = "td-b.test"
            bundle_endpoint_url = "https://b.example:8443"
            profile = "https_spiffe"
            endpoint_spiffe_id = "spiffe://td-b.test/spire/server"
            [[federates_with]]
            trust_domain = "td-c.test"
            bundle_endpoint_url = "https://c.example/bundle?x=1"
            profile = "https_web"
            "#,
        )
        .unwrap();
        assert_eq!(
            c.bundle_endpoint.unwrap().profile,
            EndpointProfile::HttpsSpiffe
        );
        assert_eq!(c.relationships[0].url.base, "https://b.example:8443");
        assert_eq!(c.relationships[0].url.path, "/");
        assert_eq!(c.relationships[1].url.path, "/bundle?x=1");
        assert_eq!(
            c.relationships[1].profile,
            PeerProfile::HttpsWeb {
                ca_file: DEFAULT_WEB_CA_FILE.into()
            }
        );
    }

    #[test]
    fn refusals_name_the_option() {
        let rel = |extra: &str| {
            format!(
                "[[federates_with]]\ntrust_domain = \"td-b.test\"\n\
                 bundle_endpoint_url = \"https://b.example\"\n{extra}"
            )
        };
        let cases = [
            (
                rel("profile = \"https_spiffe\""),
                "federation.federates_with.endpoint_spiffe_id",
            ),
            (
                rel("profile = \"https_spiffe\"\nendpoint_spiffe_id = \"spiffe://td-x.test/s\""),
                "federation.federates_with.endpoint_spiffe_id",
            ),
            (
                rel("profile = \"https\""),
                "federation.federates_with.profile",
            ),
            (
                rel("profile = \"https_web\"\nendpoint_spiffe_id = \"spiffe://td-b.test/s\""),
                "federation.federates_with.endpoint_spiffe_id",
            ),
            (
                "[[federates_with]]\ntrust_domain = \"td-a.test\"\nbundle_endpoint_url = \
                 \"https://a\"\nprofile = \"https_web\""
                    .to_owned(),
                "federation.federates_with.trust_domain",
            ),
            (
                "[[federates_with]]\ntrust_domain = \"td-b.test\"\nbundle_endpoint_url = \
                 \"http://b\"\nprofile = \"https_web\""
                    .to_owned(),
                "federation.federates_with.bundle_endpoint_url",
            ),
            (
                format!(
                    "{}\n{}",
                    rel("profile = \"https_web\""),
                    rel("profile = \"https_web\"")
                ),
                "federation.federates_with.trust_domain",
            ),
            (
                "[bundle_endpoint]\nlisten = \"127.0.0.1:1\"\nprofile = \"https_web\"".to_owned(),
                "federation.bundle_endpoint.cert_file",
            ),
            (
                "[bundle_endpoint]\nlisten = \"127.0.0.1:1\"\nprofile = \"web\"".to_owned(),
                "federation.bundle_endpoint.profile",
            ),
            (
                "min_refresh_interval = \"0s\"".to_owned(),
                "federation.min_refresh_interval",
            ),
            (
                "min_refresh_interval = \"1h\"\nmax_refresh_interval = \"1m\"".to_owned(),
                "federation.max_refresh_interval",
            ),
        ];
        for (text, key) in cases {
            let e = load(&text).expect_err(&text);
            assert_eq!(e.key, key, "{text}: {e}");
        }
    }
}
