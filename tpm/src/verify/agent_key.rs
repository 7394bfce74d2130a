//! The agent SVID key held in the TPM: what the server requires of its public area, and the
//! check of the TPM2_Certify by the AK that proves the key lives in the attested TPM.
//!
//! Invariants, for a key an agent presents as TPM-resident (each failure is an
//! [`AgentKeyError`] variant naming the rule):
//! 1. The public area is an ECC NIST P-256 key whose scheme is ECDSA with SHA-256 and whose
//!    attributes include [`AGENT_KEY_REQUIRED_ATTRIBUTES`] (fixedTPM, fixedParent,
//!    sensitiveDataOrigin, restricted, sign) with decrypt clear; its nameAlg is SHA-256 or
//!    stronger. fixedTPM + fixedParent: the private key can never be duplicated out of this
//!    TPM. sensitiveDataOrigin: the TPM generated it (it was never imported, so it never
//!    existed outside). restricted: the key can sign only digests the TPM computed itself
//!    over data that does not start with TPM_GENERATED_VALUE, so even root on the node
//!    cannot make it sign something that looks like a TPM attestation.
//! 2. The CSR's key is exactly that public area's key ([`check_agent_key`]): a software key
//!    cannot be presented as TPM-resident.
//! 3. A TPMS_ATTEST of type certify, signed by the attested AK, names exactly that public
//!    area (Name = nameAlg || H_nameAlg(TPMT_PUBLIC)) and carries this attestation's nonce
//!    as extraData ([`check_agent_key_certify`]): the key is loaded in the TPM that holds
//!    the AK, now.
//!
//! The AK itself must already be bound to the EK (credential activation) and checked with
//! [`TpmPublic::ensure_attestation_key`]; this module does not repeat that.

use crate::verify::eventlog::HashAlg;
use crate::verify::tpm2::{
    verify_signature, Attest, Attested, EccCurve, KeyScheme, ObjectAttributes, PublicKey, TpmError,
    TpmPublic, TpmSignature,
};

/// TPMA_OBJECT bits an agent key must have: fixedTPM | fixedParent | sensitiveDataOrigin |
/// restricted | sign.
pub const AGENT_KEY_REQUIRED_ATTRIBUTES: ObjectAttributes =
    ObjectAttributes((1 << 1) | (1 << 4) | (1 << 5) | (1 << 16) | (1 << 18));

/// The attributes the agent creates its key with: [`AGENT_KEY_REQUIRED_ATTRIBUTES`] plus
/// userWithAuth (signing is authorized with the key's empty auth value, as for the AK) and
/// noDA. With an empty auth value there is nothing to guess, and dictionary-attack
/// protection only hurts: after a power loss (no TPM2_Shutdown) that followed the use of a
/// DA-protected key, the TPM counts one authorization failure at its next startup, so an
/// edge gateway that loses power a few times (3 on swtpm) finds its keys locked out.
pub const AGENT_KEY_TEMPLATE_ATTRIBUTES: ObjectAttributes =
    ObjectAttributes(AGENT_KEY_REQUIRED_ATTRIBUTES.0 | (1 << 6) | (1 << 10));

/// Why a key presented as TPM-resident was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AgentKeyError {
    /// The public area (TPM2B_PUBLIC) does not parse.
    #[error("the agent key's public area does not parse: {0}")]
    MalformedPublic(#[source] TpmError),
    /// Not an ECC P-256 key with scheme ECDSA-SHA256.
    #[error("the agent key must be an ECC NIST P-256 key with scheme ECDSA-SHA256, not {found}")]
    Algorithm {
        /// What the public area holds.
        found: String,
    },
    /// Required attributes are missing, or decrypt is set.
    #[error(
        "the agent key's attributes {found} lack {missing} (required: fixedTPM, fixedParent, \
         sensitiveDataOrigin, restricted, sign; decrypt clear)"
    )]
    Attributes {
        /// The attributes presented.
        found: ObjectAttributes,
        /// What is missing or wrongly set, comma separated.
        missing: String,
    },
    /// The Name would be computed with a hash weaker than SHA-256.
    #[error("the agent key's nameAlg is {found}; SHA-256 or stronger is required")]
    NameAlg {
        /// The nameAlg presented.
        found: HashAlg,
    },
    /// The CSR carries another key than the presented public area (for example a software
    /// key presented as TPM-resident).
    #[error(
        "the CSR's key is not the TPM-resident key presented (a software key cannot be \
         presented as TPM-resident): {0}"
    )]
    CsrKeyMismatch(#[source] TpmError),
    /// The certify attestation or its signature does not parse.
    #[error("the agent key certify does not parse: {0}")]
    MalformedCertify(#[source] TpmError),
    /// The certify is not signed by the attested AK.
    #[error("the agent key certify is not signed by the attested AK: {0}")]
    NotSignedByAk(#[source] TpmError),
    /// The attestation is of another type (a quote, ...).
    #[error("the agent key attestation is a {found}, not a TPM2_Certify")]
    NotACertify {
        /// The attestation type found.
        found: String,
    },
    /// The AK certified another object.
    #[error(
        "the AK certified another key than the one presented (certified name {certified}, \
         presented key's name {presented}): the presented key is not in this TPM"
    )]
    OtherKeyCertified {
        /// The Name in the certify (hex).
        certified: String,
        /// The presented public area's Name (hex).
        presented: String,
    },
    /// extraData is not this attestation's nonce.
    #[error(
        "the agent key certify was made over another nonce than this attestation's \
         (expected {expected}, attested {found})"
    )]
    Nonce {
        /// The nonce issued (hex).
        expected: String,
        /// extraData in the certify (hex).
        found: String,
    },
}

/// Rule 1 and 2: parses the presented TPM2B_PUBLIC, checks its algorithm, scheme,
/// attributes and nameAlg, and that `csr_spki_der` (the CSR's SubjectPublicKeyInfo) is
/// that key. Returns the parsed public area for [`check_agent_key_certify`].
pub fn check_agent_key(
    public_tpm2b: &[u8],
    csr_spki_der: &[u8],
) -> Result<TpmPublic, AgentKeyError> {
    let key = TpmPublic::from_tpm2b(public_tpm2b).map_err(AgentKeyError::MalformedPublic)?;
    check_shape(&key)?;
    key.check_spki(csr_spki_der)
        .map_err(AgentKeyError::CsrKeyMismatch)?;
    Ok(key)
}

/// Rule 1 alone, on a parsed public area (the agent checks its own key with it too).
pub fn check_shape(key: &TpmPublic) -> Result<(), AgentKeyError> {
    let p256 = matches!(
        key.key,
        PublicKey::Ecc {
            curve: EccCurve::NistP256,
            ..
        }
    );
    if !p256 || key.scheme != Some(KeyScheme::Ecdsa(HashAlg::Sha256)) {
        let alg = match &key.key {
            PublicKey::Rsa { modulus, .. } => format!("RSA-{}", modulus.len() * 8),
            PublicKey::Ecc { curve, .. } => format!("ECC {curve}"),
        };
        let scheme = match key.scheme {
            None => "no scheme".to_string(),
            Some(s) => format!("scheme {s:?}"),
        };
        return Err(AgentKeyError::Algorithm {
            found: format!("{alg} with {scheme}"),
        });
    }
    let a = key.object_attributes;
    let missing = a.missing_for_restricted_signing();
    if !missing.is_empty() {
        return Err(AgentKeyError::Attributes {
            found: a,
            missing: missing.join(", "),
        });
    }
    if matches!(key.name_alg, HashAlg::Sha1) {
        return Err(AgentKeyError::NameAlg {
            found: key.name_alg,
        });
    }
    Ok(())
}

/// Rule 3: `attest` (TPMS_ATTEST) and `signature` (TPMT_SIGNATURE) are a TPM2_Certify of
/// `key` by `ak` over `nonce`. The signature is checked before anything the attestation
/// says is believed.
pub fn check_agent_key_certify(
    ak: &TpmPublic,
    key: &TpmPublic,
    nonce: &[u8],
    attest: &[u8],
    signature: &[u8],
) -> Result<(), AgentKeyError> {
    let parsed = Attest::parse(attest).map_err(AgentKeyError::MalformedCertify)?;
    let sig = TpmSignature::parse(signature).map_err(AgentKeyError::MalformedCertify)?;
    verify_signature(ak, attest, &sig).map_err(AgentKeyError::NotSignedByAk)?;
    let name = match &parsed.attested {
        Attested::Certify { name, .. } => name,
        Attested::Quote { .. } => {
            return Err(AgentKeyError::NotACertify {
                found: "quote".into(),
            })
        }
        Attested::Other(t) => {
            return Err(AgentKeyError::NotACertify {
                found: format!("TPM_ST {t:#06x} attestation"),
            })
        }
    };
    let presented = key.name();
    if *name != presented {
        return Err(AgentKeyError::OtherKeyCertified {
            certified: hex::encode(name),
            presented: hex::encode(presented),
        });
    }
    if parsed.extra_data != nonce {
        return Err(AgentKeyError::Nonce {
            expected: hex::encode(nonce),
            found: hex::encode(&parsed.extra_data),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests;
