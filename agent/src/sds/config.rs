//! `[sds]`: Envoy's Secret Discovery Service on the agent. The option names
//! and defaults are SPIRE's (`default_svid_name`, `default_bundle_name`,
//! `default_all_bundles_name`, `disable_spiffe_cert_validation`), so an Envoy
//! configuration written for a SPIRE agent works unchanged. Every option and
//! its default is documented in docs/agent-configuration.md.

use std::path::{Path, PathBuf};

use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SdsConfig {
    /// Serve SDS at all (SPIRE serves it unless `disable_sds_api`).
    #[serde(default = "default_enabled")]
    pub enabled: bool,
    /// A socket of its own for SDS; absent: the Workload API socket serves both.
    /// Its file mode is `workload_api.socket_mode`.
    #[serde(default)]
    pub socket_path: Option<PathBuf>,
    /// The resource name of the caller's default X.509-SVID (its first, by entry ID).
    #[serde(default = "default_svid_name")]
    pub default_svid_name: String,
    /// The resource name of the agent's own trust domain bundle.
    #[serde(default = "default_bundle_name")]
    pub default_bundle_name: String,
    /// The resource name of one validation context holding the agent's trust
    /// domain and every federated one (needs Envoy's SPIFFE certificate validator).
    #[serde(default = "default_all_bundles_name")]
    pub default_all_bundles_name: String,
    /// Serve bundles as plain `trusted_ca` validation contexts instead of
    /// Envoy's SPIFFE certificate validator (an Envoy may override this per
    /// node with the node metadata key `disable_spiffe_cert_validation`).
    #[serde(default)]
    pub disable_spiffe_cert_validation: bool,
}

impl Default for SdsConfig {
    fn default() -> Self {
        SdsConfig {
            enabled: default_enabled(),
            socket_path: None,
            default_svid_name: default_svid_name(),
            default_bundle_name: default_bundle_name(),
            default_all_bundles_name: default_all_bundles_name(),
            disable_spiffe_cert_validation: false,
        }
    }
}

/// SDS is served unless turned off (SPIRE's `disable_sds_api = false`).
pub(crate) const DEFAULT_ENABLED: bool = true;
/// SPIRE's name for the caller's default X.509-SVID.
pub(crate) const DEFAULT_SVID_NAME: &str = "default";
/// SPIRE's name for the agent's trust domain bundle.
pub(crate) const DEFAULT_BUNDLE_NAME: &str = "ROOTCA";
/// SPIRE's name for every bundle in one validation context.
pub(crate) const DEFAULT_ALL_BUNDLES_NAME: &str = "ALL";

// serde's `default = "…"` takes a function: each returns its constant.
fn default_enabled() -> bool {
    DEFAULT_ENABLED
}
fn default_svid_name() -> String {
    DEFAULT_SVID_NAME.into()
}
fn default_bundle_name() -> String {
    DEFAULT_BUNDLE_NAME.into()
}
fn default_all_bundles_name() -> String {
    DEFAULT_ALL_BUNDLES_NAME.into()
}

/// Why an `[sds]` section cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum SdsConfigError {
    #[error("sds.{option} is empty: a resource name must be a non-empty string")]
    EmptyName { option: &'static str },
    #[error(
        "sds.{option} = {name:?} starts with \"spiffe://\": SPIFFE IDs and trust domain IDs are \
         resource names already, so the alias would be ambiguous"
    )]
    SpiffeName { option: &'static str, name: String },
    #[error("sds.{first} and sds.{second} are both {name:?}: each alias must name one resource")]
    DuplicateName {
        first: &'static str,
        second: &'static str,
        name: String,
    },
    #[error(
        "sds.socket_path is the Workload API socket ({path}): leave sds.socket_path out to serve \
         SDS on the Workload API socket"
    )]
    SameSocket { path: PathBuf },
}

impl SdsConfig {
    /// Checks the aliases are usable resource names and the socket is not
    /// the Workload API's (`workload_socket`).
    pub fn validate(&self, workload_socket: &Path) -> Result<(), SdsConfigError> {
        let names = [
            ("default_svid_name", &self.default_svid_name),
            ("default_bundle_name", &self.default_bundle_name),
            ("default_all_bundles_name", &self.default_all_bundles_name),
        ];
        for (option, name) in names {
            if name.is_empty() {
                return Err(SdsConfigError::EmptyName { option });
            }
            if name.starts_with("spiffe://") {
                return Err(SdsConfigError::SpiffeName {
                    option,
                    name: name.clone(),
                });
            }
        }
        for (i, (first, a)) in names.iter().enumerate() {
            if let Some((second, _)) = names[i + 1..].iter().find(|(_, b)| b == a) {
                return Err(SdsConfigError::DuplicateName {
                    first,
                    second,
                    name: (*a).clone(),
                });
            }
        }
        if self.socket_path.as_deref() == Some(workload_socket) {
            return Err(SdsConfigError::SameSocket {
                path: workload_socket.to_path_buf(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml_text: &str) -> SdsConfig {
        toml::from_str(toml_text).expect("sds config")
    }

    #[test]
    fn defaults_are_spires() {
        let c = parse("");
        assert_eq!(c, SdsConfig::default());
        assert!(c.enabled);
        assert_eq!(c.socket_path, None);
        assert_eq!(c.default_svid_name, "default");
        assert_eq!(c.default_bundle_name, "ROOTCA");
        assert_eq!(c.default_all_bundles_name, "ALL");
        assert!(!c.disable_spiffe_cert_validation);
        c.validate(Path::new("/run/api.sock"))
            .expect("defaults are valid");
    }

    #[test]
    fn unknown_option_is_refused() {
        let e = toml::from_str::<SdsConfig>("default_name = \"x\"").unwrap_err();
        assert!(e.to_string().contains("unknown field"), "{e}");
    }

    #[test]
    fn ambiguous_aliases_are_refused() {
        let sock = Path::new("/run/api.sock");
        let c = parse("default_svid_name = \"\"");
        assert_eq!(
            c.validate(sock),
            Err(SdsConfigError::EmptyName {
                option: "default_svid_name"
            })
        );
        let c = parse("default_bundle_name = \"spiffe://example.org\"");
        assert!(matches!(
            c.validate(sock),
            Err(SdsConfigError::SpiffeName {
                option: "default_bundle_name",
                ..
            })
        ));
        let c = parse("default_all_bundles_name = \"ROOTCA\"");
        let e = c.validate(sock).unwrap_err();
        assert_eq!(
            e,
            SdsConfigError::DuplicateName {
                first: "default_bundle_name",
                second: "default_all_bundles_name",
                name: "ROOTCA".into()
            }
        );
        assert!(e.to_string().contains("each alias must name one resource"));
    }

    #[test]
    fn the_agent_config_refuses_a_bad_sds_section() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.toml");
        let base = "trust_domain = \"example.org\"\nserver_address = \"127.0.0.1:1\"\n\
                    trust_bundle_path = \"/dev/null\"\n";
        std::fs::write(&path, format!("{base}[sds]\ndefault_svid_name = \"ALL\"\n")).unwrap();
        let e = format!("{:#}", crate::config::AgentConfig::load(&path).unwrap_err());
        assert!(
            e.contains("sds.default_svid_name and sds.default_all_bundles_name"),
            "{e}"
        );
        std::fs::write(&path, format!("{base}[sds]\nenabled = false\n")).unwrap();
        let c = crate::config::AgentConfig::load(&path).expect("valid");
        assert!(!c.sds.enabled);
        std::fs::write(&path, base).unwrap();
        assert_eq!(
            crate::config::AgentConfig::load(&path).unwrap().sds,
            SdsConfig::default()
        );
    }

    #[test]
    fn own_socket_must_differ_from_the_workload_api_socket() {
        let c = parse("socket_path = \"/run/api.sock\"");
        assert!(matches!(
            c.validate(Path::new("/run/api.sock")),
            Err(SdsConfigError::SameSocket { .. })
        ));
        c.validate(Path::new("/run/other.sock"))
            .expect("a separate socket is fine");
    }
}
