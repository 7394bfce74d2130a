//! The DevID checks of `tpm_devid` attestation and LDevID enrollment (IEEE 802.1AR, TCG
//! "TPM 2.0 Keys for Device Identity and Attestation"):
//! 1. the DevID certificate chains to a configured DevID CA ([`certchain`], DevID profile),
//!    the chain bounded in count and size before any signature is checked;
//! 2. the DevID key is an ECC P-256, fixedTPM + fixedParent signing key, and the attested
//!    AK certified it with TPM2_Certify ([`certified_key`]): the key lives in the AK's TPM;
//! 3. the certificate's key is that key;
//! 4. the key signed this challenge's nonce ([`DevIdKey::check_nonce_signature`]).
//!
//! Each failure is one [`DevIdError`] variant naming the rule; nothing here does I/O.

use der::Encode;
use ring::signature::{UnparsedPublicKey, ECDSA_P256_SHA256_FIXED};
use sha2::{Digest, Sha256};
use x509_cert::Certificate;

use crate::verify::certchain::{self, Anchors, CertProfile, ChainError};
use crate::verify::tpm2::{
    verify_signature, Attest, Attested, EccCurve, PublicKey, TpmError, TpmPublic, TpmSignature,
};

/// Most certificates (leaf + intermediates) in a DevID chain.
pub const MAX_DEVID_CHAIN: usize = 5;
/// Most bytes in a DevID chain.
pub const MAX_DEVID_CHAIN_BYTES: usize = 64 * 1024;

/// Why a DevID was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DevIdError {
    /// More certificates or bytes than [`MAX_DEVID_CHAIN`] / [`MAX_DEVID_CHAIN_BYTES`]:
    /// refused before any signature is checked, since chain building costs a verification
    /// per try.
    #[error(
        "the DevID chain has {certificates} certificates / {bytes} bytes; the limits are \
         {MAX_DEVID_CHAIN} / {MAX_DEVID_CHAIN_BYTES}"
    )]
    ChainTooLarge {
        /// Certificates sent.
        certificates: usize,
        /// Bytes sent.
        bytes: usize,
    },
    /// The chain is empty.
    #[error("no DevID certificate was sent")]
    NoCertificate,
    /// The certificate does not chain to a DevID CA, or breaks a profile rule.
    #[error("{0}")]
    Chain(#[source] ChainError),
    /// The certificate's SubjectPublicKeyInfo does not re-encode.
    #[error("{0}")]
    CertificateKey(#[source] der::Error),
    /// The certificate's key is not the DevID key the TPM presented.
    #[error("the DevID certificate's key is not the DevID key the TPM presented")]
    CertificateKeyMismatch,
    /// The DevID public area (TPM2B_PUBLIC) does not parse.
    #[error("{0}")]
    MalformedPublic(#[source] TpmError),
    /// Not an ECC P-256 key.
    #[error("unsupported DevID key algorithm: ironroot DevIDs are ECC P-256 keys")]
    KeyAlgorithm,
    /// fixedTPM, fixedParent or sign is missing: the key could leave its TPM, or not sign.
    #[error("the DevID key must be a fixedTPM, fixedParent signing key")]
    KeyAttributes,
    /// The certify attestation does not parse.
    #[error("{0}")]
    MalformedCertify(#[source] TpmError),
    /// The certify signature does not parse.
    #[error("{0}")]
    MalformedCertifySignature(#[source] TpmError),
    /// The certify is not signed by the attested AK.
    #[error("not signed by the attested AK: {0}")]
    CertifyNotSignedByAk(#[source] TpmError),
    /// The attestation is of another type (a quote, ...).
    #[error("the attestation is not a TPM2_Certify")]
    NotACertify,
    /// The AK certified another object.
    #[error("the AK certified another key than the DevID key: the DevID key is not in this TPM")]
    OtherKeyCertified,
    /// The DevID key did not sign the nonce.
    #[error("the DevID key did not sign this challenge's nonce")]
    NonceSignature,
}

impl DevIdError {
    /// The rule that failed, in an operator's words: what a rejection is filed under.
    pub fn rule(&self) -> &'static str {
        match self {
            Self::ChainTooLarge { .. } | Self::NoCertificate => "DevID",
            Self::KeyAlgorithm | Self::KeyAttributes | Self::CertificateKeyMismatch => "DevID",
            Self::Chain(_) | Self::CertificateKey(_) => "DevID certificate",
            Self::MalformedPublic(_) => "DevID public",
            Self::MalformedCertify(_) | Self::NotACertify | Self::OtherKeyCertified => {
                "DevID certify"
            }
            Self::CertifyNotSignedByAk(_) => "DevID certify",
            Self::MalformedCertifySignature(_) => "DevID certify signature",
            Self::NonceSignature => "DevID signature",
        }
    }

    /// True when the evidence is malformed (does not parse, or is out of bounds) rather
    /// than well formed and refused.
    pub fn is_malformed(&self) -> bool {
        matches!(
            self,
            Self::ChainTooLarge { .. }
                | Self::NoCertificate
                | Self::CertificateKey(_)
                | Self::MalformedPublic(_)
                | Self::MalformedCertify(_)
                | Self::MalformedCertifySignature(_)
        )
    }
}

/// The DevID key, once its certificate and certification check out.
#[derive(Debug, Clone)]
pub struct DevIdKey {
    /// The uncompressed P-256 point of the certificate's key.
    spki_point: Vec<u8>,
}

impl DevIdKey {
    /// The DevID key signed SHA-256(`nonce`) (ECDSA P-256, raw r||s).
    pub fn check_nonce_signature(&self, nonce: &[u8], sig: &[u8]) -> Result<(), DevIdError> {
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &self.spki_point)
            .verify(nonce, sig)
            .map_err(|_| DevIdError::NonceSignature)
    }
}

/// A DevID whose certificate chains to a DevID CA and whose key the AK certified.
#[derive(Debug, Clone)]
pub struct CheckedDevId {
    /// The DevID certificate, parsed.
    pub cert: Certificate,
    /// SHA-256 of the DevID certificate's DER, hex: the device's identity.
    pub fingerprint: String,
    /// Its key, to check the nonce signature with.
    pub key: DevIdKey,
}

/// The DevID evidence of a `tpm_devid` attestation.
#[derive(Debug, Clone, Copy)]
pub struct DevIdEvidence<'a> {
    /// The DevID certificate (DER) then its intermediates.
    pub chain: &'a [Vec<u8>],
    /// TPM2B_PUBLIC of the DevID key.
    pub public: &'a [u8],
    /// TPMS_ATTEST of the TPM2_Certify of the DevID key by the AK.
    pub certify_attest: &'a [u8],
    /// TPMT_SIGNATURE of that certify.
    pub certify_signature: &'a [u8],
}

/// Rules 1 to 3: the certificate chains to `anchors` at `now` (unix seconds), the AK
/// certified the DevID key, and the certificate's key is that key.
pub fn check_devid(
    evidence: &DevIdEvidence<'_>,
    ak: &TpmPublic,
    anchors: &Anchors,
    now: u64,
) -> Result<CheckedDevId, DevIdError> {
    let chain = evidence.chain;
    let bytes: usize = chain.iter().map(Vec::len).sum();
    if chain.len() > MAX_DEVID_CHAIN || bytes > MAX_DEVID_CHAIN_BYTES {
        return Err(DevIdError::ChainTooLarge {
            certificates: chain.len(),
            bytes,
        });
    }
    let (leaf, rest) = chain.split_first().ok_or(DevIdError::NoCertificate)?;
    let cert = certchain::verify(leaf, rest, anchors, now, CertProfile::DevId)
        .map_err(DevIdError::Chain)?;
    let devid = certified_key(
        ak,
        evidence.public,
        evidence.certify_attest,
        evidence.certify_signature,
    )?;
    let spki = cert
        .tbs_certificate
        .subject_public_key_info
        .to_der()
        .map_err(DevIdError::CertificateKey)?;
    if !devid.matches_spki(&spki) {
        return Err(DevIdError::CertificateKeyMismatch);
    }
    let point = cert
        .tbs_certificate
        .subject_public_key_info
        .subject_public_key
        .raw_bytes()
        .to_vec();
    Ok(CheckedDevId {
        fingerprint: hex::encode(Sha256::digest(leaf)),
        cert,
        key: DevIdKey { spki_point: point },
    })
}

/// Rule 2: a DevID key (TPM2B_PUBLIC `public`) the AK certified with TPM2_Certify: proof
/// it lives in the AK's TPM. Also what an LDevID enrollment proves of the key it asks a
/// certificate for.
pub fn certified_key(
    ak: &TpmPublic,
    public: &[u8],
    certify_attest: &[u8],
    certify_signature: &[u8],
) -> Result<TpmPublic, DevIdError> {
    let devid = TpmPublic::from_tpm2b(public).map_err(DevIdError::MalformedPublic)?;
    if !matches!(
        devid.key,
        PublicKey::Ecc {
            curve: EccCurve::NistP256,
            ..
        }
    ) {
        return Err(DevIdError::KeyAlgorithm);
    }
    let a = &devid.object_attributes;
    if !(a.fixed_tpm() && a.fixed_parent() && a.sign_encrypt()) {
        return Err(DevIdError::KeyAttributes);
    }
    let attest = Attest::parse(certify_attest).map_err(DevIdError::MalformedCertify)?;
    let sig =
        TpmSignature::parse(certify_signature).map_err(DevIdError::MalformedCertifySignature)?;
    verify_signature(ak, certify_attest, &sig).map_err(DevIdError::CertifyNotSignedByAk)?;
    let Attested::Certify { name, .. } = &attest.attested else {
        return Err(DevIdError::NotACertify);
    };
    if *name != devid.name() {
        return Err(DevIdError::OtherKeyCertified);
    }
    Ok(devid)
}
