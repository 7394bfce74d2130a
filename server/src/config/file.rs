//! The configuration file as written: the TOML spellings operators, scripts and docs use
//! (`insecure_software_keys` beside `[key_manager.pkcs11]`, `pin_file` / `pin_env`,
//! `socket_mode = "0600"`). Nothing here is used past loading: [`super::ServerConfig`] is
//! built from it, checked, and typed.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::{
    AdminConfig, CaConfig, NodeApiConfig, NodeAttestorsConfig, NodeLimitsConfig, DEFAULT_DATA_DIR,
    DEFAULT_LOG_LEVEL, DEFAULT_PG_CHANGES_KEPT, DEFAULT_PG_CONNECT_TIMEOUT, DEFAULT_PG_POOL_SIZE,
    DEFAULT_PG_STATEMENT_TIMEOUT, DEFAULT_PG_WAIT_TIMEOUT,
};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ServerFile {
    pub(crate) trust_domain: String,
    #[serde(default = "data_dir")]
    pub(crate) data_dir: PathBuf,
    #[serde(default)]
    pub(crate) insecure_software_keys: bool,
    #[serde(default = "log_level")]
    pub(crate) log_level: String,
    #[serde(default)]
    pub(crate) admin: AdminFile,
    #[serde(default)]
    pub(crate) ca: CaConfig,
    pub(crate) key_manager: Option<KeyManagerFile>,
    pub(crate) upstream: Option<UpstreamFile>,
    #[serde(default)]
    pub(crate) node_api: NodeApiFile,
    #[serde(default)]
    pub(crate) node_attestors: NodeAttestorsConfig,
    #[serde(default)]
    pub(crate) store: StoreFile,
    #[serde(default)]
    pub(crate) audit: super::AuditConfig,
    #[serde(default)]
    pub(crate) oidc: super::oidc::OidcFile,
    #[serde(default)]
    pub(crate) metrics: MetricsFile,
    #[serde(default)]
    pub(crate) federation: super::federation::FederationFile,
}

/// `[metrics]`: the Prometheus endpoint; `listen` empty (the default) serves none.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct MetricsFile {
    pub(crate) listen: String,
}

fn data_dir() -> PathBuf {
    PathBuf::from(DEFAULT_DATA_DIR)
}

fn log_level() -> String {
    DEFAULT_LOG_LEVEL.into()
}

/// `[admin]`, its socket mode still text.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct AdminFile {
    pub(crate) socket_path: PathBuf,
    pub(crate) max_request_bytes: usize,
    pub(crate) allowed_uids: Vec<u32>,
    pub(crate) socket_mode: String,
    /// SPIFFE IDs (text) that may use the admin API over mTLS without an admin entry.
    pub(crate) admin_ids: Vec<String>,
}

impl Default for AdminFile {
    fn default() -> Self {
        let typed = AdminConfig::default();
        AdminFile {
            socket_path: typed.socket_path,
            max_request_bytes: typed.max_request_bytes,
            allowed_uids: typed.allowed_uids,
            socket_mode: typed.socket_mode.to_string(),
            admin_ids: Vec::new(),
        }
    }
}

/// `[node_api]`, its address still text (empty: disabled).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct NodeApiFile {
    pub(crate) listen: String,
    #[serde(with = "humantime_serde")]
    pub(crate) agent_svid_ttl: std::time::Duration,
    #[serde(with = "humantime_serde")]
    pub(crate) challenge_ttl: std::time::Duration,
    pub(crate) max_message_bytes: usize,
    pub(crate) limits: NodeLimitsConfig,
}

impl Default for NodeApiFile {
    fn default() -> Self {
        let typed = NodeApiConfig::default();
        NodeApiFile {
            listen: typed.listen.map(|l| l.to_string()).unwrap_or_default(),
            agent_svid_ttl: typed.agent_svid_ttl,
            challenge_ttl: typed.challenge_ttl,
            max_message_bytes: typed.max_message_bytes,
            limits: typed.limits,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct KeyManagerFile {
    pub(crate) pkcs11: Option<Pkcs11File>,
    pub(crate) transit: Option<super::transit::TransitFile>,
}

/// A PKCS#11 token as written: one of `pin_file` / `pin_env`. `[key_manager.pkcs11]` is
/// this struct; `[upstream]` with `kind = "pkcs11"` flattens it beside the upstream keys.
/// The one conversion to `Pkcs11Config` is `super::pkcs11_config`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Pkcs11File {
    pub(crate) module: PathBuf,
    pub(crate) token_label: String,
    pub(crate) pin_file: Option<PathBuf>,
    pub(crate) pin_env: Option<String>,
    #[serde(default)]
    pub(crate) sessions: usize,
}

/// `[upstream]`, tagged by `kind`.
///
/// Unknown keys: a flattened struct only takes the keys it names, so `Pkcs11File`'s own
/// `deny_unknown_fields` does nothing inside `Pkcs11`; the enum's `deny_unknown_fields` is
/// what refuses them: serde checks that no key is left over once the variant's own fields
/// and the flattened ones have taken theirs (the error then reads "unknown field `x`",
/// without the list of expected keys). `config::tests` holds that refusal.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub(super) enum UpstreamFile {
    Disk {
        cert_file: PathBuf,
        key_file: PathBuf,
        bundle_file: Option<PathBuf>,
    },
    Pkcs11 {
        #[serde(flatten)]
        token: Pkcs11File,
        key_label: String,
        cert_file: PathBuf,
        bundle_file: Option<PathBuf>,
    },
    #[serde(rename = "openbao")]
    OpenBao(super::transit::OpenBaoPkiFile),
}

/// `[store]`, tagged by `kind`; absent: sled. The PostgreSQL connection is a `url` or its
/// parts, the password only ever a file or an environment variable.
// Read once at start-up, then typed: the size of the variants does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub(super) enum StoreFile {
    Sled {
        #[serde(default = "sled_cache_bytes")]
        cache_bytes: u64,
    },
    Postgres {
        url: Option<String>,
        host: Option<String>,
        port: Option<u16>,
        dbname: Option<String>,
        user: Option<String>,
        password_file: Option<PathBuf>,
        password_env: Option<String>,
        tls_ca_file: Option<PathBuf>,
        tls_cert_file: Option<PathBuf>,
        tls_key_file: Option<PathBuf>,
        #[serde(default = "pg_pool_size")]
        pool_size: usize,
        #[serde(default = "pg_connect_timeout", with = "humantime_serde")]
        connect_timeout: Duration,
        #[serde(default = "pg_wait_timeout", with = "humantime_serde")]
        wait_timeout: Duration,
        #[serde(default = "pg_statement_timeout", with = "humantime_serde")]
        statement_timeout: Duration,
        #[serde(default = "pg_changes_kept")]
        changes_kept: u64,
    },
}

impl Default for StoreFile {
    fn default() -> Self {
        StoreFile::Sled {
            cache_bytes: sled_cache_bytes(),
        }
    }
}

fn sled_cache_bytes() -> u64 {
    crate::store::SLED_DEFAULT_CACHE_BYTES
}

fn pg_pool_size() -> usize {
    DEFAULT_PG_POOL_SIZE
}

fn pg_connect_timeout() -> Duration {
    DEFAULT_PG_CONNECT_TIMEOUT
}

fn pg_wait_timeout() -> Duration {
    DEFAULT_PG_WAIT_TIMEOUT
}

fn pg_statement_timeout() -> Duration {
    DEFAULT_PG_STATEMENT_TIMEOUT
}

fn pg_changes_kept() -> u64 {
    DEFAULT_PG_CHANGES_KEPT
}
