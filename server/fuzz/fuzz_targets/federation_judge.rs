//! The federation poller's judge (`server/src/federation/validate.rs`) on what a peer's
//! bundle endpoint may answer, against a stored bundle.
//!
//! The first byte: bit 0 `needs_x509` (an https_spiffe relationship), bit 1 a stored bundle
//! (one root of the trust domain and a JWT key, sequence = the high nibble), bits 2-3 the
//! body: the rest of the input as is (0), or a bundle built from real certificates and keys
//! (1), damaged (2), against a stored bundle built the same way (3).
//!
//! Whatever the body, a bundle the judge lets through:
//! * is the document's own parse, for the relationship's trust domain;
//! * has a sequence no lower than the stored one's;
//! * holds an authority, and for https_spiffe an X.509 one;
//! * has no X.509 authority whose URI SANs name another trust domain (read by x509-parser);
//! * is "unchanged" only with the stored sequence and keys, and "changed" at the stored
//!   sequence only when that sequence is 0 and the keys differ.
#![no_main]

#[path = "common/bundles.rs"]
mod bundles;

use bundles::{bundle, damage, material, named_trust_domains, same_keys, td, TD};
use ironroot_api::bundle::TrustBundle;
use ironroot_server::fuzzing::{judge_bundle, JudgedBundle};
use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((flags, rest)) = data.split_first() else {
        return;
    };
    let _ = run(*flags, rest);
});

fn run(flags: u8, rest: &[u8]) -> Result<()> {
    let needs_x509 = flags & 1 != 0;
    let mut u = Unstructured::new(rest);
    let fixed_stored = || {
        let m = material();
        let mut b = TrustBundle::new(td());
        b.x509_authorities.push(m.certs[0].clone());
        b.jwt_authorities.push(m.jwt[0].clone());
        b.sequence_number = u64::from(flags >> 4);
        b
    };
    let (stored, body) = match (flags >> 2) & 3 {
        0 => ((flags & 2 != 0).then(fixed_stored), rest.to_vec()),
        1 => {
            let b = bundle(&mut u)?;
            let body = b.to_jwks_json().expect("material encodes").into_bytes();
            ((flags & 2 != 0).then(fixed_stored), body)
        }
        2 => {
            let b = bundle(&mut u)?;
            let body = b.to_jwks_json().expect("material encodes").into_bytes();
            ((flags & 2 != 0).then(fixed_stored), damage(&mut u, &body)?)
        }
        _ => {
            let stored = bundle(&mut u)?;
            let b = bundle(&mut u)?;
            let body = b.to_jwks_json().expect("material encodes").into_bytes();
            let body = if u.arbitrary()? {
                damage(&mut u, &body)?
            } else {
                body
            };
            (Some(stored), body)
        }
    };
    check(&body, stored.as_ref(), needs_x509);
    Ok(())
}

fn check(body: &[u8], stored: Option<&TrustBundle>, needs_x509: bool) {
    let td = td();
    let verdict = judge_bundle(&td, body, stored, needs_x509);
    let (fetched, unchanged) = match verdict {
        Ok(JudgedBundle::Changed(b)) => (b, false),
        Ok(JudgedBundle::Unchanged(b)) => (b, true),
        Err(refusal) => {
            assert!(
                refusal
                    .message
                    .starts_with(&format!("rule {}", refusal.rule)),
                "a refusal names its rule: {refusal:?}"
            );
            return;
        }
    };
    let text = std::str::from_utf8(body).expect("an accepted body is UTF-8");
    let parsed = TrustBundle::from_jwks_json(td.clone(), text).expect("an accepted body parses");
    assert_eq!(
        fetched, parsed,
        "the verdict's bundle is not the document's"
    );
    assert_eq!(fetched.trust_domain, td);
    assert!(
        !(fetched.x509_authorities.is_empty() && fetched.jwt_authorities.is_empty()),
        "an empty bundle was accepted"
    );
    if needs_x509 {
        assert!(
            !fetched.x509_authorities.is_empty(),
            "an https_spiffe bundle without an X.509 authority was accepted"
        );
    }
    for (i, der) in fetched.x509_authorities.iter().enumerate() {
        for named in named_trust_domains(der) {
            assert_eq!(named, TD, "x509 authority {i} names another trust domain");
        }
    }
    if let Some(stored) = stored {
        assert!(
            fetched.sequence_number >= stored.sequence_number,
            "sequence went back from {} to {}",
            stored.sequence_number,
            fetched.sequence_number
        );
        let same_seq = fetched.sequence_number == stored.sequence_number;
        let same = same_keys(&fetched, stored);
        if unchanged {
            assert!(
                same_seq && same,
                "unchanged, but the sequence or keys differ"
            );
        } else if same_seq {
            assert!(
                fetched.sequence_number == 0 && !same,
                "changed keys at an unchanged sequence above 0, or nothing changed"
            );
        }
    } else {
        assert!(!unchanged, "unchanged without a stored bundle");
    }
}
