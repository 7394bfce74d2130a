//! The DevID checks on hostile bytes: an AK, a DevID public area, its certify and
//! signature, and a certificate chain an agent chose. Errors, never a panic, and nothing
//! passes without a configured DevID CA.
//!
//! Input: [AK TPM2B_PUBLIC | DevID TPM2B_PUBLIC | TPMS_ATTEST | TPMT_SIGNATURE | chain] in
//! fifths; the chain part is cut into certificates at every 0xff byte.
#![no_main]

use ironroot_tpm::verify::certchain::Anchors;
use ironroot_tpm::verify::devid::{certified_key, check_devid, DevIdEvidence};
use ironroot_tpm::verify::TpmPublic;
use libfuzzer_sys::fuzz_target;

/// 2025-01-01: a fixed clock, so a run is reproducible.
const NOW: u64 = 1_735_689_600;

fuzz_target!(|data: &[u8]| {
    let f = data.len() / 5;
    let (ak, rest) = data.split_at(f);
    let (public, rest) = rest.split_at(f);
    let (attest, rest) = rest.split_at(f);
    let (signature, chain) = rest.split_at(f);
    let Ok(ak) = TpmPublic::from_tpm2b(ak) else {
        return;
    };
    if let Err(e) = certified_key(&ak, public, attest, signature) {
        let _ = (e.rule(), e.is_malformed(), e.to_string());
    }
    let chain: Vec<Vec<u8>> = chain.split(|b| *b == 0xff).map(<[u8]>::to_vec).collect();
    let evidence = DevIdEvidence {
        chain: &chain,
        public,
        certify_attest: attest,
        certify_signature: signature,
    };
    let r = check_devid(&evidence, &ak, &Anchors::default(), NOW);
    assert!(r.is_err(), "a DevID passed with no DevID CA configured");
});
