//! Helpers for the device tests: a TPM per test opened with `ironroot_tpm::device` (its swtpm
//! from `ironroot_testkit::swtpm`), key extraction, and openssl as an independent check.

use std::path::PathBuf;
use std::process::Command;

pub(crate) use ironroot_testkit::run;
use ironroot_testkit::svid::openssl_verify;
use ironroot_testkit::swtpm::{Swtpm, SwtpmOptions, SwtpmState};
use ironroot_tpm::device::Tpm;
use tss_esapi::structures::Public;
use tss_esapi::traits::UnMarshall;

/// An open TPM on its own swtpm. Fields drop in order: the ESYS context closes before
/// swtpm is killed.
pub(crate) struct Rig {
    pub tpm: Tpm,
    pub swtpm: Swtpm,
    pub state: &'static SwtpmState,
}

impl Rig {
    /// A fresh copy of the shared manufactured TPM (banks sha1 and sha256), running.
    pub(crate) fn new() -> Rig {
        let state = SwtpmState::shared("device-tests", &SwtpmOptions::with_banks("sha1,sha256"));
        let swtpm = state.spawn();
        let tpm = Tpm::open(&swtpm.tcti()).unwrap_or_else(|e| panic!("{e}"));
        Rig { tpm, swtpm, state }
    }

    /// A scratch file path that lives as long as the swtpm.
    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.swtpm.scratch_dir().join(name)
    }

    /// Closes and re-opens the ESYS context on the same swtpm (a new agent run). The old
    /// context goes first: swtpm serves one connection at a time.
    pub(crate) fn reopen(self) -> Rig {
        let Rig { tpm, swtpm, state } = self;
        drop(tpm);
        let tpm = Tpm::open(&swtpm.tcti()).unwrap_or_else(|e| panic!("{e}"));
        Rig { tpm, swtpm, state }
    }
}

/// Unwraps with the error's Display (the message under test), not its Debug.
pub(crate) fn ok<T, E: std::fmt::Display>(r: Result<T, E>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

/// The tss-esapi view of TPM2B_PUBLIC bytes (an implementation independent of ours).
pub(crate) fn public(tpm2b: &[u8]) -> Public {
    assert_eq!(
        usize::from(u16::from_be_bytes([tpm2b[0], tpm2b[1]])),
        tpm2b.len() - 2,
        "TPM2B size field"
    );
    ok(Public::unmarshall(&tpm2b[2..]))
}

/// The raw key of a public area: RSA modulus, or EC x||y.
pub(crate) fn tpm_key(tpm2b: &[u8]) -> Vec<u8> {
    match public(tpm2b) {
        Public::Rsa { unique, .. } => unique.value().to_vec(),
        Public::Ecc { unique, .. } => [unique.x().value(), unique.y().value()].concat(),
        other => panic!("not an asymmetric key: {other:?}"),
    }
}

/// The raw key of a DER certificate: RSA modulus, or EC x||y.
pub(crate) fn cert_key(der_cert: &[u8]) -> Vec<u8> {
    use der::Decode;
    use rsa::pkcs1::DecodeRsaPublicKey;
    use rsa::traits::PublicKeyParts;
    let cert = ok(x509_cert::Certificate::from_der(der_cert));
    let spki = cert.tbs_certificate.subject_public_key_info;
    let bits = spki.subject_public_key.raw_bytes();
    match spki.algorithm.oid.to_string().as_str() {
        "1.2.840.113549.1.1.1" => ok(rsa::RsaPublicKey::from_pkcs1_der(bits))
            .n()
            .to_bytes_be(),
        "1.2.840.10045.2.1" => {
            assert_eq!(bits[0], 0x04, "uncompressed point");
            bits[1..].to_vec()
        }
        oid => panic!("unexpected key algorithm {oid}"),
    }
}

/// `openssl verify` of a DER certificate against the swtpm local CA (root + issuer).
pub(crate) fn verify_chain(rig: &Rig, der_cert: &[u8], name: &str) {
    let der = rig.path(&format!("{name}.der"));
    let pem = rig.path(&format!("{name}.pem"));
    ok(std::fs::write(&der, der_cert));
    run(Command::new("openssl")
        .args(["x509", "-inform", "DER", "-in"])
        .arg(&der)
        .arg("-out")
        .arg(&pem));
    let (verified, out) =
        openssl_verify(&rig.state.ca_root_cert, Some(&rig.state.issuer_cert), &pem);
    assert!(verified && out.contains(": OK"), "{out}");
}

/// Whether `needle` occurs in `haystack`.
pub(crate) fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
