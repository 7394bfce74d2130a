//! Key management for ironroot.
//!
//! ironroot's CA keys live in a PKCS#11 token and never leave it. This crate is the only place
//! that talks to the token: the rest of the server holds a [`Signer`] (an `Arc<dyn KeyManager>`
//! plus the public half of a key) and asks it for signatures, so no code path ever needs, or can
//! obtain, private key bytes.
//!
//! * [`Pkcs11KeyManager`]: the production implementation over `cryptoki` (module path, token
//!   label, PIN from a file or an environment variable, one logged-in session per core).
//! * `TransitKeyManager` (cargo feature `transit`): keys in the transit engine of an OpenBao
//!   or Vault server, non-exportable, signing prehashed digests over the Vault HTTP API.
//! * [`SoftwareKeyManager`]: PKCS#8 files in a directory, for development only.
//!
//! Every error is an [`HsmError`] whose `Display` text is complete on its own: it names what
//! failed and what an operator can do about it, so logging `%err` is enough.
//!
//! A token that becomes unreachable at runtime (an HSM that drops off the network, a p11-kit
//! server that goes away, a device error) is not fatal: calls fail fast with
//! [`HsmError::Unreachable`], [`KeyManager::health`] says so, and the PKCS#11 key manager
//! reconnects by itself (re-initialising the module) once the token answers again.
//!
//! The integration tests (`tests/`) run against a real SoftHSM2 and set `SOFTHSM2_CONF` per
//! process: run them with `cargo nextest run -p ironroot-hsm`.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod encoding;
mod error;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod pkcs11;
mod secret_file;
mod signer;
mod software;
#[cfg(feature = "transit")]
mod transit;
mod transit_error;

use std::fmt;
use std::str::FromStr;

pub use error::HsmError;
pub use pkcs11::{PinSource, Pkcs11Config, Pkcs11KeyManager};
pub use signer::Signer;
pub use software::SoftwareKeyManager;
#[cfg(feature = "transit")]
pub use transit::{OpenBaoClient, SecretSource, TransitAuth, TransitConfig, TransitKeyManager};
pub use transit_error::TransitError;

/// The key types the CA can hold.
///
/// Serialized in configuration as `"ec-p256"` (the default) or `"rsa-3072"`.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum KeyAlgorithm {
    /// ECDSA on NIST P-256 with SHA-256 (X.509 ecdsa-with-SHA256, JWS ES256).
    #[default]
    EcP256,
    /// RSA 3072-bit, e = 65537, PKCS#1 v1.5 with SHA-256 (X.509 sha256WithRSAEncryption, JWS RS256).
    // kebab-case alone spells this "rsa3072" (it only splits before capitals).
    #[serde(rename = "rsa-3072")]
    Rsa3072,
}

impl KeyAlgorithm {
    /// The configuration spelling: `"ec-p256"` or `"rsa-3072"`.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyAlgorithm::EcP256 => "ec-p256",
            KeyAlgorithm::Rsa3072 => "rsa-3072",
        }
    }

    /// The JWS `alg` value for signatures made with this key: `"ES256"` or `"RS256"`.
    pub fn jws_alg(self) -> &'static str {
        match self {
            KeyAlgorithm::EcP256 => "ES256",
            KeyAlgorithm::Rsa3072 => "RS256",
        }
    }
}

impl fmt::Display for KeyAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for KeyAlgorithm {
    type Err = HsmError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "ec-p256" => Ok(KeyAlgorithm::EcP256),
            "rsa-3072" => Ok(KeyAlgorithm::Rsa3072),
            other => Err(HsmError::UnknownAlgorithm {
                name: other.to_owned(),
            }),
        }
    }
}

/// The public description of a key held by a [`KeyManager`]. Never contains private material.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyInfo {
    /// The label the key was generated under (CKA_LABEL for PKCS#11, the file name for software keys).
    pub label: String,
    /// The key type.
    pub algorithm: KeyAlgorithm,
    /// The public key as a DER SubjectPublicKeyInfo, ready for a certificate or a JWK.
    pub public_key_der: Vec<u8>,
}

/// A store of signing keys whose private halves never leave it.
///
/// Implementations are shared between threads (`Arc<dyn KeyManager>`) and must allow concurrent
/// signing.
pub trait KeyManager: Send + Sync + 'static {
    /// Creates a key pair inside the store. Fails ([`HsmError::KeyExists`]) if the label is taken.
    fn generate(&self, label: &str, algorithm: KeyAlgorithm) -> Result<KeyInfo, HsmError>;

    /// Finds a key by label; `Ok(None)` if absent.
    ///
    /// For PKCS#11 this re-checks the private key's CKA_SENSITIVE=true, CKA_EXTRACTABLE=false,
    /// CKA_NEVER_EXTRACTABLE=true (and CKA_ALWAYS_SENSITIVE=true) and fails closed with
    /// [`HsmError::KeyExtractable`] otherwise.
    fn find(&self, label: &str) -> Result<Option<KeyInfo>, HsmError>;

    /// Signs a SHA-256 digest (32 bytes). EC: raw r||s (64 bytes). RSA: PKCS#1 v1.5 over the
    /// SHA-256 DigestInfo.
    fn sign_digest(&self, label: &str, digest: &[u8]) -> Result<Vec<u8>, HsmError>;

    /// All usable keys in the store. Keys that fail the checks `find` makes are left out (and
    /// logged), so one foreign key in a shared token does not hide the others.
    fn list(&self) -> Result<Vec<KeyInfo>, HsmError>;

    /// Deletes the key pair. [`HsmError::KeyNotFound`] if there is no key under `label`.
    fn destroy(&self, label: &str) -> Result<(), HsmError>;

    /// One line for logs, e.g. "pkcs11 token 'ironroot' (module /usr/lib/softhsm/libsofthsm2.so)".
    /// Never contains the PIN.
    fn describe(&self) -> String;

    /// Whether the store can be used right now, for health checks. May make one cheap call to
    /// the store (never waits for a busy one). The default, for stores that cannot go away
    /// (files), is [`KeyManagerHealth::Available`].
    fn health(&self) -> KeyManagerHealth {
        KeyManagerHealth::Available
    }
}

/// What [`KeyManager::health`] reports.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyManagerHealth {
    /// The store answers (or nothing says otherwise).
    Available,
    /// The store cannot be reached; every call fails with [`HsmError::Unreachable`] until the
    /// key manager has reconnected by itself.
    Unreachable {
        /// When the outage was first seen.
        since: std::time::SystemTime,
        /// The latest failure: the PKCS#11 function and CKR_ code, or why reconnecting failed.
        reason: String,
    },
}

impl fmt::Display for KeyManagerHealth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyManagerHealth::Available => f.write_str("available"),
            KeyManagerHealth::Unreachable { since, reason } => write!(
                f,
                "unreachable since {}: {reason}",
                humantime::format_rfc3339_seconds(*since)
            ),
        }
    }
}

/// Length of a SHA-256 digest, the only digest [`KeyManager::sign_digest`] accepts.
pub const SHA256_LEN: usize = 32;

/// Rejects digests of the wrong size before they reach a token, whose error would be vaguer.
pub(crate) fn check_digest(digest: &[u8]) -> Result<(), HsmError> {
    if digest.len() == SHA256_LEN {
        Ok(())
    } else {
        Err(HsmError::InvalidDigest { len: digest.len() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn algorithm_config_spelling() -> Result<(), Box<dyn std::error::Error>> {
        assert_eq!(KeyAlgorithm::default(), KeyAlgorithm::EcP256);
        for alg in [KeyAlgorithm::EcP256, KeyAlgorithm::Rsa3072] {
            let json = serde_json::to_string(&alg)?;
            assert_eq!(json, format!("\"{}\"", alg.as_str()));
            assert_eq!(serde_json::from_str::<KeyAlgorithm>(&json)?, alg);
            assert_eq!(alg.as_str().parse::<KeyAlgorithm>()?, alg);
        }
        assert!(matches!(
            "ec-p384".parse::<KeyAlgorithm>(),
            Err(HsmError::UnknownAlgorithm { name }) if name == "ec-p384"
        ));
        Ok(())
    }
}
