//! The quote check on hostile bytes: a key, an attestation, a signature and PCR values
//! an agent chose. Errors, never a panic; whatever passes vouches for exactly the PCRs
//! asked for, in order.
//!
//! Input: [flags, then AK TPM2B_PUBLIC | TPMS_ATTEST | TPMT_SIGNATURE | PCR values in
//! quarters]. flags bit 0: take the attestation's own extraData as the nonce (so the checks
//! after the nonce run); bits 1-3: the bank; bits 4-7: how many PCRs are asked for.
#![no_main]

use ironroot_tpm::verify::eventlog::HashAlg;
use ironroot_tpm::verify::quote::Quote;
use ironroot_tpm::verify::{Attest, TpmPublic};
use libfuzzer_sys::fuzz_target;

const BANKS: [HashAlg; 6] = [
    HashAlg::Sha1,
    HashAlg::Sha256,
    HashAlg::Sha384,
    HashAlg::Sha512,
    HashAlg::Sm3_256,
    HashAlg::Unknown(0x0099),
];

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let q = rest.len() / 4;
    let (key, rest) = rest.split_at(q);
    let (attest, rest) = rest.split_at(q);
    let (signature, values) = rest.split_at(q);
    let nonce = if flags & 1 == 1 {
        Attest::parse(attest)
            .map(|a| a.extra_data)
            .unwrap_or_default()
    } else {
        vec![0; 32]
    };
    let bank = BANKS[usize::from((flags >> 1) & 7) % BANKS.len()];
    let pcrs: Vec<u32> = (0..u32::from(flags >> 4)).collect();
    let size = bank.known_size().unwrap_or(32);
    let values: Vec<(u32, &[u8])> = values
        .chunks(1 + size)
        .filter_map(|c| c.split_first())
        .map(|(i, d)| (u32::from(*i), d))
        .collect();
    let quote = match Quote::parse(attest, &nonce) {
        Ok(q) => q,
        Err(e) => {
            let _ = (e.rule(), e.is_malformed(), e.to_string());
            return;
        }
    };
    let Ok(ak) = TpmPublic::from_tpm2b(key) else {
        return;
    };
    match quote.verify(&ak, signature, bank, &pcrs, &values) {
        Ok(quoted) => {
            let indices: Vec<u32> = quoted.iter().map(|(i, _)| *i).collect();
            assert_eq!(
                indices, pcrs,
                "a quote vouched for other PCRs than asked for"
            );
        }
        Err(e) => {
            let _ = (e.rule(), e.is_malformed(), e.to_string());
        }
    }
});
