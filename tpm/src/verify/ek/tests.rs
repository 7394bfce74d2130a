//! Each rule of [`check_ek`], on an ECC P-256 EK whose certificate rcgen makes under a test
//! manufacturer CA.

use rcgen::{KeyPair, KeyUsagePurpose, PublicKeyData};
use sha2::{Digest, Sha256};

use super::{check_ek, EkError};
use crate::verify::certchain::tests::{anchors, ca, ek_params, leaf, now};
use crate::verify::certchain::{Anchors, ChainError};
use crate::verify::tpm2::fixtures_for_tests as fx;
use crate::verify::{EccCurve, ObjectAttributes, SymAlgorithm, SymMode, SymmetricDef, TpmPublic};

fn ek_public(key: &KeyPair, attrs: ObjectAttributes) -> TpmPublic {
    let symmetric = SymmetricDef {
        algorithm: SymAlgorithm::Aes,
        key_bits: 128,
        mode: Some(SymMode::Cfb),
    };
    fx::ecc_public(
        EccCurve::NistP256,
        key.der_bytes(),
        attrs,
        None,
        Some(symmetric),
    )
}

/// An ECC EK certificate: the TCG profile with keyAgreement.
fn ek_certificate(key: &KeyPair, issuer: &crate::verify::certchain::tests::Ca) -> Vec<u8> {
    let mut p = ek_params();
    p.key_usages = vec![KeyUsagePurpose::KeyAgreement];
    leaf(p, key, issuer)
}

fn hash_of(ek: &TpmPublic) -> String {
    hex::encode(Sha256::digest(ek.spki_der().unwrap()))
}

#[test]
fn a_certified_ek_passes_and_is_named_by_its_hash() {
    let root = ca("TPM Manufacturer Root", None, |_| {});
    let key = KeyPair::generate().unwrap();
    let ek = ek_public(&key, fx::EK_ATTRS);
    let cert = ek_certificate(&key, &root);
    let hash = check_ek(&ek, &cert, &anchors(&[&root]), &[], now()).unwrap();
    assert_eq!(hash, hash_of(&ek));
}

#[test]
fn an_ek_is_a_restricted_decryption_key() {
    let key = KeyPair::generate().unwrap();
    // An AK's attributes: restricted sign, not decrypt.
    let ak_shaped = ek_public(&key, fx::AK_ATTRS);
    let allowed = [hash_of(&ak_shaped)];
    let e = check_ek(&ak_shaped, &[], &Anchors::default(), &allowed, now()).unwrap_err();
    assert_eq!(e, EkError::NotAnEk);
    assert_eq!(e.rule(), "EK");
}

#[test]
fn without_a_certificate_only_the_allow_list_admits() {
    let key = KeyPair::generate().unwrap();
    let ek = ek_public(&key, fx::EK_ATTRS);
    let hash = hash_of(&ek);
    let e = check_ek(&ek, &[], &Anchors::default(), &[], now()).unwrap_err();
    assert_eq!(
        e,
        EkError::NoCertificate {
            ek_hash: hash.clone()
        }
    );
    // Any case: operators paste hashes from tools that print upper case.
    let upper = [hash.to_uppercase()];
    assert_eq!(
        check_ek(&ek, &[], &Anchors::default(), &upper, now()),
        Ok(hash)
    );
}

#[test]
fn an_untrusted_certificate_falls_back_to_the_allow_list() {
    let root = ca("TPM Manufacturer Root", None, |_| {});
    let rogue = ca("Rogue Root", None, |_| {});
    let key = KeyPair::generate().unwrap();
    let ek = ek_public(&key, fx::EK_ATTRS);
    let cert = ek_certificate(&key, &rogue);
    let trusted = anchors(&[&root]);
    let e = check_ek(&ek, &cert, &trusted, &[], now()).unwrap_err();
    assert!(
        matches!(
            &e,
            EkError::Untrusted {
                source: ChainError::Untrusted { .. },
                ..
            }
        ),
        "{e}"
    );
    assert_eq!(e.rule(), "EK certificate");
    assert!(
        e.to_string().contains("not on the allow-list either"),
        "{e}"
    );
    let hash = hash_of(&ek);
    assert_eq!(
        check_ek(&ek, &cert, &trusted, std::slice::from_ref(&hash), now()),
        Ok(hash)
    );
}

#[test]
fn a_certificate_for_another_key_is_refused_even_when_allow_listed() {
    let root = ca("TPM Manufacturer Root", None, |_| {});
    let key = KeyPair::generate().unwrap();
    let other = KeyPair::generate().unwrap();
    let ek = ek_public(&key, fx::EK_ATTRS);
    let cert = ek_certificate(&other, &root);
    let allowed = [hash_of(&ek)];
    let e = check_ek(&ek, &cert, &anchors(&[&root]), &allowed, now()).unwrap_err();
    assert_eq!(e, EkError::CertificateKeyMismatch);
}
