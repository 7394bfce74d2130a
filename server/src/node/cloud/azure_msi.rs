//! `azure_msi`: an Azure managed-identity access token (the agent's payload, SPIRE's JSON
//! `{"token"}`), verified by `ironroot_cloud_attest::azure_msi` against Entra ID's JWKS
//! from `jwks_path` or `jwks_url` and the tenant's audience. Agent ID
//! `spiffe://<td>/spire/agent/azure_msi/<tenant id>/<principal id>`; attests once.

use ironroot_api::spiffe_id::TrustDomain;
use ironroot_cloud_attest::azure_msi::{
    self, AttestationData, AzureMsiConfig, AzureMsiError, TenantConfig,
};

use super::super::refusal::bad_evidence;
use super::super::{AttestError, Begun, Evidence, NodeAttestor};
use super::keys::{FetchOptions, Keys};
use crate::config::AzureMsiAttestorConfig;
use crate::run::StartError;

const NAME: &str = azure_msi::ATTESTOR;

pub(super) struct AzureMsiAttestor {
    keys: Keys,
    config: AzureMsiConfig,
    trust_domain: TrustDomain,
}

impl AzureMsiAttestor {
    pub(super) fn new(
        c: &AzureMsiAttestorConfig,
        trust_domain: TrustDomain,
    ) -> Result<Self, StartError> {
        let bad = |reason: String| StartError::NodeAttestor {
            key: NAME.into(),
            reason,
        };
        if c.tenants.is_empty() {
            return Err(bad(
                "tenants is empty: add a [node_attestors.azure_msi.tenants.\"<tenant id>\"] \
                 section for each tenant whose VMs may attest"
                    .into(),
            ));
        }
        let keys = Keys::open(
            ("jwks_path", c.jwks_path.clone()),
            ("jwks_url", c.jwks_url.clone()),
            &FetchOptions {
                ca_file: c.keys_ca_file.clone(),
                timeout: c.keys_fetch_timeout,
                max_age_floor: c.keys_max_age_floor,
                max_age_ceiling: c.keys_max_age_ceiling,
            },
        )
        .map_err(bad)?;
        let config = AzureMsiConfig {
            keys: Default::default(),
            tenants: c
                .tenants
                .iter()
                .map(|(tid, t)| {
                    (
                        tid.clone(),
                        TenantConfig {
                            resource_id: t.resource_id.clone(),
                        },
                    )
                })
                .collect(),
            clock_skew: c.clock_skew,
        };
        Ok(AzureMsiAttestor {
            keys,
            config,
            trust_domain,
        })
    }
}

fn check(e: &AzureMsiError) -> &'static str {
    match e {
        AzureMsiError::Token(t) => super::jwt_check(t),
        AzureMsiError::Claims(c) => super::claim_check(c),
        AzureMsiError::TenantNotAllowed { .. } => "tenants",
        AzureMsiError::AgentPath(_) => "agent id",
        _ => "token claims",
    }
}

impl NodeAttestor for AzureMsiAttestor {
    fn name(&self) -> &'static str {
        NAME
    }

    fn can_reattest(&self) -> bool {
        false
    }

    fn begin(&self, evidence: &Evidence<'_>) -> Result<Begun, AttestError> {
        let data = AttestationData::from_json(evidence.payload)
            .map_err(|e| bad_evidence(NAME, "JSON {\"token\"}", e))?;
        let id = self
            .keys
            .verify(
                |keys| {
                    let config = AzureMsiConfig {
                        keys,
                        ..self.config.clone()
                    };
                    azure_msi::verify(&config, &data.token, super::now())
                },
                |e| match e {
                    AzureMsiError::Token(t) => Some(t),
                    _ => None,
                },
            )?
            .map_err(|e| AttestError::rejected(check(&e), e.to_string()))?;
        super::attested(&self.trust_domain, id.agent_path(), id.selectors()).map(Begun::Done)
    }
}
