//! TPM2_Sign with a key resident in the TPM: a digest made outside (non-restricted keys),
//! or a message hashed inside the TPM with a ticket (what a restricted key requires).
//!
//! A restricted signing key signs a digest only with a TPM2_Hash ticket proving the TPM
//! hashed the data itself and that the data did not start with TPM_GENERATED_VALUE
//! (0xFF544347): so such a key can never sign something a verifier would take for a TPM
//! attestation. TLS 1.3 CertificateVerify content starts with 64 spaces and a DER CSR with
//! 0x30, so the TPM issues the ticket for every message the agent key signs.

use tss_esapi::constants::tss::{TPM2_RH_NULL, TPM2_ST_HASHCHECK};
use tss_esapi::interface_types::algorithm::HashingAlgorithm;
use tss_esapi::interface_types::resource_handles::Hierarchy;
use tss_esapi::interface_types::session_handles::AuthSession;
use tss_esapi::structures::{Digest, HashcheckTicket, MaxBuffer, Signature, SignatureScheme};
use tss_esapi::tss2_esys::TPMT_TK_HASHCHECK;

use super::{DeviceError, LoadedKey, Tpm};

const SIGN: &str = "Sign";
const HASH: &str = "Hash";

/// TPM_GENERATED_VALUE as the first bytes of a message: the TPM refuses to vouch that it
/// did not generate such data.
const TPM_GENERATED: [u8; 4] = 0xff54_4347u32.to_be_bytes();

/// The largest message TPM2_Hash takes in one command (MAX_DIGEST_BUFFER; 1024 on every
/// TPM the TCG PC Client profile allows).
pub const MAX_SIGNED_MESSAGE: usize = MaxBuffer::MAX_SIZE;

fn tss(op: &'static str) -> impl FnOnce(tss_esapi::Error) -> DeviceError {
    DeviceError::tpm(op)
}

/// Left-pads a big-endian integer to `len` bytes (`None` if it is longer).
pub(crate) fn pad(v: &[u8], len: usize) -> Option<Vec<u8>> {
    let v = &v[v.iter().take_while(|&&b| b == 0).count()..];
    let mut out = vec![0u8; len.checked_sub(v.len())?];
    out.extend_from_slice(v);
    Some(out)
}

/// A TPMT_SIGNATURE as raw bytes: r||s (32 bytes each) for ECDSA P-256, the signature for
/// RSA.
fn raw_signature(sig: Signature) -> Result<Vec<u8>, DeviceError> {
    match sig {
        Signature::EcDsa(s) => {
            let r = pad(s.signature_r().value(), 32);
            let s = pad(s.signature_s().value(), 32);
            match (r, s) {
                (Some(r), Some(s)) => Ok([r, s].concat()),
                _ => Err(DeviceError::unexpected(
                    SIGN,
                    "ECDSA r or s longer than 32 bytes",
                )),
            }
        }
        Signature::RsaSsa(s) | Signature::RsaPss(s) => Ok(s.signature().value().to_vec()),
        other => Err(DeviceError::unexpected(
            SIGN,
            format!("unexpected signature scheme {:?}", other.algorithm()),
        )),
    }
}

impl Tpm {
    /// Signs a SHA-256 `digest` with a non-restricted signing key (its own scheme): raw
    /// r||s (32 bytes each) for ECDSA, the signature bytes for RSA.
    pub fn sign_digest(&mut self, key: &LoadedKey, digest: &[u8]) -> Result<Vec<u8>, DeviceError> {
        if digest.len() != 32 {
            return Err(DeviceError::invalid(
                SIGN,
                format!("a SHA-256 digest is 32 bytes, not {}", digest.len()),
            ));
        }
        let digest = Digest::try_from(digest.to_vec()).map_err(tss(SIGN))?;
        // A null ticket: the TPM only needs one for restricted keys.
        let ticket = HashcheckTicket::try_from(TPMT_TK_HASHCHECK {
            tag: TPM2_ST_HASHCHECK,
            hierarchy: TPM2_RH_NULL,
            digest: Default::default(),
        })
        .map_err(tss(SIGN))?;
        self.sign_with_ticket(key, digest, ticket)
    }

    /// Signs `message` with a signing key whose scheme hashes with SHA-256, restricted or
    /// not: TPM2_Hash in the owner hierarchy gives the digest and the ticket TPM2_Sign
    /// wants for a restricted key. Raw r||s for ECDSA. At most [`MAX_SIGNED_MESSAGE`]
    /// bytes; a message starting with TPM_GENERATED_VALUE is refused (no TPM would
    /// ticket it).
    pub fn sign_message(
        &mut self,
        key: &LoadedKey,
        message: &[u8],
    ) -> Result<Vec<u8>, DeviceError> {
        if message.starts_with(&TPM_GENERATED) {
            return Err(DeviceError::invalid(
                SIGN,
                "the message starts with TPM_GENERATED_VALUE (0xff544347): a restricted key \
                 never signs what could pass for a TPM attestation",
            ));
        }
        let data = MaxBuffer::try_from(message.to_vec()).map_err(|_| {
            DeviceError::invalid(
                SIGN,
                format!(
                    "{} bytes to sign; TPM2_Hash takes at most {MAX_SIGNED_MESSAGE}",
                    message.len()
                ),
            )
        })?;
        let (digest, ticket) = self
            .ctx
            .execute_without_session(|c| c.hash(data, HashingAlgorithm::Sha256, Hierarchy::Owner))
            .map_err(tss(HASH))?;
        self.sign_with_ticket(key, digest, ticket)
    }

    fn sign_with_ticket(
        &mut self,
        key: &LoadedKey,
        digest: Digest,
        ticket: HashcheckTicket,
    ) -> Result<Vec<u8>, DeviceError> {
        let sig = self.with_key(&key.slot, |tpm, h| {
            tpm.ctx
                .execute_with_session(Some(AuthSession::Password), |c| {
                    c.sign(h, digest, SignatureScheme::Null, ticket)
                })
                .map_err(tss(SIGN))
        })?;
        raw_signature(sig)
    }
}

#[cfg(test)]
mod tests;
