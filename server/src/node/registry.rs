//! The node attestors this server runs, keyed by [`NodeAttestor::name`], built from
//! `[node_attestors]` (one section per attestor or family, a variant of
//! [`NodeAttestorConfig`]). Looking a name up refuses, by name, one ironroot does not
//! have, one built behind a cargo feature this server lacks, and one not enabled here.
//!
//! A new attestor: a file under `node/` implementing [`NodeAttestor`], a variant of
//! [`NodeAttestorConfig`] (behind its feature), a line in [`CATALOGUE`], and an arm in
//! [`build`].

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ironroot_api::spiffe_id::TrustDomain;
use ironroot_hsm::KeyManager;

use super::{AttestorRefusal, NodeAttestor};
use crate::config::{NodeAttestorConfig, NodeAttestorsConfig};
use crate::run::StartError;
use crate::store::DataStore;

/// A node attestor ironroot has: its name, its `[node_attestors.<section>]`, and the
/// cargo feature it is built under (`None`: always).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Known {
    /// The name agents send.
    pub(crate) name: &'static str,
    /// The configuration section that enables it.
    pub(crate) section: &'static str,
    /// The cargo feature it needs.
    pub(crate) feature: Option<&'static str>,
}

/// Every node attestor in the source, built in or not. The cloud attestors join with
/// `feature: Some("cloud")`, `k8s_psat` with `Some("k8s")`.
pub(crate) const CATALOGUE: &[Known] = &[
    Known {
        name: "join_token",
        section: "join_token",
        feature: None,
    },
    Known {
        name: "tpm_ek",
        section: "tpm",
        feature: None,
    },
    Known {
        name: "tpm_devid",
        section: "tpm",
        feature: None,
    },
    Known {
        name: "aws_iid",
        section: "aws_iid",
        feature: Some("cloud"),
    },
    Known {
        name: "gcp_iit",
        section: "gcp_iit",
        feature: Some("cloud"),
    },
    Known {
        name: "azure_msi",
        section: "azure_msi",
        feature: Some("cloud"),
    },
    Known {
        name: "azure_imds",
        section: "azure_imds",
        feature: Some("cloud"),
    },
    Known {
        name: "k8s_psat",
        section: "k8s_psat",
        feature: Some("k8s"),
    },
];

/// Whether this build has cargo feature `feature` (the plugin features of this crate).
pub(crate) fn feature_built(feature: &str) -> bool {
    (feature == "cloud" && cfg!(feature = "cloud")) || (feature == "k8s" && cfg!(feature = "k8s"))
}

/// The feature a `[node_attestors.<section>]` needs and this build lacks, if any.
pub(crate) fn missing_feature(section: &str) -> Option<&'static str> {
    CATALOGUE
        .iter()
        .filter(|k| k.section == section)
        .find_map(|k| k.feature.filter(|f| !feature_built(f)))
}

/// What an attestor's build needs from the server.
pub(crate) struct BuildContext<'a> {
    /// Agent IDs are made in it.
    pub(crate) trust_domain: TrustDomain,
    /// Join tokens.
    pub(crate) store: Arc<dyn DataStore>,
    /// The HSM (the DevID CA's key).
    pub(crate) key_manager: Arc<dyn KeyManager>,
    /// `[ca] key_label_prefix`.
    pub(crate) key_label_prefix: &'a str,
    /// The server's `data_dir`.
    pub(crate) data_dir: &'a PathBuf,
    /// `[node_api] challenge_ttl`.
    pub(crate) challenge_ttl: Duration,
    /// `[node_api.limits] max_pending_nonces`.
    pub(crate) max_pending_nonces: usize,
}

/// The enabled attestors, by name.
pub(crate) struct Registry {
    by_name: BTreeMap<&'static str, Arc<dyn NodeAttestor>>,
}

impl Registry {
    /// A registry of `attestors`; two of one name is the server's own bug.
    pub(crate) fn new(attestors: Vec<Arc<dyn NodeAttestor>>) -> Self {
        let mut by_name = BTreeMap::new();
        for a in attestors {
            let previous = by_name.insert(a.name(), a);
            assert!(previous.is_none(), "two node attestors share a name");
        }
        Registry { by_name }
    }

    /// The enabled names, sorted, comma-separated (for messages).
    pub(crate) fn enabled(&self) -> String {
        let names: Vec<&str> = self.by_name.keys().copied().collect();
        if names.is_empty() {
            "none".into()
        } else {
            names.join(", ")
        }
    }

    /// The enabled attestors that attest a node only once (trust on first use).
    pub(crate) fn attest_once(&self) -> Vec<&'static str> {
        self.by_name
            .iter()
            .filter(|(_, a)| !a.can_reattest())
            .map(|(n, _)| *n)
            .collect()
    }

    /// The attestor agents call `name`, or why there is none here.
    pub(crate) fn get(&self, name: &str) -> Result<Arc<dyn NodeAttestor>, AttestorRefusal> {
        if let Some(a) = self.by_name.get(name) {
            return Ok(a.clone());
        }
        Err(refusal(name, CATALOGUE, feature_built, self.enabled()))
    }
}

/// Why `name` is not served, judged against `catalogue` and the features `built`.
fn refusal(
    name: &str,
    catalogue: &[Known],
    built: fn(&str) -> bool,
    enabled: String,
) -> AttestorRefusal {
    if name.is_empty() {
        return AttestorRefusal::NoName;
    }
    let name_owned = name.to_owned();
    match catalogue.iter().find(|k| k.name == name) {
        None => AttestorRefusal::Unknown {
            name: name_owned,
            enabled,
        },
        Some(Known {
            feature: Some(f), ..
        }) if !built(f) => AttestorRefusal::NotBuilt {
            name: name_owned,
            feature: f,
            enabled,
        },
        Some(_) => AttestorRefusal::NotEnabled {
            name: name_owned,
            enabled,
        },
    }
}

/// Builds every attestor `[node_attestors]` enables.
pub(crate) fn build(
    cfg: &NodeAttestorsConfig,
    ctx: &BuildContext<'_>,
) -> Result<Registry, StartError> {
    let mut attestors: Vec<Arc<dyn NodeAttestor>> = Vec::new();
    for section in cfg.sections() {
        match section {
            NodeAttestorConfig::JoinToken(c) => {
                attestors.extend(super::join_token::build(c, ctx));
            }
            NodeAttestorConfig::Tpm(c) => attestors.extend(super::tpm::setup::build(c, ctx)?),
            #[cfg(feature = "cloud")]
            c @ (NodeAttestorConfig::AwsIid(_)
            | NodeAttestorConfig::GcpIit(_)
            | NodeAttestorConfig::AzureMsi(_)
            | NodeAttestorConfig::AzureImds(_)) => attestors.extend(super::cloud::build(c, ctx)?),
            // k8s_psat: built by its family's hook below.
            #[allow(unreachable_patterns)]
            _ => {}
        }
    }
    #[cfg(feature = "k8s")]
    attestors.extend(super::k8s::build(cfg, ctx)?);
    Ok(Registry::new(attestors))
}

#[cfg(test)]
mod tests {
    use super::*;

    const WITH_CLOUD: &[Known] = &[
        Known {
            name: "tpm_ek",
            section: "tpm",
            feature: None,
        },
        Known {
            name: "aws_iid",
            section: "aws_iid",
            feature: Some("cloud"),
        },
    ];

    #[test]
    fn a_name_not_served_is_refused_for_its_reason() {
        let enabled = || "join_token".to_string();
        assert_eq!(
            refusal("aws_iid", WITH_CLOUD, |_| false, enabled()),
            AttestorRefusal::NotBuilt {
                name: "aws_iid".into(),
                feature: "cloud",
                enabled: enabled()
            }
        );
        assert_eq!(
            refusal("aws_iid", WITH_CLOUD, |_| true, enabled()),
            AttestorRefusal::NotEnabled {
                name: "aws_iid".into(),
                enabled: enabled()
            }
        );
        assert_eq!(
            refusal("tpm_ek", WITH_CLOUD, |_| false, enabled()),
            AttestorRefusal::NotEnabled {
                name: "tpm_ek".into(),
                enabled: enabled()
            }
        );
        assert_eq!(
            refusal("tpm-ek", WITH_CLOUD, |_| true, enabled()),
            AttestorRefusal::Unknown {
                name: "tpm-ek".into(),
                enabled: enabled()
            }
        );
        assert_eq!(
            refusal("", WITH_CLOUD, |_| true, enabled()),
            AttestorRefusal::NoName
        );
        let msg = refusal("aws_iid", WITH_CLOUD, |_| false, enabled()).to_string();
        assert!(msg.contains("'cloud' cargo feature"), "{msg}");
    }

    #[test]
    fn the_catalogue_names_each_attestor_once_and_only_known_features() {
        for (i, k) in CATALOGUE.iter().enumerate() {
            assert!(
                CATALOGUE[..i].iter().all(|o| o.name != k.name),
                "{} twice",
                k.name
            );
            if let Some(f) = k.feature {
                assert!(["cloud", "k8s"].contains(&f), "{}: feature {f}", k.name);
            }
        }
        assert_eq!(feature_built("cloud"), cfg!(feature = "cloud"));
        assert_eq!(feature_built("k8s"), cfg!(feature = "k8s"));
        assert!(!feature_built("tpm"));
    }
}
