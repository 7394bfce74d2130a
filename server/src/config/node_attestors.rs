//! `[node_attestors]`: one section per node attestor (or family), keyed by its name, each
//! a variant of [`NodeAttestorConfig`] (externally tagged: the section's name is the tag).
//! A section the build lacks the cargo feature for, or one no attestor has, is refused
//! naming it.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use super::DEFAULT_LDEVID_TTL;
use crate::node::registry;

/// One `[node_attestors.<name>]` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub(crate) enum NodeAttestorConfig {
    /// `[node_attestors.tpm]`: `tpm_ek`, and `tpm_devid` when a DevID CA is set.
    Tpm(TpmAttestorConfig),
    /// `[node_attestors.join_token]`: `join_token` (enabled when the section is absent).
    JoinToken(JoinTokenConfig),
    /// `[node_attestors.aws_iid]`.
    #[cfg(feature = "cloud")]
    AwsIid(super::AwsIidAttestorConfig),
    /// `[node_attestors.gcp_iit]`.
    #[cfg(feature = "cloud")]
    GcpIit(super::GcpIitAttestorConfig),
    /// `[node_attestors.azure_msi]`.
    #[cfg(feature = "cloud")]
    AzureMsi(super::AzureMsiAttestorConfig),
    /// `[node_attestors.azure_imds]`.
    #[cfg(feature = "cloud")]
    AzureImds(super::AzureImdsAttestorConfig),
    /// `[node_attestors.k8s_psat]`: `k8s_psat` (cargo feature `k8s`).
    #[cfg(feature = "k8s")]
    K8sPsat(super::K8sPsatConfig),
}

/// `[node_attestors]`, its sections in file order; `join_token` (enabled) added when the
/// file has no such section.
#[derive(Debug, Clone)]
pub(crate) struct NodeAttestorsConfig {
    sections: Vec<NodeAttestorConfig>,
}

impl Default for NodeAttestorsConfig {
    fn default() -> Self {
        NodeAttestorsConfig {
            sections: vec![NodeAttestorConfig::JoinToken(JoinTokenConfig::default())],
        }
    }
}

impl NodeAttestorsConfig {
    /// Every section, the default `join_token` included.
    pub(crate) fn sections(&self) -> &[NodeAttestorConfig] {
        &self.sections
    }

    /// `[node_attestors.tpm]`, if present.
    #[cfg(test)]
    pub(crate) fn tpm(&self) -> Option<&TpmAttestorConfig> {
        self.sections.iter().find_map(|s| match s {
            NodeAttestorConfig::Tpm(t) => Some(t),
            _ => None,
        })
    }

    /// `[node_attestors.join_token]`, or its default.
    #[cfg(test)]
    pub(crate) fn join_token(&self) -> JoinTokenConfig {
        self.sections
            .iter()
            .find_map(|s| match s {
                NodeAttestorConfig::JoinToken(j) => Some(j.clone()),
                _ => None,
            })
            .unwrap_or_default()
    }
}

impl<'de> Deserialize<'de> for NodeAttestorsConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let table = toml::Table::deserialize(d)?;
        let mut sections = Vec::with_capacity(table.len() + 1);
        for (name, options) in table {
            if let Some(feature) = registry::missing_feature(&name) {
                return Err(D::Error::custom(format!(
                    "node_attestors.{name}: this ironroot-server was built without the \
                     '{feature}' cargo feature that attestor needs; use a build with it, or \
                     remove the section"
                )));
            }
            let mut one = toml::Table::new();
            one.insert(name.clone(), options);
            let section = NodeAttestorConfig::deserialize(toml::Value::Table(one))
                .map_err(|e| D::Error::custom(format!("node_attestors.{name}: {}", e.message())))?;
            sections.push(section);
        }
        if !sections
            .iter()
            .any(|s| matches!(s, NodeAttestorConfig::JoinToken(_)))
        {
            sections.push(NodeAttestorConfig::JoinToken(JoinTokenConfig::default()));
        }
        Ok(NodeAttestorsConfig { sections })
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct JoinTokenConfig {
    /// Accept join tokens (default true).
    pub(crate) enabled: bool,
}

impl Default for JoinTokenConfig {
    fn default() -> Self {
        JoinTokenConfig { enabled: true }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TpmAttestorConfig {
    /// PEM bundle of TPM manufacturer CAs; EK certificates must chain to one.
    pub(crate) ek_ca_bundle: Option<PathBuf>,
    /// SHA-256 (hex) of EK public keys accepted without a certificate.
    #[serde(default)]
    pub(crate) ek_hash_allow_list: Vec<String>,
    /// PEM bundle of DevID CAs; enables `tpm_devid`.
    pub(crate) devid_ca_bundle: Option<PathBuf>,
    /// Issue LDevID certificates (HSM-held DevID CA) to nodes that enroll
    /// while attesting with `tpm_ek`; also enables `tpm_devid` for them.
    #[serde(default)]
    pub(crate) devid_issuer: bool,
    /// Lifetime of issued LDevID certificates.
    #[serde(default = "ldevid_ttl", with = "humantime_serde")]
    pub(crate) ldevid_ttl: Duration,
    /// Directory of measured-boot policies (`*.toml`, one named policy each).
    pub(crate) policies_dir: PathBuf,
    /// Policy for nodes no binding names.
    pub(crate) default_policy: Option<String>,
    /// First matching binding wins.
    #[serde(default)]
    pub(crate) policy_bindings: Vec<PolicyBinding>,
    /// Sign agent SVIDs only for TPM-resident keys the AK certified; a software agent
    /// key is then rejected. `false` also admits software keys (`tpm:agent_key:software`).
    #[serde(default = "yes")]
    pub(crate) require_tpm_agent_key: bool,
}

fn ldevid_ttl() -> Duration {
    DEFAULT_LDEVID_TTL
}

fn yes() -> bool {
    true
}

/// Nodes with `selector` (e.g. `tpm:ek_hash:ab12..`) must pass `policy`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyBinding {
    pub(crate) selector: String,
    pub(crate) policy: String,
}
