//! Agent configuration (TOML). Every option and its default is documented in
//! docs/agent-configuration.md.

use std::path::{Path, PathBuf};

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// Trust domain of the server, e.g. "example.org".
    pub trust_domain: String,
    /// Node API address of the server, "host:port".
    pub server_address: String,
    /// PEM bundle trusted for the server's SVID at bootstrap (installed with the agent).
    pub trust_bundle_path: PathBuf,
    /// Where the agent keeps its SVID and key.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// "tpm_ek", "tpm_devid" or "join_token".
    #[serde(default = "default_attestor")]
    pub node_attestor: String,
    /// The token, for join_token.
    #[serde(default)]
    pub join_token: Option<String>,
    #[serde(default)]
    pub tpm: TpmConfig,
    #[serde(default = "default_log_level")]
    pub log_level: String,
    #[serde(default)]
    pub workload_api: WorkloadApiConfig,
    #[serde(default)]
    pub workload_attestors: WorkloadAttestorsConfig,
    /// Envoy SDS (on by default, on the Workload API socket).
    #[serde(default)]
    pub sds: crate::sds::SdsConfig,
}

/// The SPIFFE Workload API socket.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadApiConfig {
    #[serde(default = "default_workload_socket")]
    pub socket_path: PathBuf,
    /// File mode of the socket (octal): workloads of every uid must connect;
    /// what they get is decided by attestation, not by the file mode.
    #[serde(default = "default_workload_socket_mode")]
    pub socket_mode: String,
    /// Per-caller limits (`[workload_api.limits]`).
    #[serde(default)]
    pub limits: crate::workload::limits::LimitsConfig,
}

impl Default for WorkloadApiConfig {
    fn default() -> Self {
        WorkloadApiConfig {
            socket_path: default_workload_socket(),
            socket_mode: default_workload_socket_mode(),
            limits: Default::default(),
        }
    }
}

impl WorkloadApiConfig {
    pub fn mode_bits(&self) -> anyhow::Result<u32> {
        u32::from_str_radix(self.socket_mode.trim_start_matches("0o"), 8)
            .ok()
            .filter(|m| *m <= 0o777)
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "workload_api.socket_mode {:?} is not octal",
                    self.socket_mode
                )
            })
    }
}

/// Which workload attestors run, and their options.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadAttestorsConfig {
    #[serde(default)]
    pub unix: crate::workload::attestor::unix::UnixAttestorConfig,
    #[serde(default)]
    pub process: crate::workload::attestor::process::ProcessAttestorConfig,
    /// Absent: no podman attestor.
    pub podman: Option<crate::workload::attestor::podman::PodmanConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TpmConfig {
    /// TSS2 TCTI: "device:/dev/tpmrm0" or "swtpm:host=127.0.0.1,port=2321".
    #[serde(default = "default_tcti")]
    pub tcti: String,
    /// The firmware event log.
    #[serde(default = "default_event_log")]
    pub event_log_path: PathBuf,
    /// EK type: "rsa" (RSA-2048), "ecc" (ECC P-256) or "ecc-p384".
    #[serde(default = "default_ek")]
    pub ek: String,
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
            ek: default_ek(),
            ak_handle: default_ak_handle(),
            devid_handle: default_devid_handle(),
            devid_certificate_path: None,
            enroll_devid: false,
            agent_key: None,
        }
    }
}

fn default_workload_socket() -> PathBuf {
    PathBuf::from("/run/ironroot/agent/public/api.sock")
}
fn default_workload_socket_mode() -> String {
    "0666".into()
}
fn default_data_dir() -> PathBuf {
    PathBuf::from("/var/lib/ironroot/agent")
}
fn default_attestor() -> String {
    "tpm_ek".into()
}
fn default_log_level() -> String {
    "info".into()
}
fn default_tcti() -> String {
    "device:/dev/tpmrm0".into()
}
fn default_event_log() -> PathBuf {
    PathBuf::from("/sys/kernel/security/tpm0/binary_bios_measurements")
}
fn default_ek() -> String {
    "rsa".into()
}
fn default_ak_handle() -> u32 {
    0x8101_0010
}
fn default_devid_handle() -> u32 {
    0x8101_0020
}

impl AgentConfig {
    /// Where this agent's SVID key lives: `tpm.agent_key` if set, else `tpm` for the TPM
    /// node attestors and `software` for join tokens (which have no TPM evidence).
    pub fn agent_key_storage(&self) -> AgentKeyStorage {
        match (self.node_attestor.as_str(), self.tpm.agent_key) {
            ("join_token", _) => AgentKeyStorage::Software,
            (_, Some(k)) => k,
            (_, None) => AgentKeyStorage::Tpm,
        }
    }

    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read config file {}: {e}", path.display()))?;
        let cfg: AgentConfig = toml::from_str(&text)
            .map_err(|e| anyhow::anyhow!("config file {} is not valid: {e}", path.display()))?;
        match cfg.node_attestor.as_str() {
            "tpm_ek" | "tpm_devid" => {}
            "join_token" if cfg.join_token.is_some() => {}
            "join_token" => anyhow::bail!(
                "{}: node_attestor = \"join_token\" needs join_token",
                path.display()
            ),
            other => anyhow::bail!(
                "{}: node_attestor {other:?} is not one of tpm_ek, tpm_devid, join_token",
                path.display()
            ),
        }
        cfg.workload_api
            .limits
            .validate()
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        cfg.sds
            .validate(&cfg.workload_api.socket_path)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        if cfg.node_attestor == "join_token" && cfg.tpm.agent_key == Some(AgentKeyStorage::Tpm) {
            anyhow::bail!(
                "{}: tpm.agent_key = \"tpm\" needs a TPM node attestor: a join_token agent sends no \
                 TPM evidence to certify the key with (remove the option or use tpm_ek / tpm_devid)",
                path.display()
            );
        }
        if cfg.node_attestor == "tpm_devid" && cfg.tpm.devid_certificate_path.is_none() {
            anyhow::bail!(
                "{}: tpm_devid needs tpm.devid_certificate_path",
                path.display()
            );
        }
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests;
