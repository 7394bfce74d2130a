//! EK and DevID certificate paths on hostile DER: chain building up to an anchor, and the
//! profile and path rules over any path of certificates that parse (signatures aside, so
//! the rules run on what the fuzzer makes). Errors, never a panic.
//!
//! Input: [flags, then DER certificates separated by the bytes 0xde 0xad]. flags bit 0:
//! the profile (EK or DevID). The last certificate is the anchor, the first the leaf.
#![no_main]

use der::Decode;
use ironroot_tpm::verify::certchain::{check_path, verify, Anchors, CertProfile};
use libfuzzer_sys::fuzz_target;
use x509_cert::Certificate;

/// 2025-01-01: a fixed clock, so a run is reproducible.
const NOW: u64 = 1_735_689_600;

fn split(data: &[u8]) -> Vec<&[u8]> {
    let mut parts = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i + 1 < data.len() {
        if data[i] == 0xde && data[i + 1] == 0xad {
            parts.push(&data[start..i]);
            start = i + 2;
            i += 2;
        } else {
            i += 1;
        }
    }
    parts.push(&data[start..]);
    parts
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let profile = if flags & 1 == 0 {
        CertProfile::Ek
    } else {
        CertProfile::DevId
    };
    let parts = split(rest);
    let path: Vec<Certificate> = parts
        .iter()
        .filter_map(|d| Certificate::from_der(d).ok())
        .collect();
    if let Err(e) = check_path(profile, &path) {
        let _ = e.to_string();
    }
    let Some((anchor, chain)) = parts.split_last() else {
        return;
    };
    let Some((leaf, intermediates)) = chain.split_first() else {
        return;
    };
    let Ok(anchors) = Anchors::from_der([anchor]) else {
        return;
    };
    let intermediates: Vec<Vec<u8>> = intermediates.iter().map(|d| d.to_vec()).collect();
    if let Err(e) = verify(leaf, &intermediates, &anchors, NOW, profile) {
        let _ = e.to_string();
    }
});
