//! The key-manager conformance suite: what every `KeyManager` promises the CA, one set of
//! cases run against each store (`key_manager_conformance!(Backend)` in a backend's test file
//! makes each case a test there): PKCS#11 on SoftHSM2 and transit on a real OpenBao. (Not the
//! development-only software store: its unoptimised RSA key generation would add minutes of
//! CPU per run; `software.rs` covers it.)
//!
//! A backend is a type whose `fresh()` brings up a private store (or `None`: skipped, said
//! plainly) and whose `open()` opens a key manager on it, again, as a restarted server would.

use std::sync::Arc;
use std::thread;

use ironroot_hsm::{HsmError, KeyAlgorithm, KeyManager, KeyManagerHealth, Signer};

use crate::support::{sha256, verify_raw, verify_x509};

/// A store the suite runs against.
pub(crate) trait Backend: Sized {
    /// A private, empty store; `None` when its component is missing outside CI.
    fn fresh() -> Option<Self>;
    /// A key manager on it (each call a new one: a "restart").
    fn open(&self) -> Arc<dyn KeyManager>;
}

/// Makes one `#[test]` per conformance case for `$backend`.
#[macro_export]
macro_rules! key_manager_conformance {
    ($backend:ty) => {
        $crate::key_manager_conformance!(@cases $backend,
            p256_generate_find_sign,
            rsa3072_generate_find_sign,
            signer_x509_and_jws_forms,
            generate_taken_label_is_key_exists,
            absent_key_is_none_and_not_found,
            wrong_digest_length_is_refused,
            list_holds_generated_keys,
            destroy_then_find_is_none,
            reopened_key_manager_finds_the_same_keys,
            concurrent_signing,
            healthy_store_is_available,
        );
    };
    (@cases $backend:ty, $($case:ident),* $(,)?) => {
        mod conformance {
            $(
                #[test]
                fn $case() {
                    let Some(backend) = <$backend as $crate::conformance::Backend>::fresh() else {
                        return;
                    };
                    $crate::conformance::$case(&backend);
                }
            )*
        }
    };
}

fn gen_find_sign(b: &impl Backend, label: &str, alg: KeyAlgorithm) {
    let km = b.open();
    let info = km.generate(label, alg).expect("generate");
    assert_eq!(info.label, label);
    assert_eq!(info.algorithm, alg);
    assert_eq!(km.find(label).expect("find"), Some(info.clone()));
    let sig = km.sign_digest(label, &sha256(b"tbs")).expect("sign_digest");
    match alg {
        KeyAlgorithm::EcP256 => assert_eq!(sig.len(), 64, "raw r||s"),
        KeyAlgorithm::Rsa3072 => assert_eq!(sig.len(), 384),
    }
    verify_raw(&info, b"tbs", &sig).expect("ring verifies sign_digest");
    assert!(verify_raw(&info, b"other", &sig).is_err());
}

pub(crate) fn p256_generate_find_sign(b: &impl Backend) {
    gen_find_sign(b, "x509-ca-1", KeyAlgorithm::EcP256);
}

pub(crate) fn rsa3072_generate_find_sign(b: &impl Backend) {
    gen_find_sign(b, "jwt-ca-1", KeyAlgorithm::Rsa3072);
}

pub(crate) fn signer_x509_and_jws_forms(b: &impl Backend) {
    let km = b.open();
    for (label, alg) in [
        ("x509", KeyAlgorithm::EcP256),
        ("jwt", KeyAlgorithm::Rsa3072),
    ] {
        let info = km.generate(label, alg).expect("generate");
        let signer = Signer::new(km.clone(), info.clone());
        let x509 = signer.sign_x509(b"tbs").expect("sign_x509");
        verify_x509(&info, b"tbs", &x509).expect("ring verifies the X.509 form");
        let jws = signer.sign_jws(b"h.p").expect("sign_jws");
        verify_raw(&info, b"h.p", &jws).expect("ring verifies the JWS form");
    }
}

pub(crate) fn generate_taken_label_is_key_exists(b: &impl Backend) {
    let km = b.open();
    let first = km
        .generate("taken", KeyAlgorithm::EcP256)
        .expect("generate");
    for alg in [KeyAlgorithm::EcP256, KeyAlgorithm::Rsa3072] {
        let err = km.generate("taken", alg).expect_err("label taken");
        assert!(
            matches!(&err, HsmError::KeyExists { label } if label == "taken"),
            "{err:?}"
        );
    }
    assert_eq!(
        km.find("taken").expect("find"),
        Some(first),
        "the key is unchanged"
    );
}

pub(crate) fn absent_key_is_none_and_not_found(b: &impl Backend) {
    let km = b.open();
    assert_eq!(km.find("absent").expect("find"), None);
    let err = km
        .sign_digest("absent", &sha256(b"m"))
        .expect_err("no such key");
    assert!(
        matches!(&err, HsmError::KeyNotFound { label } if label == "absent"),
        "{err:?}"
    );
    let err = km.destroy("absent").expect_err("no such key");
    assert!(matches!(err, HsmError::KeyNotFound { .. }), "{err:?}");
}

pub(crate) fn wrong_digest_length_is_refused(b: &impl Backend) {
    let km = b.open();
    km.generate("d", KeyAlgorithm::EcP256).expect("generate");
    for len in [0, 31, 33, 64] {
        let err = km
            .sign_digest("d", &vec![1u8; len])
            .expect_err("bad digest");
        assert!(
            matches!(err, HsmError::InvalidDigest { len: l } if l == len),
            "{err:?}"
        );
    }
}

pub(crate) fn list_holds_generated_keys(b: &impl Backend) {
    let km = b.open();
    let a = km.generate("list-a", KeyAlgorithm::EcP256).expect("a");
    let r = km.generate("list-b", KeyAlgorithm::Rsa3072).expect("b");
    let mut listed = km.list().expect("list");
    listed.sort_by(|x, y| x.label.cmp(&y.label));
    assert_eq!(listed, vec![a, r]);
}

pub(crate) fn destroy_then_find_is_none(b: &impl Backend) {
    let km = b.open();
    km.generate("gone", KeyAlgorithm::EcP256).expect("generate");
    km.sign_digest("gone", &sha256(b"m")).expect("sign first");
    km.destroy("gone").expect("destroy");
    assert_eq!(km.find("gone").expect("find"), None);
    let err = km
        .sign_digest("gone", &sha256(b"m"))
        .expect_err("destroyed");
    assert!(matches!(err, HsmError::KeyNotFound { .. }), "{err:?}");
    assert!(km.list().expect("list").is_empty());
    // The label is free again.
    km.generate("gone", KeyAlgorithm::Rsa3072)
        .expect("generate again");
}

pub(crate) fn reopened_key_manager_finds_the_same_keys(b: &impl Backend) {
    let (ec, rsa) = {
        let km = b.open();
        (
            km.generate("restart-ec", KeyAlgorithm::EcP256).expect("ec"),
            km.generate("restart-rsa", KeyAlgorithm::Rsa3072)
                .expect("rsa"),
        )
    };
    let km = b.open();
    for info in [ec, rsa] {
        assert_eq!(km.find(&info.label).expect("find"), Some(info.clone()));
        let sig = km.sign_digest(&info.label, &sha256(b"m")).expect("sign");
        verify_raw(&info, b"m", &sig).expect("same key after restart");
    }
}

pub(crate) fn concurrent_signing(b: &impl Backend) {
    let km = b.open();
    let info = km.generate("busy", KeyAlgorithm::EcP256).expect("generate");
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let km = km.clone();
            let info = info.clone();
            thread::spawn(move || {
                for i in 0..5 {
                    let msg = format!("{t}-{i}");
                    let sig = km
                        .sign_digest("busy", &sha256(msg.as_bytes()))
                        .expect("sign");
                    verify_raw(&info, msg.as_bytes(), &sig).expect("verifies");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("signing thread");
    }
}

pub(crate) fn healthy_store_is_available(b: &impl Backend) {
    let km = b.open();
    assert_eq!(km.health(), KeyManagerHealth::Available);
    assert!(!km.describe().is_empty());
}
