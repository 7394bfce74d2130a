//! TPM2_ActivateCredential: proves to the server that the AK and the EK share one TPM.

use tss_esapi::constants::SessionType;
use tss_esapi::handles::{AuthHandle, KeyHandle, SessionHandle};
use tss_esapi::interface_types::algorithm::HashingAlgorithm;
use tss_esapi::interface_types::session_handles::{AuthSession, PolicySession};
use tss_esapi::structures::{EncryptedSecret, IdObject, SymmetricDefinition};

use super::keys::parse_tpm2b_public;
use super::{AttestationKey, DeviceError, EndorsementKey, Tpm};

const OP: &str = "ActivateCredential";

impl Tpm {
    /// TPM2_ActivateCredential: recovers the secret the server sealed (MakeCredential) to
    /// `ek` for `ak`'s name. `id_object` is the contents of the TPM2B_ID_OBJECT and
    /// `encrypted_secret` of the TPM2B_ENCRYPTED_SECRET (both without their size field).
    ///
    /// Sessions: a password session for the AK (ADMIN role: the AK allows auth value), and
    /// for the EK (USER role) a policy session satisfying the EK's policy A,
    /// PolicySecret(TPM_RH_ENDORSEMENT), because low-range EK templates clear userWithAuth;
    /// a password session when the EK sets userWithAuth (high-range templates such as P-384).
    pub fn activate_credential(
        &mut self,
        ak: &AttestationKey,
        ek: &EndorsementKey,
        id_object: &[u8],
        encrypted_secret: &[u8],
    ) -> Result<Vec<u8>, DeviceError> {
        let blob = IdObject::try_from(id_object.to_vec())
            .map_err(|e| DeviceError::invalid(OP, format!("credential blob: {e}")))?;
        let secret = EncryptedSecret::try_from(encrypted_secret.to_vec())
            .map_err(|e| DeviceError::invalid(OP, format!("encrypted secret: {e}")))?;
        let ek_public = parse_tpm2b_public(&ek.public)?;
        let ek_password = ek_public.object_attributes().user_with_auth();
        let ek_name_alg = ek_public.name_hashing_algorithm();
        let cred = self.with_key(&ak.slot, |tpm, ak_handle| {
            tpm.with_key(&ek.slot, |tpm, ek_handle| {
                if ek_password {
                    tpm.ctx
                        .execute_with_sessions(
                            (
                                Some(AuthSession::Password),
                                Some(AuthSession::Password),
                                None,
                            ),
                            |c| c.activate_credential(ak_handle, ek_handle, blob, secret),
                        )
                        .map_err(DeviceError::tpm(OP))
                } else {
                    tpm.activate_with_policy(ak_handle, ek_handle, ek_name_alg, blob, secret)
                }
            })
        })?;
        Ok(cred.value().to_vec())
    }

    fn activate_with_policy(
        &mut self,
        ak: KeyHandle,
        ek: KeyHandle,
        name_alg: HashingAlgorithm,
        blob: IdObject,
        secret: EncryptedSecret,
    ) -> Result<tss_esapi::structures::Digest, DeviceError> {
        // The policy digest is computed with the EK's nameAlg, so the session uses it too.
        // No parameter encryption: only one session may carry it, and an unsalted session
        // would add nothing.
        let session = self
            .ctx
            .start_auth_session(
                None,
                None,
                None,
                SessionType::Policy,
                SymmetricDefinition::Null,
                name_alg,
            )
            .map_err(DeviceError::tpm("StartAuthSession (policy)"))?
            .ok_or_else(|| DeviceError::unexpected("StartAuthSession", "no session returned"))?;
        let out = self.policy_secret_then_activate(session, ak, ek, blob, secret);
        let flush = self
            .ctx
            .flush_context(SessionHandle::from(session).into())
            .map_err(DeviceError::tpm("FlushContext (policy session)"));
        let cred = out?;
        flush?;
        Ok(cred)
    }

    fn policy_secret_then_activate(
        &mut self,
        session: AuthSession,
        ak: KeyHandle,
        ek: KeyHandle,
        blob: IdObject,
        secret: EncryptedSecret,
    ) -> Result<tss_esapi::structures::Digest, DeviceError> {
        let policy = PolicySession::try_from(session)
            .map_err(|e| DeviceError::unexpected("StartAuthSession", e.to_string()))?;
        self.ctx
            .execute_with_session(Some(AuthSession::Password), |c| {
                c.policy_secret(
                    policy,
                    AuthHandle::Endorsement,
                    Default::default(),
                    Default::default(),
                    Default::default(),
                    None,
                )
            })
            .map_err(DeviceError::tpm("PolicySecret (endorsement)"))?;
        self.ctx
            .execute_with_sessions((Some(AuthSession::Password), Some(session), None), |c| {
                c.activate_credential(ak, ek, blob, secret)
            })
            .map_err(DeviceError::tpm(OP))
    }
}
