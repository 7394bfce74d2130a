//! The agent key behind rustls's signing seam: the agent's mTLS client authentication
//! signs in the TPM for a TPM-resident key, in memory for a software key.
//!
//! rustls hands the signer the whole message; the TPM hashes it itself (TPM2_Hash, with the
//! ticket a restricted key needs) and signs with ECDSA P-256 / SHA-256, the only scheme the
//! key has. The TPM takes at most 1024 bytes per TPM2_Hash, which a TLS 1.3
//! CertificateVerify (130 bytes) always fits; a TLS 1.2 client signature covers the whole
//! handshake transcript, which need not. So the agent's connections to the server are TLS
//! 1.3 only (`crate::connect`).
//!
//! Signing blocks the calling thread for one TPM command pair (milliseconds on swtpm, about
//! the time of one ECDSA signature on a hardware TPM); it happens once per handshake.

use std::sync::Arc;

use rustls::pki_types::{PrivateKeyDer, SubjectPublicKeyInfoDer};
use rustls::sign::{Signer, SigningKey};
use rustls::{SignatureAlgorithm, SignatureScheme};
use tracing::warn;

use crate::agent_key::{AgentKey, TpmAgentKey};

const SCHEME: SignatureScheme = SignatureScheme::ECDSA_NISTP256_SHA256;

/// The TPM-resident agent key as a rustls [`SigningKey`].
#[derive(Debug)]
pub(crate) struct TpmSigningKey(Arc<TpmAgentKey>);

impl TpmSigningKey {
    /// Wraps `key`.
    pub(crate) fn new(key: Arc<TpmAgentKey>) -> Self {
        TpmSigningKey(key)
    }
}

impl SigningKey for TpmSigningKey {
    fn choose_scheme(&self, offered: &[SignatureScheme]) -> Option<Box<dyn Signer>> {
        offered
            .contains(&SCHEME)
            .then(|| Box::new(TpmSigner(self.0.clone())) as Box<dyn Signer>)
    }

    fn public_key(&self) -> Option<SubjectPublicKeyInfoDer<'_>> {
        Some(SubjectPublicKeyInfoDer::from(self.0.spki_der()))
    }

    fn algorithm(&self) -> SignatureAlgorithm {
        SignatureAlgorithm::ECDSA
    }
}

#[derive(Debug)]
struct TpmSigner(Arc<TpmAgentKey>);

impl Signer for TpmSigner {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rustls::Error> {
        self.0.sign_der(message).map_err(|e| {
            warn!("the TPM could not sign the TLS handshake: {e}");
            rustls::Error::General(format!("the TPM could not sign with the agent key: {e}"))
        })
    }

    fn scheme(&self) -> SignatureScheme {
        SCHEME
    }
}

impl AgentKey {
    /// The key as rustls signs with it: in the TPM, or the software key through rustls's
    /// own provider.
    pub fn signing_key(&self) -> Result<Arc<dyn SigningKey>, rustls::Error> {
        match self {
            AgentKey::Tpm(k) => Ok(Arc::new(TpmSigningKey::new(k.clone()))),
            AgentKey::Software(pkcs8) => rustls::crypto::ring::default_provider()
                .key_provider
                .load_private_key(PrivateKeyDer::Pkcs8(pkcs8.to_vec().into())),
        }
    }
}

#[cfg(test)]
mod tests;
