//! The agent SVID key during TPM attestation. An agent that says its key is TPM-resident
//! (it sends the key's public area) gets its SVID only if the key has the shape
//! `ironroot_tpm::verify::agent_key` requires, the CSR carries exactly that key, and the
//! AK certified the key over this attestation's nonce. A software key is admitted only
//! when `require_tpm_agent_key = false`. Either way the selector `tpm:agent_key:tpm` or
//! `tpm:agent_key:software` says which, and the SVID is signed for the CSR's key, so the
//! SVID's key is the key checked here.

use ironroot_api::node as pb;
use ironroot_tpm::verify::agent_key::{check_agent_key, check_agent_key_certify, AgentKeyError};
use ironroot_tpm::verify::TpmPublic;

use crate::node::nonce::NonceRegistry;
use crate::node::AttestError;

/// The check name every agent key rejection carries.
pub(super) const CHECK: &str = "agent key";

/// What the first message says about the agent key.
pub(super) enum PresentedKey {
    /// TPM-resident: its public area, to be certified in the answer.
    Tpm(TpmPublic),
    /// A software key (allowed by configuration).
    Software,
}

fn rejection(e: AgentKeyError) -> AttestError {
    match e {
        AgentKeyError::MalformedPublic(_) | AgentKeyError::MalformedCertify(_) => {
            AttestError::malformed(CHECK, e.to_string())
        }
        _ => AttestError::rejected(CHECK, e.to_string()),
    }
}

/// Offline checks of the first message: the public area's shape and that the CSR carries
/// that key; a software key only if `require_tpm` is off.
pub(super) fn check_presented(
    csr: &[u8],
    tpm: &pb::TpmEvidence,
    require_tpm: bool,
) -> Result<PresentedKey, AttestError> {
    if tpm.agent_key_public.is_empty() {
        return if require_tpm {
            Err(AttestError::rejected(
                CHECK,
                "this server signs agent SVIDs only for TPM-resident keys \
                 (require_tpm_agent_key = true) and the agent presented a software key: set \
                 tpm.agent_key = \"tpm\" on the agent, or allow software keys on the server",
            ))
        } else {
            Ok(PresentedKey::Software)
        };
    }
    let csr_key = crate::ca::x509::parse_csr(csr)
        .map_err(|e| AttestError::malformed("agent CSR", e.to_string()))?;
    let spki = rcgen::PublicKeyData::subject_public_key_info(&csr_key);
    check_agent_key(&tpm.agent_key_public, &spki)
        .map(PresentedKey::Tpm)
        .map_err(rejection)
}

/// The answer's TPM2_Certify of `key` by `ak` over `nonce` (consumed here: single use).
pub(super) fn check_certified(
    nonces: &NonceRegistry,
    ak: &TpmPublic,
    key: &TpmPublic,
    nonce: &[u8; 32],
    r: &pb::TpmChallengeResponse,
    now: i64,
) -> Result<(), AttestError> {
    if r.agent_key_certify_attest.is_empty() {
        return Err(AttestError::rejected(
            CHECK,
            "the agent presented a TPM-resident key but sent no TPM2_Certify of it",
        ));
    }
    // Single use whatever the outcome: a certify over this nonce never counts twice.
    nonces
        .consume(nonce, now)
        .map_err(|e| AttestError::rejected("agent key nonce", e.to_string()))?;
    let checked = check_agent_key_certify(
        ak,
        key,
        nonce,
        &r.agent_key_certify_attest,
        &r.agent_key_certify_signature,
    );
    if let Err(AgentKeyError::Nonce { found, .. }) = &checked {
        if hex::decode(found).is_ok_and(|n| nonces.was_used(&n)) {
            return Err(AttestError::rejected(
                CHECK,
                "the agent key certify carries a nonce that was already used: a replayed certify",
            ));
        }
    }
    checked.map_err(rejection)
}
