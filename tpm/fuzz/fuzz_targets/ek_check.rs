//! The EK check on hostile bytes: an EK public area and an EK certificate an agent chose.
//! Errors, never a panic; with no manufacturer CA configured an EK passes only through the
//! allow-list, and an allow-listed EK without a certificate always passes.
//!
//! Input: [flags, then EK TPM2B_PUBLIC | certificate in halves]. flags bit 0: put the EK's
//! own hash on the allow-list; bit 1: send no certificate.
#![no_main]

use ironroot_tpm::verify::certchain::Anchors;
use ironroot_tpm::verify::ek::check_ek;
use ironroot_tpm::verify::TpmPublic;
use libfuzzer_sys::fuzz_target;
use sha2::{Digest, Sha256};

/// 2025-01-01: a fixed clock, so a run is reproducible.
const NOW: u64 = 1_735_689_600;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let (public, certificate) = rest.split_at(rest.len() / 2);
    let certificate = if flags & 2 != 0 { &[][..] } else { certificate };
    let Ok(ek) = TpmPublic::from_tpm2b(public) else {
        return;
    };
    let own_hash = ek.spki_der().ok().map(|s| hex::encode(Sha256::digest(&s)));
    let allow: Vec<String> = match (&own_hash, flags & 1 != 0) {
        (Some(h), true) => vec![h.to_uppercase()],
        _ => Vec::new(),
    };
    match check_ek(&ek, certificate, &Anchors::default(), &allow, NOW) {
        Ok(hash) => {
            assert!(
                !allow.is_empty(),
                "an EK passed with no CA and no allow-list"
            );
            assert_eq!(Some(hash), own_hash);
        }
        Err(e) => {
            let _ = (e.rule(), e.is_malformed(), e.to_string());
            let a = &ek.object_attributes;
            let shaped = a.fixed_tpm()
                && a.fixed_parent()
                && a.restricted()
                && a.decrypt()
                && !a.sign_encrypt();
            assert!(
                !(shaped && !allow.is_empty() && certificate.is_empty()),
                "an allow-listed EK without a certificate was refused: {e}"
            );
        }
    }
});
