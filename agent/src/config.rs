//! Agent configuration (TOML), parsed into typed values when it is loaded: a bad
//! value is refused at startup with the key that holds it, never found later.
//! conf/agent.toml lists every option with its default; docs/agent-configuration.md
//! explains them.

pub mod cloud;
mod values;

use std::path::{Path, PathBuf};

use ironroot_api::spiffe_id::TrustDomain;
use serde::Deserialize;

use crate::sds::SdsConfigError;
use crate::workload::limits::LimitsConfigError;

pub(crate) use values::SocketMode;
pub use values::{BadServerAddress, EkType, NodeAttestorKind, ServerAddress};

/// Why a config file was refused; each variant names the key at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {}: {error}", path.display())]
    Read {
        /// The config file.
        path: PathBuf,
        /// The I/O error.
        error: std::io::Error,
    },
    /// Syntax, an unknown key, or a value of the wrong type (the parser names the key).
    #[error("config file {} is not valid: {error}", path.display())]
    Parse {
        /// The config file.
        path: PathBuf,
        /// The parser's error, with the key and position.
        error: toml::de::Error,
    },
    /// A problem with the file at `path`.
    #[error("{}: {error}", path.display())]
    InFile {
        /// The config file.
        path: PathBuf,
        /// What is wrong with it.
        error: Box<ConfigError>,
    },
    /// `[metrics] listen` is not `host:port`.
    #[error("metrics.listen {0:?} is not host:port (e.g. \"127.0.0.1:9988\"); leave it empty for no endpoint")]
    BadMetricsListen(String),
    /// Neither `server_address` nor `server_addresses` is set.
    #[error(
        "no server to attest to: set server_address = \"host:port\", or server_addresses = \
         [\"host:port\", ...] for several servers of the trust domain"
    )]
    NoServerAddress,
    /// Both `server_address` and `server_addresses` are set.
    #[error(
        "server_address and server_addresses are both set: keep one (server_addresses lists \
         every server, server_address names one)"
    )]
    ServerAddressTwice,
    /// `server_addresses = []`.
    #[error("server_addresses is empty: list at least one \"host:port\"")]
    EmptyServerAddresses,
    /// `server_addresses` lists an address twice.
    #[error("server_addresses lists {0} twice")]
    DuplicateServerAddress(String),
    /// `node_attestor = "join_token"` without a `join_token`.
    #[error("node_attestor = \"join_token\" needs join_token")]
    MissingJoinToken,
    /// `tpm.agent_key = "tpm"` with a node attestor that sends no TPM evidence (join_token,
    /// k8s_psat: nothing would certify the key).
    #[error(
        "tpm.agent_key = \"tpm\" needs a TPM node attestor: a join_token, cloud or k8s_psat \
         agent sends no TPM evidence to certify the key with (remove the option or use tpm_ek / \
         tpm_devid)"
    )]
    TpmKeyWithoutTpmAttestor,
    /// `node_attestor = "k8s_psat"` without `[k8s_psat] cluster`.
    #[error(
        "node_attestor = \"k8s_psat\" needs a [k8s_psat] section with cluster = \"<name>\" \
         (the cluster's name in the server's [node_attestors.k8s_psat.clusters])"
    )]
    MissingK8sPsat,
    /// `node_attestor = "azure_imds"` without `[azure_imds] tenant_domain`.
    #[error(
        "node_attestor = \"azure_imds\" needs [azure_imds] tenant_domain = \"<domain>\" \
         (a tenant of the server's [node_attestors.azure_imds.tenants])"
    )]
    MissingAzureImdsTenant,
    /// The configured attestor is behind a cargo feature this agent was built without.
    #[error(
        "node_attestor = \"{attestor}\" is not built into this agent: it needs \
         ironroot-agent built with the '{feature}' cargo feature (cargo build --features \
         {feature})"
    )]
    NotBuilt {
        /// The configured attestor.
        attestor: &'static str,
        /// The cargo feature it needs.
        feature: &'static str,
    },
    /// A cloud attestor's metadata URL is unusable.
    #[error("{option} = {value:?}: {reason}")]
    BadMetadataUrl {
        /// The option.
        option: &'static str,
        /// Its value.
        value: String,
        /// Why.
        reason: &'static str,
    },
    /// A `[workload_api.limits]` value is out of range.
    #[error(transparent)]
    Limits(#[from] LimitsConfigError),
    /// An `[sds]` option is unusable (its socket, or a resource name).
    #[error(transparent)]
    Sds(#[from] SdsConfigError),
}

/// Where the agent keeps its SVID and key.
pub(crate) const DEFAULT_DATA_DIR: &str = "/var/lib/ironroot/agent";
/// The log filter (tracing EnvFilter syntax).
pub(crate) const DEFAULT_LOG_LEVEL: &str = "info";
/// The Workload API socket.
pub(crate) const DEFAULT_WORKLOAD_SOCKET: &str = "/run/ironroot/agent/public/api.sock";
/// Every uid may connect: what a caller gets is decided by attestation, not the file mode.
pub(crate) const DEFAULT_WORKLOAD_SOCKET_MODE: SocketMode = SocketMode::new(0o666);
/// The kernel's TPM resource manager.
pub(crate) const DEFAULT_TCTI: &str = "device:/dev/tpmrm0";
/// Where Linux exposes the firmware's TPM event log.
pub(crate) const DEFAULT_EVENT_LOG: &str = "/sys/kernel/security/tpm0/binary_bios_measurements";
/// Persistent handle of the AK (TCG's range for owner keys).
pub(crate) const DEFAULT_AK_HANDLE: u32 = 0x8101_0010;
/// Persistent handle of the DevID key.
pub(crate) const DEFAULT_DEVID_HANDLE: u32 = 0x8101_0020;

// serde's `default = "…"` takes a function: each returns its constant.
fn default_data_dir() -> PathBuf {
    PathBuf::from(DEFAULT_DATA_DIR)
}
fn default_log_level() -> String {
    DEFAULT_LOG_LEVEL.into()
}
fn default_workload_socket() -> PathBuf {
    PathBuf::from(DEFAULT_WORKLOAD_SOCKET)
}
fn default_workload_socket_mode() -> SocketMode {
    DEFAULT_WORKLOAD_SOCKET_MODE
}
fn default_tcti() -> String {
    DEFAULT_TCTI.into()
}
fn default_event_log() -> PathBuf {
    PathBuf::from(DEFAULT_EVENT_LOG)
}
fn default_ak_handle() -> u32 {
    DEFAULT_AK_HANDLE
}
fn default_devid_handle() -> u32 {
    DEFAULT_DEVID_HANDLE
}

/// The agent's configuration file (TOML), as loaded and checked by [`AgentConfig::load`].
/// Unknown keys are refused.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// Trust domain of the server, e.g. "example.org".
    pub trust_domain: TrustDomain,
    /// Node API address of the server, "host:port": the one server of the trust domain
    /// (`server_addresses` lists several; one of the two is required, not both).
    #[serde(default)]
    pub server_address: Option<ServerAddress>,
    /// Node API addresses of the servers of the trust domain, "host:port" each, tried in
    /// turn (a name that resolves to several addresses counts as several servers); see
    /// [`AgentConfig::servers`].
    #[serde(default)]
    pub server_addresses: Option<Vec<ServerAddress>>,
    /// PEM bundle trusted for the server's SVID at bootstrap (installed with the agent).
    pub trust_bundle_path: PathBuf,
    /// Where the agent keeps its SVID and key (`crate::data_dir`).
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// How the agent proves what it is; see [`AgentConfig::node_attestor`] for the
    /// attestor with the options it uses.
    #[serde(default)]
    pub node_attestor: NodeAttestorKind,
    /// The token, for join_token.
    #[serde(default)]
    pub join_token: Option<String>,
    /// `[aws_iid]`: options of the aws_iid node attestor.
    #[serde(default)]
    pub aws_iid: cloud::AwsIidAgentConfig,
    /// `[gcp_iit]`: options of the gcp_iit node attestor.
    #[serde(default)]
    pub gcp_iit: cloud::GcpIitAgentConfig,
    /// `[azure_msi]`: options of the azure_msi node attestor.
    #[serde(default)]
    pub azure_msi: cloud::AzureMsiAgentConfig,
    /// `[azure_imds]`: options of the azure_imds node attestor.
    #[serde(default)]
    pub azure_imds: cloud::AzureImdsAgentConfig,
    /// `[k8s_psat]`: the cluster and token of `node_attestor = "k8s_psat"`.
    #[serde(default)]
    pub k8s_psat: Option<K8sPsatConfig>,
    /// The TPM and the keys in it (`[tpm]`), for the TPM node attestors and a TPM agent key.
    #[serde(default)]
    pub tpm: TpmConfig,
    /// The log filter (tracing `EnvFilter` syntax, e.g. `"info"` or `"ironroot_agent=debug"`);
    /// `RUST_LOG`, when set, replaces it.
    #[serde(default = "default_log_level")]
    pub log_level: String,
    /// The Workload API socket and its per-caller limits (`[workload_api]`).
    #[serde(default)]
    pub workload_api: WorkloadApiConfig,
    /// Which workload attestors run (`[workload_attestors]`).
    #[serde(default)]
    pub workload_attestors: WorkloadAttestorsConfig,
    /// Envoy SDS (on by default, on the Workload API socket).
    #[serde(default)]
    pub sds: crate::sds::SdsConfig,
    /// The Prometheus endpoint (`[metrics]`); off unless `listen` is set.
    #[serde(default)]
    pub metrics: MetricsConfig,
}

/// `[metrics]`: the Prometheus endpoint (docs/operations.md, "Metrics").
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// `host:port` to serve `GET /metrics` on (plain HTTP); empty (the default): no endpoint.
    #[serde(default)]
    pub listen: String,
}

impl MetricsConfig {
    /// The address to bind, or `None` when the endpoint is off.
    pub fn address(&self) -> Option<&str> {
        (!self.listen.is_empty()).then_some(self.listen.as_str())
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let Some(l) = self.address() else {
            return Ok(());
        };
        match l.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => Ok(()),
            _ => Err(ConfigError::BadMetricsListen(l.to_string())),
        }
    }
}

/// The node attestor with the options it uses (the file keeps SPIRE's flat
/// spelling: `node_attestor = "…"` beside `join_token` and `[tpm]`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum NodeAttestor<'a> {
    /// The TPM's EK (certificate or hash), optionally enrolling an LDevID.
    TpmEk {
        /// Ask the server for an LDevID in the same exchange (`tpm.enroll_devid`).
        enroll_devid: bool,
    },
    /// A DevID certificate for the TPM's DevID key: `tpm.devid_certificate_path`, else the
    /// LDevID an enrollment wrote to `data_dir/devid.pem`.
    TpmDevId {
        /// The PEM chain: DevID certificate first, then its intermediates.
        certificate_path: PathBuf,
    },
    /// A single-use token.
    JoinToken {
        /// The single-use token (`ironroot-server token generate`).
        token: &'a str,
    },
    /// An AWS instance identity document from IMDS.
    AwsIid(&'a cloud::AwsIidAgentConfig),
    /// A GCE instance identity token from the metadata server.
    GcpIit(&'a cloud::GcpIitAgentConfig),
    /// An Azure managed-identity access token from IMDS.
    AzureMsi(&'a cloud::AzureMsiAgentConfig),
    /// Azure IMDS attested data over the server's nonce.
    AzureImds(&'a cloud::AzureImdsAgentConfig),
    /// A Kubernetes projected service-account token, reviewed by the cluster's API server.
    #[cfg(feature = "k8s")]
    K8sPsat {
        /// The cluster's name as the server's configuration has it.
        cluster: &'a str,
        /// The projected token's file (re-read at every attestation: kubelet rotates it).
        token_path: &'a Path,
    },
}

/// The projected token's path SPIRE's documentation mounts for its agent.
pub(crate) const DEFAULT_K8S_PSAT_TOKEN_PATH: &str = "/var/run/secrets/tokens/spire-agent";

fn default_k8s_psat_token_path() -> PathBuf {
    PathBuf::from(DEFAULT_K8S_PSAT_TOKEN_PATH)
}

/// `[k8s_psat]`: the agent half of `node_attestor = "k8s_psat"` (SPIRE's options).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct K8sPsatConfig {
    /// The cluster's name, as `[node_attestors.k8s_psat.clusters.<name>]` on the server.
    pub cluster: String,
    /// The projected service-account token (a `serviceAccountToken` projected volume with
    /// the server's audience). Default `/var/run/secrets/tokens/spire-agent`.
    #[serde(default = "default_k8s_psat_token_path")]
    pub token_path: PathBuf,
}

/// The SPIFFE Workload API socket.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadApiConfig {
    /// Path of the Workload API unix socket (its directory is created when missing).
    #[serde(default = "default_workload_socket")]
    pub socket_path: PathBuf,
    /// File mode of the socket (octal string): workloads of every uid must connect;
    /// what they get is decided by attestation, not by the file mode.
    #[serde(default = "default_workload_socket_mode")]
    pub socket_mode: SocketMode,
    /// Per-caller limits (`[workload_api.limits]`).
    #[serde(default)]
    pub limits: crate::workload::limits::LimitsConfig,
}

impl Default for WorkloadApiConfig {
    fn default() -> Self {
        WorkloadApiConfig {
            socket_path: default_workload_socket(),
            socket_mode: DEFAULT_WORKLOAD_SOCKET_MODE,
            limits: Default::default(),
        }
    }
}

/// Which workload attestors run, and their options.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadAttestorsConfig {
    /// The unix attestor (uid, gid, groups of the caller).
    #[serde(default)]
    pub unix: crate::workload::attestor::unix::UnixAttestorConfig,
    /// The process attestor (the caller's executable path and hash).
    #[serde(default)]
    pub process: crate::workload::attestor::process::ProcessAttestorConfig,
    /// Absent: no podman attestor.
    pub podman: Option<crate::workload::attestor::podman::PodmanConfig>,
    /// Absent: no k8s attestor (cargo feature `k8s`).
    pub k8s: Option<crate::workload::attestor::k8s::K8sConfig>,
}

/// `[tpm]`: how the agent reaches its TPM and which keys it uses there. Every key has a
/// default, so a TPM agent may leave the section out.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TpmConfig {
    /// TSS2 TCTI: "device:/dev/tpmrm0" or "swtpm:host=127.0.0.1,port=2321".
    #[serde(default = "default_tcti")]
    pub tcti: String,
    /// The firmware event log.
    #[serde(default = "default_event_log")]
    pub event_log_path: PathBuf,
    /// EK type.
    #[serde(default)]
    pub ek: EkType,
    /// Persistent handle for the AK (a real TPM is not asked to recreate it on
    /// every attestation); 0 keeps it transient.
    #[serde(default = "default_ak_handle")]
    pub ak_handle: u32,
    /// Persistent handle of the DevID key (tpm_devid).
    #[serde(default = "default_devid_handle")]
    pub devid_handle: u32,
    /// PEM: DevID certificate, then its intermediates (tpm_devid). Where an
    /// enrolled LDevID is written (default: data_dir/devid.pem).
    #[serde(default)]
    pub devid_certificate_path: Option<PathBuf>,
    /// With tpm_ek: ask the server's DevID CA for an LDevID for the TPM's DevID key.
    #[serde(default)]
    pub enroll_devid: bool,
    /// Where the agent SVID key lives; unset: `tpm` for TPM node attestors (see
    /// [`AgentConfig::agent_key_storage`]).
    #[serde(default)]
    pub agent_key: Option<AgentKeyStorage>,
}

/// Where the agent SVID's private key lives (`tpm.agent_key`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AgentKeyStorage {
    /// Made in the TPM (restricted signing, fixedTPM), certified by the AK at every
    /// attestation; signs the agent's mTLS in the TPM.
    Tpm,
    /// Made in memory for each agent SVID (TPMs that cannot hold the key; join tokens).
    Software,
}

impl Default for TpmConfig {
    fn default() -> Self {
        TpmConfig {
            tcti: default_tcti(),
            event_log_path: default_event_log(),
            ek: EkType::default(),
            ak_handle: DEFAULT_AK_HANDLE,
            devid_handle: DEFAULT_DEVID_HANDLE,
            devid_certificate_path: None,
            enroll_devid: false,
            agent_key: None,
        }
    }
}

impl AgentConfig {
    /// The servers' Node API addresses as configured, in the order they are tried:
    /// `server_addresses`, or `server_address` alone (load refuses a config with both or
    /// neither).
    pub fn servers(&self) -> &[ServerAddress] {
        match (&self.server_addresses, &self.server_address) {
            (Some(list), _) => list,
            (None, Some(one)) => std::slice::from_ref(one),
            (None, None) => &[],
        }
    }

    /// Where this agent's SVID key lives: `tpm.agent_key` if set, else `tpm` for the TPM
    /// node attestors and `software` for join tokens and k8s_psat (which have no TPM
    /// evidence).
    pub fn agent_key_storage(&self) -> AgentKeyStorage {
        match (self.node_attestor, self.tpm.agent_key) {
            (kind, _) if !kind.uses_tpm() => AgentKeyStorage::Software,
            (_, Some(k)) => k,
            (_, None) => AgentKeyStorage::Tpm,
        }
    }

    /// Where the DevID certificate chain is: `tpm.devid_certificate_path`, else
    /// `data_dir/devid.pem`, where an enrollment writes the LDevID (so an agent that enrolled
    /// with `tpm_ek` attests with `tpm_devid` without another option).
    pub fn devid_certificate_path(&self) -> PathBuf {
        self.tpm
            .devid_certificate_path
            .clone()
            .unwrap_or_else(|| crate::data_dir::DataDir::new(&self.data_dir).devid())
    }

    /// The node attestor with its options; an error names the option it lacks.
    pub fn node_attestor(&self) -> Result<NodeAttestor<'_>, ConfigError> {
        Ok(match self.node_attestor {
            NodeAttestorKind::TpmEk => NodeAttestor::TpmEk {
                enroll_devid: self.tpm.enroll_devid,
            },
            NodeAttestorKind::TpmDevId => NodeAttestor::TpmDevId {
                certificate_path: self.devid_certificate_path(),
            },
            NodeAttestorKind::JoinToken => NodeAttestor::JoinToken {
                token: self
                    .join_token
                    .as_deref()
                    .ok_or(ConfigError::MissingJoinToken)?,
            },
            NodeAttestorKind::AwsIid => NodeAttestor::AwsIid(&self.aws_iid),
            NodeAttestorKind::GcpIit => NodeAttestor::GcpIit(&self.gcp_iit),
            NodeAttestorKind::AzureMsi => NodeAttestor::AzureMsi(&self.azure_msi),
            NodeAttestorKind::AzureImds => {
                if self.azure_imds.tenant_domain.is_empty() {
                    return Err(ConfigError::MissingAzureImdsTenant);
                }
                NodeAttestor::AzureImds(&self.azure_imds)
            }
            #[cfg(feature = "k8s")]
            NodeAttestorKind::K8sPsat => {
                let c = self
                    .k8s_psat
                    .as_ref()
                    .filter(|c| !c.cluster.is_empty())
                    .ok_or(ConfigError::MissingK8sPsat)?;
                NodeAttestor::K8sPsat {
                    cluster: &c.cluster,
                    token_path: &c.token_path,
                }
            }
            #[cfg(not(feature = "k8s"))]
            NodeAttestorKind::K8sPsat => {
                return Err(ConfigError::NotBuilt {
                    attestor: "k8s_psat",
                    feature: "k8s",
                })
            }
        })
    }

    /// Reads, parses and checks the file at `path`. Every error names the file; options that
    /// depend on each other are checked here, not left for the first attestation.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
            path: path.to_owned(),
            error,
        })?;
        let cfg: AgentConfig = toml::from_str(&text).map_err(|error| ConfigError::Parse {
            path: path.to_owned(),
            error,
        })?;
        cfg.validate().map_err(|error| ConfigError::InFile {
            path: path.to_owned(),
            error: Box::new(error),
        })?;
        Ok(cfg)
    }

    /// What serde cannot check: options that depend on each other.
    fn validate(&self) -> Result<(), ConfigError> {
        self.validate_servers()?;
        if self.node_attestor == NodeAttestorKind::JoinToken && self.join_token.is_none() {
            return Err(ConfigError::MissingJoinToken);
        }
        self.workload_api.limits.validate()?;
        self.sds.validate(&self.workload_api.socket_path)?;
        self.metrics.validate()?;
        if !self.node_attestor.uses_tpm() && self.tpm.agent_key == Some(AgentKeyStorage::Tpm) {
            return Err(ConfigError::TpmKeyWithoutTpmAttestor);
        }
        if let Some(feature) = self.node_attestor.feature() {
            if !crate::attest::feature_built(feature) {
                return Err(ConfigError::NotBuilt {
                    attestor: self.node_attestor.name(),
                    feature,
                });
            }
        }
        self.validate_metadata_urls()?;
        self.node_attestor()?;
        Ok(())
    }

    /// The metadata services are plain HTTP on a link-local address (as SPIRE's agents reach
    /// them): a URL of another scheme is refused at load.
    fn validate_metadata_urls(&self) -> Result<(), ConfigError> {
        for (option, value) in [
            (
                "aws_iid.ec2_metadata_endpoint",
                &self.aws_iid.ec2_metadata_endpoint,
            ),
            (
                "azure_msi.metadata_endpoint",
                &self.azure_msi.metadata_endpoint,
            ),
            (
                "azure_imds.metadata_endpoint",
                &self.azure_imds.metadata_endpoint,
            ),
        ] {
            let Some(rest) = value.strip_prefix("http://") else {
                return Err(ConfigError::BadMetadataUrl {
                    option,
                    value: value.clone(),
                    reason: "must start with http:// (the metadata service speaks plain HTTP)",
                });
            };
            if rest.is_empty() || rest.starts_with('/') {
                return Err(ConfigError::BadMetadataUrl {
                    option,
                    value: value.clone(),
                    reason: "names no host",
                });
            }
        }
        let host = &self.gcp_iit.identity_token_host;
        if host.is_empty() || host.contains('/') {
            return Err(ConfigError::BadMetadataUrl {
                option: "gcp_iit.identity_token_host",
                value: host.clone(),
                reason: "must be host or host:port (no scheme, no path)",
            });
        }
        Ok(())
    }

    fn validate_servers(&self) -> Result<(), ConfigError> {
        match (&self.server_address, self.server_addresses.as_deref()) {
            (Some(_), Some(_)) => Err(ConfigError::ServerAddressTwice),
            (Some(_), None) => Ok(()),
            (None, None) => Err(ConfigError::NoServerAddress),
            (None, Some([])) => Err(ConfigError::EmptyServerAddresses),
            (None, Some(list)) => {
                for (i, a) in list.iter().enumerate() {
                    if list[..i].contains(a) {
                        return Err(ConfigError::DuplicateServerAddress(a.to_string()));
                    }
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests;
