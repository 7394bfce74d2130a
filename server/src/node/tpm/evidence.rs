//! The server's half of the TPM evidence checks: it holds the nonces and the clock, hands
//! the bytes to the pure checks of [`ironroot_tpm::verify`] (quote, replay, DevID) and files
//! each failure under the check it names, as malformed or rejected.

use std::fmt::Display;

use ironroot_api::node as pb;
use ironroot_tpm::verify::certchain::Anchors;
use ironroot_tpm::verify::devid::{self, CheckedDevId, DevIdError, DevIdEvidence, DevIdKey};
use ironroot_tpm::verify::eventlog::{EventLog, HashAlg};
use ironroot_tpm::verify::quote::{Quote, QuoteError, QuotedPcrs};
use ironroot_tpm::verify::replay::{self, ReplayError};
use ironroot_tpm::verify::TpmPublic;

use crate::node::nonce::NonceRegistry;
use crate::node::AttestError;

/// Files a pure check's failure under its rule: malformed evidence (INVALID_ARGUMENT) or a
/// refusal (PERMISSION_DENIED).
pub(super) fn rejection(rule: &'static str, malformed: bool, e: &dyn Display) -> AttestError {
    if malformed {
        AttestError::malformed(rule, e.to_string())
    } else {
        AttestError::rejected(rule, e.to_string())
    }
}

fn quote_rejection(e: QuoteError) -> AttestError {
    rejection(e.rule(), e.is_malformed(), &e)
}

fn devid_rejection(e: DevIdError) -> AttestError {
    rejection(e.rule(), e.is_malformed(), &e)
}

fn replay_rejection(e: ReplayError) -> AttestError {
    rejection(e.rule(), false, &e)
}

/// Checks the quote; returns the PCR values it vouches for. The nonce is spent once the
/// quote is known to carry it, before its signature is checked: single use whatever the
/// outcome.
pub(super) fn check_quote(
    nonces: &NonceRegistry,
    ak: &TpmPublic,
    nonce: &[u8; 32],
    bank: HashAlg,
    pcrs: &[u32],
    r: &pb::TpmChallengeResponse,
    now: i64,
) -> Result<QuotedPcrs, AttestError> {
    let quote = match Quote::parse(&r.quote_attest, nonce) {
        Ok(q) => q,
        Err(QuoteError::Nonce { found }) if nonces.was_used(&found) => {
            return Err(AttestError::rejected(
                "quote nonce",
                "the quote carries a nonce that was already used: a replayed quote",
            ))
        }
        Err(e) => return Err(quote_rejection(e)),
    };
    nonces
        .consume(nonce, now)
        .map_err(|e| AttestError::rejected("quote nonce", e.to_string()))?;
    // The wire names banks by TPM_ALG_ID: converted here, at the edge.
    let mut values: Vec<(u32, &[u8])> = Vec::with_capacity(r.pcr_values.len());
    for v in &r.pcr_values {
        if wire_bank(v.bank)? == bank {
            values.push((v.index, v.digest.as_slice()));
        }
    }
    quote
        .verify(ak, &r.quote_signature, bank, pcrs, &values)
        .map_err(quote_rejection)
}

/// The bank of a `PcrValue` as the wire carries it: `HASH_ALGORITHM_UNSPECIFIED` or a number
/// the enum does not define is malformed evidence.
fn wire_bank(raw: i32) -> Result<HashAlg, AttestError> {
    pb::HashAlgorithm::tpm_alg_id_of(raw)
        .map(HashAlg::from_id)
        .ok_or_else(|| {
            AttestError::malformed(
                "PCR values",
                format!(
                    "pcr_values.bank is {raw}: not a hash algorithm \
                     (HASH_ALGORITHM_UNSPECIFIED or a value the node API does not define)"
                ),
            )
        })
}

/// The event log must reproduce every quoted PCR.
pub(super) fn check_replay(
    log: &EventLog,
    bank: HashAlg,
    quoted: &QuotedPcrs,
) -> Result<(), AttestError> {
    replay::check_replay(log, bank, quoted).map_err(replay_rejection)
}

/// Secure Boot on and an image verified by it, read in the quoted `bank`
/// ([`BootState::secure_boot_verified`]): PCR7 has the profile's shape, its one SecureBoot
/// measurement before the separator is a verified 1, an authority and a PCR4 code
/// measurement follow. SecureBoot=1 without them is OVMF's unverified fallback.
///
/// [`BootState::secure_boot_verified`]: ironroot_tpm::verify::eventlog::BootState::secure_boot_verified
pub(super) fn secure_boot_verified(log: &EventLog, bank: HashAlg) -> bool {
    log.boot_state(bank).secure_boot_verified()
}

/// DevID certificate chains to the DevID CA; its key is the TPM key the AK certified.
pub(super) fn check_devid(
    tpm: &pb::TpmEvidence,
    ak: &TpmPublic,
    anchors: &Anchors,
    now: i64,
) -> Result<CheckedDevId, AttestError> {
    let evidence = DevIdEvidence {
        chain: &tpm.devid_certificate_chain,
        public: &tpm.devid_public,
        certify_attest: &tpm.devid_certify_attest,
        certify_signature: &tpm.devid_certify_signature,
    };
    devid::check_devid(&evidence, ak, anchors, now as u64).map_err(devid_rejection)
}

/// A DevID key the AK certified with TPM2_Certify (an LDevID enrollment's key).
pub(super) fn certified_key(
    ak: &TpmPublic,
    public: &[u8],
    certify_attest: &[u8],
    certify_signature: &[u8],
) -> Result<TpmPublic, AttestError> {
    devid::certified_key(ak, public, certify_attest, certify_signature).map_err(devid_rejection)
}

/// The DevID key signed SHA-256(nonce) (ECDSA P-256, raw r||s).
pub(super) fn check_devid_signature(
    key: &DevIdKey,
    nonce: &[u8],
    sig: &[u8],
) -> Result<(), AttestError> {
    key.check_nonce_signature(nonce, sig)
        .map_err(devid_rejection)
}
