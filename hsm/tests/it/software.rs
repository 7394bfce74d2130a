//! SoftwareKeyManager: the development-only store.

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

use ironroot_hsm::{HsmError, KeyAlgorithm, KeyManager, Signer, SoftwareKeyManager};

use crate::support::{sha256, verify_raw, verify_x509};

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path)
        .expect("metadata")
        .permissions()
        .mode()
        & 0o777
}

/// Key generation, signing (checked by ring), file modes and reopening, for one algorithm.
fn round_trip(label: &str, alg: KeyAlgorithm) {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("keys");
    let km = SoftwareKeyManager::open(&dir).expect("open");
    assert_eq!(mode(&dir), 0o700);
    let describe = km.describe();
    assert_eq!(
        describe,
        format!("INSECURE software keys in {}", dir.display())
    );

    let info = km.generate(label, alg).expect("generate");
    assert_eq!(info.algorithm, alg);
    let file = dir.join(format!("{label}.key"));
    assert_eq!(mode(&file), 0o600, "{file:?}");
    let pem = std::fs::read_to_string(&file).expect("read");
    assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"), "PKCS#8 PEM");
    // No temporary files left behind.
    let names: Vec<_> = std::fs::read_dir(&dir)
        .expect("ls")
        .map(|e| e.expect("entry").file_name().into_string().expect("utf8"))
        .collect();
    assert_eq!(names, [format!("{label}.key")]);

    let sig = km.sign_digest(label, &sha256(b"msg")).expect("sign");
    verify_raw(&info, b"msg", &sig).expect("ring verifies");

    // Reopen ("restart"): same key, same public half, usable through a Signer.
    drop(km);
    let km = Arc::new(SoftwareKeyManager::open(&dir).expect("reopen"));
    assert_eq!(km.find(label).expect("find"), Some(info.clone()));
    assert_eq!(km.list().expect("list"), vec![info.clone()]);
    let signer = Signer::new(km.clone(), info.clone());
    let x509 = signer.sign_x509(b"tbs").expect("x509");
    verify_x509(&info, b"tbs", &x509).expect("ring verifies x509 form");

    let err = km.generate(label, KeyAlgorithm::EcP256).expect_err("taken");
    assert!(
        matches!(&err, HsmError::KeyExists { label: l } if l == label),
        "{err:?}"
    );

    km.destroy(label).expect("destroy");
    assert_eq!(km.find(label).expect("find"), None);
    let err = km.sign_digest(label, &sha256(b"x")).expect_err("gone");
    assert!(
        matches!(&err, HsmError::KeyNotFound { label: l } if l == label),
        "{err:?}"
    );
}

#[test]
fn software_p256_round_trip_and_file_modes() {
    round_trip("ec-ca", KeyAlgorithm::EcP256);
}

/// Separate test: RSA-3072 generation in a debug build takes seconds, and nextest runs it in
/// parallel with the rest.
#[test]
fn software_rsa3072_round_trip_and_file_modes() {
    round_trip("rsa-ca", KeyAlgorithm::Rsa3072);
}

#[test]
fn software_labels_cannot_escape_the_directory() {
    let tmp = tempfile::tempdir().expect("tmp");
    let km = SoftwareKeyManager::open(tmp.path()).expect("open");
    for label in ["../evil", "a/b", ".hidden", ""] {
        let err = km.generate(label, KeyAlgorithm::EcP256).expect_err(label);
        assert!(
            matches!(err, HsmError::InvalidLabel { .. }),
            "{label}: {err:?}"
        );
    }
}

#[test]
fn software_dir_is_tightened_to_0700() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("loose");
    std::fs::create_dir(&dir).expect("mkdir");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    SoftwareKeyManager::open(&dir).expect("open");
    assert_eq!(mode(&dir), 0o700);
}
