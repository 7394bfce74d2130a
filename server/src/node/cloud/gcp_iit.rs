//! `gcp_iit`: a GCE instance identity token (RS256 JWT, `format=full`; the agent's payload
//! is the token itself, as SPIRE sends it), verified by `ironroot_cloud_attest::gcp_iit`
//! against Google's keys from `certs_path` or `certs_url`. Agent ID
//! `spiffe://<td>/spire/agent/gcp_iit/<project>/<instance id>`; attests once.

use ironroot_api::spiffe_id::TrustDomain;
use ironroot_cloud_attest::gcp_iit::{self, GcpIitConfig, GcpIitError};

use super::super::refusal::bad_evidence;
use super::super::{AttestError, Begun, Evidence, NodeAttestor};
use super::keys::{FetchOptions, Keys};
use crate::config::GcpIitAttestorConfig;
use crate::run::StartError;

const NAME: &str = gcp_iit::ATTESTOR;

pub(super) struct GcpIitAttestor {
    keys: Keys,
    /// Everything but the keys (filled per attestation from `keys`).
    config: GcpIitConfig,
    trust_domain: TrustDomain,
}

impl GcpIitAttestor {
    pub(super) fn new(
        c: &GcpIitAttestorConfig,
        trust_domain: TrustDomain,
    ) -> Result<Self, StartError> {
        let bad = |reason: String| StartError::NodeAttestor {
            key: NAME.into(),
            reason,
        };
        if c.projectid_allow_list.is_empty() {
            return Err(bad(
                "projectid_allow_list is empty: list the projects whose instances may attest"
                    .into(),
            ));
        }
        let keys = Keys::open(
            ("certs_path", c.certs_path.clone()),
            ("certs_url", c.certs_url.clone()),
            &FetchOptions {
                ca_file: c.keys_ca_file.clone(),
                timeout: c.keys_fetch_timeout,
                max_age_floor: c.keys_max_age_floor,
                max_age_ceiling: c.keys_max_age_ceiling,
            },
        )
        .map_err(bad)?;
        let mut config =
            GcpIitConfig::new(Default::default(), c.projectid_allow_list.iter().cloned());
        config.audience = c.audience.clone();
        config.clock_skew = c.clock_skew;
        Ok(GcpIitAttestor {
            keys,
            config,
            trust_domain,
        })
    }
}

fn check(e: &GcpIitError) -> &'static str {
    match e {
        GcpIitError::Token(t) => super::jwt_check(t),
        GcpIitError::Claims(c) => super::claim_check(c),
        GcpIitError::ProjectNotAllowed { .. } => "projectid_allow_list",
        GcpIitError::AgentPath(_) => "agent id",
        _ => "token claims",
    }
}

impl NodeAttestor for GcpIitAttestor {
    fn name(&self) -> &'static str {
        NAME
    }

    fn can_reattest(&self) -> bool {
        false
    }

    fn begin(&self, evidence: &Evidence<'_>) -> Result<Begun, AttestError> {
        let token = std::str::from_utf8(evidence.payload)
            .map_err(|e| bad_evidence(NAME, "the identity token (a JWT) as UTF-8 text", e))?;
        let id = self
            .keys
            .verify(
                |keys| {
                    let config = GcpIitConfig {
                        keys,
                        ..self.config.clone()
                    };
                    gcp_iit::verify(&config, token.trim(), super::now())
                },
                |e| match e {
                    GcpIitError::Token(t) => Some(t),
                    _ => None,
                },
            )?
            .map_err(|e| AttestError::rejected(check(&e), e.to_string()))?;
        super::attested(&self.trust_domain, id.agent_path(), id.selectors()).map(Begun::Done)
    }
}
