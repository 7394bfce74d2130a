use aes::cipher::AsyncStreamCipher;
use p256::elliptic_curve::sec1::ToEncodedPoint;
use rand::rngs::StdRng;
use ring::hmac;

use super::*;
use crate::verify::tpm2::fixtures_for_tests::{self as fx, bytes, Xorshift};
use crate::verify::tpm2::{ObjectAttributes, PublicParts, SymmetricDef};

fn aes_cfb(bits: u16) -> Option<SymmetricDef> {
    Some(SymmetricDef {
        algorithm: SymAlgorithm::Aes,
        key_bits: bits,
        mode: Some(SymMode::Cfb),
    })
}

/// The Name of some object (an AK).
fn name(byte: u8) -> Vec<u8> {
    let mut n = vec![0x00, 0x0b];
    n.extend([byte; 32]);
    n
}

/// TPM2_ActivateCredential in software, written from Part 1 §24 independently of
/// `protect`: check the HMAC, then decrypt. Returns the credential or why it failed.
fn unprotect(
    ek: &TpmPublic,
    seed: &[u8],
    name: &[u8],
    id_object: &[u8],
) -> Result<Vec<u8>, String> {
    let hash = ek.name_alg;
    let size = usize::from(u16::from_be_bytes([id_object[0], id_object[1]]));
    let (outer_hmac, enc_identity) = id_object[2..].split_at(size);
    let hmac_key = kdfa(
        hash,
        seed,
        b"INTEGRITY\0",
        &[],
        &[],
        hash.digest_len().unwrap(),
    )
    .unwrap();
    if hash.hmac(&hmac_key, &[enc_identity, name]).unwrap() != outer_hmac {
        return Err("integrity check failed".into());
    }
    let key_bytes = usize::from(ek.symmetric.unwrap().key_bits / 8);
    let sym_key = kdfa(hash, seed, b"STORAGE\0", name, &[], key_bytes).unwrap();
    let mut plain = enc_identity.to_vec();
    let iv = [0u8; 16];
    match key_bytes {
        16 => cfb_mode::Decryptor::<Aes128>::new_from_slices(&sym_key, &iv)
            .unwrap()
            .decrypt(&mut plain),
        32 => cfb_mode::Decryptor::<Aes256>::new_from_slices(&sym_key, &iv)
            .unwrap()
            .decrypt(&mut plain),
        n => panic!("{n}"),
    }
    let len = usize::from(u16::from_be_bytes([plain[0], plain[1]]));
    Ok(plain[2..2 + len].to_vec())
}

fn rsa_ek() -> (rsa::RsaPrivateKey, TpmPublic) {
    let key = fx::rsa_test_key(2048);
    let public = fx::rsa_public(&key.to_public_key(), fx::EK_ATTRS, None, aes_cfb(128));
    (key, public)
}

fn p384_ek() -> (p384::SecretKey, TpmPublic) {
    let secret = p384::SecretKey::random(&mut OsRng);
    let point = secret.public_key().to_encoded_point(false);
    let public = TpmPublic::from_parts(PublicParts {
        name_alg: HashAlg::Sha384,
        object_attributes: ObjectAttributes(0x0003_00f2),
        auth_policy: vec![0x5a; 48],
        symmetric: aes_cfb(256),
        scheme: None,
        kdf: None,
        key: PublicKey::Ecc {
            curve: EccCurve::NistP384,
            x: point.x().unwrap().to_vec(),
            y: point.y().unwrap().to_vec(),
        },
    })
    .unwrap();
    (secret, public)
}

fn rsa_seed_of(key: &rsa::RsaPrivateKey, made: &MadeCredential) -> Vec<u8> {
    key.decrypt(
        Oaep::new_with_label::<sha2::Sha256, _>("IDENTITY\0"),
        &made.encrypted_secret,
    )
    .unwrap()
}

fn ecc_seed_of(secret: &p384::SecretKey, ek: &TpmPublic, made: &MadeCredential) -> Vec<u8> {
    let s = &made.encrypted_secret;
    assert_eq!(s.len(), 2 + 48 + 2 + 48, "TPMS_ECC_POINT of P-384");
    assert_eq!((&s[..2], &s[50..52]), (&[0, 48][..], &[0, 48][..]));
    let mut sec1 = vec![4];
    sec1.extend(&s[2..50]);
    sec1.extend(&s[52..]);
    let ephemeral = p384::PublicKey::from_sec1_bytes(&sec1).unwrap();
    let shared = p384::ecdh::diffie_hellman(secret.to_nonzero_scalar(), ephemeral.as_affine());
    let PublicKey::Ecc { x: ek_x, .. } = &ek.key else {
        panic!()
    };
    kdfe(
        HashAlg::Sha384,
        shared.raw_secret_bytes(),
        b"IDENTITY\0",
        &s[2..50],
        ek_x,
        48,
    )
    .unwrap()
    .to_vec()
}

#[test]
fn rsa_ek_round_trip_and_wrong_name_fails() {
    let (key, ek) = rsa_ek();
    let made = make_credential(&ek, &name(1), b"0123456789abcdef").unwrap();
    assert_eq!(made.encrypted_secret.len(), 256);
    // TPM2B integrityHMAC (SHA-256) || encIdentity (TPM2B of 16 bytes).
    assert_eq!(made.id_object.len(), 2 + 32 + 2 + 16);
    assert_eq!(&made.id_object[..2], &[0, 32]);
    let seed = rsa_seed_of(&key, &made);
    assert_eq!(seed.len(), 32);
    assert_eq!(
        unprotect(&ek, &seed, &name(1), &made.id_object).unwrap(),
        b"0123456789abcdef"
    );
    assert!(unprotect(&ek, &seed, &name(2), &made.id_object).is_err());
    // Two credentials for the same input differ (fresh seed each time).
    assert_ne!(
        make_credential(&ek, &name(1), b"0123456789abcdef").unwrap(),
        made
    );
}

#[test]
fn p384_ek_round_trip_and_wrong_name_fails() {
    let (secret, ek) = p384_ek();
    let cred = [0xc7; 48];
    let made = make_credential(&ek, &name(3), &cred).unwrap();
    assert_eq!(made.id_object.len(), 2 + 48 + 2 + 48);
    let seed = ecc_seed_of(&secret, &ek, &made);
    assert_eq!(
        unprotect(&ek, &seed, &name(3), &made.id_object).unwrap(),
        cred
    );
    assert!(unprotect(&ek, &seed, &name(4), &made.id_object).is_err());
    // Another EK's private key derives another seed.
    let (other, _) = p384_ek();
    let wrong_seed = ecc_seed_of(&other, &ek, &made);
    assert!(unprotect(&ek, &wrong_seed, &name(3), &made.id_object).is_err());
}

#[test]
fn real_eks_give_tpm_shaped_blobs() {
    for (hex, secret_len, digest) in [(fx::EK_RSA_PUB, 256, 32), (fx::EK_P384_PUB, 100, 48)] {
        let ek = TpmPublic::from_tpm2b(&bytes(hex)).unwrap();
        let made = make_credential(&ek, &bytes(fx::AK_RSA_NAME), b"secret").unwrap();
        assert_eq!(made.encrypted_secret.len(), secret_len);
        assert_eq!(made.id_object.len(), 2 + digest + 2 + 6);
    }
}

#[test]
fn deterministic_with_a_seeded_rng() {
    let (_, ek) = p384_ek();
    let a = make_credential_with_rng(&ek, &name(1), b"x", &mut StdRng::seed_from_u64(9)).unwrap();
    let b = make_credential_with_rng(&ek, &name(1), b"x", &mut StdRng::seed_from_u64(9)).unwrap();
    assert_eq!(a, b);
}

#[test]
fn refuses_what_a_tpm_would() {
    let (_, ek) = rsa_ek();
    let invalid_field = |r: Result<MadeCredential, TpmError>| match r {
        Err(TpmError::Invalid {
            structure, field, ..
        }) => format!("{structure}.{field}"),
        other => panic!("{other:?}"),
    };
    assert_eq!(
        invalid_field(make_credential(&ek, &name(1), &[])),
        "TPM2B_DIGEST.credential"
    );
    assert_eq!(
        invalid_field(make_credential(&ek, &name(1), &[1; 33])),
        "TPM2B_DIGEST.credential"
    );
    assert_eq!(
        invalid_field(make_credential(&ek, &[0x00], b"s")),
        "TPM2B_NAME.name"
    );
    assert_eq!(
        invalid_field(make_credential(&ek, &name(1)[..33], b"s")),
        "TPM2B_NAME.name"
    );
    let mut sha3_name = name(1);
    sha3_name[1] = 0x27;
    assert_eq!(
        invalid_field(make_credential(&ek, &sha3_name, b"s")),
        "TPM2B_NAME.name"
    );

    // An AK (restricted signing key) cannot protect a credential.
    let ak = TpmPublic::from_tpm2b(&bytes(fx::AK_RSA_PUB)).unwrap();
    assert!(matches!(
        make_credential(&ak, &name(1), b"s"),
        Err(TpmError::KeyUnsuitable { .. })
    ));
    // A storage key with a symmetric algorithm other than AES-CFB.
    let mut ofb = ek.clone();
    ofb.symmetric = Some(SymmetricDef {
        mode: Some(SymMode::Ofb),
        ..aes_cfb(128).unwrap()
    });
    assert!(matches!(
        make_credential(&ofb, &name(1), b"s"),
        Err(TpmError::Unsupported { .. })
    ));
    // An ECC "EK" whose point is not on the curve.
    let (_, mut bad) = p384_ek();
    if let PublicKey::Ecc { y, .. } = &mut bad.key {
        y[47] ^= 1;
    }
    assert!(matches!(
        make_credential(&bad, &name(1), b"s"),
        Err(TpmError::KeyUnsuitable { .. })
    ));
}

/// KDFa written again over ring's HMAC (SP 800-108 counter mode, as Part 1 §11.4.10.2).
fn kdfa_ring(key: &[u8], label: &[u8], u: &[u8], v: &[u8], bytes: usize) -> Vec<u8> {
    let k = hmac::Key::new(hmac::HMAC_SHA256, key);
    let mut out = Vec::new();
    for i in 1u32.. {
        if out.len() >= bytes {
            break;
        }
        let mut ctx = hmac::Context::with_key(&k);
        for part in [
            &i.to_be_bytes()[..],
            label,
            u,
            v,
            &((bytes * 8) as u32).to_be_bytes(),
        ] {
            ctx.update(part);
        }
        out.extend(ctx.sign().as_ref());
    }
    out.truncate(bytes);
    out
}

#[test]
fn kdfs_agree_with_independent_implementations() {
    let mut rng = Xorshift(3);
    for len in [1, 16, 20, 32, 33, 48, 64, 100] {
        let mut r = |n: usize| (0..n).map(|_| rng.next() as u8).collect::<Vec<u8>>();
        let (key, u, v) = (r(32), r(34), r(7));
        let ours = kdfa(HashAlg::Sha256, &key, b"STORAGE\0", &u, &v, len).unwrap();
        assert_eq!(&ours[..], &kdfa_ring(&key, b"STORAGE\0", &u, &v, len)[..]);

        // KDFe: SHA-256(counter || Z || "IDENTITY\0" || U || V), counter from 1.
        let z = r(48);
        let ours = kdfe(HashAlg::Sha256, &z, b"IDENTITY\0", &u, &v, len).unwrap();
        let mut want = Vec::new();
        for i in 1u32..=((len as u32).div_ceil(32)) {
            want.extend(
                HashAlg::Sha256
                    .digest_parts(&[&i.to_be_bytes(), &z, b"IDENTITY\0", &u, &v])
                    .unwrap(),
            );
        }
        want.truncate(len);
        assert_eq!(&ours[..], &want[..]);
    }
    assert!(kdfa(HashAlg::Sha256, b"k", b"L\0", &[], &[], 1 << 20).is_err());
}
