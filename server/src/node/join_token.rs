//! The `join_token` attestor, for labs without a TPM: an operator creates a
//! single-use token with a TTL (`ironroot-server token generate`), the agent
//! presents it once (its payload: the token, UTF-8, as SPIRE sends it). Only the
//! token's SHA-256 is stored. No challenge.

use std::sync::Arc;

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use ironroot_api::spiffe_id::{SpiffeId, TrustDomain};
use ironroot_runtime::unix_now;
use rand::RngCore;
use sha2::{Digest, Sha256};

use super::refusal::bad_evidence;
use super::registry::BuildContext;
use super::{AttestError, Attested, Begun, Evidence, NodeAttestor};
use crate::config::JoinTokenConfig;
use crate::store::{DataStore, StoreError};

pub(crate) const NAME: &str = "join_token";

fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Creates and records a token valid for `ttl_secs`; returns it and its expiry.
pub(crate) async fn create(
    store: &dyn DataStore,
    ttl_secs: i64,
) -> Result<(String, i64), StoreError> {
    let mut raw = [0u8; 24];
    rand::thread_rng().fill_bytes(&mut raw);
    let token = URL_SAFE_NO_PAD.encode(raw);
    let expires_at = unix_now() + ttl_secs;
    store
        .put_join_token(&token_hash(&token), expires_at)
        .await?;
    Ok((token, expires_at))
}

/// `[node_attestors.join_token]`: the attestor, unless `enabled = false`.
pub(super) fn build(cfg: &JoinTokenConfig, ctx: &BuildContext<'_>) -> Vec<Arc<dyn NodeAttestor>> {
    if !cfg.enabled {
        return Vec::new();
    }
    vec![Arc::new(JoinTokenAttestor {
        store: ctx.store.clone(),
        trust_domain: ctx.trust_domain.clone(),
    })]
}

pub(crate) struct JoinTokenAttestor {
    pub(crate) store: Arc<dyn DataStore>,
    pub(crate) trust_domain: TrustDomain,
}

impl NodeAttestor for JoinTokenAttestor {
    fn name(&self) -> &'static str {
        NAME
    }

    /// A token is single use: the node renews over mTLS.
    fn can_reattest(&self) -> bool {
        false
    }

    fn begin(&self, evidence: &Evidence<'_>) -> Result<Begun, AttestError> {
        let token = std::str::from_utf8(evidence.payload)
            .map_err(|e| bad_evidence(NAME, "the token as UTF-8 text", e))?;
        let token = token.trim();
        if token.is_empty() {
            return Err(AttestError::malformed(
                "join token",
                "no join token was sent",
            ));
        }
        if token.len() > 256 {
            return Err(AttestError::malformed(
                "join token",
                "the join token is longer than 256 bytes",
            ));
        }
        let hash = token_hash(token);
        // Attestors run on the blocking pool.
        let expires_at = crate::store::bridge::wait(self.store.take_join_token(&hash))
            .map_err(|e| AttestError::internal("join token", format!("store: {e}")))?
            .ok_or_else(|| {
                AttestError::rejected("join token", "unknown or already used join token")
            })?;
        let now = unix_now();
        if now > expires_at {
            return Err(AttestError::rejected(
                "join token",
                format!("the join token expired {}s ago", now - expires_at),
            ));
        }
        // The agent ID names the token's hash, never the token itself.
        let id = SpiffeId::agent(&self.trust_domain, "join_token", &hex::encode(&hash[..16]))
            .map_err(|e| AttestError::rejected("agent id", e.to_string()))?;
        Ok(Begun::Done(Attested {
            agent_id: id,
            selectors: vec!["attested".into()],
            boot_policy: None,
            devid_chain: Vec::new(),
        }))
    }
}
