//! Checks of TPM evidence: the quote (nonce, signature, PCR digest), the
//! event log against the quoted PCRs, and the DevID (chain, certify, nonce
//! signature). Each failure names the check, the PCR and the values.

use std::collections::HashMap;

use der::Encode;
use ironroot_api::node as pb;
use ironroot_tpm::verify::eventlog::{EventLog, HashAlg};
use ironroot_tpm::verify::policy::replay_mismatches;
use ironroot_tpm::verify::{
    pcr_digest, verify_signature, Attest, Attested as Quoted, TpmHashAlg, TpmPublic, TpmSignature,
};
use ring::signature::{UnparsedPublicKey, ECDSA_P256_SHA256_FIXED};
use sha2::{Digest, Sha256};
use x509_cert::Certificate;

use super::bank_name;
use crate::node::certchain::{self, Anchors};
use crate::node::nonce::NonceRegistry;
use crate::node::AttestError;

fn tpm_hash(bank: HashAlg) -> Option<TpmHashAlg> {
    match bank {
        HashAlg::Sha1 => Some(TpmHashAlg::Sha1),
        HashAlg::Sha256 => Some(TpmHashAlg::Sha256),
        HashAlg::Sha384 => Some(TpmHashAlg::Sha384),
        HashAlg::Sha512 => Some(TpmHashAlg::Sha512),
        _ => None,
    }
}

/// Most certificates (leaf + intermediates) and bytes in a DevID chain.
const MAX_DEVID_CHAIN: usize = 5;
const MAX_DEVID_CHAIN_BYTES: usize = 64 * 1024;

/// Quoted PCR values, by index, of the one bank quoted.
pub type QuotedPcrs = Vec<(u32, Vec<u8>)>;

/// Checks the quote; returns the PCR values it vouches for.
pub fn check_quote(
    nonces: &NonceRegistry,
    ak: &TpmPublic,
    nonce: &[u8; 32],
    bank: HashAlg,
    pcrs: &[u32],
    r: &pb::ChallengeResponse,
    now: i64,
) -> Result<QuotedPcrs, AttestError> {
    let attest = Attest::parse(&r.quote_attest)
        .map_err(|e| AttestError::malformed("quote", e.to_string()))?;
    if attest.extra_data != nonce {
        let why = if nonces.was_used(&attest.extra_data) {
            "the quote carries a nonce that was already used: a replayed quote"
        } else {
            "the quote was made over another nonce than this challenge's"
        };
        return Err(AttestError::rejected("quote nonce", why));
    }
    nonces
        .consume(nonce, now)
        .map_err(|e| AttestError::rejected("quote nonce", e.to_string()))?;
    let sig = TpmSignature::parse(&r.quote_signature)
        .map_err(|e| AttestError::malformed("quote signature", e.to_string()))?;
    verify_signature(ak, &r.quote_attest, &sig).map_err(|e| {
        AttestError::rejected(
            "quote signature",
            format!("not signed by the attested AK: {e}"),
        )
    })?;
    let Quoted::Quote {
        pcr_select,
        pcr_digest: digest,
    } = &attest.attested
    else {
        return Err(AttestError::rejected(
            "quote",
            "the attestation is not a TPM2_Quote",
        ));
    };
    let want_hash = tpm_hash(bank).ok_or_else(|| {
        AttestError::rejected(
            "quote",
            format!("bank {} cannot be quoted", bank_name(bank)),
        )
    })?;
    let selected: Vec<u32> = pcr_select
        .iter()
        .filter(|s| s.hash == want_hash)
        .flat_map(|s| s.pcrs.iter().copied())
        .collect();
    if selected != pcrs
        || pcr_select
            .iter()
            .any(|s| s.hash != want_hash && !s.pcrs.is_empty())
    {
        return Err(AttestError::rejected(
            "quote",
            format!(
                "the quote covers {} PCRs {:?}, the challenge asked for {:?}",
                bank_name(bank),
                selected,
                pcrs
            ),
        ));
    }
    let sent: HashMap<u32, &[u8]> = r
        .pcr_values
        .iter()
        .filter(|v| v.bank == bank_name(bank))
        .map(|v| (v.index, v.digest.as_slice()))
        .collect();
    let mut values = Vec::with_capacity(pcrs.len());
    for i in pcrs {
        let v = sent.get(i).ok_or_else(|| {
            AttestError::malformed(
                "PCR values",
                format!("no value sent for {} PCR {i}", bank_name(bank)),
            )
        })?;
        values.push((*i, v.to_vec()));
    }
    let refs: Vec<&[u8]> = values.iter().map(|(_, v)| v.as_slice()).collect();
    // The TPM hashes the PCR values with the signing scheme's hash, not the bank's.
    if &pcr_digest(sig.hash, &refs) != digest {
        return Err(AttestError::rejected(
            "quote",
            "the PCR values sent do not match the quote's pcrDigest",
        ));
    }
    Ok(values)
}

/// The event log must reproduce every quoted PCR (the check is
/// [`ironroot_tpm::verify::policy::replay_mismatches`], the one the measured-boot
/// invariant tests judge with).
pub fn check_replay(log: &EventLog, bank: HashAlg, quoted: &QuotedPcrs) -> Result<(), AttestError> {
    let mismatches = replay_mismatches(log, bank, quoted).map_err(|_| {
        AttestError::rejected(
            "event log",
            format!("the log has no {} bank to replay", bank_name(bank)),
        )
    })?;
    if mismatches.is_empty() {
        return Ok(());
    }
    let described: Vec<String> = mismatches
        .iter()
        .map(|m| {
            let last = log
                .events()
                .iter()
                .rev()
                .find(|e| e.pcr == m.pcr)
                .map(|e| format!(" (last event #{} {})", e.index, e.event_type))
                .unwrap_or_default();
            let replayed = m.replayed.map(|d| d.to_hex()).unwrap_or_default();
            format!(
                "PCR {} ({}): quoted {}, log replays to {replayed}{last}",
                m.pcr,
                bank_name(bank),
                hex::encode(&m.quoted),
            )
        })
        .collect();
    Err(AttestError::rejected(
        "event log replay",
        format!(
            "the event log does not reproduce the quoted PCRs (altered, truncated or reordered log, or PCRs extended after boot): {}",
            described.join("; ")
        ),
    ))
}

/// Secure Boot on and an image verified by it, read in the quoted `bank`
/// ([`BootState::secure_boot_verified`]): PCR7 has the profile's shape, its one SecureBoot
/// measurement before the separator is a verified 1, an authority and a PCR4 code
/// measurement follow. SecureBoot=1 without them is OVMF's unverified fallback.
///
/// [`BootState::secure_boot_verified`]: ironroot_tpm::verify::eventlog::BootState::secure_boot_verified
pub fn secure_boot_verified(log: &EventLog, bank: HashAlg) -> bool {
    log.boot_state(bank).secure_boot_verified()
}

/// The DevID key, once its certificate and certification check out.
pub struct DevIdKey {
    spki_point: Vec<u8>,
}

pub struct CheckedDevId {
    pub cert: Certificate,
    pub fingerprint: String,
    pub key: DevIdKey,
}

/// DevID certificate chains to the DevID CA; its key is the TPM key the AK certified.
pub fn check_devid(
    tpm: &pb::TpmEvidence,
    ak: &TpmPublic,
    anchors: &Anchors,
) -> Result<CheckedDevId, AttestError> {
    let chain = &tpm.devid_certificate_chain;
    let total: usize = chain.iter().map(Vec::len).sum();
    // Bounded before any signature is checked: chain building costs a verification per try.
    if chain.len() > MAX_DEVID_CHAIN || total > MAX_DEVID_CHAIN_BYTES {
        return Err(AttestError::malformed(
            "DevID",
            format!(
                "the DevID chain has {} certificates / {total} bytes; the limits are {MAX_DEVID_CHAIN} / {MAX_DEVID_CHAIN_BYTES}",
                chain.len()
            ),
        ));
    }
    let (leaf, rest) = chain
        .split_first()
        .ok_or_else(|| AttestError::malformed("DevID", "no DevID certificate was sent"))?;
    let cert = certchain::verify(
        leaf,
        rest,
        anchors,
        crate::ca::unix_now() as u64,
        certchain::CertProfile::DevId,
    )
    .map_err(|e| AttestError::rejected("DevID certificate", e.to_string()))?;
    let devid = certified_key(
        ak,
        &tpm.devid_public,
        &tpm.devid_certify_attest,
        &tpm.devid_certify_signature,
    )?;
    let spki = cert
        .tbs_certificate
        .subject_public_key_info
        .to_der()
        .map_err(|e| AttestError::malformed("DevID certificate", e.to_string()))?;
    if !devid.matches_spki(&spki) {
        return Err(AttestError::rejected(
            "DevID",
            "the DevID certificate's key is not the DevID key the TPM presented",
        ));
    }
    let point = cert
        .tbs_certificate
        .subject_public_key_info
        .subject_public_key
        .raw_bytes()
        .to_vec();
    Ok(CheckedDevId {
        fingerprint: hex::encode(Sha256::digest(leaf)),
        cert,
        key: DevIdKey { spki_point: point },
    })
}

/// A DevID key the AK certified with TPM2_Certify: proof it lives in the AK's TPM.
pub fn certified_key(
    ak: &TpmPublic,
    public: &[u8],
    certify_attest: &[u8],
    certify_signature: &[u8],
) -> Result<TpmPublic, AttestError> {
    let devid = TpmPublic::from_tpm2b(public)
        .map_err(|e| AttestError::malformed("DevID public", e.to_string()))?;
    if !matches!(
        devid.key,
        ironroot_tpm::verify::PublicKey::Ecc {
            curve: ironroot_tpm::verify::EccCurve::NistP256,
            ..
        }
    ) {
        return Err(AttestError::rejected(
            "DevID",
            "unsupported DevID key algorithm: ironroot DevIDs are ECC P-256 keys",
        ));
    }
    let a = &devid.object_attributes;
    if !(a.fixed_tpm() && a.fixed_parent() && a.sign_encrypt()) {
        return Err(AttestError::rejected(
            "DevID",
            "the DevID key must be a fixedTPM, fixedParent signing key",
        ));
    }
    let attest = Attest::parse(certify_attest)
        .map_err(|e| AttestError::malformed("DevID certify", e.to_string()))?;
    let sig = TpmSignature::parse(certify_signature)
        .map_err(|e| AttestError::malformed("DevID certify signature", e.to_string()))?;
    verify_signature(ak, certify_attest, &sig).map_err(|e| {
        AttestError::rejected(
            "DevID certify",
            format!("not signed by the attested AK: {e}"),
        )
    })?;
    let Quoted::Certify { name, .. } = &attest.attested else {
        return Err(AttestError::rejected(
            "DevID certify",
            "the attestation is not a TPM2_Certify",
        ));
    };
    if *name != devid.name() {
        return Err(AttestError::rejected(
            "DevID certify",
            "the AK certified another key than the DevID key: the DevID key is not in this TPM",
        ));
    }
    Ok(devid)
}

/// The DevID key signed SHA-256(nonce) (ECDSA P-256, raw r||s).
pub fn check_devid_signature(key: &DevIdKey, nonce: &[u8], sig: &[u8]) -> Result<(), AttestError> {
    UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &key.spki_point)
        .verify(nonce, sig)
        .map_err(|_| {
            AttestError::rejected(
                "DevID signature",
                "the DevID key did not sign this challenge's nonce",
            )
        })
}
