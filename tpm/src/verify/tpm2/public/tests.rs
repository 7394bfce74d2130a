use super::*;
use crate::verify::tpm2::fixtures_for_tests::{self as fx, bytes, flipped, truncations, Xorshift};
use crate::verify::tpm2::{SymAlgorithm, SymMode};

/// EK policy A (PolicySecret(TPM_RH_ENDORSEMENT)) in SHA-256, from the EK profile.
const POLICY_A_SHA256: &str = "837197674484b3f81a90cc8d46a5d724fd52d76e06520b64f2a1da1b331469aa";

/// A TPMT_PUBLIC built field by field from Part 2 (Tables 191, 197, 182): the RSA EK of
/// template L-1 with `modulus`.
fn hand_built_rsa_ek(modulus: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend([0x00, 0x01]); // type = TPM_ALG_RSA
    v.extend([0x00, 0x0b]); // nameAlg = TPM_ALG_SHA256
    v.extend([0x00, 0x03, 0x00, 0xb2]); // objectAttributes
    v.extend([0x00, 0x20]); // authPolicy.size
    v.extend(hex::decode(POLICY_A_SHA256).unwrap());
    v.extend([0x00, 0x06, 0x00, 0x80, 0x00, 0x43]); // symmetric: AES, 128, CFB
    v.extend([0x00, 0x10]); // scheme: TPM_ALG_NULL
    v.extend([0x08, 0x00]); // keyBits = 2048
    v.extend([0x00, 0x00, 0x00, 0x00]); // exponent = default
    v.extend((modulus.len() as u16).to_be_bytes()); // unique.size
    v.extend(modulus);
    v
}

#[test]
fn hand_built_ek_equals_the_tpms_and_names_match() {
    let tpm = bytes(fx::EK_RSA_PUB);
    let ek = TpmPublic::from_tpm2b(&tpm).unwrap();
    let PublicKey::Rsa { modulus, exponent } = &ek.key else {
        panic!()
    };
    assert_eq!(*exponent, 65537);
    let hand = hand_built_rsa_ek(modulus);
    assert_eq!(hand, tpm[2..]);
    assert_eq!(ek.tpmt_bytes(), &hand[..]);
    assert_eq!(ek.to_tpm2b(), tpm);

    // Name = 0x000b || SHA-256(TPMT_PUBLIC), and the TPM printed the same.
    let mut want = vec![0x00, 0x0b];
    want.extend(HashAlg::Sha256.digest(&hand).unwrap());
    assert_eq!(ek.name(), want);
    assert_eq!(ek.name(), bytes(fx::EK_RSA_NAME));
    assert_eq!(TpmPublic::from_tpmt(&hand).unwrap(), ek);

    assert_eq!(ek.name_alg, HashAlg::Sha256);
    assert_eq!(ek.auth_policy, hex::decode(POLICY_A_SHA256).unwrap());
    assert_eq!(
        ek.symmetric,
        Some(SymmetricDef {
            algorithm: SymAlgorithm::Aes,
            key_bits: 128,
            mode: Some(SymMode::Cfb)
        })
    );
    assert_eq!(ek.scheme, None);
    let a = ek.object_attributes;
    assert!(a.fixed_tpm() && a.fixed_parent() && a.sensitive_data_origin());
    assert!(a.admin_with_policy() && a.admin_with_identity() && a.restricted() && a.decrypt());
    assert!(!a.user_with_auth() && !a.sign_encrypt() && !a.st_clear() && !a.no_da());
    assert_eq!(
        a.to_string(),
        "fixedtpm|fixedparent|sensitivedataorigin|adminwithpolicy|restricted|decrypt (0x000300b2)"
    );
}

#[test]
fn p384_ek_from_swtpm() {
    let ek = TpmPublic::from_tpm2b(&bytes(fx::EK_P384_PUB)).unwrap();
    assert_eq!(ek.name(), bytes(fx::EK_P384_NAME));
    assert_eq!(ek.name_alg, HashAlg::Sha384);
    assert_eq!(ek.object_attributes.bits(), 0x0003_00f2);
    assert_eq!(ek.symmetric.unwrap().key_bits, 256);
    assert_eq!(ek.auth_policy.len(), 48);
    assert_eq!((ek.scheme, ek.kdf), (None, None));
    let PublicKey::Ecc { curve, x, y } = &ek.key else {
        panic!()
    };
    assert_eq!((*curve, x.len(), y.len()), (EccCurve::NistP384, 48, 48));
}

#[test]
fn aks_from_swtpm_have_tpm_names_and_ak_attributes() {
    for (pub_hex, name_hex, scheme) in [
        (
            fx::AK_RSA_PUB,
            fx::AK_RSA_NAME,
            KeyScheme::RsaSsa(HashAlg::Sha256),
        ),
        (
            fx::AK_ECC_PUB,
            fx::AK_ECC_NAME,
            KeyScheme::Ecdsa(HashAlg::Sha256),
        ),
    ] {
        let ak = TpmPublic::from_tpm2b(&bytes(pub_hex)).unwrap();
        assert_eq!(ak.name(), bytes(name_hex));
        assert_eq!(ak.scheme, Some(scheme));
        assert_eq!(ak.object_attributes, fx::AK_ATTRS);
        ak.ensure_attestation_key().unwrap();
    }
    let ek = TpmPublic::from_tpm2b(&bytes(fx::EK_RSA_PUB)).unwrap();
    match ek.ensure_attestation_key().unwrap_err() {
        TpmError::KeyUnsuitable { reason, .. } => {
            assert!(
                reason.contains("sign") && reason.contains("decrypt clear"),
                "{reason}"
            )
        }
        e => panic!("{e:?}"),
    }
}

#[test]
fn from_parts_reproduces_tpm_bytes() {
    for hex in [
        fx::EK_RSA_PUB,
        fx::EK_P384_PUB,
        fx::AK_RSA_PUB,
        fx::AK_ECC_PUB,
        fx::DEVID_PUB,
    ] {
        let p = TpmPublic::from_tpm2b(&bytes(hex)).unwrap();
        let again = TpmPublic::from_parts(PublicParts {
            name_alg: p.name_alg,
            object_attributes: p.object_attributes,
            auth_policy: p.auth_policy.clone(),
            symmetric: p.symmetric,
            scheme: p.scheme,
            kdf: p.kdf,
            key: p.key.clone(),
        })
        .unwrap();
        assert_eq!(again, p);
    }
}

#[test]
fn spki_of_the_eks_equals_their_certificates() {
    for (pub_hex, spki_hex, other_spki) in [
        (fx::EK_RSA_PUB, fx::EK_RSA_SPKI, fx::EK_P384_SPKI),
        (fx::EK_P384_PUB, fx::EK_P384_SPKI, fx::EK_RSA_SPKI),
    ] {
        let ek = TpmPublic::from_tpm2b(&bytes(pub_hex)).unwrap();
        assert_eq!(ek.spki_der().unwrap(), bytes(spki_hex));
        assert!(ek.matches_spki(&bytes(spki_hex)));
        assert!(!ek.matches_spki(&bytes(other_spki)));
        assert!(matches!(
            ek.check_spki(&bytes(other_spki)),
            Err(TpmError::KeyMismatch { .. })
        ));
        assert!(matches!(
            ek.check_spki(b"\x30\x03junk"),
            Err(TpmError::Invalid { .. })
        ));
    }
}

#[test]
fn spki_comparison_is_on_key_material() {
    use p384::elliptic_curve::sec1::ToEncodedPoint;
    use p384::pkcs8::DecodePublicKey;
    let ek = TpmPublic::from_tpm2b(&bytes(fx::EK_P384_PUB)).unwrap();
    // The same point compressed in the certificate still matches.
    let k = p384::PublicKey::from_public_key_der(&bytes(fx::EK_P384_SPKI)).unwrap();
    let compressed = k.to_encoded_point(true);
    let spki = bytes(fx::EK_P384_SPKI);
    let prefix_len = spki.len() - 97; // the BIT STRING holds 04 || x || y (97 bytes)
    let mut c = spki[..prefix_len].to_vec();
    c.extend(compressed.as_bytes());
    // Fix the outer SEQUENCE and BIT STRING lengths for a 49-byte point.
    c[1] -= 48;
    c[prefix_len - 2] -= 48;
    assert!(ek.matches_spki(&c), "{}", ek.check_spki(&c).unwrap_err());

    // A different P-384 point does not.
    let mut other = bytes(fx::EK_P384_PUB);
    let n = other.len();
    other[n - 60] ^= 1; // inside y: the point is no longer on the curve
    if let Ok(p) = TpmPublic::from_tpm2b(&other) {
        assert!(!p.matches_spki(&spki));
        assert!(p.spki_der().is_err());
    }
}

#[test]
fn every_truncation_is_an_error_naming_a_field() {
    for hex in [fx::EK_RSA_PUB, fx::EK_P384_PUB, fx::AK_ECC_PUB] {
        let b = bytes(hex);
        for t in truncations(&b) {
            assert!(
                matches!(TpmPublic::from_tpm2b(t), Err(TpmError::Truncated { .. })),
                "{t:02x?}"
            );
        }
        for t in truncations(&b[2..]) {
            match TpmPublic::from_tpmt(t) {
                Err(TpmError::Truncated {
                    structure, offset, ..
                }) => {
                    assert!(structure.starts_with("TPM"));
                    assert!(offset <= t.len());
                }
                other => panic!("{} bytes: {other:?}", t.len()),
            }
        }
    }
}

#[test]
fn bit_flips_and_random_input_never_panic() {
    for hex in [
        fx::EK_RSA_PUB,
        fx::EK_P384_PUB,
        fx::AK_RSA_PUB,
        fx::AK_ECC_PUB,
    ] {
        let b = bytes(hex);
        let name = TpmPublic::from_tpm2b(&b).unwrap().name();
        for bit in 0..b.len() * 8 {
            if let Ok(p) = TpmPublic::from_tpm2b(&flipped(&b, bit)) {
                assert_ne!(p.name(), name, "bit {bit} changed nothing");
            }
        }
    }
    let mut rng = Xorshift(0x5eed);
    let seed = bytes(fx::EK_P384_PUB);
    for _ in 0..20_000 {
        let mut v = seed.clone();
        for _ in 0..1 + rng.below(4) {
            let i = rng.below(v.len());
            v[i] = rng.next() as u8;
        }
        v.truncate(rng.below(v.len() + 1));
        let _ = TpmPublic::from_tpm2b(&v);
        let _ = TpmPublic::from_tpmt(&v);
    }
}

/// `f` applied to the hand-built EK, parsed as a TPMT_PUBLIC.
fn parse_modified(f: impl FnOnce(&mut Vec<u8>)) -> Result<TpmPublic, TpmError> {
    let mut v = hand_built_rsa_ek(&[0xc5; 256]);
    f(&mut v);
    TpmPublic::from_tpmt(&v)
}

fn assert_invalid(r: Result<TpmPublic, TpmError>, field: &str, offset: usize) {
    match r {
        Err(TpmError::Invalid {
            field: f,
            offset: o,
            ..
        }) if f == field && o == offset => {}
        other => panic!("expected Invalid {field} at {offset}, got {other:?}"),
    }
}

#[test]
fn invalid_fields_are_named_with_offsets() {
    parse_modified(|_| ()).unwrap();
    assert_invalid(parse_modified(|v| v[1] = 0x99), "type", 0);
    assert_invalid(parse_modified(|v| v[4] = 0x80), "objectAttributes", 4);
    assert_invalid(parse_modified(|v| v[9] = 0x41), "authPolicy", 8); // 65 > 64
    assert_invalid(
        parse_modified(|v| {
            v[9] = 0x14;
            v.drain(30..42);
        }),
        "authPolicy",
        8,
    );
    // XOR is not a TPMI_ALG_SYM_OBJECT.
    assert_invalid(parse_modified(|v| v[43] = 0x0a), "symmetric.algorithm", 42);
    assert_invalid(parse_modified(|v| v[45] = 0x81), "symmetric.keyBits", 44);
    assert_invalid(parse_modified(|v| v[47] = 0x44 + 1), "symmetric.mode", 46);
    // ECDSA is no scheme for an RSA key.
    assert_invalid(parse_modified(|v| v[49] = 0x18), "scheme.scheme", 48);
    // A 1024-bit modulus where keyBits says 2048.
    assert_invalid(
        TpmPublic::from_tpmt(&hand_built_rsa_ek(&[0xc5; 128])),
        "unique.rsa",
        56,
    );
    assert_invalid(parse_modified(|v| v.push(0)), "(end)", 314);
    let empty = parse_modified(|v| {
        v.truncate(56);
        v.extend([0, 0]);
    });
    match empty {
        Err(TpmError::Invalid { reason, .. }) => assert!(reason.contains("template"), "{reason}"),
        other => panic!("{other:?}"),
    }
    match TpmPublic::from_tpmt(&vec![0; MAX_TPMT_PUBLIC_SIZE + 1]) {
        Err(TpmError::Invalid { reason, .. }) => assert!(reason.contains("larger"), "{reason}"),
        other => panic!("{other:?}"),
    }
    let mut tpm2b = bytes(fx::EK_RSA_PUB);
    tpm2b.push(0);
    assert_invalid(TpmPublic::from_tpm2b(&tpm2b), "(end)", 316);
}

#[test]
fn unsupported_values_say_what_is_supported() {
    let unsupported = |r: Result<TpmPublic, TpmError>, field: &str| match r {
        Err(TpmError::Unsupported {
            field: f, reason, ..
        }) if f == field => reason,
        other => panic!("expected Unsupported {field}, got {other:?}"),
    };
    let r = unsupported(parse_modified(|v| v[1] = 0x08), "type");
    assert!(r.contains("KEYEDHASH"), "{r}");
    let r = unsupported(parse_modified(|v| v[3] = 0x27), "nameAlg");
    assert!(r.contains("sha256"), "{r}");
    unsupported(
        parse_modified(|v| v[50..52].copy_from_slice(&1000u16.to_be_bytes())),
        "keyBits",
    );
    let mut p521 = bytes(fx::EK_P384_PUB);
    p521[2 + 66] = 0x05; // curveID: after authPolicy (8 + 50), symmetric (6), scheme (2)
    let r = unsupported(TpmPublic::from_tpm2b(&p521), "curveID");
    assert!(r.contains("P-384"), "{r}");
    match parse_modified(|v| v[3] = 0x10) {
        Err(TpmError::Invalid {
            field: "nameAlg", ..
        }) => {}
        other => panic!("{other:?}"),
    }
}
