//! Server configuration (TOML). Every option, its default and its meaning are in
//! conf/server.toml (parsed by a test) and docs/configuration.md; keep the three in step.
//!
//! The file is read as written ([`file`]), then checked and typed once: the key manager is
//! a PKCS#11 token *or* (development only) software keys, a PIN comes from a file *or* an
//! environment variable, modes and addresses are parsed values. Every refusal is a
//! [`ConfigError`] naming the key, as the operator wrote it.

mod audit;
#[cfg(feature = "cloud")]
mod cloud_attestors;
mod federation;
mod file;
#[cfg(feature = "k8s")]
mod k8s_psat;
mod limits;
mod node_attestors;
mod oidc;
mod store;
mod transit;

pub(crate) use audit::AuditConfig;
#[cfg(feature = "cloud")]
pub(crate) use cloud_attestors::{
    AwsIidAttestorConfig, AzureImdsAttestorConfig, AzureMsiAttestorConfig, GcpIitAttestorConfig,
};
pub(crate) use federation::{
    BundleEndpointConfig, EndpointProfile, FederationConfig, PeerProfile, RefreshBounds,
    Relationship,
};
#[cfg(feature = "k8s")]
pub(crate) use k8s_psat::{K8sPsatClusterConfig, K8sPsatConfig};
pub(crate) use limits::NodeLimitsConfig;
pub use node_attestors::PolicyBinding;
pub(crate) use node_attestors::{
    JoinTokenConfig, NodeAttestorConfig, NodeAttestorsConfig, TpmAttestorConfig,
};
pub(crate) use oidc::{OidcConfig, OidcTls};
#[cfg(test)]
pub(crate) use store::SledConfig;
pub(crate) use store::StoreConfig;

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use ironroot_api::spiffe_id::{SpiffeId, TrustDomain};
use ironroot_hsm::{KeyAlgorithm, PinSource, Pkcs11Config};
use serde::Deserialize;

use crate::ca::SigningMode;

/// Where the admin socket lives unless the config says otherwise.
pub(crate) const DEFAULT_ADMIN_SOCKET: &str = "/run/ironroot/server/admin.sock";
/// The store (and nothing secret when an HSM is configured).
pub(crate) const DEFAULT_DATA_DIR: &str = "/var/lib/ironroot/server";
/// Log filter unless `log_level` or RUST_LOG says otherwise.
pub(crate) const DEFAULT_LOG_LEVEL: &str = "info";
/// Largest admin request: entries and policies are small.
pub(crate) const DEFAULT_ADMIN_MAX_REQUEST_BYTES: usize = 1024 * 1024;
/// Only root may use the admin API unless told otherwise.
pub(crate) const DEFAULT_ADMIN_UIDS: [u32; 1] = [0];
/// Owner read/write only.
pub(crate) const DEFAULT_SOCKET_MODE: SocketMode = SocketMode(0o600);
/// The Node API address.
pub(crate) const DEFAULT_NODE_LISTEN: &str = "0.0.0.0:8081";
/// Agent SVID lifetime; agents re-attest at half of it.
pub(crate) const DEFAULT_AGENT_SVID_TTL: Duration = Duration::from_secs(3600);
/// Time an agent has to answer a challenge.
pub(crate) const DEFAULT_CHALLENGE_TTL: Duration = Duration::from_secs(30);
/// Largest Node API message: an event log travels in one.
pub(crate) const DEFAULT_NODE_MAX_MESSAGE_BYTES: usize = 8 * 1024 * 1024;
/// LDevID lifetime.
pub(crate) const DEFAULT_LDEVID_TTL: Duration = Duration::from_secs(365 * 24 * 3600);
/// CA key and certificate lifetime.
pub(crate) const DEFAULT_CA_TTL: Duration = Duration::from_secs(24 * 3600);
/// `[ca] memory_key_ttl`: one hour of in-memory signing key, replaced at half of it.
pub(crate) const DEFAULT_MEMORY_KEY_TTL: Duration = Duration::from_secs(3600);
/// X.509-SVID lifetime when none is asked for.
pub(crate) const DEFAULT_X509_SVID_TTL: Duration = Duration::from_secs(3600);
/// JWT-SVID lifetime when none is asked for.
pub(crate) const DEFAULT_JWT_SVID_TTL: Duration = Duration::from_secs(300);
/// How often the rotation schedule is checked.
pub(crate) const DEFAULT_ROTATION_CHECK: Duration = Duration::from_secs(10);
/// Prefix of the labels of keys the server creates.
pub(crate) const DEFAULT_KEY_LABEL_PREFIX: &str = "ironroot";
/// O= of CA certificates.
pub(crate) const DEFAULT_ORGANIZATION: &str = "ironroot";
/// C= of CA certificates.
pub(crate) const DEFAULT_COUNTRY: &str = "US";

/// `[store]` with `kind = "postgres"`: pooled connections.
pub(crate) const DEFAULT_PG_POOL_SIZE: usize = crate::store::postgres::DEFAULT_POOL_SIZE;
/// Longest wait for a new PostgreSQL connection before a call fails `Unavailable`.
pub(crate) const DEFAULT_PG_CONNECT_TIMEOUT: Duration =
    crate::store::postgres::DEFAULT_CONNECT_TIMEOUT;
/// Longest wait for a free pooled connection.
pub(crate) const DEFAULT_PG_WAIT_TIMEOUT: Duration = crate::store::postgres::DEFAULT_WAIT_TIMEOUT;
/// Longest a statement may run in the database.
pub(crate) const DEFAULT_PG_STATEMENT_TIMEOUT: Duration =
    crate::store::postgres::DEFAULT_STATEMENT_TIMEOUT;
/// Change events kept for servers catching up.
pub(crate) const DEFAULT_PG_CHANGES_KEPT: u64 = crate::store::postgres::DEFAULT_CHANGES_KEPT;
/// Database when only `host` is given.
pub(crate) const DEFAULT_PG_DBNAME: &str = "ironroot";
/// Role when only `host` is given.
pub(crate) const DEFAULT_PG_USER: &str = "ironroot";

/// Shortest CA lifetime: the schedule prepares at 1/2 and activates at 1/6 remaining, in
/// whole seconds.
const MIN_CA_TTL: Duration = Duration::from_secs(6);
/// Smallest admin request limit that still admits ordinary requests.
const MIN_ADMIN_REQUEST_BYTES: usize = 1024;

/// Why the configuration was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        /// The configuration file given.
        path: PathBuf,
        /// The I/O error (missing file, permissions).
        #[source]
        source: std::io::Error,
    },
    /// The file is not TOML of the configuration's shape (an unknown key, a wrong type).
    #[error("config file {} is not valid: {source}", path.display())]
    Parse {
        /// The configuration file given.
        path: PathBuf,
        /// The TOML error, with the line and column.
        #[source]
        source: toml::de::Error,
    },
    /// An option's value is refused.
    #[error("config file {}: {source}", path.display())]
    Invalid {
        /// The configuration file given.
        path: PathBuf,
        /// Which option and why.
        #[source]
        source: InvalidOption,
    },
}

/// An option whose value is refused: its key as written in the file, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {reason}")]
pub struct InvalidOption {
    /// The key (`ca.ca_ttl`, `key_manager.pkcs11`).
    pub(crate) key: &'static str,
    /// What is wrong with it and what to write instead.
    pub(crate) reason: String,
}

/// A value that does not parse as what its option needs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum ValueError {
    /// Not an octal permission mode.
    #[error("{0:?} is not an octal mode like \"0600\"")]
    SocketMode(String),
    /// Not `host:port`.
    #[error("{0:?} is not host:port like \"0.0.0.0:8081\" (empty disables the Node API)")]
    ListenAddress(String),
}

/// `[admin] admin_ids`: each a SPIFFE ID of `td` (an SVID of another trust domain never
/// verifies to this server's bundle, so such an entry could only be a mistake).
fn admin_ids(raw: &[String], td: &TrustDomain) -> Result<Vec<SpiffeId>, InvalidOption> {
    raw.iter()
        .map(|s| {
            let id = SpiffeId::parse(s)
                .map_err(|e| invalid("admin.admin_ids", format!("{s:?}: {e}")))?;
            if !id.is_member_of(td) {
                return Err(invalid(
                    "admin.admin_ids",
                    format!("{id} is not in trust domain {td}"),
                ));
            }
            Ok(id)
        })
        .collect()
}

fn invalid(key: &'static str, reason: impl Into<String>) -> InvalidOption {
    InvalidOption {
        key,
        reason: reason.into(),
    }
}

/// The limits of an HTTP/1 listener's section (`[oidc]`, `[federation.bundle_endpoint]`):
/// `per_address` and `header_timeout` are (option name, value).
fn listener_limits(
    section: &'static str,
    (per_address_key, per_address): (&'static str, usize),
    (timeout_key, header_read_timeout): (&'static str, Duration),
) -> Result<crate::http1::ListenerLimits, InvalidOption> {
    let max = crate::http1::MAX_CONNECTIONS;
    if !(1..=max).contains(&per_address) {
        return Err(invalid(
            per_address_key,
            format!("{per_address} is not between 1 and {max} (the listener's connection cap)"),
        ));
    }
    if header_read_timeout.is_zero() {
        return Err(invalid(
            timeout_key,
            "must be more than 0: a client with no deadline to send its request can hold a \
             connection for ever",
        ));
    }
    Ok(crate::http1::ListenerLimits {
        section,
        max_connections_per_address: per_address,
        header_read_timeout,
    })
}

/// The server configuration, checked.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The trust domain this server is the authority for.
    pub(crate) trust_domain: TrustDomain,
    /// Directory for the store (sled) and nothing secret.
    pub(crate) data_dir: PathBuf,
    /// Log filter (tracing EnvFilter syntax); RUST_LOG overrides it.
    pub log_level: String,
    pub(crate) admin: AdminConfig,
    pub(crate) ca: CaConfig,
    /// Where the CA keys live.
    pub(crate) key_manager: KeyManagerConfig,
    /// Absent: the server is its own (HSM-backed) root CA.
    pub(crate) upstream: Option<UpstreamConfig>,
    pub(crate) node_api: NodeApiConfig,
    pub(crate) node_attestors: NodeAttestorsConfig,
    /// Where entries, nodes, bundles and the CA journal live.
    pub(crate) store: StoreConfig,
    /// The tamper-evident audit log.
    pub(crate) audit: AuditConfig,
    /// `[oidc]`: the OIDC discovery endpoint; `None` when `listen` is empty.
    pub(crate) oidc: Option<OidcConfig>,
    /// `[metrics] listen`: the Prometheus endpoint's address; `None` (the default) serves none.
    pub(crate) metrics_listen: Option<ListenAddress>,
    /// `[federation]`: the bundle endpoint and the federation relationships.
    pub(crate) federation: FederationConfig,
}

/// Where the CA keys live.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub(crate) enum KeyManagerConfig {
    /// A PKCS#11 token (`[key_manager.pkcs11]`).
    Pkcs11(Pkcs11Config),
    /// The transit engine of OpenBao or Vault (`[key_manager.transit]`, docs/vault.md).
    Transit(Box<ironroot_hsm::TransitConfig>),
    /// Private keys in files under `data_dir/insecure-keys` (`insecure_software_keys =
    /// true`). Development only: anyone who reads them can issue any identity.
    InsecureSoftware,
}

/// The CA above this server when it runs as an intermediate.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub(crate) enum UpstreamConfig {
    /// Upstream CA certificate and PKCS#8 private key in PEM files (`kind = "disk"`).
    Disk {
        cert_file: PathBuf,
        key_file: PathBuf,
        /// Root certificates to publish in the bundle; defaults to cert_file.
        bundle_file: Option<PathBuf>,
    },
    /// Upstream CA key in a (second) PKCS#11 token, its certificate in a file
    /// (`kind = "pkcs11"`).
    Pkcs11 {
        token: Pkcs11Config,
        key_label: String,
        cert_file: PathBuf,
        bundle_file: Option<PathBuf>,
    },
    /// OpenBao's (or Vault's) PKI engine signs a CSR of each new CA key (`kind = "openbao"`,
    /// docs/vault.md).
    OpenBao(Box<transit::OpenBaoPkiConfig>),
}

/// A unix socket's file mode (permission bits only), written in octal: `"0600"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SocketMode(u32);

impl SocketMode {
    /// The mode bits, for chmod.
    pub(crate) fn bits(self) -> u32 {
        self.0
    }
}

impl FromStr for SocketMode {
    type Err = ValueError;

    fn from_str(s: &str) -> Result<Self, ValueError> {
        u32::from_str_radix(s.trim_start_matches("0o"), 8)
            .ok()
            .filter(|m| *m <= 0o777)
            .map(SocketMode)
            .ok_or_else(|| ValueError::SocketMode(s.to_string()))
    }
}

impl fmt::Display for SocketMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04o}", self.0)
    }
}

/// A TCP address to listen on, `host:port` (a name is resolved when binding).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ListenAddress(String);

impl ListenAddress {
    /// As written, for `TcpListener::bind`.
    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for ListenAddress {
    type Err = ValueError;

    fn from_str(s: &str) -> Result<Self, ValueError> {
        match s.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
                Ok(ListenAddress(s.to_string()))
            }
            _ => Err(ValueError::ListenAddress(s.to_string())),
        }
    }
}

impl fmt::Display for ListenAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where agents attest (TLS; the server presents `spiffe://<td>/spire/server`).
#[derive(Debug, Clone)]
pub(crate) struct NodeApiConfig {
    /// Address of the Node API; `None` (written empty) disables it.
    pub(crate) listen: Option<ListenAddress>,
    /// Lifetime of agent SVIDs.
    pub(crate) agent_svid_ttl: Duration,
    /// How long an agent has to answer an attestation challenge.
    pub(crate) challenge_ttl: Duration,
    /// Largest Node API message (the event log travels in one).
    pub(crate) max_message_bytes: usize,
    /// `[node_api.limits]`: rates per source address, caps on connections and streams.
    pub(crate) limits: NodeLimitsConfig,
}

impl Default for NodeApiConfig {
    fn default() -> Self {
        NodeApiConfig {
            listen: Some(ListenAddress(DEFAULT_NODE_LISTEN.into())),
            agent_svid_ttl: DEFAULT_AGENT_SVID_TTL,
            challenge_ttl: DEFAULT_CHALLENGE_TTL,
            max_message_bytes: DEFAULT_NODE_MAX_MESSAGE_BYTES,
            limits: NodeLimitsConfig::default(),
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct AdminConfig {
    pub(crate) socket_path: PathBuf,
    /// Largest admin request accepted, in bytes.
    pub(crate) max_request_bytes: usize,
    /// Peer uids allowed on the admin socket (checked with SO_PEERCRED).
    pub(crate) allowed_uids: Vec<u32>,
    /// File mode of the socket.
    pub(crate) socket_mode: SocketMode,
    /// SPIFFE IDs that may use the admin API over mTLS (the Node API's port) without an
    /// entry with `admin = true`; all of this trust domain.
    pub(crate) admin_ids: Vec<SpiffeId>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            socket_path: PathBuf::from(DEFAULT_ADMIN_SOCKET),
            max_request_bytes: DEFAULT_ADMIN_MAX_REQUEST_BYTES,
            allowed_uids: DEFAULT_ADMIN_UIDS.to_vec(),
            socket_mode: DEFAULT_SOCKET_MODE,
            admin_ids: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct CaConfig {
    /// Algorithm of the X.509 CA key: "ec-p256" or "rsa-3072". JWT keys are always ES256.
    pub(crate) key_algorithm: KeyAlgorithm,
    #[serde(with = "humantime_serde")]
    pub(crate) ca_ttl: Duration,
    #[serde(with = "humantime_serde")]
    pub(crate) default_x509_svid_ttl: Duration,
    #[serde(with = "humantime_serde")]
    pub(crate) default_jwt_svid_ttl: Duration,
    /// How often the rotation schedule is checked.
    #[serde(with = "humantime_serde")]
    pub(crate) rotation_check_interval: Duration,
    /// Prefix of the labels of keys this server creates in the key manager.
    pub(crate) key_label_prefix: String,
    pub(crate) subject_organization: String,
    pub(crate) subject_country: String,
    /// Optional `iss` claim of JWT-SVIDs.
    pub(crate) jwt_issuer: Option<String>,
    /// Where X.509-SVIDs are signed: "hsm" or "memory".
    pub(crate) signing: SigningMode,
    /// Lifetime of each in-memory signing key (signing = "memory").
    #[serde(with = "humantime_serde")]
    pub(crate) memory_key_ttl: Duration,
}

impl Default for CaConfig {
    fn default() -> Self {
        CaConfig {
            key_algorithm: KeyAlgorithm::EcP256,
            ca_ttl: DEFAULT_CA_TTL,
            default_x509_svid_ttl: DEFAULT_X509_SVID_TTL,
            default_jwt_svid_ttl: DEFAULT_JWT_SVID_TTL,
            rotation_check_interval: DEFAULT_ROTATION_CHECK,
            key_label_prefix: DEFAULT_KEY_LABEL_PREFIX.into(),
            subject_organization: DEFAULT_ORGANIZATION.into(),
            subject_country: DEFAULT_COUNTRY.into(),
            jwt_issuer: None,
            signing: SigningMode::Hsm,
            memory_key_ttl: DEFAULT_MEMORY_KEY_TTL,
        }
    }
}

impl CaConfig {
    fn check(&self) -> Result<(), InvalidOption> {
        if self.ca_ttl < MIN_CA_TTL {
            return Err(invalid("ca.ca_ttl", "must be at least 6s"));
        }
        if self.default_x509_svid_ttl.is_zero() {
            return Err(invalid("ca.default_x509_svid_ttl", "must be > 0"));
        }
        if self.default_jwt_svid_ttl.is_zero() {
            return Err(invalid("ca.default_jwt_svid_ttl", "must be > 0"));
        }
        if self.rotation_check_interval.is_zero() {
            return Err(invalid("ca.rotation_check_interval", "must be > 0"));
        }
        // The key is replaced at the first rotation check past half its life: leave room for
        // a few checks (and retries) before it expires. Only in memory mode: in HSM mode the
        // option is unused, and a long check interval is the operator's choice.
        if self.signing == SigningMode::Memory
            && self.memory_key_ttl < self.rotation_check_interval * 4
        {
            return Err(invalid(
                "ca.memory_key_ttl",
                format!(
                    "must be at least 4 × ca.rotation_check_interval ({}), so the key is \
                     replaced before it expires",
                    humantime::format_duration(self.rotation_check_interval * 4)
                ),
            ));
        }
        let prefix = &self.key_label_prefix;
        if prefix.is_empty()
            || !prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(invalid(
                "ca.key_label_prefix",
                "must be non-empty [A-Za-z0-9_-]",
            ));
        }
        Ok(())
    }
}

/// A token's PIN: exactly one of `pin_file` / `pin_env`.
fn pin_source(
    key: &'static str,
    pin_file: Option<PathBuf>,
    pin_env: Option<String>,
) -> Result<PinSource, InvalidOption> {
    match (pin_file, pin_env) {
        (Some(f), None) => Ok(PinSource::File(f)),
        (None, Some(e)) => Ok(PinSource::Env(e)),
        (Some(_), Some(_)) => Err(invalid(key, "set pin_file or pin_env, not both")),
        (None, None) => Err(invalid(key, "pin_file or pin_env is required")),
    }
}

/// The token a PKCS#11 section names, `key` naming the section in errors.
fn pkcs11_config(key: &'static str, t: file::Pkcs11File) -> Result<Pkcs11Config, InvalidOption> {
    Ok(Pkcs11Config {
        pin: pin_source(key, t.pin_file, t.pin_env)?,
        module: t.module,
        token_label: t.token_label,
        sessions: t.sessions,
    })
}

impl TryFrom<file::ServerFile> for ServerConfig {
    type Error = InvalidOption;

    fn try_from(f: file::ServerFile) -> Result<Self, InvalidOption> {
        let trust_domain = TrustDomain::parse(&f.trust_domain)
            .map_err(|e| invalid("trust_domain", format!("{:?}: {e}", f.trust_domain)))?;
        let key_manager = match (f.key_manager, f.insecure_software_keys) {
            (Some(km), _) => match (km.pkcs11, km.transit) {
                (Some(token), None) => {
                    KeyManagerConfig::Pkcs11(pkcs11_config("key_manager.pkcs11", token)?)
                }
                (None, Some(t)) => KeyManagerConfig::Transit(Box::new(transit::transit(t)?)),
                (Some(_), Some(_)) => {
                    return Err(invalid(
                        "key_manager",
                        "set [key_manager.pkcs11] or [key_manager.transit], not both",
                    ))
                }
                (None, None) => {
                    return Err(invalid(
                        "key_manager",
                        "[key_manager] needs a [key_manager.pkcs11] or [key_manager.transit] \
                         section",
                    ))
                }
            },
            (None, true) => KeyManagerConfig::InsecureSoftware,
            (None, false) => {
                return Err(invalid(
                    "key_manager.pkcs11",
                    "no [key_manager.pkcs11] section: the CA keys must live in an HSM \
                     ([key_manager.pkcs11]) or OpenBao/Vault transit ([key_manager.transit]) \
                     (set insecure_software_keys = true only for development)",
                ))
            }
        };
        let upstream = f.upstream.map(upstream).transpose()?;
        let federation = federation::federation(f.federation, &trust_domain)?;
        let store = store::store(f.store)?;
        f.ca.check()?;
        f.audit.check()?;
        let mut ca = f.ca;
        let (oidc, jwt_issuer) = oidc::oidc(f.oidc, ca.jwt_issuer.take(), ca.ca_ttl)?;
        ca.jwt_issuer = jwt_issuer;
        let admin = f.admin;
        let socket_mode = admin
            .socket_mode
            .parse()
            .map_err(|e: ValueError| invalid("admin.socket_mode", e.to_string()))?;
        if admin.max_request_bytes < MIN_ADMIN_REQUEST_BYTES {
            return Err(invalid("admin.max_request_bytes", "must be at least 1024"));
        }
        let admin_ids = admin_ids(&admin.admin_ids, &trust_domain)?;
        let node_api = f.node_api;
        node_api.limits.check()?;
        let listen = match node_api.listen.as_str() {
            "" => None,
            l => Some(
                l.parse()
                    .map_err(|e: ValueError| invalid("node_api.listen", e.to_string()))?,
            ),
        };
        let metrics_listen = match f.metrics.listen.as_str() {
            "" => None,
            l => Some(
                l.parse()
                    .map_err(|e: ValueError| invalid("metrics.listen", e.to_string()))?,
            ),
        };
        Ok(ServerConfig {
            trust_domain,
            data_dir: f.data_dir,
            log_level: f.log_level,
            admin: AdminConfig {
                socket_path: admin.socket_path,
                max_request_bytes: admin.max_request_bytes,
                allowed_uids: admin.allowed_uids,
                socket_mode,
                admin_ids,
            },
            ca,
            key_manager,
            upstream,
            node_api: NodeApiConfig {
                listen,
                agent_svid_ttl: node_api.agent_svid_ttl,
                challenge_ttl: node_api.challenge_ttl,
                max_message_bytes: node_api.max_message_bytes,
                limits: node_api.limits,
            },
            node_attestors: f.node_attestors,
            store,
            audit: f.audit,
            oidc,
            metrics_listen,
            federation,
        })
    }
}

fn upstream(f: file::UpstreamFile) -> Result<UpstreamConfig, InvalidOption> {
    Ok(match f {
        file::UpstreamFile::Disk {
            cert_file,
            key_file,
            bundle_file,
        } => UpstreamConfig::Disk {
            cert_file,
            key_file,
            bundle_file,
        },
        file::UpstreamFile::Pkcs11 {
            token,
            key_label,
            cert_file,
            bundle_file,
        } => UpstreamConfig::Pkcs11 {
            token: pkcs11_config("upstream", token)?,
            key_label,
            cert_file,
            bundle_file,
        },
        file::UpstreamFile::OpenBao(f) => {
            UpstreamConfig::OpenBao(Box::new(transit::openbao_pki(f)?))
        }
    })
}

impl ServerConfig {
    /// Reads, parses and checks the file at `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml(&text, path)
    }

    /// Parses and checks `text` (`path` only names it in errors).
    pub(crate) fn from_toml(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let f: file::ServerFile = toml::from_str(text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source,
        })?;
        ServerConfig::try_from(f).map_err(|source| ConfigError::Invalid {
            path: path.to_owned(),
            source,
        })
    }
}

#[cfg(test)]
mod tests;
