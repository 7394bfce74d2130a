//! The Envoy `Secret` messages SDS serves, in SPIRE's shapes: an X.509-SVID
//! as a `tls_certificate` (PEM chain, PEM PKCS#8 key, both inline), a bundle
//! as a `validation_context`: Envoy's SPIFFE certificate validator config
//! (`envoy.tls.cert_validator.spiffe`, one entry per trust domain) for an
//! Envoy that can use it, else a plain `trusted_ca`.

use envoy_types::pb::envoy::config::core::v3::{
    data_source::Specifier, node::UserAgentVersionType, DataSource, Node, TypedExtensionConfig,
};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    secret, spiffe_cert_validator_config::TrustDomain as SpiffeTrustDomain,
    CertificateValidationContext, Secret, SpiffeCertValidatorConfig, TlsCertificate,
};
use envoy_types::pb::google::protobuf::value::Kind;
use envoy_types::util::pack_any;

use crate::cache::CachedSvid;

/// The name Envoy registers its SPIFFE certificate validator under.
pub(crate) const SPIFFE_VALIDATOR: &str = "envoy.tls.cert_validator.spiffe";

/// The node metadata key with which an Envoy overrides
/// `sds.disable_spiffe_cert_validation` for itself (as with SPIRE).
pub(crate) const DISABLE_SPIFFE_VALIDATION_KEY: &str = "disable_spiffe_cert_validation";

/// How bundles are expressed to one Envoy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BundleFormat {
    /// `custom_validator_config` with a `SPIFFECertValidatorConfig`: Envoy
    /// checks the peer's SPIFFE ID against the bundle of its own trust domain.
    SpiffeValidator,
    /// `trusted_ca`: the roots only (Envoy before 1.18, or validation disabled).
    TrustedCa,
}

impl BundleFormat {
    /// SPIRE's rule: the SPIFFE validator unless it is disabled (by the node's
    /// metadata, else by the configuration) or the node reports a structured
    /// build version older than 1.18. A node that reports no version gets it.
    pub(super) fn for_node(node: Option<&Node>, disabled_by_config: bool) -> BundleFormat {
        let disabled = node
            .and_then(|n| n.metadata.as_ref())
            .and_then(|m| m.fields.get(DISABLE_SPIFFE_VALIDATION_KEY))
            .and_then(|v| metadata_bool(v.kind.as_ref()?))
            .unwrap_or(disabled_by_config);
        if disabled || !supports_spiffe_validator(node) {
            BundleFormat::TrustedCa
        } else {
            BundleFormat::SpiffeValidator
        }
    }
}

/// A boolean as Go's `strconv.ParseBool` reads one (SPIRE accepts a bool or
/// such a string); anything else is ignored, leaving the configured value.
fn metadata_bool(kind: &Kind) -> Option<bool> {
    match kind {
        Kind::BoolValue(b) => Some(*b),
        Kind::StringValue(s) => match s.as_str() {
            "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
            "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

fn supports_spiffe_validator(node: Option<&Node>) -> bool {
    let version = match node.and_then(|n| n.user_agent_version_type.as_ref()) {
        Some(UserAgentVersionType::UserAgentBuildVersion(b)) => b.version.as_ref(),
        _ => None,
    };
    match version {
        Some(v) => v.major_number > 1 || (v.major_number == 1 && v.minor_number > 17),
        None => true,
    }
}

/// DER certificates (or a DER key) as PEM blocks with LF line endings.
fn pem_blocks(tag: &str, ders: &[Vec<u8>]) -> Vec<u8> {
    let config = pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF);
    ders.iter()
        .map(|d| pem::encode_config(&pem::Pem::new(tag, d.clone()), config))
        .collect::<String>()
        .into_bytes()
}

fn inline(bytes: Vec<u8>) -> Option<DataSource> {
    Some(DataSource {
        specifier: Some(Specifier::InlineBytes(bytes)),
        ..Default::default()
    })
}

/// The SVID and its key under `name` (its SPIFFE ID, or the default alias).
pub(super) fn tls_certificate(name: &str, svid: &CachedSvid) -> Secret {
    Secret {
        name: name.to_string(),
        r#type: Some(secret::Type::TlsCertificate(TlsCertificate {
            certificate_chain: inline(pem_blocks("CERTIFICATE", &svid.chain)),
            private_key: inline(pem_blocks(
                "PRIVATE KEY",
                std::slice::from_ref(&svid.key_pkcs8),
            )),
            ..Default::default()
        })),
    }
}

/// One trust domain's roots, by name (`example.org`, not `spiffe://example.org`).
pub(super) struct BundleRoots<'a> {
    pub trust_domain: &'a str,
    pub roots: &'a [Vec<u8>],
}

/// A validation context named `name` holding `bundles` (one for a trust
/// domain resource, all of them for the all-bundles alias). `TrustedCa`
/// holds exactly one bundle: the caller checks that before asking for more.
pub(super) fn validation_context(
    name: &str,
    bundles: &[BundleRoots<'_>],
    format: BundleFormat,
) -> Secret {
    let context = match format {
        BundleFormat::TrustedCa => CertificateValidationContext {
            trusted_ca: inline(
                bundles
                    .iter()
                    .flat_map(|b| pem_blocks("CERTIFICATE", b.roots))
                    .collect(),
            ),
            ..Default::default()
        },
        BundleFormat::SpiffeValidator => {
            let mut trust_domains: Vec<SpiffeTrustDomain> = bundles
                .iter()
                .map(|b| SpiffeTrustDomain {
                    name: b.trust_domain.to_string(),
                    trust_bundle: inline(pem_blocks("CERTIFICATE", b.roots)),
                    ..Default::default()
                })
                .collect();
            trust_domains.sort_by(|a, b| a.name.cmp(&b.name));
            CertificateValidationContext {
                custom_validator_config: Some(TypedExtensionConfig {
                    name: SPIFFE_VALIDATOR.to_string(),
                    typed_config: Some(pack_any(SpiffeCertValidatorConfig {
                        trust_domains,
                        ..Default::default()
                    })),
                }),
                ..Default::default()
            }
        }
    };
    Secret {
        name: name.to_string(),
        r#type: Some(secret::Type::ValidationContext(context)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::core::v3::BuildVersion;
    use envoy_types::pb::envoy::r#type::v3::SemanticVersion;
    use envoy_types::pb::google::protobuf::{Struct, Value};

    fn node(version: Option<(u32, u32)>, disable: Option<Kind>) -> Node {
        let mut n = Node::default();
        if let Some((major_number, minor_number)) = version {
            n.user_agent_version_type =
                Some(UserAgentVersionType::UserAgentBuildVersion(BuildVersion {
                    version: Some(SemanticVersion {
                        major_number,
                        minor_number,
                        patch: 0,
                    }),
                    metadata: None,
                }));
        }
        if let Some(kind) = disable {
            let mut s = Struct::default();
            s.fields.insert(
                DISABLE_SPIFFE_VALIDATION_KEY.into(),
                Value { kind: Some(kind) },
            );
            n.metadata = Some(s);
        }
        n
    }

    #[test]
    fn spiffe_validator_from_envoy_1_18_or_when_the_version_is_unknown() {
        use BundleFormat::*;
        assert_eq!(BundleFormat::for_node(None, false), SpiffeValidator);
        assert_eq!(
            BundleFormat::for_node(Some(&node(None, None)), false),
            SpiffeValidator
        );
        assert_eq!(
            BundleFormat::for_node(Some(&node(Some((1, 17)), None)), false),
            TrustedCa
        );
        assert_eq!(
            BundleFormat::for_node(Some(&node(Some((1, 18)), None)), false),
            SpiffeValidator
        );
        assert_eq!(
            BundleFormat::for_node(Some(&node(Some((2, 0)), None)), false),
            SpiffeValidator
        );
        assert_eq!(BundleFormat::for_node(None, true), TrustedCa);
    }

    #[test]
    fn node_metadata_overrides_the_configuration() {
        use BundleFormat::*;
        let on = node(None, Some(Kind::BoolValue(true)));
        assert_eq!(BundleFormat::for_node(Some(&on), false), TrustedCa);
        let off = node(None, Some(Kind::StringValue("false".into())));
        assert_eq!(BundleFormat::for_node(Some(&off), true), SpiffeValidator);
        // Not a boolean: the configured value stands.
        let junk = node(None, Some(Kind::StringValue("maybe".into())));
        assert_eq!(BundleFormat::for_node(Some(&junk), true), TrustedCa);
        assert_eq!(BundleFormat::for_node(Some(&junk), false), SpiffeValidator);
        // Re-enabled by metadata, an old Envoy still cannot use the validator.
        let old = node(Some((1, 16)), Some(Kind::BoolValue(false)));
        assert_eq!(BundleFormat::for_node(Some(&old), false), TrustedCa);
    }

    #[test]
    fn spiffe_validator_lists_trust_domains_in_name_order() {
        let a = vec![vec![1u8, 2, 3]];
        let b = vec![vec![4u8, 5]];
        let s = validation_context(
            "ALL",
            &[
                BundleRoots {
                    trust_domain: "zeta.org",
                    roots: &b,
                },
                BundleRoots {
                    trust_domain: "alpha.org",
                    roots: &a,
                },
            ],
            BundleFormat::SpiffeValidator,
        );
        let Some(secret::Type::ValidationContext(v)) = s.r#type else {
            panic!("validation context expected")
        };
        let c = v.custom_validator_config.expect("custom validator");
        assert_eq!(c.name, SPIFFE_VALIDATOR);
        let any = c.typed_config.expect("typed config");
        let cfg: SpiffeCertValidatorConfig = prost::Message::decode(&any.value[..]).unwrap();
        let names: Vec<&str> = cfg.trust_domains.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["alpha.org", "zeta.org"]);
        let Some(Specifier::InlineBytes(pem_a)) = cfg.trust_domains[0]
            .trust_bundle
            .as_ref()
            .and_then(|d| d.specifier.clone())
        else {
            panic!("inline bundle expected")
        };
        assert_eq!(pem::parse(&pem_a).unwrap().contents(), &[1, 2, 3]);
    }
}
