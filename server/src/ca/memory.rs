//! `signing = "memory"`: X.509-SVIDs signed by a key in the server's memory.
//!
//! The HSM's active X.509 CA key certifies a fresh P-256 key as an intermediate CA
//! (pathLen 0, the trust domain's SPIFFE ID; `x509::signing_key_params`) for
//! `memory_key_ttl`, capped at the CA certificate's own notAfter; the key then signs every
//! X.509-SVID in process, and SVID chains carry its certificate. The bundle is unchanged (the
//! HSM CA's roots), so workloads validate as before. The key is made in memory and never
//! written anywhere: a restart makes a new one. It is replaced at every rotation check past
//! half its life, and whenever the HSM's active CA key changes; an SVID never outlives it.
//!
//! Why: the HSM signs one certificate per replacement instead of one per SVID (a small HSM's
//! few signatures per second no longer cap the fleet), and when the HSM goes away X.509-SVIDs
//! are still signed until the intermediate expires. The cost: a key that can issue SVIDs of
//! the trust domain (for at most `memory_key_ttl`) lives in the server's RAM, where a root
//! compromise of the server, a core dump or swap could expose it. JWT-SVIDs stay signed in the
//! HSM: a JWT carries no chain, so an in-memory JWT key would have to be published in the
//! bundle itself, trusted as fully as the HSM's keys, and every relying party would have to
//! refetch the bundle before each hourly key could be used.

use std::sync::Arc;

use ironroot_runtime::unix_now;
use rcgen::{Issuer, KeyPair, PublicKeyData};
use tracing::info;

use super::{
    x509, CaError, CertificateAuthority, CertificateError, IssuedX509Svid, JournalError,
    SigningMode,
};
use ironroot_api::spiffe_id::SpiffeId;

/// An in-memory signing key with its certificate.
pub(super) struct MemoryIssuer {
    issuer: Issuer<'static, KeyPair>,
    /// Its certificate, then what the certifying CA sends after its leaves (its own
    /// certificate and the upstream chain when it is an intermediate; nothing for a root).
    chain: Vec<Vec<u8>>,
    pub(super) not_before: i64,
    pub(super) not_after: i64,
    /// Label of the HSM key whose certificate certified it.
    certified_by: String,
}

impl MemoryIssuer {
    /// Past half its life, when the next rotation check replaces it.
    fn due(&self, now: i64) -> bool {
        now >= self.not_before + (self.not_after - self.not_before) / 2
    }
}

impl CertificateAuthority {
    /// In memory mode, certifies a new signing key when there is none, the current one is
    /// past half its life, or the HSM's active CA key is no longer the one that certified it.
    /// Returns whether a new key was made. On failure (the HSM unreachable) the current key
    /// keeps signing until it expires.
    pub(super) fn refresh_memory_key(&self, now: i64) -> Result<bool, CaError> {
        if self.settings.signing != SigningMode::Memory {
            return Ok(false);
        }
        let (active, current) = {
            let state = self.read_state()?;
            (state.x509.clone(), state.memory.clone())
        };
        let active = active.ok_or(CaError::NotReady("X.509"))?;
        if let Some(m) = &current {
            if m.certified_by == active.key_label && !m.due(now) {
                return Ok(false);
            }
        }
        let not_after = (now + self.settings.memory_key_ttl.as_secs() as i64).min(active.not_after);
        if not_after <= now {
            return Err(CaError::NotReady("unexpired X.509"));
        }
        // ring's P-256 key, generated in this process; its private half is never serialized.
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(CertificateError::Build)?;
        let params =
            x509::signing_key_params(&self.subject(), now - x509::BACKDATE_SECS, not_after)?;
        // The HSM's one signature for this key's whole life.
        let cert = params
            .signed_by(&key, &active.issuer)
            .map_err(|e| active.issuer_key().explain(e))?;
        let mut chain = Vec::with_capacity(1 + active.chain_after_leaf.len());
        chain.push(cert.der().to_vec());
        chain.extend(active.chain_after_leaf.iter().cloned());
        let issuer = Issuer::new(params, key);
        info!(
            certified_by = %active.key_label,
            not_after,
            serial = %x509::serial_hex(&chain[0]).unwrap_or_default(),
            "new in-memory X.509 signing key certified by the HSM"
        );
        let fresh = Arc::new(MemoryIssuer {
            issuer,
            chain,
            not_before: now,
            not_after,
            certified_by: active.key_label.clone(),
        });
        self.state
            .write()
            .map_err(|_| JournalError::LockPoisoned {
                what: "CA state lock",
            })?
            .memory = Some(fresh);
        Ok(true)
    }

    /// Signs an X.509-SVID with the in-memory key: no HSM call.
    pub(super) fn sign_x509_svid_in_memory(
        &self,
        public_key: &impl PublicKeyData,
        spiffe_id: &SpiffeId,
        ttl_seconds: u32,
        dns_names: &[String],
    ) -> Result<IssuedX509Svid, CaError> {
        let m = self
            .read_state()?
            .memory
            .clone()
            .ok_or(CaError::NotReady("X.509 (in-memory signing key)"))?;
        let now = unix_now();
        let ttl = super::ttl_secs(ttl_seconds, self.settings.default_x509_svid_ttl);
        // An SVID never outlives the key that signed it.
        let not_after = (now + ttl).min(m.not_after);
        if not_after <= now {
            return Err(CaError::SigningKeyExpired {
                expired_at: m.not_after,
            });
        }
        let params = x509::svid_params(spiffe_id, dns_names, now - x509::BACKDATE_SECS, not_after)?;
        let cert = params
            .signed_by(public_key, &m.issuer)
            .map_err(CertificateError::Build)?;
        let mut chain = Vec::with_capacity(1 + m.chain.len());
        chain.push(cert.der().to_vec());
        chain.extend(m.chain.iter().cloned());
        Ok(IssuedX509Svid {
            chain,
            expires_at: not_after,
        })
    }

    /// The in-memory signing key's notAfter (memory mode, once a key is certified).
    pub(super) fn memory_key_not_after(&self) -> Option<i64> {
        self.read_state().ok()?.memory.as_ref().map(|m| m.not_after)
    }
}
