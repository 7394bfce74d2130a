use super::*;
use crate::verify::tpm2::fixtures_for_tests::{self as fx, bytes, flipped, truncations, Xorshift};
use crate::verify::tpm2::TpmPublic;

/// A TPMS_ATTEST built field by field from Part 2 (Tables 127, 120, 112, 93).
fn hand_built(ty: u16, body: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend(0xff54_4347u32.to_be_bytes()); // magic
    v.extend(ty.to_be_bytes()); // type
    v.extend([0x00, 0x04, 0x00, 0x0b, 0xaa, 0xbb]); // qualifiedSigner (a short blob)
    v.extend([0x00, 0x03, 1, 2, 3]); // extraData
    v.extend(77u64.to_be_bytes()); // clockInfo.clock
    v.extend(5u32.to_be_bytes()); // resetCount
    v.extend(6u32.to_be_bytes()); // restartCount
    v.push(1); // safe
    v.extend(0x0102_0304_0506_0708u64.to_be_bytes()); // firmwareVersion
    v.extend(body);
    v
}

/// TPMS_QUOTE_INFO selecting sha1 {0, 7} and sha256 {16, 23}.
fn quote_body(digest: &[u8]) -> Vec<u8> {
    let mut b = vec![0, 0, 0, 2]; // count
    b.extend([0x00, 0x04, 3, 0b1000_0001, 0, 0]); // sha1: PCR 0, 7
    b.extend([0x00, 0x0b, 3, 0, 0, 0b1000_0001]); // sha256: PCR 16, 23
    b.extend((digest.len() as u16).to_be_bytes());
    b.extend(digest);
    b
}

#[test]
fn hand_built_quote_decodes_every_field() {
    let a = Attest::parse(&hand_built(0x8018, &quote_body(&[9; 32]))).unwrap();
    assert_eq!(a.magic, TPM_GENERATED_VALUE);
    assert_eq!(a.signer, [0x00, 0x0b, 0xaa, 0xbb]);
    assert_eq!(a.extra_data, [1, 2, 3]);
    assert_eq!(
        a.clock,
        ClockInfo {
            clock: 77,
            reset_count: 5,
            restart_count: 6,
            safe: true
        }
    );
    assert_eq!(a.firmware_version, 0x0102_0304_0506_0708);
    assert_eq!(
        a.attested,
        Attested::Quote {
            pcr_select: vec![
                PcrSelection {
                    hash: HashAlg::Sha1,
                    pcrs: vec![0, 7]
                },
                PcrSelection {
                    hash: HashAlg::Sha256,
                    pcrs: vec![16, 23]
                },
            ],
            pcr_digest: vec![9; 32],
        }
    );
}

#[test]
fn pcr_digest_is_hash_of_concatenation() {
    let a = [1u8; 32];
    let b = [2u8; 32];
    let mut cat = a.to_vec();
    cat.extend(b);
    assert_eq!(
        pcr_digest(HashAlg::Sha256, &[&a, &b]).unwrap(),
        HashAlg::Sha256.digest(&cat).unwrap()
    );
    // Known answer: SHA-256 of 64 zero bytes (two reset PCRs).
    assert_eq!(
        hex::encode(pcr_digest(HashAlg::Sha256, &[&[0; 32], &[0; 32]]).unwrap()),
        "f5a5fd42d16a20302798ef6ed309979b43003d2320d9f0e8ea9831a92759fb4b"
    );
}

#[test]
fn real_quotes_check_against_nonce_and_pcr_values() {
    for (msg, pcrs, nonce, selected) in [
        (
            fx::QUOTE_RSA_MSG,
            fx::QUOTE_RSA_PCRS,
            "0011223344556677",
            vec![0, 1, 2, 3],
        ),
        (
            fx::QUOTE_ECC_MSG,
            fx::QUOTE_ECC_PCRS,
            "a1b2c3d4e5f60718",
            vec![0, 1, 2, 3, 7],
        ),
    ] {
        let a = Attest::parse(&bytes(msg)).unwrap();
        let nonce = bytes(nonce);
        assert_eq!(a.extra_data, nonce);
        let values = bytes(pcrs);
        let values: Vec<&[u8]> = values.chunks(32).collect();
        let sel = a.check_quote(&nonce, HashAlg::Sha256, &values).unwrap();
        assert_eq!(
            sel,
            [PcrSelection {
                hash: HashAlg::Sha256,
                pcrs: selected
            }]
        );

        // Wrong nonce, a changed PCR, a missing PCR, another hash: all named mismatches.
        let what = |r: Result<&[PcrSelection], TpmError>| match r {
            Err(TpmError::EvidenceMismatch { what, .. }) => what,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            what(a.check_quote(b"other", HashAlg::Sha256, &values)),
            "quote extraData (nonce)"
        );
        let mut changed = values.clone();
        let other = [0xffu8; 32];
        changed[1] = &other;
        assert_eq!(
            what(a.check_quote(&nonce, HashAlg::Sha256, &changed)),
            "quote pcrDigest"
        );
        assert_eq!(
            what(a.check_quote(&nonce, HashAlg::Sha256, &values[1..])),
            "number of PCR values"
        );
        assert_eq!(
            what(a.check_quote(&nonce, HashAlg::Sha384, &values)),
            "quote pcrDigest"
        );
    }
}

#[test]
fn real_certify_names_the_certified_key() {
    let a = Attest::parse(&bytes(fx::CERTIFY_MSG)).unwrap();
    let key = TpmPublic::from_tpm2b(&bytes(fx::DEVID_PUB)).unwrap();
    let Attested::Certify {
        name,
        qualified_name,
    } = &a.attested
    else {
        panic!("{a:?}")
    };
    assert_eq!(name, &key.name());
    assert_eq!(name, &bytes(fx::DEVID_NAME));
    assert_eq!(qualified_name.len(), 34);
    assert!(matches!(
        a.check_quote(&a.extra_data, HashAlg::Sha256, &[]),
        Err(TpmError::EvidenceMismatch {
            what: "attestation type",
            ..
        })
    ));
}

#[test]
fn wrong_magic_is_bad_magic() {
    let mut v = bytes(fx::QUOTE_RSA_MSG);
    v[3] ^= 1;
    assert_eq!(
        Attest::parse(&v),
        Err(TpmError::BadMagic { found: 0xff54_4346 })
    );
    let e = Attest::parse(&v).unwrap_err().to_string();
    assert!(
        e.contains("0xff544346") && e.contains("not produced by a TPM"),
        "{e}"
    );
}

#[test]
fn types_other_than_quote_and_certify() {
    // TPM_ST_ATTEST_TIME: known, body not decoded.
    let a = Attest::parse(&hand_built(0x8019, &[1, 2, 3])).unwrap();
    assert_eq!(a.attested, Attested::Other(0x8019));
    // Not a TPM_ST_ATTEST_* tag at all.
    assert!(matches!(
        Attest::parse(&hand_built(0x8001, &[])),
        Err(TpmError::Invalid {
            field: "type",
            offset: 4,
            ..
        })
    ));
}

#[test]
fn invalid_fields_are_named() {
    let field_of = |v: Vec<u8>| match Attest::parse(&v) {
        Err(TpmError::Invalid {
            structure, field, ..
        }) => format!("{structure}.{field}"),
        other => panic!("{other:?}"),
    };
    let q = hand_built(0x8018, &quote_body(&[9; 32]));
    let body = q.len() - quote_body(&[9; 32]).len();
    let mut v = q.clone();
    v[body - 9] = 2; // safe
    assert_eq!(field_of(v), "TPMS_CLOCK_INFO.safe");
    let mut v = q.clone();
    v[body + 3] = 17;
    assert_eq!(field_of(v), "TPML_PCR_SELECTION.count");
    let mut v = q.clone();
    v[body + 6] = 5; // sizeofSelect of the first bank
    assert_eq!(field_of(v), "TPMS_PCR_SELECTION.sizeofSelect");
    let mut v = q.clone();
    v[body + 11] = 0x04; // second bank is sha1 too
    assert_eq!(field_of(v), "TPMS_PCR_SELECTION.hash");
    let mut v = q.clone();
    v.push(0);
    assert_eq!(field_of(v), "TPMS_ATTEST.(end)");
    assert_eq!(
        field_of(hand_built(0x8018, &quote_body(&[9; 65]))),
        "TPMS_QUOTE_INFO.pcrDigest"
    );
    let mut v = q;
    v[7] = 67; // qualifiedSigner.size over TPM2B_NAME's 66
    assert_eq!(field_of(v), "TPMS_ATTEST.qualifiedSigner");
}

#[test]
fn truncations_flips_and_noise_never_panic() {
    for hex in [fx::QUOTE_RSA_MSG, fx::QUOTE_ECC_MSG, fx::CERTIFY_MSG] {
        let b = bytes(hex);
        for t in truncations(&b) {
            assert!(
                matches!(Attest::parse(t), Err(TpmError::Truncated { .. })),
                "{}",
                t.len()
            );
        }
        let good = Attest::parse(&b).unwrap();
        for bit in 0..b.len() * 8 {
            if let Ok(a) = Attest::parse(&flipped(&b, bit)) {
                assert_ne!(a, good, "bit {bit}");
            }
        }
    }
    let mut rng = Xorshift(7);
    let seed = bytes(fx::QUOTE_RSA_MSG);
    for _ in 0..20_000 {
        let mut v = seed.clone();
        for _ in 0..1 + rng.below(4) {
            let i = rng.below(v.len());
            v[i] = rng.next() as u8;
        }
        v.truncate(rng.below(v.len() + 1));
        let _ = Attest::parse(&v);
    }
}
