use ring::rand::SystemRandom;
use ring::signature::{self as rs, EcdsaKeyPair, KeyPair, RsaKeyPair};
use rsa::pkcs8::EncodePrivateKey;

use super::*;
use crate::verify::tpm2::fixtures_for_tests::{self as fx, bytes, flipped, truncations, Xorshift};
use crate::verify::tpm2::ObjectAttributes;

const MSG: &[u8] = b"a TPMS_ATTEST stand-in";

fn sig_err(r: Result<(), TpmError>) -> String {
    match r {
        Err(TpmError::SignatureInvalid { reason }) => reason,
        other => panic!("expected SignatureInvalid, got {other:?}"),
    }
}

#[test]
fn real_quote_and_certify_signatures_verify() {
    let rsa_ak = TpmPublic::from_tpm2b(&bytes(fx::AK_RSA_PUB)).unwrap();
    let ecc_ak = TpmPublic::from_tpm2b(&bytes(fx::AK_ECC_PUB)).unwrap();
    for (ak, other_ak, msg, sig) in [
        (&rsa_ak, &ecc_ak, fx::QUOTE_RSA_MSG, fx::QUOTE_RSA_SIG),
        (&ecc_ak, &rsa_ak, fx::QUOTE_ECC_MSG, fx::QUOTE_ECC_SIG),
        (&rsa_ak, &ecc_ak, fx::CERTIFY_MSG, fx::CERTIFY_SIG),
    ] {
        let (msg, sig_bytes) = (bytes(msg), bytes(sig));
        let sig = TpmSignature::parse(&sig_bytes).unwrap();
        assert_eq!(sig.hash, HashAlg::Sha256);
        assert_eq!(sig.marshal().unwrap(), sig_bytes);
        verify_signature(ak, &msg, &sig).unwrap();

        // Every flipped message byte fails.
        for i in 0..msg.len() {
            sig_err(verify_signature(ak, &flipped(&msg, i * 8 + 3), &sig));
        }
        // A flipped bit in the signature value fails (or no longer parses).
        let value_start = sig_bytes.len() - 20;
        for bit in value_start * 8..sig_bytes.len() * 8 {
            if let Ok(s) = TpmSignature::parse(&flipped(&sig_bytes, bit)) {
                sig_err(verify_signature(ak, &msg, &s));
            }
        }
        // Another key's type: the scheme does not fit it.
        sig_err(verify_signature(other_ak, &msg, &sig));
    }
}

#[test]
fn rsa_pkcs1_and_pss_all_sizes_and_hashes() {
    let rng = SystemRandom::new();
    let attrs = ObjectAttributes(0x0004_0072); // sign, not restricted: any scheme
    for bits in [2048, 3072, 4096] {
        let key = fx::rsa_test_key(bits);
        let pair = RsaKeyPair::from_pkcs8(key.to_pkcs8_der().unwrap().as_bytes()).unwrap();
        let public = fx::rsa_public(&key.to_public_key(), attrs, None, None);
        let other = fx::rsa_public(
            &fx::rsa_test_key(if bits == 2048 { 3072 } else { 2048 }).to_public_key(),
            attrs,
            None,
            None,
        );
        for (enc, hash, pss) in [
            (
                &rs::RSA_PKCS1_SHA256 as &dyn rs::RsaEncoding,
                HashAlg::Sha256,
                false,
            ),
            (&rs::RSA_PKCS1_SHA384, HashAlg::Sha384, false),
            (&rs::RSA_PKCS1_SHA512, HashAlg::Sha512, false),
            (&rs::RSA_PSS_SHA256, HashAlg::Sha256, true),
            (&rs::RSA_PSS_SHA384, HashAlg::Sha384, true),
            (&rs::RSA_PSS_SHA512, HashAlg::Sha512, true),
        ] {
            let mut raw = vec![0; pair.public().modulus_len()];
            pair.sign(enc, &rng, MSG, &mut raw).unwrap();
            let value = if pss {
                SignatureValue::RsaPss(raw.clone())
            } else {
                SignatureValue::RsaSsa(raw.clone())
            };
            let sig = TpmSignature { hash, value };
            // Through the TPM wire format and back.
            let sig = TpmSignature::parse(&sig.marshal().unwrap()).unwrap();
            verify_signature(&public, MSG, &sig).unwrap();
            sig_err(verify_signature(&public, b"another message", &sig));
            sig_err(verify_signature(&other, MSG, &sig));
            // The same bytes under the other padding or another hash do not verify.
            let swapped = TpmSignature {
                hash,
                value: if pss {
                    SignatureValue::RsaSsa(raw.clone())
                } else {
                    SignatureValue::RsaPss(raw.clone())
                },
            };
            sig_err(verify_signature(&public, MSG, &swapped));
            let rehashed = TpmSignature {
                hash: if hash == HashAlg::Sha256 {
                    HashAlg::Sha384
                } else {
                    HashAlg::Sha256
                },
                ..sig.clone()
            };
            sig_err(verify_signature(&public, MSG, &rehashed));
        }
    }
}

/// Signs `msg` with a fresh key on `curve` and `hash` (prehashed, so every pair works);
/// returns the public area and (r, s).
fn ecdsa_sign(curve: EccCurve, hash: HashAlg, msg: &[u8]) -> (TpmPublic, Vec<u8>, Vec<u8>) {
    use p256::ecdsa::signature::hazmat::PrehashSigner;
    let digest = hash.digest(msg).unwrap();
    let attrs = ObjectAttributes(0x0004_0072);
    let (point, rs) = match curve {
        EccCurve::NistP256 => {
            let k = p256::ecdsa::SigningKey::random(&mut rand::rngs::OsRng);
            let s: p256::ecdsa::Signature = k.sign_prehash(&digest).unwrap();
            (
                k.verifying_key()
                    .to_encoded_point(false)
                    .as_bytes()
                    .to_vec(),
                s.to_bytes().to_vec(),
            )
        }
        EccCurve::NistP384 => {
            let k = p384::ecdsa::SigningKey::random(&mut rand::rngs::OsRng);
            let s: p384::ecdsa::Signature = k.sign_prehash(&digest).unwrap();
            (
                k.verifying_key()
                    .to_encoded_point(false)
                    .as_bytes()
                    .to_vec(),
                s.to_bytes().to_vec(),
            )
        }
    };
    let n = curve.field_size();
    let public = fx::ecc_public(curve, &point, attrs, None, None);
    (public, rs[..n].to_vec(), rs[n..].to_vec())
}

#[test]
fn ecdsa_every_curve_and_hash_pair() {
    for curve in [EccCurve::NistP256, EccCurve::NistP384] {
        for hash in [HashAlg::Sha256, HashAlg::Sha384] {
            let (public, r, s) = ecdsa_sign(curve, hash, MSG);
            let sig = TpmSignature {
                hash,
                value: SignatureValue::Ecdsa {
                    r: r.clone(),
                    s: s.clone(),
                },
            };
            verify_signature(
                &public,
                MSG,
                &TpmSignature::parse(&sig.marshal().unwrap()).unwrap(),
            )
            .unwrap();
            sig_err(verify_signature(&public, b"tampered", &sig));
            let swapped = TpmSignature {
                hash,
                value: SignatureValue::Ecdsa { r: s, s: r },
            };
            sig_err(verify_signature(&public, MSG, &swapped));
            let (other_key, _, _) = ecdsa_sign(curve, hash, MSG);
            sig_err(verify_signature(&other_key, MSG, &sig));
        }
        // SHA-512 on these curves is not offered by ring: said plainly.
        let (public, r, s) = ecdsa_sign(curve, HashAlg::Sha512, MSG);
        let sig = TpmSignature {
            hash: HashAlg::Sha512,
            value: SignatureValue::Ecdsa { r, s },
        };
        assert!(matches!(
            verify_signature(&public, MSG, &sig),
            Err(TpmError::Unsupported { .. })
        ));
    }
}

#[test]
fn ecdsa_r_and_s_shorter_than_the_field_are_left_padded() {
    let rng = SystemRandom::new();
    let alg = &rs::ECDSA_P256_SHA256_FIXED_SIGNING;
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(alg, &rng).unwrap();
    let pair = EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).unwrap();
    let public = fx::ecc_public(
        EccCurve::NistP256,
        pair.public_key().as_ref(),
        ObjectAttributes(0x0004_0072),
        None,
        None,
    );
    // About one signature in 256 has r < 2^248: a TPM sends such an r in 31 bytes.
    let (r, s) = (0..20_000)
        .map(|_| pair.sign(&rng, MSG).unwrap().as_ref().to_vec())
        .find(|sig| sig[0] == 0)
        .map(|sig| (sig[1..32].to_vec(), sig[32..].to_vec()))
        .expect("no short r in 20000 signatures");
    let sig = TpmSignature {
        hash: HashAlg::Sha256,
        value: SignatureValue::Ecdsa {
            r: r.clone(),
            s: s.clone(),
        },
    };
    verify_signature(&public, MSG, &sig).unwrap();
    // Redundant leading zeros are harmless too; a value wider than the field is not.
    let mut wide = vec![0, 0];
    wide.extend(&r);
    let padded = TpmSignature {
        hash: HashAlg::Sha256,
        value: SignatureValue::Ecdsa {
            r: wide,
            s: s.clone(),
        },
    };
    verify_signature(&public, MSG, &padded).unwrap();
    let too_long = TpmSignature {
        hash: HashAlg::Sha256,
        value: SignatureValue::Ecdsa { r: vec![1; 33], s },
    };
    assert!(sig_err(verify_signature(&public, MSG, &too_long)).contains("longer than"));
}

#[test]
fn key_rules_scheme_sign_attribute_sha1_and_size() {
    let ak = TpmPublic::from_tpm2b(&bytes(fx::AK_RSA_PUB)).unwrap();
    let sig = TpmSignature::parse(&bytes(fx::QUOTE_RSA_SIG)).unwrap();
    let msg = bytes(fx::QUOTE_RSA_MSG);
    // The AK's scheme is RSASSA/SHA-256: a PSS or SHA-384 claim is refused before any math.
    let reason = sig_err(verify_signature(
        &ak,
        &msg,
        &TpmSignature {
            hash: HashAlg::Sha384,
            ..sig.clone()
        },
    ));
    assert!(reason.contains("signs only with"), "{reason}");
    let TpmSignature {
        value: SignatureValue::RsaSsa(raw),
        ..
    } = &sig
    else {
        panic!()
    };
    sig_err(verify_signature(
        &ak,
        &msg,
        &TpmSignature {
            hash: sig.hash,
            value: SignatureValue::RsaPss(raw.clone()),
        },
    ));
    // SHA-1 is refused.
    let sha1 = TpmSignature {
        hash: HashAlg::Sha1,
        ..sig.clone()
    };
    let mut unscoped = ak.clone();
    unscoped.scheme = None;
    assert!(matches!(
        verify_signature(&unscoped, &msg, &sha1),
        Err(TpmError::Unsupported { .. })
    ));
    // A key without the sign attribute cannot have signed.
    let ek = TpmPublic::from_tpm2b(&bytes(fx::EK_RSA_PUB)).unwrap();
    assert!(matches!(
        verify_signature(&ek, &msg, &sig),
        Err(TpmError::KeyUnsuitable { .. })
    ));
    // Truncated signature value.
    let short = TpmSignature {
        hash: sig.hash,
        value: SignatureValue::RsaSsa(raw[1..].to_vec()),
    };
    assert!(sig_err(verify_signature(&ak, &msg, &short)).contains("bytes"));
    // RSA-1024 is not accepted for signatures.
    let key1024 = TpmPublic::from_parts(crate::verify::tpm2::PublicParts {
        key: PublicKey::Rsa {
            modulus: vec![0xc1; 128],
            exponent: 65537,
        },
        ..fx_parts(&ak)
    })
    .unwrap();
    let sig1024 = TpmSignature {
        hash: HashAlg::Sha256,
        value: SignatureValue::RsaSsa(vec![1; 128]),
    };
    assert!(matches!(
        verify_signature(&key1024, &msg, &sig1024),
        Err(TpmError::Unsupported { .. })
    ));
}

fn fx_parts(p: &TpmPublic) -> crate::verify::tpm2::PublicParts {
    crate::verify::tpm2::PublicParts {
        name_alg: p.name_alg,
        object_attributes: p.object_attributes,
        auth_policy: p.auth_policy.clone(),
        symmetric: p.symmetric,
        scheme: p.scheme,
        kdf: p.kdf,
        key: p.key.clone(),
    }
}

#[test]
fn parse_errors() {
    for hex in [fx::QUOTE_RSA_SIG, fx::QUOTE_ECC_SIG] {
        let b = bytes(hex);
        for t in truncations(&b) {
            assert!(
                matches!(TpmSignature::parse(t), Err(TpmError::Truncated { .. })),
                "{}",
                t.len()
            );
        }
        let mut trailing = b.clone();
        trailing.push(0);
        assert!(matches!(
            TpmSignature::parse(&trailing),
            Err(TpmError::Invalid { field: "(end)", .. })
        ));
    }
    assert!(matches!(
        TpmSignature::parse(&[0x00, 0x05, 0x00, 0x0b]),
        Err(TpmError::Unsupported {
            field: "sigAlg",
            ..
        })
    ));
    assert!(matches!(
        TpmSignature::parse(&[0x00, 0x01, 0x00, 0x0b]),
        Err(TpmError::Invalid {
            field: "sigAlg",
            offset: 0,
            ..
        })
    ));
    assert!(matches!(
        TpmSignature::parse(&[0x00, 0x14, 0x00, 0x0b, 0x02, 0x01]),
        Err(TpmError::Invalid {
            field: "sig",
            offset: 4,
            ..
        })
    ));
    let mut rng = Xorshift(99);
    let seed = bytes(fx::QUOTE_ECC_SIG);
    for _ in 0..20_000 {
        let mut v = seed.clone();
        let i = rng.below(v.len());
        v[i] = rng.next() as u8;
        v.truncate(rng.below(v.len() + 1));
        let _ = TpmSignature::parse(&v);
    }
}
