//! Pkcs11KeyManager against a real SoftHSM2: key generation, signatures checked by independent
//! verifiers, what the token stores, restarts, sharing one module, concurrency.
//! Run with `cargo nextest run -p ironroot-hsm`: every test owns its SoftHSM (SOFTHSM2_CONF is
//! per process).

use std::sync::Arc;
use std::thread;

use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, ObjectClass};
use ironroot_hsm::{
    HsmError, KeyAlgorithm, KeyInfo, KeyManager, PinSource, Pkcs11Config, Pkcs11KeyManager, Signer,
};

use crate::support::raw::Raw;
use crate::support::{setup, sha256, verify_raw, verify_x509, Hsm, PIN, TOKEN};

fn gen_find_sign(km: &Pkcs11KeyManager, label: &str, alg: KeyAlgorithm) -> KeyInfo {
    let info = km.generate(label, alg).expect("generate");
    assert_eq!(info.label, label);
    assert_eq!(info.algorithm, alg);
    let found = km.find(label).expect("find").expect("key present");
    assert_eq!(found, info, "find returns what generate returned");

    let msg = b"tbsCertificate bytes";
    let sig = km.sign_digest(label, &sha256(msg)).expect("sign_digest");
    match alg {
        KeyAlgorithm::EcP256 => assert_eq!(sig.len(), 64, "raw r||s"),
        KeyAlgorithm::Rsa3072 => assert_eq!(sig.len(), 384),
    }
    verify_raw(&info, msg, &sig).expect("ring verifies sign_digest");
    assert!(verify_raw(&info, b"other message", &sig).is_err());
    info
}

#[test]
fn p256_generate_find_sign_verified_by_ring_and_p256() {
    let (_hsm, km) = setup();
    let info = gen_find_sign(&km, "x509-ca", KeyAlgorithm::EcP256);

    // Second independent verifier: the RustCrypto p256 crate from the SPKI.
    use p256::ecdsa::signature::Verifier as _;
    use p256::pkcs8::DecodePublicKey as _;
    let vk = p256::ecdsa::VerifyingKey::from_public_key_der(&info.public_key_der).expect("spki");
    let sig = km.sign_digest("x509-ca", &sha256(b"m")).expect("sign");
    let sig = p256::ecdsa::Signature::from_slice(&sig).expect("r||s");
    vk.verify(b"m", &sig).expect("p256 verifies");

    // Through the Signer: X.509 wants DER, JWS wants r||s.
    let km: Arc<dyn KeyManager> = Arc::new(km);
    let signer = Signer::new(km, info.clone());
    assert_eq!(signer.jws_alg(), "ES256");
    let x509 = signer.sign_x509(b"tbs").expect("sign_x509");
    assert_eq!(x509[0], 0x30, "DER SEQUENCE");
    verify_x509(&info, b"tbs", &x509).expect("ring verifies DER ECDSA");
    let jws = signer.sign_jws(b"header.payload").expect("sign_jws");
    assert_eq!(jws.len(), 64);
    verify_raw(&info, b"header.payload", &jws).expect("ring verifies ES256");
}

#[test]
fn rsa3072_generate_find_sign_verified_by_ring_and_rsa() {
    let (_hsm, km) = setup();
    let info = gen_find_sign(&km, "jwt-ca", KeyAlgorithm::Rsa3072);

    use rsa::pkcs8::DecodePublicKey as _;
    use rsa::traits::PublicKeyParts as _;
    let pk = rsa::RsaPublicKey::from_public_key_der(&info.public_key_der).expect("spki");
    assert_eq!(pk.n().bits(), 3072);
    assert_eq!(pk.e(), &rsa::BigUint::from(65537u32));
    let digest = sha256(b"m");
    let sig = km.sign_digest("jwt-ca", &digest).expect("sign");
    pk.verify(rsa::Pkcs1v15Sign::new::<sha2::Sha256>(), &digest, &sig)
        .expect("rsa crate verifies");

    let signer = Signer::new(Arc::new(km), info.clone());
    assert_eq!(signer.jws_alg(), "RS256");
    let x509 = signer.sign_x509(b"tbs").expect("sign_x509");
    verify_x509(&info, b"tbs", &x509).expect("ring verifies sha256WithRSAEncryption");
    let jws = signer.sign_jws(b"h.p").expect("sign_jws");
    verify_raw(&info, b"h.p", &jws).expect("ring verifies RS256");
}

#[test]
fn attributes_read_back_through_raw_cryptoki() {
    let (_hsm, km) = setup();
    km.generate("ec", KeyAlgorithm::EcP256).expect("ec");
    km.generate("rsa", KeyAlgorithm::Rsa3072).expect("rsa");
    // The manager must let go (C_Finalize) before independent code can C_Initialize.
    drop(km);

    let raw = Raw::open(TOKEN);
    assert!(
        raw.finalize,
        "the manager finalized the module when it was dropped"
    );
    for label in ["ec", "rsa"] {
        let private = raw.find(ObjectClass::PRIVATE_KEY, label);
        let public = raw.find(ObjectClass::PUBLIC_KEY, label);
        assert_eq!(
            (private.len(), public.len()),
            (1, 1),
            "one pair labelled {label}"
        );
        let p = private[0];
        assert_eq!(raw.bool_attr(p, AttributeType::Sensitive), Some(true));
        assert_eq!(raw.bool_attr(p, AttributeType::Extractable), Some(false));
        assert_eq!(
            raw.bool_attr(p, AttributeType::NeverExtractable),
            Some(true)
        );
        assert_eq!(raw.bool_attr(p, AttributeType::AlwaysSensitive), Some(true));
        assert_eq!(raw.bool_attr(p, AttributeType::Token), Some(true));
        assert_eq!(raw.bool_attr(p, AttributeType::Private), Some(true));
        assert_eq!(raw.bool_attr(p, AttributeType::Sign), Some(true));

        // The secret value is not readable: SoftHSM answers with no attribute (not an error).
        let secret = [AttributeType::Value, AttributeType::PrivateExponent];
        let got = raw.s().get_attributes(p, &secret).expect("get_attributes");
        assert!(
            got.is_empty(),
            "secret attributes readable for {label}: {got:?}"
        );
        let info = raw
            .s()
            .get_attribute_info(p, &secret)
            .expect("attribute info");
        assert!(
            info.iter()
                .all(|i| !matches!(i, cryptoki::object::AttributeInfo::Available(_))),
            "{info:?}"
        );

        // Both objects carry CKA_ID = first 16 bytes of SHA-256(label).
        let want_id = sha256(label.as_bytes())[..16].to_vec();
        for h in [p, public[0]] {
            let ids: Vec<_> = raw.s().get_attributes(h, &[AttributeType::Id]).expect("id");
            assert_eq!(ids, vec![Attribute::Id(want_id.clone())]);
        }
    }
    // Wrapping it out is refused too.
    let p = raw.find(ObjectClass::PRIVATE_KEY, "ec")[0];
    let wrap_key = raw
        .s()
        .generate_key(
            &Mechanism::AesKeyGen,
            &[
                Attribute::ValueLen(32.into()),
                Attribute::Wrap(true),
                Attribute::Token(false),
            ],
        )
        .expect("aes key");
    let wrapped = raw.s().wrap_key(&Mechanism::AesKeyWrapPad, wrap_key, p);
    assert!(
        wrapped.is_err(),
        "C_WrapKey of the CA key must fail, got {wrapped:?}"
    );
}

#[test]
fn pkcs11_tool_sees_sensitive_never_extractable_sign_only_keys() {
    let (hsm, km) = setup();
    km.generate("ca-ec", KeyAlgorithm::EcP256).expect("ec");
    km.generate("ca-rsa", KeyAlgorithm::Rsa3072).expect("rsa");
    let out = hsm.pkcs11_tool(TOKEN, &["--list-objects"]);
    // pkcs11-tool prints one block per object: a header line, then indented attributes.
    let mut blocks: Vec<Vec<&str>> = Vec::new();
    for line in out.lines() {
        if !line.starts_with(' ') {
            blocks.push(Vec::new());
        }
        if let Some(b) = blocks.last_mut() {
            b.push(line.trim());
        }
    }
    for (label, kind) in [("ca-ec", "EC"), ("ca-rsa", "RSA")] {
        let block = blocks
            .iter()
            .find(|b| {
                b[0].starts_with(&format!("Private Key Object; {kind}"))
                    && b.contains(&format!("label:      {label}").as_str())
            })
            .unwrap_or_else(|| panic!("no private key block for {label} in:\n{out}"));
        let line = |name: &str| {
            block
                .iter()
                .find(|l| l.starts_with(name))
                .unwrap_or_else(|| panic!("no {name} line in {block:?}"))
                .to_string()
        };
        assert_eq!(
            line("Access:"),
            "Access:     sensitive, always sensitive, never extractable, local"
        );
        assert_eq!(
            line("Usage:"),
            "Usage:      sign",
            "signing only, no decrypt/derive/unwrap"
        );
        let id = sha256(label.as_bytes())[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>();
        assert_eq!(line("ID:"), format!("ID:         {id}"));
    }
}

#[test]
fn reopen_finds_the_same_key_by_label() {
    let (hsm, km) = setup();
    let ec = km.generate("ca", KeyAlgorithm::EcP256).expect("ec");
    let rsa = km.generate("ca-rsa", KeyAlgorithm::Rsa3072).expect("rsa");
    drop(km); // "restart": sessions closed, module finalized

    let km = Pkcs11KeyManager::open(&hsm.config(TOKEN)).expect("reopen");
    for old in [ec, rsa] {
        let found = km
            .find(&old.label)
            .expect("find")
            .expect("present after restart");
        assert_eq!(found.public_key_der, old.public_key_der, "same public key");
        assert_eq!(found.algorithm, old.algorithm);
        let sig = km
            .sign_digest(&old.label, &sha256(b"after restart"))
            .expect("sign");
        verify_raw(&old, b"after restart", &sig).expect("verifies under the old public key");
    }
    let mut labels: Vec<_> = km
        .list()
        .expect("list")
        .into_iter()
        .map(|k| k.label)
        .collect();
    labels.sort();
    assert_eq!(labels, ["ca", "ca-rsa"]);
}

/// Length of the DER TLV at the start of `b` if it is a SEQUENCE with a plausible length.
fn der_sequence_len(b: &[u8]) -> Option<usize> {
    if b.len() < 2 || b[0] != 0x30 {
        return None;
    }
    let (len, hdr) = match b[1] {
        l if l < 0x80 => (l as usize, 2),
        0x81 if b.len() > 2 => (b[2] as usize, 3),
        0x82 if b.len() > 3 => (((b[2] as usize) << 8) | b[3] as usize, 4),
        _ => return None,
    };
    (hdr + len <= b.len()).then_some(hdr + len)
}

#[test]
fn token_files_hold_no_plaintext_private_key() {
    let (hsm, km) = setup();
    let ec = km.generate("ec", KeyAlgorithm::EcP256).expect("ec");
    let rsa_info = km.generate("rsa", KeyAlgorithm::Rsa3072).expect("rsa");
    drop(km);

    use p256::elliptic_curve::sec1::ToEncodedPoint as _;
    use p256::pkcs8::DecodePublicKey as _;
    use rsa::traits::PublicKeyParts as _;
    let ec_pub = p256::PublicKey::from_public_key_der(&ec.public_key_der).expect("ec spki");
    let ec_point = ec_pub.to_encoded_point(false);
    let rsa_pub = rsa::RsaPublicKey::from_public_key_der(&rsa_info.public_key_der).expect("spki");
    let n = rsa_pub.n().clone();

    let rng = ring::rand::SystemRandom::new();
    // Control: the scalar check does recognise a matching scalar.
    let control = p256::SecretKey::from_slice(&[7u8; 32]).expect("scalar");
    assert!(
        ring::signature::EcdsaKeyPair::from_private_key_and_public_key(
            &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &[7u8; 32],
            control.public_key().to_encoded_point(false).as_bytes(),
            &rng,
        )
        .is_ok()
    );
    let files = crate::support::files_under(&hsm.tokens);
    let all: Vec<u8> = files.iter().flat_map(|(_, b)| b.clone()).collect();
    // Positive control: public objects are stored in clear, so the scan does see key objects.
    assert!(
        all.windows(65).any(|w| w == ec_point.as_bytes()),
        "scan did not find even the public EC point; is it reading the token files?"
    );

    use p256::pkcs8::DecodePrivateKey as _;
    use rsa::pkcs1::DecodeRsaPrivateKey as _;
    for (path, bytes) in &files {
        for i in 0..bytes.len() {
            let rest = &bytes[i..];
            // 1. Any DER structure that parses as a private key.
            if let Some(len) = der_sequence_len(rest) {
                let der = &rest[..len];
                assert!(
                    p256::SecretKey::from_pkcs8_der(der).is_err(),
                    "PKCS#8 EC key in {path:?}"
                );
                assert!(
                    p256::SecretKey::from_sec1_der(der).is_err(),
                    "SEC1 EC key in {path:?}"
                );
                assert!(
                    rsa::RsaPrivateKey::from_pkcs8_der(der).is_err(),
                    "PKCS#8 RSA in {path:?}"
                );
                assert!(
                    rsa::RsaPrivateKey::from_pkcs1_der(der).is_err(),
                    "PKCS#1 RSA in {path:?}"
                );
            }
            // 2. The raw EC scalar: any 32 bytes d with d*G equal to the public key. ring
            //    does the check (it recomputes the public key from the scalar) in optimized
            //    assembly; RustCrypto's p256 in a debug build takes milliseconds per window.
            if rest.len() >= 32 {
                let found = ring::signature::EcdsaKeyPair::from_private_key_and_public_key(
                    &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                    &rest[..32],
                    ec_point.as_bytes(),
                    &rng,
                );
                assert!(found.is_err(), "raw P-256 scalar in {path:?} at {i}");
            }
            // 3. A raw RSA prime: any 192 bytes p (1536 bits) dividing the modulus.
            if rest.len() >= 192 && rest[0] & 0x80 != 0 {
                let p = rsa::BigUint::from_bytes_be(&rest[..192]);
                assert!(
                    (&n % &p) != rsa::BigUint::from(0u32),
                    "RSA prime in {path:?} at {i}"
                );
            }
        }
    }
}

#[test]
fn pin_from_environment_variable() {
    let hsm = Hsm::new();
    hsm.init_token(TOKEN);
    std::env::set_var("IRONROOT_TEST_PIN", format!("{PIN}\n"));
    let cfg = Pkcs11Config {
        pin: PinSource::Env("IRONROOT_TEST_PIN".into()),
        sessions: 0, // one per core
        ..hsm.config(TOKEN)
    };
    let km = Pkcs11KeyManager::open(&cfg).expect("open with env PIN");
    let cores = thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    assert_eq!(km.sessions(), cores);
    let d = km.describe();
    assert!(
        d.starts_with("pkcs11 token 'ironroot' (module /usr/lib/softhsm/libsofthsm2.so"),
        "{d}"
    );
    assert!(!d.contains(PIN), "{d}");
}

#[test]
fn destroy_then_find_is_none() {
    let (_hsm, km) = setup();
    km.generate("old-ca", KeyAlgorithm::EcP256).expect("gen");
    km.sign_digest("old-ca", &sha256(b"x"))
        .expect("sign caches the handle");
    km.destroy("old-ca").expect("destroy");
    assert_eq!(km.find("old-ca").expect("find"), None);
    let err = km.sign_digest("old-ca", &sha256(b"x")).expect_err("no key");
    assert!(
        matches!(&err, HsmError::KeyNotFound { label } if label == "old-ca"),
        "{err:?}"
    );
    let err = km.destroy("old-ca").expect_err("already gone");
    assert!(matches!(&err, HsmError::KeyNotFound { .. }), "{err:?}");
    // Public object went too: the label is free again.
    km.generate("old-ca", KeyAlgorithm::EcP256)
        .expect("label reusable");
}

#[test]
fn two_tokens_of_one_module_in_one_process() {
    let hsm = Hsm::new();
    hsm.init_token("server-ca");
    hsm.init_token("upstream-ca");
    let server = Pkcs11KeyManager::open(&hsm.config("server-ca")).expect("server token");
    let upstream = Pkcs11KeyManager::open(&hsm.config("upstream-ca")).expect("upstream token");

    let a = server
        .generate("ca", KeyAlgorithm::EcP256)
        .expect("server key");
    assert_eq!(
        upstream.find("ca").expect("find"),
        None,
        "tokens are separate"
    );
    let b = upstream
        .generate("ca", KeyAlgorithm::EcP256)
        .expect("upstream key");
    assert_ne!(a.public_key_der, b.public_key_der);
    for (km, info) in [(&server, &a), (&upstream, &b)] {
        let sig = km.sign_digest("ca", &sha256(b"m")).expect("sign");
        verify_raw(info, b"m", &sig).expect("verify");
    }

    // Dropping one must not finalize the module under the other.
    drop(server);
    let sig = upstream
        .sign_digest("ca", &sha256(b"still"))
        .expect("upstream still works");
    verify_raw(&b, b"still", &sig).expect("verify");
    let server = Pkcs11KeyManager::open(&hsm.config("server-ca")).expect("reopen server");
    assert_eq!(server.find("ca").expect("find"), Some(a));
}

#[test]
fn concurrent_signing_from_two_threads() {
    let (_hsm, km) = setup();
    let info = km.generate("ca", KeyAlgorithm::EcP256).expect("gen");
    let km: Arc<dyn KeyManager> = Arc::new(km);
    let handles: Vec<_> = (0..2)
        .map(|t| {
            let km = km.clone();
            let info = info.clone();
            thread::spawn(move || {
                for i in 0..200 {
                    let msg = format!("thread {t} message {i}");
                    let sig = km.sign_digest("ca", &sha256(msg.as_bytes())).expect("sign");
                    verify_raw(&info, msg.as_bytes(), &sig).expect("verify");
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("signing thread");
    }
}

#[test]
fn coexists_with_code_that_initialized_the_module_first() {
    let hsm = Hsm::new();
    hsm.init_token(TOKEN);
    let raw = Raw::open(TOKEN);
    assert!(raw.finalize);
    let km = Pkcs11KeyManager::open(&hsm.config(TOKEN)).expect("open next to foreign init");
    km.generate("ca", KeyAlgorithm::EcP256).expect("gen");
    drop(km); // must not C_Finalize what it did not initialize
    assert_eq!(
        raw.find(ObjectClass::PRIVATE_KEY, "ca").len(),
        1,
        "raw session still alive"
    );
}

#[test]
fn recovers_when_the_token_logs_out_under_it() {
    let hsm = Hsm::new();
    hsm.init_token(TOKEN);
    // Raw initializes first so both share the module (and its login state).
    let raw = Raw::open(TOKEN);
    let km = Pkcs11KeyManager::open(&hsm.config(TOKEN)).expect("open");
    let info = km.generate("ca", KeyAlgorithm::EcP256).expect("gen");
    km.sign_digest("ca", &sha256(b"before"))
        .expect("sign before");

    raw.s().logout().expect("logout"); // logs out every session of the process
    let sig = km
        .sign_digest("ca", &sha256(b"after"))
        .expect("sign after logout");
    verify_raw(&info, b"after", &sig).expect("verify");
    assert_eq!(km.find("ca").expect("find after logout"), Some(info));
}

/// The conformance suite on a private SoftHSM2 token.
pub(crate) struct SoftHsmToken {
    hsm: Hsm,
}

impl crate::conformance::Backend for SoftHsmToken {
    fn fresh() -> Option<Self> {
        let hsm = Hsm::new();
        hsm.init_token(TOKEN);
        Some(SoftHsmToken { hsm })
    }

    fn open(&self) -> Arc<dyn KeyManager> {
        Arc::new(Pkcs11KeyManager::open(&self.hsm.config(TOKEN)).expect("open token"))
    }
}

crate::key_manager_conformance!(crate::pkcs11::SoftHsmToken);
