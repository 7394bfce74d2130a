//! Adapters that let rcgen sign with a key it never holds: an HSM key reached
//! through `ironroot_hsm::Signer`, or an upstream CA key loaded from a file.

use std::sync::Mutex;

use der::Decode;
use ironroot_hsm::{HsmError, KeyAlgorithm, Signer};
use rcgen::{PublicKeyData, SignatureAlgorithm, SigningKey};
use spki::SubjectPublicKeyInfoRef;

use super::{CaError, CertificateError, KeyError, SigningError};

/// An HSM-held key usable as an rcgen issuer. Signing happens in the token.
pub struct HsmKey {
    signer: Signer,
    /// subjectPublicKey bits of the SPKI (EC point or RSAPublicKey DER), as rcgen wants them.
    raw_public_key: Vec<u8>,
    algorithm: &'static SignatureAlgorithm,
    /// rcgen's error type carries no detail, so the token's error is kept here.
    last_error: Mutex<Option<HsmError>>,
}

impl HsmKey {
    /// Wraps `signer` for rcgen. Fails with [`KeyError::PublicKey`] (as a [`CaError::Key`])
    /// when the token's public key is not a DER SubjectPublicKeyInfo.
    pub fn new(signer: Signer) -> Result<Self, CaError> {
        let spki =
            SubjectPublicKeyInfoRef::from_der(signer.public_key_der()).map_err(|source| {
                KeyError::PublicKey {
                    label: signer.label().to_string(),
                    source,
                }
            })?;
        let raw_public_key = spki.subject_public_key.raw_bytes().to_vec();
        let algorithm = match signer.algorithm() {
            KeyAlgorithm::EcP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            KeyAlgorithm::Rsa3072 => &rcgen::PKCS_RSA_SHA256,
        };
        Ok(HsmKey {
            signer,
            raw_public_key,
            algorithm,
            last_error: Mutex::new(None),
        })
    }

    /// Turns an rcgen failure into an error that carries the token's reason.
    pub(crate) fn explain(&self, e: rcgen::Error) -> CaError {
        let detail = self.last_error.lock().ok().and_then(|mut g| g.take());
        match detail {
            Some(source) if e == rcgen::Error::RemoteKeyError => SigningError::X509 {
                label: self.signer.label().to_string(),
                source,
            }
            .into(),
            _ => CertificateError::Build(e).into(),
        }
    }
}

impl PublicKeyData for HsmKey {
    fn der_bytes(&self) -> &[u8] {
        &self.raw_public_key
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        self.algorithm
    }
}

impl SigningKey for HsmKey {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        self.signer.sign_x509(msg).map_err(|e| {
            if let Ok(mut g) = self.last_error.lock() {
                *g = Some(e);
            }
            rcgen::Error::RemoteKeyError
        })
    }
}

/// The key of an upstream CA: in a second token, or (less safely) a PEM file.
pub(crate) enum UpstreamKey {
    Hsm(HsmKey),
    File(rcgen::KeyPair),
}

impl PublicKeyData for UpstreamKey {
    fn der_bytes(&self) -> &[u8] {
        match self {
            UpstreamKey::Hsm(k) => k.der_bytes(),
            UpstreamKey::File(k) => k.der_bytes(),
        }
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        match self {
            UpstreamKey::Hsm(k) => PublicKeyData::algorithm(k),
            UpstreamKey::File(k) => PublicKeyData::algorithm(k),
        }
    }
}

impl SigningKey for UpstreamKey {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        match self {
            UpstreamKey::Hsm(k) => k.sign(msg),
            UpstreamKey::File(k) => k.sign(msg),
        }
    }
}
