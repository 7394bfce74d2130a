//! `aws_iid`: an EC2 instance identity document with AWS's RSA-2048 PKCS#7 signature
//! (the agent's payload, SPIRE's JSON `{"document", "signature", "rsa2048"}`), verified by
//! `ironroot_cloud_attest::aws_iid` against the region's configured AWS certificate; the
//! identity comes only from the signed content. Agent ID
//! `spiffe://<td>/spire/agent/aws_iid/<account>/<region>/<instance id>`; attests once.

use ironroot_api::spiffe_id::TrustDomain;
use ironroot_cloud_attest::aws_iid::{self, AttestationData, AwsIidConfig, AwsIidError};

use super::super::refusal::bad_evidence;
use super::super::{AttestError, Begun, Evidence, NodeAttestor};
use crate::config::AwsIidAttestorConfig;
use crate::run::StartError;

const NAME: &str = aws_iid::ATTESTOR;

pub(super) struct AwsIidAttestor {
    config: AwsIidConfig,
    trust_domain: TrustDomain,
}

impl AwsIidAttestor {
    pub(super) fn new(
        c: &AwsIidAttestorConfig,
        trust_domain: TrustDomain,
    ) -> Result<Self, StartError> {
        let bad = |reason: String| StartError::NodeAttestor {
            key: NAME.into(),
            reason,
        };
        if c.region_certificates.is_empty() {
            return Err(bad(
                "region_certificates is empty: add AWS's RSA-2048 certificate of each region \
                 whose instances may attest"
                    .into(),
            ));
        }
        let mut config = AwsIidConfig::new();
        for (region, path) in &c.region_certificates {
            let pem = std::fs::read(path).map_err(|e| {
                bad(format!(
                    "region_certificates.{region} {}: {e}",
                    path.display()
                ))
            })?;
            let certs = pem::parse_many(&pem).map_err(|e| {
                bad(format!(
                    "region_certificates.{region} {}: not PEM: {e}",
                    path.display()
                ))
            })?;
            let certs: Vec<_> = certs.iter().filter(|p| p.tag() == "CERTIFICATE").collect();
            if certs.is_empty() {
                return Err(bad(format!(
                    "region_certificates.{region} {}: no CERTIFICATE in it",
                    path.display()
                )));
            }
            for cert in certs {
                config
                    .add_region_certificate(region, cert.contents())
                    .map_err(|e| bad(format!("region_certificates.{region}: {e}")))?;
            }
        }
        config.account_allow_list = c
            .account_allow_list
            .as_ref()
            .map(|l| l.iter().cloned().collect());
        Ok(AwsIidAttestor {
            config,
            trust_domain,
        })
    }
}

/// The check an `aws_iid` refusal names.
fn check(e: &AwsIidError) -> &'static str {
    match e {
        AwsIidError::UnsignedCopyDiffers => "unsigned document",
        AwsIidError::MalformedDocument { .. } | AwsIidError::DocumentMissing => "document",
        AwsIidError::UnknownRegion { .. } => "region",
        AwsIidError::AccountNotAllowed { .. } => "account_allow_list",
        AwsIidError::CertificateExpired { .. } => "region certificate",
        AwsIidError::AgentPath(_) => "agent id",
        _ => "signature",
    }
}

impl NodeAttestor for AwsIidAttestor {
    fn name(&self) -> &'static str {
        NAME
    }

    fn can_reattest(&self) -> bool {
        false
    }

    fn begin(&self, evidence: &Evidence<'_>) -> Result<Begun, AttestError> {
        let data = AttestationData::from_json(evidence.payload).map_err(|e| {
            bad_evidence(NAME, "JSON {\"document\", \"signature\", \"rsa2048\"}", e)
        })?;
        let id = aws_iid::verify(&self.config, &data, super::now())
            .map_err(|e| AttestError::rejected(check(&e), e.to_string()))?;
        debug_assert!(!id.can_reattest());
        super::attested(&self.trust_domain, id.agent_path(), id.selectors()).map(Begun::Done)
    }
}
