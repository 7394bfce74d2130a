//! The DevID key (a local device identity, IEEE 802.1AR LDevID).
//!
//! Hierarchy: the DevID is made under the storage (owner) hierarchy's primary key (see
//! [`super::srk`]), as the TCG "TPM 2.0 Keys for Device Identity and Attestation" places an
//! LDevID, and persisted at a handle the operator chooses.

use tss_esapi::attributes::ObjectAttributesBuilder;
use tss_esapi::handles::KeyHandle;
use tss_esapi::interface_types::algorithm::{HashingAlgorithm, PublicAlgorithm};
use tss_esapi::interface_types::ecc::EccCurve;
use tss_esapi::interface_types::session_handles::AuthSession;
use tss_esapi::structures::{
    EccPoint, EccScheme, HashScheme, Public, PublicBuilder, PublicEccParametersBuilder,
};

use super::keys::{check_persistent_handle, tpm2b_public, KeySlot};
use super::{DeviceError, LoadedKey, Tpm};

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
        // empty auth: nothing to guess, and DA lockout after power losses would stop
        // attestation (see AGENT_KEY_TEMPLATE_ATTRIBUTES)
        .with_no_da(true)
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

fn is_devid(public: &Public) -> bool {
    let a = public.object_attributes();
    let p256 = matches!(public, Public::Ecc { parameters, .. } if parameters.ecc_curve() == EccCurve::NistP256);
    p256 && a.sign_encrypt() && !a.restricted() && !a.decrypt() && a.fixed_tpm() && a.fixed_parent()
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
        let key = self.with_storage_parent(make)?;
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
}

#[cfg(test)]
mod tests;
