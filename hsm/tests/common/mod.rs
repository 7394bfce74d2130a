//! Shared set-up for the integration tests: a private SoftHSM2 per test, and an independent
//! verifier (ring) for the signatures the key managers produce.
#![allow(dead_code)] // each test binary uses a different subset

pub(crate) mod raw;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use der::Decode;
use ironroot_hsm::{KeyAlgorithm, KeyInfo, PinSource, Pkcs11Config};
use ring::signature::{self, UnparsedPublicKey};

/// SoftHSM2's PKCS#11 module on Debian.
pub(crate) const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
pub(crate) const SO_PIN: &str = "12345678";
pub(crate) const PIN: &str = "1234";

/// A SoftHSM2 installation private to one test: its own config file and token directory.
pub(crate) struct SoftHsm {
    pub dir: tempfile::TempDir,
    pub conf: PathBuf,
    pub tokens: PathBuf,
}

impl SoftHsm {
    /// Creates the directory and config and points this process's SOFTHSM2_CONF at it.
    ///
    /// SoftHSM reads SOFTHSM2_CONF in C_Initialize, so the variable is process-wide state:
    /// this is only sound with one test per process (cargo nextest) or one test thread.
    pub(crate) fn new() -> Self {
        let one_test_per_process = std::env::var_os("NEXTEST").is_some()
            || std::env::var("RUST_TEST_THREADS").as_deref() == Ok("1");
        assert!(
            one_test_per_process,
            "these tests set SOFTHSM2_CONF for their process: run them with `cargo nextest run` \
             (or RUST_TEST_THREADS=1 cargo test)"
        );
        let dir = tempfile::tempdir().expect("temp dir");
        let tokens = dir.path().join("tokens");
        std::fs::create_dir(&tokens).expect("token dir");
        let conf = dir.path().join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                tokens.display()
            ),
        )
        .expect("softhsm2.conf");
        // Edition 2021: set_var is safe; it runs before any thread of this test exists.
        std::env::set_var("SOFTHSM2_CONF", &conf);
        SoftHsm { dir, conf, tokens }
    }

    /// `softhsm2-util --init-token --free --label <label> --so-pin 12345678 --pin 1234`.
    pub(crate) fn init_token(&self, label: &str) {
        let out = Command::new("softhsm2-util")
            .args(["--init-token", "--free", "--label", label])
            .args(["--so-pin", SO_PIN, "--pin", PIN])
            .env("SOFTHSM2_CONF", &self.conf)
            .output()
            .expect("run softhsm2-util (is softhsm2 installed?)");
        assert!(
            out.status.success(),
            "softhsm2-util --init-token failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A PIN file (mode 0600) holding `pin` and a trailing newline, as `echo` would write it.
    pub(crate) fn pin_file(&self, name: &str, pin: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, format!("{pin}\n")).expect("write pin file");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        path
    }

    /// Config for `token` with the correct PIN in a file and 2 sessions.
    pub(crate) fn config(&self, token: &str) -> Pkcs11Config {
        Pkcs11Config {
            module: PathBuf::from(MODULE),
            token_label: token.to_owned(),
            pin: PinSource::File(self.pin_file(&format!("{token}.pin"), PIN)),
            sessions: 2,
        }
    }

    /// Runs pkcs11-tool against this SoftHSM.
    pub(crate) fn pkcs11_tool(&self, args: &[&str]) -> String {
        let out = Command::new("pkcs11-tool")
            .args(["--module", MODULE])
            .args(args)
            .env("SOFTHSM2_CONF", &self.conf)
            .output()
            .expect("run pkcs11-tool (is opensc installed?)");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "pkcs11-tool {args:?} failed:\n{text}");
        text
    }
}

/// The BIT STRING inside an SPKI, after checking the algorithm OID matches `algorithm`.
pub(crate) fn spki_key_bytes(info: &KeyInfo) -> Vec<u8> {
    let spki = spki::SubjectPublicKeyInfoRef::from_der(&info.public_key_der).expect("SPKI DER");
    let oid = spki.algorithm.oid.to_string();
    match info.algorithm {
        KeyAlgorithm::EcP256 => {
            assert_eq!(oid, "1.2.840.10045.2.1", "id-ecPublicKey");
            let curve = spki
                .algorithm
                .parameters_oid()
                .expect("named curve")
                .to_string();
            assert_eq!(curve, "1.2.840.10045.3.1.7", "prime256v1");
        }
        KeyAlgorithm::Rsa3072 => assert_eq!(oid, "1.2.840.113549.1.1.1", "rsaEncryption"),
    }
    spki.subject_public_key.raw_bytes().to_vec()
}

/// Verifies with ring (independent of the RustCrypto code the crate uses) a signature over
/// `msg` in the form `sign_digest`/`sign_jws` return: raw r||s for EC, PKCS#1 v1.5 for RSA.
pub(crate) fn verify_raw(
    info: &KeyInfo,
    msg: &[u8],
    sig: &[u8],
) -> Result<(), ring::error::Unspecified> {
    let alg: &dyn signature::VerificationAlgorithm = match info.algorithm {
        KeyAlgorithm::EcP256 => &signature::ECDSA_P256_SHA256_FIXED,
        KeyAlgorithm::Rsa3072 => &signature::RSA_PKCS1_2048_8192_SHA256,
    };
    UnparsedPublicKey::new(alg, spki_key_bytes(info)).verify(msg, sig)
}

/// Verifies a `sign_x509` signature: DER Ecdsa-Sig-Value for EC, PKCS#1 v1.5 for RSA.
pub(crate) fn verify_x509(
    info: &KeyInfo,
    msg: &[u8],
    sig: &[u8],
) -> Result<(), ring::error::Unspecified> {
    let alg: &dyn signature::VerificationAlgorithm = match info.algorithm {
        KeyAlgorithm::EcP256 => &signature::ECDSA_P256_SHA256_ASN1,
        KeyAlgorithm::Rsa3072 => &signature::RSA_PKCS1_2048_8192_SHA256,
    };
    UnparsedPublicKey::new(alg, spki_key_bytes(info)).verify(msg, sig)
}

pub(crate) fn sha256(msg: &[u8]) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::digest(msg).to_vec()
}

/// Every regular file under `dir`, with its bytes.
pub(crate) fn files_under(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("read_dir") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let bytes = std::fs::read(&path).expect("read file");
                out.push((path, bytes));
            }
        }
    }
    out
}
