//! SoftwareKeyManager: the development-only store.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

use ironroot_hsm::{HsmError, KeyAlgorithm, KeyManager, Signer, SoftwareKeyManager};

use common::{sha256, verify_raw, verify_x509};

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path)
        .expect("metadata")
        .permissions()
        .mode()
        & 0o777
}

#[test]
fn software_round_trip_and_file_modes() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("keys");
    let km = SoftwareKeyManager::open(&dir).expect("open");
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(
        km.describe(),
        format!("INSECURE software keys in {}", dir.display())
    );

    let ec = km.generate("ec-ca", KeyAlgorithm::EcP256).expect("ec");
    let rsa = km.generate("rsa-ca", KeyAlgorithm::Rsa3072).expect("rsa");
    for info in [&ec, &rsa] {
        let file = dir.join(format!("{}.key", info.label));
        assert_eq!(mode(&file), 0o600, "{file:?}");
        let pem = std::fs::read_to_string(&file).expect("read");
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"), "PKCS#8 PEM");

        let sig = km.sign_digest(&info.label, &sha256(b"msg")).expect("sign");
        verify_raw(info, b"msg", &sig).expect("ring verifies");
        let signer = Signer::new(
            Arc::new(SoftwareKeyManager::open(&dir).expect("2nd")),
            info.clone(),
        );
        let x509 = signer.sign_x509(b"tbs").expect("x509");
        verify_x509(info, b"tbs", &x509).expect("ring verifies x509 form");
    }
    // No temporary files left behind.
    let names: Vec<_> = std::fs::read_dir(&dir)
        .expect("ls")
        .map(|e| e.expect("entry").file_name().into_string().expect("utf8"))
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");

    // Reopen: same keys, same public halves.
    drop(km);
    let km = SoftwareKeyManager::open(&dir).expect("reopen");
    assert_eq!(km.find("ec-ca").expect("find"), Some(ec.clone()));
    assert_eq!(km.list().expect("list"), vec![ec.clone(), rsa]);

    let err = km
        .generate("ec-ca", KeyAlgorithm::EcP256)
        .expect_err("taken");
    assert!(
        matches!(&err, HsmError::KeyExists { label } if label == "ec-ca"),
        "{err:?}"
    );

    km.destroy("ec-ca").expect("destroy");
    assert_eq!(km.find("ec-ca").expect("find"), None);
    let err = km.sign_digest("ec-ca", &sha256(b"x")).expect_err("gone");
    assert!(
        matches!(&err, HsmError::KeyNotFound { label } if label == "ec-ca"),
        "{err:?}"
    );
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
