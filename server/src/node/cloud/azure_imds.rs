//! `azure_imds`: Azure IMDS attested data over a nonce this server chose (SPIRE's flow).
//! The agent's first payload carries nothing; the server answers with a challenge, a fresh
//! nonce of 32 letters and digits; the agent fetches
//! `/metadata/attested/document?nonce=<nonce>` from IMDS and answers with SPIRE's JSON
//! `{"document": {"encoding", "signature"}, "metadata": {"agentDomain", "vmssName"}}`.
//! `ironroot_cloud_attest::azure_imds` verifies the PKCS#7 over the exact signed content,
//! the chain of exactly the certificate that signed (to `root_certificates`, through
//! `intermediate_certificates`), the signer's DNS name, the nonce, the document's lifetime,
//! and the tenant and subscription allow-lists. Agent ID
//! `spiffe://<td>/spire/agent/azure_imds/<tenant id>/<subscription id>/<vm id>`; attests
//! once (the `vmId` is the trust-on-first-use key, through the agent ID).

use std::path::Path;
use std::sync::Arc;

use ironroot_api::spiffe_id::TrustDomain;
use ironroot_cloud_attest::azure_imds::{
    self, AzureImdsConfig, AzureImdsError, ChallengeResponse, ParsedAttestedDocument, TenantConfig,
};
use rand::Rng;
use rustls_pki_types::CertificateDer;

use super::super::refusal::bad_answer;
use super::super::{AttestError, Attested, Begun, Evidence, NodeAttestor, PendingAttestation};
use crate::config::AzureImdsAttestorConfig;
use crate::run::StartError;

const NAME: &str = azure_imds::ATTESTOR;

/// The challenge's length, SPIRE's: 32 characters of `[A-Za-z0-9]`.
pub(crate) const NONCE_LEN: usize = 32;

/// What the attestor trusts (shared with each pending exchange).
struct Trust {
    config: AzureImdsConfig,
    intermediates: Vec<CertificateDer<'static>>,
    trust_domain: TrustDomain,
}

pub(super) struct AzureImdsAttestor {
    trust: Arc<Trust>,
}

fn pem_certificates(option: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let text = std::fs::read(path).map_err(|e| format!("{option} {}: {e}", path.display()))?;
    ironroot_api::bundle::certificates_from_pem(&text)
        .map(|ders| ders.into_iter().map(CertificateDer::from).collect())
        .map_err(|e| format!("{option} {}: {e}", path.display()))
}

impl AzureImdsAttestor {
    pub(super) fn new(
        c: &AzureImdsAttestorConfig,
        trust_domain: TrustDomain,
    ) -> Result<Self, StartError> {
        let bad = |reason: String| StartError::NodeAttestor {
            key: NAME.into(),
            reason,
        };
        if c.tenants.is_empty() {
            return Err(bad(
                "tenants is empty: add a [node_attestors.azure_imds.tenants.\"<tenant domain>\"] \
                 section (with its tenant_id) for each tenant whose VMs may attest"
                    .into(),
            ));
        }
        if let Some((domain, _)) = c.tenants.iter().find(|(_, t)| t.tenant_id.is_empty()) {
            return Err(bad(format!(
                "tenants.\"{domain}\".tenant_id is empty: set the tenant's ID (a GUID)"
            )));
        }
        if c.allowed_metadata_domains.is_empty() {
            return Err(bad(
                "allowed_metadata_domains is empty: no signer could be accepted (the default is \
                 [\"metadata.azure.com\"])"
                    .into(),
            ));
        }
        let roots = pem_certificates("root_certificates", &c.root_certificates).map_err(bad)?;
        for (i, r) in roots.iter().enumerate() {
            webpki::anchor_from_trusted_cert(r).map_err(|e| {
                bad(format!(
                    "root_certificates {}: certificate {} is not usable as a root: {e:?}",
                    c.root_certificates.display(),
                    i + 1
                ))
            })?;
        }
        let intermediates = match &c.intermediate_certificates {
            Some(p) => pem_certificates("intermediate_certificates", p).map_err(bad)?,
            None => Vec::new(),
        };
        let mut config = AzureImdsConfig::new(
            roots,
            c.tenants
                .iter()
                .map(|(domain, t)| {
                    (
                        domain.clone(),
                        TenantConfig {
                            tenant_id: t.tenant_id.clone(),
                            restrict_to_subscriptions: t
                                .restrict_to_subscriptions
                                .iter()
                                .cloned()
                                .collect(),
                        },
                    )
                })
                .collect(),
        );
        config.allowed_metadata_domains = c.allowed_metadata_domains.clone();
        config.clock_skew = c.clock_skew;
        Ok(AzureImdsAttestor {
            trust: Arc::new(Trust {
                config,
                intermediates,
                trust_domain,
            }),
        })
    }
}

/// A fresh challenge: 32 characters of `[A-Za-z0-9]` (SPIRE's form; IMDS puts it in the
/// signed content as given), uniformly drawn.
fn nonce() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::thread_rng();
    (0..NONCE_LEN)
        .map(|_| char::from(ALPHABET[rng.gen_range(0..ALPHABET.len())]))
        .collect()
}

/// The check an `azure_imds` refusal names.
fn check(e: &AzureImdsError) -> &'static str {
    match e {
        AzureImdsError::Pkcs7(_) => "signature",
        AzureImdsError::UntrustedSigner { .. } | AzureImdsError::IssuerUrl { .. } => {
            "signer certificate chain"
        }
        AzureImdsError::SignerNameNotAllowed { .. } => "allowed_metadata_domains",
        AzureImdsError::NonceMismatch { .. } => "nonce",
        AzureImdsError::Expired { .. } | AzureImdsError::CreatedInFuture { .. } => {
            "document lifetime"
        }
        AzureImdsError::TenantNotAllowed { .. } => "tenants",
        AzureImdsError::SubscriptionNotAllowed { .. } => "restrict_to_subscriptions",
        AzureImdsError::AgentPath(_) => "agent id",
        _ => "attested document",
    }
}

fn refused(e: AzureImdsError) -> AttestError {
    match e {
        AzureImdsError::MalformedDocument { .. } | AzureImdsError::MalformedContent { .. } => {
            AttestError::malformed(check(&e), e.to_string())
        }
        _ => AttestError::rejected(check(&e), e.to_string()),
    }
}

impl NodeAttestor for AzureImdsAttestor {
    fn name(&self) -> &'static str {
        NAME
    }

    fn can_reattest(&self) -> bool {
        false
    }

    /// The evidence carries nothing (SPIRE's agent sends a placeholder): every node gets a
    /// challenge.
    fn begin(&self, _evidence: &Evidence<'_>) -> Result<Begun, AttestError> {
        let nonce = nonce();
        Ok(Begun::Challenge(
            nonce.clone().into_bytes(),
            Box::new(PendingAzureImds {
                trust: self.trust.clone(),
                nonce,
            }),
        ))
    }
}

/// An exchange waiting for the document signed over its nonce (the service bounds the
/// wait by `node_api.challenge_ttl`).
struct PendingAzureImds {
    trust: Arc<Trust>,
    nonce: String,
}

impl PendingAttestation for PendingAzureImds {
    fn finish(self: Box<Self>, response: &[u8]) -> Result<Attested, AttestError> {
        let form = "JSON {\"document\": {\"encoding\", \"signature\"}, \"metadata\"}";
        let answer = ChallengeResponse::from_json(response)
            .map_err(|e| bad_answer(NAME, form, response, e))?;
        let doc = ParsedAttestedDocument::parse(&answer.document).map_err(refused)?;
        let t = &self.trust;
        let id = doc
            .verify(
                &t.config,
                &t.intermediates,
                &self.nonce,
                &answer.metadata,
                super::now(),
            )
            .map_err(refused)?;
        debug_assert!(!id.can_reattest());
        super::attested(&t.trust_domain, id.agent_path(), id.selectors())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonces_are_32_letters_and_digits_and_differ() {
        let (a, b) = (nonce(), nonce());
        assert_eq!(a.len(), NONCE_LEN);
        assert!(a.bytes().all(|c| c.is_ascii_alphanumeric()), "{a}");
        assert_ne!(a, b);
    }
}
