//! `TrustBundle::from_jwks_json` (`api/src/bundle.rs`), the parser under the federation
//! judge and `bundle set --format jwks`, on any text.
//!
//! The first byte picks the input: the rest as is (even), or a JWK Set written from real
//! certificates and keys, damaged (odd). Never a panic; a document it accepts is one the
//! server can publish again: it encodes, and parses back to the same bundle; every X.509
//! authority's signed part is a certificate's (x509-parser reads it; the anchor's own
//! signature value is checked by no relying party); every JWT key id is non-empty and
//! unique.
#![no_main]

#[path = "common/bundles.rs"]
mod bundles;

use bundles::{bundle, damage, tbs, td};
use ironroot_api::bundle::TrustBundle;
use libfuzzer_sys::arbitrary::Unstructured;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((mode, rest)) = data.split_first() else {
        return;
    };
    let text = if mode % 2 == 0 {
        rest.to_vec()
    } else {
        let mut u = Unstructured::new(rest);
        let Ok(b) = bundle(&mut u) else { return };
        let json = b.to_jwks_json().expect("material encodes");
        let Ok(text) = damage(&mut u, json.as_bytes()) else {
            return;
        };
        text
    };
    let Ok(text) = std::str::from_utf8(&text) else {
        return;
    };
    let Ok(parsed) = TrustBundle::from_jwks_json(td(), text) else {
        return;
    };
    assert_eq!(parsed.trust_domain, td());
    for der in &parsed.x509_authorities {
        tbs(der);
    }
    let mut kids: Vec<&str> = parsed.jwt_authorities.iter().map(|a| &*a.key_id).collect();
    assert!(kids.iter().all(|k| !k.is_empty()), "an empty kid");
    kids.sort_unstable();
    kids.dedup();
    assert_eq!(kids.len(), parsed.jwt_authorities.len(), "a kid twice");
    let again = parsed
        .to_jwks_json()
        .unwrap_or_else(|e| panic!("an accepted bundle does not encode: {e}"));
    let back = TrustBundle::from_jwks_json(td(), &again).expect("its encoding parses");
    assert_eq!(
        back, parsed,
        "the encoding does not parse back to the bundle"
    );
});
