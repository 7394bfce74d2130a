//! The cloud node attestors (`aws_iid`, `gcp_iit`, `azure_msi`, `azure_imds`), built with the `cloud`
//! cargo feature (on by default for the server): one file each, the verification itself in
//! `ironroot-cloud-attest` (pure, offline). Each attests a node once (trust on first use,
//! SPIRE's rule): [`NodeAttestor::can_reattest`] is false, so the service refuses an agent
//! ID already in the store until an operator evicts it.

mod aws_iid;
mod azure_imds;
mod azure_msi;
mod gcp_iit;
mod key_file;
mod key_url;
mod keys;

use std::sync::Arc;
use std::time::SystemTime;

use ironroot_api::spiffe_id::{SpiffeId, TrustDomain};

use super::registry::BuildContext;
use super::{AttestError, Attested, NodeAttestor};
use crate::config::NodeAttestorConfig;
use crate::run::StartError;

/// The attestor a cloud `[node_attestors.<name>]` section enables.
pub(super) fn build(
    section: &NodeAttestorConfig,
    ctx: &BuildContext<'_>,
) -> Result<Vec<Arc<dyn NodeAttestor>>, StartError> {
    let td = ctx.trust_domain.clone();
    Ok(match section {
        NodeAttestorConfig::AwsIid(c) => vec![Arc::new(aws_iid::AwsIidAttestor::new(c, td)?)],
        NodeAttestorConfig::GcpIit(c) => vec![Arc::new(gcp_iit::GcpIitAttestor::new(c, td)?)],
        NodeAttestorConfig::AzureMsi(c) => {
            vec![Arc::new(azure_msi::AzureMsiAttestor::new(c, td)?)]
        }
        NodeAttestorConfig::AzureImds(c) => {
            vec![Arc::new(azure_imds::AzureImdsAttestor::new(c, td)?)]
        }
        _ => Vec::new(),
    })
}

/// What a verified identity gives the service: the agent ID from the verifier's path (its
/// segments already checked) and its selector values, unprefixed.
fn attested(
    td: &TrustDomain,
    path: Result<String, ironroot_cloud_attest::InvalidAgentPath>,
    selectors: Vec<String>,
) -> Result<Attested, AttestError> {
    let path = path.map_err(|e| AttestError::rejected("agent id", e.to_string()))?;
    let agent_id = SpiffeId::from_path(td, &path)
        .map_err(|e| AttestError::rejected("agent id", e.to_string()))?;
    Ok(Attested {
        agent_id,
        selectors,
        boot_policy: None,
        devid_chain: Vec::new(),
    })
}

fn now() -> SystemTime {
    SystemTime::now()
}

/// The check a JWT refusal names (`gcp_iit`, `azure_msi`).
fn jwt_check(e: &ironroot_cloud_attest::jwt::JwtError) -> &'static str {
    use ironroot_cloud_attest::jwt::JwtError as E;
    match e {
        E::UnknownKeyId { .. } | E::BadSignature { .. } | E::MissingKeyId => "token signature",
        _ => "token",
    }
}

/// The check a claim refusal names.
fn claim_check(e: &ironroot_cloud_attest::jwt::ClaimError) -> &'static str {
    use ironroot_cloud_attest::jwt::ClaimError as E;
    match e {
        E::Expired { .. } | E::NotYetValid { .. } | E::IssuedInFuture { .. } => "token lifetime",
        E::WrongAudience { .. } => "token audience",
        E::WrongIssuer { .. } => "token issuer",
        _ => "token claims",
    }
}
