//! The storage root key: the owner-hierarchy parent of the keys the agent makes for itself
//! (the DevID and the agent SVID key).
//!
//! The TCG "TPM 2.0 Keys for Device Identity and Attestation" places such keys under the
//! storage hierarchy: the owner provisions them, and clearing the owner hierarchy retires
//! them. The EK hierarchy stays for the EK and AK only. The parent is the persisted SRK at
//! 0x81000001 (TCG Provisioning Guidance) when there is one, else the TCG ECC P-256 SRK
//! template made on the fly and flushed after use: a primary key is derived from the
//! hierarchy's seed and its template, so the same template gives the same key every time,
//! and a key wrapped by it loads again after the agent (or the machine) restarts.

use tss_esapi::attributes::ObjectAttributesBuilder;
use tss_esapi::handles::KeyHandle;
use tss_esapi::interface_types::algorithm::{HashingAlgorithm, PublicAlgorithm};
use tss_esapi::interface_types::ecc::EccCurve;
use tss_esapi::interface_types::resource_handles::Hierarchy;
use tss_esapi::interface_types::session_handles::AuthSession;
use tss_esapi::structures::{
    EccParameter, EccPoint, Public, PublicBuilder, PublicEccParametersBuilder,
    SymmetricDefinitionObject,
};

use super::keys::KeySlot;
use super::{DeviceError, Tpm};

/// TCG Provisioning Guidance: the storage root key's persistent handle.
pub(crate) const SRK_HANDLE: u32 = 0x8100_0001;

fn tss(op: &'static str) -> impl FnOnce(tss_esapi::Error) -> DeviceError {
    DeviceError::tpm(op)
}

/// The TCG Provisioning Guidance ECC P-256 SRK template (unique = 32 zero bytes each).
pub(crate) fn srk_template() -> Result<Public, DeviceError> {
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

/// A storage parent: a restricted decryption key (it only wraps keys the TPM made).
pub(crate) fn is_storage_parent(public: &Public) -> bool {
    let a = public.object_attributes();
    a.restricted() && a.decrypt() && !a.sign_encrypt()
}

impl Tpm {
    /// Runs `f` with the storage parent loaded: the persisted SRK when it is a storage key,
    /// else the SRK template made as a primary for this call and flushed after it.
    pub(crate) fn with_storage_parent<T>(
        &mut self,
        f: impl FnOnce(&mut Tpm, KeyHandle) -> Result<T, DeviceError>,
    ) -> Result<T, DeviceError> {
        let srk = KeySlot::Persistent(SRK_HANDLE);
        if self.handle_exists(SRK_HANDLE)? && is_storage_parent(&self.read_public(&srk)?.0) {
            return self.with_key(&srk, f);
        }
        let template = srk_template()?;
        let primary = self
            .ctx
            .execute_with_session(Some(AuthSession::Password), |c| {
                c.create_primary(Hierarchy::Owner, template, None, None, None, None)
            })
            .map_err(tss("CreatePrimary (SRK)"))?;
        self.with_transient(primary.key_handle, f)
    }
}
