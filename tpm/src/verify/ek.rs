//! The EK check of `tpm_ek` and `tpm_devid` attestation: the endorsement key is trusted when
//! 1. its public area is a restricted decryption key bound to its TPM (fixedTPM,
//!    fixedParent, restricted, decrypt; never sign): what the TCG EK templates make, and
//!    what MakeCredential to it relies on;
//! 2. and either its certificate chains to a manufacturer CA ([`certchain`], EK profile)
//!    and certifies exactly this key, or the SHA-256 of its SubjectPublicKeyInfo is on the
//!    operator's allow-list (TPMs without an EK certificate, or from an unlisted vendor).
//!
//! A certificate that chains but names another key is refused even for an allow-listed
//! EK: it is evidence of tampering, not a missing certificate. Each failure is one
//! [`EkError`] variant naming the rule; nothing here does I/O.

use der::Encode;
use sha2::{Digest, Sha256};

use crate::verify::certchain::{self, Anchors, CertProfile, ChainError};
use crate::verify::tpm2::{TpmError, TpmPublic};

/// Why an EK was not trusted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EkError {
    /// Rule 1: not a restricted decryption key bound to the TPM.
    #[error("the EK public area is not a restricted decryption key bound to the TPM")]
    NotAnEk,
    /// The EK's SubjectPublicKeyInfo cannot be formed.
    #[error("{0}")]
    MalformedPublic(#[source] TpmError),
    /// No certificate, and the EK is not allow-listed.
    #[error("the TPM sent no EK certificate and EK hash {ek_hash} is not on the allow-list")]
    NoCertificate {
        /// SHA-256 (hex) of the EK's SubjectPublicKeyInfo.
        ek_hash: String,
    },
    /// The certificate does not chain to a manufacturer CA (or breaks a rule), and the EK
    /// is not allow-listed.
    #[error("{source}; EK hash {ek_hash} is not on the allow-list either")]
    Untrusted {
        /// Why the chain was refused.
        #[source]
        source: ChainError,
        /// SHA-256 (hex) of the EK's SubjectPublicKeyInfo.
        ek_hash: String,
    },
    /// The certificate's SubjectPublicKeyInfo does not re-encode.
    #[error("{0}")]
    CertificateKey(#[source] der::Error),
    /// The certificate chains but certifies another key.
    #[error("the EK certificate's key is not the EK public key the TPM presented")]
    CertificateKeyMismatch,
}

impl EkError {
    /// The rule that failed, in an operator's words: what a rejection is filed under.
    pub fn rule(&self) -> &'static str {
        match self {
            Self::NotAnEk | Self::NoCertificate { .. } | Self::CertificateKeyMismatch => "EK",
            Self::MalformedPublic(_) => "EK public",
            Self::Untrusted { .. } | Self::CertificateKey(_) => "EK certificate",
        }
    }

    /// True when the evidence is malformed rather than well formed and refused.
    pub fn is_malformed(&self) -> bool {
        matches!(self, Self::MalformedPublic(_) | Self::CertificateKey(_))
    }
}

/// Checks `ek` with its DER `certificate` (empty: none sent) against `anchors` at `now`
/// (unix seconds) and `allow_list` (SHA-256 hex of EK SubjectPublicKeyInfos, any case).
/// Returns the EK hash, the device's identity under `tpm_ek`.
pub fn check_ek(
    ek: &TpmPublic,
    certificate: &[u8],
    anchors: &Anchors,
    allow_list: &[String],
    now: u64,
) -> Result<String, EkError> {
    let a = &ek.object_attributes;
    if !(a.fixed_tpm() && a.fixed_parent() && a.restricted() && a.decrypt()) || a.sign_encrypt() {
        return Err(EkError::NotAnEk);
    }
    let spki = ek.spki_der().map_err(EkError::MalformedPublic)?;
    let ek_hash = hex::encode(Sha256::digest(&spki));
    let allowed = allow_list.iter().any(|h| h.eq_ignore_ascii_case(&ek_hash));
    if certificate.is_empty() {
        return if allowed {
            Ok(ek_hash)
        } else {
            Err(EkError::NoCertificate { ek_hash })
        };
    }
    match certchain::verify(certificate, &[], anchors, now, CertProfile::Ek) {
        Ok(cert) => {
            let cert_spki = cert
                .tbs_certificate
                .subject_public_key_info
                .to_der()
                .map_err(EkError::CertificateKey)?;
            if !ek.matches_spki(&cert_spki) {
                return Err(EkError::CertificateKeyMismatch);
            }
            Ok(ek_hash)
        }
        Err(_) if allowed => Ok(ek_hash),
        Err(source) => Err(EkError::Untrusted { source, ek_hash }),
    }
}

#[cfg(test)]
mod tests;
