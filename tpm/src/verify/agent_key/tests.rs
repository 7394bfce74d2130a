use p256::ecdsa::signature::Signer;
use p256::ecdsa::{Signature, SigningKey};

use super::*;
use crate::verify::tpm2::fixtures_for_tests::{self as fx, flipped, truncations};
use crate::verify::tpm2::{ObjectAttributes, SignatureValue};

const NONCE: &[u8] = &[0x5a; 32];

fn signing_key(seed: u8) -> SigningKey {
    SigningKey::from_slice(&[seed; 32]).unwrap()
}

fn point(k: &SigningKey) -> Vec<u8> {
    k.verifying_key()
        .to_encoded_point(false)
        .as_bytes()
        .to_vec()
}

/// A software stand-in for the AK (ECC P-256, ECDSA-SHA256, AK attributes).
struct SoftAk {
    key: SigningKey,
    public: TpmPublic,
}

impl SoftAk {
    fn new(seed: u8) -> Self {
        let key = signing_key(seed);
        let public = fx::ecc_public(
            EccCurve::NistP256,
            &point(&key),
            fx::AK_ATTRS,
            Some(KeyScheme::Ecdsa(HashAlg::Sha256)),
            None,
        );
        SoftAk { key, public }
    }

    /// TPMT_SIGNATURE over `msg`, as the TPM makes it.
    fn sign(&self, msg: &[u8]) -> Vec<u8> {
        let sig: Signature = self.key.sign(msg);
        let (r, s) = sig.split_bytes();
        TpmSignature {
            hash: HashAlg::Sha256,
            value: SignatureValue::Ecdsa {
                r: r.to_vec(),
                s: s.to_vec(),
            },
        }
        .marshal()
        .unwrap()
    }
}

/// A TPMS_ATTEST of type `ty` with `extra` as extraData and `body` after firmwareVersion.
fn attest(ty: u16, extra: &[u8], body: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend(TPM_GENERATED.to_be_bytes());
    v.extend(ty.to_be_bytes());
    v.extend([0x00, 0x02, 0x00, 0x0b]); // qualifiedSigner (not checked here)
    v.extend((extra.len() as u16).to_be_bytes());
    v.extend(extra);
    v.extend([0u8; 8 + 4 + 4]); // clock, resetCount, restartCount
    v.push(1); // safe
    v.extend([0u8; 8]); // firmwareVersion
    v.extend(body);
    v
}

const TPM_GENERATED: u32 = crate::verify::TPM_GENERATED_VALUE;

/// TPMS_CERTIFY_INFO naming `name`.
fn certify_of(name: &[u8], extra: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend((name.len() as u16).to_be_bytes());
    body.extend(name);
    body.extend((name.len() as u16).to_be_bytes()); // qualifiedName (any digest)
    body.extend(name);
    attest(0x8017, extra, &body)
}

fn agent_key_with(seed: u8, attrs: ObjectAttributes, scheme: Option<KeyScheme>) -> TpmPublic {
    fx::ecc_public(
        EccCurve::NistP256,
        &point(&signing_key(seed)),
        attrs,
        scheme,
        None,
    )
}

fn agent_key(seed: u8) -> TpmPublic {
    agent_key_with(
        seed,
        AGENT_KEY_TEMPLATE_ATTRIBUTES,
        Some(KeyScheme::Ecdsa(HashAlg::Sha256)),
    )
}

#[test]
fn a_tpm_shaped_key_whose_csr_carries_it_passes() {
    let key = agent_key(7);
    let spki = key.spki_der().unwrap();
    let parsed = check_agent_key(&key.to_tpm2b(), &spki).unwrap();
    assert_eq!(parsed, key);
    // Exactly the required attributes (no userWithAuth) are enough.
    let bare = agent_key_with(
        7,
        AGENT_KEY_REQUIRED_ATTRIBUTES,
        Some(KeyScheme::Ecdsa(HashAlg::Sha256)),
    );
    check_agent_key(&bare.to_tpm2b(), &bare.spki_der().unwrap()).unwrap();
    // The template the agent uses satisfies what the server requires.
    assert_eq!(
        AGENT_KEY_TEMPLATE_ATTRIBUTES.bits() & AGENT_KEY_REQUIRED_ATTRIBUTES.bits(),
        AGENT_KEY_REQUIRED_ATTRIBUTES.bits()
    );
}

#[test]
fn a_csr_for_another_key_is_a_named_mismatch() {
    // The agent presents its TPM key's public area but the CSR carries a software key.
    let key = agent_key(7);
    let software = agent_key(8).spki_der().unwrap();
    let e = check_agent_key(&key.to_tpm2b(), &software).unwrap_err();
    assert!(matches!(e, AgentKeyError::CsrKeyMismatch(_)), "{e:?}");
    assert!(
        e.to_string()
            .contains("a software key cannot be presented as TPM-resident"),
        "{e}"
    );
    // Not a SubjectPublicKeyInfo at all.
    let e = check_agent_key(&key.to_tpm2b(), b"junk").unwrap_err();
    assert!(matches!(e, AgentKeyError::CsrKeyMismatch(_)), "{e:?}");
}

#[test]
fn each_missing_attribute_is_named() {
    let full = AGENT_KEY_TEMPLATE_ATTRIBUTES.bits();
    for (bit, name) in [
        (1u32 << 1, "fixedTPM"),
        (1 << 4, "fixedParent"),
        (1 << 5, "sensitiveDataOrigin"),
        (1 << 16, "restricted"),
        (1 << 18, "sign"),
    ] {
        let key = agent_key_with(
            7,
            ObjectAttributes(full & !bit),
            Some(KeyScheme::Ecdsa(HashAlg::Sha256)),
        );
        let e = check_agent_key(&key.to_tpm2b(), &key.spki_der().unwrap()).unwrap_err();
        match &e {
            AgentKeyError::Attributes { missing, .. } => assert_eq!(missing, name),
            other => panic!("{name}: {other:?}"),
        }
    }
    let key = agent_key_with(
        7,
        ObjectAttributes(full | (1 << 17)),
        Some(KeyScheme::Ecdsa(HashAlg::Sha256)),
    );
    let e = check_agent_key(&key.to_tpm2b(), &key.spki_der().unwrap()).unwrap_err();
    assert!(
        matches!(&e, AgentKeyError::Attributes { missing, .. } if missing == "decrypt clear"),
        "{e:?}"
    );
}

#[test]
fn another_algorithm_scheme_or_name_hash_is_refused() {
    for scheme in [None, Some(KeyScheme::Ecdsa(HashAlg::Sha384))] {
        let key = agent_key_with(7, AGENT_KEY_TEMPLATE_ATTRIBUTES, scheme);
        let e = check_agent_key(&key.to_tpm2b(), &key.spki_der().unwrap()).unwrap_err();
        assert!(matches!(e, AgentKeyError::Algorithm { .. }), "{e:?}");
    }
    let rsa = fx::rsa_public(
        &fx::rsa_test_key(2048).to_public_key(),
        AGENT_KEY_TEMPLATE_ATTRIBUTES,
        Some(KeyScheme::RsaSsa(HashAlg::Sha256)),
        None,
    );
    let e = check_agent_key(&rsa.to_tpm2b(), &rsa.spki_der().unwrap()).unwrap_err();
    assert!(
        matches!(&e, AgentKeyError::Algorithm { found } if found.contains("RSA-2048")),
        "{e:?}"
    );
    let mut parts = crate::verify::PublicParts {
        name_alg: HashAlg::Sha1,
        object_attributes: AGENT_KEY_TEMPLATE_ATTRIBUTES,
        auth_policy: Vec::new(),
        symmetric: None,
        scheme: Some(KeyScheme::Ecdsa(HashAlg::Sha256)),
        kdf: None,
        key: agent_key(7).key,
    };
    let sha1 = TpmPublic::from_parts(parts.clone()).unwrap();
    let e = check_agent_key(&sha1.to_tpm2b(), &sha1.spki_der().unwrap()).unwrap_err();
    assert_eq!(
        e,
        AgentKeyError::NameAlg {
            found: HashAlg::Sha1
        }
    );
    parts.name_alg = HashAlg::Sha384;
    let sha384 = TpmPublic::from_parts(parts).unwrap();
    check_agent_key(&sha384.to_tpm2b(), &sha384.spki_der().unwrap()).unwrap();
}

#[test]
fn malformed_public_areas_never_panic() {
    let bytes = agent_key(7).to_tpm2b();
    let spki = agent_key(7).spki_der().unwrap();
    for t in truncations(&bytes) {
        assert!(matches!(
            check_agent_key(t, &spki),
            Err(AgentKeyError::MalformedPublic(_))
        ));
    }
    for bit in 0..bytes.len() * 8 {
        // A flip is refused, or it left the key the CSR carries and every required
        // attribute in place (a flip of userWithAuth, say).
        if let Ok(k) = check_agent_key(&flipped(&bytes, bit), &spki) {
            assert_eq!(k.key, agent_key(7).key, "bit {bit}");
            check_shape(&k).unwrap();
        }
    }
}

#[test]
fn a_certify_by_the_ak_of_this_key_over_the_nonce_passes() {
    let ak = SoftAk::new(1);
    let key = agent_key(7);
    let a = certify_of(&key.name(), NONCE);
    check_agent_key_certify(&ak.public, &key, NONCE, &a, &ak.sign(&a)).unwrap();
}

#[test]
fn a_certify_of_another_key_is_refused() {
    let ak = SoftAk::new(1);
    let key = agent_key(7);
    let other = agent_key(8);
    let a = certify_of(&other.name(), NONCE);
    let e = check_agent_key_certify(&ak.public, &key, NONCE, &a, &ak.sign(&a)).unwrap_err();
    assert_eq!(
        e,
        AgentKeyError::OtherKeyCertified {
            certified: hex::encode(other.name()),
            presented: hex::encode(key.name()),
        }
    );
    assert!(e.to_string().contains("is not in this TPM"), "{e}");
}

#[test]
fn a_certify_over_another_nonce_is_refused() {
    let ak = SoftAk::new(1);
    let key = agent_key(7);
    let a = certify_of(&key.name(), &[0u8; 32]);
    let e = check_agent_key_certify(&ak.public, &key, NONCE, &a, &ak.sign(&a)).unwrap_err();
    assert!(matches!(e, AgentKeyError::Nonce { .. }), "{e:?}");
}

#[test]
fn a_certify_signed_by_another_key_or_altered_is_refused() {
    let ak = SoftAk::new(1);
    let rogue = SoftAk::new(2);
    let key = agent_key(7);
    let a = certify_of(&key.name(), NONCE);
    let e = check_agent_key_certify(&ak.public, &key, NONCE, &a, &rogue.sign(&a)).unwrap_err();
    assert!(matches!(e, AgentKeyError::NotSignedByAk(_)), "{e:?}");
    // Any flipped bit in the signed bytes: refused, never accepted, never a panic.
    let sig = ak.sign(&a);
    for bit in 0..a.len() * 8 {
        assert!(
            check_agent_key_certify(&ak.public, &key, NONCE, &flipped(&a, bit), &sig).is_err(),
            "bit {bit}"
        );
    }
    for t in truncations(&sig) {
        assert!(matches!(
            check_agent_key_certify(&ak.public, &key, NONCE, &a, t),
            Err(AgentKeyError::MalformedCertify(_))
        ));
    }
}

#[test]
fn a_quote_is_not_a_certify() {
    let ak = SoftAk::new(1);
    let key = agent_key(7);
    let mut body = vec![0, 0, 0, 0]; // no PCR selection
    body.extend([0x00, 0x20]);
    body.extend([0u8; 32]);
    let q = attest(0x8018, NONCE, &body);
    let e = check_agent_key_certify(&ak.public, &key, NONCE, &q, &ak.sign(&q)).unwrap_err();
    assert_eq!(
        e,
        AgentKeyError::NotACertify {
            found: "quote".into()
        }
    );
}
