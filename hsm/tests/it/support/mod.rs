//! Set-up shared by the HSM tests (and the sign_rate bench): a private SoftHSM2 per test
//! (`ironroot_testkit::softhsm`) as a `Pkcs11Config`, and an independent verifier (ring) for
//! the signatures the key managers produce.
#![allow(dead_code)] // the bench uses a subset

pub(crate) mod raw;

use std::ops::Deref;
use std::path::{Path, PathBuf};

use der::Decode;
use ironroot_hsm::{KeyAlgorithm, KeyInfo, PinSource, Pkcs11Config, Pkcs11KeyManager};
use ironroot_testkit::softhsm::SoftHsm;
pub(crate) use ironroot_testkit::softhsm::{MODULE, PIN};
use ring::signature::{self, UnparsedPublicKey};

/// A SoftHSM2 installation private to one test, in a temp dir removed on drop, that this
/// process's `SOFTHSM2_CONF` points at: only sound with one test per process (cargo nextest)
/// or one test thread.
pub(crate) struct Hsm {
    softhsm: SoftHsm,
    _dir: tempfile::TempDir,
}

impl Hsm {
    /// Creates the directory and config and points this process's SOFTHSM2_CONF at it.
    pub(crate) fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let softhsm = SoftHsm::new(dir.path());
        softhsm.use_in_this_process();
        Hsm { softhsm, _dir: dir }
    }

    /// Config for `token` with the correct PIN in a file and 2 sessions.
    pub(crate) fn config(&self, token: &str) -> Pkcs11Config {
        Pkcs11Config {
            module: PathBuf::from(MODULE),
            token_label: token.to_owned(),
            pin: PinSource::File(self.write_pin_file(&format!("{token}.pin"), PIN)),
            sessions: 2,
        }
    }
}

/// The token every test opens (`setup`).
pub(crate) const TOKEN: &str = "ironroot";

/// A private SoftHSM with token [`TOKEN`], opened by a `Pkcs11KeyManager`.
pub(crate) fn setup() -> (Hsm, Pkcs11KeyManager) {
    let hsm = Hsm::new();
    hsm.init_token(TOKEN);
    let km = Pkcs11KeyManager::open(&hsm.config(TOKEN)).expect("open token");
    (hsm, km)
}

impl Deref for Hsm {
    type Target = SoftHsm;

    fn deref(&self) -> &SoftHsm {
        &self.softhsm
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
