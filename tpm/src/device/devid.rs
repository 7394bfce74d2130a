//! The DevID key (a local device identity, IEEE 802.1AR LDevID) and signing with it.
//!
//! Hierarchy: the DevID is made under the storage (owner) hierarchy's primary key, as the
//! TCG "TPM 2.0 Keys for Device Identity and Attestation" places an LDevID: the owner
//! provisions it, and clearing the owner hierarchy retires it. The EK hierarchy stays for
//! the EK and AK only. The storage primary is the persisted SRK at 0x81000001 when there
//! is one, else the TCG ECC P-256 SRK template made on the fly and flushed after use.

use tss_esapi::attributes::ObjectAttributesBuilder;
use tss_esapi::constants::tss::{TPM2_RH_NULL, TPM2_ST_HASHCHECK};
use tss_esapi::handles::KeyHandle;
use tss_esapi::interface_types::algorithm::{HashingAlgorithm, PublicAlgorithm};
use tss_esapi::interface_types::ecc::EccCurve;
use tss_esapi::interface_types::resource_handles::Hierarchy;
use tss_esapi::interface_types::session_handles::AuthSession;
use tss_esapi::structures::{
    Digest, EccParameter, EccPoint, EccScheme, HashScheme, HashcheckTicket, Public, PublicBuilder,
    PublicEccParametersBuilder, Signature, SignatureScheme, SymmetricDefinitionObject,
};
use tss_esapi::tss2_esys::TPMT_TK_HASHCHECK;

use super::keys::{check_persistent_handle, tpm2b_public, KeySlot};
use super::{DeviceError, LoadedKey, Tpm};

pub use super::csr::devid_csr;

/// TCG Provisioning Guidance: the storage root key's persistent handle.
const SRK_HANDLE: u32 = 0x8100_0001;
const OP: &str = "DevID key";

fn tss(op: &'static str) -> impl FnOnce(tss_esapi::Error) -> DeviceError {
    DeviceError::tpm(op)
}

/// ECC P-256 ECDSA-SHA256 signing key, not restricted (it signs nonces and CSRs, which a
/// restricted key refuses), fixedTPM and fixedParent so it can never leave this TPM.
fn devid_template() -> Result<Public, DeviceError> {
    let attrs = ObjectAttributesBuilder::new()
        .with_fixed_tpm(true)
        .with_fixed_parent(true)
        .with_sensitive_data_origin(true)
        .with_user_with_auth(true)
        .with_sign_encrypt(true)
        .build()
        .map_err(tss("template (DevID)"))?;
    PublicBuilder::new()
        .with_public_algorithm(PublicAlgorithm::Ecc)
        .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
        .with_object_attributes(attrs)
        .with_ecc_parameters(
            PublicEccParametersBuilder::new_unrestricted_signing_key(
                EccScheme::EcDsa(HashScheme::new(HashingAlgorithm::Sha256)),
                EccCurve::NistP256,
            )
            .build()
            .map_err(tss("template (DevID)"))?,
        )
        .with_ecc_unique_identifier(EccPoint::default())
        .build()
        .map_err(tss("template (DevID)"))
}

/// The TCG Provisioning Guidance ECC P-256 SRK template (unique = 32 zero bytes each).
fn srk_template() -> Result<Public, DeviceError> {
    let attrs = ObjectAttributesBuilder::new()
        .with_fixed_tpm(true)
        .with_fixed_parent(true)
        .with_sensitive_data_origin(true)
        .with_user_with_auth(true)
        .with_no_da(true)
        .with_restricted(true)
        .with_decrypt(true)
        .build()
        .map_err(tss("template (SRK)"))?;
    let zero = || EccParameter::try_from(vec![0u8; 32]).map_err(tss("template (SRK)"));
    PublicBuilder::new()
        .with_public_algorithm(PublicAlgorithm::Ecc)
        .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
        .with_object_attributes(attrs)
        .with_ecc_parameters(
            PublicEccParametersBuilder::new_restricted_decryption_key(
                SymmetricDefinitionObject::AES_128_CFB,
                EccCurve::NistP256,
            )
            .build()
            .map_err(tss("template (SRK)"))?,
        )
        .with_ecc_unique_identifier(EccPoint::new(zero()?, zero()?))
        .build()
        .map_err(tss("template (SRK)"))
}

fn is_devid(public: &Public) -> bool {
    let a = public.object_attributes();
    let p256 = matches!(public, Public::Ecc { parameters, .. } if parameters.ecc_curve() == EccCurve::NistP256);
    p256 && a.sign_encrypt() && !a.restricted() && !a.decrypt() && a.fixed_tpm() && a.fixed_parent()
}

fn is_storage_parent(public: &Public) -> bool {
    let a = public.object_attributes();
    a.restricted() && a.decrypt() && !a.sign_encrypt()
}

/// Left-pads a big-endian integer to `len` bytes (`None` if it is longer).
pub(crate) fn pad(v: &[u8], len: usize) -> Option<Vec<u8>> {
    let v = &v[v.iter().take_while(|&&b| b == 0).count()..];
    let mut out = vec![0u8; len.checked_sub(v.len())?];
    out.extend_from_slice(v);
    Some(out)
}

impl Tpm {
    /// The DevID key persisted at `persist_at` (owner persistent range): reused when a
    /// DevID-shaped key (ECC P-256, non-restricted signing, fixedTPM, fixedParent) is
    /// already there, else made under the storage primary and persisted there.
    pub fn devid_key(&mut self, persist_at: u32) -> Result<LoadedKey, DeviceError> {
        check_persistent_handle(OP, persist_at)?;
        if self.handle_exists(persist_at)? {
            let slot = KeySlot::Persistent(persist_at);
            let (public, name, _) = self.read_public(&slot)?;
            if !is_devid(&public) {
                return Err(DeviceError::unexpected(
                    OP,
                    format!(
                        "persistent handle {persist_at:#010x} holds a key that is not a DevID \
                         (ECC P-256 signing, not restricted): evict it or choose another handle"
                    ),
                ));
            }
            return Ok(LoadedKey {
                public: tpm2b_public(&public)?,
                name: name.value().to_vec(),
                slot,
            });
        }
        let template = devid_template()?;
        let make = |tpm: &mut Tpm, parent: KeyHandle| -> Result<KeyHandle, DeviceError> {
            let made = tpm
                .ctx
                .execute_with_session(Some(AuthSession::Password), |c| {
                    c.create(parent, template, None, None, None, None)
                })
                .map_err(tss("Create (DevID)"))?;
            tpm.ctx
                .execute_with_session(Some(AuthSession::Password), |c| {
                    c.load(parent, made.out_private, made.out_public)
                })
                .map_err(tss("Load (DevID)"))
        };
        let srk = KeySlot::Persistent(SRK_HANDLE);
        let key =
            if self.handle_exists(SRK_HANDLE)? && is_storage_parent(&self.read_public(&srk)?.0) {
                self.with_key(&srk, make)?
            } else {
                let template = srk_template()?;
                let primary = self
                    .ctx
                    .execute_with_session(Some(AuthSession::Password), |c| {
                        c.create_primary(Hierarchy::Owner, template, None, None, None, None)
                    })
                    .map_err(tss("CreatePrimary (SRK)"))?;
                self.with_transient(primary.key_handle, make)?
            };
        self.with_transient(key, |tpm, k| {
            let (public, name, _) = tpm
                .ctx
                .execute_without_session(|c| c.read_public(k))
                .map_err(tss("ReadPublic"))?;
            tpm.persist(k, persist_at)?;
            Ok(LoadedKey {
                public: tpm2b_public(&public)?,
                name: name.value().to_vec(),
                slot: KeySlot::Persistent(persist_at),
            })
        })
    }

    /// Signs a SHA-256 `digest` with a non-restricted signing key (its own scheme): raw
    /// r||s (32 bytes each) for ECDSA, the signature bytes for RSA.
    pub fn sign_digest(&mut self, key: &LoadedKey, digest: &[u8]) -> Result<Vec<u8>, DeviceError> {
        const SIGN: &str = "Sign";
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
        let sig = self.with_key(&key.slot, |tpm, h| {
            tpm.ctx
                .execute_with_session(Some(AuthSession::Password), |c| {
                    c.sign(h, digest, SignatureScheme::Null, ticket)
                })
                .map_err(tss(SIGN))
        })?;
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
}

#[cfg(test)]
mod tests;
