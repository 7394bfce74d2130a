//! Server configuration (TOML). Every option and its default is documented in
//! docs/configuration.md; keep the two in step.

use std::path::{Path, PathBuf};
use std::time::Duration;

use ironroot_api::spiffe_id::TrustDomain;
use ironroot_hsm::{KeyAlgorithm, PinSource};
use serde::Deserialize;

/// Where the admin socket lives unless the config says otherwise.
pub const DEFAULT_ADMIN_SOCKET: &str = "/run/ironroot/server/admin.sock";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config file {path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// The trust domain this server is the authority for, e.g. "example.org".
    pub trust_domain: String,
    /// Directory for the store (sled) and nothing secret.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// Use private keys kept in files under data_dir instead of an HSM. Development only.
    #[serde(default)]
    pub insecure_software_keys: bool,
    /// Log filter (tracing EnvFilter syntax); RUST_LOG overrides it.
    #[serde(default = "default_log_level")]
    pub log_level: String,
    #[serde(default)]
    pub admin: AdminConfig,
    #[serde(default)]
    pub ca: CaConfig,
    /// The HSM holding the CA keys. Required unless insecure_software_keys is true.
    pub key_manager: Option<KeyManagerConfig>,
    /// Absent: the server is its own (HSM-backed) root CA.
    pub upstream: Option<UpstreamConfig>,
    #[serde(default)]
    pub node_api: NodeApiConfig,
    #[serde(default)]
    pub node_attestors: NodeAttestorsConfig,
}

/// Where agents attest (TLS; the server presents spiffe://<td>/spire/server).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeApiConfig {
    /// Address of the Node API; empty disables it.
    #[serde(default = "default_node_listen")]
    pub listen: String,
    /// Lifetime of agent SVIDs.
    #[serde(default = "default_agent_svid_ttl", with = "humantime_serde")]
    pub agent_svid_ttl: Duration,
    /// How long an agent has to answer an attestation challenge.
    #[serde(default = "default_challenge_ttl", with = "humantime_serde")]
    pub challenge_ttl: Duration,
    /// Largest Node API message (the event log travels in one).
    #[serde(default = "default_node_max_message")]
    pub max_message_bytes: usize,
}

impl Default for NodeApiConfig {
    fn default() -> Self {
        NodeApiConfig {
            listen: default_node_listen(),
            agent_svid_ttl: default_agent_svid_ttl(),
            challenge_ttl: default_challenge_ttl(),
            max_message_bytes: default_node_max_message(),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeAttestorsConfig {
    /// Enables `tpm_ek` (and `tpm_devid` when a DevID CA is set).
    pub tpm: Option<TpmAttestorConfig>,
    #[serde(default)]
    pub join_token: JoinTokenConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinTokenConfig {
    #[serde(default = "default_true")]
    pub enabled: bool,
}

impl Default for JoinTokenConfig {
    fn default() -> Self {
        JoinTokenConfig { enabled: true }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TpmAttestorConfig {
    /// PEM bundle of TPM manufacturer CAs; EK certificates must chain to one.
    pub ek_ca_bundle: Option<PathBuf>,
    /// SHA-256 (hex) of EK public keys accepted without a certificate.
    #[serde(default)]
    pub ek_hash_allow_list: Vec<String>,
    /// PEM bundle of DevID CAs; enables `tpm_devid`.
    pub devid_ca_bundle: Option<PathBuf>,
    /// Issue LDevID certificates (HSM-held DevID CA) to nodes that enroll
    /// while attesting with `tpm_ek`; also enables `tpm_devid` for them.
    #[serde(default)]
    pub devid_issuer: bool,
    /// Lifetime of issued LDevID certificates.
    #[serde(default = "default_ldevid_ttl", with = "humantime_serde")]
    pub ldevid_ttl: Duration,
    /// Directory of measured-boot policies (`*.toml`, one named policy each).
    pub policies_dir: PathBuf,
    /// Policy for nodes no binding names.
    pub default_policy: Option<String>,
    /// First matching binding wins.
    #[serde(default)]
    pub policy_bindings: Vec<PolicyBinding>,
    /// Sign agent SVIDs only for TPM-resident keys the AK certified; a software agent
    /// key is then rejected. `false` also admits software keys (`tpm:agent_key:software`).
    #[serde(default = "default_true")]
    pub require_tpm_agent_key: bool,
}

/// Nodes with `selector` (e.g. `tpm:ek_hash:ab12..`) must pass `policy`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyBinding {
    pub selector: String,
    pub policy: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    #[serde(default = "default_admin_socket")]
    pub socket_path: PathBuf,
    /// Largest admin request accepted, in bytes.
    #[serde(default = "default_max_request_bytes")]
    pub max_request_bytes: usize,
    /// Peer uids allowed on the admin socket (checked with SO_PEERCRED).
    #[serde(default = "default_admin_uids")]
    pub allowed_uids: Vec<u32>,
    /// File mode of the socket, octal.
    #[serde(default = "default_socket_mode")]
    pub socket_mode: String,
}

impl AdminConfig {
    pub fn socket_mode_bits(&self) -> Result<u32, ConfigError> {
        u32::from_str_radix(self.socket_mode.trim_start_matches("0o"), 8)
            .ok()
            .filter(|m| *m <= 0o777)
            .ok_or_else(|| ConfigError::Invalid {
                path: PathBuf::from("<config>"),
                message: format!(
                    "admin.socket_mode {:?} is not an octal mode like \"0600\"",
                    self.socket_mode
                ),
            })
    }
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            socket_path: default_admin_socket(),
            max_request_bytes: default_max_request_bytes(),
            allowed_uids: default_admin_uids(),
            socket_mode: default_socket_mode(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaConfig {
    /// Algorithm of the X.509 CA key: "ec-p256" or "rsa-3072". JWT keys are always ES256.
    #[serde(default = "default_key_algorithm")]
    pub key_algorithm: KeyAlgorithm,
    #[serde(default = "default_ca_ttl", with = "humantime_serde")]
    pub ca_ttl: Duration,
    #[serde(default = "default_x509_ttl", with = "humantime_serde")]
    pub default_x509_svid_ttl: Duration,
    #[serde(default = "default_jwt_ttl", with = "humantime_serde")]
    pub default_jwt_svid_ttl: Duration,
    /// How often the rotation schedule is checked.
    #[serde(default = "default_rotation_check", with = "humantime_serde")]
    pub rotation_check_interval: Duration,
    /// Prefix of the labels of keys this server creates in the key manager.
    #[serde(default = "default_label_prefix")]
    pub key_label_prefix: String,
    #[serde(default = "default_organization")]
    pub subject_organization: String,
    #[serde(default = "default_country")]
    pub subject_country: String,
    /// Optional `iss` claim of JWT-SVIDs.
    #[serde(default)]
    pub jwt_issuer: Option<String>,
}

impl Default for CaConfig {
    fn default() -> Self {
        CaConfig {
            key_algorithm: default_key_algorithm(),
            ca_ttl: default_ca_ttl(),
            default_x509_svid_ttl: default_x509_ttl(),
            default_jwt_svid_ttl: default_jwt_ttl(),
            rotation_check_interval: default_rotation_check(),
            key_label_prefix: default_label_prefix(),
            subject_organization: default_organization(),
            subject_country: default_country(),
            jwt_issuer: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyManagerConfig {
    pub pkcs11: Pkcs11Section,
}

/// A PKCS#11 token: module, token label and where its user PIN comes from.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pkcs11Section {
    pub module: PathBuf,
    pub token_label: String,
    pub pin_file: Option<PathBuf>,
    pub pin_env: Option<String>,
    /// Sessions in the pool; 0 means one per CPU core.
    #[serde(default)]
    pub sessions: usize,
}

impl Pkcs11Section {
    pub fn to_hsm_config(&self, what: &str) -> Result<ironroot_hsm::Pkcs11Config, String> {
        let pin = match (&self.pin_file, &self.pin_env) {
            (Some(f), None) => PinSource::File(f.clone()),
            (None, Some(e)) => PinSource::Env(e.clone()),
            (Some(_), Some(_)) => {
                return Err(format!("{what}: set pin_file or pin_env, not both"));
            }
            (None, None) => {
                return Err(format!("{what}: pin_file or pin_env is required"));
            }
        };
        Ok(ironroot_hsm::Pkcs11Config {
            module: self.module.clone(),
            token_label: self.token_label.clone(),
            pin,
            sessions: self.sessions,
        })
    }
}

/// The CA above this server when it runs as an intermediate.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum UpstreamConfig {
    /// Upstream CA certificate and PKCS#8 private key in PEM files.
    Disk {
        cert_file: PathBuf,
        key_file: PathBuf,
        /// Root certificates to publish in the bundle; defaults to cert_file.
        bundle_file: Option<PathBuf>,
    },
    /// Upstream CA key in a (second) PKCS#11 token, its certificate in a file.
    Pkcs11 {
        module: PathBuf,
        token_label: String,
        pin_file: Option<PathBuf>,
        pin_env: Option<String>,
        #[serde(default)]
        sessions: usize,
        key_label: String,
        cert_file: PathBuf,
        bundle_file: Option<PathBuf>,
    },
}

impl UpstreamConfig {
    /// The PKCS#11 token of a `kind = "pkcs11"` upstream.
    pub fn token(&self) -> Option<Pkcs11Section> {
        match self {
            UpstreamConfig::Disk { .. } => None,
            UpstreamConfig::Pkcs11 {
                module,
                token_label,
                pin_file,
                pin_env,
                sessions,
                ..
            } => Some(Pkcs11Section {
                module: module.clone(),
                token_label: token_label.clone(),
                pin_file: pin_file.clone(),
                pin_env: pin_env.clone(),
                sessions: *sessions,
            }),
        }
    }
}

impl ServerConfig {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let cfg: ServerConfig = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        cfg.validate().map_err(|message| ConfigError::Invalid {
            path: path.to_owned(),
            message,
        })?;
        Ok(cfg)
    }

    pub fn trust_domain(&self) -> Result<TrustDomain, String> {
        TrustDomain::parse(&self.trust_domain)
            .map_err(|e| format!("trust_domain {:?}: {e}", self.trust_domain))
    }

    /// Checks relations between options that serde cannot express.
    pub fn validate(&self) -> Result<(), String> {
        self.trust_domain()?;
        if self.key_manager.is_none() && !self.insecure_software_keys {
            return Err(
                "no [key_manager.pkcs11] section: the CA keys must live in an HSM \
                 (set insecure_software_keys = true only for development)"
                    .into(),
            );
        }
        if let Some(km) = &self.key_manager {
            km.pkcs11.to_hsm_config("[key_manager.pkcs11]")?;
        }
        if let Some(up) = &self.upstream {
            if let Some(token) = up.token() {
                token.to_hsm_config("[upstream]")?;
            }
        }
        let ca = &self.ca;
        if ca.ca_ttl < Duration::from_secs(6) {
            return Err("ca.ca_ttl must be at least 6s".into());
        }
        if ca.default_x509_svid_ttl.is_zero() || ca.default_jwt_svid_ttl.is_zero() {
            return Err("ca.default_x509_svid_ttl and ca.default_jwt_svid_ttl must be > 0".into());
        }
        if ca.rotation_check_interval.is_zero() {
            return Err("ca.rotation_check_interval must be > 0".into());
        }
        if ca.key_label_prefix.is_empty()
            || !ca
                .key_label_prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err("ca.key_label_prefix must be non-empty [A-Za-z0-9_-]".into());
        }
        self.admin.socket_mode_bits().map_err(|e| e.to_string())?;
        if self.admin.max_request_bytes < 1024 {
            return Err("admin.max_request_bytes must be at least 1024".into());
        }
        Ok(())
    }
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("/var/lib/ironroot/server")
}
fn default_log_level() -> String {
    "info".into()
}
fn default_admin_socket() -> PathBuf {
    PathBuf::from(DEFAULT_ADMIN_SOCKET)
}
fn default_max_request_bytes() -> usize {
    1024 * 1024
}
fn default_admin_uids() -> Vec<u32> {
    vec![0]
}
fn default_node_listen() -> String {
    "0.0.0.0:8081".into()
}
fn default_agent_svid_ttl() -> Duration {
    Duration::from_secs(3600)
}
fn default_challenge_ttl() -> Duration {
    Duration::from_secs(30)
}
fn default_node_max_message() -> usize {
    8 * 1024 * 1024
}
fn default_ldevid_ttl() -> Duration {
    Duration::from_secs(365 * 24 * 3600)
}
fn default_true() -> bool {
    true
}
fn default_socket_mode() -> String {
    "0600".into()
}
fn default_key_algorithm() -> KeyAlgorithm {
    KeyAlgorithm::EcP256
}
fn default_ca_ttl() -> Duration {
    Duration::from_secs(24 * 3600)
}
fn default_x509_ttl() -> Duration {
    Duration::from_secs(3600)
}
fn default_jwt_ttl() -> Duration {
    Duration::from_secs(300)
}
fn default_rotation_check() -> Duration {
    Duration::from_secs(10)
}
fn default_label_prefix() -> String {
    "ironroot".into()
}
fn default_organization() -> String {
    "ironroot".into()
}
fn default_country() -> String {
    "US".into()
}

#[cfg(test)]
mod tests;
