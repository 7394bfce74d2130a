//! The sections of the cloud node attestors (`cloud` cargo feature):
//! `[node_attestors.aws_iid]`, `[node_attestors.gcp_iit]`, `[node_attestors.azure_msi]`,
//! `[node_attestors.azure_imds]`.
//! Option names follow SPIRE's plugin configuration where SPIRE has one.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// `[node_attestors.aws_iid]`: AWS instance identity documents.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AwsIidAttestorConfig {
    /// Region name -> PEM file holding AWS's RSA-2048 certificate(s) for that region (from
    /// the AWS documentation's per-region list; several in one file during a rotation). A
    /// document from a region not listed is refused.
    pub(crate) region_certificates: BTreeMap<String, PathBuf>,
    /// Accounts allowed to attest; absent: any account whose document AWS signed.
    #[serde(default)]
    pub(crate) account_allow_list: Option<Vec<String>>,
}

/// `[node_attestors.gcp_iit]`: GCE instance identity tokens. The key set comes from a file
/// (re-read when it changes) or a URL (fetched, cached with an expiry).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct GcpIitAttestorConfig {
    /// Projects allowed to attest (required, at least one; SPIRE's `projectid_allow_list`).
    pub(crate) projectid_allow_list: Vec<String>,
    /// Google's signing certificates as `https://www.googleapis.com/oauth2/v1/certs` serves
    /// them (`{"<kid>": "<PEM certificate>"}`), or a JWKS (the v3 endpoint's form); re-read
    /// when the file changes, so a job that refreshes it keeps the server current. One of
    /// `certs_path` and `certs_url`.
    #[serde(default)]
    pub(crate) certs_path: Option<PathBuf>,
    /// The URL the server fetches Google's certificates from (either form), cached per
    /// `Cache-Control: max-age` within the `keys_max_age_*` bounds.
    #[serde(default)]
    pub(crate) certs_url: Option<String>,
    /// PEM bundle of the CAs the key URL's HTTPS certificate must chain to.
    #[serde(default = "keys_ca_file")]
    pub(crate) keys_ca_file: PathBuf,
    /// Bound on each fetch of the key URL.
    #[serde(default = "keys_fetch_timeout", with = "humantime_serde")]
    pub(crate) keys_fetch_timeout: Duration,
    /// The shortest a fetched set is cached (a smaller or absent `Cache-Control: max-age`
    /// is raised to it); also the least time between two fetches for an unknown `kid`.
    #[serde(default = "keys_max_age_floor", with = "humantime_serde")]
    pub(crate) keys_max_age_floor: Duration,
    /// The longest a fetched set is used (a larger max-age is lowered to it); past its
    /// expiry without a successful refresh, attestations are refused.
    #[serde(default = "keys_max_age_ceiling", with = "humantime_serde")]
    pub(crate) keys_max_age_ceiling: Duration,

    /// The `aud` the token must carry (the agent's `[gcp_iit] audience`).
    #[serde(default = "gcp_audience")]
    pub(crate) audience: String,
    /// Skew allowed on the token's time claims.
    #[serde(default = "gcp_skew", with = "humantime_serde")]
    pub(crate) clock_skew: Duration,
}

/// `[node_attestors.azure_msi]`: Azure managed-identity access tokens.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AzureMsiAttestorConfig {
    /// Tenants allowed, by tenant ID (required, at least one).
    pub(crate) tenants: BTreeMap<String, AzureMsiTenant>,
    /// Entra ID's signing keys, a JWKS (the document the OpenID configuration's `jwks_uri`
    /// names); re-read when the file changes. One of `jwks_path` and `jwks_url`.
    #[serde(default)]
    pub(crate) jwks_path: Option<PathBuf>,
    /// The JWKS URL the server fetches Entra ID's keys from, cached per
    /// `Cache-Control: max-age` within the `keys_max_age_*` bounds.
    #[serde(default)]
    pub(crate) jwks_url: Option<String>,
    /// PEM bundle of the CAs the key URL's HTTPS certificate must chain to.
    #[serde(default = "keys_ca_file")]
    pub(crate) keys_ca_file: PathBuf,
    /// Bound on each fetch of the key URL.
    #[serde(default = "keys_fetch_timeout", with = "humantime_serde")]
    pub(crate) keys_fetch_timeout: Duration,
    /// The shortest a fetched set is cached (a smaller or absent `Cache-Control: max-age`
    /// is raised to it); also the least time between two fetches for an unknown `kid`.
    #[serde(default = "keys_max_age_floor", with = "humantime_serde")]
    pub(crate) keys_max_age_floor: Duration,
    /// The longest a fetched set is used (a larger max-age is lowered to it); past its
    /// expiry without a successful refresh, attestations are refused.
    #[serde(default = "keys_max_age_ceiling", with = "humantime_serde")]
    pub(crate) keys_max_age_ceiling: Duration,

    /// Skew allowed on the token's time claims.
    #[serde(default = "azure_skew", with = "humantime_serde")]
    pub(crate) clock_skew: Duration,
}

/// `[node_attestors.azure_msi.tenants."<tenant id>"]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AzureMsiTenant {
    /// The token's expected audience (the agent's `[azure_msi] resource_id`).
    #[serde(default = "azure_resource")]
    pub(crate) resource_id: String,
}

/// `[node_attestors.azure_imds]`: Azure IMDS attested data (PKCS#7) over the server's nonce.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AzureImdsAttestorConfig {
    /// Tenants allowed, by the domain the agent's `[azure_imds] tenant_domain` names
    /// (required, at least one).
    pub(crate) tenants: BTreeMap<String, AzureImdsTenant>,
    /// PEM bundle of the root CAs the signer's own certificate chain must end at (Azure's
    /// IMDS certificates chain to DigiCert Global Root G2 and Microsoft's TLS roots).
    /// Required.
    pub(crate) root_certificates: PathBuf,
    /// PEM bundle of the issuing (intermediate) CAs between the signer and a root, as Azure
    /// publishes them; none means the signer must be issued by a root directly.
    #[serde(default)]
    pub(crate) intermediate_certificates: Option<PathBuf>,
    /// DNS domains the signer's certificate must name (equal or a subdomain).
    #[serde(default = "azure_imds_domains")]
    pub(crate) allowed_metadata_domains: Vec<String>,
    /// Skew allowed on the document's `timeStamp` (`createdOn`, `expiresOn`).
    #[serde(default = "azure_imds_skew", with = "humantime_serde")]
    pub(crate) clock_skew: Duration,
}

/// `[node_attestors.azure_imds.tenants."<tenant domain>"]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AzureImdsTenant {
    /// The tenant's ID (the agent ID's first segment; SPIRE looks it up from the domain's
    /// OpenID configuration, here it is configured). Required.
    pub(crate) tenant_id: String,
    /// Subscriptions whose VMs may attest; empty allows any in the tenant.
    #[serde(default)]
    pub(crate) restrict_to_subscriptions: Vec<String>,
}

fn azure_imds_domains() -> Vec<String> {
    vec![ironroot_cloud_attest::azure_imds::DEFAULT_METADATA_DOMAIN.into()]
}
fn azure_imds_skew() -> Duration {
    ironroot_cloud_attest::azure_imds::DEFAULT_CLOCK_SKEW
}

/// The system's CA bundle (Debian, Ubuntu, Alpine, Arch).
pub(crate) const DEFAULT_KEYS_CA_FILE: &str = "/etc/ssl/certs/ca-certificates.crt";
pub(crate) const DEFAULT_KEYS_FETCH_TIMEOUT: Duration = Duration::from_secs(10);
pub(crate) const DEFAULT_KEYS_MAX_AGE_FLOOR: Duration = Duration::from_secs(5 * 60);
pub(crate) const DEFAULT_KEYS_MAX_AGE_CEILING: Duration = Duration::from_secs(24 * 3600);

fn keys_ca_file() -> PathBuf {
    PathBuf::from(DEFAULT_KEYS_CA_FILE)
}
fn keys_fetch_timeout() -> Duration {
    DEFAULT_KEYS_FETCH_TIMEOUT
}
fn keys_max_age_floor() -> Duration {
    DEFAULT_KEYS_MAX_AGE_FLOOR
}
fn keys_max_age_ceiling() -> Duration {
    DEFAULT_KEYS_MAX_AGE_CEILING
}

fn gcp_audience() -> String {
    ironroot_cloud_attest::gcp_iit::DEFAULT_AUDIENCE.into()
}
fn gcp_skew() -> Duration {
    ironroot_cloud_attest::gcp_iit::DEFAULT_CLOCK_SKEW
}
fn azure_skew() -> Duration {
    ironroot_cloud_attest::azure_msi::DEFAULT_CLOCK_SKEW
}
fn azure_resource() -> String {
    ironroot_cloud_attest::azure_msi::DEFAULT_RESOURCE.into()
}
