//! `[node_attestors.tpm]` to attestors: `tpm_ek` always, `tpm_devid` when there is a DevID
//! CA to trust (`devid_ca_bundle`, or the server's own with `devid_issuer = true`).

use std::path::PathBuf;
use std::sync::Arc;

use ironroot_tpm::verify::certchain::Anchors;

use super::policies::PolicySet;
use super::{anchors, TpmAttestor, TpmKind, TpmShared};
use crate::ca::devid_ca::DevIdCa;
use crate::config::TpmAttestorConfig;
use crate::node::nonce::NonceRegistry;
use crate::node::registry::BuildContext;
use crate::node::NodeAttestor;
use crate::run::StartError;

fn load(p: &Option<PathBuf>, key: &'static str) -> Result<Anchors, StartError> {
    match p {
        Some(p) => anchors::from_pem_file(p).map_err(|source| StartError::Anchors { key, source }),
        None => Ok(Anchors::default()),
    }
}

/// The TPM attestors `t` enables (the two share their settings and nonces).
pub(crate) fn build(
    t: &TpmAttestorConfig,
    ctx: &BuildContext<'_>,
) -> Result<Vec<Arc<dyn NodeAttestor>>, StartError> {
    let mut devid_anchors = load(&t.devid_ca_bundle, "node_attestors.tpm.devid_ca_bundle")?;
    let devid_ca = if t.devid_issuer {
        let ca = DevIdCa::open(
            ctx.key_manager.clone(),
            ctx.key_label_prefix,
            &ctx.trust_domain,
            &DevIdCa::default_cert_path(ctx.data_dir),
            (t.ldevid_ttl.as_secs() / 86400).max(1) as i64,
        )
        .map_err(StartError::DevIdCa)?;
        devid_anchors
            .add_der(&ca.cert_der)
            .map_err(StartError::DevIdAnchor)?;
        Some(Arc::new(ca))
    } else {
        None
    };
    let devid_enabled = !devid_anchors.is_empty();
    let shared = Arc::new(TpmShared {
        trust_domain: ctx.trust_domain.clone(),
        ek_anchors: load(&t.ek_ca_bundle, "node_attestors.tpm.ek_ca_bundle")?,
        ek_hash_allow_list: t.ek_hash_allow_list.clone(),
        devid_anchors,
        devid_ca,
        policies: PolicySet::load(
            &t.policies_dir,
            &t.policy_bindings,
            t.default_policy.clone(),
        )
        .map_err(StartError::Policies)?,
        nonces: Arc::new(NonceRegistry::new(ctx.max_pending_nonces)),
        challenge_ttl: ctx.challenge_ttl,
        require_tpm_agent_key: t.require_tpm_agent_key,
    });
    let mut attestors: Vec<Arc<dyn NodeAttestor>> = vec![Arc::new(TpmAttestor {
        kind: TpmKind::Ek,
        shared: shared.clone(),
    })];
    if devid_enabled {
        attestors.push(Arc::new(TpmAttestor {
            kind: TpmKind::DevId,
            shared,
        }));
    }
    Ok(attestors)
}
