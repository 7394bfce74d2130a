//! The agent SVID key: an ECC P-256 restricted signing key the TPM generates under the
//! storage parent ([`super::srk`]).
//!
//! Attributes: [`AGENT_KEY_TEMPLATE_ATTRIBUTES`] (fixedTPM, fixedParent,
//! sensitiveDataOrigin, userWithAuth, restricted, sign), scheme ECDSA-SHA256: what the
//! server's [`crate::verify::agent_key`] check requires, taken from the same constant so the
//! two cannot drift. The key signs through [`Tpm::sign_message`] (TPM2_Hash ticket, then
//! TPM2_Sign).
//!
//! The key is not persisted in the TPM (it takes no NV or persistent-handle room): the
//! caller keeps its [`KeyBlobs`] (the public area, and the private area wrapped by the
//! storage parent, which only this TPM can unwrap) and loads them again after a restart.

use tss_esapi::attributes::ObjectAttributes;
use tss_esapi::handles::KeyHandle;
use tss_esapi::interface_types::algorithm::{HashingAlgorithm, PublicAlgorithm};
use tss_esapi::interface_types::ecc::EccCurve;
use tss_esapi::interface_types::session_handles::AuthSession;
use tss_esapi::structures::{
    EccPoint, EccScheme, HashScheme, Private, Public, PublicBuilder, PublicEccParametersBuilder,
};

use super::keys::{parse_tpm2b_public, tpm2b_public};
use super::{DeviceError, LoadedKey, Tpm};
use crate::verify::agent_key::{check_shape, AGENT_KEY_TEMPLATE_ATTRIBUTES};
use crate::verify::TpmPublic;

const OP: &str = "agent key";

/// A TPM-resident key as kept outside the TPM.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyBlobs {
    /// TPM2B_PUBLIC.
    pub public: Vec<u8>,
    /// TPM2B_PRIVATE: the private area encrypted and integrity-protected by the storage
    /// parent; no use without this TPM.
    pub private: Vec<u8>,
}

impl std::fmt::Debug for KeyBlobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyBlobs")
            .field("public", &hex_prefix(&self.public))
            .field("private", &format_args!("{} bytes", self.private.len()))
            .finish()
    }
}

fn hex_prefix(b: &[u8]) -> String {
    b.iter().take(8).map(|x| format!("{x:02x}")).collect()
}

fn tss(op: &'static str) -> impl FnOnce(tss_esapi::Error) -> DeviceError {
    DeviceError::tpm(op)
}

fn agent_key_template() -> Result<Public, DeviceError> {
    const T: &str = "template (agent key)";
    let attrs = ObjectAttributes::from(AGENT_KEY_TEMPLATE_ATTRIBUTES.bits());
    PublicBuilder::new()
        .with_public_algorithm(PublicAlgorithm::Ecc)
        .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
        .with_object_attributes(attrs)
        .with_ecc_parameters(
            PublicEccParametersBuilder::new_unrestricted_signing_key(
                EccScheme::EcDsa(HashScheme::new(HashingAlgorithm::Sha256)),
                EccCurve::NistP256,
            )
            .with_restricted(true)
            .build()
            .map_err(tss(T))?,
        )
        .with_ecc_unique_identifier(EccPoint::default())
        .build()
        .map_err(tss(T))
}

/// TPM2B_PRIVATE bytes: u16 big-endian size, then the buffer.
fn tpm2b_private(private: &Private) -> Result<Vec<u8>, DeviceError> {
    let body = private.value();
    let size = u16::try_from(body.len())
        .map_err(|_| DeviceError::unexpected(OP, "private area too large"))?;
    Ok([&size.to_be_bytes()[..], body].concat())
}

fn parse_tpm2b_private(bytes: &[u8]) -> Result<Private, DeviceError> {
    let (size, body) = match bytes {
        [a, b, rest @ ..] => (usize::from(u16::from_be_bytes([*a, *b])), rest),
        _ => {
            return Err(DeviceError::invalid(
                OP,
                "TPM2B_PRIVATE shorter than its size field",
            ))
        }
    };
    if size != body.len() {
        return Err(DeviceError::invalid(
            OP,
            format!("TPM2B_PRIVATE says {size} bytes but holds {}", body.len()),
        ));
    }
    Private::try_from(body.to_vec())
        .map_err(|e| DeviceError::invalid(OP, format!("TPM2B_PRIVATE: {e}")))
}

impl Tpm {
    /// Makes a new agent key under the storage parent (TPM2_Create; nothing stays loaded)
    /// and returns its blobs.
    pub fn create_agent_key(&mut self) -> Result<KeyBlobs, DeviceError> {
        let template = agent_key_template()?;
        let made = self.with_storage_parent(|tpm, parent| {
            tpm.ctx
                .execute_with_session(Some(AuthSession::Password), |c| {
                    c.create(parent, template, None, None, None, None)
                })
                .map_err(tss("Create (agent key)"))
        })?;
        Ok(KeyBlobs {
            public: tpm2b_public(&made.out_public)?,
            private: tpm2b_private(&made.out_private)?,
        })
    }

    /// Loads `blobs` under the storage parent and keeps the key as a saved context. Fails
    /// (TPM2_Load, integrity) when the blobs were made by another TPM or under another
    /// owner seed (the owner hierarchy was cleared): the caller then makes a new key. A
    /// public area that is not an agent key's shape is refused before the TPM sees it.
    pub fn load_agent_key(&mut self, blobs: &KeyBlobs) -> Result<LoadedKey, DeviceError> {
        let ours = TpmPublic::from_tpm2b(&blobs.public)
            .map_err(|e| DeviceError::invalid(OP, format!("public area: {e}")))?;
        check_shape(&ours).map_err(|e| DeviceError::invalid(OP, e.to_string()))?;
        let public = parse_tpm2b_public(&blobs.public)?;
        let private = parse_tpm2b_private(&blobs.private)?;
        let loaded = self.with_storage_parent(|tpm, parent: KeyHandle| {
            tpm.ctx
                .execute_with_session(Some(AuthSession::Password), |c| {
                    c.load(parent, private, public)
                })
                .map_err(tss("Load (agent key)"))
        })?;
        let (public, name, _, slot) = self.describe_and_save(loaded)?;
        let public = tpm2b_public(&public)?;
        if public != blobs.public {
            return Err(DeviceError::unexpected(
                OP,
                "the TPM loaded another public area than the one given",
            ));
        }
        Ok(LoadedKey {
            public,
            name: name.value().to_vec(),
            slot,
        })
    }
}

#[cfg(test)]
mod tests;
