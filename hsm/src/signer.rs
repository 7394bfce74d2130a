//! [`Signer`]: the handle the CA code uses to sign certificates and JWTs.

use std::fmt;
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::encoding::ecdsa_raw_to_der;
use crate::{HsmError, KeyAlgorithm, KeyInfo, KeyManager};

/// Signs through a [`KeyManager`] without ever holding the private key.
///
/// It is the key's public half plus a reference to the store that holds the private half;
/// cloning it is cheap. Hashing happens here (in the caller's process, which is fast and
/// leaks nothing) and only the 32-byte digest goes to the token.
#[derive(Clone)]
pub struct Signer {
    km: Arc<dyn KeyManager>,
    info: KeyInfo,
}

impl Signer {
    /// A signer for the key `info` (from [`KeyManager::generate`] or [`KeyManager::find`]) held by `km`.
    pub fn new(km: Arc<dyn KeyManager>, info: KeyInfo) -> Self {
        Signer { km, info }
    }

    /// The key's label in its store.
    pub fn label(&self) -> &str {
        &self.info.label
    }

    /// The key type.
    pub fn algorithm(&self) -> KeyAlgorithm {
        self.info.algorithm
    }

    /// The public key as DER SubjectPublicKeyInfo.
    pub fn public_key_der(&self) -> &[u8] {
        &self.info.public_key_der
    }

    /// The full public description of the key.
    pub fn key_info(&self) -> &KeyInfo {
        &self.info
    }

    /// The JWS `alg` header value for [`Signer::sign_jws`]: "ES256" or "RS256".
    pub fn jws_alg(&self) -> &'static str {
        self.info.algorithm.jws_alg()
    }

    /// X.509 signature value over `msg` (the DER TBSCertificate): ecdsa-with-SHA256 as a DER
    /// Ecdsa-Sig-Value, or sha256WithRSAEncryption.
    pub fn sign_x509(&self, msg: &[u8]) -> Result<Vec<u8>, HsmError> {
        let sig = self.sign_sha256(msg)?;
        match self.info.algorithm {
            KeyAlgorithm::EcP256 => ecdsa_raw_to_der(&sig),
            KeyAlgorithm::Rsa3072 => Ok(sig),
        }
    }

    /// JWS signature over `msg` (the signing input `header.payload`): ES256 as raw r||s
    /// (RFC 7518 section 3.4), or RS256.
    pub fn sign_jws(&self, msg: &[u8]) -> Result<Vec<u8>, HsmError> {
        self.sign_sha256(msg)
    }

    fn sign_sha256(&self, msg: &[u8]) -> Result<Vec<u8>, HsmError> {
        let digest = Sha256::digest(msg);
        self.km.sign_digest(&self.info.label, &digest)
    }
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signer")
            .field("label", &self.info.label)
            .field("algorithm", &self.info.algorithm)
            .field("store", &self.km.describe())
            .finish()
    }
}
