//! Pkcs11KeyManager failure paths against a real SoftHSM2: each asserts the specific error
//! variant and the words an operator would read, not just that something failed.

use cryptoki::object::{Attribute, ObjectClass};
use ironroot_hsm::{HsmError, KeyAlgorithm, KeyManager, PinSource, Pkcs11KeyManager};
use std::os::unix::fs::PermissionsExt;

use crate::support::raw::Raw;
use crate::support::{setup, sha256, Hsm, TOKEN};

#[test]
fn wrong_pin_is_pin_incorrect_naming_the_token() {
    let hsm = Hsm::new();
    hsm.init_token(TOKEN);
    let mut cfg = hsm.config(TOKEN);
    cfg.pin = PinSource::File(hsm.write_pin_file("wrong.pin", "9999"));
    let err = Pkcs11KeyManager::open(&cfg).expect_err("wrong PIN must fail");
    assert!(
        matches!(&err, HsmError::PinIncorrect { token } if token == TOKEN),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("PIN") && msg.contains("incorrect") && msg.contains("'ironroot'"),
        "{msg}"
    );
    assert!(
        !msg.contains("9999"),
        "the PIN must never appear in messages: {msg}"
    );
}

#[test]
fn missing_token_label_lists_available_labels() {
    let hsm = Hsm::new();
    hsm.init_token("server-ca");
    hsm.init_token("upstream-ca");
    let mut cfg = hsm.config("server-ca");
    cfg.token_label = "no-such-token".into();
    let err = Pkcs11KeyManager::open(&cfg).expect_err("unknown token must fail");
    let HsmError::TokenNotFound { label, available } = &err else {
        panic!("expected TokenNotFound, got {err:?}");
    };
    assert_eq!(label, "no-such-token");
    let mut available = available.clone();
    available.sort();
    assert_eq!(available, ["server-ca", "upstream-ca"]);
    let msg = err.to_string();
    assert!(
        msg.contains("no PKCS#11 token labelled 'no-such-token'"),
        "{msg}"
    );
    assert!(
        msg.contains("'server-ca'") && msg.contains("'upstream-ca'"),
        "{msg}"
    );
}

#[test]
fn missing_module_is_module_not_found() {
    let hsm = Hsm::new();
    let mut cfg = hsm.config(TOKEN);
    cfg.module = "/nonexistent/lib/libvendor-pkcs11.so".into();
    let err = Pkcs11KeyManager::open(&cfg).expect_err("missing module must fail");
    assert!(
        matches!(&err, HsmError::ModuleNotFound { path } if path == &cfg.module),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("/nonexistent/lib/libvendor-pkcs11.so") && msg.contains("does not exist"),
        "{msg}"
    );
}

#[test]
fn module_that_is_not_a_library_is_module_load() {
    let hsm = Hsm::new();
    let mut cfg = hsm.config(TOKEN);
    cfg.module = hsm.conf.clone(); // a text file
    let err = Pkcs11KeyManager::open(&cfg).expect_err("non-library must fail");
    assert!(
        matches!(&err, HsmError::ModuleLoad { path, .. } if path == &cfg.module),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("cannot load PKCS#11 module"),
        "{err}"
    );
}

#[test]
fn missing_pin_file_and_env_are_named() {
    let hsm = Hsm::new();
    hsm.init_token(TOKEN);
    let mut cfg = hsm.config(TOKEN);
    let missing = hsm.dir.join("no-such.pin");
    cfg.pin = PinSource::File(missing.clone());
    let err = Pkcs11KeyManager::open(&cfg).expect_err("missing PIN file");
    assert!(
        matches!(&err, HsmError::PinFileMissing { path } if path == &missing),
        "{err:?}"
    );
    assert!(
        err.to_string().contains(&missing.display().to_string()),
        "{err}"
    );
    assert!(err.to_string().contains("does not exist"), "{err}");

    let var = "IRONROOT_TEST_PIN_NOT_SET";
    cfg.pin = PinSource::Env(var.into());
    let err = Pkcs11KeyManager::open(&cfg).expect_err("missing PIN variable");
    assert!(
        matches!(&err, HsmError::PinEnvMissing { var: v } if v == var),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains("environment variable IRONROOT_TEST_PIN_NOT_SET"),
        "{err}"
    );

    // A PIN file every user may read is refused, naming its mode and the fix.
    let open = hsm.write_pin_file("open.pin", crate::support::PIN);
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o644)).unwrap();
    cfg.pin = PinSource::File(open.clone());
    let err = Pkcs11KeyManager::open(&cfg).expect_err("world-readable PIN file");
    assert!(
        matches!(&err, HsmError::PinFileExposed { path, mode } if path == &open && *mode == 0o644),
        "{err:?}"
    );
    assert!(err.to_string().contains("chmod o-rwx"), "{err}");
    // Group access is allowed (Vault Agent's and many packagers' 0640).
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o640)).unwrap();
    Pkcs11KeyManager::open(&cfg).expect("a 0640 PIN file");

    // And an empty PIN file is refused before it reaches the token.
    let empty = hsm.write_pin_file("empty.pin", "");
    cfg.pin = PinSource::File(empty.clone());
    let err = Pkcs11KeyManager::open(&cfg).expect_err("empty PIN file");
    assert!(
        matches!(&err, HsmError::PinFileInvalid { path, reason } if path == &empty && reason.contains("empty")),
        "{err:?}"
    );
}

#[test]
fn generate_existing_label_is_key_exists() {
    let (_hsm, km) = setup();
    let first = km.generate("ca", KeyAlgorithm::EcP256).expect("first");
    for alg in [KeyAlgorithm::EcP256, KeyAlgorithm::Rsa3072] {
        let err = km.generate("ca", alg).expect_err("label taken");
        assert!(
            matches!(&err, HsmError::KeyExists { label } if label == "ca"),
            "{err:?}"
        );
        assert!(err.to_string().contains("'ca' already exists"), "{err}");
    }
    // The original key is untouched.
    assert_eq!(km.find("ca").expect("find"), Some(first));
    assert_eq!(km.list().expect("list").len(), 1);
}

#[test]
fn extractable_or_imported_keys_are_refused() {
    let hsm = Hsm::new();
    hsm.init_token(TOKEN);
    {
        let raw = Raw::open(TOKEN);
        raw.ec_pair(
            "leaky",
            vec![Attribute::Sensitive(true), Attribute::Extractable(true)],
        );
        raw.ec_pair(
            "plain",
            vec![Attribute::Sensitive(false), Attribute::Extractable(false)],
        );
        // Imported: the value was outside the token once, so CKA_NEVER_EXTRACTABLE is false.
        let sk = p256::SecretKey::from_slice(&[7u8; 32]).expect("scalar");
        raw.s()
            .create_object(&[
                Attribute::Class(ObjectClass::PRIVATE_KEY),
                Attribute::KeyType(cryptoki::object::KeyType::EC),
                Attribute::Token(true),
                Attribute::Private(true),
                Attribute::Sensitive(true),
                Attribute::Extractable(false),
                Attribute::Sign(true),
                Attribute::EcParams(vec![
                    0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07,
                ]),
                Attribute::Value(sk.to_bytes().to_vec()),
                Attribute::Label(b"imported".to_vec()),
            ])
            .expect("import");
    }
    let km = Pkcs11KeyManager::open(&hsm.config(TOKEN)).expect("open");
    let good = km.generate("good", KeyAlgorithm::EcP256).expect("good key");

    for (label, words) in [
        ("leaky", "CKA_EXTRACTABLE is true"),
        ("plain", "CKA_SENSITIVE is false"),
        ("imported", "CKA_NEVER_EXTRACTABLE is false"),
    ] {
        let err = km.find(label).expect_err("must fail closed");
        assert!(
            matches!(&err, HsmError::KeyExtractable { label: l, reason } if l == label && reason.contains(words)),
            "{label}: {err:?}"
        );
        assert!(
            err.to_string()
                .contains(&format!("refusing to use key '{label}'")),
            "{err}"
        );
        let err = km
            .sign_digest(label, &sha256(b"x"))
            .expect_err("no signing either");
        assert!(
            matches!(&err, HsmError::KeyExtractable { .. }),
            "{label}: {err:?}"
        );
    }
    // list shows only the usable key.
    assert_eq!(km.list().expect("list"), vec![good]);
}

#[test]
fn public_key_that_does_not_match_is_refused() {
    let hsm = Hsm::new();
    hsm.init_token(TOKEN);
    {
        let raw = Raw::open(TOKEN);
        let sensitive = vec![Attribute::Sensitive(true), Attribute::Extractable(false)];
        let (pub_a, _) = raw.ec_pair("mixed", sensitive.clone());
        let (pub_b, _) = raw.ec_pair("other", sensitive);
        // Swap in another key's public half under the same CKA_ID.
        raw.s().destroy_object(pub_a).expect("destroy");
        let id = sha256(b"mixed")[..16].to_vec();
        raw.s()
            .update_attributes(
                pub_b,
                &[Attribute::Id(id), Attribute::Label(b"mixed".to_vec())],
            )
            .expect("relabel");
    }
    let km = Pkcs11KeyManager::open(&hsm.config(TOKEN)).expect("open");
    let err = km.find("mixed").expect_err("mismatched pair");
    assert!(
        matches!(&err, HsmError::UnsupportedKey { label, reason } if label == "mixed" && reason.contains("does not belong")),
        "{err:?}"
    );
}

#[test]
fn bad_inputs_are_named() {
    let (_hsm, km) = setup();
    km.generate("ca", KeyAlgorithm::EcP256).expect("gen");
    let err = km.sign_digest("ca", &[0u8; 31]).expect_err("short digest");
    assert!(
        matches!(err, HsmError::InvalidDigest { len: 31 }),
        "{err:?}"
    );
    assert!(err.to_string().contains("32-byte SHA-256 digest"), "{err}");
    let err = km
        .generate("", KeyAlgorithm::EcP256)
        .expect_err("empty label");
    assert!(
        matches!(&err, HsmError::InvalidLabel { reason, .. } if reason.contains("empty")),
        "{err:?}"
    );
    let err = km
        .sign_digest("nope", &sha256(b"x"))
        .expect_err("unknown key");
    assert!(
        matches!(&err, HsmError::KeyNotFound { label } if label == "nope"),
        "{err:?}"
    );
}
