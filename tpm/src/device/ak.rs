//! The attestation key: restricted signing, under the EK.

use tss_esapi::abstraction::ak::{create_ak_2, load_ak};
use tss_esapi::abstraction::{AsymmetricAlgorithmSelection, KeyCustomization};
use tss_esapi::attributes::ObjectAttributesBuilder;
use tss_esapi::interface_types::algorithm::{HashingAlgorithm, SignatureSchemeAlgorithm};
use tss_esapi::interface_types::ecc::EccCurve;
use tss_esapi::interface_types::key_bits::RsaKeyBits;
use tss_esapi::structures::Public;

use super::keys::{check_persistent_handle, qualified_name, tpm2b_public, KeySlot};
use super::{AkAlgorithm, AttestationKey, DeviceError, EndorsementKey, Tpm};

const OP: &str = "attestation key";

impl AkAlgorithm {
    fn selection(self) -> AsymmetricAlgorithmSelection {
        match self {
            AkAlgorithm::EccP256 => AsymmetricAlgorithmSelection::Ecc(EccCurve::NistP256),
            AkAlgorithm::Rsa2048 => AsymmetricAlgorithmSelection::Rsa(RsaKeyBits::Rsa2048),
        }
    }

    fn scheme(self) -> SignatureSchemeAlgorithm {
        match self {
            AkAlgorithm::EccP256 => SignatureSchemeAlgorithm::EcDsa,
            AkAlgorithm::Rsa2048 => SignatureSchemeAlgorithm::RsaSsa,
        }
    }
}

/// What the verifier requires of an AK: a restricted signing key that cannot leave the TPM.
fn is_attestation_key(public: &Public) -> bool {
    let a = public.object_attributes();
    a.restricted() && a.sign_encrypt() && !a.decrypt() && a.fixed_tpm() && a.fixed_parent()
}

impl Tpm {
    /// The default attestation key (ECC P-256, ECDSA-SHA256) under `ek`; see
    /// [`Tpm::attestation_key_with`].
    pub fn attestation_key(
        &mut self,
        ek: &EndorsementKey,
        persist_at: Option<u32>,
    ) -> Result<AttestationKey, DeviceError> {
        self.attestation_key_with(ek, AkAlgorithm::EccP256, persist_at)
    }

    /// An attestation key (restricted signing, fixedTPM, fixedParent, SHA-256) under `ek`.
    ///
    /// With `persist_at`, an AK already persisted there is reused (a real TPM must not make
    /// a new key at every attestation): it must be an attestation key made under `ek`, or
    /// the call fails rather than touch it. Otherwise a new AK is made and persisted there
    /// (owner auth). Without `persist_at` the AK is transient, kept as a saved context.
    pub fn attestation_key_with(
        &mut self,
        ek: &EndorsementKey,
        alg: AkAlgorithm,
        persist_at: Option<u32>,
    ) -> Result<AttestationKey, DeviceError> {
        if let Some(h) = persist_at {
            check_persistent_handle(OP, h)?;
            if self.handle_exists(h)? {
                return self.existing_ak(ek, h);
            }
        }
        let ak = self.with_key(&ek.slot, |tpm, ek_handle| {
            let made = create_ak_2(
                &mut tpm.ctx,
                ek_handle,
                HashingAlgorithm::Sha256,
                alg.selection(),
                alg.scheme(),
                None,
                NoDictionaryAttackProtection,
            )
            .map_err(DeviceError::tpm("Create (AK)"))?;
            load_ak(
                &mut tpm.ctx,
                ek_handle,
                None,
                made.out_private,
                made.out_public,
            )
            .map_err(DeviceError::tpm("Load (AK)"))
        })?;
        match persist_at {
            Some(at) => self.with_transient(ak, |tpm, ak| {
                let (public, name, _) = tpm
                    .ctx
                    .execute_without_session(|c| c.read_public(ak))
                    .map_err(DeviceError::tpm("ReadPublic"))?;
                tpm.persist(ak, at)?;
                Ok(AttestationKey {
                    public: tpm2b_public(&public)?,
                    name: name.value().to_vec(),
                    slot: KeySlot::Persistent(at),
                })
            }),
            None => {
                let (public, name, _, slot) = self.describe_and_save(ak)?;
                Ok(AttestationKey {
                    public: tpm2b_public(&public)?,
                    name: name.value().to_vec(),
                    slot,
                })
            }
        }
    }

    /// The AK persisted at `h`, after checking it is one and that `ek` is its parent.
    fn existing_ak(&mut self, ek: &EndorsementKey, h: u32) -> Result<AttestationKey, DeviceError> {
        let slot = KeySlot::Persistent(h);
        let (public, name, qn) = self.read_public(&slot)?;
        if !is_attestation_key(&public) {
            return Err(DeviceError::unexpected(
                OP,
                format!(
                    "persistent handle {h:#010x} holds a key that is not an attestation key \
                     (restricted signing, fixedTPM, fixedParent): evict it or choose another handle"
                ),
            ));
        }
        if qualified_name(&ek.qualified_name, name.value()).as_deref() != Some(qn.value()) {
            return Err(DeviceError::unexpected(
                OP,
                format!(
                    "the attestation key at {h:#010x} was made under another endorsement key \
                     than the {:?} one: evict it or choose another handle",
                    ek.alg
                ),
            ));
        }
        Ok(AttestationKey {
            public: tpm2b_public(&public)?,
            name: name.value().to_vec(),
            slot,
        })
    }
}

/// The AK with noDA: its auth value is empty, so there is nothing to guess, and
/// dictionary-attack protection would lock it out after a few power losses (see
/// `verify::agent_key::AGENT_KEY_TEMPLATE_ATTRIBUTES`). An AK persisted before keeps its
/// attributes.
struct NoDictionaryAttackProtection;

impl KeyCustomization for NoDictionaryAttackProtection {
    fn attributes(&self, builder: ObjectAttributesBuilder) -> ObjectAttributesBuilder {
        builder.with_no_da(true)
    }
}
